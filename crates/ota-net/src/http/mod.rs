//! A small async HTTP/1.1 client for firmware downloads, `no_std` and allocation-free.
//!
//! One `GET` per connection (`Connection: close`), over any connection a [`Connect`] opens
//! (an embassy-net `TcpSocket` on the chip and on the PC simulation, anything implementing
//! [`embedded_io_async::Read`] + [`embedded_io_async::Write`] in tests). It sends `Range:
//! bytes=N-`, `If-Range` and `If-Match`; reads the status, `Content-Length`, `Content-Range`,
//! `ETag` (strong or weak), `Last-Modified` and `Location`; and hands back the body, identity,
//! chunked or close-delimited, as an [`embedded_io_async::Read`]. Redirects are not followed:
//! a 3xx comes back with its `location` for the caller to judge.
//!
//! Bounds (each a named constant or an [`Options`] field): the request and the response head
//! fit in the client's buffer (`BUF` bytes, [`DEFAULT_BUF`]); at most
//! [`head::MAX_HEADER_FIELDS`] fields and [`MAX_INTERIM`] 1xx answers; chunk-size lines of at
//! most [`MAX_CHUNK_LINE`] bytes and trailers of at most [`MAX_TRAILER`]; bodies of at most
//! [`Options::max_body`]. Waits: connecting within [`Options::connect_timeout`], sending within
//! [`Options::send_timeout`], the whole head within [`Options::head_timeout`], each body read
//! within [`Options::read_timeout`], and everything before [`GetOptions::deadline`] if given.

pub mod head;
pub mod url;

use core::fmt;

use embassy_time::with_deadline;
use embedded_io_async::{ErrorKind, Read, Write};

pub use embassy_time::{Duration, Instant};
pub use head::{ContentRange, ETag, Head, HeadError, Text};
pub use url::{Url, UrlError};

/// Default size of the client's buffer (the request, then the response head). ESP-IDF's
/// esp_http_client reads the head into `buffer_size` bytes, 512 by default
/// (`esp_http_client.c`, `DEFAULT_HTTP_BUF_SIZE`); we allow more for long `ETag`s and
/// `Location`s.
pub const DEFAULT_BUF: usize = 4096;
/// Interim (1xx) answers skipped before the real one (as the std client).
pub const MAX_INTERIM: usize = 8;
/// Longest chunk-size line, extensions included (as the std client).
pub const MAX_CHUNK_LINE: usize = 1024;
/// Longest trailer section after the last chunk.
pub const MAX_TRAILER: usize = 4096;
/// Default body bound: the std client's `MAX_SOURCE_LEN` (128 MiB), far above any ESP32 flash.
pub const DEFAULT_MAX_BODY: u64 = 128 << 20;
/// Default minimum average body rate and its window: the std client's `low_speed_limit` and
/// `low_speed_time` defaults (curl's `--speed-limit` / `--speed-time`), 1024 B/s over 30 s.
pub const DEFAULT_LOW_SPEED_LIMIT: u64 = 1024;
pub const DEFAULT_LOW_SPEED_TIME: Duration = Duration::from_secs(30);
/// The `User-Agent` sent.
pub const USER_AGENT: &str = "ota-net/0.1";
/// After the last body byte the client closes its side and waits this long at most for the
/// server to acknowledge (so that no half-open connection is left behind).
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Why a connection could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The host name has no address (or the resolver failed).
    Dns,
    /// The host answered with a reset (nothing listens on the port).
    Refused,
    /// No route to the host (no address configured, no gateway).
    NoRoute,
    /// The connector's own wait ran out.
    TimedOut,
    /// No socket free, or another local reason.
    Local,
    /// `https://` could not be opened (the connector speaks no TLS, no CA is pinned, or the
    /// handshake or the server's certificate failed).
    Tls(TlsFailure),
}

