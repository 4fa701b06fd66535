//! Cost of one signature check on the device path (`AppUpdate::finish` ->
//! `check_stored_app`, the same on the std and embassy drivers): host time and stack, printed
//! (never asserted as a time). The real espsecure-signed bootloaders of the shared vectors
//! (32 KiB of signed data, then the sector) are put in a flash of esp-storage's 4-byte
//! granularity; the SHA-256 of a 1 MB app read from that flash is timed apart, since the
//! hashing grows with the image and the signature does not.
//!
//! `cargo test --release -p ota-core --lib secure_boot::cost_tests -- --nocapture`

extern crate std;

use std::time::Instant;
use std::vec::Vec;

use super::*;
use crate::partition::{Label, Partition};
use crate::testutil::RamFlash;

fn vector(name: &str) -> Option<Vec<u8>> {
    let dirs = [
        std::env::var("OTA_VECTORS")
            .ok()
            .map(|v| std::format!("{v}/esptool/")),
        Some(std::format!(
            "{}/../../../shared/vectors/esptool/",
            env!("CARGO_MANIFEST_DIR")
        )),
    ];
    for d in dirs.into_iter().flatten() {
        if let Ok(v) = std::fs::read(std::format!("{d}{name}")) {
            return Some(v);
        }
    }
    std::eprintln!("SKIP: ../shared/vectors not found ({name})");
    None
}

fn part(offset: u32, size: u32) -> Partition {
    Partition {
        ptype: crate::partition::TYPE_APP,
        subtype: 0x10,
        offset,
        size,
        label: Label::new("ota_0"),
        flags: 0,
    }
}

const TEST: &str = "secure_boot::cost_tests::one_verification_costs_time_and_stack";

/// The smallest thread stack (256-byte steps, less the ballast) on which `check_stored_app` of vector `name`
/// passes: each probe runs in a child process (this test, `--exact`, with `SB_STACK_PROBE`
/// set), since a too-small stack overflows the thread. The technique of the firmware's
/// `firmware_update_path_stack_need`; x86_64 frames, this build's optimisation level.
fn stack_need(name: &str) -> usize {
    let probe = |size: usize| -> bool {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
            .env("SB_STACK_PROBE", std::format!("{name}:{size}"))
            .output()
            .unwrap()
            .status
            .success()
    };
    let (mut lo, mut hi) = (BALLAST, 512 * 1024);
    assert!(probe(hi), "{name}: fails even on {hi} bytes of stack");
    while hi - lo > 256 {
        let mid = (lo + hi) / 2 / 256 * 256;
        if probe(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi - BALLAST
}

/// Stack taken before the check runs: Linux raises a thread's stack to at least
/// `PTHREAD_STACK_MIN` (16 KiB), which would hide a smaller need.
const BALLAST: usize = 32 * 1024;

#[inline(never)]
fn with_ballast(f: &mut dyn FnMut()) {
    let b = [0x5Au8; BALLAST];
    core::hint::black_box(&b);
    f();
    core::hint::black_box(&b);
}

fn setup(file: &[u8]) -> (RamFlash, Partition, TrustContext) {
    let sector = SignatureSector::from_slice(&file[0x8000..0x9000]).unwrap();
    let digest = sector.block(0).unwrap().key_digest();
    let ctx = TrustContext {
        rule: AppSignatures::SecureBoot(SecureBootKeys {
            digests: [Some(digest), None, None],
            revoked: 0,
            scheme: None,
        }),
        running_key: None,
    };
    let p = part(0x10000, 0x10000);
    let mut flash: RamFlash = RamFlash::new(0x20000);
    flash.put(0x10000, file);
    (flash, p, ctx)
}

#[test]
fn one_verification_costs_time_and_stack() {
    if let Ok(spec) = std::env::var("SB_STACK_PROBE") {
        let (name, size) = spec.split_once(':').unwrap();
        let size: usize = size.parse().unwrap();
        let file = vector(name).unwrap();
        let (mut flash, p, ctx) = setup(&file);
        std::thread::Builder::new()
            .stack_size(size)
            .spawn(move || {
                with_ballast(&mut || {
                    check_stored_app(&mut flash, &p, 0x8000, &ctx)
                        .unwrap()
                        .unwrap();
                })
            })
            .unwrap()
            .join()
            .unwrap();
        return;
    }
    let mut lines = Vec::new();
    for (name, label) in [
        ("bootloader_signed_v2_rsa.bin", "RSA-3072-PSS"),
        ("bootloader_signed_v2_ecdsa256.bin", "ECDSA P-256"),
        ("bootloader_signed_v2_ecdsa384.bin", "ECDSA P-384"),
    ] {
        let Some(file) = vector(name) else { return };
        let (mut flash, p, ctx) = setup(&file);
        let n = 10;
        let t = Instant::now();
        for _ in 0..n {
            check_stored_app(&mut flash, &p, 0x8000, &ctx)
                .unwrap()
                .unwrap();
        }
        let us = t.elapsed().as_micros() / n;
        let stack = stack_need(name);
        lines.push(std::format!(
            "{label}: {us} us per check of 32 KiB signed data (flash read, SHA, signature), stack {stack} bytes"
        ));
    }
    // SHA-256 (and SHA-384) of a 1 MB app read from flash in the 256-byte chunks of the check.
    let mut flash: RamFlash = RamFlash::new(0x110000);
    flash.put(0x10000, &[0x5Au8; 0x100000]);
    let region = part(0x10000, 0x100000).region();
    for sha384 in [false, true] {
        let t = Instant::now();
        let mut h = SignedDataHasher::new(sha384);
        let mut buf = crate::flash::Aligned::<{ crate::image::VERIFY_CHUNK }>::filled(0);
        let mut off = 0;
        while off < 0x100000 {
            region.read(&mut flash, off, &mut buf[..]).unwrap();
            h.update(&buf[..]);
            off += buf.len() as u32;
        }
        core::hint::black_box(h.finish());
        lines.push(std::format!(
            "SHA-256{}: {} us per MB read back from flash",
            if sha384 { " + SHA-384" } else { "" },
            t.elapsed().as_micros()
        ));
    }
    for l in lines {
        std::println!(
            "secure boot cost ({} build): {l}",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
}
