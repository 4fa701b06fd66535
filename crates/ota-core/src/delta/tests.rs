extern crate std;

use std::vec;
use std::vec::Vec;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::varint::encode;
use super::*;
use crate::mem_flash::MemFlash;

/// One triple: diff bytes come from the base at the current position.
#[derive(Clone, Debug)]
pub(crate) struct Triple {
    pub(crate) diff: Vec<u8>,
    pub(crate) extra: Vec<u8>,
    pub(crate) adjust: i32,
}

fn push_varint(out: &mut Vec<u8>, v: i32) {
    let mut b = [0u8; 4];
    let n = encode(v, &mut b).unwrap();
    out.extend_from_slice(&b[..n]);
}

pub(crate) fn body(triples: &[Triple]) -> Vec<u8> {
    let mut out = vec![0u8]; // dfpatch_size
    for t in triples {
        push_varint(&mut out, t.diff.len() as i32);
        out.extend_from_slice(&t.diff);
        push_varint(&mut out, t.extra.len() as i32);
        out.extend_from_slice(&t.extra);
        push_varint(&mut out, t.adjust);
    }
    out
}

fn hs_encode(data: &[u8]) -> Vec<u8> {
    use ::heatshrink::encoder::HeatshrinkEncoder;
    let mut enc = HeatshrinkEncoder::<8, 7, 512>::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    let mut pos = 0;
    loop {
        if pos < data.len() {
            if let Ok(n) = enc.sink(&data[pos..]) {
                pos += n;
            }
        } else {
            let _ = enc.finish();
        }
        loop {
            match enc.poll(&mut buf).unwrap() {
                ::heatshrink::Poll::More(n) => out.extend_from_slice(&buf[..n]),
                ::heatshrink::Poll::Empty(n) => {
                    out.extend_from_slice(&buf[..n]);
                    break;
                }
            }
        }
        if pos >= data.len() && matches!(enc.finish(), ::heatshrink::Finish::Done) {
            return out;
        }
    }
}

pub(crate) fn patch(compression: Compression, to_size: usize, body: &[u8]) -> Vec<u8> {
    let mut out = vec![compression.id()];
    push_varint(&mut out, to_size as i32);
    if to_size == 0 {
        return out;
    }
    match compression {
        Compression::Heatshrink => {
            out.push(HEATSHRINK_PARAMS_8_7);
            out.extend_from_slice(&hs_encode(body));
        }
        _ => out.extend_from_slice(body),
    }
    out
}

/// Random triples over `old` and the new image they make (bsdiff semantics, in memory).
fn random_case(rng: &mut StdRng, old_len: usize) -> (Vec<u8>, Vec<Triple>, Vec<u8>) {
    let old: Vec<u8> = (0..old_len)
        .map(|i| {
            if i % 97 < 60 {
                (i / 7) as u8
            } else {
                rng.gen()
            }
        })
        .collect();
    let mut triples = Vec::new();
    let mut new = Vec::new();
    let mut from = 0usize;
    for _ in 0..rng.gen_range(1..8) {
        let dlen = rng.gen_range(0..=old_len - from);
        let diff: Vec<u8> = (0..dlen)
            .map(|_| if rng.gen_bool(0.9) { 0 } else { rng.gen() })
            .collect();
        for (i, d) in diff.iter().enumerate() {
            new.push(d.wrapping_add(old[from + i]));
        }
        from += dlen;
        let extra: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect();
        new.extend_from_slice(&extra);
        let to = rng.gen_range(0..=old_len);
        triples.push(Triple {
            diff,
            extra,
            adjust: to as i32 - from as i32,
        });
        from = to;
    }
    (old, triples, new)
}

fn apply_chunked(old: &[u8], patch: &[u8], chunk: usize) -> Result<Vec<u8>, DeltaError> {
    let mut a = DeltaApplier::new(old.len() as u32);
    let mut out = Vec::new();
    for piece in patch.chunks(chunk.max(1)) {
        a.feed(
            &mut SliceBase(old),
            piece,
            &mut |b: &[u8]| -> Result<(), ()> {
                out.extend_from_slice(b);
                Ok(())
            },
        )
        .map_err(|e| match e {
            ApplyError::Patch(p) => p,
            _ => unreachable!(),
        })?;
    }
    assert_eq!(a.finish()?, out.len() as u32);
    Ok(out)
}

