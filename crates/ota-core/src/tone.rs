//! ESP-ADF flash tone bins (format 0 and 1): byte-exact types, a whole-bin reader, the on-device
//! reader (`tone_partition_init`) and our stricter check, the ADF example's upgrade policy as a
//! pure decision, and a packer reproducing `mk_audio_tone.py`. adf-ota-service.md §7, §8.

use core::fmt;

use crc::{Crc, CRC_32_ISO_HDLC};
use embedded_storage::nor_flash::ReadNorFlash;

use crate::flash::{self, FlashError, FlashOp, Region};
use crate::image::AppDesc;
use crate::partition::Partition;

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
/// Scratch window for reads that the flash driver needs aligned to `READ_SIZE`.
const ALIGN_SCRATCH: usize = 64;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What was wrong with a tone bin / tone partition, and where (offsets are relative to the
/// start of the bin, i.e. of the partition).
#[derive(Clone, Debug, PartialEq, Eq)]
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

fn le16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = b.get(at..at + N) {
        a.copy_from_slice(s);
    }
    a
}

fn put(out: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = out.get_mut(at..at + src.len()) {
        d.copy_from_slice(src);
    }
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

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// `flash_tone_header_t` (8 bytes, §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToneHeader {
    pub header_tag: u16,
    pub total_num: u16,
    pub format: u32,
}

impl ToneHeader {
    /// Layout only: reads the first 8 bytes; the tag and format are NOT checked here.
    pub fn parse(bytes: &[u8]) -> Result<ToneHeader, ToneError> {
        let b = need(bytes, 0, TONE_HEADER_SIZE, "header")?;
        Ok(ToneHeader {
            header_tag: le16(b, 0),
            total_num: le16(b, 2),
            format: le32(b, 4),
        })
    }

    pub fn to_bytes(&self) -> [u8; TONE_HEADER_SIZE] {
        let mut o = [0u8; TONE_HEADER_SIZE];
        put(&mut o, 0, &self.header_tag.to_le_bytes());
        put(&mut o, 2, &self.total_num.to_le_bytes());
        put(&mut o, 4, &self.format.to_le_bytes());
        o
    }

    /// `header_tag == 0x2053`.
    pub fn tag_ok(&self) -> bool {
        self.header_tag == TONE_HEADER_TAG
    }
}

/// `tone_file_info_t` (64 bytes, §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToneFileInfo {
    pub file_tag: u8,
    pub song_index: u8,
    /// 0 = mp3, 1 = wav.
    pub file_type: u8,
    pub song_ver: u8,
    /// Absolute offset from the start of the bin / partition.
    pub song_adr: u32,
    /// Exact length, without padding.
    pub song_len: u32,
    pub rfu: [u32; 12],
    /// Always 0 (never computed by the generator nor checked by the reader).
    pub info_crc: u32,
}

impl ToneFileInfo {
    /// Layout only: reads 64 bytes; the tag is NOT checked here.
    pub fn parse(bytes: &[u8]) -> Result<ToneFileInfo, ToneError> {
        let b = need(bytes, 0, TONE_FILE_INFO_SIZE, "file table entry")?;
        let mut rfu = [0u32; 12];
        for (i, r) in rfu.iter_mut().enumerate() {
            *r = le32(b, 12 + 4 * i);
        }
        Ok(ToneFileInfo {
            file_tag: b.first().copied().unwrap_or(0),
            song_index: b.get(1).copied().unwrap_or(0),
            file_type: b.get(2).copied().unwrap_or(0),
            song_ver: b.get(3).copied().unwrap_or(0),
            song_adr: le32(b, 4),
            song_len: le32(b, 8),
            rfu,
            info_crc: le32(b, 60),
        })
    }

    pub fn to_bytes(&self) -> [u8; TONE_FILE_INFO_SIZE] {
        let mut o = [0u8; TONE_FILE_INFO_SIZE];
        put(
            &mut o,
            0,
            &[
                self.file_tag,
                self.song_index,
                self.file_type,
                self.song_ver,
            ],
        );
        put(&mut o, 4, &self.song_adr.to_le_bytes());
        put(&mut o, 8, &self.song_len.to_le_bytes());
        for (i, r) in self.rfu.iter().enumerate() {
            put(&mut o, 12 + 4 * i, &r.to_le_bytes());
        }
        put(&mut o, 60, &self.info_crc.to_le_bytes());
        o
    }

    /// "mp3" / "wav" for the known types.
    pub fn extension(&self) -> Option<&'static str> {
        match self.file_type {
            TONE_FILE_TYPE_MP3 => Some("mp3"),
            TONE_FILE_TYPE_WAV => Some("wav"),
            _ => None,
        }
    }

    /// End of the padded data (`song_adr + song_len + pad4`), as u64 (no overflow).
    pub fn padded_end(&self) -> u64 {
        self.song_adr as u64 + self.song_len as u64 + pad4(self.song_len) as u64
    }
}

/// The format-1 descriptor: ESP-IDF's `esp_app_desc_t` layout (256 bytes) with magic
/// 0xF55F9876 (§8.2), so it is an [`AppDesc`] read without the app magic check. Every byte is
/// kept, so `parse` then `to_bytes` is byte-exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToneDesc(pub AppDesc);

impl core::ops::Deref for ToneDesc {
    type Target = AppDesc;
    fn deref(&self) -> &AppDesc {
        &self.0
    }
}

impl core::ops::DerefMut for ToneDesc {
    fn deref_mut(&mut self) -> &mut AppDesc {
        &mut self.0
    }
}

impl ToneDesc {
    /// The descriptor `mk_audio_tone.py` writes: magic, "ESP_TONE_BIN", the given strings
    /// (NUL padded, truncated to the field), everything else zero.
    pub fn new(version: &str, time: &str, date: &str) -> ToneDesc {
        let mut d = AppDesc::from_layout(&[0u8; TONE_DESC_SIZE]).unwrap_or_default();
        d.magic_word = TONE_DESC_MAGIC;
        d.version = fixed(version.as_bytes());
        d.project_name = fixed(FLASH_TONE_PROJECT_NAME.as_bytes());
        d.time = fixed(time.as_bytes());
        d.date = fixed(date.as_bytes());
        ToneDesc(d)
    }

    /// Layout only: reads 256 bytes; the magic is NOT checked here.
    pub fn parse(bytes: &[u8]) -> Result<ToneDesc, ToneError> {
        let b = need(bytes, 0, TONE_DESC_SIZE, "descriptor")?;
        AppDesc::from_layout(b)
            .map(ToneDesc)
            .map_err(|_| ToneError::Truncated {
                what: "descriptor",
                offset: 0,
                need: TONE_DESC_SIZE as u32,
                have: bytes.len() as u32,
            })
    }

    pub fn to_bytes(&self) -> [u8; TONE_DESC_SIZE] {
        self.0.to_bytes()
    }

    pub fn magic_ok(&self) -> bool {
        self.magic_word == TONE_DESC_MAGIC
    }

    /// `ota_get_version_number(desc.version)` exactly as C sees it: `version` is a `char[32]`;
    /// when it has no NUL, `strlen` runs on into `project_name`, so the string is longer than
    /// 32 (→ −1) unless `project_name` starts with NUL (then all 32 bytes are the version).
    pub fn adf_version_number(&self) -> Option<u32> {
        let s: &[u8] = match self.version.iter().position(|&c| c == 0) {
            Some(n) => self.version.get(..n).unwrap_or(&[]),
            None if self.project_name.first() == Some(&0) => &self.version,
            None => return None,
        };
        // Any non-ASCII byte fails the C parser too (every byte is '.', 'v'/'V' or a digit).
        core::str::from_utf8(s)
            .ok()
            .and_then(crate::version::adf_version_number)
    }
}

// ---------------------------------------------------------------------------------------------
// Table walk shared by the slice reader and the flash check
// ---------------------------------------------------------------------------------------------

/// Walk the file table of a bin of `size` bytes whose header is `h`, reading each 64-byte
/// entry through `entry_at(offset)`. Checks tag, index, contiguity and that each padded file
/// ends within `size`. Returns D, the end of the last file's padding (= table end if N = 0).
fn walk_table<E: From<ToneError>>(
    h: &ToneHeader,
    size: u32,
    mut entry_at: impl FnMut(u32) -> Result<[u8; TONE_FILE_INFO_SIZE], E>,
) -> Result<u32, E> {
    let t = table_offset(h.format);
    let table_end = t as u64 + TONE_FILE_INFO_SIZE as u64 * h.total_num as u64;
    if table_end > size as u64 {
        return Err(ToneError::TableOutside {
            table_offset: t,
            table_end,
            size,
        }
        .into());
    }
    let mut expected = table_end;
    for i in 0..h.total_num {
        let off = t + (TONE_FILE_INFO_SIZE as u32) * i as u32; // < table_end ≤ size: no overflow
        let e = ToneFileInfo::parse(&entry_at(off)?)?;
        if e.file_tag != FLASH_TONE_FILE_TAG {
            return Err(ToneError::BadFileTag {
                index: i,
                offset: off,
                found: e.file_tag,
            }
            .into());
        }
        if e.song_index as u16 != i {
            return Err(ToneError::BadSongIndex {
                index: i,
                offset: off,
                found: e.song_index,
            }
            .into());
        }
        if e.song_adr as u64 != expected {
            return Err(ToneError::NotContiguous {
                index: i,
                expected_adr: expected,
                found_adr: e.song_adr,
            }
            .into());
        }
        if e.padded_end() > size as u64 {
            return Err(ToneError::FileOutside {
                index: i,
                song_adr: e.song_adr,
                song_len: e.song_len,
                size,
            }
            .into());
        }
        expected = e.padded_end();
    }
    Ok(expected as u32) // ≤ size
}

// ---------------------------------------------------------------------------------------------
// Whole-bin reader over a byte slice
// ---------------------------------------------------------------------------------------------

/// Options for [`ToneBin::parse_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// Accept bytes after the end of the bin (e.g. a dump of a whole partition).
    pub allow_trailing: bool,
    /// Fail on a format-1 CRC mismatch (otherwise [`ToneBin::crc`] shows it).
    pub check_crc: bool,
}

impl ParseOptions {
    /// What [`ToneBin::parse`] uses: exact size, CRC checked.
    pub const STRICT: ParseOptions = ParseOptions {
        allow_trailing: false,
        check_crc: true,
    };
}

/// A validated tone bin borrowed from a byte slice (for `tone info` / `tone unpack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToneBin<'a> {
    bytes: &'a [u8],
    header: ToneHeader,
    desc: Option<ToneDesc>,
    /// End of the last file's padding (D in §8.1).
    data_end: u32,
    /// (stored, computed) for format 1.
    crc: Option<(u32, u32)>,
}

