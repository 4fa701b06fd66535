//! otadata: the two `esp_ota_select_entry_t` sectors that say which OTA slot boots.
//! Byte-exact entries and CRC, the app-side rules (`esp_ota_set_boot_partition`, the rollback
//! API) and the bootloader's otadata writes, each as a pure plan plus an I/O step.
//! Upstream (esp-idf): the entry in `components/bootloader_support/include/esp_flash_partitions.h`,
//! CRC and selection in `components/bootloader_support/src/bootloader_common_loader.c`, the app
//! side in `components/app_update/esp_ota_ops.c`, the bootloader's writes in
//! `components/bootloader_support/src/bootloader_utility.c`.
//!
//! Every function that changes flash does what ESP-IDF does: erase one 4 KiB otadata sector and
//! write one 32-byte entry at its start. The `plan_*` functions compute that write without any
//! I/O, so update engines and fault-injection tests can reason about it.

use core::fmt;

use crc::{Algorithm, Crc, NoTable};
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};

use crate::bytes::le32;
use crate::partition::{Label, Partition};

/// Size of one entry (`esp_flash_partitions.h`).
pub const ENTRY_SIZE: usize = 32;
/// Required size of the otadata partition: two 4 KiB sectors (`esp_flash_partitions.h`).
pub const OTADATA_SIZE: u32 = 0x2000;
/// Each entry lives at the start of its own 4 KiB sector; ESP-IDF erases exactly that sector
/// before writing the entry (`erase_size` / `SPI_SEC_SIZE`, `esp_flash_partitions.h`, `esp_ota_ops.c`).
pub const OTADATA_SECTOR_SIZE: u32 = 0x1000;
/// `ota_seq` of an erased entry (`esp_flash_partitions.h`); such an entry is always invalid (`bootloader_common_loader.c`).
pub const SEQ_ERASED: u32 = 0xFFFF_FFFF;
/// Length of the `seq_label` field (`esp_flash_partitions.h`).
pub const SEQ_LABEL_LEN: usize = 20;
/// `seq_label` as the bootloader writes it and as an erased sector holds it (`esp_flash_partitions.h`, `bootloader_utility.c`).
pub const SEQ_LABEL_ERASED: [u8; SEQ_LABEL_LEN] = [0xFF; SEQ_LABEL_LEN];

/// Byte offset of `ota_seq` in an entry (`esp_flash_partitions.h`).
pub const OFF_SEQ: usize = 0x00;
/// Byte offset of `seq_label` (`esp_flash_partitions.h`).
pub const OFF_SEQ_LABEL: usize = 0x04;
/// Byte offset of `ota_state` (`esp_flash_partitions.h`; not covered by the CRC).
pub const OFF_STATE: usize = 0x18;
/// Byte offset of `crc` (`esp_flash_partitions.h`).
pub const OFF_CRC: usize = 0x1C;

/// The otadata CRC parameters (esp-idf `bootloader_common_loader.c`): reflected CRC-32, poly 0x04C11DB7, but
/// init 0 and xorout 0xFFFFFFFF (`esp_rom_crc32_le(UINT32_MAX, …)`), *not* the standard CRC-32.
pub const OTA_SELECT_CRC: Algorithm<u32> = Algorithm {
    width: 32,
    poly: 0x04C1_1DB7,
    init: 0x0000_0000,
    refin: true,
    refout: true,
    xorout: 0xFFFF_FFFF,
    // Check value over "123456789" (`bootloader_common_loader.c`).
    check: 0xD202_D277,
    // Residue depends only on poly/reflection/xorout: the same as CRC-32/ISO-HDLC.
    residue: 0xDEBB_20E3,
};

/// 4 input bytes per CRC: a lookup table is not worth its 1 KiB of flash.
static OTA_CRC: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&OTA_SELECT_CRC);

/// `esp_ota_img_states_t` (`esp_flash_partitions.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtaState {
    New,
    PendingVerify,
    Valid,
    Invalid,
    Aborted,
    Undefined,
    /// Any other value found on flash.
    Other(u32),
}

impl OtaState {
    pub fn from_u32(v: u32) -> OtaState {
        match v {
            0 => OtaState::New,
            1 => OtaState::PendingVerify,
            2 => OtaState::Valid,
            3 => OtaState::Invalid,
            4 => OtaState::Aborted,
            0xFFFF_FFFF => OtaState::Undefined,
            o => OtaState::Other(o),
        }
    }
    pub fn to_u32(self) -> u32 {
        match self {
            OtaState::New => 0,
            OtaState::PendingVerify => 1,
            OtaState::Valid => 2,
            OtaState::Invalid => 3,
            OtaState::Aborted => 4,
            OtaState::Undefined => 0xFFFF_FFFF,
            OtaState::Other(o) => o,
        }
    }
    /// The JSON/CLI name: `new`, `pending_verify`, `valid`, `invalid`, `aborted`, `undefined`, `other`.
    pub fn name(self) -> &'static str {
        match self {
            OtaState::New => "new",
            OtaState::PendingVerify => "pending_verify",
            OtaState::Valid => "valid",
            OtaState::Invalid => "invalid",
            OtaState::Aborted => "aborted",
            OtaState::Undefined => "undefined",
            OtaState::Other(_) => "other",
        }
    }
    /// State that `esp_rewrite_ota_data` gives a newly selected entry (`esp_ota_ops.c`):
    /// `NEW` with `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE`, else `UNDEFINED`.
    pub fn for_new_boot(rollback: bool) -> OtaState {
        if rollback {
            OtaState::New
        } else {
            OtaState::Undefined
        }
    }
}

/// One `esp_ota_select_entry_t` (`esp_flash_partitions.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtaSelectEntry {
    pub seq: u32,
    pub seq_label: [u8; 20],
    pub state: u32,
    pub crc: u32,
}

impl OtaSelectEntry {
    /// An erased entry: all 32 bytes 0xFF.
    pub const ERASED: OtaSelectEntry = OtaSelectEntry {
        seq: SEQ_ERASED,
        seq_label: SEQ_LABEL_ERASED,
        state: 0xFFFF_FFFF,
        crc: 0xFFFF_FFFF,
    };

    /// A fresh entry: `seq`, `state`, `seq_label` 0xFF×20 and the matching CRC.
    pub fn new(seq: u32, state: OtaState) -> OtaSelectEntry {
        OtaSelectEntry {
            seq,
            seq_label: SEQ_LABEL_ERASED,
            state: state.to_u32(),
            crc: Self::crc_of(seq),
        }
    }

    /// Decode the 32 on-flash bytes (little endian, `esp_flash_partitions.h`). Never fails: every bit pattern is an entry.
    pub fn from_bytes(b: &[u8; ENTRY_SIZE]) -> OtaSelectEntry {
        let mut seq_label = [0u8; SEQ_LABEL_LEN];
        if let Some(s) = b.get(OFF_SEQ_LABEL..OFF_SEQ_LABEL + SEQ_LABEL_LEN) {
            seq_label.copy_from_slice(s);
        }
        OtaSelectEntry {
            seq: le32(b, OFF_SEQ),
            seq_label,
            state: le32(b, OFF_STATE),
            crc: le32(b, OFF_CRC),
        }
    }

    /// The 32 on-flash bytes (`esp_flash_partitions.h`).
    pub fn to_bytes(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        let fields: [(usize, &[u8]); 4] = [
            (OFF_SEQ, &self.seq.to_le_bytes()),
            (OFF_SEQ_LABEL, &self.seq_label),
            (OFF_STATE, &self.state.to_le_bytes()),
            (OFF_CRC, &self.crc.to_le_bytes()),
        ];
        for (off, data) in fields {
            if let Some(dst) = b.get_mut(off..off + data.len()) {
                dst.copy_from_slice(data);
            }
        }
        b
    }

    /// `bootloader_common_ota_select_crc`: the CRC (`bootloader_common_loader.c`) over the 4 little-endian bytes of `seq`.
    pub fn crc_of(seq: u32) -> u32 {
        OTA_CRC.checksum(&seq.to_le_bytes())
    }

    /// The stored CRC matches `seq` (`bootloader_common_loader.c`). The state word is not covered.
    pub fn crc_ok(&self) -> bool {
        self.crc == Self::crc_of(self.seq)
    }

