//! The app item: download an app image into the next OTA slot, verify it, switch otadata
//! (ADF's `ota_app_get_default_proc` over `esp_https_ota`/`esp_fs_ota`, adf-ota-service.md §4).
//!
//! Downloads survive bad links and restarts: a failed read is retried (with backoff) from the
//! byte where it stopped, and over HTTP(S) a resume record in flash (`ota_core::resume`) lets
//! the next run continue with `Range` / `If-Range` from the last verified checkpoint.

use embedded_storage::nor_flash::NorFlash;
use ota_core::image::{AppDesc, IMAGE_PREFIX_LEN};
use ota_core::partition::Partition;
use ota_core::resume::{self, LogPlace, ResumeHeader, ResumeLog, ResumeRecord, Validator};
use ota_core::update::{next_update_slot, AppUpdate, AppUpdateConfig, UpdateError};
use ota_core::version::VersionPolicy;

use super::{core_error, source_error, Progress};
use crate::reason::Reason;
use crate::service::{Device, Env, ItemError, Need, UpgradeItem};
use crate::source::{
    self, RangeOpen, RetryPolicy, Scheme, Source, SourceError, SourceOptions, TransferLimits,
    HTTP_RANGE_NOT_SATISFIABLE,
};

const TAG_OTA: &str = "esp_https_ota";
const TAG_DEFAULT: &str = "OTA_DEFAULT";
/// Bytes per flash write: one 4 KiB sector (idf-formats.md §2.8), aligned to sector
/// boundaries, so a checkpoint follows every write and at most one chunk is fetched again
/// after a restart.
pub const CHUNK: usize = 4096;

/// An app upgrade item.
pub struct AppItem {
    pub uri: String,
    pub policy: VersionPolicy,
    /// Pinned CA certificate (PEM), like ADF's `cert_pem`.
    pub ca_pem: Option<Vec<u8>>,
    /// Transfer bounds (rate rule, overall deadline); None: the run's (`Env::source`).
    pub limits: Option<TransferLimits>,
    pub reboot: bool,
    pub break_after_fail: bool,
    /// How often a failed download is tried again, and the backoff between attempts.
    pub retry: RetryPolicy,
    /// Keep a resume record in flash so that an interrupted HTTP(S) download continues where
    /// it stopped on the next run (default: on).
    pub resume: bool,
    /// Wraps the source once it is opened (the catalogue item checks size and SHA-256 this
    /// way: its wrapper fails the read that would end the stream, so `finish` never runs).
    /// A wrapped download sees the whole stream from byte 0, so it is neither retried from the
    /// middle nor resumed.
    pub wrap_source: Option<SourceWrapper>,
    run: Option<Run>,
}

/// See [`AppItem::wrap_source`].
pub type SourceWrapper = Box<dyn Fn(Box<dyn Source>) -> Box<dyn Source>>;

struct Run {
    fetch: Fetch,
    engine: AppUpdate,
    log: Option<ResumeLog>,
}

impl AppItem {
    pub fn new(uri: impl Into<String>) -> Self {
        AppItem {
            uri: uri.into(),
            policy: VersionPolicy::None,
            ca_pem: None,
            limits: None,
            reboot: true,
            break_after_fail: false,
            retry: RetryPolicy::default(),
            resume: true,
            wrap_source: None,
            run: None,
        }
    }

    /// The retry policy in force: none for a wrapped source (see [`AppItem::wrap_source`]).
    fn retry_policy(&self) -> RetryPolicy {
        match self.wrap_source {
            Some(_) => RetryPolicy {
                retries: 0,
                ..self.retry
            },
            None => self.retry,
        }
    }

    /// Whether this download keeps and uses a resume record.
    fn resumable(&self) -> bool {
        self.resume && self.wrap_source.is_none()
    }

    fn options(&self, env: &Env<'_>) -> SourceOptions {
        super::item_source_options(env, &self.ca_pem, self.limits)
    }

    fn is_http(&self) -> bool {
        matches!(
            Scheme::of(&self.uri),
            Some(Scheme::Http) | Some(Scheme::Https)
        )
    }

