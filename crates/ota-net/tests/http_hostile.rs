//! The HTTP client against scripted connections: exact requests, every framing split at every
//! size, and hostile answers (garbage, truncations, huge numbers, lies) that must end in a
//! typed error, never a panic or a hang.

use std::time::{Duration, Instant};

use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use ota_net::http::{
    Client, Connect, ConnectError, Connection, ContentRange, Error, GetOptions, HeadError, Options,
    Phase, MAX_CHUNK_LINE,
};
use ota_net::sim::block_on;

#[derive(Clone, Debug)]
enum Step {
    Data(Vec<u8>),
    /// Nothing more, ever (a stalled server).
    Stall,
    Fail(ErrorKind),
}

struct MemConn<'a> {
    steps: Vec<Step>,
    at: usize,
    off: usize,
    /// Bytes per read (the answer arrives split this way).
    piece: usize,
    sent: &'a mut Vec<u8>,
}

impl ErrorType for MemConn<'_> {
    type Error = ErrorKind;
}

impl Read for MemConn<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        loop {
            match self.steps.get(self.at).cloned() {
                None => return Ok(0),
                Some(Step::Stall) => core::future::pending::<()>().await,
                Some(Step::Fail(k)) => return Err(k),
                Some(Step::Data(d)) => {
                    if self.off == d.len() {
                        self.at += 1;
                        self.off = 0;
                        continue;
                    }
                    let n = buf.len().min(self.piece).min(d.len() - self.off);
                    buf[..n].copy_from_slice(&d[self.off..self.off + n]);
                    self.off += n;
                    return Ok(n);
                }
            }
        }
    }
}

impl Write for MemConn<'_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        self.sent.extend_from_slice(buf);
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

impl Connection for MemConn<'_> {}

struct Script {
    steps: Vec<Step>,
    piece: usize,
    sent: Vec<u8>,
    connects: usize,
    refuse: bool,
}

impl Script {
    fn new(steps: Vec<Step>, piece: usize) -> Script {
        Script {
            steps,
            piece,
            sent: Vec::new(),
            connects: 0,
            refuse: false,
        }
    }
}

impl Connect for Script {
    type Conn<'a> = MemConn<'a>;

    async fn connect(&mut self, _host: &str, _port: u16) -> Result<MemConn<'_>, ConnectError> {
        self.connects += 1;
        if self.refuse {
            return Err(ConnectError::Refused);
        }
        Ok(MemConn {
            steps: self.steps.clone(),
            at: 0,
            off: 0,
            piece: self.piece.max(1),
            sent: &mut self.sent,
        })
    }
}

const URL: &str = "http://10.0.2.2:8070/fw/app.bin";

/// What one GET ended in: (status, body) or the error.
type Outcome = Result<(u16, Vec<u8>), Error>;

fn fetch_with(script: &mut Script, get: GetOptions<'_>, options: Options) -> Outcome {
    let mut client: Client<&mut Script, 1024> = Client::with_options(script, options);
    block_on(async {
        let mut r = client.get(URL, get).await?;
        let mut body = Vec::new();
        let mut buf = [0u8; 97];
        loop {
            let n = r.body.read(&mut buf).await?;
            if n == 0 {
                return Ok((r.status, body));
            }
            body.extend_from_slice(&buf[..n]);
        }
    })
}

fn fetch(answer: &[u8], piece: usize) -> Outcome {
    let mut s = Script::new(vec![Step::Data(answer.to_vec())], piece);
    fetch_with(&mut s, GetOptions::default(), quick())
}

fn quick() -> Options {
    Options {
        connect_timeout: embassy_time::Duration::from_millis(300),
        send_timeout: embassy_time::Duration::from_millis(300),
        head_timeout: embassy_time::Duration::from_millis(300),
        read_timeout: embassy_time::Duration::from_millis(300),
        max_body: 1 << 20,
        ..Options::default()
    }
}

#[test]
fn request_carries_host_range_if_range_and_if_match() {
    let mut s = Script::new(
        vec![Step::Data(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())],
        64,
    );
    let get = GetOptions {
        range_from: Some(4096),
        if_range: Some("\"abc\""),
        if_match: Some("\"abc\""),
        deadline: None,
        headers: &[("Authorization", "TargetToken a1b2"), ("X-Device", "c3 01")],
    };
    assert_eq!(fetch_with(&mut s, get, quick()).unwrap(), (204, vec![]));
    let req = String::from_utf8(s.sent.clone()).unwrap();
    assert_eq!(
        req,
        "GET /fw/app.bin HTTP/1.1\r\nHost: 10.0.2.2:8070\r\nUser-Agent: ota-net/0.1\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\nRange: bytes=4096-\r\n\
         If-Range: \"abc\"\r\nIf-Match: \"abc\"\r\nAuthorization: TargetToken a1b2\r\n\
         X-Device: c3 01\r\n\r\n"
    );
}