/// Why a TLS connection was not opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// This connector speaks no TLS (ota-net built without the `tls` feature, or a plain
    /// connector).
    Unsupported,
    /// No CA is pinned: this client never connects unverified.
    NoPinnedCa,
    /// The pinned CA is larger than the connector keeps, or is not one DER certificate.
    BadPinnedCa,
    /// The URL names an IP literal: the certificate is checked against a DNS name only.
    IpLiteral,
    /// The server's certificate is not signed by the pinned CA, is outside its validity, or
    /// does not name the host.
    Certificate,
    /// The server's handshake signature does not verify with its certificate's key.
    Signature,
    /// The server ended the handshake with this TLS alert (RFC 8446 §6).
    Alert(u8),
    /// The connection failed during the handshake.
    Io,
    /// The server spoke something this client does not accept (no TLS 1.3, an unsupported
    /// cipher suite or signature scheme, a malformed record).
    Protocol,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::Unsupported => f.write_str("this build's connector speaks no TLS"),
            TlsFailure::NoPinnedCa => f.write_str(
                "no pinned CA (set `cert`/`ca_pem`): https is never fetched unverified on this stack",
            ),
            TlsFailure::BadPinnedCa => f.write_str("the pinned CA is not one DER certificate that fits"),
            TlsFailure::IpLiteral => f.write_str(
                "the URL names an IP address: the server certificate is checked against a DNS name",
            ),
            TlsFailure::Certificate => f.write_str(
                "the server certificate is not signed by the pinned CA, is not valid now, or does not name the host",
            ),
            TlsFailure::Signature => f.write_str("the server's handshake signature does not verify"),
            TlsFailure::Alert(d) => write!(f, "the server sent TLS alert {d}"),
            TlsFailure::Io => f.write_str("the connection failed during the TLS handshake"),
            TlsFailure::Protocol => f.write_str(
                "the server's TLS is not accepted (TLS 1.3 with AES-128-GCM-SHA256 and ECDSA P-256 only)",
            ),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectError::Dns => "the host name did not resolve",
            ConnectError::Refused => "connection refused",
            ConnectError::NoRoute => "no route to the host",
            ConnectError::TimedOut => "connecting timed out",
            ConnectError::Local => "no local socket for the connection",
            ConnectError::Tls(t) => return write!(f, "TLS: {t}"),
        })
    }
}

/// A connection the client can close when a body is complete.
#[allow(async_fn_in_trait)]
pub trait Connection: Read + Write {
    /// Closes the sending side and waits (bounded by the client) until the peer has seen it;
    /// a connection that needs nothing for that keeps the default.
    async fn close(&mut self) {}

    /// Resets the connection (a download given up before its end) and waits (bounded by the
    /// client) until the reset is sent.
    async fn abort(&mut self) {}
}

/// Opens connections: the embassy-net stack on the chip, a test double on a PC.
#[allow(async_fn_in_trait)]
pub trait Connect {
    type Conn<'a>: Connection
    where
        Self: 'a;
    /// Opens a TCP connection to `host` (a name, an IPv4 literal or an IPv6 literal without
    /// brackets) and `port`.
    async fn connect(&mut self, host: &str, port: u16) -> Result<Self::Conn<'_>, ConnectError>;

    /// Opens a TLS connection to `host` and `port` (an `https://` URL), the server's
    /// certificate checked against the pinned CA and `host`. A connector without TLS keeps the
    /// default, which refuses.
    async fn connect_tls(&mut self, host: &str, port: u16) -> Result<Self::Conn<'_>, ConnectError> {
        let _ = (host, port);
        Err(ConnectError::Tls(TlsFailure::Unsupported))
    }

    /// Pins the CA (one DER certificate) that [`Connect::connect_tls`] verifies servers with,
    /// or unpins it (`None`: TLS is then refused). A connector without TLS keeps the default.
    fn pin_ca(&mut self, der: Option<&[u8]>) -> Result<(), ConnectError> {
        let _ = der;
        Ok(())
    }
}

/// A borrowed connector connects too (so a client can use one it does not own).
impl<C: Connect> Connect for &mut C {
    type Conn<'a>
        = C::Conn<'a>
    where
        Self: 'a;

    async fn connect(&mut self, host: &str, port: u16) -> Result<C::Conn<'_>, ConnectError> {
        (**self).connect(host, port).await
    }

    async fn connect_tls(&mut self, host: &str, port: u16) -> Result<C::Conn<'_>, ConnectError> {
        (**self).connect_tls(host, port).await
    }

    fn pin_ca(&mut self, der: Option<&[u8]>) -> Result<(), ConnectError> {
        (**self).pin_ca(der)
    }
}

/// What the client was doing when something went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Send,
    Head,
    Body,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connecting",
            Phase::Send => "sending the request",
            Phase::Head => "reading the response head",
            Phase::Body => "reading the body",
        })
    }
}

