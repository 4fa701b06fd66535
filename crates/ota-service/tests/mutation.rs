//! Hostile input in the normal test suite: thousands of corrupted app images, partition tables,
//! otadata sectors and tone bins (seeded, bounded) go through the real engines on an emulated
//! device. Each must end without a panic, with a clear error (or, for the few mutations that
//! leave the input valid, be accepted only because the reference parser accepts it too), and
//! with the device unchanged: the running slot and otadata bytes identical, and the bootloader
//! still booting the same app.

mod support;

use std::io::{Cursor, Read};
use std::time::{Duration, Instant};

use ota_core::boot::{self, BootConfig};
use ota_core::image::{build_bootloader, ImageVerifier};
use ota_core::otadata::OtaData;
use ota_core::partition::{PartitionTable, ReadRule, TABLE_MAX_LEN, TABLE_OFFSET};
use ota_core::tone::{self, ToneBin, ToneEntry};
use ota_core::Chip;
use ota_emu::device::layout;
use ota_emu::{Device as EmuDevice, EmuFlash};
use ota_service::items::{AppItem, DataItem};
use ota_service::source::{RetryPolicy, SdCardFs, SourceError, SourceOptions};
use ota_service::{run_list, Device, Env, Outcome, UpgradeItem};
use support::*;

/// Seed of the whole test: change it to explore other mutations (failures print the case).
const SEED: u64 = 0x00DD_BA11_5EED;
const IMAGES: usize = 1500;
const TABLES: usize = 2000;
const OTADATA_CASES: usize = 1000;
const TONES: usize = 1500;

/// xorshift64*: a small deterministic generator (the sequence is part of the test).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random corruption of `b` (never the identity): bit flips, random bytes, an interesting
/// 32-bit value, truncation, a deleted or a duplicated run of bytes. `focus` biases positions
/// towards the first bytes (headers), where the parsers branch most.
fn mutate(rng: &mut Rng, b: &[u8], focus: usize) -> Vec<u8> {
    loop {
        let mut m = b.to_vec();
        let pos = |rng: &mut Rng, len: usize| {
            if rng.below(2) == 0 {
                rng.below(focus.min(len))
            } else {
                rng.below(len)
            }
        };
        match rng.below(6) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let p = pos(rng, m.len());
                    m[p] ^= 1 << rng.below(8);
                }
            }
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let p = pos(rng, m.len());
                    m[p] = rng.next() as u8;
                }
            }
            2 => {
                let p = pos(rng, m.len().saturating_sub(4)).min(m.len().saturating_sub(4));
                let v: u32 = match rng.below(5) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => 0x7FFF_FFFF,
                    3 => b.len() as u32 + 1,
                    _ => 0x1000,
                };
                m[p..p + 4].copy_from_slice(&v.to_le_bytes());
            }
            3 => m.truncate(rng.below(b.len())),
            4 => {
                let p = pos(rng, m.len());
                let n = 1 + rng.below(64);
                m.drain(p..(p + n).min(m.len()));
            }
            _ => {
                let p = pos(rng, m.len());
                let n = 1 + rng.below(64);
                let run: Vec<u8> = m[p..(p + n).min(m.len())].to_vec();
                m.splice(p..p, run);
            }
        }
        if m != b {
            return m;
        }
    }
}

/// An SD card holding one file, `file://sdcard/in.bin`.
struct OneFile(Vec<u8>);

impl SdCardFs for OneFile {
    fn open(&self, _uri: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        Ok((Box::new(Cursor::new(self.0.clone())), self.0.len() as u64))
    }
}

const URI: &str = "file://sdcard/in.bin";

/// Run one item against the device, with `running` as the booted slot (no boot of its own:
/// the caller compares the flash before and after).
fn run_one(
    flash: &mut EmuFlash,
    table: &PartitionTable,
    running: ota_core::partition::Partition,
    item: Box<dyn UpgradeItem<EmuFlash>>,
    file: Vec<u8>,
) -> Outcome {
    let sd = OneFile(file);
    let mut items = vec![item];
    let mut device = Device {
        flash,
        table,
        chip: Chip::Esp32,
        running: Some(running),
        rollback: false,
        anti_rollback: None,
        table_offset: ota_core::partition::TABLE_OFFSET,
        flash_size: None,
        signatures: Default::default(),
    };
    let mut events = |_| {};
    let mut env = Env {
        sd: Some(&sd),
        source: SourceOptions::default(),
        events: &mut events,
    };
    let report = run_list(&mut items, &mut device, &mut env);
    report.results[0].1.clone()
}

