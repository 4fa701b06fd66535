//! The signed catalogue: an envelope around the exact bytes of a catalogue, signed with
//! Ed25519 (RFC 8032) or ECDSA P-256 (FIPS 186-4, SHA-256), and its verification.
//!
//! ```json
//! { "signed_catalogue": 1, "alg": "ed25519", "key_id": "<64 hex>",
//!   "signature": "<base64>", "payload": "<base64 of the catalogue JSON>" }
//! ```
//!
//! The signature covers [`SIGNING_CONTEXT`] followed by the payload bytes exactly as they are
//! carried (base64, RFC 4648 §4): the device verifies the bytes it decoded, then parses those
//! same bytes, so no re-serialisation can make two readers see different catalogues. The
//! payload is a plain catalogue with a `serial` that the signer makes grow with every new
//! document; a device that keeps the last serial it accepted refuses an older one (replay).
//!
//! Keys are PEM: PKCS#8 `PRIVATE KEY` (what `openssl genpkey -algorithm ed25519` and
//! `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` write), SEC1
//! `EC PRIVATE KEY` (what `openssl ecparam -name prime256v1 -genkey` writes, after its
//! `EC PARAMETERS` block), and SPKI `PUBLIC KEY` (what `openssl pkey -pubout` writes). The key
//! id is the SHA-256 of the public key's SPKI DER, so
//! `openssl pkey -pubin -in PUB.pem -outform DER | sha256sum` prints it too.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use base64ct::{Base64, Encoding};
use ed25519_dalek::Signer as _;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Catalogue, MAX_CATALOGUE_BYTES};

/// The envelope format this code writes and reads (`"signed_catalogue"` key).
pub const SIGNED_FORMAT: u32 = 1;
/// What is signed: this context, then the payload bytes. It keeps a catalogue key's signatures
/// from meaning anything in another protocol (and another protocol's from meaning a catalogue).
pub const SIGNING_CONTEXT: &[u8] = b"ota-service signed catalogue v1\n";
/// Largest key file read ([`SigningKey::from_pem`], [`PublicKey::from_pem`]).
pub const MAX_PEM_BYTES: usize = 16 << 10;
/// Bytes of an Ed25519 or a fixed-size (r ‖ s) ECDSA P-256 signature.
const SIGNATURE_BYTES: usize = 64;

/// A signature algorithm (`"alg"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519 (RFC 8032, pure).
    Ed25519,
    /// ECDSA on NIST P-256 with SHA-256; the signature is r ‖ s, 32 bytes each (IEEE P1363).
    EcdsaP256,
}

impl Algorithm {
    /// The name in the envelope and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256 => "ecdsa-p256",
        }
    }

    /// The algorithm named `s` (`ed25519`; `ecdsa-p256`, also `p256`).
    pub fn from_name(s: &str) -> Option<Algorithm> {
        match s {
            "ed25519" => Some(Algorithm::Ed25519),
            "ecdsa-p256" | "p256" => Some(Algorithm::EcdsaP256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key file cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    TooLarge {
        len: usize,
    },
    NotText,
    /// No PEM block of a kind this reads (`labels`: the blocks that are there).
    NoKeyBlock {
        labels: Vec<String>,
    },
    /// A block without its `-----END …-----` line.
    Unterminated {
        label: String,
    },
    Base64 {
        label: String,
    },
    /// An encrypted PKCS#8 key (decrypt it first: `openssl pkey -in K -out PLAIN`).
    Encrypted,
    /// A private key where a public one is wanted, or the reverse, is fine; this is a key of
    /// another algorithm or curve (its OIDs).
    Unsupported {
        label: String,
        detail: String,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::TooLarge { len } => write!(
                f,
                "key file of {len} bytes is larger than {MAX_PEM_BYTES} bytes"
            ),
            KeyError::NotText => f.write_str("the key file is not PEM text"),
            KeyError::NoKeyBlock { labels } if labels.is_empty() => f.write_str(
                "no PEM block: expected PRIVATE KEY, EC PRIVATE KEY or PUBLIC KEY",
            ),
            KeyError::NoKeyBlock { labels } => write!(
                f,
                "no PRIVATE KEY, EC PRIVATE KEY or PUBLIC KEY block (found {})",
                labels.join(", ")
            ),
            KeyError::Unterminated { label } => {
                write!(f, "the {label} block has no `-----END {label}-----` line")
            }
            KeyError::Base64 { label } => write!(f, "the {label} block is not valid base64"),
            KeyError::Encrypted => f.write_str(
                "the key is encrypted (ENCRYPTED PRIVATE KEY): decrypt it with `openssl pkey -in KEY.pem -out PLAIN.pem`",
            ),
            KeyError::Unsupported { label, detail } => write!(
                f,
                "the {label} block is not an Ed25519 or ECDSA P-256 key: {detail}"
            ),
        }
    }
}

impl core::error::Error for KeyError {}

/// One PEM block: its label and its DER bytes.
struct Block {
    label: String,
    der: Vec<u8>,
}

/// The PEM blocks of `text` (RFC 7468), in order.
fn pem_blocks(pem: &[u8]) -> Result<Vec<Block>, KeyError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(KeyError::TooLarge { len: pem.len() });
    }
    let text = core::str::from_utf8(pem).map_err(|_| KeyError::NotText)?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("-----BEGIN ") {
        let after = &rest[at + "-----BEGIN ".len()..];
        let Some(end_label) = after.find("-----") else {
            break;
        };
        let label = after[..end_label].trim().to_string();
        let body_start = &after[end_label + 5..];
        let end_line = format!("-----END {label}-----");
        let Some(end) = body_start.find(&end_line) else {
            return Err(KeyError::Unterminated { label });
        };
        let body: String = body_start[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = Base64::decode_vec(&body).map_err(|_| KeyError::Base64 {
            label: label.clone(),
        })?;
        blocks.push(Block { label, der });
        rest = &body_start[end + end_line.len()..];
    }
    Ok(blocks)
}

