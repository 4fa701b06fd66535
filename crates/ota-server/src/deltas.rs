//! Delta patches for a folder catalogue: for each chip and project, patches from the previous
//! `bases` versions to the newest, made with `ota-delta` (detools sequential, heatshrink 8/7,
//! behind the esp_delta_ota header: what espressif/idf-extra-components `esp_delta_ota`
//! applies), written content-addressed under [`DELTA_DIR`] (`<sha256>.patch`) and listed in
//! the newest entry's `deltas`. Each pair is made once per server run and kept.

use std::collections::HashMap;
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
const MAX_IMAGE: u64 = ota_delta::MAX_INPUT_LEN as u64;

/// Makes and remembers the patches of one served folder.
pub struct DeltaMaker {
    root: PathBuf,
    bases: usize,
    /// (base file sha256, target file sha256) -> the patch, or why none could be made.
    made: HashMap<(String, String), Result<DeltaPatch, String>>,
    /// Patches made so far (not counting those found in the cache).
    pub patches_made: u64,
}

impl DeltaMaker {
    /// Patches from the `bases` previous versions (0: none) for the folder `root`.
    pub fn new(root: PathBuf, bases: usize) -> DeltaMaker {
        DeltaMaker {
            root,
            bases,
            made: HashMap::new(),
            patches_made: 0,
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
        let mut groups: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if let (EntryKind::App, None, Some(c), Some(p), Some(_)) =
                (e.kind, &e.error, &e.chip, &e.project, &e.version)
            {
                groups.entry((c.clone(), p.clone())).or_default().push(i);
            }
        }
        for (_, mut idx) in groups {
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
            let Some(&newest) = idx.last() else { continue };
            let mut deltas = Vec::new();
            let mut seen = Vec::new();
            for &old in idx[..idx.len() - 1].iter().rev() {
                if deltas.len() >= self.bases {
                    break;
                }
                let (base, target) = (&entries[old], &entries[newest]);
                if base.sha256 == target.sha256 || seen.contains(&base.sha256) {
                    continue;
                }
                seen.push(base.sha256.clone());
                let key = (base.sha256.clone(), target.sha256.clone());
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
            entries[newest].deltas = deltas;
        }
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
        // The device's base is the image proper (segments, checksum, appended hash) as read
        // from its slot: padding after it in the file is not part of it.
        let mut v = ImageVerifier::new();
        v.set_strict(false);
        v.feed(&old).map_err(|e| format!("{}: {e}", base.path))?;
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
        let patch = ota_delta::make(old, &new, &opts)
            .map_err(|e| format!("{} -> {}: {e}", base.path, target.path))?;
        let sha = Hex(&Sha256::digest(&patch)).to_string();
        let dir = self.root.join(DELTA_DIR);
        let file = dir.join(format!("{sha}.patch"));
        write_once(&dir, &file, &patch).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(DeltaPatch {
            path: format!("/{DELTA_DIR}/{sha}.patch"),
            size: patch.len() as u64,
            sha256: sha,
            base_sha256: Hex(&base_sha).to_string(),
            base_version: base.version.clone(),
            target_sha256: target.sha256.clone(),
            compression: opts.compression.name().to_string(),
        })
    }
}

/// Write a content-addressed file unless it is already there with the same bytes: written to
/// a temporary name and renamed, so a reader never sees half a patch.
fn write_once(dir: &Path, file: &Path, bytes: &[u8]) -> io::Result<()> {
    if fs::read(file).is_ok_and(|b| b == bytes) {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, file)
}
