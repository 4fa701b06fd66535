//! Power-cut sweep of a *resumed* update: an app download interrupted at 50 KB leaves a resume
//! record; the next run resumes it (Range from the checkpoint), and we cut the power at every
//! 4 KiB of flash programming/erasing of that run, at every byte of its otadata entry write and
//! along its otadata sector erase (`OTA_SWEEP_EXHAUSTIVE=1`: at every byte). After each cut the
//! bootloader emulation must boot a valid app — the old one, or the new one only once its
//! otadata entry is completely written — and a later run must complete the update.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use ota_core::version::VersionPolicy;
use ota_emu::{EmuError, EmuFlash, FaultPlan};
use ota_service::items::AppItem;
use ota_service::Outcome;
use ota_testsrv::{Faults, FlakyServer};
use support::*;

/// One program or erase seen by [`Recorder`], with the fault-plan byte count before it.
#[derive(Clone, Copy, Debug)]
struct Op {
    erase: bool,
    addr: u32,
    len: u32,
    before: u64,
}

/// Passes every call to the flash and records programs and erases, counting bytes the way
/// `FaultPlan::power_cut_after_bytes` does.
struct Recorder<'a> {
    inner: &'a mut EmuFlash,
    ops: Vec<Op>,
    done: u64,
}

impl ErrorType for Recorder<'_> {
    type Error = EmuError;
}

impl ReadNorFlash for Recorder<'_> {
    const READ_SIZE: usize = <EmuFlash as ReadNorFlash>::READ_SIZE;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), EmuError> {
        self.inner.read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl NorFlash for Recorder<'_> {
    const WRITE_SIZE: usize = <EmuFlash as NorFlash>::WRITE_SIZE;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), EmuError> {
        let len = to.saturating_sub(from);
        self.ops.push(Op {
            erase: true,
            addr: from,
            len,
            before: self.done,
        });
        self.done += u64::from(len);
        self.inner.erase(from, to)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), EmuError> {
        self.ops.push(Op {
            erase: false,
            addr: offset,
            len: bytes.len() as u32,
            before: self.done,
        });
        self.done += bytes.len() as u64;
        self.inner.write(offset, bytes)
    }
}

fn item(url: &str) -> AppItem {
    let mut it = app_item(url, 0);
    // After the commit a rerun finds nothing newer and skips: "completes" means v2 boots.
    it.policy = VersionPolicy::Semver;
    it
}

#[test]
fn resumed_update_survives_a_power_cut_at_every_point() {
    let exhaustive = std::env::var_os("OTA_SWEEP_EXHAUSTIVE").is_some_and(|v| v != "0");
    let img = image("v2.0.0", 120_000);
    let s = FlakyServer::start(
        img.clone(),
        Faults {
            drop_at: vec![50_000],
            max_requests: usize::MAX,
            lifetime: Duration::from_secs(if exhaustive { 24 * 3600 } else { 600 }),
            ..Faults::default()
        },
    )
    .expect("loopback server");
    let url = s.url("app.bin");

    // The interrupted first run leaves a record at 48 KiB.
    let mut base = device(EXAMPLE_CSV);
    let (report, _) = run_app(&mut base, item(&url));
    assert!(matches!(report.results[0].1, Outcome::Failed { .. }));

    // A counting run of the resumed update: where its bytes go, and when otadata is written.
    let mut probe = base.flash.clone_in_memory();
    let mut rec = Recorder {
        inner: &mut probe,
        ops: Vec::new(),
        done: 0,
    };
    let (report, log) = run_on(
        &mut rec,
        &base.table,
        vec![Box::new(item(&url))],
        Duration::from_secs(5),
    );
    assert_eq!(
        report.results[0].1,
        Outcome::Success,
        "{}",
        log.lines.join("\n")
    );
    assert!(
        log.resumed_from_record() == vec![49152],
        "{}",
        log.lines.join("\n")
    );
    let total = rec.done;
    let in_otadata = |o: &Op| (OTADATA..OTADATA + 0x2000).contains(&o.addr);
    let od_ops: Vec<Op> = rec.ops.iter().copied().filter(in_otadata).collect();
    let entry_write = *od_ops
        .iter()
        .rev()
        .find(|o| !o.erase)
        .expect("the run writes an otadata entry");
    // From this many bytes on, the new entry is completely written.
    let committed_at = entry_write.before + u64::from(entry_write.len);

    let mut cuts = BTreeSet::new();
    if exhaustive {
        cuts.extend(0..total);
    } else {
        cuts.extend((0..total).step_by(4096));
        cuts.insert(total - 1);
        for o in &od_ops {
            let end = o.before + u64::from(o.len);
            if o.erase {
                cuts.extend((o.before..end).step_by(256));
                cuts.insert(end - 1);
            } else {
                cuts.extend(o.before..=end);
            }
        }
    }

    let (mut unbootable, mut mixed, mut incomplete, mut resumed_again) = (0, 0, 0, 0);
    for &n in &cuts {
        let mut dev = Dev {
            flash: base.flash.clone_in_memory(),
            table: base.table.clone(),
        };
        dev.flash.set_fault_plan(FaultPlan {
            power_cut_after_bytes: Some(n),
            ..FaultPlan::default()
        });
        let _ = run_app(&mut dev, item(&url));
        assert!(
            dev.flash.power_cut_happened(),
            "cut {n} of {total} never happened"
        );
        dev.flash.power_cycle();
        let booted = ota_core::boot::boot(
            &mut dev.flash,
            &dev.table,
            ota_core::Chip::Esp32,
            &Default::default(),
            &mut |_| {},
        );
        let version = match booted {
            Ok(out) => out
                .summary
                .app_desc
                .map(|d| d.version_str().to_string())
                .unwrap_or_default(),
            Err(e) => {
                eprintln!("cut after {n} bytes: unbootable: {e}");
                unbootable += 1;
                continue;
            }
        };
        let expected = if n >= committed_at {
            "v2.0.0"
        } else {
            "v1.0.0"
        };
        if version != expected {
            eprintln!("cut after {n} bytes: boots {version}, expected {expected}");
            mixed += 1;
        }
        let (report, log) = run_app(&mut dev, item(&url));
        if !log.resumed_from_record().is_empty() {
            resumed_again += 1;
        }
        let done = !matches!(report.results[0].1, Outcome::Failed { .. });
        if !done || boot(&mut dev).1 != "v2.0.0" {
            eprintln!(
                "cut after {n} bytes: the next run did not complete:\n{}",
                log.lines.join("\n")
            );
            incomplete += 1;
        }
    }
    println!(
        "resumed-update sweep: {} bytes programmed/erased by the resumed run, otadata entry complete at byte {}",
        total, committed_at
    );
    println!(
        "resumed-update sweep: {} cut points, {} unbootable ({} booted the wrong version, {} not completed by the next run; {} next runs resumed from the record again)",
        cuts.len(),
        unbootable,
        mixed,
        incomplete,
        resumed_again
    );
    assert_eq!(unbootable, 0);
    assert_eq!(mixed, 0);
    assert_eq!(incomplete, 0);
    assert!(resumed_again > 0, "no rerun resumed");
}
