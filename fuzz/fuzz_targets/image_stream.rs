//! The streaming app-image verifier fed in fuzzer-chosen chunks: no panic, and the same verdict
//! whatever the chunking (one call with the whole input is the reference). Also the one-shot
//! parsers of headers and descriptors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::image::{self, AppDesc, BootloaderDesc, ImageHeader, ImageVerifier};
use ota_core::Chip;
use ota_fuzz::Chunks;

/// Verifier settings from a control byte: expected chip (or any), size limit, app rules.
fn verifier(ctl: u8, len: usize) -> ImageVerifier {
    let mut v = ImageVerifier::new();
    let pick = usize::from(ctl & 0x0F);
    v.set_expected_chip(Chip::ALL.get(pick).copied());
    if ctl & 0x10 != 0 {
        v.set_size_limit(Some((len / 2) as u32 + 1));
    }
    v.set_app_rules(ctl & 0x20 != 0);
    if ctl & 0x40 != 0 {
        v.set_flash_offset(0x10000);
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let [ctl, seed, img @ ..] = data else {
        return;
    };
    let mut chunked = verifier(*ctl, img.len());
    for c in Chunks::new(img, *seed, 700) {
        if chunked.feed_some(c).is_err() {
            break;
        }
    }
    let mut whole = verifier(*ctl, img.len());
    let whole_fed = whole.feed_some(img);
    assert_eq!(
        chunked.finish(),
        whole.finish(),
        "verdict depends on chunking"
    );
    assert_eq!(chunked.summary(), whole.summary());
    if whole_fed.is_ok() {
        assert_eq!(chunked.consumed(), whole.consumed());
        assert_eq!(chunked.is_complete(), whole.is_complete());
    }
    let _ = (chunked.segments(), chunked.image_len(), chunked.app_desc());
    if let Ok(s) = whole.finish() {
        assert!(s.checksum_valid());
        assert_ne!(s.hash_valid(), Some(false));
        assert!(u64::from(s.image_len) <= img.len() as u64);
    }
    let _ = image::parse_prefix(img);
    let _ = ImageHeader::parse(img);
    let _ = AppDesc::parse(img);
    let _ = BootloaderDesc::parse(img);
});
