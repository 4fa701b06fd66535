//! The device side: what a device enforces ([`AppSignatures`]), the check of an app stored in a
//! partition (what `esp_image_verify` does through `verify_secure_boot_signature` after an
//! OTA write and before a boot), and the early check of a signature sector taken from the
//! stream before anything is erased.
//!
//! Sources: ESP-IDF `components/bootloader_support/src/esp_image_format.c`
//! (`verify_secure_boot_signature`: the signed data is `align_up(image_end, 4096)` bytes read
//! from flash, the sector follows), `components/app_update/esp_ota_ops.c` (`esp_ota_end` ->
//! `esp_image_verify(ESP_IMAGE_VERIFY, ...)`), `secure_boot_v2/secure_boot_signatures_app.c`
//! and `secure_boot_signatures_bootloader.c`, Kconfig `CONFIG_SECURE_BOOT_V2_ENABLED`,
//! `CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT`.

// The trust rules' refusal carries each block's outcome by value (no allocator to box it in);
// it is condensed into an `AppSignatureError` before it leaves this module.
#![allow(clippy::result_large_err)]

use core::fmt;

use embedded_storage::nor_flash::ReadNorFlash;

use super::block::{BlockErrorKind, Scheme, SignatureSector};
use super::digest::SignedDataHasher;
use super::policy::{
    check, running_app_key, verify_secure_boot, BlockOutcome, Refusal, RefusalReason,
    SecureBootKeys, Verified,
};
use super::{sector_offset, HashKind, MAX_BLOCKS, SECTOR_SIZE};
use crate::bytes::Hex;
use crate::flash::{Aligned, Region};
use crate::image::{self, VERIFY_CHUNK};
use crate::partition::{Label, Partition};
use crate::update::UpdateError;
use crate::Error;

/// Which app signatures a device demands of a new app (ESP-IDF's
/// `CONFIG_SECURE_SIGNED_APPS`, set by either option below).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AppSignatures {
    /// Neither option: apps are not signature-checked (ESP-IDF's default).
    #[default]
    NotChecked,
    /// `CONFIG_SECURE_BOOT_V2_ENABLED` with eFuse `SECURE_BOOT_EN`: the eFuse key digests
    /// (set and unrevoked) are trusted; the bootloader checks every app it boots too.
    SecureBoot(SecureBootKeys),
    /// `CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT`: block 0 of a new app must be signed by
    /// the key of the running app's first valid block; the bootloader checks nothing.
    SignedApps {
        /// The app's configured scheme (`ESP_SECURE_BOOT_SCHEME`); `None` accepts either.
        scheme: Option<Scheme>,
    },
}

impl AppSignatures {
    pub fn is_checked(&self) -> bool {
        !matches!(self, AppSignatures::NotChecked)
    }

    /// The configured scheme, if any.
    pub fn scheme(&self) -> Option<Scheme> {
        match self {
            AppSignatures::NotChecked => None,
            AppSignatures::SecureBoot(k) => k.scheme,
            AppSignatures::SignedApps { scheme } => *scheme,
        }
    }
}

/// What was wrong with an app's signature, in one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppSignatureError {
    /// The partition holding (or receiving) the app.
    pub partition: Label,
    /// Its flash offset.
    pub partition_offset: u32,
    pub kind: AppSignatureErrorKind,
}

/// The reason behind an [`AppSignatureError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppSignatureErrorKind {
    /// The signature sector at `sector_offset` would end past the partition.
    SectorBeyondPartition { sector_offset: u32, size: u32 },
    /// The stream ended at `streamed` bytes, before the signature sector
    /// (`sector_offset..sector_offset + 4096`): the image is not signed.
    SectorNotStreamed { sector_offset: u32, streamed: u32 },
    /// The trust rules refused the image. `block` is the block that decided (the first one
    /// whose outcome is the reason), with its outcome.
    Refused {
        reason: RefusalReason,
        block: Option<u8>,
        outcome: Option<BlockOutcome>,
        /// Where the sector was read: the slot (after the image), or the stream (an early
        /// check before any erase).
        early: bool,
    },
}

