//! The OTA service: an upgrade list of items, each with ADF's four hooks, run in order
//! (esp-adf `ota_service.c`), with ADF's bugs fixed (README "How it maps to ESP-ADF's ota_service"): a not-newer image is *skipped* (no
//! reboot), the real failure reason is kept, and the restart happens after the list only when
//! an item that really succeeded asks for it.

use embedded_storage::nor_flash::NorFlash;
use ota_core::partition::{Partition, PartitionTable};
use ota_core::Chip;

use crate::io::{BoxFuture, Clock, Opened, Request, Transport};
use crate::prelude::*;
use crate::reason::Reason;
use crate::source::{SourceError, SourceOptions};

/// Log level, as in ESP-IDF's `I (ms) TAG: msg` lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    pub fn letter(self) -> char {
        match self {
            Level::Error => 'E',
            Level::Warn => 'W',
            Level::Info => 'I',
            Level::Debug => 'D',
        }
    }
}

/// How one item ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Nothing needed doing (for example the incoming image is not newer): not a failure, no reboot.
    Skipped {
        reason: Reason,
        message: String,
    },
    Failed {
        reason: Reason,
        message: String,
        /// The typed error the failure came from, when there is one (a source's, `ota-core`'s,
        /// the catalogue's): tests and callers match on it instead of on `message`.
        cause: Option<Cause>,
    },
}

/// The typed error under an item's failure ([`ItemError::cause`], [`Outcome::Failed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// Opening or reading the item's source (file, HTTP, the transport of a driver).
    Source(SourceError),
    /// The formats and update engines (`ota-core`): flash, image, partition, tone, otadata.
    Core(ota_core::Error),
    /// No catalogue entry fits the device.
    Pick(ota_catalogue::PickError),
    /// The device has a catalogue key and the catalogue does not verify with it.
    Catalogue(ota_catalogue::signed::VerifyError),
}

impl core::fmt::Display for Cause {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Cause::Source(e) => core::fmt::Display::fmt(e, f),
            Cause::Core(e) => core::fmt::Display::fmt(e, f),
            Cause::Pick(e) => core::fmt::Display::fmt(e, f),
            Cause::Catalogue(e) => core::fmt::Display::fmt(e, f),
        }
    }
}

impl core::error::Error for Cause {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Cause::Source(e) => Some(e),
            Cause::Core(e) => Some(e),
            Cause::Pick(_) => None,
            Cause::Catalogue(e) => Some(e),
        }
    }
}

impl Outcome {
    /// A failure with its reason and text, and no typed cause.
    pub fn failed(reason: Reason, message: impl Into<String>) -> Outcome {
        Outcome::Failed {
            reason,
            message: message.into(),
            cause: None,
        }
    }
    /// The typed error of a failure, if it has one.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            Outcome::Failed { cause, .. } => cause.as_ref(),
            _ => None,
        }
    }
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }
    /// ADF's numeric result for this outcome (a skip reports its reason, like ADF's need_upgrade).
    pub fn reason(&self) -> Reason {
        match self {
            Outcome::Success => Reason::Success,
            Outcome::Skipped { reason, .. } | Outcome::Failed { reason, .. } => *reason,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// What the service reports while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A log line (ESP-IDF style): the binary prints it, a chip would send it to the UART.
    Log {
        level: Level,
        tag: &'static str,
        message: String,
    },
    /// Item `id` starts; `item` describes it (its URI).
    Start { id: usize, item: String },
    /// Bytes of item `id` processed so far.
    Progress {
        id: usize,
        bytes: u64,
        total: Option<u64>,
    },
    /// The download of item `id` continues at byte `at` of its file instead of starting over.
    Resume {
        id: usize,
        at: u64,
        from: ResumeFrom,
    },
    /// The download of item `id` starts over from byte 0, after `at` bytes.
    StartOver {
        id: usize,
        at: u64,
        why: StartOverWhy,
    },
    /// A staged copy into item `id`'s target that a power cut interrupted is finished from
    /// step `step` of `steps` (before the item downloads anything).
    StagedCopyResume { id: usize, step: u32, steps: u32 },
    /// Item `id` accepted a signed catalogue newer than any before: the driver keeps `serial`
    /// (older catalogues are then refused as replays).
    CatalogueAccepted { id: usize, serial: u64 },
    /// Item `id` finished (ADF's `OTA_SERV_EVENT_TYPE_RESULT`).
    Result { id: usize, outcome: Outcome },
    /// The list finished and no restart is due (ADF's `OTA_SERV_EVENT_TYPE_FINISH`).
    Finish,
    /// The list finished and a successful item asked for a restart.
    Restart,
}

/// Why a download continues in the middle of its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeFrom {
    /// The connection failed or ended early; the same run asked again with `Range`/`If-Range`.
    Reconnect,
    /// A resume record in flash, left by an earlier run that was interrupted.
    Record,
}

