//! Tests of the update engines: app and data updates, interrupted and resumed updates, the
//! partition guards, and the rollback rules.

extern crate std;

use super::*;
use crate::boot::{self, BootConfig};
use crate::guard::FlashMap;
use crate::image::{AppDesc, IMAGE_PREFIX_LEN};
use crate::otadata::OtaData;
use crate::partition::{Partition, PartitionTable};
use crate::resume::{ResumeHeader, ResumeLog};
use crate::testutil::{app_image, example_table, RamFlash};
use crate::version::VersionPolicy;

const OTADATA: u32 = 0xD000;
const OTA_1: u32 = 0x110000;

fn cfg() -> AppUpdateConfig {
    AppUpdateConfig::new(Chip::Esp32)
}

/// The map of the example table, nothing running.
fn map(t: &PartitionTable) -> FlashMap<'_> {
    FlashMap::new(t, Chip::Esp32, None)
}

/// A device running `v1.0.0` from ota_0 (booted once, so otadata holds seq 1).
fn device() -> (RamFlash, PartitionTable) {
    let mut f = RamFlash::new(4 << 20);
    let t = example_table();
    f.put(0x10000, &app_image(Chip::Esp32, "app", "v1.0.0", 60_000));
    let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
    assert_eq!(out.partition.label.as_str(), "ota_0");
    f.erases.iter_mut().for_each(|e| *e = 0);
    (f, t)
}

fn update(
    f: &mut RamFlash,
    t: &PartitionTable,
    img: &[u8],
    chunk: usize,
) -> Result<Committed, Error> {
    let running = *t.ota(0).unwrap();
    let mut u = AppUpdate::begin(t, Some(&running), cfg(), Some(img.len() as u64))?;
    let n = u.feed_prefix(img)?;
    for c in img[n..].chunks(chunk) {
        u.write(f, c)?;
    }
    u.finish(f)
}

#[test]
fn next_update_slot_follows_esp_idf() {
    let t = example_table();
    assert_eq!(
        next_update_slot(&t, t.ota(0)).unwrap().label.as_str(),
        "ota_1"
    );
    assert_eq!(
        next_update_slot(&t, t.ota(1)).unwrap().label.as_str(),
        "ota_0"
    );
    assert_eq!(next_update_slot(&t, None).unwrap().label.as_str(), "ota_0");
}

#[test]
fn app_update_writes_next_slot_and_switches_otadata_last() {
    let (mut f, t) = device();
    let img = app_image(Chip::Esp32, "new", "v2.0.0", 300_000);
    let done = update(&mut f, &t, &img, 1000).unwrap();
    assert_eq!(done.slot.offset, OTA_1);
    assert_eq!(
        &f.data[OTA_1 as usize..OTA_1 as usize + img.len()],
        &img[..]
    );
    // Erase-ahead: exactly the sectors the image covers, once each; never the whole slot.
    let sectors = (img.len() as u32).div_ceil(4096);
    assert_eq!(f.erases_in(OTA_1, 0x100000), sectors);
    assert!(f.erases[(OTA_1 / 4096) as usize..][..sectors as usize]
        .iter()
        .all(|&e| e == 1));
    // One otadata sector rewritten, then the bootloader picks ota_1.
    assert_eq!(f.erases_in(OTADATA, 0x2000), 1);
    let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
    assert_eq!(out.partition.offset, OTA_1);
    assert_eq!(out.summary.app_desc.unwrap().version_str(), "v2.0.0");
}

#[test]
fn app_update_checks_the_prefix_before_touching_flash() {
    let (f, t) = device();
    let before = f.data.clone();
    let c3 = app_image(Chip::Esp32c3, "x", "v2", 10_000);
    let running = *t.ota(0).unwrap();
    let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
    let e = u.feed_prefix(&c3).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Update(UpdateError::WrongChip {
                expected: 0,
                found: 5
            })
        ),
        "{:?}",
        e
    );
    let mut bad = app_image(Chip::Esp32, "x", "v2", 10_000);
    bad[0] = 0;
    let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
    assert!(u.feed_prefix(&bad).is_err());
    assert_eq!(f.total_erases(), 0);
    assert!(f.data == before);
    // Too large for the slot: refused at begin.
    let e = AppUpdate::begin(&t, Some(&running), cfg(), Some(0x100001))
        .err()
        .unwrap();
    assert!(matches!(e, Error::Update(UpdateError::TooLarge { .. })));
}

