//! Tests of the tone module: formats, reader, packer round trips, the flash checks, the upgrade
//! policy and the streaming check.

extern crate std;

use super::*;
use crate::flash::FlashError;
use crate::partition::Partition;
use crate::partition::{Label, TYPE_DATA};
use embedded_storage::nor_flash::NorFlash;
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

// ---- fixtures -------------------------------------------------------------------------

const VEC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors/tone");

/// The vectors of ../shared/vectors/README.md and adf-ota-service.md §8.5.
struct Vector {
    name: &'static str,
    size: usize,
    format: u32,
    files: u16,
    version: Option<&'static str>,
    crc: Option<u32>,
}

const VECTORS: &[Vector] = &[
    Vector {
        name: "flash_tone.bin",
        size: 434_756,
        format: 0,
        files: 21,
        version: None,
        crc: None,
    },
    Vector {
        name: "audio_flash_tone_v1.0.bin",
        size: 153_882,
        format: 1,
        files: 7,
        version: Some("v1.0"),
        crc: Some(0x16BB_6254),
    },
    Vector {
        name: "audio_mixer_tone_v1.0.bin",
        size: 54_398,
        format: 1,
        files: 2,
        version: Some("v1.0"),
        crc: Some(0xBBAC_E4E4),
    },
    Vector {
        name: "korvo_du1906_tone_v1.2.0.bin",
        size: 107_950,
        format: 1,
        files: 13,
        version: Some("v1.2.0"),
        crc: Some(0x232B_21B1),
    },
    Vector {
        name: "wwe_tone_v1.1.1.bin",
        size: 15_310,
        format: 1,
        files: 2,
        version: Some("v1.1.1"),
        crc: Some(0x406E_DE70),
    },
    Vector {
        name: "flash_tone_v0.5.0.bin",
        size: 83_082,
        format: 1,
        files: 1,
        version: Some("0.5.0"),
        crc: Some(0xCF51_1F9E),
    },
];

/// `None` (after printing SKIP) when the vectors folder is absent; a missing file inside
/// an existing folder is a failure.
fn vector(name: &str) -> Option<Vec<u8>> {
    if !std::path::Path::new(VEC_DIR).is_dir() {
        std::eprintln!("SKIP: ../shared/vectors not found");
        return None;
    }
    Some(std::fs::read(format!("{}/{}", VEC_DIR, name)).expect("vector file missing"))
}

use crate::testutil::RamFlash;

const PART_OFFSET: u32 = 0x10000;

/// A flash with a data partition at 0x10000 of `part_size` bytes, erased, then `bin` written
/// at its start (through the aligned layer).
fn flash_with<const RS: usize>(bin: &[u8], part_size: u32) -> (RamFlash<RS>, Partition) {
    let mut f = RamFlash::<RS>::new((PART_OFFSET + part_size) as usize);
    f.erase(PART_OFFSET, PART_OFFSET + part_size).unwrap();
    let n = bin.len().min(part_size as usize);
    crate::flash::write(&mut f, PART_OFFSET, &bin[..n]).unwrap();
    let part = Partition {
        ptype: TYPE_DATA,
        subtype: 0x27,
        offset: PART_OFFSET,
        size: part_size,
        label: Label::new("flash_tone"),
        flags: 0,
    };
    (f, part)
}

fn part_size_for(len: usize) -> u32 {
    (len as u32).div_ceil(0x1000) * 0x1000 + 0x1000
}

fn tone_err(e: crate::Error) -> ToneError {
    match e {
        crate::Error::Tone(t) => t,
        other => panic!("expected a tone error, got {:?}", other),
    }
}

/// Unpack (names `NN.mp3`/`NN.wav` by type) and re-pack with the descriptor's strings.
fn repack(bin: &ToneBin<'_>) -> Vec<u8> {
    let names: Vec<String> = bin
        .files()
        .enumerate()
        .map(|(i, (info, _))| format!("{:02}.{}", i, info.extension().unwrap()))
        .collect();
    let entries: Vec<ToneEntry<'_>> = bin
        .files()
        .zip(&names)
        .map(|((_, data), name)| ToneEntry { name, data })
        .collect();
    let d = bin.desc();
    let (v, t, dt) = match &d {
        Some(d) => (d.version_str(), d.time_str(), d.date_str()),
        None => ("", "", ""),
    };
    let mut out = Vec::new();
    let n = pack(
        &entries,
        bin.header().format,
        v,
        t,
        dt,
        &mut |b: &[u8]| out.extend_from_slice(b),
    )
    .unwrap();
    assert_eq!(n as usize, out.len());
    out
}

