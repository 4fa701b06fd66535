//! Interop, Secure Boot v2: the real `espsecure` (esptool from PyPI) is the judge. Keys are
//! generated per run by `espsecure generate-signing-key` (rsa3072, ecdsa256, ecdsa384); real
//! images for several chips are signed by espsecure and verified by `ota`, and signed by `ota`
//! and verified by `espsecure verify-signature`, with 1, 2 and 3 blocks; tampering makes both
//! refuse; key digests equal `espsecure digest-sbv2-public-key`; the shared signed bootloaders
//! get the same verdicts from both tools. Then the CLI's error paths.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const SCHEMES: [&str; 3] = ["rsa3072", "ecdsa256", "ecdsa384"];
/// Real images of several chips (esptool `test/images`).
const IMAGES: [&str; 5] = [
    "helloworld-esp32.bin",
    "helloworld-esp32c3.bin",
    "helloworld-esp32c6.bin",
    "helloworld-esp32s3.bin",
    "esp_idf_blink_esp32s2.bin",
];

/// `../shared/vectors/esptool` (or `$OTA_VECTORS/esptool`), or None after saying so.
fn esptool_vectors() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("OTA_VECTORS") {
        let p = PathBuf::from(v).join("esptool");
        if p.is_dir() {
            return Some(p);
        }
    }
    vectors().map(|v| v.join("esptool"))
}

struct Esp {
    py: PathBuf,
}

impl Esp {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.py)
            .args(["-m", "espsecure"])
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("running espsecure")
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "espsecure {args:?} failed:\n{}",
            text(&o)
        );
    }

    /// `espsecure verify-signature --version 2`: true when it verifies.
    fn verifies(&self, key: &Path, img: &Path) -> bool {
        let o = self.run(&[
            "verify-signature",
            "--version",
            "2",
            "--keyfile",
            s(key),
            s(img),
        ]);
        let out = text(&o);
        let ok = o.status.success();
        assert_eq!(ok, out.contains("verification successful"), "{out}");
        ok
    }
}

fn setup() -> Option<(Esp, PathBuf, tempfile::TempDir)> {
    let v = esptool_vectors()?;
    if !v.is_dir() {
        eprintln!("SKIP: {} not found", v.display());
        return None;
    }
    let py = python()?;
    Some((Esp { py }, v, tempfile::tempdir().unwrap()))
}

/// A fresh key of `scheme` and its public key: (private, public).
fn keygen(esp: &Esp, dir: &Path, name: &str, scheme: &str) -> (PathBuf, PathBuf) {
    let k = dir.join(format!("{name}.pem"));
    let p = dir.join(format!("{name}.pub.pem"));
    esp.ok(&[
        "generate-signing-key",
        "--version",
        "2",
        "--scheme",
        scheme,
        s(&k),
    ]);
    esp.ok(&[
        "extract-public-key",
        "--version",
        "2",
        "--keyfile",
        s(&k),
        s(&p),
    ]);
    (k, p)
}

fn ota_verifies(key: &Path, img: &Path) -> bool {
    ota(&["image", "verify-signature", "--keyfile", s(key), s(img)])
        .status
        .success()
}

