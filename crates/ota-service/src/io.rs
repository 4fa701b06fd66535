//! The service's only I/O: a [`Transport`] that opens a URI (optionally from a byte, with a
//! validator) and hands back an async [`Body`], and a [`Clock`]. The items are `async` code over
//! these two traits; a driver provides them:
//!
//! - the std driver (`crate::std_driver`): `file://` on an SD card folder, `http(s)://` with the
//!   blocking client of `source/http.rs`, the system clock; its futures complete at once, so
//!   [`block_on`] runs them with no runtime;
//! - an embassy driver: embassy-net sockets and an async HTTP/1.1 client, `embassy-time`, run on
//!   embassy's executor. [`judge_http_answer`] and [`request_headers`] do the HTTP part that
//!   does not depend on the client, so such a client implements [`Transport`] in a few lines.
//!
//! The traits are object safe (boxed futures, `alloc`): the upgrade list holds items of
//! different kinds as `Box<dyn UpgradeItem<F>>`, and each hook reaches the driver through
//! `&dyn Transport` / `&dyn Clock`.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::prelude::*;
use crate::source::{SourceError, SourceOptions, ValidatorKind};

/// A boxed future borrowing for `'a` (not `Send`: a service runs on one task).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The body of one opened source, read in chunks.
///
/// A body owns its connection (or file): it lives in the item between `prepare` and
/// `execute`, so it borrows nothing from the transport (`'static`).
pub trait Body {
    /// How many bytes this body promised when it was opened (Content-Length, remaining file
    /// size), if known; it does not shrink as the body is read (the items size their checks
    /// from it after reading a header, as the std driver's sources say).
    fn content_length(&self) -> Option<u64>;
    /// Reads up to `buf.len()` bytes; `Ok(0)` means the end, and is only returned when all the
    /// promised bytes arrived (a body cut short is [`SourceError::ShortBody`]). An empty `buf`
    /// also returns `Ok(0)`.
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, Result<usize, SourceError>>;
    /// The URI this body was opened from.
    fn uri(&self) -> &str;
}

/// What an item asks the transport for.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub uri: &'a str,
    /// The first byte wanted (`Range: bytes=start-` when > 0; a file is skipped forward).
    pub start: u64,
    /// `If-Range: <validator>` (sent only with a range): a server whose file changed answers
    /// 200 with the whole new file.
    pub if_range: Option<&'a str>,
    /// `If-Match: <etag>`: a server whose file changed answers 412.
    pub if_match: Option<&'a str>,
    /// Timeouts, rate rule, deadline, pinned CA, user agent.
    pub opts: &'a SourceOptions,
}

impl<'a> Request<'a> {
    /// The whole file, unconditionally.
    pub fn whole(uri: &'a str, opts: &'a SourceOptions) -> Self {
        Request {
            uri,
            start: 0,
            if_range: None,
            if_match: None,
            opts,
        }
    }
}

/// A source opened by [`Transport::open`].
pub struct Opened {
    /// The bytes from the requested start on (when `honoured`) or from byte 0.
    pub body: Box<dyn Body>,
    /// `true` when the body starts at the requested byte (HTTP 206, a file, or a request from
    /// byte 0), `false` when the server ignored `Range` or the `If-Range` validator no longer
    /// matched and it sent the whole file (HTTP 200).
    pub honoured: bool,
    /// The `ETag` header of the response, if any.
    pub etag: Option<String>,
    /// The `Last-Modified` header of the response, if any.
    pub last_modified: Option<String>,
    /// The length of the whole file: the total of `Content-Range` on a 206, `Content-Length`
    /// on a 200, the size of a file. `None` when the server did not say.
    pub total_length: Option<u64>,
}

impl Opened {
    /// The validator to send back in `If-Range`: a strong `ETag` (a weak `W/` one may not be
    /// used there, RFC 9110 §13.1.5), else `Last-Modified`.
    pub fn validator(&self) -> Option<(ValidatorKind, &str)> {
        validator_of(self.etag.as_deref(), self.last_modified.as_deref())
    }
}

/// See [`Opened::validator`].
pub(crate) fn validator_of<'v>(
    etag: Option<&'v str>,
    last_modified: Option<&'v str>,
) -> Option<(ValidatorKind, &'v str)> {
    match (etag, last_modified) {
        (Some(e), _) if !e.starts_with("W/") && !e.is_empty() => Some((ValidatorKind::ETag, e)),
        (_, Some(lm)) if !lm.is_empty() => Some((ValidatorKind::LastModified, lm)),
        _ => None,
    }
}

