//! `esp_image_header_t`: parsing, serialising, and esptool's names and codes for the flash
//! mode, size and frequency fields (idf-formats.md §3.2).

use super::{
    array, le16, le32, put, ImageError, FLASH_MODE_NAMES, FLASH_SIZE_NAMES, HEADER_SIZE,
    IMAGE_MAGIC,
};
use crate::chip::Chip;

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
            entry_addr: le32(b, 4),
            wp_pin: b[8],
            spi_pin_drv: array(b, 9),
            chip_id: le16(b, 12),
            min_chip_rev: b[14],
            min_chip_rev_full: le16(b, 15),
            max_chip_rev_full: le16(b, 17),
            reserved: array(b, 19),
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
        flash_size_name(self.flash_size_code())
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

/// esptool's name (`1MB` ... `128MB`) for a size nibble; None for an unknown code.
pub fn flash_size_name(code: u8) -> Option<&'static str> {
    FLASH_SIZE_NAMES.get(code as usize).copied()
}

/// The size nibble for a flash of `bytes` bytes (1 MiB => 0 ... 128 MiB => 7); None for a size
/// the header cannot name.
pub fn flash_size_code_for_bytes(bytes: u32) -> Option<u8> {
    (0..FLASH_SIZE_NAMES.len() as u8).find(|&c| flash_size_bytes(c) == Some(bytes))
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
