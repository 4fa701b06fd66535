//! The one home of the byte helpers every format module uses: little-endian fields read from
//! and written into byte slices (all ESP-IDF / ESP-ADF on-flash structures are little-endian:
//! esp-idf `components/bootloader_support/include/esp_app_format.h`, `esp_flash_partitions.h`,
//! esp-adf `components/tone_partition/tone_partition.c`), and [`Hex`] for digests in messages.
//!
//! The readers never panic: a field that does not lie inside the slice reads as 0 (callers
//! check lengths first and report the short input themselves); [`put`] outside the slice
//! writes nothing.

use core::fmt;

/// The little-endian u16 at `at` (0 when `b` is too short).
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array(b, at))
}

/// The little-endian u32 at `at` (0 when `b` is too short).
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(b, at))
}

/// The `N` bytes at `at` (zeros when `b` is too short).
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = at.checked_add(N).and_then(|end| b.get(at..end)) {
        out.copy_from_slice(s);
    }
    out
}

/// Copy `src` into `out` at `at` (nothing when it does not fit).
pub(crate) fn put(out: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = at
        .checked_add(src.len())
        .and_then(|end| out.get_mut(at..end))
    {
        d.copy_from_slice(src);
    }
}

/// Lower-case hex of `bytes` (for digests in messages).
pub fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{:02x}", b)?;
    }
    Ok(())
}

/// Displays bytes as lowercase hex (digests, labels), without allocating.
#[derive(Clone, Copy, Debug)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.0)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn little_endian_fields_read_and_short_input_reads_as_zero() {
        let b = [0x34, 0x12, 0x78, 0x56, 0x9A];
        assert_eq!(le16(&b, 0), 0x1234);
        assert_eq!(le32(&b, 0), 0x5678_1234);
        assert_eq!(le32(&b, 1), 0x9A56_7812);
        assert_eq!(le32(&b, 2), 0, "only 3 bytes left");
        assert_eq!(le16(&b, usize::MAX), 0, "no overflow");
        assert_eq!(array::<2>(&b, 3), [0x56, 0x9A]);
    }

    #[test]
    fn put_writes_inside_the_slice_only() {
        let mut out = [0u8; 4];
        put(&mut out, 1, &[1, 2]);
        assert_eq!(out, [0, 1, 2, 0]);
        put(&mut out, 3, &[9, 9]);
        put(&mut out, usize::MAX, &[9]);
        assert_eq!(out, [0, 1, 2, 0]);
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(Hex(&[0xAB, 0x01]).to_string(), "ab01");
    }
}
