//! End-to-end tests of the `ota` CLI on emulated devices: the demo, the done-when checks of the
//! OTA-service issue, and every bad input of its list (after each the device boots the same app
//! and otadata is unchanged).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

/// The ESP-ADF example table (1 MB slots): otadata 0xD000, ota_0 0x10000, ota_1 0x110000,
/// flash_tone 0x210000.
const OTADATA: std::ops::Range<usize> = 0xD000..0xF000;
const OTA_0: std::ops::Range<usize> = 0x10000..0x110000;
const FLASH_TONE: std::ops::Range<usize> = 0x210000..0x310000;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// An ESP32 with `ota_example v1.0.0` in ota_0 and a small format-0 tone bin in flash_tone.
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        ok(&[
            "image",
            "make",
            "--chip",
            "esp32",
            "--project",
            "ota_example",
            "--version",
            "v1.0.0",
            "--size",
            "100K",
            "-o",
            f.p("run.bin"),
        ]);
        let sounds = f.path("sounds");
        std::fs::create_dir_all(&sounds).unwrap();
        for i in 0..3 {
            std::fs::write(
                sounds.join(format!("{}_beep.mp3", i)),
                vec![i as u8 + 1; 1000 + i * 77],
            )
            .unwrap();
        }
        ok(&[
            "tone",
            "pack",
            f.p("sounds"),
            "-o",
            f.p("old_tone.bin"),
            "--format",
            "0",
        ]);
        let data = format!("flash_tone={}", f.p("old_tone.bin"));
        ok(&[
            "device",
            "create",
            "--flash",
            f.p("flash.bin"),
            "--app",
            f.p("run.bin"),
            "--data",
            &data,
        ]);
        std::fs::create_dir_all(f.path("sdcard")).unwrap();
        // First power-on: the bootloader records ota_0 in otadata (set_actual_ota_seq).
        let log = ok(&["device", "boot", "--flash", f.p("flash.bin")]);
        assert!(
            log.contains("Set actual ota_seq=1 in otadata[0]"),
            "{}",
            log
        );
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> &str {
        // Leak-free: the TempDir outlives every use in a test.
        let s = self.path(name).to_str().unwrap().to_string();
        Box::leak(s.into_boxed_str())
    }

    fn flash(&self) -> Vec<u8> {
        std::fs::read(self.path("flash.bin")).unwrap()
    }

    fn config(&self, text: &str) -> &str {
        std::fs::write(self.path("ota.toml"), text).unwrap();
        self.p("ota.toml")
    }

    fn run(&self, config: &str) -> std::process::Output {
        ota(&[
            "device",
            "run",
            "--flash",
            self.p("flash.bin"),
            "--config",
            self.config(config),
            "--timeout-ms",
            "2000",
        ])
    }

    fn boot_json(&self) -> serde_json::Value {
        let out = ok(&["device", "boot", "--flash", self.p("flash.bin"), "--json"]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("boot --json is not JSON ({}): {}", e, out))
    }

    /// Run a config that must fail, then check the device is exactly as it was where it matters.
    #[track_caller]
    fn assert_fails_unchanged(&self, config: &str, expect_in_log: &str) -> String {
        let before = self.flash();
        let out = self.run(config);
        let log = text(&out);
        assert!(!out.status.success(), "device run should fail:\n{}", log);
        assert!(
            log.contains(expect_in_log),
            "log should mention {:?}:\n{}",
            expect_in_log,
            log
        );
        let after = self.flash();
        assert!(
            before[OTADATA] == after[OTADATA],
            "otadata changed:\n{}",
            log
        );
        assert!(
            before[OTA_0] == after[OTA_0],
            "the running slot changed:\n{}",
            log
        );
        let boot = self.boot_json();
        assert_eq!(boot["slot"], "ota_0", "{}", log);
        assert_eq!(boot["version"], "v1.0.0", "{}", log);
        log
    }

    fn image(&self, name: &str, args: &[&str]) -> Vec<u8> {
        let mut a = vec!["image", "make", "-o", self.p(name)];
        a.extend_from_slice(args);
        ok(&a);
        std::fs::read(self.path(name)).unwrap()
    }
}

