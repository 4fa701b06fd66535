//! Streaming update engines for app slots and data partitions.
//!
//! Sans-IO: the caller feeds byte chunks; the engine decides and drives the `NorFlash`.
//! Nothing is erased before the incoming image has shown it belongs here (magic, chip, size,
//! version), erases happen sector by sector just ahead of the writes (idf-formats.md §2.8,
//! `OTA_WITH_SEQUENTIAL_WRITES`), and otadata is switched only after the written image verified
//! (idf-formats.md §2.4). A failed or abandoned update never touches otadata or the running slot.
//! Also the app-side rollback API (`esp_ota_mark_app_valid_cancel_rollback`,
//! `esp_ota_mark_app_invalid_rollback`) and `esp_ota_begin`'s rollback rules (§2.5).

use core::fmt;

use embedded_storage::nor_flash::NorFlash;

use crate::chip::Chip;
use crate::flash::{self, Aligned, Region, MAX_WORD, SECTOR_SIZE};
use crate::guard::{FlashMap, GuardError};
use crate::image::{self, AppDesc, ImageHeader, ImageSummary, ImageVerifier, IMAGE_PREFIX_LEN};
use crate::otadata::OtaData;
use crate::partition::{Label, Partition, PartitionTable};
use crate::resume::{ResumeError, ResumeHeader, ResumeLog, ResumeRecord};
use crate::version::{self, VersionPolicy, VersionVerdict};
use crate::Error;

/// Why an update was refused or failed (the engines' own errors; flash and format errors are
/// wrapped by [`crate::Error`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateError {
    /// No OTA app slot other than the running one (`esp_ota_get_next_update_partition`).
    NoUpdateSlot,
    /// The table has no otadata partition, so no OTA slot can be selected.
    NoOtaData,
    /// The data partition named by the item does not exist.
    PartitionNotFound { label: Label },
    /// The incoming image is larger than its target partition (checked before any erase).
    TooLarge {
        label: Label,
        size: u64,
        capacity: u32,
    },
    /// The image is for another chip.
    WrongChip { expected: u16, found: u16 },
    /// The version policy refused the incoming image.
    Version {
        verdict: VersionVerdict,
        current: [u8; 32],
        incoming: [u8; 32],
    },
    /// The incoming image carries no app descriptor (needed for a version check).
    NoAppDesc,
    /// `write`/`finish` called in the wrong state (a bug in the caller).
    WrongState { expected: &'static str },
    /// The stream ended before the image was complete.
    Incomplete { written: u32 },
    /// The bytes read back from flash differ from the bytes verified on the stream.
    ReadbackMismatch { offset: u32 },
    /// A resume record that cannot be used or kept (see [`crate::resume`]).
    Resume(ResumeError),
    /// Anti-rollback: the image's `secure_version` is below the eFuse counter
    /// (`ESP_ERR_OTA_SMALL_SEC_VER`, idf-formats.md §2.4, §2.7).
    SecureVersionTooLow {
        label: Label,
        version: u32,
        efuse: u32,
    },
    /// Rollback: the running app has not confirmed itself yet, it is still PENDING_VERIFY
    /// (`ESP_ERR_OTA_ROLLBACK_INVALID_STATE`, ESP-IDF v5.5+ `esp_ota_begin`, idf-formats.md §2.5).
    RollbackInvalidState { running: Label },
    /// A staged data update failed (see [`crate::staging`]).
    Staging(crate::staging::StagingError),
    /// Anti-rollback: an app's `secure_version` does not fit the chip's eFuse field, so it
    /// cannot be burnt (`esp_efuse_update_secure_version` fails, idf-formats.md §2.7).
    SecureVersionOutOfRange { version: u32, field_bits: u32 },
    /// The update would write outside its own target (see [`crate::guard`]); nothing was
    /// erased.
    Guard(GuardError),
}

impl From<GuardError> for Error {
    fn from(e: GuardError) -> Self {
        Error::Update(UpdateError::Guard(e))
    }
}

fn show32(b: &[u8; 32]) -> &str {
    image::cstr(b)
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::NoUpdateSlot => {
                f.write_str("no OTA app slot to update (the table needs ota_0 and ota_1)")
            }
            UpdateError::NoOtaData => {
                f.write_str("the partition table has no otadata (data/ota) partition")
            }
            UpdateError::PartitionNotFound { label } => {
                write!(f, "partition [{}] not found", label.as_str())
            }
            UpdateError::TooLarge {
                label,
                size,
                capacity,
            } => write!(
                f,
                "image of {} bytes does not fit in partition {} ({} bytes)",
                size,
                label.as_str(),
                capacity
            ),
            UpdateError::WrongChip { expected, found } => {
                let name = |id: u16| {
                    Chip::from_id(id)
                        .map(|c| c.display_name())
                        .unwrap_or("unknown chip")
                };
                write!(
                    f,
                    "image is for chip id {} ({}), the device is chip id {} ({})",
                    found,
                    name(*found),
                    expected,
                    name(*expected)
                )
            }
            UpdateError::Version {
                verdict,
                current,
                incoming,
            } => match verdict {
                VersionVerdict::InvalidIncoming => {
                    write!(
                        f,
                        "incoming version '{}' does not parse under the version policy",
                        show32(incoming)
                    )
                }
                _ => write!(
                    f,
                    "incoming version '{}' is not newer than the running version '{}'",
                    show32(incoming),
                    show32(current)
                ),
            },
            UpdateError::NoAppDesc => f.write_str(
                "the incoming image has no app descriptor (esp_app_desc_t) at offset 0x20",
            ),
            UpdateError::WrongState { expected } => {
                write!(f, "update engine used out of order: expected {}", expected)
            }
            UpdateError::Incomplete { written } => {
                write!(
                    f,
                    "the image stream ended after {} bytes, before the image was complete",
                    written
                )
            }
            UpdateError::SecureVersionTooLow {
                label,
                version,
                efuse,
            } => write!(
                f,
                "the image for {} has secure_version {}, below the eFuse secure version {} \
                 (anti-rollback)",
                label.as_str(),
                version,
                efuse
            ),
            UpdateError::RollbackInvalidState { running } => write!(
                f,
                "the running app ({}) is still PENDING_VERIFY: confirm it (esp_ota_mark_app_valid_cancel_rollback) \
                 or roll it back before starting another update",
                running.as_str()
            ),
            UpdateError::Staging(e) => e.fmt(f),
            UpdateError::SecureVersionOutOfRange {
                version,
                field_bits,
            } => write!(
                f,
                "secure_version {} does not fit the {}-bit eFuse SECURE_VERSION field",
                version, field_bits
            ),
            UpdateError::ReadbackMismatch { offset } => {
                write!(
                    f,
                    "flash read-back differs from the written data at partition offset 0x{:x}",
                    offset
                )
            }
            UpdateError::Resume(e) => e.fmt(f),
            UpdateError::Guard(e) => e.fmt(f),
        }
    }
}

/// `esp_ota_get_next_update_partition(running)` (idf-formats.md §2.5): the OTA slot after the
/// running one, wrapping to the first; the first OTA slot if the running one is not an OTA slot.
pub fn next_update_slot(table: &PartitionTable, running: Option<&Partition>) -> Option<Partition> {
    let slots = || (0..16u8).filter_map(|n| table.ota(n).copied());
    let first = slots().next()?;
    let running_slot = running.and_then(|p| p.ota_slot());
    match running_slot {
        Some(r) => {
            let next = slots().find(|p| p.ota_slot().is_some_and(|s| s > r));
            let candidate = next.unwrap_or(first);
            if Some(candidate.offset) == running.map(|p| p.offset) {
                None
            } else {
                Some(candidate)
            }
        }
        None => Some(first),
    }
}

/// Sequential writer into a region: erases each 4 KiB sector just before the first write into
/// it (never the whole region), and refuses to leave the region.
///
/// Flash granularity ([`crate::flash`]): it programs whole `WRITE_SIZE` words only, each once.
/// The bytes of a partial last word wait in RAM until the word is full, or until
/// [`SequentialWriter::flush`] programs them padded with 0xFF (after which no byte may follow).
/// [`SequentialWriter::written`] counts the bytes taken, [`SequentialWriter::flushed`] the bytes
/// on flash.
#[derive(Clone, Copy, Debug)]
pub struct SequentialWriter {
    region: Region,
    label: Label,
    written: u32,
    erased_to: u32,
    /// The bytes `[written - pending_len, written)`, not yet programmed.
    pending: Aligned<MAX_WORD>,
    pending_len: u16,
    /// A padded partial word was programmed: nothing may be appended.
    sealed: bool,
}

