//! Our own HTTP/1.1 client for `http://` and `https://` sources: one `GET` per connection
//! (`Connection: close`), redirects followed here (every `Location` checked), and every wait
//! and every read bounded.
//!
//! Bounds (each a named constant below or a [`SourceOptions`] field):
//! - DNS lookup, connect, TLS handshake, sending the request: each within `timeout`;
//! - the response head (status line and header fields): complete within `timeout` of the
//!   request being sent, at most [`MAX_HEAD`] bytes and [`MAX_HEADER_FIELDS`] fields;
//! - the body: each read within `timeout`, a minimum average rate (`low_speed_limit` bytes/s
//!   over every `low_speed_time` window, as curl's `--speed-limit/--speed-time`), the item's
//!   overall deadline (`max_time`), at most [`super::MAX_SOURCE_LEN`] bytes, chunk-size lines of
//!   at most [`MAX_CHUNK_LINE`] bytes;
//! - redirects: at most `max_redirects`, to `http(s)://` URLs with a host only, [`MAX_URI_LEN`]
//!   bytes at most, no loops, never from `https://` down to `http://`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    classify_io, tls_config, Phase, Scheme, Source, SourceError, SourceOptions, MAX_SOURCE_LEN,
};

/// Longest response head (status line and all header fields) we read. ESP-IDF's
/// esp_http_client keeps the head in a buffer of `buffer_size` bytes (default 512,
/// `esp_http_client.c`, `DEFAULT_HTTP_BUF_SIZE`); we allow far more, but a bound.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one response head (ureq 2 used 100 too).
pub const MAX_HEADER_FIELDS: usize = 100;
/// Longest chunk-size line of a chunked body, extensions included.
pub const MAX_CHUNK_LINE: usize = 1024;
/// Longest URI we request or accept in a `Location` header.
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Interim (1xx) answers skipped before the real one.
const MAX_INTERIM: usize = 8;
/// Default port of `http://` (RFC 9110 §4.2.1).
const HTTP_PORT: u16 = 80;
/// Default port of `https://` (RFC 9110 §4.2.2).
const HTTPS_PORT: u16 = 443;
/// Socket read buffer.
const BUF: usize = 16 * 1024;
/// Shortest socket timeout we set (0 means "no timeout" to the OS).
const MIN_WAIT: Duration = Duration::from_millis(1);

/// A parsed `http(s)://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Url {
    pub https: bool,
    /// Host name (lowercase) or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// `user:password` before the `@`, if any (sent as Basic authorization).
    pub userinfo: Option<String>,
    /// Path and query, percent-encoded where needed; starts with `/`.
    pub target: String,
}

impl Url {
    /// The `Host` header value (RFC 9110 §7.2): host, `[v6]`, and the port when not default.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { HTTPS_PORT } else { HTTP_PORT };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.host_header()
        )
    }

    fn to_uri(&self) -> String {
        format!("{}{}", self.origin(), self.target)
    }
}

/// Parses an absolute `http://` or `https://` URL (scheme case-insensitive).
pub(crate) fn parse_url(s: &str) -> Result<Url, String> {
    if s.len() > MAX_URI_LEN {
        return Err(format!(
            "the URI is {} bytes long, more than {MAX_URI_LEN}",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("control character {c:?} in the URI"));
    }
    let (https, rest) = match s.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
        _ => return Err("not an http:// or https:// URL".to_string()),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let (host, port) = split_host_port(hostport)?;
    let port = match port {
        Some(p) => p,
        None if https => HTTPS_PORT,
        None => HTTP_PORT,
    };
    let target = if target.starts_with('?') || target.is_empty() {
        format!("/{target}")
    } else {
        target.to_string()
    };
    Ok(Url {
        https,
        host,
        port,
        userinfo,
        target: encode_target(&target),
    })
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed `[` in the host".to_string())?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`[{addr}]` is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{p}` after the IPv6 address"))?,
            ),
        };
        (addr.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (hostport.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".to_string());
    }
    if !host.contains(':')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(format!("`{host}` is not a host name"));
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| format!("`{p}` is not a port number"))?,
        ),
    };
    Ok((host, port))
}

