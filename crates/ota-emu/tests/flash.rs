//! EmuFlash: NOR rules, write-through to the file, counters, fault injection.

use embedded_storage::nor_flash::{
    MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use ota_emu::flash::{EmuFlashN, FaultPlan, SECTOR_SIZE};
use ota_emu::EmuError;

/// These tests check byte-level NOR rules: a flash with a 1-byte unit. The unit rules
/// (esp-storage's 4 and larger) have their own tests at the end.
type EmuFlash = EmuFlashN<1>;

const S: usize = SECTOR_SIZE as usize;

fn file_flash(size: u32) -> (tempfile::TempDir, std::path::PathBuf, EmuFlash) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flash.bin");
    let f = EmuFlash::create(&path, size).unwrap();
    (dir, path, f)
}

fn read(f: &mut EmuFlash, offset: u32, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f.read(offset, &mut buf).unwrap();
    buf
}

fn assert_multiwrite<T: MultiwriteNorFlash>(_: &T) {}

#[test]
fn trait_constants_match_spi_flash() {
    let f = EmuFlash::in_memory(0x4000);
    assert_eq!(<EmuFlash as ReadNorFlash>::READ_SIZE, 1);
    assert_eq!(<EmuFlash as NorFlash>::WRITE_SIZE, 1);
    // The default emulated flash has esp-storage's units.
    type Default = ota_emu::flash::EmuFlash;
    assert_eq!(<Default as ReadNorFlash>::READ_SIZE, 4);
    assert_eq!(<Default as NorFlash>::WRITE_SIZE, 4);
    assert_eq!(<EmuFlash as NorFlash>::ERASE_SIZE, 4096);
    assert_eq!(f.capacity(), 0x4000);
    assert_multiwrite(&f);
}

#[test]
fn create_fills_file_with_ff() {
    let (_d, path, f) = file_flash(0x3000);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 0x3000);
    assert!(bytes.iter().all(|&b| b == 0xFF));
    assert_eq!(f.contents(), &bytes[..]);
    assert_eq!(f.path(), Some(path.as_path()));
}

#[test]
fn create_rejects_size_not_multiple_of_sector() {
    let dir = tempfile::tempdir().unwrap();
    for size in [0, 100, 0x1001] {
        let e = EmuFlash::create(dir.path().join("f.bin"), size).unwrap_err();
        assert!(matches!(e, EmuError::BadFlashSize { .. }), "{e}");
    }
}

#[test]
fn open_rejects_file_not_multiple_of_sector() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.bin");
    std::fs::write(&path, vec![0xFF; 5000]).unwrap();
    let e = EmuFlash::open(&path).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("odd.bin"), "{msg}");
    assert!(msg.contains("5000 bytes"), "{msg}");
    assert!(
        msg.contains("multiple of the 4096-byte sector size"),
        "{msg}"
    );
}

#[test]
fn open_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = EmuFlash::open(dir.path().join("nope.bin")).unwrap_err();
    assert!(matches!(e, EmuError::Io { .. }));
    assert!(e.to_string().contains("nope.bin"), "{e}");
}

#[test]
fn in_memory_rounds_up_to_sectors_and_is_erased() {
    let f = EmuFlash::in_memory(5000);
    assert_eq!(f.size(), 0x2000);
    assert!(f.contents().iter().all(|&b| b == 0xFF));
    assert_eq!(f.path(), None);
}

#[test]
fn erase_sets_whole_sector_to_ff() {
    let mut f = EmuFlash::in_memory(0x3000);
    f.write(0, &[0u8; 0x3000]).unwrap();
    f.erase(0x1000, 0x2000).unwrap();
    let c = f.contents();
    assert!(c[..S].iter().all(|&b| b == 0));
    assert!(c[S..2 * S].iter().all(|&b| b == 0xFF));
    assert!(c[2 * S..].iter().all(|&b| b == 0));
}

#[test]
fn write_programs_by_and() {
    let mut f = EmuFlash::in_memory(0x1000);
    f.write(10, &[0xF0, 0x0F]).unwrap();
    // Writing again is allowed while bits only clear: the result is the AND.
    f.write(10, &[0x30, 0x0F]).unwrap();
    f.write(10, &[0x30, 0x03]).unwrap();
    assert_eq!(read(&mut f, 9, 4), [0xFF, 0x30, 0x03, 0xFF]);
}

