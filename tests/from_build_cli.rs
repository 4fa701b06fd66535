//! `ota device create --from-build BUILD`: a folder laid out exactly like a real `idf.py build`
//! output (made at test time: the real ESP32-C3 bootloader from the vectors, a partition table
//! made by esp-idf-defs' gen_esp32part, ESP-IDF's initial otadata, an app image) becomes a
//! device byte-identical to `esptool merge-bin --pad-to-size SIZE @flash_args` run in the build
//! folder, with the bootloader options of the project's sdkconfig; it boots and updates.

mod common;
mod idf;
mod interop;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

/// The binary partition table gen_esp32part makes from `csv` (with its MD5 entry).
fn gen_esp32part(py: &Path, csv: &str) -> Vec<u8> {
    let a = interop::ask(
        py,
        "partition_oracle.py",
        &json!({"cases": [{"csv": csv, "table_offset": 0x8000, "md5": true}]}),
    );
    let r = &a["results"][0];
    assert_eq!(r["ok"], true, "{r}");
    let hex = r["bin"].as_str().unwrap();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn app(dir: &Path, version: &str, secure_version: u32) -> Vec<u8> {
    let out = dir.join(format!("app-{version}.bin"));
    ok(&[
        "image",
        "make",
        "--chip",
        "esp32c3",
        "--project",
        "hello_ota",
        "--version",
        version,
        "--secure-version",
        &secure_version.to_string(),
        "--flash-size",
        "4MB",
        "--flash-freq",
        "80m",
        "--size",
        "60000",
        "-o",
        s(&out),
    ]);
    std::fs::read(out).unwrap()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    build: PathBuf,
}

/// A project folder with `sdkconfig` and `build/` as idf.py leaves them (ESP32-C3, 4 MB, DIO
/// 80m; the real bootloader's header says 2MB 40m, so merge-bin rewrites it).
fn fixture(py: &Path, v: &Path, sdk: Option<&str>, secure_version: u32) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hello_ota");
    std::fs::create_dir_all(&root).unwrap();
    let table = gen_esp32part(py, idf::OTA_CSV);
    let app = app(tmp.path(), "v1.0.0", secure_version);
    let bootloader = v.join("esptool/bootloader_esp32c3.bin");
    let build = idf::idf_build_folder(
        &root,
        &idf::BuildSpec {
            chip: "esp32c3",
            project: "hello_ota",
            flash_mode: "dio",
            flash_freq: "80m",
            flash_size: "4MB",
            bootloader: &bootloader,
            bootloader_offset: 0,
            table: &table,
            app: &app,
            sdkconfig: sdk,
        },
    );
    Fixture {
        _tmp: tmp,
        root,
        build,
    }
}

fn esptool_merge_flash_args(py: &Path, build: &Path, size: &str) -> Vec<u8> {
    let o: Output = Command::new(py)
        .args([
            "-m",
            "esptool",
            "--chip",
            "esp32c3",
            "merge-bin",
            "-o",
            "merged.bin",
            "--pad-to-size",
            size,
            "@flash_args",
        ])
        .current_dir(build)
        .output()
        .unwrap();
    assert!(o.status.success(), "esptool merge-bin: {}", text(&o));
    std::fs::read(build.join("merged.bin")).unwrap()
}

