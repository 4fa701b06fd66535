//! Downloads through embassy-net on the PC: the device's frames cross the link model to the
//! user-space gateway, which relays them to `ota serve` on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::*;
use embedded_io_async::Read;
use ota_net::http::{Client, ConnectError, Error, GetOptions, Options, Phase};
use ota_testsrv::{Faults, FlakyServer, Stall};

#[test]
fn unshaped_link_downloads_the_file_byte_for_byte() {
    let data = file(FILE_LEN);
    let (_dir, srv) = serve(&data);
    let mut dev = device("");
    let url = device_url(srv.info.addr.port(), "/fw.bin");
    let got = download(&mut dev, &url, GetOptions::default(), Options::default()).unwrap();
    println!(
        "unshaped: {} bytes in {:?}, {:?}",
        got.body.len(),
        got.elapsed,
        dev.stats()
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.content_length, Some(data.len() as u64));
    assert!(got.body == data, "body differs");
    assert_eq!(dev.stats().gateway.connections, 1);
}

#[test]
fn rate_limited_link_takes_size_over_rate() {
    let data = file(FILE_LEN);
    let (_dir, srv) = serve(&data);
    let mut dev = device("rate=56kB/s,seed=3");
    let url = device_url(srv.info.addr.port(), "/fw.bin");
    let got = download(&mut dev, &url, GetOptions::default(), Options::default()).unwrap();
    assert!(got.body == data, "body differs");
    let expected = Duration::from_secs_f64(data.len() as f64 / 56_000.0);
    let ratio = got.elapsed.as_secs_f64() / expected.as_secs_f64();
    println!(
        "rate=56kB/s: {} bytes in {:.3} s, size/rate = {:.3} s, ratio {ratio:.3}",
        data.len(),
        got.elapsed.as_secs_f64(),
        expected.as_secs_f64()
    );
    // Never faster than the rate (less the 4 % of each frame that is headers); the upper
    // bound leaves room for a loaded machine (one run measured 1.26 on a busy CI box).
    assert!(
        (0.8..=2.0).contains(&ratio),
        "elapsed {:?} vs {expected:?}",
        got.elapsed
    );
}

#[test]
fn lossy_link_still_delivers_every_byte() {
    let data = file(FILE_LEN);
    let (_dir, srv) = serve(&data);
    let mut dev = device("loss=5%,seed=1");
    let url = device_url(srv.info.addr.port(), "/fw.bin");
    let got = download(&mut dev, &url, GetOptions::default(), Options::default()).unwrap();
    let st = dev.stats();
    println!("loss=5%,seed=1: {:?}, {st:?}", got.elapsed);
    assert!(got.body == data, "body differs");
    assert!(
        st.down.lost + st.up.lost > 0,
        "the link lost nothing: {st:?}"
    );
}

#[test]
fn reordering_and_latency_do_not_corrupt_the_body() {
    let data = file(FILE_LEN);
    let (_dir, srv) = serve(&data);
    let mut dev = device("rtt=20ms,reorder=3%,loss=1%,seed=9");
    let url = device_url(srv.info.addr.port(), "/fw.bin");
    let got = download(&mut dev, &url, GetOptions::default(), Options::default()).unwrap();
    let st = dev.stats();
    println!("rtt=20ms,reorder=3%,loss=1%: {:?}, {st:?}", got.elapsed);
    assert!(got.body == data, "body differs");
    assert!(
        st.down.reordered + st.up.reordered > 0,
        "nothing reordered: {st:?}"
    );
}

#[test]
fn range_from_the_middle_returns_the_rest_and_a_stale_if_range_the_whole_file() {
    let data = file(FILE_LEN);
    let (_dir, srv) = serve(&data);
    let mut dev = device("");
    let url = device_url(srv.info.addr.port(), "/fw.bin");
    let from = 123_457u64;
    let first = download(&mut dev, &url, GetOptions::default(), Options::default()).unwrap();
    let etag = first.etag.expect("ota serve sends an ETag");
    assert!(!etag.is_weak());

    let get = GetOptions {
        range_from: Some(from),
        if_range: Some(etag.as_str()),
        ..GetOptions::default()
    };
    let part = download(&mut dev, &url, get, Options::default()).unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(
        part.content_range,
        Some(ota_net::http::ContentRange::Bytes {
            first: from,
            last: data.len() as u64 - 1,
            complete_length: Some(data.len() as u64)
        })
    );
    assert_eq!(part.content_length, Some(data.len() as u64 - from));
    assert!(part.body == data[from as usize..], "the rest differs");

    let stale = GetOptions {
        range_from: Some(from),
        if_range: Some("\"not-the-current-version\""),
        ..GetOptions::default()
    };
    let whole = download(&mut dev, &url, stale, Options::default()).unwrap();
    assert_eq!(whole.status, 200);
    assert_eq!(whole.content_range, None);
    assert!(whole.body == data, "the whole file differs");
}

