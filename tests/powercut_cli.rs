//! The power cut replayed through the CLI, as a user would: `ota device run
//! --power-cut-after-bytes N` stops like a power loss (the line `power cut after N bytes`,
//! status 3, nothing printed after it), `ota device boot` then boots a valid app, and a second
//! `ota device run` completes the update. Also the injected write/erase failures (status 1, the
//! device still boots the old app).

mod common;
mod powercut;

use std::path::{Path, PathBuf};

use common::*;
use powercut::{make_app, make_tone, sd_card_and_config, Http};

const FLASH_TONE: usize = 0x210000;

struct Bench {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    new_tone: Vec<u8>,
    _http: Http,
}

impl Bench {
    /// The ESP-ADF example on disk: a booted device (`base.bin`), the SD card beside it, the
    /// app on a loopback server, and the example's config.
    fn new() -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        make_app(&d, "old.bin", "ota_example", "v1.0.0", 0, "40K");
        let new_app = make_app(&d, "new.bin", "play_mp3_control", "v2.0.0", 0, "48K");
        make_tone(&d, "old_tone", 3, "v1.0.0");
        let new_tone = make_tone(&d, "new_tone", 4, "v1.1.0");
        let base = d.join("base.bin");
        let data = format!("flash_tone={}", s(&d.join("old_tone.bin")));
        ok(&[
            "device",
            "create",
            "--flash",
            s(&base),
            "--app",
            s(&d.join("old.bin")),
            "--data",
            &data,
        ]);
        ok(&["device", "boot", "--flash", s(&base)]);
        std::fs::create_dir_all(d.join("sdcard")).unwrap();
        std::fs::write(d.join("sdcard/flash_tone.bin"), &new_tone).unwrap();
        let http = Http::serve("play_mp3_control.bin", new_app);
        std::fs::write(
            d.join("ota.toml"),
            format!(
                "firmware_upgrade_uri = \"http://{}/play_mp3_control.bin\"\n\
                 data_upgrade_uri = \"file://sdcard/flash_tone.bin\"\n",
                http.base
            ),
        )
        .unwrap();
        Bench {
            _dir: tmp,
            dir: d,
            new_tone,
            _http: http,
        }
    }

    /// A fresh copy of the booted device as `flash.bin` (with its settings file).
    fn fresh(&self) -> PathBuf {
        let f = self.dir.join("flash.bin");
        std::fs::copy(self.dir.join("base.bin"), &f).unwrap();
        std::fs::copy(
            self.dir.join("base.bin.device.toml"),
            self.dir.join("flash.bin.device.toml"),
        )
        .unwrap();
        f
    }

    fn run(&self, flash: &Path, extra: &[&str]) -> std::process::Output {
        let cfg = self.dir.join("ota.toml");
        let mut args = vec!["device", "run", "--flash", s(flash), "--config", s(&cfg)];
        args.extend_from_slice(extra);
        ota(&args)
    }

    fn booted_version(&self, flash: &Path) -> (String, String) {
        let out = ok(&["device", "boot", "--flash", s(flash), "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (
            v["slot"].as_str().unwrap().to_string(),
            v["version"].as_str().unwrap().to_string(),
        )
    }
}

/// The bytes a full run programs or erases, as the CLI reports when the cut is never reached.
fn run_total(b: &Bench) -> u64 {
    let f = b.fresh();
    let o = b.run(&f, &["--power-cut-after-bytes", "1000000000"]);
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("no power cut: this command programmed or erased "))
        .unwrap_or_else(|| panic!("no byte count reported:\n{}", text(&o)));
    line.trim_start_matches("no power cut: this command programmed or erased ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_power_cut_replayed_from_the_cli_leaves_a_bootable_device_and_a_second_run_completes() {
    let b = Bench::new();
    let total = run_total(&b);
    // The last operation of the run is the otadata switch: erase a 4 KiB sector, write 32 bytes.
    let otadata_at = total - 4096 - 32;
    let mut cuts: Vec<(u64, Option<u64>)> = vec![
        (0, None),
        (1, None),
        (5000, None),
        (total / 3, None),
        (total / 2, Some(7)),
        (otadata_at - 1, None),
        (otadata_at + 20, None),
        (otadata_at + 2000, Some(99)),
        (total - 16, None),
        (total - 1, None),
        (total, None),
    ];
    cuts.dedup();
    for (n, seed) in cuts {
        let f = b.fresh();
        let ns = n.to_string();
        let ss = seed.map(|x| x.to_string());
        let mut extra = vec!["--power-cut-after-bytes", ns.as_str()];
        if let Some(ss) = &ss {
            extra.extend_from_slice(&["--torn-erase-seed", ss.as_str()]);
        }
        let o = b.run(&f, &extra);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(3), "cut {n}:\n{}", text(&o));
        // The process stopped at the cut: the cut line is the last thing it printed.
        assert_eq!(
            stdout.lines().last(),
            Some(format!("power cut after {n} bytes").as_str()),
            "cut {n}:\n{}",
            text(&o)
        );
        assert!(
            !stdout.contains("OTA_END"),
            "cut {n}: the list went on:\n{stdout}"
        );
        let (slot, version) = b.booted_version(&f);
        if n < total {
            assert_eq!(
                (slot.as_str(), version.as_str()),
                ("ota_0", "v1.0.0"),
                "cut {n}"
            );
        } else {
            assert_eq!(
                (slot.as_str(), version.as_str()),
                ("ota_1", "v2.0.0"),
                "cut {n}"
            );
        }
        let o = b.run(&f, &[]);
        assert!(
            o.status.success(),
            "second run after cut {n}:\n{}",
            text(&o)
        );
        assert_eq!(b.booted_version(&f).1, "v2.0.0", "cut {n}");
        let flash = std::fs::read(&f).unwrap();
        assert_eq!(
            &flash[FLASH_TONE..FLASH_TONE + b.new_tone.len()],
            &b.new_tone[..],
            "cut {n}: flash_tone after the second run"
        );
    }
}