fn app_item() -> Box<dyn UpgradeItem<EmuFlash>> {
    let mut it = AppItem::new(URI);
    it.retry = RetryPolicy {
        retries: 0,
        backoff: Duration::ZERO,
    };
    Box::new(it)
}

/// The bytes that must not change, and the app that boots.
fn snapshot(dev: &mut Dev) -> (Vec<u8>, Vec<u8>, String, u32) {
    let (out, v) = boot(dev);
    let c = dev.flash.contents();
    let slot = out.partition;
    (
        c[OTADATA as usize..OTADATA as usize + 0x2000].to_vec(),
        c[slot.offset as usize..(slot.offset + slot.size) as usize].to_vec(),
        v,
        slot.offset,
    )
}

fn assert_unchanged(dev: &mut Dev, before: &(Vec<u8>, Vec<u8>, String, u32), case: &str) {
    let c = dev.flash.contents();
    let (od, slot, version, offset) = before;
    assert!(
        c[OTADATA as usize..OTADATA as usize + 0x2000] == od[..],
        "{case}: otadata changed"
    );
    assert!(
        c[*offset as usize..*offset as usize + slot.len()] == slot[..],
        "{case}: the running slot changed"
    );
    let (out, v) = boot(dev);
    assert_eq!(
        (out.partition.offset, &v),
        (*offset, version),
        "{case}: boots another app"
    );
}

fn failure_message(o: &Outcome, case: &str) -> String {
    match o {
        Outcome::Failed { message, .. } | Outcome::Skipped { message, .. } => {
            assert!(
                message.contains("in.bin") && message.len() > URI.len() + 5,
                "{case}: unclear error: {message}"
            );
            message.clone()
        }
        Outcome::Success => String::new(),
    }
}

#[test]
fn corrupted_app_images_are_refused_and_leave_the_device_unchanged() {
    let start = Instant::now();
    let mut rng = Rng(SEED);
    let good = image("v2.0.0", 40_000);
    let mut dev = device(EXAMPLE_CSV);
    let table = dev.table.clone();
    let before = snapshot(&mut dev);
    let running = *table.ota(0).unwrap();
    let (mut refused, mut valid) = (0, 0);
    for i in 0..IMAGES {
        let m = mutate(&mut rng, &good, 64);
        let case = format!("image #{i} (seed {SEED:#x})");
        // The reference: the streaming verifier on the whole file.
        let mut v = ImageVerifier::new();
        v.set_expected_chip(Some(Chip::Esp32));
        let reference_ok = v.feed(&m).is_ok() && v.finish().is_ok();
        let o = run_one(&mut dev.flash, &table, running, app_item(), m);
        if o.is_success() {
            assert!(reference_ok, "{case}: an invalid image was committed");
            valid += 1;
            // Put the device back as it was for the next case.
            dev = device(EXAMPLE_CSV);
            continue;
        }
        failure_message(&o, &case);
        assert_unchanged(&mut dev, &before, &case);
        refused += 1;
    }
    println!(
        "mutation: {IMAGES} corrupted app images: {refused} refused with a clear error, {valid} still valid (accepted); device unchanged after each refusal ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(refused + valid, IMAGES);
    assert!(refused > IMAGES * 9 / 10);
}

/// A whole device: bootloader, table at 0x8000, v1 in ota_0.
fn full_device() -> (EmuFlash, Vec<u8>) {
    let dev = device(EXAMPLE_CSV);
    let mut flash = dev.flash;
    let mut boot_img = Vec::new();
    build_bootloader(Chip::Esp32, 2, &mut |b: &[u8]| {
        boot_img.extend_from_slice(b)
    })
    .unwrap();
    layout::write_raw(&mut flash, Chip::Esp32.bootloader_offset(), &boot_img).unwrap();
    let mut bin = [0xFFu8; TABLE_MAX_LEN];
    dev.table.to_binary(true, &mut bin).unwrap();
    (flash, bin.to_vec())
}

#[test]
fn corrupted_partition_tables_give_clear_errors_and_change_nothing() {
    let start = Instant::now();
    let mut rng = Rng(SEED ^ 1);
    let (base, table_bin) = full_device();
    let (mut rejected, mut accepted, mut booted) = (0, 0, 0);
    for i in 0..TABLES {
        let case = format!("table #{i} (seed {:#x})", SEED ^ 1);
        // Mutate the 7 entries + MD5 row that are used (the rest is 0xFF padding).
        let m = mutate(&mut rng, &table_bin[..0x120], 0x120);
        for rule in [
            ReadRule::Bootloader { chip_size: 4 << 20 },
            ReadRule::App,
            ReadRule::GenTool,
        ] {
            if let Err(e) = PartitionTable::parse(&m, rule) {
                assert!(!e.to_string().is_empty(), "{case}: empty error");
            }
        }
        let mut flash = base.clone_in_memory();
        let mut sector = vec![0xFFu8; TABLE_MAX_LEN];
        sector[..m.len().min(TABLE_MAX_LEN)].copy_from_slice(&m[..m.len().min(TABLE_MAX_LEN)]);
        layout::write_raw(&mut flash, TABLE_OFFSET, &sector).unwrap();
        let before = flash.contents().to_vec();
        match EmuDevice::open_named(&mut flash, "mutated.flash") {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("mutated.flash"),
                    "{case}: error names no file: {msg}"
                );
                rejected += 1;
            }
            Ok(mut d) => {
                accepted += 1;
                let t = d.table().clone();
                if boot::boot(
                    d.flash_mut(),
                    &t,
                    Chip::Esp32,
                    &BootConfig::default(),
                    &mut |_| {},
                )
                .is_ok()
                {
                    booted += 1;
                }
                continue;
            }
        }
        assert!(
            flash.contents() == &before[..],
            "{case}: reading the table wrote flash"
        );
    }
    println!(
        "mutation: {TABLES} corrupted partition tables: {rejected} rejected by the device with a clear error, {accepted} still readable ({booted} of those boot); nothing written ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
    assert!(rejected > TABLES / 2);
}

