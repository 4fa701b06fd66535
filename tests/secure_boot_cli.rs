//! Secure Boot v2 on the emulated device, through the CLI: keys made per run by `espsecure
//! generate-signing-key` (rsa3072, ecdsa256, ecdsa384), images signed by espsecure and by
//! `ota image sign`, served by `ota serve` on 127.0.0.1. A secure-boot device refuses
//! unsigned, wrong-key, revoked-key and tampered updates (otadata and every byte outside the
//! target slot unchanged; the slot itself untouched when the sector could be fetched first)
//! and installs and boots a correctly signed one; "signed apps without secure boot" trusts
//! the running app's key; the bootloader falls back when the selected slot's signature fails;
//! `device create` refuses an unsigned first app; `device info` shows each slot's status.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::espsecure::Esp;
use common::*;

const SCHEMES: [&str; 3] = ["rsa3072", "ecdsa256", "ecdsa384"];
/// The example table: otadata at 0xD000, ota_0 at 0x10000, ota_1 at 0x110000 (1 MB each).
const OTADATA: std::ops::Range<usize> = 0xD000..0xF000;
const OTA_1: std::ops::Range<usize> = 0x110000..0x210000;

fn p(path: &Path) -> &str {
    s(path)
}

/// An app image made by `ota image make`.
fn make_app(out: &Path, version: &str, size: &str) {
    ok(&[
        "image",
        "make",
        "--chip",
        "esp32",
        "--project",
        "app",
        "--version",
        version,
        "--size",
        size,
        "-o",
        p(out),
    ]);
}

/// `ota image sign` (the host tool of this project).
fn ota_sign(key: &Path, img: &Path, out: &Path) {
    ok(&["image", "sign", "--keyfile", p(key), "-o", p(out), p(img)]);
}

/// `ota serve DIR` on an ephemeral loopback port; killed by its pid when dropped.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    fn start(dir: &Path) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ota"))
            .args([
                "serve",
                p(dir),
                "--bind",
                "127.0.0.1:0",
                "--rescan-ms",
                "100",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ota serve");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut base = None;
        while base.is_none() && Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            base = line
                .strip_prefix("Serving")
                .and_then(|l| l.split(" (").nth(1))
                .and_then(|r| r.split(')').next())
                .map(|b| b.trim_end_matches('/').to_string());
        }
        Served {
            child,
            base: base.expect("no banner from ota serve"),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Dev {
    dir: PathBuf,
}

impl Dev {
    fn flash(&self) -> PathBuf {
        self.dir.join("flash.bin")
    }
    fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.flash()).unwrap()
    }
    fn run(&self, uri: &str) -> Output {
        let cfg = self.dir.join("ota.toml");
        std::fs::write(
            &cfg,
            format!("[[upgrade]]\ntype = \"app\"\nuri = \"{uri}\"\n"),
        )
        .unwrap();
        ota(&[
            "device",
            "run",
            "--flash",
            p(&self.flash()),
            "--config",
            p(&cfg),
            "--timeout-ms",
            "5000",
        ])
    }

    /// The update must fail with `expect` in its output, otadata and everything outside
    /// ota_1 unchanged; with `untouched`, ota_1 too (refused before any erase).
    #[track_caller]
    fn refused(&self, uri: &str, expect: &str, untouched: bool, case: &str) {
        let before = self.bytes();
        let o = self.run(uri);
        let log = text(&o);
        assert_eq!(o.status.code(), Some(1), "{case}: must fail:\n{log}");
        assert!(
            log.contains(expect),
            "{case}: should say {expect:?}:\n{log}"
        );
        let after = self.bytes();
        assert!(after[OTADATA] == before[OTADATA], "{case}: otadata changed");
        assert!(
            after[..OTA_1.start] == before[..OTA_1.start]
                && after[OTA_1.end..] == before[OTA_1.end..],
            "{case}: flash outside ota_1 changed"
        );
        if untouched {
            assert!(
                after == before,
                "{case}: ota_1 was written although the sector came first:\n{log}"
            );
        }
    }
}

/// A device created with `create_args` whose ota_0 holds `app`, booted once.
fn device(dir: &Path, app: &Path, create_args: &[&str]) -> Dev {
    let d = Dev {
        dir: dir.to_path_buf(),
    };
    let flash = d.flash();
    let mut args = vec!["device", "create", "--flash", p(&flash), "--app", p(app)];
    args.extend_from_slice(create_args);
    ok(&args);
    ok(&["device", "boot", "--flash", p(&d.flash())]);
    d
}

fn setup() -> Option<(Esp, tempfile::TempDir)> {
    Some((Esp::find()?, tempfile::tempdir().unwrap()))
}

