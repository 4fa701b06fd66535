//! ESP32-family chips: ids, names, bootloader offsets (idf-formats.md §1.1, §3.3).

/// A chip of the ESP32 family, as named in the image header's `chip_id` (idf-formats.md §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Chip {
    Esp32,
    Esp32s2,
    Esp32c3,
    Esp32s3,
    Esp32c2,
    Esp32c6,
    Esp32h2,
    Esp32p4,
    Esp32c61,
    Esp32c5,
    Esp32h21,
    Esp32h4,
}

impl Chip {
    /// Every chip we know, in chip-id order.
    pub const ALL: [Chip; 12] = [
        Chip::Esp32,
        Chip::Esp32s2,
        Chip::Esp32c3,
        Chip::Esp32s3,
        Chip::Esp32c2,
        Chip::Esp32c6,
        Chip::Esp32h2,
        Chip::Esp32p4,
        Chip::Esp32c61,
        Chip::Esp32c5,
        Chip::Esp32h21,
        Chip::Esp32h4,
    ];

    /// `esp_chip_id_t` value stored at image header offset 0x0C (idf-formats.md §3.3).
    pub const fn id(self) -> u16 {
        match self {
            Chip::Esp32 => 0x0000,
            Chip::Esp32s2 => 0x0002,
            Chip::Esp32c3 => 0x0005,
            Chip::Esp32s3 => 0x0009,
            Chip::Esp32c2 => 0x000C,
            Chip::Esp32c6 => 0x000D,
            Chip::Esp32h2 => 0x0010,
            Chip::Esp32p4 => 0x0012,
            Chip::Esp32c61 => 0x0014,
            Chip::Esp32c5 => 0x0017,
            Chip::Esp32h21 => 0x0019,
            Chip::Esp32h4 => 0x001C,
        }
    }

    pub fn from_id(id: u16) -> Option<Chip> {
        Chip::ALL.into_iter().find(|c| c.id() == id)
    }

    /// esptool's lowercase name (`esp32s2`), as used by `--chip`.
    pub const fn name(self) -> &'static str {
        match self {
            Chip::Esp32 => "esp32",
            Chip::Esp32s2 => "esp32s2",
            Chip::Esp32c3 => "esp32c3",
            Chip::Esp32s3 => "esp32s3",
            Chip::Esp32c2 => "esp32c2",
            Chip::Esp32c6 => "esp32c6",
            Chip::Esp32h2 => "esp32h2",
            Chip::Esp32p4 => "esp32p4",
            Chip::Esp32c61 => "esp32c61",
            Chip::Esp32c5 => "esp32c5",
            Chip::Esp32h21 => "esp32h21",
            Chip::Esp32h4 => "esp32h4",
        }
    }

    /// esptool's display name (`ESP32-S2`).
    pub const fn display_name(self) -> &'static str {
        match self {
            Chip::Esp32 => "ESP32",
            Chip::Esp32s2 => "ESP32-S2",
            Chip::Esp32c3 => "ESP32-C3",
            Chip::Esp32s3 => "ESP32-S3",
            Chip::Esp32c2 => "ESP32-C2",
            Chip::Esp32c6 => "ESP32-C6",
            Chip::Esp32h2 => "ESP32-H2",
            Chip::Esp32p4 => "ESP32-P4",
            Chip::Esp32c61 => "ESP32-C61",
            Chip::Esp32c5 => "ESP32-C5",
            Chip::Esp32h21 => "ESP32-H21",
            Chip::Esp32h4 => "ESP32-H4",
        }
    }

    /// Parse esptool's lowercase name (also accepts `ESP32-S2` style and `esp32-s2`).
    pub fn from_name(name: &str) -> Option<Chip> {
        let mut buf = [0u8; 16];
        let mut n = 0;
        for b in name.bytes() {
            if b == b'-' || b == b'_' {
                continue;
            }
            if n == buf.len() {
                return None;
            }
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
        let norm = core::str::from_utf8(&buf[..n]).ok()?;
        Chip::ALL.into_iter().find(|c| c.name() == norm)
    }

    /// Where the ROM loads the 2nd-stage bootloader from (idf-formats.md §1.1).
    pub const fn bootloader_offset(self) -> u32 {
        match self {
            Chip::Esp32 | Chip::Esp32s2 => 0x1000,
            Chip::Esp32c5 | Chip::Esp32p4 | Chip::Esp32h4 => 0x2000,
            _ => 0x0,
        }
    }
}

