//! Shared by the resume, sweep and mutation tests: an emulated ESP32 (in-memory `EmuFlash`
//! with the ESP-ADF example's table and an app in ota_0), app images, running the upgrade list
//! and booting like the 2nd-stage bootloader.
#![allow(dead_code)]

use std::time::Duration;

use embedded_storage::nor_flash::NorFlash;

use ota_core::boot::{self, BootConfig, BootOutcome};
use ota_core::image::{build_image, ImageSpec};
use ota_core::partition::{CsvOptions, PartitionTable, TABLE_MAX_LEN, TABLE_OFFSET};
use ota_core::Chip;
use ota_emu::device::layout;
use ota_emu::EmuFlash;
use ota_service::items::AppItem;
use ota_service::source::{RetryPolicy, SourceOptions};
use ota_service::{run_list, Device, Env, Event, ResumeFrom, RunReport, StartOverWhy, UpgradeItem};

/// The ESP-ADF OTA example's table (1 MB slots; ota_1 at 0x110000).
pub const EXAMPLE_CSV: &str = "\
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
flash_tone, data, 0xff,  ,        1M,
";

/// The same with a one-sector `ota_resume` data partition after flash_tone.
pub const RESUME_PART_CSV: &str = "\
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
flash_tone, data, 0xff,  ,        1M,
ota_resume, data, 0x99,  ,        0x1000,
";

pub const FLASH_SIZE: u32 = 4 << 20;
pub const OTA_0: u32 = 0x10000;
pub const OTA_1: u32 = 0x110000;
pub const OTADATA: u32 = 0xD000;

pub struct Dev {
    pub flash: EmuFlash,
    pub table: PartitionTable,
}

/// An app image of about `size` bytes (deterministic content per version).
pub fn image(version: &str, size: u32) -> Vec<u8> {
    let mut spec = ImageSpec::new(Chip::Esp32, "app", version);
    spec.total_size = Some(size);
    spec.fill_seed = version.bytes().map(u32::from).sum();
    let mut out = Vec::new();
    build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).expect("build image");
    out
}

/// A device running `v1.0.0` from ota_0, booted once (otadata holds seq 1).
pub fn device(csv: &str) -> Dev {
    let opts = CsvOptions {
        flash_size: Some(FLASH_SIZE),
        ..CsvOptions::default()
    };
    let table = PartitionTable::from_csv(csv, &opts).expect("table");
    let mut bin = [0xFFu8; TABLE_MAX_LEN];
    table.to_binary(true, &mut bin).expect("table binary");
    let mut flash = EmuFlash::in_memory(FLASH_SIZE);
    layout::write_raw(&mut flash, TABLE_OFFSET, &bin).expect("write table");
    layout::write_raw(&mut flash, OTA_0, &image("v1.0.0", 60_000)).expect("write app");
    let mut dev = Dev { flash, table };
    assert_eq!(boot(&mut dev).1, "v1.0.0");
    dev
}

/// Boot like the 2nd-stage bootloader: the outcome and the app's version.
pub fn boot(dev: &mut Dev) -> (BootOutcome, String) {
    let out = boot::boot(
        &mut dev.flash,
        &dev.table,
        Chip::Esp32,
        &BootConfig::default(),
        &mut |_| {},
    )
    .expect("the device boots");
    let v = out
        .summary
        .app_desc
        .as_ref()
        .map(|d| d.version_str().to_string())
        .unwrap_or_default();
    (out, v)
}

/// An app item for `uri` with fast retries (`retries`, 2 ms backoff).
pub fn app_item(uri: &str, retries: u32) -> AppItem {
    let mut item = AppItem::new(uri);
    item.retry = RetryPolicy {
        retries,
        backoff: Duration::from_millis(2),
    };
    item
}

/// What one run printed.
#[derive(Default)]
pub struct RunLog {
    pub lines: Vec<String>,
    /// Bytes reported by the last Progress event.
    pub last_progress: u64,
    /// The typed download events: `Resume`, `StartOver`, `StagedCopyResume`.
    pub events: Vec<Event>,
}

impl RunLog {
    pub fn has(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.contains(needle))
    }

    /// The bytes item 0 resumed at from a resume record in flash.
    pub fn resumed_from_record(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Resume {
                    id: 0,
                    at,
                    from: ResumeFrom::Record,
                } => Some(*at),
                _ => None,
            })
            .collect()
    }

    /// Whether item 0's download started over from byte 0 for `why`.
    pub fn started_over(&self, why: StartOverWhy) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::StartOver { id: 0, why: w, .. } if *w == why))
    }
}

/// Boot, then run `items` against the device (as `ota device run` does, without the restart).
pub fn run_items(
    dev: &mut Dev,
    items: Vec<Box<dyn UpgradeItem<EmuFlash>>>,
    timeout: Duration,
) -> (RunReport, RunLog) {
    run_on(&mut dev.flash, &dev.table, items, timeout)
}

/// [`run_items`] over any flash (a recording wrapper, for instance).
pub fn run_on<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    items: Vec<Box<dyn UpgradeItem<F>>>,
    timeout: Duration,
) -> (RunReport, RunLog) {
    let booted = boot::boot(
        flash,
        table,
        Chip::Esp32,
        &BootConfig::default(),
        &mut |_| {},
    )
    .expect("the device boots before the run");
    let mut items = items;
    let mut log = RunLog::default();
    let report = {
        let mut on_event = |ev: Event| match ev {
            Event::Log { tag, message, .. } => log.lines.push(format!("{tag}: {message}")),
            Event::Progress { bytes, .. } => log.last_progress = bytes,
            e @ (Event::Resume { .. }
            | Event::StartOver { .. }
            | Event::StagedCopyResume { .. }) => log.events.push(e),
            _ => {}
        };
        let mut device = Device {
            flash,
            table,
            chip: Chip::Esp32,
            running: Some(booted.partition),
            rollback: false,
            anti_rollback: None,
            table_offset: ota_core::partition::TABLE_OFFSET,
            flash_size: None,
            signatures: Default::default(),
        };
        let mut env = Env {
            sd: None,
            source: SourceOptions {
                timeout,
                ..SourceOptions::default()
            },
            events: &mut on_event,
        };
        run_list(&mut items, &mut device, &mut env)
    };
    (report, log)
}

pub fn run_app(dev: &mut Dev, item: AppItem) -> (RunReport, RunLog) {
    run_items(dev, vec![Box::new(item)], Duration::from_secs(5))
}

/// Bytes a resume fetched again: for each answer that honoured a Range (206), how far the
/// previous answer's body had got beyond the resume point.
pub fn refetched(reqs: &[ota_testsrv::Request]) -> Vec<u64> {
    reqs.windows(2)
        .filter(|w| w[1].status == 206)
        .map(|w| (w[0].body_start + w[0].body_sent).saturating_sub(w[1].body_start))
        .collect()
}
