//! The streaming check of an incoming tone bin, in chunks of any size, before anything is
//! erased.

use super::{
    le16, le32, pad4, table_offset, ToneDesc, ToneError, ToneFileInfo, ToneHeader,
    FLASH_TONE_FILE_TAG, FLASH_TONE_TAIL, TONE_DESC_SIZE, TONE_FILE_INFO_SIZE, TONE_FORMAT_0,
    TONE_FORMAT_1, TONE_HEADER_SIZE, TONE_MAX_FILES, TONE_PAD_BYTE, TONE_TRAILER_SIZE,
};
use core::fmt;
use crc::{Crc, CRC_32_ISO_HDLC};

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
/// allocation), with every structural rule [`ToneBin::parse`](super::ToneBin::parse) applies: header tag, format 0 or
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
