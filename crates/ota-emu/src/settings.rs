//! What a device holds outside its flash: the 2nd-stage bootloader's rollback options (Kconfig,
//! compiled into the bootloader on a real chip) and the eFuse secure-version counter (in the
//! chip). Kept in a sidecar file `<flash>.device.toml` beside the flash image, so the flash file
//! stays byte-exact with a real chip's flash; a dump without a sidecar gets ESP-IDF's defaults
//! (no rollback, eFuse counter 0).

use std::path::{Path, PathBuf};

use ota_core::boot::{self, BootConfig};
use ota_core::Chip;
use serde::Deserialize;

use crate::error::EmuError;

/// Appended to the flash file's name to name its settings file.
pub const SETTINGS_SUFFIX: &str = ".device.toml";

/// The bootloader's build options that change app selection (esp-idf `bootloader_utility.c`, `esp_efuse_fields.c`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootloaderSettings {
    /// `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE`.
    #[serde(default)]
    pub rollback: bool,
    /// `CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK` (needs `rollback`).
    #[serde(default)]
    pub anti_rollback: bool,
    /// `CONFIG_MMU_PAGE_SIZE` the bootloader was built with, in bytes (`0x4000` = 16 KB):
    /// flash-mapped app segments must be aligned to it. Absent: the app descriptor's
    /// `mmu_page_size` when set, else Kconfig's default for the chip and the flash size in the
    /// bootloader header (esp-idf `components/soc/<chip>/Kconfig.mmu`).
    #[serde(default)]
    pub mmu_page_size: Option<u32>,
}

/// The emulated eFuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfuseSettings {
    /// The `SECURE_VERSION` field as a counter: the number of bits burnt (esp-idf `bootloader_utility.c`, `esp_efuse_fields.c`).
    /// It only ever goes up, and at most to the chip's field width
    /// ([`ota_core::boot::secure_version_field_bits`]).
    #[serde(default)]
    pub secure_version: u32,
}

/// The flash chip as its driver sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashSettings {
    /// The driver's read and write unit in bytes (`READ_SIZE` = `WRITE_SIZE`), a power of two
    /// up to 256. Absent: 4, esp-storage's (`esp-storage/src/nor_flash.rs`).
    #[serde(default)]
    pub write_size: Option<u32>,
}

/// What the app's OTA service keeps across runs (on a chip: in NVS; here beside the flash, so
/// the flash file stays byte-exact).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// The serial of the newest signed catalogue the device accepted (`ota_catalogue::signed`):
    /// an older one is refused as a replay. Only ever goes up.
    #[serde(default)]
    pub catalogue_serial: Option<u64>,
}

/// Everything stored beside a flash image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSettings {
    #[serde(default)]
    pub bootloader: BootloaderSettings,
    #[serde(default)]
    pub efuse: EfuseSettings,
    #[serde(default)]
    pub flash: FlashSettings,
    #[serde(default)]
    pub service: ServiceSettings,
}

