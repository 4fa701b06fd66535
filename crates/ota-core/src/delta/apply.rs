//! The sequential applier: a sans-IO state machine over the detools patch stream.
//!
//! It takes patch bytes in chunks of any size, reads the base through [`DeltaBase`] (at most
//! [`CHUNK`] bytes a read), and hands output bytes to a sink closure in pieces of at most
//! [`CHUNK`] bytes, strictly in order (the next wave feeds them to `update::AppUpdate::write`).
//! Semantics: detools `detools/apply.py` `apply_patch_sequential` and `c/detools.c`
//! `apply_patch_process`: per triple, `diff_size` bytes of `diff + base[from_pos]` (mod 256),
//! `extra_size` literal bytes, then a relative seek of the base by `adjustment`; the triple
//! that completes `to_size` still carries its adjustment, and the stream must end there.

use super::base::DeltaBase;
use super::error::{ApplyError, DeltaError};
use super::heatshrink::HsDecoder;
use super::varint::{VarintReader, VarintStep};
use super::{Compression, PatchHeader, PATCH_TYPE_SEQUENTIAL};

/// Largest base read and output piece (`c/detools.c` uses 128-byte stack buffers).
pub const CHUNK: usize = 64;

/// Longest patch stream the applier takes (its offsets are 32-bit; empty triples could
/// otherwise make a stream that never ends).
pub const MAX_PATCH_LEN: u32 = u32::MAX;

/// Upper bound of `size_of::<DeltaApplier>()` on every target (304 bytes measured on x86-64).
pub const APPLIER_MAX_RAM: usize = 320;
const _: () = assert!(core::mem::size_of::<DeltaApplier>() <= APPLIER_MAX_RAM);

/// Where the applier is in the patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    TypeByte = 0,
    ToSize = 1,
    HsParams = 2,
    DfSize = 3,
    DiffSize = 4,
    Diff = 5,
    ExtraSize = 6,
    Extra = 7,
    Adjust = 8,
    Done = 9,
    /// An earlier call failed: the patch, base or sink error left the state mid-step.
    Failed = 10,
}

impl Step {
    pub(crate) fn from_u8(v: u8) -> Option<Step> {
        Some(match v {
            0 => Step::TypeByte,
            1 => Step::ToSize,
            2 => Step::HsParams,
            3 => Step::DfSize,
            4 => Step::DiffSize,
            5 => Step::Diff,
            6 => Step::ExtraSize,
            7 => Step::Extra,
            8 => Step::Adjust,
            9 => Step::Done,
            10 => Step::Failed,
            _ => return None,
        })
    }

    fn expecting(self) -> &'static str {
        match self {
            Step::TypeByte => "the patch type byte",
            Step::ToSize => "the output size",
            Step::HsParams => "the heatshrink parameter byte",
            Step::DfSize => "the data-format size",
            Step::DiffSize => "a diff size",
            Step::Diff => "diff bytes",
            Step::ExtraSize => "an extra size",
            Step::Extra => "extra bytes",
            Step::Adjust => "an adjustment",
            Step::Done => "nothing",
            Step::Failed => "nothing (an earlier error stopped the applier)",
        }
    }

    fn is_varint(self) -> bool {
        matches!(
            self,
            Step::ToSize | Step::DfSize | Step::DiffSize | Step::ExtraSize | Step::Adjust
        )
    }
}

/// Applies one detools sequential patch. RAM: `size_of::<DeltaApplier>()` (the heatshrink
/// window is 256 of it; see the module docs for the measured figure) plus two [`CHUNK`]-byte
/// buffers on the stack during [`DeltaApplier::feed`]; nothing is allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaApplier {
    pub(crate) step: Step,
    pub(crate) compression: Compression,
    /// Patch bytes consumed (from the detools patch's first byte).
    pub(crate) patch_pos: u32,
    pub(crate) to_size: u32,
    pub(crate) out_pos: u32,
    pub(crate) from_pos: u32,
    pub(crate) base_len: u32,
    /// Bytes left in the diff or extra block in progress.
    pub(crate) remaining: u32,
    pub(crate) varint: VarintReader,
    pub(crate) hs: HsDecoder,
}