#[test]
fn delta_applies_none_and_heatshrink_patches_in_any_chunking() {
    let mut rng = StdRng::seed_from_u64(1);
    for case in 0..20 {
        let (old, triples, new) = random_case(&mut rng, 500 + case * 300);
        let b = body(&triples);
        for c in [Compression::None, Compression::Heatshrink] {
            let p = patch(c, new.len(), &b);
            for chunk in [1, 5, 64, 4096] {
                assert_eq!(apply_chunked(&old, &p, chunk).unwrap(), new, "{case} {c:?}");
            }
        }
    }
}

#[test]
fn delta_empty_output_is_the_header_alone() {
    assert_eq!(apply_chunked(b"abc", &[0x04, 0x00], 1).unwrap(), b"");
    assert_eq!(apply_chunked(b"", &[0x00, 0x00], 1).unwrap(), b"");
    assert_eq!(
        apply_chunked(b"", &[0x04, 0x00, 0x44], 1),
        Err(DeltaError::TrailingData { offset: 2 })
    );
}

#[test]
fn delta_refuses_other_types_compressions_and_parameters() {
    let err = |p: &[u8]| apply_chunked(b"base", p, 1).unwrap_err();
    assert_eq!(
        err(&[0x14, 0x00]),
        DeltaError::UnsupportedType { type_id: 1 }
    );
    assert_eq!(err(&[0x20]), DeltaError::UnsupportedType { type_id: 2 });
    assert!(matches!(
        err(&[0x01, 0x05]),
        DeltaError::UnsupportedCompression {
            id: 1,
            name: "lzma"
        }
    ));
    assert!(matches!(
        err(&[0x09]),
        DeltaError::UnsupportedCompression {
            id: 9,
            name: "unknown"
        }
    ));
    // heatshrink 10/5 (detools --heatshrink-window-sz2 10 --heatshrink-lookahead-sz2 5).
    assert_eq!(
        err(&[0x04, 0x05, 0x62]),
        DeltaError::UnsupportedHeatshrink {
            window: 10,
            lookahead: 5
        }
    );
    // A data-format section.
    assert_eq!(
        err(&[0x00, 0x05, 0x03]),
        DeltaError::DataFormatNotSupported { offset: 3, size: 3 }
    );
    // Negative to_size, and a five-byte varint.
    assert!(matches!(
        err(&[0x00, 0x41]),
        DeltaError::NegativeSize { .. }
    ));
    assert!(matches!(
        err(&[0x00, 0x80, 0x80, 0x80, 0x80, 0x01]),
        DeltaError::VarintOverflow {
            field: "to_size",
            ..
        }
    ));
    // The header parser agrees.
    assert_eq!(
        PatchHeader::parse(&[0x14, 0]),
        Err(DeltaError::UnsupportedType { type_id: 1 })
    );
    let h = PatchHeader::parse(&[0x01, 0x05, 0x5d]).unwrap();
    assert_eq!((h.compression, h.to_size, h.len), (Compression::Lzma, 5, 2));
}

