//! Power-cut sweep over a staged data-partition update (`staging = "tone_stage"`), on a 4-byte
//! and a 1-byte flash: the tone bin is written and verified in the spare partition, then copied into `flash_tone` under a
//! progress record. A cut before the record exists leaves the old bin in place; a cut during
//! the copy is resumed by the next run (not downloaded again); the partition never reads valid
//! while it holds a mix.

mod common;
mod powercut;

use common::*;
use powercut::*;

/// The example's layout shrunk to 2 MB, with a spare data partition for staging.
const CSV: &str = "\
nvs,        data, nvs,  ,  0x4000,
otadata,    data, ota,  ,  0x2000,
phy_init,   data, phy,  ,  0x1000,
ota_0,      app,  ota_0, , 512K,
ota_1,      app,  ota_1, , 512K,
flash_tone, data, 0xff, ,  256K,
tone_stage, data, 0xfe, ,  260K,
";

#[test]
fn staged_tone_update_resumes_its_copy_after_a_power_cut_at_every_sampled_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let app = make_app(d, "app.bin", "ota_example", "v1.0.0", 0, "32K");
    let old_tone = make_tone(d, "old_tone", 3, "v1.0.0");
    let new_tone = make_tone(d, "new_tone", 6, "v1.1.0");
    std::fs::write(d.join("parts.csv"), CSV).unwrap();
    let flash = d.join("flash.bin");
    let data = format!("flash_tone={}", s(&d.join("old_tone.bin")));
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--flash-size",
        "2MB",
        "--partitions",
        s(&d.join("parts.csv")),
        "--app",
        s(&d.join("app.bin")),
        "--data",
        &data,
    ]);
    ok(&["device", "boot", "--flash", s(&flash)]);
    let (sd, cfg) = sd_card_and_config(
        d,
        "flash_tone.bin",
        &new_tone,
        "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/flash_tone.bin\"\n\
         label = \"flash_tone\"\nformat = \"tone\"\nstaging = \"tone_stage\"\n",
    );
    let (base, table, chip, boot) = load_device(&flash);
    let scenario = Scenario {
        name: "staged tone update (stage, verify, record, resumable copy)".into(),
        base,
        table,
        chip,
        boot,
        config: ota_service::config::Config::load(&cfg).unwrap(),
        sd: Some(sd),
        op: Op::Run {
            self_confirm: false,
        },
        old_app: appended_hash(&app),
        new_app: appended_hash(&app),
        data: Some(DataCheck {
            label: "flash_tone".into(),
            old: old_tone,
            new: new_tone,
            staging: Some("tone_stage".into()),
        }),
        final_efuse: None,
    };
    // On the 4-byte flash (esp-storage's unit), then on a 1-byte flash: there the staging
    // record's progress marks are single bytes and the tone header's tag a 2-byte write.
    let mut scenario = scenario;
    for unit in [4, 1] {
        let r = if unit == 4 {
            sweep(&scenario)
        } else {
            scenario.name += " on a 1-byte flash";
            sweep_at::<1>(&scenario)
        };
        assert_eq!(r.adf_init_fooled, 0, "{r:?}");
        assert!(r.resumed_copies > 0, "no cut point fell in the copy: {r:?}");
        assert_clean(&scenario, &r);
    }
}
