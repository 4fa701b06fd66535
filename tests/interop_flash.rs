//! Interop, whole flash images: `esptool merge-bin` (the real CLI) assembles a bootloader, a
//! partition table and an otadata image made by esp-idf-defs, and app images; ota-core reads
//! the result with `ota device`'s code (chip and flash size from the bootloader header, the
//! table, the 2nd-stage bootloader's selection) and must boot the app an ESP-IDF bootloader
//! model picks. A sample goes through the CLI (`device info/boot`, `partition list`,
//! `otadata read`). And `ota flash merge` must produce esptool merge-bin's bytes exactly, or
//! refuse the same overlapping inputs.

mod common;
mod interop;

use std::path::{Path, PathBuf};

use common::*;
use ota_core::boot::{self, BootConfig};
use ota_core::image::{self, ImageSpec};
use ota_core::Chip;
use ota_emu::device::Device;
use ota_emu::flash::EmuFlash;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

const APP_SLOT: u32 = 0x40000;
const FIRST_APP: u32 = 0x10000;
const OTADATA_AT: u32 = 0xD000;

fn label(idx: i64) -> String {
    if idx < 0 {
        "factory".into()
    } else {
        format!("ota_{}", idx)
    }
}

/// Read a flash image file the way `ota device` does, padded with erased sectors to `size`.
fn padded(file: &Path, size: usize) -> Vec<u8> {
    let mut img = std::fs::read(file).unwrap();
    assert!(
        img.len() <= size,
        "{} longer than the flash",
        file.display()
    );
    img.resize(size, 0xFF);
    img
}

