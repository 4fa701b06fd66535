//! App image (`esp_image_header_t`, segments, checksum, appended SHA-256), `esp_app_desc_t` and
//! `esp_bootloader_desc_t` (idf-formats.md §3): parsing, a constant-memory streaming verifier
//! that enforces the ESP-IDF loader's rules, and a streaming builder of valid images for tests.

use core::fmt;

use sha2::{Digest, Sha256};

use crate::chip::{Chip, MemType, DEFAULT_MMU_PAGE_SIZE};

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

/// Lower-case hex of `bytes` (for digests in messages).
pub fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{:02x}", b)?;
    }
    Ok(())
}

/// Displays bytes as lowercase hex (digests, labels), without allocating.
#[derive(Clone, Copy, Debug)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.0)
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    match b.get(off..off + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn arr_at<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = b.get(off..off + N) {
        out.copy_from_slice(s);
    }
    out
}

fn put(out: &mut [u8], off: usize, src: &[u8]) {
    if let Some(d) = out.get_mut(off..off + src.len()) {
        d.copy_from_slice(src);
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

impl ImageHeader {
    /// Parse the first 24 bytes; only the length and the magic byte are checked.
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        let b = bytes.get(..HEADER_SIZE).ok_or(ImageError::TooShort {
            what: "esp_image_header_t",
            needed: HEADER_SIZE,
            found: bytes.len(),
        })?;
        let h = ImageHeader {
            magic: b[0],
            segment_count: b[1],
            spi_mode: b[2],
            spi_speed_size: b[3],
            entry_addr: u32_at(b, 4),
            wp_pin: b[8],
            spi_pin_drv: arr_at(b, 9),
            chip_id: u16_at(b, 12),
            min_chip_rev: b[14],
            min_chip_rev_full: u16_at(b, 15),
            max_chip_rev_full: u16_at(b, 17),
            reserved: arr_at(b, 19),
            hash_appended: b[23],
        };
        if h.magic != IMAGE_MAGIC {
            return Err(ImageError::BadMagic {
                at: 0,
                found: h.magic,
            });
        }
        Ok(h)
    }

    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut o = [0u8; HEADER_SIZE];
        o[0] = self.magic;
        o[1] = self.segment_count;
        o[2] = self.spi_mode;
        o[3] = self.spi_speed_size;
        put(&mut o, 4, &self.entry_addr.to_le_bytes());
        o[8] = self.wp_pin;
        put(&mut o, 9, &self.spi_pin_drv);
        put(&mut o, 12, &self.chip_id.to_le_bytes());
        o[14] = self.min_chip_rev;
        put(&mut o, 15, &self.min_chip_rev_full.to_le_bytes());
        put(&mut o, 17, &self.max_chip_rev_full.to_le_bytes());
        put(&mut o, 19, &self.reserved);
        o[23] = self.hash_appended;
        o
    }

    /// The chip named by `chip_id`, if we know it.
    pub fn chip(&self) -> Option<Chip> {
        Chip::from_id(self.chip_id)
    }
    /// `QIO`/`QOUT`/`DIO`/`DOUT` (esptool knows only these; None = unknown value).
    pub fn flash_mode_name(&self) -> Option<&'static str> {
        FLASH_MODE_NAMES.get(self.spi_mode as usize).copied()
    }
    /// High nibble of byte 3 (0 = 1MB ... 7 = 128MB).
    pub fn flash_size_code(&self) -> u8 {
        self.spi_speed_size >> 4
    }
    /// Low nibble of byte 3 (chip-specific meaning, see [`Chip::flash_freqs`]).
    pub fn flash_freq_code(&self) -> u8 {
        self.spi_speed_size & 0x0F
    }
    /// `1MB` ... `128MB`; None for an unknown size code.
    pub fn flash_size_name(&self) -> Option<&'static str> {
        FLASH_SIZE_NAMES
            .get(self.flash_size_code() as usize)
            .copied()
    }
    /// Flash size in bytes; None for an unknown size code.
    pub fn flash_size_bytes(&self) -> Option<u32> {
        flash_size_bytes(self.flash_size_code())
    }
    /// esptool's name for the frequency nibble on `chip` (first match in its map).
    pub fn flash_freq_name(&self, chip: Chip) -> Option<&'static str> {
        let code = self.flash_freq_code();
        chip.flash_freqs()
            .iter()
            .find(|(_, c)| *c == code)
            .map(|(n, _)| *n)
    }
}

/// Header byte 2 for a mode name (`dio`, `DIO`...).
pub fn flash_mode_from_name(name: &str) -> Option<u8> {
    FLASH_MODE_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|p| p as u8)
}

/// Size nibble (0..=7) for `1MB`...`128MB` (case-insensitive).
pub fn flash_size_code_from_name(name: &str) -> Option<u8> {
    FLASH_SIZE_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|p| p as u8)
}

/// Bytes of flash for a size nibble (0 => 1 MiB ... 7 => 128 MiB).
pub fn flash_size_bytes(code: u8) -> Option<u32> {
    if (code as usize) < FLASH_SIZE_NAMES.len() {
        Some((1u32 << 20) << code)
    } else {
        None
    }
}

/// Frequency nibble for a name (`40m`) on `chip` (esptool's per-chip map, §3.2).
pub fn flash_freq_code_from_name(chip: Chip, name: &str) -> Option<u8> {
    chip.flash_freqs()
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
}

/// `esp_app_desc_t` (256 bytes, §3.7). Reserved bytes are kept so that
/// `AppDesc::parse(x)?.to_bytes() == x`.
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
    /// `reserv1[2]` (desc offset 8).
    pub reserv1: [u8; 8],
    /// `reserv3[2]` (desc offset 182).
    pub reserv3: [u8; 2],
    /// `reserv2[18]` (desc offset 184).
    pub reserv2: [u8; 72],
}

impl Default for AppDesc {
    /// All zero except the magic word.
    fn default() -> Self {
        AppDesc {
            magic_word: APP_DESC_MAGIC,
            secure_version: 0,
            version: [0; 32],
            project_name: [0; 32],
            time: [0; 16],
            date: [0; 16],
            idf_ver: [0; 32],
            app_elf_sha256: [0; 32],
            min_efuse_blk_rev_full: 0,
            max_efuse_blk_rev_full: 0,
            mmu_page_size: 0,
            spi_flash_mode: 0,
            reserv1: [0; 8],
            reserv3: [0; 2],
            reserv2: [0; 72],
        }
    }
}

/// C string field up to the first NUL, lossy UTF-8 (cut at the first invalid byte).
pub fn cstr(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let bytes = bytes.get(..end).unwrap_or(&[]);
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or(&[])).unwrap_or(""),
    }
}

/// Copy `s` into a NUL-padded C string field; errors if it does not fit with its NUL.
pub fn cstr_field<const N: usize>(s: &str, field: &'static str) -> Result<[u8; N], ImageError> {
    let mut out = [0u8; N];
    let b = s.as_bytes();
    if b.len() >= N {
        return Err(ImageError::BadSpec {
            field,
            reason: "too long for its NUL-terminated field",
        });
    }
    put(&mut out, 0, b);
    Ok(out)
}

impl AppDesc {
    /// Parse 256 bytes (more are ignored); the magic word is checked.
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        let d = Self::from_layout(bytes)?;
        if d.magic_word != APP_DESC_MAGIC {
            return Err(ImageError::BadAppDescMagic {
                found: d.magic_word,
            });
        }
        Ok(d)
    }

    /// The 256-byte `esp_app_desc_t` layout without checking the magic word (ADF's tone
    /// descriptor uses the same layout with magic 0xF55F9876, adf-ota-service.md §8.2).
    pub fn from_layout(bytes: &[u8]) -> Result<Self, ImageError> {
        let b = bytes.get(..APP_DESC_SIZE).ok_or(ImageError::TooShort {
            what: "esp_app_desc_t",
            needed: APP_DESC_SIZE,
            found: bytes.len(),
        })?;
        let d = AppDesc {
            magic_word: u32_at(b, 0),
            secure_version: u32_at(b, 4),
            reserv1: arr_at(b, 8),
            version: arr_at(b, 16),
            project_name: arr_at(b, 48),
            time: arr_at(b, 80),
            date: arr_at(b, 96),
            idf_ver: arr_at(b, 112),
            app_elf_sha256: arr_at(b, 144),
            min_efuse_blk_rev_full: u16_at(b, 176),
            max_efuse_blk_rev_full: u16_at(b, 178),
            mmu_page_size: b[180],
            spi_flash_mode: b[181],
            reserv3: arr_at(b, 182),
            reserv2: arr_at(b, 184),
        };
        Ok(d)
    }

    pub fn to_bytes(&self) -> [u8; APP_DESC_SIZE] {
        let mut o = [0u8; APP_DESC_SIZE];
        put(&mut o, 0, &self.magic_word.to_le_bytes());
        put(&mut o, 4, &self.secure_version.to_le_bytes());
        put(&mut o, 8, &self.reserv1);
        put(&mut o, 16, &self.version);
        put(&mut o, 48, &self.project_name);
        put(&mut o, 80, &self.time);
        put(&mut o, 96, &self.date);
        put(&mut o, 112, &self.idf_ver);
        put(&mut o, 144, &self.app_elf_sha256);
        put(&mut o, 176, &self.min_efuse_blk_rev_full.to_le_bytes());
        put(&mut o, 178, &self.max_efuse_blk_rev_full.to_le_bytes());
        o[180] = self.mmu_page_size;
        o[181] = self.spi_flash_mode;
        put(&mut o, 182, &self.reserv3);
        put(&mut o, 184, &self.reserv2);
        o
    }

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

/// `esp_bootloader_desc_t` (80 bytes at the start of a bootloader's DRAM segment, §3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootloaderDesc {
    pub magic_byte: u8,
    pub reserved: [u8; 2],
    pub secure_version: u8,
    pub version: u32,
    pub idf_ver: [u8; 32],
    pub date_time: [u8; 24],
    pub reserved2: [u8; 16],
}

impl BootloaderDesc {
    /// Parse 80 bytes; the magic byte is checked.
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        let b = bytes
            .get(..BOOTLOADER_DESC_SIZE)
            .ok_or(ImageError::TooShort {
                what: "esp_bootloader_desc_t",
                needed: BOOTLOADER_DESC_SIZE,
                found: bytes.len(),
            })?;
        let d = BootloaderDesc {
            magic_byte: b[0],
            reserved: arr_at(b, 1),
            secure_version: b[3],
            version: u32_at(b, 4),
            idf_ver: arr_at(b, 8),
            date_time: arr_at(b, 40),
            reserved2: arr_at(b, 64),
        };
        if d.magic_byte != BOOTLOADER_DESC_MAGIC {
            return Err(ImageError::BadBootloaderDescMagic {
                found: d.magic_byte,
            });
        }
        Ok(d)
    }

    pub fn to_bytes(&self) -> [u8; BOOTLOADER_DESC_SIZE] {
        let mut o = [0u8; BOOTLOADER_DESC_SIZE];
        o[0] = self.magic_byte;
        put(&mut o, 1, &self.reserved);
        o[3] = self.secure_version;
        put(&mut o, 4, &self.version.to_le_bytes());
        put(&mut o, 8, &self.idf_ver);
        put(&mut o, 40, &self.date_time);
        put(&mut o, 64, &self.reserved2);
        o
    }

    pub fn idf_ver_str(&self) -> &str {
        cstr(&self.idf_ver)
    }
    pub fn date_time_str(&self) -> &str {
        cstr(&self.date_time)
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
    /// The app descriptor by esptool image-info's rule: the data of the first segment whose
    /// memory types include DROM, if it starts with the magic word.
    pub app_desc: Option<AppDesc>,
    /// The app descriptor where ESP-IDF (bootloader, OTA) reads it: segment 0 data, file
    /// offset 0x20. Equal to `app_desc` for every real app image.
    pub loader_app_desc: Option<AppDesc>,
    /// esptool image-info's "Bootloader Information": the last DRAM segment of ≥ 80 bytes,
    /// when the image has no DROM segment and that segment starts with magic 0x50.
    pub bootloader_desc: Option<BootloaderDesc>,
    /// The MMU page size the flash-mapped segments were checked against, and where it came from.
    pub mmu_page: u32,
    pub mmu_page_source: MmuPageSource,
    /// With [`ImageVerifier::set_strict`] off: the first flash-mapped segment whose data is
    /// not at its load address's offset within an MMU page (a bootloader with that page size
    /// refuses the image). Always None in strict mode (the verifier fails instead).
    pub mmu_misaligned: Option<ImageError>,
    /// With [`ImageVerifier::set_strict`] off: the first segment whose length breaks the
    /// loader's rule (a multiple of 4), which the bootloader refuses and esptool reads.
    pub segment_length_error: Option<ImageError>,
}

