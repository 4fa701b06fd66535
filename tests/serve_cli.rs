//! `ota serve` end to end: the real binary on 127.0.0.1 (ephemeral port), and emulated devices
//! updating through it over http, https (self-signed, pinned), and through the catalogue.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::served::Served;
use common::*;

/// A device: ESP32, example table, `app v1.0.0` in ota_0, booted once.
fn device(dir: &Path) -> PathBuf {
    let run = dir.join("run.bin");
    ok(&[
        "image",
        "make",
        "--project",
        "app",
        "--version",
        "v1.0.0",
        "--size",
        "60K",
        "-o",
        s(&run),
    ]);
    let flash = dir.join("flash.bin");
    ok(&["device", "create", "--flash", s(&flash), "--app", s(&run)]);
    ok(&["device", "boot", "--flash", s(&flash)]);
    flash
}

fn make_image(out: &Path, project: &str, version: &str, size: &str) {
    ok(&[
        "image",
        "make",
        "--project",
        project,
        "--version",
        version,
        "--size",
        size,
        "-o",
        s(out),
    ]);
}

fn boot_json(flash: &Path) -> serde_json::Value {
    let o = ok(&["device", "boot", "--flash", s(flash), "--json"]);
    let start = o.find('{').unwrap();
    serde_json::from_str(&o[start..o.rfind('}').unwrap() + 1]).unwrap()
}

fn run_device(flash: &Path, config: &Path) -> std::process::Output {
    ota(&["device", "run", "--flash", s(flash), "--config", s(config)])
}

#[test]
fn serve_help_says_loopback_by_default() {
    let h = ok(&["serve", "--help"]);
    assert!(h.contains("[default: 127.0.0.1:8080]"), "{h}");
}

#[test]
fn device_updates_over_http_from_ota_serve_and_requests_are_logged() {
    let t = tempfile::tempdir().unwrap();
    let flash = device(t.path());
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    make_image(&www.join("fw.bin"), "app", "v2.0.0", "200K");
    let srv = Served::start(&[s(&www)], &t.path().join("serve.log"));
    assert!(srv.base.starts_with("http://127.0.0.1:"), "{}", srv.base);
    let cfg = t.path().join("ota.toml");
    std::fs::write(
        &cfg,
        format!("firmware_upgrade_uri = \"{}/fw.bin\"\n", srv.base),
    )
    .unwrap();
    let o = run_device(&flash, &cfg);
    assert!(o.status.success(), "{}", text(&o));
    let b = boot_json(&flash);
    assert_eq!(b["version"], "v2.0.0");
    assert_eq!(b["slot"], "ota_1");
    let size = std::fs::metadata(www.join("fw.bin")).unwrap().len();
    assert!(
        wait_for_log(&srv, &format!("\"GET /fw.bin HTTP/1.1\" 200 - {size} ")),
        "{}",
        srv.log()
    );
    let line = srv
        .log()
        .lines()
        .find(|l| l.contains("/fw.bin"))
        .unwrap()
        .to_string();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.ends_with("ms"), "{line}");
}

