//! Interop, app images: `ota image make` output judged by the real `esptool image-info`, and
//! `esptool elf2image` output read by `ota image info`. Both sides' reports are compared as
//! text, line for line: every field esptool prints (header, extended header, segments and
//! their memory types, checksum, hash, app descriptor) must be equal.

mod common;
mod idf;
mod interop;

use std::path::Path;

use common::*;
use ota_core::Chip;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

const FLASH_MODES: [&str; 4] = ["qio", "qout", "dio", "dout"];
const FLASH_SIZES: [&str; 8] = ["1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"];

/// Printable text without the characters a shell-free argv or rich markup would change.
fn text(rng: &mut impl Rng, max: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-+ :/";
    let n = rng.gen_range(1..=max);
    let mut s: String = (0..n)
        .map(|_| *CHARS.choose(rng).unwrap() as char)
        .collect();
    // Not an option to clap, not blank.
    if s.starts_with('-') || s.trim().is_empty() {
        s.replace_range(0..1, "v");
    }
    s
}

/// What `ota image info` prints, or None when it refuses the file.
fn ota_report(file: &Path) -> Option<String> {
    let o = ota(&["image", "info", s(file)]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn assert_same_report(file: &Path, esptool: &Value, case: &str) {
    assert_eq!(
        esptool["ok"],
        true,
        "{}: esptool image-info refuses {}: {}",
        case,
        file.display(),
        esptool["error"]
    );
    let theirs = esptool["stdout"].as_str().unwrap();
    let ours = ota_report(file)
        .unwrap_or_else(|| panic!("{}: ota image info refuses {}", case, file.display()));
    if ours != theirs {
        let first = ours
            .lines()
            .zip(theirs.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("ours:    {a:?}\nesptool: {b:?}"))
            .unwrap_or_else(|| "(one report is longer)".into());
        panic!(
            "{}: image-info reports differ for {}\n{}\n--- ours ---\n{}--- esptool ---\n{}",
            case,
            file.display(),
            first,
            ours,
            theirs
        );
    }
}

#[test]
fn image_make_for_every_chip_and_flash_setting_matches_esptool_image_info() {
    let Some(py) = python() else { return };
    let seed = interop::seed("image make");
    let mut rng = interop::rng(seed);
    let n = interop::cases(300);
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut specs = Vec::new();
    for i in 0..n {
        // Every chip in turn, the rest random.
        let chip = Chip::ALL[i % Chip::ALL.len()];
        let mode = *FLASH_MODES.choose(&mut rng).unwrap();
        let size = *FLASH_SIZES.choose(&mut rng).unwrap();
        let freq = chip.flash_freqs().choose(&mut rng).unwrap().0;
        let segments = rng.gen_range(1..=16u8);
        let secure_version: u32 = match rng.gen_range(0..4) {
            0 => 0,
            1 => rng.gen_range(1..100),
            _ => rng.gen(),
        };
        let no_hash = rng.gen_bool(0.3);
        let image_size = rng
            .gen_bool(0.6)
            .then(|| rng.gen_range(2_000..80_000u32).to_string());
        let min_rev = rng.gen_range(0..=399u16).to_string();
        let max_rev = if rng.gen_bool(0.5) {
            "65535".to_string()
        } else {
            rng.gen_range(0..=999u16).to_string()
        };
        let project = text(&mut rng, 31);
        let version = text(&mut rng, 31);
        let out = dir.path().join(format!("case{:03}.bin", i));
        let sv = secure_version.to_string();
        let segs = segments.to_string();
        let mut args = vec![
            "image",
            "make",
            "--chip",
            chip.name(),
            "--project",
            &project,
            "--version",
            &version,
            "--secure-version",
            &sv,
            "--segments",
            &segs,
            "--flash-mode",
            mode,
            "--flash-size",
            size,
            "--flash-freq",
            freq,
            "--min-rev-full",
            &min_rev,
            "--max-rev-full",
            &max_rev,
            "-o",
            s(&out),
        ];
        if no_hash {
            args.push("--no-hash");
        }
        if let Some(sz) = &image_size {
            args.push("--size");
            args.push(sz);
        }
        ok(&args);
        specs.push(
            json!({"chip": chip.name(), "mode": mode.to_uppercase(), "size": size,
                          "project": project, "version": version, "secure_version": secure_version,
                          "hash": !no_hash}),
        );
        files.push(out);
    }
    let answer = interop::ask(
        &py,
        "esptool_oracle.py",
        &json!({"op": "image_info", "files": files.iter().map(|f| s(f)).collect::<Vec<_>>()}),
    );
    let reports = answer["reports"].as_array().unwrap();
    assert_eq!(reports.len(), n);
    for (i, (file, rep)) in files.iter().zip(reports).enumerate() {
        let case = format!("case {} ({})", i, specs[i]);
        assert_same_report(file, rep, &case);
        // esptool judges it valid: checksum and (when appended) hash valid.
        let theirs = rep["stdout"].as_str().unwrap();
        assert!(
            theirs.contains("Checksum: ") && theirs.contains("(valid)"),
            "{}",
            case
        );
        assert!(
            !theirs.contains("invalid"),
            "{}: esptool says invalid:\n{}",
            case,
            theirs
        );
        // And --json says what was asked for.
        if i % 10 == 0 {
            let j: Value =
                serde_json::from_str(&ok(&["image", "info", s(file), "--json"])).unwrap();
            let sp = &specs[i];
            assert_eq!(j["chip"], sp["chip"], "{}", case);
            assert_eq!(j["flash_mode"], sp["mode"], "{}", case);
            assert_eq!(j["flash_size"], sp["size"], "{}", case);
            assert_eq!(j["hash_appended"], sp["hash"], "{}", case);
            assert_eq!(j["app"]["project_name"], sp["project"], "{}", case);
            assert_eq!(j["app"]["version"], sp["version"], "{}", case);
            assert_eq!(j["app"]["secure_version"], sp["secure_version"], "{}", case);
        }
    }
    eprintln!(
        "interop image make: {} cases ({} chips), seed {:#x}, esptool image-info reports all equal",
        n,
        Chip::ALL.len(),
        seed
    );
}

#[test]
fn esptool_elf2image_outputs_are_read_by_image_info_exactly_as_esptool_reads_them() {
    let Some(v) = vectors() else { return };
    let Some(py) = python() else { return };
    let elf = v.join("esptool/esp32c6-appdesc.elf");
    let seed = interop::seed("elf2image");
    let mut rng = interop::rng(seed);
    let n = interop::cases(200);
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for i in 0..n {
        let mut args: Vec<String> = vec![
            "--flash-mode".into(),
            FLASH_MODES.choose(&mut rng).unwrap().to_string(),
            "--flash-size".into(),
            FLASH_SIZES.choose(&mut rng).unwrap().to_string(),
            "--flash-freq".into(),
            ["80m", "40m", "20m"].choose(&mut rng).unwrap().to_string(),
        ];
        if rng.gen_bool(0.5) {
            args.push("--min-rev".into());
            args.push(rng.gen_range(0..=255u32).to_string());
        }
        if rng.gen_bool(0.5) {
            args.push("--min-rev-full".into());
            args.push(rng.gen_range(0..=65535u32).to_string());
        }
        if rng.gen_bool(0.5) {
            args.push("--max-rev-full".into());
            args.push(rng.gen_range(0..=65535u32).to_string());
        }
        if rng.gen_bool(0.3) {
            args.push("--secure-pad-v2".into());
        }
        if rng.gen_bool(0.3) {
            args.push("--version".into());
            args.push(["1", "2", "3"].choose(&mut rng).unwrap().to_string());
        }
        if rng.gen_bool(0.3) {
            args.push("--flash-mmu-page-size".into());
            args.push(
                ["8KB", "16KB", "32KB", "64KB"]
                    .choose(&mut rng)
                    .unwrap()
                    .to_string(),
            );
        }
        let out = dir.path().join(format!("elf{:03}.bin", i));
        cases.push(json!({"args": args, "out": s(&out)}));
    }
    let answer = interop::ask(
        &py,
        "esptool_oracle.py",
        &json!({"op": "elf2image", "chip": "esp32c6", "elf": s(&elf), "cases": cases}),
    );
    let reports = answer["reports"].as_array().unwrap();
    assert_eq!(reports.len(), n);
    for (i, rep) in reports.iter().enumerate() {
        let file = Path::new(cases[i]["out"].as_str().unwrap());
        let case = format!("case {} (elf2image {})", i, cases[i]["args"]);
        assert_same_report(file, rep, &case);
        if i % 20 == 0 {
            let j: Value =
                serde_json::from_str(&ok(&["image", "info", s(file), "--json"])).unwrap();
            assert_eq!(j["chip"], "esp32c6", "{}", case);
            assert_eq!(j["checksum_valid"], true, "{}", case);
            assert_eq!(j["hash_valid"], true, "{}", case);
        }
    }
    eprintln!(
        "interop elf2image: {} cases, seed {:#x}, ota image info reports all equal to esptool's",
        n, seed
    );
}

/// Real ESP32-C6 and ESP32-H2 apps for 1 MB and 2 MB flash use 16 KB and 32 KB MMU pages
/// (Kconfig picks the page from the flash size): `esptool elf2image` lays out the segments for
/// that page, from an ELF laid out as ESP-IDF's linker does. `ota image info` reads every one
/// exactly as `esptool image-info` does (it never refuses what esptool accepts) and reports
/// the page size it assumed and that the segments are aligned to it.
#[test]
fn small_mmu_page_c6_and_h2_apps_from_esptool_are_read_as_esptool_reads_them() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for chip in ["esp32c6", "esp32h2"] {
        for (flash_size, page, page_name) in [
            ("1MB", 0x4000u32, "16KB"),
            ("2MB", 0x8000, "32KB"),
            ("4MB", 0x10000, "64KB"),
        ] {
            for record in [false, true] {
                let log2 = if record {
                    page.trailing_zeros() as u8
                } else {
                    0
                };
                let elf = dir.path().join(format!("{chip}-{flash_size}-{record}.elf"));
                std::fs::write(&elf, idf::c6_app_elf(page, log2, "small_flash", "v1.0.0")).unwrap();
                let out = dir.path().join(format!("{chip}-{flash_size}-{record}.bin"));
                let args = [
                    "--flash-size",
                    flash_size,
                    "--flash-mmu-page-size",
                    page_name,
                ];
                let answer = interop::ask(
                    &py,
                    "esptool_oracle.py",
                    &json!({"op": "elf2image", "chip": chip, "elf": s(&elf),
                            "cases": [{"args": args, "out": s(&out)}]}),
                );
                let rep = &answer["reports"][0];
                let case = format!("{chip} {flash_size} page {page_name} recorded {record}");
                assert_same_report(&out, rep, &case);
                let j: Value =
                    serde_json::from_str(&ok(&["image", "info", s(&out), "--json"])).unwrap();
                assert_eq!(j["chip"], chip, "{case}");
                assert_eq!(j["mmu_page_size_assumed"], page, "{case}");
                assert_eq!(
                    j["mmu_page_size_source"],
                    if record { "app_desc" } else { "flash_size" },
                    "{case}"
                );
                assert_eq!(
                    j["mmu_aligned"], true,
                    "{case}: {}",
                    j["mmu_alignment_error"]
                );
                assert_eq!(j["app"]["mmu_page_size"], log2, "{case}");
                let o = ota(&["image", "info", s(&out)]);
                let note = String::from_utf8_lossy(&o.stderr).into_owned();
                if page < 0x10000 {
                    assert!(
                        note.contains(&format!("{} KB MMU pages", page / 1024)),
                        "{case}: {note}"
                    );
                } else {
                    assert!(note.is_empty(), "{case}: {note}");
                }
                // The segments really are laid out for the small page: under 64 KB pages a
                // flash-mapped segment's data is not where its load address needs it.
                if page < 0x10000 {
                    let segs = j["segments"].as_array().unwrap();
                    let misaligned = segs.iter().any(|g| {
                        let load = g["load_addr"].as_u64().unwrap();
                        let data = g["file_offset"].as_u64().unwrap() + 8;
                        (0x4200_0000..0x4300_0000).contains(&load)
                            && load % 0x10000 != data % 0x10000
                    });
                    assert!(misaligned, "{case}: the image would also fit 64 KB pages");
                }
                n += 1;
            }
        }
    }
    // An image whose segments fit no page the image implies is still read, with a note.
    let elf = dir.path().join("wrong.elf");
    std::fs::write(&elf, idf::c6_app_elf(0x4000, 0, "wrong_page", "v1")).unwrap();
    let out = dir.path().join("wrong.bin");
    let answer = interop::ask(
        &py,
        "esptool_oracle.py",
        &json!({"op": "elf2image", "chip": "esp32c6", "elf": s(&elf),
                "cases": [{"args": ["--flash-size", "4MB", "--flash-mmu-page-size", "16KB"],
                           "out": s(&out)}]}),
    );
    assert_same_report(&out, &answer["reports"][0], "16 KB pages in a 4MB header");
    let o = ota(&["image", "info", s(&out)]);
    assert!(o.status.success(), "{}", common::text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("doesn't match data") && err.contains("64 KB assumed"),
        "{err}"
    );
    let j: Value = serde_json::from_str(&ok(&["image", "info", s(&out), "--json"])).unwrap();
    assert_eq!(j["mmu_aligned"], false);
    eprintln!("interop small MMU pages: {n} C6/H2 images from esptool elf2image, all read as esptool reads them");
}

/// `ota image make --flash-size 1MB` on a chip with a configurable page lays the image out
/// for Kconfig's 16 KB page and records it, as ESP-IDF v5.4+ does; esptool agrees.
#[test]
fn image_make_for_small_flash_uses_kconfig_mmu_page_and_esptool_agrees() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (chip, size, page) in [
        ("esp32c6", "1MB", 0x4000u64),
        ("esp32h2", "2MB", 0x8000),
        ("esp32c2", "1MB", 0x4000),
        ("esp32c3", "1MB", 0x10000),
    ] {
        let out = dir.path().join(format!("{chip}-{size}.bin"));
        ok(&[
            "image",
            "make",
            "--chip",
            chip,
            "--project",
            "p",
            "--version",
            "v1",
            "--flash-size",
            size,
            "--size",
            "90000",
            "--segments",
            "7",
            "-o",
            s(&out),
        ]);
        let j: Value = serde_json::from_str(&ok(&["image", "info", s(&out), "--json"])).unwrap();
        assert_eq!(j["mmu_page_size_assumed"], page, "{chip} {size}");
        assert_eq!(j["mmu_aligned"], true, "{chip} {size}");
        assert_eq!(
            j["app"]["mmu_page_size"],
            page.trailing_zeros(),
            "{chip} {size}"
        );
        files.push(out);
    }
    let answer = interop::ask(
        &py,
        "esptool_oracle.py",
        &json!({"op": "image_info", "files": files.iter().map(|f| s(f)).collect::<Vec<_>>()}),
    );
    for (f, rep) in files.iter().zip(answer["reports"].as_array().unwrap()) {
        assert_same_report(f, rep, "image make small flash");
    }
    let o = ota(&[
        "image",
        "make",
        "--chip",
        "esp32c3",
        "--project",
        "p",
        "--version",
        "v1",
        "--mmu-page-size",
        "16KB",
        "-o",
        s(&dir.path().join("x.bin")),
    ]);
    assert!(
        !o.status.success() && common::text(&o).contains("only 64KB"),
        "{}",
        common::text(&o)
    );
}

