//! Ready-made upgrade items: app (next OTA slot), raw data partition, ADF tone partition.

mod app;
mod data;
pub mod ddi;
mod delta;
mod download;
pub mod manifest;

pub use app::{AppItem, CheckFactory, CHUNK as APP_CHUNK};
pub use data::{DataFormat, DataItem};
pub use ddi::{DdiAuth, DdiItem};
pub use download::StreamCheck;
pub use manifest::{CatalogueKey, CatalogueLink, CatalogueTrust, ManifestItem};

use ota_core::Error as CoreError;

#[cfg(feature = "std")]
use crate::config::{Config, ItemKind};
use crate::prelude::*;
use crate::reason::Reason;
use crate::service::{Env, Event, ItemError};
use crate::source::SourceError;

/// The run's source options with an item's pinned CA (ADF's per-item `cert_pem`), if it has one,
/// and its transfer limits; the item's overall deadline (`max_time`) starts now.
pub(crate) fn item_source_options(
    env: &Env<'_>,
    ca_pem: &Option<Vec<u8>>,
    limits: Option<crate::source::TransferLimits>,
) -> crate::source::SourceOptions {
    let mut opts = env.source.for_item_at(limits, env.clock.now_ms());
    if ca_pem.is_some() {
        opts.ca_pem = ca_pem.clone();
    }
    opts
}

pub(crate) fn source_error(e: SourceError) -> ItemError {
    ItemError::new(Reason::from_code(e.adf_reason()), e.to_string())
        .with_cause(crate::service::Cause::Source(e))
}

/// Map an `ota-core` error to ADF's reason: flash failures are write failures, format
/// failures are validation failures.
pub(crate) fn core_error(e: CoreError, context: &str) -> ItemError {
    use ota_core::update::UpdateError;
    let reason = match &e {
        CoreError::Flash(f) => match f.op {
            ota_core::flash::FlashOp::Read => Reason::PartitionRdFail,
            _ => Reason::PartitionWtFail,
        },
        CoreError::Update(UpdateError::PartitionNotFound { .. }) => Reason::PartitionNotFound,
        CoreError::Update(UpdateError::TooLarge { .. }) => Reason::PartitionWtFail,
        CoreError::Update(UpdateError::Version { verdict, .. }) => match verdict {
            ota_core::version::VersionVerdict::InvalidIncoming => Reason::ErrorVersion,
            _ => Reason::NoHigherVersion,
        },
        CoreError::Update(UpdateError::WrongChip { .. }) => Reason::Other(ESP_ERR_INVALID_VERSION),
        CoreError::Update(UpdateError::SecureVersionTooLow { .. }) => {
            Reason::Other(ESP_ERR_OTA_SMALL_SEC_VER)
        }
        CoreError::Update(UpdateError::RollbackInvalidState { .. }) => {
            Reason::Other(ESP_ERR_OTA_ROLLBACK_INVALID_STATE)
        }
        CoreError::Update(UpdateError::Staging(_)) => Reason::PartitionWtFail,
        CoreError::Update(UpdateError::Guard(_)) => Reason::Other(ESP_ERR_OTA_PARTITION_CONFLICT),
        CoreError::Image(_) | CoreError::Update(_) => Reason::OtaValidateFailed,
        CoreError::Partition(_) | CoreError::OtaData(_) => Reason::PartitionRdFail,
        CoreError::Tone(_) => Reason::Unknown,
        CoreError::Boot(_) => Reason::Unknown,
        _ => Reason::Unknown,
    };
    let message = format!("{}: {}", context, e);
    ItemError::new(reason, message).with_cause(crate::service::Cause::Core(e))
}

/// The ESP-IDF codes items report (their one home is [`crate::reason`]).
pub use crate::reason::{
    ESP_ERR_INVALID_VERSION, ESP_ERR_OTA_PARTITION_CONFLICT, ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
    ESP_ERR_OTA_SMALL_SEC_VER,
};

/// ADF logs progress once a second (`ota_proc_default.c`).
const PROGRESS_LOG_MS: u64 = 1000;

/// ADF's once-a-second progress line (`%s process_size: %d KB, cur_size: %d bytes,
/// total_speed: %d KB/s`, esp-adf `ota_proc_default.c`) plus a Progress event per chunk.
pub(crate) struct Progress {
    id: usize,
    tag: &'static str,
    kind: &'static str,
    total: Option<u64>,
    bytes: u64,
    /// When it started and when it last logged, in ms of the run's clock.
    start: u64,
    last_log: u64,
}

impl Progress {
    pub(crate) fn new(
        env: &Env<'_>,
        id: usize,
        tag: &'static str,
        kind: &'static str,
        total: Option<u64>,
    ) -> Self {
        let now = env.clock.now_ms();
        Progress {
            id,
            tag,
            kind,
            total,
            bytes: 0,
            start: now,
            last_log: now,
        }
    }

