//! `ota fleet-sim`: N emulated devices run a catalogue upgrade against one server; prints
//! successes, times, bytes, and the peak memory of the simulator and of the server.
//!
//! By default (`--mode async`) every device is a future on one current-thread tokio runtime
//! (`LocalSet`), running `ota_sim::run_async` over the async transport of [`net`], at most
//! `--concurrency` at a time, each on a [`CowFlash`] sharing the template's image. `--mode
//! threads` is the older way: `--pool` threads, each device on a whole in-memory flash, the
//! blocking `ota_sim::run`.

mod ddi;
mod net;

use std::cell::RefCell;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ota_core::boot::BootConfig;
use ota_core::image::{self, ImageSpec};
use ota_core::version::VersionPolicy;
use ota_core::Chip;
use ota_emu::device::Device;
use ota_emu::flash::EmuFlash;
use ota_emu::CowFlash;
use ota_service::items::ManifestItem;
use ota_service::{Event, Outcome, UpgradeItem};

use crate::cmd_device::{self, CreateSpec, EXAMPLE_CSV};

#[derive(Args)]
pub struct FleetArgs {
    /// How many devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// The server (`ota serve`): its catalogue is SERVER/manifest.json.
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "ddi",
        conflicts_with = "ddi"
    )]
    server: Option<String>,
    /// Speak hawkBit DDI to this fleet server (`ota serve --fleet`) instead: the devices
    /// register, a rollout of --release is created and started, and devices poll, install,
    /// self-test and report until it finishes or pauses.
    #[arg(long, value_name = "URL", requires_all = ["gateway_token_file", "admin_token_file"])]
    ddi: Option<String>,
    /// `--ddi`: the DDI tenant.
    #[arg(long, default_value = "DEFAULT", requires = "ddi")]
    tenant: String,
    /// `--ddi`: file with the server's gateway token (the devices poll with it).
    #[arg(long, value_name = "FILE", requires = "ddi")]
    gateway_token_file: Option<std::path::PathBuf>,
    /// `--ddi`: file with the admin token (to create the rollout and follow it).
    #[arg(long, value_name = "FILE", requires = "ddi")]
    admin_token_file: Option<std::path::PathBuf>,
    /// `--ddi`: the release to roll out (default: the newest release of --project).
    #[arg(long, requires = "ddi")]
    release: Option<i64>,
    /// `--ddi`: the rollout's groups, cumulative percentages.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10,50,100",
        requires = "ddi"
    )]
    groups: Vec<i64>,
    /// `--ddi`: percent of a group that must succeed before the next starts.
    #[arg(long, default_value_t = 100, requires = "ddi")]
    success_threshold: i64,
    /// `--ddi`: percent of a group whose failure pauses the rollout.
    #[arg(long, default_value_t = 10, requires = "ddi")]
    error_threshold: i64,
    /// `--ddi`: percent of devices whose new app fails its self-test and rolls back.
    #[arg(long, default_value_t = 5.0, requires = "ddi")]
    fail_share: f64,
    /// `--ddi`: seed of the choice of failing devices.
    #[arg(long, default_value_t = 1, requires = "ddi")]
    seed: u64,
    /// `--ddi`: the rollout's name (it also seeds the order of devices into groups);
    /// default `fleet-sim-SEED`.
    #[arg(long, requires = "ddi")]
    name: Option<String>,
    /// `--ddi`: most polling rounds.
    #[arg(long, default_value_t = 200, requires = "ddi")]
    max_rounds: u32,
    /// The project every device runs; the catalogue must hold a newer image of it.
    #[arg(long, default_value = "fleet")]
    project: String,
    /// The devices' chip.
    #[arg(long, default_value = "esp32")]
    chip: String,
    /// The version the devices run before the update.
    #[arg(long, default_value = "v0.0.0")]
    from_version: String,
    /// Version policy of the catalogue item.
    #[arg(long, default_value = "semver", value_parser = ["none", "newer", "semver"])]
    version_check: String,
    /// How devices run: `async`, every device a future on one thread; `threads`, a pool of
    /// threads each running one device at a time on a whole in-memory flash (the old mode).
    #[arg(long, default_value = "async", value_parser = ["async", "threads"])]
    mode: String,
    /// `--mode async`: devices (and so connections) in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// `--mode threads`: devices updating at the same time (threads).
    #[arg(long, default_value_t = 32)]
    pool: usize,
    /// A CA certificate (PEM) to pin, for https servers.
    #[arg(long, value_name = "PEM")]
    cert: Option<std::path::PathBuf>,
    /// HTTP timeout per request, in ms.
    #[arg(long, default_value_t = 10000)]
    timeout_ms: u64,
}

