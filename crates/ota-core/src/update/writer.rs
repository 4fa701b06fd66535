//! The sequential writer the engines share: erase ahead sector by sector, whole write words
//! only, never outside its region.

use super::UpdateError;
use crate::flash::{self, Aligned, Region, MAX_WORD, SECTOR_SIZE};
use crate::partition::{Label, Partition};
use crate::Error;
use embedded_storage::nor_flash::NorFlash;

/// Sequential writer into a region: erases each 4 KiB sector just before the first write into
/// it (never the whole region), and refuses to leave the region.
///
/// Flash granularity ([`crate::flash`]): it programs whole `WRITE_SIZE` words only, each once.
/// The bytes of a partial last word wait in RAM until the word is full, or until
/// [`SequentialWriter::flush`] programs them padded with 0xFF (after which no byte may follow).
/// [`SequentialWriter::written`] counts the bytes taken, [`SequentialWriter::flushed`] the bytes
/// on flash.
#[derive(Clone, Copy, Debug)]
pub struct SequentialWriter {
    region: Region,
    label: Label,
    written: u32,
    erased_to: u32,
    /// The bytes `[written - pending_len, written)`, not yet programmed.
    pending: Aligned<MAX_WORD>,
    pending_len: u16,
    /// A padded partial word was programmed: nothing may be appended.
    sealed: bool,
}

impl SequentialWriter {
    pub fn new(part: &Partition) -> Self {
        Self::for_region(part.region(), part.label)
    }

    /// A writer over any region; `label` names it in errors.
    pub fn for_region(region: Region, label: Label) -> Self {
        Self::at(region, label, 0)
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
    pub fn at(region: Region, label: Label, written: u32) -> Self {
        SequentialWriter {
            region,
            label,
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
    pub fn write<F: NorFlash>(&mut self, flash: &mut F, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let end = self.written as u64 + data.len() as u64;
        if end > self.region.size as u64 {
            return Err(UpdateError::TooLarge {
                label: self.label,
                size: end,
                capacity: self.region.size,
            }
            .into());
        }
        if self.sealed {
            return Err(UpdateError::WrongState {
                expected: "no write after the last word was flushed",
            }
            .into());
        }
        let end = end as u32;
        while self.erased_to < end {
            self.region.erase(flash, self.erased_to, SECTOR_SIZE)?;
            self.erased_to += SECTOR_SIZE;
        }
        let ws = flash::write_size::<F>() as usize;
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
    pub fn flush<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), Error> {
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
    pub fn clear_rest<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), Error> {
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
