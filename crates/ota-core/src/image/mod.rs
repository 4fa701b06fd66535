//! App image (`esp_image_header_t`, segments, checksum, appended SHA-256), `esp_app_desc_t` and
//! `esp_bootloader_desc_t` (idf-formats.md §3): parsing, a constant-memory streaming verifier
//! that enforces the ESP-IDF loader's rules, and a streaming builder of valid images for tests.

use core::fmt;

use crate::bytes::{array, le16, le32, put};
pub use crate::bytes::{write_hex, Hex};
use crate::chip::Chip;

mod builder;
mod desc;
mod header;
mod stored;
#[cfg(test)]
mod tests;
mod verifier;

pub use builder::{build_bootloader, build_image, ImageSpec};
pub use desc::{cstr, cstr_field, AppDesc, BootloaderDesc};
pub use header::{
    flash_freq_code_from_name, flash_mode_from_name, flash_size_bytes, flash_size_code_for_bytes,
    flash_size_code_from_name, flash_size_name, ImageHeader,
};
pub use stored::{
    parse_prefix, set_image_flash_params, verify_flash, verify_flash_with, VERIFY_CHUNK,
};
pub use verifier::{ImageSummary, ImageVerifier, MmuPageRule, MmuPageSource, SegmentInfo};

/// `ESP_IMAGE_HEADER_MAGIC` (idf-formats.md §3.2).
pub const IMAGE_MAGIC: u8 = 0xE9;
/// The first bytes of an ELF file (`ELFMAG` of the System V ABI, `elf.h`): what `idf.py build`
/// links (`build/APP.elf`) before esptool's `elf2image` turns it into the app image
/// (`build/APP.bin`) that is flashed.
pub const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

/// Whether `bytes` start like an ELF file (an app that was never converted into an image).
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(&ELF_MAGIC)
}
/// `sizeof(esp_image_header_t)` (idf-formats.md §3.2).
pub const HEADER_SIZE: usize = 24;
/// `sizeof(esp_image_segment_header_t)`: load_addr u32 + data_len u32 (idf-formats.md §3.4).
pub const SEGMENT_HEADER_SIZE: usize = 8;
/// `sizeof(esp_app_desc_t)` (idf-formats.md §3.7).
pub const APP_DESC_SIZE: usize = 256;
/// `ESP_APP_DESC_MAGIC_WORD` (idf-formats.md §3.7).
pub const APP_DESC_MAGIC: u32 = 0xABCD_5432;
/// Bytes an app image must start with so header, first segment header and app descriptor are
/// known: 24 + 8 + 256 + 1 = 289 (adf-ota-service.md §4.2).
pub const IMAGE_PREFIX_LEN: usize = 289;
/// `ESP_IMAGE_MAX_SEGMENTS` (idf-formats.md §3.2).
pub const MAX_SEGMENTS: usize = 16;
/// File offset of `esp_app_desc_t`: header + first segment header (idf-formats.md §3.7).
pub const APP_DESC_OFFSET: usize = HEADER_SIZE + SEGMENT_HEADER_SIZE;
/// Segment lengths must stay below 16 MiB (`SIXTEEN_MB`, idf-formats.md §3.4).
pub const MAX_SEGMENT_LEN: u32 = 16 * 1024 * 1024;
/// Initial value of the XOR checksum (`ESP_ROM_CHECKSUM_INITIAL`, idf-formats.md §3.5).
pub const CHECKSUM_SEED: u8 = 0xEF;
/// The checksum byte ends a 16-byte-aligned block (idf-formats.md §3.5).
pub const CHECKSUM_ALIGN: u64 = 16;
/// Length of the appended SHA-256 digest (idf-formats.md §3.6).
pub const HASH_LEN: usize = 32;
/// `wp_pin` value meaning "disabled", esptool's default (idf-formats.md §3.2).
pub const WP_PIN_DISABLED: u8 = 0xEE;
/// `sizeof(esp_bootloader_desc_t)` (idf-formats.md §3.7).
pub const BOOTLOADER_DESC_SIZE: usize = 80;
/// `ESP_BOOTLOADER_DESC_MAGIC_BYTE` (idf-formats.md §3.7).
pub const BOOTLOADER_DESC_MAGIC: u8 = 0x50;
/// `max_chip_rev_full` values meaning "not set" (idf-formats.md §3.2).
pub const CHIP_REV_UNSET: u16 = 0xFFFF;

/// SPI flash mode names for header byte 2 values 0..=3, upper-cased like esptool (§3.2).
const FLASH_MODE_NAMES: [&str; 4] = ["QIO", "QOUT", "DIO", "DOUT"];
/// Flash size names for the high nibble of header byte 3, 0..=7 (idf-formats.md §3.2).
const FLASH_SIZE_NAMES: [&str; 8] = ["1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"];

/// Where the verifier was when the data ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePart {
    Header,
    SegmentHeader(u8),
    SegmentData(u8),
    Padding,
    Checksum,
    Hash,
}