#[test]
fn delta_checks_every_size_and_seek() {
    let base = b"0123456789";
    let err = |body: &[u8], to: usize| apply_chunked(base, &patch(Compression::None, to, body), 3);
    // diff 4 + extra 3 for a 5-byte output.
    assert!(matches!(
        err(&[0, 4, 0, 0, 0, 0, 3, b'a', b'b', b'c', 0], 5),
        Err(DeltaError::OutputOverrun {
            field: "extra_size",
            out_pos: 4,
            size: 3,
            to_size: 5,
            ..
        })
    ));
    assert!(matches!(
        err(&[0, 6], 5),
        Err(DeltaError::OutputOverrun {
            field: "diff_size",
            ..
        })
    ));
    // Diff of 11 from a 10-byte base.
    assert!(matches!(
        err(&[0, 11], 20),
        Err(DeltaError::BaseOverrun {
            from_pos: 0,
            size: 11,
            base_len: 10,
            ..
        })
    ));
    // Seek to -1, and to 11.
    assert!(matches!(
        err(&[0, 1, 0, 0, 0x42], 5),
        Err(DeltaError::SeekOutsideBase {
            from_pos: 1,
            adjustment: -2,
            ..
        })
    ));
    assert!(matches!(
        err(&[0, 1, 0, 0, 10], 5),
        Err(DeltaError::SeekOutsideBase { adjustment: 10, .. })
    ));
    // After a seek, a diff that runs off the end.
    assert!(matches!(
        err(&[0, 1, 0, 0, 7, 3], 5),
        Err(DeltaError::BaseOverrun {
            from_pos: 8,
            size: 3,
            ..
        })
    ));
    // The last triple's adjustment is not a seek: anything goes.
    assert_eq!(err(&[0, 2, 0, 0, 0, 0x7f], 2).unwrap(), b"01");
    // Garbage after the end, and a truncated patch.
    assert_eq!(
        err(&[0, 2, 0, 0, 0, 0, 0xaa], 2),
        Err(DeltaError::TrailingData { offset: 8 })
    );
    assert!(matches!(
        err(&[0, 2, 0, 0, 0], 2),
        Err(DeltaError::Truncated {
            expecting: "an adjustment",
            out_pos: 2,
            to_size: 2,
            ..
        })
    ));
    // Heatshrink: trailing bytes after the compressed end, and data decoded past the end.
    let b = [0, 2, 0, 0, 0, 0];
    let mut p = patch(Compression::Heatshrink, 2, &b);
    assert_eq!(apply_chunked(base, &p, 1).unwrap(), b"01");
    p.push(0);
    assert!(matches!(
        apply_chunked(base, &p, 1),
        Err(DeltaError::TrailingData { .. })
    ));
    let p = patch(Compression::Heatshrink, 2, &[0, 2, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        apply_chunked(base, &p, 1),
        Err(DeltaError::TrailingData { .. })
    ));
}

/// Resume from the checkpoint after every patch byte (and at every output position with
/// `feed_until`): the output is exactly that of one uninterrupted run.
#[test]
fn delta_resume_from_every_checkpoint_gives_the_same_output() {
    let mut rng = StdRng::seed_from_u64(7);
    for case in 0..4 {
        let (old, triples, new) = random_case(&mut rng, 700 + case * 100);
        for c in [Compression::Heatshrink, Compression::None] {
            let p = patch(c, new.len(), &body(&triples));
            let whole = apply_chunked(&old, &p, p.len()).unwrap();
            assert_eq!(whole, new);
            let mut a = DeltaApplier::new(old.len() as u32);
            let mut out: Vec<u8> = Vec::new();
            let mut sink = |b: &[u8]| -> Result<(), ()> {
                out.extend_from_slice(b);
                Ok(())
            };
            let mut saved = Vec::new();
            for (i, byte) in p.iter().enumerate() {
                a.feed(&mut SliceBase(&old), core::slice::from_ref(byte), &mut sink)
                    .unwrap();
                if let Some(cp) = a.checkpoint() {
                    assert_eq!(cp.patch_offset() as usize, i + 1);
                    saved.push((cp.to_bytes(), cp.output_offset()));
                }
            }
            assert_eq!(out, new);
            for (rec, out_at) in saved {
                let cp = Checkpoint::from_bytes(&rec).unwrap();
                let mut r = DeltaApplier::resume(&cp, old.len() as u32).unwrap();
                let mut rest = whole[..out_at as usize].to_vec();
                r.feed(
                    &mut SliceBase(&old),
                    &p[cp.patch_offset() as usize..],
                    &mut |b: &[u8]| {
                        rest.extend_from_slice(b);
                        Ok::<(), ()>(())
                    },
                )
                .unwrap();
                assert_eq!(r.finish().unwrap() as usize, new.len());
                assert_eq!(rest, new, "{c:?} resumed at patch {}", cp.patch_offset());
            }
        }
    }
}

#[test]
fn delta_feed_until_stops_at_the_output_limit() {
    let mut rng = StdRng::seed_from_u64(3);
    let (old, triples, new) = random_case(&mut rng, 3000);
    let p = patch(Compression::Heatshrink, new.len(), &body(&triples));
    let mut a = DeltaApplier::new(old.len() as u32);
    let mut out = Vec::new();
    let mut rest: &[u8] = &p;
    let mut limit = 0u32;
    while !rest.is_empty() {
        limit += 100;
        let used = a
            .feed_until(&mut SliceBase(&old), rest, limit, &mut |b: &[u8]| {
                out.extend_from_slice(b);
                Ok::<(), ()>(())
            })
            .unwrap();
        rest = &rest[used..];
        assert!(a.output_offset() <= limit);
        assert!(a.output_offset() == limit.min(new.len() as u32) || rest.is_empty());
    }
    assert_eq!(out, new);
}

