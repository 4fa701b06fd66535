//! The async service over the driver traits only: an in-memory [`Transport`] and a fake
//! [`Clock`] (its sleeps advance a counter and return `Pending` once, like a timer), run by
//! `block_on_with`. Retries, backoff, resume and the deadline all go through these two traits:
//! a 10 s backoff costs no real time, and the requests the items make are recorded.

mod support;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ota_core::boot::{self, BootConfig};
use ota_core::Chip;
use ota_emu::EmuFlash;
use ota_service::io::{block_on_with, Body, BoxFuture, Clock, Opened, Request, Transport};
use ota_service::items::{AppItem, DataFormat, DataItem};
use ota_service::source::{RetryPolicy, SourceError, SourceOptions};
use ota_service::{
    run_list_async, AsyncEnv, Cause, Device, Event, ItemError, Outcome, RunReport, UpgradeItem,
};

use support::{device, image, Dev, EXAMPLE_CSV};

/// One request the transport saw.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    uri: String,
    start: u64,
    if_range: Option<String>,
    if_match: Option<String>,
}

/// Files in memory with an ETag each; the first `refuse` opens fail (connection refused), and
/// the first body served breaks off after `drop_after` bytes (a network error).
#[derive(Default)]
struct MemTransport {
    files: HashMap<String, (Vec<u8>, String)>,
    refuse: Cell<u32>,
    drop_after: Cell<Option<usize>>,
    seen: RefCell<Vec<Seen>>,
}

impl MemTransport {
    fn with(uri: &str, data: Vec<u8>, etag: &str) -> Self {
        let mut t = MemTransport::default();
        t.files.insert(uri.to_string(), (data, etag.to_string()));
        t
    }

    fn open_now(&self, req: &Request<'_>) -> Result<Opened, SourceError> {
        self.seen.borrow_mut().push(Seen {
            uri: req.uri.to_string(),
            start: req.start,
            if_range: req.if_range.map(str::to_string),
            if_match: req.if_match.map(str::to_string),
        });
        if self.refuse.get() > 0 {
            self.refuse.set(self.refuse.get() - 1);
            return Err(SourceError::ConnectionRefused {
                uri: req.uri.to_string(),
                detail: "test transport refuses".into(),
            });
        }
        let (data, etag) = self.files.get(req.uri).ok_or(SourceError::HttpStatus {
            uri: req.uri.to_string(),
            status: 404,
            reason: "Not Found".into(),
        })?;
        if req.if_match.is_some_and(|m| m != etag) {
            return Err(SourceError::HttpStatus {
                uri: req.uri.to_string(),
                status: 412,
                reason: "Precondition Failed".into(),
            });
        }
        let honoured = req.if_range.is_none_or(|v| v == etag);
        let start = if honoured { req.start as usize } else { 0 };
        if start > data.len() {
            return Err(SourceError::RangeNotSatisfiable {
                uri: req.uri.to_string(),
                start: start as u64,
                length: data.len() as u64,
            });
        }
        Ok(Opened {
            body: Box::new(MemBody {
                uri: req.uri.to_string(),
                data: data[start..].to_vec(),
                pos: 0,
                break_at: self.drop_after.take(),
            }),
            honoured,
            etag: Some(etag.clone()),
            last_modified: None,
            total_length: Some(data.len() as u64),
        })
    }
}

impl Transport for MemTransport {
    fn open<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Opened, SourceError>> {
        Box::pin(std::future::ready(self.open_now(&req)))
    }
}

struct MemBody {
    uri: String,
    data: Vec<u8>,
    pos: usize,
    break_at: Option<usize>,
}