    /// Keep a resume log for a fresh download when the source allows it (HTTP(S) with a
    /// validator, and room for the log); otherwise only forget an old record at the first write.
    fn setup_journal(
        &self,
        engine: &mut AppUpdate,
        fetch: &Fetch,
        log: Option<ResumeLog>,
        env: &mut Env<'_>,
    ) -> Result<(), ota_core::Error> {
        let Some(log) = log else { return Ok(()) };
        let slot = *engine.slot();
        let total = fetch.total.and_then(|t| u32::try_from(t).ok());
        match (self.is_http(), fetch.validator) {
            (true, Some(v)) => {
                let mut h = ResumeHeader::new(&slot, &self.uri, v, total.unwrap_or(0));
                if total.is_none() {
                    h.step = resume::step_for(log.image_limit());
                }
                match engine.enable_resume(log, h, fetch.total) {
                    Ok(()) => {
                        env.info(
                            TAG_OTA,
                            format!(
                            "Resume record at 0x{:x} ({}), checkpoint every {} bytes, validator {}",
                            log.region().offset,
                            place_name(log.place()),
                            h.step,
                            v.as_str()
                        ),
                        );
                        Ok(())
                    }
                    Err(e) => {
                        env.warn(
                            TAG_OTA,
                            format!("No resume record for this download: {}", e),
                        );
                        engine.discard_resume_record(log)
                    }
                }
            }
            (true, None) => {
                env.warn(
                    TAG_OTA,
                    "The server sent no ETag or Last-Modified: an interrupted download will start over",
                );
                engine.discard_resume_record(log)
            }
            (false, _) => engine.discard_resume_record(log),
        }
    }

    /// A fresh engine for the file `fetch` now serves from byte 0: read and check the prefix,
    /// apply the version policy, start the resume log.
    fn start_over<F: NorFlash>(
        &self,
        dev: &mut Device<'_, F>,
        fetch: &mut Fetch,
        log: Option<ResumeLog>,
        env: &mut Env<'_>,
    ) -> Result<AppUpdate, ItemError> {
        let prefix = read_prefix(fetch, env, &self.uri)?;
        let mut engine = self.begin(dev, fetch, log, env)?;
        engine
            .feed_prefix(&prefix)
            .map_err(|e| core_error(e, &self.uri))?;
        check_secure_version(&engine, env, &self.uri)?;
        let running = running_desc(dev);
        engine
            .check_version(self.policy, running.as_ref())
            .map_err(|e| core_error(e, &self.uri))?;
        Ok(engine)
    }

    fn begin<F: NorFlash>(
        &self,
        dev: &mut Device<'_, F>,
        fetch: &Fetch,
        log: Option<ResumeLog>,
        env: &mut Env<'_>,
    ) -> Result<AppUpdate, ItemError> {
        let cfg = app_config(dev);
        let mut engine = AppUpdate::begin(dev.table, dev.running.as_ref(), cfg, fetch.total)
            .map_err(|e| match e {
                e @ ota_core::Error::Update(UpdateError::Guard(_)) => refused(e, &self.uri, env),
                e => core_error(e, &self.uri),
            })?;
        engine.set_anti_rollback(dev.anti_rollback);
        self.setup_journal(&mut engine, fetch, log, env)
            .map_err(|e| core_error(e, &self.uri))?;
        Ok(engine)
    }

