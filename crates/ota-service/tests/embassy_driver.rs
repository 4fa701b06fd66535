//! The embassy driver over embassy-net on the PC (`ota_net::sim::Device`): the transport opens
//! `http://` through the simulated stack and the user-space gateway to a flaky server on
//! 127.0.0.1, and its bodies, errors and ranges are the std driver's.

use std::time::Duration;

use ota_net::http::Client;
use ota_net::sim::{Device, LinkSpec, GATEWAY};
use ota_service::embassy_driver::{run_with, EmbassyClock, EmbassyTransport};
use ota_service::io::{Clock, Request, Transport};
use ota_service::source::{Phase, SourceError, SourceOptions};
use ota_testsrv::{Faults, FlakyServer, Stall};

const LEN: usize = 64 * 1024;

fn file() -> Vec<u8> {
    (0..LEN).map(|i| (i * 13 + i / 509) as u8).collect()
}

fn url(srv: &FlakyServer) -> String {
    format!("http://{GATEWAY}:{}/fw.bin", srv.addr().port())
}

fn device(spec: &str) -> Device {
    Device::new(LinkSpec::parse(spec).unwrap()).unwrap()
}

/// Runs `f` with an embassy transport on `dev`.
fn with_transport<T>(dev: &mut Device, f: impl AsyncFnOnce(EmbassyTransport) -> T) -> T {
    let mut client: Client<_> = Client::new(dev.connector());
    let fut = run_with(&mut client, f);
    // `Device::block_on` runs the stack beside the future.
    dev.block_on(fut)
}

