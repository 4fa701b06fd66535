//! `ota-emu`: an ESP32-class device on a PC. A file-backed NOR flash with the chip's rules,
//! counters and fault injection ([`flash`]); the device the flash image describes ([`device`]);
//! the SD card the ADF example reads updates from ([`sdcard`]); and what the chip keeps outside
//! its flash, the bootloader's rollback options and eFuses ([`settings`]); and an `idf.py build`
//! folder laid out as a device ([`build`]).

pub mod build;
pub mod cow;
pub mod device;
pub mod error;
pub mod flash;
pub mod sdcard;
pub mod settings;

pub use cow::CowFlash;
pub use device::Device;
pub use error::EmuError;
pub use flash::{EmuFlash, FaultPlan, FlashStats};
pub use sdcard::SdCard;
pub use settings::DeviceSettings;
