//! `elf2image`: fuzzer bytes as an ELF, converted for a fuzzer-chosen chip and option set. No
//! panic; an accepted ELF streams exactly `image_len()` bytes, and what the streaming image
//! verifier reads of the image it makes has a valid checksum and digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::elf2image::{Options, Plan, SecurePad};
use ota_core::Chip;

fuzz_target!(|data: &[u8]| {
    let [chip, a, b, elf @ ..] = data else {
        return;
    };
    let chip = Chip::ALL[*chip as usize % Chip::ALL.len()];
    let mut o = Options::new(chip);
    o.flash_mode = a & 3;
    o.flash_size_code = (a >> 2) & 7;
    o.use_segments = a & 0x20 != 0;
    o.ram_only_header = a & 0x40 != 0;
    o.append_digest = a & 0x80 == 0;
    o.secure_pad = match b & 3 {
        1 => SecurePad::V1,
        2 => SecurePad::V2,
        _ => SecurePad::None,
    };
    o.mmu_page_size = match (b >> 2) & 7 {
        1 => Some(0x2000),
        2 => Some(0x4000),
        3 => Some(0x8000),
        4 => Some(0x1_0000),
        _ => None,
    };
    o.pad_to_size = if b & 0x20 != 0 { 0x1000 } else { 0 };
    o.elf_sha256_offset = (b & 0x40 != 0).then_some(0xB0);
    let Ok(plan) = Plan::new(elf, &o) else {
        return;
    };
    let mut out = Vec::new();
    let n = plan
        .emit(&mut |c: &[u8]| {
            out.extend_from_slice(c);
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(n, plan.image_len());
    assert_eq!(out.len() as u64, n);
    if !o.ram_only_header && o.pad_to_size == 0 {
        let mut v = ota_core::image::ImageVerifier::new();
        v.set_strict(false);
        // The verifier may refuse what the bootloader refuses (an address it cannot load);
        // what it reads must carry a valid checksum and digest.
        if let Ok(s) = v.feed(&out).and_then(|_| v.finish()) {
            assert!(s.checksum_valid(), "checksum");
            if o.append_digest {
                assert_eq!(s.hash_valid(), Some(true), "digest");
            }
        }
    }
});
