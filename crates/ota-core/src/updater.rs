//! The front door: [`OtaUpdater`], the one type an app on a chip needs to update itself.
//!
//! It reads the partition table from flash, finds otadata and the running app, and offers the
//! ESP-IDF OTA sequence as three calls (`esp_ota_begin`, `esp_ota_write`, `esp_ota_end` +
//! `esp_ota_set_boot_partition` in esp-idf `components/app_update/esp_ota_ops.c`), plus the
//! running app's rollback state and its confirmation:
//!
//! ```text
//! new / new_running_at ─► begin(len, policy) ─► write(chunk)… ─► finish()   (restart)
//!                    └──► running() / mark_valid() / mark_invalid()
//! ```
//!
//! Underneath it drives the lower layers the ota-service uses too: [`AppUpdate`] (the
//! streaming engine), [`crate::update::begin_with_rollback`],
//! [`crate::update::mark_app_valid_cancel_rollback`],
//! [`crate::update::mark_app_invalid_rollback`] and the boot selection of [`crate::boot`]. No
//! allocation: the parsed table lives in the updater, the raw table is read into a buffer the
//! caller lends to the constructor.
//!
//! # Which app is running
//!
//! ESP-IDF's `esp_ota_get_running_partition` asks the MMU which flash page the code executes
//! from. `ota-core` has no chip-specific code, so [`OtaUpdater::new`] takes the running app to
//! be the one the 2nd-stage bootloader selected on this boot: it replays the bootloader's
//! selection ([`crate::boot::boot`]) on otadata as it is now, as a dry run — with the rollback
//! writes left out (this boot's bootloader already made them: aborting a PENDING_VERIFY entry
//! again would pick the other app) and no flash write at all — so slots whose image does not
//! verify are skipped exactly as the bootloader skipped them. That costs one verification pass
//! over the selected image (and more if it is broken).
//!
//! One case otadata alone cannot tell apart: an update committed by `finish` since this boot,
//! the device not restarted yet. With rollback the committed entry is still NEW (the bootloader
//! turns the entry it selects into PENDING_VERIFY at once), so the dry run reads it as erased
//! and finds the app that did boot. Without rollback the committed entry looks like a booted
//! one: open a second updater only after the restart (the updater that committed refuses
//! further calls by itself, [`Phase::Committed`]). Firmware that knows the flash address it
//! runs from (from the MMU, or the address it was linked for) should say so with
//! [`OtaUpdater::new_running_at`]: that is exact in every case, and reads nothing but the
//! table.
//!
//! # Call order
//!
//! `begin` → `write`… → `finish` may be repeated after an error or [`OtaUpdater::abort`]; once
//! `finish` has switched otadata the device must restart. A call out of order fails with
//! [`UpdaterError::OutOfOrder`] and changes nothing. Any error inside `write` or `finish`
//! ends the update (otadata untouched); start again with `begin`.

use core::fmt;

use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};

use crate::boot::{self, BootConfig};
use crate::chip::Chip;
use crate::flash::{DriverErrorKind, FlashError, TrackedFlash};
use crate::image::{AppDesc, ImageSummary};
use crate::otadata::{OtaData, OtaState, OTADATA_SECTOR_SIZE};
use crate::partition::{
    Partition, PartitionTable, ReadRule, SUBTYPE_APP_FACTORY, SUBTYPE_APP_OTA_0, SUBTYPE_APP_TEST,
    SUBTYPE_DATA_COREDUMP, SUBTYPE_DATA_NVS, SUBTYPE_DATA_NVS_KEYS, SUBTYPE_DATA_OTA,
    SUBTYPE_DATA_PHY, SUBTYPE_DATA_UNDEFINED, TABLE_MAX_LEN, TABLE_OFFSET, TYPE_APP, TYPE_DATA,
};
use crate::update::{self, AppUpdate, AppUpdateConfig, MarkedValid, UpdateError};
use crate::version::VersionPolicy;
use crate::Error;

// ---------------------------------------------------------------------------------------------
// Typed partition kinds
// ---------------------------------------------------------------------------------------------

