//! A delta download for the catalogue item: the patch a catalogue lists for the running
//! image's digest, streamed through `ota_core::update::DeltaUpdate` (base: the running slot,
//! read only; output: the app engine, verified and committed like a full image).
//!
//! The patch's size and SHA-256 from the catalogue (a signed catalogue's, when the device
//! trusts a key) are checked as it streams: its bytes are applied as they come, and a patch
//! whose digest differs is refused at its end, before `finish` switches otadata. The patched
//! image's SHA-256 must also be the catalogue entry's (`target_sha256`). The caller falls back
//! to the full image on any error.
//!
//! Resume: over HTTP(S), with a validator (ETag / Last-Modified) from the server and room for
//! the log, the update keeps an `ota_core::resume` record whose checkpoints hold the applier's
//! whole state every few output sectors. After a power cut (or a run that stopped) the next run
//! finds the record for this patch URI and target slot, rebuilds the update from its last
//! checkpoint (base digest checked, the output already in the slot re-verified) and asks for
//! the rest of the patch only (`Range: bytes=N-` with `If-Range`). A resumed download cannot
//! hash the patch's first part again, so its integrity rests on the target digest, checked on
//! every byte of the output before otadata is switched.

use embedded_storage::nor_flash::NorFlash;
use ota_core::delta::BaseImage;
use ota_core::image::Hex;
use ota_core::partition::Partition;
use ota_core::resume::{ResumeHeader, ResumeLog, ResumeRecord};
use ota_core::update::{next_update_slot, DeltaUpdate, EspHeader};
use ota_core::version::VersionPolicy;

use super::download::{open_rest, Fetch, FetchSpec, Next, RestOf};
use super::manifest::CatalogueCheck;
use super::{core_error, source_error, Progress};
use alloc::rc::Rc;
use core::cell::RefCell;

use crate::prelude::*;
use crate::reason::Reason;
use crate::service::{Device, Env, Event, ItemError, ResumeFrom, StartOverWhy};
use crate::source::{duration_ms, RetryPolicy, Scheme, SourceOptions, TransferLimits};

const TAG: &str = "esp_delta_ota";
/// Patch bytes per read.
const CHUNK: usize = 4096;

/// The patch chosen for this run.
#[derive(Clone, Debug)]
pub(crate) struct DeltaPlan {
    pub(crate) url: String,
    pub(crate) size: u64,
    pub(crate) sha256: [u8; 32],
    /// The running image, verified and digested when the patch was chosen (not read again).
    pub(crate) base: BaseImage,
    /// SHA-256 of the image the patch produces (the catalogue entry's own).
    pub(crate) target_sha256: [u8; 32],
    /// The patched image's size (the catalogue entry's), refused early when it cannot fit.
    pub(crate) image_size: u64,
}

pub(crate) struct DeltaRun<'a> {
    pub(crate) plan: &'a DeltaPlan,
    pub(crate) policy: VersionPolicy,
    pub(crate) ca_pem: &'a Option<Vec<u8>>,
    pub(crate) limits: Option<TransferLimits>,
    pub(crate) retry: RetryPolicy,
    /// Keep and use a resume record (the item's `resume`).
    pub(crate) resume: bool,
}

