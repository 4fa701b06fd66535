//! Signed app updates (Secure Boot v2 and "signed apps without secure boot") and the
//! bootloader's signature check, with P-256 blocks made here (RFC 6979, deterministic).

extern crate std;

use std::vec::Vec;

use p256::ecdsa::signature::hazmat::PrehashSigner;

use super::*;
use crate::boot::{self, BootConfig, BootEvent};
use crate::otadata::OtaData;
use crate::partition::PartitionTable;
use crate::secure_boot::{
    self, AppSignatureErrorKind, AppSignatures, Curve, RefusalReason, SectorBuilder, SecureBootKeys,
};
use crate::testutil::{app_image, example_table, RamFlash};

const OTA_0: u32 = 0x10000;
const OTA_1: u32 = 0x110000;
const OTADATA: u32 = 0xD000;

fn key(seed: u8) -> p256::ecdsa::SigningKey {
    let mut b = [seed; 32];
    b[0] = 1;
    p256::ecdsa::SigningKey::from_bytes(&b.into()).unwrap()
}

/// The block of `key` over `signed` (X ‖ Y and r ‖ s little-endian, as espsecure writes).
fn block(key: &p256::ecdsa::SigningKey, signed: &[u8]) -> [u8; secure_boot::BLOCK_SIZE] {
    let digest = secure_boot::ImageDigests::of(signed, false).sha256;
    let sig: p256::ecdsa::Signature = key.sign_prehash(&digest).unwrap();
    let point = key.verifying_key().to_encoded_point(false);
    let mut xy = Vec::new();
    for half in [point.x().unwrap(), point.y().unwrap()] {
        xy.extend(half.iter().rev());
    }
    let mut rs = Vec::new();
    for half in [sig.r().to_bytes(), sig.s().to_bytes()] {
        rs.extend(half.iter().rev());
    }
    secure_boot::encode_ecdsa_block(Curve::P256, &digest, &xy, &rs).unwrap()
}

fn key_digest(key: &p256::ecdsa::SigningKey) -> [u8; 32] {
    let b = block(key, &[0xFF; 4096]);
    secure_boot::SignatureBlock::parse(0, &b)
        .unwrap()
        .key_digest()
}

/// `img` padded to 4096 with 0xFF and a sector of one block per key.
fn signed(img: &[u8], keys: &[&p256::ecdsa::SigningKey]) -> Vec<u8> {
    let mut out = img.to_vec();
    out.resize(img.len().div_ceil(4096) * 4096, 0xFF);
    let mut sb = SectorBuilder::new();
    for k in keys {
        sb.push(&block(k, &out)).unwrap();
    }
    out.extend_from_slice(&sb.finish());
    out
}

fn secure(keys: &[&p256::ecdsa::SigningKey], revoked: u8) -> SecureBootKeys {
    let mut d = [None; 3];
    for (i, k) in keys.iter().enumerate() {
        d[i] = Some(key_digest(k));
    }
    SecureBootKeys {
        digests: d,
        revoked,
        scheme: None,
    }
}

fn device(first: &[u8]) -> (RamFlash, PartitionTable) {
    let mut f = RamFlash::new(4 << 20);
    let t = example_table();
    f.put(OTA_0, first);
    boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
    (f, t)
}

fn update(
    f: &mut RamFlash,
    t: &PartitionTable,
    img: &[u8],
    sig: AppSignatures,
    early: bool,
) -> Result<Committed, Error> {
    let running = *t.ota(0).unwrap();
    let mut cfg = AppUpdateConfig::new(Chip::Esp32);
    cfg.signatures = sig;
    let mut u = AppUpdate::begin(t, Some(&running), cfg, Some(img.len() as u64))?;
    let n = u.feed_prefix(img)?;
    if early && img.len() >= 4096 {
        u.precheck_signature_sector(f, &img[img.len() - 4096..])?;
    }
    for c in img[n..].chunks(3000) {
        u.write(f, c)?;
    }
    u.finish(f)
}

