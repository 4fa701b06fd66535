//! Verification of one block against the computed digest.

use core::fmt;

use super::block::{BlockKey, HashKind, SignatureBlock};
use super::digest::ImageDigests;
use super::ecdsa::{self, EcdsaError};
use super::rsa::{self, RsaError};

/// Why a block's signature does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    Rsa(RsaError),
    Ecdsa(EcdsaError),
    /// The block needs a digest the hasher was not asked for.
    DigestNotComputed(HashKind),
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Rsa(e) => e.fmt(f),
            SignatureError::Ecdsa(e) => e.fmt(f),
            SignatureError::DigestNotComputed(k) => {
                write!(f, "the {} digest of the image was not computed", k.name())
            }
        }
    }
}

impl core::error::Error for SignatureError {}

impl SignatureError {
    /// A signature that does not match (rather than a malformed key or an unsupported curve).
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            SignatureError::Rsa(RsaError::Mismatch) | SignatureError::Ecdsa(EcdsaError::Mismatch)
        )
    }
}

/// Verifies `block`'s signature over the computed digest (SHA-256, or SHA-384 for P-384).
/// The block's stored `image_digest` plays no part (see [`stored_digest_matches`]).
pub fn verify_block(
    block: &SignatureBlock<'_>,
    digests: &ImageDigests,
) -> Result<(), SignatureError> {
    if let Some(curve) = block.curve() {
        if !super::ecdsa::curve_supported(curve) {
            return Err(SignatureError::Ecdsa(
                super::ecdsa::EcdsaError::UnsupportedCurve(curve),
            ));
        }
    }
    let kind = block.hash();
    let digest = digests
        .get(kind)
        .ok_or(SignatureError::DigestNotComputed(kind))?;
    match block.key {
        BlockKey::Rsa {
            n,
            e,
            rinv,
            mdash,
            signature,
        } => {
            let d: &[u8; 32] = digest
                .try_into()
                .map_err(|_| SignatureError::DigestNotComputed(kind))?;
            rsa::verify(n, e, rinv, mdash, signature, d).map_err(SignatureError::Rsa)
        }
        BlockKey::Ecdsa {
            curve,
            point,
            signature,
        } => ecdsa::verify(curve, point, signature, digest).map_err(SignatureError::Ecdsa),
    }
}

/// Whether the block's stored `image_digest` equals the computed one (`None` when that
/// digest was not computed). espsecure's `verify-signature` refuses a mismatch; ESP-IDF
/// ignores the field. Informative only.
pub fn stored_digest_matches(block: &SignatureBlock<'_>, digests: &ImageDigests) -> Option<bool> {
    digests
        .get(block.hash())
        .map(|d| d == block.stored_image_digest())
}
