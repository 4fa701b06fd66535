//! A flash that shares a read-only base image between many devices, copy-on-write by sector.
//!
//! A fleet of emulated devices all start from the same 4 MiB image; an update then changes a
//! few dozen sectors of each (the new app slot, otadata). [`CowFlash`] holds the base once
//! (`Arc<[u8]>`, shared by every clone) and keeps per device only the sectors that differ from
//! it: a sector erased since (no bytes stored: it reads 0xFF) or written since (a private copy
//! of its 4 KiB).
//!
//! The NOR rules are [`ota_core::mem_flash::MemFlash`]'s, applied by it: every write is done by
//! a `MemFlash<READ, WRITE>` over the sector's bytes (programming only clears bits, a write that
//! would set one fails and changes nothing; reads and writes on the `READ`/`WRITE` granularity;
//! 4 KiB erases). `CowFlash<4, 4>` is what code on an ESP32 sees through esp-storage
//! (esp-rs/esp-hal `esp-storage/src/common.rs`, `READ_SIZE = WRITE_SIZE = 4`). A write across
//! sectors is checked on every sector before any of them changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};
use ota_core::flash::SECTOR_SIZE;
use ota_core::mem_flash::{MemFlash, MemFlashError};

/// The erase unit, `SPI_FLASH_SEC_SIZE` (esp-idf `components/spi_flash/include/spi_flash_mmap.h`).
const SECTOR: usize = SECTOR_SIZE as usize;
/// What an erased NOR cell reads.
const ERASED: u8 = 0xFF;

/// A sector that no longer reads as the base.
#[derive(Clone)]
enum Sector {
    /// Erased since: all 0xFF, nothing stored.
    Erased,
    /// Written since: its bytes.
    Own(Box<[u8; SECTOR]>),
}

/// A NOR flash over a shared base image, copy-on-write by 4 KiB sector (see the
/// [module documentation](self)). Cloning a `CowFlash` shares the base and copies only the
/// changed sectors.
#[derive(Clone)]
pub struct CowFlash<const READ: usize = 4, const WRITE: usize = 4> {
    base: Arc<[u8]>,
    changed: BTreeMap<usize, Sector>,
}

impl<const READ: usize, const WRITE: usize> CowFlash<READ, WRITE> {
    /// A flash reading `base` until it is changed. Its length must be a whole number of
    /// sectors (as every ESP flash size is).
    pub fn new(base: Arc<[u8]>) -> Result<Self, MemFlashError> {
        if !base.len().is_multiple_of(SECTOR) {
            return Err(MemFlashError::NotAligned {
                offset: 0,
                len: base.len(),
                granule: SECTOR,
            });
        }
        Ok(CowFlash {
            base,
            changed: BTreeMap::new(),
        })
    }

    /// A blank flash of `size` bytes (a base of 0xFF, shared by its clones).
    pub fn erased(size: usize) -> Result<Self, MemFlashError> {
        Self::new(vec![ERASED; size].into())
    }

    /// Sectors this flash keeps of its own (erased or written since the base).
    pub fn changed_sectors(&self) -> usize {
        self.changed.len()
    }

    /// Bytes this flash holds beyond the shared base (the written sectors' copies).
    pub fn own_bytes(&self) -> usize {
        self.changed
            .values()
            .filter(|s| matches!(s, Sector::Own(_)))
            .count()
            * SECTOR
    }

    /// The whole contents (base with the changes), for inspection.
    pub fn contents(&self) -> Vec<u8> {
        let mut out = self.base.to_vec();
        for (&i, s) in &self.changed {
            if let Sector::Own(b) = s {
                out[i * SECTOR..(i + 1) * SECTOR].copy_from_slice(&b[..]);
            } else {
                out[i * SECTOR..(i + 1) * SECTOR].fill(ERASED);
            }
        }
        out
    }

    /// The bytes sector `index` reads now.
    fn current(&self, index: usize) -> [u8; SECTOR] {
        let mut out = [ERASED; SECTOR];
        match self.changed.get(&index) {
            Some(Sector::Erased) => {}
            Some(Sector::Own(b)) => out.copy_from_slice(&b[..]),
            None => out.copy_from_slice(&self.base[index * SECTOR..(index + 1) * SECTOR]),
        }
        out
    }