#[test]
fn espsecure_and_ota_verify_each_others_signatures_on_several_chips() {
    let Some((esp, v, dir)) = setup() else { return };
    let d = dir.path();
    let mut cases = 0;
    for scheme in SCHEMES {
        let (key, pubkey) = keygen(&esp, d, scheme, scheme);
        let digest = d.join(format!("{scheme}.digest"));
        ok(&[
            "image",
            "key-digest",
            "--keyfile",
            s(&key),
            "-o",
            s(&digest),
        ]);
        for img in IMAGES {
            let src = v.join(img);
            let by_esp = d.join(format!("{scheme}-{img}.esp"));
            let by_ota = d.join(format!("{scheme}-{img}.ota"));
            esp.ok(&[
                "sign-data",
                "--version",
                "2",
                "--keyfile",
                s(&key),
                "-o",
                s(&by_esp),
                s(&src),
            ]);
            ok(&[
                "image",
                "sign",
                "--keyfile",
                s(&key),
                "-o",
                s(&by_ota),
                s(&src),
            ]);
            // Same layout: data padded with 0xFF to a sector, then one sector.
            let (a, b) = (
                std::fs::read(&by_esp).unwrap(),
                std::fs::read(&by_ota).unwrap(),
            );
            assert_eq!(a.len(), b.len(), "{scheme} {img}");
            assert_eq!(a[..a.len() - 4096], b[..b.len() - 4096], "{scheme} {img}");
            assert!(
                ota_verifies(&pubkey, &by_esp),
                "ota refuses espsecure's {scheme} {img}"
            );
            assert!(ota_verifies(&key, &by_esp));
            ok(&[
                "image",
                "verify-signature",
                "--digest",
                s(&digest),
                s(&by_esp),
            ]);
            assert!(
                esp.verifies(&pubkey, &by_ota),
                "espsecure refuses ota's {scheme} {img}"
            );
            cases += 1;
        }
    }
    eprintln!("interop secure boot: {cases} images x 3 schemes, both ways, all verified");
}

#[test]
fn one_two_and_three_blocks_from_both_tools_verify_with_each_key() {
    let Some((esp, v, dir)) = setup() else { return };
    let d = dir.path();
    let src = v.join("esp_idf_blink_esp32s2.bin");
    for scheme in SCHEMES {
        // espsecure's verify-signature tries every valid block with the one key's type, and
        // fails on blocks of another scheme: one scheme per sector.
        let keys: Vec<(PathBuf, PathBuf)> = (0..3)
            .map(|i| keygen(&esp, d, &format!("{scheme}-{i}"), scheme))
            .collect();
        let one = d.join(format!("{scheme}-1.bin"));
        let two = d.join(format!("{scheme}-2.bin"));
        let three = d.join(format!("{scheme}-3.bin"));
        ok(&[
            "image",
            "sign",
            "--keyfile",
            s(&keys[0].0),
            "-o",
            s(&one),
            s(&src),
        ]);
        // Block 1 by espsecure, block 2 by ota: each tool appends to the other's sector.
        esp.ok(&[
            "sign-data",
            "--version",
            "2",
            "--append-signatures",
            "--keyfile",
            s(&keys[1].0),
            "-o",
            s(&two),
            s(&one),
        ]);
        ok(&[
            "image",
            "sign",
            "--append-signatures",
            "--keyfile",
            s(&keys[2].0),
            "-o",
            s(&three),
            s(&two),
        ]);
        for (n, img) in [(1, &one), (2, &two), (3, &three)] {
            for (i, (k, p)) in keys.iter().enumerate() {
                let expect = i < n;
                assert_eq!(
                    ota_verifies(p, img),
                    expect,
                    "ota, {scheme} {n} blocks, key {i}"
                );
                assert_eq!(ota_verifies(k, img), expect, "ota, private key {i}");
                assert_eq!(
                    esp.verifies(p, img),
                    expect,
                    "espsecure, {scheme} {n} blocks, key {i}"
                );
            }
        }
        let info = ok(&["image", "info", "--json", s(&three)]);
        let j: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(j["signatures"]["valid_blocks"], 3, "{info}");
        for b in j["signatures"]["blocks"].as_array().unwrap() {
            assert_eq!(b["valid_for_image"], true, "{b}");
        }
        // A fourth block is refused by both, and nothing is written.
        let four = d.join(format!("{scheme}-4.bin"));
        let o = ota(&[
            "image",
            "sign",
            "--append-signatures",
            "--keyfile",
            s(&keys[0].0),
            "-o",
            s(&four),
            s(&three),
        ]);
        assert!(!o.status.success());
        assert!(
            text(&o).contains("room for 3 blocks: 3 present"),
            "{}",
            text(&o)
        );
        assert!(!four.exists());
        let o = esp.run(&[
            "sign-data",
            "--version",
            "2",
            "--append-signatures",
            "--keyfile",
            s(&keys[0].0),
            "-o",
            s(&four),
            s(&three),
        ]);
        assert!(!o.status.success());
        // Several keys in one call, as espsecure allows.
        let multi = d.join(format!("{scheme}-multi.bin"));
        ok(&[
            "image",
            "sign",
            "--keyfile",
            s(&keys[0].0),
            "--keyfile",
            s(&keys[1].0),
            "-o",
            s(&multi),
            s(&src),
        ]);
        assert!(esp.verifies(&keys[1].1, &multi));
    }
}

