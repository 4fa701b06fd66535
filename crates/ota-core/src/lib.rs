//! `ota-core`: the `no_std`, allocation-free heart of ota-service.
//!
//! It knows the ESP-IDF / ESP-ADF on-flash formats byte for byte (partition table, otadata,
//! app image and app descriptor, ADF tone bins), and runs the streaming update engines and the
//! 2nd-stage bootloader's selection rules. It does no I/O except through the
//! `embedded-storage` `NorFlash` traits, so the same code drives an emulated flash on a PC and
//! esp-storage on a chip. Comments cite the upstream files each rule comes from (paths in
//! espressif/esp-idf, espressif/esp-adf `release/v2.x` and espressif/esptool).
#![no_std]
#![forbid(unsafe_code)]

pub mod boot;
pub mod chip;
pub mod error;
pub mod flash;
pub mod guard;
pub mod image;
pub mod layout;
pub mod otadata;
pub mod partition;
pub mod resume;
pub mod staging;
pub mod tone;
pub mod update;
pub mod version;

#[cfg(test)]
mod granularity_tests;
#[cfg(test)]
mod testutil;

pub use chip::Chip;
pub use error::Error;