/// Opens sources for the items: `file://`, `http://`, `https://` or whatever the driver knows.
/// A URI it cannot open is [`SourceError::UnsupportedScheme`].
///
/// The service checks the item's deadline before every open and retries what
/// [`SourceError::is_transient`] says may pass; the transport bounds every wait itself, as the
/// std client does: connecting and each read within `opts.timeout` ([`SourceError::Timeout`]),
/// the body's average rate (`opts.low_speed_limit` over `opts.low_speed_time`,
/// [`SourceError::TooSlow`]) and its end by `opts.deadline` on the run's clock
/// ([`SourceError::DeadlineExceeded`]).
pub trait Transport {
    fn open<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Opened, SourceError>>;

    /// Sends a small document (`PUT`/`POST`, the reports of a DDI item) and waits for the
    /// answer's status, within the same bounds as [`Transport::open`]; the answer's body is
    /// not read. A 2xx is `Ok(status)`; any other status is [`SourceError::HttpStatus`]. No
    /// redirect is followed. A transport that cannot send (a file system) keeps the default:
    /// [`SourceError::Unsupported`].
    fn send<'a>(&'a self, req: Upload<'a>) -> BoxFuture<'a, Result<u16, SourceError>> {
        Box::pin(core::future::ready(Err(SourceError::Unsupported {
            uri: req.uri.to_string(),
            detail: format!(
                "this transport cannot send {} requests",
                req.method.as_str()
            ),
        })))
    }
}

/// The methods of [`Upload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadMethod {
    Put,
    Post,
}

impl UploadMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadMethod::Put => "PUT",
            UploadMethod::Post => "POST",
        }
    }
}

/// A document sent with [`Transport::send`].
#[derive(Clone, Copy, Debug)]
pub struct Upload<'a> {
    pub method: UploadMethod,
    pub uri: &'a str,
    /// The `Content-Type` of `body` (`application/json` for DDI).
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// Timeouts, deadline, pinned CA, user agent, `Authorization`.
    pub opts: &'a SourceOptions,
}

/// Time, in milliseconds from any origin the driver picks (a run uses one clock throughout).
pub trait Clock {
    fn now_ms(&self) -> u64;
    /// Waits `ms` milliseconds (the backoff between retries).
    fn sleep_ms(&self, ms: u64) -> BoxFuture<'_, ()>;
}

/// Runs a future to completion on this thread: a poll loop with a no-op waker. Meant for
/// futures whose I/O is blocking and completes at once (the std driver's): a future that
/// returns `Pending` is polled again after `idle()` (a yield, or nothing).
pub fn block_on_with<T>(fut: impl Future<Output = T>, mut idle: impl FnMut()) -> T {
    let mut fut = core::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        idle();
    }
}

/// [`block_on_with`], yielding the thread between polls when `std` is there.
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    block_on_with(fut, || {
        #[cfg(feature = "std")]
        std::thread::yield_now();
    })
}

/// HTTP 206 Partial Content: the server honoured a `Range` request (RFC 9110 §15.3.7).
pub const HTTP_PARTIAL_CONTENT: u16 = 206;
/// HTTP 416 Range Not Satisfiable (RFC 9110 §15.5.17): nothing at or after the requested byte.
pub const HTTP_RANGE_NOT_SATISFIABLE: u16 = 416;

/// The header fields a request for `req` carries besides `Host` and the client's own:
/// `If-Match`, and with a start above 0 `Range: bytes=start-` and `If-Range`.
pub fn request_headers(req: &Request<'_>) -> Vec<(&'static str, String)> {
    let mut extra = Vec::new();
    if let Some(tag) = req.if_match {
        extra.push(("If-Match", tag.to_string()));
    }
    if req.start > 0 {
        extra.push(("Range", format!("bytes={}-", req.start)));
        if let Some(v) = req.if_range {
            extra.push(("If-Range", v.to_string()));
        }
    }
    extra
}

/// What an HTTP client saw of a response: status and the header fields the service reads.
/// Redirects are the client's business: a 3xx reaching here is an error.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpHead<'a> {
    pub status: u16,
    /// The reason phrase, for error messages.
    pub reason: &'a str,
    pub content_length: Option<u64>,
    pub content_range: Option<&'a str>,
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    /// Whether the answer had a `Location` field (a 3xx with one means too many redirects).
    pub location: bool,
}

/// How an HTTP answer to `req` is to be read, when it is one: the fields of [`Opened`] but the
/// body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpVerdict {
    pub honoured: bool,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub total_length: Option<u64>,
}