/// The first block that holds a key (an `EC PARAMETERS` block before a SEC1 key is skipped).
fn key_block(pem: &[u8]) -> Result<Block, KeyError> {
    let blocks = pem_blocks(pem)?;
    let labels: Vec<String> = blocks.iter().map(|b| b.label.clone()).collect();
    for b in blocks {
        match b.label.as_str() {
            "PRIVATE KEY" | "EC PRIVATE KEY" | "PUBLIC KEY" => return Ok(b),
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            _ => {}
        }
    }
    Err(KeyError::NoKeyBlock { labels })
}

/// The algorithm OIDs of a PKCS#8 or SPKI structure, for an error message.
fn oids_of(algorithm: &p256::pkcs8::AlgorithmIdentifierRef<'_>) -> String {
    match algorithm.parameters_oid() {
        Ok(p) => format!("algorithm {} with parameters {}", algorithm.oid, p),
        Err(_) => format!("algorithm {}", algorithm.oid),
    }
}

fn unsupported(label: &str, detail: impl Into<String>) -> KeyError {
    KeyError::Unsupported {
        label: label.to_string(),
        detail: detail.into(),
    }
}

/// A public key that verifies catalogue signatures (the device's `catalogue_key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    inner: PublicInner,
    key_id: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PublicInner {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    fn new(inner: PublicInner) -> PublicKey {
        let key_id = Sha256::digest(spki_der(&inner)).into();
        PublicKey { inner, key_id }
    }

    /// A public key from PEM: a `PUBLIC KEY` (SPKI) block, or a private key's public half.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, KeyError> {
        let b = key_block(pem)?;
        if b.label != "PUBLIC KEY" {
            return SigningKey::from_block(&b).map(|k| k.public_key());
        }
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(&b.der) {
            return Ok(PublicKey::new(PublicInner::Ed25519(k)));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(&b.der) {
            return Ok(PublicKey::new(PublicInner::P256(k)));
        }
        let detail = match p256::pkcs8::spki::SubjectPublicKeyInfoRef::try_from(b.der.as_slice()) {
            Ok(spki) => oids_of(&spki.algorithm),
            Err(e) => format!("not a SubjectPublicKeyInfo: {e}"),
        };
        Err(unsupported(&b.label, detail))
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            PublicInner::Ed25519(_) => Algorithm::Ed25519,
            PublicInner::P256(_) => Algorithm::EcdsaP256,
        }
    }

    /// SHA-256 of the key's SubjectPublicKeyInfo DER.
    pub fn key_id(&self) -> [u8; 32] {
        self.key_id
    }

    /// [`PublicKey::key_id`] as 64 lower-case hex digits (the envelope's `key_id`).
    pub fn key_id_hex(&self) -> String {
        hex(&self.key_id)
    }

    /// The key as a `PUBLIC KEY` PEM block (what `openssl pkey -pubout` writes).
    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &spki_der(&self.inner))
    }

    /// Whether `signature` is this key's over [`SIGNING_CONTEXT`] ‖ `payload`.
    fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        let msg = signed_message(payload);
        match &self.inner {
            PublicInner::Ed25519(k) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify_strict(&msg, &s).is_ok()),
            PublicInner::P256(k) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|s| k.verify(&msg, &s).is_ok())
            }
        }
    }
}

