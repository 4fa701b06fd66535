//! The emulated SD card, mounted at `/sdcard` as ADF's sdcard peripheral does: a host folder or
//! a FAT image file. `file://` URIs become paths on the card by ADF's rules
//! (adf-ota-service.md §6.1 for `fatfs_stream`, §4.5 for `esp_fs_ota`).

use std::fs::{File, OpenOptions};
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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
        // Mount once to check; the file system is dropped at once.
        let disk = open_image(path)?;
        fatfs::FileSystem::new(disk, fatfs::FsOptions::new()).map_err(|source| {
            EmuError::SdNotFat {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(SdCard::FatImage(path.to_path_buf()))
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
            SdCard::Folder(root) => {
                let host = find_in_folder(root, &path).ok_or_else(|| self.not_found(uri, &path))?;
                let file = File::open(&host).map_err(|source| self.read_err(uri, &path, source))?;
                let size = file
                    .metadata()
                    .map_err(|source| self.read_err(uri, &path, source))?
                    .len();
                Ok((Box::new(file), size))
            }
            SdCard::FatImage(image) => {
                let disk = open_image(image)?;
                let fs =
                    fatfs::FileSystem::new(disk, fatfs::FsOptions::new()).map_err(|source| {
                        EmuError::SdNotFat {
                            path: image.clone(),
                            source,
                        }
                    })?;
                let inner = path.trim_start_matches('/');
                let mut file = fs.root_dir().open_file(inner).map_err(|e| {
                    // fatfs says "Is a directory"/"Not a directory" (kind Other) where FatFs's
                    // f_open says FR_NO_FILE/FR_NO_PATH, i.e. ENOENT on the device.
                    let msg = e.to_string();
                    if e.kind() == io::ErrorKind::NotFound
                        || msg == "Not a directory"
                        || msg == "Is a directory"
                    {
                        self.not_found(uri, &path)
                    } else {
                        self.read_err(uri, &path, e)
                    }
                })?;
                let mut data = Vec::new();
                file.read_to_end(&mut data)
                    .map_err(|e| self.read_err(uri, &path, e))?;
                let size = data.len() as u64;
                Ok((Box::new(Cursor::new(data)), size))
            }
        }
    }

    /// The whole file a URI names.
    pub fn read(&self, uri: &str) -> Result<Vec<u8>, EmuError> {
        let (mut r, size) = self.open_uri(uri)?;
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        r.read_to_end(&mut data)
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
/// (FAT long names are case-insensitive). Only a regular file counts.
fn find_in_folder(root: &Path, card_path: &str) -> Option<PathBuf> {
    let mut cur = root.to_path_buf();
    for comp in card_path.split('/').filter(|c| !c.is_empty()) {
        let exact = cur.join(comp);
        cur = if exact.exists() {
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
    cur.is_file().then_some(cur)
}

/// A read-only window on an image file: the whole file, or the FAT partition inside an MBR.
struct ImageSlice {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for ImageSlice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.file.read(&mut buf[..n])?;
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
    let mut file = File::open(path).map_err(io("open SD card image"))?;
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
    })
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