/// A memory region kind from esptool's per-chip `MEMORY_MAP` (what `image-info` prints under
/// "Memory types"; idf-formats.md §3.3, §3.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemType {
    Padding,
    Drom,
    ExtramData,
    RtcDram,
    ByteAccessible,
    Dram,
    DiramDram,
    Irom,
    CachePro,
    CacheApp,
    Iram,
    DiramIram,
    RtcIram,
    RtcData,
    MemInternal,
    MemInternal2,
    IromMask,
    DromMask,
}

impl MemType {
    /// esptool's spelling (`BYTE_ACCESSIBLE`).
    pub const fn name(self) -> &'static str {
        match self {
            MemType::Padding => "PADDING",
            MemType::Drom => "DROM",
            MemType::ExtramData => "EXTRAM_DATA",
            MemType::RtcDram => "RTC_DRAM",
            MemType::ByteAccessible => "BYTE_ACCESSIBLE",
            MemType::Dram => "DRAM",
            MemType::DiramDram => "DIRAM_DRAM",
            MemType::Irom => "IROM",
            MemType::CachePro => "CACHE_PRO",
            MemType::CacheApp => "CACHE_APP",
            MemType::Iram => "IRAM",
            MemType::DiramIram => "DIRAM_IRAM",
            MemType::RtcIram => "RTC_IRAM",
            MemType::RtcData => "RTC_DATA",
            MemType::MemInternal => "MEM_INTERNAL",
            MemType::MemInternal2 => "MEM_INTERNAL2",
            MemType::IromMask => "IROM_MASK",
            MemType::DromMask => "DROM_MASK",
        }
    }
}

/// One row of a chip's memory map: `[start, end)` is of kind `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRange {
    pub start: u32,
    pub end: u32,
    pub kind: MemType,
}

const fn mr(start: u32, end: u32, kind: MemType) -> MemRange {
    MemRange { start, end, kind }
}

use MemType as M;

