//! Tests of the partition table: golden vectors of esp-idf gen_esp32part.py, the three readers of
//! `flash_partitions.c` / `esp_partition/partition.c` / gen_esp32part.py, the CSV rules of gen_esp32part.py and its `verify()` (messages checked against gen_esp32part.py v6.1-dev).

extern crate std;

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use md5::{Digest, Md5};

use super::*;

const SINGLEAPP: &str = "# Name,   Type, SubType, Offset,  Size, Flags
# Note: if you have increased the bootloader size, make sure to update the offsets to avoid overlap
nvs,      data, nvs,     ,        0x6000,
phy_init, data, phy,     ,        0x1000,
factory,  app,  factory, ,        1M,
";

const TWO_OTA: &str = "# Name,   Type, SubType, Offset,   Size, Flags
# Note: if you have increased the bootloader size, make sure to update the offsets to avoid overlap
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
factory,  app,  factory, ,        1M,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
";

const TWO_OTA_LARGE: &str = "# Name,   Type, SubType, Offset,   Size, Flags
# Note: if you have increased the bootloader size, make sure to update the offsets to avoid overlap
nvs,      data, nvs,     ,        0x6000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
ota_0,    app,  ota_0,   ,        1700K,
ota_1,    app,  ota_1,   ,        1700K,
";

const TWO_OTA_ENCR_NVS: &str = "# Name,   Type, SubType, Offset,   Size, Flags
# Note: if you have increased the bootloader size, make sure to update the offsets to avoid overlap
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
factory,  app,  factory, ,        1M,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
nvs_key,  data, nvs_keys,,        0x1000, encrypted
";

/// ESP-ADF OTA example table (esp-adf): flash_tone is data subtype 0xff.
const ADF_EXAMPLE: &str = "# Name,   Type, SubType, Offset,   Size, Flags
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
flash_tone, data, 0xff,  ,        1M,
";

const CHIP_4MB: u32 = 0x40_0000;

fn hex(bytes: &[u8]) -> String {
    crate::image::Hex(bytes).to_string()
}

fn csv(text: &str) -> PartitionTable {
    match PartitionTable::from_csv(text, &CsvOptions::default()) {
        Ok(t) => t,
        Err(e) => panic!("CSV rejected: {}", e),
    }
}

fn csv_err(text: &str, opts: &CsvOptions) -> CsvError {
    match PartitionTable::from_csv(text, opts) {
        Ok(t) => panic!("CSV accepted: {:?}", t.as_slice()),
        Err(e) => e,
    }
}

fn csv_msg(text: &str) -> String {
    format!("{}", csv_err(text, &CsvOptions::default()))
}

fn bin(t: &PartitionTable, md5: bool) -> [u8; TABLE_MAX_LEN] {
    let mut out = [0u8; TABLE_MAX_LEN];
    t.to_binary(md5, &mut out).unwrap();
    out
}

fn to_csv(t: &PartitionTable) -> String {
    let mut s = String::new();
    t.write_csv(&mut s).unwrap();
    s
}

fn layout(t: &PartitionTable) -> Vec<(&str, u8, u8, u32, u32, u32)> {
    t.iter()
        .map(|p| {
            (
                p.label.as_str(),
                p.ptype,
                p.subtype,
                p.offset,
                p.size,
                p.flags,
            )
        })
        .collect()
}

fn part(label: &str, ptype: u8, subtype: u8, offset: u32, size: u32) -> Partition {
    Partition {
        ptype,
        subtype,
        offset,
        size,
        label: Label::new(label),
        flags: 0,
    }
}

fn table(parts: &[Partition]) -> PartitionTable {
    let mut t = PartitionTable::new();
    for p in parts {
        t.push(*p).unwrap();
    }
    t
}

fn assert_golden(text: &str, md5_field: &str, file_md5: &str) {
    let t = csv(text);
    let b = bin(&t, true);
    let at = t.len() * ENTRY_SIZE;
    assert_eq!(&b[at..at + 2], &[0xEB, 0xEB]);
    assert!(b[at + 2..at + 16].iter().all(|&x| x == 0xFF));
    assert_eq!(hex(&b[at + 16..at + 32]), md5_field);
    assert_eq!(hex(&Md5::digest(b)), file_md5);
    assert!(b[at + 32..].iter().all(|&x| x == 0xFF));
}

// ---------------------------------------------------------------------------------------------
// Golden vectors (gen_esp32part.py)

#[test]
fn golden_partitions_singleapp() {
    assert_golden(
        SINGLEAPP,
        "f4ad4f4538564b5d7435b62c75b69524",
        "5d61d196adc3dba01928f264eb169be7",
    );
    assert_eq!(
        layout(&csv(SINGLEAPP)),
        [
            ("nvs", 1, 2, 0x9000, 0x6000, 0),
            ("phy_init", 1, 1, 0xF000, 0x1000, 0),
            ("factory", 0, 0, 0x10000, 0x100000, 0)
        ]
    );
}

#[test]
fn golden_partitions_two_ota() {
    assert_golden(
        TWO_OTA,
        "bf25822c0fa6d8641bd930251e06b4c4",
        "9f94bf1e89f37d80f4310d5af19a6e59",
    );
    let t = csv(TWO_OTA);
    let offsets: Vec<(u32, u32)> = t.iter().map(|p| (p.offset, p.size)).collect();
    assert_eq!(
        offsets,
        [
            (0x9000, 0x4000),
            (0xD000, 0x2000),
            (0xF000, 0x1000),
            (0x10000, 0x100000),
            (0x110000, 0x100000),
            (0x210000, 0x100000)
        ]
    );
    assert_eq!(t.ota_count(), 2);
    assert_eq!(t.otadata().map(|p| p.offset), Some(0xD000));
}

#[test]
fn golden_partitions_two_ota_large() {
    assert_golden(
        TWO_OTA_LARGE,
        "37f38b32a34f7412f158930062441178",
        "f6dec7bfda2f3dee587657b4e8863c55",
    );
    let offsets: Vec<(u32, u32)> = csv(TWO_OTA_LARGE)
        .iter()
        .map(|p| (p.offset, p.size))
        .collect();
    assert_eq!(
        offsets,
        [
            (0x9000, 0x6000),
            (0xF000, 0x2000),
            (0x11000, 0x1000),
            (0x20000, 0x1A9000),
            (0x1D0000, 0x1A9000)
        ]
    );
}

#[test]
fn golden_partitions_two_ota_encr_nvs() {
    assert_golden(
        TWO_OTA_ENCR_NVS,
        "76d509eedec6b9850fadba48faf3a90c",
        "bcf4037758281cb593a08d3fe9389252",
    );
    let t = csv(TWO_OTA_ENCR_NVS);
    assert_eq!(
        layout(&t)[6],
        ("nvs_key", 1, 4, 0x310000, 0x1000, FLAG_ENCRYPTED)
    );
}

