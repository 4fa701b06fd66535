//! The TOML configuration of `ota device run`: which items to upgrade, from where, and how.
//!
//! It accepts the ESP-ADF example's Kconfig names as shortcuts (adf-ota-service.md §9.1) and/or
//! an explicit `[[upgrade]]` list. Every error names the file, line and column it is about.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ota_core::version::VersionPolicy;
use serde::Deserialize;
use toml::Spanned;

use crate::source::{RetryPolicy, Scheme, TransferLimits};

/// Largest `retries` accepted: downloads stay bounded.
pub const MAX_RETRIES: u32 = 100;
/// Largest `retry_backoff_ms` accepted (the wait doubles from there, up to `source::MAX_BACKOFF`).
pub const MAX_RETRY_BACKOFF_MS: u64 = 60_000;

/// Largest `low_speed_limit` accepted, in bytes per second (1 GiB/s: above any link).
pub const MAX_LOW_SPEED_LIMIT: u64 = 1 << 30;
/// Largest `low_speed_time_ms` accepted (1 hour).
pub const MAX_LOW_SPEED_TIME_MS: u64 = 3_600_000;
/// Largest `max_time_ms` accepted (24 hours): every item's transfers stay bounded.
pub const MAX_MAX_TIME_MS: u64 = 86_400_000;

/// Default `DATA_PARTITION_LABEL` of the example's Kconfig (adf-ota-service.md §9.1).
pub const EXAMPLE_DATA_PARTITION_LABEL: &str = "flash_tone";
/// Default `DATA_UPGRADE_URI` of the example's Kconfig (adf-ota-service.md §9.1).
pub const EXAMPLE_DATA_UPGRADE_URI: &str = "file://sdcard/flash_tone.bin";
/// The firmware file name the example's README serves (adf-ota-service.md §9.1).
pub const EXAMPLE_FIRMWARE_FILE: &str = "play_mp3_control.bin";

/// What an upgrade item writes: the next OTA app slot, or a data partition by label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    App,
    Data,
    /// Ask a hawkBit DDI server what to install (`uri` is the server's URL).
    Ddi,
}

/// Largest `polls` of a DDI item.
pub const MAX_DDI_POLLS: u32 = 10_000;
/// Largest token file read (hawkBit's security tokens are 32 characters; a gateway token too).
pub const MAX_TOKEN_FILE: u64 = 4096;

/// Where a DDI item's token is, and which kind it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DdiToken {
    None,
    /// `Authorization: TargetToken <file's content>` (`token_file`).
    Target(PathBuf),
    /// `Authorization: GatewayToken <file's content>` (`gateway_token_file`).
    Gateway(PathBuf),
}

/// A DDI item's settings (`type = "ddi"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdiSpec {
    pub tenant: String,
    pub controller_id: String,
    pub token: DdiToken,
    /// Polls of the base resource in one run while it offers nothing (`polls`, default 1).
    pub polls: u32,
    /// The longest wait between two polls (`max_sleep_ms`; the server's `config.polling.sleep`
    /// is honoured up to it).
    pub max_sleep: std::time::Duration,
}

/// Reads a token file: its content without surrounding white space, at most
/// [`MAX_TOKEN_FILE`] bytes, one line of printable ASCII.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| format!("reading token file {}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_TOKEN_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading token file {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!(
            "token file {} is larger than {MAX_TOKEN_FILE} bytes",
            path.display()
        ));
    }
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    if let Some(pos) = t.bytes().position(|b| !(0x21..0x7f).contains(&b)) {
        return Err(format!(
            "token file {}: byte {pos} of the token is not printable ASCII (one token, one line)",
            path.display()
        ));
    }
    Ok(t.to_string())
}

/// How a data item's bytes are checked before they are written (defined with the data item,
/// which builds without `std`).
pub use crate::items::DataFormat;

