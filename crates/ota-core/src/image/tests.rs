//! Tests of the image module: the esptool golden vectors, verifier rules, builder round trips,
//! flash verification.

extern crate std;

use super::*;
use crate::chip::MemType;
use std::format;
use std::string::ToString;
use std::vec::Vec;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/vectors/esptool/"
);

fn vector(name: &str) -> Option<Vec<u8>> {
    let path = format!("{}{}", VECTORS, name);
    match std::fs::read(&path) {
        Ok(v) => Some(v),
        Err(_) => {
            std::eprintln!("SKIP: ../shared/vectors not found ({})", path);
            None
        }
    }
}

fn unhex(s: &str) -> [u8; 32] {
    let mut o = [0u8; 32];
    for (i, b) in o.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    o
}

/// Feed `data` in `chunk`-sized pieces, stopping at the first error (which `finish`
/// then repeats).
fn verify_chunked(data: &[u8], chunk: usize) -> ImageVerifier {
    let mut v = ImageVerifier::new();
    for c in data.chunks(chunk) {
        if v.feed(c).is_err() {
            break;
        }
    }
    v
}

struct App {
    project: &'static str,
    version: &'static str,
    time: &'static str,
    date: &'static str,
    idf: &'static str,
    elf_sha: &'static str,
}

struct Golden {
    file: &'static str,
    chip: Chip,
    entry: u32,
    flash: (&'static str, &'static str, &'static str), // size, freq, mode
    revs: (u8, u16, u16),                              // legacy min, min full, max full
    wp_pin: u8,
    /// (len, load, file offs, memory types)
    segs: &'static [(u32, u32, u32, &'static str)],
    checksum: u8,
    hash: Option<&'static str>,
    image_len: u32,
    app: Option<App>,
    /// (version, idf, date_time)
    boot: Option<(u32, &'static str, &'static str)>,
}

const BOOT_V2_SEGS: &[(u32, u32, u32, &str)] = &[
    (
        0x00004,
        0x3fff0030,
        0x18,
        "BYTE_ACCESSIBLE, DRAM, DIRAM_DRAM",
    ),
    (
        0x02498,
        0x3fff0034,
        0x24,
        "BYTE_ACCESSIBLE, DRAM, DIRAM_DRAM",
    ),
    (0x04028, 0x40078000, 0x24c4, "CACHE_APP"),
    (0x011e8, 0x40080400, 0x64f4, "IRAM"),
];
const BOOT_V2_HASH: &str = "ae743beed340fd6ae6715299ec5d48b8282ef1f118707deb2a88fcf61c0816ef";

const fn boot_v2(file: &'static str) -> Golden {
    Golden {
        file,
        chip: Chip::Esp32,
        entry: 0x400806f8,
        flash: ("2MB", "40m", "DIO"),
        revs: (3, 0, 0),
        wp_pin: 0xee,
        segs: BOOT_V2_SEGS,
        checksum: 0xfc,
        hash: Some(BOOT_V2_HASH),
        image_len: 30480,
        app: None,
        boot: None,
    }
}

const fn ram_hello(file: &'static str, chip: Chip, entry: u32, freq: &'static str) -> Golden {
    Golden {
        file,
        chip,
        entry,
        flash: ("1MB", freq, "QIO"),
        revs: (0, 0, 0),
        wp_pin: 0xee,
        segs: &[],
        checksum: 0,
        hash: None,
        image_len: 128,
        app: None,
        boot: None,
    }
}