/// Percent-encodes the bytes that may not appear in a request target (RFC 3986 §2).
fn encode_target(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for b in t.bytes() {
        if b <= 0x20 || b >= 0x7F || b"\"<>\\^`{|}".contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// RFC 3986 §5.2.4 on a path (the query is left alone).
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').collect();
    let last = segs.len().saturating_sub(1);
    for (i, seg) in segs.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// Whether `s` starts with a URI scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`).
fn has_scheme(s: &str) -> bool {
    let Some(colon) = s.find(':') else {
        return false;
    };
    let scheme = &s[..colon];
    let mut bytes = scheme.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
}

/// The absolute URL a `Location` header names, resolved against `base` (RFC 9110 §10.2.2,
/// RFC 3986 §5.2). Only `http(s)://` URLs with a host are accepted.
pub(crate) fn resolve_location(base: &Url, location: &str) -> Result<Url, String> {
    let loc = location.trim_matches(|c: char| c == ' ' || c == '\t');
    if loc.is_empty() {
        return Err("empty Location".to_string());
    }
    if loc.len() > MAX_URI_LEN {
        return Err(format!(
            "the Location is {} bytes long, more than {MAX_URI_LEN}",
            loc.len()
        ));
    }
    if loc.chars().any(|c| c.is_control()) {
        return Err("control character in the Location".to_string());
    }
    let absolute = if let Some(rest) = loc.strip_prefix("//") {
        format!("{}://{rest}", if base.https { "https" } else { "http" })
    } else if has_scheme(loc) {
        let scheme = &loc[..loc.find(':').unwrap_or(0)];
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return Err(format!(
                "`{scheme}:` is not http:// or https://; only those are followed"
            ));
        }
        if !loc[scheme.len()..].starts_with("://") {
            return Err("an http(s) URL without `//host`".to_string());
        }
        loc.to_string()
    } else if loc.starts_with('/') {
        format!("{}{loc}", base.origin())
    } else if loc.starts_with('?') {
        let path = base.target.split('?').next().unwrap_or("/");
        format!("{}{path}{loc}", base.origin())
    } else {
        let path = base.target.split('?').next().unwrap_or("/");
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{dir}{loc}", base.origin())
    };
    let mut url = parse_url(&absolute)?;
    let (path, query) = match url.target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (url.target.clone(), None),
    };
    let path = remove_dot_segments(&path);
    url.target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    Ok(url)
}

/// Standard base64 (RFC 4648 §4) for the Basic authorization header.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The socket, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}

/// The limits one response is read under.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Longest wait for a single read.
    timeout: Duration,
    /// The item's overall deadline (`max_time` from its first request).
    deadline: Option<Instant>,
    max_time: Duration,
    /// Minimum average rate in bytes per second over each `low_speed_time` (body only).
    low_speed_limit: u64,
    low_speed_time: Duration,
}

/// A buffered connection whose every read is bounded in time.
struct Wire {
    uri: String,
    conn: Conn,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    limits: Limits,
    /// The response head must be complete by then (None while reading the body).
    head_deadline: Option<Instant>,
    /// Rate window (body only): its start and the bytes received since.
    window: Option<(Instant, u64)>,
    eof: bool,
}

impl Wire {
    fn phase(&self) -> Phase {
        if self.head_deadline.is_some() {
            Phase::Open
        } else {
            Phase::Read
        }
    }

