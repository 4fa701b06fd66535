//! `GET` a URL from a simulated device: embassy-net on this PC behind a shaped link and the
//! user-space gateway (10.0.2.2 and `host.ota` mean this machine's 127.0.0.1).
//!
//! ```text
//! ota serve --dir fw --bind 127.0.0.1:8080 &
//! cargo run -p ota-net --example sim_get -- http://10.0.2.2:8080/app.bin "rate=56kB/s,rtt=60ms,loss=1%,seed=1"
//! ```

use std::process::ExitCode;
use std::time::Instant;

use embedded_io_async::Read;
use ota_net::http::{Client, GetOptions};
use ota_net::sim::{Device, LinkSpec};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.first() else {
        eprintln!("usage: sim_get URL [LINK-SPEC]   (e.g. http://10.0.2.2:8080/app.bin \"rate=56kB/s,rtt=60ms\")");
        return ExitCode::from(2);
    };
    let spec = match LinkSpec::parse(args.get(1).map_or("", String::as_str)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("E: {e}");
            return ExitCode::from(2);
        }
    };
    let mut dev = match Device::new(spec) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("E: cannot start the gateway thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut client: Client<_> = Client::new(dev.connector());
    let t0 = Instant::now();
    let result = dev.block_on(async {
        let mut r = client.get(url, GetOptions::default()).await?;
        let (status, etag) = (r.status, r.etag);
        let mut n = 0u64;
        let mut buf = [0u8; 4096];
        loop {
            match r.body.read(&mut buf).await? {
                0 => return Ok::<_, ota_net::http::Error>((status, etag, n)),
                k => n += k as u64,
            }
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    match result {
        Ok((status, etag, n)) => {
            let etag = etag.map(|e| e.to_string()).unwrap_or_else(|| "-".into());
            println!(
                "{status} {n} bytes in {secs:.3} s ({:.1} kB/s), ETag {etag}, link {spec}",
                n as f64 / secs / 1e3
            );
            println!("{:?}", dev.stats());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("E: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