/// `--concurrency` by default: as many as the client's timer queue allows
/// ([`net::MAX_CONCURRENCY`]).
const DEFAULT_CONCURRENCY: usize = net::MAX_CONCURRENCY;
/// Most devices one run simulates (each waiting device is a small future; its results are
/// kept until the report).
const MAX_DEVICES: usize = 1_000_000;

struct DeviceResult {
    ok: bool,
    time: Duration,
    bytes: u64,
    message: String,
}

/// The device every simulated one starts as: the example table, `project from_version` in
/// ota_0, booted once (otadata records ota_0).
fn template(chip: Chip, project: &str, version: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let mut app = Vec::new();
    let mut spec = ImageSpec::new(chip, project, version);
    spec.total_size = Some(32 * 1024);
    image::build_image(&spec, &mut |b: &[u8]| app.extend_from_slice(b))
        .map_err(|e| anyhow!("building the running app: {e}"))?;
    let path = dir.path().join("flash.bin");
    cmd_device::create_device(
        &path,
        &CreateSpec {
            chip,
            flash_size: 4 << 20,
            csv: EXAMPLE_CSV,
            app: Some(&app),
            data: Vec::new(),
        },
    )?;
    let mut dev = crate::glue::open_device(&path)?;
    let table = dev.table().clone();
    cmd_device::boot_device(dev.flash_mut(), &table, chip, true)?;
    dev.flash().sync()?;
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

fn run_one(
    image: &[u8],
    catalogue: &str,
    project: &str,
    policy: VersionPolicy,
    ca: Option<&Vec<u8>>,
    timeout: Duration,
) -> Result<(u64, String)> {
    let flash = EmuFlash::from_image(image.to_vec())?;
    let mut dev = Device::open_named(flash, "fleet device")?;
    let chip = dev.chip();
    let flash_size = dev.flash_size();
    let table = dev.table().clone();
    let mut item = ManifestItem::new(catalogue, project);
    item.policy = policy;
    item.ca_pem = ca.cloned();
    let items: Vec<Box<dyn UpgradeItem<EmuFlash>>> = vec![Box::new(item)];
    // ESP-IDF's default bootloader (no rollback), quiet; the table at the default offset,
    // where the emulated bootloader reads it.
    let mut board = ota_sim::Board::new(table, chip, BootConfig::default());
    board.flash_size = Some(flash_size);
    let mut hooks = FleetHooks::default();
    let sources = ota_sim::Sources {
        sd: None,
        options: ota_service::source::SourceOptions {
            timeout,
            ..Default::default()
        },
    };
    let run = ota_sim::run(
        dev.flash_mut(),
        &mut board,
        ota_sim::UpgradeList::Items(items),
        sources,
        &mut hooks,
    )
    .map_err(cmd_device::device_error)?;
    judge_run(&run, &hooks)
}

/// A simulated device prints nothing: it counts the bytes and keeps the failure message.
#[derive(Default)]
struct FleetHooks {
    bytes: u64,
    failure: String,
}

impl ota_sim::Hooks for FleetHooks {
    type Error = anyhow::Error;

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Progress { bytes, .. } => self.bytes = bytes,
            Event::Result {
                outcome: Outcome::Failed { message, .. } | Outcome::Skipped { message, .. },
                ..
            } => self.failure = message,
            _ => {}
        }
    }
}