#[test]
fn esptool_merge_bin_images_boot_the_app_esp_idf_would_boot() {
    let Some(py) = python() else { return };
    let vectors = vectors();
    let seed = interop::seed("merge-bin flash image");
    let mut rng = interop::rng(seed);
    let n = interop::cases(150);
    let dir = tempfile::tempdir().unwrap();
    let d = |name: String| -> PathBuf { dir.path().join(name) };
    let mut cases = Vec::new();
    let mut meta = Vec::new();
    for i in 0..n {
        let real_bl = vectors.is_some() && i % 10 == 3;
        let chip = if real_bl {
            Chip::Esp32
        } else {
            Chip::ALL[i % Chip::ALL.len()]
        };
        let size_code: u8 = rng.gen_range(1..=4); // 2MB .. 16MB
        let mut flash_size = (1u32 << 20) << size_code;
        let mut merge_args: Vec<String> = Vec::new();
        let bl_path = d(format!("bl{}.bin", i));
        if real_bl {
            let v = vectors.as_ref().unwrap();
            std::fs::copy(v.join("esptool/bootloader_esp32.bin"), &bl_path).unwrap();
            // Its header says 2MB; half the time esptool rewrites it.
            flash_size = 2 << 20;
            if rng.gen_bool(0.5) {
                flash_size = 4 << 20;
                merge_args.extend(["--flash-size".into(), "4MB".into()]);
            }
        } else {
            let mut bl = Vec::new();
            image::build_bootloader(chip, size_code, &mut |b: &[u8]| bl.extend_from_slice(b))
                .unwrap();
            std::fs::write(&bl_path, bl).unwrap();
        }
        let n_ota: i64 = rng.gen_range(1..=4);
        let has_factory = rng.gen_bool(0.3);
        let mut csv = String::from("nvs, data, nvs, , 0x4000\notadata, data, ota, , 0x2000\nphy_init, data, phy, , 0x1000\n");
        let mut slots: Vec<i64> = Vec::new();
        if has_factory {
            csv.push_str("factory, app, factory, , 256K\n");
            slots.push(-1);
        }
        for k in 0..n_ota {
            csv.push_str(&format!("ota_{k}, app, ota_{k}, , 256K\n"));
            slots.push(k);
        }
        let mut files: Vec<(u32, PathBuf)> = vec![(chip.bootloader_offset(), bl_path)];
        let mut bootable = Vec::new();
        for (pos, idx) in slots.iter().enumerate() {
            let at = FIRST_APP + pos as u32 * APP_SLOT;
            let what = rng.gen_range(0..10);
            if what < 2 {
                continue; // empty slot
            }
            let project = format!("slot_{}", label(*idx));
            let mut spec = ImageSpec::new(chip, &project, "v1.0.0");
            spec.total_size = Some(rng.gen_range(1_000..40_000));
            spec.segments = rng.gen_range(1..=6);
            spec.fill_seed = rng.gen();
            let mut img = Vec::new();
            image::build_image(&spec, &mut |b: &[u8]| img.extend_from_slice(b)).unwrap();
            if what < 4 {
                let at = img.len() / 2;
                img[at] ^= 0x40; // corrupt: fails the checksum/hash, the bootloader skips it
            } else {
                bootable.push(*idx);
            }
            let p = d(format!("app{}_{}.bin", i, pos));
            std::fs::write(&p, img).unwrap();
            files.push((at, p));
        }
        let entry = |rng: &mut rand::rngs::StdRng| -> Value {
            if rng.gen_bool(0.25) {
                return Value::Null;
            }
            let slot = rng.gen_range(0..n_ota) as u32;
            let seq = slot + 1 + rng.gen_range(0..4u32) * n_ota as u32;
            let state = *[0xFFFF_FFFFu32, 0, 1, 2, 2, 2, 3, 4].choose(rng).unwrap();
            json!({"seq": seq, "state": state, "bad_crc": rng.gen_bool(0.1)})
        };
        let entries = vec![entry(&mut rng), entry(&mut rng)];
        if i % 15 == 0 {
            merge_args.extend(["--pad-to-size".into(), format!("{}MB", flash_size >> 20)]);
        }
        let out = d(format!("merged{}.bin", i));
        cases.push(json!({
            "chip": chip.name(), "out": out, "table_csv": csv,
            "table_out": d(format!("table{}.bin", i)), "otadata_out": d(format!("otadata{}.bin", i)),
            "otadata_offset": OTADATA_AT, "entries": entries,
            "files": files.iter().map(|(a, p)| json!([a, p])).collect::<Vec<_>>(),
            "merge_args": merge_args, "n_ota": n_ota, "has_factory": has_factory, "bootable": bootable,
        }));
        meta.push((chip, flash_size, out));
    }
    let answer = interop::ask(&py, "merge_oracle.py", &json!({ "cases": cases }));
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), n);
    let (mut booted, mut none, mut cli) = (0, 0, 0);
    for (i, (r, (chip, flash_size, out))) in results.iter().zip(&meta).enumerate() {
        let ctx = format!("case {}: {}", i, cases[i]);
        assert_eq!(
            r["ok"], true,
            "esptool merge-bin failed: {}\n{}",
            r["error"], ctx
        );
        let image = padded(out, *flash_size as usize);
        let mut dev = Device::open_named(
            EmuFlash::from_image(image).unwrap(),
            out.display().to_string(),
        )
        .unwrap_or_else(|e| panic!("{}\n{}", e, ctx));
        assert_eq!(dev.chip(), *chip, "{}", ctx);
        assert_eq!(dev.flash_size(), *flash_size, "{}", ctx);
        let table = dev.table().clone();
        let got = boot::boot(
            dev.flash_mut(),
            &table,
            *chip,
            &BootConfig::default(),
            &mut |_| {},
        );
        let expected = r["expected"].as_i64();
        match (&got, expected) {
            (Ok(o), Some(idx)) => {
                assert_eq!(
                    o.partition.label.as_str(),
                    label(idx),
                    "wrong slot\n{}",
                    ctx
                );
                let d = o.summary.app_desc.as_ref().unwrap();
                assert_eq!(
                    d.project_name_str(),
                    format!("slot_{}", label(idx)),
                    "wrong app\n{}",
                    ctx
                );
                booted += 1;
            }
            (Err(_), None) => none += 1,
            (got, exp) => panic!(
                "ours {:?}, ESP-IDF model {:?}\n{}",
                got.as_ref().map(|o| o.partition.label),
                exp,
                ctx
            ),
        }
        // The CLI on a sample: device info/boot on the full-size image, the toolbox on the
        // merge-bin output as it is.
        if i % 15 == 0 {
            let img = d(format!("dump{}.bin", i));
            std::fs::write(&img, padded(out, *flash_size as usize)).unwrap();
            // stdout only: stderr may carry warnings (rollback states this bootloader ignores).
            let o = ota(&["device", "info", "--flash", s(&img), "--json"]);
            assert!(o.status.success(), "{}: {}", ctx, text(&o));
            let info: Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(info["chip"], chip.name(), "{}", ctx);
            assert_eq!(
                info["flash_size"],
                format!("{}MB", flash_size >> 20),
                "{}",
                ctx
            );
            let o = ota(&["device", "boot", "--flash", s(&img), "--json"]);
            let b: Value = serde_json::from_slice(&o.stdout).unwrap();
            let od: Value =
                serde_json::from_str(&ok(&["otadata", "read", "--flash", s(out), "--json"]))
                    .unwrap();
            match expected {
                Some(idx) => {
                    assert!(o.status.success(), "{}", ctx);
                    assert_eq!(b["slot"], label(idx), "{}", ctx);
                    assert_eq!(b["project_name"], format!("slot_{}", label(idx)), "{}", ctx);
                    assert_eq!(od["bootloader_boots"], label(idx), "{}", ctx);
                }
                None => {
                    // Exit status 4: nothing boots (README "Exit status").
                    assert_eq!(o.status.code(), Some(4), "{}", ctx);
                    assert_eq!(b["slot"], Value::Null, "{}", ctx);
                    assert_eq!(od["bootloader_boots"], Value::Null, "{}", ctx);
                }
            }
            let pl: Value =
                serde_json::from_str(&ok(&["partition", "list", "--flash", s(out), "--json"]))
                    .unwrap();
            assert_eq!(
                pl["partitions"].as_array().unwrap().len(),
                table.len(),
                "{}",
                ctx
            );
            cli += 1;
        }
    }
    assert!(booted > n / 2, "only {} of {} cases boot an app", booted, n);
    eprintln!(
        "interop merge-bin flash image: {} cases, seed {:#x}, all equal ({} boot the expected app, \
         {} boot nothing as ESP-IDF would; {} also through the CLI)",
        n, seed, booted, none, cli
    );
}

