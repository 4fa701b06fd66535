//! The ADF example's tone upgrade policy (`audio_tone_need_upgrade`, adf-ota-service.md §7) as a
//! pure decision, without IO.

use super::{
    c_str, ToneDesc, ToneHeader, ToneInfo, ADF_REASON_ERROR_MAGIC_WORD,
    ADF_REASON_ERROR_PROJECT_NAME, ADF_REASON_ERROR_VERSION, ADF_REASON_NO_HIGHER_VERSION,
    ADF_REASON_PARTITION_RD_FAIL, ADF_REASON_STREAM_RD_FAIL, ADF_REASON_UNKNOWN,
    FLASH_TONE_PROJECT_NAME, TONE_DESC_MAGIC, TONE_FORMAT_0, TONE_FORMAT_1, TONE_HEADER_TAG,
};
use core::fmt;

/// Why the example's `audio_tone_need_upgrade` refuses an incoming tone bin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToneReject {
    /// Incoming `header_tag` != 0x2053 (ADF logs "not audio tone bin", returns UNKNOWN −1).
    NotToneBin,
    /// Incoming descriptor magic != 0xF55F9876 (ERROR_MAGIC_WORD).
    BadMagic { found: u32 },
    /// Project-name test failed (ERROR_PROJECT_NAME).
    BadProjectName,
    /// Incoming version does not parse as `vA.B.C` (ERROR_VERSION).
    InvalidVersion,
    /// Incoming version ≤ current (NO_HIGHER_VERSION); the raw `char[32]` fields.
    NotNewer {
        current: [u8; 32],
        incoming: [u8; 32],
    },
    /// Incoming format ≠ 0 but no descriptor was given (ADF: STREAM_RD_FAIL, short stream).
    MissingIncomingDesc,
    /// Current format 1 but no current descriptor (ADF: PARTITION_RD_FAIL).
    MissingCurrentDesc,
}

impl ToneReject {
    /// The `ota_service_err_reason_t` ADF reports for this refusal (§2.3).
    pub fn adf_reason(&self) -> i32 {
        match self {
            ToneReject::NotToneBin => ADF_REASON_UNKNOWN,
            ToneReject::BadMagic { .. } => ADF_REASON_ERROR_MAGIC_WORD,
            ToneReject::BadProjectName => ADF_REASON_ERROR_PROJECT_NAME,
            ToneReject::InvalidVersion => ADF_REASON_ERROR_VERSION,
            ToneReject::NotNewer { .. } => ADF_REASON_NO_HIGHER_VERSION,
            ToneReject::MissingIncomingDesc => ADF_REASON_STREAM_RD_FAIL,
            ToneReject::MissingCurrentDesc => ADF_REASON_PARTITION_RD_FAIL,
        }
    }
}

impl fmt::Display for ToneReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToneReject::NotToneBin => write!(f, "not audio tone bin (incoming header tag is not 0x{:04x})", TONE_HEADER_TAG),
            ToneReject::BadMagic { found } => write!(
                f,
                "incoming tone descriptor magic 0x{:08x} (expected 0x{:08x})",
                found, TONE_DESC_MAGIC
            ),
            ToneReject::BadProjectName => {
                write!(f, "incoming tone descriptor project name is not {:?}", FLASH_TONE_PROJECT_NAME)
            }
            ToneReject::InvalidVersion => write!(
                f,
                "incoming tone version is invalid, the version should be (V0.0.0 - V255.255.255)"
            ),
            ToneReject::NotNewer { current, incoming } => write!(
                f,
                "The incoming version is same as or lower than the running version (current {:?}, incoming {:?})",
                c_str(current),
                c_str(incoming)
            ),
            ToneReject::MissingIncomingDesc => write!(f, "incoming tone bin has format != 0 but no descriptor was read"),
            ToneReject::MissingCurrentDesc => write!(f, "current tone partition is format 1 but its descriptor is missing"),
        }
    }
}

/// What to do with the incoming tone bin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToneDecision {
    /// Current partition invalid: erase it and write the whole stream from offset 0.
    WriteAll,
    /// Erase, write the 8-byte header (and the 256-byte descriptor if `need_desc`) already
    /// read, then stream the rest at offset 8 (or 264).
    Write {
        need_desc: bool,
    },
    Reject(ToneReject),
}

