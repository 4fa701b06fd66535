//! The operator's toolbox on flash images: `ota otadata read|switch|erase`,
//! `ota partition list|read|write|erase`, `ota flash merge|read`, on an image made by
//! `ota device create` and on one made by `esptool merge-bin` (not a whole number of sectors).
//! Bad input (too-large files, unknown labels, corrupted tables and otadata) gives a clear
//! error, a non-zero exit, and leaves the flash image byte for byte as it was.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use ota_core::partition::{Label, Partition, PartitionTable, TABLE_MAX_LEN};
use serde_json::Value;

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    /// An ESP32 made by `ota device create` (ESP-ADF example table) with app `one` in ota_0,
    /// and app `two` ready in two.bin.
    fn new() -> Fx {
        let fx = Fx {
            dir: tempfile::tempdir().unwrap(),
        };
        for (name, size) in [("one", "60K"), ("two", "90K")] {
            ok(&[
                "image",
                "make",
                "--chip",
                "esp32",
                "--project",
                name,
                "--version",
                "v1.0.0",
                "--size",
                size,
                "-o",
                fx.p(&format!("{}.bin", name)),
            ]);
        }
        ok(&[
            "device",
            "create",
            "--flash",
            fx.p("flash.bin"),
            "--app",
            fx.p("one.bin"),
        ]);
        fx
    }
    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    fn p(&self, n: &str) -> &str {
        // Leak-free: the TempDir lives as long as the fixture.
        let s = self.dir.path().join(n).to_str().unwrap().to_string();
        Box::leak(s.into_boxed_str())
    }
    fn read(&self, n: &str) -> Vec<u8> {
        std::fs::read(self.path(n)).unwrap()
    }
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// Runs `args`, expects failure with every word of `words` in the message, and the file
/// `flash` unchanged.
#[track_caller]
fn refused(flash: &Path, args: &[&str], words: &[&str]) -> String {
    let before = std::fs::read(flash).unwrap();
    let o = ota(args);
    let msg = text(&o);
    assert!(!o.status.success(), "ota {:?} succeeded:\n{}", args, msg);
    assert!(msg.contains("error: "), "{}", msg);
    assert!(!msg.contains("panicked"), "{}", msg);
    for w in words {
        assert!(
            msg.contains(w),
            "ota {:?}: message lacks {:?}:\n{}",
            args,
            w,
            msg
        );
    }
    assert!(
        std::fs::read(flash).unwrap() == before,
        "ota {:?} changed the flash image",
        args
    );
    msg
}

fn boot_slot(flash: &str) -> Value {
    let o = ota(&["device", "boot", "--flash", flash, "--json"]);
    serde_json::from_slice::<Value>(&o.stdout).unwrap()["slot"].clone()
}