// esptool 5.6.0 `targets/*.py` MEMORY_MAP, in esptool's order (the order image-info prints).
// idf-formats.md §3.3 / §3.10. Addresses below 0x10000 are padding (§3.4).
const PADDING_RANGE: MemRange = mr(0x0, 0x10000, M::Padding);
static MAP_ESP32: [MemRange; 15] = [
    PADDING_RANGE,
    mr(0x3F40_0000, 0x3F80_0000, M::Drom),
    mr(0x3F80_0000, 0x3FC0_0000, M::ExtramData),
    mr(0x3FF8_0000, 0x3FF8_2000, M::RtcDram),
    mr(0x3FF9_0000, 0x4000_0000, M::ByteAccessible),
    mr(0x3FFA_E000, 0x4000_0000, M::Dram),
    mr(0x3FFE_0000, 0x3FFF_FFFC, M::DiramDram),
    mr(0x4000_0000, 0x4007_0000, M::Irom),
    mr(0x4007_0000, 0x4007_8000, M::CachePro),
    mr(0x4007_8000, 0x4008_0000, M::CacheApp),
    mr(0x4008_0000, 0x400A_0000, M::Iram),
    mr(0x400A_0000, 0x400B_FFFC, M::DiramIram),
    mr(0x400C_0000, 0x400C_2000, M::RtcIram),
    mr(0x400D_0000, 0x4040_0000, M::Irom),
    mr(0x5000_0000, 0x5000_2000, M::RtcData),
];
static MAP_ESP32S2: [MemRange; 12] = [
    PADDING_RANGE,
    mr(0x3F00_0000, 0x3FF8_0000, M::Drom),
    mr(0x3F50_0000, 0x3FF8_0000, M::ExtramData),
    mr(0x3FF9_E000, 0x3FFA_0000, M::RtcDram),
    mr(0x3FF9_E000, 0x4000_0000, M::ByteAccessible),
    mr(0x3FF9_E000, 0x4007_2000, M::MemInternal),
    mr(0x3FFB_0000, 0x4000_0000, M::Dram),
    mr(0x4000_0000, 0x4001_A100, M::IromMask),
    mr(0x4002_0000, 0x4007_0000, M::Iram),
    mr(0x4007_0000, 0x4007_2000, M::RtcIram),
    mr(0x4008_0000, 0x4080_0000, M::Irom),
    mr(0x5000_0000, 0x5000_2000, M::RtcData),
];
static MAP_ESP32S3: [MemRange; 12] = [
    PADDING_RANGE,
    mr(0x3C00_0000, 0x3D00_0000, M::Drom),
    mr(0x3D00_0000, 0x3E00_0000, M::ExtramData),
    mr(0x600F_E000, 0x6010_0000, M::RtcDram),
    mr(0x3FC8_8000, 0x3FD0_0000, M::ByteAccessible),
    mr(0x3FC8_8000, 0x403E_2000, M::MemInternal),
    mr(0x3FC8_8000, 0x3FD0_0000, M::Dram),
    mr(0x4000_0000, 0x4001_A100, M::IromMask),
    mr(0x4037_0000, 0x403E_0000, M::Iram),
    mr(0x600F_E000, 0x6010_0000, M::RtcIram),
    mr(0x4200_0000, 0x4280_0000, M::Irom),
    mr(0x5000_0000, 0x5000_2000, M::RtcData),
];
static MAP_ESP32C3: [MemRange; 11] = [
    PADDING_RANGE,
    mr(0x3C00_0000, 0x3C80_0000, M::Drom),
    mr(0x3FC8_0000, 0x3FCE_0000, M::Dram),
    mr(0x3FC8_8000, 0x3FD0_0000, M::ByteAccessible),
    mr(0x3FF0_0000, 0x3FF2_0000, M::DromMask),
    mr(0x4000_0000, 0x4006_0000, M::IromMask),
    mr(0x4200_0000, 0x4280_0000, M::Irom),
    mr(0x4037_C000, 0x403E_0000, M::Iram),
    mr(0x5000_0000, 0x5000_2000, M::RtcIram),
    mr(0x5000_0000, 0x5000_2000, M::RtcDram),
    mr(0x600F_E000, 0x6010_0000, M::MemInternal2),
];
static MAP_ESP32C2: [MemRange; 8] = [
    PADDING_RANGE,
    mr(0x3C00_0000, 0x3C40_0000, M::Drom),
    mr(0x3FCA_0000, 0x3FCE_0000, M::Dram),
    mr(0x3FC8_8000, 0x3FD0_0000, M::ByteAccessible),
    mr(0x3FF0_0000, 0x3FF5_0000, M::DromMask),
    mr(0x4000_0000, 0x4009_0000, M::IromMask),
    mr(0x4200_0000, 0x4240_0000, M::Irom),
    mr(0x4037_C000, 0x403C_0000, M::Iram),
];
/// ESP32-C6 and ESP32-H2 share this map.
static MAP_ESP32C6: [MemRange; 11] = [
    PADDING_RANGE,
    mr(0x4200_0000, 0x4300_0000, M::Drom),
    mr(0x4080_0000, 0x4088_0000, M::Dram),
    mr(0x4080_0000, 0x4088_0000, M::ByteAccessible),
    mr(0x4004_AC00, 0x4005_0000, M::DromMask),
    mr(0x4000_0000, 0x4004_AC00, M::IromMask),
    mr(0x4200_0000, 0x4300_0000, M::Irom),
    mr(0x4080_0000, 0x4088_0000, M::Iram),
    mr(0x5000_0000, 0x5000_4000, M::RtcIram),
    mr(0x5000_0000, 0x5000_4000, M::RtcDram),
    mr(0x600F_E000, 0x6010_0000, M::MemInternal2),
];
static MAP_ESP32C61: [MemRange; 11] = [
    PADDING_RANGE,
    mr(0x4200_0000, 0x4400_0000, M::Drom),
    mr(0x4080_0000, 0x4086_0000, M::Dram),
    mr(0x4080_0000, 0x4086_0000, M::ByteAccessible),
    mr(0x4004_AC00, 0x4005_0000, M::DromMask),
    mr(0x4000_0000, 0x4004_AC00, M::IromMask),
    mr(0x4200_0000, 0x4400_0000, M::Irom),
    mr(0x4080_0000, 0x4086_0000, M::Iram),
    mr(0x5000_0000, 0x5000_4000, M::RtcIram),
    mr(0x5000_0000, 0x5000_4000, M::RtcDram),
    mr(0x600F_E000, 0x6010_0000, M::MemInternal2),
];
static MAP_ESP32C5: [MemRange; 11] = [
    PADDING_RANGE,
    mr(0x4200_0000, 0x4400_0000, M::Drom),
    mr(0x4080_0000, 0x4086_0000, M::Dram),
    mr(0x4080_0000, 0x4086_0000, M::ByteAccessible),
    mr(0x4003_A000, 0x4004_0000, M::DromMask),
    mr(0x4000_0000, 0x4003_A000, M::IromMask),
    mr(0x4200_0000, 0x4400_0000, M::Irom),
    mr(0x4080_0000, 0x4086_0000, M::Iram),
    mr(0x5000_0000, 0x5000_4000, M::RtcIram),
    mr(0x5000_0000, 0x5000_4000, M::RtcDram),
    mr(0x600F_E000, 0x6010_0000, M::MemInternal2),
];
static MAP_ESP32H21: [MemRange; 11] = [
    PADDING_RANGE,
    mr(0x4200_0000, 0x4300_0000, M::Drom),
    mr(0x4080_0000, 0x4085_0000, M::Dram),
    mr(0x4080_0000, 0x4085_0000, M::ByteAccessible),
    mr(0x4000_0000, 0x4002_0000, M::DromMask),
    mr(0x4000_0000, 0x4002_0000, M::IromMask),
    mr(0x4200_0000, 0x4300_0000, M::Irom),
    mr(0x4080_0000, 0x4085_0000, M::Iram),
    mr(0x5000_0000, 0x5000_1000, M::RtcIram),
    mr(0x5000_0000, 0x5000_1000, M::RtcDram),
    mr(0x4080_0000, 0x4085_0000, M::MemInternal),
];
static MAP_ESP32H4: [MemRange; 9] = [
    PADDING_RANGE,
    mr(0x4200_0000, 0x4400_0000, M::Drom),
    mr(0x4081_0000, 0x4086_0000, M::Dram),
    mr(0x4081_0000, 0x4086_0000, M::ByteAccessible),
    mr(0x4000_0000, 0x4002_0000, M::DromMask),
    mr(0x4000_0000, 0x4002_0000, M::IromMask),
    mr(0x4200_0000, 0x4400_0000, M::Irom),
    mr(0x4081_0000, 0x4086_0000, M::Iram),
    mr(0x4081_0000, 0x4086_0000, M::MemInternal),
];
static MAP_ESP32P4: [MemRange; 11] = [
    PADDING_RANGE,
    mr(0x4000_0000, 0x4C00_0000, M::Drom),
    mr(0x4FF0_0000, 0x4FFA_0000, M::Dram),
    mr(0x4FF0_0000, 0x4FFA_0000, M::ByteAccessible),
    mr(0x4FC0_0000, 0x4FC2_0000, M::DromMask),
    mr(0x4FC0_0000, 0x4FC2_0000, M::IromMask),
    mr(0x4000_0000, 0x4C00_0000, M::Irom),
    mr(0x4FF0_0000, 0x4FFA_0000, M::Iram),
    mr(0x5010_8000, 0x5011_0000, M::RtcIram),
    mr(0x5010_8000, 0x5011_0000, M::RtcDram),
    mr(0x600F_E000, 0x6010_0000, M::MemInternal2),
];

