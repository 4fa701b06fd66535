//! SdCard: folder and FAT image mounts, ADF's file:// URI rules, not-found errors.

use std::io::Read;
use std::path::PathBuf;

use ota_emu::sdcard::{SdCard, UriRule};
use ota_emu::EmuError;

const MB: u64 = 1024 * 1024;

fn read_uri(card: &SdCard, uri: &str) -> (Vec<u8>, u64) {
    let (mut r, size) = card.open_uri(uri).unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    (v, size)
}

fn folder_card() -> (tempfile::TempDir, SdCard) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.bin"), b"app bytes").unwrap();
    std::fs::create_dir(dir.path().join("Tones")).unwrap();
    std::fs::write(
        dir.path().join("Tones").join("Flash_Tone.bin"),
        vec![7u8; 5000],
    )
    .unwrap();
    let card = SdCard::open(dir.path()).unwrap();
    (dir, card)
}

fn fat_card() -> (tempfile::TempDir, SdCard) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sd.img");
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let card = SdCard::create_fat_image(
        &path,
        4 * MB,
        &[
            ("app.bin", b"app bytes"),
            ("/tones/a_rather_long_file_name.bin", &big),
        ],
    )
    .unwrap();
    (dir, card)
}

#[test]
fn folder_mount_is_a_folder_card() {
    let (dir, card) = folder_card();
    assert_eq!(card, SdCard::Folder(dir.path().to_path_buf()));
    assert_eq!(card.path(), dir.path());
}

#[test]
fn resolve_applies_fatfs_stream_rules() {
    let (_dir, card) = folder_card();
    assert_eq!(card.resolve("file://sdcard/x.bin").unwrap(), "/x.bin");
    assert_eq!(card.resolve("file:///sdcard/x.bin").unwrap(), "/x.bin");
    assert_eq!(
        card.resolve("file://sdcard/dir/x.bin").unwrap(),
        "/dir/x.bin"
    );
    assert_eq!(
        card.resolve("/sdcard/flash_tone.bin").unwrap(),
        "/flash_tone.bin"
    );
    // The app item's esp_fs_ota drops exactly 6 characters.
    assert_eq!(
        card.resolve_with("file://sdcard/app.bin", UriRule::FsOta)
            .unwrap(),
        "/app.bin"
    );
    assert!(card
        .resolve_with("file:///sdcard/app.bin", UriRule::FsOta)
        .is_err());
}

#[test]
fn resolve_rejects_uris_outside_the_card() {
    let (_dir, card) = folder_card();
    for uri in [
        "file://spiffs/x.bin",
        "file:///data/x.bin",
        "file://sdcard",
        "x.bin",
        "file://sdcardx/y.bin",
    ] {
        let e = card.resolve(uri).unwrap_err();
        assert!(matches!(e, EmuError::SdBadUri { .. }), "{uri}: {e}");
        assert!(
            e.to_string().contains(&format!("{uri:?}")),
            "error names the URI: {e}"
        );
    }
}

#[test]
fn folder_card_opens_files_with_size() {
    let (_dir, card) = folder_card();
    assert_eq!(
        read_uri(&card, "file://sdcard/app.bin"),
        (b"app bytes".to_vec(), 9)
    );
    let (v, size) = read_uri(&card, "file:///sdcard/Tones/Flash_Tone.bin");
    assert_eq!((v.len(), size), (5000, 5000));
}

#[test]
fn folder_card_names_are_case_insensitive_like_fat() {
    let (_dir, card) = folder_card();
    let (v, _) = read_uri(&card, "file://sdcard/tones/FLASH_TONE.BIN");
    assert_eq!(v, vec![7u8; 5000]);
    assert_eq!(card.read("file://sdcard/APP.bin").unwrap(), b"app bytes");
}

