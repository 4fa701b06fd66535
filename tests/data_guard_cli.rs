//! A bad file never replaces good data (issue 8, item 1), through the `ota` binary: a file that
//! is not a tone bin is never written into a `format = "tone"` partition, whatever it holds; a
//! corrupt tone bin (format 0 or 1) never replaces a valid one, from the SD card or from
//! `ota serve` (strong ETag: verified before the first erase); a tone bin that cannot be read
//! twice is refused over a valid partition with a pointer to `staging`; an empty file never
//! replaces raw data. After each refusal `ota device run` exits non-zero and the partition is
//! byte for byte what it was.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The ESP-ADF example's table plus a spare partition to stage tone bins in and a raw blob.
const CSV: &str = "\
nvs,        data, nvs,  ,  0x4000,
otadata,    data, ota,  ,  0x2000,
phy_init,   data, phy,  ,  0x1000,
ota_0,      app,  ota_0, , 1M,
ota_1,      app,  ota_1, , 1M,
flash_tone, data, 0xff, ,  1M,
tone_stage, data, 0xfe, ,  0x40000,
blob,       data, 0xfd, ,  0x10000,
";
/// flash_tone in that table (after ota_1 at 0x110000 + 1 MB).
const FLASH_TONE: std::ops::Range<usize> = 0x210000..0x310000;
/// blob: after tone_stage (0x310000 + 0x40000).
const BLOB: std::ops::Range<usize> = 0x350000..0x360000;

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    /// A device whose flash_tone holds `initial` (None: erased) and blob holds 0x5A bytes.
    fn new(initial: Option<&[u8]>) -> Fx {
        let f = Fx {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(f.path("parts.csv"), CSV).unwrap();
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
            "60K",
            "-o",
            f.p("run.bin"),
        ]);
        std::fs::write(f.path("blob.bin"), vec![0x5Au8; 9000]).unwrap();
        let blob = format!("blob={}", f.p("blob.bin"));
        let mut args = vec![
            "device",
            "create",
            "--flash",
            f.p("flash.bin"),
            "--partitions",
            f.p("parts.csv"),
            "--app",
            f.p("run.bin"),
            "--data",
            &blob,
        ];
        let tone_arg;
        if let Some(bin) = initial {
            std::fs::write(f.path("initial_tone.bin"), bin).unwrap();
            tone_arg = format!("flash_tone={}", f.p("initial_tone.bin"));
            args.extend(["--data", &tone_arg]);
        }
        ok(&args);
        std::fs::create_dir_all(f.path("sdcard")).unwrap();
        // First power-on: the bootloader records ota_0 in otadata (set_actual_ota_seq), so
        // later runs change nothing outside what they update.
        ok(&["device", "boot", "--flash", f.p("flash.bin")]);
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> &str {
        let s = self.path(name).to_str().unwrap().to_string();
        Box::leak(s.into_boxed_str())
    }

    fn flash(&self) -> Vec<u8> {
        std::fs::read(self.path("flash.bin")).unwrap()
    }

    fn tone(&self) -> Vec<u8> {
        self.flash()[FLASH_TONE].to_vec()
    }

    fn run(&self, config: &str) -> std::process::Output {
        std::fs::write(self.path("ota.toml"), config).unwrap();
        ota(&[
            "device",
            "run",
            "--flash",
            self.p("flash.bin"),
            "--config",
            self.p("ota.toml"),
            "--timeout-ms",
            "3000",
        ])
    }

    /// Run `config`: it must fail (exit 1) with `expect` in its output, and leave the flash
    /// exactly as it was. Twice: a refused file is refused again, never written later.
    #[track_caller]
    fn refused_unchanged(&self, config: &str, expect: &str, case: &str) -> String {
        let before = self.flash();
        let mut log = String::new();
        for _ in 0..2 {
            let out = self.run(config);
            log = text(&out);
            assert_eq!(out.status.code(), Some(1), "{case}: must fail:\n{log}");
            assert!(
                log.contains(expect),
                "{case}: the output should say {expect:?}:\n{log}"
            );
            assert!(
                self.flash() == before,
                "{case}: the flash changed (flash_tone {}):\n{log}",
                if self.flash()[FLASH_TONE] == before[FLASH_TONE] {
                    "unchanged"
                } else {
                    "CHANGED"
                }
            );
        }
        log
    }

    /// A tone bin made by `ota tone pack` from three synthetic mp3 files.
    fn bin(&self, format: u32, version: &str) -> Vec<u8> {
        let dir = self.path(&format!("sounds-{format}-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, n) in ["boot", "ok", "wifi"].iter().enumerate() {
            let data: Vec<u8> = (0..3001 + i * 1000)
                .map(|k| (k * 7 + i + version.len()) as u8)
                .collect();
            std::fs::write(dir.join(format!("{n}.mp3")), data).unwrap();
        }
        let out = self.path(&format!("tone-{format}-{version}.bin"));
        ok(&[
            "tone",
            "pack",
            s(&dir),
            "-o",
            s(&out),
            "--format",
            &format.to_string(),
            "--version",
            version,
            "--time",
            "12:00:00",
            "--date",
            "2026-01-01",
        ]);
        std::fs::read(out).unwrap()
    }

    fn sd(&self, bytes: &[u8]) {
        std::fs::write(self.path("sdcard/in.bin"), bytes).unwrap();
    }
}

