//! Sources against real servers on 127.0.0.1 (tiny_http, raw TCP, rustls), and the SD card
//! through `HostDir`. Nothing here contacts anything but the loopback interface.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ota_service::source::{
    open, open_range, reason, HostDir, Phase, SdCardFs, Source, SourceError, SourceOptions,
};

/// How long any test server waits for its client before giving up.
const SERVER_DEADLINE: Duration = Duration::from_secs(10);

fn opts() -> SourceOptions {
    SourceOptions {
        timeout: Duration::from_secs(5),
        ..SourceOptions::default()
    }
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// Reads a source to its end in small chunks.
fn read_all(src: &mut dyn Source) -> Result<Vec<u8>, SourceError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 100];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn open_http(uri: &str, o: &SourceOptions) -> Result<Box<dyn Source>, SourceError> {
    open(uri, None, o)
}

/// One answer of the tiny_http test server.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// `false`: send `Transfer-Encoding: chunked` instead of `Content-Length`.
    sized: bool,
}

impl Reply {
    fn ok(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body,
            sized: true,
        }
    }
    fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: format!("status {status}").into_bytes(),
            sized: true,
        }
    }
    fn redirect(to: &str) -> Reply {
        Reply {
            status: 302,
            headers: vec![("Location", to.to_string())],
            body: vec![],
            sized: true,
        }
    }
}

/// A tiny_http server on 127.0.0.1:0 answering at most `max` requests with `handler(url, range)`.
/// Returns its base URL (`http://127.0.0.1:port`) and the thread, which ends after `max`
/// requests or when no request came for `SERVER_DEADLINE`.
fn serve<F>(max: usize, handler: F) -> (String, JoinHandle<usize>)
where
    F: Fn(&str, Option<String>) -> Reply + Send + 'static,
{
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind loopback");
    let port = server.server_addr().to_ip().expect("ip listener").port();
    let handle = thread::spawn(move || {
        let mut served = 0;
        while served < max {
            let req = match server.recv_timeout(SERVER_DEADLINE) {
                Ok(Some(r)) => r,
                _ => break,
            };
            let range = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("Range"))
                .map(|h| h.value.as_str().to_string());
            let reply = handler(req.url(), range);
            let len = reply.sized.then_some(reply.body.len());
            let mut resp = tiny_http::Response::new(
                tiny_http::StatusCode(reply.status),
                vec![],
                std::io::Cursor::new(reply.body),
                len,
                None,
            )
            // tiny_http switches to chunked above 32 KiB unless told otherwise.
            .with_chunked_threshold(usize::MAX);
            for (k, v) in reply.headers {
                resp.add_header(tiny_http::Header::from_bytes(k, v).expect("header"));
            }
            let _ = req.respond(resp);
            served += 1;
        }
        served
    });
    (format!("http://127.0.0.1:{port}"), handle)
}

/// Accepts one connection on `listener` within `SERVER_DEADLINE`.
fn accept_one(listener: &TcpListener) -> Option<TcpStream> {
    listener.set_nonblocking(true).ok()?;
    let end = Instant::now() + SERVER_DEADLINE;
    while Instant::now() < end {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).ok()?;
                s.set_read_timeout(Some(SERVER_DEADLINE)).ok()?;
                return Some(s);
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

/// Reads an HTTP request head (up to the blank line).
fn read_head(s: &mut impl Read) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A raw TCP server for one connection: `f` gets the socket after the request head was read.
fn raw_server<F>(f: F) -> (String, JoinHandle<()>)
where
    F: FnOnce(TcpStream) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        if let Some(mut s) = accept_one(&listener) {
            if read_head(&mut s).is_ok() {
                f(s);
            }
        }
    });
    (format!("http://127.0.0.1:{port}"), handle)
}

#[test]
fn http_200_streams_body_with_content_length() {
    let data = body(70_000);
    let expected = data.clone();
    let (base, server) = serve(1, move |_, _| Reply::ok(data.clone()));
    let uri = format!("{base}/app.bin");
    let mut src = open_http(&uri, &opts()).unwrap();
    assert_eq!(src.content_length(), Some(70_000));
    assert_eq!(src.uri(), uri);
    assert_eq!(read_all(src.as_mut()).unwrap(), expected);
    // After the end, the end stays the end.
    assert_eq!(src.read(&mut [0u8; 8]).unwrap(), 0);
    assert_eq!(server.join().unwrap(), 1);
}

