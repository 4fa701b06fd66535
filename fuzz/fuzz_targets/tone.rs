//! ADF tone bins: the whole-bin reader (strict and lenient), the flash readers
//! `tone_partition_init` / `tone_partition_check` over a partition holding the fuzzer's bytes,
//! and the upgrade policy `decide_upgrade` between two fuzzer-made bins. No panic; a bin the
//! strict reader accepts is accepted by the flash check too.
#![no_main]

use embedded_storage::nor_flash::NorFlash;
use libfuzzer_sys::fuzz_target;
use ota_core::tone::{
    decide_upgrade, tone_partition_check, tone_partition_init, ParseOptions, ToneBin, ToneDesc,
    ToneHeader,
};
use ota_fuzz::{device, table, TONE, TONE_SIZE};

fuzz_target!(|data: &[u8]| {
    let [ctl, split, bytes @ ..] = data else {
        return;
    };
    let strict = ToneBin::parse(bytes);
    let _ = ToneBin::parse_with(
        bytes,
        ParseOptions {
            allow_trailing: true,
            check_crc: false,
        },
    );
    if let Ok(b) = &strict {
        let _ = (b.header(), b.desc(), b.crc(), b.total_size(), b.data_end());
        for file in b.files() {
            let _ = file;
        }
    }
    // On flash: the partition holds the bytes (cut to the partition).
    let mut f = device();
    let t = table();
    let part = *t.find_data("flash_tone").unwrap();
    let n = bytes.len().min(TONE_SIZE as usize);
    // The flash takes whole 4-byte words (esp-storage's unit): the tail is padded with the
    // erased value, as the bytes after a bin are on a real partition.
    let mut padded = bytes[..n].to_vec();
    padded.resize(n.div_ceil(4) * 4, 0xFF);
    f.write(TONE, &padded).unwrap();
    let init = tone_partition_init(&mut f, &part);
    let check = tone_partition_check(&mut f, &part);
    if strict.is_ok() && n == bytes.len() {
        assert!(
            check.is_ok(),
            "a bin ToneBin::parse accepts fails the partition check"
        );
    }
    // decide_upgrade: the incoming header/descriptor from the other part of the input.
    let at = (usize::from(*split) * bytes.len() / 256).min(bytes.len());
    let incoming = &bytes[at..];
    if let Ok(h) = ToneHeader::parse(incoming) {
        let desc = incoming.get(8..).and_then(|d| ToneDesc::parse(d).ok());
        let cur = init.as_ref().ok();
        let _ = decide_upgrade(cur, &h, desc.as_ref(), ctl & 1 != 0);
        let cur = check.as_ref().ok();
        let _ = decide_upgrade(cur, &h, desc.as_ref(), ctl & 1 == 0);
    }
});