pub fn run(a: FleetArgs) -> Result<ExitCode> {
    let chip = Chip::from_name(&a.chip).ok_or_else(|| anyhow!("unknown chip '{}'", a.chip))?;
    let policy = VersionPolicy::from_name(&a.version_check)
        .ok_or_else(|| anyhow!("unknown version check '{}'", a.version_check))?;
    let threads_mode = a.mode == "threads";
    let ca = match &a.cert {
        Some(p) => Some(crate::input::read_bounded(
            p,
            crate::input::PEM_LIMIT,
            "CA certificate",
        )?),
        None => None,
    };
    if a.devices == 0 || a.devices > MAX_DEVICES {
        bail!(
            "--devices must be from 1 to {MAX_DEVICES}, not {}",
            a.devices
        );
    }
    let at_once = if threads_mode {
        if a.pool == 0 {
            bail!("--pool must be at least 1");
        }
        a.pool
    } else {
        if a.concurrency == 0 || a.concurrency > net::MAX_CONCURRENCY {
            bail!(
                "--concurrency must be from 1 to {} (the async client's timers share a queue of {}), not {}",
                net::MAX_CONCURRENCY,
                net::TIMER_QUEUE,
                a.concurrency
            );
        }
        let url = a.server.as_deref().or(a.ddi.as_deref()).unwrap_or("");
        if a.cert.is_some() || !url.starts_with("http://") {
            bail!(
                "--mode async speaks plain http:// only (server '{}'{}): use --mode threads for https",
                url,
                if a.cert.is_some() { ", --cert given" } else { "" }
            );
        }
        a.concurrency
    };
    if let Some(url) = &a.ddi {
        if threads_mode {
            bail!("--ddi runs in --mode async only");
        }
        let image = template(chip, &a.project, &a.from_version)?;
        let sim = ddi::DdiSim {
            url: url.clone(),
            tenant: a.tenant.clone(),
            gateway_token_file: a.gateway_token_file.clone().unwrap_or_default(),
            admin_token_file: a.admin_token_file.clone().unwrap_or_default(),
            release: a.release,
            groups: a.groups.clone(),
            success_threshold: a.success_threshold,
            error_threshold: a.error_threshold,
            fail_share: a.fail_share,
            seed: a.seed,
            name: a
                .name
                .clone()
                .unwrap_or_else(|| format!("fleet-sim-{}", a.seed)),
            max_rounds: a.max_rounds.max(1),
            concurrency: at_once,
            timeout: Duration::from_millis(a.timeout_ms.max(1)),
            project: a.project.clone(),
        };
        return ddi::run(sim, async_template(image.into())?, a.devices);
    }
    let server = a
        .server
        .clone()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    let catalogue = format!("{server}/manifest.json");
    let image = template(chip, &a.project, &a.from_version)?;
    let pid = server_pid(&server);
    println!(
        "fleet-sim: {} {} devices running {} {}, {} at a time ({}), catalogue {}",
        a.devices,
        chip.name(),
        a.project,
        a.from_version,
        at_once.min(a.devices),
        if threads_mode {
            "one thread each"
        } else {
            "futures on one thread"
        },
        catalogue
    );
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let start = Instant::now();
    let (results, threads) = if threads_mode {
        run_threads(&a, Arc::new(image), &catalogue, policy, ca, timeout)?
    } else {
        run_futures(&a, image.into(), &catalogue, policy, timeout)?
    };
    let total = start.elapsed();
    report(&results, total, pid, a.devices, threads)
}

/// `--mode threads`: `--pool` threads, each taking the next device until none is left.
fn run_threads(
    a: &FleetArgs,
    image: Arc<Vec<u8>>,
    catalogue: &str,
    policy: VersionPolicy,
    ca: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(Vec<DeviceResult>, usize)> {
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::with_capacity(a.devices)));
    let peak_threads = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for _ in 0..a.pool.min(a.devices) {
        let (next, results, image) = (next.clone(), results.clone(), image.clone());
        let (catalogue, project, ca) = (catalogue.to_string(), a.project.clone(), ca.clone());
        let peak_threads = peak_threads.clone();
        let n = a.devices;
        threads.push(std::thread::spawn(move || loop {
            if next.fetch_add(1, Ordering::Relaxed) >= n {
                break;
            }
            peak_threads.fetch_max(thread_count(), Ordering::Relaxed);
            let t0 = Instant::now();
            let r = run_one(&image, &catalogue, &project, policy, ca.as_ref(), timeout);
            let res = DeviceResult::of(r, t0.elapsed());
            results.lock().unwrap_or_else(|p| p.into_inner()).push(res);
        }));
    }
    for t in threads {
        t.join().map_err(|_| anyhow!("a device thread panicked"))?;
    }
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((results, peak_threads.load(Ordering::Relaxed)))
}