/// Default MMU page size: 64 KiB (`SPI_FLASH_MMU_PAGE_SIZE`, idf-formats.md §3.3, §3.4).
pub const DEFAULT_MMU_PAGE_SIZE: u32 = 0x1_0000;
/// `ESPTOOLPY_FLASHSIZE_1MB` / `_2MB` in bytes, the flash sizes for which Kconfig picks a
/// smaller MMU page (esp-idf `components/soc/esp32c6/Kconfig.mmu`).
const KCONFIG_FLASH_1MB: u32 = 0x10_0000;
const KCONFIG_FLASH_2MB: u32 = 0x20_0000;
/// `MMU_PAGE_SIZE_16KB` is the default with 1 MB of flash, `MMU_PAGE_SIZE_32KB` with 2 MB
/// (esp-idf `components/soc/<chip>/Kconfig.mmu`).
const KCONFIG_PAGE_FOR_1MB: u32 = 0x4000;
const KCONFIG_PAGE_FOR_2MB: u32 = 0x8000;

/// The memory types an address falls into on one chip, in esptool's order
/// (`Display`: `BYTE_ACCESSIBLE, DRAM`; empty when the address is in no known range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemTypes {
    map: &'static [MemRange],
    addr: u32,
}

impl MemTypes {
    pub fn iter(&self) -> impl Iterator<Item = MemType> + '_ {
        let addr = self.addr;
        self.map
            .iter()
            .filter(move |r| r.start <= addr && addr < r.end)
            .map(|r| r.kind)
    }
    pub fn contains(&self, t: MemType) -> bool {
        self.iter().any(|k| k == t)
    }
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl core::fmt::Display for MemTypes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, t) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(t.name())?;
        }
        Ok(())
    }
}

