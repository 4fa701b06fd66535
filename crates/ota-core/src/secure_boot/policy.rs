//! ESP-IDF's app-side trust rules (`esp_secure_boot_verify_sbv2_signature_block` and
//! `calculate_image_public_key_digests` in ESP-IDF
//! `components/bootloader_support/src/secure_boot_v2/secure_boot_signatures_app.c`), as
//! functions over a signature sector and the digest computed over the signed data.
//!
//! * Secure boot enabled: the trusted keys are the eFuse digests that are set and not revoked
//!   (`esp_secure_boot_read_key_digests` leaves revoked ones out). Blocks 0, 1, 2 are taken in
//!   order; a block is skipped when invalid (magic, CRC) or of another scheme than the
//!   configured one, or when its key digest is not trusted; the first trusted block whose
//!   signature verifies accepts the image.
//! * "Signed apps without secure boot" (`CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT`): only
//!   block 0 of the new image is considered, and the only trusted key is that of the first
//!   valid block of the running app's sector.

// The refusal carries each block's outcome by value (no allocator to box it in).
#![allow(clippy::result_large_err)]

use core::fmt;

use super::block::{BlockErrorKind, Scheme, SignatureSector};
use super::digest::ImageDigests;
use super::verify::{verify_block, SignatureError};
use super::MAX_BLOCKS;
use crate::bytes::Hex;

/// Secure Boot v2 as the eFuses set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecureBootKeys {
    /// `SECURE_BOOT_DIGEST0..2` (unset = `None`).
    pub digests: [Option<[u8; 32]>; MAX_BLOCKS],
    /// `SECURE_BOOT_KEY_REVOKE0..2`: bit i revokes digest i.
    pub revoked: u8,
    /// The app's configured scheme (`ESP_SECURE_BOOT_SCHEME`); `None` accepts either.
    pub scheme: Option<Scheme>,
}

impl SecureBootKeys {
    /// Trusted digest `i`: set and not revoked.
    pub fn trusted(&self, i: usize) -> Option<&[u8; 32]> {
        if self.revoked & (1 << i) != 0 {
            return None;
        }
        self.digests.get(i).and_then(|d| d.as_ref())
    }
}

/// What happened to one block during a trust check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockOutcome {
    /// Not looked at (the rule considers fewer blocks, or an earlier block verified).
    NotConsidered,
    /// Not a valid block.
    Invalid(BlockErrorKind),
    /// A valid block of another scheme than the configured one.
    WrongScheme { expected: Scheme, found: Scheme },
    /// Its key is not trusted.
    Untrusted { key_digest: [u8; 32] },
    /// Its key is an eFuse digest that is revoked.
    Revoked {
        key_digest: [u8; 32],
        efuse_index: u8,
    },
    /// Its key is trusted but the signature does not verify.
    BadSignature {
        key_digest: [u8; 32],
        error: SignatureError,
    },
    /// Verified.
    Verified { key_digest: [u8; 32] },
}

/// The image is accepted: which block verified, with which key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub block: u8,
    pub key_digest: [u8; 32],
    /// The index of the trusted digest it matched (eFuse digest index, or 0 for the running
    /// app's key).
    pub trusted_index: u8,
    pub outcomes: [BlockOutcome; MAX_BLOCKS],
}

/// Why the image is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Secure boot enabled but no eFuse digest is set and unrevoked.
    NoTrustedKeys,
    /// Signed-apps mode: the running app has no valid signature block to take the key from.
    RunningAppUnsigned,
    /// No block verified; the outcome of each block says why.
    Blocks([BlockOutcome; MAX_BLOCKS]),
}

/// The main reason of a refusal, for messages and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    NoTrustedKeys,
    RunningAppUnsigned,
    /// No valid signature block at all.
    Unsigned,
    /// Valid blocks, none of the configured scheme.
    WrongScheme,
    /// Valid blocks whose keys are all untrusted.
    WrongKey,
    /// A block's key is trusted only by a revoked digest (and none verified).
    RevokedKey,
    /// A trusted block's signature does not verify.
    BadSignature,
}

impl Refusal {
    pub fn reason(&self) -> RefusalReason {
        let outcomes = match self {
            Refusal::NoTrustedKeys => return RefusalReason::NoTrustedKeys,
            Refusal::RunningAppUnsigned => return RefusalReason::RunningAppUnsigned,
            Refusal::Blocks(o) => o,
        };
        let any = |f: fn(&BlockOutcome) -> bool| outcomes.iter().any(f);
        if any(|o| matches!(o, BlockOutcome::BadSignature { .. })) {
            RefusalReason::BadSignature
        } else if any(|o| matches!(o, BlockOutcome::Revoked { .. })) {
            RefusalReason::RevokedKey
        } else if any(|o| matches!(o, BlockOutcome::Untrusted { .. })) {
            RefusalReason::WrongKey
        } else if any(|o| matches!(o, BlockOutcome::WrongScheme { .. })) {
            RefusalReason::WrongScheme
        } else {
            RefusalReason::Unsigned
        }
    }

