//! The app update engine over an emulated flash with the incoming image from the fuzzer, fed
//! in fuzzer-chosen chunks, optionally with a resume log and an interruption + resume half way.
//! Whatever the bytes: no panic, the running slot and otadata are untouched unless `finish`
//! succeeded, and when it did the bootloader boots the new slot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::boot::{self, BootConfig};
use ota_core::resume::{ResumeHeader, ResumeLog, Validator, ValidatorKind};
use ota_core::update::{AppUpdate, AppUpdateConfig};
use ota_core::version::VersionPolicy;
use ota_core::Chip;
use ota_fuzz::{device, table, Chunks, OTADATA, OTA_0, OTA_1, SLOT_SIZE};

const URI: &str = "http://127.0.0.1/app.bin";

fuzz_target!(|data: &[u8]| {
    let [ctl, seed, img @ ..] = data else {
        return;
    };
    let mut f = device();
    let t = table();
    let running = *t.ota(0).unwrap();
    let before = f.contents()[OTADATA as usize..(OTA_0 + SLOT_SIZE) as usize].to_vec();
    // The device's chip: ESP32, or the one the image names (so real vectors get deep).
    let chip = if ctl & 1 != 0 {
        img.get(12..14)
            .and_then(|b| Chip::from_id(u16::from_le_bytes([b[0], b[1]])))
            .unwrap_or(Chip::Esp32)
    } else {
        Chip::Esp32
    };
    let cfg = AppUpdateConfig {
        rollback: ctl & 2 != 0,
        ..AppUpdateConfig::new(chip)
    };
    let expected = (ctl & 4 != 0).then_some(img.len() as u64);
    let policy = match (ctl >> 3) & 3 {
        0 => VersionPolicy::None,
        1 => VersionPolicy::Newer,
        _ => VersionPolicy::Semver,
    };
    let journal = ctl & 0x20 != 0;
    let interrupt = ctl & 0x40 != 0;

    let result = (|| -> Result<bool, ota_core::Error> {
        let mut u = AppUpdate::begin(&t, Some(&running), cfg, expected)?;
        let log = ResumeLog::locate(&t, u.slot()).unwrap();
        if journal {
            let v = Validator::new(ValidatorKind::ETag, "\"fuzz\"").unwrap();
            let h = ResumeHeader::new(u.slot(), URI, v, img.len() as u32);
            u.enable_resume(log, h, Some(img.len() as u64))?;
        }
        let n = u.feed_prefix(img)?;
        if !u.prefix_complete() {
            return Ok(false);
        }
        u.check_version(policy, None)?;
        let mut pos = n;
        u.write(&mut f, &[])?;
        let half = img.len() / 2;
        for c in Chunks::new(&img[n..], *seed, 5000) {
            u.write(&mut f, c)?;
            pos += c.len();
            if interrupt && journal && pos >= half {
                break;
            }
        }
        if interrupt && journal {
            // Restart: resume from the record, if any, and send the rest from its checkpoint.
            if let Some(rec) = log.read(&mut f)? {
                if rec.progress > 0 {
                    u = AppUpdate::resume(&mut f, &t, Some(&running), cfg, log, rec)?;
                    pos = rec.progress as usize;
                }
            }
            for c in Chunks::new(img.get(pos..).unwrap_or(&[]), seed.wrapping_add(1), 5000) {
                u.write(&mut f, c)?;
            }
        }
        u.finish(&mut f).map(|_| true)
    })();

    let after = &f.contents()[OTADATA as usize..(OTA_0 + SLOT_SIZE) as usize];
    match result {
        Ok(true) => {
            let out = boot::boot(&mut f, &t, chip, &BootConfig::default(), &mut |_| {})
                .expect("a committed update boots");
            assert_eq!(out.partition.offset, OTA_1);
        }
        _ => {
            // ota_0 and otadata unchanged (otadata is before ota_0; the bytes between are
            // phy-less padding in this table).
            assert!(
                after == &before[..],
                "failed update changed otadata or the running slot"
            );
            let _ = result.map_err(|e| e.to_string());
        }
    }
});