impl AppSignatureError {
    /// The refusal's reason, if the trust rules refused the image (a missing sector is
    /// [`RefusalReason::Unsigned`]).
    pub fn reason(&self) -> RefusalReason {
        match self.kind {
            AppSignatureErrorKind::Refused { reason, .. } => reason,
            _ => RefusalReason::Unsigned,
        }
    }
}

impl fmt::Display for AppSignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = self.partition.as_str();
        let at = self.partition_offset;
        match self.kind {
            AppSignatureErrorKind::SectorBeyondPartition {
                sector_offset,
                size,
            } => write!(
                f,
                "secure boot: the signature sector of the app in {part} (0x{at:x}) would be at \
                 partition offset 0x{sector_offset:x}, past the partition's 0x{size:x} bytes"
            ),
            AppSignatureErrorKind::SectorNotStreamed {
                sector_offset,
                streamed,
            } => write!(
                f,
                "secure boot: the image for {part} (0x{at:x}) is not signed: the stream ended \
                 after {streamed} bytes, its signature sector belongs at offset 0x{sector_offset:x} \
                 (4096 bytes)"
            ),
            AppSignatureErrorKind::Refused {
                reason,
                block,
                outcome,
                early,
            } => {
                let place = if early {
                    "the signature sector at the end of the stream"
                } else {
                    "its signature sector"
                };
                write!(
                    f,
                    "secure boot: app for {part} (0x{at:x}) refused: {reason}"
                )?;
                if let (Some(b), Some(o)) = (block, outcome) {
                    write!(f, " (block {b} of {place}: {o})")?;
                }
                Ok(())
            }
        }
    }
}

impl core::error::Error for AppSignatureError {}

impl From<AppSignatureError> for Error {
    fn from(e: AppSignatureError) -> Self {
        Error::Update(UpdateError::Signature(e))
    }
}

/// The block that decided a refusal: the first whose outcome is of the refusal's reason.
fn decisive(refusal: &Refusal) -> (Option<u8>, Option<BlockOutcome>) {
    let Some(outcomes) = refusal.outcomes() else {
        return (None, None);
    };
    let reason = refusal.reason();
    let fits = |o: &BlockOutcome| match reason {
        RefusalReason::BadSignature => matches!(o, BlockOutcome::BadSignature { .. }),
        RefusalReason::RevokedKey => matches!(o, BlockOutcome::Revoked { .. }),
        RefusalReason::WrongKey => matches!(o, BlockOutcome::Untrusted { .. }),
        RefusalReason::WrongScheme => matches!(o, BlockOutcome::WrongScheme { .. }),
        _ => matches!(o, BlockOutcome::Invalid(_)),
    };
    match outcomes.iter().position(fits) {
        Some(i) => (Some(i as u8), Some(outcomes[i])),
        None => (None, None),
    }
}

fn refused(part: &Partition, refusal: &Refusal, early: bool) -> AppSignatureError {
    let (block, outcome) = decisive(refusal);
    AppSignatureError {
        partition: part.label,
        partition_offset: part.offset,
        kind: AppSignatureErrorKind::Refused {
            reason: refusal.reason(),
            block,
            outcome,
            early,
        },
    }
}

/// The trusted key in "signed apps" mode: the first valid block's key of the app in `running`
/// (verified as an image first, to find where its sector is). `None` when that app has no
/// readable image or no valid block.
pub fn running_key_on_flash<F: ReadNorFlash>(
    flash: &mut F,
    running: &Partition,
    scheme: Option<Scheme>,
) -> Option<[u8; 32]> {
    let summary = image::verify_flash(flash, running.region(), None).ok()?;
    let at = sector_offset(summary.image_len)?;
    let mut buf = Aligned::<SECTOR_SIZE>::filled(0xFF);
    running.region().read(flash, at, &mut buf[..]).ok()?;
    running_app_key(&SignatureSector::new(&buf), scheme)
}

/// The trust context of a check: the rule and, in "signed apps" mode, the running app's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustContext {
    pub rule: AppSignatures,
    /// The running app's key ([`running_key_on_flash`]), for [`AppSignatures::SignedApps`].
    pub running_key: Option<[u8; 32]>,
}

