//! The power-safe resume record of an interrupted app download: one 4 KiB flash sector holding
//! an append-only log of small CRC-protected records, a header naming the download (target slot,
//! URI, ETag / Last-Modified, length) and then progress checkpoints, so an update continues
//! from the last written-and-verified byte after a restart or a power cut.
//!
//! Where the sector is ([`ResumeLog::locate`]): the first sector of a data partition labelled
//! [`RESUME_PARTITION_LABEL`] when the table has one, otherwise the last sector of the target
//! OTA slot, which the image must then leave free (its length is limited to the slot size minus
//! one sector). ESP-IDF leaves the resume state to the app (`ota_image_bytes_written`, usually
//! kept in NVS; idf-formats.md §4): it keeps only a byte count, with no check that the server's
//! file is unchanged (peers.md §2.4). This log also records the URI, the validator and the slot,
//! lives where the update writes anyway, and never touches the app's NVS.
//!
//! Layout of the sector (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic [`LOG_MAGIC`] (`b"OTAR"`) |
//! | 4 | 1 | format version [`LOG_VERSION`] |
//! | 5 | 1 | validator kind (1 ETag, 2 Last-Modified) |
//! | 6 | 1 | validator length (1..=[`MAX_VALIDATOR_LEN`]) |
//! | 7 | 1 | record kind: 0 an image download, 1 a delta patch, 2 a delta patch behind the esp_delta_ota header |
//! | 8 | 4 | target slot offset |
//! | 12 | 4 | target slot size |
//! | 16 | 4 | file length the server announced first |
//! | 20 | 4 | checkpoint step (a multiple of 4 KiB) |
//! | 24 | 16 | first 16 bytes of SHA-256 of the URI |
//! | 40 | 84 | validator text, 0-padded |
//! | 124 | 4 | CRC-32 (ISO-HDLC) of bytes 0..124 |
//! | 128 + 8·i | 8 | kind 0, checkpoint i: offset u32, CRC-32 of (header CRC ‖ offset) |
//! | 128 + 344·i | 344 | kind 1 and 2, checkpoint i: the applier's [`Checkpoint`] record (308 bytes), the base image's SHA-256 (32), CRC-32 of (header CRC ‖ both) (4) |
//!
//! A delta checkpoint (kinds 1 and 2, [`RecordKind::Delta`]) holds the whole applier state at an
//! output offset that is a multiple of the step (`crate::delta::Checkpoint`: decompressor
//! window, patch position, block in progress), so a cut delta update resumes at that output
//! byte and asks the server for the patch from the byte the applier had reached; the header's
//! `total_len` is then the patch's length and the validator the patch file's. 11 fit a sector.
//!
//! On a flash whose write unit `W` is larger than a record ([`crate::flash`]), each record
//! starts on its own word and the rest of the word stays 0xFF: the header takes
//! `round_up(128, W)` bytes and checkpoint `i` is at `round_up(128, W) + i·max(8, W)`
//! ([`entry_offset`]). At `W` ≤ 8 (esp-storage's 4 included) the layout is the one above.
//!
//! Power safety: the sector is erased and the header written *before* the first byte of a new
//! download reaches the slot; a checkpoint is appended only after the bytes below it were
//! written and read back; entries are never rewritten (a torn entry fails its CRC and is
//! skipped). A torn header or erase leaves either no valid header (start over) or the old
//! header with some of its old checkpoints, which still describe the slot's untouched bytes.

use core::fmt;

use crc::{Crc, CRC_32_ISO_HDLC};
use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};

use crate::bytes::le32;
use crate::delta::{Checkpoint, CHECKPOINT_LEN};
use crate::flash::{Region, SECTOR_SIZE};
use crate::partition::{Partition, PartitionTable};

/// Label of the optional data partition that holds the resume log (any data subtype).
pub const RESUME_PARTITION_LABEL: &str = "ota_resume";
/// `b"OTAR"` read as a little-endian u32.
pub const LOG_MAGIC: u32 = u32::from_le_bytes(*b"OTAR");
/// Version of the layout above.
pub const LOG_VERSION: u8 = 1;
/// Bytes of the header record.
pub const HEADER_SIZE: usize = 128;
/// Bytes of one checkpoint record.
pub const ENTRY_SIZE: usize = 8;
/// Bytes of one delta checkpoint record: the applier record, the base SHA-256, a CRC-32.
pub const DELTA_ENTRY_SIZE: usize = CHECKPOINT_LEN + 32 + 4;
/// Checkpoint records that fit after the header in one sector.
pub const MAX_ENTRIES: usize = (SECTOR_SIZE as usize - HEADER_SIZE) / ENTRY_SIZE;
/// Entries kept free for checkpoints torn by power cuts when choosing the step.
pub const TORN_RESERVE: usize = 16;

