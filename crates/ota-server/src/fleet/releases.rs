//! Releases: every valid app image of the folder's catalogue becomes a release (a hawkBit
//! distribution set with one software module and one artifact). DDI gives each artifact's
//! SHA-256, SHA-1 and MD5 (eclipse-hawkbit `hawkbit-ddi` `DdiArtifactHash`: `sha1`, `md5`,
//! `sha256`); the catalogue has only the SHA-256, so the file is read once and hashed when it
//! first appears, and kept only if its SHA-256 still matches the catalogue's.

use std::io::Read;
use std::path::{Path, PathBuf};

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use ota_catalogue::{Catalogue, EntryKind};

use super::auth::hex;
use super::store::{now_ms, Release, Store, StoreError};

/// Add the catalogue's app images that are not releases yet. Returns how many were added.
pub async fn sync(store: &Store, root: &Path, cat: &Catalogue) -> Result<usize, StoreError> {
    let mut added = 0;
    for e in &cat.entries {
        if e.kind != EntryKind::App || e.error.is_some() || !e.path.starts_with('/') {
            continue;
        }
        if store.has_release(&e.path, &e.sha256).await? {
            continue;
        }
        let file = root.join(e.path.trim_start_matches('/'));
        let Ok(Ok(Some((sha256, sha1, md5, size)))) =
            tokio::task::spawn_blocking(move || hash_file(&file)).await
        else {
            continue;
        };
        if sha256 != e.sha256 {
            // Changed since the catalogue was made: the next scan brings the new version.
            continue;
        }
        store
            .add_release(&Release {
                id: 0,
                path: e.path.clone(),
                sha256,
                sha1,
                md5,
                size: size as i64,
                chip: e.chip.clone(),
                project: e.project.clone(),
                version: e.version.clone(),
                secure_version: e.secure_version.map(i64::from),
                created_at: now_ms(),
            })
            .await?;
        added += 1;
    }
    Ok(added)
}

/// SHA-256, SHA-1, MD5 (hex) and size of a file; `None` when it is gone.
fn hash_file(path: &PathBuf) -> std::io::Result<Option<(String, String, String, u64)>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (mut a, mut b, mut c) = (Sha256::new(), Sha1::new(), Md5::new());
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        a.update(&buf[..k]);
        b.update(&buf[..k]);
        c.update(&buf[..k]);
        n += k as u64;
        if n > crate::catalogue::MAX_ANALYSED_BYTES {
            return Ok(None);
        }
    }
    Ok(Some((
        hex(&a.finalize()),
        hex(&b.finalize()),
        hex(&c.finalize()),
        n,
    )))
}

/// Why a file cannot become a release.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("release path {0:?}: expected a URL path of a file in the served folder, like /fw/update.swu")]
    Path(String),
    #[error("release path {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "release path {0}: not a regular file in the served folder (or larger than the bound)"
    )]
    NotFile(String),
    #[error("the server has no folder to take releases from (S3 store)")]
    NoFolder,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Make any file of the served folder a release (an `.swu` for SWUpdate, a tone bin, ...):
/// `path` is its URL path; project, version and chip are what the operator says.
pub async fn add_file(
    store: &Store,
    root: Option<&Path>,
    path: &str,
    project: Option<String>,
    version: Option<String>,
    chip: Option<String>,
) -> Result<Release, AddError> {
    let root = root.ok_or(AddError::NoFolder)?;
    let rel = path
        .strip_prefix('/')
        .ok_or_else(|| AddError::Path(path.into()))?;
    if rel.is_empty()
        || path.len() > 1024
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\\'))
    {
        return Err(AddError::Path(path.into()));
    }
    let file = root.join(rel);
    let (root_c, file_c) = (root.canonicalize(), file.canonicalize());
    let io = |source| AddError::Io {
        path: path.into(),
        source,
    };
    let (root_c, file_c) = (root_c.map_err(io)?, file_c.map_err(io)?);
    if !file_c.starts_with(&root_c) || !file_c.is_file() {
        return Err(AddError::NotFile(path.into()));
    }
    let hashed = tokio::task::spawn_blocking(move || hash_file(&file_c))
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)?;
    let Some((sha256, sha1, md5, size)) = hashed else {
        return Err(AddError::NotFile(path.into()));
    };
    let r = Release {
        id: 0,
        path: path.into(),
        sha256,
        sha1,
        md5,
        size: size as i64,
        chip,
        project,
        version,
        secure_version: None,
        created_at: now_ms(),
    };
    store.add_release(&r).await?;
    let found = store
        .release_by_file(&r.path, &r.sha256)
        .await?
        .ok_or_else(|| AddError::NotFile(path.into()))?;
    Ok(found)
}