fn pack_vec(entries: &[ToneEntry<'_>], format: u32, version: &str) -> Vec<u8> {
    let mut out = Vec::new();
    pack(
        entries,
        format,
        version,
        "12:00:00",
        "2024-01-01",
        &mut |b: &[u8]| out.extend_from_slice(b),
    )
    .unwrap();
    out
}

/// A small format-1 bin made by our packer: two files with odd lengths (padding).
fn small_f1(version: &str) -> Vec<u8> {
    let a = [1u8, 2, 3, 4, 5];
    let b = [9u8; 10];
    pack_vec(
        &[
            ToneEntry {
                name: "a.mp3",
                data: &a,
            },
            ToneEntry {
                name: "b.WAV",
                data: &b,
            },
        ],
        1,
        version,
    )
}

// ---- constants, CRC, version parser ---------------------------------------------------

#[test]
fn crc_is_zlib_crc32() {
    assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
}

#[test]
fn desc_version_without_nul_runs_into_project_name_like_c() {
    let mut d = ToneDesc::new("v1.2.3", "", "");
    d.version = *b"v0000000000000000000000000001.23";
    // No NUL in version and a non-empty project name: strlen > 32 → −1.
    assert_eq!(d.adf_version_number(), None);
    d.version = *b"v00000000000000000000000001.2.03";
    assert_eq!(d.adf_version_number(), None);
    d.project_name = [0; 32];
    assert_eq!(d.adf_version_number(), Some(0x010203));
}

// ---- types round trip -----------------------------------------------------------------

#[test]
fn header_entry_desc_round_trip_byte_exact() {
    let Some(b) = vector("korvo_du1906_tone_v1.2.0.bin") else {
        return;
    };
    let h = ToneHeader::parse(&b).unwrap();
    assert_eq!(
        h,
        ToneHeader {
            header_tag: 0x2053,
            total_num: 13,
            format: 1
        }
    );
    assert_eq!(h.to_bytes(), b[..8]);
    let d = ToneDesc::parse(&b[8..]).unwrap();
    assert_eq!(d.to_bytes(), b[8..264]);
    assert_eq!(d.magic_word, TONE_DESC_MAGIC);
    assert_eq!(d.project_name_str(), "ESP_TONE_BIN");
    assert_eq!(d.date_str(), "2020-07-30");
    assert_eq!(d.version_str(), "v1.2.0");
    for i in 0..13 {
        let e = &b[264 + 64 * i..264 + 64 * (i + 1)];
        let info = ToneFileInfo::parse(e).unwrap();
        assert_eq!(info.to_bytes(), e);
        assert_eq!(info.song_index as usize, i);
    }
    // Non-zero reserved bytes survive too.
    let mut raw = [0u8; 256];
    for (i, x) in raw.iter_mut().enumerate() {
        *x = i as u8;
    }
    assert_eq!(ToneDesc::parse(&raw).unwrap().to_bytes(), raw);
    let mut e = [0u8; 64];
    for (i, x) in e.iter_mut().enumerate() {
        *x = 255 - i as u8;
    }
    assert_eq!(ToneFileInfo::parse(&e).unwrap().to_bytes(), e);
}

#[test]
fn layout_parsers_report_truncation() {
    assert!(matches!(
        ToneHeader::parse(&[0x53, 0x20, 1]),
        Err(ToneError::Truncated {
            need: 8,
            have: 3,
            ..
        })
    ));
    assert!(matches!(
        ToneFileInfo::parse(&[0u8; 63]),
        Err(ToneError::Truncated { .. })
    ));
    assert!(matches!(
        ToneDesc::parse(&[0u8; 255]),
        Err(ToneError::Truncated { .. })
    ));
}

// ---- whole-bin reader -----------------------------------------------------------------

#[test]
fn vectors_parse_with_documented_shape_and_crc() {
    for v in VECTORS {
        let Some(b) = vector(v.name) else { return };
        assert_eq!(b.len(), v.size, "{}", v.name);
        let bin = ToneBin::parse(&b).unwrap_or_else(|e| panic!("{}: {}", v.name, e));
        assert_eq!(bin.header().format, v.format, "{}", v.name);
        assert_eq!(bin.header().total_num, v.files, "{}", v.name);
        assert_eq!(bin.files().count(), v.files as usize, "{}", v.name);
        assert_eq!(bin.total_size() as usize, v.size, "{}", v.name);
        assert_eq!(
            bin.desc().map(|d| d.version_str().to_string()).as_deref(),
            v.version,
            "{}",
            v.name
        );
        match v.crc {
            Some(c) => assert_eq!(bin.crc(), Some((c, c)), "{}", v.name),
            None => assert_eq!(bin.crc(), None),
        }
        let types: Vec<u8> = bin.files().map(|(i, _)| i.file_type).collect();
        let want_type = if v.name == "flash_tone_v0.5.0.bin" {
            1
        } else {
            0
        };
        assert!(
            types.iter().all(|&t| t == want_type),
            "{}: {:?}",
            v.name,
            types
        );
        for (info, data) in bin.files() {
            assert_eq!(data.len(), info.song_len as usize);
            assert_eq!(
                data.as_ptr() as usize - b.as_ptr() as usize,
                info.song_adr as usize
            );
        }
    }
    let Some(b) = vector("flash_tone.bin") else {
        return;
    };
    let first = ToneBin::parse(&b).unwrap().files().next().unwrap().0;
    assert_eq!(first.song_adr, 1352); // 8 + 64 × 21 (§8.5)
}

#[test]
fn vectors_unpack_and_repack_byte_identical() {
    for v in VECTORS {
        let Some(b) = vector(v.name) else { return };
        let bin = ToneBin::parse(&b).unwrap();
        let out = repack(&bin);
        assert_eq!(out.len(), b.len(), "{}", v.name);
        assert!(
            out == b,
            "{}: re-pack differs at byte {:?}",
            v.name,
            out.iter().zip(&b).position(|(x, y)| x != y)
        );
    }
}

#[test]
fn parse_rejects_bad_header_tag_and_format() {
    let mut b = small_f1("v1.0.0");
    b[0] = 0x54;
    assert_eq!(
        ToneBin::parse(&b),
        Err(ToneError::BadHeaderTag { found: 0x2054 })
    );
    let msg = ToneError::BadHeaderTag { found: 0x2054 }.to_string();
    assert_eq!(
        msg,
        "Not flash tone partition: header tag 0x2054 at offset 0 (expected 0x2053)"
    );
    let mut b = small_f1("v1.0.0");
    b[4] = 2;
    assert_eq!(
        ToneBin::parse(&b),
        Err(ToneError::UnsupportedFormat { format: 2 })
    );
}

#[test]
fn parse_rejects_bad_desc_magic() {
    let mut b = small_f1("v1.0.0");
    b[8] ^= 1;
    assert!(matches!(
        ToneBin::parse(&b),
        Err(ToneError::BadDescMagic { found: 0xF55F_9877 })
    ));
}

#[test]
fn parse_rejects_table_entry_faults() {
    let good = small_f1("v1.0.0");
    let mut b = good.clone();
    b[264 + 64] = 0x29; // entry 1 tag
    assert_eq!(
        ToneBin::parse(&b),
        Err(ToneError::BadFileTag {
            index: 1,
            offset: 328,
            found: 0x29
        })
    );
    let mut b = good.clone();
    b[264 + 1] = 5; // entry 0 index
    assert_eq!(
        ToneBin::parse(&b),
        Err(ToneError::BadSongIndex {
            index: 0,
            offset: 264,
            found: 5
        })
    );
    let mut b = good.clone();
    b[264 + 64 + 4] += 4; // entry 1 song_adr
    assert!(matches!(
        ToneBin::parse(&b),
        Err(ToneError::NotContiguous { index: 1, .. })
    ));
    let mut b = good.clone();
    b[264 + 64 + 8..264 + 64 + 12].copy_from_slice(&1000u32.to_le_bytes()); // entry 1 len
    assert!(matches!(
        ToneBin::parse(&b),
        Err(ToneError::FileOutside { index: 1, .. })
    ));
    let mut b = good.clone();
    b[2..4].copy_from_slice(&200u16.to_le_bytes()); // table far beyond the file
    assert!(matches!(
        ToneBin::parse(&b),
        Err(ToneError::TableOutside { .. })
    ));
}

#[test]
fn parse_rejects_bad_padding() {
    let mut b = small_f1("v1.0.0");
    let data = 264 + 128;
    b[data + 5] = 0x00; // first pad byte after the 5-byte file 0
    assert_eq!(
        ToneBin::parse(&b),
        Err(ToneError::BadPadding {
            index: 0,
            offset: data as u32 + 5,
            found: 0
        })
    );
}

#[test]
fn parse_rejects_tail_crc_trailing_and_truncation() {
    let good = small_f1("v1.0.0");
    let n = good.len();
    let mut b = good.clone();
    b[n - 1] = 0xFF;
    assert_eq!(
        ToneBin::parse(&b),
        Err(ToneError::TailMismatch {
            offset: n as u32 - 2,
            found: 0xFFAC
        })
    );
    let mut b = good.clone();
    b[264 + 128] ^= 0x80; // a data byte
    let err = ToneBin::parse(&b).unwrap_err();
    assert!(matches!(err, ToneError::CrcMismatch { offset, .. } if offset == n as u32 - 6));
    assert!(err
        .to_string()
        .starts_with("tone bin CRC mismatch: stored 0x"));
    let lenient = ToneBin::parse_with(
        &b,
        ParseOptions {
            allow_trailing: false,
            check_crc: false,
        },
    )
    .unwrap();
    let (stored, computed) = lenient.crc().unwrap();
    assert_ne!(stored, computed);
    let mut b = good.clone();
    b.extend_from_slice(&[0xFF; 10]);
    assert_eq!(
        ToneBin::parse(&b),
        Err(ToneError::TrailingBytes {
            end: n as u32,
            size: n as u32 + 10
        })
    );
    let dump = ToneBin::parse_with(
        &b,
        ParseOptions {
            allow_trailing: true,
            check_crc: true,
        },
    )
    .unwrap();
    assert_eq!(dump.total_size() as usize, n);
    assert_eq!(dump.as_bytes(), &good[..]);
    assert!(matches!(
        ToneBin::parse(&good[..n - 1]),
        Err(ToneError::Truncated { .. })
    ));
}

#[test]
fn parse_never_panics_on_truncated_or_mutated_input() {
    let good = small_f1("v1.2.3");
    for n in 0..good.len() {
        assert!(ToneBin::parse(&good[..n]).is_err(), "prefix {}", n);
        let _ = ToneBin::parse_with(
            &good[..n],
            ParseOptions {
                allow_trailing: true,
                check_crc: false,
            },
        );
    }
    let mut seed = 0x1234_5678u32;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for _ in 0..5000 {
        let mut b = good.clone();
        for _ in 0..1 + rnd() % 4 {
            let i = rnd() as usize % b.len();
            b[i] = rnd() as u8;
        }
        let _ = ToneBin::parse(&b);
        if let Ok(bin) = ToneBin::parse_with(
            &b,
            ParseOptions {
                allow_trailing: true,
                check_crc: false,
            },
        ) {
            for (info, data) in bin.files() {
                assert_eq!(data.len(), info.song_len as usize);
            }
        }
        let (mut f, part) = flash_with::<4>(&b, 0x1000);
        let _ = tone_partition_init(&mut f, &part);
        let _ = tone_partition_check(&mut f, &part);
    }
}

// ---- on flash -------------------------------------------------------------------------

#[test]
fn partition_init_flash_tone_gives_format0_total21() {
    let Some(b) = vector("flash_tone.bin") else {
        return;
    };
    let (mut f, part) = flash_with::<4>(&b, part_size_for(b.len()));
    let info = tone_partition_init(&mut f, &part).unwrap();
    assert_eq!(
        info.header,
        ToneHeader {
            header_tag: 0x2053,
            total_num: 21,
            format: 0
        }
    );
    assert_eq!(info.desc, None);
    let (mut f1, part1) = flash_with::<1>(&b, part_size_for(b.len()));
    assert_eq!(tone_partition_init(&mut f1, &part1).unwrap(), info);
    assert_eq!(tone_partition_check(&mut f, &part).unwrap(), info);
}

#[test]
fn partition_init_and_check_accept_format1_vectors() {
    for v in VECTORS.iter().filter(|v| v.format == 1) {
        let Some(b) = vector(v.name) else { return };
        let (mut f, part) = flash_with::<4>(&b, part_size_for(b.len()));
        let info =
            tone_partition_init(&mut f, &part).unwrap_or_else(|e| panic!("{}: {}", v.name, e));
        assert_eq!(info.header.total_num, v.files);
        assert_eq!(info.desc.unwrap().version_str(), v.version.unwrap());
        assert_eq!(
            tone_partition_check(&mut f, &part).unwrap(),
            info,
            "{}",
            v.name
        );
    }
}

#[test]
fn partition_init_rejects_torn_format1_tail() {
    let Some(b) = vector("wwe_tone_v1.1.1.bin") else {
        return;
    };
    let n = b.len();
    // The last two bytes (the tail) never made it to flash: erased 0xFF there.
    let (mut f, part) = flash_with::<4>(&b[..n - 2], part_size_for(n));
    let err = tone_err(tone_partition_init(&mut f, &part).unwrap_err());
    assert_eq!(
        err,
        ToneError::TailMismatch {
            offset: n as u32 - 2,
            found: 0xFFFF
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "Flash tone init failed at tail check: found 0xffff at 0x{:x} (expected 0xdfac)",
            n - 2
        )
    );
    // Only header + desc + table written (interrupted right after need_upgrade + a bit).
    let (mut f, part) = flash_with::<4>(&b[..264 + 64 * 2], part_size_for(n));
    assert!(matches!(
        tone_err(tone_partition_init(&mut f, &part).unwrap_err()),
        ToneError::TailMismatch { .. }
    ));
}

#[test]
fn partition_init_rejects_erased_partition() {
    let (mut f, part) = flash_with::<4>(&[], 0x2000);
    assert_eq!(
        tone_err(tone_partition_init(&mut f, &part).unwrap_err()),
        ToneError::BadHeaderTag { found: 0xFFFF }
    );
}

#[test]
fn partition_init_format1_without_files_fails_at_tail_address_4() {
    let b = pack_vec(&[], 1, "v1.0.0");
    assert_eq!(b.len(), 264 + 6);
    assert!(ToneBin::parse(&b).is_ok()); // the generator can make it...
    let (mut f, part) = flash_with::<4>(&b, 0x1000);
    // ...but ADF's init reads the tail at 4 (the format field: 0x0001).
    assert_eq!(
        tone_err(tone_partition_init(&mut f, &part).unwrap_err()),
        ToneError::TailMismatch {
            offset: 4,
            found: 1
        }
    );
    assert!(tone_partition_check(&mut f, &part).is_ok());
}

#[test]
fn partition_init_uses_zeroed_entry_when_last_tag_is_wrong() {
    let mut b = small_f1("v1.0.0");
    b[264 + 64] = 0; // last entry's tag
    let (mut f, part) = flash_with::<4>(&b, 0x1000);
    assert_eq!(
        tone_err(tone_partition_init(&mut f, &part).unwrap_err()),
        ToneError::TailMismatch {
            offset: 4,
            found: 1
        }
    );
}

#[test]
fn partition_init_reports_tail_outside_partition() {
    let mut b = small_f1("v1.0.0");
    b[264 + 64 + 4..264 + 64 + 8].copy_from_slice(&0x8000u32.to_le_bytes()); // last song_adr
    let (mut f, part) = flash_with::<4>(&b, 0x1000);
    assert!(matches!(
        tone_err(tone_partition_init(&mut f, &part).unwrap_err()),
        ToneError::TailOutside { size: 0x1000, .. }
    ));
}

#[test]
fn partition_init_accepts_other_formats_unchecked_but_check_rejects() {
    let h = ToneHeader {
        header_tag: TONE_HEADER_TAG,
        total_num: 3,
        format: 7,
    };
    let (mut f, part) = flash_with::<4>(&h.to_bytes(), 0x1000);
    assert_eq!(
        tone_partition_init(&mut f, &part).unwrap(),
        ToneInfo {
            header: h,
            desc: None
        }
    );
    assert_eq!(
        tone_err(tone_partition_check(&mut f, &part).unwrap_err()),
        ToneError::UnsupportedFormat { format: 7 }
    );
}

#[test]
fn check_catches_flipped_data_byte_that_init_misses() {
    let Some(mut b) = vector("korvo_du1906_tone_v1.2.0.bin") else {
        return;
    };
    b[50_000] ^= 0x01;
    let (mut f, part) = flash_with::<4>(&b, part_size_for(b.len()));
    assert!(tone_partition_init(&mut f, &part).is_ok());
    let err = tone_err(tone_partition_check(&mut f, &part).unwrap_err());
    assert!(
        matches!(err, ToneError::CrcMismatch { stored: 0x232B_21B1, computed, offset } if computed != 0x232B_21B1 && offset == b.len() as u32 - 6),
        "{:?}",
        err
    );
}

#[test]
fn check_catches_bad_entry_tag_that_init_misses() {
    let Some(mut b) = vector("korvo_du1906_tone_v1.2.0.bin") else {
        return;
    };
    b[264 + 64 * 3] = 0xFF; // entry 3 (not the last) half-erased
    let (mut f, part) = flash_with::<4>(&b, part_size_for(b.len()));
    assert!(tone_partition_init(&mut f, &part).is_ok());
    assert_eq!(
        tone_err(tone_partition_check(&mut f, &part).unwrap_err()),
        ToneError::BadFileTag {
            index: 3,
            offset: 264 + 64 * 3,
            found: 0xFF
        }
    );
}

#[test]
fn check_format0_requires_last_file_inside_partition() {
    let Some(b) = vector("flash_tone.bin") else {
        return;
    };
    // A partition too small for the bin (434,756 > 0x6A000 = 434,176).
    let (mut f, part) = flash_with::<4>(&b, 0x6A000);
    assert!(tone_partition_init(&mut f, &part).is_ok());
    assert!(matches!(
        tone_err(tone_partition_check(&mut f, &part).unwrap_err()),
        ToneError::FileOutside {
            index: 20,
            size: 0x6A000,
            ..
        }
    ));
}

#[test]
fn flash_driver_errors_propagate_with_offset() {
    let b = small_f1("v1.0.0");
    let (mut f, mut part) = flash_with::<4>(&b, 0x1000);
    part.offset = 0x100_0000; // beyond the chip
    let err = tone_partition_init(&mut f, &part).unwrap_err();
    assert!(
        matches!(
            err,
            crate::Error::Flash(FlashError {
                offset: 0x100_0000,
                ..
            })
        ),
        "{:?}",
        err
    );
}

// ---- upgrade policy -------------------------------------------------------------------

fn hdr(format: u32) -> ToneHeader {
    ToneHeader {
        header_tag: TONE_HEADER_TAG,
        total_num: 1,
        format,
    }
}

fn desc(version: &str, name: &str) -> ToneDesc {
    let mut d = ToneDesc::new(version, "10:00:00", "2024-01-01");
    d.project_name = fixed(name.as_bytes());
    d
}

fn cur(format: u32, version: &str) -> ToneInfo {
    ToneInfo {
        header: hdr(format),
        desc: (format == 1).then(|| desc(version, "ESP_TONE_BIN")),
    }
}

const BOTH: [bool; 2] = [false, true];

#[test]
fn decide_row1_invalid_current_writes_whole_stream_unchecked() {
    let bad = ToneHeader {
        header_tag: 0xFFFF,
        total_num: 0,
        format: 9,
    };
    for strict in BOTH {
        assert_eq!(
            decide_upgrade(None, &bad, None, strict),
            ToneDecision::WriteAll
        );
        assert_eq!(
            decide_upgrade(None, &hdr(0), None, strict),
            ToneDecision::WriteAll
        );
        let d = desc("junk", "NOPE");
        assert_eq!(
            decide_upgrade(None, &hdr(1), Some(&d), strict),
            ToneDecision::WriteAll
        );
    }
}

#[test]
fn decide_rejects_incoming_without_tone_tag() {
    let bad = ToneHeader {
        header_tag: 0x2054,
        total_num: 1,
        format: 1,
    };
    for strict in BOTH {
        for c in [cur(0, ""), cur(1, "v1.0.0")] {
            let d = decide_upgrade(Some(&c), &bad, None, strict);
            assert_eq!(d, ToneDecision::Reject(ToneReject::NotToneBin));
        }
    }
    assert_eq!(ToneReject::NotToneBin.adf_reason(), -1);
}

#[test]
fn decide_row2_incoming_format0_always_written_even_downgrade() {
    for strict in BOTH {
        for c in [cur(0, ""), cur(1, "v9.9.9"), cur(5, "")] {
            assert_eq!(
                decide_upgrade(Some(&c), &hdr(0), None, strict),
                ToneDecision::Write { need_desc: false }
            );
        }
    }
}

#[test]
fn decide_row3_current_not_format1_replaced_without_version_compare() {
    let inc = desc("v1.0", "ESP_TONE_BIN"); // unparseable version
    for strict in BOTH {
        for c in [cur(0, ""), cur(2, "")] {
            for f in [1, 2] {
                let d = decide_upgrade(Some(&c), &hdr(f), Some(&inc), strict);
                assert_eq!(d, ToneDecision::Write { need_desc: true });
            }
            let mut m = inc;
            m.magic_word = 0xABCD_5432;
            let d = decide_upgrade(Some(&c), &hdr(1), Some(&m), strict);
            assert_eq!(
                d,
                ToneDecision::Reject(ToneReject::BadMagic { found: 0xABCD_5432 })
            );
            let long = desc("v1.0", "ESP_TONE_BIN_X");
            let d = decide_upgrade(Some(&c), &hdr(1), Some(&long), strict);
            assert_eq!(d, ToneDecision::Reject(ToneReject::BadProjectName));
            let d = decide_upgrade(Some(&c), &hdr(1), None, strict);
            assert_eq!(d, ToneDecision::Reject(ToneReject::MissingIncomingDesc));
        }
    }
}

#[test]
fn decide_project_name_substring_quirk_only_when_not_strict() {
    let c = cur(0, "");
    for name in ["TONE", "", "ESP", "BIN", "_TONE_"] {
        let d = desc("v1.0.0", name);
        assert_eq!(
            decide_upgrade(Some(&c), &hdr(1), Some(&d), false),
            ToneDecision::Write { need_desc: true },
            "{:?}",
            name
        );
        assert_eq!(
            decide_upgrade(Some(&c), &hdr(1), Some(&d), true),
            ToneDecision::Reject(ToneReject::BadProjectName)
        );
    }
    let mut full = desc("v1.0.0", "");
    full.project_name = [b'E'; 32]; // no NUL: C string runs on, never a substring
    for strict in BOTH {
        assert_eq!(
            decide_upgrade(Some(&c), &hdr(1), Some(&full), strict),
            ToneDecision::Reject(ToneReject::BadProjectName)
        );
    }
    let exact = desc("v1.0.0", "ESP_TONE_BIN");
    assert_eq!(
        decide_upgrade(Some(&c), &hdr(1), Some(&exact), true),
        ToneDecision::Write { need_desc: true }
    );
}

#[test]
fn decide_row4_current_format1_needs_valid_newer_version() {
    let c = cur(1, "v1.2.0");
    for strict in BOTH {
        let d = |v: &str| decide_upgrade(Some(&c), &hdr(1), Some(&desc(v, "ESP_TONE_BIN")), strict);
        assert_eq!(d("v1.2.1"), ToneDecision::Write { need_desc: true });
        assert_eq!(d("V2.0.0"), ToneDecision::Write { need_desc: true });
        let same = d("v1.2.0");
        assert_eq!(
            same,
            ToneDecision::Reject(ToneReject::NotNewer {
                current: fixed(b"v1.2.0"),
                incoming: fixed(b"v1.2.0")
            })
        );
        assert!(matches!(
            d("v1.1.9"),
            ToneDecision::Reject(ToneReject::NotNewer { .. })
        ));
        assert_eq!(d("v1.0"), ToneDecision::Reject(ToneReject::InvalidVersion));
        assert_eq!(d("1.3.0"), ToneDecision::Reject(ToneReject::InvalidVersion));
        // Any incoming format ≠ 0 takes this path.
        let inc = desc("v1.2.1", "ESP_TONE_BIN");
        assert_eq!(
            decide_upgrade(Some(&c), &hdr(3), Some(&inc), strict),
            ToneDecision::Write { need_desc: true }
        );
        // Magic and name are checked before the version.
        let mut m = desc("v0.0.1", "ESP_TONE_BIN");
        m.magic_word = 0;
        assert_eq!(
            decide_upgrade(Some(&c), &hdr(1), Some(&m), strict),
            ToneDecision::Reject(ToneReject::BadMagic { found: 0 })
        );
        let n = desc("v0.0.1", "XX");
        assert_eq!(
            decide_upgrade(Some(&c), &hdr(1), Some(&n), strict),
            ToneDecision::Reject(ToneReject::BadProjectName)
        );
    }
    // An unparseable current version (−1) loses against any valid incoming one.
    let c = cur(1, "v1.0");
    for strict in BOTH {
        let d = decide_upgrade(
            Some(&c),
            &hdr(1),
            Some(&desc("v0.0.0", "ESP_TONE_BIN")),
            strict,
        );
        assert_eq!(d, ToneDecision::Write { need_desc: true });
    }
    let broken = ToneInfo {
        header: hdr(1),
        desc: None,
    };
    let d = decide_upgrade(
        Some(&broken),
        &hdr(1),
        Some(&desc("v1.0.0", "ESP_TONE_BIN")),
        false,
    );
    assert_eq!(d, ToneDecision::Reject(ToneReject::MissingCurrentDesc));
}

#[test]
fn decide_with_real_vectors() {
    let (Some(korvo), Some(wwe), Some(af), Some(f0)) = (
        vector("korvo_du1906_tone_v1.2.0.bin"),
        vector("wwe_tone_v1.1.1.bin"),
        vector("audio_flash_tone_v1.0.bin"),
        vector("flash_tone.bin"),
    ) else {
        return;
    };
    let (mut f, part) = flash_with::<4>(&korvo, part_size_for(korvo.len()));
    let current = tone_partition_init(&mut f, &part).unwrap();
    let inc = |b: &[u8]| {
        (
            ToneHeader::parse(b).unwrap(),
            ToneDesc::parse(&b[8..]).unwrap(),
        )
    };
    let (h, d) = inc(&wwe);
    assert!(incoming_needs_desc(&h));
    let r = decide_upgrade(Some(&current), &h, Some(&d), false);
    assert!(matches!(
        r,
        ToneDecision::Reject(ToneReject::NotNewer { .. })
    ));
    let ToneDecision::Reject(rej) = r else {
        unreachable!()
    };
    assert_eq!(rej.adf_reason(), 0x90004);
    assert_eq!(rej.to_string(), "The incoming version is same as or lower than the running version (current \"v1.2.0\", incoming \"v1.1.1\")");
    let (h, d) = inc(&af);
    let r = decide_upgrade(Some(&current), &h, Some(&d), true);
    assert_eq!(r, ToneDecision::Reject(ToneReject::InvalidVersion));
    // Current format 0 (the README's flash_tone.bin): format-1 "v1.0" replaces it.
    let (mut f, part) = flash_with::<4>(&f0, part_size_for(f0.len()));
    let current = tone_partition_init(&mut f, &part).unwrap();
    assert_eq!(
        decide_upgrade(Some(&current), &h, Some(&d), true),
        ToneDecision::Write { need_desc: true }
    );
    let h0 = ToneHeader::parse(&f0).unwrap();
    assert!(!incoming_needs_desc(&h0));
}

#[test]
fn incoming_needs_desc_only_for_tone_bins_with_format_not_0() {
    assert!(!incoming_needs_desc(&hdr(0)));
    assert!(incoming_needs_desc(&hdr(1)));
    assert!(incoming_needs_desc(&hdr(2)));
    assert!(!incoming_needs_desc(&ToneHeader {
        header_tag: 0,
        total_num: 0,
        format: 1
    }));
}

#[test]
fn reject_reasons_match_adf_codes() {
    assert_eq!(ToneReject::BadMagic { found: 0 }.adf_reason(), 0x90005);
    assert_eq!(ToneReject::BadProjectName.adf_reason(), 0x90006);
    assert_eq!(ToneReject::InvalidVersion.adf_reason(), 0x90003);
    assert_eq!(
        ToneReject::NotNewer {
            current: [0; 32],
            incoming: [0; 32]
        }
        .adf_reason(),
        589_828
    );
    assert_eq!(ToneReject::MissingIncomingDesc.adf_reason(), 0x9000C);
    assert_eq!(ToneReject::MissingCurrentDesc.adf_reason(), 0x9000A);
}

// ---- packer ---------------------------------------------------------------------------

#[test]
fn file_type_follows_last_extension_case_insensitively() {
    assert_eq!(file_type_for_name("a.mp3"), Some(0));
    assert_eq!(file_type_for_name("A.MP3"), Some(0));
    assert_eq!(file_type_for_name("x.y.Wav"), Some(1));
    assert_eq!(file_type_for_name("mp3"), Some(0)); // no dot: Python's split gives the name
    assert_eq!(file_type_for_name("a.mp3.txt"), None);
    assert_eq!(file_type_for_name("a.ogg"), None);
    assert_eq!(file_type_for_name("a."), None);
}

#[test]
fn pack_layout_matches_generator() {
    let b = small_f1("v1.2.3");
    // header
    assert_eq!(b[..8], [0x53, 0x20, 2, 0, 1, 0, 0, 0]);
    // desc
    assert_eq!(b[8..12], [0x76, 0x98, 0x5F, 0xF5]);
    assert_eq!(&b[24..30], b"v1.2.3");
    assert_eq!(&b[56..69], b"ESP_TONE_BIN\0");
    assert_eq!(&b[88..97], b"12:00:00\0");
    assert_eq!(&b[104..115], b"2024-01-01\0");
    assert!(b[120..264].iter().all(|&x| x == 0));
    // table: song_adr(0) = 264 + 128 = 392; file 0 is 5 bytes → padded 8; song_adr(1) = 400.
    assert_eq!(b[264..272], [0x28, 0, 0, 0, 0x88, 1, 0, 0]);
    assert_eq!(b[272..276], [5, 0, 0, 0]);
    assert!(b[276..328].iter().all(|&x| x == 0));
    assert_eq!(b[328..336], [0x28, 1, 1, 0, 0x90, 1, 0, 0]);
    // data + 0xFF padding
    assert_eq!(b[392..400], [1, 2, 3, 4, 5, 0xFF, 0xFF, 0xFF]);
    assert_eq!(b[400..412], [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0xFF, 0xFF]);
    // CRC + tail
    assert_eq!(b.len(), 412 + 6);
    assert_eq!(b[412..416], CRC32.checksum(&b[..412]).to_le_bytes());
    assert_eq!(b[416..], [0xAC, 0xDF]);
    // format 0: no desc, no trailer
    let a = [7u8; 4];
    let f0 = pack_vec(
        &[ToneEntry {
            name: "z.wav",
            data: &a,
        }],
        0,
        "ignored",
    );
    assert_eq!(f0.len(), 8 + 64 + 4);
    assert_eq!(f0[8 + 4..8 + 8], 72u32.to_le_bytes());
}

#[test]
fn pack_truncates_long_strings_like_struct_pack() {
    let v = "v1.2.3-this-is-a-very-long-version-string";
    let b = pack_vec(&[], 1, v);
    assert_eq!(&b[24..56], &v.as_bytes()[..32]);
    assert_eq!(&b[56..60], b"ESP_");
    let d = ToneDesc::parse(&b[8..]).unwrap();
    assert_eq!(d.adf_version_number(), None); // strlen runs into project_name
}

#[test]
fn pack_validates_before_emitting() {
    let mut emitted = 0usize;
    let mut sink = |b: &[u8]| emitted += b.len();
    let e = [
        ToneEntry {
            name: "a.mp3",
            data: &[1],
        },
        ToneEntry {
            name: "b.ogg",
            data: &[2],
        },
    ];
    assert_eq!(
        pack(&e, 1, "v1.0", "", "", &mut sink),
        Err(ToneError::UnknownFileType { index: 1 })
    );
    assert_eq!(
        pack(&e[..1], 2, "v1.0", "", "", &mut sink),
        Err(ToneError::UnsupportedFormat { format: 2 })
    );
    let many = vec![
        ToneEntry {
            name: "a.mp3",
            data: &[]
        };
        257
    ];
    assert_eq!(
        pack(&many, 0, "", "", "", &mut sink),
        Err(ToneError::TooManyFiles { count: 257 })
    );
    assert_eq!(emitted, 0);
    let max = vec![
        ToneEntry {
            name: "a.mp3",
            data: &[]
        };
        256
    ];
    assert_eq!(
        pack(&max, 0, "", "", "", &mut |_: &[u8]| {}),
        Ok(8 + 64 * 256)
    );
}

#[test]
fn packed_bins_pass_reader_init_and_check() {
    let b = small_f1("v1.2.3");
    let bin = ToneBin::parse(&b).unwrap();
    let files: Vec<(ToneFileInfo, &[u8])> = bin.files().collect();
    assert_eq!(files[0].1, &[1, 2, 3, 4, 5]);
    assert_eq!(files[1].1, &[9; 10]);
    assert_eq!(files[1].0.file_type, TONE_FILE_TYPE_WAV);
    let (mut f, part) = flash_with::<4>(&b, 0x1000);
    let info = tone_partition_init(&mut f, &part).unwrap();
    assert_eq!(info.desc.unwrap().adf_version_number(), Some(0x010203));
    assert_eq!(tone_partition_check(&mut f, &part).unwrap(), info);
}

// ---- the streaming check --------------------------------------------------------------

/// Feed `bin` in pieces whose sizes come from `seed` (1..=97 bytes), then finish.
fn stream_check(
    bin: &[u8],
    capacity: u32,
    announced: Option<u64>,
    seed: u64,
) -> Result<ToneStreamSummary, ToneError> {
    let mut c = ToneStreamCheck::new(capacity, announced);
    let mut x = seed | 1;
    let mut at = 0;
    while at < bin.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (1 + (x % 97) as usize).min(bin.len() - at);
        if let Err(e) = c.feed(&bin[at..at + n]) {
            assert_eq!(c.finish().unwrap_err(), e, "the first fault is kept");
            return Err(e);
        }
        at += n;
    }
    c.finish()
}