#[test]
fn corrupted_otadata_always_boots_a_valid_app_and_failed_updates_leave_it_alone() {
    let start = Instant::now();
    let mut rng = Rng(SEED ^ 2);
    // v1 in ota_0, v2 in ota_1, otadata says ota_1 (seq 2 in sector 1).
    let mut base = device(EXAMPLE_CSV);
    let v2 = image("v2.0.0", 50_000);
    layout::write_raw(&mut base.flash, OTA_1, &v2).unwrap();
    let od_part = *base.table.otadata().unwrap();
    let mut od = OtaData::read(&mut base.flash, &od_part).unwrap();
    od.set_boot(&mut base.flash, &od_part, 1, 2, false).unwrap();
    assert_eq!(boot(&mut base).1, "v2.0.0");
    let sectors = od.to_sectors().concat();
    // Refused only at the end (SHA-256), after it was written to the other slot.
    let mut bad_image = image("v3.0.0", 12_000);
    bad_image[6_000] ^= 0x10;
    let mut versions = [0usize; 2];
    for i in 0..OTADATA_CASES {
        let case = format!("otadata #{i} (seed {:#x})", SEED ^ 2);
        let m = mutate(&mut rng, &sectors, 64);
        let mut s0 = [0xFFu8; 32];
        let mut s1 = [0xFFu8; 32];
        let n0 = m.len().min(32);
        s0[..n0].copy_from_slice(&m[..n0]);
        if m.len() > 32 {
            let n1 = (m.len() - 32).min(32);
            s1[..n1].copy_from_slice(&m[32..32 + n1]);
        }
        let mut dev = Dev {
            flash: base.flash.clone_in_memory(),
            table: base.table.clone(),
        };
        layout::write_raw(&mut dev.flash, OTADATA, &s0).unwrap();
        layout::write_raw(&mut dev.flash, OTADATA + 0x1000, &s1).unwrap();
        // The bootloader always finds a valid app (it may write otadata, as ESP-IDF's does).
        let before = snapshot(&mut dev);
        versions[usize::from(before.2 == "v2.0.0")] += 1;
        // A refused update must not touch otadata, whatever it holds.
        let running = *dev.table.iter().find(|p| p.offset == before.3).unwrap();
        let o = run_one(
            &mut dev.flash,
            &dev.table,
            running,
            app_item(),
            bad_image.clone(),
        );
        assert!(!o.is_success(), "{case}: the corrupted image was committed");
        failure_message(&o, &case);
        assert_unchanged(&mut dev, &before, &case);
    }
    println!(
        "mutation: {OTADATA_CASES} corrupted otadata sectors: every one boots a valid app ({} v1.0.0 from ota_0, {} v2.0.0 from ota_1); a refused update changed nothing ({:.1} s)",
        versions[0],
        versions[1],
        start.elapsed().as_secs_f64()
    );
}