/// Flip one byte of the padding between the image's end and its signature sector: only the
/// signature covers it (the image's checksum and SHA-256 stop at the image's end).
fn tamper_padding(signed: &[u8], image_len: usize) -> Vec<u8> {
    let mut t = signed.to_vec();
    let at = image_len + 1;
    assert!(at < t.len() - 4096, "no padding to tamper with");
    t[at] ^= 0x01;
    t
}

#[test]
fn secure_boot_device_refuses_bad_updates_and_installs_a_signed_one() {
    let Some((esp, tmp)) = setup() else { return };
    for (n, scheme) in SCHEMES.iter().enumerate() {
        let dir = tmp.path().join(scheme);
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        let (a, a_pub) = esp.keygen(&dir, "a", scheme);
        let (b, b_pub) = esp.keygen(&dir, "b", scheme);
        let (c, _) = esp.keygen(&dir, "c", scheme);
        make_app(&dir.join("v1.bin"), "v1.0.0", "60K");
        // 70001 bytes: the image ends inside a sector, so there is padding to tamper with.
        make_app(&dir.join("v2.bin"), "v2.0.0", "70001");
        let v2 = std::fs::read(dir.join("v2.bin")).unwrap();
        esp.sign(&a, &dir.join("v1.bin"), &dir.join("v1.signed.bin"));
        // The device trusts a (public key file) and b (private key file), b revoked.
        let dev = device(
            &dir,
            &dir.join("v1.signed.bin"),
            &[
                "--secure-boot-key",
                p(&a_pub),
                "--secure-boot-key",
                p(if n == 0 { &b } else { &b_pub }),
                "--revoke-key",
                "1",
            ],
        );
        std::fs::copy(dir.join("v2.bin"), www.join("unsigned.bin")).unwrap();
        ota_sign(&c, &dir.join("v2.bin"), &www.join("wrong_key.bin"));
        esp.sign(&b, &dir.join("v2.bin"), &www.join("revoked.bin"));
        let good_file = dir.join("good.bin");
        if n == 1 {
            esp.sign(&a, &dir.join("v2.bin"), &good_file);
        } else {
            ota_sign(&a, &dir.join("v2.bin"), &good_file);
        }
        let good = std::fs::read(&good_file).unwrap();
        std::fs::write(www.join("tampered.bin"), tamper_padding(&good, v2.len())).unwrap();
        std::fs::copy(&good_file, www.join("good.bin")).unwrap();
        let srv = Served::start(&www);
        let url = |f: &str| format!("{}/{f}", srv.base);
        dev.refused(&url("unsigned.bin"), "not signed", false, "unsigned");
        dev.refused(
            &url("wrong_key.bin"),
            "not signed by a trusted key",
            true,
            "wrong key",
        );
        dev.refused(
            &url("revoked.bin"),
            "signed only by a revoked key",
            true,
            "revoked key",
        );
        dev.refused(
            &url("tampered.bin"),
            "signature does not verify",
            false,
            "tampered",
        );
        // A file:// source gives the sector first too.
        let sd = dir.join("sdcard");
        std::fs::create_dir_all(&sd).unwrap();
        std::fs::copy(www.join("wrong_key.bin"), sd.join("wk.bin")).unwrap();
        dev.refused(
            "file://sdcard/wk.bin",
            "not signed by a trusted key",
            true,
            "file wrong key",
        );
        // The signed one installs and boots.
        let o = dev.run(&url("good.bin"));
        assert!(o.status.success(), "{scheme} good:\n{}", text(&o));
        let after = dev.bytes();
        assert!(after[OTA_1.start..OTA_1.start + good.len()] == good[..]);
        let info = ok(&["device", "info", "--flash", p(&dev.flash())]);
        assert!(info.contains("SECURE_BOOT_DIGEST0"), "{info}");
        assert!(info.contains("(KEY_REVOKE: revoked)"), "{info}");
        assert!(
            info.contains("secure boot: boots (block 0 verified, eFuse digest 0)"),
            "{info}"
        );
        let boot = ok(&["device", "boot", "--flash", p(&dev.flash())]);
        assert!(boot.contains("ota_1"), "{boot}");
    }
}