#[test]
fn bad_request_fields_are_refused_before_connecting() {
    for get in [
        GetOptions {
            if_range: Some("W/\"weak\""),
            ..GetOptions::default()
        },
        GetOptions {
            if_match: Some("\"a\"\r\nX-Injected: 1"),
            ..GetOptions::default()
        },
        GetOptions {
            if_range: Some(""),
            ..GetOptions::default()
        },
        GetOptions {
            headers: &[("Bad Name", "x")],
            ..GetOptions::default()
        },
        GetOptions {
            headers: &[("X-Ok", "a\r\nHost: evil")],
            ..GetOptions::default()
        },
        GetOptions {
            headers: &[("range", "bytes=0-")],
            ..GetOptions::default()
        },
    ] {
        let mut s = Script::new(vec![], 1);
        let e = fetch_with(&mut s, get, quick()).unwrap_err();
        assert!(matches!(e, Error::BadRequestField { .. }), "{e:?}");
        assert_eq!(s.connects, 0);
    }
    let mut s = Script::new(vec![], 1);
    let mut client: Client<&mut Script, 1024> = Client::new(&mut s);
    let long = format!("http://h/{}", "a".repeat(2000));
    let e = block_on(async { client.get(&long, GetOptions::default()).await.err() });
    assert_eq!(e, Some(Error::RequestTooLarge { limit: 1024 }));
}

#[test]
fn refused_connections_are_typed() {
    let mut s = Script::new(vec![], 1);
    s.refuse = true;
    let e = fetch_with(&mut s, GetOptions::default(), quick()).unwrap_err();
    assert_eq!(e, Error::Connect(ConnectError::Refused));
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for c in body.chunks(chunk) {
        v.extend_from_slice(format!("{:X};ext=\"1\"\r\n", c.len()).as_bytes());
        v.extend_from_slice(c);
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
    v
}

#[test]
fn every_framing_is_decoded_whatever_the_read_sizes() {
    let body: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut identity =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    identity.extend_from_slice(&body);
    let mut close = b"HTTP/1.0 200 OK\n\n".to_vec();
    close.extend_from_slice(&body);
    let mut interim =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n".to_vec();
    interim.extend_from_slice(&identity);
    for piece in [1, 2, 3, 7, 64, 1000, 100_000] {
        for answer in [
            &identity,
            &close,
            &chunked(&body, 700),
            &chunked(&body, 1),
            &interim,
        ] {
            let (status, got) = fetch(answer, piece).unwrap();
            assert_eq!(status, 200);
            assert!(got == body, "piece {piece}");
        }
    }
}

#[test]
fn range_answers_are_checked_against_the_request() {
    let get = GetOptions {
        range_from: Some(100),
        ..GetOptions::default()
    };
    let run = |head: &str, body: &[u8]| {
        let mut a = head.as_bytes().to_vec();
        a.extend_from_slice(body);
        let mut s = Script::new(vec![Step::Data(a)], 13);
        fetch_with(&mut s, get, quick())
    };
    let ok = run("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-109/110\r\nContent-Length: 10\r\n\r\n", b"0123456789");
    assert_eq!(ok.unwrap(), (206, b"0123456789".to_vec()));
    // No Content-Length: the range says how long the body is (extra bytes are not body).
    let ok = run(
        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-104/110\r\n\r\n",
        b"01234EXTRA",
    );
    assert_eq!(ok.unwrap(), (206, b"01234".to_vec()));
    assert_eq!(
        run(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/110\r\n\r\n",
            b""
        ),
        Err(Error::RangeMismatch {
            asked: 100,
            got: Some(0)
        })
    );
    assert_eq!(
        run(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\r\n",
            b"abc"
        ),
        Err(Error::RangeMismatch {
            asked: 100,
            got: None
        })
    );
    assert_eq!(
        run("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-109/110\r\nContent-Length: 11\r\n\r\n", b""),
        Err(Error::RangeLength { range: 10, content_length: 11 })
    );
    // A chunked 206 must carry exactly its range: no more, no less.
    let chunked_206 = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-104/110\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        run(chunked_206, b"5\r\n01234\r\n0\r\n\r\n").unwrap(),
        (206, b"01234".to_vec())
    );
    assert_eq!(
        run(chunked_206, b"3\r\n012\r\n0\r\n\r\n"),
        Err(Error::ShortBody {
            expected: Some(5),
            got: 3,
            reset: false
        })
    );
    assert_eq!(
        run(chunked_206, b"7\r\n0123456\r\n0\r\n\r\n"),
        Err(Error::TooLarge { limit: 5 })
    );
    let e = run("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */50\r\nContent-Length: 0\r\n\r\n", b"");
    assert_eq!(e.unwrap().0, 416);
    let mut s = Script::new(
        vec![Step::Data(
            b"HTTP/1.1 416 X\r\nContent-Range: bytes */50\r\n\r\n".to_vec(),
        )],
        5,
    );
    let mut client: Client<&mut Script, 1024> = Client::with_options(&mut s, quick());
    let cr = block_on(async { client.get(URL, get).await.map(|r| r.content_range) });
    assert_eq!(
        cr,
        Ok(Some(ContentRange::Unsatisfied {
            complete_length: 50
        }))
    );
}