async fn read_all(t: &EmbassyTransport, req: Request<'_>) -> Result<(bool, Vec<u8>), SourceError> {
    let mut o = t.open(req).await?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1500];
    loop {
        let n = o.body.read(&mut buf).await?;
        if n == 0 {
            return Ok((o.honoured, out));
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn embassy_transport_downloads_then_resumes_with_range_and_if_range() {
    let data = file();
    let srv = FlakyServer::start(data.clone(), Faults::default()).unwrap();
    let uri = url(&srv);
    let opts = SourceOptions::default();
    let mut dev = device("seed=1");
    let (whole, rest, validator) = with_transport(&mut dev, async |t| {
        let whole = read_all(&t, Request::whole(&uri, &opts)).await.unwrap();
        let o = t.open(Request::whole(&uri, &opts)).await.unwrap();
        assert_eq!(o.total_length, Some(LEN as u64));
        let validator = o.validator().map(|(_, v)| v.to_string()).unwrap();
        drop(o);
        let req = Request {
            start: 40_000,
            if_range: Some(&validator),
            ..Request::whole(&uri, &opts)
        };
        let rest = read_all(&t, req).await.unwrap();
        (whole, rest, validator)
    });
    assert!(whole.0 && whole.1 == data, "the whole file differs");
    assert!(rest.0, "the range was not honoured");
    assert!(rest.1 == data[40_000..], "the rest differs");
    let reqs = srv.requests();
    assert_eq!(reqs.last().unwrap().range_start, Some(40_000));
    assert_eq!(
        reqs.last().unwrap().if_range.as_deref(),
        Some(validator.as_str())
    );
}

#[test]
fn embassy_transport_maps_http_errors_like_the_std_driver() {
    let srv = FlakyServer::start(
        file(),
        Faults {
            status_first: Some((404, 1)),
            ..Faults::default()
        },
    )
    .unwrap();
    let uri = url(&srv);
    let opts = SourceOptions::default();
    let mut dev = device("");
    let (e404, https, ok) = with_transport(&mut dev, async |t| {
        let e404 = t.open(Request::whole(&uri, &opts)).await.err();
        let https = t
            .open(Request::whole("https://host.ota/x", &opts))
            .await
            .err();
        let ok = read_all(&t, Request::whole(&uri, &opts))
            .await
            .map(|r| r.1.len());
        (e404, https, ok)
    });
    assert!(
        matches!(e404, Some(SourceError::HttpStatus { status: 404, .. })),
        "{e404:?}"
    );
    // Without `tls`: not spoken. With it (a workspace build has it on): never without a
    // pinned CA.
    #[cfg(not(feature = "tls"))]
    assert!(
        matches!(https, Some(SourceError::UnsupportedScheme { .. })),
        "{https:?}"
    );
    #[cfg(feature = "tls")]
    assert!(
        matches!(&https, Some(SourceError::Tls { detail, .. }) if detail.contains("no pinned CA")),
        "{https:?}"
    );
    assert_eq!(ok.unwrap(), LEN);
}

#[test]
fn embassy_transport_times_out_a_stalled_body_and_a_dropped_connection_is_short() {
    let stall = FlakyServer::start(
        file(),
        Faults {
            stall: Some(Stall {
                at: 20_000,
                duration: Duration::from_secs(20),
            }),
            ..Faults::default()
        },
    )
    .unwrap();
    let dropper = FlakyServer::start(
        file(),
        Faults {
            drop_at: vec![30_000],
            ..Faults::default()
        },
    )
    .unwrap();
    let (u1, u2) = (url(&stall), url(&dropper));
    let opts = SourceOptions {
        timeout: Duration::from_millis(800),
        ..SourceOptions::default()
    };
    let mut dev = device("");
    let (stalled, dropped) = with_transport(&mut dev, async |t| {
        let t0 = EmbassyClock.now_ms();
        let stalled = read_all(&t, Request::whole(&u1, &opts)).await.err();
        let waited = EmbassyClock.now_ms() - t0;
        assert!(waited < 10_000, "the stall held the body {waited} ms");
        let dropped = read_all(&t, Request::whole(&u2, &opts)).await.err();
        (stalled, dropped)
    });
    assert!(
        matches!(
            stalled,
            Some(SourceError::Timeout {
                phase: Phase::Read,
                ..
            })
        ),
        "{stalled:?}"
    );
    assert!(
        matches!(
            dropped,
            Some(SourceError::ShortBody { expected, got, .. })
                if expected == LEN as u64 && (29_000..=30_000).contains(&got)
        ),
        "{dropped:?}"
    );
    for e in [stalled.unwrap(), dropped.unwrap()] {
        assert!(e.is_transient(), "{e}");
        assert_eq!(
            e.adf_reason(),
            ota_service::source::reason::STREAM_RD_FAIL,
            "{e}"
        );
    }
}

#[test]
fn a_body_dropped_midway_gives_its_connection_up_for_the_next_open() {
    let data = file();
    let srv = FlakyServer::start(data.clone(), Faults::default()).unwrap();
    let uri = url(&srv);
    let opts = SourceOptions::default();
    let mut dev = device("");
    let (first, second) = with_transport(&mut dev, async |t| {
        let mut o = t.open(Request::whole(&uri, &opts)).await.unwrap();
        let mut buf = [0u8; 1000];
        let n = o.body.read(&mut buf).await.unwrap();
        // What the answer promised, as the std driver's sources say, after a read too.
        assert_eq!(o.body.content_length(), Some(LEN as u64));
        // A new open while the first body is still held: the first is given up.
        let second = read_all(&t, Request::whole(&uri, &opts)).await.unwrap();
        let first = o.body.read(&mut buf).await;
        assert!(n > 0);
        (first, second)
    });
    assert!(
        matches!(first, Err(SourceError::Network { .. })),
        "{first:?}"
    );
    assert!(second.1 == data);
}

fn redirecting_to(location: &str) -> FlakyServer {
    FlakyServer::start(
        file(),
        Faults {
            redirect_to: Some(location.to_string()),
            ..Faults::default()
        },
    )
    .unwrap()
}

#[test]
fn embassy_transport_follows_redirects_within_max_redirects() {
    let data = file();
    let target = FlakyServer::start(data.clone(), Faults::default()).unwrap();
    let hop = redirecting_to(&url(&target));
    // A path on the same host: the server redirects to itself, for ever.
    let looping = redirecting_to("/again");
    let to_https = redirecting_to("https://host.ota/fw.bin");
    let opts = SourceOptions::default();
    let mut dev = device("");
    let (u1, u2, u3) = (url(&hop), url(&looping), url(&to_https));
    let (followed, looped, https) = with_transport(&mut dev, async |t| {
        let followed = read_all(&t, Request::whole(&u1, &opts)).await;
        let looped = t.open(Request::whole(&u2, &opts)).await.err();
        let https = t.open(Request::whole(&u3, &opts)).await.err();
        (followed, looped, https)
    });
    assert!(followed.unwrap().1 == data, "the redirected body differs");
    assert!(
        matches!(looped, Some(SourceError::TooManyRedirects { max, .. }) if max == opts.max_redirects),
        "{looped:?}"
    );
    assert_eq!(looping.requests().len(), opts.max_redirects as usize + 1);
    assert!(
        matches!(&https, Some(SourceError::BadRedirect { location, .. })
            if location == "https://host.ota/fw.bin"),
        "{https:?}"
    );
}
