//! Sources against slow and odd servers on 127.0.0.1: every wait has a deadline, every read a
//! size bound, every redirect is checked. Bounds are small here so the tests stay fast.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ota_service::source::{
    open, open_range, Phase, Source, SourceError, SourceOptions, TransferLimits, MAX_CHUNK_LINE,
    MAX_HEAD,
};
use ota_service::Outcome;
use ota_testsrv::{Faults, FlakyServer};
use support::*;

/// How long raw test servers keep a connection at most.
const SERVER_LIFE: Duration = Duration::from_secs(10);

fn opts() -> SourceOptions {
    SourceOptions {
        timeout: Duration::from_millis(500),
        low_speed_limit: 1000,
        low_speed_time: Duration::from_millis(400),
        ..SourceOptions::default()
    }
}

fn read_all(src: &mut dyn Source) -> Result<Vec<u8>, SourceError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn file(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 + 1) as u8).collect()
}

/// A raw server for one connection: reads the request head, then `f` writes what it likes
/// (it should stop when a write fails: the client gave up).
fn raw_server<F>(f: F) -> (String, JoinHandle<()>)
where
    F: FnOnce(TcpStream) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + SERVER_LIFE;
        while Instant::now() < end {
            if let Ok((mut s, _)) = listener.accept() {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(SERVER_LIFE)).unwrap();
                s.set_write_timeout(Some(SERVER_LIFE)).unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                f(s);
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
    });
    (format!("http://127.0.0.1:{port}/f.bin"), handle)
}

/// Writes `piece` again and again until the client closes (bounded by `SERVER_LIFE`).
fn endless(mut s: TcpStream, prefix: &[u8], piece: &[u8]) {
    if s.write_all(prefix).is_err() {
        return;
    }
    let end = Instant::now() + SERVER_LIFE;
    while Instant::now() < end && s.write_all(piece).is_ok() {}
}

