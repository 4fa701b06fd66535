//! Secure Boot v2 keys on the host: espsecure's PEM files in, signature blocks and public-key
//! digests out. One place for `ota image sign|verify-signature|key-digest` and for
//! `ota device create --secure-boot-key` (public or private PEM -> key digest).
//!
//! Accepted, as `espsecure generate-signing-key --version 2` and `extract-public-key` write
//! them (esptool `espsecure/__init__.py`, `_load_sbv2_signing_key` / `_get_sbv2_pub_key`):
//! RSA-3072 private keys in PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE KEY`),
//! EC P-256 / P-384 private keys in SEC1 (`BEGIN EC PRIVATE KEY`) or PKCS#8, and SPKI public
//! keys (`BEGIN PUBLIC KEY`). P-192 keys (ESP32-C2) give digests and verify, but cannot sign
//! here (RustCrypto's `p192` has no signing).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ota_core::secure_boot::{
    self, encode_ecdsa_block, encode_rsa_block, Curve, ImageDigests, BLOCK_SIZE, RSA_LEN,
};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::signature::hazmat::{PrehashVerifier, RandomizedPrehashSigner};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

/// p192 exports no key aliases of its own.
type P192Secret = p192::elliptic_curve::SecretKey<p192::NistP192>;
type P192Public = p192::elliptic_curve::PublicKey<p192::NistP192>;

/// PEM key files are small; anything larger is not a key.
const KEY_FILE_LIMIT: u64 = 64 * 1024;

/// A Secure Boot v2 public key.
#[derive(Clone, Debug)]
pub enum PublicKey {
    Rsa(RsaPublicKey),
    P192(P192Public),
    P256(p256::PublicKey),
    P384(p384::PublicKey),
}

