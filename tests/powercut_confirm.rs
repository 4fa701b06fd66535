//! Power-cut sweep over a rollback confirmation (`ota device confirm`,
//! esp_ota_mark_app_valid_cancel_rollback) on a device with anti-rollback: the new app runs
//! PENDING_VERIFY, the confirmation rewrites its otadata entry as VALID and burns its
//! secure_version into the emulated eFuse. A cut anywhere must leave the old or the new app
//! bootable, and the second run (which re-installs the update if the cut lost it) must end with
//! the new app VALID and the eFuse at its secure_version.

mod common;
mod powercut;

use common::*;
use powercut::*;

#[test]
fn rollback_confirmation_survives_a_power_cut_at_every_sampled_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1 = make_app(d, "v1.bin", "app", "v1.0.0", 1, "24K");
    let v2 = make_app(d, "v2.bin", "app", "v2.0.0", 2, "28K");
    let flash = d.join("flash.bin");
    let f = s(&flash);
    ok(&[
        "device",
        "create",
        "--flash",
        f,
        "--app",
        s(&d.join("v1.bin")),
        "--rollback",
        "--anti-rollback",
    ]);
    let (sd, cfg) = sd_card_and_config(d, "app.bin", &v2, "[[upgrade]]\ntype = \"app\"\nuri = \"file://sdcard/app.bin\"\nversion_check = \"semver\"\n");
    // v2 installed and booted once: PENDING_VERIFY, eFuse still at v1's 1.
    let log = ok(&["device", "run", "--flash", f, "--config", s(&cfg)]);
    assert!(log.contains("NEW -> PENDING_VERIFY"), "{log}");
    let (base, table, chip, boot) = load_device(&flash);
    assert!(boot.anti_rollback);
    assert_eq!(boot.efuse_secure_version, 1);
    let scenario = Scenario {
        name: "rollback confirmation with anti-rollback (PENDING_VERIFY -> VALID, eFuse burn)"
            .into(),
        base,
        table,
        chip,
        boot,
        config: ota_service::config::Config::load(&cfg).unwrap(),
        sd: Some(sd),
        op: Op::Confirm,
        old_app: appended_hash(&v1),
        new_app: appended_hash(&v2),
        data: None,
        final_efuse: Some(2),
    };
    let r = sweep(&scenario);
    assert!(r.booted_old > 0 && r.booted_new > 0, "{r:?}");
    assert_clean(&scenario, &r);
}
