//! Flash access through embedded-storage, with partition-relative, bounds-checked helpers.
//!
//! `ota-core` never touches flash except through these functions, so every flash error carries
//! the operation and the absolute offset. NOR rules (esp-idf `components/spi_flash`): erase works on
//! 4 KiB sectors and sets bytes to 0xFF; programming can only clear bits.
//!
//! # Granularity
//!
//! This is the one aligned layer between the engines and the driver. A driver takes reads in
//! units of `READ_SIZE` and writes in units of `WRITE_SIZE` (esp-storage, the flash driver of
//! esp-hal: 4 and 4, `esp-storage/src/nor_flash.rs`); this layer supports any power of two up
//! to [`MAX_WORD`] for both:
//! - [`read`] takes any offset and length: it reads the whole words around them;
//! - [`write()`] takes a word-aligned offset and any length: the last word is padded with 0xFF
//!   (erased flash keeps its value under 0xFF). It never programs a word twice: a caller that
//!   writes at an unaligned offset gets [`FlashErrorKind::NotAligned`] before the driver is
//!   called. Sequential writers keep the partial last word in RAM until it is full
//!   ([`SequentialWriter`]);
//! - the driver's own error value survives a failed call: [`TrackedFlash`] keeps it beside
//!   the call (the layers' error, [`crate::Error`], cannot hold it without an allocator).
//! - every buffer handed to the driver is 4-byte aligned in memory ([`BUF_ALIGN`]; esp-storage
//!   copies an unaligned buffer through a bounce buffer word by word): a caller's unaligned
//!   buffer goes through an [`Aligned`] scratch.

use core::fmt;

use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

mod driver;
mod writer;

pub use driver::{DriverError, DriverErrorKind, TrackedFlash};
pub use writer::{
    header_last_cuts, write_first_sector_last, SequentialWriter, DATA_HEADER_LAST_LEN,
    DATA_TAG_LAST_LEN,
};

/// Erase granularity of ESP32 SPI flash (`SPI_FLASH_SEC_SIZE`, esp-idf `components/spi_flash/include/spi_flash_mmap.h`).
pub const SECTOR_SIZE: u32 = 0x1000;

/// Largest `READ_SIZE` / `WRITE_SIZE` this layer supports (a power of two; 256 is the SPI NOR
/// page, the largest program unit of the flash chips ESP32s use, esp-idf
/// `components/spi_flash/include/spi_flash_chip_driver.h` `page_size`).
pub const MAX_WORD: usize = 256;

/// Memory alignment of the buffers handed to the driver: esp-storage programs and reads 32-bit
/// words and copies any other buffer through a bounce buffer (`esp-storage/src/nor_flash.rs`).
pub const BUF_ALIGN: usize = 4;

/// A byte buffer aligned to [`BUF_ALIGN`] in memory, for buffers handed to the flash driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(4))]
pub struct Aligned<const N: usize>(pub [u8; N]);

impl<const N: usize> Aligned<N> {
    /// A buffer with every byte `fill`.
    pub const fn filled(fill: u8) -> Self {
        Aligned([fill; N])
    }
}

impl<const N: usize> core::ops::Deref for Aligned<N> {
    type Target = [u8; N];
    fn deref(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> core::ops::DerefMut for Aligned<N> {
    fn deref_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }
}

fn mem_aligned(b: &[u8]) -> bool {
    (b.as_ptr() as usize).is_multiple_of(BUF_ALIGN)
}

/// `n` rounded up to a multiple of `word` (a power of two).
pub const fn round_up(n: u32, word: u32) -> u32 {
    n.div_ceil(word) * word
}

/// The write unit of `F` (its `WRITE_SIZE`, at least 1).
pub const fn write_size<F: NorFlash>() -> u32 {
    if F::WRITE_SIZE == 0 {
        1
    } else {
        F::WRITE_SIZE as u32
    }
}

/// The read unit of `F` (its `READ_SIZE`, at least 1).
pub const fn read_size<F: ReadNorFlash>() -> u32 {
    if F::READ_SIZE == 0 {
        1
    } else {
        F::READ_SIZE as u32
    }
}

/// `word` is one this layer handles: a power of two up to [`MAX_WORD`].
fn check_word(op: FlashOp, offset: u32, len: u32, word: u32) -> Result<(), FlashError> {
    if word.is_power_of_two() && word as usize <= MAX_WORD {
        return Ok(());
    }
    Err(FlashError {
        op,
        offset,
        len,
        kind: FlashErrorKind::UnsupportedGranularity { size: word },
    })
}

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
#[non_exhaustive]
pub struct FlashError {
    pub op: FlashOp,
    /// Absolute flash offset of the operation.
    pub offset: u32,
    pub len: u32,
    pub kind: FlashErrorKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlashErrorKind {
    /// The flash driver said the access was not aligned.
    NotAligned,
    /// The flash driver said the access was out of the chip's bounds.
    OutOfBounds,
    /// The access would leave the region (partition) it was made in: `[start, start+size)`.
    OutsideRegion { start: u32, size: u32 },
    /// Any other driver error (I/O, a bit programmed from 0 to 1, injected fault...).
    Other,
    /// The driver's `READ_SIZE` or `WRITE_SIZE` is not a power of two up to [`MAX_WORD`].
    UnsupportedGranularity { size: u32 },
    /// A [`SequentialWriter`] was written to after [`SequentialWriter::flush`] programmed its
    /// padded last word (the bytes would land in a word already programmed).
    AfterFlush,
}

impl core::error::Error for FlashError {}

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
            FlashErrorKind::UnsupportedGranularity { size } => write!(
                f,
                "the flash driver's access unit of {} bytes is not a power of two up to {}",
                size, MAX_WORD
            ),
            FlashErrorKind::AfterFlush => {
                f.write_str("written after the last word was flushed (padded with 0xFF)")
            }
        }
    }
}

