//! `ota publish --delta-bases` against a real SeaweedFS (`weed mini` on 127.0.0.1): the patch
//! to a new newest app is made from the previous versions downloaded from the bucket, uploaded
//! content-addressed and listed in the catalogue; `ota serve --store` serves it to an emulated
//! device, which downloads the patch and not the image; bases that fail their checks are
//! skipped with a warning.

mod common;

use std::path::Path;

use common::delta::*;
use common::served::Served;
use common::weed::*;
use common::*;
use sha2::{Digest, Sha256};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// `ota serve --store` in front of the bucket (HEADs and the catalogue reused for 100 ms).
fn serve(weed: &Weed, log: &Path) -> Served {
    let store = format!("s3://{BUCKET}");
    Served::start(
        &[
            "--store",
            &store,
            "--s3-endpoint",
            &weed.endpoint,
            "--s3-access-key",
            ACCESS,
            "--s3-secret-key",
            SECRET,
            "--rescan-ms",
            "100",
        ],
        log,
    )
}

/// The catalogue the server serves now (waits out its reuse interval first).
fn catalogue(srv: &Served) -> serde_json::Value {
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, _, body) = get(addr(srv), "/manifest.json", "");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn addr(srv: &Served) -> &str {
    srv.base.trim_start_matches("http://")
}

fn entry<'a>(cat: &'a serde_json::Value, version: &str) -> &'a serde_json::Value {
    cat["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["version"] == version)
        .unwrap_or_else(|| panic!("no {version} in {cat}"))
}

fn deltas(e: &serde_json::Value) -> Vec<serde_json::Value> {
    e["deltas"].as_array().cloned().unwrap_or_default()
}

/// The `delta from … to …: N bytes (P % of the image), key K` lines: (from, to, N, K).
fn delta_lines(out: &str) -> Vec<(String, String, u64, String)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("delta from "))
        .map(|l| {
            let (from, rest) = l.split_once(" to ").unwrap();
            let (to, rest) = rest.split_once(": ").unwrap();
            let (n, rest) = rest.split_once(" bytes (").unwrap();
            assert!(rest.contains(" % of the image), key "), "{l}");
            let key = rest.split(", key ").nth(1).unwrap();
            let key = key.split_whitespace().next().unwrap();
            (
                from.to_string(),
                to.to_string(),
                n.parse().unwrap(),
                key.to_string(),
            )
        })
        .collect()
}