impl SequentialWriter {
    pub fn new(part: &Partition) -> Self {
        Self::for_region(part.region(), part.label)
    }

    /// A writer over any region; `label` names it in errors.
    pub fn for_region(region: Region, label: Label) -> Self {
        Self::at(region, label, 0)
    }

    /// Bytes taken so far (some may still wait in RAM for their word to fill).
    pub fn written(&self) -> u32 {
        self.written
    }

    /// Bytes programmed so far (whole words, or everything after [`SequentialWriter::flush`]).
    pub fn flushed(&self) -> u32 {
        self.written - self.pending_len as u32
    }

    /// The bytes of the partial last word not yet programmed.
    pub fn pending(&self) -> &[u8] {
        &self.pending[..self.pending_len as usize]
    }

    pub fn region(&self) -> Region {
        self.region
    }

    /// A writer over `region` that goes on at `written`, a multiple of [`SECTOR_SIZE`] (resuming
    /// an interrupted update): the sectors from there on are erased as the writes reach them.
    pub fn at(region: Region, label: Label, written: u32) -> Self {
        SequentialWriter {
            region,
            label,
            written,
            erased_to: written,
            pending: Aligned::filled(0xFF),
            pending_len: 0,
            sealed: false,
        }
    }

    /// The same writer over a region that starts at the same offset but is `size` bytes long.
    pub(crate) fn with_size(mut self, size: u32) -> Self {
        self.region = Region::new(self.region.offset, size);
        self
    }

    /// Append `data`, erasing the sectors it reaches first.
    pub fn write<F: NorFlash>(&mut self, flash: &mut F, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let end = self.written as u64 + data.len() as u64;
        if end > self.region.size as u64 {
            return Err(UpdateError::TooLarge {
                label: self.label,
                size: end,
                capacity: self.region.size,
            }
            .into());
        }
        if self.sealed {
            return Err(UpdateError::WrongState {
                expected: "no write after the last word was flushed",
            }
            .into());
        }
        let end = end as u32;
        while self.erased_to < end {
            self.region.erase(flash, self.erased_to, SECTOR_SIZE)?;
            self.erased_to += SECTOR_SIZE;
        }
        let ws = flash::write_size::<F>() as usize;
        let mut data = data;
        let have = self.pending_len as usize;
        if have > 0 {
            // Complete the partial word first.
            let take = (ws - have).min(data.len());
            self.pending[have..have + take].copy_from_slice(&data[..take]);
            self.pending_len += take as u16;
            data = &data[take..];
            if self.pending_len as usize == ws {
                let at = self.written - have as u32;
                self.region.write(flash, at, &self.pending[..ws])?;
                self.pending_len = 0;
            }
        }
        if self.pending_len == 0 {
            let full = data.len() - data.len() % ws;
            if full > 0 {
                self.region
                    .write(flash, end - data.len() as u32, &data[..full])?;
            }
            let rest = &data[full..];
            self.pending[..rest.len()].copy_from_slice(rest);
            self.pending_len = rest.len() as u16;
        }
        self.written = end;
        Ok(())
    }

    /// Program the partial last word, padded with 0xFF (nothing can be appended after).
    pub fn flush<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), Error> {
        if self.pending_len > 0 {
            let at = self.flushed();
            let n = self.pending_len as usize;
            self.region.write(flash, at, &self.pending[..n])?;
            self.pending_len = 0;
            self.sealed = true;
        }
        Ok(())
    }

    /// Flush, then erase what is left of the region after the written bytes, skipping sectors
    /// that are already blank, so the region ends as it would after a whole-partition erase +
    /// write.
    pub fn clear_rest<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), Error> {
        self.flush(flash)?;
        let mut buf = Aligned::<256>::filled(0);
        let mut sector = self.erased_to;
        while sector < self.region.size {
            let mut blank = true;
            let mut off = 0;
            while off < SECTOR_SIZE && blank {
                self.region.read(flash, sector + off, &mut buf.0)?;
                blank = buf.iter().all(|&b| b == 0xFF);
                off += buf.len() as u32;
            }
            if !blank {
                self.region.erase(flash, sector, SECTOR_SIZE)?;
            }
            sector += SECTOR_SIZE;
        }
        self.erased_to = self.region.size;
        Ok(())
    }
}

/// Settings of an app update.
#[derive(Clone, Copy, Debug)]
pub struct AppUpdateConfig {
    /// The device's chip: an image for another chip is refused.
    pub chip: Chip,
    /// Commit the new slot as NEW (rollback enabled) instead of UNDEFINED.
    pub rollback: bool,
    /// Where the partition table is (`CONFIG_PARTITION_TABLE_OFFSET`): the update never writes
    /// it nor the bootloader region below it ([`crate::guard`]).
    pub table_offset: u32,
    /// The flash chip size, when known: a slot beyond it is refused.
    pub flash_size: Option<u32>,
}

impl AppUpdateConfig {
    /// A `chip` device with the table at the default offset, flash size unknown, no rollback.
    pub fn new(chip: Chip) -> Self {
        AppUpdateConfig {
            chip,
            rollback: false,
            table_offset: crate::partition::TABLE_OFFSET,
            flash_size: None,
        }
    }

    /// What the update must not write, for `table` with `running` booted.
    pub fn flash_map<'a>(
        &self,
        table: &'a PartitionTable,
        running: Option<&Partition>,
    ) -> FlashMap<'a> {
        FlashMap::new(table, self.chip, running)
            .with_table_offset(self.table_offset)
            .with_flash_size(self.flash_size)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppState {
    Prefix,
    Checked,
    Writing,
}

/// What `finish` did.
#[derive(Clone, Debug)]
pub struct Committed {
    pub slot: Partition,
    pub summary: ImageSummary,
    /// otadata sector (0 or 1) that was rewritten.
    pub otadata_sector: usize,
    /// Bytes that were already in the slot when the update was resumed (0: not resumed).
    pub resumed_from: u32,
    /// Whether the resume record was erased after the commit (false when there was none, or
    /// when erasing it failed: a stale record is ignored by the next update and replaced).
    pub resume_cleared: bool,
}

/// The resume log an [`AppUpdate`] keeps (or only clears).
#[derive(Clone, Copy, Debug)]
struct Journal {
    log: ResumeLog,
    /// `Some`: keep checkpoints for this header; `None`: only forget an old record when the
    /// first byte is written.
    header: Option<ResumeHeader>,
    /// The live record once the log has been started (or was found, when resuming).
    record: Option<ResumeRecord>,
}

/// The app update engine (`esp_https_ota` + `esp_ota_*`, done right).
///
/// 1. [`AppUpdate::begin`] picks the next slot; with a known size, refuses one that cannot fit.
/// 2. [`AppUpdate::feed_prefix`] takes the first 289 bytes and checks magic, chip and descriptor:
///    nothing is written yet. [`AppUpdate::check_version`] applies a version policy.
/// 3. [`AppUpdate::write`] streams the image in, erase-ahead, verifying as it goes.
/// 4. [`AppUpdate::finish`] verifies the stream and the flash read-back, then switches otadata.
pub struct AppUpdate {
    cfg: AppUpdateConfig,
    slot: Partition,
    otadata: Partition,
    ota_count: u8,
    prefix: [u8; IMAGE_PREFIX_LEN],
    prefix_len: usize,
    header: Option<ImageHeader>,
    desc: Option<AppDesc>,
    state: AppState,
    writer: SequentialWriter,
    verifier: ImageVerifier,
    journal: Option<Journal>,
    /// Where this table keeps the slot's resume record ([`ResumeLog::locate`]): the only log
    /// this update writes (checked by [`crate::guard`] in [`AppUpdate::begin`]).
    home_log: Option<ResumeLog>,
    resumed_from: u32,
    /// Anti-rollback: the eFuse secure-version counter (see [`AppUpdate::set_anti_rollback`]).
    efuse_secure_version: Option<u32>,
}

impl AppUpdate {
    pub fn begin(
        table: &PartitionTable,
        running: Option<&Partition>,
        cfg: AppUpdateConfig,
        expected_size: Option<u64>,
    ) -> Result<AppUpdate, Error> {
        let otadata = *table.otadata().ok_or(UpdateError::NoOtaData)?;
        let slot = next_update_slot(table, running).ok_or(UpdateError::NoUpdateSlot)?;
        // Before anything else: the slot, otadata and the resume partition must lie clear of
        // the bootloader, the table, the running app and each other.
        cfg.flash_map(table, running).check_app_update(&slot)?;
        if let Some(size) = expected_size {
            if size > slot.size as u64 {
                return Err(UpdateError::TooLarge {
                    label: slot.label,
                    size,
                    capacity: slot.size,
                }
                .into());
            }
        }
        let mut verifier = ImageVerifier::new();
        verifier.set_expected_chip(Some(cfg.chip));
        verifier.set_size_limit(Some(slot.size));
        Ok(AppUpdate {
            cfg,
            slot,
            otadata,
            ota_count: table.ota_count(),
            prefix: [0; IMAGE_PREFIX_LEN],
            prefix_len: 0,
            header: None,
            desc: None,
            state: AppState::Prefix,
            writer: SequentialWriter::new(&slot),
            verifier,
            efuse_secure_version: None,
            journal: None,
            home_log: ResumeLog::locate(table, &slot),
            resumed_from: 0,
        })
    }

