//! [`run_async`]: the same power-on as [`crate::run`], with the OTA service run as a future
//! ([`ota_service::run_list_async`]) over a caller's [`Transport`] and [`Clock`], so that many
//! devices can share one executor (the fleet simulation) or a chip's executor runs it.
//!
//! The boot, the app's self-test and its confirmation or rollback are [`crate::power_on`]'s,
//! shared with [`crate::run`]; only the service in the middle is awaited instead of blocked on.

use embedded_storage::nor_flash::NorFlash;
use ota_service::io::{Clock, Transport};
use ota_service::source::SourceOptions;
use ota_service::Event;

use crate::{power_on, Board, Error, Hooks, Run, UpgradeList};

/// The service's I/O for an async run: the transport its items open sources with, the clock
/// of their deadlines and backoff, and the source options.
#[derive(Clone, Copy)]
pub struct AsyncSources<'a> {
    pub transport: &'a dyn Transport,
    pub clock: &'a dyn Clock,
    pub options: &'a SourceOptions,
}

/// A power-on of the device, as [`crate::run`]: boot, `app_main`, the upgrade list (awaited),
/// and if an item asks for it the restart and the boot after it.
pub async fn run_async<'a, F: NorFlash, H: Hooks>(
    flash: &mut F,
    board: &mut Board,
    list: UpgradeList<'a, F>,
    sources: AsyncSources<'_>,
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
        let mut env = ota_service::AsyncEnv {
            transport: sources.transport,
            clock: sources.clock,
            source: sources.options.clone(),
            events: &mut on_event,
        };
        ota_service::run_list_async(&mut items, &mut device, &mut env).await
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
