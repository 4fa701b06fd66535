//! App rollback and anti-rollback end to end through the CLI (esp-idf `esp_ota_ops.c`, `bootloader_utility.c`, `esp_efuse_fields.c`): a new
//! app on a rollback device boots once as PENDING_VERIFY and is rolled back at the next boot
//! unless `ota device confirm` marks it VALID; `ota device rollback` gives up on it at once;
//! with anti-rollback the emulated eFuse counter only goes up and older apps never boot or
//! install.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const OTA_0: std::ops::Range<usize> = 0x10000..0x110000;
const OTADATA: std::ops::Range<usize> = 0xD000..0xF000;

struct Dev {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Dev {
    /// A device with `app v1.0.0` (secure_version `sv1`) in ota_0, created with `flags`.
    fn new(sv1: u32, flags: &[&str]) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let d = Dev {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        d.image("v1.bin", "v1.0.0", sv1);
        let mut args = vec![
            "device",
            "create",
            "--flash",
            d.p("flash.bin"),
            "--app",
            d.p("v1.bin"),
        ];
        args.extend_from_slice(flags);
        ok(&args);
        std::fs::create_dir_all(d.dir.join("sdcard")).unwrap();
        d
    }

    fn p(&self, name: &str) -> &str {
        let s = self.dir.join(name).to_str().unwrap().to_string();
        Box::leak(s.into_boxed_str())
    }

    fn image(&self, file: &str, version: &str, sv: u32) {
        let sv = sv.to_string();
        ok(&[
            "image",
            "make",
            "--chip",
            "esp32",
            "--project",
            "app",
            "--version",
            version,
            "--secure-version",
            &sv,
            "--size",
            "30K",
            "-o",
            self.p(file),
        ]);
    }

    /// Offer `file` on the SD card and run the update list (an app item, semver check).
    fn run(&self, file: &str, reboot: bool) -> std::process::Output {
        std::fs::copy(self.dir.join(file), self.dir.join("sdcard/app.bin")).unwrap();
        std::fs::write(
            self.dir.join("ota.toml"),
            format!(
                "[[upgrade]]\ntype = \"app\"\nuri = \"file://sdcard/app.bin\"\n\
                 version_check = \"semver\"\nreboot = {reboot}\n"
            ),
        )
        .unwrap();
        ota(&[
            "device",
            "run",
            "--flash",
            self.p("flash.bin"),
            "--config",
            self.p("ota.toml"),
        ])
    }

    fn cmd(&self, sub: &str) -> std::process::Output {
        ota(&["device", sub, "--flash", self.p("flash.bin")])
    }

    fn boot(&self) -> Value {
        let o = ota(&["device", "boot", "--flash", self.p("flash.bin"), "--json"]);
        serde_json::from_str(&String::from_utf8_lossy(&o.stdout))
            .unwrap_or_else(|e| panic!("boot --json ({e}):\n{}", text(&o)))
    }

    fn info(&self) -> Value {
        let out = ok(&["device", "info", "--flash", self.p("flash.bin"), "--json"]);
        serde_json::from_str(&out).unwrap()
    }

    fn flash(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("flash.bin")).unwrap()
    }
}

fn slot_version(v: &Value) -> (String, String) {
    (
        v["slot"].as_str().unwrap_or("-").to_string(),
        v["version"].as_str().unwrap_or("-").to_string(),
    )
}

#[test]
fn an_unconfirmed_app_boots_once_then_the_bootloader_rolls_back() {
    let d = Dev::new(0, &["--rollback"]);
    d.image("v2.bin", "v2.0.0", 0);
    let o = d.run("v2.bin", true);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("otadata[1] seq 2: NEW -> PENDING_VERIFY"),
        "{log}"
    );
    assert!(log.contains("App version:      v2.0.0"), "{log}");
    // Not confirmed: the next boot aborts it and the previous app runs again.
    let b = d.boot();
    assert_eq!(slot_version(&b), ("ota_0".into(), "v1.0.0".into()));
    assert_eq!(b["ota_state"], "valid");
    let info = d.info();
    assert_eq!(info["otadata"]["entries"][1]["state"], "aborted");
    assert_eq!(info["settings"]["rollback"], true);
    assert_eq!(info["settings"]["anti_rollback"], false);
    let o = ota(&["device", "boot", "--flash", d.p("flash.bin")]);
    assert!(
        !text(&o).contains("PENDING_VERIFY -> ABORTED"),
        "aborted only once"
    );
}

