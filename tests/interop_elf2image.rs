//! Interop, ELF to app image: `ota image from-elf` against the real `esptool elf2image`
//! (esptool 5.6, in-process, one Python process per test), byte for byte, on the shared
//! ESP32-C6 ELF with each option, on random firmware layouts x chips x option sets, on
//! ESP-IDF-like C6/H2 ELFs and an esp-hal-like ESP32-C3 ELF; and corrupt ELFs refused clearly.

mod common;
mod elfgen;
mod idf;
mod interop;

use std::path::{Path, PathBuf};

use common::*;
use ota_core::Chip;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

struct Case {
    chip: String,
    elf: PathBuf,
    args: Vec<String>,
    label: String,
}

#[derive(Default, Debug)]
struct Tally {
    identical: usize,
    both_refuse: usize,
    /// esptool writes an image with more than 16 segments; ota refuses it (documented).
    over_16: usize,
    /// `--pad-to-size` without a digest: esptool overwrites its image with 0xFF from offset 2;
    /// ota refuses (documented).
    pad_bug: usize,
    /// Why both refused: esptool's last line, counted.
    refusals: std::collections::BTreeMap<String, usize>,
}

/// Run every case through esptool (one process) and through `ota image from-elf`; compare.
fn judge(py: &Path, dir: &Path, cases: &[Case]) -> Tally {
    let outs: Vec<(PathBuf, PathBuf)> = (0..cases.len())
        .map(|i| {
            (
                dir.join(format!("c{i}.esptool.bin")),
                dir.join(format!("c{i}.ota.bin")),
            )
        })
        .collect();
    let req: Vec<Value> = cases
        .iter()
        .zip(&outs)
        .map(|(c, (e, _))| json!({"chip": c.chip, "elf": s(&c.elf), "args": c.args, "out": s(e)}))
        .collect();
    let answer = interop::ask(
        py,
        "esptool_oracle.py",
        &json!({"op": "elf2image_cases", "cases": req}),
    );
    let results = answer["results"].as_array().unwrap();
    let mut t = Tally::default();
    for ((c, (theirs, ours)), r) in cases.iter().zip(&outs).zip(results) {
        let mut argv = vec![
            "image",
            "from-elf",
            s(&c.elf),
            "-o",
            s(ours),
            "--chip",
            &c.chip,
        ];
        argv.extend(c.args.iter().map(String::as_str));
        let o = ota(&argv);
        let esptool_ok = r["ok"] == true;
        let why = String::from_utf8_lossy(&o.stderr).into_owned();
        match (esptool_ok, o.status.success()) {
            (true, true) => {
                let (a, b) = (std::fs::read(theirs).unwrap(), std::fs::read(ours).unwrap());
                if a != b {
                    let at = a.iter().zip(&b).position(|(x, y)| x != y);
                    panic!(
                        "{}: images differ (esptool {} bytes, ota {} bytes, first difference at \
                         {:?}); args {:?}",
                        c.label,
                        a.len(),
                        b.len(),
                        at,
                        c.args
                    );
                }
                t.identical += 1;
            }
            (false, false) => {
                assert!(
                    !ours.exists(),
                    "{}: ota refused but wrote {}",
                    c.label,
                    ours.display()
                );
                assert!(
                    why.contains("error"),
                    "{}: no error message: {why}",
                    c.label
                );
                t.both_refuse += 1;
                let last = r["error"]
                    .as_str()
                    .unwrap_or("")
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or("");
                let key: String = last.chars().take(60).collect();
                *t.refusals.entry(key).or_default() += 1;
            }
            (true, false) => {
                let a = std::fs::read(theirs).unwrap();
                if why.contains("overwrites the image with 0xFF") {
                    assert!(
                        a[2..18].iter().all(|&b| b == 0xFF),
                        "{}: esptool's image is intact",
                        c.label
                    );
                    t.pad_bug += 1;
                    continue;
                }
                assert!(
                    a[1] > 16 && why.contains("at most 16"),
                    "{}: esptool converts, ota refuses: {why}; args {:?}",
                    c.label,
                    c.args
                );
                t.over_16 += 1;
            }
            (false, true) => panic!(
                "{}: esptool refuses ({}), ota converts; args {:?}",
                c.label, r["error"], c.args
            ),
        }
    }
    t
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn from_elf_matches_esptool_on_the_shared_c6_elf_with_each_option() {
    let Some(v) = vectors() else { return };
    let Some(py) = python() else { return };
    let elf = v.join("esptool/esp32c6-appdesc.elf");
    let dir = tempfile::tempdir().unwrap();
    let mut option_sets: Vec<Vec<&str>> = vec![vec![]];
    for m in ["qio", "qout", "dio", "dout"] {
        option_sets.push(vec!["--flash-mode", m]);
    }
    for sz in ["1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"] {
        option_sets.push(vec!["--flash-size", sz]);
    }
    for (f, _) in Chip::Esp32c6.flash_freqs() {
        option_sets.push(vec!["--flash-freq", f]);
    }
    for p in ["8KB", "16KB", "32KB", "64KB"] {
        option_sets.push(vec!["--flash-mmu-page-size", p]);
    }
    option_sets.extend([
        vec!["--min-rev", "3"],
        vec!["--min-rev-full", "101"],
        vec!["--max-rev-full", "199"],
        vec!["--secure-pad-v2"],
        vec!["--dont-append-digest"],
        vec!["--use-segments"],
        vec!["--ram-only-header"],
        vec!["--pad-to-size", "4KB"],
        vec!["--pad-to-size", "1MB"],
        vec!["--elf-sha256-offset", "0xb0"],
        vec!["--elf-sha256-offset", "0x20"],
        vec![
            "--secure-pad-v2",
            "--flash-mmu-page-size",
            "16KB",
            "--pad-to-size",
            "64KB",
        ],
        vec!["--dont-append-digest", "--secure-pad-v2"],
        vec!["--dont-append-digest", "--pad-to-size", "4KB"],
        vec![
            "--flash-mode",
            "dio",
            "--flash-size",
            "4MB",
            "--flash-freq",
            "80m",
        ],
    ]);
    let cases: Vec<Case> = option_sets
        .iter()
        .map(|a| Case {
            chip: "esp32c6".into(),
            elf: elf.clone(),
            args: strings(a),
            label: format!("shared C6 ELF {a:?}"),
        })
        .collect();
    let t = judge(&py, dir.path(), &cases);
    eprintln!("shared C6 ELF: {} option sets: {t:?}", cases.len());
    // Only `--dont-append-digest --secure-pad-v2` and the non-zero 0x20 offset are refused.
    // esptool's --pad-to-size without a digest wipes its image: ota refuses that one.
    assert_eq!((t.both_refuse, t.pad_bug), (2, 1), "{t:?}");
    assert_eq!(t.identical, cases.len() - 3);
}

/// A random esptool option set for `chip`.
fn random_args(rng: &mut impl Rng, chip: Chip) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |v: &[&str]| a.extend(v.iter().map(|s| s.to_string()));
    if rng.gen_bool(0.7) {
        push(&[
            "--flash-mode",
            ["qio", "qout", "dio", "dout"].choose(rng).unwrap(),
        ]);
    }
    if rng.gen_bool(0.7) {
        let sizes = ["1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"];
        push(&["--flash-size", sizes.choose(rng).unwrap()]);
    }
    if rng.gen_bool(0.6) {
        push(&["--flash-freq", chip.flash_freqs().choose(rng).unwrap().0]);
    }
    let r = rng.gen_range(0..=255u16).to_string();
    if rng.gen_bool(0.2) {
        push(&["--min-rev", &r]);
    }
    let r = rng.gen_range(0..=399u16).to_string();
    if rng.gen_bool(0.3) {
        push(&["--min-rev-full", &r]);
    }
    let r = rng.gen_range(0..=65535u16).to_string();
    if rng.gen_bool(0.3) {
        push(&["--max-rev-full", &r]);
    }
    if rng.gen_bool(0.25) {
        push(&["--secure-pad-v2"]);
    } else if chip == Chip::Esp32 && rng.gen_bool(0.3) {
        push(&["--secure-pad"]);
    }
    if rng.gen_bool(0.15) {
        push(&["--dont-append-digest"]);
    }
    if rng.gen_bool(0.2) {
        push(&["--use-segments"]);
    }
    if rng.gen_bool(0.12) {
        push(&["--ram-only-header"]);
    }
    if rng.gen_bool(0.2) {
        push(&[
            "--pad-to-size",
            ["4KB", "64KB", "1MB", "16KB"].choose(rng).unwrap(),
        ]);
    }
    if rng.gen_bool(0.08) {
        push(&[
            "--elf-sha256-offset",
            ["0xb0", "0x1000", "0x40000000"].choose(rng).unwrap(),
        ]);
    }
    if rng.gen_bool(0.4) {
        let sizes = chip.mmu_page_sizes_log2();
        let p = if sizes.is_empty() {
            16
        } else {
            *sizes.choose(rng).unwrap()
        };
        push(&[
            "--flash-mmu-page-size",
            &format!("{}KB", (1u32 << p) / 1024),
        ]);
    }
    a
}

