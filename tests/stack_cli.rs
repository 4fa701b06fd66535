//! `ota device run --stack embassy`: the OTA service on its embassy driver, over embassy-net on
//! the PC behind a seeded link model and the user-space gateway, against `ota serve` (and the
//! flaky test server) on 127.0.0.1, on an emulated ESP32-C3 (4-byte flash unit by default).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ota_core::resume::ResumeLog;
use ota_emu::{Device, EmuFlash};
use ota_server::{Background, ServeOptions};
use ota_testsrv::{Faults, FlakyServer, Stall};

/// Where the ADF example's table puts `flash_tone` (esp-adf `examples/ota/partitions.csv`).
const FLASH_TONE: usize = 0x21_0000;

struct Bench {
    dir: tempfile::TempDir,
}

impl Bench {
    /// A rollback ESP32-C3 running v1.0.0, `www/app.bin` = v2.0.0 of `size`, `www/flash_tone.bin`.
    fn new(size: &str) -> Bench {
        let b = Bench {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(b.p("www")).unwrap();
        std::fs::create_dir_all(b.p("tones")).unwrap();
        std::fs::write(b.p("tones/000.wav"), pattern(3000, 1)).unwrap();
        std::fs::write(b.p("tones/001.mp3"), pattern(5000, 2)).unwrap();
        ok(&[
            "tone",
            "pack",
            &b.s("tones"),
            "-o",
            &b.s("www/flash_tone.bin"),
        ]);
        for (v, out, size) in [
            ("v1.0.0", "old.bin", "100K"),
            ("v2.0.0", "www/app.bin", size),
        ] {
            ok(&[
                "image",
                "make",
                "--chip",
                "esp32c3",
                "--project",
                "app",
                "--version",
                v,
                "--size",
                size,
                "-o",
                &b.s(out),
            ]);
        }
        ok(&[
            "device",
            "create",
            "--flash",
            &b.s("flash.bin"),
            "--chip",
            "esp32c3",
            "--app",
            &b.s("old.bin"),
            "--rollback",
        ]);
        b
    }

    fn p(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    fn s(&self, n: &str) -> String {
        self.p(n).to_str().unwrap().to_string()
    }

    fn config(&self, toml: &str) {
        std::fs::write(self.p("ota.toml"), toml).unwrap();
    }

    fn run(&self, extra: &[&str]) -> std::process::Output {
        let (flash, config) = (self.s("flash.bin"), self.s("ota.toml"));
        let mut args = vec!["device", "run", "--flash", &flash, "--config", &config];
        args.extend_from_slice(extra);
        ota(&args)
    }

    fn running(&self) -> String {
        ok(&["device", "boot", "--flash", &self.s("flash.bin")])
    }
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i >> 8) as u8)
        .collect()
}

fn serve(dir: &Path) -> Background {
    let mut o = ServeOptions::dir(dir);
    o.bind = "127.0.0.1:0".parse().unwrap();
    o.access_log = false;
    Background::start(o).expect("ota serve starts")
}