    /// Refills the buffer; `Ok(false)` at the end of the stream.
    fn fill(&mut self) -> Result<bool, SourceError> {
        if self.start < self.end {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        loop {
            let now = Instant::now();
            let phase = self.phase();
            if let Some(d) = self.limits.deadline {
                if now >= d {
                    return Err(SourceError::DeadlineExceeded {
                        uri: self.uri.clone(),
                        phase,
                        max_time: self.limits.max_time,
                    });
                }
            }
            if let Some(h) = self.head_deadline {
                if now >= h {
                    return Err(SourceError::Timeout {
                        uri: self.uri.clone(),
                        phase,
                        timeout: self.limits.timeout,
                    });
                }
            }
            self.check_rate(now)?;
            let mut wait = self.limits.timeout;
            for until in [
                self.limits.deadline,
                self.head_deadline,
                self.window.map(|(s, _)| s + self.limits.low_speed_time),
            ]
            .into_iter()
            .flatten()
            {
                wait = wait.min(until.saturating_duration_since(now));
            }
            let short_wait = wait < self.limits.timeout;
            self.conn
                .tcp()
                .set_read_timeout(Some(wait.max(MIN_WAIT)))
                .map_err(|e| classify_io(e, &self.uri, phase, self.limits.timeout))?;
            match self.conn.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.start = 0;
                    self.end = n;
                    if let Some((_, got)) = &mut self.window {
                        *got += n as u64;
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if short_wait
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                {
                    // A deadline or the rate window ended first: the loop says which.
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // TLS closed without close_notify: a truncation, unless the framing
                    // already knows the body is complete (it then does not read).
                    return Err(SourceError::Io {
                        uri: self.uri.clone(),
                        phase,
                        source: e.into(),
                    });
                }
                Err(e) => return Err(classify_io(e, &self.uri, phase, self.limits.timeout)),
            }
        }
    }

    /// The rate rule: when a window has passed, its average must reach `low_speed_limit`.
    fn check_rate(&mut self, now: Instant) -> Result<(), SourceError> {
        let Some((since, got)) = self.window else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed < self.limits.low_speed_time {
            return Ok(());
        }
        let needed = (self.limits.low_speed_limit as u128 * elapsed.as_millis()) / 1000;
        if (got as u128) < needed {
            return Err(SourceError::TooSlow {
                uri: self.uri.clone(),
                got,
                elapsed,
                limit: self.limits.low_speed_limit,
                window: self.limits.low_speed_time,
            });
        }
        self.window = Some((now, 0));
        Ok(())
    }

    fn byte(&mut self) -> Result<Option<u8>, SourceError> {
        if !self.fill()? {
            return Ok(None);
        }
        let b = self.buf[self.start];
        self.start += 1;
        Ok(Some(b))
    }

    /// One line (without CR LF) of at most `max` bytes; `what` names it in errors.
    fn line(&mut self, max: usize, what: &str, shown: usize) -> Result<Vec<u8>, SourceError> {
        let mut line = Vec::new();
        loop {
            match self.byte()? {
                None => {
                    return Err(SourceError::Io {
                        uri: self.uri.clone(),
                        phase: self.phase(),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("connection closed in the middle of {what}"),
                        )
                        .into(),
                    })
                }
                Some(b'\n') => {
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Ok(line);
                }
                Some(b) => {
                    if line.len() >= max {
                        return Err(bad(&self.uri, format!("{what} longer than {shown} bytes")));
                    }
                    line.push(b);
                }
            }
        }
    }

