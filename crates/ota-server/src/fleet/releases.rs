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