#[test]
fn host_ota_resolves_to_the_gateway_and_unknown_names_fail_as_dns() {
    let data = file(10_000);
    let (_dir, srv) = serve(&data);
    let mut dev = device("");
    let port = srv.info.addr.port();
    let url = format!("http://host.ota:{port}/fw.bin");
    let got = download(&mut dev, &url, GetOptions::default(), Options::default()).unwrap();
    assert!(got.body == data);
    assert!(dev.stats().gateway.dns_answers >= 1);
    let bad = format!("http://nowhere.invalid:{port}/fw.bin");
    let e = download(&mut dev, &bad, GetOptions::default(), Options::default()).unwrap_err();
    assert_eq!(e.0, Error::Connect(ConnectError::Dns), "{}", e.0);
}

#[test]
fn closed_host_port_is_refused_quickly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut dev = device("");
    let t0 = Instant::now();
    let e = download(
        &mut dev,
        &device_url(port, "/fw.bin"),
        GetOptions::default(),
        Options::default(),
    )
    .unwrap_err();
    assert_eq!(e.0, Error::Connect(ConnectError::Refused), "{}", e.0);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(dev.stats().gateway.refused, 1);
}

#[test]
fn server_that_stalls_mid_body_gives_a_stall_error_within_the_read_timeout() {
    let data = file(FILE_LEN);
    let faults = Faults {
        stall: Some(Stall {
            at: 50_000,
            duration: Duration::from_secs(8),
        }),
        ..Faults::default()
    };
    let srv = FlakyServer::start(data.clone(), faults).unwrap();
    let mut dev = device("");
    let options = Options {
        read_timeout: embassy_time::Duration::from_millis(800),
        ..Options::default()
    };
    let t0 = Instant::now();
    let (e, partial) = download(
        &mut dev,
        &device_url(srv.addr().port(), "/fw.bin"),
        GetOptions::default(),
        options,
    )
    .unwrap_err();
    println!(
        "stall: {e} after {:?}, {} bytes",
        t0.elapsed(),
        partial.len()
    );
    assert_eq!(
        e,
        Error::Stalled {
            phase: Phase::Body,
            after: options.read_timeout
        }
    );
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert!(partial == data[..partial.len()] && partial.len() as u64 >= 50_000 - 16 * 1024);
}