fn tone_cfg(uri: &str, extra: &str) -> String {
    format!(
        "[[upgrade]]\ntype = \"data\"\nuri = \"{uri}\"\nlabel = \"flash_tone\"\nformat = \"tone\"\n{extra}"
    )
}

const SD_URI: &str = "file://sdcard/in.bin";

/// Offsets in a tone bin: the table starts at 8 (format 0) or 264 (format 1); entry i's
/// song_len is at +8.
fn table(format: u32) -> usize {
    if format == 0 {
        8
    } else {
        264
    }
}

/// The corruptions of the issue for a `format` bin of three files.
fn corruptions(good: &[u8], format: u32) -> Vec<(&'static str, Vec<u8>)> {
    let t = table(format);
    let mut v = Vec::new();
    let mut m = good.to_vec();
    m.truncate(good.len() - 100);
    v.push(("truncated", m));
    let mut m = good.to_vec();
    m.truncate(t + 64 + 10);
    v.push(("truncated inside the file table", m));
    let mut m = good.to_vec();
    let last_len = t + 2 * 64 + 8;
    let l = u32::from_le_bytes(m[last_len..last_len + 4].try_into().unwrap());
    m[last_len..last_len + 4].copy_from_slice(&(l + 400).to_le_bytes());
    v.push((
        "last file announced 400 bytes longer than the file holds",
        m,
    ));
    let mut m = good.to_vec();
    m[last_len..last_len + 4].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
    v.push(("file table does not fit the file", m));
    let mut m = good.to_vec();
    m[2] = 4; // total_num 4, only 3 entries
    v.push(("bad count", m));
    let mut m = good.to_vec();
    m[4] = 2;
    v.push(("bad format field", m));
    let mut m = good.to_vec();
    m.extend_from_slice(b"garbage after the bin");
    v.push(("bytes after the end the table announces", m));
    if format == 1 {
        let mut m = good.to_vec();
        m[good.len() / 2] ^= 0x01;
        v.push(("bad CRC-32", m));
    } else {
        let mut m = good.to_vec();
        // File 0 is 3001 bytes: 3 padding bytes must be 0xFF.
        let pad = t + 3 * 64 + 3001;
        m[pad] = 0;
        v.push(("padding byte not 0xff", m));
    }
    v
}

#[test]
fn tone_item_never_writes_a_non_tone_file_into_an_erased_or_damaged_partition() {
    let probe = Fx::new(None);
    let valid = probe.bin(1, "v1.0.0");
    let mut damaged = valid.clone();
    damaged[2000] ^= 0x10; // ADF's reader still accepts it; the CRC does not
    let app = std::fs::read(probe.path("run.bin")).unwrap();
    let mut tagged_random: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    tagged_random[..8].copy_from_slice(&[0x53, 0x20, 3, 0, 0, 0, 0, 0]);
    for (state, initial) in [("erased", None), ("damaged", Some(&damaged[..]))] {
        let f = Fx::new(initial);
        for (what, file) in [
            ("random bytes with a tone tag", &tagged_random),
            ("an app image", &app),
        ] {
            f.sd(file);
            let case = format!("{what} over the {state} partition");
            f.refused_unchanged(&tone_cfg(SD_URI, ""), "not a valid tone bin", &case);
        }
    }
}

#[test]
fn tone_item_refuses_corrupt_bin_over_valid_partition() {
    for format in [1u32, 0] {
        let probe = Fx::new(None);
        let old = probe.bin(format, "v1.0.0");
        let new = probe.bin(format, "v1.2.0");
        let f = Fx::new(Some(&old));
        for (what, bad) in corruptions(&new, format) {
            f.sd(&bad);
            let case = format!("format {format}: {what}");
            let log = f.refused_unchanged(&tone_cfg(SD_URI, ""), "not a valid tone bin", &case);
            assert!(
                log.contains("partition flash_tone is unchanged"),
                "{case}: {log}"
            );
        }
        // The good newer bin still goes in.
        f.sd(&new);
        let out = f.run(&tone_cfg(SD_URI, ""));
        assert!(out.status.success(), "{}", text(&out));
        assert!(f.tone()[..new.len()] == new[..]);
    }
}

