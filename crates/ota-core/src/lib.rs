//! `ota-core`: the `no_std`, allocation-free heart of ota-service.
//!
//! It knows the ESP-IDF / ESP-ADF on-flash formats byte for byte (partition table, otadata,
//! app image and app descriptor, ADF tone bins, detools / esp_delta_ota delta patches), and runs
//! the streaming update engines and the 2nd-stage bootloader's selection rules. It does no I/O
//! except through the `embedded-storage` `NorFlash` traits, so the same code drives an emulated
//! flash on a PC and esp-storage on a chip. Comments cite the upstream files each rule comes
//! from (paths in espressif/esp-idf, espressif/esp-adf `release/v2.x`, espressif/esptool,
//! eerimoq/detools and espressif/idf-extra-components).
//!
//! # On the chip: the front door
//!
//! An app updates itself with one type, [`OtaUpdater`]: it reads the partition table from
//! flash, finds otadata and the running app, and runs `begin` → `write`… → `finish`, with
//! ESP-IDF's rollback and anti-rollback rules applied inside; after the restart the new app
//! confirms itself with `mark_valid`. Below, the whole life of an update on a RAM flash with
//! the granularity of esp-storage, the ESP32 flash driver ([`mem_flash::MemFlash`]); on a chip
//! the same calls take esp-storage's `FlashStorage`, and the two `boot` calls are the real
//! bootloader at each reset.
//!
//! ```
//! use ota_core::boot::{boot, BootConfig};
//! use ota_core::image::{build_image, ImageSpec};
//! use ota_core::mem_flash::{MemFlash, MemFlashError};
//! use ota_core::otadata::OtaState;
//! use ota_core::partition::{CsvOptions, PartitionTable, TABLE_MAX_LEN, TABLE_OFFSET};
//! use ota_core::updater::{AppKind, OtaUpdater, Slot, UpdaterConfig, UpdaterError};
//! use ota_core::version::VersionPolicy;
//! use ota_core::Chip;
//!
//! # fn main() -> Result<(), UpdaterError<MemFlashError>> {
//! // A 4 MB ESP32-C3 flash as esptool leaves it: partition table, v1.0.0 in ota_0.
//! let chip = Chip::Esp32c3;
//! let csv = "otadata, data, ota, 0xd000, 0x2000\n\
//!            ota_0, app, ota_0, 0x10000, 1M\n\
//!            ota_1, app, ota_1, 0x110000, 1M\n";
//! let table = PartitionTable::from_csv(csv, &CsvOptions::default()).unwrap();
//! let app = |version| {
//!     let mut spec = ImageSpec::new(chip, "demo", version);
//!     spec.total_size = Some(200_000);
//!     let mut bin = Vec::new();
//!     build_image(&spec, &mut |b| bin.extend_from_slice(b)).unwrap();
//!     bin
//! };
//! let v1 = app("v1.0.0");
//! let mut mem = vec![0xFF; 4 << 20];
//! let mut bin = [0xFF; TABLE_MAX_LEN];
//! table.to_binary(true, &mut bin).unwrap();
//! mem[TABLE_OFFSET as usize..][..TABLE_MAX_LEN].copy_from_slice(&bin);
//! mem[0x10000..][..v1.len()].copy_from_slice(&v1);
//! // <READ, WRITE> granularity in bytes: esp-storage reads and writes 4-byte words.
//! let mut flash = MemFlash::<4, 4>::new(&mut mem);
//! // Power on: the bootloader (built with rollback) starts ota_0.
//! let bootloader = BootConfig { rollback: true, ..BootConfig::default() };
//! boot(&mut flash, &table, chip, &bootloader, &mut |_| {})?;
//!
//! // The app: install v2.0.0, streamed in pieces of any size.
//! let cfg = UpdaterConfig::new(chip).with_rollback(true);
//! let mut buf = [0u8; TABLE_MAX_LEN];
//! let v2 = app("v2.0.0");
//! let mut ota = OtaUpdater::new(&mut flash, cfg, &mut buf)?;
//! assert_eq!(ota.running()?.kind, AppKind::Ota(Slot::new(0).unwrap()));
//! let slot = ota.begin(Some(v2.len() as u32), VersionPolicy::Semver)?;
//! assert_eq!(slot, Slot::new(1).unwrap());
//! for chunk in v2.chunks(1000) {
//!     ota.write(chunk)?; // from the network, a file, another partition...
//! }
//! ota.finish()?; // verified in flash; otadata now selects ota_1
//! drop(ota);
//!
//! // Restart: the bootloader starts the new app, which has one boot to confirm itself.
//! let booted = boot(&mut flash, &table, chip, &bootloader, &mut |_| {})?;
//! assert_eq!(booted.summary.app_desc.unwrap().version_str(), "v2.0.0");
//! let mut ota = OtaUpdater::new(&mut flash, cfg, &mut buf)?;
//! let me = ota.running()?;
//! assert_eq!(me.kind, AppKind::Ota(slot));
//! assert_eq!(me.state, Some(OtaState::PendingVerify));
//! ota.mark_valid()?; // all is well: no rollback at the next reset
//! assert_eq!(ota.running()?.state, Some(OtaState::Valid));
//! # Ok(())
//! # }
//! ```
#![no_std]
#![forbid(unsafe_code)]

pub mod boot;
mod bytes;
pub mod chip;
pub mod delta;
pub mod elf2image;
pub mod error;
pub mod flash;
pub mod guard;
pub mod image;
pub mod layout;
pub mod mem_flash;
pub mod otadata;
pub mod partition;
pub mod resume;
pub mod secure_boot;
pub mod staging;
pub mod tone;
pub mod update;
pub mod updater;
pub mod version;

#[cfg(test)]
mod granularity_tests;
#[cfg(test)]
mod testutil;

pub use chip::Chip;
pub use error::Error;
pub use updater::{OtaUpdater, Slot, UpdaterConfig, UpdaterError};
