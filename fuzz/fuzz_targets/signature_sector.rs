//! Secure Boot v2 signature sectors from the fuzzer: the last 4096 bytes are the sector, the
//! rest the signed data. Parsing every block, verifying each valid one against the computed
//! digests, ESP-IDF's two trust rules (keys and revocations chosen by the control byte), the
//! append builder and the SBv1 recogniser: no panic, and an accepted image's block verifies
//! on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::secure_boot::{
    stored_digest_matches, verify_block, verify_secure_boot, verify_signed_app, ImageDigests,
    Sbv1Block, Scheme, SectorBuilder, SecureBootKeys, SignatureSector, SECTOR_SIZE,
};

fuzz_target!(|data: &[u8]| {
    let [ctl, file @ ..] = data else {
        return;
    };
    let _ = Sbv1Block::parse(file);
    if file.len() < SECTOR_SIZE {
        return;
    }
    let (signed, sector) = file.split_at(file.len() - SECTOR_SIZE);
    let sector = SignatureSector::from_slice(sector).expect("4096 bytes");
    let digests = ImageDigests::of(signed, ctl & 1 != 0);
    let mut digests_of_blocks = [None; 3];
    for (i, b) in sector.blocks().iter().enumerate() {
        match b {
            Ok(b) => {
                digests_of_blocks[i] = Some(b.key_digest());
                let _ = verify_block(b, &digests);
                let _ = stored_digest_matches(b, &digests);
                let _ = (b.scheme(), b.curve(), b.hash(), b.key_bytes());
            }
            Err(e) => assert_eq!(e.index as usize, i),
        }
    }
    assert!(sector.leading_valid() <= sector.valid_count());
    let scheme = match (ctl >> 1) & 3 {
        1 => Some(Scheme::Rsa3072),
        2 => Some(Scheme::Ecdsa),
        _ => None,
    };
    let keys = SecureBootKeys {
        digests: digests_of_blocks,
        revoked: (ctl >> 3) & 7,
        scheme,
    };
    if let Ok(v) = verify_secure_boot(&sector, &digests, &keys) {
        let b = sector.block(v.block as usize).expect("a verified block is valid");
        assert!(verify_block(&b, &digests).is_ok());
        assert_eq!(b.key_digest(), v.key_digest);
    }
    if let Ok(v) = verify_signed_app(&sector, &digests, &sector, scheme) {
        assert_eq!(v.block, 0);
    }
    let built = SectorBuilder::from_existing(&sector);
    assert_eq!(built.count(), sector.leading_valid());
    let again = built.finish();
    assert_eq!(
        SignatureSector::new(&again).leading_valid(),
        sector.leading_valid()
    );
});