/// Everything that can go wrong with a `GET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    Url(UrlError),
    /// A request header value (`If-Range`, `If-Match`) with a control character, or a weak
    /// `ETag` in `If-Range` (RFC 9110 §13.1.5 forbids it).
    BadRequestField {
        field: &'static str,
    },
    /// The request does not fit in the client's buffer.
    RequestTooLarge {
        limit: usize,
    },
    Connect(ConnectError),
    /// The connection failed.
    Io {
        phase: Phase,
        kind: ErrorKind,
    },
    /// Nothing arrived (or could be sent) for this long.
    Stalled {
        phase: Phase,
        after: Duration,
    },
    /// The caller's deadline passed.
    Deadline {
        phase: Phase,
    },
    /// The connection closed before the response head was complete.
    ClosedInHead {
        got: usize,
    },
    /// The response head is larger than the client's buffer.
    HeadTooLarge {
        limit: usize,
    },
    /// More than [`MAX_INTERIM`] 1xx answers.
    TooManyInterim,
    Head(HeadError),
    /// A 206 whose range does not start where we asked (or has no `Content-Range`).
    RangeMismatch {
        asked: u64,
        got: Option<u64>,
    },
    /// A 206 whose `Content-Length` disagrees with its `Content-Range`.
    RangeLength {
        range: u64,
        content_length: u64,
    },
    /// The body would be longer than [`Options::max_body`].
    TooLarge {
        limit: u64,
    },
    /// Only `got` body bytes came in a window of `window`: below `limit` bytes per second
    /// ([`Options::low_speed_limit`]); `total` bytes had come before it ended.
    TooSlow {
        got: u64,
        window: Duration,
        limit: u64,
        total: u64,
    },
    /// The connection ended (closed, or `reset`) in the middle of the body: `got` bytes of
    /// `expected` (`None` when the total was unknown: a chunked body cut inside a chunk).
    ShortBody {
        expected: Option<u64>,
        got: u64,
        reset: bool,
    },
    /// A malformed chunk-size line, chunk end or trailer, after `got` body bytes.
    BadChunk {
        got: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Url(e) => write!(f, "bad URL: {e}"),
            Error::BadRequestField { field } => write!(
                f,
                "bad {field} value (control character, or a weak ETag in If-Range)"
            ),
            Error::RequestTooLarge { limit } => {
                write!(
                    f,
                    "the request does not fit in the client's {limit}-byte buffer"
                )
            }
            Error::Connect(e) => write!(f, "{e}"),
            Error::Io { phase, kind } => write!(f, "connection failed while {phase}: {kind:?}"),
            Error::Stalled { phase, after } => write!(
                f,
                "nothing moved for {} ms while {phase}",
                after.as_millis()
            ),
            Error::Deadline { phase } => write!(f, "the deadline passed while {phase}"),
            Error::ClosedInHead { got } => write!(
                f,
                "the server closed the connection after {got} bytes of the response head"
            ),
            Error::HeadTooLarge { limit } => {
                write!(f, "the response head is larger than {limit} bytes")
            }
            Error::TooManyInterim => write!(f, "more than {MAX_INTERIM} interim (1xx) answers"),
            Error::Head(e) => write!(f, "bad response head: {e}"),
            Error::RangeMismatch {
                asked,
                got: Some(g),
            } => write!(
                f,
                "asked for bytes from {asked}, the 206 answer starts at {g}"
            ),
            Error::RangeMismatch { asked, got: None } => write!(
                f,
                "asked for bytes from {asked}, the 206 answer has no Content-Range"
            ),
            Error::RangeLength {
                range,
                content_length,
            } => write!(
                f,
                "Content-Range covers {range} bytes but Content-Length is {content_length}"
            ),
            Error::TooLarge { limit } => write!(f, "the body is longer than {limit} bytes"),
            Error::TooSlow {
                got,
                window,
                limit,
                total,
            } => write!(
                f,
                "transfer too slow: {got} bytes in {} ms, below {limit} bytes/s \
                 (after {total} body bytes)",
                window.as_millis()
            ),
            Error::ShortBody {
                expected,
                got,
                reset,
            } => {
                let how = if *reset { "was reset" } else { "closed" };
                match expected {
                    Some(e) => write!(f, "the connection {how} after {got} of {e} body bytes"),
                    None => write!(
                        f,
                        "the connection {how} inside a chunk after {got} body bytes"
                    ),
                }
            }
            Error::BadChunk { got } => {
                write!(f, "malformed chunked encoding after {got} body bytes")
            }
        }
    }
}

impl core::error::Error for Error {}

impl embedded_io_async::Error for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { kind, .. } => *kind,
            Error::Stalled { .. } | Error::Deadline { .. } | Error::TooSlow { .. } => {
                ErrorKind::TimedOut
            }
            Error::Connect(ConnectError::Refused) => ErrorKind::ConnectionRefused,
            Error::Connect(ConnectError::TimedOut) => ErrorKind::TimedOut,
            Error::Connect(_) => ErrorKind::NotConnected,
            Error::ShortBody { .. } | Error::ClosedInHead { .. } => ErrorKind::ConnectionAborted,
            Error::Url(_) | Error::BadRequestField { .. } | Error::RequestTooLarge { .. } => {
                ErrorKind::InvalidInput
            }
            Error::TooLarge { .. } => ErrorKind::OutOfMemory,
            _ => ErrorKind::InvalidData,
        }
    }
}

impl From<HeadError> for Error {
    fn from(e: HeadError) -> Self {
        Error::Head(e)
    }
}