impl DeltaApplier {
    /// An applier for a whole detools patch (its first byte is the next one fed), over a base
    /// of `base_len` bytes.
    pub const fn new(base_len: u32) -> Self {
        DeltaApplier {
            step: Step::TypeByte,
            compression: Compression::None,
            patch_pos: 0,
            to_size: 0,
            out_pos: 0,
            from_pos: 0,
            base_len,
            remaining: 0,
            varint: VarintReader::new(),
            hs: HsDecoder::new(),
        }
    }

    /// An applier fed the *decompressed* body of a patch whose header was parsed by
    /// [`PatchHeader::parse`] (a host decompresses lzma itself; error offsets are then offsets
    /// in the decompressed body).
    pub fn for_decompressed_body(header: &PatchHeader, base_len: u32) -> Self {
        let mut a = DeltaApplier::new(base_len);
        a.compression = Compression::External;
        a.to_size = header.to_size;
        a.step = if header.to_size == 0 {
            Step::Done
        } else {
            Step::DfSize
        };
        a
    }

    /// The declared output size, once the header has been read.
    pub fn to_size(&self) -> Option<u32> {
        (self.step as u8 > Step::ToSize as u8).then_some(self.to_size)
    }

    /// The compression, once the first byte has been read.
    pub fn compression(&self) -> Option<Compression> {
        (self.step != Step::TypeByte).then_some(self.compression)
    }

    /// Patch bytes consumed so far (the offset of the next byte to feed).
    pub fn patch_offset(&self) -> u32 {
        self.patch_pos
    }

    /// Output bytes produced so far.
    pub fn output_offset(&self) -> u32 {
        self.out_pos
    }

    pub fn base_len(&self) -> u32 {
        self.base_len
    }

    /// True once the triple completing the output has been read.
    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// Feed `chunk`; every byte is consumed. After an error (patch, base read or sink) the
    /// applier refuses further input ([`DeltaError::Failed`]): restart it, or resume from the
    /// last checkpoint.
    pub fn feed<B, S, E>(
        &mut self,
        base: &mut B,
        chunk: &[u8],
        sink: &mut S,
    ) -> Result<(), ApplyError<B::Error, E>>
    where
        B: DeltaBase + ?Sized,
        S: FnMut(&[u8]) -> Result<(), E>,
    {
        self.feed_until(base, chunk, u32::MAX, sink).map(|_| ())
    }

    /// Like [`DeltaApplier::feed`], but stop before producing output beyond `out_limit` bytes
    /// in total (e.g. a sector boundary where the caller wants a checkpoint); returns how
    /// many bytes of `chunk` were consumed. Feed the rest afterwards.
    pub fn feed_until<B, S, E>(
        &mut self,
        base: &mut B,
        chunk: &[u8],
        out_limit: u32,
        sink: &mut S,
    ) -> Result<usize, ApplyError<B::Error, E>>
    where
        B: DeltaBase + ?Sized,
        S: FnMut(&[u8]) -> Result<(), E>,
    {
        if self.step == Step::Failed {
            return Err(DeltaError::Failed { offset: self.at() }.into());
        }
        let end = self.patch_pos as u64 + chunk.len() as u64;
        if end > MAX_PATCH_LEN as u64 {
            self.step = Step::Failed;
            return Err(DeltaError::TooLarge {
                field: "patch length",
                value: end,
            }
            .into());
        }
        let start_len = chunk.len();
        let mut input = chunk;
        match self.run(base, &mut input, out_limit, sink) {
            Ok(()) => Ok(start_len - input.len()),
            Err(e) => {
                // A failed step may have consumed patch bytes or decoded output that was not
                // delivered: the applier is unusable (restart, or resume from a checkpoint).
                self.step = Step::Failed;
                Err(e)
            }
        }
    }