impl<'a> ToneBin<'a> {
    /// Parse and validate a whole bin: exactly `bytes.len()` long, format 0 or 1, table,
    /// tags, indexes, contiguity, 0xFF padding, and for format 1 descriptor magic, tail, CRC.
    pub fn parse(bytes: &'a [u8]) -> Result<ToneBin<'a>, ToneError> {
        Self::parse_with(bytes, ParseOptions::STRICT)
    }

    pub fn parse_with(bytes: &'a [u8], opts: ParseOptions) -> Result<ToneBin<'a>, ToneError> {
        let size = u32::try_from(bytes.len()).map_err(|_| ToneError::TooLarge { index: 0 })?;
        let header = ToneHeader::parse(bytes)?;
        if !header.tag_ok() {
            return Err(ToneError::BadHeaderTag {
                found: header.header_tag,
            });
        }
        let desc = match header.format {
            TONE_FORMAT_0 => None,
            TONE_FORMAT_1 => {
                let d =
                    ToneDesc::parse(need(bytes, TONE_HEADER_SIZE, TONE_DESC_SIZE, "descriptor")?)?;
                if !d.magic_ok() {
                    return Err(ToneError::BadDescMagic {
                        found: d.magic_word,
                    });
                }
                Some(d)
            }
            format => return Err(ToneError::UnsupportedFormat { format }),
        };
        let data_end = walk_table(&header, size, |off| {
            Ok::<_, ToneError>(arr(
                need(bytes, off as usize, TONE_FILE_INFO_SIZE, "file table entry")?,
                0,
            ))
        })?;
        // Padding bytes must be 0xFF (the generator's fill).
        let bin = ToneBin {
            bytes,
            header,
            desc,
            data_end,
            crc: None,
        };
        for (i, (info, _)) in bin.files().enumerate() {
            let start = info.song_adr as usize + info.song_len as usize;
            let pad = need(bytes, start, pad4(info.song_len) as usize, "file padding")?;
            if let Some(k) = pad.iter().position(|&b| b != TONE_PAD_BYTE) {
                return Err(ToneError::BadPadding {
                    index: i as u16,
                    offset: (start + k) as u32,
                    found: pad.get(k).copied().unwrap_or(0),
                });
            }
        }
        let mut end = data_end;
        let mut crc = None;
        if header.format == TONE_FORMAT_1 {
            let tr = need(bytes, data_end as usize, TONE_TRAILER_SIZE, "CRC and tail")?;
            let tail = le16(tr, 4);
            if tail != FLASH_TONE_TAIL {
                return Err(ToneError::TailMismatch {
                    offset: data_end + 4,
                    found: tail,
                });
            }
            let stored = le32(tr, 0);
            let computed = CRC32.checksum(bytes.get(..data_end as usize).unwrap_or(&[]));
            if opts.check_crc && stored != computed {
                return Err(ToneError::CrcMismatch {
                    offset: data_end,
                    stored,
                    computed,
                });
            }
            crc = Some((stored, computed));
            end = data_end + TONE_TRAILER_SIZE as u32;
        }
        if end < size && !opts.allow_trailing {
            return Err(ToneError::TrailingBytes { end, size });
        }
        Ok(ToneBin { crc, ..bin })
    }

    /// A bin followed by anything but 0xFF is refused; trailing 0xFF bytes (the erased rest of
    /// a partition dump, e.g. `ota partition read flash_tone`) are ignored. CRC checked.
    pub fn parse_dump(bytes: &'a [u8]) -> Result<ToneBin<'a>, ToneError> {
        let bin = Self::parse_with(
            bytes,
            ParseOptions {
                allow_trailing: true,
                check_crc: true,
            },
        )?;
        let end = bin.total_size();
        let rest = bytes.get(end as usize..).unwrap_or(&[]);
        if let Some(k) = rest.iter().position(|&b| b != TONE_PAD_BYTE) {
            return Err(ToneError::TrailingData {
                end,
                offset: end as u64 + k as u64,
                found: rest.get(k).copied().unwrap_or(0),
            });
        }
        Ok(bin)
    }

    pub fn header(&self) -> ToneHeader {
        self.header
    }
    pub fn desc(&self) -> Option<ToneDesc> {
        self.desc
    }
    /// The files in table order: (entry, data without padding).
    pub fn files(&self) -> ToneFiles<'a> {
        ToneFiles {
            bytes: self.bytes,
            table: table_offset(self.header.format),
            next: 0,
            total: self.header.total_num,
        }
    }
    /// Format 1: (stored CRC, CRC computed over `[0, D)`).
    pub fn crc(&self) -> Option<(u32, u32)> {
        self.crc
    }
    /// Size of the bin (excluding any trailing bytes allowed by `allow_trailing`).
    pub fn total_size(&self) -> u32 {
        if self.header.format == TONE_FORMAT_1 {
            self.data_end + TONE_TRAILER_SIZE as u32
        } else {
            self.data_end
        }
    }
    /// D: end of the last file's padding (where the format-1 CRC is stored).
    pub fn data_end(&self) -> u32 {
        self.data_end
    }
    /// The bin's own bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
            .get(..self.total_size() as usize)
            .unwrap_or(self.bytes)
    }
}

/// Iterator over a [`ToneBin`]'s files.
#[derive(Clone, Debug)]
pub struct ToneFiles<'a> {
    bytes: &'a [u8],
    table: u32,
    next: u16,
    total: u16,
}

impl<'a> Iterator for ToneFiles<'a> {
    type Item = (ToneFileInfo, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        let off = self.table as usize + TONE_FILE_INFO_SIZE * self.next as usize;
        let info = ToneFileInfo::parse(self.bytes.get(off..)?).ok()?;
        let start = info.song_adr as usize;
        let data = self
            .bytes
            .get(start..start.checked_add(info.song_len as usize)?)?;
        self.next += 1;
        Some((info, data))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.total - self.next.min(self.total)) as usize;
        (0, Some(n))
    }
}

// ---------------------------------------------------------------------------------------------
// On flash: ADF's tone_partition_init, and our stricter check
// ---------------------------------------------------------------------------------------------

/// A tone partition that passed [`tone_partition_init`] (or [`tone_partition_check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToneInfo {
    pub header: ToneHeader,
    /// Format 1: the descriptor at offset 8 (`tone_partition_get_app_desc`, no magic check in
    /// `init`). Other formats: `None`.
    pub desc: Option<ToneDesc>,
}

/// `x % a == 0` (false for a = 0), without needing `usize::is_multiple_of` (Rust 1.87).
fn multiple_of(x: usize, a: usize) -> bool {
    x.checked_rem(a) == Some(0)
}

/// Read `buf.len()` bytes at partition-relative `rel`, honouring the driver's `READ_SIZE`
/// (esp-storage needs 4-byte alignment; ADF reads the tail at an address ≡ 2 mod 4). Also used
/// by [`crate::staging`] for its byte-granular progress record.
pub(crate) fn read_rel<F: ReadNorFlash>(
    flash: &mut F,
    region: &Region,
    rel: u32,
    buf: &mut [u8],
) -> Result<(), FlashError> {
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    let abs = region.absolute(FlashOp::Read, rel, len)?;
    let rs = F::READ_SIZE;
    let aligned = rs <= 1 || (multiple_of(abs as usize, rs) && multiple_of(buf.len(), rs));
    if aligned || rs > ALIGN_SCRATCH || !multiple_of(ALIGN_SCRATCH, rs) {
        return flash::read(flash, abs, buf);
    }
    let mut scratch = [0u8; ALIGN_SCRATCH];
    let mut done = 0usize;
    while done < buf.len() {
        let cur = abs as usize + done;
        let start = cur - cur % rs;
        let skip = cur - start;
        let want = (buf.len() - done).min(ALIGN_SCRATCH - skip);
        let wlen = (skip + want).div_ceil(rs) * rs; // ≤ ALIGN_SCRATCH (a multiple of rs)
        let win = scratch.get_mut(..wlen).ok_or(FlashError {
            op: FlashOp::Read,
            offset: start as u32,
            len: wlen as u32,
            kind: flash::FlashErrorKind::NotAligned,
        })?;
        flash::read(flash, start as u32, win)?;
        if let (Some(d), Some(s)) = (buf.get_mut(done..done + want), win.get(skip..skip + want)) {
            d.copy_from_slice(s);
        }
        done += want;
    }
    Ok(())
}

fn read_header<F: ReadNorFlash>(
    flash: &mut F,
    region: &Region,
) -> Result<ToneHeader, crate::Error> {
    let mut b = [0u8; TONE_HEADER_SIZE];
    read_rel(flash, region, 0, &mut b)?;
    let h = ToneHeader::parse(&b)?;
    if !h.tag_ok() {
        return Err(ToneError::BadHeaderTag {
            found: h.header_tag,
        }
        .into());
    }
    Ok(h)
}

fn read_desc<F: ReadNorFlash>(flash: &mut F, region: &Region) -> Result<ToneDesc, crate::Error> {
    let mut b = [0u8; TONE_DESC_SIZE];
    read_rel(flash, region, TONE_HEADER_SIZE as u32, &mut b)?;
    Ok(ToneDesc::parse(&b)?)
}

/// ADF `tone_partition_init` (adf-ota-service.md §8.3), exactly: this decides whether the
/// current partition is "a valid tone partition". Reads the header (tag 0x2053 required).
/// Format 1: reads the LAST table entry (an entry whose tag is not 0x28, or N = 0, counts as
/// all zeros, as ADF's `get_file_info` leaves its output untouched), computes the tail address
/// `song_adr + song_len + pad4 + 4` (u32 wrap-around, like the C code), requires 0xDFAC there,
/// and reads the descriptor (no magic check, as `tone_partition_get_app_desc`). Any other
/// format is accepted without further checks. The CRC is never looked at.
pub fn tone_partition_init<F: ReadNorFlash>(
    flash: &mut F,
    part: &Partition,
) -> Result<ToneInfo, crate::Error> {
    let region = part.region();
    let header = read_header(flash, &region)?;
    if header.format != TONE_FORMAT_1 {
        return Ok(ToneInfo { header, desc: None });
    }
    let mut last = ToneFileInfo::parse(&[0u8; TONE_FILE_INFO_SIZE])?;
    if header.total_num > 0 {
        let off = TABLE_OFFSET_F1 + TONE_FILE_INFO_SIZE as u32 * (header.total_num as u32 - 1);
        let mut e = [0u8; TONE_FILE_INFO_SIZE];
        // A failed entry read leaves `last_file` zeroed in ADF (the result is ignored).
        if read_rel(flash, &region, off, &mut e).is_ok() {
            let info = ToneFileInfo::parse(&e)?;
            if info.file_tag == FLASH_TONE_FILE_TAG {
                last = info;
            }
        }
    }
    let tail_at = last
        .song_adr
        .wrapping_add(last.song_len)
        .wrapping_add(pad4(last.song_len))
        .wrapping_add(4);
    if tail_at as u64 + 2 > part.size as u64 {
        return Err(ToneError::TailOutside {
            offset: tail_at,
            size: part.size,
        }
        .into());
    }
    let mut t = [0u8; 2];
    read_rel(flash, &region, tail_at, &mut t)?;
    let tail = u16::from_le_bytes(t);
    if tail != FLASH_TONE_TAIL {
        return Err(ToneError::TailMismatch {
            offset: tail_at,
            found: tail,
        }
        .into());
    }
    let desc = read_desc(flash, &region)?;
    Ok(ToneInfo {
        header,
        desc: Some(desc),
    })
}

/// Our stricter check of a tone partition (detects a torn rewrite): header tag, format 0 or 1,
/// the whole table (every tag, index, contiguity, each file inside the partition); format 1
/// also the descriptor magic, the tail at D+4 and the zlib CRC-32 of `[0, D)` streamed from
/// flash in small chunks (constant memory). Padding bytes are not checked (format 1: the CRC
/// covers them).
pub fn tone_partition_check<F: ReadNorFlash>(
    flash: &mut F,
    part: &Partition,
) -> Result<ToneInfo, crate::Error> {
    tone_partition_check_size(flash, part).map(|(info, _)| info)
}