#[test]
fn folder_card_missing_file_is_sd_file_not_found() {
    let (dir, card) = folder_card();
    for (uri, path) in [
        ("file://sdcard/flash_tone.bin", "/flash_tone.bin"),
        ("file://sdcard/nodir/x.bin", "/nodir/x.bin"),
        ("file://sdcard/app.bin/x", "/app.bin/x"),
        ("file://sdcard/Tones", "/Tones"), // a folder is not a file (FatFs: FR_NO_FILE)
    ] {
        let e = card.open_uri(uri).map(|_| ()).unwrap_err();
        match &e {
            EmuError::SdFileNotFound {
                uri: u,
                path: p,
                card: c,
            } => {
                assert_eq!(
                    (u.as_str(), p.as_str(), c.as_path()),
                    (uri, path, dir.path())
                );
            }
            other => panic!("{uri}: expected SdFileNotFound, got {other:?}"),
        }
        assert!(e.to_string().contains(path), "{e}");
    }
}

#[test]
fn fat_image_mounts_and_opens_files() {
    let (dir, card) = fat_card();
    assert_eq!(card, SdCard::FatImage(dir.path().join("sd.img")));
    assert_eq!(
        read_uri(&card, "file://sdcard/app.bin"),
        (b"app bytes".to_vec(), 9)
    );
    let (v, size) = read_uri(&card, "file:///sdcard/tones/a_rather_long_file_name.bin");
    assert_eq!(size, 70_000);
    assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    // Reopen from the path: the image is a plain file on disk.
    let again = SdCard::open(dir.path().join("sd.img")).unwrap();
    assert_eq!(again.read("file://sdcard/app.bin").unwrap(), b"app bytes");
}

#[test]
fn fat_image_long_names_are_case_insensitive() {
    let (_dir, card) = fat_card();
    let (_, size) = read_uri(&card, "file://sdcard/TONES/A_Rather_Long_File_Name.BIN");
    assert_eq!(size, 70_000);
    assert_eq!(read_uri(&card, "file://sdcard/APP.BIN").1, 9);
}

#[test]
fn fat_image_missing_file_is_sd_file_not_found() {
    let (_dir, card) = fat_card();
    for (uri, path) in [
        ("file://sdcard/flash_tone.bin", "/flash_tone.bin"),
        ("file://sdcard/nodir/x.bin", "/nodir/x.bin"),
        ("file://sdcard/app.bin/x", "/app.bin/x"),
        ("file://sdcard/tones", "/tones"),
    ] {
        let e = card.open_uri(uri).map(|_| ()).unwrap_err();
        assert!(
            matches!(&e, EmuError::SdFileNotFound { uri: u, path: p, .. } if u == uri && p == path),
            "{uri}: {e:?}"
        );
    }
}

#[test]
fn fat_image_opened_read_only_is_not_modified() {
    let (dir, card) = fat_card();
    let path = dir.path().join("sd.img");
    let before = std::fs::read(&path).unwrap();
    card.read("file://sdcard/app.bin").unwrap();
    let _ = card.open_uri("file://sdcard/none.bin");
    SdCard::open(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn fat_image_inside_an_mbr_disk_mounts() {
    let (dir, card) = fat_card();
    let volume = std::fs::read(card.path()).unwrap();
    // MBR: partition 1, type 0x0C (FAT32 LBA), starting at LBA 8.
    let mut disk = vec![0u8; 8 * 512];
    disk[0x1BE + 4] = 0x0C;
    disk[0x1BE + 8..0x1BE + 12].copy_from_slice(&8u32.to_le_bytes());
    disk[0x1BE + 12..0x1BE + 16].copy_from_slice(&((volume.len() / 512) as u32).to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xAA;
    disk.extend_from_slice(&volume);
    let disk_path = dir.path().join("disk.img");
    std::fs::write(&disk_path, &disk).unwrap();
    let card = SdCard::open(&disk_path).unwrap();
    assert_eq!(card.read("file://sdcard/app.bin").unwrap(), b"app bytes");
}

#[test]
fn missing_card_and_non_fat_file_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = SdCard::open(dir.path().join("nope")).unwrap_err();
    assert!(matches!(e, EmuError::SdCardNotFound { .. }), "{e}");
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0x5Au8; 64 * 1024]).unwrap();
    let e = SdCard::open(&junk).unwrap_err();
    assert!(matches!(e, EmuError::SdNotFat { .. }), "{e}");
    assert!(e.to_string().contains("junk.img"), "{e}");
}

