//! `ota device run` against slow and odd servers (the loopback `ota-testsrv`): a clear error
//! and exit status 1 within the configured bounds, never a panic (exit 101), never a wedge.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use ota_testsrv::{Faults, FlakyServer};

/// A device running v1.0.0 and an image v2.0.0 in `dir`; returns (flash, new image).
fn setup(dir: &Path) -> (PathBuf, Vec<u8>) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    for (v, out) in [("v1.0.0", "old.bin"), ("v2.0.0", "new.bin")] {
        ok(&[
            "image",
            "make",
            "--chip",
            "esp32",
            "--project",
            "app",
            "--version",
            v,
            "--size",
            "60K",
            "-o",
            &p(out),
        ]);
    }
    ok(&[
        "device",
        "create",
        "--flash",
        &p("flash.bin"),
        "--app",
        &p("old.bin"),
    ]);
    (
        dir.join("flash.bin"),
        std::fs::read(dir.join("new.bin")).unwrap(),
    )
}

fn run(flash: &Path, config: &str) -> (std::process::Output, Duration) {
    let cfg = flash.with_file_name("ota.toml");
    std::fs::write(&cfg, config).unwrap();
    let t0 = Instant::now();
    let o = ota(&[
        "device",
        "run",
        "--flash",
        flash.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--timeout-ms",
        "1000",
    ]);
    (o, t0.elapsed())
}

fn boots(flash: &Path) -> String {
    ok(&["device", "boot", "--flash", flash.to_str().unwrap()])
}

#[test]
fn device_run_redirected_to_a_non_http_url_exits_1_naming_the_location() {
    let dir = tempfile::tempdir().unwrap();
    let (flash, new) = setup(dir.path());
    for location in [
        "file:///etc/passwd",
        "data:text/plain,hello",
        "mailto:root@example.com",
        "http:///no-host",
    ] {
        let s = FlakyServer::start(
            new.clone(),
            Faults {
                redirect_to: Some(location.to_string()),
                ..Faults::default()
            },
        )
        .unwrap();
        let uri = s.url("new.bin");
        let (o, _) = run(
            &flash,
            &format!("firmware_upgrade_uri = \"{uri}\"\nretries = 0\n"),
        );
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{location}: {t}");
        assert!(!t.contains("panicked"), "{location}: {t}");
        assert!(
            t.contains(&format!("redirect to `{location}` refused")) && t.contains(&uri),
            "{location}: {t}"
        );
        assert!(boots(&flash).contains("App version:      v1.0.0"));
    }
}

#[test]
fn device_run_against_a_one_byte_per_second_server_fails_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (flash, new) = setup(dir.path());
    let s = FlakyServer::start(
        new,
        Faults {
            trickle_body: Some(Duration::from_secs(1)),
            lifetime: Duration::from_secs(30),
            ..Faults::default()
        },
    )
    .unwrap();
    let (o, took) = run(
        &flash,
        &format!(
            "firmware_upgrade_uri = \"{}\"\nretries = 1\nretry_backoff_ms = 10\nlow_speed_limit = 100\nlow_speed_time_ms = 1500\n",
            s.url("new.bin")
        ),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("transfer too slow"), "{t}");
    assert!(t.contains("low_speed_limit = 100 bytes/s"), "{t}");
    // Two attempts of one window each, plus connection setup.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(boots(&flash).contains("App version:      v1.0.0"));
}

#[test]
fn device_run_max_time_ends_a_slow_but_steady_download() {
    let dir = tempfile::tempdir().unwrap();
    let (flash, new) = setup(dir.path());
    let s = FlakyServer::start(
        new,
        Faults {
            trickle_body: Some(Duration::from_millis(5)),
            lifetime: Duration::from_secs(30),
            ..Faults::default()
        },
    )
    .unwrap();
    let (o, took) = run(
        &flash,
        &format!(
            "firmware_upgrade_uri = \"{}\"\nlow_speed_limit = 10\nmax_time_ms = 1500\n",
            s.url("new.bin")
        ),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("max_time_ms = 1500"), "{t}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(boots(&flash).contains("App version:      v1.0.0"));
}

/// Offset and size of `flash_tone` in `device create`'s default table.
#[cfg(unix)]
const FLASH_TONE: (usize, usize) = (0x210000, 0x100000);

/// `ota device run` with a data item read from `file://sdcard/NAME` of a folder card.
#[cfg(unix)]
fn run_sd(dir: &Path, flash: &Path, name: &str) -> (std::process::Output, Duration) {
    let cfg = dir.join("sd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/{name}\"\nlabel = \"flash_tone\"\n"
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let o = ota(&[
        "device",
        "run",
        "--flash",
        flash.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--sdcard",
        dir.join("card").to_str().unwrap(),
    ]);
    (o, t0.elapsed())
}

#[cfg(unix)]
#[test]
fn device_run_refuses_sd_card_links_out_of_the_card_and_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let (flash, _) = setup(dir.path());
    let card = dir.path().join("card");
    std::fs::create_dir(&card).unwrap();
    std::fs::write(dir.path().join("secret.bin"), vec![0x42u8; 5000]).unwrap();
    std::os::unix::fs::symlink("../secret.bin", card.join("evil.bin")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", card.join("zero.bin")).unwrap();
    let fifo_ok = std::process::Command::new("mkfifo")
        .arg(card.join("pipe.bin"))
        .status()
        .is_ok_and(|s| s.success());
    let before = std::fs::read(&flash).unwrap();
    let mut names = vec![
        ("evil.bin", "outside the card folder"),
        ("zero.bin", "outside the card folder"),
    ];
    if fifo_ok {
        names.push(("pipe.bin", "a FIFO, not a regular file"));
    }
    for (name, why) in names {
        let (o, took) = run_sd(dir.path(), &flash, name);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {t}");
        assert!(t.contains(why) && t.contains(name), "{name}: {t}");
        assert!(took < Duration::from_secs(20), "{name}: took {took:?}");
        // The data partition (flash_tone, 1 MB at 0x210000 in the default table) is untouched.
        let after = std::fs::read(&flash).unwrap();
        let tone = FLASH_TONE.0..FLASH_TONE.0 + FLASH_TONE.1;
        assert!(
            after[tone.clone()] == before[tone],
            "{name}: flash_tone changed"
        );
    }
}
