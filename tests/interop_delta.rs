//! Interop, delta patches: patches made by the real detools (`detools.create_patch`, PyPI)
//! from pairs of real and generated images are applied by ota-core's applier (library, base
//! in an emulated flash with esp-storage's 4-byte granularity, fed in chunks of random sizes)
//! and by `ota delta apply` (CLI); both must give exactly NEW. esp_delta_ota-framed patches
//! (esp_delta_ota_patch_gen.py's framing) are checked against the base's digest first.

mod common;
mod interop;

use std::path::{Path, PathBuf};

use common::*;
use ota_core::delta::{
    base_image_sha256, ApplyError, DeltaApplier, EspDeltaHeader, FlashBase, ESP_DELTA_HEADER_LEN,
};
use ota_core::flash::Region;
use ota_core::image::{build_image, ImageSpec};
use ota_core::mem_flash::MemFlash;
use ota_core::Chip;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

/// Where the base image sits in the test flash (an ota_0 slot).
const SLOT: u32 = 0x10000;

struct Pair {
    name: String,
    old: Vec<u8>,
    new: Vec<u8>,
    /// The old image is a valid app with an appended SHA-256 (esp_delta_ota header possible):
    /// the chip esptool reads it as.
    app_base: Option<&'static str>,
}

/// A real ESP-IDF v5.0 app (ESP32-S2 `blink`, esptool's test images) and its version string.
const BLINK: &str = "esptool/esp_idf_blink_esp32s2.bin";
const BLINK_VERSION: &[u8] = b"qa-test-v5.0-20220830-4-g4532e6";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn app(chip: Chip, version: &str, size: u32) -> Vec<u8> {
    let mut spec = ImageSpec::new(chip, "delta-demo", version);
    spec.total_size = Some(size);
    let mut out = Vec::new();
    build_image(&spec, &mut |b| out.extend_from_slice(b)).unwrap();
    out
}

fn pairs(v: &Path, rng: &mut StdRng) -> Vec<Pair> {
    let read = |n: &str| std::fs::read(v.join(n)).unwrap();
    let hello = read(BLINK);
    let mut out = Vec::new();

    // A changed string (same length: addresses unchanged).
    let mut changed = hello.clone();
    let at = find(&changed, BLINK_VERSION).expect("blink's version string");
    changed[at..at + BLINK_VERSION.len()].copy_from_slice(b"qa-test-v5.0-20220901-7-gdeadbe");
    out.push(Pair {
        name: "blink, changed version string".into(),
        old: hello.clone(),
        new: changed,
        app_base: Some("esp32s2"),
    });
    // Inserted code: 1,500 bytes in the middle shift everything after them.
    let mut inserted = hello.clone();
    let mid = inserted.len() * 2 / 5;
    let code: Vec<u8> = (0..1500).map(|i| hello[(i * 7) % 40_000 + 100]).collect();
    inserted.splice(mid..mid, code);
    out.push(Pair {
        name: "blink, inserted code".into(),
        old: hello.clone(),
        new: inserted,
        app_base: Some("esp32s2"),
    });
    // A different app.
    out.push(Pair {
        name: "blink (esp32s2) -> hello-world (esp32, signed)".into(),
        old: hello.clone(),
        new: read("esptool/hello-world-signed.bin"),
        app_base: Some("esp32s2"),
    });
    // The two real bootloaders (an ESP-IDF version bump).
    out.push(Pair {
        name: "bootloader esp32 -> v5.2".into(),
        old: read("esptool/bootloader_esp32.bin"),
        new: read("esptool/bootloader_esp32_v5_2.bin"),
        app_base: None,
    });
    // Two builds of a generated app (version string and size differ).
    out.push(Pair {
        name: "generated app v1 -> v2".into(),
        old: app(Chip::Esp32c3, "v1.0.0", 150_000),
        new: app(Chip::Esp32c3, "v1.0.1", 152_000),
        app_base: Some("esp32c3"),
    });
    // Identical, and an empty output.
    out.push(Pair {
        name: "identical".into(),
        old: hello.clone(),
        new: hello.clone(),
        app_base: Some("esp32s2"),
    });
    out.push(Pair {
        name: "empty new".into(),
        old: hello[..5000].to_vec(),
        new: Vec::new(),
        app_base: None,
    });
    // Random pairs: random data with random edits (replace, insert, delete).
    for i in 0..interop::cases(6) {
        let len = rng.gen_range(1..40_000);
        let old: Vec<u8> = (0..len)
            .map(|j| {
                if j % 50 < 30 {
                    (j / 13) as u8
                } else {
                    rng.gen()
                }
            })
            .collect();
        let mut new = old.clone();
        for _ in 0..rng.gen_range(0..20) {
            let at = rng.gen_range(0..=new.len());
            match rng.gen_range(0..3) {
                0 if at < new.len() => new[at] = rng.gen(),
                1 => {
                    let ins: Vec<u8> = (0..rng.gen_range(1..300)).map(|_| rng.gen()).collect();
                    new.splice(at..at, ins);
                }
                _ => {
                    let end = (at + rng.gen_range(0..300)).min(new.len());
                    new.drain(at..end);
                }
            }
        }
        out.push(Pair {
            name: format!("random {i} ({len} bytes)"),
            old,
            new,
            app_base: None,
        });
    }
    out
}