#[test]
fn confirm_keeps_the_new_app_across_boots() {
    let d = Dev::new(0, &["--rollback"]);
    d.image("v2.bin", "v2.0.0", 0);
    assert!(d.run("v2.bin", true).status.success());
    let o = d.cmd("confirm");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "otadata[1] seq 2: PENDING_VERIFY -> VALID (esp_ota_mark_app_valid_cancel_rollback)"
        ),
        "{}",
        text(&o)
    );
    for _ in 0..2 {
        let b = d.boot();
        assert_eq!(slot_version(&b), ("ota_1".into(), "v2.0.0".into()));
        assert_eq!(b["ota_state"], "valid");
    }
    let before = d.flash();
    let o = d.cmd("confirm");
    assert!(
        text(&o).contains("already VALID: nothing written"),
        "{}",
        text(&o)
    );
    assert!(d.flash() == before);
}

#[test]
fn device_rollback_marks_the_app_invalid_and_restarts_into_the_previous_one() {
    let d = Dev::new(0, &["--rollback"]);
    d.image("v2.bin", "v2.0.0", 0);
    assert!(d.run("v2.bin", true).status.success());
    let o = d.cmd("rollback");
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("otadata[1]: -> INVALID"), "{log}");
    assert!(log.contains("Restarting..."), "{log}");
    assert!(
        log.contains("Loaded app from partition at offset 0x10000"),
        "{log}"
    );
    assert_eq!(slot_version(&d.boot()), ("ota_0".into(), "v1.0.0".into()));
    assert_eq!(d.info()["otadata"]["entries"][1]["state"], "invalid");
    // Now v1 runs and nothing is left to fall back to: refused, nothing written.
    let before = d.flash();
    let o = d.cmd("rollback");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("ESP_ERR_OTA_ROLLBACK_FAILED"),
        "{}",
        text(&o)
    );
    assert!(d.flash() == before, "a refused rollback must not write");
}

#[test]
fn an_update_is_refused_while_the_running_app_is_pending_verify() {
    let d = Dev::new(0, &["--rollback"]);
    d.image("v2.bin", "v2.0.0", 0);
    d.image("v3.bin", "v3.0.0", 0);
    // v2 committed as NEW without a restart: the next power-on runs it PENDING_VERIFY.
    assert!(d.run("v2.bin", false).status.success());
    let before = d.flash();
    let o = d.run("v3.bin", true);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("0x1506 ESP_ERR_OTA_ROLLBACK_INVALID_STATE") && log.contains("PENDING_VERIFY"),
        "{log}"
    );
    let after = d.flash();
    assert!(
        before[OTA_0] == after[OTA_0],
        "the previous app must stay intact"
    );
    // Once confirmed, the update goes ahead; the stale entry of the slot it overwrites is
    // invalidated first (ESP-IDF v5.5+ esp_ota_begin).
    assert!(d.cmd("confirm").status.success());
    let o = d.run("v3.bin", true);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("otadata[0] (ota_0) invalidated before the update"),
        "{log}"
    );
    assert!(d.cmd("confirm").status.success());
    assert_eq!(slot_version(&d.boot()), ("ota_0".into(), "v3.0.0".into()));
}