#[test]
fn real_flash_tone_bin_round_trips_through_a_fat_image() {
    let tone = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors/tone/flash_tone.bin"
    ));
    if !tone.is_file() {
        eprintln!("SKIP: ../shared/vectors not found");
        return;
    }
    let data = std::fs::read(&tone).unwrap();
    assert_eq!(data.len(), 434_756);
    let dir = tempfile::tempdir().unwrap();
    let card = SdCard::create_fat_image(
        dir.path().join("sd.img"),
        2 * MB,
        &[("flash_tone.bin", &data)],
    )
    .unwrap();
    // The ADF example's DATA_UPGRADE_URI (esp-adf `examples/ota/main/Kconfig.projbuild`).
    let (v, size) = read_uri(&card, "file://sdcard/flash_tone.bin");
    assert_eq!(size, 434_756);
    assert!(v == data);
}

// ------------------------------------------------------------ hostile cards

/// Runs `f` on a helper thread and fails the test if it takes longer than `limit` (a card
/// that blocks or reads for ever must not hang the suite).
fn within<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}: blocked or unbounded"))
}

const LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Open and read a whole file through the card, on a helper thread, with a time limit.
fn try_read(card: &SdCard, uri: &'static str) -> Result<Vec<u8>, String> {
    let card = card.clone();
    within(LIMIT, move || {
        let (r, size) = card.open_uri(uri).map_err(|e| e.to_string())?;
        let mut v = Vec::new();
        // Never more than the size plus one byte, whatever the reader does.
        r.take(size + 1)
            .read_to_end(&mut v)
            .map_err(|e| e.to_string())?;
        if v.len() as u64 != size {
            return Err(format!("read {} bytes of a {size}-byte file", v.len()));
        }
        Ok(v)
    })
}

#[cfg(unix)]
#[test]
fn folder_card_symlink_escaping_the_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let card_dir = dir.path().join("card");
    std::fs::create_dir(&card_dir).unwrap();
    std::fs::write(dir.path().join("secret.bin"), b"secret").unwrap();
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/other.bin"), b"other").unwrap();
    std::fs::write(card_dir.join("real.bin"), b"inside").unwrap();
    std::os::unix::fs::symlink("../secret.bin", card_dir.join("evil.bin")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.bin"), card_dir.join("abs.bin")).unwrap();
    std::os::unix::fs::symlink("../outside", card_dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("real.bin", card_dir.join("alias.bin")).unwrap();
    std::os::unix::fs::symlink("nothing.bin", card_dir.join("dangling.bin")).unwrap();
    let card = SdCard::open(&card_dir).unwrap();
    for uri in [
        "file://sdcard/evil.bin",
        "file://sdcard/abs.bin",
        "file://sdcard/sub/other.bin",
        "file://sdcard/EVIL.BIN",
    ] {
        let e = try_read(&card, uri).unwrap_err();
        assert!(e.contains("outside the card folder"), "{uri}: {e}");
        assert!(!e.contains("secret\""), "{e}");
    }
    let e = try_read(&card, "file://sdcard/dangling.bin").unwrap_err();
    assert!(e.contains("symbolic link to nothing"), "{e}");
    // A link that stays inside the card is followed.
    assert_eq!(
        try_read(&card, "file://sdcard/alias.bin").unwrap(),
        b"inside"
    );
}

#[cfg(unix)]
#[test]
fn folder_card_fifo_is_not_a_file_and_is_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.bin");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: mkfifo not available");
        return;
    }
    std::os::unix::fs::symlink("pipe.bin", dir.path().join("to_pipe.bin")).unwrap();
    let card = SdCard::open(dir.path()).unwrap();
    for uri in ["file://sdcard/pipe.bin", "file://sdcard/to_pipe.bin"] {
        let e = try_read(&card, uri).unwrap_err();
        assert!(e.contains("a FIFO, not a regular file"), "{uri}: {e}");
    }
    // The FIFO itself as the card image: refused without opening it.
    let e = within(LIMIT, move || {
        SdCard::open(&fifo).map(|_| ()).unwrap_err().to_string()
    });
    assert!(e.contains("a FIFO"), "{e}");
}