    /// `bootloader_common_ota_select_invalid` (`bootloader_common_loader.c`): erased seq or state INVALID/ABORTED.
    /// Deliberately no CRC check (that is what IDF does).
    pub fn is_invalid(&self) -> bool {
        self.seq == SEQ_ERASED || matches!(self.state(), OtaState::Invalid | OtaState::Aborted)
    }

    /// `bootloader_common_ota_select_valid` (`bootloader_common_loader.c`): not invalid and CRC correct.
    pub fn is_valid(&self) -> bool {
        !self.is_invalid() && self.crc_ok()
    }

    /// `ota_state` decoded.
    pub fn state(&self) -> OtaState {
        OtaState::from_u32(self.state)
    }

    /// The entry with `ota_state` replaced (CRC untouched: it does not cover the state).
    pub fn with_state(mut self, state: OtaState) -> OtaSelectEntry {
        self.state = state.to_u32();
        self
    }

    /// Boot slot this entry selects: `(seq - 1) % count` in u32 arithmetic (`bootloader_common_loader.c`), so seq 0
    /// maps to `0xFFFFFFFF % count`. `None` when `count == 0` (no OTA slots: IDF never gets here).
    pub fn slot(&self, count: u8) -> Option<u8> {
        let r = self.seq.wrapping_sub(1).checked_rem(u32::from(count))?;
        u8::try_from(r).ok()
    }

    /// Erased seq or bad CRC (state ignored). When both entries are like this the bootloader
    /// treats otadata as "initial contents" (`bootloader_utility.c`); `erase_last_boot_app_partition` refuses such
    /// an inactive entry (`esp_ota_ops.c`).
    pub fn is_uninitialised(&self) -> bool {
        self.seq == SEQ_ERASED || !self.crc_ok()
    }
}

/// Which ESP-IDF release's `esp_rewrite_ota_data` to follow (`esp_ota_ops.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SetBootRules {
    /// ESP-IDF v6.0+ (default): setting the already-active slot rewrites the *same* sector with
    /// the same seq (commit 996a9ca, issue #14688).
    #[default]
    IdfV6,
    /// ESP-IDF v5.4 and older: always the other sector; re-setting the active slot writes the same
    /// seq into the other sector, so both entries then point at one slot.
    LegacyV54,
}

/// What the bootloader would fall back to after `esp_ota_mark_app_invalid_rollback` (`esp_ota_ops.c`,
/// `esp_ota_check_rollback_is_possible`). The caller verifies that image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackCandidate {
    /// The other entry is valid and points at this OTA slot.
    Slot { entry: usize, slot: u8 },
    /// The other entry is not valid: the factory app (if the table has one). Not a candidate
    /// with `CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK`.
    Factory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtaDataError {
    /// The otadata partition is smaller than two 4 KiB sectors (`esp_flash_partitions.h`).
    PartitionTooSmall { label: Label, size: u32 },
    /// `ota_{slot}` does not exist: the table has `count` OTA slots (`ESP_ERR_INVALID_ARG`, `esp_ota_ops.c`).
    SlotOutOfRange { slot: u8, count: u8 },
    /// An entry index other than 0 or 1.
    BadEntryIndex { index: usize },
    /// No valid entry (or no OTA slots): the running app is the factory/default app
    /// (`ESP_FAIL` "Running firmware is factory", `esp_ota_ops.c`).
    NoActiveEntry,
    /// `esp_ota_check_rollback_is_possible()` is false (`ESP_ERR_OTA_ROLLBACK_FAILED`, `esp_ota_ops.c`).
    RollbackNotPossible {
        active: usize,
        candidate: Option<RollbackCandidate>,
    },
    /// The sequence number needed to select `slot` after `seq` does not fit in a u32 (IDF
    /// would wrap around; this cannot happen before ~4 billion updates).
    SequenceExhausted { seq: u32, slot: u8 },
}

impl core::error::Error for OtaDataError {}

impl fmt::Display for OtaDataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OtaDataError::PartitionTooSmall { label, size } => write!(
                f,
                "otadata partition '{}' is 0x{:x} bytes, but it must be at least 0x{:x} \
                 (two 4 KiB sectors); fix the partition table",
                label.as_str(),
                size,
                OTADATA_SIZE
            ),
            OtaDataError::SlotOutOfRange { slot, count } => {
                write!(f, "OTA slot ota_{} does not exist: the partition table has {} OTA app slot(s)", slot, count)
            }
            OtaDataError::BadEntryIndex { index } => {
                write!(f, "otadata entry index {} is out of range (only 0 and 1 exist)", index)
            }
            OtaDataError::NoActiveEntry => f.write_str(
                "otadata has no valid entry (or the table has no OTA slots): the running firmware \
                 is the factory/default app, so there is no OTA entry to mark",
            ),
            OtaDataError::RollbackNotPossible { active, candidate } => {
                write!(f, "rollback is not possible from otadata entry {}: ", active)?;
                match candidate {
                    Some(RollbackCandidate::Slot { entry, slot }) => write!(
                        f,
                        "the previous app (entry {}, ota_{}) does not pass image verification",
                        entry, slot
                    ),
                    Some(RollbackCandidate::Factory) => {
                        f.write_str("the other entry is not valid and no verifiable factory app exists")
                    }
                    None => f.write_str("there is no other app to fall back to"),
                }
            }
            OtaDataError::SequenceExhausted { seq, slot } => write!(
                f,
                "otadata sequence counter exhausted: no u32 sequence after 0x{:08x} selects ota_{}; \
                 erase otadata to start over",
                seq, slot
            ),
        }
    }
}

/// `bootloader_common_select_otadata` (`bootloader_common_loader.c`): among the entries with `ok[i]`, the one with the
/// maximum (`max`) or minimum seq; ties go to entry 0. `None` when neither is ok.
pub fn select_otadata(entries: &[OtaSelectEntry; 2], ok: [bool; 2], max: bool) -> Option<usize> {
    match ok {
        [true, true] => {
            let (s0, s1) = (entries[0].seq, entries[1].seq);
            let m = if max { s0.max(s1) } else { s0.min(s1) };
            Some(if m == s0 { 0 } else { 1 })
        }
        [true, false] => Some(0),
        [false, true] => Some(1),
        [false, false] => None,
    }
}

fn check_index(idx: usize) -> Result<(), OtaDataError> {
    if idx < 2 {
        Ok(())
    } else {
        Err(OtaDataError::BadEntryIndex { index: idx })
    }
}

/// Offset of entry `idx` inside the otadata partition (`esp_flash_partitions.h`).
fn sector_offset(idx: usize) -> u32 {
    if idx == 0 {
        0
    } else {
        OTADATA_SECTOR_SIZE
    }
}

/// Smallest `v = base + i*count >= seq` with `base = (slot+1) % count` — the `while` loop of
/// `compute_ota_seq_for_target_slot` (`esp_ota_ops.c`), without its u32 wrap-around.
fn next_seq_for_slot(seq: u32, slot: u8, count: u8) -> Result<u32, OtaDataError> {
    let n = u64::from(count);
    if n == 0 {
        return Err(OtaDataError::SlotOutOfRange { slot, count });
    }
    let base = (u64::from(slot) + 1) % n;
    let cur = u64::from(seq);
    let v = if cur <= base {
        base
    } else {
        base + (cur - base).div_ceil(n) * n
    };
    u32::try_from(v).map_err(|_| OtaDataError::SequenceExhausted { seq, slot })
}

/// Both entries of an otadata partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtaData {
    pub entries: [OtaSelectEntry; 2],
}

impl Default for OtaData {
    fn default() -> Self {
        OtaData::erased()
    }
}

impl OtaData {
    /// Freshly flashed otadata (`ota_data_initial.bin` = all 0xFF, `esp_flash_partitions.h`).
    pub const fn erased() -> OtaData {
        OtaData {
            entries: [OtaSelectEntry::ERASED; 2],
        }
    }

    /// From the first 32 bytes of sector 0 and sector 1.
    pub fn from_sectors(s0: &[u8; ENTRY_SIZE], s1: &[u8; ENTRY_SIZE]) -> OtaData {
        OtaData {
            entries: [
                OtaSelectEntry::from_bytes(s0),
                OtaSelectEntry::from_bytes(s1),
            ],
        }
    }