#[test]
fn toolbox_switches_an_ota_device_create_image_like_otatool() {
    let fx = Fx::new();
    let f = fx.p("flash.bin");
    let list = json(&["partition", "list", "--flash", f, "--json"]);
    let labels: Vec<&str> = list["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["nvs", "otadata", "phy_init", "ota_0", "ota_1", "flash_tone"]
    );
    assert_eq!(list["warnings"].as_array().unwrap().len(), 0);
    // partition read: the app, then erased flash to the end of the partition.
    ok(&[
        "partition",
        "read",
        "ota_0",
        "--flash",
        f,
        "-o",
        fx.p("ota0.bin"),
    ]);
    let ota0 = fx.read("ota0.bin");
    let one = fx.read("one.bin");
    assert_eq!(ota0.len(), 0x100000);
    assert_eq!(&ota0[..one.len()], &one[..]);
    assert!(ota0[one.len()..].iter().all(|&b| b == 0xFF));
    // Erased otadata: the bootloader boots ota_0.
    let od = json(&["otadata", "read", "--flash", f, "--json"]);
    assert_eq!(od["active"], Value::Null);
    assert_eq!(od["entries"][0]["erased"], true);
    assert_eq!(od["bootloader_boots"], "ota_0");
    // Write app two into ota_1, switch to it (v6 rules: first write goes to sector 0, seq 2).
    ok(&["partition", "write", "ota_1", "--flash", f, fx.p("two.bin")]);
    let sw = json(&["otadata", "switch", "ota_1", "--flash", f, "--json"]);
    assert_eq!(
        (sw["sector"].clone(), sw["seq"].clone(), sw["state"].clone()),
        (0.into(), 2.into(), "undefined".into())
    );
    let img = fx.read("flash.bin");
    assert_eq!(
        &img[0xD000..0xD020],
        &hex32("02000000ffffffffffffffffffffffffffffffffffffffffffffffff7437f655")
    );
    assert_eq!(boot_slot(f), "ota_1");
    // Switch back with rollback: other sector, seq 3, state NEW.
    let sw = json(&[
        "otadata",
        "switch",
        "0",
        "--flash",
        f,
        "--rollback",
        "--json",
    ]);
    assert_eq!(
        (sw["sector"].clone(), sw["seq"].clone(), sw["state"].clone()),
        (1.into(), 3.into(), "new".into())
    );
    let od = json(&["otadata", "read", "--flash", f, "--json"]);
    assert_eq!(od["active"], 1);
    assert_eq!(od["boot_partition"], "ota_0");
    // Same slot again: ESP-IDF v6 rewrites the same sector with the same seq.
    let sw = json(&["otadata", "switch", "ota_0", "--flash", f, "--json"]);
    assert_eq!(
        (sw["sector"].clone(), sw["seq"].clone()),
        (1.into(), 3.into())
    );
    // Erase otadata: both entries erased, back to ota_0 by default.
    ok(&["otadata", "erase", "--flash", f]);
    let img = fx.read("flash.bin");
    assert!(img[0xD000..0xF000].iter().all(|&b| b == 0xFF));
    // partition erase, flash read.
    ok(&["partition", "erase", "ota_1", "--flash", f]);
    assert!(fx.read("flash.bin")[0x110000..0x210000]
        .iter()
        .all(|&b| b == 0xFF));
    ok(&[
        "flash",
        "read",
        "--flash",
        f,
        "0x8000",
        "0xC00",
        "-o",
        fx.p("table.bin"),
    ]);
    assert_eq!(fx.read("table.bin"), &fx.read("flash.bin")[0x8000..0x8C00]);
    // And the table read back converts like gen_esp32part.
    let csv = ok(&["partition-table", fx.p("table.bin")]);
    assert!(csv.contains("ota_1,app,ota_1,0x110000,1M,"), "{}", csv);
}

