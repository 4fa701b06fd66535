//! The HTTP side of `ota serve` against a real server on 127.0.0.1: lengths, ranges, ETags,
//! conditional requests, traversal, malformed requests, files changing under a download.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn get_and_head_send_length_etag_last_modified_and_accept_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let data = body(300_000);
    std::fs::write(dir.path().join("fw.bin"), &data).unwrap();
    let srv = serve(dir.path());
    let r = get(srv.info.addr, "/fw.bin", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.h("content-length"), Some("300000"));
    assert_eq!(r.h("accept-ranges"), Some("bytes"));
    let etag = format!("\"{}\"", sha256_hex(&data));
    assert_eq!(r.h("etag"), Some(etag.as_str()), "strong ETag = SHA-256");
    assert!(r.h("last-modified").unwrap().ends_with("GMT"));

    let h = raw(srv.info.addr, "HEAD /fw.bin HTTP/1.1\r\nHost: x");
    assert_eq!(h.status, 200);
    assert_eq!(h.h("content-length"), Some("300000"));
    assert_eq!(h.h("etag"), Some(etag.as_str()));
    assert!(h.body.is_empty());
}

#[test]
fn single_ranges_get_206_with_content_range() {
    let dir = tempfile::tempdir().unwrap();
    let data = body(10_000);
    std::fs::write(dir.path().join("fw.bin"), &data).unwrap();
    let srv = serve(dir.path());
    let a = srv.info.addr;
    for (range, start, end) in [
        ("bytes=0-99", 0usize, 99usize),
        ("bytes=9000-", 9000, 9999),
        ("bytes=-10", 9990, 9999),
        ("bytes=9990-999999999", 9990, 9999),
    ] {
        let r = get(a, "/fw.bin", &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.body, &data[start..=end], "{range}");
        assert_eq!(
            r.h("content-range").unwrap(),
            format!("bytes {start}-{end}/10000")
        );
        assert_eq!(
            r.h("content-length").unwrap(),
            (end - start + 1).to_string()
        );
    }
}

#[test]
fn unsatisfiable_and_huge_ranges_get_416_and_bad_ones_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = body(1000);
    std::fs::write(dir.path().join("fw.bin"), &data).unwrap();
    let srv = serve(dir.path());
    let a = srv.info.addr;
    for range in [
        "bytes=1000-",
        "bytes=5000-6000",
        "bytes=-0",
        "bytes=184467440737095516150-",
    ] {
        let r = get(a, "/fw.bin", &[("Range", range)]);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.h("content-range"), Some("bytes */1000"), "{range}");
    }
    // Negative, reversed or garbage ranges are not ranges: the whole file, 200.
    for range in [
        "bytes=-5-10",
        "bytes=10-5",
        "bytes=abc",
        "pages=1-2",
        "bytes=--1",
    ] {
        let r = get(a, "/fw.bin", &[("Range", range)]);
        assert_eq!(r.status, 200, "{range}");
        assert_eq!(r.body, data, "{range}");
    }
}

#[test]
fn multi_range_requests_get_the_whole_file_with_200() {
    let dir = tempfile::tempdir().unwrap();
    let data = body(5000);
    std::fs::write(dir.path().join("fw.bin"), &data).unwrap();
    let srv = serve(dir.path());
    let r = get(srv.info.addr, "/fw.bin", &[("Range", "bytes=0-9,100-199")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.h("content-range"), None);
}

#[test]
fn if_none_match_and_if_modified_since_give_304() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fw.bin"), body(2000)).unwrap();
    let srv = serve(dir.path());
    let a = srv.info.addr;
    let first = get(a, "/fw.bin", &[]);
    let etag = first.h("etag").unwrap().to_string();
    let lm = first.h("last-modified").unwrap().to_string();
    let r = get(a, "/fw.bin", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.h("etag"), Some(etag.as_str()));
    let r = get(a, "/fw.bin", &[("If-None-Match", "\"other\", W/\"x\"")]);
    assert_eq!(r.status, 200);
    let r = get(a, "/fw.bin", &[("If-Modified-Since", &lm)]);
    assert_eq!(r.status, 304);
    let r = get(a, "/fw.bin", &[("If-Match", "\"stale\"")]);
    assert_eq!(r.status, 412);
    let r = get(a, "/fw.bin", &[("If-Match", &etag), ("Range", "bytes=0-0")]);
    assert_eq!(r.status, 206);
}

