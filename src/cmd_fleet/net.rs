//! The fleet simulation's network: the device's own async HTTP/1.1 client
//! ([`ota_net::http::Client`]) over tokio's non-blocking `TcpStream`, as an
//! [`ota_service::io::Transport`], and a [`Clock`] on tokio's timers. Thousands of devices
//! share one current-thread runtime (`LocalSet`, since the items are `!Send`).
//!
//! The client's body borrows the client, while a service [`Body`] must own its connection; so
//! each open spawns a small local task that owns the client, sends the answer's head back, and
//! then pumps the body through a bounded channel ([`CHUNKS_IN_FLIGHT`] chunks of at most
//! [`CHUNK`] bytes). A body dropped early (an item that peeked at a header and stopped) makes
//! the task reset the connection.
//!
//! Every wait has a deadline: the client bounds connecting, sending, the head and each body
//! read by the request's `timeout`, the body's rate by `low_speed_limit` over
//! `low_speed_time_ms`, and all of it by the item's deadline. The client's timers are
//! `embassy-time`'s std driver, whose queue holds [`TIMER_QUEUE`] timers: the simulation keeps
//! its open connections below that ([`MAX_CONCURRENCY`]).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use embedded_io_async::{ErrorType, Read, Write};
use ota_net::http::{self, Client, ConnectError, ContentRange, GetOptions};
use ota_service::io::{
    judge_http_answer, Body, BoxFuture, Clock, HttpHead, Opened, Request, Transport, Upload,
    UploadMethod,
};
use ota_service::source::{Phase, SourceError, SourceOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Body bytes handed from the connection's task to the device at a time (the client's own
/// buffer size, [`http::DEFAULT_BUF`]).
pub const CHUNK: usize = http::DEFAULT_BUF;
/// Chunks buffered between the connection's task and the device: the connection reads ahead
/// at most this much.
pub const CHUNKS_IN_FLIGHT: usize = 2;
/// Timers embassy-time's std driver can hold at once (its `generic-queue-128` feature, which
/// ota-net's `sim` feature selects; embassy `embassy-time-queue-utils/src/queue_generic.rs`).
/// A full queue wakes its oldest timer early, which with more waiting tasks than this turns
/// into a busy loop of spurious wake-ups.
pub const TIMER_QUEUE: usize = 128;
/// Devices (hence connections) in flight at most: below [`TIMER_QUEUE`], leaving room for the
/// connections still closing.
pub const MAX_CONCURRENCY: usize = 100;

/// Tokio's TCP stream as the client's connection.
pub struct TcpConn(TcpStream);

impl ErrorType for TcpConn {
    type Error = std::io::Error;
}

impl Read for TcpConn {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, std::io::Error> {
        self.0.read(buf).await
    }
}

impl Write for TcpConn {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, std::io::Error> {
        self.0.write(buf).await
    }
    async fn flush(&mut self) -> Result<(), std::io::Error> {
        self.0.flush().await
    }
}

impl http::Connection for TcpConn {
    async fn close(&mut self) {
        let _ = self.0.shutdown().await;
    }
    async fn abort(&mut self) {
        // SO_LINGER 0: the close when the stream is dropped sends a reset.
        let _ = self.0.set_zero_linger();
    }
}

/// Opens TCP connections with tokio (an IP literal needs no resolver; a host name is resolved
/// on tokio's blocking pool, which the simulation's runtime keeps to one thread).
pub struct TokioConnect;

impl http::Connect for TokioConnect {
    type Conn<'a> = TcpConn;

    async fn connect(&mut self, host: &str, port: u16) -> Result<TcpConn, ConnectError> {
        match TcpStream::connect((host, port)).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Ok(TcpConn(s))
            }
            Err(e) => Err(match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ConnectError::Refused,
                std::io::ErrorKind::TimedOut => ConnectError::TimedOut,
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable => {
                    ConnectError::NoRoute
                }
                _ if host.parse::<std::net::IpAddr>().is_err() => ConnectError::Dns,
                _ => ConnectError::Local,
            }),
        }
    }
}

/// tokio's clock for the service: `now_ms` on embassy-time's clock (the one the client's
/// deadlines are on), sleeps on tokio's timer.
#[derive(Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        http::Instant::now().as_millis()
    }
    fn sleep_ms(&self, ms: u64) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    }
}

/// The answer's head, as the connection's task sends it back.
struct HeadInfo {
    status: u16,
    content_length: Option<u64>,
    content_range: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    location: bool,
}

type Chunk = Result<Vec<u8>, http::Error>;

/// `http://` through [`ota_net::http::Client`] on tokio; counts the body bytes it delivered.
#[derive(Default)]
pub struct NetTransport {
    /// Body bytes delivered to the devices (all bodies, the catalogue's included).
    pub bytes: Rc<Cell<u64>>,
}

