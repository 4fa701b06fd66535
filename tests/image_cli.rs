//! `ota image info --json` against the oracle `esptool image-info`, on every image in
//! `../shared/vectors/esptool`, and `ota image make` output judged by esptool.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// What esptool says about an image, parsed from `image-info` text.
#[derive(Debug, Default, PartialEq)]
struct EsptoolInfo {
    valid_image: bool,
    entry: Option<u64>,
    flash_size: Option<String>,
    flash_freq: Option<String>,
    flash_mode: Option<String>,
    chip_id: Option<u64>,
    segments: Vec<(u64, u64, u64)>,
    checksum: Option<(u64, bool)>,
    hash_valid: Option<bool>,
    project: Option<String>,
    version: Option<String>,
    elf_sha: Option<String>,
    idf: Option<String>,
    secure_version: Option<u64>,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap()
}

fn esptool_info(py: &Path, file: &Path) -> EsptoolInfo {
    let o = Command::new(py)
        .args(["-m", "esptool", "image-info", s(file)])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let mut i = EsptoolInfo {
        valid_image: o.status.success(),
        ..Default::default()
    };
    let mut in_segments = false;
    for line in out.lines() {
        let kv = |p: &str| line.strip_prefix(p).map(|v| v.trim().to_string());
        if let Some(v) = kv("Entry point:") {
            i.entry = Some(hex(&v));
        } else if let Some(v) = kv("Flash size:") {
            i.flash_size = Some(v);
        } else if let Some(v) = kv("Flash freq:") {
            i.flash_freq = Some(v);
        } else if let Some(v) = kv("Flash mode:") {
            i.flash_mode = Some(v);
        } else if let Some(v) = kv("Chip ID:") {
            i.chip_id = v.split_whitespace().next().map(|n| n.parse().unwrap());
        } else if let Some(v) = kv("Checksum:") {
            let mut w = v.split_whitespace();
            i.checksum = Some((hex(w.next().unwrap()), v.contains("(valid)")));
        } else if let Some(v) = kv("Validation hash:") {
            i.hash_valid = Some(v.ends_with("(valid)"));
        } else if let Some(v) = kv("Project name:") {
            i.project = Some(v);
        } else if let Some(v) = kv("App version:") {
            i.version = Some(v);
        } else if let Some(v) = kv("ELF file SHA256:") {
            i.elf_sha = Some(v);
        } else if let Some(v) = kv("ESP-IDF:") {
            i.idf = Some(v);
        } else if let Some(v) = kv("Secure version:") {
            i.secure_version = Some(v.parse().unwrap());
        } else if line.starts_with("-------") {
            in_segments = true;
        } else if in_segments {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() >= 4 && w[0].parse::<u32>().is_ok() {
                i.segments.push((hex(w[1]), hex(w[2]), hex(w[3])));
            } else {
                in_segments = false;
            }
        }
    }
    i
}

fn ota_info(file: &Path) -> Option<Value> {
    let o = ota(&["image", "info", s(file), "--json"]);
    if !o.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&o.stdout).expect("image info --json prints JSON"))
}

/// Compare our JSON with esptool's report, field by field; returns the fields compared.
fn compare(file: &Path, e: &EsptoolInfo, j: &Value) -> usize {
    let name = file.display();
    let mut n = 0;
    let mut eq = |what: &str, ours: Value, theirs: Value| {
        assert_eq!(ours, theirs, "{}: {} differs (ours vs esptool)", name, what);
        n += 1;
    };
    eq("entry", j["entry_addr"].clone(), e.entry.into());
    eq(
        "flash_size",
        j["flash_size"].clone(),
        e.flash_size.clone().into(),
    );
    eq(
        "flash_freq",
        j["flash_freq"].clone(),
        e.flash_freq.clone().into(),
    );
    eq(
        "flash_mode",
        j["flash_mode"].clone(),
        e.flash_mode.clone().into(),
    );
    eq("chip_id", j["chip_id"].clone(), e.chip_id.into());
    let segs: Vec<(u64, u64, u64)> = j["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["length"].as_u64().unwrap(),
                s["load_addr"].as_u64().unwrap(),
                s["file_offset"].as_u64().unwrap(),
            )
        })
        .collect();
    eq(
        "segments",
        serde_json::to_value(&segs).unwrap(),
        serde_json::to_value(&e.segments).unwrap(),
    );
    let (ck, ck_valid) = e.checksum.unwrap();
    eq("checksum", j["checksum"].clone(), ck.into());
    eq(
        "checksum_valid",
        j["checksum_valid"].clone(),
        ck_valid.into(),
    );
    eq("hash_valid", j["hash_valid"].clone(), e.hash_valid.into());
    eq(
        "hash_appended",
        j["hash_appended"].clone(),
        e.hash_valid.is_some().into(),
    );
    let app = &j["app"];
    if e.project.is_some() {
        eq(
            "project_name",
            app["project_name"].clone(),
            e.project.clone().into(),
        );
        eq("version", app["version"].clone(), e.version.clone().into());
        eq(
            "elf_sha256",
            app["elf_sha256"].clone(),
            e.elf_sha.clone().into(),
        );
        eq("idf_ver", app["idf_ver"].clone(), e.idf.clone().into());
        eq(
            "secure_version",
            app["secure_version"].clone(),
            e.secure_version.into(),
        );
    } else {
        eq("app", app.clone(), Value::Null);
    }
    n
}

#[test]
fn image_info_agrees_with_esptool_on_every_vector() {
    let Some(v) = vectors() else { return };
    let Some(py) = python() else { return };
    let mut files: Vec<_> = std::fs::read_dir(v.join("esptool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort();
    let (mut images, mut fields) = (0, 0);
    for f in &files {
        let e = esptool_info(&py, f);
        let ours = ota_info(f);
        assert_eq!(
            ours.is_some(),
            e.valid_image,
            "{}: ota and esptool disagree on whether it is an image",
            f.display()
        );
        if let Some(j) = ours {
            fields += compare(f, &e, &j);
            images += 1;
        }
    }
    assert!(
        images >= 15,
        "expected the esptool vectors, compared {}",
        images
    );
    eprintln!(
        "image info vs esptool: {} images, {} fields compared, all equal",
        images, fields
    );
}

#[test]
fn made_images_are_valid_for_esptool() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for (chip, size, segs) in [
        ("esp32", "200K", "4"),
        ("esp32s2", "64K", "1"),
        ("esp32c3", "100K", "6"),
        ("esp32s3", "32K", "3"),
        ("esp32c6", "150K", "5"),
    ] {
        let out = dir.path().join(format!("{}.bin", chip));
        ok(&[
            "image",
            "make",
            "--chip",
            chip,
            "--project",
            "proj",
            "--version",
            "v9.8.7",
            "--size",
            size,
            "--segments",
            segs,
            "-o",
            s(&out),
        ]);
        let e = esptool_info(&py, &out);
        assert!(e.valid_image, "esptool rejects our {} image", chip);
        assert_eq!(e.checksum.map(|c| c.1), Some(true), "{}", chip);
        assert_eq!(e.hash_valid, Some(true), "{}", chip);
        assert_eq!(e.project.as_deref(), Some("proj"));
        assert_eq!(e.version.as_deref(), Some("v9.8.7"));
        compare(&out, &e, &ota_info(&out).unwrap());
        n += 1;
    }
    eprintln!("image make: {} images valid for esptool", n);
}
