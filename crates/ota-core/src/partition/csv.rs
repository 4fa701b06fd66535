//! gen_esp32part.py's CSV partition tables (esp-idf gen_esp32part.py, gen_esp32part.py `verify()`): parsing with its exact
//! rules, `verify()` with its exact messages, and `to_csv()` output. No allocation: rows live
//! in a fixed array, names are borrowed from the text while parsing.
//!
//! Deliberate differences from upstream (none change the output for a table upstream accepts):
//! * `$VAR` expansion runs against an *empty* environment: `os.path.expandvars` then leaves
//!   the text alone, and, like upstream, only a line that *starts* with `$NAME` is rejected
//!   (`unknown variable 'NAME'`); a `$` elsewhere stays in the text.
//! * Only a UTF-8 BOM can occur in a `&str`; it is stripped.
//! * Python `int()` also takes non-ASCII Unicode digits; we take ASCII digits only.
//! * Values that do not fit the binary struct (type > 255, negative offset, ...) make Python's
//!   `struct.pack` crash after `verify()`; we report [`CsvErrorKind::ValueOutOfRange`] at the
//!   same point. Values beyond `i64` are [`CsvErrorKind::ValueTooLarge`].
//! * More than [`MAX_PARTITIONS`] rows: [`CsvErrorKind::TooManyPartitions`] after all rows
//!   parsed (upstream would fail later, in `to_binary`).
//! * The "Please check extra_partition_subtypes.inc" hint appended upstream to row errors is
//!   left out (there are no extra subtypes here); warnings are not reported.

use core::fmt;

use super::names::{subtype_table, TYPE_NAMES};
use super::{
    Label, Partition, PartitionTable, FLAG_ENCRYPTED, FLAG_READONLY, MAX_PARTITIONS,
    SUBTYPE_BOOTLOADER_RECOVERY, SUBTYPE_DATA_COREDUMP, SUBTYPE_DATA_NVS, SUBTYPE_DATA_OTA,
    SUBTYPE_DATA_TEE_OTA, SUBTYPE_DATA_UNDEFINED, SUBTYPE_PRIMARY, TABLE_OFFSET, TABLE_SECTOR_SIZE,
    TYPE_APP, TYPE_BOOTLOADER, TYPE_DATA, TYPE_PARTITION_TABLE,
};

/// `K` suffix multiplier (`parse_int`, gen_esp32part.py).
const KIB: i64 = 1024;
/// `M` suffix multiplier (`parse_int`, gen_esp32part.py).
const MIB: i64 = 1024 * 1024;
/// Offset alignment of app partitions (`ALIGNMENT[APP_TYPE]`, gen_esp32part.py, gen_esp32part.py `verify()` rule 2).
const APP_OFFSET_ALIGN: i64 = 0x10000;
/// Offset alignment of every other type (`ALIGNMENT`, default `DATA_TYPE`, gen_esp32part.py `verify()` rule 2).
const OTHER_OFFSET_ALIGN: i64 = 0x1000;
/// App size alignment, default and Secure Boot v2 (gen_esp32part.py `verify()` rule 3).
const APP_SIZE_ALIGN: i64 = 0x1000;
/// App size alignment with Secure Boot v1 (gen_esp32part.py `verify()` rule 3).
const APP_SIZE_ALIGN_SECURE_V1: i64 = 0x10000;
/// `--secure v1` (gen_esp32part.py `verify()` rule 3).
pub const SECURE_V1: u8 = 1;
/// otadata / TEE otadata must be exactly this big (gen_esp32part.py `verify()` rule 9).
const OTADATA_SIZE: i64 = 0x2000;
/// A read/write NVS partition must be at least this big (`NVS_RW_MIN_PARTITION_SIZE`, gen_esp32part.py `verify()` rule 6).
const NVS_RW_MIN_SIZE: i64 = 0x3000;
/// Flags column names and bits (`PartitionDefinition.FLAGS`, gen_esp32part.py).
const FLAG_NAMES: [(&str, u32); 2] = [("encrypted", FLAG_ENCRYPTED), ("readonly", FLAG_READONLY)];
/// Header `to_csv()` prints (gen_esp32part.py).
const CSV_HEADER: &str = "# ESP-IDF Partition Table\n# Name, Type, SubType, Offset, Size, Flags\n";
/// Columns gen_esp32part.py reads; later ones are ignored (gen_esp32part.py).
const COLUMNS: usize = 6;

/// gen_esp32part.py's command-line options that change how a CSV is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// `--offset` (default 0x8000).
    pub table_offset: u32,
    /// `--primary-bootloader-offset`; needed by any `bootloader` row.
    pub primary_bootloader_offset: Option<u32>,
    /// `--recovery-bootloader-offset`; needed by a `bootloader, recovery` row.
    pub recovery_bootloader_offset: Option<u32>,
    /// `--flash-size`, in bytes.
    pub flash_size: Option<u32>,
    /// `--secure`: `Some(1)` = v1 (app sizes 64 KiB aligned), `Some(2)` = v2; anything but
    /// `Some(1)` keeps the default 4 KiB app size alignment.
    pub secure: Option<u8>,
    /// Run `verify()` (off = `--no-verify`). The flash-size check runs either way, as upstream.
    pub verify: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            table_offset: TABLE_OFFSET,
            primary_bootloader_offset: None,
            recovery_bootloader_offset: None,
            flash_size: None,
            secure: None,
            verify: true,
        }
    }
}