#[test]
fn golden_inline_single_custom_entry() {
    // gen_esp32part_tests.py test_binary_entry (from_csv without verify()).
    let opts = CsvOptions {
        verify: false,
        ..CsvOptions::default()
    };
    let t = PartitionTable::from_csv("\nfirst, 0x30, 0xEE, 0x100400, 0x300000\n", &opts).unwrap();
    let b = bin(&t, true);
    assert_eq!(&b[0..4], &[0xAA, 0x50, 0x30, 0xEE]);
    assert_eq!(&b[4..12], &[0x00, 0x04, 0x10, 0x00, 0x00, 0x00, 0x30, 0x00]);
    assert_eq!(hex(&b[48..64]), "43033f334087575169839b4061b12726");
    // verify() rejects it: custom types need 4 KiB aligned offsets.
    assert_eq!(
        csv_msg("first, 0x30, 0xEE, 0x100400, 0x300000"),
        "Partition first invalid: Offset 0x100400 is not aligned to 0x1000"
    );
}

/// `LONGER_BINARY_TABLE` of gen_esp32part_tests.py.
fn longer_binary_table() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(
        b"\xaa\x50\x00\x00\x00\x00\x01\x00\x00\x00\x10\x00factory\0\0\0\0\0\0\0\0\0\0\0\0\0",
    );
    b.extend_from_slice(
        b"\xaa\x50\x01\x20\x00\x00\x11\x00\x00\x02\x00\x00data\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    );
    b.extend_from_slice(
        b"\xaa\x50\x10\x00\x00\x00\x15\x00\x00\x10\x00\x00second\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    );
    b.extend_from_slice(&[0xEB, 0xEB]);
    b.extend_from_slice(&[0xFF; 14]);
    b.extend_from_slice(b"\xf9\xbd\x06\x1b\x45\x68\x6f\x86\x57\x1a\x2c\xd5\x2a\x1d\xa6\x5b");
    b.extend_from_slice(&[0xFF; 32]);
    b
}

#[test]
fn golden_longer_binary_table_all_readers() {
    let raw = longer_binary_table();
    let t = PartitionTable::parse(&raw, ReadRule::GenTool).unwrap();
    assert_eq!(
        layout(&t),
        // (upstream's comments say 128KB / 1MB, but the bytes are 0x200 / 0x1000)
        [
            ("factory", 0, 0, 0x10000, 0x100000, 0),
            ("data", 1, 0x20, 0x110000, 0x200, 0),
            ("second", 0x10, 0, 0x150000, 0x1000, 0)
        ]
    );
    let out = bin(&t, true);
    assert_eq!(&out[..raw.len()], &raw[..]);
    assert_eq!(PartitionTable::parse(&out, ReadRule::App).unwrap(), t);
    assert_eq!(
        PartitionTable::parse(
            &out,
            ReadRule::Bootloader {
                chip_size: CHIP_4MB
            }
        )
        .unwrap(),
        t
    );
}

#[test]
fn adf_example_table_offsets() {
    let t = csv(ADF_EXAMPLE);
    let offsets: Vec<u32> = t.iter().map(|p| p.offset).collect();
    assert_eq!(
        offsets,
        [0x9000, 0xD000, 0xF000, 0x10000, 0x110000, 0x210000]
    );
    let tone = t.find_data("flash_tone").unwrap();
    assert_eq!((tone.subtype, tone.size), (0xFF, 0x100000));
    // Cross-checked with gen_esp32part.py v6.1-dev.
    assert_eq!(
        hex(&Md5::digest(bin(&t, true))),
        "eabf4bcc712da7546cd64ea55e210577"
    );
}

// ---------------------------------------------------------------------------------------------
// Readers (`flash_partitions.c` / `esp_partition/partition.c` / gen_esp32part.py)

fn two_ota_bin() -> [u8; TABLE_MAX_LEN] {
    bin(&csv(TWO_OTA), true)
}

#[test]
fn all_readers_accept_generated_table() {
    let b = two_ota_bin();
    let t = csv(TWO_OTA);
    assert_eq!(
        PartitionTable::parse(
            &b,
            ReadRule::Bootloader {
                chip_size: CHIP_4MB
            }
        )
        .unwrap(),
        t
    );
    assert_eq!(PartitionTable::parse(&b, ReadRule::App).unwrap(), t);
    assert_eq!(PartitionTable::parse(&b, ReadRule::GenTool).unwrap(), t);
    // App maps a whole 4 KiB sector.
    let mut sector = [0xFFu8; 0x1000];
    sector[..TABLE_MAX_LEN].copy_from_slice(&b);
    assert_eq!(PartitionTable::parse(&sector, ReadRule::App).unwrap(), t);
}

#[test]
fn parse_rejects_bad_md5_in_every_reader() {
    let mut b = two_ota_bin();
    b[6 * 32 + 20] ^= 1;
    let e = PartitionTable::parse(
        &b,
        ReadRule::Bootloader {
            chip_size: CHIP_4MB,
        },
    )
    .unwrap_err();
    assert!(matches!(e, PartitionError::Md5Mismatch { index: 6, .. }));
    assert_eq!(format!("{}", e), "Incorrect MD5 checksum");
    assert_eq!(e.byte_offset(), Some(0xC0));
    let e = PartitionTable::parse(&b, ReadRule::App).unwrap_err();
    assert_eq!(format!("{}", e), "Partition table MD5 mismatch");
    let e = PartitionTable::parse(&b, ReadRule::GenTool).unwrap_err();
    assert_eq!(
        format!("{}", e),
        "MD5 checksums don't match! (computed: 0xbf25822c0fa6d8641bd930251e06b4c4, \
         parsed: 0xb'bf25822c0ea6d8641bd930251e06b4c4')"
    );
    // A changed entry byte is caught too.
    let mut b = two_ota_bin();
    b[12] = b'N';
    assert!(matches!(
        PartitionTable::parse(&b, ReadRule::App),
        Err(PartitionError::Md5Mismatch { index: 6, .. })
    ));
}

#[test]
fn bootloader_md5_is_optional() {
    let t = csv(TWO_OTA);
    let b = bin(&t, false);
    assert_eq!(
        PartitionTable::parse(
            &b,
            ReadRule::Bootloader {
                chip_size: CHIP_4MB
            }
        )
        .unwrap(),
        t
    );
    assert_eq!(PartitionTable::parse(&b, ReadRule::GenTool).unwrap(), t);
}

#[test]
fn app_requires_md5() {
    let b = bin(&csv(TWO_OTA), false);
    let e = PartitionTable::parse(&b, ReadRule::App).unwrap_err();
    assert_eq!(e, PartitionError::Md5NotFound { index: 6 });
    assert_eq!(format!("{}", e), "No MD5 found in partition table");
}

#[test]
fn bootloader_rejects_two_md5_entries() {
    let t = table(&[part("a", 1, 2, 0x9000, 0x4000)]);
    let mut b = bin(&t, true);
    let first_md5: [u8; 32] = b[32..64].try_into().unwrap();
    b[64..96].copy_from_slice(&first_md5);
    let e = PartitionTable::parse(
        &b,
        ReadRule::Bootloader {
            chip_size: CHIP_4MB,
        },
    )
    .unwrap_err();
    assert_eq!(e, PartitionError::DuplicateMd5 { index: 2 });
    assert_eq!(format!("{}", e), "Only one MD5 checksum is allowed");
    // gen_esp32part.py accepts a repeated, matching MD5 entry; the app stops at the first.
    assert_eq!(PartitionTable::parse(&b, ReadRule::GenTool).unwrap(), t);
    assert_eq!(PartitionTable::parse(&b, ReadRule::App).unwrap(), t);
}

#[test]
fn bootloader_rejects_entry_beyond_chip_size() {
    let b = two_ota_bin();
    // ota_1 ends at 0x310000.
    let e = PartitionTable::parse(
        &b,
        ReadRule::Bootloader {
            chip_size: 0x30_0000,
        },
    )
    .unwrap_err();
    assert_eq!(
        format!("{}", e),
        "partition 5 (ota_1) invalid - offset 0x210000 size 0x100000 exceeds flash chip size 0x300000"
    );
    assert_eq!(e.byte_offset(), Some(160));
    assert!(PartitionTable::parse(
        &b,
        ReadRule::Bootloader {
            chip_size: 0x31_0000
        }
    )
    .is_ok());
    // Offset beyond the chip (the subtraction must not wrap).
    let t = table(&[part("far", 1, 0x81, 0xFFFF_F000, 0x1000)]);
    let e = PartitionTable::parse(
        &bin(&t, true),
        ReadRule::Bootloader {
            chip_size: CHIP_4MB,
        },
    )
    .unwrap_err();
    assert!(matches!(
        e,
        PartitionError::ExceedsChipSize { index: 0, .. }
    ));
    // The app does not check the chip size.
    assert!(PartitionTable::parse(&bin(&t, true), ReadRule::App).is_ok());
}

#[test]
fn bootloader_rejects_missing_terminator() {
    // 95 partitions + MD5 entry fill all 96 scanned entries: no room for a terminator.
    let mut b = [0u8; TABLE_MAX_LEN];
    let mut h = Md5::new();
    for i in 0..95 {
        let e = part("p", 1, 0x81, 0x10000 + i * 0x1000, 0x1000).to_bytes();
        b[i as usize * 32..][..32].copy_from_slice(&e);
        h.update(e);
    }
    b[95 * 32..95 * 32 + 2].copy_from_slice(&[0xEB, 0xEB]);
    b[95 * 32 + 2..95 * 32 + 16].fill(0xFF);
    b[95 * 32 + 16..].copy_from_slice(&h.finalize());
    let e = PartitionTable::parse(
        &b,
        ReadRule::Bootloader {
            chip_size: CHIP_4MB,
        },
    )
    .unwrap_err();
    assert_eq!(e, PartitionError::NoTerminator { scanned: 96 });
    assert_eq!(
        format!("{}", e),
        "partition table has no terminating entry, not valid"
    );
    // The app reads up to the MD5 entry and is happy (95 fit our table exactly).
    assert_eq!(PartitionTable::parse(&b, ReadRule::App).unwrap().len(), 95);
    // gen_esp32part.py wants an all-FF entry.
    let e = PartitionTable::parse(&b, ReadRule::GenTool).unwrap_err();
    assert_eq!(
        format!("{}", e),
        "Partition table is missing an end-of-table marker"
    );
}

#[test]
fn bootloader_terminator_checks_only_first_four_bytes() {
    let t = csv(TWO_OTA);
    let mut b = bin(&t, true);
    b[7 * 32 + 4..7 * 32 + 32].fill(0x00);
    assert_eq!(
        PartitionTable::parse(
            &b,
            ReadRule::Bootloader {
                chip_size: CHIP_4MB
            }
        )
        .unwrap(),
        t
    );
    // gen_esp32part.py needs all 32 bytes 0xFF: it then sees a bad magic.
    let e = PartitionTable::parse(&b, ReadRule::GenTool).unwrap_err();
    assert_eq!(
        format!("{}", e),
        "Invalid magic bytes (b'\\xff\\xff') for partition definition"
    );
    // The app stops at any non-partition magic after its MD5 check.
    assert_eq!(PartitionTable::parse(&b, ReadRule::App).unwrap(), t);
}

#[test]
fn bootloader_rejects_empty_table_as_invalid_magic_at_0() {
    let b = [0xFFu8; TABLE_MAX_LEN];
    let e = PartitionTable::parse(
        &b,
        ReadRule::Bootloader {
            chip_size: CHIP_4MB,
        },
    )
    .unwrap_err();
    assert_eq!(
        e,
        PartitionError::InvalidMagic {
            index: 0,
            found: 0xFFFF
        }
    );
    assert_eq!(format!("{}", e), "partition 0 invalid magic number 0xffff");
    // gen_esp32part.py reads an empty table; the app finds no MD5.
    assert!(PartitionTable::parse(&b, ReadRule::GenTool)
        .unwrap()
        .is_empty());
    assert_eq!(
        PartitionTable::parse(&b, ReadRule::App).unwrap_err(),
        PartitionError::Md5NotFound { index: 0 }
    );
}

#[test]
fn bootloader_rejects_bad_magic_mid_table() {
    let mut b = two_ota_bin();
    b[3 * 32] = 0x34;
    b[3 * 32 + 1] = 0x12;
    let e = PartitionTable::parse(
        &b,
        ReadRule::Bootloader {
            chip_size: CHIP_4MB,
        },
    )
    .unwrap_err();
    assert_eq!(format!("{}", e), "partition 3 invalid magic number 0x1234");
    assert_eq!(e.byte_offset(), Some(96));
    let e = PartitionTable::parse(&b, ReadRule::GenTool).unwrap_err();
    assert_eq!(
        format!("{}", e),
        "Invalid magic bytes (b'4\\x12') for partition definition"
    );
    // The app stops there: 3 partitions and no MD5 entry found.
    assert_eq!(
        PartitionTable::parse(&b, ReadRule::App).unwrap_err(),
        PartitionError::Md5NotFound { index: 3 }
    );
}

#[test]
fn bootloader_misreads_mid_table_md5_like_upstream() {
    // [a, MD5(a), b, FF..]: the bootloader uses entries 0..(3-1) = a and the MD5 entry.
    let a = part("a", 1, 2, 0x9000, 0x4000);
    let b_ = part("b", 0, 0, 0x10000, 0x100000);
    let mut b = [0xFFu8; TABLE_MAX_LEN];
    b[..32].copy_from_slice(&a.to_bytes());
    b[32..34].copy_from_slice(&[0xEB, 0xEB]);
    b[48..64].copy_from_slice(&Md5::digest(a.to_bytes()));
    b[64..96].copy_from_slice(&b_.to_bytes());
    let t = PartitionTable::parse(
        &b,
        ReadRule::Bootloader {
            chip_size: CHIP_4MB,
        },
    )
    .unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t.as_slice()[0], a);
    assert_eq!(
        (t.as_slice()[1].ptype, t.as_slice()[1].subtype),
        (0xFF, 0xFF)
    );
    // gen_esp32part.py reads a and b; the app stops at the MD5 entry with a only.
    assert_eq!(
        PartitionTable::parse(&b, ReadRule::GenTool).unwrap(),
        table(&[a, b_])
    );
    assert_eq!(
        PartitionTable::parse(&b, ReadRule::App).unwrap(),
        table(&[a])
    );
}