/// A Secure Boot v2 signing key.
#[derive(Clone)]
pub enum SigningKey {
    Rsa(RsaPrivateKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// A key file: its public key, and the private key when the file holds one.
pub struct KeyFile {
    pub public: PublicKey,
    pub private: Option<SigningKey>,
}

fn rsa_checked(k: RsaPublicKey, path: &Path) -> Result<RsaPublicKey> {
    let bits = k.n().bits();
    if bits != 3072 {
        bail!(
            "{}: RSA key has {bits} bits: Secure Boot v2 supports RSA-3072 only",
            path.display()
        );
    }
    if k.e().bits() > 32 {
        bail!(
            "{}: RSA public exponent does not fit the block's 32-bit e field",
            path.display()
        );
    }
    Ok(k)
}

/// Reads a PEM key file (private or public).
pub fn load(path: &Path) -> Result<KeyFile> {
    let text = crate::input::read_text_bounded(path, KEY_FILE_LIMIT, "key file")?;
    parse(&text, path)
}

/// The PEM blocks of `text` re-wrapped at 64 columns with LF line ends: the RustCrypto PEM
/// reader follows RFC 7468 strictly, while real key files differ (esptool's own
/// `ecdsa384_secure_boot_signing_key.pem` test key has 76-column lines; Windows tools write
/// CRLF). Headers such as `Proc-Type` (encrypted keys) are kept, so those are still refused.
fn normalize_pem(text: &str) -> String {
    let mut out = String::new();
    let mut body = String::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            inside = true;
            body.clear();
            out.push_str(line);
            out.push('\n');
        } else if line.starts_with("-----END ") {
            let bytes = body.as_bytes();
            for chunk in bytes.chunks(64) {
                out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
            inside = false;
        } else if inside {
            if line.contains(':') {
                out.push_str(line);
                out.push('\n');
            } else {
                body.push_str(line);
            }
        }
    }
    out
}

fn parse(text: &str, path: &Path) -> Result<KeyFile> {
    let normalized = normalize_pem(text);
    let text = normalized.as_str();
    let p = path.display();
    let bad = |kind: &str, e: &dyn std::fmt::Display| anyhow!("{p}: not a valid {kind}: {e}");
    if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        let k = RsaPrivateKey::from_pkcs1_pem(text.trim())
            .map_err(|e| bad("PKCS#1 RSA private key", &e))?;
        let public = rsa_checked(k.to_public_key(), path)?;
        return Ok(KeyFile {
            public: PublicKey::Rsa(public),
            private: Some(SigningKey::Rsa(k)),
        });
    }
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        if let Ok(k) = p256::SecretKey::from_sec1_pem(text.trim()) {
            return Ok(KeyFile {
                public: PublicKey::P256(k.public_key()),
                private: Some(SigningKey::P256(k.into())),
            });
        }
        if let Ok(k) = p384::SecretKey::from_sec1_pem(text.trim()) {
            return Ok(KeyFile {
                public: PublicKey::P384(k.public_key()),
                private: Some(SigningKey::P384(k.into())),
            });
        }
        if let Ok(k) = P192Secret::from_sec1_pem(text.trim()) {
            return Ok(KeyFile {
                public: PublicKey::P192(k.public_key()),
                private: None,
            });
        }
        bail!("{p}: EC private key is not a valid P-192, P-256 or P-384 key (the curves of Secure Boot v2)");
    }
    if text.contains("-----BEGIN PRIVATE KEY-----") {
        if let Ok(k) = RsaPrivateKey::from_pkcs8_pem(text.trim()) {
            let public = rsa_checked(k.to_public_key(), path)?;
            return Ok(KeyFile {
                public: PublicKey::Rsa(public),
                private: Some(SigningKey::Rsa(k)),
            });
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(text.trim()) {
            return Ok(KeyFile {
                public: PublicKey::P256(k.public_key()),
                private: Some(SigningKey::P256(k.into())),
            });
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_pem(text.trim()) {
            return Ok(KeyFile {
                public: PublicKey::P384(k.public_key()),
                private: Some(SigningKey::P384(k.into())),
            });
        }
        if let Ok(k) = P192Secret::from_pkcs8_pem(text.trim()) {
            return Ok(KeyFile {
                public: PublicKey::P192(k.public_key()),
                private: None,
            });
        }
        bail!("{p}: PKCS#8 private key is not RSA-3072 or ECDSA P-192, P-256 or P-384");
    }
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        if let Ok(k) = RsaPublicKey::from_public_key_pem(text.trim()) {
            return Ok(KeyFile {
                public: PublicKey::Rsa(rsa_checked(k, path)?),
                private: None,
            });
        }
        if let Ok(k) = p256::PublicKey::from_public_key_pem(text.trim()) {
            return Ok(KeyFile {
                public: PublicKey::P256(k),
                private: None,
            });
        }
        if let Ok(k) = p384::PublicKey::from_public_key_pem(text.trim()) {
            return Ok(KeyFile {
                public: PublicKey::P384(k),
                private: None,
            });
        }
        if let Ok(k) = P192Public::from_public_key_pem(text.trim()) {
            return Ok(KeyFile {
                public: PublicKey::P192(k),
                private: None,
            });
        }
        bail!("{p}: public key is not RSA-3072 or ECDSA P-192, P-256 or P-384");
    }
    if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        let k = RsaPublicKey::from_pkcs1_pem(text.trim())
            .map_err(|e| bad("PKCS#1 RSA public key", &e))?;
        return Ok(KeyFile {
            public: PublicKey::Rsa(rsa_checked(k, path)?),
            private: None,
        });
    }
    bail!("{p}: not a PEM RSA or EC private key or a PEM public key")
}

/// Little-endian bytes of a big-endian number, zero-extended to `len`.
fn le_fixed(be: &[u8], len: usize) -> Result<Vec<u8>> {
    let be = {
        let first = be.iter().position(|&b| b != 0).unwrap_or(be.len());
        &be[first..]
    };
    if be.len() > len {
        bail!("number of {} bytes does not fit {len}", be.len());
    }
    let mut out: Vec<u8> = be.iter().rev().copied().collect();
    out.resize(len, 0);
    Ok(out)
}

impl PublicKey {
    pub fn curve(&self) -> Option<Curve> {
        match self {
            PublicKey::Rsa(_) => None,
            PublicKey::P192(_) => Some(Curve::P192),
            PublicKey::P256(_) => Some(Curve::P256),
            PublicKey::P384(_) => Some(Curve::P384),
        }
    }

    /// "RSA-3072-PSS", "ECDSA P-256", ...
    pub fn describe(&self) -> String {
        match self.curve() {
            Some(c) => format!("ECDSA {c}"),
            None => "RSA-3072-PSS".to_string(),
        }
    }

