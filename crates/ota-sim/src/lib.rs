//! `ota-sim`: an emulated device running the OTA service, the life of a board in one place.
//!
//! Power-on is the 2nd-stage bootloader's selection ([`ota_core::boot::boot`], esp-idf
//! `components/bootloader_support/src/bootloader_utility.c`) with the board's options; the app
//! it starts may check itself and confirm (`esp_ota_mark_app_valid_cancel_rollback`) or give up
//! (`esp_ota_mark_app_invalid_rollback_and_reboot`, esp-idf `components/app_update/
//! esp_ota_ops.c`); then `app_main` runs the OTA service's upgrade list
//! ([`ota_service::run_list`], esp-adf `components/ota_service/ota_service.c`) and, when an item
//! asks for it, the board restarts and boots again. `ota device run`, `ota fleet-sim` and the
//! power-cut harness all run a device through [`run`]; what each prints or decides around it
//! is a [`Hooks`] implementation.
//!
//! The flash is any `NorFlash` (the emulator's, a recording wrapper, a chip's); the crate does
//! no I/O of its own, and reaches the service only through `run_list`.

use embedded_storage::nor_flash::NorFlash;
use ota_core::boot::{self, BootConfig, BootEvent, BootOutcome};
use ota_core::otadata::OtaState;
use ota_core::partition::PartitionTable;
use ota_core::{update, Chip};
use ota_service::config::Config;
use ota_service::source::{SdCardFs, SourceOptions};
use ota_service::{Event, RunReport, UpgradeItem};

mod run_async;
pub use run_async::{run_async, AsyncSources};

/// App slots a partition table can name: `ota_0` .. `ota_15` (app subtypes
/// `ESP_PARTITION_SUBTYPE_APP_OTA_MIN` 0x10 .. `_MAX` 0x1F, esp-idf
/// `components/esp_partition/include/esp_partition.h`), factory and test.
const MAX_APP_SLOTS: usize = 16 + 2;
/// Boots in a row a single power-on may take: each explicit rollback restarts the board and
/// marks one more app slot INVALID, so the table's app slots bound it.
pub const MAX_BOOTS_PER_POWER_ON: usize = MAX_APP_SLOTS;

/// What the board is, besides its flash.
#[derive(Clone, Debug)]
pub struct Board {
    pub table: PartitionTable,
    pub chip: Chip,
    /// The bootloader's options and the eFuse counter. Every boot and every confirmation
    /// updates `efuse_secure_version` (eFuses only go up).
    pub boot: BootConfig,
    /// Where the partition table is (`CONFIG_PARTITION_TABLE_OFFSET`): no item writes it.
    pub table_offset: u32,
    /// The flash chip size, when known: no item writes beyond it.
    pub flash_size: Option<u32>,
    /// The signatures the app demands of an update (Secure Boot v2 or signed apps); the
    /// bootloader's side is `boot.secure_boot`.
    pub signatures: ota_core::secure_boot::AppSignatures,
}

impl Board {
    /// A board with the table at its default offset
    /// ([`ota_core::partition::TABLE_OFFSET`], where the emulated bootloader reads it).
    pub fn new(table: PartitionTable, chip: Chip, boot: BootConfig) -> Board {
        Board {
            table,
            chip,
            boot,
            table_offset: ota_core::partition::TABLE_OFFSET,
            flash_size: None,
            signatures: ota_core::secure_boot::AppSignatures::NotChecked,
        }
    }

    /// The eFuse counter the app-side anti-rollback checks compare with, when it is on.
    pub fn anti_rollback(&self) -> Option<u32> {
        self.boot
            .anti_rollback
            .then_some(self.boot.efuse_secure_version)
    }
}

/// What a freshly started app does about itself while it is PENDING_VERIFY (only a
/// bootloader with rollback leaves it so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// Nothing yet: the app stays PENDING_VERIFY, and the next boot rolls it back.
    Undecided,
    /// Its self-test passed: `esp_ota_mark_app_valid_cancel_rollback`.
    Confirm,
    /// Its self-test failed: `esp_ota_mark_app_invalid_rollback_and_reboot`.
    RollBack,
}

/// What a caller prints, records or decides around the wiring. Every method has a default
/// that does nothing (and keeps an app undecided).
pub trait Hooks {
    /// What the caller's own steps can fail with.
    type Error;