#[test]
fn flash_merge_matches_esptool_merge_bin_byte_for_byte() {
    let Some(py) = python() else { return };
    let seed = interop::seed("flash merge");
    let mut rng = interop::rng(seed);
    let n = interop::cases(200);
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    let mut inputs = Vec::new();
    for i in 0..n {
        let k = rng.gen_range(1..=5);
        let overlapping = i % 5 == 4;
        let mut addr: u32 = rng.gen_range(0..4) * 0x1000;
        let mut pairs: Vec<(String, PathBuf)> = Vec::new();
        for j in 0..k {
            let len = rng.gen_range(1..0x3000usize);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let p = dir.path().join(format!("in{}_{}.bin", i, j));
            std::fs::write(&p, &data).unwrap();
            let text = match rng.gen_range(0..3) {
                0 => format!("{}", addr),
                1 => format!("0x{:x}", addr),
                _ => format!("0X{:X}", addr),
            };
            pairs.push((text, p));
            let end = addr as usize + len;
            addr = if overlapping && j == 0 {
                // Starts inside the last sector the previous file touches.
                (end as u32 - 1) & !0xFFF
            } else {
                (end.div_ceil(0x1000) as u32 + rng.gen_range(0..3)) * 0x1000
            };
        }
        pairs.shuffle(&mut rng);
        let out = dir.path().join(format!("esptool{}.bin", i));
        let mut args: Vec<String> = Vec::new();
        for (a, p) in &pairs {
            args.push(a.clone());
            args.push(s(p).to_string());
        }
        let fill = rng.gen_bool(0.2).then(|| "1MB".to_string());
        let mut eargs = args.clone();
        if let Some(f) = &fill {
            eargs.splice(0..0, ["--pad-to-size".to_string(), f.clone()]);
        }
        cases.push(json!({"chip": "esp32", "args": eargs, "out": out}));
        inputs.push((args, fill, out, overlapping && k > 1));
    }
    let answer = interop::ask(
        &py,
        "esptool_oracle.py",
        &json!({"op": "merge_bin", "cases": cases}),
    );
    let results = answer["results"].as_array().unwrap();
    let (mut same, mut refused) = (0, 0);
    for (i, (r, (args, fill, out, overlap))) in results.iter().zip(&inputs).enumerate() {
        let ours = dir.path().join(format!("ours{}.bin", i));
        let mut a: Vec<&str> = vec!["flash", "merge", "-o", s(&ours)];
        if let Some(f) = fill {
            a.extend(["--fill-flash-size", f]);
        }
        a.extend(args.iter().map(String::as_str));
        let o = ota(&a);
        let ctx = format!("case {}: {:?} fill {:?}", i, args, fill);
        if r["ok"] == true {
            assert!(!overlap, "esptool accepts overlapping files: {}", ctx);
            assert!(
                o.status.success(),
                "we refuse what esptool merges: {}\n{}",
                text(&o),
                ctx
            );
            assert!(
                std::fs::read(&ours).unwrap() == std::fs::read(out).unwrap(),
                "bytes differ: {}",
                ctx
            );
            same += 1;
        } else {
            assert!(*overlap, "esptool refuses: {}\n{}", r["error"], ctx);
            assert!(
                !o.status.success(),
                "we merge what esptool refuses: {}",
                ctx
            );
            let msg = text(&o);
            assert!(
                msg.contains("overlaps") && msg.matches(".bin").count() >= 2,
                "unclear: {}",
                msg
            );
            assert!(!ours.exists(), "no output on refusal: {}", ctx);
            refused += 1;
        }
    }
    assert!(
        same > 0 && refused > 0,
        "{} same, {} refused",
        same,
        refused
    );
    eprintln!(
        "interop flash merge: {} cases, seed {:#x}, all equal ({} byte-identical to esptool merge-bin, \
         {} overlapping inputs refused by both)",
        n, seed, same, refused
    );
}

