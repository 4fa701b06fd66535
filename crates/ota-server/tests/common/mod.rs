//! Helpers for the server tests: an in-process server on an ephemeral loopback port, a raw
//! HTTP/1.1 client (so malformed requests can be sent as they are), test images.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use ota_server::{Background, ServeOptions};

pub fn serve(dir: &Path) -> Background {
    serve_with(dir, |_| {})
}

/// A server with options changed by `f` (on top of the test defaults).
pub fn serve_with(dir: &Path, f: impl FnOnce(&mut ServeOptions)) -> Background {
    let mut o = ServeOptions::dir(dir);
    o.bind = "127.0.0.1:0".parse().unwrap();
    o.access_log = false;
    o.rescan = Duration::from_millis(50);
    f(&mut o);
    Background::start(o).expect("server starts")
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// The connection closed before Content-Length bytes arrived.
    pub short: bool,
}

impl Reply {
    pub fn h(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|s| s.as_str())
    }
}

/// Send `head` (request line + headers, without the final blank line; `Connection: close` is
/// added) and read the whole answer.
pub fn raw(addr: SocketAddr, head: &str) -> Reply {
    let req = format!("{head}\r\nConnection: close\r\n\r\n");
    raw_bytes(addr, req.as_bytes())
}

pub fn raw_bytes(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).expect("send");
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    parse(&all)
}

pub fn parse(all: &[u8]) -> Reply {
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(all)));
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let body = all[end + 4..].to_vec();
    let short = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| body.len() < n);
    Reply {
        status,
        headers,
        body,
        short,
    }
}

pub fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1");
    for (k, v) in extra {
        head.push_str(&format!("\r\n{k}: {v}"));
    }
    raw(addr, &head)
}

/// A valid app image.
pub fn image(chip: ota_core::Chip, project: &str, version: &str, size: u32) -> Vec<u8> {
    let mut spec = ota_core::image::ImageSpec::new(chip, project, version);
    spec.total_size = Some(size);
    let mut out = Vec::new();
    ota_core::image::build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
    out
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    ota_core::image::Hex(&sha2::Sha256::digest(b)).to_string()
}

/// Poll `f` every 20 ms for at most `secs` seconds.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