#[cfg(unix)]
#[test]
fn folder_card_symlink_to_dev_zero_is_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.bin")).unwrap();
    let card = SdCard::open(dir.path()).unwrap();
    let e = try_read(&card, "file://sdcard/zero.bin").unwrap_err();
    assert!(
        e.contains("/dev/zero") && e.contains("outside the card folder"),
        "{e}"
    );
    let c = card.clone();
    let e = within(LIMIT, move || {
        c.read("file://sdcard/zero.bin").unwrap_err().to_string()
    });
    assert!(e.contains("outside the card folder"), "{e}");
    // /dev/zero named as the card itself is not an image.
    let e = within(LIMIT, || {
        SdCard::open("/dev/zero")
            .map(|_| ())
            .unwrap_err()
            .to_string()
    });
    assert!(e.contains("a character device"), "{e}");
}

#[test]
fn folder_card_file_larger_than_any_flash_is_refused_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(dir.path().join("huge.bin")).unwrap();
    f.set_len(ota_emu::sdcard::MAX_FILE_LEN + 1).unwrap(); // sparse
    let card = SdCard::open(dir.path()).unwrap();
    let e = try_read(&card, "file://sdcard/huge.bin").unwrap_err();
    assert!(
        e.contains(&format!("{}-byte limit", ota_emu::sdcard::MAX_FILE_LEN)),
        "{e}"
    );
}

/// A FAT16 volume (512-byte clusters) with `files` in the root and `dirs`, and its layout.
struct Fat16 {
    dir: tempfile::TempDir,
    img: Vec<u8>,
    fat_start: usize,
    fat_len: usize,
    fats: usize,
    root_start: usize,
    data_start: usize,
    cluster: usize,
}

impl Fat16 {
    fn new(files: &[(&str, &[u8])], dirs: &[&str]) -> Fat16 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sd.img");
        {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            f.set_len(4 * MB).unwrap();
            fatfs::format_volume(
                &mut f,
                fatfs::FormatVolumeOptions::new()
                    .fat_type(fatfs::FatType::Fat16)
                    .bytes_per_cluster(512),
            )
            .unwrap();
            use std::io::{Seek, Write};
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
            for d in dirs {
                fs.root_dir().create_dir(d).unwrap();
            }
            for (name, data) in files {
                let mut file = fs.root_dir().create_file(name).unwrap();
                file.write_all(data).unwrap();
            }
            fs.unmount().unwrap();
        }
        let img = std::fs::read(&path).unwrap();
        let u16_at = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]) as usize;
        let bps = u16_at(11);
        let spc = img[13] as usize;
        let reserved = u16_at(14);
        let fats = img[16] as usize;
        let root_entries = u16_at(17);
        let fat_len = u16_at(22) * bps;
        let fat_start = reserved * bps;
        let root_start = fat_start + fats * fat_len;
        let data_start = root_start + (root_entries * 32).div_ceil(bps) * bps;
        Fat16 {
            dir,
            img,
            fat_start,
            fat_len,
            fats,
            root_start,
            data_start,
            cluster: bps * spc,
        }
    }

    /// The offset of the root directory entry with this 8.3 name (`b"LOOP    BIN"`).
    fn entry(&self, name83: &[u8; 11]) -> usize {
        (self.root_start..self.data_start)
            .step_by(32)
            .find(|&o| &self.img[o..o + 11] == name83)
            .expect("directory entry")
    }

    fn first_cluster(&self, entry: usize) -> u16 {
        u16::from_le_bytes([self.img[entry + 26], self.img[entry + 27]])
    }

    fn set_fat(&mut self, cluster: u16, value: u16) {
        for i in 0..self.fats {
            let o = self.fat_start + i * self.fat_len + 2 * cluster as usize;
            self.img[o..o + 2].copy_from_slice(&value.to_le_bytes());
        }
    }

    fn cluster_offset(&self, cluster: u16) -> usize {
        self.data_start + (cluster as usize - 2) * self.cluster
    }

    /// Writes the patched image and mounts it.
    fn card(&self) -> SdCard {
        let path = self.dir.path().join("sd.img");
        std::fs::write(&path, &self.img).unwrap();
        SdCard::open(&path).unwrap()
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 249) as u8 + 1).collect()
}