fn spki_der(inner: &PublicInner) -> Vec<u8> {
    // Encoding a valid key's SPKI cannot fail (fixed-size structures).
    let doc = match inner {
        PublicInner::Ed25519(k) => k.to_public_key_der(),
        PublicInner::P256(k) => k.to_public_key_der(),
    };
    doc.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = Base64::encode_string(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 text is ASCII.
        s.push_str(core::str::from_utf8(line).unwrap_or(""));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + payload.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(payload);
    m
}

/// A private key that signs catalogues (`ota serve --sign-key`, `ota publish --sign-key`).
/// Both algorithms sign deterministically (RFC 8032; RFC 6979 for ECDSA): no RNG is needed.
#[derive(Clone)]
pub struct SigningKey {
    inner: SigningInner,
}

#[derive(Clone)]
enum SigningInner {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(
            f,
            "SigningKey({}, key id {})",
            self.algorithm(),
            self.public_key().key_id_hex()
        )
    }
}

impl SigningKey {
    /// A private key from PEM: PKCS#8 `PRIVATE KEY` (Ed25519 or EC P-256) or SEC1
    /// `EC PRIVATE KEY` (P-256).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, KeyError> {
        let b = key_block(pem)?;
        if b.label == "PUBLIC KEY" {
            return Err(unsupported(
                &b.label,
                "a public key cannot sign: give the private key (PRIVATE KEY or EC PRIVATE KEY)",
            ));
        }
        SigningKey::from_block(&b)
    }

    fn from_block(b: &Block) -> Result<SigningKey, KeyError> {
        if b.label == "EC PRIVATE KEY" {
            return p256::SecretKey::from_sec1_der(&b.der)
                .map(|k| SigningKey {
                    inner: SigningInner::P256(k.into()),
                })
                .map_err(|e| unsupported(&b.label, format!("not a SEC1 P-256 private key: {e}")));
        }
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(&b.der) {
            return Ok(SigningKey {
                inner: SigningInner::Ed25519(k),
            });
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(&b.der) {
            return Ok(SigningKey {
                inner: SigningInner::P256(k.into()),
            });
        }
        let detail = match p256::pkcs8::PrivateKeyInfo::try_from(b.der.as_slice()) {
            Ok(info) => oids_of(&info.algorithm),
            Err(e) => format!("not a PKCS#8 PrivateKeyInfo: {e}"),
        };
        Err(unsupported(&b.label, detail))
    }

    /// A key from 32 secret bytes (an Ed25519 seed, or a P-256 scalar; None when the scalar
    /// is zero or not below the group order). For key generation with the caller's RNG.
    pub fn from_secret_bytes(alg: Algorithm, secret: &[u8; 32]) -> Option<SigningKey> {
        let inner = match alg {
            Algorithm::Ed25519 => {
                SigningInner::Ed25519(ed25519_dalek::SigningKey::from_bytes(secret))
            }
            Algorithm::EcdsaP256 => {
                SigningInner::P256(p256::ecdsa::SigningKey::from_slice(secret).ok()?)
            }
        };
        Some(SigningKey { inner })
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            SigningInner::Ed25519(_) => Algorithm::Ed25519,
            SigningInner::P256(_) => Algorithm::EcdsaP256,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::new(match &self.inner {
            SigningInner::Ed25519(k) => PublicInner::Ed25519(k.verifying_key()),
            SigningInner::P256(k) => PublicInner::P256(*k.verifying_key()),
        })
    }

    /// The key as a PKCS#8 `PRIVATE KEY` PEM block (what `openssl genpkey` writes).
    pub fn to_pkcs8_pem(&self) -> String {
        let der = match &self.inner {
            SigningInner::Ed25519(k) => k.to_pkcs8_der(),
            SigningInner::P256(k) => k.to_pkcs8_der(),
        };
        // Encoding a valid key cannot fail.
        let der = der.map(|d| d.as_bytes().to_vec()).unwrap_or_default();
        pem_encode("PRIVATE KEY", &der)
    }

    /// The signature over [`SIGNING_CONTEXT`] ‖ `payload` (64 bytes).
    pub fn sign_bytes(&self, payload: &[u8]) -> Vec<u8> {
        let msg = signed_message(payload);
        match &self.inner {
            SigningInner::Ed25519(k) => k.sign(&msg).to_bytes().to_vec(),
            SigningInner::P256(k) => {
                use p256::ecdsa::signature::Signer as _;
                let s: p256::ecdsa::Signature = k.sign(&msg);
                s.to_bytes().to_vec()
            }
        }
    }

    /// The signed document for `catalogue` with its `serial` set to `serial`: the envelope's
    /// JSON. The payload is the catalogue's pretty JSON ([`Catalogue::to_json`]).
    pub fn sign(&self, catalogue: &Catalogue, serial: u64) -> SignedDoc {
        let mut c = catalogue.clone();
        c.serial = Some(serial);
        let payload = c.to_json();
        let env = Envelope {
            signed_catalogue: SIGNED_FORMAT,
            alg: self.algorithm().name().to_string(),
            key_id: self.public_key().key_id_hex(),
            signature: Base64::encode_string(&self.sign_bytes(&payload)),
            payload: Base64::encode_string(&payload),
        };
        // Serialising plain strings and numbers cannot fail.
        let mut json = serde_json::to_vec_pretty(&env).unwrap_or_default();
        json.push(b'\n');
        SignedDoc { json, catalogue: c }
    }
}

