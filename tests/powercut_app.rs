//! Power-cut sweep over an app-only update on a device whose bootloader has rollback enabled:
//! the inactive otadata entry is invalidated (ESP-IDF v5.5+ `esp_ota_begin`), the app is
//! written into the other slot, committed as NEW, the restart turns it PENDING_VERIFY and the
//! app confirms itself (VALID). Four otadata writes, each swept byte by byte.

mod common;
mod powercut;

use common::*;
use powercut::*;

#[test]
fn app_update_with_rollback_survives_a_power_cut_at_every_sampled_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_app(d, "v1.bin", "app", "v1.0.0", 0, "40K");
    let v2 = make_app(d, "v2.bin", "app", "v2.0.0", 0, "48K");
    let v3 = make_app(d, "v3.bin", "app", "v3.0.0", 0, "56K");
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
    ]);
    // History: v2 was installed into ota_1 and confirmed, so both otadata entries are in use.
    let (sd, cfg) = sd_card_and_config(d, "app.bin", &v2, "[[upgrade]]\ntype = \"app\"\nuri = \"file://sdcard/app.bin\"\nversion_check = \"semver\"\n");
    ok(&["device", "run", "--flash", f, "--config", s(&cfg)]);
    ok(&["device", "confirm", "--flash", f]);
    // Now v3 is offered.
    std::fs::write(sd.join("app.bin"), &v3).unwrap();
    let (base, table, chip, boot) = load_device(&flash);
    assert!(boot.rollback);
    let scenario = Scenario {
        name: "app-only update with rollback (invalidate, write, NEW, PENDING_VERIFY, VALID)"
            .into(),
        base,
        table,
        chip,
        boot,
        config: ota_service::config::Config::load(&cfg).unwrap(),
        sd: Some(sd),
        op: Op::Run { self_confirm: true },
        old_app: appended_hash(&v2),
        new_app: appended_hash(&v3),
        data: None,
        final_efuse: None,
    };
    let r = sweep(&scenario);
    assert!(r.booted_old > 0 && r.booted_new > 0, "{r:?}");
    assert_clean(&scenario, &r);
}
