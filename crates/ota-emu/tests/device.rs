//! Device: chip and flash size from the bootloader header, partition table at 0x8000.
//!
//! Tests marked `needs partition parser (integration)` call `PartitionTable::parse`, which is a
//! stub in this worktree; they pass once the ota-core partition module is merged.

use std::path::PathBuf;

use embedded_storage::nor_flash::NorFlash;
use ota_core::image::HEADER_SIZE;
use ota_core::Chip;
use ota_emu::device::{detect_bootloader, layout, Device};
use ota_emu::{EmuError, EmuFlash};

const MB: u32 = 1024 * 1024;

fn vectors() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors/esptool"
    ));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIP: ../shared/vectors not found");
        None
    }
}

/// A 24-byte image header by hand (esp-idf `esp_app_format.h`): magic, 3 segments, DIO, byte 3, chip id.
fn header(byte3: u8, chip_id: u16) -> [u8; HEADER_SIZE] {
    let mut h = [0u8; HEADER_SIZE];
    h[0] = 0xE9;
    h[1] = 3;
    h[2] = 2; // DIO
    h[3] = byte3;
    h[4..8].copy_from_slice(&0x4008_0000u32.to_le_bytes());
    h[8] = 0xEE;
    h[12..14].copy_from_slice(&chip_id.to_le_bytes());
    h
}

/// A partition table entry (esp-idf `esp_flash_partitions.h`).
fn entry(ptype: u8, subtype: u8, offset: u32, size: u32, label: &str) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[0] = 0xAA;
    e[1] = 0x50;
    e[2] = ptype;
    e[3] = subtype;
    e[4..8].copy_from_slice(&offset.to_le_bytes());
    e[8..12].copy_from_slice(&size.to_le_bytes());
    e[12..12 + label.len()].copy_from_slice(label.as_bytes());
    e
}

/// nvs, otadata, phy_init, ota_0, ota_1; no MD5 entry (optional for the bootloader, `flash_partitions.c`);
/// the erased flash after it is the terminator.
fn ota_table() -> Vec<u8> {
    [
        entry(1, 0x02, 0x9000, 0x4000, "nvs"),
        entry(1, 0x00, 0xD000, 0x2000, "otadata"),
        entry(1, 0x01, 0xF000, 0x1000, "phy_init"),
        entry(0, 0x10, 0x10000, 0x100000, "ota_0"),
        entry(0, 0x11, 0x110000, 0x100000, "ota_1"),
    ]
    .concat()
}

fn temp_flash(size: u32) -> (tempfile::TempDir, PathBuf, EmuFlash) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.bin");
    let f = EmuFlash::create(&path, size).unwrap();
    (dir, path, f)
}

#[test]
fn blank_flash_error_names_file_and_what_was_found() {
    let (_d, path, f) = temp_flash(4 * MB);
    let e = Device::open(f).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "no bootloader image header found at 0x1000, 0x0 or 0x2000 of {} \
             (found 0xff at 0x1000, 0xff at 0x0, 0xff at 0x2000)",
            path.display()
        )
    );
}

#[test]
fn esp32_hand_header_at_0x1000_is_detected() {
    let mut f = EmuFlash::in_memory(4 * MB);
    layout::write_raw(&mut f, 0x1000, &header(0x20, 0x0000)).unwrap();
    let b = detect_bootloader(&mut f, "x").unwrap();
    assert_eq!(
        (b.chip, b.offset, b.flash_size),
        (Chip::Esp32, 0x1000, 4 * MB)
    );
}

#[test]
fn esp32c3_hand_header_at_0x0_is_detected() {
    let mut f = EmuFlash::in_memory(4 * MB);
    layout::write_raw(&mut f, 0, &header(0x10, 0x0005)).unwrap();
    let b = detect_bootloader(&mut f, "x").unwrap();
    assert_eq!((b.chip, b.offset, b.flash_size), (Chip::Esp32c3, 0, 2 * MB));
}