impl Chip {
    /// esptool's `MEMORY_MAP` for this chip (esptool 5.6.0; idf-formats.md §3.3).
    pub fn memory_map(self) -> &'static [MemRange] {
        match self {
            Chip::Esp32 => &MAP_ESP32,
            Chip::Esp32s2 => &MAP_ESP32S2,
            Chip::Esp32s3 => &MAP_ESP32S3,
            Chip::Esp32c3 => &MAP_ESP32C3,
            Chip::Esp32c2 => &MAP_ESP32C2,
            Chip::Esp32c6 | Chip::Esp32h2 => &MAP_ESP32C6,
            Chip::Esp32c61 => &MAP_ESP32C61,
            Chip::Esp32c5 => &MAP_ESP32C5,
            Chip::Esp32h21 => &MAP_ESP32H21,
            Chip::Esp32h4 => &MAP_ESP32H4,
            Chip::Esp32p4 => &MAP_ESP32P4,
        }
    }

    /// What esptool's image-info prints under "Memory types" for a segment loaded at `addr`.
    pub fn memory_types(self, addr: u32) -> MemTypes {
        MemTypes {
            map: self.memory_map(),
            addr,
        }
    }

    /// Flash-mapped instruction range `[start, end)` (esptool `IROM_MAP_START/END`, §3.3).
    pub const fn irom_map(self) -> (u32, u32) {
        match self {
            Chip::Esp32 => (0x400D_0000, 0x4040_0000),
            Chip::Esp32s2 => (0x4008_0000, 0x40B8_0000),
            Chip::Esp32s3 => (0x4200_0000, 0x4400_0000),
            Chip::Esp32c3 | Chip::Esp32c6 | Chip::Esp32h2 | Chip::Esp32c61 => {
                (0x4200_0000, 0x4280_0000)
            }
            Chip::Esp32c2 => (0x4200_0000, 0x4240_0000),
            Chip::Esp32c5 | Chip::Esp32h4 => (0x4200_0000, 0x4400_0000),
            Chip::Esp32h21 => (0x4200_0000, 0x4300_0000),
            Chip::Esp32p4 => (0x4000_0000, 0x4C00_0000),
        }
    }

    /// Flash-mapped data range `[start, end)` (esptool `DROM_MAP_START/END`, §3.3).
    pub const fn drom_map(self) -> (u32, u32) {
        match self {
            Chip::Esp32 => (0x3F40_0000, 0x3F80_0000),
            Chip::Esp32s2 => (0x3F00_0000, 0x3F3F_0000),
            Chip::Esp32s3 => (0x3C00_0000, 0x3E00_0000),
            Chip::Esp32c3 => (0x3C00_0000, 0x3C80_0000),
            Chip::Esp32c2 => (0x3C00_0000, 0x3C40_0000),
            Chip::Esp32c6 | Chip::Esp32h2 | Chip::Esp32c61 => (0x4280_0000, 0x4300_0000),
            Chip::Esp32c5 | Chip::Esp32h4 => (0x4200_0000, 0x4400_0000),
            Chip::Esp32h21 => (0x4200_0000, 0x4300_0000),
            Chip::Esp32p4 => (0x4000_0000, 0x4C00_0000),
        }
    }

    /// True when a segment loaded at `addr` is mapped from flash through the MMU, so the
    /// page-alignment rule applies (`should_map()`, idf-formats.md §3.4).
    pub const fn is_flash_mapped(self, addr: u32) -> bool {
        let (is, ie) = self.irom_map();
        let (ds, de) = self.drom_map();
        (is <= addr && addr < ie) || (ds <= addr && addr < de)
    }

    /// MMU page sizes (log2) an app may select with `esp_app_desc_t.mmu_page_size` on chips
    /// with a configurable MMU page (idf-formats.md §3.3); empty = always 64 KiB.
    pub const fn mmu_page_sizes_log2(self) -> &'static [u8] {
        match self {
            Chip::Esp32c2 => &[14, 15, 16],
            Chip::Esp32c6 | Chip::Esp32h2 | Chip::Esp32c61 | Chip::Esp32h21 | Chip::Esp32h4 => {
                &[13, 14, 15, 16]
            }
            _ => &[],
        }
    }

    /// True when `page` (bytes) is an MMU page size this chip's cache can use: one of
    /// [`mmu_page_sizes_log2`](Self::mmu_page_sizes_log2), or 64 KiB on chips with a fixed page.
    pub const fn mmu_page_size_supported(self, page: u32) -> bool {
        if !page.is_power_of_two() {
            return false;
        }
        let sizes = self.mmu_page_sizes_log2();
        if sizes.is_empty() {
            return page == DEFAULT_MMU_PAGE_SIZE;
        }
        let log2 = page.trailing_zeros();
        let mut i = 0;
        while i < sizes.len() {
            if sizes[i] as u32 == log2 {
                return true;
            }
            i += 1;
        }
        false
    }

    /// The MMU page size ESP-IDF's Kconfig picks for this chip and flash size
    /// (`CONFIG_MMU_PAGE_SIZE`, esp-idf `components/soc/<chip>/Kconfig.mmu` and
    /// `components/soc/Kconfig`): on chips with a configurable page, 16 KiB for 1 MB of flash,
    /// 32 KiB for 2 MB, 64 KiB otherwise; 64 KiB on every other chip.
    pub const fn default_mmu_page_size(self, flash_size: u32) -> u32 {
        if self.mmu_page_sizes_log2().is_empty() {
            return DEFAULT_MMU_PAGE_SIZE;
        }
        if flash_size <= KCONFIG_FLASH_1MB {
            KCONFIG_PAGE_FOR_1MB
        } else if flash_size <= KCONFIG_FLASH_2MB {
            KCONFIG_PAGE_FOR_2MB
        } else {
            DEFAULT_MMU_PAGE_SIZE
        }
    }

    /// esptool's `FLASH_FREQUENCY` map for this chip (name, header nibble), in esptool's order:
    /// decoding a nibble takes the first name that matches (idf-formats.md §3.2; esptool 5.6.0).
    pub const fn flash_freqs(self) -> &'static [(&'static str, u8)] {
        match self {
            Chip::Esp32 | Chip::Esp32s2 | Chip::Esp32s3 | Chip::Esp32c3 | Chip::Esp32p4 => {
                &[("80m", 0xF), ("40m", 0x0), ("26m", 0x1), ("20m", 0x2)]
            }
            Chip::Esp32c2 => &[("60m", 0xF), ("30m", 0x0), ("20m", 0x1), ("15m", 0x2)],
            // C6: "80m" is encoded as 0 (ROM workaround), so 0 decodes as "80m".
            Chip::Esp32c6 => &[("80m", 0x0), ("40m", 0x0), ("20m", 0x2)],
            Chip::Esp32c5 | Chip::Esp32c61 => &[("80m", 0xF), ("40m", 0x0), ("20m", 0x2)],
            Chip::Esp32h2 => &[("48m", 0xF), ("24m", 0x0), ("16m", 0x1), ("12m", 0x2)],
            // esptool 5.6.0 knows only these two for H21 and H4.
            Chip::Esp32h21 | Chip::Esp32h4 => &[("48m", 0xF), ("24m", 0x0)],
        }
    }

    /// Where the image builder puts DRAM data (inside esptool's DRAM range for the chip).
    pub const fn builder_dram_base(self) -> u32 {
        match self {
            Chip::Esp32 => 0x3FFB_0000,
            Chip::Esp32s2 => 0x3FFB_E000,
            Chip::Esp32s3 | Chip::Esp32c3 => 0x3FC9_0000,
            Chip::Esp32c2 => 0x3FCA_0000,
            Chip::Esp32c6 | Chip::Esp32h2 => 0x4084_0000,
            Chip::Esp32c61 | Chip::Esp32c5 => 0x4083_0000,
            Chip::Esp32h21 => 0x4082_8000,
            Chip::Esp32h4 => 0x4083_8000,
            Chip::Esp32p4 => 0x4FF5_0000,
        }
    }

    /// Where the image builder puts IRAM code (inside esptool's IRAM range for the chip).
    pub const fn builder_iram_base(self) -> u32 {
        match self {
            Chip::Esp32 => 0x4008_0000,
            Chip::Esp32s2 => 0x4002_2000,
            Chip::Esp32s3 => 0x4037_4000,
            Chip::Esp32c3 | Chip::Esp32c2 => 0x4038_0000,
            Chip::Esp32c6 | Chip::Esp32h2 | Chip::Esp32c61 | Chip::Esp32c5 | Chip::Esp32h21 => {
                0x4080_0000
            }
            Chip::Esp32h4 => 0x4081_0000,
            Chip::Esp32p4 => 0x4FF0_0000,
        }
    }

    /// Where the image builder maps flash code: the IROM range, or its upper half on chips
    /// whose IROM and DROM ranges are one unified range (so code and rodata never overlap).
    pub const fn builder_irom_base(self) -> u32 {
        let (is, ie) = self.irom_map();
        let (ds, _) = self.drom_map();
        if is == ds {
            is + (ie - is) / 2
        } else {
            is
        }
    }
}