/// The client's bounds and waits.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    /// The whole response head must arrive within this long of the request being sent.
    pub head_timeout: Duration,
    /// Each body read: a server silent this long is stalled.
    pub read_timeout: Duration,
    pub max_body: u64,
    /// A body slower than this many bytes per second on average over a whole
    /// [`Options::low_speed_time`] window fails with [`Error::TooSlow`] (0: no rate rule), so
    /// that a server trickling a byte now and then cannot hold a download forever.
    pub low_speed_limit: u64,
    pub low_speed_time: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            max_body: DEFAULT_MAX_BODY,
            low_speed_limit: DEFAULT_LOW_SPEED_LIMIT,
            low_speed_time: DEFAULT_LOW_SPEED_TIME,
        }
    }
}

/// What to ask for beyond the plain `GET`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GetOptions<'a> {
    /// `Range: bytes=N-`: the rest of the file from byte N.
    pub range_from: Option<u64>,
    /// `If-Range`: a strong ETag or an HTTP date; the server sends the whole file (200) when
    /// it no longer matches.
    pub if_range: Option<&'a str>,
    /// `If-Match`: the server answers 412 when the file no longer matches.
    pub if_match: Option<&'a str>,
    /// Everything (connect, head, body) must be done by then.
    pub deadline: Option<Instant>,
    /// More header fields, e.g. `("Authorization", "TargetToken abc")`. Names must be tokens,
    /// values free of control characters, and none of the fields the client writes itself
    /// ([`RESERVED_FIELDS`]).
    pub headers: &'a [(&'a str, &'a str)],
}

/// Fields the client writes itself; [`GetOptions::headers`] may not repeat them.
pub const RESERVED_FIELDS: [&str; 9] = [
    "Host",
    "Connection",
    "Range",
    "If-Range",
    "If-Match",
    "Accept-Encoding",
    "Content-Length",
    "Transfer-Encoding",
    "User-Agent",
];

/// The client: a connector and a buffer of `BUF` bytes for the request and the response head.
pub struct Client<C, const BUF: usize = DEFAULT_BUF> {
    connector: C,
    pub options: Options,
    buf: [u8; BUF],
}

/// An answer: the head's facts and the body to read.
pub struct Response<'c, T> {
    pub status: u16,
    /// The body's length when known (`Content-Length`, or the range of a 206 without one).
    pub content_length: Option<u64>,
    pub content_range: Option<ContentRange>,
    pub etag: Option<ETag>,
    pub last_modified: Option<Text<{ head::MAX_DATE }>>,
    pub location: Option<Text<{ head::MAX_LOCATION }>>,
    pub chunked: bool,
    pub body: Body<'c, T>,
}

impl<C: Connect, const BUF: usize> Client<C, BUF> {
    pub fn new(connector: C) -> Self {
        Self::with_options(connector, Options::default())
    }

    pub fn with_options(connector: C, options: Options) -> Self {
        Client {
            connector,
            options,
            buf: [0; BUF],
        }
    }

    pub fn connector(&mut self) -> &mut C {
        &mut self.connector
    }

    /// `GET url`. Any status comes back as a [`Response`]; errors are for what is not HTTP,
    /// not a consistent answer, too large or too slow.
    pub async fn get(
        &mut self,
        url: &str,
        opts: GetOptions<'_>,
    ) -> Result<Response<'_, C::Conn<'_>>, Error> {
        self.request(url, Method::Get, None, opts).await
    }

    /// `PUT` or `POST` `body` (with `Content-Type: content_type`) to `url`, as [`Client::get`]
    /// does a `GET`: the same bounds and waits, any status back as a [`Response`]. The body
    /// is written after the head, so its size is not bounded by the client's buffer.
    pub async fn send(
        &mut self,
        url: &str,
        method: Method,
        content_type: &str,
        body: &[u8],
        opts: GetOptions<'_>,
    ) -> Result<Response<'_, C::Conn<'_>>, Error> {
        self.request(url, method, Some((content_type, body)), opts)
            .await
    }