#[test]
fn http_chunked_body_has_no_content_length() {
    let data = body(5000);
    let expected = data.clone();
    let (base, _server) = serve(1, move |_, _| Reply {
        sized: false,
        ..Reply::ok(data.clone())
    });
    let mut src = open_http(&format!("{base}/x"), &opts()).unwrap();
    assert_eq!(src.content_length(), None);
    assert_eq!(read_all(src.as_mut()).unwrap(), expected);
}

#[test]
fn http_404_and_500_are_http_status_errors() {
    let (base, server) = serve(2, |url, _| {
        Reply::status(if url == "/missing.bin" { 404 } else { 500 })
    });
    for (path, code) in [("/missing.bin", 404u16), ("/broken.bin", 500)] {
        let uri = format!("{base}{path}");
        match open_http(&uri, &opts()) {
            Err(e @ SourceError::HttpStatus { status, .. }) => {
                assert_eq!(status, code);
                assert_eq!(e.uri(), uri);
                assert_eq!(e.adf_reason(), reason::STREAM_INIT_FAIL);
                assert!(e.to_string().contains(&code.to_string()), "{e}");
            }
            Err(other) => panic!("{path}: expected HttpStatus, got {other}"),
            Ok(_) => panic!("{path}: expected HttpStatus, got a body"),
        }
    }
    assert_eq!(server.join().unwrap(), 2);
}

#[test]
fn http_302_redirect_is_followed() {
    let data = body(1234);
    let expected = data.clone();
    let (base, server) = serve(2, move |url, _| match url {
        "/old.bin" => Reply::redirect("/new.bin"),
        "/new.bin" => Reply::ok(data.clone()),
        _ => Reply::status(404),
    });
    let uri = format!("{base}/old.bin");
    let mut src = open_http(&uri, &opts()).unwrap();
    assert_eq!(
        src.uri(),
        uri,
        "the source keeps the URI it was opened with"
    );
    assert_eq!(read_all(src.as_mut()).unwrap(), expected);
    assert_eq!(server.join().unwrap(), 2);
}

/// A server where `/r/N` redirects to `/r/N-1` and `/r/0` is the body.
fn redirect_chain() -> (String, JoinHandle<usize>) {
    serve(20, |url, _| {
        let n: u32 = url
            .strip_prefix("/r/")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if n == 0 {
            Reply::ok(b"end".to_vec())
        } else {
            Reply::redirect(&format!("/r/{}", n - 1))
        }
    })
}

#[test]
fn exactly_max_redirects_are_followed_and_one_more_fails() {
    let (base, _server) = redirect_chain();
    let o = SourceOptions {
        max_redirects: 3,
        ..opts()
    };
    let mut src = open_http(&format!("{base}/r/3"), &o).unwrap();
    assert_eq!(read_all(src.as_mut()).unwrap(), b"end");
    match open_http(&format!("{base}/r/4"), &o) {
        Err(SourceError::TooManyRedirects { max, .. }) => assert_eq!(max, 3),
        Err(other) => panic!("expected TooManyRedirects, got {other}"),
        Ok(_) => panic!("expected TooManyRedirects, got a body"),
    }
    let none = SourceOptions {
        max_redirects: 0,
        ..opts()
    };
    match open_http(&format!("{base}/r/1"), &none) {
        Err(SourceError::TooManyRedirects { max, .. }) => assert_eq!(max, 0),
        Err(other) => panic!("expected TooManyRedirects, got {other}"),
        Ok(_) => panic!("expected TooManyRedirects, got a body"),
    }
}

#[test]
fn connection_refused_is_recognised() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // listener dropped: nothing listens on `port` now
    let uri = format!("http://127.0.0.1:{port}/app.bin");
    match open_http(&uri, &opts()) {
        Err(e @ SourceError::ConnectionRefused { .. }) => {
            assert_eq!(e.uri(), uri);
            assert_eq!(e.adf_reason(), reason::STREAM_INIT_FAIL);
        }
        Err(other) => panic!("expected ConnectionRefused, got {other:?}"),
        Ok(_) => panic!("expected ConnectionRefused, got a body"),
    }
}