/// What the checkpoints of a resume record describe (byte 7 of the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// An image download: a checkpoint is the count of image bytes written and verified.
    Image,
    /// A delta update: a checkpoint is the applier's state at an output offset; the download
    /// is the patch (`esp_header`: behind esp_delta_ota's 64-byte header).
    Delta { esp_header: bool },
}

impl RecordKind {
    fn id(self) -> u8 {
        match self {
            RecordKind::Image => 0,
            RecordKind::Delta { esp_header: false } => 1,
            RecordKind::Delta { esp_header: true } => 2,
        }
    }

    fn from_id(id: u8) -> Option<RecordKind> {
        Some(match id {
            0 => RecordKind::Image,
            1 => RecordKind::Delta { esp_header: false },
            2 => RecordKind::Delta { esp_header: true },
            _ => return None,
        })
    }

    /// Bytes of one checkpoint record of this kind.
    pub const fn entry_size(self) -> usize {
        match self {
            RecordKind::Image => ENTRY_SIZE,
            RecordKind::Delta { .. } => DELTA_ENTRY_SIZE,
        }
    }
}

/// Distance between checkpoint records of `kind` on a flash with write unit `ws`: each starts
/// on its own word.
const fn stride(ws: u32, kind: RecordKind) -> usize {
    crate::flash::round_up(kind.entry_size() as u32, ws) as usize
}

/// Where checkpoint `index` lies in the sector on a flash with write unit `ws`.
pub const fn entry_offset(ws: u32, index: usize) -> u32 {
    entry_offset_of(ws, RecordKind::Image, index)
}

const fn entry_offset_of(ws: u32, kind: RecordKind, index: usize) -> u32 {
    crate::flash::round_up(HEADER_SIZE as u32, ws) + (index * stride(ws, kind)) as u32
}

/// Checkpoint records that fit after the header with write unit `ws` ([`MAX_ENTRIES`] up to 8).
pub const fn max_entries(ws: u32) -> usize {
    max_entries_of(ws, RecordKind::Image)
}

/// Checkpoint records of `kind` that fit after the header with write unit `ws`.
pub const fn max_entries_of(ws: u32, kind: RecordKind) -> usize {
    (SECTOR_SIZE - crate::flash::round_up(HEADER_SIZE as u32, ws)) as usize / stride(ws, kind)
}

/// Records kept free for torn checkpoints: [`TORN_RESERVE`], or a quarter of a small log.
const fn torn_reserve(ws: u32, kind: RecordKind) -> usize {
    let quarter = max_entries_of(ws, kind) / 4;
    if quarter < TORN_RESERVE {
        quarter
    } else {
        TORN_RESERVE
    }
}
/// Longest ETag / Last-Modified value the header stores.
pub const MAX_VALIDATOR_LEN: usize = 84;
/// Bytes of the URI digest stored in the header.
pub const URI_HASH_LEN: usize = 16;
/// Offset of the header CRC.
const OFF_HEADER_CRC: usize = HEADER_SIZE - 4;
/// Erased NOR flash reads as this (idf-formats.md §2.8).
const ERASED: u8 = 0xFF;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// What kind of HTTP validator identifies the file version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidatorKind {
    /// A strong `ETag` (weak `W/` tags cannot be used in `If-Range`, RFC 9110 §13.1.5).
    ETag = 1,
    /// `Last-Modified`.
    LastModified = 2,
}

/// An `ETag` or `Last-Modified` value, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Validator {
    kind: ValidatorKind,
    len: u8,
    bytes: [u8; MAX_VALIDATOR_LEN],
}

