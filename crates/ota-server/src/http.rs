//! The request handler: GET and HEAD of files and of the catalogue, with Content-Length,
//! Accept-Ranges, single ranges (206/416; multi-range → 200 whole), strong ETags, Last-Modified,
//! If-Match / If-None-Match / If-Modified-Since / If-Range, and one access-log line per request
//! written when the body is done (bytes actually sent and the duration included).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::catalogue::CatalogueDoc;
use crate::local::{Facts, FileBody, LocalDir, OpenError, OpenFile, PathError};
use crate::range::{self, RangeRequest};
use crate::s3::{S3Error, S3Object, S3Store};
use ota_catalogue::CATALOGUE_PATH;
use ota_core::image::Hex;

pub type RespBody = UnsyncBoxBody<Bytes, io::Error>;

/// Where files come from.
pub enum Backend {
    Dir(Arc<LocalDir>),
    S3(Arc<S3Store>),
}

/// Counters for the whole server.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub conns: Arc<crate::conns::ConnStats>,
}

/// Everything a request needs.
pub struct State {
    pub backend: Backend,
    pub catalogue: Arc<RwLock<Arc<CatalogueDoc>>>,
    pub access_log: bool,
    pub stats: Arc<Stats>,
    /// `--fleet`: DDI and admin routes.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// What a request resolved to, before conditionals and ranges.
struct Rep {
    len: u64,
    etag: String,
    modified: Option<SystemTime>,
    content_type: &'static str,
    cache_control: Option<&'static str>,
    source: Source,
}

enum Source {
    File(OpenFile, Arc<Facts>),
    Bytes(Bytes),
    S3(S3Object),
}

/// Longest request target written to the access log (a target can be as long as the head).
const MAX_LOGGED_TARGET: usize = 1024;
const OCTET_STREAM: &str = "application/octet-stream";
const JSON: &str = "application/json";

fn empty() -> RespBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<RespBody> {
    let mut body = msg.into();
    body.push('\n');
    let len = body.len();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

fn get(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Handle one request; never fails (errors are responses). `busy` marks the connection busy
/// until the response body is done.
pub async fn handle<B>(
    state: Arc<State>,
    req: Request<B>,
    peer: SocketAddr,
    busy: Option<crate::conns::Busy>,
) -> Response<RespBody>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let start = Instant::now();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().to_string(), |p| p.to_string());
    let target = match target.char_indices().nth(MAX_LOGGED_TARGET) {
        Some((i, _)) => format!("{}…({} bytes)", &target[..i], target.len()),
        None => target,
    };
    let line = format!("{} {} {:?}", req.method(), target, req.version());
    let resp = match &state.fleet {
        Some(f) if f.owns(req.uri().path()) => f.handle(req).await,
        _ => respond(&state, &req).await,
    };
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let logged = LoggedBody {
        inner: body,
        sent: 0,
        start,
        peer,
        line,
        status: status.as_u16(),
        state: state.clone(),
        done: false,
        busy,
    };
    Response::from_parts(parts, logged.boxed_unsync())
}

async fn respond<B>(state: &State, req: &Request<B>) -> Response<RespBody> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} not allowed: only GET and HEAD", req.method()),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let path = req.uri().path();
    let rep = if path == CATALOGUE_PATH {
        let doc = match &state.backend {
            Backend::Dir(_) => state
                .catalogue
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            Backend::S3(s3) => match s3.catalogue().await {
                Ok(d) => d,
                Err(e) => return s3_error_response(e),
            },
        };
        Rep {
            len: doc.json.len() as u64,
            etag: doc.etag.clone(),
            modified: Some(doc.modified),
            content_type: JSON,
            cache_control: Some("no-cache"),
            source: Source::Bytes(doc.json.clone()),
        }
    } else {
        match lookup(state, path).await {
            Ok(rep) => rep,
            Err(resp) => return resp,
        }
    };
    conditional_response(rep, req.headers(), head).await
}

