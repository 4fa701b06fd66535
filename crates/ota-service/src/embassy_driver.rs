//! The embassy driver (feature `embassy`, `no_std`): a [`Transport`] for `http://` on
//! [`ota_net::http::Client`] over any [`Connect`] (embassy-net's `Stack` on the chip through
//! `ota_net::embassy::StackConnector`, `ota_net::sim::Device` on a PC), and a [`Clock`] on
//! embassy-time.
//!
//! The service wants bodies that own their connection (`'static`, kept in an item between
//! `prepare` and `execute`), while the client lends a body borrowing itself and its connector
//! (the socket buffers). So the client lives in a [`Pump`], a future that runs beside the
//! service on the same executor ([`run_with`], or `select`/`join` it yourself); the
//! [`EmbassyTransport`] and its bodies are handles that post one command at a time (open, read,
//! drop) to the pump through a shared cell and wait for its answer. One connection at a time
//! (the connector has one pair of socket buffers): opening a source while another body is
//! still open gives that body up (its connection is reset; a later read of it fails with a
//! transient [`SourceError::Network`]).
//!
//! Redirects are followed up to `opts.max_redirects`, to `http://` only.
//! `https://` (feature `tls`): over a connector that speaks TLS (`ota_net::tls::TlsConnector`),
//! only with a pinned CA (`opts.ca_pem`, exactly one certificate): the server's chain must be
//! signed by it and name the URL's host; without one the open fails with [`SourceError::Tls`]
//! before connecting. Without the feature `https://` is [`SourceError::UnsupportedScheme`].
//! `file://` is not done here (a device without an SD card): a driver that has one wraps this
//! transport (the CLI does).
//!
//! Every wait is bounded by the client (connect, send, head and each read within
//! `opts.timeout`, the rate rule, `opts.deadline`); deadlines are in ms of [`EmbassyClock`],
//! so a run over this transport must use that clock.

use alloc::rc::Rc;
use core::cell::RefCell;
use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::{Poll, Waker};

use embedded_io_async::Read as _;
use ota_net::http::{self, Client, Connect, ConnectError, ContentRange, GetOptions};

use crate::io::{
    judge_http_answer, Body, BoxFuture, Clock, HttpHead, Opened, Request, Transport, Upload,
    UploadMethod,
};
use crate::prelude::*;
use crate::source::{Phase, SourceError, SourceOptions};

/// The largest read the pump serves at once (a body read asking for more gets this much): the
/// size of the copy buffer the driver allocates once.
pub const MAX_READ: usize = 4096;

/// embassy-time's clock: `now_ms` is [`embassy_time::Instant::now`] in ms, `sleep_ms` a
/// [`embassy_time::Timer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct EmbassyClock;

impl Clock for EmbassyClock {
    fn now_ms(&self) -> u64 {
        embassy_time::Instant::now().as_millis()
    }
    fn sleep_ms(&self, ms: u64) -> BoxFuture<'_, ()> {
        Box::pin(embassy_time::Timer::after_millis(ms))
    }
}

/// A request as the pump keeps it (owned: the caller's borrow ends at the await).
struct OwnedRequest {
    uri: String,
    start: u64,
    if_range: Option<String>,
    if_match: Option<String>,
    opts: SourceOptions,
    /// The pinned CA (DER) of an `https://` request.
    ca_der: Option<Vec<u8>>,
}

/// A `PUT`/`POST` as the pump keeps it.
struct OwnedUpload {
    method: http::Method,
    uri: String,
    content_type: String,
    body: Vec<u8>,
    opts: SourceOptions,
    ca_der: Option<Vec<u8>>,
}

enum Command {
    Open(Box<OwnedRequest>),
    Send(Box<OwnedUpload>),
    /// Read up to this many bytes of body `id`.
    Read {
        id: u32,
        max: usize,
    },
}

/// What an open found, but the body (which stays with the pump).
struct Meta {
    id: u32,
    honoured: bool,
    etag: Option<String>,
    last_modified: Option<String>,
    total_length: Option<u64>,
    content_length: Option<u64>,
}

enum Answer {
    Opened(Result<Meta, SourceError>),
    /// The status of a 2xx answer to a `Send`.
    Sent(Result<u16, SourceError>),
    /// `Ok(n)`: the first `n` bytes of the shared buffer.
    Read(Result<usize, SourceError>),
    /// The body read was given up (another source was opened since).
    Superseded,
}

