//! ota-core's errors: every public error type is a `core::error::Error` and
//! `#[non_exhaustive]`, the flash driver's own error value survives a failed update (front
//! door and lower layers), and calling an engine out of order is a typed error.

use std::path::Path;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use ota_core::flash::{FlashErrorKind, FlashOp, TrackedFlash};
use ota_core::image::{build_image, ImageSpec, IMAGE_PREFIX_LEN};
use ota_core::mem_flash::MemFlash;
use ota_core::partition::{CsvOptions, PartitionTable, TABLE_MAX_LEN, TABLE_OFFSET};
use ota_core::resume::{ResumeHeader, ResumeLog, Validator, ValidatorKind};
use ota_core::update::{AppCall, AppPhase, AppUpdate, AppUpdateConfig, DataUpdate, UpdateError};
use ota_core::updater::{Call, OtaUpdater, Phase, UpdaterConfig, UpdaterError};
use ota_core::version::VersionPolicy;
use ota_core::{Chip, Error};

fn is_error<E: core::error::Error>() {}

#[test]
fn every_public_error_type_is_a_core_error() {
    is_error::<ota_core::Error>();
    is_error::<ota_core::delta::DeltaError>();
    is_error::<ota_core::delta::ApplyError<ota_core::flash::FlashError, ota_core::flash::FlashError>>(
    );
    is_error::<ota_core::flash::FlashError>();
    is_error::<ota_core::flash::DriverErrorKind>();
    is_error::<ota_core::flash::DriverError<BrokenDriver>>();
    is_error::<ota_core::partition::PartitionError>();
    is_error::<ota_core::partition::CsvError>();
    is_error::<ota_core::partition::CsvErrorKind>();
    is_error::<ota_core::otadata::OtaDataError>();
    is_error::<ota_core::image::ImageError>();
    is_error::<ota_core::tone::ToneError>();
    is_error::<ota_core::update::UpdateError>();
    is_error::<ota_core::staging::StagingError>();
    is_error::<ota_core::resume::ResumeError>();
    is_error::<ota_core::guard::GuardError>();
    is_error::<ota_core::boot::BootError>();
    is_error::<ota_core::layout::LayoutError>();
    is_error::<ota_core::elf2image::Elf2ImageError<'static>>();
    is_error::<ota_core::mem_flash::MemFlashError>();
    is_error::<ota_core::UpdaterError<BrokenDriver>>();
    // A driver error that is not itself a core::error::Error (esp-storage's is not).
    is_error::<ota_core::UpdaterError<NorFlashErrorKind>>();
}

/// The class, not a list: every `pub enum/struct *Error*` in ota-core's sources is
/// `#[non_exhaustive]`, and every `*Error` has an `impl ... core::error::Error for` it.
#[test]
fn every_error_type_in_the_sources_is_non_exhaustive_and_an_error() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    let mut dirs = vec![src];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let all: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let mut seen = 0;
    for f in &files {
        if f.ends_with("testutil.rs") {
            continue; // test-only flash
        }
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let decl = line
                .strip_prefix("pub enum ")
                .or_else(|| line.strip_prefix("pub struct "));
            let Some(decl) = decl else { continue };
            let name: String = decl
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !(name.ends_with("Error") || name.ends_with("ErrorKind")) {
                continue;
            }
            seen += 1;
            let attrs = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.starts_with("#[") || l.starts_with("///"));
            assert!(
                attrs.clone().any(|l| l.contains("non_exhaustive")),
                "{}:{}: {name} is not #[non_exhaustive]",
                f.display(),
                i + 1
            );
            let implemented = all.lines().any(|l| {
                l.starts_with("impl")
                    && l.contains("core::error::Error for")
                    && l.split("core::error::Error for ").nth(1).is_some_and(|t| {
                        t.trim_start().starts_with(&*name)
                            && !t.trim_start()[name.len()..]
                                .starts_with(|c: char| c.is_alphanumeric())
                    })
            });
            // A `...ErrorKind` is a field of its error (it need not be one itself).
            assert!(
                implemented || name.ends_with("Kind"),
                "{}: {name} does not implement core::error::Error",
                f.display()
            );
        }
    }
    assert!(
        seen >= 15,
        "found only {seen} error types: the scan is broken"
    );
}

// ---------------------------------------------------------------------------------------------
// A flash driver that fails with an error value of its own
// ---------------------------------------------------------------------------------------------

/// The driver's own error: carries a value ota-core cannot invent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BrokenDriver {
    serial: u32,
    offset: u32,
}

impl NorFlashError for BrokenDriver {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}

impl core::fmt::Display for BrokenDriver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "bus fault #{} at 0x{:x}", self.serial, self.offset)
    }
}

impl core::error::Error for BrokenDriver {}