#[test]
fn a_tampered_image_or_sector_is_refused_by_both() {
    let Some((esp, v, dir)) = setup() else { return };
    let d = dir.path();
    for scheme in SCHEMES {
        let (key, pubkey) = keygen(&esp, d, scheme, scheme);
        let signed = d.join(format!("{scheme}.bin"));
        esp.ok(&[
            "sign-data",
            "--version",
            "2",
            "--keyfile",
            s(&key),
            "-o",
            s(&signed),
            s(&v.join("helloworld-esp32c6.bin")),
        ]);
        let bytes = std::fs::read(&signed).unwrap();
        let sector = bytes.len() - 4096;
        // A data byte, a signature byte (CRC now wrong), a key byte, padding before the sector.
        let sig_at = if scheme == "rsa3072" {
            812
        } else if scheme == "ecdsa384" {
            149
        } else {
            101
        };
        for (what, at) in [
            ("data", 40),
            ("signature", sector + sig_at + 5),
            ("key", sector + 60),
            ("padding", sector - 1),
        ] {
            let mut t = bytes.clone();
            t[at] ^= 0x10;
            let p = d.join(format!("{scheme}-{what}.bin"));
            std::fs::write(&p, &t).unwrap();
            let o = ota(&["image", "verify-signature", "--keyfile", s(&pubkey), s(&p)]);
            assert!(
                !o.status.success(),
                "ota accepts tampered {what} ({scheme})"
            );
            let msg = text(&o);
            assert!(msg.contains("block 0:"), "{msg}");
            assert!(
                !esp.verifies(&pubkey, &p),
                "espsecure accepts tampered {what} ({scheme})"
            );
        }
    }
}

#[test]
fn key_digest_equals_espsecure_digest_sbv2_public_key() {
    let Some((esp, v, dir)) = setup() else { return };
    let d = dir.path();
    let mut keys: Vec<PathBuf> = Vec::new();
    for scheme in SCHEMES {
        let (k, p) = keygen(&esp, d, scheme, scheme);
        keys.extend([k, p]);
    }
    for name in [
        "rsa_secure_boot_signing_key.pem",
        "rsa_secure_boot_signing_pubkey.pem",
        "ecdsa256_secure_boot_signing_key.pem",
        "ecdsa256_secure_boot_signing_pubkey.pem",
        "ecdsa384_secure_boot_signing_key.pem",
        "ecdsa384_secure_boot_signing_pubkey.pem",
    ] {
        keys.push(v.join(name));
    }
    for (i, k) in keys.iter().enumerate() {
        let theirs = d.join(format!("theirs-{i}.bin"));
        let ours = d.join(format!("ours-{i}.bin"));
        esp.ok(&[
            "digest-sbv2-public-key",
            "--keyfile",
            s(k),
            "-o",
            s(&theirs),
        ]);
        let out = ok(&["image", "key-digest", "--keyfile", s(k), "-o", s(&ours)]);
        let t = std::fs::read(&theirs).unwrap();
        assert_eq!(t, std::fs::read(&ours).unwrap(), "{}", k.display());
        let hex: String = t.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(out.trim(), hex);
    }
}

