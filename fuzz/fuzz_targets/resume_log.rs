//! The resume log sector and the slot it describes, both from the fuzzer: reading the record,
//! resuming an update from it, and appending a checkpoint never panic; a record is only used
//! within its slot's limits; a failed resume changes neither otadata nor the running slot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::resume::{ResumeLog, HEADER_SIZE};
use ota_core::update::{AppUpdate, AppUpdateConfig};
use ota_core::Chip;
use ota_fuzz::{device, table, OTADATA, OTA_0, OTA_1, SLOT_SIZE};

fuzz_target!(|data: &[u8]| {
    let [split_hi, split_lo, bytes @ ..] = data else {
        return;
    };
    let split = (usize::from(*split_hi) << 8 | usize::from(*split_lo)).min(bytes.len());
    let (sector, slot_bytes) = bytes.split_at(split);
    let mut f = device();
    let t = table();
    let running = *t.ota(0).unwrap();
    let slot = *t.ota(1).unwrap();
    let log = ResumeLog::locate(&t, &slot).unwrap();
    let at = log.region().offset;
    ota_core::flash::write(&mut f, at, &sector[..sector.len().min(4096)]).unwrap();
    let n = slot_bytes.len().min((SLOT_SIZE - 4096) as usize);
    ota_core::flash::write(&mut f, OTA_1, &slot_bytes[..n]).unwrap();
    let before = f.contents()[OTADATA as usize..(OTA_0 + SLOT_SIZE) as usize].to_vec();
    let Ok(Some(mut rec)) = log.read(&mut f) else {
        if sector.len() >= HEADER_SIZE {
            let _ = log.clear(&mut f);
        }
        return;
    };
    assert!(rec.progress % 4096 == 0 && rec.progress <= log.image_limit());
    let cfg = AppUpdateConfig::new(Chip::Esp32);
    if let Ok(mut u) = AppUpdate::resume(&mut f, &t, Some(&running), cfg, log, rec) {
        assert_eq!(u.written(), rec.progress);
        let tail = slot_bytes.get(rec.progress as usize..).unwrap_or(&[]);
        let ok = u.write(&mut f, &tail[..tail.len().min(8192)]).is_ok();
        if ok {
            let _ = u.finish(&mut f);
        }
    }
    let next = rec.progress + 4096;
    let _ = log.checkpoint(&mut f, &mut rec, next);
    let _ = log.read(&mut f);
    let after = &f.contents()[OTADATA as usize..(OTA_0 + SLOT_SIZE) as usize];
    // A resumed fuzz image may verify and commit (the bytes may be a real image); otherwise
    // otadata and ota_0 stay as they were.
    if after != &before[..] {
        assert!(
            after[..0x2000] != before[..0x2000],
            "flash changed without an otadata commit"
        );
        assert!(
            after[0x3000..] == before[0x3000..],
            "the running slot changed"
        );
    }
});