    /// `log` must be the one this table keeps for the slot (the one [`AppUpdate::begin`]
    /// checked): a log located with another table could lie anywhere.
    fn check_log(&self, log: &ResumeLog) -> Result<(), Error> {
        if self.home_log.as_ref() != Some(log) {
            return Err(UpdateError::Resume(ResumeError::ForeignLog {
                log_offset: log.region().offset,
                home_offset: self.home_log.map(|l| l.region().offset),
            })
            .into());
        }
        Ok(())
    }

    /// Keep a resume log for this fresh download: before the first byte reaches the slot the
    /// log sector is erased and `header` written; after each write the data is read back and a
    /// checkpoint appended for every `header.step` bytes. With the log in the slot's last
    /// sector, the image may use only [`ResumeLog::image_limit`] bytes. `image_len`: the
    /// announced file length (needed when the log is in the slot).
    pub fn enable_resume(
        &mut self,
        log: ResumeLog,
        header: ResumeHeader,
        image_len: Option<u64>,
    ) -> Result<(), Error> {
        if self.state == AppState::Writing {
            return Err(UpdateError::WrongState {
                expected: "no byte written yet",
            }
            .into());
        }
        self.check_log(&log)?;
        log.check_room(image_len).map_err(UpdateError::Resume)?;
        if header.slot_offset != self.slot.offset || header.slot_size != self.slot.size {
            return Err(UpdateError::Resume(ResumeError::OtherSlot {
                record: header.slot_offset,
                target: self.slot.offset,
            })
            .into());
        }
        self.limit_to(log.image_limit());
        self.journal = Some(Journal {
            log,
            header: Some(header),
            record: None,
        });
        Ok(())
    }

    /// Forget any resume record in `log` when this download writes its first byte (a fresh
    /// download that keeps no log of its own: the old record no longer describes the slot).
    /// `log` must be the slot's own ([`ResumeLog::locate`] on the same table).
    pub fn discard_resume_record(&mut self, log: ResumeLog) -> Result<(), Error> {
        self.check_log(&log)?;
        if self.state != AppState::Writing {
            self.journal = Some(Journal {
                log,
                header: None,
                record: None,
            });
        }
        Ok(())
    }

    /// Continue an interrupted update from its resume record: the first `record.progress`
    /// bytes already in the slot go through a fresh verifier (header, chip, app descriptor,
    /// segment structure, running checksum and SHA-256), then writing goes on after them. The
    /// final verification and the otadata switch in [`AppUpdate::finish`] are unchanged. An
    /// error here means the record cannot be used: start over with [`AppUpdate::begin`].
    pub fn resume<F: NorFlash>(
        flash: &mut F,
        table: &PartitionTable,
        running: Option<&Partition>,
        cfg: AppUpdateConfig,
        log: ResumeLog,
        record: ResumeRecord,
    ) -> Result<AppUpdate, Error> {
        let mut u = AppUpdate::begin(table, running, cfg, None)?;
        let h = record.header;
        if h.slot_offset != u.slot.offset || h.slot_size != u.slot.size {
            return Err(UpdateError::Resume(ResumeError::OtherSlot {
                record: h.slot_offset,
                target: u.slot.offset,
            })
            .into());
        }
        u.check_log(&log)?;
        let limit = log.image_limit();
        let n = record.progress;
        if n < IMAGE_PREFIX_LEN as u32 || !n.is_multiple_of(SECTOR_SIZE) || n > limit {
            return Err(
                UpdateError::Resume(ResumeError::BadProgress { progress: n, limit }).into(),
            );
        }
        u.limit_to(limit);
        let region = u.slot.region();
        let mut prefix = [0u8; IMAGE_PREFIX_LEN];
        region.read(flash, 0, &mut prefix)?;
        u.feed_prefix(&prefix)?;
        let mut buf = Aligned::<{ image::VERIFY_CHUNK }>::filled(0);
        let mut off = 0u32;
        while off < n {
            let k = (n - off).min(image::VERIFY_CHUNK as u32);
            let chunk = &mut buf[..k as usize];
            region.read(flash, off, chunk)?;
            u.verifier.feed(chunk)?;
            off += k;
        }
        u.writer = SequentialWriter::at(Region::new(u.slot.offset, limit), u.slot.label, n);
        u.state = AppState::Writing;
        u.resumed_from = n;
        u.journal = Some(Journal {
            log,
            header: Some(h),
            record: Some(record),
        });
        Ok(u)
    }

    /// Bytes that were already in the slot when this update was resumed (0: a fresh start).
    pub fn resumed_from(&self) -> u32 {
        self.resumed_from
    }

    /// Bytes covered by the last checkpoint of the resume log (None without a log).
    pub fn checkpoint(&self) -> Option<u32> {
        self.journal.and_then(|j| j.record).map(|r| r.progress)
    }

    /// The resume log this update keeps or clears, if any.
    pub fn resume_log(&self) -> Option<ResumeLog> {
        self.journal.map(|j| j.log)
    }

    /// Limit the image to the first `limit` bytes of the slot (the rest holds the resume log).
    fn limit_to(&mut self, limit: u32) {
        let limit = limit.min(self.slot.size);
        self.writer = self.writer.with_size(limit);
        self.verifier.set_size_limit(Some(limit));
    }

    /// Forget the resume record (best effort: a failing erase leaves a record that the next
    /// update re-verifies or replaces).
    fn drop_journal<F: NorFlash>(&mut self, flash: &mut F) -> bool {
        match self.journal.take() {
            Some(j) => j.log.clear(flash).is_ok(),
            None => false,
        }
    }

    /// After a write: read back the bytes programmed since `from` (they are `old` followed by
    /// the start of `data`: the writer keeps a partial last word in RAM), then checkpoint whole
    /// steps of the programmed bytes.
    fn persist<F: NorFlash>(
        &mut self,
        flash: &mut F,
        from: u32,
        old: &[u8],
        data: &[u8],
    ) -> Result<(), Error> {
        let Some(Journal {
            log,
            record: Some(mut rec),
            ..
        }) = self.journal
        else {
            return Ok(());
        };
        let region = self.writer.region();
        let to = self.writer.flushed();
        let mut buf = Aligned::<{ image::VERIFY_CHUNK }>::filled(0);
        let mut at = from;
        let mut sources = [old, data]
            .into_iter()
            .flat_map(|p| p.chunks(image::VERIFY_CHUNK));
        while at < to {
            let Some(piece) = sources.next() else { break };
            let piece = &piece[..piece.len().min((to - at) as usize)];
            let got = &mut buf[..piece.len()];
            region.read(flash, at, got)?;
            if got != piece {
                let first = got.iter().zip(piece).position(|(a, b)| a != b).unwrap_or(0);
                return Err(UpdateError::ReadbackMismatch {
                    offset: at + first as u32,
                }
                .into());
            }
            at += piece.len() as u32;
        }
        let step = rec.header.step;
        let cp = to / step * step;
        let r = log.checkpoint(flash, &mut rec, cp);
        if let Some(j) = &mut self.journal {
            j.record = Some(rec);
        }
        r.map(|_| ())
    }

    /// Enable the anti-rollback checks (`CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK`, idf-formats.md
    /// §2.7) against the eFuse counter `efuse` (None: disabled, the default).
    pub fn set_anti_rollback(&mut self, efuse: Option<u32>) {
        self.efuse_secure_version = efuse;
    }

    /// Anti-rollback check of the incoming descriptor, once the prefix is in (what ESP-IDF's
    /// `advanced_https_ota` example does after `esp_https_ota_get_img_desc`): refuses an image
    /// whose `secure_version` is below the eFuse counter before anything is written.
    pub fn check_secure_version(&self) -> Result<(), Error> {
        let Some(efuse) = self.efuse_secure_version else {
            return Ok(());
        };
        let version = self.desc.map(|d| d.secure_version).unwrap_or(0);
        if version < efuse {
            return Err(UpdateError::SecureVersionTooLow {
                label: self.slot.label,
                version,
                efuse,
            }
            .into());
        }
        Ok(())
    }

