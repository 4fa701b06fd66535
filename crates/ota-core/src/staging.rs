//! Staged data-partition updates: the image is written and verified in a spare ("staging")
//! partition first, then copied into its target sector by sector under a power-safe progress
//! record, so a power cut during the copy is finished by the next run instead of leaving a
//! half-written partition.
//!
//! The progress record lives in the LAST 4 KiB sector of the staging partition (the image uses
//! the sectors before it). Layout, little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x00 | 4 | magic [`RECORD_MAGIC`] (`"OTSG"`) |
//! | 0x04 | 4 | record version [`RECORD_VERSION`] |
//! | 0x08 | 4 | target partition offset (absolute) |
//! | 0x0C | 4 | target partition size |
//! | 0x10 | 4 | image length in bytes |
//! | 0x14 | 32 | SHA-256 of the image |
//! | 0x34 | 4 | CRC-32 (zlib) of bytes 0x00..0x34 |
//! | 0x40 | n+2 | one progress byte per copy step: 0xFF = not done, anything else = done |
//!
//! On a flash whose write unit `W` is larger than 1 ([`crate::flash`]), every progress mark
//! is one whole word (programmed `00 FF FF ..`; done when any of its bytes is not 0xFF) at
//! `round_up(0x40, W) + s·W`, so the record tracks [`max_steps`]`(W)` steps: 4030 at 1, 1008
//! at 4 (esp-storage), 252 at 16, 15 at 256. The header is padded to whole words with 0xFF.
//!
//! Steps, for an image of n sectors (n ≥ 1): step 0 erases target sector 0; steps 1..n-1 copy
//! sector j; step n erases the target's stale sectors beyond the image; step n+1 copies sector 0
//! backwards, the header's tag word last (as [`crate::update::DataUpdate`] writes it), after erasing
//! target sector 0 again if a torn earlier run left bytes there (no word is programmed twice).
//! A progress mark is programmed
//! (0xFF → 0x00, one byte, no erase) only after its step completed and read back equal, so even
//! a torn progress write means "done"; a step that is redone is idempotent. The header is
//! written once, after the staged image verified, in one write covered by its CRC: torn, it is
//! no record at all and the target has not been touched yet. The target's header stays erased
//! until the last step, so a reader never takes a half-copied partition for a valid one.

use core::fmt;

use crc::{Crc, CRC_32_ISO_HDLC};
use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};

use crate::bytes::le32;
use crate::flash::{header_last_cuts, Aligned, Region, SequentialWriter, SECTOR_SIZE};
use crate::guard::{AreaKind, FlashMap};
use crate::partition::{Label, Partition};
use crate::Error;

/// `"OTSG"` as a little-endian u32: marks a staging progress record.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"OTSG");
/// Version of the record layout in the module docs.
pub const RECORD_VERSION: u32 = 1;
/// Bytes of the record header covered by its CRC.
pub const RECORD_HEADER_LEN: usize = 0x34;
/// Offset of the CRC-32 of the header.
const OFF_CRC: usize = 0x34;
/// Offset of the first progress byte.
pub const PROGRESS_OFFSET: u32 = 0x40;
/// Most copy steps one record sector can track at write unit 1 (an image of up to 4030
/// sectors, ~15.7 MiB); see [`max_steps`].
pub const MAX_STEPS: u32 = SECTOR_SIZE - PROGRESS_OFFSET;

/// Where the progress marks start on a flash with write unit `ws`.
pub const fn progress_offset(ws: u32) -> u32 {
    crate::flash::round_up(PROGRESS_OFFSET, ws)
}

/// Most copy steps one record sector tracks with write unit `ws` (one word per mark).
pub const fn max_steps(ws: u32) -> u32 {
    (SECTOR_SIZE - progress_offset(ws)) / ws
}
/// Value of a progress byte whose step is not done (erased flash).
const NOT_DONE: u8 = 0xFF;
/// Progress byte programmed when a step is done.
const DONE: u8 = 0x00;
/// Chunk for streamed copies and hashes: constant stack memory.
const CHUNK: usize = 256;

