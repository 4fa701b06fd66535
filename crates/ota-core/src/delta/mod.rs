//! Delta updates: applying detools sequential patches (what esp_delta_ota applies), in
//! constant memory, resumable after a power cut.
//!
//! A patch (eerimoq/detools, `detools create_patch`) is one uncompressed header,
//! `[type << 4 | compression] [to_size varint]` (+ heatshrink's parameter byte), then one
//! compressed stream of `diff / extra / adjustment` triples ([`apply`]). Espressif's tooling may
//! put a 64-byte header in front ([`EspDeltaHeader`]: magic `0xfccdde10`, the base image's
//! SHA-256), checked against the running image ([`base_image_sha256`]) before anything is
//! erased.
//!
//! Accepted: type 0 (sequential) with compression none (0) or heatshrink (4) at window 8 /
//! lookahead 7 (parameter byte `0x44`, the only one esp_delta_ota's static build takes); no
//! data-format section. Recognised and refused with a clear error: in-place (1), hdiffpatch
//! (2), other heatshrink parameters, and lzma/crle/bz2/zstd/lz4 (lzma's 8 MiB dictionary does not
//! fit a device; hosts decode it and feed [`DeltaApplier::for_decompressed_body`]).
//!
//! RAM: the applier is one [`DeltaApplier`] value of 304 bytes on x86-64 and riscv32 (a
//! 256-byte heatshrink window and 48 bytes of positions and decoder state; a compile-time
//! assertion bounds it at 320 on every target), plus 128 bytes of stack buffers in [`DeltaApplier::feed`] and the 256-byte
//! aligned scratch of [`crate::flash::read`] when the base is in flash. No allocation.
//! A [`Checkpoint`] is a [`CHECKPOINT_LEN`]-byte record.

pub mod apply;
pub mod base;
pub mod checkpoint;
pub mod error;
pub mod header;
pub mod heatshrink;
pub mod varint;

#[cfg(test)]
pub(crate) mod tests;

pub use apply::{DeltaApplier, CHUNK};
pub use base::{base_image_sha256, BaseImage, DeltaBase, FlashBase, SliceBase, SliceBaseError};
pub use checkpoint::{Checkpoint, CHECKPOINT_LEN};
pub use error::{ApplyError, DeltaError};
pub use header::{EspDeltaHeader, PatchHeader};

/// Patch type of a sequential patch (bits 6..4 of the first byte; detools `detools/common.py`
/// `PATCH_TYPE_SEQUENTIAL`).
pub const PATCH_TYPE_SEQUENTIAL: u8 = 0;
/// In-place patches (`PATCH_TYPE_IN_PLACE`), recognised and refused.
pub const PATCH_TYPE_IN_PLACE: u8 = 1;
/// heatshrink's parameter byte for window 8, lookahead 7: `(8 - 4) << 4 | (7 - 3)`
/// (detools `detools/compression/heatshrink.py`).
pub const HEATSHRINK_PARAMS_8_7: u8 = 0x44;
/// esp_delta_ota header magic, stored little-endian (`10 de cd fc`; espressif/idf-extra-components
/// `esp_delta_ota/examples/https_delta_ota/main/main.c` `IMG_HEADER_MAGIC`).
pub const ESP_DELTA_MAGIC: u32 = 0xfccd_de10;
/// Bytes of the esp_delta_ota header (magic, SHA-256, 28 reserved).
pub const ESP_DELTA_HEADER_LEN: usize = 64;

/// The compression of a patch (low nibble of its first byte; detools `detools/common.py`
/// `COMPRESSIONS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    None,
    Lzma,
    Crle,
    Bz2,
    Heatshrink,
    Zstd,
    Lz4,
    /// The body was decompressed by the caller ([`DeltaApplier::for_decompressed_body`]).
    External,
}

impl Compression {
    pub const LZMA_ID: u8 = 1;
    const EXTERNAL_ID: u8 = 0xff;

    pub fn from_id(id: u8) -> Option<Compression> {
        Some(match id {
            0 => Compression::None,
            1 => Compression::Lzma,
            2 => Compression::Crle,
            3 => Compression::Bz2,
            4 => Compression::Heatshrink,
            5 => Compression::Zstd,
            6 => Compression::Lz4,
            _ => return None,
        })
    }

    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lzma => 1,
            Compression::Crle => 2,
            Compression::Bz2 => 3,
            Compression::Heatshrink => 4,
            Compression::Zstd => 5,
            Compression::Lz4 => 6,
            Compression::External => Self::EXTERNAL_ID,
        }
    }

    /// detools' name (`none`, `heatshrink`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lzma => "lzma",
            Compression::Crle => "crle",
            Compression::Bz2 => "bz2",
            Compression::Heatshrink => "heatshrink",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::External => "decompressed by the caller",
        }
    }

    pub(crate) fn name_of(id: u8) -> &'static str {
        Self::from_id(id).map_or("unknown", Compression::name)
    }
}