/// Golden values: `esptool image-info FILE` (esptool v5.6.0), run by hand.
fn goldens() -> Vec<Golden> {
    let mut g = std::vec![
        Golden {
            file: "bootloader_esp32.bin",
            chip: Chip::Esp32,
            entry: 0x4009816c,
            flash: ("2MB", "40m", "DIO"),
            revs: (0, 0, 0),
            wp_pin: 0x00,
            segs: &[
                (0x00000, 0x3ffc0000, 0x18, "BYTE_ACCESSIBLE, DRAM"),
                (0x00b3c, 0x3ffc0000, 0x20, "BYTE_ACCESSIBLE, DRAM"),
                (0x01068, 0x40078000, 0xb64, "CACHE_APP"),
                (0x002e4, 0x40098000, 0x1bd4, "IRAM"),
            ],
            checksum: 0x83,
            hash: None,
            image_len: 7888,
            app: None,
            boot: None,
        },
        Golden {
            file: "bootloader_esp32_v5_2.bin",
            chip: Chip::Esp32,
            entry: 0x40080650,
            flash: ("2MB", "40m", "DOUT"),
            revs: (0, 0, 399),
            wp_pin: 0xee,
            segs: &[
                (
                    0x01bdc,
                    0x3fff0030,
                    0x18,
                    "BYTE_ACCESSIBLE, DRAM, DIRAM_DRAM"
                ),
                (0x03d20, 0x40078000, 0x1bfc, "CACHE_APP"),
                (0x00004, 0x40080400, 0x5924, "IRAM"),
                (0x00f2c, 0x40080404, 0x5930, "IRAM"),
            ],
            checksum: 0xbe,
            hash: Some("10cec8cf739f34fb0473993b3cb0e3bd78402d6a7cc5b1cb5e1add2b1105f8ac"),
            image_len: 26768,
            app: None,
            boot: Some((1, "v5.2-dev-254-g1950b15", "Apr 25 2023 00:13:32")),
        },
        Golden {
            file: "bootloader_esp32c3.bin",
            chip: Chip::Esp32c3,
            entry: 0x403c0000,
            flash: ("2MB", "40m", "DIO"),
            revs: (0, 0, 0),
            wp_pin: 0xee,
            segs: &[
                (0x00014, 0x3fcd6100, 0x18, "DRAM, BYTE_ACCESSIBLE"),
                (0x01864, 0x3fcd6114, 0x34, "DRAM, BYTE_ACCESSIBLE"),
                (0x00de4, 0x403c0000, 0x18a0, "IRAM"),
                (0x01e8c, 0x403c2000, 0x268c, "IRAM"),
            ],
            checksum: 0x77,
            hash: Some("4faeab1bd3fd6a7d4adfa0fd38f41bfc67a8c3c0a9d6d882b65580da2e5e6347"),
            image_len: 17744,
            app: None,
            boot: None,
        },
        boot_v2("bootloader_multi_signed_v2_rsa.bin"),
        boot_v2("bootloader_signed_v2_ecdsa256.bin"),
        boot_v2("bootloader_signed_v2_ecdsa384.bin"),
        boot_v2("bootloader_signed_v2_rsa.bin"),
        boot_v2("bootloader_unsigned_v2.bin"),
        Golden {
            file: "esp32c3_header_min_rev.bin",
            chip: Chip::Esp32c3,
            entry: 0xdeadbeef,
            flash: ("2MB", "40m", "DIO"),
            revs: (0, 255, 65535),
            wp_pin: 0x00,
            segs: &[(0, 0xdeadbeef, 0x18, "")],
            checksum: 0xef,
            hash: None,
            image_len: 48,
            app: None,
            boot: None,
        },
        Golden {
            file: "esp32s3_header.bin",
            chip: Chip::Esp32s3,
            entry: 0xdeadbeef,
            flash: ("2MB", "40m", "DIO"),
            revs: (10, 0, 0),
            wp_pin: 0x00,
            segs: &[(0, 0xdeadbeef, 0x18, "")],
            checksum: 0xef,
            hash: None,
            image_len: 48,
            app: None,
            boot: None,
        },
        Golden {
            file: "esp_idf_blink_esp32s2.bin",
            chip: Chip::Esp32s2,
            entry: 0x40022f84,
            flash: ("2MB", "80m", "DIO"),
            revs: (0, 0, 0),
            wp_pin: 0xee,
            segs: &[
                (0x08c18, 0x3f000020, 0x18, "DROM"),
                (
                    0x0204c,
                    0x3ffbde90,
                    0x8c38,
                    "BYTE_ACCESSIBLE, MEM_INTERNAL, DRAM"
                ),
                (0x05384, 0x40022000, 0xac8c, "MEM_INTERNAL, IRAM"),
                (0x15ce8, 0x40080020, 0x10018, "IROM"),
                (0x06b0c, 0x40027384, 0x25d08, "MEM_INTERNAL, IRAM"),
                (0x00010, 0x50000000, 0x2c81c, "RTC_DATA"),
            ],
            checksum: 0x18,
            hash: Some("10f48f4a71a48cc4c917d70d13bf717b1bc7f3187b3d564b00192f7e381531b7"),
            image_len: 182368,
            app: Some(App {
                project: "blink",
                version: "qa-test-v5.0-20220830-4-g4532e6",
                time: "19:46:07",
                date: "Sep 13 2022",
                idf: "v5.0-beta1-427-g4532e6e0b2-dirt",
                elf_sha: "3059e6b55a965865febd28fa9f6028ad5cd0dab311febb0a3ea79eaa223ac2b0",
            }),
            boot: None,
        },
        Golden {
            file: "hello-world-signed.bin",
            chip: Chip::Esp32,
            entry: 0x40080c54,
            flash: ("2MB", "40m", "DIO"),
            revs: (0, 0, 0),
            wp_pin: 0xee,
            segs: &[
                (0x0572c, 0x3f400020, 0x18, "DROM"),
                (0x015dc, 0x3ffb0000, 0x574c, "BYTE_ACCESSIBLE, DRAM"),
                (0x00400, 0x40080000, 0x6d30, "IRAM"),
                (0x065d0, 0x40080400, 0x7138, "IRAM"),
                (0x028f8, 0x00000000, 0xd710, "PADDING"),
                (0x11fe4, 0x400d0018, 0x10010, "IROM"),
                (0x0df7c, 0x00000000, 0x21ffc, "PADDING"),
            ],
            checksum: 0x30,
            hash: Some("06a1d6eb2c280ca64b44b8c487d2d856dc8e5acf6e08060c61efbf086ad795d2"),
            image_len: 0x2ffb0,
            app: Some(App {
                project: "hello-world",
                version: "v3.3-beta3-21-g0706bd0d1-dirty",
                time: "14:43:38",
                date: "Jun 19 2019",
                idf: "v3.3-beta3-21-g0706bd0d1-dirty",
                elf_sha: "f4611958b4281922f26ed2ba71db7ebf581023781965ab72915a1f93fa5c545c",
            }),
            boot: None,
        },
        Golden {
            segs: &[
                (0x10, 0x3ffc0000, 0x18, "BYTE_ACCESSIBLE, DRAM"),
                (0x18, 0x4008c000, 0x30, "IRAM")
            ],
            checksum: 0x14,
            hash: Some("8ff3e6430a3ea49ec072aff7b73fe7b881ff47b8f619936385938d4bfb3a9ba9"),
            ..ram_hello("helloworld-esp32.bin", Chip::Esp32, 0x4008c008, "40m")
        },
        Golden {
            segs: &[
                (0x10, 0x3fcdfd00, 0x18, "DRAM, BYTE_ACCESSIBLE"),
                (0x18, 0x403dfd00, 0x30, "IRAM")
            ],
            checksum: 0x06,
            hash: Some("8af6ed42836c5a76a78771d6edf61170987f52cc95b54d4542fb487e694c08ad"),
            revs: (0, 0, 65535),
            ..ram_hello("helloworld-esp32c3.bin", Chip::Esp32c3, 0x403dfd00, "40m")
        },
        Golden {
            segs: &[
                (0x18, 0x40860000, 0x18, "DRAM, BYTE_ACCESSIBLE, IRAM"),
                (0x10, 0x40870000, 0x38, "DRAM, BYTE_ACCESSIBLE, IRAM"),
            ],
            checksum: 0xea,
            hash: Some("2b89e26ae8eca46be191bc16d54bc06f7949827563062e9932fbb15e31f58f80"),
            revs: (0, 0, 65535),
            ..ram_hello("helloworld-esp32c6.bin", Chip::Esp32c6, 0x40860000, "80m")
        },
        Golden {
            segs: &[
                (
                    0x10,
                    0x3fca0000,
                    0x18,
                    "BYTE_ACCESSIBLE, MEM_INTERNAL, DRAM"
                ),
                (0x18, 0x40380000, 0x30, "MEM_INTERNAL, IRAM"),
            ],
            checksum: 0xde,
            hash: Some("a5f786f08b146b1ea320cd0306a03d9daf0350c276ec20a10e03bbe8cafa668d"),
            revs: (0, 0, 65535),
            ..ram_hello("helloworld-esp32s3.bin", Chip::Esp32s3, 0x40380008, "40m")
        },
    ];
    g.sort_by_key(|x| x.file);
    g
}

