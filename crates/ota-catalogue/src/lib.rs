//! `ota-catalogue`: the catalogue of ota-service, the JSON contract between `ota serve` (which
//! writes it at [`CATALOGUE_PATH`]) and devices (which read it, pick an image with [`pick`] and
//! check the download against the entry's size and SHA-256).
//!
//! `no_std` with `alloc` (serde and serde_json without `std`), so the same types and the same
//! choice run on the server, on a PC and on an ESP32-class chip. It has no I/O: fetching the
//! catalogue and downloading the entry are the caller's.
//!
//! [`signed`] signs a catalogue (Ed25519 or ECDSA P-256) in an envelope over its exact bytes,
//! and verifies one on the device, with a serial against replay.
#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt;

use ota_core::version::{self, VersionPolicy};
use serde::{Deserialize, Serialize};

pub mod signed;

/// The catalogue format this code writes and reads (`"format"` key).
pub const CATALOGUE_FORMAT: u32 = 1;
/// The catalogue's path on an `ota serve` server.
pub const CATALOGUE_PATH: &str = "/manifest.json";
/// The largest catalogue a device reads (a bigger one is refused, not truncated).
pub const MAX_CATALOGUE_BYTES: usize = 8 << 20;
/// Hex digits of a SHA-256 (`sha256` key).
const SHA256_HEX_DIGITS: usize = 64;

/// What a catalogue entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// An ESP-IDF app image (magic 0xE9: esp-idf `components/bootloader_support/include/
    /// esp_app_format.h`, `ESP_IMAGE_HEADER_MAGIC`).
    App,
    /// An ESP-ADF tone bin (tag 0x2053: esp-adf `components/tone_partition/tone_partition.c`).
    Tone,
    /// A `.bin` that is neither (always with an `error`).
    Unknown,
}

/// One file of the catalogue: what `ota-core` reads from it. Keys are always present (null
/// when they do not apply), so the JSON is stable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueEntry {
    /// Where to download it: a URL path on the catalogue's server (`/fw/app.bin`), or an
    /// absolute `http(s)://` URL.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// SHA-256 of the whole file, lower-case hex.
    pub sha256: String,
    /// esptool's chip name (`esp32`, `esp32c3`, ...) from the image header; apps only.
    #[serde(default)]
    pub chip: Option<String>,
    /// `project_name` of the app descriptor, or of the tone bin's descriptor (format 1). The key
    /// is `project_name`, as in every other JSON output; catalogues written with `project`
    /// (the older key) are still read.
    #[serde(default, rename = "project_name", alias = "project")]
    pub project: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// The app descriptor's anti-rollback `secure_version`.
    #[serde(default)]
    pub secure_version: Option<u32>,
    #[serde(default)]
    pub idf_ver: Option<String>,
    /// Tone bins: the bin format (0 or 1).
    #[serde(default)]
    pub format: Option<u32>,
    /// Tone bins: the number of files.
    #[serde(default)]
    pub files: Option<u32>,
    /// Why this file is not a valid image or tone bin. An entry with an error is never offered.
    #[serde(default)]
    pub error: Option<String>,
    /// Apps: delta patches from older builds of the same project and chip to this one (`ota
    /// serve` makes them for the previous versions of a folder). Written only when there are
    /// some; a device that does not know the key ignores it (serde skips unknown keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<DeltaPatch>,
}

/// A delta patch to an app entry: a detools sequential patch behind the esp_delta_ota header
/// (eerimoq/detools; espressif/idf-extra-components `esp_delta_ota`), stored content-addressed
/// (its name is its SHA-256). A device whose running image's digest is `base_sha256` may
/// download it instead of the entry's image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaPatch {
    /// Where to download the patch (like [`CatalogueEntry::path`]).
    pub path: String,
    /// Bytes of the patch file.
    pub size: u64,
    /// SHA-256 of the patch file, lower-case hex: checked as it streams, before the result is
    /// committed.
    pub sha256: String,
    /// The base's digest as the device computes it (`esp_partition_get_sha256` of the running
    /// slot: the image's appended SHA-256), lower-case hex; also in the patch's esp header.
    pub base_sha256: String,
    /// The base's `version`, for logs.
    #[serde(default)]
    pub base_version: Option<String>,
    /// SHA-256 of the image the patch produces (the entry's own `sha256`).
    pub target_sha256: String,
    /// detools' compression name (`heatshrink`, `none`).
    pub compression: String,
}

impl CatalogueEntry {
    /// The patches whose base is the image with digest `base_sha256`, in listed order.
    pub fn deltas_for<'a>(
        &'a self,
        base_sha256: &'a [u8; 32],
    ) -> impl Iterator<Item = &'a DeltaPatch> + 'a {
        self.deltas
            .iter()
            .filter(move |d| parse_sha256(&d.base_sha256).as_ref() == Some(base_sha256))
    }
}

/// The whole catalogue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    pub format: u32,
    /// Signed catalogues: a number the signer makes grow with every new document (ms since
    /// the Unix epoch when it was signed, or one more than the last), checked by devices
    /// against the last one they accepted ([`signed::verify`]). Absent in unsigned ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    pub entries: Vec<CatalogueEntry>,
}

