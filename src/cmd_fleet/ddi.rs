//! `ota fleet-sim --ddi URL`: the devices speak hawkBit DDI to an `ota serve --fleet` server
//! and a rollout drives them. Every device runs the device-side DDI item
//! (`ota_service::items::DdiItem`, the one `ota device run --ddi` and the firmware use) on its
//! own copy-on-write flash over the async transport, on one thread.
//!
//! 1. Every device polls once with the gateway token and uploads its attributes (`configData`:
//!    chip, project, running version), which registers it.
//! 2. The simulator creates a rollout of `--release` to them through the admin API (groups,
//!    success and error thresholds as given) and starts it.
//! 3. Rounds: every device whose action is not closed polls again. A device offered the
//!    deployment downloads and installs it, restarts, and its new app runs its self-test: a
//!    seeded share (`--fail-share`, `--seed`) fails it and rolls back
//!    (`esp_ota_mark_app_invalid_rollback_and_reboot`), the others confirm. At its next poll
//!    the DDI item reports `closed` + `success`, or `failure` for a rollback (the flash is its
//!    record, as on a real device); a device polls right after its restart, so it reports in
//!    the same round. After each round the rollout's groups and new timeline
//!    entries are printed.
//! 4. It ends when the rollout is finished, stopped, or paused with no installed device still
//!    to report (or after `--max-rounds`).
//!
//! Memory: a device keeps no flash between polls (a new [`CowFlash`] over the shared template
//! each time it powers on, dropped once it has reported); only a device whose report failed
//! keeps the sectors it wrote until the next round. So memory follows `--concurrency`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ota_core::boot::BootConfig;
use ota_emu::CowFlash;
use ota_service::items::{DdiAuth, DdiItem};
use ota_service::source::{Secret, SourceOptions};
use ota_service::{Outcome, UpgradeItem};
use serde_json::{json, Value};

use super::{net, FleetHooks, Template};
use crate::cmd_device;
use crate::cmd_fleet_admin::{call, Conn};

type Flash = CowFlash<4, 4>;
/// What a round returns per device: its index, what it did, the flash it keeps.
type Done = (usize, Step, Option<Flash>);

/// Settings of a DDI simulation (from `ota fleet-sim`'s flags).
pub struct DdiSim {
    pub url: String,
    pub tenant: String,
    pub gateway_token_file: PathBuf,
    pub admin_token_file: PathBuf,
    pub release: Option<i64>,
    pub groups: Vec<i64>,
    pub success_threshold: i64,
    pub error_threshold: i64,
    /// Percent of devices whose new app fails its self-test.
    pub fail_share: f64,
    pub seed: u64,
    pub name: String,
    pub max_rounds: u32,
    pub concurrency: usize,
    pub timeout: Duration,
    pub project: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Nothing installed (yet).
    Idle,
    /// The new app is installed and has confirmed or rolled back; not reported yet.
    Installed,
    /// Reported `closed`: success or failure.
    Done(bool),
}

struct Dev {
    id: String,
    fails: bool,
    phase: Phase,
    flash: Option<Flash>,
}

/// splitmix64: the seeded choice of failing devices (the same devices for the same seed).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether device `i` fails its self-test: `share` percent of them, chosen by `seed`.
pub fn fails(seed: u64, i: usize, share: f64) -> bool {
    let r = mix(seed ^ mix(i as u64)) % 1_000_000;
    (r as f64) < share * 10_000.0
}

/// What one power-on of one device did.
enum Step {
    /// Polled, nothing to do.
    Idle,
    /// Installed and restarted; `confirmed` false: the self-test failed and it rolled back.
    Installed { confirmed: bool, bytes: u64 },
    /// Reported the closed action (`success`: the server got success).
    Reported { success: bool },
    /// Installed, restarted, and reported at the poll right after the restart.
    InstalledReported { bytes: u64, success: bool },
    /// The item or the run failed.
    Error(String),
}

/// The hooks of one DDI device: counts bytes, and the seeded self-test.
struct Hooks {
    inner: FleetHooks,
    fails: bool,
    tested: Option<bool>,
}