fn hex32(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn toolbox_works_on_an_esptool_merge_bin_image() {
    let Some(py) = python() else { return };
    let fx = Fx::new();
    // Pieces from the created device: bootloader (0x1000) and table (0x8000), apps from files.
    let f = fx.p("flash.bin");
    ok(&[
        "flash",
        "read",
        "--flash",
        f,
        "0x1000",
        "0x1000",
        "-o",
        fx.p("boot.bin"),
    ]);
    ok(&[
        "flash",
        "read",
        "--flash",
        f,
        "0x8000",
        "0xC00",
        "-o",
        fx.p("table.bin"),
    ]);
    std::fs::write(fx.path("otadata.bin"), vec![0xFF; 0x2000]).unwrap();
    let st = Command::new(&py)
        .args([
            "-m",
            "esptool",
            "--chip",
            "esp32",
            "merge-bin",
            "-o",
            fx.p("merged.bin"),
            "0x1000",
            fx.p("boot.bin"),
            "0x8000",
            fx.p("table.bin"),
            "0xd000",
            fx.p("otadata.bin"),
            "0x10000",
            fx.p("one.bin"),
            "0x110000",
            fx.p("two.bin"),
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let m = fx.p("merged.bin");
    let len = fx.read("merged.bin").len();
    assert_ne!(len % 0x1000, 0, "merge-bin output ends mid-sector");
    let list = json(&["partition", "list", "--flash", m, "--json"]);
    assert_eq!(list["image_size"], len);
    // flash_tone lies beyond the end of the merged file.
    let tone = &list["partitions"][5];
    assert_eq!(
        (tone["label"].clone(), tone["in_image"].clone()),
        ("flash_tone".into(), false.into())
    );
    let od = json(&["otadata", "read", "--flash", m, "--json"]);
    assert_eq!(od["bootloader_boots"], "ota_0");
    let sw = json(&["otadata", "switch", "ota_1", "--flash", m, "--json"]);
    assert_eq!(sw["boot_partition"], "ota_1");
    assert_eq!(
        json(&["otadata", "read", "--flash", m, "--json"])["bootloader_boots"],
        "ota_1"
    );
    assert_eq!(
        fx.read("merged.bin").len(),
        len,
        "the file keeps its length"
    );
    ok(&[
        "partition",
        "read",
        "ota_0",
        "--flash",
        m,
        "-o",
        fx.p("back.bin"),
    ]);
    assert_eq!(
        &fx.read("back.bin")[..fx.read("one.bin").len()],
        &fx.read("one.bin")[..]
    );
    ok(&["partition", "write", "ota_0", "--flash", m, fx.p("two.bin")]);
    ok(&["partition", "erase", "phy_init", "--flash", m]);
    // Reading flash_tone: it is not in the image.
    refused(
        Path::new(m),
        &[
            "partition",
            "read",
            "flash_tone",
            "--flash",
            m,
            "-o",
            fx.p("t.bin"),
        ],
        &["flash_tone", "beyond the end of flash image"],
    );
    // Our own merge of the same pieces equals esptool's.
    ok(&[
        "flash",
        "merge",
        "-o",
        fx.p("ours.bin"),
        "0x1000",
        fx.p("boot.bin"),
        "0x8000",
        fx.p("table.bin"),
        "0xd000",
        fx.p("otadata.bin"),
        "0x10000",
        fx.p("one.bin"),
        "0x110000",
        fx.p("two.bin"),
    ]);
    let st = Command::new(&py)
        .args([
            "-m",
            "esptool",
            "--chip",
            "esp32",
            "merge-bin",
            "-o",
            fx.p("theirs.bin"),
            "0x1000",
            fx.p("boot.bin"),
            "0x8000",
            fx.p("table.bin"),
            "0xd000",
            fx.p("otadata.bin"),
            "0x10000",
            fx.p("one.bin"),
            "0x110000",
            fx.p("two.bin"),
        ])
        .output()
        .unwrap();
    assert!(st.status.success());
    assert!(fx.read("ours.bin") == fx.read("theirs.bin"));
    // --fill-flash-size gives a full-size image `ota device` opens.
    ok(&[
        "flash",
        "merge",
        "-o",
        fx.p("full.bin"),
        "--fill-flash-size",
        "4MB",
        "0x1000",
        fx.p("boot.bin"),
        "0x8000",
        fx.p("table.bin"),
        "0x10000",
        fx.p("one.bin"),
    ]);
    assert_eq!(fx.read("full.bin").len(), 4 << 20);
    assert_eq!(boot_slot(fx.p("full.bin")), "ota_0");
}

#[test]
fn bad_toolbox_input_is_refused_and_leaves_the_flash_unchanged() {
    let fx = Fx::new();
    let f = fx.p("flash.bin");
    let fp = fx.path("flash.bin");
    std::fs::write(fx.path("big.bin"), vec![0x55; 0x1000 + 1]).unwrap();
    refused(
        &fp,
        &[
            "partition",
            "write",
            "phy_init",
            "--flash",
            f,
            fx.p("big.bin"),
        ],
        &[
            "big.bin",
            "4097 bytes",
            "larger than partition 'phy_init'",
            "4096 bytes",
            "0xf000",
        ],
    );
    refused(
        &fp,
        &["partition", "erase", "nope", "--flash", f],
        &["no partition labelled 'nope'", "ota_1"],
    );
    refused(
        &fp,
        &["otadata", "switch", "ota_5", "--flash", f],
        &["no ota_5 partition", "2 OTA app slot"],
    );
    refused(
        &fp,
        &["otadata", "switch", "ota_1", "--flash", f],
        &["'ota_1'", "does not verify", "otadata unchanged"],
    );
    refused(
        &fp,
        &["otadata", "switch", "factory", "--flash", f],
        &["no factory"],
    );
    refused(
        &fp,
        &[
            "flash",
            "read",
            "--flash",
            f,
            "0x3FF000",
            "0x2000",
            "-o",
            fx.p("x.bin"),
        ],
        &["beyond the end"],
    );
    refused(
        &fp,
        &[
            "flash",
            "read",
            "--flash",
            f,
            "zz",
            "4",
            "-o",
            fx.p("x.bin"),
        ],
        &["'zz' is not a flash address"],
    );
    std::fs::write(fx.path("a.bin"), vec![1; 0x1800]).unwrap();
    std::fs::write(fx.path("b.bin"), vec![2; 0x100]).unwrap();
    refused(
        &fp,
        &[
            "flash",
            "merge",
            "-o",
            fx.p("m.bin"),
            "0x1000",
            fx.p("a.bin"),
            "0x2800",
            fx.p("b.bin"),
        ],
        &[
            "b.bin at 0x2800 overlaps",
            "a.bin at 0x1000",
            "0x1000..0x2800",
        ],
    );
    assert!(!fx.path("m.bin").exists());
    refused(
        &fp,
        &[
            "flash",
            "merge",
            "-o",
            fx.p("m.bin"),
            "--fill-flash-size",
            "4K",
            "0x1000",
            fx.p("a.bin"),
        ],
        &["beyond the flash size 0x1000"],
    );
    let empty = fx.path("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    refused(
        &empty,
        &["partition", "list", "--flash", fx.p("empty.bin")],
        &["is empty"],
    );
}

/// Write `bin` (a table) over the table at 0x8000 of the image.
fn put_table(flash: &Path, bin: &[u8]) {
    let mut img = std::fs::read(flash).unwrap();
    img[0x8000..0x8000 + bin.len()].copy_from_slice(bin);
    std::fs::write(flash, img).unwrap();
}

fn table_of(parts: &[(&str, u8, u8, u32, u32)]) -> [u8; TABLE_MAX_LEN] {
    let mut t = PartitionTable::new();
    for (l, ty, st, off, size) in parts {
        t.push(Partition {
            ptype: *ty,
            subtype: *st,
            offset: *off,
            size: *size,
            label: Label::new(l),
            flags: 0,
        })
        .unwrap();
    }
    let mut bin = [0xFFu8; TABLE_MAX_LEN];
    t.to_binary(true, &mut bin).unwrap();
    bin
}

#[test]
fn corrupted_partition_tables_are_reported_as_each_esp_idf_reader_would() {
    let fx = Fx::new();
    let f = fx.p("flash.bin");
    let fp = fx.path("flash.bin");
    let good = fx.read("flash.bin")[0x8000..0x8C00].to_vec();
    // Bad MD5: gen_esp32part (parttool.py's reader) and the bootloader both refuse.
    let mut bad = good.clone();
    bad[0x2C] ^= 1; // a label byte of entry 1
    put_table(&fp, &bad);
    refused(
        &fp,
        &["partition", "list", "--flash", f],
        &[
            "partition table at 0x8000",
            "MD5 checksums don't match",
            "parttool.py",
        ],
    );
    refused(
        &fp,
        &["otadata", "read", "--flash", f],
        &["MD5 checksums don't match"],
    );
    refused(
        &fp,
        &["device", "info", "--flash", f],
        &["Incorrect MD5 checksum"],
    );
    // End marker damaged after its first 4 bytes: the bootloader only checks those 4 bytes and
    // boots; gen_esp32part needs 32 bytes of 0xFF and refuses (it decodes the 0xFF label
    // bytes first, so Python fails on the UTF-8, before the magic).
    let mut bad = good.clone();
    bad[7 * 32 + 8] = 0x00;
    put_table(&fp, &bad);
    refused(
        &fp,
        &["partition", "list", "--flash", f],
        &["partition 7 label is not valid UTF-8"],
    );
    ok(&["device", "info", "--flash", f]);
    // No end marker at all (zeros after the MD5 entry): both refuse, each with its message.
    let mut bad = good.clone();
    bad[7 * 32..].fill(0);
    put_table(&fp, &bad);
    refused(
        &fp,
        &["partition", "list", "--flash", f],
        &["Invalid magic bytes (b'\\x00\\x00')"],
    );
    refused(
        &fp,
        &["device", "info", "--flash", f],
        &["partition 7 invalid magic number 0x0"],
    );
    // An entry beyond the flash size: the bootloader refuses the table; parttool.py's reader
    // does not check sizes, so `partition list` shows it with the bootloader's verdict, and
    // the partition cannot be read or written.
    put_table(
        &fp,
        &table_of(&[
            ("otadata", 1, 0, 0xD000, 0x2000),
            ("ota_0", 0, 0x10, 0x10000, 0x100000),
            ("huge", 1, 0x81, 0x110000, 0x400000),
        ]),
    );
    let list = json(&["partition", "list", "--flash", f, "--json"]);
    let w = list["warnings"].to_string();
    assert!(
        w.contains("bootloader refuses this table") && w.contains("exceeds flash chip size"),
        "{}",
        w
    );
    refused(
        &fp,
        &["device", "info", "--flash", f],
        &["huge", "exceeds flash chip size 0x400000"],
    );
    refused(
        &fp,
        &["partition", "erase", "huge", "--flash", f],
        &["partition 'huge'", "beyond the end"],
    );
    // Overlapping entries: the bootloader accepts them, gen_esp32part's verify() refuses; the
    // toolbox warns and refuses to write either partition.
    put_table(
        &fp,
        &table_of(&[
            ("otadata", 1, 0, 0xD000, 0x2000),
            ("ota_0", 0, 0x10, 0x10000, 0x100000),
            ("ota_1", 0, 0x11, 0x100000, 0x100000),
        ]),
    );
    let list = json(&["partition", "list", "--flash", f, "--json"]);
    assert!(
        list["warnings"]
            .to_string()
            .contains("Partition at 0x100000 overlaps 0x10000-0x10ffff"),
        "{}",
        list
    );
    ok(&["device", "info", "--flash", f]);
    refused(
        &fp,
        &["partition", "write", "ota_1", "--flash", f, fx.p("two.bin")],
        &["'ota_1' (0x100000..0x200000) overlaps partition 'ota_0' (0x10000..0x110000)"],
    );
    ok(&[
        "flash",
        "read",
        "--flash",
        f,
        "0x8000",
        "0xC00",
        "-o",
        fx.p("t.bin"),
    ]);
    refused(
        &fp,
        &["partition-table", fx.p("t.bin")],
        &["Partition at 0x100000 overlaps 0x10000-0x10ffff"],
    );
    // A truncated image that ends inside the table.
    let img = fx.read("flash.bin");
    std::fs::write(fx.path("short.bin"), &img[..0x8400]).unwrap();
    refused(
        &fx.path("short.bin"),
        &["partition", "list", "--flash", fx.p("short.bin")],
        &["partition table at 0x8000", "beyond the end of flash image"],
    );
}

#[test]
fn partition_table_without_end_marker_is_refused_like_gen_esp32part() {
    let Some(v) = vectors() else { return };
    let Some(py) = python() else { return };
    // esptool's 2016 table: 3 entries, no MD5, no end marker.
    let file = v.join("esptool/partitions_singleapp.bin");
    let o = ota(&["partition-table", s(&file)]);
    assert!(!o.status.success());
    let theirs = Command::new(&py)
        .args([
            "-c",
            "import sys\nfrom esp_idf_defs.partitions import PartitionTable\n\
                try:\n  PartitionTable.from_binary(open(sys.argv[1],'rb').read())\n\
                except Exception as e: print(e)",
            s(&file),
        ])
        .output()
        .unwrap();
    let theirs = String::from_utf8_lossy(&theirs.stdout).trim().to_string();
    assert_eq!(theirs, "Partition table is missing an end-of-table marker");
    assert!(text(&o).contains(&theirs), "{}", text(&o));
}

#[test]
fn damaged_otadata_is_read_as_the_bootloader_reads_it() {
    let fx = Fx::new();
    let f = fx.p("flash.bin");
    let fp = fx.path("flash.bin");
    ok(&["partition", "write", "ota_1", "--flash", f, fx.p("two.bin")]);
    ok(&["otadata", "switch", "ota_1", "--flash", f]); // sector 0: seq 2 -> ota_1
    ok(&["otadata", "switch", "ota_0", "--flash", f]); // sector 1: seq 3 -> ota_0
    let patch = |at: usize, bytes: &[u8]| {
        let mut img = std::fs::read(&fp).unwrap();
        img[at..at + bytes.len()].copy_from_slice(bytes);
        std::fs::write(&fp, img).unwrap();
    };
    // Bad CRC in the newer entry: it is ignored; the older one (ota_1) boots.
    patch(0xE000 + 28, &[0x00]);
    let od = json(&["otadata", "read", "--flash", f, "--json"]);
    assert_eq!(
        (
            od["entries"][1]["crc_valid"].clone(),
            od["entries"][1]["valid"].clone()
        ),
        (false.into(), false.into())
    );
    assert_eq!(
        (od["active"].clone(), od["bootloader_boots"].clone()),
        (0.into(), "ota_1".into())
    );
    assert_eq!(boot_slot(f), "ota_1");
    // A torn write of sector 1 (only the seq word programmed, the rest still erased).
    let mut torn = vec![0xFFu8; 32];
    torn[..4].copy_from_slice(&5u32.to_le_bytes());
    {
        let mut img = std::fs::read(&fp).unwrap();
        img[0xE000..0xF000].fill(0xFF);
        img[0xE000..0xE020].copy_from_slice(&torn);
        std::fs::write(&fp, img).unwrap();
    }
    let od = json(&["otadata", "read", "--flash", f, "--json"]);
    assert_eq!(od["entries"][1]["valid"], false);
    assert_eq!(od["bootloader_boots"], "ota_1");
    // Both entries unusable (erased and torn): "initial contents", the bootloader tries ota_0.
    patch(0xD000, &[0xFF; 32]);
    let od = json(&["otadata", "read", "--flash", f, "--json"]);
    assert_eq!(
        (od["active"].clone(), od["bootloader_boots"].clone()),
        (Value::Null, "ota_0".into())
    );
    // `switch` then starts over: sector 0, seq = slot + 1 (ESP-IDF with no valid entry).
    let sw = json(&["otadata", "switch", "ota_1", "--flash", f, "--json"]);
    assert_eq!(
        (sw["sector"].clone(), sw["seq"].clone()),
        (0.into(), 2.into())
    );
}

#[test]
fn toolbox_never_panics_on_garbage_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut runs = 0;
    for i in 0..12 {
        let len = [0x100usize, 0x8200, 0x9000, 0x10000, 0x12345][i % 5];
        let mut img: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if i % 3 == 0 && len > 0x8C00 {
            // A plausible table start with garbage after it.
            img[0x8000] = 0xAA;
            img[0x8001] = 0x50;
        }
        let p = dir.path().join(format!("g{}.bin", i));
        std::fs::write(&p, &img).unwrap();
        for args in [
            vec!["partition", "list", "--flash", s(&p), "--json"],
            vec!["otadata", "read", "--flash", s(&p)],
            vec!["otadata", "switch", "0", "--flash", s(&p)],
            vec!["partition", "erase", "nvs", "--flash", s(&p)],
            vec![
                "flash",
                "read",
                "--flash",
                s(&p),
                "0",
                "16",
                "-o",
                s(&dir.path().join("o.bin")),
            ],
        ] {
            let o = ota(&args);
            assert!(!text(&o).contains("panicked"), "{:?}: {}", args, text(&o));
            assert!(o.status.code().is_some(), "{:?} killed", args);
            runs += 1;
        }
        if !ota(&["partition", "list", "--flash", s(&p)])
            .status
            .success()
        {
            assert!(
                std::fs::read(&p).unwrap() == img,
                "a refused command changed {}",
                p.display()
            );
        }
    }
    eprintln!("toolbox on garbage images: {} runs, no panic", runs);
}
