//! The front door, `OtaUpdater`, driven as an app on a chip drives it: a RAM flash with the
//! granularity of the chip's flash driver (1-byte and 4-byte words, like esp-storage), the
//! 2nd-stage bootloader emulated by `ota_core::boot` at every restart.
//!
//! Every scenario runs at write/read sizes 1 and 4 (esp-storage's word).

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use ota_core::boot::{boot, BootConfig, BootOutcome};
use ota_core::image::{build_image, ImageSpec};
use ota_core::mem_flash::MemFlash;
use ota_core::otadata::{OtaData, OtaState};
use ota_core::partition::{CsvOptions, Partition, PartitionTable, TABLE_MAX_LEN, TABLE_OFFSET};
use ota_core::update::UpdateError;
use ota_core::updater::{AppKind, Call, OtaUpdater, Phase, Slot, UpdaterConfig, UpdaterError};
use ota_core::version::VersionPolicy;
use ota_core::{Chip, Error};

const CHIP: Chip = Chip::Esp32c3;
const FLASH_SIZE: usize = 4 << 20;
const OTADATA: usize = 0xD000;
const OTA_0: usize = 0x10000;
const OTA_1: usize = 0x110000;
const SLOT_SIZE: usize = 0x100000;
const IMAGE_SIZE: u32 = 120_000;

/// ESP-IDF's "two OTA definitions" table (esp-idf `components/partition_table/partitions_two_ota.csv`).
const TABLE_CSV: &str = "nvs, data, nvs, 0x9000, 0x4000\n\
                         otadata, data, ota, 0xd000, 0x2000\n\
                         phy_init, data, phy, 0xf000, 0x1000\n\
                         ota_0, app, ota_0, 0x10000, 1M\n\
                         ota_1, app, ota_1, 0x110000, 1M\n";

fn slot(n: u8) -> Slot {
    Slot::new(n).unwrap()
}

fn image(version: &str, secure_version: u32) -> Vec<u8> {
    let mut spec = ImageSpec::new(CHIP, "door", version);
    spec.total_size = Some(IMAGE_SIZE);
    spec.secure_version = secure_version;
    let mut out = Vec::new();
    build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
    out
}

fn rollback_boot() -> BootConfig {
    BootConfig {
        rollback: true,
        ..BootConfig::default()
    }
}

/// A device as esptool leaves it (table, `v1.0.0` in ota_0), booted once.
struct Device {
    mem: Vec<u8>,
    table: PartitionTable,
    boot_cfg: BootConfig,
}

impl Device {
    fn new(boot_cfg: BootConfig, v1: &[u8]) -> Device {
        let table = PartitionTable::from_csv(TABLE_CSV, &CsvOptions::default()).unwrap();
        let mut bin = [0xFF; TABLE_MAX_LEN];
        table.to_binary(true, &mut bin).unwrap();
        let mut mem = vec![0xFF; FLASH_SIZE];
        mem[TABLE_OFFSET as usize..][..TABLE_MAX_LEN].copy_from_slice(&bin);
        mem[OTA_0..][..v1.len()].copy_from_slice(v1);
        let mut d = Device {
            mem,
            table,
            boot_cfg,
        };
        assert_eq!(d.restart::<1>().partition.offset, OTA_0 as u32);
        d
    }

    fn rollback() -> Device {
        Device::new(rollback_boot(), &image("v1.0.0", 0))
    }

    /// A reset: the bootloader runs (and makes its otadata writes).
    fn restart<const W: usize>(&mut self) -> BootOutcome {
        let mut f = MemFlash::<W, W>::new(&mut self.mem);
        boot(&mut f, &self.table, CHIP, &self.boot_cfg, &mut |_| {}).unwrap()
    }

    fn otadata(&self) -> Vec<u8> {
        self.mem[OTADATA..OTADATA + 0x2000].to_vec()
    }

    /// An update installed without the updater (what a previous run left): `img` in ota_1,
    /// otadata switched to it as NEW.
    fn stage<const W: usize>(&mut self, img: &[u8]) {
        self.mem[OTA_1..][..img.len()].copy_from_slice(img);
        let part = *self.table.otadata().unwrap();
        let mut f = MemFlash::<W, W>::new(&mut self.mem);
        let mut od = OtaData::read(&mut f, &part).unwrap();
        od.set_boot(&mut f, &part, 1, 2, true).unwrap();
    }

    fn version(out: &BootOutcome) -> String {
        out.summary.app_desc.unwrap().version_str().to_string()
    }
}

fn cfg() -> UpdaterConfig {
    UpdaterConfig::new(CHIP).with_rollback(true)
}

/// Stream `img` in `chunk`-byte pieces through a full begin/write/finish.
fn install<F: NorFlash>(
    ota: &mut OtaUpdater<'_, F>,
    img: &[u8],
    chunk: usize,
    announce: bool,
) -> Result<ota_core::updater::Installed, UpdaterError<F::Error>> {
    let len = announce.then_some(img.len() as u32);
    ota.begin(len, VersionPolicy::Semver)?;
    for c in img.chunks(chunk) {
        ota.write(c)?;
    }
    ota.finish()
}

