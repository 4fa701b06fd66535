//! otadata sectors from the fuzzer: every read-side rule (selection, rollback queries, plans)
//! without a panic, and the bootloader emulation over a flash holding them plus two valid apps
//! always boots a valid app.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::boot::{self, BootConfig};
use ota_core::image::verify_flash;
use ota_core::otadata::{OtaData, ENTRY_SIZE};
use ota_core::Chip;
use ota_fuzz::{app, device, table, OTADATA, OTA_1};

use embedded_storage::nor_flash::NorFlash;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 * ENTRY_SIZE + 1 {
        return;
    }
    let ctl = data[0];
    let mut s0 = [0u8; ENTRY_SIZE];
    let mut s1 = [0u8; ENTRY_SIZE];
    s0.copy_from_slice(&data[1..1 + ENTRY_SIZE]);
    s1.copy_from_slice(&data[1 + ENTRY_SIZE..1 + 2 * ENTRY_SIZE]);
    let od = OtaData::from_sectors(&s0, &s1);
    for count in 0..=4u8 {
        let _ = od.boot_slot(count);
        let _ = od.rollback_candidate(count);
        let _ = od.last_invalid_slot(count);
        let _ = od.plan_mark_valid(count);
        let _ = od.plan_mark_invalid(count, true);
        let _ = od.plan_invalidate_inactive(count, Some(0));
        for slot in 0..count.max(1) {
            let _ = od.plan_set_boot(slot, count, ctl & 1 != 0);
            let _ = od.state_of_slot(slot, count);
        }
    }
    let _ = od.plan_bootloader_pre_select(ctl & 2 != 0);
    let _ = (
        od.valid(),
        od.active(),
        od.both_invalid(),
        od.has_initial_contents(),
    );
    assert_eq!(
        OtaData::from_sectors(&od.to_sectors()[0], &od.to_sectors()[1]).entries,
        od.entries
    );

    // On a device: both slots hold valid apps, otadata holds the fuzzer's sectors.
    let mut f = device();
    let t = table();
    let v2 = app("v2.0.0", 20_000);
    ota_core::flash::write(&mut f, OTA_1, &v2).unwrap();
    f.erase(OTADATA, OTADATA + 0x2000).unwrap();
    ota_core::flash::write(&mut f, OTADATA, &s0).unwrap();
    ota_core::flash::write(&mut f, OTADATA + 0x1000, &s1).unwrap();
    let cfg = BootConfig {
        rollback: ctl & 2 != 0,
        ..BootConfig::default()
    };
    let out = boot::boot(&mut f, &t, Chip::Esp32, &cfg, &mut |_| {})
        .expect("with two valid apps something boots");
    verify_flash(&mut f, out.partition.region(), Some(Chip::Esp32)).expect("it verifies");
    let _ = OtaData::read(&mut f, t.otadata().unwrap()).expect("otadata reads");
});