/// The reference verdict: the whole-bin reader (trailing 0xFF allowed), plus what ADF's
/// reader needs (format 1 has files) and the partition bound.
fn reference_ok(bin: &[u8], capacity: u32) -> bool {
    match ToneBin::parse_dump(bin) {
        Ok(b) => {
            !(b.header().format == TONE_FORMAT_1 && b.header().total_num == 0)
                && b.total_size() <= capacity
        }
        Err(_) => false,
    }
}

#[test]
fn stream_check_accepts_every_real_vector_in_any_chunking() {
    for v in VECTORS {
        let Some(bin) = vector(v.name) else { return };
        for seed in [1u64, 7, 0xDEAD] {
            let s = stream_check(&bin, part_size_for(bin.len()), Some(bin.len() as u64), seed)
                .unwrap_or_else(|e| panic!("{}: {}", v.name, e));
            assert_eq!(s.size as usize, v.size, "{}", v.name);
            assert_eq!(s.header.total_num, v.files);
        }
        // A partition dump: the bin then erased flash.
        let mut dump = bin.clone();
        dump.resize(part_size_for(bin.len()) as usize, 0xFF);
        let s = stream_check(&dump, dump.len() as u32, Some(dump.len() as u64), 3).unwrap();
        assert_eq!(s.size as usize, v.size);
        assert_eq!(s.trailing_erased as usize, dump.len() - v.size);
    }
}