macro_rules! at_sizes {
    ($scenario:ident, $w1:ident, $w4:ident) => {
        #[test]
        fn $w1() {
            $scenario::<1>();
        }
        #[test]
        fn $w4() {
            $scenario::<4>();
        }
    };
    ($scenario:ident, $w1:ident, $w4:ident, streams) => {
        #[test]
        fn $w1() {
            $scenario::<1>();
        }
        #[test]
        fn $w4() {
            $scenario::<4>();
        }
    };
}

// ---------------------------------------------------------------------------------------------

fn full_update_then_restart_then_mark_valid<const W: usize>() {
    let mut dev = Device::rollback();
    let v2 = image("v2.0.0", 0);
    let before = dev.otadata();
    let mut buf = [0u8; TABLE_MAX_LEN];
    {
        let mut f = MemFlash::<W, W>::new(&mut dev.mem);
        let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
        let me = ota.running().unwrap();
        assert_eq!(me.kind, AppKind::Ota(slot(0)));
        assert_eq!(me.state, Some(OtaState::Valid));
        assert_eq!(
            ota.begin(Some(v2.len() as u32), VersionPolicy::Semver)
                .unwrap(),
            slot(1)
        );
        for c in v2.chunks(4096) {
            ota.write(c).unwrap();
        }
        let done = ota.finish().unwrap();
        assert_eq!(done.slot, slot(1));
        assert_eq!(done.partition.offset, OTA_1 as u32);
        assert_eq!(done.summary.app_desc.unwrap().version_str(), "v2.0.0");
    }
    assert_ne!(dev.otadata(), before, "finish switched otadata");
    assert_eq!(&dev.mem[OTA_1..][..v2.len()], &v2[..]);
    // Restart: the new app boots once, PENDING_VERIFY.
    let out = dev.restart::<W>();
    assert_eq!(out.partition.offset, OTA_1 as u32);
    assert_eq!(out.ota_state, Some(OtaState::PendingVerify));
    {
        let mut f = MemFlash::<W, W>::new(&mut dev.mem);
        let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
        let me = ota.running().unwrap();
        assert_eq!(me.kind, AppKind::Ota(slot(1)));
        assert_eq!(me.state, Some(OtaState::PendingVerify));
        let marked = ota.mark_valid().unwrap();
        assert_eq!(marked.was, Some(OtaState::PendingVerify));
        assert_eq!(ota.running().unwrap().state, Some(OtaState::Valid));
        // Once more is a no-op, as in ESP-IDF.
        assert_eq!(ota.mark_valid().unwrap().was, None);
    }
    // Confirmed: it keeps booting.
    for _ in 0..2 {
        let out = dev.restart::<W>();
        assert_eq!(Device::version(&out), "v2.0.0");
        assert_eq!(out.ota_state, Some(OtaState::Valid));
    }
    // And the next update goes to ota_0.
    let mut f = MemFlash::<W, W>::new(&mut dev.mem);
    let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
    let v3 = image("v3.0.0", 0);
    assert_eq!(install(&mut ota, &v3, 4096, true).unwrap().slot, slot(0));
}
at_sizes!(
    full_update_then_restart_then_mark_valid,
    front_door_installs_boots_and_confirms_at_write_size_1,
    front_door_installs_boots_and_confirms_at_write_size_4,
    streams
);