fn check_golden(g: &Golden, data: &[u8], s: &ImageSummary) {
    let f = g.file;
    assert_eq!(s.chip, Some(g.chip), "{f}");
    assert_eq!(s.header.entry_addr, g.entry, "{f}");
    assert_eq!(s.header.flash_size_name(), Some(g.flash.0), "{f}");
    assert_eq!(s.header.flash_freq_name(g.chip), Some(g.flash.1), "{f}");
    assert_eq!(s.header.flash_mode_name(), Some(g.flash.2), "{f}");
    assert_eq!(
        (
            s.header.min_chip_rev,
            s.header.min_chip_rev_full,
            s.header.max_chip_rev_full
        ),
        g.revs,
        "{f}"
    );
    assert_eq!(s.header.wp_pin, g.wp_pin, "{f}");
    assert_eq!(s.segments().len(), g.segs.len(), "{f}");
    for (i, (seg, want)) in s.segments().iter().zip(g.segs).enumerate() {
        assert_eq!(
            (seg.data_len, seg.load_addr, seg.file_offset),
            (want.0, want.1, want.2),
            "{f} seg {i}"
        );
        assert_eq!(
            g.chip.memory_types(seg.load_addr).to_string(),
            want.3,
            "{f} seg {i} types"
        );
    }
    assert_eq!(s.checksum_read, g.checksum, "{f}");
    assert!(s.checksum_valid(), "{f}");
    match g.hash {
        Some(h) => {
            assert_eq!(s.hash_calc, Some(unhex(h)), "{f}");
            assert_eq!(s.hash_valid(), Some(true), "{f}");
        }
        None => assert_eq!(s.hash_valid(), None, "{f}"),
    }
    assert_eq!(s.image_len, g.image_len, "{f}");
    match &g.app {
        Some(a) => {
            let d = s.app_desc.as_ref().expect(f);
            assert_eq!(d.project_name_str(), a.project, "{f}");
            assert_eq!(d.version_str(), a.version, "{f}");
            assert_eq!(d.time_str(), a.time, "{f}");
            assert_eq!(d.date_str(), a.date, "{f}");
            assert_eq!(d.idf_ver_str(), a.idf, "{f}");
            assert_eq!(d.app_elf_sha256, unhex(a.elf_sha), "{f}");
            assert_eq!(
                (
                    d.secure_version,
                    d.min_efuse_blk_rev_full,
                    d.max_efuse_blk_rev_full
                ),
                (0, 0, 0)
            );
            assert_eq!(s.loader_app_desc.as_ref(), Some(d), "{f}");
            assert_eq!(
                &d.to_bytes()[..],
                &data[0x20..0x120],
                "{f}: desc round trip"
            );
        }
        None => assert_eq!(s.app_desc, None, "{f}"),
    }
    match g.boot {
        Some((ver, idf, dt)) => {
            let b = s.bootloader_desc.as_ref().expect(f);
            assert_eq!(
                (b.version, b.idf_ver_str(), b.date_time_str()),
                (ver, idf, dt),
                "{f}"
            );
            assert_eq!(
                &b.to_bytes()[..],
                &data[0x20..0x70],
                "{f}: bootloader desc round trip"
            );
        }
        None => assert_eq!(s.bootloader_desc, None, "{f}"),
    }
    assert_eq!(
        &s.header.to_bytes()[..],
        &data[..24],
        "{f}: header round trip"
    );
}

