//! The compressed part of a sequential patch: one stream over everything after the
//! uncompressed header (eerimoq/detools `detools/create.py`, `create_compressor`).

use liblzma::stream::{Action, LzmaOptions, Status, Stream};

use crate::{Compression, Error};

/// detools' heatshrink window (`heatshrink_window_sz2`, default 8) and lookahead
/// (`heatshrink_lookahead_sz2`, default 7): the only pair esp_delta_ota's static decoder
/// accepts (espressif/idf-extra-components `esp_delta_ota`, detools `c/heatshrink/heatshrink_config.h`).
pub const HEATSHRINK_WINDOW_SZ2: u8 = 8;
pub const HEATSHRINK_LOOKAHEAD_SZ2: u8 = 7;
/// detools' heatshrink parameter byte, `(window - 4) << 4 | (lookahead - 3)`
/// (`pack_header` in detools `detools/compression/heatshrink.py`): 0x44 for 8/7.
pub const HEATSHRINK_PARAMS: u8 =
    ((HEATSHRINK_WINDOW_SZ2 - 4) << 4) | (HEATSHRINK_LOOKAHEAD_SZ2 - 3);
/// The liblzma preset Python's `lzma.LZMACompressor(format=lzma.FORMAT_ALONE)` uses (its
/// default, `PRESET_DEFAULT` = 6: an 8 MiB dictionary written in the 13-byte `.lzma` header).
pub const LZMA_PRESET: u32 = 6;

/// Compresses `body` as detools does for `compression`.
pub fn compress(compression: Compression, body: &[u8]) -> Result<Vec<u8>, Error> {
    match compression {
        Compression::None => Ok(body.to_vec()),
        Compression::Heatshrink => Ok(heatshrink(body)),
        Compression::Lzma => lzma_alone(body),
    }
}

/// The parameter byte, then the raw heatshrink 8/7 bit stream (its last byte zero-padded;
/// no end marker: appliers stop at `to_size`).
fn heatshrink(body: &[u8]) -> Vec<u8> {
    use heatshrink::encoder::HeatshrinkEncoder;
    use heatshrink::{Finish, Poll};
    // 2 << window bytes of input buffer, as the encoder requires.
    let mut encoder = Box::new(HeatshrinkEncoder::<8, 7, 512>::new());
    let mut out = Vec::with_capacity(body.len() / 4 + 64);
    out.push(HEATSHRINK_PARAMS);
    let mut chunk = [0u8; 4096];
    let mut rest = body;
    let mut drain = |encoder: &mut HeatshrinkEncoder<8, 7, 512>, out: &mut Vec<u8>| loop {
        // poll only fails on an empty output buffer, which `chunk` never is.
        match encoder.poll(&mut chunk) {
            Ok(Poll::More(n)) => out.extend_from_slice(&chunk[..n]),
            Ok(Poll::Empty(n)) => {
                out.extend_from_slice(&chunk[..n]);
                break;
            }
            Err(_) => break,
        }
    };
    while !rest.is_empty() {
        // An error is `Full` (the input buffer must be drained first, below); `Misuse`
        // cannot happen before finish().
        if let Ok(n) = encoder.sink(rest) {
            rest = &rest[n..];
        }
        drain(&mut encoder, &mut out);
    }
    while encoder.finish() == Finish::More {
        drain(&mut encoder, &mut out);
    }
    out
}

/// The legacy "LZMA alone" container: properties byte, 4-byte dictionary size, 8-byte
/// uncompressed size `ff..ff` (unknown) and an end marker, which is what Python's
/// `FORMAT_ALONE` writes and what detools `c/detools.c` reads with `lzma_alone_decoder`.
fn lzma_alone(body: &[u8]) -> Result<Vec<u8>, Error> {
    let lzma_err = |source: liblzma::stream::Error| Error::Lzma { source };
    let options = LzmaOptions::new_preset(LZMA_PRESET).map_err(lzma_err)?;
    let mut stream = Stream::new_lzma_encoder(&options).map_err(lzma_err)?;
    let mut out = Vec::with_capacity(body.len() / 4 + 64);
    let mut input = body;
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(64 * 1024);
        }
        let before = stream.total_in();
        let status = stream
            .process_vec(input, &mut out, Action::Finish)
            .map_err(lzma_err)?;
        let used = (stream.total_in() - before) as usize;
        input = &input[used..];
        if status == Status::StreamEnd {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatshrink_starts_with_detools_parameter_byte() {
        assert_eq!(HEATSHRINK_PARAMS, 0x44);
        let out = compress(Compression::Heatshrink, &[0u8; 10_000]).unwrap();
        assert_eq!(out[0], 0x44);
        assert!(out.len() < 200, "{} bytes for 10,000 zeros", out.len());
    }

    #[test]
    fn heatshrink_round_trips_through_the_decoder() {
        use heatshrink::decoder::HeatshrinkDecoder;
        let body: Vec<u8> = (0..50_000u32)
            .map(|i| ((i * 31) ^ (i >> 5)) as u8)
            .collect();
        let packed = compress(Compression::Heatshrink, &body).unwrap();
        let mut decoder = HeatshrinkDecoder::<8, 7, 256, 256>::new();
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        let mut input = &packed[1..];
        while !input.is_empty() {
            if let Ok(n) = decoder.sink(input) {
                input = &input[n..];
            }
            while let Ok(p) = decoder.poll(&mut buf) {
                out.extend_from_slice(&buf[..p.bytes_written()]);
                if matches!(p, heatshrink::Poll::Empty(_)) {
                    break;
                }
            }
        }
        assert_eq!(&out[..body.len()], &body[..]);
    }

    #[test]
    fn lzma_writes_the_alone_container_python_writes() {
        let out = compress(Compression::Lzma, b"hello hello hello hello").unwrap();
        // properties 0x5d, dictionary 8 MiB, size unknown.
        assert_eq!(
            &out[..13],
            &[0x5d, 0, 0, 0x80, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }
}