async fn lookup(state: &State, path: &str) -> Result<Rep, Response<RespBody>> {
    match &state.backend {
        Backend::Dir(dir) => {
            let d = dir.clone();
            let p = path.to_string();
            let opened = tokio::task::spawn_blocking(move || d.open(&p))
                .await
                .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            let f = opened.map_err(|e| open_error_response(path, e))?;
            let facts = dir.facts(&f).await.map_err(|e| {
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, e);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            })?;
            Ok(Rep {
                len: facts.version.size,
                etag: format!("\"{}\"", Hex(&facts.sha256)),
                modified: facts.modified,
                content_type: OCTET_STREAM,
                cache_control: None,
                source: match &facts.content {
                    Some(b) => Source::Bytes(b.clone()),
                    None => Source::File(f, facts.clone()),
                },
            })
        }
        Backend::S3(s3) => {
            let obj = s3.head(path).await.map_err(s3_error_response)?;
            Ok(Rep {
                len: obj.size,
                etag: obj.etag.clone(),
                modified: obj.modified,
                content_type: OCTET_STREAM,
                cache_control: None,
                source: Source::S3(obj),
            })
        }
    }
}

/// The response for a file that cannot be served: 404 for missing files and anything that is
/// not a regular file, 403 for paths that leave the folder or that we may not read, 414 for a
/// path too long, 400 for bad encoding, 503 when out of descriptors, 500 otherwise.
fn open_error_response(path: &str, e: OpenError) -> Response<RespBody> {
    let shown = || {
        let mut p: String = path.chars().take(80).collect();
        if p.len() < path.len() {
            p.push('…');
        }
        p
    };
    match e {
        OpenError::NotFound => text(StatusCode::NOT_FOUND, format!("{}: not found", shown())),
        OpenError::NotRegular(_) => text(StatusCode::NOT_FOUND, format!("{}: {e}", shown())),
        OpenError::Path(PathError::BadEncoding(_)) => text(StatusCode::BAD_REQUEST, e.to_string()),
        OpenError::Path(PathError::TooLong(_)) => text(StatusCode::URI_TOO_LONG, e.to_string()),
        OpenError::Path(_) | OpenError::Outside(_) => text(StatusCode::FORBIDDEN, e.to_string()),
        OpenError::Denied => text(StatusCode::FORBIDDEN, format!("{}: {e}", shown())),
        OpenError::Io(ref io)
            if matches!(io.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) =>
        {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("{}: {e}", shown()));
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        OpenError::Io(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", shown()),
        ),
    }
}

