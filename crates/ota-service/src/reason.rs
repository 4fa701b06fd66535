//! ESP-ADF's numeric result reasons (`ota_service_err_reason_t`, adf-ota-service.md §2.3).
//!
//! Kept so results can be reported exactly as ADF applications expect, while our [`Outcome`]
//! (crate::service) says what really happened: success, skipped (not newer) or failed.

use std::fmt;

/// `OTA_SERVICE_ERR_REASON_BASE` (adf-ota-service.md §2.1).
pub const REASON_BASE: i32 = 0x90000;

/// A known ADF reason, or any other `esp_err_t` code (adf-ota-service.md §2.3 note).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Unknown,
    Success,
    NullPointer,
    UrlParseFail,
    ErrorVersion,
    NoHigherVersion,
    ErrorMagicWord,
    ErrorProjectName,
    FileNotFound,
    PartitionNotFound,
    PartitionWtFail,
    PartitionRdFail,
    StreamInitFail,
    StreamRdFail,
    GetNewAppDescFail,
    /// `ESP_ERR_OTA_VALIDATE_FAILED` (idf-formats.md §2.8): the written image did not verify.
    OtaValidateFailed,
    /// Any other raw `esp_err_t`.
    Other(i32),
}

impl Reason {
    pub fn code(self) -> i32 {
        match self {
            Reason::Unknown => -1,
            Reason::Success => 0,
            Reason::NullPointer => REASON_BASE + 1,
            Reason::UrlParseFail => REASON_BASE + 2,
            Reason::ErrorVersion => REASON_BASE + 3,
            Reason::NoHigherVersion => REASON_BASE + 4,
            Reason::ErrorMagicWord => REASON_BASE + 5,
            Reason::ErrorProjectName => REASON_BASE + 6,
            Reason::FileNotFound => REASON_BASE + 7,
            Reason::PartitionNotFound => REASON_BASE + 8,
            Reason::PartitionWtFail => REASON_BASE + 9,
            Reason::PartitionRdFail => REASON_BASE + 0xA,
            Reason::StreamInitFail => REASON_BASE + 0xB,
            Reason::StreamRdFail => REASON_BASE + 0xC,
            Reason::GetNewAppDescFail => REASON_BASE + 0xD,
            Reason::OtaValidateFailed => 0x1503,
            Reason::Other(c) => c,
        }
    }

    pub fn from_code(code: i32) -> Reason {
        const ALL: [Reason; 16] = [
            Reason::Unknown,
            Reason::Success,
            Reason::NullPointer,
            Reason::UrlParseFail,
            Reason::ErrorVersion,
            Reason::NoHigherVersion,
            Reason::ErrorMagicWord,
            Reason::ErrorProjectName,
            Reason::FileNotFound,
            Reason::PartitionNotFound,
            Reason::PartitionWtFail,
            Reason::PartitionRdFail,
            Reason::StreamInitFail,
            Reason::StreamRdFail,
            Reason::GetNewAppDescFail,
            Reason::OtaValidateFailed,
        ];
        ALL.into_iter()
            .find(|r| r.code() == code)
            .unwrap_or(Reason::Other(code))
    }

    /// ADF's C name, without the `OTA_SERV_ERR_REASON_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Unknown => "UNKNOWN",
            Reason::Success => "SUCCESS",
            Reason::NullPointer => "NULL_POINTER",
            Reason::UrlParseFail => "URL_PARSE_FAIL",
            Reason::ErrorVersion => "ERROR_VERSION",
            Reason::NoHigherVersion => "NO_HIGHER_VERSION",
            Reason::ErrorMagicWord => "ERROR_MAGIC_WORD",
            Reason::ErrorProjectName => "ERROR_PROJECT_NAME",
            Reason::FileNotFound => "FILE_NOT_FOUND",
            Reason::PartitionNotFound => "PARTITION_NOT_FOUND",
            Reason::PartitionWtFail => "PARTITION_WT_FAIL",
            Reason::PartitionRdFail => "PARTITION_RD_FAIL",
            Reason::StreamInitFail => "STREAM_INIT_FAIL",
            Reason::StreamRdFail => "STREAM_RD_FAIL",
            Reason::GetNewAppDescFail => "GET_NEW_APP_DESC_FAIL",
            Reason::OtaValidateFailed => "ESP_ERR_OTA_VALIDATE_FAILED",
            Reason::Other(crate::items::ESP_ERR_OTA_PARTITION_CONFLICT) => {
                "ESP_ERR_OTA_PARTITION_CONFLICT"
            }
            Reason::Other(crate::items::ESP_ERR_OTA_SMALL_SEC_VER) => "ESP_ERR_OTA_SMALL_SEC_VER",
            Reason::Other(crate::items::ESP_ERR_OTA_ROLLBACK_INVALID_STATE) => {
                "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"
            }
            Reason::Other(_) => "OTHER",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_adf() {
        assert_eq!(Reason::NoHigherVersion.code(), 589828);
        assert_eq!(Reason::NullPointer.code(), 589825);
        assert_eq!(Reason::GetNewAppDescFail.code(), 0x9000D);
        assert_eq!(Reason::from_code(0x90008), Reason::PartitionNotFound);
        assert_eq!(Reason::from_code(0x102), Reason::Other(0x102));
        assert_eq!(Reason::from_code(-1), Reason::Unknown);
    }
}