/// [`tone_partition_check`], also giving the size of the bin (`D`, or `D + 6` for format 1).
pub fn tone_partition_check_size<F: ReadNorFlash>(
    flash: &mut F,
    part: &Partition,
) -> Result<(ToneInfo, u32), crate::Error> {
    let region = part.region();
    let header = read_header(flash, &region)?;
    let desc = match header.format {
        TONE_FORMAT_0 => None,
        TONE_FORMAT_1 => {
            let d = read_desc(flash, &region)?;
            if !d.magic_ok() {
                return Err(ToneError::BadDescMagic {
                    found: d.magic_word,
                }
                .into());
            }
            Some(d)
        }
        format => return Err(ToneError::UnsupportedFormat { format }.into()),
    };
    let data_end = walk_table(&header, part.size, |off| {
        let mut e = [0u8; TONE_FILE_INFO_SIZE];
        read_rel(flash, &region, off, &mut e)?;
        Ok::<_, crate::Error>(e)
    })?;
    if header.format == TONE_FORMAT_1 {
        if data_end as u64 + TONE_TRAILER_SIZE as u64 > part.size as u64 {
            return Err(ToneError::TailOutside {
                offset: data_end.saturating_add(4),
                size: part.size,
            }
            .into());
        }
        let mut tr = [0u8; TONE_TRAILER_SIZE];
        read_rel(flash, &region, data_end, &mut tr)?;
        let tail = le16(&tr, 4);
        if tail != FLASH_TONE_TAIL {
            return Err(ToneError::TailMismatch {
                offset: data_end + 4,
                found: tail,
            }
            .into());
        }
        let stored = le32(&tr, 0);
        let mut digest = CRC32.digest();
        let mut buf = [0u8; CHUNK];
        let mut pos = 0u32;
        while pos < data_end {
            let n = ((data_end - pos) as usize).min(CHUNK);
            let chunk = buf.get_mut(..n).unwrap_or(&mut []);
            read_rel(flash, &region, pos, chunk)?;
            digest.update(chunk);
            pos += n as u32;
        }
        let computed = digest.finalize();
        if stored != computed {
            return Err(ToneError::CrcMismatch {
                offset: data_end,
                stored,
                computed,
            }
            .into());
        }
    }
    let size = if header.format == TONE_FORMAT_1 {
        data_end + TONE_TRAILER_SIZE as u32
    } else {
        data_end
    };
    Ok((ToneInfo { header, desc }, size))
}

// ---------------------------------------------------------------------------------------------
// The example's upgrade policy (§7), sans-IO
// ---------------------------------------------------------------------------------------------

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
/// * `current == None` (the current partition fails [`tone_partition_init`]): `WriteAll`,
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

// ---------------------------------------------------------------------------------------------
// Packer: mk_audio_tone.py 1.2
// ---------------------------------------------------------------------------------------------

/// One file to pack. `name` only decides `file_type` (its extension); names are not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToneEntry<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

/// `file_type` from a name like the generator: `name.split('.')[-1].lower()` looked up in
/// {mp3: 0, wav: 1} (a name without a dot is its own "extension").
pub fn file_type_for_name(name: &str) -> Option<u8> {
    let ext = name.rsplit('.').next().unwrap_or(name);
    if ext.eq_ignore_ascii_case("mp3") {
        Some(TONE_FILE_TYPE_MP3)
    } else if ext.eq_ignore_ascii_case("wav") {
        Some(TONE_FILE_TYPE_WAV)
    } else {
        None
    }
}

/// Pack `entries` (in the given order) exactly as `mk_audio_tone.py -F format -v version`
/// does, with the descriptor's `time`/`date` given (the script uses the local clock):
/// header, [descriptor], table (song_adr contiguous, info_crc 0), data padded with 0xFF to 4,
/// [CRC-32 of everything before, tail 0xDFAC]. Everything is validated before the first byte
/// goes to `sink`. `version`, `time`, `date` are NUL padded or truncated to 32/16/16 bytes.
/// Returns the bin's size.
pub fn pack(
    entries: &[ToneEntry<'_>],
    format: u32,
    version: &str,
    time: &str,
    date: &str,
    sink: &mut impl FnMut(&[u8]),
) -> Result<u32, ToneError> {
    if format != TONE_FORMAT_0 && format != TONE_FORMAT_1 {
        return Err(ToneError::UnsupportedFormat { format });
    }
    if entries.len() > TONE_MAX_FILES {
        return Err(ToneError::TooManyFiles {
            count: entries.len(),
        });
    }
    let t = table_offset(format) as u64;
    let data_start = t + TONE_FILE_INFO_SIZE as u64 * entries.len() as u64;
    let mut end = data_start;
    for (i, e) in entries.iter().enumerate() {
        file_type_for_name(e.name).ok_or(ToneError::UnknownFileType { index: i })?;
        let len = u32::try_from(e.data.len()).map_err(|_| ToneError::TooLarge { index: i })?;
        if end > u32::MAX as u64 {
            return Err(ToneError::TooLarge { index: i }); // song_adr must fit "<I"
        }
        end += len as u64 + pad4(len) as u64;
    }
    let total = end
        + if format == TONE_FORMAT_1 {
            TONE_TRAILER_SIZE as u64
        } else {
            0
        };
    let total = u32::try_from(total).map_err(|_| ToneError::TooLarge {
        index: entries.len(),
    })?;

    let mut digest = CRC32.digest();
    let mut emit = |b: &[u8]| {
        digest.update(b);
        sink(b);
    };
    let header = ToneHeader {
        header_tag: TONE_HEADER_TAG,
        total_num: entries.len() as u16,
        format,
    };
    emit(&header.to_bytes());
    if format == TONE_FORMAT_1 {
        emit(&ToneDesc::new(version, time, date).to_bytes());
    }
    let mut adr = data_start as u32; // all fit: checked above
    for (i, e) in entries.iter().enumerate() {
        let len = e.data.len() as u32;
        let info = ToneFileInfo {
            file_tag: FLASH_TONE_FILE_TAG,
            song_index: i as u8,
            file_type: file_type_for_name(e.name).unwrap_or(0),
            song_ver: 0,
            song_adr: adr,
            song_len: len,
            rfu: [0; 12],
            info_crc: 0,
        };
        emit(&info.to_bytes());
        adr = adr.wrapping_add(len).wrapping_add(pad4(len));
    }
    let pad = [TONE_PAD_BYTE; 3];
    for e in entries {
        emit(e.data);
        emit(pad.get(..pad4(e.data.len() as u32) as usize).unwrap_or(&[]));
    }
    if format == TONE_FORMAT_1 {
        let crc = digest.finalize();
        sink(&crc.to_le_bytes());
        sink(&FLASH_TONE_TAIL.to_le_bytes());
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Streaming check of an incoming bin (before anything is erased), and a partition summary
// ---------------------------------------------------------------------------------------------

/// What a complete, valid incoming bin turned out to be ([`ToneStreamCheck::finish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToneStreamSummary {
    pub header: ToneHeader,
    /// Format 1: the descriptor (its magic checked).
    pub desc: Option<ToneDesc>,
    /// The bin's own size: `D` (format 0) or `D + 6` (format 1).
    pub size: u32,
    /// Bytes after the bin, all 0xFF (a partition dump's erased rest).
    pub trailing_erased: u64,
}

/// Where the checker is in the bin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Header,
    Desc,
    Table,
    Data,
    Trailer,
    /// Past the end of the bin: only 0xFF may follow.
    After,
}

/// Checks a tone bin fed in chunks of any size, in constant memory (about 1.7 KiB, no
/// allocation), with every structural rule [`ToneBin::parse`] applies: header tag, format 0 or
/// 1, descriptor magic, each table entry (tag, index, contiguity, inside `capacity` and inside
/// the announced length), 0xFF padding after each file, and for format 1 the CRC-32 of
/// `[0, D)` and the tail 0xDFAC. Also what ADF's `tone_partition_init` needs to accept the
/// result (a format-1 bin has at least one file: adf-ota-service.md §8.3, "format 1 with N =
/// 0"). [`finish`](Self::finish) then requires the input to have ended exactly where the
/// header and table say (a truncated bin is an error); bytes after the bin must be 0xFF (an
/// erased flash rest, harmless to write). The first fault is kept: every later call returns it.
#[derive(Clone)]
pub struct ToneStreamCheck {
    capacity: u32,
    announced: Option<u64>,
    pos: u64,
    stage: Stage,
    head: [u8; TONE_HEADER_SIZE + TONE_DESC_SIZE],
    header: ToneHeader,
    desc: Option<ToneDesc>,
    entry: [u8; TONE_FILE_INFO_SIZE],
    entry_len: usize,
    /// Entries checked so far.
    entries: u16,
    /// Where the next file's data must start (contiguity), then D.
    expected: u64,
    /// `song_adr + song_len` of each file (padding runs from there to the next multiple of 4).
    song_ends: [u32; TONE_MAX_FILES],
    /// Data region: the file whose data or padding `pos` is in.
    file: usize,
    digest: crc::Digest<'static, u32>,
    trailer: [u8; TONE_TRAILER_SIZE],
    trailer_len: usize,
    trailing: u64,
    error: Option<ToneError>,
}

/// The CRC-32 of [`CRC32`] as a static, so a streaming digest can borrow it for `'static`.
static CRC32_STREAM: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

impl fmt::Debug for ToneStreamCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToneStreamCheck")
            .field("pos", &self.pos)
            .field("stage", &self.stage)
            .field("header", &self.header)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// `x` rounded up to a multiple of [`TONE_DATA_ALIGN`] (as u64: no overflow).
fn up4(x: u32) -> u64 {
    x as u64 + pad4(x) as u64
}

impl ToneStreamCheck {
    /// A checker for a bin that must fit in `capacity` bytes (the target partition), of
    /// `announced` bytes when the source says (a file's size, an HTTP `Content-Length`).
    pub fn new(capacity: u32, announced: Option<u64>) -> ToneStreamCheck {
        ToneStreamCheck {
            capacity,
            announced,
            pos: 0,
            stage: Stage::Header,
            head: [0; TONE_HEADER_SIZE + TONE_DESC_SIZE],
            header: ToneHeader {
                header_tag: 0,
                total_num: 0,
                format: 0,
            },
            desc: None,
            entry: [0; TONE_FILE_INFO_SIZE],
            entry_len: 0,
            entries: 0,
            expected: 0,
            song_ends: [0; TONE_MAX_FILES],
            file: 0,
            digest: CRC32_STREAM.digest(),
            trailer: [0; TONE_TRAILER_SIZE],
            trailer_len: 0,
            trailing: 0,
            error: None,
        }
    }

    /// Bytes taken so far.
    pub fn consumed(&self) -> u64 {
        self.pos
    }

    /// The header, once its 8 bytes were taken and passed (tag and format).
    pub fn header(&self) -> Option<ToneHeader> {
        (self.stage != Stage::Header && self.error.is_none()).then_some(self.header)
    }

    /// The first fault found so far, if any.
    pub fn error(&self) -> Option<&ToneError> {
        self.error.as_ref()
    }

    /// The size every limit is checked against: the partition, and the announced length.
    fn limit(&self) -> u64 {
        match self.announced {
            Some(a) => a.min(self.capacity as u64),
            None => self.capacity as u64,
        }
    }

    fn limit_u32(&self) -> u32 {
        self.limit().min(u32::MAX as u64) as u32
    }

    /// Take the next `data` bytes of the bin.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ToneError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = self.feed_inner(data);
        if let Err(e) = &r {
            self.error = Some(e.clone());
        }
        r
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<(), ToneError> {
        while !data.is_empty() {
            let before_d = matches!(
                self.stage,
                Stage::Header | Stage::Desc | Stage::Table | Stage::Data
            );
            let n = match self.stage {
                Stage::Header | Stage::Desc => self.take_head(data)?,
                Stage::Table => self.take_entry(data)?,
                Stage::Data => self.take_data(data)?,
                Stage::Trailer => self.take_trailer(data)?,
                Stage::After => {
                    if let Some(k) = data.iter().position(|&b| b != TONE_PAD_BYTE) {
                        return Err(ToneError::TrailingData {
                            end: self.end().min(u32::MAX as u64) as u32,
                            offset: self.pos.saturating_add(k as u64),
                            found: data.get(k).copied().unwrap_or(0),
                        });
                    }
                    self.trailing = self.trailing.saturating_add(data.len() as u64);
                    data.len()
                }
            };
            let (taken, rest) = data.split_at(n.min(data.len()));
            // The CRC covers every byte before D; no handler takes bytes across D.
            if before_d {
                self.digest.update(taken);
            }
            self.pos = self.pos.saturating_add(taken.len() as u64);
            data = rest;
        }
        Ok(())
    }

    /// End of the bin (D, or D + 6 for format 1); valid from the data stage on.
    fn end(&self) -> u64 {
        if self.header.format == TONE_FORMAT_1 {
            self.expected + TONE_TRAILER_SIZE as u64
        } else {
            self.expected
        }
    }

    fn take_head(&mut self, data: &[u8]) -> Result<usize, ToneError> {
        let want = match self.stage {
            Stage::Header => TONE_HEADER_SIZE,
            _ => TONE_HEADER_SIZE + TONE_DESC_SIZE,
        };
        let at = self.pos as usize;
        let n = (want - at).min(data.len());
        if let (Some(d), Some(s)) = (self.head.get_mut(at..at + n), data.get(..n)) {
            d.copy_from_slice(s);
        }
        if at + n < want {
            return Ok(n);
        }
        if self.stage == Stage::Header {
            let h = ToneHeader::parse(&self.head)?;
            if !h.tag_ok() {
                return Err(ToneError::BadHeaderTag {
                    found: h.header_tag,
                });
            }
            if h.format != TONE_FORMAT_0 && h.format != TONE_FORMAT_1 {
                return Err(ToneError::UnsupportedFormat { format: h.format });
            }
            if h.format == TONE_FORMAT_1 && h.total_num == 0 {
                return Err(ToneError::NoFiles);
            }
            self.header = h;
            if h.format == TONE_FORMAT_1 {
                self.stage = Stage::Desc;
                return Ok(n);
            }
        } else {
            let d = ToneDesc::parse(self.head.get(TONE_HEADER_SIZE..).unwrap_or(&[]))?;
            if !d.magic_ok() {
                return Err(ToneError::BadDescMagic {
                    found: d.magic_word,
                });
            }
            self.desc = Some(d);
        }
        self.start_table()?;
        Ok(n)
    }

    fn start_table(&mut self) -> Result<(), ToneError> {
        let t = table_offset(self.header.format);
        let table_end = t as u64 + TONE_FILE_INFO_SIZE as u64 * self.header.total_num as u64;
        if table_end > self.limit() {
            return Err(ToneError::TableOutside {
                table_offset: t,
                table_end,
                size: self.limit_u32(),
            });
        }
        self.expected = table_end;
        if self.header.total_num == 0 {
            self.finish_data();
        } else {
            self.stage = Stage::Table;
        }
        Ok(())
    }

    fn take_entry(&mut self, data: &[u8]) -> Result<usize, ToneError> {
        let n = (TONE_FILE_INFO_SIZE - self.entry_len).min(data.len());
        let at = self.entry_len;
        if let (Some(d), Some(s)) = (self.entry.get_mut(at..at + n), data.get(..n)) {
            d.copy_from_slice(s);
        }
        self.entry_len += n;
        if self.entry_len < TONE_FILE_INFO_SIZE {
            return Ok(n);
        }
        self.entry_len = 0;
        let i = self.entries;
        let off = table_offset(self.header.format) + TONE_FILE_INFO_SIZE as u32 * i as u32;
        let e = ToneFileInfo::parse(&self.entry)?;
        if e.file_tag != FLASH_TONE_FILE_TAG {
            return Err(ToneError::BadFileTag {
                index: i,
                offset: off,
                found: e.file_tag,
            });
        }
        if e.song_index as u16 != i {
            return Err(ToneError::BadSongIndex {
                index: i,
                offset: off,
                found: e.song_index,
            });
        }
        if e.song_adr as u64 != self.expected {
            return Err(ToneError::NotContiguous {
                index: i,
                expected_adr: self.expected,
                found_adr: e.song_adr,
            });
        }
        let trailer = if self.header.format == TONE_FORMAT_1 {
            TONE_TRAILER_SIZE as u64
        } else {
            0
        };
        if e.padded_end() + trailer > self.limit() {
            return Err(ToneError::FileOutside {
                index: i,
                song_adr: e.song_adr,
                song_len: e.song_len,
                size: self.limit_u32(),
            });
        }
        // song_index is one byte and must equal i: i < 256 here.
        if let Some(slot) = self.song_ends.get_mut(i as usize) {
            *slot = e.song_adr + e.song_len; // ≤ limit ≤ u32::MAX: checked above
        }
        self.expected = e.padded_end();
        self.entries += 1;
        if self.entries == self.header.total_num {
            let table_end = off as u64 + TONE_FILE_INFO_SIZE as u64;
            if self.expected == table_end {
                self.finish_data(); // every file is empty
            } else {
                self.stage = Stage::Data;
            }
        }
        Ok(n)
    }

    fn finish_data(&mut self) {
        self.stage = if self.header.format == TONE_FORMAT_1 {
            Stage::Trailer
        } else {
            Stage::After
        };
    }

    fn take_data(&mut self, data: &[u8]) -> Result<usize, ToneError> {
        let d = self.expected;
        let mut taken = 0usize;
        let mut pos = self.pos;
        while taken < data.len() && pos < d {
            let Some(&end) = self.song_ends.get(self.file) else {
                return Err(ToneError::Invalid {
                    offset: pos.min(u32::MAX as u64) as u32,
                });
            };
            let (song_end, padded) = (end as u64, up4(end));
            if pos >= padded {
                self.file += 1;
                continue;
            }
            let room = (data.len() - taken) as u64;
            if pos < song_end {
                let n = (song_end - pos).min(room) as usize;
                taken += n;
                pos += n as u64;
            } else {
                let n = (padded - pos).min(room) as usize;
                let pad = data.get(taken..taken + n).unwrap_or(&[]);
                if let Some(k) = pad.iter().position(|&b| b != TONE_PAD_BYTE) {
                    return Err(ToneError::BadPadding {
                        index: self.file as u16,
                        offset: (pos + k as u64) as u32,
                        found: pad.get(k).copied().unwrap_or(0),
                    });
                }
                taken += n;
                pos += n as u64;
            }
        }
        if pos >= d {
            self.finish_data();
        }
        Ok(taken)
    }

    fn take_trailer(&mut self, data: &[u8]) -> Result<usize, ToneError> {
        let n = (TONE_TRAILER_SIZE - self.trailer_len).min(data.len());
        let at = self.trailer_len;
        if let (Some(d), Some(s)) = (self.trailer.get_mut(at..at + n), data.get(..n)) {
            d.copy_from_slice(s);
        }
        self.trailer_len += n;
        if self.trailer_len == TONE_TRAILER_SIZE {
            let d = self.expected as u32;
            let tail = le16(&self.trailer, 4);
            if tail != FLASH_TONE_TAIL {
                return Err(ToneError::TailMismatch {
                    offset: d + 4,
                    found: tail,
                });
            }
            let stored = le32(&self.trailer, 0);
            let computed = self.digest.clone().finalize();
            if stored != computed {
                return Err(ToneError::CrcMismatch {
                    offset: d,
                    stored,
                    computed,
                });
            }
            self.stage = Stage::After;
        }
        Ok(n)
    }

    /// The input has ended: it must have held the whole bin (and, if announced, exactly the
    /// announced number of bytes).
    pub fn finish(&self) -> Result<ToneStreamSummary, ToneError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let have = self.pos.min(u32::MAX as u64) as u32;
        let missing = |what: &'static str, offset: u64, need: u64| ToneError::Truncated {
            what,
            offset: offset.min(u32::MAX as u64) as u32,
            need: need.min(u32::MAX as u64) as u32,
            have,
        };
        match self.stage {
            Stage::Header => return Err(missing("header", 0, TONE_HEADER_SIZE as u64)),
            Stage::Desc => {
                return Err(missing(
                    "descriptor",
                    TONE_HEADER_SIZE as u64,
                    TONE_DESC_SIZE as u64,
                ))
            }
            Stage::Table => {
                let t = table_offset(self.header.format) as u64;
                return Err(missing(
                    "file table",
                    t,
                    TONE_FILE_INFO_SIZE as u64 * self.header.total_num as u64,
                ));
            }
            Stage::Data => {
                let t = table_offset(self.header.format) as u64
                    + TONE_FILE_INFO_SIZE as u64 * self.header.total_num as u64;
                return Err(missing("file data", t, self.expected - t));
            }
            Stage::Trailer => {
                return Err(missing(
                    "CRC and tail",
                    self.expected,
                    TONE_TRAILER_SIZE as u64,
                ))
            }
            Stage::After => {}
        }
        if let Some(a) = self.announced {
            if a != self.pos {
                return Err(ToneError::LengthMismatch {
                    announced: a,
                    received: self.pos,
                });
            }
        }
        Ok(ToneStreamSummary {
            header: self.header,
            desc: self.desc,
            size: self.end() as u32,
            trailing_erased: self.trailing,
        })
    }
}