/// An OTA app slot, `ota_0` .. `ota_15`: app subtypes 0x10..=0x1F
/// (`ESP_PARTITION_SUBTYPE_APP_OTA_MIN`..`_MAX`, esp-idf
/// `components/esp_partition/include/esp_partition.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u8);

impl Slot {
    /// How many OTA slots a table can name (`ESP_PARTITION_SUBTYPE_APP_OTA_MAX` − `_MIN` + 1).
    pub const COUNT: u8 = 16;

    /// Slot `ota_{index}`, if `index` < [`Slot::COUNT`].
    pub const fn new(index: u8) -> Option<Slot> {
        if index < Self::COUNT {
            Some(Slot(index))
        } else {
            None
        }
    }

    /// The slot an app subtype names (0x10 → `ota_0`), if it names one.
    pub const fn from_subtype(subtype: u8) -> Option<Slot> {
        match subtype.checked_sub(SUBTYPE_APP_OTA_0) {
            Some(n) => Slot::new(n),
            None => None,
        }
    }

    /// `n` of `ota_n`.
    pub const fn index(self) -> u8 {
        self.0
    }

    /// The partition subtype (0x10 + n).
    pub const fn subtype(self) -> u8 {
        SUBTYPE_APP_OTA_0 + self.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ota_{}", self.0)
    }
}

/// What an app partition is, by subtype (`esp_partition_subtype_t`, esp-idf
/// `components/esp_partition/include/esp_partition.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AppKind {
    /// `factory` (0x00).
    Factory,
    /// `ota_0` .. `ota_15`.
    Ota(Slot),
    /// `test` (0x20).
    Test,
    /// Any other app subtype (e.g. `tee_0`).
    Other(u8),
}

impl AppKind {
    pub const fn from_subtype(subtype: u8) -> AppKind {
        match subtype {
            SUBTYPE_APP_FACTORY => AppKind::Factory,
            SUBTYPE_APP_TEST => AppKind::Test,
            s => match Slot::from_subtype(s) {
                Some(slot) => AppKind::Ota(slot),
                None => AppKind::Other(s),
            },
        }
    }

    pub const fn subtype(self) -> u8 {
        match self {
            AppKind::Factory => SUBTYPE_APP_FACTORY,
            AppKind::Test => SUBTYPE_APP_TEST,
            AppKind::Ota(slot) => slot.subtype(),
            AppKind::Other(s) => s,
        }
    }

    /// The OTA slot, for `Ota`.
    pub const fn slot(self) -> Option<Slot> {
        match self {
            AppKind::Ota(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for AppKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppKind::Factory => f.write_str("factory"),
            AppKind::Ota(s) => s.fmt(f),
            AppKind::Test => f.write_str("test"),
            AppKind::Other(s) => write!(f, "app subtype 0x{:02x}", s),
        }
    }
}

/// What a data partition is, by subtype (`esp_partition.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataKind {
    /// `ota`: otadata.
    Ota,
    Phy,
    Nvs,
    Coredump,
    NvsKeys,
    /// `undefined` (0x06).
    Undefined,
    /// Any other data subtype (fat, spiffs, a custom one such as ESP-ADF's flash_tone 0xFF...).
    Other(u8),
}

impl DataKind {
    pub const fn from_subtype(subtype: u8) -> DataKind {
        match subtype {
            SUBTYPE_DATA_OTA => DataKind::Ota,
            SUBTYPE_DATA_PHY => DataKind::Phy,
            SUBTYPE_DATA_NVS => DataKind::Nvs,
            SUBTYPE_DATA_COREDUMP => DataKind::Coredump,
            SUBTYPE_DATA_NVS_KEYS => DataKind::NvsKeys,
            SUBTYPE_DATA_UNDEFINED => DataKind::Undefined,
            s => DataKind::Other(s),
        }
    }

    pub const fn subtype(self) -> u8 {
        match self {
            DataKind::Ota => SUBTYPE_DATA_OTA,
            DataKind::Phy => SUBTYPE_DATA_PHY,
            DataKind::Nvs => SUBTYPE_DATA_NVS,
            DataKind::Coredump => SUBTYPE_DATA_COREDUMP,
            DataKind::NvsKeys => SUBTYPE_DATA_NVS_KEYS,
            DataKind::Undefined => SUBTYPE_DATA_UNDEFINED,
            DataKind::Other(s) => s,
        }
    }
}