#[test]
fn bootloader_falls_back_when_the_selected_slots_signature_fails() {
    let Some((esp, tmp)) = setup() else { return };
    let dir = tmp.path();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let (a, _) = esp.keygen(dir, "a", "ecdsa256");
    make_app(&dir.join("v1.bin"), "v1.0.0", "60K");
    make_app(&dir.join("v2.bin"), "v2.0.0", "70001");
    let v2_len = std::fs::metadata(dir.join("v2.bin")).unwrap().len() as usize;
    esp.sign(&a, &dir.join("v1.bin"), &dir.join("v1.s.bin"));
    esp.sign(&a, &dir.join("v2.bin"), &www.join("v2.s.bin"));
    let dev = device(dir, &dir.join("v1.s.bin"), &["--secure-boot-key", p(&a)]);
    let srv = Served::start(&www);
    let o = dev.run(&format!("{}/v2.s.bin", srv.base));
    assert!(o.status.success(), "{}", text(&o));
    // Corrupt the signed padding of ota_1 on flash: its signature no longer verifies.
    let mut f = dev.bytes();
    f[OTA_1.start + v2_len + 1] ^= 0x01;
    std::fs::write(dev.flash(), &f).unwrap();
    let boot = ota(&["device", "boot", "--flash", p(&dev.flash())]);
    let log = text(&boot);
    assert!(boot.status.success(), "{log}");
    assert!(log.contains("signature does not verify"), "{log}");
    assert!(
        std::fs::read(dev.flash()).unwrap()[OTADATA] == f[OTADATA],
        "a fallback writes no otadata"
    );
    let info = ok(&["device", "info", "--flash", p(&dev.flash())]);
    assert!(info.contains("secure boot: REFUSED"), "{info}");
    // Both slots failing: nothing boots, with the reason.
    let mut g = f.clone();
    let v1_len = std::fs::metadata(dir.join("v1.bin")).unwrap().len() as usize;
    let sector = 0x10000 + v1_len.div_ceil(4096) * 4096;
    g[sector] = 0; // block 0 magic
    std::fs::write(dev.flash(), &g).unwrap();
    let boot = ota(&["device", "boot", "--flash", p(&dev.flash())]);
    assert!(!boot.status.success(), "{}", text(&boot));
}

#[test]
fn signed_apps_mode_trusts_the_running_apps_key_only() {
    let Some((esp, tmp)) = setup() else { return };
    let dir = tmp.path();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let (a, _) = esp.keygen(dir, "a", "rsa3072");
    let (c, _) = esp.keygen(dir, "c", "rsa3072");
    make_app(&dir.join("v1.bin"), "v1.0.0", "60K");
    make_app(&dir.join("v2.bin"), "v2.0.0", "70001");
    esp.sign(&a, &dir.join("v1.bin"), &dir.join("v1.s.bin"));
    ota_sign(&c, &dir.join("v2.bin"), &www.join("other.bin"));
    ota_sign(&a, &dir.join("v2.bin"), &www.join("same.bin"));
    std::fs::copy(dir.join("v2.bin"), www.join("unsigned.bin")).unwrap();
    let dev = device(
        dir,
        &dir.join("v1.s.bin"),
        &["--signed-apps-no-secure-boot"],
    );
    let info = ok(&["device", "info", "--flash", p(&dev.flash())]);
    assert!(info.contains("signed apps without secure boot"), "{info}");
    let srv = Served::start(&www);
    let url = |f: &str| format!("{}/{f}", srv.base);
    dev.refused(
        &url("other.bin"),
        "not signed by a trusted key",
        true,
        "other key",
    );
    dev.refused(&url("unsigned.bin"), "not signed", false, "unsigned");
    let o = dev.run(&url("same.bin"));
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn create_refuses_an_unsigned_or_untrusted_first_app_under_secure_boot() {
    let Some((esp, tmp)) = setup() else { return };
    let dir = tmp.path();
    let (a, _) = esp.keygen(dir, "a", "ecdsa384");
    let (c, _) = esp.keygen(dir, "c", "ecdsa384");
    make_app(&dir.join("v1.bin"), "v1.0.0", "60K");
    ota_sign(&c, &dir.join("v1.bin"), &dir.join("v1.c.bin"));
    let flash = dir.join("f.bin");
    for (app, expect) in [
        ("v1.bin", "is not signed"),
        ("v1.c.bin", "not signed by a trusted key"),
    ] {
        let o = ota(&[
            "device",
            "create",
            "--flash",
            p(&flash),
            "--app",
            p(&dir.join(app)),
            "--secure-boot-key",
            p(&a),
        ]);
        assert!(!o.status.success());
        assert!(text(&o).contains(expect), "{}", text(&o));
        assert!(!flash.exists(), "nothing written");
    }
    let o = ota(&[
        "device",
        "create",
        "--flash",
        p(&flash),
        "--secure-boot-key",
        p(&a),
        "--secure-boot-key",
        p(&a),
        "--secure-boot-key",
        p(&a),
        "--secure-boot-key",
        p(&c),
    ]);
    assert!(text(&o).contains("at most 3"), "{}", text(&o));
    let o = ota(&[
        "device",
        "create",
        "--flash",
        p(&flash),
        "--secure-boot-key",
        p(&a),
        "--revoke-key",
        "2",
    ]);
    assert!(text(&o).contains("no key digest 2"), "{}", text(&o));
}