fn reason(e: &Error) -> RefusalReason {
    match e {
        Error::Update(UpdateError::Signature(s)) => s.reason(),
        other => panic!("not a signature error: {other}"),
    }
}

#[test]
fn secure_boot_update_accepts_a_trusted_key_and_refuses_the_rest_before_otadata() {
    let (a, b, c) = (key(1), key(2), key(3));
    let v1 = signed(&app_image(Chip::Esp32, "app", "v1", 50_000), &[&a]);
    let img = app_image(Chip::Esp32, "app", "v2", 70_000);
    let sb = AppSignatures::SecureBoot(secure(&[&a, &b], 0));
    let cases: [(Vec<u8>, AppSignatures, RefusalReason); 5] = [
        (img.clone(), sb, RefusalReason::Unsigned),
        (signed(&img, &[&c]), sb, RefusalReason::WrongKey),
        (
            signed(&img, &[&b]),
            AppSignatures::SecureBoot(secure(&[&a, &b], 0b10)),
            RefusalReason::RevokedKey,
        ),
        (
            {
                let mut t = signed(&img, &[&a]);
                t[5000] ^= 1; // inside a segment: the image hash catches it first
                t[img.len() + 10] ^= 1; // padding: only the signature covers it
                t[5000] ^= 1;
                t
            },
            sb,
            RefusalReason::BadSignature,
        ),
        (
            signed(&img, &[&a]),
            AppSignatures::SecureBoot(SecureBootKeys::default()),
            RefusalReason::NoTrustedKeys,
        ),
    ];
    for (file, rule, want) in cases {
        for early in [false, true] {
            let (mut f, t) = device(&v1);
            let otadata = f.data[OTADATA as usize..OTADATA as usize + 0x2000].to_vec();
            let erases = f.erases_in(OTA_1, 0x100000);
            let e = update(&mut f, &t, &file, rule, early).unwrap_err();
            assert_eq!(reason(&e), want, "{e}");
            assert_eq!(
                &f.data[OTADATA as usize..OTADATA as usize + 0x2000],
                &otadata[..]
            );
            let msg = std::format!("{e}");
            assert!(
                msg.contains("ota_1") && msg.contains("refused") || msg.contains("not signed"),
                "{msg}"
            );
            // An early sector check refuses before the slot is erased (a bad signature can
            // only be found over the written bytes).
            if early && want != RefusalReason::BadSignature && want != RefusalReason::Unsigned {
                assert_eq!(f.erases_in(OTA_1, 0x100000), erases, "{e}");
                if want != RefusalReason::NoTrustedKeys {
                    assert!(msg.contains("end of the stream"), "{msg}");
                }
            }
        }
    }
    // Signed by b in block 1 behind an untrusted block 0: the first trusted block counts.
    let (mut f, t) = device(&v1);
    let ok = signed(&img, &[&c, &b]);
    let done = update(&mut f, &t, &ok, sb, true).unwrap();
    assert_eq!(done.slot.offset, OTA_1);
    // The bootloader with secure boot boots it.
    let cfg = BootConfig {
        secure_boot: Some(secure(&[&a, &b], 0)),
        ..BootConfig::default()
    };
    let out = boot::boot(&mut f, &t, Chip::Esp32, &cfg, &mut |_| {}).unwrap();
    assert_eq!(out.partition.offset, OTA_1);
}

#[test]
fn the_stream_must_carry_the_sector() {
    let a = key(1);
    let v1 = signed(&app_image(Chip::Esp32, "app", "v1", 50_000), &[&a]);
    let img = signed(&app_image(Chip::Esp32, "app", "v2", 70_000), &[&a]);
    let (mut f, t) = device(&v1);
    // A previous update left a valid signed copy in ota_1: a stream cut before the sector
    // must not be accepted on the old sector's strength.
    update(&mut f, &t, &img, AppSignatures::NotChecked, false).unwrap();
    let part = *t.otadata().unwrap();
    let mut od = OtaData::read(&mut f, &part).unwrap();
    od.set_boot(&mut f, &part, 0, 2, false).unwrap();
    let cut = &img[..img.len() - 4096];
    let sb = AppSignatures::SecureBoot(secure(&[&a], 0));
    let e = update(&mut f, &t, cut, sb, false).unwrap_err();
    match e {
        Error::Update(UpdateError::Signature(s)) => assert!(
            matches!(s.kind, AppSignatureErrorKind::SectorNotStreamed { .. }),
            "{s}"
        ),
        other => panic!("{other}"),
    }
}