/// zlib's CRC-32, as the tone bins use (adf-ota-service.md §8.2).
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Why a staged update cannot go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StagingError {
    /// The staging partition is too small: it needs the image plus one sector for the record.
    TooSmall {
        staging: Label,
        size: u64,
        capacity: u32,
    },
    /// The image has more sectors than one record sector can track.
    TooManySectors {
        staging: Label,
        sectors: u32,
        /// The most the record tracks on this flash ([`max_steps`] - 2).
        max_sectors: u32,
    },
    /// The image is larger than the target partition (checked before anything is erased).
    TargetTooSmall {
        target: Label,
        size: u64,
        capacity: u32,
    },
    /// Staging and target are the same partition or overlap.
    Overlap { staging: Label, target: Label },
    /// The staged image does not read back with the hash it was written with.
    StagedImageCorrupt { staging: Label },
    /// The record names another target than the one asked for: an unfinished copy into the
    /// partition at `target_offset` is pending.
    OtherTarget {
        staging: Label,
        target_offset: u32,
        target_size: u32,
    },
    /// After the copy the target does not hold the staged image.
    CopyMismatch { target: Label, offset: u32 },
}

impl core::error::Error for StagingError {}

impl fmt::Display for StagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StagingError::TooSmall {
                staging,
                size,
                capacity,
            } => write!(
                f,
                "image of {} bytes does not fit in staging partition {} ({} bytes usable: its last \
                 4096-byte sector holds the progress record)",
                size,
                staging.as_str(),
                capacity
            ),
            StagingError::TooManySectors {
                staging,
                sectors,
                max_sectors,
            } => write!(
                f,
                "image of {} sectors is too large for the progress record of staging partition {} \
                 (at most {} sectors)",
                sectors,
                staging.as_str(),
                max_sectors
            ),
            StagingError::TargetTooSmall {
                target,
                size,
                capacity,
            } => write!(
                f,
                "image of {} bytes does not fit in partition {} ({} bytes)",
                size,
                target.as_str(),
                capacity
            ),
            StagingError::Overlap { staging, target } => write!(
                f,
                "staging partition {} overlaps its target {}",
                staging.as_str(),
                target.as_str()
            ),
            StagingError::StagedImageCorrupt { staging } => write!(
                f,
                "the image staged in {} does not match its SHA-256 (flash corruption?)",
                staging.as_str()
            ),
            StagingError::OtherTarget {
                staging,
                target_offset,
                target_size,
            } => write!(
                f,
                "staging partition {} holds an unfinished copy into the partition at 0x{:x} \
                 ({} bytes); run that item to finish it first",
                staging.as_str(),
                target_offset,
                target_size
            ),
            StagingError::CopyMismatch { target, offset } => write!(
                f,
                "partition {} differs from the staged image at offset 0x{:x} after the copy",
                target.as_str(),
                offset
            ),
        }
    }
}

/// The fixed part of a progress record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagingRecord {
    pub target_offset: u32,
    pub target_size: u32,
    pub image_len: u32,
    pub sha256: [u8; 32],
}