/// What [`SigningKey::sign`] makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedDoc {
    /// The document to serve at `/manifest.json`.
    pub json: Vec<u8>,
    /// The catalogue it carries (with its serial).
    pub catalogue: Catalogue,
}

/// The envelope's JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    signed_catalogue: u32,
    alg: String,
    key_id: String,
    signature: String,
    payload: String,
}

/// The keys that tell an envelope from a plain catalogue.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    signed_catalogue: Option<serde::de::IgnoredAny>,
}

/// Why a catalogue document is refused by a device that has a catalogue key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    TooLarge {
        len: usize,
    },
    /// A plain catalogue (no envelope) where a signed one is required.
    Unsigned,
    /// Not JSON, not an envelope, or a field of it malformed (`detail` names it).
    Malformed {
        detail: String,
    },
    /// An envelope format this code does not know.
    Format {
        found: u32,
    },
    /// Signed with another algorithm than the device's key.
    Algorithm {
        expected: Algorithm,
        found: String,
    },
    /// Signed by another key (key ids, hex).
    WrongKey {
        expected: String,
        found: String,
    },
    /// The signature does not verify over the payload: altered, or not this key's.
    BadSignature {
        key_id: String,
    },
    /// The payload verifies but is not a catalogue.
    Payload {
        detail: String,
    },
    /// A signed payload without `serial`.
    NoSerial,
    /// Older than the last catalogue this device accepted: a replay.
    Replayed {
        serial: u64,
        last: u64,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::TooLarge { len } => write!(
                f,
                "catalogue of {len} bytes is larger than {MAX_CATALOGUE_BYTES} bytes"
            ),
            VerifyError::Unsigned => f.write_str(
                "the catalogue is not signed, and this device has a catalogue key: only a signed catalogue is accepted",
            ),
            VerifyError::Malformed { detail } => write!(f, "malformed signed catalogue: {detail}"),
            VerifyError::Format { found } => write!(
                f,
                "signed catalogue format {found} is not supported (expected {SIGNED_FORMAT})"
            ),
            VerifyError::Algorithm { expected, found } => write!(
                f,
                "the catalogue is signed with alg {found}, the device's catalogue key is {expected}"
            ),
            VerifyError::WrongKey { expected, found } => write!(
                f,
                "the catalogue is signed by key id {found}, the device's catalogue key is {expected}"
            ),
            VerifyError::BadSignature { key_id } => write!(
                f,
                "the catalogue's signature does not verify with key id {key_id}: the catalogue was altered or not signed by this key"
            ),
            VerifyError::Payload { detail } => {
                write!(f, "the signed payload is not a catalogue: {detail}")
            }
            VerifyError::NoSerial => f.write_str("the signed catalogue has no `serial`"),
            VerifyError::Replayed { serial, last } => write!(
                f,
                "the catalogue's serial {serial} is older than the last one this device accepted ({last}): a replayed catalogue"
            ),
        }
    }
}

impl core::error::Error for VerifyError {}

/// A catalogue that passed [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub catalogue: Catalogue,
    pub serial: u64,
    /// The signer's key id (hex).
    pub key_id: String,
    pub algorithm: Algorithm,
}