impl DeviceResult {
    fn of(r: Result<(u64, String)>, time: Duration) -> DeviceResult {
        match r {
            Ok((bytes, version)) => DeviceResult {
                ok: true,
                time,
                bytes,
                message: version,
            },
            Err(e) => DeviceResult {
                ok: false,
                time,
                bytes: 0,
                message: crate::error_text(&e),
            },
        }
    }
}

/// What every async device starts from: the template's image (shared by all their flashes)
/// and what its bootloader header and table say.
struct Template {
    base: Arc<[u8]>,
    chip: Chip,
    flash_size: u32,
    table: ota_core::partition::PartitionTable,
}

fn async_template(base: Arc<[u8]>) -> Result<Template> {
    let dev = Device::open_named(
        CowFlash::<4, 4>::new(base.clone()).map_err(|e| anyhow!("template flash: {e}"))?,
        "fleet template",
    )?;
    Ok(Template {
        chip: dev.chip(),
        flash_size: dev.flash_size(),
        table: dev.table().clone(),
        base,
    })
}

/// `--mode async`: every device a task on one current-thread runtime, `--concurrency` of them
/// past the gate at once. Returns the results and the most threads the process had.
fn run_futures(
    a: &FleetArgs,
    base: Arc<[u8]>,
    catalogue: &str,
    policy: VersionPolicy,
    timeout: Duration,
) -> Result<(Vec<DeviceResult>, usize)> {
    let template = Rc::new(async_template(base)?);
    // One thread runs every device; a host name in the URL is resolved on tokio's blocking
    // pool, kept to one thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .context("starting the simulation's runtime")?;
    let local = tokio::task::LocalSet::new();
    let results: Rc<RefCell<Vec<DeviceResult>>> = Rc::new(RefCell::new(Vec::new()));
    let gate = Rc::new(tokio::sync::Semaphore::new(a.concurrency));
    let peak_threads = Rc::new(std::cell::Cell::new(thread_count()));
    let options = Rc::new(ota_service::source::SourceOptions {
        timeout,
        ..Default::default()
    });
    let (catalogue, project): (Rc<str>, Rc<str>) = (catalogue.into(), a.project.as_str().into());
    for _ in 0..a.devices {
        let (template, results, gate) = (template.clone(), results.clone(), gate.clone());
        let (options, peak_threads) = (options.clone(), peak_threads.clone());
        let (catalogue, project) = (catalogue.clone(), project.clone());
        local.spawn_local(async move {
            let Ok(_permit) = gate.acquire().await else {
                return;
            };
            peak_threads.set(peak_threads.get().max(thread_count()));
            let t0 = Instant::now();
            // Boxed when it starts: a device still waiting at the gate is a small future.
            let r = Box::pin(run_one_async(
                &template, &catalogue, &project, policy, &options,
            ))
            .await;
            results.borrow_mut().push(DeviceResult::of(r, t0.elapsed()));
        });
    }
    rt.block_on(local);
    let results = std::mem::take(&mut *results.borrow_mut());
    Ok((results, peak_threads.get()))
}

async fn run_one_async(
    t: &Template,
    catalogue: &str,
    project: &str,
    policy: VersionPolicy,
    options: &ota_service::source::SourceOptions,
) -> Result<(u64, String)> {
    let mut flash =
        CowFlash::<4, 4>::new(t.base.clone()).map_err(|e| anyhow!("device flash: {e}"))?;
    let mut item = ManifestItem::new(catalogue, project);
    item.policy = policy;
    let items: Vec<Box<dyn UpgradeItem<CowFlash<4, 4>>>> = vec![Box::new(item)];
    let mut board = ota_sim::Board::new(t.table.clone(), t.chip, BootConfig::default());
    board.flash_size = Some(t.flash_size);
    let mut hooks = FleetHooks::default();
    let transport = net::NetTransport::default();
    let run = ota_sim::run_async(
        &mut flash,
        &mut board,
        ota_sim::UpgradeList::Items(items),
        ota_sim::AsyncSources {
            transport: &transport,
            clock: &net::TokioClock,
            options,
        },
        &mut hooks,
    )
    .await
    .map_err(cmd_device::device_error)?;
    judge_run(&run, &hooks)
}