impl StagingRecord {
    /// The 0x38 bytes written at the start of the record sector (header + CRC).
    pub fn to_bytes(&self) -> [u8; OFF_CRC + 4] {
        let mut b = [0u8; OFF_CRC + 4];
        b[0x00..0x04].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        b[0x04..0x08].copy_from_slice(&RECORD_VERSION.to_le_bytes());
        b[0x08..0x0C].copy_from_slice(&self.target_offset.to_le_bytes());
        b[0x0C..0x10].copy_from_slice(&self.target_size.to_le_bytes());
        b[0x10..0x14].copy_from_slice(&self.image_len.to_le_bytes());
        b[0x14..0x34].copy_from_slice(&self.sha256);
        let crc = CRC32.checksum(&b[..RECORD_HEADER_LEN]);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// A record from its header bytes, or None when the magic, version or CRC is wrong (an
    /// erased, torn or foreign sector).
    pub fn parse(b: &[u8; OFF_CRC + 4]) -> Option<StagingRecord> {
        if le32(b, 0) != RECORD_MAGIC || le32(b, 4) != RECORD_VERSION {
            return None;
        }
        if CRC32.checksum(&b[..RECORD_HEADER_LEN]) != le32(b, OFF_CRC) {
            return None;
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&b[0x14..0x34]);
        Some(StagingRecord {
            target_offset: le32(b, 0x08),
            target_size: le32(b, 0x0C),
            image_len: le32(b, 0x10),
            sha256,
        })
    }

    /// Sectors of the image (at least 1, so an empty image still erases sector 0).
    pub fn sectors(&self) -> u32 {
        self.image_len.div_ceil(SECTOR_SIZE).max(1)
    }

    /// Copy steps: erase sector 0, sectors 1..n-1, the stale rest, sector 0.
    pub fn steps(&self) -> u32 {
        self.sectors() + 2
    }

    pub fn targets(&self, part: &Partition) -> bool {
        self.target_offset == part.offset && self.target_size == part.size
    }
}

/// What the record sector of a staging partition says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// No valid record (erased, torn, or never used): nothing to resume.
    None,
    /// A copy was started and stopped before step `next_step` of `record.steps()`.
    InProgress {
        record: StagingRecord,
        next_step: u32,
    },
    /// The last copy finished.
    Complete { record: StagingRecord },
}

/// The record sector: the last sector of the staging partition.
fn record_region(staging: &Partition) -> Region {
    Region::new(
        staging.offset + staging.size.saturating_sub(SECTOR_SIZE),
        SECTOR_SIZE,
    )
}

/// Bytes of the staging partition the image may use.
fn image_capacity(staging: &Partition) -> u32 {
    staging.size.saturating_sub(SECTOR_SIZE)
}

/// Read the progress record of `staging`.
pub fn read_record<F: NorFlash>(flash: &mut F, staging: &Partition) -> Result<RecordState, Error> {
    if staging.size < 2 * SECTOR_SIZE {
        return Ok(RecordState::None);
    }
    let region = record_region(staging);
    let mut h = [0u8; OFF_CRC + 4];
    region.read(flash, 0, &mut h)?;
    let Some(record) = StagingRecord::parse(&h) else {
        return Ok(RecordState::None);
    };
    let steps = record.steps();
    let ws = crate::flash::write_size::<F>();
    if steps > max_steps(ws) {
        return Ok(RecordState::None);
    }
    let mut buf = Aligned::<CHUNK>::filled(0);
    // Marks per chunk: CHUNK is a multiple of every supported write unit.
    let per = CHUNK as u32 / ws;
    let mut step = 0u32;
    while step < steps {
        let n = (steps - step).min(per);
        let chunk = &mut buf[..(n * ws) as usize];
        region.read(flash, progress_offset(ws) + step * ws, chunk)?;
        if let Some(i) = chunk
            .chunks_exact(ws as usize)
            .position(|m| m.iter().all(|&b| b == NOT_DONE))
        {
            return Ok(RecordState::InProgress {
                record,
                next_step: step + i as u32,
            });
        }
        step += n;
    }
    Ok(RecordState::Complete { record })
}

fn check_pair(staging: &Partition, target: &Partition) -> Result<(), StagingError> {
    let s = staging.offset as u64..staging.offset as u64 + staging.size as u64;
    let t = target.offset as u64..target.offset as u64 + target.size as u64;
    if s.start < t.end && t.start < s.end {
        return Err(StagingError::Overlap {
            staging: staging.label,
            target: target.label,
        });
    }
    Ok(())
}

