//! Every engine on flashes of write unit 1, 4 (esp-storage), 16 and 256 ([`crate::flash`]):
//! the result is byte-exact, no word is programmed twice between erases, every buffer handed to
//! the driver is 4-byte aligned, and the power-loss orders hold.
#![cfg(test)]

extern crate std;

use std::vec::Vec;

use crate::boot::{self, BootConfig};
use crate::flash::SECTOR_SIZE;
use crate::guard::FlashMap;
use crate::image::IMAGE_PREFIX_LEN;
use crate::partition::PartitionTable;
use crate::resume::{self, ResumeHeader, ResumeLog, Validator, ValidatorKind};
use crate::staging::{self, RecordState, StagedCopy, StagedWrite};
use crate::testutil::{app_image, example_table, RamFlash};
use crate::update::{AppUpdate, AppUpdateConfig, DataUpdate};
use crate::Chip;

const OTA_1: u32 = 0x110000;
const TONE: u32 = 0x210000;

fn cfg() -> AppUpdateConfig {
    AppUpdateConfig::new(Chip::Esp32)
}

/// A device running `v1.0.0` from ota_0, on a flash of read and write unit `N`.
fn device<const N: usize>() -> (RamFlash<N, N>, PartitionTable) {
    let mut f = RamFlash::<N, N>::new(4 << 20);
    let t = example_table();
    f.put(0x10000, &app_image(Chip::Esp32, "app", "v1.0.0", 60_000));
    boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
    (f, t)
}

fn clean<const N: usize>(f: &RamFlash<N, N>) {
    assert_eq!(
        f.reprogrammed_words, 0,
        "a word was programmed twice (unit {N})"
    );
    assert_eq!(
        f.unaligned_buffers, 0,
        "an unaligned buffer reached the driver (unit {N})"
    );
}

fn app_update_any_chunking<const N: usize>() {
    // Odd image length and odd chunk sizes: nothing lines up with the word.
    for chunk in [1usize, 7, 1000, 4096, 65_537] {
        let (mut f, t) = device::<N>();
        f.reprogrammed_words = 0;
        let img = app_image(Chip::Esp32, "new", "v2.0.0", 70_001);
        let running = *t.ota(0).unwrap();
        let mut u = AppUpdate::begin(&t, Some(&running), cfg(), Some(img.len() as u64)).unwrap();
        let n = u.feed_prefix(&img).unwrap();
        for c in img[n..].chunks(chunk) {
            u.write(&mut f, c).unwrap();
        }
        let done = u.finish(&mut f).unwrap();
        assert_eq!(done.slot.offset, OTA_1);
        let at = OTA_1 as usize;
        assert_eq!(
            &f.data[at..at + img.len()],
            &img[..],
            "unit {N}, chunk {chunk}"
        );
        // The padding after the image stays erased.
        assert!(f.data[at + img.len()..at + 0x20000]
            .iter()
            .all(|&b| b == 0xFF));
        for &(off, len) in &f.writes {
            assert!((off as usize).is_multiple_of(N) && (len as usize).is_multiple_of(N));
        }
        clean(&f);
        let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
        assert_eq!(out.partition.offset, OTA_1);
        assert_eq!(out.summary.app_desc.unwrap().version_str(), "v2.0.0");
    }
}

#[test]
fn app_update_at_write_unit_1_any_chunking() {
    app_update_any_chunking::<1>();
}
#[test]
fn app_update_at_write_unit_4_any_chunking() {
    app_update_any_chunking::<4>();
}
#[test]
fn app_update_at_write_unit_16_any_chunking() {
    app_update_any_chunking::<16>();
}
#[test]
fn app_update_at_write_unit_256_any_chunking() {
    app_update_any_chunking::<256>();
}

/// An update with a resume log, cut after ~50 KB written in odd chunks, resumed and finished.
fn app_update_resumes<const N: usize>() {
    let (mut f, t) = device::<N>();
    f.reprogrammed_words = 0;
    let img = app_image(Chip::Esp32, "new", "v2.0.0", 200_003);
    let running = *t.ota(0).unwrap();
    let mut u = AppUpdate::begin(&t, Some(&running), cfg(), Some(img.len() as u64)).unwrap();
    let log = ResumeLog::locate(&t, u.slot()).unwrap();
    let etag = Validator::new(ValidatorKind::ETag, "\"e1\"").unwrap();
    let h = ResumeHeader::new(u.slot(), "http://h/a.bin", etag, img.len() as u32);
    u.enable_resume(log, h, Some(img.len() as u64)).unwrap();
    let n = u.feed_prefix(&img).unwrap();
    let stop = 50_001;
    for c in img[n..stop].chunks(999) {
        u.write(&mut f, c).unwrap();
    }
    let cp = u.checkpoint().unwrap();
    assert!(cp > 0 && cp.is_multiple_of(SECTOR_SIZE) && cp <= stop as u32);
    let _ = u; // the power goes off: only the flash remains
    let rec = log.read(&mut f).unwrap().unwrap();
    assert_eq!(rec.progress, cp);
    let mut u = AppUpdate::resume(&mut f, &t, Some(&running), cfg(), log, rec).unwrap();
    assert_eq!(u.resumed_from(), cp);
    for c in img[cp as usize..].chunks(3001) {
        u.write(&mut f, c).unwrap();
    }
    u.finish(&mut f).unwrap();
    assert_eq!(&f.data[OTA_1 as usize..][..img.len()], &img[..]);
    clean(&f);
}