#[test]
fn every_esptool_vector_verifies_like_esptool_image_info() {
    let all = goldens();
    // Every image file of the folder is in the table (no silent omissions).
    let Ok(dir) = std::fs::read_dir(VECTORS) else {
        std::eprintln!("SKIP: ../shared/vectors not found");
        return;
    };
    let mut names: Vec<_> = dir
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bin") && n != "partitions_singleapp.bin")
        .collect();
    names.sort();
    let table: Vec<_> = all.iter().map(|g| g.file).collect();
    assert_eq!(names, table);
    for g in &all {
        let data = vector(g.file).unwrap();
        for chunk in [1usize, 7, 289, 4096] {
            let v = verify_chunked(&data, chunk);
            assert!(v.is_complete(), "{} chunk {}", g.file, chunk);
            assert_eq!(v.consumed(), g.image_len as u64, "{}", g.file);
            assert_eq!(
                v.trailing(),
                data.len() as u64 - g.image_len as u64,
                "{}",
                g.file
            );
            let s = v.finish().unwrap_or_else(|e| panic!("{}: {}", g.file, e));
            check_golden(g, &data, &s);
        }
    }
}

#[test]
fn blink_s2_yields_project_version_and_six_segments() {
    let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
        return;
    };
    let mut v = ImageVerifier::new();
    v.set_expected_chip(Some(Chip::Esp32s2));
    v.set_app_rules(true);
    v.set_size_limit(Some(0x10_0000));
    v.set_flash_offset(0x1_0000);
    // Desc becomes known as soon as its bytes have been fed.
    v.feed(&data[..0x20 + 255]).unwrap();
    assert!(v.app_desc().is_none());
    assert_eq!(v.header().unwrap().segment_count, 6);
    v.feed(&data[0x20 + 255..0x200]).unwrap();
    assert_eq!(v.app_desc().unwrap().project_name_str(), "blink");
    assert_eq!(v.image_len(), None);
    v.feed(&data[0x200..]).unwrap();
    assert_eq!(v.image_len(), Some(182368));
    let s = v.finish().unwrap();
    assert_eq!(s.segment_count, 6);
    let d = s.app_desc.unwrap();
    assert_eq!(d.project_name_str(), "blink");
    assert_eq!(d.version_str(), "qa-test-v5.0-20220830-4-g4532e6");
}

#[test]
fn signed_hello_world_verifies_with_trailing_signature() {
    let Some(data) = vector("hello-world-signed.bin") else {
        return;
    };
    let mut v = ImageVerifier::new();
    let used = v.feed_some(&data).unwrap();
    assert_eq!(used, 0x2ffb0);
    assert_eq!(v.trailing(), 80); // 68-byte SBv1 block + 12 bytes of padding (§3.9)
    v.feed(&[1, 2, 3]).unwrap();
    assert_eq!(v.trailing(), 83);
    assert_eq!(
        v.finish().unwrap().app_desc.unwrap().project_name_str(),
        "hello-world"
    );
}

#[test]
fn header_only_vectors_are_complete_empty_segment_images_but_not_apps() {
    // esptool says these 48-byte files are whole images: 1 empty segment, checksum 0xef
    // valid. Cut short they give a clean truncation error; as apps they are rejected.
    for name in ["esp32c3_header_min_rev.bin", "esp32s3_header.bin"] {
        let Some(data) = vector(name) else { return };
        assert!(verify_chunked(&data, 5).finish().is_ok());
        let mut v = ImageVerifier::new();
        v.feed(&data[..40]).unwrap();
        let e = v.finish().unwrap_err();
        assert_eq!(
            e,
            ImageError::Truncated {
                offset: 40,
                part: ImagePart::Padding,
                missing: 8
            }
        );
        assert_eq!(
            e.to_string(),
            "image truncated at offset 40 while reading the padding before the checksum (expected 8 more bytes)"
        );
        let mut v = ImageVerifier::new();
        v.feed(&data[..30]).unwrap();
        assert_eq!(
            v.finish().unwrap_err(),
            ImageError::Truncated {
                offset: 30,
                part: ImagePart::SegmentHeader(0),
                missing: 2
            }
        );
        let mut v = ImageVerifier::new();
        v.set_app_rules(true);
        assert_eq!(
            v.feed(&data).unwrap_err(),
            ImageError::AppSegmentTooShort { len: 0 }
        );
        assert!(matches!(
            parse_prefix(&data),
            Err(ImageError::TooShort {
                needed: 289,
                found: 48,
                ..
            })
        ));
    }
}

