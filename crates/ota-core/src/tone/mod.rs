//! ESP-ADF flash tone bins (format 0 and 1): byte-exact types, a whole-bin reader, the on-device
//! reader (`tone_partition_init`) and our stricter check, the ADF example's upgrade policy as a
//! pure decision, and a packer reproducing `mk_audio_tone.py`. adf-ota-service.md §7, §8.

use core::fmt;

use crc::{Crc, CRC_32_ISO_HDLC};

use crate::bytes::{array, le16, le32, put};

mod format;
mod packer;
mod partition_check;
mod policy;
mod reader;
mod stream;
#[cfg(test)]
mod tests;

pub use format::{ToneDesc, ToneFileInfo, ToneHeader};
pub use packer::{file_type_for_name, pack, ToneEntry};
pub use partition_check::{
    tone_partition_check, tone_partition_check_size, tone_partition_init, ToneInfo,
};
pub use policy::{decide_upgrade, incoming_needs_desc, ToneDecision, ToneReject};
pub use reader::{ParseOptions, ToneBin, ToneFiles};
pub use stream::{ToneStreamCheck, ToneStreamSummary};

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

/// `FLASH_TONE_HEADER`, the header tag (bytes `53 20`). adf-ota-service.md §8.2.
pub const TONE_HEADER_TAG: u16 = 0x2053;
/// `sizeof(flash_tone_header_t)`. §8.2.
pub const TONE_HEADER_SIZE: usize = 8;
/// `sizeof(esp_app_desc_t)`, the format-1 descriptor at offset 8. §8.2.
pub const TONE_DESC_SIZE: usize = 256;
/// `FLASH_TONE_MAGIC_WORD` in the descriptor (not IDF's 0xABCD5432). §8.2.
pub const TONE_DESC_MAGIC: u32 = 0xF55F_9876;
/// `FLASH_TONE_FILE_TAG`, first byte of every file-table entry. §8.2.
pub const FLASH_TONE_FILE_TAG: u8 = 0x28;
/// `FLASH_TONE_TAIL`, the u16 after the CRC in format 1 (bytes `AC DF`). §8.2.
pub const FLASH_TONE_TAIL: u16 = 0xDFAC;
/// `FLASH_TONE_PROJECT_NAME`, the descriptor's project name. §8.2.
pub const FLASH_TONE_PROJECT_NAME: &str = "ESP_TONE_BIN";
/// `FLASH_TONE_FILE_INFO_BLOCK`, size of one `tone_file_info_t`. §8.2.
pub const TONE_FILE_INFO_SIZE: usize = 64;
/// `TONE_VERSION_0`: header + file table + files. §8.1.
pub const TONE_FORMAT_0: u32 = 0;
/// `TONE_VERSION_1`: header + desc + file table + files + crc + tail. §8.1.
pub const TONE_FORMAT_1: u32 = 1;
/// CRC32 (4) + tail (2) after the data in format 1. §8.2 "Format-1 trailer".
pub const TONE_TRAILER_SIZE: usize = 6;
/// `file_type` for `.mp3` (by extension, case-insensitive). §8.2.
pub const TONE_FILE_TYPE_MP3: u8 = 0;
/// `file_type` for `.wav`. §8.2.
pub const TONE_FILE_TYPE_WAV: u8 = 1;
/// File data is padded with this byte to a multiple of [`TONE_DATA_ALIGN`]. §8.2 "Data region".
pub const TONE_PAD_BYTE: u8 = 0xFF;
/// File data alignment. §8.2 "Data region".
pub const TONE_DATA_ALIGN: u32 = 4;
/// The generator packs `song_index` as a u8 (`struct.pack("<B")`), so at most 256 files. §8.2.
pub const TONE_MAX_FILES: usize = 256;

/// ADF `ota_service_err_reason_t` values used by the tone policy (adf-ota-service.md §2.3).
pub const ADF_REASON_UNKNOWN: i32 = -1;
/// `OTA_SERV_ERR_REASON_ERROR_VERSION` (§2.3).
pub const ADF_REASON_ERROR_VERSION: i32 = 0x90003;
/// `OTA_SERV_ERR_REASON_NO_HIGHER_VERSION` (§2.3).
pub const ADF_REASON_NO_HIGHER_VERSION: i32 = 0x90004;
/// `OTA_SERV_ERR_REASON_ERROR_MAGIC_WORD` (§2.3).
pub const ADF_REASON_ERROR_MAGIC_WORD: i32 = 0x90005;
/// `OTA_SERV_ERR_REASON_ERROR_PROJECT_NAME` (§2.3).
pub const ADF_REASON_ERROR_PROJECT_NAME: i32 = 0x90006;
/// `OTA_SERV_ERR_REASON_PARTITION_RD_FAIL` (§2.3).
pub const ADF_REASON_PARTITION_RD_FAIL: i32 = 0x9000A;
/// `OTA_SERV_ERR_REASON_STREAM_RD_FAIL` (§2.3).
pub const ADF_REASON_STREAM_RD_FAIL: i32 = 0x9000C;