/// One item of the upgrade list (ADF `ota_upgrade_ops_t`, adf-ota-service.md §2.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeSpec {
    pub kind: ItemKind,
    pub uri: String,
    /// The data partition's label (data items only).
    pub label: Option<String>,
    /// Data items only; `Raw` for app items.
    pub format: DataFormat,
    pub version_check: VersionPolicy,
    /// Restart after this item succeeds (ADF `reboot_flag`).
    pub reboot: bool,
    /// Stop the list when this item fails (ADF `break_after_fail`).
    pub break_after_fail: bool,
    /// A pinned CA in PEM (ADF `cert_pem`), resolved against the config file's folder.
    pub cert: Option<PathBuf>,
    /// How often a failed download is tried again (`retries`, `retry_backoff_ms`).
    pub retry: RetryPolicy,
    /// App items: keep a resume record in flash for HTTP(S) downloads (`resume`).
    pub resume: bool,
    /// Data items only: a spare partition (by label) where the image is written and verified
    /// before it is copied into `label` under a power-safe progress record
    /// (`ota_core::staging`). None: written in place.
    pub staging: Option<String>,
    /// App items only: `uri` names a catalogue (`ota serve`'s `/manifest.json`) and the item
    /// installs the newest image of this project for the device's chip.
    pub project: Option<String>,
    /// Every item: the rate rule and overall deadline of its transfers (`low_speed_limit`,
    /// `low_speed_time_ms`, `max_time_ms`).
    pub limits: TransferLimits,
    /// DDI items only.
    pub ddi: Option<DdiSpec>,
    /// Data items only: the catalogue (`…/manifest.json`) that lists `uri`; the file must
    /// match its size and SHA-256 before the partition is erased.
    pub catalogue: Option<String>,
}

/// The parsed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Shortcut items first (data, then app, as in the example), then the `[[upgrade]]` tables.
    pub upgrade: Vec<UpgradeSpec>,
    /// `catalogue_key`: the public key (PEM) every catalogue must be signed with; then every
    /// item must come through a catalogue (app items with `project`, data items with
    /// `catalogue`). Relative to the config file's folder.
    pub catalogue_key: Option<PathBuf>,
    /// The serial of the newest signed catalogue the device accepted (older ones are replays).
    /// Not read from the file: the driver sets it from what the device keeps.
    pub catalogue_serial: Option<u64>,
}

/// A configuration error, with the place in the file when there is one.
#[derive(Debug)]
pub struct ConfigError {
    /// The file name shown in messages.
    pub file: String,
    /// 1-based line and column (in characters), when the error has a place.
    pub position: Option<(usize, usize)>,
    pub message: String,
    /// The underlying I/O error when the file could not be read.
    pub io: Option<std::io::Error>,
}

impl ConfigError {
    /// The 1-based line of the error, if it has a place.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|(l, _)| l)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The allowed `version_check` values (serde enum for [`VersionPolicy`], which lives in no_std core).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawVersionCheck {
    None,
    Newer,
    Semver,
}

impl From<RawVersionCheck> for VersionPolicy {
    fn from(v: RawVersionCheck) -> Self {
        match v {
            RawVersionCheck::None => VersionPolicy::None,
            RawVersionCheck::Newer => VersionPolicy::Newer,
            RawVersionCheck::Semver => VersionPolicy::Semver,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    firmware_upgrade_uri: Option<Spanned<String>>,
    data_upgrade_uri: Option<Spanned<String>>,
    data_partition_label: Option<Spanned<String>>,
    force_check_firmware_version: Option<bool>,
    retries: Option<Spanned<u32>>,
    retry_backoff_ms: Option<Spanned<u64>>,
    resume: Option<Spanned<bool>>,
    low_speed_limit: Option<Spanned<u64>>,
    low_speed_time_ms: Option<Spanned<u64>>,
    max_time_ms: Option<Spanned<u64>>,
    catalogue_key: Option<Spanned<String>>,
    #[serde(default)]
    upgrade: Vec<Spanned<RawUpgrade>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpgrade {
    #[serde(rename = "type")]
    kind: ItemKind,
    uri: Spanned<String>,
    label: Option<Spanned<String>>,
    format: Option<Spanned<DataFormat>>,
    version_check: Option<Spanned<RawVersionCheck>>,
    reboot: Option<bool>,
    break_after_fail: Option<bool>,
    cert: Option<Spanned<String>>,
    retries: Option<Spanned<u32>>,
    retry_backoff_ms: Option<Spanned<u64>>,
    resume: Option<Spanned<bool>>,
    staging: Option<Spanned<String>>,
    project: Option<Spanned<String>>,
    low_speed_limit: Option<Spanned<u64>>,
    low_speed_time_ms: Option<Spanned<u64>>,
    max_time_ms: Option<Spanned<u64>>,
    tenant: Option<Spanned<String>>,
    controller_id: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    gateway_token_file: Option<Spanned<String>>,
    polls: Option<Spanned<u32>>,
    max_sleep_ms: Option<Spanned<u64>>,
    catalogue: Option<Spanned<String>>,
}

/// Turns byte spans into `line:col` for one file.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, col)
    }

    fn at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            position: span.map(|s| self.position(s.start)),
            message: message.into(),
            io: None,
        }
    }
}

