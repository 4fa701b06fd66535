//! `ota tone pack | info` as a user of ESP-ADF's tools meets them: the index of each file with
//! its name, warnings about what is skipped, mk_audio_tone.py's C table (`audio_tone_uri.c` /
//! `.h`) byte for byte, and `tone info` on a partition dump.
//!
//! The C table is compared with a golden copy written from reading the generator
//! (ESP-ADF `tools/audio_tone/mk_audio_tone.py`, `gen_c_file` / `gen_h_file`). When
//! `OTA_MK_AUDIO_TONE` names a copy of that script (and a Python is found), the script itself
//! is run on the same folder as the oracle, and its .c, .h and bin must match ours byte for byte.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// A folder of prompts: three packed names (one with two dots, one non-ASCII), and entries the
/// packer must skip.
fn prompts(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub.mp3")).unwrap();
    for (name, len) in [
        ("boot.mp3", 1001usize),
        ("wifi_ok.wav", 700),
        ("a.b.mp3", 3),
        ("straße.mp3", 64),
        ("notes.txt", 10),
        ("LOUD.MP3", 10),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// What mk_audio_tone.py writes for [`prompts`] (sorted: a.b.mp3, boot.mp3, straße.mp3,
/// wifi_ok.wav), read off `gen_c_file` / `gen_h_file`: CRLF line endings, the URI
/// `flash://tone/<index>_<file name>`, the enum `TONE_TYPE_` + the name up to its first dot in
/// upper case (Python's `str.upper`, so `ß` becomes `SS`).
const GOLDEN_C: &str = "/*This is tone file*/\r\n\r\nconst char* tone_uri[] = {\r\n   \"flash://tone/0_a.b.mp3\",\r\n   \"flash://tone/1_boot.mp3\",\r\n   \"flash://tone/2_straße.mp3\",\r\n   \"flash://tone/3_wifi_ok.wav\",\r\n};\r\n\r\nint get_tone_uri_num()\r\n{\r\n    return sizeof(tone_uri) / sizeof(char *) - 1;\r\n}\r\n";
const GOLDEN_H: &str = "#ifndef __AUDIO_TONEURI_H__\r\n#define __AUDIO_TONEURI_H__\r\n\r\nextern const char* tone_uri[];\r\n\r\ntypedef enum {\r\n    TONE_TYPE_A,\r\n    TONE_TYPE_BOOT,\r\n    TONE_TYPE_STRASSE,\r\n    TONE_TYPE_WIFI_OK,\r\n    TONE_TYPE_MAX,\r\n} tone_type_t;\r\n\r\nint get_tone_uri_num();\r\n\r\n#endif\r\n";

#[test]
fn tone_pack_lists_indices_with_names_and_warns_about_skipped_files() {
    let t = tempfile::tempdir().unwrap();
    let res = t.path().join("res");
    prompts(&res);
    let out = ota(&["tone", "pack", s(&res), "-o", s(&t.path().join("t.bin"))]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    for (i, name, len) in [
        (0, "a.b.mp3", 3),
        (1, "boot.mp3", 1001),
        (2, "straße.mp3", 64),
        (3, "wifi_ok.wav", 700),
    ] {
        let line = format!("{i:3} {name} ({len} bytes) flash://tone/{i}_{name}");
        assert!(stdout.contains(&line), "missing {line:?}:\n{stdout}");
    }
    for (name, why) in [
        ("notes.txt", "not a .mp3 or .wav file"),
        ("LOUD.MP3", "lower-case"),
        ("sub.mp3", "a folder"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("warning: skipped") && l.contains(name) && l.contains(why)),
            "no warning for {name}:\n{stderr}"
        );
    }
    let info: Value =
        serde_json::from_str(&ok(&["tone", "info", s(&t.path().join("t.bin")), "--json"])).unwrap();
    assert_eq!(info["total"], 4);
}

#[test]
fn tone_pack_c_table_is_byte_identical_to_mk_audio_tone_py() {
    let t = tempfile::tempdir().unwrap();
    let res = t.path().join("res");
    prompts(&res);
    let table = t.path().join("main");
    let bin = t.path().join("t.bin");
    let out = ota(&[
        "tone",
        "pack",
        s(&res),
        "-o",
        s(&bin),
        "--c-table",
        s(&table),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let c = std::fs::read(table.join("audio_tone_uri.c")).unwrap();
    let h = std::fs::read(table.join("audio_tone_uri.h")).unwrap();
    assert_eq!(String::from_utf8_lossy(&c), GOLDEN_C);
    assert_eq!(String::from_utf8_lossy(&h), GOLDEN_H);
    // Other names, as the script's -c / -H.
    ok(&[
        "tone",
        "pack",
        s(&res),
        "-o",
        s(&bin),
        "--c-table",
        s(&table),
        "--c-file",
        "tones.c",
        "--h-file",
        "tones.h",
    ]);
    assert_eq!(std::fs::read(table.join("tones.c")).unwrap(), c);
    // A name that gives no C identifier is still written as the script writes it, with a warning.
    std::fs::write(res.join("wifi ok.mp3"), b"x").unwrap();
    let out = ota(&[
        "tone",
        "pack",
        s(&res),
        "-o",
        s(&bin),
        "--c-table",
        s(&table),
    ]);
    assert!(
        text(&out).contains("TONE_TYPE_WIFI OK is not a C identifier"),
        "{}",
        text(&out)
    );
    std::fs::remove_file(res.join("wifi ok.mp3")).unwrap();

    // The oracle: the real generator, when available.
    let (Some(script), Some(py)) = (std::env::var_os("OTA_MK_AUDIO_TONE"), python()) else {
        eprintln!(
            "SKIP: OTA_MK_AUDIO_TONE not set (path to ESP-ADF's tools/audio_tone/mk_audio_tone.py): \
             compared with the golden copy only"
        );
        return;
    };
    // The script packs every *.mp3/*.wav: give it only what we pack (no sub-folder).
    let pyres = t.path().join("pyres");
    std::fs::create_dir_all(&pyres).unwrap();
    for e in std::fs::read_dir(&res).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), pyres.join(e.file_name())).unwrap();
        }
    }
    let pyout = t.path().join("pyout");
    let mut child = Command::new(py)
        .arg(&script)
        .args(["-f", s(&pyout), "-r", s(&pyres), "-v", "v2.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mk_audio_tone.py");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "mk_audio_tone.py: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(std::fs::read(pyout.join("audio_tone_uri.c")).unwrap(), c);
    assert_eq!(std::fs::read(pyout.join("audio_tone_uri.h")).unwrap(), h);
    // The bin too, with the build time and date the script took from its clock.
    let py_bin = pyres.join("audio_tone.bin");
    let info: Value = serde_json::from_str(&ok(&["tone", "info", s(&py_bin), "--json"])).unwrap();
    ok(&[
        "tone",
        "pack",
        s(&res),
        "-o",
        s(&bin),
        "--version",
        "v2.0.1",
        "--time",
        info["time"].as_str().unwrap(),
        "--date",
        info["date"].as_str().unwrap(),
    ]);
    assert!(std::fs::read(&bin).unwrap() == std::fs::read(&py_bin).unwrap());
    eprintln!("mk_audio_tone.py oracle: .c, .h and bin byte-identical");
}

#[test]
fn tone_info_reads_a_partition_dump_and_reports_the_bins_real_size() {
    let t = tempfile::tempdir().unwrap();
    let res = t.path().join("res");
    prompts(&res);
    let bin = t.path().join("t.bin");
    ok(&[
        "tone",
        "pack",
        s(&res),
        "-o",
        s(&bin),
        "--version",
        "v1.2.3",
    ]);
    let len = std::fs::metadata(&bin).unwrap().len();
    let flash = t.path().join("flash.bin");
    let data = format!("flash_tone={}", s(&bin));
    ok(&["device", "create", "--flash", s(&flash), "--data", &data]);
    let dump = t.path().join("dump.bin");
    ok(&[
        "partition",
        "read",
        "flash_tone",
        "--flash",
        s(&flash),
        "-o",
        s(&dump),
    ]);
    let dump_len = std::fs::metadata(&dump).unwrap().len();
    assert_eq!(dump_len, 0x100000);
    let info: Value = serde_json::from_str(&ok(&["tone", "info", s(&dump), "--json"])).unwrap();
    assert_eq!(info["size"], len);
    assert_eq!(info["trailing_erased"], dump_len - len);
    assert_eq!(info["version"], "v1.2.3");
    assert_eq!(info["crc_valid"], true);
    let txt = ok(&["tone", "info", s(&dump)]);
    assert!(
        txt.contains(&format!("{len} bytes (then {} erased", dump_len - len)),
        "{txt}"
    );
    let un = t.path().join("un");
    ok(&["tone", "unpack", s(&dump), s(&un)]);
    assert_eq!(
        std::fs::read(un.join("001.mp3")).unwrap(),
        std::fs::read(res.join("boot.mp3")).unwrap()
    );
    // Anything but 0xFF after the bin is an error naming the offset.
    let mut bad = std::fs::read(&dump).unwrap();
    bad[len as usize + 100] = 0;
    std::fs::write(&dump, &bad).unwrap();
    let out = ota(&["tone", "info", s(&dump)]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("at offset 0x{:x}", len + 100)),
        "{}",
        text(&out)
    );
}