const SERIAL: u32 = 0x5EED_0042;

/// A 4-byte-granular RAM flash whose writes into `fail` and erases starting in it fail.
struct Broken<'a> {
    inner: MemFlash<'a, 4, 4>,
    fail: std::ops::Range<u32>,
}

impl ErrorType for Broken<'_> {
    type Error = BrokenDriver;
}

impl ReadNorFlash for Broken<'_> {
    const READ_SIZE: usize = 4;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), BrokenDriver> {
        self.inner
            .read(offset, bytes)
            .map_err(|_| BrokenDriver { serial: 0, offset })
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl NorFlash for Broken<'_> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), BrokenDriver> {
        if self.fail.contains(&from) {
            return Err(BrokenDriver {
                serial: SERIAL,
                offset: from,
            });
        }
        self.inner.erase(from, to).map_err(|_| BrokenDriver {
            serial: 0,
            offset: from,
        })
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), BrokenDriver> {
        let end = offset + bytes.len() as u32;
        if offset < self.fail.end && end > self.fail.start {
            return Err(BrokenDriver {
                serial: SERIAL,
                offset,
            });
        }
        self.inner
            .write(offset, bytes)
            .map_err(|_| BrokenDriver { serial: 0, offset })
    }
}

const CHIP: Chip = Chip::Esp32c3;
const OTA_1: u32 = 0x110000;
const TONE: u32 = 0x210000;
const CSV: &str = "otadata, data, ota, 0xd000, 0x2000\n\
                   ota_0, app, ota_0, 0x10000, 1M\n\
                   ota_1, app, ota_1, 0x110000, 1M\n\
                   flash_tone, data, 0x27, 0x210000, 64K\n";

fn table() -> PartitionTable {
    PartitionTable::from_csv(CSV, &CsvOptions::default()).unwrap()
}

fn app(version: &str) -> Vec<u8> {
    let mut spec = ImageSpec::new(CHIP, "errors", version);
    spec.total_size = Some(60_000);
    let mut out = Vec::new();
    build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
    out
}

/// 4 MB with the table and v1 in ota_0.
fn device() -> Vec<u8> {
    let mut mem = vec![0xFF; 4 << 20];
    let mut bin = [0xFF; TABLE_MAX_LEN];
    table().to_binary(true, &mut bin).unwrap();
    mem[TABLE_OFFSET as usize..][..TABLE_MAX_LEN].copy_from_slice(&bin);
    let v1 = app("v1.0.0");
    mem[0x10000..][..v1.len()].copy_from_slice(&v1);
    mem
}

#[test]
fn front_door_returns_the_drivers_own_error_when_the_update_fails() {
    let mut mem = device();
    let mut flash = Broken {
        inner: MemFlash::new(&mut mem),
        fail: OTA_1 + 0x8000..OTA_1 + 0x9000, // a sector of the slot
    };
    let mut buf = [0u8; TABLE_MAX_LEN];
    let mut ota = OtaUpdater::new(&mut flash, UpdaterConfig::new(CHIP), &mut buf).unwrap();
    ota.begin(None, VersionPolicy::None).unwrap();
    let v2 = app("v2.0.0");
    let e = v2
        .chunks(1000)
        .find_map(|c| ota.write(c).err())
        .expect("the broken sector fails a write");
    let driver = e.driver_error().copied();
    assert_eq!(
        driver.map(|d| d.serial),
        Some(SERIAL),
        "the driver's own error value is reachable: {e:?}"
    );
    match &e {
        UpdaterError::Flash { error, .. } => {
            assert_eq!(error.offset, driver.unwrap().offset, "{e}");
            assert_eq!(error.kind, FlashErrorKind::Other);
        }
        other => panic!("expected a flash error, got {other:?}"),
    }
    // A refusal that is not the driver's carries none.
    let e = ota.finish().unwrap_err();
    assert_eq!(e.driver_error(), None, "{e:?}");
}