impl HttpVerdict {
    /// The [`Opened`] for this verdict and `body`.
    pub fn with_body(self, body: Box<dyn Body>) -> Opened {
        Opened {
            body,
            honoured: self.honoured,
            etag: self.etag,
            last_modified: self.last_modified,
            total_length: self.total_length,
        }
    }
}

/// Judges an HTTP answer to `req` (any client's): an error for a 3xx, a 4xx/5xx, a 416 with the
/// file's length, or a 206 for another start than the one asked; otherwise whether the range was
/// honoured, the validators, and the length of the whole file.
pub fn judge_http_answer(
    req: &Request<'_>,
    head: &HttpHead<'_>,
) -> Result<HttpVerdict, SourceError> {
    let uri = req.uri;
    let start = req.start;
    let status = head.status;
    if (300..400).contains(&status) {
        return Err(if head.location {
            SourceError::TooManyRedirects {
                uri: uri.to_string(),
                max: req.opts.max_redirects,
            }
        } else {
            SourceError::HttpStatus {
                uri: uri.to_string(),
                status,
                reason: head.reason.to_string(),
            }
        });
    }
    if status == HTTP_RANGE_NOT_SATISFIABLE && start > 0 {
        // `Content-Range: bytes */N` says how long the file is now.
        if let Some(length) = head
            .content_range
            .filter(|v| {
                v.trim()
                    .strip_prefix("bytes")
                    .is_some_and(|r| r.trim_start().starts_with('*'))
            })
            .and_then(content_range_total)
        {
            return Err(SourceError::RangeNotSatisfiable {
                uri: uri.to_string(),
                start,
                length,
            });
        }
    }
    if !(200..300).contains(&status) {
        return Err(SourceError::HttpStatus {
            uri: uri.to_string(),
            status,
            reason: head.reason.to_string(),
        });
    }
    let honoured = start > 0 && status == HTTP_PARTIAL_CONTENT;
    if honoured {
        let range = head.content_range.unwrap_or("");
        if content_range_start(range) != Some(start) {
            return Err(SourceError::RangeMismatch {
                uri: uri.to_string(),
                requested: start,
                got: range.to_string(),
            });
        }
    }
    let total_length = if honoured {
        head.content_range.and_then(content_range_total)
    } else if status == 200 {
        head.content_length
    } else {
        None
    };
    let field = |v: Option<&str>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    Ok(HttpVerdict {
        honoured: honoured || start == 0,
        etag: field(head.etag),
        last_modified: field(head.last_modified),
        total_length,
    })
}

/// The first byte of a `Content-Range: bytes a-b/total` header.
pub fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (first, _) = rest.split_once('-')?;
    first.trim().parse().ok()
}

/// The total of a `Content-Range: bytes a-b/total` header (`None` for `*`).
pub fn content_range_total(value: &str) -> Option<u64> {
    let (_, total) = value.trim().rsplit_once('/')?;
    total.trim().parse().ok()
}

/// A body over bytes in memory (a test transport, a catalogue compiled in).
pub struct MemBody {
    uri: String,
    data: Vec<u8>,
    pos: usize,
}

impl MemBody {
    pub fn new(uri: impl Into<String>, data: Vec<u8>) -> Self {
        MemBody {
            uri: uri.into(),
            data,
            pos: 0,
        }
    }
}

impl Body for MemBody {
    fn content_length(&self) -> Option<u64> {
        Some(self.data.len() as u64)
    }
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, Result<usize, SourceError>> {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Box::pin(core::future::ready(Ok(n)))
    }
    fn uri(&self) -> &str {
        &self.uri
    }
}

/// A [`Body`] over any `embedded_io_async::Read` (a TCP socket of embassy-net, the body reader
/// of an async HTTP client), holding it to the answer's `Content-Length`: never more bytes than
/// promised, and an end before them is [`SourceError::ShortBody`]. Read errors are
/// [`SourceError::Network`] (transient) with the `embedded_io` error kind.
pub struct ReadBody<R> {
    uri: String,
    reader: R,
    length: Option<u64>,
    got: u64,
}

impl<R: embedded_io_async::Read> ReadBody<R> {
    /// The body of `uri`, `length` bytes when the answer said (`Content-Length`).
    pub fn new(uri: impl Into<String>, reader: R, length: Option<u64>) -> Self {
        ReadBody {
            uri: uri.into(),
            reader,
            length,
            got: 0,
        }
    }