#[test]
fn stream_check_rejects_what_the_whole_bin_reader_rejects() {
    let f1 = small_f1("v1.0.0");
    let f0 = pack_vec(
        &[
            ToneEntry {
                name: "a.mp3",
                data: &[1, 2, 3],
            },
            ToneEntry {
                name: "b.wav",
                data: &[4; 6],
            },
        ],
        0,
        "",
    );
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut rnd = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    let (mut agree_ok, mut agree_bad) = (0, 0);
    for base in [&f1, &f0] {
        for _ in 0..4000 {
            let mut m = base.clone();
            match rnd(5) {
                0 => {
                    let p = rnd(m.len());
                    m[p] ^= 1 << rnd(8);
                }
                1 => {
                    let p = rnd(m.len());
                    m[p] = rnd(256) as u8;
                }
                2 => m.truncate(rnd(m.len())),
                3 => m.extend(std::iter::repeat_n(
                    if rnd(2) == 0 { 0xFF } else { 0 },
                    1 + rnd(9),
                )),
                _ => {
                    let p = rnd(m.len() - 4);
                    m[p..p + 4].copy_from_slice(&(rnd(400) as u32).to_le_bytes());
                }
            }
            let cap = if rnd(4) == 0 {
                (m.len() as u32).saturating_sub(3)
            } else {
                0x1000
            };
            let want = reference_ok(&m, cap);
            let announced = if rnd(2) == 0 {
                Some(m.len() as u64)
            } else {
                None
            };
            let got = stream_check(&m, cap, announced, rnd(1000) as u64);
            assert_eq!(got.is_ok(), want, "{:?} cap {} {:02x?}", got, cap, m);
            if want {
                agree_ok += 1;
            } else {
                agree_bad += 1;
            }
        }
    }
    assert!(agree_ok > 100 && agree_bad > 4000, "{agree_ok} {agree_bad}");
}