/// Which MMU page size the loader's alignment rule uses (`verify_segment_header` compares
/// `data_addr % SPI_FLASH_MMU_PAGE_SIZE` with `load_addr % SPI_FLASH_MMU_PAGE_SIZE`, esp-idf
/// `components/bootloader_support/src/esp_image_format.c`; `SPI_FLASH_MMU_PAGE_SIZE` is the
/// `CONFIG_MMU_PAGE_SIZE` the bootloader was built with).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MmuPageRule {
    /// The bootloader's own page size, known (e.g. from its sdkconfig): the image must match it.
    Fixed(u32),
    /// The app descriptor's `mmu_page_size` (ESP-IDF v5.4+ records `CONFIG_MMU_PAGE_SIZE`
    /// there) when set and valid for the chip, else this page size.
    AppDescOr(u32),
    /// The app descriptor's `mmu_page_size` when set, else Kconfig's default for the chip and
    /// the flash size in the image's own header ([`Chip::default_mmu_page_size`]).
    #[default]
    AppDescOrHeaderFlashSize,
}

/// Where [`ImageSummary::mmu_page`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MmuPageSource {
    /// Given by the caller ([`MmuPageRule::Fixed`]: the bootloader's configuration).
    Bootloader,
    /// `esp_app_desc_t.mmu_page_size`.
    AppDesc,
    /// Kconfig's default for the chip and a flash size (the caller's, or the image header's).
    FlashSize,
    /// 64 KiB: the chip has a fixed page size, or it is not known.
    #[default]
    Fixed64K,
}

impl MmuPageSource {
    /// Lower-case words for reports (`app descriptor`).
    pub const fn describe(self) -> &'static str {
        match self {
            MmuPageSource::Bootloader => "the bootloader's configuration",
            MmuPageSource::AppDesc => "the app descriptor",
            MmuPageSource::FlashSize => "Kconfig's default for the chip and flash size",
            MmuPageSource::Fixed64K => "the chip's fixed page size",
        }
    }
    /// Stable JSON key values.
    pub const fn key(self) -> &'static str {
        match self {
            MmuPageSource::Bootloader => "bootloader",
            MmuPageSource::AppDesc => "app_desc",
            MmuPageSource::FlashSize => "flash_size",
            MmuPageSource::Fixed64K => "chip",
        }
    }
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
    /// The segments actually present.
    pub fn segments(&self) -> &[SegmentInfo] {
        self.segments.get(..self.segment_count).unwrap_or(&[])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    SegHeader,
    SegData,
    Padding,
    Checksum,
    Hash,
    Done,
}

/// What the capture buffer is collecting for the current segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Capture {
    /// Segment 0: the app descriptor at file offset 0x20 (loader rule).
    loader: bool,
    /// The first DROM segment: esptool's app descriptor.
    esptool: bool,
    /// A DRAM segment of ≥ 80 bytes: esptool's bootloader descriptor candidate.
    boot: bool,
}

/// Streaming, constant-memory image verifier (sans-IO): feed it the image bytes in chunks of
/// any size; it parses the header and segment headers, XORs the checksum, hashes with SHA-256,
/// and stops consuming at the end of the image (trailing bytes are ignored and counted).
///
/// `feed` fails on structural errors (magic, counts, lengths, alignment, chip, size limit);
/// checksum and hash mismatches are reported by [`ImageVerifier::finish`] so that a caller can
/// still get the [`ImageVerifier::summary`] of a corrupt image.
pub struct ImageVerifier {
    // settings
    expected_chip: Option<Chip>,
    size_limit: Option<u32>,
    app_rules: bool,
    flash_offset: u32,
    mmu_rule: MmuPageRule,
    mmu_strict: bool,
    // progress
    state: State,
    consumed: u64,
    trailing: u64,
    failed: Option<ImageError>,
    buf: [u8; HASH_LEN],
    buf_len: usize,
    header: Option<ImageHeader>,
    chip: Option<Chip>,
    seg_index: u8,
    seg_remaining: u32,
    segments: [SegmentInfo; MAX_SEGMENTS],
    pad_remaining: u32,
    image_len: Option<u32>,
    checksum: u8,
    checksum_read: u8,
    sha: Option<Sha256>,
    hash_calc: Option<[u8; 32]>,
    hash_read: Option<[u8; 32]>,
    // descriptors
    cap: [u8; APP_DESC_SIZE],
    cap_len: usize,
    cap_want: usize,
    cap_for: Capture,
    drom_seen: bool,
    loader_desc: Option<AppDesc>,
    esptool_desc: Option<AppDesc>,
    boot_desc: Option<BootloaderDesc>,
    /// Segment 0's MMU alignment check waits for the app descriptor (its page size).
    pending_mmu: Option<(u32, u32)>,
    /// Non-strict mode: the first misaligned segment, the first bad segment length.
    mmu_misaligned: Option<ImageError>,
    segment_length_error: Option<ImageError>,
}

impl ImageVerifier {
    pub fn new() -> Self {
        ImageVerifier {
            expected_chip: None,
            size_limit: None,
            app_rules: false,
            flash_offset: 0,
            mmu_rule: MmuPageRule::default(),
            mmu_strict: true,
            state: State::Header,
            consumed: 0,
            trailing: 0,
            failed: None,
            buf: [0; HASH_LEN],
            buf_len: 0,
            header: None,
            chip: None,
            seg_index: 0,
            seg_remaining: 0,
            segments: [SegmentInfo::default(); MAX_SEGMENTS],
            pad_remaining: 0,
            image_len: None,
            checksum: CHECKSUM_SEED,
            checksum_read: 0,
            sha: None,
            hash_calc: None,
            hash_read: None,
            cap: [0; APP_DESC_SIZE],
            cap_len: 0,
            cap_want: 0,
            cap_for: Capture::default(),
            drom_seen: false,
            loader_desc: None,
            esptool_desc: None,
            boot_desc: None,
            pending_mmu: None,
            mmu_misaligned: None,
            segment_length_error: None,
        }
    }

    /// Which MMU page size the segment alignment rule uses (default:
    /// [`MmuPageRule::AppDescOrHeaderFlashSize`]). A page size that is not a power of two is
    /// taken as 64 KiB.
    pub fn set_mmu_page_rule(&mut self, rule: MmuPageRule) {
        let sane = |p: u32| {
            if p.is_power_of_two() {
                p
            } else {
                DEFAULT_MMU_PAGE_SIZE
            }
        };
        self.mmu_rule = match rule {
            MmuPageRule::Fixed(p) => MmuPageRule::Fixed(sane(p)),
            MmuPageRule::AppDescOr(p) => MmuPageRule::AppDescOr(sane(p)),
            r => r,
        };
    }
    /// Strict (default): a misaligned flash-mapped segment, or a segment length that is not a
    /// multiple of 4, is an error, as in the bootloader. Off: they are recorded in
    /// [`ImageSummary::mmu_misaligned`] / [`ImageSummary::segment_length_error`] and reading goes
    /// on (esptool's image-info checks neither). Lengths of 16 MiB or more are always refused.
    pub fn set_strict(&mut self, strict: bool) {
        self.mmu_strict = strict;
    }

    /// Require header `chip_id` to be this chip (`mismatch chip ID` otherwise). Default: any.
    pub fn set_expected_chip(&mut self, chip: Option<Chip>) {
        self.expected_chip = chip;
    }
    /// Fail as soon as the image is known to be longer than `limit` bytes (the slot size).
    pub fn set_size_limit(&mut self, limit: Option<u32>) {
        self.size_limit = limit;
    }
    /// Enforce app-only rules: at least one segment, segment 0 ≥ 256 bytes. Default: off.
    pub fn set_app_rules(&mut self, on: bool) {
        self.app_rules = on;
    }
    /// Flash address of the image's first byte (default 0): used for the MMU-page alignment
    /// rule and in messages. Partitions holding apps are 64 KiB aligned, so 0 is equivalent.
    pub fn set_flash_offset(&mut self, offset: u32) {
        self.flash_offset = offset;
    }

