//! A device's life through `ota_sim::run`: power-on, the upgrade list, the restart, and the
//! new app confirming itself, waiting, or rolling back, on an emulated ESP32 with the ESP-ADF
//! example's table.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use ota_core::boot::{BootConfig, BootEvent, BootOutcome};
use ota_core::image::{build_image, ImageSpec};
use ota_core::otadata::OtaState;
use ota_core::partition::{CsvOptions, PartitionTable, TABLE_MAX_LEN, TABLE_OFFSET};
use ota_core::Chip;
use ota_emu::device::layout;
use ota_emu::EmuFlash;
use ota_service::config::Config;
use ota_service::items::AppItem;
use ota_service::source::{Phase, SdCardFs, SourceError};
use ota_service::{Event, RunReport, UpgradeItem};
use ota_sim::{Board, Error, Hooks, Quiet, SelfTest, Sources, UpgradeList};

const CSV: &str = "\
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
";
const FLASH_SIZE: u32 = 4 << 20;
const OTA_0: u32 = 0x10000;
const NEW_APP_URI: &str = "file://sdcard/new.bin";

fn image(version: &str, secure_version: u32) -> Vec<u8> {
    let mut spec = ImageSpec::new(Chip::Esp32, "app", version);
    spec.total_size = Some(40_000);
    spec.secure_version = secure_version;
    spec.fill_seed = version.bytes().map(u32::from).sum();
    let mut out = Vec::new();
    build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).expect("build image");
    out
}

/// A flash with the table and `v1.0.0` in ota_0, and the board's bootloader options.
fn device(rollback: bool, anti_rollback: bool) -> (EmuFlash, Board) {
    let opts = CsvOptions {
        flash_size: Some(FLASH_SIZE),
        ..CsvOptions::default()
    };
    let table = PartitionTable::from_csv(CSV, &opts).expect("table");
    let mut bin = [0xFFu8; TABLE_MAX_LEN];
    table.to_binary(true, &mut bin).expect("table binary");
    let mut flash = EmuFlash::in_memory(FLASH_SIZE);
    layout::write_raw(&mut flash, TABLE_OFFSET, &bin).expect("write table");
    layout::write_raw(&mut flash, OTA_0, &image("v1.0.0", 0)).expect("write app");
    let boot = BootConfig {
        rollback,
        anti_rollback,
        ..BootConfig::default()
    };
    let mut board = Board::new(table, Chip::Esp32, boot);
    board.flash_size = Some(FLASH_SIZE);
    (flash, board)
}

/// An SD card in memory.
struct Card(HashMap<String, Vec<u8>>);

impl SdCardFs for Card {
    fn open(&self, uri: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        match self.0.get(uri) {
            Some(b) => Ok((Box::new(std::io::Cursor::new(b.clone())), b.len() as u64)),
            None => Err(SourceError::Io {
                uri: uri.to_string(),
                phase: Phase::Open,
                source: std::io::Error::from(std::io::ErrorKind::NotFound).into(),
            }),
        }
    }
}

fn card(new_app: Vec<u8>) -> Card {
    Card(HashMap::from([(NEW_APP_URI.to_string(), new_app)]))
}

fn update_list<'a>() -> UpgradeList<'a, EmuFlash> {
    let items: Vec<Box<dyn UpgradeItem<EmuFlash>>> = vec![Box::new(AppItem::new(NEW_APP_URI))];
    UpgradeList::Items(items)
}

/// Records what happened, in order, and answers the self-test with `verdict`.
struct Log {
    verdict: SelfTest,
    steps: Vec<String>,
}

impl Log {
    fn new(verdict: SelfTest) -> Log {
        Log {
            verdict,
            steps: Vec::new(),
        }
    }
}

fn version(out: &BootOutcome) -> String {
    out.summary
        .app_desc
        .as_ref()
        .map(|d| d.version_str().to_string())
        .unwrap_or_default()
}

impl Hooks for Log {
    type Error = String;
    fn powering_on(&mut self, _board: &Board) -> Result<(), String> {
        self.steps.push("power".into());
        Ok(())
    }
    fn boot_event(&mut self, ev: &BootEvent) {
        if let BootEvent::Aborted { .. } = ev {
            self.steps.push("aborted".into());
        }
    }
    fn booted(&mut self, out: &BootOutcome, _board: &Board) -> Result<(), String> {
        self.steps.push(format!(
            "boot {} {} {:?}",
            out.partition.label.as_str(),
            version(out),
            out.ota_state
        ));
        Ok(())
    }
    fn self_test(&mut self, _out: &BootOutcome) -> SelfTest {
        self.verdict
    }
    fn confirmed(&mut self, _done: &ota_core::update::MarkedValid) {
        self.steps.push("confirmed".into());
    }
    fn rolled_back(&mut self, index: usize) {
        self.steps.push(format!("rolled back otadata[{index}]"));
    }
    fn app_main(&mut self) -> Result<(), String> {
        self.steps.push("app_main".into());
        Ok(())
    }
    fn service_start(&mut self) {
        self.steps.push("service".into());
    }
    fn event(&mut self, ev: Event) {
        if let Event::Restart = ev {
            self.steps.push("restart event".into());
        }
    }
    fn service_done(&mut self, report: &RunReport) {
        self.steps.push(format!("done restart={}", report.restart));
    }
    fn restarting(&mut self) {
        self.steps.push("restarting".into());
    }
}