/// Whether the sector at `rel` of `region` is all 0xFF.
fn sector_blank<F: NorFlash>(flash: &mut F, region: &Region, rel: u32) -> Result<bool, Error> {
    let mut buf = Aligned::<CHUNK>::filled(0);
    let mut off = 0u32;
    while off < SECTOR_SIZE {
        region.read(flash, rel + off, &mut buf.0)?;
        if buf.iter().any(|&b| b != NOT_DONE) {
            return Ok(false);
        }
        off += CHUNK as u32;
    }
    Ok(true)
}

/// SHA-256 of `len` bytes of `region` from offset 0, streamed in small chunks.
fn hash_region<F: NorFlash>(flash: &mut F, region: Region, len: u32) -> Result<[u8; 32], Error> {
    let mut h = Sha256::new();
    let mut buf = Aligned::<CHUNK>::filled(0);
    let mut pos = 0u32;
    while pos < len {
        let n = ((len - pos) as usize).min(CHUNK);
        region.read(flash, pos, &mut buf[..n])?;
        h.update(&buf[..n]);
        pos += n as u32;
    }
    Ok(h.finalize().into())
}

/// Phase 1: stream the image into the staging partition.
pub struct StagedWrite {
    staging: Partition,
    target: Partition,
    writer: SequentialWriter,
    hasher: Sha256,
}

impl StagedWrite {
    /// Check the sizes, then erase the record sector (an older record must never describe the
    /// bytes about to be overwritten). `expected_size`: the image size if known.
    pub fn begin<F: NorFlash>(
        flash: &mut F,
        map: &FlashMap<'_>,
        staging: &Partition,
        target: &Partition,
        expected_size: Option<u64>,
    ) -> Result<StagedWrite, Error> {
        Self::check(map, staging, target, expected_size)?;
        record_region(staging).erase(flash, 0, SECTOR_SIZE)?;
        Ok(StagedWrite {
            staging: *staging,
            target: *target,
            writer: SequentialWriter::new(Region::new(
                staging.offset,
                image_capacity(staging).min(target.size),
            )),
            hasher: Sha256::new(),
        })
    }

    /// The checks of [`StagedWrite::begin`], without touching flash: the partitions do not
    /// overlap each other nor anything `map` protects ([`crate::guard`]: bootloader, table,
    /// otadata, the running app, other partitions), the staging partition has a record sector,
    /// and the image (if its size is known) fits both.
    pub fn check(
        map: &FlashMap<'_>,
        staging: &Partition,
        target: &Partition,
        expected_size: Option<u64>,
    ) -> Result<(), Error> {
        check_pair(staging, target)?;
        map.check_data_update(target, Some(staging))?;
        let capacity = image_capacity(staging).min(target.size);
        if let Some(size) = expected_size {
            if size > target.size as u64 {
                return Err(StagingError::TargetTooSmall {
                    target: target.label,
                    size,
                    capacity: target.size,
                }
                .into());
            }
            if size > capacity as u64 {
                return Err(StagingError::TooSmall {
                    staging: staging.label,
                    size,
                    capacity: image_capacity(staging),
                }
                .into());
            }
        }
        if staging.size < 2 * SECTOR_SIZE {
            return Err(StagingError::TooSmall {
                staging: staging.label,
                size: expected_size.unwrap_or(0),
                capacity: 0,
            }
            .into());
        }
        Ok(())
    }

    pub fn written(&self) -> u32 {
        self.writer.written()
    }

    pub fn staging(&self) -> &Partition {
        &self.staging
    }