/// Apply with the library: the base in a 4-byte-granularity flash at [`SLOT`], the patch fed
/// in chunks of random sizes; an esp_delta_ota header is checked against the slot's image
/// digest before the applier sees a byte.
fn apply_lib(old: &[u8], patch: &[u8], rng: &mut StdRng) -> Result<Vec<u8>, String> {
    let slot_size = (old.len() as u32).next_multiple_of(0x1000).max(0x1000);
    let mut mem = vec![0xFF; (SLOT + slot_size) as usize];
    mem[SLOT as usize..][..old.len()].copy_from_slice(old);
    let mut flash = MemFlash::<4, 4>::new(&mut mem);
    let region = Region::new(SLOT, slot_size);
    let mut patch = patch;
    let mut base_len = old.len() as u32;
    if EspDeltaHeader::detect(patch) {
        let head: &[u8; ESP_DELTA_HEADER_LEN] = patch[..ESP_DELTA_HEADER_LEN].try_into().unwrap();
        let h = EspDeltaHeader::parse(head).map_err(|e| e.to_string())?;
        let img = base_image_sha256(&mut flash, region, None).map_err(|e| e.to_string())?;
        h.check_base(&img.sha256).map_err(|e| e.to_string())?;
        base_len = img.image_len;
        patch = &patch[ESP_DELTA_HEADER_LEN..];
    }
    let mut base = FlashBase::new(&mut flash, region, base_len).unwrap();
    let mut a = DeltaApplier::new(base_len);
    let mut out = Vec::new();
    let mut rest = patch;
    while !rest.is_empty() {
        let n = rng.gen_range(1..=rest.len().min(3000));
        a.feed(&mut base, &rest[..n], &mut |b: &[u8]| {
            out.extend_from_slice(b);
            Ok::<(), ()>(())
        })
        .map_err(|e| match e {
            ApplyError::Patch(p) => p.to_string(),
            other => format!("{other:?}"),
        })?;
        rest = &rest[n..];
    }
    a.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

fn create(py: &Path, cases: &[Value]) -> Vec<Value> {
    let r = interop::ask(py, "detools_oracle.py", &json!({ "cases": cases }));
    r["results"].as_array().unwrap().clone()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn delta_applies_detools_patches_of_real_and_random_pairs() {
    let (Some(v), Some(py)) = (vectors(), interop::python()) else {
        return;
    };
    let mut rng = interop::rng(interop::seed("delta"));
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs(&v, &mut rng);
    let mut cases = Vec::new();
    let mut jobs = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let old = write(dir.path(), &format!("{i}.old"), &p.old);
        let new = write(dir.path(), &format!("{i}.new"), &p.new);
        for (c, esp) in [
            ("heatshrink", false),
            ("none", false),
            ("lzma", false),
            ("heatshrink", true),
        ] {
            if esp && p.app_base.is_none() {
                continue;
            }
            let patch = dir
                .path()
                .join(format!("{i}.{c}{}.patch", if esp { ".esp" } else { "" }));
            cases.push(
                json!({"op": "create", "from": old, "to": new, "patch": patch,
                              "compression": c, "esp_header": esp}),
            );
            jobs.push((i, c, esp, old.clone(), patch));
        }
    }
    let results = create(&py, &cases);
    let mut n = 0;
    for ((i, c, esp, old, patch), r) in jobs.iter().zip(&results) {
        let p = &pairs[*i];
        assert_eq!(r["ok"], true, "detools on {}: {r}", p.name);
        let bytes = std::fs::read(patch).unwrap();
        let what = format!("{} ({c}{})", p.name, if *esp { ", esp header" } else { "" });
        // detools' lzma stream is the legacy "LZMA alone" container: properties 0x5d, an
        // 8 MiB dictionary, unknown size (ended by an end marker).
        if *c == "lzma" && !p.new.is_empty() {
            let h = ota_core::delta::PatchHeader::parse(&bytes).unwrap();
            let alone = [
                0x5d, 0, 0, 0x80, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ];
            assert_eq!(&bytes[h.len..h.len + 13], &alone, "{}", p.name);
        }
        // Library (lzma is decoded only on the host, by the CLI).
        if *c != "lzma" {
            let got = apply_lib(&p.old, &bytes, &mut rng).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(got == p.new, "{what}: library output differs from NEW");
        } else {
            let e = apply_lib(&p.old, &bytes, &mut rng).unwrap_err();
            assert!(e.contains("lzma"), "{what}: {e}");
        }
        // CLI.
        let out = dir.path().join(format!("{i}.{c}.{esp}.out"));
        let o = ok(&[
            "delta",
            "apply",
            old.to_str().unwrap(),
            patch.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(
            std::fs::read(&out).unwrap() == p.new,
            "{what}: CLI output differs: {o}"
        );
        n += 1;
    }
    eprintln!(
        "interop delta: {n} detools patches over {} pairs, all equal",
        pairs.len()
    );
}

#[test]
fn delta_refuses_detools_patches_it_cannot_apply() {
    let (Some(v), Some(py)) = (vectors(), interop::python()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let old = v.join(BLINK);
    let mut newb = std::fs::read(&old).unwrap();
    newb[5000] ^= 0x55;
    let new = write(dir.path(), "new.bin", &newb);
    let kinds: Vec<(&str, Value, &str)> = vec![
        ("crle", json!({}), "compression 2 (crle) is not supported"),
        ("bz2", json!({}), "compression 3 (bz2) is not supported"),
        (
            "heatshrink",
            json!({"heatshrink_window_sz2": 10, "heatshrink_lookahead_sz2": 5}),
            "heatshrink window 10 / lookahead 5 is not supported",
        ),
        (
            "heatshrink",
            json!({"patch_type": "in-place", "memory_size": 196608, "segment_size": 4096}),
            "patch type 1 (in-place) is not supported",
        ),
    ];
    let cases: Vec<Value> = kinds
        .iter()
        .enumerate()
        .map(|(i, (c, args, _))| {
            json!({"op": "create", "from": old, "to": new, "compression": c, "args": args,
                   "patch": dir.path().join(format!("{i}.patch"))})
        })
        .collect();
    let results = create(&py, &cases);
    let out = dir.path().join("out.bin");
    for (i, ((_, _, want), r)) in kinds.iter().zip(&results).enumerate() {
        assert_eq!(r["ok"], true, "{r}");
        let patch = dir.path().join(format!("{i}.patch"));
        let o = ota(&[
            "delta",
            "apply",
            old.to_str().unwrap(),
            patch.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
        assert!(!out.exists(), "nothing written on a refused patch");
    }
    // A sequential match-blocks patch (exact matches only) is a plain sequential patch.
    let patch = dir.path().join("mb.patch");
    let r = create(
        &py,
        &[
            json!({"op": "create", "from": old, "to": new, "compression": "heatshrink",
                  "args": {"algorithm": "match-blocks"}, "patch": patch}),
        ],
    );
    assert_eq!(r[0]["ok"], true, "{}", r[0]);
    ok(&[
        "delta",
        "apply",
        old.to_str().unwrap(),
        patch.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&out).unwrap() == newb);
}

/// esp_delta_ota's check: the header's base digest against the running image, before anything
/// is written; with --base-slot the base is read from a flash image's partition.
#[test]
fn delta_checks_the_esp_delta_ota_base_digest_first() {
    let (Some(v), Some(py)) = (vectors(), interop::python()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let old = v.join(BLINK);
    let other = write(
        dir.path(),
        "other.bin",
        &app(Chip::Esp32s2, "v9.9.9", 100_000),
    );
    let oldb = std::fs::read(&old).unwrap();
    let mut newb = oldb.clone();
    let at = find(&newb, BLINK_VERSION).unwrap();
    newb[at..at + 5].copy_from_slice(b"QA-TE");
    let new = write(dir.path(), "new.bin", &newb);
    let patch = dir.path().join("esp.patch");
    let r = create(
        &py,
        &[
            json!({"op": "create", "from": old, "to": new, "compression": "heatshrink",
                  "esp_header": true, "patch": patch}),
        ],
    );
    assert_eq!(r[0]["ok"], true, "{}", r[0]);
    let pbytes = std::fs::read(&patch).unwrap();
    assert_eq!(&pbytes[..4], &[0x10, 0xde, 0xcd, 0xfc]);
    assert_eq!(&pbytes[4..36], &oldb[oldb.len() - 32..]);

    // Another base: refused, naming both digests, and no output.
    let out = dir.path().join("out.bin");
    let o = ota(&[
        "delta",
        "apply",
        other.to_str().unwrap(),
        patch.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let otherb = std::fs::read(&other).unwrap();
    assert!(t.contains("another base image"), "{t}");
    assert!(t.contains(&hex(&oldb[oldb.len() - 32..])), "{t}");
    assert!(t.contains(&hex(&otherb[otherb.len() - 32..])), "{t}");
    assert!(!out.exists());

    // A flash image with ota_0 holding the base: --base-slot reads it from the partition.
    let csv = "otadata, data, ota, 0xd000, 0x2000\nota_0, app, ota_0, 0x10000, 1M\nota_1, app, ota_1, 0x110000, 1M\n";
    let table = ota_core::partition::PartitionTable::from_csv(csv, &Default::default()).unwrap();
    let mut flash = vec![0xFF; 0x210000];
    let mut bin = [0xFF; ota_core::partition::TABLE_MAX_LEN];
    table.to_binary(true, &mut bin).unwrap();
    let t_off = ota_core::partition::TABLE_OFFSET as usize;
    flash[t_off..t_off + bin.len()].copy_from_slice(&bin);
    flash[0x10000..0x10000 + oldb.len()].copy_from_slice(&oldb);
    let fimg = write(dir.path(), "device.flash", &flash);
    let f = fimg.to_str().unwrap();
    ok(&[
        "delta",
        "apply",
        f,
        patch.to_str().unwrap(),
        "--base-slot",
        "ota_0",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&out).unwrap() == newb);
    std::fs::remove_file(&out).unwrap();
    // ota_1 is empty: no image to patch.
    let o = ota(&[
        "delta",
        "apply",
        f,
        patch.to_str().unwrap(),
        "--base-slot",
        "ota_1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("partition ota_1 at 0x110000 holds no valid app image"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    // The flash image is untouched.
    assert!(std::fs::read(&fimg).unwrap() == flash);

    // The library refuses the same mismatch before feeding anything.
    let mut rng = interop::rng(1);
    let e = apply_lib(&otherb, &pbytes, &mut rng).unwrap_err();
    assert!(e.contains("another base image"), "{e}");
}

/// Resume after a cut: checkpoints taken while applying a real detools patch restore an
/// applier that finishes with exactly NEW.
#[test]
fn delta_resumes_a_detools_patch_from_checkpoints() {
    let (Some(v), Some(py)) = (vectors(), interop::python()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let old = v.join("esptool/bootloader_esp32.bin");
    let new = v.join("esptool/bootloader_esp32_v5_2.bin");
    let patch = dir.path().join("bl.patch");
    let r = create(
        &py,
        &[
            json!({"op": "create", "from": old, "to": new, "compression": "heatshrink", "patch": patch}),
        ],
    );
    assert_eq!(r[0]["ok"], true);
    let (oldb, newb, pb) = (
        std::fs::read(&old).unwrap(),
        std::fs::read(&new).unwrap(),
        std::fs::read(&patch).unwrap(),
    );
    let mut base = ota_core::delta::SliceBase(&oldb);
    let mut a = DeltaApplier::new(oldb.len() as u32);
    let mut out = Vec::new();
    let mut saved = Vec::new();
    for piece in pb.chunks(97) {
        a.feed(&mut base, piece, &mut |b: &[u8]| {
            out.extend_from_slice(b);
            Ok::<(), ()>(())
        })
        .unwrap();
        if let Some(cp) = a.checkpoint() {
            saved.push(cp.to_bytes());
        }
    }
    assert!(out == newb);
    for rec in &saved {
        let cp = ota_core::delta::Checkpoint::from_bytes(rec).unwrap();
        let mut r = DeltaApplier::resume(&cp, oldb.len() as u32).unwrap();
        let mut rest = newb[..cp.output_offset() as usize].to_vec();
        r.feed(
            &mut base,
            &pb[cp.patch_offset() as usize..],
            &mut |b: &[u8]| {
                rest.extend_from_slice(b);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert!(r.is_done());
        r.finish().unwrap();
        assert!(
            rest == newb,
            "resumed at patch offset {}",
            cp.patch_offset()
        );
    }
    eprintln!(
        "interop delta: resumed from {} checkpoints, all equal",
        saved.len()
    );
}
