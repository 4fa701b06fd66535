//! Test helpers shared by the unit tests: a RAM NOR flash with strict rules and counters, and
//! the ESP-ADF example's partition table.
#![cfg(test)]

extern crate std;

use std::vec;
use std::vec::Vec;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use crate::partition::{Label, Partition, PartitionTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamError(pub NorFlashErrorKind);

impl NorFlashError for RamError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

/// NOR flash in RAM: erase sets 0xFF per 4 KiB sector, writes may only clear bits (a 0 bit
/// programmed back to 1 is an error). Reads must be `RS`-aligned and writes `WS`-aligned in
/// offset and length, or they fail with `NotAligned` as esp-storage's do; the default is
/// esp-storage's 4 and 4 (`esp-storage/src/nor_flash.rs`). It also counts what esp-storage
/// tolerates but a strict NOR flash would not: a word programmed twice between erases, and
/// buffers that are not 4-byte aligned in memory (esp-storage bounces those).
pub struct RamFlash<const RS: usize = 4, const WS: usize = 4> {
    pub data: Vec<u8>,
    /// Per `WS` word: programmed since its sector was last erased.
    pub programmed: Vec<bool>,
    /// Writes that programmed a word already programmed since its erase.
    pub reprogrammed_words: usize,
    /// Reads and writes handed a buffer that is not 4-byte aligned in memory.
    pub unaligned_buffers: usize,
    /// Every write that reached the flash: (offset, length).
    pub writes: Vec<(u32, u32)>,
    /// Writes that touch `[start, end)` fail with `Other` and change nothing (a fault).
    pub fail_writes_in: Option<(u32, u32)>,
    /// Erases per 4 KiB sector.
    pub erases: Vec<u32>,
    pub bytes_written: u64,
    pub erase_ops: usize,
    pub write_ops: usize,
}

impl<const RS: usize, const WS: usize> RamFlash<RS, WS> {
    pub fn new(size: usize) -> Self {
        RamFlash {
            data: vec![0xFF; size],
            programmed: vec![false; size.div_ceil(WS)],
            reprogrammed_words: 0,
            unaligned_buffers: 0,
            writes: Vec::new(),
            fail_writes_in: None,
            erases: vec![0; size.div_ceil(4096)],
            bytes_written: 0,
            erase_ops: 0,
            write_ops: 0,
        }
    }
    pub fn total_erases(&self) -> u32 {
        self.erases.iter().sum()
    }
    pub fn erases_in(&self, offset: u32, size: u32) -> u32 {
        self.erases[(offset / 4096) as usize..((offset + size) / 4096) as usize]
            .iter()
            .sum()
    }
    pub fn put(&mut self, offset: u32, bytes: &[u8]) {
        self.data[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    }
}

impl<const RS: usize, const WS: usize> ErrorType for RamFlash<RS, WS> {
    type Error = RamError;
}

impl<const RS: usize, const WS: usize> ReadNorFlash for RamFlash<RS, WS> {
    const READ_SIZE: usize = RS;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamError> {
        if !(offset as usize).is_multiple_of(RS) || !bytes.len().is_multiple_of(RS) {
            return Err(RamError(NorFlashErrorKind::NotAligned));
        }
        let end = offset as usize + bytes.len();
        if end > self.data.len() {
            return Err(RamError(NorFlashErrorKind::OutOfBounds));
        }
        if !(bytes.as_ptr() as usize).is_multiple_of(4) {
            self.unaligned_buffers += 1;
        }
        bytes.copy_from_slice(&self.data[offset as usize..end]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const RS: usize, const WS: usize> NorFlash for RamFlash<RS, WS> {
    const WRITE_SIZE: usize = WS;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), RamError> {
        if !from.is_multiple_of(4096) || !to.is_multiple_of(4096) || from > to {
            return Err(RamError(NorFlashErrorKind::NotAligned));
        }
        if to as usize > self.data.len() {
            return Err(RamError(NorFlashErrorKind::OutOfBounds));
        }
        for s in from / 4096..to / 4096 {
            self.erases[s as usize] += 1;
        }
        self.erase_ops += 1;
        self.data[from as usize..to as usize].fill(0xFF);
        self.programmed[from as usize / WS..to as usize / WS].fill(false);
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamError> {
        if !(offset as usize).is_multiple_of(WS) || !bytes.len().is_multiple_of(WS) {
            return Err(RamError(NorFlashErrorKind::NotAligned));
        }
        let end = offset as usize + bytes.len();
        if end > self.data.len() {
            return Err(RamError(NorFlashErrorKind::OutOfBounds));
        }
        if let Some((a, b)) = self.fail_writes_in {
            if (offset as usize) < b as usize && end > a as usize {
                return Err(RamError(NorFlashErrorKind::Other));
            }
        }
        if !(bytes.as_ptr() as usize).is_multiple_of(4) {
            self.unaligned_buffers += 1;
        }
        self.writes.push((offset, bytes.len() as u32));
        for w in offset as usize / WS..end / WS {
            if self.programmed[w] {
                self.reprogrammed_words += 1;
            }
            self.programmed[w] = true;
        }
        for (d, &b) in self.data[offset as usize..end].iter_mut().zip(bytes) {
            if b & !*d != 0 {
                return Err(RamError(NorFlashErrorKind::Other));
            }
            *d &= b;
        }
        self.bytes_written += bytes.len() as u64;
        self.write_ops += 1;
        Ok(())
    }
}

fn part(label: &str, ptype: u8, subtype: u8, offset: u32, size: u32) -> Partition {
    Partition {
        ptype,
        subtype,
        offset,
        size,
        label: Label::new(label),
        flags: 0,
    }
}

/// ESP-ADF examples/ota with 1 MB slots (esp-adf `examples/ota/partitions.csv`, README log layout).
pub fn example_table() -> PartitionTable {
    let mut t = PartitionTable::new();
    for p in [
        part("nvs", 1, 0x02, 0x9000, 0x4000),
        part("otadata", 1, 0x00, 0xD000, 0x2000),
        part("phy_init", 1, 0x01, 0xF000, 0x1000),
        part("ota_0", 0, 0x10, 0x10000, 0x100000),
        part("ota_1", 0, 0x11, 0x110000, 0x100000),
        part("flash_tone", 1, 0xFF, 0x210000, 0x100000),
    ] {
        t.push(p).unwrap();
    }
    t
}

/// Build an app image into a Vec.
pub fn app_image(chip: crate::Chip, project: &str, version: &str, size: u32) -> Vec<u8> {
    let mut spec = crate::image::ImageSpec::new(chip, project, version);
    spec.total_size = Some(size);
    let mut out = Vec::new();
    crate::image::build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
    out
}
