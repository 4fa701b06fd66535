//! The emulated SD card, mounted at `/sdcard` as ADF's sdcard peripheral does: a host folder or
//! a FAT image file. `file://` URIs become paths on the card by ADF's rules
//! (adf-ota-service.md §6.1 for `fatfs_stream`, §4.5 for `esp_fs_ota`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;

use crate::error::EmuError;

/// Where ADF's sdcard peripheral mounts the card (adf-ota-service.md §6.1).
pub const MOUNT_POINT: &str = "/sdcard";
/// Separator between scheme and the rest of a URI, searched by `fatfs_stream` (§6.1).
const SCHEME_SEP: &str = "://";
/// `esp_fs_ota_begin` opens `&uri[6]`: it drops exactly 6 characters (adf-ota-service.md §4.5).
const FS_OTA_STRIP: usize = 6;
/// MBR: boot signature offset and value, first partition entry, its type byte and start LBA
/// (the classic PC layout FatFs's `find_volume` reads; 512-byte sectors).
const MBR_SIGNATURE_OFFSET: usize = 510;
const MBR_SIGNATURE: [u8; 2] = [0x55, 0xAA];
const MBR_PART1: usize = 0x1BE;
const MBR_TYPE_OFFSET: usize = 4;
const MBR_LBA_OFFSET: usize = 8;
const MBR_SECTOR: u64 = 512;
/// MBR partition types of FAT12/16/32 volumes.
const MBR_FAT_TYPES: [u8; 6] = [0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E];
/// The largest file the card hands out: 128 MiB, the largest flash size ESP-IDF and esptool
/// know (`--flash-size 128MB`, esptool `cmds.py`); nothing bigger fits any partition.
pub const MAX_FILE_LEN: u64 = 128 << 20;
/// Bytes one FAT operation (mount, lookup, reading one file) may read from the image, as a
/// multiple of the image size (at most [`MAX_FILE_LEN`]) plus [`FAT_READ_SLACK`]: reading a
/// file of a sound volume needs at most about twice its size (the data once, FAT entries and
/// directories); a looping directory or cluster chain hits this bound instead of reading for
/// ever.
const FAT_READ_FACTOR: u64 = 3;
const FAT_READ_SLACK: u64 = 1 << 20;
/// Each read call costs at least this much of the budget (it bounds the number of calls too).
const FAT_READ_MIN_COST: u64 = 512;
/// The largest FAT entry (FAT32: 4 bytes); reads this small are FAT-entry reads.
const FAT_ENTRY_MAX: usize = 4;
/// Bytes handed over per chunk by the FAT file reader.
const FAT_CHUNK: usize = 64 * 1024;
/// Chunks the FAT reader thread may run ahead of its consumer.
const FAT_QUEUE: usize = 2;

/// Which ADF reader's rule turns a `file://` URI into a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriRule {
    /// `fatfs_stream`'s `get_mount_path` (data and tone items, adf-ota-service.md §6.1): a URI
    /// starting with `/` is used as is; otherwise keep everything from the second `/` of `://`,
    /// skipping one more `/` if the next character is also `/`.
    FatfsStream,
    /// `esp_fs_ota` (app items, adf-ota-service.md §4.5): drop exactly the first 6 characters,
    /// so `file://sdcard/a.bin` → `/sdcard/a.bin` but `file:///sdcard/a.bin` → `//sdcard/a.bin`
    /// (which is not on the card, as on the device).
    FsOta,
}

/// The VFS path a `file://` URI names on the device (e.g. `/sdcard/x.bin`), by `rule`.
pub fn uri_to_vfs_path(uri: &str, rule: UriRule) -> Result<String, EmuError> {
    let bad = |reason: &str| EmuError::SdBadUri {
        uri: uri.to_string(),
        reason: reason.to_string(),
    };
    match rule {
        UriRule::FatfsStream => {
            if uri.starts_with('/') {
                return Ok(uri.to_string());
            }
            let sep = uri
                .find(SCHEME_SEP)
                .ok_or_else(|| bad("it has no \"://\" and does not start with '/'"))?;
            // From the second '/' of "://".
            let rest = uri.get(sep + 2..).unwrap_or("");
            let rest = if rest.starts_with("//") {
                &rest[1..]
            } else {
                rest
            };
            Ok(rest.to_string())
        }
        UriRule::FsOta => match uri.get(FS_OTA_STRIP..) {
            Some(rest) => Ok(rest.to_string()),
            None => Err(bad(
                "esp_fs_ota drops its first 6 characters and nothing is left",
            )),
        },
    }
}