fn sources(card: &Card) -> Sources<'_> {
    Sources {
        sd: Some(card),
        options: Default::default(),
    }
}

#[test]
fn rollback_device_updates_restarts_and_the_new_app_confirms_itself() {
    let (mut flash, mut board) = device(true, false);
    let card = card(image("v2.0.0", 0));
    let mut log = Log::new(SelfTest::Confirm);
    let run = ota_sim::run(
        &mut flash,
        &mut board,
        update_list(),
        sources(&card),
        &mut log,
    )
    .expect("run");
    assert!(run.report.restart, "{:?}", run.report);
    assert_eq!(run.first.partition.label.as_str(), "ota_0");
    let after = run.after_restart.as_ref().expect("a restart");
    assert_eq!(after.partition.label.as_str(), "ota_1");
    assert_eq!(after.ota_state, Some(OtaState::PendingVerify));
    assert_eq!(version(run.running()), "v2.0.0");
    let steps: Vec<&str> = log.steps.iter().map(String::as_str).collect();
    assert_eq!(
        steps,
        [
            "power",
            "boot ota_0 v1.0.0 Some(Valid)",
            "app_main",
            "service",
            "restart event",
            "done restart=true",
            "restarting",
            "power",
            "boot ota_1 v2.0.0 Some(PendingVerify)",
            "confirmed",
        ],
        "{steps:#?}"
    );
    // Confirmed: the next power-on boots it again, VALID.
    let again = ota_sim::power_on(&mut flash, &mut board, &mut Quiet).expect("boots");
    assert_eq!(again.partition.label.as_str(), "ota_1");
    assert_eq!(again.ota_state, Some(OtaState::Valid));
}

#[test]
fn rollback_device_whose_new_app_never_confirms_boots_the_old_app_next_time() {
    let (mut flash, mut board) = device(true, false);
    let card = card(image("v2.0.0", 0));
    let mut log = Log::new(SelfTest::Undecided);
    let run = ota_sim::run(
        &mut flash,
        &mut board,
        update_list(),
        sources(&card),
        &mut log,
    )
    .expect("run");
    assert_eq!(version(run.running()), "v2.0.0");
    assert!(
        !log.steps.iter().any(|s| s == "confirmed"),
        "{:?}",
        log.steps
    );
    // The bootloader finds it still PENDING_VERIFY: ABORTED, and the old app runs.
    let mut log = Log::new(SelfTest::Undecided);
    let next = ota_sim::power_on(&mut flash, &mut board, &mut log).expect("boots");
    assert_eq!(next.partition.label.as_str(), "ota_0", "{:?}", log.steps);
    assert_eq!(version(&next), "v1.0.0");
    assert!(log.steps.iter().any(|s| s == "aborted"), "{:?}", log.steps);
}

#[test]
fn rollback_device_whose_new_app_fails_its_self_test_rolls_back_and_reboots_the_old_app() {
    let (mut flash, mut board) = device(true, false);
    let card = card(image("v2.0.0", 0));
    let mut log = Log::new(SelfTest::RollBack);
    let run = ota_sim::run(
        &mut flash,
        &mut board,
        update_list(),
        sources(&card),
        &mut log,
    )
    .expect("run");
    let after = run.after_restart.as_ref().expect("a restart");
    assert_eq!(after.partition.label.as_str(), "ota_0", "{:?}", log.steps);
    assert_eq!(version(after), "v1.0.0");
    let tail: Vec<&str> = log.steps[log.steps.len() - 5..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "boot ota_1 v2.0.0 Some(PendingVerify)",
            "rolled back otadata[1]",
            "restarting",
            "power",
            "boot ota_0 v1.0.0 Some(Valid)",
        ],
        "{:#?}",
        log.steps
    );
    // And it stays rolled back.
    let next = ota_sim::power_on(&mut flash, &mut board, &mut Quiet).expect("boots");
    assert_eq!(next.partition.label.as_str(), "ota_0");
}

#[test]
fn device_without_rollback_never_runs_the_self_test() {
    let (mut flash, mut board) = device(false, false);
    let card = card(image("v2.0.0", 0));
    // RollBack would undo the update if it were asked: it is not, the app is not PENDING_VERIFY.
    let mut log = Log::new(SelfTest::RollBack);
    let run = ota_sim::run(
        &mut flash,
        &mut board,
        update_list(),
        sources(&card),
        &mut log,
    )
    .expect("run");
    let after = run.after_restart.as_ref().expect("a restart");
    assert_eq!(after.partition.label.as_str(), "ota_1");
    assert_ne!(after.ota_state, Some(OtaState::PendingVerify));
    assert!(
        !log.steps.iter().any(|s| s.starts_with("rolled back")),
        "{:?}",
        log.steps
    );
}