/// The response for an S3 failure: 404 for a missing key, 503 (with Retry-After) when the
/// store cannot be reached or fails.
pub fn s3_error_response(e: S3Error) -> Response<RespBody> {
    match e {
        S3Error::NotFound(k) => text(StatusCode::NOT_FOUND, format!("{k}: not found")),
        S3Error::BadPath(p) => text(StatusCode::FORBIDDEN, p),
        other => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, other.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

fn validators(h: &mut HeaderMap, rep: &Rep) {
    if let Ok(v) = HeaderValue::from_str(&rep.etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(m) = rep.modified {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(m)) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    if let Some(cc) = rep.cache_control {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

async fn conditional_response(rep: Rep, h: &HeaderMap, head: bool) -> Response<RespBody> {
    // RFC 9110 §13.2.2: If-Match, then If-None-Match (or If-Modified-Since), then Range/If-Range.
    if let Some(im) = get(h, header::IF_MATCH) {
        if !range::any_match(im, &rep.etag) {
            let mut r = text(
                StatusCode::PRECONDITION_FAILED,
                format!("If-Match {im} does not match the current ETag {}", rep.etag),
            );
            validators(r.headers_mut(), &rep);
            return r;
        }
    }
    let not_modified = match get(h, header::IF_NONE_MATCH) {
        Some(inm) => range::none_match(inm, &rep.etag),
        None => get(h, header::IF_MODIFIED_SINCE)
            .is_some_and(|ims| range::not_modified_since(ims, rep.modified)),
    };
    if not_modified {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        validators(r.headers_mut(), &rep);
        return r;
    }
    let mut wanted = match get(h, header::RANGE) {
        Some(r) => range::parse_range(r, rep.len),
        None => RangeRequest::Whole,
    };
    if wanted != RangeRequest::Whole {
        if let Some(ir) = get(h, header::IF_RANGE) {
            if !range::if_range_holds(ir, &rep.etag, rep.modified) {
                wanted = RangeRequest::Whole;
            }
        }
    }
    let (status, start, end) = match wanted {
        RangeRequest::Whole | RangeRequest::Multiple => (StatusCode::OK, 0, rep.len),
        RangeRequest::Single { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        RangeRequest::Unsatisfiable => {
            let mut r = text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range not satisfiable: the file has {} bytes", rep.len),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", rep.len)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            validators(r.headers_mut(), &rep);
            return r;
        }
    };
    let body = if head {
        empty()
    } else {
        match open_body(&rep, start, end).await {
            Ok(b) => b,
            Err(resp) => return resp,
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let hm = r.headers_mut();
    validators(hm, &rep);
    hm.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(rep.content_type),
    );
    hm.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{}", start, end - 1, rep.len)) {
            hm.insert(header::CONTENT_RANGE, v);
        }
    }
    r
}

async fn open_body(rep: &Rep, start: u64, end: u64) -> Result<RespBody, Response<RespBody>> {
    Ok(match &rep.source {
        Source::File(f, facts) => FileBody::new(f, facts, start, end).boxed_unsync(),
        Source::Bytes(b) => {
            let slice = b.slice(start as usize..end as usize);
            Full::new(slice)
                .map_err(|never| match never {})
                .boxed_unsync()
        }
        Source::S3(obj) => obj.body(start, end).await.map_err(s3_error_response)?,
    })
}

/// Counts the bytes that really went out and writes the access-log line when the body ends
/// (or is dropped because the client went away).
struct LoggedBody {
    inner: RespBody,
    sent: u64,
    start: Instant,
    peer: SocketAddr,
    line: String,
    status: u16,
    state: Arc<State>,
    done: bool,
    busy: Option<crate::conns::Busy>,
}

impl LoggedBody {
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.busy = None;
        self.state.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.state
            .stats
            .bytes
            .fetch_add(self.sent, Ordering::Relaxed);
        if self.state.access_log {
            eprintln!(
                "{}",
                access_line(
                    self.peer,
                    SystemTime::now(),
                    &self.line,
                    self.status,
                    self.sent,
                    self.start.elapsed().as_secs_f64() * 1000.0
                )
            );
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `127.0.0.1 - - [18/Jun/2026 10:00:00] "GET /x.bin HTTP/1.1" 200 - 1048576 1.2ms`: the line
/// `python -m http.server` prints, plus the bytes sent and the duration.
pub fn access_line(
    peer: SocketAddr,
    now: SystemTime,
    request: &str,
    status: u16,
    bytes: u64,
    ms: f64,
) -> String {
    format!(
        "{} - - [{}] \"{}\" {} - {} {:.1}ms",
        peer.ip(),
        log_date(now),
        request.escape_debug(),
        status,
        bytes,
        ms
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `dd/Mon/YYYY HH:MM:SS` in UTC (http.server's `log_date_time_string`).
pub fn log_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{:02}/{}/{} {:02}:{:02}:{:02}",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_date_matches_known_dates() {
        let t = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(log_date(t), "06/Nov/1994 08:49:37");
        let t = httpdate::parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT").unwrap();
        assert_eq!(log_date(t), "29/Feb/2028 23:59:59");
        assert_eq!(log_date(SystemTime::UNIX_EPOCH), "01/Jan/1970 00:00:00");
    }

    #[test]
    fn access_line_has_python_form_plus_bytes_and_time() {
        let t = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let l = access_line(
            "127.0.0.1:5000".parse().unwrap(),
            t,
            "GET /x.bin HTTP/1.1",
            200,
            1024,
            1.25,
        );
        assert_eq!(
            l,
            "127.0.0.1 - - [06/Nov/1994 08:49:37] \"GET /x.bin HTTP/1.1\" 200 - 1024 1.2ms"
        );
        // a request line cannot inject a fake log line
        let l = access_line(
            "127.0.0.1:5000".parse().unwrap(),
            t,
            "GET /a\n127.0.0.1 - - fake HTTP/1.1",
            404,
            0,
            0.0,
        );
        assert!(!l.contains('\n'));
    }
}