/// Why a download starts over from byte 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOverWhy {
    /// The server answered 200 to a `Range` request (it does not do ranges).
    RangeIgnored,
    /// The file changed (another validator or length) since the download started.
    FileChanged,
    /// The server has no byte at the requested start (416).
    RangeNotSatisfiable,
    /// The image put together from a resumed download does not verify.
    ResumedImageInvalid,
}

/// An item's failure or refusal: the ADF reason, what went wrong with its context, and the typed
/// error it came from when there is one (`cause`, also [`core::error::Error::source`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemError {
    pub reason: Reason,
    pub message: String,
    pub cause: Option<Cause>,
}

impl ItemError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ItemError {
            reason,
            message: message.into(),
            cause: None,
        }
    }
    /// The same error, carrying the typed error it came from.
    pub fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = Some(cause);
        self
    }
    /// The item's outcome for this error.
    pub fn into_outcome(self) -> Outcome {
        Outcome::Failed {
            reason: self.reason,
            message: self.message,
            cause: self.cause,
        }
    }
}

impl core::fmt::Display for ItemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} [{}]", self.message, self.reason)
    }
}

impl core::error::Error for ItemError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        self.cause
            .as_ref()
            .map(|c| c as &(dyn core::error::Error + 'static))
    }
}

/// `need_upgrade`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    Yes,
    /// Skip this item (reason, explanation).
    No(Reason, String),
}

/// The device an upgrade list runs against: its flash, partition table, chip and running app.
pub struct Device<'a, F: NorFlash> {
    pub flash: &'a mut F,
    pub table: &'a PartitionTable,
    pub chip: Chip,
    /// The app partition that is running (what the bootloader booted).
    pub running: Option<Partition>,
    /// Commit new apps as NEW (bootloader rollback enabled).
    pub rollback: bool,
    /// Anti-rollback enabled, with this eFuse secure-version counter: app images with a lower
    /// `secure_version` are refused (esp-idf `bootloader_utility.c`, `esp_efuse_fields.c`). None: disabled.
    pub anti_rollback: Option<u32>,
    /// Where the partition table is (`CONFIG_PARTITION_TABLE_OFFSET`, default
    /// [`ota_core::partition::TABLE_OFFSET`]): no item writes it or the bootloader below it.
    pub table_offset: u32,
    /// The flash chip size, when known: no item writes beyond it.
    pub flash_size: Option<u32>,
    /// Secure Boot v2 / signed apps: the signatures a new app must carry
    /// (`ota_core::secure_boot::AppSignatures`; data and tone items are not affected).
    pub signatures: ota_core::secure_boot::AppSignatures,
}

impl<'a, F: NorFlash> Device<'a, F> {
    /// What an item may not write on this device ([`ota_core::guard`]).
    pub fn flash_map(&self) -> ota_core::guard::FlashMap<'a> {
        ota_core::guard::FlashMap::new(self.table, self.chip, self.running.as_ref())
            .with_table_offset(self.table_offset)
            .with_flash_size(self.flash_size)
    }
}

/// Everything else an item needs: the driver's transport and clock, the source options, the
/// event sink. The transport and the clock are the service's only I/O.
pub struct Env<'a> {
    pub transport: &'a dyn Transport,
    pub clock: &'a dyn Clock,
    pub source: SourceOptions,
    pub events: &'a mut dyn FnMut(Event),
}

impl Env<'_> {
    /// Opens what `req` asks for through the transport. Past the item's deadline nothing is
    /// opened: [`SourceError::DeadlineExceeded`].
    pub async fn open(&self, req: Request<'_>) -> Result<Opened, SourceError> {
        if let Some(d) = req.opts.deadline {
            if self.clock.now_ms() >= d {
                return Err(SourceError::DeadlineExceeded {
                    uri: req.uri.to_string(),
                    phase: crate::source::Phase::Open,
                    max_time: req.opts.max_time,
                });
            }
        }
        self.transport.open(req).await
    }
    /// Waits `ms` on the driver's clock.
    pub async fn sleep_ms(&self, ms: u64) {
        self.clock.sleep_ms(ms).await
    }
    pub fn log(&mut self, level: Level, tag: &'static str, message: impl Into<String>) {
        (self.events)(Event::Log {
            level,
            tag,
            message: message.into(),
        })
    }
    pub fn info(&mut self, tag: &'static str, message: impl Into<String>) {
        self.log(Level::Info, tag, message)
    }
    pub fn warn(&mut self, tag: &'static str, message: impl Into<String>) {
        self.log(Level::Warn, tag, message)
    }
    pub fn error(&mut self, tag: &'static str, message: impl Into<String>) {
        self.log(Level::Error, tag, message)
    }
    pub fn emit(&mut self, event: Event) {
        (self.events)(event)
    }
}