fn unconfirmed_app_is_rolled_back<const W: usize>() {
    let mut dev = Device::rollback();
    dev.stage::<W>(&image("v2.0.0", 0));
    let out = dev.restart::<W>();
    assert_eq!(out.ota_state, Some(OtaState::PendingVerify));
    let mut buf = [0u8; TABLE_MAX_LEN];
    {
        // The new app runs and sees itself unconfirmed: a further update is refused
        // (esp_ota_begin, ESP_ERR_OTA_ROLLBACK_INVALID_STATE) and nothing is written.
        let mut f = MemFlash::<W, W>::new(&mut dev.mem);
        let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
        assert_eq!(ota.running().unwrap().kind, AppKind::Ota(slot(1)));
        assert_eq!(ota.running().unwrap().state, Some(OtaState::PendingVerify));
        let e = ota.begin(None, VersionPolicy::None).unwrap_err();
        assert!(
            matches!(
                e,
                UpdaterError::Core(Error::Update(UpdateError::RollbackInvalidState { .. }))
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("PENDING_VERIFY"), "{e}");
        // begin failed: still idle.
        assert!(matches!(
            ota.write(&[0xE9]),
            Err(UpdaterError::OutOfOrder {
                call: Call::Write,
                phase: Phase::Idle
            })
        ));
    }
    let snapshot = dev.mem.clone();
    // It never confirms itself: the next reset rolls back to ota_0.
    let out = dev.restart::<W>();
    assert_eq!(out.partition.offset, OTA_0 as u32);
    assert_eq!(Device::version(&out), "v1.0.0");
    assert_ne!(snapshot, dev.mem, "the bootloader aborted the entry");
    let mut f = MemFlash::<W, W>::new(&mut dev.mem);
    let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
    let me = ota.running().unwrap();
    assert_eq!(me.kind, AppKind::Ota(slot(0)));
    assert_eq!(me.state, Some(OtaState::Valid));
    // ota_0 is confirmed: a new update may begin, into ota_1 again.
    assert_eq!(ota.begin(None, VersionPolicy::None).unwrap(), slot(1));
}
at_sizes!(
    unconfirmed_app_is_rolled_back,
    unconfirmed_app_is_rolled_back_and_blocks_updates_at_write_size_1,
    unconfirmed_app_is_rolled_back_and_blocks_updates_at_write_size_4
);

fn mark_invalid_boots_the_previous_app<const W: usize>() {
    let mut dev = Device::rollback();
    dev.stage::<W>(&image("v2.0.0", 0));
    dev.restart::<W>();
    let mut buf = [0u8; TABLE_MAX_LEN];
    {
        let mut f = MemFlash::<W, W>::new(&mut dev.mem);
        let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
        assert_eq!(ota.running().unwrap().kind, AppKind::Ota(slot(1)));
        ota.mark_invalid().unwrap();
        assert_eq!(ota.running().unwrap().state, Some(OtaState::Invalid));
        // otadata now selects ota_0: this app's state can no longer be changed.
        assert!(matches!(
            ota.mark_valid(),
            Err(UpdaterError::NotSelected {
                running: AppKind::Ota(s),
                selected: Some(t),
            }) if s == slot(1) && t == slot(0)
        ));
    }
    let out = dev.restart::<W>();
    assert_eq!(out.partition.offset, OTA_0 as u32);
    assert_eq!(Device::version(&out), "v1.0.0");

    // With nothing to fall back to (ota_0 broken), mark_invalid refuses and writes nothing.
    let mut dev = Device::rollback();
    dev.stage::<W>(&image("v2.0.0", 0));
    dev.restart::<W>();
    dev.mem[OTA_0 + 5000] ^= 0x40;
    let before = dev.mem.clone();
    let mut f = MemFlash::<W, W>::new(&mut dev.mem);
    let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
    let e = ota.mark_invalid().unwrap_err();
    assert!(matches!(e, UpdaterError::Core(Error::OtaData(_))), "{e:?}");
    assert!(dev.mem == before);
}
at_sizes!(
    mark_invalid_boots_the_previous_app,
    mark_invalid_boots_the_previous_app_at_write_size_1,
    mark_invalid_boots_the_previous_app_at_write_size_4
);

fn anti_rollback_refuses_an_old_image_before_anything_is_erased<const W: usize>() {
    let boot_cfg = BootConfig {
        rollback: true,
        anti_rollback: true,
        efuse_secure_version: 2,
        ..BootConfig::default()
    };
    let mut dev = Device::new(boot_cfg, &image("v1.0.0", 2));
    // Old bytes in ota_1 show whether anything was erased.
    dev.mem[OTA_1..OTA_1 + SLOT_SIZE].fill(0x5A);
    let before = dev.mem.clone();
    let mut buf = [0u8; TABLE_MAX_LEN];
    let cfg = UpdaterConfig::new(CHIP).with_anti_rollback(2);
    assert!(cfg.rollback, "anti-rollback implies rollback");
    let mut f = MemFlash::<W, W>::new(&mut dev.mem);
    let mut ota = OtaUpdater::new(&mut f, cfg, &mut buf).unwrap();
    assert_eq!(ota.running().unwrap().kind, AppKind::Ota(slot(0)));
    let old = image("v9.0.0", 1);
    ota.begin(Some(old.len() as u32), VersionPolicy::None)
        .unwrap();
    // The first write that completes the 289-byte prefix is refused.
    ota.write(&old[..100]).unwrap();
    let e = ota.write(&old[100..8192]).unwrap_err();
    assert!(
        matches!(
            e,
            UpdaterError::Core(Error::Update(UpdateError::SecureVersionTooLow {
                version: 1,
                efuse: 2,
                ..
            }))
        ),
        "{e:?}"
    );
    // The update is over.
    assert!(matches!(
        ota.finish(),
        Err(UpdaterError::OutOfOrder {
            call: Call::Finish,
            phase: Phase::Idle
        })
    ));
    assert!(dev.mem == before, "nothing erased or written");
    let out = dev.restart::<W>();
    assert_eq!(out.partition.offset, OTA_0 as u32);
}
at_sizes!(
    anti_rollback_refuses_an_old_image_before_anything_is_erased,
    anti_rollback_refuses_an_old_image_before_anything_is_erased_at_write_size_1,
    anti_rollback_refuses_an_old_image_before_anything_is_erased_at_write_size_4
);

fn anti_rollback_installs_an_image_at_the_efuse_version<const W: usize>() {
    let boot_cfg = BootConfig {
        rollback: true,
        anti_rollback: true,
        efuse_secure_version: 2,
        ..BootConfig::default()
    };
    let mut dev = Device::new(boot_cfg, &image("v1.0.0", 2));
    let mut buf = [0u8; TABLE_MAX_LEN];
    {
        let mut f = MemFlash::<W, W>::new(&mut dev.mem);
        let mut ota = OtaUpdater::new(
            &mut f,
            UpdaterConfig::new(CHIP).with_anti_rollback(2),
            &mut buf,
        )
        .unwrap();
        install(&mut ota, &image("v2.0.0", 3), 1500, true).unwrap();
    }
    let out = dev.restart::<W>();
    assert_eq!(Device::version(&out), "v2.0.0");
    let mut f = MemFlash::<W, W>::new(&mut dev.mem);
    let mut ota = OtaUpdater::new(
        &mut f,
        UpdaterConfig::new(CHIP).with_anti_rollback(2),
        &mut buf,
    )
    .unwrap();
    // Confirming raises the eFuse counter to the app's secure_version.
    assert_eq!(ota.mark_valid().unwrap().efuse_secure_version, Some(3));
}
at_sizes!(
    anti_rollback_installs_an_image_at_the_efuse_version,
    anti_rollback_installs_and_burns_the_new_secure_version_at_write_size_1,
    anti_rollback_installs_and_burns_the_new_secure_version_at_write_size_4,
    streams
);

fn calls_out_of_order_are_refused<const W: usize>() {
    let mut dev = Device::rollback();
    let before = dev.mem.clone();
    let mut buf = [0u8; TABLE_MAX_LEN];
    let mut f = MemFlash::<W, W>::new(&mut dev.mem);
    let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
    let order = |call, phase| UpdaterError::OutOfOrder { call, phase };
    assert_eq!(
        ota.write(&[0; 16]).unwrap_err(),
        order(Call::Write, Phase::Idle)
    );
    assert_eq!(ota.finish().unwrap_err(), order(Call::Finish, Phase::Idle));
    ota.begin(None, VersionPolicy::None).unwrap();
    assert_eq!(
        ota.begin(None, VersionPolicy::None).unwrap_err(),
        order(Call::Begin, Phase::Writing)
    );
    let msg = ota
        .begin(None, VersionPolicy::None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("begin called out of order"), "{msg}");
    ota.abort();
    assert_eq!(
        ota.write(&[0; 16]).unwrap_err(),
        order(Call::Write, Phase::Idle)
    );
    // The announced length holds: more is refused at once, fewer by finish.
    ota.begin(Some(1000), VersionPolicy::None).unwrap();
    assert_eq!(
        ota.write(&[0xE9; 1001]).unwrap_err(),
        UpdaterError::Length {
            expected: 1000,
            received: 1001
        }
    );
    ota.begin(Some(1000), VersionPolicy::None).unwrap();
    let v2 = image("v2.0.0", 0);
    ota.write(&v2[..200]).unwrap();
    assert_eq!(
        ota.finish().unwrap_err(),
        UpdaterError::Length {
            expected: 1000,
            received: 200
        }
    );
    assert_eq!(ota.finish().unwrap_err(), order(Call::Finish, Phase::Idle));
    assert!(dev.mem == before, "refused calls write nothing");
}
at_sizes!(
    calls_out_of_order_are_refused,
    calls_out_of_order_are_typed_errors_at_write_size_1,
    calls_out_of_order_are_typed_errors_at_write_size_4
);

fn after_finish_only_a_restart_is_left<const W: usize>() {
    let mut dev = Device::rollback();
    let mut buf = [0u8; TABLE_MAX_LEN];
    let mut f = MemFlash::<W, W>::new(&mut dev.mem);
    let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
    install(&mut ota, &image("v2.0.0", 0), 4096, true).unwrap();
    let order = |call| UpdaterError::OutOfOrder {
        call,
        phase: Phase::Committed,
    };
    assert_eq!(ota.finish().unwrap_err(), order(Call::Finish));
    assert_eq!(ota.write(&[0]).unwrap_err(), order(Call::Write));
    assert_eq!(
        ota.begin(None, VersionPolicy::None).unwrap_err(),
        order(Call::Begin)
    );
    // The active entry is the new app's now: confirming it unbooted would defeat rollback.
    assert_eq!(ota.mark_valid().unwrap_err(), order(Call::MarkValid));
    assert_eq!(ota.mark_invalid().unwrap_err(), order(Call::MarkInvalid));
    // A second updater opened before the restart refuses too (it reads otadata).
    let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
    assert_eq!(ota.running().unwrap().kind, AppKind::Ota(slot(0)));
    assert!(matches!(
        ota.mark_valid(),
        Err(UpdaterError::NotSelected { selected: Some(s), .. }) if s == slot(1)
    ));
}
at_sizes!(
    after_finish_only_a_restart_is_left,
    after_finish_only_a_restart_is_left_at_write_size_1,
    after_finish_only_a_restart_is_left_at_write_size_4,
    streams
);

fn an_image_refused_by_its_prefix_writes_nothing<const W: usize>() {
    let mut dev = Device::new(BootConfig::default(), &image("v1.0.0", 0));
    let mut buf = [0u8; TABLE_MAX_LEN];
    let mut other_chip = ImageSpec::new(Chip::Esp32, "door", "v2.0.0");
    other_chip.total_size = Some(IMAGE_SIZE);
    let mut esp32 = Vec::new();
    build_image(&other_chip, &mut |b: &[u8]| esp32.extend_from_slice(b)).unwrap();
    let mut not_an_image = image("v2.0.0", 0);
    not_an_image[0] = 0x00;
    let older = image("v0.9.0", 0);
    let cases: [(&[u8], &str); 3] = [
        (&esp32, "chip id"),
        (&not_an_image, "magic"),
        (&older, "not newer"),
    ];
    for (img, says) in cases {
        let before = dev.mem.clone();
        let mut f = MemFlash::<W, W>::new(&mut dev.mem);
        let mut ota = OtaUpdater::new(&mut f, UpdaterConfig::new(CHIP), &mut buf).unwrap();
        let e = install(&mut ota, img, 4096, true).unwrap_err();
        assert!(matches!(e, UpdaterError::Core(_)), "{e:?}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(dev.mem == before, "{says}: nothing written");
        assert_eq!(Device::version(&dev.restart::<W>()), "v1.0.0");
    }
}
at_sizes!(
    an_image_refused_by_its_prefix_writes_nothing,
    an_image_refused_by_its_prefix_writes_nothing_at_write_size_1,
    an_image_refused_by_its_prefix_writes_nothing_at_write_size_4
);

fn a_bad_image_never_switches_otadata<const W: usize>() {
    let v2 = image("v2.0.0", 0);
    let mut corrupt = v2.clone();
    corrupt[60_000] ^= 0x01;
    let short = &v2[..v2.len() - 100];
    let mut bad_hash = v2.clone();
    let n = bad_hash.len();
    bad_hash[n - 1] ^= 0xFF;
    let cases: [(&[u8], bool); 4] = [
        (&corrupt, true),
        (short, false),
        (short, true),
        (&bad_hash, false),
    ];
    for (rollback, boot_cfg) in [(false, BootConfig::default()), (true, rollback_boot())] {
        for (img, announce) in cases {
            let mut dev = Device::new(boot_cfg, &image("v1.0.0", 0));
            let before = dev.otadata();
            let mut buf = [0u8; TABLE_MAX_LEN];
            let mut f = MemFlash::<W, W>::new(&mut dev.mem);
            let cfg = UpdaterConfig::new(CHIP).with_rollback(rollback);
            let mut ota = OtaUpdater::new(&mut f, cfg, &mut buf).unwrap();
            let mut len = img.len() as u32;
            if !announce {
                // A stream of unknown length that ends early or carries a bad digest.
                len = 0;
            }
            let e = (|| {
                ota.begin((len > 0).then_some(len), VersionPolicy::None)?;
                for c in img.chunks(3000) {
                    ota.write(c)?;
                }
                ota.finish()
            })()
            .unwrap_err();
            assert!(matches!(e, UpdaterError::Core(_)), "{e:?}");
            // Without rollback otadata is untouched; with it, begin may only erase the
            // inactive entry (blank here), so it is untouched too.
            assert_eq!(dev.otadata(), before, "rollback {rollback}: {e}");
            let out = dev.restart::<W>();
            assert_eq!(out.partition.offset, OTA_0 as u32);
            assert_eq!(Device::version(&out), "v1.0.0");
        }
    }
}
at_sizes!(
    a_bad_image_never_switches_otadata,
    a_bad_image_never_switches_otadata_at_write_size_1,
    a_bad_image_never_switches_otadata_at_write_size_4,
    streams
);

fn any_chunk_size_installs_the_image<const W: usize>() {
    let v2 = image("v2.0.0", 0);
    for (chunk, announce) in [(1, true), (7, false), (4096, true), (v2.len(), false)] {
        let mut dev = Device::rollback();
        let mut buf = [0u8; TABLE_MAX_LEN];
        {
            let mut f = MemFlash::<W, W>::new(&mut dev.mem);
            let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
            let done = install(&mut ota, &v2, chunk, announce).unwrap();
            assert_eq!(done.slot, slot(1), "chunk {chunk}");
        }
        assert_eq!(&dev.mem[OTA_1..][..v2.len()], &v2[..], "chunk {chunk}");
        let out = dev.restart::<W>();
        assert_eq!(Device::version(&out), "v2.0.0", "chunk {chunk}");
    }
}
at_sizes!(
    any_chunk_size_installs_the_image,
    chunks_of_1_7_4096_and_the_whole_image_install_it_at_write_size_1,
    chunks_of_1_7_4096_and_the_whole_image_install_it_at_write_size_4,
    streams
);

/// A flash whose power fails after `budget` more bytes are programmed: the write in progress
/// is torn at a word boundary, every later erase or write fails.
struct PowerCut<'m, const W: usize> {
    flash: MemFlash<'m, W, W>,
    budget: usize,
}

#[derive(Debug, PartialEq, Eq)]
struct PowerLost;

impl NorFlashError for PowerLost {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}

impl<const W: usize> ErrorType for PowerCut<'_, W> {
    type Error = PowerLost;
}

