//! The firmware's update logic, free of any hardware: it talks to flash only through the
//! `embedded-storage` `NorFlash` traits, so on the chip it drives esp-storage's `FlashStorage`
//! and on a PC the very same source runs against a RAM flash (the root crate's
//! `tests/firmware_c3.rs` includes this file to measure the stack the update path needs).
//!
//! One boot does, in order:
//! 1. read the partition table at `CONFIG_PARTITION_TABLE_OFFSET` (0x8000) through the flash
//!    driver and parse it with the application's rules (`esp_partition` `load_partitions`);
//! 2. find the running slot (what otadata selects, as the 2nd-stage bootloader does);
//! 3. rollback: if the running app is still `PENDING_VERIFY` (first boot after an update, with
//!    a rollback-enabled bootloader), confirm it (`esp_ota_mark_app_valid_cancel_rollback`);
//! 4. if the data partition [`IMAGE_LABEL`] holds a valid app image for this chip that is not
//!    the running one, install it into the other OTA slot and switch otadata; the caller then
//!    restarts.
//!
//! TODO(issue 9, front door): steps 2–4 move to `ota_core::updater::OtaUpdater`
//! (`begin(len, policy)` -> `write(chunk)` -> `finish()`, `state()`, `mark_valid()`) when it
//! lands; until then this is written against the lower layer (`AppUpdate`,
//! `begin_with_rollback`, `mark_app_valid_cancel_rollback`).

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use ota_core::image::{self, ImageSummary};
use ota_core::otadata::{OtaData, OtaState};
use ota_core::partition::{Partition, PartitionTable, ReadRule, TABLE_OFFSET, TABLE_SECTOR_SIZE};
use ota_core::update::{self, AppUpdate, AppUpdateConfig, Committed};
use ota_core::version::VersionPolicy;
use ota_core::{Chip, Error};

/// The data partition (any subtype) the firmware installs from (this byte source; the
/// network comes with the next one).
pub const IMAGE_LABEL: &str = "ota_image";

/// The chip this firmware runs on: an image for another chip is refused.
pub const CHIP: Chip = Chip::Esp32c3;

/// Bytes read from the source partition per step. A multiple of esp-storage's `READ_SIZE` and
/// `WRITE_SIZE` (4, `FlashStorage::WORD_SIZE`), so every access the firmware itself makes is
/// word-aligned.
pub const CHUNK: usize = 1024;

/// A word-aligned buffer: esp-storage copies a buffer that is not 4-byte aligned through a
/// bounce buffer (`FlashStorage::is_word_aligned`, esp-storage `src/nor_flash.rs`).
#[repr(C, align(4))]
pub struct Aligned<const N: usize>(pub [u8; N]);

/// The table sector, read whole (the app-side reader walks up to one 4 KiB sector).
pub const TABLE_BUF_LEN: usize = TABLE_SECTOR_SIZE as usize;
pub type TableBuf = Aligned<TABLE_BUF_LEN>;

/// What one boot did.
#[derive(Debug)]
pub struct BootReport {
    pub running: Option<Partition>,
    /// The running app's otadata state before this boot touched it.
    pub state: Option<OtaState>,
    /// The running app was PENDING_VERIFY and is now VALID.
    pub confirmed: bool,
    /// An image was installed: restart to boot it.
    pub installed: Option<Committed>,
}

/// Read and parse the partition table through the flash driver.
pub fn read_table<F: ReadNorFlash>(
    flash: &mut F,
    buf: &mut TableBuf,
) -> Result<PartitionTable, Error> {
    ota_core::flash::read(flash, TABLE_OFFSET, &mut buf.0)?;
    Ok(PartitionTable::parse(&buf.0, ReadRule::App)?)
}

