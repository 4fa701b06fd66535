//! Partition table: the binary `esp_partition_info_t` array (read with any of the three
//! upstream readers' rules, written like gen_esp32part.py, MD5 entry included) and the CSV
//! text format of gen_esp32part.py (in [`csv`]). idf-formats.md §1. No allocation, no panics.

use core::fmt;

use crate::bytes::{array, le16, le32, Hex};

use md5::{Digest, Md5};

pub mod csv;
mod names;
#[cfg(test)]
mod tests;

pub use csv::{CsvError, CsvErrorKind, CsvOptions, Keywords, Snippet};
pub use names::{bootloader_usage, subtype_name, type_name};

/// Default offset of the partition table (`CONFIG_PARTITION_TABLE_OFFSET`, idf-formats.md §1.1).
pub const TABLE_OFFSET: u32 = 0x8000;
/// Bytes of table data (`ESP_PARTITION_TABLE_MAX_LEN`, §1.1).
pub const TABLE_MAX_LEN: usize = 0xC00;
/// The table occupies one flash sector (`ESP_PARTITION_TABLE_SIZE`, §1.1); partitions start
/// at `table_offset + TABLE_SECTOR_SIZE` at the earliest.
pub const TABLE_SECTOR_SIZE: u32 = 0x1000;
/// One entry (`esp_partition_info_t`, §1.2).
pub const ENTRY_SIZE: usize = 32;
/// Most partitions a table can hold (94 with the MD5 entry, 95 without; §1.3).
pub const MAX_PARTITIONS: usize = 95;
/// Entries the bootloader scans, MD5 entry and terminator included
/// (`ESP_PARTITION_TABLE_MAX_ENTRIES = 0xC00 / 32`, §1.1, §1.4a).
pub const BOOTLOADER_MAX_ENTRIES: usize = TABLE_MAX_LEN / ENTRY_SIZE;
/// Entries the application walks: one mapped 4 KiB sector (`load_partitions`, §1.4b).
pub const APP_MAX_ENTRIES: usize = TABLE_SECTOR_SIZE as usize / ENTRY_SIZE;

/// Magic of a partition entry, bytes `AA 50` (`ESP_PARTITION_MAGIC`, §1.2).
pub const MAGIC: u16 = 0x50AA;
/// Magic of the MD5 entry, bytes `EB EB` (`ESP_PARTITION_MAGIC_MD5`, §1.3).
pub const MAGIC_MD5: u16 = 0xEBEB;
/// Offset of the digest inside the MD5 entry (`ESP_PARTITION_MD5_OFFSET`, §1.3).
pub const MD5_OFFSET: usize = 16;
/// Terminator: magic `FF FF`, type and subtype `0xFF` (`PART_TYPE_END`, §1.4a).
pub const MAGIC_END: u16 = 0xFFFF;
/// `PART_TYPE_END` / `PART_SUBTYPE_END` (§1.4a).
pub const TYPE_END: u8 = 0xFF;
/// Erased flash / padding byte (§1.3).
pub const PAD_BYTE: u8 = 0xFF;

/// Flags word bit 0 (`PART_FLAG_ENCRYPTED`, §1.2).
pub const FLAG_ENCRYPTED: u32 = 1 << 0;
/// Flags word bit 1 (`PART_FLAG_READONLY`, §1.2).
pub const FLAG_READONLY: u32 = 1 << 1;