#[test]
fn delta_checkpoint_records_are_checked() {
    let (old, triples, new) = random_case(&mut StdRng::seed_from_u64(5), 400);
    let p = patch(Compression::Heatshrink, new.len(), &body(&triples));
    let mut a = DeltaApplier::new(old.len() as u32);
    assert!(a.checkpoint().is_none());
    a.feed(
        &mut SliceBase(&old),
        &p[..p.len() / 2],
        &mut |_: &[u8]| Ok::<(), ()>(()),
    )
    .unwrap();
    let rec = a.checkpoint().unwrap().to_bytes();
    assert_eq!(rec.len(), CHECKPOINT_LEN);
    for i in 0..rec.len() {
        let mut bad = rec;
        bad[i] ^= 0x10;
        assert!(Checkpoint::from_bytes(&bad).is_err(), "flip at {i}");
    }
    assert!(Checkpoint::from_bytes(&rec[1..]).is_err());
    let cp = Checkpoint::from_bytes(&rec).unwrap();
    assert!(matches!(
        DeltaApplier::resume(&cp, old.len() as u32 + 1),
        Err(DeltaError::BadCheckpoint { .. })
    ));
    assert_eq!(DeltaApplier::resume(&cp, old.len() as u32).unwrap(), a);
}

#[test]
fn delta_base_reads_flash_at_esp_storage_granularity() {
    let (old, triples, new) = random_case(&mut StdRng::seed_from_u64(11), 5000);
    let mut mem = vec![0xFF; 0x4000];
    mem[0x1000..0x1000 + old.len()].copy_from_slice(&old);
    let mut flash = MemFlash::<4, 4>::new(&mut mem);
    let region = crate::flash::Region::new(0x1000, 0x3000);
    let p = patch(Compression::Heatshrink, new.len(), &body(&triples));
    let mut base = FlashBase::new(&mut flash, region, old.len() as u32).unwrap();
    let mut a = DeltaApplier::new(old.len() as u32);
    let mut out = Vec::new();
    for piece in p.chunks(37) {
        a.feed(&mut base, piece, &mut |b: &[u8]| {
            out.extend_from_slice(b);
            Ok::<(), ()>(())
        })
        .unwrap();
    }
    a.finish().unwrap();
    assert_eq!(out, new);
    assert!(FlashBase::new(&mut flash, region, 0x3001).is_none());
}

#[test]
fn delta_esp_header_round_trips_and_checks_the_base() {
    let h = EspDeltaHeader {
        base_sha256: [7; 32],
    };
    let b = h.to_bytes();
    assert_eq!(&b[..4], &[0x10, 0xde, 0xcd, 0xfc]);
    assert!(EspDeltaHeader::detect(&b));
    assert_eq!(EspDeltaHeader::parse(&b).unwrap(), h);
    assert!(h.check_base(&[7; 32]).is_ok());
    assert_eq!(
        h.check_base(&[8; 32]),
        Err(DeltaError::BaseMismatch {
            expected: [7; 32],
            found: [8; 32]
        })
    );
    let mut bad = b;
    bad[0] = 0x11;
    assert_eq!(
        EspDeltaHeader::parse(&bad),
        Err(DeltaError::EspHeaderMagic { found: 0xfccdde11 })
    );
    let mut bad = b;
    bad[40] = 1;
    assert_eq!(
        EspDeltaHeader::parse(&bad),
        Err(DeltaError::EspHeaderReserved {
            offset: 40,
            found: 1
        })
    );
}

#[test]
fn delta_base_digest_is_the_appended_sha256() {
    use crate::image::{build_image, ImageSpec};
    let mut spec = ImageSpec::new(crate::Chip::Esp32c3, "base", "1.0");
    spec.total_size = Some(20_000);
    let mut img = Vec::new();
    build_image(&spec, &mut |b| img.extend_from_slice(b)).unwrap();
    let mut mem = vec![0xFF; 0x10000];
    mem[..img.len()].copy_from_slice(&img);
    let mut flash = MemFlash::<4, 4>::new(&mut mem);
    let got = base_image_sha256(&mut flash, crate::flash::Region::new(0, 0x10000), None).unwrap();
    assert_eq!(got.image_len as usize, img.len());
    assert_eq!(&got.sha256[..], &img[img.len() - 32..]);
}