/// The slot otadata selects (`(seq - 1) % count` of the active entry), else the factory app,
/// else ota_0: the bootloader's choice when every image verifies.
pub fn running_slot<F: ReadNorFlash>(flash: &mut F, table: &PartitionTable) -> Option<Partition> {
    let selected = table
        .otadata()
        .and_then(|p| OtaData::read(flash, p).ok())
        .and_then(|od| od.boot_slot(table.ota_count()))
        .and_then(|n| table.ota(n));
    selected.or(table.factory()).or(table.ota(0)).copied()
}

/// One boot's update work (steps 1–4 above). `table_buf` holds the table sector.
pub fn on_boot<F: NorFlash>(flash: &mut F, table_buf: &mut TableBuf) -> Result<BootReport, Error> {
    let table = read_table(flash, table_buf)?;
    let running = running_slot(flash, &table);
    let state = running.and_then(|p| ota_core::boot::ota_state_of(flash, &table, &p));
    let mut confirmed = false;
    if state == Some(OtaState::PendingVerify) {
        // The app reached this point, so it works: cancel the rollback.
        update::mark_app_valid_cancel_rollback(flash, &table, CHIP, None)?;
        confirmed = true;
    }
    let installed = match table.find_data(IMAGE_LABEL).copied() {
        Some(source) => install_from(flash, &table, running.as_ref(), &source)?,
        None => None,
    };
    Ok(BootReport {
        running,
        state,
        confirmed,
        installed,
    })
}

/// Install the app image in `source` into the next OTA slot and switch otadata to it. `None`:
/// nothing to install (no valid image for this chip there, or it is the running image).
pub fn install_from<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    running: Option<&Partition>,
    source: &Partition,
) -> Result<Option<Committed>, Error> {
    let Some(incoming) = source_image(flash, source, running)? else {
        return Ok(None);
    };
    let len = incoming.image_len;
    let cfg = AppUpdateConfig {
        rollback: true,
        ..AppUpdateConfig::new(CHIP)
    };
    // TODO(issue 9, front door): from here to `finish` becomes
    // `let mut u = OtaUpdater::new(flash, &mut table_buf)?; u.begin(len, policy)?;`
    // `u.write(chunk)?` per chunk; `u.finish()?`.
    update::begin_with_rollback(flash, &cfg.flash_map(table, running))?;
    let mut u = AppUpdate::begin(table, running, cfg, Some(len as u64))?;
    let mut buf = Aligned([0u8; CHUNK]);
    let mut at = 0u32;
    while at < len {
        let n = (len - at).min(CHUNK as u32) as usize;
        // Read whole words; the image length is a multiple of 16 (esptool pads it).
        let word = n.next_multiple_of(4);
        let data = &mut buf.0[..word];
        source.region().read(flash, at, data)?;
        let mut data = &data[..n];
        if !u.prefix_complete() {
            let k = u.feed_prefix(data)?;
            data = &data[k..];
            if u.prefix_complete() {
                u.check_version(VersionPolicy::None, None)?;
            }
        }
        if u.prefix_complete() {
            u.write(flash, data)?;
        }
        at += n as u32;
    }
    Ok(Some(u.finish(flash)?))
}

/// The source's image if it is a valid app image for [`CHIP`] that differs from the running
/// one (its appended SHA-256, else its checksum, compared with the running slot's).
fn source_image<F: ReadNorFlash>(
    flash: &mut F,
    source: &Partition,
    running: Option<&Partition>,
) -> Result<Option<ImageSummary>, Error> {
    let mut magic = Aligned([0u8; 4]);
    source.region().read(flash, 0, &mut magic.0)?;
    if magic.0[0] != image::IMAGE_MAGIC {
        return Ok(None);
    }
    let incoming = image::verify_flash(flash, source.region(), Some(CHIP))?;
    let same = running
        .and_then(|p| image::verify_flash(flash, p.region(), Some(CHIP)).ok())
        .is_some_and(|r| r.hash_calc == incoming.hash_calc && r.image_len == incoming.image_len);
    Ok((!same).then_some(incoming))
}
