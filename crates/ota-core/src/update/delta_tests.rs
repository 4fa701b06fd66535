//! Tests of the delta app update: a patch over the running slot installs the new image through
//! the app engine at esp-storage's 4-byte granularity; every refusal leaves the device as it was.

extern crate std;

use std::string::ToString;
use std::vec;
use std::vec::Vec;

use embedded_storage::nor_flash::{NorFlash as _, ReadNorFlash as _};
use sha2::{Digest, Sha256};

use super::*;
use crate::boot::{self, BootConfig};
use crate::delta::tests::{body, patch, Triple};
use crate::delta::{base_image_sha256, Compression, DeltaError, EspDeltaHeader};
use crate::partition::PartitionTable;
use crate::testutil::{app_image, example_table, RamFlash};
use crate::version::VersionPolicy;

const OTA_0: u32 = 0x10000;
const OTA_1: u32 = 0x110000;
const OTADATA: u32 = 0xD000;

fn cfg() -> AppUpdateConfig {
    AppUpdateConfig::new(Chip::Esp32)
}

/// A device running `old` from ota_0, booted once.
fn device(old: &[u8]) -> (RamFlash, PartitionTable) {
    let mut f = RamFlash::new(4 << 20);
    let t = example_table();
    f.put(OTA_0, old);
    boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
    f.erases.iter_mut().for_each(|e| *e = 0);
    (f, t)
}

/// A sequential patch old -> new: a diff over the common length, then an extra block, split
/// into a few triples so seeks are exercised (bsdiff semantics: diff bytes add to the base).
fn make_patch(old: &[u8], new: &[u8], compression: Compression) -> Vec<u8> {
    let common = old.len().min(new.len());
    let cut = common / 3;
    let diff = |from: usize, to: usize| -> Vec<u8> {
        (from..to).map(|i| new[i].wrapping_sub(old[i])).collect()
    };
    let triples = [
        Triple {
            diff: diff(0, cut),
            extra: vec![],
            adjust: 0,
        },
        Triple {
            diff: diff(cut, common),
            extra: new[common..].to_vec(),
            adjust: 0,
        },
    ];
    patch(compression, new.len(), &body(&triples))
}

fn esp_framed(base_sha256: [u8; 32], p: &[u8]) -> Vec<u8> {
    let mut out = EspDeltaHeader { base_sha256 }.to_bytes().to_vec();
    out.extend_from_slice(p);
    out
}

fn run(
    f: &mut RamFlash,
    t: &PartitionTable,
    p: &[u8],
    chunk: usize,
    esp: EspHeader,
) -> Result<Committed, Error> {
    let running = *t.ota(0).unwrap();
    let mut u = DeltaUpdate::begin(f, t, &running, cfg(), None)?;
    u.set_esp_header(esp);
    u.set_version_policy(VersionPolicy::Newer);
    for c in p.chunks(chunk) {
        u.feed(f, c)?;
    }
    u.finish(f)
}

fn delta_err(e: &Error) -> Option<DeltaError> {
    match e {
        Error::Update(UpdateError::Delta(d)) => Some(*d),
        _ => None,
    }
}

#[test]
fn delta_update_installs_the_patched_image_and_leaves_the_base() {
    let old = app_image(Chip::Esp32, "app", "v1.0.0", 60_000);
    let new = app_image(Chip::Esp32, "app", "v1.1.0", 66_000);
    for compression in [Compression::None, Compression::Heatshrink] {
        for chunk in [1, 3, 64, 4096, usize::MAX] {
            for framed in [false, true] {
                let (mut f, t) = device(&old);
                let before_base = f.data[OTA_0 as usize..OTA_1 as usize].to_vec();
                let mut p = make_patch(&old, &new, compression);
                if framed {
                    let sha = base_image_sha256(&mut f, t.ota(0).unwrap().region(), None)
                        .unwrap()
                        .sha256;
                    p = esp_framed(sha, &p);
                }
                let done = run(&mut f, &t, &p, chunk.min(p.len()), EspHeader::Optional)
                    .unwrap_or_else(|e| panic!("{compression:?} chunk {chunk}: {e}"));
                assert_eq!(done.slot.offset, OTA_1);
                assert_eq!(&f.data[OTA_1 as usize..][..new.len()], &new[..]);
                // The base was only read.
                assert_eq!(&f.data[OTA_0 as usize..OTA_1 as usize], &before_base[..]);
                assert_eq!(f.erases_in(OTA_0, 0x100000), 0);
                assert_eq!(f.unaligned_buffers, 0);
                assert_eq!(f.reprogrammed_words, 0);
                let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {})
                    .unwrap();
                assert_eq!(out.partition.offset, OTA_1);
                assert_eq!(out.summary.app_desc.unwrap().version_str(), "v1.1.0");
            }
        }
    }
}

