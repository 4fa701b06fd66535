//! A delta download for the catalogue item: the patch a catalogue lists for the running
//! image's digest, streamed through `ota_core::update::DeltaUpdate` (base: the running slot,
//! read only; output: the app engine, verified and committed like a full image).
//!
//! The patch's size and SHA-256 from the catalogue (a signed catalogue's, when the device
//! trusts a key) are checked as it streams: its bytes are applied as they come, and a patch
//! whose digest differs is refused at its end, before `finish` switches otadata. The caller
//! falls back to the full image on any error.

use embedded_storage::nor_flash::NorFlash;
use ota_core::image::Hex;
use ota_core::update::{DeltaUpdate, EspHeader};
use ota_core::version::VersionPolicy;

use super::download::{Fetch, FetchSpec, Next};
use super::manifest::CatalogueCheck;
use super::{core_error, source_error, Progress};
use alloc::rc::Rc;
use core::cell::RefCell;

use crate::prelude::*;
use crate::reason::Reason;
use crate::service::{Device, Env, ItemError};
use crate::source::{duration_ms, RetryPolicy, TransferLimits};

const TAG: &str = "esp_delta_ota";
/// Patch bytes per read.
const CHUNK: usize = 4096;

/// The patch chosen for this run.
#[derive(Clone, Debug)]
pub(crate) struct DeltaPlan {
    pub(crate) url: String,
    pub(crate) size: u64,
    pub(crate) sha256: [u8; 32],
    pub(crate) base_sha256: [u8; 32],
    /// The patched image's size (the catalogue entry's), refused early when it cannot fit.
    pub(crate) image_size: u64,
}

pub(crate) struct DeltaRun<'a> {
    pub(crate) plan: &'a DeltaPlan,
    pub(crate) policy: VersionPolicy,
    pub(crate) ca_pem: &'a Option<Vec<u8>>,
    pub(crate) limits: Option<TransferLimits>,
    pub(crate) retry: RetryPolicy,
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
    let cfg = super::app::app_config(dev);
    let mut engine = DeltaUpdate::begin(dev.flash, dev.table, &running, cfg, Some(plan.image_size))
        .map_err(|e| core_error(e, uri))?;
    engine.set_esp_header(EspHeader::Optional);
    engine.set_version_policy(run.policy);
    engine.app_mut().set_anti_rollback(dev.anti_rollback);
    // The running image is the one the catalogue made the patch for (checked before any byte
    // of the patch is read or anything is erased).
    engine
        .require_base(plan.base_sha256)
        .map_err(|e| core_error(e, uri))?;
    let opts = super::item_source_options(env, run.ca_pem, run.limits);
    let spec = FetchSpec {
        uri,
        id,
        tag: TAG,
        retry: run.retry,
    };
    let mut used = 0;
    let mismatch = Rc::new(RefCell::new(None));
    let mut fetch = Fetch::open(spec, opts, None, &mut used, env)
        .await
        .map_err(source_error)?
        .with_check(Box::new(CatalogueCheck::new(
            plan.size,
            plan.sha256,
            mismatch.clone(),
        )))?;
    if dev.rollback {
        // As for a full image (esp_ota_begin, ESP-IDF v5.5+): the inactive otadata entry goes.
        let map = dev.flash_map();
        ota_core::update::begin_with_rollback(dev.flash, &map).map_err(|e| core_error(e, uri))?;
    }
    env.info(
        TAG,
        format!(
            "Applying patch {} ({} bytes) to the running image in {} at 0x{:x}; writing partition {} at 0x{:x}",
            uri,
            plan.size,
            running.label.as_str(),
            running.offset,
            engine.slot().label.as_str(),
            engine.slot().offset
        ),
    );
    let mut progress = Progress::new(env, id, TAG, "patch", Some(plan.size));
    let mut buf = vec![0u8; CHUNK];
    loop {
        match fetch.read(&mut buf, env).await? {
            Next::Data(n) => {
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
    // The patch's digest (the catalogue's) before otadata is switched.
    fetch.check_end()?;
    let slot = *engine.slot();
    let done = engine.finish(dev.flash).map_err(|e| core_error(e, uri))?;
    env.info(
        "esp_image",
        format!(
            "image at 0x{:x} verified: {} segments, {} bytes from a {}-byte patch{}",
            slot.offset,
            done.summary.segment_count,
            done.summary.image_len,
            plan.size,
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
