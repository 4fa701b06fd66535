//! Power-cut sweep over the ESP-ADF OTA example: the tone bin from the SD card rewrites
//! `flash_tone`, the app comes over HTTP into `ota_1`, otadata switches, the device restarts.
//! Every cut point must leave a device that boots the old or the new app, with a tone partition
//! that is old, new or detectably torn, and a second run must complete the update.

mod common;
mod powercut;

use common::*;
use powercut::*;

#[test]
fn adf_example_survives_a_power_cut_at_every_sampled_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old_app = make_app(d, "old.bin", "ota_example", "v1.0.0", 0, "48K");
    let new_app = make_app(d, "new.bin", "play_mp3_control", "v2.0.0", 0, "64K");
    let old_tone = make_tone(d, "old_tone", 3, "v1.0.0");
    let new_tone = make_tone(d, "new_tone", 5, "v1.1.0");
    let flash = d.join("flash.bin");
    let data = format!("flash_tone={}", s(&d.join("old_tone.bin")));
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--app",
        s(&d.join("old.bin")),
        "--data",
        &data,
    ]);
    ok(&["device", "boot", "--flash", s(&flash)]);
    let sd = d.join("sdcard");
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::write(sd.join("flash_tone.bin"), &new_tone).unwrap();
    let http = Http::serve("play_mp3_control.bin", new_app.clone());
    let (base, table, chip, boot) = load_device(&flash);
    let scenario = Scenario {
        name: "adf-example (tone data + app over HTTP + otadata switch)".into(),
        base,
        table,
        chip,
        boot,
        // The example's upgrade list, exactly (esp-adf `examples/ota/main/ota_example.c`).
        config: ota_service::config::example(&http.base),
        sd: Some(sd),
        op: Op::Run {
            self_confirm: false,
        },
        old_app: appended_hash(&old_app),
        new_app: appended_hash(&new_app),
        data: Some(DataCheck {
            label: "flash_tone".into(),
            old: old_tone,
            new: new_tone,
            staging: None,
        }),
        final_efuse: None,
    };
    let r = sweep(&scenario);
    assert!(r.booted_old > 0 && r.booted_new > 0, "{r:?}");
    // The tone header's tag is written last: not even ADF's lenient reader sees a torn bin.
    assert_eq!(
        r.adf_init_fooled, 0,
        "a torn tone bin passed ADF's init: {r:?}"
    );
    assert_clean(&scenario, &r);
}