fn app_config(uri: &str) -> String {
    format!("firmware_upgrade_uri = \"{}\"\n", uri)
}

fn tone_config(uri: &str, label: &str) -> String {
    format!(
        "[[upgrade]]\ntype = \"data\"\nuri = \"{}\"\nlabel = \"{}\"\nformat = \"tone\"\n",
        uri, label
    )
}

fn new_app(f: &Fixture) -> Vec<u8> {
    f.image(
        "new.bin",
        &[
            "--chip",
            "esp32",
            "--project",
            "play_mp3_control",
            "--version",
            "v2.0.0",
            "--size",
            "300K",
        ],
    )
}

#[test]
fn demo_runs_the_esp_adf_example_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = ok(&["demo", "--dir", s(dir.path())]);
    let order = [
        "data upgrade uri file://sdcard/flash_tone.bin",
        "tone partition format 0, total ",
        "partition flash_tone upgrade successes",
        "List id: 0, OTA success",
        "Writing to partition subtype 17 at offset 0x110000",
        "Running firmware version: v2.2-252-g62edbd26-dirty, the incoming firmware version v2.2-237-g6532b89f",
        "List id: 1, OTA success",
        "OTA_END!",
        "restart!",
        "Loaded app from partition at offset 0x110000",
        "App version:      v2.2-237-g6532b89f",
    ];
    let mut at = 0;
    for line in order {
        match log[at..].find(line) {
            Some(i) => at += i + line.len(),
            None => panic!("demo log lacks {:?} (in order):\n{}", line, log),
        }
    }
}

#[test]
fn device_run_installs_the_real_flash_tone_bin_then_finds_it_current() {
    let Some(v) = vectors() else { return };
    let f = Fixture::new();
    let tone = std::fs::read(v.join("tone/flash_tone.bin")).unwrap();
    assert_eq!(tone.len(), 434_756);
    std::fs::copy(
        v.join("tone/flash_tone.bin"),
        f.path("sdcard/flash_tone.bin"),
    )
    .unwrap();
    let cfg = "data_upgrade_uri = \"file://sdcard/flash_tone.bin\"\n";
    let out = f.run(cfg);
    assert!(out.status.success(), "{}", text(&out));
    let flash = f.flash();
    assert!(
        flash[FLASH_TONE.start..FLASH_TONE.start + tone.len()] == tone[..],
        "flash_tone differs from the file"
    );
    assert!(
        flash[FLASH_TONE.start + tone.len()..FLASH_TONE.end]
            .iter()
            .all(|&b| b == 0xFF),
        "stale bytes after the tone bin"
    );
    let again = f.run(cfg);
    let log = text(&again);
    assert!(again.status.success(), "{}", log);
    assert!(log.contains("tone partition format 0, total 21"), "{}", log);
}

/// `python3 -m http.server` on loopback, serving `dir`; killed on drop.
struct PyServer(Child, u16);