    /// The slot being written.
    pub fn slot(&self) -> &Partition {
        &self.slot
    }

    /// Bytes still needed before the image can be checked.
    pub fn prefix_needed(&self) -> usize {
        IMAGE_PREFIX_LEN - self.prefix_len
    }

    /// Take up to [`Self::prefix_needed`] bytes; returns how many were taken. When the prefix is
    /// complete the header, chip and descriptor are checked (nothing has touched flash yet).
    pub fn feed_prefix(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.state != AppState::Prefix {
            return Err(UpdateError::WrongState { expected: "prefix" }.into());
        }
        let n = data.len().min(self.prefix_needed());
        self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
        self.prefix_len += n;
        if self.prefix_len == IMAGE_PREFIX_LEN {
            let (header, desc) = image::parse_prefix(&self.prefix)?;
            if header.chip_id != self.cfg.chip.id() {
                return Err(UpdateError::WrongChip {
                    expected: self.cfg.chip.id(),
                    found: header.chip_id,
                }
                .into());
            }
            self.header = Some(header);
            self.desc = desc;
            self.state = AppState::Checked;
        }
        Ok(n)
    }

    /// Feed the whole prefix from a short stream that ended early: an image shorter than 289
    /// bytes cannot be an app (like `esp_https_ota_get_img_desc`).
    pub fn prefix_complete(&self) -> bool {
        self.state != AppState::Prefix
    }

    pub fn incoming_desc(&self) -> Option<&AppDesc> {
        self.desc.as_ref()
    }

    pub fn incoming_header(&self) -> Option<&ImageHeader> {
        self.header.as_ref()
    }

    /// Apply a version policy against the running app's descriptor.
    pub fn check_version(
        &self,
        policy: VersionPolicy,
        running: Option<&AppDesc>,
    ) -> Result<(), Error> {
        if policy == VersionPolicy::None {
            return Ok(());
        }
        let incoming = self.desc.as_ref().ok_or(UpdateError::NoAppDesc)?;
        let verdict = version::check(
            policy,
            running.map(|d| d.version_str()),
            incoming.version_str(),
        );
        match verdict {
            VersionVerdict::Accept => Ok(()),
            v => Err(UpdateError::Version {
                verdict: v,
                current: running.map(|d| d.version).unwrap_or([0; 32]),
                incoming: incoming.version,
            }
            .into()),
        }
    }

    /// Bytes of the image written to flash so far.
    pub fn written(&self) -> u32 {
        self.writer.written()
    }

    /// Stream more image bytes into the slot (the first call also writes the buffered prefix).
    pub fn write<F: NorFlash>(&mut self, flash: &mut F, data: &[u8]) -> Result<(), Error> {
        match self.state {
            AppState::Prefix => {
                return Err(UpdateError::WrongState {
                    expected: "a checked prefix",
                }
                .into())
            }
            AppState::Checked => {
                let prefix = self.prefix;
                if let Err(e) = self.verifier.feed(&prefix) {
                    return Err(e.into());
                }
                if let Some(j) = &mut self.journal {
                    // Before the first byte reaches the slot: the old record no longer holds.
                    match j.header {
                        Some(mut h) => {
                            // Fewer checkpoint records fit a sector when they are padded to
                            // a large write unit: a longer step keeps the log from filling.
                            let basis = if h.total_len > 0 {
                                h.total_len
                            } else {
                                j.log.image_limit()
                            };
                            h.step = h.step.max(crate::resume::step_for_write_size(
                                basis,
                                flash::write_size::<F>(),
                            ));
                            j.header = Some(h);
                            j.record = Some(j.log.start(flash, &h)?);
                        }
                        None => {
                            j.log.clear(flash)?;
                            self.journal = None;
                        }
                    }
                }
                self.writer.write(flash, &prefix)?;
                self.state = AppState::Writing;
                self.persist(flash, 0, &[], &prefix)?;
            }
            AppState::Writing => {}
        }
        if let Err(e) = self.verifier.feed(data) {
            // The stream is not a valid image: resuming it later would fail the same way.
            self.drop_journal(flash);
            return Err(e.into());
        }
        let from = self.writer.flushed();
        let mut old = Aligned::<MAX_WORD>::filled(0xFF);
        let n = self.writer.pending().len();
        old[..n].copy_from_slice(self.writer.pending());
        self.writer.write(flash, data)?;
        self.persist(flash, from, &old[..n], data)
    }

    /// Whether the stream so far holds a complete image.
    pub fn image_complete(&self) -> bool {
        self.verifier.is_complete()
    }

    /// Verify (stream result, then the image as read back from flash, like `esp_ota_end`) and
    /// switch otadata to the new slot (`esp_ota_set_boot_partition`).
    pub fn finish<F: NorFlash>(mut self, flash: &mut F) -> Result<Committed, Error> {
        if self.state == AppState::Checked {
            // A prefix-only image: write it so the verifier sees it (it will report truncation).
            self.write(flash, &[])?;
        }
        if self.state != AppState::Writing {
            return Err(UpdateError::Incomplete { written: 0 }.into());
        }
        // The partial last word, padded with 0xFF (the image ends here).
        self.writer.flush(flash)?;
        let summary = match self.verify_written(flash) {
            Ok(s) => s,
            Err(e) => {
                // A bad image must not be resumed again: the next attempt starts over.
                self.drop_journal(flash);
                return Err(e);
            }
        };
        if let Some(efuse) = self.efuse_secure_version {
            // esp_ota_set_boot_partition with anti-rollback (idf-formats.md §2.4): a too-old
            // image is erased and refused; otadata is not touched.
            let version = summary
                .loader_app_desc
                .map(|d| d.secure_version)
                .unwrap_or(0);
            if version < efuse {
                self.drop_journal(flash);
                self.slot.region().erase(flash, 0, self.slot.size)?;
                return Err(UpdateError::SecureVersionTooLow {
                    label: self.slot.label,
                    version,
                    efuse,
                }
                .into());
            }
        }
        let slot_no = self.slot.ota_slot().ok_or(UpdateError::NoUpdateSlot)?;
        let mut od = OtaData::read(flash, &self.otadata)?;
        let sector = od.set_boot(
            flash,
            &self.otadata,
            slot_no,
            self.ota_count,
            self.cfg.rollback,
        )?;
        // Cleared after the switch: the log is outside the image (slot tail) or in its own
        // partition, so a cut here leaves a stale record that no update will take as its own.
        let resume_cleared = self.drop_journal(flash);
        Ok(Committed {
            slot: self.slot,
            summary,
            otadata_sector: sector,
            resumed_from: self.resumed_from,
            resume_cleared,
        })
    }

    /// The stream's verdict, then the image as read back from flash (`esp_ota_end`).
    fn verify_written<F: NorFlash>(&self, flash: &mut F) -> Result<ImageSummary, Error> {
        let summary = self.verifier.finish()?;
        let readback = image::verify_flash(flash, self.slot.region(), Some(self.cfg.chip))?;
        if readback.hash_calc != summary.hash_calc
            || readback.checksum_calc != summary.checksum_calc
        {
            return Err(UpdateError::ReadbackMismatch { offset: 0 }.into());
        }
        Ok(summary)
    }
}

/// Bytes at the start of a data partition that [`DataUpdate`] programs after the rest of the
/// partition: an ESP-ADF tone bin's 8-byte header (u16 tag, u16 count, u32 format;
/// adf-ota-service.md §8.2).
pub const DATA_HEADER_LAST_LEN: usize = 8;
/// Of those, the bytes programmed in the very last write: the tone header's u16 tag 0x2053
/// (adf-ota-service.md §8.2), rounded up to the flash's write unit ([`header_last_cuts`]). Until it is complete the tag reads 0xFFFF or 0xFF53, which even
/// ADF's lenient `tone_partition_init` rejects; a torn count or format behind a missing tag
/// never shows.
pub const DATA_TAG_LAST_LEN: usize = 2;

/// Program the first-sector bytes `first` of `region` from the end towards the start, in up to
/// three writes cut by [`header_last_cuts`]: at write unit 1 `[8, len)`, `[2, 8)`, `[0, 2)` (see
/// [`DATA_HEADER_LAST_LEN`], [`DATA_TAG_LAST_LEN`]); the word holding the tag is always last.
pub(crate) fn write_first_sector_last<F: NorFlash>(
    flash: &mut F,
    region: &Region,
    first: &[u8],
) -> Result<(), Error> {
    let cuts = header_last_cuts(flash::write_size::<F>(), first.len() as u32);
    let mut end = first.len() as u32;
    for start in cuts {
        if end > start {
            region.write(flash, start, &first[start as usize..end as usize])?;
        }
        end = end.min(start);
    }
    Ok(())
}

