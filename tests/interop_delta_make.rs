//! Interop, the patch maker: `ota delta make` patches judged by the real detools (PyPI).
//! For realistic pairs (real ESP-IDF apps from `../shared/vectors/esptool` with a changed
//! string, inserted code, a new version in the app descriptor with checksum and hash redone;
//! the two real ESP32 bootloaders; a different app) and random pairs, for every compression:
//! detools' `apply_patch` must rebuild NEW byte for byte from our patch, and our patch must be
//! within 5 % of `detools create_patch`'s on the same pair (asserted on the realistic pairs,
//! printed for all).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const COMPRESSIONS: [&str; 3] = ["heatshrink", "none", "lzma"];
/// Our patch may be at most this much larger than detools' own (the bound).
const SIZE_TOLERANCE: f64 = 1.05;

/// The segments of an ESP-IDF image (24-byte header, then `[load, len, data]` each).
struct Image {
    header: [u8; 24],
    segments: Vec<(u32, Vec<u8>)>,
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn parse(bytes: &[u8]) -> Image {
    assert_eq!(bytes[0], 0xE9, "image magic");
    let mut header = [0u8; 24];
    header.copy_from_slice(&bytes[..24]);
    let mut at = 24;
    let mut segments = Vec::new();
    for _ in 0..bytes[1] {
        let load = le32(&bytes[at..]);
        let len = le32(&bytes[at + 4..]) as usize;
        segments.push((load, bytes[at + 8..at + 8 + len].to_vec()));
        at += 8 + len;
    }
    Image { header, segments }
}

/// The image with its checksum and appended SHA-256 recomputed, as esptool elf2image writes
/// them (esptool `bin_image.py`: checksum seed 0xEF over the segment data, in the last byte
/// of the padding to 16; then the SHA-256 of everything before it when hash_appended).
fn seal(img: &Image) -> Vec<u8> {
    let mut out = img.header.to_vec();
    out[1] = img.segments.len() as u8;
    let mut checksum = 0xEFu8;
    for (load, data) in &img.segments {
        out.extend_from_slice(&load.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        checksum = data.iter().fold(checksum, |c, b| c ^ b);
    }
    while out.len() % 16 != 15 {
        out.push(0);
    }
    out.push(checksum);
    if img.header[23] == 1 {
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
    }
    out
}

/// The realistic pairs and the random ones: (name, old, new, realistic).
fn pairs(v: &Path, seed: u64) -> Vec<(String, Vec<u8>, Vec<u8>, bool)> {
    let esptool = v.join("esptool");
    let read = |n: &str| std::fs::read(esptool.join(n)).unwrap();
    let blink = read("esp_idf_blink_esp32s2.bin");
    let img = parse(&blink);
    assert_eq!(
        seal(&img),
        blink,
        "resealing the untouched blink app reproduces it"
    );
    let mut out = Vec::new();

    // A changed string: the first run of 24 printable bytes in a flash-data segment, 8 of
    // its letters in the other case (a log message edited, same length).
    let mut changed = parse(&blink);
    let (seg, pos) = changed
        .segments
        .iter()
        .enumerate()
        .find_map(|(i, (_, d))| {
            d.windows(24)
                .position(|w| w.iter().all(|b| b.is_ascii_alphabetic() || *b == b' '))
                .map(|p| (i, p))
        })
        .expect("a string in the blink app");
    for b in &mut changed.segments[seg].1[pos..pos + 24] {
        if b.is_ascii_alphabetic() {
            *b ^= 0x20;
        }
    }
    out.push((
        "blink: changed string".to_string(),
        blink.clone(),
        seal(&changed),
        true,
    ));

    // Inserted code: 1 KiB (a copy of other code) in the middle of the largest segment, so
    // everything after it shifts.
    let mut inserted = parse(&blink);
    let largest = (0..inserted.segments.len())
        .max_by_key(|&i| inserted.segments[i].1.len())
        .unwrap();
    let data = &mut inserted.segments[largest].1;
    let mid = data.len() / 2 / 4 * 4;
    let copy: Vec<u8> = data[mid / 2..mid / 2 + 1024].to_vec();
    data.splice(mid..mid, copy);
    out.push((
        "blink: 1 KiB inserted mid-code".to_string(),
        blink.clone(),
        seal(&inserted),
        true,
    ));

    // A new version: esp_app_desc_t.version (offset 16, 32 bytes) and elf_sha256 (offset 144)
    // change, as a rebuild with a new tag does; checksum and hash redone.
    let mut bumped = parse(&blink);
    let desc = &mut bumped.segments[0].1;
    assert_eq!(
        le32(desc),
        0xABCD_5432,
        "app descriptor at the start of segment 0"
    );
    let version = b"qa-test-v5.0-20220901-7-g9f3c21\0";
    desc[16..48].copy_from_slice(version);
    let elf = Sha256::digest(b"another build");
    desc[144..176].copy_from_slice(&elf);
    out.push((
        "blink: new version in app descriptor".to_string(),
        blink.clone(),
        seal(&bumped),
        true,
    ));

    out.push((
        "bootloader esp32 -> v5.2".to_string(),
        read("bootloader_esp32.bin"),
        read("bootloader_esp32_v5_2.bin"),
        true,
    ));
    out.push((
        "different app: hello-world -> blink".to_string(),
        read("hello-world-signed.bin"),
        blink.clone(),
        true,
    ));

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let a: Vec<u8> = (0..65_536).map(|_| rng.gen()).collect();
    let b: Vec<u8> = (0..65_536).map(|_| rng.gen()).collect();
    out.push((
        "random 64 KiB -> unrelated random".to_string(),
        a.clone(),
        b,
        false,
    ));
    let mut edited = a.clone();
    for _ in 0..20 {
        let at = rng.gen_range(0..edited.len());
        match rng.gen_range(0..3) {
            0 => edited[at] = rng.gen(),
            1 => {
                let n = rng.gen_range(1..300);
                edited.splice(at..at, (0..n).map(|_| rng.gen::<u8>()));
            }
            _ => {
                let end = (at + rng.gen_range(1..300)).min(edited.len());
                edited.drain(at..end);
            }
        }
    }
    out.push((
        "random 64 KiB -> 20 random edits".to_string(),
        a,
        edited,
        false,
    ));
    out
}

fn python_with_detools() -> Option<PathBuf> {
    let py = python()?;
    let ok = Command::new(&py)
        .args(["-c", "import detools"])
        .output()
        .map(|o| o.status.success());
    if ok.unwrap_or(false) {
        Some(py)
    } else {
        eprintln!(
            "SKIP: the Python at {} has no detools (run scripts/test.sh)",
            py.display()
        );
        None
    }
}

fn ask(py: &Path, script: &str, request: &Value) -> Value {
    use std::io::Write;
    let oracle = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracle")
        .join(script);
    let mut child = Command::new(py)
        .arg(oracle)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(request).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "oracle {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn detools_applies_our_patches_and_they_are_as_small_as_its_own() {
    let Some(v) = vectors() else { return };
    let Some(py) = python_with_detools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs(&v, 0x0DE1_7A00);

    // The edited apps must still be valid images by esptool's own check.
    let mut news = Vec::new();
    for (i, (_, _, new, realistic)) in pairs.iter().enumerate().take(3) {
        assert!(realistic);
        let p = dir.path().join(format!("edited{i}.bin"));
        std::fs::write(&p, new).unwrap();
        news.push(p.to_string_lossy().into_owned());
    }
    let infos = ask(
        &py,
        "esptool_oracle.py",
        &json!({"op": "image_info", "files": news}),
    );
    for (i, r) in infos["reports"].as_array().unwrap().iter().enumerate() {
        let text = r["stdout"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            text.contains("checksum:") && text.contains("(valid)") && !text.contains("invalid"),
            "{}: esptool does not accept the edited image:\n{text}",
            pairs[i].0
        );
    }

    let mut cases = Vec::new();
    let mut meta = Vec::new();
    for (i, (name, old, new, realistic)) in pairs.iter().enumerate() {
        let (o, n) = (
            dir.path().join(format!("{i}.old")),
            dir.path().join(format!("{i}.new")),
        );
        std::fs::write(&o, old).unwrap();
        std::fs::write(&n, new).unwrap();
        for c in COMPRESSIONS {
            let patch = dir.path().join(format!("{i}.{c}.patch"));
            ok(&[
                "delta",
                "make",
                s(&o),
                s(&n),
                "-o",
                s(&patch),
                "--compression",
                c,
            ]);
            let ours = std::fs::metadata(&patch).unwrap().len();
            cases.push(json!({
                "old": s(&o), "new": s(&n), "patch": s(&patch), "compression": c,
                "detools_patch": s(&dir.path().join(format!("{i}.{c}.detools"))),
            }));
            meta.push((name.clone(), c, ours, new.len(), *realistic));
        }
    }
    let answer = ask(
        &py,
        "detools_make_oracle.py",
        &json!({"op": "judge", "cases": cases}),
    );
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), meta.len());
    eprintln!(
        "{:<40} {:<10} {:>9} {:>9} {:>9} {:>7}",
        "pair", "compr.", "new", "ours", "detools", "ratio"
    );
    let mut failures = Vec::new();
    for (r, (name, c, ours, new_len, realistic)) in results.iter().zip(&meta) {
        let theirs = r["detools_size"].as_u64().unwrap();
        let ratio = *ours as f64 / theirs as f64;
        eprintln!("{name:<40} {c:<10} {new_len:>9} {ours:>9} {theirs:>9} {ratio:>7.3}");
        assert!(
            r["detools_applies"].as_bool().unwrap(),
            "{name} {c}: detools' own patch"
        );
        if !(r["applied"].as_bool().unwrap() && r["equal"].as_bool().unwrap()) {
            failures.push(format!(
                "{name} {c}: detools apply_patch: {:?} (equal: {})",
                r["error"], r["equal"]
            ));
        }
        if *realistic && ratio > SIZE_TOLERANCE {
            failures.push(format!(
                "{name} {c}: ours {ours} bytes vs detools {theirs} ({ratio:.3})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "interop delta make: {} patches applied by detools, all equal",
        results.len()
    );
}

/// The real command line, `python -m detools apply_patch OLD PATCH OUT`, on one pair per
/// compression (the batch above calls the same functions in one process).
#[test]
fn detools_cli_applies_our_patches() {
    let Some(v) = vectors() else { return };
    let Some(py) = python_with_detools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        v.join("esptool/bootloader_esp32.bin"),
        v.join("esptool/bootloader_esp32_v5_2.bin"),
    );
    for c in COMPRESSIONS {
        let patch = dir.path().join(format!("{c}.patch"));
        let out = dir.path().join(format!("{c}.out"));
        ok(&["delta", "make", s(&old), s(&new), "-o", s(&patch), "-c", c]);
        let run = Command::new(&py)
            .args(["-m", "detools", "apply_patch", s(&old), s(&patch), s(&out)])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&new).unwrap(),
            "{c}"
        );
    }
}

