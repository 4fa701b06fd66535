//! `ota-emu`: an ESP32-class device on a PC. A file-backed NOR flash with the chip's rules,
//! counters and fault injection ([`flash`]); the device the flash image describes ([`device`]);
//! and the SD card the ADF example reads updates from ([`sdcard`]).

pub mod device;
pub mod error;
pub mod flash;
pub mod sdcard;

pub use device::Device;
pub use error::EmuError;
pub use flash::{EmuFlash, FaultPlan, FlashStats};
pub use sdcard::SdCard;