#[test]
fn delta_update_base_digest_is_the_running_images() {
    let old = app_image(Chip::Esp32, "app", "v1.0.0", 60_000);
    let (mut f, t) = device(&old);
    let running = *t.ota(0).unwrap();
    let u = DeltaUpdate::begin(&mut f, &t, &running, cfg(), None).unwrap();
    // The test image appends its SHA-256: esp_partition_get_sha256 returns that digest,
    // which is the SHA-256 of the image bytes before it.
    let digest: [u8; 32] = Sha256::digest(&old[..old.len() - 32]).into();
    assert_eq!(u.base_sha256(), &digest);
    assert_eq!(u.base_len(), old.len() as u32);
}

/// Every refusal: nothing erased or written anywhere, otadata unchanged.
fn assert_untouched(f: &RamFlash, before: &[u8]) {
    assert_eq!(f.total_erases(), 0, "something was erased");
    assert!(f.data == before, "flash changed");
}

#[test]
fn delta_update_refuses_another_base_before_anything_is_erased() {
    let old = app_image(Chip::Esp32, "app", "v1.0.0", 60_000);
    let other = app_image(Chip::Esp32, "app", "v0.9.0", 60_000);
    let new = app_image(Chip::Esp32, "app", "v1.1.0", 60_000);
    let (mut f, t) = device(&old);
    let before = f.data.clone();
    let running = *t.ota(0).unwrap();

    // esp header naming another base.
    let wrong: [u8; 32] = Sha256::digest(&other[..other.len() - 32]).into();
    let p = esp_framed(wrong, &make_patch(&other, &new, Compression::Heatshrink));
    let e = run(&mut f, &t, &p, 100, EspHeader::Optional).unwrap_err();
    assert!(
        matches!(delta_err(&e), Some(DeltaError::BaseMismatch { expected, .. }) if expected == wrong),
        "{e}"
    );
    assert_untouched(&f, &before);

    // The catalogue's base digest, checked before the patch is read.
    let mut u = DeltaUpdate::begin(&mut f, &t, &running, cfg(), None).unwrap();
    let e = u.require_base(wrong).unwrap_err();
    assert!(matches!(
        delta_err(&e),
        Some(DeltaError::BaseMismatch { .. })
    ));
    assert!(e.to_string().contains("another base image"), "{e}");
    assert_untouched(&f, &before);

    // A patch without the header where one is required.
    let p = make_patch(&old, &new, Compression::Heatshrink);
    let e = run(&mut f, &t, &p, 100, EspHeader::Required).unwrap_err();
    assert!(
        matches!(delta_err(&e), Some(DeltaError::EspHeaderMagic { .. })),
        "{e}"
    );
    assert_untouched(&f, &before);
}

#[test]
fn delta_update_refuses_output_for_another_chip_or_an_older_version_before_erasing() {
    let old = app_image(Chip::Esp32, "app", "v1.0.0", 60_000);
    for new in [
        app_image(Chip::Esp32c3, "app", "v1.1.0", 60_000),
        app_image(Chip::Esp32, "app", "v0.5.0", 60_000),
    ] {
        let (mut f, t) = device(&old);
        let before = f.data.clone();
        let p = make_patch(&old, &new, Compression::Heatshrink);
        let e = run(&mut f, &t, &p, 512, EspHeader::Optional).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Update(UpdateError::WrongChip { .. } | UpdateError::Version { .. })
            ),
            "{e}"
        );
        assert_untouched(&f, &before);
    }
}