#[test]
fn write_setting_a_bit_fails_and_changes_nothing() {
    let (_d, path, mut f) = file_flash(0x1000);
    f.write(100, &[0x00, 0x0F]).unwrap();
    let before = f.contents().to_vec();
    // Bytes 99 and 100 are fine (FF->AA, 00->00), 101 wants 0x0F -> 0x1F.
    let e = f.write(99, &[0xAA, 0x00, 0x1F, 0x00]).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::BitSet {
                offset: 101,
                old: 0x0F,
                new: 0x1F
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), NorFlashErrorKind::Other);
    assert!(e.to_string().contains("0x65"), "{e}");
    assert_eq!(f.contents(), &before[..], "flash unchanged");
    assert_eq!(std::fs::read(&path).unwrap(), before, "file unchanged");
    assert_eq!(f.stats().write_ops, 1, "the failed write is not counted");
}

#[test]
fn misaligned_erase_is_not_aligned_error() {
    let mut f = EmuFlash::in_memory(0x3000);
    for (from, to) in [(0x800, 0x1000), (0x1000, 0x1800), (1, 0x2001)] {
        let e = f.erase(from, to).unwrap_err();
        assert!(
            matches!(e, EmuError::NotAligned { offset, .. } if offset == from),
            "{e}"
        );
        assert_eq!(e.kind(), NorFlashErrorKind::NotAligned);
    }
    // ota-core's helper maps it the same way.
    let e = ota_core::flash::erase(&mut f, 0x800, 0x1000).unwrap_err();
    assert_eq!(e.kind, ota_core::flash::FlashErrorKind::NotAligned);
}

#[test]
fn out_of_range_access_is_out_of_bounds() {
    let mut f = EmuFlash::in_memory(0x2000);
    let mut buf = [0u8; 16];
    let errs = [
        f.read(0x1FF8, &mut buf).unwrap_err(),
        f.read(u32::MAX, &mut buf).unwrap_err(),
        f.write(0x2000, &[0]).unwrap_err(),
        f.write(0x1FFF, &[0, 0]).unwrap_err(),
        f.erase(0x1000, 0x3000).unwrap_err(),
        f.erase(0x2000, 0x1000).unwrap_err(),
    ];
    for e in errs {
        assert!(matches!(e, EmuError::OutOfBounds { .. }), "{e}");
        assert_eq!(e.kind(), NorFlashErrorKind::OutOfBounds);
    }
    assert!(f.contents().iter().all(|&b| b == 0xFF));
    // Reading up to the very end is fine.
    f.read(0x1FF0, &mut buf).unwrap();
}

#[test]
fn every_change_is_written_through_to_the_file() {
    let (_d, path, mut f) = file_flash(0x4000);
    f.write(0x10, b"hello").unwrap();
    f.write(0x1FFE, &[0x12, 0x34, 0x56, 0x78]).unwrap();
    f.write(0x3000, &[0u8; 0x1000]).unwrap();
    f.erase(0x3000, 0x4000).unwrap();
    f.write(0x3004, &[0xA5]).unwrap();
    // Without dropping or syncing `f`: the file already holds every change.
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk, f.contents());
    assert_eq!(&on_disk[0x10..0x15], b"hello");
    assert_eq!(on_disk[0x3004], 0xA5);
    assert_eq!(on_disk[0x3005], 0xFF);
    // Reopening gives the same flash.
    let mut g = EmuFlash::open(&path).unwrap();
    assert_eq!(g.contents(), f.contents());
    assert_eq!(read(&mut g, 0x1FFE, 4), [0x12, 0x34, 0x56, 0x78]);
    // And the reopened flash writes through too.
    g.erase(0, 0x1000).unwrap();
    assert!(std::fs::read(&path).unwrap()[..S]
        .iter()
        .all(|&b| b == 0xFF));
}

