//! The flash size codes of the image header (byte 3, high nibble) have one home, ota-core:
//! the emulator reading a device's bootloader header, and the CLI showing or writing a flash
//! size, agree with it on every code (0..=15) for every chip.

mod common;

use common::*;
use ota_core::image::{
    flash_size_bytes, flash_size_code_for_bytes, flash_size_code_from_name, flash_size_name,
    ImageHeader, HEADER_SIZE, IMAGE_MAGIC,
};
use ota_core::partition::{CsvOptions, PartitionTable, TABLE_MAX_LEN, TABLE_OFFSET};
use ota_core::Chip;

/// Every value the nibble can hold.
const CODES: std::ops::RangeInclusive<u8> = 0..=15;
/// A small flash file: the bootloader header, the table and one partition.
const FILE_LEN: usize = 0x10000;

/// A flash file whose 2nd-stage bootloader header (at `chip`'s offset) carries size `code`.
fn flash_file(chip: Chip, code: u8) -> Vec<u8> {
    let mut mem = vec![0xFF; FILE_LEN];
    let header = ImageHeader {
        magic: IMAGE_MAGIC,
        segment_count: 1,
        spi_mode: 2,
        spi_speed_size: code << 4,
        chip_id: chip.id(),
        ..ImageHeader::default()
    };
    let at = chip.bootloader_offset() as usize;
    mem[at..at + HEADER_SIZE].copy_from_slice(&header.to_bytes());
    let table =
        PartitionTable::from_csv("nvs, data, nvs, 0x9000, 0x4000\n", &CsvOptions::default())
            .unwrap();
    let mut bin = [0xFF; TABLE_MAX_LEN];
    table.to_binary(true, &mut bin).unwrap();
    mem[TABLE_OFFSET as usize..][..TABLE_MAX_LEN].copy_from_slice(&bin);
    mem
}

#[test]
fn core_names_and_sizes_are_one_table() {
    for code in CODES {
        let bytes = flash_size_bytes(code);
        assert_eq!(bytes.is_some(), code <= 7, "code {code}");
        assert_eq!(flash_size_name(code).is_some(), code <= 7, "code {code}");
        if let (Some(b), Some(n)) = (bytes, flash_size_name(code)) {
            assert_eq!(flash_size_code_for_bytes(b), Some(code));
            assert_eq!(flash_size_code_from_name(n), Some(code));
            assert_eq!(n, format!("{}MB", b >> 20), "esptool's name");
        }
    }
    assert_eq!(flash_size_code_for_bytes(3 << 20), None);
    assert_eq!(flash_size_code_for_bytes(0), None);
}

#[test]
fn emulator_reads_every_flash_size_code_as_ota_core_does_on_every_chip() {
    for chip in Chip::ALL {
        for code in CODES {
            let mut mem = flash_file(chip, code);
            let mut flash = ota_core::mem_flash::MemFlash::<1, 1>::new(&mut mem);
            let got = ota_emu::device::detect_bootloader(&mut flash, "test.bin");
            match flash_size_bytes(code) {
                Some(size) => {
                    let b = got.unwrap_or_else(|e| panic!("{chip:?} code {code}: {e}"));
                    assert_eq!((b.chip, b.flash_size), (chip, size), "{chip:?} code {code}");
                }
                None => {
                    let e = got.expect_err("an unknown size code is refused");
                    assert!(
                        matches!(e, ota_emu::EmuError::BadFlashSizeCode { code: c, .. } if c == code),
                        "{chip:?} code {code}: {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn cli_shows_every_flash_size_code_as_ota_core_names_it_on_every_chip() {
    let dir = tempfile::tempdir().unwrap();
    for chip in Chip::ALL {
        for code in CODES {
            let path = dir.path().join(format!("{}-{code}.bin", chip.name()));
            std::fs::write(&path, flash_file(chip, code)).unwrap();
            let out = ota(&["device", "info", "--flash", s(&path), "--json"]);
            match flash_size_name(code) {
                Some(name) => {
                    assert!(out.status.success(), "{chip:?} code {code}: {}", text(&out));
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    assert_eq!(v["chip"], chip.name(), "{chip:?} code {code}");
                    assert_eq!(v["flash_size"], name, "{chip:?} code {code}");
                }
                None => {
                    assert!(
                        !out.status.success(),
                        "{chip:?} code {code}: {}",
                        text(&out)
                    );
                    let t = text(&out);
                    assert!(
                        t.contains(&format!("flash size code 0x{code:x}")),
                        "{chip:?} code {code}: {t}"
                    );
                }
            }
            std::fs::remove_file(&path).unwrap();
        }
    }
}