/// The ADF example's list from `ota serve`: the tone data item, then the app item (restart).
fn adf_example_over_embassy(link: &str) {
    let b = Bench::new("150K");
    let srv = serve(&b.p("www"));
    let base = &srv.info.base_url;
    // The app through 127.0.0.1 (rewritten to the gateway), the data through `host.ota`
    // (the gateway's DNS name).
    let port = srv.info.addr.port();
    b.config(&format!(
        "firmware_upgrade_uri = \"{base}/app.bin\"\n\
         data_upgrade_uri = \"http://host.ota:{port}/flash_tone.bin\"\n"
    ));
    let o = b.run(&["--stack", "embassy", "--link", link]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(log.contains("List id: 0, OTA success"), "{log}");
    assert!(log.contains("List id: 1, OTA success"), "{log}");
    assert!(
        log.contains("the device reaches it through the gateway as http://10.0.2.2:"),
        "{log}"
    );
    assert!(log.contains("Restarting..."), "{log}");
    let after = log.rsplit("Restarting...").next().unwrap();
    assert!(after.contains("App version:      v2.0.0"), "{log}");
    // The data partition holds the tone bin, byte for byte.
    let tone = std::fs::read(b.p("www/flash_tone.bin")).unwrap();
    let flash = std::fs::read(b.p("flash.bin")).unwrap();
    assert!(
        flash[FLASH_TONE..FLASH_TONE + tone.len()] == tone[..],
        "flash_tone differs from the served bin"
    );
    // The new app confirms itself and stays.
    let c = ok(&["device", "confirm", "--flash", &b.s("flash.bin")]);
    assert!(c.contains("PENDING_VERIFY -> VALID"), "{c}");
    assert!(b.running().contains("App version:      v2.0.0"));
    let stats = log
        .lines()
        .find(|l| l.contains("STACK: link:"))
        .unwrap_or("");
    println!("{link}: {stats}");
}

#[test]
fn embassy_stack_runs_the_adf_example_list_from_ota_serve() {
    adf_example_over_embassy("seed=1");
}

#[test]
fn embassy_stack_runs_the_adf_example_list_over_a_lossy_link() {
    adf_example_over_embassy("loss=5%,seed=5");
}

/// The resume record's progress in the flash file (0 when there is none).
fn checkpoint(flash: &Path) -> u64 {
    let Ok(f) = EmuFlash::open(flash) else {
        return 0;
    };
    let mut dev = Device::open(f).expect("device");
    let table = dev.table().clone();
    let slot = *table.ota(1).expect("ota_1");
    let log = ResumeLog::locate(&table, &slot).expect("log place");
    match log.read(dev.flash_mut()) {
        Ok(Some(r)) => r.progress as u64,
        _ => 0,
    }
}

#[test]
fn embassy_stack_power_cut_mid_app_download_then_resumes_with_range() {
    let b = Bench::new("400K");
    let srv = serve(&b.p("www"));
    let new_len = std::fs::metadata(b.p("www/app.bin")).unwrap().len();
    b.config(&format!(
        "firmware_upgrade_uri = \"{}/app.bin\"\n",
        srv.info.base_url
    ));
    let cut = b.run(&["--stack", "embassy", "--power-cut-after-bytes", "500000"]);
    assert_eq!(cut.status.code(), Some(3), "{}", text(&cut));
    let cp = checkpoint(&b.p("flash.bin"));
    assert!(cp > 0 && cp < new_len, "checkpoint {cp} of {new_len}");
    assert!(b.running().contains("App version:      v1.0.0"));
    // The cut run's connection may still be draining: wait until the count stands still.
    let mut before = srv.bytes_served();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = srv.bytes_served();
        if now == before {
            break;
        }
        before = now;
    }
    let o = b.run(&["--stack", "embassy"]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!("Resuming download at byte {cp}")),
        "{log}"
    );
    assert!(log.contains("App version:      v2.0.0"), "{log}");
    let fetched = srv.bytes_served() - before;
    println!("power cut: checkpoint {cp}, the rerun fetched {fetched} of {new_len} bytes");
    assert_eq!(
        fetched,
        new_len - cp,
        "the rerun did not fetch only the rest"
    );
}