impl TrustContext {
    /// Checks `sector` against the rule with `digests` of the signed data.
    fn verify(
        &self,
        sector: &SignatureSector<'_>,
        digests: &super::ImageDigests,
    ) -> Result<Option<Verified>, Refusal> {
        match self.rule {
            AppSignatures::NotChecked => Ok(None),
            AppSignatures::SecureBoot(keys) => verify_secure_boot(sector, digests, &keys).map(Some),
            AppSignatures::SignedApps { scheme } => {
                let Some(key) = self.running_key else {
                    return Err(Refusal::RunningAppUnsigned);
                };
                verify_signed_app_with_key(sector, digests, key, scheme).map(Some)
            }
        }
    }
}

/// [`super::verify_signed_app`] with the running key already known.
fn verify_signed_app_with_key(
    new: &SignatureSector<'_>,
    digests: &super::ImageDigests,
    key: [u8; 32],
    scheme: Option<Scheme>,
) -> Result<Verified, Refusal> {
    check(
        new,
        digests,
        scheme,
        1,
        &[Some(key), None, None],
        &[None; MAX_BLOCKS],
    )
}

/// Whether a block of `sector` could let the image through (valid, of the scheme, key trusted
/// and unrevoked), without its signature: the check made on a sector taken from the stream
/// before anything is erased. Returns the first such block.
pub fn precheck_sector(
    part: &Partition,
    sector: &SignatureSector<'_>,
    ctx: &TrustContext,
) -> Result<Option<u8>, AppSignatureError> {
    let (considered, trusted, revoked, scheme) = match ctx.rule {
        AppSignatures::NotChecked => return Ok(None),
        AppSignatures::SecureBoot(keys) => {
            let mut t = [None; MAX_BLOCKS];
            let mut r = [None; MAX_BLOCKS];
            for i in 0..MAX_BLOCKS {
                match keys.trusted(i) {
                    Some(d) => t[i] = Some(*d),
                    None => r[i] = keys.digests[i],
                }
            }
            if t.iter().all(Option::is_none) {
                return Err(refused(part, &Refusal::NoTrustedKeys, true));
            }
            (MAX_BLOCKS, t, r, keys.scheme)
        }
        AppSignatures::SignedApps { scheme } => match ctx.running_key {
            Some(k) => (1, [Some(k), None, None], [None; MAX_BLOCKS], scheme),
            None => return Err(refused(part, &Refusal::RunningAppUnsigned, true)),
        },
    };
    let mut outcomes = [BlockOutcome::NotConsidered; MAX_BLOCKS];
    for (i, outcome) in outcomes.iter_mut().enumerate().take(considered) {
        let block = match sector.block(i) {
            Ok(b) => b,
            Err(e) => {
                *outcome = BlockOutcome::Invalid(e.kind);
                continue;
            }
        };
        if let Some(expected) = scheme {
            if block.scheme() != expected {
                *outcome = BlockOutcome::WrongScheme {
                    expected,
                    found: block.scheme(),
                };
                continue;
            }
        }
        let key_digest = block.key_digest();
        if trusted.contains(&Some(key_digest)) {
            return Ok(Some(i as u8));
        }
        *outcome = match revoked.iter().position(|t| *t == Some(key_digest)) {
            Some(k) => BlockOutcome::Revoked {
                key_digest,
                efuse_index: k as u8,
            },
            None => BlockOutcome::Untrusted { key_digest },
        };
    }
    Err(refused(part, &Refusal::Blocks(outcomes), true))
}