impl Transport for NetTransport {
    fn open<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Opened, SourceError>> {
        Box::pin(open(req, self.bytes.clone()))
    }

    /// A `PUT`/`POST` (a DDI item's reports) on its own connection, with the item's
    /// `Authorization`; the answer's body is given up.
    fn send<'a>(&'a self, req: Upload<'a>) -> BoxFuture<'a, Result<u16, SourceError>> {
        Box::pin(send(req))
    }
}

async fn send(req: Upload<'_>) -> Result<u16, SourceError> {
    let uri = req.uri.to_string();
    if !uri.starts_with("http://") {
        return Err(SourceError::UnsupportedScheme { uri });
    }
    let deadline_ms = req.opts.deadline.unwrap_or_else(|| {
        TokioClock
            .now_ms()
            .saturating_add(ota_service::source::duration_ms(req.opts.max_time))
    });
    let mut client: Client<TokioConnect> =
        Client::with_options(TokioConnect, client_options(req.opts));
    let auth = req.opts.authorization.as_ref().map(|a| a.expose());
    let fields: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let method = match req.method {
        UploadMethod::Put => http::Method::Put,
        UploadMethod::Post => http::Method::Post,
    };
    let get = GetOptions {
        deadline: Some(http::Instant::from_millis(deadline_ms)),
        headers: &fields,
        ..GetOptions::default()
    };
    let mut resp = client
        .send(&uri, method, req.content_type, req.body, get)
        .await
        .map_err(|e| source_error(&uri, e, req.opts))?;
    let status = resp.status;
    resp.body.abort().await;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(SourceError::HttpStatus {
            uri,
            status,
            reason: String::new(),
        })
    }
}

fn client_options(o: &SourceOptions) -> http::Options {
    let t = http::Duration::from_millis(ota_service::source::duration_ms(o.timeout).max(1));
    http::Options {
        connect_timeout: t,
        send_timeout: t,
        head_timeout: t,
        read_timeout: t,
        low_speed_limit: o.low_speed_limit,
        low_speed_time: http::Duration::from_millis(ota_service::source::duration_ms(
            o.low_speed_time,
        )),
        ..http::Options::default()
    }
}

async fn open(req: Request<'_>, counter: Rc<Cell<u64>>) -> Result<Opened, SourceError> {
    let uri = req.uri.to_string();
    if !uri.starts_with("http://") {
        return Err(SourceError::UnsupportedScheme { uri });
    }
    let deadline_ms = req.opts.deadline.unwrap_or_else(|| {
        TokioClock
            .now_ms()
            .saturating_add(ota_service::source::duration_ms(req.opts.max_time))
    });
    let (head_tx, head_rx) = oneshot::channel();
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    let task = Pump {
        uri: uri.clone(),
        start: req.start,
        if_range: req.if_range.map(str::to_string),
        if_match: req.if_match.map(str::to_string),
        deadline: http::Instant::from_millis(deadline_ms),
        options: client_options(req.opts),
        authorization: req
            .opts
            .authorization
            .as_ref()
            .map(|a| a.expose().to_string()),
    };
    tokio::task::spawn_local(task.run(head_tx, chunk_tx));
    let head = match head_rx.await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(source_error(&uri, e, req.opts)),
        Err(_) => {
            return Err(SourceError::Network {
                uri,
                phase: Phase::Open,
                detail: "the connection's task ended without an answer".into(),
            })
        }
    };
    let verdict = judge_http_answer(
        &req,
        &HttpHead {
            status: head.status,
            reason: "",
            content_length: head.content_length,
            content_range: head.content_range.as_deref(),
            etag: head.etag.as_deref(),
            last_modified: head.last_modified.as_deref(),
            location: head.location,
        },
    )?;
    Ok(verdict.with_body(Box::new(NetBody {
        uri,
        length: head.content_length,
        got: 0,
        pending: Vec::new(),
        pos: 0,
        rx: chunk_rx,
        opts: req.opts.clone(),
        counter,
        ended: false,
    })))
}

/// One request on its own connection, owned by a local task.
struct Pump {
    uri: String,
    start: u64,
    if_range: Option<String>,
    if_match: Option<String>,
    deadline: http::Instant,
    options: http::Options,
    /// The item's `Authorization` (a DDI token); this transport follows no redirect, so it
    /// goes to the request's own origin only.
    authorization: Option<String>,
}