    pub fn write<F: NorFlash>(&mut self, flash: &mut F, data: &[u8]) -> Result<(), Error> {
        let size = self.writer.written() as u64 + data.len() as u64;
        let capacity = self.writer.region().size;
        if size > capacity as u64 {
            // The region is the staging partition's image part, capped at the target's size.
            return Err(if size > self.target.size as u64 {
                StagingError::TargetTooSmall {
                    target: self.target.label,
                    size,
                    capacity: self.target.size,
                }
            } else {
                StagingError::TooSmall {
                    staging: self.staging.label,
                    size,
                    capacity,
                }
            }
            .into());
        }
        self.writer.write(flash, data)?;
        self.hasher.update(data);
        Ok(())
    }

    /// Program the partial last word of the staged image (padded with 0xFF), so the whole image
    /// can be read back from the staging partition, e.g. to check its format before
    /// [`StagedWrite::commit`]. Nothing can be written after it.
    pub fn flush<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), Error> {
        Ok(self.writer.flush(flash)?)
    }

    /// Verify the staged image by reading it back, then write the progress record (the commit
    /// point: from here on the copy finishes, now or at the next run).
    pub fn commit<F: NorFlash>(mut self, flash: &mut F) -> Result<StagedCopy, Error> {
        self.writer.flush(flash)?;
        let len = self.writer.written();
        let sha256: [u8; 32] = self.hasher.finalize().into();
        if hash_region(flash, self.writer.region(), len)? != sha256 {
            return Err(StagingError::StagedImageCorrupt {
                staging: self.staging.label,
            }
            .into());
        }
        let record = StagingRecord {
            target_offset: self.target.offset,
            target_size: self.target.size,
            image_len: len,
            sha256,
        };
        let max = max_steps(crate::flash::write_size::<F>());
        if record.steps() > max {
            return Err(StagingError::TooManySectors {
                staging: self.staging.label,
                sectors: record.sectors(),
                max_sectors: max - 2,
            }
            .into());
        }
        record_region(&self.staging).write(flash, 0, &record.to_bytes())?;
        Ok(StagedCopy {
            staging: self.staging,
            target: self.target,
            record,
            next_step: 0,
        })
    }
}

/// Phase 2: the copy from staging into the target, step by step, with progress marks.
#[derive(Clone, Copy, Debug)]
pub struct StagedCopy {
    staging: Partition,
    target: Partition,
    record: StagingRecord,
    next_step: u32,
}

impl StagedCopy {
    /// The unfinished copy recorded in `staging` for `target`, if any. The staged image is
    /// checked against the record's SHA-256 before anything is resumed. A complete or absent
    /// record gives `None`; a record for another target is an error (nothing is written).
    pub fn resume<F: NorFlash>(
        flash: &mut F,
        map: &FlashMap<'_>,
        staging: &Partition,
        target: &Partition,
    ) -> Result<Option<StagedCopy>, Error> {
        check_pair(staging, target)?;
        map.check_data_update(target, Some(staging))?;
        let RecordState::InProgress { record, next_step } = read_record(flash, staging)? else {
            return Ok(None);
        };
        if !record.targets(target) {
            return Err(StagingError::OtherTarget {
                staging: staging.label,
                target_offset: record.target_offset,
                target_size: record.target_size,
            }
            .into());
        }
        if record.image_len > image_capacity(staging).min(target.size)
            || hash_region(flash, staging.region(), record.image_len)? != record.sha256
        {
            return Err(StagingError::StagedImageCorrupt {
                staging: staging.label,
            }
            .into());
        }
        Ok(Some(StagedCopy {
            staging: *staging,
            target: *target,
            record,
            next_step,
        }))
    }

    /// Forget an unfinished copy (erase the record sector), e.g. after [`StagedCopy::resume`]
    /// found the staged image corrupt. The target keeps an erased header, so it reads invalid.
    pub fn discard<F: NorFlash>(
        flash: &mut F,
        map: &FlashMap<'_>,
        staging: &Partition,
    ) -> Result<(), Error> {
        map.check_partition(AreaKind::StagingPartition, staging)?;
        record_region(staging).erase(flash, 0, SECTOR_SIZE)?;
        Ok(())
    }