impl<const W: usize> ReadNorFlash for PowerCut<'_, W> {
    const READ_SIZE: usize = W;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), PowerLost> {
        self.flash.read(offset, bytes).map_err(|_| PowerLost)
    }
    fn capacity(&self) -> usize {
        self.flash.capacity()
    }
}

impl<const W: usize> NorFlash for PowerCut<'_, W> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), PowerLost> {
        if self.budget == 0 {
            return Err(PowerLost);
        }
        self.flash.erase(from, to).map_err(|_| PowerLost)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), PowerLost> {
        if bytes.len() <= self.budget {
            self.budget -= bytes.len();
            return self.flash.write(offset, bytes).map_err(|_| PowerLost);
        }
        let torn = self.budget / W * W;
        self.budget = 0;
        self.flash
            .write(offset, &bytes[..torn])
            .map_err(|_| PowerLost)?;
        Err(PowerLost)
    }
}

fn a_power_cut_mid_write_leaves_the_old_app_booting<const W: usize>() {
    let v2 = image("v2.0.0", 0);
    // Cuts in the slot's first erase, its prefix, inside sectors, in the last write, and in
    // the otadata entry that finish writes (after the whole image).
    for budget in [0, 289, 5000, 4096 * 7 + 2, v2.len() - 1, v2.len() + 10] {
        let mut dev = Device::rollback();
        let mut buf = [0u8; TABLE_MAX_LEN];
        {
            let mut cut = PowerCut {
                flash: MemFlash::<W, W>::new(&mut dev.mem),
                budget,
            };
            let mut ota = OtaUpdater::new(&mut cut, cfg(), &mut buf).unwrap();
            let e = install(&mut ota, &v2, 1000, true).unwrap_err();
            // The driver's own error comes back, with what ota-core was doing.
            match e {
                UpdaterError::Flash { error, driver } => {
                    assert_eq!(driver, PowerLost);
                    let at = error.offset as usize;
                    assert!(
                        (OTA_1..OTA_1 + SLOT_SIZE).contains(&at)
                            || (OTADATA..OTADATA + 0x2000).contains(&at),
                        "budget {budget}: {error}"
                    );
                }
                e => panic!("budget {budget}: {e:?}"),
            }
        }
        let out = dev.restart::<W>();
        assert_eq!(Device::version(&out), "v1.0.0", "budget {budget}");
        // Re-opened after the restart: the same update goes through.
        let mut f = MemFlash::<W, W>::new(&mut dev.mem);
        let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
        assert_eq!(ota.running().unwrap().kind, AppKind::Ota(slot(0)));
        install(&mut ota, &v2, 1000, true).unwrap();
        assert_eq!(Device::version(&dev.restart::<W>()), "v2.0.0");
    }
    // Cut between writes: the updater is dropped half-way (the app reset).
    let mut dev = Device::rollback();
    let mut buf = [0u8; TABLE_MAX_LEN];
    {
        let mut f = MemFlash::<W, W>::new(&mut dev.mem);
        let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
        ota.begin(Some(v2.len() as u32), VersionPolicy::None)
            .unwrap();
        for c in v2[..v2.len() / 2].chunks(4096) {
            ota.write(c).unwrap();
        }
    }
    assert_eq!(Device::version(&dev.restart::<W>()), "v1.0.0");
}
at_sizes!(
    a_power_cut_mid_write_leaves_the_old_app_booting,
    a_power_cut_mid_write_leaves_the_old_app_booting_at_write_size_1,
    a_power_cut_mid_write_leaves_the_old_app_booting_at_write_size_4,
    streams
);