    fn read_body(&mut self, out: &mut [u8]) -> Result<usize, SourceError> {
        if !self.fill()? {
            return Ok(0);
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

fn bad(uri: &str, detail: String) -> SourceError {
    SourceError::BadResponse {
        uri: uri.to_string(),
        detail,
    }
}

/// A parsed response head.
pub(crate) struct Head {
    pub status: u16,
    pub reason: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The value of the (last) header `name`, trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_head(wire: &mut Wire) -> Result<Head, SourceError> {
    let uri = wire.uri.clone();
    let mut budget = MAX_HEAD;
    for _ in 0..=MAX_INTERIM {
        let status_line = wire.line(budget, "the response head", MAX_HEAD)?;
        budget = budget.saturating_sub(status_line.len() + 2);
        let text = String::from_utf8_lossy(&status_line).into_owned();
        let mut parts = text.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let code = parts.next().unwrap_or("");
        let reason = parts.next().unwrap_or("").trim().to_string();
        if !(version.starts_with("HTTP/1.") && version.len() == 8) {
            return Err(bad(
                &uri,
                format!("not an HTTP/1.x status line: {:?}", shorten(&text)),
            ));
        }
        let status = code
            .parse::<u16>()
            .ok()
            .filter(|s| (100..600).contains(s) && code.len() == 3)
            .ok_or_else(|| bad(&uri, format!("bad status code {:?}", shorten(code))))?;
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let line = wire.line(budget, "the response head", MAX_HEAD)?;
            budget = budget.saturating_sub(line.len() + 2);
            if budget == 0 {
                return Err(bad(
                    &uri,
                    format!("response head longer than {MAX_HEAD} bytes"),
                ));
            }
            if line.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            if text.starts_with([' ', '\t']) {
                // obs-fold (RFC 9112 §5.2): replace with a space.
                match headers.last_mut() {
                    Some((_, v)) => {
                        v.push(' ');
                        v.push_str(text.trim());
                    }
                    None => return Err(bad(&uri, "header block starts with a fold".into())),
                }
                continue;
            }
            let (name, value) = text.split_once(':').ok_or_else(|| {
                bad(
                    &uri,
                    format!("header line without `:`: {:?}", shorten(&text)),
                )
            })?;
            if name.is_empty() || name.contains([' ', '\t']) {
                return Err(bad(&uri, format!("bad header name {:?}", shorten(name))));
            }
            if headers.len() >= MAX_HEADER_FIELDS {
                return Err(bad(
                    &uri,
                    format!("more than {MAX_HEADER_FIELDS} header fields"),
                ));
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue; // 100 Continue, 103 Early Hints: the real answer follows
        }
        return Ok(Head {
            status,
            reason,
            headers,
        });
    }
    Err(bad(
        &uri,
        format!("more than {MAX_INTERIM} interim (1xx) answers"),
    ))
}

/// Shortens a text shown in an error message.
fn shorten(s: &str) -> String {
    const SHOWN: usize = 120;
    if s.len() <= SHOWN {
        return s.to_string();
    }
    let mut end = SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// How the body is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    /// Chunked; the bytes left in the current chunk, `None` before a size line.
    Chunked(Option<u64>),
    Close,
    Done,
}

/// A response body as a [`Source`].
pub(crate) struct HttpSource {
    wire: Wire,
    framing: Framing,
    content_length: Option<u64>,
    got: u64,
}

impl HttpSource {
    fn short(&self, expected: u64) -> SourceError {
        SourceError::ShortBody {
            uri: self.wire.uri.clone(),
            expected,
            got: self.got,
        }
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        loop {
            match self.framing {
                Framing::Done => return Ok(0),
                Framing::Length(left) => {
                    if left == 0 {
                        self.framing = Framing::Done;
                        return Ok(0);
                    }
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = match self.wire.read_body(&mut buf[..want]) {
                        Ok(n) => n,
                        Err(SourceError::Io { source, .. })
                            if source.kind() == io::ErrorKind::UnexpectedEof =>
                        {
                            0
                        }
                        Err(e) => return Err(e),
                    };
                    if n == 0 {
                        return Err(self.short(self.content_length.unwrap_or(self.got)));
                    }
                    self.framing = Framing::Length(left - n as u64);
                    return Ok(n);
                }
                Framing::Close => {
                    let n = self.wire.read_body(buf)?;
                    if n == 0 {
                        self.framing = Framing::Done;
                    }
                    return Ok(n);
                }
                Framing::Chunked(None) => {
                    let line =
                        self.wire
                            .line(MAX_CHUNK_LINE, "a chunk-size line", MAX_CHUNK_LINE)?;
                    let text = String::from_utf8_lossy(&line);
                    let size_text = text.split(';').next().unwrap_or("").trim();
                    let size = (size_text.len() <= 16
                        && !size_text.is_empty()
                        && size_text.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| u64::from_str_radix(size_text, 16).ok())
                    .flatten()
                    .ok_or_else(|| {
                        bad(
                            &self.wire.uri,
                            format!("bad chunk size {:?}", shorten(&text)),
                        )
                    })?;
                    if size == 0 {
                        // Trailer fields, then the blank line (bounded like a head).
                        let mut budget = MAX_HEAD;
                        loop {
                            let l = self.wire.line(budget, "the chunked trailer", MAX_HEAD)?;
                            if l.is_empty() {
                                break;
                            }
                            budget = budget.saturating_sub(l.len() + 2);
                        }
                        self.framing = Framing::Done;
                        return Ok(0);
                    }
                    self.framing = Framing::Chunked(Some(size));
                }
                Framing::Chunked(Some(0)) => {
                    let l = self.wire.line(2, "the end of a chunk", 2)?;
                    if !l.is_empty() {
                        return Err(bad(&self.wire.uri, "chunk not followed by CRLF".into()));
                    }
                    self.framing = Framing::Chunked(None);
                }
                Framing::Chunked(Some(left)) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.wire.read_body(&mut buf[..want])?;
                    if n == 0 {
                        return Err(SourceError::Io {
                            uri: self.wire.uri.clone(),
                            phase: Phase::Read,
                            source: io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "connection closed in the middle of a chunk",
                            )
                            .into(),
                        });
                    }
                    self.framing = Framing::Chunked(Some(left - n as u64));
                    return Ok(n);
                }
            }
        }
    }
}

impl Source for HttpSource {
    fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let uri = self.wire.uri.clone();
        let n = super::guard(&uri, Phase::Read, || self.read_inner(buf))?;
        self.got = self.got.saturating_add(n as u64);
        if self.got > MAX_SOURCE_LEN {
            self.framing = Framing::Done;
            return Err(SourceError::TooLarge {
                uri,
                limit: MAX_SOURCE_LEN,
            });
        }
        Ok(n)
    }

    fn uri(&self) -> &str {
        &self.wire.uri
    }
}

/// An answer: its head and a body to read.
pub(crate) struct Answer {
    pub head: Head,
    pub body: HttpSource,
}

/// Resolves `host:port` within `timeout` (the lookup runs on a helper thread so that a DNS
/// server that never answers cannot hold us).
fn resolve(uri: &str, url: &Url, timeout: Duration) -> Result<Vec<SocketAddr>, SourceError> {
    if let Ok(ip) = url.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, url.port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (host, port) = (url.host.clone(), url.port);
    std::thread::spawn(move || {
        let _ = tx.send((host.as_str(), port).to_socket_addrs().map(|a| a.collect()));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs;
            if addrs.is_empty() {
                Err(SourceError::Dns {
                    uri: uri.to_string(),
                    detail: format!("no address for {}", url.host),
                })
            } else {
                Ok(addrs)
            }
        }
        Ok(Err(e)) => Err(SourceError::Dns {
            uri: uri.to_string(),
            detail: e.to_string(),
        }),
        Err(_) => Err(SourceError::Timeout {
            uri: uri.to_string(),
            phase: Phase::Open,
            timeout,
        }),
    }
}

fn connect(uri: &str, url: &Url, opts: &SourceOptions) -> Result<TcpStream, SourceError> {
    let t = opts.timeout;
    let addrs = resolve(uri, url, t)?;
    let until = Instant::now() + t;
    let mut last = None;
    for addr in addrs {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left.max(MIN_WAIT)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => classify_io(e, uri, Phase::Open, t),
        None => SourceError::Timeout {
            uri: uri.to_string(),
            phase: Phase::Open,
            timeout: t,
        },
    })
}

