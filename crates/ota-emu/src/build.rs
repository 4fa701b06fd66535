//! An `idf.py build` folder as a device: read `flasher_args.json` (the files and offsets
//! `idf.py flash` writes, the chip, the flash settings) and the project's `sdkconfig` (the
//! bootloader's options), and lay the files out in a flash image exactly as
//! `esptool merge-bin --pad-to-size SIZE @flash_args` does, run in the build folder.
//!
//! Formats (ESP-IDF's own, written by the build):
//! - `BUILD/flasher_args.json` (esp-idf `components/esptool_py/flasher_args.json.in`, filled by
//!   `components/esptool_py/project_include.cmake`): `flash_settings` {`flash_mode`,
//!   `flash_size`, `flash_freq`}, `flash_files` {"0xOFFSET": "relative/path.bin", ...}, one
//!   entry per role (`bootloader`, `partition-table`, `otadata`, `app`, ...: {`offset`,
//!   `file`, `encrypted`}) and `extra_esptool_args` {`chip`, `before`, `after`, `stub`}.
//!   Paths are relative to the build folder.
//! - `PROJECT/sdkconfig` (beside `BUILD/`; Kconfig's format: `CONFIG_NAME=value`,
//!   `# CONFIG_NAME is not set`, strings quoted) or `BUILD/config/sdkconfig.json` (the same
//!   options without the `CONFIG_` prefix; `y` as `true`, numbers and hex as JSON numbers).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use ota_core::layout::{self, LayoutError, Piece};
use ota_core::partition::{PartitionTable, ReadRule, TABLE_OFFSET};
use ota_core::Chip;
use serde_json::Value;

use crate::settings::{BootloaderSettings, DeviceSettings, EfuseSettings, SchemeSetting};

/// The file `idf.py build` writes for `idf.py flash` (esp-idf `project_include.cmake`).
pub const FLASHER_ARGS: &str = "flasher_args.json";
/// Where the project's configuration lives: beside the build folder, or its JSON copy inside.
pub const SDKCONFIG: &str = "../sdkconfig";
pub const SDKCONFIG_JSON: &str = "config/sdkconfig.json";
/// Bounds on what is read: flasher_args.json and sdkconfig are a few KiB in real projects.
const MAX_TEXT: u64 = 4 << 20;
/// A flashed file larger than this is refused (no ESP32 flash is larger than 128 MB... and
/// esptool's header sizes stop at 128MB).
const MAX_FLASH: u64 = 128 << 20;
/// The `flash_size` values that mean "not set here" (esptool `keep`, older ESP-IDF `detect`).
const SIZE_NOT_SET: [&str; 2] = ["keep", "detect"];

/// What is wrong with a build folder: the file and what.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", path.display())]
pub struct BuildError {
    pub path: PathBuf,
    pub detail: String,
}

fn err(path: &Path, detail: impl Into<String>) -> BuildError {
    BuildError {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// The signed-app options of a project's sdkconfig ([`IdfBuild::secure_boot`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildSecureBoot {
    pub enabled: bool,
    pub signed_apps_no_secure_boot: bool,
    pub scheme: Option<SchemeSetting>,
    /// `CONFIG_SECURE_BOOT_SIGNING_KEY`, resolved against the project folder.
    pub signing_key: Option<PathBuf>,
}

/// One file `idf.py flash` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlashFile {
    pub offset: u32,
    /// As written in flasher_args.json (relative to the build folder).
    pub file: String,
    /// The file on this machine.
    pub path: PathBuf,
    pub len: u32,
    /// Its role entry (`bootloader`, `app`, `partition-table`, `otadata`, ...), if any.
    pub role: Option<String>,
}

/// The project configuration options this emulator uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sdkconfig {
    /// Every option, `CONFIG_` prefix removed, as text (`y`, `0x8000`, `4MB`).
    pub values: BTreeMap<String, String>,
}

