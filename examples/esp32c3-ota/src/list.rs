//! The upgrade list the `wifi` build runs, with `ota-service` (the same service code as the
//! PC's `ota device run`): ESP-ADF's OTA example list (esp-adf
//! `examples/system/ota/main/ota_example.c`), both items from HTTP:
//! 0. a data item: the ADF tone bin at [`crate::config::TONE_URL`] into the `flash_tone`
//!    partition ([`TONE_LABEL`]), checked as a tone bin before anything is written, no restart;
//! 1. an app item: the app image at [`crate::config::UPDATE_URL`] into the next OTA slot,
//!    installed only when its version is newer than the running app's ([`APP_POLICY`]),
//!    committed on trial (rollback on: the next boot confirms itself), restart when installed.
//!
//! No hardware in this file: it runs over any `NorFlash`, any [`Transport`] and any [`Clock`]
//! (on the chip esp-storage's `FlashStorage`, the embassy driver on embassy-net and
//! embassy-time; `tests/firmware_c3.rs` includes it to run the same list on the PC over the
//! embassy driver on a simulated embassy-net, and to measure its heap).

use alloc::boxed::Box;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;
use ota_core::partition::{Partition, PartitionTable, TABLE_OFFSET};
use ota_core::version::VersionPolicy;
use ota_core::Chip;
use ota_service::io::{Clock, Transport};
use ota_service::items::{AppItem, DataFormat, DataItem};
use ota_service::source::SourceOptions;
use ota_service::{run_list_async, AsyncEnv, Device, Event, RunReport, UpgradeItem};

/// The data partition of ESP-ADF's example (its `partitions.csv`, label `flash_tone`).
pub const TONE_LABEL: &str = "flash_tone";

/// The chip this firmware runs on: an image for another chip is refused.
pub const CHIP: Chip = Chip::Esp32c3;

/// The flash chip of the board (4 MB, `--flash-size 4MB` of the image): no item writes beyond.
pub const FLASH_SIZE: u32 = 4 << 20;

/// The version rule of the app item: only a version newer than the running app's, compared
/// as semantic versions (`git describe` forms too; Cargo versions have no `v`, which ESP-ADF's
/// `vX.Y.Z` rule requires). ESP-ADF's app item with `CONFIG_FORCE_CHECK_FIRMWARE_VERSION_NUMBER`
/// (`validate_image_header`, esp-adf `components/ota_service/ota_proc_default.c`), decided on
/// the image's first bytes before anything is erased; without it the firmware would download
/// and install the same image at every boot.
pub const APP_POLICY: VersionPolicy = VersionPolicy::Semver;

/// The two items, in ESP-ADF's order (data first, then the app, which restarts).
pub fn upgrade_list<'a, F: NorFlash + 'a>(
    tone_url: &str,
    app_url: &str,
) -> Vec<Box<dyn UpgradeItem<F> + 'a>> {
    let mut tone = DataItem::new(tone_url, TONE_LABEL, DataFormat::Tone);
    tone.reboot = false;
    tone.break_after_fail = false;
    let mut app = AppItem::new(app_url);
    app.policy = APP_POLICY;
    app.reboot = true;
    app.break_after_fail = false;
    alloc::vec![Box::new(tone), Box::new(app)]
}

/// Runs [`upgrade_list`] on the device (`flash`, its `table`, the `running` app partition),
/// rollback on, with `source` (the firmware passes `SourceOptions::default()`: ESP-ADF's 5 s
/// timeout, the rate rule, the overall deadline; the tests shorter waits). Restart when the
/// report says so.
/// `OTA_SECURE_BOOT_DIGEST` at build time: 64 hex digits, the eFuse key digest of the signing
/// key (`espsecure digest-sbv2-public-key`, `ota image key-digest`). When set, the app item
/// accepts only images signed by that key (Secure Boot v2's app-side check, ESP-IDF
/// `esp_ota_end` -> `esp_image_verify`), checked before otadata is switched; the signature
/// sector is fetched first with `Range` so a wrong-key image is refused before any erase.
/// Unset (the default): images are not signature-checked.
pub const SECURE_BOOT_DIGEST: Option<[u8; 32]> = match option_env!("OTA_SECURE_BOOT_DIGEST") {
    Some(h) => Some(hex32(h.as_bytes())),
    None => None,
};

const fn hex32(h: &[u8]) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("OTA_SECURE_BOOT_DIGEST: not a hex digit"),
        }
    }
    if h.len() != 64 {
        panic!("OTA_SECURE_BOOT_DIGEST: expected 64 hex digits (a SHA-256)");
    }
    let mut d = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        d[i] = nibble(h[2 * i]) << 4 | nibble(h[2 * i + 1]);
        i += 1;
    }
    d
}

/// What the app item demands of an image ([`SECURE_BOOT_DIGEST`]).
pub fn signatures() -> ota_core::secure_boot::AppSignatures {
    use ota_core::secure_boot::{AppSignatures, SecureBootKeys};
    match SECURE_BOOT_DIGEST {
        Some(d) => AppSignatures::SecureBoot(SecureBootKeys {
            digests: [Some(d), None, None],
            revoked: 0,
            scheme: None,
        }),
        None => AppSignatures::NotChecked,
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn run<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    running: Partition,
    tone_url: &str,
    app_url: &str,
    source: SourceOptions,
    transport: &dyn Transport,
    clock: &dyn Clock,
    events: &mut dyn FnMut(Event),
) -> RunReport {
    let mut items = upgrade_list::<F>(tone_url, app_url);
    let mut dev = Device {
        flash,
        table,
        chip: CHIP,
        running: Some(running),
        rollback: true,
        anti_rollback: None,
        table_offset: TABLE_OFFSET,
        flash_size: Some(FLASH_SIZE),
        signatures: signatures(),
    };
    let mut env = AsyncEnv {
        transport,
        clock,
        source,
        events,
    };
    run_list_async(&mut items, &mut dev, &mut env).await
}