    /// Continue the download a resume record describes. `Ok(Err(fetch))`: the server sent the
    /// whole file instead (it ignored `Range`, or the file changed): start over with it.
    /// `Ok(Ok(None))`: the record cannot be used; start over with a new request.
    #[allow(clippy::too_many_arguments)]
    fn try_resume<F: NorFlash>(
        &self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        opts: &SourceOptions,
        log: ResumeLog,
        rec: ResumeRecord,
        used: &mut u32,
    ) -> Result<Result<Option<Run>, Fetch>, ItemError> {
        let n = rec.progress as u64;
        let v = rec.header.validator;
        env.info(
            TAG_OTA,
            format!(
                "Resume record: {} bytes of {} already written to partition at 0x{:x}; asking for bytes={}- (If-Range: {})",
                n,
                self.uri,
                rec.header.slot_offset,
                n,
                v.as_str()
            ),
        );
        let opened = open_with_retries(
            &self.uri,
            n,
            Some(v.as_str()),
            opts,
            self.retry_policy(),
            used,
            env,
        );
        let r = match opened {
            Ok(r) => r,
            Err(
                SourceError::HttpStatus {
                    status: HTTP_RANGE_NOT_SATISFIABLE,
                    ..
                }
                | SourceError::RangeNotSatisfiable { .. },
            ) => {
                env.warn(
                    TAG_OTA,
                    format!("The server has no byte {}: starting over from byte 0", n),
                );
                return Ok(Ok(None));
            }
            Err(e) => {
                env.error(TAG_DEFAULT, "ESP HTTPS OTA Begin failed");
                return Err(source_error(e));
            }
        };
        let mut fetch = Fetch::new(self, opts.clone(), r, n, Some(v), *used);
        if !fetch.honoured {
            env.warn(
                TAG_OTA,
                "The server answered 200 to the Range request (Range not supported, or the file changed): starting over from byte 0",
            );
            return Ok(Err(fetch));
        }
        if fetch.changed {
            env.warn(
                TAG_OTA,
                "The file changed since the download started: starting over from byte 0",
            );
            return Ok(Ok(None));
        }
        let cfg = app_config(dev);
        match AppUpdate::resume(dev.flash, dev.table, dev.running.as_ref(), cfg, log, rec) {
            Ok(mut engine) => {
                engine.set_anti_rollback(dev.anti_rollback);
                env.info(
                    TAG_OTA,
                    format!(
                        "Resuming download at byte {}: the {} bytes already written verify so far",
                        n, n
                    ),
                );
                fetch.used = *used;
                Ok(Ok(Some(Run {
                    fetch,
                    engine,
                    log: Some(log),
                })))
            }
            // The table lets the update write outside its slot: no fresh start either.
            Err(e @ ota_core::Error::Update(UpdateError::Guard(_))) => {
                Err(refused(e, &self.uri, env))
            }
            Err(e) => {
                env.warn(
                    TAG_OTA,
                    format!(
                        "The bytes already written cannot be resumed ({}): starting over from byte 0",
                        e
                    ),
                );
                Ok(Ok(None))
            }
        }
    }
}

/// The engine settings for this device: chip, rollback, and where the table is and how large
/// the flash is (what the update must not write, `ota_core::guard`).
fn app_config<F: NorFlash>(dev: &Device<'_, F>) -> AppUpdateConfig {
    AppUpdateConfig {
        chip: dev.chip,
        rollback: dev.rollback,
        table_offset: dev.table_offset,
        flash_size: dev.flash_size,
    }
}

/// An update the guard refused (it would write outside its slot): logged as `esp_ota_begin`
/// fails with `ESP_ERR_OTA_PARTITION_CONFLICT`.
fn refused(e: ota_core::Error, uri: &str, env: &mut Env<'_>) -> ItemError {
    env.error(
        TAG_DEFAULT,
        "esp_ota_begin failed (ESP_ERR_OTA_PARTITION_CONFLICT)",
    );
    core_error(e, uri)
}

/// Anti-rollback (idf-formats.md §2.7) on the incoming descriptor, before anything is written.
fn check_secure_version(engine: &AppUpdate, env: &mut Env<'_>, uri: &str) -> Result<(), ItemError> {
    engine.check_secure_version().map_err(|e| {
        env.error(
            TAG_DEFAULT,
            "New firmware security version is less than eFuse programmed",
        );
        core_error(e, uri)
    })
}

fn place_name(p: LogPlace) -> &'static str {
    match p {
        LogPlace::Partition => "partition ota_resume",
        LogPlace::SlotTail => "last sector of the target slot",
    }
}

/// The running app's descriptor (`esp_ota_get_partition_description(running)`).
pub fn running_desc<F: NorFlash>(dev: &mut Device<'_, F>) -> Option<AppDesc> {
    let part = dev.running?;
    ota_core::boot::partition_app_desc(dev.flash, &part)
}

/// Open `uri` at `start`, trying again after transient failures while `used < retries`.
fn open_with_retries(
    uri: &str,
    start: u64,
    if_range: Option<&str>,
    opts: &SourceOptions,
    retry: RetryPolicy,
    used: &mut u32,
    env: &mut Env<'_>,
) -> Result<RangeOpen, SourceError> {
    loop {
        match source::open_range_if(uri, start, if_range, env.sd, opts) {
            Ok(r) => return Ok(r),
            Err(e) if e.is_transient() && *used < retry.retries => {
                *used += 1;
                backoff(env, &e, *used, retry, start);
            }
            Err(e) => return Err(e),
        }
    }
}