#[test]
fn gentool_rejects_partial_entry_and_missing_marker() {
    let b = two_ota_bin();
    let e = PartitionTable::parse(&b[..100], ReadRule::GenTool).unwrap_err();
    assert_eq!(e, PartitionError::LengthNotMultipleOf32 { len: 100 });
    assert_eq!(
        format!("{}", e),
        "Partition table length must be a multiple of 32 bytes"
    );
    assert_eq!(e.byte_offset(), Some(96));
    let e = PartitionTable::parse(&b[..224], ReadRule::GenTool).unwrap_err();
    assert_eq!(e, PartitionError::MissingEndMarker { scanned: 7 });
    // Trailing bytes after the end marker are not looked at (Python returns early).
    let mut longer = b.to_vec();
    longer.extend_from_slice(&[1, 2, 3]);
    assert!(PartitionTable::parse(&longer, ReadRule::GenTool).is_ok());
    assert!(PartitionTable::parse(&[], ReadRule::GenTool).is_err());
}

#[test]
fn gentool_rejects_non_utf8_label() {
    let mut b = two_ota_bin();
    b[12] = 0xC3; // starts a 2-byte sequence, followed by 'v'
    let d = Md5::digest(&b[..6 * 32]);
    b[6 * 32 + 16..6 * 32 + 32].copy_from_slice(&d);
    assert_eq!(
        PartitionTable::parse(&b, ReadRule::GenTool).unwrap_err(),
        PartitionError::LabelNotUtf8 { index: 0 }
    );
    // The device readers do not care.
    assert!(PartitionTable::parse(&b, ReadRule::App).is_ok());
}