impl ota_sim::Hooks for Hooks {
    type Error = anyhow::Error;
    fn event(&mut self, ev: ota_service::Event) {
        ota_sim::Hooks::event(&mut self.inner, ev)
    }
    fn self_test(&mut self, _out: &ota_core::boot::BootOutcome) -> ota_sim::SelfTest {
        self.tested = Some(!self.fails);
        if self.fails {
            ota_sim::SelfTest::RollBack
        } else {
            ota_sim::SelfTest::Confirm
        }
    }
}

async fn power_on(
    t: &Template,
    flash: &mut Flash,
    id: &str,
    s: &DdiCfg,
    fails: bool,
    was_installed: bool,
) -> Step {
    let mut item = DdiItem::new(
        s.url.as_str(),
        s.tenant.as_str(),
        id,
        DdiAuth::GatewayToken(Secret::new(s.gateway.clone())),
    );
    item.project = Some(s.project.clone());
    let items: Vec<Box<dyn UpgradeItem<Flash>>> = vec![Box::new(item)];
    let boot = BootConfig {
        rollback: true,
        ..BootConfig::default()
    };
    let mut board = ota_sim::Board::new(t.table.clone(), t.chip, boot);
    board.flash_size = Some(t.flash_size);
    let mut hooks = Hooks {
        inner: FleetHooks::default(),
        fails,
        tested: None,
    };
    let transport = net::NetTransport::default();
    let run = ota_sim::run_async(
        flash,
        &mut board,
        ota_sim::UpgradeList::Items(items),
        ota_sim::AsyncSources {
            transport: &transport,
            clock: &net::TokioClock,
            options: &s.options,
        },
        &mut hooks,
    )
    .await;
    let run = match run {
        Ok(r) => r,
        Err(e) => return Step::Error(crate::error_text(&cmd_device::device_error(e))),
    };
    let outcome = run.report.results.first().map(|(_, o)| o.clone());
    match outcome {
        Some(Outcome::Success) if run.after_restart.is_some() => Step::Installed {
            confirmed: hooks.tested.unwrap_or(true),
            bytes: hooks.inner.bytes,
        },
        Some(Outcome::Success) => Step::Reported { success: true },
        // A rollback found at the poll after it: reported as failure.
        Some(Outcome::Failed { .. }) if was_installed => Step::Reported { success: false },
        Some(Outcome::Failed { message, .. }) => Step::Error(message),
        Some(Outcome::Skipped { .. }) | None => Step::Idle,
    }
}

struct DdiCfg {
    url: String,
    tenant: String,
    gateway: String,
    project: String,
    options: SourceOptions,
}

/// One round: every device not done powers on once (at most `concurrency` at a time).
fn round(
    rt: &tokio::runtime::Runtime,
    t: &Rc<Template>,
    cfg: &Rc<DdiCfg>,
    devs: &mut [Dev],
    concurrency: usize,
) -> Vec<Done> {
    let local = tokio::task::LocalSet::new();
    let out: Rc<RefCell<Vec<Done>>> = Rc::new(RefCell::new(Vec::new()));
    let gate = Rc::new(tokio::sync::Semaphore::new(concurrency));
    for (i, d) in devs.iter_mut().enumerate() {
        if matches!(d.phase, Phase::Done(_)) {
            continue;
        }
        let kept = d.flash.take();
        let (t, cfg, out, gate) = (t.clone(), cfg.clone(), out.clone(), gate.clone());
        let id = d.id.clone();
        let (fails, installed) = (d.fails, d.phase == Phase::Installed);
        local.spawn_local(async move {
            let Ok(_permit) = gate.acquire().await else {
                return;
            };
            let mut flash = match kept {
                Some(f) => f,
                None => match Flash::new(t.base.clone()) {
                    Ok(f) => f,
                    Err(e) => {
                        out.borrow_mut()
                            .push((i, Step::Error(format!("device flash: {e}")), None));
                        return;
                    }
                },
            };
            let mut step = Box::pin(power_on(&t, &mut flash, &id, &cfg, fails, installed)).await;
            // The new app polls as soon as it runs: it reports at once, and its flash goes.
            if let Step::Installed { bytes, .. } = step {
                if let Step::Reported { success } =
                    Box::pin(power_on(&t, &mut flash, &id, &cfg, fails, true)).await
                {
                    step = Step::InstalledReported { bytes, success };
                }
            }
            let keep = matches!(step, Step::Installed { .. })
                || (installed && matches!(step, Step::Idle | Step::Error(_)));
            out.borrow_mut().push((i, step, keep.then_some(flash)));
        });
    }
    rt.block_on(local);
    let v = std::mem::take(&mut *out.borrow_mut());
    v
}

