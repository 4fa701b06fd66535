//! A delta app update: the input is a detools sequential patch (optionally behind the
//! esp_delta_ota 64-byte header), the base is the running slot (read, never written), and the
//! applier's output goes through [`AppUpdate`], so it is checked, erased ahead, verified and
//! committed exactly like a full image (espressif/idf-extra-components
//! `esp_delta_ota/src/esp_delta_ota.c`: the base is `esp_ota_get_running_partition`, the output
//! goes through `esp_ota_write`).
//!
//! Order of the checks, nothing erased before all of them: the running image verifies and its
//! digest is computed ([`crate::delta::base_image_sha256`], in [`DeltaUpdate::begin`]); an
//! esp_delta_ota header's base SHA-256, or the digest the caller requires (a catalogue's
//! `base_sha256`), must equal it; the patch header must be one the applier decodes; the first
//! 289 output bytes go through [`AppUpdate::feed_prefix`] (magic, chip, descriptor) and the
//! version policy. Only then does the first output byte reach the new slot.

use core::cell::RefCell;

use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};

use super::app::{AppUpdate, AppUpdateConfig, Committed};
use super::UpdateError;
use crate::delta::{
    base_image_sha256, ApplyError, BaseImage, DeltaApplier, DeltaBase, DeltaError, EspDeltaHeader,
    ESP_DELTA_HEADER_LEN, ESP_DELTA_MAGIC,
};
use crate::flash::{FlashError, Region};
use crate::image::AppDesc;
use crate::partition::{Partition, PartitionTable};
use crate::resume::{
    step_for_kind, DeltaCheckpoint, RecordKind, ResumeError, ResumeHeader, ResumeLog, ResumeRecord,
};
use crate::version::VersionPolicy;
use crate::Error;

/// Whether the patch stream must start with the esp_delta_ota header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EspHeader {
    /// Accept a bare detools patch or one behind the header (told apart by the magic).
    Optional,
    /// Refuse a patch without the header (what esp_delta_ota's example requires).
    Required,
}

/// Where the patch header bytes are in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    /// Collecting the first bytes (up to 64) to tell an esp header from a detools patch.
    Sniffing,
    /// The esp header (if any) is checked; bytes go to the applier.
    Body,
}

/// The base read through a shared flash: the applier reads the running slot between its
/// writes to the new slot, one call at a time.
struct SharedBase<'c, F> {
    flash: &'c RefCell<&'c mut F>,
    region: Region,
    len: u32,
}

impl<F: NorFlash> DeltaBase for SharedBase<'_, F> {
    type Error = FlashError;
    fn len(&self) -> u32 {
        self.len
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        let mut f = self.flash.borrow_mut();
        self.region.read(&mut **f, offset, buf)
    }
}

/// A delta app update (see the module docs). Sans-IO like [`AppUpdate`]: feed patch chunks
/// of any size, then [`DeltaUpdate::finish`].
pub struct DeltaUpdate {
    app: AppUpdate,
    applier: DeltaApplier,
    running: Partition,
    base_sha256: [u8; 32],
    base_len: u32,
    esp: EspHeader,
    front: Front,
    sniff: [u8; ESP_DELTA_HEADER_LEN],
    sniff_len: usize,
    /// Bytes of the esp header in front of the detools patch (0 or 64).
    esp_len: u32,
    policy: VersionPolicy,
    running_desc: Option<AppDesc>,
    version_checked: bool,
    /// The image size the caller announced (the catalogue's), if any.
    expected_size: Option<u64>,
    /// Whether the patch header's output size was checked against the slot and
    /// `expected_size` (done before the first output byte).
    size_checked: bool,
    /// Output bytes between checkpoints (0: no resume log is kept).
    step: u32,
    /// Output offset of the next checkpoint.
    next_checkpoint: u32,
    /// SHA-256 of the output so far (checked against [`DeltaUpdate::require_target`]).
    output_hash: Sha256,
    target_sha256: Option<[u8; 32]>,
}