fn running_app_follows_the_bootloader_or_the_given_address<const W: usize>() {
    // otadata selects ota_1, but its image is broken: the bootloader fell back to ota_0.
    let mut dev = Device::new(BootConfig::default(), &image("v1.0.0", 0));
    let mut broken = image("v2.0.0", 0);
    broken[70_000] ^= 0x10;
    dev.stage::<W>(&broken);
    assert_eq!(dev.restart::<W>().partition.offset, OTA_0 as u32);
    let before = dev.mem.clone();
    let mut buf = [0u8; TABLE_MAX_LEN];
    let mut f = MemFlash::<W, W>::new(&mut dev.mem);
    {
        let mut ota = OtaUpdater::new(&mut f, UpdaterConfig::new(CHIP), &mut buf).unwrap();
        let me = ota.running().unwrap();
        assert_eq!(me.kind, AppKind::Ota(slot(0)), "not the slot otadata names");
        assert_eq!(me.partition.offset, OTA_0 as u32);
        // Changing "its" state would change ota_1's entry: refused.
        assert!(matches!(
            ota.mark_valid(),
            Err(UpdaterError::NotSelected {
                running: AppKind::Ota(r),
                selected: Some(s)
            }) if r == slot(0) && s == slot(1)
        ));
    }
    // Firmware that knows where it runs says so.
    {
        let mut ota =
            OtaUpdater::new_running_at(&mut f, UpdaterConfig::new(CHIP), &mut buf, 0x110000 + 0x20)
                .unwrap();
        assert_eq!(ota.running().unwrap().kind, AppKind::Ota(slot(1)));
        assert_eq!(ota.running().unwrap().state, Some(OtaState::New));
        let e = OtaUpdater::new_running_at(&mut f, UpdaterConfig::new(CHIP), &mut buf, 0x9000)
            .err()
            .unwrap();
        assert_eq!(e, UpdaterError::NoAppAt { offset: 0x9000 });
    }
    assert!(
        dev.mem == before,
        "opening reads only: the dry-run boot writes nothing"
    );
}
at_sizes!(
    running_app_follows_the_bootloader_or_the_given_address,
    running_app_is_what_the_bootloader_booted_at_write_size_1,
    running_app_is_what_the_bootloader_booted_at_write_size_4
);