#[test]
fn real_esp32_bootloader_at_0x1000_is_detected() {
    let Some(v) = vectors() else { return };
    let boot = std::fs::read(v.join("bootloader_esp32.bin")).unwrap();
    let (_d, path, mut f) = temp_flash(4 * MB);
    layout::write_raw(&mut f, 0x1000, &boot).unwrap();
    drop(f);
    // Detect from the file, as `ota device info` would.
    let mut f = EmuFlash::open(&path).unwrap();
    let b = detect_bootloader(&mut f, "x").unwrap();
    // esptool image-info: "Detected image type: ESP32", "Flash size: 2MB".
    assert_eq!(
        (b.chip, b.offset, b.flash_size),
        (Chip::Esp32, 0x1000, 2 * MB)
    );
    assert_eq!(&b.header[..], &boot[..HEADER_SIZE]);
}

#[test]
fn real_esp32c3_bootloader_at_0x0_is_detected() {
    let Some(v) = vectors() else { return };
    let boot = std::fs::read(v.join("bootloader_esp32c3.bin")).unwrap();
    let (_d, _path, mut f) = temp_flash(4 * MB);
    layout::write_raw(&mut f, 0, &boot).unwrap();
    let b = detect_bootloader(&mut f, "x").unwrap();
    // esptool image-info: "Detected image type: ESP32-C3", "Flash size: 2MB".
    assert_eq!((b.chip, b.offset, b.flash_size), (Chip::Esp32c3, 0, 2 * MB));
}

#[test]
fn real_esp32c3_bootloader_at_0x1000_is_not_an_esp32() {
    let Some(v) = vectors() else { return };
    let boot = std::fs::read(v.join("bootloader_esp32c3.bin")).unwrap();
    let mut f = EmuFlash::in_memory(MB);
    layout::write_raw(&mut f, 0x1000, &boot).unwrap();
    let e = detect_bootloader(&mut f, "dump.bin").unwrap_err();
    assert!(
        e.to_string()
            .contains("0xe9 at 0x1000 but chip id 0x0005 (ESP32-C3)"),
        "{e}"
    );
}

#[test]
fn table_beyond_end_of_a_short_dump_is_an_error() {
    let mut f = EmuFlash::in_memory(0x8000);
    f.write(0x1000, &header(0x20, 0x0000)).unwrap();
    let e = Device::open(f).unwrap_err();
    assert_eq!(
        e.to_string(),
        "partition table at 0x8000..0x8c00 lies beyond the end of <in-memory flash> (32768 bytes)"
    );
}

#[test]
fn esp32_device_opens_with_table() {
    let (_d, path, mut f) = temp_flash(4 * MB);
    layout::write_raw(&mut f, 0x1000, &header(0x20, 0x0000)).unwrap();
    layout::write_raw(&mut f, 0x8000, &ota_table()).unwrap();
    let mut dev = Device::open(f).unwrap();
    assert_eq!(dev.chip(), Chip::Esp32);
    assert_eq!(dev.flash_size(), 4 * MB);
    assert_eq!(dev.file_size(), u64::from(4 * MB));
    assert_eq!(dev.bootloader_offset(), 0x1000);
    assert_eq!(dev.name(), path.display().to_string());
    assert_eq!(dev.table().len(), 5);
    assert_eq!(dev.table().ota(1).map(|p| p.offset), Some(0x110000));
    assert_eq!(dev.table().otadata().map(|p| p.size), Some(0x2000));
    // The flash stays usable through the device.
    dev.flash_mut().erase(0x10000, 0x11000).unwrap();
    let flash = dev.into_flash();
    assert_eq!(flash.stats().erase_count(0x10), 1);
}

#[test]
fn esp32c3_device_opens_with_table() {
    let mut f = EmuFlash::in_memory(4 * MB);
    layout::write_raw(&mut f, 0, &header(0x20, 0x0005)).unwrap();
    layout::write_raw(&mut f, 0x8000, &ota_table()).unwrap();
    let dev = Device::open(f).unwrap();
    assert_eq!(
        (dev.chip(), dev.bootloader_offset(), dev.flash_size()),
        (Chip::Esp32c3, 0, 4 * MB)
    );
    assert_eq!(dev.table().ota_count(), 2);
}