#[test]
fn delta_applier_ram_is_bounded() {
    let size = core::mem::size_of::<DeltaApplier>();
    std::println!("DeltaApplier: {size} bytes, Checkpoint: {CHECKPOINT_LEN} bytes");
    assert!(size <= 320, "{size}");
}

/// Random and mutated patches never panic, and every error or success is consistent.
#[test]
fn delta_random_patches_never_panic() {
    let mut rng = StdRng::seed_from_u64(99);
    let (old, triples, new) = random_case(&mut rng, 1000);
    let good = patch(Compression::Heatshrink, new.len(), &body(&triples));
    let good_none = patch(Compression::None, new.len(), &body(&triples));
    for i in 0..3000 {
        let mut p = if i % 2 == 0 {
            good.clone()
        } else {
            good_none.clone()
        };
        match i % 3 {
            0 => {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..p.len());
                    p[at] = rng.gen();
                }
            }
            1 => p.truncate(rng.gen_range(0..p.len())),
            _ => p = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
        }
        let chunk = rng.gen_range(1..100);
        if let Ok(out) = apply_chunked(&old, &p, chunk) {
            assert_eq!(out.len() as u32, PatchHeader::parse(&p).unwrap().to_size);
        }
    }
}

#[test]
fn delta_slice_base_refuses_reads_outside_it() {
    let mut b = SliceBase(b"abcd");
    let mut buf = [0u8; 3];
    assert!(b.read(1, &mut buf).is_ok());
    assert_eq!(&buf, b"bcd");
    let e = b.read(2, &mut buf).unwrap_err();
    assert_eq!((e.offset, e.len, e.base_len), (2, 3, 4));
    assert!(b.read(u32::MAX, &mut buf).is_err());
}

#[test]
fn delta_applier_stops_after_an_error() {
    let base = b"0123456789";
    let p = patch(Compression::None, 4, &[0, 2, 0, 0, 2, b'a', b'b', 0]);
    let mut a = DeltaApplier::new(base.len() as u32);
    let mut n = 0;
    // The sink fails on the first output: the applier refuses everything after.
    let r = a.feed(&mut SliceBase(base), &p, &mut |_: &[u8]| {
        n += 1;
        Err::<(), &str>("flash write failed")
    });
    assert_eq!(r, Err(ApplyError::Sink("flash write failed")));
    assert!(a.checkpoint().is_none());
    let r = a.feed(&mut SliceBase(base), &p[5..], &mut |_: &[u8]| {
        Ok::<(), &str>(())
    });
    assert!(matches!(
        r,
        Err(ApplyError::Patch(DeltaError::Failed { .. }))
    ));
    assert!(matches!(a.finish(), Err(DeltaError::Failed { .. })));
    assert_eq!(n, 1);
    // A decompressed-body applier offers no checkpoints.
    let h = PatchHeader::parse(&p).unwrap();
    let mut b = DeltaApplier::for_decompressed_body(&h, base.len() as u32);
    let mut out = Vec::new();
    b.feed(&mut SliceBase(base), &p[h.len..], &mut |x: &[u8]| {
        out.extend_from_slice(x);
        Ok::<(), ()>(())
    })
    .unwrap();
    assert_eq!((b.finish(), &out[..]), (Ok(4), &b"01ab"[..]));
    assert!(b.checkpoint().is_none());
}

#[test]
fn delta_patch_length_is_bounded() {
    // A stream of empty triples never completes the output: the 32-bit patch offset bounds it.
    let base = b"0123";
    let mut a = DeltaApplier::new(4);
    let p = patch(Compression::None, 1, &[0]);
    a.feed(&mut SliceBase(base), &p, &mut |_: &[u8]| Ok::<(), ()>(()))
        .unwrap();
    a.patch_pos = apply::MAX_PATCH_LEN - 2;
    let r = a.feed(&mut SliceBase(base), &[0, 0, 0], &mut |_: &[u8]| {
        Ok::<(), ()>(())
    });
    assert!(matches!(
        r,
        Err(ApplyError::Patch(DeltaError::TooLarge {
            field: "patch length",
            ..
        }))
    ));
}
