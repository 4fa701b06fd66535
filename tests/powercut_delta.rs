//! Power-cut sweep over a delta update through `ota serve`'s catalogue: the device runs v1, the
//! served folder holds v1 and v2, the catalogue lists a detools patch from v1 to v2 (heatshrink,
//! esp_delta_ota header), and the device applies it over its running slot into the other one,
//! keeping a resume record whose checkpoints hold the applier's state. At every sampled cut the
//! device must boot v1 or (once otadata is complete) v2, never lose the base, and the second
//! run must finish the update; second runs after the first checkpoint resume from it.

mod common;
mod powercut;

use common::served::Served;
use common::*;
use powercut::*;

#[test]
fn delta_update_survives_a_power_cut_at_every_sampled_byte_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let v1 = make_app(&www, "app-1.0.0.bin", "app", "v1.0.0", 0, "96K");
    let v2 = make_app(&www, "app-1.1.0.bin", "app", "v1.1.0", 0, "100K");
    let flash = d.join("flash.bin");
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--app",
        s(&www.join("app-1.0.0.bin")),
    ]);
    ok(&["device", "boot", "--flash", s(&flash)]);
    let srv = Served::start(&[s(&www)], &d.join("serve.log"));
    let cfg = d.join("ota.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upgrade]]\ntype = \"app\"\nuri = \"{}/manifest.json\"\nproject = \"app\"\n\
             version_check = \"semver\"\n",
            srv.base
        ),
    )
    .unwrap();
    // The update really goes through the patch.
    let probe = d.join("probe.bin");
    std::fs::copy(&flash, &probe).unwrap();
    let o = ok(&["device", "run", "--flash", s(&probe), "--config", s(&cfg)]);
    assert!(o.contains("esp_delta_ota: patch from v1.0.0"), "{o}");
    assert!(o.contains("Resume record at"), "{o}");
    let (base, table, chip, boot) = load_device(&flash);
    let scenario = Scenario {
        name: "delta update through the catalogue (patch over the running slot, checkpoints)"
            .into(),
        base,
        table,
        chip,
        boot,
        config: ota_service::config::Config::load(&cfg).unwrap(),
        sd: None,
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
    assert!(
        r.resumed_copies > 5,
        "second runs should resume from the delta checkpoints: {r:?}"
    );
    assert_clean(&scenario, &r);
    drop(srv);
}