impl Config {
    /// Parses `text`; relative `cert` paths are resolved against `base_dir`. Errors name the
    /// file as `<config>`; use [`Config::from_str_named`] or [`Config::load`] for a real name.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Config::from_str_named(text, "<config>", base_dir)
    }

    /// Parses `text`, naming it `file` in error messages.
    pub fn from_str_named(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let loc = Locator { file, text };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| loc.at(e.span(), toml_message(&e, text)))?;
        let mut upgrade = Vec::new();
        let defaults = Retrying {
            retry: retry_policy(
                &loc,
                RetryPolicy::default(),
                raw.retries.as_ref(),
                raw.retry_backoff_ms.as_ref(),
            )?,
            resume: raw.resume.as_ref().is_none_or(|r| *r.get_ref()),
            limits: transfer_limits(
                &loc,
                TransferLimits::default(),
                [
                    raw.low_speed_limit.as_ref(),
                    raw.low_speed_time_ms.as_ref(),
                    raw.max_time_ms.as_ref(),
                ],
            )?,
        };

        // The example's list (adf-ota-service.md §9.3): data item first, then the app item.
        if let Some(uri) = &raw.data_upgrade_uri {
            check_uri(&loc, uri)?;
            let label = match &raw.data_partition_label {
                Some(l) => nonempty(&loc, l, "data_partition_label")?,
                None => EXAMPLE_DATA_PARTITION_LABEL.to_string(),
            };
            upgrade.push(UpgradeSpec {
                kind: ItemKind::Data,
                uri: uri.get_ref().clone(),
                label: Some(label),
                format: DataFormat::Tone,
                version_check: VersionPolicy::None,
                reboot: false,
                break_after_fail: false,
                cert: None,
                retry: defaults.retry,
                resume: defaults.resume,
                staging: None,
                project: None,
                limits: defaults.limits,
                ddi: None,
                catalogue: None,
            });
        } else if let Some(l) = &raw.data_partition_label {
            return Err(loc.at(
                Some(l.span()),
                "data_partition_label is set but data_upgrade_uri is not",
            ));
        }
        if let Some(uri) = &raw.firmware_upgrade_uri {
            check_uri(&loc, uri)?;
            upgrade.push(UpgradeSpec {
                kind: ItemKind::App,
                uri: uri.get_ref().clone(),
                label: None,
                format: DataFormat::Raw,
                version_check: if raw.force_check_firmware_version.unwrap_or(false) {
                    VersionPolicy::Newer
                } else {
                    VersionPolicy::None
                },
                reboot: true,
                break_after_fail: false,
                cert: None,
                retry: defaults.retry,
                resume: defaults.resume,
                staging: None,
                project: None,
                limits: defaults.limits,
                ddi: None,
                catalogue: None,
            });
        }

        for item in &raw.upgrade {
            upgrade.push(explicit_item(&loc, item, base_dir, &defaults)?);
        }

        if upgrade.is_empty() {
            return Err(loc.at(
                None,
                "no upgrade items: set firmware_upgrade_uri/data_upgrade_uri or add [[upgrade]] tables",
            ));
        }
        let catalogue_key = match &raw.catalogue_key {
            None => None,
            Some(k) => {
                let path = base_dir.join(k.get_ref());
                if !path.is_file() {
                    return Err(loc.at(
                        Some(k.span()),
                        format!("catalogue_key file not found: {}", path.display()),
                    ));
                }
                Some(path)
            }
        };
        let config = Config {
            upgrade,
            catalogue_key,
            catalogue_serial: None,
        };
        if let (Some(k), Err(e)) = (&raw.catalogue_key, config.check_catalogue_items()) {
            return Err(loc.at(Some(k.span()), e));
        }
        Ok(config)
    }

    /// With a catalogue key, every item must come through a catalogue: an app item with
    /// `project`, a data item with `catalogue`. The error names the first item that does not.
    pub fn check_catalogue_items(&self) -> Result<(), String> {
        if self.catalogue_key.is_none() {
            return Ok(());
        }
        for (i, item) in self.upgrade.iter().enumerate() {
            let how = match item.kind {
                ItemKind::App if item.project.is_none() => {
                    "an app item must read a catalogue (`uri = \"…/manifest.json\"` with `project`)"
                }
                ItemKind::Data if item.catalogue.is_none() => {
                    "a data item must name the catalogue that lists it (`catalogue = \"…/manifest.json\"`)"
                }
                _ => continue,
            };
            return Err(format!(
                "with a catalogue key, only bytes a signed catalogue lists are trusted: item {} \
                 ({}) is not authenticated: {}",
                i, item.uri, how
            ));
        }
        Ok(())
    }

    /// Reads and parses the file at `path`; `cert` paths are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            position: None,
            message: format!("cannot read the config file: {e}"),
            io: Some(e),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Config::from_str_named(&text, &name, base)
    }
}

