//! The app item: download an app image into the next OTA slot, verify it, switch otadata
//! (ADF's `ota_app_get_default_proc` over `esp_https_ota`/`esp_fs_ota`, adf-ota-service.md §4).
//!
//! Downloads survive bad links and restarts: a failed read is retried (with backoff) from the
//! byte where it stopped, and over HTTP(S) a resume record in flash (`ota_core::resume`) lets
//! the next run continue with `Range` / `If-Range` from the last verified checkpoint.

use embedded_storage::nor_flash::NorFlash;
use ota_core::image::{AppDesc, IMAGE_PREFIX_LEN};
use ota_core::partition::Partition;
use ota_core::resume::{self, LogPlace, RecordKind, ResumeHeader, ResumeLog, ResumeRecord};
use ota_core::update::{next_update_slot, AppUpdate, AppUpdateConfig, UpdateError};
use ota_core::version::VersionPolicy;

use super::download::{open_rest, open_with_retries, Fetch, FetchSpec, Next, RestOf, StreamCheck};
use super::{core_error, source_error, Progress};
use crate::io::BoxFuture;
use crate::prelude::*;
use crate::reason::Reason;
use crate::service::{Device, Env, Event, ItemError, Need, ResumeFrom, StartOverWhy, UpgradeItem};
use crate::source::{duration_ms, RetryPolicy, Scheme, SourceError, SourceOptions, TransferLimits};

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
    /// Makes the check the downloaded bytes must pass as they stream (the catalogue item checks
    /// size and SHA-256 this way), before the engine's `finish` switches otadata. A checked
    /// download is retried and reconnected like any other (the check follows the stream and
    /// starts over with it), and resumed from a record like any other: the check is then fed
    /// the bytes already in the slot, read back from flash, before the rest of the stream.
    pub check: Option<CheckFactory>,
    /// The `Authorization` header of the download (a DDI item's token, for an artifact on the
    /// DDI server's own origin); None: the run's.
    pub authorization: Option<crate::source::Secret>,
    run: Option<Run>,
}