#[test]
fn truncated_blink_names_segment_and_missing_bytes() {
    let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
        return;
    };
    let e = verify_chunked(&data[..100_000], 4096).finish().unwrap_err();
    assert_eq!(
        e.to_string(),
        "image truncated at offset 100000 while reading segment 3 data (expected 54888 more bytes)"
    );
    let e = verify_chunked(&data[..10], 3).finish().unwrap_err();
    assert_eq!(
        e,
        ImageError::Truncated {
            offset: 10,
            part: ImagePart::Header,
            missing: 14
        }
    );
    let e = verify_chunked(&data[..data.len() - 5], 3)
        .finish()
        .unwrap_err();
    assert_eq!(
        e,
        ImageError::Truncated {
            offset: 182363,
            part: ImagePart::Hash,
            missing: 5
        }
    );
    assert!(ImageVerifier::new().finish().is_err());
    // Every cut point gives a truncation error, never a panic or a false success.
    for cut in (0..data.len()).step_by(997).chain([182335, 182336]) {
        let e = verify_chunked(&data[..cut], 1000).finish().unwrap_err();
        assert!(
            matches!(e, ImageError::Truncated { offset, .. } if offset == cut as u64),
            "{cut}: {e}"
        );
    }
}

#[test]
fn flipped_bytes_fail_checksum_or_hash_like_the_loader() {
    let Some(mut data) = vector("esp_idf_blink_esp32s2.bin") else {
        return;
    };
    // One flipped data byte: the XOR checksum catches it first (as in image_load()).
    data[90_000] ^= 0x01;
    let v = verify_chunked(&data, 4096);
    let e = v.finish().unwrap_err();
    assert_eq!(
        e,
        ImageError::ChecksumMismatch {
            calculated: 0x19,
            read: 0x18
        }
    );
    assert_eq!(e.to_string(), "Checksum failed. Calculated 0x19 read 0x18");
    assert_eq!(v.summary().unwrap().hash_valid(), Some(false));
    // Two flips that cancel in the XOR: only the SHA-256 sees them.
    data[90_001] ^= 0x01;
    let e = verify_chunked(&data, 4096).finish().unwrap_err();
    assert!(matches!(e, ImageError::HashMismatch { .. }));
    assert!(e
        .to_string()
        .starts_with("Image hash failed - image is corrupt"));
    // A flipped padding byte (not in the checksum, inside the hash).
    let Some(mut data) = vector("esp_idf_blink_esp32s2.bin") else {
        return;
    };
    data[182330] ^= 0x80;
    assert!(matches!(
        verify_chunked(&data, 7).finish(),
        Err(ImageError::HashMismatch { .. })
    ));
}

#[test]
fn bad_magic_is_reported_at_the_first_byte() {
    let Some(data) = vector("partitions_singleapp.bin") else {
        return;
    };
    let mut v = ImageVerifier::new();
    let e = v.feed(&data[..1]).unwrap_err();
    assert_eq!(e, ImageError::BadMagic { at: 0, found: 0xaa });
    assert_eq!(v.feed(&data[1..]).unwrap_err(), e, "errors are sticky");
    assert_eq!(v.finish().unwrap_err(), e);
    assert_eq!(
        parse_prefix(&[0xffu8; 300]).unwrap_err(),
        ImageError::BadMagic { at: 0, found: 0xff }
    );
    assert!(ImageHeader::parse(&data).is_err());
}

#[test]
fn header_rules_segment_count_hash_flag_and_chip() {
    let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
        return;
    };
    let mut d = data.clone();
    d[1] = 17;
    let e = verify_chunked(&d, 289).finish().unwrap_err();
    assert_eq!(e, ImageError::TooManySegments { at: 0, count: 17 });
    assert_eq!(
        e.to_string(),
        "image at 0x0 segment count 17 exceeds max 16"
    );
    let mut d = data.clone();
    d[23] = 2;
    assert_eq!(
        verify_chunked(&d, 289).finish().unwrap_err(),
        ImageError::BadHashAppended { found: 2 }
    );
    assert_eq!(
        parse_prefix(&d).unwrap_err(),
        ImageError::BadHashAppended { found: 2 }
    );
    let mut v = ImageVerifier::new();
    v.set_expected_chip(Some(Chip::Esp32c3));
    let e = v.feed(&data).unwrap_err();
    assert_eq!(
        e,
        ImageError::ChipMismatch {
            expected: 5,
            found: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "mismatch chip ID, expected 5 (ESP32-C3), found 2 (ESP32-S2)"
    );
}

