//! The emulated flash's read/write unit (`ota device create --flash-write-size N`): recorded in
//! the device settings, shown by `device info`, and honoured by every command that writes the
//! flash, as esp-storage's `READ_SIZE`/`WRITE_SIZE` are on the chip.

mod common;
mod powercut;

use common::*;
use powercut::{make_app, make_tone, sd_card_and_config};

const CSV: &str = "\
nvs,        data, nvs,  ,  0x4000,
otadata,    data, ota,  ,  0x2000,
phy_init,   data, phy,  ,  0x1000,
ota_0,      app,  ota_0, , 512K,
ota_1,      app,  ota_1, , 512K,
flash_tone, data, 0xff, ,  256K,
tone_stage, data, 0xfe, ,  260K,
";

fn create(d: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::fs::write(d.join("parts.csv"), CSV).unwrap();
    let flash = d.join("flash.bin");
    let parts = d.join("parts.csv");
    let app = d.join("app.bin");
    let mut args = vec![
        "device",
        "create",
        "--force",
        "--flash",
        s(&flash),
        "--flash-size",
        "2MB",
        "--partitions",
        s(&parts),
        "--app",
        s(&app),
    ];
    args.extend_from_slice(extra);
    ota(&args)
}

#[test]
fn device_create_records_the_flash_write_size_and_info_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_app(d, "app.bin", "app", "v1.0.0", 0, "32K");
    let flash = d.join("flash.bin");
    for (extra, want) in [(&[][..], 4u64), (&["--flash-write-size", "256"][..], 256)] {
        let o = create(d, extra);
        assert!(o.status.success(), "{}", text(&o));
        let info = ok(&["device", "info", "--flash", s(&flash)]);
        assert!(
            info.contains(&format!("Flash: read/write unit {want} bytes")),
            "{info}"
        );
        let js = ok(&["device", "info", "--json", "--flash", s(&flash)]);
        let v: serde_json::Value = serde_json::from_str(&js).unwrap();
        assert_eq!(v["settings"]["flash_write_size"], want, "{js}");
        let toml = std::fs::read_to_string(d.join("flash.bin.device.toml")).unwrap();
        assert!(toml.contains(&format!("write_size = {want}")), "{toml}");
    }
    // A bare dump (no settings file) is a 4-byte flash.
    std::fs::remove_file(d.join("flash.bin.device.toml")).unwrap();
    let js = ok(&["device", "info", "--json", "--flash", s(&flash)]);
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert_eq!(v["settings"]["flash_write_size"], 4, "{js}");
}

#[test]
fn device_create_refuses_a_write_size_that_is_not_a_power_of_two_up_to_256() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_app(d, "app.bin", "app", "v1.0.0", 0, "32K");
    for bad in ["0", "3", "12", "512"] {
        let o = create(d, &["--flash-write-size", bad]);
        assert!(!o.status.success(), "{bad}");
        let t = text(&o);
        assert!(t.contains("--flash-write-size") && t.contains(bad), "{t}");
        assert!(!d.join("flash.bin").exists(), "nothing created for {bad}");
    }
}

/// A staged tone update and an app update through `device run` on a flash of unit `n`: both
/// land byte-exact, and the staging record's progress marks are whole `n`-byte words.
fn staged_tone_and_app_update_at(n: u32) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_app(d, "app.bin", "ota_example", "v1.0.0", 0, "32K");
    let new_app = make_app(d, "new.bin", "ota_example", "v2.0.0", 0, "70001");
    let new_tone = make_tone(d, "new_tone", 5, "v1.1.0");
    let o = create(d, &["--flash-write-size", &n.to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    let flash = d.join("flash.bin");
    ok(&["device", "boot", "--flash", s(&flash)]);
    let (_sd, cfg) = sd_card_and_config(
        d,
        "flash_tone.bin",
        &new_tone,
        "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/flash_tone.bin\"\n\
         label = \"flash_tone\"\nformat = \"tone\"\nstaging = \"tone_stage\"\n\
         [[upgrade]]\ntype = \"app\"\nuri = \"file://sdcard/new.bin\"\n",
    );
    std::fs::copy(d.join("new.bin"), d.join("sdcard/new.bin")).unwrap();
    let out = ok(&["device", "run", "--flash", s(&flash), "--config", s(&cfg)]);
    assert!(out.contains("App version:      v2.0.0"), "{out}");
    let mem = std::fs::read(&flash).unwrap();
    let dev = ota_emu::Device::open_named(
        ota_emu::flash::EmuFlashN::<1>::from_image(mem.clone()).unwrap(),
        "flash",
    )
    .unwrap();
    let t = dev.table();
    let tone = t.find_data("flash_tone").unwrap();
    assert_eq!(
        &mem[tone.offset as usize..][..new_tone.len()],
        &new_tone[..]
    );
    let slot = t.ota(1).unwrap();
    assert_eq!(&mem[slot.offset as usize..][..new_app.len()], &new_app[..]);
    let stage = t.find_data("tone_stage").unwrap();
    let record = (stage.offset + stage.size - 4096) as usize;
    let marks = record + ota_core::staging::progress_offset(n) as usize;
    let steps = (new_tone.len() as u32).div_ceil(4096) + 2;
    for s in 0..steps as usize {
        let m = &mem[marks + s * n as usize..][..n as usize];
        assert_eq!(m[0], 0, "mark {s} at unit {n}");
        assert!(m[1..].iter().all(|&b| b == 0xFF), "mark {s} at unit {n}");
    }
    // Nothing after the last mark.
    assert!(mem[marks + steps as usize * n as usize..record + 4096]
        .iter()
        .all(|&b| b == 0xFF));
}

#[test]
fn device_run_updates_tone_and_app_at_write_unit_1() {
    staged_tone_and_app_update_at(1);
}

#[test]
fn device_run_updates_tone_and_app_at_write_unit_4() {
    staged_tone_and_app_update_at(4);
}

#[test]
fn device_run_updates_tone_and_app_at_write_unit_256() {
    staged_tone_and_app_update_at(256);
}