/// A partition's type and subtype, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PartitionKind {
    App(AppKind),
    Data(DataKind),
    /// Any other type (bootloader 0x02, partition_table 0x03, custom types 0x40..=0xFE).
    Other {
        ptype: u8,
        subtype: u8,
    },
}

impl PartitionKind {
    /// The kind of `p`.
    pub const fn of(p: &Partition) -> PartitionKind {
        match p.ptype {
            TYPE_APP => PartitionKind::App(AppKind::from_subtype(p.subtype)),
            TYPE_DATA => PartitionKind::Data(DataKind::from_subtype(p.subtype)),
            ptype => PartitionKind::Other {
                ptype,
                subtype: p.subtype,
            },
        }
    }

    /// The raw `(type, subtype)` bytes.
    pub const fn raw(self) -> (u8, u8) {
        match self {
            PartitionKind::App(a) => (TYPE_APP, a.subtype()),
            PartitionKind::Data(d) => (TYPE_DATA, d.subtype()),
            PartitionKind::Other { ptype, subtype } => (ptype, subtype),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration and results
// ---------------------------------------------------------------------------------------------

/// How the device was built: its chip and the bootloader options that change the OTA rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpdaterConfig {
    /// The device's chip: an image for another chip is refused.
    pub chip: Chip,
    /// `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE`: `begin` refuses while the running app is
    /// unconfirmed and invalidates the stale otadata entry; a new app boots as NEW and must
    /// confirm itself with [`OtaUpdater::mark_valid`].
    pub rollback: bool,
    /// `CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK` with the chip's eFuse secure-version counter:
    /// an image whose `secure_version` is below it is refused.
    pub anti_rollback: Option<u32>,
    /// `CONFIG_PARTITION_TABLE_OFFSET` (default 0x8000).
    pub table_offset: u32,
    /// Secure Boot v2 or signed apps: the signatures a new image must carry (checked before
    /// otadata is switched).
    pub signatures: crate::secure_boot::AppSignatures,
}

impl UpdaterConfig {
    /// A `chip` device, table at 0x8000, no rollback, no anti-rollback.
    pub const fn new(chip: Chip) -> Self {
        UpdaterConfig {
            chip,
            rollback: false,
            anti_rollback: None,
            table_offset: TABLE_OFFSET,
            signatures: crate::secure_boot::AppSignatures::NotChecked,
        }
    }

    /// With or without `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE`.
    pub const fn with_rollback(mut self, on: bool) -> Self {
        self.rollback = on;
        self
    }

    /// With `CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK` and the eFuse counter's value; ESP-IDF
    /// requires rollback for it, so this turns rollback on too.
    pub const fn with_anti_rollback(mut self, efuse_secure_version: u32) -> Self {
        self.rollback = true;
        self.anti_rollback = Some(efuse_secure_version);
        self
    }

    /// With the partition table at `offset`.
    pub const fn with_table_offset(mut self, offset: u32) -> Self {
        self.table_offset = offset;
        self
    }

    /// With Secure Boot v2 / signed-apps checks of new images.
    pub const fn with_signatures(mut self, s: crate::secure_boot::AppSignatures) -> Self {
        self.signatures = s;
        self
    }
}

/// The running app, as [`OtaUpdater::running`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunningApp {
    pub kind: AppKind,
    pub partition: Partition,
    /// Its otadata state (`esp_ota_get_state_partition`): `PendingVerify` on the first boot
    /// of a new app with rollback, until [`OtaUpdater::mark_valid`]. None for a factory or
    /// test app, or when no otadata entry names the slot.
    pub state: Option<OtaState>,
}

/// What [`OtaUpdater::finish`] installed: the slot that boots after the restart.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Installed {
    pub slot: Slot,
    pub partition: Partition,
    /// The verified image (its descriptor, sizes, digests).
    pub summary: ImageSummary,
}

