//! A heatshrink decoder for window 8 / lookahead 7 whose whole state is plain data, so an
//! applier can save it in a checkpoint and restore it after a power cut.
//!
//! The stream (heatshrink's LZSS, as detools' `heatshrink2` writes it and `c/heatshrink/
//! heatshrink_decoder.c` reads it) is a bit string, most significant bit first: tag `1` and 8
//! literal bits, or tag `0`, `W` bits of `offset - 1` and `L` bits of `count - 1`, copying
//! `count` bytes from `offset` bytes back in a `2^W`-byte window that starts zeroed. There is no
//! framing: the last byte is zero-padded.
//!
//! Why not `heatshrink-lib`'s decoder (which decodes the same bytes; the unit tests use it as
//! the oracle): its state (bit position, state machine, window head) is private and not
//! `Clone`, so it can neither be written into a checkpoint nor be found "empty" from outside,
//! and there is no point in a heatshrink stream where the window is empty. This decoder reads
//! its input straight from the caller's slice, so it needs no input buffer: 256 bytes of window
//! and 8 bytes of state.

/// `window_sz2` esp_delta_ota's static build accepts (`HEATSHRINK_STATIC_WINDOW_BITS`,
/// detools `c/heatshrink/heatshrink_config.h`).
pub const WINDOW_BITS: u8 = 8;
/// `lookahead_sz2` of the same build (`HEATSHRINK_STATIC_LOOKAHEAD_BITS`).
pub const LOOKAHEAD_BITS: u8 = 7;
/// Window bytes.
pub const WINDOW_LEN: usize = 1 << WINDOW_BITS;

/// Where the decoder is in the bit string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    Tag = 0,
    Literal = 1,
    Index = 2,
    Count = 3,
    /// Copying `count` more bytes from `index` (offset) back.
    Backref = 4,
}

impl Step {
    fn from_u8(v: u8) -> Option<Step> {
        Some(match v {
            0 => Step::Tag,
            1 => Step::Literal,
            2 => Step::Index,
            3 => Step::Count,
            4 => Step::Backref,
            _ => return None,
        })
    }
}

/// The decoder. `Clone` and plain data: [`HsDecoder::to_bytes`] / [`HsDecoder::from_bytes`]
/// save and restore it exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HsDecoder {
    window: [u8; WINDOW_LEN],
    /// Next window position written (mod 256).
    head: u8,
    /// The input byte being read and how many of its bits are still unread (0..=8).
    cur: u8,
    cur_bits: u8,
    step: Step,
    /// Bits of the field in progress and how many have been read.
    acc: u16,
    acc_bits: u8,
    /// Back-reference offset (1..=256) and bytes left to copy (1..=128).
    offset: u16,
    count: u16,
}

/// Bytes of [`HsDecoder::to_bytes`].
pub const HS_STATE_LEN: usize = WINDOW_LEN + 12;

impl Default for HsDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HsDecoder {
    pub const fn new() -> Self {
        HsDecoder {
            window: [0; WINDOW_LEN],
            head: 0,
            cur: 0,
            cur_bits: 0,
            step: Step::Tag,
            acc: 0,
            acc_bits: 0,
            offset: 0,
            count: 0,
        }
    }

    /// True when no decoded byte is pending: the next output needs more input bits.
    /// (Used to tell real data from the zero padding of the last byte.)
    pub fn holds_output(&self) -> bool {
        self.step == Step::Backref
    }

    /// Read the next field of `n` bits (n ≤ 8 here), taking input bytes from `input` as needed;
    /// `None` when the input ran out first (the partial field is kept).
    fn bits(&mut self, n: u8, input: &mut &[u8]) -> Option<u16> {
        while self.acc_bits < n {
            if self.cur_bits == 0 {
                let (&b, rest) = input.split_first()?;
                *input = rest;
                self.cur = b;
                self.cur_bits = 8;
            }
            let take = (n - self.acc_bits).min(self.cur_bits);
            let shift = self.cur_bits - take;
            let v = (self.cur >> shift) & ((1u16 << take) - 1) as u8;
            self.acc = (self.acc << take) | v as u16;
            self.acc_bits += take;
            self.cur_bits -= take;
        }
        let v = self.acc;
        self.acc = 0;
        self.acc_bits = 0;
        Some(v)
    }

    fn push(&mut self, byte: u8) {
        self.window[self.head as usize] = byte;
        self.head = self.head.wrapping_add(1);
    }