#[test]
fn shared_signed_bootloaders_get_espsecures_verdicts() {
    let Some((esp, v, _dir)) = setup() else {
        return;
    };
    let mut accepted = 0;
    for img in [
        "bootloader_signed_v2_rsa.bin",
        "bootloader_signed_v2_ecdsa256.bin",
        "bootloader_signed_v2_ecdsa384.bin",
        "bootloader_multi_signed_v2_rsa.bin",
        "bootloader_unsigned_v2.bin",
    ] {
        for key in [
            "rsa_secure_boot_signing_pubkey.pem",
            "ecdsa256_secure_boot_signing_pubkey.pem",
            "ecdsa384_secure_boot_signing_pubkey.pem",
        ] {
            let (k, i) = (v.join(key), v.join(img));
            let theirs = esp.verifies(&k, &i);
            assert_eq!(ota_verifies(&k, &i), theirs, "{img} with {key}");
            accepted += theirs as usize;
        }
    }
    // Each single-signed bootloader verifies with its own key; the multi-signed one with the
    // RSA key of its first block.
    assert!(accepted >= 3, "{accepted}");
    let info = ok(&[
        "image",
        "info",
        s(&v.join("bootloader_signed_v2_ecdsa384.bin")),
    ]);
    assert!(
        info.contains("Signature block 0: ECDSA P-384, key digest"),
        "{info}"
    );
    assert!(info.contains("signature valid for this image"), "{info}");
}

#[test]
fn sbv1_hello_world_signed_is_reported() {
    let Some(v) = esptool_vectors() else { return };
    let img = v.join("hello-world-signed.bin");
    let out = ok(&["image", "info", s(&img)]);
    assert!(
        out.contains("Secure Boot v1 signature block found"),
        "{out}"
    );
    let j: Value = serde_json::from_str(&ok(&["image", "info", "--json", s(&img)])).unwrap();
    assert_eq!(j["signatures"]["secure_boot_v1"], true);
    assert_eq!(j["signatures"]["valid_blocks"], 0);
    // Unsigned image: no blocks, no SBv1.
    let j: Value = serde_json::from_str(&ok(&[
        "image",
        "info",
        "--json",
        s(&v.join("helloworld-esp32.bin")),
    ]))
    .unwrap();
    assert_eq!(j["signatures"]["secure_boot_v1"], false);
}