#[test]
fn delta_update_with_a_corrupt_or_truncated_patch_never_commits() {
    let old = app_image(Chip::Esp32, "app", "v1.0.0", 60_000);
    let new = app_image(Chip::Esp32, "app", "v1.1.0", 60_000);
    let p = make_patch(&old, &new, Compression::None);
    let mut flipped = p.clone();
    let at = p.len() / 2;
    flipped[at] ^= 0x40;
    for bad in [&p[..p.len() - 10], &p[..40], &flipped[..]] {
        let (mut f, t) = device(&old);
        let od = f.data[OTADATA as usize..][..0x2000].to_vec();
        let base = f.data[OTA_0 as usize..OTA_1 as usize].to_vec();
        assert!(run(&mut f, &t, bad, 1000, EspHeader::Optional).is_err());
        assert_eq!(&f.data[OTADATA as usize..][..0x2000], &od[..]);
        assert_eq!(&f.data[OTA_0 as usize..OTA_1 as usize], &base[..]);
        let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
        assert_eq!(out.partition.offset, OTA_0);
    }
}

#[test]
fn delta_update_ram_is_bounded() {
    // The engine with the applier inside it: all of a delta update's state (no heap).
    let n = core::mem::size_of::<DeltaUpdate>();
    std::println!(
        "DeltaUpdate: {n} bytes (AppUpdate {}, DeltaApplier {})",
        core::mem::size_of::<AppUpdate>(),
        core::mem::size_of::<crate::delta::DeltaApplier>()
    );
    assert!(n < 4608, "{n}");
}

/// A flash that loses power after `left` erases or writes: every later one fails and changes
/// nothing (reads still work, as they would until the brown-out).
struct CutFlash {
    inner: RamFlash,
    left: usize,
    ops: usize,
}

impl embedded_storage::nor_flash::ErrorType for CutFlash {
    type Error = <RamFlash as embedded_storage::nor_flash::ErrorType>::Error;
}

impl embedded_storage::nor_flash::ReadNorFlash for CutFlash {
    const READ_SIZE: usize = 4;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl CutFlash {
    fn spend(&mut self) -> Result<(), <Self as embedded_storage::nor_flash::ErrorType>::Error> {
        if self.left == 0 {
            // Out of bounds is as good a failure as any: the operation does not happen.
            let cap = self.inner.capacity() as u32;
            return self.inner.erase(cap + 4096, cap + 8192);
        }
        self.left -= 1;
        self.ops += 1;
        Ok(())
    }
}

impl embedded_storage::nor_flash::NorFlash for CutFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.spend()?;
        self.inner.erase(from, to)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.spend()?;
        self.inner.write(offset, bytes)
    }
}

fn boots(f: &mut RamFlash, t: &PartitionTable) -> (u32, std::string::String) {
    let out = boot::boot(f, t, Chip::Esp32, &BootConfig::default(), &mut |_| {})
        .expect("the device must always boot");
    let v = out.summary.app_desc.unwrap().version_str().to_string();
    (out.partition.offset, v)
}