fn backoff(env: &mut Env<'_>, e: &SourceError, n: u32, retry: RetryPolicy, at: u64) {
    let d = retry.delay(n);
    env.warn(
        TAG_OTA,
        format!(
            "{}; retry {} of {} in {} ms, from byte {}",
            e,
            n,
            retry.retries,
            d.as_millis(),
            at
        ),
    );
    std::thread::sleep(d);
}

/// What [`Fetch::read`] got.
enum Next {
    Data(usize),
    /// The source ended (or has nothing after the current byte).
    End,
    /// The server now sends the file from byte 0 (it ignored `Range`, or the file changed).
    Restart,
}

/// A download that reconnects: after a network failure it asks again from the byte where it
/// stopped (`Range`, `If-Range` with the validator seen first), within the retry policy.
struct Fetch {
    uri: String,
    opts: SourceOptions,
    retry: RetryPolicy,
    /// Retries used so far by this item.
    used: u32,
    source: Box<dyn Source>,
    /// File offset of the next byte `source` yields.
    pos: u64,
    validator: Option<Validator>,
    /// Length of the whole file, when known.
    total: Option<u64>,
    /// The last answer honoured the requested start.
    honoured: bool,
    /// The last answer was a 206 whose validator or length shows another file.
    changed: bool,
    /// How many times the server started the file over from byte 0.
    restarts: u32,
}

fn validator_of(r: &RangeOpen) -> Option<Validator> {
    r.validator().and_then(|(k, v)| Validator::new(k, v))
}

impl Fetch {
    /// Wrap an answer to a request for the bytes from `start`, made with `known` as `If-Range`.
    fn new(
        item: &AppItem,
        opts: SourceOptions,
        r: RangeOpen,
        start: u64,
        known: Option<Validator>,
        used: u32,
    ) -> Fetch {
        let seen = validator_of(&r);
        let source = match &item.wrap_source {
            Some(wrap) => wrap(r.source),
            None => r.source,
        };
        let mut fetch = Fetch {
            uri: item.uri.clone(),
            opts,
            retry: item.retry_policy(),
            used,
            source,
            pos: 0,
            validator: seen,
            total: r.total_length,
            honoured: r.honoured,
            changed: false,
            restarts: 0,
        };
        if r.honoured && start > 0 {
            fetch.pos = start;
            // A 206 for a file other than the one we started: the server ignored If-Range.
            fetch.changed = matches!((known, seen), (Some(k), Some(s))
                if k.kind() == s.kind() && k.as_str() != s.as_str());
            fetch.validator = known.or(seen);
        }
        fetch
    }

    fn open(
        item: &AppItem,
        opts: SourceOptions,
        used: &mut u32,
        env: &mut Env<'_>,
    ) -> Result<Fetch, SourceError> {
        let r = open_with_retries(&item.uri, 0, None, &opts, item.retry_policy(), used, env)?;
        Ok(Fetch::new(item, opts, r, 0, None, *used))
    }

    fn can_retry(&self) -> bool {
        self.used < self.retry.retries
    }