#[test]
fn from_build_is_esptool_merge_bin_of_flash_args_and_boots_and_updates() {
    let Some(py) = python() else { return };
    let Some(v) = vectors() else { return };
    let sdk = idf::sdkconfig("esp32c3", "4MB", true, false, 0);
    let f = fixture(&py, &v, Some(&sdk), 0);
    let flash = f.root.join("device.bin");
    let out = ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--from-build",
        s(&f.build),
    ]);
    assert!(
        out.contains("hello_ota.bin") && out.contains("sdkconfig"),
        "{out}"
    );
    assert!(!out.contains("not for a board"), "a real bootloader: {out}");
    let theirs = esptool_merge_flash_args(&py, &f.build, "4MB");
    let ours = std::fs::read(&flash).unwrap();
    assert_eq!(ours.len(), 4 << 20);
    assert!(
        ours == theirs,
        "not byte-identical to esptool merge-bin @flash_args"
    );
    // merge-bin rewrote the real bootloader's header (2MB 40m -> 4MB 80m) and its SHA-256.
    let real = std::fs::read(v.join("esptool/bootloader_esp32c3.bin")).unwrap();
    assert_ne!(ours[3], real[3]);
    let bl = f.root.join("bl.bin");
    std::fs::write(&bl, &ours[..real.len()]).unwrap();
    let j: Value = serde_json::from_str(&ok(&["image", "info", s(&bl), "--json"])).unwrap();
    assert_eq!(
        (j["flash_size"].as_str(), j["flash_freq"].as_str()),
        (Some("4MB"), Some("80m"))
    );
    assert_eq!(j["hash_valid"], true);
    // The settings reflect sdkconfig.
    let side = std::fs::read_to_string(format!("{}.device.toml", s(&flash))).unwrap();
    assert!(
        side.contains("rollback = true") && side.contains("anti_rollback = false"),
        "{side}"
    );
    assert!(side.contains("mmu_page_size = 0x10000"), "{side}");
    let info: Value =
        serde_json::from_str(&ok(&["device", "info", "--flash", s(&flash), "--json"])).unwrap();
    assert_eq!(info["chip"], "esp32c3");
    assert_eq!(info["settings"]["rollback"], true);
    // It boots the app ESP-IDF flashed (ota_0: no factory, otadata erased).
    let b: Value =
        serde_json::from_str(&ok(&["device", "boot", "--flash", s(&flash), "--json"])).unwrap();
    assert_eq!(
        (b["slot"].as_str(), b["version"].as_str()),
        (Some("ota_0"), Some("v1.0.0"))
    );
    // And `device run` updates it from the SD card.
    let sd = f.root.join("sdcard");
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::write(sd.join("hello_ota_v2.bin"), app(&f.root, "v2.0.0", 0)).unwrap();
    let cfg = f.root.join("ota.toml");
    std::fs::write(
        &cfg,
        "[[upgrade]]\ntype = \"app\"\nuri = \"file://sdcard/hello_ota_v2.bin\"\n",
    )
    .unwrap();
    let run = ok(&[
        "device",
        "run",
        "--flash",
        s(&flash),
        "--config",
        s(&cfg),
        "--sdcard",
        s(&sd),
    ]);
    assert!(run.contains("v2.0.0"), "{run}");
    // With rollback from sdkconfig the new app runs unconfirmed (PENDING_VERIFY): it confirms
    // itself, then every boot keeps it.
    ok(&["device", "confirm", "--flash", s(&flash)]);
    let b: Value =
        serde_json::from_str(&ok(&["device", "boot", "--flash", s(&flash), "--json"])).unwrap();
    assert_eq!(
        (b["slot"].as_str(), b["version"].as_str()),
        (Some("ota_1"), Some("v2.0.0"))
    );
    assert_eq!(b["ota_state"], "valid");
}

#[test]
fn from_build_reads_sdkconfig_json_when_there_is_no_sdkconfig_beside_build() {
    let Some(py) = python() else { return };
    let Some(v) = vectors() else { return };
    let f = fixture(&py, &v, None, 3);
    std::fs::write(
        f.build.join("config/sdkconfig.json"),
        r#"{"IDF_TARGET": "esp32c3", "BOOTLOADER_APP_ROLLBACK_ENABLE": true,
            "BOOTLOADER_APP_ANTI_ROLLBACK": true, "BOOTLOADER_APP_SECURE_VERSION": 3,
            "ESPTOOLPY_FLASHSIZE": "4MB", "PARTITION_TABLE_OFFSET": 32768, "MMU_PAGE_SIZE": 65536}"#,
    )
    .unwrap();
    let flash = f.root.join("device.bin");
    let out = ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--from-build",
        s(&f.build),
    ]);
    assert!(
        out.contains("sdkconfig.json") && out.contains("secure_version 3"),
        "{out}"
    );
    assert!(std::fs::read(&flash).unwrap() == esptool_merge_flash_args(&py, &f.build, "4MB"));
    let info: Value =
        serde_json::from_str(&ok(&["device", "info", "--flash", s(&flash), "--json"])).unwrap();
    assert_eq!(info["settings"]["rollback"], true);
    assert_eq!(info["settings"]["anti_rollback"], true);
    let b: Value =
        serde_json::from_str(&ok(&["device", "boot", "--flash", s(&flash), "--json"])).unwrap();
    assert_eq!(b["slot"], "ota_0");
    assert_eq!(
        b["efuse_secure_version"], 3,
        "anti-rollback burnt the app's secure_version"
    );
}