/// The calls whose order [`OtaUpdater`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Call {
    Begin,
    Write,
    Finish,
    MarkValid,
    MarkInvalid,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Begin => "begin",
            Call::Write => "write",
            Call::Finish => "finish",
            Call::MarkValid => "mark_valid",
            Call::MarkInvalid => "mark_invalid",
        })
    }
}

/// Where an [`OtaUpdater`] is in the update sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// No update in progress: `begin` may be called.
    Idle,
    /// Between `begin` and `finish`: `write` and `finish` may be called.
    Writing,
    /// `finish` switched otadata to the new app: only a restart is left (otadata's active
    /// entry is no longer the running app's, so confirming or rejecting now would act on the
    /// new app, and a second update would overwrite the one just installed).
    Committed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Idle => "no update has begun",
            Phase::Writing => "an update is in progress",
            Phase::Committed => "an update was committed and the device has not restarted yet",
        })
    }
}

/// Why an [`OtaUpdater`] call failed. `E` is the flash driver's error.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdaterError<E> {
    /// The flash driver failed: what ota-core was doing (operation, absolute offset, length)
    /// and the driver's own error.
    Flash { error: FlashError, driver: E },
    /// A format or rule refused the operation: a bad partition table or image, an image for
    /// another chip, a version or anti-rollback refusal, the running app still unconfirmed
    /// (`UpdateError::RollbackInvalidState`), a slot too small...
    Core(Error),
    /// `call` is not allowed now (a bug in the caller); nothing was done.
    OutOfOrder { call: Call, phase: Phase },
    /// [`OtaUpdater::new_running_at`]: no app partition holds this flash offset.
    NoAppAt { offset: u32 },
    /// otadata's active entry selects `selected`, not the running app: confirming or
    /// rejecting would change another app's state (the bootloader fell back from a broken
    /// slot, or an update was committed and the device has not restarted).
    NotSelected {
        running: AppKind,
        selected: Option<Slot>,
    },
    /// `begin` was given the image length `expected`, and `received` bytes were written
    /// (more: refused at the write that passed it; fewer: refused by `finish`).
    Length { expected: u32, received: u64 },
}

impl<E> From<Error> for UpdaterError<E> {
    fn from(e: Error) -> Self {
        UpdaterError::Core(e)
    }
}

impl<E: fmt::Debug> fmt::Display for UpdaterError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdaterError::Flash { error, driver } => {
                write!(f, "{} ({:?})", error, driver)
            }
            UpdaterError::Core(e) => e.fmt(f),
            UpdaterError::OutOfOrder { call, phase } => {
                write!(f, "OtaUpdater::{} called out of order: {}", call, phase)
            }
            UpdaterError::NoAppAt { offset } => {
                write!(f, "no app partition holds flash offset 0x{:x}", offset)
            }
            UpdaterError::NotSelected { running, selected } => {
                write!(f, "otadata selects ")?;
                match selected {
                    Some(s) => write!(f, "{}", s)?,
                    None => f.write_str("no OTA slot")?,
                }
                write!(
                    f,
                    ", not the running app ({}): its state cannot be changed (restart first)",
                    running
                )
            }
            UpdaterError::Length { expected, received } => write!(
                f,
                "begin announced an image of {} bytes, {} bytes were written",
                expected, received
            ),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for UpdaterError<E> {}