    /// The board is about to boot (the bootloader's banner).
    fn powering_on(&mut self, _board: &Board) -> Result<(), Self::Error> {
        Ok(())
    }
    /// One event of the bootloader's selection.
    fn boot_event(&mut self, _ev: &BootEvent) {}
    /// The bootloader started an app (`board.boot` already holds the eFuse it left).
    fn booted(&mut self, _out: &BootOutcome, _board: &Board) -> Result<(), Self::Error> {
        Ok(())
    }
    /// The app runs PENDING_VERIFY: confirm, roll back or wait.
    fn self_test(&mut self, _out: &BootOutcome) -> SelfTest {
        SelfTest::Undecided
    }
    /// The app confirmed itself (`board.boot` already holds the eFuse the confirmation left).
    fn confirmed(&mut self, _done: &update::MarkedValid) {}
    /// The app marked itself invalid (otadata entry `index`); the board restarts.
    fn rolled_back(&mut self, _index: usize) {}
    /// `app_main`, once the first boot of the power-on started the app, before the service.
    fn app_main(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// The upgrade list is built; the OTA service starts.
    fn service_start(&mut self) {}
    /// An event of the OTA service.
    fn event(&mut self, _ev: Event) {}
    /// The service returned its report (before a restart, if it asked for one).
    fn service_done(&mut self, _report: &RunReport) {}
    /// An item asked for a restart: the board restarts now.
    fn restarting(&mut self) {}
}

/// Hooks that print nothing and leave every app undecided.
pub struct Quiet;

impl Hooks for Quiet {
    type Error = core::convert::Infallible;
}

/// Why a device could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error<E> {
    /// The bootloader found nothing to boot, or could not read the flash.
    #[error("{0}")]
    Boot(ota_core::Error),
    /// The upgrade list could not be built from the config.
    #[error("{0}")]
    Config(String),
    /// `esp_ota_mark_app_valid_cancel_rollback` failed.
    #[error("esp_ota_mark_app_valid_cancel_rollback failed: {0}")]
    Confirm(ota_core::Error),
    /// `esp_ota_mark_app_invalid_rollback_and_reboot` failed.
    #[error("esp_ota_mark_app_invalid_rollback_and_reboot failed: {0}")]
    Rollback(ota_core::Error),
    /// The board kept restarting: every boot's app rolled itself back.
    #[error("the board restarted {0} times in one power-on: every app rolled itself back")]
    BootLoop(usize),
    /// A step of the caller (its [`Hooks`]).
    #[error(transparent)]
    Hook(E),
}

impl<E> Error<E> {
    /// The bootloader's error, when nothing could boot.
    pub fn boot_error(&self) -> Option<&ota_core::boot::BootError> {
        match self {
            Error::Boot(ota_core::Error::Boot(b)) => Some(b),
            _ => None,
        }
    }
}

/// The upgrade list: from a config, or items the caller built.
pub enum UpgradeList<'a, F: NorFlash> {
    /// Built once the app started (a config error fails the run after the first boot).
    Config(&'a Config),
    Items(Vec<Box<dyn UpgradeItem<F> + 'a>>),
}

/// Where the service's sources come from.
#[derive(Clone, Default)]
pub struct Sources<'a> {
    /// The SD card, for `file://sdcard/...` URIs.
    pub sd: Option<&'a dyn SdCardFs>,
    pub options: SourceOptions,
}

/// What a run did.
#[derive(Debug)]
pub struct Run {
    /// What the power-on booted (and what the service ran on).
    pub first: BootOutcome,
    pub report: RunReport,
    /// What booted after the restart, if an item asked for one.
    pub after_restart: Option<BootOutcome>,
}

impl Run {
    /// What runs at the end.
    pub fn running(&self) -> &BootOutcome {
        self.after_restart.as_ref().unwrap_or(&self.first)
    }
}

fn boot_once<F: NorFlash, H: Hooks>(
    flash: &mut F,
    board: &mut Board,
    hooks: &mut H,
) -> Result<BootOutcome, Error<H::Error>> {
    hooks.powering_on(board).map_err(Error::Hook)?;
    let out = boot::boot(flash, &board.table, board.chip, &board.boot, &mut |ev| {
        hooks.boot_event(&ev)
    })
    .map_err(Error::Boot)?;
    board.boot.efuse_secure_version = board
        .boot
        .efuse_secure_version
        .max(out.efuse_secure_version);
    hooks.booted(&out, board).map_err(Error::Hook)?;
    Ok(out)
}

