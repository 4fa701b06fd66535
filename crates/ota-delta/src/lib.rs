//! Makes detools delta patches: **sequential** patches (type 0) with compression none,
//! heatshrink (window 8, lookahead 7: what esp_delta_ota accepts) or lzma, optionally behind
//! the 64-byte esp_delta_ota header. The applier lives in `ota-core` (`delta`).
//!
//! Layout written (eerimoq/detools `detools/create.py`, `create_patch_sequential`):
//!
//! ```text
//! [0x00 | compression id] [to_size]                      uncompressed
//! compress( [0 = no data-format patch]                   one stream over the rest
//!           { [diff_size] [diff bytes] [extra_size] [extra bytes] [adjustment] } ... )
//! ```
//!
//! Sizes use detools' signed variable-length encoding ([`varint`]). Diff bytes are
//! `new - old` (mod 256) over `diff_size` base bytes, extra bytes are copied from the new
//! image, and the adjustment is a relative seek in the base. When `to_size` is 0 nothing
//! follows the header (detools writes no stream either).
//!
//! Matching is bsdiff's suffix-array search ([`matcher`], qbsdiff's implementation).
//! Inputs are bounded by [`MAX_INPUT_LEN`] each; the patch is built in memory.

pub mod compress;
pub mod esp_header;
pub mod matcher;
pub mod varint;

use std::fmt;

pub use compress::{HEATSHRINK_LOOKAHEAD_SZ2, HEATSHRINK_PARAMS, HEATSHRINK_WINDOW_SZ2};
pub use esp_header::{base_digest, ESP_DELTA_OTA_MAGIC, ESP_HEADER_LEN};

/// The largest base or new image accepted: 16 MiB, the largest flash (and so app partition)
/// an ESP32-class chip maps. It also keeps every size and seek far below the detools C
/// decoder's 2^27 limit ([`varint::MAX_C_MAGNITUDE`]).
pub const MAX_INPUT_LEN: usize = 16 * 1024 * 1024;

/// detools' patch type for sequential patches (`PATCH_TYPE_SEQUENTIAL` in `detools/common.py`).
pub const PATCH_TYPE_SEQUENTIAL: u8 = 0;

/// The compression of the patch body, with detools' ids (`compression_string_to_number` in
/// eerimoq/detools `detools/common.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression (id 0). The detools C library needs the patch length for it, which
    /// esp_delta_ota does not pass: not for esp_delta_ota devices.
    None,
    /// LZMA alone container (id 1), preset 6, 8 MiB dictionary: hosts and Linux devices.
    Lzma,
    /// heatshrink 8/7 (id 4): esp_delta_ota's only compression.
    #[default]
    Heatshrink,
}

impl Compression {
    /// detools' compression id (the low nibble of the patch's first byte).
    pub const fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lzma => 1,
            Compression::Heatshrink => 4,
        }
    }
    /// The name detools' `-c` option takes.
    pub const fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lzma => "lzma",
            Compression::Heatshrink => "heatshrink",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to make a patch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub compression: Compression,
    /// Prefix the 64-byte esp_delta_ota header (magic and the base image's SHA-256). The base
    /// must then be an ESP-IDF app image with a valid appended SHA-256.
    pub esp_header: bool,
}

/// One bsdiff/detools control triple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Triple {
    /// Bytes written as `diff byte + base byte`, read from the base in order.
    pub diff: u64,
    /// Bytes copied from the patch.
    pub extra: u64,
    /// Relative seek in the base after this triple.
    pub adjustment: i64,
}

/// Which input an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Old,
    New,
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Input::Old => "old (base) image",
            Input::New => "new image",
        })
    }
}