fn vectors_dir() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors"
    ));
    if p.is_dir() {
        Some(p)
    } else {
        std::eprintln!("SKIP: ../shared/vectors not found");
        None
    }
}

#[test]
fn esptool_singleapp_vector_under_each_reader() {
    let Some(dir) = vectors_dir() else { return };
    let raw = std::fs::read(dir.join("esptool/partitions_singleapp.bin")).unwrap();
    assert_eq!(raw.len(), 96);
    let expected = [
        ("factory", 0, 0, 0x10000, 0x100000, 0),
        ("rfdata", 1, 1, 0x110000, 0x40000, 0),
        ("wifidata", 1, 2, 0x150000, 0x40000, 0),
    ];
    // gen_esp32part.py: no end marker.
    let e = PartitionTable::parse(&raw, ReadRule::GenTool).unwrap_err();
    assert_eq!(
        format!("{}", e),
        "Partition table is missing an end-of-table marker"
    );
    // Bootloader on the 96 bytes alone: the bytes run out before any terminator.
    let e = PartitionTable::parse(
        &raw,
        ReadRule::Bootloader {
            chip_size: CHIP_4MB,
        },
    )
    .unwrap_err();
    assert_eq!(e, PartitionError::NoTerminator { scanned: 3 });
    // As flashed (sector erased, so 0xFF follows): the bootloader accepts it without MD5...
    let mut flashed = [0xFFu8; TABLE_MAX_LEN];
    flashed[..96].copy_from_slice(&raw);
    let t = PartitionTable::parse(
        &flashed,
        ReadRule::Bootloader {
            chip_size: CHIP_4MB,
        },
    )
    .unwrap();
    assert_eq!(layout(&t), expected);
    assert_eq!(
        layout(&PartitionTable::parse(&flashed, ReadRule::GenTool).unwrap()),
        expected
    );
    // ...and an MD5-enabled app refuses it.
    assert_eq!(
        PartitionTable::parse(&flashed, ReadRule::App).unwrap_err(),
        PartitionError::Md5NotFound { index: 3 }
    );
    // Writing it back without MD5 gives the same 96 bytes.
    assert_eq!(&bin(&t, false)[..96], &raw[..]);
}