/// `esptool ARGS` run as the real CLI from `cwd` (so `@FILE` and relative paths inside it are
/// resolved as esptool resolves them).
fn esptool_in(py: &Path, cwd: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(py)
        .arg("-m")
        .arg("esptool")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running esptool")
}

/// `ota ARGS` run from `cwd`.
fn ota_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("running ota")
}

/// A small valid bootloader-like image for `chip` (ota-core's builder), header flash size
/// `size_code`.
fn built_bootloader(chip: Chip, size_code: u8) -> Vec<u8> {
    let mut bl = Vec::new();
    image::build_bootloader(chip, size_code, &mut |b: &[u8]| bl.extend_from_slice(b)).unwrap();
    bl
}

#[test]
fn flash_merge_rewrites_the_bootloader_header_as_esptool_merge_bin_does() {
    let Some(py) = python() else { return };
    let vectors = vectors();
    let seed = interop::seed("merge-bin flash params");
    let mut rng = interop::rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut boots: Vec<(Chip, PathBuf)> = Vec::new();
    if let Some(v) = &vectors {
        boots.push((Chip::Esp32c3, v.join("esptool/bootloader_esp32c3.bin")));
        boots.push((Chip::Esp32, v.join("esptool/bootloader_esp32.bin")));
        boots.push((Chip::Esp32, v.join("esptool/bootloader_esp32_v5_2.bin")));
    }
    for chip in [
        Chip::Esp32s3,
        Chip::Esp32c6,
        Chip::Esp32h2,
        Chip::Esp32c5,
        Chip::Esp32p4,
    ] {
        let p = dir.path().join(format!("bl-{}.bin", chip.name()));
        std::fs::write(&p, built_bootloader(chip, 2)).unwrap();
        boots.push((chip, p));
    }
    let app = dir.path().join("app.bin");
    std::fs::write(&app, vec![0x5Au8; 3000]).unwrap();
    let n = interop::cases(60);
    let mut cases = Vec::new();
    let mut ours_args = Vec::new();
    for i in 0..n {
        let (chip, bl) = &boots[i % boots.len()];
        let mut opts: Vec<String> = Vec::new();
        if rng.gen_bool(0.7) {
            opts.extend([
                "--flash-mode".into(),
                ["qio", "qout", "dio", "dout", "keep"]
                    .choose(&mut rng)
                    .unwrap()
                    .to_string(),
            ]);
        }
        if rng.gen_bool(0.7) {
            let f = chip.flash_freqs().choose(&mut rng).unwrap().0;
            opts.extend(["--flash-freq".into(), f.to_string()]);
        }
        if rng.gen_bool(0.7) || opts.is_empty() {
            let sz = ["1MB", "2MB", "4MB", "8MB", "16MB", "keep"]
                .choose(&mut rng)
                .unwrap();
            opts.extend(["--flash-size".into(), sz.to_string()]);
        }
        let pairs = vec![
            format!("0x{:x}", chip.bootloader_offset()),
            s(bl).to_string(),
            "0x10000".to_string(),
            s(&app).to_string(),
        ];
        let out = dir.path().join(format!("esptool{i}.bin"));
        let mut eargs = opts.clone();
        eargs.extend(pairs.iter().cloned());
        cases.push(json!({"chip": chip.name(), "args": eargs, "out": s(&out)}));
        // Half the time we are given --chip, else we find it in the bootloader header.
        let mut a = opts;
        if i % 2 == 0 {
            a.extend(["--chip".into(), chip.name().to_string()]);
        }
        a.extend(pairs);
        ours_args.push((a, out));
    }
    let answer = interop::ask(
        &py,
        "esptool_oracle.py",
        &json!({"op": "merge_bin", "cases": cases}),
    );
    let results = answer["results"].as_array().unwrap();
    let mut rewritten = 0;
    for (i, (r, (args, theirs))) in results.iter().zip(&ours_args).enumerate() {
        assert_eq!(r["ok"], true, "esptool refuses case {i}: {}", r["error"]);
        let ours = dir.path().join(format!("ours{i}.bin"));
        let mut a: Vec<&str> = vec!["flash", "merge", "-o", s(&ours)];
        a.extend(args.iter().map(String::as_str));
        ok(&a);
        let (o, t) = (
            std::fs::read(&ours).unwrap(),
            std::fs::read(theirs).unwrap(),
        );
        assert!(
            o == t,
            "case {i} ({args:?}): bytes differ from esptool merge-bin"
        );
        let (chip, bl) = &boots[i % boots.len()];
        let off = chip.bootloader_offset() as usize;
        if o[off + 2..off + 4] != std::fs::read(bl).unwrap()[2..4] {
            rewritten += 1;
            // The rewritten bootloader still verifies (its SHA-256 was recomputed).
            let mut v = image::ImageVerifier::new();
            v.feed(&o[off..]).unwrap();
            v.finish().unwrap_or_else(|e| panic!("case {i}: {e}"));
        }
    }
    assert!(
        rewritten > n / 3,
        "only {rewritten} of {n} headers were rewritten"
    );
    eprintln!("interop flash merge --flash-*: {n} cases, seed {seed:#x}, {rewritten} headers rewritten, all byte-identical to esptool merge-bin");
}