impl core::fmt::Display for Chip {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_parse() {
        for c in Chip::ALL {
            assert_eq!(Chip::from_id(c.id()), Some(c));
            assert_eq!(Chip::from_name(c.name()), Some(c));
            assert_eq!(Chip::from_name(c.display_name()), Some(c));
        }
        assert_eq!(Chip::from_id(0xFFFF), None);
        assert_eq!(Chip::Esp32s2.bootloader_offset(), 0x1000);
        assert_eq!(Chip::Esp32c3.bootloader_offset(), 0);
    }

    #[test]
    fn memory_types_print_in_esptool_order() {
        extern crate std;
        use std::string::ToString;
        // esptool 5.6.0 image-info rows (idf-formats.md §3.10).
        let s2 = Chip::Esp32s2;
        assert_eq!(
            s2.memory_types(0x3ffb_de90).to_string(),
            "BYTE_ACCESSIBLE, MEM_INTERNAL, DRAM"
        );
        assert_eq!(s2.memory_types(0x5000_0000).to_string(), "RTC_DATA");
        assert_eq!(Chip::Esp32.memory_types(0).to_string(), "PADDING");
        assert_eq!(
            Chip::Esp32c6.memory_types(0x4086_0000).to_string(),
            "DRAM, BYTE_ACCESSIBLE, IRAM"
        );
        assert!(Chip::Esp32c3.memory_types(0xdead_beef).is_empty());
        assert!(Chip::Esp32c6
            .memory_types(0x4280_0020)
            .contains(MemType::Drom));
    }

