//! Seeds the fuzz corpus: `cargo run --manifest-path fuzz/seeds/Cargo.toml` writes
//! `fuzz/corpus/<target>/` (git-ignored). It copies the real files of `../shared/vectors` at
//! run time (they are never committed here) with each target's control bytes in front, and
//! adds files made by ota-core itself: images for several chips, partition tables, otadata
//! sectors from real update flows, tone bins, configs, delta patches over the fuzz device's base,
//! and a resume log from an interrupted update. Usage: `ota-fuzz-seeds [CORPUS_DIR] [VECTORS_DIR]`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use embedded_storage::nor_flash::NorFlash;
use ota_core::boot::{self, BootConfig};
use ota_core::image::{build_image, ImageSpec};
use ota_core::otadata::{OtaData, OtaSelectEntry, OtaState, ENTRY_SIZE};
use ota_core::partition::{Label, Partition, PartitionTable, TABLE_MAX_LEN};
use ota_core::resume::{ResumeHeader, ResumeLog, Validator, ValidatorKind};
use ota_core::tone::{pack, ToneEntry};
use ota_core::Chip;
use ota_emu::EmuFlash;

struct Corpus {
    root: PathBuf,
    count: usize,
}

impl Corpus {
    fn put(&mut self, target: &str, name: &str, prefix: &[u8], body: &[u8]) -> io::Result<()> {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir)?;
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(body);
        fs::write(dir.join(name), bytes)?;
        self.count += 1;
        Ok(())
    }
}

fn image(chip: Chip, version: &str, size: u32, segments: u8, hash: bool) -> Vec<u8> {
    let mut spec = ImageSpec::new(chip, "seed", version);
    spec.total_size = Some(size);
    spec.segments = segments;
    spec.hash_appended = hash;
    let mut out = Vec::new();
    build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).expect("build image");
    out
}

fn part(label: &str, ptype: u8, subtype: u8, offset: u32, size: u32) -> Partition {
    Partition {
        ptype,
        subtype,
        offset,
        size,
        label: Label::new(label),
        flags: 0,
    }
}

/// The fuzz device's table (fuzz/src/lib.rs).
fn fuzz_table() -> PartitionTable {
    let mut t = PartitionTable::new();
    for p in [
        part("nvs", 1, 0x02, 0x9000, 0x4000),
        part("otadata", 1, 0x00, 0xD000, 0x2000),
        part("ota_0", 0, 0x10, 0x10000, 0x40000),
        part("ota_1", 0, 0x11, 0x50000, 0x40000),
        part("flash_tone", 1, 0xFF, 0x90000, 0x20000),
    ] {
        t.push(p).expect("room");
    }
    t
}

const CONFIGS: &[&str] = &[
    "firmware_upgrade_uri = \"http://127.0.0.1:8080/play_mp3_control.bin\"\ndata_upgrade_uri = \"file://sdcard/flash_tone.bin\"\ndata_partition_label = \"flash_tone\"\nforce_check_firmware_version = false\n",
    "retries = 5\nretry_backoff_ms = 100\n\n[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/flash_tone.bin\"\nlabel = \"flash_tone\"\nformat = \"tone\"\nversion_check = \"semver\"\nreboot = false\nbreak_after_fail = true\n\n[[upgrade]]\ntype = \"app\"\nuri = \"https://127.0.0.1:8443/app.bin\"\nversion_check = \"newer\"\nretries = 0\nresume = false\n",
    "[[upgrade]]\ntype = \"app\"\nuri = \"http://h/a.bin\"\ncert = \"ca.pem\"\n",
];

const CSV: &str = "\
# Name,   Type, SubType, Offset,   Size, Flags
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
factory,  app,  factory, ,        1M,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
flash_tone, data, 0xff,  ,        512K, readonly
coredump, data, coredump, ,       64K, encrypted
";