#[test]
fn counters_count_bytes_and_erases_per_sector() {
    let mut f = EmuFlash::in_memory(0x10000);
    f.erase(0, 0x3000).unwrap();
    f.erase(0x1000, 0x2000).unwrap();
    f.write(0x1000, &[0; 100]).unwrap();
    f.write(0x5000, &[1; 28]).unwrap();
    let mut buf = [0u8; 64];
    f.read(0, &mut buf).unwrap();
    f.read(0x100, &mut buf[..10]).unwrap();
    let s = f.stats();
    assert_eq!((s.bytes_read, s.read_ops), (74, 2));
    assert_eq!((s.bytes_written, s.write_ops), (128, 2));
    assert_eq!((s.bytes_erased, s.erase_ops), (0x4000, 2));
    assert_eq!(&s.erase_counts[..4], &[1, 2, 1, 0]);
    assert_eq!(s.erase_counts.len(), 16);
    assert_eq!(s.sectors_erased(), 4);
    assert_eq!(s.max_erase_count(), 2);
    assert_eq!(s.erase_count(1), 2);
    assert_eq!(s.erase_count(999), 0);
    assert_eq!(f.erases_in(0x1000..0x2000), 2);
    assert_eq!(
        f.erases_in(0x0FFF..0x1001),
        3,
        "a range touching two sectors counts both"
    );
    assert_eq!(f.erases_in(0..0x10000), 4);
    assert_eq!(f.erases_in(0x3000..0x10000), 0);
    assert_eq!(f.erases_in(0x2000..0x2000), 0);
    f.reset_stats();
    let s = f.stats();
    assert_eq!(
        (
            s.bytes_read,
            s.bytes_written,
            s.erase_ops,
            s.sectors_erased()
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(s.erase_counts.len(), 16);
}

#[test]
fn power_cut_tears_a_write_and_the_file_holds_the_torn_state() {
    let (_d, path, mut f) = file_flash(0x2000);
    f.write(0, &[0x11; 10]).unwrap(); // before the plan: not counted
    f.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(25),
        ..Default::default()
    });
    f.write(0x100, &[0x22; 20]).unwrap(); // 20 bytes done
    assert!(!f.power_cut_happened());
    let e = f.write(0x200, &[0x33; 20]).unwrap_err(); // only 5 of these get programmed
    assert!(matches!(e, EmuError::PowerCut { after_bytes: 25 }), "{e}");
    assert!(f.power_cut_happened());
    assert_eq!(f.bytes_since_plan(), 25);
    let c = f.contents();
    assert!(c[0x200..0x205].iter().all(|&b| b == 0x33));
    assert!(c[0x205..0x214].iter().all(|&b| b == 0xFF));
    assert_eq!(std::fs::read(&path).unwrap(), c, "file = torn flash");
    assert_eq!(f.stats().bytes_written, 10 + 20 + 5);
    // Everything fails from now on, reads included, and nothing changes.
    let mut buf = [0u8; 4];
    assert!(matches!(
        f.read(0, &mut buf),
        Err(EmuError::PowerCut { after_bytes: 25 })
    ));
    assert!(matches!(
        f.write(0x300, &[0]),
        Err(EmuError::PowerCut { .. })
    ));
    assert!(matches!(f.erase(0, 0x1000), Err(EmuError::PowerCut { .. })));
    assert_eq!(std::fs::read(&path).unwrap()[0x300], 0xFF);
    // A reopened file is the torn flash.
    let g = EmuFlash::open(&path).unwrap();
    assert_eq!(&g.contents()[0x200..0x214], &f.contents()[0x200..0x214]);
    // Power back on: the flash works again, contents as the cut left them.
    f.power_cycle();
    assert!(!f.power_cut_happened());
    assert_eq!(read(&mut f, 0x204, 2), [0x33, 0xFF]);
}

#[test]
fn power_cut_tears_an_erase_mid_sector() {
    let (_d, path, mut f) = file_flash(0x4000);
    f.write(0, &[0u8; 0x4000]).unwrap();
    f.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(0x1000 + 100),
        ..Default::default()
    });
    let e = f.erase(0x1000, 0x4000).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::PowerCut {
                after_bytes: 0x1064
            }
        ),
        "{e}"
    );
    let c = f.contents().to_vec();
    assert!(
        c[..0x1000].iter().all(|&b| b == 0),
        "sector before untouched"
    );
    assert!(
        c[0x1000..0x2000].iter().all(|&b| b == 0xFF),
        "first sector fully erased"
    );
    assert!(
        c[0x2000..0x2064].iter().all(|&b| b == 0xFF),
        "first 100 bytes of the torn sector erased"
    );
    assert!(
        c[0x2064..].iter().all(|&b| b == 0),
        "rest of the torn sector and later sectors as they were"
    );
    assert_eq!(std::fs::read(&path).unwrap(), c, "file = torn flash");
    let s = f.stats();
    assert_eq!(
        &s.erase_counts[..4],
        &[0, 1, 1, 0],
        "torn sector counts as erased once"
    );
    assert_eq!(s.bytes_erased, 0x1064);
}

#[test]
fn power_cut_at_zero_changes_nothing() {
    let mut f = EmuFlash::in_memory(0x2000);
    f.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(0),
        ..Default::default()
    });
    // A zero-length write does not program a byte, so it does not cut the power.
    f.write(0, &[]).unwrap();
    assert!(matches!(
        f.write(0, &[0]),
        Err(EmuError::PowerCut { after_bytes: 0 })
    ));
    assert!(f.contents().iter().all(|&b| b == 0xFF));
}