/// What a document is, without checking any signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    /// A plain catalogue.
    Plain(Catalogue),
    /// A signed catalogue's payload, parsed but **not verified**, and who says they signed it.
    Signed {
        catalogue: Catalogue,
        alg: String,
        key_id: String,
    },
}

impl Document {
    pub fn catalogue(&self) -> &Catalogue {
        match self {
            Document::Plain(c) | Document::Signed { catalogue: c, .. } => c,
        }
    }
    pub fn into_catalogue(self) -> Catalogue {
        match self {
            Document::Plain(c) | Document::Signed { catalogue: c, .. } => c,
        }
    }
}

/// Whether `bytes` look like an envelope (an object with `signed_catalogue`).
fn is_envelope(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| p.signed_catalogue.is_some())
}

fn open_envelope(bytes: &[u8]) -> Result<(Envelope, Vec<u8>, Vec<u8>), VerifyError> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| VerifyError::Malformed {
        detail: e.to_string(),
    })?;
    if env.signed_catalogue != SIGNED_FORMAT {
        return Err(VerifyError::Format {
            found: env.signed_catalogue,
        });
    }
    let payload = Base64::decode_vec(&env.payload).map_err(|_| VerifyError::Malformed {
        detail: "`payload` is not base64".to_string(),
    })?;
    let signature = Base64::decode_vec(&env.signature).map_err(|_| VerifyError::Malformed {
        detail: "`signature` is not base64".to_string(),
    })?;
    Ok((env, payload, signature))
}

/// Read a catalogue document, plain or signed, **without** checking a signature (a device
/// without a catalogue key, the server's read-modify-write). Errors as [`Catalogue::from_json`].
pub fn read_document(bytes: &[u8]) -> Result<Document, String> {
    if bytes.len() > MAX_CATALOGUE_BYTES {
        return Err(format!(
            "catalogue of {} bytes is larger than {} bytes",
            bytes.len(),
            MAX_CATALOGUE_BYTES
        ));
    }
    if !is_envelope(bytes) {
        return Catalogue::parse_plain(bytes).map(Document::Plain);
    }
    let (env, payload, _) = open_envelope(bytes).map_err(|e| e.to_string())?;
    let catalogue = Catalogue::parse_plain(&payload)
        .map_err(|e| format!("the signed payload is not a catalogue: {e}"))?;
    Ok(Document::Signed {
        catalogue,
        alg: env.alg,
        key_id: env.key_id,
    })
}

/// Verify a catalogue document with the device's `key`: it must be an envelope, signed with
/// the key's algorithm by this key, over these exact payload bytes, and its payload a
/// catalogue with a `serial` not below `last_serial` (the last one this device accepted; equal
/// is the same catalogue again and is accepted). Only then is the payload parsed.
pub fn verify(
    bytes: &[u8],
    key: &PublicKey,
    last_serial: Option<u64>,
) -> Result<Verified, VerifyError> {
    if bytes.len() > MAX_CATALOGUE_BYTES {
        return Err(VerifyError::TooLarge { len: bytes.len() });
    }
    if !is_envelope(bytes) {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => VerifyError::Unsigned,
                Err(e) => VerifyError::Malformed {
                    detail: e.to_string(),
                },
            },
        );
    }
    let (env, payload, signature) = open_envelope(bytes)?;
    if Algorithm::from_name(&env.alg) != Some(key.algorithm()) {
        return Err(VerifyError::Algorithm {
            expected: key.algorithm(),
            found: env.alg,
        });
    }
    let expected = key.key_id_hex();
    if !env.key_id.eq_ignore_ascii_case(&expected) {
        return Err(VerifyError::WrongKey {
            expected,
            found: env.key_id,
        });
    }
    if signature.len() != SIGNATURE_BYTES || !key.verifies(&payload, &signature) {
        return Err(VerifyError::BadSignature { key_id: expected });
    }
    let catalogue =
        Catalogue::parse_plain(&payload).map_err(|detail| VerifyError::Payload { detail })?;
    let serial = catalogue.serial.ok_or(VerifyError::NoSerial)?;
    if let Some(last) = last_serial {
        if serial < last {
            return Err(VerifyError::Replayed { serial, last });
        }
    }
    Ok(Verified {
        catalogue,
        serial,
        key_id: expected,
        algorithm: key.algorithm(),
    })
}

#[cfg(test)]
mod tests;