    /// `[offset, offset + len)` when inside the flash and on `granule` boundaries.
    fn range(
        &self,
        offset: u32,
        len: usize,
        granule: usize,
    ) -> Result<(usize, usize), MemFlashError> {
        let start = offset as usize;
        if !start.is_multiple_of(granule) || !len.is_multiple_of(granule) {
            return Err(MemFlashError::NotAligned {
                offset,
                len,
                granule,
            });
        }
        match start.checked_add(len) {
            Some(end) if end <= self.base.len() => Ok((start, end)),
            _ => Err(MemFlashError::OutOfBounds {
                offset,
                len,
                capacity: self.base.len(),
            }),
        }
    }
}

/// `MemFlash`'s error for a sector, moved to the flash's address space.
fn at_sector(e: MemFlashError, base: usize) -> MemFlashError {
    match e {
        MemFlashError::NotErased {
            offset,
            had,
            wanted,
        } => MemFlashError::NotErased {
            offset: offset + base as u32,
            had,
            wanted,
        },
        other => other,
    }
}

impl<const READ: usize, const WRITE: usize> ErrorType for CowFlash<READ, WRITE> {
    type Error = MemFlashError;
}

impl<const READ: usize, const WRITE: usize> ReadNorFlash for CowFlash<READ, WRITE> {
    const READ_SIZE: usize = READ;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), MemFlashError> {
        let (start, end) = self.range(offset, bytes.len(), READ)?;
        let mut at = start;
        while at < end {
            let index = at / SECTOR;
            let in_sector = at % SECTOR;
            let n = (SECTOR - in_sector).min(end - at);
            let out = &mut bytes[at - start..at - start + n];
            match self.changed.get(&index) {
                Some(Sector::Erased) => out.fill(ERASED),
                Some(Sector::Own(b)) => out.copy_from_slice(&b[in_sector..in_sector + n]),
                None => out.copy_from_slice(&self.base[at..at + n]),
            }
            at += n;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.base.len()
    }
}

impl<const READ: usize, const WRITE: usize> NorFlash for CowFlash<READ, WRITE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), MemFlashError> {
        let len = to.checked_sub(from).ok_or(MemFlashError::NotAligned {
            offset: from,
            len: 0,
            granule: SECTOR,
        })?;
        let (start, end) = self.range(from, len as usize, SECTOR)?;
        for index in start / SECTOR..end / SECTOR {
            self.changed.insert(index, Sector::Erased);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), MemFlashError> {
        let (start, end) = self.range(offset, bytes.len(), WRITE)?;
        if bytes.is_empty() {
            return Ok(());
        }
        let program = |sector: &mut [u8], index: usize, at: usize, n: usize| {
            MemFlash::<'_, READ, WRITE>::new(sector)
                .write((at % SECTOR) as u32, &bytes[at - start..at - start + n])
                .map_err(|e| at_sector(e, index * SECTOR))
        };
        if start / SECTOR == (end - 1) / SECTOR {
            // One sector: MemFlash programs it in place, and changes nothing when it refuses.
            let index = start / SECTOR;
            if let Some(Sector::Own(b)) = self.changed.get_mut(&index) {
                return program(&mut b[..], index, start, end - start);
            }
            let mut copy = Box::new(self.current(index));
            program(&mut copy[..], index, start, end - start)?;
            self.changed.insert(index, Sector::Own(copy));
            return Ok(());
        }
        // Across sectors: each one is programmed on a copy first; only when all of them took
        // their bytes are the copies kept.
        let mut done: Vec<(usize, Box<[u8; SECTOR]>)> = Vec::new();
        let mut at = start;
        while at < end {
            let index = at / SECTOR;
            let n = (SECTOR - at % SECTOR).min(end - at);
            let mut copy = Box::new(self.current(index));
            program(&mut copy[..], index, at, n)?;
            done.push((index, copy));
            at += n;
        }
        for (index, copy) in done {
            self.changed.insert(index, Sector::Own(copy));
        }
        Ok(())
    }
}