/// The path inside the card for a VFS path: the `/sdcard` mount prefix stripped (ESP-IDF's VFS
/// matches the prefix case-sensitively and only before a `/` or the end), separators `/` and
/// `\` as in FatFs, empty and `.` components dropped. Always starts with `/`.
pub fn vfs_path_to_card_path(uri: &str, vfs_path: &str) -> Result<String, EmuError> {
    let bad = |reason: String| EmuError::SdBadUri {
        uri: uri.to_string(),
        reason,
    };
    let rest = vfs_path
        .strip_prefix(MOUNT_POINT)
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or_else(|| {
            bad(format!(
                "its path {vfs_path:?} is not under the {MOUNT_POINT} mount point"
            ))
        })?;
    let mut parts = Vec::new();
    for c in rest.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => return Err(bad(format!("its path {vfs_path:?} uses \"..\""))),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(bad(format!(
            "its path {vfs_path:?} names the card itself, not a file"
        )));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The emulated SD card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SdCard {
    /// A host folder is the card's root (names are matched case-insensitively, as on FAT).
    Folder(PathBuf),
    /// A FAT12/16/32 image file (a bare volume, or a disk with an MBR whose first partition is
    /// FAT). Opened read-only.
    FatImage(PathBuf),
}

impl SdCard {
    /// Mount `path`: a folder becomes [`SdCard::Folder`]; a regular file must be a FAT image
    /// that mounts, and becomes [`SdCard::FatImage`].
    pub fn open(path: impl AsRef<Path>) -> Result<SdCard, EmuError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|_| EmuError::SdCardNotFound {
            path: path.to_path_buf(),
        })?;
        if meta.is_dir() {
            return Ok(SdCard::Folder(path.to_path_buf()));
        }
        if !meta.is_file() {
            return Err(EmuError::SdNotFat {
                path: path.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "it is {}, not a folder or a regular image file",
                        file_kind(&meta.file_type())
                    ),
                ),
            });
        }
        // Mount once to check (under the read budget, a panic caught); dropped at once.
        let (disk, _probe) = open_probed(path)?;
        let mounted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fatfs::FileSystem::new(disk, fatfs::FsOptions::new()).map(|_| ())
        }));
        let not_fat = |source| EmuError::SdNotFat {
            path: path.to_path_buf(),
            source,
        };
        match mounted {
            Ok(Ok(())) => Ok(SdCard::FatImage(path.to_path_buf())),
            Ok(Err(e)) => Err(not_fat(e)),
            Err(p) => Err(not_fat(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the FAT library failed: {}", panic_text(&p)),
            ))),
        }
    }

    /// The folder or image file.
    pub fn path(&self) -> &Path {
        match self {
            SdCard::Folder(p) | SdCard::FatImage(p) => p,
        }
    }

    /// The path inside the card (`/x.bin`) that a `file://` URI names, by `fatfs_stream`'s
    /// rules (adf-ota-service.md §6.1): `file://sdcard/x.bin` and `file:///sdcard/x.bin` both
    /// give `/x.bin`. A URI not under `/sdcard` is an error naming it.
    pub fn resolve(&self, uri: &str) -> Result<String, EmuError> {
        self.resolve_with(uri, UriRule::FatfsStream)
    }

    /// [`SdCard::resolve`] with a chosen rule ([`UriRule::FsOta`] for app items).
    pub fn resolve_with(&self, uri: &str, rule: UriRule) -> Result<String, EmuError> {
        let vfs = uri_to_vfs_path(uri, rule)?;
        vfs_path_to_card_path(uri, &vfs)
    }

    /// Open the file a URI names ([`SdCard::resolve`]); returns a reader and the file size.
    /// A folder card streams from a host file; a FAT image's file is read into memory first
    /// (fatfs's `File` borrows its `FileSystem`, which makes an owned stream awkward).
    pub fn open_uri(&self, uri: &str) -> Result<(Box<dyn Read + Send>, u64), EmuError> {
        self.open_uri_with(uri, UriRule::FatfsStream)
    }

    /// [`SdCard::open_uri`] with a chosen rule.
    pub fn open_uri_with(
        &self,
        uri: &str,
        rule: UriRule,
    ) -> Result<(Box<dyn Read + Send>, u64), EmuError> {
        let path = self.resolve_with(uri, rule)?;
        match self {
            SdCard::Folder(root) => self.open_in_folder(root, uri, &path),
            SdCard::FatImage(image) => self.open_in_image(image, uri, &path),
        }
    }

    /// A folder card: the file must be a regular file whose real path (links resolved) is
    /// inside the folder, as on a FAT card, which has neither links nor special files.
    fn open_in_folder(
        &self,
        root: &Path,
        uri: &str,
        path: &str,
    ) -> Result<(Box<dyn Read + Send>, u64), EmuError> {
        let refuse = |msg: String| {
            self.read_err(
                uri,
                path,
                io::Error::new(io::ErrorKind::PermissionDenied, msg),
            )
        };
        let host = find_in_folder(root, path).ok_or_else(|| self.not_found(uri, path))?;
        let real_root = root
            .canonicalize()
            .map_err(|e| self.read_err(uri, path, e))?;
        let real = match host.canonicalize() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(refuse(format!(
                    "{} is a symbolic link to nothing",
                    host.display()
                )))
            }
            Err(e) => return Err(self.read_err(uri, path, e)),
        };
        if !real.starts_with(&real_root) {
            return Err(refuse(format!(
                "{} leads to {}, outside the card folder {} (a FAT card has no links out of it)",
                host.display(),
                real.display(),
                real_root.display()
            )));
        }
        let meta = std::fs::metadata(&real).map_err(|e| self.read_err(uri, path, e))?;
        if meta.is_dir() {
            return Err(self.not_found(uri, path));
        }
        if !meta.is_file() {
            return Err(refuse(format!(
                "{} is {}, not a regular file (a FAT card holds only files and folders)",
                host.display(),
                file_kind(&meta.file_type())
            )));
        }
        let file = open_regular(&real, false).map_err(|e| self.read_err(uri, path, e))?;
        let size = file
            .metadata()
            .map_err(|e| self.read_err(uri, path, e))?
            .len();
        if size > MAX_FILE_LEN {
            return Err(self.too_large(uri, path, size));
        }
        Ok((Box::new(file.take(size)), size))
    }

    /// A FAT image card: the file is looked up and streamed by a helper thread that owns the
    /// mounted volume, under a read budget and a cluster-loop check ([`Probe`]); a panic of the
    /// FAT library on a corrupt image becomes an error.
    fn open_in_image(
        &self,
        image: &Path,
        uri: &str,
        path: &str,
    ) -> Result<(Box<dyn Read + Send>, u64), EmuError> {
        let (size_tx, size_rx) = mpsc::channel::<Result<u64, EmuError>>();
        let (data_tx, data_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(FAT_QUEUE);
        let (card, image, uri_s, path_s) = (
            self.clone(),
            image.to_path_buf(),
            uri.to_string(),
            path.to_string(),
        );
        std::thread::spawn(move || {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                card.stream_fat_file(&image, &uri_s, &path_s, &size_tx, &data_tx)
            }));
            if let Err(p) = run {
                let msg = panic_text(&p);
                let e = card.corrupt(&uri_s, &path_s, format!("the FAT library failed: {msg}"));
                // Whichever side is waiting gets the error.
                let _ = data_tx.send(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    e.to_string(),
                )));
                let _ = size_tx.send(Err(e));
            }
        });
        let size = size_rx
            .recv()
            .unwrap_or_else(|_| Err(self.corrupt(uri, path, "the FAT reader stopped".into())))?;
        Ok((
            Box::new(FatReader {
                rx: data_rx,
                buf: Vec::new(),
                at: 0,
                left: size,
            }),
            size,
        ))
    }

    /// The FAT reader thread: mount, find, check the size, then send the file in chunks.
    fn stream_fat_file(
        &self,
        image: &Path,
        uri: &str,
        path: &str,
        size_tx: &mpsc::Sender<Result<u64, EmuError>>,
        data_tx: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    ) {
        let (disk, probe) = match open_probed(image) {
            Ok(d) => d,
            Err(e) => {
                let _ = size_tx.send(Err(e));
                return;
            }
        };
        let volume_len = disk.len;
        let fs = match fatfs::FileSystem::new(disk, fatfs::FsOptions::new()) {
            Ok(fs) => fs,
            Err(source) => {
                let _ = size_tx.send(Err(self.probe_err(&probe, uri, path).unwrap_or(
                    EmuError::SdNotFat {
                        path: image.to_path_buf(),
                        source,
                    },
                )));
                return;
            }
        };
        let inner = path.trim_start_matches('/');
        let (parent, name) = match inner.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, inner),
        };
        let lookup = || -> io::Result<Option<fatfs::DirEntry<'_, ImageSlice>>> {
            let dir = match parent {
                Some(d) => fs.root_dir().open_dir(d)?,
                None => fs.root_dir(),
            };
            let want = name.to_lowercase();
            for entry in dir.iter() {
                let entry = entry?;
                if entry.file_name().to_lowercase() == want
                    || entry.short_file_name().to_lowercase() == want
                {
                    return Ok(Some(entry));
                }
            }
            Ok(None)
        };
        let entry = match lookup() {
            Ok(Some(e)) if e.is_file() => e,
            Ok(_) => {
                let _ = size_tx.send(Err(self.not_found(uri, path)));
                return;
            }
            Err(e) => {
                // fatfs says "Is a directory"/"Not a directory" (kind Other) where FatFs's
                // f_open says FR_NO_FILE/FR_NO_PATH, i.e. ENOENT on the device.
                let msg = e.to_string();
                let err = if let Some(p) = self.probe_err(&probe, uri, path) {
                    p
                } else if e.kind() == io::ErrorKind::NotFound
                    || msg == "Not a directory"
                    || msg == "Is a directory"
                {
                    self.not_found(uri, path)
                } else {
                    self.read_err(uri, path, e)
                };
                let _ = size_tx.send(Err(err));
                return;
            }
        };
        let size = entry.len();
        if size > volume_len {
            let _ = size_tx.send(Err(self.corrupt(
                uri,
                path,
                format!(
                    "its size field says {size} bytes, more than the whole volume ({volume_len} bytes)"
                ),
            )));
            return;
        }
        if size > MAX_FILE_LEN {
            let _ = size_tx.send(Err(self.too_large(uri, path, size)));
            return;
        }
        if size_tx.send(Ok(size)).is_err() {
            return;
        }
        // Reading one file front to back reads each FAT entry of its chain once: an entry
        // read twice means the cluster chain loops.
        {
            let mut p = probe.borrow_mut();
            p.spent = 0;
            p.seen = Some(HashSet::new());
        }
        let mut file = entry.to_file();
        let mut left = size;
        while left > 0 {
            let mut chunk = vec![0u8; (left.min(FAT_CHUNK as u64)) as usize];
            let mut got = 0;
            while got < chunk.len() {
                match file.read(&mut chunk[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let e = match self.probe_err(&probe, uri, path) {
                            Some(p) => io::Error::new(io::ErrorKind::InvalidData, p.to_string()),
                            None => e,
                        };
                        let _ = data_tx.send(Err(e));
                        return;
                    }
                }
            }
            if got < chunk.len() {
                let e = self.corrupt(
                    uri,
                    path,
                    format!(
                        "its cluster chain ends after {} of its {size} bytes (or leaves the volume)",
                        size - left + got as u64
                    ),
                );
                let _ = data_tx.send(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    e.to_string(),
                )));
                return;
            }
            left -= got as u64;
            if data_tx.send(Ok(chunk)).is_err() {
                return; // the consumer is gone
            }
        }
    }

    /// The error a [`Probe`] recorded (a loop or the budget), if any.
    fn probe_err(&self, probe: &Rc<RefCell<Probe>>, uri: &str, path: &str) -> Option<EmuError> {
        let p = probe.borrow();
        if let (Some((cluster, value)), Some(fat)) = (p.bad_entry, p.fat) {
            return Some(self.corrupt(
                uri,
                path,
                format!(
                    "the FAT entry of cluster {cluster} says 0x{value:x}, not a cluster of this volume (2..={}) nor an end mark",
                    fat.max_cluster
                ),
            ));
        }
        if let Some(at) = p.looped_at {
            return Some(self.corrupt(
                uri,
                path,
                format!("its cluster chain loops (image offset 0x{at:x} reached twice)"),
            ));
        }
        if p.over_budget {
            return Some(self.corrupt(
                uri,
                path,
                format!(
                    "reading it needs more than {} bytes of a {}-byte image (the read limit: a looping cluster chain or directory?)",
                    p.budget, p.image_len
                ),
            ));
        }
        None
    }

    fn corrupt(&self, uri: &str, path: &str, detail: String) -> EmuError {
        self.read_err(
            uri,
            path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("corrupt FAT image: {detail}"),
            ),
        )
    }

    fn too_large(&self, uri: &str, path: &str, size: u64) -> EmuError {
        self.read_err(
            uri,
            path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the file has {size} bytes, more than the {MAX_FILE_LEN}-byte limit (the largest flash)"
                ),
            ),
        )
    }

    /// The whole file a URI names.
    pub fn read(&self, uri: &str) -> Result<Vec<u8>, EmuError> {
        let (r, size) = self.open_uri(uri)?;
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        r.take(size)
            .read_to_end(&mut data)
            .map_err(|e| self.read_err(uri, "", e))?;
        Ok(data)
    }

    /// Build a FAT image of `size` bytes at `path` holding `files` (path inside the card, with
    /// or without a leading `/`, subfolders created as needed; contents), and mount it.
    pub fn create_fat_image(
        path: impl AsRef<Path>,
        size: u64,
        files: &[(&str, &[u8])],
    ) -> Result<SdCard, EmuError> {
        let path = path.as_ref();
        build_fat(path, size, files).map_err(|e| EmuError::FatBuild {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        SdCard::open(path)
    }

    fn not_found(&self, uri: &str, path: &str) -> EmuError {
        EmuError::SdFileNotFound {
            uri: uri.to_string(),
            path: path.to_string(),
            card: self.path().to_path_buf(),
        }
    }

    fn read_err(&self, uri: &str, path: &str, source: io::Error) -> EmuError {
        EmuError::SdRead {
            uri: uri.to_string(),
            path: path.to_string(),
            card: self.path().to_path_buf(),
            source,
        }
    }
}

/// Find `/a/b.bin` under `root`, each component matched exactly or else case-insensitively
/// (FAT long names are case-insensitive). The caller checks what the path is.
fn find_in_folder(root: &Path, card_path: &str) -> Option<PathBuf> {
    let mut cur = root.to_path_buf();
    for comp in card_path.split('/').filter(|c| !c.is_empty()) {
        let exact = cur.join(comp);
        cur = if std::fs::symlink_metadata(&exact).is_ok() {
            exact
        } else {
            let want = comp.to_lowercase();
            std::fs::read_dir(&cur)
                .ok()?
                .filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().to_lowercase() == want)?
                .path()
        };
    }
    Some(cur)
}

