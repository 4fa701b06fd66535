//! A NOR flash in RAM with a chip's granularity, for tests and doc examples.
//!
//! [`MemFlash`] keeps the rules a real SPI NOR flash and its driver impose, strictly:
//!
//! * erase works on whole 4 KiB sectors ([`SECTOR_SIZE`], `SPI_FLASH_SEC_SIZE` in esp-idf
//!   `components/spi_flash/include/spi_flash_mmap.h`) and sets every byte to 0xFF;
//! * programming can only clear bits: a write that would turn a 0 bit back into 1 fails (and
//!   changes nothing), as it would silently corrupt data on a real chip;
//! * reads and writes must start and end on multiples of `READ` / `WRITE` bytes, or fail with
//!   `NotAligned`. esp-storage, the flash driver of esp-hal, has `READ_SIZE = WRITE_SIZE = 4`
//!   (esp-rs/esp-hal `esp-storage/src/common.rs`), so `MemFlash<'_, 4, 4>` is what code on an
//!   ESP32 chip sees; `MemFlash<'_, 1, 1>` is a byte-granular flash.
//!
//! The memory is borrowed from the caller (`no_std`, no allocator): any byte slice, for
//! example a `Vec` in a test or a `static` buffer. Its length should be a multiple of the
//! sector size; a trailing partial sector can be read and written but never erased.
//! Writing the same word more than once is allowed as long as it only clears bits, so the
//! flash is also a [`MultiwriteNorFlash`].

use core::fmt;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use crate::flash::SECTOR_SIZE;

/// Largest read/write granularity a [`MemFlash`] accepts (the range ota-core supports: powers
/// of two from 1 to 256, a flash page).
pub const MAX_ACCESS_SIZE: usize = 256;

/// Why a [`MemFlash`] access failed. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemFlashError {
    /// The access does not start or end on the flash's granularity (`granule` bytes; for an
    /// erase, the 4 KiB sector).
    NotAligned {
        offset: u32,
        len: usize,
        granule: usize,
    },
    /// The access ends beyond the flash (`capacity` bytes).
    OutOfBounds {
        offset: u32,
        len: usize,
        capacity: usize,
    },
    /// A write would set a bit that is 0 at `offset` back to 1 (the sector needs an erase
    /// first): `had` is the byte on flash, `wanted` the byte written.
    NotErased { offset: u32, had: u8, wanted: u8 },
}

impl fmt::Display for MemFlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemFlashError::NotAligned {
                offset,
                len,
                granule,
            } => write!(
                f,
                "access of {} bytes at 0x{:x} is not aligned to {} bytes",
                len, offset, granule
            ),
            MemFlashError::OutOfBounds {
                offset,
                len,
                capacity,
            } => write!(
                f,
                "access of {} bytes at 0x{:x} ends beyond the {} byte flash",
                len, offset, capacity
            ),
            MemFlashError::NotErased {
                offset,
                had,
                wanted,
            } => write!(
                f,
                "write of 0x{:02x} over 0x{:02x} at 0x{:x} would set bits (erase first)",
                wanted, had, offset
            ),
        }
    }
}

impl core::error::Error for MemFlashError {}

impl NorFlashError for MemFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            MemFlashError::NotAligned { .. } => NorFlashErrorKind::NotAligned,
            MemFlashError::OutOfBounds { .. } => NorFlashErrorKind::OutOfBounds,
            MemFlashError::NotErased { .. } => NorFlashErrorKind::Other,
        }
    }
}

/// A NOR flash over borrowed RAM that reads in `READ`-byte and programs in `WRITE`-byte units
/// and erases 4 KiB sectors (see the [module documentation](self)).
pub struct MemFlash<'a, const READ: usize, const WRITE: usize> {
    mem: &'a mut [u8],
}

impl<'a, const READ: usize, const WRITE: usize> MemFlash<'a, READ, WRITE> {
    /// Evaluated (at compile time) for every `MemFlash` type that is built: the granularities
    /// must be powers of two up to [`MAX_ACCESS_SIZE`].
    const VALID: () = assert!(
        READ.is_power_of_two()
            && WRITE.is_power_of_two()
            && READ <= MAX_ACCESS_SIZE
            && WRITE <= MAX_ACCESS_SIZE,
        "MemFlash READ and WRITE must be powers of two from 1 to 256"
    );

    /// A flash holding `mem` as it is (to start from a blank chip, fill it with 0xFF first, or
    /// use [`MemFlash::erased`]).
    pub fn new(mem: &'a mut [u8]) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        MemFlash { mem }
    }

