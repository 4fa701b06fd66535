//! The firmware's update logic, free of any hardware: it talks to flash only through the
//! `embedded-storage` `NorFlash` traits, so on the chip it drives esp-storage's `FlashStorage`
//! and on a PC the very same source runs against a RAM flash (the root crate's
//! `tests/firmware_c3.rs` includes this file to run it on the emulated device and to measure
//! the stack the update path needs).
//!
//! One boot does, in order, with `ota-core`'s front door [`OtaUpdater`]:
//! 1. `OtaUpdater::new` reads the partition table at `CONFIG_PARTITION_TABLE_OFFSET` (0x8000)
//!    through the flash driver and finds the running app (the one the bootloader selected);
//! 2. rollback: if the running app is still `PENDING_VERIFY` (first boot after an update, with
//!    a rollback-enabled bootloader), `mark_valid` confirms it
//!    (`esp_ota_mark_app_valid_cancel_rollback`);
//! 3. the image source, one per build:
//!    - the data partition [`IMAGE_LABEL`] ([`on_boot`], the build without the `wifi`
//!      feature): if it holds a valid app image for this chip that is not the running one,
//!      `begin` -> `write`… -> `finish` installs it into the other OTA slot and switches
//!      otadata;
//!    - the `wifi` build takes steps 1 and 2 from here, then runs ESP-ADF's upgrade list with
//!      `ota-service` (`list.rs`).
//!
//!    The caller then restarts.

use core::cell::RefCell;

use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};
use ota_core::image::{self, ImageSummary};
use ota_core::otadata::OtaState;
use ota_core::partition::{Partition, TABLE_MAX_LEN};
use ota_core::updater::{Installed, RunningApp};
use ota_core::version::VersionPolicy;
use ota_core::{Chip, Error, OtaUpdater, UpdaterConfig, UpdaterError};

/// The data partition (any subtype) the build without the `wifi` feature installs from.
pub const IMAGE_LABEL: &str = "ota_image";

/// The chip this firmware runs on: an image for another chip is refused.
pub const CHIP: Chip = Chip::Esp32c3;

/// How the bootloader was built: with `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE`, so a new app
/// boots on trial and confirms itself.
pub const CONFIG: UpdaterConfig = UpdaterConfig::new(CHIP).with_rollback(true);

/// Bytes read from the source partition per step. A multiple of esp-storage's `READ_SIZE` and
/// `WRITE_SIZE` (4, `FlashStorage::WORD_SIZE`), so every access the firmware itself makes is
/// word-aligned.
pub const CHUNK: usize = 1024;

/// A word-aligned buffer: esp-storage copies a buffer that is not 4-byte aligned through a
/// bounce buffer (`FlashStorage::is_word_aligned`, esp-storage `src/nor_flash.rs`).
#[repr(C, align(4))]
pub struct Aligned<const N: usize>(pub [u8; N]);

/// The buffer `OtaUpdater::new` reads the partition table into (3 KiB).
pub const TABLE_BUF_LEN: usize = TABLE_MAX_LEN;
pub type TableBuf = Aligned<TABLE_BUF_LEN>;

/// What one boot did.
#[derive(Debug)]
pub struct BootReport {
    /// The running app and its otadata state before this boot touched it.
    pub running: RunningApp,
    /// The running app was PENDING_VERIFY and is now VALID.
    pub confirmed: bool,
    /// An image was installed: restart to boot it.
    pub installed: Option<Installed>,
}

/// One boot's update work (steps 1–3 above). `table_buf` holds the table while it is parsed.
pub fn on_boot<F: NorFlash>(
    flash: &mut F,
    table_buf: &mut TableBuf,
) -> Result<BootReport, UpdaterError<F::Error>> {
    // The updater writes the slot while this code reads the image from `ota_image`: two
    // handles on the one flash driver.
    let flash = RefCell::new(flash);
    let mut ota_flash = Shared(&flash);
    let mut ota = OtaUpdater::new(&mut ota_flash, CONFIG, &mut table_buf.0)?;
    let (running, confirmed) = confirm(&mut ota)?;
    let installed = match ota.table().find_data(IMAGE_LABEL).copied() {
        Some(source) => install_from(&mut ota, &mut Shared(&flash), &source, &running.partition)?,
        None => None,
    };
    Ok(BootReport {
        running,
        confirmed,
        installed,
    })
}

/// Step 2: the running app and its state before this boot; `true` when it was on trial
/// (PENDING_VERIFY) and is now confirmed.
pub fn confirm<F: NorFlash>(
    ota: &mut OtaUpdater<'_, F>,
) -> Result<(RunningApp, bool), UpdaterError<F::Error>> {
    let running = ota.running()?;
    let confirmed = running.state == Some(OtaState::PendingVerify);
    if confirmed {
        // The app reached this point, so it works: cancel the rollback.
        ota.mark_valid()?;
    }
    Ok((running, confirmed))
}

/// Install the app image in `source` (read through `flash`) into the next OTA slot and switch
/// otadata to it. `None`: nothing to install (no app image there, or it is the running image).
pub fn install_from<U: NorFlash, F: ReadNorFlash>(
    ota: &mut OtaUpdater<'_, U>,
    flash: &mut F,
    source: &Partition,
    running: &Partition,
) -> Result<Option<Installed>, UpdaterError<U::Error>> {
    let Some(incoming) = source_image(flash, source, running)? else {
        return Ok(None);
    };
    let len = incoming.image_len;
    ota.begin(Some(len), VersionPolicy::None)?;
    let mut buf = Aligned([0u8; CHUNK]);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK as u32) as usize;
        // Read whole words; the image length is a multiple of 16 (esptool pads it).
        let data = &mut buf.0[..n.next_multiple_of(4)];
        source.region().read(flash, at, data).map_err(Error::from)?;
        ota.write(&data[..n])?;
        at += n as u32;
    }
    Ok(Some(ota.finish()?))
}

/// The source's image if it is a valid app image for [`CHIP`] that differs from the running
/// one (its appended SHA-256, else its checksum, compared with the running slot's).
fn source_image<F: ReadNorFlash>(
    flash: &mut F,
    source: &Partition,
    running: &Partition,
) -> Result<Option<ImageSummary>, Error> {
    let mut magic = Aligned([0u8; 4]);
    source.region().read(flash, 0, &mut magic.0)?;
    if magic.0[0] != image::IMAGE_MAGIC {
        return Ok(None);
    }
    let incoming = image::verify_flash(flash, source.region(), Some(CHIP))?;
    let same = image::verify_flash(flash, running.region(), Some(CHIP))
        .is_ok_and(|r| r.hash_calc == incoming.hash_calc && r.image_len == incoming.image_len);
    Ok((!same).then_some(incoming))
}

/// A handle on a flash driver shared by several users in one thread (the updater and the
/// image source here): each call borrows the driver for its own duration only.
pub struct Shared<'a, F>(pub &'a RefCell<F>);

impl<F: ErrorType> ErrorType for Shared<'_, F> {
    type Error = F::Error;
}

impl<F: ReadNorFlash> ReadNorFlash for Shared<'_, F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), F::Error> {
        self.0.borrow_mut().read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.borrow().capacity()
    }
}

impl<F: NorFlash> NorFlash for Shared<'_, F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), F::Error> {
        self.0.borrow_mut().erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), F::Error> {
        self.0.borrow_mut().write(offset, bytes)
    }
}

impl<F: MultiwriteNorFlash> MultiwriteNorFlash for Shared<'_, F> {}