impl Body for MemBody {
    fn content_length(&self) -> Option<u64> {
        Some(self.data.len() as u64)
    }
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, Result<usize, SourceError>> {
        if self.break_at.is_some_and(|b| self.pos >= b) {
            return Box::pin(std::future::ready(Err(SourceError::Network {
                uri: self.uri.clone(),
                phase: ota_service::source::Phase::Read,
                detail: "connection reset by the test transport".into(),
            })));
        }
        let end = self.break_at.unwrap_or(usize::MAX).min(self.data.len());
        let n = (end - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Box::pin(std::future::ready(Ok(n)))
    }
    fn uri(&self) -> &str {
        &self.uri
    }
}

/// A clock that only moves when the service sleeps; each sleep is recorded and returns
/// `Pending` once before it completes.
#[derive(Default)]
struct FakeClock {
    now: Cell<u64>,
    sleeps: RefCell<Vec<u64>>,
}

struct Tick<'a> {
    clock: &'a FakeClock,
    ms: u64,
    polled: bool,
}

impl Future for Tick<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.polled {
            self.polled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.clock.now.set(self.clock.now.get() + self.ms);
        Poll::Ready(())
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn sleep_ms(&self, ms: u64) -> BoxFuture<'_, ()> {
        self.sleeps.borrow_mut().push(ms);
        Box::pin(Tick {
            clock: self,
            ms,
            polled: false,
        })
    }
}

/// What a run did: its report, its log lines, and how often the executor found it pending.
struct Ran {
    report: RunReport,
    lines: Vec<String>,
    pending: u32,
}

/// Boot the device, then run `items` through `run_list_async` on `transport` and `clock`.
fn run(
    dev: &mut Dev,
    items: Vec<Box<dyn UpgradeItem<EmuFlash>>>,
    transport: &MemTransport,
    clock: &FakeClock,
    source: SourceOptions,
) -> Ran {
    let booted = boot::boot(
        &mut dev.flash,
        &dev.table,
        Chip::Esp32,
        &BootConfig::default(),
        &mut |_| {},
    )
    .expect("the device boots");
    let mut items = items;
    let mut lines = Vec::new();
    let mut on_event = |ev: Event| {
        if let Event::Log { tag, message, .. } = ev {
            lines.push(format!("{tag}: {message}"));
        }
    };
    let mut device = Device {
        flash: &mut dev.flash,
        table: &dev.table,
        chip: Chip::Esp32,
        running: Some(booted.partition),
        rollback: false,
        anti_rollback: None,
        table_offset: ota_core::partition::TABLE_OFFSET,
        flash_size: None,
        signatures: Default::default(),
    };
    let mut env = AsyncEnv {
        transport,
        clock,
        source,
        events: &mut on_event,
    };
    let mut pending = 0;
    let report = block_on_with(run_list_async(&mut items, &mut device, &mut env), || {
        pending += 1
    });
    Ran {
        report,
        lines,
        pending,
    }
}

fn app(uri: &str, retries: u32, backoff_ms: u64) -> AppItem {
    let mut item = AppItem::new(uri);
    item.retry = RetryPolicy {
        retries,
        backoff: Duration::from_millis(backoff_ms),
    };
    item
}

const APP_URI: &str = "http://mem.test/app.bin";

#[test]
fn app_item_backoff_advances_the_fake_clock_without_sleeping() {
    let mut dev = device(EXAMPLE_CSV);
    let new = image("v2.0.0", 150_000);
    let transport = MemTransport::with(APP_URI, new, "\"v2\"");
    transport.refuse.set(2);
    let clock = FakeClock::default();
    let t0 = Instant::now();
    let ran = run(
        &mut dev,
        vec![Box::new(app(APP_URI, 3, 10_000))],
        &transport,
        &clock,
        SourceOptions::default(),
    );
    assert_eq!(
        ran.report.results,
        vec![(0, Outcome::Success)],
        "{:?}",
        ran.lines
    );
    // Two refusals: waits of 10 s then 20 s, on the fake clock only.
    assert_eq!(*clock.sleeps.borrow(), vec![10_000, 20_000]);
    assert_eq!(clock.now_ms(), 30_000);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(ran.pending, 2, "each sleep was pending once");
    assert_eq!(transport.seen.borrow().len(), 3);
    assert!(ran.report.restart);
    assert_eq!(support::boot(&mut dev).1, "v2.0.0");
}