#[test]
fn from_elf_matches_esptool_on_random_layouts_chips_and_options() {
    let Some(py) = python() else { return };
    let seed = interop::seed("elf2image");
    let mut rng = interop::rng(seed);
    let exhaustive = std::env::var_os("OTA_INTEROP_EXHAUSTIVE").is_some();
    let n = interop::cases(if exhaustive { 1500 } else { 100 });
    let tmp = tempfile::tempdir().unwrap();
    // OTA_INTEROP_KEEP=1 keeps the ELFs and images to replay a failing case by hand.
    let kept = std::env::var_os("OTA_INTEROP_KEEP").map(|_| tempfile::tempdir().unwrap().keep());
    let dir_path = kept.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    if let Some(k) = &kept {
        eprintln!("keeping {}", k.display());
    }
    let mut cases = Vec::new();
    for i in 0..n {
        let chip = Chip::ALL[i % Chip::ALL.len()];
        let sizes = chip.mmu_page_sizes_log2();
        let log2 = if sizes.is_empty() {
            16
        } else {
            *sizes.choose(&mut rng).unwrap()
        };
        let page = 1u32 << log2;
        let desc_log2 = if rng.gen_bool(0.5) { log2 } else { 0 };
        let (elf, what) = match (chip, i % 5) {
            (Chip::Esp32c6 | Chip::Esp32h2, 0) => (
                idf::c6_app_elf(page, desc_log2, "idf_like", "v9.9"),
                format!("ESP-IDF-like {} page {page:#x}", chip.name()),
            ),
            (Chip::Esp32c3, 0) => (elfgen::esp_hal_c3(&mut rng), "esp-hal-like C3".into()),
            _ => {
                let l = elfgen::random_layout(&mut rng, chip, page, desc_log2);
                (l.elf, l.describe)
            }
        };
        let path = dir_path.join(format!("e{i}.elf"));
        std::fs::write(&path, elf).unwrap();
        cases.push(Case {
            chip: chip.name().into(),
            elf: path,
            args: random_args(&mut rng, chip),
            label: format!("case {i} ({what})"),
        });
    }
    let t = judge(&py, &dir_path, &cases);
    eprintln!(
        "elf2image interop: {} cases: {} identical images, {} refused by both, {} with more \
         than 16 segments refused by ota, {} --pad-to-size without digest refused by ota",
        n, t.identical, t.both_refuse, t.over_16, t.pad_bug
    );
    assert!(
        t.identical * 10 >= n * 6,
        "too few cases convert ({t:?}): the generator no longer tests the conversion"
    );
}