fn group_line(v: &Value) -> String {
    let mut parts = Vec::new();
    for g in v["groups"].as_array().into_iter().flatten() {
        let c = &g["counts"];
        let n = |k: &str| c[k].as_i64().unwrap_or(0);
        parts.push(format!(
            "g{} {} {}/{} ok {} failed",
            g["index"].as_i64().unwrap_or(0) + 1,
            g["state"].as_str().unwrap_or("?"),
            n("success"),
            n("total"),
            n("failure"),
        ));
    }
    parts.join(" | ")
}

pub fn run(s: DdiSim, t: Template, n: usize) -> Result<ExitCode> {
    let gateway = ota_server::fleet::auth::read_token_file(&s.gateway_token_file)
        .map_err(|e| anyhow!("--gateway-token-file: {e}"))?;
    if !(0.0..=100.0).contains(&s.fail_share) {
        bail!(
            "--fail-share must be a percentage from 0 to 100, not {}",
            s.fail_share
        );
    }
    let url = s.url.trim_end_matches('/').to_string();
    if !url.starts_with("http://") {
        bail!("--ddi {url}: expected http://HOST:PORT (the simulation speaks plain HTTP)");
    }
    let conn = Conn::new(&url, s.admin_token_file.clone());
    let release = match s.release {
        Some(r) => r,
        None => {
            let v = call(&conn, "GET", "/api/v1/releases", None)?;
            v["releases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["project"] == s.project.as_str())
                .filter_map(|r| r["id"].as_i64())
                .max()
                .ok_or_else(|| {
                    anyhow!(
                        "{url}: no release of project {} (GET /api/v1/releases)",
                        s.project
                    )
                })?
        }
    };
    let cfg = Rc::new(DdiCfg {
        url: url.clone(),
        tenant: s.tenant.clone(),
        gateway,
        project: s.project.clone(),
        options: SourceOptions {
            timeout: s.timeout,
            ..Default::default()
        },
    });
    let t = Rc::new(t);
    let name = s.name.clone();
    let mut devs: Vec<Dev> = (0..n)
        .map(|i| Dev {
            id: format!("sim-{i:06}"),
            fails: fails(s.seed, i, s.fail_share),
            phase: Phase::Idle,
            flash: None,
        })
        .collect();
    let failing = devs.iter().filter(|d| d.fails).count();
    println!(
        "fleet-sim: {n} {} devices over DDI at {url} (tenant {}), {failing} of them ({:.1} %) fail their self-test (seed {})",
        t.chip.name(),
        s.tenant,
        failing as f64 * 100.0 / n.max(1) as f64,
        s.seed
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .context("starting the simulation's runtime")?;
    let start = Instant::now();
    let secs = |start: &Instant| start.elapsed().as_secs_f64();

    // 1. Register: one poll each, attributes uploaded.
    let results = round(&rt, &t, &cfg, &mut devs, s.concurrency);
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|(_, st, _)| match st {
            Step::Error(m) => Some(m),
            _ => None,
        })
        .collect();
    if let Some(e) = errors.first() {
        bail!(
            "{} of {n} devices could not register; the first: {e}",
            errors.len()
        );
    }
    println!(
        "[{:7.2} s] {n} devices polled and sent their attributes",
        secs(&start)
    );

    // 2. The rollout.
    let spec = json!({
        "name": name, "release": release,
        "filter": {"project": s.project, "chip": t.chip.name()},
        "groups": s.groups, "success_threshold": s.success_threshold,
        "error_threshold": s.error_threshold, "start": true,
    });
    let v = call(&conn, "POST", "/api/v1/rollouts", Some(&spec))?;
    let rid = v["id"]
        .as_i64()
        .ok_or_else(|| anyhow!("{url}: the rollout's answer has no id"))?;
    println!(
        "[{:7.2} s] rollout {rid} ({name}) of release {release}: groups {:?} %, success threshold {} %, error threshold {} %: {}",
        secs(&start),
        s.groups,
        s.success_threshold,
        s.error_threshold,
        group_line(&v)
    );

    // 3. Rounds.
    let mut seen = 0usize;
    let mut bytes = 0u64;
    let mut results_by: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut last_errors: Vec<String> = Vec::new();
    let mut state = String::new();
    let mut idle_rounds = 0;
    for r in 1..=s.max_rounds {
        let results = round(&rt, &t, &cfg, &mut devs, s.concurrency);
        let mut changed = 0;
        for (i, st, flash) in results {
            let d = &mut devs[i];
            d.flash = flash;
            match st {
                Step::Idle => {}
                Step::Installed {
                    confirmed,
                    bytes: b,
                } => {
                    d.phase = Phase::Installed;
                    bytes += b;
                    changed += 1;
                    *results_by
                        .entry(if confirmed {
                            "installed, confirmed"
                        } else {
                            "installed, rolled back"
                        })
                        .or_default() += 1;
                }
                Step::Reported { success } => {
                    d.phase = Phase::Done(success);
                    d.flash = None;
                    changed += 1;
                }
                Step::InstalledReported { bytes: b, success } => {
                    d.phase = Phase::Done(success);
                    d.flash = None;
                    bytes += b;
                    changed += 1;
                    *results_by
                        .entry(if success {
                            "installed, confirmed"
                        } else {
                            "installed, rolled back"
                        })
                        .or_default() += 1;
                }
                Step::Error(m) => {
                    *results_by.entry("errors").or_default() += 1;
                    last_errors.push(format!("{}: {m}", d.id));
                }
            }
        }
        let v = call(&conn, "GET", &format!("/api/v1/rollouts/{rid}"), None)?;
        state = v["state"].as_str().unwrap_or("?").to_string();
        for e in v["timeline"].as_array().into_iter().flatten().skip(seen) {
            seen += 1;
            let g = e["group"]
                .as_i64()
                .map(|g| format!(" (group {})", g + 1))
                .unwrap_or_default();
            println!(
                "[{:7.2} s]   server: {}{g}",
                secs(&start),
                e["event"].as_str().unwrap_or("?")
            );
        }
        let ok = devs.iter().filter(|d| d.phase == Phase::Done(true)).count();
        let bad = devs
            .iter()
            .filter(|d| d.phase == Phase::Done(false))
            .count();
        let pending = devs.iter().filter(|d| d.phase == Phase::Installed).count();
        println!(
            "[{:7.2} s] round {r}: {changed} devices acted; reported {ok} success, {bad} failure, {pending} installed not yet reported; rollout {state}: {}",
            secs(&start),
            group_line(&v)
        );
        let finished = matches!(state.as_str(), "finished" | "stopped");
        if finished || (state == "paused" && pending == 0) {
            break;
        }
        idle_rounds = if changed == 0 { idle_rounds + 1 } else { 0 };
        if idle_rounds >= 5 && pending == 0 {
            println!("fleet-sim: nothing moved for 5 rounds: the rollout holds ({state})");
            break;
        }
        // Give the server's engine (every second) a chance to start the next group.
        std::thread::sleep(Duration::from_millis(if changed == 0 { 1000 } else { 200 }));
    }
    let ok = devs.iter().filter(|d| d.phase == Phase::Done(true)).count();
    let bad = devs
        .iter()
        .filter(|d| d.phase == Phase::Done(false))
        .count();
    println!(
        "fleet-sim: rollout {rid} {state} after {:.1} s: {ok} devices updated, {bad} rolled back and reported failure, {} never offered; {:.1} MB of firmware downloaded",
        secs(&start),
        n - ok - bad - devs.iter().filter(|d| d.phase == Phase::Installed).count(),
        bytes as f64 / 1e6
    );
    for (k, v) in &results_by {
        println!("fleet-sim:   {k}: {v}");
    }
    if let Some(k) = super::peak_kib_of("/proc/self/status") {
        println!(
            "fleet-sim: simulator peak memory: {:.1} MiB (VmHWM)",
            k as f64 / 1024.0
        );
    }
    if let Some((p, k)) = super::server_pid(&url).and_then(|p| super::peak_kib(p).map(|k| (p, k))) {
        println!(
            "fleet-sim: server peak memory: {:.1} MiB (VmHWM of pid {p})",
            k as f64 / 1024.0
        );
    }
    for e in last_errors.iter().take(5) {
        eprintln!("error: {e}");
    }
    Ok(
        if matches!(state.as_str(), "finished" | "paused") && last_errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}
