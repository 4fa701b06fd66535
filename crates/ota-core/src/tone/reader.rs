//! The whole-bin reader over a byte slice: [`ToneBin`] and its file iterator.

use super::format::walk_table;
use super::{
    array, le16, le32, need, pad4, table_offset, ToneDesc, ToneError, ToneFileInfo, ToneHeader,
    CRC32, FLASH_TONE_TAIL, TONE_DESC_SIZE, TONE_FILE_INFO_SIZE, TONE_FORMAT_0, TONE_FORMAT_1,
    TONE_HEADER_SIZE, TONE_PAD_BYTE, TONE_TRAILER_SIZE,
};

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
            Ok::<_, ToneError>(array(
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
