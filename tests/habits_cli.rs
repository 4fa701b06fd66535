//! Everyday habits of the CLI, as a new user meets them: one spelling per option, one JSON form
//! per field, ESP error codes as ESP-IDF prints them, errors that say things once, ELF files
//! named as such, `device run --json/--quiet`, one exit-status table, a demo that tells the
//! truth and can be replayed, and rollback states that are never silently ignored.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// Exit statuses (README "Exit status").
const EXIT_ERROR: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_UNBOOTABLE: i32 = 4;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn p(&self, name: &str) -> String {
        s(&self.0.path().join(name)).to_string()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    /// An app image `project version` at `name`.
    fn image(&self, name: &str, version: &str) -> String {
        let out = self.p(name);
        ok(&[
            "image",
            "make",
            "--project",
            "habits",
            "--version",
            version,
            "--size",
            "40K",
            "-o",
            &out,
        ]);
        out
    }
    /// An ESP32 with the example's table and `habits v1.0.0` in ota_0; `extra` go to create.
    fn device(&self, extra: &[&str]) -> String {
        let app = self.image("v1.bin", "v1.0.0");
        let flash = self.p("flash.bin");
        let mut args = vec!["device", "create", "--flash", &flash, "--app", &app];
        args.extend_from_slice(extra);
        ok(&args);
        std::fs::create_dir_all(self.path("sdcard")).unwrap();
        flash
    }
    fn config(&self, body: &str) -> String {
        let p = self.p("ota.toml");
        std::fs::write(&p, body).unwrap();
        p
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The README stands alone

#[test]
fn readme_cites_upstream_files_not_documents_outside_the_repository() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for d in [
        "idf-formats",
        "adf-ota-service",
        "delta-and-scale",
        "peers.md",
        "chip-network-fleet",
        "shared/reference",
        "DESIGN.md",
        "\u{a7}",
        "/\u{77}ork/", // this machine's absolute paths (spelt so that this line is not one)
    ] {
        let hits: Vec<&str> = readme.lines().filter(|l| l.contains(d)).collect();
        assert!(hits.is_empty(), "README cites {d:?}:\n{}", hits.join("\n"));
    }
    // It cites the upstream files instead.
    for f in [
        "components/app_update/esp_ota_ops.c",
        "components/bootloader_support/src/bootloader_utility.c",
        "components/partition_table/gen_esp32part.py",
        "components/ota_service/",
    ] {
        assert!(readme.contains(f), "README does not cite {f}");
    }
}

// ---------------------------------------------------------------------------------------------
// One spelling per option, one JSON form per field

#[test]
fn partition_table_offset_is_spelled_as_in_every_other_command() {
    let d = Dir::new();
    let csv = d.path("t.csv");
    std::fs::write(
        &csv,
        "nvs, data, nvs, , 0x4000,\nfactory, app, factory, , 1M,\n",
    )
    .unwrap();
    let a = d.p("a.bin");
    ok(&[
        "partition-table",
        s(&csv),
        "--partition-table-offset",
        "0x9000",
        "-o",
        &a,
    ]);
    // The old spelling still works, as a hidden alias, with the same result.
    let b = d.p("b.bin");
    ok(&["partition-table", s(&csv), "--offset", "0x9000", "-o", &b]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // The first partition follows the table at 0x9000 + 0x1000.
    let bin = std::fs::read(&a).unwrap();
    assert_eq!(u32::from_le_bytes(bin[4..8].try_into().unwrap()), 0xA000);
    let help = ok(&["partition-table", "--help"]);
    assert!(help.contains("--partition-table-offset"), "{help}");
    assert!(!help.contains("  --offset"), "{help}");
}

#[test]
fn flash_size_has_one_json_form_in_device_and_image_info() {
    let d = Dir::new();
    let flash = d.device(&[]);
    let dev: Value = serde_json::from_str(&ok(&["device", "info", "--flash", &flash, "--json"]))
        .expect("device info --json");
    let img: Value = serde_json::from_str(&ok(&["image", "info", &d.p("v1.bin"), "--json"]))
        .expect("image info --json");
    assert_eq!(dev["flash_size"], "4MB");
    assert_eq!(img["flash_size"], "4MB");
    // Offsets are numbers everywhere.
    assert!(dev["partitions"][0]["offset"].is_u64(), "{dev}");
    assert!(dev["apps"][0]["offset"].is_u64(), "{dev}");
    assert_eq!(dev["apps"][0]["app"]["project_name"], "habits");
}

// ---------------------------------------------------------------------------------------------
// ESP error codes, errors said once, ELF files

#[test]
fn item_results_print_esp_codes_as_hex_then_name() {
    let d = Dir::new();
    let flash = d.device(&[]);
    d.image("sdcard/old.bin", "v0.9.0");
    let cfg = d.config(
        "[[upgrade]]\ntype = \"app\"\nuri = \"file://sdcard/old.bin\"\nversion_check = \"newer\"\n",
    );
    let o = ota(&["device", "run", "--flash", &flash, "--config", &cfg]);
    let log = text(&o);
    assert!(
        log.contains("OTA skipped, result: 0x90004 NO_HIGHER_VERSION"),
        "{log}"
    );
    // With --json the code comes as the number and as the same text.
    let o = ota(&[
        "device", "run", "--flash", &flash, "--config", &cfg, "--json",
    ]);
    let fin = events(&o)
        .into_iter()
        .find(|e| e["event"] == "item_finish")
        .expect("an item_finish event");
    assert_eq!(fin["reason"], "0x90004 NO_HIGHER_VERSION");
    assert_eq!(fin["code"], 0x90004);
    assert_eq!(fin["outcome"], "skipped");
}

/// No error line says the same thing twice: every `: `-separated segment appears once.
#[test]
fn no_error_line_repeats_a_segment() {
    let d = Dir::new();
    let flash = d.device(&[]);
    let missing = d.p("missing.bin");
    let not_a_dir = d.p("v1.bin");
    let cfg = d.config("firmware_upgrade_uri = \"file://sdcard/none.bin\"\n");
    let cases: Vec<Vec<&str>> = vec![
        vec!["device", "info", "--flash", &missing],
        vec!["device", "boot", "--flash", &missing],
        vec!["device", "boot", "--flash", &missing, "--json"],
        vec!["device", "run", "--flash", &missing, "--config", &cfg],
        vec!["device", "run", "--flash", &flash, "--config", &missing],
        vec!["device", "run", "--flash", &flash, "--config", &cfg],
        vec![
            "device", "run", "--flash", &flash, "--config", &cfg, "--sdcard", &missing,
        ],
        vec![
            "device", "run", "--flash", &flash, "--config", &cfg, "--sdcard", &cfg,
        ],
        vec!["device", "confirm", "--flash", &missing],
        vec!["device", "create", "--flash", &missing, "--app", &missing],
        vec!["image", "info", &missing],
        vec!["tone", "info", &missing],
        vec!["tone", "pack", &missing, "-o", &missing],
        vec!["partition-table", &missing],
        vec!["otadata", "read", "--flash", &missing],
        vec!["otadata", "switch", "ota_1", "--flash", &flash],
        vec!["partition", "list", "--flash", &missing],
        vec!["partition", "write", "ota_1", "--flash", &flash, &missing],
        vec!["flash", "merge", "-o", &missing, "0x0", &missing],
        vec![
            "flash", "read", "--flash", &missing, "0", "16", "-o", &missing,
        ],
        vec!["serve", &missing, "--bind", "127.0.0.1:0"],
        vec!["serve", &not_a_dir, "--bind", "127.0.0.1:0"],
    ];
    let mut checked = 0;
    for args in &cases {
        let o = ota(args);
        assert!(!o.status.success(), "{:?} succeeded", args);
        for line in text(&o).lines().filter(|l| l.contains("error")) {
            let segments: Vec<&str> = line
                .split(": ")
                .map(str::trim)
                .filter(|s| s.len() > 3)
                .collect();
            for (i, seg) in segments.iter().enumerate() {
                // The same text again, or a context that the next message starts with again
                // ("SD card X: SD card X not found").
                assert!(
                    !segments[i + 1..].iter().any(|later| later.starts_with(seg)),
                    "ota {:?}: the error line says {:?} twice:\n{}",
                    args,
                    seg,
                    line
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= cases.len(), "only {checked} error lines checked");
}

#[test]
fn an_elf_where_an_image_is_expected_says_so() {
    let Some(v) = vectors() else { return };
    let elf = v.join("esptool/esp32c6-appdesc.elf");
    let d = Dir::new();
    let o = ota(&["image", "info", s(&elf)]);
    assert_eq!(o.status.code(), Some(EXIT_ERROR), "{}", text(&o));
    assert!(
        stderr(&o).contains("is an ELF file, not an app"),
        "{}",
        text(&o)
    );
    assert!(stderr(&o).contains("elf2image"), "{}", text(&o));

    let new = d.p("new.bin");
    let o = ota(&[
        "device",
        "create",
        "--flash",
        &new,
        "--chip",
        "esp32c6",
        "--app",
        s(&elf),
    ]);
    assert_eq!(o.status.code(), Some(EXIT_ERROR), "{}", text(&o));
    assert!(
        stderr(&o).contains("is an ELF file, not an app image"),
        "{}",
        text(&o)
    );
    assert!(!Path::new(&new).exists(), "no device is made from an ELF");

    // An app item whose source is an ELF: the item fails and says why; nothing is written.
    let flash = d.device(&[]);
    std::fs::copy(&elf, d.path("sdcard/app.elf")).unwrap();
    let before = std::fs::read(&flash).unwrap();
    let cfg = d.config("firmware_upgrade_uri = \"file://sdcard/app.elf\"\n");
    let o = ota(&["device", "run", "--flash", &flash, "--config", &cfg]);
    assert_eq!(o.status.code(), Some(EXIT_ERROR), "{}", text(&o));
    assert!(text(&o).contains("ELF file"), "{}", text(&o));
    assert!(text(&o).contains("elf2image"), "{}", text(&o));
    let after = std::fs::read(&flash).unwrap();
    assert!(before[0x110000..0x210000] == after[0x110000..0x210000]);
}

// ---------------------------------------------------------------------------------------------
// device run --json / --quiet

/// Every stdout line of a `--json` run, parsed; panics on a line that is not a JSON event.
fn events(o: &std::process::Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{}", text(o)));
            assert!(v["event"].is_string(), "no event key: {l}");
            v
        })
        .collect()
}

#[test]
fn device_run_json_prints_one_event_per_line() {
    let d = Dir::new();
    let flash = d.device(&[]);
    d.image("sdcard/v2.bin", "v2.0.0");
    let cfg = d.config("firmware_upgrade_uri = \"file://sdcard/v2.bin\"\n");
    let o = ota(&[
        "device", "run", "--flash", &flash, "--config", &cfg, "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ev = events(&o);
    let kinds: Vec<&str> = ev
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .filter(|k| *k != "log")
        .collect();
    let mut dedup = kinds.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        [
            "boot",
            "item_start",
            "progress",
            "item_finish",
            "restart",
            "boot",
            "result"
        ],
        "{kinds:?}"
    );
    let boots: Vec<&Value> = ev.iter().filter(|e| e["event"] == "boot").collect();
    assert_eq!(boots[0]["slot"], "ota_0");
    assert_eq!(boots[1]["slot"], "ota_1");
    assert_eq!(boots[1]["version"], "v2.0.0");
    let start = ev.iter().find(|e| e["event"] == "item_start").unwrap();
    assert_eq!(start["id"], 0);
    assert_eq!(start["type"], "app");
    assert_eq!(start["uri"], "file://sdcard/v2.bin");
    let last_progress = ev.iter().rfind(|e| e["event"] == "progress").unwrap();
    assert_eq!(last_progress["bytes"], last_progress["total"]);
    let fin = ev.iter().find(|e| e["event"] == "item_finish").unwrap();
    assert_eq!(fin["outcome"], "success");
    let result = ev.last().unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["status"], "ok");
    assert_eq!(result["exit"], 0);
    assert_eq!(result["running"], "ota_1");
    // The log lines are events too: nothing else reaches stdout.
    assert!(ev
        .iter()
        .any(|e| e["event"] == "log" && e["tag"] == "boot" && e["level"] == "I"));

    // A failed item: the result says so, with the exit status the process has.
    let cfg = d.config("firmware_upgrade_uri = \"file://sdcard/none.bin\"\n");
    let o = ota(&[
        "device", "run", "--flash", &flash, "--config", &cfg, "--json",
    ]);
    assert_eq!(o.status.code(), Some(EXIT_ERROR), "{}", text(&o));
    let ev = events(&o);
    let fin = ev.iter().find(|e| e["event"] == "item_finish").unwrap();
    assert_eq!(fin["outcome"], "failed");
    assert_eq!(fin["reason"], "0x90007 FILE_NOT_FOUND");
    let result = ev.last().unwrap();
    assert_eq!(
        (result["status"].clone(), result["exit"].clone()),
        ("failed".into(), 1.into())
    );
}

#[test]
fn device_run_json_reports_a_power_cut_as_its_last_event() {
    let d = Dir::new();
    let flash = d.device(&[]);
    d.image("sdcard/v2.bin", "v2.0.0");
    let cfg = d.config("firmware_upgrade_uri = \"file://sdcard/v2.bin\"\n");
    let o = ota(&[
        "device",
        "run",
        "--flash",
        &flash,
        "--config",
        &cfg,
        "--json",
        "--power-cut-after-bytes",
        "9000",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let ev = events(&o);
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "power_cut", "{last}");
    assert_eq!(last["bytes"], 9000);
}

#[test]
fn device_run_quiet_prints_only_errors() {
    let d = Dir::new();
    let flash = d.device(&[]);
    d.image("sdcard/v2.bin", "v2.0.0");
    let cfg = d.config("firmware_upgrade_uri = \"file://sdcard/v2.bin\"\n");
    let o = ota(&[
        "device", "run", "--flash", &flash, "--config", &cfg, "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o), "", "a quiet run that succeeds prints nothing");
    let o = ota(&["device", "boot", "--flash", &flash, "--json"]);
    let b: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["version"], "v2.0.0", "the quiet run did update");

    let cfg = d.config("firmware_upgrade_uri = \"file://sdcard/none.bin\"\n");
    let o = ota(&["device", "run", "--flash", &flash, "--config", &cfg, "-q"]);
    assert_eq!(o.status.code(), Some(EXIT_ERROR), "{}", text(&o));
    assert_eq!(stdout(&o), "");
    let err = stderr(&o);
    assert!(
        err.lines()
            .all(|l| l.starts_with("E (") || l.starts_with("error: ")),
        "{err}"
    );
    assert!(err.contains("0x90007 FILE_NOT_FOUND"), "{err}");
    assert!(err.contains("error: 1 of 1 upgrade items failed"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Exit statuses

#[test]
fn nothing_boots_exits_with_the_same_status_in_text_and_json_mode() {
    let d = Dir::new();
    let flash = d.p("empty.bin");
    ok(&["device", "create", "--flash", &flash]);
    let t = ota(&["device", "boot", "--flash", &flash]);
    let j = ota(&["device", "boot", "--flash", &flash, "--json"]);
    assert_eq!(t.status.code(), Some(EXIT_UNBOOTABLE), "{}", text(&t));
    assert_eq!(j.status.code(), Some(EXIT_UNBOOTABLE), "{}", text(&j));
    assert!(
        stderr(&t).contains("No bootable app partitions"),
        "{}",
        text(&t)
    );
    let v: Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["slot"], Value::Null);
    assert!(
        v["error"].as_str().unwrap().contains("No bootable app"),
        "{v}"
    );

    // device run boots first: the same status, in both modes.
    let cfg = d.config("firmware_upgrade_uri = \"file://sdcard/none.bin\"\n");
    let r = ota(&["device", "run", "--flash", &flash, "--config", &cfg]);
    assert_eq!(r.status.code(), Some(EXIT_UNBOOTABLE), "{}", text(&r));
    let r = ota(&[
        "device", "run", "--flash", &flash, "--config", &cfg, "--json",
    ]);
    assert_eq!(r.status.code(), Some(EXIT_UNBOOTABLE), "{}", text(&r));
    let result = events(&r).pop().unwrap();
    assert_eq!(result["status"], "unbootable");
    assert_eq!(result["exit"], EXIT_UNBOOTABLE);

    // A usage error is 2, and differs from "nothing boots".
    let u = ota(&["device", "boot", "--flash", &flash, "--no-such-option"]);
    assert_eq!(u.status.code(), Some(EXIT_USAGE), "{}", text(&u));
}

// ---------------------------------------------------------------------------------------------
// The demo

#[test]
fn demo_fails_and_says_so_when_an_item_fails() {
    let d = Dir::new();
    let junk = d.path("junk.bin");
    std::fs::write(&junk, vec![0x5Au8; 3000]).unwrap();
    let o = ota(&["demo", "--dir", &d.p("demo"), "--tone", s(&junk)]);
    assert_eq!(o.status.code(), Some(EXIT_ERROR), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("error: demo failed: 1 of 2 upgrade items"),
        "{err}"
    );
    assert!(
        err.contains("item 0 (file://sdcard/flash_tone.bin) failed"),
        "{err}"
    );
    assert!(!stdout(&o).contains("the device now boots"), "{}", text(&o));
}

#[test]
fn demo_log_prints_the_apps_own_lines_after_the_bootloader_started_it() {
    let d = Dir::new();
    let log = ok(&["demo", "--dir", &d.p("demo")]);
    let order = [
        "I (",
        "boot: Partition Table:",
        "boot: Loaded app from partition at offset 0x10000",
        "app_init: App version:      v2.2-252-g62edbd26-dirty",
        "HTTPS_OTA_EXAMPLE: [1.0] Initialize peripherals management",
        "HTTPS_OTA_EXAMPLE: [2.1] Set upgrade list",
        "HTTPS_OTA_EXAMPLE: [2.2] Start OTA service",
        "List id: 1, OTA success",
        "system: Restarting...",
        "boot: Loaded app from partition at offset 0x110000",
    ];
    let first = log.find(order[0]).unwrap();
    assert!(
        log[first..].starts_with("I (") && log[first..].contains(" boot: "),
        "{log}"
    );
    assert!(
        log.find("HTTPS_OTA_EXAMPLE").unwrap() > log.find("boot: Loaded app").unwrap(),
        "the example's lines come before the bootloader's:\n{log}"
    );
    let mut at = 0;
    for line in order {
        match log[at..].find(line) {
            Some(i) => at += i + line.len(),
            None => panic!("demo log lacks {:?} (in order):\n{}", line, log),
        }
    }
}

#[test]
fn demo_leaves_a_config_that_device_run_replays() {
    let d = Dir::new();
    let dir = d.path("demo");
    ok(&["demo", "--dir", s(&dir)]);
    let cfg = dir.join("ota.toml");
    let toml = std::fs::read_to_string(&cfg).expect("the demo leaves ota.toml in its folder");
    let host = toml
        .lines()
        .find_map(|l| l.strip_prefix("firmware_upgrade_uri = \"http://"))
        .and_then(|r| r.split('/').next())
        .expect("firmware_upgrade_uri in ota.toml")
        .to_string();
    assert!(toml.contains("data_upgrade_uri = \"file://sdcard/flash_tone.bin\""));
    assert!(
        toml.contains(&format!("ota serve {}", s(&dir.join("www")))),
        "{toml}"
    );
    // The replay the file describes: serve www/ on the same address, run the list.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(["serve", s(&dir.join("www")), "--bind", &host, "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    // Kept open while the server runs: it writes more lines (the catalogue's URL).
    let mut out = BufReader::new(serve.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    assert!(first.contains("Serving HTTP"), "{first}");
    let flash = dir.join("flash.bin");
    let o = ota(&["device", "run", "--flash", s(&flash), "--config", s(&cfg)]);
    let _ = serve.kill();
    let _ = serve.wait();
    drop(out);
    assert!(o.status.success(), "{}", text(&o));
    let log = text(&o);
    assert!(log.contains("List id: 1, OTA success"), "{log}");
    // The device ran play_mp3_control from ota_1; the replay installed it into ota_0.
    assert!(
        log.contains("Loaded app from partition at offset 0x10000"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Rollback state never silently ignored

/// A device whose ota_1 also holds a valid app (so otadata can switch to it).
fn two_app_device(d: &Dir, create: &[&str]) -> String {
    let flash = d.device(create);
    let v2 = d.image("v2.bin", "v2.0.0");
    ok(&["partition", "write", "ota_1", "--flash", &flash, &v2]);
    flash
}

fn switch_state(args: &[&str]) -> Value {
    let mut a = vec!["otadata", "switch", "ota_1", "--json"];
    a.extend_from_slice(args);
    let out = ok(&a);
    let v: Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    v["state"].clone()
}

#[test]
fn otadata_switch_writes_the_state_of_the_devices_rollback_setting() {
    let d = Dir::new();
    let flash = two_app_device(&d, &["--rollback"]);
    assert_eq!(switch_state(&["--flash", &flash]), "new");
    assert_eq!(
        switch_state(&["--flash", &flash, "--no-rollback"]),
        "undefined"
    );
    let text = ok(&["otadata", "switch", "ota_1", "--flash", &flash]);
    assert!(text.contains("state new (rollback = true in "), "{text}");

    let d = Dir::new();
    let flash = two_app_device(&d, &[]);
    assert_eq!(switch_state(&["--flash", &flash]), "undefined");
    assert_eq!(switch_state(&["--flash", &flash, "--rollback"]), "new");
    // A dump without a settings file: ESP-IDF's default, no rollback.
    std::fs::remove_file(format!("{flash}.device.toml")).unwrap();
    assert_eq!(switch_state(&["--flash", &flash]), "undefined");
}

#[test]
fn device_info_and_boot_warn_about_states_a_bootloader_without_rollback_ignores() {
    let d = Dir::new();
    let flash = two_app_device(&d, &[]);
    ok(&[
        "otadata",
        "switch",
        "ota_1",
        "--flash",
        &flash,
        "--rollback",
    ]);
    for args in [
        vec!["device", "info", "--flash", &flash],
        vec!["device", "info", "--flash", &flash, "--json"],
        vec!["device", "boot", "--flash", &flash],
    ] {
        let o = ota(&args);
        assert!(o.status.success(), "{}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains("warning: otadata[") && err.contains("is NEW"),
            "{args:?}: {err}"
        );
        assert!(err.contains("rollback = false"), "{args:?}: {err}");
    }
    // Without a settings file the warning names the missing file.
    std::fs::remove_file(format!("{flash}.device.toml")).unwrap();
    let o = ota(&["device", "info", "--flash", &flash, "--json"]);
    assert!(stderr(&o).contains("there is no "), "{}", text(&o));
    assert!(
        serde_json::from_slice::<Value>(&o.stdout).is_ok(),
        "stdout stays JSON"
    );

    // A device whose bootloader has rollback: the same states are expected, no warning.
    let d = Dir::new();
    let flash = two_app_device(&d, &["--rollback"]);
    ok(&["otadata", "switch", "ota_1", "--flash", &flash]);
    let o = ota(&["device", "boot", "--flash", &flash]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!stderr(&o).contains("warning"), "{}", text(&o));
    assert!(stdout(&o).contains("NEW -> PENDING_VERIFY"), "{}", text(&o));
}
