//! Digests: the streaming hasher over the signed data (everything before the signature
//! sector) and the public-key digest as eFuse holds it (ESP-IDF
//! `secure_boot_signatures_app.c`: SHA-256 over the block's `key`).

use sha2::{Digest, Sha256};

use super::block::HashKind;

/// SHA-384 of the signed data, only in builds that verify P-384 blocks. Without the feature
/// the state type is uninhabited, so no path to SHA-512's compression function exists and a
/// firmware without P-384 does not link it (a runtime `None` alone left 48 KB of it in the
/// ESP32-C3 build).
#[cfg(feature = "ecdsa-p384")]
mod h384 {
    use sha2::{Digest, Sha384};

    pub(super) type State = Sha384;

    pub(super) fn new_if(asked: bool) -> Option<State> {
        asked.then(Sha384::new)
    }

    pub(super) fn update(h: &mut State, data: &[u8]) {
        h.update(data);
    }

    pub(super) fn finish(h: State) -> [u8; 48] {
        h.finalize().into()
    }
}

#[cfg(not(feature = "ecdsa-p384"))]
mod h384 {
    #[derive(Clone)]
    pub(super) enum State {}

    pub(super) fn new_if(_asked: bool) -> Option<State> {
        None
    }

    pub(super) fn update(h: &mut State, _data: &[u8]) {
        match *h {}
    }

    pub(super) fn finish(h: State) -> [u8; 48] {
        match h {}
    }
}

/// SHA-256 of a block's key part: what `espsecure digest-sbv2-public-key` writes and the
/// `SECURE_BOOT_DIGESTn` eFuse key blocks hold.
pub fn key_digest(key_bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(key_bytes).into()
}

/// The digests of the signed data, as computed (never read from a block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageDigests {
    pub sha256: [u8; 32],
    /// Present when the hasher was asked for it (P-384 blocks need it).
    pub sha384: Option<[u8; 48]>,
    /// Bytes hashed.
    pub len: u64,
}

impl ImageDigests {
    /// The digest of `kind`, when it was computed.
    pub fn get(&self, kind: HashKind) -> Option<&[u8]> {
        match kind {
            HashKind::Sha256 => Some(&self.sha256),
            HashKind::Sha384 => self.sha384.as_ref().map(|d| &d[..]),
        }
    }

    /// Digests of a whole buffer (host tools, tests).
    pub fn of(data: &[u8], sha384: bool) -> Self {
        let mut h = SignedDataHasher::new(sha384);
        h.update(data);
        h.finish()
    }
}

/// Streams the signed data (from the image's first byte to the signature sector, padding
/// included) into SHA-256 and, when asked, SHA-384. Constant memory; feed chunks of any size.
#[derive(Clone)]
pub struct SignedDataHasher {
    sha256: Sha256,
    sha384: Option<h384::State>,
    len: u64,
}

impl SignedDataHasher {
    /// `sha384`: also compute SHA-384 (needed to verify an ECDSA P-384 block). ESP-IDF
    /// computes the one its configured scheme needs; a caller that does not know the scheme
    /// asks for both.
    pub fn new(sha384: bool) -> Self {
        SignedDataHasher {
            sha256: Sha256::new(),
            // SHA-384 only serves P-384 blocks: without that feature it is never computed, so
            // a firmware without P-384 links no SHA-512 core.
            sha384: h384::new_if(sha384),
            len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(h) = self.sha384.as_mut() {
            h384::update(h, data);
        }
        self.len += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> ImageDigests {
        ImageDigests {
            sha256: self.sha256.finalize().into(),
            sha384: self.sha384.map(h384::finish),
            len: self.len,
        }
    }
}
