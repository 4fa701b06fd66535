//! The folder back-end: safe mapping of URL paths to files under the served folder, file
//! versions (size, mtime, inode), the SHA-256 of each version computed once and cached, and a
//! streaming body that reads the open file in chunks and notices when it changes underneath.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

/// Bytes read from a file per body frame (and per hashing read).
pub const CHUNK: usize = 128 * 1024;

/// Why a URL path cannot name a file under the served folder.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path `{0}` is not valid percent-encoded UTF-8")]
    BadEncoding(String),
    #[error("path `{0}` tries to leave the served folder")]
    Traversal(String),
    #[error("path `{0}` contains a NUL or backslash")]
    BadChar(String),
}

/// The relative path a URL path names, after percent-decoding: only normal segments, so it can
/// be joined to the root. `..` (raw or `%2e%2e`), absolute paths (`//etc`, `/%2fetc`) and
/// backslashes are refused; `.` and empty segments between slashes are dropped.
pub fn relative_path(url_path: &str) -> Result<PathBuf, PathError> {
    let decoded = percent_encoding::percent_decode_str(url_path)
        .decode_utf8()
        .map_err(|_| PathError::BadEncoding(url_path.to_string()))?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err(PathError::BadChar(url_path.to_string()));
    }
    let rest = decoded
        .strip_prefix('/')
        .ok_or_else(|| PathError::Traversal(url_path.to_string()))?;
    if rest.starts_with('/') {
        // `//etc/passwd` or `/%2fetc/passwd`: an absolute path in disguise.
        return Err(PathError::Traversal(url_path.to_string()));
    }
    let mut rel = PathBuf::new();
    for comp in Path::new(rest).components() {
        match comp {
            Component::Normal(c) => rel.push(c),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(PathError::Traversal(url_path.to_string()))
            }
        }
    }
    Ok(rel)
}

/// One version of a file: what changes when it is rewritten, replaced or touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileVersion {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl FileVersion {
    pub fn of(meta: &std::fs::Metadata) -> FileVersion {
        FileVersion {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// An open file under the root, with the version it had when opened.
pub struct OpenFile {
    pub file: Arc<File>,
    pub path: PathBuf,
    pub version: FileVersion,
    pub modified: Option<SystemTime>,
}

/// Why a file could not be opened for a request.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("not found")]
    NotFound,
    #[error("symbolic link `{0}` points outside the served folder")]
    Outside(String),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// The served folder.
pub struct LocalDir {
    root: PathBuf,
    cache: VersionCache,
}

impl LocalDir {
    /// `root` must exist and be a folder; it is canonicalised once here.
    pub fn new(root: &Path, limits: CacheLimits) -> io::Result<LocalDir> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a folder", root.display()),
            ));
        }
        Ok(LocalDir {
            root,
            cache: VersionCache::new(limits),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolve a relative path to a canonical path inside the root (symlinks followed and
    /// refused when they lead outside). Blocking: call from a blocking context.
    pub fn resolve(&self, rel: &Path) -> Result<PathBuf, OpenError> {
        let joined = self.root.join(rel);
        let canon = match joined.canonicalize() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::NotFound),
            Err(e) if e.raw_os_error() == Some(20) => return Err(OpenError::NotFound), // ENOTDIR
            Err(e) => return Err(OpenError::Io(e)),
        };
        if !canon.starts_with(&self.root) {
            return Err(OpenError::Outside(rel.display().to_string()));
        }
        Ok(canon)
    }

    /// Open the regular file a URL path names. Blocking.
    pub fn open(&self, url_path: &str) -> Result<OpenFile, OpenError> {
        let rel = relative_path(url_path)?;
        let path = self.resolve(&rel)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::NotFound),
            Err(e) => return Err(OpenError::Io(e)),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(OpenError::NotFound);
        }
        Ok(OpenFile {
            file: Arc::new(file),
            path,
            version: FileVersion::of(&meta),
            modified: meta.modified().ok(),
        })
    }

    /// The SHA-256 (and maybe the bytes) of this version of the file, read at most once per
    /// version.
    pub async fn facts(&self, f: &OpenFile) -> Result<Arc<Facts>, String> {
        self.cache.get(f).await
    }

    pub fn cache(&self) -> &VersionCache {
        &self.cache
    }
}

