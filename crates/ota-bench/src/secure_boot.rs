//! `ota-bench secure-boot`: the host time of one Secure Boot v2 verification of a 1 MiB image
//! per scheme, as the device does it (ota-core's `SignedDataHasher` over the signed data in
//! 4 KiB chunks, then `verify_secure_boot` with the key digest trusted), split into the hash
//! and the signature check. Keys are made in the run; blocks are encoded by ota-core.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ota_core::secure_boot::{
    self, encode_ecdsa_block, encode_rsa_block, Curve, ImageDigests, SectorBuilder, SecureBootKeys,
    SignatureSector, SignedDataHasher, RSA_LEN,
};
use rsa::signature::hazmat::RandomizedPrehashSigner;
use rsa::traits::PublicKeyParts;

/// Little-endian copy of a big-endian number, zero-extended to `len` (0: its own length).
fn le(be: &[u8], len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = be.iter().rev().copied().collect();
    if len > 0 {
        v.resize(len, 0);
    }
    v
}

fn rsa_block(data: &[u8]) -> Result<[u8; secure_boot::BLOCK_SIZE]> {
    let mut rng = rand_core::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 3072)?;
    let digest = ImageDigests::of(data, false).sha256;
    let signer = rsa::pss::BlindedSigningKey::<sha2::Sha256>::new_with_salt_len(key.clone(), 32);
    let sig: Box<[u8]> = signer.sign_prehash_with_rng(&mut rng, &digest)?.into();
    let n: [u8; RSA_LEN] = le(&key.n().to_bytes_be(), RSA_LEN).try_into().unwrap();
    let e = u32::from_le_bytes(le(&key.e().to_bytes_be(), 4).try_into().unwrap());
    let (rinv, mdash) = secure_boot::montgomery_params(&n).map_err(|e| anyhow!("{e}"))?;
    let s: [u8; RSA_LEN] = le(&sig, RSA_LEN).try_into().unwrap();
    Ok(encode_rsa_block(&digest, &n, e, &rinv, mdash, &s))
}

macro_rules! ecdsa_block {
    ($name:ident, $krate:ident, $curve:expr, $sha384:expr) => {
        fn $name(data: &[u8]) -> Result<[u8; secure_boot::BLOCK_SIZE]> {
            let mut rng = rand_core::OsRng;
            let key = $krate::ecdsa::SigningKey::random(&mut rng);
            let d = ImageDigests::of(data, $sha384);
            let digest: Vec<u8> = match d.sha384 {
                Some(h) => h.to_vec(),
                None => d.sha256.to_vec(),
            };
            let sig: $krate::ecdsa::Signature = key.sign_prehash_with_rng(&mut rng, &digest)?;
            let p = key.verifying_key().to_encoded_point(false);
            let mut point = le(p.x().unwrap(), 0);
            point.extend(le(p.y().unwrap(), 0));
            let mut rs = le(&sig.r().to_bytes(), 0);
            rs.extend(le(&sig.s().to_bytes(), 0));
            encode_ecdsa_block($curve, &digest, &point, &rs).map_err(|e| anyhow!("{e}"))
        }
    };
}

ecdsa_block!(p256_block, p256, Curve::P256, false);
ecdsa_block!(p384_block, p384, Curve::P384, true);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Bytes a probe thread puts on its stack before the work, so that every size probed is above
/// the platform's minimum thread stack (glibc rounds smaller requests up).
const BALLAST: usize = 64 * 1024;

fn with_ballast<T>(f: impl FnOnce() -> T) -> T {
    let ballast = [0x5Au8; BALLAST];
    let out = f();
    std::hint::black_box(&ballast);
    out
}

/// The child side of the stack probe: on a thread of `stack` bytes, with [`BALLAST`] bytes
/// already used, hash `file`'s signed data (`verify` false: the baseline) or hash it and verify
/// its sector (block 0's key trusted). Exit 0 when the work completed (and verified).
pub fn stack_probe(file: &std::path::Path, stack: usize, sha384: bool, verify: bool) -> Result<()> {
    let bytes = std::fs::read(file)?;
    let handle = std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            with_ballast(|| {
                let at = bytes.len() - secure_boot::SECTOR_SIZE;
                let mut h = SignedDataHasher::new(sha384);
                for c in bytes[..at].chunks(4096) {
                    h.update(c);
                }
                let d = std::hint::black_box(h.finish());
                if !verify {
                    return Some(0);
                }
                let sector = SignatureSector::from_slice(&bytes[at..]).ok()?;
                let mut keys = SecureBootKeys::default();
                keys.digests[0] = Some(sector.block(0).ok()?.key_digest());
                secure_boot::verify_secure_boot(&sector, &d, &keys)
                    .ok()
                    .map(|v| v.block)
            })
        })?;
    match handle.join() {
        Ok(Some(0)) => Ok(()),
        _ => Err(anyhow!("not verified")),
    }
}

