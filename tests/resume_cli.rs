//! Resumable downloads end to end through the CLI: `ota device run` against the flaky loopback
//! server is killed in the middle of the download (as a power loss would stop it); the rerun
//! resumes with a Range request from the checkpoint kept in flash.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ota_core::resume::ResumeLog;
use ota_emu::{Device, EmuFlash};
use ota_testsrv::{Faults, FlakyServer, Stall};

/// Write chunk of the app item (4 KiB): the checkpoint granularity.
const CHUNK: u64 = 4096;

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
fn device_run_killed_mid_download_resumes_on_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let ps = |n: &str| p(n).to_str().unwrap().to_string();
    for (v, out, size) in [("v1.0.0", "old.bin", "100K"), ("v2.0.0", "new.bin", "400K")] {
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
            size,
            "-o",
            &ps(out),
        ]);
    }
    ok(&[
        "device",
        "create",
        "--flash",
        &ps("flash.bin"),
        "--app",
        &ps("old.bin"),
    ]);
    let new = std::fs::read(p("new.bin")).unwrap();
    // The server stalls at 200 KB (for longer than the test lasts, bounded by its lifetime).
    let stall_at = 200_000u64;
    let s = FlakyServer::start(
        new.clone(),
        Faults {
            stall: Some(Stall {
                at: stall_at,
                duration: Duration::from_secs(60),
            }),
            lifetime: Duration::from_secs(120),
            ..Faults::default()
        },
    )
    .unwrap();
    std::fs::write(
        p("ota.toml"),
        format!("firmware_upgrade_uri = \"{}\"\n", s.url("new.bin")),
    )
    .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args([
            "device",
            "run",
            "--flash",
            &ps("flash.bin"),
            "--config",
            &ps("ota.toml"),
        ])
        .args(["--timeout-ms", "30000"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until everything before the stall is written and checkpointed, then kill.
    let want = stall_at / CHUNK * CHUNK;
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&p("flash.bin")) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let cp = checkpoint(&p("flash.bin"));
    assert_eq!(cp, want, "checkpoint before the kill");
    let boot = ok(&["device", "boot", "--flash", &ps("flash.bin")]);
    assert!(boot.contains("App version:      v1.0.0"), "{boot}");

    let log = ok(&[
        "device",
        "run",
        "--flash",
        &ps("flash.bin"),
        "--config",
        &ps("ota.toml"),
    ]);
    assert!(
        log.contains(&format!("Resuming download at byte {cp}")),
        "{log}"
    );
    let reqs = s.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range_start, Some(cp));
    assert_eq!(reqs[1].status, 206);
    assert_eq!(
        reqs[1].if_range.as_deref(),
        Some(format!("\"v1-{}\"", new.len()).as_str())
    );
    let again = stall_at - cp;
    println!("killed at byte {stall_at}: resumed from {cp}, {again} bytes downloaded again");
    assert!(again <= CHUNK);
    assert!(log.contains("App version:      v2.0.0"), "{log}");
    let boot = ok(&["device", "boot", "--flash", &ps("flash.bin")]);
    assert!(boot.contains("App version:      v2.0.0"), "{boot}");
}

#[test]
fn power_cut_mid_download_from_ota_serve_then_rerun_resumes() {
    // A plain app item, and the catalogue item (its size and SHA-256 check is fed the bytes
    // already in the slot before the rest of the stream).
    for catalogue in [false, true] {
        cut_and_resume(catalogue, true);
    }
}

/// `resume = false` on a catalogue item: no record is kept, the rerun downloads the image from
/// byte 0 (and still installs it).
#[test]
fn catalogue_item_with_resume_false_keeps_no_record() {
    cut_and_resume(true, false);
}

/// The body of `GET base/path` from a loopback server.
fn http_get_len(base: &str, path: &str) -> u64 {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut c = std::net::TcpStream::connect(host).unwrap();
    write!(
        c,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = Vec::new();
    c.read_to_end(&mut r).unwrap();
    let at = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (r.len() - at) as u64
}

fn cut_and_resume(catalogue: bool, resume: bool) {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let ps = |n: &str| p(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(p("www")).unwrap();
    ok(&[
        "image",
        "make",
        "--chip",
        "esp32",
        "--project",
        "app",
        "--version",
        "v1.0.0",
        "--size",
        "100K",
        "-o",
        &ps("old.bin"),
    ]);
    ok(&[
        "image",
        "make",
        "--chip",
        "esp32",
        "--project",
        "app",
        "--version",
        "v2.0.0",
        "--size",
        "400K",
        "-o",
        &ps("www/new.bin"),
    ]);
    ok(&[
        "device",
        "create",
        "--flash",
        &ps("flash.bin"),
        "--app",
        &ps("old.bin"),
    ]);
    ok(&["device", "boot", "--flash", &ps("flash.bin")]);
    let new_len = std::fs::metadata(p("www/new.bin")).unwrap().len();
    // The project's own server: strong ETags, Range and If-Range (README, `ota serve`).
    let mut opts = ota_server::ServeOptions::dir(p("www"));
    opts.bind = "127.0.0.1:0".parse().unwrap();
    opts.access_log = false;
    let server = ota_server::Background::start(opts).unwrap();
    let base = server.info.base_url.trim_end_matches('/').to_string();
    let config = if catalogue {
        format!("[[upgrade]]\ntype = \"app\"\nuri = \"{base}/manifest.json\"\nproject = \"app\"\nresume = {resume}\n")
    } else {
        format!("firmware_upgrade_uri = \"{base}/new.bin\"\n")
    };
    std::fs::write(p("ota.toml"), config).unwrap();
    // What the rerun also fetches: the catalogue.
    let extra = if catalogue {
        http_get_len(&base, "manifest.json")
    } else {
        0
    };
    // Cut after 500,000 bytes programmed/erased: about half of the image (erase + write).
    let cut = ota(&[
        "device",
        "run",
        "--flash",
        &ps("flash.bin"),
        "--config",
        &ps("ota.toml"),
        "--power-cut-after-bytes",
        "500000",
    ]);
    assert_eq!(cut.status.code(), Some(3), "{}", text(&cut));
    assert!(
        text(&cut).contains("power cut after 500000 bytes"),
        "{}",
        text(&cut)
    );
    let cp = checkpoint(&p("flash.bin"));
    if !resume {
        assert_eq!(cp, 0, "a record with resume = false");
    } else {
        assert!(cp > 0, "no checkpoint before the cut");
    }
    let boot = ok(&["device", "boot", "--flash", &ps("flash.bin")]);
    assert!(boot.contains("App version:      v1.0.0"), "{boot}");
    // The server may still be pushing the cut run's body into a closed socket: wait until its
    // byte count stands still.
    let mut served_before = server.bytes_served();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = server.bytes_served();
        if now == served_before {
            break;
        }
        served_before = now;
    }
    let log = ok(&[
        "device",
        "run",
        "--flash",
        &ps("flash.bin"),
        "--config",
        &ps("ota.toml"),
    ]);
    assert_eq!(
        log.contains(&format!("Resuming download at byte {cp}")),
        resume,
        "{log}"
    );
    assert!(log.contains("App version:      v2.0.0"), "{log}");
    // The rerun fetched only the bytes after the checkpoint (and the catalogue).
    let served = server.bytes_served() - served_before - extra;
    println!(
        "power cut at 500000 flash bytes{}: resumed from {cp}, the rerun fetched {served} of {new_len} bytes",
        if catalogue { " (catalogue item)" } else { "" }
    );
    assert_eq!(served, new_len - cp);
}