impl<E> UpdaterError<E> {
    /// The flash driver's own error, when the driver's failure ended the call.
    pub fn driver_error(&self) -> Option<&E> {
        match self {
            UpdaterError::Flash { driver, .. } => Some(driver),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Flash access that keeps the driver's error
// ---------------------------------------------------------------------------------------------

/// The caller's flash as the core layers get it: every driver error is remembered
/// ([`TrackedFlash`]) so it can be handed back in [`UpdaterError::Flash`]. `dry_run`:
/// erases and writes do nothing.
struct Io<'f, F: ErrorType> {
    keep: TrackedFlash<'f, F>,
    dry_run: bool,
    /// Absolute `[start, end)` that reads as erased (0xFF), whatever the flash holds.
    hide: Option<(u32, u32)>,
}

impl<'f, F: NorFlash> Io<'f, F> {
    fn new(flash: &'f mut F) -> Self {
        Io {
            keep: TrackedFlash::new(flash),
            dry_run: false,
            hide: None,
        }
    }

    fn dry_run(flash: &'f mut F) -> Self {
        Io {
            dry_run: true,
            ..Io::new(flash)
        }
    }

    /// Some core helpers take a failed read for "nothing there" (an app descriptor, an image
    /// the bootloader would skip). Where that would make the updater guess — which app runs,
    /// the running version — a driver error met on the way fails the call instead.
    fn check_no_driver_error(&mut self) -> Res<(), F> {
        match self.keep.take() {
            Some(d) => Err(UpdaterError::Flash {
                error: d.error,
                driver: d.driver,
            }),
            None => Ok(()),
        }
    }

    /// A core error as the updater's: a flash error the driver raised carries that error.
    fn lift(&mut self, e: Error) -> UpdaterError<F::Error> {
        match self.keep.driver_error(&e) {
            Some(d) => UpdaterError::Flash {
                error: d.error,
                driver: d.driver,
            },
            None => UpdaterError::Core(e),
        }
    }
}

impl<F: NorFlash> ErrorType for Io<'_, F> {
    type Error = DriverErrorKind;
}

impl<F: NorFlash> ReadNorFlash for Io<'_, F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), DriverErrorKind> {
        self.keep.read(offset, bytes)?;
        if let Some((start, end)) = self.hide {
            // The part of `[offset, offset + len)` inside `[start, end)`, relative to `offset`.
            let from = start.saturating_sub(offset) as usize;
            let to = (end.saturating_sub(offset) as usize).min(bytes.len());
            if let Some(hidden) = bytes.get_mut(from..to) {
                hidden.fill(0xFF);
            }
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.keep.capacity()
    }
}

impl<F: NorFlash> NorFlash for Io<'_, F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), DriverErrorKind> {
        if self.dry_run {
            return Ok(());
        }
        self.keep.erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), DriverErrorKind> {
        if self.dry_run {
            return Ok(());
        }
        self.keep.write(offset, bytes)
    }
}

impl<F: MultiwriteNorFlash> MultiwriteNorFlash for Io<'_, F> {}

// ---------------------------------------------------------------------------------------------
// The updater
// ---------------------------------------------------------------------------------------------

/// An update between `begin` and `finish`.
struct Update {
    engine: AppUpdate,
    slot: Slot,
    policy: VersionPolicy,
    running_desc: Option<AppDesc>,
    expected: Option<u32>,
    received: u64,
}

/// OTA for an app on a chip: see the [module documentation](self) and the crate's example.
pub struct OtaUpdater<'a, F: NorFlash> {
    flash: &'a mut F,
    cfg: UpdaterConfig,
    table: PartitionTable,
    running: Partition,
    phase: Phase,
    update: Option<Update>,
}

type Res<T, F> = Result<T, UpdaterError<<F as ErrorType>::Error>>;

impl<'a, F: NorFlash> OtaUpdater<'a, F> {
    /// Read the partition table at `cfg.table_offset` into `buf` (3 KiB, only used here) and
    /// take the running app to be the one the bootloader selected on this boot (see [Which app
    /// is running](self#which-app-is-running)).
    ///
    /// The table is read as the 2nd-stage bootloader reads it (`esp_partition_table_verify`,
    /// esp-idf `components/bootloader_support/src/flash_partitions.c`: MD5 entry optional,
    /// every partition inside the flash), since it is the table this app was booted from.
    /// Fails when the table is bad, has no otadata partition, or nothing bootable is found.
    pub fn new(
        flash: &'a mut F,
        cfg: UpdaterConfig,
        buf: &mut [u8; TABLE_MAX_LEN],
    ) -> Res<Self, F> {
        let table = read_table(flash, &cfg, buf)?;
        let boot_cfg = BootConfig {
            // The rollback writes of this boot were made by the real bootloader already.
            rollback: false,
            anti_rollback: cfg.anti_rollback.is_some(),
            efuse_secure_version: cfg.anti_rollback.unwrap_or(0),
            mmu_page_size: None,
            flash_size: u32::try_from(flash.capacity()).ok(),
            // The real bootloader checked the app it booted already.
            secure_boot: None,
        };
        let mut io = Io::dry_run(flash);
        if cfg.rollback {
            io.hide = committed_since_boot(&mut io, &table)?;
        }
        let booted = boot::boot(&mut io, &table, cfg.chip, &boot_cfg, &mut |_| {})
            .map_err(|e| io.lift(e))?;
        // A slot the dry run skipped for a read error may be the one running.
        io.check_no_driver_error()?;
        Self::open(flash, cfg, table, booted.partition)
    }