/// One entry of the upgrade list: ADF's `ota_upgrade_ops_t` as a trait (esp-adf `ota_service.h`).
///
/// The hooks are async (boxed futures, so that a list holds items of any kind as
/// `Box<dyn UpgradeItem<F>>`): their I/O goes through `env.transport` and `env.clock` only.
pub trait UpgradeItem<F: NorFlash> {
    /// A short description (the URI) for logs.
    fn describe(&self) -> String;
    /// Open the source, find the target. Nothing is written.
    fn prepare<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<(), ItemError>>;
    /// Decide from the first bytes whether to go on. Nothing is erased before this says yes.
    fn need_upgrade<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<Need, ItemError>>;
    /// Copy the data.
    fn execute<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<(), ItemError>>;
    /// Clean up and give the verdict; called on every path after the hooks ran. The default keeps
    /// the result it is given (fixing ADF's app finish, which ignored it).
    fn finished_check<'a>(
        &'a mut self,
        _dev: &'a mut Device<'_, F>,
        _env: &'a mut Env<'_>,
        _id: usize,
        result: Outcome,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(core::future::ready(result))
    }
    /// Restart after the list when this item succeeded (ADF `reboot_flag`).
    fn reboot(&self) -> bool;
    /// Stop the list when this item fails (ADF `break_after_fail`).
    fn break_after_fail(&self) -> bool;
}

const TAG: &str = "OTA_SERVICE";

/// What a run of the list produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// `(id, outcome)` of every item that ran, in order.
    pub results: Vec<(usize, Outcome)>,
    /// A successful item asked for a restart.
    pub restart: bool,
}

/// `ota_service_process` for one item (esp-adf `ota_service.c`).
pub async fn process_item<F: NorFlash>(
    item: &mut dyn UpgradeItem<F>,
    dev: &mut Device<'_, F>,
    env: &mut Env<'_>,
    id: usize,
) -> Outcome {
    let result = match item.prepare(dev, env, id).await {
        Err(e) => {
            env.error(TAG, "OTA prepared fail");
            e.into_outcome()
        }
        Ok(()) => match item.need_upgrade(dev, env, id).await {
            Err(e) => {
                env.error(TAG, "No need to upgrade");
                e.into_outcome()
            }
            Ok(Need::No(reason, message)) => {
                env.warn(TAG, format!("No need to upgrade: {}", message));
                Outcome::Skipped { reason, message }
            }
            Ok(Need::Yes) => match item.execute(dev, env, id).await {
                Err(e) => {
                    env.error(TAG, "Fail to execute upgrade");
                    e.into_outcome()
                }
                Ok(()) => Outcome::Success,
            },
        },
    };
    item.finished_check(dev, env, id, result).await
}

/// Run the list in order (the service task's START state, esp-adf `ota_service.c`): a Result event
/// per item, a break after a failed `break_after_fail` item, then Restart (a successful item
/// with `reboot`) or Finish. The std driver's blocking `run_list` runs this with
/// [`crate::io::block_on`].
pub async fn run_list_async<F: NorFlash>(
    items: &mut [Box<dyn UpgradeItem<F> + '_>],
    dev: &mut Device<'_, F>,
    env: &mut Env<'_>,
) -> RunReport {
    let mut report = RunReport::default();
    for (id, item) in items.iter_mut().enumerate() {
        env.emit(Event::Start {
            id,
            item: item.describe(),
        });
        let outcome = process_item(item.as_mut(), dev, env, id).await;
        let failed = matches!(outcome, Outcome::Failed { .. });
        if outcome.is_success() && item.reboot() {
            report.restart = true;
        }
        report.results.push((id, outcome.clone()));
        env.emit(Event::Result { id, outcome });
        if failed && item.break_after_fail() {
            env.error(
                TAG,
                format!("upgrade_list[{}] OTA failed, break the update list", id),
            );
            break;
        }
    }
    env.warn(TAG, "OTA_END!");
    if report.restart {
        env.warn(TAG, "restart!");
        env.emit(Event::Restart);
    } else {
        env.emit(Event::Finish);
    }
    report
}