    pub fn record(&self) -> &StagingRecord {
        &self.record
    }

    /// The next step to run, out of [`StagingRecord::steps`].
    pub fn next_step(&self) -> u32 {
        self.next_step
    }

    /// Copy `len` bytes at `rel` from staging to target (both partition-relative), then compare.
    fn copy_range<F: NorFlash>(&self, flash: &mut F, rel: u32, len: u32) -> Result<(), Error> {
        let (s, t) = (self.staging.region(), self.target.region());
        let mut buf = Aligned::<CHUNK>::filled(0);
        let mut back = Aligned::<CHUNK>::filled(0);
        let mut pos = 0u32;
        while pos < len {
            let n = ((len - pos) as usize).min(CHUNK);
            s.read(flash, rel + pos, &mut buf[..n])?;
            t.write(flash, rel + pos, &buf[..n])?;
            t.read(flash, rel + pos, &mut back[..n])?;
            if back[..n] != buf[..n] {
                return Err(StagingError::CopyMismatch {
                    target: self.target.label,
                    offset: rel + pos,
                }
                .into());
            }
            pos += n as u32;
        }
        Ok(())
    }

    /// Bytes of the image in sector `j`.
    fn sector_len(&self, j: u32) -> u32 {
        let start = j * SECTOR_SIZE;
        self.record.image_len.saturating_sub(start).min(SECTOR_SIZE)
    }

    /// Run the next step and mark it done. Returns whether steps remain.
    pub fn step<F: NorFlash>(&mut self, flash: &mut F) -> Result<bool, Error> {
        let steps = self.record.steps();
        let n = self.record.sectors();
        let s = self.next_step;
        if s >= steps {
            return Ok(false);
        }
        let t = self.target.region();
        if s == 0 {
            t.erase(flash, 0, SECTOR_SIZE)?;
        } else if s < n {
            t.erase(flash, s * SECTOR_SIZE, SECTOR_SIZE)?;
            self.copy_range(flash, s * SECTOR_SIZE, self.sector_len(s))?;
        } else if s == n {
            // The stale rest, as a whole-partition erase would leave it.
            let mut rest = SequentialWriter::new(Region::new(
                self.target.offset + n * SECTOR_SIZE,
                self.target.size.saturating_sub(n * SECTOR_SIZE),
            ));
            rest.clear_rest(flash)?;
        } else {
            // Sector 0 was erased by step 0; if this step is redone after a cut, it may hold
            // some of the same bytes: erase it again rather than program a word twice.
            if !sector_blank(flash, &t, 0)? {
                t.erase(flash, 0, SECTOR_SIZE)?;
            }
            // Backwards, tag last, exactly as `DataUpdate` writes it.
            let len0 = self.sector_len(0);
            let mut end = len0;
            for start in header_last_cuts(crate::flash::write_size::<F>(), len0) {
                if end > start {
                    self.copy_range(flash, start, end - start)?;
                }
                end = end.min(start);
            }
        }
        let ws = crate::flash::write_size::<F>();
        record_region(&self.staging).write(flash, progress_offset(ws) + s * ws, &[DONE])?;
        self.next_step = s + 1;
        Ok(self.next_step < steps)
    }

    /// Run the remaining steps, then check the target against the record's SHA-256.
    pub fn run<F: NorFlash>(mut self, flash: &mut F) -> Result<StagingRecord, Error> {
        while self.step(flash)? {}
        if hash_region(flash, self.target.region(), self.record.image_len)? != self.record.sha256 {
            return Err(StagingError::CopyMismatch {
                target: self.target.label,
                offset: 0,
            }
            .into());
        }
        Ok(self.record)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::testutil::{example_table, RamFlash};
    use std::string::ToString;

    use crate::Chip;

    /// The example table's map (nothing running: ota_1 may serve as the spare partition).
    fn map() -> FlashMap<'static> {
        static TABLE: std::sync::OnceLock<crate::partition::PartitionTable> =
            std::sync::OnceLock::new();
        FlashMap::new(TABLE.get_or_init(example_table), Chip::Esp32, None)
    }