impl Pump {
    async fn run(
        self,
        head_tx: oneshot::Sender<Result<HeadInfo, http::Error>>,
        chunk_tx: mpsc::Sender<Chunk>,
    ) {
        let mut client: Client<TokioConnect> = Client::with_options(TokioConnect, self.options);
        let fields: Vec<(&str, &str)> = self
            .authorization
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let got = client
            .get(
                &self.uri,
                GetOptions {
                    range_from: (self.start > 0).then_some(self.start),
                    if_range: self.if_range.as_deref().filter(|_| self.start > 0),
                    if_match: self.if_match.as_deref(),
                    deadline: Some(self.deadline),
                    headers: &fields,
                },
            )
            .await;
        let mut resp = match got {
            Ok(r) => r,
            Err(e) => {
                let _ = head_tx.send(Err(e));
                return;
            }
        };
        let info = HeadInfo {
            status: resp.status,
            content_length: resp.content_length,
            content_range: resp.content_range.map(|r| match r {
                ContentRange::Bytes {
                    first,
                    last,
                    complete_length: Some(n),
                } => format!("bytes {first}-{last}/{n}"),
                ContentRange::Bytes { first, last, .. } => format!("bytes {first}-{last}/*"),
                ContentRange::Unsatisfied { complete_length } => {
                    format!("bytes */{complete_length}")
                }
            }),
            etag: resp.etag.map(|e| e.as_str().to_string()),
            last_modified: resp.last_modified.map(|t| t.as_str().to_string()),
            location: resp.location.is_some(),
        };
        if head_tx.send(Ok(info)).is_err() {
            resp.body.abort().await;
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            let Ok(permit) = chunk_tx.reserve().await else {
                // The device dropped the body before its end.
                resp.body.abort().await;
                return;
            };
            match resp.body.read(&mut buf).await {
                Ok(n) => {
                    permit.send(Ok(buf[..n].to_vec()));
                    if n == 0 {
                        return;
                    }
                }
                Err(e) => {
                    permit.send(Err(e));
                    return;
                }
            }
        }
    }
}

/// The body of an answer, fed by its connection's task. The client holds it to its
/// `Content-Length` (an early end is [`http::Error::ShortBody`]); an empty chunk is the end.
struct NetBody {
    uri: String,
    length: Option<u64>,
    got: u64,
    pending: Vec<u8>,
    pos: usize,
    rx: mpsc::Receiver<Chunk>,
    opts: SourceOptions,
    counter: Rc<Cell<u64>>,
    ended: bool,
}