impl Sdkconfig {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
    pub fn flag(&self, name: &str) -> bool {
        self.get(name) == Some("y")
    }
    /// A number option (decimal or 0x hex).
    pub fn number(&self, name: &str) -> Result<Option<u32>, String> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let t = v.trim();
        let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) => u32::from_str_radix(h, 16),
            None => t.parse::<u32>(),
        };
        parsed
            .map(Some)
            .map_err(|_| format!("CONFIG_{name}={v} is not a number"))
    }

    /// Kconfig's `sdkconfig` text.
    pub fn parse_text(text: &str) -> Result<Sdkconfig, (usize, String)> {
        let mut values = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err((i + 1, format!("'{line}' is not CONFIG_NAME=value")));
            };
            let Some(name) = k.trim().strip_prefix("CONFIG_") else {
                return Err((i + 1, format!("'{}' does not start with CONFIG_", k.trim())));
            };
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(rest) => unquote(rest).ok_or((i + 1, "unclosed string".to_string()))?,
                None => v.to_string(),
            };
            values.insert(name.to_string(), v);
        }
        Ok(Sdkconfig { values })
    }

    /// `build/config/sdkconfig.json`.
    pub fn parse_json(text: &str) -> Result<Sdkconfig, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let mut values = BTreeMap::new();
        for (k, v) in obj {
            let text = match v {
                Value::Bool(true) => "y".to_string(),
                Value::Bool(false) => continue,
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => continue,
            };
            values.insert(k.clone(), text);
        }
        Ok(Sdkconfig { values })
    }
}