/// The TOML parser's message; toml 0.8 leaves it empty for some errors (a control character
/// in a comment, found by the `config` fuzz target), so name the character at the error's place.
fn toml_message(e: &toml::de::Error, text: &str) -> String {
    if !e.message().trim().is_empty() {
        return e.message().to_string();
    }
    let ch = e
        .span()
        .and_then(|s| text.get(s.start..))
        .and_then(|rest| rest.chars().next());
    match ch {
        Some(c) => format!(
            "invalid TOML: character {:?} (U+{:04X}) is not allowed here",
            c, c as u32
        ),
        None => "invalid TOML".to_string(),
    }
}

fn check_uri(loc: &Locator<'_>, uri: &Spanned<String>) -> Result<(), ConfigError> {
    if Scheme::of(uri.get_ref()).is_none() {
        return Err(loc.at(
            Some(uri.span()),
            format!(
                "unsupported uri `{}`: it must start with file://, http:// or https://",
                uri.get_ref()
            ),
        ));
    }
    Ok(())
}

fn nonempty(loc: &Locator<'_>, v: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    if v.get_ref().trim().is_empty() {
        return Err(loc.at(Some(v.span()), format!("{key} must not be empty")));
    }
    Ok(v.get_ref().clone())
}

/// The top-level `retries` / `retry_backoff_ms` / `resume`: defaults for every app item;
/// `low_speed_limit` / `low_speed_time_ms` / `max_time_ms`: for every item.
struct Retrying {
    retry: RetryPolicy,
    resume: bool,
    limits: TransferLimits,
}

/// `low_speed_limit`, `low_speed_time_ms`, `max_time_ms` over `base`, each checked.
fn transfer_limits(
    loc: &Locator<'_>,
    base: TransferLimits,
    [limit, time, max_time]: [Option<&Spanned<u64>>; 3],
) -> Result<TransferLimits, ConfigError> {
    let mut l = base;
    let check = |v: &Spanned<u64>, key: &str, min: u64, max: u64| {
        let n = *v.get_ref();
        if n < min || n > max {
            Err(loc.at(
                Some(v.span()),
                format!("{key} must be between {min} and {max}, not {n}"),
            ))
        } else {
            Ok(n)
        }
    };
    if let Some(v) = limit {
        l.low_speed_limit = check(v, "low_speed_limit", 0, MAX_LOW_SPEED_LIMIT)?;
    }
    if let Some(v) = time {
        l.low_speed_time = std::time::Duration::from_millis(check(
            v,
            "low_speed_time_ms",
            1,
            MAX_LOW_SPEED_TIME_MS,
        )?);
    }
    if let Some(v) = max_time {
        l.max_time = std::time::Duration::from_millis(check(v, "max_time_ms", 1, MAX_MAX_TIME_MS)?);
    }
    Ok(l)
}

