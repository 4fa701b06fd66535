//! What a device holds outside its flash: the 2nd-stage bootloader's rollback options (Kconfig,
//! compiled into the bootloader on a real chip) and the eFuse secure-version counter (in the
//! chip). Kept in a sidecar file `<flash>.device.toml` beside the flash image, so the flash file
//! stays byte-exact with a real chip's flash; a dump without a sidecar gets ESP-IDF's defaults
//! (no rollback, eFuse counter 0).

use std::path::{Path, PathBuf};

use ota_core::boot::{self, BootConfig};
use ota_core::secure_boot::{AppSignatures, Scheme, SecureBootKeys};
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

/// A public-key digest as eFuse holds it (`SECURE_BOOT_DIGESTn`, espsecure
/// `digest-sbv2-public-key`): 64 hex digits in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "key digest '{t}' is not 64 hex digits (a SHA-256, as espsecure digest-sbv2-public-key writes)"
            ));
        }
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(KeyDigest(d))
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl<'de> Deserialize<'de> for KeyDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyDigest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The signature scheme an app was configured with (`CONFIG_SECURE_BOOT_V2_RSA_ENABLED` /
/// `CONFIG_SECURE_BOOT_V2_ECDSA_ENABLED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemeSetting {
    Rsa,
    Ecdsa,
}

impl SchemeSetting {
    pub fn scheme(self) -> Scheme {
        match self {
            SchemeSetting::Rsa => Scheme::Rsa3072,
            SchemeSetting::Ecdsa => Scheme::Ecdsa,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SchemeSetting::Rsa => "rsa",
            SchemeSetting::Ecdsa => "ecdsa",
        }
    }
}

/// Secure Boot v2 (eFuse `SECURE_BOOT_EN`, the key digests in `BLOCK_KEYn` with purpose
/// `SECURE_BOOT_DIGESTn`, `SECURE_BOOT_KEY_REVOKEn`) and the app's
/// `CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT` (esp-idf
/// `components/bootloader_support/src/secure_boot_v2/secure_boot_signatures_app.c`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureBootSettings {
    /// eFuse `SECURE_BOOT_EN` (`CONFIG_SECURE_BOOT_V2_ENABLED`): the bootloader checks every
    /// app it boots and the app checks every update against the digests below.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub digest0: Option<KeyDigest>,
    #[serde(default)]
    pub digest1: Option<KeyDigest>,
    #[serde(default)]
    pub digest2: Option<KeyDigest>,
    /// `SECURE_BOOT_KEY_REVOKE0..2`.
    #[serde(default)]
    pub revoke0: bool,
    #[serde(default)]
    pub revoke1: bool,
    #[serde(default)]
    pub revoke2: bool,
    /// `CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT`: updates must be signed by the running
    /// app's key; the bootloader checks nothing.
    #[serde(default)]
    pub signed_apps_no_secure_boot: bool,
    /// The app's configured scheme; absent: either.
    #[serde(default)]
    pub scheme: Option<SchemeSetting>,
}

impl SecureBootSettings {
    pub fn digests(&self) -> [Option<KeyDigest>; 3] {
        [self.digest0, self.digest1, self.digest2]
    }

    pub fn revoked(&self) -> [bool; 3] {
        [self.revoke0, self.revoke1, self.revoke2]
    }

    /// The eFuse side, for the bootloader (None when secure boot is off).
    pub fn keys(&self) -> Option<SecureBootKeys> {
        if !self.enabled {
            return None;
        }
        let mut revoked = 0u8;
        for (i, r) in self.revoked().iter().enumerate() {
            if *r {
                revoked |= 1 << i;
            }
        }
        Some(SecureBootKeys {
            digests: self.digests().map(|d| d.map(|k| k.0)),
            revoked,
            scheme: self.scheme.map(SchemeSetting::scheme),
        })
    }