/// Offset of the file table: 8 (format 0) or 264 (format 1). §8.1.
const TABLE_OFFSET_F0: u32 = TONE_HEADER_SIZE as u32;
const TABLE_OFFSET_F1: u32 = (TONE_HEADER_SIZE + TONE_DESC_SIZE) as u32;

/// zlib.crc32 = CRC-32/ISO-HDLC. §8.2 "Format-1 trailer".
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Chunk size for streamed flash reads (CRC over the partition): constant stack memory.
const CHUNK: usize = 256;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What was wrong with a tone bin / tone partition, and where (offsets are relative to the
/// start of the bin, i.e. of the partition).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToneError {
    /// Generic malformed data at `offset` (kept from the skeleton contract).
    Invalid { offset: u32 },
    /// The input ends before `what` (which needs `[offset, offset+need)`); only `have` bytes.
    Truncated {
        what: &'static str,
        offset: u32,
        need: u32,
        have: u32,
    },
    /// `header_tag` is not 0x2053 (ADF "Not flash tone partition").
    BadHeaderTag { found: u16 },
    /// `format` is neither 0 nor 1.
    UnsupportedFormat { format: u32 },
    /// Descriptor magic is not 0xF55F9876.
    BadDescMagic { found: u32 },
    /// The file table `[table_offset, table_end)` does not fit in `size` bytes.
    TableOutside {
        table_offset: u32,
        table_end: u64,
        size: u32,
    },
    /// Entry `index` (at `offset`) has a `file_tag` other than 0x28.
    BadFileTag { index: u16, offset: u32, found: u8 },
    /// Entry `index` (at `offset`) has `song_index` != its position.
    BadSongIndex { index: u16, offset: u32, found: u8 },
    /// Entry `index`'s data does not start where the previous file (or the table) ends.
    NotContiguous {
        index: u16,
        expected_adr: u64,
        found_adr: u32,
    },
    /// Entry `index`'s data `[song_adr, song_adr+song_len+pad)` exceeds `size`.
    FileOutside {
        index: u16,
        song_adr: u32,
        song_len: u32,
        size: u32,
    },
    /// A padding byte after file `index` at `offset` is not 0xFF.
    BadPadding { index: u16, offset: u32, found: u8 },
    /// The u16 at `offset` is not the tail 0xDFAC (ADF "Flash tone init failed at tail check").
    TailMismatch { offset: u32, found: u16 },
    /// The tail address computed from the last entry, `offset`, is outside the partition.
    TailOutside { offset: u32, size: u32 },
    /// Stored CRC (at `offset`) != zlib CRC-32 of `[0, offset)`.
    CrcMismatch {
        offset: u32,
        stored: u32,
        computed: u32,
    },
    /// `size - end` bytes follow the end of the bin at `end`.
    TrailingBytes { end: u32, size: u32 },
    /// Packer: the file type of entry `index` is not mp3/wav (by its name's extension).
    UnknownFileType { index: usize },
    /// Packer: more files than the generator can index (256).
    TooManyFiles { count: usize },
    /// The bin would be (or is) larger than u32 offsets allow; entry `index` overflows.
    TooLarge { index: usize },
    /// Format 1 without files: ADF's `tone_partition_init` computes the tail address 4 and
    /// rejects it (adf-ota-service.md §8.3), so such a bin could never be read on the device.
    NoFiles,
    /// A byte other than 0xFF at `offset`, after the end of the bin at `end`.
    TrailingData { end: u32, offset: u64, found: u8 },
    /// The source announced `announced` bytes (file size, `Content-Length`) but the bin, and
    /// so the stream, holds `received`.
    LengthMismatch { announced: u64, received: u64 },
}

impl core::error::Error for ToneError {}

