//! Saving an applier at a checkpoint and restoring it after a power cut.
//!
//! Choice: the whole decompressor state is serialised, so a checkpoint can be taken after any
//! [`DeltaApplier::feed`] call, at any patch byte. The alternative, checkpointing only where
//! the decompressor is "empty", does not exist for heatshrink: its 256-byte window is needed by
//! every later back-reference and is never empty after the first byte. The record is fixed
//! size ([`CHECKPOINT_LEN`] bytes), versioned and CRC-32 protected; [`DeltaApplier::resume`]
//! also checks every field for a state the applier can be in and that it belongs to the same
//! patch header and base length.
//!
//! What the caller owns: the checkpoint says that the first [`Checkpoint::output_offset`]
//! output bytes were produced and that the patch continues at [`Checkpoint::patch_offset`]
//! (bytes from the start of the detools patch, after any esp_delta_ota header). Save it only
//! once those output bytes are durable in flash (for the app update engine: after its write
//! of them has reached flash), and bind it to the patch (e.g. its SHA-256) in your own record.

use crc::{Crc, CRC_32_ISO_HDLC};

use super::apply::{DeltaApplier, Step};
use super::error::DeltaError;
use super::heatshrink::{HsDecoder, HS_STATE_LEN};
use super::varint::VarintReader;
use super::Compression;

/// Record layout version (byte 3 of the record).
pub const CHECKPOINT_VERSION: u8 = 1;
const MAGIC: [u8; 3] = *b"OTD";
const HS_AT: usize = 36;
const CRC_AT: usize = HS_AT + HS_STATE_LEN;
/// Bytes of a [`Checkpoint`] record.
pub const CHECKPOINT_LEN: usize = CRC_AT + 4;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// A saved applier: a fixed-size record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    bytes: [u8; CHECKPOINT_LEN],
}

impl Checkpoint {
    pub fn to_bytes(&self) -> [u8; CHECKPOINT_LEN] {
        self.bytes
    }

    /// Read a record back; refuses a wrong magic, version or CRC (the fields themselves are
    /// checked by [`DeltaApplier::resume`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, DeltaError> {
        let bad = |reason| DeltaError::BadCheckpoint { reason };
        let bytes: [u8; CHECKPOINT_LEN] = bytes
            .try_into()
            .map_err(|_| bad("record is not CHECKPOINT_LEN bytes"))?;
        if bytes[..3] != MAGIC {
            return Err(bad("not a delta checkpoint (magic)"));
        }
        if bytes[3] != CHECKPOINT_VERSION {
            return Err(bad("record version is not 1"));
        }
        let crc = u32::from_le_bytes([
            bytes[CRC_AT],
            bytes[CRC_AT + 1],
            bytes[CRC_AT + 2],
            bytes[CRC_AT + 3],
        ]);
        if CRC32.checksum(&bytes[..CRC_AT]) != crc {
            return Err(bad("CRC-32 mismatch"));
        }
        Ok(Checkpoint { bytes })
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ])
    }

    /// Where the patch continues (bytes from the detools patch's first byte).
    pub fn patch_offset(&self) -> u32 {
        self.u32_at(8)
    }

    /// Output bytes produced before the checkpoint.
    pub fn output_offset(&self) -> u32 {
        self.u32_at(16)
    }

    /// The patch's declared output size.
    pub fn to_size(&self) -> u32 {
        self.u32_at(12)
    }
}

impl DeltaApplier {
    /// The applier's state as a fixed-size record, once the patch header has been read
    /// (`None` before: restart from the patch's first byte, nothing has been output). Also
    /// `None` after an error, and for [`DeltaApplier::for_decompressed_body`] (its offsets
    /// are in a stream the caller decompresses, which cannot be resumed mid-way).
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        if (self.step as u8) < Step::DfSize as u8
            || self.step == Step::Failed
            || self.compression == Compression::External
        {
            return None;
        }
        let mut b = [0u8; CHECKPOINT_LEN];
        b[..3].copy_from_slice(&MAGIC);
        b[3] = CHECKPOINT_VERSION;
        b[4] = self.step as u8;
        b[5] = self.compression.id();
        let (value, nbytes, negative) = self.varint.raw();
        b[6] = nbytes;
        b[7] = negative as u8;
        for (i, v) in [
            self.patch_pos,
            self.to_size,
            self.out_pos,
            self.from_pos,
            self.base_len,
            self.remaining,
            value,
        ]
        .into_iter()
        .enumerate()
        {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[HS_AT..CRC_AT].copy_from_slice(&self.hs.to_bytes());
        let crc = CRC32.checksum(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        Some(Checkpoint { bytes: b })
    }

    /// Rebuild the applier saved in `cp`, over a base of `base_len` bytes (which must be the
    /// one it was saved with). Feed the patch from [`Checkpoint::patch_offset`] on.
    pub fn resume(cp: &Checkpoint, base_len: u32) -> Result<DeltaApplier, DeltaError> {
        let bad = |reason| DeltaError::BadCheckpoint { reason };
        let b = &cp.bytes;
        let step = Step::from_u8(b[4]).ok_or(bad("unknown applier step"))?;
        if (step as u8) < Step::DfSize as u8 || step == Step::Failed {
            return Err(bad("applier step is inside the patch header or failed"));
        }
        let compression = match Compression::from_id(b[5]) {
            Some(c @ (Compression::None | Compression::Heatshrink)) => c,
            _ => return Err(bad("compression is not none or heatshrink")),
        };
        let patch_pos = cp.u32_at(8);
        let to_size = cp.u32_at(12);
        let out_pos = cp.u32_at(16);
        let from_pos = cp.u32_at(20);
        let saved_base = cp.u32_at(24);
        let remaining = cp.u32_at(28);
        let value = cp.u32_at(32);
        if saved_base != base_len {
            return Err(bad("saved for a base of another length"));
        }
        let varint = VarintReader::from_raw(value, b[6], b[7] != 0)
            .filter(|v| step.is_varint_step() || v.is_empty())
            .ok_or(bad("varint state is not reachable"))?;
        let mut hs_bytes = [0u8; HS_STATE_LEN];
        hs_bytes.copy_from_slice(&b[HS_AT..CRC_AT]);
        let hs =
            HsDecoder::from_bytes(&hs_bytes).ok_or(bad("heatshrink state is not reachable"))?;
        if compression != Compression::Heatshrink && hs != HsDecoder::new() {
            return Err(bad("heatshrink state in a patch without heatshrink"));
        }
        let in_block = matches!(step, Step::Diff | Step::Extra);
        let ok = out_pos <= to_size
            && from_pos <= base_len
            && (in_block == (remaining > 0))
            && (!in_block || out_pos as u64 + remaining as u64 <= to_size as u64)
            && (step != Step::Diff || from_pos as u64 + remaining as u64 <= base_len as u64)
            && (step != Step::Done || out_pos == to_size);
        if !ok {
            return Err(bad("positions are inconsistent"));
        }
        Ok(DeltaApplier {
            step,
            compression,
            patch_pos,
            to_size,
            out_pos,
            from_pos,
            base_len,
            remaining,
            varint,
            hs,
        })
    }
}

impl Step {
    fn is_varint_step(self) -> bool {
        matches!(
            self,
            Step::DfSize | Step::DiffSize | Step::ExtraSize | Step::Adjust
        )
    }
}
