//! ESP-ADF's numeric result reasons (`ota_service_err_reason_t` in esp-adf
//! `components/ota_service/include/ota_service.h`), and the ESP-IDF `esp_err_t` codes that ADF
//! passes through the same field.
//!
//! Kept so results can be reported exactly as ADF applications expect, while our
//! [`Outcome`](crate::Outcome) says what really happened: success, skipped (not newer) or failed.

use core::fmt;

/// `OTA_SERVICE_ERR_REASON_BASE` (esp-adf `components/ota_service/include/ota_service.h`).
pub const REASON_BASE: i32 = 0x90000;

/// A known ADF reason, or any other `esp_err_t` code: ADF's app procedures return ESP-IDF's
/// codes through the same field (esp-adf `components/ota_service/ota_proc_default.c`).
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
    /// `ESP_ERR_OTA_VALIDATE_FAILED` (esp-idf `components/app_update/include/esp_ota_ops.h`):
    /// the written image did not verify.
    OtaValidateFailed,
    /// Any other raw `esp_err_t`.
    Other(i32),
}

impl Reason {
    pub const fn code(self) -> i32 {
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
            Reason::OtaValidateFailed => ESP_ERR_OTA_VALIDATE_FAILED,
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
            Reason::Other(c) => esp_err_name(c).unwrap_or("UNKNOWN ERROR"),
        }
    }
}

/// `ESP_ERR_OTA_BASE` (esp-idf `components/app_update/include/esp_ota_ops.h`).
pub const ESP_ERR_OTA_BASE: i32 = 0x1500;
/// `ESP_ERR_HTTPS_OTA_BASE` (esp-idf `components/esp_https_ota/include/esp_https_ota.h`).
pub const ESP_ERR_HTTPS_OTA_BASE: i32 = 0x9000;
/// `ESP_ERR_INVALID_VERSION` (esp-idf `components/esp_common/include/esp_err.h`): what IDF
/// reports for an image of another chip.
pub const ESP_ERR_INVALID_VERSION: i32 = 0x10A;
/// `ESP_ERR_OTA_PARTITION_CONFLICT` (`esp_ota_ops.h`: base + 1, "request was to write or erase
/// the current running partition"): an item would write outside its own target
/// (`ota_core::guard`).
pub const ESP_ERR_OTA_PARTITION_CONFLICT: i32 = ESP_ERR_OTA_BASE + 1;
/// `ESP_ERR_OTA_SELECT_INFO_INVALID` (`esp_ota_ops.h`: base + 2).
pub const ESP_ERR_OTA_SELECT_INFO_INVALID: i32 = ESP_ERR_OTA_BASE + 2;
/// `ESP_ERR_OTA_VALIDATE_FAILED` (`esp_ota_ops.h`: base + 3): the image did not verify.
pub const ESP_ERR_OTA_VALIDATE_FAILED: i32 = ESP_ERR_OTA_BASE + 3;
/// `ESP_ERR_OTA_SMALL_SEC_VER` (`esp_ota_ops.h`: base + 4): anti-rollback refused an image
/// whose `secure_version` is below the eFuse counter.
pub const ESP_ERR_OTA_SMALL_SEC_VER: i32 = ESP_ERR_OTA_BASE + 4;
/// `ESP_ERR_OTA_ROLLBACK_FAILED` (`esp_ota_ops.h`: base + 5): no app to roll back to.
pub const ESP_ERR_OTA_ROLLBACK_FAILED: i32 = ESP_ERR_OTA_BASE + 5;
/// `ESP_ERR_OTA_ROLLBACK_INVALID_STATE` (`esp_ota_ops.h`: base + 6): the running app is still
/// PENDING_VERIFY.
pub const ESP_ERR_OTA_ROLLBACK_INVALID_STATE: i32 = ESP_ERR_OTA_BASE + 6;
/// `ESP_ERR_HTTPS_OTA_IN_PROGRESS` (`esp_https_ota.h`: base + 1).
pub const ESP_ERR_HTTPS_OTA_IN_PROGRESS: i32 = ESP_ERR_HTTPS_OTA_BASE + 1;