#[test]
fn stream_check_names_truncation_length_and_format_faults() {
    let f1 = small_f1("v1.0.0");
    let cap = 0x1000;
    // Truncated: finish says which part is missing.
    let e = stream_check(&f1[..f1.len() - 3], cap, None, 1).unwrap_err();
    assert!(
        matches!(
            e,
            ToneError::Truncated {
                what: "CRC and tail",
                ..
            }
        ),
        "{e}"
    );
    let e = stream_check(&f1[..100], cap, None, 1).unwrap_err();
    assert!(
        matches!(
            e,
            ToneError::Truncated {
                what: "descriptor",
                ..
            }
        ),
        "{e}"
    );
    // The source announced more bytes than the bin holds, or fewer.
    let mut longer = f1.clone();
    longer.extend([0xFF; 4]);
    assert!(stream_check(&longer, cap, Some(longer.len() as u64), 1).is_ok());
    let e = stream_check(&f1, cap, Some(f1.len() as u64 + 10), 1).unwrap_err();
    assert_eq!(
        e,
        ToneError::LengthMismatch {
            announced: f1.len() as u64 + 10,
            received: f1.len() as u64
        }
    );
    let e = stream_check(&f1, cap, Some(f1.len() as u64 - 2), 1).unwrap_err();
    assert!(matches!(e, ToneError::FileOutside { .. }), "{e}");
    // Anything but 0xFF after the bin.
    let mut tail = f1.clone();
    tail.extend([0xFF, 0x00]);
    let e = stream_check(&tail, cap, None, 1).unwrap_err();
    assert_eq!(
        e,
        ToneError::TrailingData {
            end: f1.len() as u32,
            offset: f1.len() as u64 + 1,
            found: 0
        }
    );
    assert!(e.to_string().contains("0xff"), "{e}");
    // Not a tone bin at all: refused at byte 8, whatever follows.
    let mut c = ToneStreamCheck::new(cap, None);
    let e = c.feed(b"\x7fELF\x02\x01\x01\x00rest").unwrap_err();
    assert!(
        matches!(e, ToneError::BadHeaderTag { found: 0x457f }),
        "{e}"
    );
    // A tone tag with a bad format, or format 1 without files.
    let mut h = f1[..8].to_vec();
    h[4] = 2;
    let e = stream_check(&h, cap, None, 1).unwrap_err();
    assert_eq!(e, ToneError::UnsupportedFormat { format: 2 });
    let e = stream_check(&pack_vec(&[], 1, "v1.0.0"), cap, None, 1).unwrap_err();
    assert_eq!(e, ToneError::NoFiles);
    assert!(stream_check(&pack_vec(&[], 0, ""), cap, None, 1).is_ok());
    // Bigger than the partition.
    let e = stream_check(&f1, f1.len() as u32 - 1, None, 1).unwrap_err();
    assert!(matches!(e, ToneError::FileOutside { .. }), "{e}");
}