impl DeltaUpdate {
    /// Verify the running image in `running` (the base) and compute its digest, then pick the
    /// next slot as [`AppUpdate::begin`] does. Nothing is written. `expected_size`: the
    /// patched image's size when the caller knows it (refused early when it cannot fit).
    pub fn begin<F: NorFlash>(
        flash: &mut F,
        table: &PartitionTable,
        running: &Partition,
        cfg: AppUpdateConfig,
        expected_size: Option<u64>,
    ) -> Result<DeltaUpdate, Error> {
        let base = base_image_sha256(flash, running.region(), Some(cfg.chip))?;
        DeltaUpdate::begin_over(table, running, cfg, expected_size, &base)
    }

    /// [`DeltaUpdate::begin`] with the running image as [`base_image_sha256`] verified and
    /// digested it moments ago (a caller that needed its digest to choose the patch): the
    /// slot is not read a second time. `base` must come from `running` of this flash: the
    /// patch is applied over those bytes, read as it goes, and a wrong `base` can only make
    /// output that fails its checks (the target digest, the image verifier) before otadata
    /// is switched.
    pub fn begin_over(
        table: &PartitionTable,
        running: &Partition,
        cfg: AppUpdateConfig,
        expected_size: Option<u64>,
        base: &BaseImage,
    ) -> Result<DeltaUpdate, Error> {
        let app = AppUpdate::begin(table, Some(running), cfg, expected_size)?;
        let running_desc = base.summary.loader_app_desc;
        Ok(DeltaUpdate {
            app,
            applier: DeltaApplier::new(base.image_len),
            running: *running,
            base_sha256: base.sha256,
            base_len: base.image_len,
            esp: EspHeader::Optional,
            front: Front::Sniffing,
            sniff: [0; ESP_DELTA_HEADER_LEN],
            sniff_len: 0,
            esp_len: 0,
            policy: VersionPolicy::None,
            running_desc,
            version_checked: false,
            expected_size,
            size_checked: false,
            step: 0,
            next_checkpoint: 0,
            output_hash: Sha256::new(),
            target_sha256: None,
        })
    }

    /// Continue a delta update a power cut (or a lost connection) interrupted, from the last
    /// checkpoint of its resume record: the base must be the running image it was saved over,
    /// the output bytes already in the slot go through a fresh verifier and digest
    /// ([`AppUpdate::resume`]), and the applier is rebuilt from the saved state
    /// ([`DeltaApplier::resume`]). Feed the patch from [`DeltaUpdate::patch_offset`] on (bytes
    /// from the start of the patch file, esp_delta_ota header included). An error means the
    /// record cannot be used: start over with [`DeltaUpdate::begin`].
    pub fn resume<F: NorFlash>(
        flash: &mut F,
        table: &PartitionTable,
        running: &Partition,
        cfg: AppUpdateConfig,
        log: ResumeLog,
        record: ResumeRecord,
    ) -> Result<DeltaUpdate, Error> {
        let base = base_image_sha256(flash, running.region(), Some(cfg.chip))?;
        DeltaUpdate::resume_over(flash, table, running, cfg, log, record, &base)
    }

    /// [`DeltaUpdate::resume`] with the running image's [`BaseImage`] already at hand (see
    /// [`DeltaUpdate::begin_over`]).
    pub fn resume_over<F: NorFlash>(
        flash: &mut F,
        table: &PartitionTable,
        running: &Partition,
        cfg: AppUpdateConfig,
        log: ResumeLog,
        record: ResumeRecord,
        base: &BaseImage,
    ) -> Result<DeltaUpdate, Error> {
        let kind = record.header.kind;
        let (RecordKind::Delta { esp_header }, Some(d)) = (kind, record.delta) else {
            return Err(UpdateError::Resume(ResumeError::OtherKind { record: kind }).into());
        };
        if base.sha256 != d.base_sha256 {
            return Err(UpdateError::Resume(ResumeError::OtherBase).into());
        }
        let applier = DeltaApplier::resume(&d.checkpoint, base.image_len).map_err(delta_err)?;
        let n = record.progress;
        // The digest of the output so far, from the bytes in the slot as the engine re-reads
        // them for its verifier.
        let mut output_hash = Sha256::new();
        let app =
            AppUpdate::resume_output(flash, table, Some(running), cfg, log, record, &mut |b| {
                output_hash.update(b)
            })?;
        let step = record.header.step;
        Ok(DeltaUpdate {
            app,
            applier,
            running: *running,
            base_sha256: base.sha256,
            base_len: base.image_len,
            esp: EspHeader::Optional,
            front: Front::Body,
            sniff: [0; ESP_DELTA_HEADER_LEN],
            sniff_len: 0,
            esp_len: if esp_header {
                ESP_DELTA_HEADER_LEN as u32
            } else {
                0
            },
            policy: VersionPolicy::None,
            running_desc: base.summary.loader_app_desc,
            version_checked: false,
            expected_size: None,
            size_checked: false,
            step,
            next_checkpoint: n.saturating_add(step),
            output_hash,
            target_sha256: None,
        })
    }

