//! Power-cut sweep harness for tests/powercut_*.rs.
//!
//! A scenario is a device (a flash image made with the `ota` CLI) and an operation the CLI
//! performs on it (`device run`, `device confirm`), driven here through the same library calls
//! on in-memory copies of the flash, so thousands of cuts take seconds. For each cut point N the
//! operation runs with the power cut after N bytes programmed or erased (the emulator tears the
//! operation in progress), then the device is powered on again with a second run, no fault:
//! - the bootloader must boot a valid app: the old one, or the new one only once its otadata
//!   entry was completely written, never a mix and never nothing;
//! - a data partition that reads as valid (ADF's `tone_partition_init` and our CRC check) must
//!   hold exactly the old or the new bin;
//! - after the second run the device runs the new app and holds the new data.
//!
//! Operations of up to 8 KiB are swept at every byte. Larger ones are sampled in CI: every 4 KiB,
//! every byte of every otadata entry write and of every small write where commit records live
//! (data partition header sectors, staging records), the first 64 bytes and a 256-byte stride of
//! every otadata erase, and 48 seeded random points. A cut inside an erase is tried twice, with
//! the old content kept and with seeded random garbage in the rest of the sector.
//! `OTA_SWEEP_EXHAUSTIVE=1` tries every byte, in both torn-erase modes.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use ota_core::boot::{BootConfig, BootOutcome};
use ota_core::otadata::OtaState;
use ota_core::partition::PartitionTable;
use ota_core::{tone, Chip};
use ota_emu::flash::{EmuFlash, EmuFlashN, FaultPlan};
use ota_emu::EmuError;
use ota_service::config::Config;
use ota_service::source::{Phase, SdCardFs, SourceError};
use ota_sim::Board;

/// One program or erase of the reference run, with the byte count before it.
#[derive(Clone, Copy, Debug)]
pub struct OpRec {
    pub erase: bool,
    pub offset: u32,
    pub len: u32,
    pub start: u64,
}

/// The emulated flash (read/write unit `W`), optionally logging every program/erase (the
/// reference run).
pub struct Rec<'a, const W: usize = 4> {
    pub inner: &'a mut EmuFlashN<W>,
    pub log: Option<&'a mut Vec<OpRec>>,
}

impl<const W: usize> ErrorType for Rec<'_, W> {
    type Error = EmuError;
}

impl<const W: usize> ReadNorFlash for Rec<'_, W> {
    const READ_SIZE: usize = W;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), EmuError> {
        self.inner.read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl<const W: usize> NorFlash for Rec<'_, W> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), EmuError> {
        let start = self.inner.bytes_since_plan();
        if let Some(log) = self.log.as_mut() {
            log.push(OpRec {
                erase: true,
                offset: from,
                len: to.saturating_sub(from),
                start,
            });
        }
        self.inner.erase(from, to)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), EmuError> {
        let start = self.inner.bytes_since_plan();
        if let Some(log) = self.log.as_mut() {
            log.push(OpRec {
                erase: false,
                offset,
                len: bytes.len() as u32,
                start,
            });
        }
        self.inner.write(offset, bytes)
    }
}

/// The emulator's SD card (a folder) as the service's `file://` source.
pub struct Sd(pub ota_emu::SdCard);

impl SdCardFs for Sd {
    fn open(&self, uri: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        self.0.open_uri(uri).map_err(|e| SourceError::Io {
            uri: uri.to_string(),
            phase: Phase::Open,
            source: std::io::Error::other(e.to_string()).into(),
        })
    }
}