#[test]
fn stream_check_allows_empty_files_and_checks_padding() {
    let bin = pack_vec(
        &[
            ToneEntry {
                name: "a.mp3",
                data: &[],
            },
            ToneEntry {
                name: "b.mp3",
                data: &[7],
            },
            ToneEntry {
                name: "c.mp3",
                data: &[],
            },
        ],
        0,
        "",
    );
    assert!(stream_check(&bin, 0x1000, Some(bin.len() as u64), 5).is_ok());
    let mut bad = bin.clone();
    let last = bad.len() - 1;
    bad[last] = 0;
    let e = stream_check(&bad, 0x1000, None, 5).unwrap_err();
    assert_eq!(
        e,
        ToneError::BadPadding {
            index: 1,
            offset: last as u32,
            found: 0
        }
    );
}

#[test]
fn parse_dump_ignores_trailing_erased_bytes_only() {
    let f1 = small_f1("v1.0.0");
    let mut dump = f1.clone();
    dump.resize(0x2000, 0xFF);
    let b = ToneBin::parse_dump(&dump).unwrap();
    assert_eq!(b.total_size() as usize, f1.len());
    assert!(ToneBin::parse(&dump).is_err());
    dump[0x1FFF] = 0;
    assert_eq!(
        ToneBin::parse_dump(&dump).unwrap_err(),
        ToneError::TrailingData {
            end: f1.len() as u32,
            offset: 0x1FFF,
            found: 0
        }
    );
}