#[test]
fn app_item_reconnects_with_range_and_if_range_through_the_transport() {
    let mut dev = device(EXAMPLE_CSV);
    let new = image("v2.0.0", 150_000);
    let transport = MemTransport::with(APP_URI, new, "\"v2\"");
    transport.drop_after.set(Some(70_000));
    let clock = FakeClock::default();
    let ran = run(
        &mut dev,
        vec![Box::new(app(APP_URI, 3, 500))],
        &transport,
        &clock,
        SourceOptions::default(),
    );
    assert_eq!(
        ran.report.results,
        vec![(0, Outcome::Success)],
        "{:?}",
        ran.lines
    );
    let seen = transport.seen.borrow();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].start, 0);
    assert_eq!(seen[1].start, 70_000, "asked again from the byte it got to");
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v2\""));
    assert_eq!(*clock.sleeps.borrow(), vec![500]);
    assert_eq!(support::boot(&mut dev).1, "v2.0.0");
}

#[test]
fn app_item_retries_stop_at_the_deadline_of_the_fake_clock() {
    let mut dev = device(EXAMPLE_CSV);
    let transport = MemTransport::with(APP_URI, image("v2.0.0", 50_000), "\"v2\"");
    transport.refuse.set(u32::MAX);
    let clock = FakeClock::default();
    let source = SourceOptions {
        max_time: Duration::from_secs(25),
        ..SourceOptions::default()
    };
    let ran = run(
        &mut dev,
        vec![Box::new(app(APP_URI, 10, 10_000))],
        &transport,
        &clock,
        source,
    );
    match &ran.report.results[..] {
        [(0, Outcome::Failed { message, cause, .. })] => {
            assert!(message.contains("max_time_ms = 25000"), "{message}");
            assert!(
                matches!(
                    cause,
                    Some(Cause::Source(SourceError::DeadlineExceeded { .. }))
                ),
                "{cause:?}"
            );
        }
        other => panic!("expected a failure at the deadline, got {other:?}"),
    }
    // Opens at 0 s, 10 s and 30 s: the third is past the 25 s deadline and is not made.
    assert_eq!(*clock.sleeps.borrow(), vec![10_000, 20_000]);
    assert_eq!(transport.seen.borrow().len(), 2);
    assert_eq!(support::boot(&mut dev).1, "v1.0.0", "nothing switched");
}

#[test]
fn data_item_verifies_then_rereads_with_if_match_through_the_transport() {
    let mut dev = device(EXAMPLE_CSV);
    let uri = "http://mem.test/data.bin";
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 1) as u8).collect();
    let transport = MemTransport::with(uri, data.clone(), "\"d1\"");
    let clock = FakeClock::default();
    let ran = run(
        &mut dev,
        vec![Box::new(DataItem::new(uri, "flash_tone", DataFormat::Raw))],
        &transport,
        &clock,
        SourceOptions::default(),
    );
    assert_eq!(
        ran.report.results,
        vec![(0, Outcome::Success)],
        "{:?}",
        ran.lines
    );
    let seen = transport.seen.borrow();
    assert_eq!(
        seen.len(),
        2,
        "a verifying pass, then a writing pass: {seen:?}"
    );
    assert_eq!(seen[0].if_match, None);
    assert_eq!(seen[1].if_match.as_deref(), Some("\"d1\""));
    let part = *dev.table.find_data("flash_tone").unwrap();
    let mut back = vec![0u8; data.len()];
    embedded_storage::nor_flash::ReadNorFlash::read(&mut dev.flash, part.offset, &mut back)
        .unwrap();
    assert_eq!(back, data);
}

/// A transport written the way a client on embassy-net would write one (`io::request_headers`
/// for the request, `io::judge_http_answer` for the answer, the rest of the connection as the
/// body), over a "connection" that is a function from request text to response bytes.
struct RawHttp<S: Fn(&str) -> Vec<u8>> {
    server: S,
}