    /// The 32 bytes each sector should start with.
    pub fn to_sectors(&self) -> [[u8; ENTRY_SIZE]; 2] {
        [self.entries[0].to_bytes(), self.entries[1].to_bytes()]
    }

    /// The partition is big enough for two entry sectors (`esp_flash_partitions.h`; the bootloader refuses smaller).
    pub fn check_partition(part: &Partition) -> Result<(), OtaDataError> {
        if part.size < OTADATA_SIZE {
            return Err(OtaDataError::PartitionTooSmall {
                label: part.label,
                size: part.size,
            });
        }
        Ok(())
    }

    /// Read both entries (sector 0 and sector 1 of `part`).
    pub fn read<F: ReadNorFlash>(flash: &mut F, part: &Partition) -> Result<OtaData, crate::Error> {
        Self::check_partition(part)?;
        let region = part.region();
        let mut s = [[0u8; ENTRY_SIZE]; 2];
        for (idx, buf) in s.iter_mut().enumerate() {
            region.read(flash, sector_offset(idx), buf)?;
        }
        Ok(Self::from_sectors(&s[0], &s[1]))
    }

    /// `[valid(e0), valid(e1)]` (`bootloader_common_loader.c`).
    pub fn valid(&self) -> [bool; 2] {
        [self.entries[0].is_valid(), self.entries[1].is_valid()]
    }

    /// Index (0/1) of the active entry (`get_active_otadata`, `bootloader_common_loader.c`), or None.
    pub fn active(&self) -> Option<usize> {
        select_otadata(&self.entries, self.valid(), true)
    }

    /// The active entry itself.
    pub fn active_entry(&self) -> Option<&OtaSelectEntry> {
        self.active().and_then(|i| self.entries.get(i))
    }

    /// Boot slot of the active entry: `(seq - 1) % count` (`bootloader_common_loader.c`). None if there is no active
    /// entry or `count == 0`.
    pub fn boot_slot(&self, count: u8) -> Option<u8> {
        self.active_entry()?.slot(count)
    }

    /// Both entries `invalid()` (no CRC check): the bootloader then boots factory / tries ota_0
    /// (`bootloader_utility.c`) and `esp_ota_get_boot_partition` returns the default app (`esp_ota_ops.c`).
    pub fn both_invalid(&self) -> bool {
        self.entries[0].is_invalid() && self.entries[1].is_invalid()
    }

    /// Both entries are erased or have a bad CRC: the bootloader's `ota_has_initial_contents`
    /// condition, after which it calls `set_actual_ota_seq` (`bootloader_utility.c`).
    pub fn has_initial_contents(&self) -> bool {
        self.entries[0].is_uninitialised() && self.entries[1].is_uninitialised()
    }

    // ---------------------------------------------------------------------------------------
    // esp_ota_set_boot_partition → esp_rewrite_ota_data (`esp_ota_ops.c`)

    /// The write `esp_rewrite_ota_data` (ESP-IDF v6 rules) would do to make `slot` boot:
    /// `(sector index, entry)`. No I/O.
    pub fn plan_set_boot(
        &self,
        slot: u8,
        count: u8,
        rollback: bool,
    ) -> Result<(usize, OtaSelectEntry), OtaDataError> {
        self.plan_set_boot_with(slot, count, rollback, SetBootRules::IdfV6)
    }

    /// [`plan_set_boot`](Self::plan_set_boot) under the chosen release's rules.
    pub fn plan_set_boot_with(
        &self,
        slot: u8,
        count: u8,
        rollback: bool,
        rules: SetBootRules,
    ) -> Result<(usize, OtaSelectEntry), OtaDataError> {
        if slot >= count {
            return Err(OtaDataError::SlotOutOfRange { slot, count });
        }
        let (next, seq) = match self.active() {
            Some(a) => {
                let cur = self.entries[a].seq;
                let same_slot = self.entries[a].slot(count) == Some(slot);
                if same_slot && rules == SetBootRules::IdfV6 {
                    (a, cur)
                } else {
                    (1 - a, next_seq_for_slot(cur, slot, count)?)
                }
            }
            // Both entries invalid/erased: sector 0, seq = slot + 1.
            None => (0, u32::from(slot) + 1),
        };
        // Only seq, crc and state change: the label bytes read from that sector stay (`esp_flash_partitions.h`).
        let mut e = self.entries[next];
        e.seq = seq;
        e.crc = OtaSelectEntry::crc_of(seq);
        e.state = OtaState::for_new_boot(rollback).to_u32();
        Ok((next, e))
    }

    /// `esp_rewrite_ota_data` (ESP-IDF v6 rules, `esp_ota_ops.c`): make `slot` the boot slot; erases one
    /// otadata sector and writes one entry. Returns the sector index written.
    pub fn set_boot<F: NorFlash>(
        &mut self,
        flash: &mut F,
        part: &Partition,
        slot: u8,
        ota_count: u8,
        rollback: bool,
    ) -> Result<usize, crate::Error> {
        self.set_boot_with(flash, part, slot, ota_count, rollback, SetBootRules::IdfV6)
    }

    /// [`set_boot`](Self::set_boot) under the chosen release's rules.
    pub fn set_boot_with<F: NorFlash>(
        &mut self,
        flash: &mut F,
        part: &Partition,
        slot: u8,
        ota_count: u8,
        rollback: bool,
        rules: SetBootRules,
    ) -> Result<usize, crate::Error> {
        let (idx, e) = self.plan_set_boot_with(slot, ota_count, rollback, rules)?;
        self.commit(flash, part, idx, e)?;
        Ok(idx)
    }

    /// Erase otadata sector `idx` (4 KiB) and write `entry` at its start (`rewrite_ota_seq` /
    /// the bootloader's `write_otadata`, `esp_ota_ops.c`, `bootloader_utility.c`). Does not update any in-memory copy.
    pub fn write_entry<F: NorFlash>(
        flash: &mut F,
        part: &Partition,
        idx: usize,
        entry: &OtaSelectEntry,
    ) -> Result<(), crate::Error> {
        check_index(idx)?;
        Self::check_partition(part)?;
        let region = part.region();
        let off = sector_offset(idx);
        region.erase(flash, off, OTADATA_SECTOR_SIZE)?;
        region.write(flash, off, &entry.to_bytes())?;
        Ok(())
    }

    /// [`write_entry`](Self::write_entry) and keep `self` in step with flash.
    pub fn commit<F: NorFlash>(
        &mut self,
        flash: &mut F,
        part: &Partition,
        idx: usize,
        entry: OtaSelectEntry,
    ) -> Result<(), crate::Error> {
        Self::write_entry(flash, part, idx, &entry)?;
        if let Some(slot) = self.entries.get_mut(idx) {
            *slot = entry;
        }
        Ok(())
    }