#[test]
fn body_shorter_than_content_length_is_short_body_error() {
    let (base, server) = raw_server(|mut s| {
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n");
        let _ = s.write_all(&body(500));
        let _ = s.flush();
        // dropping `s` closes the connection 500 bytes early
    });
    let uri = format!("{base}/app.bin");
    let mut src = open_http(&uri, &opts()).unwrap();
    assert_eq!(src.content_length(), Some(1000));
    match read_all(src.as_mut()) {
        Err(e @ SourceError::ShortBody { .. }) => {
            let SourceError::ShortBody { expected, got, .. } = &e else {
                unreachable!()
            };
            assert_eq!((*expected, *got), (1000, 500));
            assert_eq!(e.adf_reason(), reason::STREAM_RD_FAIL);
            assert_eq!(e.uri(), uri);
        }
        Err(other) => panic!("expected ShortBody, got {other:?}"),
        Ok(v) => panic!("expected ShortBody, got {} bytes and a clean end", v.len()),
    }
    server.join().unwrap();
}

#[test]
fn stalled_server_times_out_while_opening() {
    let (base, _server) = raw_server(|s| {
        thread::sleep(Duration::from_secs(3)); // never answers
        drop(s);
    });
    let o = SourceOptions {
        timeout: Duration::from_millis(300),
        ..opts()
    };
    let t0 = Instant::now();
    let err = open_http(&format!("{base}/app.bin"), &o)
        .err()
        .expect("an error");
    let took = t0.elapsed();
    match &err {
        SourceError::Timeout { phase, timeout, .. } => {
            assert_eq!(*phase, Phase::Open);
            assert_eq!(*timeout, Duration::from_millis(300));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(err.adf_reason(), reason::STREAM_INIT_FAIL);
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn server_stalling_mid_body_times_out_while_reading() {
    let (base, _server) = raw_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n");
        let _ = s.write_all(&body(100));
        let _ = s.flush();
        thread::sleep(Duration::from_secs(3));
    });
    let o = SourceOptions {
        timeout: Duration::from_millis(300),
        ..opts()
    };
    let mut src = open_http(&format!("{base}/app.bin"), &o).unwrap();
    let t0 = Instant::now();
    let err = read_all(src.as_mut()).expect_err("a timeout");
    assert!(
        matches!(
            err,
            SourceError::Timeout {
                phase: Phase::Read,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.adf_reason(), reason::STREAM_RD_FAIL);
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn unsupported_schemes_are_rejected_by_prefix_not_substring() {
    for uri in [
        "ftp://127.0.0.1/x.bin",
        "xhttp://127.0.0.1/x.bin",
        "foo http://127.0.0.1/x.bin",
        "sdcard/file://x.bin",
        "HTTP://127.0.0.1/x.bin",
        "",
    ] {
        match open(uri, Some(&HostDir(std::env::temp_dir())), &opts()) {
            Err(e @ SourceError::UnsupportedScheme { .. }) => {
                assert_eq!(e.uri(), uri);
                assert_eq!(e.adf_reason(), reason::URL_PARSE_FAIL);
            }
            Err(other) => panic!("{uri:?}: expected UnsupportedScheme, got {other}"),
            Ok(_) => panic!("{uri:?}: expected UnsupportedScheme, got a source"),
        }
    }
}

#[test]
fn file_uri_reads_from_host_dir_with_adf_path_rules() {
    let dir = tempfile::tempdir().unwrap();
    let data = body(3000);
    std::fs::write(dir.path().join("x.bin"), &data).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/y.bin"), b"yy").unwrap();
    let sd = HostDir(dir.path().to_path_buf());
    for uri in ["file://sdcard/x.bin", "file:///sdcard/x.bin"] {
        let mut src = open(uri, Some(&sd), &opts()).unwrap();
        assert_eq!(src.content_length(), Some(3000));
        assert_eq!(src.uri(), uri);
        assert_eq!(read_all(src.as_mut()).unwrap(), data, "{uri}");
    }
    let mut src = open("file://sdcard/sub/y.bin", Some(&sd), &opts()).unwrap();
    assert_eq!(read_all(src.as_mut()).unwrap(), b"yy");
}

#[test]
fn missing_sd_file_is_sd_file_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let sd = HostDir(dir.path().to_path_buf());
    match open("file://sdcard/nope.bin", Some(&sd), &opts()) {
        Err(e @ SourceError::SdFileNotFound { .. }) => {
            assert_eq!(e.adf_reason(), reason::FILE_NOT_FOUND);
            assert!(e.to_string().contains("nope.bin"), "{e}");
        }
        Err(other) => panic!("expected SdFileNotFound, got {other}"),
        Ok(_) => panic!("expected SdFileNotFound, got a source"),
    }
}

#[test]
fn file_uri_without_sd_card_is_no_sd_card() {
    let e = open("file://sdcard/x.bin", None, &opts()).err().unwrap();
    assert!(matches!(e, SourceError::NoSdCard { .. }), "{e}");
    assert_eq!(e.adf_reason(), reason::STREAM_INIT_FAIL);
}

#[test]
fn file_uri_escaping_the_card_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let sd = HostDir(dir.path().join("card"));
    std::fs::create_dir(dir.path().join("card")).unwrap();
    std::fs::write(dir.path().join("secret.bin"), b"s").unwrap();
    let e = open("file://sdcard/../secret.bin", Some(&sd), &opts())
        .err()
        .unwrap();
    assert!(matches!(e, SourceError::OutsideSdCard { .. }), "{e}");
}

/// An `SdCardFs` that says the file is longer than it is (a truncated card read).
struct LyingCard;
impl SdCardFs for LyingCard {
    fn open(&self, _uri: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        Ok((Box::new(std::io::Cursor::new(vec![1u8; 10])), 25))
    }
}

#[test]
fn sd_file_shorter_than_its_size_is_short_body() {
    let mut src = open("file://sdcard/x.bin", Some(&LyingCard), &opts()).unwrap();
    match read_all(src.as_mut()) {
        Err(SourceError::ShortBody { expected, got, .. }) => assert_eq!((expected, got), (25, 10)),
        other => panic!("expected ShortBody, got {other:?}"),
    }
}

#[test]
fn range_request_honoured_with_206() {
    let data = body(4000);
    let server_data = data.clone();
    let (base, _server) = serve(1, move |_, range| {
        let start: usize = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse().ok())
            .expect("a Range: bytes=N- header");
        Reply {
            status: 206,
            headers: vec![(
                "Content-Range",
                format!(
                    "bytes {start}-{}/{}",
                    server_data.len() - 1,
                    server_data.len()
                ),
            )],
            ..Reply::ok(server_data[start..].to_vec())
        }
    });
    let r = open_range(&format!("{base}/a.bin"), 1500, None, &opts()).unwrap();
    assert!(r.honoured);
    let mut src = r.source;
    assert_eq!(src.content_length(), Some(2500));
    assert_eq!(read_all(src.as_mut()).unwrap(), &data[1500..]);
}

#[test]
fn range_request_ignored_gives_whole_body_not_honoured() {
    let data = body(4000);
    let server_data = data.clone();
    let (base, _server) = serve(1, move |_, range| {
        assert_eq!(range.as_deref(), Some("bytes=1500-"));
        Reply::ok(server_data.clone())
    });
    let r = open_range(&format!("{base}/a.bin"), 1500, None, &opts()).unwrap();
    assert!(!r.honoured);
    let mut src = r.source;
    assert_eq!(src.content_length(), Some(4000));
    assert_eq!(read_all(src.as_mut()).unwrap(), data);
}

#[test]
fn range_206_with_wrong_start_is_rejected() {
    let (base, _server) = serve(1, |_, _| Reply {
        status: 206,
        headers: vec![("Content-Range", "bytes 0-9/10".to_string())],
        ..Reply::ok(vec![0u8; 10])
    });
    let e = open_range(&format!("{base}/a.bin"), 5, None, &opts())
        .err()
        .unwrap();
    assert!(
        matches!(e, SourceError::RangeMismatch { requested: 5, .. }),
        "{e}"
    );
}

#[test]
fn range_on_sd_file_skips_forward() {
    let dir = tempfile::tempdir().unwrap();
    let data = body(1000);
    std::fs::write(dir.path().join("x.bin"), &data).unwrap();
    let sd = HostDir(dir.path().to_path_buf());
    let r = open_range("file://sdcard/x.bin", 600, Some(&sd), &opts()).unwrap();
    assert!(r.honoured);
    let mut src = r.source;
    assert_eq!(src.content_length(), Some(400));
    assert_eq!(read_all(src.as_mut()).unwrap(), &data[600..]);
    let e = open_range("file://sdcard/x.bin", 1001, Some(&sd), &opts())
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            SourceError::RangeNotSatisfiable {
                start: 1001,
                length: 1000,
                ..
            }
        ),
        "{e}"
    );
}

