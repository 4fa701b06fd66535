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
/// programmed back to 1 is an error). Reads must be `RS`-aligned (esp-storage needs 4).
pub struct RamFlash<const RS: usize = 1> {
    pub data: Vec<u8>,
    /// Erases per 4 KiB sector.
    pub erases: Vec<u32>,
    pub bytes_written: u64,
    pub erase_ops: usize,
    pub write_ops: usize,
}

impl<const RS: usize> RamFlash<RS> {
    pub fn new(size: usize) -> Self {
        RamFlash {
            data: vec![0xFF; size],
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

impl<const RS: usize> ErrorType for RamFlash<RS> {
    type Error = RamError;
}

impl<const RS: usize> ReadNorFlash for RamFlash<RS> {
    const READ_SIZE: usize = RS;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamError> {
        if !(offset as usize).is_multiple_of(RS) || !bytes.len().is_multiple_of(RS) {
            return Err(RamError(NorFlashErrorKind::NotAligned));
        }
        let end = offset as usize + bytes.len();
        if end > self.data.len() {
            return Err(RamError(NorFlashErrorKind::OutOfBounds));
        }
        bytes.copy_from_slice(&self.data[offset as usize..end]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const RS: usize> NorFlash for RamFlash<RS> {
    const WRITE_SIZE: usize = 1;
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
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamError> {
        let end = offset as usize + bytes.len();
        if end > self.data.len() {
            return Err(RamError(NorFlashErrorKind::OutOfBounds));
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