impl Validator {
    /// `None` when `value` is empty, longer than [`MAX_VALIDATOR_LEN`] or not visible ASCII
    /// (an HTTP header value we could not send back in `If-Range`).
    pub fn new(kind: ValidatorKind, value: &str) -> Option<Validator> {
        let b = value.as_bytes();
        if b.is_empty()
            || b.len() > MAX_VALIDATOR_LEN
            || !b.iter().all(|&c| (0x20..0x7F).contains(&c))
        {
            return None;
        }
        let mut bytes = [0u8; MAX_VALIDATOR_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Some(Validator {
            kind,
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn kind(&self) -> ValidatorKind {
        self.kind
    }

    /// The header value, e.g. `"abc"` with its quotes for an ETag.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({})", self.kind, self.as_str())
    }
}

/// The first [`URI_HASH_LEN`] bytes of SHA-256 of `uri`.
pub fn uri_hash(uri: &str) -> [u8; URI_HASH_LEN] {
    let digest = Sha256::digest(uri.as_bytes());
    let mut out = [0u8; URI_HASH_LEN];
    out.copy_from_slice(&digest[..URI_HASH_LEN]);
    out
}

/// The checkpoint step for an image of `len` bytes: 4 KiB, or a multiple of it when the image
/// has more sectors than the log has entries (minus [`TORN_RESERVE`]).
pub fn step_for(len: u32) -> u32 {
    step_for_write_size(len, 1)
}

/// [`step_for`] on a flash with write unit `ws`, whose log holds [`max_entries`]`(ws)` records.
pub fn step_for_write_size(len: u32, ws: u32) -> u32 {
    step_for_kind(len, ws, RecordKind::Image)
}

/// The checkpoint step for `len` bytes of output (the image, also for a delta update) in a
/// log of `kind` records on a flash with write unit `ws`.
pub fn step_for_kind(len: u32, ws: u32, kind: RecordKind) -> u32 {
    let sectors = len.div_ceil(SECTOR_SIZE).max(1);
    let usable = (max_entries_of(ws, kind) - torn_reserve(ws, kind)).max(1) as u32;
    sectors.div_ceil(usable) * SECTOR_SIZE
}

/// Why a resume record cannot be used or kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResumeError {
    /// The record is for another slot than the one the update now targets.
    OtherSlot { record: u32, target: u32 },
    /// The record's progress is not a whole number of sectors inside the writable area.
    BadProgress { progress: u32, limit: u32 },
    /// The log sits in the slot's last sector and the image would reach it (or its length is
    /// unknown).
    NoRoom { image_len: Option<u32>, limit: u32 },
    /// The log given to an update is not the one its table keeps for the target slot
    /// ([`ResumeLog::locate`]); `home_offset`: that one's sector, if the slot has one.
    ForeignLog {
        log_offset: u32,
        home_offset: Option<u32>,
    },
    /// The record is of another kind than the update (an image download's record for a delta
    /// update, or the reverse), or a delta record holds no usable checkpoint.
    OtherKind { record: RecordKind },
    /// The delta record's checkpoint was saved over another base image than the running one.
    OtherBase,
    /// A delta checkpoint was offered at an output offset the engine has not (exactly) written.
    CheckpointNotDurable { output: u32, written: u32 },
}

impl core::error::Error for ResumeError {}

impl fmt::Display for ResumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResumeError::OtherSlot { record, target } => write!(
                f,
                "resume record is for the slot at 0x{:x}, the update targets 0x{:x}",
                record, target
            ),
            ResumeError::BadProgress { progress, limit } => write!(
                f,
                "resume record progress {} is not a multiple of 4096 within the {} writable bytes",
                progress, limit
            ),
            ResumeError::NoRoom { image_len, limit } => match image_len {
                Some(n) => write!(
                    f,
                    "the resume log needs the slot's last sector, but the {} byte image may use up to {} bytes",
                    n, limit
                ),
                None => write!(
                    f,
                    "the resume log needs the slot's last sector, and the image length is unknown"
                ),
            },
            ResumeError::ForeignLog {
                log_offset,
                home_offset: Some(home),
            } => write!(
                f,
                "the resume record at 0x{:x} is not the one the partition table keeps for the                  target slot (at 0x{:x}): not writing it",
                log_offset, home
            ),
            ResumeError::ForeignLog {
                log_offset,
                home_offset: None,
            } => write!(
                f,
                "the resume record at 0x{:x} is not the partition table's, and the target slot                  has no room for one: not writing it",
                log_offset
            ),
            ResumeError::OtherKind { record } => write!(
                f,
                "the resume record is for {} and holds no checkpoint this update can use",
                match record {
                    RecordKind::Image => "an image download",
                    RecordKind::Delta { .. } => "a delta update",
                }
            ),
            ResumeError::OtherBase => write!(
                f,
                "the delta checkpoint was saved over another base image than the running one"
            ),
            ResumeError::CheckpointNotDurable { output, written } => write!(
                f,
                "a delta checkpoint at output byte {} cannot be saved: {} bytes are written to flash",
                output, written
            ),
        }
    }
}

