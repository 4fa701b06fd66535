//! Data items read their source twice when they can (a verifying pass, then the writing pass),
//! and the writing pass must deliver the file the verifying pass checked: a file that changes
//! in between (a new ETag, or other bytes from the SD card) is not written over a valid
//! partition, and a download that breaks off in the verifying pass leaves raw data intact.

mod support;

use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ota_core::tone::{self, ToneEntry};
use ota_emu::device::layout;
use ota_service::items::{DataFormat, DataItem};
use ota_service::source::{SdCardFs, SourceError, SourceOptions};
use ota_service::{run_list, Device, Env, Outcome};
use ota_testsrv::{Faults, FlakyServer};
use support::*;

/// flash_tone in the example table.
const TONE: u32 = 0x210000;
const TONE_SIZE: usize = 0x100000;

fn bin(version: &str, seed: u8) -> Vec<u8> {
    let a: Vec<u8> = (0..9000u32).map(|i| (i as u8) ^ seed).collect();
    let b = vec![seed; 7001];
    let mut out = Vec::new();
    tone::pack(
        &[
            ToneEntry {
                name: "a.mp3",
                data: &a,
            },
            ToneEntry {
                name: "b.wav",
                data: &b,
            },
        ],
        1,
        version,
        "12:00:00",
        "2026-01-01",
        &mut |c: &[u8]| out.extend_from_slice(c),
    )
    .unwrap();
    out
}

fn tone_bytes(dev: &Dev) -> Vec<u8> {
    dev.flash.contents()[TONE as usize..TONE as usize + TONE_SIZE].to_vec()
}

/// A device whose flash_tone holds `initial`.
fn device_with(initial: &[u8]) -> Dev {
    let mut dev = device(EXAMPLE_CSV);
    layout::write_raw(&mut dev.flash, TONE, initial).unwrap();
    dev
}

fn outcome(report: &ota_service::RunReport) -> Outcome {
    report.results[0].1.clone()
}