/// Capacity of a [`Snippet`].
pub const SNIPPET_CAP: usize = 48;

/// A short copy of some input text (a name, a field value) for an error message; longer text
/// is cut at a character boundary and shown with a trailing `…`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Snippet {
    buf: [u8; SNIPPET_CAP],
    len: usize,
    truncated: bool,
}

impl Snippet {
    pub fn new(s: &str) -> Snippet {
        let mut len = s.len().min(SNIPPET_CAP);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0u8; SNIPPET_CAP];
        for (d, s) in buf.iter_mut().zip(s.as_bytes().iter().take(len)) {
            *d = *s;
        }
        Snippet {
            buf,
            len,
            truncated: len < s.len(),
        }
    }
    /// The kept text (without the `…`).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.buf.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())?;
        if self.truncated {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// Which keyword table a value was looked up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keywords {
    /// Partition type names.
    Types,
    /// Subtype names of this type.
    Subtypes(u8),
}

impl Keywords {
    fn table(self) -> &'static [(&'static str, u8)] {
        match self {
            Keywords::Types => TYPE_NAMES,
            Keywords::Subtypes(t) => subtype_table(i64::from(t)),
        }
    }
}

/// What is wrong with a CSV table; `Display` gives gen_esp32part.py's message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsvErrorKind {
    /// A line starts with `$NAME` (expansion against an empty environment).
    UnknownVariable {
        name: Snippet,
    },
    TypeEmpty,
    AppSubtypeEmpty,
    SizeEmpty,
    /// Not a number, in a field without names (offset, size, subtype of a custom type).
    InvalidValue {
        value: Snippet,
    },
    /// Neither a number nor one of the names.
    UnknownKeyword {
        value: Snippet,
        keywords: Keywords,
    },
    UnknownFlag {
        flag: Snippet,
    },
    /// A number beyond 64-bit range (Python has no limit; it would fail later).
    ValueTooLarge {
        value: Snippet,
    },
    PrimaryBootloaderOffsetMissing,
    RecoveryBootloaderOffsetMissing,
    /// `--primary-bootloader-offset` is not below `--offset`.
    BootloaderNotBelowTable {
        bootloader_offset: u32,
        table_offset: u32,
    },
    /// The first row's explicit offset is inside the table sector.
    FirstOverlapsTable {
        offset: i64,
        table_offset: u32,
        free: i64,
    },
    /// A row's explicit offset is below the end of the row before it (file order).
    Overlap {
        offset: i64,
        previous_end: i64,
    },
    OffsetNotAligned {
        name: Snippet,
        offset: i64,
        align: i64,
    },
    SizeNotAligned {
        name: Snippet,
        size: i64,
        align: i64,
    },
    /// `readonly` on data/ota or data/coredump.
    AlwaysReadWrite {
        name: Snippet,
        ptype: i64,
        subtype: i64,
    },
    /// data/nvs smaller than 0x3000 without `readonly`.
    NvsTooSmall {
        name: Snippet,
        ptype: i64,
        subtype: i64,
        size: i64,
    },
    DuplicateName {
        name: Snippet,
    },
    OffsetBelowTable {
        offset: i64,
        min: i64,
    },
    PartitionsOverlap {
        offset: i64,
        previous_start: i64,
        previous_last: i64,
    },
    MultipleOtadata,
    OtadataSize {
        size: i64,
    },
    MultipleTeeOtadata,
    TeeOtadataSize {
        size: i64,
    },
    /// `--flash-size` check: `occupied` = end of the partition with the highest offset.
    DoesNotFitFlash {
        occupied: i64,
        flash_size: u32,
    },
    /// More rows than a [`PartitionTable`] holds.
    TooManyPartitions {
        count: usize,
        max: usize,
    },
    /// A value that cannot be stored in the binary entry (`struct.pack` fails upstream).
    ValueOutOfRange {
        name: Snippet,
        field: &'static str,
        value: i64,
    },
    /// Offset/size arithmetic beyond 64 bits.
    Overflow {
        name: Snippet,
    },
}

/// A CSV error: `line` is the 1-based line of the row concerned (0 for whole-table errors).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CsvError {
    pub line: usize,
    pub kind: CsvErrorKind,
}