/// The header record: which download the checkpoints belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeHeader {
    pub slot_offset: u32,
    pub slot_size: u32,
    /// The file length the server announced when the download started.
    pub total_len: u32,
    /// Checkpoints are multiples of this (a multiple of [`SECTOR_SIZE`]).
    pub step: u32,
    pub uri_hash: [u8; URI_HASH_LEN],
    pub validator: Validator,
    /// What the checkpoints describe.
    pub kind: RecordKind,
}

impl ResumeHeader {
    /// A header for downloading `uri` (identified by `validator`, `total_len` bytes) into `slot`.
    pub fn new(slot: &Partition, uri: &str, validator: Validator, total_len: u32) -> Self {
        ResumeHeader {
            slot_offset: slot.offset,
            slot_size: slot.size,
            total_len,
            step: step_for(total_len),
            uri_hash: uri_hash(uri),
            validator,
            kind: RecordKind::Image,
        }
    }

    /// Whether this header describes a download of `uri` into `slot`.
    pub fn is_for(&self, uri: &str, slot: &Partition) -> bool {
        self.uri_hash == uri_hash(uri)
            && self.slot_offset == slot.offset
            && self.slot_size == slot.size
    }

    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&LOG_MAGIC.to_le_bytes());
        b[4] = LOG_VERSION;
        b[5] = self.validator.kind as u8;
        b[6] = self.validator.len;
        b[7] = self.kind.id();
        b[8..12].copy_from_slice(&self.slot_offset.to_le_bytes());
        b[12..16].copy_from_slice(&self.slot_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.total_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.step.to_le_bytes());
        b[24..40].copy_from_slice(&self.uri_hash);
        b[40..40 + MAX_VALIDATOR_LEN].copy_from_slice(&self.validator.bytes);
        let crc = CRC32.checksum(&b[..OFF_HEADER_CRC]);
        b[OFF_HEADER_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse a header record; `None` unless magic, version, CRC and every field are sound.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Option<ResumeHeader> {
        let u32_at = |at: usize| le32(b, at);
        if u32_at(0) != LOG_MAGIC || b[4] != LOG_VERSION {
            return None;
        }
        if CRC32.checksum(&b[..OFF_HEADER_CRC]) != u32_at(OFF_HEADER_CRC) {
            return None;
        }
        let kind = match b[5] {
            1 => ValidatorKind::ETag,
            2 => ValidatorKind::LastModified,
            _ => return None,
        };
        let record_kind = RecordKind::from_id(b[7])?;
        let len = b[6] as usize;
        let text = b.get(40..40 + len)?;
        let validator = Validator::new(kind, core::str::from_utf8(text).ok()?)?;
        let step = u32_at(20);
        if step == 0 || !step.is_multiple_of(SECTOR_SIZE) {
            return None;
        }
        let mut uri_hash = [0u8; URI_HASH_LEN];
        uri_hash.copy_from_slice(&b[24..40]);
        Some(ResumeHeader {
            slot_offset: u32_at(8),
            slot_size: u32_at(12),
            total_len: u32_at(16),
            step,
            uri_hash,
            validator,
            kind: record_kind,
        })
    }

    fn crc(&self) -> u32 {
        let b = self.to_bytes();
        le32(&b, OFF_HEADER_CRC)
    }

    fn entry(&self, offset: u32) -> [u8; ENTRY_SIZE] {
        let mut e = [0u8; ENTRY_SIZE];
        e[..4].copy_from_slice(&offset.to_le_bytes());
        let mut digest = CRC32.digest();
        digest.update(&self.crc().to_le_bytes());
        digest.update(&offset.to_le_bytes());
        e[4..].copy_from_slice(&digest.finalize().to_le_bytes());
        e
    }

    /// The offset a checkpoint record holds, if it is intact and belongs to this header.
    fn parse_entry(&self, e: &[u8; ENTRY_SIZE]) -> Option<u32> {
        let offset = le32(e, 0);
        (self.entry(offset) == *e).then_some(offset)
    }

    fn delta_crc(&self, cp: &[u8], base: &[u8; 32]) -> u32 {
        let mut digest = CRC32.digest();
        digest.update(&self.crc().to_le_bytes());
        digest.update(cp);
        digest.update(base);
        digest.finalize()
    }

    fn delta_entry(&self, d: &DeltaCheckpoint) -> [u8; DELTA_ENTRY_SIZE] {
        let mut e = [0u8; DELTA_ENTRY_SIZE];
        let cp = d.checkpoint.to_bytes();
        e[..CHECKPOINT_LEN].copy_from_slice(&cp);
        e[CHECKPOINT_LEN..CHECKPOINT_LEN + 32].copy_from_slice(&d.base_sha256);
        let crc = self.delta_crc(&cp, &d.base_sha256);
        e[CHECKPOINT_LEN + 32..].copy_from_slice(&crc.to_le_bytes());
        e
    }

    /// The delta checkpoint a record holds, if it is intact and belongs to this header.
    fn parse_delta_entry(&self, e: &[u8; DELTA_ENTRY_SIZE]) -> Option<DeltaCheckpoint> {
        let (cp, rest) = e.split_at(CHECKPOINT_LEN);
        let mut base = [0u8; 32];
        base.copy_from_slice(&rest[..32]);
        if self.delta_crc(cp, &base) != le32(rest, 32) {
            return None;
        }
        let checkpoint = Checkpoint::from_bytes(cp).ok()?;
        Some(DeltaCheckpoint {
            checkpoint,
            base_sha256: base,
        })
    }
}