    fn take_patch_byte(&mut self, input: &mut &[u8]) -> Option<u8> {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        self.patch_pos = self.patch_pos.saturating_add(1);
        Some(b)
    }

    /// Decompressed bytes into `buf` (up to its length); 0 when the input is used up.
    fn pull(&mut self, input: &mut &[u8], buf: &mut [u8]) -> usize {
        match self.compression {
            Compression::Heatshrink => {
                let before = input.len();
                let n = self.hs.decode(input, buf);
                self.patch_pos = self.patch_pos.saturating_add((before - input.len()) as u32);
                n
            }
            _ => {
                let n = buf.len().min(input.len());
                buf[..n].copy_from_slice(&input[..n]);
                *input = &input[n..];
                self.patch_pos = self.patch_pos.saturating_add(n as u32);
                n
            }
        }
    }

    fn at(&self) -> u64 {
        self.patch_pos as u64
    }

    fn run<B, S, E>(
        &mut self,
        base: &mut B,
        input: &mut &[u8],
        out_limit: u32,
        sink: &mut S,
    ) -> Result<(), ApplyError<B::Error, E>>
    where
        B: DeltaBase + ?Sized,
        S: FnMut(&[u8]) -> Result<(), E>,
    {
        let mut data = [0u8; CHUNK];
        let mut from = [0u8; CHUNK];
        loop {
            match self.step {
                Step::TypeByte => {
                    let Some(b) = self.take_patch_byte(input) else {
                        return Ok(());
                    };
                    let (type_id, comp) = ((b >> 4) & 0x7, b & 0x0f);
                    if b & 0x80 != 0 || type_id != PATCH_TYPE_SEQUENTIAL {
                        return Err(DeltaError::UnsupportedType { type_id: b >> 4 }.into());
                    }
                    self.compression = match Compression::from_id(comp) {
                        Some(c @ (Compression::None | Compression::Heatshrink)) => c,
                        _ => {
                            return Err(DeltaError::UnsupportedCompression {
                                id: comp,
                                name: Compression::name_of(comp),
                            }
                            .into())
                        }
                    };
                    self.step = Step::ToSize;
                }
                Step::HsParams => {
                    let Some(b) = self.take_patch_byte(input) else {
                        return Ok(());
                    };
                    let (window, lookahead) = ((b >> 4) + 4, (b & 0x0f) + 3);
                    if b != super::HEATSHRINK_PARAMS_8_7 {
                        return Err(DeltaError::UnsupportedHeatshrink { window, lookahead }.into());
                    }
                    self.step = Step::DfSize;
                }
                Step::Failed => return Err(DeltaError::Failed { offset: self.at() }.into()),
                Step::Done => {
                    if !input.is_empty() {
                        return Err(DeltaError::TrailingData { offset: self.at() }.into());
                    }
                    return Ok(());
                }
                Step::Diff | Step::Extra => {
                    if self.out_pos >= out_limit {
                        return Ok(());
                    }
                    let want = (self.remaining.min(out_limit - self.out_pos) as usize).min(CHUNK);
                    let n = self.pull(input, &mut data[..want]);
                    if n == 0 {
                        return Ok(());
                    }
                    if self.step == Step::Diff {
                        base.read(self.from_pos, &mut from[..n])
                            .map_err(ApplyError::Base)?;
                        for (d, f) in data[..n].iter_mut().zip(&from[..n]) {
                            *d = d.wrapping_add(*f);
                        }
                        self.from_pos += n as u32;
                    }
                    sink(&data[..n]).map_err(ApplyError::Sink)?;
                    self.out_pos += n as u32;
                    self.remaining -= n as u32;
                    if self.remaining == 0 {
                        self.step = if self.step == Step::Diff {
                            Step::ExtraSize
                        } else {
                            Step::Adjust
                        };
                    }
                }
                step => {
                    debug_assert!(step.is_varint());
                    let b = if step == Step::ToSize {
                        self.take_patch_byte(input)
                    } else {
                        let mut one = [0u8; 1];
                        (self.pull(input, &mut one) == 1).then_some(one[0])
                    };
                    let Some(b) = b else {
                        return Ok(());
                    };
                    match self.varint.push(b) {
                        VarintStep::More => {}
                        VarintStep::Overflow => {
                            return Err(DeltaError::VarintOverflow {
                                field: field_name(step),
                                offset: self.at(),
                            }
                            .into())
                        }
                        VarintStep::Done(v) => self.complete_varint(step, v)?,
                    }
                }
            }
        }
    }