#[test]
fn delta_update_cut_at_every_flash_operation_boots_and_the_rerun_completes() {
    let old = app_image(Chip::Esp32, "app", "v1.0.0", 30_000);
    let new = app_image(Chip::Esp32, "app", "v1.1.0", 34_000);
    let p = make_patch(&old, &new, Compression::Heatshrink);
    let (f0, t) = device(&old);
    let running = *t.ota(0).unwrap();
    // Count the erases and writes of an uninterrupted update.
    let mut dry = CutFlash {
        inner: RamFlash::new(f0.data.len()),
        left: usize::MAX,
        ops: 0,
    };
    dry.inner.data.copy_from_slice(&f0.data);
    {
        let mut u = DeltaUpdate::begin(&mut dry, &t, &running, cfg(), None).unwrap();
        for c in p.chunks(1000) {
            u.feed(&mut dry, c).unwrap();
        }
        u.finish(&mut dry).unwrap();
    }
    let total = dry.ops;
    assert!(total > 10, "{total}");
    std::println!(
        "delta update: {total} erases and writes (exhaustive: {})",
        std::env::var_os("OTA_SWEEP_EXHAUSTIVE").is_some()
    );
    // CI: every 7th cut point and the last 20 (the commit); OTA_SWEEP_EXHAUSTIVE=1 (the
    // variable the power-cut sweeps use): every one.
    let exhaustive =
        std::env::var_os("OTA_SWEEP_EXHAUSTIVE").is_some_and(|v| v != "0" && !v.is_empty());
    let cuts: Vec<usize> = (0..=total)
        .filter(|&c| exhaustive || c % 7 == 0 || c + 20 >= total)
        .collect();
    for cut in cuts {
        let mut f = CutFlash {
            inner: RamFlash::new(f0.data.len()),
            left: cut,
            ops: 0,
        };
        f.inner.data.copy_from_slice(&f0.data);
        let r = (|| -> Result<Committed, Error> {
            let mut u = DeltaUpdate::begin(&mut f, &t, &running, cfg(), None)?;
            u.set_version_policy(VersionPolicy::Newer);
            for c in p.chunks(1000) {
                u.feed(&mut f, c)?;
            }
            u.finish(&mut f)
        })();
        assert_eq!(
            r.is_ok(),
            cut == total,
            "cut after {cut} of {total} operations"
        );
        let mut after = f.inner;
        let (slot, version) = boots(&mut after, &t);
        // The base is never touched: the device boots the old app or, after the otadata
        // switch reached flash, the new one.
        assert_eq!(&after.data[OTA_0 as usize..][..old.len()], &old[..]);
        if slot == OTA_0 {
            assert_eq!(version, "v1.0.0");
            run(&mut after, &t, &p, 777, EspHeader::Optional)
                .unwrap_or_else(|e| panic!("rerun after a cut at {cut}: {e}"));
        } else {
            assert_eq!(version, "v1.1.0", "cut at {cut}");
        }
        assert_eq!(boots(&mut after, &t), (OTA_1, "v1.1.0".to_string()));
    }
}

fn copy(f: &RamFlash) -> RamFlash {
    let mut g = RamFlash::new(f.data.len());
    g.data.copy_from_slice(&f.data);
    g
}

/// A delta update keeping a resume log, fed `p` in `chunk`-byte pieces.
fn start_logged<Fl: embedded_storage::nor_flash::NorFlash>(
    f: &mut Fl,
    t: &PartitionTable,
    patch_len: usize,
    image_len: usize,
) -> Result<DeltaUpdate, Error> {
    use crate::resume::{ResumeHeader, ResumeLog, Validator, ValidatorKind};
    let running = *t.ota(0).unwrap();
    let mut u = DeltaUpdate::begin(f, t, &running, cfg(), Some(image_len as u64))?;
    u.set_version_policy(VersionPolicy::Newer);
    let log = ResumeLog::locate(t, u.slot()).unwrap();
    let v = Validator::new(ValidatorKind::ETag, "\"p1\"").unwrap();
    let h = ResumeHeader::new(u.slot(), "http://h/p.patch", v, patch_len as u32);
    u.enable_resume::<Fl>(log, h)?;
    Ok(u)
}

