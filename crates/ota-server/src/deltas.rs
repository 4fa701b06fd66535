//! Delta patches: for each chip and project, patches from the previous `bases` versions to the
//! newest, made with `ota-delta` (detools sequential, heatshrink 8/7, behind the esp_delta_ota
//! header: what espressif/idf-extra-components `esp_delta_ota` applies) and listed in the
//! newest entry's `deltas`. [`plan`] picks the pairs and [`make_patch`] makes a patch for every
//! store; [`DeltaMaker`] writes a folder's content-addressed under [`DELTA_DIR`]
//! (`<sha256>.patch`), each pair once per server run, and `ota publish` uploads an S3 store's
//! ([`crate::s3::S3Store::publish`]).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ota_catalogue::{CatalogueEntry, DeltaPatch, EntryKind};
use ota_core::image::{Hex, ImageVerifier};
use sha2::{Digest, Sha256};

use crate::local::relative_path;

/// The folder (under the served root) the patches are written to; hidden, so the catalogue's
/// walk does not list them as images, but served like any other file.
pub const DELTA_DIR: &str = ".ota-delta";
/// How many previous versions get a patch to the newest by default (`ota serve --delta-bases`).
pub const DEFAULT_DELTA_BASES: usize = 3;
/// The largest image a patch is made for (the patch maker's own bound).
pub const MAX_IMAGE: u64 = ota_delta::MAX_INPUT_LEN as u64;

/// Makes and remembers the patches of one served folder.
pub struct DeltaMaker {
    root: PathBuf,
    bases: usize,
    /// (base file sha256, target file sha256) -> the patch, or why none could be made.
    made: HashMap<(String, String), Result<DeltaPatch, String>>,
    /// Patches made so far (not counting those found in the cache).
    pub patches_made: u64,
    /// The patch files the current catalogue lists (None before the first).
    listed: Option<HashSet<String>>,
}

impl DeltaMaker {
    /// Patches from the `bases` previous versions (0: none) for the folder `root`.
    pub fn new(root: PathBuf, bases: usize) -> DeltaMaker {
        DeltaMaker {
            root,
            bases,
            made: HashMap::new(),
            patches_made: 0,
            listed: None,
        }
    }

    /// Fill `deltas` of the newest app of every chip and project (and clear everybody else's).
    pub fn attach(&mut self, entries: &mut [CatalogueEntry]) {
        for e in entries.iter_mut() {
            e.deltas.clear();
        }
        if self.bases == 0 {
            return;
        }
        // The pairs of this catalogue: the cache keeps only them.
        let mut pairs = HashSet::new();
        for plan in plan(entries) {
            let mut deltas = Vec::new();
            for &old in &plan.bases {
                if deltas.len() >= self.bases {
                    break;
                }
                let (base, target) = (&entries[old], &entries[plan.target]);
                let key = (base.sha256.clone(), target.sha256.clone());
                pairs.insert(key.clone());
                if !self.made.contains_key(&key) {
                    let r = self.make(base, target);
                    if r.is_ok() {
                        self.patches_made += 1;
                    }
                    self.made.insert(key.clone(), r);
                }
                if let Some(Ok(p)) = self.made.get(&key) {
                    deltas.push(p.clone());
                }
            }
            entries[plan.target].deltas = deltas;
        }
        let now: HashSet<String> = entries
            .iter()
            .flat_map(|e| e.deltas.iter())
            .filter_map(|d| {
                d.path
                    .strip_prefix(&format!("/{DELTA_DIR}/"))
                    .map(str::to_string)
            })
            .collect();
        self.made.retain(|k, _| pairs.contains(k));
        self.prune(now);
    }