    fn complete_varint(&mut self, step: Step, v: i32) -> Result<(), DeltaError> {
        let offset = self.at();
        let field = field_name(step);
        if v < 0 && step != Step::Adjust {
            return Err(DeltaError::NegativeSize {
                field,
                offset,
                value: v,
            });
        }
        let size = v.unsigned_abs();
        match step {
            Step::ToSize => {
                self.to_size = size;
                self.step = if size == 0 {
                    // Nothing follows, not even heatshrink's parameter byte (detools
                    // `create.py`: an empty to-data writes only the header).
                    self.end()?;
                    Step::Done
                } else if self.compression == Compression::Heatshrink {
                    Step::HsParams
                } else {
                    Step::DfSize
                };
            }
            Step::DfSize => {
                if size != 0 {
                    return Err(DeltaError::DataFormatNotSupported { offset, size });
                }
                self.step = Step::DiffSize;
            }
            Step::DiffSize => {
                self.check_output(field, size)?;
                if self.from_pos as u64 + size as u64 > self.base_len as u64 {
                    return Err(DeltaError::BaseOverrun {
                        offset,
                        from_pos: self.from_pos,
                        size,
                        base_len: self.base_len,
                    });
                }
                self.remaining = size;
                self.step = if size == 0 {
                    Step::ExtraSize
                } else {
                    Step::Diff
                };
            }
            Step::ExtraSize => {
                self.check_output(field, size)?;
                self.remaining = size;
                self.step = if size == 0 { Step::Adjust } else { Step::Extra };
            }
            Step::Adjust => {
                if self.out_pos == self.to_size {
                    // The completing triple's adjustment is read and ignored.
                    self.end()?;
                    self.step = Step::Done;
                } else {
                    let to = self.from_pos as i64 + v as i64;
                    if to < 0 || to > self.base_len as i64 {
                        return Err(DeltaError::SeekOutsideBase {
                            offset,
                            from_pos: self.from_pos,
                            adjustment: v,
                            base_len: self.base_len,
                        });
                    }
                    self.from_pos = to as u32;
                    self.step = Step::DiffSize;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_output(&self, field: &'static str, size: u32) -> Result<(), DeltaError> {
        if self.out_pos as u64 + size as u64 > self.to_size as u64 {
            return Err(DeltaError::OutputOverrun {
                field,
                offset: self.at(),
                out_pos: self.out_pos,
                size,
                to_size: self.to_size,
            });
        }
        Ok(())
    }

    /// The output is complete: nothing decoded may be left over.
    fn end(&self) -> Result<(), DeltaError> {
        if self.hs.holds_output() {
            return Err(DeltaError::TrailingData { offset: self.at() });
        }
        Ok(())
    }

    /// Call after the last patch byte: `Ok(to_size)` when the patch was complete.
    pub fn finish(&self) -> Result<u32, DeltaError> {
        if self.step == Step::Done {
            return Ok(self.to_size);
        }
        if self.step == Step::Failed {
            return Err(DeltaError::Failed { offset: self.at() });
        }
        Err(DeltaError::Truncated {
            offset: self.at(),
            out_pos: self.out_pos,
            to_size: self.to_size,
            expecting: self.step.expecting(),
        })
    }
}

fn field_name(step: Step) -> &'static str {
    match step {
        Step::ToSize => "to_size",
        Step::DfSize => "dfpatch_size",
        Step::DiffSize => "diff_size",
        Step::ExtraSize => "extra_size",
        Step::Adjust => "adjustment",
        _ => "field",
    }
}