    /// Feed the next chunk. Errors name the field and the image offset. After an error every
    /// further call returns the same error.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.feed_some(data).map(|_| ())
    }

    /// Like [`feed`](Self::feed), returning how many bytes of `data` belong to the image (the
    /// rest, after the image end, is counted in [`trailing`](Self::trailing)).
    pub fn feed_some(&mut self, data: &[u8]) -> Result<usize, ImageError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.feed_inner(data) {
            Ok(n) => {
                self.trailing += (data.len() - n) as u64;
                Ok(n)
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// True once the whole image (including the appended hash) has been consumed.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }
    /// Image bytes consumed so far (trailing bytes not included).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }
    /// Bytes fed after the end of the image.
    pub fn trailing(&self) -> u64 {
        self.trailing
    }
    /// Total image length (incl. the hash), known once the last segment header is read.
    pub fn image_len(&self) -> Option<u32> {
        self.image_len
    }
    /// The header, once its 24 bytes have been fed.
    pub fn header(&self) -> Option<&ImageHeader> {
        self.header.as_ref()
    }
    /// The app descriptor at file offset 0x20 (where ESP-IDF reads it), as soon as its 256
    /// bytes have been fed and its magic word matched.
    pub fn app_desc(&self) -> Option<&AppDesc> {
        self.loader_desc.as_ref()
    }
    /// Segments whose header has been read so far.
    pub fn segments(&self) -> &[SegmentInfo] {
        let n = match self.state {
            State::Header => 0,
            State::SegHeader => self.seg_index as usize,
            State::SegData => self.seg_index as usize + 1,
            _ => self.header.map(|h| h.segment_count as usize).unwrap_or(0),
        };
        self.segments.get(..n).unwrap_or(&[])
    }

    /// The summary of a complete image, whether or not its checksum/hash are valid.
    pub fn summary(&self) -> Option<ImageSummary> {
        if self.state != State::Done {
            return None;
        }
        let header = self.header?;
        Some(ImageSummary {
            header,
            chip: self.chip,
            segments: self.segments,
            segment_count: header.segment_count as usize,
            checksum_read: self.checksum_read,
            checksum_calc: self.checksum,
            hash_read: self.hash_read,
            hash_calc: self.hash_calc,
            image_len: self.image_len.unwrap_or(self.consumed as u32),
            app_desc: self.esptool_desc,
            loader_app_desc: self.loader_desc,
            bootloader_desc: if self.drom_seen { None } else { self.boot_desc },
            mmu_page: self.mmu_page().0,
            mmu_page_source: self.mmu_page().1,
            mmu_misaligned: self.mmu_misaligned.clone(),
            segment_length_error: self.segment_length_error.clone(),
        })
    }

    /// The summary; an error if the image is incomplete (truncated) or its checksum/hash fail.
    pub fn finish(&self) -> Result<ImageSummary, ImageError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let summary = match self.summary() {
            Some(s) => s,
            None => return Err(self.truncation()),
        };
        if !summary.checksum_valid() {
            return Err(ImageError::ChecksumMismatch {
                calculated: summary.checksum_calc,
                read: summary.checksum_read,
            });
        }
        if let (Some(read), Some(calculated)) = (summary.hash_read, summary.hash_calc) {
            if read != calculated {
                return Err(ImageError::HashMismatch { calculated, read });
            }
        }
        Ok(summary)
    }

    fn truncation(&self) -> ImageError {
        let (part, missing) = match self.state {
            State::Header => (ImagePart::Header, HEADER_SIZE - self.buf_len),
            State::SegHeader => (
                ImagePart::SegmentHeader(self.seg_index),
                SEGMENT_HEADER_SIZE - self.buf_len,
            ),
            State::SegData => (
                ImagePart::SegmentData(self.seg_index),
                self.seg_remaining as usize,
            ),
            State::Padding => (ImagePart::Padding, self.pad_remaining as usize + 1),
            State::Checksum => (ImagePart::Checksum, 1),
            State::Hash | State::Done => (ImagePart::Hash, HASH_LEN - self.buf_len),
        };
        ImageError::Truncated {
            offset: self.consumed,
            part,
            missing: missing as u32,
        }
    }

    /// The page size the alignment rule uses now, and where it comes from.
    fn mmu_page(&self) -> (u32, MmuPageSource) {
        let Some(chip) = self.chip else {
            return (DEFAULT_MMU_PAGE_SIZE, MmuPageSource::Fixed64K);
        };
        let from_desc = self.loader_desc.and_then(|d| {
            let log2 = d.mmu_page_size;
            (log2 != 0 && chip.mmu_page_sizes_log2().contains(&log2)).then(|| 1u32 << log2)
        });
        let kconfig = |flash_size: Option<u32>| match flash_size {
            _ if chip.mmu_page_sizes_log2().is_empty() => {
                (DEFAULT_MMU_PAGE_SIZE, MmuPageSource::Fixed64K)
            }
            Some(fs) => (chip.default_mmu_page_size(fs), MmuPageSource::FlashSize),
            None => (DEFAULT_MMU_PAGE_SIZE, MmuPageSource::Fixed64K),
        };
        match self.mmu_rule {
            MmuPageRule::Fixed(p) => (p, MmuPageSource::Bootloader),
            MmuPageRule::AppDescOr(p) => match from_desc {
                Some(d) => (d, MmuPageSource::AppDesc),
                None if chip.mmu_page_sizes_log2().is_empty() => {
                    (DEFAULT_MMU_PAGE_SIZE, MmuPageSource::Fixed64K)
                }
                None => (p, MmuPageSource::FlashSize),
            },
            MmuPageRule::AppDescOrHeaderFlashSize => match from_desc {
                Some(d) => (d, MmuPageSource::AppDesc),
                None => kconfig(self.header.and_then(|h| h.flash_size_bytes())),
            },
        }
    }

    fn check_mmu(
        &mut self,
        index: u8,
        load_addr: u32,
        data_file_off: u32,
    ) -> Result<(), ImageError> {
        let Some(chip) = self.chip else { return Ok(()) };
        if !chip.is_flash_mapped(load_addr) {
            return Ok(());
        }
        let page = self.mmu_page().0.max(1);
        let data_addr = self.flash_offset.wrapping_add(data_file_off);
        if data_addr % page != load_addr % page {
            let e = ImageError::SegmentAlignment {
                index,
                load_addr,
                data_addr,
                page,
            };
            if self.mmu_strict {
                return Err(e);
            }
            if self.mmu_misaligned.is_none() {
                self.mmu_misaligned = Some(e);
            }
        }
        Ok(())
    }

    fn check_len(&self, len: u64, at_least: bool) -> Result<(), ImageError> {
        match self.size_limit {
            Some(limit) if len > limit as u64 => Err(ImageError::DoesNotFit {
                image_len: len,
                partition_len: limit,
                at_least,
            }),
            _ => Ok(()),
        }
    }

    /// Smallest possible image length, given that the data of the current segment ends at
    /// `data_end` and `left` more (empty) segments follow.
    fn min_len(&self, data_end: u64, left: u64) -> u64 {
        let unpadded = data_end + left * SEGMENT_HEADER_SIZE as u64;
        let hash = match self.header {
            Some(h) if h.hash_appended == 1 => HASH_LEN as u64,
            _ => 0,
        };
        round_up(unpadded + 1, CHECKSUM_ALIGN) + hash
    }

    fn on_header(&mut self) -> Result<(), ImageError> {
        let at = self.flash_offset;
        let h = match ImageHeader::parse(&self.buf[..HEADER_SIZE]) {
            Ok(h) => h,
            Err(ImageError::BadMagic { found, .. }) => {
                return Err(ImageError::BadMagic { at, found })
            }
            Err(e) => return Err(e),
        };
        if h.hash_appended > 1 {
            return Err(ImageError::BadHashAppended {
                found: h.hash_appended,
            });
        }
        if let Some(c) = self.expected_chip {
            if h.chip_id != c.id() {
                return Err(ImageError::ChipMismatch {
                    expected: c.id(),
                    found: h.chip_id,
                });
            }
        }
        if h.segment_count as usize > MAX_SEGMENTS {
            return Err(ImageError::TooManySegments {
                at,
                count: h.segment_count,
            });
        }
        if self.app_rules && h.segment_count == 0 {
            return Err(ImageError::AppNoSegments);
        }
        self.chip = h.chip();
        self.header = Some(h);
        if h.hash_appended == 1 {
            let mut sha = Sha256::new();
            sha.update(&self.buf[..HEADER_SIZE]);
            self.sha = Some(sha);
        }
        let min = self.min_len(HEADER_SIZE as u64, h.segment_count as u64);
        self.check_len(min, h.segment_count > 0)?;
        if h.segment_count == 0 {
            self.image_len = Some(min as u32);
        }
        self.start_segment_or_footer();
        Ok(())
    }

    fn start_segment_or_footer(&mut self) {
        let count = self.header.map(|h| h.segment_count).unwrap_or(0);
        if self.seg_index < count {
            self.state = State::SegHeader;
        } else {
            let unpadded = self.consumed;
            let chk_at = round_up(unpadded + 1, CHECKSUM_ALIGN) - 1;
            self.pad_remaining = (chk_at - unpadded) as u32;
            self.state = if self.pad_remaining > 0 {
                State::Padding
            } else {
                State::Checksum
            };
        }
    }

    fn on_segment_header(&mut self) -> Result<(), ImageError> {
        let index = self.seg_index;
        let load_addr = u32_at(&self.buf, 0);
        let len = u32_at(&self.buf, 4);
        let hdr_off = (self.consumed - SEGMENT_HEADER_SIZE as u64) as u32;
        if len & 3 != 0 || len >= MAX_SEGMENT_LEN {
            let e = ImageError::SegmentLength {
                index,
                offset: hdr_off,
                len,
            };
            if self.mmu_strict || len >= MAX_SEGMENT_LEN {
                return Err(e);
            }
            if self.segment_length_error.is_none() {
                self.segment_length_error = Some(e);
            }
        }
        if self.app_rules && index == 0 && (len as usize) < APP_DESC_SIZE {
            return Err(ImageError::AppSegmentTooShort { len });
        }
        let count = self.header.map(|h| h.segment_count).unwrap_or(0);
        let data_end = self.consumed + len as u64;
        let left = (count - index - 1) as u64;
        let min = self.min_len(data_end, left);
        self.check_len(min, left > 0)?;
        if left == 0 {
            self.image_len = Some(min as u32);
        }
        let data_off = self.consumed as u32;
        if index == 0 {
            self.pending_mmu = Some((load_addr, data_off));
        } else {
            self.check_mmu(index, load_addr, data_off)?;
        }
        if let Some(s) = self.segments.get_mut(index as usize) {
            *s = SegmentInfo {
                load_addr,
                data_len: len,
                file_offset: hdr_off,
            };
        }
        // What to capture from this segment's data (esptool's image-info rules, §3.10).
        let types = self.chip.map(|c| c.memory_types(load_addr));
        let is_drom = types.map(|t| t.contains(MemType::Drom)).unwrap_or(false);
        let is_dram = types.map(|t| t.contains(MemType::Dram)).unwrap_or(false);
        let mut cap = Capture {
            loader: index == 0,
            ..Capture::default()
        };
        if is_drom && !self.drom_seen {
            self.drom_seen = true;
            cap.esptool = true;
        } else if is_dram && len as usize >= BOOTLOADER_DESC_SIZE {
            cap.boot = true;
        }
        self.cap_for = cap;
        self.cap_len = 0;
        self.cap_want = if cap.loader || cap.esptool {
            APP_DESC_SIZE
        } else if cap.boot {
            BOOTLOADER_DESC_SIZE
        } else {
            0
        };
        self.seg_remaining = len;
        self.state = State::SegData;
        if len == 0 {
            self.end_segment()?;
        }
        Ok(())
    }

    fn end_capture(&mut self) -> Result<(), ImageError> {
        let cap = self.cap_for;
        let bytes = self.cap.get(..self.cap_len).unwrap_or(&[]);
        if cap.loader {
            self.loader_desc = AppDesc::parse(bytes).ok();
        }
        if cap.esptool {
            self.esptool_desc = AppDesc::parse(bytes).ok();
        }
        if cap.boot {
            // The last DRAM segment of ≥ 80 bytes wins, magic or not (esptool).
            self.boot_desc = BootloaderDesc::parse(bytes).ok();
        }
        self.cap_for = Capture::default();
        self.cap_want = 0;
        if cap.loader {
            if let Some((load, off)) = self.pending_mmu.take() {
                self.check_mmu(0, load, off)?;
            }
        }
        Ok(())
    }

    fn end_segment(&mut self) -> Result<(), ImageError> {
        if self.cap_for != Capture::default() {
            self.end_capture()?;
        }
        if let Some((load, off)) = self.pending_mmu.take() {
            self.check_mmu(0, load, off)?;
        }
        self.seg_index += 1;
        self.start_segment_or_footer();
        Ok(())
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<usize, ImageError> {
        let total = data.len();
        while !data.is_empty() {
            let (want, take) = match self.state {
                State::Done => break,
                State::Header => (HEADER_SIZE, HEADER_SIZE - self.buf_len),
                State::SegHeader => (SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE - self.buf_len),
                State::SegData => (0, self.seg_remaining as usize),
                State::Padding => (0, self.pad_remaining as usize),
                State::Checksum => (0, 1),
                State::Hash => (HASH_LEN, HASH_LEN - self.buf_len),
            };
            let n = take.min(data.len());
            let (chunk, rest) = data.split_at(n);
            data = rest;
            if self.state == State::Header && self.buf_len == 0 {
                if let Some(&b) = chunk.first() {
                    if b != IMAGE_MAGIC {
                        return Err(ImageError::BadMagic {
                            at: self.flash_offset,
                            found: b,
                        });
                    }
                }
            }
            if self.state != State::Hash && self.state != State::Header {
                if let Some(sha) = self.sha.as_mut() {
                    sha.update(chunk);
                }
            }
            self.consumed += n as u64;
            match self.state {
                State::Header | State::SegHeader | State::Hash => {
                    put(&mut self.buf, self.buf_len, chunk);
                    self.buf_len += n;
                    if self.buf_len == want {
                        self.buf_len = 0;
                        match self.state {
                            State::Header => self.on_header()?,
                            State::SegHeader => self.on_segment_header()?,
                            _ => {
                                self.hash_read = Some(self.buf);
                                self.state = State::Done;
                            }
                        }
                    }
                }
                State::SegData => {
                    self.checksum = chunk.iter().fold(self.checksum, |c, b| c ^ b);
                    if self.cap_len < self.cap_want {
                        let m = (self.cap_want - self.cap_len).min(n);
                        put(&mut self.cap, self.cap_len, chunk.get(..m).unwrap_or(&[]));
                        self.cap_len += m;
                        if self.cap_len == self.cap_want {
                            self.end_capture()?;
                        }
                    }
                    self.seg_remaining -= n as u32;
                    if self.seg_remaining == 0 {
                        self.end_segment()?;
                    }
                }
                State::Padding => {
                    self.pad_remaining -= n as u32;
                    if self.pad_remaining == 0 {
                        self.state = State::Checksum;
                    }
                }
                State::Checksum => {
                    self.checksum_read = chunk.first().copied().unwrap_or(0);
                    match self.sha.take() {
                        Some(sha) => {
                            self.hash_calc = Some(sha.finalize().into());
                            self.state = State::Hash;
                        }
                        None => self.state = State::Done,
                    }
                }
                State::Done => {}
            }
        }
        Ok(total - data.len())
    }
}

impl Default for ImageVerifier {
    fn default() -> Self {
        Self::new()
    }
}

fn round_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// Parse the first [`IMAGE_PREFIX_LEN`] bytes: header (magic checked) and, when the first
/// segment's data starts with [`APP_DESC_MAGIC`], the app descriptor.
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

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

/// What [`build_image`] should produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec<'a> {
    pub chip: Chip,
    pub project_name: &'a str,
    pub version: &'a str,
    pub secure_version: u32,
    pub time: &'a str,
    pub date: &'a str,
    pub idf_ver: &'a str,
    pub elf_sha256: [u8; 32],
    /// Header byte 2 (0 QIO, 1 QOUT, 2 DIO, 3 DOUT).
    pub flash_mode: u8,
    /// Size nibble 0..=7 (1MB..128MB), see [`flash_size_code_from_name`].
    pub flash_size_code: u8,
    /// Frequency nibble, see [`flash_freq_code_from_name`].
    pub flash_freq_code: u8,
    pub entry_addr: u32,
    /// Approximate size of the file; segment data grows to reach it (None = tiny image).
    pub total_size: Option<u32>,
    /// Number of segments, 1..=16. Segment 0 is DROM with the app descriptor.
    pub segments: u8,
    pub hash_appended: bool,
    pub min_chip_rev_full: u16,
    pub max_chip_rev_full: u16,
    /// Seed of the deterministic pseudo-random segment content.
    pub fill_seed: u32,
    /// MMU page size the flash-mapped segments are laid out for (a power of two the chip
    /// supports; default 64 KiB). With a smaller page, IROM segments are placed as a linker
    /// for that page places them, so the image is valid only with that page size.
    pub mmu_page_size: u32,
    /// Record the page size in `esp_app_desc_t.mmu_page_size` (log2), as ESP-IDF v5.4+ does;
    /// false leaves the field 0, as older ESP-IDF versions do.
    pub record_mmu_page_size: bool,
}