#[test]
fn crafted_fat16_image_reads_back_before_corruption() {
    let data = pattern(3000);
    let fat = Fat16::new(&[("LOOP.BIN", &data)], &[]);
    assert_eq!(
        try_read(&fat.card(), "file://sdcard/loop.bin").unwrap(),
        data
    );
}

#[test]
fn fat_image_with_a_looping_cluster_chain_is_an_error_naming_the_loop() {
    let data = pattern(3000); // 6 clusters of 512 bytes
    let mut fat = Fat16::new(&[("LOOP.BIN", &data)], &[]);
    let e = fat.entry(b"LOOP    BIN");
    let c = fat.first_cluster(e);
    fat.set_fat(c + 3, c + 1); // the 4th cluster leads back to the 2nd
    let err = try_read(&fat.card(), "file://sdcard/loop.bin").unwrap_err();
    assert!(
        err.contains("corrupt FAT image") && err.contains("loops"),
        "{err}"
    );
    assert!(err.contains("/loop.bin"), "{err}");
}

#[test]
fn fat_image_with_a_huge_size_field_is_refused_by_its_size() {
    let data = pattern(3000);
    let mut fat = Fat16::new(&[("LOOP.BIN", &data)], &[]);
    let e = fat.entry(b"LOOP    BIN");
    let c = fat.first_cluster(e);
    fat.set_fat(c + 5, c); // and the chain loops, so a reader would never run out of data
    fat.img[e + 28..e + 32].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let card = fat.card();
    let err = try_read(&card, "file://sdcard/loop.bin").unwrap_err();
    assert!(
        err.contains("size field says 4294967280 bytes, more than the whole volume"),
        "{err}"
    );
}

#[test]
fn fat_image_with_clusters_out_of_range_is_an_error_not_a_panic() {
    for (next, why, says) in [
        (
            0xFFF0u16,
            "past the last cluster",
            "says 0xfff0, not a cluster of this volume",
        ),
        (
            1,
            "reserved cluster 1",
            "says 0x1, not a cluster of this volume",
        ),
        (
            0,
            "a free cluster inside the chain",
            "cluster chain ends after 1024",
        ),
    ] {
        let data = pattern(3000);
        let mut fat = Fat16::new(&[("LOOP.BIN", &data)], &[]);
        let e = fat.entry(b"LOOP    BIN");
        let c = fat.first_cluster(e);
        fat.set_fat(c + 1, next);
        let err = try_read(&fat.card(), "file://sdcard/loop.bin").unwrap_err();
        println!("{why}: {err}");
        assert!(
            err.contains("corrupt FAT image") && err.contains(says),
            "{why}: {err}"
        );
    }
    // A first cluster of 0 with a non-zero size.
    let data = pattern(3000);
    let mut fat = Fat16::new(&[("LOOP.BIN", &data)], &[]);
    let e = fat.entry(b"LOOP    BIN");
    fat.img[e + 26..e + 28].copy_from_slice(&0u16.to_le_bytes());
    let err = try_read(&fat.card(), "file://sdcard/loop.bin").unwrap_err();
    assert!(err.contains("corrupt FAT image"), "{err}");
}

#[test]
fn fat_image_with_a_looping_directory_hits_the_read_limit() {
    let mut fat = Fat16::new(&[], &["D"]);
    let e = fat.entry(b"D          ");
    let c = fat.first_cluster(e);
    fat.set_fat(c, c); // the directory's only cluster leads to itself
                       // Fill the cluster after `.` and `..` with deleted entries: no end-of-directory mark.
    let o = fat.cluster_offset(c);
    for slot in (o + 64..o + fat.cluster).step_by(32) {
        fat.img[slot] = 0xE5;
        fat.img[slot + 1..slot + 11].copy_from_slice(b"DELETEDBIN");
    }
    let card = fat.card();
    let err = try_read(&card, "file://sdcard/d/none.bin").unwrap_err();
    assert!(err.contains("read limit"), "{err}");
}