impl PyServer {
    fn start(python: &Path, dir: &Path) -> PyServer {
        let port = closed_port();
        let child = Command::new(python)
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
                s(dir),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        PyServer(child, port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn esp32s2_device_updates_to_real_blink_image_from_python_http_server() {
    let Some(v) = vectors() else { return };
    let Some(py) = python() else { return };
    let f = Fixture {
        dir: tempfile::tempdir().unwrap(),
    };
    f.image(
        "s2.bin",
        &[
            "--chip",
            "esp32s2",
            "--project",
            "hello",
            "--version",
            "v0.1",
            "--size",
            "64K",
        ],
    );
    ok(&[
        "device",
        "create",
        "--flash",
        f.p("flash.bin"),
        "--chip",
        "esp32s2",
        "--app",
        f.p("s2.bin"),
    ]);
    let server = PyServer::start(&py, &v.join("esptool"));
    let cfg = app_config(&format!(
        "http://127.0.0.1:{}/esp_idf_blink_esp32s2.bin",
        server.1
    ));
    let out = f.run(&cfg);
    assert!(out.status.success(), "{}", text(&out));
    let boot = f.boot_json();
    assert_eq!(boot["slot"], "ota_1");
    assert_eq!(boot["project_name"], "blink");
    assert_eq!(boot["version"], "qa-test-v5.0-20220830-4-g4532e6");
}

#[test]
fn app_update_then_not_newer_is_skipped_without_reboot() {
    let f = Fixture::new();
    let img = new_app(&f);
    let server = Server::start(Reply::Body(img));
    let cfg = format!(
        "{}force_check_firmware_version = true\n",
        app_config(&server.url("new.bin"))
    );
    let log = text(&f.run(&cfg));
    assert!(log.contains("List id: 0, OTA success"), "{}", log);
    assert_eq!(f.boot_json()["slot"], "ota_1");
    // Running v2.0.0 now; the same image again is not newer: skipped, no restart, exit 0.
    let out = f.run(&cfg);
    let log = text(&out);
    assert!(out.status.success(), "{}", log);
    assert!(log.contains("OTA skipped"), "{}", log);
    assert!(!log.contains("restart!"), "{}", log);
    assert_eq!(f.boot_json()["slot"], "ota_1");
}

#[test]
fn bad_input_missing_sd_card_file() {
    let f = Fixture::new();
    let before = f.flash();
    let log = f.assert_fails_unchanged(
        &tone_config("file://sdcard/missing.bin", "flash_tone"),
        "missing.bin",
    );
    assert!(before[FLASH_TONE] == f.flash()[FLASH_TONE], "{}", log);
}

#[test]
fn bad_input_connection_refused() {
    let f = Fixture::new();
    let uri = format!("http://127.0.0.1:{}/app.bin", closed_port());
    let log = f.assert_fails_unchanged(&app_config(&uri), "refused");
    assert!(log.contains(&uri), "{}", log);
}

#[test]
fn bad_input_http_404_and_500() {
    let f = Fixture::new();
    for code in [404u16, 500] {
        let server = Server::start(Reply::Status(code));
        f.assert_fails_unchanged(&app_config(&server.url("app.bin")), &code.to_string());
    }
}

#[test]
fn bad_input_body_shorter_than_content_length() {
    let f = Fixture::new();
    let img = new_app(&f);
    let server = Server::start(Reply::Short {
        body: img[..50_000].to_vec(),
        promised: img.len(),
    });
    f.assert_fails_unchanged(&app_config(&server.url("new.bin")), "50000");
}

#[test]
fn bad_input_truncated_image() {
    let f = Fixture::new();
    let img = new_app(&f);
    let server = Server::start(Reply::Body(img[..img.len() / 2].to_vec()));
    f.assert_fails_unchanged(&app_config(&server.url("new.bin")), "truncated");
}

#[test]
fn bad_input_image_for_another_chip() {
    let f = Fixture::new();
    let img = f.image(
        "c3.bin",
        &["--chip", "esp32c3", "--project", "x", "--version", "v2.0.0"],
    );
    let server = Server::start(Reply::Body(img));
    f.assert_fails_unchanged(&app_config(&server.url("c3.bin")), "ESP32-C3");
}

#[test]
fn bad_input_image_larger_than_slot_is_refused_before_erasing() {
    let f = Fixture::new();
    let img = f.image(
        "big.bin",
        &[
            "--chip",
            "esp32",
            "--project",
            "x",
            "--version",
            "v2.0.0",
            "--size",
            "1200K",
        ],
    );
    let server = Server::start(Reply::Body(img));
    let before = f.flash();
    f.assert_fails_unchanged(&app_config(&server.url("big.bin")), "does not fit");
    assert!(
        before == f.flash(),
        "nothing may be erased for an image that cannot fit"
    );
}

#[test]
fn bad_input_bad_magic() {
    let f = Fixture::new();
    let mut img = new_app(&f);
    img[0] = 0x00;
    let server = Server::start(Reply::Body(img));
    let before = f.flash();
    f.assert_fails_unchanged(&app_config(&server.url("new.bin")), "magic");
    assert!(
        before == f.flash(),
        "nothing may be erased for an image with a bad magic"
    );
}

#[test]
fn bad_input_one_flipped_byte_in_the_middle() {
    let f = Fixture::new();
    let mut img = new_app(&f);
    let mid = img.len() / 2;
    img[mid] ^= 0x40;
    let server = Server::start(Reply::Body(img));
    f.assert_fails_unchanged(&app_config(&server.url("new.bin")), "failed");
}

#[test]
fn bad_input_tone_bin_with_wrong_tag() {
    let f = Fixture::new();
    let mut bin = std::fs::read(f.path("old_tone.bin")).unwrap();
    bin[0] = 0x54;
    std::fs::write(f.path("sdcard/flash_tone.bin"), &bin).unwrap();
    let before = f.flash();
    f.assert_fails_unchanged(
        &tone_config("file://sdcard/flash_tone.bin", "flash_tone"),
        "not audio tone bin",
    );
    assert!(
        before == f.flash(),
        "a wrong tag must leave flash_tone as it was"
    );
}

#[test]
fn bad_input_unknown_partition_label() {
    let f = Fixture::new();
    std::fs::copy(f.path("old_tone.bin"), f.path("sdcard/flash_tone.bin")).unwrap();
    let before = f.flash();
    f.assert_fails_unchanged(
        &tone_config("file://sdcard/flash_tone.bin", "no_such_part"),
        "no_such_part",
    );
    assert!(before == f.flash());
}

#[test]
fn bad_input_malformed_config_names_the_line() {
    let f = Fixture::new();
    let cfg = "[[upgrade]]\ntype = \"app\"\nuri = \"http://127.0.0.1:1/x.bin\"\nreboot = maybe\n";
    let log = f.assert_fails_unchanged(cfg, "ota.toml:4");
    assert!(log.contains("reboot") || log.contains("invalid"), "{}", log);
}

#[test]
fn device_run_reads_the_sd_card_from_a_fat_image() {
    let f = Fixture::new();
    // A format-1 tone bin (the partition holds a format-0 one) so the rewrite is visible.
    ok(&[
        "tone",
        "pack",
        f.p("sounds"),
        "-o",
        f.p("new_tone.bin"),
        "--format",
        "1",
        "--version",
        "v1.0.0",
        "--time",
        "10:00:00",
        "--date",
        "2026-11-28",
    ]);
    let new_tone = std::fs::read(f.path("new_tone.bin")).unwrap();
    ota_emu::SdCard::create_fat_image(f.path("sd.img"), 4 << 20, &[("flash_tone.bin", &new_tone)])
        .unwrap();
    let cfg = f.config(&tone_config("file://sdcard/flash_tone.bin", "flash_tone"));
    let out = ota(&[
        "device",
        "run",
        "--flash",
        f.p("flash.bin"),
        "--config",
        cfg,
        "--sdcard",
        f.p("sd.img"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let flash = f.flash();
    assert!(flash[FLASH_TONE.start..FLASH_TONE.start + new_tone.len()] == new_tone[..]);
    let info = ok(&["device", "info", "--flash", f.p("flash.bin")]);
    assert!(info.contains("ota_example v1.0.0"), "{}", info);
}

/// The partition table sector of the example device.
const TABLE: std::ops::Range<usize> = 0x8000..0x8C00;
/// Size of one partition table entry.
const ENTRY: usize = 32;

fn info_json(f: &Fixture) -> (std::process::Output, serde_json::Value) {
    let o = ota(&["device", "info", "--flash", f.p("flash.bin"), "--json"]);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("device info --json is JSON ({}):\n{}", e, text(&o)));
    (o, v)
}

fn labels(v: &serde_json::Value) -> Vec<String> {
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap().to_string())
        .collect()
}

const EXAMPLE_LABELS: [&str; 6] = ["nvs", "otadata", "phy_init", "ota_0", "ota_1", "flash_tone"];

/// Corrupt the table with `damage`, then check that `device info` (text and JSON) shows the six
/// entries, otadata, the apps and the bootloader's verdict, and exits with status 2.
fn check_refused_table(damage: impl Fn(&mut [u8]), verdict: &str, note: Option<&str>) {
    let f = Fixture::new();
    let mut flash = f.flash();
    damage(&mut flash[TABLE]);
    std::fs::write(f.path("flash.bin"), &flash).unwrap();
    let o = ota(&["device", "info", "--flash", f.p("flash.bin")]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(4), "{}", t);
    assert!(!t.contains("panicked"), "{}", t);
    assert!(t.contains("REFUSED") && t.contains(verdict), "{}", t);
    for l in EXAMPLE_LABELS {
        assert!(t.contains(l), "entry {} shown:\n{}", l, t);
    }
    assert!(t.contains("[0] seq 1"), "otadata shown:\n{}", t);
    assert!(
        t.contains("ota_example v1.0.0"),
        "the app in ota_0 shown:\n{}",
        t
    );
    if let Some(n) = note {
        assert!(t.contains(n), "{}", t);
    }
    let (o, v) = info_json(&f);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_eq!(labels(&v), EXAMPLE_LABELS);
    assert!(
        v["table_error"].as_str().unwrap().contains(verdict),
        "{}",
        v
    );
    assert_eq!(v["otadata"]["entries"][0]["seq"], 1);
    assert_eq!(v["apps"][0]["app"]["version"], "v1.0.0");
    // Nothing was written.
    assert_eq!(f.flash(), flash);
}

#[test]
fn device_info_shows_a_table_with_a_bad_md5_and_the_bootloaders_verdict() {
    // A flipped bit in ota_1's size: the MD5 entry (entry 6) no longer matches.
    check_refused_table(
        |t| t[4 * ENTRY + 8] ^= 0x01,
        "Incorrect MD5 checksum",
        Some("MD5 entry"),
    );
}

#[test]
fn device_info_shows_a_table_without_end_marker_and_the_bootloaders_verdict() {
    // Zeros from entry 7 on, where the end marker was.
    check_refused_table(
        |t| t[7 * ENTRY..].fill(0),
        "invalid magic number",
        Some("entry 7"),
    );
}

#[test]
fn device_info_shows_a_table_beyond_the_flash_size_and_the_bootloaders_verdict() {
    // A table without MD5 (the bootloader's MD5 is optional) whose flash_tone ends beyond the
    // 4 MB chip: the bootloader refuses the whole table.
    let f = Fixture::new();
    std::fs::write(
        f.path("big.csv"),
        "nvs, data, nvs, 0x9000, 0x4000,\notadata, data, ota, 0xd000, 0x2000,\n\
         phy_init, data, phy, 0xf000, 0x1000,\nota_0, app, ota_0, 0x10000, 1M,\n\
         ota_1, app, ota_1, 0x110000, 1M,\nflash_tone, data, 0xff, 0x210000, 4M,\n",
    )
    .unwrap();
    ok(&[
        "partition-table",
        f.p("big.csv"),
        "--no-verify",
        "--disable-md5sum",
        "-o",
        f.p("big.bin"),
    ]);
    let bin = std::fs::read(f.path("big.bin")).unwrap();
    check_refused_table(|t| t.copy_from_slice(&bin), "exceeds flash chip size", None);
}

#[test]
fn device_info_warns_about_overlapping_entries_the_bootloader_accepts() {
    let f = Fixture::new();
    // The example's table without MD5 entry (optional for the bootloader), then ota_1 moved to
    // start inside ota_0 (gen_esp32part refuses to write such a table).
    std::fs::write(
        f.path("example.csv"),
        ok(&["partition-table", &{
            let mut t = f.flash()[TABLE].to_vec();
            t.truncate(0xC00);
            std::fs::write(f.path("t.bin"), &t).unwrap();
            f.p("t.bin").to_string()
        }]),
    )
    .unwrap();
    ok(&[
        "partition-table",
        f.p("example.csv"),
        "--disable-md5sum",
        "-o",
        f.p("overlap.bin"),
    ]);
    let mut bin = std::fs::read(f.path("overlap.bin")).unwrap();
    bin[4 * ENTRY + 4..4 * ENTRY + 8].copy_from_slice(&0x100000u32.to_le_bytes());
    std::fs::write(f.path("overlap.bin"), &bin).unwrap();
    let mut flash = f.flash();
    flash[TABLE].copy_from_slice(&std::fs::read(f.path("overlap.bin")).unwrap());
    std::fs::write(f.path("flash.bin"), &flash).unwrap();
    let t = ok(&["device", "info", "--flash", f.p("flash.bin")]);
    assert!(
        t.contains("gen_esp32part would refuse this table") && t.contains("overlap"),
        "{}",
        t
    );
    let (o, v) = info_json(&f);
    assert!(o.status.success(), "{}", text(&o));
    assert!(v["table_error"].is_null(), "{}", v);
    let w = v["table_warnings"].as_array().unwrap();
    assert!(
        w.iter().any(|w| w.as_str().unwrap().contains("overlap")),
        "{}",
        v
    );
    assert_eq!(labels(&v), EXAMPLE_LABELS);
}

#[test]
fn device_info_shows_the_tone_partitions_format_count_and_version() {
    let f = Fixture::new();
    // The fixture's format-0 bin: 3 files, no version.
    let t = ok(&["device", "info", "--flash", f.p("flash.bin")]);
    assert!(
        t.contains("flash_tone") && t.contains("format 0, 3 files: valid"),
        "{}",
        t
    );
    let (_, v) = info_json(&f);
    let tone = &v["tones"][0];
    assert_eq!(tone["label"], "flash_tone");
    assert_eq!(tone["format"], 0);
    assert_eq!(tone["count"], 3);
    assert!(tone["version"].is_null());
    assert_eq!(tone["valid"], true);
    assert_eq!(
        v["tones"].as_array().unwrap().len(),
        1,
        "only flash_tone: {}",
        v
    );
    // A format-1 bin with a version.
    ok(&[
        "tone",
        "pack",
        f.p("sounds"),
        "-o",
        f.p("v2.bin"),
        "--version",
        "v2.3.4",
    ]);
    ok(&[
        "partition",
        "write",
        "flash_tone",
        "--flash",
        f.p("flash.bin"),
        f.p("v2.bin"),
    ]);
    let t = ok(&["device", "info", "--flash", f.p("flash.bin")]);
    assert!(
        t.contains("format 1, 3 files, version v2.3.4: valid"),
        "{}",
        t
    );
    let (_, v) = info_json(&f);
    assert_eq!(v["tones"][0]["format"], 1);
    assert_eq!(v["tones"][0]["count"], 3);
    assert_eq!(v["tones"][0]["version"], "v2.3.4");
    assert_eq!(v["tones"][0]["project_name"], "ESP_TONE_BIN");
    // One byte of the first file changed: our CRC check fails, ADF's init still accepts it.
    let mut flash = f.flash();
    let bin_len = std::fs::read(f.path("v2.bin")).unwrap().len();
    flash[FLASH_TONE.start + bin_len - 100] ^= 0x55;
    std::fs::write(f.path("flash.bin"), &flash).unwrap();
    let t = ok(&["device", "info", "--flash", f.p("flash.bin")]);
    assert!(
        t.contains("version v2.3.4: DAMAGED") && t.contains("tone_partition_init accepts"),
        "{}",
        t
    );
    let (_, v) = info_json(&f);
    assert_eq!(v["tones"][0]["valid"], false);
    assert_eq!(v["tones"][0]["adf_valid"], true);
    assert!(
        v["tones"][0]["error"].as_str().unwrap().contains("CRC"),
        "{}",
        v
    );
}
