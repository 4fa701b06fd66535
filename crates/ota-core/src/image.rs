//! App image (`esp_image_header_t`, segments, checksum, appended SHA-256) and `esp_app_desc_t`.
//! idf-formats.md §3.
//!
//! CONTRACT (skeleton): keep public names and signatures; bodies are to be written.

use core::fmt;

use crate::chip::Chip;

pub const IMAGE_MAGIC: u8 = 0xE9;
pub const HEADER_SIZE: usize = 24;
pub const SEGMENT_HEADER_SIZE: usize = 8;
pub const APP_DESC_SIZE: usize = 256;
pub const APP_DESC_MAGIC: u32 = 0xABCD_5432;
/// Bytes an app image must start with so header, first segment header and app descriptor are
/// known: 24 + 8 + 256 + 1 = 289 (adf-ota-service.md §4.2).
pub const IMAGE_PREFIX_LEN: usize = 289;
pub const MAX_SEGMENTS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Placeholder until the real variants exist.
    Invalid { offset: u32 },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self)
    }
}

/// `esp_image_header_t` (24 bytes, §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ImageHeader {
    pub magic: u8,
    pub segment_count: u8,
    pub spi_mode: u8,
    /// Byte 3: low nibble speed, high nibble size.
    pub spi_speed_size: u8,
    pub entry_addr: u32,
    pub wp_pin: u8,
    pub spi_pin_drv: [u8; 3],
    pub chip_id: u16,
    pub min_chip_rev: u8,
    pub min_chip_rev_full: u16,
    pub max_chip_rev_full: u16,
    pub reserved: [u8; 4],
    pub hash_appended: u8,
}

/// `esp_app_desc_t` (256 bytes, §3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppDesc {
    pub magic_word: u32,
    pub secure_version: u32,
    pub version: [u8; 32],
    pub project_name: [u8; 32],
    pub time: [u8; 16],
    pub date: [u8; 16],
    pub idf_ver: [u8; 32],
    pub app_elf_sha256: [u8; 32],
    pub min_efuse_blk_rev_full: u16,
    pub max_efuse_blk_rev_full: u16,
    pub mmu_page_size: u8,
    pub spi_flash_mode: u8,
}

/// C string field up to the first NUL, lossy UTF-8 (cut at the first invalid byte).
pub fn cstr(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    match core::str::from_utf8(&bytes[..end]) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

impl AppDesc {
    pub fn version_str(&self) -> &str {
        cstr(&self.version)
    }
    pub fn project_name_str(&self) -> &str {
        cstr(&self.project_name)
    }
    pub fn time_str(&self) -> &str {
        cstr(&self.time)
    }
    pub fn date_str(&self) -> &str {
        cstr(&self.date)
    }
    pub fn idf_ver_str(&self) -> &str {
        cstr(&self.idf_ver)
    }
}

/// One segment as esptool reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SegmentInfo {
    pub load_addr: u32,
    pub data_len: u32,
    /// File offset of the segment *header* (what esptool prints as "File offs").
    pub file_offset: u32,
}

/// Everything learnt from reading a whole image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    pub header: ImageHeader,
    pub chip: Option<Chip>,
    pub segments: [SegmentInfo; MAX_SEGMENTS],
    pub segment_count: usize,
    pub checksum_read: u8,
    pub checksum_calc: u8,
    pub hash_read: Option<[u8; 32]>,
    pub hash_calc: Option<[u8; 32]>,
    /// Bytes of the image proper, including the appended hash when present.
    pub image_len: u32,
    pub app_desc: Option<AppDesc>,
}

impl ImageSummary {
    pub fn checksum_valid(&self) -> bool {
        self.checksum_read == self.checksum_calc
    }
    /// None when no hash is appended.
    pub fn hash_valid(&self) -> Option<bool> {
        match (self.hash_read, self.hash_calc) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        }
    }
}

/// Streaming, constant-memory image verifier (sans-IO): feed it the image bytes in chunks of
/// any size; it parses the header and segment headers, XORs the checksum, hashes with SHA-256,
/// and stops consuming at the end of the image (trailing bytes are ignored and counted).
pub struct ImageVerifier {
    _private: (),
}

impl ImageVerifier {
    pub fn new() -> Self {
        ImageVerifier { _private: () }
    }
    /// Feed the next chunk. Errors name the field and the image offset.
    pub fn feed(&mut self, _data: &[u8]) -> Result<(), ImageError> {
        Err(ImageError::Invalid { offset: 0 })
    }
    /// True once the whole image (including the appended hash) has been consumed.
    pub fn is_complete(&self) -> bool {
        false
    }
    /// The summary; an error if the image is incomplete (truncated) or its checksum/hash fail.
    pub fn finish(&self) -> Result<ImageSummary, ImageError> {
        Err(ImageError::Invalid { offset: 0 })
    }
}

impl Default for ImageVerifier {
    fn default() -> Self {
        Self::new()
    }
}

/// Parse the first [`IMAGE_PREFIX_LEN`] bytes: header (magic checked) and, when the first
/// segment's data starts with [`APP_DESC_MAGIC`], the app descriptor.
pub fn parse_prefix(_bytes: &[u8]) -> Result<(ImageHeader, Option<AppDesc>), ImageError> {
    Err(ImageError::Invalid { offset: 0 })
}

/// Verify the image stored at `region` like `esp_image_verify` (§3.8): magic, chip id (when
/// `chip` is given), segments, checksum, SHA-256, and that it fits in the region.
pub fn verify_flash<F: embedded_storage::nor_flash::ReadNorFlash>(
    _flash: &mut F,
    _region: crate::flash::Region,
    _chip: Option<Chip>,
) -> Result<ImageSummary, crate::Error> {
    Err(ImageError::Invalid { offset: 0 }.into())
}
