//! An update writes only inside its own target (`ota_core::guard`): on a device whose partition
//! table the bootloader accepts but gen_esp32part would refuse (an app slot over the table, an
//! `ota_resume` partition inside the running app or on otadata, a staging or data partition over
//! the running app, otadata or the bootloader), `ota device run` fails the item before anything
//! is erased, names both regions, exits 1 and leaves the flash file byte-identical; the toolbox
//! (`ota partition write|erase`, `ota otadata switch|erase`) refuses to write the table or the
//! bootloader region the same way.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use ota_core::partition::{Label, Partition, PartitionTable, TABLE_MAX_LEN};

/// label, type, subtype, offset, size.
type Row = (&'static str, u8, u8, u32, u32);
const APP: u8 = 0x00;
const DATA: u8 = 0x01;
const OTA_0: u8 = 0x10;
const OTA_1: u8 = 0x11;
const OTADATA: u8 = 0x00;
const NVS: u8 = 0x02;
const PHY: u8 = 0x01;
const MIB: u32 = 0x10_0000;

/// The partition table offset of every device here (`CONFIG_PARTITION_TABLE_OFFSET` default).
const TABLE_OFFSET: usize = 0x8000;

struct Dev {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Dev {
    /// A device made by `ota device create` with `app v1.0.0` in ota_0, then given a binary
    /// partition table of `rows` (label, type, subtype, offset, size; with the MD5 entry, as
    /// gen_esp32part writes it, but never verified: gen_esp32part refuses these tables) over its
    /// table sector.
    fn new(rows: &[Row]) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let d = Dev {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        d.image("v1.bin", "v1.0.0", "30K");
        ok(&[
            "device",
            "create",
            "--flash",
            d.p("flash.bin"),
            "--app",
            d.p("v1.bin"),
        ]);
        let mut t = PartitionTable::new();
        for &(label, ptype, subtype, offset, size) in rows {
            t.push(Partition {
                ptype,
                subtype,
                offset,
                size,
                label: Label::new(label),
                flags: 0,
            })
            .unwrap();
        }
        let mut table = [0xFFu8; TABLE_MAX_LEN];
        t.to_binary(true, &mut table).unwrap();
        let mut flash = d.flash();
        flash[TABLE_OFFSET..TABLE_OFFSET + table.len()].copy_from_slice(&table);
        std::fs::write(d.dir.join("flash.bin"), &flash).unwrap();
        std::fs::create_dir_all(d.dir.join("sdcard")).unwrap();
        // The bootloader takes the table: the device boots its app.
        let boot = ok(&["device", "boot", "--flash", d.p("flash.bin")]);
        assert!(boot.contains("v1.0.0"), "{boot}");
        d
    }

    fn p(&self, name: &str) -> &str {
        let s = self.dir.join(name).to_str().unwrap().to_string();
        Box::leak(s.into_boxed_str())
    }

    fn image(&self, file: &str, version: &str, size: &str) {
        ok(&[
            "image",
            "make",
            "--chip",
            "esp32",
            "--project",
            "app",
            "--version",
            version,
            "--size",
            size,
            "-o",
            self.p(file),
        ]);
    }

    fn flash(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("flash.bin")).unwrap()
    }

    /// Put `bytes` on the SD card as `name` and run `config` (TOML).
    fn run(&self, name: &str, bytes: &[u8], config: &str) -> std::process::Output {
        std::fs::write(self.dir.join("sdcard").join(name), bytes).unwrap();
        std::fs::write(self.dir.join("ota.toml"), config).unwrap();
        ota(&[
            "device",
            "run",
            "--flash",
            self.p("flash.bin"),
            "--config",
            self.p("ota.toml"),
        ])
    }

    fn run_app(&self, image: &[u8]) -> std::process::Output {
        self.run(
            "app.bin",
            image,
            "[[upgrade]]\ntype = \"app\"\nuri = \"file://sdcard/app.bin\"\n",
        )
    }
}

/// The run failed (exit 1) naming `needles`, and the flash file is exactly `before`.
#[track_caller]
fn refused(o: &std::process::Output, needles: &[&str], flash: &Path, before: &[u8]) {
    let log = text(o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    for n in needles {
        assert!(log.contains(n), "missing {n:?} in:\n{log}");
    }
    assert!(
        std::fs::read(flash).unwrap() == before,
        "the flash file changed:\n{log}"
    );
}

fn app_bytes(d: &Dev, version: &str, size: &str) -> Vec<u8> {
    d.image("new.bin", version, size);
    std::fs::read(d.dir.join("new.bin")).unwrap()
}

/// nvs, otadata, phy_init, ota_0, ota_1 and flash_tone as in the ESP-ADF example, plus `extra`.
fn example_with(extra: Row) -> Vec<Row> {
    vec![
        ("nvs", DATA, NVS, 0x9000, 0x4000),
        ("otadata", DATA, OTADATA, 0xD000, 0x2000),
        ("phy_init", DATA, PHY, 0xF000, 0x1000),
        ("ota_0", APP, OTA_0, 0x10000, MIB),
        ("ota_1", APP, OTA_1, 0x110000, MIB),
        ("flash_tone", DATA, 0xFF, 0x210000, MIB),
        extra,
    ]
}

#[test]
fn an_app_slot_over_the_partition_table_is_refused_before_a_failed_update_erases_the_table() {
    // ota_1 covers 0x8000..0x10000: the table sector and nothing else.
    let d = Dev::new(&[
        ("ota_1", APP, OTA_1, 0x8000, 0x8000),
        ("ota_0", APP, OTA_0, 0x10000, MIB),
        ("otadata", DATA, OTADATA, 0x110000, 0x2000),
        ("nvs", DATA, NVS, 0x112000, 0x4000),
    ]);
    let before = d.flash();
    // An update that fails its verification once written (as the one seen did).
    let mut img = app_bytes(&d, "v2.0.0", "20K");
    let mid = img.len() / 2;
    img[mid] ^= 0x40;
    let o = d.run_app(&img);
    refused(
        &o,
        &[
            "app slot ota_1 at 0x8000..0x10000 (32768 bytes) overlaps the partition table at \
             0x8000..0x9000 (4096 bytes)",
            "nothing was erased or written",
            "ESP_ERR_OTA_PARTITION_CONFLICT",
            "1 of 1 upgrade items failed",
        ],
        &d.dir.join("flash.bin"),
        &before,
    );
    // A sound image is refused the same way: the table is never the update's to write.
    let o = d.run_app(&app_bytes(&d, "v2.0.0", "20K"));
    refused(
        &o,
        &["overlaps the partition table"],
        &d.dir.join("flash.bin"),
        &before,
    );
    let boot = ok(&["device", "boot", "--flash", d.p("flash.bin")]);
    assert!(boot.contains("v1.0.0"), "{boot}");
}

#[test]
fn an_ota_resume_partition_inside_the_running_app_is_refused_before_any_erase() {
    // 0x14000 lies inside the 30 KiB running app in ota_0 (0x10000..0x17800).
    let d = Dev::new(&example_with(("ota_resume", DATA, 0xFE, 0x14000, 0x1000)));
    let before = d.flash();
    let o = d.run_app(&app_bytes(&d, "v2.0.0", "40K"));
    refused(
        &o,
        &[
            "resume-record partition ota_resume at 0x14000..0x15000 (4096 bytes) overlaps the \
             running app ota_0 at 0x10000..0x110000 (1048576 bytes)",
            "nothing was erased or written",
        ],
        &d.dir.join("flash.bin"),
        &before,
    );
    // No brick: a power cut armed at the first byte never fires, since the run programs or
    // erases nothing at all, and the running app still boots.
    let o = ota(&[
        "device",
        "run",
        "--flash",
        d.p("flash.bin"),
        "--config",
        d.p("ota.toml"),
        "--power-cut-after-bytes",
        "1",
    ]);
    refused(
        &o,
        &["no power cut: this command programmed or erased 0 bytes"],
        &d.dir.join("flash.bin"),
        &before,
    );
    let boot = ok(&["device", "boot", "--flash", d.p("flash.bin")]);
    assert!(boot.contains("v1.0.0"), "{boot}");
    // Over HTTP (where the record would be written at once) the same refusal.
    let srv = Server::start(Reply::Body(app_bytes(&d, "v2.0.0", "40K")));
    std::fs::write(
        d.dir.join("ota.toml"),
        format!(
            "[[upgrade]]\ntype = \"app\"\nuri = \"{}\"\n",
            srv.url("app.bin")
        ),
    )
    .unwrap();
    let o = ota(&[
        "device",
        "run",
        "--flash",
        d.p("flash.bin"),
        "--config",
        d.p("ota.toml"),
    ]);
    refused(
        &o,
        &[
            "resume-record partition ota_resume",
            "overlaps the running app ota_0",
        ],
        &d.dir.join("flash.bin"),
        &before,
    );
}

#[test]
fn an_ota_resume_partition_on_otadata_is_refused_instead_of_a_success_that_never_boots() {
    let d = Dev::new(&example_with(("ota_resume", DATA, 0xFE, 0xD000, 0x1000)));
    let before = d.flash();
    let o = d.run_app(&app_bytes(&d, "v2.0.0", "40K"));
    let overlap =
        "otadata partition otadata at 0xd000..0xf000 (8192 bytes) overlaps resume-record \
                   partition ota_resume at 0xd000..0xe000 (4096 bytes)";
    refused(&o, &[overlap], &d.dir.join("flash.bin"), &before);
    // Over HTTP with an ETag, as seen: the record went to 0xd000, otadata[0] was switched
    // there, then clearing the record erased it again; exit 0, and v1.0.0 kept booting.
    let srv = ota_testsrv::FlakyServer::start(
        app_bytes(&d, "v2.0.0", "40K"),
        ota_testsrv::Faults::default(),
    )
    .unwrap();
    std::fs::write(
        d.dir.join("ota.toml"),
        format!(
            "[[upgrade]]\ntype = \"app\"\nuri = \"{}\"\n",
            srv.url("app.bin")
        ),
    )
    .unwrap();
    let o = ota(&[
        "device",
        "run",
        "--flash",
        d.p("flash.bin"),
        "--config",
        d.p("ota.toml"),
    ]);
    refused(&o, &[overlap], &d.dir.join("flash.bin"), &before);
}

#[test]
fn a_staging_partition_over_its_target_or_the_running_app_is_refused() {
    let raw = vec![0x5Au8; 10_000];
    let cfg =
        "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/d.bin\"\nlabel = \"flash_tone\"\n\
               staging = \"spare\"\n";
    // Over its target.
    let d = Dev::new(&example_with(("spare", DATA, 0xFE, 0x300000, 0x20000)));
    let before = d.flash();
    let o = d.run("d.bin", &raw, cfg);
    refused(
        &o,
        &[
            "data partition flash_tone at 0x210000..0x310000 (1048576 bytes) overlaps data \
           partition spare at 0x300000..0x320000 (131072 bytes)",
        ],
        &d.dir.join("flash.bin"),
        &before,
    );
    // Over the running app (and ota_1).
    let d = Dev::new(&example_with(("spare", DATA, 0xFE, 0x100000, 0x20000)));
    let before = d.flash();
    let o = d.run("d.bin", &raw, cfg);
    refused(
        &o,
        &[
            "staging partition spare at 0x100000..0x120000 (131072 bytes) overlaps the running \
             app ota_0 at 0x10000..0x110000 (1048576 bytes)",
        ],
        &d.dir.join("flash.bin"),
        &before,
    );
}

#[test]
fn a_data_partition_over_otadata_or_the_bootloader_is_refused() {
    let raw = vec![0x5Au8; 100];
    let cfg = "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/d.bin\"\nlabel = \"tone\"\n";
    let d = Dev::new(&example_with(("tone", DATA, 0xFE, 0xE000, 0x2000)));
    let before = d.flash();
    let o = d.run("d.bin", &raw, cfg);
    refused(
        &o,
        &[
            "data partition tone at 0xe000..0x10000 (8192 bytes) overlaps otadata partition \
             otadata at 0xd000..0xf000 (8192 bytes)",
        ],
        &d.dir.join("flash.bin"),
        &before,
    );
    let d = Dev::new(&example_with(("tone", DATA, 0xFE, 0x2000, 0x2000)));
    let before = d.flash();
    let o = d.run("d.bin", &raw, cfg);
    refused(
        &o,
        &[
            "data partition tone at 0x2000..0x4000 (8192 bytes) overlaps the bootloader region \
             at 0x0..0x8000 (32768 bytes) (2nd-stage bootloader at 0x1000)",
        ],
        &d.dir.join("flash.bin"),
        &before,
    );
    // A data item may not name otadata itself either.
    let cfg = "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/d.bin\"\nlabel = \"otadata\"\n";
    let o = d.run("d.bin", &raw, cfg);
    refused(
        &o,
        &["data partition otadata at 0xd000..0xf000 (8192 bytes) overlaps otadata partition otadata"],
        &d.dir.join("flash.bin"),
        &before,
    );
}

#[test]
fn toolbox_writes_refuse_the_partition_table_and_the_bootloader_region() {
    let d = Dev::new(&[
        ("ota_1", APP, OTA_1, 0x8000, 0x8000),
        ("ota_0", APP, OTA_0, 0x10000, MIB),
        ("otadata", DATA, OTADATA, 0x110000, 0x2000),
        ("boot_tail", DATA, 0xFE, 0x4000, 0x1000),
    ]);
    let before = d.flash();
    std::fs::write(d.dir.join("small.bin"), [0u8; 16]).unwrap();
    let flash = d.dir.join("flash.bin");
    for args in [
        vec![
            "partition",
            "write",
            "ota_1",
            "--flash",
            d.p("flash.bin"),
            d.p("small.bin"),
        ],
        vec!["partition", "erase", "ota_1", "--flash", d.p("flash.bin")],
    ] {
        let o = ota(&args);
        let log = text(&o);
        assert!(!o.status.success(), "{args:?}: {log}");
        assert!(
            log.contains(
                "partition ota_1 at 0x8000..0x10000 (32768 bytes) overlaps the partition table at \
                 0x8000..0x9000 (4096 bytes): refusing to change it"
            ),
            "{log}"
        );
        assert!(
            std::fs::read(&flash).unwrap() == before,
            "{args:?} changed the flash"
        );
    }
    let o = ota(&[
        "partition",
        "erase",
        "boot_tail",
        "--flash",
        d.p("flash.bin"),
    ]);
    let log = text(&o);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("overlaps the bootloader region at 0x0..0x8000"),
        "{log}"
    );
    assert!(std::fs::read(&flash).unwrap() == before);
    // Reading is still allowed.
    ok(&[
        "partition",
        "read",
        "ota_1",
        "--flash",
        d.p("flash.bin"),
        d.p("out.bin"),
    ]);
}

#[test]
fn otadata_switch_and_erase_refuse_an_otadata_over_the_partition_table() {
    let d = Dev::new(&[
        ("otadata", DATA, OTADATA, 0x8000, 0x2000),
        ("ota_0", APP, OTA_0, 0x10000, MIB),
        ("ota_1", APP, OTA_1, 0x110000, MIB),
    ]);
    let before = d.flash();
    let flash = d.dir.join("flash.bin");
    for args in [
        vec!["otadata", "switch", "ota_0", "--flash", d.p("flash.bin")],
        vec!["otadata", "erase", "--flash", d.p("flash.bin")],
    ] {
        let o = ota(&args);
        let log = text(&o);
        assert!(!o.status.success(), "{args:?}: {log}");
        assert!(
            log.contains(
                "otadata partition otadata at 0x8000..0xa000 (8192 bytes) overlaps the partition \
                 table at 0x8000..0x9000 (4096 bytes)"
            ),
            "{log}"
        );
        assert!(
            std::fs::read(&flash).unwrap() == before,
            "{args:?} changed the flash"
        );
    }
    ok(&["otadata", "read", "--flash", d.p("flash.bin")]);
}
