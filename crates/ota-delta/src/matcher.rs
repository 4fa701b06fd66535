//! Suffix-array matching: bsdiff's control triples for a pair of inputs.
//!
//! The search is qbsdiff's (a suffix-array bsdiff 4.x variant, crates.io `qbsdiff`). It only
//! hands its controls out inside a BSDIFF40 file (eerimoq/detools `detools/bsdiff.c` writes the
//! same classic layout: magic, three 8-byte sizes, then bzip2 streams of controls, diff bytes
//! and extra bytes), so this module reads the control stream back out of that file and
//! recomputes the diff and extra bytes from the inputs themselves.
//!
//! A BSDIFF40 control `(add, copy, seek)` means exactly what a detools triple
//! `(diff_size, extra_size, adjustment)` means. qbsdiff also writes empty `(0, 0, seek)`
//! controls (one that rewinds the base at the end, and one between parallel chunks); detools'
//! appliers refuse anything after the triple that completes the output, so [`triples`] folds
//! every empty control into the adjustment of the one before it.

use std::io::{Cursor, Read};

use crate::{Error, Triple};

/// `BSDIFF40` (eerimoq/detools `detools/bsdiff.c`, Colin Percival's bsdiff 4).
const BSDIFF40_MAGIC: &[u8; 8] = b"BSDIFF40";
/// Magic plus control, diff and new sizes.
const BSDIFF40_HEADER_LEN: usize = 32;
/// One control entry: three 8-byte sign-magnitude integers.
const CONTROL_LEN: usize = 24;
/// bzip2 level for qbsdiff's internal streams: only the control stream is read back, so the
/// fastest level (1) is used.
const BZIP2_LEVEL: u32 = 1;

/// bsdiff's 8-byte sign-magnitude little-endian integer (`offtin` in bsdiff 4).
fn offtin(bytes: &[u8]) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    let magnitude = (u64::from_le_bytes(raw) & !(1 << 63)) as i64;
    if raw[7] & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// The control triples turning `old` into `new`, empty ones folded away, each one checked
/// against both inputs. The last triple's adjustment is 0 (appliers read it and ignore it).
pub fn triples(old: &[u8], new: &[u8]) -> Result<Vec<Triple>, Error> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let mut bsdiff = Vec::new();
    qbsdiff::Bsdiff::new(old, new)
        .parallel_scheme(qbsdiff::ParallelScheme::Never)
        .compression_level(BZIP2_LEVEL)
        .compare(Cursor::new(&mut bsdiff))
        .map_err(|source| Error::Qbsdiff { source })?;
    if bsdiff.len() < BSDIFF40_HEADER_LEN || &bsdiff[..8] != BSDIFF40_MAGIC {
        return Err(Error::Matcher(
            "qbsdiff did not write a BSDIFF40 header".into(),
        ));
    }
    let control_len = usize::try_from(offtin(&bsdiff[8..16]))
        .ok()
        .filter(|&n| n <= bsdiff.len() - BSDIFF40_HEADER_LEN)
        .ok_or_else(|| Error::Matcher("BSDIFF40 control size out of range".into()))?;
    let mut controls = Vec::new();
    bzip2::read::BzDecoder::new(&bsdiff[BSDIFF40_HEADER_LEN..BSDIFF40_HEADER_LEN + control_len])
        .read_to_end(&mut controls)
        .map_err(|source| Error::Qbsdiff { source })?;
    if controls.len() % CONTROL_LEN != 0 {
        return Err(Error::Matcher(format!(
            "BSDIFF40 control stream is {} bytes, not a multiple of {CONTROL_LEN}",
            controls.len()
        )));
    }
    let raw = controls
        .chunks_exact(CONTROL_LEN)
        .map(|c| (offtin(&c[0..8]), offtin(&c[8..16]), offtin(&c[16..24])));
    fold(old.len(), new.len(), raw)
}