/// TLS handshake within `opts.timeout`.
fn handshake(
    uri: &str,
    url: &Url,
    tcp: TcpStream,
    opts: &SourceOptions,
) -> Result<Conn, SourceError> {
    let config = tls_config(opts.ca_pem.as_deref(), uri)?;
    let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|e| {
        SourceError::InvalidUri {
            uri: uri.to_string(),
            detail: format!("`{}` is not a TLS server name: {e}", url.host),
        }
    })?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| SourceError::Tls {
            uri: uri.to_string(),
            detail: e.to_string(),
        })?;
    let mut tcp = tcp;
    let until = Instant::now() + opts.timeout;
    while conn.is_handshaking() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SourceError::Timeout {
                uri: uri.to_string(),
                phase: Phase::Open,
                timeout: opts.timeout,
            });
        }
        tcp.set_read_timeout(Some(left.max(MIN_WAIT)))
            .and_then(|_| tcp.set_write_timeout(Some(left.max(MIN_WAIT))))
            .map_err(|e| classify_io(e, uri, Phase::Open, opts.timeout))?;
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) if conn.is_handshaking() => {
                return Err(SourceError::Tls {
                    uri: uri.to_string(),
                    detail: "the server closed the connection during the handshake".into(),
                })
            }
            Ok(_) => {}
            Err(e) => return Err(classify_io(e, uri, Phase::Open, opts.timeout)),
        }
    }
    Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

