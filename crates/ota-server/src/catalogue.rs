//! The catalogue served at `/manifest.json`: every app image and tone bin with what `ota-core`
//! reads from it. [`analyse`] reads one file once (streaming it through
//! `ota_core::image::ImageVerifier`, or `ota_core::tone::ToneBin` for tone bins, while hashing
//! it); [`DirCatalogue`] rescans a folder on an interval and re-analyses only files whose
//! version (size, mtime, inode) changed, so each file version is analysed exactly once.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use ota_catalogue::signed::SigningKey;
use ota_catalogue::{Catalogue, CatalogueEntry, EntryKind, CATALOGUE_FORMAT};
use ota_core::image::{ImageVerifier, IMAGE_MAGIC};
use ota_core::tone::{ToneBin, ToneHeader, TONE_HEADER_SIZE};
use sha2::{Digest, Sha256};

use crate::deltas::DeltaMaker;
use crate::local::{open_regular, read_stable, FileVersion, StableError, CHUNK};
use ota_core::image::Hex;

/// Tone bins are parsed whole (`ToneBin` works on a slice); bigger files are refused.
/// ESP-ADF's tone partitions are a few MB (adf-ota-service.md §8).
pub const MAX_TONE_BYTES: usize = 64 << 20;
/// Files larger than this are listed without being read: no ESP32-class flash is larger
/// (ESP-IDF's largest flash size is `ESPTOOLPY_FLASHSIZE_128MB`,
/// components/esptool_py/Kconfig.projbuild), so such a file can be neither an app image nor a
/// tone bin for a device.
pub const MAX_ANALYSED_BYTES: u64 = 128 << 20;
/// How deep the folder walk goes.
pub const MAX_DEPTH: usize = 16;
/// File names the catalogue considers (case-insensitive suffix).
pub const CANDIDATE_SUFFIX: &str = ".bin";
/// How long one file may keep changing before this scan lists it as changing (the next scan
/// analyses it again).
pub const STABLE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

enum Mode {
    /// Fewer than 8 bytes seen.
    Undecided(Vec<u8>),
    App(Box<ImageVerifier>, Option<String>),
    Tone(Vec<u8>, Option<String>),
    Unknown(String),
}

/// Reads a whole file once and describes it: SHA-256, size, and what `ota-core` finds in it.
/// `path` is the URL path to put in the entry. I/O errors are returned; format problems become
/// the entry's `error`.
pub fn analyse(path: &str, mut reader: impl Read) -> io::Result<CatalogueEntry> {
    let mut sha = Sha256::new();
    let mut size = 0u64;
    let mut mode = Mode::Undecided(Vec::new());
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let data = &buf[..n];
        sha.update(data);
        size += n as u64;
        feed(&mut mode, data);
    }
    let mut entry = CatalogueEntry {
        path: path.to_string(),
        kind: EntryKind::Unknown,
        size,
        sha256: Hex(&sha.finalize()).to_string(),
        chip: None,
        project: None,
        version: None,
        secure_version: None,
        idf_ver: None,
        format: None,
        files: None,
        error: None,
        deltas: Vec::new(),
    };
    if let Mode::Undecided(first) = &mode {
        let first = first.clone();
        decide(&mut mode, &first, true);
    }
    match mode {
        Mode::Undecided(_) => {}
        Mode::Unknown(err) => entry.error = Some(err),
        Mode::App(v, err) => {
            entry.kind = EntryKind::App;
            describe_app(&mut entry, &v, err);
        }
        Mode::Tone(bytes, err) => {
            entry.kind = EntryKind::Tone;
            describe_tone(&mut entry, &bytes, err);
        }
    }
    Ok(entry)
}