fn a_bad_table_or_one_without_otadata_is_refused<const W: usize>() {
    let mut dev = Device::rollback();
    let mut buf = [0u8; TABLE_MAX_LEN];
    // A flipped bit in the table: its MD5 no longer matches.
    dev.mem[TABLE_OFFSET as usize + 20] ^= 0x01;
    {
        let mut f = MemFlash::<W, W>::new(&mut dev.mem);
        let e = OtaUpdater::new(&mut f, cfg(), &mut buf).err().unwrap();
        assert!(
            matches!(e, UpdaterError::Core(Error::Partition(_))),
            "{e:?}"
        );
    }
    dev.mem[TABLE_OFFSET as usize + 20] ^= 0x01;
    // No otadata.
    let mut t = PartitionTable::new();
    for p in dev.table.iter().filter(|p| p.label.as_str() != "otadata") {
        t.push(Partition { ..*p }).unwrap();
    }
    let mut bin = [0xFF; TABLE_MAX_LEN];
    t.to_binary(true, &mut bin).unwrap();
    dev.mem[TABLE_OFFSET as usize..][..TABLE_MAX_LEN].copy_from_slice(&bin);
    let mut f = MemFlash::<W, W>::new(&mut dev.mem);
    let e = OtaUpdater::new_running_at(&mut f, cfg(), &mut buf, OTA_0 as u32)
        .err()
        .unwrap();
    assert_eq!(e, UpdaterError::Core(Error::Update(UpdateError::NoOtaData)));
}
at_sizes!(
    a_bad_table_or_one_without_otadata_is_refused,
    a_bad_table_or_one_without_otadata_is_refused_at_write_size_1,
    a_bad_table_or_one_without_otadata_is_refused_at_write_size_4
);