#[test]
fn signed_apps_mode_trusts_the_running_apps_key_only() {
    let (a, b) = (key(1), key(2));
    let img = app_image(Chip::Esp32, "app", "v2", 70_000);
    let rule = AppSignatures::SignedApps { scheme: None };
    let (mut f, t) = device(&signed(&app_image(Chip::Esp32, "app", "v1", 50_000), &[&a]));
    let e = update(&mut f, &t, &signed(&img, &[&b]), rule, true).unwrap_err();
    assert_eq!(reason(&e), RefusalReason::WrongKey);
    // Block 1 does not count in this mode.
    let e = update(&mut f, &t, &signed(&img, &[&b, &a]), rule, false).unwrap_err();
    assert_eq!(reason(&e), RefusalReason::WrongKey);
    update(&mut f, &t, &signed(&img, &[&a]), rule, true).unwrap();
    // An unsigned running app gives no key.
    let (mut f, t) = device(&app_image(Chip::Esp32, "app", "v1", 50_000));
    let e = update(&mut f, &t, &signed(&img, &[&a]), rule, false).unwrap_err();
    assert_eq!(reason(&e), RefusalReason::RunningAppUnsigned);
}

#[test]
fn the_bootloader_skips_an_app_whose_signature_fails_without_otadata_writes() {
    let a = key(1);
    let v1 = signed(&app_image(Chip::Esp32, "app", "v1", 50_000), &[&a]);
    let v2 = signed(&app_image(Chip::Esp32, "app", "v2", 70_000), &[&a]);
    let (mut f, t) = device(&v1);
    update(
        &mut f,
        &t,
        &v2,
        AppSignatures::SecureBoot(secure(&[&a], 0)),
        false,
    )
    .unwrap();
    let cfg = BootConfig {
        secure_boot: Some(secure(&[&a], 0)),
        ..BootConfig::default()
    };
    // Corrupt r of ota_1's block and fix the CRC up: a valid block whose signature fails.
    let at = OTA_1 as usize + v2.len() - 4096;
    let mut raw: [u8; secure_boot::BLOCK_SIZE] =
        f.data[at..at + secure_boot::BLOCK_SIZE].try_into().unwrap();
    raw[120] ^= 0x40;
    let crc = secure_boot::block_crc(&raw);
    raw[secure_boot::BLOCK_CRC_OFFSET..secure_boot::BLOCK_CRC_OFFSET + 4]
        .copy_from_slice(&crc.to_le_bytes());
    f.data[at..at + secure_boot::BLOCK_SIZE].copy_from_slice(&raw);
    let before = f.data.clone();
    let mut evs = Vec::new();
    let out = boot::boot(&mut f, &t, Chip::Esp32, &cfg, &mut |e| evs.push(e)).unwrap();
    assert_eq!(out.partition.offset, OTA_0);
    assert!(evs.iter().any(|e| matches!(e,
        BootEvent::LoadFailed { partition, error: Error::Update(UpdateError::Signature(s)) }
            if partition.offset == OTA_1 && s.reason() == RefusalReason::BadSignature)));
    assert!(f.data == before, "a fallback writes nothing");
    // Without secure boot the same flash boots ota_1.
    let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
    assert_eq!(out.partition.offset, OTA_1);
    // Nothing signed by a trusted key: nothing boots.
    let other = BootConfig {
        secure_boot: Some(secure(&[&key(9)], 0)),
        ..BootConfig::default()
    };
    assert!(boot::boot(&mut f, &t, Chip::Esp32, &other, &mut |_| {}).is_err());
}