/// Default compile time/date/IDF version written into built descriptors.
const DEFAULT_TIME: &str = "00:00:00";
const DEFAULT_DATE: &str = "Jan  1 2025";
const DEFAULT_IDF_VER: &str = "v5.4.1";
/// Default header flash parameters: DIO, 4MB (idf-formats.md §3.2).
const DEFAULT_FLASH_MODE: u8 = 2;
const DEFAULT_FLASH_SIZE_CODE: u8 = 2;
/// Built RAM segments stay this small so they fit every chip's RAM ranges.
const BUILD_RAM_SEG_CAP: u32 = 8 * 1024;
/// Segment data lengths when no total size is asked for.
const TINY_SEG0_LEN: u32 = APP_DESC_SIZE as u32 + 64;
const TINY_RAM_LEN: u32 = 64;
const TINY_FLASH_LEN: u32 = 128;

impl<'a> ImageSpec<'a> {
    /// A 3-segment, hash-appended, DIO/4MB image with fixed time/date/IDF version.
    pub fn new(chip: Chip, project_name: &'a str, version: &'a str) -> Self {
        ImageSpec {
            chip,
            project_name,
            version,
            secure_version: 0,
            time: DEFAULT_TIME,
            date: DEFAULT_DATE,
            idf_ver: DEFAULT_IDF_VER,
            elf_sha256: [0; 32],
            flash_mode: DEFAULT_FLASH_MODE,
            flash_size_code: DEFAULT_FLASH_SIZE_CODE,
            flash_freq_code: 0,
            entry_addr: chip.builder_iram_base(),
            total_size: None,
            segments: 3,
            hash_appended: true,
            min_chip_rev_full: 0,
            max_chip_rev_full: CHIP_REV_UNSET,
            fill_seed: 1,
            mmu_page_size: DEFAULT_MMU_PAGE_SIZE,
            record_mmu_page_size: false,
        }
    }

    /// The app descriptor this spec puts at file offset 0x20.
    pub fn app_desc(&self) -> Result<AppDesc, ImageError> {
        Ok(AppDesc {
            secure_version: self.secure_version,
            version: cstr_field(self.version, "version")?,
            project_name: cstr_field(self.project_name, "project_name")?,
            time: cstr_field(self.time, "time")?,
            date: cstr_field(self.date, "date")?,
            idf_ver: cstr_field(self.idf_ver, "idf_ver")?,
            app_elf_sha256: self.elf_sha256,
            mmu_page_size: if self.record_mmu_page_size {
                self.mmu_page_size.trailing_zeros() as u8
            } else {
                0
            },
            ..AppDesc::default()
        })
    }