    async fn request(
        &mut self,
        url: &str,
        method: Method,
        payload: Option<(&str, &[u8])>,
        opts: GetOptions<'_>,
    ) -> Result<Response<'_, C::Conn<'_>>, Error> {
        let u = Url::parse(url).map_err(Error::Url)?;
        let req_len = write_request(&mut self.buf, &u, method, payload, &opts)?;
        let o = self.options;
        let deadline = opts.deadline;
        let conn = timed(o.connect_timeout, deadline, Phase::Connect, async {
            if u.tls {
                self.connector.connect_tls(u.host, u.port).await
            } else {
                self.connector.connect(u.host, u.port).await
            }
        })
        .await?
        .map_err(Error::Connect)?;
        let mut wire = Wire {
            conn,
            buf: &mut self.buf,
            pos: 0,
            end: 0,
            read_timeout: o.read_timeout,
            deadline,
        };
        let (conn, req) = (&mut wire.conn, &wire.buf[..req_len]);
        let send = async move {
            conn.write_all(req).await?;
            if let Some((_, body)) = payload {
                conn.write_all(body).await?;
            }
            conn.flush().await
        };
        timed(o.send_timeout, deadline, Phase::Send, send)
            .await?
            .map_err(|e| Error::Io {
                phase: Phase::Send,
                kind: embedded_io_async::Error::kind(&e),
            })?;
        let head = wire.read_head(o.head_timeout).await?;
        let framing = framing(&head, &opts, o.max_body)?;
        let content_length = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        // A chunked 206 must still carry exactly its range.
        let range_len = match (head.status, head.content_range) {
            (206, Some(ContentRange::Bytes { first, last, .. })) if head.chunked => {
                Some(last - first + 1)
            }
            _ => None,
        };
        let expected = content_length.or(range_len);
        let max_body = range_len.map_or(o.max_body, |r| r.min(o.max_body));
        Ok(Response {
            status: head.status,
            content_length,
            content_range: head.content_range,
            etag: head.etag,
            last_modified: head.last_modified,
            location: head.location,
            chunked: head.chunked,
            body: Body {
                wire,
                framing,
                expected,
                got: 0,
                max_body,
                closed: false,
                rate: (o.low_speed_limit, o.low_speed_time),
                window: (Instant::now(), 0),
            },
        })
    }
}

/// The request methods the client sends: `GET` for downloads, `PUT`/`POST` for the small JSON
/// documents a device reports (hawkBit DDI's `configData` and `feedback`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
}

impl Method {
    /// The method's token on the request line (RFC 9110 §9.3).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
        }
    }
}

/// Writes the request head into `buf` (with `Content-Type` and `Content-Length` for a
/// payload); returns its length.
fn write_request(
    buf: &mut [u8],
    u: &Url<'_>,
    method: Method,
    payload: Option<(&str, &[u8])>,
    opts: &GetOptions<'_>,
) -> Result<usize, Error> {
    if let Some((ct, _)) = payload {
        if ct.is_empty() || ct.bytes().any(|b| b < b' ' || b == 0x7f) {
            return Err(Error::BadRequestField {
                field: "Content-Type",
            });
        }
    }
    for (field, v) in [("If-Range", opts.if_range), ("If-Match", opts.if_match)] {
        if let Some(v) = v {
            if v.is_empty() || v.bytes().any(|b| b < b' ' || b == 0x7f) {
                return Err(Error::BadRequestField { field });
            }
        }
    }
    if opts.if_range.is_some_and(|v| v.starts_with("W/")) {
        return Err(Error::BadRequestField { field: "If-Range" });
    }
    for (name, value) in opts.headers {
        let token = head::is_token(name.as_bytes());
        let reserved = RESERVED_FIELDS.iter().any(|r| r.eq_ignore_ascii_case(name));
        if !token || reserved || value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(Error::BadRequestField {
                field: "an extra header",
            });
        }
    }
    let mut w = Cursor { buf, len: 0 };
    w.put(method.as_str().as_bytes());
    w.put(b" ");
    // The URL has no spaces or controls (checked by Url::parse); non-ASCII is percent-encoded.
    for &b in u.target.as_bytes() {
        if b >= 0x80 {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            w.put(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            w.put(&[b]);
        }
    }
    w.put(b" HTTP/1.1\r\nHost: ");
    if u.is_ipv6() {
        w.put(b"[");
        w.put(u.host.as_bytes());
        w.put(b"]");
    } else {
        w.put(u.host.as_bytes());
    }
    if u.port
        != if u.tls {
            url::HTTPS_PORT
        } else {
            url::HTTP_PORT
        }
    {
        w.put(b":");
        w.num(u64::from(u.port));
    }
    w.put(b"\r\nUser-Agent: ");
    w.put(USER_AGENT.as_bytes());
    w.put(b"\r\nAccept-Encoding: identity\r\nConnection: close\r\n");
    if let Some(n) = opts.range_from {
        w.put(b"Range: bytes=");
        w.num(n);
        w.put(b"-\r\n");
    }
    if let Some(v) = opts.if_range {
        w.put(b"If-Range: ");
        w.put(v.as_bytes());
        w.put(b"\r\n");
    }
    if let Some(v) = opts.if_match {
        w.put(b"If-Match: ");
        w.put(v.as_bytes());
        w.put(b"\r\n");
    }
    for (name, value) in opts.headers {
        w.put(name.as_bytes());
        w.put(b": ");
        w.put(value.trim().as_bytes());
        w.put(b"\r\n");
    }
    if let Some((ct, body)) = payload {
        w.put(b"Content-Type: ");
        w.put(ct.as_bytes());
        w.put(b"\r\nContent-Length: ");
        w.num(body.len() as u64);
        w.put(b"\r\n");
    }
    w.put(b"\r\n");
    w.finish()
}

struct Cursor<'b> {
    buf: &'b mut [u8],
    /// Bytes written; past `buf.len()` means it did not fit.
    len: usize,
}