fn settings_error(path: &Path, detail: impl Into<String>) -> EmuError {
    EmuError::Settings {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

impl DeviceSettings {
    /// `<flash file name>.device.toml`, beside the flash file.
    pub fn path_for(flash: &Path) -> PathBuf {
        let mut name = flash.file_name().unwrap_or_default().to_os_string();
        name.push(SETTINGS_SUFFIX);
        flash.with_file_name(name)
    }

    /// The settings of the device in `flash`: `None` when it has no settings file.
    pub fn load_for(flash: &Path) -> Result<Option<DeviceSettings>, EmuError> {
        let path = Self::path_for(flash);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(EmuError::Io {
                    op: "read device settings",
                    path,
                    source,
                })
            }
        };
        let s: DeviceSettings = toml::from_str(&text).map_err(|e| {
            let place = e
                .span()
                .map(|sp| {
                    let line = text.get(..sp.start).unwrap_or("").matches('\n').count() + 1;
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            settings_error(&path, format!("{place}{}", e.message()))
        })?;
        s.check().map_err(|d| settings_error(&path, d))?;
        Ok(Some(s))
    }

    /// The flash driver's read and write unit ([`FlashSettings::write_size`], default 4).
    pub fn write_size(&self) -> u32 {
        self.flash
            .write_size
            .unwrap_or(crate::flash::DEFAULT_WRITE_SIZE)
    }

    /// The write unit of the device in `flash`: its settings', or 4 without settings (a bare
    /// flash dump).
    pub fn write_size_for(flash: &Path) -> Result<u32, EmuError> {
        Ok(Self::load_for(flash)?
            .map(|s| s.write_size())
            .unwrap_or(crate::flash::DEFAULT_WRITE_SIZE))
    }

    /// The rules Kconfig enforces, and a write unit the emulator has.
    pub fn check(&self) -> Result<(), String> {
        if !crate::flash::WRITE_SIZES.contains(&self.write_size()) {
            return Err(format!(
                "flash write_size {} is not a power of two from 1 to 256",
                self.write_size()
            ));
        }
        if self.bootloader.anti_rollback && !self.bootloader.rollback {
            return Err("anti_rollback = true needs rollback = true \
                 (CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK depends on CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE)"
                .to_string());
        }
        Ok(())
    }

    /// The eFuse counter must fit the chip's field (esp-idf `bootloader_utility.c`,
    /// `esp_efuse_fields.c`), and the MMU page size must be one the chip supports.
    pub fn check_for_chip(&self, chip: Chip) -> Result<(), String> {
        if let Some(p) = self.bootloader.mmu_page_size {
            if !chip.mmu_page_size_supported(p) {
                let sizes: Vec<String> = if chip.mmu_page_sizes_log2().is_empty() {
                    vec!["0x10000".to_string()]
                } else {
                    chip.mmu_page_sizes_log2()
                        .iter()
                        .map(|l| format!("0x{:x}", 1u32 << l))
                        .collect()
                };
                return Err(format!(
                    "bootloader mmu_page_size 0x{:x} is not an MMU page size of {} ({})",
                    p,
                    chip.display_name(),
                    sizes.join(", ")
                ));
            }
        }
        let bits = boot::secure_version_field_bits(chip);
        if self.efuse.secure_version > bits {
            return Err(format!(
                "efuse secure_version {} does not fit the {}-bit SECURE_VERSION field of {}",
                self.efuse.secure_version,
                bits,
                chip.display_name()
            ));
        }
        Ok(())
    }

    /// The file's text (commented, so a person can edit it).
    pub fn to_toml(&self) -> String {
        let line = |kv: String, comment: &str| format!("{kv:<24}# {comment}\n");
        let mut t = String::from(
            "# ota-service device settings: what the chip holds outside its flash (see README, \"Rollback\").\n[bootloader]\n",
        );
        t += &line(
            format!("rollback = {}", self.bootloader.rollback),
            "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE",
        );
        t += &line(
            format!("anti_rollback = {}", self.bootloader.anti_rollback),
            "CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK (needs rollback)",
        );
        if let Some(p) = self.bootloader.mmu_page_size {
            t += &line(
                format!("mmu_page_size = 0x{p:x}"),
                "CONFIG_MMU_PAGE_SIZE (bytes) the bootloader was built with",
            );
        }
        t += "\n[efuse]\n";
        t += &line(
            format!("secure_version = {}", self.efuse.secure_version),
            "SECURE_VERSION eFuse: number of bits burnt, only ever goes up",
        );
        t += "\n[flash]\n";
        t += &line(
            format!("write_size = {}", self.write_size()),
            "flash driver READ_SIZE/WRITE_SIZE in bytes (esp-storage: 4)",
        );
        if let Some(n) = self.service.catalogue_serial {
            t += "\n[service]\n";
            t += &format!(
                "catalogue_serial = {n} # newest signed catalogue accepted: older ones are replays\n"
            );
        }
        t
    }

    /// Write the settings file of `flash` (to a temporary file, then renamed over the old one,
    /// so it is never seen half written).
    pub fn save_for(&self, flash: &Path) -> Result<(), EmuError> {
        self.check().map_err(|d| settings_error(flash, d))?;
        let path = Self::path_for(flash);
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        std::fs::write(&tmp, self.to_toml()).map_err(|source| EmuError::Io {
            op: "write device settings",
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| EmuError::Io {
            op: "replace device settings",
            path,
            source,
        })
    }

    /// What the bootloader emulation needs (without the device's flash size: see
    /// [`boot_config_for`](Self::boot_config_for)).
    pub fn boot_config(&self) -> BootConfig {
        BootConfig {
            rollback: self.bootloader.rollback,
            anti_rollback: self.bootloader.anti_rollback,
            efuse_secure_version: self.efuse.secure_version,
            mmu_page_size: self.bootloader.mmu_page_size,
            flash_size: None,
        }
    }

    /// [`boot_config`](Self::boot_config) for a device whose bootloader header says
    /// `flash_size`: without an `mmu_page_size` setting (and without one in the app
    /// descriptor) the page size is Kconfig's default for the chip and that flash size.
    pub fn boot_config_for(&self, flash_size: u32) -> BootConfig {
        BootConfig {
            flash_size: Some(flash_size),
            ..self.boot_config()
        }
    }

    /// `Some(eFuse counter)` when anti-rollback is on (what the app-side checks compare with).
    pub fn anti_rollback(&self) -> Option<u32> {
        self.bootloader
            .anti_rollback
            .then_some(self.efuse.secure_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_sidecar_file() {
        let dir = tempfile::tempdir().unwrap();
        let flash = dir.path().join("flash.bin");
        assert_eq!(
            DeviceSettings::path_for(&flash),
            dir.path().join("flash.bin.device.toml")
        );
        assert_eq!(DeviceSettings::load_for(&flash).unwrap(), None);
        let s = DeviceSettings {
            bootloader: BootloaderSettings {
                rollback: true,
                anti_rollback: true,
                mmu_page_size: Some(0x4000),
            },
            efuse: EfuseSettings { secure_version: 3 },
            flash: FlashSettings {
                write_size: Some(16),
            },
            service: ServiceSettings {
                catalogue_serial: Some(1_764_000_000_000),
            },
        };
        s.save_for(&flash).unwrap();
        assert_eq!(DeviceSettings::load_for(&flash).unwrap(), Some(s));
        assert_eq!(
            s.boot_config(),
            BootConfig {
                rollback: true,
                anti_rollback: true,
                efuse_secure_version: 3,
                mmu_page_size: Some(0x4000),
                flash_size: None,
            }
        );
    }

    #[test]
    fn flash_write_size_defaults_to_4_and_must_be_a_power_of_two_up_to_256() {
        let dir = tempfile::tempdir().unwrap();
        let flash = dir.path().join("f.bin");
        // No settings (a bare dump): esp-storage's 4.
        assert_eq!(DeviceSettings::write_size_for(&flash).unwrap(), 4);
        let p = DeviceSettings::path_for(&flash);
        std::fs::write(&p, "[bootloader]\nrollback = false\n").unwrap();
        assert_eq!(DeviceSettings::write_size_for(&flash).unwrap(), 4);
        std::fs::write(&p, "[flash]\nwrite_size = 1\n").unwrap();
        assert_eq!(DeviceSettings::write_size_for(&flash).unwrap(), 1);
        for bad in [0u32, 3, 12, 512] {
            std::fs::write(&p, format!("[flash]\nwrite_size = {bad}\n")).unwrap();
            let e = DeviceSettings::load_for(&flash).unwrap_err().to_string();
            assert!(e.contains("write_size"), "{e}");
        }
    }

    #[test]
    fn bad_settings_files_are_refused_with_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let flash = dir.path().join("f.bin");
        let p = DeviceSettings::path_for(&flash);
        std::fs::write(&p, "[bootloader]\nrollback = false\nanti_rollback = true\n").unwrap();
        let e = DeviceSettings::load_for(&flash).unwrap_err().to_string();
        assert!(
            e.contains("f.bin.device.toml") && e.contains("needs rollback"),
            "{e}"
        );
        std::fs::write(&p, "[efuse]\nsecure_version = \"x\"\n").unwrap();
        let e = DeviceSettings::load_for(&flash).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&p, "[bootloader]\nrolback = true\n").unwrap();
        assert!(DeviceSettings::load_for(&flash).is_err());
        let s = DeviceSettings {
            efuse: EfuseSettings { secure_version: 5 },
            ..Default::default()
        };
        assert!(s.check_for_chip(Chip::Esp32c2).is_err());
        assert!(s.check_for_chip(Chip::Esp32).is_ok());
        let mut s = DeviceSettings::default();
        s.bootloader.mmu_page_size = Some(0x4000);
        assert!(s.check_for_chip(Chip::Esp32c6).is_ok());
        let e = s.check_for_chip(Chip::Esp32c3).unwrap_err();
        assert!(e.contains("0x4000") && e.contains("ESP32-C3"), "{e}");
        std::fs::write(&p, "[bootloader]\nmmu_page_size = 0x8000\n").unwrap();
        let s = DeviceSettings::load_for(&flash).unwrap().unwrap();
        assert_eq!(s.bootloader.mmu_page_size, Some(0x8000));
    }
}