#[test]
fn delta_update_cut_resumes_from_its_checkpoint_with_only_the_rest_of_the_patch() {
    use crate::resume::{RecordKind, ResumeLog};
    let old = app_image(Chip::Esp32, "app", "v1.0.0", 90_000);
    let new = app_image(Chip::Esp32, "app", "v1.1.0", 100_000);
    for (compression, framed) in [
        (Compression::Heatshrink, true),
        (Compression::Heatshrink, false),
        (Compression::None, true),
    ] {
        let (f0, t) = device(&old);
        let mut p = make_patch(&old, &new, compression);
        if framed {
            let mut probe = copy(&f0);
            let sha = base_image_sha256(&mut probe, t.ota(0).unwrap().region(), None)
                .unwrap()
                .sha256;
            p = esp_framed(sha, &p);
        }
        let target: [u8; 32] = Sha256::digest(&new).into();
        let running = *t.ota(0).unwrap();
        // Operations of an uninterrupted, logged update.
        let mut dry = CutFlash {
            inner: copy(&f0),
            left: usize::MAX,
            ops: 0,
        };
        {
            let mut u = start_logged(&mut dry, &t, p.len(), new.len()).unwrap();
            for c in p.chunks(1000) {
                u.feed(&mut dry, c).unwrap();
            }
            u.finish(&mut dry).unwrap();
        }
        let total = dry.ops;
        let mut resumed = 0;
        let exhaustive =
            std::env::var_os("OTA_SWEEP_EXHAUSTIVE").is_some_and(|v| v != "0" && !v.is_empty());
        for cut in (0..total).step_by(if exhaustive { 1 } else { 7 }) {
            let mut f = CutFlash {
                inner: copy(&f0),
                left: cut,
                ops: 0,
            };
            let r = (|| -> Result<Committed, Error> {
                let mut u = start_logged(&mut f, &t, p.len(), new.len())?;
                for c in p.chunks(1000) {
                    u.feed(&mut f, c)?;
                }
                u.finish(&mut f)
            })();
            let mut after = f.inner;
            if r.is_ok() {
                // Cut while clearing the log after the commit: the update is done.
                assert_eq!(boots(&mut after, &t), (OTA_1, "v1.1.0".to_string()));
                continue;
            }
            let (slot, _) = boots(&mut after, &t);
            if slot != OTA_0 {
                continue;
            }
            let log = ResumeLog::locate(&t, t.ota(1).unwrap()).unwrap();
            let rec = log.read(&mut after).unwrap();
            let usable = rec.filter(|r| r.progress > 0 && r.delta.is_some());
            let Some(rec) = usable else {
                // No checkpoint yet: a fresh start.
                run(&mut after, &t, &p, 777, EspHeader::Optional)
                    .unwrap_or_else(|e| panic!("fresh rerun after cut {cut}: {e}"));
                assert_eq!(boots(&mut after, &t), (OTA_1, "v1.1.0".to_string()));
                continue;
            };
            assert_eq!(rec.header.kind, RecordKind::Delta { esp_header: framed });
            let mut u = DeltaUpdate::resume(&mut after, &t, &running, cfg(), log, rec)
                .unwrap_or_else(|e| panic!("resume after cut {cut}: {e}"));
            u.set_version_policy(VersionPolicy::Newer);
            u.require_target(target);
            let at = u.patch_offset() as usize;
            assert!(at > 0 && at < p.len(), "cut {cut}: patch offset {at}");
            assert_eq!(u.output_offset(), rec.progress);
            for c in p[at..].chunks(333) {
                u.feed(&mut after, c)
                    .unwrap_or_else(|e| panic!("cut {cut}, resumed at {at}: {e}"));
            }
            let done = u.finish(&mut after).unwrap();
            assert_eq!(done.resumed_from, rec.progress);
            assert!(done.resume_cleared);
            assert_eq!(&after.data[OTA_1 as usize..][..new.len()], &new[..]);
            assert_eq!(boots(&mut after, &t), (OTA_1, "v1.1.0".to_string()));
            resumed += 1;
        }
        assert!(resumed > 3, "{compression:?}: only {resumed} resumes");
    }
}

