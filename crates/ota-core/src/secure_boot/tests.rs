//! Tests of the secure_boot module: the esptool signed bootloaders (RSA, ECDSA P-256/P-384,
//! three RSA blocks), the trust rules, the Montgomery constants, tampering, and a bounded
//! randomized no-panic run of the parser and verifier.

extern crate std;

use super::*;
use rand::{Rng, SeedableRng};
use std::format;
use std::string::ToString;
use std::vec::Vec;

/// `../shared/vectors/esptool` beside the workspace, or `$OTA_VECTORS/esptool`.
fn vector(name: &str) -> Option<Vec<u8>> {
    let dirs = [
        std::env::var("OTA_VECTORS")
            .ok()
            .map(|v| format!("{v}/esptool/")),
        Some(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/vectors/esptool/"
            )
            .to_string(),
        ),
    ];
    for d in dirs.into_iter().flatten() {
        if let Ok(v) = std::fs::read(format!("{d}{name}")) {
            return Some(v);
        }
    }
    std::eprintln!("SKIP: ../shared/vectors not found ({name}; set OTA_VECTORS to its folder)");
    None
}

/// The signed bootloaders: 0x8000 bytes of signed data, then the sector.
const SIGNED_LEN: usize = 0x8000;

fn split(file: &[u8]) -> (&[u8], SignatureSector<'_>) {
    assert_eq!(file.len(), SIGNED_LEN + SECTOR_SIZE);
    let (data, sector) = file.split_at(SIGNED_LEN);
    (data, SignatureSector::from_slice(sector).unwrap())
}

#[test]
fn sector_offset_aligns_up_and_overflow_is_none() {
    assert_eq!(sector_offset(0), Some(0));
    assert_eq!(sector_offset(1), Some(4096));
    assert_eq!(sector_offset(4096), Some(4096));
    assert_eq!(sector_offset(0x2FFB0), Some(0x30000));
    assert_eq!(signed_image_len(0x2FFB0), Some(0x31000));
    assert_eq!(sector_offset(u32::MAX), None);
    assert_eq!(signed_image_len(u32::MAX - 4095), None);
}

#[test]
fn esptool_signed_bootloaders_verify_with_their_own_blocks() {
    for (name, scheme, curve, blocks) in [
        ("bootloader_signed_v2_rsa.bin", Scheme::Rsa3072, None, 1),
        (
            "bootloader_signed_v2_ecdsa256.bin",
            Scheme::Ecdsa,
            Some(Curve::P256),
            1,
        ),
        (
            "bootloader_signed_v2_ecdsa384.bin",
            Scheme::Ecdsa,
            Some(Curve::P384),
            1,
        ),
        (
            "bootloader_multi_signed_v2_rsa.bin",
            Scheme::Rsa3072,
            None,
            3,
        ),
    ] {
        let Some(file) = vector(name) else { return };
        let (data, sector) = split(&file);
        let digests = ImageDigests::of(data, true);
        assert_eq!(sector.valid_count(), blocks, "{name}");
        let mut keys = Vec::new();
        for (i, b) in sector.blocks().iter().enumerate() {
            if i >= blocks {
                assert_eq!(
                    b.unwrap_err().kind,
                    BlockErrorKind::Absent,
                    "{name} block {i}"
                );
                continue;
            }
            let b = b.as_ref().unwrap();
            assert_eq!(b.scheme(), scheme);
            assert_eq!(b.curve(), curve);
            assert_eq!(stored_digest_matches(b, &digests), Some(true), "{name}");
            verify_block(b, &digests).unwrap_or_else(|e| panic!("{name} block {i}: {e}"));
            keys.push(b.key_digest());
        }
        // The multi-signed bootloader carries three different keys.
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), blocks, "{name}");
    }
}