#[test]
fn flash_merge_reads_argument_files_as_esptool_does() {
    let Some(py) = python() else { return };
    let Some(v) = vectors() else { return };
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("build");
    std::fs::create_dir_all(build.join("bootloader")).unwrap();
    std::fs::create_dir_all(build.join("partition_table")).unwrap();
    std::fs::copy(
        v.join("esptool/bootloader_esp32c3.bin"),
        build.join("bootloader/bootloader.bin"),
    )
    .unwrap();
    std::fs::copy(
        v.join("esptool/partitions_singleapp.bin"),
        build.join("partition_table/partition-table.bin"),
    )
    .unwrap();
    std::fs::write(build.join("ota_data_initial.bin"), vec![0xFFu8; 0x2000]).unwrap();
    let mut spec = ImageSpec::new(Chip::Esp32c3, "hello", "v1");
    spec.total_size = Some(40_000);
    let mut app = Vec::new();
    image::build_image(&spec, &mut |b: &[u8]| app.extend_from_slice(b)).unwrap();
    std::fs::write(build.join("my app.bin"), &app).unwrap();
    // ESP-IDF's flash_args: options on the first line (old underscore spellings), then pairs;
    // a quoted path with a space.
    std::fs::write(
        build.join("flash_args"),
        "--flash_mode dio --flash_freq 80m --flash_size 2MB\n0x0 bootloader/bootloader.bin\n\
         0x10000 \"my app.bin\"\n0x8000 partition_table/partition-table.bin\n0xd000 ota_data_initial.bin\n",
    )
    .unwrap();
    let e = esptool_in(
        &py,
        &build,
        &[
            "--chip",
            "esp32c3",
            "merge-bin",
            "-o",
            "theirs.bin",
            "--pad-to-size",
            "4MB",
            "@flash_args",
        ],
    );
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let o = ota_in(
        &build,
        &[
            "flash",
            "merge",
            "-o",
            "ours.bin",
            "--pad-to-size",
            "4MB",
            "@flash_args",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let (ours, theirs) = (
        std::fs::read(build.join("ours.bin")).unwrap(),
        std::fs::read(build.join("theirs.bin")).unwrap(),
    );
    assert_eq!(ours.len(), 4 << 20);
    assert!(ours == theirs, "@flash_args merge differs from esptool's");
    assert_eq!(ours[2], 2, "DIO");
    // From another folder the relative paths inside do not resolve (as with esptool).
    let o = ota_in(
        dir.path(),
        &["flash", "merge", "-o", "x.bin", "@build/flash_args"],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("bootloader/bootloader.bin"),
        "{}",
        text(&o)
    );
    // A missing argument file and an unclosed quote are clear errors.
    let o = ota_in(&build, &["flash", "merge", "-o", "x.bin", "@nope"]);
    assert!(
        !o.status.success() && text(&o).contains("argument file nope"),
        "{}",
        text(&o)
    );
    std::fs::write(build.join("bad_args"), "0x0 \"unclosed\n").unwrap();
    let o = ota_in(&build, &["flash", "merge", "-o", "x.bin", "@bad_args"]);
    assert!(
        !o.status.success() && text(&o).contains("bad_args:1") && text(&o).contains("quotation"),
        "{}",
        text(&o)
    );
    // Without any bootloader to find the chip in, --flash-* need --chip.
    let o = ota_in(
        &build,
        &[
            "flash",
            "merge",
            "-o",
            "x.bin",
            "--flash-mode",
            "qio",
            "0x10000",
            "my app.bin",
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("--chip"),
        "{}",
        text(&o)
    );
}

#[test]
fn flash_merge_streams_a_file_at_a_high_address_in_bounded_memory() {
    if !Path::new("/usr/bin/prlimit").exists() {
        eprintln!("SKIP: prlimit not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.bin");
    std::fs::write(&small, [0xA5u8; 100]).unwrap();
    let out = dir.path().join("out.bin");
    // 48 MiB of output under a 24 MiB data limit: only a streaming writer gets through.
    const ADDR: u64 = 0x300_0000;
    let o = std::process::Command::new("/usr/bin/prlimit")
        .arg(format!("--data={}", 24u64 << 20))
        .arg(env!("CARGO_BIN_EXE_ota"))
        .args([
            "flash",
            "merge",
            "-o",
            s(&out),
            &format!("0x{ADDR:x}"),
            s(&small),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}\n{}", o.status, text(&o));
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), ADDR + 100);
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&out).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < ADDR {
        let n = f
            .read(&mut buf[..((ADDR - pos).min(1 << 20)) as usize])
            .unwrap();
        assert!(
            buf[..n].iter().all(|&b| b == 0xFF),
            "not 0xFF near 0x{pos:x}"
        );
        pos += n as u64;
    }
    f.seek(SeekFrom::Start(ADDR)).unwrap();
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, vec![0xA5u8; 100]);
    // A FIFO is not an input file.
    let fifo = dir.path().join("fifo");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let o = ota(&[
            "flash",
            "merge",
            "-o",
            s(&dir.path().join("f.bin")),
            "0x0",
            s(&fifo),
        ]);
        assert!(
            !o.status.success() && text(&o).contains("not a regular file"),
            "{}",
            text(&o)
        );
    }
}
