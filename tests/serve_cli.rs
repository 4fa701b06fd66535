//! `ota serve` end to end: the real binary on 127.0.0.1 (ephemeral port), and emulated devices
//! updating through it over http, https (self-signed, pinned), and through the catalogue.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A running `ota serve`; killed (by its own pid) when dropped.
pub struct Served {
    child: Child,
    pub base: String,
    pub lines: Vec<String>,
    log: PathBuf,
}

impl Served {
    /// Start `ota serve ARGS --bind 127.0.0.1:0` and wait (at most 20 s) for its banner.
    pub fn start(args: &[&str], log: &Path) -> Served {
        let err = std::fs::File::create(log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ota"))
            .arg("serve")
            .args(args)
            .args(["--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn ota serve");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut lines = Vec::new();
        let mut base = None;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    if let Some(b) = l.split(" (").nth(1).and_then(|r| r.split("/)").next()) {
                        if l.starts_with("Serving") {
                            base = Some(b.to_string());
                        }
                    }
                    let done = l.starts_with("catalogue:") && base.is_some();
                    lines.push(l);
                    if done && !args.contains(&"--tls-self-signed") {
                        break;
                    }
                    if lines.iter().any(|l| l.starts_with("TLS CA")) {
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(st)) = child.try_wait() {
                        let mut e = String::new();
                        let _ = std::fs::File::open(log).map(|mut f| f.read_to_string(&mut e));
                        panic!("ota serve exited ({st}): {e}");
                    }
                }
                Err(_) => break,
            }
        }
        let base = base.unwrap_or_else(|| panic!("no banner from ota serve: {lines:?}"));
        Served {
            child,
            base,
            lines,
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
