//! The write orders the engines share: [`SequentialWriter`] (erase ahead sector by sector,
//! whole write words only, never outside its region) and the header-last write of a
//! partition's first bytes ([`write_first_sector_last`]). Used by the update engines
//! ([`crate::update`]) and the staged copy ([`crate::staging`]) alike, so neither depends on
//! the other.

use super::{round_up, write_size, Aligned, FlashError, FlashErrorKind, FlashOp, Region};
use super::{MAX_WORD, SECTOR_SIZE};
use embedded_storage::nor_flash::NorFlash;

/// Bytes at the start of a data partition that are programmed after the rest of the
/// partition ([`crate::update::DataUpdate`], the staged copy's last step): an ESP-ADF tone
/// bin's 8-byte header (u16 tag, u16 count, u32 format; esp-adf
/// `components/tone_partition/tone_partition.c` `tone_header_t`).
pub const DATA_HEADER_LAST_LEN: usize = 8;
/// Of those, the bytes programmed in the very last write: the tone header's u16 tag 0x2053
/// (`tone_partition.c`), rounded up to the flash's write unit ([`header_last_cuts`]). Until it
/// is complete the tag reads 0xFFFF or 0xFF53, which even ADF's lenient `tone_partition_init`
/// rejects; a torn count or format behind a missing tag never shows.
pub const DATA_TAG_LAST_LEN: usize = 2;

/// Program the first-sector bytes `first` of `region` from the end towards the start, in up to
/// three writes cut by [`header_last_cuts`]: at write unit 1 `[8, len)`, `[2, 8)`, `[0, 2)` (see
/// [`DATA_HEADER_LAST_LEN`], [`DATA_TAG_LAST_LEN`]); the word holding the tag is always last.
pub fn write_first_sector_last<F: NorFlash>(
    flash: &mut F,
    region: &Region,
    first: &[u8],
) -> Result<(), FlashError> {
    let cuts = header_last_cuts(write_size::<F>(), first.len() as u32);
    let mut end = first.len() as u32;
    for start in cuts {
        if end > start {
            region.write(flash, start, &first[start as usize..end as usize])?;
        }
        end = end.min(start);
    }
    Ok(())
}

/// Where [`write_first_sector_last`] cuts the first `len` bytes for a flash whose write unit is
/// `ws`: `[c0, len)`, then `[c1, c0)`, then `[0, c1)`, with `c0` = [`DATA_HEADER_LAST_LEN`] and
/// `c1` = [`DATA_TAG_LAST_LEN`] each rounded up to a whole word. At `ws` 1: 8 and 2 (the tag's
/// two bytes last); at 4: 8 and 4 (the word holding the tag and the count last); from 8 on the
/// header is the first word, written last in one piece. Each cut is also capped at `len`.
pub fn header_last_cuts(ws: u32, len: u32) -> [u32; 3] {
    [
        round_up(DATA_HEADER_LAST_LEN as u32, ws).min(len),
        round_up(DATA_TAG_LAST_LEN as u32, ws).min(len),
        0,
    ]
}

/// Sequential writer into a region: erases each 4 KiB sector just before the first write into
/// it (never the whole region), and refuses to leave the region
/// ([`FlashErrorKind::OutsideRegion`], nothing written: an engine that wants to name the
/// partition checks the size itself first).
///
/// Flash granularity ([`crate::flash`]): it programs whole `WRITE_SIZE` words only, each once.
/// The bytes of a partial last word wait in RAM until the word is full, or until
/// [`SequentialWriter::flush`] programs them padded with 0xFF (after which no byte may follow).
/// [`SequentialWriter::written`] counts the bytes taken, [`SequentialWriter::flushed`] the bytes
/// on flash.
#[derive(Clone, Copy, Debug)]
pub struct SequentialWriter {
    region: Region,
    written: u32,
    erased_to: u32,
    /// The bytes `[written - pending_len, written)`, not yet programmed.
    pending: Aligned<MAX_WORD>,
    pending_len: u16,
    /// A padded partial word was programmed: nothing may be appended.
    sealed: bool,
}

impl SequentialWriter {
    /// A writer at the start of `region`.
    pub fn new(region: Region) -> Self {
        Self::at(region, 0)
    }