    fn read(&mut self, buf: &mut [u8], env: &mut Env<'_>) -> Result<Next, ItemError> {
        loop {
            let err = match self.source.read(buf) {
                Ok(0) => return Ok(Next::End),
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(Next::Data(n));
                }
                Err(e) => e,
            };
            if !err.is_transient() || !self.can_retry() {
                return Err(source_error(err));
            }
            self.used += 1;
            backoff(env, &err, self.used, self.retry, self.pos);
            match self.reconnect(env)? {
                Next::Data(_) => continue,
                other => return Ok(other),
            }
        }
    }

    /// Ask again from `pos` (after a failure, or after the stream ended before the image was
    /// complete). `Data`: carry on reading; `End`: the server has nothing after `pos`;
    /// `Restart`: the new source starts at byte 0.
    fn reconnect(&mut self, env: &mut Env<'_>) -> Result<Next, ItemError> {
        let if_range = self.validator.map(|v| v.as_str().to_string());
        let r = match open_with_retries(
            &self.uri,
            self.pos,
            if_range.as_deref(),
            &self.opts,
            self.retry,
            &mut self.used,
            env,
        ) {
            Ok(r) => r,
            // The file is exactly as long as what we have: nothing more to come.
            Err(SourceError::RangeNotSatisfiable { length, .. }) if length == self.pos => {
                return Ok(Next::End)
            }
            Err(
                e @ (SourceError::RangeNotSatisfiable { .. }
                | SourceError::HttpStatus {
                    status: HTTP_RANGE_NOT_SATISFIABLE,
                    ..
                }),
            ) => return self.restart_after_416(e, env),
            Err(e) => return Err(source_error(e)),
        };
        let honoured = r.honoured && self.pos > 0;
        let new_total = r.total_length;
        let seen = validator_of(&r);
        if honoured {
            let other_file = match (self.validator, seen) {
                (Some(k), Some(s)) if k.kind() == s.kind() => k.as_str() != s.as_str(),
                (Some(_), _) => false,
                // No validator: only the length can tell.
                (None, _) => matches!((self.total, new_total), (Some(a), Some(b)) if a != b),
            };
            if !other_file {
                self.source = r.source;
                if new_total.is_some() {
                    self.total = new_total;
                }
                env.info(
                    TAG_OTA,
                    format!("Reconnected: continuing at byte {}", self.pos),
                );
                return Ok(Next::Data(0));
            }
            env.warn(
                TAG_OTA,
                "The file changed during the download: starting over from byte 0",
            );
            let mut used = self.used;
            let r = open_with_retries(&self.uri, 0, None, &self.opts, self.retry, &mut used, env)
                .map_err(source_error)?;
            self.used = used;
            self.take_from_zero(r);
            return Ok(Next::Restart);
        }
        if self.pos > 0 {
            env.warn(
                TAG_OTA,
                format!(
                    "The server answered 200 to bytes={}- (Range not supported, or the file changed): starting over from byte 0",
                    self.pos
                ),
            );
        }
        self.take_from_zero(r);
        Ok(Next::Restart)
    }

    /// A 416 to `bytes=pos-` (the file changed and is shorter now, or a server that checks
    /// `Range` before `If-Range`): download the file again from byte 0, as one of the retries.
    fn restart_after_416(&mut self, e: SourceError, env: &mut Env<'_>) -> Result<Next, ItemError> {
        if !self.can_retry() {
            return Err(source_error(e));
        }
        self.used += 1;
        env.warn(
            TAG_OTA,
            format!(
                "{}: starting over from byte 0, retry {} of {}",
                e, self.used, self.retry.retries
            ),
        );
        let mut used = self.used;
        let r = open_with_retries(&self.uri, 0, None, &self.opts, self.retry, &mut used, env)
            .map_err(source_error)?;
        self.used = used;
        self.take_from_zero(r);
        Ok(Next::Restart)
    }

    fn take_from_zero(&mut self, r: RangeOpen) {
        self.validator = validator_of(&r);
        self.total = r.total_length;
        self.source = r.source;
        self.pos = 0;
        self.honoured = true;
        self.changed = false;
        self.restarts += 1;
    }
}

/// Read the first [`IMAGE_PREFIX_LEN`] bytes (from byte 0; starting again if the server
/// restarts the file). Fewer bytes mean the file is too short to be an app.
fn read_prefix(
    fetch: &mut Fetch,
    env: &mut Env<'_>,
    uri: &str,
) -> Result<[u8; IMAGE_PREFIX_LEN], ItemError> {
    let mut prefix = [0u8; IMAGE_PREFIX_LEN];
    let mut got = 0;
    while got < prefix.len() {
        match fetch.read(&mut prefix[got..], env)? {
            Next::Data(n) => got += n,
            Next::Restart => got = 0,
            Next::End => {
                env.error(TAG_DEFAULT, "get_img_desc failed");
                return Err(ItemError::new(
                    Reason::GetNewAppDescFail,
                    format!(
                        "{}: image is {} bytes, shorter than the {} bytes of header and app descriptor",
                        uri,
                        got,
                        prefix.len()
                    ),
                ));
            }
        }
    }
    Ok(prefix)
}

impl<F: NorFlash> UpgradeItem<F> for AppItem {
    fn describe(&self) -> String {
        self.uri.clone()
    }

