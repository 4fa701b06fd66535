//! The folder back-end: safe mapping of URL paths to files under the served folder, file
//! versions (size, mtime, ctime, inode), the SHA-256 of each version computed once and cached,
//! and a streaming body that reads the open file in chunks and notices when it changes
//! underneath.
//!
//! Only regular files are ever opened: FIFOs, sockets and device nodes (or links to them) are
//! refused from their metadata, and the inode is pinned with `O_PATH` and checked before it is
//! opened for reading ([`open_regular`]), so a file swapped for a FIFO or a device between the
//! check and the open can neither block a thread nor be opened.
//!
//! A file rewritten in place can keep its size and timestamps: Linux stamps writes from a
//! coarse clock, so two writes within one tick (or the stamp of a write whose bytes are still
//! being copied) look identical to `fstat`. A read is therefore trusted only when it started
//! more than [`racy_margin`] after the file's last change (git's "racy clean" rule): from then
//! on any write moves the ctime, which the check after the read sees. Small files are served
//! from the very bytes that were hashed; large files are hashed again while they stream and the
//! transfer is cut if the bytes sent do not match the ETag.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

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
    #[error("path is too long: {0}")]
    TooLong(String),
    #[error("path `{0}` tries to leave the served folder")]
    Traversal(String),
    #[error("path `{0}` contains a NUL or backslash")]
    BadChar(String),
}

/// Longest file name component Linux accepts (`NAME_MAX`, linux/limits.h).
pub const NAME_MAX: usize = 255;
/// Longest path Linux accepts (`PATH_MAX`, linux/limits.h, terminating NUL included).
pub const PATH_MAX: usize = 4096;

/// Shorten a URL path for messages (it may be up to the head limit long).
fn shown(url_path: &str) -> String {
    const SHOW: usize = 80;
    match url_path.char_indices().nth(SHOW) {
        Some((i, _)) => format!("{}… ({} bytes)", &url_path[..i], url_path.len()),
        None => url_path.to_string(),
    }
}

/// The relative path a URL path names, after percent-decoding: only normal segments, so it can
/// be joined to the root. `..` (raw or `%2e%2e`), absolute paths (`//etc`, `/%2fetc`) and
/// backslashes are refused; `.` and empty segments between slashes are dropped. A segment
/// longer than [`NAME_MAX`] bytes or a path longer than [`PATH_MAX`] is [`PathError::TooLong`].
pub fn relative_path(url_path: &str) -> Result<PathBuf, PathError> {
    let decoded = percent_encoding::percent_decode_str(url_path)
        .decode_utf8()
        .map_err(|_| PathError::BadEncoding(shown(url_path)))?;
    if decoded.len() >= PATH_MAX {
        return Err(PathError::TooLong(format!(
            "{} bytes decoded, the limit is {} (PATH_MAX)",
            decoded.len(),
            PATH_MAX - 1
        )));
    }
    if let Some(seg) = decoded.split('/').find(|seg| seg.len() > NAME_MAX) {
        return Err(PathError::TooLong(format!(
            "a segment of {} bytes, the limit is {} (NAME_MAX)",
            seg.len(),
            NAME_MAX
        )));
    }
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err(PathError::BadChar(shown(url_path)));
    }
    let rest = decoded
        .strip_prefix('/')
        .ok_or_else(|| PathError::Traversal(shown(url_path)))?;
    if rest.starts_with('/') {
        // `//etc/passwd` or `/%2fetc/passwd`: an absolute path in disguise.
        return Err(PathError::Traversal(shown(url_path)));
    }
    let mut rel = PathBuf::new();
    for comp in Path::new(rest).components() {
        match comp {
            Component::Normal(c) => rel.push(c),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(PathError::Traversal(shown(url_path)))
            }
        }
    }
    Ok(rel)
}