/// What a non-regular file is, for messages.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_char_device() {
            return "a character device";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// `O_NONBLOCK` on Linux (`include/uapi/asm-generic/fcntl.h`).
#[cfg(unix)]
const O_NONBLOCK: i32 = 0o4000;
/// `O_NOFOLLOW` on Linux (`include/uapi/asm-generic/fcntl.h`).
#[cfg(unix)]
const O_NOFOLLOW: i32 = 0o400000;

/// Opens a file that must be regular without ever blocking (`open` on a FIFO waits for a
/// writer), without following a link in its last component unless `follow`, then checks
/// what was opened.
fn open_regular(path: &Path, follow: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(if follow {
            O_NONBLOCK
        } else {
            O_NONBLOCK | O_NOFOLLOW
        });
    }
    #[cfg(not(unix))]
    let _ = follow;
    let f = o.open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a regular file",
                path.display(),
                file_kind(&meta.file_type())
            ),
        ));
    }
    Ok(f)
}

/// The text of a caught panic.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// The consumer side of the FAT reader thread.
struct FatReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    at: usize,
    /// Bytes still to come.
    left: u64,
}

impl Read for FatReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.buf.len() {
            if self.left == 0 || out.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.buf = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the FAT reader stopped early",
                    ))
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

/// The read budget and the loop check of one FAT operation (see [`FAT_READ_FACTOR`]).
#[derive(Debug, Default)]
struct Probe {
    image_len: u64,
    budget: u64,
    spent: u64,
    over_budget: bool,
    /// FAT-entry offsets read so far, while one file is read front to back.
    seen: Option<HashSet<u64>>,
    looped_at: Option<u64>,
    /// Where the FATs are, to check every entry read before the FAT library uses it.
    fat: Option<FatLayout>,
    /// A FAT entry naming no cluster of the volume: (cluster, value).
    bad_entry: Option<(u32, u32)>,
}

