//! detools' size encoding: a little-endian varint with a sign bit in the first byte.
//!
//! First byte `C S v5..v0` (C: more bytes follow, S: negative, six low bits of the magnitude),
//! then `C v6..v0` bytes, least significant group first (detools `detools/common.py`
//! `pack_size`/`unpack_size`, `c/detools.c` `unpack_size`). The C decoder takes at most four
//! bytes, so a magnitude is below 2^27; so does this one ([`MAX_VARINT_BYTES`]).

/// Most bytes one size may take (`c/detools.c` fails a fifth with `CORRUPT_PATCH_OVERFLOW`).
pub const MAX_VARINT_BYTES: u8 = 4;

/// Largest magnitude four varint bytes hold: 6 + 7 + 7 + 7 bits.
pub const MAX_VARINT: u32 = (1 << 27) - 1;

/// A varint being read byte by byte (the bytes may arrive in different chunks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VarintReader {
    value: u32,
    bytes: u8,
    negative: bool,
}

/// What one byte did to a [`VarintReader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarintStep {
    /// More bytes follow.
    More,
    /// The value is complete.
    Done(i32),
    /// A fifth byte would be needed: the value does not fit detools' 27-bit limit.
    Overflow,
}

impl VarintReader {
    pub const fn new() -> Self {
        VarintReader {
            value: 0,
            bytes: 0,
            negative: false,
        }
    }

    /// Bytes taken so far.
    pub const fn len(&self) -> u8 {
        self.bytes
    }

    pub const fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Take one byte.
    pub fn push(&mut self, byte: u8) -> VarintStep {
        if self.bytes >= MAX_VARINT_BYTES {
            return VarintStep::Overflow;
        }
        let more = byte & 0x80 != 0;
        if self.bytes == 0 {
            self.negative = byte & 0x40 != 0;
            self.value = (byte & 0x3f) as u32;
        } else {
            self.value |= ((byte & 0x7f) as u32) << (6 + 7 * (self.bytes as u32 - 1));
        }
        self.bytes += 1;
        if !more {
            let v = self.value as i32;
            let v = if self.negative { -v } else { v };
            *self = VarintReader::new();
            return VarintStep::Done(v);
        }
        if self.bytes >= MAX_VARINT_BYTES {
            return VarintStep::Overflow;
        }
        VarintStep::More
    }

    /// The raw state for a checkpoint: `(value so far, bytes taken, negative)`.
    pub(crate) const fn raw(&self) -> (u32, u8, bool) {
        (self.value, self.bytes, self.negative)
    }

    /// Rebuild from [`VarintReader::raw`]; `None` when the fields are not a reachable state.
    pub(crate) fn from_raw(value: u32, bytes: u8, negative: bool) -> Option<Self> {
        if bytes >= MAX_VARINT_BYTES {
            return None;
        }
        let bits = if bytes == 0 {
            0
        } else {
            6 + 7 * (bytes as u32 - 1)
        };
        if bytes == 0 && (value != 0 || negative) || bits < 32 && value >> bits != 0 {
            return None;
        }
        Some(VarintReader {
            value,
            bytes,
            negative,
        })
    }
}

/// Encode `value` as detools does (for tests and patch writers); returns the bytes used.
/// Magnitudes above [`MAX_VARINT`] are refused (`None`): no detools applier reads them.
pub fn encode(value: i32, out: &mut [u8; 4]) -> Option<usize> {
    let mag = value.unsigned_abs();
    if mag > MAX_VARINT {
        return None;
    }
    let mut first = (mag & 0x3f) as u8;
    if value < 0 {
        first |= 0x40;
    }
    let mut rest = mag >> 6;
    let mut n = 0;
    if rest != 0 {
        first |= 0x80;
    }
    out[n] = first;
    n += 1;
    while rest != 0 {
        let mut b = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest != 0 {
            b |= 0x80;
        }
        out[n] = b;
        n += 1;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Option<i32> {
        let mut r = VarintReader::new();
        for (i, &b) in bytes.iter().enumerate() {
            match r.push(b) {
                VarintStep::More => {}
                VarintStep::Done(v) => return (i + 1 == bytes.len()).then_some(v),
                VarintStep::Overflow => return None,
            }
        }
        None
    }

    #[test]
    fn varint_matches_the_reference_table() {
        // Values and bytes from real detools patches (detools/common.py pack_size).
        let table: &[(i32, &[u8])] = &[
            (0, &[0x00]),
            (30, &[0x1e]),
            (1277, &[0xbd, 0x13]),
            (29080, &[0x98, 0xc6, 0x03]),
            (65536, &[0x80, 0x80, 0x08]),
            (1_065_807, &[0x8f, 0x8d, 0x82, 0x01]),
            (-64_107, &[0xeb, 0xe9, 0x07]),
            (134_217_727, &[0xbf, 0xff, 0xff, 0x7f]),
        ];
        for &(v, bytes) in table {
            assert_eq!(decode(bytes), Some(v), "{bytes:02x?}");
            let mut out = [0; 4];
            let n = encode(v, &mut out).unwrap();
            assert_eq!(&out[..n], bytes, "{v}");
        }
        assert_eq!(decode(&[0x80, 0x80, 0x80, 0x80, 0x01]), None);
        assert_eq!(encode(134_217_728, &mut [0; 4]), None);
    }

    #[test]
    fn varint_round_trips_and_raw_state_restores() {
        let mut out = [0; 4];
        for v in [
            -(MAX_VARINT as i32),
            -1,
            1,
            63,
            64,
            8191,
            8192,
            1 << 20,
            MAX_VARINT as i32,
        ] {
            let n = encode(v, &mut out).unwrap();
            assert_eq!(decode(&out[..n]), Some(v));
            // Stop after every byte, save the raw state, restore and finish.
            for cut in 1..n {
                let mut r = VarintReader::new();
                for &b in &out[..cut] {
                    assert_eq!(r.push(b), VarintStep::More);
                }
                let (a, b, c) = r.raw();
                let mut r = VarintReader::from_raw(a, b, c).unwrap();
                let mut last = VarintStep::More;
                for &b in &out[cut..n] {
                    last = r.push(b);
                }
                assert_eq!(last, VarintStep::Done(v));
            }
        }
        assert!(VarintReader::from_raw(1, 0, false).is_none());
        assert!(VarintReader::from_raw(0, 4, false).is_none());
        assert!(VarintReader::from_raw(1 << 6, 1, false).is_none());
    }
}
