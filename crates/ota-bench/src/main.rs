//! `ota-bench secure-boot`: see `secure_boot.rs`.
//!
//! `ota-bench serve`: `ota serve` against `python3 -m http.server` on the same folder, driven
//! by the same bounded load on loopback, measured side by side in one run (never a timed test).
//!
//! Our server runs in its own process: this binary re-executes itself with a hidden
//! `__ota-serve DIR PORT` command that runs `ota_server::Server`, the code behind `ota serve`,
//! so its peak RSS (`VmHWM`, reset per case through `/proc/PID/clear_refs`) is its own.

mod ddi_capacity;
mod delta_apply;
mod delta_make;
mod delta_update;
mod load;
mod secure_boot;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use load::{Case, Outcome};

#[derive(Parser)]
#[command(name = "ota-bench", about = "Benchmarks of ota-service")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// ota serve vs python3 -m http.server: 1 MiB downloads at concurrency 1, 16, 256 and
    /// 64 KiB ranged requests; requests/s, MB/s, p50/p99, peak RSS and ratios.
    Serve {
        /// Seconds of load per case and server.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// The Python to run http.server with.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// ota delta make vs detools' Python create_patch on real and generated pairs: patch
    /// sizes, make times, and apply times with detools' Python and (with --detools-c) its C
    /// library, side by side.
    DeltaMake {
        /// The shared vectors folder (real ESP-IDF images under esptool/).
        #[arg(long, default_value = "../shared/vectors")]
        vectors: PathBuf,
        /// The Python with detools.
        #[arg(long, default_value = ".venv/bin/python")]
        python: String,
        /// The `c/` folder of an eerimoq/detools checkout (its PyPI package has no C library).
        #[arg(long, value_name = "DIR")]
        detools_c: Option<PathBuf>,
        /// Runs per measurement (the median is printed).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// ota-core's delta applier vs detools' Python apply_patch on a 1 MiB firmware-like pair
    /// (patches made by detools: heatshrink, none, lzma); sizes, times, the applier's RAM.
    DeltaApply {
        /// The Python with detools.
        #[arg(long, default_value = ".venv/bin/python")]
        python: String,
        /// Runs per measurement (the median is printed).
        #[arg(long, default_value_t = 21)]
        runs: usize,
    },
    /// Full image vs delta patch over the air: `ota serve --delta-bases 3` and `0`, an emulated
    /// device updating OLD -> NEW through the catalogue (`ota device run --stack embassy
    /// --link`), on the example firmware built twice, the real ESP-IDF blink app and an edit of
    /// it, and two synthetic pairs; bytes over the air, update times and ratios, then patch
    /// make/apply against detools on the same pairs.
    DeltaUpdate {
        /// The emulated link between device and server (`ota device run --link`).
        #[arg(long, default_value = delta_update::DEFAULT_LINK)]
        link: String,
        /// The ota binary (default: the one beside ota-bench, `cargo build --release -p ota`).
        #[arg(long, value_name = "PATH")]
        ota: Option<PathBuf>,
        /// One synthetic 64 KiB pair, no link shaping (the smoke test's mode).
        #[arg(long)]
        quick: bool,
        /// The Python with detools (its columns are skipped without it).
        #[arg(long, default_value = ".venv/bin/python")]
        python: String,
        /// The shared vectors folder (the real ESP-IDF blink app under esptool/).
        #[arg(long, default_value = "../shared/vectors")]
        vectors: PathBuf,
        /// Runs per make/apply measurement (the median is printed).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Secure Boot v2: time of one verification (hash + signature) of an image per scheme
    /// (RSA-3072-PSS, ECDSA P-256, ECDSA P-384), with ota-core's device-side code.
    SecureBoot {
        /// Image size in KiB.
        #[arg(long, default_value_t = 1024)]
        kib: usize,
        /// Verifications per scheme (the median is printed).
        #[arg(long, default_value_t = 9)]
        rounds: usize,
    },
    /// Internal: verify FILE on a thread of SIZE bytes (the secure-boot stack probe's child).
    #[command(name = "__secure-boot-stack", hide = true)]
    SecureBootStack {
        file: PathBuf,
        size: usize,
        sha384: u8,
        verify: u8,
    },
    /// DDI polls per second of one `ota serve --fleet` on SQLite and on PostgreSQL, with
    /// --devices registered devices: p50/p99 latency and the server's memory.
    DdiCapacity {
        #[arg(long, default_value_t = 100_000)]
        devices: u64,
        /// Seconds of polling per database.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Clients polling at once (keep-alive connections).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// The ota binary (default: the one beside ota-bench).
        #[arg(long)]
        ota: Option<PathBuf>,
        /// A PostgreSQL URL to use instead of a throwaway server.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        /// SQLite only.
        #[arg(long)]
        no_postgres: bool,
    },
    /// Internal: run the ota-server on DIR at 127.0.0.1:PORT (what `ota serve DIR` runs).
    #[command(name = "__ota-serve", hide = true)]
    OtaServe { dir: PathBuf, port: u16 },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve { seconds, python } => bench(Duration::from_secs(seconds.max(1)), &python),
        Cmd::DeltaMake {
            vectors,
            python,
            detools_c,
            runs,
        } => delta_make::run(&vectors, &python, detools_c.as_deref(), runs),
        Cmd::DeltaUpdate {
            link,
            ota,
            quick,
            python,
            vectors,
            runs,
        } => delta_update::run(delta_update::Args {
            link: Some(link),
            ota,
            quick,
            python,
            vectors,
            runs,
        }),
        Cmd::DeltaApply { python, runs } => delta_apply::bench(&python, runs.max(1)),
        Cmd::SecureBoot { kib, rounds } => secure_boot::bench(kib.max(1) * 1024, rounds.max(1)),
        Cmd::SecureBootStack {
            file,
            size,
            sha384,
            verify,
        } => secure_boot::stack_probe(&file, size, sha384 != 0, verify != 0),
        Cmd::DdiCapacity {
            devices,
            seconds,
            concurrency,
            ota,
            postgres,
            no_postgres,
        } => ddi_capacity::run(ddi_capacity::Args {
            devices,
            seconds,
            concurrency,
            ota,
            postgres,
            no_postgres,
        }),
        Cmd::OtaServe { dir, port } => {
            let mut o = ota_server::ServeOptions::dir(dir);
            o.bind = SocketAddr::from(([127, 0, 0, 1], port));
            let rt = ota_server::runtime(None)?;
            let server = rt.block_on(ota_server::Server::bind(o))?;
            rt.block_on(server.run(std::future::pending::<()>()));
            Ok(())
        }
    }
}

/// A server process under test; killed (by its pid) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn start(name: &'static str, mut cmd: Command, addr: SocketAddr) -> Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut p = Proc { name, child, addr };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("{name} did not listen on {addr} within 15 s");
            }
            if let Some(st) = p.child.try_wait()? {
                bail!("{name} exited at start ({st})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reset the peak RSS (`echo 5 > /proc/PID/clear_refs`, Linux ≥ 4.0).
    fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// CPU time (user + system) used so far, in clock ticks (`/proc/PID/stat` fields 14, 15).
    fn cpu_ticks(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: split after it.
        let rest = s.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }

    /// `VmHWM` in KiB (peak resident set since start or the last reset).
    fn peak_kib(&self) -> Option<u64> {
        let mut s = String::new();
        std::fs::File::open(format!("/proc/{}/status", self.pid()))
            .ok()?
            .read_to_string(&mut s)
            .ok()?;
        s.lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// 1 MiB of incompressible bytes (xorshift), so nothing can shortcut the transfer.
fn payload(n: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const FILE: &str = "fw-1m.bin";
const FILE_SIZE: usize = 1 << 20;
const RANGE_SIZE: u64 = 64 << 10;

fn bench(per_case: Duration, python: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join(FILE), payload(FILE_SIZE))?;
    let py_port = free_port()?;
    let ota_port = free_port()?;
    let mut py_cmd = Command::new(python);
    py_cmd.args([
        "-m",
        "http.server",
        &py_port.to_string(),
        "--bind",
        "127.0.0.1",
        "--directory",
    ]);
    py_cmd.arg(dir.path());
    let mut ota_cmd = Command::new(std::env::current_exe()?);
    ota_cmd
        .arg("__ota-serve")
        .arg(dir.path())
        .arg(ota_port.to_string());
    let py = Proc::start(
        "python3 -m http.server",
        py_cmd,
        ([127, 0, 0, 1], py_port).into(),
    )?;
    let ours = Proc::start("ota serve", ota_cmd, ([127, 0, 0, 1], ota_port).into())?;
    check_same_bytes(&py, &ours)?;

    let cases = [
        Case::whole("1 MiB GET, concurrency 1", FILE, 1),
        Case::whole("1 MiB GET, concurrency 16", FILE, 16),
        Case::whole("1 MiB GET, concurrency 256", FILE, 256),
        Case::ranged(
            "64 KiB Range GET, concurrency 16",
            FILE,
            16,
            FILE_SIZE as u64,
            RANGE_SIZE,
        ),
    ];
    println!(
        "ota-bench serve: {} s per case and server, loopback, {} cores; file {} ({} bytes)",
        per_case.as_secs(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        FILE,
        FILE_SIZE
    );
    println!(
        "servers: python3 -m http.server (pid {}) and ota serve (pid {}), same folder, access logs to /dev/null\n",
        py.pid(),
        ours.pid()
    );
    println!(
        "{:<34} {:<8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>11} {:>10}",
        "case",
        "server",
        "req/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "206/200",
        "peak RSS",
        "CPU/req"
    );
    let mut ratio16 = None;
    let mut rss = Vec::new();
    for case in &cases {
        let mut results: Vec<(Outcome, Option<u64>)> = Vec::new();
        for p in [&py, &ours] {
            let reset = p.reset_peak();
            let cpu0 = p.cpu_ticks();
            let out = load::run(p.addr, case, per_case);
            let cpu = cpu0.zip(p.cpu_ticks()).map(|(a, b)| b.saturating_sub(a));
            let peak = p.peak_kib();
            print_row(&case.name, p.name, &out, peak, reset, cpu);
            results.push((out, peak));
        }
        let (py_out, py_peak) = &results[0];
        let (our_out, our_peak) = &results[1];
        let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
        println!(
            "{:<34} {:<8} {:>8.1}x {:>8.1}x {:>9} {:>9} {:>7} {:>9} {:>10}",
            "",
            "ours/py",
            r(our_out.rps(), py_out.rps()),
            r(our_out.mbps(), py_out.mbps()),
            fmt_ratio(our_out.pct(50.0), py_out.pct(50.0)),
            fmt_ratio(our_out.pct(99.0), py_out.pct(99.0)),
            "",
            "",
            match (our_peak, py_peak) {
                (Some(a), Some(b)) => format!("{:.2}x", *a as f64 / *b as f64),
                _ => "-".to_string(),
            }
        );
        println!();
        if case.concurrency == 16 && case.range.is_none() {
            ratio16 = Some(r(our_out.rps(), py_out.rps()));
        }
        if case.range.is_none() {
            rss.push((case.concurrency, *our_peak));
        }
    }
    if let Some(x) = ratio16 {
        println!(
            "target >= 10x python's throughput at concurrency 16: {} ({x:.1}x)",
            if x >= 10.0 { "met" } else { "NOT met" }
        );
    }
    let shown: Vec<String> = rss
        .iter()
        .map(|(c, k)| match k {
            Some(k) => format!("c={c}: {:.1} MiB", *k as f64 / 1024.0),
            None => format!("c={c}: -"),
        })
        .collect();
    println!(
        "ota serve peak RSS as concurrency grows: {}",
        shown.join(", ")
    );
    Ok(())
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_string(),
    }
}

/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

fn print_row(
    case: &str,
    server: &str,
    o: &Outcome,
    peak: Option<u64>,
    reset: bool,
    cpu_ticks: Option<u64>,
) {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let per_req = match cpu_ticks {
        Some(t) if o.ok > 0 => format!("{:.0} us", t as f64 / USER_HZ * 1e6 / o.ok as f64),
        _ => "-".to_string(),
    };
    println!(
        "{:<34} {:<8} {:>9.0} {:>9.1} {:>9} {:>9} {:>7} {:>9} {:>11} {:>10}",
        case,
        if server.starts_with("python") {
            "python"
        } else {
            "ota"
        },
        o.rps(),
        o.mbps(),
        ms(o.pct(50.0)),
        ms(o.pct(99.0)),
        o.errors,
        format!("{}/{}", o.partial, o.full),
        match peak {
            Some(k) => format!(
                "{:.1} MiB{}",
                k as f64 / 1024.0,
                if reset { "" } else { "*" }
            ),
            None => "-".to_string(),
        },
        per_req
    );
}

/// Both servers must send the same bytes for the file, or the comparison means nothing.
fn check_same_bytes(a: &Proc, b: &Proc) -> Result<()> {
    let x = load::fetch(a.addr, FILE)?;
    let y = load::fetch(b.addr, FILE)?;
    if x.len() != FILE_SIZE || x != y {
        bail!(
            "{} and {} send different bytes for /{FILE} ({} and {} bytes)",
            a.name,
            b.name,
            x.len(),
            y.len()
        );
    }
    Ok(())
}
