//! `ota-bench ddi-capacity`: how many DDI polls per second one `ota serve --fleet` instance
//! sustains, on SQLite and on PostgreSQL, with `--devices` registered devices: p50/p99
//! latency and the server's memory, in one run.
//!
//! For each database: a fresh `ota serve DIR --fleet --db ...` process (the `ota` binary
//! beside this one, or `--ota`), every device registered by its first poll (gateway token:
//! the server creates the device), then `--concurrency` keep-alive clients poll pseudo-random
//! devices for `--seconds` (each poll authenticates the gateway token, reads the device, looks
//! for an open action and writes `last_seen`, as for a real device). PostgreSQL is a
//! throwaway server from Debian's binaries (`initdb`, `pg_ctl`, as the fleet tests start it),
//! or `--postgres URL`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::load::{self, Case, Conn};

#[path = "../../ota-server/tests/fleet/pg.rs"]
mod pg;

const GATEWAY: &str = "bench-gateway-token";

pub struct Args {
    pub devices: u64,
    pub seconds: u64,
    pub concurrency: usize,
    pub ota: Option<PathBuf>,
    pub postgres: Option<String>,
    pub no_postgres: bool,
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start(ota: &PathBuf, dir: &std::path::Path, db: &str) -> Result<Server> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(ota)
        .arg("serve")
        .arg(dir.join("www"))
        .args(["--fleet", "--quiet", "--db", db, "--bind"])
        .arg(addr.to_string())
        .arg("--gateway-token-file")
        .arg(dir.join("gw.token"))
        .arg("--admin-token-file")
        .arg(dir.join("admin.token"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("serve.log"))?))
        .spawn()
        .with_context(|| format!("starting {}", ota.display()))?;
    let mut s = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("ota serve did not listen on {addr} within 30 s");
        }
        if let Some(st) = s.child.try_wait()? {
            bail!(
                "ota serve exited at start ({st}): {}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(s)
}

/// Register devices 0..n by their first poll, `c` clients at once.
fn register(addr: SocketAddr, n: u64, c: usize) -> Result<Duration> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..c)
        .map(|_| {
            let (next, errors) = (next.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let head = format!(
                        "GET /DEFAULT/controller/v1/sim-{i:06} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: GatewayToken {GATEWAY}\r\n\r\n"
                    );
                    match conn.request(addr, head.as_bytes(), None) {
                        Ok(a) if a.status == 200 => {}
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow!("a client thread panicked"))?;
    }
    let e = errors.load(Ordering::Relaxed);
    if e > 0 {
        bail!("{e} of {n} registering polls failed");
    }
    Ok(t0.elapsed())
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Row {
    db: &'static str,
    register: Duration,
    out: load::Outcome,
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
}

fn measure(a: &Args, ota: &PathBuf, name: &'static str, db: &str) -> Result<Row> {
    let t = tempfile::tempdir()?;
    std::fs::create_dir(t.path().join("www"))?;
    std::fs::write(t.path().join("gw.token"), format!("{GATEWAY}\n"))?;
    std::fs::write(t.path().join("admin.token"), "bench-admin-token\n")?;
    let db = if db.is_empty() {
        format!("sqlite:{}", t.path().join("fleet.db").display())
    } else {
        db.to_string()
    };
    let srv = start(ota, t.path(), &db)?;
    eprintln!(
        "ddi-capacity: {name}: registering {} devices ...",
        a.devices
    );
    let register = register(srv.addr, a.devices, a.concurrency)?;
    eprintln!(
        "ddi-capacity: {name}: registered in {:.1} s; polling for {} s with {} clients ...",
        register.as_secs_f64(),
        a.seconds,
        a.concurrency
    );
    let case = Case {
        name: format!("ddi-{name}"),
        path: "",
        concurrency: a.concurrency,
        range: None,
        ddi: Some((format!("GatewayToken {GATEWAY}"), a.devices)),
    };
    let out = load::run(srv.addr, &case, Duration::from_secs(a.seconds.max(1)));
    let pid = srv.child.id();
    Ok(Row {
        db: name,
        register,
        rss_kib: status_kib(pid, "VmRSS:"),
        hwm_kib: status_kib(pid, "VmHWM:"),
        out,
    })
}

pub fn run(a: Args) -> Result<()> {
    let ota = match &a.ota {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("ota"))
            .ok_or_else(|| anyhow!("no folder for the ota binary: give --ota"))?,
    };
    if !ota.exists() {
        bail!(
            "{}: no ota binary (cargo build --release -p ota, or --ota PATH)",
            ota.display()
        );
    }
    if a.devices == 0 || a.devices > 1_000_000 || a.concurrency == 0 || a.concurrency > 1024 {
        bail!("--devices must be 1..=1000000 and --concurrency 1..=1024");
    }
    let mut rows = vec![measure(&a, &ota, "SQLite", "")?];
    let mut _pg = None;
    if !a.no_postgres {
        let url = match &a.postgres {
            Some(u) => Some(u.clone()),
            None => {
                _pg = pg::Postgres::start();
                _pg.as_ref().map(|p| p.url.clone())
            }
        };
        match url {
            Some(u) => rows.push(measure(&a, &ota, "PostgreSQL", &u)?),
            None => eprintln!("ddi-capacity: PostgreSQL skipped (no binaries, no --postgres)"),
        }
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "DDI polls, one ota serve --fleet instance, {} registered devices, {} clients (keep-alive), {} s, {cores} cores (shared with the load generator)",
        a.devices, a.concurrency, a.seconds
    );
    println!("| database | registration (first polls) | polls/s | p50 | p99 | errors | server RSS (peak) |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let ms = |p: f64| r.out.pct(p).map_or("-".into(), |v| format!("{v:.2} ms"));
        let mib =
            |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        println!(
            "| {} | {:.1} s ({:.0}/s) | {:.0} | {} | {} | {} | {} ({}) |",
            r.db,
            r.register.as_secs_f64(),
            a.devices as f64 / r.register.as_secs_f64().max(1e-9),
            r.out.rps(),
            ms(50.0),
            ms(99.0),
            r.out.errors,
            mib(r.rss_kib),
            mib(r.hwm_kib),
        );
    }
    Ok(())
}
