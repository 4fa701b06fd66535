//! Streaming update engines for app slots and data partitions.
//!
//! Sans-IO: the caller feeds byte chunks; the engine decides and drives the `NorFlash`.
//! Nothing is erased before the incoming image has shown it belongs here (magic, chip, size,
//! version), erases happen sector by sector just ahead of the writes (idf-formats.md §2.8,
//! `OTA_WITH_SEQUENTIAL_WRITES`), and otadata is switched only after the written image verified
//! (idf-formats.md §2.4). A failed or abandoned update never touches otadata or the running slot.
//! Also the app-side rollback API (`esp_ota_mark_app_valid_cancel_rollback`,
//! `esp_ota_mark_app_invalid_rollback`) and `esp_ota_begin`'s rollback rules (§2.5).

use core::fmt;

use crate::chip::Chip;
use crate::guard::GuardError;
use crate::image;
use crate::partition::Label;
use crate::resume::ResumeError;
use crate::version::VersionVerdict;
use crate::Error;

mod app;
mod data;
mod delta;
#[cfg(test)]
mod delta_tests;
mod rollback;
#[cfg(test)]
mod signed_tests;
#[cfg(test)]
mod tests;

pub use app::{next_update_slot, AppCall, AppPhase, AppUpdate, AppUpdateConfig, Committed};
pub use data::DataUpdate;
pub use delta::{DeltaUpdate, EspHeader};
pub use rollback::{
    begin_with_rollback, check_running_confirmed, mark_app_invalid_rollback,
    mark_app_valid_cancel_rollback, MarkedValid,
};

pub use crate::flash::{DATA_HEADER_LAST_LEN, DATA_TAG_LAST_LEN};

/// Why an update was refused or failed (the engines' own errors; flash and format errors are
/// wrapped by [`crate::Error`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateError {
    /// No OTA app slot other than the running one (`esp_ota_get_next_update_partition`).
    NoUpdateSlot,
    /// The table has no otadata partition, so no OTA slot can be selected.
    NoOtaData,
    /// The data partition named by the item does not exist.
    PartitionNotFound { label: Label },
    /// The incoming image is larger than its target partition (checked before any erase).
    TooLarge {
        label: Label,
        size: u64,
        capacity: u32,
    },
    /// The image is for another chip.
    WrongChip { expected: u16, found: u16 },
    /// The version policy refused the incoming image.
    Version {
        verdict: VersionVerdict,
        current: [u8; 32],
        incoming: [u8; 32],
    },
    /// The incoming image carries no app descriptor (needed for a version check).
    NoAppDesc,
    /// An [`AppUpdate`] call made out of order (a bug in the caller): `call` is not allowed
    /// in `phase`; nothing was done. ([`DataUpdate`] cannot be misused so: `begin` makes it
    /// and `finish` consumes it.)
    WrongState { call: AppCall, phase: AppPhase },
    /// The stream ended before the image was complete.
    Incomplete { written: u32 },
    /// The bytes read back from flash differ from the bytes verified on the stream.
    ReadbackMismatch { offset: u32 },
    /// A resume record that cannot be used or kept (see [`crate::resume`]).
    Resume(ResumeError),
    /// Anti-rollback: the image's `secure_version` is below the eFuse counter
    /// (`ESP_ERR_OTA_SMALL_SEC_VER`, idf-formats.md §2.4, §2.7).
    SecureVersionTooLow {
        label: Label,
        version: u32,
        efuse: u32,
    },
    /// Rollback: the running app has not confirmed itself yet, it is still PENDING_VERIFY
    /// (`ESP_ERR_OTA_ROLLBACK_INVALID_STATE`, ESP-IDF v5.5+ `esp_ota_begin`, idf-formats.md §2.5).
    RollbackInvalidState { running: Label },
    /// A staged data update failed (see [`crate::staging`]).
    Staging(crate::staging::StagingError),
    /// Anti-rollback: an app's `secure_version` does not fit the chip's eFuse field, so it
    /// cannot be burnt (`esp_efuse_update_secure_version` fails, idf-formats.md §2.7).
    SecureVersionOutOfRange { version: u32, field_bits: u32 },
    /// The update would write outside its own target (see [`crate::guard`]); nothing was
    /// erased.
    Guard(GuardError),
    /// Secure Boot v2 / signed apps: the new app's signature was refused (checked before
    /// otadata is switched, or before any erase when the sector came early from the source).
    Signature(crate::secure_boot::AppSignatureError),
    /// A delta update's patch was refused (wrong base, malformed, truncated; see
    /// [`crate::delta::DeltaError`]). Nothing was erased when the base did not match.
    Delta(crate::delta::DeltaError),
}