#[test]
fn app_update_with_corrupt_image_leaves_otadata_and_running_slot() {
    let (mut f, t) = device();
    let before = f.data.clone();
    let mut img = app_image(Chip::Esp32, "new", "v2.0.0", 100_000);
    let mid = img.len() / 2;
    img[mid] ^= 1;
    assert!(update(&mut f, &t, &img, 4096).is_err());
    assert!(
        f.data[0xD000..0x110000] == before[0xD000..0x110000],
        "otadata or ota_0 changed"
    );
    let truncated = &app_image(Chip::Esp32, "new", "v2.0.0", 100_000)[..50_000];
    assert!(update(&mut f, &t, truncated, 777).is_err());
    assert!(f.data[0xD000..0x110000] == before[0xD000..0x110000]);
    let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
    assert_eq!(out.partition.label.as_str(), "ota_0");
}

#[test]
fn version_policy_refuses_older_images() {
    let (f, t) = device();
    let running = *t.ota(0).unwrap();
    let mut desc = [0u8; 256];
    desc.copy_from_slice(&f.data[0x10020..0x10120]);
    let cur = AppDesc::parse(&desc).unwrap();
    let old = app_image(Chip::Esp32, "x", "v0.9.0", 5_000);
    let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
    u.feed_prefix(&old).unwrap();
    assert!(u.check_version(VersionPolicy::None, Some(&cur)).is_ok());
    assert!(u.check_version(VersionPolicy::Newer, Some(&cur)).is_err());
    assert!(u.check_version(VersionPolicy::Semver, Some(&cur)).is_err());
    let new = app_image(Chip::Esp32, "x", "v1.0.1", 5_000);
    let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
    u.feed_prefix(&new).unwrap();
    assert!(u.check_version(VersionPolicy::Newer, Some(&cur)).is_ok());
}

fn journaled(
    f: &mut RamFlash,
    t: &PartitionTable,
    img: &[u8],
    uri: &str,
) -> (AppUpdate, ResumeLog) {
    let running = *t.ota(0).unwrap();
    let mut u = AppUpdate::begin(t, Some(&running), cfg(), Some(img.len() as u64)).unwrap();
    let log = ResumeLog::locate(t, u.slot()).unwrap();
    let etag = crate::resume::Validator::new(crate::resume::ValidatorKind::ETag, "\"e1\"");
    let h = ResumeHeader::new(u.slot(), uri, etag.unwrap(), img.len() as u32);
    u.enable_resume(log, h, Some(img.len() as u64)).unwrap();
    u.feed_prefix(img).unwrap();
    u.write(f, &[]).unwrap();
    (u, log)
}