    #[test]
    fn kconfig_picks_small_mmu_pages_on_small_flash_only_where_configurable() {
        const MB: u32 = 1 << 20;
        for c in [Chip::Esp32c6, Chip::Esp32h2, Chip::Esp32c2, Chip::Esp32c61] {
            assert_eq!(c.default_mmu_page_size(MB), 0x4000, "{c}");
            assert_eq!(c.default_mmu_page_size(2 * MB), 0x8000, "{c}");
            assert_eq!(c.default_mmu_page_size(4 * MB), 0x10000, "{c}");
            assert!(c.mmu_page_size_supported(0x4000));
        }
        for c in [
            Chip::Esp32,
            Chip::Esp32c3,
            Chip::Esp32s3,
            Chip::Esp32c5,
            Chip::Esp32p4,
        ] {
            assert_eq!(c.default_mmu_page_size(MB), 0x10000, "{c}");
            assert!(!c.mmu_page_size_supported(0x4000), "{c}");
            assert!(c.mmu_page_size_supported(0x10000), "{c}");
        }
        assert!(Chip::Esp32c6.mmu_page_size_supported(0x2000));
        assert!(!Chip::Esp32c2.mmu_page_size_supported(0x2000));
        assert!(!Chip::Esp32c6.mmu_page_size_supported(0x3000));
        assert!(!Chip::Esp32c6.mmu_page_size_supported(0));
    }

    #[test]
    fn builder_addresses_are_in_the_right_ranges() {
        for c in Chip::ALL {
            let (ds, _) = c.drom_map();
            assert!(c.is_flash_mapped(ds + 0x20), "{c}");
            assert!(c.is_flash_mapped(c.builder_irom_base()), "{c}");
            assert!(c.memory_types(ds + 0x20).contains(MemType::Drom), "{c}");
            assert!(
                c.memory_types(c.builder_irom_base())
                    .contains(MemType::Irom),
                "{c}"
            );
            assert!(
                c.memory_types(c.builder_dram_base())
                    .contains(MemType::Dram),
                "{c}"
            );
            assert!(
                c.memory_types(c.builder_iram_base())
                    .contains(MemType::Iram),
                "{c}"
            );
            assert!(!c.is_flash_mapped(c.builder_dram_base()), "{c}");
            assert_eq!(c.builder_irom_base() % DEFAULT_MMU_PAGE_SIZE, 0, "{c}");
        }
    }
}