/// Checks the signature of the app of `image_len` bytes stored at the start of `part` (what
/// `esp_image_verify` does with signed apps): SHA-256 (and SHA-384 when a block of the sector
/// needs it) over the first `align_up(image_len, 4096)` bytes read back from flash, then the
/// trust rules over the sector that follows. Constant memory: a 4 KiB sector buffer and a
/// 256-byte read chunk. `Ok(None)` when the rule checks nothing.
pub fn check_stored_app<F: ReadNorFlash>(
    flash: &mut F,
    part: &Partition,
    image_len: u32,
    ctx: &TrustContext,
) -> Result<Option<Verified>, Error> {
    if !ctx.rule.is_checked() {
        return Ok(None);
    }
    let region: Region = part.region();
    let beyond = AppSignatureError {
        partition: part.label,
        partition_offset: part.offset,
        kind: AppSignatureErrorKind::SectorBeyondPartition {
            sector_offset: sector_offset(image_len).unwrap_or(u32::MAX),
            size: part.size,
        },
    };
    let at = sector_offset(image_len).ok_or(beyond)?;
    if at
        .checked_add(SECTOR_SIZE as u32)
        .is_none_or(|end| end > part.size)
    {
        return Err(beyond.into());
    }
    let mut sector_buf = Aligned::<SECTOR_SIZE>::filled(0xFF);
    region.read(flash, at, &mut sector_buf[..])?;
    let sector = SignatureSector::new(&sector_buf);
    // SHA-384 only when a valid block of the scheme needs it (ESP-IDF computes the digest
    // its configured scheme uses).
    let scheme = ctx.rule.scheme();
    let sha384 = sector
        .blocks()
        .iter()
        .flatten()
        .any(|b| b.hash() == HashKind::Sha384 && scheme.is_none_or(|s| s == b.scheme()));
    let mut hasher = SignedDataHasher::new(sha384);
    let mut chunk = Aligned::<VERIFY_CHUNK>::filled(0);
    let mut off = 0u32;
    while off < at {
        let n = (at - off).min(VERIFY_CHUNK as u32) as usize;
        region.read(flash, off, &mut chunk[..n])?;
        hasher.update(&chunk[..n]);
        off += n as u32;
    }
    let digests = hasher.finish();
    ctx.verify(&sector, &digests)
        .map_err(|r| refused(part, &r, false).into())
}

/// One slot's signature status, for `device info`: each block's validity and key, and what
/// the device's rule says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotSignatures {
    /// Where the sector is in the partition.
    pub sector_offset: u32,
    /// Each block: its key digest, or why it is not a valid block.
    pub blocks: [Result<[u8; 32], BlockErrorKind>; MAX_BLOCKS],
    /// The rule's verdict (`None`: the device checks nothing).
    pub verdict: Option<Result<Verified, AppSignatureError>>,
}

/// [`SlotSignatures`] of the app of `image_len` bytes in `part` (`None` when the sector lies
/// past the partition).
pub fn slot_signatures<F: ReadNorFlash>(
    flash: &mut F,
    part: &Partition,
    image_len: u32,
    ctx: &TrustContext,
) -> Result<Option<SlotSignatures>, Error> {
    let Some(at) = sector_offset(image_len) else {
        return Ok(None);
    };
    if at
        .checked_add(SECTOR_SIZE as u32)
        .is_none_or(|e| e > part.size)
    {
        return Ok(None);
    }
    let mut buf = Aligned::<SECTOR_SIZE>::filled(0xFF);
    part.region().read(flash, at, &mut buf[..])?;
    let sector = SignatureSector::new(&buf);
    let blocks = sector
        .blocks()
        .map(|b| b.map(|b| b.key_digest()).map_err(|e| e.kind));
    let verdict = if ctx.rule.is_checked() {
        match check_stored_app(flash, part, image_len, ctx) {
            Ok(Some(v)) => Some(Ok(v)),
            Ok(None) => None,
            Err(Error::Update(UpdateError::Signature(e))) => Some(Err(e)),
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok(Some(SlotSignatures {
        sector_offset: at,
        blocks,
        verdict,
    }))
}

impl fmt::Display for SlotSignatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signature sector at 0x{:x}:", self.sector_offset)?;
        for (i, b) in self.blocks.iter().enumerate() {
            match b {
                Ok(d) => write!(f, " block {i} key {}", Hex(d))?,
                Err(BlockErrorKind::Absent) => {}
                Err(k) => write!(f, " block {i} invalid ({k})")?,
            }
        }
        Ok(())
    }
}