#[test]
fn published_delta_is_listed_applies_and_a_device_downloads_it_through_ota_serve() {
    let Some(bin) = weed() else { return };
    let weed = Weed::start(&bin);
    let t = tempfile::tempdir().unwrap();
    let v1 = t.path().join("app-1.0.0.bin");
    let v11 = t.path().join("app-1.1.0.bin");
    make_image(&v1, "v1.0.0");
    make_image(&v11, "v1.1.0");
    let (b1, b11) = (std::fs::read(&v1).unwrap(), std::fs::read(&v11).unwrap());

    // The first version has nothing to patch from.
    let out = text(&publish_when_up(&v1, &weed.endpoint, &[]));
    assert!(
        out.contains("no delta patches: the store holds no earlier version"),
        "{out}"
    );
    assert!(delta_lines(&out).is_empty(), "{out}");

    // The second gets a patch from the first, uploaded content-addressed.
    let o = publish_with(&v11, &weed.endpoint, &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let lines = delta_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    let (from, to, size, key) = &lines[0];
    assert_eq!((from.as_str(), to.as_str()), ("v1.0.0", "v1.1.0"), "{out}");
    assert!(
        key.starts_with("deltas/app/") && key.ends_with(".patch"),
        "{out}"
    );

    let srv = serve(&weed, &t.path().join("serve.log"));
    let cat = catalogue(&srv);
    assert!(deltas(entry(&cat, "v1.0.0")).is_empty(), "{cat}");
    let e11 = entry(&cat, "v1.1.0");
    assert_eq!(e11["sha256"], sha256_hex(&b11));
    let d = deltas(e11);
    assert_eq!(d.len(), 1, "{cat}");
    let d = &d[0];
    assert_eq!(d["path"], format!("/{key}"));
    assert_eq!(d["size"], *size);
    assert_eq!(d["base_version"], "v1.0.0");
    assert_eq!(d["target_sha256"], sha256_hex(&b11));
    assert_eq!(d["compression"], "heatshrink");
    // The base digest is the one a device computes for its slot: the image's appended SHA-256.
    let (body, appended) = b1.split_at(b1.len() - 32);
    assert_eq!(sha256_hex(body), hex(appended), "v1 ends with its hash");
    assert_eq!(d["base_sha256"], hex(appended));

    // The patch object, served from the bucket like an image, is what the catalogue says and
    // turns v1.0.0 into v1.1.0 byte for byte.
    let (status, _, patch) = get(addr(&srv), d["path"].as_str().unwrap(), "");
    assert_eq!(status, 200);
    assert_eq!(patch.len() as u64, *size);
    assert_eq!(d["sha256"], sha256_hex(&patch));
    assert_eq!(
        key,
        &format!("deltas/app/{}.patch", sha256_hex(&patch)),
        "content-addressed"
    );
    let pf = t.path().join("p.patch");
    std::fs::write(&pf, &patch).unwrap();
    let outf = t.path().join("out.bin");
    ok(&["delta", "apply", s(&v1), s(&pf), "-o", s(&outf)]);
    assert!(
        std::fs::read(&outf).unwrap() == b11,
        "patched output differs"
    );

    // A device running v1.0.0 takes the patch through ota serve --store, not the image.
    let flash = t.path().join("flash.bin");
    ok(&["device", "create", "--flash", s(&flash), "--app", s(&v1)]);
    ok(&["device", "boot", "--flash", s(&flash)]);
    let cfg = t.path().join("ota.toml");
    config(&cfg, &srv.base, None);
    let o = ota(&["device", "run", "--flash", s(&flash), "--config", s(&cfg)]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("esp_delta_ota: patch from v1.0.0"), "{log}");
    assert!(!log.contains("falling back"), "{log}");
    assert_eq!(boot_version(&flash), "v1.1.0");
    let served = srv.log();
    assert_eq!(served_bytes(&served, ".patch"), *size + *size, "{served}"); // ours + the device's
    assert_eq!(
        served_bytes(&served, e11["path"].as_str().unwrap()),
        0,
        "{served}"
    );
    assert!(*size < b11.len() as u64);

    // An older version published later gets no patch and says so; the newest keeps its own.
    let v105 = t.path().join("app-1.0.5.bin");
    make_image(&v105, "v1.0.5");
    let o = publish_with(&v105, &weed.endpoint, &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("no delta patches: not the newest of its chip and project (v1.1.0 is"),
        "{out}"
    );
    assert!(delta_lines(&out).is_empty(), "{out}");
    let cat = catalogue(&srv);
    assert_eq!(deltas(entry(&cat, "v1.1.0")).len(), 1, "{cat}");
    assert!(deltas(entry(&cat, "v1.0.5")).is_empty(), "{cat}");

    // --delta-bases 0: no patch, and the entry that is no longer the newest keeps none.
    let v12 = t.path().join("app-1.2.0.bin");
    make_image(&v12, "v1.2.0");
    let o = publish_with(&v12, &weed.endpoint, &["--delta-bases", "0"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("no delta patches (--delta-bases 0)"), "{out}");
    assert!(delta_lines(&out).is_empty(), "{out}");
    let cat = catalogue(&srv);
    assert!(deltas(entry(&cat, "v1.2.0")).is_empty(), "{cat}");
    assert!(deltas(entry(&cat, "v1.1.0")).is_empty(), "{cat}");
    // The patch to v1.1.0 is listed no more, but the catalogue it replaced listed it (a device
    // may be downloading it): it stays for one more publish.
    assert!(!out.contains("removed superseded patch"), "{out}");
    let first = format!("/{key}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(get(addr(&srv), &first, "").0, 200, "{first} kept");

    // The next publish lists it in neither catalogue: deleted, and said so. The three new
    // patches to v1.3.0 are listed.
    let v13 = t.path().join("app-1.3.0.bin");
    make_image(&v13, "v1.3.0");
    let o = publish_with(&v13, &weed.endpoint, &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let made = delta_lines(&out);
    assert_eq!(made.len(), 3, "{out}");
    let removed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("removed superseded patch "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(removed, [key.as_str()], "{out}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(get(addr(&srv), &first, "").0, 404, "{first} deleted");
    let cat = catalogue(&srv);
    assert_eq!(deltas(entry(&cat, "v1.3.0")).len(), 3, "{cat}");

    // v1.4.0: the patches to v1.3.0 were listed by the catalogue it replaces: kept, none
    // deleted; they go with the publish after.
    let v14 = t.path().join("app-1.4.0.bin");
    make_image(&v14, "v1.4.0");
    let out = text(&publish_with(&v14, &weed.endpoint, &["--delta-bases", "1"]));
    assert_eq!(delta_lines(&out).len(), 1, "{out}");
    assert!(!out.contains("removed superseded patch"), "{out}");
    let v15 = t.path().join("app-1.5.0.bin");
    make_image(&v15, "v1.5.0");
    let out = text(&publish_with(&v15, &weed.endpoint, &["--delta-bases", "1"]));
    let removed: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("removed superseded patch "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let mut to13: Vec<String> = made.iter().map(|m| m.3.clone()).collect();
    to13.sort();
    assert_eq!(removed, to13, "{out}");
}

#[test]
fn bases_that_fail_their_checks_are_skipped_with_a_warning() {
    let Some(bin) = weed() else { return };
    let weed = Weed::start(&bin);
    let t = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for v in ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"] {
        let f = t.path().join(format!("{v}.bin"));
        make_image(&f, v);
        bytes.push(std::fs::read(&f).unwrap());
    }
    let file = |v: &str| t.path().join(format!("{v}.bin"));
    publish_when_up(&file("v1.0.0"), &weed.endpoint, &["--delta-bases", "0"]);
    for v in ["v1.1.0", "v1.2.0"] {
        let o = publish_with(&file(v), &weed.endpoint, &["--delta-bases", "0"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // Behind the S3 API's back: v1.1.0 gets one byte changed (same size), v1.0.0 is cut short.
    let mut bad = bytes[1].clone();
    bad[5000] ^= 0x5a;
    let key11 = format!("firmware/app/{}.bin", sha256_hex(&bytes[1]));
    let status = weed.overwrite(&key11, &bad);
    assert!((200..300).contains(&status), "filer PUT: {status}");
    let key10 = format!("firmware/app/{}.bin", sha256_hex(&bytes[0]));
    let status = weed.overwrite(&key10, &bytes[0][..50_000]);
    assert!((200..300).contains(&status), "filer PUT: {status}");

    // v1.3.0 with the default 3 bases: v1.2.0 is patched from; v1.1.0 and v1.0.0 are skipped,
    // each with its reason; the publish still succeeds.
    let o = publish_with(&file("v1.3.0"), &weed.endpoint, &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let lines = delta_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0].0, "v1.2.0", "{out}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "warning: no delta from v1.1.0 (/{key11}): {key11}: its SHA-256 is {}, the catalogue says {}",
            sha256_hex(&bad),
            sha256_hex(&bytes[1])
        )),
        "{out}"
    );
    assert!(
        err.contains(&format!(
            "warning: no delta from v1.0.0 (/{key10}): {key10} is 50000 bytes, the catalogue says {}",
            bytes[0].len()
        )),
        "{out}"
    );

    let srv = serve(&weed, &t.path().join("serve.log"));
    let cat = catalogue(&srv);
    let d = deltas(entry(&cat, "v1.3.0"));
    assert_eq!(d.len(), 1, "{cat}");
    assert_eq!(d[0]["base_version"], "v1.2.0");
    assert_eq!(d[0]["target_sha256"], sha256_hex(&bytes[3]));
}