    fn prepare(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        _id: usize,
    ) -> Result<(), ItemError> {
        if dev.rollback {
            // ESP-IDF v5.5+ esp_ota_begin: no update while the running app is unconfirmed.
            ota_core::update::check_running_confirmed(dev.flash, dev.table, dev.running.as_ref())
                .map_err(|e| {
                env.error(
                    "esp_ota_ops",
                    "Running app has not confirmed state (ESP_OTA_IMG_PENDING_VERIFY)",
                );
                core_error(e, &self.uri)
            })?;
        }
        let opts = self.options(env);
        let slot: Option<Partition> = next_update_slot(dev.table, dev.running.as_ref());
        let log = match (self.resumable(), slot) {
            (true, Some(s)) => ResumeLog::locate(dev.table, &s),
            _ => None,
        };
        let mut used = 0u32;
        let mut from_zero = None;
        if let (Some(log), Some(slot), true) = (log, slot, self.is_http()) {
            match log.read(dev.flash) {
                Ok(Some(rec)) if rec.header.is_for(&self.uri, &slot) && rec.progress > 0 => {
                    match self.try_resume(dev, env, &opts, log, rec, &mut used)? {
                        Ok(Some(run)) => {
                            env.info(TAG_OTA, "Starting OTA...");
                            self.run = Some(run);
                            return Ok(());
                        }
                        Ok(None) => {}
                        Err(fetch) => from_zero = Some(fetch),
                    }
                }
                Ok(_) => {}
                Err(e) => env.warn(
                    TAG_OTA,
                    format!("Cannot read the resume record ({}): starting over", e),
                ),
            }
        }
        let fetch = match from_zero {
            Some(f) => f,
            None => Fetch::open(self, opts, &mut used, env).map_err(|e| {
                env.error(TAG_DEFAULT, "ESP HTTPS OTA Begin failed");
                source_error(e)
            })?,
        };
        env.info(TAG_OTA, "Starting OTA...");
        let engine = self.begin(dev, &fetch, log, env)?;
        let slot = *engine.slot();
        env.info(
            TAG_OTA,
            format!(
                "Writing to partition subtype {} at offset 0x{:x}",
                slot.subtype, slot.offset
            ),
        );
        self.run = Some(Run { fetch, engine, log });
        Ok(())
    }

    fn need_upgrade(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        _id: usize,
    ) -> Result<Need, ItemError> {
        let mut run = self
            .run
            .take()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        if !run.engine.prefix_complete() {
            let restarts = run.fetch.restarts;
            let prefix = read_prefix(&mut run.fetch, env, &self.uri)?;
            if run.fetch.restarts != restarts {
                // The server restarted the file while the prefix came in: its length may differ.
                run.engine = self.begin(dev, &run.fetch, run.log, env)?;
            }
            run.engine.feed_prefix(&prefix).map_err(|e| {
                env.error(TAG_DEFAULT, "get_img_desc failed");
                let mut err = core_error(e, &self.uri);
                if err.reason == Reason::OtaValidateFailed {
                    err.reason = Reason::GetNewAppDescFail;
                }
                err
            })?;
        }
        // Anti-rollback (idf-formats.md §2.7): refuse a too-old secure_version before writing.
        if let Err(e) = check_secure_version(&run.engine, env, &self.uri) {
            self.run = Some(run);
            return Err(e);
        }
        let running = running_desc(dev);
        let incoming = run.engine.incoming_desc().copied();
        if let (Some(r), Some(i)) = (running.as_ref(), incoming.as_ref()) {
            env.info(
                TAG_DEFAULT,
                format!(
                    "Running firmware version: {}, the incoming firmware version {}",
                    r.version_str(),
                    i.version_str()
                ),
            );
        }
        let verdict = run.engine.check_version(self.policy, running.as_ref());
        self.run = Some(run);
        match verdict {
            Ok(()) => Ok(Need::Yes),
            Err(e) => {
                let err = core_error(e, &self.uri);
                if err.reason == Reason::NoHigherVersion {
                    env.warn(
                        TAG_DEFAULT,
                        "Current running version is the same as or higher than a new. We will not continue the update.",
                    );
                    Ok(Need::No(err.reason, err.message))
                } else {
                    env.error(TAG_DEFAULT, "Error version incoming");
                    Err(err)
                }
            }
        }
    }