/// The FAT region and cluster range of a volume, from its boot sector (Microsoft's FAT
/// specification, "FAT: General Overview of On-Disk Format": BPB fields and the cluster-count
/// rule for the FAT type, which FatFs's `check_fs`/`find_volume` and the fatfs crate follow).
#[derive(Clone, Copy, Debug)]
struct FatLayout {
    /// Byte offset of the first FAT in the volume, and the length of one FAT.
    start: u64,
    fat_len: u64,
    copies: u64,
    /// Bits per entry: 12, 16 or 32 (28 used).
    bits: u32,
    /// The highest cluster number of the volume (clusters are 2..=max).
    max_cluster: u32,
}

/// Clusters below this make FAT12, below [`FAT16_MAX_CLUSTERS`] FAT16, else FAT32 (FAT spec).
const FAT12_MAX_CLUSTERS: u32 = 4085;
const FAT16_MAX_CLUSTERS: u32 = 65525;
/// The first "bad cluster" value of each FAT type; values from there on are markers.
const FAT12_BAD: u32 = 0xFF7;
const FAT16_BAD: u32 = 0xFFF7;
const FAT32_BAD: u32 = 0x0FFF_FFF7;
/// FAT32 entries use 28 bits.
const FAT32_MASK: u32 = 0x0FFF_FFFF;