impl Catalogue {
    /// Parse a catalogue document, plain or signed; the error says where the JSON is wrong, or
    /// which format it has. Input larger than [`MAX_CATALOGUE_BYTES`] is refused before it is
    /// parsed. A signed one's payload is read **without checking the signature**: a device
    /// with a catalogue key uses [`signed::verify`] instead.
    pub fn from_json(bytes: &[u8]) -> Result<Catalogue, String> {
        signed::read_document(bytes).map(signed::Document::into_catalogue)
    }

    /// Parse a plain catalogue (not an envelope).
    pub(crate) fn parse_plain(bytes: &[u8]) -> Result<Catalogue, String> {
        if bytes.len() > MAX_CATALOGUE_BYTES {
            return Err(format!(
                "catalogue of {} bytes is larger than {} bytes",
                bytes.len(),
                MAX_CATALOGUE_BYTES
            ));
        }
        let c: Catalogue = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if c.format != CATALOGUE_FORMAT {
            return Err(format!(
                "catalogue format {} is not supported (expected {})",
                c.format, CATALOGUE_FORMAT
            ));
        }
        Ok(c)
    }

    /// The catalogue as pretty-printed JSON, as `ota serve` publishes it.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// Why no image could be picked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PickError {
    /// No valid app entry for this chip and project.
    NoImage {
        chip: String,
        project: String,
        /// Valid apps for other chips or projects.
        others: usize,
        /// Entries for this chip and project that carry an error.
        corrupt: usize,
    },
    /// Images exist, but none has a version the policy can order.
    NoVersion { policy: VersionPolicy, count: usize },
}

impl fmt::Display for PickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickError::NoImage {
                chip,
                project,
                others,
                corrupt,
            } => write!(
                f,
                "no valid app image for chip {chip}, project {project} \
                 ({others} valid images for other chips/projects, {corrupt} corrupt for this one)"
            ),
            PickError::NoVersion { policy, count } => write!(
                f,
                "{count} images match, but none has a version that version_check = \"{policy}\" accepts"
            ),
        }
    }
}

fn parses(policy: VersionPolicy, v: &str) -> bool {
    match policy {
        VersionPolicy::Newer => version::adf_version_number(v).is_some(),
        VersionPolicy::Semver | VersionPolicy::None => version::semver_parses(v),
    }
}

/// Order two versions under a policy (both parse under it).
fn order(policy: VersionPolicy, a: &str, b: &str) -> Ordering {
    match policy {
        VersionPolicy::Newer => version::adf_version_number(a).cmp(&version::adf_version_number(b)),
        VersionPolicy::Semver | VersionPolicy::None => {
            version::compare_semver(a, b).unwrap_or(Ordering::Equal)
        }
    }
}

/// The newest valid app image for `chip` and `project`.
///
/// * `newer`: only `vX.Y.Z` versions (ADF's rule) count, ordered numerically;
/// * `semver`: only versions [`version::compare_semver`] parses count, in its order;
/// * `none`: ordered like `semver`, but versions it cannot parse are kept and rank lowest.
///
/// Ties go to the greatest path, so the choice is deterministic. Entries with an `error` are
/// never picked.
pub fn pick<'a>(
    cat: &'a Catalogue,
    chip: &str,
    project: &str,
    policy: VersionPolicy,
) -> Result<&'a CatalogueEntry, PickError> {
    let valid = |e: &&CatalogueEntry| e.kind == EntryKind::App && e.error.is_none();
    let mine = |e: &&CatalogueEntry| {
        e.chip.as_deref() == Some(chip) && e.project.as_deref() == Some(project)
    };
    let candidates: Vec<&CatalogueEntry> = cat.entries.iter().filter(valid).filter(mine).collect();
    if candidates.is_empty() {
        return Err(PickError::NoImage {
            chip: chip.to_string(),
            project: project.to_string(),
            others: cat.entries.iter().filter(valid).count(),
            corrupt: cat
                .entries
                .iter()
                .filter(mine)
                .filter(|e| e.error.is_some())
                .count(),
        });
    }
    let count = candidates.len();
    let ver = |e: &CatalogueEntry| e.version.clone().unwrap_or_default();
    let ranked = candidates
        .into_iter()
        .filter(|e| policy == VersionPolicy::None || parses(policy, &ver(e)))
        .max_by(|a, b| {
            let (va, vb) = (ver(a), ver(b));
            let (pa, pb) = (parses(policy, &va), parses(policy, &vb));
            pa.cmp(&pb)
                .then_with(|| {
                    if pa && pb {
                        order(policy, &va, &vb)
                    } else {
                        Ordering::Equal
                    }
                })
                .then_with(|| a.path.cmp(&b.path))
        });
    ranked.ok_or(PickError::NoVersion { policy, count })
}

/// Parse a 64-digit hex SHA-256 (an entry's `sha256`; either case).
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != SHA256_HEX_DIGITS {
        return None;
    }
    // Digits only: `u8::from_str_radix` alone would also take a sign (`+a`).
    if !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let s = core::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}
