//! The link model: what a Wi-Fi link does to Ethernet frames, seeded so that a run repeats.
//!
//! `LinkSpec::parse("rate=56kB/s,rtt=60ms,loss=1%,reorder=0.5%,seed=N")`. Each direction has
//! its own queue: a frame leaves when the ones before it have been sent at `rate` (bytes of
//! the whole frame per second), arrives `rtt / 2` later, is lost with probability `loss`, and
//! with probability `reorder` is held back so that the next frame overtakes it. The default is
//! no shaping at all. Each queue holds at most `queue` bytes (a router's buffer): frames that
//! do not fit are dropped, as a full queue drops them.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Default queue per direction: 256 KiB, many times the TCP windows used here.
pub const DEFAULT_QUEUE: usize = 256 * 1024;
/// Most bytes a queue may be given (`queue=`): 64 MiB.
pub const MAX_QUEUE: usize = 64 << 20;
/// Longest round trip accepted (`rtt=`): 60 s.
pub const MAX_RTT: Duration = Duration::from_secs(60);
/// A frame held back for reordering leaves after this long if no frame overtakes it.
pub const REORDER_HOLD: Duration = Duration::from_millis(10);
/// Longest spec text accepted.
pub const MAX_SPEC_LEN: usize = 1024;

/// A seeded description of a link. `Default` is no shaping.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkSpec {
    /// Bytes per second per direction; `None`: unlimited.
    pub rate: Option<u64>,
    pub rtt: Duration,
    /// Probability that a frame is lost, 0..=1.
    pub loss: f64,
    /// Probability that a frame is overtaken by the next one, 0..=1.
    pub reorder: f64,
    pub seed: u64,
    /// Bytes queued per direction before frames are dropped.
    pub queue: usize,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            rate: None,
            rtt: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            seed: 0,
            queue: DEFAULT_QUEUE,
        }
    }
}

/// Why a spec was refused: the key and value, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSpecError {
    /// The `key=value` item (or the whole spec when it is too long).
    pub item: String,
    pub expected: &'static str,
}

impl fmt::Display for LinkSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad link spec item `{}`: expected {}",
            self.item, self.expected
        )
    }
}

impl std::error::Error for LinkSpecError {}

const KEYS: &str = "one of rate=, rtt=, loss=, reorder=, seed=, queue=";

impl LinkSpec {
    /// Parses `key=value` items separated by commas; empty text or `none` is no shaping.
    pub fn parse(s: &str) -> Result<LinkSpec, LinkSpecError> {
        let err = |item: &str, expected| LinkSpecError {
            item: item.chars().take(80).collect(),
            expected,
        };
        if s.len() > MAX_SPEC_LEN {
            return Err(err(s, "a spec of at most 1024 bytes"));
        }
        let mut spec = LinkSpec::default();
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(spec);
        }
        let mut seen: Vec<&str> = Vec::new();
        for item in s.split(',').map(str::trim) {
            let (key, value) = item.split_once('=').ok_or_else(|| err(item, KEYS))?;
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(err(item, "each key once"));
            }
            match key {
                "rate" => {
                    spec.rate = Some(parse_rate(value).ok_or_else(|| {
                        err(
                            item,
                            "a rate above 0 such as 56kB/s, 1MB/s, 500B/s, 64KiB/s or 2Mbit/s",
                        )
                    })?)
                }
                "rtt" => {
                    spec.rtt = parse_duration(value)
                        .filter(|d| *d <= MAX_RTT)
                        .ok_or_else(|| {
                            err(item, "a time of at most 60 s such as 60ms, 1.5s or 800us")
                        })?
                }
                "loss" => {
                    spec.loss = parse_percent(value).ok_or_else(|| {
                        err(item, "a percentage from 0% to 100% such as 1% or 0.5%")
                    })?
                }
                "reorder" => {
                    spec.reorder = parse_percent(value)
                        .ok_or_else(|| err(item, "a percentage from 0% to 100% such as 0.5%"))?
                }
                "seed" => {
                    spec.seed = value
                        .parse()
                        .map_err(|_| err(item, "an unsigned 64-bit integer"))?
                }
                "queue" => {
                    spec.queue = parse_size(value)
                        .filter(|q| (2048..=MAX_QUEUE).contains(q))
                        .ok_or_else(|| err(item, "a size from 2KiB to 64MiB such as 256KiB"))?
                }
                _ => return Err(err(item, KEYS)),
            }
            seen.push(key);
        }
        Ok(spec)
    }

    /// Whether frames pass untouched.
    pub fn is_unshaped(&self) -> bool {
        self.rate.is_none() && self.rtt.is_zero() && self.loss == 0.0 && self.reorder == 0.0
    }
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rate {
            Some(r) => write!(f, "rate={r}B/s")?,
            None => write!(f, "rate=unlimited")?,
        }
        write!(
            f,
            ",rtt={}ms,loss={}%,reorder={}%,seed={}",
            self.rtt.as_secs_f64() * 1e3,
            self.loss * 100.0,
            self.reorder * 100.0,
            self.seed
        )
    }
}