impl<const READ: usize, const WRITE: usize> MultiwriteNorFlash for CowFlash<READ, WRITE> {}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB64: usize = 64 * 1024;

    fn base() -> Arc<[u8]> {
        let mut b = vec![0xFFu8; KIB64];
        b[..SECTOR].fill(0xA5);
        b[SECTOR..2 * SECTOR].fill(0x00);
        b.into()
    }

    #[test]
    fn cow_flash_reads_the_base_until_changed_and_shares_it() {
        let base = base();
        let mut a = CowFlash::<4, 4>::new(base.clone()).unwrap();
        let mut b = a.clone();
        let mut buf = [0u8; 8];
        a.read(SECTOR as u32 - 4, &mut buf).unwrap();
        assert_eq!(buf, [0xA5, 0xA5, 0xA5, 0xA5, 0, 0, 0, 0]);
        a.erase(0, SECTOR as u32).unwrap();
        a.write(0, &[0x12, 0x34, 0x56, 0x78]).unwrap();
        a.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0x12, 0x34, 0x56, 0x78, 0xFF, 0xFF, 0xFF, 0xFF]);
        // The other device and the base are untouched.
        b.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xA5; 8]);
        assert_eq!(base[0], 0xA5);
        assert_eq!(a.changed_sectors(), 1);
        assert_eq!(a.own_bytes(), SECTOR);
        assert_eq!(b.changed_sectors(), 0);
        // An erase stores nothing.
        b.erase(0, 4 * SECTOR as u32).unwrap();
        assert_eq!(b.own_bytes(), 0);
        assert!(b.contents().iter().all(|&x| x == 0xFF));
        assert_eq!(&a.contents()[SECTOR..2 * SECTOR], &[0u8; SECTOR][..]);
    }

    #[test]
    fn cow_flash_refuses_to_set_bits_and_changes_nothing() {
        let mut f = CowFlash::<4, 4>::new(base()).unwrap();
        // 0x00 in the base cannot become 0xFF without an erase.
        let e = f
            .write(SECTOR as u32 + 8, &[0xFF, 0x00, 0x00, 0x00])
            .unwrap_err();
        assert_eq!(
            e,
            MemFlashError::NotErased {
                offset: SECTOR as u32 + 8,
                had: 0,
                wanted: 0xFF
            }
        );
        assert_eq!(f.changed_sectors(), 0);
        // Clearing bits is fine, twice on the same word too (MultiwriteNorFlash).
        f.write(0, &[0xA4, 0xA5, 0xA5, 0xA5]).unwrap();
        f.write(0, &[0x24, 0xA5, 0xA5, 0xA5]).unwrap();
        let e = f.write(0, &[0xA5, 0xA5, 0xA5, 0xA5]).unwrap_err();
        assert!(matches!(
            e,
            MemFlashError::NotErased {
                offset: 0,
                had: 0x24,
                wanted: 0xA5
            }
        ));
        let mut buf = [0u8; 4];
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0x24, 0xA5, 0xA5, 0xA5]);
    }

    #[test]
    fn cow_flash_write_across_sectors_is_all_or_nothing() {
        let mut f = CowFlash::<4, 4>::new(base()).unwrap();
        f.erase(2 * SECTOR as u32, 3 * SECTOR as u32).unwrap();
        // Sector 2 (erased) would take it, sector 1 (zeros) would not: nothing changes.
        let at = 2 * SECTOR as u32 - 4;
        let e = f.write(at, &[0xFF; 8]).unwrap_err();
        assert!(matches!(e, MemFlashError::NotErased { offset, .. } if offset == at));
        let before = f.contents();
        // Across sector 2 into 3 (both 0xFF): fine.
        f.write(3 * SECTOR as u32 - 4, &[1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap();
        let after = f.contents();
        assert_eq!(
            &after[3 * SECTOR - 4..3 * SECTOR + 4],
            &[1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(&after[..3 * SECTOR - 4], &before[..3 * SECTOR - 4]);
    }

    #[test]
    fn cow_flash_holds_the_four_byte_granularity_and_bounds() {
        let mut f = CowFlash::<4, 4>::new(base()).unwrap();
        let mut buf = [0u8; 4];
        for (off, len) in [(1u32, 4usize), (0, 3), (2, 2)] {
            assert!(matches!(
                f.read(off, &mut buf[..len]),
                Err(MemFlashError::NotAligned { granule: 4, .. })
            ));
            assert!(matches!(
                f.write(off + 2 * SECTOR as u32, &buf[..len]),
                Err(MemFlashError::NotAligned { granule: 4, .. })
            ));
        }
        assert!(matches!(
            f.erase(4, SECTOR as u32),
            Err(MemFlashError::NotAligned {
                granule: SECTOR,
                ..
            })
        ));
        assert!(matches!(
            f.erase(SECTOR as u32, 0),
            Err(MemFlashError::NotAligned { .. })
        ));
        assert!(matches!(
            f.write(KIB64 as u32 - 4, &[0; 8]),
            Err(MemFlashError::OutOfBounds { .. })
        ));
        assert!(matches!(
            f.erase(0, KIB64 as u32 + SECTOR as u32),
            Err(MemFlashError::OutOfBounds { .. })
        ));
        assert!(matches!(
            f.read(u32::MAX - 3, &mut buf),
            Err(MemFlashError::OutOfBounds { .. })
        ));
        assert_eq!(f.changed_sectors(), 0);
        assert!(CowFlash::<4, 4>::new(vec![0xFF; 100].into()).is_err());
    }
}