    /// Keep a resume log for this delta update (`header`: the patch download's URI, validator
    /// and length). Before the first output byte reaches the slot the log sector is erased and
    /// the header written; then, every [`ResumeHeader::step`] output bytes, once they are in
    /// flash and read back, the applier's state is appended ([`crate::resume::RecordKind::Delta`]).
    /// The step is chosen here from the image size given to [`DeltaUpdate::begin`] (else the
    /// slot's) so that the log's 11 records last. Errors (no room for the log in the slot, a
    /// foreign log) leave the update without a log.
    pub fn enable_resume<F: NorFlash>(
        &mut self,
        log: ResumeLog,
        mut header: ResumeHeader,
    ) -> Result<(), Error> {
        header.kind = RecordKind::Delta {
            esp_header: self.esp_len > 0,
        };
        let out_len = self
            .expected_size
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(log.image_limit());
        header.step = step_for_kind(out_len, crate::flash::write_size::<F>(), header.kind);
        self.app.enable_resume(log, header, self.expected_size)?;
        self.step = header.step;
        self.next_checkpoint = header.step;
        Ok(())
    }

    /// Output bytes between the checkpoints of the resume log (0: none is kept).
    pub fn checkpoint_step(&self) -> u32 {
        self.step
    }

    /// Refuse the result before otadata is switched unless its SHA-256 (all output bytes) is
    /// `sha256` (a catalogue's `target_sha256`): what makes a resumed patch download, whose
    /// first part is not re-read, as safe as one checked from byte 0.
    pub fn require_target(&mut self, sha256: [u8; 32]) {
        self.target_sha256 = Some(sha256);
    }

    /// The digest of the running image, as esp_delta_ota's header and a catalogue's
    /// `base_sha256` state it (`esp_partition_get_sha256`).
    pub fn base_sha256(&self) -> &[u8; 32] {
        &self.base_sha256
    }

    /// Bytes of the running image (the base the patch is applied to).
    pub fn base_len(&self) -> u32 {
        self.base_len
    }

    /// Require (or not) the esp_delta_ota header in front of the patch.
    pub fn set_esp_header(&mut self, esp: EspHeader) {
        self.esp = esp;
    }

    /// Refuse the update unless the running image's digest is `sha256` (e.g. the catalogue's
    /// `base_sha256` for this patch): checked now, before any byte of the patch is read.
    pub fn require_base(&mut self, sha256: [u8; 32]) -> Result<(), Error> {
        if sha256 != self.base_sha256 {
            return Err(delta_err(DeltaError::BaseMismatch {
                expected: sha256,
                found: self.base_sha256,
            }));
        }
        Ok(())
    }

    /// Check the patched image's version against the running app's before the first write.
    pub fn set_version_policy(&mut self, policy: VersionPolicy) {
        self.policy = policy;
    }

    /// The engine the output goes through (for its slot, resume log and checks).
    pub fn app(&self) -> &AppUpdate {
        &self.app
    }

    /// Mutable access to the engine, for settings made before the first write (anti-rollback,
    /// resume log, early signature sector check).
    pub fn app_mut(&mut self) -> &mut AppUpdate {
        &mut self.app
    }

