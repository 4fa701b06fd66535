//! The descriptors at fixed places in an image: `esp_app_desc_t` (apps) and
//! `esp_bootloader_desc_t` (bootloaders), with their C-string fields (idf-formats.md §3.7).

use super::{
    array, le16, le32, put, ImageError, APP_DESC_MAGIC, APP_DESC_SIZE, BOOTLOADER_DESC_MAGIC,
    BOOTLOADER_DESC_SIZE,
};

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
            magic_word: le32(b, 0),
            secure_version: le32(b, 4),
            reserv1: array(b, 8),
            version: array(b, 16),
            project_name: array(b, 48),
            time: array(b, 80),
            date: array(b, 96),
            idf_ver: array(b, 112),
            app_elf_sha256: array(b, 144),
            min_efuse_blk_rev_full: le16(b, 176),
            max_efuse_blk_rev_full: le16(b, 178),
            mmu_page_size: b[180],
            spi_flash_mode: b[181],
            reserv3: array(b, 182),
            reserv2: array(b, 184),
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
            reserved: array(b, 1),
            secure_version: b[3],
            version: le32(b, 4),
            idf_ver: array(b, 8),
            date_time: array(b, 40),
            reserved2: array(b, 64),
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
