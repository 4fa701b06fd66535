//! Glue between the crates: the emulator's SD card as the service's `file://` source, opening
//! a device from a flash file, sizes.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ota_emu::device::Device;
use ota_emu::flash::EmuFlash;
use ota_emu::sdcard::SdCard;
use ota_service::source::{SdCardFs, SourceError};

/// The emulator's SD card seen by the service.
pub struct SdAdapter(pub SdCard);

impl SdCardFs for SdAdapter {
    fn open(&self, uri: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        self.0.open_uri(uri).map_err(|e| match e {
            ota_emu::EmuError::SdFileNotFound { uri, path, card } => SourceError::SdFileNotFound {
                uri,
                path: card.join(path.trim_start_matches('/')),
            },
            other => SourceError::Io {
                uri: uri.to_string(),
                phase: ota_service::source::Phase::Open,
                source: std::io::Error::other(other.to_string()).into(),
            },
        })
    }
}

/// Refuse an ELF file where an image is expected (`what`: "an app image", "a tone bin", ...),
/// before anything else reads it: the usual slip is `build/APP.elf` for `build/APP.bin`.
pub fn refuse_elf(bytes: &[u8], path: &Path, what: &str) -> Result<()> {
    if ota_core::image::is_elf(bytes) {
        bail!(
            "{} is an ELF file, not {}: convert it with `ota image from-elf {} --chip CHIP` \
             (the bytes `esptool --chip CHIP elf2image` writes), or use the .bin that \
             `idf.py build` writes next to the .elf",
            path.display(),
            what,
            path.display()
        );
    }
    Ok(())
}

/// Open the device held by a flash image file: a regular file of at most 128 MB
/// (`input::FLASH_LIMIT`), checked before the emulator reads it.
pub fn open_device(path: &Path) -> Result<Device<EmuFlash>> {
    open_device_at::<4>(path)
}

/// [`open_device`] with a flash of read and write unit `W` (the device settings'
/// `flash.write_size`).
pub fn open_device_at<const W: usize>(path: &Path) -> Result<Device<ota_emu::flash::EmuFlashN<W>>> {
    crate::input::check_input(path, crate::input::FLASH_LIMIT, "flash image")?;
    let flash = ota_emu::flash::EmuFlashN::<W>::open(path)
        .with_context(|| format!("opening flash image {}", path.display()))?;
    Device::open(flash).with_context(|| format!("reading device from {}", path.display()))
}

/// `--flash-mode` by esptool's name (`qio`, `qout`, `dio`, `dout`): the image header's code.
pub fn parse_flash_mode(name: &str) -> Result<u8> {
    ota_core::image::flash_mode_from_name(name)
        .ok_or_else(|| anyhow::anyhow!("unknown flash mode '{}' (qio, qout, dio, dout)", name))
}

/// `--flash-size` by esptool's name (`1MB` ... `128MB`): the image header's code.
pub fn parse_flash_size(name: &str) -> Result<u8> {
    ota_core::image::flash_size_code_from_name(name)
        .ok_or_else(|| anyhow::anyhow!("unknown flash size '{}' (1MB, 2MB, 4MB, ... 128MB)", name))
}

/// `--flash-freq` by the name esptool gives it for `chip` (`80m`, `40m`, ...): the header's code.
pub fn parse_flash_freq(chip: ota_core::Chip, name: &str) -> Result<u8> {
    ota_core::image::flash_freq_code_from_name(chip, name).ok_or_else(|| {
        let names: Vec<&str> = chip.flash_freqs().iter().map(|(n, _)| *n).collect();
        anyhow::anyhow!(
            "flash frequency '{}' is not one {} knows ({})",
            name,
            chip.display_name(),
            names.join(", ")
        )
    })
}

/// Parse a size: `4MB`, `4M`, `512K`, `0x400000`, `4194304`.
pub fn parse_size(s: &str) -> Result<u32> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = lower.strip_suffix("mb").or_else(|| lower.strip_suffix('m'))
    {
        (n, 1024 * 1024)
    } else if let Some(n) = lower.strip_suffix("kb").or_else(|| lower.strip_suffix('k')) {
        (n, 1024)
    } else {
        (lower.as_str(), 1)
    };
    let v = if let Some(h) = num.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        num.parse::<u64>().ok()
    };
    match v.map(|v| v * mult) {
        Some(v) if v <= u32::MAX as u64 => Ok(v as u32),
        _ => bail!("'{}' is not a size (examples: 4MB, 512K, 0x400000)", s),
    }
}

/// Header code of a flash size (esp-idf `esp_app_format.h`: byte 3 high nibble, 1MB..128MB).
pub fn flash_size_code(size: u32) -> Result<u8> {
    if let Some(code) = ota_core::image::flash_size_code_for_bytes(size) {
        return Ok(code);
    }
    bail!(
        "flash size must be 1MB, 2MB, 4MB, 8MB, 16MB, 32MB, 64MB or 128MB, not {} bytes",
        size
    )
}

/// A flash size as every JSON output and esptool write it: `4MB` (`512KB`, or bytes, for sizes
/// that are not whole MiB).
pub fn flash_size_name(size: u32) -> String {
    let header_name =
        ota_core::image::flash_size_code_for_bytes(size).and_then(ota_core::image::flash_size_name);
    if let Some(name) = header_name {
        name.to_string()
    } else if size != 0 && size.is_multiple_of(1 << 20) {
        format!("{}MB", size >> 20)
    } else if size != 0 && size.is_multiple_of(1024) {
        format!("{}KB", size >> 10)
    } else {
        format!("{}B", size)
    }
}