impl CsvErrorKind {
    /// Errors upstream raises while parsing one row (shown as `Error at line N: ...`).
    fn is_row_error(&self) -> bool {
        matches!(
            self,
            CsvErrorKind::TypeEmpty
                | CsvErrorKind::AppSubtypeEmpty
                | CsvErrorKind::SizeEmpty
                | CsvErrorKind::InvalidValue { .. }
                | CsvErrorKind::UnknownKeyword { .. }
                | CsvErrorKind::UnknownFlag { .. }
                | CsvErrorKind::ValueTooLarge { .. }
                | CsvErrorKind::PrimaryBootloaderOffsetMissing
                | CsvErrorKind::RecoveryBootloaderOffsetMissing
        )
    }
}

/// Python's `'0x%x' % n` (a negative number prints as `0x-10`).
struct PyHex(i64);
impl fmt::Display for PyHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 0 {
            write!(f, "0x-{:x}", self.0.unsigned_abs())
        } else {
            write!(f, "0x{:x}", self.0)
        }
    }
}

/// Python's `'%.1f' % (n / 1048576)` without floats (round half to even, as Python does on
/// the exact binary value).
struct MbTenths(i64);
impl fmt::Display for MbTenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let abs = u128::from(self.0.unsigned_abs()) * 10;
        let mib = MIB as u128;
        let (mut q, r) = (abs / mib, abs % mib);
        if 2 * r > mib || (2 * r == mib && q % 2 == 1) {
            q += 1;
        }
        let sign = if self.0 < 0 && q != 0 { "-" } else { "" };
        write!(f, "{}{}.{}", sign, q / 10, q % 10)
    }
}

impl core::error::Error for CsvErrorKind {}

impl fmt::Display for CsvErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CsvErrorKind as K;
        match self {
            K::UnknownVariable { name } => write!(f, "unknown variable '{}'", name),
            K::TypeEmpty => f.write_str("Field 'type' can't be left empty."),
            K::AppSubtypeEmpty => f.write_str("App partition cannot have an empty subtype"),
            K::SizeEmpty => f.write_str("Size field can't be empty"),
            K::InvalidValue { value } => write!(f, "Invalid field value {}", value),
            K::UnknownKeyword { value, keywords } => {
                write!(f, "Value '{}' is not valid. Known keywords: ", value)?;
                for (i, (name, _)) in keywords.table().iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(name)?;
                }
                Ok(())
            }
            K::UnknownFlag { flag } => write!(f, "CSV flag column contains unknown flag '{}'", flag),
            K::ValueTooLarge { value } => write!(f, "Value '{}' is too large", value),
            K::PrimaryBootloaderOffsetMissing => {
                f.write_str("Primary bootloader offset is not defined. Please use --primary-bootloader-offset")
            }
            K::RecoveryBootloaderOffsetMissing => {
                f.write_str("Recovery bootloader offset is not defined. Please use --recovery-bootloader-offset")
            }
            K::BootloaderNotBelowTable { bootloader_offset, table_offset } => write!(
                f,
                "Unsupported configuration. Primary bootloader must be below partition table. \
                 Check --primary-bootloader-offset={:#x} and --offset={:#x}",
                bootloader_offset, table_offset
            ),
            K::FirstOverlapsTable { offset, table_offset, free } => write!(
                f,
                "Partitions overlap. Partition sets offset {}. But partition table occupies the whole sector 0x{:x}. \
                 Use a free offset {} or higher.",
                PyHex(*offset),
                table_offset,
                PyHex(*free)
            ),
            K::Overlap { offset, previous_end } => write!(
                f,
                "Partitions overlap. Partition sets offset {}. Previous partition ends {}",
                PyHex(*offset),
                PyHex(*previous_end)
            ),
            K::OffsetNotAligned { name, offset, align } => write!(
                f,
                "Partition {} invalid: Offset {} is not aligned to {}",
                name,
                PyHex(*offset),
                PyHex(*align)
            ),
            K::SizeNotAligned { name, size, align } => write!(
                f,
                "Partition {} invalid: Size {} is not aligned to {}",
                name,
                PyHex(*size),
                PyHex(*align)
            ),
            K::AlwaysReadWrite { name, ptype, subtype } => write!(
                f,
                "Partition {} invalid: '{}' partition of type {} and subtype {} is always read-write and cannot be read-only",
                name, name, ptype, subtype
            ),
            K::NvsTooSmall { name, ptype, subtype, size } => write!(
                f,
                "Partition {} invalid: '{}' partition of type {} and subtype {} of this size ({}) must be flagged as \
                 'readonly' (the size of read/write NVS has to be at least {})",
                name,
                name,
                ptype,
                subtype,
                PyHex(*size),
                PyHex(NVS_RW_MIN_SIZE)
            ),
            K::DuplicateName { .. } => f.write_str("Partition names must be unique"),
            K::OffsetBelowTable { offset, min } => {
                write!(f, "Partition offset {} is below {}", PyHex(*offset), PyHex(*min))
            }
            K::PartitionsOverlap { offset, previous_start, previous_last } => write!(
                f,
                "Partition at {} overlaps {}-{}",
                PyHex(*offset),
                PyHex(*previous_start),
                PyHex(*previous_last)
            ),
            K::MultipleOtadata => f.write_str(
                "Found multiple otadata partitions. Only one partition can be defined with type=\"data\"(1) and \
                 subtype=\"ota\"(0).",
            ),
            K::OtadataSize { .. } => f.write_str("otadata partition must have size = 0x2000"),
            K::MultipleTeeOtadata => f.write_str(
                "Found multiple TEE otadata partitions. Only one partition can be defined with type=\"data\"(1) and \
                 subtype=\"tee_ota\"(0x90).",
            ),
            K::TeeOtadataSize { .. } => f.write_str("TEE otadata partition must have size = 0x2000"),
            K::DoesNotFitFlash { occupied, flash_size } => write!(
                f,
                "Partitions tables occupies {}MB of flash ({} bytes) which does not fit in configured flash size {}MB. \
                 Change the flash size in menuconfig under the 'Serial Flasher Config' menu.",
                MbTenths(*occupied),
                occupied,
                i64::from(*flash_size) / MIB
            ),
            K::TooManyPartitions { count, max } => {
                write!(f, "{} partitions in the table; at most {} fit in a binary partition table", count, max)
            }
            K::ValueOutOfRange { name, field, value } => {
                let (lo, hi): (i64, i64) = if *field == "type" || *field == "subtype" {
                    (0, u8::MAX.into())
                } else {
                    (0, u32::MAX.into())
                };
                write!(
                    f,
                    "Partition {} invalid: {} {} does not fit the binary entry (requires {} <= number <= {})",
                    name, field, value, lo, hi
                )
            }
            K::Overflow { name } => write!(f, "Partition {} invalid: offset + size overflows", name),
        }
    }
}

