//! Images as they sit in a file or in flash: the download prefix, esptool's flash-parameter
//! rewrite, and verifying the image stored in a flash region.

use super::{
    put, AppDesc, ImageError, ImageHeader, ImageSummary, ImageVerifier, APP_DESC_OFFSET, HASH_LEN,
    IMAGE_MAGIC, IMAGE_PREFIX_LEN,
};
use crate::chip::Chip;
use sha2::{Digest, Sha256};

/// Parse the first [`IMAGE_PREFIX_LEN`] bytes: header (magic checked) and, when the first
/// segment's data starts with [`APP_DESC_MAGIC`](super::APP_DESC_MAGIC), the app descriptor.
pub fn parse_prefix(bytes: &[u8]) -> Result<(ImageHeader, Option<AppDesc>), ImageError> {
    if let Some(&b) = bytes.first() {
        if b != IMAGE_MAGIC {
            return Err(ImageError::BadMagic { at: 0, found: b });
        }
    }
    if bytes.len() < IMAGE_PREFIX_LEN {
        return Err(ImageError::TooShort {
            what: "image prefix (header, segment header, app descriptor)",
            needed: IMAGE_PREFIX_LEN,
            found: bytes.len(),
        });
    }
    let h = ImageHeader::parse(bytes)?;
    if h.hash_appended > 1 {
        return Err(ImageError::BadHashAppended {
            found: h.hash_appended,
        });
    }
    let desc = bytes
        .get(APP_DESC_OFFSET..)
        .and_then(|d| AppDesc::parse(d).ok());
    Ok((h, desc))
}

/// esptool's `_update_image_flash_params` (esptool `esptool/cmds.py`, used by `write-flash` and
/// `merge-bin` on the file at the bootloader offset): when `image` is a valid image for `chip`
/// (magic, structure, checksum, hash), header byte 2 takes `mode`, byte 3's high nibble
/// `size_code` and low nibble `freq_code` (None = keep), and an appended SHA-256 is recomputed
/// over the image before it, in place. Returns false, with `image` untouched, when it is not
/// a valid image (esptool then warns and leaves the file as it is).
pub fn set_image_flash_params(
    image: &mut [u8],
    chip: Chip,
    mode: Option<u8>,
    size_code: Option<u8>,
    freq_code: Option<u8>,
) -> bool {
    let mut v = ImageVerifier::new();
    v.set_expected_chip(Some(chip));
    v.set_strict(false);
    if v.feed(image).is_err() {
        return false;
    }
    let Ok(summary) = v.finish() else {
        return false;
    };
    let mut h = summary.header;
    h.spi_mode = mode.unwrap_or(h.spi_mode);
    h.spi_speed_size = ((size_code.unwrap_or(h.flash_size_code()) & 0x0F) << 4)
        | (freq_code.unwrap_or(h.flash_freq_code()) & 0x0F);
    put(image, 0, &h.to_bytes());
    if summary.header.hash_appended == 1 {
        let data_len = (summary.image_len as usize).saturating_sub(HASH_LEN);
        if let Some(body) = image.get(..data_len) {
            let digest: [u8; HASH_LEN] = Sha256::digest(body).into();
            put(image, data_len, &digest);
        }
    }
    true
}

/// Flash read size used by [`verify_flash`].
pub const VERIFY_CHUNK: usize = 256;

/// Verify the image stored at `region` like `esp_image_verify` (§3.8): magic, chip id (when
/// `chip` is given), segments, checksum, SHA-256, and that it fits in the region.
pub fn verify_flash<F: embedded_storage::nor_flash::ReadNorFlash>(
    flash: &mut F,
    region: crate::flash::Region,
    chip: Option<Chip>,
) -> Result<ImageSummary, crate::Error> {
    let mut v = ImageVerifier::new();
    v.set_expected_chip(chip);
    verify_flash_with(flash, region, v)
}

/// [`verify_flash`] with a verifier the caller has configured (e.g. `set_app_rules(true)`);
/// the size limit and flash offset are set from `region`.
pub fn verify_flash_with<F: embedded_storage::nor_flash::ReadNorFlash>(
    flash: &mut F,
    region: crate::flash::Region,
    mut v: ImageVerifier,
) -> Result<ImageSummary, crate::Error> {
    v.set_size_limit(Some(region.size));
    v.set_flash_offset(region.offset);
    let mut buf = crate::flash::Aligned::<VERIFY_CHUNK>::filled(0);
    let mut rel: u32 = 0;
    while !v.is_complete() && rel < region.size {
        let n = (region.size - rel).min(VERIFY_CHUNK as u32) as usize;
        let chunk = &mut buf[..n];
        region.read(flash, rel, chunk)?;
        v.feed(chunk)?;
        rel += n as u32;
    }
    Ok(v.finish()?)
}