    /// The RSA fields as the block holds them: n, e, rinv, mdash (little-endian).
    fn rsa_fields(k: &RsaPublicKey) -> Result<([u8; RSA_LEN], u32, [u8; RSA_LEN], u32)> {
        let n: [u8; RSA_LEN] = le_fixed(&k.n().to_bytes_be(), RSA_LEN)?
            .try_into()
            .map_err(|_| anyhow!("modulus length"))?;
        let e_le = le_fixed(&k.e().to_bytes_be(), 4)?;
        let e = u32::from_le_bytes([e_le[0], e_le[1], e_le[2], e_le[3]]);
        let (rinv, mdash) =
            secure_boot::montgomery_params(&n).map_err(|e| anyhow!("RSA key: {e}"))?;
        Ok((n, e, rinv, mdash))
    }

    /// The point X ‖ Y little-endian, each coordinate `curve.coord_len()` bytes.
    fn point_le(&self) -> Vec<u8> {
        let (x, y): (Vec<u8>, Vec<u8>) = match self {
            PublicKey::P192(k) => {
                let p = k.to_encoded_point(false);
                (p.x().unwrap().to_vec(), p.y().unwrap().to_vec())
            }
            PublicKey::P256(k) => {
                let p = k.to_encoded_point(false);
                (p.x().unwrap().to_vec(), p.y().unwrap().to_vec())
            }
            PublicKey::P384(k) => {
                let p = k.to_encoded_point(false);
                (p.x().unwrap().to_vec(), p.y().unwrap().to_vec())
            }
            PublicKey::Rsa(_) => return Vec::new(),
        };
        let mut out: Vec<u8> = x.iter().rev().copied().collect();
        out.extend(y.iter().rev());
        out
    }

    /// The key part of a signature block (what eFuse's digest is taken over): RSA
    /// n ‖ e ‖ rinv ‖ mdash (776 bytes); ECDSA curve_id ‖ point (65 or 97 bytes, espsecure's
    /// `_digest_sbv2_public_key`).
    pub fn key_bytes(&self) -> Result<Vec<u8>> {
        Ok(match self {
            PublicKey::Rsa(k) => {
                let (n, e, rinv, mdash) = Self::rsa_fields(k)?;
                let mut v = n.to_vec();
                v.extend_from_slice(&e.to_le_bytes());
                v.extend_from_slice(&rinv);
                v.extend_from_slice(&mdash.to_le_bytes());
                v
            }
            _ => {
                let curve = self.curve().expect("ECDSA key");
                let mut v = vec![curve.id()];
                v.extend(self.point_le());
                // P-192's 48-byte point fills a 64-byte field (espsecure `struct.pack("<B64s")`).
                if curve == Curve::P192 {
                    v.resize(65, 0);
                }
                v
            }
        })
    }

    /// The public-key digest as eFuse holds it (`espsecure digest-sbv2-public-key`).
    pub fn key_digest(&self) -> Result<[u8; 32]> {
        Ok(secure_boot::key_digest(&self.key_bytes()?))
    }