    /// Delete the superseded patch files of [`DELTA_DIR`] (`<64 hex>.patch`, the names this
    /// maker writes; nothing else there is touched): those neither the new catalogue nor the
    /// one before it lists, so that a device that fetched the previous catalogue can still
    /// download its patch. At the first catalogue of a run the files already there count as
    /// the previous one's (a device may hold the catalogue of the server's last run).
    fn prune(&mut self, now: HashSet<String>) {
        if self.listed.as_ref() == Some(&now) {
            return;
        }
        let dir = self.root.join(DELTA_DIR);
        let existing: Vec<String> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|d| d.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|d| d.file_name().into_string().ok())
            .filter(|n| is_patch_name(n))
            .collect();
        let previous = match self.listed.take() {
            Some(l) => l,
            None => existing.iter().cloned().collect(),
        };
        for name in existing {
            if !now.contains(&name) && !previous.contains(&name) {
                let _ = fs::remove_file(dir.join(&name));
            }
        }
        self.listed = Some(now);
    }

    /// Why the patch for a pair could not be made (for logs and tests), if it was tried.
    pub fn failure(&self, base_sha256: &str, target_sha256: &str) -> Option<&str> {
        match self
            .made
            .get(&(base_sha256.to_string(), target_sha256.to_string()))
        {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }

    fn read(&self, e: &CatalogueEntry) -> Result<Vec<u8>, String> {
        if e.size > MAX_IMAGE {
            return Err(format!("{}: {} bytes, over {MAX_IMAGE}", e.path, e.size));
        }
        let rel = relative_path(&e.path).map_err(|err| format!("{}: {err}", e.path))?;
        let bytes = fs::read(self.root.join(rel)).map_err(|err| format!("{}: {err}", e.path))?;
        // The file must still be the one the entry describes.
        let sha = Hex(&Sha256::digest(&bytes)).to_string();
        if sha != e.sha256 {
            return Err(format!("{}: changed since it was analysed", e.path));
        }
        Ok(bytes)
    }

    fn make(&self, base: &CatalogueEntry, target: &CatalogueEntry) -> Result<DeltaPatch, String> {
        let old = self.read(base)?;
        let new = self.read(target)?;
        let made = make_patch(base, &old, target, &new)?;
        let dir = self.root.join(DELTA_DIR);
        let file = dir.join(format!("{}.patch", made.listing.sha256));
        write_once(&dir, &file, &made.bytes).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(DeltaPatch {
            path: format!("/{DELTA_DIR}/{}.patch", made.listing.sha256),
            ..made.listing
        })
    }
}

/// One chip and project's patches to make: its newest valid app and the older entries that
/// may serve as bases, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaPlan {
    /// Index of the newest app (the patches' target).
    pub target: usize,
    /// Indices of the older apps, newest first; each content once, none equal to the target.
    /// The caller takes patches from the first ones until it has as many as it wants (a base
    /// whose patch cannot be made gives way to the next).
    pub bases: Vec<usize>,
}

/// The patch plans of a catalogue: for each chip and project, its valid apps (kind app, no
/// error, with a version) ordered by version (semver, then path); the last is the target.
pub fn plan(entries: &[CatalogueEntry]) -> Vec<DeltaPlan> {
    let mut groups: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let (EntryKind::App, None, Some(c), Some(p), Some(_)) =
            (e.kind, &e.error, &e.chip, &e.project, &e.version)
        {
            groups.entry((c, p)).or_default().push(i);
        }
    }
    let mut plans: Vec<DeltaPlan> = groups
        .into_values()
        .filter_map(|mut idx| {
            idx.sort_by(|&a, &b| {
                let (a, b) = (&entries[a], &entries[b]);
                let (va, vb) = (
                    a.version.as_deref().unwrap_or(""),
                    b.version.as_deref().unwrap_or(""),
                );
                ota_core::version::compare_semver(va, vb)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| a.path.cmp(&b.path))
            });
            let target = idx.pop()?;
            let mut bases: Vec<usize> = Vec::new();
            for old in idx.into_iter().rev() {
                let sha = &entries[old].sha256;
                if *sha != entries[target].sha256
                    && !bases.iter().any(|&b| entries[b].sha256 == *sha)
                {
                    bases.push(old);
                }
            }
            Some(DeltaPlan { target, bases })
        })
        .collect();
    plans.sort_by_key(|p| p.target);
    plans
}