/// The rest of a Kconfig string after its opening quote (`\"` and `\\` escapes).
fn unquote(rest: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// A build folder, read.
#[derive(Clone, Debug)]
pub struct IdfBuild {
    pub dir: PathBuf,
    pub chip: Chip,
    /// `flash_settings`: mode (`dio`), frequency (`80m`), size (`4MB`; None when `keep`/`detect`).
    pub flash_mode: Option<String>,
    pub flash_freq: Option<String>,
    pub flash_size_setting: Option<String>,
    /// The flash size of the device: `CONFIG_ESPTOOLPY_FLASHSIZE`, else `flash_settings`, else
    /// the bootloader header's.
    pub flash_size: u32,
    /// Sorted by offset.
    pub files: Vec<FlashFile>,
    /// The configuration file read, and its options.
    pub sdkconfig: Option<(PathBuf, Sdkconfig)>,
}

fn read_text(path: &Path) -> Result<String, BuildError> {
    let meta = std::fs::metadata(path).map_err(|e| err(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(err(path, "not a regular file"));
    }
    if meta.len() > MAX_TEXT {
        return Err(err(
            path,
            format!("{} bytes, more than the {} read", meta.len(), MAX_TEXT),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| err(path, "not UTF-8 text"))
}

fn parse_offset(s: &str) -> Option<u32> {
    let t = s.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

/// Bytes of flash for a size name (`4MB`).
fn size_bytes(name: &str) -> Option<u32> {
    ota_core::image::flash_size_code_from_name(name).and_then(ota_core::image::flash_size_bytes)
}

impl IdfBuild {
    /// Read `dir/flasher_args.json`, the files it lists (they must exist, fit the flash and not
    /// share a 4 KiB sector) and the project's sdkconfig.
    pub fn read(dir: &Path) -> Result<IdfBuild, BuildError> {
        let fa_path = dir.join(FLASHER_ARGS);
        if !dir.is_dir() {
            return Err(err(
                dir,
                "not a folder (give the build folder of an ESP-IDF project)",
            ));
        }
        if !fa_path.exists() {
            return Err(err(
                &fa_path,
                "not found: is this an `idf.py build` folder? (ESP-IDF writes flasher_args.json there)",
            ));
        }
        let text = read_text(&fa_path)?;
        let fa: Value = serde_json::from_str(&text)
            .map_err(|e| err(&fa_path, format!("not valid JSON: {e}")))?;
        let field = |v: &Value, path: &str| -> Result<String, BuildError> {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| err(&fa_path, format!("{path} is missing or not a string")))
        };
        let chip_name = field(&fa["extra_esptool_args"]["chip"], "extra_esptool_args.chip")?;
        let chip = Chip::from_name(&chip_name).ok_or_else(|| {
            err(
                &fa_path,
                format!("extra_esptool_args.chip '{chip_name}' is not a chip we know"),
            )
        })?;
        let settings = &fa["flash_settings"];
        if !settings.is_object() {
            return Err(err(&fa_path, "flash_settings is missing or not an object"));
        }
        let opt = |k: &str| -> Result<Option<String>, BuildError> {
            match &settings[k] {
                Value::Null => Ok(None),
                Value::String(s) if s.is_empty() || s == "keep" => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(err(&fa_path, format!("flash_settings.{k} is not a string"))),
            }
        };
        let flash_mode = opt("flash_mode")?;
        let flash_freq = opt("flash_freq")?;
        let flash_size_setting = opt("flash_size")?.filter(|s| !SIZE_NOT_SET.contains(&s.as_str()));
        if let Some(m) = &flash_mode {
            if ota_core::image::flash_mode_from_name(m).is_none() {
                return Err(err(
                    &fa_path,
                    format!("flash_settings.flash_mode '{m}' is not qio, qout, dio or dout"),
                ));
            }
        }
        if let Some(f) = &flash_freq {
            if ota_core::image::flash_freq_code_from_name(chip, f).is_none() {
                return Err(err(
                    &fa_path,
                    format!(
                        "flash_settings.flash_freq '{f}' is not a frequency of {}",
                        chip.display_name()
                    ),
                ));
            }
        }
        if let Some(s) = &flash_size_setting {
            if size_bytes(s).is_none() {
                return Err(err(
                    &fa_path,
                    format!("flash_settings.flash_size '{s}' is not 1MB .. 128MB"),
                ));
            }
        }
        let Some(files_obj) = fa["flash_files"].as_object() else {
            return Err(err(&fa_path, "flash_files is missing or not an object"));
        };
        // Role entries: {"bootloader": {"offset": "0x0", "file": "..."}, ...}.
        let mut roles: Vec<(String, u32, String)> = Vec::new();
        if let Some(obj) = fa.as_object() {
            for (k, v) in obj {
                if let (Some(off), Some(file)) = (v["offset"].as_str(), v["file"].as_str()) {
                    if let Some(o) = parse_offset(off) {
                        roles.push((k.clone(), o, file.to_string()));
                    }
                }
            }
        }
        let mut files = Vec::new();
        for (off, file) in files_obj {
            let offset = parse_offset(off).ok_or_else(|| {
                err(
                    &fa_path,
                    format!("flash_files key '{off}' is not a flash offset"),
                )
            })?;
            let file = file.as_str().ok_or_else(|| {
                err(
                    &fa_path,
                    format!("flash_files[\"{off}\"] is not a file name"),
                )
            })?;
            if file.is_empty() {
                return Err(err(&fa_path, format!("flash_files[\"{off}\"] is empty")));
            }
            let path = dir.join(file);
            let meta = std::fs::metadata(&path).map_err(|e| {
                err(
                    &fa_path,
                    format!("flash_files[\"{off}\"] = {file}: {} ({e})", path.display()),
                )
            })?;
            if !meta.is_file() {
                return Err(err(
                    &path,
                    "listed in flasher_args.json but not a regular file",
                ));
            }
            if meta.len() > MAX_FLASH {
                return Err(err(
                    &path,
                    format!("{} bytes: larger than any flash", meta.len()),
                ));
            }
            let role = roles
                .iter()
                .find(|(_, o, f)| *o == offset && f == file)
                .map(|(r, _, _)| r.clone());
            files.push(FlashFile {
                offset,
                file: file.to_string(),
                path,
                len: meta.len() as u32,
                role,
            });
        }
        if files.is_empty() {
            return Err(err(&fa_path, "flash_files lists no file"));
        }
        let pieces: Vec<Piece> = files
            .iter()
            .map(|f| Piece {
                addr: f.offset,
                len: f.len,
            })
            .collect();
        let end = layout::check_pieces(&pieces).map_err(|e| match e {
            LayoutError::Overlap { first, second, .. } => err(
                &fa_path,
                format!(
                    "{} at 0x{:x} overlaps {} at 0x{:x}: {}",
                    files[second].file,
                    files[second].offset,
                    files[first].file,
                    files[first].offset,
                    e
                ),
            ),
            LayoutError::BeyondAddressSpace { index, .. } => {
                err(&fa_path, format!("{}: {}", files[index].file, e))
            }
            e => err(&fa_path, e.to_string()),
        })?;
        files.sort_by_key(|f| f.offset);
        let sdkconfig = read_sdkconfig(dir)?;
        // The flash size: the project's, else the flash settings', else the bootloader's header.
        let from_sdk = match &sdkconfig {
            Some((p, c)) => match c.get("ESPTOOLPY_FLASHSIZE") {
                Some(s) if SIZE_NOT_SET.contains(&s) => None,
                Some(s) => Some(size_bytes(s).ok_or_else(|| {
                    err(
                        p,
                        format!("CONFIG_ESPTOOLPY_FLASHSIZE=\"{s}\" is not 1MB .. 128MB"),
                    )
                })?),
                None => None,
            },
            None => None,
        };
        let from_header = || -> Option<u32> {
            let boot = files
                .iter()
                .find(|f| f.offset == chip.bootloader_offset())?;
            let mut head = [0u8; ota_core::image::HEADER_SIZE];
            std::fs::File::open(&boot.path)
                .ok()?
                .read_exact(&mut head)
                .ok()?;
            ota_core::image::ImageHeader::parse(&head)
                .ok()?
                .flash_size_bytes()
        };
        let flash_size = from_sdk
            .or_else(|| flash_size_setting.as_deref().and_then(size_bytes))
            .or_else(from_header)
            .ok_or_else(|| {
                err(
                    &fa_path,
                    "no flash size: neither sdkconfig (CONFIG_ESPTOOLPY_FLASHSIZE), nor flash_settings.flash_size, nor the bootloader header gives one",
                )
            })?;
        if end > flash_size {
            let last = files
                .iter()
                .max_by_key(|f| u64::from(f.offset) + u64::from(f.len));
            let name = last.map(|f| f.file.as_str()).unwrap_or("?");
            return Err(err(
                &fa_path,
                format!(
                    "{name} ends at 0x{end:x}, beyond the 0x{flash_size:x}-byte ({} MB) flash",
                    flash_size >> 20
                ),
            ));
        }
        if let Some((p, c)) = &sdkconfig {
            if let Some(t) = c.get("IDF_TARGET") {
                if Chip::from_name(t) != Some(chip) {
                    return Err(err(
                        p,
                        format!(
                            "CONFIG_IDF_TARGET=\"{t}\" but flasher_args.json says {}",
                            chip.name()
                        ),
                    ));
                }
            }
            if let Some(off) = c.number("PARTITION_TABLE_OFFSET").map_err(|e| err(p, e))? {
                if off != TABLE_OFFSET {
                    return Err(err(
                        p,
                        format!(
                            "CONFIG_PARTITION_TABLE_OFFSET=0x{off:x}: the emulated device reads its table at 0x{TABLE_OFFSET:x} only"
                        ),
                    ));
                }
            }
        }
        Ok(IdfBuild {
            dir: dir.to_path_buf(),
            chip,
            flash_mode,
            flash_freq,
            flash_size_setting,
            flash_size,
            files,
            sdkconfig,
        })
    }

    /// The device settings the project's sdkconfig gives the bootloader: rollback
    /// (`CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE`), anti-rollback
    /// (`CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK`), MMU page size (`CONFIG_MMU_PAGE_SIZE`, else
    /// Kconfig's default for the chip and flash size); a new chip's eFuse counter is 0.
    pub fn settings(&self) -> Result<DeviceSettings, BuildError> {
        let (rollback, anti_rollback, page) = match &self.sdkconfig {
            Some((p, c)) => (
                c.flag("BOOTLOADER_APP_ROLLBACK_ENABLE"),
                c.flag("BOOTLOADER_APP_ANTI_ROLLBACK"),
                c.number("MMU_PAGE_SIZE").map_err(|e| err(p, e))?,
            ),
            None => (false, false, None),
        };
        let s = DeviceSettings {
            bootloader: BootloaderSettings {
                rollback,
                anti_rollback,
                mmu_page_size: Some(
                    page.unwrap_or_else(|| self.chip.default_mmu_page_size(self.flash_size)),
                ),
            },
            efuse: EfuseSettings { secure_version: 0 },
            flash: Default::default(),
            service: Default::default(),
            // The eFuse key digests come from the signing key, which the caller reads
            // ([`IdfBuild::secure_boot`]).
            secure_boot: Default::default(),
        };
        let place = self
            .sdkconfig
            .as_ref()
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| self.dir.join(FLASHER_ARGS));
        s.check().map_err(|e| err(&place, e))?;
        s.check_for_chip(self.chip).map_err(|e| err(&place, e))?;
        Ok(s)
    }

    /// The project's signed-app options: Secure Boot v2 (`CONFIG_SECURE_BOOT_V2_ENABLED`), or
    /// signed updates without it (`CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT`), the scheme
    /// (`CONFIG_SECURE_BOOT_V2_RSA_ENABLED` / `_ECDSA_ENABLED`, or
    /// `CONFIG_SECURE_SIGNED_APPS_RSA_SCHEME` / `_ECDSA_V2_SCHEME`) and the signing key
    /// (`CONFIG_SECURE_BOOT_SIGNING_KEY`, relative to the project folder: the build folder's
    /// parent).
    pub fn secure_boot(&self) -> BuildSecureBoot {
        let Some((_, c)) = self.sdkconfig.as_ref() else {
            return BuildSecureBoot::default();
        };
        let scheme =
            if c.flag("SECURE_BOOT_V2_RSA_ENABLED") || c.flag("SECURE_SIGNED_APPS_RSA_SCHEME") {
                Some(SchemeSetting::Rsa)
            } else if c.flag("SECURE_BOOT_V2_ECDSA_ENABLED")
                || c.flag("SECURE_SIGNED_APPS_ECDSA_V2_SCHEME")
            {
                Some(SchemeSetting::Ecdsa)
            } else {
                None
            };
        let project = self.dir.join("..");
        BuildSecureBoot {
            enabled: c.flag("SECURE_BOOT_V2_ENABLED"),
            signed_apps_no_secure_boot: c.flag("SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT"),
            scheme,
            signing_key: c
                .get("SECURE_BOOT_SIGNING_KEY")
                .filter(|k| !k.is_empty())
                .map(|k| {
                    let p = Path::new(k);
                    if p.is_absolute() {
                        p.to_path_buf()
                    } else {
                        project.join(p)
                    }
                }),
        }
    }

    /// `CONFIG_BOOTLOADER_APP_SECURE_VERSION`: the secure_version the project's app carries.
    pub fn app_secure_version(&self) -> Option<u32> {
        let (_, c) = self.sdkconfig.as_ref()?;
        c.number("BOOTLOADER_APP_SECURE_VERSION").ok().flatten()
    }

    /// The flash image: every file at its offset, 0xFF elsewhere, padded to the flash size;
    /// the file at the chip's bootloader offset gets the flash mode, frequency and size of
    /// `flash_settings` in its header (and its SHA-256 recomputed) when it is a valid image, as
    /// `esptool merge-bin @flash_args` does. The result must hold a partition table the
    /// bootloader accepts.
    pub fn flash_image(&self) -> Result<Vec<u8>, BuildError> {
        let mut image = vec![0xFFu8; self.flash_size as usize];
        let mode = self
            .flash_mode
            .as_deref()
            .and_then(ota_core::image::flash_mode_from_name);
        let freq = self
            .flash_freq
            .as_deref()
            .and_then(|f| ota_core::image::flash_freq_code_from_name(self.chip, f));
        let size = self
            .flash_size_setting
            .as_deref()
            .and_then(ota_core::image::flash_size_code_from_name);
        for f in &self.files {
            let bytes = std::fs::read(&f.path).map_err(|e| err(&f.path, e.to_string()))?;
            if bytes.len() != f.len as usize {
                return Err(err(&f.path, "changed size while being read"));
            }
            let start = f.offset as usize;
            let dst = &mut image[start..start + bytes.len()];
            dst.copy_from_slice(&bytes);
            if f.offset == self.chip.bootloader_offset() && (mode, freq, size) != (None, None, None)
            {
                // Not a valid image: left as it is (esptool warns and does the same).
                ota_core::image::set_image_flash_params(dst, self.chip, mode, size, freq);
            }
        }
        let table = image
            .get(TABLE_OFFSET as usize..TABLE_OFFSET as usize + ota_core::partition::TABLE_MAX_LEN)
            .unwrap_or(&[]);
        if let Err(e) = PartitionTable::parse(
            table,
            ReadRule::Bootloader {
                chip_size: self.flash_size,
            },
        ) {
            let which = self
                .files
                .iter()
                .find(|f| f.offset == TABLE_OFFSET)
                .map(|f| f.file.clone())
                .unwrap_or_else(|| format!("(no file at 0x{TABLE_OFFSET:x})"));
            return Err(err(
                &self.dir.join(FLASHER_ARGS),
                format!("the partition table {which} is refused by the bootloader: {e}"),
            ));
        }
        Ok(image)
    }
}

/// `BUILD/../sdkconfig`, else `BUILD/config/sdkconfig.json`, else None.
fn read_sdkconfig(dir: &Path) -> Result<Option<(PathBuf, Sdkconfig)>, BuildError> {
    let text_path = dir.join(SDKCONFIG);
    if text_path.is_file() {
        let text = read_text(&text_path)?;
        let c = Sdkconfig::parse_text(&text)
            .map_err(|(line, e)| err(&text_path, format!("line {line}: {e}")))?;
        return Ok(Some((text_path, c)));
    }
    let json_path = dir.join(SDKCONFIG_JSON);
    if json_path.is_file() {
        let text = read_text(&json_path)?;
        let c = Sdkconfig::parse_json(&text).map_err(|e| err(&json_path, e))?;
        return Ok(Some((json_path, c)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdkconfig_text_and_json_read_the_same_options() {
        let t = Sdkconfig::parse_text(
            "#\n# Automatically generated file. DO NOT EDIT.\n#\nCONFIG_IDF_TARGET=\"esp32c3\"\n\
             CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y\n# CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK is not set\n\
             CONFIG_MMU_PAGE_SIZE=0x10000\nCONFIG_ESPTOOLPY_FLASHSIZE=\"4MB\"\nCONFIG_X=\"a \\\"q\\\"\"\n",
        )
        .unwrap();
        let j = Sdkconfig::parse_json(
            r#"{"IDF_TARGET": "esp32c3", "BOOTLOADER_APP_ROLLBACK_ENABLE": true,
                "BOOTLOADER_APP_ANTI_ROLLBACK": false, "MMU_PAGE_SIZE": 65536,
                "ESPTOOLPY_FLASHSIZE": "4MB", "X": "a \"q\""}"#,
        )
        .unwrap();
        for c in [&t, &j] {
            assert!(c.flag("BOOTLOADER_APP_ROLLBACK_ENABLE"));
            assert!(!c.flag("BOOTLOADER_APP_ANTI_ROLLBACK"));
            assert_eq!(c.number("MMU_PAGE_SIZE").unwrap(), Some(0x10000));
            assert_eq!(c.get("ESPTOOLPY_FLASHSIZE"), Some("4MB"));
            assert_eq!(c.get("X"), Some("a \"q\""));
        }
        assert_eq!(Sdkconfig::parse_text("FOO=1\n").unwrap_err().0, 1);
        assert!(Sdkconfig::parse_text("CONFIG_A=\"open\n").is_err());
        assert!(Sdkconfig::parse_json("[1]").is_err());
    }
}
