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

use super::app::{AppUpdate, AppUpdateConfig, Committed};
use super::UpdateError;
use crate::delta::{
    base_image_sha256, ApplyError, DeltaApplier, DeltaBase, DeltaError, EspDeltaHeader,
    ESP_DELTA_HEADER_LEN, ESP_DELTA_MAGIC,
};
use crate::flash::{FlashError, Region};
use crate::image::AppDesc;
use crate::partition::{Partition, PartitionTable};
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
    required_base: Option<[u8; 32]>,
    front: Front,
    sniff: [u8; ESP_DELTA_HEADER_LEN],
    sniff_len: usize,
    /// Bytes of the esp header in front of the detools patch (0 or 64).
    esp_len: u32,
    policy: VersionPolicy,
    running_desc: Option<AppDesc>,
    version_checked: bool,
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
        let app = AppUpdate::begin(table, Some(running), cfg, expected_size)?;
        let running_desc = base.summary.loader_app_desc;
        Ok(DeltaUpdate {
            app,
            applier: DeltaApplier::new(base.image_len),
            running: *running,
            base_sha256: base.sha256,
            base_len: base.image_len,
            esp: EspHeader::Optional,
            required_base: None,
            front: Front::Sniffing,
            sniff: [0; ESP_DELTA_HEADER_LEN],
            sniff_len: 0,
            esp_len: 0,
            policy: VersionPolicy::None,
            running_desc,
            version_checked: false,
        })
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
        self.required_base = Some(sha256);
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
        Ok(rest)
    }

    fn body<F: NorFlash>(&mut self, flash: &mut F, chunk: &[u8]) -> Result<(), Error> {
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
        let mut sink = |out: &[u8]| -> Result<(), Error> {
            let mut out = out;
            if !app.prefix_complete() {
                let n = app.feed_prefix(out)?;
                out = &out[n..];
                if !app.prefix_complete() {
                    return Ok(());
                }
            }
            if !*version_checked {
                app.check_version(policy, running_desc.as_ref())?;
                *version_checked = true;
            }
            let mut f = cell.borrow_mut();
            app.write(&mut **f, out)
        };
        self.applier
            .feed(&mut base, chunk, &mut sink)
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
        self.app.finish(flash)
    }
}

fn delta_err(e: DeltaError) -> Error {
    Error::Update(UpdateError::Delta(e))
}