impl Cursor<'_> {
    fn put(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + b.len()) {
            dst.copy_from_slice(b);
        }
        self.len += b.len();
    }

    fn num(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }

    fn finish(self) -> Result<usize, Error> {
        if self.len > self.buf.len() {
            return Err(Error::RequestTooLarge {
                limit: self.buf.len(),
            });
        }
        Ok(self.len)
    }
}

/// Runs `fut` until `wait` from now or `deadline`, whichever is first.
async fn timed<F: core::future::Future>(
    wait: Duration,
    deadline: Option<Instant>,
    phase: Phase,
    fut: F,
) -> Result<F::Output, Error> {
    let stall_at = Instant::now().checked_add(wait).unwrap_or(Instant::MAX);
    let at = match deadline {
        Some(d) if d < stall_at => d,
        _ => stall_at,
    };
    with_deadline(at, fut).await.map_err(|_| {
        if deadline.is_some_and(|d| d <= stall_at) {
            Error::Deadline { phase }
        } else {
            Error::Stalled { phase, after: wait }
        }
    })
}

/// The connection and the bytes read ahead of the caller.
struct Wire<'b, T> {
    conn: T,
    buf: &'b mut [u8],
    pos: usize,
    end: usize,
    read_timeout: Duration,
    deadline: Option<Instant>,
}

impl<T: Connection> Wire<'_, T> {
    /// One read from the connection into `out` within the read timeout; 0 at end of stream.
    async fn recv(
        conn: &mut T,
        out: &mut [u8],
        wait: Duration,
        deadline: Option<Instant>,
        phase: Phase,
    ) -> Result<usize, Error> {
        timed(wait, deadline, phase, conn.read(out))
            .await?
            .map_err(|e| Error::Io {
                phase,
                kind: embedded_io_async::Error::kind(&e),
            })
    }

    /// Reads the response head into the buffer (skipping 1xx answers); the bytes after it stay
    /// buffered for the body.
    async fn read_head(&mut self, head_timeout: Duration) -> Result<Head, Error> {
        let at = Instant::now()
            .checked_add(head_timeout)
            .unwrap_or(Instant::MAX);
        for _ in 0..=MAX_INTERIM {
            // Move what is left to the front: the head must be contiguous.
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
            let mut scanned = 0;
            let head_end = loop {
                if let Some(e) = head::find_end(&self.buf[..self.end], scanned) {
                    break e;
                }
                scanned = self.end;
                if self.end == self.buf.len() {
                    return Err(Error::HeadTooLarge {
                        limit: self.buf.len(),
                    });
                }
                let left = at.saturating_duration_since(Instant::now());
                let free = &mut self.buf[self.end..];
                let n = match Self::recv(&mut self.conn, free, left, self.deadline, Phase::Head)
                    .await
                {
                    Err(Error::Stalled { phase, .. }) => {
                        return Err(Error::Stalled {
                            phase,
                            after: head_timeout,
                        })
                    }
                    r => r?,
                };
                if n == 0 {
                    return Err(Error::ClosedInHead { got: self.end });
                }
                self.end += n;
            };
            let head = head::parse(&mut self.buf[..head_end])?;
            self.pos = head_end;
            if (100..200).contains(&head.status) {
                continue;
            }
            return Ok(head);
        }
        Err(Error::TooManyInterim)
    }

    /// Body bytes: from the buffer first, then straight from the connection.
    async fn read_some(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        if self.pos < self.end {
            let n = out.len().min(self.end - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        Self::recv(
            &mut self.conn,
            out,
            self.read_timeout,
            self.deadline,
            Phase::Body,
        )
        .await
    }

    /// One byte (for chunk framing); `None` at end of stream.
    async fn byte(&mut self) -> Result<Option<u8>, Error> {
        if self.pos == self.end {
            let n = Self::recv(
                &mut self.conn,
                self.buf,
                self.read_timeout,
                self.deadline,
                Phase::Body,
            )
            .await?;
            self.pos = 0;
            self.end = n;
            if n == 0 {
                return Ok(None);
            }
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(Some(b))
    }
}

/// How the body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    /// Chunked: bytes left in the current chunk, `None` before a chunk-size line.
    Chunked(Option<u64>),
    /// Until the server closes.
    Close,
    Done,
}

fn framing(head: &Head, opts: &GetOptions<'_>, max_body: u64) -> Result<Framing, Error> {
    if head.status == 206 {
        let (first, last) = match head.content_range {
            Some(ContentRange::Bytes { first, last, .. }) => (first, last),
            _ => {
                return Err(Error::RangeMismatch {
                    asked: opts.range_from.unwrap_or(0),
                    got: None,
                })
            }
        };
        if let Some(asked) = opts.range_from {
            if first != asked {
                return Err(Error::RangeMismatch {
                    asked,
                    got: Some(first),
                });
            }
        }
        let range = last - first + 1;
        if let Some(cl) = head.content_length {
            if cl != range {
                return Err(Error::RangeLength {
                    range,
                    content_length: cl,
                });
            }
        }
        if !head.chunked {
            return limited(range, max_body);
        }
    }
    if matches!(head.status, 204 | 304) {
        return Ok(Framing::Length(0));
    }
    if head.chunked {
        return Ok(Framing::Chunked(None));
    }
    match head.content_length {
        Some(n) => limited(n, max_body),
        None => Ok(Framing::Close),
    }
}

fn limited(n: u64, max_body: u64) -> Result<Framing, Error> {
    if n > max_body {
        return Err(Error::TooLarge { limit: max_body });
    }
    Ok(Framing::Length(n))
}

/// A response body; read it to the end (`Ok(0)`) to know it is complete.
pub struct Body<'c, T> {
    wire: Wire<'c, T>,
    framing: Framing,
    expected: Option<u64>,
    got: u64,
    max_body: u64,
    /// The connection was closed after the last byte.
    closed: bool,
    /// The rate rule: bytes per second, window.
    rate: (u64, Duration),
    /// The current window: when it began, bytes since.
    window: (Instant, u64),
}

