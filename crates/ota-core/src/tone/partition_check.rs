//! Tone partitions on flash: ADF's `tone_partition_init`, our stricter full check, and the
//! partition summary for `device info`.

use super::format::walk_table;
use super::{
    le16, le32, pad4, ToneDesc, ToneError, ToneFileInfo, ToneHeader, CHUNK, CRC32,
    FLASH_TONE_FILE_TAG, FLASH_TONE_TAIL, TABLE_OFFSET_F1, TONE_DESC_SIZE, TONE_FILE_INFO_SIZE,
    TONE_FORMAT_0, TONE_FORMAT_1, TONE_HEADER_SIZE, TONE_TRAILER_SIZE,
};
use crate::flash::Region;
use crate::partition::Partition;
use embedded_storage::nor_flash::ReadNorFlash;

/// A tone partition that passed [`tone_partition_init`] (or [`tone_partition_check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToneInfo {
    pub header: ToneHeader,
    /// Format 1: the descriptor at offset 8 (`tone_partition_get_app_desc`, no magic check in
    /// `init`). Other formats: `None`.
    pub desc: Option<ToneDesc>,
}

fn read_header<F: ReadNorFlash>(
    flash: &mut F,
    region: &Region,
) -> Result<ToneHeader, crate::Error> {
    let mut b = [0u8; TONE_HEADER_SIZE];
    region.read(flash, 0, &mut b)?;
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
    region.read(flash, TONE_HEADER_SIZE as u32, &mut b)?;
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
        if region.read(flash, off, &mut e).is_ok() {
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
    region.read(flash, tail_at, &mut t)?;
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
        region.read(flash, off, &mut e)?;
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
        region.read(flash, data_end, &mut tr)?;
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
            region.read(flash, pos, chunk)?;
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