#[test]
fn segment_rules_length_and_mmu_alignment() {
    let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
        return;
    };
    // Segment 1 length 0x204c -> 0x204d (not a multiple of 4).
    let mut d = data.clone();
    d[0x8c38 + 4] = 0x4d;
    let e = verify_chunked(&d, 4096).finish().unwrap_err();
    assert_eq!(
        e,
        ImageError::SegmentLength {
            index: 1,
            offset: 0x8c38,
            len: 0x204d
        }
    );
    // Segment 1 length >= 16 MiB.
    let mut d = data.clone();
    d[0x8c38 + 7] = 0x01;
    assert!(matches!(
        verify_chunked(&d, 4096).finish(),
        Err(ImageError::SegmentLength { index: 1, .. })
    ));
    // IROM segment 3 load address moved by 4: data no longer matches its page offset.
    let mut d = data.clone();
    d[0x10018] = 0x24;
    let e = verify_chunked(&d, 4096).finish().unwrap_err();
    assert_eq!(
        e,
        ImageError::SegmentAlignment {
            index: 3,
            load_addr: 0x40080024,
            data_addr: 0x10020,
            page: 0x10000
        }
    );
    assert!(e
        .to_string()
        .starts_with("Segment 3 load address 0x40080024, doesn't match data 0x00010020"));
    // The same image at a flash address that is not 64 KiB aligned: segment 0 fails.
    let mut v = ImageVerifier::new();
    v.set_flash_offset(0x1000);
    assert!(matches!(
        v.feed(&data),
        Err(ImageError::SegmentAlignment { index: 0, .. })
    ));
}

#[test]
fn size_limit_fails_as_soon_as_known() {
    let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
        return;
    };
    let mut v = ImageVerifier::new();
    v.set_size_limit(Some(0x20000));
    // Segment 3 (header at 0x10018, 0x15ce8 bytes) alone pushes it past 128 KiB.
    assert!(v.feed(&data[..0x10018]).is_ok());
    let e = v.feed(&data[0x10018..0x10020]).unwrap_err();
    assert!(
        matches!(
            e,
            ImageError::DoesNotFit {
                partition_len: 0x20000,
                at_least: true,
                ..
            }
        ),
        "{e}"
    );
    let mut v = ImageVerifier::new();
    v.set_size_limit(Some(182367));
    let e = v.feed(&data).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Image length 182368 doesn't fit in partition length 182367"
    );
    let mut v = ImageVerifier::new();
    v.set_size_limit(Some(182368));
    v.feed(&data).unwrap();
    assert!(v.finish().is_ok());
}

#[test]
fn parse_prefix_reads_header_and_desc() {
    let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
        return;
    };
    let (h, d) = parse_prefix(&data[..IMAGE_PREFIX_LEN]).unwrap();
    assert_eq!(
        (h.chip(), h.segment_count, h.hash_appended),
        (Some(Chip::Esp32s2), 6, 1)
    );
    assert_eq!(d.unwrap().version_str(), "qa-test-v5.0-20220830-4-g4532e6");
    assert!(matches!(
        parse_prefix(&data[..288]),
        Err(ImageError::TooShort { .. })
    ));
    assert!(matches!(
        parse_prefix(&[]),
        Err(ImageError::TooShort { found: 0, .. })
    ));
    // No desc magic at 0x20: header only.
    let Some(boot) = vector("bootloader_esp32c3.bin") else {
        return;
    };
    let (h, d) = parse_prefix(&boot).unwrap();
    assert_eq!((h.chip(), d), (Some(Chip::Esp32c3), None));
}

#[test]
fn header_and_desc_round_trip_every_byte() {
    let mut raw = [0u8; 256];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    raw[..4].copy_from_slice(&APP_DESC_MAGIC.to_le_bytes());
    let d = AppDesc::parse(&raw).unwrap();
    assert_eq!(d.to_bytes(), raw);
    raw[0] = 0;
    assert!(matches!(
        AppDesc::parse(&raw),
        Err(ImageError::BadAppDescMagic { .. })
    ));
    assert!(matches!(
        AppDesc::parse(&raw[..255]),
        Err(ImageError::TooShort { .. })
    ));
    let mut h = [0u8; 24];
    for (i, b) in h.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(91).wrapping_add(3);
    }
    h[0] = IMAGE_MAGIC;
    assert_eq!(ImageHeader::parse(&h).unwrap().to_bytes(), h);
    let mut b = [0x5au8; 80];
    b[0] = BOOTLOADER_DESC_MAGIC;
    assert_eq!(BootloaderDesc::parse(&b).unwrap().to_bytes(), b);
}