/// `--esp-header`: the 64-byte header carries the base's "Validation Hash" exactly as
/// `esptool image-info` prints it (what Espressif's esp_delta_ota_patch_gen.py copies), and
/// the rest is a heatshrink patch detools applies.
#[test]
fn esp_header_holds_esptools_validation_hash() {
    let Some(v) = vectors() else { return };
    let Some(py) = python_with_detools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bases = ["esp_idf_blink_esp32s2.bin", "hello-world-signed.bin"];
    let files: Vec<String> = bases
        .iter()
        .map(|b| s(&v.join("esptool").join(b)).to_string())
        .collect();
    let infos = ask(
        &py,
        "esptool_oracle.py",
        &json!({"op": "image_info", "files": files}),
    );
    for (i, base) in bases.iter().enumerate() {
        let text = infos["reports"][i]["stdout"].as_str().unwrap().to_string();
        let line = text
            .lines()
            .find(|l| l.to_lowercase().starts_with("validation hash:"))
            .unwrap_or_else(|| panic!("{base}: no validation hash in\n{text}"));
        let want = line.split_whitespace().nth(2).unwrap().to_lowercase();
        assert!(line.ends_with("(valid)"), "{line}");
        let other = v.join("esptool").join(bases[1 - i]);
        let patch = dir.path().join(format!("{i}.patch"));
        ok(&[
            "delta",
            "make",
            &files[i],
            s(&other),
            "-o",
            s(&patch),
            "--esp-header",
        ]);
        let bytes = std::fs::read(&patch).unwrap();
        assert_eq!(
            &bytes[..4],
            &[0x10, 0xde, 0xcd, 0xfc],
            "magic 0xfccdde10, little-endian"
        );
        let got: String = bytes[4..36].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want, "{base}");
        assert!(bytes[36..64].iter().all(|&b| b == 0));
        assert_eq!(&bytes[64..65], &[0x04], "sequential, heatshrink");
        let bare = dir.path().join(format!("{i}.bare"));
        std::fs::write(&bare, &bytes[64..]).unwrap();
        let out = dir.path().join(format!("{i}.out"));
        let run = Command::new(&py)
            .args(["-m", "detools", "apply_patch", &files[i], s(&bare), s(&out)])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&other).unwrap());
    }
}