/// A flash whose reads inside `[bad, bad + 4096)` fail (a worn cell, a bus error).
struct BadReads<'m, const W: usize> {
    flash: MemFlash<'m, W, W>,
    bad: u32,
}

impl<const W: usize> ErrorType for BadReads<'_, W> {
    type Error = PowerLost;
}

impl<const W: usize> ReadNorFlash for BadReads<'_, W> {
    const READ_SIZE: usize = W;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), PowerLost> {
        let end = offset + bytes.len() as u32;
        if offset < self.bad + 4096 && end > self.bad {
            return Err(PowerLost);
        }
        self.flash.read(offset, bytes).map_err(|_| PowerLost)
    }
    fn capacity(&self) -> usize {
        self.flash.capacity()
    }
}

impl<const W: usize> NorFlash for BadReads<'_, W> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), PowerLost> {
        self.flash.erase(from, to).map_err(|_| PowerLost)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), PowerLost> {
        self.flash.write(offset, bytes).map_err(|_| PowerLost)
    }
}

fn a_read_error_while_finding_the_running_app_fails_instead_of_guessing<const W: usize>() {
    // ota_0 runs; ota_1 holds a good older app that otadata does not select.
    let mut dev = Device::rollback();
    dev.mem[OTA_1..][..IMAGE_SIZE as usize].copy_from_slice(&image("v0.5.0", 0));
    let before = dev.mem.clone();
    let mut buf = [0u8; TABLE_MAX_LEN];
    let mut f = BadReads {
        flash: MemFlash::<W, W>::new(&mut dev.mem),
        bad: OTA_0 as u32 + 0x8000,
    };
    // The dry-run boot cannot read ota_0 and would settle on ota_1, the slot `begin` must never
    // touch while ota_0 runs: the read error is reported instead.
    let e = OtaUpdater::new(&mut f, cfg(), &mut buf).err().unwrap();
    match e {
        UpdaterError::Flash { error, driver } => {
            assert_eq!(driver, PowerLost);
            assert!(error.to_string().contains("flash read"), "{error}");
        }
        e => panic!("{e:?}"),
    }
    // Told where it runs, the updater needs no such guess.
    let mut ota = OtaUpdater::new_running_at(&mut f, cfg(), &mut buf, OTA_0 as u32).unwrap();
    assert_eq!(ota.running().unwrap().kind, AppKind::Ota(slot(0)));
    // With a version policy, the running version must be readable: reading the descriptor at
    // 0x20 fails here, so begin refuses rather than compare with nothing.
    f.bad = OTA_0 as u32;
    let mut ota = OtaUpdater::new_running_at(&mut f, cfg(), &mut buf, OTA_0 as u32).unwrap();
    assert!(matches!(
        ota.begin(None, VersionPolicy::Semver),
        Err(UpdaterError::Flash { .. })
    ));
    assert_eq!(ota.begin(None, VersionPolicy::None).unwrap(), slot(1));
    assert!(dev.mem[..OTA_1] == before[..OTA_1]);
}
at_sizes!(
    a_read_error_while_finding_the_running_app_fails_instead_of_guessing,
    a_read_error_while_finding_the_running_app_fails_at_write_size_1,
    a_read_error_while_finding_the_running_app_fails_at_write_size_4
);