    /// What the app demands of an update.
    pub fn app_signatures(&self) -> AppSignatures {
        match self.keys() {
            Some(k) => AppSignatures::SecureBoot(k),
            None if self.signed_apps_no_secure_boot => AppSignatures::SignedApps {
                scheme: self.scheme.map(SchemeSetting::scheme),
            },
            None => AppSignatures::NotChecked,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.enabled && self.signed_apps_no_secure_boot {
            return Err("secure_boot: enabled = true and signed_apps_no_secure_boot = true                         exclude each other (CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT                         depends on !CONFIG_SECURE_BOOT)"
                .to_string());
        }
        if self.enabled && self.digests().iter().all(Option::is_none) {
            return Err(
                "secure_boot: enabled = true needs at least one key digest (digest0..digest2)"
                    .to_string(),
            );
        }
        Ok(())
    }
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
    #[serde(default)]
    pub secure_boot: SecureBootSettings,
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
        self.secure_boot.check()?;
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
        let sb = &self.secure_boot;
        if *sb != SecureBootSettings::default() {
            t += "\n[secure_boot]\n";
            t += &line(
                format!("enabled = {}", sb.enabled),
                "eFuse SECURE_BOOT_EN (CONFIG_SECURE_BOOT_V2_ENABLED)",
            );
            for (i, (d, r)) in sb.digests().iter().zip(sb.revoked()).enumerate() {
                if let Some(d) = d {
                    t += &format!(
                        "digest{i} = \"{}\"  # SECURE_BOOT_DIGEST{i} eFuse key block\n",
                        d.hex()
                    );
                }
                if r {
                    t += &line(
                        format!("revoke{i} = true"),
                        &format!("SECURE_BOOT_KEY_REVOKE{i}"),
                    );
                }
            }
            if sb.signed_apps_no_secure_boot {
                t += &line(
                    "signed_apps_no_secure_boot = true".to_string(),
                    "CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT",
                );
            }
            if let Some(s) = sb.scheme {
                t += &line(
                    format!("scheme = \"{}\"", s.name()),
                    "CONFIG_SECURE_BOOT_V2_RSA_ENABLED / _ECDSA_ENABLED",
                );
            }
        }
        t
    }

    /// The signatures the app demands of an update (Secure Boot v2 or signed apps).
    pub fn app_signatures(&self) -> AppSignatures {
        self.secure_boot.app_signatures()
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
            secure_boot: self.secure_boot.keys(),
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
            secure_boot: SecureBootSettings::default(),
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
                secure_boot: None,
            }
        );
    }

    #[test]
    fn secure_boot_settings_round_trip_and_refuse_contradictions() {
        let dir = tempfile::tempdir().unwrap();
        let flash = dir.path().join("f.bin");
        let mut s = DeviceSettings::default();
        s.secure_boot.enabled = true;
        s.secure_boot.digest0 = Some(KeyDigest([0xAB; 32]));
        s.secure_boot.digest2 = Some(KeyDigest([0x01; 32]));
        s.secure_boot.revoke2 = true;
        s.secure_boot.scheme = Some(SchemeSetting::Ecdsa);
        s.save_for(&flash).unwrap();
        let back = DeviceSettings::load_for(&flash).unwrap().unwrap();
        assert_eq!(back.secure_boot, s.secure_boot);
        let k = back.boot_config().secure_boot.unwrap();
        assert_eq!(k.digests, [Some([0xAB; 32]), None, Some([0x01; 32])]);
        assert_eq!(k.revoked, 0b100);
        assert_eq!(k.scheme, Some(Scheme::Ecdsa));
        assert!(matches!(
            back.app_signatures(),
            AppSignatures::SecureBoot(_)
        ));
        let p = DeviceSettings::path_for(&flash);
        std::fs::write(&p, "[secure_boot]\nenabled = true\n").unwrap();
        let e = DeviceSettings::load_for(&flash).unwrap_err().to_string();
        assert!(e.contains("at least one key digest"), "{e}");
        std::fs::write(
            &p,
            "[secure_boot]\nsigned_apps_no_secure_boot = true\nenabled = true\ndigest0 = \"00\"\n",
        )
        .unwrap();
        let e = DeviceSettings::load_for(&flash).unwrap_err().to_string();
        assert!(e.contains("64 hex digits") && e.contains("line 4"), "{e}");
        std::fs::write(&p, format!("[secure_boot]\nsigned_apps_no_secure_boot = true\nenabled = true\ndigest0 = \"{}\"\n", "0".repeat(64))).unwrap();
        let e = DeviceSettings::load_for(&flash).unwrap_err().to_string();
        assert!(e.contains("exclude each other"), "{e}");
        std::fs::write(&p, "[secure_boot]\nsigned_apps_no_secure_boot = true\n").unwrap();
        let s = DeviceSettings::load_for(&flash).unwrap().unwrap();
        assert_eq!(
            s.app_signatures(),
            AppSignatures::SignedApps { scheme: None }
        );
        assert_eq!(s.boot_config().secure_boot, None);
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