#[test]
fn resuming_with_if_range_after_the_file_changed_restarts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.bin");
    let old = body(4000);
    std::fs::write(&path, &old).unwrap();
    let srv = serve(dir.path());
    let a = srv.info.addr;
    let first = get(a, "/fw.bin", &[("Range", "bytes=0-999")]);
    assert_eq!(first.status, 206);
    let old_etag = first.h("etag").unwrap().to_string();

    // Same ETag: the range is honoured.
    let r = get(
        a,
        "/fw.bin",
        &[("Range", "bytes=1000-"), ("If-Range", &old_etag)],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &old[1000..]);

    // The file is replaced: new ETag, and the resume gets the whole new file with 200.
    let new: Vec<u8> = body(4000).iter().map(|b| b ^ 0x55).collect();
    std::fs::write(&path, &new).unwrap();
    let r = get(
        a,
        "/fw.bin",
        &[("Range", "bytes=1000-"), ("If-Range", &old_etag)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, new);
    assert_ne!(r.h("etag").unwrap(), old_etag);
    assert_eq!(r.h("etag").unwrap(), format!("\"{}\"", sha256_hex(&new)));
    // An old date as If-Range also restarts.
    let r = get(
        a,
        "/fw.bin",
        &[
            ("Range", "bytes=10-"),
            ("If-Range", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn traversal_is_refused_in_every_spelling() {
    let root = tempfile::tempdir().unwrap();
    let served = root.path().join("www");
    std::fs::create_dir(&served).unwrap();
    std::fs::write(root.path().join("secret.txt"), b"TOP SECRET").unwrap();
    std::fs::write(served.join("ok.bin"), b"fine").unwrap();
    std::fs::create_dir(served.join("sub")).unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.txt"), served.join("link.bin")).unwrap();
    std::os::unix::fs::symlink(root.path(), served.join("up")).unwrap();
    std::os::unix::fs::symlink(served.join("ok.bin"), served.join("inside.bin")).unwrap();
    let srv = serve(&served);
    let a = srv.info.addr;
    let abs = root.path().join("secret.txt");
    let abs = abs.to_str().unwrap();
    let attempts = [
        "/../secret.txt".to_string(),
        "/sub/../../secret.txt".to_string(),
        "/%2e%2e/secret.txt".to_string(),
        "/%2E%2E%2Fsecret.txt".to_string(),
        "/sub/%2e%2e/%2e%2e/secret.txt".to_string(),
        format!("/{abs}"),
        format!("/%2f{}", abs.trim_start_matches('/')),
        "/link.bin".to_string(),
        "/up/secret.txt".to_string(),
        "/..%5csecret.txt".to_string(),
    ];
    for p in &attempts {
        let r = raw(a, &format!("GET {p} HTTP/1.1\r\nHost: x"));
        assert!(
            r.status == 403 || r.status == 400,
            "{p}: status {} body {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("TOP SECRET"),
            "{p}"
        );
    }
    // A symlink that stays inside is fine.
    assert_eq!(get(a, "/inside.bin", &[]).body, b"fine");
    // Folders and missing files are 404.
    assert_eq!(get(a, "/sub", &[]).status, 404);
    assert_eq!(get(a, "/nope.bin", &[]).status, 404);
    assert_eq!(get(a, "/ok.bin/x", &[]).status, 404);
}

#[test]
fn malformed_requests_are_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fw.bin"), b"ok").unwrap();
    let srv = serve(dir.path());
    let a = srv.info.addr;
    for junk in [
        &b"\x16\x03\x01\x02\x00garbage-not-http\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /fw.bin HTTP/9.9\r\n\r\n",
        b"GET /fw.bin HTTP/1.1\r\nHost x\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(junk).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 5"),
            "{junk:?} -> {text}"
        );
        assert!(!text.contains("200 OK"), "{junk:?} -> {text}");
    }
    // A head larger than the limit is refused.
    let big = format!(
        "GET /fw.bin HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(big.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    // Other methods: 405 with Allow.
    let r = raw(a, "POST /fw.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 0");
    assert_eq!(r.status, 405);
    assert_eq!(r.h("allow"), Some("GET, HEAD"));
    // Still serving.
    assert_eq!(get(a, "/fw.bin", &[]).body, b"ok");
}

/// Open a download of `path`, read the head and `first` body bytes, then let `change` modify
/// the file, then read the rest.
fn download_while(
    addr: std::net::SocketAddr,
    path: &str,
    first: usize,
    change: impl FnOnce(),
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .is_none_or(|e| got.len() < e + 4 + first)
    {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    change();
    let _ = s.read_to_end(&mut got);
    parse(&got)
}

#[test]
fn a_file_truncated_or_rewritten_during_a_download_breaks_the_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    // Much larger than the loopback socket buffers, so the server is mid-file when it changes.
    let size = 24 << 20;
    std::fs::write(&path, vec![0xA5u8; size]).unwrap();
    let srv = serve(dir.path());
    let a = srv.info.addr;

    let r = download_while(a, "/big.bin", 65536, || {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(1 << 20).unwrap();
    });
    assert_eq!(r.status, 200);
    assert!(r.short, "truncation must not look like a complete download");
    assert!(r.body.len() < size);

    std::fs::write(&path, vec![0x11u8; size]).unwrap();
    let first = get(a, "/big.bin", &[("Range", "bytes=0-0")]);
    let etag = first.h("etag").unwrap().to_string();
    let r = download_while(a, "/big.bin", 65536, || {
        // Same size, new bytes in place: a new version.
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0x22u8; 4096], (size - 4096) as u64)
            .unwrap();
        f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
            .unwrap();
    });
    assert!(
        r.short,
        "a file changed in place must not be served as the old version"
    );
    assert!(
        !r.body.contains(&0x22),
        "bytes of the new version leaked into the old one"
    );
    let after = get(a, "/big.bin", &[("Range", "bytes=0-0")]);
    assert_ne!(
        after.h("etag").unwrap(),
        etag,
        "the ETag changes with the file"
    );

    // A vanished file is 404 on the next request.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(get(a, "/big.bin", &[]).status, 404);
}

#[test]
fn catalogue_is_served_with_etag_and_revalidates_with_304() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(ota_core::Chip::Esp32, "blink", "v1.0.0", 20_000);
    std::fs::write(dir.path().join("blink.bin"), &img).unwrap();
    let srv = serve(dir.path());
    let a = srv.info.addr;
    let r = get(a, "/manifest.json", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-type"), Some("application/json"));
    let cat = ota_catalogue::Catalogue::from_json(&r.body).unwrap();
    assert_eq!(cat.entries.len(), 1);
    assert_eq!(cat.entries[0].sha256, sha256_hex(&img));
    let etag = r.h("etag").unwrap().to_string();
    assert_eq!(
        get(a, "/manifest.json", &[("If-None-Match", &etag)]).status,
        304
    );
    let h = raw(a, "HEAD /manifest.json HTTP/1.1\r\nHost: x");
    assert_eq!(h.h("content-length").unwrap(), r.body.len().to_string());
}