#[test]
fn embassy_stack_stalled_server_fails_the_item_and_the_old_app_boots() {
    let b = Bench::new("150K");
    let app = std::fs::read(b.p("www/app.bin")).unwrap();
    let srv = FlakyServer::start(
        app,
        Faults {
            stall: Some(Stall {
                at: 60_000,
                duration: Duration::from_secs(30),
            }),
            lifetime: Duration::from_secs(40),
            ..Faults::default()
        },
    )
    .unwrap();
    b.config(&format!(
        "retries = 0\nfirmware_upgrade_uri = \"{}\"\n",
        srv.url("app.bin")
    ));
    let t0 = std::time::Instant::now();
    let o = b.run(&["--stack", "embassy", "--timeout-ms", "1000"]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(log.contains("List id: 0, OTA failed"), "{log}");
    assert!(log.contains("STREAM_RD_FAIL"), "{log}");
    assert!(log.contains("timed out"), "{log}");
    assert!(b.running().contains("App version:      v1.0.0"));
}

#[test]
fn embassy_stack_dropped_connection_is_retried_from_where_it_broke() {
    let b = Bench::new("150K");
    let app = std::fs::read(b.p("www/app.bin")).unwrap();
    let srv = FlakyServer::start(
        app.clone(),
        Faults {
            drop_at: vec![70_000],
            ..Faults::default()
        },
    )
    .unwrap();
    b.config(&format!(
        "retries = 1\nretry_backoff_ms = 100\nfirmware_upgrade_uri = \"{}\"\n",
        srv.url("app.bin")
    ));
    let o = b.run(&["--stack", "embassy"]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(log.contains("List id: 0, OTA success"), "{log}");
    let starts = srv.resumed_from();
    println!("dropped at 70000: requests started at {starts:?}");
    assert!(
        starts.iter().any(|&s| s > 0 && s <= 70_000),
        "no Range request after the drop: {starts:?}"
    );
    assert!(log.contains("App version:      v2.0.0"), "{log}");

    // Without retries the same drop fails the item, and the old app boots.
    let b = Bench::new("150K");
    let srv = FlakyServer::start(
        app,
        Faults {
            drop_at: vec![70_000],
            ..Faults::default()
        },
    )
    .unwrap();
    b.config(&format!(
        "retries = 0\nfirmware_upgrade_uri = \"{}\"\n",
        srv.url("app.bin")
    ));
    let o = b.run(&["--stack", "embassy"]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("List id: 0, OTA failed"), "{log}");
    assert!(log.contains("STREAM_RD_FAIL"), "{log}");
    assert!(b.running().contains("App version:      v1.0.0"));
}

#[test]
fn embassy_stack_download_time_follows_the_link_rate() {
    let b = Bench::new("150K");
    let srv = serve(&b.p("www"));
    let len = std::fs::metadata(b.p("www/app.bin")).unwrap().len();
    b.config(&format!(
        "firmware_upgrade_uri = \"{}/app.bin\"\n",
        srv.info.base_url
    ));
    let o = b.run(&[
        "--stack",
        "embassy",
        "--link",
        "rate=56kB/s,rtt=60ms,loss=1%,seed=3",
    ]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    // "STACK: item 0: done at N bytes in S s, R kB/s (N bytes fetched)"
    let line = log
        .lines()
        .find(|l| l.contains("STACK: item 0: done at"))
        .unwrap_or_else(|| panic!("no rate line: {log}"));
    let secs: f64 = line
        .split(" in ")
        .nth(1)
        .and_then(|r| r.split(" s,").next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no time in {line}"));
    let expected = len as f64 / 56_000.0;
    println!(
        "rate=56kB/s,rtt=60ms,loss=1%: {len} bytes in {secs:.2} s, size/rate = {expected:.2} s"
    );
    assert!(
        secs >= expected * 0.8 && secs <= expected * 3.0,
        "{secs:.2} s vs {expected:.2} s: {line}"
    );
}

#[test]
fn bad_link_spec_is_a_usage_error_naming_the_bad_part() {
    let b = Bench::new("100K");
    b.config("firmware_upgrade_uri = \"http://127.0.0.1:1/app.bin\"\n");
    let o = b.run(&["--stack", "embassy", "--link", "rate=56kB/s,lost=1%"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("lost=1%"), "{}", text(&o));
    let o = b.run(&["--link", "rate=56kB/s"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--stack embassy"), "{}", text(&o));
    let help = ok(&["device", "run", "--help"]);
    assert!(
        help.contains("--stack") && help.contains("--link"),
        "{help}"
    );
    // The flash was not touched.
    assert!(b.running().contains("App version:      v1.0.0"));
}

#[test]
fn embassy_stack_refuses_https_with_a_clear_reason() {
    let b = Bench::new("100K");
    // https without a pinned CA (`cert`): never fetched unverified (tests/stack_tls_cli.rs
    // has https with one).
    b.config("firmware_upgrade_uri = \"https://localhost:1/app.bin\"\n");
    let o = b.run(&["--stack", "embassy"]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("no pinned CA"), "{log}");
    assert!(b.running().contains("App version:      v1.0.0"));
}