#[test]
fn app_update_resumes_at_write_units_1_4_16_256() {
    app_update_resumes::<1>();
    app_update_resumes::<4>();
    app_update_resumes::<16>();
    app_update_resumes::<256>();
}

fn tone_like(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
    v[..2].copy_from_slice(&0x2053u16.to_le_bytes());
    v
}

/// A data update: byte-exact, and the word holding the header tag is the last write.
fn data_update_header_last<const N: usize>() {
    for len in [3usize, 6, 9, 4095, 4097, 20_001] {
        let (mut f, t) = device::<N>();
        f.writes.clear();
        f.reprogrammed_words = 0;
        let img = tone_like(len);
        let map = FlashMap::new(&t, Chip::Esp32, None);
        let mut d = DataUpdate::begin(&map, "flash_tone", Some(len as u64)).unwrap();
        for c in img.chunks(777) {
            d.write(&mut f, c).unwrap();
        }
        d.finish(&mut f).unwrap();
        assert_eq!(
            &f.data[TONE as usize..][..len],
            &img[..],
            "unit {N}, len {len}"
        );
        let last = *f.writes.last().unwrap();
        let tag_word = crate::flash::round_up(crate::update::DATA_TAG_LAST_LEN as u32, N as u32);
        assert_eq!(last, (TONE, tag_word.max(N as u32)), "unit {N}, len {len}");
        // No other write touches the tag word.
        let tag_writes = f
            .writes
            .iter()
            .filter(|&&(o, l)| o < TONE + tag_word && o + l > TONE)
            .count();
        assert_eq!(tag_writes, 1);
        clean(&f);
    }
}

#[test]
fn data_update_writes_the_tag_word_last_at_write_units_1_4_16_256() {
    data_update_header_last::<1>();
    data_update_header_last::<4>();
    data_update_header_last::<16>();
    data_update_header_last::<256>();
}

/// A staged copy that fails (a fault on the record sector) right after its last step did its
/// work: the mark is missing, the next run redoes the step without programming a word twice.
fn staged_copy_redo<const N: usize>() {
    let (mut f, t) = device::<N>();
    let target = *t.find_data("flash_tone").unwrap();
    let staging_part = *t.ota(1).unwrap();
    let map = FlashMap::new(&t, Chip::Esp32, None);
    let img = tone_like(3 * 4096 + 101);
    let mut w = StagedWrite::begin(&mut f, &map, &staging_part, &target, None).unwrap();
    for c in img.chunks(333) {
        w.write(&mut f, c).unwrap();
    }
    let mut copy = w.commit(&mut f).unwrap();
    let steps = copy.record().steps();
    while copy.next_step() + 1 < steps {
        copy.step(&mut f).unwrap();
    }
    let rec_sector = staging_part.offset + staging_part.size - SECTOR_SIZE;
    f.fail_writes_in = Some((rec_sector, rec_sector + SECTOR_SIZE));
    assert!(copy.step(&mut f).is_err(), "the mark write fails");
    f.fail_writes_in = None;
    // The target's header is complete, but the record says the last step is not done.
    assert_eq!(&f.data[target.offset as usize..][..img.len()], &img[..]);
    match staging::read_record(&mut f, &staging_part).unwrap() {
        RecordState::InProgress { next_step, .. } => assert_eq!(next_step, steps - 1),
        other => panic!("{other:?}"),
    }
    let again = StagedCopy::resume(&mut f, &map, &staging_part, &target)
        .unwrap()
        .unwrap();
    again.run(&mut f).unwrap();
    assert!(matches!(
        staging::read_record(&mut f, &staging_part).unwrap(),
        RecordState::Complete { .. }
    ));
    assert_eq!(&f.data[target.offset as usize..][..img.len()], &img[..]);
    clean(&f);
    // Marks are whole words: step s at progress_offset + s*N.
    let marks = rec_sector + staging::progress_offset(N as u32);
    for s in 0..steps {
        let m = &f.data[(marks + s * N as u32) as usize..][..N];
        assert_eq!(m[0], 0x00);
        assert!(m[1..].iter().all(|&b| b == 0xFF));
    }
}