/// A delta update's checkpoint: the applier's state and the base it was applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaCheckpoint {
    pub checkpoint: Checkpoint,
    /// SHA-256 of the base image (the running slot's, `delta::base_image_sha256`).
    pub base_sha256: [u8; 32],
}

/// A header with the progress its checkpoints record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeRecord {
    pub header: ResumeHeader,
    /// Bytes of the image written and verified (the highest intact checkpoint; 0 if none).
    pub progress: u32,
    /// For a delta record: the checkpoint `progress` comes from.
    pub delta: Option<DeltaCheckpoint>,
    /// Index of the first unused checkpoint record (after any torn one).
    next_entry: usize,
    /// Records the sector holds on this flash ([`max_entries`]).
    capacity: usize,
}

impl ResumeRecord {
    /// Whether every checkpoint record is used.
    pub fn is_full(&self) -> bool {
        self.next_entry >= self.capacity
    }
}

/// Where the log lives: one sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogPlace {
    /// The first sector of the `ota_resume` data partition.
    Partition,
    /// The last sector of the target slot.
    SlotTail,
}

/// The resume log of one target slot: its sector and how much of the slot an image may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeLog {
    place: LogPlace,
    region: Region,
    /// Bytes of the slot an image may use with this log in place.
    image_limit: u32,
}

impl ResumeLog {
    /// The log for updates into `slot`: the `ota_resume` data partition when the table has one
    /// (sector-aligned, at least one sector), else the slot's last sector. `None` when the slot
    /// is too small to give up a sector (under two sectors) and there is no such partition.
    pub fn locate(table: &PartitionTable, slot: &Partition) -> Option<ResumeLog> {
        if let Some(p) = table.find_data(RESUME_PARTITION_LABEL) {
            if p.size >= SECTOR_SIZE && p.offset.is_multiple_of(SECTOR_SIZE) {
                return Some(ResumeLog {
                    place: LogPlace::Partition,
                    region: Region::new(p.offset, SECTOR_SIZE),
                    image_limit: slot.size,
                });
            }
        }
        if slot.size < 2 * SECTOR_SIZE || !slot.size.is_multiple_of(SECTOR_SIZE) {
            return None;
        }
        Some(ResumeLog {
            place: LogPlace::SlotTail,
            region: Region::new(slot.offset + slot.size - SECTOR_SIZE, SECTOR_SIZE),
            image_limit: slot.size - SECTOR_SIZE,
        })
    }

    pub fn place(&self) -> LogPlace {
        self.place
    }

    /// The flash sector of the log.
    pub fn region(&self) -> Region {
        self.region
    }

    /// How many bytes of the slot an image may use while the log is kept.
    pub fn image_limit(&self) -> u32 {
        self.image_limit
    }

    /// Whether an image of `len` bytes (None: unknown) can be downloaded with this log kept.
    pub fn check_room(&self, len: Option<u64>) -> Result<(), ResumeError> {
        match (self.place, len) {
            (LogPlace::Partition, Some(n)) | (LogPlace::SlotTail, Some(n))
                if n <= self.image_limit as u64 =>
            {
                Ok(())
            }
            (LogPlace::Partition, None) => Ok(()),
            (_, len) => Err(ResumeError::NoRoom {
                image_len: len.map(|n| n.min(u32::MAX as u64) as u32),
                limit: self.image_limit,
            }),
        }
    }

