//! detools' size encoding: little-endian groups with a sign bit in the first byte
//! (`pack_size` in eerimoq/detools `detools/common.py`, `pack_size` in `detools/bsdiff.c`).
//!
//! First byte: `C S v5..v0` (C = more bytes follow, S = negative); following bytes `C v6..v0`,
//! least significant group first. Zero is the single byte `0x00`.

/// The largest magnitude the detools C library's size decoder accepts: it reads at most four
/// bytes per size (6 + 7 + 7 + 7 = 27 bits; eerimoq/detools `c/detools.c`, error
/// `DETOOLS_CORRUPT_PATCH_OVERFLOW`). Everything this crate writes stays below it.
pub const MAX_C_MAGNITUDE: u64 = (1 << 27) - 1;

/// Appends the detools encoding of `value` to `out`.
pub fn write_size(out: &mut Vec<u8>, value: i64) {
    let mut magnitude = value.unsigned_abs();
    let mut first = (magnitude & 0x3f) as u8;
    if value < 0 {
        first |= 0x40;
    }
    magnitude >>= 6;
    if magnitude == 0 {
        out.push(first);
        return;
    }
    out.push(first | 0x80);
    loop {
        let group = (magnitude & 0x7f) as u8;
        magnitude >>= 7;
        if magnitude == 0 {
            out.push(group);
            return;
        }
        out.push(group | 0x80);
    }
}

/// Decodes one size from the front of `bytes`: the value and how many bytes it took. None when
/// the input ends inside the size or the size is longer than 10 bytes. Used by the tests and by
/// [`crate::describe`].
pub fn read_size(bytes: &[u8]) -> Option<(i64, usize)> {
    let first = *bytes.first()?;
    let negative = first & 0x40 != 0;
    let mut magnitude = u64::from(first & 0x3f);
    let mut shift = 6u32;
    let mut used = 1;
    let mut more = first & 0x80 != 0;
    while more {
        let byte = *bytes.get(used)?;
        used += 1;
        if shift > 62 {
            return None;
        }
        magnitude |= u64::from(byte & 0x7f).checked_shl(shift)?;
        shift += 7;
        more = byte & 0x80 != 0;
    }
    let value = i64::try_from(magnitude).ok()?;
    Some((if negative { -value } else { value }, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        write_size(&mut out, v);
        out
    }

    /// The values and bytes seen in real detools patches (and checked with detools' decoder).
    #[test]
    fn sizes_encode_as_detools_writes_them() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(30), [0x1e]);
        assert_eq!(enc(1277), [0xbd, 0x13]);
        assert_eq!(enc(29080), [0x98, 0xc6, 0x03]);
        assert_eq!(enc(65536), [0x80, 0x80, 0x08]);
        assert_eq!(enc(1_065_807), [0x8f, 0x8d, 0x82, 0x01]);
        assert_eq!(enc(-64_107), [0xeb, 0xe9, 0x07]);
        assert_eq!(enc(134_217_727), [0xbf, 0xff, 0xff, 0x7f]);
        assert_eq!(enc(134_217_728), [0x80, 0x80, 0x80, 0x80, 0x01]);
        assert_eq!(enc(1000), [0xa8, 0x0f]);
    }

    #[test]
    fn sizes_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            8191,
            8192,
            -8192,
            1 << 40,
            -(1 << 40),
            i64::MAX,
        ] {
            let bytes = enc(v);
            assert_eq!(read_size(&bytes), Some((v, bytes.len())), "value {v}");
        }
        assert_eq!(read_size(&[0x80]), None);
        assert_eq!(read_size(&[]), None);
    }
}