fn wait_for_log(srv: &Served, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if srv.log().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn serve_refuses_a_missing_folder_and_a_busy_port() {
    let t = tempfile::tempdir().unwrap();
    let o = ota(&["serve", s(&t.path().join("nope")), "--bind", "127.0.0.1:0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("nope"), "{}", text(&o));
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let o = ota(&["serve", s(t.path()), "--bind", &addr]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&format!("cannot bind {addr}")),
        "{}",
        text(&o)
    );
}

/// GET over plain HTTP on loopback (no client crate needed): (status, body).
fn http_get(base: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&all[9..12]).parse().unwrap();
    (status, all[end + 4..].to_vec())
}

fn catalogue_config(path: &Path, uri: &str, policy: &str, extra: &str) {
    std::fs::write(
        path,
        format!(
            "[[upgrade]]\ntype = \"app\"\nuri = \"{uri}\"\nproject = \"app\"\nversion_check = \"{policy}\"\n{extra}"
        ),
    )
    .unwrap();
}

/// The catalogue folder of the manifest tests: the newest valid `app` for esp32 is v2.0.0.
fn catalogue_folder(www: &Path) {
    std::fs::create_dir_all(www.join("old")).unwrap();
    make_image(&www.join("old/app-1.5.bin"), "app", "v1.5.0", "80K");
    make_image(&www.join("app-2.0.bin"), "app", "v2.0.0", "90K");
    // Newer but corrupt: listed with its error, never offered.
    make_image(&www.join("app-3.0.bin"), "app", "v3.0.0", "90K");
    let mut b = std::fs::read(www.join("app-3.0.bin")).unwrap();
    b[50_000] ^= 0xFF;
    std::fs::write(www.join("app-3.0.bin"), b).unwrap();
    // Newer, but another project / another chip.
    make_image(&www.join("other.bin"), "other", "v9.0.0", "50K");
    ok(&[
        "image",
        "make",
        "--chip",
        "esp32c3",
        "--project",
        "app",
        "--version",
        "v9.0.0",
        "-o",
        s(&www.join("c3.bin")),
    ]);
}

#[test]
fn device_updates_through_the_catalogue_to_the_newest_valid_image() {
    let t = tempfile::tempdir().unwrap();
    let flash = device(t.path());
    let www = t.path().join("www");
    catalogue_folder(&www);
    let srv = Served::start(&[s(&www)], &t.path().join("serve.log"));
    assert!(
        srv.lines.iter().any(|l| l.contains("(5 entries;")),
        "{:?}",
        srv.lines
    );

    let (status, body) = http_get(&srv.base, "/manifest.json");
    assert_eq!(status, 200);
    let cat: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let entries = cat["entries"].as_array().unwrap();
    let bad = entries
        .iter()
        .find(|e| e["path"] == "/app-3.0.bin")
        .unwrap();
    assert_eq!(bad["kind"], "app");
    assert!(bad["error"].as_str().unwrap().contains("failed"), "{bad}");
    let good = entries
        .iter()
        .find(|e| e["path"] == "/old/app-1.5.bin")
        .unwrap();
    assert_eq!(good["chip"], "esp32");
    assert_eq!(good["version"], "v1.5.0");
    assert_eq!(good["error"], serde_json::Value::Null);

    let cfg = t.path().join("ota.toml");
    catalogue_config(&cfg, &format!("{}/manifest.json", srv.base), "semver", "");
    let o = run_device(&flash, &cfg);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("the newest is v2.0.0"), "{log}");
    assert_eq!(boot_json(&flash)["version"], "v2.0.0");

    // Run again: the newest is what runs, so the item is skipped and nothing is written.
    let before = std::fs::read(&flash).unwrap();
    let o = run_device(&flash, &cfg);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("OTA skipped"), "{}", text(&o));
    assert!(std::fs::read(&flash).unwrap() == before);
}

#[test]
fn catalogue_item_refuses_a_download_that_does_not_match_and_commits_nothing() {
    let t = tempfile::tempdir().unwrap();
    let flash = device(t.path());
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    make_image(&www.join("app.bin"), "app", "v2.0.0", "90K");
    // A catalogue that is never rescanned, then the file is replaced by another valid image of
    // the same size: the catalogue's SHA-256 no longer matches what is downloaded.
    let srv = Served::start(
        &[s(&www), "--rescan-ms", "3600000"],
        &t.path().join("serve.log"),
    );
    make_image(&t.path().join("swap.bin"), "app", "v2.0.1", "90K");
    std::fs::rename(t.path().join("swap.bin"), www.join("app.bin")).unwrap();
    let cfg = t.path().join("ota.toml");
    catalogue_config(&cfg, &format!("{}/manifest.json", srv.base), "semver", "");
    let before = std::fs::read(&flash).unwrap();
    let o = run_device(&flash, &cfg);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("does not match the catalogue"), "{log}");
    assert!(log.contains("SHA-256 of the download is"), "{log}");
    let after = std::fs::read(&flash).unwrap();
    assert!(
        after[0xD000..0xF000] == before[0xD000..0xF000],
        "otadata changed"
    );
    assert!(
        after[0x10000..0x110000] == before[0x10000..0x110000],
        "running slot changed"
    );
    assert_eq!(boot_json(&flash)["version"], "v1.0.0");

    // Nothing for this chip/project: a clear failure, nothing written.
    let cfg2 = t.path().join("ota2.toml");
    std::fs::write(
        &cfg2,
        format!(
            "[[upgrade]]\ntype = \"app\"\nuri = \"{}/manifest.json\"\nproject = \"nope\"\n",
            srv.base
        ),
    )
    .unwrap();
    let o = run_device(&flash, &cfg2);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("no valid app image for chip esp32, project nope"),
        "{}",
        text(&o)
    );
}

