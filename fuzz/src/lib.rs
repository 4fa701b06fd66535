//! Shared by the fuzz targets: a small emulated ESP32 (in-memory `EmuFlash`: esp-storage's
//! 4-byte read/write unit, refusing unaligned access as the chip's driver does; a table with two
//! 256 KiB OTA slots, otadata and a tone partition, `v1.0.0` running from ota_0) and a
//! deterministic chunker so a target can feed its input in fuzzer-chosen pieces.

use std::sync::OnceLock;

use ota_core::boot::{self, BootConfig};
use ota_core::image::{build_image, ImageSpec};
use ota_core::partition::{Label, Partition, PartitionTable};
use ota_core::Chip;
use ota_emu::EmuFlash;

pub const OTADATA: u32 = 0xD000;
pub const OTA_0: u32 = 0x10000;
pub const OTA_1: u32 = 0x50000;
pub const SLOT_SIZE: u32 = 0x40000;
pub const TONE: u32 = 0x90000;
pub const TONE_SIZE: u32 = 0x20000;
pub const FLASH_SIZE: u32 = 0xB0000;

fn part(label: &str, ptype: u8, subtype: u8, offset: u32, size: u32) -> Partition {
    Partition {
        ptype,
        subtype,
        offset,
        size,
        label: Label::new(label),
        flags: 0,
    }
}

/// nvs, otadata, ota_0, ota_1 (256 KiB each), flash_tone (128 KiB).
pub fn table() -> PartitionTable {
    let mut t = PartitionTable::new();
    for p in [
        part("nvs", 1, 0x02, 0x9000, 0x4000),
        part("otadata", 1, 0x00, OTADATA, 0x2000),
        part("ota_0", 0, 0x10, OTA_0, SLOT_SIZE),
        part("ota_1", 0, 0x11, OTA_1, SLOT_SIZE),
        part("flash_tone", 1, 0xFF, TONE, TONE_SIZE),
    ] {
        t.push(p).expect("table has room");
    }
    t
}

/// A valid ESP32 app image of about `size` bytes.
pub fn app(version: &str, size: u32) -> Vec<u8> {
    let mut spec = ImageSpec::new(Chip::Esp32, "app", version);
    spec.total_size = Some(size);
    let mut out = Vec::new();
    build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).expect("build image");
    out
}

/// The device's flash contents: `v1.0.0` in ota_0, booted once (otadata seq 1).
pub fn base_image() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut mem = vec![0xFFu8; FLASH_SIZE as usize];
        let v1 = app("v1.0.0", 20_000);
        mem[OTA_0 as usize..OTA_0 as usize + v1.len()].copy_from_slice(&v1);
        let mut f = EmuFlash::from_image(mem).expect("flash");
        boot::boot(
            &mut f,
            &table(),
            Chip::Esp32,
            &BootConfig::default(),
            &mut |_| {},
        )
        .expect("base device boots");
        f.contents().to_vec()
    })
}

/// A fresh copy of the base device (4-byte flash unit).
pub fn device() -> EmuFlash {
    device_at::<4>()
}

/// A fresh copy of the base device on a flash whose read and write unit is `W`.
pub fn device_at<const W: usize>() -> ota_emu::flash::EmuFlashN<W> {
    ota_emu::flash::EmuFlashN::<W>::from_image(base_image().to_vec()).expect("flash")
}

/// Splits a byte string into pieces whose sizes come from `seed` (xorshift), 1..=max bytes.
pub struct Chunks<'a> {
    rest: &'a [u8],
    state: u32,
    max: u32,
}

impl<'a> Chunks<'a> {
    pub fn new(data: &'a [u8], seed: u8, max: u32) -> Self {
        Chunks {
            rest: data,
            state: u32::from(seed).wrapping_mul(2_654_435_761) | 1,
            max: max.max(1),
        }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let n = (self.state % self.max) as usize + 1;
        let (a, b) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = b;
        Some(a)
    }
}