/// `ota serve DIR` on an ephemeral loopback port; killed by its pid when dropped.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    fn start(dir: &std::path::Path) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ota"))
            .args([
                "serve",
                s(dir),
                "--bind",
                "127.0.0.1:0",
                "--rescan-ms",
                "100",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ota serve");
        let out = BufReader::new(child.stdout.take().unwrap());
        // Keep reading stdout (one access-log line per request) for as long as it runs.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut base = None;
        while base.is_none() && Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            base = line
                .strip_prefix("Serving")
                .and_then(|l| l.split(" (").nth(1))
                .and_then(|r| r.split(')').next())
                .map(|b| b.trim_end_matches('/').to_string());
        }
        Served {
            child,
            base: base.expect("no banner from ota serve"),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tone_item_refuses_corrupt_bin_served_with_strong_etag_before_erase() {
    let probe = Fx::new(None);
    let old = probe.bin(1, "v1.0.0");
    let new = probe.bin(1, "v1.2.0");
    let www = probe.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let mut bad_crc = new.clone();
    bad_crc[new.len() - 500] ^= 0x80;
    std::fs::write(www.join("bad_crc.bin"), &bad_crc).unwrap();
    let mut cut = new.clone();
    cut.truncate(new.len() - 7);
    std::fs::write(www.join("cut.bin"), &cut).unwrap();
    std::fs::write(www.join("good.bin"), &new).unwrap();
    let server = Served::start(&www);
    for initial in [Some(&old[..]), None] {
        let f = Fx::new(initial);
        let state = if initial.is_some() { "valid" } else { "erased" };
        let log = f.refused_unchanged(
            &tone_cfg(&format!("{}/bad_crc.bin", server.base), ""),
            "CRC mismatch",
            &format!("bad CRC over the {state} partition"),
        );
        assert!(log.contains("checked before anything was erased"), "{log}");
        f.refused_unchanged(
            &tone_cfg(&format!("{}/cut.bin", server.base), ""),
            "not a valid tone bin",
            &format!("truncated over the {state} partition"),
        );
        // The good one is verified, then written in a second pass.
        let out = f.run(&tone_cfg(&format!("{}/good.bin", server.base), ""));
        let log = text(&out);
        assert!(out.status.success(), "{log}");
        assert!(log.contains("verified http://"), "{log}");
        assert!(f.tone()[..new.len()] == new[..]);
    }
}

#[test]
fn tone_item_without_strong_etag_refuses_over_valid_partition_and_names_staging() {
    let probe = Fx::new(None);
    let old = probe.bin(1, "v1.0.0");
    let new = probe.bin(1, "v1.2.0");
    // The test server sends no ETag: the bin can be read only once.
    let server = Server::start(Reply::Body(new.clone()));
    let uri = server.url("tone.bin");
    let f = Fx::new(Some(&old));
    let log = f.refused_unchanged(&tone_cfg(&uri, ""), "staging", "no ETag, valid partition");
    assert!(log.contains("no strong ETag"), "{log}");
    // The way out: stage it.
    let out = f.run(&tone_cfg(&uri, "staging = \"tone_stage\"\n"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(f.tone()[..new.len()] == new[..]);
    // Over an invalid (erased) partition it is written in place, checked as it streams.
    let g = Fx::new(None);
    let out = g.run(&tone_cfg(&uri, ""));
    assert!(out.status.success(), "{}", text(&out));
    assert!(g.tone()[..new.len()] == new[..]);
    // ... and a corrupt one streamed over an erased partition never gets its header.
    let mut bad = new.clone();
    bad[new.len() - 300] ^= 1;
    let bad_server = Server::start(Reply::Body(bad));
    let h = Fx::new(None);
    let out = h.run(&tone_cfg(&bad_server.url("tone.bin"), ""));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("CRC mismatch"), "{log}");
    assert!(
        h.tone()[..8] == [0xFF; 8],
        "the header of a corrupt bin was written"
    );
    let info = ok(
        &["device", "run", "--flash", h.p("flash.bin"), "--config", {
            std::fs::write(h.path("ota2.toml"), tone_cfg(&uri, "")).unwrap();
            h.p("ota2.toml")
        }],
    );
    assert!(info.contains("upgrade successes"), "{info}");
}

#[test]
fn raw_item_never_replaces_data_with_an_empty_or_oversized_file() {
    let f = Fx::new(None);
    let raw =
        |uri: &str| format!("[[upgrade]]\ntype = \"data\"\nuri = \"{uri}\"\nlabel = \"blob\"\n");
    assert!(f.flash()[BLOB][..9000] == [0x5A; 9000][..]);
    f.sd(&[]);
    f.refused_unchanged(&raw(SD_URI), "empty", "empty file");
    f.sd(&vec![1u8; BLOB.len() + 1]);
    f.refused_unchanged(&raw(SD_URI), "blob", "file larger than the partition");
    let server = Server::start(Reply::Body(Vec::new()));
    f.refused_unchanged(&raw(&server.url("empty.bin")), "empty", "empty http body");
    f.sd(&[7u8; 5000]);
    let out = f.run(&raw(SD_URI));
    assert!(out.status.success(), "{}", text(&out));
    assert!(f.flash()[BLOB][..5000] == [7u8; 5000][..]);
    assert!(f.flash()[BLOB][5000..].iter().all(|&b| b == 0xFF));
}