fn failed_with(o: &Outcome, needle: &str) -> String {
    match o {
        Outcome::Failed { message, .. } => {
            assert!(message.contains(needle), "{message}");
            message.clone()
        }
        other => panic!("expected a failure mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn tone_item_does_not_write_a_file_that_changed_between_verify_and_write_pass() {
    let old = bin("v1.0.0", 1);
    let new = bin("v1.2.0", 2);
    let newer = bin("v1.3.0", 3);
    // The second request (the writing pass) gets another file, with another ETag (this
    // server ignores If-Match, like a cache would).
    let server = FlakyServer::start(
        new.clone(),
        Faults {
            change: Some((1, newer)),
            ..Faults::default()
        },
    )
    .unwrap();
    let mut dev = device_with(&old);
    let before = tone_bytes(&dev);
    let item = DataItem::new(server.url("tone.bin"), "flash_tone", DataFormat::Tone);
    let (report, _) = run_items(&mut dev, vec![Box::new(item)], Duration::from_secs(5));
    let msg = failed_with(&outcome(&report), "changed between the verifying pass");
    assert!(msg.contains("partition flash_tone is unchanged"), "{msg}");
    assert!(tone_bytes(&dev) == before, "flash_tone was written");
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());
    // Unchanged, the same server is read twice and the bin written.
    let server = FlakyServer::start(new.clone(), Faults::default()).unwrap();
    let item = DataItem::new(server.url("tone.bin"), "flash_tone", DataFormat::Tone);
    let (report, log) = run_items(&mut dev, vec![Box::new(item)], Duration::from_secs(5));
    assert!(outcome(&report).is_success(), "{:?}", log.lines);
    assert!(tone_bytes(&dev)[..new.len()] == new[..]);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn raw_item_keeps_old_data_when_the_download_breaks_off() {
    let old = vec![0xA5u8; 50_000];
    let new: Vec<u8> = (0..40_000u32).map(|i| (i * 31) as u8).collect();
    let server = FlakyServer::start(
        new.clone(),
        Faults {
            drop_at: vec![20_000],
            ..Faults::default()
        },
    )
    .unwrap();
    let mut dev = device_with(&old);
    let before = tone_bytes(&dev);
    // No retries left: the break ends the item (with retries it reconnects: resume_items.rs).
    let mut item = DataItem::new(server.url("blob.bin"), "flash_tone", DataFormat::Raw);
    item.retry.retries = 0;
    let (report, _) = run_items(&mut dev, vec![Box::new(item)], Duration::from_secs(5));
    let msg = failed_with(&outcome(&report), "verifying pass");
    assert!(msg.contains("partition flash_tone is unchanged"), "{msg}");
    assert!(tone_bytes(&dev) == before, "the old raw data was touched");
    // The next run (the drop fired once) installs it.
    let item = DataItem::new(server.url("blob.bin"), "flash_tone", DataFormat::Raw);
    let (report, log) = run_items(&mut dev, vec![Box::new(item)], Duration::from_secs(5));
    assert!(outcome(&report).is_success(), "{:?}", log.lines);
    let after = tone_bytes(&dev);
    assert!(after[..new.len()] == new[..]);
    assert!(after[new.len()..].iter().all(|&b| b == 0xFF));
}

/// An SD card whose file is `first` on the first open and `later` afterwards.
struct Changing {
    first: Vec<u8>,
    later: Vec<u8>,
    opens: AtomicUsize,
}

impl SdCardFs for Changing {
    fn open(&self, _uri: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        let b = if self.opens.fetch_add(1, Ordering::SeqCst) == 0 {
            self.first.clone()
        } else {
            self.later.clone()
        };
        let n = b.len() as u64;
        Ok((Box::new(Cursor::new(b)), n))
    }
}

fn run_sd(dev: &mut Dev, sd: &Changing) -> Outcome {
    let running = *dev.table.ota(0).unwrap();
    let mut items: Vec<Box<dyn ota_service::UpgradeItem<ota_emu::EmuFlash>>> = vec![Box::new(
        DataItem::new("file://sdcard/tone.bin", "flash_tone", DataFormat::Tone),
    )];
    let mut device = Device {
        flash: &mut dev.flash,
        table: &dev.table,
        chip: ota_core::Chip::Esp32,
        running: Some(running),
        rollback: false,
        anti_rollback: None,
        table_offset: ota_core::partition::TABLE_OFFSET,
        flash_size: None,
        signatures: Default::default(),
    };
    let mut events = |_| {};
    let mut env = Env {
        sd: Some(sd),
        source: SourceOptions::default(),
        events: &mut events,
    };
    run_list(&mut items, &mut device, &mut env).results[0]
        .1
        .clone()
}

#[test]
fn tone_item_writing_pass_stops_at_the_first_block_that_differs_from_the_verified_file() {
    let old = bin("v1.0.0", 1);
    let new = bin("v1.2.0", 2);
    // Same length, different bytes in the first block: caught before the first erase.
    let mut early = new.clone();
    early[100] ^= 1;
    let mut dev = device_with(&old);
    let before = tone_bytes(&dev);
    let sd = Changing {
        first: new.clone(),
        later: early,
        opens: AtomicUsize::new(0),
    };
    let msg = failed_with(&run_sd(&mut dev, &sd), "differs from the verifying pass");
    assert!(msg.contains("nothing was written"), "{msg}");
    assert!(tone_bytes(&dev) == before);
    // Different in the third block: the blocks before it were written, the header never is,
    // so the partition reads invalid (never a mixed bin that reads valid) and the next run
    // rewrites it.
    let mut late = new.clone();
    late[9000] ^= 1;
    let sd = Changing {
        first: new.clone(),
        later: late,
        opens: AtomicUsize::new(0),
    };
    let msg = failed_with(&run_sd(&mut dev, &sd), "bytes 8192..12288");
    assert!(msg.contains("reads as invalid"), "{msg}");
    let part = *dev.table.find_data("flash_tone").unwrap();
    assert!(tone::tone_partition_init(&mut dev.flash, &part).is_err());
    let sd = Changing {
        first: new.clone(),
        later: new.clone(),
        opens: AtomicUsize::new(0),
    };
    assert!(run_sd(&mut dev, &sd).is_success());
    assert!(tone_bytes(&dev)[..new.len()] == new[..]);
}

/// A loopback server for two requests: the first gets `body` with a strong ETag, the second
/// 412 (its file changed). Returns the URL and the request heads it saw.
fn etag_then_412(body: Vec<u8>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tone.bin", listener.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        let mut heads = Vec::new();
        for i in 0..2 {
            let Ok((mut c, _)) = listener.accept() else {
                break;
            };
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            heads.push(String::from_utf8_lossy(&req).to_string());
            let _ = if i == 0 {
                c.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"sha-1\"\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                )
                .and_then(|_| c.write_all(&body))
            } else {
                c.write_all(
                    b"HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
            };
        }
        heads
    });
    (url, t)
}

#[test]
fn tone_item_writing_pass_sends_if_match_and_a_412_leaves_the_partition_untouched() {
    let old = bin("v1.0.0", 1);
    let new = bin("v1.2.0", 2);
    let (url, server) = etag_then_412(new);
    let mut dev = device_with(&old);
    let before = tone_bytes(&dev);
    let item = DataItem::new(url, "flash_tone", DataFormat::Tone);
    let (report, _) = run_items(&mut dev, vec![Box::new(item)], Duration::from_secs(5));
    let msg = failed_with(&outcome(&report), "412");
    assert!(msg.contains("partition flash_tone is unchanged"), "{msg}");
    assert!(tone_bytes(&dev) == before);
    let heads = server.join().unwrap();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads[1]
            .to_ascii_lowercase()
            .contains("if-match: \"sha-1\""),
        "{}",
        heads[1]
    );
}

#[test]
fn tone_item_skips_a_bin_that_is_not_newer_after_reading_its_header_only() {
    let current = bin("v1.2.0", 1);
    let older = bin("v1.0.0", 2);
    let server = FlakyServer::start(older, Faults::default()).unwrap();
    let mut dev = device_with(&current);
    let before = tone_bytes(&dev);
    let item = DataItem::new(server.url("tone.bin"), "flash_tone", DataFormat::Tone);
    let (report, log) = run_items(&mut dev, vec![Box::new(item)], Duration::from_secs(5));
    assert!(
        matches!(outcome(&report), Outcome::Skipped { .. }),
        "{:?}",
        log.lines
    );
    assert!(!log.has("verified http"), "{:?}", log.lines);
    assert_eq!(server.requests().len(), 1);
    assert!(tone_bytes(&dev) == before);
}