#[test]
fn fat_image_file_size_is_known_before_its_data_is_read() {
    // The size comes from the directory entry, before any data cluster is read: a consumer
    // can refuse a file too large for its partition without reading it. Here the chain ends
    // after one cluster; the size is still the entry's, and reading it is an error.
    let data = pattern(3000);
    let mut fat = Fat16::new(&[("LOOP.BIN", &data)], &[]);
    let e = fat.entry(b"LOOP    BIN");
    let c = fat.first_cluster(e);
    fat.set_fat(c, 0xFFFF); // end of chain after the first cluster
    fat.img[e + 28..e + 32].copy_from_slice(&(3u32 << 20).to_le_bytes());
    let card = fat.card();
    let c2 = card.clone();
    let (_reader, size) = within(LIMIT, move || {
        c2.open_uri("file://sdcard/loop.bin").unwrap()
    });
    assert_eq!(size, 3 << 20);
    let err = try_read(&card, "file://sdcard/loop.bin").unwrap_err();
    assert!(
        err.contains("cluster chain ends after 512 of its 3145728 bytes"),
        "{err}"
    );
}

#[test]
fn mutated_fat_images_never_panic_and_always_end() {
    const CASES: usize = 150;
    let data = pattern(20_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sd.img");
    SdCard::create_fat_image(&path, MB, &[("a.bin", &data), ("/d/b.bin", b"bb")]).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut seed = 0x0DDC_0FFE_E123_4567u64;
    let mut next = move || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    // Mutations land where the volume is described: the boot sector's BPB, the start of the
    // first FAT, the root directory's first entries.
    let u16_at = |o: usize| u16::from_le_bytes([good[o], good[o + 1]]) as usize;
    let bps = u16_at(11);
    let fat = u16_at(14) * bps;
    let root = fat + good[16] as usize * u16_at(22) * bps;
    let regions = [(0usize, 64usize), (fat, 64), (root, 256)];
    let (mut mounted, mut read_ok, mut refused) = (0, 0, 0);
    for case in 0..CASES {
        let mut img = good.clone();
        for _ in 0..1 + next() % 6 {
            let (start, len) = regions[(next() % 3) as usize];
            let at = start + (next() % len as u64) as usize;
            img[at] = match next() % 4 {
                0 => 0,
                1 => 0xFF,
                2 => img[at] ^ (1 << (next() % 8)),
                _ => next() as u8,
            };
        }
        let p = dir.path().join(format!("m{case}.img"));
        std::fs::write(&p, &img).unwrap();
        let result =
            within(LIMIT, move || {
                let card = match SdCard::open(&p) {
                    Ok(c) => c,
                    Err(e) => return (false, vec![Err(e.to_string())]),
                };
                let mut out = Vec::new();
                for uri in ["file://sdcard/a.bin", "file://sdcard/d/b.bin"] {
                    out.push(card.open_uri(uri).map_err(|e| e.to_string()).and_then(
                        |(r, size)| {
                            let mut v = Vec::new();
                            r.take(size + 1)
                                .read_to_end(&mut v)
                                .map_err(|e| e.to_string())?;
                            Ok(v.len())
                        },
                    ));
                }
                (true, out)
            });
        mounted += usize::from(result.0);
        for r in result.1 {
            match r {
                Ok(_) => read_ok += 1,
                Err(e) => {
                    assert!(!e.is_empty());
                    refused += 1
                }
            }
        }
    }
    println!(
        "mutated FAT images: {mounted} of {CASES} mounted, {read_ok} files read, {refused} refused"
    );
    assert!(mounted > 0 && refused > 0 && read_ok > 0);
}

#[test]
fn fat32_volume_reads_back_with_the_entry_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sd32.img");
    let data = pattern(70_000);
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(40 * MB).unwrap(); // sparse; 512-byte clusters make it FAT32
        fatfs::format_volume(
            &mut f,
            fatfs::FormatVolumeOptions::new()
                .fat_type(fatfs::FatType::Fat32)
                .bytes_per_cluster(512),
        )
        .unwrap();
        use std::io::{Seek, Write};
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        fs.root_dir().create_dir("sub").unwrap();
        let mut file = fs.root_dir().create_file("sub/big.bin").unwrap();
        file.write_all(&data).unwrap();
        drop(file);
        fs.unmount().unwrap();
    }
    let card = SdCard::open(&path).unwrap();
    assert_eq!(try_read(&card, "file://sdcard/sub/big.bin").unwrap(), data);
}