/// A device succeeded when its item did, it restarted, and it booted the other slot; returns
/// the firmware bytes it took and the version it runs.
fn judge_run(run: &ota_sim::Run, hooks: &FleetHooks) -> Result<(u64, String)> {
    if !run.report.results.iter().all(|(_, o)| o.is_success()) {
        bail!("{}", hooks.failure);
    }
    let Some(after) = &run.after_restart else {
        bail!("the update succeeded but asked for no restart");
    };
    if after.partition.offset == run.first.partition.offset {
        bail!(
            "after the restart the device still boots {}",
            after.partition.label.as_str()
        );
    }
    let version = after
        .summary
        .app_desc
        .map(|d| d.version_str().to_string())
        .unwrap_or_default();
    Ok((hooks.bytes, version))
}

/// Threads of this process now (`/proc/self/task`); 0 when /proc is not there.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn report(
    results: &[DeviceResult],
    total: Duration,
    pid: Option<u32>,
    n: usize,
    threads: usize,
) -> Result<ExitCode> {
    let ok = results.iter().filter(|r| r.ok).count();
    let mut times: Vec<Duration> = results.iter().map(|r| r.time).collect();
    times.sort();
    let pct = |p: f64| {
        times
            .get((times.len().saturating_sub(1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let bytes: u64 = results.iter().map(|r| r.bytes).sum();
    let mut versions: Vec<&str> = results
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.message.as_str())
        .collect();
    versions.sort();
    versions.dedup();
    println!(
        "fleet-sim: {ok} of {n} devices updated and booted the new app ({} failed); now running: {}",
        n - ok,
        if versions.is_empty() { "-".to_string() } else { versions.join(", ") }
    );
    println!(
        "fleet-sim: total {:.2} s ({:.0} devices/s); per device mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64().max(1e-9),
        times.iter().map(|t| t.as_secs_f64()).sum::<f64>() * 1000.0 / times.len().max(1) as f64,
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        pct(1.0).as_secs_f64() * 1000.0,
    );
    println!(
        "fleet-sim: firmware bytes served (as counted by the devices): {bytes} ({:.1} MB)",
        bytes as f64 / 1e6
    );
    match peak_kib_of("/proc/self/status") {
        Some(k) => println!(
            "fleet-sim: simulator peak memory: {:.1} MiB (VmHWM), {threads} threads at most",
            k as f64 / 1024.0
        ),
        None => println!("fleet-sim: simulator peak memory: unknown, {threads} threads at most"),
    }
    match pid.and_then(|p| peak_kib(p).map(|k| (p, k))) {
        Some((p, k)) => println!(
            "fleet-sim: server peak memory: {:.1} MiB (VmHWM of pid {p})",
            k as f64 / 1024.0
        ),
        None => println!(
            "fleet-sim: server peak memory: unknown (the server is not a process on this machine)"
        ),
    }
    for r in results.iter().filter(|r| !r.ok).take(5) {
        eprintln!(
            "error: device failed after {:.0} ms: {}",
            r.time.as_secs_f64() * 1000.0,
            r.message
        );
    }
    Ok(if ok == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `VmHWM` of a process, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    peak_kib_of(&format!("/proc/{pid}/status"))
}

/// `VmHWM` of a `/proc/<pid>/status` file, in KiB.
fn peak_kib_of(status: &str) -> Option<u64> {
    let s = std::fs::read_to_string(status).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The pid of the local process listening on the server URL's port (from /proc/net/tcp and
/// the processes' socket descriptors), for a loopback server.
fn server_pid(url: &str) -> Option<u32> {
    let rest = url.split("://").nth(1)?;
    let authority = rest.split('/').next()?;
    let port: u16 = authority.rsplit(':').next()?.parse().ok()?;
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the inode.
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let lport = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && lport == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = proc_dir.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| Path::new(i) == target) {
                    return Some(pid);
                }
            }
        }
    }
    None
}