/// Turns raw bsdiff controls into detools triples: empty controls dropped, nothing after the
/// triple that completes the output, every diff read inside the base and the sizes adding up
/// to `new_len`. The adjustments are recomputed so that each one seeks straight to where the
/// next diff reads (the position between two reads never leaves the base, which Python's
/// applier requires of its file seeks); the last one is 0. A first read that does not start
/// at 0 gets a leading empty triple carrying the seek (detools' own patches start so too).
pub fn fold(
    old_len: usize,
    new_len: usize,
    raw: impl IntoIterator<Item = (i64, i64, i64)>,
) -> Result<Vec<Triple>, Error> {
    // (diff, extra, absolute base offset the diff reads from)
    let mut parts: Vec<(u64, u64, u64)> = Vec::new();
    let mut from_pos: i64 = 0;
    let mut to_pos: u64 = 0;
    let bad = |what: String| Error::Matcher(format!("control triple {what}"));
    for (index, (add, copy, seek)) in raw.into_iter().enumerate() {
        if to_pos == new_len as u64 {
            break;
        }
        let (Ok(diff), Ok(extra)) = (u64::try_from(add), u64::try_from(copy)) else {
            return Err(bad(format!("{index} has a negative size ({add}, {copy})")));
        };
        let end = to_pos.checked_add(diff).and_then(|n| n.checked_add(extra));
        if end.is_none_or(|end| end > new_len as u64) {
            return Err(bad(format!(
                "{index} writes past the new image ({new_len} bytes)"
            )));
        }
        if diff > 0 && (from_pos < 0 || from_pos as u64 + diff > old_len as u64) {
            return Err(bad(format!(
                "{index} reads the base at {from_pos}+{diff}, outside its {old_len} bytes"
            )));
        }
        if diff > 0 || extra > 0 {
            parts.push((diff, extra, from_pos.max(0) as u64));
        }
        from_pos = from_pos
            .checked_add(diff as i64)
            .and_then(|p| p.checked_add(seek))
            .ok_or_else(|| bad(format!("{index}: seek overflows")))?;
        to_pos += diff + extra;
    }
    if to_pos != new_len as u64 {
        return Err(Error::Matcher(format!(
            "control triples produce {to_pos} bytes, the new image has {new_len}"
        )));
    }
    let mut out = Vec::with_capacity(parts.len() + 1);
    let first_read = parts.iter().find(|p| p.0 > 0).map(|p| p.2);
    let mut cur: u64 = 0;
    if let (Some(&(diff, _, _)), Some(start)) = (parts.first(), first_read) {
        if diff > 0 && start != 0 {
            out.push(Triple {
                diff: 0,
                extra: 0,
                adjustment: start as i64,
            });
            cur = start;
        }
    }
    for (i, &(diff, extra, start)) in parts.iter().enumerate() {
        if diff > 0 {
            debug_assert_eq!(cur, start);
            cur = start + diff;
        }
        let next = parts[i + 1..].iter().find(|p| p.0 > 0).map(|p| p.2);
        let adjustment = next.map_or(0, |n| n as i64 - cur as i64);
        cur = next.unwrap_or(cur);
        out.push(Triple {
            diff,
            extra,
            adjustment,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offtin_reads_sign_magnitude() {
        let mut b = 5u64.to_le_bytes();
        assert_eq!(offtin(&b), 5);
        b[7] |= 0x80;
        assert_eq!(offtin(&b), -5);
    }

    #[test]
    fn empty_controls_fold_into_the_previous_adjustment() {
        let t = fold(100, 30, [(10, 0, 5), (0, 0, 7), (10, 10, -3), (0, 0, -40)]).unwrap();
        assert_eq!(
            t,
            vec![
                Triple {
                    diff: 10,
                    extra: 0,
                    adjustment: 12
                },
                Triple {
                    diff: 10,
                    extra: 10,
                    adjustment: 0
                }
            ]
        );
        // A seek before an extra-only triple moves to the next read, not anywhere else.
        let t = fold(100, 30, [(10, 0, -50), (0, 10, 60), (10, 0, 0)]).unwrap();
        assert_eq!(
            t,
            vec![
                Triple {
                    diff: 10,
                    extra: 0,
                    adjustment: 10
                },
                Triple {
                    diff: 0,
                    extra: 10,
                    adjustment: 0
                },
                Triple {
                    diff: 10,
                    extra: 0,
                    adjustment: 0
                }
            ]
        );
    }

    #[test]
    fn a_leading_empty_control_stays_as_one_seek() {
        let t = fold(100, 10, [(0, 0, 5), (0, 0, 5), (10, 0, 0)]).unwrap();
        assert_eq!(
            t,
            vec![
                Triple {
                    diff: 0,
                    extra: 0,
                    adjustment: 10
                },
                Triple {
                    diff: 10,
                    extra: 0,
                    adjustment: 0
                }
            ]
        );
        let t2 = fold(100, 10, [(0, 2, 5), (8, 0, 7)]).unwrap();
        assert_eq!(
            t2,
            vec![
                Triple {
                    diff: 0,
                    extra: 2,
                    adjustment: 5
                },
                Triple {
                    diff: 8,
                    extra: 0,
                    adjustment: 0
                }
            ]
        );
        assert_eq!(
            t,
            vec![
                Triple {
                    diff: 0,
                    extra: 0,
                    adjustment: 10
                },
                Triple {
                    diff: 10,
                    extra: 0,
                    adjustment: 0
                }
            ]
        );
    }

    #[test]
    fn controls_after_the_end_are_dropped_and_bad_ones_refused() {
        assert_eq!(fold(10, 4, [(4, 0, 1), (0, 3, 0)]).unwrap().len(), 1);
        assert!(fold(10, 4, [(5, 0, 0)]).is_err(), "past the new image");
        assert!(fold(3, 4, [(4, 0, 0)]).is_err(), "reads past the base");
        assert!(
            fold(10, 4, [(2, 0, -5), (2, 0, 0)]).is_err(),
            "reads before the base"
        );
        assert!(fold(10, 4, [(2, 0, 0)]).is_err(), "too short");
        assert!(fold(10, 4, [(-1, 0, 0)]).is_err(), "negative size");
    }

    #[test]
    fn triples_cover_the_new_image_from_the_base() {
        let old: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new.splice(
            5000..5000,
            b"inserted bytes that shift the rest".iter().copied(),
        );
        new[12_000] ^= 0x55;
        let t = triples(&old, &new).unwrap();
        let written: u64 = t.iter().map(|t| t.diff + t.extra).sum();
        assert_eq!(written, new.len() as u64);
        let extra: u64 = t.iter().map(|t| t.extra).sum();
        assert!(
            extra < 200,
            "extra {extra}: the matcher found the shifted copy"
        );
    }
}