#[test]
fn interrupted_update_resumes_from_its_last_checkpoint() {
    let (mut f, t) = device();
    let img = app_image(Chip::Esp32, "new", "v2.0.0", 200_000);
    let (mut u, log) = journaled(&mut f, &t, &img, "http://h/new.bin");
    // Sector-aligned 4 KiB writes, as the service does, up to 50_000 bytes + a partial one.
    let mut pos = IMAGE_PREFIX_LEN;
    let stop = 50_000;
    while pos < stop {
        let end = ((pos / 4096 + 1) * 4096).min(stop);
        u.write(&mut f, &img[pos..end]).unwrap();
        pos = end;
    }
    assert_eq!(u.checkpoint(), Some(49_152));
    // The power goes off: the engine is gone, only the flash remains.
    let otadata_before = f.data[0xD000..0xF000].to_vec();
    let rec = log.read(&mut f).unwrap().unwrap();
    assert_eq!(rec.progress, 49_152);
    assert!(rec.header.is_for("http://h/new.bin", t.ota(1).unwrap()));
    let running = *t.ota(0).unwrap();
    let mut u = AppUpdate::resume(&mut f, &t, Some(&running), cfg(), log, rec).unwrap();
    assert_eq!(u.resumed_from(), 49_152);
    assert_eq!(u.written(), 49_152);
    assert_eq!(u.incoming_desc().unwrap().version_str(), "v2.0.0");
    for c in img[49_152..].chunks(4096) {
        u.write(&mut f, c).unwrap();
    }
    assert_eq!(
        f.data[0xD000..0xF000],
        otadata_before[..],
        "otadata untouched before finish"
    );
    let done = u.finish(&mut f).unwrap();
    assert_eq!(done.resumed_from, 49_152);
    assert!(done.resume_cleared);
    assert_eq!(log.read(&mut f).unwrap(), None, "record cleared on commit");
    let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
    assert_eq!(out.partition.offset, OTA_1);
    assert_eq!(out.summary.app_desc.unwrap().version_str(), "v2.0.0");
}

#[test]
fn resumed_update_with_corrupted_slot_bytes_never_commits() {
    let (mut f, t) = device();
    let img = app_image(Chip::Esp32, "new", "v2.0.0", 100_000);
    let (mut u, log) = journaled(&mut f, &t, &img, "http://h/new.bin");
    for c in img[IMAGE_PREFIX_LEN..40_960].chunks(4096) {
        u.write(&mut f, c).unwrap();
    }
    // Abandoned here (a restart).
    let running = *t.ota(0).unwrap();
    let before = f.data[0xD000..0x110000].to_vec();
    // A flipped bit in segment data below the checkpoint: the re-hash cannot see it until
    // the end, where the SHA-256 fails; the record is then dropped.
    f.data[OTA_1 as usize + 20_000] ^= 0x04;
    let rec = log.read(&mut f).unwrap().unwrap();
    let mut u = AppUpdate::resume(&mut f, &t, Some(&running), cfg(), log, rec).unwrap();
    for c in img[rec.progress as usize..].chunks(4096) {
        u.write(&mut f, c).unwrap();
    }
    let e = u.finish(&mut f).unwrap_err();
    assert!(matches!(e, Error::Image(_)), "{e:?}");
    assert_eq!(
        log.read(&mut f).unwrap(),
        None,
        "bad resume is not resumed again"
    );
    assert!(
        f.data[0xD000..0x110000] == before[..],
        "otadata or ota_0 changed"
    );
    // A broken header in the slot: resume refuses at once.
    let (mut u, log) = journaled(&mut f, &t, &img, "http://h/new.bin");
    for c in img[IMAGE_PREFIX_LEN..16_384].chunks(4096) {
        u.write(&mut f, c).unwrap();
    }
    // Abandoned here (a restart).
    f.data[OTA_1 as usize] = 0;
    let rec = log.read(&mut f).unwrap().unwrap();
    assert!(AppUpdate::resume(&mut f, &t, Some(&running), cfg(), log, rec).is_err());
}

#[test]
fn resume_log_in_the_slot_tail_limits_the_image() {
    let (_, t) = device();
    let running = *t.ota(0).unwrap();
    let mut u = AppUpdate::begin(&t, Some(&running), cfg(), Some(0x100000)).unwrap();
    let log = ResumeLog::locate(&t, u.slot()).unwrap();
    let etag = crate::resume::Validator::new(crate::resume::ValidatorKind::ETag, "\"x\"");
    let h = ResumeHeader::new(u.slot(), "http://h/a", etag.unwrap(), 0x100000);
    let e = u.enable_resume(log, h, Some(0x100000)).unwrap_err();
    assert!(matches!(
        e,
        Error::Update(UpdateError::Resume(ResumeError::NoRoom { .. }))
    ));
    assert!(u.enable_resume(log, h, None).is_err());
    assert!(u.enable_resume(log, h, Some(0xFF000)).is_ok());
}