#[test]
fn delta_resume_refuses_another_base_and_a_wrong_target_is_not_committed() {
    use crate::resume::ResumeLog;
    let old = app_image(Chip::Esp32, "app", "v1.0.0", 90_000);
    let new = app_image(Chip::Esp32, "app", "v1.1.0", 100_000);
    let p = make_patch(&old, &new, Compression::Heatshrink);
    let (mut f, t) = device(&old);
    let running = *t.ota(0).unwrap();
    let mut u = start_logged(&mut f, &t, p.len(), new.len()).unwrap();
    let half = p.len() / 2;
    u.feed(&mut f, &p[..half]).unwrap();
    let log = ResumeLog::locate(&t, t.ota(1).unwrap()).unwrap();
    let rec = log.read(&mut f).unwrap().unwrap();
    assert!(rec.progress > 0 && rec.delta.is_some(), "{rec:?}");
    // Resumed with a wrong target digest: finished, verified, but otadata is not switched.
    let mut u = DeltaUpdate::resume(&mut f, &t, &running, cfg(), log, rec).unwrap();
    u.require_target([0x11; 32]);
    let at = u.patch_offset() as usize;
    u.feed(&mut f, &p[at..]).unwrap();
    let e = u.finish(&mut f).unwrap_err();
    assert!(
        matches!(delta_err(&e), Some(DeltaError::TargetMismatch { .. })),
        "{e}"
    );
    assert_eq!(boots(&mut f, &t).0, OTA_0);
    // A record saved over another base is refused.
    let (mut g, t) = device(&old);
    let mut u = start_logged(&mut g, &t, p.len(), new.len()).unwrap();
    u.feed(&mut g, &p[..half]).unwrap();
    let rec = log.read(&mut g).unwrap().unwrap();
    let other = app_image(Chip::Esp32, "app", "v0.9.0", 90_000);
    g.put(OTA_0, &other);
    let e = DeltaUpdate::resume(&mut g, &t, &running, cfg(), log, rec)
        .err()
        .expect("another base");
    assert!(e.to_string().contains("another base"), "{e}");
    // And an image download's resume cannot take it.
    let rec = log.read(&mut g).unwrap().unwrap();
    let e = AppUpdate::resume(&mut g, &t, Some(&running), cfg(), log, rec)
        .err()
        .expect("other kind");
    assert!(e.to_string().contains("delta update"), "{e}");
}

#[test]
fn delta_update_refuses_an_image_below_the_efuse_secure_version_before_erasing() {
    // app_image writes secure_version 0: an eFuse counter of 1 refuses it on the first 289
    // output bytes, before the slot is erased (as a full image is refused).
    let old = app_image(Chip::Esp32, "app", "v1.0.0", 60_000);
    let new = app_image(Chip::Esp32, "app", "v1.1.0", 60_000);
    let (mut f, t) = device(&old);
    let before = f.data.clone();
    let running = *t.ota(0).unwrap();
    let p = make_patch(&old, &new, Compression::Heatshrink);
    let mut u = DeltaUpdate::begin(&mut f, &t, &running, cfg(), None).unwrap();
    u.app_mut().set_anti_rollback(Some(1));
    let e = p
        .chunks(500)
        .try_for_each(|c| u.feed(&mut f, c))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Update(UpdateError::SecureVersionTooLow {
                version: 0,
                efuse: 1,
                ..
            })
        ),
        "{e}"
    );
    assert_untouched(&f, &before);
}

/// A patch header that declares more output than the slot holds, or another size than the
/// catalogue's, is refused when the header is read: nothing is erased.
#[test]
fn delta_update_refuses_an_output_size_over_the_slot_or_the_expected_before_erasing() {
    let old = app_image(Chip::Esp32, "app", "v1.0.0", 60_000);
    let new = app_image(Chip::Esp32, "app", "v1.1.0", 60_000);
    let (mut f, t) = device(&old);
    let before = f.data.clone();
    let running = *t.ota(0).unwrap();
    // The real triples for the new image, under a header that says 2 MiB (the slot is 1 MiB).
    let common = old.len().min(new.len());
    let triples = [Triple {
        diff: (0..common).map(|i| new[i].wrapping_sub(old[i])).collect(),
        extra: new[common..].to_vec(),
        adjust: 0,
    }];
    for compression in [Compression::None, Compression::Heatshrink] {
        let p = patch(compression, 2 << 20, &body(&triples));
        let e = run(&mut f, &t, &p, 4096, EspHeader::Optional).unwrap_err();
        assert!(e.to_string().contains("2097152"), "{compression:?}: {e}");
        assert_untouched(&f, &before);
        // The catalogue says 60,000 bytes; the header says 61,000.
        let p = patch(compression, 61_000, &body(&triples));
        let mut u = DeltaUpdate::begin(&mut f, &t, &running, cfg(), Some(60_000)).unwrap();
        let e = p
            .chunks(4096)
            .try_for_each(|c| u.feed(&mut f, c))
            .unwrap_err();
        assert!(e.to_string().contains("61000"), "{compression:?}: {e}");
        assert_untouched(&f, &before);
    }
}