fn retry_policy(
    loc: &Locator<'_>,
    base: RetryPolicy,
    retries: Option<&Spanned<u32>>,
    backoff_ms: Option<&Spanned<u64>>,
) -> Result<RetryPolicy, ConfigError> {
    let mut p = base;
    if let Some(r) = retries {
        if *r.get_ref() > MAX_RETRIES {
            return Err(loc.at(
                Some(r.span()),
                format!("retries must be at most {MAX_RETRIES}"),
            ));
        }
        p.retries = *r.get_ref();
    }
    if let Some(b) = backoff_ms {
        if *b.get_ref() > MAX_RETRY_BACKOFF_MS {
            return Err(loc.at(
                Some(b.span()),
                format!("retry_backoff_ms must be at most {MAX_RETRY_BACKOFF_MS}"),
            ));
        }
        p.backoff = std::time::Duration::from_millis(*b.get_ref());
    }
    Ok(p)
}

fn explicit_item(
    loc: &Locator<'_>,
    item: &Spanned<RawUpgrade>,
    base_dir: &Path,
    defaults: &Retrying,
) -> Result<UpgradeSpec, ConfigError> {
    let raw = item.get_ref();
    check_uri(loc, &raw.uri)?;
    let ddi = ddi_spec(loc, item, base_dir)?;
    // Every item retries and reconnects (`retries`, `retry_backoff_ms`); app items (plain,
    // catalogue and DDI) keep a resume record in flash across runs unless `resume = false`.
    if let (ItemKind::Data, Some(r)) = (raw.kind, raw.resume.as_ref()) {
        return Err(loc.at(
            Some(r.span()),
            "`resume` is for app items (a resume record in flash): a data item is verified and written within one run".to_string(),
        ));
    }
    let retry = retry_policy(
        loc,
        defaults.retry,
        raw.retries.as_ref(),
        raw.retry_backoff_ms.as_ref(),
    )?;
    let resume = raw
        .resume
        .as_ref()
        .map_or(defaults.resume, |r| *r.get_ref());
    let limits = transfer_limits(
        loc,
        defaults.limits,
        [
            raw.low_speed_limit.as_ref(),
            raw.low_speed_time_ms.as_ref(),
            raw.max_time_ms.as_ref(),
        ],
    )?;
    let (label, format) = match raw.kind {
        ItemKind::App | ItemKind::Ddi => {
            if let Some(st) = &raw.staging {
                return Err(loc.at(
                    Some(st.span()),
                    "`staging` is for data items; an app item is written to the other OTA slot",
                ));
            }
            if let Some(l) = &raw.label {
                return Err(loc.at(
                    Some(l.span()),
                    "`label` is for data items; an app item always goes to the next OTA slot",
                ));
            }
            if let Some(f) = &raw.format {
                return Err(loc.at(
                    Some(f.span()),
                    "`format` is for data items; an app item is always an app image",
                ));
            }
            (None, DataFormat::Raw)
        }
        ItemKind::Data => {
            let label = match &raw.label {
                Some(l) => nonempty(loc, l, "label")?,
                None => {
                    return Err(loc.at(
                        Some(item.span()),
                        "data item without `label`: name the data partition to write",
                    ))
                }
            };
            let format = raw
                .format
                .as_ref()
                .map_or(DataFormat::Raw, |f| *f.get_ref());
            if let (DataFormat::Raw, Some(v)) = (format, &raw.version_check) {
                if !matches!(v.get_ref(), RawVersionCheck::None) {
                    return Err(loc.at(
                        Some(v.span()),
                        "version_check needs a version: only app items and format = \"tone\" data items carry one",
                    ));
                }
            }
            if let Some(st) = &raw.staging {
                let st_label = nonempty(loc, st, "staging")?;
                if st_label == label {
                    return Err(loc.at(
                        Some(st.span()),
                        format!(
                            "staging partition `{st_label}` must differ from the target `{label}`"
                        ),
                    ));
                }
            }
            (Some(label), format)
        }
    };
    let project = match (&raw.project, raw.kind) {
        (Some(p), ItemKind::App | ItemKind::Ddi) => Some(nonempty(loc, p, "project")?),
        (Some(p), ItemKind::Data) => {
            return Err(loc.at(
                Some(p.span()),
                "`project` is for app items that read a catalogue (manifest.json)",
            ))
        }
        (None, ItemKind::App) if raw.uri.get_ref().ends_with("manifest.json") => {
            return Err(loc.at(
                Some(raw.uri.span()),
                "this uri names a catalogue: add `project = \"NAME\"` to pick an image from it",
            ))
        }
        (None, _) => None,
    };
    let catalogue = match (&raw.catalogue, raw.kind) {
        (None, _) => None,
        (Some(c), ItemKind::App) => {
            return Err(loc.at(
                Some(c.span()),
                "`catalogue` is for data items; an app item reads a catalogue through `uri` and `project`",
            ))
        }
        (Some(c), ItemKind::Ddi) => {
            return Err(loc.at(
                Some(c.span()),
                "`catalogue` is for data items; a DDI item installs what its server's deployment lists",
            ))
        }
        (Some(c), ItemKind::Data) => {
            check_uri(loc, c)?;
            Some(c.get_ref().clone())
        }
    };
    let cert = match &raw.cert {
        None => None,
        Some(c) => {
            let path = base_dir.join(c.get_ref());
            if !path.is_file() {
                return Err(loc.at(
                    Some(c.span()),
                    format!("cert file not found: {}", path.display()),
                ));
            }
            Some(path)
        }
    };
    Ok(UpgradeSpec {
        kind: raw.kind,
        uri: raw.uri.get_ref().clone(),
        label,
        format,
        version_check: raw
            .version_check
            .as_ref()
            .map_or(VersionPolicy::None, |v| (*v.get_ref()).into()),
        reboot: raw.reboot.unwrap_or(raw.kind != ItemKind::Data),
        break_after_fail: raw.break_after_fail.unwrap_or(false),
        cert,
        retry,
        resume,
        staging: raw.staging.as_ref().map(|s| s.get_ref().clone()),
        project,
        limits,
        ddi,
        catalogue,
    })
}