#[test]
fn resume_record_for_the_other_slot_is_refused() {
    let (mut f, t) = device();
    let img = app_image(Chip::Esp32, "new", "v2.0.0", 30_000);
    let (mut u, log) = journaled(&mut f, &t, &img, "http://h/new.bin");
    u.write(&mut f, &img[IMAGE_PREFIX_LEN..8192]).unwrap();
    // Abandoned here (a restart).
    let rec = log.read(&mut f).unwrap().unwrap();
    // Running ota_1 now: the target is ota_0, the record is for ota_1.
    let running = *t.ota(1).unwrap();
    let e = AppUpdate::resume(&mut f, &t, Some(&running), cfg(), log, rec)
        .err()
        .unwrap();
    assert!(matches!(
        e,
        Error::Update(UpdateError::Resume(ResumeError::OtherSlot { .. }))
    ));
}

#[test]
fn data_update_refuses_oversize_and_clears_the_stale_tail() {
    let (mut f, t) = device();
    assert!(DataUpdate::begin(&map(&t), "flash_tone", Some(0x100001)).is_err());
    assert!(matches!(
        DataUpdate::begin(&map(&t), "nope", None).err().unwrap(),
        Error::Update(UpdateError::PartitionNotFound { .. })
    ));
    f.put(0x2F0000, &[0u8; 16]); // stale bytes far into the partition
    let mut d = DataUpdate::begin(&map(&t), "flash_tone", Some(10_000)).unwrap();
    d.write(&mut f, &[0x11; 6000]).unwrap();
    d.write(&mut f, &[0x22; 4000]).unwrap();
    assert!(d.write(&mut f, &[0; 0x100000]).is_err());
    d.finish(&mut f).unwrap();
    assert!(f.data[0x210000..0x210000 + 6000].iter().all(|&b| b == 0x11));
    assert!(f.data[0x210000 + 10_000..0x310000]
        .iter()
        .all(|&b| b == 0xFF));
    // Blank sectors are not erased again: 3 written + the one with stale bytes.
    assert_eq!(f.erases_in(0x210000, 0x100000), 4);
}

fn secure_image(version: &str, secure_version: u32, size: u32) -> std::vec::Vec<u8> {
    let mut spec = crate::image::ImageSpec::new(Chip::Esp32, "app", version);
    spec.total_size = Some(size);
    spec.secure_version = secure_version;
    let mut out = std::vec::Vec::new();
    crate::image::build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
    out
}

#[test]
fn data_update_keeps_the_first_sector_erased_until_finish_and_writes_it_last() {
    let (mut f, t) = device();
    f.put(0x210000, &[0x00; 64]); // an old header that must not survive the first write
    let img: std::vec::Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut d = DataUpdate::begin(&map(&t), "flash_tone", Some(img.len() as u64)).unwrap();
    for c in img.chunks(700) {
        d.write(&mut f, c).unwrap();
        // Whatever has been streamed, sector 0 stays blank until finish.
        assert!(f.data[0x210000..0x211000].iter().all(|&b| b == 0xFF));
    }
    assert_eq!(d.written(), img.len() as u32);
    let before = f.bytes_written;
    d.finish(&mut f).unwrap();
    assert_eq!(
        f.bytes_written - before,
        4096,
        "finish programs exactly sector 0"
    );
    assert_eq!(&f.data[0x210000..0x210000 + img.len()], &img[..]);
}

