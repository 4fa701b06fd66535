//! The load generator: N blocking client threads on loopback, each sending HTTP/1.1 GETs
//! (keep-alive when the server allows it, a new connection when it closes, as HTTP/1.0
//! servers do) until the case's time is up; latencies from request to last body byte.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for a connect or a read before a request counts as an error.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
const CLIENT_STACK: usize = 256 * 1024;
/// Receive buffer per client: large reads keep the generator's own syscall cost low.
const CLIENT_BUF: usize = 256 * 1024;

pub struct Case {
    pub name: String,
    pub path: &'static str,
    pub concurrency: usize,
    /// Ranged case: (file size, range length); offsets are pseudo-random, 4 KiB aligned.
    pub range: Option<(u64, u64)>,
    /// DDI polls: `(Authorization value, devices)`: each request polls
    /// `/DEFAULT/controller/v1/sim-NNNNNN` of a pseudo-random device below `devices`.
    pub ddi: Option<(String, u64)>,
}

impl Case {
    pub fn whole(name: &str, path: &'static str, concurrency: usize) -> Case {
        Case {
            name: name.to_string(),
            path,
            concurrency,
            range: None,
            ddi: None,
        }
    }
    pub fn ranged(name: &str, path: &'static str, concurrency: usize, size: u64, len: u64) -> Case {
        Case {
            name: name.to_string(),
            path,
            concurrency,
            range: Some((size, len)),
            ddi: None,
        }
    }
}

#[derive(Default)]
pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    pub bytes: u64,
    /// 206 and 200 answers.
    pub partial: u64,
    pub full: u64,
    pub elapsed: Duration,
    /// Sorted latencies in µs.
    lat_us: Vec<u32>,
}

impl Outcome {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// Percentile in ms.
    pub fn pct(&self, p: f64) -> Option<f64> {
        if self.lat_us.is_empty() {
            return None;
        }
        let i = ((p / 100.0) * (self.lat_us.len() - 1) as f64).round() as usize;
        Some(self.lat_us[i.min(self.lat_us.len() - 1)] as f64 / 1000.0)
    }
}

pub struct Conn {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

pub struct Answer {
    pub status: u16,
    pub body: u64,
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

impl Conn {
    pub fn new() -> Conn {
        Conn {
            stream: None,
            buf: vec![0u8; CLIENT_BUF],
        }
    }

    pub fn request(
        &mut self,
        addr: SocketAddr,
        head: &[u8],
        sink: Option<&mut Vec<u8>>,
    ) -> io::Result<Answer> {
        if self.stream.is_none() {
            self.stream = Some(connect(addr)?);
        }
        let r = self.exchange(head, sink);
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    fn exchange(&mut self, head: &[u8], mut sink: Option<&mut Vec<u8>>) -> io::Result<Answer> {
        let s = self.stream.as_mut().ok_or_else(|| bad("no connection"))?;
        s.write_all(head)?;
        let mut filled = 0usize;
        let end = loop {
            if filled == self.buf.len() {
                return Err(bad("response head too large"));
            }
            let n = s.read(&mut self.buf[filled..])?;
            if n == 0 {
                return Err(bad("connection closed before the response head"));
            }
            filled += n;
            if let Some(e) = self.buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                break e;
            }
        };
        let head_text = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head not UTF-8"))?;
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let http10 = status_line.starts_with("HTTP/1.0");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut len = None;
        let mut close = http10;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.parse::<u64>().ok();
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close")
                        || (http10 && !v.eq_ignore_ascii_case("keep-alive"));
                }
            }
        }
        let len = len.ok_or_else(|| bad("no Content-Length"))?;
        let have = (filled - end - 4) as u64;
        if let Some(out) = sink.as_deref_mut() {
            out.extend_from_slice(&self.buf[end + 4..filled]);
        }
        let mut left = len.saturating_sub(have);
        while left > 0 {
            let want = (left as usize).min(self.buf.len());
            let n = s.read(&mut self.buf[..want])?;
            if n == 0 {
                return Err(bad("body cut short"));
            }
            if let Some(out) = sink.as_deref_mut() {
                out.extend_from_slice(&self.buf[..n]);
            }
            left -= n as u64;
        }
        if close {
            self.stream = None;
        }
        Ok(Answer { status, body: len })
    }
}

/// GET `path` once and return the body (to check both servers send the same bytes).
pub fn fetch(addr: SocketAddr, path: &str) -> io::Result<Vec<u8>> {
    let mut c = Conn {
        stream: None,
        buf: vec![0u8; CLIENT_BUF],
    };
    let head = format!("GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut out = Vec::new();
    let a = c.request(addr, head.as_bytes(), Some(&mut out))?;
    if a.status != 200 {
        return Err(bad(&format!("GET /{path}: HTTP {}", a.status)));
    }
    Ok(out)
}

/// Run `case` against `addr` for `dur` (requests in flight at the end finish, bounded by the
/// I/O timeout).
pub fn run(addr: SocketAddr, case: &Case, dur: Duration) -> Outcome {
    let total = Arc::new(Mutex::new(Outcome::default()));
    let start = Instant::now();
    let deadline = start + dur;
    let mut threads = Vec::new();
    for t in 0..case.concurrency {
        let shared = total.clone();
        let path = case.path;
        let range = case.range;
        let ddi = case.ddi.clone();
        let h = std::thread::Builder::new()
            .stack_size(CLIENT_STACK)
            .spawn(move || {
                let mut mine = Outcome::default();
                let mut c = Conn {
                    stream: None,
                    buf: vec![0u8; CLIENT_BUF],
                };
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                while Instant::now() < deadline {
                    let head = match (&ddi, range) {
                        (Some((auth, n)), _) => {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            format!(
                                "GET /DEFAULT/controller/v1/sim-{:06} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\r\n",
                                x % n.max(&1)
                            )
                        }
                        (None, None) => format!("GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
                        (None, Some((size, len))) => {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let slots = (size - len) / 4096 + 1;
                            let off = (x % slots) * 4096;
                            format!(
                                "GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes={}-{}\r\n\r\n",
                                off,
                                off + len - 1
                            )
                        }
                    };
                    let t0 = Instant::now();
                    match c.request(addr, head.as_bytes(), None) {
                        Ok(a) if a.status == 200 || a.status == 206 => {
                            mine.ok += 1;
                            mine.bytes += a.body;
                            if a.status == 206 {
                                mine.partial += 1;
                            } else {
                                mine.full += 1;
                            }
                            mine.lat_us
                                .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                        _ => {
                            mine.errors += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                let mut tot = shared.lock().unwrap_or_else(|p| p.into_inner());
                tot.ok += mine.ok;
                tot.errors += mine.errors;
                tot.bytes += mine.bytes;
                tot.partial += mine.partial;
                tot.full += mine.full;
                tot.lat_us.extend(mine.lat_us);
            });
        match h {
            Ok(h) => threads.push(h),
            Err(_) => total.lock().unwrap_or_else(|p| p.into_inner()).errors += 1,
        }
    }
    for h in threads {
        let _ = h.join();
    }
    let mut out = std::mem::take(&mut *total.lock().unwrap_or_else(|p| p.into_inner()));
    out.elapsed = start.elapsed();
    out.lat_us.sort_unstable();
    out
}