#[test]
fn lower_layer_engines_hand_back_the_drivers_own_error_through_a_tracked_flash() {
    let table = table();
    // AppUpdate.
    let mut mem = device();
    let mut raw = Broken {
        inner: MemFlash::new(&mut mem),
        fail: OTA_1 + 0x4000..OTA_1 + 0x5000,
    };
    let running = *table.ota(0).unwrap();
    let mut up =
        AppUpdate::begin(&table, Some(&running), AppUpdateConfig::new(CHIP), None).unwrap();
    let v2 = app("v2.0.0");
    up.feed_prefix(&v2[..IMAGE_PREFIX_LEN]).unwrap();
    let mut kept = TrackedFlash::new(&mut raw);
    let e = v2[IMAGE_PREFIX_LEN..]
        .chunks(4096)
        .find_map(|c| up.write(&mut kept, c).err())
        .expect("the broken sector fails a write");
    assert!(matches!(e, Error::Flash(_)), "{e:?}");
    let d = kept.driver_error(&e).expect("the driver error is kept");
    assert_eq!(d.driver.serial, SERIAL);
    assert_eq!(d.error.op, FlashOp::Erase, "{d}");
    assert_eq!(d.error.offset, OTA_1 + 0x4000, "{d}");
    // Asked twice, or about an error that is not the driver's: nothing.
    assert!(kept.driver_error(&e).is_none());
    assert!(kept
        .driver_error(&Error::Update(UpdateError::NoOtaData))
        .is_none());

    // DataUpdate: the first sector is programmed last, so its failure comes from finish.
    let mut mem = device();
    let mut raw = Broken {
        inner: MemFlash::new(&mut mem),
        fail: TONE + 4..TONE + 8, // the tone header's count and format
    };
    let map = ota_core::guard::FlashMap::new(&table, CHIP, Some(&running));
    let mut data = DataUpdate::begin(&map, "flash_tone", Some(6000)).unwrap();
    let mut kept = TrackedFlash::new(&mut raw);
    data.write(&mut kept, &[0x53; 6000])
        .unwrap_or_else(|e| panic!("{e}"));
    let e = data.finish(&mut kept).unwrap_err();
    let d = kept.driver_error(&e).expect("the driver error is kept");
    assert_eq!(
        (d.driver.serial, d.error.op),
        (SERIAL, FlashOp::Write),
        "{d}"
    );
}

#[test]
fn app_update_called_out_of_order_is_a_typed_error() {
    let table = table();
    let mut mem = device();
    let mut flash = MemFlash::<4, 4>::new(&mut mem);
    let running = *table.ota(0).unwrap();
    let new =
        || AppUpdate::begin(&table, Some(&running), AppUpdateConfig::new(CHIP), None).unwrap();
    let v2 = app("v2.0.0");

    // write before the prefix was fed.
    let mut up = new();
    let e = up.write(&mut flash, &v2).unwrap_err();
    assert_eq!(
        e,
        Error::Update(UpdateError::WrongState {
            call: AppCall::Write,
            phase: AppPhase::AwaitingPrefix
        })
    );
    // feed_prefix once the prefix is complete.
    up.feed_prefix(&v2[..IMAGE_PREFIX_LEN]).unwrap();
    let e = up.feed_prefix(&v2[IMAGE_PREFIX_LEN..]).unwrap_err();
    assert_eq!(
        e,
        Error::Update(UpdateError::WrongState {
            call: AppCall::FeedPrefix,
            phase: AppPhase::PrefixChecked
        })
    );
    // enable_resume once bytes reached the slot.
    up.write(&mut flash, &v2[IMAGE_PREFIX_LEN..5000]).unwrap();
    let slot = *up.slot();
    let log = ResumeLog::locate(&table, &slot).unwrap();
    let header = ResumeHeader::new(
        &slot,
        "http://127.0.0.1/app.bin",
        Validator::new(ValidatorKind::ETag, "\"x\"").unwrap(),
        v2.len() as u32,
    );
    let e = up
        .enable_resume(log, header, Some(v2.len() as u64))
        .unwrap_err();
    assert_eq!(
        e,
        Error::Update(UpdateError::WrongState {
            call: AppCall::EnableResume,
            phase: AppPhase::Writing
        })
    );
    assert!(
        e.to_string()
            .contains("AppUpdate::enable_resume called out of order"),
        "{e}"
    );
}

#[test]
fn front_door_called_out_of_order_is_a_typed_error() {
    let mut mem = device();
    let mut flash = MemFlash::<4, 4>::new(&mut mem);
    let mut buf = [0u8; TABLE_MAX_LEN];
    let mut ota = OtaUpdater::new(&mut flash, UpdaterConfig::new(CHIP), &mut buf).unwrap();
    let out_of_order = |e: UpdaterError<_>, call, phase| {
        assert_eq!(e, UpdaterError::OutOfOrder { call, phase });
    };
    out_of_order(ota.write(&[0; 16]).unwrap_err(), Call::Write, Phase::Idle);
    out_of_order(ota.finish().unwrap_err(), Call::Finish, Phase::Idle);
    ota.begin(None, VersionPolicy::None).unwrap();
    out_of_order(
        ota.begin(None, VersionPolicy::None).unwrap_err(),
        Call::Begin,
        Phase::Writing,
    );
    let v2 = app("v2.0.0");
    ota.write(&v2).unwrap();
    ota.finish().unwrap();
    out_of_order(ota.finish().unwrap_err(), Call::Finish, Phase::Committed);
    out_of_order(
        ota.mark_valid().unwrap_err(),
        Call::MarkValid,
        Phase::Committed,
    );
}