/// What is known about one version of a file: its SHA-256 and, for files small enough, its
/// bytes (shared by every response for that version, so serving it costs no file read).
pub struct Facts {
    pub sha256: [u8; 32],
    pub content: Option<Bytes>,
}

/// Per-file cache limits: files up to `max_file` bytes are kept in memory while the total stays
/// under `budget` (least recently used versions are dropped first).
#[derive(Clone, Copy, Debug)]
pub struct CacheLimits {
    pub max_file: u64,
    pub budget: u64,
}

/// Default limits: app images are at most 16 MiB (the largest app partition on ESP32 flash).
pub const DEFAULT_CACHE: CacheLimits = CacheLimits {
    max_file: 16 << 20,
    budget: 256 << 20,
};

type FactsCell = OnceCell<Result<Arc<Facts>, String>>;

struct Slot {
    version: FileVersion,
    cell: Arc<FactsCell>,
    last_used: u64,
    cached: u64,
}

/// [`Facts`] per (path, version): the strong ETag of a file and possibly its bytes, computed
/// once per version even when many requests for a new version arrive at once.
pub struct VersionCache {
    limits: CacheLimits,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<PathBuf, Slot>,
    tick: u64,
    total: u64,
}

impl VersionCache {
    pub fn new(limits: CacheLimits) -> VersionCache {
        VersionCache {
            limits,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn get(&self, f: &OpenFile) -> Result<Arc<Facts>, String> {
        let (cell, keep) = {
            let mut g = self.lock();
            g.tick += 1;
            let tick = g.tick;
            let fresh = match g.map.get_mut(&f.path) {
                Some(slot) if slot.version == f.version => {
                    slot.last_used = tick;
                    None
                }
                _ => Some(Arc::new(FactsCell::new())),
            };
            match fresh {
                None => (g.map[&f.path].cell.clone(), false),
                Some(cell) => {
                    let keep = f.version.size <= self.limits.max_file;
                    if let Some(old) = g.map.insert(
                        f.path.clone(),
                        Slot {
                            version: f.version,
                            cell: cell.clone(),
                            last_used: tick,
                            cached: 0,
                        },
                    ) {
                        g.total -= old.cached;
                    }
                    (cell, keep)
                }
            }
        };
        let file = f.file.clone();
        let version = f.version;
        let path = f.path.clone();
        let facts = cell
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || read_facts(&file, version, &path, keep))
                    .await
                    .unwrap_or_else(|e| Err(format!("hashing task failed: {e}")))
                    .map(Arc::new)
            })
            .await
            .clone()?;
        if keep && facts.content.is_some() {
            self.account(&f.path, f.version, version.size);
        }
        Ok(facts)
    }

    /// Count a newly cached version once, then drop least recently used contents over budget.
    fn account(&self, path: &Path, version: FileVersion, size: u64) {
        let mut g = self.lock();
        let counted = match g.map.get_mut(path) {
            Some(slot) if slot.version == version && slot.cached == 0 => {
                slot.cached = size;
                true
            }
            _ => false,
        };
        if !counted {
            return;
        }
        g.total += size;
        while g.total > self.limits.budget {
            let victim = g
                .map
                .iter()
                .filter(|(_, s)| s.cached > 0)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(p, _)| p.clone());
            match victim.and_then(|p| g.map.remove(&p)) {
                Some(s) => g.total -= s.cached,
                None => break,
            }
        }
    }

    /// Bytes of file contents held.
    pub fn cached_bytes(&self) -> u64 {
        self.lock().total
    }
}