/// A request's method and, for `PUT`/`POST`, its content type and body.
#[derive(Clone, Copy)]
pub(crate) enum Verb<'b> {
    Get,
    Send {
        method: &'static str,
        content_type: &'b str,
        body: &'b [u8],
    },
}

/// Sends one request for `url` with `extra` headers (and `opts.authorization` when `auth`)
/// and reads the answer's head.
fn request(
    uri: &str,
    url: &Url,
    verb: Verb<'_>,
    auth: bool,
    extra: &[(&str, String)],
    opts: &SourceOptions,
) -> Result<Answer, SourceError> {
    let limits = Limits {
        timeout: opts.timeout,
        // Without an item deadline, this request's own: `max_time` from now.
        deadline: Some(
            opts.deadline
                .map(crate::std_driver::instant_at)
                .unwrap_or_else(|| Instant::now() + opts.max_time),
        ),
        max_time: opts.max_time,
        low_speed_limit: opts.low_speed_limit,
        low_speed_time: opts.low_speed_time,
    };
    if let Some(d) = limits.deadline {
        if Instant::now() >= d {
            return Err(SourceError::DeadlineExceeded {
                uri: uri.to_string(),
                phase: Phase::Open,
                max_time: limits.max_time,
            });
        }
    }
    let tcp = connect(uri, url, opts)?;
    let _ = tcp.set_nodelay(true);
    let mut conn = if url.https {
        handshake(uri, url, tcp, opts)?
    } else {
        Conn::Plain(tcp)
    };
    let method = match verb {
        Verb::Get => "GET",
        Verb::Send { method, .. } => method,
    };
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: */*\r\nConnection: close\r\n",
        method,
        url.target,
        url.host_header(),
        opts.user_agent
    );
    let mut extra: Vec<(&str, String)> = extra.to_vec();
    match (&opts.authorization, &url.userinfo) {
        (Some(a), _) if auth => extra.push(("Authorization", a.expose().to_string())),
        (_, Some(u)) => extra.push(("Authorization", format!("Basic {}", base64(u.as_bytes())))),
        _ => {}
    }
    if let Verb::Send {
        content_type, body, ..
    } = verb
    {
        extra.push(("Content-Type", content_type.to_string()));
        extra.push(("Content-Length", body.len().to_string()));
    }
    for (name, value) in &extra {
        if value.contains(['\r', '\n']) {
            return Err(SourceError::InvalidUri {
                uri: uri.to_string(),
                detail: format!("line break in the {name} header value"),
            });
        }
        req += &format!("{name}: {value}\r\n");
    }
    req += "\r\n";
    conn.tcp()
        .set_write_timeout(Some(opts.timeout.max(MIN_WAIT)))
        .map_err(|e| classify_io(e, uri, Phase::Open, opts.timeout))?;
    let payload: &[u8] = match verb {
        Verb::Get => &[],
        Verb::Send { body, .. } => body,
    };
    conn.write_all(req.as_bytes())
        .and_then(|_| conn.write_all(payload))
        .and_then(|_| conn.flush())
        .map_err(|e| classify_io(e, uri, Phase::Open, opts.timeout))?;
    let mut wire = Wire {
        uri: uri.to_string(),
        conn,
        buf: vec![0u8; BUF].into_boxed_slice(),
        start: 0,
        end: 0,
        limits,
        head_deadline: Some(Instant::now() + opts.timeout),
        window: None,
        eof: false,
    };
    let head = read_head(&mut wire)?;
    wire.head_deadline = None;
    if limits.low_speed_limit > 0 && !limits.low_speed_time.is_zero() {
        wire.window = Some((Instant::now(), (wire.end - wire.start) as u64));
    }
    let framing = framing(uri, &head)?;
    let content_length = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    if let Some(n) = content_length {
        if n > MAX_SOURCE_LEN && (200..300).contains(&head.status) {
            return Err(SourceError::TooLarge {
                uri: uri.to_string(),
                limit: MAX_SOURCE_LEN,
            });
        }
    }
    Ok(Answer {
        head,
        body: HttpSource {
            wire,
            framing,
            content_length,
            got: 0,
        },
    })
}

fn framing(uri: &str, head: &Head) -> Result<Framing, SourceError> {
    if matches!(head.status, 204 | 304) {
        return Ok(Framing::Length(0));
    }
    if let Some(te) = head.header("Transfer-Encoding") {
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if last.eq_ignore_ascii_case("chunked") {
            return Ok(Framing::Chunked(None));
        }
        return Err(bad(
            uri,
            format!("unsupported Transfer-Encoding {:?}", shorten(te)),
        ));
    }
    let mut length = None;
    for v in head.all("Content-Length") {
        for part in v.split(',') {
            let digits = part.trim();
            let n = Some(digits)
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u64>().ok())
                .ok_or_else(|| bad(uri, format!("bad Content-Length {:?}", shorten(v))))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad(uri, "conflicting Content-Length values".to_string()));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// `GET uri` with `extra` headers, following at most `opts.max_redirects` redirects (each
/// `Location` checked). Returns the final non-3xx answer (any status) for the caller to judge.
pub(crate) fn get(
    uri: &str,
    extra: &[(&str, String)],
    opts: &SourceOptions,
) -> Result<Answer, SourceError> {
    let mut url = parse_url(uri).map_err(|detail| SourceError::InvalidUri {
        uri: uri.to_string(),
        detail,
    })?;
    if Scheme::of(uri) == Some(Scheme::Https) {
        // A pinned CA that does not parse is an error before any connection.
        tls_config(opts.ca_pem.as_deref(), uri)?;
    }
    let origin = (url.https, url.host.clone(), url.port);
    let mut seen = vec![url.to_uri()];
    let mut followed = 0u32;
    loop {
        // The item's credentials go to its own origin only, not to where a redirect leads.
        let auth = (url.https, url.host.clone(), url.port) == origin;
        let answer = request(uri, &url, Verb::Get, auth, extra, opts)?;
        let status = answer.head.status;
        if !(300..400).contains(&status) || status == 304 {
            return Ok(answer);
        }
        let Some(location) = answer.head.header("Location").map(str::to_string) else {
            return Ok(answer); // a 3xx without Location: the caller reports the status
        };
        let refuse = |detail: String| SourceError::BadRedirect {
            uri: uri.to_string(),
            location: shorten(&location),
            detail,
        };
        if followed >= opts.max_redirects {
            return Err(SourceError::TooManyRedirects {
                uri: uri.to_string(),
                max: opts.max_redirects,
            });
        }
        let next = resolve_location(&url, &location).map_err(refuse)?;
        if url.https && !next.https {
            return Err(refuse(
                "a redirect from https:// down to http:// is not followed".to_string(),
            ));
        }
        let key = next.to_uri();
        if seen.contains(&key) {
            return Err(refuse(format!(
                "redirect loop: {key} was already requested"
            )));
        }
        seen.push(key);
        followed += 1;
        url = next;
    }
}

/// `PUT`/`POST` `body` to `uri` (no redirects followed: a 3xx is the caller's error), with
/// `opts.authorization`. Returns the answer's status and reason; its body is not read.
pub(crate) fn send(
    uri: &str,
    method: &'static str,
    content_type: &str,
    body: &[u8],
    opts: &SourceOptions,
) -> Result<(u16, String), SourceError> {
    let url = parse_url(uri).map_err(|detail| SourceError::InvalidUri {
        uri: uri.to_string(),
        detail,
    })?;
    if Scheme::of(uri) == Some(Scheme::Https) {
        tls_config(opts.ca_pem.as_deref(), uri)?;
    }
    let verb = Verb::Send {
        method,
        content_type,
        body,
    };
    let answer = request(uri, &url, verb, true, &[], opts)?;
    Ok((answer.head.status, answer.head.reason.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_url_reads_host_port_target() {
        let u = parse_url("http://Example.COM:8080/a/b.bin?x=1#frag").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.target.as_str()),
            (false, "example.com", 8080, "/a/b.bin?x=1")
        );
        let u = parse_url("https://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 443));
        assert_eq!(u.host_header(), "[::1]");
        let u = parse_url("http://h?q").unwrap();
        assert_eq!(u.target, "/?q");
        assert_eq!(parse_url("http://h/a b").unwrap().target, "/a%20b");
        for bad in [
            "http:///etc/passwd",
            "http://",
            "http://:80/x",
            "http://h:99999/",
            "http://h:0/",
            "http://h:x/",
            "file:///etc/passwd",
            "http://[::1/",
            "http://exa mple/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locations_resolve_or_are_refused() {
        let base = parse_url("http://h:81/dir/file.bin?q").unwrap();
        let r = |l: &str| resolve_location(&base, l).map(|u| u.to_uri());
        assert_eq!(r("/new.bin").unwrap(), "http://h:81/new.bin");
        assert_eq!(r("other.bin").unwrap(), "http://h:81/dir/other.bin");
        assert_eq!(r("../up.bin").unwrap(), "http://h:81/up.bin");
        assert_eq!(r("../../../up.bin").unwrap(), "http://h:81/up.bin");
        assert_eq!(r("?z").unwrap(), "http://h:81/dir/file.bin?z");
        assert_eq!(r("//g/x").unwrap(), "http://g/x");
        assert_eq!(r("HTTPS://g:444/x").unwrap(), "https://g:444/x");
        for bad in [
            "file:///etc/passwd",
            "data:text/plain,hello",
            "mailto:a@b.c",
            "javascript:alert(1)",
            "ftp://h/x",
            "http:///nohost",
            "http:nohost",
            "",
            "   ",
        ] {
            assert!(r(bad).is_err(), "{bad:?}");
        }
        assert!(r(&format!("/{}", "a".repeat(MAX_URI_LEN))).is_err());
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("/a/.."), "/");
        assert_eq!(remove_dot_segments("/.."), "/");
        assert_eq!(remove_dot_segments("/a/b/"), "/a/b/");
    }
}
