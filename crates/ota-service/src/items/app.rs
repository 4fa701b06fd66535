//! The app item: download an app image into the next OTA slot, verify it, switch otadata
//! (ADF's `ota_app_get_default_proc` over `esp_https_ota`/`esp_fs_ota`, adf-ota-service.md §4).

use embedded_storage::nor_flash::NorFlash;
use ota_core::image::{AppDesc, APP_DESC_SIZE};
use ota_core::update::{AppUpdate, AppUpdateConfig};
use ota_core::version::VersionPolicy;

use super::{core_error, read_full, source_error, Progress};
use crate::reason::Reason;
use crate::service::{Device, Env, ItemError, Need, UpgradeItem};
use crate::source::{self, Source};

const TAG_OTA: &str = "esp_https_ota";
const TAG_DEFAULT: &str = "OTA_DEFAULT";
/// Offset of `esp_app_desc_t` in an app image (idf-formats.md §3.7).
const APP_DESC_OFFSET: u32 = 0x20;
const CHUNK: usize = 4096;

/// An app upgrade item.
pub struct AppItem {
    pub uri: String,
    pub policy: VersionPolicy,
    /// Pinned CA certificate (PEM), like ADF's `cert_pem`.
    pub ca_pem: Option<Vec<u8>>,
    pub reboot: bool,
    pub break_after_fail: bool,
    /// Wraps the source once it is opened (the catalogue item checks size and SHA-256 this
    /// way: its wrapper fails the read that would end the stream, so `finish` never runs).
    pub wrap_source: Option<SourceWrapper>,
    run: Option<Run>,
}

/// See [`AppItem::wrap_source`].
pub type SourceWrapper = Box<dyn Fn(Box<dyn Source>) -> Box<dyn Source>>;

struct Run {
    source: Box<dyn Source>,
    engine: AppUpdate,
}

impl AppItem {
    pub fn new(uri: impl Into<String>) -> Self {
        AppItem {
            uri: uri.into(),
            policy: VersionPolicy::None,
            ca_pem: None,
            reboot: true,
            break_after_fail: false,
            wrap_source: None,
            run: None,
        }
    }
}

/// The running app's descriptor (`esp_ota_get_partition_description(running)`).
pub fn running_desc<F: NorFlash>(dev: &mut Device<'_, F>) -> Option<AppDesc> {
    let part = dev.running?;
    let mut buf = [0u8; APP_DESC_SIZE];
    part.region()
        .read(dev.flash, APP_DESC_OFFSET, &mut buf)
        .ok()?;
    AppDesc::parse(&buf).ok()
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
        let mut opts = env.source.clone();
        if self.ca_pem.is_some() {
            opts.ca_pem = self.ca_pem.clone();
        }
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
        let src = source::open(&self.uri, env.sd, &opts).map_err(|e| {
            env.error(TAG_DEFAULT, "ESP HTTPS OTA Begin failed");
            source_error(e)
        })?;
        let src = match &self.wrap_source {
            Some(wrap) => wrap(src),
            None => src,
        };
        env.info(TAG_OTA, "Starting OTA...");
        let cfg = AppUpdateConfig {
            chip: dev.chip,
            rollback: dev.rollback,
        };
        let mut engine =
            AppUpdate::begin(dev.table, dev.running.as_ref(), cfg, src.content_length())
                .map_err(|e| core_error(e, &self.uri))?;
        engine.set_anti_rollback(dev.anti_rollback);
        let slot = *engine.slot();
        env.info(
            TAG_OTA,
            format!(
                "Writing to partition subtype {} at offset 0x{:x}",
                slot.subtype, slot.offset
            ),
        );
        self.run = Some(Run {
            source: src,
            engine,
        });
        Ok(())
    }

    fn need_upgrade(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        _id: usize,
    ) -> Result<Need, ItemError> {
        let run = self
            .run
            .as_mut()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        let mut prefix = [0u8; ota_core::image::IMAGE_PREFIX_LEN];
        let got = read_full(run.source.as_mut(), &mut prefix).map_err(source_error)?;
        if got < prefix.len() {
            env.error(TAG_DEFAULT, "get_img_desc failed");
            return Err(ItemError::new(
                Reason::GetNewAppDescFail,
                format!(
                    "{}: image is {} bytes, shorter than the {} bytes of header and app descriptor",
                    self.uri,
                    got,
                    prefix.len()
                ),
            ));
        }
        run.engine.feed_prefix(&prefix).map_err(|e| {
            env.error(TAG_DEFAULT, "get_img_desc failed");
            let mut err = core_error(e, &self.uri);
            if err.reason == Reason::OtaValidateFailed {
                err.reason = Reason::GetNewAppDescFail;
            }
            err
        })?;
        // Anti-rollback (idf-formats.md §2.7): refuse a too-old secure_version before writing.
        run.engine.check_secure_version().map_err(|e| {
            env.error(
                TAG_DEFAULT,
                "New firmware security version is less than eFuse programmed",
            );
            core_error(e, &self.uri)
        })?;
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
        match run.engine.check_version(self.policy, running.as_ref()) {
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
            mut source,
            mut engine,
        } = self
            .run
            .take()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        if dev.rollback {
            // ESP-IDF v5.5+ esp_ota_begin: the inactive otadata entry points at the slot about to
            // be overwritten; it is erased first (esp_ota_invalidate_inactive_ota_data_slot).
            let erased =
                ota_core::update::begin_with_rollback(dev.flash, dev.table, dev.running.as_ref())
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
        let total = source.content_length();
        let mut progress = Progress::new(id, TAG_DEFAULT, "app", total);
        // The prefix is written by the first write call.
        engine
            .write(dev.flash, &[])
            .map_err(|e| core_error(e, &self.uri))?;
        progress.add(env, ota_core::image::IMAGE_PREFIX_LEN);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = source.read(&mut buf).map_err(source_error)?;
            if n == 0 {
                break;
            }
            engine
                .write(dev.flash, &buf[..n])
                .map_err(|e| core_error(e, &self.uri))?;
            progress.add(env, n);
        }
        let slot = *engine.slot();
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
                Ok(())
            }
            Err(e) => {
                env.error(TAG_DEFAULT, "Image validation failed, image is corrupted");
                Err(core_error(e, &self.uri))
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