/// The DDI fields of an item: required for `type = "ddi"`, refused for the others.
fn ddi_spec(
    loc: &Locator<'_>,
    item: &Spanned<RawUpgrade>,
    base_dir: &Path,
) -> Result<Option<DdiSpec>, ConfigError> {
    let raw = item.get_ref();
    if raw.kind != ItemKind::Ddi {
        let fields = [
            ("tenant", raw.tenant.as_ref().map(|s| s.span())),
            (
                "controller_id",
                raw.controller_id.as_ref().map(|s| s.span()),
            ),
            ("token_file", raw.token_file.as_ref().map(|s| s.span())),
            (
                "gateway_token_file",
                raw.gateway_token_file.as_ref().map(|s| s.span()),
            ),
            ("polls", raw.polls.as_ref().map(|s| s.span())),
            ("max_sleep_ms", raw.max_sleep_ms.as_ref().map(|s| s.span())),
        ];
        if let Some((name, span)) = fields.into_iter().find(|(_, s)| s.is_some()) {
            return Err(loc.at(span, format!("`{name}` is for DDI items (type = \"ddi\")")));
        }
        return Ok(None);
    }
    if !matches!(
        Scheme::of(raw.uri.get_ref()),
        Some(Scheme::Http) | Some(Scheme::Https)
    ) {
        return Err(loc.at(
            Some(raw.uri.span()),
            "a DDI item's uri is the hawkBit server's http:// or https:// URL",
        ));
    }
    let id_field = |v: &Option<Spanned<String>>, name: &str| -> Result<String, ConfigError> {
        match v {
            Some(s) => {
                let t = nonempty(loc, s, name)?;
                let probe = crate::items::DdiItem::new(
                    "http://h",
                    t.clone(),
                    t.clone(),
                    crate::items::DdiAuth::None,
                );
                probe
                    .validate()
                    .map_err(|e| loc.at(Some(s.span()), format!("{name}: {e}")))?;
                Ok(t)
            }
            None => Err(loc.at(Some(item.span()), format!("DDI item without `{name}`"))),
        }
    };
    let tenant = id_field(&raw.tenant, "tenant")?;
    let controller_id = id_field(&raw.controller_id, "controller_id")?;
    let file = |s: &Spanned<String>| -> Result<PathBuf, ConfigError> {
        let path = base_dir.join(s.get_ref());
        if !path.is_file() {
            return Err(loc.at(
                Some(s.span()),
                format!("token file not found: {}", path.display()),
            ));
        }
        Ok(path)
    };
    let token = match (&raw.token_file, &raw.gateway_token_file) {
        (Some(_), Some(g)) => {
            return Err(loc.at(
                Some(g.span()),
                "set token_file (TargetToken) or gateway_token_file (GatewayToken), not both",
            ))
        }
        (Some(t), None) => DdiToken::Target(file(t)?),
        (None, Some(g)) => DdiToken::Gateway(file(g)?),
        (None, None) => DdiToken::None,
    };
    let polls = match &raw.polls {
        Some(p) if *p.get_ref() == 0 || *p.get_ref() > MAX_DDI_POLLS => {
            return Err(loc.at(
                Some(p.span()),
                format!("polls must be 1 to {MAX_DDI_POLLS}"),
            ))
        }
        Some(p) => *p.get_ref(),
        None => 1,
    };
    let max_sleep = match &raw.max_sleep_ms {
        Some(m) if *m.get_ref() > MAX_MAX_TIME_MS => {
            return Err(loc.at(
                Some(m.span()),
                format!("max_sleep_ms must be at most {MAX_MAX_TIME_MS}"),
            ))
        }
        Some(m) => std::time::Duration::from_millis(*m.get_ref()),
        None => crate::items::ddi::DEFAULT_MAX_SLEEP,
    };
    Ok(Some(DdiSpec {
        tenant,
        controller_id,
        token,
        polls,
        max_sleep,
    }))
}