#[test]
fn bounds_on_heads_chunks_and_bodies_hold() {
    let o = quick();
    let big_head = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(2000));
    assert_eq!(
        fetch(big_head.as_bytes(), 100),
        Err(Error::HeadTooLarge { limit: 1024 })
    );
    let interims = "HTTP/1.1 100 Continue\r\n\r\n".repeat(ota_net::http::MAX_INTERIM + 1);
    assert_eq!(fetch(interims.as_bytes(), 50), Err(Error::TooManyInterim));
    let long_line = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n",
        "e".repeat(MAX_CHUNK_LINE)
    );
    assert!(matches!(
        fetch(long_line.as_bytes(), 300),
        Err(Error::BadChunk { got: 0 })
    ));
    let overflow = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n";
    assert!(matches!(
        fetch(overflow.as_bytes(), 300),
        Err(Error::BadChunk { .. })
    ));
    let huge_chunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\nabc";
    assert_eq!(
        fetch(huge_chunk.as_bytes(), 300),
        Err(Error::TooLarge { limit: o.max_body })
    );
    let huge_length = "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\nabc";
    assert_eq!(
        fetch(huge_length.as_bytes(), 300),
        Err(Error::TooLarge { limit: o.max_body })
    );
    let mut endless = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    endless.extend(std::iter::repeat_n(b'z', (o.max_body + 10) as usize));
    assert_eq!(
        fetch(&endless, 65536),
        Err(Error::TooLarge { limit: o.max_body })
    );
    let bad_end = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n";
    assert_eq!(
        fetch(bad_end.as_bytes(), 3),
        Err(Error::BadChunk { got: 3 })
    );
    let endless_trailer = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{}",
        "T: x\r\n".repeat(2000)
    );
    assert!(matches!(
        fetch(endless_trailer.as_bytes(), 500),
        Err(Error::BadChunk { .. })
    ));
}

#[test]
fn cut_and_reset_bodies_say_how_many_bytes_came() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
    let mut cut = head.clone();
    cut.extend_from_slice(&[7; 40]);
    assert_eq!(
        fetch(&cut, 9),
        Err(Error::ShortBody {
            expected: Some(100),
            got: 40,
            reset: false
        })
    );
    let mut s = Script::new(
        vec![
            Step::Data(cut.clone()),
            Step::Fail(ErrorKind::ConnectionReset),
        ],
        9,
    );
    let e = fetch_with(&mut s, GetOptions::default(), quick()).unwrap_err();
    assert_eq!(
        e,
        Error::ShortBody {
            expected: Some(100),
            got: 40,
            reset: true
        }
    );
    assert_eq!(
        e.to_string(),
        "the connection was reset after 40 of 100 body bytes"
    );
    let chunk_cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc".to_vec();
    assert_eq!(
        fetch(&chunk_cut, 2),
        Err(Error::ShortBody {
            expected: None,
            got: 3,
            reset: false
        })
    );
    assert_eq!(
        fetch(b"HTTP/1.1 200 OK\r\nContent-Le", 4),
        Err(Error::ClosedInHead { got: 27 })
    );
    assert_eq!(fetch(b"", 4), Err(Error::ClosedInHead { got: 0 }));
}