/// Read an open file once: SHA-256, and the bytes when `keep`. Fails if the file changes
/// while it is read.
fn read_facts(file: &File, version: FileVersion, path: &Path, keep: bool) -> Result<Facts, String> {
    let mut sha = Sha256::new();
    let mut content = if keep {
        Vec::with_capacity(version.size as usize)
    } else {
        Vec::new()
    };
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, off)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        if keep {
            content.extend_from_slice(&buf[..n]);
        }
        off += n as u64;
        if off > version.size {
            break;
        }
    }
    let now = file
        .metadata()
        .map(|m| FileVersion::of(&m))
        .map_err(|e| format!("stat {}: {e}", path.display()))?;
    if now != version || off != version.size {
        return Err(format!("{} changed while it was read", path.display()));
    }
    Ok(Facts {
        sha256: sha.finalize().into(),
        content: keep.then(|| Bytes::from(content)),
    })
}

/// A response body streaming `start..end` of an open file in [`CHUNK`]s, each read on the
/// blocking pool. Before the last chunk it checks that the file is still the version the
/// headers (ETag, length) describe; if it changed or shrank, the body fails, so the client sees
/// a broken transfer instead of silently mixed bytes.
pub struct FileBody {
    file: Arc<File>,
    version: FileVersion,
    pos: u64,
    end: u64,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    pub fn new(f: &OpenFile, start: u64, end_exclusive: u64) -> FileBody {
        FileBody {
            file: f.file.clone(),
            version: f.version,
            pos: start,
            end: end_exclusive,
            pending: None,
        }
    }
}

fn read_chunk(
    file: &File,
    version: FileVersion,
    off: u64,
    want: usize,
    last: bool,
) -> io::Result<Bytes> {
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        let n = file.read_at(&mut buf[got..], off + got as u64)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank during the download",
            ));
        }
        got += n;
    }
    if last {
        let now = FileVersion::of(&file.metadata()?);
        if now != version {
            return Err(io::Error::other("the file changed during the download"));
        }
    }
    Ok(Bytes::from(buf))
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.pending.is_none() {
            if this.pos >= this.end {
                return Poll::Ready(None);
            }
            let want = (this.end - this.pos).min(CHUNK as u64) as usize;
            let last = this.pos + want as u64 >= this.end;
            let (file, version, off) = (this.file.clone(), this.version, this.pos);
            this.pending = Some(tokio::task::spawn_blocking(move || {
                read_chunk(&file, version, off, want, last)
            }));
        }
        let Some(handle) = this.pending.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(handle).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(res) => {
                this.pending = None;
                let res = res.unwrap_or_else(|e| Err(io::Error::other(e)));
                match res {
                    Ok(bytes) => {
                        this.pos += bytes.len() as u64;
                        Poll::Ready(Some(Ok(Frame::data(bytes))))
                    }
                    Err(e) => {
                        this.pos = this.end;
                        Poll::Ready(Some(Err(e)))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end.saturating_sub(self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_core::image::Hex;

    #[test]
    fn relative_path_accepts_plain_paths() {
        assert_eq!(relative_path("/a.bin").unwrap(), PathBuf::from("a.bin"));
        assert_eq!(
            relative_path("/fw/x%20y.bin").unwrap(),
            PathBuf::from("fw/x y.bin")
        );
        assert_eq!(relative_path("/./a//b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(relative_path("/").unwrap(), PathBuf::new());
    }

    #[test]
    fn relative_path_refuses_traversal_in_every_spelling() {
        for p in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/a/%2e%2e/%2e%2e/x",
            "//etc/passwd",
            "/%2fetc/passwd",
            "etc/passwd",
        ] {
            assert!(
                matches!(relative_path(p), Err(PathError::Traversal(_))),
                "{p}"
            );
        }
        assert!(matches!(
            relative_path("/a%5c..%5cb"),
            Err(PathError::BadChar(_))
        ));
        assert!(matches!(
            relative_path("/a%00b"),
            Err(PathError::BadChar(_))
        ));
        assert!(matches!(
            relative_path("/%ff%fe"),
            Err(PathError::BadEncoding(_))
        ));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(Hex(&[0x00, 0xab, 0x7f]).to_string(), "00ab7f");
    }
}