#[test]
fn body_trickled_one_byte_at_a_time_fails_the_rate_rule_within_its_window() {
    let s = FlakyServer::start(
        file(10_000),
        Faults {
            trickle_body: Some(Duration::from_millis(50)),
            ..Faults::default()
        },
    )
    .unwrap();
    let t0 = Instant::now();
    let mut src = open(&s.url("f.bin"), None, &opts()).unwrap();
    let err = read_all(src.as_mut()).unwrap_err();
    let took = t0.elapsed();
    match &err {
        SourceError::TooSlow { limit, window, .. } => {
            assert_eq!((*limit, *window), (1000, Duration::from_millis(400)))
        }
        other => panic!("expected TooSlow, got {other:?}"),
    }
    assert!(err.to_string().contains("too slow"), "{err}");
    assert!(err.is_transient(), "a slow link is worth one more try");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn max_time_bounds_a_download_that_is_just_fast_enough() {
    // 1 byte per 2 ms is 500 B/s, above a 100 B/s rate rule: only the deadline stops it.
    let s = FlakyServer::start(
        file(10_000),
        Faults {
            trickle_body: Some(Duration::from_millis(2)),
            ..Faults::default()
        },
    )
    .unwrap();
    let o = SourceOptions {
        low_speed_limit: 100,
        max_time: Duration::from_millis(700),
        ..opts()
    }
    .for_item(None);
    let t0 = Instant::now();
    let mut src = open(&s.url("f.bin"), None, &o).unwrap();
    let err = read_all(src.as_mut()).unwrap_err();
    let took = t0.elapsed();
    match &err {
        SourceError::DeadlineExceeded {
            phase, max_time, ..
        } => {
            assert_eq!(*phase, Phase::Read);
            assert_eq!(*max_time, Duration::from_millis(700));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(!err.is_transient(), "past the deadline nothing is retried");
    assert!(err.to_string().contains("max_time_ms = 700"), "{err}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    // A new request after the deadline fails at once, before connecting.
    let e = open(&s.url("f.bin"), None, &o).err().unwrap();
    assert!(
        matches!(
            e,
            SourceError::DeadlineExceeded {
                phase: Phase::Open,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn head_trickled_one_byte_at_a_time_times_out_within_the_timeout() {
    // Each byte comes well within the read timeout; the head as a whole does not.
    let s = FlakyServer::start(
        file(100),
        Faults {
            trickle_head: Some(Duration::from_millis(20)),
            ..Faults::default()
        },
    )
    .unwrap();
    let t0 = Instant::now();
    let err = open(&s.url("f.bin"), None, &opts()).err().unwrap();
    assert!(
        matches!(
            err,
            SourceError::Timeout {
                phase: Phase::Open,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn server_that_accepts_and_never_answers_times_out_opening() {
    let s = FlakyServer::start(
        file(100),
        Faults {
            never_answer: true,
            ..Faults::default()
        },
    )
    .unwrap();
    let t0 = Instant::now();
    let err = open(&s.url("f.bin"), None, &opts()).err().unwrap();
    assert!(
        matches!(
            err,
            SourceError::Timeout {
                phase: Phase::Open,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(t0.elapsed() < Duration::from_millis(1500));
}

#[test]
fn endless_header_line_is_refused_at_the_head_limit() {
    let (uri, _srv) =
        raw_server(|s| endless(s, b"HTTP/1.1 200 OK\r\nX-Junk: ", b"aaaaaaaaaaaaaaaa"));
    let err = open(&uri, None, &opts()).err().unwrap();
    assert!(matches!(err, SourceError::BadResponse { .. }), "{err:?}");
    assert!(err.to_string().contains(&MAX_HEAD.to_string()), "{err}");
}

#[test]
fn endless_header_fields_are_refused() {
    let (uri, _srv) = raw_server(|s| endless(s, b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n"));
    let err = open(&uri, None, &opts()).err().unwrap();
    assert!(matches!(err, SourceError::BadResponse { .. }), "{err:?}");
    assert!(err.to_string().contains("header fields"), "{err}");
}

#[test]
fn endless_chunk_size_line_is_refused() {
    let (uri, _srv) = raw_server(|s| {
        endless(
            s,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1",
            b"0000000000000000",
        )
    });
    let mut src = open(&uri, None, &opts()).unwrap();
    let err = read_all(src.as_mut()).unwrap_err();
    assert!(matches!(err, SourceError::BadResponse { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&MAX_CHUNK_LINE.to_string()),
        "{err}"
    );
}

#[test]
fn endless_chunked_body_into_a_data_partition_stops_at_the_partition_size() {
    let (uri, _srv) = raw_server(|s| {
        endless(
            s,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"1000\r\n"
                .iter()
                .chain([0x5Au8; 0x1000].iter())
                .chain(b"\r\n")
                .copied()
                .collect::<Vec<u8>>()
                .as_slice(),
        )
    });
    let mut dev = device(EXAMPLE_CSV);
    let before = dev.flash.contents().to_vec();
    let item =
        ota_service::items::DataItem::new(uri, "flash_tone", ota_service::items::DataFormat::Raw);
    let t0 = Instant::now();
    let (report, log) = run_items(&mut dev, vec![Box::new(item)], Duration::from_millis(500));
    assert!(
        matches!(report.results[0].1, Outcome::Failed { .. }),
        "log:\n{}",
        log.lines.join("\n")
    );
    let msg = format!("{:?}", report.results[0].1);
    assert!(msg.contains("flash_tone"), "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    // Only the target partition may have changed.
    let tone = *dev.table.find_data("flash_tone").unwrap();
    let (lo, hi) = (tone.offset as usize, (tone.offset + tone.size) as usize);
    let after = dev.flash.contents();
    assert_eq!(&after[..lo], &before[..lo]);
    assert_eq!(&after[hi..], &before[hi..]);
}

#[test]
fn content_length_larger_than_any_flash_is_refused_before_reading() {
    let (uri, _srv) = raw_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\nabc");
    });
    let err = open(&uri, None, &opts()).err().unwrap();
    assert!(matches!(err, SourceError::TooLarge { .. }), "{err:?}");
}

fn redirect_error(location: &str) -> SourceError {
    let s = FlakyServer::start(
        file(100),
        Faults {
            redirect_to: Some(location.to_string()),
            ..Faults::default()
        },
    )
    .unwrap();
    let uri = s.url("f.bin");
    let err = std::panic::catch_unwind(|| open(&uri, None, &opts()).err())
        .unwrap_or_else(|_| panic!("redirect to {location:?} panicked"))
        .unwrap_or_else(|| panic!("redirect to {location:?} gave a source"));
    assert_eq!(err.uri(), uri);
    err
}

#[test]
fn redirect_to_a_non_http_url_is_a_clear_error_naming_the_location() {
    for location in [
        "file:///etc/passwd",
        "data:text/plain;base64,SGVsbG8=",
        "mailto:root@example.com",
        "ftp://127.0.0.1/f.bin",
        "http:///no-host",
        "http://",
        "https:",
        "javascript:alert(1)",
    ] {
        let err = redirect_error(location);
        match &err {
            SourceError::BadRedirect { location: l, .. } => assert_eq!(l, location),
            other => panic!("{location}: expected BadRedirect, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(location) && text.contains("refused"),
            "{text}"
        );
        assert!(!err.is_transient());
    }
}

#[test]
fn very_long_location_and_redirect_loops_are_refused() {
    let long = format!("/{}", "a".repeat(100_000));
    let err = redirect_error(&long);
    // A 100 KB Location does not even fit the response head limit.
    assert!(
        matches!(
            err,
            SourceError::BadResponse { .. } | SourceError::BadRedirect { .. }
        ),
        "{err:?}"
    );
    let long = format!("/{}", "a".repeat(9_000));
    let err = redirect_error(&long);
    assert!(matches!(err, SourceError::BadRedirect { .. }), "{err:?}");
    assert!(err.to_string().contains("bytes long"), "{err}");
    // Every request redirects to the same URL: a loop, caught at the first repeat.
    let err = redirect_error("/f.bin");
    assert!(matches!(err, SourceError::BadRedirect { .. }), "{err:?}");
    assert!(err.to_string().contains("loop"), "{err}");
}

#[test]
fn range_416_mid_run_restarts_from_zero_and_completes() {
    let img = image("v2.0.0", 200_000);
    let s = FlakyServer::start(
        img.clone(),
        Faults {
            drop_at: vec![100_000],
            range_416: usize::MAX,
            ..Faults::default()
        },
    )
    .unwrap();
    let mut dev = device(EXAMPLE_CSV);
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 3));
    assert_eq!(
        report.results[0].1,
        Outcome::Success,
        "log:\n{}",
        log.lines.join("\n")
    );
    let statuses: Vec<(Option<u64>, u16)> = s
        .requests()
        .iter()
        .map(|r| (r.range_start, r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![(None, 200), (Some(100_000), 416), (None, 200)]
    );
    assert!(
        log.has("starting over from byte 0"),
        "{}",
        log.lines.join("\n")
    );
    assert_eq!(boot(&mut dev).1, "v2.0.0");
}

#[test]
fn range_416_for_a_file_exactly_that_long_ends_without_refetching() {
    // The body ended at the true end of the file (the image says it is longer): a 416
    // `bytes */N` with N == what we have means nothing more will come, not "start over".
    let (uri, srv) = raw_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */1000\r\nContent-Length: 0\r\n\r\n");
    });
    let e = open_range(&uri, 1000, None, &opts()).err().unwrap();
    assert!(
        matches!(
            e,
            SourceError::RangeNotSatisfiable {
                start: 1000,
                length: 1000,
                ..
            }
        ),
        "{e:?}"
    );
    srv.join().unwrap();
}

#[test]
fn item_limits_come_from_the_config_per_item_and_top_level() {
    let cfg = ota_service::config::Config::from_str(
        r#"
low_speed_limit = 10
low_speed_time_ms = 2000
max_time_ms = 60000

[[upgrade]]
type = "app"
uri = "http://127.0.0.1:1/a.bin"

[[upgrade]]
type = "data"
uri = "http://127.0.0.1:1/d.bin"
label = "flash_tone"
max_time_ms = 5000
low_speed_limit = 0
"#,
        std::path::Path::new("."),
    )
    .unwrap();
    assert_eq!(
        cfg.upgrade[0].limits,
        TransferLimits {
            low_speed_limit: 10,
            low_speed_time: Duration::from_millis(2000),
            max_time: Duration::from_millis(60_000),
        }
    );
    assert_eq!(
        cfg.upgrade[1].limits,
        TransferLimits {
            low_speed_limit: 0,
            low_speed_time: Duration::from_millis(2000),
            max_time: Duration::from_millis(5000),
        }
    );
    let dflt = ota_service::config::Config::from_str(
        "firmware_upgrade_uri = \"http://h/a.bin\"\n",
        std::path::Path::new("."),
    )
    .unwrap();
    assert_eq!(dflt.upgrade[0].limits, TransferLimits::default());
    for bad in [
        "max_time_ms = 0",
        "max_time_ms = 99999999999",
        "low_speed_time_ms = 0",
        "low_speed_limit = 99999999999999",
    ] {
        let e = ota_service::config::Config::from_str(
            &format!("{bad}\nfirmware_upgrade_uri = \"http://h/a.bin\"\n"),
            std::path::Path::new("."),
        )
        .unwrap_err();
        let key = bad.split(' ').next().unwrap();
        assert!(e.to_string().contains(key) && e.line() == Some(1), "{e}");
    }
}

/// xorshift64*: a small seeded generator for the mutation test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A valid answer to mutate: headers, a chunked body with an extension and a trailer.
fn seed_answer(rng: &mut Rng) -> Vec<u8> {
    let mut v = b"HTTP/1.1 200 OK\r\nETag: \"x\"\r\nX-Fold: a\r\n b\r\n".to_vec();
    if rng.below(2) == 0 {
        v.extend_from_slice(
            b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        );
    } else {
        v.extend_from_slice(b"Content-Length: 8\r\n\r\nhelloabc");
    }
    v
}

fn mutate(rng: &mut Rng, mut v: Vec<u8>) -> Vec<u8> {
    const SPECIAL: &[u8] = b"\r\n:; \t0fF-+xX\x00\xff";
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len());
        match rng.below(5) {
            0 => v[at] = rng.next() as u8,
            1 => v[at] = SPECIAL[rng.below(SPECIAL.len())],
            2 => v.truncate(at),
            3 => v.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
            _ => {
                let n = rng.below(8);
                let piece: Vec<u8> = v[at..(at + n).min(v.len())].to_vec();
                for (i, b) in piece.into_iter().enumerate() {
                    v.insert(at + i, b);
                }
            }
        }
        if v.is_empty() {
            break;
        }
    }
    v
}

#[test]
fn mutated_responses_never_panic_and_always_end() {
    const CASES: usize = 400;
    let mut rng = Rng(0x5EED_0BAD_F00D);
    let answers: Vec<Vec<u8>> = (0..CASES)
        .map(|_| {
            let a = seed_answer(&mut rng);
            mutate(&mut rng, a)
        })
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = answers.clone();
    let server = thread::spawn(move || {
        for a in served {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(SERVER_LIFE)).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let _ = s.write_all(&a);
        }
    });
    let o = SourceOptions {
        timeout: Duration::from_millis(300),
        ..opts()
    };
    let uri = format!("http://127.0.0.1:{port}/f.bin");
    let t0 = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    for a in &answers {
        let r = open(&uri, None, &o).and_then(|mut s| read_all(s.as_mut()));
        match r {
            Ok(_) => ok += 1,
            Err(SourceError::Internal { detail, .. }) => {
                panic!(
                    "the client panicked ({detail}) on {:?}",
                    String::from_utf8_lossy(a)
                )
            }
            Err(e) => {
                assert_eq!(e.uri(), uri);
                failed += 1;
            }
        }
    }
    server.join().unwrap();
    println!(
        "mutated responses: {ok} read, {failed} refused, in {:?}",
        t0.elapsed()
    );
    assert_eq!(ok + failed, CASES);
}

#[test]
fn catalogue_fetch_from_a_trickling_server_fails_the_rate_rule() {
    let s = FlakyServer::start(
        br#"{"images": []}"#.repeat(50),
        Faults {
            trickle_body: Some(Duration::from_millis(50)),
            ..Faults::default()
        },
    )
    .unwrap();
    let mut item = ota_service::items::ManifestItem::new(s.url("manifest.json"), "app");
    item.limits = Some(TransferLimits {
        low_speed_limit: 1000,
        low_speed_time: Duration::from_millis(300),
        max_time: Duration::from_secs(5),
    });
    let mut dev = device(EXAMPLE_CSV);
    let t0 = Instant::now();
    let (report, log) = run_items(&mut dev, vec![Box::new(item)], Duration::from_millis(500));
    let msg = format!("{:?}", report.results[0].1);
    assert!(
        matches!(report.results[0].1, Outcome::Failed { .. }) && msg.contains("too slow"),
        "{msg}\n{}",
        log.lines.join("\n")
    );
    assert!(
        t0.elapsed() < Duration::from_millis(4500),
        "{:?} (the rate rule, 300 ms, not max_time, 5 s)",
        t0.elapsed()
    );
}