/// Power the board on: the bootloader, then the app's self-test while it is PENDING_VERIFY
/// (a rollback restarts the board and boots again). Returns what runs.
pub fn power_on<F: NorFlash, H: Hooks>(
    flash: &mut F,
    board: &mut Board,
    hooks: &mut H,
) -> Result<BootOutcome, Error<H::Error>> {
    for _ in 0..MAX_BOOTS_PER_POWER_ON {
        let out = boot_once(flash, board, hooks)?;
        if out.ota_state != Some(OtaState::PendingVerify) {
            return Ok(out);
        }
        match hooks.self_test(&out) {
            SelfTest::Undecided => return Ok(out),
            SelfTest::Confirm => {
                confirm(flash, board, hooks)?;
                return Ok(out);
            }
            SelfTest::RollBack => {
                let index = update::mark_app_invalid_rollback(
                    flash,
                    &board.table,
                    board.chip,
                    board.anti_rollback(),
                )
                .map_err(Error::Rollback)?;
                hooks.rolled_back(index);
                hooks.restarting();
            }
        }
    }
    Err(Error::BootLoop(MAX_BOOTS_PER_POWER_ON))
}

/// The running app confirms itself (`esp_ota_mark_app_valid_cancel_rollback`); with
/// anti-rollback the eFuse takes its `secure_version`.
pub fn confirm<F: NorFlash, H: Hooks>(
    flash: &mut F,
    board: &mut Board,
    hooks: &mut H,
) -> Result<update::MarkedValid, Error<H::Error>> {
    let done = update::mark_app_valid_cancel_rollback(
        flash,
        &board.table,
        board.chip,
        board.anti_rollback(),
    )
    .map_err(Error::Confirm)?;
    if let Some(v) = done.efuse_secure_version {
        board.boot.efuse_secure_version = board.boot.efuse_secure_version.max(v);
    }
    hooks.confirmed(&done);
    Ok(done)
}

/// A power-on of the device: boot, `app_main`, the upgrade list, and if an item asks for it
/// the restart and the boot after it. The list runs on the std driver
/// ([`ota_service::run_list`]) with `sources`.
pub fn run<'a, F: NorFlash, H: Hooks>(
    flash: &mut F,
    board: &mut Board,
    list: UpgradeList<'a, F>,
    sources: Sources<'_>,
    hooks: &mut H,
) -> Result<Run, Error<H::Error>> {
    let mut std_service = |items: &mut [Box<dyn UpgradeItem<F> + '_>],
                           device: &mut ota_service::Device<'_, F>,
                           events: &mut dyn FnMut(Event)| {
        let mut env = ota_service::Env {
            sd: sources.sd,
            source: sources.options.clone(),
            events,
        };
        ota_service::run_list(items, device, &mut env)
    };
    run_with_service(flash, board, list, &mut std_service, hooks)
}

/// How a device runs its upgrade list: the items, the device, the event sink; the report.
/// [`run`] uses the std driver; another driver (embassy-net's, in `ota device run --stack
/// embassy`) runs `ota_service::run_list_async` on its own transport and clock.
pub type Service<'s, F> = dyn FnMut(
        &mut [Box<dyn UpgradeItem<F> + '_>],
        &mut ota_service::Device<'_, F>,
        &mut dyn FnMut(Event),
    ) -> RunReport
    + 's;

/// [`run`] with the list run by `service`.
pub fn run_with_service<'a, F: NorFlash, H: Hooks>(
    flash: &mut F,
    board: &mut Board,
    list: UpgradeList<'a, F>,
    service: &mut Service<'_, F>,
    hooks: &mut H,
) -> Result<Run, Error<H::Error>> {
    let first = power_on(flash, board, hooks)?;
    hooks.app_main().map_err(Error::Hook)?;
    let mut items = match list {
        UpgradeList::Config(config) => {
            ota_service::items::from_config::<F>(config).map_err(Error::Config)?
        }
        UpgradeList::Items(items) => items,
    };
    hooks.service_start();
    let report = {
        let mut device = ota_service::Device {
            flash: &mut *flash,
            table: &board.table,
            chip: board.chip,
            running: Some(first.partition),
            rollback: board.boot.rollback,
            anti_rollback: board.anti_rollback(),
            table_offset: board.table_offset,
            flash_size: board.flash_size,
            signatures: board.signatures,
        };
        let mut on_event = |ev: Event| hooks.event(ev);
        service(&mut items, &mut device, &mut on_event)
    };
    hooks.service_done(&report);
    let after_restart = if report.restart {
        hooks.restarting();
        Some(power_on(flash, board, hooks)?)
    } else {
        None
    };
    Ok(Run {
        first,
        report,
        after_restart,
    })
}