    fn parts() -> (Partition, Partition) {
        let t = example_table();
        let target = *t.find_data("flash_tone").unwrap();
        // ota_1 (1 MB) serves as the spare partition in these tests.
        let staging = *t.ota(1).unwrap();
        (staging, target)
    }

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn stage<const RS: usize>(f: &mut RamFlash<RS>, img: &[u8]) -> StagedCopy {
        let (staging, target) = parts();
        let mut w =
            StagedWrite::begin(f, &map(), &staging, &target, Some(img.len() as u64)).unwrap();
        for c in img.chunks(1000) {
            w.write(f, c).unwrap();
        }
        w.commit(f).unwrap()
    }

    #[test]
    fn staged_copy_writes_the_target_byte_for_byte_and_clears_the_tail() {
        let mut f = RamFlash::<1>::new(4 << 20);
        let (staging, target) = parts();
        f.put(target.offset + 0x50000, &[0u8; 10]); // stale bytes
        let img = image(10_000);
        let copy = stage(&mut f, &img);
        assert_eq!(copy.record().steps(), 3 + 2);
        let rec = copy.run(&mut f).unwrap();
        let t = target.offset as usize;
        assert_eq!(&f.data[t..t + img.len()], &img[..]);
        assert!(f.data[t + img.len()..t + target.size as usize]
            .iter()
            .all(|&b| b == 0xFF));
        assert_eq!(
            read_record(&mut f, &staging).unwrap(),
            RecordState::Complete { record: rec }
        );
    }