/// The body of a raw HTTP answer: what came after the head, held to its `Content-Length`.
struct RawBody {
    uri: String,
    rest: Vec<u8>,
    pos: usize,
    length: Option<u64>,
}

impl Body for RawBody {
    fn content_length(&self) -> Option<u64> {
        self.length
    }
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, Result<usize, SourceError>> {
        let n = (self.rest.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.rest[self.pos..self.pos + n]);
        self.pos += n;
        let short = n == 0 && !buf.is_empty() && self.length.is_some_and(|l| (self.pos as u64) < l);
        Box::pin(std::future::ready(if short {
            Err(SourceError::ShortBody {
                uri: self.uri.clone(),
                expected: self.length.unwrap_or(0),
                got: self.pos as u64,
            })
        } else {
            Ok(n)
        }))
    }
    fn uri(&self) -> &str {
        &self.uri
    }
}

impl<S: Fn(&str) -> Vec<u8>> Transport for RawHttp<S> {
    fn open<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Opened, SourceError>> {
        let mut text = format!("GET {} HTTP/1.1\r\n", req.uri);
        for (name, value) in ota_service::io::request_headers(&req) {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        let answer = (self.server)(&text);
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n");
        let bad = |detail: &str| SourceError::BadResponse {
            uri: req.uri.to_string(),
            detail: detail.to_string(),
        };
        let Some(split) = split else {
            return Box::pin(std::future::ready(Err(bad("no end of head"))));
        };
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let fields: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let length = field("content-length").and_then(|v| v.parse().ok());
        let verdict = ota_service::io::judge_http_answer(
            &req,
            &ota_service::io::HttpHead {
                status,
                reason: "",
                content_length: length,
                content_range: field("content-range"),
                etag: field("etag"),
                last_modified: field("last-modified"),
                location: field("location").is_some(),
            },
        );
        let body = RawBody {
            uri: req.uri.to_string(),
            rest: answer[split + 4..].to_vec(),
            pos: 0,
            length,
        };
        Box::pin(std::future::ready(
            verdict.map(|v| v.with_body(Box::new(body))),
        ))
    }
}

#[test]
fn a_raw_http_client_needs_only_the_io_helpers_to_resume_an_app_download() {
    let file = image("v2.0.0", 120_000);
    let etag = "\"raw-1\"";
    let answers = Cell::new(0u32);
    let requests = RefCell::new(Vec::<String>::new());
    let server = |req: &str| {
        requests.borrow_mut().push(req.to_string());
        let start: usize = req
            .lines()
            .find_map(|l| l.strip_prefix("Range: bytes="))
            .and_then(|r| r.trim_end_matches('-').parse().ok())
            .unwrap_or(0);
        let n = answers.get();
        answers.set(n + 1);
        let body = &file[start..];
        let mut out = if start > 0 {
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {}-{}/{}\r\n",
                start,
                file.len() - 1,
                file.len()
            )
        } else {
            "HTTP/1.1 200 OK\r\n".to_string()
        };
        out.push_str(&format!(
            "Content-Length: {}\r\nETag: {etag}\r\n\r\n",
            body.len()
        ));
        let mut out = out.into_bytes();
        // The first answer breaks off after 45 000 bytes of body.
        let sent = if n == 0 { 45_000 } else { body.len() };
        out.extend_from_slice(&body[..sent]);
        out
    };
    let transport = RawHttp { server };
    let mut dev = device(EXAMPLE_CSV);
    let booted = boot::boot(
        &mut dev.flash,
        &dev.table,
        Chip::Esp32,
        &BootConfig::default(),
        &mut |_| {},
    )
    .unwrap();
    let clock = FakeClock::default();
    let mut events = Vec::new();
    let mut on_event = |ev: Event| events.push(ev);
    let mut device = Device {
        flash: &mut dev.flash,
        table: &dev.table,
        chip: Chip::Esp32,
        running: Some(booted.partition),
        rollback: false,
        anti_rollback: None,
        table_offset: ota_core::partition::TABLE_OFFSET,
        flash_size: None,
        signatures: Default::default(),
    };
    let mut env = AsyncEnv {
        transport: &transport,
        clock: &clock,
        source: SourceOptions::default(),
        events: &mut on_event,
    };
    let mut items: Vec<Box<dyn UpgradeItem<EmuFlash>>> =
        vec![Box::new(app("http://raw.test/app.bin", 3, 100))];
    let report = block_on_with(run_list_async(&mut items, &mut device, &mut env), || {});
    assert_eq!(report.results, vec![(0, Outcome::Success)]);
    let reqs = requests.borrow();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[1].contains("Range: bytes=45000-"), "{}", reqs[1]);
    assert!(
        reqs[1].contains(&format!("If-Range: {etag}")),
        "{}",
        reqs[1]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Resume {
            id: 0,
            at: 45_000,
            from: ota_service::ResumeFrom::Reconnect
        }
    )));
    assert_eq!(support::boot(&mut dev).1, "v2.0.0");
}