    fn header(&self) -> Result<ImageHeader, ImageError> {
        if self.flash_size_code > 0xF {
            return Err(ImageError::BadSpec {
                field: "flash_size_code",
                reason: "must be a nibble (0..=15)",
            });
        }
        if self.flash_freq_code > 0xF {
            return Err(ImageError::BadSpec {
                field: "flash_freq_code",
                reason: "must be a nibble (0..=15)",
            });
        }
        Ok(ImageHeader {
            magic: IMAGE_MAGIC,
            segment_count: self.segments,
            spi_mode: self.flash_mode,
            spi_speed_size: (self.flash_size_code << 4) | self.flash_freq_code,
            entry_addr: self.entry_addr,
            wp_pin: WP_PIN_DISABLED,
            spi_pin_drv: [0; 3],
            chip_id: self.chip.id(),
            min_chip_rev: 0,
            min_chip_rev_full: self.min_chip_rev_full,
            max_chip_rev_full: self.max_chip_rev_full,
            reserved: [0; 4],
            hash_appended: self.hash_appended as u8,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SegKind {
    Drom,
    Dram,
    Iram,
    Irom,
}

/// Segment kinds after segment 0, repeating (like an IDF app: DROM, DRAM, IRAM, IROM, ...).
const KIND_CYCLE: [SegKind; 3] = [SegKind::Dram, SegKind::Iram, SegKind::Irom];

fn seg_kind(index: usize) -> SegKind {
    if index == 0 {
        SegKind::Drom
    } else {
        KIND_CYCLE[(index - 1) % KIND_CYCLE.len()]
    }
}

/// Deterministic xorshift32 filler.
struct Filler(u32);

impl Filler {
    fn new(seed: u32, segment: usize) -> Self {
        let s = seed ^ (segment as u32).wrapping_add(1).wrapping_mul(0x9E37_79B9);
        Filler(if s == 0 { 0x1234_5678 } else { s })
    }
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(4) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            let b = x.to_le_bytes();
            let n = chunk.len();
            chunk.copy_from_slice(b.get(..n).unwrap_or(&[]));
        }
    }
}

/// Writes to the sink while hashing, XORing segment data and counting.
struct Emitter<'s, S: FnMut(&[u8])> {
    sink: &'s mut S,
    sha: Option<Sha256>,
    xor: u8,
    written: u64,
}

impl<S: FnMut(&[u8])> Emitter<'_, S> {
    fn raw(&mut self, b: &[u8]) {
        if let Some(sha) = self.sha.as_mut() {
            sha.update(b);
        }
        (self.sink)(b);
        self.written += b.len() as u64;
    }
    fn data(&mut self, b: &[u8]) {
        self.xor = b.iter().fold(self.xor, |c, x| c ^ x);
        self.raw(b);
    }
    fn filler(&mut self, filler: &mut Filler, mut len: u32) {
        let mut buf = [0u8; 64];
        while len > 0 {
            let n = (len as usize).min(buf.len());
            let chunk = &mut buf[..n];
            filler.fill(chunk);
            self.data(chunk);
            len -= n as u32;
        }
    }
    /// Zero padding and the checksum byte, then the hash if any. Returns bytes written.
    fn footer(mut self) -> u64 {
        let chk_at = round_up(self.written + 1, CHECKSUM_ALIGN) - 1;
        let pad = (chk_at - self.written) as usize;
        let zeros = [0u8; CHECKSUM_ALIGN as usize];
        self.raw(zeros.get(..pad).unwrap_or(&[]));
        let xor = self.xor;
        self.raw(&[xor]);
        if let Some(sha) = self.sha.take() {
            let digest: [u8; 32] = sha.finalize().into();
            (self.sink)(&digest);
            self.written += HASH_LEN as u64;
        }
        self.written
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct SegPlan {
    load: u32,
    len: u32,
}

fn plan_lengths(spec: &ImageSpec, n: usize) -> Result<[u32; MAX_SEGMENTS], ImageError> {
    let mut lens = [0u32; MAX_SEGMENTS];
    for (i, l) in lens.iter_mut().enumerate().take(n) {
        *l = match seg_kind(i) {
            SegKind::Drom => TINY_SEG0_LEN,
            SegKind::Dram | SegKind::Iram => TINY_RAM_LEN,
            SegKind::Irom => TINY_FLASH_LEN,
        };
    }
    let Some(target) = spec.total_size else {
        return Ok(lens);
    };
    let min_sum: u64 = lens.iter().map(|&l| l as u64).sum();
    let overhead = (HEADER_SIZE + n * SEGMENT_HEADER_SIZE + 1) as u64
        + if spec.hash_appended {
            HASH_LEN as u64
        } else {
            0
        };
    let data = (target as u64).saturating_sub(overhead) & !3;
    let mut extra = data.saturating_sub(min_sum);
    // RAM segments get a modest share, flash segments (0 and IROM ones) the rest.
    let ram_share = ((extra / n as u64) & !3).min(BUILD_RAM_SEG_CAP as u64);
    for (i, l) in lens.iter_mut().enumerate().take(n) {
        if matches!(seg_kind(i), SegKind::Dram | SegKind::Iram) {
            *l += ram_share as u32;
            extra -= ram_share;
        }
    }
    let flash_segs = (0..n)
        .filter(|&i| matches!(seg_kind(i), SegKind::Drom | SegKind::Irom))
        .count() as u64;
    let share = (extra / flash_segs) & !3;
    for (i, l) in lens.iter_mut().enumerate().take(n) {
        if matches!(seg_kind(i), SegKind::Drom | SegKind::Irom) {
            let add = if i == 0 {
                extra - share * (flash_segs - 1)
            } else {
                share
            };
            if *l as u64 + add >= MAX_SEGMENT_LEN as u64 {
                return Err(ImageError::BadSpec {
                    field: "total_size",
                    reason: "too large: a segment would reach 16 MiB",
                });
            }
            *l += add as u32;
        }
    }
    Ok(lens)
}

fn plan(spec: &ImageSpec) -> Result<[SegPlan; MAX_SEGMENTS], ImageError> {
    let n = spec.segments as usize;
    if n == 0 || n > MAX_SEGMENTS {
        return Err(ImageError::BadSpec {
            field: "segments",
            reason: "must be 1..=16",
        });
    }
    let lens = plan_lengths(spec, n)?;
    let chip = spec.chip;
    if !chip.mmu_page_size_supported(spec.mmu_page_size) {
        return Err(ImageError::BadSpec {
            field: "mmu_page_size",
            reason: "not an MMU page size this chip supports",
        });
    }
    let page = spec.mmu_page_size as u64;
    let mut plans = [SegPlan::default(); MAX_SEGMENTS];
    let mut file_pos = HEADER_SIZE as u64;
    let mut dram = chip.builder_dram_base();
    let mut iram = chip.builder_iram_base();
    let mut irom_page = chip.builder_irom_base() as u64;
    for i in 0..n {
        let len = lens[i];
        let data_off = file_pos + SEGMENT_HEADER_SIZE as u64;
        let load = match seg_kind(i) {
            // Segment 0 data sits at file offset 0x20: load at DROM base + 0x20 (MMU rule).
            SegKind::Drom => chip.drom_map().0 + APP_DESC_OFFSET as u32,
            SegKind::Dram => {
                let a = dram;
                dram = dram.wrapping_add(len);
                a
            }
            SegKind::Iram => {
                let a = iram;
                iram = iram.wrapping_add(len);
                a
            }
            // A fresh page, entered at the same in-page offset as the data's file offset.
            SegKind::Irom => {
                let a = irom_page + data_off % page;
                irom_page = round_up(a + len as u64, page);
                a as u32
            }
        };
        plans[i] = SegPlan { load, len };
        file_pos = data_off + len as u64;
    }
    Ok(plans)
}

/// Stream a valid app image for `spec` into `sink` (constant memory). Returns bytes written.
///
/// Layout: header; segment 0 = DROM at the chip's DROM base + 0x20 starting with the app
/// descriptor (file offset 0x20); then DRAM, IRAM, IROM, DRAM, ... segments of pseudo-random
/// content; zero padding; checksum; SHA-256 when `hash_appended`.
pub fn build_image(spec: &ImageSpec, sink: &mut impl FnMut(&[u8])) -> Result<u32, ImageError> {
    let header = spec.header()?;
    let desc = spec.app_desc()?;
    let plans = plan(spec)?;
    let mut e = Emitter {
        sink,
        sha: if spec.hash_appended {
            Some(Sha256::new())
        } else {
            None
        },
        xor: CHECKSUM_SEED,
        written: 0,
    };
    e.raw(&header.to_bytes());
    for (i, p) in plans.iter().enumerate().take(spec.segments as usize) {
        let mut sh = [0u8; SEGMENT_HEADER_SIZE];
        put(&mut sh, 0, &p.load.to_le_bytes());
        put(&mut sh, 4, &p.len.to_le_bytes());
        e.raw(&sh);
        let mut filler = Filler::new(spec.fill_seed, i);
        let mut len = p.len;
        if i == 0 {
            e.data(&desc.to_bytes());
            len -= APP_DESC_SIZE as u32;
        }
        e.filler(&mut filler, len);
    }
    let total = e.footer();
    u32::try_from(total).map_err(|_| ImageError::BadSpec {
        field: "total_size",
        reason: "image over 4 GiB",
    })
}

/// Bootloader descriptor fields written by [`build_bootloader`].
const BOOTLOADER_VERSION: u32 = 1;
const BOOTLOADER_IDF_VER: &str = "v5.4.1";
const BOOTLOADER_DATE_TIME: &str = "Jan  1 2025 00:00:00";
/// Segment sizes of the built bootloader: DRAM (descriptor + filler) and IRAM. The IRAM
/// segment stays below 80 bytes so that esptool (which takes the last DRAM-typed segment of
/// ≥ 80 bytes) still finds the descriptor on chips where IRAM and DRAM share addresses.
const BOOTLOADER_DRAM_LEN: u32 = 256;
const BOOTLOADER_IRAM_LEN: u32 = 64;

/// Stream a small "bootloader-like" image for `chip` (header with DIO, the chip's code-0
/// frequency and `flash_size_code`; a DRAM segment starting with an `esp_bootloader_desc_t`
/// at file offset 0x20; an IRAM segment; checksum; SHA-256). Returns bytes written.
pub fn build_bootloader(
    chip: Chip,
    flash_size_code: u8,
    sink: &mut impl FnMut(&[u8]),
) -> Result<u32, ImageError> {
    if flash_size_code > 0xF {
        return Err(ImageError::BadSpec {
            field: "flash_size_code",
            reason: "must be a nibble (0..=15)",
        });
    }
    let iram = chip.builder_iram_base();
    let header = ImageHeader {
        magic: IMAGE_MAGIC,
        segment_count: 2,
        spi_mode: DEFAULT_FLASH_MODE,
        spi_speed_size: flash_size_code << 4,
        entry_addr: iram,
        wp_pin: WP_PIN_DISABLED,
        chip_id: chip.id(),
        max_chip_rev_full: CHIP_REV_UNSET,
        hash_appended: 1,
        ..ImageHeader::default()
    };
    let desc = BootloaderDesc {
        magic_byte: BOOTLOADER_DESC_MAGIC,
        reserved: [0; 2],
        secure_version: 0,
        version: BOOTLOADER_VERSION,
        idf_ver: cstr_field(BOOTLOADER_IDF_VER, "idf_ver")?,
        date_time: cstr_field(BOOTLOADER_DATE_TIME, "date_time")?,
        reserved2: [0; 16],
    };
    let mut e = Emitter {
        sink,
        sha: Some(Sha256::new()),
        xor: CHECKSUM_SEED,
        written: 0,
    };
    e.raw(&header.to_bytes());
    let segs = [
        (chip.builder_dram_base(), BOOTLOADER_DRAM_LEN),
        (iram, BOOTLOADER_IRAM_LEN),
    ];
    for (i, (load, len)) in segs.into_iter().enumerate() {
        let mut sh = [0u8; SEGMENT_HEADER_SIZE];
        put(&mut sh, 0, &load.to_le_bytes());
        put(&mut sh, 4, &len.to_le_bytes());
        e.raw(&sh);
        let mut filler = Filler::new(chip.id() as u32, i);
        let mut rest = len;
        if i == 0 {
            e.data(&desc.to_bytes());
            rest -= BOOTLOADER_DESC_SIZE as u32;
        }
        e.filler(&mut filler, rest);
    }
    Ok(e.footer() as u32)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::format;
    use std::string::ToString;
    use std::vec::Vec;

    const VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors/esptool/"
    );

    fn vector(name: &str) -> Option<Vec<u8>> {
        let path = format!("{}{}", VECTORS, name);
        match std::fs::read(&path) {
            Ok(v) => Some(v),
            Err(_) => {
                std::eprintln!("SKIP: ../shared/vectors not found ({})", path);
                None
            }
        }
    }

    fn unhex(s: &str) -> [u8; 32] {
        let mut o = [0u8; 32];
        for (i, b) in o.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        o
    }

    /// Feed `data` in `chunk`-sized pieces, stopping at the first error (which `finish`
    /// then repeats).
    fn verify_chunked(data: &[u8], chunk: usize) -> ImageVerifier {
        let mut v = ImageVerifier::new();
        for c in data.chunks(chunk) {
            if v.feed(c).is_err() {
                break;
            }
        }
        v
    }

    struct App {
        project: &'static str,
        version: &'static str,
        time: &'static str,
        date: &'static str,
        idf: &'static str,
        elf_sha: &'static str,
    }

    struct Golden {
        file: &'static str,
        chip: Chip,
        entry: u32,
        flash: (&'static str, &'static str, &'static str), // size, freq, mode
        revs: (u8, u16, u16),                              // legacy min, min full, max full
        wp_pin: u8,
        /// (len, load, file offs, memory types)
        segs: &'static [(u32, u32, u32, &'static str)],
        checksum: u8,
        hash: Option<&'static str>,
        image_len: u32,
        app: Option<App>,
        /// (version, idf, date_time)
        boot: Option<(u32, &'static str, &'static str)>,
    }

    const BOOT_V2_SEGS: &[(u32, u32, u32, &str)] = &[
        (
            0x00004,
            0x3fff0030,
            0x18,
            "BYTE_ACCESSIBLE, DRAM, DIRAM_DRAM",
        ),
        (
            0x02498,
            0x3fff0034,
            0x24,
            "BYTE_ACCESSIBLE, DRAM, DIRAM_DRAM",
        ),
        (0x04028, 0x40078000, 0x24c4, "CACHE_APP"),
        (0x011e8, 0x40080400, 0x64f4, "IRAM"),
    ];
    const BOOT_V2_HASH: &str = "ae743beed340fd6ae6715299ec5d48b8282ef1f118707deb2a88fcf61c0816ef";

    const fn boot_v2(file: &'static str) -> Golden {
        Golden {
            file,
            chip: Chip::Esp32,
            entry: 0x400806f8,
            flash: ("2MB", "40m", "DIO"),
            revs: (3, 0, 0),
            wp_pin: 0xee,
            segs: BOOT_V2_SEGS,
            checksum: 0xfc,
            hash: Some(BOOT_V2_HASH),
            image_len: 30480,
            app: None,
            boot: None,
        }
    }

    const fn ram_hello(file: &'static str, chip: Chip, entry: u32, freq: &'static str) -> Golden {
        Golden {
            file,
            chip,
            entry,
            flash: ("1MB", freq, "QIO"),
            revs: (0, 0, 0),
            wp_pin: 0xee,
            segs: &[],
            checksum: 0,
            hash: None,
            image_len: 128,
            app: None,
            boot: None,
        }
    }