// Types and subtypes (§1.5).
pub const TYPE_APP: u8 = 0x00;
pub const TYPE_DATA: u8 = 0x01;
pub const TYPE_BOOTLOADER: u8 = 0x02;
pub const TYPE_PARTITION_TABLE: u8 = 0x03;
pub const SUBTYPE_APP_FACTORY: u8 = 0x00;
pub const SUBTYPE_APP_OTA_0: u8 = 0x10;
pub const SUBTYPE_APP_TEST: u8 = 0x20;
pub const SUBTYPE_APP_TEE_0: u8 = 0x30;
pub const SUBTYPE_DATA_OTA: u8 = 0x00;
pub const SUBTYPE_DATA_PHY: u8 = 0x01;
pub const SUBTYPE_DATA_NVS: u8 = 0x02;
pub const SUBTYPE_DATA_COREDUMP: u8 = 0x03;
pub const SUBTYPE_DATA_NVS_KEYS: u8 = 0x04;
/// `efuse` (`PART_SUBTYPE_DATA_EFUSE_EM`, esp-idf
/// `components/bootloader_support/include/esp_flash_partitions.h`).
pub const SUBTYPE_DATA_EFUSE: u8 = 0x05;
/// What gen_esp32part.py puts for an empty non-app subtype (§1.6).
pub const SUBTYPE_DATA_UNDEFINED: u8 = 0x06;
pub const SUBTYPE_DATA_TEE_OTA: u8 = 0x90;
/// `bootloader/primary` and `partition_table/primary` (§1.5).
pub const SUBTYPE_PRIMARY: u8 = 0x00;
/// `bootloader/recovery` (§1.5).
pub const SUBTYPE_BOOTLOADER_RECOVERY: u8 = 0x02;

const ENTRY_MAGIC_BYTES: [u8; 2] = MAGIC.to_le_bytes();
const MD5_MAGIC_BYTES: [u8; 2] = MAGIC_MD5.to_le_bytes();

/// A partition label: up to 16 bytes, NUL padded (§1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Label(pub [u8; 16]);

impl Label {
    /// From text; longer labels are truncated to 16 bytes, as gen_esp32part.py does.
    pub fn new(s: &str) -> Label {
        let mut l = [0u8; 16];
        for (d, s) in l.iter_mut().zip(s.as_bytes()) {
            *d = *s;
        }
        Label(l)
    }
    /// The label up to the first NUL (lossy: invalid UTF-8 is cut at the first bad byte).
    pub fn as_str(&self) -> &str {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        let bytes = self.0.get(..end).unwrap_or(&[]);
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                core::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or(&[])).unwrap_or("")
            }
        }
    }
    /// Bytes after the first NUL zeroed (what the app's `strncpy` and gen_esp32part.py keep).
    fn normalized(self) -> Label {
        let mut l = self.0;
        if let Some(end) = l.iter().position(|&b| b == 0) {
            l.iter_mut().skip(end).for_each(|b| *b = 0);
        }
        Label(l)
    }
    /// True when the bytes up to the first NUL are valid UTF-8 (gen_esp32part.py decodes them).
    fn is_utf8(&self) -> bool {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        core::str::from_utf8(self.0.get(..end).unwrap_or(&[])).is_ok()
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
        (self.ptype == TYPE_APP && (0x10..0x20).contains(&self.subtype))
            .then_some(self.subtype & 0x0F)
    }
    pub fn region(&self) -> crate::flash::Region {
        crate::flash::Region::new(self.offset, self.size)
    }
    pub fn is_encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }
    pub fn is_readonly(&self) -> bool {
        self.flags & FLAG_READONLY != 0
    }

    /// The 32-byte `esp_partition_info_t` (§1.2).
    pub fn to_bytes(&self) -> [u8; ENTRY_SIZE] {
        let mut e = [0u8; ENTRY_SIZE];
        let parts: [&[u8]; 7] = [
            &ENTRY_MAGIC_BYTES,
            &[self.ptype],
            &[self.subtype],
            &self.offset.to_le_bytes(),
            &self.size.to_le_bytes(),
            &self.label.0,
            &self.flags.to_le_bytes(),
        ];
        let mut at = 0;
        for p in parts {
            if let Some(dst) = e.get_mut(at..at + p.len()) {
                dst.copy_from_slice(p);
            }
            at += p.len();
        }
        e
    }

    /// Decode an entry's fields (the magic is not checked here).
    pub fn from_bytes(e: &[u8; ENTRY_SIZE]) -> Partition {
        Partition {
            ptype: e[2],
            subtype: e[3],
            offset: le32(e, 4),
            size: le32(e, 8),
            label: Label(array(e, 12)),
            flags: le32(e, 28),
        }
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

/// What is wrong with a binary table. `index` is the entry number (its byte offset within the
/// table is `index * 32`, see [`PartitionError::byte_offset`]). `Display` mirrors the message
/// of the reader that rejects it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartitionError {
    /// Bootloader: entry is neither a partition, the MD5 entry nor a terminator (an empty
    /// table is this error at index 0).
    InvalidMagic { index: usize, found: u16 },
    /// GenTool: entry is neither all-FF, an MD5 entry nor starts with `AA 50`.
    InvalidMagicBytes { index: usize, found: [u8; 2] },
    /// Bootloader: a partition does not fit in the flash chip.
    ExceedsChipSize {
        index: usize,
        label: Label,
        offset: u32,
        size: u32,
        chip_size: u32,
    },
    /// Bootloader: a second MD5 entry.
    DuplicateMd5 { index: usize },
    /// The MD5 entry at `index` does not hold the MD5 of the entries before it.
    Md5Mismatch {
        index: usize,
        computed: [u8; 16],
        stored: [u8; 16],
        rule: ReadRule,
    },
    /// Bootloader: no terminator within the scanned entries (or the bytes ran out).
    NoTerminator { scanned: usize },
    /// App: the walk ended (at entry `index`) without an MD5 entry.
    Md5NotFound { index: usize },
    /// GenTool: the bytes end in a partial entry.
    LengthNotMultipleOf32 { len: usize },
    /// GenTool: no all-FF entry.
    MissingEndMarker { scanned: usize },
    /// GenTool: label bytes are not UTF-8 (Python's `decode()` raises).
    LabelNotUtf8 { index: usize },
    /// More partitions than a [`PartitionTable`] holds (our limit; the app would read up to 127).
    TooManyPartitions { index: usize, max: usize },
    /// `to_binary`: entries (+ MD5 entry) would not leave room for an end marker in 0xC00 bytes.
    TableTooLong { len: usize },
}