    /// Like [`OtaUpdater::new`], for firmware that knows a flash address inside the app it
    /// runs from (for example its entry point's flash address, read back from the MMU): the
    /// running app is the app partition holding `running_offset`. Nothing but the table is
    /// read.
    pub fn new_running_at(
        flash: &'a mut F,
        cfg: UpdaterConfig,
        buf: &mut [u8; TABLE_MAX_LEN],
        running_offset: u32,
    ) -> Res<Self, F> {
        let table = read_table(flash, &cfg, buf)?;
        let running = table
            .iter()
            .find(|p| {
                p.is_app() && running_offset >= p.offset && running_offset - p.offset < p.size
            })
            .copied()
            .ok_or(UpdaterError::NoAppAt {
                offset: running_offset,
            })?;
        Self::open(flash, cfg, table, running)
    }

    fn open(
        flash: &'a mut F,
        cfg: UpdaterConfig,
        table: PartitionTable,
        running: Partition,
    ) -> Res<Self, F> {
        if table.otadata().is_none() {
            return Err(UpdaterError::Core(UpdateError::NoOtaData.into()));
        }
        Ok(OtaUpdater {
            flash,
            cfg,
            table,
            running,
            phase: Phase::Idle,
            update: None,
        })
    }

    /// The partition table read from flash (to find a data partition, for example).
    pub fn table(&self) -> &PartitionTable {
        &self.table
    }

    /// The running app and its otadata state (read now).
    pub fn running(&mut self) -> Res<RunningApp, F> {
        let state = match self.running.ota_slot() {
            Some(slot) => self.otadata()?.state_of_slot(slot, self.table.ota_count()),
            None => None,
        };
        Ok(RunningApp {
            kind: AppKind::from_subtype(self.running.subtype),
            partition: self.running,
            state,
        })
    }

    /// Start an update (`esp_ota_begin`): picks the slot after the running one
    /// (`esp_ota_get_next_update_partition`) and returns it. `len`: the image length when
    /// known (a larger image is refused here, before anything is erased; `write` and `finish`
    /// then hold the stream to exactly that many bytes). `policy`: how the incoming version
    /// must compare with the running app's ([`VersionPolicy::None`]: any).
    ///
    /// With rollback (ESP-IDF v5.5+ `esp_ota_begin`): refused while the running app is
    /// PENDING_VERIFY (`UpdateError::RollbackInvalidState`: confirm it first), and the
    /// inactive otadata entry, which names the slot about to be overwritten, is erased. The
    /// image's own checks — magic, chip, version policy, anti-rollback `secure_version` — run
    /// as soon as `write` has received its first 289 bytes, before anything is erased; the
    /// image is verified again in flash by `finish`.
    pub fn begin(&mut self, len: Option<u32>, policy: VersionPolicy) -> Res<Slot, F> {
        self.expect(Call::Begin, Phase::Idle)?;
        let cfg = self.app_config();
        let running = Some(&self.running);
        let mut engine = AppUpdate::begin(&self.table, running, cfg, len.map(u64::from))?;
        engine.set_anti_rollback(self.cfg.anti_rollback);
        let slot = Slot::from_subtype(engine.slot().subtype)
            .ok_or(Error::from(UpdateError::NoUpdateSlot))?;
        let mut io = Io::new(&mut *self.flash);
        let running_desc = match policy {
            VersionPolicy::None => None,
            _ => boot::partition_app_desc(&mut io, &self.running),
        };
        io.check_no_driver_error()?;
        if self.cfg.rollback {
            let map = cfg.flash_map(&self.table, running);
            update::begin_with_rollback(&mut io, &map).map_err(|e| io.lift(e))?;
        }
        self.update = Some(Update {
            engine,
            slot,
            policy,
            running_desc,
            expected: len,
            received: 0,
        });
        self.phase = Phase::Writing;
        Ok(slot)
    }