struct State {
    /// Numbers commands; an answer carries the number of its command.
    seq: u32,
    command: Option<(u32, Command)>,
    answer: Option<(u32, Answer)>,
    /// The bytes of the last read answer.
    data: Vec<u8>,
    /// Bodies dropped by the service (their connections are given up).
    dropped: Option<u32>,
    next_body: u32,
    /// Commands and answers posted so far (how [`run_with`] sees progress).
    posts: u64,
    pump: Option<Waker>,
    caller: Option<Waker>,
}

type Shared = Rc<RefCell<State>>;

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

/// Posts `cmd` and waits for its answer.
async fn call(shared: &Shared, cmd: Command) -> Answer {
    let seq = {
        let mut st = shared.borrow_mut();
        st.seq = st.seq.wrapping_add(1);
        let seq = st.seq;
        st.command = Some((seq, cmd));
        st.answer = None;
        st.posts += 1;
        wake(&mut st.pump);
        seq
    };
    poll_fn(|cx| {
        let mut st = shared.borrow_mut();
        match st.answer.take() {
            Some((s, a)) if s == seq => Poll::Ready(a),
            // An answer to a command given up before (a cancelled future): not ours.
            Some(_) | None => {
                st.caller = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}

/// The service's side: opens `http://` sources through the [`Pump`].
#[derive(Clone)]
pub struct EmbassyTransport {
    shared: Shared,
}

impl Transport for EmbassyTransport {
    fn open<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Opened, SourceError>> {
        Box::pin(async move {
            let ca_der = pinned_ca(&req)?;
            let cmd = Command::Open(Box::new(OwnedRequest {
                uri: req.uri.to_string(),
                start: req.start,
                if_range: req.if_range.map(str::to_string),
                if_match: req.if_match.map(str::to_string),
                opts: req.opts.clone(),
                ca_der,
            }));
            let meta = match call(&self.shared, cmd).await {
                Answer::Opened(r) => r?,
                Answer::Read(_) | Answer::Superseded | Answer::Sent(_) => {
                    return Err(internal(req.uri, Phase::Open, "read answer"))
                }
            };
            let body = PumpBody {
                shared: self.shared.clone(),
                id: meta.id,
                uri: req.uri.to_string(),
                length: meta.content_length,
                got: 0,
            };
            Ok(Opened {
                body: Box::new(body),
                honoured: meta.honoured,
                etag: meta.etag,
                last_modified: meta.last_modified,
                total_length: meta.total_length,
            })
        })
    }

    fn send<'a>(&'a self, req: Upload<'a>) -> BoxFuture<'a, Result<u16, SourceError>> {
        Box::pin(async move {
            let view = Request::whole(req.uri, req.opts);
            let ca_der = pinned_ca(&view)?;
            let cmd = Command::Send(Box::new(OwnedUpload {
                method: match req.method {
                    UploadMethod::Put => http::Method::Put,
                    UploadMethod::Post => http::Method::Post,
                },
                uri: req.uri.to_string(),
                content_type: req.content_type.to_string(),
                body: req.body.to_vec(),
                opts: req.opts.clone(),
                ca_der,
            }));
            match call(&self.shared, cmd).await {
                Answer::Sent(r) => r,
                _ => Err(internal(req.uri, Phase::Open, "not a send answer")),
            }
        })
    }
}

fn has_scheme(uri: &str, scheme: &str) -> bool {
    uri.get(..scheme.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
}

/// `http://`: no CA. `https://` (feature `tls`): the DER of the pinned CA, which must be set.
fn pinned_ca(req: &Request<'_>) -> Result<Option<Vec<u8>>, SourceError> {
    if has_scheme(req.uri, "http://") {
        return Ok(None);
    }
    #[cfg(feature = "tls")]
    if has_scheme(req.uri, "https://") {
        let Some(pem) = req.opts.ca_pem.as_deref() else {
            return Err(SourceError::Tls {
                uri: req.uri.to_string(),
                detail: http::TlsFailure::NoPinnedCa.to_string(),
            });
        };
        return crate::pem::single_certificate_der(pem)
            .map(Some)
            .map_err(|detail| SourceError::BadCert {
                uri: req.uri.to_string(),
                detail,
            });
    }
    Err(SourceError::UnsupportedScheme {
        uri: req.uri.to_string(),
    })
}

fn internal(uri: &str, phase: Phase, detail: &str) -> SourceError {
    SourceError::Internal {
        uri: uri.to_string(),
        phase,
        detail: detail.to_string(),
    }
}

/// A body held by the service: reads go to the pump, which holds the connection.
struct PumpBody {
    shared: Shared,
    id: u32,
    uri: String,
    length: Option<u64>,
    got: u64,
}

impl Body for PumpBody {
    /// What the answer promised (`Content-Length`), whatever was read since: the std
    /// driver's sources say the same, and the items size their checks from it.
    fn content_length(&self) -> Option<u64> {
        self.length
    }
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, Result<usize, SourceError>> {
        Box::pin(async move {
            if buf.is_empty() {
                return Ok(0);
            }
            let max = buf.len().min(MAX_READ);
            let cmd = Command::Read { id: self.id, max };
            match call(&self.shared, cmd).await {
                Answer::Read(Ok(n)) => {
                    let st = self.shared.borrow();
                    let n = n.min(max).min(st.data.len());
                    buf[..n].copy_from_slice(&st.data[..n]);
                    self.got += n as u64;
                    Ok(n)
                }
                Answer::Read(Err(e)) => Err(e),
                Answer::Superseded => Err(SourceError::Network {
                    uri: self.uri.clone(),
                    phase: Phase::Read,
                    detail: "the body was given up: another source was opened since".to_string(),
                }),
                Answer::Opened(_) | Answer::Sent(_) => {
                    Err(internal(&self.uri, Phase::Read, "open answer"))
                }
            }
        })
    }
    fn uri(&self) -> &str {
        &self.uri
    }
}

impl Drop for PumpBody {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.try_borrow_mut() {
            st.dropped = Some(self.id);
            wake(&mut st.pump);
        }
    }
}

/// The client's side: serves the transport's commands with the HTTP client. [`Pump::run`]
/// never returns; run it beside the service ([`run_with`]).
pub struct Pump<'c, C: Connect, const BUF: usize> {
    client: &'c mut Client<C, BUF>,
    shared: Shared,
}

/// A transport and its pump over `client`.
pub fn driver<C: Connect, const BUF: usize>(
    client: &mut Client<C, BUF>,
) -> (EmbassyTransport, Pump<'_, C, BUF>) {
    let shared = Rc::new(RefCell::new(State {
        seq: 0,
        command: None,
        answer: None,
        data: vec![0; MAX_READ],
        dropped: None,
        next_body: 0,
        posts: 0,
        pump: None,
        caller: None,
    }));
    (
        EmbassyTransport {
            shared: shared.clone(),
        },
        Pump { client, shared },
    )
}

/// Runs `f(transport)` (the service: `run_list_async` with this transport and
/// [`EmbassyClock`]) to its end with the pump of `client` beside it, in the caller's task.
pub async fn run_with<C, const BUF: usize, T>(
    client: &mut Client<C, BUF>,
    f: impl AsyncFnOnce(EmbassyTransport) -> T,
) -> T
where
    C: Connect,
{
    let (transport, pump) = driver(client);
    let shared = transport.shared.clone();
    let mut service = pin!(f(transport));
    let mut pump = pin!(pump.run());
    poll_fn(|cx| {
        // Each side wakes the task when it posts to the other; polling again at once while
        // they hand each other work saves a trip through the executor (bounded).
        for _ in 0..MAX_ROUNDS {
            let before = shared.borrow().posts;
            if let Poll::Ready(v) = service.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
            let _ = pump.as_mut().poll(cx);
            if shared.borrow().posts == before {
                break;
            }
        }
        Poll::Pending
    })
    .await
}

/// Rounds of service/pump polls [`run_with`] makes in one poll of its own.
const MAX_ROUNDS: usize = 16;

/// How the pump waits for the transport.
enum Next {
    Command(u32, Command),
    Dropped(u32),
}

async fn next(shared: &Shared) -> Next {
    poll_fn(|cx| {
        let mut st = shared.borrow_mut();
        if let Some((seq, c)) = st.command.take() {
            return Poll::Ready(Next::Command(seq, c));
        }
        if let Some(id) = st.dropped.take() {
            return Poll::Ready(Next::Dropped(id));
        }
        st.pump = Some(cx.waker().clone());
        Poll::Pending
    })
    .await
}

impl<C: Connect, const BUF: usize> Pump<'_, C, BUF> {
    /// Serves commands forever.
    pub async fn run(mut self) -> ! {
        let mut pending: Option<(u32, Command)> = None;
        loop {
            let (seq, cmd) = match pending.take() {
                Some(p) => p,
                None => match next(&self.shared).await {
                    Next::Command(seq, c) => (seq, c),
                    Next::Dropped(_) => continue,
                },
            };
            match cmd {
                Command::Open(req) => pending = self.serve(seq, req).await,
                Command::Send(u) => {
                    let r = self.send(&u).await;
                    answer_on(&self.shared, seq, Answer::Sent(r));
                }
                // A body given up (another one was opened since).
                Command::Read { .. } => answer_on(&self.shared, seq, Answer::Superseded),
            }
        }
    }

    /// One `PUT`/`POST`: the status of a 2xx answer (its body given up), or the error.
    async fn send(&mut self, u: &OwnedUpload) -> Result<u16, SourceError> {
        let client = &mut *self.client;
        client.options = client_options(&u.opts, client.options);
        client
            .connector()
            .pin_ca(u.ca_der.as_deref())
            .map_err(|e| SourceError::BadCert {
                uri: u.uri.clone(),
                detail: e.to_string(),
            })?;
        let auth = u.opts.authorization.as_ref().map(|a| a.expose());
        let fields: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let get = GetOptions {
            deadline: u.opts.deadline.map(embassy_time::Instant::from_millis),
            headers: &fields,
            ..GetOptions::default()
        };
        let view = OwnedRequest {
            uri: u.uri.clone(),
            start: 0,
            if_range: None,
            if_match: None,
            opts: u.opts.clone(),
            ca_der: None,
        };
        let mut resp = client
            .send(&u.uri, u.method, &u.content_type, &u.body, get)
            .await
            .map_err(|e| map_error(&view, e))?;
        let status = resp.status;
        resp.body.abort().await;
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(SourceError::HttpStatus {
                uri: u.uri.clone(),
                status,
                reason: String::new(),
            })
        }
    }

    /// Opens `req` and serves its body's reads until it is dropped, finished and dropped, or
    /// superseded by another open (returned, to be served next).
    async fn serve(&mut self, seq: u32, req: Box<OwnedRequest>) -> Option<(u32, Command)> {
        let id = {
            let mut st = self.shared.borrow_mut();
            st.next_body = st.next_body.wrapping_add(1);
            st.dropped = None;
            st.next_body
        };
        let shared = self.shared.clone();
        let client = &mut *self.client;
        client.options = client_options(&req.opts, client.options);
        if let Err(e) = client.connector().pin_ca(req.ca_der.as_deref()) {
            let e = SourceError::BadCert {
                uri: req.uri.clone(),
                detail: e.to_string(),
            };
            answer_on(&shared, seq, Answer::Opened(Err(e)));
            return None;
        }
        let auth = req.opts.authorization.as_ref().map(|a| a.expose());
        let fields: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let get = GetOptions {
            range_from: (req.start > 0).then_some(req.start),
            if_range: req.if_range.as_deref().filter(|_| req.start > 0),
            if_match: req.if_match.as_deref(),
            deadline: req.opts.deadline.map(embassy_time::Instant::from_millis),
            headers: &fields,
        };
        let no_fields: [(&str, &str); 0] = [];
        // Redirects: at most `max_redirects`, each to an `http://` URL (absolute, or a path on
        // the same host), as the std client follows them.
        let mut url = req.uri.clone();
        let mut followed = 0u32;
        let mut resp = loop {
            // The item's credentials go to its own origin only, not to where a redirect leads.
            let this = if same_origin(&url, &req.uri) {
                get
            } else {
                GetOptions {
                    headers: &no_fields,
                    ..get
                }
            };
            let mut r = match client.get(&url, this).await {
                Ok(r) => r,
                Err(e) => {
                    answer_on(&shared, seq, Answer::Opened(Err(map_error(&req, e))));
                    return None;
                }
            };
            let Some(location) = r.location.filter(|_| (300..400).contains(&r.status)) else {
                break r;
            };
            let next = if followed >= req.opts.max_redirects {
                Err(SourceError::TooManyRedirects {
                    uri: req.uri.clone(),
                    max: req.opts.max_redirects,
                })
            } else {
                redirect_target(&url, location.as_str()).map_err(|detail| {
                    SourceError::BadRedirect {
                        uri: req.uri.clone(),
                        location: location.as_str().to_string(),
                        detail: detail.to_string(),
                    }
                })
            };
            r.body.abort().await;
            match next {
                Ok(n) => {
                    url = n;
                    followed += 1;
                }
                Err(e) => {
                    answer_on(&shared, seq, Answer::Opened(Err(e)));
                    return None;
                }
            }
        };
        let range_text = resp.content_range.map(content_range_text);
        let head = HttpHead {
            status: resp.status,
            reason: "",
            content_length: resp.content_length,
            content_range: range_text.as_deref(),
            etag: resp.etag.as_ref().map(|e| e.as_str()),
            last_modified: resp.last_modified.as_ref().map(|t| t.as_str()),
            location: resp.location.is_some(),
        };
        let view = Request {
            uri: &req.uri,
            start: req.start,
            if_range: req.if_range.as_deref(),
            if_match: req.if_match.as_deref(),
            opts: &req.opts,
        };
        let judged = judge_http_answer(&view, &head);
        let verdict = match judged {
            Ok(v) => v,
            Err(e) => {
                resp.body.abort().await;
                answer_on(&shared, seq, Answer::Opened(Err(e)));
                return None;
            }
        };
        answer_on(
            &shared,
            seq,
            Answer::Opened(Ok(Meta {
                id,
                honoured: verdict.honoured,
                etag: verdict.etag,
                last_modified: verdict.last_modified,
                total_length: verdict.total_length,
                content_length: resp.content_length,
            })),
        );
        let mut scratch = [0u8; MAX_READ];
        let mut ended = false;
        loop {
            match next(&shared).await {
                Next::Dropped(d) if d == id => {
                    if !ended {
                        resp.body.abort().await;
                    }
                    return None;
                }
                Next::Dropped(_) => {}
                Next::Command(s, c @ (Command::Open(_) | Command::Send(_))) => {
                    if !ended {
                        resp.body.abort().await;
                    }
                    return Some((s, c));
                }
                Next::Command(s, Command::Read { id: rid, .. }) if rid != id => {
                    answer_on(&shared, s, Answer::Superseded);
                }
                Next::Command(s, Command::Read { max, .. }) => {
                    let max = max.min(MAX_READ);
                    let r = if ended {
                        Ok(0)
                    } else {
                        match resp.body.read(&mut scratch[..max]).await {
                            Ok(0) => {
                                ended = true;
                                Ok(0)
                            }
                            Ok(n) => Ok(n),
                            Err(e) => {
                                ended = true;
                                resp.body.abort().await;
                                Err(map_error(&req, e))
                            }
                        }
                    };
                    if let Ok(n) = r {
                        let mut st = shared.borrow_mut();
                        st.data[..n].copy_from_slice(&scratch[..n]);
                    }
                    answer_on(&shared, s, Answer::Read(r));
                }
            }
        }
    }
}

fn answer_on(shared: &Shared, seq: u32, a: Answer) {
    let mut st = shared.borrow_mut();
    st.answer = Some((seq, a));
    st.posts += 1;
    wake(&mut st.caller);
}

/// Whether two `http(s)://` URLs have the same scheme and authority.
fn same_origin(a: &str, b: &str) -> bool {
    let origin = |u: &str| -> (bool, String) {
        let (tls, rest) = match u.split_once("://") {
            Some((s, r)) => (s.eq_ignore_ascii_case("https"), r),
            None => (false, u),
        };
        let auth = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        (tls, auth.to_ascii_lowercase())
    };
    origin(a) == origin(b)
}

/// Where a redirect from `from` to `location` leads: an absolute `http://` URL, or a path
/// (`/...`) on the same scheme and authority.
fn redirect_target(from: &str, location: &str) -> Result<String, &'static str> {
    let location = location.trim();
    if location.starts_with("http://") {
        return Ok(location.to_string());
    }
    if location.starts_with("https://") {
        return Err("a redirect to https://, which the embassy driver does not speak");
    }
    if location.starts_with('/') && !location.starts_with("//") {
        let rest = from
            .strip_prefix("http://")
            .ok_or("not from an http:// URL")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        return Ok(format!("http://{authority}{location}"));
    }
    Err("only absolute http:// URLs and paths (/...) are followed")
}