    /// Golden values: `esptool image-info FILE` (esptool v5.6.0), run by hand.
    fn goldens() -> Vec<Golden> {
        let mut g = std::vec![
            Golden {
                file: "bootloader_esp32.bin",
                chip: Chip::Esp32,
                entry: 0x4009816c,
                flash: ("2MB", "40m", "DIO"),
                revs: (0, 0, 0),
                wp_pin: 0x00,
                segs: &[
                    (0x00000, 0x3ffc0000, 0x18, "BYTE_ACCESSIBLE, DRAM"),
                    (0x00b3c, 0x3ffc0000, 0x20, "BYTE_ACCESSIBLE, DRAM"),
                    (0x01068, 0x40078000, 0xb64, "CACHE_APP"),
                    (0x002e4, 0x40098000, 0x1bd4, "IRAM"),
                ],
                checksum: 0x83,
                hash: None,
                image_len: 7888,
                app: None,
                boot: None,
            },
            Golden {
                file: "bootloader_esp32_v5_2.bin",
                chip: Chip::Esp32,
                entry: 0x40080650,
                flash: ("2MB", "40m", "DOUT"),
                revs: (0, 0, 399),
                wp_pin: 0xee,
                segs: &[
                    (
                        0x01bdc,
                        0x3fff0030,
                        0x18,
                        "BYTE_ACCESSIBLE, DRAM, DIRAM_DRAM"
                    ),
                    (0x03d20, 0x40078000, 0x1bfc, "CACHE_APP"),
                    (0x00004, 0x40080400, 0x5924, "IRAM"),
                    (0x00f2c, 0x40080404, 0x5930, "IRAM"),
                ],
                checksum: 0xbe,
                hash: Some("10cec8cf739f34fb0473993b3cb0e3bd78402d6a7cc5b1cb5e1add2b1105f8ac"),
                image_len: 26768,
                app: None,
                boot: Some((1, "v5.2-dev-254-g1950b15", "Apr 25 2023 00:13:32")),
            },
            Golden {
                file: "bootloader_esp32c3.bin",
                chip: Chip::Esp32c3,
                entry: 0x403c0000,
                flash: ("2MB", "40m", "DIO"),
                revs: (0, 0, 0),
                wp_pin: 0xee,
                segs: &[
                    (0x00014, 0x3fcd6100, 0x18, "DRAM, BYTE_ACCESSIBLE"),
                    (0x01864, 0x3fcd6114, 0x34, "DRAM, BYTE_ACCESSIBLE"),
                    (0x00de4, 0x403c0000, 0x18a0, "IRAM"),
                    (0x01e8c, 0x403c2000, 0x268c, "IRAM"),
                ],
                checksum: 0x77,
                hash: Some("4faeab1bd3fd6a7d4adfa0fd38f41bfc67a8c3c0a9d6d882b65580da2e5e6347"),
                image_len: 17744,
                app: None,
                boot: None,
            },
            boot_v2("bootloader_multi_signed_v2_rsa.bin"),
            boot_v2("bootloader_signed_v2_ecdsa256.bin"),
            boot_v2("bootloader_signed_v2_ecdsa384.bin"),
            boot_v2("bootloader_signed_v2_rsa.bin"),
            boot_v2("bootloader_unsigned_v2.bin"),
            Golden {
                file: "esp32c3_header_min_rev.bin",
                chip: Chip::Esp32c3,
                entry: 0xdeadbeef,
                flash: ("2MB", "40m", "DIO"),
                revs: (0, 255, 65535),
                wp_pin: 0x00,
                segs: &[(0, 0xdeadbeef, 0x18, "")],
                checksum: 0xef,
                hash: None,
                image_len: 48,
                app: None,
                boot: None,
            },
            Golden {
                file: "esp32s3_header.bin",
                chip: Chip::Esp32s3,
                entry: 0xdeadbeef,
                flash: ("2MB", "40m", "DIO"),
                revs: (10, 0, 0),
                wp_pin: 0x00,
                segs: &[(0, 0xdeadbeef, 0x18, "")],
                checksum: 0xef,
                hash: None,
                image_len: 48,
                app: None,
                boot: None,
            },
            Golden {
                file: "esp_idf_blink_esp32s2.bin",
                chip: Chip::Esp32s2,
                entry: 0x40022f84,
                flash: ("2MB", "80m", "DIO"),
                revs: (0, 0, 0),
                wp_pin: 0xee,
                segs: &[
                    (0x08c18, 0x3f000020, 0x18, "DROM"),
                    (
                        0x0204c,
                        0x3ffbde90,
                        0x8c38,
                        "BYTE_ACCESSIBLE, MEM_INTERNAL, DRAM"
                    ),
                    (0x05384, 0x40022000, 0xac8c, "MEM_INTERNAL, IRAM"),
                    (0x15ce8, 0x40080020, 0x10018, "IROM"),
                    (0x06b0c, 0x40027384, 0x25d08, "MEM_INTERNAL, IRAM"),
                    (0x00010, 0x50000000, 0x2c81c, "RTC_DATA"),
                ],
                checksum: 0x18,
                hash: Some("10f48f4a71a48cc4c917d70d13bf717b1bc7f3187b3d564b00192f7e381531b7"),
                image_len: 182368,
                app: Some(App {
                    project: "blink",
                    version: "qa-test-v5.0-20220830-4-g4532e6",
                    time: "19:46:07",
                    date: "Sep 13 2022",
                    idf: "v5.0-beta1-427-g4532e6e0b2-dirt",
                    elf_sha: "3059e6b55a965865febd28fa9f6028ad5cd0dab311febb0a3ea79eaa223ac2b0",
                }),
                boot: None,
            },
            Golden {
                file: "hello-world-signed.bin",
                chip: Chip::Esp32,
                entry: 0x40080c54,
                flash: ("2MB", "40m", "DIO"),
                revs: (0, 0, 0),
                wp_pin: 0xee,
                segs: &[
                    (0x0572c, 0x3f400020, 0x18, "DROM"),
                    (0x015dc, 0x3ffb0000, 0x574c, "BYTE_ACCESSIBLE, DRAM"),
                    (0x00400, 0x40080000, 0x6d30, "IRAM"),
                    (0x065d0, 0x40080400, 0x7138, "IRAM"),
                    (0x028f8, 0x00000000, 0xd710, "PADDING"),
                    (0x11fe4, 0x400d0018, 0x10010, "IROM"),
                    (0x0df7c, 0x00000000, 0x21ffc, "PADDING"),
                ],
                checksum: 0x30,
                hash: Some("06a1d6eb2c280ca64b44b8c487d2d856dc8e5acf6e08060c61efbf086ad795d2"),
                image_len: 0x2ffb0,
                app: Some(App {
                    project: "hello-world",
                    version: "v3.3-beta3-21-g0706bd0d1-dirty",
                    time: "14:43:38",
                    date: "Jun 19 2019",
                    idf: "v3.3-beta3-21-g0706bd0d1-dirty",
                    elf_sha: "f4611958b4281922f26ed2ba71db7ebf581023781965ab72915a1f93fa5c545c",
                }),
                boot: None,
            },
            Golden {
                segs: &[
                    (0x10, 0x3ffc0000, 0x18, "BYTE_ACCESSIBLE, DRAM"),
                    (0x18, 0x4008c000, 0x30, "IRAM")
                ],
                checksum: 0x14,
                hash: Some("8ff3e6430a3ea49ec072aff7b73fe7b881ff47b8f619936385938d4bfb3a9ba9"),
                ..ram_hello("helloworld-esp32.bin", Chip::Esp32, 0x4008c008, "40m")
            },
            Golden {
                segs: &[
                    (0x10, 0x3fcdfd00, 0x18, "DRAM, BYTE_ACCESSIBLE"),
                    (0x18, 0x403dfd00, 0x30, "IRAM")
                ],
                checksum: 0x06,
                hash: Some("8af6ed42836c5a76a78771d6edf61170987f52cc95b54d4542fb487e694c08ad"),
                revs: (0, 0, 65535),
                ..ram_hello("helloworld-esp32c3.bin", Chip::Esp32c3, 0x403dfd00, "40m")
            },
            Golden {
                segs: &[
                    (0x18, 0x40860000, 0x18, "DRAM, BYTE_ACCESSIBLE, IRAM"),
                    (0x10, 0x40870000, 0x38, "DRAM, BYTE_ACCESSIBLE, IRAM"),
                ],
                checksum: 0xea,
                hash: Some("2b89e26ae8eca46be191bc16d54bc06f7949827563062e9932fbb15e31f58f80"),
                revs: (0, 0, 65535),
                ..ram_hello("helloworld-esp32c6.bin", Chip::Esp32c6, 0x40860000, "80m")
            },
            Golden {
                segs: &[
                    (
                        0x10,
                        0x3fca0000,
                        0x18,
                        "BYTE_ACCESSIBLE, MEM_INTERNAL, DRAM"
                    ),
                    (0x18, 0x40380000, 0x30, "MEM_INTERNAL, IRAM"),
                ],
                checksum: 0xde,
                hash: Some("a5f786f08b146b1ea320cd0306a03d9daf0350c276ec20a10e03bbe8cafa668d"),
                revs: (0, 0, 65535),
                ..ram_hello("helloworld-esp32s3.bin", Chip::Esp32s3, 0x40380008, "40m")
            },
        ];
        g.sort_by_key(|x| x.file);
        g
    }

    fn check_golden(g: &Golden, data: &[u8], s: &ImageSummary) {
        let f = g.file;
        assert_eq!(s.chip, Some(g.chip), "{f}");
        assert_eq!(s.header.entry_addr, g.entry, "{f}");
        assert_eq!(s.header.flash_size_name(), Some(g.flash.0), "{f}");
        assert_eq!(s.header.flash_freq_name(g.chip), Some(g.flash.1), "{f}");
        assert_eq!(s.header.flash_mode_name(), Some(g.flash.2), "{f}");
        assert_eq!(
            (
                s.header.min_chip_rev,
                s.header.min_chip_rev_full,
                s.header.max_chip_rev_full
            ),
            g.revs,
            "{f}"
        );
        assert_eq!(s.header.wp_pin, g.wp_pin, "{f}");
        assert_eq!(s.segments().len(), g.segs.len(), "{f}");
        for (i, (seg, want)) in s.segments().iter().zip(g.segs).enumerate() {
            assert_eq!(
                (seg.data_len, seg.load_addr, seg.file_offset),
                (want.0, want.1, want.2),
                "{f} seg {i}"
            );
            assert_eq!(
                g.chip.memory_types(seg.load_addr).to_string(),
                want.3,
                "{f} seg {i} types"
            );
        }
        assert_eq!(s.checksum_read, g.checksum, "{f}");
        assert!(s.checksum_valid(), "{f}");
        match g.hash {
            Some(h) => {
                assert_eq!(s.hash_calc, Some(unhex(h)), "{f}");
                assert_eq!(s.hash_valid(), Some(true), "{f}");
            }
            None => assert_eq!(s.hash_valid(), None, "{f}"),
        }
        assert_eq!(s.image_len, g.image_len, "{f}");
        match &g.app {
            Some(a) => {
                let d = s.app_desc.as_ref().expect(f);
                assert_eq!(d.project_name_str(), a.project, "{f}");
                assert_eq!(d.version_str(), a.version, "{f}");
                assert_eq!(d.time_str(), a.time, "{f}");
                assert_eq!(d.date_str(), a.date, "{f}");
                assert_eq!(d.idf_ver_str(), a.idf, "{f}");
                assert_eq!(d.app_elf_sha256, unhex(a.elf_sha), "{f}");
                assert_eq!(
                    (
                        d.secure_version,
                        d.min_efuse_blk_rev_full,
                        d.max_efuse_blk_rev_full
                    ),
                    (0, 0, 0)
                );
                assert_eq!(s.loader_app_desc.as_ref(), Some(d), "{f}");
                assert_eq!(
                    &d.to_bytes()[..],
                    &data[0x20..0x120],
                    "{f}: desc round trip"
                );
            }
            None => assert_eq!(s.app_desc, None, "{f}"),
        }
        match g.boot {
            Some((ver, idf, dt)) => {
                let b = s.bootloader_desc.as_ref().expect(f);
                assert_eq!(
                    (b.version, b.idf_ver_str(), b.date_time_str()),
                    (ver, idf, dt),
                    "{f}"
                );
                assert_eq!(
                    &b.to_bytes()[..],
                    &data[0x20..0x70],
                    "{f}: bootloader desc round trip"
                );
            }
            None => assert_eq!(s.bootloader_desc, None, "{f}"),
        }
        assert_eq!(
            &s.header.to_bytes()[..],
            &data[..24],
            "{f}: header round trip"
        );
    }