#[test]
fn flash_field_names_follow_esptool_maps() {
    let h = ImageHeader {
        spi_mode: 2,
        spi_speed_size: 0x1f,
        ..ImageHeader::default()
    };
    assert_eq!(h.flash_mode_name(), Some("DIO"));
    assert_eq!(h.flash_size_name(), Some("2MB"));
    assert_eq!(h.flash_size_bytes(), Some(2 << 20));
    assert_eq!(h.flash_freq_name(Chip::Esp32s2), Some("80m"));
    assert_eq!(h.flash_freq_name(Chip::Esp32c2), Some("60m"));
    assert_eq!(h.flash_freq_name(Chip::Esp32h2), Some("48m"));
    assert_eq!(h.flash_freq_name(Chip::Esp32c6), None);
    let h0 = ImageHeader {
        spi_mode: 4,
        spi_speed_size: 0x80,
        ..ImageHeader::default()
    };
    assert_eq!(h0.flash_freq_name(Chip::Esp32c6), Some("80m")); // first match wins
    assert_eq!((h0.flash_mode_name(), h0.flash_size_name()), (None, None));
    assert_eq!(flash_mode_from_name("dout"), Some(3));
    assert_eq!(flash_size_code_from_name("16mb"), Some(4));
    assert_eq!(flash_freq_code_from_name(Chip::Esp32c6, "40m"), Some(0));
    assert_eq!(flash_freq_code_from_name(Chip::Esp32, "26m"), Some(1));
    assert_eq!(flash_freq_code_from_name(Chip::Esp32, "48m"), None);
    for c in Chip::ALL {
        for (name, code) in c.flash_freqs() {
            assert_eq!(flash_freq_code_from_name(c, name), Some(*code));
        }
    }
}

fn build(spec: &ImageSpec) -> Vec<u8> {
    let mut out = Vec::new();
    let n = build_image(spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
    assert_eq!(n as usize, out.len());
    out
}

#[test]
fn built_images_verify_for_every_chip_segment_count_and_size() {
    let sizes = [None, Some(1000), Some(20_000), Some(70_000), Some(300_000)];
    let chunks = [1usize, 7, 289, 4096];
    let mut case = 0usize;
    for chip in Chip::ALL {
        for segs in 1..=6u8 {
            case += 1;
            let size = sizes[case % sizes.len()];
            let mut spec = ImageSpec::new(chip, "proj", "v1.2.3");
            spec.segments = segs;
            spec.total_size = size;
            spec.hash_appended = !matches!(case % 3, 0);
            spec.fill_seed = case as u32;
            spec.secure_version = 7;
            let img = build(&spec);
            if let Some(t) = size {
                assert!(
                    img.len() as u32 >= t && img.len() as u32 <= t + 64 || t < 2000,
                    "{chip} {segs} {t} {}",
                    img.len()
                );
            }
            let chunk = if img.len() > 100_000 {
                4096
            } else {
                chunks[case % chunks.len()]
            };
            let mut v = ImageVerifier::new();
            v.set_expected_chip(Some(chip));
            v.set_app_rules(true);
            v.set_flash_offset(0x11_0000);
            v.set_size_limit(Some(img.len() as u32));
            for c in img.chunks(chunk) {
                v.feed(c).unwrap_or_else(|e| panic!("{chip} {segs}: {e}"));
            }
            assert_eq!(v.trailing(), 0);
            let s = v.finish().unwrap_or_else(|e| panic!("{chip} {segs}: {e}"));
            assert_eq!(s.image_len as usize, img.len());
            assert_eq!(s.segment_count, segs as usize);
            assert_eq!(
                s.hash_valid(),
                if spec.hash_appended { Some(true) } else { None }
            );
            let d = s.app_desc.expect("esptool-rule desc");
            assert_eq!(Some(d), s.loader_app_desc);
            assert_eq!(
                (d.project_name_str(), d.version_str(), d.secure_version),
                ("proj", "v1.2.3", 7)
            );
            assert!(
                chip.memory_types(s.segments[0].load_addr)
                    .contains(MemType::Drom),
                "{chip}"
            );
            for seg in s.segments() {
                assert!(
                    !chip.memory_types(seg.load_addr).is_empty(),
                    "{chip} {:x}",
                    seg.load_addr
                );
            }
        }
    }
}

#[test]
fn built_image_is_deterministic_and_seeded() {
    let mut spec = ImageSpec::new(Chip::Esp32c3, "a", "b");
    spec.total_size = Some(5000);
    spec.segments = 4;
    let a = build(&spec);
    assert_eq!(a, build(&spec));
    spec.fill_seed = 99;
    let b = build(&spec);
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b);
    spec.version = "0123456789012345678901234567890123";
    assert!(matches!(
        build_image(&spec, &mut |_| {}),
        Err(ImageError::BadSpec {
            field: "version",
            ..
        })
    ));
    spec.version = "ok";
    spec.segments = 17;
    assert!(matches!(
        build_image(&spec, &mut |_| {}),
        Err(ImageError::BadSpec {
            field: "segments",
            ..
        })
    ));
    spec.segments = 0;
    assert!(build_image(&spec, &mut |_| {}).is_err());
}