    /// A signature block from a signature made elsewhere (espsecure `sign-data --pub-key
    /// --signature`): RSA a raw 384-byte big-endian PSS signature, ECDSA a DER signature. It is
    /// verified against the key and `data` before use.
    pub fn block_from_signature(&self, signature: &[u8], data: &[u8]) -> Result<[u8; BLOCK_SIZE]> {
        let digests = ImageDigests::of(data, matches!(self, PublicKey::P384(_)));
        match self {
            PublicKey::Rsa(k) => {
                if signature.len() != RSA_LEN {
                    bail!(
                        "RSA signature: expected {RSA_LEN} bytes (raw, big-endian), found {}",
                        signature.len()
                    );
                }
                let sig = rsa::pss::Signature::try_from(signature)
                    .map_err(|e| anyhow!("RSA signature: {e}"))?;
                rsa::pss::VerifyingKey::<Sha256>::new(k.clone())
                    .verify_prehash(&digests.sha256, &sig)
                    .map_err(|_| {
                        anyhow!("the signature was not made with this public key over this data (RSA-PSS, SHA-256, salt 32)")
                    })?;
                let (n, e, rinv, mdash) = Self::rsa_fields(k)?;
                let mut sig_le = [0u8; RSA_LEN];
                for (d, s) in sig_le.iter_mut().zip(signature.iter().rev()) {
                    *d = *s;
                }
                Ok(encode_rsa_block(
                    &digests.sha256,
                    &n,
                    e,
                    &rinv,
                    mdash,
                    &sig_le,
                ))
            }
            PublicKey::P256(k) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|e| anyhow!("ECDSA signature is not DER: {e}"))?;
                p256::ecdsa::VerifyingKey::from(k)
                    .verify_prehash(&digests.sha256, &sig)
                    .map_err(|_| anyhow!("the signature was not made with this public key over this data (ECDSA P-256, SHA-256)"))?;
                self.ecdsa_block(&digests.sha256, &sig.r().to_bytes(), &sig.s().to_bytes())
            }
            PublicKey::P192(_) => {
                bail!("ECDSA P-192 signature blocks cannot be made here (RustCrypto's p192 verifies only)")
            }
            PublicKey::P384(k) => {
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .map_err(|e| anyhow!("ECDSA signature is not DER: {e}"))?;
                let d = digests.sha384.expect("asked for");
                p384::ecdsa::VerifyingKey::from(k)
                    .verify_prehash(&d, &sig)
                    .map_err(|_| anyhow!("the signature was not made with this public key over this data (ECDSA P-384, SHA-384)"))?;
                self.ecdsa_block(&d, &sig.r().to_bytes(), &sig.s().to_bytes())
            }
        }
    }

    fn ecdsa_block(&self, digest: &[u8], r_be: &[u8], s_be: &[u8]) -> Result<[u8; BLOCK_SIZE]> {
        let curve = self.curve().expect("ECDSA key");
        let mut rs: Vec<u8> = r_be.iter().rev().copied().collect();
        rs.extend(s_be.iter().rev());
        encode_ecdsa_block(curve, digest, &self.point_le(), &rs).map_err(|e| anyhow!("{e}"))
    }
}

impl SigningKey {
    /// Signs `data` (the signed part of the image) into a signature block, with a fresh random
    /// salt (RSA-PSS) or nonce (ECDSA), as espsecure does.
    pub fn sign_block(&self, public: &PublicKey, data: &[u8]) -> Result<[u8; BLOCK_SIZE]> {
        let mut rng = rand_core::OsRng;
        match self {
            SigningKey::Rsa(k) => {
                let digest = ImageDigests::of(data, false).sha256;
                let signer = rsa::pss::BlindedSigningKey::<Sha256>::new_with_salt_len(
                    k.clone(),
                    secure_boot::PSS_SALT_LEN,
                );
                let sig = signer
                    .sign_prehash_with_rng(&mut rng, &digest)
                    .map_err(|e| anyhow!("RSA-PSS signing: {e}"))?;
                let be: Box<[u8]> = sig.into();
                let be = le_fixed(&be, RSA_LEN)?;
                let be: Vec<u8> = be.into_iter().rev().collect();
                public.block_from_signature(&be, data)
            }
            SigningKey::P256(k) => {
                let digest = ImageDigests::of(data, false).sha256;
                let sig: p256::ecdsa::Signature = k
                    .sign_prehash_with_rng(&mut rng, &digest)
                    .map_err(|e| anyhow!("ECDSA signing: {e}"))?;
                public.ecdsa_block(&digest, &sig.r().to_bytes(), &sig.s().to_bytes())
            }
            SigningKey::P384(k) => {
                let digest = ImageDigests::of(data, true).sha384.expect("asked for");
                let sig: p384::ecdsa::Signature = k
                    .sign_prehash_with_rng(&mut rng, &digest)
                    .map_err(|e| anyhow!("ECDSA signing: {e}"))?;
                public.ecdsa_block(&digest, &sig.r().to_bytes(), &sig.s().to_bytes())
            }
        }
    }
}

/// The key digest of a PEM key file (public or private): `ota image key-digest`, and
/// `ota device create --secure-boot-key`.
pub fn key_digest_of_file(path: &Path) -> Result<[u8; 32]> {
    load(path)?
        .public
        .key_digest()
        .with_context(|| path.display().to_string())
}