impl core::error::Error for CsvError {}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            CsvErrorKind::FirstOverlapsTable { .. } | CsvErrorKind::Overlap { .. } => {
                write!(f, "CSV Error at line {}: {}", self.line, self.kind)
            }
            _ if self.kind.is_row_error() => {
                write!(f, "Error at line {}: {}", self.line, self.kind)
            }
            _ => self.kind.fmt(f),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Python string and integer rules

/// `str.isspace()`: Unicode White_Space plus the separators U+001C..U+001F.
fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip()`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

/// Line boundaries of `str.splitlines()`.
fn py_is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{0b}'
            | '\u{0c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// `str.splitlines()` (no trailing empty line; `\r\n` is one break).
struct PyLines<'a> {
    rest: &'a str,
}

impl<'a> Iterator for PyLines<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        match self.rest.char_indices().find(|&(_, c)| py_is_line_break(c)) {
            None => {
                let line = self.rest;
                self.rest = "";
                Some(line)
            }
            Some((i, c)) => {
                let line = self.rest.get(..i).unwrap_or("");
                let mut after = i + c.len_utf8();
                if c == '\r' && self.rest.as_bytes().get(after) == Some(&b'\n') {
                    after += 1;
                }
                self.rest = self.rest.get(after..).unwrap_or("");
                Some(line)
            }
        }
    }
}

/// `re.match(r'(?<!\\)\$([A-Za-z_][A-Za-z0-9_]*)', line)` — anchored at the line start.
fn leading_variable(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('$')?;
    let first = rest.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    rest.get(..end)
}

enum IntError {
    Invalid,
    Overflow,
}

/// Digits of one base with Python's underscore rules (single underscores between digits, and
/// one allowed right after a `0x`/`0o`/`0b` prefix).
fn py_digits(digits: &str, base: u32, underscore_first_ok: bool) -> Result<u128, IntError> {
    let mut value: u128 = 0;
    let mut any = false;
    let mut prev_underscore = false;
    for (k, c) in digits.chars().enumerate() {
        if c == '_' {
            if prev_underscore || (k == 0 && !underscore_first_ok) {
                return Err(IntError::Invalid);
            }
            prev_underscore = true;
            continue;
        }
        let d = c.to_digit(base).ok_or(IntError::Invalid)?;
        value = value
            .checked_mul(u128::from(base))
            .and_then(|v| v.checked_add(u128::from(d)))
            .ok_or(IntError::Overflow)?;
        any = true;
        prev_underscore = false;
    }
    if !any || prev_underscore {
        return Err(IntError::Invalid);
    }
    Ok(value)
}

/// Python `int(s, 0)`.
fn py_int0(s: &str) -> Result<i64, IntError> {
    let s = py_strip(s);
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..).unwrap_or("")),
        Some(b'+') => (false, s.get(1..).unwrap_or("")),
        _ => (false, s),
    };
    let bytes = body.as_bytes();
    let prefixed =
        |lower: u8| bytes.len() >= 2 && bytes[0] == b'0' && bytes[1].to_ascii_lowercase() == lower;
    let magnitude = if prefixed(b'x') {
        py_digits(body.get(2..).unwrap_or(""), 16, true)?
    } else if prefixed(b'o') {
        py_digits(body.get(2..).unwrap_or(""), 8, true)?
    } else if prefixed(b'b') {
        py_digits(body.get(2..).unwrap_or(""), 2, true)?
    } else {
        let v = py_digits(body, 10, false)?;
        // A decimal literal with a leading zero must be all zeros ("00", "0_0"; not "010").
        if bytes.first() == Some(&b'0') && v != 0 {
            return Err(IntError::Invalid);
        }
        v
    };
    let signed = if negative {
        -i128::try_from(magnitude).map_err(|_| IntError::Overflow)?
    } else {
        i128::try_from(magnitude).map_err(|_| IntError::Overflow)?
    };
    i64::try_from(signed).map_err(|_| IntError::Overflow)
}

/// K/M suffix of `parse_int` (`v.lower().endswith(...)`), for the last character.
fn suffix_multiplier(c: char) -> Option<i64> {
    match c.to_lowercase().last() {
        Some('k') => Some(KIB),
        Some('m') => Some(MIB),
        _ => None,
    }
}

/// `v.lower() == key` for an ASCII lower-case key.
fn py_lower_eq(v: &str, key: &str) -> bool {
    v.chars().flat_map(char::to_lowercase).eq(key.chars())
}

/// gen_esp32part.py `parse_int(v, keywords)`: K/M suffixes (recursively), `int(x, 0)`, then a
/// case-insensitive name lookup. Errors name the innermost text, as upstream.
fn parse_int(v: &str, keywords: Option<Keywords>) -> Result<i64, CsvErrorKind> {
    let mut core = v;
    let mut multipliers = 0usize;
    while let Some(c) = core.chars().next_back() {
        if suffix_multiplier(c).is_none() {
            break;
        }
        core = core.get(..core.len() - c.len_utf8()).unwrap_or("");
        multipliers += 1;
    }
    let base = match py_int0(core) {
        Ok(n) => n,
        Err(IntError::Overflow) => {
            return Err(CsvErrorKind::ValueTooLarge {
                value: Snippet::new(core),
            })
        }
        Err(IntError::Invalid) => {
            let table = keywords.map(Keywords::table).unwrap_or(&[]);
            match (keywords, table.iter().find(|(k, _)| py_lower_eq(core, k))) {
                (_, Some((_, n))) => i64::from(*n),
                (Some(kw), None) if !table.is_empty() => {
                    return Err(CsvErrorKind::UnknownKeyword {
                        value: Snippet::new(core),
                        keywords: kw,
                    })
                }
                _ => {
                    return Err(CsvErrorKind::InvalidValue {
                        value: Snippet::new(core),
                    })
                }
            }
        }
    };
    let mut value = base;
    // Apply the suffixes innermost first (the order of the recursion's returns).
    let mut tail = v.get(core.len()..).unwrap_or("").chars();
    for _ in 0..multipliers {
        let m = tail.next().and_then(suffix_multiplier).unwrap_or(1);
        value = value.checked_mul(m).ok_or(CsvErrorKind::ValueTooLarge {
            value: Snippet::new(v),
        })?;
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Rows

/// One CSV row while parsing: Python ints (i64 here) and the full name.
#[derive(Clone, Copy)]
struct Row<'a> {
    name: &'a str,
    ptype: i64,
    subtype: i64,
    offset: Option<i64>,
    size: i64,
    flags: u32,
    line: usize,
}

impl Row<'_> {
    const EMPTY: Row<'static> = Row {
        name: "",
        ptype: 0,
        subtype: 0,
        offset: None,
        size: 0,
        flags: 0,
        line: 0,
    };

    fn is(&self, ptype: u8, subtype: u8) -> bool {
        self.ptype == i64::from(ptype) && self.subtype == i64::from(subtype)
    }
    /// Primary bootloader / primary partition table rows (they do not take part in the
    /// implicit-offset chain nor in the "below the table" check).
    fn is_primary(&self) -> bool {
        self.is(TYPE_BOOTLOADER, SUBTYPE_PRIMARY) || self.is(TYPE_PARTITION_TABLE, SUBTYPE_PRIMARY)
    }
    fn readonly(&self) -> bool {
        self.flags & FLAG_READONLY != 0
    }
    fn offset(&self) -> i64 {
        self.offset.unwrap_or(0)
    }
    /// `PartitionDefinition.__eq__`: name, type, subtype, offset, size.
    fn same_as(&self, o: &Row<'_>) -> bool {
        self.name == o.name
            && self.ptype == o.ptype
            && self.subtype == o.subtype
            && self.offset == o.offset
            && self.size == o.size
    }
}

fn parse_row<'a>(
    line: &'a str,
    line_no: usize,
    opts: &CsvOptions,
) -> Result<Row<'a>, CsvErrorKind> {
    let mut fields = [""; COLUMNS];
    for (slot, f) in fields.iter_mut().zip(line.split(',')) {
        *slot = py_strip(f);
    }
    let [name, ptype_s, subtype_s, offset_s, size_s, flags_s] = fields;

    if ptype_s.is_empty() {
        return Err(CsvErrorKind::TypeEmpty);
    }
    let ptype = parse_int(ptype_s, Some(Keywords::Types))?;

    let subtype = if subtype_s.is_empty() {
        if ptype == i64::from(TYPE_APP) {
            return Err(CsvErrorKind::AppSubtypeEmpty);
        }
        i64::from(SUBTYPE_DATA_UNDEFINED)
    } else {
        let kw = u8::try_from(ptype)
            .ok()
            .filter(|&t| !subtype_table(i64::from(t)).is_empty());
        parse_int(subtype_s, kw.map(Keywords::Subtypes))?
    };

    let table_offset = i64::from(opts.table_offset);
    let primary_bl = || {
        opts.primary_bootloader_offset
            .map(i64::from)
            .ok_or(CsvErrorKind::PrimaryBootloaderOffsetMissing)
    };
    // parse_address
    let offset = if ptype == i64::from(TYPE_BOOTLOADER) && subtype == i64::from(SUBTYPE_PRIMARY) {
        Some(primary_bl()?)
    } else if ptype == i64::from(TYPE_BOOTLOADER)
        && subtype == i64::from(SUBTYPE_BOOTLOADER_RECOVERY)
    {
        Some(
            opts.recovery_bootloader_offset
                .map(i64::from)
                .ok_or(CsvErrorKind::RecoveryBootloaderOffsetMissing)?,
        )
    } else if ptype == i64::from(TYPE_PARTITION_TABLE) && subtype == i64::from(SUBTYPE_PRIMARY) {
        Some(table_offset)
    } else if offset_s.is_empty() {
        None
    } else {
        Some(parse_int(offset_s, None)?)
    };
    // parse_size
    let size = if ptype == i64::from(TYPE_BOOTLOADER) {
        table_offset - primary_bl()?
    } else if ptype == i64::from(TYPE_PARTITION_TABLE) {
        i64::from(TABLE_SECTOR_SIZE)
    } else if size_s.is_empty() {
        return Err(CsvErrorKind::SizeEmpty);
    } else {
        parse_int(size_s, None)?
    };

    let mut flags = 0u32;
    for flag in flags_s.split(':') {
        match FLAG_NAMES.iter().find(|(n, _)| *n == flag) {
            Some((_, bit)) => flags |= bit,
            None if flag.is_empty() => {}
            None => {
                return Err(CsvErrorKind::UnknownFlag {
                    flag: Snippet::new(flag),
                })
            }
        }
    }

    Ok(Row {
        name,
        ptype,
        subtype,
        offset,
        size,
        flags,
        line: line_no,
    })
}

fn err(line: usize, kind: CsvErrorKind) -> CsvError {
    CsvError { line, kind }
}

/// `PartitionTable.from_csv`'s second loop: implicit offsets and negative sizes.
fn fix_offsets(rows: &mut [Row<'_>], table_offset: i64) -> Result<(), CsvError> {
    let mut last_end = table_offset + i64::from(TABLE_SECTOR_SIZE);
    for i in 0..rows.len() {
        let first = rows.first().copied().unwrap_or(Row::EMPTY);
        let Some(r) = rows.get_mut(i) else { break };
        if r.is_primary() {
            continue;
        }
        let overflow = |r: &Row<'_>| {
            err(
                r.line,
                CsvErrorKind::Overflow {
                    name: Snippet::new(r.name),
                },
            )
        };
        if let Some(offset) = r.offset {
            if offset < last_end {
                let kind = if r.same_as(&first) {
                    CsvErrorKind::FirstOverlapsTable {
                        offset,
                        table_offset: table_offset as u32,
                        free: last_end,
                    }
                } else {
                    CsvErrorKind::Overlap {
                        offset,
                        previous_end: last_end,
                    }
                };
                return Err(err(r.line, kind));
            }
        }
        let offset = match r.offset {
            Some(o) => o,
            None => {
                let pad = if r.ptype == i64::from(TYPE_APP) {
                    APP_OFFSET_ALIGN
                } else {
                    OTHER_OFFSET_ALIGN
                };
                let rem = last_end.rem_euclid(pad);
                if rem != 0 {
                    last_end = last_end.checked_add(pad - rem).ok_or_else(|| overflow(r))?;
                }
                last_end
            }
        };
        r.offset = Some(offset);
        if r.size < 0 {
            r.size = r
                .size
                .checked_neg()
                .and_then(|s| s.checked_sub(offset))
                .ok_or_else(|| overflow(r))?;
        }
        last_end = offset.checked_add(r.size).ok_or_else(|| overflow(r))?;
    }
    Ok(())
}

/// `PartitionDefinition.verify()` (gen_esp32part.py `verify()` rules 1–6; warnings are not reported).
fn verify_row(r: &Row<'_>, opts: &CsvOptions) -> Result<(), CsvErrorKind> {
    let name = || Snippet::new(r.name);
    let align = if r.ptype == i64::from(TYPE_APP) {
        APP_OFFSET_ALIGN
    } else {
        OTHER_OFFSET_ALIGN
    };
    if r.offset().rem_euclid(align) != 0 {
        return Err(CsvErrorKind::OffsetNotAligned {
            name: name(),
            offset: r.offset(),
            align,
        });
    }
    if r.ptype == i64::from(TYPE_APP) {
        let align = if opts.secure == Some(SECURE_V1) {
            APP_SIZE_ALIGN_SECURE_V1
        } else {
            APP_SIZE_ALIGN
        };
        if r.size.rem_euclid(align) != 0 {
            return Err(CsvErrorKind::SizeNotAligned {
                name: name(),
                size: r.size,
                align,
            });
        }
    }
    if (r.is(TYPE_DATA, SUBTYPE_DATA_OTA) || r.is(TYPE_DATA, SUBTYPE_DATA_COREDUMP)) && r.readonly()
    {
        return Err(CsvErrorKind::AlwaysReadWrite {
            name: name(),
            ptype: r.ptype,
            subtype: r.subtype,
        });
    }
    if r.is(TYPE_DATA, SUBTYPE_DATA_NVS) && r.size < NVS_RW_MIN_SIZE && !r.readonly() {
        return Err(CsvErrorKind::NvsTooSmall {
            name: name(),
            ptype: r.ptype,
            subtype: r.subtype,
            size: r.size,
        });
    }
    Ok(())
}

/// `PartitionTable.verify()` (gen_esp32part.py `verify()`).
fn verify(rows: &[Row<'_>], opts: &CsvOptions) -> Result<(), CsvError> {
    for r in rows {
        verify_row(r, opts).map_err(|k| err(r.line, k))?;
    }
    for (i, r) in rows.iter().enumerate() {
        if rows.iter().take(i).any(|o| o.name == r.name) {
            return Err(err(
                r.line,
                CsvErrorKind::DuplicateName {
                    name: Snippet::new(r.name),
                },
            ));
        }
    }
    // Stable sort by offset (Python's `sorted`), on indices.
    let mut order = [0usize; MAX_PARTITIONS];
    let n = rows.len().min(MAX_PARTITIONS);
    for (k, slot) in order.iter_mut().enumerate().take(n) {
        *slot = k;
    }
    let order = order.get_mut(..n).unwrap_or(&mut []);
    let off = |k: usize| rows.get(k).map_or(0, Row::offset);
    for i in 1..order.len() {
        let mut j = i;
        while j > 0 && off(order[j - 1]) > off(order[j]) {
            order.swap(j - 1, j);
            j -= 1;
        }
    }
    let min = i64::from(opts.table_offset) + i64::from(TABLE_SECTOR_SIZE);
    let mut last: Option<&Row<'_>> = None;
    for p in order.iter().filter_map(|&k| rows.get(k)) {
        if p.offset() < min && !p.is_primary() {
            return Err(err(
                p.line,
                CsvErrorKind::OffsetBelowTable {
                    offset: p.offset(),
                    min,
                },
            ));
        }
        if let Some(l) = last {
            let end = l.offset().saturating_add(l.size);
            if p.offset() < end {
                return Err(err(
                    p.line,
                    CsvErrorKind::PartitionsOverlap {
                        offset: p.offset(),
                        previous_start: l.offset(),
                        previous_last: end.saturating_sub(1),
                    },
                ));
            }
        }
        last = Some(p);
    }
    for (subtype, tee) in [(SUBTYPE_DATA_OTA, false), (SUBTYPE_DATA_TEE_OTA, true)] {
        let mut found = rows.iter().filter(|r| r.is(TYPE_DATA, subtype));
        if let Some(first) = found.next() {
            if let Some(second) = found.next() {
                let kind = if tee {
                    CsvErrorKind::MultipleTeeOtadata
                } else {
                    CsvErrorKind::MultipleOtadata
                };
                return Err(err(second.line, kind));
            }
            if first.size != OTADATA_SIZE {
                let size = first.size;
                let kind = if tee {
                    CsvErrorKind::TeeOtadataSize { size }
                } else {
                    CsvErrorKind::OtadataSize { size }
                };
                return Err(err(first.line, kind));
            }
        }
    }
    Ok(())
}

/// `PartitionTable.verify()` (gen_esp32part.py `verify()`) on a table that was not read from CSV (a binary table, as
/// gen_esp32part.py verifies binary input too). Errors carry `line` = entry index + 1.
pub(super) fn verify_table(t: &PartitionTable, opts: &CsvOptions) -> Result<(), CsvError> {
    let mut rows = [Row::EMPTY; MAX_PARTITIONS];
    let n = t.len().min(MAX_PARTITIONS);
    for ((slot, p), i) in rows.iter_mut().zip(t.iter()).zip(1..) {
        *slot = Row {
            name: p.label.as_str(),
            ptype: i64::from(p.ptype),
            subtype: i64::from(p.subtype),
            offset: Some(i64::from(p.offset)),
            size: i64::from(p.size),
            flags: p.flags,
            line: i,
        };
    }
    verify(rows.get(..n).unwrap_or(&[]), opts)
}

/// `verify_size_fits` (gen_esp32part.py `verify()` rule 10): the end of the partition with the highest offset.
fn check_fits(rows: &[Row<'_>], flash_size: u32) -> Result<(), CsvError> {
    let mut last: Option<&Row<'_>> = None;
    for r in rows {
        match last {
            Some(l) if r.offset() <= l.offset() => {}
            _ => last = Some(r),
        }
    }
    let occupied = last.map_or(0, |l| l.offset().saturating_add(l.size));
    if i64::from(flash_size) < occupied {
        return Err(err(
            0,
            CsvErrorKind::DoesNotFitFlash {
                occupied,
                flash_size,
            },
        ));
    }
    Ok(())
}

pub(super) fn parse(text: &str, opts: &CsvOptions) -> Result<PartitionTable, CsvError> {
    if let Some(bl) = opts.primary_bootloader_offset {
        if bl >= opts.table_offset {
            return Err(err(
                0,
                CsvErrorKind::BootloaderNotBelowTable {
                    bootloader_offset: bl,
                    table_offset: opts.table_offset,
                },
            ));
        }
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = [Row::EMPTY; MAX_PARTITIONS];
    let mut n = 0usize;
    let mut total = 0usize;
    let mut first_extra_line = 0usize;
    for (i, raw) in (PyLines { rest: text }).enumerate() {
        let line_no = i + 1;
        if let Some(var) = leading_variable(raw) {
            return Err(err(
                line_no,
                CsvErrorKind::UnknownVariable {
                    name: Snippet::new(var),
                },
            ));
        }
        let line = py_strip(raw);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let row = parse_row(line, line_no, opts).map_err(|k| err(line_no, k))?;
        match rows.get_mut(n) {
            Some(slot) => {
                *slot = row;
                n += 1;
            }
            None if first_extra_line == 0 => first_extra_line = line_no,
            None => {}
        }
        total += 1;
    }
    if total > MAX_PARTITIONS {
        return Err(err(
            first_extra_line,
            CsvErrorKind::TooManyPartitions {
                count: total,
                max: MAX_PARTITIONS,
            },
        ));
    }
    let rows = rows.get_mut(..n).unwrap_or(&mut []);
    fix_offsets(rows, i64::from(opts.table_offset))?;
    if opts.verify {
        verify(rows, opts)?;
    }
    if let Some(fs) = opts.flash_size {
        check_fits(rows, fs)?;
    }
    let mut table = PartitionTable::new();
    for r in rows.iter() {
        let out_of_range = |field: &'static str, value: i64| {
            err(
                r.line,
                CsvErrorKind::ValueOutOfRange {
                    name: Snippet::new(r.name),
                    field,
                    value,
                },
            )
        };
        let ptype = u8::try_from(r.ptype).map_err(|_| out_of_range("type", r.ptype))?;
        let subtype = u8::try_from(r.subtype).map_err(|_| out_of_range("subtype", r.subtype))?;
        let offset = u32::try_from(r.offset()).map_err(|_| out_of_range("offset", r.offset()))?;
        let size = u32::try_from(r.size).map_err(|_| out_of_range("size", r.size))?;
        let p = Partition {
            ptype,
            subtype,
            offset,
            size,
            label: Label::new(r.name),
            flags: r.flags,
        };
        table.push(p).map_err(|_| {
            err(
                r.line,
                CsvErrorKind::TooManyPartitions {
                    count: total,
                    max: MAX_PARTITIONS,
                },
            )
        })?;
    }
    Ok(table)
}

/// `PartitionDefinition.to_csv` `addr_format(size, True)`: `M`/`K` when divisible, else hex.
struct SizeText(u32);
impl fmt::Display for SizeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = i64::from(self.0);
        if a % MIB == 0 {
            write!(f, "{}M", a / MIB)
        } else if a % KIB == 0 {
            write!(f, "{}K", a / KIB)
        } else {
            write!(f, "0x{:x}", a)
        }
    }
}

/// `PartitionTable.to_csv()`. Unknown flag bits are dropped (gen_esp32part.py warns and drops
/// them too); the label is printed up to its first NUL.
pub(super) fn write<W: fmt::Write>(t: &PartitionTable, w: &mut W) -> fmt::Result {
    w.write_str(CSV_HEADER)?;
    for p in t.iter() {
        write!(w, "{},", p.label.as_str())?;
        match super::type_name(p.ptype) {
            Some(n) => write!(w, "{},", n)?,
            None => write!(w, "{},", p.ptype)?,
        }
        match super::subtype_name(p.ptype, p.subtype) {
            Some(n) => write!(w, "{},", n)?,
            None => write!(w, "{},", p.subtype)?,
        }
        write!(w, "0x{:x},{},", p.offset, SizeText(p.size))?;
        let mut sep = "";
        for (name, bit) in FLAG_NAMES {
            if p.flags & bit != 0 {
                write!(w, "{}{}", sep, name)?;
                sep = ":";
            }
        }
        w.write_str("\n")?;
    }
    Ok(())
}