    /// The slot being written.
    pub fn slot(&self) -> &Partition {
        self.app.slot()
    }

    /// The running slot (the base).
    pub fn running(&self) -> &Partition {
        &self.running
    }

    /// The applier (its offsets and checkpoint).
    pub fn applier(&self) -> &DeltaApplier {
        &self.applier
    }

    /// Patch bytes consumed so far, esp header included.
    pub fn patch_offset(&self) -> u32 {
        if self.front == Front::Sniffing {
            self.sniff_len as u32
        } else {
            self.esp_len + self.applier.patch_offset()
        }
    }

    /// Bytes of the patched image produced so far.
    pub fn output_offset(&self) -> u32 {
        self.applier.output_offset()
    }

    /// Feed the next patch bytes.
    pub fn feed<F: NorFlash>(&mut self, flash: &mut F, mut chunk: &[u8]) -> Result<(), Error> {
        if self.front == Front::Sniffing {
            chunk = self.sniff_front(chunk)?;
            if self.front == Front::Sniffing {
                return Ok(());
            }
            // The sniffed bytes that belong to the detools patch go first.
            let (buf, n) = (self.sniff, self.sniff_len);
            let start = self.esp_len as usize;
            self.sniff_len = 0;
            if n > start {
                self.body(flash, &buf[start..n])?;
            }
        }
        self.body(flash, chunk)
    }

