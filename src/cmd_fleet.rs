//! `ota fleet-sim`: N emulated devices (in-memory flashes) run a catalogue upgrade against one
//! server, a bounded pool of threads at a time; prints successes, times, bytes and the
//! server's peak memory.

use std::path::Path;
use std::process::ExitCode;
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
use ota_service::items::ManifestItem;
use ota_service::{Event, Outcome, UpgradeItem};

use crate::cmd_device::{self, CreateSpec, EXAMPLE_CSV};

#[derive(Args)]
pub struct FleetArgs {
    /// How many devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// The server (`ota serve`): its catalogue is SERVER/manifest.json.
    #[arg(long, value_name = "URL")]
    server: String,
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
    /// Devices updating at the same time (threads).
    #[arg(long, default_value_t = 32)]
    pool: usize,
    /// A CA certificate (PEM) to pin, for https servers.
    #[arg(long, value_name = "PEM")]
    cert: Option<std::path::PathBuf>,
    /// HTTP timeout per request, in ms.
    #[arg(long, default_value_t = 10000)]
    timeout_ms: u64,
}

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
    if !run.report.results.iter().all(|(_, o)| o.is_success()) {
        bail!("{}", hooks.failure);
    }
    let Some(after) = run.after_restart else {
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
    if a.devices == 0 || a.pool == 0 {
        bail!("--devices and --pool must be at least 1");
    }
    let ca = match &a.cert {
        Some(p) => Some(crate::input::read_bounded(
            p,
            crate::input::PEM_LIMIT,
            "CA certificate",
        )?),
        None => None,
    };
    let server = a.server.trim_end_matches('/').to_string();
    let catalogue = format!("{server}/manifest.json");
    let image = Arc::new(template(chip, &a.project, &a.from_version)?);
    let pid = server_pid(&server);
    println!(
        "fleet-sim: {} {} devices running {} {}, {} at a time, catalogue {}",
        a.devices,
        chip.name(),
        a.project,
        a.from_version,
        a.pool.min(a.devices),
        catalogue
    );
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::with_capacity(a.devices)));
    let start = Instant::now();
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let mut threads = Vec::new();
    for _ in 0..a.pool.min(a.devices) {
        let (next, results, image) = (next.clone(), results.clone(), image.clone());
        let (catalogue, project, ca) = (catalogue.clone(), a.project.clone(), ca.clone());
        let n = a.devices;
        threads.push(std::thread::spawn(move || loop {
            if next.fetch_add(1, Ordering::Relaxed) >= n {
                break;
            }
            let t0 = Instant::now();
            let r = run_one(&image, &catalogue, &project, policy, ca.as_ref(), timeout);
            let res = match r {
                Ok((bytes, version)) => DeviceResult {
                    ok: true,
                    time: t0.elapsed(),
                    bytes,
                    message: version,
                },
                Err(e) => DeviceResult {
                    ok: false,
                    time: t0.elapsed(),
                    bytes: 0,
                    message: crate::error_text(&e),
                },
            };
            results.lock().unwrap_or_else(|p| p.into_inner()).push(res);
        }));
    }
    for t in threads {
        t.join().map_err(|_| anyhow!("a device thread panicked"))?;
    }
    let total = start.elapsed();
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    report(&results, total, pid, a.devices)
}

fn report(
    results: &[DeviceResult],
    total: Duration,
    pid: Option<u32>,
    n: usize,
) -> Result<ExitCode> {
    let ok = results.iter().filter(|r| r.ok).count();
    let mut times: Vec<Duration> = results.iter().map(|r| r.time).collect();
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
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
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
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
