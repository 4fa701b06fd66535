//! One download path for every item: data items (raw, tone, staged) and catalogue items
//! reconnect after a dropped connection and continue with `Range`/`If-Range` at the byte they
//! reached, as app items always did. The tests assert on the typed events (`Event::Resume`,
//! `Event::StartOver`, `Event::StagedCopyResume`), not on log text.

mod support;

use std::time::Duration;

use ota_core::partition::{CsvOptions, PartitionTable, TABLE_MAX_LEN, TABLE_OFFSET};
use ota_core::Chip;
use ota_emu::device::layout;
use ota_emu::{EmuFlash, FaultPlan};
use ota_service::items::manifest::{Catalogue, CatalogueEntry, EntryKind, CATALOGUE_FORMAT};
use ota_service::items::{DataFormat, DataItem, ManifestItem};
use ota_service::source::{RetryPolicy, SourceOptions};
use ota_service::{run_list, Device, Env, Event, Outcome, ResumeFrom, RunReport, UpgradeItem};
use ota_testsrv::{Faults, FlakyServer};
use sha2::{Digest, Sha256};

use support::{boot, device, image, Dev, EXAMPLE_CSV, FLASH_SIZE, OTA_0};

/// Boot, then run `items` (std driver), keeping every event.
fn run_events(
    dev: &mut Dev,
    items: Vec<Box<dyn UpgradeItem<EmuFlash>>>,
) -> (RunReport, Vec<Event>) {
    let booted = ota_core::boot::boot(
        &mut dev.flash,
        &dev.table,
        Chip::Esp32,
        &ota_core::boot::BootConfig::default(),
        &mut |_| {},
    )
    .expect("the device boots");
    let mut items = items;
    let mut events = Vec::new();
    let report = {
        let mut on_event = |ev: Event| events.push(ev);
        let mut device = Device {
            flash: &mut dev.flash,
            table: &dev.table,
            chip: Chip::Esp32,
            running: Some(booted.partition),
            rollback: false,
            anti_rollback: None,
            table_offset: TABLE_OFFSET,
            flash_size: None,
            signatures: Default::default(),
        };
        let mut env = Env {
            sd: None,
            source: SourceOptions {
                timeout: Duration::from_secs(5),
                ..SourceOptions::default()
            },
            events: &mut on_event,
        };
        run_list(&mut items, &mut device, &mut env)
    };
    (report, events)
}

fn lines(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Log { tag, message, .. } => Some(format!("{tag}: {message}")),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_success(report: &RunReport, events: &[Event]) {
    assert_eq!(
        report.results[0].1,
        Outcome::Success,
        "log:\n{}",
        lines(events)
    );
}

/// The `Resume` events of item 0: the bytes each reconnect continued at.
fn resumed_at(events: &[Event], from: ResumeFrom) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Resume { id: 0, at, from: f } if *f == from => Some(*at),
            _ => None,
        })
        .collect()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        backoff: Duration::from_millis(2),
    }
}

fn blob(n: u32, seed: u32) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) ^ seed) as u8).collect()
}

fn partition_bytes(dev: &mut Dev, label: &str, len: usize) -> Vec<u8> {
    let p = *dev.table.find_data(label).expect("partition");
    let mut out = vec![0u8; len];
    embedded_storage::nor_flash::ReadNorFlash::read(&mut dev.flash, p.offset, &mut out).unwrap();
    out
}

#[test]
fn raw_data_item_reconnects_after_a_dropped_connection_in_the_same_run() {
    let new = blob(40_000, 7);
    let s = FlakyServer::start(
        new.clone(),
        Faults {
            drop_at: vec![20_000],
            ..Faults::default()
        },
    )
    .unwrap();
    let mut dev = device(EXAMPLE_CSV);
    let mut item = DataItem::new(s.url("blob.bin"), "flash_tone", DataFormat::Raw);
    item.retry = fast_retry();
    let (report, events) = run_events(&mut dev, vec![Box::new(item)]);
    assert_success(&report, &events);
    // The verifying pass broke at 20 000 and went on from there; then the writing pass.
    assert_eq!(resumed_at(&events, ResumeFrom::Reconnect), vec![20_000]);
    assert_eq!(s.resumed_from(), vec![20_000]);
    let reqs = s.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(reqs[1].if_range.is_some(), "the reconnect carries If-Range");
    assert_eq!(partition_bytes(&mut dev, "flash_tone", new.len()), new);
}

#[test]
fn staged_data_item_reconnects_while_writing_the_staging_partition() {
    // One pass only (staged): the drop comes while the bytes go to the spare partition.
    let csv = "\
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
flash_tone, data, 0xff,  ,        0x80000,
spare,    data, 0xfe,    ,        0x80000,
";
    let new = blob(90_000, 3);
    let s = FlakyServer::start(
        new.clone(),
        Faults {
            drop_at: vec![33_333, 70_000],
            ..Faults::default()
        },
    )
    .unwrap();
    let mut dev = device(csv);
    let mut item = DataItem::new(s.url("blob.bin"), "flash_tone", DataFormat::Raw);
    item.retry = fast_retry();
    item.staging = Some("spare".into());
    let (report, events) = run_events(&mut dev, vec![Box::new(item)]);
    assert_success(&report, &events);
    assert_eq!(
        resumed_at(&events, ResumeFrom::Reconnect),
        vec![33_333, 70_000]
    );
    assert_eq!(s.requests().len(), 3);
    assert_eq!(partition_bytes(&mut dev, "flash_tone", new.len()), new);
}