impl<T: Connection> Body<'_, T> {
    /// Body bytes delivered so far.
    pub fn bytes_read(&self) -> u64 {
        self.got
    }

    /// The rate rule, checked once per window (as the std client's `check_rate`).
    fn check_rate(&mut self) -> Result<(), Error> {
        let (limit, window) = self.rate;
        let (since, got) = self.window;
        let elapsed = Instant::now().saturating_duration_since(since);
        if limit == 0 || elapsed < window || self.framing == Framing::Done {
            return Ok(());
        }
        let needed = u128::from(limit) * u128::from(elapsed.as_millis()) / 1000;
        if u128::from(got) < needed {
            self.framing = Framing::Done;
            return Err(Error::TooSlow {
                got,
                window: elapsed,
                limit,
                total: self.got,
            });
        }
        self.window = (Instant::now(), 0);
        Ok(())
    }

    /// Gives the download up before its end: resets the connection (waiting at most
    /// [`CLOSE_WAIT`] for the reset to go out), so the server stops sending at once. A body just
    /// dropped leaves the server to find out by itself. After the end of the body it does
    /// nothing (the connection is already closed).
    pub async fn abort(&mut self) {
        if !self.closed {
            self.closed = true;
            self.framing = Framing::Done;
            let _ = embassy_time::with_timeout(CLOSE_WAIT, self.wire.conn.abort()).await;
        }
    }

    async fn read_inner(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        loop {
            match self.framing {
                Framing::Done => return Ok(0),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(0);
                }
                Framing::Length(left) => {
                    let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.data(&mut out[..want], self.expected).await?;
                    if n == 0 {
                        return Err(Error::ShortBody {
                            expected: self.expected,
                            got: self.got,
                            reset: false,
                        });
                    }
                    self.framing = Framing::Length(left - n as u64);
                    return Ok(n);
                }
                Framing::Close => {
                    let n = self.wire.read_some(out).await?;
                    if n == 0 {
                        self.framing = Framing::Done;
                    }
                    return Ok(n);
                }
                Framing::Chunked(None) => {
                    let size = self.chunk_size().await?;
                    if size == 0 {
                        if let Some(e) = self.expected.filter(|&e| e != self.got) {
                            return Err(Error::ShortBody {
                                expected: Some(e),
                                got: self.got,
                                reset: false,
                            });
                        }
                        self.trailer().await?;
                        self.framing = Framing::Done;
                        return Ok(0);
                    }
                    if self.got.saturating_add(size) > self.max_body {
                        return Err(Error::TooLarge {
                            limit: self.max_body,
                        });
                    }
                    self.framing = Framing::Chunked(Some(size));
                }
                Framing::Chunked(Some(0)) => {
                    // CRLF (or a bare LF) after the chunk's data.
                    let mut b = self.need_byte().await?;
                    if b == b'\r' {
                        b = self.need_byte().await?;
                    }
                    if b != b'\n' {
                        return Err(Error::BadChunk { got: self.got });
                    }
                    self.framing = Framing::Chunked(None);
                }
                Framing::Chunked(Some(left)) => {
                    let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.data(&mut out[..want], None).await?;
                    if n == 0 {
                        return Err(Error::ShortBody {
                            expected: None,
                            got: self.got,
                            reset: false,
                        });
                    }
                    self.framing = Framing::Chunked(Some(left - n as u64));
                    return Ok(n);
                }
            }
        }
    }

    /// Body data; a reset connection is a short body too (with the bytes that came).
    async fn data(&mut self, out: &mut [u8], expected: Option<u64>) -> Result<usize, Error> {
        match self.wire.read_some(out).await {
            Err(Error::Io {
                kind:
                    ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::NotConnected,
                ..
            }) => Err(Error::ShortBody {
                expected,
                got: self.got,
                reset: true,
            }),
            r => r,
        }
    }

    async fn need_byte(&mut self) -> Result<u8, Error> {
        self.wire.byte().await?.ok_or(Error::ShortBody {
            expected: None,
            got: self.got,
            reset: false,
        })
    }

    /// `chunk-size [ chunk-ext ] CRLF` (RFC 9112 §7.1): hex digits, extensions skipped.
    async fn chunk_size(&mut self) -> Result<u64, Error> {
        let bad = Error::BadChunk { got: self.got };
        let mut size: u64 = 0;
        let mut digits = 0usize;
        let mut in_ext = false;
        for _ in 0..MAX_CHUNK_LINE {
            let b = self.need_byte().await?;
            match b {
                b'\n' => {
                    return if digits == 0 { Err(bad) } else { Ok(size) };
                }
                _ if in_ext => {}
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if !in_ext => {
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .ok_or(bad)?;
                    digits += 1;
                }
                b';' | b' ' | b'\t' | b'\r' if digits > 0 => in_ext = true,
                _ => return Err(bad),
            }
        }
        Err(bad)
    }

    /// Trailer fields after the last chunk, up to the blank line; skipped, bounded.
    async fn trailer(&mut self) -> Result<(), Error> {
        let mut line_len = 0usize;
        for _ in 0..MAX_TRAILER {
            match self.need_byte().await? {
                b'\n' if line_len == 0 => return Ok(()),
                b'\n' => line_len = 0,
                b'\r' => {}
                _ => line_len += 1,
            }
        }
        Err(Error::BadChunk { got: self.got })
    }
}

