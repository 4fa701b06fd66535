//! Unit tests: a small model applier (bsdiff semantics, detools layout) checks what `make`
//! writes; the interop suite (`tests/interop_delta_make.rs` at the workspace root) checks it
//! with detools itself.

use super::*;

/// Decodes a compression-none or heatshrink body and applies it (test model of detools'
/// `apply_patch_sequential`, eerimoq/detools `detools/apply.py`).
fn model_apply(old: &[u8], patch: &[u8]) -> Vec<u8> {
    let comp = patch[0] & 0x0f;
    assert_eq!(patch[0] >> 4, 0, "sequential");
    let (to_size, used) = varint::read_size(&patch[1..]).unwrap();
    let rest = &patch[1 + used..];
    if to_size == 0 {
        assert!(rest.is_empty());
        return Vec::new();
    }
    let body = match comp {
        0 => rest.to_vec(),
        4 => {
            assert_eq!(rest[0], 0x44);
            let mut dec = heatshrink::decoder::HeatshrinkDecoder::<8, 7, 256, 256>::new();
            let mut out = Vec::new();
            let mut buf = [0u8; 1024];
            let mut input = &rest[1..];
            loop {
                if !input.is_empty() {
                    if let Ok(n) = dec.sink(input) {
                        input = &input[n..];
                    }
                }
                let p = dec.poll(&mut buf).unwrap();
                out.extend_from_slice(&buf[..p.bytes_written()]);
                if input.is_empty() && matches!(p, heatshrink::Poll::Empty(_)) {
                    break;
                }
            }
            out
        }
        c => panic!("compression {c}"),
    };
    let mut at = 0;
    let next = |body: &[u8], at: &mut usize| {
        let (v, n) = varint::read_size(&body[*at..]).unwrap();
        *at += n;
        v
    };
    assert_eq!(next(&body, &mut at), 0, "no data-format patch");
    let mut out = Vec::new();
    let mut from: i64 = 0;
    while (out.len() as i64) < to_size {
        let diff = next(&body, &mut at) as usize;
        for i in 0..diff {
            out.push(body[at + i].wrapping_add(old[from as usize + i]));
        }
        at += diff;
        from += diff as i64;
        let extra = next(&body, &mut at) as usize;
        out.extend_from_slice(&body[at..at + extra]);
        at += extra;
        let adj = next(&body, &mut at);
        from += adj;
        assert!(
            (0..=old.len() as i64).contains(&from),
            "seek to {from} outside the base"
        );
    }
    // heatshrink pads its last byte; a none body must end exactly here.
    if comp == 0 {
        assert_eq!(at, body.len(), "nothing after the last triple");
    } else {
        assert!(body[at..].iter().all(|&b| b == 0) && body.len() - at < 2);
    }
    assert_eq!(out.len() as i64, to_size);
    out
}

fn firmware_like(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if i % 64 < 40 {
                (i / 7) as u8
            } else {
                (x >> 16) as u8
            }
        })
        .collect()
}

#[test]
fn patches_apply_back_to_the_new_image() {
    let old = firmware_like(100_000, 1);
    let mut new = old.clone();
    new.splice(30_000..30_000, (0..777u32).map(|i| i as u8));
    new.drain(70_000..70_500);
    new[90_000] ^= 0xff;
    for compression in [Compression::None, Compression::Heatshrink] {
        let patch = make(
            &old,
            &new,
            &Options {
                compression,
                esp_header: false,
            },
        )
        .unwrap();
        assert_eq!(patch[0], compression.id());
        assert_eq!(model_apply(&old, &patch), new, "{compression}");
        if compression == Compression::Heatshrink {
            assert!(patch.len() < new.len() / 10, "{} bytes", patch.len());
        }
    }
}

#[test]
fn edge_pairs_apply() {
    let some = firmware_like(5000, 9);
    let cases: [(&[u8], &[u8]); 5] = [
        (&[], &some),
        (&some, &[]),
        (&[], &[]),
        (&some, &some),
        (&some[..1], &some[..3]),
    ];
    for (old, new) in cases {
        for compression in [Compression::None, Compression::Heatshrink] {
            let patch = make(
                old,
                new,
                &Options {
                    compression,
                    esp_header: false,
                },
            )
            .unwrap();
            assert_eq!(
                model_apply(old, &patch),
                new,
                "{} -> {} bytes, {compression}",
                old.len(),
                new.len()
            );
        }
    }
}

#[test]
fn an_empty_new_image_is_the_header_alone() {
    for c in [
        Compression::None,
        Compression::Heatshrink,
        Compression::Lzma,
    ] {
        let patch = make(
            b"abc",
            b"",
            &Options {
                compression: c,
                esp_header: false,
            },
        )
        .unwrap();
        assert_eq!(
            patch,
            [c.id(), 0],
            "{c}: detools writes no stream for an empty target"
        );
    }
}