impl FatLayout {
    /// From the boot sector; None when its fields make no volume (fatfs then refuses it).
    fn parse(bs: &[u8; MBR_SECTOR as usize]) -> Option<FatLayout> {
        let u16_at = |o: usize| u32::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
        let u32_at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]);
        let bps = u16_at(11);
        let spc = u32::from(bs[13]);
        let reserved = u16_at(14);
        let copies = u32::from(bs[16]);
        let root_entries = u16_at(17);
        let total = match u16_at(19) {
            0 => u32_at(32),
            n => n,
        };
        let fat_sectors = match u16_at(22) {
            0 => u32_at(36),
            n => n,
        };
        if bps == 0 || spc == 0 || copies == 0 || fat_sectors == 0 {
            return None;
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let first_data = reserved
            .checked_add(copies.checked_mul(fat_sectors)?)?
            .checked_add(root_sectors)?;
        let clusters = total.checked_sub(first_data)? / spc;
        let bits = if clusters < FAT12_MAX_CLUSTERS {
            12
        } else if clusters < FAT16_MAX_CLUSTERS {
            16
        } else {
            32
        };
        Some(FatLayout {
            start: u64::from(reserved) * u64::from(bps),
            fat_len: u64::from(fat_sectors) * u64::from(bps),
            copies: u64::from(copies),
            bits,
            max_cluster: clusters.saturating_add(1),
        })
    }

    /// The cluster whose entry a read of `bytes` at volume offset `pos` is, and its value.
    fn entry(&self, pos: u64, bytes: &[u8]) -> Option<(u32, u32)> {
        if pos < self.start || pos >= self.start + self.fat_len * self.copies {
            return None;
        }
        let rel = (pos - self.start) % self.fat_len;
        let raw = match *bytes {
            [a, b] => u32::from(u16::from_le_bytes([a, b])),
            [a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
            _ => return None,
        };
        match (self.bits, bytes.len()) {
            (12, 2) => match (2 * rel) % 3 {
                0 => Some((u32::try_from(2 * rel / 3).ok()?, raw & 0xFFF)),
                2 => Some((u32::try_from((2 * rel + 1) / 3).ok()?, raw >> 4)),
                _ => None,
            },
            (16, 2) if rel.is_multiple_of(2) => Some((u32::try_from(rel / 2).ok()?, raw)),
            (32, 4) if rel.is_multiple_of(4) => {
                Some((u32::try_from(rel / 4).ok()?, raw & FAT32_MASK))
            }
            _ => None,
        }
    }

    /// Whether `value`, found in the entry of a cluster, is free (0), a marker, or a cluster
    /// of this volume; anything else (1, or past the last cluster) would send a reader
    /// outside the volume.
    fn value_ok(&self, value: u32) -> bool {
        let bad = match self.bits {
            12 => FAT12_BAD,
            16 => FAT16_BAD,
            _ => FAT32_BAD,
        };
        value == 0 || value >= bad || (2..=self.max_cluster).contains(&value)
    }
}