#[test]
fn device_updates_over_https_with_a_self_signed_certificate_pinned() {
    let t = tempfile::tempdir().unwrap();
    let flash = device(t.path());
    let www = t.path().join("www");
    catalogue_folder(&www);
    let tls = t.path().join("tls");
    let srv = Served::start(
        &[s(&www), "--tls-self-signed", "--tls-dir", s(&tls)],
        &t.path().join("serve.log"),
    );
    assert!(srv.base.starts_with("https://127.0.0.1:"), "{}", srv.base);
    let ca_line = srv.lines.iter().find(|l| l.starts_with("TLS CA")).unwrap();
    assert!(ca_line.ends_with(s(&tls.join("ca.pem"))), "{ca_line}");

    // Without the pin the device refuses the certificate and nothing changes.
    let cfg = t.path().join("nopin.toml");
    catalogue_config(&cfg, &format!("{}/manifest.json", srv.base), "semver", "");
    let o = run_device(&flash, &cfg);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("TLS failed"), "{}", text(&o));
    assert_eq!(boot_json(&flash)["version"], "v1.0.0");

    // Pinned (cert relative to the config file): the catalogue and the image over https.
    let cfg = t.path().join("ota.toml");
    catalogue_config(
        &cfg,
        &format!("{}/manifest.json", srv.base),
        "semver",
        "cert = \"tls/ca.pem\"\n",
    );
    let o = run_device(&flash, &cfg);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(boot_json(&flash)["version"], "v2.0.0");
    drop(srv);

    // The generated pair works as --tls-cert/--tls-key too (a direct image URI this time).
    let srv = Served::start(
        &[
            s(&www),
            "--tls-cert",
            s(&tls.join("cert.pem")),
            "--tls-key",
            s(&tls.join("key.pem")),
        ],
        &t.path().join("serve2.log"),
    );
    let cfg = t.path().join("direct.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upgrade]]\ntype = \"app\"\nuri = \"{}/old/app-1.5.bin\"\ncert = \"tls/ca.pem\"\n",
            srv.base
        ),
    )
    .unwrap();
    let o = run_device(&flash, &cfg);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(boot_json(&flash)["version"], "v1.5.0");
}