// ---------------------------------------------------------------- HTTPS

struct Pki {
    ca_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key_der: Vec<u8>,
}

/// A fresh CA and a server certificate for 127.0.0.1 signed by it.
fn make_pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ota-service test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone()],
        key_der: key.serialize_der(),
    }
}

/// A one-connection TLS server on 127.0.0.1 that answers any request with `body`.
fn tls_server(pki: &Pki, body: Vec<u8>) -> (String, JoinHandle<bool>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pki.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone())),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let Some(tcp) = accept_one(&listener) else {
            return false;
        };
        let Ok(conn) = rustls::ServerConnection::new(config) else {
            return false;
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        if read_head(&mut tls).map_or(true, |h| h.is_empty()) {
            return false; // handshake refused by the client
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let ok = tls.write_all(head.as_bytes()).is_ok() && tls.write_all(&body).is_ok();
        tls.conn.send_close_notify();
        let _ = tls.flush();
        ok
    });
    (format!("https://127.0.0.1:{port}"), handle)
}

#[test]
fn https_with_pinned_ca_reads_body() {
    let pki = make_pki();
    let data = body(20_000);
    let (base, server) = tls_server(&pki, data.clone());
    let o = SourceOptions {
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        ..opts()
    };
    let mut src = open_http(&format!("{base}/app.bin"), &o).unwrap();
    assert_eq!(src.content_length(), Some(20_000));
    assert_eq!(read_all(src.as_mut()).unwrap(), data);
    assert!(
        server.join().unwrap(),
        "server did not complete the exchange"
    );
}