    #[test]
    fn every_esptool_vector_verifies_like_esptool_image_info() {
        let all = goldens();
        // Every image file of the folder is in the table (no silent omissions).
        let Ok(dir) = std::fs::read_dir(VECTORS) else {
            std::eprintln!("SKIP: ../shared/vectors not found");
            return;
        };
        let mut names: Vec<_> = dir
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".bin") && n != "partitions_singleapp.bin")
            .collect();
        names.sort();
        let table: Vec<_> = all.iter().map(|g| g.file).collect();
        assert_eq!(names, table);
        for g in &all {
            let data = vector(g.file).unwrap();
            for chunk in [1usize, 7, 289, 4096] {
                let v = verify_chunked(&data, chunk);
                assert!(v.is_complete(), "{} chunk {}", g.file, chunk);
                assert_eq!(v.consumed(), g.image_len as u64, "{}", g.file);
                assert_eq!(
                    v.trailing(),
                    data.len() as u64 - g.image_len as u64,
                    "{}",
                    g.file
                );
                let s = v.finish().unwrap_or_else(|e| panic!("{}: {}", g.file, e));
                check_golden(g, &data, &s);
            }
        }
    }

    #[test]
    fn blink_s2_yields_project_version_and_six_segments() {
        let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
            return;
        };
        let mut v = ImageVerifier::new();
        v.set_expected_chip(Some(Chip::Esp32s2));
        v.set_app_rules(true);
        v.set_size_limit(Some(0x10_0000));
        v.set_flash_offset(0x1_0000);
        // Desc becomes known as soon as its bytes have been fed.
        v.feed(&data[..0x20 + 255]).unwrap();
        assert!(v.app_desc().is_none());
        assert_eq!(v.header().unwrap().segment_count, 6);
        v.feed(&data[0x20 + 255..0x200]).unwrap();
        assert_eq!(v.app_desc().unwrap().project_name_str(), "blink");
        assert_eq!(v.image_len(), None);
        v.feed(&data[0x200..]).unwrap();
        assert_eq!(v.image_len(), Some(182368));
        let s = v.finish().unwrap();
        assert_eq!(s.segment_count, 6);
        let d = s.app_desc.unwrap();
        assert_eq!(d.project_name_str(), "blink");
        assert_eq!(d.version_str(), "qa-test-v5.0-20220830-4-g4532e6");
    }

    #[test]
    fn signed_hello_world_verifies_with_trailing_signature() {
        let Some(data) = vector("hello-world-signed.bin") else {
            return;
        };
        let mut v = ImageVerifier::new();
        let used = v.feed_some(&data).unwrap();
        assert_eq!(used, 0x2ffb0);
        assert_eq!(v.trailing(), 80); // 68-byte SBv1 block + 12 bytes of padding (§3.9)
        v.feed(&[1, 2, 3]).unwrap();
        assert_eq!(v.trailing(), 83);
        assert_eq!(
            v.finish().unwrap().app_desc.unwrap().project_name_str(),
            "hello-world"
        );
    }

    #[test]
    fn header_only_vectors_are_complete_empty_segment_images_but_not_apps() {
        // esptool says these 48-byte files are whole images: 1 empty segment, checksum 0xef
        // valid. Cut short they give a clean truncation error; as apps they are rejected.
        for name in ["esp32c3_header_min_rev.bin", "esp32s3_header.bin"] {
            let Some(data) = vector(name) else { return };
            assert!(verify_chunked(&data, 5).finish().is_ok());
            let mut v = ImageVerifier::new();
            v.feed(&data[..40]).unwrap();
            let e = v.finish().unwrap_err();
            assert_eq!(
                e,
                ImageError::Truncated {
                    offset: 40,
                    part: ImagePart::Padding,
                    missing: 8
                }
            );
            assert_eq!(
                e.to_string(),
                "image truncated at offset 40 while reading the padding before the checksum (expected 8 more bytes)"
            );
            let mut v = ImageVerifier::new();
            v.feed(&data[..30]).unwrap();
            assert_eq!(
                v.finish().unwrap_err(),
                ImageError::Truncated {
                    offset: 30,
                    part: ImagePart::SegmentHeader(0),
                    missing: 2
                }
            );
            let mut v = ImageVerifier::new();
            v.set_app_rules(true);
            assert_eq!(
                v.feed(&data).unwrap_err(),
                ImageError::AppSegmentTooShort { len: 0 }
            );
            assert!(matches!(
                parse_prefix(&data),
                Err(ImageError::TooShort {
                    needed: 289,
                    found: 48,
                    ..
                })
            ));
        }
    }

    #[test]
    fn truncated_blink_names_segment_and_missing_bytes() {
        let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
            return;
        };
        let e = verify_chunked(&data[..100_000], 4096).finish().unwrap_err();
        assert_eq!(
            e.to_string(),
            "image truncated at offset 100000 while reading segment 3 data (expected 54888 more bytes)"
        );
        let e = verify_chunked(&data[..10], 3).finish().unwrap_err();
        assert_eq!(
            e,
            ImageError::Truncated {
                offset: 10,
                part: ImagePart::Header,
                missing: 14
            }
        );
        let e = verify_chunked(&data[..data.len() - 5], 3)
            .finish()
            .unwrap_err();
        assert_eq!(
            e,
            ImageError::Truncated {
                offset: 182363,
                part: ImagePart::Hash,
                missing: 5
            }
        );
        assert!(ImageVerifier::new().finish().is_err());
        // Every cut point gives a truncation error, never a panic or a false success.
        for cut in (0..data.len()).step_by(997).chain([182335, 182336]) {
            let e = verify_chunked(&data[..cut], 1000).finish().unwrap_err();
            assert!(
                matches!(e, ImageError::Truncated { offset, .. } if offset == cut as u64),
                "{cut}: {e}"
            );
        }
    }

    #[test]
    fn flipped_bytes_fail_checksum_or_hash_like_the_loader() {
        let Some(mut data) = vector("esp_idf_blink_esp32s2.bin") else {
            return;
        };
        // One flipped data byte: the XOR checksum catches it first (as in image_load()).
        data[90_000] ^= 0x01;
        let v = verify_chunked(&data, 4096);
        let e = v.finish().unwrap_err();
        assert_eq!(
            e,
            ImageError::ChecksumMismatch {
                calculated: 0x19,
                read: 0x18
            }
        );
        assert_eq!(e.to_string(), "Checksum failed. Calculated 0x19 read 0x18");
        assert_eq!(v.summary().unwrap().hash_valid(), Some(false));
        // Two flips that cancel in the XOR: only the SHA-256 sees them.
        data[90_001] ^= 0x01;
        let e = verify_chunked(&data, 4096).finish().unwrap_err();
        assert!(matches!(e, ImageError::HashMismatch { .. }));
        assert!(e
            .to_string()
            .starts_with("Image hash failed - image is corrupt"));
        // A flipped padding byte (not in the checksum, inside the hash).
        let Some(mut data) = vector("esp_idf_blink_esp32s2.bin") else {
            return;
        };
        data[182330] ^= 0x80;
        assert!(matches!(
            verify_chunked(&data, 7).finish(),
            Err(ImageError::HashMismatch { .. })
        ));
    }

    #[test]
    fn bad_magic_is_reported_at_the_first_byte() {
        let Some(data) = vector("partitions_singleapp.bin") else {
            return;
        };
        let mut v = ImageVerifier::new();
        let e = v.feed(&data[..1]).unwrap_err();
        assert_eq!(e, ImageError::BadMagic { at: 0, found: 0xaa });
        assert_eq!(v.feed(&data[1..]).unwrap_err(), e, "errors are sticky");
        assert_eq!(v.finish().unwrap_err(), e);
        assert_eq!(
            parse_prefix(&[0xffu8; 300]).unwrap_err(),
            ImageError::BadMagic { at: 0, found: 0xff }
        );
        assert!(ImageHeader::parse(&data).is_err());
    }

    #[test]
    fn header_rules_segment_count_hash_flag_and_chip() {
        let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
            return;
        };
        let mut d = data.clone();
        d[1] = 17;
        let e = verify_chunked(&d, 289).finish().unwrap_err();
        assert_eq!(e, ImageError::TooManySegments { at: 0, count: 17 });
        assert_eq!(
            e.to_string(),
            "image at 0x0 segment count 17 exceeds max 16"
        );
        let mut d = data.clone();
        d[23] = 2;
        assert_eq!(
            verify_chunked(&d, 289).finish().unwrap_err(),
            ImageError::BadHashAppended { found: 2 }
        );
        assert_eq!(
            parse_prefix(&d).unwrap_err(),
            ImageError::BadHashAppended { found: 2 }
        );
        let mut v = ImageVerifier::new();
        v.set_expected_chip(Some(Chip::Esp32c3));
        let e = v.feed(&data).unwrap_err();
        assert_eq!(
            e,
            ImageError::ChipMismatch {
                expected: 5,
                found: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "mismatch chip ID, expected 5 (ESP32-C3), found 2 (ESP32-S2)"
        );
    }

    #[test]
    fn segment_rules_length_and_mmu_alignment() {
        let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
            return;
        };
        // Segment 1 length 0x204c -> 0x204d (not a multiple of 4).
        let mut d = data.clone();
        d[0x8c38 + 4] = 0x4d;
        let e = verify_chunked(&d, 4096).finish().unwrap_err();
        assert_eq!(
            e,
            ImageError::SegmentLength {
                index: 1,
                offset: 0x8c38,
                len: 0x204d
            }
        );
        // Segment 1 length >= 16 MiB.
        let mut d = data.clone();
        d[0x8c38 + 7] = 0x01;
        assert!(matches!(
            verify_chunked(&d, 4096).finish(),
            Err(ImageError::SegmentLength { index: 1, .. })
        ));
        // IROM segment 3 load address moved by 4: data no longer matches its page offset.
        let mut d = data.clone();
        d[0x10018] = 0x24;
        let e = verify_chunked(&d, 4096).finish().unwrap_err();
        assert_eq!(
            e,
            ImageError::SegmentAlignment {
                index: 3,
                load_addr: 0x40080024,
                data_addr: 0x10020,
                page: 0x10000
            }
        );
        assert!(e
            .to_string()
            .starts_with("Segment 3 load address 0x40080024, doesn't match data 0x00010020"));
        // The same image at a flash address that is not 64 KiB aligned: segment 0 fails.
        let mut v = ImageVerifier::new();
        v.set_flash_offset(0x1000);
        assert!(matches!(
            v.feed(&data),
            Err(ImageError::SegmentAlignment { index: 0, .. })
        ));
    }

    #[test]
    fn size_limit_fails_as_soon_as_known() {
        let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
            return;
        };
        let mut v = ImageVerifier::new();
        v.set_size_limit(Some(0x20000));
        // Segment 3 (header at 0x10018, 0x15ce8 bytes) alone pushes it past 128 KiB.
        assert!(v.feed(&data[..0x10018]).is_ok());
        let e = v.feed(&data[0x10018..0x10020]).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::DoesNotFit {
                    partition_len: 0x20000,
                    at_least: true,
                    ..
                }
            ),
            "{e}"
        );
        let mut v = ImageVerifier::new();
        v.set_size_limit(Some(182367));
        let e = v.feed(&data).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Image length 182368 doesn't fit in partition length 182367"
        );
        let mut v = ImageVerifier::new();
        v.set_size_limit(Some(182368));
        v.feed(&data).unwrap();
        assert!(v.finish().is_ok());
    }

    #[test]
    fn parse_prefix_reads_header_and_desc() {
        let Some(data) = vector("esp_idf_blink_esp32s2.bin") else {
            return;
        };
        let (h, d) = parse_prefix(&data[..IMAGE_PREFIX_LEN]).unwrap();
        assert_eq!(
            (h.chip(), h.segment_count, h.hash_appended),
            (Some(Chip::Esp32s2), 6, 1)
        );
        assert_eq!(d.unwrap().version_str(), "qa-test-v5.0-20220830-4-g4532e6");
        assert!(matches!(
            parse_prefix(&data[..288]),
            Err(ImageError::TooShort { .. })
        ));
        assert!(matches!(
            parse_prefix(&[]),
            Err(ImageError::TooShort { found: 0, .. })
        ));
        // No desc magic at 0x20: header only.
        let Some(boot) = vector("bootloader_esp32c3.bin") else {
            return;
        };
        let (h, d) = parse_prefix(&boot).unwrap();
        assert_eq!((h.chip(), d), (Some(Chip::Esp32c3), None));
    }

    #[test]
    fn header_and_desc_round_trip_every_byte() {
        let mut raw = [0u8; 256];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        raw[..4].copy_from_slice(&APP_DESC_MAGIC.to_le_bytes());
        let d = AppDesc::parse(&raw).unwrap();
        assert_eq!(d.to_bytes(), raw);
        raw[0] = 0;
        assert!(matches!(
            AppDesc::parse(&raw),
            Err(ImageError::BadAppDescMagic { .. })
        ));
        assert!(matches!(
            AppDesc::parse(&raw[..255]),
            Err(ImageError::TooShort { .. })
        ));
        let mut h = [0u8; 24];
        for (i, b) in h.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(91).wrapping_add(3);
        }
        h[0] = IMAGE_MAGIC;
        assert_eq!(ImageHeader::parse(&h).unwrap().to_bytes(), h);
        let mut b = [0x5au8; 80];
        b[0] = BOOTLOADER_DESC_MAGIC;
        assert_eq!(BootloaderDesc::parse(&b).unwrap().to_bytes(), b);
    }

    #[test]
    fn flash_field_names_follow_esptool_maps() {
        let h = ImageHeader {
            spi_mode: 2,
            spi_speed_size: 0x1f,
            ..ImageHeader::default()
        };
        assert_eq!(h.flash_mode_name(), Some("DIO"));
        assert_eq!(h.flash_size_name(), Some("2MB"));
        assert_eq!(h.flash_size_bytes(), Some(2 << 20));
        assert_eq!(h.flash_freq_name(Chip::Esp32s2), Some("80m"));
        assert_eq!(h.flash_freq_name(Chip::Esp32c2), Some("60m"));
        assert_eq!(h.flash_freq_name(Chip::Esp32h2), Some("48m"));
        assert_eq!(h.flash_freq_name(Chip::Esp32c6), None);
        let h0 = ImageHeader {
            spi_mode: 4,
            spi_speed_size: 0x80,
            ..ImageHeader::default()
        };
        assert_eq!(h0.flash_freq_name(Chip::Esp32c6), Some("80m")); // first match wins
        assert_eq!((h0.flash_mode_name(), h0.flash_size_name()), (None, None));
        assert_eq!(flash_mode_from_name("dout"), Some(3));
        assert_eq!(flash_size_code_from_name("16mb"), Some(4));
        assert_eq!(flash_freq_code_from_name(Chip::Esp32c6, "40m"), Some(0));
        assert_eq!(flash_freq_code_from_name(Chip::Esp32, "26m"), Some(1));
        assert_eq!(flash_freq_code_from_name(Chip::Esp32, "48m"), None);
        for c in Chip::ALL {
            for (name, code) in c.flash_freqs() {
                assert_eq!(flash_freq_code_from_name(c, name), Some(*code));
            }
        }
    }

    fn build(spec: &ImageSpec) -> Vec<u8> {
        let mut out = Vec::new();
        let n = build_image(spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
        assert_eq!(n as usize, out.len());
        out
    }

    #[test]
    fn built_images_verify_for_every_chip_segment_count_and_size() {
        let sizes = [None, Some(1000), Some(20_000), Some(70_000), Some(300_000)];
        let chunks = [1usize, 7, 289, 4096];
        let mut case = 0usize;
        for chip in Chip::ALL {
            for segs in 1..=6u8 {
                case += 1;
                let size = sizes[case % sizes.len()];
                let mut spec = ImageSpec::new(chip, "proj", "v1.2.3");
                spec.segments = segs;
                spec.total_size = size;
                spec.hash_appended = !matches!(case % 3, 0);
                spec.fill_seed = case as u32;
                spec.secure_version = 7;
                let img = build(&spec);
                if let Some(t) = size {
                    assert!(
                        img.len() as u32 >= t && img.len() as u32 <= t + 64 || t < 2000,
                        "{chip} {segs} {t} {}",
                        img.len()
                    );
                }
                let chunk = if img.len() > 100_000 {
                    4096
                } else {
                    chunks[case % chunks.len()]
                };
                let mut v = ImageVerifier::new();
                v.set_expected_chip(Some(chip));
                v.set_app_rules(true);
                v.set_flash_offset(0x11_0000);
                v.set_size_limit(Some(img.len() as u32));
                for c in img.chunks(chunk) {
                    v.feed(c).unwrap_or_else(|e| panic!("{chip} {segs}: {e}"));
                }
                assert_eq!(v.trailing(), 0);
                let s = v.finish().unwrap_or_else(|e| panic!("{chip} {segs}: {e}"));
                assert_eq!(s.image_len as usize, img.len());
                assert_eq!(s.segment_count, segs as usize);
                assert_eq!(
                    s.hash_valid(),
                    if spec.hash_appended { Some(true) } else { None }
                );
                let d = s.app_desc.expect("esptool-rule desc");
                assert_eq!(Some(d), s.loader_app_desc);
                assert_eq!(
                    (d.project_name_str(), d.version_str(), d.secure_version),
                    ("proj", "v1.2.3", 7)
                );
                assert!(
                    chip.memory_types(s.segments[0].load_addr)
                        .contains(MemType::Drom),
                    "{chip}"
                );
                for seg in s.segments() {
                    assert!(
                        !chip.memory_types(seg.load_addr).is_empty(),
                        "{chip} {:x}",
                        seg.load_addr
                    );
                }
            }
        }
    }

    #[test]
    fn built_image_is_deterministic_and_seeded() {
        let mut spec = ImageSpec::new(Chip::Esp32c3, "a", "b");
        spec.total_size = Some(5000);
        spec.segments = 4;
        let a = build(&spec);
        assert_eq!(a, build(&spec));
        spec.fill_seed = 99;
        let b = build(&spec);
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
        spec.version = "0123456789012345678901234567890123";
        assert!(matches!(
            build_image(&spec, &mut |_| {}),
            Err(ImageError::BadSpec {
                field: "version",
                ..
            })
        ));
        spec.version = "ok";
        spec.segments = 17;
        assert!(matches!(
            build_image(&spec, &mut |_| {}),
            Err(ImageError::BadSpec {
                field: "segments",
                ..
            })
        ));
        spec.segments = 0;
        assert!(build_image(&spec, &mut |_| {}).is_err());
    }

    #[test]
    fn built_bootloaders_verify_and_carry_a_bootloader_desc() {
        for chip in Chip::ALL {
            let mut out = Vec::new();
            let n = build_bootloader(chip, 3, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
            assert_eq!(n as usize, out.len());
            let s = verify_chunked(&out, 13).finish().unwrap();
            assert_eq!(s.chip, Some(chip));
            assert_eq!(s.header.flash_size_name(), Some("8MB"));
            assert_eq!(s.app_desc, None);
            let b = s.bootloader_desc.expect("bootloader desc");
            assert_eq!((b.version, b.idf_ver_str()), (1, "v5.4.1"));
            assert!(out.len() < 0x6000);
        }
    }

    #[test]
    fn mutated_images_never_panic() {
        let mut spec = ImageSpec::new(Chip::Esp32s3, "fuzz", "1");
        spec.segments = 5;
        let img = build(&spec);
        let mut x: u32 = 0x1234_5678;
        for _ in 0..400 {
            let mut d = img.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = (x as usize) % d.len();
                d[i] = (x >> 8) as u8;
            }
            let mut v = ImageVerifier::new();
            v.set_app_rules(true);
            for c in d.chunks(1 + (x as usize % 50)) {
                if v.feed(c).is_err() {
                    break;
                }
            }
            let _ = v.finish();
            let _ = parse_prefix(&d);
        }
    }

    #[test]
    fn flash_params_rewrite_the_header_and_the_hash_of_valid_images_only() {
        extern crate std;
        use std::vec::Vec;
        let mut bl = Vec::new();
        build_bootloader(Chip::Esp32c3, 1, &mut |b: &[u8]| bl.extend_from_slice(b)).unwrap();
        let mut img = bl.clone();
        assert!(set_image_flash_params(
            &mut img,
            Chip::Esp32c3,
            Some(0),
            Some(2),
            Some(0xF)
        ));
        assert_eq!((img[2], img[3]), (0, 0x2F));
        assert_eq!(img.len(), bl.len());
        let mut v = ImageVerifier::new();
        v.feed(&img).unwrap();
        v.finish().expect("the hash was recomputed");
        // None keeps a field.
        let mut img2 = bl.clone();
        assert!(set_image_flash_params(
            &mut img2,
            Chip::Esp32c3,
            None,
            Some(3),
            None
        ));
        assert_eq!((img2[2], img2[3]), (bl[2], 0x30 | (bl[3] & 0x0F)));
        // Not a valid image for the chip (wrong chip, corrupt): untouched.
        let mut other = bl.clone();
        assert!(!set_image_flash_params(
            &mut other,
            Chip::Esp32s3,
            Some(0),
            None,
            None
        ));
        assert!(other == bl);
        let mut bad = bl.clone();
        let n = bad.len();
        bad[n - 40] ^= 1;
        let before = bad.clone();
        assert!(!set_image_flash_params(
            &mut bad,
            Chip::Esp32c3,
            Some(0),
            None,
            None
        ));
        assert!(bad == before);
    }

    // ---- verify_flash over a tiny in-memory NOR flash ----

    use crate::testutil::RamFlash;

    #[test]
    fn verify_flash_checks_magic_chip_fit_and_content() {
        use crate::flash::Region;
        let mut spec = ImageSpec::new(Chip::Esp32c3, "app", "2.0");
        spec.total_size = Some(40_000);
        spec.segments = 6;
        let img = build(&spec);
        let mut flash = RamFlash::<1>::new(0x40000);
        flash.data[0x10000..0x10000 + img.len()].copy_from_slice(&img);
        let slot = Region::new(0x10000, 0x10000);
        let s = verify_flash(&mut flash, slot, Some(Chip::Esp32c3)).unwrap();
        assert_eq!(s.app_desc.unwrap().version_str(), "2.0");
        assert!(verify_flash(&mut flash, slot, None).is_ok());
        let e = verify_flash(&mut flash, slot, Some(Chip::Esp32s3)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mismatch chip ID, expected 9 (ESP32-S3), found 5 (ESP32-C3)"
        );
        let e = verify_flash(&mut flash, Region::new(0x20000, 0x10000), None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("image at 0x20000 has invalid magic byte (nothing flashed here?)"),
            "{e}"
        );
        let e = verify_flash(&mut flash, Region::new(0x10000, 0x8000), None).unwrap_err();
        assert!(
            matches!(
                e,
                crate::Error::Image(ImageError::DoesNotFit {
                    partition_len: 0x8000,
                    ..
                })
            ),
            "{e}"
        );
        // Not at a 64 KiB boundary: flash-mapped segments no longer line up.
        let mut flash2 = RamFlash::<1>::new(0x40000);
        flash2.data[0x18000..0x18000 + img.len()].copy_from_slice(&img);
        let e = verify_flash(&mut flash2, Region::new(0x18000, 0x10000), None).unwrap_err();
        assert!(
            matches!(e, crate::Error::Image(ImageError::SegmentAlignment { .. })),
            "{e}"
        );
        // A region past the end of the flash: the driver's error, wrapped.
        let e = verify_flash(&mut flash, Region::new(0x40000, 0x10000), None).unwrap_err();
        assert!(matches!(e, crate::Error::Flash(_)), "{e}");
        // Corrupted byte in flash.
        flash.data[0x10000 + 5000] ^= 0x10;
        let e = verify_flash(&mut flash, slot, None).unwrap_err();
        assert!(
            matches!(e, crate::Error::Image(ImageError::ChecksumMismatch { .. })),
            "{e}"
        );
        let mut v = ImageVerifier::new();
        v.set_app_rules(true);
        flash.data[0x10000 + 5000] ^= 0x10;
        assert!(verify_flash_with(&mut flash, slot, v).is_ok());
    }
}
