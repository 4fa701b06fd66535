//! The two headers: detools' uncompressed patch header and esp_delta_ota's 64-byte frame.

use super::error::DeltaError;
use super::varint::{VarintReader, VarintStep};
use super::{
    Compression, ESP_DELTA_HEADER_LEN, ESP_DELTA_MAGIC, HEATSHRINK_PARAMS_8_7,
    PATCH_TYPE_SEQUENTIAL,
};

/// The uncompressed start of a detools sequential patch: `[type << 4 | compression]
/// [to_size varint]`, and for heatshrink (when `to_size > 0`) the parameter byte
/// (detools `detools/create.py` `create_patch_sequential_data`, `c/detools.c`
/// `apply_patch_process_once` header states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchHeader {
    pub compression: Compression,
    pub to_size: u32,
    /// Bytes of the header: the compressed stream starts here.
    pub len: usize,
}

impl PatchHeader {
    /// Parse the header at the start of `patch`. Sequential patches only; any known
    /// compression is accepted here (lzma included: whether it can be decoded is the caller's
    /// business; [`super::DeltaApplier`] decodes none and heatshrink 8/7).
    pub fn parse(patch: &[u8]) -> Result<PatchHeader, DeltaError> {
        let truncated = |offset: usize, expecting| DeltaError::Truncated {
            offset: offset as u64,
            out_pos: 0,
            to_size: 0,
            expecting,
        };
        let &b = patch.first().ok_or(truncated(0, "the patch type byte"))?;
        let (type_id, comp) = (b >> 4, b & 0x0f);
        if type_id != PATCH_TYPE_SEQUENTIAL {
            return Err(DeltaError::UnsupportedType { type_id });
        }
        let compression = Compression::from_id(comp).ok_or(DeltaError::UnsupportedCompression {
            id: comp,
            name: Compression::name_of(comp),
        })?;
        let mut r = VarintReader::new();
        let mut pos = 1;
        let to_size = loop {
            let &b = patch.get(pos).ok_or(truncated(pos, "the output size"))?;
            pos += 1;
            match r.push(b) {
                VarintStep::More => {}
                VarintStep::Overflow => {
                    return Err(DeltaError::VarintOverflow {
                        field: "to_size",
                        offset: pos as u64,
                    })
                }
                VarintStep::Done(v) if v < 0 => {
                    return Err(DeltaError::NegativeSize {
                        field: "to_size",
                        offset: pos as u64,
                        value: v,
                    })
                }
                VarintStep::Done(v) => break v as u32,
            }
        };
        if compression == Compression::Heatshrink && to_size > 0 {
            let &p = patch
                .get(pos)
                .ok_or(truncated(pos, "the heatshrink parameter byte"))?;
            if p != HEATSHRINK_PARAMS_8_7 {
                return Err(DeltaError::UnsupportedHeatshrink {
                    window: (p >> 4) + 4,
                    lookahead: (p & 0x0f) + 3,
                });
            }
            pos += 1;
        }
        Ok(PatchHeader {
            compression,
            to_size,
            len: pos,
        })
    }
}

/// The 64-byte header Espressif's tooling puts in front of a detools patch
/// (espressif/idf-extra-components `esp_delta_ota/examples/https_delta_ota/tools/
/// esp_delta_ota_patch_gen.py`; checked by that example's `main.c` before `esp_ota_begin`):
/// magic `0xfccdde10` little-endian, the base image's SHA-256, 28 reserved zero bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspDeltaHeader {
    pub base_sha256: [u8; 32],
}

impl EspDeltaHeader {
    /// True when `bytes` starts with the magic (a detools patch never does: its first byte is
    /// `0x10` only for in-place patches, whose next varint cannot be negative).
    pub fn detect(bytes: &[u8]) -> bool {
        bytes.len() >= 4 && bytes[..4] == ESP_DELTA_MAGIC.to_le_bytes()
    }

    pub fn parse(bytes: &[u8; ESP_DELTA_HEADER_LEN]) -> Result<Self, DeltaError> {
        let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if magic != ESP_DELTA_MAGIC {
            return Err(DeltaError::EspHeaderMagic { found: magic });
        }
        if let Some(i) = bytes[36..].iter().position(|&b| b != 0) {
            return Err(DeltaError::EspHeaderReserved {
                offset: 36 + i as u8,
                found: bytes[36 + i],
            });
        }
        let mut base_sha256 = [0u8; 32];
        base_sha256.copy_from_slice(&bytes[4..36]);
        Ok(EspDeltaHeader { base_sha256 })
    }

    pub fn to_bytes(&self) -> [u8; ESP_DELTA_HEADER_LEN] {
        let mut out = [0u8; ESP_DELTA_HEADER_LEN];
        out[..4].copy_from_slice(&ESP_DELTA_MAGIC.to_le_bytes());
        out[4..36].copy_from_slice(&self.base_sha256);
        out
    }

    /// The check esp_delta_ota's example makes before erasing anything: the header's digest
    /// against the running image's ([`super::base_image_sha256`]).
    pub fn check_base(&self, running: &[u8; 32]) -> Result<(), DeltaError> {
        if &self.base_sha256 != running {
            return Err(DeltaError::BaseMismatch {
                expected: self.base_sha256,
                found: *running,
            });
        }
        Ok(())
    }
}
