//! The data partition update engine: the rest of the partition first, its first bytes (a tone
//! bin's header, tag last) in the very last writes.

use super::UpdateError;
use crate::flash::{write_first_sector_last, Aligned, Region, SequentialWriter, SECTOR_SIZE};
use crate::guard::FlashMap;
use crate::partition::{Label, Partition};
use crate::Error;
use embedded_storage::nor_flash::NorFlash;

/// The data-partition engine: a partition found by label, a size check before any erase,
/// erase-ahead sequential writes, and a clean tail.
///
/// Power-loss rule: the first sector is erased by the first write, buffered (at most 4 KiB, a
/// fixed array: no allocation) and programmed only after everything else, from its end towards
/// its start with the word holding the header's tag last of all
/// ([`crate::flash::DATA_TAG_LAST_LEN`]). So a
/// rewrite that is cut at any byte leaves a partition whose header tag is erased or torn, and
/// the next run sees it as invalid and rewrites it, instead of taking a half-new partition for
/// a valid one.
///
/// Call order cannot go wrong: [`DataUpdate::begin`] makes the engine and
/// [`DataUpdate::finish`] consumes it, so a second `finish` or a `write` after it does not
/// compile:
///
/// ```compile_fail,E0382
/// # use ota_core::update::DataUpdate;
/// # use ota_core::mem_flash::MemFlash;
/// fn twice(up: DataUpdate, flash: &mut MemFlash<'_, 4, 4>) {
///     let _ = up.finish(flash);
///     let _ = up.finish(flash); // use of moved value
/// }
/// ```
pub struct DataUpdate {
    part: Partition,
    /// Sectors 1.. of the partition, erase-ahead.
    rest: SequentialWriter,
    first: Aligned<{ SECTOR_SIZE as usize }>,
    first_len: usize,
    /// Sector 0 has been erased.
    started: bool,
}

impl DataUpdate {
    /// The engine for the data partition `label` of `map.table`. Refused before any erase when
    /// the partition overlaps the bootloader region, the partition table or another partition
    /// (otadata, the running app...) or lies beyond the flash ([`crate::guard`]).
    pub fn begin(
        map: &FlashMap<'_>,
        label: &str,
        expected_size: Option<u64>,
    ) -> Result<DataUpdate, Error> {
        let part = *map
            .table
            .find_data(label)
            .ok_or(UpdateError::PartitionNotFound {
                label: Label::new(label),
            })?;
        Self::for_partition(map, &part, expected_size)
    }

    /// The engine for a partition already found (e.g. a staging partition), with the same
    /// checks as [`DataUpdate::begin`].
    pub fn for_partition(
        map: &FlashMap<'_>,
        part: &Partition,
        expected_size: Option<u64>,
    ) -> Result<DataUpdate, Error> {
        let part = *part;
        map.check_partition(crate::guard::AreaKind::DataPartition, &part)?;
        if let Some(size) = expected_size {
            if size > part.size as u64 {
                return Err(UpdateError::TooLarge {
                    label: part.label,
                    size,
                    capacity: part.size,
                }
                .into());
            }
        }
        let rest_region = Region::new(
            part.offset.saturating_add(SECTOR_SIZE),
            part.size.saturating_sub(SECTOR_SIZE),
        );
        Ok(DataUpdate {
            part,
            rest: SequentialWriter::new(rest_region),
            first: Aligned::filled(0xFF),
            first_len: 0,
            started: false,
        })
    }

    pub fn partition(&self) -> &Partition {
        &self.part
    }

    /// Bytes taken so far (the first sector's are buffered until [`DataUpdate::finish`]).
    pub fn written(&self) -> u32 {
        self.first_len as u32 + self.rest.written()
    }

    fn start<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), Error> {
        if !self.started {
            self.part
                .region()
                .erase(flash, 0, SECTOR_SIZE.min(self.part.size))?;
            self.started = true;
        }
        Ok(())
    }

    pub fn write<F: NorFlash>(&mut self, flash: &mut F, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let end = self.written() as u64 + data.len() as u64;
        if end > self.part.size as u64 {
            return Err(UpdateError::TooLarge {
                label: self.part.label,
                size: end,
                capacity: self.part.size,
            }
            .into());
        }
        self.start(flash)?;
        let room = self.first.len() - self.first_len;
        let n = room.min(data.len());
        self.first[self.first_len..self.first_len + n].copy_from_slice(&data[..n]);
        self.first_len += n;
        Ok(self.rest.write(flash, &data[n..])?)
    }

    /// Finish: erase the stale rest of the partition (only sectors that are not blank), then
    /// program the buffered first sector, its header last.
    pub fn finish<F: NorFlash>(mut self, flash: &mut F) -> Result<u32, Error> {
        self.start(flash)?;
        self.rest.clear_rest(flash)?;
        write_first_sector_last(flash, &self.part.region(), &self.first[..self.first_len])?;
        Ok(self.written())
    }
}