fn main() -> io::Result<()> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let root = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("../corpus"));
    let vectors = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("../../../shared/vectors"));
    let mut c = Corpus { root, count: 0 };

    // Real files, copied at run time.
    let mut copied = 0;
    if vectors.is_dir() {
        for sub in ["esptool", "tone"] {
            let Ok(rd) = fs::read_dir(vectors.join(sub)) else {
                continue;
            };
            let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for p in files {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                if !name.ends_with(".bin") {
                    continue;
                }
                let bytes = fs::read(&p)?;
                copied += 1;
                if sub == "tone" {
                    c.put("tone", &name, &[0, 128], &bytes)?;
                    c.put("tone", &format!("strict-{name}"), &[1, 0], &bytes)?;
                } else if name.starts_with("partitions") {
                    c.put("partition_table", &name, &[2], &bytes)?;
                } else {
                    // Any chip (index 15 = none) / the chip the image names.
                    c.put("image_stream", &name, &[0x0F, 1], &bytes)?;
                    c.put(
                        "image_stream",
                        &format!("app-rules-{name}"),
                        &[0x2F, 7],
                        &bytes,
                    )?;
                    c.put("app_update", &name, &[0x25, 3], &bytes)?;
                    c.put("app_update", &format!("resume-{name}"), &[0x65, 9], &bytes)?;
                    if name.contains("signed") {
                        // Control byte: SHA-384 on, no scheme, nothing revoked.
                        c.put("signature_sector", &name, &[1], &bytes)?;
                    }
                }
            }
        }
    } else {
        eprintln!(
            "SKIP: {} not found: only generated seeds",
            vectors.display()
        );
    }

    // Images made by ota-core.
    for (i, chip) in Chip::ALL.iter().enumerate() {
        let img = image(*chip, "v2.0.0", 8_000, 3, true);
        c.put(
            "image_stream",
            &format!("gen-{}.bin", chip.name()),
            &[i as u8, 3],
            &img,
        )?;
    }
    let nohash = image(Chip::Esp32, "v2.0.0", 6_000, 5, false);
    c.put("image_stream", "gen-nohash.bin", &[0, 11], &nohash)?;
    for (name, ctl) in [
        ("plain", 0x04u8),
        ("journal", 0x25),
        ("interrupt", 0x65),
        ("newer", 0x0C),
    ] {
        let img = image(Chip::Esp32, "v2.0.0", 30_000, 4, true);
        c.put("app_update", &format!("gen-{name}.bin"), &[ctl, 5], &img)?;
    }

    // Partition tables: binary with and without MD5, CSV text.
    let opts = ota_core::partition::CsvOptions {
        flash_size: Some(8 << 20),
        ..Default::default()
    };
    let t = PartitionTable::from_csv(CSV, &opts).expect("seed CSV");
    for md5 in [true, false] {
        let mut bin = [0xFFu8; TABLE_MAX_LEN];
        t.to_binary(md5, &mut bin).expect("binary");
        c.put("partition_table", &format!("gen-md5-{md5}.bin"), &[3], &bin)?;
    }
    c.put("partition_table", "gen.csv", &[3], CSV.as_bytes())?;

    // otadata sectors from real flows on the fuzz device.
    let t = fuzz_table();
    let od_part = *t.otadata().unwrap();
    let mut f = EmuFlash::in_memory(0xB0000);
    let v1 = image(Chip::Esp32, "v1.0.0", 20_000, 3, true);
    f.write(0x10000, &v1).unwrap();
    let sectors = |f: &mut EmuFlash| {
        let od = OtaData::read(f, &od_part).expect("otadata");
        let s = od.to_sectors();
        let mut v = s[0].to_vec();
        v.extend_from_slice(&s[1]);
        v
    };
    c.put("otadata", "erased.bin", &[0], &sectors(&mut f))?;
    boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).expect("boot");
    c.put("otadata", "after-first-boot.bin", &[0], &sectors(&mut f))?;
    let mut od = OtaData::read(&mut f, &od_part).unwrap();
    od.set_boot(&mut f, &od_part, 1, 2, true).unwrap();
    c.put("otadata", "new-rollback.bin", &[3], &sectors(&mut f))?;
    let pending = OtaSelectEntry::new(2, OtaState::PendingVerify).to_bytes();
    let mut s = sectors(&mut f);
    s[ENTRY_SIZE..].copy_from_slice(&pending);
    c.put("otadata", "pending-verify.bin", &[2], &s)?;
    let invalid = OtaSelectEntry::new(7, OtaState::Invalid).to_bytes();
    let mut s = invalid.to_vec();
    s.extend_from_slice(&OtaSelectEntry::new(8, OtaState::Aborted).to_bytes());
    c.put("otadata", "invalid-aborted.bin", &[2], &s)?;

    // Tone bins made by the packer.
    let mp3 = vec![0x55u8; 1500];
    let wav = vec![0x21u8; 777];
    let entries = [
        ToneEntry {
            name: "a.mp3",
            data: &mp3,
        },
        ToneEntry {
            name: "b.wav",
            data: &wav,
        },
    ];
    for format in [0u32, 1] {
        let mut out = Vec::new();
        pack(
            &entries,
            format,
            "v1.2.3",
            "12:00:00",
            "2025-01-01",
            &mut |b: &[u8]| out.extend_from_slice(b),
        )
        .expect("pack");
        c.put("tone", &format!("gen-format{format}.bin"), &[0, 100], &out)?;
    }

    // Configs.
    for (i, text) in CONFIGS.iter().enumerate() {
        c.put("config", &format!("readme-{i}.toml"), &[], text.as_bytes())?;
    }

    // Catalogues: plain, and signed by the fuzz target's fixed keys (control byte 0: Ed25519,
    // 1: P-256), so the fuzzer starts from documents that verify.
    let cat = ota_catalogue::Catalogue {
        format: ota_catalogue::CATALOGUE_FORMAT,
        serial: None,
        entries: Vec::new(),
    };
    c.put("signed_catalogue", "plain.json", &[0], &cat.to_json())?;
    for (ctl, alg) in [
        (0u8, ota_catalogue::signed::Algorithm::Ed25519),
        (1, ota_catalogue::signed::Algorithm::EcdsaP256),
    ] {
        let key = ota_catalogue::signed::SigningKey::from_secret_bytes(alg, &[7; 32]).expect("key");
        let doc = key.sign(&cat, 1_796_000_000_000);
        c.put("signed_catalogue", &format!("signed-{alg}.json"), &[ctl], &doc.json)?;
        c.put(
            "signed_catalogue",
            &format!("payload-{alg}.json"),
            &[ctl],
            &doc.catalogue.to_json(),
        )?;
    }

    // A resume log of an interrupted journaled update, and the slot bytes it describes.
    let slot = *t.ota(1).unwrap();
    let log = ResumeLog::locate(&t, &slot).expect("log");
    let img = image(Chip::Esp32, "v2.0.0", 40_000, 3, true);
    let v = Validator::new(ValidatorKind::ETag, "\"seed\"").unwrap();
    let h = ResumeHeader::new(&slot, "http://127.0.0.1/app.bin", v, img.len() as u32);
    let mut g = EmuFlash::in_memory(0xB0000);
    let mut rec = log.start(&mut g, &h).unwrap();
    for cp in [4096u32, 8192, 12288] {
        log.checkpoint(&mut g, &mut rec, cp).unwrap();
    }
    let mut sector = vec![0u8; 4096];
    g.read_into(log.region().offset, &mut sector);
    let split = 4096u16.to_be_bytes();
    c.put(
        "resume_log",
        "interrupted.bin",
        &split,
        &[sector, img].concat(),
    )?;

    // Delta patches over the fuzz device's base (v1.0.0, 20,000 bytes, as ota_fuzz::app makes
    // it) to two newer images, made by ota-delta: heatshrink and none, bare and behind the
    // esp_delta_ota header; with and without the expected size, a resume log and a cut.
    let app = |version: &str, size: u32| {
        let mut spec = ImageSpec::new(Chip::Esp32, "app", version);
        spec.total_size = Some(size);
        let mut out = Vec::new();
        build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).expect("build image");
        out
    };
    let base = app("v1.0.0", 20_000);
    for (version, size) in [("v1.1.0", 20_000u32), ("v1.2.0", 23_000)] {
        let new = app(version, size);
        let size16 = (new.len() as u16).to_le_bytes();
        for (cname, compression) in [
            ("heatshrink", ota_delta::Compression::Heatshrink),
            ("none", ota_delta::Compression::None),
        ] {
            for esp_header in [false, true] {
                let opts = ota_delta::Options {
                    compression,
                    esp_header,
                };
                let patch = ota_delta::make(&base, &new, &opts).expect("seed patch");
                for ctl in [0x00u8, 0x04 | u8::from(esp_header), 0x64, 0x2c] {
                    c.put(
                        "delta_update",
                        &format!("{version}-{cname}-esp{}-ctl{ctl:02x}.bin", u8::from(esp_header)),
                        &[ctl, 7, size16[0], size16[1]],
                        &patch,
                    )?;
                }
            }
        }
    }

    println!(
        "wrote {} seed files to {} ({} copied from {})",
        c.count,
        c.root.display(),
        copied,
        vectors.display()
    );
    Ok(())
}

trait ReadInto {
    fn read_into(&mut self, at: u32, buf: &mut [u8]);
}

impl ReadInto for EmuFlash {
    fn read_into(&mut self, at: u32, buf: &mut [u8]) {
        use embedded_storage::nor_flash::ReadNorFlash;
        self.read(at, buf).expect("read");
    }
}