/// Why a patch could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{input} is {len} bytes, more than the {max}-byte limit")]
    InputTooLarge {
        input: Input,
        len: usize,
        max: usize,
    },
    #[error("--esp-header: the base is not an ESP-IDF image: {source}")]
    BaseImage { source: ota_core::image::ImageError },
    #[error("--esp-header: the base image ends early ({len} bytes, inside its segments or hash)")]
    BaseImageTruncated { len: usize },
    #[error(
        "--esp-header: the base image has no appended SHA-256 (header byte 23 hash_appended = {hash_appended}); \
         esp_delta_ota checks the running image's appended hash"
    )]
    BaseHasNoHash { hash_appended: u8 },
    #[error(
        "--esp-header: the base image's appended SHA-256 {} does not match its contents ({})",
        ota_core::image::Hex(stored),
        ota_core::image::Hex(computed)
    )]
    BaseHashMismatch {
        stored: [u8; 32],
        computed: [u8; 32],
    },
    /// qbsdiff failed, or its BSDIFF40 control stream could not be read back.
    #[error("matching (qbsdiff): {source}")]
    Qbsdiff { source: std::io::Error },
    /// The matcher's controls broke an invariant (a bug, never an input's fault): what and where.
    #[error("matching: {0}")]
    Matcher(String),
    #[error("lzma: {source}")]
    Lzma { source: liblzma::stream::Error },
}

/// Makes a detools sequential patch turning `old` into `new`.
pub fn make(old: &[u8], new: &[u8], options: &Options) -> Result<Vec<u8>, Error> {
    check_len(Input::Old, old)?;
    check_len(Input::New, new)?;
    let mut patch = Vec::new();
    if options.esp_header {
        patch.extend_from_slice(&esp_header::header(&base_digest(old)?));
    }
    patch.push((PATCH_TYPE_SEQUENTIAL << 4) | options.compression.id());
    varint::write_size(&mut patch, new.len() as i64);
    if new.is_empty() {
        return Ok(patch);
    }
    let triples = matcher::triples(old, new)?;
    let body = body(old, new, &triples);
    patch.extend_from_slice(&compress::compress(options.compression, &body)?);
    Ok(patch)
}

fn check_len(input: Input, data: &[u8]) -> Result<(), Error> {
    if data.len() > MAX_INPUT_LEN {
        return Err(Error::InputTooLarge {
            input,
            len: data.len(),
            max: MAX_INPUT_LEN,
        });
    }
    Ok(())
}

/// The uncompressed body: no data-format patch, then the triples with their bytes. The
/// triples come from [`matcher::triples`], which checked them against both inputs.
fn body(old: &[u8], new: &[u8], triples: &[Triple]) -> Vec<u8> {
    let extra: u64 = triples.iter().map(|t| t.extra).sum();
    let mut out = Vec::with_capacity(new.len() + triples.len() * 8 + 8);
    varint::write_size(&mut out, 0);
    let (mut from, mut to) = (0i64, 0usize);
    for t in triples {
        let (diff, extra_len) = (t.diff as usize, t.extra as usize);
        varint::write_size(&mut out, diff as i64);
        if diff > 0 {
            let base = &old[from as usize..from as usize + diff];
            out.extend(
                new[to..to + diff]
                    .iter()
                    .zip(base)
                    .map(|(n, o)| n.wrapping_sub(*o)),
            );
        }
        from += diff as i64;
        to += diff;
        varint::write_size(&mut out, extra_len as i64);
        out.extend_from_slice(&new[to..to + extra_len]);
        to += extra_len;
        varint::write_size(&mut out, t.adjustment);
        from += t.adjustment;
    }
    debug_assert!(extra <= new.len() as u64);
    out
}

/// The layout of a patch this crate wrote (or any detools sequential patch with compression
/// none): used by tests and by `ota delta make --verbose`-style reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub triples: usize,
    pub diff_bytes: u64,
    pub extra_bytes: u64,
}

/// Matches `old` against `new` and reports the triples' totals without building a patch.
pub fn stats(old: &[u8], new: &[u8]) -> Result<Stats, Error> {
    check_len(Input::Old, old)?;
    check_len(Input::New, new)?;
    let triples = matcher::triples(old, new)?;
    Ok(Stats {
        triples: triples.len(),
        diff_bytes: triples.iter().map(|t| t.diff).sum(),
        extra_bytes: triples.iter().map(|t| t.extra).sum(),
    })
}

#[cfg(test)]
mod tests;