#[test]
fn anti_rollback_refuses_an_old_secure_version_early_and_erases_it_at_commit() {
    let (mut f, t) = device();
    let running = *t.ota(0).unwrap();
    let old = secure_image("v2.0.0", 1, 40_000);
    // Early: from the prefix, before anything is written.
    let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
    u.set_anti_rollback(Some(2));
    u.feed_prefix(&old).unwrap();
    assert!(matches!(
        u.check_secure_version(),
        Err(Error::Update(UpdateError::SecureVersionTooLow {
            version: 1,
            efuse: 2,
            ..
        }))
    ));
    // At commit (esp_ota_set_boot_partition): the image is erased, otadata untouched.
    let od_before = f.data[0xD000..0xF000].to_vec();
    for c in old[IMAGE_PREFIX_LEN..].chunks(4096) {
        u.write(&mut f, c).unwrap();
    }
    let e = u.finish(&mut f).unwrap_err();
    assert!(
        matches!(e, Error::Update(UpdateError::SecureVersionTooLow { .. })),
        "{e:?}"
    );
    assert!(f.data[OTA_1 as usize..OTA_1 as usize + 0x100000]
        .iter()
        .all(|&b| b == 0xFF));
    assert_eq!(&f.data[0xD000..0xF000], &od_before[..]);
    // An image at the eFuse version passes.
    let ok = secure_image("v2.0.1", 2, 40_000);
    let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
    u.set_anti_rollback(Some(2));
    u.feed_prefix(&ok).unwrap();
    u.check_secure_version().unwrap();
    for c in ok[IMAGE_PREFIX_LEN..].chunks(4096) {
        u.write(&mut f, c).unwrap();
    }
    assert_eq!(u.finish(&mut f).unwrap().slot.offset, OTA_1);
}

#[test]
fn begin_with_rollback_refuses_a_pending_app_and_invalidates_the_inactive_entry() {
    let (mut f, t) = device(); // ota_0 running, otadata[0] = seq 1 VALID
    let rb = AppUpdateConfig {
        rollback: true,
        ..cfg()
    };
    let img = app_image(Chip::Esp32, "new", "v2.0.0", 30_000);
    let running = *t.ota(0).unwrap();
    // Nothing inactive yet: nothing erased.
    assert_eq!(
        begin_with_rollback(&mut f, &cfg().flash_map(&t, Some(&running))).unwrap(),
        None
    );
    let mut u = AppUpdate::begin(&t, Some(&running), rb, None).unwrap();
    let n = u.feed_prefix(&img).unwrap();
    u.write(&mut f, &img[n..]).unwrap();
    u.finish(&mut f).unwrap();
    let rcfg = BootConfig {
        rollback: true,
        ..BootConfig::default()
    };
    let out = boot::boot(&mut f, &t, Chip::Esp32, &rcfg, &mut |_| {}).unwrap();
    assert_eq!(out.partition.offset, OTA_1);
    let ota1 = *t.ota(1).unwrap();
    // ota_1 runs unconfirmed: esp_ota_begin refuses, and writes nothing.
    let before = f.data.clone();
    assert!(matches!(
        begin_with_rollback(&mut f, &cfg().flash_map(&t, Some(&ota1))),
        Err(Error::Update(UpdateError::RollbackInvalidState { .. }))
    ));
    assert!(f.data == before);
    // Confirmed: the inactive entry (ota_0's, sector 0) is erased before the next update.
    let part = *t.otadata().unwrap();
    OtaData::read(&mut f, &part)
        .unwrap()
        .mark_valid(&mut f, &part, 2)
        .unwrap();
    assert_eq!(
        begin_with_rollback(&mut f, &cfg().flash_map(&t, Some(&ota1))).unwrap(),
        Some((0, 0))
    );
    assert!(f.data[0xD000..0xE000].iter().all(|&b| b == 0xFF));
}

/// The example table with its entry `label` moved to `offset`/`size`.
fn moved(label: &str, offset: u32, size: u32) -> PartitionTable {
    let mut out = PartitionTable::new();
    for p in example_table().iter() {
        let mut p = *p;
        if p.label.as_str() == label {
            p.offset = offset;
            p.size = size;
        }
        out.push(p).unwrap();
    }
    out
}