/// Download and apply the patch; `Ok` once otadata points at the new slot.
pub(crate) async fn apply_patch<F: NorFlash>(
    run: DeltaRun<'_>,
    dev: &mut Device<'_, F>,
    env: &mut Env<'_>,
    id: usize,
) -> Result<(), ItemError> {
    let plan = run.plan;
    let uri = plan.url.as_str();
    let running = dev.running.ok_or_else(|| {
        ItemError::new(
            Reason::OtaValidateFailed,
            format!("{uri}: no running app partition to apply the patch to"),
        )
    })?;
    let opts = super::item_source_options(env, run.ca_pem, run.limits);
    let spec = FetchSpec {
        uri,
        id,
        tag: TAG,
        retry: run.retry,
    };
    // Only HTTP(S) downloads are resumed, and only when the item keeps resume records.
    let resumable =
        run.resume && matches!(Scheme::of(uri), Some(Scheme::Http) | Some(Scheme::Https));
    let slot = next_update_slot(dev.table, Some(&running));
    let log = slot.and_then(|s| ResumeLog::locate(dev.table, &s));
    let mut used = 0;
    let mut resumed = None;
    let mut from_zero = None;
    if let (Some(log), Some(slot), true) = (log, slot, resumable) {
        match log.read(dev.flash) {
            Ok(Some(rec))
                if rec.header.is_for(uri, &slot) && rec.delta.is_some() && rec.progress > 0 =>
            {
                match try_resume(&run, dev, env, &running, &opts, spec, log, rec, &mut used).await?
                {
                    Resumed::Yes(engine, fetch) => resumed = Some((engine, fetch)),
                    Resumed::FromZero(fetch) => from_zero = Some(fetch),
                    Resumed::No => {}
                }
            }
            Ok(_) => {}
            Err(e) => env.warn(
                TAG,
                format!("Cannot read the resume record ({e}): the patch starts from byte 0"),
            ),
        }
    }
    let mismatch = Rc::new(RefCell::new(None));
    let (mut engine, mut fetch) = match resumed {
        Some(r) => r,
        None => {
            let mut engine = Box::new(fresh_engine(&run, dev, &running)?);
            let fetch = match from_zero {
                Some(f) => f,
                None => Fetch::open(spec, opts, None, &mut used, env)
                    .await
                    .map_err(source_error)?,
            };
            let fetch = fetch.with_check(Box::new(CatalogueCheck::new(
                plan.size,
                plan.sha256,
                mismatch.clone(),
            )))?;
            if let Some(log) = log {
                setup_journal::<F>(&mut engine, &fetch, log, resumable, uri, env)
                    .map_err(|e| core_error(e, uri))?;
            }
            (engine, fetch)
        }
    };
    if dev.rollback {
        // As for a full image (esp_ota_begin, ESP-IDF v5.5+): the inactive otadata entry goes.
        let map = dev.flash_map();
        ota_core::update::begin_with_rollback(dev.flash, &map).map_err(|e| core_error(e, uri))?;
    }
    let start = engine.patch_offset() as u64;
    env.info(
        TAG,
        format!(
            "Applying patch {} ({} bytes{}) to the running image in {} at 0x{:x}; writing partition {} at 0x{:x}",
            uri,
            plan.size,
            if start > 0 {
                format!(", from byte {start}")
            } else {
                String::new()
            },
            running.label.as_str(),
            running.offset,
            engine.slot().label.as_str(),
            engine.slot().offset
        ),
    );
    let mut progress = Progress::new(env, id, TAG, "patch", Some(plan.size));
    progress.add(env, start as usize);
    let mut buf = vec![0u8; CHUNK];
    loop {
        match fetch.read(&mut buf, env).await? {
            Next::Data(n) => {
                if fetch.pos > plan.size {
                    // A resumed download has no stream check: the catalogue's size bounds it.
                    return Err(ItemError::new(
                        Reason::StreamRdFail,
                        format!(
                            "{uri}: the server sent {} bytes, the catalogue lists a {}-byte patch",
                            fetch.pos, plan.size
                        ),
                    ));
                }
                engine
                    .feed(dev.flash, &buf[..n])
                    .map_err(|e| core_error(e, uri))?;
                progress.add(env, n);
            }
            Next::Restart => {
                return Err(ItemError::new(
                    Reason::StreamRdFail,
                    format!(
                        "{uri}: the server sent the patch from byte 0 again after {} bytes",
                        engine.patch_offset()
                    ),
                ))
            }
            Next::End => {
                if engine.applier().is_done() || !fetch.can_retry() {
                    break;
                }
                fetch.used += 1;
                env.warn(
                    TAG,
                    format!(
                        "The patch download ended at byte {} before the patch was complete; retry {} of {}",
                        fetch.pos, fetch.used, fetch.retry.retries
                    ),
                );
                env.sleep_ms(duration_ms(fetch.retry.delay(fetch.used)))
                    .await;
                match fetch.reconnect(env).await? {
                    Next::Data(_) => continue,
                    Next::End => break,
                    Next::Restart => {
                        return Err(ItemError::new(
                            Reason::StreamRdFail,
                            format!("{uri}: the server restarted the patch from byte 0"),
                        ))
                    }
                }
            }
        }
    }
    // The patch's digest (the catalogue's) before otadata is switched; a resumed download
    // rests on the target digest `finish` checks.
    fetch.check_end()?;
    let slot = *engine.slot();
    let resumed_from = engine.app().resumed_from();
    let done = engine.finish(dev.flash).map_err(|e| core_error(e, uri))?;
    env.info(
        "esp_image",
        format!(
            "image at 0x{:x} verified: {} segments, {} bytes from a {}-byte patch{}{}",
            slot.offset,
            done.summary.segment_count,
            done.summary.image_len,
            plan.size,
            if resumed_from > 0 {
                format!(" (resumed at output byte {resumed_from}, patch byte {start})")
            } else {
                String::new()
            },
            match done.summary.hash_calc {
                Some(h) => format!(", SHA-256 {}", Hex(&h)),
                None => String::new(),
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
    Ok(())
}

/// A delta update from the patch's first byte, with every check done before anything is
/// erased.
fn fresh_engine<F: NorFlash>(
    run: &DeltaRun<'_>,
    dev: &mut Device<'_, F>,
    running: &Partition,
) -> Result<DeltaUpdate, ItemError> {
    let plan = run.plan;
    let uri = plan.url.as_str();
    let cfg = super::app::app_config(dev);
    let mut engine =
        DeltaUpdate::begin_over(dev.table, running, cfg, Some(plan.image_size), &plan.base)
            .map_err(|e| core_error(e, uri))?;
    // The running image is the one the catalogue made the patch for: the item chose the
    // patch by its listed `base_sha256` (`ManifestItem::choose_delta`).
    configure(&mut engine, run, dev.anti_rollback);
    Ok(engine)
}

/// The settings a fresh and a resumed update share.
fn configure(engine: &mut DeltaUpdate, run: &DeltaRun<'_>, anti_rollback: Option<u32>) {
    engine.set_esp_header(EspHeader::Optional);
    engine.set_version_policy(run.policy);
    engine.app_mut().set_anti_rollback(anti_rollback);
    engine.require_target(run.plan.target_sha256);
}

/// Keep a resume record for this patch download when the item keeps them and the source
/// allows it (`resumable`: HTTP(S); a validator; room for the log); otherwise only forget an
/// old record at the first write.
fn setup_journal<F: NorFlash>(
    engine: &mut DeltaUpdate,
    fetch: &Fetch,
    log: ResumeLog,
    resumable: bool,
    uri: &str,
    env: &mut Env<'_>,
) -> Result<(), ota_core::Error> {
    let slot = *engine.slot();
    let total = fetch.total.and_then(|t| u32::try_from(t).ok());
    match (resumable, fetch.validator) {
        (true, Some(v)) => {
            let h = ResumeHeader::new(&slot, uri, v, total.unwrap_or(0));
            match engine.enable_resume::<F>(log, h) {
                Ok(()) => {
                    env.info(
                        TAG,
                        format!(
                            "Resume record at 0x{:x}: the applier's state is saved every {} output bytes (validator {})",
                            log.region().offset,
                            engine.checkpoint_step(),
                            v.as_str()
                        ),
                    );
                    Ok(())
                }
                Err(e) => {
                    env.warn(TAG, format!("No resume record for this patch: {e}"));
                    engine.app_mut().discard_resume_record(log)
                }
            }
        }
        (true, None) => {
            env.warn(
                TAG,
                "The server sent no ETag or Last-Modified for the patch: an interrupted update will start over",
            );
            engine.app_mut().discard_resume_record(log)
        }
        (false, _) => engine.app_mut().discard_resume_record(log),
    }
}

enum Resumed {
    /// Continue with this engine and this answer (a 206 from the checkpoint's byte).
    Yes(Box<DeltaUpdate>, Fetch),
    /// The server sent the whole patch (Range ignored, or the file changed): start over with it.
    FromZero(Fetch),
    /// The record cannot be used: start over with a new request.
    No,
}

/// Continue the delta update a resume record describes.
#[allow(clippy::too_many_arguments)]
async fn try_resume<F: NorFlash>(
    run: &DeltaRun<'_>,
    dev: &mut Device<'_, F>,
    env: &mut Env<'_>,
    running: &Partition,
    opts: &SourceOptions,
    spec: FetchSpec<'_>,
    log: ResumeLog,
    rec: ResumeRecord,
    used: &mut u32,
) -> Result<Resumed, ItemError> {
    let cfg = super::app::app_config(dev);
    let resumed =
        DeltaUpdate::resume_over(dev.flash, dev.table, running, cfg, log, rec, &run.plan.base);
    let mut engine = match resumed {
        Ok(e) => e,
        Err(e) => {
            env.warn(
                TAG,
                format!("The resume record cannot be used ({e}): the patch starts from byte 0"),
            );
            env.emit(Event::StartOver {
                id: spec.id,
                at: rec.progress as u64,
                why: StartOverWhy::ResumedImageInvalid,
            });
            return Ok(Resumed::No);
        }
    };
    configure(&mut engine, run, dev.anti_rollback);
    let at = engine.patch_offset() as u64;
    let v = rec.header.validator;
    env.info(
        TAG,
        format!(
            "Resume record: {} bytes of the patched image already in partition {} at 0x{:x}; asking for the patch from byte {} of {} (If-Range: {})",
            rec.progress,
            engine.slot().label.as_str(),
            engine.slot().offset,
            at,
            run.plan.size,
            v.as_str()
        ),
    );
    let rest = open_rest(spec, opts, at, v, Some(run.plan.size), used, env).await;
    let fetch = match rest.map_err(source_error)? {
        RestOf::Continue(f) => f,
        RestOf::FromZero(f) => return Ok(Resumed::FromZero(f)),
        RestOf::StartOver => return Ok(Resumed::No),
    };
    env.info(
        TAG,
        format!(
            "Resuming the delta update at patch byte {at} (output byte {}): the bytes already written verify so far",
            rec.progress
        ),
    );
    env.emit(Event::Resume {
        id: spec.id,
        at,
        from: ResumeFrom::Record,
    });
    Ok(Resumed::Yes(Box::new(engine), fetch))
}
