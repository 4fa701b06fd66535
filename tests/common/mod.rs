//! Shared helpers of the CLI tests: run the `ota` binary, find the shared vectors and the
//! Python oracles, serve files on loopback.
#![allow(dead_code)]

pub mod delta;
pub mod espsecure;
pub mod served;
pub mod weed;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::thread::JoinHandle;

pub fn ota(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running the ota binary")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
pub fn ok(args: &[&str]) -> String {
    let o = ota(args);
    assert!(
        o.status.success(),
        "ota {:?} failed ({:?}):\n{}",
        args,
        o.status,
        text(&o)
    );
    text(&o)
}

/// `../shared/vectors`, or None after saying so plainly.
pub fn vectors() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: ../shared/vectors not found (expected at {})",
            p.display()
        );
        None
    }
}

/// The Python with esptool and esp-idf-defs: $OTA_PYTHON, else .venv/bin/python.
pub fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("OTA_PYTHON").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.exists() {
            let ok = Command::new(&c)
                .args(["-c", "import esptool"])
                .output()
                .map(|o| o.status.success());
            if ok.unwrap_or(false) {
                return Some(c);
            }
        }
    }
    eprintln!("SKIP: no Python with esptool (run scripts/test.sh, or set OTA_PYTHON)");
    None
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// What a fake server answers.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// This status, empty body.
    Status(u16),
    /// Promise `promised` bytes, send `body`, close.
    Short { body: Vec<u8>, promised: usize },
}

/// A loopback HTTP server answering every request with `reply`; stops when dropped.
pub struct Server {
    pub port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(reply: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !st.load(std::sync::atomic::Ordering::SeqCst)
                && std::time::Instant::now() < deadline
            {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                            .unwrap();
                        let mut buf = [0u8; 4096];
                        let mut req = Vec::new();
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match c.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => req.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = match &reply {
                            Reply::Body(b) => c
                                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len()).as_bytes())
                                .and_then(|_| c.write_all(b)),
                            Reply::Status(code) => c.write_all(
                                format!("HTTP/1.1 {} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", code).as_bytes(),
                            ),
                            Reply::Short { body, promised } => c
                                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", promised).as_bytes())
                                .and_then(|_| c.write_all(body)),
                        };
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port where nothing listens.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// GET with extra headers: (status, headers text, body).
pub fn get(addr: &str, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    (head[9..12].parse().unwrap(), head, all[end + 4..].to_vec())
}

/// On a device with the example table: otadata (0xD000, 8 KB), the running slot ota_0
/// (0x10000, 1 MB) and flash_tone (0x210000, 1 MB) are as they were.
#[track_caller]
pub fn assert_not_switched(flash: &Path, before: &[u8]) {
    let after = std::fs::read(flash).unwrap();
    assert!(
        after[0xD000..0xF000] == before[0xD000..0xF000],
        "otadata changed"
    );
    assert!(
        after[0x10000..0x110000] == before[0x10000..0x110000],
        "ota_0 changed"
    );
    assert!(
        after[0x210000..0x310000] == before[0x210000..0x310000],
        "flash_tone changed"
    );
}