impl PartitionError {
    /// Entry index the error is about, if any.
    pub fn entry_index(&self) -> Option<usize> {
        match *self {
            PartitionError::InvalidMagic { index, .. }
            | PartitionError::InvalidMagicBytes { index, .. }
            | PartitionError::ExceedsChipSize { index, .. }
            | PartitionError::DuplicateMd5 { index }
            | PartitionError::Md5Mismatch { index, .. }
            | PartitionError::Md5NotFound { index }
            | PartitionError::LabelNotUtf8 { index }
            | PartitionError::TooManyPartitions { index, .. } => Some(index),
            PartitionError::NoTerminator { scanned }
            | PartitionError::MissingEndMarker { scanned } => Some(scanned),
            PartitionError::LengthNotMultipleOf32 { .. } | PartitionError::TableTooLong { .. } => {
                None
            }
        }
    }
    /// Byte offset of that entry within the table.
    pub fn byte_offset(&self) -> Option<usize> {
        match *self {
            PartitionError::LengthNotMultipleOf32 { len } => Some(len - len % ENTRY_SIZE),
            _ => self.entry_index().map(|i| i * ENTRY_SIZE),
        }
    }
}

/// Python's `repr()` of a `bytes` object (`b'\xaa\x51'`), for gen_esp32part.py's messages.
struct PyBytesRepr<'a>(&'a [u8]);
impl fmt::Display for PyBytesRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = if self.0.contains(&b'\'') && !self.0.contains(&b'"') {
            '"'
        } else {
            '\''
        };
        write!(f, "b{}", quote)?;
        for &b in self.0 {
            match b {
                b'\t' => f.write_str("\\t")?,
                b'\n' => f.write_str("\\n")?,
                b'\r' => f.write_str("\\r")?,
                b'\\' => f.write_str("\\\\")?,
                b'\'' if quote == '\'' => f.write_str("\\'")?,
                0x20..=0x7e => write!(f, "{}", b as char)?,
                _ => write!(f, "\\x{:02x}", b)?,
            }
        }
        write!(f, "{}", quote)
    }
}

impl core::error::Error for PartitionError {}