/// `bytes first-last/total` (or `*`), as the header said.
fn content_range_text(r: ContentRange) -> String {
    match r {
        ContentRange::Bytes {
            first,
            last,
            complete_length: Some(n),
        } => format!("bytes {first}-{last}/{n}"),
        ContentRange::Bytes { first, last, .. } => format!("bytes {first}-{last}/*"),
        ContentRange::Unsatisfied { complete_length } => format!("bytes */{complete_length}"),
    }
}

fn embassy_duration(d: core::time::Duration) -> embassy_time::Duration {
    embassy_time::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The client's bounds for a request with `opts`: every wait within `opts.timeout`, the rate
/// rule of the item; the body bound stays the client's.
fn client_options(opts: &SourceOptions, base: http::Options) -> http::Options {
    let t = embassy_duration(opts.timeout);
    http::Options {
        connect_timeout: t,
        send_timeout: t,
        head_timeout: t,
        read_timeout: t,
        max_body: base.max_body,
        low_speed_limit: opts.low_speed_limit,
        low_speed_time: embassy_duration(opts.low_speed_time),
    }
}

fn core_duration(d: embassy_time::Duration) -> core::time::Duration {
    core::time::Duration::from_micros(d.as_micros())
}

/// The service's error for a client error on `req`.
fn map_error(req: &OwnedRequest, e: http::Error) -> SourceError {
    let uri = req.uri.clone();
    let phase = |p: http::Phase| match p {
        http::Phase::Body => Phase::Read,
        _ => Phase::Open,
    };
    match e {
        http::Error::Url(u) => SourceError::InvalidUri {
            uri,
            detail: format!("{u:?}"),
        },
        http::Error::Connect(ConnectError::Dns) => SourceError::Dns {
            uri,
            detail: ConnectError::Dns.to_string(),
        },
        http::Error::Connect(ConnectError::Refused) => SourceError::ConnectionRefused {
            uri,
            detail: ConnectError::Refused.to_string(),
        },
        http::Error::Connect(ConnectError::TimedOut) => SourceError::Timeout {
            uri,
            phase: Phase::Open,
            timeout: req.opts.timeout,
        },
        http::Error::Connect(ConnectError::Tls(t)) => SourceError::Tls {
            uri,
            detail: t.to_string(),
        },
        http::Error::Connect(c) => SourceError::Network {
            uri,
            phase: Phase::Open,
            detail: c.to_string(),
        },
        http::Error::Io { phase: p, kind } => SourceError::Network {
            uri,
            phase: phase(p),
            detail: format!("{kind:?}"),
        },
        http::Error::Stalled { phase: p, after } => SourceError::Timeout {
            uri,
            phase: phase(p),
            timeout: core_duration(after),
        },
        http::Error::Deadline { phase: p } => SourceError::DeadlineExceeded {
            uri,
            phase: phase(p),
            max_time: req.opts.max_time,
        },
        http::Error::ClosedInHead { .. } => SourceError::Network {
            uri,
            phase: Phase::Open,
            detail: e.to_string(),
        },
        http::Error::RangeMismatch { asked, got } => SourceError::RangeMismatch {
            uri,
            requested: asked,
            got: got.map_or_else(|| "none".to_string(), |g| format!("bytes {g}-")),
        },
        http::Error::TooLarge { limit } => SourceError::TooLarge { uri, limit },
        http::Error::TooSlow {
            got, window, limit, ..
        } => SourceError::TooSlow {
            uri,
            got,
            elapsed: core_duration(window),
            limit,
            window: req.opts.low_speed_time,
        },
        http::Error::ShortBody {
            expected: Some(expected),
            got,
            ..
        } => SourceError::ShortBody { uri, expected, got },
        http::Error::ShortBody { .. } => SourceError::Network {
            uri,
            phase: Phase::Read,
            detail: e.to_string(),
        },
        http::Error::BadRequestField { .. } | http::Error::RequestTooLarge { .. } => {
            SourceError::InvalidUri {
                uri,
                detail: e.to_string(),
            }
        }
        _ => SourceError::BadResponse {
            uri,
            detail: e.to_string(),
        },
    }
}
