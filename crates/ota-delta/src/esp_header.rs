//! The 64-byte header Espressif's tooling puts in front of a detools patch for esp_delta_ota
//! (espressif/idf-extra-components `esp_delta_ota/examples/https_delta_ota/tools/esp_delta_ota_patch_gen.py`):
//! magic `0xfccdde10` little-endian, the base image's SHA-256, 28 zero bytes.

use ota_core::image::ImageVerifier;

use crate::Error;

/// `esp_delta_ota_magic` in `esp_delta_ota_patch_gen.py` (the first four bytes of
/// sha256("esp_delta_ota")), stored little-endian.
pub const ESP_DELTA_OTA_MAGIC: u32 = 0xfccd_de10;
/// `HEADER_SIZE` in `esp_delta_ota_patch_gen.py`.
pub const ESP_HEADER_LEN: usize = 64;
/// `MAGIC_SIZE` + `DIGEST_SIZE`; the rest (`RESERVED_HEADER`, 28 bytes) is zero.
const DIGEST_OFFSET: usize = 4;
const DIGEST_LEN: usize = 32;

/// The digest `esp_delta_ota_patch_gen.py` puts in the header: the "Validation Hash" that
/// `esptool image_info` prints as `(valid)` for the base, i.e. the SHA-256 appended to the
/// image, checked against the image bytes before it. On the device the example app compares
/// it with `esp_partition_get_sha256()` of the running slot, which returns the same digest.
///
/// The image is walked segment by segment (a padded or signed image's appended hash is not
/// at its file's end). An image without an appended hash, or whose hash does not match, is
/// refused as the Espressif tool refuses it.
pub fn base_digest(base: &[u8]) -> Result<[u8; 32], Error> {
    let mut verifier = ImageVerifier::new();
    verifier.set_strict(false);
    verifier
        .feed(base)
        .map_err(|source| Error::BaseImage { source })?;
    let summary = verifier
        .summary()
        .ok_or(Error::BaseImageTruncated { len: base.len() })?;
    match (summary.hash_read, summary.hash_calc) {
        (Some(stored), Some(computed)) if stored == computed => Ok(stored),
        (Some(stored), Some(computed)) => Err(Error::BaseHashMismatch { stored, computed }),
        _ => Err(Error::BaseHasNoHash {
            hash_appended: summary.header.hash_appended,
        }),
    }
}

/// The 64-byte header for a patch made from a base whose digest is `digest`.
pub fn header(digest: &[u8; 32]) -> [u8; ESP_HEADER_LEN] {
    let mut out = [0u8; ESP_HEADER_LEN];
    out[..DIGEST_OFFSET].copy_from_slice(&ESP_DELTA_OTA_MAGIC.to_le_bytes());
    out[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN].copy_from_slice(digest);
    out
}
