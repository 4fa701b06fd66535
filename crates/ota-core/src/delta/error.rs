//! Why a delta patch was refused. Every variant names the patch offset (bytes from the start
//! of the detools patch, after any esp_delta_ota header) and what was expected vs found.

use core::fmt;

use super::Compression;
use crate::bytes::Hex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeltaError {
    /// Patch type other than sequential (0): in-place (1), hdiffpatch (2) or unknown.
    UnsupportedType { type_id: u8 },
    /// Compression id this build cannot decode (`name` is detools' name when known).
    UnsupportedCompression { id: u8, name: &'static str },
    /// Heatshrink parameters other than window 8 / lookahead 7 (`c/detools.c` error 27 in
    /// esp_delta_ota's static build).
    UnsupportedHeatshrink { window: u8, lookahead: u8 },
    /// A size field is negative where only sizes make sense.
    NegativeSize {
        field: &'static str,
        offset: u64,
        value: i32,
    },
    /// A varint longer than the 4 bytes detools' C decoder takes (27-bit magnitude).
    VarintOverflow { field: &'static str, offset: u64 },
    /// A data-format section (`--data-format`): no C applier implements it (error 1).
    DataFormatNotSupported { offset: u64, size: u32 },
    /// A diff or extra block would run past the declared output size.
    OutputOverrun {
        field: &'static str,
        offset: u64,
        out_pos: u32,
        size: u32,
        to_size: u32,
    },
    /// A diff would read the base outside `[0, base_len)`.
    BaseOverrun {
        offset: u64,
        from_pos: u32,
        size: u32,
        base_len: u32,
    },
    /// A seek (adjustment) lands outside `[0, base_len]`.
    SeekOutsideBase {
        offset: u64,
        from_pos: u32,
        adjustment: i32,
        base_len: u32,
    },
    /// Bytes after the triple that completes the output.
    TrailingData { offset: u64 },
    /// The patch ended before the output was complete.
    Truncated {
        offset: u64,
        out_pos: u32,
        to_size: u32,
        expecting: &'static str,
    },
    /// The patch, output or base is larger than this applier's 32-bit positions allow.
    TooLarge { field: &'static str, value: u64 },
    /// esp_delta_ota header: wrong magic.
    EspHeaderMagic { found: u32 },
    /// esp_delta_ota header: the 28 reserved bytes are not zero.
    EspHeaderReserved { offset: u8, found: u8 },
    /// esp_delta_ota header: the patch was made for another base image.
    BaseMismatch { expected: [u8; 32], found: [u8; 32] },
    /// An earlier call failed; the applier takes no more input.
    Failed { offset: u64 },
    /// A checkpoint record is damaged, from another version, or for another patch / base.
    BadCheckpoint { reason: &'static str },
    /// The patched image is not the one the caller expected (a catalogue's `target_sha256`).
    TargetMismatch { expected: [u8; 32], found: [u8; 32] },
    /// The patch header's output size is not the image size the caller expected (a
    /// catalogue's `size`): refused when the header is read, before anything is written.
    OutputSize { declared: u32, expected: u64 },
}

impl core::error::Error for DeltaError {}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DeltaError::UnsupportedType { type_id } => {
                let name = match type_id {
                    1 => " (in-place)",
                    2 => " (hdiffpatch)",
                    _ => "",
                };
                write!(
                    f,
                    "delta patch offset 0: patch type {type_id}{name} is not supported: only \
                     sequential patches (type 0, `detools create_patch`) are applied"
                )
            }
            DeltaError::UnsupportedCompression { id, name } => write!(
                f,
                "delta patch offset 0: compression {id} ({name}) is not supported here: \
                 expected heatshrink (4) or none (0){}",
                if id == Compression::LZMA_ID {
                    "; lzma is decoded on std hosts only (the ota CLI)"
                } else {
                    ""
                }
            ),
            DeltaError::UnsupportedHeatshrink { window, lookahead } => write!(
                f,
                "delta patch: heatshrink window {window} / lookahead {lookahead} is not \
                 supported: expected window 8 / lookahead 7 (what esp_delta_ota accepts)"
            ),
            DeltaError::NegativeSize {
                field,
                offset,
                value,
            } => write!(
                f,
                "delta patch offset {offset}: {field} is negative ({value})"
            ),
            DeltaError::VarintOverflow { field, offset } => write!(
                f,
                "delta patch offset {offset}: {field} takes more than 4 bytes (detools sizes \
                 are below 2^27)"
            ),
            DeltaError::DataFormatNotSupported { offset, size } => write!(
                f,
                "delta patch offset {offset}: data-format section of {size} bytes \
                 (`--data-format`) is not supported: expected 0"
            ),
            DeltaError::OutputOverrun {
                field,
                offset,
                out_pos,
                size,
                to_size,
            } => write!(
                f,
                "delta patch offset {offset}: {field} of {size} bytes at output offset \
                 {out_pos} runs past the declared output size {to_size}"
            ),
            DeltaError::BaseOverrun {
                offset,
                from_pos,
                size,
                base_len,
            } => write!(
                f,
                "delta patch offset {offset}: diff of {size} bytes reads the base at \
                 {from_pos}..{} but the base is {base_len} bytes",
                from_pos as u64 + size as u64
            ),
            DeltaError::SeekOutsideBase {
                offset,
                from_pos,
                adjustment,
                base_len,
            } => write!(
                f,
                "delta patch offset {offset}: adjustment {adjustment} from base offset \
                 {from_pos} leaves the base (0..={base_len})"
            ),
            DeltaError::TrailingData { offset } => write!(
                f,
                "delta patch offset {offset}: data after the end of the patch (the output is \
                 complete)"
            ),
            DeltaError::Truncated {
                offset,
                out_pos,
                to_size,
                expecting,
            } => write!(
                f,
                "delta patch truncated at offset {offset}: expected {expecting}; output has \
                 {out_pos} of {to_size} bytes"
            ),
            DeltaError::TooLarge { field, value } => {
                write!(f, "delta patch: {field} {value} exceeds 2^32 - 1 bytes")
            }
            DeltaError::EspHeaderMagic { found } => write!(
                f,
                "esp_delta_ota header offset 0: magic 0x{found:08x}, expected 0x{:08x}",
                super::ESP_DELTA_MAGIC
            ),
            DeltaError::EspHeaderReserved { offset, found } => write!(
                f,
                "esp_delta_ota header offset {offset}: reserved byte is 0x{found:02x}, \
                 expected 0"
            ),
            DeltaError::BaseMismatch { expected, found } => write!(
                f,
                "delta patch is for another base image: header's base SHA-256 {}, running \
                 image's {}",
                Hex(&expected),
                Hex(&found)
            ),
            DeltaError::Failed { offset } => write!(
                f,
                "delta patch offset {offset}: the applier stopped at an earlier error"
            ),
            DeltaError::BadCheckpoint { reason } => write!(f, "delta checkpoint: {reason}"),
            DeltaError::TargetMismatch { expected, found } => write!(
                f,
                "the patched image's SHA-256 is {}, the catalogue lists {}: not switching to it",
                Hex(&found),
                Hex(&expected)
            ),
            DeltaError::OutputSize { declared, expected } => write!(
                f,
                "delta patch header: to_size {declared} bytes, but the image is {expected}                  bytes (the catalogue's size)"
            ),
        }
    }
}

/// A failed [`super::DeltaApplier::feed`]: the patch, the base read or the output sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplyError<B, S> {
    Patch(DeltaError),
    Base(B),
    Sink(S),
}

impl<B: fmt::Display, S: fmt::Display> fmt::Display for ApplyError<B, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Patch(e) => e.fmt(f),
            ApplyError::Base(e) => write!(f, "reading the delta base: {e}"),
            ApplyError::Sink(e) => write!(f, "writing the delta output: {e}"),
        }
    }
}

impl<B, S> core::error::Error for ApplyError<B, S>
where
    B: fmt::Debug + fmt::Display,
    S: fmt::Debug + fmt::Display,
{
}

impl<B, S> From<DeltaError> for ApplyError<B, S> {
    fn from(e: DeltaError) -> Self {
        ApplyError::Patch(e)
    }
}