#[test]
fn stalls_in_the_head_or_body_end_within_their_timeouts() {
    let o = quick();
    for (steps, phase) in [
        (
            vec![Step::Data(b"HTTP/1.1 200 OK\r\n".to_vec()), Step::Stall],
            Phase::Head,
        ),
        (
            vec![
                Step::Data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()),
                Step::Stall,
            ],
            Phase::Body,
        ),
    ] {
        let mut s = Script::new(steps, 4);
        let t0 = Instant::now();
        let e = fetch_with(&mut s, GetOptions::default(), o).unwrap_err();
        let after = if phase == Phase::Head {
            o.head_timeout
        } else {
            o.read_timeout
        };
        assert_eq!(e, Error::Stalled { phase, after });
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    // A deadline sooner than the timeouts wins, and says so.
    let mut s = Script::new(vec![Step::Stall], 4);
    let get = GetOptions {
        deadline: Some(embassy_time::Instant::now() + embassy_time::Duration::from_millis(100)),
        ..GetOptions::default()
    };
    let e = fetch_with(&mut s, get, o).unwrap_err();
    assert_eq!(e, Error::Deadline { phase: Phase::Head });
}

/// SplitMix64, for reproducible hostile inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn hostile_answers_end_in_errors_never_panics_or_hangs() {
    let valid: Vec<Vec<u8>> = vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello".to_vec(),
        chunked(b"hello world, chunked", 4),
        b"HTTP/1.1 206 P\r\nContent-Range: bytes 0-4/5\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        b"HTTP/1.1 302 Found\r\nLocation: http://10.0.2.2/x\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ];
    let alphabet: &[u8] = b"HTTP/1. 0123456789abcdefABCDEF:;\r\n\t -,\"W*bytesContent-LengthRangeTransfer-Encodingchunked\x00\xff";
    let mut rng = Rng(0x5eed);
    let (mut oks, mut errs) = (0usize, 0usize);
    let t0 = Instant::now();
    for round in 0..3000 {
        let mut a = valid[round % valid.len()].clone();
        match rng.below(5) {
            0 => a.truncate(rng.below(a.len() + 1)),
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(a.len());
                    a[i] = alphabet[rng.below(alphabet.len())];
                }
            }
            2 => {
                let i = rng.below(a.len());
                let junk: Vec<u8> = (0..rng.below(40))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect();
                a.splice(i..i, junk);
            }
            3 => {
                let i = rng.below(a.len());
                a.splice(i..i, b"99999999999999999999999".iter().copied());
            }
            _ => {
                a = (0..rng.below(300))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect()
            }
        }
        match fetch(&a, 1 + rng.below(17)) {
            Ok(_) => oks += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                errs += 1;
            }
        }
    }
    println!(
        "hostile answers: {oks} accepted, {errs} refused in {:?}",
        t0.elapsed()
    );
    assert!(errs > 1000 && oks > 100, "{oks} ok, {errs} errors");
    assert!(matches!(
        fetch(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            8
        ),
        Err(Error::Head(HeadError::ConflictingContentLength { line: 3 }))
    ));
}

#[test]
fn redirects_come_back_with_their_location_and_read_to_fills_a_buffer() {
    let mut s = Script::new(
        vec![Step::Data(
            b"HTTP/1.1 302 Found\r\nLocation: http://10.0.2.2:9000/new.bin\r\nContent-Length: 3\r\n\r\nabc"
                .to_vec(),
        )],
        7,
    );
    let mut client: Client<&mut Script, 1024> = Client::with_options(&mut s, quick());
    let (status, location, n, buf) = block_on(async {
        let mut r = client.get(URL, GetOptions::default()).await.unwrap();
        let mut buf = [0u8; 3];
        let n = r.read_to(&mut buf).await.unwrap();
        (r.status, r.location.map(|l| l.to_string()), n, buf)
    });
    assert_eq!(status, 302);
    assert_eq!(location.as_deref(), Some("http://10.0.2.2:9000/new.bin"));
    assert_eq!((n, &buf), (3, b"abc"));

    let mut s = Script::new(
        vec![Step::Data(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
        )],
        7,
    );
    let mut client: Client<&mut Script, 1024> = Client::with_options(&mut s, quick());
    let e = block_on(async {
        let mut r = client.get(URL, GetOptions::default()).await.unwrap();
        let mut small = [0u8; 3];
        r.read_to(&mut small).await.unwrap_err()
    });
    assert_eq!(e, Error::TooLarge { limit: 3 });
    let e = fetch(b"HTTP/1.1 200 OK\r\nGood: 1\r\nBad Name: 2\r\n\r\n", 5).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad response head: head line 3: bad header name"
    );
}