    #[test]
    fn a_copy_stopped_at_any_step_resumes_to_the_same_result() {
        let img = image(9_000);
        for stop in 0..5u32 {
            let mut f = RamFlash::<1>::new(4 << 20);
            let (staging, target) = parts();
            let mut copy = stage(&mut f, &img);
            for _ in 0..stop {
                copy.step(&mut f).unwrap();
            }
            // Until the last step, the target's header is erased.
            let t = target.offset as usize;
            if stop < 4 {
                assert_eq!(&f.data[t..t + 8], &[0xFF; 8], "stop {stop}");
            }
            let resumed = StagedCopy::resume(&mut f, &map(), &staging, &target)
                .unwrap()
                .expect("in progress");
            assert_eq!(resumed.next_step(), stop);
            resumed.run(&mut f).unwrap();
            assert_eq!(&f.data[t..t + img.len()], &img[..], "stop {stop}");
            assert!(StagedCopy::resume(&mut f, &map(), &staging, &target)
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn a_torn_or_missing_record_is_no_record() {
        let mut f = RamFlash::<1>::new(4 << 20);
        let (staging, target) = parts();
        assert_eq!(read_record(&mut f, &staging).unwrap(), RecordState::None);
        let copy = stage(&mut f, &image(5000));
        let rec_at = (staging.offset + staging.size - SECTOR_SIZE) as usize;
        let header = f.data[rec_at..rec_at + 0x38].to_vec();
        for k in 0..0x38 {
            // A header written only up to byte k: the CRC or magic fails.
            f.data[rec_at..rec_at + 0x38].fill(0xFF);
            f.data[rec_at..rec_at + k].copy_from_slice(&header[..k]);
            assert_eq!(
                read_record(&mut f, &staging).unwrap(),
                RecordState::None,
                "k {k}"
            );
        }
        f.data[rec_at..rec_at + 0x38].copy_from_slice(&header);
        assert!(matches!(
            read_record(&mut f, &staging).unwrap(),
            RecordState::InProgress { next_step: 0, .. }
        ));
        let _ = (copy, target);
    }

    #[test]
    fn resume_refuses_a_corrupt_stage_and_another_target() {
        let mut f = RamFlash::<1>::new(4 << 20);
        let (staging, target) = parts();
        let _copy = stage(&mut f, &image(5000));
        let t = example_table();
        let other = *t.find_data("nvs").unwrap();
        assert!(matches!(
            StagedCopy::resume(&mut f, &map(), &staging, &other),
            Err(Error::Update(crate::update::UpdateError::Staging(
                StagingError::OtherTarget { .. }
            )))
        ));
        f.data[staging.offset as usize + 100] ^= 0xFF;
        assert!(matches!(
            StagedCopy::resume(&mut f, &map(), &staging, &target),
            Err(Error::Update(crate::update::UpdateError::Staging(
                StagingError::StagedImageCorrupt { .. }
            )))
        ));
        StagedCopy::discard(&mut f, &map(), &staging).unwrap();
        assert!(StagedCopy::resume(&mut f, &map(), &staging, &target)
            .unwrap()
            .is_none());
    }

    #[test]
    fn sizes_are_checked_before_anything_is_erased() {
        let mut f = RamFlash::<1>::new(4 << 20);
        let (staging, target) = parts();
        let before = f.total_erases();
        // 1 MB target, 1 MB staging: at most 1 MB - 4 KiB can be staged.
        assert!(matches!(
            StagedWrite::begin(&mut f, &map(), &staging, &target, Some(0x100000)),
            Err(Error::Update(crate::update::UpdateError::Staging(
                StagingError::TooSmall { .. }
            )))
        ));
        assert!(matches!(
            StagedWrite::begin(&mut f, &map(), &target, &target, Some(10)),
            Err(Error::Update(crate::update::UpdateError::Staging(
                StagingError::Overlap { .. }
            )))
        ));
        assert_eq!(f.total_erases(), before);
    }

    #[test]
    fn the_record_and_the_copy_read_through_a_driver_that_needs_aligned_reads() {
        // esp-storage reads 4-byte words; progress bytes and the tag-last copy are unaligned.
        let mut f = RamFlash::<4>::new(4 << 20);
        let (staging, target) = parts();
        let img = image(9_001);
        let mut copy = stage(&mut f, &img);
        for _ in 0..3 {
            copy.step(&mut f).unwrap();
        }
        let resumed = StagedCopy::resume(&mut f, &map(), &staging, &target)
            .unwrap()
            .expect("in progress");
        assert_eq!(resumed.next_step(), 3);
        resumed.run(&mut f).unwrap();
        let t = target.offset as usize;
        assert_eq!(&f.data[t..t + img.len()], &img[..]);
    }

    #[test]
    fn staging_over_otadata_or_the_running_app_is_refused_before_any_erase() {
        let mut f = RamFlash::<1>::new(4 << 20);
        let t = example_table();
        let target = *t.find_data("flash_tone").unwrap();
        let mut staging = target;
        staging.label = crate::partition::Label::new("spare");
        staging.offset = 0xE000;
        staging.size = 0x4000;
        let running = *t.ota(0).unwrap();
        let m = FlashMap::new(&t, Chip::Esp32, Some(&running));
        let e = StagedWrite::begin(&mut f, &m, &staging, &target, Some(10))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("staging partition spare at 0xe000..0x12000 (16384 bytes) overlaps otadata partition otadata"),
            "{e}"
        );
        let e = StagedCopy::resume(&mut f, &m, &staging, &target).unwrap_err();
        assert!(
            matches!(e, Error::Update(crate::update::UpdateError::Guard(_))),
            "{e:?}"
        );
        staging.offset = 0x100000;
        staging.size = 0x20000;
        let e = StagedWrite::begin(&mut f, &m, &staging, &target, Some(10))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("overlaps the running app ota_0"),
            "{e}"
        );
        assert_eq!(f.total_erases(), 0);
        assert!(f.data.iter().all(|&b| b == 0xFF));
    }
}