#[test]
fn from_build_refuses_broken_build_folders_clearly_and_writes_nothing() {
    let Some(py) = python() else { return };
    let Some(v) = vectors() else { return };
    let sdk = idf::sdkconfig("esp32c3", "4MB", false, false, 0);
    let check = |f: &Fixture, want: &[&str]| {
        let flash = f.root.join("device.bin");
        let o = ota(&[
            "device",
            "create",
            "--flash",
            s(&flash),
            "--from-build",
            s(&f.build),
        ]);
        assert!(!o.status.success(), "accepted: {}", text(&o));
        let msg = text(&o);
        for w in want {
            assert!(msg.contains(w), "{w:?} not in: {msg}");
        }
        assert!(!flash.exists(), "a refused create writes no flash: {msg}");
    };
    let fa = |f: &Fixture| f.build.join("flasher_args.json");
    // No flasher_args.json.
    let f = fixture(&py, &v, Some(&sdk), 0);
    std::fs::remove_file(fa(&f)).unwrap();
    check(&f, &["flasher_args.json", "not found"]);
    // Malformed JSON, and JSON without the chip.
    let f = fixture(&py, &v, Some(&sdk), 0);
    std::fs::write(fa(&f), "{\"flash_files\": ").unwrap();
    check(&f, &["flasher_args.json", "not valid JSON"]);
    std::fs::write(fa(&f), "{\"flash_settings\": {}, \"flash_files\": {}}").unwrap();
    check(&f, &["extra_esptool_args.chip"]);
    // A listed file is missing.
    let f = fixture(&py, &v, Some(&sdk), 0);
    std::fs::remove_file(f.build.join("ota_data_initial.bin")).unwrap();
    check(&f, &["ota_data_initial.bin", "0xd000"]);
    // An offset beyond the flash size (sdkconfig says 1MB).
    let f = fixture(&py, &v, Some(&sdk.replace("\"4MB\"", "\"1MB\"")), 0);
    let text = std::fs::read_to_string(fa(&f)).unwrap();
    std::fs::write(fa(&f), text.replace("\"0x10000\" :", "\"0x100000\" :")).unwrap();
    check(&f, &["hello_ota.bin", "beyond", "1 MB"]);
    // Overlapping files (the app moved onto the otadata sector).
    let f = fixture(&py, &v, Some(&sdk), 0);
    let text = std::fs::read_to_string(fa(&f)).unwrap();
    std::fs::write(fa(&f), text.replace("\"0x10000\" :", "\"0xe000\" :")).unwrap();
    check(&f, &["overlaps", "hello_ota.bin", "ota_data_initial.bin"]);
    // A malformed sdkconfig names its line.
    let f = fixture(
        &py,
        &v,
        Some("CONFIG_IDF_TARGET=\"esp32c3\"\nnot an option\n"),
        0,
    );
    check(&f, &["sdkconfig", "line 2"]);
    // A target that is not flasher_args.json's chip.
    let f = fixture(&py, &v, Some(&sdk.replace("\"esp32c3\"", "\"esp32s3\"")), 0);
    check(&f, &["CONFIG_IDF_TARGET", "esp32s3"]);
    // Not a folder at all.
    let f = fixture(&py, &v, Some(&sdk), 0);
    let o = ota(&[
        "device",
        "create",
        "--flash",
        s(&f.root.join("d.bin")),
        "--from-build",
        s(&f.root.join("nope")),
    ]);
    assert!(
        !o.status.success() && text_of(&o).contains("nope"),
        "{}",
        text_of(&o)
    );
}

fn text_of(o: &Output) -> String {
    text(o)
}