#[test]
fn injected_write_and_erase_failures_fail_the_run_and_the_old_app_still_boots() {
    let b = Bench::new();
    // A worn-out cell inside the new app's slot (ota_1 at 0x110000).
    let f = b.fresh();
    let o = b.run(&f, &["--fail-write-at", "0x112345"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let log = text(&o);
    assert!(
        log.contains("injected flash write failure") && log.contains("0x112345"),
        "{log}"
    );
    assert!(log.contains("upgrade items failed"), "{log}");
    assert_eq!(b.booted_version(&f), ("ota_0".into(), "v1.0.0".into()));
    // The otadata sector the switch would rewrite (sector 1 at 0xE000) cannot be erased.
    let f = b.fresh();
    let o = b.run(&f, &["--fail-erase-at", "0xE000"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let log = text(&o);
    assert!(
        log.contains("injected flash erase failure") && log.contains("0xe000"),
        "{log}"
    );
    assert_eq!(b.booted_version(&f), ("ota_0".into(), "v1.0.0".into()));
    // Nothing left behind: the next run without faults completes.
    let o = b.run(&f, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(b.booted_version(&f), ("ota_1".into(), "v2.0.0".into()));
}

#[test]
fn a_tone_partition_failing_its_crc_is_rewritten_even_though_adf_init_accepts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make_app(d, "app.bin", "ota_example", "v1.0.0", 0, "30K");
    let tone = make_tone(d, "tone", 4, "v1.1.0");
    // The same bin with one byte of file data flipped: header, table and tail intact (ADF's
    // tone_partition_init passes), CRC-32 wrong. The incoming bin has the same version, so
    // without the CRC check the torn partition would be kept as "not newer".
    let mut torn = tone.clone();
    let mid = tone.len() - 100;
    torn[mid] ^= 0x55;
    std::fs::write(d.join("torn.bin"), &torn).unwrap();
    let flash = d.join("flash.bin");
    let data = format!("flash_tone={}", s(&d.join("torn.bin")));
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--app",
        s(&d.join("app.bin")),
        "--data",
        &data,
    ]);
    std::fs::create_dir_all(d.join("sdcard")).unwrap();
    std::fs::write(d.join("sdcard/flash_tone.bin"), &tone).unwrap();
    std::fs::write(
        d.join("ota.toml"),
        "data_upgrade_uri = \"file://sdcard/flash_tone.bin\"\n",
    )
    .unwrap();
    let log = ok(&[
        "device",
        "run",
        "--flash",
        s(&flash),
        "--config",
        s(&d.join("ota.toml")),
    ]);
    assert!(
        log.contains("tone partition format 1"),
        "ADF's init accepted it:\n{log}"
    );
    assert!(log.contains("fails the integrity check"), "{log}");
    assert!(
        log.contains("partition flash_tone upgrade successes"),
        "{log}"
    );
    let f = std::fs::read(&flash).unwrap();
    assert_eq!(&f[FLASH_TONE..FLASH_TONE + tone.len()], &tone[..]);
    // Now valid and not newer: skipped.
    let log = ok(&[
        "device",
        "run",
        "--flash",
        s(&flash),
        "--config",
        s(&d.join("ota.toml")),
    ]);
    assert!(log.contains("OTA skipped"), "{log}");
}

#[test]
fn a_staged_copy_cut_by_a_power_loss_is_resumed_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("parts.csv"),
        "nvs, data, nvs, , 0x4000,\notadata, data, ota, , 0x2000,\nphy_init, data, phy, , 0x1000,\n\
         ota_0, app, ota_0, , 512K,\nota_1, app, ota_1, , 512K,\nflash_tone, data, 0xff, , 256K,\n\
         tone_stage, data, 0xfe, , 260K,\n",
    )
    .unwrap();
    make_app(d, "app.bin", "ota_example", "v1.0.0", 0, "30K");
    make_tone(d, "old", 3, "v1.0.0");
    let tone = make_tone(d, "new", 5, "v1.1.0");
    let flash = d.join("flash.bin");
    let data = format!("flash_tone={}", s(&d.join("old.bin")));
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
    let (_, cfg) = sd_card_and_config(d, "flash_tone.bin", &tone, "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/flash_tone.bin\"\nlabel = \"flash_tone\"\n\
         format = \"tone\"\nstaging = \"tone_stage\"\n");
    let base = std::fs::read(&flash).unwrap();
    // A staging partition that does not exist: refused, nothing written.
    let bad = d.join("bad.toml");
    std::fs::write(
        &bad,
        "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/flash_tone.bin\"\nlabel = \"flash_tone\"\n\
         staging = \"nope\"\n",
    )
    .unwrap();
    let o = ota(&["device", "run", "--flash", s(&flash), "--config", s(&bad)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("staging partition [nope] not found"),
        "{}",
        text(&o)
    );
    assert!(std::fs::read(&flash).unwrap() == base);
    let run = |extra: &[&str]| {
        let mut a = vec!["device", "run", "--flash", s(&flash), "--config", s(&cfg)];
        a.extend_from_slice(extra);
        ota(&a)
    };
    // Learn the size of the whole run, then cut 3/4 of the way: inside the copy.
    let o = run(&["--power-cut-after-bytes", "100000000"]);
    assert!(o.status.success(), "{}", text(&o));
    let total: u64 = String::from_utf8_lossy(&o.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("no power cut: this command programmed or erased "))
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .expect("byte count");
    assert_eq!(
        &std::fs::read(&flash).unwrap()[FLASH_TONE_2MB..FLASH_TONE_2MB + tone.len()],
        &tone[..]
    );
    std::fs::write(&flash, &base).unwrap();
    let n = (total * 3 / 4).to_string();
    let o = run(&["--power-cut-after-bytes", &n]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let log = text(&o);
    assert!(log.contains("staged and verified in tone_stage"), "{log}");
    let o = run(&[]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("resuming the staged copy tone_stage -> flash_tone"),
        "{log}"
    );
    // The copy finished from the record: the bin is not downloaded and written again.
    assert!(log.contains("OTA skipped"), "{log}");
    assert_eq!(
        &std::fs::read(&flash).unwrap()[FLASH_TONE_2MB..FLASH_TONE_2MB + tone.len()],
        &tone[..]
    );
}

/// flash_tone of the 2 MB staging layout: after ota_1 (0x10000 + 2 × 512K).
const FLASH_TONE_2MB: usize = 0x110000;

#[test]
fn a_power_cut_during_the_first_boot_leaves_a_device_that_boots() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make_app(d, "app.bin", "ota_example", "v1.0.0", 0, "20K");
    let fresh = d.join("fresh.bin");
    ok(&[
        "device",
        "create",
        "--flash",
        s(&fresh),
        "--app",
        s(&d.join("app.bin")),
    ]);
    let flash = d.join("flash.bin");
    // The first boot writes otadata[0] (set_actual_ota_seq): erase 4096 bytes, write 32.
    for (n, redone) in [(10, true), (4100, false)] {
        std::fs::copy(&fresh, &flash).unwrap();
        let ns = n.to_string();
        let o = ota(&[
            "device",
            "boot",
            "--flash",
            s(&flash),
            "--power-cut-after-bytes",
            &ns,
        ]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).lines().last(),
            Some(format!("power cut after {n} bytes").as_str())
        );
        assert!(!text(&o).contains("Loaded app"), "{}", text(&o));
        let log = ok(&["device", "boot", "--flash", s(&flash)]);
        assert!(log.contains("App version:      v1.0.0"), "cut {n}: {log}");
        // Torn in the erase: otadata reads as initial again and the entry is written anew. Torn
        // in the entry (seq written, CRC not): ESP-IDF's bootloader finds no valid entry, "will
        // try all partitions", boots ota_0 and leaves otadata as it is.
        assert_eq!(
            log.contains("Set actual ota_seq=1 in otadata[0]"),
            redone,
            "cut {n}: {log}"
        );
        assert_eq!(
            log.contains("ota data partition invalid and no factory, will try all partitions"),
            !redone,
            "cut {n}: {log}"
        );
    }
}