/// The typed error under each kind of failure: a source's, `ota-core`'s, the catalogue's. The
/// outcome carries it, and so does the item error's `source()` chain.
#[test]
fn item_failures_carry_their_typed_source_error() {
    use ota_service::items::ManifestItem;

    // A missing file: the transport's own error, unchanged.
    let mut dev = device(EXAMPLE_CSV);
    let transport = MemTransport::with(APP_URI, image("v2.0.0", 20_000), "\"v2\"");
    let clock = FakeClock::default();
    let missing = "http://mem.test/missing.bin";
    let ran = run(
        &mut dev,
        vec![Box::new(app(missing, 0, 0))],
        &transport,
        &clock,
        SourceOptions::default(),
    );
    let cause = ran.report.results[0].1.cause().cloned();
    assert_eq!(
        cause,
        Some(Cause::Source(SourceError::HttpStatus {
            uri: missing.to_string(),
            status: 404,
            reason: "Not Found".into(),
        }))
    );

    // Bytes that are not an app image: ota-core's image error.
    let mut junk = image("v2.0.0", 20_000);
    junk[0] = 0x00;
    let transport = MemTransport::with(APP_URI, junk, "\"j\"");
    let ran = run(
        &mut dev,
        vec![Box::new(app(APP_URI, 0, 0))],
        &transport,
        &clock,
        SourceOptions::default(),
    );
    match ran.report.results[0].1.cause() {
        Some(Cause::Core(ota_core::Error::Image(_))) => {}
        other => panic!(
            "expected an ota-core image error, got {other:?}: {:?}",
            ran.lines
        ),
    }

    // A catalogue with nothing for this device: the catalogue's pick error.
    let cat_uri = "http://mem.test/manifest.json";
    let cat = br#"{"format": 1, "entries": []}"#.to_vec();
    let transport = MemTransport::with(cat_uri, cat, "\"c\"");
    let ran = run(
        &mut dev,
        vec![Box::new(ManifestItem::new(cat_uri, "demo"))],
        &transport,
        &clock,
        SourceOptions::default(),
    );
    match ran.report.results[0].1.cause() {
        Some(Cause::Pick(ota_catalogue::PickError::NoImage { project, .. })) => {
            assert_eq!(project, "demo")
        }
        other => panic!("expected a pick error, got {other:?}: {:?}", ran.lines),
    }

    // The item error's source() chain reaches the typed error.
    let err = ItemError::new(ota_service::Reason::StreamRdFail, "x").with_cause(Cause::Source(
        SourceError::NoSdCard {
            uri: "file://sdcard/x".into(),
        },
    ));
    let source = core::error::Error::source(&err).expect("a source");
    assert!(source.to_string().contains("no SD card"), "{source}");
    assert_eq!(support::boot(&mut dev).1, "v1.0.0", "nothing switched");
}