/// A tone partition at a glance, for `device info`: what its header says, and the verdicts
/// of ADF's reader and of our full check. From [`summarize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToneSummary {
    /// `format` and `total_num` as stored (even when the checks fail).
    pub header: ToneHeader,
    /// Format 1: the descriptor at offset 8 (`version_str()` is the bin's version).
    pub desc: Option<ToneDesc>,
    /// ADF's [`tone_partition_init`] accepts the partition: `Ok`, or why not.
    pub adf_init: Result<(), ToneError>,
    /// Our [`tone_partition_check`]: `Ok(size of the bin in bytes)`, or the first fault.
    pub check: Result<u32, ToneError>,
}

impl ToneSummary {
    /// The bin's version (format 1 with a descriptor), as text.
    pub fn version(&self) -> Option<&str> {
        self.desc.as_ref().map(|d| d.version_str())
    }

    /// Both ADF's reader and our check accept it: the tone item would keep it.
    pub fn is_valid(&self) -> bool {
        self.adf_init.is_ok() && self.check.is_ok()
    }
}

/// Tone errors out of a crate error; a flash error stays an error of the whole call.
fn tone_verdict<T>(r: Result<T, crate::Error>) -> Result<Result<T, ToneError>, crate::Error> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(crate::Error::Tone(e)) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// Read the tone partition `part` for a report: the header (tag 0x2053 required, else
/// `Err(BadHeaderTag)`: not a tone partition, e.g. erased), the format-1 descriptor, and the
/// verdicts of ADF's `tone_partition_init` and of [`tone_partition_check`] (with the bin's
/// size). Read-only; flash errors are returned as errors.
pub fn summarize<F: ReadNorFlash>(
    flash: &mut F,
    part: &Partition,
) -> Result<ToneSummary, crate::Error> {
    let region = part.region();
    let header = read_header(flash, &region)?;
    let desc = if header.format == TONE_FORMAT_1 {
        Some(read_desc(flash, &region)?)
    } else {
        None
    };
    let adf_init = tone_verdict(tone_partition_init(flash, part).map(|_| ()))?;
    let check = tone_verdict(tone_partition_check_size(flash, part).map(|(_, size)| size))?;
    Ok(ToneSummary {
        header,
        desc,
        adf_init,
        check,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::partition::{Label, TYPE_DATA};
    use embedded_storage::nor_flash::NorFlash;
    use std::string::{String, ToString};
    use std::vec::Vec;
    use std::{format, vec};

    // ---- fixtures -------------------------------------------------------------------------

    const VEC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors/tone");

    /// The vectors of ../shared/vectors/README.md and adf-ota-service.md §8.5.
    struct Vector {
        name: &'static str,
        size: usize,
        format: u32,
        files: u16,
        version: Option<&'static str>,
        crc: Option<u32>,
    }

    const VECTORS: &[Vector] = &[
        Vector {
            name: "flash_tone.bin",
            size: 434_756,
            format: 0,
            files: 21,
            version: None,
            crc: None,
        },
        Vector {
            name: "audio_flash_tone_v1.0.bin",
            size: 153_882,
            format: 1,
            files: 7,
            version: Some("v1.0"),
            crc: Some(0x16BB_6254),
        },
        Vector {
            name: "audio_mixer_tone_v1.0.bin",
            size: 54_398,
            format: 1,
            files: 2,
            version: Some("v1.0"),
            crc: Some(0xBBAC_E4E4),
        },
        Vector {
            name: "korvo_du1906_tone_v1.2.0.bin",
            size: 107_950,
            format: 1,
            files: 13,
            version: Some("v1.2.0"),
            crc: Some(0x232B_21B1),
        },
        Vector {
            name: "wwe_tone_v1.1.1.bin",
            size: 15_310,
            format: 1,
            files: 2,
            version: Some("v1.1.1"),
            crc: Some(0x406E_DE70),
        },
        Vector {
            name: "flash_tone_v0.5.0.bin",
            size: 83_082,
            format: 1,
            files: 1,
            version: Some("0.5.0"),
            crc: Some(0xCF51_1F9E),
        },
    ];

    /// `None` (after printing SKIP) when the vectors folder is absent; a missing file inside
    /// an existing folder is a failure.
    fn vector(name: &str) -> Option<Vec<u8>> {
        if !std::path::Path::new(VEC_DIR).is_dir() {
            std::eprintln!("SKIP: ../shared/vectors not found");
            return None;
        }
        Some(std::fs::read(format!("{}/{}", VEC_DIR, name)).expect("vector file missing"))
    }

    use crate::testutil::RamFlash;

    const PART_OFFSET: u32 = 0x10000;

    /// A flash with a data partition at 0x10000 of `part_size` bytes, erased, then `bin` written
    /// at its start (through the aligned layer).
    fn flash_with<const RS: usize>(bin: &[u8], part_size: u32) -> (RamFlash<RS>, Partition) {
        let mut f = RamFlash::<RS>::new((PART_OFFSET + part_size) as usize);
        f.erase(PART_OFFSET, PART_OFFSET + part_size).unwrap();
        let n = bin.len().min(part_size as usize);
        crate::flash::write(&mut f, PART_OFFSET, &bin[..n]).unwrap();
        let part = Partition {
            ptype: TYPE_DATA,
            subtype: 0x27,
            offset: PART_OFFSET,
            size: part_size,
            label: Label::new("flash_tone"),
            flags: 0,
        };
        (f, part)
    }

    fn part_size_for(len: usize) -> u32 {
        (len as u32).div_ceil(0x1000) * 0x1000 + 0x1000
    }

    fn tone_err(e: crate::Error) -> ToneError {
        match e {
            crate::Error::Tone(t) => t,
            other => panic!("expected a tone error, got {:?}", other),
        }
    }

    /// Unpack (names `NN.mp3`/`NN.wav` by type) and re-pack with the descriptor's strings.
    fn repack(bin: &ToneBin<'_>) -> Vec<u8> {
        let names: Vec<String> = bin
            .files()
            .enumerate()
            .map(|(i, (info, _))| format!("{:02}.{}", i, info.extension().unwrap()))
            .collect();
        let entries: Vec<ToneEntry<'_>> = bin
            .files()
            .zip(&names)
            .map(|((_, data), name)| ToneEntry { name, data })
            .collect();
        let d = bin.desc();
        let (v, t, dt) = match &d {
            Some(d) => (d.version_str(), d.time_str(), d.date_str()),
            None => ("", "", ""),
        };
        let mut out = Vec::new();
        let n = pack(
            &entries,
            bin.header().format,
            v,
            t,
            dt,
            &mut |b: &[u8]| out.extend_from_slice(b),
        )
        .unwrap();
        assert_eq!(n as usize, out.len());
        out
    }

    fn pack_vec(entries: &[ToneEntry<'_>], format: u32, version: &str) -> Vec<u8> {
        let mut out = Vec::new();
        pack(
            entries,
            format,
            version,
            "12:00:00",
            "2024-01-01",
            &mut |b: &[u8]| out.extend_from_slice(b),
        )
        .unwrap();
        out
    }

    /// A small format-1 bin made by our packer: two files with odd lengths (padding).
    fn small_f1(version: &str) -> Vec<u8> {
        let a = [1u8, 2, 3, 4, 5];
        let b = [9u8; 10];
        pack_vec(
            &[
                ToneEntry {
                    name: "a.mp3",
                    data: &a,
                },
                ToneEntry {
                    name: "b.WAV",
                    data: &b,
                },
            ],
            1,
            version,
        )
    }

    // ---- constants, CRC, version parser ---------------------------------------------------

    #[test]
    fn crc_is_zlib_crc32() {
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn desc_version_without_nul_runs_into_project_name_like_c() {
        let mut d = ToneDesc::new("v1.2.3", "", "");
        d.version = *b"v0000000000000000000000000001.23";
        // No NUL in version and a non-empty project name: strlen > 32 → −1.
        assert_eq!(d.adf_version_number(), None);
        d.version = *b"v00000000000000000000000001.2.03";
        assert_eq!(d.adf_version_number(), None);
        d.project_name = [0; 32];
        assert_eq!(d.adf_version_number(), Some(0x010203));
    }

    // ---- types round trip -----------------------------------------------------------------

    #[test]
    fn header_entry_desc_round_trip_byte_exact() {
        let Some(b) = vector("korvo_du1906_tone_v1.2.0.bin") else {
            return;
        };
        let h = ToneHeader::parse(&b).unwrap();
        assert_eq!(
            h,
            ToneHeader {
                header_tag: 0x2053,
                total_num: 13,
                format: 1
            }
        );
        assert_eq!(h.to_bytes(), b[..8]);
        let d = ToneDesc::parse(&b[8..]).unwrap();
        assert_eq!(d.to_bytes(), b[8..264]);
        assert_eq!(d.magic_word, TONE_DESC_MAGIC);
        assert_eq!(d.project_name_str(), "ESP_TONE_BIN");
        assert_eq!(d.date_str(), "2020-07-30");
        assert_eq!(d.version_str(), "v1.2.0");
        for i in 0..13 {
            let e = &b[264 + 64 * i..264 + 64 * (i + 1)];
            let info = ToneFileInfo::parse(e).unwrap();
            assert_eq!(info.to_bytes(), e);
            assert_eq!(info.song_index as usize, i);
        }
        // Non-zero reserved bytes survive too.
        let mut raw = [0u8; 256];
        for (i, x) in raw.iter_mut().enumerate() {
            *x = i as u8;
        }
        assert_eq!(ToneDesc::parse(&raw).unwrap().to_bytes(), raw);
        let mut e = [0u8; 64];
        for (i, x) in e.iter_mut().enumerate() {
            *x = 255 - i as u8;
        }
        assert_eq!(ToneFileInfo::parse(&e).unwrap().to_bytes(), e);
    }

    #[test]
    fn layout_parsers_report_truncation() {
        assert!(matches!(
            ToneHeader::parse(&[0x53, 0x20, 1]),
            Err(ToneError::Truncated {
                need: 8,
                have: 3,
                ..
            })
        ));
        assert!(matches!(
            ToneFileInfo::parse(&[0u8; 63]),
            Err(ToneError::Truncated { .. })
        ));
        assert!(matches!(
            ToneDesc::parse(&[0u8; 255]),
            Err(ToneError::Truncated { .. })
        ));
    }

    // ---- whole-bin reader -----------------------------------------------------------------

    #[test]
    fn vectors_parse_with_documented_shape_and_crc() {
        for v in VECTORS {
            let Some(b) = vector(v.name) else { return };
            assert_eq!(b.len(), v.size, "{}", v.name);
            let bin = ToneBin::parse(&b).unwrap_or_else(|e| panic!("{}: {}", v.name, e));
            assert_eq!(bin.header().format, v.format, "{}", v.name);
            assert_eq!(bin.header().total_num, v.files, "{}", v.name);
            assert_eq!(bin.files().count(), v.files as usize, "{}", v.name);
            assert_eq!(bin.total_size() as usize, v.size, "{}", v.name);
            assert_eq!(
                bin.desc().map(|d| d.version_str().to_string()).as_deref(),
                v.version,
                "{}",
                v.name
            );
            match v.crc {
                Some(c) => assert_eq!(bin.crc(), Some((c, c)), "{}", v.name),
                None => assert_eq!(bin.crc(), None),
            }
            let types: Vec<u8> = bin.files().map(|(i, _)| i.file_type).collect();
            let want_type = if v.name == "flash_tone_v0.5.0.bin" {
                1
            } else {
                0
            };
            assert!(
                types.iter().all(|&t| t == want_type),
                "{}: {:?}",
                v.name,
                types
            );
            for (info, data) in bin.files() {
                assert_eq!(data.len(), info.song_len as usize);
                assert_eq!(
                    data.as_ptr() as usize - b.as_ptr() as usize,
                    info.song_adr as usize
                );
            }
        }
        let Some(b) = vector("flash_tone.bin") else {
            return;
        };
        let first = ToneBin::parse(&b).unwrap().files().next().unwrap().0;
        assert_eq!(first.song_adr, 1352); // 8 + 64 × 21 (§8.5)
    }

    #[test]
    fn vectors_unpack_and_repack_byte_identical() {
        for v in VECTORS {
            let Some(b) = vector(v.name) else { return };
            let bin = ToneBin::parse(&b).unwrap();
            let out = repack(&bin);
            assert_eq!(out.len(), b.len(), "{}", v.name);
            assert!(
                out == b,
                "{}: re-pack differs at byte {:?}",
                v.name,
                out.iter().zip(&b).position(|(x, y)| x != y)
            );
        }
    }

    #[test]
    fn parse_rejects_bad_header_tag_and_format() {
        let mut b = small_f1("v1.0.0");
        b[0] = 0x54;
        assert_eq!(
            ToneBin::parse(&b),
            Err(ToneError::BadHeaderTag { found: 0x2054 })
        );
        let msg = ToneError::BadHeaderTag { found: 0x2054 }.to_string();
        assert_eq!(
            msg,
            "Not flash tone partition: header tag 0x2054 at offset 0 (expected 0x2053)"
        );
        let mut b = small_f1("v1.0.0");
        b[4] = 2;
        assert_eq!(
            ToneBin::parse(&b),
            Err(ToneError::UnsupportedFormat { format: 2 })
        );
    }

    #[test]
    fn parse_rejects_bad_desc_magic() {
        let mut b = small_f1("v1.0.0");
        b[8] ^= 1;
        assert!(matches!(
            ToneBin::parse(&b),
            Err(ToneError::BadDescMagic { found: 0xF55F_9877 })
        ));
    }

    #[test]
    fn parse_rejects_table_entry_faults() {
        let good = small_f1("v1.0.0");
        let mut b = good.clone();
        b[264 + 64] = 0x29; // entry 1 tag
        assert_eq!(
            ToneBin::parse(&b),
            Err(ToneError::BadFileTag {
                index: 1,
                offset: 328,
                found: 0x29
            })
        );
        let mut b = good.clone();
        b[264 + 1] = 5; // entry 0 index
        assert_eq!(
            ToneBin::parse(&b),
            Err(ToneError::BadSongIndex {
                index: 0,
                offset: 264,
                found: 5
            })
        );
        let mut b = good.clone();
        b[264 + 64 + 4] += 4; // entry 1 song_adr
        assert!(matches!(
            ToneBin::parse(&b),
            Err(ToneError::NotContiguous { index: 1, .. })
        ));
        let mut b = good.clone();
        b[264 + 64 + 8..264 + 64 + 12].copy_from_slice(&1000u32.to_le_bytes()); // entry 1 len
        assert!(matches!(
            ToneBin::parse(&b),
            Err(ToneError::FileOutside { index: 1, .. })
        ));
        let mut b = good.clone();
        b[2..4].copy_from_slice(&200u16.to_le_bytes()); // table far beyond the file
        assert!(matches!(
            ToneBin::parse(&b),
            Err(ToneError::TableOutside { .. })
        ));
    }

    #[test]
    fn parse_rejects_bad_padding() {
        let mut b = small_f1("v1.0.0");
        let data = 264 + 128;
        b[data + 5] = 0x00; // first pad byte after the 5-byte file 0
        assert_eq!(
            ToneBin::parse(&b),
            Err(ToneError::BadPadding {
                index: 0,
                offset: data as u32 + 5,
                found: 0
            })
        );
    }

    #[test]
    fn parse_rejects_tail_crc_trailing_and_truncation() {
        let good = small_f1("v1.0.0");
        let n = good.len();
        let mut b = good.clone();
        b[n - 1] = 0xFF;
        assert_eq!(
            ToneBin::parse(&b),
            Err(ToneError::TailMismatch {
                offset: n as u32 - 2,
                found: 0xFFAC
            })
        );
        let mut b = good.clone();
        b[264 + 128] ^= 0x80; // a data byte
        let err = ToneBin::parse(&b).unwrap_err();
        assert!(matches!(err, ToneError::CrcMismatch { offset, .. } if offset == n as u32 - 6));
        assert!(err
            .to_string()
            .starts_with("tone bin CRC mismatch: stored 0x"));
        let lenient = ToneBin::parse_with(
            &b,
            ParseOptions {
                allow_trailing: false,
                check_crc: false,
            },
        )
        .unwrap();
        let (stored, computed) = lenient.crc().unwrap();
        assert_ne!(stored, computed);
        let mut b = good.clone();
        b.extend_from_slice(&[0xFF; 10]);
        assert_eq!(
            ToneBin::parse(&b),
            Err(ToneError::TrailingBytes {
                end: n as u32,
                size: n as u32 + 10
            })
        );
        let dump = ToneBin::parse_with(
            &b,
            ParseOptions {
                allow_trailing: true,
                check_crc: true,
            },
        )
        .unwrap();
        assert_eq!(dump.total_size() as usize, n);
        assert_eq!(dump.as_bytes(), &good[..]);
        assert!(matches!(
            ToneBin::parse(&good[..n - 1]),
            Err(ToneError::Truncated { .. })
        ));
    }

    #[test]
    fn parse_never_panics_on_truncated_or_mutated_input() {
        let good = small_f1("v1.2.3");
        for n in 0..good.len() {
            assert!(ToneBin::parse(&good[..n]).is_err(), "prefix {}", n);
            let _ = ToneBin::parse_with(
                &good[..n],
                ParseOptions {
                    allow_trailing: true,
                    check_crc: false,
                },
            );
        }
        let mut seed = 0x1234_5678u32;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..5000 {
            let mut b = good.clone();
            for _ in 0..1 + rnd() % 4 {
                let i = rnd() as usize % b.len();
                b[i] = rnd() as u8;
            }
            let _ = ToneBin::parse(&b);
            if let Ok(bin) = ToneBin::parse_with(
                &b,
                ParseOptions {
                    allow_trailing: true,
                    check_crc: false,
                },
            ) {
                for (info, data) in bin.files() {
                    assert_eq!(data.len(), info.song_len as usize);
                }
            }
            let (mut f, part) = flash_with::<4>(&b, 0x1000);
            let _ = tone_partition_init(&mut f, &part);
            let _ = tone_partition_check(&mut f, &part);
        }
    }

    // ---- on flash -------------------------------------------------------------------------

    #[test]
    fn partition_init_flash_tone_gives_format0_total21() {
        let Some(b) = vector("flash_tone.bin") else {
            return;
        };
        let (mut f, part) = flash_with::<4>(&b, part_size_for(b.len()));
        let info = tone_partition_init(&mut f, &part).unwrap();
        assert_eq!(
            info.header,
            ToneHeader {
                header_tag: 0x2053,
                total_num: 21,
                format: 0
            }
        );
        assert_eq!(info.desc, None);
        let (mut f1, part1) = flash_with::<1>(&b, part_size_for(b.len()));
        assert_eq!(tone_partition_init(&mut f1, &part1).unwrap(), info);
        assert_eq!(tone_partition_check(&mut f, &part).unwrap(), info);
    }

    #[test]
    fn partition_init_and_check_accept_format1_vectors() {
        for v in VECTORS.iter().filter(|v| v.format == 1) {
            let Some(b) = vector(v.name) else { return };
            let (mut f, part) = flash_with::<4>(&b, part_size_for(b.len()));
            let info =
                tone_partition_init(&mut f, &part).unwrap_or_else(|e| panic!("{}: {}", v.name, e));
            assert_eq!(info.header.total_num, v.files);
            assert_eq!(info.desc.unwrap().version_str(), v.version.unwrap());
            assert_eq!(
                tone_partition_check(&mut f, &part).unwrap(),
                info,
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn partition_init_rejects_torn_format1_tail() {
        let Some(b) = vector("wwe_tone_v1.1.1.bin") else {
            return;
        };
        let n = b.len();
        // The last two bytes (the tail) never made it to flash: erased 0xFF there.
        let (mut f, part) = flash_with::<4>(&b[..n - 2], part_size_for(n));
        let err = tone_err(tone_partition_init(&mut f, &part).unwrap_err());
        assert_eq!(
            err,
            ToneError::TailMismatch {
                offset: n as u32 - 2,
                found: 0xFFFF
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "Flash tone init failed at tail check: found 0xffff at 0x{:x} (expected 0xdfac)",
                n - 2
            )
        );
        // Only header + desc + table written (interrupted right after need_upgrade + a bit).
        let (mut f, part) = flash_with::<4>(&b[..264 + 64 * 2], part_size_for(n));
        assert!(matches!(
            tone_err(tone_partition_init(&mut f, &part).unwrap_err()),
            ToneError::TailMismatch { .. }
        ));
    }

    #[test]
    fn partition_init_rejects_erased_partition() {
        let (mut f, part) = flash_with::<4>(&[], 0x2000);
        assert_eq!(
            tone_err(tone_partition_init(&mut f, &part).unwrap_err()),
            ToneError::BadHeaderTag { found: 0xFFFF }
        );
    }

    #[test]
    fn partition_init_format1_without_files_fails_at_tail_address_4() {
        let b = pack_vec(&[], 1, "v1.0.0");
        assert_eq!(b.len(), 264 + 6);
        assert!(ToneBin::parse(&b).is_ok()); // the generator can make it...
        let (mut f, part) = flash_with::<4>(&b, 0x1000);
        // ...but ADF's init reads the tail at 4 (the format field: 0x0001).
        assert_eq!(
            tone_err(tone_partition_init(&mut f, &part).unwrap_err()),
            ToneError::TailMismatch {
                offset: 4,
                found: 1
            }
        );
        assert!(tone_partition_check(&mut f, &part).is_ok());
    }

    #[test]
    fn partition_init_uses_zeroed_entry_when_last_tag_is_wrong() {
        let mut b = small_f1("v1.0.0");
        b[264 + 64] = 0; // last entry's tag
        let (mut f, part) = flash_with::<4>(&b, 0x1000);
        assert_eq!(
            tone_err(tone_partition_init(&mut f, &part).unwrap_err()),
            ToneError::TailMismatch {
                offset: 4,
                found: 1
            }
        );
    }

    #[test]
    fn partition_init_reports_tail_outside_partition() {
        let mut b = small_f1("v1.0.0");
        b[264 + 64 + 4..264 + 64 + 8].copy_from_slice(&0x8000u32.to_le_bytes()); // last song_adr
        let (mut f, part) = flash_with::<4>(&b, 0x1000);
        assert!(matches!(
            tone_err(tone_partition_init(&mut f, &part).unwrap_err()),
            ToneError::TailOutside { size: 0x1000, .. }
        ));
    }

    #[test]
    fn partition_init_accepts_other_formats_unchecked_but_check_rejects() {
        let h = ToneHeader {
            header_tag: TONE_HEADER_TAG,
            total_num: 3,
            format: 7,
        };
        let (mut f, part) = flash_with::<4>(&h.to_bytes(), 0x1000);
        assert_eq!(
            tone_partition_init(&mut f, &part).unwrap(),
            ToneInfo {
                header: h,
                desc: None
            }
        );
        assert_eq!(
            tone_err(tone_partition_check(&mut f, &part).unwrap_err()),
            ToneError::UnsupportedFormat { format: 7 }
        );
    }

    #[test]
    fn check_catches_flipped_data_byte_that_init_misses() {
        let Some(mut b) = vector("korvo_du1906_tone_v1.2.0.bin") else {
            return;
        };
        b[50_000] ^= 0x01;
        let (mut f, part) = flash_with::<4>(&b, part_size_for(b.len()));
        assert!(tone_partition_init(&mut f, &part).is_ok());
        let err = tone_err(tone_partition_check(&mut f, &part).unwrap_err());
        assert!(
            matches!(err, ToneError::CrcMismatch { stored: 0x232B_21B1, computed, offset } if computed != 0x232B_21B1 && offset == b.len() as u32 - 6),
            "{:?}",
            err
        );
    }

    #[test]
    fn check_catches_bad_entry_tag_that_init_misses() {
        let Some(mut b) = vector("korvo_du1906_tone_v1.2.0.bin") else {
            return;
        };
        b[264 + 64 * 3] = 0xFF; // entry 3 (not the last) half-erased
        let (mut f, part) = flash_with::<4>(&b, part_size_for(b.len()));
        assert!(tone_partition_init(&mut f, &part).is_ok());
        assert_eq!(
            tone_err(tone_partition_check(&mut f, &part).unwrap_err()),
            ToneError::BadFileTag {
                index: 3,
                offset: 264 + 64 * 3,
                found: 0xFF
            }
        );
    }

    #[test]
    fn check_format0_requires_last_file_inside_partition() {
        let Some(b) = vector("flash_tone.bin") else {
            return;
        };
        // A partition too small for the bin (434,756 > 0x6A000 = 434,176).
        let (mut f, part) = flash_with::<4>(&b, 0x6A000);
        assert!(tone_partition_init(&mut f, &part).is_ok());
        assert!(matches!(
            tone_err(tone_partition_check(&mut f, &part).unwrap_err()),
            ToneError::FileOutside {
                index: 20,
                size: 0x6A000,
                ..
            }
        ));
    }

    #[test]
    fn flash_driver_errors_propagate_with_offset() {
        let b = small_f1("v1.0.0");
        let (mut f, mut part) = flash_with::<4>(&b, 0x1000);
        part.offset = 0x100_0000; // beyond the chip
        let err = tone_partition_init(&mut f, &part).unwrap_err();
        assert!(
            matches!(
                err,
                crate::Error::Flash(FlashError {
                    offset: 0x100_0000,
                    ..
                })
            ),
            "{:?}",
            err
        );
    }

    // ---- upgrade policy -------------------------------------------------------------------

    fn hdr(format: u32) -> ToneHeader {
        ToneHeader {
            header_tag: TONE_HEADER_TAG,
            total_num: 1,
            format,
        }
    }

    fn desc(version: &str, name: &str) -> ToneDesc {
        let mut d = ToneDesc::new(version, "10:00:00", "2024-01-01");
        d.project_name = fixed(name.as_bytes());
        d
    }

    fn cur(format: u32, version: &str) -> ToneInfo {
        ToneInfo {
            header: hdr(format),
            desc: (format == 1).then(|| desc(version, "ESP_TONE_BIN")),
        }
    }

    const BOTH: [bool; 2] = [false, true];

    #[test]
    fn decide_row1_invalid_current_writes_whole_stream_unchecked() {
        let bad = ToneHeader {
            header_tag: 0xFFFF,
            total_num: 0,
            format: 9,
        };
        for strict in BOTH {
            assert_eq!(
                decide_upgrade(None, &bad, None, strict),
                ToneDecision::WriteAll
            );
            assert_eq!(
                decide_upgrade(None, &hdr(0), None, strict),
                ToneDecision::WriteAll
            );
            let d = desc("junk", "NOPE");
            assert_eq!(
                decide_upgrade(None, &hdr(1), Some(&d), strict),
                ToneDecision::WriteAll
            );
        }
    }

    #[test]
    fn decide_rejects_incoming_without_tone_tag() {
        let bad = ToneHeader {
            header_tag: 0x2054,
            total_num: 1,
            format: 1,
        };
        for strict in BOTH {
            for c in [cur(0, ""), cur(1, "v1.0.0")] {
                let d = decide_upgrade(Some(&c), &bad, None, strict);
                assert_eq!(d, ToneDecision::Reject(ToneReject::NotToneBin));
            }
        }
        assert_eq!(ToneReject::NotToneBin.adf_reason(), -1);
    }

    #[test]
    fn decide_row2_incoming_format0_always_written_even_downgrade() {
        for strict in BOTH {
            for c in [cur(0, ""), cur(1, "v9.9.9"), cur(5, "")] {
                assert_eq!(
                    decide_upgrade(Some(&c), &hdr(0), None, strict),
                    ToneDecision::Write { need_desc: false }
                );
            }
        }
    }

    #[test]
    fn decide_row3_current_not_format1_replaced_without_version_compare() {
        let inc = desc("v1.0", "ESP_TONE_BIN"); // unparseable version
        for strict in BOTH {
            for c in [cur(0, ""), cur(2, "")] {
                for f in [1, 2] {
                    let d = decide_upgrade(Some(&c), &hdr(f), Some(&inc), strict);
                    assert_eq!(d, ToneDecision::Write { need_desc: true });
                }
                let mut m = inc;
                m.magic_word = 0xABCD_5432;
                let d = decide_upgrade(Some(&c), &hdr(1), Some(&m), strict);
                assert_eq!(
                    d,
                    ToneDecision::Reject(ToneReject::BadMagic { found: 0xABCD_5432 })
                );
                let long = desc("v1.0", "ESP_TONE_BIN_X");
                let d = decide_upgrade(Some(&c), &hdr(1), Some(&long), strict);
                assert_eq!(d, ToneDecision::Reject(ToneReject::BadProjectName));
                let d = decide_upgrade(Some(&c), &hdr(1), None, strict);
                assert_eq!(d, ToneDecision::Reject(ToneReject::MissingIncomingDesc));
            }
        }
    }

    #[test]
    fn decide_project_name_substring_quirk_only_when_not_strict() {
        let c = cur(0, "");
        for name in ["TONE", "", "ESP", "BIN", "_TONE_"] {
            let d = desc("v1.0.0", name);
            assert_eq!(
                decide_upgrade(Some(&c), &hdr(1), Some(&d), false),
                ToneDecision::Write { need_desc: true },
                "{:?}",
                name
            );
            assert_eq!(
                decide_upgrade(Some(&c), &hdr(1), Some(&d), true),
                ToneDecision::Reject(ToneReject::BadProjectName)
            );
        }
        let mut full = desc("v1.0.0", "");
        full.project_name = [b'E'; 32]; // no NUL: C string runs on, never a substring
        for strict in BOTH {
            assert_eq!(
                decide_upgrade(Some(&c), &hdr(1), Some(&full), strict),
                ToneDecision::Reject(ToneReject::BadProjectName)
            );
        }
        let exact = desc("v1.0.0", "ESP_TONE_BIN");
        assert_eq!(
            decide_upgrade(Some(&c), &hdr(1), Some(&exact), true),
            ToneDecision::Write { need_desc: true }
        );
    }

    #[test]
    fn decide_row4_current_format1_needs_valid_newer_version() {
        let c = cur(1, "v1.2.0");
        for strict in BOTH {
            let d =
                |v: &str| decide_upgrade(Some(&c), &hdr(1), Some(&desc(v, "ESP_TONE_BIN")), strict);
            assert_eq!(d("v1.2.1"), ToneDecision::Write { need_desc: true });
            assert_eq!(d("V2.0.0"), ToneDecision::Write { need_desc: true });
            let same = d("v1.2.0");
            assert_eq!(
                same,
                ToneDecision::Reject(ToneReject::NotNewer {
                    current: fixed(b"v1.2.0"),
                    incoming: fixed(b"v1.2.0")
                })
            );
            assert!(matches!(
                d("v1.1.9"),
                ToneDecision::Reject(ToneReject::NotNewer { .. })
            ));
            assert_eq!(d("v1.0"), ToneDecision::Reject(ToneReject::InvalidVersion));
            assert_eq!(d("1.3.0"), ToneDecision::Reject(ToneReject::InvalidVersion));
            // Any incoming format ≠ 0 takes this path.
            let inc = desc("v1.2.1", "ESP_TONE_BIN");
            assert_eq!(
                decide_upgrade(Some(&c), &hdr(3), Some(&inc), strict),
                ToneDecision::Write { need_desc: true }
            );
            // Magic and name are checked before the version.
            let mut m = desc("v0.0.1", "ESP_TONE_BIN");
            m.magic_word = 0;
            assert_eq!(
                decide_upgrade(Some(&c), &hdr(1), Some(&m), strict),
                ToneDecision::Reject(ToneReject::BadMagic { found: 0 })
            );
            let n = desc("v0.0.1", "XX");
            assert_eq!(
                decide_upgrade(Some(&c), &hdr(1), Some(&n), strict),
                ToneDecision::Reject(ToneReject::BadProjectName)
            );
        }
        // An unparseable current version (−1) loses against any valid incoming one.
        let c = cur(1, "v1.0");
        for strict in BOTH {
            let d = decide_upgrade(
                Some(&c),
                &hdr(1),
                Some(&desc("v0.0.0", "ESP_TONE_BIN")),
                strict,
            );
            assert_eq!(d, ToneDecision::Write { need_desc: true });
        }
        let broken = ToneInfo {
            header: hdr(1),
            desc: None,
        };
        let d = decide_upgrade(
            Some(&broken),
            &hdr(1),
            Some(&desc("v1.0.0", "ESP_TONE_BIN")),
            false,
        );
        assert_eq!(d, ToneDecision::Reject(ToneReject::MissingCurrentDesc));
    }

    #[test]
    fn decide_with_real_vectors() {
        let (Some(korvo), Some(wwe), Some(af), Some(f0)) = (
            vector("korvo_du1906_tone_v1.2.0.bin"),
            vector("wwe_tone_v1.1.1.bin"),
            vector("audio_flash_tone_v1.0.bin"),
            vector("flash_tone.bin"),
        ) else {
            return;
        };
        let (mut f, part) = flash_with::<4>(&korvo, part_size_for(korvo.len()));
        let current = tone_partition_init(&mut f, &part).unwrap();
        let inc = |b: &[u8]| {
            (
                ToneHeader::parse(b).unwrap(),
                ToneDesc::parse(&b[8..]).unwrap(),
            )
        };
        let (h, d) = inc(&wwe);
        assert!(incoming_needs_desc(&h));
        let r = decide_upgrade(Some(&current), &h, Some(&d), false);
        assert!(matches!(
            r,
            ToneDecision::Reject(ToneReject::NotNewer { .. })
        ));
        let ToneDecision::Reject(rej) = r else {
            unreachable!()
        };
        assert_eq!(rej.adf_reason(), 0x90004);
        assert_eq!(rej.to_string(), "The incoming version is same as or lower than the running version (current \"v1.2.0\", incoming \"v1.1.1\")");
        let (h, d) = inc(&af);
        let r = decide_upgrade(Some(&current), &h, Some(&d), true);
        assert_eq!(r, ToneDecision::Reject(ToneReject::InvalidVersion));
        // Current format 0 (the README's flash_tone.bin): format-1 "v1.0" replaces it.
        let (mut f, part) = flash_with::<4>(&f0, part_size_for(f0.len()));
        let current = tone_partition_init(&mut f, &part).unwrap();
        assert_eq!(
            decide_upgrade(Some(&current), &h, Some(&d), true),
            ToneDecision::Write { need_desc: true }
        );
        let h0 = ToneHeader::parse(&f0).unwrap();
        assert!(!incoming_needs_desc(&h0));
    }

    #[test]
    fn incoming_needs_desc_only_for_tone_bins_with_format_not_0() {
        assert!(!incoming_needs_desc(&hdr(0)));
        assert!(incoming_needs_desc(&hdr(1)));
        assert!(incoming_needs_desc(&hdr(2)));
        assert!(!incoming_needs_desc(&ToneHeader {
            header_tag: 0,
            total_num: 0,
            format: 1
        }));
    }

    #[test]
    fn reject_reasons_match_adf_codes() {
        assert_eq!(ToneReject::BadMagic { found: 0 }.adf_reason(), 0x90005);
        assert_eq!(ToneReject::BadProjectName.adf_reason(), 0x90006);
        assert_eq!(ToneReject::InvalidVersion.adf_reason(), 0x90003);
        assert_eq!(
            ToneReject::NotNewer {
                current: [0; 32],
                incoming: [0; 32]
            }
            .adf_reason(),
            589_828
        );
        assert_eq!(ToneReject::MissingIncomingDesc.adf_reason(), 0x9000C);
        assert_eq!(ToneReject::MissingCurrentDesc.adf_reason(), 0x9000A);
    }

    // ---- packer ---------------------------------------------------------------------------

    #[test]
    fn file_type_follows_last_extension_case_insensitively() {
        assert_eq!(file_type_for_name("a.mp3"), Some(0));
        assert_eq!(file_type_for_name("A.MP3"), Some(0));
        assert_eq!(file_type_for_name("x.y.Wav"), Some(1));
        assert_eq!(file_type_for_name("mp3"), Some(0)); // no dot: Python's split gives the name
        assert_eq!(file_type_for_name("a.mp3.txt"), None);
        assert_eq!(file_type_for_name("a.ogg"), None);
        assert_eq!(file_type_for_name("a."), None);
    }

    #[test]
    fn pack_layout_matches_generator() {
        let b = small_f1("v1.2.3");
        // header
        assert_eq!(b[..8], [0x53, 0x20, 2, 0, 1, 0, 0, 0]);
        // desc
        assert_eq!(b[8..12], [0x76, 0x98, 0x5F, 0xF5]);
        assert_eq!(&b[24..30], b"v1.2.3");
        assert_eq!(&b[56..69], b"ESP_TONE_BIN\0");
        assert_eq!(&b[88..97], b"12:00:00\0");
        assert_eq!(&b[104..115], b"2024-01-01\0");
        assert!(b[120..264].iter().all(|&x| x == 0));
        // table: song_adr(0) = 264 + 128 = 392; file 0 is 5 bytes → padded 8; song_adr(1) = 400.
        assert_eq!(b[264..272], [0x28, 0, 0, 0, 0x88, 1, 0, 0]);
        assert_eq!(b[272..276], [5, 0, 0, 0]);
        assert!(b[276..328].iter().all(|&x| x == 0));
        assert_eq!(b[328..336], [0x28, 1, 1, 0, 0x90, 1, 0, 0]);
        // data + 0xFF padding
        assert_eq!(b[392..400], [1, 2, 3, 4, 5, 0xFF, 0xFF, 0xFF]);
        assert_eq!(b[400..412], [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0xFF, 0xFF]);
        // CRC + tail
        assert_eq!(b.len(), 412 + 6);
        assert_eq!(b[412..416], CRC32.checksum(&b[..412]).to_le_bytes());
        assert_eq!(b[416..], [0xAC, 0xDF]);
        // format 0: no desc, no trailer
        let a = [7u8; 4];
        let f0 = pack_vec(
            &[ToneEntry {
                name: "z.wav",
                data: &a,
            }],
            0,
            "ignored",
        );
        assert_eq!(f0.len(), 8 + 64 + 4);
        assert_eq!(f0[8 + 4..8 + 8], 72u32.to_le_bytes());
    }

    #[test]
    fn pack_truncates_long_strings_like_struct_pack() {
        let v = "v1.2.3-this-is-a-very-long-version-string";
        let b = pack_vec(&[], 1, v);
        assert_eq!(&b[24..56], &v.as_bytes()[..32]);
        assert_eq!(&b[56..60], b"ESP_");
        let d = ToneDesc::parse(&b[8..]).unwrap();
        assert_eq!(d.adf_version_number(), None); // strlen runs into project_name
    }

    #[test]
    fn pack_validates_before_emitting() {
        let mut emitted = 0usize;
        let mut sink = |b: &[u8]| emitted += b.len();
        let e = [
            ToneEntry {
                name: "a.mp3",
                data: &[1],
            },
            ToneEntry {
                name: "b.ogg",
                data: &[2],
            },
        ];
        assert_eq!(
            pack(&e, 1, "v1.0", "", "", &mut sink),
            Err(ToneError::UnknownFileType { index: 1 })
        );
        assert_eq!(
            pack(&e[..1], 2, "v1.0", "", "", &mut sink),
            Err(ToneError::UnsupportedFormat { format: 2 })
        );
        let many = vec![
            ToneEntry {
                name: "a.mp3",
                data: &[]
            };
            257
        ];
        assert_eq!(
            pack(&many, 0, "", "", "", &mut sink),
            Err(ToneError::TooManyFiles { count: 257 })
        );
        assert_eq!(emitted, 0);
        let max = vec![
            ToneEntry {
                name: "a.mp3",
                data: &[]
            };
            256
        ];
        assert_eq!(
            pack(&max, 0, "", "", "", &mut |_: &[u8]| {}),
            Ok(8 + 64 * 256)
        );
    }

    #[test]
    fn packed_bins_pass_reader_init_and_check() {
        let b = small_f1("v1.2.3");
        let bin = ToneBin::parse(&b).unwrap();
        let files: Vec<(ToneFileInfo, &[u8])> = bin.files().collect();
        assert_eq!(files[0].1, &[1, 2, 3, 4, 5]);
        assert_eq!(files[1].1, &[9; 10]);
        assert_eq!(files[1].0.file_type, TONE_FILE_TYPE_WAV);
        let (mut f, part) = flash_with::<4>(&b, 0x1000);
        let info = tone_partition_init(&mut f, &part).unwrap();
        assert_eq!(info.desc.unwrap().adf_version_number(), Some(0x010203));
        assert_eq!(tone_partition_check(&mut f, &part).unwrap(), info);
    }

    // ---- the streaming check --------------------------------------------------------------

    /// Feed `bin` in pieces whose sizes come from `seed` (1..=97 bytes), then finish.
    fn stream_check(
        bin: &[u8],
        capacity: u32,
        announced: Option<u64>,
        seed: u64,
    ) -> Result<ToneStreamSummary, ToneError> {
        let mut c = ToneStreamCheck::new(capacity, announced);
        let mut x = seed | 1;
        let mut at = 0;
        while at < bin.len() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (1 + (x % 97) as usize).min(bin.len() - at);
            if let Err(e) = c.feed(&bin[at..at + n]) {
                assert_eq!(c.finish().unwrap_err(), e, "the first fault is kept");
                return Err(e);
            }
            at += n;
        }
        c.finish()
    }

    /// The reference verdict: the whole-bin reader (trailing 0xFF allowed), plus what ADF's
    /// reader needs (format 1 has files) and the partition bound.
    fn reference_ok(bin: &[u8], capacity: u32) -> bool {
        match ToneBin::parse_dump(bin) {
            Ok(b) => {
                !(b.header().format == TONE_FORMAT_1 && b.header().total_num == 0)
                    && b.total_size() <= capacity
            }
            Err(_) => false,
        }
    }

    #[test]
    fn stream_check_accepts_every_real_vector_in_any_chunking() {
        for v in VECTORS {
            let Some(bin) = vector(v.name) else { return };
            for seed in [1u64, 7, 0xDEAD] {
                let s = stream_check(&bin, part_size_for(bin.len()), Some(bin.len() as u64), seed)
                    .unwrap_or_else(|e| panic!("{}: {}", v.name, e));
                assert_eq!(s.size as usize, v.size, "{}", v.name);
                assert_eq!(s.header.total_num, v.files);
            }
            // A partition dump: the bin then erased flash.
            let mut dump = bin.clone();
            dump.resize(part_size_for(bin.len()) as usize, 0xFF);
            let s = stream_check(&dump, dump.len() as u32, Some(dump.len() as u64), 3).unwrap();
            assert_eq!(s.size as usize, v.size);
            assert_eq!(s.trailing_erased as usize, dump.len() - v.size);
        }
    }

    #[test]
    fn stream_check_rejects_what_the_whole_bin_reader_rejects() {
        let f1 = small_f1("v1.0.0");
        let f0 = pack_vec(
            &[
                ToneEntry {
                    name: "a.mp3",
                    data: &[1, 2, 3],
                },
                ToneEntry {
                    name: "b.wav",
                    data: &[4; 6],
                },
            ],
            0,
            "",
        );
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut rnd = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        let (mut agree_ok, mut agree_bad) = (0, 0);
        for base in [&f1, &f0] {
            for _ in 0..4000 {
                let mut m = base.clone();
                match rnd(5) {
                    0 => {
                        let p = rnd(m.len());
                        m[p] ^= 1 << rnd(8);
                    }
                    1 => {
                        let p = rnd(m.len());
                        m[p] = rnd(256) as u8;
                    }
                    2 => m.truncate(rnd(m.len())),
                    3 => m.extend(std::iter::repeat_n(
                        if rnd(2) == 0 { 0xFF } else { 0 },
                        1 + rnd(9),
                    )),
                    _ => {
                        let p = rnd(m.len() - 4);
                        m[p..p + 4].copy_from_slice(&(rnd(400) as u32).to_le_bytes());
                    }
                }
                let cap = if rnd(4) == 0 {
                    (m.len() as u32).saturating_sub(3)
                } else {
                    0x1000
                };
                let want = reference_ok(&m, cap);
                let announced = if rnd(2) == 0 {
                    Some(m.len() as u64)
                } else {
                    None
                };
                let got = stream_check(&m, cap, announced, rnd(1000) as u64);
                assert_eq!(got.is_ok(), want, "{:?} cap {} {:02x?}", got, cap, m);
                if want {
                    agree_ok += 1;
                } else {
                    agree_bad += 1;
                }
            }
        }
        assert!(agree_ok > 100 && agree_bad > 4000, "{agree_ok} {agree_bad}");
    }

    #[test]
    fn stream_check_names_truncation_length_and_format_faults() {
        let f1 = small_f1("v1.0.0");
        let cap = 0x1000;
        // Truncated: finish says which part is missing.
        let e = stream_check(&f1[..f1.len() - 3], cap, None, 1).unwrap_err();
        assert!(
            matches!(
                e,
                ToneError::Truncated {
                    what: "CRC and tail",
                    ..
                }
            ),
            "{e}"
        );
        let e = stream_check(&f1[..100], cap, None, 1).unwrap_err();
        assert!(
            matches!(
                e,
                ToneError::Truncated {
                    what: "descriptor",
                    ..
                }
            ),
            "{e}"
        );
        // The source announced more bytes than the bin holds, or fewer.
        let mut longer = f1.clone();
        longer.extend([0xFF; 4]);
        assert!(stream_check(&longer, cap, Some(longer.len() as u64), 1).is_ok());
        let e = stream_check(&f1, cap, Some(f1.len() as u64 + 10), 1).unwrap_err();
        assert_eq!(
            e,
            ToneError::LengthMismatch {
                announced: f1.len() as u64 + 10,
                received: f1.len() as u64
            }
        );
        let e = stream_check(&f1, cap, Some(f1.len() as u64 - 2), 1).unwrap_err();
        assert!(matches!(e, ToneError::FileOutside { .. }), "{e}");
        // Anything but 0xFF after the bin.
        let mut tail = f1.clone();
        tail.extend([0xFF, 0x00]);
        let e = stream_check(&tail, cap, None, 1).unwrap_err();
        assert_eq!(
            e,
            ToneError::TrailingData {
                end: f1.len() as u32,
                offset: f1.len() as u64 + 1,
                found: 0
            }
        );
        assert!(e.to_string().contains("0xff"), "{e}");
        // Not a tone bin at all: refused at byte 8, whatever follows.
        let mut c = ToneStreamCheck::new(cap, None);
        let e = c.feed(b"\x7fELF\x02\x01\x01\x00rest").unwrap_err();
        assert!(
            matches!(e, ToneError::BadHeaderTag { found: 0x457f }),
            "{e}"
        );
        // A tone tag with a bad format, or format 1 without files.
        let mut h = f1[..8].to_vec();
        h[4] = 2;
        let e = stream_check(&h, cap, None, 1).unwrap_err();
        assert_eq!(e, ToneError::UnsupportedFormat { format: 2 });
        let e = stream_check(&pack_vec(&[], 1, "v1.0.0"), cap, None, 1).unwrap_err();
        assert_eq!(e, ToneError::NoFiles);
        assert!(stream_check(&pack_vec(&[], 0, ""), cap, None, 1).is_ok());
        // Bigger than the partition.
        let e = stream_check(&f1, f1.len() as u32 - 1, None, 1).unwrap_err();
        assert!(matches!(e, ToneError::FileOutside { .. }), "{e}");
    }

    #[test]
    fn stream_check_allows_empty_files_and_checks_padding() {
        let bin = pack_vec(
            &[
                ToneEntry {
                    name: "a.mp3",
                    data: &[],
                },
                ToneEntry {
                    name: "b.mp3",
                    data: &[7],
                },
                ToneEntry {
                    name: "c.mp3",
                    data: &[],
                },
            ],
            0,
            "",
        );
        assert!(stream_check(&bin, 0x1000, Some(bin.len() as u64), 5).is_ok());
        let mut bad = bin.clone();
        let last = bad.len() - 1;
        bad[last] = 0;
        let e = stream_check(&bad, 0x1000, None, 5).unwrap_err();
        assert_eq!(
            e,
            ToneError::BadPadding {
                index: 1,
                offset: last as u32,
                found: 0
            }
        );
    }

    #[test]
    fn parse_dump_ignores_trailing_erased_bytes_only() {
        let f1 = small_f1("v1.0.0");
        let mut dump = f1.clone();
        dump.resize(0x2000, 0xFF);
        let b = ToneBin::parse_dump(&dump).unwrap();
        assert_eq!(b.total_size() as usize, f1.len());
        assert!(ToneBin::parse(&dump).is_err());
        dump[0x1FFF] = 0;
        assert_eq!(
            ToneBin::parse_dump(&dump).unwrap_err(),
            ToneError::TrailingData {
                end: f1.len() as u32,
                offset: 0x1FFF,
                found: 0
            }
        );
    }

    #[test]
    fn summarize_reports_format_count_version_and_verdicts() {
        let f1 = small_f1("v1.2.3");
        let (mut f, part) = flash_with::<4>(&f1, 0x2000);
        let s = summarize(&mut f, &part).unwrap();
        assert_eq!((s.header.format, s.header.total_num), (1, 2));
        assert_eq!(s.version(), Some("v1.2.3"));
        assert_eq!(s.check, Ok(f1.len() as u32));
        assert!(s.is_valid());
        // A flipped data byte: ADF's reader still accepts it, our check does not.
        let mut bad = f1.clone();
        bad[f1.len() - 10] ^= 1;
        let (mut f, part) = flash_with::<4>(&bad, 0x2000);
        let s = summarize(&mut f, &part).unwrap();
        assert!(s.adf_init.is_ok());
        assert!(matches!(s.check, Err(ToneError::CrcMismatch { .. })));
        assert!(!s.is_valid());
        // Erased: not a tone partition.
        let (mut f, part) = flash_with::<4>(&[], 0x2000);
        let e = summarize(&mut f, &part).unwrap_err();
        assert_eq!(tone_err(e), ToneError::BadHeaderTag { found: 0xFFFF });
    }
}