#[test]
fn server_that_stalls_before_answering_gives_a_head_stall_and_a_deadline_wins_when_sooner() {
    let faults = Faults {
        never_answer: true,
        lifetime: Duration::from_secs(10),
        ..Faults::default()
    };
    let srv = FlakyServer::start(file(1000), faults).unwrap();
    let mut dev = device("");
    let url = device_url(srv.addr().port(), "/fw.bin");
    let options = Options {
        head_timeout: embassy_time::Duration::from_millis(500),
        ..Options::default()
    };
    let (e, _) = download(&mut dev, &url, GetOptions::default(), options).unwrap_err();
    assert_eq!(
        e,
        Error::Stalled {
            phase: Phase::Head,
            after: embassy_time::Duration::from_millis(500)
        }
    );
    let get = GetOptions {
        deadline: Some(embassy_time::Instant::now() + embassy_time::Duration::from_millis(300)),
        ..GetOptions::default()
    };
    let t0 = Instant::now();
    let (e, _) = download(&mut dev, &url, get, Options::default()).unwrap_err();
    assert_eq!(e, Error::Deadline { phase: Phase::Head });
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn server_that_drops_mid_body_gives_a_short_body_error_with_the_bytes_that_came() {
    let data = file(FILE_LEN);
    let faults = Faults {
        drop_at: vec![60_000],
        ..Faults::default()
    };
    let srv = FlakyServer::start(data.clone(), faults).unwrap();
    let mut dev = device("rate=500kB/s,rtt=10ms,seed=2");
    let (e, partial) = download(
        &mut dev,
        &device_url(srv.addr().port(), "/fw.bin"),
        GetOptions::default(),
        Options::default(),
    )
    .unwrap_err();
    println!("drop: {e}");
    match e {
        Error::ShortBody { expected, got, .. } => {
            assert_eq!(expected, Some(data.len() as u64));
            assert_eq!(got, 60_000);
        }
        other => panic!("expected ShortBody, got {other:?}"),
    }
    assert!(e.to_string().contains("60000 of 204800"), "{e}");
    assert!(partial == data[..60_000]);
}

#[test]
fn download_cut_mid_body_resumes_with_range_and_if_range_to_the_same_bytes() {
    let data = file(FILE_LEN);
    let faults = Faults {
        drop_at: vec![90_000],
        ..Faults::default()
    };
    let srv = FlakyServer::start(data.clone(), faults).unwrap();
    let url = device_url(srv.addr().port(), "/fw.bin");
    let mut dev = device("rate=1MB/s,rtt=30ms,loss=1%,seed=4");
    let mut client: Client<_> = Client::new(dev.connector());
    let (kept, etag) = dev.block_on(async {
        let mut r = client.get(&url, GetOptions::default()).await.unwrap();
        let etag = r.etag.unwrap();
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        let e = loop {
            match r.body.read(&mut buf).await {
                Ok(0) => panic!("the server was to drop the connection"),
                Ok(n) => kept.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, Error::ShortBody { got: 90_000, .. }), "{e:?}");
        (kept, etag)
    });
    let get = GetOptions {
        range_from: Some(kept.len() as u64),
        if_range: Some(etag.as_str()),
        ..GetOptions::default()
    };
    let rest = download(&mut dev, &url, get, Options::default()).unwrap();
    assert_eq!(rest.status, 206);
    assert_eq!(srv.resumed_from(), vec![90_000]);
    let mut whole = kept;
    whole.extend_from_slice(&rest.body);
    assert!(whole == data, "resumed bytes differ");
}

#[test]
fn the_issues_wifi_link_downloads_at_about_its_rate() {
    let data = file(FILE_LEN);
    let (_dir, srv) = serve(&data);
    let mut dev = device("rate=56kB/s,rtt=60ms,loss=1%,seed=5");
    let url = device_url(srv.info.addr.port(), "/fw.bin");
    let got = download(&mut dev, &url, GetOptions::default(), Options::default()).unwrap();
    let ideal = data.len() as f64 / 56_000.0;
    println!(
        "rate=56kB/s,rtt=60ms,loss=1%,seed=5: {:.3} s (size/rate {ideal:.3} s), {:?}",
        got.elapsed.as_secs_f64(),
        dev.stats()
    );
    assert!(got.body == data, "body differs");
    // Loss only slows a download down: never faster than the rate allows.
    assert!(got.elapsed.as_secs_f64() >= ideal * 0.95);
}

#[test]
fn addresses_other_than_the_gateway_are_never_relayed() {
    let mut dev = device("");
    let options = Options {
        connect_timeout: embassy_time::Duration::from_millis(400),
        ..Options::default()
    };
    // Another host on the simulated subnet (nobody answers ARP) and one behind the gateway:
    // the gateway relays only its own address, so both connects time out.
    for url in ["http://10.0.2.99:80/x", "http://203.0.113.7:80/x"] {
        let (e, _) = download(&mut dev, url, GetOptions::default(), options).unwrap_err();
        assert_eq!(
            e,
            Error::Stalled {
                phase: Phase::Connect,
                after: options.connect_timeout
            },
            "{url}"
        );
    }
    let st = dev.stats().gateway;
    assert_eq!((st.connections, st.refused), (0, 0), "{st:?}");
}

#[test]
fn server_that_resets_mid_body_gives_a_short_body_marked_reset() {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // The request is left unread, so closing the socket sends a reset (RFC 1122 4.2.2.13).
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n")
            .unwrap();
        s.write_all(&[0x5a; 1000]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    let mut dev = device("");
    let (e, partial) = download(
        &mut dev,
        &device_url(port, "/x"),
        GetOptions::default(),
        Options::default(),
    )
    .unwrap_err();
    server.join().unwrap();
    println!("reset: {e}");
    assert_eq!(
        e,
        Error::ShortBody {
            expected: Some(50_000),
            got: 1000,
            reset: true
        }
    );
    assert_eq!(partial, vec![0x5a; 1000]);
}

#[test]
fn dhcp_gives_the_device_its_address_and_the_download_works() {
    let data = file(20_000);
    let (_dir, srv) = serve(&data);
    let spec = ota_net::sim::LinkSpec::parse("rtt=10ms").unwrap();
    let mut dev =
        ota_net::sim::Device::with_addressing(spec, ota_net::sim::Addressing::Dhcp).unwrap();
    let got = dev.wait_config_up(Duration::from_secs(5));
    assert_eq!(got, Some((ota_net::sim::DEVICE, ota_net::sim::PREFIX_LEN)));
    let cfg = dev.stack().config_v4().unwrap();
    assert_eq!(cfg.gateway, Some(ota_net::sim::GATEWAY));
    assert_eq!(cfg.dns_servers.as_slice(), &[ota_net::sim::DNS_SERVER]);
    assert!(
        dev.stats().gateway.dhcp_answers >= 2,
        "an OFFER and an ACK at least"
    );
    let url = format!("http://host.ota:{}/fw.bin", srv.info.addr.port());
    let got = download(&mut dev, &url, GetOptions::default(), Options::default()).unwrap();
    assert!(got.body == data);
}

#[test]
fn complete_downloads_close_their_connections_so_many_in_a_row_fit() {
    let data = file(3000);
    let (_dir, srv) = serve(&data);
    let mut dev = device("");
    let url = device_url(srv.info.addr.port(), "/fw.bin");
    // More downloads than the gateway relays at once: each must close behind itself.
    let n = ota_net::sim::gateway::MAX_CONNECTIONS + 6;
    for i in 0..n {
        let got = download(&mut dev, &url, GetOptions::default(), Options::default())
            .unwrap_or_else(|e| panic!("download {i}: {}", e.0));
        assert!(got.body == data);
    }
    // The last FIN exchange may still be in flight: give the gateway a moment.
    let t0 = Instant::now();
    while dev.stats().gateway.open > 0 && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = dev.stats().gateway;
    assert_eq!(
        (st.connections, st.open, st.refused),
        (n as u64, 0, 0),
        "{st:?}"
    );
}

#[test]
fn downloads_given_up_after_the_first_bytes_are_reset_and_leave_nothing_open() {
    // The OTA flow reads an image's header, finds no newer version and stops.
    let data = file(FILE_LEN);
    let (_dir, srv) = serve(&data);
    let mut dev = device("");
    let url = device_url(srv.info.addr.port(), "/fw.bin");
    let mut client: Client<_> = Client::new(dev.connector());
    let n = ota_net::sim::gateway::MAX_CONNECTIONS + 6;
    for i in 0..n {
        let head = dev.block_on(async {
            let mut r = client.get(&url, GetOptions::default()).await?;
            let mut head = [0u8; 300];
            let k = r.body.read(&mut head).await?;
            r.body.abort().await;
            Ok::<_, Error>(head[..k].to_vec())
        });
        let head = head.unwrap_or_else(|e| panic!("download {i}: {e}"));
        assert!(!head.is_empty() && head == data[..head.len()]);
    }
    let t0 = Instant::now();
    while dev.stats().gateway.open > 0 && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = dev.stats().gateway;
    assert_eq!((st.open, st.refused), (0, 0), "{st:?}");
}

#[test]
fn a_response_dropped_mid_body_is_cleaned_up_by_the_gateway_soon() {
    let data = file(FILE_LEN);
    let (_dir, srv) = serve(&data);
    let mut dev = device("");
    let url = device_url(srv.info.addr.port(), "/fw.bin");
    let mut client: Client<_> = Client::new(dev.connector());
    for _ in 0..5 {
        dev.block_on(async {
            let mut r = client.get(&url, GetOptions::default()).await.unwrap();
            let mut head = [0u8; 300];
            r.body.read(&mut head).await.unwrap();
        });
    }
    assert!(
        dev.stats().gateway.open > 0,
        "nothing left open: the test shows nothing"
    );
    // The gateway's zero-window probes (smoltcp, after its retransmission timeout) reach a
    // socket that is gone, and the device's stack answers with a reset.
    let t0 = Instant::now();
    while dev.stats().gateway.open > 0 && t0.elapsed() < Duration::from_secs(6) {
        dev.block_on(embassy_time::Timer::after_millis(20));
    }
    println!("cleaned up after {:?}", t0.elapsed());
    assert_eq!(dev.stats().gateway.open, 0, "{:?}", dev.stats().gateway);
}

#[test]
fn server_that_trickles_the_body_fails_the_rate_rule_instead_of_holding_the_download() {
    let faults = Faults {
        trickle_body: Some(Duration::from_millis(20)),
        ..Faults::default()
    };
    let srv = FlakyServer::start(file(FILE_LEN), faults).unwrap();
    let mut dev = device("");
    let options = Options {
        low_speed_limit: 1000,
        low_speed_time: embassy_time::Duration::from_millis(700),
        ..Options::default()
    };
    let t0 = Instant::now();
    let (e, partial) = download(
        &mut dev,
        &device_url(srv.addr().port(), "/fw.bin"),
        GetOptions::default(),
        options,
    )
    .unwrap_err();
    println!("trickle: {e} after {:?}", t0.elapsed());
    match e {
        Error::TooSlow {
            got, limit, total, ..
        } => {
            assert!(got < 700, "{got}");
            assert_eq!((limit, total), (1000, partial.len() as u64));
        }
        other => panic!("expected TooSlow, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}