#[test]
fn partitions_accepts_a_binary_table_and_a_stub_bootloader_says_it_is_for_the_emulator() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("partition-table.bin");
    std::fs::write(&bin, gen_esp32part(&py, idf::OTA_CSV)).unwrap();
    let csv = dir.path().join("partitions.csv");
    std::fs::write(&csv, idf::OTA_CSV).unwrap();
    let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
    let out = ok(&[
        "device",
        "create",
        "--flash",
        s(&a),
        "--chip",
        "esp32c3",
        "--partitions",
        s(&bin),
    ]);
    assert!(out.contains("for the emulator, not for a board"), "{out}");
    ok(&[
        "device",
        "create",
        "--flash",
        s(&b),
        "--chip",
        "esp32c3",
        "--partitions",
        s(&csv),
    ]);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "binary and CSV tables give the same device"
    );
    let j: Value =
        serde_json::from_str(&ok(&["device", "info", "--flash", s(&a), "--json"])).unwrap();
    let labels: Vec<&str> = j["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["nvs", "otadata", "phy_init", "ota_0", "ota_1"]);
    // A corrupt binary table is refused as one.
    let mut bad = std::fs::read(&bin).unwrap();
    bad[40] ^= 0xFF;
    std::fs::write(&bin, &bad).unwrap();
    let o = ota(&[
        "device",
        "create",
        "--flash",
        s(&dir.path().join("c.bin")),
        "--chip",
        "esp32c3",
        "--partitions",
        s(&bin),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("binary partition table"),
        "{}",
        text(&o)
    );
}

#[test]
fn from_build_with_secure_boot_takes_the_signing_keys_digest_and_needs_a_signed_app() {
    let Some(py) = python() else { return };
    let Some(v) = vectors() else { return };
    let mut sdk = idf::sdkconfig("esp32c3", "4MB", false, false, 0);
    sdk += "CONFIG_SECURE_BOOT=y\nCONFIG_SECURE_BOOT_V2_ENABLED=y\nCONFIG_SECURE_BOOT_V2_RSA_ENABLED=y\n\
            CONFIG_SECURE_BOOT_SIGNING_KEY=\"secure_boot_signing_key.pem\"\n";
    let f = fixture(&py, &v, Some(&sdk), 0);
    let flash = f.root.join("device.bin");
    let create = || {
        ota(&[
            "device",
            "create",
            "--flash",
            s(&flash),
            "--from-build",
            s(&f.build),
            "--force",
        ])
    };
    // The key file CONFIG_SECURE_BOOT_SIGNING_KEY names is missing: said, nothing written.
    let o = create();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("CONFIG_SECURE_BOOT_SIGNING_KEY"),
        "{}",
        text(&o)
    );
    assert!(!flash.exists());
    let key = f.root.join("secure_boot_signing_key.pem");
    let espsecure = |args: &[&str]| {
        let o = Command::new(&py)
            .args(["-m", "espsecure"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "espsecure {args:?}: {}", text(&o));
    };
    espsecure(&[
        "generate-signing-key",
        "--version",
        "2",
        "--scheme",
        "rsa3072",
        s(&key),
    ]);
    // The build's app is not signed: secure boot would not boot it.
    let o = create();
    assert!(!o.status.success());
    assert!(text(&o).contains("is not signed"), "{}", text(&o));
    assert!(!flash.exists());
    // Signed as idf.py does with CONFIG_SECURE_BOOT_BUILD_SIGNED_BINARIES.
    let app = f.build.join("hello_ota.bin");
    let signed = f.build.join("hello_ota.signed.bin");
    espsecure(&[
        "sign-data",
        "--version",
        "2",
        "--keyfile",
        s(&key),
        "-o",
        s(&signed),
        s(&app),
    ]);
    std::fs::rename(&signed, &app).unwrap();
    let o = create();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Secure boot: v2 enabled"), "{}", text(&o));
    let info = ok(&["device", "info", "--flash", s(&flash)]);
    assert!(info.contains("scheme RSA-3072-PSS"), "{info}");
    assert!(
        info.contains("secure boot: boots (block 0 verified, eFuse digest 0)"),
        "{info}"
    );
    let boot = ok(&["device", "boot", "--flash", s(&flash)]);
    assert!(boot.contains("ota_0"), "{boot}");
}
