//! Secure Boot v2 signatures of app images: the 4096-byte signature
//! sector at `align_up(image_end, 4096)`, its up to 3 blocks (RSA-3072-PSS, ECDSA P-192 /
//! P-256 / P-384), the public-key digests eFuse holds, and ESP-IDF's app-side trust rules. Also
//! recognises a Secure Boot v1 block (ESP32). No allocation, constant memory.
//!
//! Sources: ESP-IDF `components/bootloader_support/src/secure_boot_v2/
//! secure_boot_signatures_app.c`, `components/bootloader_support/include/esp_secure_boot.h`,
//! `components/esp_rom/include/<chip>/rom/secure_boot.h`; esptool `espsecure/__init__.py`.
//!
//! ```
//! use ota_core::secure_boot::{self, SignatureSector, SignedDataHasher};
//! # let file = [0xFFu8; 8192];
//! # let image_len = 100;
//! // `image_len` as `image::ImageVerifier` reports it (appended hash included).
//! let at = secure_boot::sector_offset(image_len).unwrap() as usize;
//! let mut hasher = SignedDataHasher::new(true);
//! hasher.update(&file[..at]); // streamed in chunks on a device
//! let digests = hasher.finish();
//! let sector = SignatureSector::from_slice(&file[at..at + 4096]).unwrap();
//! for block in sector.blocks() {
//!     match block {
//!         Ok(b) => { let _ = secure_boot::verify_block(&b, &digests); }
//!         Err(e) => assert_eq!(e.kind, secure_boot::BlockErrorKind::Absent),
//!     }
//! }
//! ```

mod block;
#[cfg(test)]
mod cost_tests;
mod device;
mod digest;
mod ecdsa;
mod policy;
mod rsa;
#[cfg(test)]
mod tests;
mod verify;

pub use block::{
    block_crc, encode_ecdsa_block, encode_rsa_block, BlockError, BlockErrorKind, BlockKey, Curve,
    EncodeError, HashKind, Scheme, SectorBuilder, SectorFull, SectorLenError, SignatureBlock,
    SignatureSector, CURVE_ID_P192, CURVE_ID_P256, CURVE_ID_P384, ECDSA_SHA_256, ECDSA_SHA_384,
    RSA_KEY_LEN, RSA_LEN,
};
pub use device::{
    check_stored_app, precheck_sector, running_key_on_flash, slot_signatures, AppSignatureError,
    AppSignatureErrorKind, AppSignatures, SlotSignatures, TrustContext,
};
pub use digest::{key_digest, ImageDigests, SignedDataHasher};
pub use ecdsa::EcdsaError;
pub use policy::{
    running_app_key, verify_secure_boot, verify_signed_app, BlockOutcome, Refusal, RefusalReason,
    SecureBootKeys, Verified,
};
pub use rsa::{mdash_of, montgomery_params, RsaError, PSS_SALT_LEN};
pub use verify::{stored_digest_matches, verify_block, SignatureError};

/// `FLASH_SECTOR_SIZE`: the sector is 4 KiB and starts on a 4 KiB boundary.
pub const SECTOR_SIZE: usize = 4096;
/// `sizeof(ets_secure_boot_sig_block_t)`.
pub const BLOCK_SIZE: usize = 1216;
/// `SECURE_BOOT_NUM_BLOCKS`: blocks per sector (and trusted key digests in eFuse).
pub const MAX_BLOCKS: usize = 3;
/// `ETS_SECURE_BOOT_V2_SIGNATURE_MAGIC`.
pub const BLOCK_MAGIC: u8 = 0xE7;
/// `block_crc` offset: `CRC_SIGN_BLOCK_LEN` bytes are covered by it.
pub const BLOCK_CRC_OFFSET: usize = 1196;
/// `version` byte: `SECURE_BOOT_V2_RSA` / `SECURE_BOOT_V2_ECDSA` (espsecure
/// `SIG_BLOCK_VERSION_RSA` / `SIG_BLOCK_VERSION_ECDSA`).
pub const VERSION_RSA: u8 = 0x02;
pub const VERSION_ECDSA: u8 = 0x03;
/// Secure Boot v1: `{u32 version = 0; u8 signature[64]}` after the image (espsecure
/// `sign_secure_boot_v1`, ESP-IDF `esp_secure_boot_sig_block_t`).
pub const SBV1_BLOCK_SIZE: usize = 68;

/// Where the signature sector of an image of `image_len` bytes (appended SHA-256 included, as
/// [`crate::image::ImageVerifier::image_len`] reports it) begins: `align_up(image_len, 4096)`.
/// This is also the length of the signed data. `None` on overflow.
pub fn sector_offset(image_len: u32) -> Option<u32> {
    let s = SECTOR_SIZE as u32;
    image_len.checked_add(s - 1).map(|v| v & !(s - 1))
}

/// Bytes an image of `image_len` occupies with its signature sector
/// (`sig_len = align_up(end, 4096) - end + 4096` in ESP-IDF `esp_image_format.c`).
pub fn signed_image_len(image_len: u32) -> Option<u32> {
    sector_offset(image_len).and_then(|o| o.checked_add(SECTOR_SIZE as u32))
}

/// The signature sector of a whole signed file whose image is `image_len` bytes, if the file
/// is long enough to hold one.
pub fn sector_of(file: &[u8], image_len: u32) -> Option<SignatureSector<'_>> {
    let at = sector_offset(image_len)? as usize;
    let bytes = file.get(at..at.checked_add(SECTOR_SIZE)?)?;
    SignatureSector::from_slice(bytes).ok()
}

/// A Secure Boot v1 signature block (ESP32 only): recognised, not verified (v1 keys are not
/// part of the eFuse digest scheme above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sbv1Block<'a> {
    /// r ‖ s of the ECDSA P-256 signature over SHA-256 of the image.
    pub signature: &'a [u8; 64],
}

impl<'a> Sbv1Block<'a> {
    /// Recognises the block in the bytes right after the image (`image_len`): version word 0
    /// followed by a 64-byte signature that is neither all 0x00 nor all 0xFF.
    pub fn parse(after_image: &'a [u8]) -> Option<Self> {
        let b = after_image.get(..SBV1_BLOCK_SIZE)?;
        if b[..4] != [0, 0, 0, 0] {
            return None;
        }
        let signature: &[u8; 64] = b[4..].try_into().ok()?;
        if signature.iter().all(|&x| x == 0) || signature.iter().all(|&x| x == 0xFF) {
            return None;
        }
        Some(Sbv1Block { signature })
    }
}