fn an_update_committed_since_boot_is_not_the_running_app<const W: usize>() {
    // A previous updater committed v2 to ota_1 (NEW); the device has not restarted.
    let mut dev = Device::rollback();
    dev.stage::<W>(&image("v2.0.0", 0));
    let before = dev.mem.clone();
    let mut buf = [0u8; TABLE_MAX_LEN];
    let mut f = MemFlash::<W, W>::new(&mut dev.mem);
    let mut ota = OtaUpdater::new(&mut f, cfg(), &mut buf).unwrap();
    // otadata selects ota_1, but a rollback bootloader would have made its entry
    // PENDING_VERIFY had it booted it: ota_0 runs.
    let me = ota.running().unwrap();
    assert_eq!(me.kind, AppKind::Ota(slot(0)));
    assert_eq!(me.state, Some(OtaState::Valid));
    assert!(matches!(
        ota.mark_valid(),
        Err(UpdaterError::NotSelected { selected: Some(s), .. }) if s == slot(1)
    ));
    // An update now goes to ota_1 again, never over the running ota_0.
    assert_eq!(ota.begin(None, VersionPolicy::None).unwrap(), slot(1));
    assert!(dev.mem == before);
    assert_eq!(Device::version(&dev.restart::<W>()), "v2.0.0");
}
at_sizes!(
    an_update_committed_since_boot_is_not_the_running_app,
    an_update_committed_since_boot_is_not_the_running_app_at_write_size_1,
    an_update_committed_since_boot_is_not_the_running_app_at_write_size_4
);

// --- Secure Boot v2 through the front door -----------------------------------------------

/// `img` padded to 4096 and a sector of one P-256 block by `key` (RFC 6979: deterministic).
fn signed(img: &[u8], key: &p256::ecdsa::SigningKey) -> Vec<u8> {
    use ota_core::secure_boot::{self, Curve, ImageDigests, SectorBuilder};
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    let mut out = img.to_vec();
    out.resize(img.len().div_ceil(4096) * 4096, 0xFF);
    let digest = ImageDigests::of(&out, false).sha256;
    let sig: p256::ecdsa::Signature = key.sign_prehash(&digest).unwrap();
    let point = key.verifying_key().to_encoded_point(false);
    let le = |a: &[u8], b: &[u8]| {
        a.iter()
            .rev()
            .chain(b.iter().rev())
            .copied()
            .collect::<Vec<u8>>()
    };
    let xy = le(point.x().unwrap(), point.y().unwrap());
    let rs = le(&sig.r().to_bytes(), &sig.s().to_bytes());
    let block = secure_boot::encode_ecdsa_block(Curve::P256, &digest, &xy, &rs).unwrap();
    let mut sb = SectorBuilder::new();
    sb.push(&block).unwrap();
    out.extend_from_slice(&sb.finish());
    out
}

fn p256_key(seed: u8) -> p256::ecdsa::SigningKey {
    let mut b = [seed; 32];
    b[0] = 1;
    p256::ecdsa::SigningKey::from_bytes(&b.into()).unwrap()
}

fn key_digest_of(key: &p256::ecdsa::SigningKey) -> [u8; 32] {
    let s = signed(&[0u8; 16], key);
    ota_core::secure_boot::SignatureSector::from_slice(&s[4096..])
        .unwrap()
        .block(0)
        .unwrap()
        .key_digest()
}

fn updater_refuses_an_untrusted_image_before_otadata_and_installs_a_signed_one<const W: usize>() {
    use ota_core::secure_boot::{AppSignatures, RefusalReason, SecureBootKeys};
    let (a, c) = (p256_key(1), p256_key(3));
    let keys = SecureBootKeys {
        digests: [Some(key_digest_of(&a)), None, None],
        revoked: 0,
        scheme: None,
    };
    let boot_cfg = BootConfig {
        secure_boot: Some(keys),
        ..rollback_boot()
    };
    let mut dev = Device::new(boot_cfg, &signed(&image("v1.0.0", 0), &a));
    let sig_cfg = cfg().with_signatures(AppSignatures::SecureBoot(keys));
    let v2 = image("v2.0.0", 0);
    for (img, want) in [
        (v2.clone(), RefusalReason::Unsigned),
        (signed(&v2, &c), RefusalReason::WrongKey),
    ] {
        let before = dev.otadata();
        let mut buf = [0u8; TABLE_MAX_LEN];
        {
            let mut f = MemFlash::<W, W>::new(&mut dev.mem);
            let mut ota = OtaUpdater::new(&mut f, sig_cfg, &mut buf).unwrap();
            match install(&mut ota, &img, 4096, true) {
                Err(UpdaterError::Core(Error::Update(UpdateError::Signature(e)))) => {
                    assert_eq!(e.reason(), want, "{e}")
                }
                other => panic!("{:?}", other.map(|_| ())),
            }
        }
        assert_eq!(dev.otadata(), before);
    }
    let mut buf = [0u8; TABLE_MAX_LEN];
    {
        let mut f = MemFlash::<W, W>::new(&mut dev.mem);
        let mut ota = OtaUpdater::new(&mut f, sig_cfg, &mut buf).unwrap();
        install(&mut ota, &signed(&v2, &a), 4096, true).unwrap();
    }
    // The bootloader with secure boot boots it.
    assert_eq!(Device::version(&dev.restart::<W>()), "v2.0.0");
}

at_sizes!(
    updater_refuses_an_untrusted_image_before_otadata_and_installs_a_signed_one,
    signed_update_at_write_size_1,
    signed_update_at_write_size_4
);
