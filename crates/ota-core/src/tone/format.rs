//! The byte-exact types of a tone bin (header, file info, descriptor) and the file-table walk
//! shared by the slice reader and the flash check (adf-ota-service.md §8).

use super::{
    fixed, le16, le32, need, pad4, put, table_offset, ToneError, FLASH_TONE_FILE_TAG,
    FLASH_TONE_PROJECT_NAME, TONE_DESC_MAGIC, TONE_DESC_SIZE, TONE_FILE_INFO_SIZE,
    TONE_FILE_TYPE_MP3, TONE_FILE_TYPE_WAV, TONE_HEADER_SIZE, TONE_HEADER_TAG,
};
use crate::image::AppDesc;

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

/// Walk the file table of a bin of `size` bytes whose header is `h`, reading each 64-byte
/// entry through `entry_at(offset)`. Checks tag, index, contiguity and that each padded file
/// ends within `size`. Returns D, the end of the last file's padding (= table end if N = 0).
pub(super) fn walk_table<E: From<ToneError>>(
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