impl fmt::Display for PartitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionError::InvalidMagic { index, found } => {
                write!(f, "partition {} invalid magic number 0x{:x}", index, found)
            }
            PartitionError::InvalidMagicBytes { found, .. } => {
                write!(f, "Invalid magic bytes ({}) for partition definition", PyBytesRepr(found))
            }
            PartitionError::ExceedsChipSize { index, label, offset, size, chip_size } => write!(
                f,
                "partition {} ({}) invalid - offset 0x{:x} size 0x{:x} exceeds flash chip size 0x{:x}",
                index,
                label.as_str(),
                offset,
                size,
                chip_size
            ),
            PartitionError::DuplicateMd5 { .. } => f.write_str("Only one MD5 checksum is allowed"),
            PartitionError::Md5Mismatch { computed, stored, rule, .. } => match rule {
                ReadRule::Bootloader { .. } => f.write_str("Incorrect MD5 checksum"),
                ReadRule::App => f.write_str("Partition table MD5 mismatch"),
                // gen_esp32part.py formats the parsed digest with `%s` of a bytes object.
                ReadRule::GenTool => write!(
                    f,
                    "MD5 checksums don't match! (computed: 0x{}, parsed: 0xb'{}')",
                    Hex(computed),
                    Hex(stored)
                ),
            },
            PartitionError::NoTerminator { .. } => {
                f.write_str("partition table has no terminating entry, not valid")
            }
            PartitionError::Md5NotFound { .. } => f.write_str("No MD5 found in partition table"),
            PartitionError::LengthNotMultipleOf32 { .. } => {
                f.write_str("Partition table length must be a multiple of 32 bytes")
            }
            PartitionError::MissingEndMarker { .. } => {
                f.write_str("Partition table is missing an end-of-table marker")
            }
            PartitionError::LabelNotUtf8 { index } => {
                write!(f, "partition {} label is not valid UTF-8", index)
            }
            PartitionError::TooManyPartitions { index, max } => {
                write!(f, "partition {}: more than {} partitions in the table", index, max)
            }
            PartitionError::TableTooLong { len } => {
                write!(f, "Binary partition table length ({}) longer than max", len)
            }
        }
    }
}

/// A parsed partition table, in table order. Fixed capacity, no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionTable {
    entries: [Partition; MAX_PARTITIONS],
    len: usize,
}

/// Entry `i` of `bytes`, if all 32 bytes are there.
fn entry_at(bytes: &[u8], i: usize) -> Option<&[u8; ENTRY_SIZE]> {
    let start = i.checked_mul(ENTRY_SIZE)?;
    bytes
        .get(start..start.checked_add(ENTRY_SIZE)?)?
        .try_into()
        .ok()
}

fn magic_of(e: &[u8; ENTRY_SIZE]) -> u16 {
    le16(e, 0)
}

fn stored_md5(e: &[u8; ENTRY_SIZE]) -> [u8; 16] {
    let mut d = [0u8; 16];
    if let Some(s) = e.get(MD5_OFFSET..ENTRY_SIZE) {
        d.copy_from_slice(s);
    }
    d
}

fn md5_digest(h: &Md5) -> [u8; 16] {
    h.clone().finalize().into()
}