    /// Read the log: `None` when the sector holds no intact header. Checkpoints that are torn,
    /// not sector-aligned, or beyond the usable area are ignored.
    pub fn read<F: NorFlash>(&self, flash: &mut F) -> Result<Option<ResumeRecord>, crate::Error> {
        let mut hb = [0u8; HEADER_SIZE];
        self.region.read(flash, 0, &mut hb)?;
        let Some(header) = ResumeHeader::parse(&hb) else {
            return Ok(None);
        };
        let ws = crate::flash::write_size::<F>();
        let capacity = max_entries_of(ws, header.kind);
        let mut rec = ResumeRecord {
            header,
            progress: 0,
            delta: None,
            next_entry: 0,
            capacity,
        };
        match header.kind {
            RecordKind::Image if ws as usize <= ENTRY_SIZE => {
                let mut buf = crate::flash::Aligned::<{ ENTRY_SIZE * 16 }>::filled(0);
                let mut index = 0usize;
                while index < capacity {
                    let n = (capacity - index).min(16);
                    let chunk = &mut buf[..n * ENTRY_SIZE];
                    self.region.read(flash, entry_offset(ws, index), chunk)?;
                    for (k, raw) in chunk.chunks_exact(ENTRY_SIZE).enumerate() {
                        let mut e = [0u8; ENTRY_SIZE];
                        e.copy_from_slice(raw);
                        self.take_entry(&mut rec, index + k, &e);
                    }
                    index += n;
                }
            }
            RecordKind::Image => {
                for index in 0..capacity {
                    let mut e = [0u8; ENTRY_SIZE];
                    self.region.read(flash, entry_offset(ws, index), &mut e)?;
                    self.take_entry(&mut rec, index, &e);
                }
            }
            RecordKind::Delta { .. } => {
                let mut e = crate::flash::Aligned::<DELTA_ENTRY_SIZE>::filled(0);
                for index in 0..capacity {
                    let at = entry_offset_of(ws, header.kind, index);
                    self.region.read(flash, at, &mut e.0)?;
                    if e.iter().all(|&b| b == ERASED) {
                        continue;
                    }
                    rec.next_entry = index + 1;
                    let Some(d) = header.parse_delta_entry(&e.0) else {
                        continue;
                    };
                    let off = d.checkpoint.output_offset();
                    if off > 0
                        && off.is_multiple_of(SECTOR_SIZE)
                        && off <= self.image_limit
                        && off > rec.progress
                    {
                        rec.progress = off;
                        rec.delta = Some(d);
                    }
                }
            }
        }
        Ok(Some(rec))
    }

    /// One image checkpoint record read back: an erased one is free; a used one moves
    /// `next_entry` past it, and its offset, when intact, sector-aligned and inside the usable
    /// area, raises `progress`.
    fn take_entry(&self, rec: &mut ResumeRecord, index: usize, e: &[u8; ENTRY_SIZE]) {
        if e.iter().all(|&b| b == ERASED) {
            return;
        }
        rec.next_entry = index + 1;
        if let Some(off) = rec.header.parse_entry(e) {
            if off.is_multiple_of(SECTOR_SIZE) && off <= self.image_limit {
                rec.progress = rec.progress.max(off);
            }
        }
    }

    /// Start a new log for `header`: erase the sector (unless blank), then write the header.
    pub fn start<F: NorFlash>(
        &self,
        flash: &mut F,
        header: &ResumeHeader,
    ) -> Result<ResumeRecord, crate::Error> {
        self.clear(flash)?;
        self.region.write(flash, 0, &header.to_bytes())?;
        Ok(ResumeRecord {
            header: *header,
            progress: 0,
            delta: None,
            next_entry: 0,
            capacity: max_entries_of(crate::flash::write_size::<F>(), header.kind),
        })
    }

    /// Append a checkpoint: the first `offset` bytes are written and verified. Returns `false`
    /// (and writes nothing) when the log is full or `offset` is not past the last checkpoint.
    pub fn checkpoint<F: NorFlash>(
        &self,
        flash: &mut F,
        record: &mut ResumeRecord,
        offset: u32,
    ) -> Result<bool, crate::Error> {
        if record.is_full() || offset <= record.progress || record.header.kind != RecordKind::Image
        {
            return Ok(false);
        }
        let at = entry_offset(crate::flash::write_size::<F>(), record.next_entry);
        // The slot is used (even if the write tears) so that a later append never reprograms it.
        record.next_entry += 1;
        self.region.write(flash, at, &record.header.entry(offset))?;
        record.progress = offset;
        Ok(true)
    }

