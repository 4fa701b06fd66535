//! Partition table: binary (read/write, MD5 entry, the three readers' rules) and CSV
//! (gen_esp32part.py's rules). idf-formats.md §1.
//!
//! CONTRACT (skeleton): the public items below are used by other modules; keep their names and
//! signatures. Bodies are to be written.

use core::fmt;

/// Default offset of the partition table (`CONFIG_PARTITION_TABLE_OFFSET`, idf-formats.md §1.1).
pub const TABLE_OFFSET: u32 = 0x8000;
/// Bytes of table data (`ESP_PARTITION_TABLE_MAX_LEN`, §1.1).
pub const TABLE_MAX_LEN: usize = 0xC00;
/// One entry (`esp_partition_info_t`, §1.2).
pub const ENTRY_SIZE: usize = 32;
/// Most partitions a table can hold (94 with the MD5 entry, 95 without; §1.3).
pub const MAX_PARTITIONS: usize = 95;

pub const TYPE_APP: u8 = 0x00;
pub const TYPE_DATA: u8 = 0x01;
pub const SUBTYPE_APP_FACTORY: u8 = 0x00;
pub const SUBTYPE_APP_OTA_0: u8 = 0x10;
pub const SUBTYPE_APP_TEST: u8 = 0x20;
pub const SUBTYPE_DATA_OTA: u8 = 0x00;

/// A partition label: up to 16 bytes, NUL padded (§1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Label(pub [u8; 16]);

impl Label {
    /// From text; longer labels are truncated to 16 bytes, as gen_esp32part.py does.
    pub fn new(s: &str) -> Label {
        let mut l = [0u8; 16];
        let n = s.len().min(16);
        l[..n].copy_from_slice(&s.as_bytes()[..n]);
        Label(l)
    }
    /// The label up to the first NUL (lossy: invalid UTF-8 is cut at the first bad byte).
    pub fn as_str(&self) -> &str {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        match core::str::from_utf8(&self.0[..end]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.0[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Partition {
    pub ptype: u8,
    pub subtype: u8,
    pub offset: u32,
    pub size: u32,
    pub label: Label,
    pub flags: u32,
}

impl Partition {
    pub fn is_app(&self) -> bool {
        self.ptype == TYPE_APP
    }
    /// `Some(n)` for app ota_n (subtype 0x10..=0x1F).
    pub fn ota_slot(&self) -> Option<u8> {
        (self.ptype == TYPE_APP && (0x10..0x20).contains(&self.subtype)).then_some(self.subtype & 0x0F)
    }
    pub fn region(&self) -> crate::flash::Region {
        crate::flash::Region::new(self.offset, self.size)
    }
}

/// Which reader's rules to apply to a binary table (idf-formats.md §1.4 — they differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadRule {
    /// 2nd-stage bootloader `esp_partition_table_verify` (§1.4a): MD5 optional, terminator
    /// required, entries must fit in `chip_size`.
    Bootloader { chip_size: u32 },
    /// Application `load_partitions` (§1.4b), with `CONFIG_PARTITION_TABLE_MD5=y`.
    App,
    /// gen_esp32part.py `from_binary` (§1.4c).
    GenTool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionError {
    /// Placeholder until the real variants exist.
    Invalid { offset: u32 },
}

impl fmt::Display for PartitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self)
    }
}

/// A parsed partition table, in table order. Fixed capacity, no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionTable {
    entries: [Partition; MAX_PARTITIONS],
    len: usize,
}

impl PartitionTable {
    pub const fn new() -> Self {
        PartitionTable { entries: [Partition { ptype: 0, subtype: 0, offset: 0, size: 0, label: Label([0; 16]), flags: 0 }; MAX_PARTITIONS], len: 0 }
    }
    pub fn push(&mut self, p: Partition) -> Result<(), PartitionError> {
        if self.len == MAX_PARTITIONS {
            return Err(PartitionError::Invalid { offset: 0 });
        }
        self.entries[self.len] = p;
        self.len += 1;
        Ok(())
    }
    pub fn as_slice(&self) -> &[Partition] {
        &self.entries[..self.len]
    }
    pub fn iter(&self) -> core::slice::Iter<'_, Partition> {
        self.as_slice().iter()
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// First partition with this label (any type).
    pub fn find_by_label(&self, label: &str) -> Option<&Partition> {
        self.iter().find(|p| p.label.as_str() == label)
    }
    /// First data partition with this label, any subtype (`esp_partition_find_first(DATA, ANY, label)`).
    pub fn find_data(&self, label: &str) -> Option<&Partition> {
        self.iter().find(|p| p.ptype == TYPE_DATA && p.label.as_str() == label)
    }
    pub fn find(&self, ptype: u8, subtype: u8) -> Option<&Partition> {
        self.iter().find(|p| p.ptype == ptype && p.subtype == subtype)
    }
    pub fn factory(&self) -> Option<&Partition> {
        self.find(TYPE_APP, SUBTYPE_APP_FACTORY)
    }
    pub fn test_app(&self) -> Option<&Partition> {
        self.find(TYPE_APP, SUBTYPE_APP_TEST)
    }
    pub fn otadata(&self) -> Option<&Partition> {
        self.find(TYPE_DATA, SUBTYPE_DATA_OTA)
    }
    /// The ota_n partition.
    pub fn ota(&self, n: u8) -> Option<&Partition> {
        if n > 15 {
            return None;
        }
        self.find(TYPE_APP, SUBTYPE_APP_OTA_0 + n)
    }
    /// App-side count (`esp_ota_get_app_partition_count`): ota_0, ota_1, ... until the first missing.
    pub fn ota_count(&self) -> u8 {
        (0..16u8).take_while(|&n| self.ota(n).is_some()).count() as u8
    }
    /// Bootloader-side count (`bs->app_count`): number of partitions with subtype 0x10..=0x1F.
    pub fn bootloader_app_count(&self) -> u8 {
        self.iter().filter(|p| p.ota_slot().is_some()).count() as u8
    }

    /// Parse a binary table with one reader's rules (§1.4). `bytes` is the table sector
    /// (at least 0xC00 bytes for `Bootloader`, a 4 KiB sector for `App`, any multiple of 32 for `GenTool`).
    pub fn parse(_bytes: &[u8], _rule: ReadRule) -> Result<Self, PartitionError> {
        Err(PartitionError::Invalid { offset: 0 })
    }

    /// gen_esp32part.py's binary: entries, MD5 entry (when `md5`), 0xFF padding to 0xC00 (§1.3).
    pub fn to_binary(&self, _md5: bool, _out: &mut [u8; TABLE_MAX_LEN]) -> Result<(), PartitionError> {
        Err(PartitionError::Invalid { offset: 0 })
    }
}

impl Default for PartitionTable {
    fn default() -> Self {
        Self::new()
    }
}
