//! The base of a delta patch: the image the device is running, read (never written) through a
//! small trait, and its digest computed the way esp_delta_ota's example checks the header.

use core::fmt;

use embedded_storage::nor_flash::ReadNorFlash;
use sha2::{Digest, Sha256};

use crate::flash::{FlashError, Region};
use crate::image::{verify_flash, ImageSummary};
use crate::Chip;

/// Where an applier reads the old image. Reads are at most [`super::apply::CHUNK`] bytes, at any
/// offset inside `[0, len)`; the applier never asks for anything outside it.
pub trait DeltaBase {
    type Error;
    /// Bytes of the base (seeks and diffs are checked against it).
    fn len(&self) -> u32;
    /// Fill `buf` from base offset `offset`.
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A base in memory (tests, hosts).
#[derive(Clone, Copy, Debug)]
pub struct SliceBase<'a>(pub &'a [u8]);

/// A read outside a [`SliceBase`] (the applier never asks for one; a caller might).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SliceBaseError {
    pub offset: u32,
    pub len: usize,
    pub base_len: usize,
}

impl fmt::Display for SliceBaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read of {} bytes at base offset {} is outside the {}-byte base",
            self.len, self.offset, self.base_len
        )
    }
}

impl core::error::Error for SliceBaseError {}

impl DeltaBase for SliceBase<'_> {
    type Error = SliceBaseError;
    fn len(&self) -> u32 {
        self.0.len().min(u32::MAX as usize) as u32
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), SliceBaseError> {
        let at = offset as usize;
        let src = at
            .checked_add(buf.len())
            .and_then(|end| self.0.get(at..end))
            .ok_or(SliceBaseError {
                offset,
                len: buf.len(),
                base_len: self.0.len(),
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A base in flash: the first `len` bytes of `region` (the running slot). Reads go through
/// [`crate::flash::read`], which asks the driver only for whole `READ_SIZE` words at aligned
/// offsets into 4-byte aligned memory (esp-storage: 4), so an unaligned diff position costs at
/// most one extra word each side. The words around the image's last byte lie inside the slot.
pub struct FlashBase<'f, F> {
    flash: &'f mut F,
    region: Region,
    len: u32,
}

impl<'f, F: ReadNorFlash> FlashBase<'f, F> {
    /// `len` bytes at the start of `region`; `None` when `len` exceeds the region.
    pub fn new(flash: &'f mut F, region: Region, len: u32) -> Option<Self> {
        (len <= region.size).then_some(FlashBase { flash, region, len })
    }
}

impl<F: ReadNorFlash> DeltaBase for FlashBase<'_, F> {
    type Error = FlashError;
    fn len(&self) -> u32 {
        self.len
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        self.region.read(self.flash, offset, buf)
    }
}

/// The running image as esp_delta_ota's example sees it before applying a patch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseImage {
    /// What `esp_partition_get_sha256` returns for an app partition: the image's appended
    /// SHA-256 (verified) when `hash_appended` is set, otherwise SHA-256 of the image bytes.
    pub sha256: [u8; 32],
    /// Bytes of the image proper (with its appended hash): the base length for the applier.
    pub image_len: u32,
    pub summary: ImageSummary,
}

/// Read buffer of [`base_image_sha256`].
pub const DIGEST_CHUNK: usize = 256;

/// Verify the image at the start of `region` and compute its digest the way
/// `esp_partition_get_sha256` does for an app partition (esp-idf
/// `components/bootloader_support/src/bootloader_common.c`
/// `bootloader_common_get_sha256_of_partition`: `esp_image_verify`, then the appended digest
/// when `hash_appended`, else SHA-256 over `image_len` bytes). esp_delta_ota's example compares
/// this with the 64-byte header before it calls `esp_ota_begin`, that is, before anything is
/// erased. Bounded: one [`DIGEST_CHUNK`]-byte buffer (plus [`verify_flash`]'s).
pub fn base_image_sha256<F: ReadNorFlash>(
    flash: &mut F,
    region: Region,
    chip: Option<Chip>,
) -> Result<BaseImage, crate::Error> {
    let summary = verify_flash(flash, region, chip)?;
    let image_len = summary.image_len;
    let sha256 = match (summary.hash_read, summary.hash_calc) {
        // verify_flash has already refused a mismatch.
        (Some(_), Some(calc)) => calc,
        _ => {
            let mut sha = Sha256::new();
            let mut buf = crate::flash::Aligned::<DIGEST_CHUNK>::filled(0);
            let mut pos = 0u32;
            while pos < image_len {
                let n = (image_len - pos).min(DIGEST_CHUNK as u32) as usize;
                region.read(flash, pos, &mut buf[..n])?;
                sha.update(&buf[..n]);
                pos += n as u32;
            }
            sha.finalize().into()
        }
    };
    Ok(BaseImage {
        sha256,
        image_len,
        summary,
    })
}