#[test]
fn fleet_sim_updates_every_device_from_ota_serve() {
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    make_image(&www.join("fleet.bin"), "fleet", "v1.0.0", "64K");
    let srv = Served::start(&[s(&www), "--quiet"], &t.path().join("serve.log"));
    let o = ota(&[
        "fleet-sim",
        "--devices",
        "50",
        "--mode",
        "threads",
        "--pool",
        "8",
        "--server",
        &srv.base,
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(
            "50 of 50 devices updated and booted the new app (0 failed); now running: v1.0.0"
        ),
        "{out}"
    );
    assert!(
        out.contains("firmware bytes served (as counted by the devices): 3276800 "),
        "{out}"
    );
    assert!(
        out.contains("server peak memory: ") && out.contains("(VmHWM of pid"),
        "{out}"
    );

    // A catalogue with nothing newer: every device fails, and the exit status says so.
    let o = ota(&[
        "fleet-sim",
        "--devices",
        "3",
        "--server",
        &srv.base,
        "--from-version",
        "v1.0.0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("0 of 3 devices updated"), "{}", text(&o));
}

/// The number before `what` in `line` (`"... 2 threads at most"`).
fn number_before(line: &str, what: &str) -> f64 {
    let head = line
        .split(what)
        .next()
        .unwrap_or_else(|| panic!("no `{what}` in {line}"));
    head.split_whitespace()
        .last()
        .and_then(|w| w.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no number before `{what}` in {line}"))
}

#[test]
fn fleet_sim_runs_hundreds_of_devices_as_futures_on_a_few_threads() {
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    make_image(&www.join("fleet.bin"), "fleet", "v1.0.0", "16K");
    let srv = Served::start(&[s(&www), "--quiet"], &t.path().join("serve.log"));
    let o = ota(&["fleet-sim", "--devices", "300", "--server", &srv.base]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(
            "300 esp32 devices running fleet v0.0.0, 100 at a time (futures on one thread)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "300 of 300 devices updated and booted the new app (0 failed); now running: v1.0.0"
        ),
        "{out}"
    );
    assert!(
        out.contains("firmware bytes served (as counted by the devices): 4915200 "),
        "{out}"
    );
    let total = out
        .lines()
        .find(|l| l.contains("fleet-sim: total "))
        .unwrap();
    assert!(number_before(total, " devices/s") > 0.0, "{total}");
    // One thread runs the devices (plus embassy-time's timer thread and the main one): far
    // fewer threads than devices.
    let sim = out
        .lines()
        .find(|l| l.starts_with("fleet-sim: simulator peak memory: "))
        .unwrap_or_else(|| panic!("no simulator line: {out}"));
    let threads = number_before(sim, " threads at most");
    assert!((1.0..=4.0).contains(&threads), "{sim}");
    // 100 devices in flight on copy-on-write flashes: far below 100 whole 4 MiB flashes.
    let mib = number_before(sim, " MiB (VmHWM)");
    assert!(mib > 0.0 && mib < 128.0, "{sim}");
    assert!(
        out.contains("server peak memory: ") && out.contains("(VmHWM of pid"),
        "{out}"
    );

    // The bounds: connections in flight, and no TLS in the async mode.
    for bad in ["0", "1000"] {
        let o = ota(&["fleet-sim", "--concurrency", bad, "--server", &srv.base]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("--concurrency must be from 1 to 100"),
            "{}",
            text(&o)
        );
    }
    let o = ota(&["fleet-sim", "--server", "https://127.0.0.1:1"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("use --mode threads for https"),
        "{}",
        text(&o)
    );
}

#[test]
fn serve_without_a_folder_serves_the_current_one() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("fw.bin"), b"from the current folder").unwrap();
    let srv = Served::start_in(Some(t.path()), &["--quiet"], &t.path().join("serve.log"));
    let root = t.path().canonicalize().unwrap();
    assert!(
        srv.lines[0].ends_with(&format!("from {}", root.display())),
        "{:?}",
        srv.lines
    );
    assert_eq!(
        http_get(&srv.base, "/fw.bin"),
        (200, b"from the current folder".to_vec())
    );
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Sockets a process holds open (its listener included).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// The soft limit on open files of this process.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}

#[test]
fn serve_caps_half_sent_connections_and_gives_the_memory_back() {
    use std::io::Write;
    const CAP: usize = 100;
    // Each half-sent connection is one descriptor here; stay well inside the limit.
    let n = 3000.min(open_files_limit().saturating_sub(200));
    assert!(
        n >= 500,
        "open file limit too low for this test: {}",
        open_files_limit()
    );
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("fw.bin"), b"firmware").unwrap();
    let srv = Served::start(
        &[
            s(&www),
            "--quiet",
            "--max-connections",
            "100",
            "--header-timeout-ms",
            "30000",
        ],
        &t.path().join("serve.log"),
    );
    let pid = srv.pid();
    assert_eq!(http_get(&srv.base, "/fw.bin").0, 200);
    // The listener and the runtime's own descriptors (its signal driver's socket pair).
    let base_sockets = sockets(pid);
    let base_rss = rss_kib(pid);
    let addr = srv.base.trim_start_matches("http://").to_string();
    let start = Instant::now();
    let (mut peak_rss, mut peak_sockets) = (base_rss, 0);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        let _ = c.write_all(b"GET /fw.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        held.push(c);
        if i % 100 == 99 {
            peak_rss = peak_rss.max(rss_kib(pid));
            peak_sockets = peak_sockets.max(sockets(pid));
        }
        if i % 1000 == 500 {
            let t0 = Instant::now();
            assert_eq!(http_get(&srv.base, "/fw.bin"), (200, b"firmware".to_vec()));
            assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        }
        assert!(start.elapsed() < Duration::from_secs(90), "flood too slow");
    }
    let t0 = Instant::now();
    assert_eq!(http_get(&srv.base, "/fw.bin"), (200, b"firmware".to_vec()));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    peak_sockets = peak_sockets.max(sockets(pid));
    peak_rss = peak_rss.max(rss_kib(pid));
    println!(
        "{n} half-sent connections: server sockets at most {peak_sockets}, RSS {base_rss} KiB -> peak {peak_rss} KiB"
    );
    // The cap, plus the listener (and the runtime's own) and a few being closed.
    assert!(
        peak_sockets <= CAP + base_sockets + 8,
        "{peak_sockets} sockets open, cap {CAP}, {base_sockets} before the flood"
    );
    assert!(
        peak_rss < base_rss + 32 * 1024,
        "RSS grew from {base_rss} KiB to {peak_rss} KiB"
    );
    drop(held);
    assert!(
        wait_until(15, || sockets(pid) <= base_sockets),
        "{} sockets still open after the clients left ({base_sockets} before)",
        sockets(pid)
    );
    assert!(
        wait_until(15, || rss_kib(pid) < base_rss + 8 * 1024),
        "RSS {} KiB after they closed (base {base_rss} KiB)",
        rss_kib(pid)
    );
}

fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn serve_tls_self_signed_keeps_the_pinned_ca_and_adds_tls_san_names() {
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("fw.bin"), b"firmware").unwrap();
    let tls = t.path().join("tls");
    let args = |san: &'static str| {
        vec![
            s(&www).to_string(),
            "--quiet".into(),
            "--tls-self-signed".into(),
            "--tls-dir".into(),
            s(&tls).to_string(),
            "--tls-san".into(),
            san.into(),
            "--tls-san".into(),
            "192.0.2.7".into(),
        ]
    };
    let a1 = args("fw.example");
    let a1: Vec<&str> = a1.iter().map(|s| s.as_str()).collect();
    let srv = Served::start(&a1, &t.path().join("serve.log"));
    let note = srv.lines.iter().find(|l| l.starts_with("TLS: ")).unwrap();
    assert!(note.contains("created a new CA"), "{note}");
    assert!(
        note.contains("127.0.0.1, localhost, fw.example, 192.0.2.7"),
        "{note}"
    );
    let ca = std::fs::read(tls.join("ca.pem")).unwrap();
    let ca_key = std::fs::read(tls.join("ca-key.pem")).unwrap();
    curl_check(&srv.base, &tls.join("ca.pem"), "fw.example", true);
    drop(srv);

    let a2 = args("fw2.example");
    let a2: Vec<&str> = a2.iter().map(|s| s.as_str()).collect();
    let srv = Served::start(&a2, &t.path().join("serve2.log"));
    let note = srv.lines.iter().find(|l| l.starts_with("TLS: ")).unwrap();
    assert!(note.contains("reusing the CA"), "{note}");
    assert_eq!(
        std::fs::read(tls.join("ca.pem")).unwrap(),
        ca,
        "the pinned CA changed"
    );
    assert_eq!(std::fs::read(tls.join("ca-key.pem")).unwrap(), ca_key);
    curl_check(&srv.base, &tls.join("ca.pem"), "fw2.example", true);
    curl_check(&srv.base, &tls.join("ca.pem"), "fw.example", false);
    drop(srv);

    // A damaged CA is an error naming it, and it stays as it is.
    std::fs::write(tls.join("ca-key.pem"), b"junk").unwrap();
    let o = ota(&[
        "serve",
        s(&www),
        "--bind",
        "127.0.0.1:0",
        "--tls-self-signed",
        "--tls-dir",
        s(&tls),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("ca-key.pem"), "{}", text(&o));
    assert!(text(&o).contains("not replaced"), "{}", text(&o));
    assert_eq!(std::fs::read(tls.join("ca-key.pem")).unwrap(), b"junk");
    assert_eq!(std::fs::read(tls.join("ca.pem")).unwrap(), ca);
}

/// With curl installed: GET /fw.bin as `https://NAME:PORT` resolved to the server, trusting only
/// `ca`; `ok` says whether the certificate must be accepted for NAME.
fn curl_check(base: &str, ca: &Path, name: &str, ok: bool) {
    let port = base.rsplit(':').next().unwrap();
    let out = match Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}/fw.bin"))
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            println!("SKIP: curl not installed; certificate names not checked with it");
            return;
        }
    };
    if ok {
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"firmware");
    } else {
        assert!(!out.status.success(), "{name} accepted");
    }
}
