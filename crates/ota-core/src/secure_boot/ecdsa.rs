//! ECDSA verification of a signature block (ESP-IDF `secure_boot_ecdsa_signature.c`, ROM
//! `ets_ecdsa_verify`): the block's point and r, s are micro-ecc's little-endian numbers;
//! RustCrypto `p256` / `p384` verify the pre-hashed digest (SHA-256 / SHA-384 of the signed
//! data; P-192 blocks are made over SHA-256 too, which ECDSA truncates to the curve's 192
//! bits, as micro-ecc and espsecure do), RustCrypto `p192` for the ESP32-C2's P-192.

use core::fmt;

use p256::ecdsa::signature::hazmat::PrehashVerifier;

use super::block::Curve;

/// Why an ECDSA block does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EcdsaError {
    /// The curve is recognised but this build does not verify it (ota-core built without the
    /// feature `ecdsa-p384` or `ecdsa-p192`).
    UnsupportedCurve(Curve),
    /// The point is not on the curve.
    BadPoint,
    /// r or s is zero or not below the group order.
    BadScalars,
    /// The digest given has the wrong length for the curve.
    DigestLen { expected: usize, found: usize },
    /// The signature was not made with this key over this digest.
    Mismatch,
}

impl fmt::Display for EcdsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EcdsaError::UnsupportedCurve(c) => {
                write!(
                    f,
                    "ECDSA {c} signatures are not verified by this build (ota-core feature {})",
                    match c {
                        Curve::P384 => "ecdsa-p384",
                        Curve::P192 => "ecdsa-p192",
                        Curve::P256 => "none",
                    }
                )
            }
            EcdsaError::BadPoint => f.write_str("ECDSA public key is not a point on the curve"),
            EcdsaError::BadScalars => {
                f.write_str("ECDSA signature r or s is zero or not below the group order")
            }
            EcdsaError::DigestLen { expected, found } => {
                write!(f, "ECDSA digest: expected {expected} bytes, found {found}")
            }
            EcdsaError::Mismatch => {
                f.write_str("ECDSA signature does not match the image digest and key")
            }
        }
    }
}

/// Reverses `src` (little-endian) into `dst` (big-endian).
fn be_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
        *d = *s;
    }
}

macro_rules! verify_curve {
    ($name:ident, $krate:ident, $len:expr, $digest_len:expr) => {
        fn $name(point: &[u8], signature: &[u8], digest: &[u8]) -> Result<(), EcdsaError> {
            const L: usize = $len;
            if digest.len() != $digest_len {
                return Err(EcdsaError::DigestLen {
                    expected: $digest_len,
                    found: digest.len(),
                });
            }
            if point.len() != 2 * L || signature.len() != 2 * L {
                return Err(EcdsaError::BadPoint);
            }
            let mut sec1 = [0u8; 1 + 2 * L];
            sec1[0] = 0x04;
            be_into(&mut sec1[1..1 + L], &point[..L]);
            be_into(&mut sec1[1 + L..], &point[L..]);
            let key = $krate::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| EcdsaError::BadPoint)?;
            let mut r = $krate::FieldBytes::default();
            let mut s = $krate::FieldBytes::default();
            be_into(&mut r, &signature[..L]);
            be_into(&mut s, &signature[L..]);
            let sig =
                $krate::ecdsa::Signature::from_scalars(r, s).map_err(|_| EcdsaError::BadScalars)?;
            key.verify_prehash(digest, &sig)
                .map_err(|_| EcdsaError::Mismatch)
        }
    };
}

#[cfg(feature = "ecdsa-p192")]
verify_curve!(verify_p192, p192, 24, 32);
verify_curve!(verify_p256, p256, 32, 32);
#[cfg(feature = "ecdsa-p384")]
verify_curve!(verify_p384, p384, 48, 48);

/// Whether this build verifies `curve` (P-384 and P-192 are the features `ecdsa-p384` and
/// `ecdsa-p192` of ota-core; P-256 always).
pub const fn curve_supported(curve: Curve) -> bool {
    match curve {
        Curve::P256 => true,
        Curve::P384 => cfg!(feature = "ecdsa-p384"),
        Curve::P192 => cfg!(feature = "ecdsa-p192"),
    }
}

/// Verifies an ECDSA block: `point` X ‖ Y and `signature` r ‖ s little-endian, `digest` the
/// SHA-256 (P-192, P-256) or SHA-384 (P-384) of the signed data.
pub fn verify(
    curve: Curve,
    point: &[u8],
    signature: &[u8],
    digest: &[u8],
) -> Result<(), EcdsaError> {
    match curve {
        Curve::P256 => verify_p256(point, signature, digest),
        #[cfg(feature = "ecdsa-p384")]
        Curve::P384 => verify_p384(point, signature, digest),
        #[cfg(feature = "ecdsa-p192")]
        Curve::P192 => verify_p192(point, signature, digest),
        #[allow(unreachable_patterns)]
        c => Err(EcdsaError::UnsupportedCurve(c)),
    }
}

impl core::error::Error for EcdsaError {}
