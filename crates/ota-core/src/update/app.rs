//! The app update engine: picks the next OTA slot, checks the incoming image before erasing,
//! writes it, verifies it and switches otadata (idf-formats.md §2.4, §2.8).

use super::UpdateError;
use crate::chip::Chip;
use crate::flash::{self, Aligned, Region, SequentialWriter, MAX_WORD, SECTOR_SIZE};
use crate::guard::FlashMap;
use crate::image::{self, AppDesc, ImageHeader, ImageSummary, ImageVerifier, IMAGE_PREFIX_LEN};
use crate::otadata::OtaData;
use crate::partition::{Partition, PartitionTable};
use crate::resume::{
    DeltaCheckpoint, RecordKind, ResumeError, ResumeHeader, ResumeLog, ResumeRecord,
};
use crate::secure_boot::{self, AppSignatures, SignatureSector, TrustContext};
use crate::version::{self, VersionPolicy, VersionVerdict};
use crate::Error;
use embedded_storage::nor_flash::NorFlash;

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
    /// Which signatures a new app must carry (Secure Boot v2, or signed apps without secure
    /// boot): checked in [`AppUpdate::finish`] before otadata is switched, and early by
    /// [`AppUpdate::precheck_signature_sector`].
    pub signatures: AppSignatures,
}

impl AppUpdateConfig {
    /// A `chip` device with the table at the default offset, flash size unknown, no rollback.
    pub fn new(chip: Chip) -> Self {
        AppUpdateConfig {
            chip,
            rollback: false,
            table_offset: crate::partition::TABLE_OFFSET,
            flash_size: None,
            signatures: AppSignatures::NotChecked,
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

/// Where an [`AppUpdate`] is, for [`UpdateError::WrongState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AppPhase {
    /// [`AppUpdate::feed_prefix`] has not received the image's first 289 bytes yet.
    AwaitingPrefix,
    /// The prefix was checked; nothing is written yet.
    PrefixChecked,
    /// Bytes have reached the slot.
    Writing,
}

/// An [`AppUpdate`] call, for [`UpdateError::WrongState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AppCall {
    FeedPrefix,
    EnableResume,
    Write,
}

impl core::fmt::Display for AppPhase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AppPhase::AwaitingPrefix => "the image prefix has not been fed yet",
            AppPhase::PrefixChecked => "the prefix was checked, nothing is written yet",
            AppPhase::Writing => "the image is being written",
        })
    }
}