#[test]
fn a_tampered_byte_in_data_or_signature_fails_verification() {
    for name in [
        "bootloader_signed_v2_rsa.bin",
        "bootloader_signed_v2_ecdsa256.bin",
        "bootloader_signed_v2_ecdsa384.bin",
    ] {
        let Some(mut file) = vector(name) else { return };
        file[100] ^= 1;
        let (data, sector) = split(&file);
        let digests = ImageDigests::of(data, true);
        let b = sector.block(0).unwrap();
        let e = verify_block(&b, &digests).unwrap_err();
        assert!(e.is_mismatch(), "{name}: {e}");
        assert_eq!(stored_digest_matches(&b, &digests), Some(false));
        let sig_at = match b.key {
            BlockKey::Rsa { .. } => 812,
            BlockKey::Ecdsa {
                curve: Curve::P384, ..
            } => 149,
            BlockKey::Ecdsa { .. } => 101,
        };
        file[100] ^= 1;

        // A flipped signature byte with the CRC made right again: still refused.
        let blk = &mut file[SIGNED_LEN..SIGNED_LEN + BLOCK_SIZE];
        blk[sig_at + 3] ^= 0x40;
        let crc = block_crc(&(&*blk).try_into().unwrap());
        blk[BLOCK_CRC_OFFSET..BLOCK_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        let (data, sector) = split(&file);
        let digests = ImageDigests::of(data, true);
        let e = verify_block(&sector.block(0).unwrap(), &digests).unwrap_err();
        assert!(
            e.is_mismatch() || matches!(e, SignatureError::Ecdsa(EcdsaError::BadScalars)),
            "{name}: {e}"
        );
        // Without the CRC fix-up the block is invalid and says where.
        let blk = &mut file[SIGNED_LEN..SIGNED_LEN + BLOCK_SIZE];
        blk[sig_at + 4] ^= 0x01;
        let (_, sector) = split(&file);
        let e = sector.block(0).unwrap_err();
        assert_eq!(e.index, 0);
        assert!(matches!(e.kind, BlockErrorKind::BadCrc { .. }), "{e}");
        assert!(e.to_string().contains("bad CRC at offset 1196"), "{e}");
    }
}

#[test]
fn montgomery_params_equal_the_ones_espsecure_wrote() {
    let Some(file) = vector("bootloader_multi_signed_v2_rsa.bin") else {
        return;
    };
    let (_, sector) = split(&file);
    for b in sector.blocks().iter().flatten() {
        let BlockKey::Rsa { n, rinv, mdash, .. } = b.key else {
            panic!()
        };
        let (r, m) = montgomery_params(n).unwrap();
        assert_eq!(&r, rinv);
        assert_eq!(m, mdash);
    }
}

#[test]
fn inconsistent_rsa_constants_are_refused_not_misverified() {
    let Some(mut file) = vector("bootloader_signed_v2_rsa.bin") else {
        return;
    };
    let fix = |file: &mut Vec<u8>| {
        let blk = &mut file[SIGNED_LEN..SIGNED_LEN + BLOCK_SIZE];
        let crc = block_crc(&(&*blk).try_into().unwrap());
        blk[BLOCK_CRC_OFFSET..BLOCK_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    };
    file[SIGNED_LEN + 808] ^= 4; // mdash
    fix(&mut file);
    let (data, sector) = split(&file);
    let d = ImageDigests::of(data, false);
    let e = verify_block(&sector.block(0).unwrap(), &d).unwrap_err();
    assert!(
        matches!(e, SignatureError::Rsa(RsaError::BadMdash { .. })),
        "{e}"
    );
    file[SIGNED_LEN + 808] ^= 4;
    file[SIGNED_LEN + 424 + 7] ^= 1; // rinv
    fix(&mut file);
    let (data, sector) = split(&file);
    let d = ImageDigests::of(data, false);
    let e = verify_block(&sector.block(0).unwrap(), &d).unwrap_err();
    assert_eq!(e, SignatureError::Rsa(RsaError::BadRinv));
}

#[test]
fn p384_without_sha384_says_the_digest_was_not_computed() {
    let Some(file) = vector("bootloader_signed_v2_ecdsa384.bin") else {
        return;
    };
    let (data, sector) = split(&file);
    let d = ImageDigests::of(data, false);
    let b = sector.block(0).unwrap();
    assert_eq!(
        verify_block(&b, &d),
        Err(SignatureError::DigestNotComputed(HashKind::Sha384))
    );
    assert_eq!(stored_digest_matches(&b, &d), None);
}

fn keys_of(digests: &[[u8; 32]]) -> SecureBootKeys {
    let mut k = SecureBootKeys::default();
    for (i, d) in digests.iter().enumerate() {
        k.digests[i] = Some(*d);
    }
    k
}

#[test]
fn secure_boot_policy_accepts_trusted_and_refuses_wrong_revoked_and_unsigned() {
    let Some(multi) = vector("bootloader_multi_signed_v2_rsa.bin") else {
        return;
    };
    let Some(ecdsa) = vector("bootloader_signed_v2_ecdsa256.bin") else {
        return;
    };
    let Some(unsigned) = vector("bootloader_unsigned_v2.bin") else {
        return;
    };
    let (data, sector) = split(&multi);
    let d = ImageDigests::of(data, false);
    let k: Vec<[u8; 32]> = sector
        .blocks()
        .iter()
        .flatten()
        .map(|b| b.key_digest())
        .collect();
    let (edata, esector) = split(&ecdsa);
    let ed = ImageDigests::of(edata, false);
    let ek = esector.block(0).unwrap().key_digest();

    // Trusting only the third key: block 2 verifies, blocks 0 and 1 are untrusted.
    let v = verify_secure_boot(&sector, &d, &keys_of(&[ek, k[2]])).unwrap();
    assert_eq!((v.block, v.trusted_index, v.key_digest), (2, 1, k[2]));
    assert!(matches!(v.outcomes[0], BlockOutcome::Untrusted { .. }));

    // The first trusted block wins.
    let v = verify_secure_boot(&sector, &d, &keys_of(&[k[1], k[0]])).unwrap();
    assert_eq!(v.block, 0);
    assert_eq!(v.outcomes[1], BlockOutcome::NotConsidered);

    // Revoking key 0 moves verification to block 1; revoking all of the image's keys refuses.
    let mut keys = keys_of(&k);
    keys.revoked = 0b001;
    assert_eq!(verify_secure_boot(&sector, &d, &keys).unwrap().block, 1);
    let mut keys = keys_of(&[k[0], ek]);
    keys.revoked = 0b001;
    let r = verify_secure_boot(&sector, &d, &keys).unwrap_err();
    assert_eq!(r.reason(), RefusalReason::RevokedKey);
    assert!(r.to_string().contains("block 0: key digest"), "{r}");
    keys.revoked = 0b011;
    assert_eq!(
        verify_secure_boot(&sector, &d, &keys),
        Err(Refusal::NoTrustedKeys)
    );
    assert_eq!(
        verify_secure_boot(&sector, &d, &SecureBootKeys::default()),
        Err(Refusal::NoTrustedKeys)
    );

    // Wrong key, wrong scheme, unsigned.
    let r = verify_secure_boot(&sector, &d, &keys_of(&[ek])).unwrap_err();
    assert_eq!(r.reason(), RefusalReason::WrongKey);
    let mut keys = keys_of(&[ek]);
    keys.scheme = Some(Scheme::Ecdsa);
    assert_eq!(
        verify_secure_boot(&sector, &d, &keys).unwrap_err().reason(),
        RefusalReason::WrongScheme
    );
    assert_eq!(verify_secure_boot(&esector, &ed, &keys).unwrap().block, 0);
    let (udata, usector) = (&unsigned[..], [0xFFu8; SECTOR_SIZE]);
    let r = verify_secure_boot(
        &SignatureSector::new(&usector),
        &ImageDigests::of(udata, false),
        &keys_of(&k),
    )
    .unwrap_err();
    assert_eq!(r.reason(), RefusalReason::Unsigned);
    assert!(r.to_string().contains("block 2: absent"), "{r}");

    // A trusted key over other data: bad signature.
    let other = ImageDigests::of(&data[1..], false);
    let r = verify_secure_boot(&sector, &other, &keys_of(&k)).unwrap_err();
    assert_eq!(r.reason(), RefusalReason::BadSignature);
}

#[test]
fn signed_apps_mode_takes_block_0_only_and_the_running_apps_first_valid_key() {
    let Some(multi) = vector("bootloader_multi_signed_v2_rsa.bin") else {
        return;
    };
    let Some(single) = vector("bootloader_signed_v2_rsa.bin") else {
        return;
    };
    let (data, sector) = split(&multi);
    let d = ImageDigests::of(data, false);
    let (sdata, ssector) = split(&single);
    let sd = ImageDigests::of(sdata, false);

    // Running app = the multi-signed one: its first block's key is trusted.
    assert_eq!(
        verify_signed_app(&sector, &d, &sector, None).unwrap().block,
        0
    );
    // The running app's first valid block is block 1 when block 0 is damaged.
    let mut running = multi.clone();
    running[SIGNED_LEN] = 0;
    let (_, rsector) = split(&running);
    let r = verify_signed_app(&sector, &d, &rsector, None).unwrap_err();
    assert_eq!(r.reason(), RefusalReason::WrongKey);
    assert_eq!(r.outcomes().unwrap()[1], BlockOutcome::NotConsidered);
    // A new image whose block 0 is not the running key fails even if block 1 would match.
    let r = verify_signed_app(&ssector, &sd, &sector, None);
    let ok = ssector.block(0).unwrap().key_digest() == sector.block(0).unwrap().key_digest();
    assert_eq!(r.is_ok(), ok);
    // Unsigned running app.
    let blank = [0xFFu8; SECTOR_SIZE];
    assert_eq!(
        verify_signed_app(&sector, &d, &SignatureSector::new(&blank), None),
        Err(Refusal::RunningAppUnsigned)
    );
}

#[test]
fn encoders_round_trip_and_the_builder_appends_and_refuses_a_fourth_block() {
    let Some(file) = vector("bootloader_signed_v2_ecdsa384.bin") else {
        return;
    };
    let (_, sector) = split(&file);
    let b = sector.block(0).unwrap();
    let BlockKey::Ecdsa {
        curve,
        point,
        signature,
    } = b.key
    else {
        panic!()
    };
    let again = encode_ecdsa_block(curve, b.stored_image_digest(), point, signature).unwrap();
    assert_eq!(&again, b.raw());
    assert!(encode_ecdsa_block(Curve::P256, &[0; 48], point, signature).is_err());

    let Some(rsa) = vector("bootloader_signed_v2_rsa.bin") else {
        return;
    };
    let (_, rsector) = split(&rsa);
    let rb = rsector.block(0).unwrap();
    let BlockKey::Rsa {
        n,
        e,
        rinv,
        mdash,
        signature,
    } = rb.key
    else {
        panic!()
    };
    let d: [u8; 32] = rb.stored_image_digest().try_into().unwrap();
    assert_eq!(
        &encode_rsa_block(&d, n, e, rinv, mdash, signature),
        rb.raw()
    );
    // The whole sector is the block and 0xFF, as espsecure writes it.
    let mut sb = SectorBuilder::new();
    sb.push(rb.raw()).unwrap();
    assert_eq!(&sb.finish(), rsector.bytes());

    let Some(multi) = vector("bootloader_multi_signed_v2_rsa.bin") else {
        return;
    };
    let (_, msector) = split(&multi);
    let mut full = SectorBuilder::from_existing(&msector);
    assert_eq!(full.count(), 3);
    let e = full.push(rb.raw()).unwrap_err();
    assert_eq!(
        e,
        SectorFull {
            present: 3,
            adding: 1
        }
    );
    // Appending stops at the first invalid block.
    let mut damaged = multi.clone();
    damaged[SIGNED_LEN + BLOCK_SIZE] = 0;
    let (_, dsector) = split(&damaged);
    assert_eq!(dsector.valid_count(), 2);
    assert_eq!(SectorBuilder::from_existing(&dsector).count(), 1);
}

#[test]
fn block_errors_name_the_field() {
    let mut raw = [0u8; BLOCK_SIZE];
    let e = SignatureBlock::parse(1, &raw).unwrap_err();
    assert_eq!(
        e,
        BlockError {
            index: 1,
            kind: BlockErrorKind::BadMagic { found: 0 }
        }
    );
    assert!(
        e.to_string()
            .starts_with("signature block 1: bad magic at offset 0"),
        "{e}"
    );
    raw[0] = BLOCK_MAGIC;
    raw[1] = 9;
    let seal = |raw: &mut [u8; BLOCK_SIZE]| {
        let crc = block_crc(raw);
        raw[BLOCK_CRC_OFFSET..BLOCK_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    };
    seal(&mut raw);
    assert_eq!(
        SignatureBlock::parse(0, &raw).unwrap_err().kind,
        BlockErrorKind::UnknownVersion { found: 9 }
    );
    raw[1] = VERSION_ECDSA;
    raw[2] = 0;
    raw[36] = 7;
    seal(&mut raw);
    assert_eq!(
        SignatureBlock::parse(0, &raw).unwrap_err().kind,
        BlockErrorKind::UnknownCurve {
            offset: 36,
            found: 7
        }
    );
    raw[36] = CURVE_ID_P384;
    seal(&mut raw);
    assert!(matches!(
        SignatureBlock::parse(0, &raw).unwrap_err().kind,
        BlockErrorKind::CurveHashMismatch {
            curve: Curve::P384,
            hash_type: 0
        }
    ));
    raw[36] = CURVE_ID_P192;
    seal(&mut raw);
    let b = SignatureBlock::parse(0, &raw).unwrap();
    assert_eq!(b.curve(), Some(Curve::P192));
    assert_eq!(
        verify_block(&b, &ImageDigests::of(b"x", false)),
        Err(SignatureError::Ecdsa(EcdsaError::BadPoint))
    );
    // A P-256 block whose point is not on the curve.
    raw[36] = CURVE_ID_P256;
    seal(&mut raw);
    let b = SignatureBlock::parse(0, &raw).unwrap();
    assert_eq!(
        verify_block(&b, &ImageDigests::of(b"x", false)),
        Err(SignatureError::Ecdsa(EcdsaError::BadPoint))
    );
    assert!(SignatureSector::from_slice(&[0xFF; 100]).is_err());
}

#[test]
fn sbv1_block_of_hello_world_signed_is_recognised() {
    let Some(file) = vector("hello-world-signed.bin") else {
        return;
    };
    // image_len 0x2FFB0 (esptool image-info), then the 68-byte v1 block.
    let b = Sbv1Block::parse(&file[0x2FFB0..]).expect("SBv1 block");
    assert_ne!(b.signature, &[0u8; 64]);
    assert!(Sbv1Block::parse(&[0xFF; 68]).is_none());
    assert!(Sbv1Block::parse(&[0; 60]).is_none());
    // No SBv2 sector there.
    let s = sector_of(&file, 0x2FFB0);
    assert!(s.is_none() || s.unwrap().valid_count() == 0);
}

/// The parser's and verifier's no-panic property on random sectors and on real blocks with
/// random mutations (CRC fixed up half of the time, so the fields behind it are reached).
#[test]
fn random_sectors_never_panic() {
    let seed = std::env::var("OTA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5B_0002u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut bases: Vec<Vec<u8>> = Vec::new();
    for name in [
        "bootloader_signed_v2_rsa.bin",
        "bootloader_signed_v2_ecdsa256.bin",
        "bootloader_signed_v2_ecdsa384.bin",
        "bootloader_multi_signed_v2_rsa.bin",
    ] {
        if let Some(f) = vector(name) {
            bases.push(f[SIGNED_LEN..].to_vec());
        }
    }
    bases.push([0xFF; SECTOR_SIZE].to_vec());
    let digests = ImageDigests::of(b"data", true);
    let cases = if cfg!(debug_assertions) { 300 } else { 3000 };
    for case in 0..cases {
        let mut s = bases[case % bases.len()].clone();
        if case % 7 == 0 {
            rng.fill(&mut s[..]);
        }
        for _ in 0..rng.gen_range(1..8) {
            let at = rng.gen_range(0..SECTOR_SIZE);
            s[at] = rng.gen();
        }
        if rng.gen_bool(0.3) {
            // Version/hash/curve bytes to the interesting values.
            let blk = rng.gen_range(0..MAX_BLOCKS) * BLOCK_SIZE;
            s[blk] = BLOCK_MAGIC;
            s[blk + 1] = rng.gen_range(1..5);
            s[blk + 2] = rng.gen_range(0..3);
            s[blk + 36] = rng.gen_range(0..5);
            s[blk + 52] = rng.gen_range(0..5);
        }
        if rng.gen_bool(0.5) {
            for i in 0..MAX_BLOCKS {
                let blk: &mut [u8; BLOCK_SIZE] = (&mut s[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE])
                    .try_into()
                    .unwrap();
                let crc = block_crc(blk);
                blk[BLOCK_CRC_OFFSET..BLOCK_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
            }
        }
        let sector = SignatureSector::from_slice(&s).unwrap();
        for b in sector.blocks() {
            match b {
                Ok(b) => {
                    let _ = (b.key_digest(), b.to_string());
                    // RSA verification of random keys is slow in debug builds: a sample.
                    if b.scheme() == Scheme::Ecdsa || case % 5 == 0 {
                        let _ = verify_block(&b, &digests);
                    }
                    let _ = stored_digest_matches(&b, &digests);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        let keys = SecureBootKeys {
            digests: [
                sector.block(0).ok().map(|b| b.key_digest()),
                None,
                Some([0; 32]),
            ],
            revoked: rng.gen_range(0..8),
            scheme: None,
        };
        if case % 5 == 0 {
            let _ = verify_secure_boot(&sector, &digests, &keys).map_err(|r| r.to_string());
            let _ = verify_signed_app(&sector, &digests, &sector, None);
        }
        let _ = SectorBuilder::from_existing(&sector).finish();
        let _ = Sbv1Block::parse(&s);
    }
}
