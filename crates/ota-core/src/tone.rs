//! ESP-ADF flash tone bins (format 0 and 1): reader, packer, and the example's upgrade policy.
//! adf-ota-service.md §7, §8.
//!
//! CONTRACT (skeleton): keep public names and signatures; bodies are to be written.

use core::fmt;

pub const TONE_HEADER_TAG: u16 = 0x2053;
pub const TONE_HEADER_SIZE: usize = 8;
pub const TONE_DESC_SIZE: usize = 256;
pub const TONE_DESC_MAGIC: u32 = 0xF55F_9876;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToneError {
    /// Placeholder until the real variants exist.
    Invalid { offset: u32 },
}

impl fmt::Display for ToneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self)
    }
}

/// `flash_tone_header_t` (8 bytes, §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToneHeader {
    pub header_tag: u16,
    pub total_num: u16,
    pub format: u32,
}