/// The reference verdict on an incoming tone bin: the whole-bin reader (a partition dump's
/// trailing 0xFF allowed, CRC checked), plus what ADF's `tone_partition_init` needs (a format-1
/// bin has files) and the partition's size.
fn tone_reference_ok(m: &[u8], capacity: u32) -> bool {
    match ToneBin::parse_dump(m) {
        Ok(b) => {
            !(b.header().format == tone::TONE_FORMAT_1 && b.header().total_num == 0)
                && b.total_size() <= capacity
        }
        Err(_) => false,
    }
}

#[test]
fn corrupted_tone_bins_never_replace_a_valid_partition_nor_fill_an_erased_one() {
    let start = Instant::now();
    let mut rng = Rng(SEED ^ 3);
    let a = vec![0x11u8; 3000];
    let b = vec![0x22u8; 1777];
    let files = [
        ToneEntry {
            name: "a.mp3",
            data: &a,
        },
        ToneEntry {
            name: "b.wav",
            data: &b,
        },
    ];
    let pack = |version: &str| {
        let mut out = Vec::new();
        tone::pack(
            &files,
            1,
            version,
            "12:00:00",
            "Jan  1 2025",
            &mut |c: &[u8]| out.extend_from_slice(c),
        )
        .unwrap();
        out
    };
    let old = pack("v1.0.0");
    let new = pack("v1.2.0");
    // Two devices: flash_tone holds the valid older bin, or is erased.
    let mut valid_base = device(EXAMPLE_CSV);
    let tone_part = *valid_base.table.find_data("flash_tone").unwrap();
    layout::write_raw(&mut valid_base.flash, tone_part.offset, &old).unwrap();
    let erased_base = device(EXAMPLE_CSV);
    let part_bytes = |dev: &Dev| {
        dev.flash.contents()
            [tone_part.offset as usize..(tone_part.offset + tone_part.size) as usize]
            .to_vec()
    };
    let (mut refused, mut valid, mut replaced, mut filled) = (0, 0, 0, 0);
    for i in 0..TONES {
        let m = mutate(&mut rng, &new, 96);
        let reference_ok = tone_reference_ok(&m, tone_part.size);
        for (base, what) in [(&valid_base, "valid"), (&erased_base, "erased")] {
            let case = format!("tone #{i} over the {what} partition (seed {:#x})", SEED ^ 3);
            let mut dev = Dev {
                flash: base.flash.clone_in_memory(),
                table: base.table.clone(),
            };
            let before = snapshot(&mut dev);
            let tone_before = part_bytes(&dev);
            let running = *dev.table.ota(0).unwrap();
            let item = DataItem::new(URI, "flash_tone", ota_service::items::DataFormat::Tone);
            let o = run_one(
                &mut dev.flash,
                &dev.table,
                running,
                Box::new(item),
                m.clone(),
            );
            assert_unchanged(&mut dev, &before, &case);
            let tone_after = part_bytes(&dev);
            match (&o, reference_ok) {
                (Outcome::Success, true) => {
                    let check = tone::tone_partition_check(&mut dev.flash, &tone_part);
                    assert!(check.is_ok(), "{case}: a valid bin reads back invalid");
                    assert!(tone_after[..m.len()] == m[..], "{case}: not the bin sent");
                    valid += 1;
                }
                _ => {
                    if !reference_ok {
                        assert!(!o.is_success(), "{case}: a corrupt bin was accepted");
                    }
                    failure_message(&o, &case);
                    if tone_after != tone_before {
                        if what == "valid" {
                            replaced += 1;
                        } else {
                            filled += 1;
                        }
                    }
                    refused += 1;
                }
            }
        }
    }
    println!(
        "mutation: {TONES} corrupted tone bins, each over a valid and over an erased flash_tone: {refused} refusals with a clear error, {valid} still valid (written); {replaced} valid partitions replaced by a corrupt bin, {filled} erased partitions written; the running app never changed ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(replaced, 0, "valid partitions replaced by a corrupt bin");
    assert_eq!(filled, 0, "erased partitions written with a corrupt bin");
    assert_eq!(refused + valid, 2 * TONES);
    assert!(refused > TONES, "the mutations must mostly corrupt the bin");
}