impl<T: Connection> embedded_io_async::ErrorType for Body<'_, T> {
    type Error = Error;
}

impl<T: Connection> Read for Body<'_, T> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Before reading, so that bytes handed out are never taken back by an error.
        self.check_rate()?;
        let n = self.read_inner(buf).await?;
        if n == 0 && !self.closed {
            self.closed = true;
            let _ = embassy_time::with_timeout(CLOSE_WAIT, self.wire.conn.close()).await;
        }
        self.got += n as u64;
        self.window.1 += n as u64;
        if self.got > self.max_body {
            self.framing = Framing::Done;
            return Err(Error::TooLarge {
                limit: self.max_body,
            });
        }
        Ok(n)
    }
}

impl<T: Connection> Response<'_, T> {
    /// Reads the whole body into `out`; returns its length. Fails with [`Error::TooLarge`]
    /// when `out` is too small.
    pub async fn read_to(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        let mut n = 0;
        loop {
            if n == out.len() {
                let mut probe = [0u8; 1];
                if self.body.read(&mut probe).await? == 0 {
                    return Ok(n);
                }
                return Err(Error::TooLarge {
                    limit: out.len() as u64,
                });
            }
            let k = self.body.read(&mut out[n..]).await?;
            if k == 0 {
                return Ok(n);
            }
            n += k;
        }
    }
}

#[cfg(test)]
mod request_tests {
    use super::*;

    fn head(method: Method, payload: Option<(&str, &[u8])>, opts: &GetOptions<'_>) -> String {
        let mut buf = [0u8; 512];
        let u = Url::parse("http://127.0.0.1:8080/DEFAULT/controller/v1/d/configData").unwrap();
        let n = write_request(&mut buf, &u, method, payload, opts).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn a_put_carries_its_method_content_type_length_and_extra_fields() {
        let fields = [("Authorization", "TargetToken abc")];
        let opts = GetOptions {
            headers: &fields,
            ..GetOptions::default()
        };
        let h = head(Method::Put, Some(("application/json", b"{\"a\":1}")), &opts);
        assert!(
            h.starts_with("PUT /DEFAULT/controller/v1/d/configData HTTP/1.1\r\n"),
            "{h}"
        );
        assert!(h.contains("\r\nAuthorization: TargetToken abc\r\n"), "{h}");
        assert!(h.contains("\r\nContent-Type: application/json\r\n"), "{h}");
        assert!(h.ends_with("\r\nContent-Length: 7\r\n\r\n"), "{h}");
        let g = head(Method::Get, None, &GetOptions::default());
        assert!(g.starts_with("GET "), "{g}");
        assert!(!g.contains("Content-Length"), "{g}");
    }

    #[test]
    fn a_content_type_with_a_line_break_is_refused() {
        let mut buf = [0u8; 512];
        let u = Url::parse("http://h/x").unwrap();
        let r = write_request(
            &mut buf,
            &u,
            Method::Post,
            Some(("a\r\nX-Evil: 1", b"")),
            &GetOptions::default(),
        );
        assert_eq!(
            r,
            Err(Error::BadRequestField {
                field: "Content-Type"
            })
        );
    }
}