/// A non-negative decimal number with at most 12 significant characters (no exponents).
fn decimal(s: &str) -> Option<f64> {
    if s.is_empty()
        || s.len() > 12
        || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || s.bytes().filter(|&b| b == b'.').count() > 1
        || s == "."
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Splits `12.5kB/s` into the number and its unit.
fn split_unit(s: &str) -> (&str, &str) {
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(at)
}

fn parse_rate(s: &str) -> Option<u64> {
    let (num, unit) = split_unit(s);
    let v = decimal(num)?;
    // Decimal prefixes are powers of 1000, binary ones of 1024 (IEC 80000-13); bits are 1/8.
    let factor = match unit {
        "B/s" => 1.0,
        "kB/s" | "KB/s" => 1e3,
        "KiB/s" => 1024.0,
        "MB/s" => 1e6,
        "MiB/s" => 1024.0 * 1024.0,
        "bit/s" => 1.0 / 8.0,
        "kbit/s" => 1e3 / 8.0,
        "Mbit/s" => 1e6 / 8.0,
        _ => return None,
    };
    let r = v * factor;
    (1.0..=1e12).contains(&r).then_some(r as u64)
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = split_unit(s);
    let v = decimal(num)?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

fn parse_percent(s: &str) -> Option<f64> {
    let v = decimal(s.strip_suffix('%')?)?;
    (v <= 100.0).then_some(v / 100.0)
}

fn parse_size(s: &str) -> Option<usize> {
    let (num, unit) = split_unit(s);
    let v = decimal(num)?;
    let factor = match unit {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some((v * factor) as usize)
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator, enough for loss draws.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Frames counted on one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeStats {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub lost: u64,
    /// Dropped because the queue was full.
    pub overflow: u64,
    pub reordered: u64,
    pub delivered: u64,
}

/// One direction of the link: frames in flight with the time each one arrives.
#[derive(Debug)]
pub struct Pipe {
    spec: LinkSpec,
    rng: Rng,
    /// When the transmitter is free again (serialisation at `rate`).
    free_at: Option<Instant>,
    in_flight: VecDeque<(Instant, Vec<u8>)>,
    queued_bytes: usize,
    held: Option<(Instant, Vec<u8>)>,
    pub stats: PipeStats,
}

impl Pipe {
    /// `salt` makes the two directions draw different numbers from one seed.
    pub fn new(spec: LinkSpec, salt: u64) -> Pipe {
        Pipe {
            spec,
            rng: Rng::new(spec.seed ^ salt),
            free_at: None,
            in_flight: VecDeque::new(),
            queued_bytes: 0,
            held: None,
            stats: PipeStats::default(),
        }
    }

    /// A frame enters the link at `now`.
    pub fn push(&mut self, now: Instant, frame: Vec<u8>) {
        self.stats.frames_in += 1;
        self.stats.bytes_in += frame.len() as u64;
        if self.rng.chance(self.spec.loss) {
            self.stats.lost += 1;
            return;
        }
        if self.queued_bytes + frame.len() > self.spec.queue {
            self.stats.overflow += 1;
            return;
        }
        if self.held.is_none() && self.rng.chance(self.spec.reorder) {
            self.stats.reordered += 1;
            self.held = Some((now, frame));
            return;
        }
        self.enqueue(now, frame);
        if let Some((_, held)) = self.held.take() {
            self.enqueue(now, held);
        }
    }

    fn enqueue(&mut self, now: Instant, frame: Vec<u8>) {
        let start = match self.free_at {
            Some(t) if t > now => t,
            _ => now,
        };
        let sent = match self.spec.rate {
            Some(r) => start + Duration::from_secs_f64(frame.len() as f64 / r as f64),
            None => start,
        };
        self.free_at = Some(sent);
        let arrive = sent + self.spec.rtt / 2;
        self.queued_bytes += frame.len();
        self.in_flight.push_back((arrive, frame));
    }

    /// The next frame that has arrived by `now`.
    pub fn pop(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some((since, _)) = &self.held {
            if now.duration_since(*since) >= REORDER_HOLD {
                if let Some((_, f)) = self.held.take() {
                    self.enqueue(now, f);
                }
            }
        }
        match self.in_flight.front() {
            Some((at, _)) if *at <= now => {
                let (_, f) = self.in_flight.pop_front()?;
                self.queued_bytes -= f.len();
                self.stats.delivered += 1;
                Some(f)
            }
            _ => None,
        }
    }

    /// When the next frame arrives (or a held one must be released).
    pub fn next_event(&self) -> Option<Instant> {
        let a = self.in_flight.front().map(|(t, _)| *t);
        let b = self.held.as_ref().map(|(t, _)| *t + REORDER_HOLD);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_spec_reads_every_key() {
        let s = LinkSpec::parse("rate=56kB/s, rtt=60ms,loss=1%,reorder=0.5%,seed=7,queue=64KiB")
            .unwrap();
        assert_eq!(s.rate, Some(56_000));
        assert_eq!(s.rtt, Duration::from_millis(60));
        assert!((s.loss - 0.01).abs() < 1e-12);
        assert!((s.reorder - 0.005).abs() < 1e-12);
        assert_eq!((s.seed, s.queue), (7, 65536));
        assert_eq!(LinkSpec::parse("rate=2Mbit/s").unwrap().rate, Some(250_000));
        assert_eq!(LinkSpec::parse("rate=1.5KiB/s").unwrap().rate, Some(1536));
        assert_eq!(
            LinkSpec::parse("rtt=1.5s").unwrap().rtt,
            Duration::from_millis(1500)
        );
        assert!(LinkSpec::parse("").unwrap().is_unshaped());
        assert!(LinkSpec::parse("none").unwrap().is_unshaped());
    }

    #[test]
    fn link_spec_errors_name_the_bad_item() {
        for (spec, item) in [
            ("rate=56", "rate=56"),
            ("rate=0kB/s", "rate=0kB/s"),
            ("rate=-5kB/s", "rate=-5kB/s"),
            ("rtt=60", "rtt=60"),
            ("rtt=61s", "rtt=61s"),
            ("loss=1", "loss=1"),
            ("loss=101%", "loss=101%"),
            ("loss=1e2%", "loss=1e2%"),
            ("reorder=x%", "reorder=x%"),
            ("seed=-1", "seed=-1"),
            ("queue=1B", "queue=1B"),
            ("jitter=5ms", "jitter=5ms"),
            ("rate=1kB/s,oops", "oops"),
            ("loss=1%,loss=2%", "loss=2%"),
        ] {
            let e = LinkSpec::parse(spec).unwrap_err();
            assert_eq!(e.item, item, "{spec}");
            assert!(e.to_string().contains(item), "{e}");
        }
        assert!(LinkSpec::parse(&"x".repeat(MAX_SPEC_LEN + 1)).is_err());
    }

    #[test]
    fn pipe_paces_frames_at_the_rate_and_delays_by_half_the_rtt() {
        let spec = LinkSpec::parse("rate=1000B/s,rtt=100ms").unwrap();
        let mut p = Pipe::new(spec, 0);
        let t0 = Instant::now();
        p.push(t0, vec![0; 100]);
        p.push(t0, vec![1; 100]);
        // First: sent at 100 ms, arrives at 150 ms; second: sent at 200 ms, arrives at 250 ms.
        assert_eq!(p.pop(t0 + Duration::from_millis(149)), None);
        assert_eq!(p.pop(t0 + Duration::from_millis(150)).unwrap()[0], 0);
        assert_eq!(p.next_event(), Some(t0 + Duration::from_millis(250)));
        assert_eq!(p.pop(t0 + Duration::from_millis(250)).unwrap()[0], 1);
    }

    #[test]
    fn pipe_loss_is_seeded_and_near_the_rate() {
        let spec = LinkSpec::parse("loss=5%,seed=1").unwrap();
        let run = || {
            let mut p = Pipe::new(spec, 0);
            let t = Instant::now();
            for i in 0..10_000u32 {
                p.push(t, i.to_le_bytes().to_vec());
                while p.pop(t).is_some() {}
            }
            p.stats
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        assert!((400..600).contains(&a.lost), "{a:?}");
        assert_eq!(a.delivered + a.lost, 10_000);
    }

    #[test]
    fn pipe_reorder_lets_the_next_frame_overtake() {
        let spec = LinkSpec::parse("reorder=100%").unwrap();
        let mut p = Pipe::new(spec, 0);
        let t = Instant::now();
        p.push(t, vec![1]);
        p.push(t, vec![2]);
        assert_eq!(p.pop(t), Some(vec![2]));
        assert_eq!(p.pop(t), Some(vec![1]));
        // A held frame with nothing behind it leaves after REORDER_HOLD.
        p.push(t, vec![3]);
        assert_eq!(p.pop(t), None);
        assert_eq!(p.pop(t + REORDER_HOLD), Some(vec![3]));
    }

    #[test]
    fn pipe_drops_what_does_not_fit_in_its_queue() {
        let spec = LinkSpec::parse("rate=1B/s,queue=2KiB").unwrap();
        let mut p = Pipe::new(spec, 0);
        let t = Instant::now();
        for _ in 0..3 {
            p.push(t, vec![0; 1000]);
        }
        assert_eq!(p.stats.overflow, 1);
    }
}