/// One version of a file: what changes when it is rewritten, replaced or touched. The ctime is
/// part of it because every write and every `utimes` moves it (an mtime can be put back, a
/// ctime cannot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileVersion {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl FileVersion {
    pub fn of(meta: &std::fs::Metadata) -> FileVersion {
        FileVersion {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// How long after a file's last change a read of it can be trusted to see one version, on a
/// filesystem with sub-second timestamps: Linux stamps inodes from the coarse clock
/// (`current_time()`, include/linux/fs.h), at most one tick (10 ms at HZ=100) behind; exFAT
/// keeps 10 ms.
pub const RACY_MARGIN_FINE: Duration = Duration::from_millis(50);
/// The same on filesystems whose timestamps are whole seconds (FAT keeps the mtime in 2 s
/// units; ext3 with 128-byte inodes, HFS+: 1 s). Recognised by both nanosecond fields being 0.
pub const RACY_MARGIN_COARSE: Duration = Duration::from_secs(2);
/// A file that keeps changing for this long is answered with 503 and `Retry-After`.
pub const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(5);
/// Reads of one version that came out different before it is given up as changing.
const SNAPSHOT_ATTEMPTS: u32 = 20;

/// The margin for this version's timestamps (see [`RACY_MARGIN_FINE`]).
pub fn racy_margin(v: &FileVersion) -> Duration {
    if v.ctime_ns % 1_000_000_000 == 0 && v.mtime_ns % 1_000_000_000 == 0 {
        RACY_MARGIN_COARSE
    } else {
        RACY_MARGIN_FINE
    }
}

/// How long to wait before a read of `v` can be trusted at `now`: zero when both its ctime and
/// its mtime are more than the margin away from `now` (a write from now on stamps both with
/// the current time, so it cannot leave them as they are).
pub fn racy_wait(v: &FileVersion, now: SystemTime) -> Duration {
    let now_ns = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(_) => 0,
    };
    let margin = racy_margin(v).as_nanos() as i128;
    [v.ctime_ns, v.mtime_ns]
        .into_iter()
        .filter(|t| (t - now_ns).abs() < margin)
        .map(|t| Duration::from_nanos((t + margin - now_ns).clamp(0, 2 * margin) as u64))
        .max()
        .unwrap_or(Duration::ZERO)
}

/// Open `path` for reading only if it is a regular file, so that nothing else is ever opened,
/// even when the file is swapped between the checks: the metadata is checked first (links
/// followed); then the inode is pinned with `O_PATH | O_NOFOLLOW` (which opens nothing: no FIFO
/// wait, no device side effect) and checked again with `fstat`; then that very inode is opened
/// for reading through `/proc/self/fd`, with `O_NONBLOCK | O_NOCTTY`, and checked once more.
/// Without `/proc`, the path itself is opened with those flags and `O_NOFOLLOW` (a FIFO swapped
/// in then opens at once instead of waiting for a writer, and is refused). Anything that is not
/// a regular file is [`OpenError::NotRegular`].
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), OpenError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(path).map_err(OpenError::from_io)?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(kind_of(&meta)));
    }
    let pinned = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .map_err(OpenError::from_io)?;
    let want = pinned.metadata()?;
    if !want.is_file() {
        return Err(OpenError::NotRegular(kind_of(&want)));
    }
    let read_flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    let proc_link = PathBuf::from(format!("/proc/self/fd/{}", pinned.as_raw_fd()));
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(read_flags)
        .open(&proc_link)
    {
        Ok(f) => f,
        // No /proc here: open the path, non-blocking and without following links.
        Err(e) if e.kind() == io::ErrorKind::NotFound && !Path::new("/proc/self/fd").is_dir() => {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(read_flags | libc::O_NOFOLLOW)
                .open(path)
                .map_err(OpenError::from_io)?
        }
        Err(e) => return Err(OpenError::from_io(e)),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(kind_of(&meta)));
    }
    if (meta.dev(), meta.ino()) != (want.dev(), want.ino()) {
        return Err(OpenError::NotRegular("replaced while it was opened"));
    }
    Ok((file, meta))
}