#[test]
fn built_bootloaders_verify_and_carry_a_bootloader_desc() {
    for chip in Chip::ALL {
        let mut out = Vec::new();
        let n = build_bootloader(chip, 3, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
        assert_eq!(n as usize, out.len());
        let s = verify_chunked(&out, 13).finish().unwrap();
        assert_eq!(s.chip, Some(chip));
        assert_eq!(s.header.flash_size_name(), Some("8MB"));
        assert_eq!(s.app_desc, None);
        let b = s.bootloader_desc.expect("bootloader desc");
        assert_eq!((b.version, b.idf_ver_str()), (1, "v5.4.1"));
        assert!(out.len() < 0x6000);
    }
}

#[test]
fn mutated_images_never_panic() {
    let mut spec = ImageSpec::new(Chip::Esp32s3, "fuzz", "1");
    spec.segments = 5;
    let img = build(&spec);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..400 {
        let mut d = img.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = (x as usize) % d.len();
            d[i] = (x >> 8) as u8;
        }
        let mut v = ImageVerifier::new();
        v.set_app_rules(true);
        for c in d.chunks(1 + (x as usize % 50)) {
            if v.feed(c).is_err() {
                break;
            }
        }
        let _ = v.finish();
        let _ = parse_prefix(&d);
    }
}

#[test]
fn flash_params_rewrite_the_header_and_the_hash_of_valid_images_only() {
    extern crate std;
    use std::vec::Vec;
    let mut bl = Vec::new();
    build_bootloader(Chip::Esp32c3, 1, &mut |b: &[u8]| bl.extend_from_slice(b)).unwrap();
    let mut img = bl.clone();
    assert!(set_image_flash_params(
        &mut img,
        Chip::Esp32c3,
        Some(0),
        Some(2),
        Some(0xF)
    ));
    assert_eq!((img[2], img[3]), (0, 0x2F));
    assert_eq!(img.len(), bl.len());
    let mut v = ImageVerifier::new();
    v.feed(&img).unwrap();
    v.finish().expect("the hash was recomputed");
    // None keeps a field.
    let mut img2 = bl.clone();
    assert!(set_image_flash_params(
        &mut img2,
        Chip::Esp32c3,
        None,
        Some(3),
        None
    ));
    assert_eq!((img2[2], img2[3]), (bl[2], 0x30 | (bl[3] & 0x0F)));
    // Not a valid image for the chip (wrong chip, corrupt): untouched.
    let mut other = bl.clone();
    assert!(!set_image_flash_params(
        &mut other,
        Chip::Esp32s3,
        Some(0),
        None,
        None
    ));
    assert!(other == bl);
    let mut bad = bl.clone();
    let n = bad.len();
    bad[n - 40] ^= 1;
    let before = bad.clone();
    assert!(!set_image_flash_params(
        &mut bad,
        Chip::Esp32c3,
        Some(0),
        None,
        None
    ));
    assert!(bad == before);
}

// ---- verify_flash over a tiny in-memory NOR flash ----

use crate::testutil::RamFlash;

#[test]
fn verify_flash_checks_magic_chip_fit_and_content() {
    use crate::flash::Region;
    let mut spec = ImageSpec::new(Chip::Esp32c3, "app", "2.0");
    spec.total_size = Some(40_000);
    spec.segments = 6;
    let img = build(&spec);
    let mut flash = RamFlash::<1>::new(0x40000);
    flash.data[0x10000..0x10000 + img.len()].copy_from_slice(&img);
    let slot = Region::new(0x10000, 0x10000);
    let s = verify_flash(&mut flash, slot, Some(Chip::Esp32c3)).unwrap();
    assert_eq!(s.app_desc.unwrap().version_str(), "2.0");
    assert!(verify_flash(&mut flash, slot, None).is_ok());
    let e = verify_flash(&mut flash, slot, Some(Chip::Esp32s3)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "mismatch chip ID, expected 9 (ESP32-S3), found 5 (ESP32-C3)"
    );
    let e = verify_flash(&mut flash, Region::new(0x20000, 0x10000), None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("image at 0x20000 has invalid magic byte (nothing flashed here?)"),
        "{e}"
    );
    let e = verify_flash(&mut flash, Region::new(0x10000, 0x8000), None).unwrap_err();
    assert!(
        matches!(
            e,
            crate::Error::Image(ImageError::DoesNotFit {
                partition_len: 0x8000,
                ..
            })
        ),
        "{e}"
    );
    // Not at a 64 KiB boundary: flash-mapped segments no longer line up.
    let mut flash2 = RamFlash::<1>::new(0x40000);
    flash2.data[0x18000..0x18000 + img.len()].copy_from_slice(&img);
    let e = verify_flash(&mut flash2, Region::new(0x18000, 0x10000), None).unwrap_err();
    assert!(
        matches!(e, crate::Error::Image(ImageError::SegmentAlignment { .. })),
        "{e}"
    );
    // A region past the end of the flash: the driver's error, wrapped.
    let e = verify_flash(&mut flash, Region::new(0x40000, 0x10000), None).unwrap_err();
    assert!(matches!(e, crate::Error::Flash(_)), "{e}");
    // Corrupted byte in flash.
    flash.data[0x10000 + 5000] ^= 0x10;
    let e = verify_flash(&mut flash, slot, None).unwrap_err();
    assert!(
        matches!(e, crate::Error::Image(ImageError::ChecksumMismatch { .. })),
        "{e}"
    );
    let mut v = ImageVerifier::new();
    v.set_app_rules(true);
    flash.data[0x10000 + 5000] ^= 0x10;
    assert!(verify_flash_with(&mut flash, slot, v).is_ok());
}
