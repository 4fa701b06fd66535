//! A flaky HTTP/1.1 file server on 127.0.0.1 for the network tests of resumable downloads.
//!
//! It serves one file (at any path) with `ETag`, `Last-Modified` and `Range` / `If-Range`
//! support, and misbehaves on request: it drops the connection at chosen file offsets, stalls,
//! ignores `Range`, changes the file between requests, lies about `Content-Length`, trickles
//! its head or body a byte at a time, never answers, redirects anywhere, answers 416. It logs
//! every request. It is bounded: it answers at most [`Faults::max_requests`] requests, stops
//! by itself after [`Faults::lifetime`], and stops when dropped. It binds loopback only.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest request head the server reads.
const MAX_HEAD: usize = 16 * 1024;
/// Body bytes written per `write` call (so drops and stalls land on exact offsets).
const PIECE: usize = 1024;
/// How often sleeping loops look at the stop flag.
const TICK: Duration = Duration::from_millis(5);
/// How often the accept loop polls for a connection (it is also the added latency of each one).
const ACCEPT_POLL: Duration = Duration::from_millis(1);

/// A pause in the body at a file offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// File offset at which the body stops flowing.
    pub at: u64,
    /// How long it stops (interrupted when the server stops).
    pub duration: Duration,
}

/// How the server misbehaves. `Faults::default()` is a well-behaved server.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Close the connection when the body reaches each of these file offsets; each one fires
    /// once, on the first answer whose body covers it.
    pub drop_at: Vec<u64>,
    /// Stall once, on the first answer whose body covers `at`.
    pub stall: Option<Stall>,
    /// Answer every request with 200 and the whole file, whatever `Range` says.
    pub ignore_range: bool,
    /// Honour `Range` even when `If-Range` names another version (a broken cache): the 206
    /// then carries the current file's `ETag`.
    pub ignore_if_range: bool,
    /// From request number `.0` (0-based) on, serve `.1` instead (new `ETag` and
    /// `Last-Modified`).
    pub change: Option<(usize, Vec<u8>)>,
    /// Added to the `Content-Length` of 200 answers: > 0 promises bytes that never come (the
    /// body ends with the file), < 0 hides the end of the file (the body stops there).
    pub content_length_delta: i64,
    /// How many 200 answers lie (counted from the first); `usize::MAX`: all of them.
    pub lie_times: usize,
    /// Answer the first `.1` requests with status `.0` and an empty body (e.g. 503, 404).
    pub status_first: Option<(u16, usize)>,
    /// Send a strong `ETag`.
    pub etag: bool,
    /// Send `Last-Modified`.
    pub last_modified: bool,
    /// Send the body one byte per this interval (a slow or hostile server).
    pub trickle_body: Option<Duration>,
    /// Send the status line and header fields one byte per this interval.
    pub trickle_head: Option<Duration>,
    /// Read the request, then send nothing until the server stops.
    pub never_answer: bool,
    /// Answer every request with `302 Found` and this `Location` (any text, sent as is).
    pub redirect_to: Option<String>,
    /// Answer the first this many requests that carry `Range` with 416 (whatever the range).
    pub range_416: usize,
    /// Requests answered before the server refuses connections.
    pub max_requests: usize,
    /// The server stops by itself after this long.
    pub lifetime: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop_at: Vec::new(),
            stall: None,
            ignore_range: false,
            ignore_if_range: false,
            change: None,
            content_length_delta: 0,
            lie_times: usize::MAX,
            status_first: None,
            etag: true,
            last_modified: true,
            trickle_body: None,
            trickle_head: None,
            never_answer: false,
            redirect_to: None,
            range_416: 0,
            max_requests: 64,
            lifetime: Duration::from_secs(60),
        }
    }
}

/// What the server saw and did for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// 0-based, in the order the requests arrived.
    pub index: usize,
    /// The first byte asked for by `Range: bytes=N-` (or `N-M`), if any.
    pub range_start: Option<u64>,
    /// The `If-Range` header, if any.
    pub if_range: Option<String>,
    pub status: u16,
    /// File offset of the first body byte sent.
    pub body_start: u64,
    /// Body bytes written to the socket.
    pub body_sent: u64,
    /// The server cut this answer short on purpose (a `drop_at` offset).
    pub dropped: bool,
}

#[derive(Default)]
struct State {
    faults: Faults,
    requests: Vec<Request>,
    lies_told: usize,
    /// 416 answers given for `Faults::range_416`.
    told_416: usize,
}

/// The server; it stops when dropped.
pub struct FlakyServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    /// Connections being answered.
    active: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// The ETag and Last-Modified of file version `v` (0 first, 1 after a change).