    /// A blank flash: `mem` is filled with 0xFF.
    pub fn erased(mem: &'a mut [u8]) -> Self {
        mem.fill(0xFF);
        Self::new(mem)
    }

    /// The flash contents (to inspect what was written).
    pub fn memory(&self) -> &[u8] {
        self.mem
    }

    /// `[offset, offset + len)` if it lies inside the flash and both ends are multiples of
    /// `granule`.
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
            Some(end) if end <= self.mem.len() => Ok((start, end)),
            _ => Err(MemFlashError::OutOfBounds {
                offset,
                len,
                capacity: self.mem.len(),
            }),
        }
    }
}

impl<const READ: usize, const WRITE: usize> ErrorType for MemFlash<'_, READ, WRITE> {
    type Error = MemFlashError;
}

impl<const READ: usize, const WRITE: usize> ReadNorFlash for MemFlash<'_, READ, WRITE> {
    const READ_SIZE: usize = READ;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), MemFlashError> {
        let (start, end) = self.range(offset, bytes.len(), READ)?;
        bytes.copy_from_slice(&self.mem[start..end]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const READ: usize, const WRITE: usize> NorFlash for MemFlash<'_, READ, WRITE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = SECTOR_SIZE as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), MemFlashError> {
        let len = to.checked_sub(from).ok_or(MemFlashError::NotAligned {
            offset: from,
            len: 0,
            granule: Self::ERASE_SIZE,
        })?;
        let (start, end) = self.range(from, len as usize, Self::ERASE_SIZE)?;
        self.mem[start..end].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), MemFlashError> {
        let (start, end) = self.range(offset, bytes.len(), WRITE)?;
        let old = &mut self.mem[start..end];
        if let Some(i) = old.iter().zip(bytes).position(|(&had, &b)| b & !had != 0) {
            return Err(MemFlashError::NotErased {
                offset: offset + i as u32,
                had: old[i],
                wanted: bytes[i],
            });
        }
        old.iter_mut().zip(bytes).for_each(|(d, &b)| *d &= b);
        Ok(())
    }
}

impl<const READ: usize, const WRITE: usize> MultiwriteNorFlash for MemFlash<'_, READ, WRITE> {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;

    use super::*;

    #[test]
    fn a_word_granular_flash_refuses_unaligned_access_and_setting_bits() {
        let mut mem = vec![0u8; 2 * SECTOR_SIZE as usize];
        let mut f = MemFlash::<4, 4>::erased(&mut mem);
        assert!(f.memory().iter().all(|&b| b == 0xFF));
        assert_eq!(
            f.write(2, &[0; 4]),
            Err(MemFlashError::NotAligned {
                offset: 2,
                len: 4,
                granule: 4
            })
        );
        assert!(f.write(0, &[0; 3]).is_err());
        let mut b = [0u8; 4];
        assert_eq!(
            f.read(1, &mut b).unwrap_err().kind(),
            NorFlashErrorKind::NotAligned
        );
        f.write(4, &[0x0F, 0xF0, 0xFF, 0x00]).unwrap();
        // Clearing more bits of a written word is fine (multiwrite), setting one is not.
        f.write(4, &[0x0E, 0xF0, 0x7F, 0x00]).unwrap();
        let e = f.write(4, &[0x1E, 0xF0, 0x7F, 0x00]).unwrap_err();
        assert_eq!(
            e,
            MemFlashError::NotErased {
                offset: 4,
                had: 0x0E,
                wanted: 0x1E
            }
        );
        f.read(4, &mut b).unwrap();
        assert_eq!(
            b,
            [0x0E, 0xF0, 0x7F, 0x00],
            "a refused write changes nothing"
        );
        assert!(f.erase(0, 100).is_err());
        assert!(f.erase(4096, 0).is_err());
        assert_eq!(
            f.erase(0, 3 * 4096).unwrap_err().kind(),
            NorFlashErrorKind::OutOfBounds
        );
        assert!(f.write(8188, &[0; 8]).is_err());
        f.erase(0, 4096).unwrap();
        assert!(f.memory()[..8].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn a_byte_granular_flash_takes_any_offset() {
        let mut mem = vec![0xFFu8; SECTOR_SIZE as usize];
        let mut f = MemFlash::<1, 1>::new(&mut mem);
        f.write(3, &[1, 2, 3]).unwrap();
        let mut b = [0u8; 5];
        f.read(2, &mut b).unwrap();
        assert_eq!(b, [0xFF, 1, 2, 3, 0xFF]);
        assert_eq!(f.capacity(), 4096);
    }
}