#[test]
fn power_cut_when_the_count_is_reached_exactly_still_completes_the_operation() {
    let mut f = EmuFlash::in_memory(0x2000);
    f.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(8),
        ..Default::default()
    });
    assert!(matches!(
        f.write(0, &[0; 8]),
        Err(EmuError::PowerCut { after_bytes: 8 })
    ));
    assert!(
        f.contents()[..8].iter().all(|&b| b == 0),
        "all 8 bytes programmed"
    );
}

/// Every cut point of "erase a sector, then write 64 bytes" leaves a state between the two.
#[test]
fn power_cut_sweep_leaves_a_prefix_of_the_work() {
    let data: Vec<u8> = (0..64u8).collect();
    let total = S as u64 + data.len() as u64;
    for n in 0..=total + 1 {
        let mut f = EmuFlash::in_memory(0x2000);
        f.write(0x1000, &[0u8; S]).unwrap();
        f.set_fault_plan(FaultPlan {
            power_cut_after_bytes: Some(n),
            ..Default::default()
        });
        let r = f.erase(0x1000, 0x2000).and_then(|_| f.write(0x1000, &data));
        assert_eq!(r.is_err(), n <= total, "n={n}");
        assert_eq!(f.power_cut_happened(), n <= total, "n={n}");
        let sector = &f.contents()[S..];
        let erased = n.min(S as u64) as usize;
        let written = n.saturating_sub(S as u64).min(data.len() as u64) as usize;
        for (i, &b) in sector.iter().enumerate() {
            let want = if i < written {
                data[i]
            } else if i < erased {
                0xFF
            } else {
                0x00
            };
            assert_eq!(b, want, "n={n} byte {i}");
        }
    }
}

#[test]
fn fail_write_at_rejects_writes_covering_the_address() {
    let mut f = EmuFlash::in_memory(0x2000);
    f.set_fault_plan(FaultPlan {
        fail_write_at: Some(0x123),
        ..Default::default()
    });
    f.write(0x100, &[0; 0x23]).unwrap(); // ends just before
    f.write(0x124, &[0; 4]).unwrap(); // starts just after
    let e = f.write(0x120, &[0; 8]).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::InjectedFault {
                op: ota_core::flash::FlashOp::Write,
                offset: 0x120,
                len: 8,
                at: 0x123
            }
        ),
        "{e}"
    );
    assert_eq!(f.contents()[0x123], 0xFF, "nothing written");
    assert!(!f.power_cut_happened());
    // Erases are not affected; clearing the plan heals the cell.
    f.erase(0, 0x1000).unwrap();
    f.clear_fault_plan();
    f.write(0x120, &[0; 8]).unwrap();
}

#[test]
fn fail_erase_at_rejects_erases_covering_the_address() {
    let mut f = EmuFlash::in_memory(0x4000);
    f.write(0, &[0; 0x4000]).unwrap();
    f.set_fault_plan(FaultPlan {
        fail_erase_at: Some(0x2FFF),
        ..Default::default()
    });
    f.erase(0, 0x2000).unwrap();
    let e = f.erase(0x1000, 0x4000).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::InjectedFault {
                op: ota_core::flash::FlashOp::Erase,
                at: 0x2FFF,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        f.contents()[0x2000..].iter().all(|&b| b == 0),
        "nothing erased"
    );
    assert_eq!(
        f.stats().erase_count(1),
        1,
        "the failed erase is not counted"
    );
}

#[test]
fn ota_core_region_helpers_drive_the_emulator() {
    let mut f = EmuFlash::in_memory(0x10000);
    let r = ota_core::flash::Region::new(0x4000, 0x2000);
    r.erase(&mut f, 0, 0x2000).unwrap();
    r.write(&mut f, 0x10, &[1, 2, 3]).unwrap();
    let mut b = [0u8; 3];
    r.read(&mut f, 0x10, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3]);
    assert_eq!(f.contents()[0x4010], 1);
    // A bit-set error surfaces as kind Other through ota-core.
    let e = r.write(&mut f, 0x10, &[0xFF]).unwrap_err();
    assert_eq!(e.kind, ota_core::flash::FlashErrorKind::Other);
}

#[test]
fn clone_in_memory_copies_contents_but_not_file_or_counters() {
    let (_d, path, mut f) = file_flash(0x2000);
    f.write(0, &[0x12]).unwrap();
    let mut g = f.clone_in_memory();
    assert_eq!(g.contents(), f.contents());
    assert_eq!((g.path(), g.stats().write_ops), (None, 0));
    g.write(1, &[0x34]).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap()[1],
        0xFF,
        "the copy does not write to the file"
    );
    assert_eq!(f.contents()[1], 0xFF);
}