impl From<crate::staging::StagingError> for Error {
    fn from(e: crate::staging::StagingError) -> Self {
        Error::Update(UpdateError::Staging(e))
    }
}

impl From<GuardError> for Error {
    fn from(e: GuardError) -> Self {
        Error::Update(UpdateError::Guard(e))
    }
}

fn show32(b: &[u8; 32]) -> &str {
    image::cstr(b)
}

impl core::error::Error for UpdateError {}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::NoUpdateSlot => {
                f.write_str("no OTA app slot to update (the table needs ota_0 and ota_1)")
            }
            UpdateError::NoOtaData => {
                f.write_str("the partition table has no otadata (data/ota) partition")
            }
            UpdateError::PartitionNotFound { label } => {
                write!(f, "partition [{}] not found", label.as_str())
            }
            UpdateError::TooLarge {
                label,
                size,
                capacity,
            } => write!(
                f,
                "image of {} bytes does not fit in partition {} ({} bytes)",
                size,
                label.as_str(),
                capacity
            ),
            UpdateError::WrongChip { expected, found } => {
                let name = |id: u16| {
                    Chip::from_id(id)
                        .map(|c| c.display_name())
                        .unwrap_or("unknown chip")
                };
                write!(
                    f,
                    "image is for chip id {} ({}), the device is chip id {} ({})",
                    found,
                    name(*found),
                    expected,
                    name(*expected)
                )
            }
            UpdateError::Version {
                verdict,
                current,
                incoming,
            } => match verdict {
                VersionVerdict::InvalidIncoming => {
                    write!(
                        f,
                        "incoming version '{}' does not parse under the version policy",
                        show32(incoming)
                    )
                }
                _ => write!(
                    f,
                    "incoming version '{}' is not newer than the running version '{}'",
                    show32(incoming),
                    show32(current)
                ),
            },
            UpdateError::NoAppDesc => f.write_str(
                "the incoming image has no app descriptor (esp_app_desc_t) at offset 0x20",
            ),
            UpdateError::WrongState { call, phase } => {
                write!(f, "AppUpdate::{} called out of order: {}", call, phase)
            }
            UpdateError::Incomplete { written } => {
                write!(
                    f,
                    "the image stream ended after {} bytes, before the image was complete",
                    written
                )
            }
            UpdateError::SecureVersionTooLow {
                label,
                version,
                efuse,
            } => write!(
                f,
                "the image for {} has secure_version {}, below the eFuse secure version {} \
                 (anti-rollback)",
                label.as_str(),
                version,
                efuse
            ),
            UpdateError::RollbackInvalidState { running } => write!(
                f,
                "the running app ({}) is still PENDING_VERIFY: confirm it (esp_ota_mark_app_valid_cancel_rollback) \
                 or roll it back before starting another update",
                running.as_str()
            ),
            UpdateError::Staging(e) => e.fmt(f),
            UpdateError::SecureVersionOutOfRange {
                version,
                field_bits,
            } => write!(
                f,
                "secure_version {} does not fit the {}-bit eFuse SECURE_VERSION field",
                version, field_bits
            ),
            UpdateError::ReadbackMismatch { offset } => {
                write!(
                    f,
                    "flash read-back differs from the written data at partition offset 0x{:x}",
                    offset
                )
            }
            UpdateError::Resume(e) => e.fmt(f),
            UpdateError::Guard(e) => e.fmt(f),
            UpdateError::Signature(e) => e.fmt(f),
            UpdateError::Delta(e) => write!(f, "delta patch: {e}"),
        }
    }
}