    /// Erase the whole otadata partition: what `esp_ota_set_boot_partition(factory)` does (`esp_ota_ops.c`).
    /// Re-read, or use [`OtaData::erased`], afterwards.
    pub fn erase_all<F: NorFlash>(flash: &mut F, part: &Partition) -> Result<(), crate::Error> {
        Self::check_partition(part)?;
        part.region().erase(flash, 0, part.size)?;
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Rollback API (`esp_ota_ops.c`)

    /// `esp_ota_mark_app_valid_cancel_rollback` as a plan: `None` when the active entry is
    /// already VALID (IDF writes nothing), else the same-sector rewrite with state VALID.
    /// Acts on the *active* entry, not on "the running partition" (`esp_ota_ops.c`).
    pub fn plan_mark_valid(
        &self,
        count: u8,
    ) -> Result<Option<(usize, OtaSelectEntry)>, OtaDataError> {
        let a = self
            .active()
            .filter(|_| count != 0)
            .ok_or(OtaDataError::NoActiveEntry)?;
        let e = self.entries[a];
        if e.state() == OtaState::Valid {
            return Ok(None);
        }
        Ok(Some((a, Self::rewrite_same_seq(e, OtaState::Valid))))
    }

    /// `esp_ota_mark_app_valid_cancel_rollback`: returns the sector written, if any.
    pub fn mark_valid<F: NorFlash>(
        &mut self,
        flash: &mut F,
        part: &Partition,
        count: u8,
    ) -> Result<Option<usize>, crate::Error> {
        match self.plan_mark_valid(count)? {
            Some((idx, e)) => {
                self.commit(flash, part, idx, e)?;
                Ok(Some(idx))
            }
            None => Ok(None),
        }
    }

    /// Which image `esp_ota_check_rollback_is_possible` would verify (`esp_ota_ops.c`): the other entry's
    /// slot if that entry is valid, else the factory app. `None` when there is no active entry
    /// or no OTA slots (then rollback is impossible).
    pub fn rollback_candidate(&self, count: u8) -> Option<RollbackCandidate> {
        if count == 0 {
            return None;
        }
        let a = self.active()?;
        let other = 1 - a;
        let e = self.entries[other];
        if e.is_valid() {
            Some(RollbackCandidate::Slot {
                entry: other,
                slot: e.slot(count)?,
            })
        } else {
            Some(RollbackCandidate::Factory)
        }
    }

    /// `esp_ota_check_rollback_is_possible` (`esp_ota_ops.c`). `other_image_ok`: the caller verified the
    /// image named by [`rollback_candidate`](Self::rollback_candidate) (for `Factory`: a factory
    /// partition exists and verifies).
    pub fn rollback_possible(&self, count: u8, other_image_ok: bool) -> bool {
        self.rollback_candidate(count).is_some() && other_image_ok
    }

    /// `esp_ota_mark_app_invalid_rollback` as a plan: state INVALID in the active entry, same seq,
    /// same sector.
    pub fn plan_mark_invalid(
        &self,
        count: u8,
        other_image_ok: bool,
    ) -> Result<(usize, OtaSelectEntry), OtaDataError> {
        let a = self
            .active()
            .filter(|_| count != 0)
            .ok_or(OtaDataError::NoActiveEntry)?;
        if !self.rollback_possible(count, other_image_ok) {
            return Err(OtaDataError::RollbackNotPossible {
                active: a,
                candidate: self.rollback_candidate(count),
            });
        }
        Ok((
            a,
            Self::rewrite_same_seq(self.entries[a], OtaState::Invalid),
        ))
    }

    /// `esp_ota_mark_app_invalid_rollback` (v5.5+; `…_and_reboot` = this then reset). Returns the
    /// sector written.
    pub fn mark_invalid<F: NorFlash>(
        &mut self,
        flash: &mut F,
        part: &Partition,
        count: u8,
        other_image_ok: bool,
    ) -> Result<usize, crate::Error> {
        let (idx, e) = self.plan_mark_invalid(count, other_image_ok)?;
        self.commit(flash, part, idx, e)?;
        Ok(idx)
    }

    /// `rewrite_ota_seq(e, e.seq, same sector)` with a new state: the CRC is recomputed (`esp_ota_ops.c`).
    fn rewrite_same_seq(e: OtaSelectEntry, state: OtaState) -> OtaSelectEntry {
        let mut e = e.with_state(state);
        e.crc = OtaSelectEntry::crc_of(e.seq);
        e
    }

    /// `esp_ota_get_state_partition(ota_{slot})` (`esp_ota_ops.c`): the first entry (0, then 1) whose slot
    /// is `slot` and whose CRC matches. No other validity check (an ABORTED entry is found).
    pub fn state_of_slot(&self, slot: u8, count: u8) -> Option<OtaState> {
        self.entries
            .iter()
            .find(|e| e.slot(count) == Some(slot) && e.crc_ok())
            .map(|e| e.state())
    }

    /// `esp_ota_get_last_invalid_partition` (`esp_ota_ops.c`), without the image check: among entries that
    /// are not erased, have a correct CRC and are INVALID/ABORTED, the slot of the one with the
    /// *lowest* seq (ties → entry 0). The caller verifies that slot's image.
    pub fn last_invalid_slot(&self, count: u8) -> Option<u8> {
        let ok = self.entries.map(|e| {
            e.seq != SEQ_ERASED
                && e.crc_ok()
                && matches!(e.state(), OtaState::Invalid | OtaState::Aborted)
        });
        let i = select_otadata(&self.entries, ok, false)?;
        self.entries.get(i)?.slot(count)
    }

    /// `esp_ota_invalidate_inactive_ota_data_slot` / `esp_ota_erase_last_boot_app_partition`
    /// (`esp_ota_ops.c`) as a plan: `(inactive entry index, its slot)` to erase, or None when IDF returns
    /// `ESP_FAIL` (no active entry, no slots, inactive entry erased or CRC bad, or its slot is the
    /// running one). `running_slot`: the running app's OTA slot (None for factory/test).
    pub fn plan_invalidate_inactive(
        &self,
        count: u8,
        running_slot: Option<u8>,
    ) -> Option<(usize, u8)> {
        let a = self.active()?;
        let inactive = 1 - a;
        let e = self.entries[inactive];
        if e.is_uninitialised() {
            return None;
        }
        let slot = e.slot(count)?;
        if running_slot == Some(slot) {
            return None;
        }
        Some((inactive, slot))
    }

    /// `esp_ota_invalidate_inactive_ota_data_slot`: erases the inactive entry's sector (only;
    /// erasing the app partition too is the caller's job). Returns what was erased.
    pub fn invalidate_inactive<F: NorFlash>(
        &mut self,
        flash: &mut F,
        part: &Partition,
        count: u8,
        running_slot: Option<u8>,
    ) -> Result<Option<(usize, u8)>, crate::Error> {
        let Some((idx, slot)) = self.plan_invalidate_inactive(count, running_slot) else {
            return Ok(None);
        };
        Self::check_partition(part)?;
        part.region()
            .erase(flash, sector_offset(idx), OTADATA_SECTOR_SIZE)?;
        self.entries[idx] = OtaSelectEntry::ERASED;
        Ok(Some((idx, slot)))
    }

    // ---------------------------------------------------------------------------------------
    // Bootloader-side writes (`bootloader_utility.c`). The selection logic itself lives in `boot.rs`.

    /// The first step of `get_selected_boot_partition` with `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE`:
    /// every PENDING_VERIFY entry becomes ABORTED. `[Some(new entry) if sector i is rewritten]`.
    /// The bootloader writes the entry exactly as read apart from the state (CRC not recomputed).
    pub fn plan_bootloader_pre_select(&self, rollback: bool) -> [Option<OtaSelectEntry>; 2] {
        self.entries.map(|e| {
            (rollback && e.state() == OtaState::PendingVerify)
                .then(|| e.with_state(OtaState::Aborted))
        })
    }

    /// Perform [`plan_bootloader_pre_select`](Self::plan_bootloader_pre_select) (erase + write each
    /// affected sector, entry 0 first). Returns which sectors were rewritten.
    pub fn bootloader_pre_select<F: NorFlash>(
        &mut self,
        flash: &mut F,
        part: &Partition,
        rollback: bool,
    ) -> Result<[bool; 2], crate::Error> {
        let plan = self.plan_bootloader_pre_select(rollback);
        let mut written = [false; 2];
        for (idx, p) in plan.into_iter().enumerate() {
            if let Some(e) = p {
                self.commit(flash, part, idx, e)?;
                written[idx] = true;
            }
        }
        Ok(written)
    }

    /// After the bootloader chose entry `idx`: with rollback, a NEW entry becomes PENDING_VERIFY
    /// (`bootloader_utility.c`; done before the image is even loaded). `None` when nothing is written.
    pub fn plan_bootloader_mark_pending(
        &self,
        idx: usize,
        rollback: bool,
    ) -> Option<OtaSelectEntry> {
        let e = self.entries.get(idx)?;
        (rollback && e.state() == OtaState::New).then(|| e.with_state(OtaState::PendingVerify))
    }

    /// Perform [`plan_bootloader_mark_pending`](Self::plan_bootloader_mark_pending). Returns
    /// whether sector `idx` was rewritten.
    pub fn bootloader_mark_pending<F: NorFlash>(
        &mut self,
        flash: &mut F,
        part: &Partition,
        idx: usize,
        rollback: bool,
    ) -> Result<bool, crate::Error> {
        check_index(idx)?;
        match self.plan_bootloader_mark_pending(idx, rollback) {
            Some(e) => {
                self.commit(flash, part, idx, e)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The entry `set_actual_ota_seq(idx)` writes: seq `idx + 1`, VALID, label 0xFF×20 (`bootloader_utility.c`).
    pub fn actual_ota_seq_entry(idx: u8) -> OtaSelectEntry {
        OtaSelectEntry::new(u32::from(idx) + 1, OtaState::Valid)
    }

    /// The bootloader's `set_actual_ota_seq(idx)` (`bootloader_utility.c`): erase sector 0 and write
    /// [`actual_ota_seq_entry`](Self::actual_ota_seq_entry). Only called by the bootloader when it
    /// booted OTA app `idx` from "initial contents" otadata (see [`has_initial_contents`](Self::has_initial_contents)).
    pub fn set_actual_ota_seq<F: NorFlash>(
        &mut self,
        flash: &mut F,
        part: &Partition,
        idx: u8,
    ) -> Result<(), crate::Error> {
        self.commit(flash, part, 0, Self::actual_ota_seq_entry(idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::{SUBTYPE_DATA_OTA, TYPE_DATA};
    use crate::testutil::RamFlash;

    /// otadata at 0x1000 in a 0x4000 flash, so partition-relative offsets are exercised.
    const PART_OFF: usize = 0x1000;
    type Flash = RamFlash;
    const FLASH_SIZE: usize = 0x4000;

    fn part() -> Partition {
        Partition {
            ptype: TYPE_DATA,
            subtype: SUBTYPE_DATA_OTA,
            offset: PART_OFF as u32,
            size: OTADATA_SIZE,
            label: Label::new("otadata"),
            flags: 0,
        }
    }

    fn sector(f: &Flash, i: usize) -> [u8; 32] {
        let mut b = [0u8; 32];
        b.copy_from_slice(&f.data[PART_OFF + i * 0x1000..PART_OFF + i * 0x1000 + 32]);
        b
    }

    /// Everything after the 32-byte entry stays 0xFF, and nothing outside the partition changes.
    fn assert_rest_erased(f: &Flash) {
        for i in 0..2 {
            let s = PART_OFF + i * 0x1000;
            assert!(
                f.data[s + 32..s + 0x1000].iter().all(|&b| b == 0xFF),
                "sector {i} tail"
            );
        }
        assert!(f.data[..PART_OFF].iter().all(|&b| b == 0xFF));
        assert!(f.data[PART_OFF + 0x2000..].iter().all(|&b| b == 0xFF));
    }

    fn unhex(s: &str) -> [u8; 32] {
        let digits: [u8; 64] = {
            let mut d = [0u8; 64];
            let mut n = 0;
            for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
                d[n] = c;
                n += 1;
            }
            assert_eq!(n, 64, "need 32 bytes of hex: {s}");
            d
        };
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            let h = core::str::from_utf8(&digits[2 * i..2 * i + 2]).unwrap();
            *o = u8::from_str_radix(h, 16).unwrap();
        }
        out
    }

    /// 32 bytes as `esp_rewrite_ota_data` writes them (esp-idf `esp_ota_ops.c`): seq (LE), ff×20, state, crc (LE).
    fn ent(seq: &str, state: &str, crc: &str) -> [u8; 32] {
        let mut s = [0u8; 64 + 3];
        let parts = [seq, "ffffffffffffffffffffffffffffffffffffffff", state, crc];
        let mut n = 0;
        for p in parts {
            s[n..n + p.len()].copy_from_slice(p.as_bytes());
            n += p.len();
        }
        unhex(core::str::from_utf8(&s[..n]).unwrap())
    }

    const ERASED32: [u8; 32] = [0xFF; 32];

    #[test]
    fn crc_matches_reference_table() {
        // esp-idf `bootloader_common_loader.c`
        let table: [(u32, u32); 8] = [
            (1, 0x4743_989A),
            (2, 0x55F6_3774),
            (3, 0xED4A_5011),
            (4, 0x709D_68A8),
            (5, 0xC821_0FCD),
            (16, 0xAFE6_A860),
            (0xFFFF_FFFE, 0x99F8_B879),
            (0xFFFF_FFFF, 0x2144_DF1C),
        ];
        for (seq, crc) in table {
            assert_eq!(OtaSelectEntry::crc_of(seq), crc, "seq {seq:#x}");
        }
        assert_eq!(OTA_CRC.checksum(b"123456789"), 0xD202_D277);
        assert_eq!(OTA_CRC.checksum(b"123456789"), OTA_SELECT_CRC.check);
        // Not the standard CRC-32 (init 0xFFFFFFFF), whose check value is 0xCBF43926.
        assert_ne!(OTA_CRC.checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn crc_bytes_land_little_endian_at_0x1c() {
        let b = OtaSelectEntry::new(1, OtaState::Undefined).to_bytes();
        assert_eq!(&b[0x1C..], &[0x9a, 0x98, 0x43, 0x47]);
        let b = OtaSelectEntry::new(4, OtaState::Undefined).to_bytes();
        assert_eq!(&b[0x1C..], &[0xa8, 0x68, 0x9d, 0x70]);
    }

    #[test]
    fn entry_bytes_roundtrip() {
        let mut raw = [0u8; 32];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = i as u8 * 7 + 1;
        }
        let e = OtaSelectEntry::from_bytes(&raw);
        assert_eq!(e.seq, u32::from_le_bytes([1, 8, 15, 22]));
        assert_eq!(e.seq_label[0], raw[4]);
        assert_eq!(
            e.state,
            u32::from_le_bytes([raw[24], raw[25], raw[26], raw[27]])
        );
        assert_eq!(
            e.crc,
            u32::from_le_bytes([raw[28], raw[29], raw[30], raw[31]])
        );
        assert_eq!(e.to_bytes(), raw);
        assert_eq!(
            OtaSelectEntry::from_bytes(&ERASED32),
            OtaSelectEntry::ERASED
        );
        assert_eq!(OtaSelectEntry::ERASED.to_bytes(), ERASED32);
    }

    #[test]
    fn new_entry_has_ff_label_and_crc() {
        let e = OtaSelectEntry::new(3, OtaState::New);
        assert_eq!(e.to_bytes(), ent("03000000", "00000000", "11504aed"));
        assert!(e.crc_ok() && e.is_valid());
    }

    #[test]
    fn predicates_follow_idf() {
        let v = OtaSelectEntry::new(5, OtaState::Valid);
        assert!(v.is_valid() && !v.is_invalid());
        // Bad CRC: not invalid (no CRC check there) but not valid either.
        let bad = OtaSelectEntry { crc: 0, ..v };
        assert!(!bad.is_invalid() && !bad.is_valid());
        for st in [OtaState::Invalid, OtaState::Aborted] {
            let e = v.with_state(st);
            assert!(e.is_invalid() && !e.is_valid(), "{st:?}");
        }
        for st in [
            OtaState::New,
            OtaState::PendingVerify,
            OtaState::Undefined,
            OtaState::Other(9),
        ] {
            assert!(v.with_state(st).is_valid(), "{st:?}");
        }
        // Erased seq with its (computed) CRC is still invalid.
        assert!(OtaSelectEntry::new(SEQ_ERASED, OtaState::Valid).is_invalid());
        assert!(OtaSelectEntry::ERASED.is_invalid());
        // seq 0 with a correct CRC counts as valid (`bootloader_common_loader.c`). Its CRC is 0xFFFFFFFF (init 0, zero
        // data, xorout all ones), so seq 0 with an *erased* CRC word is valid too.
        assert!(OtaSelectEntry::new(0, OtaState::Undefined).is_valid());
        assert_eq!(OtaSelectEntry::crc_of(0), 0xFFFF_FFFF);
        let mut raw = ERASED32;
        raw[..4].fill(0);
        assert!(OtaSelectEntry::from_bytes(&raw).is_valid());
    }

    #[test]
    fn slot_uses_wrapping_u32_arithmetic() {
        let e = |s| OtaSelectEntry::new(s, OtaState::Undefined);
        assert_eq!(e(1).slot(2), Some(0));
        assert_eq!(e(2).slot(2), Some(1));
        assert_eq!(e(7).slot(3), Some(0));
        assert_eq!(e(16).slot(16), Some(15));
        // seq 0 -> 0xFFFFFFFF % count
        assert_eq!(e(0).slot(2), Some(1));
        assert_eq!(e(0).slot(3), Some(0));
        assert_eq!(e(0).slot(16), Some(15));
        assert_eq!(e(5).slot(0), None);
    }

    fn od(e0: OtaSelectEntry, e1: OtaSelectEntry) -> OtaData {
        OtaData { entries: [e0, e1] }
    }
    fn u(seq: u32) -> OtaSelectEntry {
        OtaSelectEntry::new(seq, OtaState::Undefined)
    }

    #[test]
    fn active_picks_highest_valid_seq() {
        assert_eq!(od(u(1), u(2)).active(), Some(1));
        assert_eq!(od(u(4), u(3)).active(), Some(0));
        assert_eq!(od(u(2), u(2)).active(), Some(0), "ties go to entry 0");
        assert_eq!(OtaData::erased().active(), None);
        assert_eq!(od(u(7), OtaSelectEntry::ERASED).active(), Some(0));
        assert_eq!(od(OtaSelectEntry::ERASED, u(7)).active(), Some(1));
    }

    #[test]
    fn active_skips_invalid_bad_crc_and_erased_seq() {
        let bad_crc = OtaSelectEntry {
            crc: 0x1234_5678,
            ..u(9)
        };
        assert_eq!(od(u(1), bad_crc).active(), Some(0));
        assert_eq!(od(bad_crc, bad_crc).active(), None);
        // Erased seq even with the matching CRC 0x2144DF1C.
        assert_eq!(od(u(SEQ_ERASED), u(3)).active(), Some(1));
        assert_eq!(
            od(u(5).with_state(OtaState::Invalid), u(3)).active(),
            Some(1)
        );
        assert_eq!(
            od(u(3), u(5).with_state(OtaState::Aborted)).active(),
            Some(0)
        );
        assert_eq!(
            od(
                u(5).with_state(OtaState::Aborted),
                u(6).with_state(OtaState::Invalid)
            )
            .active(),
            None
        );
        assert_eq!(
            od(u(5).with_state(OtaState::PendingVerify), u(3)).active(),
            Some(0)
        );
    }

    #[test]
    fn select_otadata_min_and_ties() {
        let e = [u(3), u(8)];
        assert_eq!(select_otadata(&e, [true, true], false), Some(0));
        assert_eq!(select_otadata(&e, [true, true], true), Some(1));
        assert_eq!(select_otadata(&[u(4), u(4)], [true, true], false), Some(0));
        assert_eq!(select_otadata(&e, [false, true], false), Some(1));
        assert_eq!(select_otadata(&e, [false, false], true), None);
    }

    #[test]
    fn boot_slot_of_active_entry() {
        assert_eq!(od(u(3), u(4)).boot_slot(2), Some(1));
        assert_eq!(od(u(3), u(4)).boot_slot(3), Some(0));
        assert_eq!(od(u(3), u(4)).boot_slot(0), None);
        assert_eq!(OtaData::erased().boot_slot(2), None);
    }

    #[test]
    fn read_reads_both_sectors_relative_to_partition() {
        let mut f = Flash::new(FLASH_SIZE);
        let a = ent("05000000", "02000000", "cd0f21c8");
        f.data[PART_OFF..PART_OFF + 32].copy_from_slice(&a);
        f.data[PART_OFF + 0x1000..PART_OFF + 0x1020]
            .copy_from_slice(&ent("02000000", "ffffffff", "7437f655"));
        let d = OtaData::read(&mut f, &part()).unwrap();
        assert_eq!(d.entries[0].seq, 5);
        assert_eq!(d.entries[0].state(), OtaState::Valid);
        assert!(d.entries[0].crc_ok());
        assert_eq!(d.entries[1].seq, 2);
        assert_eq!(d.active(), Some(0));
        assert_eq!(
            d,
            OtaData::from_sectors(&a, &ent("02000000", "ffffffff", "7437f655"))
        );
    }

    #[test]
    fn read_rejects_small_partition_naming_it() {
        let mut f = Flash::new(FLASH_SIZE);
        let p = Partition {
            size: 0x1000,
            label: Label::new("otad"),
            ..part()
        };
        let err = OtaData::read(&mut f, &p).unwrap_err();
        assert_eq!(
            err,
            crate::Error::OtaData(OtaDataError::PartitionTooSmall {
                label: Label::new("otad"),
                size: 0x1000
            })
        );
        let mut msg = FmtBuf::new();
        core::fmt::write(&mut msg, format_args!("{err}")).unwrap();
        assert!(
            msg.as_str().contains("'otad'") && msg.as_str().contains("0x1000"),
            "{}",
            msg.as_str()
        );
    }

    #[test]
    fn read_reports_flash_errors() {
        let mut f = RamFlash::<1>::new(0x2000); // partition at 0x1000..0x3000 exceeds it
        let err = OtaData::read(&mut f, &part()).unwrap_err();
        assert!(matches!(err, crate::Error::Flash(_)), "{err:?}");
    }

    /// One step of a worked set-boot sequence (`esp_ota_ops.c` rules): call set_boot, check the returned sector and the
    /// 32 bytes of both sectors, and that a fresh read equals the in-memory copy.
    fn step(
        f: &mut Flash,
        slot: u8,
        rollback: bool,
        rules: SetBootRules,
        sec: usize,
        s0: [u8; 32],
        s1: [u8; 32],
    ) {
        let mut d = OtaData::read(f, &part()).unwrap();
        let plan = d.plan_set_boot_with(slot, 2, rollback, rules).unwrap();
        let erases = f.erase_ops;
        assert_eq!(
            d.set_boot_with(f, &part(), slot, 2, rollback, rules)
                .unwrap(),
            sec
        );
        assert_eq!(plan.0, sec);
        assert_eq!(f.erase_ops, erases + 1, "one sector erase per set_boot");
        assert_eq!(
            sector(f, 0),
            s0,
            "sector 0 after set_boot(ota_{slot}) {rules:?}"
        );
        assert_eq!(
            sector(f, 1),
            s1,
            "sector 1 after set_boot(ota_{slot}) {rules:?}"
        );
        assert_rest_erased(f);
        assert_eq!(OtaData::read(f, &part()).unwrap(), d);
        assert_eq!(d.entries[sec], plan.1);
    }

    fn worked_example(rules: SetBootRules, rollback: bool) {
        let st = if rollback { "00000000" } else { "ffffffff" };
        let e1 = ent("01000000", st, "9a984347");
        let e2 = ent("02000000", st, "7437f655");
        let e3 = ent("03000000", st, "11504aed");
        let e4 = ent("04000000", st, "a8689d70");
        let mut f = Flash::new(FLASH_SIZE);
        step(&mut f, 0, rollback, rules, 0, e1, ERASED32);
        step(&mut f, 1, rollback, rules, 1, e1, e2);
        assert_eq!(
            OtaData::read(&mut f, &part()).unwrap().boot_slot(2),
            Some(1)
        );
        step(&mut f, 0, rollback, rules, 0, e3, e2);
        match rules {
            SetBootRules::IdfV6 => step(&mut f, 0, rollback, rules, 0, e3, e2),
            SetBootRules::LegacyV54 => step(&mut f, 0, rollback, rules, 1, e3, e3),
        }
        assert_eq!(
            OtaData::read(&mut f, &part()).unwrap().boot_slot(2),
            Some(0)
        );
        step(&mut f, 1, rollback, rules, 1, e3, e4);
        assert_eq!(
            OtaData::read(&mut f, &part()).unwrap().boot_slot(2),
            Some(1)
        );
    }

    #[test]
    fn set_boot_worked_example_v6_no_rollback() {
        worked_example(SetBootRules::IdfV6, false);
    }

    #[test]
    fn set_boot_worked_example_v6_rollback() {
        worked_example(SetBootRules::IdfV6, true);
    }

    #[test]
    fn set_boot_worked_example_v54_no_rollback() {
        worked_example(SetBootRules::LegacyV54, false);
    }

    #[test]
    fn set_boot_worked_example_v54_rollback() {
        worked_example(SetBootRules::LegacyV54, true);
    }

    #[test]
    fn set_boot_default_is_v6() {
        let d = od(u(3), u(2));
        assert_eq!(
            d.plan_set_boot(0, 2, false),
            d.plan_set_boot_with(0, 2, false, SetBootRules::IdfV6)
        );
        assert_eq!(d.plan_set_boot(0, 2, false).unwrap().0, 0);
        assert_eq!(
            d.plan_set_boot_with(0, 2, false, SetBootRules::LegacyV54)
                .unwrap()
                .0,
            1
        );
    }

    #[test]
    fn set_boot_rejects_slot_out_of_range() {
        let d = OtaData::erased();
        assert_eq!(
            d.plan_set_boot(2, 2, false),
            Err(OtaDataError::SlotOutOfRange { slot: 2, count: 2 })
        );
        assert_eq!(
            d.plan_set_boot(0, 0, false),
            Err(OtaDataError::SlotOutOfRange { slot: 0, count: 0 })
        );
        let mut f = Flash::new(FLASH_SIZE);
        let mut d = OtaData::erased();
        let err = d.set_boot(&mut f, &part(), 5, 2, false).unwrap_err();
        assert_eq!(
            err,
            crate::Error::OtaData(OtaDataError::SlotOutOfRange { slot: 5, count: 2 })
        );
        assert_eq!(f.erase_ops + f.write_ops, 0, "nothing written on error");
    }

    #[test]
    fn set_boot_seq_is_smallest_above_current_for_other_slots() {
        // 8 slots, active seq 5 (ota_4): ota_7 needs seq 8, ota_0 needs 9, ota_3 needs 12.
        let d = od(u(4), u(5));
        assert_eq!(d.plan_set_boot(7, 8, false).unwrap(), (0, u(8)));
        assert_eq!(d.plan_set_boot(0, 8, false).unwrap(), (0, u(9)));
        assert_eq!(d.plan_set_boot(3, 8, false).unwrap(), (0, u(12)));
        // Same slot: v6 keeps seq in the same sector, v5.4 writes the same seq to the other one.
        assert_eq!(
            d.plan_set_boot(4, 8, true).unwrap(),
            (1, OtaSelectEntry::new(5, OtaState::New))
        );
        assert_eq!(
            d.plan_set_boot_with(4, 8, true, SetBootRules::LegacyV54)
                .unwrap(),
            (0, OtaSelectEntry::new(5, OtaState::New))
        );
        // Nothing valid: sector 0, seq = slot + 1.
        assert_eq!(
            OtaData::erased().plan_set_boot(3, 8, false).unwrap(),
            (0, u(4))
        );
    }

    #[test]
    fn set_boot_resets_state_to_new_even_when_valid() {
        let d = od(OtaSelectEntry::new(3, OtaState::Valid), u(2));
        let (i, e) = d.plan_set_boot(0, 2, true).unwrap();
        assert_eq!((i, e.state()), (0, OtaState::New));
    }

    #[test]
    fn set_boot_near_seq_limit() {
        // 2 slots, active seq 0xFFFFFFFE (ota_1): ota_0 needs 0xFFFFFFFF, which IDF writes (and
        // which makes that entry invalid). With 3 slots, a slot needing 2^32 is an error.
        let d = od(u(0xFFFF_FFFE), u(1));
        assert_eq!(d.plan_set_boot(0, 2, false).unwrap(), (1, u(0xFFFF_FFFF)));
        let d = od(u(0xFFFF_FFFE), u(1)); // slot (0xFFFFFFFD % 3) = 1
        assert_eq!(d.plan_set_boot(2, 3, false).unwrap(), (1, u(0xFFFF_FFFF)));
        assert_eq!(
            d.plan_set_boot(0, 3, false),
            Err(OtaDataError::SequenceExhausted {
                seq: 0xFFFF_FFFE,
                slot: 0
            })
        );
    }

    #[test]
    fn set_boot_preserves_seq_label_of_target_sector() {
        let mut f = Flash::new(FLASH_SIZE);
        let mut raw = ent("01000000", "ffffffff", "9a984347");
        raw[4..24].copy_from_slice(b"label-bytes-survive!");
        f.data[PART_OFF + 0x1000..PART_OFF + 0x1020].copy_from_slice(&raw);
        // Sector 1 holds seq 1 (ota_0), sector 0 erased: switching to ota_1 writes sector 0.
        let mut d = OtaData::read(&mut f, &part()).unwrap();
        assert_eq!(d.set_boot(&mut f, &part(), 1, 2, false).unwrap(), 0);
        assert_eq!(sector(&f, 0), ent("02000000", "ffffffff", "7437f655"));
        // Back to ota_0 writes sector 1 with seq 3 and keeps its label.
        assert_eq!(d.set_boot(&mut f, &part(), 0, 2, false).unwrap(), 1);
        let s1 = sector(&f, 1);
        assert_eq!(&s1[4..24], b"label-bytes-survive!");
        assert_eq!(&s1[..4], &[3, 0, 0, 0]);
        assert_eq!(&s1[28..], &[0x11, 0x50, 0x4a, 0xed]);
    }

    #[test]
    fn write_entry_and_erase_all() {
        let mut f = Flash::new(FLASH_SIZE);
        OtaData::write_entry(&mut f, &part(), 1, &u(2)).unwrap();
        assert_eq!(sector(&f, 1), ent("02000000", "ffffffff", "7437f655"));
        assert_eq!(
            OtaData::write_entry(&mut f, &part(), 2, &u(2)).unwrap_err(),
            crate::Error::OtaData(OtaDataError::BadEntryIndex { index: 2 })
        );
        OtaData::erase_all(&mut f, &part()).unwrap();
        assert!(f.data.iter().all(|&b| b == 0xFF));
        assert_eq!(OtaData::read(&mut f, &part()).unwrap(), OtaData::erased());
    }

    #[test]
    fn mark_valid_rewrites_active_sector_once() {
        let mut f = Flash::new(FLASH_SIZE);
        let mut d = OtaData::erased();
        d.set_boot(&mut f, &part(), 0, 2, true).unwrap();
        d.set_boot(&mut f, &part(), 1, 2, true).unwrap();
        assert_eq!(d.mark_valid(&mut f, &part(), 2).unwrap(), Some(1));
        assert_eq!(sector(&f, 1), ent("02000000", "02000000", "7437f655"));
        assert_eq!(sector(&f, 0), ent("01000000", "00000000", "9a984347"));
        let erases = f.erase_ops;
        assert_eq!(
            d.mark_valid(&mut f, &part(), 2).unwrap(),
            None,
            "already valid: no write"
        );
        assert_eq!(f.erase_ops, erases);
    }

    #[test]
    fn mark_valid_without_active_entry_fails() {
        assert_eq!(
            OtaData::erased().plan_mark_valid(2),
            Err(OtaDataError::NoActiveEntry)
        );
        assert_eq!(
            od(u(1), u(2)).plan_mark_valid(0),
            Err(OtaDataError::NoActiveEntry)
        );
        let aborted = od(u(1).with_state(OtaState::Aborted), OtaSelectEntry::ERASED);
        assert_eq!(aborted.plan_mark_valid(2), Err(OtaDataError::NoActiveEntry));
    }

    #[test]
    fn mark_invalid_needs_rollback_target() {
        let mut f = Flash::new(FLASH_SIZE);
        let mut d = OtaData::erased();
        d.set_boot(&mut f, &part(), 0, 2, true).unwrap();
        d.mark_valid(&mut f, &part(), 2).unwrap();
        d.set_boot(&mut f, &part(), 1, 2, true).unwrap();
        // Other entry (0, ota_0) valid: candidate is slot 0; the image must verify.
        assert_eq!(
            d.rollback_candidate(2),
            Some(RollbackCandidate::Slot { entry: 0, slot: 0 })
        );
        assert!(!d.rollback_possible(2, false));
        let err = d.mark_invalid(&mut f, &part(), 2, false).unwrap_err();
        assert_eq!(
            err,
            crate::Error::OtaData(OtaDataError::RollbackNotPossible {
                active: 1,
                candidate: Some(RollbackCandidate::Slot { entry: 0, slot: 0 })
            })
        );
        assert_eq!(d.mark_invalid(&mut f, &part(), 2, true).unwrap(), 1);
        assert_eq!(sector(&f, 1), ent("02000000", "03000000", "7437f655"));
        // Now entry 0 is the active one again: the next boot picks ota_0.
        let r = OtaData::read(&mut f, &part()).unwrap();
        assert_eq!((r.active(), r.boot_slot(2)), (Some(0), Some(0)));
        assert_eq!(r.last_invalid_slot(2), Some(1));
    }

    #[test]
    fn rollback_candidate_is_factory_when_other_entry_invalid() {
        let d = od(u(1), OtaSelectEntry::ERASED);
        assert_eq!(d.rollback_candidate(2), Some(RollbackCandidate::Factory));
        assert!(d.rollback_possible(2, true));
        assert_eq!(OtaData::erased().rollback_candidate(2), None);
        assert_eq!(
            OtaData::erased().plan_mark_invalid(2, true),
            Err(OtaDataError::NoActiveEntry)
        );
    }

    #[test]
    fn state_of_slot_checks_entry0_first_and_crc() {
        let d = od(
            u(3).with_state(OtaState::Aborted),
            u(1).with_state(OtaState::Valid),
        );
        // Both map to ota_0 with 2 slots: entry 0 wins, even though it is ABORTED.
        assert_eq!(d.state_of_slot(0, 2), Some(OtaState::Aborted));
        assert_eq!(d.state_of_slot(1, 2), None);
        let bad = od(
            OtaSelectEntry { crc: 0, ..u(3) },
            u(1).with_state(OtaState::Valid),
        );
        assert_eq!(bad.state_of_slot(0, 2), Some(OtaState::Valid));
        let d = od(
            u(2).with_state(OtaState::PendingVerify),
            OtaSelectEntry::ERASED,
        );
        assert_eq!(d.state_of_slot(1, 2), Some(OtaState::PendingVerify));
        assert_eq!(d.state_of_slot(0, 2), None, "erased entry has a bad CRC");
        assert_eq!(d.state_of_slot(1, 0), None);
    }

    #[test]
    fn last_invalid_slot_picks_lowest_seq() {
        let d = od(
            u(5).with_state(OtaState::Invalid),
            u(4).with_state(OtaState::Aborted),
        );
        assert_eq!(d.last_invalid_slot(2), Some(1)); // seq 4 -> ota_1
        let d = od(u(5).with_state(OtaState::Invalid), u(4));
        assert_eq!(d.last_invalid_slot(2), Some(0));
        let d = od(
            OtaSelectEntry {
                crc: 1,
                ..u(5).with_state(OtaState::Invalid)
            },
            u(4),
        );
        assert_eq!(d.last_invalid_slot(2), None, "CRC must match");
        assert_eq!(OtaData::erased().last_invalid_slot(2), None);
    }

    #[test]
    fn invalidate_inactive_erases_other_sector() {
        let mut f = Flash::new(FLASH_SIZE);
        let mut d = OtaData::erased();
        d.set_boot(&mut f, &part(), 0, 2, true).unwrap();
        d.set_boot(&mut f, &part(), 1, 2, true).unwrap();
        // Running ota_0 (not yet rebooted): the inactive entry is its own -> refused.
        assert_eq!(d.plan_invalidate_inactive(2, Some(0)), None);
        assert_eq!(
            d.invalidate_inactive(&mut f, &part(), 2, Some(1)).unwrap(),
            Some((0, 0))
        );
        assert_eq!(sector(&f, 0), ERASED32);
        assert_eq!(d.entries[0], OtaSelectEntry::ERASED);
        assert_eq!(
            d.plan_invalidate_inactive(2, Some(1)),
            None,
            "inactive already erased"
        );
    }

    #[test]
    fn bootloader_aborts_pending_verify_keeping_bytes() {
        let mut f = Flash::new(FLASH_SIZE);
        let mut pv = OtaSelectEntry::new(2, OtaState::PendingVerify);
        pv.seq_label[0] = 0x42;
        pv.crc = 0xDEAD_BEEF; // the bootloader does not recompute the CRC
        OtaData::write_entry(&mut f, &part(), 1, &pv).unwrap();
        OtaData::write_entry(&mut f, &part(), 0, &u(1)).unwrap();
        let mut d = OtaData::read(&mut f, &part()).unwrap();
        assert_eq!(d.plan_bootloader_pre_select(false), [None, None]);
        assert_eq!(
            d.bootloader_pre_select(&mut f, &part(), false).unwrap(),
            [false, false]
        );
        assert_eq!(
            d.bootloader_pre_select(&mut f, &part(), true).unwrap(),
            [false, true]
        );
        let mut want = pv.to_bytes();
        want[OFF_STATE..OFF_STATE + 4].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(sector(&f, 1), want);
        assert_eq!(OtaData::read(&mut f, &part()).unwrap(), d);
    }

    #[test]
    fn bootloader_marks_new_entry_pending() {
        let mut f = Flash::new(FLASH_SIZE);
        let mut d = OtaData::erased();
        d.set_boot(&mut f, &part(), 1, 2, true).unwrap();
        assert!(!d
            .bootloader_mark_pending(&mut f, &part(), 0, false)
            .unwrap());
        assert!(d.bootloader_mark_pending(&mut f, &part(), 0, true).unwrap());
        assert_eq!(sector(&f, 0), ent("02000000", "01000000", "7437f655"));
        assert!(
            !d.bootloader_mark_pending(&mut f, &part(), 0, true).unwrap(),
            "only NEW"
        );
        assert!(d.bootloader_mark_pending(&mut f, &part(), 2, true).is_err());
        // Next boot: PENDING_VERIFY -> ABORTED, entry no longer valid.
        d.bootloader_pre_select(&mut f, &part(), true).unwrap();
        assert_eq!(sector(&f, 0), ent("02000000", "04000000", "7437f655"));
        assert_eq!(d.active(), None);
    }

    #[test]
    fn set_actual_ota_seq_writes_valid_entry_to_sector0() {
        let mut f = Flash::new(FLASH_SIZE);
        // Sector 0 had a torn entry; sector 1 stays untouched.
        f.data[PART_OFF..PART_OFF + 4].copy_from_slice(&[1, 2, 3, 4]);
        let mut d = OtaData::read(&mut f, &part()).unwrap();
        assert!(d.has_initial_contents());
        d.set_actual_ota_seq(&mut f, &part(), 0).unwrap();
        assert_eq!(sector(&f, 0), ent("01000000", "02000000", "9a984347"));
        d.set_actual_ota_seq(&mut f, &part(), 1).unwrap();
        assert_eq!(sector(&f, 0), ent("02000000", "02000000", "7437f655"));
        assert_eq!(sector(&f, 1), ERASED32);
        assert_rest_erased(&f);
        assert!(!d.has_initial_contents());
        assert_eq!(d.boot_slot(2), Some(1));
    }

    #[test]
    fn has_initial_contents_vs_both_invalid() {
        // ABORTED entries are invalid but not "initial contents".
        let d = od(u(1).with_state(OtaState::Aborted), OtaSelectEntry::ERASED);
        assert!(d.both_invalid());
        assert!(!d.has_initial_contents());
        assert!(OtaData::erased().has_initial_contents());
    }

    #[test]
    fn errors_display_context() {
        let mut b = FmtBuf::new();
        core::fmt::write(
            &mut b,
            format_args!("{}", OtaDataError::SlotOutOfRange { slot: 3, count: 2 }),
        )
        .unwrap();
        assert!(
            b.as_str().contains("ota_3") && b.as_str().contains("2 OTA"),
            "{}",
            b.as_str()
        );
    }

    /// Fixed-size text sink for checking Display output without alloc.
    struct FmtBuf {
        buf: [u8; 256],
        len: usize,
    }
    impl FmtBuf {
        fn new() -> Self {
            FmtBuf {
                buf: [0; 256],
                len: 0,
            }
        }
        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.buf[..self.len]).unwrap()
        }
    }
    impl core::fmt::Write for FmtBuf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            self.buf
                .get_mut(self.len..end)
                .ok_or(core::fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
}