#[test]
fn app_update_refuses_a_slot_over_the_partition_table_before_any_erase() {
    let (f, _) = device();
    let t = moved("ota_1", 0x8000, 0x1000);
    let running = *t.ota(0).unwrap();
    let e = AppUpdate::begin(&t, Some(&running), cfg(), Some(100))
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::Update(UpdateError::Guard(GuardError::Overlap { .. }))
        ),
        "{e:?}"
    );
    assert_eq!(f.total_erases(), 0);
    // A non-default table offset moves the protected sector with it.
    let t = moved("ota_1", 0x110000, 0x100000);
    let at_0x110000 = AppUpdateConfig {
        table_offset: 0x110000,
        ..cfg()
    };
    let e = AppUpdate::begin(&t, Some(&running), at_0x110000, None)
        .err()
        .unwrap();
    assert!(std::format!("{e}").contains("the partition table at 0x110000..0x111000"));
    // A slot beyond a known flash size.
    let small = AppUpdateConfig {
        flash_size: Some(0x180000),
        ..cfg()
    };
    assert!(AppUpdate::begin(&t, Some(&running), small, None).is_err());
}

#[test]
fn app_update_writes_only_the_resume_log_its_table_keeps() {
    let (mut f, t) = device();
    let running = *t.ota(0).unwrap();
    let mut u = AppUpdate::begin(&t, Some(&running), cfg(), Some(30_000)).unwrap();
    // A log located with another table (ota_resume inside the running app).
    let mut other = example_table();
    other
        .push(Partition {
            ptype: crate::partition::TYPE_DATA,
            subtype: 0x99,
            offset: 0x11000,
            size: 0x1000,
            label: Label::new(crate::resume::RESUME_PARTITION_LABEL),
            flags: 0,
        })
        .unwrap();
    let foreign = ResumeLog::locate(&other, u.slot()).unwrap();
    let v = crate::resume::Validator::new(crate::resume::ValidatorKind::ETag, "\"e\"").unwrap();
    let h = ResumeHeader::new(u.slot(), "http://h/a", v, 30_000);
    let e = u.enable_resume(foreign, h, Some(30_000)).unwrap_err();
    assert!(matches!(
        e,
        Error::Update(UpdateError::Resume(ResumeError::ForeignLog {
            log_offset: 0x11000,
            ..
        }))
    ));
    assert!(u.discard_resume_record(foreign).is_err());
    // With that table itself, begin refuses at once.
    let e = AppUpdate::begin(&other, Some(&running), cfg(), None)
        .err()
        .unwrap();
    assert!(
        std::format!("{e}").contains("overlaps the running app ota_0"),
        "{e}"
    );
    let before = f.data.clone();
    let home = ResumeLog::locate(&t, u.slot()).unwrap();
    u.enable_resume(home, h, Some(30_000)).unwrap();
    assert!(f.data == before);
    let _ = &mut f;
}

#[test]
fn data_update_refuses_a_partition_over_otadata_or_the_bootloader() {
    let t = moved("flash_tone", 0xE000, 0x2000);
    let e = DataUpdate::begin(&map(&t), "flash_tone", None)
        .err()
        .unwrap();
    assert!(
        std::format!("{e}").contains("data partition flash_tone at 0xe000..0x10000 (8192 bytes) overlaps otadata partition otadata"),
        "{e}"
    );
    let t = moved("flash_tone", 0x1000, 0x2000);
    let e = DataUpdate::begin(&map(&t), "flash_tone", None)
        .err()
        .unwrap();
    assert!(
        std::format!("{e}").contains("overlaps the bootloader region"),
        "{e}"
    );
    let otadata = *t.otadata().unwrap();
    assert!(DataUpdate::for_partition(&map(&t), &otadata, None).is_err());
}

#[test]
fn rollback_helpers_refuse_an_otadata_over_an_app() {
    let (mut f, _) = device();
    let t = moved("otadata", 0x10000, 0x2000); // on top of ota_0
    let running = *t.ota(0).unwrap();
    let before = f.data.clone();
    let e = begin_with_rollback(&mut f, &cfg().flash_map(&t, Some(&running)))
        .err()
        .unwrap();
    assert!(
        std::format!("{e}").starts_with("otadata partition otadata at 0x10000..0x12000 (8192 bytes) overlaps the running app ota_0"),
        "{e}"
    );
    assert!(mark_app_valid_cancel_rollback(&mut f, &t, Chip::Esp32, None).is_err());
    assert!(mark_app_invalid_rollback(&mut f, &t, Chip::Esp32, None).is_err());
    assert!(f.data == before);
}