impl fmt::Display for ToneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ToneError::Invalid { offset } => write!(f, "invalid tone bin data at offset 0x{:x}", offset),
            ToneError::Truncated { what, offset, need, have } => write!(
                f,
                "tone bin truncated: {} needs bytes 0x{:x}..0x{:x}, but only {} bytes are available",
                what,
                offset,
                offset as u64 + need as u64,
                have
            ),
            ToneError::BadHeaderTag { found } => write!(
                f,
                "Not flash tone partition: header tag 0x{:04x} at offset 0 (expected 0x{:04x})",
                found, TONE_HEADER_TAG
            ),
            ToneError::UnsupportedFormat { format } => {
                write!(f, "unsupported tone bin format {} at offset 4 (expected 0 or 1)", format)
            }
            ToneError::BadDescMagic { found } => write!(
                f,
                "tone descriptor magic 0x{:08x} at offset 8 (expected 0x{:08x})",
                found, TONE_DESC_MAGIC
            ),
            ToneError::TableOutside { table_offset, table_end, size } => write!(
                f,
                "tone file table 0x{:x}..0x{:x} does not fit in {} bytes",
                table_offset, table_end, size
            ),
            ToneError::BadFileTag { index, offset, found } => write!(
                f,
                "tone file entry {} at offset 0x{:x}: file tag 0x{:02x} (expected 0x{:02x})",
                index, offset, found, FLASH_TONE_FILE_TAG
            ),
            ToneError::BadSongIndex { index, offset, found } => write!(
                f,
                "tone file entry {} at offset 0x{:x}: song index {} (expected {})",
                index, offset, found, index
            ),
            ToneError::NotContiguous { index, expected_adr, found_adr } => write!(
                f,
                "tone file {}: data at 0x{:x}, expected 0x{:x} (files must follow each other, padded to 4)",
                index, found_adr, expected_adr
            ),
            ToneError::FileOutside { index, song_adr, song_len, size } => write!(
                f,
                "tone file {}: data 0x{:x}+{} (padded to 4) ends beyond the {} available bytes",
                index, song_adr, song_len, size
            ),
            ToneError::BadPadding { index, offset, found } => write!(
                f,
                "tone file {}: padding byte 0x{:02x} at offset 0x{:x} (expected 0xff)",
                index, found, offset
            ),
            ToneError::TailMismatch { offset, found } => write!(
                f,
                "Flash tone init failed at tail check: found 0x{:04x} at 0x{:x} (expected 0x{:04x})",
                found, offset, FLASH_TONE_TAIL
            ),
            ToneError::TailOutside { offset, size } => write!(
                f,
                "Flash tone init failed at tail check: tail address 0x{:x} is outside the {}-byte partition",
                offset, size
            ),
            ToneError::CrcMismatch { offset, stored, computed } => write!(
                f,
                "tone bin CRC mismatch: stored 0x{:08x} computed 0x{:08x} (CRC at 0x{:x})",
                stored, computed, offset
            ),
            ToneError::TrailingBytes { end, size } => write!(
                f,
                "tone bin ends at 0x{:x} but {} more bytes follow (size {})",
                end,
                size.saturating_sub(end),
                size
            ),
            ToneError::UnknownFileType { index } => write!(
                f,
                "tone entry {}: unknown file type (the name must end in .mp3 or .wav)",
                index
            ),
            ToneError::TooManyFiles { count } => write!(
                f,
                "{} tone files: at most {} fit (song_index is one byte)",
                count, TONE_MAX_FILES
            ),
            ToneError::TooLarge { index } => {
                write!(f, "tone entry {}: the bin would exceed 4 GiB (u32 offsets)", index)
            }
            ToneError::NoFiles => write!(
                f,
                "tone bin format 1 with 0 files at offset 2: ADF's tone_partition_init cannot read it (tail address 4)"
            ),
            ToneError::TrailingData { end, offset, found } => write!(
                f,
                "tone bin ends at 0x{:x} but byte 0x{:02x} at offset 0x{:x} follows (only erased 0xff bytes may follow a bin)",
                end, found, offset
            ),
            ToneError::LengthMismatch { announced, received } => write!(
                f,
                "the source announced {} bytes but sent {} (the tone bin's header and table say where it ends)",
                announced, received
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Little-endian helpers (checked, no panics)
// ---------------------------------------------------------------------------------------------

fn need<'a>(
    bytes: &'a [u8],
    offset: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], ToneError> {
    offset
        .checked_add(len)
        .and_then(|end| bytes.get(offset..end))
        .ok_or(ToneError::Truncated {
            what,
            offset: offset as u32,
            need: len as u32,
            have: bytes.len().min(u32::MAX as usize) as u32,
        })
}

/// Copy `s` into a NUL-padded fixed field, truncating like Python's `struct.pack("<Ns")`.
fn fixed<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = s.len().min(N);
    if let (Some(d), Some(src)) = (a.get_mut(..n), s.get(..n)) {
        d.copy_from_slice(src);
    }
    a
}

/// The field up to its first NUL (the whole field if there is none).
fn c_bytes(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    field.get(..end).unwrap_or(field)
}

/// The field up to its first NUL as text; invalid UTF-8 is cut at the first bad byte.
fn c_str(field: &[u8]) -> &str {
    let b = c_bytes(field);
    match core::str::from_utf8(b) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(b.get(..e.valid_up_to()).unwrap_or(&[])).unwrap_or(""),
    }
}

/// Padding after a file of `len` bytes: `(4 - len % 4) % 4`. §8.2 "Data region".
pub const fn pad4(len: u32) -> u32 {
    (TONE_DATA_ALIGN - len % TONE_DATA_ALIGN) % TONE_DATA_ALIGN
}

/// Offset of the file table for a format (8 for format 0, 264 otherwise). §8.1.
pub const fn table_offset(format: u32) -> u32 {
    if format == TONE_FORMAT_0 {
        TABLE_OFFSET_F0
    } else {
        TABLE_OFFSET_F1
    }
}