/// A read-only window on an image file: the whole file, or the FAT partition inside an MBR.
struct ImageSlice {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
    probe: Option<Rc<RefCell<Probe>>>,
}

impl Read for ImageSlice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        if let Some(probe) = &self.probe {
            let mut p = probe.borrow_mut();
            p.spent += (n as u64).max(FAT_READ_MIN_COST);
            if p.spent > p.budget {
                p.over_budget = true;
                return Err(io::Error::other("SD card image read limit reached"));
            }
            let pos = self.pos;
            // FAT entries are read 2 or 4 bytes at a time, one per step of a chain: an entry
            // read twice while one file is read means the chain loops.
            if let (Some(seen), true) = (&mut p.seen, n <= FAT_ENTRY_MAX) {
                if !seen.insert(pos) {
                    p.looped_at = Some(self.start + pos);
                    return Err(io::Error::other("looping cluster chain"));
                }
            }
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.file.read(&mut buf[..n])?;
        if let Some(probe) = &self.probe {
            let mut p = probe.borrow_mut();
            let entry = p
                .fat
                .and_then(|f| f.entry(self.pos, &buf[..got]).map(|e| (f, e)));
            if let Some((fat, (cluster, value))) = entry {
                // Entries 0 and 1 hold the media byte and flags, not links.
                if cluster >= 2 && !fat.value_ok(value) {
                    p.bad_entry = Some((cluster, value));
                    return Err(io::Error::other("FAT entry outside the volume"));
                }
            }
        }
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for ImageSlice {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the SD card image is mounted read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for ImageSlice {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new = new
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = new;
        Ok(new)
    }
}

/// Open an image read-only, as a bare FAT volume, or the first FAT partition of an MBR disk.
fn open_image(path: &Path) -> Result<ImageSlice, EmuError> {
    let io = |op: &'static str| {
        move |source| EmuError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut file = open_regular(path, true).map_err(io("open SD card image"))?;
    let len = file.metadata().map_err(io("stat SD card image"))?.len();
    let mut sector0 = [0u8; MBR_SECTOR as usize];
    let n = file.read(&mut sector0).map_err(io("read SD card image"))?;
    let mut start = 0;
    if n == sector0.len() && is_mbr_disk(&sector0) {
        let lba_at = MBR_PART1 + MBR_LBA_OFFSET;
        let lba = u32::from_le_bytes([
            sector0[lba_at],
            sector0[lba_at + 1],
            sector0[lba_at + 2],
            sector0[lba_at + 3],
        ]);
        start = u64::from(lba) * MBR_SECTOR;
    }
    Ok(ImageSlice {
        file,
        start,
        len: len.saturating_sub(start),
        pos: 0,
        probe: None,
    })
}

/// [`open_image`] with a [`Probe`] on every read.
fn open_probed(path: &Path) -> Result<(ImageSlice, Rc<RefCell<Probe>>), EmuError> {
    let mut disk = open_image(path)?;
    let probe = Rc::new(RefCell::new(Probe {
        image_len: disk.len,
        budget: disk
            .len
            .min(MAX_FILE_LEN)
            .saturating_mul(FAT_READ_FACTOR)
            .saturating_add(FAT_READ_SLACK),
        ..Probe::default()
    }));
    let mut bs = [0u8; MBR_SECTOR as usize];
    if disk.len >= MBR_SECTOR
        && disk.file.seek(SeekFrom::Start(disk.start)).is_ok()
        && disk.file.read_exact(&mut bs).is_ok()
    {
        probe.borrow_mut().fat = FatLayout::parse(&bs);
    }
    disk.probe = Some(probe.clone());
    Ok((disk, probe))
}

/// An MBR (not a FAT boot sector, which also ends in 55 AA): no jump instruction at byte 0
/// and a FAT partition type in entry 1.
fn is_mbr_disk(s: &[u8; MBR_SECTOR as usize]) -> bool {
    let boot_jump = s[0] == 0xEB || s[0] == 0xE9;
    s[MBR_SIGNATURE_OFFSET..MBR_SIGNATURE_OFFSET + 2] == MBR_SIGNATURE
        && !boot_jump
        && MBR_FAT_TYPES.contains(&s[MBR_PART1 + MBR_TYPE_OFFSET])
}

fn build_fat(path: &Path, size: u64, files: &[(&str, &[u8])]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(size)?;
    fatfs::format_volume(&mut file, fatfs::FormatVolumeOptions::new())?;
    file.seek(SeekFrom::Start(0))?;
    let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new())?;
    {
        let root = fs.root_dir();
        for (name, data) in files {
            let name = name.trim_start_matches('/');
            let mut dir_end = 0;
            while let Some(i) = name[dir_end..].find('/') {
                dir_end += i;
                root.create_dir(&name[..dir_end])?;
                dir_end += 1;
            }
            let mut f = root.create_file(name)?;
            f.truncate()?;
            f.write_all(data)?;
            f.flush()?;
        }
    }
    fs.unmount()?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatfs_stream_rule_handles_two_and_three_slashes() {
        assert_eq!(
            uri_to_vfs_path("file://sdcard/x.bin", UriRule::FatfsStream).unwrap(),
            "/sdcard/x.bin"
        );
        assert_eq!(
            uri_to_vfs_path("file:///sdcard/x.bin", UriRule::FatfsStream).unwrap(),
            "/sdcard/x.bin"
        );
        assert_eq!(
            uri_to_vfs_path("/sdcard/x.bin", UriRule::FatfsStream).unwrap(),
            "/sdcard/x.bin"
        );
        assert!(uri_to_vfs_path("sdcard/x.bin", UriRule::FatfsStream).is_err());
    }

