//! Interop, partition tables: random valid gen_esp32part CSVs give the same binary from
//! ota-core (what `ota partition-table` runs) as from esp-idf-defs'
//! `PartitionTable.from_csv(...).verify(); .to_binary()`; binary -> CSV -> binary is the
//! identity and our CSV equals theirs; invalid CSVs are refused by both, ours with a clear
//! message. Our side runs in-process; a sample also goes through the `ota partition-table` CLI.

mod common;
mod interop;

use std::collections::HashSet;

use common::*;
use ota_core::partition::{CsvOptions, PartitionTable, ReadRule, TABLE_MAX_LEN};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

const APP_SUBTYPES: &[&str] = &[
    "factory", "test", "ota_0", "ota_1", "ota_2", "ota_3", "ota_4", "ota_5", "ota_6", "ota_7",
    "ota_8", "ota_9", "ota_10", "ota_11", "ota_12", "ota_13", "ota_14", "ota_15", "tee_0", "tee_1",
];
const DATA_SUBTYPES: &[&str] = &[
    "phy",
    "nvs",
    "coredump",
    "nvs_keys",
    "efuse",
    "undefined",
    "esphttpd",
    "fat",
    "spiffs",
    "littlefs",
];

/// One generated case: the CSV and the options both sides get.
#[derive(Clone, Debug)]
struct Case {
    csv: String,
    table_offset: u32,
    primary_bl: Option<u32>,
    recovery_bl: Option<u32>,
    md5: bool,
    /// For invalid cases: what was broken, and words our message must contain.
    broken: Option<(&'static str, &'static [&'static str])>,
}

impl Case {
    fn opts(&self) -> CsvOptions {
        CsvOptions {
            table_offset: self.table_offset,
            primary_bootloader_offset: self.primary_bl,
            recovery_bootloader_offset: self.recovery_bl,
            ..CsvOptions::default()
        }
    }
    fn json(&self) -> Value {
        json!({"csv": self.csv, "table_offset": self.table_offset,
               "primary_bootloader_offset": self.primary_bl,
               "recovery_bootloader_offset": self.recovery_bl, "md5": self.md5})
    }
}

/// A number as gen_esp32part accepts it: hex, decimal, or with a K/M suffix when it divides.
fn num(rng: &mut StdRng, v: u64) -> String {
    let mut forms = vec![format!("0x{:x}", v), format!("{}", v), format!("0X{:X}", v)];
    if v.is_multiple_of(1 << 20) && v > 0 {
        forms.push(format!("{}M", v >> 20));
        forms.push(format!("{}m", v >> 20));
    }
    if v.is_multiple_of(1024) && v > 0 {
        forms.push(format!("{}K", v >> 10));
        forms.push(format!("{}k", v >> 10));
        forms.push(format!("0x{:x}K", v >> 10));
    }
    forms.choose(rng).unwrap().clone()
}

fn random_case(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.5) {
        String::new()
    } else if rng.gen_bool(0.5) {
        "upper".into()
    } else {
        "title".into()
    }
}

fn cased(word: &str, how: &str) -> String {
    match how {
        "upper" => word.to_uppercase(),
        "title" => {
            let mut c = word.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
        _ => word.to_string(),
    }
}

/// A unique label (unique also after the binary's 16-byte truncation).
fn label(rng: &mut StdRng, used: &mut HashSet<String>) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
    loop {
        let n = if rng.gen_bool(0.1) {
            rng.gen_range(17..24)
        } else {
            rng.gen_range(1..=16)
        };
        let mut s: String = (0..n)
            .map(|_| *CHARS.choose(rng).unwrap() as char)
            .collect();
        if rng.gen_bool(0.05) {
            s = format!("phy_инит{}", used.len() % 10); // UTF-8, 12..13 bytes
        }
        let key: String = s.bytes().take(16).map(|b| b as char).collect();
        if used.insert(key) {
            return s;
        }
    }
}

fn round_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// A random valid CSV (every type/subtype name, custom types, implicit/explicit offsets, K/M,
/// negative sizes, flags, comments, blank lines) and the options to read it with.
fn valid_case(rng: &mut StdRng, many: bool) -> Case {
    let table_offset = *[0x8000u32, 0x9000, 0xA000, 0x10000].choose(rng).unwrap();
    let primary_bl = *[0x0u32, 0x1000, 0x2000].choose(rng).unwrap();
    let md5 = rng.gen_bool(0.8);
    let rows_wanted = if many {
        if md5 {
            94
        } else {
            95
        }
    } else {
        rng.gen_range(1..=24)
    };
    let mut used = HashSet::new();
    let mut lines: Vec<String> = Vec::new();
    if rng.gen_bool(0.7) {
        lines.push("# Name, Type, SubType, Offset, Size, Flags".into());
    }
    let mut last_end = u64::from(table_offset) + 0x1000;
    let (mut have_otadata, mut have_tee_ota, mut have_bl, mut have_pt) =
        (false, false, false, false);
    let mut recovery_bl = None;
    let mut rows = 0;
    let sep = |rng: &mut StdRng| if rng.gen_bool(0.3) { ",  " } else { "," };
    while rows < rows_wanted {
        if rng.gen_bool(0.1) {
            lines.push(String::new());
        }
        if rng.gen_bool(0.08) {
            lines.push(format!("# comment {}", rows));
        }
        let name = label(rng, &mut used);
        let kind = if many { 1 } else { rng.gen_range(0..12) };
        let case = random_case(rng);
        // (type text, subtype text, is_app, forced offset/size, alignment, readonly allowed, min size)
        let (ttext, stext, ptype, subname): (String, String, u8, &str) = match kind {
            0..=3 => {
                let st = *APP_SUBTYPES.choose(rng).unwrap();
                let stext = if rng.gen_bool(0.1) {
                    {
                        let v = rng.gen_range(0x21..0x30);
                        num(rng, v)
                    }
                } else {
                    cased(st, &case)
                };
                (cased("app", &case), stext, 0, st)
            }
            4..=7 => {
                let mut st = *DATA_SUBTYPES.choose(rng).unwrap();
                if !have_otadata && rng.gen_bool(0.3) {
                    st = "ota";
                } else if !have_tee_ota && rng.gen_bool(0.1) {
                    st = "tee_ota";
                }
                let stext = if st == "undefined" && rng.gen_bool(0.5) {
                    String::new()
                } else if rng.gen_bool(0.1)
                    && st != "ota"
                    && st != "tee_ota"
                    && st != "nvs"
                    && st != "coredump"
                {
                    st = "num";
                    {
                        let v = rng.gen_range(0x91..0xFF);
                        num(rng, v)
                    }
                } else {
                    cased(st, &case)
                };
                let t = if rng.gen_bool(0.2) {
                    num(rng, 1)
                } else {
                    cased("data", &case)
                };
                (t, stext, 1, st)
            }
            8 if !have_bl => {
                let st = *["primary", "ota", "recovery"].choose(rng).unwrap();
                if st == "recovery" && recovery_bl.is_some() {
                    continue;
                }
                if st == "primary" {
                    have_bl = true;
                }
                (cased("bootloader", &case), cased(st, &case), 2, st)
            }
            9 if !have_pt => {
                let st = *["primary", "ota"].choose(rng).unwrap();
                if st == "primary" {
                    have_pt = true;
                }
                (cased("partition_table", &case), cased(st, &case), 3, st)
            }
            _ => {
                let t: u64 = rng.gen_range(0x40..=0xFE);
                (
                    num(rng, t),
                    {
                        let v = rng.gen_range(0..=0xFE);
                        num(rng, v)
                    },
                    t as u8,
                    "custom",
                )
            }
        };
        let is_app = ptype == 0;
        let align: u64 = if is_app { 0x10000 } else { 0x1000 };
        let bl_size = u64::from(table_offset - primary_bl);
        let mut size: u64 = match (ptype, subname) {
            (1, "ota") | (1, "tee_ota") => 0x2000,
            (2, _) => bl_size,
            (3, _) => 0x1000,
            (0, _) => rng.gen_range(1..=64u64) * 0x1000,
            _ => {
                if rng.gen_bool(0.8) {
                    rng.gen_range(1..=32u64) * 0x1000
                } else {
                    rng.gen_range(1..=0x8000u64)
                }
            }
        };
        if subname == "nvs" && size < 0x3000 && rng.gen_bool(0.5) {
            size = 0x3000 + rng.gen_range(0..4u64) * 0x1000;
        }
        match subname {
            "ota" if ptype == 1 => have_otadata = true,
            "tee_ota" => have_tee_ota = true,
            _ => {}
        }
        let primary = (ptype == 2 || ptype == 3) && subname == "primary";
        let recovery = ptype == 2 && subname == "recovery";
        // Offset: forced (primary rows, recovery), explicit (>= last_end, aligned) or implicit.
        let offset: u64;
        let mut otext = String::new();
        if primary {
            offset = if ptype == 2 {
                u64::from(primary_bl)
            } else {
                u64::from(table_offset)
            };
            if rng.gen_bool(0.5) {
                otext = "N/A".into();
            }
        } else if recovery {
            offset = round_up(last_end, 0x1000) + rng.gen_range(0..4u64) * 0x1000;
            recovery_bl = Some(offset as u32);
        } else if rng.gen_bool(0.4) {
            offset = round_up(last_end, align) + rng.gen_range(0..3u64) * align;
            otext = num(rng, offset);
        } else {
            offset = round_up(last_end, align);
        }
        // Size text: negative "-END" now and then (not for forced sizes).
        let stext_size = if ptype == 2 || ptype == 3 {
            if rng.gen_bool(0.5) {
                "ignored".into()
            } else {
                num(rng, size)
            }
        } else if rng.gen_bool(0.15) {
            format!("-{}", num(rng, offset + size))
        } else {
            num(rng, size)
        };
        if !primary {
            last_end = offset + size;
        }
        // Flags.
        let always_rw = ptype == 1 && (subname == "ota" || subname == "coredump");
        let mut flags = Vec::new();
        if rng.gen_bool(0.15) {
            flags.push("encrypted");
        }
        let nvs_small = ptype == 1 && subname == "nvs" && size < 0x3000;
        if nvs_small || (!always_rw && rng.gen_bool(0.1)) {
            flags.push("readonly");
        }
        flags.shuffle(rng);
        let s = sep(rng);
        let mut line = format!(
            "{}{s}{}{s}{}{s}{}{s}{}",
            name, ttext, stext, otext, stext_size
        );
        let extra = rng.gen_bool(0.05);
        if !flags.is_empty() || extra || rng.gen_bool(0.5) {
            line.push_str(s);
            line.push_str(&flags.join(":"));
        }
        if extra {
            line.push_str(", extra column");
        }
        if rng.gen_bool(0.1) {
            line = format!("  {}  ", line);
        }
        lines.push(line);
        rows += 1;
    }
    Case {
        csv: lines.join(if rng.gen_bool(0.1) { "\r\n" } else { "\n" }) + "\n",
        table_offset,
        primary_bl: Some(primary_bl),
        recovery_bl: recovery_bl.or(Some(0x3F_0000 + table_offset)),
        md5,
        broken: None,
    }
}

/// A valid case broken in one way that both tools must refuse.
fn invalid_case(rng: &mut StdRng, kind: usize) -> Case {
    let mut c = valid_case(rng, false);
    c.csv = c.csv.replace("\r\n", "\n");
    let rows: Vec<&str> = c
        .csv
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .collect();
    let first_name = rows[0].split(',').next().unwrap().trim().to_string();
    let (extra, broken): (String, (&'static str, &'static [&'static str])) = match kind {
        0 => (
            "overlapper, data, fat, 0x9000, 0x1000\n".into(),
            ("overlap", &["overlap"]),
        ),
        1 => (
            "misaligned, app, ota_3, 0x7801000, 0x10000\n".into(),
            ("app offset not 64 KiB aligned", &["not aligned"]),
        ),
        2 => (
            "oddsize, app, ota_4, , 0x10800\n".into(),
            ("app size not 4 KiB aligned", &["not aligned"]),
        ),
        3 => (
            format!("{}, data, fat, , 0x1000\n", first_name),
            ("duplicate name", &["unique"]),
        ),
        4 => (
            "typo, apps, factory, , 1M\n".into(),
            ("unknown type keyword", &["Known keywords", "apps"]),
        ),
        5 => (
            "typo2, data, nvs2, , 0x4000\n".into(),
            ("unknown subtype keyword", &["Known keywords", "nvs2"]),
        ),
        6 => (
            "flagged, data, fat, , 0x1000, secure\n".into(),
            ("unknown flag", &["unknown flag", "secure"]),
        ),
        7 => (
            "otadata2, data, ota, , 0x1000\n".into(),
            ("otadata size", &["otadata"]),
        ),
        _ => {
            let mut s = String::new();
            for i in 0..96 {
                s.push_str(&format!("many{}, data, fat, , 0x1000\n", i));
            }
            (s, ("too many entries", &["partitions", "95"]))
        }
    };
    // The broken row goes last, with an implicit or a far offset, so it is what is judged.
    c.csv.push_str(&extra);
    c.md5 = true;
    c.broken = Some(broken);
    c
}

fn ours(c: &Case) -> Result<[u8; TABLE_MAX_LEN], String> {
    let t = PartitionTable::from_csv(&c.csv, &c.opts()).map_err(|e| e.to_string())?;
    let mut bin = [0xFFu8; TABLE_MAX_LEN];
    t.to_binary(c.md5, &mut bin).map_err(|e| e.to_string())?;
    Ok(bin)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{:02x}", x)).collect()
}

#[test]
fn random_csvs_give_the_same_binary_and_csv_as_esp_idf_defs() {
    let Some(py) = python() else { return };
    let seed = interop::seed("partition-table");
    let mut rng = interop::rng(seed);
    let n = interop::cases(400);
    let mut cases: Vec<Case> = (0..n).map(|i| valid_case(&mut rng, i % 50 == 49)).collect();
    let invalid: Vec<Case> = (0..interop::cases(400) / 4)
        .map(|i| invalid_case(&mut rng, i % 9))
        .collect();
    cases.extend(invalid.iter().cloned());
    let answer = interop::ask(
        &py,
        "partition_oracle.py",
        &json!({"cases": cases.iter().map(Case::json).collect::<Vec<_>>()}),
    );
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), cases.len());
    let (mut valid_n, mut refused_n, mut identity_n) = (0, 0, 0);
    for (i, (c, r)) in cases.iter().zip(results).enumerate() {
        let ctx = || {
            format!(
                "case {} (table offset {:#x}, md5 {}):\n{}",
                i, c.table_offset, c.md5, c.csv
            )
        };
        match (&c.broken, ours(c)) {
            (None, Ok(bin)) => {
                assert_eq!(
                    r["ok"],
                    true,
                    "esp-idf-defs refuses a valid table: {}\n{}",
                    r["error"],
                    ctx()
                );
                assert_eq!(
                    hex(&bin),
                    r["bin"].as_str().unwrap(),
                    "binary differs\n{}",
                    ctx()
                );
                // binary -> CSV: ours equals theirs; CSV -> binary is the identity.
                let t = PartitionTable::parse(&bin, ReadRule::GenTool).unwrap();
                let mut csv = String::new();
                t.write_csv(&mut csv).unwrap();
                assert_eq!(csv, r["csv"].as_str().unwrap(), "to_csv differs\n{}", ctx());
                let back = PartitionTable::from_csv(&csv, &c.opts()).unwrap_or_else(|e| {
                    panic!("our own CSV is refused: {}\n{}\n{}", e, csv, ctx())
                });
                let mut bin2 = [0xFFu8; TABLE_MAX_LEN];
                back.to_binary(c.md5, &mut bin2).unwrap();
                assert_eq!(
                    hex(&bin2),
                    hex(&bin),
                    "binary -> CSV -> binary changed\n{}",
                    ctx()
                );
                valid_n += 1;
                identity_n += 1;
            }
            (None, Err(e)) => panic!(
                "we refuse a valid table: {}\n(esp-idf-defs: {})\n{}",
                e,
                r["ok"],
                ctx()
            ),
            (Some((what, words)), res) => {
                let e = match res {
                    Err(e) => e,
                    Ok(_) => panic!("we accept a table with {}\n{}", what, ctx()),
                };
                assert_eq!(
                    r["ok"],
                    false,
                    "esp-idf-defs accepts a table with {}\n{}",
                    what,
                    ctx()
                );
                assert!(
                    words.iter().all(|w| e.contains(w)),
                    "our message for {} is unclear: {:?}\n{}",
                    what,
                    e,
                    ctx()
                );
                refused_n += 1;
            }
        }
    }
    assert!(
        valid_n >= 300 && refused_n >= 90,
        "{} valid, {} refused",
        valid_n,
        refused_n
    );
    // The CLI path on a sample: `ota partition-table` CSV -> binary and binary -> CSV.
    let dir = tempfile::tempdir().unwrap();
    let mut cli_n = 0;
    for (i, (c, r)) in cases
        .iter()
        .zip(results)
        .enumerate()
        .filter(|(i, _)| i % 16 == 0)
    {
        let csv_in = dir.path().join(format!("c{}.csv", i));
        let bin_out = dir.path().join(format!("c{}.bin", i));
        std::fs::write(&csv_in, &c.csv).unwrap();
        let to = format!("{:#x}", c.table_offset);
        let pbl = format!("{:#x}", c.primary_bl.unwrap());
        let rbl = format!("{:#x}", c.recovery_bl.unwrap());
        let mut args = vec![
            "partition-table",
            s(&csv_in),
            "-o",
            s(&bin_out),
            "--offset",
            &to,
            "--primary-bootloader-offset",
            &pbl,
            "--recovery-bootloader-offset",
            &rbl,
        ];
        if !c.md5 {
            args.push("--disable-md5sum");
        }
        let o = ota(&args);
        if c.broken.is_some() {
            assert!(
                !o.status.success(),
                "case {}: the CLI accepts a broken table",
                i
            );
            assert!(text(&o).contains("error: "), "case {}: {}", i, text(&o));
        } else {
            assert!(o.status.success(), "case {}: {}", i, text(&o));
            let bin = std::fs::read(&bin_out).unwrap();
            assert_eq!(
                hex(&bin),
                r["bin"].as_str().unwrap(),
                "case {}: CLI binary differs",
                i
            );
            let csv_out = dir.path().join(format!("c{}.out.csv", i));
            let args = vec![
                "partition-table",
                s(&bin_out),
                "-o",
                s(&csv_out),
                "--offset",
                &to,
                "--primary-bootloader-offset",
                &pbl,
                "--recovery-bootloader-offset",
                &rbl,
            ];
            let o = ota(&args);
            assert!(o.status.success(), "case {}: {}", i, text(&o));
            assert_eq!(
                std::fs::read_to_string(&csv_out).unwrap(),
                r["csv"].as_str().unwrap(),
                "case {}: CLI CSV differs",
                i
            );
        }
        cli_n += 1;
    }
    eprintln!(
        "interop partition-table: {} cases, seed {:#x}, all equal ({} valid: same binary, same CSV, \
         binary->CSV->binary identity on {}; {} invalid refused by both; {} through the CLI)",
        cases.len(),
        seed,
        valid_n,
        identity_n,
        refused_n,
        cli_n
    );
}
