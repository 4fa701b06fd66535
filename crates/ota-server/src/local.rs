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
    hashes: HashCache,
}

impl LocalDir {
    /// `root` must exist and be a folder; it is canonicalised once here.
    pub fn new(root: &Path) -> io::Result<LocalDir> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a folder", root.display()),
            ));
        }
        Ok(LocalDir {
            root,
            hashes: HashCache::default(),
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

    /// The SHA-256 of this version of the file, computed at most once per version.
    pub async fn sha256(&self, f: &OpenFile) -> Result<[u8; 32], String> {
        self.hashes.get(f).await
    }
}

type HashCell = OnceCell<Result<[u8; 32], String>>;

/// SHA-256 per (path, version): the strong ETag of a file, computed once per version even when
/// many requests for a new version arrive at once.
#[derive(Default)]
pub struct HashCache {
    map: Mutex<HashMap<PathBuf, (FileVersion, Arc<HashCell>)>>,
}

impl HashCache {
    pub async fn get(&self, f: &OpenFile) -> Result<[u8; 32], String> {
        let cell = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&f.path) {
                Some((v, cell)) if *v == f.version => cell.clone(),
                _ => {
                    let cell = Arc::new(HashCell::new());
                    map.insert(f.path.clone(), (f.version, cell.clone()));
                    cell
                }
            }
        };
        let file = f.file.clone();
        let version = f.version;
        let path = f.path.clone();
        cell.get_or_init(|| async move {
            tokio::task::spawn_blocking(move || hash_open_file(&file, version, &path))
                .await
                .unwrap_or_else(|e| Err(format!("hashing task failed: {e}")))
        })
        .await
        .clone()
    }
}

/// SHA-256 of an open file; fails if the file changes while it is read.
fn hash_open_file(file: &File, version: FileVersion, path: &Path) -> Result<[u8; 32], String> {
    let mut sha = Sha256::new();
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
        off += n as u64;
    }
    let now = file
        .metadata()
        .map(|m| FileVersion::of(&m))
        .map_err(|e| format!("stat {}: {e}", path.display()))?;
    if now != version || off != version.size {
        return Err(format!("{} changed while it was hashed", path.display()));
    }
    Ok(sha.finalize().into())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
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
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