    /// Stream the next piece of the image (`esp_ota_write`), any size. The first 289 bytes
    /// (header + app descriptor) are held until they can be checked; then everything goes to
    /// the slot, each 4 KiB sector erased just before it is first written. An error ends the
    /// update.
    pub fn write(&mut self, chunk: &[u8]) -> Res<(), F> {
        self.expect(Call::Write, Phase::Writing)?;
        let Some(mut u) = self.update.take() else {
            return Err(self.out_of_order(Call::Write));
        };
        match write_update(&mut *self.flash, &mut u, chunk) {
            Ok(()) => {
                self.update = Some(u);
                Ok(())
            }
            Err(e) => {
                self.phase = Phase::Idle;
                Err(e)
            }
        }
    }

    /// End the update (`esp_ota_end` + `esp_ota_set_boot_partition`): the stream's verdict,
    /// the image as read back from flash (and, with anti-rollback, its `secure_version`),
    /// then otadata is switched to the new slot — NEW with rollback, so the new app must
    /// confirm itself after the restart. A bad image never switches otadata.
    pub fn finish(&mut self) -> Res<Installed, F> {
        self.expect(Call::Finish, Phase::Writing)?;
        let Some(u) = self.update.take() else {
            return Err(self.out_of_order(Call::Finish));
        };
        self.phase = Phase::Idle;
        if let Some(expected) = u.expected {
            if u.received != u64::from(expected) {
                return Err(UpdaterError::Length {
                    expected,
                    received: u.received,
                });
            }
        }
        let mut io = Io::new(&mut *self.flash);
        let done = u.engine.finish(&mut io).map_err(|e| io.lift(e))?;
        self.phase = Phase::Committed;
        Ok(Installed {
            slot: u.slot,
            partition: done.slot,
            summary: done.summary,
        })
    }

    /// Give up the update in progress (`esp_ota_abort`): otadata is untouched, the slot keeps
    /// what was written. No effect when no update is in progress.
    pub fn abort(&mut self) {
        if self.phase == Phase::Writing {
            self.update = None;
            self.phase = Phase::Idle;
        }
    }

    /// Confirm the running app (`esp_ota_mark_app_valid_cancel_rollback`): its otadata entry
    /// becomes VALID, so the next boot does not roll it back. With anti-rollback the result
    /// carries the eFuse secure-version counter the chip must now hold (burning it is the
    /// caller's job); later calls use it.
    pub fn mark_valid(&mut self) -> Res<MarkedValid, F> {
        self.check_selected(Call::MarkValid)?;
        let mut io = Io::new(&mut *self.flash);
        let marked = update::mark_app_valid_cancel_rollback(
            &mut io,
            &self.table,
            self.cfg.chip,
            self.cfg.anti_rollback,
        )
        .map_err(|e| io.lift(e))?;
        if marked.efuse_secure_version.is_some() {
            self.cfg.anti_rollback = marked.efuse_secure_version;
        }
        Ok(marked)
    }

    /// Reject the running app (`esp_ota_mark_app_invalid_rollback`, then restart): its
    /// otadata entry becomes INVALID so the bootloader boots the previous app, which is
    /// verified first; refused (nothing written) when there is none to fall back to.
    pub fn mark_invalid(&mut self) -> Res<(), F> {
        self.check_selected(Call::MarkInvalid)?;
        let mut io = Io::new(&mut *self.flash);
        update::mark_app_invalid_rollback(
            &mut io,
            &self.table,
            self.cfg.chip,
            self.cfg.anti_rollback,
        )
        .map_err(|e| io.lift(e))?;
        Ok(())
    }

