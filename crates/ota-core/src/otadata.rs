//! otadata: the two `esp_ota_select_entry_t` sectors that say which OTA slot boots.
//! idf-formats.md §2.1–2.5.
//!
//! CONTRACT (skeleton): keep public names and signatures; bodies are to be written.

use core::fmt;

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};

use crate::partition::Partition;

/// Size of one entry (§2.1).
pub const ENTRY_SIZE: usize = 32;
/// Required size of the otadata partition: two 4 KiB sectors (§2.1).
pub const OTADATA_SIZE: u32 = 0x2000;

/// `esp_ota_img_states_t` (§2.1).
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
}

/// One `esp_ota_select_entry_t` (§2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtaSelectEntry {
    pub seq: u32,
    pub seq_label: [u8; 20],
    pub state: u32,
    pub crc: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtaDataError {
    /// Placeholder until the real variants exist.
    Invalid,
}

impl fmt::Display for OtaDataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self)
    }
}

/// Both entries of an otadata partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtaData {
    pub entries: [OtaSelectEntry; 2],
}

impl OtaData {
    /// Read both entries (sector 0 and sector 1 of `part`).
    pub fn read<F: ReadNorFlash>(_flash: &mut F, _part: &Partition) -> Result<OtaData, crate::Error> {
        Err(OtaDataError::Invalid.into())
    }
    /// Index (0/1) of the active entry (`get_active_otadata`, §2.3), or None.
    pub fn active(&self) -> Option<usize> {
        None
    }
    /// Boot slot of the active entry: `(seq - 1) % count` (§2.3).
    pub fn boot_slot(&self, _count: u8) -> Option<u8> {
        None
    }
    /// `esp_rewrite_ota_data` (ESP-IDF v6 rules, §2.4): make `slot` the boot slot; erases one
    /// otadata sector and writes one entry. Returns the sector index written.
    pub fn set_boot<F: NorFlash>(
        &mut self,
        _flash: &mut F,
        _part: &Partition,
        _slot: u8,
        _ota_count: u8,
        _rollback: bool,
    ) -> Result<usize, crate::Error> {
        Err(OtaDataError::Invalid.into())
    }
}
