//! Ready-made upgrade items: app (next OTA slot), raw data partition, ADF tone partition.

mod app;
mod data;
pub mod manifest;

pub use app::{AppItem, SourceWrapper, CHUNK as APP_CHUNK};
pub use data::{DataFormat, DataItem};
pub use manifest::ManifestItem;

use std::time::Instant;

use ota_core::Error as CoreError;

use crate::config::{Config, ItemKind};
use crate::reason::Reason;
use crate::service::{Env, Event, ItemError};
use crate::source::{Source, SourceError};

/// The run's source options with an item's pinned CA (ADF's per-item `cert_pem`), if it has one,
/// and its transfer limits; the item's overall deadline (`max_time`) starts now.
pub(crate) fn item_source_options(
    env: &Env<'_>,
    ca_pem: &Option<Vec<u8>>,
    limits: Option<crate::source::TransferLimits>,
) -> crate::source::SourceOptions {
    let mut opts = env.source.for_item(limits);
    if ca_pem.is_some() {
        opts.ca_pem = ca_pem.clone();
    }
    opts
}

/// Read until `buf` is full or the source ends; returns the bytes read.
pub(crate) fn read_full(src: &mut dyn Source, buf: &mut [u8]) -> Result<usize, SourceError> {
    let mut got = 0;
    while got < buf.len() {
        let n = src.read(&mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

pub(crate) fn source_error(e: SourceError) -> ItemError {
    ItemError::new(Reason::from_code(e.adf_reason()), e.to_string())
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
    ItemError::new(reason, format!("{}: {}", context, e))
}

/// `ESP_ERR_INVALID_VERSION` (0x10A): what IDF reports for an image of another chip.
pub const ESP_ERR_INVALID_VERSION: i32 = 0x10A;
/// `ESP_ERR_OTA_PARTITION_CONFLICT` (ESP-IDF `components/app_update/include/esp_ota_ops.h`:
/// `ESP_ERR_OTA_BASE` 0x1500 + 0x01, "request was to write or erase the current running
/// partition"): an item would write outside its own target ([`ota_core::guard`]).
pub const ESP_ERR_OTA_PARTITION_CONFLICT: i32 = 0x1501;
/// `ESP_ERR_OTA_SMALL_SEC_VER` (esp-idf `esp_ota_ops.h`: base 0x1500 + 4): anti-rollback refused an
/// image whose `secure_version` is below the eFuse counter.
pub const ESP_ERR_OTA_SMALL_SEC_VER: i32 = 0x1504;
/// `ESP_ERR_OTA_ROLLBACK_INVALID_STATE` (esp-idf `esp_ota_ops.h`: base 0x1500 + 6): the running app
/// is still PENDING_VERIFY.
pub const ESP_ERR_OTA_ROLLBACK_INVALID_STATE: i32 = 0x1506;

/// ADF's once-a-second progress line (`%s process_size: %d KB, cur_size: %d bytes,
/// total_speed: %d KB/s`, esp-adf `ota_proc_default.c`) plus a Progress event per chunk.
pub(crate) struct Progress {
    id: usize,
    tag: &'static str,
    kind: &'static str,
    total: Option<u64>,
    bytes: u64,
    start: Instant,
    last_log: Instant,
}

impl Progress {
    pub(crate) fn new(
        id: usize,
        tag: &'static str,
        kind: &'static str,
        total: Option<u64>,
    ) -> Self {
        let now = Instant::now();
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
        let now = Instant::now();
        if now.duration_since(self.last_log).as_micros() > 1_000_000 {
            self.last_log = now;
            let ms = now.duration_since(self.start).as_millis().max(1) as u64;
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
pub fn from_config<F: embedded_storage::nor_flash::NorFlash>(
    config: &Config,
) -> Result<Vec<Box<dyn crate::service::UpgradeItem<F>>>, String> {
    let mut items: Vec<Box<dyn crate::service::UpgradeItem<F>>> = Vec::new();
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
            ItemKind::Data => {
                let label = spec
                    .label
                    .clone()
                    .ok_or_else(|| format!("data item {} has no label", spec.uri))?;
                let mut item = DataItem::new(spec.uri.clone(), label, spec.format);
                item.staging = spec.staging.clone();
                item.limits = Some(spec.limits);
                item.ca_pem = ca_pem;
                item.reboot = spec.reboot;
                item.break_after_fail = spec.break_after_fail;
                items.push(Box::new(item));
            }
        }
    }
    Ok(items)
}