    /// Append a delta checkpoint: the first `d.checkpoint.output_offset()` output bytes are
    /// written and verified, and the applier state at that byte is `d.checkpoint`. Returns
    /// `false` (and writes nothing) when the log is full, is not a delta log, or the offset is
    /// not past the last checkpoint.
    pub fn checkpoint_delta<F: NorFlash>(
        &self,
        flash: &mut F,
        record: &mut ResumeRecord,
        d: &DeltaCheckpoint,
    ) -> Result<bool, crate::Error> {
        let offset = d.checkpoint.output_offset();
        let kind = record.header.kind;
        if record.is_full() || offset <= record.progress || kind == RecordKind::Image {
            return Ok(false);
        }
        let ws = crate::flash::write_size::<F>();
        let at = entry_offset_of(ws, kind, record.next_entry);
        record.next_entry += 1;
        let mut e =
            crate::flash::Aligned::<{ DELTA_ENTRY_SIZE + crate::flash::MAX_WORD }>::filled(ERASED);
        e[..DELTA_ENTRY_SIZE].copy_from_slice(&record.header.delta_entry(d));
        let len = crate::flash::round_up(DELTA_ENTRY_SIZE as u32, ws) as usize;
        self.region.write(flash, at, &e[..len])?;
        record.progress = offset;
        record.delta = Some(*d);
        Ok(true)
    }