    /// Collect up to 64 bytes: with the magic, the esp header; else a bare detools patch.
    fn sniff_front<'a>(&mut self, chunk: &'a [u8]) -> Result<&'a [u8], Error> {
        let magic = ESP_DELTA_MAGIC.to_le_bytes();
        let want = if self.sniff_len >= 4 && self.sniff[..4] == magic {
            ESP_DELTA_HEADER_LEN
        } else {
            4
        };
        let n = chunk.len().min(want - self.sniff_len);
        self.sniff[self.sniff_len..self.sniff_len + n].copy_from_slice(&chunk[..n]);
        self.sniff_len += n;
        let rest = &chunk[n..];
        if self.sniff_len < 4 {
            return Ok(rest);
        }
        if self.sniff[..4] == magic {
            if self.sniff_len < ESP_DELTA_HEADER_LEN {
                // More header to come (a 4-byte first read widens the window to 64).
                return if rest.is_empty() {
                    Ok(rest)
                } else {
                    self.sniff_front(rest)
                };
            }
            let h = EspDeltaHeader::parse(&self.sniff).map_err(delta_err)?;
            h.check_base(&self.base_sha256).map_err(delta_err)?;
            self.esp_len = ESP_DELTA_HEADER_LEN as u32;
        } else if self.esp == EspHeader::Required {
            let found =
                u32::from_le_bytes([self.sniff[0], self.sniff[1], self.sniff[2], self.sniff[3]]);
            return Err(delta_err(DeltaError::EspHeaderMagic { found }));
        }
        self.front = Front::Body;
        // A resume needs to know where the detools patch starts in the file.
        self.app.set_resume_kind(RecordKind::Delta {
            esp_header: self.esp_len > 0,
        });
        Ok(rest)
    }

    fn body<F: NorFlash>(&mut self, flash: &mut F, mut chunk: &[u8]) -> Result<(), Error> {
        if !self.size_checked {
            // Up to the patch header's end, no output: its to_size is checked first.
            let used = self.apply(flash, chunk, self.applier.output_offset())?;
            chunk = &chunk[used..];
            let Some(to_size) = self.applier.to_size() else {
                return Ok(()); // the header goes on in the next chunk
            };
            self.check_to_size(to_size)?;
            self.size_checked = true;
        }
        loop {
            let limit = if self.step > 0 {
                self.next_checkpoint
            } else {
                u32::MAX
            };
            let used = self.apply(flash, chunk, limit)?;
            chunk = &chunk[used..];
            if self.step > 0 && self.applier.output_offset() >= self.next_checkpoint {
                self.save_checkpoint(flash)?;
                continue;
            }
            if chunk.is_empty() {
                return Ok(());
            }
        }
    }

    /// The patch header's output size must fit the slot and equal the announced size.
    fn check_to_size(&self, to_size: u32) -> Result<(), Error> {
        let slot = self.app.slot();
        if to_size > slot.size {
            return Err(UpdateError::TooLarge {
                label: slot.label,
                size: to_size as u64,
                capacity: slot.size,
            }
            .into());
        }
        match self.expected_size {
            Some(expected) if expected != to_size as u64 => {
                Err(delta_err(DeltaError::OutputSize {
                    declared: to_size,
                    expected,
                }))
            }
            _ => Ok(()),
        }
    }

    /// The applier's state at this output byte, appended to the resume log (the bytes below it
    /// are in flash and read back: the engine checked them after its write).
    fn save_checkpoint<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), Error> {
        self.next_checkpoint = self.next_checkpoint.saturating_add(self.step);
        let Some(checkpoint) = self.applier.checkpoint() else {
            return Ok(());
        };
        // Without a started log (none kept, or before the first write) nothing is appended.
        let d = DeltaCheckpoint {
            checkpoint,
            base_sha256: self.base_sha256,
        };
        self.app.checkpoint_delta(flash, &d).map(|_| ())
    }

    /// Feed `chunk` to the applier until the output reaches `limit`; returns the bytes used.
    fn apply<F: NorFlash>(
        &mut self,
        flash: &mut F,
        chunk: &[u8],
        limit: u32,
    ) -> Result<usize, Error> {
        let cell = RefCell::new(flash);
        let mut base = SharedBase {
            flash: &cell,
            region: self.running.region(),
            len: self.base_len,
        };
        let app = &mut self.app;
        let policy = self.policy;
        let running_desc = self.running_desc;
        let version_checked = &mut self.version_checked;
        let hash = &mut self.output_hash;
        let mut sink = |out: &[u8]| -> Result<(), Error> {
            hash.update(out);
            let mut out = out;
            if !app.prefix_complete() {
                let n = app.feed_prefix(out)?;
                out = &out[n..];
                if !app.prefix_complete() {
                    return Ok(());
                }
            }
            if !*version_checked {
                // Version policy and anti-rollback before the first byte reaches the slot.
                app.check_version(policy, running_desc.as_ref())?;
                app.check_secure_version()?;
                *version_checked = true;
            }
            let mut f = cell.borrow_mut();
            app.write(&mut **f, out)
        };
        self.applier
            .feed_until(&mut base, chunk, limit, &mut sink)
            .map_err(|e| match e {
                ApplyError::Patch(p) => delta_err(p),
                ApplyError::Base(b) => Error::Flash(b),
                ApplyError::Sink(s) => s,
            })
    }

    /// After the last patch byte: the patch must be complete, then [`AppUpdate::finish`]
    /// verifies the written image (stream and read-back, signature when configured) and
    /// switches otadata.
    pub fn finish<F: NorFlash>(self, flash: &mut F) -> Result<Committed, Error> {
        if self.front == Front::Sniffing {
            return Err(delta_err(DeltaError::Truncated {
                offset: self.sniff_len as u64,
                out_pos: 0,
                to_size: 0,
                expecting: "the patch header",
            }));
        }
        self.applier.finish().map_err(delta_err)?;
        if !self.app.prefix_complete() {
            return Err(UpdateError::Incomplete {
                written: self.applier.output_offset(),
            }
            .into());
        }
        if !self.version_checked {
            // A resume at the last output byte produced nothing since.
            self.app
                .check_version(self.policy, self.running_desc.as_ref())?;
            self.app.check_secure_version()?;
        }
        if let Some(expected) = self.target_sha256 {
            let found: [u8; 32] = self.output_hash.finalize().into();
            if found != expected {
                return Err(delta_err(DeltaError::TargetMismatch { expected, found }));
            }
        }
        self.app.finish(flash)
    }
}

fn delta_err(e: DeltaError) -> Error {
    Error::Update(UpdateError::Delta(e))
}