    /// Bytes taken so far (some may still wait in RAM for their word to fill).
    pub fn written(&self) -> u32 {
        self.written
    }

    /// Bytes programmed so far (whole words, or everything after [`SequentialWriter::flush`]).
    pub fn flushed(&self) -> u32 {
        self.written - self.pending_len as u32
    }

    /// The bytes of the partial last word not yet programmed.
    pub fn pending(&self) -> &[u8] {
        &self.pending[..self.pending_len as usize]
    }

    pub fn region(&self) -> Region {
        self.region
    }

    /// A writer over `region` that goes on at `written`, a multiple of [`SECTOR_SIZE`] (resuming
    /// an interrupted update): the sectors from there on are erased as the writes reach them.
    pub fn at(region: Region, written: u32) -> Self {
        SequentialWriter {
            region,
            written,
            erased_to: written,
            pending: Aligned::filled(0xFF),
            pending_len: 0,
            sealed: false,
        }
    }

    /// The same writer over a region that starts at the same offset but is `size` bytes long.
    pub(crate) fn with_size(mut self, size: u32) -> Self {
        self.region = Region::new(self.region.offset, size);
        self
    }

    /// Append `data`, erasing the sectors it reaches first.
    pub fn write<F: NorFlash>(&mut self, flash: &mut F, data: &[u8]) -> Result<(), FlashError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = self.written as u64 + data.len() as u64;
        let refuse = |kind| FlashError {
            op: FlashOp::Write,
            offset: self.region.offset.wrapping_add(self.written),
            len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            kind,
        };
        if end > self.region.size as u64 {
            return Err(refuse(FlashErrorKind::OutsideRegion {
                start: self.region.offset,
                size: self.region.size,
            }));
        }
        if self.sealed {
            return Err(refuse(FlashErrorKind::AfterFlush));
        }
        let end = end as u32;
        while self.erased_to < end {
            self.region.erase(flash, self.erased_to, SECTOR_SIZE)?;
            self.erased_to += SECTOR_SIZE;
        }
        let ws = write_size::<F>() as usize;
        let mut data = data;
        let have = self.pending_len as usize;
        if have > 0 {
            // Complete the partial word first.
            let take = (ws - have).min(data.len());
            self.pending[have..have + take].copy_from_slice(&data[..take]);
            self.pending_len += take as u16;
            data = &data[take..];
            if self.pending_len as usize == ws {
                let at = self.written - have as u32;
                self.region.write(flash, at, &self.pending[..ws])?;
                self.pending_len = 0;
            }
        }
        if self.pending_len == 0 {
            let full = data.len() - data.len() % ws;
            if full > 0 {
                self.region
                    .write(flash, end - data.len() as u32, &data[..full])?;
            }
            let rest = &data[full..];
            self.pending[..rest.len()].copy_from_slice(rest);
            self.pending_len = rest.len() as u16;
        }
        self.written = end;
        Ok(())
    }

    /// Program the partial last word, padded with 0xFF (nothing can be appended after).
    pub fn flush<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), FlashError> {
        if self.pending_len > 0 {
            let at = self.flushed();
            let n = self.pending_len as usize;
            self.region.write(flash, at, &self.pending[..n])?;
            self.pending_len = 0;
            self.sealed = true;
        }
        Ok(())
    }

    /// Flush, then erase what is left of the region after the written bytes, skipping sectors
    /// that are already blank, so the region ends as it would after a whole-partition erase +
    /// write.
    pub fn clear_rest<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), FlashError> {
        self.flush(flash)?;
        let mut buf = Aligned::<256>::filled(0);
        let mut sector = self.erased_to;
        while sector < self.region.size {
            let mut blank = true;
            let mut off = 0;
            while off < SECTOR_SIZE && blank {
                self.region.read(flash, sector + off, &mut buf.0)?;
                blank = buf.iter().all(|&b| b == 0xFF);
                off += buf.len() as u32;
            }
            if !blank {
                self.region.erase(flash, sector, SECTOR_SIZE)?;
            }
            sector += SECTOR_SIZE;
        }
        self.erased_to = self.region.size;
        Ok(())
    }
}