#[test]
fn signing_and_verifying_errors_name_what_is_wrong() {
    let Some(v) = esptool_vectors() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rsa = v.join("rsa_secure_boot_signing_key.pem");
    let rsa_pub = v.join("rsa_secure_boot_signing_pubkey.pem");
    let ec_pub = v.join("ecdsa256_secure_boot_signing_pubkey.pem");
    let img = v.join("helloworld-esp32c3.bin");
    let out = d.join("out.bin");
    let fails = |args: &[&str], needle: &str| {
        let o = ota(args);
        assert!(!o.status.success(), "ota {args:?} succeeded");
        let t = text(&o);
        assert!(
            t.contains(needle),
            "ota {args:?}: expected {needle:?} in:\n{t}"
        );
        assert!(!t.contains("panicked"), "{t}");
    };
    let missing = d.join("missing.pem");
    fails(
        &[
            "image",
            "sign",
            "--keyfile",
            s(&missing),
            "-o",
            s(&out),
            s(&img),
        ],
        "missing.pem",
    );
    assert!(!out.exists());
    fails(
        &[
            "image",
            "sign",
            "--keyfile",
            s(&rsa_pub),
            "-o",
            s(&out),
            s(&img),
        ],
        "a public key cannot sign",
    );
    let junk = d.join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    fails(&["image", "key-digest", "--keyfile", s(&junk)], "not a PEM");
    fails(&["image", "sign", "-o", s(&out), s(&img)], "no signing key");
    fails(
        &[
            "image",
            "sign",
            "--keyfile",
            s(&rsa),
            "--keyfile",
            s(&rsa),
            "--keyfile",
            s(&rsa),
            "--keyfile",
            s(&rsa),
            "-o",
            s(&out),
            s(&img),
        ],
        "4 keys given",
    );
    // Unsigned, wrong key, bad digest file, a size that cannot be signed.
    let padded = d.join("padded.bin");
    let mut p = std::fs::read(&img).unwrap();
    p.resize(8192, 0xFF);
    std::fs::write(&padded, &p).unwrap();
    fails(
        &[
            "image",
            "verify-signature",
            "--keyfile",
            s(&rsa_pub),
            s(&padded),
        ],
        "not signed (no valid signature block); block 0: absent",
    );
    ok(&[
        "image",
        "sign",
        "--keyfile",
        s(&rsa),
        "-o",
        s(&out),
        s(&img),
    ]);
    fails(
        &[
            "image",
            "verify-signature",
            "--keyfile",
            s(&ec_pub),
            s(&out),
        ],
        "not signed by a trusted key; block 0: key digest",
    );
    let short = d.join("short.bin");
    std::fs::write(&short, [0u8; 31]).unwrap();
    fails(
        &["image", "verify-signature", "--digest", s(&short), s(&out)],
        "a key digest is 32 bytes",
    );
    fails(
        &[
            "image",
            "verify-signature",
            "--keyfile",
            s(&rsa_pub),
            s(&img),
        ],
        "multiple of 4096",
    );
    fails(&["image", "verify-signature", s(&out)], "--keyfile");
    // A signature made elsewhere must match its public key and sector-aligned data.
    let sig = d.join("sig.bin");
    std::fs::write(&sig, [7u8; 384]).unwrap();
    fails(
        &[
            "image",
            "sign",
            "--pub-key",
            s(&rsa_pub),
            "--signature",
            s(&sig),
            "-o",
            s(&out),
            s(&padded),
        ],
        "not made with this public key",
    );
    fails(
        &[
            "image",
            "sign",
            "--pub-key",
            s(&rsa_pub),
            "--signature",
            s(&sig),
            "-o",
            s(&out),
            s(&img),
        ],
        "not a multiple of 4096",
    );
    fails(
        &[
            "image",
            "sign",
            "--pub-key",
            s(&rsa_pub),
            "-o",
            s(&out),
            s(&padded),
        ],
        "number of public keys (1) not equal to the number of signatures (0)",
    );
    let empty = d.join("empty.bin");
    std::fs::write(&empty, []).unwrap();
    fails(
        &[
            "image",
            "sign",
            "--keyfile",
            s(&rsa),
            "-o",
            s(&out),
            s(&empty),
        ],
        "nothing to sign",
    );
}

#[test]
fn ecdsa192_signed_by_espsecure_is_verified_and_its_digest_matches() {
    let Some((esp, v, dir)) = setup() else { return };
    let d = dir.path();
    let (key, pubkey) = keygen(&esp, d, "p192", "ecdsa192");
    let theirs = d.join("theirs.bin");
    esp.ok(&[
        "digest-sbv2-public-key",
        "--keyfile",
        s(&key),
        "-o",
        s(&theirs),
    ]);
    let ours = d.join("ours.bin");
    ok(&[
        "image",
        "key-digest",
        "--keyfile",
        s(&pubkey),
        "-o",
        s(&ours),
    ]);
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        std::fs::read(&ours).unwrap()
    );
    for img in IMAGES {
        let signed = d.join(format!("{img}.signed"));
        esp.ok(&[
            "sign-data",
            "--version",
            "2",
            "--keyfile",
            s(&key),
            "-o",
            s(&signed),
            s(&v.join(img)),
        ]);
        assert!(ota_verifies(&pubkey, &signed), "{img}");
        let mut t = std::fs::read(&signed).unwrap();
        t[33] ^= 1;
        std::fs::write(&signed, &t).unwrap();
        assert!(!ota_verifies(&pubkey, &signed), "{img} tampered");
        assert!(!esp.verifies(&pubkey, &signed), "{img} tampered");
    }
    // Signing with P-192 is refused with the reason.
    let o = ota(&[
        "image",
        "sign",
        "--keyfile",
        s(&key),
        "-o",
        s(&d.join("x.bin")),
        s(&v.join(IMAGES[0])),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("P-192 keys cannot sign here"),
        "{}",
        text(&o)
    );
}
