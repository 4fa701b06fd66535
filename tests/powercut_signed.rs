//! Power-cut sweep over a signed app update on a Secure Boot v2 device: the app is signed by
//! `espsecure sign-data` (ECDSA P-256 key made per run by `espsecure generate-signing-key`),
//! the device's eFuse trusts that key, the update comes from the SD card. At every sampled cut
//! the bootloader (which verifies each app's signature before it boots it) must boot the old
//! or the new app, and the rerun must complete the update.

mod common;
mod powercut;

use std::process::Command;

use common::*;
use powercut::*;

#[test]
fn signed_app_update_under_secure_boot_survives_a_power_cut_at_every_sampled_byte() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let espsecure = |args: &[&str]| {
        let o = Command::new(&py)
            .args(["-m", "espsecure"])
            .args(args)
            .output()
            .expect("espsecure");
        assert!(o.status.success(), "espsecure {args:?}:\n{}", text(&o));
    };
    let key = d.join("key.pem");
    espsecure(&[
        "generate-signing-key",
        "--version",
        "2",
        "--scheme",
        "ecdsa256",
        s(&key),
    ]);
    let v1 = make_app(d, "v1.bin", "app", "v1.0.0", 0, "40K");
    let v2 = make_app(d, "v2.bin", "app", "v2.0.0", 0, "48K");
    for v in ["v1", "v2"] {
        espsecure(&[
            "sign-data",
            "--version",
            "2",
            "--keyfile",
            s(&key),
            "-o",
            s(&d.join(format!("{v}.signed.bin"))),
            s(&d.join(format!("{v}.bin"))),
        ]);
    }
    let v2_signed = std::fs::read(d.join("v2.signed.bin")).unwrap();
    let flash = d.join("flash.bin");
    let f = s(&flash);
    ok(&[
        "device",
        "create",
        "--flash",
        f,
        "--app",
        s(&d.join("v1.signed.bin")),
        "--secure-boot-key",
        s(&key),
    ]);
    ok(&["device", "boot", "--flash", f]);
    let (sd, cfg) = sd_card_and_config(
        d,
        "app.bin",
        &v2_signed,
        "[[upgrade]]\ntype = \"app\"\nuri = \"file://sdcard/app.bin\"\n",
    );
    let (base, table, chip, boot) = load_device(&flash);
    assert!(boot.secure_boot.is_some(), "the device has secure boot");
    let scenario = Scenario {
        name: "signed app update under Secure Boot v2 (ECDSA P-256)".into(),
        base,
        table,
        chip,
        boot,
        config: ota_service::config::Config::load(&cfg).unwrap(),
        sd: Some(sd),
        op: Op::Run {
            self_confirm: false,
        },
        old_app: appended_hash(&v1),
        new_app: appended_hash(&v2),
        data: None,
        final_efuse: None,
    };
    let r = sweep(&scenario);
    assert!(r.booted_old > 0 && r.booted_new > 0, "{r:?}");
    assert_clean(&scenario, &r);
}