/// Does the caller need to read the 256-byte descriptor after the 8-byte header? ADF reads it
/// only for a tone bin (tag 0x2053) whose format is not 0. (With no valid current partition
/// ADF reads nothing at all: see [`decide_upgrade`].)
pub fn incoming_needs_desc(header: &ToneHeader) -> bool {
    header.tag_ok() && header.format != TONE_FORMAT_0
}

/// Project-name test. ADF (`strict == false`): `strstr("ESP_TONE_BIN", incoming)`, i.e. the
/// incoming C string must be a SUBSTRING of "ESP_TONE_BIN" ("", "TONE", "BIN" pass). A field
/// without NUL runs on into `time` in C (≥ 32 chars), which can never be such a substring.
/// Strict: must equal "ESP_TONE_BIN".
fn project_name_ok(field: &[u8; 32], strict: bool) -> bool {
    let Some(n) = field.iter().position(|&c| c == 0) else {
        return false;
    };
    let name = field.get(..n).unwrap_or(&[]);
    let want = FLASH_TONE_PROJECT_NAME.as_bytes();
    if strict {
        name == want
    } else {
        name.is_empty() || want.windows(name.len()).any(|w| w == name)
    }
}

/// The example's `audio_tone_need_upgrade` (adf-ota-service.md §7) as a pure decision.
///
/// * `current == None` (the current partition fails [`tone_partition_init`](super::tone_partition_init)): `WriteAll`,
///   whatever the incoming data is — ADF reads nothing from the stream and does not check the
///   incoming tag (quirk; kept in both modes). Callers may skip reading the header then.
/// * Incoming tag ≠ 0x2053: `Reject(NotToneBin)`.
/// * Incoming format 0: `Write { need_desc: false }` — always, no version check, so a
///   downgrade to format 0 is possible (quirk §11.8, kept in both modes).
/// * Otherwise the incoming descriptor must have the magic and pass the project-name test
///   (ADF quirk when `!strict`: inverted substring test, see `project_name_ok`; `strict`:
///   exact "ESP_TONE_BIN").
/// * Only if the current format is exactly 1: the incoming version must parse (`vA.B.C`) and be
///   greater than the current one (an unparseable current version counts as −1, so it always
///   loses). A current format 0 (or any other accepted format) is replaced WITHOUT a version
///   comparison (quirk §11.8, kept in both modes).
/// * Then `Write { need_desc: true }`.
pub fn decide_upgrade(
    current: Option<&ToneInfo>,
    incoming_header: &ToneHeader,
    incoming_desc: Option<&ToneDesc>,
    strict: bool,
) -> ToneDecision {
    let Some(cur) = current else {
        return ToneDecision::WriteAll;
    };
    if !incoming_header.tag_ok() {
        return ToneDecision::Reject(ToneReject::NotToneBin);
    }
    if incoming_header.format == TONE_FORMAT_0 {
        return ToneDecision::Write { need_desc: false };
    }
    let Some(inc) = incoming_desc else {
        return ToneDecision::Reject(ToneReject::MissingIncomingDesc);
    };
    if inc.magic_word != TONE_DESC_MAGIC {
        return ToneDecision::Reject(ToneReject::BadMagic {
            found: inc.magic_word,
        });
    }
    if !project_name_ok(&inc.project_name, strict) {
        return ToneDecision::Reject(ToneReject::BadProjectName);
    }
    if cur.header.format == TONE_FORMAT_1 {
        let Some(cur_desc) = cur.desc.as_ref() else {
            return ToneDecision::Reject(ToneReject::MissingCurrentDesc);
        };
        let Some(inc_num) = inc.adf_version_number() else {
            return ToneDecision::Reject(ToneReject::InvalidVersion);
        };
        // C: `num(inc) <= num(cur)` with −1 for an unparseable current version.
        let newer = match cur_desc.adf_version_number() {
            Some(cur_num) => inc_num > cur_num,
            None => true,
        };
        if !newer {
            return ToneDecision::Reject(ToneReject::NotNewer {
                current: cur_desc.version,
                incoming: inc.version,
            });
        }
    }
    ToneDecision::Write { need_desc: true }
}