impl PartitionTable {
    pub const fn new() -> Self {
        PartitionTable {
            entries: [Partition {
                ptype: 0,
                subtype: 0,
                offset: 0,
                size: 0,
                label: Label([0; 16]),
                flags: 0,
            }; MAX_PARTITIONS],
            len: 0,
        }
    }
    pub fn push(&mut self, p: Partition) -> Result<(), PartitionError> {
        match self.entries.get_mut(self.len) {
            Some(slot) => {
                *slot = p;
                self.len += 1;
                Ok(())
            }
            None => Err(PartitionError::TooManyPartitions {
                index: self.len,
                max: MAX_PARTITIONS,
            }),
        }
    }
    pub fn as_slice(&self) -> &[Partition] {
        self.entries.get(..self.len).unwrap_or(&[])
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
        self.iter()
            .find(|p| p.ptype == TYPE_DATA && p.label.as_str() == label)
    }
    pub fn find(&self, ptype: u8, subtype: u8) -> Option<&Partition> {
        self.iter()
            .find(|p| p.ptype == ptype && p.subtype == subtype)
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
    ///
    /// * `Bootloader`: scans at most 96 entries (fewer if `bytes` is shorter: running out is
    ///   "no terminating entry"). The result is what the bootloader then iterates: the raw
    ///   entries `0 .. terminator_index - md5_found` — with an MD5 entry in the middle of the
    ///   table that includes the MD5 entry and drops the last partition, exactly as upstream.
    /// * `App`: walks at most 128 entries (fewer if `bytes` is shorter).
    /// * `GenTool`: like gen_esp32part.py with MD5 checking on (its default).
    pub fn parse(bytes: &[u8], rule: ReadRule) -> Result<Self, PartitionError> {
        match rule {
            ReadRule::Bootloader { chip_size } => Self::parse_bootloader(bytes, chip_size),
            ReadRule::App => Self::parse_app(bytes),
            ReadRule::GenTool => Self::parse_gentool(bytes),
        }
    }

    fn parse_bootloader(bytes: &[u8], chip_size: u32) -> Result<Self, PartitionError> {
        let mut md5_found = false;
        for i in 0..BOOTLOADER_MAX_ENTRIES {
            let Some(e) = entry_at(bytes, i) else {
                return Err(PartitionError::NoTerminator { scanned: i });
            };
            let magic = magic_of(e);
            if magic == MAGIC {
                let p = Partition::from_bytes(e);
                if p.offset > chip_size || p.size > chip_size - p.offset {
                    return Err(PartitionError::ExceedsChipSize {
                        index: i,
                        label: p.label,
                        offset: p.offset,
                        size: p.size,
                        chip_size,
                    });
                }
            } else if magic == MAGIC_MD5 {
                if md5_found {
                    return Err(PartitionError::DuplicateMd5 { index: i });
                }
                let computed: [u8; 16] =
                    Md5::digest(bytes.get(..i * ENTRY_SIZE).unwrap_or(&[])).into();
                let stored = stored_md5(e);
                if computed != stored {
                    return Err(PartitionError::Md5Mismatch {
                        index: i,
                        computed,
                        stored,
                        rule: ReadRule::Bootloader { chip_size },
                    });
                }
                md5_found = true;
            } else if i != 0 && magic == MAGIC_END && e[2] == TYPE_END && e[3] == TYPE_END {
                let count = i - usize::from(md5_found);
                let mut t = PartitionTable::new();
                for j in 0..count {
                    if let Some(raw) = entry_at(bytes, j) {
                        t.push(Partition::from_bytes(raw))?;
                    }
                }
                return Ok(t);
            } else {
                return Err(PartitionError::InvalidMagic {
                    index: i,
                    found: magic,
                });
            }
        }
        Err(PartitionError::NoTerminator {
            scanned: BOOTLOADER_MAX_ENTRIES,
        })
    }

    fn parse_app(bytes: &[u8]) -> Result<Self, PartitionError> {
        let mut hasher = Md5::new();
        let mut t = PartitionTable::new();
        let mut md5_entry = None;
        let mut i = 0;
        while i < APP_MAX_ENTRIES {
            let Some(e) = entry_at(bytes, i) else { break };
            let magic = magic_of(e);
            if magic == MAGIC_MD5 {
                md5_entry = Some(e);
                break;
            }
            if magic != MAGIC {
                break;
            }
            hasher.update(e);
            let mut p = Partition::from_bytes(e);
            p.label = p.label.normalized();
            t.push(p).map_err(|_| PartitionError::TooManyPartitions {
                index: i,
                max: MAX_PARTITIONS,
            })?;
            i += 1;
        }
        let Some(e) = md5_entry else {
            return Err(PartitionError::Md5NotFound { index: i });
        };
        let computed = md5_digest(&hasher);
        let stored = stored_md5(e);
        if computed != stored {
            return Err(PartitionError::Md5Mismatch {
                index: i,
                computed,
                stored,
                rule: ReadRule::App,
            });
        }
        Ok(t)
    }

    fn parse_gentool(bytes: &[u8]) -> Result<Self, PartitionError> {
        let mut hasher = Md5::new();
        let mut t = PartitionTable::new();
        let mut i = 0;
        loop {
            let start = i * ENTRY_SIZE;
            if start >= bytes.len() {
                return Err(PartitionError::MissingEndMarker { scanned: i });
            }
            let Some(e) = entry_at(bytes, i) else {
                return Err(PartitionError::LengthNotMultipleOf32 { len: bytes.len() });
            };
            if e.iter().all(|&b| b == PAD_BYTE) {
                return Ok(t);
            }
            if e[..2] == MD5_MAGIC_BYTES {
                let computed = md5_digest(&hasher);
                let stored = stored_md5(e);
                if computed == stored {
                    i += 1;
                    continue;
                }
                return Err(PartitionError::Md5Mismatch {
                    index: i,
                    computed,
                    stored,
                    rule: ReadRule::GenTool,
                });
            }
            hasher.update(e);
            let mut p = Partition::from_bytes(e);
            // Python decodes the name before it looks at the magic.
            if !p.label.is_utf8() {
                return Err(PartitionError::LabelNotUtf8 { index: i });
            }
            if e[..2] != ENTRY_MAGIC_BYTES {
                return Err(PartitionError::InvalidMagicBytes {
                    index: i,
                    found: [e[0], e[1]],
                });
            }
            p.label = p.label.normalized();
            t.push(p).map_err(|_| PartitionError::TooManyPartitions {
                index: i,
                max: MAX_PARTITIONS,
            })?;
            i += 1;
        }
    }

    /// gen_esp32part.py's binary: entries, MD5 entry (when `md5`), 0xFF padding to 0xC00 (§1.3).
    /// Fails like gen_esp32part.py when no room is left for the end marker (more than 94
    /// partitions with MD5, 95 without).
    pub fn to_binary(
        &self,
        md5: bool,
        out: &mut [u8; TABLE_MAX_LEN],
    ) -> Result<(), PartitionError> {
        let entries_len = self.len * ENTRY_SIZE;
        let len = entries_len + if md5 { ENTRY_SIZE } else { 0 };
        if len >= TABLE_MAX_LEN {
            return Err(PartitionError::TableTooLong { len });
        }
        out.fill(PAD_BYTE);
        for (chunk, p) in out.chunks_exact_mut(ENTRY_SIZE).zip(self.iter()) {
            chunk.copy_from_slice(&p.to_bytes());
        }
        if md5 {
            let digest: [u8; 16] = Md5::digest(out.get(..entries_len).unwrap_or(&[])).into();
            if let Some(e) = out.get_mut(entries_len..len) {
                e.fill(PAD_BYTE);
                e[..2].copy_from_slice(&MD5_MAGIC_BYTES);
                e[MD5_OFFSET..].copy_from_slice(&digest);
            }
        }
        Ok(())
    }

    /// Parse gen_esp32part.py CSV text (§1.6) and, unless `opts.verify` is off, check it like
    /// `verify()` (§1.7). See [`csv`] for the exact rules and the few deliberate differences.
    pub fn from_csv(text: &str, opts: &CsvOptions) -> Result<PartitionTable, CsvError> {
        csv::parse(text, opts)
    }

    /// gen_esp32part.py's `verify()` (§1.7: alignment, flags, unique names, no overlap, one
    /// otadata of 0x2000 bytes...) on this table, e.g. one read from binary: gen_esp32part.py
    /// runs it on binary input too. `opts.table_offset` gives the "below the table" limit.
    pub fn verify(&self, opts: &CsvOptions) -> Result<(), CsvError> {
        csv::verify_table(self, opts)
    }

    /// The CSV text gen_esp32part.py's `to_csv()` prints for this table (§1.6).
    pub fn write_csv<W: fmt::Write>(&self, w: &mut W) -> fmt::Result {
        csv::write(self, w)
    }
}

impl Default for PartitionTable {
    fn default() -> Self {
        Self::new()
    }
}