/// Where [`write_first_sector_last`] cuts the first `len` bytes for a flash whose write unit is
/// `ws`: `[c0, len)`, then `[c1, c0)`, then `[0, c1)`, with `c0` = [`DATA_HEADER_LAST_LEN`] and
/// `c1` = [`DATA_TAG_LAST_LEN`] each rounded up to a whole word. At `ws` 1: 8 and 2 (the tag's
/// two bytes last); at 4: 8 and 4 (the word holding the tag and the count last); from 8 on the
/// header is the first word, written last in one piece. Each cut is also capped at `len`.
pub(crate) fn header_last_cuts(ws: u32, len: u32) -> [u32; 3] {
    [
        flash::round_up(DATA_HEADER_LAST_LEN as u32, ws).min(len),
        flash::round_up(DATA_TAG_LAST_LEN as u32, ws).min(len),
        0,
    ]
}

/// The data-partition engine: a partition found by label, a size check before any erase,
/// erase-ahead sequential writes, and a clean tail.
///
/// Power-loss rule: the first sector is erased by the first write, buffered (at most 4 KiB, a
/// fixed array: no allocation) and programmed only after everything else, from its end towards
/// its start with the word holding the header's tag last of all ([`DATA_TAG_LAST_LEN`]). So a
/// rewrite that is cut at any byte leaves a partition whose header tag is erased or torn, and
/// the next run sees it as invalid and rewrites it, instead of taking a half-new partition for
/// a valid one.
pub struct DataUpdate {
    part: Partition,
    /// Sectors 1.. of the partition, erase-ahead.
    rest: SequentialWriter,
    first: Aligned<{ SECTOR_SIZE as usize }>,
    first_len: usize,
    /// Sector 0 has been erased.
    started: bool,
}

impl DataUpdate {
    /// The engine for the data partition `label` of `map.table`. Refused before any erase when
    /// the partition overlaps the bootloader region, the partition table or another partition
    /// (otadata, the running app...) or lies beyond the flash ([`crate::guard`]).
    pub fn begin(
        map: &FlashMap<'_>,
        label: &str,
        expected_size: Option<u64>,
    ) -> Result<DataUpdate, Error> {
        let part = *map
            .table
            .find_data(label)
            .ok_or(UpdateError::PartitionNotFound {
                label: Label::new(label),
            })?;
        Self::for_partition(map, &part, expected_size)
    }

    /// The engine for a partition already found (e.g. a staging partition), with the same
    /// checks as [`DataUpdate::begin`].
    pub fn for_partition(
        map: &FlashMap<'_>,
        part: &Partition,
        expected_size: Option<u64>,
    ) -> Result<DataUpdate, Error> {
        let part = *part;
        map.check_partition(crate::guard::AreaKind::DataPartition, &part)?;
        if let Some(size) = expected_size {
            if size > part.size as u64 {
                return Err(UpdateError::TooLarge {
                    label: part.label,
                    size,
                    capacity: part.size,
                }
                .into());
            }
        }
        let rest_region = Region::new(
            part.offset.saturating_add(SECTOR_SIZE),
            part.size.saturating_sub(SECTOR_SIZE),
        );
        Ok(DataUpdate {
            part,
            rest: SequentialWriter::for_region(rest_region, part.label),
            first: Aligned::filled(0xFF),
            first_len: 0,
            started: false,
        })
    }

    pub fn partition(&self) -> &Partition {
        &self.part
    }

    /// Bytes taken so far (the first sector's are buffered until [`DataUpdate::finish`]).
    pub fn written(&self) -> u32 {
        self.first_len as u32 + self.rest.written()
    }

    fn start<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), Error> {
        if !self.started {
            self.part
                .region()
                .erase(flash, 0, SECTOR_SIZE.min(self.part.size))?;
            self.started = true;
        }
        Ok(())
    }

    pub fn write<F: NorFlash>(&mut self, flash: &mut F, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let end = self.written() as u64 + data.len() as u64;
        if end > self.part.size as u64 {
            return Err(UpdateError::TooLarge {
                label: self.part.label,
                size: end,
                capacity: self.part.size,
            }
            .into());
        }
        self.start(flash)?;
        let room = self.first.len() - self.first_len;
        let n = room.min(data.len());
        self.first[self.first_len..self.first_len + n].copy_from_slice(&data[..n]);
        self.first_len += n;
        self.rest.write(flash, &data[n..])
    }

    /// Finish: erase the stale rest of the partition (only sectors that are not blank), then
    /// program the buffered first sector, its header last.
    pub fn finish<F: NorFlash>(mut self, flash: &mut F) -> Result<u32, Error> {
        self.start(flash)?;
        self.rest.clear_rest(flash)?;
        write_first_sector_last(flash, &self.part.region(), &self.first[..self.first_len])?;
        Ok(self.written())
    }
}

/// `esp_ota_begin`'s refusal with `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE` (ESP-IDF v5.5+,
/// idf-formats.md §2.5): no new update while the running app is PENDING_VERIFY, i.e. has not
/// confirmed itself. Read-only. `running`: the booted app partition (None: nothing to check).
pub fn check_running_confirmed<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    running: Option<&Partition>,
) -> Result<(), Error> {
    let Some(running) = running else {
        return Ok(());
    };
    match crate::boot::ota_state_of(flash, table, running) {
        Some(crate::otadata::OtaState::PendingVerify) => Err(UpdateError::RollbackInvalidState {
            running: running.label,
        }
        .into()),
        _ => Ok(()),
    }
}

/// What `esp_ota_begin` does with rollback enabled before the first write (ESP-IDF v5.5+,
/// idf-formats.md §2.5): [`check_running_confirmed`], then
/// `esp_ota_invalidate_inactive_ota_data_slot` — erase the otadata sector of the inactive entry
/// (it points at the slot about to be overwritten) unless that entry is blank or names the
/// running slot. Returns `(sector, slot)` erased, if any.
///
/// `map` names the table, the running app and what must not be written: the otadata partition
/// is checked against it ([`crate::guard`]) before anything is erased.
pub fn begin_with_rollback<F: NorFlash>(
    flash: &mut F,
    map: &FlashMap<'_>,
) -> Result<Option<(usize, u8)>, Error> {
    let (table, running) = (map.table, map.running.as_ref());
    map.check_otadata()?;
    check_running_confirmed(flash, table, running)?;
    let Some(otadata) = table.otadata().copied() else {
        return Ok(None);
    };
    let mut od = OtaData::read(flash, &otadata)?;
    let running_slot = running.and_then(|p| p.ota_slot());
    od.invalidate_inactive(flash, &otadata, table.ota_count(), running_slot)
}

/// What [`mark_app_valid_cancel_rollback`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkedValid {
    /// The active otadata entry and its seq.
    pub entry: usize,
    pub seq: u32,
    /// The state it had, when it was rewritten as VALID (None: already VALID, nothing written).
    pub was: Option<crate::otadata::OtaState>,
    /// Anti-rollback: the eFuse counter after the call (raised to the app's secure_version).
    pub efuse_secure_version: Option<u32>,
}

/// `esp_ota_mark_app_valid_cancel_rollback` (idf-formats.md §2.5): the ACTIVE otadata entry
/// becomes VALID (same seq, same sector: erase + write), unless it already is. With
/// anti-rollback (`anti_rollback = Some(eFuse counter)`), after a successful write the eFuse
/// takes the `secure_version` of the app in that entry's slot (`esp_ota_set_anti_rollback`);
/// a version beyond the chip's field is an error, as `esp_efuse_update_secure_version` fails.
pub fn mark_app_valid_cancel_rollback<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    chip: Chip,
    anti_rollback: Option<u32>,
) -> Result<MarkedValid, Error> {
    let part = *table.otadata().ok_or(UpdateError::NoOtaData)?;
    // otadata must lie clear of the bootloader, the table (at its default offset) and the apps.
    FlashMap::new(table, chip, None).check_otadata()?;
    let count = table.ota_count();
    let mut od = OtaData::read(flash, &part)?;
    let plan = od.plan_mark_valid(count)?;
    let entry = od.active().unwrap_or(0);
    let seq = od.entries[entry].seq;
    let Some((idx, e)) = plan else {
        return Ok(MarkedValid {
            entry,
            seq,
            was: None,
            efuse_secure_version: anti_rollback,
        });
    };
    let was = od.entries[idx].state();
    od.commit(flash, &part, idx, e)?;
    let mut efuse = anti_rollback;
    if let Some(cur) = anti_rollback {
        let slot = e.slot(count).unwrap_or(0);
        if let Some(d) = table
            .ota(slot)
            .and_then(|p| crate::boot::partition_app_desc(flash, p))
        {
            let to = crate::boot::efuse_update_secure_version(chip, cur, d.secure_version).ok_or(
                UpdateError::SecureVersionOutOfRange {
                    version: d.secure_version,
                    field_bits: crate::boot::secure_version_field_bits(chip),
                },
            )?;
            efuse = Some(to);
        }
    }
    Ok(MarkedValid {
        entry: idx,
        seq,
        was: Some(was),
        efuse_secure_version: efuse,
    })
}