/// The smallest thread stack (1 KiB steps) on which a child process completes the work, less
/// the ballast.
fn stack_need(file: &std::path::Path, sha384: bool, verify: bool) -> Result<usize> {
    let exe = std::env::current_exe()?;
    let runs = |size: usize| -> Result<bool> {
        let st = std::process::Command::new(&exe)
            .arg("__secure-boot-stack")
            .arg(file)
            .arg(size.to_string())
            .arg(if sha384 { "1" } else { "0" })
            .arg(if verify { "1" } else { "0" })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        Ok(st.success())
    };
    let (mut lo, mut hi) = (BALLAST, BALLAST + (1 << 20));
    if !runs(hi)? {
        return Err(anyhow!("does not complete even on a 1 MiB stack"));
    }
    while hi - lo > 1024 {
        let mid = (lo + hi) / 2 / 1024 * 1024;
        if runs(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi - BALLAST)
}

pub fn bench(image_size: usize, rounds: usize) -> Result<()> {
    let data: Vec<u8> = (0..image_size).map(|i| (i * 7 + i / 4096) as u8).collect();
    println!(
        "Secure Boot v2 verification of a {} KiB image on this host, ota-core's code (median of {rounds} rounds; \
         P-384 hashes SHA-256 and SHA-384)",
        image_size / 1024
    );
    println!(
        "{:<14} {:>12} {:>12} {:>12} {:>14}",
        "scheme", "hash ms", "signature ms", "total ms", "fastest total"
    );
    let dir = tempfile::tempdir()?;
    let mut stacks = Vec::new();
    for (name, block, sha384) in [
        ("RSA-3072-PSS", rsa_block(&data)?, false),
        ("ECDSA P-256", p256_block(&data)?, false),
        ("ECDSA P-384", p384_block(&data)?, true),
    ] {
        let mut sb = SectorBuilder::new();
        sb.push(&block).map_err(|e| anyhow!("{e}"))?;
        let sector_bytes = sb.finish();
        let sector = SignatureSector::new(&sector_bytes);
        let mut keys = SecureBootKeys::default();
        keys.digests[0] = Some(sector.block(0).map_err(|e| anyhow!("{e}"))?.key_digest());
        let (mut hash, mut sig, mut total) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t0 = Instant::now();
            let mut h = SignedDataHasher::new(sha384);
            for c in data.chunks(4096) {
                h.update(c);
            }
            let d = h.finish();
            let t1 = Instant::now();
            let v = secure_boot::verify_secure_boot(&sector, &d, &keys)
                .map_err(|r| anyhow!("{name}: {r}"))?;
            let t2 = Instant::now();
            assert_eq!(v.block, 0);
            hash.push(t1 - t0);
            sig.push(t2 - t1);
            total.push(t2 - t0);
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let fastest = total.iter().min().copied().unwrap_or_default();
        let file = dir.path().join("signed.bin");
        let mut signed = data.clone();
        signed.extend_from_slice(&sector_bytes);
        std::fs::write(&file, &signed)?;
        stacks.push((
            name,
            stack_need(&file, sha384, false)?,
            stack_need(&file, sha384, true)?,
        ));
        println!(
            "{:<14} {:>12.2} {:>12.2} {:>12.2} {:>14.2}",
            name,
            ms(median(hash)),
            ms(median(sig)),
            ms(median(total)),
            ms(fastest)
        );
    }
    println!(
        "Stack on this host (x86-64, this build): the smallest thread stack, in 1 KiB steps, on \
         which a child process hashes the data, or hashes and verifies (thread start-up included \
         in both; the difference is the verification's own)"
    );
    println!(
        "{:<14} {:>12} {:>16}",
        "scheme", "hash KiB", "hash+verify KiB"
    );
    for (name, hash, verify) in stacks {
        println!("{:<14} {:>12} {:>16}", name, hash / 1024, verify / 1024);
    }
    Ok(())
}