/// Pick the mode from the first bytes: magic 0xE9 (idf-formats.md §3.1) → app image; header
/// tag 0x2053 (adf-ota-service.md §8.2) → tone bin.
fn decide(mode: &mut Mode, first: &[u8], at_end: bool) {
    if first.first() == Some(&IMAGE_MAGIC) {
        let mut v = ImageVerifier::new();
        v.set_app_rules(true);
        let err = v.feed(first).err().map(|e| e.to_string());
        *mode = Mode::App(Box::new(v), err);
    } else if first.len() >= TONE_HEADER_SIZE && ToneHeader::parse(first).is_ok_and(|h| h.tag_ok())
    {
        *mode = Mode::Tone(first.to_vec(), None);
    } else if first.len() >= TONE_HEADER_SIZE || at_end {
        *mode = Mode::Unknown(format!(
            "neither an app image (magic 0x{:02x}) nor a tone bin (tag 0x2053): starts with {}",
            IMAGE_MAGIC,
            if first.is_empty() {
                "nothing (empty file)".to_string()
            } else {
                Hex(&first[..first.len().min(8)]).to_string()
            }
        ));
    }
}

fn feed(mode: &mut Mode, data: &[u8]) {
    match mode {
        Mode::Undecided(first) => {
            first.extend_from_slice(data);
            let f = std::mem::take(first);
            decide(mode, &f, false);
            if let Mode::Undecided(_) = mode {
                *mode = Mode::Undecided(f);
            }
        }
        Mode::App(v, err) => {
            if err.is_none() {
                *err = v.feed(data).err().map(|e| e.to_string());
            }
        }
        Mode::Tone(bytes, err) => {
            if err.is_none() {
                if bytes.len() + data.len() > MAX_TONE_BYTES {
                    *err = Some(format!(
                        "tone bin larger than {} bytes: not analysed",
                        MAX_TONE_BYTES
                    ));
                    *bytes = Vec::new();
                } else {
                    bytes.extend_from_slice(data);
                }
            }
        }
        Mode::Unknown(_) => {}
    }
}

fn describe_app(entry: &mut CatalogueEntry, v: &ImageVerifier, err: Option<String>) {
    if let Some(h) = v.header() {
        entry.chip = Some(match h.chip() {
            Some(c) => c.name().to_string(),
            None => format!("chip id {}", h.chip_id),
        });
    }
    if let Some(d) = v.app_desc() {
        entry.project = Some(d.project_name_str().to_string());
        entry.version = Some(d.version_str().to_string());
        entry.secure_version = Some(d.secure_version);
        entry.idf_ver = Some(d.idf_ver_str().to_string());
    }
    entry.error = match err {
        Some(e) => Some(e),
        None => match v.finish() {
            Err(e) => Some(e.to_string()),
            Ok(s) if s.loader_app_desc.is_none() => {
                Some("no app descriptor (esp_app_desc_t) at offset 0x20".to_string())
            }
            Ok(_)
                if entry
                    .chip
                    .as_deref()
                    .is_some_and(|c| c.starts_with("chip id")) =>
            {
                Some("unknown chip id in the image header".to_string())
            }
            Ok(_) => None,
        },
    };
}

fn describe_tone(entry: &mut CatalogueEntry, bytes: &[u8], err: Option<String>) {
    if let Some(e) = err {
        entry.error = Some(e);
        return;
    }
    match ToneBin::parse(bytes) {
        Ok(bin) => {
            let h = bin.header();
            entry.format = Some(h.format);
            entry.files = Some(h.total_num as u32);
            if let Some(d) = bin.desc() {
                entry.project = Some(d.project_name_str().to_string());
                entry.version = Some(d.version_str().to_string());
            }
        }
        Err(e) => {
            if let Ok(h) = ToneHeader::parse(bytes) {
                entry.format = Some(h.format);
                entry.files = Some(h.total_num as u32);
            }
            entry.error = Some(e.to_string());
        }
    }
}

/// A catalogue ready to serve: the JSON, its strong ETag, when it last changed.
#[derive(Clone, Debug)]
pub struct CatalogueDoc {
    pub catalogue: Catalogue,
    pub json: Bytes,
    pub etag: String,
    pub modified: SystemTime,
}

impl CatalogueDoc {
    pub fn new(entries: Vec<CatalogueEntry>) -> CatalogueDoc {
        Self::from_catalogue(Self::sorted(entries))
    }

    /// The catalogue of `entries`, sorted by path (the document's order).
    pub fn sorted(mut entries: Vec<CatalogueEntry>) -> Catalogue {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Catalogue {
            format: CATALOGUE_FORMAT,
            serial: None,
            entries,
        }
    }