    pub fn outcomes(&self) -> Option<&[BlockOutcome; MAX_BLOCKS]> {
        match self {
            Refusal::Blocks(o) => Some(o),
            _ => None,
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalReason::NoTrustedKeys => {
                "secure boot has no trusted (set, unrevoked) key digest"
            }
            RefusalReason::RunningAppUnsigned => {
                "the running app has no valid signature block to take the trusted key from"
            }
            RefusalReason::Unsigned => "the image is not signed (no valid signature block)",
            RefusalReason::WrongScheme => "the image's signature blocks are of another scheme",
            RefusalReason::WrongKey => "the image is not signed by a trusted key",
            RefusalReason::RevokedKey => "the image is signed only by a revoked key",
            RefusalReason::BadSignature => "the image's signature does not verify",
        })
    }
}

impl fmt::Display for BlockOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockOutcome::NotConsidered => f.write_str("not considered"),
            BlockOutcome::Invalid(k) => k.fmt(f),
            BlockOutcome::WrongScheme { expected, found } => {
                write!(f, "scheme {found}, the device expects {expected}")
            }
            BlockOutcome::Untrusted { key_digest } => {
                write!(f, "key digest {} is not trusted", Hex(key_digest))
            }
            BlockOutcome::Revoked {
                key_digest,
                efuse_index,
            } => write!(
                f,
                "key digest {} is eFuse digest {efuse_index}, which is revoked",
                Hex(key_digest)
            ),
            BlockOutcome::BadSignature { key_digest, error } => {
                write!(f, "key digest {} is trusted but {error}", Hex(key_digest))
            }
            BlockOutcome::Verified { key_digest } => {
                write!(f, "verified with key digest {}", Hex(key_digest))
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason())?;
        if let Refusal::Blocks(outcomes) = self {
            for (i, o) in outcomes.iter().enumerate() {
                if *o != BlockOutcome::NotConsidered {
                    write!(f, "; block {i}: {o}")?;
                }
            }
        }
        Ok(())
    }
}

impl core::error::Error for Refusal {}

/// Checks blocks `0..considered` of `sector` against `trusted` (the digest list, in trust
/// index order) following `esp_secure_boot_verify_sbv2_signature_block`.
pub(super) fn check(
    sector: &SignatureSector<'_>,
    digests: &ImageDigests,
    scheme: Option<Scheme>,
    considered: usize,
    trusted: &[Option<[u8; 32]>; MAX_BLOCKS],
    revoked: &[Option<[u8; 32]>; MAX_BLOCKS],
) -> Result<Verified, Refusal> {
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
        let Some(trusted_index) = trusted.iter().position(|t| t.as_ref() == Some(&key_digest))
        else {
            *outcome = match revoked.iter().position(|t| t.as_ref() == Some(&key_digest)) {
                Some(k) => BlockOutcome::Revoked {
                    key_digest,
                    efuse_index: k as u8,
                },
                None => BlockOutcome::Untrusted { key_digest },
            };
            continue;
        };
        match verify_block(&block, digests) {
            Ok(()) => {
                *outcome = BlockOutcome::Verified { key_digest };
                return Ok(Verified {
                    block: i as u8,
                    key_digest,
                    trusted_index: trusted_index as u8,
                    outcomes,
                });
            }
            Err(error) => *outcome = BlockOutcome::BadSignature { key_digest, error },
        }
    }
    Err(Refusal::Blocks(outcomes))
}

/// Secure Boot v2 enabled: some block of the image must be valid, of the configured scheme,
/// signed by a set and unrevoked eFuse key digest, and verify against `digests`.
pub fn verify_secure_boot(
    sector: &SignatureSector<'_>,
    digests: &ImageDigests,
    keys: &SecureBootKeys,
) -> Result<Verified, Refusal> {
    let mut trusted = [None; MAX_BLOCKS];
    let mut revoked = [None; MAX_BLOCKS];
    for i in 0..MAX_BLOCKS {
        match keys.trusted(i) {
            Some(d) => trusted[i] = Some(*d),
            None => revoked[i] = keys.digests[i],
        }
    }
    if trusted.iter().all(Option::is_none) {
        return Err(Refusal::NoTrustedKeys);
    }
    check(sector, digests, keys.scheme, MAX_BLOCKS, &trusted, &revoked)
}

/// The key the running app's sector trusts in "signed apps without secure boot": the digest
/// of its first valid block (of `scheme` when given).
pub fn running_app_key(running: &SignatureSector<'_>, scheme: Option<Scheme>) -> Option<[u8; 32]> {
    running
        .blocks()
        .iter()
        .flatten()
        .find(|b| scheme.is_none_or(|s| b.scheme() == s))
        .map(|b| b.key_digest())
}

/// "Signed apps without secure boot": block 0 of the new image must be valid, carry the key of
/// the running app's first valid block, and verify against `digests`.
pub fn verify_signed_app(
    new: &SignatureSector<'_>,
    digests: &ImageDigests,
    running: &SignatureSector<'_>,
    scheme: Option<Scheme>,
) -> Result<Verified, Refusal> {
    let key = running_app_key(running, scheme).ok_or(Refusal::RunningAppUnsigned)?;
    check(
        new,
        digests,
        scheme,
        1,
        &[Some(key), None, None],
        &[None; MAX_BLOCKS],
    )
}