#[test]
fn anti_rollback_device_burns_the_efuse_when_the_new_app_confirms_itself() {
    let (mut flash, mut board) = device(true, true);
    let card = card(image("v2.0.0", 3));
    let run = ota_sim::run(
        &mut flash,
        &mut board,
        update_list(),
        sources(&card),
        &mut Log::new(SelfTest::Confirm),
    )
    .expect("run");
    assert_eq!(version(run.running()), "v2.0.0");
    assert_eq!(board.boot.efuse_secure_version, 3);
    assert_eq!(board.anti_rollback(), Some(3));
}

#[test]
fn failed_item_leaves_the_device_running_the_old_app_without_restart() {
    let (mut flash, mut board) = device(true, false);
    let before = flash.contents().to_vec();
    let card = Card(HashMap::new());
    let mut log = Log::new(SelfTest::Confirm);
    let run = ota_sim::run(
        &mut flash,
        &mut board,
        update_list(),
        sources(&card),
        &mut log,
    )
    .expect("run");
    assert!(!run.report.restart);
    assert!(run.after_restart.is_none());
    assert!(!run.report.results[0].1.is_success());
    assert_eq!(run.running().partition.label.as_str(), "ota_0");
    // Only the first boot's otadata write (seq 1 for ota_0) happened.
    let mut reference = EmuFlash::from_image(before).unwrap();
    ota_sim::power_on(&mut reference, &mut board.clone(), &mut Quiet).unwrap();
    assert_eq!(flash.contents(), reference.contents());
}

#[test]
fn config_whose_list_cannot_be_built_fails_after_the_first_boot_before_the_service() {
    let (mut flash, mut board) = device(false, false);
    let mut config = Config::from_str(
        "firmware_upgrade_uri = \"https://h/x.bin\"\n",
        Path::new("."),
    )
    .expect("config");
    // The pinned CA is read when the list is built: gone by then.
    config.upgrade[0].cert = Some("no-such-dir/ca.pem".into());
    let mut log = Log::new(SelfTest::Confirm);
    let e = ota_sim::run(
        &mut flash,
        &mut board,
        UpgradeList::Config(&config),
        Sources::default(),
        &mut log,
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.contains("no-such-dir/ca.pem")),
        "{e:?}"
    );
    assert_eq!(log.steps.last().map(String::as_str), Some("app_main"));
}

#[test]
fn blank_flash_is_unbootable_and_says_so() {
    let (_, mut board) = device(true, false);
    let mut flash = EmuFlash::in_memory(FLASH_SIZE);
    let e = ota_sim::power_on(&mut flash, &mut board, &mut Quiet).unwrap_err();
    assert!(e.boot_error().is_some(), "{e}");
    assert!(!e.to_string().is_empty());
}

#[test]
fn hook_errors_stop_the_run_before_the_service() {
    struct Refuse;
    impl Hooks for Refuse {
        type Error = &'static str;
        fn app_main(&mut self) -> Result<(), &'static str> {
            Err("no network")
        }
        fn service_start(&mut self) {
            panic!("the service must not start");
        }
    }
    let (mut flash, mut board) = device(false, false);
    let card = card(image("v2.0.0", 0));
    let e = ota_sim::run(
        &mut flash,
        &mut board,
        update_list(),
        sources(&card),
        &mut Refuse,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Hook("no network")), "{e:?}");
}

#[test]
fn run_async_on_a_copy_on_write_flash_lives_the_same_life_as_run() {
    let (mut flash, mut board) = device(true, false);
    let card = card(image("v2.0.0", 0));
    // The same device as a copy-on-write flash over the first one's bytes.
    let mut cow = ota_emu::CowFlash::<4, 4>::new(flash.contents().to_vec().into()).unwrap();
    let mut cow_board = board.clone();

    let mut log = Log::new(SelfTest::Confirm);
    let run = ota_sim::run(
        &mut flash,
        &mut board,
        update_list(),
        sources(&card),
        &mut log,
    )
    .expect("run");

    let transport = ota_service::std_driver::StdTransport { sd: Some(&card) };
    let options = Default::default();
    let mut async_log = Log::new(SelfTest::Confirm);
    let items: Vec<Box<dyn UpgradeItem<ota_emu::CowFlash<4, 4>>>> =
        vec![Box::new(AppItem::new(NEW_APP_URI))];
    let async_run = ota_service::io::block_on(ota_sim::run_async(
        &mut cow,
        &mut cow_board,
        UpgradeList::Items(items),
        ota_sim::AsyncSources {
            transport: &transport,
            clock: &ota_service::std_driver::StdClock,
            options: &options,
        },
        &mut async_log,
    ))
    .expect("run_async");

    assert_eq!(async_log.steps, log.steps);
    assert_eq!(async_run.report, run.report);
    assert_eq!(version(async_run.running()), "v2.0.0");
    // Byte for byte the flash the blocking run left, with only the changed sectors stored.
    assert!(cow.contents() == flash.contents(), "the flashes differ");
    assert!(cow.changed_sectors() > 0 && cow.own_bytes() < 1 << 20);
}
