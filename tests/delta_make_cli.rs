//! `ota delta make`: what it prints and how it fails (non-zero exit, the input named, no
//! patch left behind). The patches themselves are judged by detools in
//! `tests/interop_delta_make.rs`.

mod common;

use common::*;

fn fails(args: &[&str], needle: &str) {
    let o = ota(args);
    let t = text(&o);
    assert!(!o.status.success(), "ota {args:?} succeeded:\n{t}");
    assert!(
        t.contains(needle),
        "ota {args:?}: expected {needle:?} in:\n{t}"
    );
}

#[test]
fn delta_make_prints_size_and_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let old: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let mut new = old.clone();
    new[1000] ^= 1;
    std::fs::write(dir.path().join("old"), &old).unwrap();
    std::fs::write(dir.path().join("new"), &new).unwrap();
    let p = dir.path().join("p");
    let out = ok(&[
        "delta",
        "make",
        s(&dir.path().join("old")),
        s(&dir.path().join("new")),
        "-o",
        s(&p),
    ]);
    let len = std::fs::metadata(&p).unwrap().len();
    assert!(out.contains(&format!("{len} bytes")), "{out}");
    assert!(out.contains("% of the new image (50000 bytes"), "{out}");
    assert!(out.contains("heatshrink"), "{out}");
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(bytes[0], 0x04, "sequential, heatshrink");
}

#[test]
fn delta_make_refuses_bad_inputs_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let small = d.join("small");
    std::fs::write(&small, b"hello").unwrap();
    let patch = d.join("out.patch");
    let missing = d.join("missing.bin");

    fails(
        &["delta", "make", s(&missing), s(&small), "-o", s(&patch)],
        "missing.bin",
    );
    fails(
        &["delta", "make", s(&small), s(&missing), "-o", s(&patch)],
        "missing.bin",
    );

    // Over the 16 MiB bound (a sparse file: nothing is read).
    let big = d.join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(16 * 1024 * 1024 + 1)
        .unwrap();
    fails(
        &["delta", "make", s(&big), s(&small), "-o", s(&patch)],
        "big.bin",
    );
    fails(
        &["delta", "make", s(&small), s(&big), "-o", s(&patch)],
        "big.bin",
    );

    // A directory is not an image.
    fails(
        &["delta", "make", s(d), s(&small), "-o", s(&patch)],
        "directory",
    );

    // --esp-header needs an ESP-IDF image with an appended SHA-256 as the base.
    fails(
        &[
            "delta",
            "make",
            s(&small),
            s(&small),
            "-o",
            s(&patch),
            "--esp-header",
        ],
        "not an ESP-IDF image",
    );

    // Unknown compression: clap names the choices.
    fails(
        &[
            "delta",
            "make",
            s(&small),
            s(&small),
            "-o",
            s(&patch),
            "-c",
            "bz2",
        ],
        "heatshrink",
    );

    // Writing the patch over an input.
    fails(
        &["delta", "make", s(&small), s(&small), "-o", s(&small)],
        "refusing to overwrite an input",
    );
    assert_eq!(std::fs::read(&small).unwrap(), b"hello");

    assert!(!patch.exists(), "no patch after a failure");
}

#[test]
fn delta_make_esp_header_needs_a_valid_appended_hash() {
    let Some(v) = vectors() else { return };
    let dir = tempfile::tempdir().unwrap();
    let patch = dir.path().join("p");
    // The ESP32 bootloader vector has no appended hash (header byte 23 = 0).
    let bl = v.join("esptool/bootloader_esp32.bin");
    fails(
        &[
            "delta",
            "make",
            s(&bl),
            s(&bl),
            "-o",
            s(&patch),
            "--esp-header",
        ],
        "no appended SHA-256",
    );
    // A blink app with one byte changed: its appended hash no longer matches.
    let mut app = std::fs::read(v.join("esptool/esp_idf_blink_esp32s2.bin")).unwrap();
    app[100] ^= 1;
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, &app).unwrap();
    let o = ota(&[
        "delta",
        "make",
        s(&bad),
        s(&bl),
        "-o",
        s(&patch),
        "--esp-header",
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("does not match") || t.contains("checksum"),
        "{t}"
    );
    assert!(!patch.exists());
}

#[test]
fn delta_make_warns_when_an_esp_header_patch_is_not_heatshrink() {
    let Some(v) = vectors() else { return };
    let dir = tempfile::tempdir().unwrap();
    let app = v.join("esptool/esp_idf_blink_esp32s2.bin");
    let p = dir.path().join("p");
    let out = ok(&[
        "delta",
        "make",
        s(&app),
        s(&app),
        "-o",
        s(&p),
        "--esp-header",
        "-c",
        "lzma",
    ]);
    assert!(
        out.contains("esp_delta_ota applies heatshrink patches only"),
        "{out}"
    );
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..4], &[0x10, 0xde, 0xcd, 0xfc]);
    assert_eq!(bytes[64], 0x01, "sequential, lzma");
}