/// Our kind for the driver's.
fn map_kind(kind: NorFlashErrorKind) -> FlashErrorKind {
    match kind {
        NorFlashErrorKind::NotAligned => FlashErrorKind::NotAligned,
        NorFlashErrorKind::OutOfBounds => FlashErrorKind::OutOfBounds,
        _ => FlashErrorKind::Other,
    }
}

fn map_err<E: NorFlashError>(e: E, op: FlashOp, offset: u32, len: u32) -> FlashError {
    FlashError {
        op,
        offset,
        len,
        kind: map_kind(e.kind()),
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

    /// Program `data` at `rel` (see [`write()`]: word-aligned offset, the last word padded with
    /// 0xFF; the padded length must stay inside the region).
    pub fn write<F: NorFlash>(
        &self,
        flash: &mut F,
        rel: u32,
        data: &[u8],
    ) -> Result<(), FlashError> {
        let padded = round_up(data.len() as u32, write_size::<F>());
        let abs = self.absolute(FlashOp::Write, rel, padded)?;
        write(flash, abs, data)
    }

    /// Erase `[rel, rel+len)`; both must be multiples of [`SECTOR_SIZE`].
    pub fn erase<F: NorFlash>(&self, flash: &mut F, rel: u32, len: u32) -> Result<(), FlashError> {
        let abs = self.absolute(FlashOp::Erase, rel, len)?;
        erase(flash, abs, len)
    }
}

fn raw_read<F: ReadNorFlash>(flash: &mut F, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
    flash
        .read(offset, buf)
        .map_err(|e| map_err(e, FlashOp::Read, offset, buf.len() as u32))
}

fn raw_write<F: NorFlash>(flash: &mut F, offset: u32, data: &[u8]) -> Result<(), FlashError> {
    flash
        .write(offset, data)
        .map_err(|e| map_err(e, FlashOp::Write, offset, data.len() as u32))
}

/// Read `buf.len()` bytes at `offset`, any offset and length: the driver is asked only for
/// whole `READ_SIZE` words, into 4-byte aligned memory (the caller's buffer when it is aligned,
/// otherwise an aligned scratch).
pub fn read<F: ReadNorFlash>(flash: &mut F, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
    let len = buf.len();
    let rs = read_size::<F>();
    check_word(FlashOp::Read, offset, len as u32, rs)?;
    let rs = rs as usize;
    let mut scratch = Aligned::<MAX_WORD>::filled(0xFF);
    let mut pos = 0usize;
    while pos < len {
        let abs = offset as usize + pos;
        let skip = abs % rs;
        let rest = len - pos;
        if skip == 0 && rest >= rs && mem_aligned(&buf[pos..]) {
            let n = rest - rest % rs;
            raw_read(flash, abs as u32, &mut buf[pos..pos + n])?;
            pos += n;
            continue;
        }
        let need = (skip + rest).div_ceil(rs) * rs;
        let need = need.min(MAX_WORD);
        raw_read(flash, (abs - skip) as u32, &mut scratch[..need])?;
        let n = (need - skip).min(rest);
        buf[pos..pos + n].copy_from_slice(&scratch[skip..skip + n]);
        pos += n;
    }
    Ok(())
}

/// Program `data` at `offset`, which must be a multiple of `WRITE_SIZE`; a partial last word
/// is padded with 0xFF (which leaves erased bytes erased). The driver gets whole words from
/// 4-byte aligned memory. An unaligned offset is refused ([`FlashErrorKind::NotAligned`])
/// without calling the driver: it would program the word before it a second time.
pub fn write<F: NorFlash>(flash: &mut F, offset: u32, data: &[u8]) -> Result<(), FlashError> {
    let len = data.len();
    let ws = write_size::<F>();
    check_word(FlashOp::Write, offset, len as u32, ws)?;
    if !offset.is_multiple_of(ws) {
        return Err(FlashError {
            op: FlashOp::Write,
            offset,
            len: len as u32,
            kind: FlashErrorKind::NotAligned,
        });
    }
    let ws = ws as usize;
    let full = len - len % ws;
    let mut scratch = Aligned::<MAX_WORD>::filled(0xFF);
    if mem_aligned(data) {
        if full > 0 {
            raw_write(flash, offset, &data[..full])?;
        }
    } else {
        for (i, piece) in data[..full].chunks(MAX_WORD).enumerate() {
            scratch[..piece.len()].copy_from_slice(piece);
            raw_write(
                flash,
                offset + (i * MAX_WORD) as u32,
                &scratch[..piece.len()],
            )?;
        }
    }
    let tail = &data[full..];
    if !tail.is_empty() {
        scratch[..ws].fill(0xFF);
        scratch[..tail.len()].copy_from_slice(tail);
        raw_write(flash, offset + full as u32, &scratch[..ws])?;
    }
    Ok(())
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