/// A device whose table has a spare partition for staging the tone partition.
fn staged_device() -> Dev {
    let csv = "\
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
flash_tone, data, 0xff,  ,        0x80000,
spare,    data, 0xfe,    ,        0x80000,
";
    let opts = CsvOptions {
        flash_size: Some(FLASH_SIZE),
        ..CsvOptions::default()
    };
    let table = PartitionTable::from_csv(csv, &opts).unwrap();
    let mut bin = [0xFFu8; TABLE_MAX_LEN];
    table.to_binary(true, &mut bin).unwrap();
    let mut flash = EmuFlash::in_memory(FLASH_SIZE);
    layout::write_raw(&mut flash, TABLE_OFFSET, &bin).unwrap();
    layout::write_raw(&mut flash, OTA_0, &image("v1.0.0", 60_000)).unwrap();
    Dev { flash, table }
}

#[test]
fn interrupted_staged_copy_is_reported_as_a_staged_copy_resume_event() {
    let new = blob(100_000, 9);
    let s = FlakyServer::start(new.clone(), Faults::default()).unwrap();
    let mut dev = staged_device();
    let item = |s: &FlakyServer| {
        let mut item = DataItem::new(s.url("blob.bin"), "flash_tone", DataFormat::Raw);
        item.staging = Some("spare".into());
        item
    };
    // Staging takes ~200 KB of erase + program; the cut falls in the copy into flash_tone.
    dev.flash.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(300_000),
        ..FaultPlan::default()
    });
    let (report, events) = run_events(&mut dev, vec![Box::new(item(&s))]);
    assert!(dev.flash.power_cut_happened(), "{}", lines(&events));
    assert!(matches!(report.results[0].1, Outcome::Failed { .. }));
    dev.flash.power_cycle();
    let (report, events) = run_events(&mut dev, vec![Box::new(item(&s))]);
    assert_success(&report, &events);
    let resumed: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::StagedCopyResume { id: 0, step, steps } => Some((*step, *steps)),
            _ => None,
        })
        .collect();
    assert_eq!(resumed.len(), 1, "{}", lines(&events));
    let (step, steps) = resumed[0];
    assert!(
        step > 0 && step < steps,
        "resumed mid-copy: {step} of {steps}"
    );
    assert_eq!(partition_bytes(&mut dev, "flash_tone", new.len()), new);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn catalogue_item_reconnects_for_the_catalogue_and_for_the_image() {
    let img = image("v2.0.0", 200_000);
    let img_srv = FlakyServer::start(
        img.clone(),
        Faults {
            drop_at: vec![77_777],
            ..Faults::default()
        },
    )
    .unwrap();
    let cat = Catalogue {
        format: CATALOGUE_FORMAT,
        serial: None,
        entries: vec![CatalogueEntry {
            path: img_srv.url("app.bin"),
            kind: EntryKind::App,
            size: img.len() as u64,
            sha256: hex(&Sha256::digest(&img)),
            chip: Some("esp32".into()),
            project: Some("app".into()),
            version: Some("v2.0.0".into()),
            secure_version: Some(0),
            idf_ver: None,
            format: None,
            files: None,
            error: None,
            deltas: Vec::new(),
        }],
    };
    let json = cat.to_json();
    let cat_srv = FlakyServer::start(
        json.clone(),
        Faults {
            drop_at: vec![json.len() as u64 / 2],
            ..Faults::default()
        },
    )
    .unwrap();
    let mut dev = device(EXAMPLE_CSV);
    let mut item = ManifestItem::new(cat_srv.url("manifest.json"), "app");
    item.retry = fast_retry();
    let (report, events) = run_events(&mut dev, vec![Box::new(item)]);
    assert_success(&report, &events);
    assert_eq!(
        resumed_at(&events, ResumeFrom::Reconnect),
        vec![json.len() as u64 / 2, 77_777],
        "the catalogue, then the image"
    );
    assert_eq!(cat_srv.resumed_from(), vec![json.len() as u64 / 2]);
    assert_eq!(img_srv.resumed_from(), vec![77_777]);
    assert!(report.restart);
    assert_eq!(boot(&mut dev).1, "v2.0.0");
}

#[test]
fn catalogue_image_that_changes_mid_download_is_checked_from_its_new_start() {
    // The server's file changes after the first request: the reconnect gets the new file
    // (200 to an If-Range that no longer matches), the download starts over, and the
    // catalogue's SHA-256 (of the old file) refuses it: otadata is not switched.
    let img = image("v2.0.0", 120_000);
    let other = image("v2.1.0", 120_000);
    let img_srv = FlakyServer::start(
        img.clone(),
        Faults {
            drop_at: vec![50_000],
            change: Some((1, other)),
            ..Faults::default()
        },
    )
    .unwrap();
    let cat = Catalogue {
        format: CATALOGUE_FORMAT,
        serial: None,
        entries: vec![CatalogueEntry {
            path: img_srv.url("app.bin"),
            kind: EntryKind::App,
            size: img.len() as u64,
            sha256: hex(&Sha256::digest(&img)),
            chip: Some("esp32".into()),
            project: Some("app".into()),
            version: Some("v2.0.0".into()),
            secure_version: Some(0),
            idf_ver: None,
            format: None,
            files: None,
            error: None,
            deltas: Vec::new(),
        }],
    };
    let cat_srv = FlakyServer::start(cat.to_json(), Faults::default()).unwrap();
    let mut dev = device(EXAMPLE_CSV);
    let mut item = ManifestItem::new(cat_srv.url("manifest.json"), "app");
    item.retry = fast_retry();
    let (report, events) = run_events(&mut dev, vec![Box::new(item)]);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::StartOver {
                id: 0,
                at: 50_000,
                ..
            }
        )),
        "{}",
        lines(&events)
    );
    match &report.results[0].1 {
        Outcome::Failed { message, .. } => {
            assert!(message.contains("SHA-256"), "{message}");
            assert!(message.contains("otadata was not switched"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(boot(&mut dev).1, "v1.0.0");
}