/// What a non-regular file is, for messages.
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
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
    #[error("not a regular file ({0}): not served")]
    NotRegular(&'static str),
    #[error("permission denied")]
    Denied,
    #[error("symbolic link `{0}` points outside the served folder")]
    Outside(String),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl OpenError {
    /// Sort an error of `stat`/`open`/`canonicalize` by what it tells the client.
    pub fn from_io(e: io::Error) -> OpenError {
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => OpenError::NotFound,
            // A loop of links, or a link where O_NOFOLLOW found one (swapped in after the check).
            Some(libc::ELOOP) => OpenError::NotRegular("a symbolic link loop"),
            Some(libc::ENAMETOOLONG) => {
                OpenError::Path(PathError::TooLong("longer than the system allows".into()))
            }
            Some(libc::EACCES) | Some(libc::EPERM) => OpenError::Denied,
            // Opening a device node of a missing device, or similar: not something to serve.
            Some(libc::ENXIO) | Some(libc::ENODEV) => OpenError::NotRegular("a device node"),
            _ if e.kind() == io::ErrorKind::NotFound => OpenError::NotFound,
            _ => OpenError::Io(e),
        }
    }
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
        let canon = joined.canonicalize().map_err(OpenError::from_io)?;
        if !canon.starts_with(&self.root) {
            return Err(OpenError::Outside(rel.display().to_string()));
        }
        Ok(canon)
    }

    /// Open the regular file a URL path names ([`open_regular`]). Blocking.
    pub fn open(&self, url_path: &str) -> Result<OpenFile, OpenError> {
        let rel = relative_path(url_path)?;
        let path = self.resolve(&rel)?;
        if path.as_os_str().len() >= PATH_MAX {
            return Err(OpenError::Path(PathError::TooLong(format!(
                "{} bytes under the served folder, the limit is {} (PATH_MAX)",
                path.as_os_str().len(),
                PATH_MAX - 1
            ))));
        }
        let (file, meta) = open_regular(&path)?;
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

/// What is known about one version of a file, read in one go: the version it describes (it can
/// be newer than the one a request opened), its SHA-256 and, for files small enough, the very
/// bytes that were hashed (shared by every response for that version, so serving it costs no
/// file read and the body always matches the ETag).
pub struct Facts {
    pub version: FileVersion,
    pub modified: Option<SystemTime>,
    pub sha256: [u8; 32],
    pub content: Option<Bytes>,
    /// Set when a download found other bytes under this version (a rewrite that left the
    /// timestamps alone, e.g. through a shared mapping): the next request hashes it again.
    pub stale: std::sync::atomic::AtomicBool,
}

impl Facts {
    fn is_stale(&self) -> bool {
        self.stale.load(std::sync::atomic::Ordering::Relaxed)
    }
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
        let cell = {
            let mut g = self.lock();
            g.tick += 1;
            let tick = g.tick;
            let stale =
                |slot: &Slot| matches!(slot.cell.get(), Some(Ok(facts)) if facts.is_stale());
            match g.map.get_mut(&f.path) {
                Some(slot) if slot.version == f.version && !stale(slot) => {
                    slot.last_used = tick;
                    slot.cell.clone()
                }
                _ => {
                    let cell = Arc::new(FactsCell::new());
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
                    cell
                }
            }
        };
        let file = f.file.clone();
        let path = f.path.clone();
        let max_file = self.limits.max_file;
        let result = cell
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || snapshot(&file, &path, max_file))
                    .await
                    .unwrap_or_else(|e| Err(format!("hashing task failed: {e}")))
                    .map(Arc::new)
            })
            .await
            .clone();
        let mut g = self.lock();
        let ours = |slot: &Slot| Arc::ptr_eq(&slot.cell, &cell);
        match &result {
            // Errors are not remembered: the next request tries again.
            Err(_) => {
                if g.map.get(&f.path).is_some_and(ours) {
                    g.map.remove(&f.path);
                }
            }
            Ok(facts) => {
                let size = facts.content.as_ref().map_or(0, |b| b.len() as u64);
                let mut added = 0;
                if let Some(slot) = g.map.get_mut(&f.path).filter(|s| ours(s)) {
                    // The read may have found a newer version than the request opened: file it
                    // under the version it describes.
                    slot.version = facts.version;
                    if slot.cached == 0 && size > 0 {
                        slot.cached = size;
                        added = size;
                    }
                }
                if added > 0 {
                    g.total += added;
                    Self::evict(&mut g, self.limits.budget);
                }
            }
        }
        result
    }

    /// Drop least recently used contents while over budget.
    fn evict(g: &mut CacheInner, budget: u64) {
        while g.total > budget {
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

/// Why [`read_stable`] gave up.
#[derive(Debug)]
pub enum StableError {
    Io(io::Error),
    /// The file kept changing for [`SNAPSHOT_DEADLINE`] (or [`SNAPSHOT_ATTEMPTS`] reads).
    Changing,
}

/// Read one version of an open file from its start with `pass` (which gets the version and
/// reads through [`FileReader`]), so that the bytes `pass` saw are exactly that version's:
/// the read starts only once the version's last change is [`racy_wait`] old, and the metadata
/// after the read must be the same as before. Otherwise it waits or reads again, within
/// `deadline`. Blocking.
pub fn read_stable<T>(
    file: &File,
    deadline: Duration,
    mut pass: impl FnMut(&mut FileReader<'_>, &FileVersion) -> io::Result<T>,
) -> Result<(T, FileVersion, std::fs::Metadata), StableError> {
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        let meta = file.metadata().map_err(StableError::Io)?;
        let v0 = FileVersion::of(&meta);
        let wait = racy_wait(&v0, SystemTime::now());
        if !wait.is_zero() {
            if start.elapsed() + wait > deadline {
                return Err(StableError::Changing);
            }
            std::thread::sleep(wait);
            continue;
        }
        let mut reader = FileReader {
            file,
            pos: 0,
            // One byte past the size, so a file that grew is noticed.
            limit: v0.size.saturating_add(1),
        };
        let out = pass(&mut reader, &v0).map_err(StableError::Io)?;
        let read = reader.pos;
        let v1 = FileVersion::of(&file.metadata().map_err(StableError::Io)?);
        if v1 == v0 && read == v0.size {
            return Ok((out, v0, meta));
        }
        attempts += 1;
        if attempts >= SNAPSHOT_ATTEMPTS || start.elapsed() > deadline {
            return Err(StableError::Changing);
        }
    }
}

/// `Read` over an open file from offset 0 with positional reads, up to a limit.
pub struct FileReader<'a> {
    file: &'a File,
    pos: u64,
    limit: u64,
}

impl FileReader<'_> {
    /// Read until `buf` is full or the end: what a reader that wants whole chunks needs.
    pub fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match io::Read::read(self, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }
}