    /// Decode into `out` until it is full or `input` is used up; returns the bytes written.
    /// Consumed input is removed from the front of `input`.
    pub fn decode(&mut self, input: &mut &[u8], out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            match self.step {
                Step::Tag => match self.bits(1, input) {
                    None => break,
                    Some(1) => self.step = Step::Literal,
                    Some(_) => self.step = Step::Index,
                },
                Step::Literal => match self.bits(8, input) {
                    None => break,
                    Some(b) => {
                        out[n] = b as u8;
                        n += 1;
                        self.push(b as u8);
                        self.step = Step::Tag;
                    }
                },
                Step::Index => match self.bits(WINDOW_BITS, input) {
                    None => break,
                    Some(i) => {
                        self.offset = i + 1;
                        self.step = Step::Count;
                    }
                },
                Step::Count => match self.bits(LOOKAHEAD_BITS, input) {
                    None => break,
                    Some(c) => {
                        self.count = c + 1;
                        self.step = Step::Backref;
                    }
                },
                Step::Backref => {
                    while self.count > 0 && n < out.len() {
                        // offset ≤ 256, so this is (head - offset) mod 256.
                        let at = (self.head as u16).wrapping_sub(self.offset) as u8;
                        let b = self.window[at as usize];
                        out[n] = b;
                        n += 1;
                        self.push(b);
                        self.count -= 1;
                    }
                    if self.count == 0 {
                        self.step = Step::Tag;
                    }
                }
            }
        }
        n
    }

    /// The whole state as a fixed record: window, head, current byte and bit count, step,
    /// field accumulator, offset, count.
    pub fn to_bytes(&self) -> [u8; HS_STATE_LEN] {
        let mut out = [0u8; HS_STATE_LEN];
        out[..WINDOW_LEN].copy_from_slice(&self.window);
        let s = &mut out[WINDOW_LEN..];
        s[0] = self.head;
        s[1] = self.cur;
        s[2] = self.cur_bits;
        s[3] = self.step as u8;
        s[4..6].copy_from_slice(&self.acc.to_le_bytes());
        s[6] = self.acc_bits;
        s[7..9].copy_from_slice(&self.offset.to_le_bytes());
        s[9..11].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    /// Restore [`HsDecoder::to_bytes`]; `None` when the fields are not a state the decoder can
    /// be in (a record that is corrupt despite its CRC, or from another version).
    pub fn from_bytes(b: &[u8; HS_STATE_LEN]) -> Option<Self> {
        let mut window = [0u8; WINDOW_LEN];
        window.copy_from_slice(&b[..WINDOW_LEN]);
        let s = &b[WINDOW_LEN..];
        let step = Step::from_u8(s[3])?;
        let acc = u16::from_le_bytes([s[4], s[5]]);
        let acc_bits = s[6];
        let offset = u16::from_le_bytes([s[7], s[8]]);
        let count = u16::from_le_bytes([s[9], s[10]]);
        let cur_bits = s[2];
        let field = match step {
            Step::Tag => 1,
            Step::Literal | Step::Index => 8,
            Step::Count => LOOKAHEAD_BITS,
            Step::Backref => 0,
        };
        let ok = cur_bits <= 8
            && (acc_bits < field || field == 0 && acc_bits == 0)
            && acc >> acc_bits == 0
            && match step {
                Step::Count => (1..=WINDOW_LEN as u16).contains(&offset),
                Step::Backref => {
                    (1..=WINDOW_LEN as u16).contains(&offset)
                        && (1..=1u16 << LOOKAHEAD_BITS).contains(&count)
                }
                _ => true,
            }
            && s[11] == 0;
        if !ok {
            return None;
        }
        Some(HsDecoder {
            window,
            head: s[0],
            cur: s[1],
            cur_bits,
            step,
            acc,
            acc_bits,
            offset,
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use ::heatshrink::encoder::HeatshrinkEncoder;
    use std::vec::Vec;

    /// heatshrink-lib's encoder at 8/7: byte-identical to heatshrink2, detools' encoder.
    fn encode(data: &[u8]) -> Vec<u8> {
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

    fn sample(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                // Runs of zeros (like bsdiff diffs), text-like repeats and noise.
                match (i / 300) % 3 {
                    0 => 0,
                    1 => b"delta patch "[i % 12],
                    _ => (x >> 16) as u8,
                }
            })
            .collect()
    }

    fn decode_all(stream: &[u8], chunk: usize, outcap: usize, len: usize) -> Vec<u8> {
        let mut d = HsDecoder::new();
        let mut out = Vec::new();
        let mut buf = std::vec![0u8; outcap];
        for piece in stream.chunks(chunk.max(1)) {
            let mut input = piece;
            loop {
                let n = d.decode(&mut input, &mut buf);
                out.extend_from_slice(&buf[..n]);
                if n == 0 {
                    break;
                }
            }
        }
        out.truncate(len);
        out
    }

    #[test]
    fn heatshrink_decodes_what_heatshrink_lib_encodes_in_any_chunking() {
        for (len, seed) in [(0, 1), (1, 2), (300, 3), (5000, 4), (70_000, 5)] {
            let data = sample(len, seed);
            let stream = encode(&data);
            for (chunk, outcap) in [(1, 1), (3, 7), (64, 64), (100_000, 4096)] {
                assert_eq!(
                    decode_all(&stream, chunk, outcap, len),
                    data,
                    "{len} {chunk}"
                );
            }
        }
    }

    #[test]
    fn heatshrink_state_survives_a_save_and_restore_at_every_input_byte() {
        let data = sample(3000, 9);
        let stream = encode(&data);
        let mut d = HsDecoder::new();
        let mut out = Vec::new();
        let mut buf = [0u8; 5];
        for &b in &stream {
            let mut input: &[u8] = &[b];
            loop {
                let n = d.decode(&mut input, &mut buf);
                out.extend_from_slice(&buf[..n]);
                // Save and restore between every call, mid-field and mid-backref included.
                d = HsDecoder::from_bytes(&d.to_bytes()).unwrap();
                if n == 0 {
                    break;
                }
            }
        }
        out.truncate(data.len());
        assert_eq!(out, data);
    }

    #[test]
    fn heatshrink_restore_refuses_impossible_states() {
        let mut b = HsDecoder::new().to_bytes();
        b[WINDOW_LEN + 3] = 9;
        assert!(HsDecoder::from_bytes(&b).is_none());
        let mut b = HsDecoder::new().to_bytes();
        b[WINDOW_LEN + 2] = 9;
        assert!(HsDecoder::from_bytes(&b).is_none());
        let mut b = HsDecoder::new().to_bytes();
        b[WINDOW_LEN + 3] = Step::Backref as u8;
        assert!(HsDecoder::from_bytes(&b).is_none());
    }
}