    async fn read_bounded(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        let want = match self.length {
            Some(l) => {
                let left = l.saturating_sub(self.got);
                buf.len().min(usize::try_from(left).unwrap_or(usize::MAX))
            }
            None => buf.len(),
        };
        if want == 0 {
            return Ok(0);
        }
        let n = self
            .reader
            .read(&mut buf[..want])
            .await
            .map_err(|e| SourceError::Network {
                uri: self.uri.clone(),
                phase: crate::source::Phase::Read,
                detail: format!("{:?}", embedded_io_async::Error::kind(&e)),
            })?;
        match self.length {
            Some(expected) if n == 0 => Err(SourceError::ShortBody {
                uri: self.uri.clone(),
                expected,
                got: self.got,
            }),
            _ => {
                self.got += n as u64;
                Ok(n)
            }
        }
    }
}

impl<R: embedded_io_async::Read + 'static> Body for ReadBody<R> {
    fn content_length(&self) -> Option<u64> {
        self.length
    }
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, Result<usize, SourceError>> {
        Box::pin(self.read_bounded(buf))
    }
    fn uri(&self) -> &str {
        &self.uri
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start_parses_first_byte() {
        assert_eq!(content_range_start("bytes 100-999/1000"), Some(100));
        assert_eq!(content_range_start(" bytes  7-8/*"), Some(7));
        assert_eq!(content_range_start("bytes */1000"), None);
        assert_eq!(content_range_start(""), None);
    }

    #[test]
    fn content_range_total_parses_the_length() {
        assert_eq!(content_range_total("bytes 100-999/1000"), Some(1000));
        assert_eq!(content_range_total("bytes 100-999/*"), None);
        assert_eq!(content_range_total("bytes 100-999"), None);
    }

    #[test]
    fn a_206_for_another_start_is_a_range_mismatch() {
        let opts = SourceOptions::default();
        let req = Request {
            start: 100,
            ..Request::whole("http://h/x", &opts)
        };
        let head = HttpHead {
            status: 206,
            content_range: Some("bytes 0-9/10"),
            ..Default::default()
        };
        assert!(matches!(
            judge_http_answer(&req, &head),
            Err(SourceError::RangeMismatch { requested: 100, .. })
        ));
        let ok = HttpHead {
            content_range: Some("bytes 100-199/200"),
            etag: Some(" \"e1\" "),
            ..head
        };
        let v = judge_http_answer(&req, &ok).unwrap();
        assert!(v.honoured);
        assert_eq!(v.total_length, Some(200));
        assert_eq!(v.etag.as_deref(), Some("\"e1\""));
    }

    #[test]
    fn read_body_holds_a_reader_to_its_content_length() {
        static DATA: [u8; 10] = [7; 10];
        let mut buf = [0u8; 64];
        // More bytes than promised: only the promised ones.
        let mut b = ReadBody::new("http://h/x", &DATA[..], Some(6));
        assert_eq!(block_on(b.read(&mut buf)).unwrap(), 6);
        assert_eq!(block_on(b.read(&mut buf)).unwrap(), 0);
        // Fewer: a short body, not an end.
        let mut b = ReadBody::new("http://h/x", &DATA[..], Some(20));
        assert_eq!(block_on(b.read(&mut buf)).unwrap(), 10);
        // What was promised, not what is left.
        assert_eq!(b.content_length(), Some(20));
        assert!(matches!(
            block_on(b.read(&mut buf)),
            Err(SourceError::ShortBody {
                expected: 20,
                got: 10,
                ..
            })
        ));
        // No length: the reader's end is the end.
        let mut b = ReadBody::new("http://h/x", &DATA[..], None);
        assert_eq!(block_on(b.read(&mut buf)).unwrap(), 10);
        assert_eq!(block_on(b.read(&mut buf)).unwrap(), 0);
    }

    #[test]
    fn a_mem_body_keeps_its_promised_length_while_read() {
        let mut b = MemBody::new("mem://x", vec![1; 10]);
        let mut buf = [0u8; 4];
        assert_eq!(block_on(b.read(&mut buf)).unwrap(), 4);
        assert_eq!(b.content_length(), Some(10));
    }

    #[test]
    fn range_headers_only_with_a_start() {
        let opts = SourceOptions::default();
        let whole = Request {
            if_range: Some("\"e\""),
            ..Request::whole("http://h/x", &opts)
        };
        assert!(request_headers(&whole).is_empty());
        let ranged = Request { start: 5, ..whole };
        assert_eq!(
            request_headers(&ranged),
            vec![
                ("Range", "bytes=5-".to_string()),
                ("If-Range", "\"e\"".to_string())
            ]
        );
    }
}