/// The ESP-ADF example's list (adf-ota-service.md §9.1, §9.3) with the firmware served from
/// `http://<host_port>/play_mp3_control.bin`: the tone bin from the SD card into `flash_tone`,
/// then the app (no version check, reboot).
pub fn example(host_port: &str) -> Config {
    Config {
        catalogue_key: None,
        catalogue_serial: None,
        upgrade: vec![
            UpgradeSpec {
                kind: ItemKind::Data,
                uri: EXAMPLE_DATA_UPGRADE_URI.to_string(),
                label: Some(EXAMPLE_DATA_PARTITION_LABEL.to_string()),
                format: DataFormat::Tone,
                version_check: VersionPolicy::None,
                reboot: false,
                break_after_fail: false,
                cert: None,
                retry: RetryPolicy::default(),
                resume: true,
                staging: None,
                project: None,
                limits: TransferLimits::default(),
                ddi: None,
                catalogue: None,
            },
            UpgradeSpec {
                kind: ItemKind::App,
                uri: format!("http://{host_port}/{EXAMPLE_FIRMWARE_FILE}"),
                label: None,
                format: DataFormat::Raw,
                version_check: VersionPolicy::None,
                reboot: true,
                break_after_fail: false,
                cert: None,
                retry: RetryPolicy::default(),
                resume: true,
                staging: None,
                project: None,
                limits: TransferLimits::default(),
                ddi: None,
                catalogue: None,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locator_counts_lines_and_chars() {
        let loc = Locator {
            file: "f",
            text: "a = 1\nbé = 2\n",
        };
        assert_eq!(loc.position(0), (1, 1));
        assert_eq!(loc.position(6), (2, 1));
        // byte 10 is the `=` after "bé " (é is two bytes): column 4 in characters
        assert_eq!(loc.position(10), (2, 4));
        // inside the é: the character's own column
        assert_eq!(loc.position(8), (2, 2));
        assert_eq!(loc.position(1000), (3, 1));
    }
}