    #[test]
    fn fs_ota_rule_drops_exactly_six_characters() {
        assert_eq!(
            uri_to_vfs_path("file://sdcard/a.bin", UriRule::FsOta).unwrap(),
            "/sdcard/a.bin"
        );
        assert_eq!(
            uri_to_vfs_path("file:///sdcard/a.bin", UriRule::FsOta).unwrap(),
            "//sdcard/a.bin"
        );
        assert!(vfs_path_to_card_path("u", "//sdcard/a.bin").is_err());
        assert!(uri_to_vfs_path("file:", UriRule::FsOta).is_err());
    }

    #[test]
    fn card_path_strips_mount_only_at_a_separator() {
        assert_eq!(
            vfs_path_to_card_path("u", "/sdcard/x.bin").unwrap(),
            "/x.bin"
        );
        assert_eq!(
            vfs_path_to_card_path("u", "/sdcard//d/./x.bin").unwrap(),
            "/d/x.bin"
        );
        assert_eq!(
            vfs_path_to_card_path("u", "/sdcard/d\\x.bin").unwrap(),
            "/d/x.bin"
        );
        for bad in [
            "/sdcard\\x.bin",
            "/sdcardx/x.bin",
            "/SDCARD/x.bin",
            "/spiffs/x.bin",
            "/sdcard",
            "/sdcard/",
            "/sdcard/../x",
        ] {
            let e = vfs_path_to_card_path("file:/", bad).unwrap_err();
            assert!(matches!(e, EmuError::SdBadUri { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn resolve_error_names_the_uri() {
        let card = SdCard::Folder(PathBuf::from("/nonexistent"));
        let e = card.resolve("http://example.com/x.bin").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"http://example.com/x.bin\""), "{msg}");
        assert!(msg.contains("not under the /sdcard mount point"), "{msg}");
    }

    #[test]
    fn mbr_detection_ignores_fat_boot_sectors() {
        let mut s = [0u8; 512];
        s[510] = 0x55;
        s[511] = 0xAA;
        s[MBR_PART1 + MBR_TYPE_OFFSET] = 0x0C;
        assert!(is_mbr_disk(&s));
        s[0] = 0xEB;
        assert!(!is_mbr_disk(&s));
    }
}