#[test]
fn https_without_pinning_rejects_unknown_ca() {
    let pki = make_pki();
    let (base, server) = tls_server(&pki, b"secret".to_vec());
    let e = open_http(&format!("{base}/app.bin"), &opts())
        .err()
        .unwrap();
    match &e {
        SourceError::Tls { detail, .. } => assert!(detail.contains("certificate"), "{e}"),
        other => panic!("expected Tls, got {other:?}"),
    }
    assert_eq!(e.adf_reason(), reason::STREAM_INIT_FAIL);
    assert!(
        !server.join().unwrap(),
        "the server must not have served the body"
    );
}

#[test]
fn https_with_a_different_pinned_ca_is_rejected() {
    let pki = make_pki();
    let other = make_pki();
    let (base, server) = tls_server(&pki, b"secret".to_vec());
    let o = SourceOptions {
        ca_pem: Some(other.ca_pem.into_bytes()),
        ..opts()
    };
    let e = open_http(&format!("{base}/app.bin"), &o).err().unwrap();
    assert!(matches!(e, SourceError::Tls { .. }), "{e:?}");
    assert!(!server.join().unwrap());
}

#[test]
fn https_with_pem_without_certificate_is_bad_cert() {
    let o = SourceOptions {
        ca_pem: Some(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec()),
        ..opts()
    };
    // No server: the PEM is checked before connecting.
    let e = open_http("https://127.0.0.1:9/app.bin", &o).err().unwrap();
    assert!(matches!(e, SourceError::BadCert { .. }), "{e:?}");
}

#[cfg(unix)]
#[test]
fn host_dir_refuses_links_out_of_the_folder_fifos_and_dev_zero() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card");
    std::fs::create_dir(&card).unwrap();
    std::fs::write(dir.path().join("secret.bin"), b"secret").unwrap();
    std::fs::write(card.join("real.bin"), b"real").unwrap();
    std::os::unix::fs::symlink("../secret.bin", card.join("evil.bin")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", card.join("zero.bin")).unwrap();
    std::os::unix::fs::symlink("real.bin", card.join("alias.bin")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(card.join("pipe.bin"))
        .status()
        .is_ok_and(|s| s.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let sd = HostDir(card.clone());
    thread::spawn(move || {
        let mut out = Vec::new();
        for name in ["evil.bin", "zero.bin", "pipe.bin", "alias.bin"] {
            let uri = format!("file://sdcard/{name}");
            out.push(match open(&uri, Some(&sd), &opts()) {
                Ok(mut s) => read_all(s.as_mut()).map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            });
        }
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("opening the card's files blocked or never ended");
    for r in &out[..2] {
        let e = r.as_ref().unwrap_err();
        assert!(e.contains("outside the card folder"), "{e}");
    }
    if fifo {
        let e = out[2].as_ref().unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
    assert!(out[3].is_ok(), "{:?}", out[3]);
}