#[test]
fn torn_erase_with_a_seed_leaves_seeded_garbage_in_the_rest_of_the_sector_only() {
    let (_d, path, mut f) = file_flash(0x4000);
    f.write(0, &[0u8; 0x4000]).unwrap();
    f.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(0x1000 + 100),
        torn_erase_random: Some(42),
        ..Default::default()
    });
    assert!(f.erase(0x1000, 0x4000).is_err());
    let c = f.contents().to_vec();
    assert!(c[0x1000..0x2064].iter().all(|&b| b == 0xFF));
    let garbage = &c[0x2064..0x3000];
    for (i, &b) in garbage.iter().enumerate() {
        assert_eq!(b, ota_emu::flash::torn_erase_byte(42, 0x2064 + i as u32));
    }
    // Garbage, not a constant fill: many distinct values.
    let mut seen = [false; 256];
    garbage.iter().for_each(|&b| seen[b as usize] = true);
    assert!(seen.iter().filter(|&&x| x).count() > 200);
    assert!(
        c[0x3000..].iter().all(|&b| b == 0),
        "later sectors keep their old content"
    );
    assert_eq!(std::fs::read(&path).unwrap(), c, "file = torn flash");
    // The same seed gives the same garbage; another seed other garbage.
    assert_ne!(
        ota_emu::flash::torn_erase_byte(42, 0x2064),
        ota_emu::flash::torn_erase_byte(43, 0x2064)
    );
}

#[test]
fn torn_erase_exactly_at_a_sector_boundary_leaves_no_garbage() {
    let mut f = EmuFlash::in_memory(0x3000);
    f.write(0, &[0u8; 0x3000]).unwrap();
    f.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(0x1000),
        torn_erase_random: Some(7),
        ..Default::default()
    });
    assert!(f.erase(0x1000, 0x3000).is_err());
    assert!(f.contents()[0x1000..0x2000].iter().all(|&b| b == 0xFF));
    assert!(f.contents()[0x2000..].iter().all(|&b| b == 0));
}

#[test]
fn the_power_cut_hook_runs_once_after_the_torn_state_reached_the_file() {
    use std::sync::{Arc, Mutex};
    let (_d, path, mut f) = file_flash(0x2000);
    let seen: Arc<Mutex<Vec<(u64, u8)>>> = Arc::default();
    let s = seen.clone();
    let p = path.clone();
    f.set_power_cut_hook(Box::new(move |n| {
        let on_disk = std::fs::read(&p).unwrap()[0x102];
        s.lock().unwrap().push((n, on_disk));
    }));
    f.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(3),
        ..Default::default()
    });
    assert!(f.write(0x100, &[0x5A; 10]).is_err());
    assert!(f.write(0x200, &[0; 1]).is_err());
    assert_eq!(*seen.lock().unwrap(), vec![(3, 0x5A)]);
}

#[test]
fn four_byte_flash_refuses_unaligned_access_like_esp_storage() {
    let mut f = ota_emu::flash::EmuFlash::in_memory(0x2000);
    for (off, len) in [(1u32, 4usize), (0, 3), (2, 6), (4, 1)] {
        let e = f.write(off, &vec![0u8; len]).unwrap_err();
        assert_eq!(e.kind(), NorFlashErrorKind::NotAligned, "write {off} {len}");
        let mut buf = vec![0u8; len];
        let e = f.read(off, &mut buf).unwrap_err();
        assert_eq!(e.kind(), NorFlashErrorKind::NotAligned, "read {off} {len}");
        assert!(e.to_string().contains("4-byte unit"), "{e}");
    }
    assert!(f.contents().iter().all(|&b| b == 0xFF));
    f.write(4, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let mut buf = [0u8; 4];
    f.read(8, &mut buf).unwrap();
    assert_eq!(buf, [5, 6, 7, 8]);
    let mut g = EmuFlashN::<256>::in_memory(0x2000);
    assert!(g.write(128, &[0; 256]).is_err());
    g.write(256, &[0; 256]).unwrap();
}

#[test]
fn power_cut_tears_a_four_byte_write_inside_a_word() {
    // The tear model: a write cut after k bytes programmed exactly its first k bytes, even in
    // the middle of a word.
    let mut f = ota_emu::flash::EmuFlash::in_memory(0x2000);
    f.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(6),
        ..FaultPlan::default()
    });
    let e = f.write(0, &[0u8; 8]).unwrap_err();
    assert!(matches!(e, EmuError::PowerCut { after_bytes: 6 }), "{e}");
    assert_eq!(&f.contents()[..8], &[0, 0, 0, 0, 0, 0, 0xFF, 0xFF]);
}