/// `esp_ota_mark_app_invalid_rollback` (the part before `…_and_reboot` restarts,
/// idf-formats.md §2.5): `esp_ota_check_rollback_is_possible` verifies the app it would fall
/// back to (the other entry's slot, else a factory app; with anti-rollback its
/// `secure_version` must reach the eFuse counter and a factory app does not count), then the
/// active entry becomes INVALID. Returns the sector written. Nothing is written on error.
pub fn mark_app_invalid_rollback<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    chip: Chip,
    anti_rollback: Option<u32>,
) -> Result<usize, Error> {
    let part = *table.otadata().ok_or(UpdateError::NoOtaData)?;
    // otadata must lie clear of the bootloader, the table (at its default offset) and the apps.
    FlashMap::new(table, chip, None).check_otadata()?;
    let count = table.ota_count();
    let mut od = OtaData::read(flash, &part)?;
    let mut verifies = |p: Option<&Partition>| -> bool {
        let Some(p) = p else { return false };
        match image::verify_flash(flash, p.region(), Some(chip)) {
            Ok(s) => match anti_rollback {
                Some(efuse) => s.loader_app_desc.is_some_and(|d| d.secure_version >= efuse),
                None => true,
            },
            Err(_) => false,
        }
    };
    let other_ok = match od.rollback_candidate(count) {
        Some(crate::otadata::RollbackCandidate::Slot { slot, .. }) => verifies(table.ota(slot)),
        Some(crate::otadata::RollbackCandidate::Factory) => {
            anti_rollback.is_none() && verifies(table.factory())
        }
        None => false,
    };
    od.mark_invalid(flash, &part, count, other_ok)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::boot::{self, BootConfig};
    use crate::testutil::{app_image, example_table, RamFlash};

    const OTADATA: u32 = 0xD000;
    const OTA_1: u32 = 0x110000;

    fn cfg() -> AppUpdateConfig {
        AppUpdateConfig::new(Chip::Esp32)
    }

    /// The map of the example table, nothing running.
    fn map(t: &PartitionTable) -> FlashMap<'_> {
        FlashMap::new(t, Chip::Esp32, None)
    }

    /// A device running `v1.0.0` from ota_0 (booted once, so otadata holds seq 1).
    fn device() -> (RamFlash, PartitionTable) {
        let mut f = RamFlash::new(4 << 20);
        let t = example_table();
        f.put(0x10000, &app_image(Chip::Esp32, "app", "v1.0.0", 60_000));
        let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
        assert_eq!(out.partition.label.as_str(), "ota_0");
        f.erases.iter_mut().for_each(|e| *e = 0);
        (f, t)
    }

    fn update(
        f: &mut RamFlash,
        t: &PartitionTable,
        img: &[u8],
        chunk: usize,
    ) -> Result<Committed, Error> {
        let running = *t.ota(0).unwrap();
        let mut u = AppUpdate::begin(t, Some(&running), cfg(), Some(img.len() as u64))?;
        let n = u.feed_prefix(img)?;
        for c in img[n..].chunks(chunk) {
            u.write(f, c)?;
        }
        u.finish(f)
    }

    #[test]
    fn next_update_slot_follows_esp_idf() {
        let t = example_table();
        assert_eq!(
            next_update_slot(&t, t.ota(0)).unwrap().label.as_str(),
            "ota_1"
        );
        assert_eq!(
            next_update_slot(&t, t.ota(1)).unwrap().label.as_str(),
            "ota_0"
        );
        assert_eq!(next_update_slot(&t, None).unwrap().label.as_str(), "ota_0");
    }

    #[test]
    fn app_update_writes_next_slot_and_switches_otadata_last() {
        let (mut f, t) = device();
        let img = app_image(Chip::Esp32, "new", "v2.0.0", 300_000);
        let done = update(&mut f, &t, &img, 1000).unwrap();
        assert_eq!(done.slot.offset, OTA_1);
        assert_eq!(
            &f.data[OTA_1 as usize..OTA_1 as usize + img.len()],
            &img[..]
        );
        // Erase-ahead: exactly the sectors the image covers, once each; never the whole slot.
        let sectors = (img.len() as u32).div_ceil(4096);
        assert_eq!(f.erases_in(OTA_1, 0x100000), sectors);
        assert!(f.erases[(OTA_1 / 4096) as usize..][..sectors as usize]
            .iter()
            .all(|&e| e == 1));
        // One otadata sector rewritten, then the bootloader picks ota_1.
        assert_eq!(f.erases_in(OTADATA, 0x2000), 1);
        let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
        assert_eq!(out.partition.offset, OTA_1);
        assert_eq!(out.summary.app_desc.unwrap().version_str(), "v2.0.0");
    }

    #[test]
    fn app_update_checks_the_prefix_before_touching_flash() {
        let (f, t) = device();
        let before = f.data.clone();
        let c3 = app_image(Chip::Esp32c3, "x", "v2", 10_000);
        let running = *t.ota(0).unwrap();
        let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
        let e = u.feed_prefix(&c3).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Update(UpdateError::WrongChip {
                    expected: 0,
                    found: 5
                })
            ),
            "{:?}",
            e
        );
        let mut bad = app_image(Chip::Esp32, "x", "v2", 10_000);
        bad[0] = 0;
        let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
        assert!(u.feed_prefix(&bad).is_err());
        assert_eq!(f.total_erases(), 0);
        assert!(f.data == before);
        // Too large for the slot: refused at begin.
        let e = AppUpdate::begin(&t, Some(&running), cfg(), Some(0x100001))
            .err()
            .unwrap();
        assert!(matches!(e, Error::Update(UpdateError::TooLarge { .. })));
    }

    #[test]
    fn app_update_with_corrupt_image_leaves_otadata_and_running_slot() {
        let (mut f, t) = device();
        let before = f.data.clone();
        let mut img = app_image(Chip::Esp32, "new", "v2.0.0", 100_000);
        let mid = img.len() / 2;
        img[mid] ^= 1;
        assert!(update(&mut f, &t, &img, 4096).is_err());
        assert!(
            f.data[0xD000..0x110000] == before[0xD000..0x110000],
            "otadata or ota_0 changed"
        );
        let truncated = &app_image(Chip::Esp32, "new", "v2.0.0", 100_000)[..50_000];
        assert!(update(&mut f, &t, truncated, 777).is_err());
        assert!(f.data[0xD000..0x110000] == before[0xD000..0x110000]);
        let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
        assert_eq!(out.partition.label.as_str(), "ota_0");
    }

    #[test]
    fn version_policy_refuses_older_images() {
        let (f, t) = device();
        let running = *t.ota(0).unwrap();
        let mut desc = [0u8; 256];
        desc.copy_from_slice(&f.data[0x10020..0x10120]);
        let cur = AppDesc::parse(&desc).unwrap();
        let old = app_image(Chip::Esp32, "x", "v0.9.0", 5_000);
        let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
        u.feed_prefix(&old).unwrap();
        assert!(u.check_version(VersionPolicy::None, Some(&cur)).is_ok());
        assert!(u.check_version(VersionPolicy::Newer, Some(&cur)).is_err());
        assert!(u.check_version(VersionPolicy::Semver, Some(&cur)).is_err());
        let new = app_image(Chip::Esp32, "x", "v1.0.1", 5_000);
        let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
        u.feed_prefix(&new).unwrap();
        assert!(u.check_version(VersionPolicy::Newer, Some(&cur)).is_ok());
    }

    fn journaled(
        f: &mut RamFlash,
        t: &PartitionTable,
        img: &[u8],
        uri: &str,
    ) -> (AppUpdate, ResumeLog) {
        let running = *t.ota(0).unwrap();
        let mut u = AppUpdate::begin(t, Some(&running), cfg(), Some(img.len() as u64)).unwrap();
        let log = ResumeLog::locate(t, u.slot()).unwrap();
        let etag = crate::resume::Validator::new(crate::resume::ValidatorKind::ETag, "\"e1\"");
        let h = ResumeHeader::new(u.slot(), uri, etag.unwrap(), img.len() as u32);
        u.enable_resume(log, h, Some(img.len() as u64)).unwrap();
        u.feed_prefix(img).unwrap();
        u.write(f, &[]).unwrap();
        (u, log)
    }

    #[test]
    fn interrupted_update_resumes_from_its_last_checkpoint() {
        let (mut f, t) = device();
        let img = app_image(Chip::Esp32, "new", "v2.0.0", 200_000);
        let (mut u, log) = journaled(&mut f, &t, &img, "http://h/new.bin");
        // Sector-aligned 4 KiB writes, as the service does, up to 50_000 bytes + a partial one.
        let mut pos = IMAGE_PREFIX_LEN;
        let stop = 50_000;
        while pos < stop {
            let end = ((pos / 4096 + 1) * 4096).min(stop);
            u.write(&mut f, &img[pos..end]).unwrap();
            pos = end;
        }
        assert_eq!(u.checkpoint(), Some(49_152));
        // The power goes off: the engine is gone, only the flash remains.
        let otadata_before = f.data[0xD000..0xF000].to_vec();
        let rec = log.read(&mut f).unwrap().unwrap();
        assert_eq!(rec.progress, 49_152);
        assert!(rec.header.is_for("http://h/new.bin", t.ota(1).unwrap()));
        let running = *t.ota(0).unwrap();
        let mut u = AppUpdate::resume(&mut f, &t, Some(&running), cfg(), log, rec).unwrap();
        assert_eq!(u.resumed_from(), 49_152);
        assert_eq!(u.written(), 49_152);
        assert_eq!(u.incoming_desc().unwrap().version_str(), "v2.0.0");
        for c in img[49_152..].chunks(4096) {
            u.write(&mut f, c).unwrap();
        }
        assert_eq!(
            f.data[0xD000..0xF000],
            otadata_before[..],
            "otadata untouched before finish"
        );
        let done = u.finish(&mut f).unwrap();
        assert_eq!(done.resumed_from, 49_152);
        assert!(done.resume_cleared);
        assert_eq!(log.read(&mut f).unwrap(), None, "record cleared on commit");
        let out = boot::boot(&mut f, &t, Chip::Esp32, &BootConfig::default(), &mut |_| {}).unwrap();
        assert_eq!(out.partition.offset, OTA_1);
        assert_eq!(out.summary.app_desc.unwrap().version_str(), "v2.0.0");
    }

    #[test]
    fn resumed_update_with_corrupted_slot_bytes_never_commits() {
        let (mut f, t) = device();
        let img = app_image(Chip::Esp32, "new", "v2.0.0", 100_000);
        let (mut u, log) = journaled(&mut f, &t, &img, "http://h/new.bin");
        for c in img[IMAGE_PREFIX_LEN..40_960].chunks(4096) {
            u.write(&mut f, c).unwrap();
        }
        // Abandoned here (a restart).
        let running = *t.ota(0).unwrap();
        let before = f.data[0xD000..0x110000].to_vec();
        // A flipped bit in segment data below the checkpoint: the re-hash cannot see it until
        // the end, where the SHA-256 fails; the record is then dropped.
        f.data[OTA_1 as usize + 20_000] ^= 0x04;
        let rec = log.read(&mut f).unwrap().unwrap();
        let mut u = AppUpdate::resume(&mut f, &t, Some(&running), cfg(), log, rec).unwrap();
        for c in img[rec.progress as usize..].chunks(4096) {
            u.write(&mut f, c).unwrap();
        }
        let e = u.finish(&mut f).unwrap_err();
        assert!(matches!(e, Error::Image(_)), "{e:?}");
        assert_eq!(
            log.read(&mut f).unwrap(),
            None,
            "bad resume is not resumed again"
        );
        assert!(
            f.data[0xD000..0x110000] == before[..],
            "otadata or ota_0 changed"
        );
        // A broken header in the slot: resume refuses at once.
        let (mut u, log) = journaled(&mut f, &t, &img, "http://h/new.bin");
        for c in img[IMAGE_PREFIX_LEN..16_384].chunks(4096) {
            u.write(&mut f, c).unwrap();
        }
        // Abandoned here (a restart).
        f.data[OTA_1 as usize] = 0;
        let rec = log.read(&mut f).unwrap().unwrap();
        assert!(AppUpdate::resume(&mut f, &t, Some(&running), cfg(), log, rec).is_err());
    }

    #[test]
    fn resume_log_in_the_slot_tail_limits_the_image() {
        let (_, t) = device();
        let running = *t.ota(0).unwrap();
        let mut u = AppUpdate::begin(&t, Some(&running), cfg(), Some(0x100000)).unwrap();
        let log = ResumeLog::locate(&t, u.slot()).unwrap();
        let etag = crate::resume::Validator::new(crate::resume::ValidatorKind::ETag, "\"x\"");
        let h = ResumeHeader::new(u.slot(), "http://h/a", etag.unwrap(), 0x100000);
        let e = u.enable_resume(log, h, Some(0x100000)).unwrap_err();
        assert!(matches!(
            e,
            Error::Update(UpdateError::Resume(ResumeError::NoRoom { .. }))
        ));
        assert!(u.enable_resume(log, h, None).is_err());
        assert!(u.enable_resume(log, h, Some(0xFF000)).is_ok());
    }

    #[test]
    fn resume_record_for_the_other_slot_is_refused() {
        let (mut f, t) = device();
        let img = app_image(Chip::Esp32, "new", "v2.0.0", 30_000);
        let (mut u, log) = journaled(&mut f, &t, &img, "http://h/new.bin");
        u.write(&mut f, &img[IMAGE_PREFIX_LEN..8192]).unwrap();
        // Abandoned here (a restart).
        let rec = log.read(&mut f).unwrap().unwrap();
        // Running ota_1 now: the target is ota_0, the record is for ota_1.
        let running = *t.ota(1).unwrap();
        let e = AppUpdate::resume(&mut f, &t, Some(&running), cfg(), log, rec)
            .err()
            .unwrap();
        assert!(matches!(
            e,
            Error::Update(UpdateError::Resume(ResumeError::OtherSlot { .. }))
        ));
    }

    #[test]
    fn data_update_refuses_oversize_and_clears_the_stale_tail() {
        let (mut f, t) = device();
        assert!(DataUpdate::begin(&map(&t), "flash_tone", Some(0x100001)).is_err());
        assert!(matches!(
            DataUpdate::begin(&map(&t), "nope", None).err().unwrap(),
            Error::Update(UpdateError::PartitionNotFound { .. })
        ));
        f.put(0x2F0000, &[0u8; 16]); // stale bytes far into the partition
        let mut d = DataUpdate::begin(&map(&t), "flash_tone", Some(10_000)).unwrap();
        d.write(&mut f, &[0x11; 6000]).unwrap();
        d.write(&mut f, &[0x22; 4000]).unwrap();
        assert!(d.write(&mut f, &[0; 0x100000]).is_err());
        d.finish(&mut f).unwrap();
        assert!(f.data[0x210000..0x210000 + 6000].iter().all(|&b| b == 0x11));
        assert!(f.data[0x210000 + 10_000..0x310000]
            .iter()
            .all(|&b| b == 0xFF));
        // Blank sectors are not erased again: 3 written + the one with stale bytes.
        assert_eq!(f.erases_in(0x210000, 0x100000), 4);
    }

    fn secure_image(version: &str, secure_version: u32, size: u32) -> std::vec::Vec<u8> {
        let mut spec = crate::image::ImageSpec::new(Chip::Esp32, "app", version);
        spec.total_size = Some(size);
        spec.secure_version = secure_version;
        let mut out = std::vec::Vec::new();
        crate::image::build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
        out
    }

    #[test]
    fn data_update_keeps_the_first_sector_erased_until_finish_and_writes_it_last() {
        let (mut f, t) = device();
        f.put(0x210000, &[0x00; 64]); // an old header that must not survive the first write
        let img: std::vec::Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut d = DataUpdate::begin(&map(&t), "flash_tone", Some(img.len() as u64)).unwrap();
        for c in img.chunks(700) {
            d.write(&mut f, c).unwrap();
            // Whatever has been streamed, sector 0 stays blank until finish.
            assert!(f.data[0x210000..0x211000].iter().all(|&b| b == 0xFF));
        }
        assert_eq!(d.written(), img.len() as u32);
        let before = f.bytes_written;
        d.finish(&mut f).unwrap();
        assert_eq!(
            f.bytes_written - before,
            4096,
            "finish programs exactly sector 0"
        );
        assert_eq!(&f.data[0x210000..0x210000 + img.len()], &img[..]);
    }

    #[test]
    fn anti_rollback_refuses_an_old_secure_version_early_and_erases_it_at_commit() {
        let (mut f, t) = device();
        let running = *t.ota(0).unwrap();
        let old = secure_image("v2.0.0", 1, 40_000);
        // Early: from the prefix, before anything is written.
        let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
        u.set_anti_rollback(Some(2));
        u.feed_prefix(&old).unwrap();
        assert!(matches!(
            u.check_secure_version(),
            Err(Error::Update(UpdateError::SecureVersionTooLow {
                version: 1,
                efuse: 2,
                ..
            }))
        ));
        // At commit (esp_ota_set_boot_partition): the image is erased, otadata untouched.
        let od_before = f.data[0xD000..0xF000].to_vec();
        for c in old[IMAGE_PREFIX_LEN..].chunks(4096) {
            u.write(&mut f, c).unwrap();
        }
        let e = u.finish(&mut f).unwrap_err();
        assert!(
            matches!(e, Error::Update(UpdateError::SecureVersionTooLow { .. })),
            "{e:?}"
        );
        assert!(f.data[OTA_1 as usize..OTA_1 as usize + 0x100000]
            .iter()
            .all(|&b| b == 0xFF));
        assert_eq!(&f.data[0xD000..0xF000], &od_before[..]);
        // An image at the eFuse version passes.
        let ok = secure_image("v2.0.1", 2, 40_000);
        let mut u = AppUpdate::begin(&t, Some(&running), cfg(), None).unwrap();
        u.set_anti_rollback(Some(2));
        u.feed_prefix(&ok).unwrap();
        u.check_secure_version().unwrap();
        for c in ok[IMAGE_PREFIX_LEN..].chunks(4096) {
            u.write(&mut f, c).unwrap();
        }
        assert_eq!(u.finish(&mut f).unwrap().slot.offset, OTA_1);
    }

    #[test]
    fn begin_with_rollback_refuses_a_pending_app_and_invalidates_the_inactive_entry() {
        let (mut f, t) = device(); // ota_0 running, otadata[0] = seq 1 VALID
        let rb = AppUpdateConfig {
            rollback: true,
            ..cfg()
        };
        let img = app_image(Chip::Esp32, "new", "v2.0.0", 30_000);
        let running = *t.ota(0).unwrap();
        // Nothing inactive yet: nothing erased.
        assert_eq!(
            begin_with_rollback(&mut f, &cfg().flash_map(&t, Some(&running))).unwrap(),
            None
        );
        let mut u = AppUpdate::begin(&t, Some(&running), rb, None).unwrap();
        let n = u.feed_prefix(&img).unwrap();
        u.write(&mut f, &img[n..]).unwrap();
        u.finish(&mut f).unwrap();
        let rcfg = BootConfig {
            rollback: true,
            ..BootConfig::default()
        };
        let out = boot::boot(&mut f, &t, Chip::Esp32, &rcfg, &mut |_| {}).unwrap();
        assert_eq!(out.partition.offset, OTA_1);
        let ota1 = *t.ota(1).unwrap();
        // ota_1 runs unconfirmed: esp_ota_begin refuses, and writes nothing.
        let before = f.data.clone();
        assert!(matches!(
            begin_with_rollback(&mut f, &cfg().flash_map(&t, Some(&ota1))),
            Err(Error::Update(UpdateError::RollbackInvalidState { .. }))
        ));
        assert!(f.data == before);
        // Confirmed: the inactive entry (ota_0's, sector 0) is erased before the next update.
        let part = *t.otadata().unwrap();
        OtaData::read(&mut f, &part)
            .unwrap()
            .mark_valid(&mut f, &part, 2)
            .unwrap();
        assert_eq!(
            begin_with_rollback(&mut f, &cfg().flash_map(&t, Some(&ota1))).unwrap(),
            Some((0, 0))
        );
        assert!(f.data[0xD000..0xE000].iter().all(|&b| b == 0xFF));
    }

    /// The example table with its entry `label` moved to `offset`/`size`.
    fn moved(label: &str, offset: u32, size: u32) -> PartitionTable {
        let mut out = PartitionTable::new();
        for p in example_table().iter() {
            let mut p = *p;
            if p.label.as_str() == label {
                p.offset = offset;
                p.size = size;
            }
            out.push(p).unwrap();
        }
        out
    }

    #[test]
    fn app_update_refuses_a_slot_over_the_partition_table_before_any_erase() {
        let (f, _) = device();
        let t = moved("ota_1", 0x8000, 0x1000);
        let running = *t.ota(0).unwrap();
        let e = AppUpdate::begin(&t, Some(&running), cfg(), Some(100))
            .err()
            .unwrap();
        assert!(
            matches!(
                e,
                Error::Update(UpdateError::Guard(GuardError::Overlap { .. }))
            ),
            "{e:?}"
        );
        assert_eq!(f.total_erases(), 0);
        // A non-default table offset moves the protected sector with it.
        let t = moved("ota_1", 0x110000, 0x100000);
        let at_0x110000 = AppUpdateConfig {
            table_offset: 0x110000,
            ..cfg()
        };
        let e = AppUpdate::begin(&t, Some(&running), at_0x110000, None)
            .err()
            .unwrap();
        assert!(std::format!("{e}").contains("the partition table at 0x110000..0x111000"));
        // A slot beyond a known flash size.
        let small = AppUpdateConfig {
            flash_size: Some(0x180000),
            ..cfg()
        };
        assert!(AppUpdate::begin(&t, Some(&running), small, None).is_err());
    }

    #[test]
    fn app_update_writes_only_the_resume_log_its_table_keeps() {
        let (mut f, t) = device();
        let running = *t.ota(0).unwrap();
        let mut u = AppUpdate::begin(&t, Some(&running), cfg(), Some(30_000)).unwrap();
        // A log located with another table (ota_resume inside the running app).
        let mut other = example_table();
        other
            .push(Partition {
                ptype: crate::partition::TYPE_DATA,
                subtype: 0x99,
                offset: 0x11000,
                size: 0x1000,
                label: Label::new(crate::resume::RESUME_PARTITION_LABEL),
                flags: 0,
            })
            .unwrap();
        let foreign = ResumeLog::locate(&other, u.slot()).unwrap();
        let v = crate::resume::Validator::new(crate::resume::ValidatorKind::ETag, "\"e\"").unwrap();
        let h = ResumeHeader::new(u.slot(), "http://h/a", v, 30_000);
        let e = u.enable_resume(foreign, h, Some(30_000)).unwrap_err();
        assert!(matches!(
            e,
            Error::Update(UpdateError::Resume(ResumeError::ForeignLog {
                log_offset: 0x11000,
                ..
            }))
        ));
        assert!(u.discard_resume_record(foreign).is_err());
        // With that table itself, begin refuses at once.
        let e = AppUpdate::begin(&other, Some(&running), cfg(), None)
            .err()
            .unwrap();
        assert!(
            std::format!("{e}").contains("overlaps the running app ota_0"),
            "{e}"
        );
        let before = f.data.clone();
        let home = ResumeLog::locate(&t, u.slot()).unwrap();
        u.enable_resume(home, h, Some(30_000)).unwrap();
        assert!(f.data == before);
        let _ = &mut f;
    }

    #[test]
    fn data_update_refuses_a_partition_over_otadata_or_the_bootloader() {
        let t = moved("flash_tone", 0xE000, 0x2000);
        let e = DataUpdate::begin(&map(&t), "flash_tone", None)
            .err()
            .unwrap();
        assert!(
            std::format!("{e}").contains("data partition flash_tone at 0xe000..0x10000 (8192 bytes) overlaps otadata partition otadata"),
            "{e}"
        );
        let t = moved("flash_tone", 0x1000, 0x2000);
        let e = DataUpdate::begin(&map(&t), "flash_tone", None)
            .err()
            .unwrap();
        assert!(
            std::format!("{e}").contains("overlaps the bootloader region"),
            "{e}"
        );
        let otadata = *t.otadata().unwrap();
        assert!(DataUpdate::for_partition(&map(&t), &otadata, None).is_err());
    }

    #[test]
    fn rollback_helpers_refuse_an_otadata_over_an_app() {
        let (mut f, _) = device();
        let t = moved("otadata", 0x10000, 0x2000); // on top of ota_0
        let running = *t.ota(0).unwrap();
        let before = f.data.clone();
        let e = begin_with_rollback(&mut f, &cfg().flash_map(&t, Some(&running)))
            .err()
            .unwrap();
        assert!(
            std::format!("{e}").starts_with("otadata partition otadata at 0x10000..0x12000 (8192 bytes) overlaps the running app ota_0"),
            "{e}"
        );
        assert!(mark_app_valid_cancel_rollback(&mut f, &t, Chip::Esp32, None).is_err());
        assert!(mark_app_invalid_rollback(&mut f, &t, Chip::Esp32, None).is_err());
        assert!(f.data == before);
    }
}