#[test]
fn parse_never_panics_on_noise() {
    let mut x: u32 = 0x1234_5678;
    let mut buf = [0u8; 0x1000];
    for round in 0..300 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        if round % 3 == 0 {
            // Plausible entries so the walks go deeper.
            for i in 0..(round % 97) {
                buf[i * 32] = 0xAA;
                buf[i * 32 + 1] = 0x50;
            }
        }
        let len = (x as usize) % buf.len();
        for rule in [
            ReadRule::Bootloader { chip_size: x },
            ReadRule::App,
            ReadRule::GenTool,
        ] {
            let _ = PartitionTable::parse(&buf[..len], rule);
            let _ = PartitionTable::parse(&buf, rule);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing the binary (gen_esp32part.py)

#[test]
fn to_binary_layout_and_limits() {
    let mut t = PartitionTable::new();
    for i in 0..94u32 {
        t.push(part("p", 1, 0x81, 0x10000 + i * 0x1000, 0x1000))
            .unwrap();
    }
    let b = bin(&t, true);
    assert_eq!(&b[94 * 32..94 * 32 + 2], &[0xEB, 0xEB]);
    assert_eq!(
        &b[94 * 32 + 16..94 * 32 + 32],
        &Md5::digest(&b[..94 * 32])[..]
    );
    assert_eq!(&b[95 * 32..], &[0xFF; 32]);
    t.push(part("q", 1, 0x81, 0x80000, 0x1000)).unwrap();
    let mut out = [0u8; TABLE_MAX_LEN];
    let e = t.to_binary(true, &mut out).unwrap_err();
    assert_eq!(
        format!("{}", e),
        "Binary partition table length (3072) longer than max"
    );
    t.to_binary(false, &mut out).unwrap();
    assert_eq!(&out[95 * 32..], &[0xFF; 32]);
    assert!(t.push(part("r", 1, 0x81, 0x90000, 0x1000)).is_err());
}

// ---------------------------------------------------------------------------------------------
// CSV (gen_esp32part.py, gen_esp32part.py `verify()`)

#[test]
fn csv_bom_comments_blank_lines_whitespace_and_columns() {
    let text = "\u{feff}# comment\n\n   \n  nvs ,data,nvs,,0x4000\r\n\t# indented comment\r\nfactory,app,factory,,1M,,extra,columns\nx,data,0x81,,4K";
    let t = csv(text);
    assert_eq!(
        layout(&t),
        [
            ("nvs", 1, 2, 0x9000, 0x4000, 0),
            ("factory", 0, 0, 0x10000, 0x100000, 0),
            ("x", 1, 0x81, 0x110000, 0x1000, 0)
        ]
    );
    // Without stripping, the BOM would end up in the first name (esp-idf < v5.5).
    assert_eq!(t.as_slice()[0].label.as_str(), "nvs");
}

#[test]
fn csv_line_numbers_count_every_line() {
    let e = csv_err(
        "# c\n\nnvs,data,nvs,,0x4000\n\nbad,data,nvs,,zz\n",
        &CsvOptions::default(),
    );
    assert_eq!(e.line, 5);
    assert_eq!(format!("{}", e), "Error at line 5: Invalid field value zz");
    // Python's splitlines also breaks at \x0c and \u2028.
    assert_eq!(
        csv_err("a,data,nvs,,0x4000\x0cb,data,,,", &CsvOptions::default()).line,
        2
    );
}

#[test]
fn csv_integer_forms_and_suffixes() {
    let size = |s: &str| {
        let opts = CsvOptions {
            verify: false,
            ..CsvOptions::default()
        };
        PartitionTable::from_csv(&format!("x,data,0x81,,{}", s), &opts)
            .map(|t| t.as_slice()[0].size)
    };
    for (text, value) in [
        ("4096", 4096),
        ("0x1000", 0x1000),
        ("0X1000", 0x1000),
        ("0o10000", 0o10000),
        ("0b1000000000000", 4096),
        ("4k", 4096),
        ("4K", 4096),
        ("1m", 0x100000),
        ("1M", 0x100000),
        ("1kk", 0x100000),
        ("0x10K", 0x4000),
        ("4_096", 4096),
        ("0x_1000", 0x1000),
        ("+4096", 4096),
        ("0", 0),
        ("00", 0),
        ("0_0", 0),
    ] {
        assert_eq!(
            size(text).map_err(|e| format!("{}", e)),
            Ok(value),
            "{}",
            text
        );
    }
    for (text, shown) in [
        ("010", "010"),
        ("0x", "0x"),
        ("1__0", "1__0"),
        ("_1", "_1"),
        ("1_", "1_"),
        ("k", ""),
        ("0xZZk", "0xZZ"),
        ("1.5M", "1.5"),
        ("- 1", "- 1"),
    ] {
        let e = size(text).unwrap_err();
        assert_eq!(
            format!("{}", e),
            format!("Error at line 1: Invalid field value {}", shown),
            "{}",
            text
        );
    }
    let e = size("99999999999999999999").unwrap_err();
    assert!(matches!(e.kind, CsvErrorKind::ValueTooLarge { .. }));
    assert!(size("1mmmmmmmmmmmmmmmmm").is_err());
    assert_eq!(size("0mmmmmmmmmmmmmmmmmmmmmmmmmm").unwrap(), 0);
}

#[test]
fn csv_negative_size_means_end_address() {
    let t = csv("a,app,factory,0x10000,-2M");
    assert_eq!(t.as_slice()[0].size, 0x1F0000);
    let t = csv("nvs,data,nvs,,-0x10000\nb,data,0x81,,4K");
    assert_eq!(
        layout(&t),
        [
            ("nvs", 1, 2, 0x9000, 0x7000, 0),
            ("b", 1, 0x81, 0x10000, 0x1000, 0)
        ]
    );
    // Python prints negative numbers as 0x-...
    assert_eq!(
        csv_msg("a,data,nvs,0x10000,-0x9000"),
        "Partition a invalid: 'a' partition of type 1 and subtype 2 of this size (0x-7000) must be flagged as \
         'readonly' (the size of read/write NVS has to be at least 0x3000)"
    );
    let opts = CsvOptions {
        verify: false,
        ..CsvOptions::default()
    };
    assert_eq!(
        format!("{}", csv_err("a,data,nvs,-0x1000,0x4000", &opts)),
        "CSV Error at line 1: Partitions overlap. Partition sets offset 0x-1000. But partition table occupies the \
         whole sector 0x8000. Use a free offset 0x9000 or higher."
    );
}

#[test]
fn csv_type_and_subtype_names() {
    let t = csv(
        "a,APP,OTA_3,,1M\nb,Data,NVS_Keys,,4K\nc,data,LittleFS,,64K\nd,app,tee_1,,1M\ne,data,tee_ota,,8K\n\
         f,0x40,0x07,,4K\ng,1,0x99,,4K\nh,data,efuse,,8K\ni,data,undefined,,4K",
    );
    assert_eq!(
        t.iter().map(|p| (p.ptype, p.subtype)).collect::<Vec<_>>(),
        [
            (0, 0x13),
            (1, 4),
            (1, 0x83),
            (0, 0x31),
            (1, 0x90),
            (0x40, 7),
            (1, 0x99),
            (1, 5),
            (1, 6)
        ]
    );
    assert_eq!(
        csv_msg("a,app,factoryx,,1M"),
        "Error at line 1: Value 'factoryx' is not valid. Known keywords: factory, test, ota_0, ota_1, ota_2, ota_3, \
         ota_4, ota_5, ota_6, ota_7, ota_8, ota_9, ota_10, ota_11, ota_12, ota_13, ota_14, ota_15, tee_0, tee_1"
    );
    assert_eq!(
        csv_msg("a,flash,nvs,,1M"),
        "Error at line 1: Value 'flash' is not valid. Known keywords: bootloader, partition_table, app, data"
    );
    // Custom types have no subtype names.
    assert_eq!(
        csv_msg("a,0x40,foo,,1M"),
        "Error at line 1: Invalid field value foo"
    );
    // Suffix letters apply to names as well (upstream quirk): "datak" = 1 * 1024.
    assert_eq!(
        csv_msg("a,datak,ota,,0x2000"),
        "Error at line 1: Invalid field value ota"
    );
    assert_eq!(
        csv_msg("a,data,k,,0x2000"),
        "Error at line 1: Value '' is not valid. Known keywords: ota, phy, nvs, coredump, nvs_keys, efuse, \
         undefined, esphttpd, fat, spiffs, littlefs, tee_ota"
    );
    assert_eq!(
        csv_msg("a,,factory,,1M"),
        "Error at line 1: Field 'type' can't be left empty."
    );
    assert_eq!(
        csv_msg("lonely"),
        "Error at line 1: Field 'type' can't be left empty."
    );
}

#[test]
fn csv_empty_subtype() {
    assert_eq!(
        csv_msg("a,app,,,1M"),
        "Error at line 1: App partition cannot have an empty subtype"
    );
    assert_eq!(
        csv("a,data,,,4K").as_slice()[0].subtype,
        SUBTYPE_DATA_UNDEFINED
    );
    assert_eq!(
        csv("a,0x40,,,4K").as_slice()[0].subtype,
        SUBTYPE_DATA_UNDEFINED
    );
    assert_eq!(
        csv_msg("a,data,nvs,,"),
        "Error at line 1: Size field can't be empty"
    );
    assert_eq!(
        csv_msg("a,data,nvs"),
        "Error at line 1: Size field can't be empty"
    );
}

#[test]
fn csv_implicit_offsets_align_by_type() {
    let t = csv("a,data,0x81,,0x1800\nb,0x40,0,,4K\nc,app,factory,,64K\nd,data,0x82,0x40000,4K\ne,data,0x83,,4K");
    let offsets: Vec<u32> = t.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [0x9000, 0xB000, 0x10000, 0x40000, 0x41000]);
    let opts = CsvOptions {
        table_offset: 0x10000,
        ..CsvOptions::default()
    };
    let t = PartitionTable::from_csv("nvs,data,nvs,,0x4000\nf,app,factory,,1M", &opts).unwrap();
    assert_eq!(
        t.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [0x11000, 0x20000]
    );
}

#[test]
fn csv_flags() {
    let t = csv("a,data,nvs,,0x4000,encrypted:readonly\nb,data,nvs,,0x4000,readonly\nc,data,nvs,,0x4000,::encrypted");
    assert_eq!(t.iter().map(|p| p.flags).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(
        csv_msg("a,data,,,0x1000,encrypted: readonly"),
        "Error at line 1: CSV flag column contains unknown flag ' readonly'"
    );
    assert_eq!(
        csv_msg("a,data,,,0x1000,Encrypted"),
        "Error at line 1: CSV flag column contains unknown flag 'Encrypted'"
    );
}

#[test]
fn csv_unknown_variable_only_at_line_start() {
    let e = csv_err(
        "nvs,data,nvs,,0x4000\n$FLASH_NAME,data,nvs,,0x4000",
        &CsvOptions::default(),
    );
    assert_eq!(e.line, 2);
    assert_eq!(format!("{}", e), "unknown variable 'FLASH_NAME'");
    // Even in what would be a comment or blank line.
    assert!(matches!(
        csv_err("$X", &CsvOptions::default()).kind,
        CsvErrorKind::UnknownVariable { .. }
    ));
    // Elsewhere, gen_esp32part.py (empty environment) leaves the text as it is.
    assert_eq!(
        csv("a$FOO,data,nvs,,0x4000").as_slice()[0].label.as_str(),
        "a$FOO"
    );
    assert_eq!(
        csv(" $FOO,data,nvs,,0x4000").as_slice()[0].label.as_str(),
        "$FOO"
    );
    assert_eq!(
        csv("${FOO},data,nvs,,0x4000").as_slice()[0].label.as_str(),
        "${FOO}"
    );
    assert_eq!(
        csv("$1,data,nvs,,0x4000").as_slice()[0].label.as_str(),
        "$1"
    );
}

#[test]
fn csv_long_labels_are_truncated() {
    let t = csv("a_very_long_partition_name,data,nvs,,0x4000");
    assert_eq!(t.as_slice()[0].label.as_str(), "a_very_long_part");
    assert_eq!(&bin(&t, true)[12..28], b"a_very_long_part");
    // Uniqueness is checked on the full names, as upstream.
    assert_eq!(
        csv("a_very_long_partition_1,data,nvs,,0x4000\na_very_long_partition_2,data,nvs,,0x4000")
            .len(),
        2
    );
}

#[test]
fn csv_parse_time_overlap_errors() {
    let e = csv_err("nvs,data,nvs,0x8000,0x4000", &CsvOptions::default());
    assert_eq!(e.line, 1);
    assert_eq!(
        format!("{}", e),
        "CSV Error at line 1: Partitions overlap. Partition sets offset 0x8000. But partition table occupies the \
         whole sector 0x8000. Use a free offset 0x9000 or higher."
    );
    assert_eq!(
        csv_msg("# x\nnvs,data,nvs,,0x4000\nx,data,nvs,0x9000,0x4000"),
        "CSV Error at line 3: Partitions overlap. Partition sets offset 0x9000. Previous partition ends 0xd000"
    );
    assert_eq!(
        csv_msg("a,data,nvs,0x10000,0x4000\nb,data,nvs,0xF000,0x4000"),
        "CSV Error at line 2: Partitions overlap. Partition sets offset 0xf000. Previous partition ends 0x14000"
    );
}

#[test]
fn csv_verify_rules() {
    let cases: &[(&str, &str)] = &[
        ("a,app,factory,0x11000,0x1000", "Partition a invalid: Offset 0x11000 is not aligned to 0x10000"),
        ("a,data,nvs,0x9800,0x4000", "Partition a invalid: Offset 0x9800 is not aligned to 0x1000"),
        ("a,app,factory,,0x1800", "Partition a invalid: Size 0x1800 is not aligned to 0x1000"),
        (
            "otadata,data,ota,,0x2000,readonly",
            "Partition otadata invalid: 'otadata' partition of type 1 and subtype 0 is always read-write and cannot \
             be read-only",
        ),
        (
            "cd,data,coredump,,64K,readonly",
            "Partition cd invalid: 'cd' partition of type 1 and subtype 3 is always read-write and cannot be read-only",
        ),
        (
            "nvs,data,nvs,,0x2000",
            "Partition nvs invalid: 'nvs' partition of type 1 and subtype 2 of this size (0x2000) must be flagged as \
             'readonly' (the size of read/write NVS has to be at least 0x3000)",
        ),
        ("a,data,nvs,,64K\na,data,nvs,,64K", "Partition names must be unique"),
        ("a,data,ota,,0x1000", "otadata partition must have size = 0x2000"),
        (
            "a,data,ota,,0x2000\nb,data,ota,,0x2000",
            "Found multiple otadata partitions. Only one partition can be defined with type=\"data\"(1) and \
             subtype=\"ota\"(0).",
        ),
        ("a,data,tee_ota,,0x3000", "TEE otadata partition must have size = 0x2000"),
        (
            "a,data,tee_ota,,0x2000\nb,data,tee_ota,,0x2000",
            "Found multiple TEE otadata partitions. Only one partition can be defined with type=\"data\"(1) and \
             subtype=\"tee_ota\"(0x90).",
        ),
        // Sorted by offset before the overlap check
        // (a negative size pulls the parse-time chain back, so only verify() sees this one).
        ("a,data,0x81,0x20000,-0x10000\nb,data,0x81,,0x20000", "Partition at 0x20000 overlaps 0x10000-0x2ffff"),
    ];
    for (text, msg) in cases {
        assert_eq!(csv_msg(text), *msg, "{}", text);
    }
    // Read-only NVS may be small; a verify-free parse takes everything above.
    assert_eq!(
        csv("nvs,data,nvs,,0x1000,readonly").as_slice()[0].flags,
        FLAG_READONLY
    );
    let off = CsvOptions {
        verify: false,
        ..CsvOptions::default()
    };
    for (text, _) in cases.iter().filter(|(t, _)| !t.contains('-')) {
        assert!(PartitionTable::from_csv(text, &off).is_ok(), "{}", text);
    }
    // Line of the partition concerned.
    assert_eq!(
        csv_err(
            "a,data,nvs,,64K\nb,app,factory,,0x1800",
            &CsvOptions::default()
        )
        .line,
        2
    );
}

#[test]
fn csv_primary_rows_and_offset_below_table() {
    let opts = CsvOptions {
        primary_bootloader_offset: Some(0x1000),
        ..CsvOptions::default()
    };
    let t = PartitionTable::from_csv(
        "bl,bootloader,primary,N/A,N/A\npt,partition_table,primary,N/A,N/A\nnvs,data,nvs,,0x4000",
        &opts,
    )
    .unwrap();
    assert_eq!(
        layout(&t),
        [
            ("bl", 2, 0, 0x1000, 0x7000, 0),
            ("pt", 3, 0, 0x8000, 0x1000, 0),
            ("nvs", 1, 2, 0x9000, 0x4000, 0)
        ]
    );
    // gen_esp32part.py v6.1-dev gives this binary the MD5 73aeea3e492477e4b90d04d4f0b018e0.
    assert_eq!(
        hex(&bin(&t, true)[3 * 32 + 16..3 * 32 + 32]),
        "73aeea3e492477e4b90d04d4f0b018e0"
    );
    // Non-primary rows take part in the parse-time chain.
    let e = csv_err("pt2,partition_table,ota,0x7000,", &opts);
    assert!(
        matches!(
            e.kind,
            CsvErrorKind::FirstOverlapsTable { offset: 0x7000, .. }
        ),
        "{:?}",
        e
    );
    let rec = CsvOptions {
        recovery_bootloader_offset: Some(0x4000),
        ..opts
    };
    assert_eq!(
        format!("{}", csv_err("nvs,data,nvs,,0x4000\nbl2,bootloader,recovery,,", &rec)),
        "CSV Error at line 2: Partitions overlap. Partition sets offset 0x4000. Previous partition ends 0xd000"
    );
    // A negative size can pull the chain below the table: verify() catches it.
    let e = csv_err(
        "a,data,0x81,0x10000,-0x5000\nb,data,0x81,,0x1000",
        &CsvOptions::default(),
    );
    assert_eq!(
        (e.line, format!("{}", e)),
        (2, String::from("Partition offset 0x5000 is below 0x9000"))
    );
}

#[test]
fn csv_bootloader_rows_need_offsets() {
    assert_eq!(
        csv_msg("bl,bootloader,primary,N/A,N/A"),
        "Error at line 1: Primary bootloader offset is not defined. Please use --primary-bootloader-offset"
    );
    let opts = CsvOptions {
        primary_bootloader_offset: Some(0x1000),
        ..CsvOptions::default()
    };
    assert_eq!(
        format!("{}", csv_err("r,bootloader,recovery,,", &opts)),
        "Error at line 1: Recovery bootloader offset is not defined. Please use --recovery-bootloader-offset"
    );
    let opts = CsvOptions {
        primary_bootloader_offset: Some(0x8000),
        ..CsvOptions::default()
    };
    assert_eq!(
        format!("{}", csv_err("nvs,data,nvs,,0x4000", &opts)),
        "Unsupported configuration. Primary bootloader must be below partition table. Check \
         --primary-bootloader-offset=0x8000 and --offset=0x8000"
    );
    // Recovery bootloader: forced offset, size = table offset - primary offset.
    let opts = CsvOptions {
        primary_bootloader_offset: Some(0x0),
        recovery_bootloader_offset: Some(0x3F_0000),
        ..CsvOptions::default()
    };
    let t = PartitionTable::from_csv(
        "nvs,data,nvs,,0x4000\nrec,bootloader,recovery,N/A,N/A",
        &opts,
    )
    .unwrap();
    assert_eq!(layout(&t)[1], ("rec", 2, 2, 0x3F_0000, 0x8000, 0));
}

#[test]
fn csv_flash_size_fit() {
    let opts = CsvOptions {
        flash_size: Some(0x10_0000),
        ..CsvOptions::default()
    };
    let e = csv_err("a,app,factory,,0x10000\nb,app,ota_0,,1M", &opts);
    assert_eq!(e.line, 0);
    assert_eq!(
        format!("{}", e),
        "Partitions tables occupies 1.1MB of flash (1179648 bytes) which does not fit in configured flash size 1MB. \
         Change the flash size in menuconfig under the 'Serial Flasher Config' menu."
    );
    let opts = CsvOptions {
        flash_size: Some(0x40_0000),
        ..CsvOptions::default()
    };
    assert!(PartitionTable::from_csv(TWO_OTA, &opts).is_ok());
    // Checked even without verify(), as upstream.
    let opts = CsvOptions {
        flash_size: Some(0x20_0000),
        verify: false,
        ..CsvOptions::default()
    };
    assert!(PartitionTable::from_csv(TWO_OTA, &opts).is_err());
}

#[test]
fn csv_secure_boot_v1_app_size_alignment() {
    let v1 = CsvOptions {
        secure: Some(1),
        ..CsvOptions::default()
    };
    assert_eq!(
        format!("{}", csv_err("a,app,factory,,0x11000", &v1)),
        "Partition a invalid: Size 0x11000 is not aligned to 0x10000"
    );
    let v2 = CsvOptions {
        secure: Some(2),
        ..CsvOptions::default()
    };
    assert!(PartitionTable::from_csv("a,app,factory,,0x11000", &v2).is_ok());
}

#[test]
fn csv_values_that_do_not_fit_the_entry() {
    let off = CsvOptions {
        verify: false,
        ..CsvOptions::default()
    };
    let e = csv_err("a,0x100,0,,4K", &off);
    assert_eq!(
        e.kind,
        CsvErrorKind::ValueOutOfRange {
            name: Snippet::new("a"),
            field: "type",
            value: 0x100
        }
    );
    assert!(matches!(
        csv_err("a,data,nvsk,,64K", &off).kind,
        CsvErrorKind::ValueOutOfRange {
            field: "subtype",
            ..
        }
    ));
    assert!(matches!(
        csv_err("a,data,nvs,,4096M", &off).kind,
        CsvErrorKind::ValueOutOfRange { field: "size", .. }
    ));
}

#[test]
fn csv_too_many_rows() {
    let mut text = String::new();
    for i in 0..96 {
        text.push_str(&format!("p{},data,0x81,,4K\n", i));
    }
    let e = csv_err(&text, &CsvOptions::default());
    assert_eq!(
        e.kind,
        CsvErrorKind::TooManyPartitions {
            count: 96,
            max: MAX_PARTITIONS
        }
    );
    assert_eq!(e.line, 96);
    // 95 rows parse, but only 94 fit the binary with its MD5 entry.
    let t = csv(&text[..text.rfind("p95").unwrap()]);
    assert_eq!(t.len(), 95);
    let mut out = [0u8; TABLE_MAX_LEN];
    assert!(t.to_binary(true, &mut out).is_err());
    assert!(t.to_binary(false, &mut out).is_ok());
}

#[test]
fn csv_parse_never_panics_on_noise() {
    let alphabet: &[&str] = &[
        ",",
        ",",
        ",",
        "\n",
        "\r",
        " ",
        "#",
        "$",
        "$A",
        "-",
        "0x",
        "0o",
        "0b",
        "_",
        "k",
        "M",
        "1",
        "9",
        "0",
        "f",
        "app",
        "data",
        "nvs",
        "ota",
        "ota_1",
        "bootloader",
        "partition_table",
        "primary",
        "recovery",
        ":",
        "encrypted",
        "readonly",
        "\u{feff}",
        "é",
        "\u{2028}",
        "\x0c",
        "0xffffffffffffffffff",
        "-0x8000",
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..3000 {
        let mut s = String::new();
        for _ in 0..(x % 60) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        for opts in [
            CsvOptions::default(),
            CsvOptions {
                verify: false,
                primary_bootloader_offset: Some(0x1000),
                recovery_bootloader_offset: Some(0),
                flash_size: Some(0),
                ..CsvOptions::default()
            },
        ] {
            if let Err(e) = PartitionTable::from_csv(&s, &opts) {
                let _ = format!("{}", e);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CSV output and round trips

#[test]
fn write_csv_matches_gen_esp32part_to_csv() {
    // Output of `gen_esp32part.py partitions_two_ota_encr_nvs.bin` (v6.1-dev).
    let expected = "# ESP-IDF Partition Table
# Name, Type, SubType, Offset, Size, Flags
nvs,data,nvs,0x9000,16K,
otadata,data,ota,0xd000,8K,
phy_init,data,phy,0xf000,4K,
factory,app,factory,0x10000,1M,
ota_0,app,ota_0,0x110000,1M,
ota_1,app,ota_1,0x210000,1M,
nvs_key,data,nvs_keys,0x310000,4K,encrypted
";
    assert_eq!(to_csv(&csv(TWO_OTA_ENCR_NVS)), expected);
}

#[test]
fn write_csv_numbers_names_and_flags() {
    let mut t = table(&[
        part("custom", 0x40, 0x07, 0x20000, 0x1234),
        part("tone", 1, 0xFF, 0x30000, 0x1A9000),
        part("bl", 2, 1, 0x1000, 0x7000),
        part("pt", 3, 0, 0x8000, 0x1000),
        part("zero", 1, 0x83, 0x40000, 0),
    ]);
    let mut p = part("flags", 1, 2, 0x50000, 0x3000);
    p.flags = FLAG_ENCRYPTED | FLAG_READONLY | 0x100;
    t.push(p).unwrap();
    let expected = "# ESP-IDF Partition Table
# Name, Type, SubType, Offset, Size, Flags
custom,64,7,0x20000,0x1234,
tone,data,255,0x30000,1700K,
bl,bootloader,ota,0x1000,28K,
pt,partition_table,primary,0x8000,4K,
zero,data,littlefs,0x40000,0M,
flags,data,nvs,0x50000,12K,encrypted:readonly
";
    assert_eq!(to_csv(&t), expected);
}

#[test]
fn binary_csv_binary_is_identity() {
    for text in [
        SINGLEAPP,
        TWO_OTA,
        TWO_OTA_LARGE,
        TWO_OTA_ENCR_NVS,
        ADF_EXAMPLE,
    ] {
        let b1 = bin(&csv(text), true);
        let t1 = PartitionTable::parse(&b1, ReadRule::GenTool).unwrap();
        let t2 = csv(&to_csv(&t1));
        assert_eq!(t2, t1);
        assert_eq!(bin(&t2, true), b1);
    }
    // Also for tables verify() would reject (custom types, odd sizes, readonly, 16-byte label).
    let mut t = table(&[
        part("sixteen_bytes_ab", 0x40, 0x07, 0x9000, 0x1234),
        part("x", 1, 0x99, 0xB000, 0x400),
        part("", 0, 0x20, 0x10000, 0x100000),
    ]);
    let mut p = part("ro", 1, 2, 0x110000, 0x1000);
    p.flags = FLAG_READONLY;
    t.push(p).unwrap();
    let off = CsvOptions {
        verify: false,
        ..CsvOptions::default()
    };
    let b1 = bin(&t, true);
    let back = PartitionTable::from_csv(&to_csv(&t), &off).map_err(|e| format!("{}", e));
    assert_eq!(back.map(|t| bin(&t, true)), Ok(b1));
}

#[test]
fn type_and_subtype_names() {
    assert_eq!(type_name(0), Some("app"));
    assert_eq!(type_name(1), Some("data"));
    assert_eq!(type_name(2), Some("bootloader"));
    assert_eq!(type_name(3), Some("partition_table"));
    assert_eq!(type_name(0x40), None);
    assert_eq!(subtype_name(0, 0x1F), Some("ota_15"));
    assert_eq!(subtype_name(0, 0x30), Some("tee_0"));
    assert_eq!(subtype_name(0, 0x21), None);
    assert_eq!(subtype_name(1, 0x90), Some("tee_ota"));
    assert_eq!(subtype_name(1, 0xFF), None);
    assert_eq!(subtype_name(2, 2), Some("recovery"));
    assert_eq!(subtype_name(3, 1), Some("ota"));
    assert_eq!(subtype_name(0x40, 0), None);
}

#[test]
fn verify_accepts_a_table_read_back_from_binary() {
    let t = PartitionTable::parse(&two_ota_bin(), ReadRule::GenTool).unwrap();
    assert_eq!(t.verify(&CsvOptions::default()), Ok(()));
}

#[test]
fn verify_refuses_overlapping_binary_entries_like_gen_esp32part() {
    let t = table(&[
        part("nvs", TYPE_DATA, SUBTYPE_DATA_NVS, 0x9000, 0x6000),
        part("factory", TYPE_APP, SUBTYPE_APP_FACTORY, 0x10000, 0x100000),
        part("ota_0", TYPE_APP, SUBTYPE_APP_OTA_0, 0x100000, 0x100000),
    ]);
    let e = t.verify(&CsvOptions::default()).unwrap_err();
    assert_eq!(e.line, 3, "entry index + 1");
    assert_eq!(
        e.to_string(),
        "Partition at 0x100000 overlaps 0x10000-0x10ffff"
    );
}

#[test]
fn verify_refuses_duplicate_labels_and_bad_otadata_size() {
    let dup = table(&[
        part("a", TYPE_DATA, SUBTYPE_DATA_PHY, 0x9000, 0x1000),
        part("a", TYPE_DATA, SUBTYPE_DATA_PHY, 0xA000, 0x1000),
    ]);
    assert_eq!(
        dup.verify(&CsvOptions::default()).unwrap_err().to_string(),
        "Partition names must be unique"
    );
    let od = table(&[part("otadata", TYPE_DATA, SUBTYPE_DATA_OTA, 0x9000, 0x1000)]);
    assert_eq!(
        od.verify(&CsvOptions::default()).unwrap_err().to_string(),
        "otadata partition must have size = 0x2000"
    );
}