    pub fn from_catalogue(catalogue: Catalogue) -> CatalogueDoc {
        let json = Bytes::from(catalogue.to_json());
        Self::with_json(catalogue, json)
    }

    /// A document served as these exact bytes (a signed envelope, a store's object).
    pub fn with_json(catalogue: Catalogue, json: Bytes) -> CatalogueDoc {
        let etag = format!("\"{}\"", Hex(&Sha256::digest(&json)));
        CatalogueDoc {
            catalogue,
            json,
            etag,
            modified: SystemTime::now(),
        }
    }

    /// `catalogue` signed by `key` with `serial` ([`SigningKey::sign`]).
    pub fn signed(catalogue: &Catalogue, key: &SigningKey, serial: u64) -> CatalogueDoc {
        let doc = key.sign(catalogue, serial);
        Self::with_json(doc.catalogue, Bytes::from(doc.json))
    }
}

/// The serial of a catalogue signed now: ms since the Unix epoch, and always above `last` (the
/// serial of the catalogue it replaces), so devices see it as newer even if the clock went back.
pub fn next_serial(last: Option<u64>) -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    match last {
        Some(l) => now.max(l.saturating_add(1)),
        None => now,
    }
}

/// The URL path of a file relative to the root: `/` + its segments, each percent-encoded.
pub fn url_path(rel: &Path) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let mut s = String::new();
    for c in rel.components() {
        s.push('/');
        let part = c.as_os_str().to_string_lossy();
        s.push_str(&percent_encoding::utf8_percent_encode(&part, SEGMENT).to_string());
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// The catalogue of a folder, kept up to date by [`DirCatalogue::rescan`].
pub struct DirCatalogue {
    root: PathBuf,
    /// Sign every document with this key (`ota serve --sign-key`).
    signer: Option<Arc<SigningKey>>,
    /// Per file: the version its entry describes (None: analyse again at the next scan).
    known: HashMap<PathBuf, (Option<FileVersion>, CatalogueEntry)>,
    doc: Arc<RwLock<Arc<CatalogueDoc>>>,
    analyses: u64,
    /// Delta patches to the newest version of each project ([`DirCatalogue::with_deltas`]).
    deltas: DeltaMaker,
}

impl DirCatalogue {
    /// `root` must be canonical (symlinks are checked against it).
    pub fn new(root: PathBuf) -> DirCatalogue {
        Self::with_signer(root, None)
    }

    /// A folder catalogue whose every document is signed by `signer` (when given), with a
    /// serial from [`next_serial`] each time it changes.
    pub fn with_signer(root: PathBuf, signer: Option<Arc<SigningKey>>) -> DirCatalogue {
        let empty = CatalogueDoc::sorted(Vec::new());
        let doc = match &signer {
            Some(k) => CatalogueDoc::signed(&empty, k, next_serial(None)),
            None => CatalogueDoc::from_catalogue(empty),
        };
        DirCatalogue {
            signer,
            known: HashMap::new(),
            deltas: DeltaMaker::new(root.clone(), 0),
            root,
            doc: Arc::new(RwLock::new(Arc::new(doc))),
            analyses: 0,
        }
    }

    /// Make delta patches from the `bases` previous versions of each chip and project to the
    /// newest, and list them in its entry (0: none).
    pub fn with_deltas(mut self, bases: usize) -> DirCatalogue {
        self.deltas = DeltaMaker::new(self.root.clone(), bases);
        self
    }

    /// The patch maker (its counters).
    pub fn deltas(&self) -> &DeltaMaker {
        &self.deltas
    }

    /// The shared handle the HTTP side reads.
    pub fn handle(&self) -> Arc<RwLock<Arc<CatalogueDoc>>> {
        self.doc.clone()
    }

    /// Walk the folder (blocking); analyse new or changed `.bin` files; publish a new document
    /// when anything changed. Returns whether it did.
    pub fn rescan(&mut self) -> bool {
        let mut found = Vec::new();
        walk(&self.root, &self.root, 0, &mut found);
        let mut changed = found.len() != self.known.len();
        let mut next = HashMap::with_capacity(found.len());
        for (path, version) in found {
            match self.known.remove(&path) {
                Some((Some(v), entry)) if v == version => {
                    next.insert(path, (Some(v), entry));
                }
                _ => {
                    changed = true;
                    if let Some(e) = self.analyse_file(&path, version) {
                        next.insert(path, e);
                    }
                }
            }
        }
        if !self.known.is_empty() {
            changed = true;
        }
        self.known = next;
        if changed {
            let mut entries: Vec<CatalogueEntry> =
                self.known.values().map(|(_, e)| e.clone()).collect();
            self.deltas.attach(&mut entries);
            let cat = CatalogueDoc::sorted(entries);
            let mut slot = self.doc.write().unwrap_or_else(|p| p.into_inner());
            // Compared without the serial: a signed document changes only with its entries.
            if slot.catalogue.entries != cat.entries {
                *slot = Arc::new(match &self.signer {
                    Some(k) => CatalogueDoc::signed(&cat, k, next_serial(slot.catalogue.serial)),
                    None => CatalogueDoc::from_catalogue(cat),
                });
                return true;
            }
        }
        false
    }

    /// How many file versions were read and analysed so far.
    pub fn analyses(&self) -> u64 {
        self.analyses
    }

    /// Analyse one file: opened only if regular ([`open_regular`]), read as one stable version
    /// ([`read_stable`]). Returns the version the entry describes, or None when the file kept
    /// changing (the entry says so and the next scan analyses it again).
    fn analyse_file(
        &mut self,
        path: &Path,
        version: FileVersion,
    ) -> Option<(Option<FileVersion>, CatalogueEntry)> {
        self.analyses += 1;
        let rel = path.strip_prefix(&self.root).ok()?;
        let url = url_path(rel);
        if version.size > MAX_ANALYSED_BYTES {
            let mut entry = io_entry(&url, version.size, &io::Error::other("too large"));
            entry.error = Some(format!(
                "{} bytes: larger than any flash ({} MiB), not analysed",
                version.size,
                MAX_ANALYSED_BYTES >> 20
            ));
            return Some((Some(version), entry));
        }
        // Links are followed (walk() kept only those that stay inside the root); the target
        // is opened, and only if it is a regular file (any more).
        let real = path.canonicalize().ok()?;
        if !real.starts_with(&self.root) {
            return None;
        }
        let (file, _) = open_regular(&real).ok()?;
        match read_stable(&file, STABLE_DEADLINE, |r, _| analyse(&url, r)) {
            Ok((entry, v, _)) => Some((Some(v), entry)),
            Err(StableError::Io(e)) => Some((None, io_entry(&url, version.size, &e))),
            Err(StableError::Changing) => {
                let mut entry = io_entry(&url, version.size, &io::Error::other("changing"));
                entry.error = Some(format!(
                    "the file kept changing for {} s while it was analysed; analysed again at the next scan",
                    STABLE_DEADLINE.as_secs()
                ));
                Some((None, entry))
            }
        }
    }
}

fn io_entry(url: &str, size: u64, e: &io::Error) -> CatalogueEntry {
    CatalogueEntry {
        path: url.to_string(),
        kind: EntryKind::Unknown,
        size,
        sha256: String::new(),
        chip: None,
        project: None,
        version: None,
        secure_version: None,
        idf_ver: None,
        format: None,
        files: None,
        error: Some(format!("could not be read: {e}")),
        deltas: Vec::new(),
    }
}

/// Regular `*.bin` files under `dir` (dot-names skipped; symlinks followed only to files that
/// stay inside `root`; no descent into symlinked folders).
fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(PathBuf, FileVersion)>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = ent.path();
        let Ok(ft) = ent.file_type() else { continue };
        if ft.is_dir() {
            walk(root, &path, depth + 1, out);
            continue;
        }
        if !name.to_ascii_lowercase().ends_with(CANDIDATE_SUFFIX) {
            continue;
        }
        if ft.is_symlink() {
            match path.canonicalize() {
                Ok(c) if c.starts_with(root) => {}
                _ => continue,
            }
        }
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.is_file() {
                out.push((path, FileVersion::of(&meta)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_core::image::{build_image, ImageSpec};
    use ota_core::Chip;

    fn image(chip: Chip, project: &str, version: &str) -> Vec<u8> {
        let mut spec = ImageSpec::new(chip, project, version);
        spec.secure_version = 3;
        let mut out = Vec::new();
        build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
        out
    }

    #[test]
    fn analyse_describes_a_valid_app_image() {
        let img = image(Chip::Esp32c3, "blink", "v1.2.3");
        let e = analyse("/blink.bin", &img[..]).unwrap();
        assert_eq!(e.kind, EntryKind::App);
        assert_eq!(e.chip.as_deref(), Some("esp32c3"));
        assert_eq!(e.project.as_deref(), Some("blink"));
        assert_eq!(e.version.as_deref(), Some("v1.2.3"));
        assert_eq!(e.secure_version, Some(3));
        assert_eq!(e.size, img.len() as u64);
        assert_eq!(e.sha256, Hex(&Sha256::digest(&img)).to_string());
        assert_eq!(e.error, None);
    }

    #[test]
    fn analyse_lists_a_corrupt_image_with_its_error() {
        let mut img = image(Chip::Esp32, "blink", "v1.2.3");
        let mid = img.len() / 2;
        img[mid] ^= 0x40;
        let e = analyse("/bad.bin", &img[..]).unwrap();
        assert_eq!(e.kind, EntryKind::App);
        assert_eq!(e.project.as_deref(), Some("blink"));
        let err = e.error.expect("an error");
        assert!(
            err.contains("Checksum failed") || err.contains("mismatch"),
            "{err}"
        );

        let truncated = &image(Chip::Esp32, "blink", "v1")[..400];
        let e = analyse("/short.bin", truncated).unwrap();
        assert!(e.error.is_some());
    }

    #[test]
    fn analyse_marks_other_bytes_unknown() {
        let e = analyse("/x.bin", &b"hello world, not firmware"[..]).unwrap();
        assert_eq!(e.kind, EntryKind::Unknown);
        assert!(e.error.unwrap().contains("68656c6c6f20776f"));
        let e = analyse("/empty.bin", &b""[..]).unwrap();
        assert!(e.error.unwrap().contains("empty file"));
    }

    #[test]
    fn analyse_reads_a_tone_bin() {
        let entries = [
            ota_core::tone::ToneEntry {
                name: "a.mp3",
                data: &[1u8; 100],
            },
            ota_core::tone::ToneEntry {
                name: "b.wav",
                data: &[2u8; 33],
            },
        ];
        let mut bin = Vec::new();
        ota_core::tone::pack(
            &entries,
            1,
            "v1.0",
            "10:00:00",
            "2026/01/01",
            &mut |b: &[u8]| bin.extend_from_slice(b),
        )
        .unwrap();
        let e = analyse("/flash_tone.bin", &bin[..]).unwrap();
        assert_eq!(e.kind, EntryKind::Tone);
        assert_eq!((e.format, e.files), (Some(1), Some(2)));
        assert_eq!(e.version.as_deref(), Some("v1.0"));
        assert_eq!(e.error, None);
        let mut bad = bin.clone();
        let n = bad.len();
        bad[n - 7] ^= 1; // inside the last file's data region / CRC-covered bytes
        let e = analyse("/bad_tone.bin", &bad[..]).unwrap();
        assert_eq!(e.kind, EntryKind::Tone);
        assert!(e.error.is_some());
    }

    #[test]
    fn dir_catalogue_analyses_each_file_version_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.bin"), image(Chip::Esp32, "a", "v1.0.0")).unwrap();
        std::fs::write(root.join("notes.txt"), b"not catalogued").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/b.bin"), image(Chip::Esp32c3, "b", "v2")).unwrap();
        std::fs::create_dir(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/x.bin"), b"hidden").unwrap();
        let mut c = DirCatalogue::new(root.clone());
        let handle = c.handle();
        assert!(c.rescan());
        assert_eq!(c.analyses(), 2);
        let paths: Vec<String> = handle
            .read()
            .unwrap()
            .catalogue
            .entries
            .iter()
            .map(|e| e.path.clone())
            .collect();
        assert_eq!(paths, ["/a.bin", "/sub/b.bin"]);
        let etag = handle.read().unwrap().etag.clone();
        // Nothing changed: nothing is read again, the document stays.
        assert!(!c.rescan());
        assert!(!c.rescan());
        assert_eq!(c.analyses(), 2);
        assert_eq!(handle.read().unwrap().etag, etag);
        // One file rewritten, one added, one removed: exactly two analyses.
        std::fs::write(root.join("a.bin"), image(Chip::Esp32, "a", "v1.0.1")).unwrap();
        std::fs::write(root.join("c.bin"), b"junk").unwrap();
        std::fs::remove_file(root.join("sub/b.bin")).unwrap();
        assert!(c.rescan());
        assert_eq!(c.analyses(), 4);
        let doc = handle.read().unwrap().clone();
        assert_ne!(doc.etag, etag);
        let versions: Vec<Option<String>> = doc
            .catalogue
            .entries
            .iter()
            .map(|e| e.version.clone())
            .collect();
        assert_eq!(versions, [Some("v1.0.1".to_string()), None]);
        assert!(doc.catalogue.entries[1].error.is_some());
    }

    #[test]
    fn dir_catalogue_notices_a_same_size_rewrite_with_the_mtime_put_back() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let path = root.join("a.bin");
        let v1 = image(Chip::Esp32, "a", "v1.0.0");
        let v2 = image(Chip::Esp32, "a", "v9.0.0");
        assert_eq!(v1.len(), v2.len());
        std::fs::write(&path, &v1).unwrap();
        let mut c = DirCatalogue::new(root.clone());
        let handle = c.handle();
        c.rescan();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&v2, 0).unwrap();
        f.set_modified(mtime).unwrap();
        c.rescan();
        let doc = handle.read().unwrap().clone();
        assert_eq!(doc.catalogue.entries[0].version.as_deref(), Some("v9.0.0"));
        assert_eq!(
            doc.catalogue.entries[0].sha256,
            Hex(&Sha256::digest(&v2)).to_string()
        );
    }

    #[test]
    fn dir_catalogue_skips_fifos_and_sockets() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let c = std::ffi::CString::new(root.join("fifo.bin").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        std::os::unix::fs::symlink("fifo.bin", root.join("link.bin")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(root.join("sock.bin")).unwrap();
        std::fs::write(root.join("a.bin"), image(Chip::Esp32, "a", "v1")).unwrap();
        let mut c = DirCatalogue::new(root.clone());
        c.rescan();
        let doc = c.handle().read().unwrap().clone();
        let paths: Vec<&str> = doc
            .catalogue
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(paths, ["/a.bin"]);
    }

    #[test]
    fn dir_catalogue_lists_a_file_larger_than_any_flash_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        // Sparse: a terabyte that costs nothing on disk, and would take minutes to hash.
        let f = std::fs::File::create(root.join("huge.bin")).unwrap();
        f.set_len(1 << 40).unwrap();
        let mut c = DirCatalogue::new(root.clone());
        let t = std::time::Instant::now();
        c.rescan();
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let doc = c.handle().read().unwrap().clone();
        let e = &doc.catalogue.entries[0];
        assert_eq!(e.kind, EntryKind::Unknown);
        assert!(
            e.error
                .as_deref()
                .unwrap()
                .contains("larger than any flash"),
            "{e:?}"
        );
    }

    #[test]
    fn dir_catalogue_lists_links_to_images_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("fw")).unwrap();
        std::fs::write(root.join("fw/a-1.0.bin"), image(Chip::Esp32, "a", "v1.0")).unwrap();
        std::os::unix::fs::symlink("fw/a-1.0.bin", root.join("latest.bin")).unwrap();
        let mut c = DirCatalogue::new(root.clone());
        c.rescan();
        let doc = c.handle().read().unwrap().clone();
        let found: Vec<(&str, Option<&str>)> = doc
            .catalogue
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.version.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                ("/fw/a-1.0.bin", Some("v1.0")),
                ("/latest.bin", Some("v1.0"))
            ]
        );
    }

    #[test]
    fn url_path_encodes_segments() {
        assert_eq!(url_path(Path::new("fw/a b.bin")), "/fw/a%20b.bin");
        assert_eq!(url_path(Path::new("x.bin")), "/x.bin");
    }
}
