//! Helpers for the device-side network tests: a file served by `ota serve` (as a library) on
//! 127.0.0.1, and a download through the simulated embassy-net device.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use embedded_io_async::Read;
use ota_net::http::{Client, ContentRange, ETag, Error, GetOptions, Options};
use ota_net::sim::{Device, LinkSpec, GATEWAY};
use ota_server::{Background, ServeOptions};

/// The size of the test file: about 200 KB, as the brief of the device tests asks.
pub const FILE_LEN: usize = 200 * 1024;

pub fn file(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// `ota serve` on 127.0.0.1 serving `data` as `/fw.bin`.
pub fn serve(data: &[u8]) -> (tempfile::TempDir, Background) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fw.bin"), data).unwrap();
    let mut o = ServeOptions::dir(dir.path());
    o.bind = "127.0.0.1:0".parse().unwrap();
    o.access_log = false;
    let srv = Background::start(o).expect("server starts");
    (dir, srv)
}

/// The URL of `path` on a loopback port, as the device sees it (through the gateway).
pub fn device_url(port: u16, path: &str) -> String {
    format!("http://{GATEWAY}:{port}{path}")
}

pub fn device(spec: &str) -> Device {
    Device::new(LinkSpec::parse(spec).unwrap()).unwrap()
}

#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_range: Option<ContentRange>,
    pub etag: Option<ETag>,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

/// One `GET` through the device, the whole body read; the error keeps the bytes that came.
pub fn download(
    dev: &mut Device,
    url: &str,
    get: GetOptions<'_>,
    options: Options,
) -> Result<Got, (Error, Vec<u8>)> {
    let mut client: Client<_> = Client::with_options(dev.connector(), options);
    let t0 = Instant::now();
    dev.block_on(async {
        let mut resp = client.get(url, get).await.map_err(|e| (e, Vec::new()))?;
        let mut body = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            match resp.body.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e) => return Err((e, body)),
            }
        }
        Ok(Got {
            status: resp.status,
            content_length: resp.content_length,
            content_range: resp.content_range,
            etag: resp.etag,
            body,
            elapsed: t0.elapsed(),
        })
    })
}