#[test]
fn lzma_patches_start_like_detools_ones() {
    let old = firmware_like(20_000, 3);
    let mut new = old.clone();
    new[100] = 1;
    let patch = make(
        &old,
        &new,
        &Options {
            compression: Compression::Lzma,
            esp_header: false,
        },
    )
    .unwrap();
    assert_eq!(patch[0], 0x01);
    let (size, n) = varint::read_size(&patch[1..]).unwrap();
    assert_eq!(size, 20_000);
    assert_eq!(patch[1 + n], 0x5d, "LZMA alone properties byte");
}

#[test]
fn oversized_inputs_are_refused_naming_which() {
    let big = vec![0u8; MAX_INPUT_LEN + 1];
    let err = make(&big, b"x", &Options::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InputTooLarge {
                input: Input::Old,
                ..
            }
        ),
        "{err}"
    );
    let err = make(b"x", &big, &Options::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InputTooLarge {
                input: Input::New,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("new image is 16777217 bytes"),
        "{err}"
    );
}

#[test]
fn esp_header_carries_magic_and_the_appended_digest() {
    use sha2::{Digest, Sha256};
    let base = app_image(20_000);
    let mut new = base.clone();
    new.push(0);
    let patch = make(
        &base,
        &new,
        &Options {
            compression: Compression::Heatshrink,
            esp_header: true,
        },
    )
    .unwrap();
    assert_eq!(&patch[..4], &[0x10, 0xde, 0xcd, 0xfc]);
    let n = base.len();
    assert_eq!(&patch[4..36], Sha256::digest(&base[..n - 32]).as_slice());
    assert_eq!(&patch[4..36], &base[n - 32..]);
    assert!(patch[36..64].iter().all(|&b| b == 0));
    assert_eq!(model_apply(&base, &patch[64..]), new);
}

#[test]
fn esp_header_refuses_bases_it_cannot_vouch_for() {
    let opts = Options {
        compression: Compression::Heatshrink,
        esp_header: true,
    };
    let err = make(b"not an image", b"x", &opts).unwrap_err();
    assert!(matches!(err, Error::BaseImage { .. }), "{err}");
    let base = app_image(20_000);
    let mut bad = base.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let err = make(&bad, b"x", &opts).unwrap_err();
    assert!(matches!(err, Error::BaseHashMismatch { .. }), "{err}");
    let err = make(&base[..n - 10], b"x", &opts).unwrap_err();
    assert!(matches!(err, Error::BaseImageTruncated { .. }), "{err}");
}

/// An app image made by ota-core's builder (hash appended).
fn app_image(size: u32) -> Vec<u8> {
    use ota_core::image::{build_image, ImageSpec};
    let mut spec = ImageSpec::new(ota_core::Chip::Esp32c3, "delta", "1.0.0");
    spec.total_size = Some(size);
    let mut out = Vec::new();
    build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
    out
}

/// Random pairs (random bases, and new images made from them by random edits: byte changes,
/// insertions of fresh or copied bytes, deletions) round-trip through the model applier with
/// both stream compressions; no input makes the maker fail or panic.
#[test]
fn random_pairs_round_trip() {
    let mut x: u64 = 0x5eed_0123_4567_89ab;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for case in 0..150 {
        let len = (next() % 3000) as usize;
        let alphabet = 1 + (next() % 256) as u8 as u64;
        let old: Vec<u8> = (0..len).map(|_| (next() % alphabet) as u8).collect();
        let mut new = if next() % 8 == 0 {
            (0..(next() % 3000)).map(|_| next() as u8).collect()
        } else {
            old.clone()
        };
        for _ in 0..next() % 12 {
            let at = if new.is_empty() {
                0
            } else {
                (next() % new.len() as u64) as usize
            };
            match next() % 4 {
                0 if !new.is_empty() => new[at] = next() as u8,
                1 => {
                    let n = (next() % 200) as usize;
                    new.splice(at..at, (0..n).map(|_| next() as u8));
                }
                2 if !old.is_empty() => {
                    let from = (next() % old.len() as u64) as usize;
                    let n = ((next() % 300) as usize).min(old.len() - from);
                    new.splice(at..at, old[from..from + n].iter().copied());
                }
                _ => {
                    let end = (at + (next() % 200) as usize).min(new.len());
                    new.drain(at..end);
                }
            }
        }
        for compression in [Compression::None, Compression::Heatshrink] {
            let patch = make(
                &old,
                &new,
                &Options {
                    compression,
                    esp_header: false,
                },
            )
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
            assert_eq!(model_apply(&old, &patch), new, "case {case}, {compression}");
        }
    }
}