    /// Forget any record: erase the sector unless it is already blank.
    pub fn clear<F: NorFlash>(&self, flash: &mut F) -> Result<(), crate::Error> {
        let mut buf = crate::flash::Aligned::<256>::filled(0);
        let mut off = 0;
        while off < SECTOR_SIZE {
            self.region.read(flash, off, &mut buf.0)?;
            if buf.iter().any(|&b| b != ERASED) {
                self.region.erase(flash, 0, SECTOR_SIZE)?;
                return Ok(());
            }
            off += buf.len() as u32;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::testutil::{example_table, RamFlash};

    fn etag(s: &str) -> Validator {
        Validator::new(ValidatorKind::ETag, s).unwrap()
    }

    fn setup() -> (RamFlash, PartitionTable, Partition, ResumeLog) {
        let t = example_table();
        let slot = *t.ota(1).unwrap();
        let log = ResumeLog::locate(&t, &slot).unwrap();
        (RamFlash::new(4 << 20), t, slot, log)
    }

    #[test]
    fn log_lives_in_the_slot_tail_without_an_ota_resume_partition() {
        let (_, _, slot, log) = setup();
        assert_eq!(log.place(), LogPlace::SlotTail);
        assert_eq!(log.region().offset, slot.offset + slot.size - SECTOR_SIZE);
        assert_eq!(log.image_limit(), slot.size - SECTOR_SIZE);
        assert!(log
            .check_room(Some((slot.size - SECTOR_SIZE) as u64))
            .is_ok());
        assert!(log
            .check_room(Some((slot.size - SECTOR_SIZE + 1) as u64))
            .is_err());
        assert!(log.check_room(None).is_err());
    }

    #[test]
    fn log_prefers_the_ota_resume_partition() {
        let mut t = example_table();
        let mut p = *t.find_data("flash_tone").unwrap();
        p.offset = 0x310000;
        p.size = 0x2000;
        p.label = crate::partition::Label::new(RESUME_PARTITION_LABEL);
        t.push(p).unwrap();
        let slot = *t.ota(1).unwrap();
        let log = ResumeLog::locate(&t, &slot).unwrap();
        assert_eq!(log.place(), LogPlace::Partition);
        assert_eq!(log.region(), Region::new(0x310000, SECTOR_SIZE));
        assert_eq!(log.image_limit(), slot.size);
        assert!(log.check_room(None).is_ok());
    }

    #[test]
    fn record_round_trips_and_keeps_the_highest_checkpoint() {
        let (mut f, _, slot, log) = setup();
        assert_eq!(log.read(&mut f).unwrap(), None);
        let h = ResumeHeader::new(&slot, "http://h/a.bin", etag("\"v1\""), 300_000);
        assert_eq!(h.step, SECTOR_SIZE);
        let mut rec = log.start(&mut f, &h).unwrap();
        for k in 1..=5u32 {
            assert!(log.checkpoint(&mut f, &mut rec, k * 4096).unwrap());
        }
        assert!(!log.checkpoint(&mut f, &mut rec, 4096).unwrap(), "not past");
        let back = log.read(&mut f).unwrap().unwrap();
        assert_eq!(back.header, h);
        assert_eq!(back.progress, 5 * 4096);
        assert!(back.header.is_for("http://h/a.bin", &slot));
        assert!(!back.header.is_for("http://h/b.bin", &slot));
        assert_eq!(back.header.validator.as_str(), "\"v1\"");
        log.clear(&mut f).unwrap();
        assert_eq!(log.read(&mut f).unwrap(), None);
    }

    #[test]
    fn torn_checkpoint_is_skipped_and_never_reprogrammed() {
        let (mut f, _, slot, log) = setup();
        let h = ResumeHeader::new(&slot, "http://h/a.bin", etag("\"v1\""), 300_000);
        let mut rec = log.start(&mut f, &h).unwrap();
        log.checkpoint(&mut f, &mut rec, 4096).unwrap();
        // A torn append: only the first 3 bytes of the next entry got programmed.
        let at = log.region().offset as usize + HEADER_SIZE + ENTRY_SIZE;
        let e = h.entry(8192);
        f.data[at..at + 3].copy_from_slice(&e[..3]);
        let mut back = log.read(&mut f).unwrap().unwrap();
        assert_eq!(back.progress, 4096);
        log.checkpoint(&mut f, &mut back, 8192).unwrap();
        let again = log.read(&mut f).unwrap().unwrap();
        assert_eq!(again.progress, 8192);
        assert_eq!(again.next_entry, 3);
    }

    #[test]
    fn torn_or_corrupt_header_means_no_record() {
        let (mut f, _, slot, log) = setup();
        let h = ResumeHeader::new(&slot, "http://h/a.bin", etag("\"v1\""), 300_000);
        let bytes = h.to_bytes();
        for cut in [0usize, 1, 4, 64, HEADER_SIZE - 1] {
            let at = log.region().offset as usize;
            f.data[at..at + HEADER_SIZE].fill(0xFF);
            f.data[at..at + cut].copy_from_slice(&bytes[..cut]);
            assert_eq!(log.read(&mut f).unwrap(), None, "cut {cut}");
        }
        let at = log.region().offset as usize;
        f.data[at..at + HEADER_SIZE].copy_from_slice(&bytes);
        f.data[at + 30] ^= 0x10;
        assert_eq!(log.read(&mut f).unwrap(), None);
    }

    #[test]
    fn checkpoints_of_another_header_do_not_count() {
        let (mut f, _, slot, log) = setup();
        let h1 = ResumeHeader::new(&slot, "http://h/a.bin", etag("\"v1\""), 300_000);
        let mut rec = log.start(&mut f, &h1).unwrap();
        log.checkpoint(&mut f, &mut rec, 8192).unwrap();
        // Same sector, new header written over an erased header area only (as a torn erase
        // could leave it): old checkpoints must not be taken for the new download.
        let h2 = ResumeHeader::new(&slot, "http://h/a.bin", etag("\"v2\""), 300_000);
        let at = log.region().offset as usize;
        f.data[at..at + HEADER_SIZE].copy_from_slice(&h2.to_bytes());
        let back = log.read(&mut f).unwrap().unwrap();
        assert_eq!(back.header, h2);
        assert_eq!(back.progress, 0);
    }

    #[test]
    fn step_grows_for_images_with_more_sectors_than_entries() {
        assert_eq!(step_for(0), SECTOR_SIZE);
        assert_eq!(step_for(1_000_000), SECTOR_SIZE);
        let usable = (MAX_ENTRIES - TORN_RESERVE) as u32;
        assert_eq!(step_for(usable * SECTOR_SIZE), SECTOR_SIZE);
        assert_eq!(step_for(usable * SECTOR_SIZE + 1), 2 * SECTOR_SIZE);
    }

    #[test]
    fn validator_rejects_what_cannot_be_sent_back() {
        assert!(Validator::new(ValidatorKind::ETag, "").is_none());
        assert!(Validator::new(ValidatorKind::ETag, "a\r\nb").is_none());
        let long = [b'a'; MAX_VALIDATOR_LEN + 1];
        assert!(
            Validator::new(ValidatorKind::ETag, core::str::from_utf8(&long).unwrap()).is_none()
        );
        let ok = Validator::new(ValidatorKind::LastModified, "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(ok.unwrap().kind(), ValidatorKind::LastModified);
    }
}
