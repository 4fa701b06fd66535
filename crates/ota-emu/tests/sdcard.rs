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