/// A loopback HTTP server with one file, on an ephemeral port; stops when dropped.
pub struct Http {
    pub base: String,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Http {
    pub fn serve(name: &str, body: Vec<u8>) -> Http {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let port = server.server_addr().to_ip().expect("ip address").port();
        let srv = server.clone();
        let path = format!("/{name}");
        let thread = std::thread::spawn(move || {
            for req in srv.incoming_requests() {
                let resp = if req.url() == path {
                    tiny_http::Response::from_data(body.clone())
                } else {
                    tiny_http::Response::from_data(Vec::new()).with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        });
        Http {
            base: format!("127.0.0.1:{port}"),
            server,
            thread: Some(thread),
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the operation under test is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `ota device run`: boot, the upgrade list, boot again after a restart. With
    /// `self_confirm` the app confirms itself after every boot that left it PENDING_VERIFY (what
    /// an app does after its self-test; only meaningful with rollback).
    Run { self_confirm: bool },
    /// `ota device confirm` (esp_ota_mark_app_valid_cancel_rollback).
    Confirm,
}

/// The data partition a scenario rewrites, with the bins before and after.
pub struct DataCheck {
    pub label: String,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    /// Staged mode: the staging partition. Until its progress record is written the target
    /// must hold the old bin untouched.
    pub staging: Option<String>,
}

pub struct Scenario {
    pub name: String,
    /// Flash contents before the operation.
    pub base: Vec<u8>,
    pub table: PartitionTable,
    pub chip: Chip,
    /// The device's bootloader options and eFuse before the operation.
    pub boot: BootConfig,
    /// The upgrade list (of the operation, and of the second run).
    pub config: Config,
    pub sd: Option<PathBuf>,
    pub op: Op,
    /// SHA-256 (appended hash) of the app running before, and of the new app.
    pub old_app: [u8; 32],
    pub new_app: [u8; 32],
    pub data: Option<DataCheck>,
    /// With anti-rollback: the eFuse counter expected once the update is complete.
    pub final_efuse: Option<u32>,
}

/// What a scenario's sweep found.
#[derive(Debug, Default)]
pub struct Report {
    pub cut_points: usize,
    pub torn_erase_random: usize,
    pub unbootable: usize,
    pub booted_old: usize,
    pub booted_new: usize,
    /// Torn tone partitions ADF's `tone_partition_init` alone would have taken as valid.
    pub adf_init_fooled: usize,
    /// Second runs that finished an interrupted staged copy, or resumed a delta update from
    /// its checkpoint.
    pub resumed_copies: usize,
    pub total_bytes: u64,
    pub failures: Vec<String>,
}

pub fn exhaustive() -> bool {
    std::env::var_os("OTA_SWEEP_EXHAUSTIVE").is_some_and(|v| v != "0" && !v.is_empty())
}

fn image_hash(out: &BootOutcome) -> Option<[u8; 32]> {
    out.summary.hash_calc
}

/// The harness's device: no output; with `self_confirm` the app confirms itself after every
/// boot that left it PENDING_VERIFY; it notes a resumed staged copy.
struct Harness {
    self_confirm: bool,
    resumed: bool,
}

impl ota_sim::Hooks for Harness {
    type Error = std::convert::Infallible;

    fn self_test(&mut self, _out: &BootOutcome) -> ota_sim::SelfTest {
        if self.self_confirm {
            ota_sim::SelfTest::Confirm
        } else {
            ota_sim::SelfTest::Undecided
        }
    }
    fn event(&mut self, ev: ota_service::Event) {
        if let ota_service::Event::Log { message, .. } = &ev {
            if message.starts_with("resuming the staged copy")
                || message.starts_with("Resuming the delta update")
            {
                self.resumed = true;
            }
        }
    }
}

/// The scenario's board before the operation (its bootloader options and eFuse).
fn board(s: &Scenario) -> Board {
    let mut b = Board::new(s.table.clone(), s.chip, s.boot);
    // Secure Boot v2 enabled: the app checks updates against the same eFuse digests.
    if let Some(keys) = s.boot.secure_boot {
        b.signatures = ota_core::secure_boot::AppSignatures::SecureBoot(keys);
    }
    b
}

/// Power-on: the bootloader, then (with `self_confirm`) the app confirming itself.
fn power_on<const W: usize>(
    flash: &mut Rec<'_, W>,
    board: &mut Board,
    self_confirm: bool,
) -> Result<BootOutcome, String> {
    let mut hooks = Harness {
        self_confirm,
        resumed: false,
    };
    ota_sim::power_on(flash, board, &mut hooks).map_err(|e| e.to_string())
}

/// `ota device run` (cmd_device::run_device) through the same library (`ota_sim::run`).
/// Returns the first boot and whether a staged copy was resumed.
fn device_run<const W: usize>(
    flash: &mut Rec<'_, W>,
    s: &Scenario,
    board: &mut Board,
    self_confirm: bool,
    sd: Option<&Sd>,
) -> Result<(BootOutcome, bool), String> {
    let mut hooks = Harness {
        self_confirm,
        resumed: false,
    };
    let sources = ota_sim::Sources {
        sd: sd.map(|s| s as &dyn SdCardFs),
        options: Default::default(),
    };
    let run = ota_sim::run(
        flash,
        board,
        ota_sim::UpgradeList::Config(&s.config),
        sources,
        &mut hooks,
    )
    .map_err(|e| e.to_string())?;
    Ok((run.first, hooks.resumed))
}

fn run_op<const W: usize>(
    flash: &mut Rec<'_, W>,
    s: &Scenario,
    board: &mut Board,
    sd: Option<&Sd>,
) -> Result<(), String> {
    match s.op {
        Op::Run { self_confirm } => device_run(flash, s, board, self_confirm, sd).map(|_| ()),
        // `ota device confirm`.
        Op::Confirm => ota_sim::confirm(flash, board, &mut ota_sim::Quiet)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

fn open_sd(s: &Scenario) -> Option<Sd> {
    s.sd.as_ref()
        .map(|p| Sd(ota_emu::SdCard::open(p).expect("SD card folder")))
}

/// The cut points to try: every byte when exhaustive, else a sample (see the module docs).
/// `(N, torn-erase seed)`: points strictly inside an erase are tried with the old content kept
/// and again with seeded random garbage.
/// Operations of at most this many bytes are swept at every byte even in CI ("all of them for
/// small images"): a confirmation is one otadata erase + one 32-byte write.
pub const SMALL_SCENARIO_BYTES: u64 = 8192;

fn cut_points(s: &Scenario, log: &[OpRec], total: u64) -> Vec<(u64, Option<u64>)> {
    let mut set: BTreeSet<u64> = BTreeSet::new();
    // Where commit records live: otadata, the header sector of each data partition, and the
    // last sector of each data partition (a staging progress record).
    let mut critical: Vec<std::ops::Range<u32>> = Vec::new();
    for p in s.table.iter() {
        if p.subtype == ota_core::partition::SUBTYPE_DATA_OTA && !p.is_app() {
            critical.push(p.offset..p.offset + p.size);
        } else if !p.is_app() {
            critical.push(p.offset..p.offset + 4096);
            critical.push(p.offset + p.size.saturating_sub(4096)..p.offset + p.size);
        }
    }
    let in_critical = |op: &OpRec| critical.iter().any(|r| r.contains(&op.offset));
    let small = total <= SMALL_SCENARIO_BYTES;
    if exhaustive() || small {
        set.extend(0..=total);
    } else {
        set.extend((0..=total).step_by(4096));
        set.insert(total);
        for op in log {
            let (a, len) = (op.start, u64::from(op.len));
            if in_critical(op) && op.erase {
                // The entry is in the first 32 bytes; then a stride, and the end.
                set.extend(a..=a + 64.min(len));
                set.extend((a..a + len).step_by(256));
                set.extend([a + len - 1, a + len]);
            } else if in_critical(op) && op.len <= 64 {
                // otadata entries, tone headers, staging records and progress bytes: every byte.
                set.extend(a..=a + len);
            }
        }
        // Seeded random points (a 64-bit LCG), the same on every run.
        let mut x: u64 = 0x5EED_0FC0_FFEE;
        for _ in 0..48 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            set.insert((x >> 11) % (total + 1));
        }
    }
    let mut points = Vec::with_capacity(set.len() * 2);
    for &n in &set {
        points.push((n, None));
        let inside_erase = log
            .iter()
            .any(|op| op.erase && op.start < n && n < op.start + u64::from(op.len));
        // Small scenarios in CI: every byte with the old content, garbage tails on a stride.
        let sampled = exhaustive() || !small || n % 64 < 2;
        if inside_erase && sampled {
            points.push((n, Some(n ^ 0xA5A5_5A5A)));
        }
    }
    points
}

enum CutVerdict {
    Ok {
        booted_new: bool,
        adf_init_fooled: bool,
        resumed: bool,
    },
    Unbootable(String),
    Failed(String),
}

/// One cut point: the faulted operation, then the second run and the checks.
fn one_cut<const W: usize>(
    s: &Scenario,
    n: u64,
    seed: Option<u64>,
    commit_end: u64,
    record_end: u64,
    sd: Option<&Sd>,
) -> CutVerdict {
    let mut flash = EmuFlashN::<W>::from_image(s.base.clone()).expect("base image");
    flash.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(n),
        torn_erase_random: seed,
        ..Default::default()
    });
    let mut cfg = board(s);
    let _ = run_op(
        &mut Rec {
            inner: &mut flash,
            log: None,
        },
        s,
        &mut cfg,
        sd,
    );
    if !flash.power_cut_happened() {
        return CutVerdict::Failed(format!("the power was not cut after {n} bytes"));
    }
    flash.power_cycle();
    let mut f = Rec {
        inner: &mut flash,
        log: None,
    };
    // The data partition as the cut left it.
    let mut adf_init_fooled = false;
    if let Some(d) = &s.data {
        let part = *s.table.find_data(&d.label).expect("data partition");
        let init = tone::tone_partition_init(&mut f, &part).is_ok();
        let check = tone::tone_partition_check(&mut f, &part).is_ok();
        let at = part.offset as usize;
        let holds = |bin: &[u8]| f.inner.contents().get(at..at + bin.len()) == Some(bin);
        if init && check && !holds(&d.old) && !holds(&d.new) {
            return CutVerdict::Failed(format!(
                "partition {} passes every check but holds neither the old nor the new bin",
                d.label
            ));
        }
        adf_init_fooled = init && !check;
        if d.staging.is_some() && n < record_end && !(init && check && holds(&d.old)) {
            return CutVerdict::Failed(format!(
                "partition {} changed before the staging record was complete (byte {record_end})",
                d.label
            ));
        }
    }
    // Power on again: the second run, no fault. Its first boot is what the cut left.
    let self_confirm = match s.op {
        Op::Run { self_confirm } => self_confirm,
        Op::Confirm => true,
    };
    let (first, resumed) = match device_run(&mut f, s, &mut cfg, self_confirm, sd) {
        Ok(r) => r,
        Err(e) if e.starts_with("No bootable app") || e.contains("otadata partition is") => {
            return CutVerdict::Unbootable(e)
        }
        Err(e) => return CutVerdict::Failed(format!("second run: {e}")),
    };
    let booted_new = match image_hash(&first) {
        Some(h) if h == s.new_app => true,
        Some(h) if h == s.old_app => false,
        _ => {
            return CutVerdict::Failed(format!(
                "booted {} holding neither the old nor the new app",
                first.partition.label.as_str()
            ))
        }
    };
    if booted_new && n < commit_end {
        return CutVerdict::Failed(format!(
            "the new app booted although its otadata entry completes at byte {commit_end}"
        ));
    }
    // After the second run: the new app, confirmed with rollback, and the new data.
    let last = match power_on(&mut f, &mut cfg, false) {
        Ok(o) => o,
        Err(e) => return CutVerdict::Unbootable(format!("after the second run: {e}")),
    };
    if image_hash(&last) != Some(s.new_app) {
        return CutVerdict::Failed(format!(
            "after the second run {} boots, not the new app",
            last.partition.label.as_str()
        ));
    }
    if cfg.boot.rollback && last.ota_state != Some(OtaState::Valid) {
        return CutVerdict::Failed(format!(
            "after the second run the new app is {:?}, not VALID",
            last.ota_state
        ));
    }
    if let Some(d) = &s.data {
        let part = *s.table.find_data(&d.label).expect("data partition");
        let at = part.offset as usize;
        if f.inner.contents().get(at..at + d.new.len()) != Some(&d.new[..])
            || tone::tone_partition_check(&mut f, &part).is_err()
        {
            return CutVerdict::Failed(format!(
                "after the second run {} does not hold the new bin",
                d.label
            ));
        }
    }
    if let Some(want) = s.final_efuse {
        if cfg.boot.efuse_secure_version != want {
            return CutVerdict::Failed(format!(
                "eFuse secure_version {} after the second run, expected {want}",
                cfg.boot.efuse_secure_version
            ));
        }
    }
    CutVerdict::Ok {
        booted_new,
        adf_init_fooled,
        resumed,
    }
}

/// Sweep `s`: the reference run, then every chosen cut point (on all cores). Prints the summary
/// line to the test's stderr (not captured) and returns the report; the caller asserts.
pub fn sweep(s: &Scenario) -> Report {
    sweep_at::<4>(s)
}

/// [`sweep`] on a flash whose read/write unit is `W`.
pub fn sweep_at<const W: usize>(s: &Scenario) -> Report {
    let sd = open_sd(s);
    // Reference run: no cut, every operation logged with its byte count.
    let mut flash = EmuFlashN::<W>::from_image(s.base.clone()).expect("base image");
    flash.set_fault_plan(FaultPlan::default());
    let mut log = Vec::new();
    let mut cfg = board(s);
    run_op(
        &mut Rec {
            inner: &mut flash,
            log: Some(&mut log),
        },
        s,
        &mut cfg,
        sd.as_ref(),
    )
    .unwrap_or_else(|e| panic!("{}: the reference run failed: {e}", s.name));
    let total = flash.bytes_since_plan();
    assert!(total > 0, "{}: the operation wrote nothing", s.name);
    // The new app's otadata entry is complete at the end of the first otadata write that
    // follows a write into the new app's slot (0 when the scenario starts committed).
    let otadata = s.table.otadata().map(|p| p.offset..p.offset + p.size);
    let slot_of_new = s
        .table
        .iter()
        .filter(|p| p.is_app())
        .find(|p| {
            let at = p.offset as usize;
            let mut f = EmuFlash::from_image(flash.contents().to_vec()).expect("image");
            image_at(&mut f, p).is_some_and(|h| h == s.new_app)
                && s.base.get(at..at + 32) != flash.contents().get(at..at + 32)
        })
        .map(|p| p.offset..p.offset + p.size);
    let commit_end = match &slot_of_new {
        Some(slot) => {
            let first_slot_write = log
                .iter()
                .position(|op| !op.erase && slot.contains(&op.offset))
                .unwrap_or(0);
            log[first_slot_write..]
                .iter()
                .find(|op| !op.erase && otadata.as_ref().is_some_and(|r| r.contains(&op.offset)))
                .map(|op| op.start + u64::from(op.len))
                .unwrap_or(0)
        }
        None => 0,
    };
    // Staged mode: the progress record's header is the one write of 0x38 bytes into the last
    // sector of the staging partition.
    let record_end = s
        .data
        .as_ref()
        .and_then(|d| d.staging.as_ref())
        .and_then(|label| s.table.find_data(label).copied())
        .and_then(|st| {
            let sector = st.offset + st.size - 4096;
            log.iter()
                .find(|op| !op.erase && op.offset == sector && op.len == 0x38)
                .map(|op| op.start + u64::from(op.len))
        })
        .unwrap_or(0);
    if s.data.as_ref().is_some_and(|d| d.staging.is_some()) {
        assert!(record_end > 0, "{}: no staging record was written", s.name);
    }
    let points = cut_points(s, &log, total);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(1);
    let chunks: Vec<Vec<(u64, Option<u64>)>> = (0..threads)
        .map(|t| points.iter().copied().skip(t).step_by(threads).collect())
        .collect();
    let mut report = Report {
        cut_points: points.len(),
        torn_erase_random: points.iter().filter(|p| p.1.is_some()).count(),
        total_bytes: total,
        ..Default::default()
    };
    let results: Vec<Vec<(u64, Option<u64>, CutVerdict)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let sd = open_sd(s);
                    chunk
                        .into_iter()
                        .map(|(n, seed)| {
                            let v = one_cut::<W>(s, n, seed, commit_end, record_end, sd.as_ref());
                            (n, seed, v)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sweep thread"))
            .collect()
    });
    for (n, seed, v) in results.into_iter().flatten() {
        let at = match seed {
            Some(sd) => format!("cut after {n} bytes (torn erase seed {sd})"),
            None => format!("cut after {n} bytes"),
        };
        match v {
            CutVerdict::Ok {
                booted_new,
                adf_init_fooled,
                resumed,
            } => {
                if booted_new {
                    report.booted_new += 1;
                } else {
                    report.booted_old += 1;
                }
                report.adf_init_fooled += usize::from(adf_init_fooled);
                report.resumed_copies += usize::from(resumed);
            }
            CutVerdict::Unbootable(e) => {
                report.unbootable += 1;
                report.failures.push(format!("{at}: UNBOOTABLE: {e}"));
            }
            CutVerdict::Failed(e) => report.failures.push(format!("{at}: {e}")),
        }
    }
    let mode = if exhaustive() {
        "exhaustive: every byte"
    } else if total <= SMALL_SCENARIO_BYTES {
        "every byte (small operation); OTA_SWEEP_EXHAUSTIVE=1 adds every random torn erase"
    } else {
        "CI sample; OTA_SWEEP_EXHAUSTIVE=1 for every byte"
    };
    let _ = writeln!(
        std::io::stderr(),
        "powercut sweep {}: {} cut points, {} unbootable ({} bytes programmed/erased; {} with \
         random torn-erase tails; booted old {} / new {}; {} torn tone partitions passed ADF's \
         init but failed the CRC check; {} second runs resumed (staged copy or delta checkpoint); {} other failures) [{}]",
        s.name,
        report.cut_points,
        report.unbootable,
        report.total_bytes,
        report.torn_erase_random,
        report.booted_old,
        report.booted_new,
        report.adf_init_fooled,
        report.resumed_copies,
        report.failures.len() - report.unbootable,
        mode
    );
    report
}

/// SHA-256 of a valid app image in partition `p`, if any.
fn image_at(f: &mut EmuFlash, p: &ota_core::partition::Partition) -> Option<[u8; 32]> {
    ota_core::image::verify_flash(f, p.region(), None)
        .ok()
        .and_then(|s| s.hash_calc)
}

/// Fail the test with the first failures, or pass.
#[track_caller]
pub fn assert_clean(s: &Scenario, r: &Report) {
    if !r.failures.is_empty() {
        let shown: Vec<&String> = r.failures.iter().take(12).collect();
        panic!(
            "{}: {} of {} cut points failed ({} unbootable); replay one with `ota device run \
             --power-cut-after-bytes N`:\n{}",
            s.name,
            r.failures.len(),
            r.cut_points,
            r.unbootable,
            shown
                .iter()
                .map(|f| format!("  {f}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The SHA-256 appended to an app image file.
pub fn appended_hash(image: &[u8]) -> [u8; 32] {
    let mut v = ota_core::image::ImageVerifier::new();
    v.feed(image).expect("app image");
    v.finish()
        .expect("app image")
        .hash_calc
        .expect("image with an appended hash")
}

/// `ota image make` for ESP32: `size` like "48K".
pub fn make_app(
    dir: &std::path::Path,
    file: &str,
    project: &str,
    version: &str,
    secure_version: u32,
    size: &str,
) -> Vec<u8> {
    let out = dir.join(file);
    let sv = secure_version.to_string();
    crate::common::ok(&[
        "image",
        "make",
        "--chip",
        "esp32",
        "--project",
        project,
        "--version",
        version,
        "--secure-version",
        &sv,
        "--size",
        size,
        "-o",
        crate::common::s(&out),
    ]);
    std::fs::read(out).expect("image made")
}

/// `ota tone pack` of `n` small made-up files, format 1, `version`.
pub fn make_tone(dir: &std::path::Path, name: &str, n: usize, version: &str) -> Vec<u8> {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..n {
        let body: Vec<u8> = (0..1500 + 377 * i)
            .map(|j| (i * 31 + j * 7) as u8)
            .collect();
        std::fs::write(src.join(format!("{i:02}_prompt.mp3")), body).expect("write");
    }
    let out = dir.join(format!("{name}.bin"));
    crate::common::ok(&[
        "tone",
        "pack",
        crate::common::s(&src),
        "-o",
        crate::common::s(&out),
        "--format",
        "1",
        "--version",
        version,
    ]);
    std::fs::read(out).expect("tone bin packed")
}

/// A device's table, chip and bootloader settings, read from its flash file and sidecar.
pub fn load_device(flash: &std::path::Path) -> (Vec<u8>, PartitionTable, Chip, BootConfig) {
    let base = std::fs::read(flash).expect("flash file");
    let dev =
        ota_emu::Device::open(EmuFlash::from_image(base.clone()).expect("image")).expect("device");
    let settings = ota_emu::DeviceSettings::load_for(flash)
        .expect("settings")
        .unwrap_or_default();
    (
        base,
        dev.table().clone(),
        dev.chip(),
        settings.boot_config(),
    )
}

/// An SD card folder `d/sdcard` holding `name` = `bytes`, and `d/ota.toml` = `config`.
/// Returns (the SD card folder, the config path).
pub fn sd_card_and_config(
    d: &std::path::Path,
    name: &str,
    bytes: &[u8],
    config: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let sd = d.join("sdcard");
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::write(sd.join(name), bytes).unwrap();
    let cfg = d.join("ota.toml");
    std::fs::write(&cfg, config).unwrap();
    (sd, cfg)
}