/// See [`AppItem::check`].
pub type CheckFactory = Box<dyn Fn() -> Box<dyn StreamCheck>>;

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
            check: None,
            authorization: None,
            run: None,
        }
    }

    /// The app descriptor of the incoming image, once `need_upgrade` read it.
    pub fn incoming_desc(&self) -> Option<AppDesc> {
        self.run
            .as_ref()
            .and_then(|r| r.engine.incoming_desc().copied())
    }

    /// How this item's downloads start.
    fn spec(&self, id: usize) -> FetchSpec<'_> {
        FetchSpec {
            uri: &self.uri,
            id,
            tag: TAG_OTA,
            retry: self.retry,
        }
    }

    /// The whole image from byte 0, with the item's check when it has one.
    async fn open_fetch(
        &self,
        id: usize,
        opts: SourceOptions,
        used: &mut u32,
        env: &mut Env<'_>,
    ) -> Result<Fetch, ItemError> {
        let fetch = Fetch::open(self.spec(id), opts, None, used, env)
            .await
            .map_err(|e| {
                env.error(TAG_DEFAULT, "ESP HTTPS OTA Begin failed");
                source_error(e)
            })?;
        match &self.check {
            Some(make) => fetch.with_check(make()),
            None => Ok(fetch),
        }
    }

    /// Whether this download keeps and uses a resume record.
    fn resumable(&self) -> bool {
        self.resume
    }

    fn options(&self, env: &Env<'_>) -> SourceOptions {
        let mut o = super::item_source_options(env, &self.ca_pem, self.limits);
        if self.authorization.is_some() {
            o.authorization = self.authorization.clone();
        }
        o
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
    async fn start_over<F: NorFlash>(
        &self,
        dev: &mut Device<'_, F>,
        fetch: &mut Fetch,
        log: Option<ResumeLog>,
        env: &mut Env<'_>,
    ) -> Result<AppUpdate, ItemError> {
        let prefix = read_prefix(fetch, env, &self.uri).await?;
        let mut engine = self.begin(dev, fetch, log, env)?;
        engine
            .feed_prefix(&prefix)
            .map_err(|e| core_error(e, &self.uri))?;
        check_secure_version(&engine, env, &self.uri)?;
        let running = running_desc(dev);
        engine
            .check_version(self.policy, running.as_ref())
            .map_err(|e| core_error(e, &self.uri))?;
        self.signature_first(dev, fetch, &mut engine, env).await?;
        Ok(engine)
    }

    /// [`Self::precheck_signature`], then the main stream again from the byte reached (on a
    /// driver with one connection it was given up for the second request).
    async fn signature_first<F: NorFlash>(
        &self,
        dev: &mut Device<'_, F>,
        fetch: &mut Fetch,
        engine: &mut AppUpdate,
        env: &mut Env<'_>,
    ) -> Result<(), ItemError> {
        if engine.written() > 0 || !self.precheck_signature(dev, fetch, engine, env).await? {
            return Ok(());
        }
        match fetch.reconnect(env).await? {
            Next::Data(_) => Ok(()),
            Next::End | Next::Restart => Err(source_error(SourceError::Mismatch {
                uri: self.uri.clone(),
                detail: "the file changed while its signature sector was read".into(),
            })),
        }
    }

    /// Secure Boot v2 / signed apps, before anything is erased: when the source can give the
    /// end of the file first (a file, or HTTP with `Range` and a known length), the last 4096
    /// bytes of a file whose length is a multiple of 4096 (the layout `espsecure sign-data` and
    /// `ota image sign` write) are checked as the signature sector: an image without a block
    /// of the device's scheme signed by a trusted, unrevoked key is refused now. Otherwise (no
    /// length, `Range` ignored, another length) the sector is checked only after the
    /// download, still before otadata is switched. `Ok(true)`: a second request was made.
    async fn precheck_signature<F: NorFlash>(
        &self,
        dev: &mut Device<'_, F>,
        fetch: &Fetch,
        engine: &mut AppUpdate,
        env: &mut Env<'_>,
    ) -> Result<bool, ItemError> {
        const SECTOR: u64 = ota_core::secure_boot::SECTOR_SIZE as u64;
        if !dev.signatures.is_checked() {
            return Ok(false);
        }
        let total = match fetch.total {
            Some(t) if t >= 2 * SECTOR && t % SECTOR == 0 => t,
            other => {
                env.info(
                    TAG_OTA,
                    format!(
                        "Signature sector not checked before the download ({}): it is checked \
                         over the written image, before otadata is switched",
                        match other {
                            None => "the source gives no length".to_string(),
                            Some(t) =>
                                format!("length {t} is not a signed file's multiple of 4096"),
                        }
                    ),
                );
                return Ok(false);
            }
        };
        let at = total - SECTOR;
        let opts = self.options(env);
        let mut used = 0;
        let if_range = fetch.validator.map(|v| v.as_str().to_string());
        let opened = open_with_retries(
            &self.uri,
            at,
            if_range.as_deref(),
            None,
            &opts,
            self.retry,
            &mut used,
            env,
            TAG_OTA,
        )
        .await;
        let mut sector = vec![0u8; SECTOR as usize];
        let got = match opened {
            Ok(mut r) if r.honoured && r.total_length.is_none_or(|t| t == total) => {
                let mut n = 0;
                let mut ok = true;
                while n < sector.len() {
                    match r.body.read(&mut sector[n..]).await {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
                ok && n == sector.len()
            }
            Ok(_) => {
                env.warn(
                    TAG_OTA,
                    "The server ignored Range for the signature sector: it is checked after the download",
                );
                false
            }
            Err(e) => {
                env.warn(
                    TAG_OTA,
                    format!("Signature sector not fetched early ({e}): it is checked after the download"),
                );
                false
            }
        };
        if !got {
            return Ok(true);
        }
        match engine.precheck_signature_sector(dev.flash, &sector) {
            Ok(b) => {
                env.info(
                    TAG_OTA,
                    format!(
                        "Signature sector at byte {at}: block {} has a trusted key; its signature is verified after the download",
                        b.unwrap_or(0)
                    ),
                );
                Ok(true)
            }
            Err(e) => {
                env.error(
                    TAG_DEFAULT,
                    "Secure boot: the image's signature sector is refused, nothing erased",
                );
                Err(core_error(e, &self.uri))
            }
        }
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
    async fn try_resume<F: NorFlash>(
        &self,
        id: usize,
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
        let rest = open_rest(self.spec(id), opts, n, v, None, used, env).await;
        let mut fetch = match rest {
            Ok(RestOf::Continue(f)) => f,
            Ok(RestOf::FromZero(f)) => return Ok(Err(f)),
            Ok(RestOf::StartOver) => return Ok(Ok(None)),
            Err(e) => {
                env.error(TAG_DEFAULT, "ESP HTTPS OTA Begin failed");
                return Err(source_error(e));
            }
        };
        let cfg = app_config(dev);
        // The item's check sees the whole file: the bytes in the slot (as the engine re-reads
        // them for its verifier), then the stream.
        let mut check = self.check.as_ref().map(|make| {
            let mut c = make();
            let r = c.restart(fetch.total);
            (c, r)
        });
        let mut see = |b: &[u8]| {
            if let Some((c, r @ Ok(()))) = check.as_mut() {
                *r = c.feed(b);
            }
        };
        let resumed = AppUpdate::resume_seeing(
            dev.flash,
            dev.table,
            dev.running.as_ref(),
            cfg,
            log,
            rec,
            &mut see,
        );
        match resumed {
            Ok(mut engine) => {
                engine.set_anti_rollback(dev.anti_rollback);
                match check {
                    Some((c, Ok(()))) => fetch.check = Some(c),
                    Some((_, Err(d))) => {
                        env.warn(
                            TAG_OTA,
                            format!(
                                "The bytes already written do not match ({}): starting over from byte 0",
                                d
                            ),
                        );
                        env.emit(Event::StartOver {
                            id,
                            at: n,
                            why: StartOverWhy::ResumedImageInvalid,
                        });
                        return Ok(Ok(None));
                    }
                    None => {}
                }
                env.info(
                    TAG_OTA,
                    format!(
                        "Resuming download at byte {}: the {} bytes already written verify so far",
                        n, n
                    ),
                );
                env.emit(Event::Resume {
                    id,
                    at: n,
                    from: ResumeFrom::Record,
                });
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
                env.emit(Event::StartOver {
                    id,
                    at: n,
                    why: StartOverWhy::ResumedImageInvalid,
                });
                Ok(Ok(None))
            }
        }
    }
}

/// The engine settings for this device: chip, rollback, and where the table is and how large
/// the flash is (what the update must not write, `ota_core::guard`).
pub(crate) fn app_config<F: NorFlash>(dev: &Device<'_, F>) -> AppUpdateConfig {
    AppUpdateConfig {
        chip: dev.chip,
        rollback: dev.rollback,
        table_offset: dev.table_offset,
        flash_size: dev.flash_size,
        signatures: dev.signatures,
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

/// Read the first [`IMAGE_PREFIX_LEN`] bytes (from byte 0; starting again if the server
/// restarts the file). Fewer bytes mean the file is too short to be an app.
async fn read_prefix(
    fetch: &mut Fetch,
    env: &mut Env<'_>,
    uri: &str,
) -> Result<[u8; IMAGE_PREFIX_LEN], ItemError> {
    let mut prefix = [0u8; IMAGE_PREFIX_LEN];
    let mut got = 0;
    while got < prefix.len() {
        match fetch.read(&mut prefix[got..], env).await? {
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

impl AppItem {
    async fn prepare_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
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
                Ok(Some(rec))
                    if rec.header.is_for(&self.uri, &slot)
                        && rec.header.kind == RecordKind::Image
                        && rec.progress > 0 =>
                {
                    match self
                        .try_resume(id, dev, env, &opts, log, rec, &mut used)
                        .await?
                    {
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
            None => self.open_fetch(id, opts, &mut used, env).await?,
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

    async fn need_upgrade_hook<F: NorFlash>(
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
            let prefix = read_prefix(&mut run.fetch, env, &self.uri).await?;
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
        if verdict.is_ok() {
            // Secure Boot: a wrong-key image is refused here, before any erase, when the
            // source can give its signature sector first.
            if let Err(e) = self
                .signature_first(dev, &mut run.fetch, &mut run.engine, env)
                .await
            {
                self.run = Some(run);
                return Err(e);
            }
        }
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

    async fn execute_hook<F: NorFlash>(
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
            let mut progress = Progress::new(env, id, TAG_DEFAULT, "app", fetch.total);
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
                let next = fetch.read(&mut buf[fill..fill + want], env).await?;
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
                        engine = self.start_over(dev, &mut fetch, log, env).await?;
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
                env.sleep_ms(duration_ms(fetch.retry.delay(fetch.used)))
                    .await;
                match fetch.reconnect(env).await? {
                    Next::Data(_) => continue,
                    Next::End => break,
                    Next::Restart => {
                        engine = self.start_over(dev, &mut fetch, log, env).await?;
                        continue 'download;
                    }
                }
            }
            // What the item's check says about the whole stream, before otadata is switched.
            fetch.check_end()?;
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
                    env.sleep_ms(duration_ms(fetch.retry.delay(fetch.used)))
                        .await;
                    env.emit(Event::StartOver {
                        id,
                        at: resumed as u64,
                        why: StartOverWhy::ResumedImageInvalid,
                    });
                    let opts = fetch.opts.clone();
                    let mut used = fetch.used;
                    fetch = self.open_fetch(id, opts, &mut used, env).await?;
                    engine = self.start_over(dev, &mut fetch, log, env).await?;
                }
                Err(e) => {
                    env.error(TAG_DEFAULT, "Image validation failed, image is corrupted");
                    return Err(core_error(e, &self.uri));
                }
            }
        }
    }
}

impl<F: NorFlash> UpgradeItem<F> for AppItem {
    fn describe(&self) -> String {
        self.uri.clone()
    }

    fn prepare<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<(), ItemError>> {
        Box::pin(self.prepare_hook(dev, env, id))
    }

    fn need_upgrade<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<Need, ItemError>> {
        Box::pin(self.need_upgrade_hook(dev, env, id))
    }

    fn execute<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<(), ItemError>> {
        Box::pin(self.execute_hook(dev, env, id))
    }

    fn reboot(&self) -> bool {
        self.reboot
    }

    fn break_after_fail(&self) -> bool {
        self.break_after_fail
    }
}