impl fmt::Display for ImagePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImagePart::Header => f.write_str("the image header"),
            ImagePart::SegmentHeader(i) => write!(f, "segment {} header", i),
            ImagePart::SegmentData(i) => write!(f, "segment {} data", i),
            ImagePart::Padding => f.write_str("the padding before the checksum"),
            ImagePart::Checksum => f.write_str("the checksum byte"),
            ImagePart::Hash => f.write_str("the appended SHA-256"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageError {
    /// A buffer given to a parser is shorter than the structure.
    TooShort {
        what: &'static str,
        needed: usize,
        found: usize,
    },
    /// First byte is not 0xE9; `at` is the image's flash address (0 for a file/stream).
    BadMagic { at: u32, found: u8 },
    /// Header byte 23 is not 0 or 1.
    BadHashAppended { found: u8 },
    /// Header `chip_id` is not the chip we verify for.
    ChipMismatch { expected: u16, found: u16 },
    /// More than 16 segments.
    TooManySegments { at: u32, count: u8 },
    /// `data_len % 4 != 0` or `data_len >= 16 MiB`; `offset` = file offset of the segment header.
    SegmentLength { index: u8, offset: u32, len: u32 },
    /// A flash-mapped segment's data is not at the same offset within an MMU page as its load
    /// address; `data_addr` is the flash address of the segment data.
    SegmentAlignment {
        index: u8,
        load_addr: u32,
        data_addr: u32,
        page: u32,
    },
    /// App images need segment 0 to hold the 256-byte app descriptor.
    AppSegmentTooShort { len: u32 },
    /// App images need at least one segment.
    AppNoSegments,
    /// The image is (or, when `at_least`, is at least) `image_len` bytes long and that does
    /// not fit in the partition / size limit.
    DoesNotFit {
        image_len: u64,
        partition_len: u32,
        at_least: bool,
    },
    /// The data ended inside the image.
    Truncated {
        offset: u64,
        part: ImagePart,
        missing: u32,
    },
    /// Stored checksum differs from the XOR of all segment data.
    ChecksumMismatch { calculated: u8, read: u8 },
    /// Appended SHA-256 differs from the computed one.
    HashMismatch {
        calculated: [u8; 32],
        read: [u8; 32],
    },
    /// `esp_app_desc_t.magic_word` is not 0xABCD5432.
    BadAppDescMagic { found: u32 },
    /// `esp_bootloader_desc_t.magic_byte` is not 0x50.
    BadBootloaderDescMagic { found: u8 },
    /// An [`ImageSpec`] field is out of range.
    BadSpec {
        field: &'static str,
        reason: &'static str,
    },
}

impl core::error::Error for ImageError {}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::TooShort { what, needed, found } => {
                write!(f, "{} needs {} bytes, only {} given", what, needed, found)
            }
            ImageError::BadMagic { at, found } if *found == ELF_MAGIC[0] => write!(
                f,
                "image at 0x{:x} has invalid magic byte 0x{:02x}, expected 0x{:02x}: 0x{:02x} starts \
                 an ELF file, which is not an app image (convert it with `esptool elf2image`, or \
                 use the .bin that `idf.py build` writes next to the .elf)",
                at, found, IMAGE_MAGIC, found
            ),
            ImageError::BadMagic { at, found } => write!(
                f,
                "image at 0x{:x} has invalid magic byte (nothing flashed here?): found 0x{:02x}, expected 0x{:02x}",
                at, found, IMAGE_MAGIC
            ),
            ImageError::BadHashAppended { found } => write!(
                f,
                "image header hash_appended (byte 23) is 0x{:02x}; must be 0 or 1",
                found
            ),
            ImageError::ChipMismatch { expected, found } => {
                write!(f, "mismatch chip ID, expected {}", expected)?;
                if let Some(c) = Chip::from_id(*expected) {
                    write!(f, " ({})", c.display_name())?;
                }
                write!(f, ", found {}", found)?;
                match Chip::from_id(*found) {
                    Some(c) => write!(f, " ({})", c.display_name()),
                    None => f.write_str(" (unknown chip)"),
                }
            }
            ImageError::TooManySegments { at, count } => write!(
                f,
                "image at 0x{:x} segment count {} exceeds max {}",
                at, count, MAX_SEGMENTS
            ),
            ImageError::SegmentLength { index, offset, len } => write!(
                f,
                "invalid segment length 0x{:x} (segment {} at file offset 0x{:x}): must be a multiple of 4 and below 16 MiB",
                len, index, offset
            ),
            ImageError::SegmentAlignment { index, load_addr, data_addr, page } => write!(
                f,
                "Segment {} load address 0x{:08x}, doesn't match data 0x{:08x} (must be equal modulo the 0x{:x} MMU page)",
                index, load_addr, data_addr, page
            ),
            ImageError::AppSegmentTooShort { len } => write!(
                f,
                "segment 0 is {} bytes; an app image needs at least {} there for esp_app_desc_t",
                len, APP_DESC_SIZE
            ),
            ImageError::AppNoSegments => f.write_str("app image has no segments"),
            ImageError::DoesNotFit { image_len, partition_len, at_least } => write!(
                f,
                "Image length {}{} doesn't fit in partition length {}",
                if *at_least { "at least " } else { "" },
                image_len,
                partition_len
            ),
            ImageError::Truncated { offset, part, missing } => write!(
                f,
                "image truncated at offset {} while reading {} (expected {} more bytes)",
                offset, part, missing
            ),
            ImageError::ChecksumMismatch { calculated, read } => write!(
                f,
                "Checksum failed. Calculated 0x{:02x} read 0x{:02x}",
                calculated, read
            ),
            ImageError::HashMismatch { calculated, read } => {
                f.write_str("Image hash failed - image is corrupt (calculated ")?;
                write_hex(f, calculated)?;
                f.write_str(", read ")?;
                write_hex(f, read)?;
                f.write_str(")")
            }
            ImageError::BadAppDescMagic { found } => write!(
                f,
                "esp_app_desc_t magic word is 0x{:08x}, expected 0x{:08x}",
                found, APP_DESC_MAGIC
            ),
            ImageError::BadBootloaderDescMagic { found } => write!(
                f,
                "esp_bootloader_desc_t magic byte is 0x{:02x}, expected 0x{:02x}",
                found, BOOTLOADER_DESC_MAGIC
            ),
            ImageError::BadSpec { field, reason } => {
                write!(f, "image spec field `{}`: {}", field, reason)
            }
        }
    }
}