impl core::fmt::Display for AppCall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AppCall::FeedPrefix => "feed_prefix",
            AppCall::EnableResume => "enable_resume",
            AppCall::Write => "write",
        })
    }
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
    state: AppPhase,
    writer: SequentialWriter,
    verifier: ImageVerifier,
    journal: Option<Journal>,
    /// Where this table keeps the slot's resume record ([`ResumeLog::locate`]): the only log
    /// this update writes (checked by [`crate::guard`] in [`AppUpdate::begin`]).
    home_log: Option<ResumeLog>,
    resumed_from: u32,
    /// Anti-rollback: the eFuse secure-version counter (see [`AppUpdate::set_anti_rollback`]).
    efuse_secure_version: Option<u32>,
    /// The app that runs (in "signed apps" mode its key is the trusted one).
    running: Option<Partition>,
    /// Whether a sector taken early from the source passed [`AppUpdate::precheck_signature_sector`].
    sector_prechecked: Option<u8>,
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
            state: AppPhase::AwaitingPrefix,
            writer: SequentialWriter::new(slot.region()),
            verifier,
            efuse_secure_version: None,
            journal: None,
            home_log: ResumeLog::locate(table, &slot),
            resumed_from: 0,
            running: running.copied(),
            sector_prechecked: None,
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
        if self.state == AppPhase::Writing {
            return Err(self.wrong_state(AppCall::EnableResume));
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
        if self.state != AppPhase::Writing {
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
        AppUpdate::resume_seeing(flash, table, running, cfg, log, record, &mut |_| {})
    }

    /// [`AppUpdate::resume`], handing `see` every chunk of the bytes already in the slot as
    /// they are read for the verifier (a caller that checks the whole file, e.g. a catalogue's
    /// SHA-256, is fed them without reading the slot again).
    pub fn resume_seeing<F: NorFlash>(
        flash: &mut F,
        table: &PartitionTable,
        running: Option<&Partition>,
        cfg: AppUpdateConfig,
        log: ResumeLog,
        record: ResumeRecord,
        see: &mut dyn FnMut(&[u8]),
    ) -> Result<AppUpdate, Error> {
        if record.header.kind != RecordKind::Image {
            return Err(UpdateError::Resume(ResumeError::OtherKind {
                record: record.header.kind,
            })
            .into());
        }
        AppUpdate::resume_output(flash, table, running, cfg, log, record, see)
    }

    /// [`AppUpdate::resume_seeing`] for a record of any kind (a delta update resumes its
    /// output so).
    pub(crate) fn resume_output<F: NorFlash>(
        flash: &mut F,
        table: &PartitionTable,
        running: Option<&Partition>,
        cfg: AppUpdateConfig,
        log: ResumeLog,
        record: ResumeRecord,
        see: &mut dyn FnMut(&[u8]),
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
            see(chunk);
            off += k;
        }
        u.writer = SequentialWriter::at(Region::new(u.slot.offset, limit), n);
        u.state = AppPhase::Writing;
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

    /// Make the resume log started at the first write a delta update's (its checkpoints are
    /// appended by the delta update with [`AppUpdate::checkpoint_delta`], not after each write).
    /// Only before the first write, with a log enabled.
    pub(crate) fn set_resume_kind(&mut self, kind: RecordKind) {
        if self.state == AppPhase::Writing {
            return;
        }
        if let Some(Journal {
            header: Some(h), ..
        }) = &mut self.journal
        {
            h.kind = kind;
        }
    }

    /// Append a delta checkpoint to the resume log: `d`'s output offset must be exactly the
    /// bytes written to flash (and read back) so far. `Ok(false)`: no delta log is kept, or the
    /// log is full.
    pub(crate) fn checkpoint_delta<F: NorFlash>(
        &mut self,
        flash: &mut F,
        d: &DeltaCheckpoint,
    ) -> Result<bool, Error> {
        let Some(Journal {
            log,
            record: Some(mut rec),
            ..
        }) = self.journal
        else {
            return Ok(false);
        };
        let output = d.checkpoint.output_offset();
        let (written, flushed) = (self.writer.written(), self.writer.flushed());
        if output != written || output != flushed {
            return Err(UpdateError::Resume(ResumeError::CheckpointNotDurable {
                output,
                written: flushed,
            })
            .into());
        }
        let r = log.checkpoint_delta(flash, &mut rec, d);
        if let Some(j) = &mut self.journal {
            j.record = Some(rec);
        }
        r
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
        if rec.header.kind != RecordKind::Image {
            // A delta update appends its own checkpoints (applier state included).
            return Ok(());
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

    /// The trust context of this device's signature rule: in "signed apps" mode, the key of
    /// the running app's first valid block, read from flash.
    pub fn trust_context<F: NorFlash>(&self, flash: &mut F) -> TrustContext {
        let running_key = match self.cfg.signatures {
            AppSignatures::SignedApps { scheme } => self
                .running
                .as_ref()
                .and_then(|p| secure_boot::running_key_on_flash(flash, p, scheme)),
            _ => None,
        };
        TrustContext {
            rule: self.cfg.signatures,
            running_key,
        }
    }

    /// The early check, before anything is erased: `sector` is the image's signature sector
    /// taken from the source ahead of the stream (the last 4096 bytes of a signed file). A
    /// sector with no valid block of the device's scheme whose key is trusted and unrevoked
    /// refuses the update now, naming the block and the reason; the signatures themselves are
    /// verified in [`AppUpdate::finish`] over the bytes in the slot. Returns the block that
    /// would be tried (`None` when the device checks no signatures).
    pub fn precheck_signature_sector<F: NorFlash>(
        &mut self,
        flash: &mut F,
        sector: &[u8],
    ) -> Result<Option<u8>, Error> {
        if !self.cfg.signatures.is_checked() {
            return Ok(None);
        }
        let sector = SignatureSector::from_slice(sector).map_err(|_| {
            Error::from(secure_boot::AppSignatureError {
                partition: self.slot.label,
                partition_offset: self.slot.offset,
                kind: secure_boot::AppSignatureErrorKind::SectorNotStreamed {
                    sector_offset: 0,
                    streamed: sector.len() as u32,
                },
            })
        })?;
        let ctx = self.trust_context(flash);
        let b = secure_boot::precheck_sector(&self.slot, &sector, &ctx)?;
        self.sector_prechecked = b;
        Ok(b)
    }

    /// The block an early sector check found trustworthy, if one was made.
    pub fn sector_prechecked(&self) -> Option<u8> {
        self.sector_prechecked
    }

    /// Checks the signature of the image written to the slot (`esp_ota_end` ->
    /// `esp_image_verify` with signed apps): the signature sector must have come with the
    /// stream, and the signed data is read back from flash (the bytes that will boot, also
    /// after a resume, whose first part was never hashed on the stream).
    fn check_signature<F: NorFlash>(
        &self,
        flash: &mut F,
        summary: &ImageSummary,
    ) -> Result<(), Error> {
        if !self.cfg.signatures.is_checked() {
            return Ok(());
        }
        let at = secure_boot::sector_offset(summary.image_len).unwrap_or(u32::MAX);
        let end = at.saturating_add(secure_boot::SECTOR_SIZE as u32);
        if self.writer.written() < end {
            return Err(secure_boot::AppSignatureError {
                partition: self.slot.label,
                partition_offset: self.slot.offset,
                kind: secure_boot::AppSignatureErrorKind::SectorNotStreamed {
                    sector_offset: at,
                    streamed: self.writer.written(),
                },
            }
            .into());
        }
        let ctx = self.trust_context(flash);
        secure_boot::check_stored_app(flash, &self.slot, summary.image_len, &ctx).map(|_| ())
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
        if self.state != AppPhase::AwaitingPrefix {
            return Err(self.wrong_state(AppCall::FeedPrefix));
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
            self.state = AppPhase::PrefixChecked;
        }
        Ok(n)
    }

    /// Feed the whole prefix from a short stream that ended early: an image shorter than 289
    /// bytes cannot be an app (like `esp_https_ota_get_img_desc`).
    pub fn prefix_complete(&self) -> bool {
        self.state != AppPhase::AwaitingPrefix
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
            AppPhase::AwaitingPrefix => return Err(self.wrong_state(AppCall::Write)),
            AppPhase::PrefixChecked => {
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
                            // (A delta update's step is for its output: set by the caller.)
                            if h.kind == RecordKind::Image {
                                let basis = if h.total_len > 0 {
                                    h.total_len
                                } else {
                                    j.log.image_limit()
                                };
                                h.step = h.step.max(crate::resume::step_for_write_size(
                                    basis,
                                    flash::write_size::<F>(),
                                ));
                            }
                            j.header = Some(h);
                            j.record = Some(j.log.start(flash, &h)?);
                        }
                        None => {
                            j.log.clear(flash)?;
                            self.journal = None;
                        }
                    }
                }
                self.put(flash, &prefix)?;
                self.state = AppPhase::Writing;
                self.persist(flash, 0, &[], &prefix)?;
            }
            AppPhase::Writing => {}
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
        self.put(flash, data)?;
        self.persist(flash, from, &old[..n], data)
    }

    fn wrong_state(&self, call: AppCall) -> Error {
        UpdateError::WrongState {
            call,
            phase: self.state,
        }
        .into()
    }

    /// Append to the slot: an image that outgrows it (or its part before the resume log) is
    /// refused by name before anything is written.
    fn put<F: NorFlash>(&mut self, flash: &mut F, data: &[u8]) -> Result<(), Error> {
        let end = self.writer.written() as u64 + data.len() as u64;
        let capacity = self.writer.region().size;
        if end > capacity as u64 {
            return Err(UpdateError::TooLarge {
                label: self.slot.label,
                size: end,
                capacity,
            }
            .into());
        }
        Ok(self.writer.write(flash, data)?)
    }

    /// Whether the stream so far holds a complete image.
    pub fn image_complete(&self) -> bool {
        self.verifier.is_complete()
    }

    /// Verify (stream result, then the image as read back from flash, like `esp_ota_end`) and
    /// switch otadata to the new slot (`esp_ota_set_boot_partition`).
    pub fn finish<F: NorFlash>(mut self, flash: &mut F) -> Result<Committed, Error> {
        if self.state == AppPhase::PrefixChecked {
            // A prefix-only image: write it so the verifier sees it (it will report truncation).
            self.write(flash, &[])?;
        }
        if self.state != AppPhase::Writing {
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
        if let Err(e) = self.check_signature(flash, &summary) {
            // Refused before otadata is touched; the slot keeps the refused bytes (as after a
            // failed `esp_ota_end`) and is never selected.
            self.drop_journal(flash);
            return Err(e);
        }
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