impl io::Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..room], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Hash one stable version of an open file ([`read_stable`]) and keep its bytes when it is at
/// most `max_file` long.
fn snapshot(file: &File, path: &Path, max_file: u64) -> Result<Facts, String> {
    let read = read_stable(file, SNAPSHOT_DEADLINE, |r, v| {
        let keep = v.size <= max_file;
        let mut sha = Sha256::new();
        let mut content = Vec::new();
        if keep {
            content.reserve_exact(v.size as usize);
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = r.fill(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            if keep {
                content.extend_from_slice(&buf[..n]);
            }
        }
        Ok((sha.finalize().into(), keep.then(|| Bytes::from(content))))
    });
    match read {
        Ok(((sha256, content), version, meta)) => Ok(Facts {
            version,
            modified: meta.modified().ok(),
            sha256,
            content,
            stale: Default::default(),
        }),
        Err(StableError::Io(e)) => Err(format!("reading {}: {e}", path.display())),
        Err(StableError::Changing) => Err(format!(
            "{} keeps changing (rewritten for {} s): try again later",
            path.display(),
            SNAPSHOT_DEADLINE.as_secs()
        )),
    }
}

/// A response body streaming `start..end` of an open file in [`CHUNK`]s, each read on the
/// blocking pool. Before the last chunk it checks that the file is still the version the
/// headers (ETag, length) describe, and for a whole-file body that the SHA-256 of the bytes
/// sent is the ETag's; if not, the body fails before its last chunk, so the client sees a
/// broken transfer instead of silently mixed bytes.
pub struct FileBody {
    file: Arc<File>,
    version: FileVersion,
    pos: u64,
    end: u64,
    /// Whole-file bodies: the running hash, checked against the facts' SHA-256 at the end.
    verify: Option<Verify>,
    pending: Option<JoinHandle<ChunkResult>>,
}

/// The running hash of a whole-file body and the facts it must match.
struct Verify {
    sha: Box<Sha256>,
    facts: Arc<Facts>,
}

type ChunkResult = io::Result<(Bytes, Option<Verify>)>;

impl FileBody {
    /// `start..end_exclusive` of `f` as it is in `facts` (whose version and hash are checked).
    pub fn new(f: &OpenFile, facts: &Arc<Facts>, start: u64, end_exclusive: u64) -> FileBody {
        let whole = start == 0 && end_exclusive == facts.version.size;
        FileBody {
            file: f.file.clone(),
            version: facts.version,
            pos: start,
            end: end_exclusive,
            verify: whole.then(|| Verify {
                sha: Box::new(Sha256::new()),
                facts: facts.clone(),
            }),
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
    mut verify: Option<Verify>,
) -> ChunkResult {
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
    if let Some(v) = verify.as_mut() {
        v.sha.update(&buf);
    }
    if last {
        let now = FileVersion::of(&file.metadata()?);
        if now != version {
            return Err(io::Error::other("the file changed during the download"));
        }
        if let Some(v) = verify.take() {
            let got: [u8; 32] = v.sha.finalize().into();
            if got != v.facts.sha256 {
                v.facts
                    .stale
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(io::Error::other(
                    "the bytes read do not match the ETag (the file was rewritten in place)",
                ));
            }
        }
    }
    Ok((Bytes::from(buf), verify))
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
            let verify = this.verify.take();
            this.pending = Some(tokio::task::spawn_blocking(move || {
                read_chunk(&file, version, off, want, last, verify)
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
                    Ok((bytes, verify)) => {
                        this.pos += bytes.len() as u64;
                        this.verify = verify;
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
    fn relative_path_refuses_segments_and_paths_longer_than_linux_allows() {
        let seg = "a".repeat(NAME_MAX);
        assert!(relative_path(&format!("/{seg}")).is_ok());
        assert!(matches!(
            relative_path(&format!("/{seg}a")),
            Err(PathError::TooLong(_))
        ));
        assert!(matches!(
            relative_path(&"/abc".repeat(PATH_MAX / 4)),
            Err(PathError::TooLong(_))
        ));
        // Percent-encoding counts decoded.
        assert!(relative_path(&format!("/{}", "%61".repeat(NAME_MAX))).is_ok());
    }

    fn version_at(ns: i128) -> FileVersion {
        FileVersion {
            size: 1,
            mtime_ns: ns,
            ctime_ns: ns,
            ino: 1,
            dev: 1,
        }
    }

    #[test]
    fn racy_wait_is_zero_for_settled_files_and_waits_out_the_margin_for_fresh_ones() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let now_ns = 1_700_000_000_123_456_789i128;
        let fine = RACY_MARGIN_FINE.as_nanos() as i128;
        assert_eq!(
            racy_wait(&version_at(now_ns - fine - 1), now),
            Duration::ZERO
        );
        assert_eq!(
            racy_wait(&version_at(now_ns - 3600 * 1_000_000_000), now),
            Duration::ZERO
        );
        // Changed 10 ms ago: wait the other 40 ms.
        let w = racy_wait(&version_at(now_ns - 10_000_000), now);
        assert_eq!(w, Duration::from_millis(40));
        // Far in the future (a copied mtime): a write now would stamp it differently.
        assert_eq!(
            racy_wait(&version_at(now_ns + 3600 * 1_000_000_000), now),
            Duration::ZERO
        );
        // A recent ctime counts even when the mtime was put back.
        let mut v = version_at(now_ns - 3600 * 1_000_000_000);
        v.ctime_ns = now_ns - 1_000_000;
        assert!(racy_wait(&v, now) > Duration::from_millis(40));
        // Whole-second stamps: the coarse margin.
        let v = version_at(1_700_000_000 * 1_000_000_000);
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        assert_eq!(
            racy_wait(&v, at),
            RACY_MARGIN_COARSE - Duration::from_millis(500)
        );
    }

    #[test]
    fn open_regular_refuses_a_fifo_at_once() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f.bin");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let t = Instant::now();
        assert!(matches!(
            open_regular(&fifo),
            Err(OpenError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            open_regular(dir.path()),
            Err(OpenError::NotRegular("a folder"))
        ));
        assert!(t.elapsed() < Duration::from_secs(1));
        std::fs::write(dir.path().join("r.bin"), b"x").unwrap();
        assert!(open_regular(&dir.path().join("r.bin")).is_ok());
        assert!(matches!(
            open_regular(&dir.path().join("missing")),
            Err(OpenError::NotFound)
        ));
    }

    #[test]
    fn open_regular_never_blocks_on_or_opens_a_fifo_swapped_in() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.bin");
        std::fs::write(&target, b"regular").unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, d) = (stop.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let tmp = d.join(format!("tmp{i}"));
                    if i.is_multiple_of(2) {
                        std::fs::write(&tmp, b"regular").unwrap();
                    } else {
                        let c = std::ffi::CString::new(tmp.as_os_str().as_bytes()).unwrap();
                        // SAFETY: a valid NUL-terminated path.
                        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
                    }
                    std::fs::rename(&tmp, d.join("x.bin")).unwrap();
                    // Leave each version in place for a moment, so that the opener sees both
                    // kinds (a rename between its checks is refused, never served).
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let opener = std::thread::spawn(move || {
            let (mut files, mut refused) = (0, 0);
            let start = std::time::Instant::now();
            // At least 3,000 opens; more (for at most 20 s) until both outcomes were seen.
            for n in 0.. {
                if n >= 3000
                    && ((files > 0 && refused > 0) || start.elapsed() > Duration::from_secs(20))
                {
                    break;
                }
                match open_regular(&target) {
                    Ok((f, m)) => {
                        assert!(m.is_file() && f.metadata().unwrap().is_file());
                        files += 1;
                    }
                    Err(OpenError::NotRegular(_)) | Err(OpenError::NotFound) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            let _ = tx.send((files, refused));
        });
        let got = rx.recv_timeout(Duration::from_secs(90));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        let (files, refused) = got.expect("open_regular blocked on a FIFO");
        opener.join().unwrap();
        assert!(
            files > 0 && refused > 0,
            "{files} opened, {refused} refused"
        );
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(Hex(&[0x00, 0xab, 0x7f]).to_string(), "00ab7f");
    }
}
