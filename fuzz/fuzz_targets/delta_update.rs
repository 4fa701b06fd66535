//! The delta app update engine over an emulated flash (v1.0.0 running in ota_0 is the base)
//! with the patch from the fuzzer, fed in fuzzer-chosen chunks, optionally with an expected
//! size, a required esp_delta_ota header, a resume log and an interruption + resume from the
//! record. Whatever the bytes: no panic, the running slot and otadata are untouched unless
//! `finish` succeeded, a refusal before the first output byte erases nothing, and a committed
//! update boots the new slot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::boot::{self, BootConfig};
use ota_core::resume::{ResumeHeader, ResumeLog, Validator, ValidatorKind};
use ota_core::update::{AppUpdateConfig, DeltaUpdate, EspHeader};
use ota_core::version::VersionPolicy;
use ota_core::Chip;
use ota_fuzz::{device, table, Chunks, OTADATA, OTA_0, OTA_1, SLOT_SIZE};

const URI: &str = "http://127.0.0.1/app.patch";

fuzz_target!(|data: &[u8]| {
    let [ctl, seed, size_lo, size_hi, patch @ ..] = data else {
        return;
    };
    let mut f = device();
    let t = table();
    let running = *t.ota(0).unwrap();
    let before = f.contents()[OTADATA as usize..(OTA_0 + SLOT_SIZE) as usize].to_vec();
    let slot_before = f.contents()[OTA_1 as usize..(OTA_1 + SLOT_SIZE) as usize].to_vec();
    let cfg = AppUpdateConfig {
        rollback: ctl & 2 != 0,
        ..AppUpdateConfig::new(Chip::Esp32)
    };
    // The catalogue's image size: given or not, near the 20,000-byte seeds or anywhere.
    let expected = (ctl & 4 != 0).then_some(u64::from(u16::from_le_bytes([*size_lo, *size_hi])));
    let journal = ctl & 0x20 != 0;
    let interrupt = ctl & 0x40 != 0;
    let mut produced = false;

    let result = (|| -> Result<bool, ota_core::Error> {
        let mut u = DeltaUpdate::begin(&mut f, &t, &running, cfg, expected)?;
        u.set_esp_header(if ctl & 1 != 0 {
            EspHeader::Required
        } else {
            EspHeader::Optional
        });
        u.set_version_policy(if ctl & 8 != 0 {
            VersionPolicy::Newer
        } else {
            VersionPolicy::None
        });
        let log = ResumeLog::locate(&t, u.slot()).unwrap();
        if journal {
            let v = Validator::new(ValidatorKind::ETag, "\"fuzz\"").unwrap();
            let h = ResumeHeader::new(u.slot(), URI, v, patch.len() as u32);
            u.enable_resume::<ota_emu::EmuFlash>(log, h)?;
        }
        let half = patch.len() / 2;
        let mut pos = 0;
        for c in Chunks::new(patch, *seed, 3000) {
            // A feed may produce output and then fail: counted before its error goes up.
            let r = u.feed(&mut f, c);
            produced |= u.output_offset() > 0;
            r?;
            pos += c.len();
            if interrupt && journal && pos >= half {
                break;
            }
        }
        if interrupt && journal {
            // Restart: resume from the record when there is one, and send the rest of the
            // patch from the offset it names; else start over.
            let rec = log.read(&mut f)?.filter(|r| r.progress > 0 && r.delta.is_some());
            match rec {
                Some(rec) => {
                    u = DeltaUpdate::resume(&mut f, &t, &running, cfg, log, rec)?;
                    pos = u.patch_offset() as usize;
                }
                None => {
                    u = DeltaUpdate::begin(&mut f, &t, &running, cfg, expected)?;
                    pos = 0;
                }
            }
            for c in Chunks::new(patch.get(pos..).unwrap_or(&[]), seed.wrapping_add(1), 3000) {
                let r = u.feed(&mut f, c);
                produced |= u.output_offset() > 0;
                r?;
            }
        }
        u.finish(&mut f).map(|_| true)
    })();

    let after = &f.contents()[OTADATA as usize..(OTA_0 + SLOT_SIZE) as usize];
    match result {
        Ok(true) => {
            let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {})
                .expect("a committed delta update boots");
            assert_eq!(out.partition.offset, OTA_1);
        }
        _ => {
            assert!(
                after == &before[..],
                "a failed delta update changed otadata or the running slot"
            );
            if !produced && !journal {
                // Refused before any output: the new slot was not touched either.
                assert!(
                    f.contents()[OTA_1 as usize..(OTA_1 + SLOT_SIZE) as usize] == slot_before[..],
                    "refused before any output, but the new slot changed"
                );
            }
            let _ = result.map_err(|e| e.to_string());
        }
    }
});