    pub(crate) fn add(&mut self, env: &mut Env<'_>, n: usize) {
        self.bytes += n as u64;
        env.emit(Event::Progress {
            id: self.id,
            bytes: self.bytes,
            total: self.total,
        });
        let now = env.clock.now_ms();
        if now.saturating_sub(self.last_log) > PROGRESS_LOG_MS {
            self.last_log = now;
            let ms = now.saturating_sub(self.start).max(1);
            env.info(
                self.tag,
                format!(
                    "{} process_size: {} KB, cur_size: {} bytes, total_speed: {} KB/s",
                    self.kind,
                    self.bytes / 1024,
                    n,
                    self.bytes * 1000 / (1024 * ms)
                ),
            );
        }
    }
}

/// Build the upgrade list a config describes. Reads pinned CA files.
#[cfg(feature = "std")]
pub fn from_config<F: embedded_storage::nor_flash::NorFlash>(
    config: &Config,
) -> Result<Vec<Box<dyn crate::service::UpgradeItem<F>>>, String> {
    let mut items: Vec<Box<dyn crate::service::UpgradeItem<F>>> = Vec::new();
    config.check_catalogue_items()?;
    let trust = match &config.catalogue_key {
        None => None,
        Some(p) => {
            let len = std::fs::metadata(p)
                .map_err(|e| format!("reading catalogue key {}: {}", p.display(), e))?
                .len();
            if len > ota_catalogue::signed::MAX_PEM_BYTES as u64 {
                return Err(format!(
                    "catalogue key {}: {} bytes, larger than a key file ({} bytes)",
                    p.display(),
                    len,
                    ota_catalogue::signed::MAX_PEM_BYTES
                ));
            }
            let pem = std::fs::read(p)
                .map_err(|e| format!("reading catalogue key {}: {}", p.display(), e))?;
            let key = manifest::CatalogueKey::from_pem(&pem)
                .map_err(|e| format!("catalogue key {}: {}", p.display(), e))?;
            Some(manifest::CatalogueTrust::new(key, config.catalogue_serial))
        }
    };
    for spec in &config.upgrade {
        let ca_pem = match &spec.cert {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| format!("reading CA certificate {}: {}", p.display(), e))?,
            ),
            None => None,
        };
        match spec.kind {
            ItemKind::App if spec.project.is_some() => {
                let project = spec.project.clone().unwrap_or_default();
                let mut item = ManifestItem::new(spec.uri.clone(), project);
                item.policy = spec.version_check;
                item.ca_pem = ca_pem;
                item.limits = Some(spec.limits);
                item.reboot = spec.reboot;
                item.break_after_fail = spec.break_after_fail;
                item.retry = spec.retry;
                item.resume = spec.resume;
                item.trust = trust.clone();
                items.push(Box::new(item));
            }
            ItemKind::App => {
                let mut item = AppItem::new(spec.uri.clone());
                item.policy = spec.version_check;
                item.ca_pem = ca_pem;
                item.reboot = spec.reboot;
                item.break_after_fail = spec.break_after_fail;
                item.retry = spec.retry;
                item.limits = Some(spec.limits);
                item.resume = spec.resume;
                items.push(Box::new(item));
            }
            ItemKind::Ddi => {
                let ddi = spec
                    .ddi
                    .as_ref()
                    .ok_or_else(|| format!("DDI item {} has no tenant/controller_id", spec.uri))?;
                let auth = match &ddi.token {
                    crate::config::DdiToken::None => DdiAuth::None,
                    crate::config::DdiToken::Target(p) => DdiAuth::TargetToken(
                        crate::source::Secret::new(crate::config::read_token_file(p)?),
                    ),
                    crate::config::DdiToken::Gateway(p) => DdiAuth::GatewayToken(
                        crate::source::Secret::new(crate::config::read_token_file(p)?),
                    ),
                };
                let mut item = DdiItem::new(
                    spec.uri.clone(),
                    ddi.tenant.clone(),
                    ddi.controller_id.clone(),
                    auth,
                );
                item.project = spec.project.clone();
                item.policy = spec.version_check;
                item.ca_pem = ca_pem;
                item.limits = Some(spec.limits);
                item.reboot = spec.reboot;
                item.break_after_fail = spec.break_after_fail;
                item.retry = spec.retry;
                item.resume = spec.resume;
                item.polls = ddi.polls;
                item.max_sleep = ddi.max_sleep;
                items.push(Box::new(item));
            }
            ItemKind::Data => {
                let label = spec
                    .label
                    .clone()
                    .ok_or_else(|| format!("data item {} has no label", spec.uri))?;
                let mut item = DataItem::new(spec.uri.clone(), label, spec.format);
                item.staging = spec.staging.clone();
                item.limits = Some(spec.limits);
                item.retry = spec.retry;
                item.ca_pem = ca_pem;
                item.reboot = spec.reboot;
                item.break_after_fail = spec.break_after_fail;
                item.catalogue = spec.catalogue.clone().map(manifest::CatalogueLink::new);
                item.trust = trust.clone();
                items.push(Box::new(item));
            }
        }
    }
    Ok(items)
}