fn validators(v: usize, len: usize) -> (String, String) {
    (
        format!("\"v{}-{}\"", v + 1, len),
        format!("Wed, 0{} Jan 2025 00:00:00 GMT", v + 1),
    )
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking handler thread must not take the test down with a poisoned lock.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FlakyServer {
    /// Serve `file` on an ephemeral port of 127.0.0.1 with `faults`.
    pub fn start(file: Vec<u8>, faults: Faults) -> io::Result<FlakyServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let deadline = Instant::now() + faults.lifetime;
        let max = faults.max_requests;
        let state = Arc::new(Mutex::new(State {
            faults,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let file = Arc::new(file);
        let (st, sp, act) = (state.clone(), stop.clone(), active.clone());
        let thread = thread::spawn(move || {
            let mut accepted = 0usize;
            while !sp.load(Ordering::SeqCst) && Instant::now() < deadline && accepted < max {
                match listener.accept() {
                    Ok((conn, _)) => {
                        accepted += 1;
                        let (st, sp, file, act) =
                            (st.clone(), sp.clone(), file.clone(), act.clone());
                        act.fetch_add(1, Ordering::SeqCst);
                        thread::spawn(move || {
                            let _ = serve(conn, &st, &sp, &file, deadline);
                            act.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => thread::sleep(ACCEPT_POLL),
                }
            }
        });
        Ok(FlakyServer {
            addr,
            state,
            stop,
            active,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name)
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state).requests.clone()
    }

    /// Wait (at most `timeout`) until no answer is being sent: a client may have read the end
    /// of a body before the server thread counted it. False on timeout.
    pub fn settle(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.active.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(TICK);
        }
        true
    }

    /// Body bytes sent over all answers.
    pub fn body_bytes_sent(&self) -> u64 {
        lock(&self.state).requests.iter().map(|r| r.body_sent).sum()
    }

    /// The `Range` starts of the answers that honoured one (206).
    pub fn resumed_from(&self) -> Vec<u64> {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.status == 206)
            .map(|r| r.body_start)
            .collect()
    }

    /// Wait until some answer's body has reached file offset `offset`; false on timeout.
    pub fn wait_until_sent(&self, offset: u64, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if lock(&self.state)
                .requests
                .iter()
                .any(|r| r.body_start + r.body_sent >= offset)
            {
                return true;
            }
            thread::sleep(TICK);
        }
        false
    }
}

impl Drop for FlakyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The request line's target and the headers we care about.
struct Head {
    range: Option<u64>,
    if_range: Option<String>,
}

fn read_head(conn: &mut TcpStream) -> io::Result<Head> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut range = None;
    let mut if_range = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("Range") {
            range = value
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, _)| a.trim().parse().ok());
        } else if name.eq_ignore_ascii_case("If-Range") {
            if_range = Some(value.to_string());
        }
    }
    Ok(Head { range, if_range })
}

/// Sleeps `d` in ticks; false when the server stops (or its lifetime ends) meanwhile.
fn pause(stop: &AtomicBool, deadline: Instant, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        thread::sleep(TICK.min(until - now));
    }
}