/// A patch made but not yet stored: its bytes and its catalogue listing, whose `path` the
/// store fills in.
pub struct MadePatch {
    pub bytes: Vec<u8>,
    pub listing: DeltaPatch,
}

/// The patch from `old` (the bytes of entry `base`) to `new` (those of `target`), as every
/// store makes it: detools sequential, heatshrink 8/7, behind the esp_delta_ota header. The
/// bytes must already be checked against their entries' `sha256`.
pub fn make_patch(
    base: &CatalogueEntry,
    old: &[u8],
    target: &CatalogueEntry,
    new: &[u8],
) -> Result<MadePatch, String> {
    // The device's base is the image proper (segments, checksum, appended hash) as read
    // from its slot: padding after it in the file is not part of it.
    let mut v = ImageVerifier::new();
    v.set_strict(false);
    v.feed(old).map_err(|e| format!("{}: {e}", base.path))?;
    let image_len = v
        .summary()
        .ok_or_else(|| format!("{}: the image ends early", base.path))?
        .image_len as usize;
    let old = &old[..image_len.min(old.len())];
    let base_sha = ota_delta::base_digest(old).map_err(|e| format!("{}: {e}", base.path))?;
    let opts = ota_delta::Options {
        compression: ota_delta::Compression::Heatshrink,
        esp_header: true,
    };
    let patch = ota_delta::make(old, new, &opts)
        .map_err(|e| format!("{} -> {}: {e}", base.path, target.path))?;
    let sha = Hex(&Sha256::digest(&patch)).to_string();
    Ok(MadePatch {
        listing: DeltaPatch {
            path: String::new(),
            size: patch.len() as u64,
            sha256: sha,
            base_sha256: Hex(&base_sha).to_string(),
            base_version: base.version.clone(),
            target_sha256: target.sha256.clone(),
            compression: opts.compression.name().to_string(),
        },
        bytes: patch,
    })
}

/// Write a content-addressed file unless it is already there with the same bytes: written to
/// a temporary name and renamed, so a reader never sees half a patch.
/// `<64 lowercase hex>.patch`: the name of a patch file or object this crate writes (the
/// patch's SHA-256).
pub(crate) fn is_patch_name(n: &str) -> bool {
    n.strip_suffix(".patch")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn write_once(dir: &Path, file: &Path, bytes: &[u8]) -> io::Result<()> {
    if fs::read(file).is_ok_and(|b| b == bytes) {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(path: &str, project: &str, version: &str, sha: &str) -> CatalogueEntry {
        let mut e = crate::catalogue::analyse(path, &b""[..]).unwrap();
        e.kind = EntryKind::App;
        e.error = None;
        e.chip = Some("esp32".into());
        e.project = Some(project.into());
        e.version = Some(version.into());
        e.sha256 = sha.into();
        e
    }

    #[test]
    fn plan_targets_the_newest_of_each_project_with_older_distinct_bases_newest_first() {
        let mut broken = app("/e.bin", "a", "v9.0.0", "9");
        broken.error = Some("bad checksum".into());
        let entries = vec![
            app("/a.bin", "a", "v1.10.0", "3"),
            app("/b.bin", "a", "v1.2.0", "2"),
            app("/c.bin", "a", "v1.9.0", "2"), // same content as b: one base
            app("/d.bin", "a", "v1.0.0", "3"), // same content as the target: none
            broken,                            // invalid: never a target
            app("/f.bin", "b", "v0.1.0", "5"),
        ];
        let plans = plan(&entries);
        assert_eq!(
            plans,
            vec![
                DeltaPlan {
                    target: 0,
                    bases: vec![2]
                },
                DeltaPlan {
                    target: 5,
                    bases: vec![]
                },
            ]
        );
    }
}
