//! Partition tables: the three binary readers (bootloader, app, gen_esp32part) and the CSV
//! parser on fuzzer bytes. No panic; a table one reader accepts survives `to_binary` and is
//! read back equal; CSV output of an accepted table parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::partition::{CsvOptions, PartitionTable, ReadRule, TABLE_MAX_LEN};

fuzz_target!(|data: &[u8]| {
    let [ctl, bytes @ ..] = data else {
        return;
    };
    let chip_size = 1u32 << (20 + (ctl & 7));
    for rule in [
        ReadRule::Bootloader { chip_size },
        ReadRule::App,
        ReadRule::GenTool,
    ] {
        if let Ok(t) = PartitionTable::parse(bytes, rule) {
            let _ = t.otadata();
            let _ = t.ota_count();
            let _ = t.bootloader_app_count();
            let mut bin = [0xFFu8; TABLE_MAX_LEN];
            if t.to_binary(true, &mut bin).is_ok() {
                let back = PartitionTable::parse(&bin, rule).expect("our own binary reads back");
                // Labels compare as C strings (bytes after the NUL are not part of them).
                let key = |t: &PartitionTable| -> Vec<(u8, u8, u32, u32, u32, String)> {
                    t.iter()
                        .map(|p| {
                            (
                                p.ptype,
                                p.subtype,
                                p.offset,
                                p.size,
                                p.flags,
                                p.label.as_str().to_string(),
                            )
                        })
                        .collect()
                };
                assert_eq!(key(&back), key(&t));
            }
            let mut csv = String::new();
            t.write_csv(&mut csv).expect("write to a String");
            let _ = PartitionTable::from_csv(&csv, &CsvOptions::default());
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let opts = CsvOptions {
            flash_size: (ctl & 8 != 0).then_some(chip_size),
            ..CsvOptions::default()
        };
        if let Ok(t) = PartitionTable::from_csv(text, &opts) {
            let mut bin = [0xFFu8; TABLE_MAX_LEN];
            let _ = t.to_binary(ctl & 0x10 != 0, &mut bin);
        }
    }
});