    fn execute(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<(), ItemError> {
        let Run {
            mut fetch,
            mut engine,
            log,
        } = self
            .run
            .take()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        if dev.rollback {
            // ESP-IDF v5.5+ esp_ota_begin: the inactive otadata entry points at the slot about to
            // be overwritten; it is erased first (esp_ota_invalidate_inactive_ota_data_slot).
            let map = dev.flash_map();
            let erased = ota_core::update::begin_with_rollback(dev.flash, &map)
                .map_err(|e| core_error(e, &self.uri))?;
            if let Some((sector, slot)) = erased {
                env.info(
                    "esp_ota_ops",
                    format!(
                        "otadata[{}] (ota_{}) invalidated before the update",
                        sector, slot
                    ),
                );
            }
        }
        let mut buf = vec![0u8; CHUNK];
        'download: loop {
            let mut progress = Progress::new(id, TAG_DEFAULT, "app", fetch.total);
            if engine.resumed_from() > 0 {
                progress.add(env, engine.resumed_from() as usize);
            } else {
                // The prefix is written by the first write call.
                engine
                    .write(dev.flash, &[])
                    .map_err(|e| core_error(e, &self.uri))?;
                progress.add(env, IMAGE_PREFIX_LEN);
            }
            // Bytes in `buf` not yet written; writes end on 4 KiB boundaries of the image.
            let mut fill = 0usize;
            loop {
                let at = engine.written() as usize + fill;
                let want = CHUNK - at % CHUNK;
                let next = fetch.read(&mut buf[fill..fill + want], env)?;
                let end = match next {
                    Next::Data(n) => {
                        fill += n;
                        if !(at + n).is_multiple_of(CHUNK) {
                            continue;
                        }
                        false
                    }
                    Next::End => true,
                    Next::Restart => {
                        engine = self.start_over(dev, &mut fetch, log, env)?;
                        continue 'download;
                    }
                };
                if fill > 0 {
                    engine
                        .write(dev.flash, &buf[..fill])
                        .map_err(|e| core_error(e, &self.uri))?;
                    progress.add(env, fill);
                    fill = 0;
                }
                if !end {
                    continue;
                }
                if engine.image_complete() || !fetch.can_retry() {
                    break;
                }
                // The body ended before the image did (a short or lying Content-Length, a
                // closed connection): ask for the rest.
                fetch.used += 1;
                env.warn(
                    TAG_OTA,
                    format!(
                        "The download ended at byte {} before the image was complete; retry {} of {}",
                        fetch.pos, fetch.used, fetch.retry.retries
                    ),
                );
                std::thread::sleep(fetch.retry.delay(fetch.used));
                match fetch.reconnect(env)? {
                    Next::Data(_) => continue,
                    Next::End => break,
                    Next::Restart => {
                        engine = self.start_over(dev, &mut fetch, log, env)?;
                        continue 'download;
                    }
                }
            }
            let slot = *engine.slot();
            let resumed = engine.resumed_from();
            match engine.finish(dev.flash) {
                Ok(done) => {
                    env.info(
                        "esp_image",
                        format!(
                            "image at 0x{:x} verified: {} segments, {} bytes, checksum 0x{:02x}{}",
                            slot.offset,
                            done.summary.segment_count,
                            done.summary.image_len,
                            done.summary.checksum_calc,
                            if done.summary.hash_calc.is_some() {
                                ", SHA-256 valid"
                            } else {
                                ""
                            }
                        ),
                    );
                    env.info(
                        "esp_ota_ops",
                        format!(
                            "otadata[{}] updated: boot partition is now {} at 0x{:x}",
                            done.otadata_sector,
                            slot.label.as_str(),
                            slot.offset
                        ),
                    );
                    return Ok(());
                }
                Err(e) if resumed > 0 && fetch.can_retry() => {
                    // The spliced image does not verify (the bytes kept in flash were not the
                    // file's): the record is gone; download the whole file again.
                    fetch.used += 1;
                    env.warn(
                        TAG_OTA,
                        format!(
                            "The resumed image does not verify ({}): downloading it again from byte 0, retry {} of {}",
                            e, fetch.used, fetch.retry.retries
                        ),
                    );
                    std::thread::sleep(fetch.retry.delay(fetch.used));
                    let opts = fetch.opts.clone();
                    let mut used = fetch.used;
                    fetch = Fetch::open(self, opts, &mut used, env).map_err(source_error)?;
                    engine = self.start_over(dev, &mut fetch, log, env)?;
                }
                Err(e) => {
                    env.error(TAG_DEFAULT, "Image validation failed, image is corrupted");
                    return Err(core_error(e, &self.uri));
                }
            }
        }
    }

    fn reboot(&self) -> bool {
        self.reboot
    }

    fn break_after_fail(&self) -> bool {
        self.break_after_fail
    }
}