#[test]
fn dump_larger_than_header_keeps_header_size_and_reports_file_size() {
    let mut f = EmuFlash::in_memory(8 * MB);
    layout::write_raw(&mut f, 0, &header(0x20, 0x0009)).unwrap(); // says 4MB
    layout::write_raw(&mut f, 0x8000, &ota_table()).unwrap();
    let dev = Device::open(f).unwrap();
    assert_eq!(
        (dev.chip(), dev.flash_size(), dev.file_size()),
        (Chip::Esp32s3, 4 * MB, u64::from(8 * MB))
    );
}

#[test]
fn table_larger_than_header_flash_size_is_rejected_by_bootloader_rule() {
    // Header says 1MB; ota_1 ends at 2.0625MB: the bootloader rejects the table (`flash_partitions.c`).
    let mut f = EmuFlash::in_memory(4 * MB);
    layout::write_raw(&mut f, 0x1000, &header(0x00, 0x0000)).unwrap();
    layout::write_raw(&mut f, 0x8000, &ota_table()).unwrap();
    let e = Device::open(f).unwrap_err();
    assert!(
        matches!(e, EmuError::PartitionTable { offset: 0x8000, .. }),
        "{e}"
    );
}

#[test]
fn real_esp32_bootloader_and_singleapp_table_open() {
    let Some(v) = vectors() else { return };
    let boot = std::fs::read(v.join("bootloader_esp32.bin")).unwrap();
    let table = std::fs::read(v.join("partitions_singleapp.bin")).unwrap();
    let (_d, path, mut f) = temp_flash(2 * MB);
    layout::write_raw(&mut f, 0x1000, &boot).unwrap();
    layout::write_raw(&mut f, 0x8000, &table).unwrap();
    drop(f);
    let dev = Device::open(EmuFlash::open(&path).unwrap()).unwrap();
    assert_eq!((dev.chip(), dev.flash_size()), (Chip::Esp32, 2 * MB));
    // 96 bytes, no MD5 entry, no end marker: the erased flash after it terminates it.
    assert_eq!(dev.table().len(), 3);
    assert_eq!(
        dev.table().factory().map(|p| (p.offset, p.size)),
        Some((0x10000, 0x100000))
    );
}

/// A read-only flash whose reads fail with an error of its own (not an `EmuError`).
struct FailingReads;

#[derive(Debug)]
struct BusFault {
    #[allow(dead_code)] // shown through Debug
    serial: u32,
}

impl embedded_storage::nor_flash::NorFlashError for BusFault {
    fn kind(&self) -> embedded_storage::nor_flash::NorFlashErrorKind {
        embedded_storage::nor_flash::NorFlashErrorKind::Other
    }
}

impl embedded_storage::nor_flash::ErrorType for FailingReads {
    type Error = BusFault;
}

impl embedded_storage::nor_flash::ReadNorFlash for FailingReads {
    const READ_SIZE: usize = 4;
    fn read(&mut self, _offset: u32, _bytes: &mut [u8]) -> Result<(), BusFault> {
        Err(BusFault { serial: 0xC0FFEE })
    }
    fn capacity(&self) -> usize {
        4 * MB as usize
    }
}

#[test]
fn a_failing_drivers_own_error_reaches_the_device_error() {
    // An EmuFlash's own error comes back as it is, through ota-core's read layer.
    let mut f = EmuFlash::in_memory(MB);
    f.set_fault_plan(ota_emu::FaultPlan {
        power_cut_after_bytes: Some(0),
        ..Default::default()
    });
    assert!(f.write(0x3000, &[0; 4]).is_err(), "the power is cut");
    let e = detect_bootloader(&mut f, "x").unwrap_err();
    assert!(matches!(e, EmuError::PowerCut { .. }), "{e:?}");
    // Any other driver: its error's detail, with the access that failed.
    let e = detect_bootloader(&mut FailingReads, "x").unwrap_err();
    match &e {
        EmuError::Flash { offset, detail, .. } => {
            assert_eq!(*offset, 0x1000, "{e}");
            assert!(detail.contains("12648430"), "{e}"); // serial 0xC0FFEE
        }
        other => panic!("expected the driver's error, got {other:?}"),
    }
}