/// A valid small RISC-V ELF for the refusal tests.
fn good_elf() -> Vec<u8> {
    use elfgen::*;
    let secs = vec![
        Sec::new(
            ".flash.text",
            0x4200_0020,
            SHF_ALLOC | SHF_EXECINSTR,
            vec![1; 64],
        ),
        Sec::new(
            ".dram0.data",
            0x3FC8_0000,
            SHF_ALLOC | SHF_WRITE,
            vec![2; 64],
        ),
    ];
    write_elf(0xF3, 0x4200_0020, &secs, true)
}

fn refused(dir: &Path, name: &str, bytes: &[u8], chip: &str, expect: &str) {
    let elf = dir.join(format!("{name}.elf"));
    std::fs::write(&elf, bytes).unwrap();
    let out = dir.join(format!("{name}.bin"));
    let o = ota(&["image", "from-elf", s(&elf), "-o", s(&out), "--chip", chip]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{name}: converted");
    assert!(err.contains(expect), "{name}: {err:?} lacks {expect:?}");
    assert!(
        err.contains(s(&elf)),
        "{name}: {err:?} does not name the file"
    );
    assert!(!out.exists(), "{name}: wrote an image");
}

#[test]
fn from_elf_refuses_corrupt_and_foreign_elfs_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = good_elf();
    let elf = d.join("good.elf");
    std::fs::write(&elf, &good).unwrap();
    ok(&[
        "image",
        "from-elf",
        s(&elf),
        "-o",
        s(&d.join("good.bin")),
        "--chip",
        "esp32c3",
    ]);
    // Without -o: the ELF's name with .bin, as esptool; the same bytes.
    let other = d.join("other.elf");
    std::fs::write(&other, &good).unwrap();
    ok(&["image", "from-elf", s(&other), "--chip", "esp32c3"]);
    assert_eq!(
        std::fs::read(d.join("other.bin")).unwrap(),
        std::fs::read(d.join("good.bin")).unwrap()
    );
    // Truncated anywhere: in the header, the program headers, the data, the section headers.
    for cut in [0, 20, 51, 60, good.len() / 2, good.len() - 1] {
        let o = ota(&[
            "image",
            "from-elf",
            &{
                let p = d.join(format!("cut{cut}.elf"));
                std::fs::write(&p, &good[..cut]).unwrap();
                p.to_str().unwrap().to_string()
            },
            "-o",
            s(&d.join("cut.bin")),
            "--chip",
            "esp32c3",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "cut at {cut}: converted");
        assert!(
            err.contains("truncated") || err.contains("outside") || err.contains("not an ELF"),
            "cut at {cut}: {err}"
        );
    }
    let mut b = good.clone();
    b[4] = 2;
    refused(d, "class64", &b, "esp32c3", "not ELFCLASS32");
    let mut b = good.clone();
    b[5] = 2;
    refused(d, "bigendian", &b, "esp32c3", "not little endian");
    let mut b = good.clone();
    b[18] = 0x28; // EM_ARM
    refused(d, "arm", &b, "esp32c3", "neither Xtensa");
    refused(
        d,
        "riscv_for_xtensa",
        &good,
        "esp32s3",
        "the ELF is for RISC-V (e_machine 0x00f3), ESP32-S3 is Xtensa",
    );
    // Overlapping sections.
    use elfgen::*;
    let secs = vec![
        Sec::new(".dram0.data", 0x3FC8_0000, SHF_ALLOC, vec![2; 64]),
        Sec::new(".dram0.bss_init", 0x3FC8_0020, SHF_ALLOC, vec![3; 64]),
    ];
    refused(
        d,
        "overlap",
        &write_elf(0xF3, 0, &secs, false),
        "esp32c3",
        "section .dram0.bss_init at 0x3fc80020 overlaps section .dram0.data [0x3fc80000, 0x3fc80040)",
    );
    // Section data beyond the end of the file: point the first section's offset past it.
    let mut b = write_elf(0xF3, 0, &secs[..1], false);
    let shoff = u32::from_le_bytes(b[32..36].try_into().unwrap()) as usize;
    let at = shoff + 40 + 16;
    b[at..at + 4].copy_from_slice(&0x10_0000u32.to_le_bytes());
    refused(
        d,
        "data_outside",
        &b,
        "esp32c3",
        "section 1 (.dram0.data): data at offset 0x100000",
    );
    // A section name that runs off the name table.
    let mut b = write_elf(0xF3, 0, &secs[..1], false);
    b[shoff + 40..shoff + 44].copy_from_slice(&0xFFFFu32.to_le_bytes());
    refused(
        d,
        "bad_name",
        &b,
        "esp32c3",
        "section 1: name at offset 0xffff",
    );
    // No section headers; wrong section header size.
    let mut b = good.clone();
    b[48..50].copy_from_slice(&0u16.to_le_bytes());
    refused(d, "no_sections", &b, "esp32c3", "0 section headers");
    let mut b = good.clone();
    b[46..48].copy_from_slice(&64u16.to_le_bytes());
    refused(d, "shentsize", &b, "esp32c3", "e_shentsize 0x40");
    // Converting by segments without program headers.
    let b = write_elf(0xF3, 0, &secs[..1], false);
    let p = d.join("nophdr.elf");
    std::fs::write(&p, &b).unwrap();
    let o = ota(&[
        "image",
        "from-elf",
        s(&p),
        "-o",
        s(&d.join("x.bin")),
        "--chip",
        "esp32c3",
        "--use-segments",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no program headers"));
    // Options the chip cannot take.
    let o = ota(&[
        "image",
        "from-elf",
        s(&elf),
        "-o",
        s(&d.join("x.bin")),
        "--chip",
        "esp32c3",
        "--flash-mmu-page-size",
        "16KB",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ESP32-C3 can use (only 64KB)"),
        "{}",
        text(&o)
    );
    let o = ota(&[
        "image",
        "from-elf",
        s(&elf),
        "-o",
        s(&d.join("x.bin")),
        "--chip",
        "esp32c3",
        "--secure-pad",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Secure Boot v1 padding is for the ESP32 only"),
        "{}",
        text(&o)
    );
    assert!(!d.join("x.bin").exists());
}

#[test]
fn from_elf_pads_esp32_flash_segments_that_end_just_past_a_page_as_esptool_does() {
    let Some(py) = python() else { return };
    use elfgen::*;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = interop::rng(interop::seed("elf2image esp32 page tail"));
    let mut cases = Vec::new();
    // The rodata segment's data starts at file offset 0x20: it ends `d` bytes past the first
    // 64 KB page boundary of the file when its length is 0x10000 - 0x20 + d.
    let ds = [-8i32, -4, 0, 4, 0x10, 0x20, 0x24, 0x28];
    for (i, d) in ds.iter().enumerate() {
        let len = (0x1_0000 - 0x20 + d) as usize;
        let secs = vec![
            Sec::new(".flash.rodata", 0x3F40_0020, SHF_ALLOC, fill(&mut rng, len)),
            Sec::new(
                ".flash.text",
                0x400E_0020 + 0x1_0000 * (i as u32 % 2),
                SHF_ALLOC | SHF_EXECINSTR,
                fill(&mut rng, 0x1_0000 - 0x40 + 8 * i),
            ),
            Sec::new(
                ".dram0.data",
                0x3FFB_0000,
                SHF_ALLOC | SHF_WRITE,
                fill(&mut rng, 0x200),
            ),
            Sec::new(
                ".iram0.text",
                0x4008_0000,
                SHF_ALLOC | SHF_EXECINSTR,
                fill(&mut rng, 0x8000),
            ),
        ];
        let path = dir.path().join(format!("tail{i}.elf"));
        std::fs::write(&path, write_elf(0x5E, 0x4008_0000, &secs, false)).unwrap();
        for args in [vec![], vec!["--secure-pad"], vec!["--ram-only-header"]] {
            cases.push(Case {
                chip: "esp32".into(),
                elf: path.clone(),
                args: strings(&args),
                label: format!("ESP32 rodata ending {d:+} past a page {args:?}"),
            });
        }
    }
    let t = judge(&py, dir.path(), &cases);
    eprintln!("ESP32 page tail: {} cases: {t:?}", cases.len());
    assert_eq!(t.identical, cases.len(), "{t:?}");
    // The workaround did apply: the rodata segment ending 0x10 past the page grew to 0x24.
    let img = std::fs::read(dir.path().join("c12.ota.bin")).unwrap();
    let first_len = u32::from_le_bytes(img[0x1C..0x20].try_into().unwrap());
    assert_eq!(first_len, 0x1_0000 - 0x20 + 0x24, "{first_len:#x}");
}

#[test]
fn an_image_made_by_from_elf_installs_and_boots_on_the_emulated_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The descriptor records the page (ESP-IDF v5.4+) or not (older: from its address).
    for (chip, record) in [("esp32c6", true), ("esp32h2", false)] {
        let (page, size) = (0x1_0000u32, "4MB");
        let elf = d.join(format!("{chip}.elf"));
        std::fs::write(
            &elf,
            idf::c6_app_elf(page, if record { 16 } else { 0 }, "from_elf", "v3.2.1"),
        )
        .unwrap();
        let app = d.join(format!("{chip}.bin"));
        ok(&[
            "image",
            "from-elf",
            s(&elf),
            "-o",
            s(&app),
            "--chip",
            chip,
            "--flash-mode",
            "dio",
            "--flash-size",
            size,
        ]);
        let flash = d.join(format!("{chip}.flash"));
        ok(&[
            "device",
            "create",
            "--flash",
            s(&flash),
            "--chip",
            chip,
            "--flash-size",
            size,
            "--app",
            s(&app),
        ]);
        let out = ok(&["device", "boot", "--flash", s(&flash), "--json"]);
        let j: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["project_name"], "from_elf", "{chip}: {out}");
        let info = ok(&["image", "info", s(&app), "--json"]);
        let j: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(j["checksum_valid"], true, "{info}");
        assert_eq!(j["hash_valid"], true, "{info}");
        assert_eq!(j["mmu_aligned"], true, "{info}");
        assert_eq!(j["app"]["version"], "v3.2.1", "{info}");
    }
}