    fn app_config(&self) -> AppUpdateConfig {
        let mut c = AppUpdateConfig::new(self.cfg.chip);
        c.rollback = self.cfg.rollback;
        c.table_offset = self.cfg.table_offset;
        c.flash_size = u32::try_from(self.flash.capacity()).ok();
        c.signatures = self.cfg.signatures;
        c
    }

    fn otadata(&mut self) -> Res<OtaData, F> {
        let part = *self
            .table
            .otadata()
            .ok_or(Error::from(UpdateError::NoOtaData))?;
        let mut io = Io::new(&mut *self.flash);
        OtaData::read(&mut io, &part).map_err(|e| io.lift(e))
    }

    fn out_of_order(&self, call: Call) -> UpdaterError<F::Error> {
        UpdaterError::OutOfOrder {
            call,
            phase: self.phase,
        }
    }

    fn expect(&self, call: Call, phase: Phase) -> Res<(), F> {
        if self.phase == phase {
            Ok(())
        } else {
            Err(self.out_of_order(call))
        }
    }

    /// `mark_valid` / `mark_invalid` act on otadata's active entry (as ESP-IDF does): refuse
    /// when that entry is not the running app's.
    fn check_selected(&mut self, call: Call) -> Res<(), F> {
        if self.phase == Phase::Committed {
            return Err(self.out_of_order(call));
        }
        let selected = self
            .otadata()?
            .boot_slot(self.table.ota_count())
            .and_then(Slot::new);
        let running = AppKind::from_subtype(self.running.subtype);
        if selected.is_some() && selected != running.slot() {
            return Err(UpdaterError::NotSelected { running, selected });
        }
        Ok(())
    }
}

/// With rollback, the bootloader turns the otadata entry it selects from NEW into
/// PENDING_VERIFY before anything else (`bootloader_utility.c`, see [`crate::boot`]): an active
/// entry still NEW was committed by an update since this boot and has never booted. Its sector
/// (absolute range), to be read as erased by the dry run, so that it finds what did boot.
fn committed_since_boot<F: NorFlash>(
    io: &mut Io<'_, F>,
    table: &PartitionTable,
) -> Res<Option<(u32, u32)>, F> {
    let Some(part) = table.otadata().copied() else {
        return Ok(None);
    };
    let od = OtaData::read(io, &part).map_err(|e| io.lift(e))?;
    Ok(od
        .active()
        .filter(|&a| od.entries[a].state() == OtaState::New)
        .map(|a| {
            let start = part.offset + a as u32 * OTADATA_SECTOR_SIZE;
            (start, start + OTADATA_SECTOR_SIZE)
        }))
}

fn read_table<F: NorFlash>(
    flash: &mut F,
    cfg: &UpdaterConfig,
    buf: &mut [u8; TABLE_MAX_LEN],
) -> Res<PartitionTable, F> {
    let mut io = Io::new(flash);
    crate::flash::read(&mut io, cfg.table_offset, buf).map_err(|e| io.lift(e.into()))?;
    let chip_size = u32::try_from(io.capacity()).unwrap_or(u32::MAX);
    PartitionTable::parse(buf, ReadRule::Bootloader { chip_size })
        .map_err(|e| UpdaterError::Core(e.into()))
}

/// One `write` of an update: the length bound, the prefix and its checks, the slot.
fn write_update<F: NorFlash>(flash: &mut F, u: &mut Update, chunk: &[u8]) -> Res<(), F> {
    let received = u.received + chunk.len() as u64;
    if let Some(expected) = u.expected {
        if received > u64::from(expected) {
            return Err(UpdaterError::Length { expected, received });
        }
    }
    u.received = received;
    let mut rest = chunk;
    if !u.engine.prefix_complete() {
        let n = u.engine.feed_prefix(rest)?;
        rest = rest.get(n..).unwrap_or(&[]);
        if u.engine.prefix_complete() {
            u.engine.check_version(u.policy, u.running_desc.as_ref())?;
            u.engine.check_secure_version()?;
        }
    }
    if !rest.is_empty() {
        let mut io = Io::new(flash);
        u.engine.write(&mut io, rest).map_err(|e| io.lift(e))?;
    }
    Ok(())
}