fn serve(
    mut conn: TcpStream,
    state: &Mutex<State>,
    stop: &AtomicBool,
    first: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let head = read_head(&mut conn)?;
    // Decide the answer under the lock.
    let (index, file, status, start, header, trickle) = {
        let mut st = lock(state);
        let index = st.requests.len();
        let (version, file): (usize, Vec<u8>) = match &st.faults.change {
            Some((after, new)) if index >= *after => (1, new.clone()),
            _ => (0, first.to_vec()),
        };
        let len = file.len() as u64;
        let (etag, lm) = validators(version, file.len());
        let if_range_ok = st.faults.ignore_if_range
            || head
                .if_range
                .as_ref()
                .is_none_or(|v| *v == etag || *v == lm);
        let mut h = String::new();
        if st.faults.etag {
            h += &format!("ETag: {etag}\r\n");
        }
        if st.faults.last_modified {
            h += &format!("Last-Modified: {lm}\r\n");
        }
        h += "Accept-Ranges: bytes\r\nConnection: close\r\n";
        let forced = st.faults.status_first.filter(|&(_, n)| index < n);
        let force_416 = head.range.is_some() && st.told_416 < st.faults.range_416;
        let (status, start, body_len) = match head.range {
            _ if forced.is_some() => {
                h += "Content-Length: 0\r\n";
                (forced.map_or(500, |f| f.0), 0, 0)
            }
            _ if st.faults.redirect_to.is_some() => {
                let to = st.faults.redirect_to.clone().unwrap_or_default();
                h += &format!("Location: {to}\r\nContent-Length: 0\r\n");
                (302, 0, 0)
            }
            Some(n) if force_416 => {
                st.told_416 += 1;
                h += &format!("Content-Range: bytes */{len}\r\nContent-Length: 0\r\n");
                (416, n, 0)
            }
            Some(n) if !st.faults.ignore_range && if_range_ok => {
                if n >= len {
                    h += &format!("Content-Range: bytes */{len}\r\nContent-Length: 0\r\n");
                    (416, n, 0)
                } else {
                    h += &format!(
                        "Content-Range: bytes {n}-{}/{len}\r\nContent-Length: {}\r\n",
                        len - 1,
                        len - n
                    );
                    (206, n, len - n)
                }
            }
            _ => {
                let lie = if st.lies_told < st.faults.lie_times {
                    st.faults.content_length_delta
                } else {
                    0
                };
                if lie != 0 {
                    st.lies_told += 1;
                }
                let claimed = (len as i64 + lie).max(0) as u64;
                h += &format!("Content-Length: {claimed}\r\n");
                (200, 0, claimed.min(len))
            }
        };
        st.requests.push(Request {
            index,
            range_start: head.range,
            if_range: head.if_range.clone(),
            status,
            body_start: start,
            body_sent: 0,
            dropped: false,
        });
        let end = (start + body_len) as usize;
        let trickle = (
            st.faults.trickle_head,
            st.faults.trickle_body,
            st.faults.never_answer,
        );
        (
            index,
            file[start as usize..end].to_vec(),
            status,
            start,
            h,
            trickle,
        )
    };
    let (trickle_head, trickle_body, never_answer) = trickle;
    if never_answer {
        pause(
            stop,
            deadline,
            deadline.saturating_duration_since(Instant::now()),
        );
        return Ok(());
    }
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        416 => "Range Not Satisfiable",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head_bytes = format!("HTTP/1.1 {status} {reason}\r\n{header}\r\n").into_bytes();
    match trickle_head {
        Some(every) => {
            for b in head_bytes {
                conn.write_all(&[b])?;
                if !pause(stop, deadline, every) {
                    return Ok(());
                }
            }
        }
        None => conn.write_all(&head_bytes)?,
    }
    if let Some(every) = trickle_body {
        for (i, b) in file.iter().enumerate() {
            conn.write_all(&[*b])?;
            lock(state).requests[index].body_sent = i as u64 + 1;
            if !pause(stop, deadline, every) {
                return Ok(());
            }
        }
        return conn.flush();
    }
    let mut sent = 0usize;
    while sent < file.len() {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            return Ok(());
        }
        let pos = start + sent as u64;
        let mut piece_end = (sent + PIECE).min(file.len());
        // Faults that fall inside this piece: stop at them.
        let (drop_here, stall_here) = {
            let mut st = lock(state);
            let end = start + piece_end as u64;
            let drop_at = st.faults.drop_at.iter().position(|&d| d >= pos && d < end);
            let stall = st.faults.stall.filter(|s| s.at >= pos && s.at < end);
            let hit = match (drop_at, stall) {
                (Some(i), Some(s)) if st.faults.drop_at[i] <= s.at => {
                    Some((st.faults.drop_at.remove(i), true))
                }
                (Some(i), None) => Some((st.faults.drop_at.remove(i), true)),
                (_, Some(s)) => {
                    st.faults.stall = None;
                    Some((s.at, false))
                }
                (None, None) => None,
            };
            match hit {
                Some((at, true)) => {
                    piece_end = (at - start) as usize;
                    (true, None)
                }
                Some((at, false)) => {
                    piece_end = (at - start) as usize;
                    (false, stall.map(|s| s.duration))
                }
                None => (false, None),
            }
        };
        let r = conn.write_all(&file[sent..piece_end]);
        if r.is_ok() {
            sent = piece_end;
        }
        {
            let mut st = lock(state);
            let req = &mut st.requests[index];
            req.body_sent = sent as u64;
            req.dropped |= drop_here;
        }
        r?;
        if drop_here {
            conn.flush()?;
            return conn.shutdown(std::net::Shutdown::Both);
        }
        if let Some(d) = stall_here {
            let until = Instant::now() + d;
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                thread::sleep(TICK);
            }
        }
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, extra: &str) -> (String, Vec<u8>) {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(format!("GET /f HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
            .unwrap();
        let mut all = Vec::new();
        let _ = c.read_to_end(&mut all);
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (
            String::from_utf8_lossy(&all[..split]).to_string(),
            all[split..].to_vec(),
        )
    }

    fn file(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn serves_ranges_and_checks_if_range() {
        let f = file(10_000);
        let s = FlakyServer::start(f.clone(), Faults::default()).unwrap();
        let (h, b) = get(s.addr(), "");
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert_eq!(b, f);
        let (h, b) = get(s.addr(), "Range: bytes=4000-\r\nIf-Range: \"v1-10000\"\r\n");
        assert!(h.starts_with("HTTP/1.1 206"), "{h}");
        assert!(h.contains("Content-Range: bytes 4000-9999/10000"), "{h}");
        assert_eq!(b, f[4000..]);
        let (h, b) = get(s.addr(), "Range: bytes=4000-\r\nIf-Range: \"old\"\r\n");
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert_eq!(b.len(), 10_000);
        let (h, _) = get(s.addr(), "Range: bytes=10000-\r\n");
        assert!(h.starts_with("HTTP/1.1 416"), "{h}");
        assert_eq!(s.resumed_from(), vec![4000]);
    }

    #[test]
    fn drops_once_at_the_chosen_offset() {
        let f = file(10_000);
        let faults = Faults {
            drop_at: vec![3000],
            ..Faults::default()
        };
        let s = FlakyServer::start(f.clone(), faults).unwrap();
        let (_, b) = get(s.addr(), "");
        assert_eq!(b, f[..3000]);
        let (_, b) = get(s.addr(), "");
        assert_eq!(b, f);
        let r = s.requests();
        assert!(r[0].dropped && !r[1].dropped);
        assert_eq!(r[0].body_sent, 3000);
    }

    #[test]
    fn lies_and_changes_as_told() {
        let faults = Faults {
            content_length_delta: 100,
            lie_times: 1,
            change: Some((1, file(500))),
            ..Faults::default()
        };
        let s = FlakyServer::start(file(1000), faults).unwrap();
        let (h, b) = get(s.addr(), "");
        assert!(h.contains("Content-Length: 1100"), "{h}");
        assert_eq!(b.len(), 1000);
        let (h, b) = get(s.addr(), "Range: bytes=10-\r\nIf-Range: \"v1-1000\"\r\n");
        assert!(
            h.starts_with("HTTP/1.1 200") && h.contains("ETag: \"v2-500\""),
            "{h}"
        );
        assert_eq!(b.len(), 500);
    }

    #[test]
    fn trickles_redirects_and_answers_416_as_told() {
        let faults = Faults {
            trickle_body: Some(Duration::from_millis(20)),
            ..Faults::default()
        };
        let s = FlakyServer::start(file(5), faults).unwrap();
        let t0 = Instant::now();
        let (_, b) = get(s.addr(), "");
        assert_eq!(b, file(5));
        assert!(
            t0.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t0.elapsed()
        );

        let faults = Faults {
            redirect_to: Some("file:///etc/passwd".into()),
            ..Faults::default()
        };
        let s = FlakyServer::start(file(5), faults).unwrap();
        let (h, _) = get(s.addr(), "");
        assert!(h.starts_with("HTTP/1.1 302"), "{h}");
        assert!(h.contains("Location: file:///etc/passwd\r\n"), "{h}");

        let faults = Faults {
            range_416: 1,
            ..Faults::default()
        };
        let s = FlakyServer::start(file(100), faults).unwrap();
        let (h, _) = get(s.addr(), "Range: bytes=10-\r\n");
        assert!(h.starts_with("HTTP/1.1 416"), "{h}");
        let (h, _) = get(s.addr(), "Range: bytes=10-\r\n");
        assert!(h.starts_with("HTTP/1.1 206"), "{h}");
    }

    #[test]
    fn trickled_head_and_silence() {
        let faults = Faults {
            trickle_head: Some(Duration::from_millis(1)),
            ..Faults::default()
        };
        let s = FlakyServer::start(file(3), faults).unwrap();
        let (h, b) = get(s.addr(), "");
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert_eq!(b, file(3));
        let faults = Faults {
            never_answer: true,
            lifetime: Duration::from_millis(300),
            ..Faults::default()
        };
        let s = FlakyServer::start(file(3), faults).unwrap();
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut all = Vec::new();
        let _ = c.read_to_end(&mut all);
        assert!(all.is_empty());
    }

    #[test]
    fn stops_by_itself() {
        let faults = Faults {
            lifetime: Duration::from_millis(50),
            ..Faults::default()
        };
        let s = FlakyServer::start(file(10), faults).unwrap();
        let t = s.thread.as_ref().map(|t| t.thread().id());
        thread::sleep(Duration::from_millis(200));
        assert!(t.is_some());
        assert!(s.thread.as_ref().unwrap().is_finished());
    }
}