impl NetBody {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.pending.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv().await {
                Some(Ok(v)) if v.is_empty() => {
                    self.ended = true;
                    return Ok(0);
                }
                Some(Ok(v)) => {
                    self.pending = v;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(source_error(&self.uri, e, &self.opts)),
                None => {
                    return Err(SourceError::Network {
                        uri: self.uri.clone(),
                        phase: Phase::Read,
                        detail: "the connection's task ended before the body did".into(),
                    })
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        self.got += n as u64;
        self.counter.set(self.counter.get() + n as u64);
        Ok(n)
    }
}

impl Body for NetBody {
    fn content_length(&self) -> Option<u64> {
        self.length.map(|l| l.saturating_sub(self.got))
    }
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, Result<usize, SourceError>> {
        Box::pin(self.read_some(buf))
    }
    fn uri(&self) -> &str {
        &self.uri
    }
}

fn to_std(d: http::Duration) -> Duration {
    Duration::from_millis(d.as_millis())
}

/// The client's error as the service's, by the same classes the std client uses (connection
/// trouble, timeouts and slow or cut bodies are transient; bad answers are not).
fn source_error(uri: &str, e: http::Error, opts: &SourceOptions) -> SourceError {
    let uri = uri.to_string();
    let phase = |p: http::Phase| match p {
        http::Phase::Body => Phase::Read,
        _ => Phase::Open,
    };
    match e {
        http::Error::Url(u) => SourceError::InvalidUri {
            uri,
            detail: u.to_string(),
        },
        http::Error::Connect(ConnectError::Refused) => SourceError::ConnectionRefused {
            uri,
            detail: "the host reset the TCP connection: nothing listens on the port".into(),
        },
        http::Error::Connect(ConnectError::Dns) => SourceError::Dns {
            uri,
            detail: e.to_string(),
        },
        http::Error::Connect(ConnectError::TimedOut) => SourceError::Timeout {
            uri,
            phase: Phase::Open,
            timeout: opts.timeout,
        },
        http::Error::Connect(_) => SourceError::Network {
            uri,
            phase: Phase::Open,
            detail: e.to_string(),
        },
        http::Error::Io { phase: p, .. } => SourceError::Network {
            uri,
            phase: phase(p),
            detail: e.to_string(),
        },
        http::Error::ClosedInHead { .. } => SourceError::Network {
            uri,
            phase: Phase::Open,
            detail: e.to_string(),
        },
        http::Error::Stalled { phase: p, after } => SourceError::Timeout {
            uri,
            phase: phase(p),
            timeout: to_std(after),
        },
        http::Error::Deadline { phase: p } => SourceError::DeadlineExceeded {
            uri,
            phase: phase(p),
            max_time: opts.max_time,
        },
        http::Error::TooSlow {
            got, window, limit, ..
        } => SourceError::TooSlow {
            uri,
            got,
            elapsed: to_std(window),
            limit,
            window: opts.low_speed_time,
        },
        http::Error::ShortBody {
            expected: Some(expected),
            got,
            ..
        } => SourceError::ShortBody { uri, expected, got },
        http::Error::ShortBody { expected: None, .. } => SourceError::Network {
            uri,
            phase: Phase::Read,
            detail: e.to_string(),
        },
        http::Error::TooLarge { limit } => SourceError::TooLarge { uri, limit },
        http::Error::RangeMismatch { asked, got } => SourceError::RangeMismatch {
            uri,
            requested: asked,
            got: got.map_or_else(|| "none".to_string(), |g| format!("bytes {g}-")),
        },
        _ => SourceError::BadResponse {
            uri,
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_testsrv::{Faults, FlakyServer};

    /// Runs `f` on a current-thread runtime with a `LocalSet`, as the simulation does.
    fn local<T>(f: impl std::future::Future<Output = T>) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    async fn read_all(body: &mut dyn Body) -> Result<Vec<u8>, SourceError> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            match body.read(&mut buf).await? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn file() -> Vec<u8> {
        (0..20_000u32).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn net_transport_reads_a_body_cut_short_as_short_and_resumes_it_with_a_range() {
        let srv = FlakyServer::start(
            file(),
            Faults {
                drop_at: vec![9_000],
                ..Faults::default()
            },
        )
        .unwrap();
        let uri = srv.url("fw.bin");
        let opts = SourceOptions {
            timeout: Duration::from_secs(5),
            ..SourceOptions::default()
        };
        let t = NetTransport::default();
        local(async {
            let mut first = t.open(Request::whole(&uri, &opts)).await.unwrap();
            assert!(first.honoured);
            assert_eq!(first.total_length, Some(20_000));
            let (kind, validator) = first.validator().expect("a validator");
            assert_eq!(kind, ota_service::source::ValidatorKind::ETag);
            let validator = validator.to_string();
            let err = read_all(first.body.as_mut()).await.unwrap_err();
            assert!(err.is_transient(), "{err}");
            let SourceError::ShortBody { expected, got, .. } = err else {
                panic!("not a short body: {err}");
            };
            assert_eq!(expected, 20_000);
            assert!(got < expected);
            let mut rest = t
                .open(Request {
                    start: got,
                    if_range: Some(&validator),
                    ..Request::whole(&uri, &opts)
                })
                .await
                .unwrap();
            assert!(rest.honoured);
            assert_eq!(rest.body.content_length(), Some(20_000 - got));
            let tail = read_all(rest.body.as_mut()).await.unwrap();
            assert_eq!(tail, file()[got as usize..]);
        });
        assert_eq!(t.bytes.get(), 20_000);
    }

    #[test]
    fn net_transport_gives_statuses_stalls_and_closed_ports_their_errors() {
        let opts = SourceOptions {
            timeout: Duration::from_millis(300),
            ..SourceOptions::default()
        };
        let t = NetTransport::default();
        let status = FlakyServer::start(
            file(),
            Faults {
                status_first: Some((404, 1)),
                ..Faults::default()
            },
        )
        .unwrap();
        let silent = FlakyServer::start(
            file(),
            Faults {
                never_answer: true,
                ..Faults::default()
            },
        )
        .unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        local(async {
            let e = t
                .open(Request::whole(&status.url("x.bin"), &opts))
                .await
                .err()
                .unwrap();
            assert!(
                matches!(e, SourceError::HttpStatus { status: 404, .. }),
                "{e}"
            );
            let started = std::time::Instant::now();
            let e = t
                .open(Request::whole(&silent.url("x.bin"), &opts))
                .await
                .err()
                .unwrap();
            assert!(matches!(e, SourceError::Timeout { .. }), "{e}");
            assert!(started.elapsed() < Duration::from_secs(5));
            let uri = format!("http://127.0.0.1:{closed}/x.bin");
            let e = t.open(Request::whole(&uri, &opts)).await.err().unwrap();
            assert!(matches!(e, SourceError::ConnectionRefused { .. }), "{e}");
            let e = t
                .open(Request::whole("https://127.0.0.1:1/x", &opts))
                .await
                .err()
                .unwrap();
            assert!(matches!(e, SourceError::UnsupportedScheme { .. }), "{e}");
        });
    }
}