/// The `esp_err_to_name` name of the ESP-IDF codes an OTA can report (esp-idf
/// `components/esp_common/include/esp_err.h`, `components/app_update/include/esp_ota_ops.h`,
/// `components/esp_https_ota/include/esp_https_ota.h`).
pub fn esp_err_name(code: i32) -> Option<&'static str> {
    Some(match code {
        0 => "ESP_OK",
        -1 => "ESP_FAIL",
        0x101 => "ESP_ERR_NO_MEM",
        0x102 => "ESP_ERR_INVALID_ARG",
        0x103 => "ESP_ERR_INVALID_STATE",
        0x104 => "ESP_ERR_INVALID_SIZE",
        0x105 => "ESP_ERR_NOT_FOUND",
        0x106 => "ESP_ERR_NOT_SUPPORTED",
        0x107 => "ESP_ERR_TIMEOUT",
        0x108 => "ESP_ERR_INVALID_RESPONSE",
        0x109 => "ESP_ERR_INVALID_CRC",
        ESP_ERR_INVALID_VERSION => "ESP_ERR_INVALID_VERSION",
        0x10D => "ESP_ERR_NOT_ALLOWED",
        ESP_ERR_OTA_BASE => "ESP_ERR_OTA_BASE",
        ESP_ERR_OTA_PARTITION_CONFLICT => "ESP_ERR_OTA_PARTITION_CONFLICT",
        ESP_ERR_OTA_SELECT_INFO_INVALID => "ESP_ERR_OTA_SELECT_INFO_INVALID",
        ESP_ERR_OTA_VALIDATE_FAILED => "ESP_ERR_OTA_VALIDATE_FAILED",
        ESP_ERR_OTA_SMALL_SEC_VER => "ESP_ERR_OTA_SMALL_SEC_VER",
        ESP_ERR_OTA_ROLLBACK_FAILED => "ESP_ERR_OTA_ROLLBACK_FAILED",
        ESP_ERR_OTA_ROLLBACK_INVALID_STATE => "ESP_ERR_OTA_ROLLBACK_INVALID_STATE",
        ESP_ERR_HTTPS_OTA_BASE => "ESP_ERR_HTTPS_OTA_BASE",
        ESP_ERR_HTTPS_OTA_IN_PROGRESS => "ESP_ERR_HTTPS_OTA_IN_PROGRESS",
        _ => return None,
    })
}

/// One format for every code, hex then name, as ESP-IDF's `ESP_ERROR_CHECK` prints an
/// `esp_err_t` (`0x1503 (ESP_ERR_OTA_VALIDATE_FAILED)`) without the parentheses:
/// `0x90004 NO_HIGHER_VERSION`, `0x1506 ESP_ERR_OTA_ROLLBACK_INVALID_STATE`, `0xffffffff
/// UNKNOWN` (ESP_FAIL, ADF's `OTA_SERV_ERR_REASON_UNKNOWN`).
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} {}", self.code(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_home_that_the_other_modules_reexport() {
        assert_eq!(crate::items::ESP_ERR_OTA_PARTITION_CONFLICT, 0x1501);
        assert_eq!(
            crate::items::ESP_ERR_OTA_SMALL_SEC_VER,
            ESP_ERR_OTA_SMALL_SEC_VER
        );
        assert_eq!(
            crate::source::reason::STREAM_RD_FAIL,
            Reason::StreamRdFail.code()
        );
        assert_eq!(crate::source::reason::URL_PARSE_FAIL, 0x90002);
        assert_eq!(
            Reason::OtaValidateFailed.code(),
            ESP_ERR_OTA_VALIDATE_FAILED
        );
        assert_eq!(
            Reason::Other(ESP_ERR_OTA_ROLLBACK_FAILED).to_string(),
            "0x1505 ESP_ERR_OTA_ROLLBACK_FAILED"
        );
        assert_eq!(
            esp_err_name(ESP_ERR_INVALID_VERSION),
            Some("ESP_ERR_INVALID_VERSION")
        );
    }

    #[test]
    fn codes_match_adf() {
        assert_eq!(Reason::NoHigherVersion.code(), 589828);
        assert_eq!(Reason::NullPointer.code(), 589825);
        assert_eq!(Reason::GetNewAppDescFail.code(), 0x9000D);
        assert_eq!(Reason::from_code(0x90008), Reason::PartitionNotFound);
        assert_eq!(Reason::from_code(0x102), Reason::Other(0x102));
        assert_eq!(Reason::from_code(-1), Reason::Unknown);
    }

    #[test]
    fn reasons_print_as_hex_then_name() {
        assert_eq!(
            Reason::NoHigherVersion.to_string(),
            "0x90004 NO_HIGHER_VERSION"
        );
        assert_eq!(
            Reason::OtaValidateFailed.to_string(),
            "0x1503 ESP_ERR_OTA_VALIDATE_FAILED"
        );
        assert_eq!(
            Reason::Other(0x1506).to_string(),
            "0x1506 ESP_ERR_OTA_ROLLBACK_INVALID_STATE"
        );
        assert_eq!(
            Reason::Other(0x1504).to_string(),
            "0x1504 ESP_ERR_OTA_SMALL_SEC_VER"
        );
        assert_eq!(
            Reason::Other(0x102).to_string(),
            "0x102 ESP_ERR_INVALID_ARG"
        );
        assert_eq!(Reason::Unknown.to_string(), "0xffffffff UNKNOWN");
        assert_eq!(Reason::Other(0x7777).to_string(), "0x7777 UNKNOWN ERROR");
    }
}