#[test]
fn staged_copy_redoes_its_last_step_cleanly_at_write_units_1_4_16_256() {
    staged_copy_redo::<1>();
    staged_copy_redo::<4>();
    staged_copy_redo::<16>();
    staged_copy_redo::<256>();
}

#[test]
fn torn_progress_mark_word_means_done() {
    // A mark is `00 FF FF FF` at unit 4; torn inside the word it keeps a prefix of its bytes
    // (the README's tear model): any non-erased byte reads as done, an untouched word as not.
    let (mut f, t) = device::<4>();
    let target = *t.find_data("flash_tone").unwrap();
    let staging_part = *t.ota(1).unwrap();
    let map = FlashMap::new(&t, Chip::Esp32, None);
    let img = tone_like(2 * 4096);
    let mut w = StagedWrite::begin(&mut f, &map, &staging_part, &target, None).unwrap();
    w.write(&mut f, &img).unwrap();
    let mut copy = w.commit(&mut f).unwrap();
    copy.step(&mut f).unwrap();
    let marks = staging_part.offset + staging_part.size - SECTOR_SIZE + staging::progress_offset(4);
    let second = (marks + 4) as usize;
    for (torn, next) in [
        ([0xFFu8; 4], 1u32),
        ([0x00, 0xFF, 0xFF, 0xFF], 2),
        ([0xFE, 0xFF, 0xFF, 0xFF], 2),
    ] {
        f.data[second..second + 4].copy_from_slice(&torn);
        match staging::read_record(&mut f, &staging_part).unwrap() {
            RecordState::InProgress { next_step, .. } => assert_eq!(next_step, next),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn resume_log_records_are_whole_words() {
    assert_eq!(resume::entry_offset(1, 3), 128 + 24);
    assert_eq!(resume::entry_offset(4, 3), 128 + 24);
    assert_eq!(resume::entry_offset(16, 3), 128 + 48);
    assert_eq!(resume::entry_offset(256, 0), 256);
    assert_eq!(resume::max_entries(4), resume::MAX_ENTRIES);
    assert_eq!(resume::max_entries(256), 15);
    // A 1 MB slot at unit 256: the step grows so the 15-record log does not fill.
    let step = resume::step_for_write_size(0x10_0000, 256);
    assert!(0x10_0000 / step < 15, "{step}");
    assert_eq!(resume::step_for(0x10_0000), SECTOR_SIZE);
}

#[test]
fn four_byte_flash_takes_the_writes_that_failed_before() {
    // The probe of issue 9 on a 4-byte-granular flash: the buffered 289-byte prefix, the
    // header-last write of a data update (6 bytes at +2), and single-byte staging marks.
    let (mut f, t) = device::<4>();
    let img = app_image(Chip::Esp32, "new", "v2.0.0", 10_000);
    let running = *t.ota(0).unwrap();
    let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
    u.feed_prefix(&img[..IMAGE_PREFIX_LEN]).unwrap();
    u.write(&mut f, &img[IMAGE_PREFIX_LEN..]).unwrap();
    u.finish(&mut f).unwrap();

    let map = FlashMap::new(&t, Chip::Esp32, None);
    let mut d = DataUpdate::begin(&map, "flash_tone", None).unwrap();
    d.write(&mut f, &tone_like(5000)).unwrap();
    d.finish(&mut f).unwrap();
    assert!(f
        .writes
        .iter()
        .all(|&(o, l)| o.is_multiple_of(4) && l.is_multiple_of(4)));

    let (mut f, t) = device::<4>();
    let target = *t.find_data("flash_tone").unwrap();
    let staging_part = *t.ota(1).unwrap();
    let map = FlashMap::new(&t, Chip::Esp32, None);
    let mut w = StagedWrite::begin(&mut f, &map, &staging_part, &target, None).unwrap();
    w.write(&mut f, &tone_like(5000)).unwrap();
    w.commit(&mut f).unwrap().run(&mut f).unwrap();
    assert!(f
        .writes
        .iter()
        .all(|&(o, l)| o.is_multiple_of(4) && l.is_multiple_of(4)));
    clean(&f);
}

#[test]
fn layer_refuses_an_unaligned_write_offset_before_the_driver() {
    let mut f = RamFlash::<4, 4>::new(0x2000);
    let e = crate::flash::write(&mut f, 2, &[0; 4]).unwrap_err();
    assert_eq!(e.kind, crate::flash::FlashErrorKind::NotAligned);
    assert!(f.writes.is_empty());
    // Any read works: offset 3, 5 bytes, into an unaligned buffer.
    crate::flash::write(&mut f, 0, &[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    let mut buf = [0u8; 7];
    crate::flash::read(&mut f, 3, &mut buf[1..6]).unwrap();
    assert_eq!(&buf[1..6], &[4, 5, 6, 7, 8]);
    assert_eq!(f.unaligned_buffers, 0);
    assert_eq!(&f.data[8..12], &[9, 0xFF, 0xFF, 0xFF]);
}