/// A segment whose length is not a multiple of 4 breaks a loader rule that esptool image-info
/// does not check: `ota image info` reads it as esptool does and says the bootloader refuses it.
#[test]
fn image_info_reads_a_segment_length_esptool_accepts_and_notes_the_loader_refusal() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.bin");
    ok(&[
        "image",
        "make",
        "--chip",
        "esp32c3",
        "--project",
        "odd",
        "--version",
        "v1",
        "--segments",
        "1",
        "--no-hash",
        "-o",
        s(&base),
    ]);
    let b = std::fs::read(&base).unwrap();
    // Header, segment 0 grown by 2 bytes (length 0x..2), checksum re-placed and recomputed.
    let len = u32::from_le_bytes(b[28..32].try_into().unwrap()) as usize;
    let mut data = b[32..32 + len].to_vec();
    data.extend_from_slice(&[0x12, 0x34]);
    let mut img = b[..24].to_vec();
    img.extend_from_slice(&b[24..28]);
    img.extend_from_slice(&(data.len() as u32).to_le_bytes());
    img.extend_from_slice(&data);
    let chk_at = (img.len() + 1).div_ceil(16) * 16 - 1;
    img.resize(chk_at, 0);
    img.push(data.iter().fold(0xEFu8, |c, x| c ^ x));
    let odd = dir.path().join("odd.bin");
    std::fs::write(&odd, &img).unwrap();
    let answer = interop::ask(
        &py,
        "esptool_oracle.py",
        &json!({"op": "image_info", "files": [s(&odd)]}),
    );
    assert_same_report(
        &odd,
        &answer["reports"][0],
        "segment length not a multiple of 4",
    );
    let o = ota(&["image", "info", s(&odd)]);
    assert!(
        common::text(&o).contains("invalid segment length"),
        "{}",
        common::text(&o)
    );
    let j: Value = serde_json::from_str(&ok(&["image", "info", s(&odd), "--json"])).unwrap();
    assert!(j["segment_length_error"]
        .as_str()
        .unwrap()
        .contains("multiple of 4"));
    // The device's loader refuses it.
    let flash = dir.path().join("f.bin");
    let o = ota(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--chip",
        "esp32c3",
        "--app",
        s(&odd),
    ]);
    assert!(!o.status.success(), "{}", common::text(&o));
}
