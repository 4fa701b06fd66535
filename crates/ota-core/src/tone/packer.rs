//! The packer: builds a tone bin byte for byte like `mk_audio_tone.py` 1.2.

use super::{
    pad4, table_offset, ToneDesc, ToneError, ToneFileInfo, ToneHeader, CRC32, FLASH_TONE_FILE_TAG,
    FLASH_TONE_TAIL, TONE_FILE_INFO_SIZE, TONE_FILE_TYPE_MP3, TONE_FILE_TYPE_WAV, TONE_FORMAT_0,
    TONE_FORMAT_1, TONE_HEADER_TAG, TONE_MAX_FILES, TONE_PAD_BYTE, TONE_TRAILER_SIZE,
};

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
/// header, \[descriptor\], table (song_adr contiguous, info_crc 0), data padded with 0xFF to 4,
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