#[test]
fn anti_rollback_burns_the_efuse_on_confirm_and_refuses_older_images() {
    let d = Dev::new(1, &["--rollback", "--anti-rollback"]);
    assert_eq!(d.info()["efuse"]["secure_version"], 0);
    assert_eq!(d.info()["efuse"]["secure_version_bits"], 32);
    // First boot: set_actual_ota_seq writes VALID, the bootloader burns v1's secure_version.
    let o = ota(&["device", "boot", "--flash", d.p("flash.bin")]);
    assert!(
        text(&o).contains("eFuse secure_version 0 -> 1"),
        "{}",
        text(&o)
    );
    assert_eq!(d.info()["efuse"]["secure_version"], 1);
    d.image("v2.bin", "v2.0.0", 2);
    assert!(d.run("v2.bin", true).status.success());
    assert_eq!(
        d.info()["efuse"]["secure_version"],
        1,
        "not burnt while PENDING_VERIFY"
    );
    let o = d.cmd("confirm");
    assert!(
        text(&o).contains("eFuse secure_version 1 -> 2"),
        "{}",
        text(&o)
    );
    assert_eq!(d.info()["efuse"]["secure_version"], 2);
    // A newer version string with an older secure_version: refused before anything is written.
    d.image("v3.bin", "v3.0.0", 1);
    let before = d.flash();
    let o = d.run("v3.bin", true);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("secure_version 1, below the eFuse secure version 2")
            && log.contains("0x1504 ESP_ERR_OTA_SMALL_SEC_VER"),
        "{log}"
    );
    let after = d.flash();
    assert!(before[OTA_0] == after[OTA_0] && before[OTADATA] == after[OTADATA]);
    // Rolling back to v1 (secure_version 1 < 2) is not possible either.
    let o = d.cmd("rollback");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn the_bootloader_never_boots_an_app_below_the_efuse_counter() {
    let d = Dev::new(
        1,
        &[
            "--rollback",
            "--anti-rollback",
            "--efuse-secure-version",
            "3",
        ],
    );
    let o = ota(&["device", "boot", "--flash", d.p("flash.bin"), "--json"]);
    // Exit status 4: nothing boots (README "Exit status").
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let log = text(&o);
    assert!(log.contains("No bootable app"), "{log}");
    let o = ota(&["device", "boot", "--flash", d.p("flash.bin")]);
    assert!(
        text(&o).contains("has secure_version 1 < eFuse 3: anti-rollback skips it"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_power_cut_during_confirm_falls_back_to_the_previous_app() {
    let d = Dev::new(0, &["--rollback"]);
    d.image("v2.bin", "v2.0.0", 0);
    assert!(d.run("v2.bin", true).status.success());
    let pending = d.flash();
    // The entry's sector erased half way: the new entry is gone, the previous app boots.
    let o = ota(&[
        "device",
        "confirm",
        "--flash",
        d.p("flash.bin"),
        "--power-cut-after-bytes",
        "100",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().last(),
        Some("power cut after 100 bytes")
    );
    assert_eq!(slot_version(&d.boot()), ("ota_0".into(), "v1.0.0".into()));
    // Cut exactly when the 32-byte entry is complete: the confirmation holds.
    std::fs::write(d.dir.join("flash.bin"), &pending).unwrap();
    let o = ota(&[
        "device",
        "confirm",
        "--flash",
        d.p("flash.bin"),
        "--power-cut-after-bytes",
        "4128",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let b = d.boot();
    assert_eq!(slot_version(&b), ("ota_1".into(), "v2.0.0".into()));
    assert_eq!(b["ota_state"], "valid");
}

#[test]
fn device_settings_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let flash = tmp.path().join("f.bin");
    let f = s(&flash);
    // Kconfig: anti-rollback depends on rollback.
    let o = ota(&["device", "create", "--flash", f, "--anti-rollback"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--rollback"), "{}", text(&o));
    // The eFuse field of an ESP32 has 32 bits.
    let o = ota(&[
        "device",
        "create",
        "--flash",
        f,
        "--rollback",
        "--anti-rollback",
        "--efuse-secure-version",
        "33",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not fit the 32-bit"), "{}", text(&o));
    assert!(!Path::new(&flash).exists(), "nothing created on bad input");
    // A broken settings file is named.
    ok(&["device", "create", "--flash", f, "--rollback"]);
    let side = tmp.path().join("f.bin.device.toml");
    assert!(std::fs::read_to_string(&side)
        .unwrap()
        .contains("rollback = true"));
    std::fs::write(&side, "[bootloader]\nrollback = maybe\n").unwrap();
    let o = ota(&["device", "info", "--flash", f]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("f.bin.device.toml") && text(&o).contains("line 2"),
        "{}",
        text(&o)
    );
    // Without a settings file (a dump from a real board): ESP-IDF's defaults.
    std::fs::remove_file(&side).unwrap();
    let info: Value =
        serde_json::from_str(&ok(&["device", "info", "--flash", f, "--json"])).unwrap();
    assert_eq!(info["settings"]["rollback"], false);
    assert_eq!(info["settings"]["file"], Value::Null);
    assert_eq!(info["efuse"]["secure_version"], 0);
}
