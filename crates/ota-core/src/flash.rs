//! Flash access through embedded-storage, with partition-relative, bounds-checked helpers.
//!
//! `ota-core` never touches flash except through these functions, so every flash error carries
//! the operation and the absolute offset. NOR rules (esp-idf `components/spi_flash`): erase works on
//! 4 KiB sectors and sets bytes to 0xFF; programming can only clear bits.

use core::fmt;

use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

/// Erase granularity of ESP32 SPI flash (`SPI_FLASH_SEC_SIZE`, esp-idf `components/spi_flash/include/spi_flash_mmap.h`).
pub const SECTOR_SIZE: u32 = 0x1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashOp {
    Read,
    Write,
    Erase,
}

impl fmt::Display for FlashOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlashOp::Read => "read",
            FlashOp::Write => "write",
            FlashOp::Erase => "erase",
        })
    }
}

/// A flash operation failed (or would leave its region).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashError {
    pub op: FlashOp,
    /// Absolute flash offset of the operation.
    pub offset: u32,
    pub len: u32,
    pub kind: FlashErrorKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashErrorKind {
    /// The flash driver said the access was not aligned.
    NotAligned,
    /// The flash driver said the access was out of the chip's bounds.
    OutOfBounds,
    /// The access would leave the region (partition) it was made in: `[start, start+size)`.
    OutsideRegion { start: u32, size: u32 },
    /// Any other driver error (I/O, a bit programmed from 0 to 1, injected fault...).
    Other,
}

impl fmt::Display for FlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flash {} of {} bytes at 0x{:x} failed: ",
            self.op, self.len, self.offset
        )?;
        match self.kind {
            FlashErrorKind::NotAligned => f.write_str("not aligned"),
            FlashErrorKind::OutOfBounds => f.write_str("beyond the end of the flash"),
            FlashErrorKind::OutsideRegion { start, size } => write!(
                f,
                "outside its partition 0x{:x}..0x{:x}",
                start,
                start as u64 + size as u64
            ),
            FlashErrorKind::Other => f.write_str("flash driver error"),
        }
    }
}

fn map_err<E: NorFlashError>(e: E, op: FlashOp, offset: u32, len: u32) -> FlashError {
    let kind = match e.kind() {
        NorFlashErrorKind::NotAligned => FlashErrorKind::NotAligned,
        NorFlashErrorKind::OutOfBounds => FlashErrorKind::OutOfBounds,
        _ => FlashErrorKind::Other,
    };
    FlashError {
        op,
        offset,
        len,
        kind,
    }
}

/// A contiguous area of flash, usually a partition: `[offset, offset + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub offset: u32,
    pub size: u32,
}

impl Region {
    pub const fn new(offset: u32, size: u32) -> Self {
        Region { offset, size }
    }

    /// Absolute offset of `[rel, rel+len)` inside this region, or an error naming the region.
    pub fn absolute(&self, op: FlashOp, rel: u32, len: u32) -> Result<u32, FlashError> {
        let end = rel as u64 + len as u64;
        if end > self.size as u64 {
            return Err(FlashError {
                op,
                offset: self.offset.wrapping_add(rel),
                len,
                kind: FlashErrorKind::OutsideRegion {
                    start: self.offset,
                    size: self.size,
                },
            });
        }
        Ok(self.offset + rel)
    }

    pub fn read<F: ReadNorFlash>(
        &self,
        flash: &mut F,
        rel: u32,
        buf: &mut [u8],
    ) -> Result<(), FlashError> {
        let abs = self.absolute(FlashOp::Read, rel, buf.len() as u32)?;
        read(flash, abs, buf)
    }

    pub fn write<F: NorFlash>(
        &self,
        flash: &mut F,
        rel: u32,
        data: &[u8],
    ) -> Result<(), FlashError> {
        let abs = self.absolute(FlashOp::Write, rel, data.len() as u32)?;
        write(flash, abs, data)
    }

    /// Erase `[rel, rel+len)`; both must be multiples of [`SECTOR_SIZE`].
    pub fn erase<F: NorFlash>(&self, flash: &mut F, rel: u32, len: u32) -> Result<(), FlashError> {
        let abs = self.absolute(FlashOp::Erase, rel, len)?;
        erase(flash, abs, len)
    }
}

pub fn read<F: ReadNorFlash>(flash: &mut F, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
    flash
        .read(offset, buf)
        .map_err(|e| map_err(e, FlashOp::Read, offset, buf.len() as u32))
}

pub fn write<F: NorFlash>(flash: &mut F, offset: u32, data: &[u8]) -> Result<(), FlashError> {
    flash
        .write(offset, data)
        .map_err(|e| map_err(e, FlashOp::Write, offset, data.len() as u32))
}

pub fn erase<F: NorFlash>(flash: &mut F, offset: u32, len: u32) -> Result<(), FlashError> {
    if !offset.is_multiple_of(SECTOR_SIZE) || !len.is_multiple_of(SECTOR_SIZE) {
        return Err(FlashError {
            op: FlashOp::Erase,
            offset,
            len,
            kind: FlashErrorKind::NotAligned,
        });
    }
    flash
        .erase(offset, offset + len)
        .map_err(|e| map_err(e, FlashOp::Erase, offset, len))
}
