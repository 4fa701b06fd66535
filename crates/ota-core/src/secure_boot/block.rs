//! The signature sector and its blocks: parsing with a status per block, and the encoder the
//! host signer uses (layout of `ets_secure_boot_sig_block_t`, ESP-IDF
//! `components/esp_rom/include/<chip>/rom/secure_boot.h`, and espsecure's
//! `generate_rsa_signature_block` / `generate_ecdsa_signature_block` in
//! esptool `espsecure/__init__.py`).

use core::fmt;

use crc::{Crc, CRC_32_ISO_HDLC};

use super::{
    BLOCK_CRC_OFFSET, BLOCK_MAGIC, BLOCK_SIZE, MAX_BLOCKS, SECTOR_SIZE, VERSION_ECDSA, VERSION_RSA,
};
use crate::bytes::Hex;

/// `esp_rom_crc32_le(0, block, 1196)`, i.e. zlib's CRC-32 (espsecure `zlib.crc32`).
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// ECDSA hash-type byte (block offset 2): `ECDSA_SHA_256` / `ECDSA_SHA_384` in espsecure.
pub const ECDSA_SHA_256: u8 = 0;
pub const ECDSA_SHA_384: u8 = 1;
/// `curve_id` values (`ECDSA_CURVE_P192` .. in ESP-IDF `secure_boot.h`; `CURVE_ID_P*` in espsecure).
pub const CURVE_ID_P192: u8 = 1;
pub const CURVE_ID_P256: u8 = 2;
pub const CURVE_ID_P384: u8 = 3;

/// RSA block field offsets (`ets_secure_boot_sig_block_t`, ESP-IDF rom `secure_boot.h`).
const RSA_N: usize = 36;
const RSA_E: usize = 420;
const RSA_RINV: usize = 424;
const RSA_MDASH: usize = 808;
const RSA_SIG: usize = 812;
/// Bytes of an RSA-3072 number.
pub const RSA_LEN: usize = 384;
/// The RSA key part hashed for eFuse: n ‖ e ‖ rinv ‖ mdash.
pub const RSA_KEY_LEN: usize = RSA_SIG - RSA_N;

/// The scheme of a block (`version` byte at offset 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// version 2: RSA-3072-PSS.
    Rsa3072,
    /// version 3: ECDSA (P-192, P-256 or P-384).
    Ecdsa,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Rsa3072 => "RSA-3072-PSS",
            Scheme::Ecdsa => "ECDSA",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An ECDSA block's curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P192,
    P256,
    P384,
}

impl Curve {
    pub fn id(self) -> u8 {
        match self {
            Curve::P192 => CURVE_ID_P192,
            Curve::P256 => CURVE_ID_P256,
            Curve::P384 => CURVE_ID_P384,
        }
    }
    /// Bytes of one coordinate or scalar.
    pub fn coord_len(self) -> usize {
        match self {
            Curve::P192 => 24,
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Curve::P192 => "P-192",
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }
    /// The hash of the signed data for this curve: SHA-384 for P-384, SHA-256 otherwise.
    pub fn hash(self) -> HashKind {
        match self {
            Curve::P384 => HashKind::Sha384,
            _ => HashKind::Sha256,
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The digest of the signed data a block is made over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    Sha256,
    Sha384,
}

impl HashKind {
    pub fn digest_len(self) -> usize {
        match self {
            HashKind::Sha256 => 32,
            HashKind::Sha384 => 48,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            HashKind::Sha256 => "SHA-256",
            HashKind::Sha384 => "SHA-384",
        }
    }
}

/// Why a block is not a usable signature block. `offset` fields are offsets in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockErrorKind {
    /// All 0xFF: no block here (espsecure pads unused room with 0xFF).
    Absent,
    /// `magic_byte` (offset 0) is not 0xE7.
    BadMagic { found: u8 },
    /// `block_crc` (offset 1196) does not match the CRC-32 of bytes 0..1196.
    BadCrc { stored: u32, computed: u32 },
    /// `version` (offset 1) is neither 2 (RSA) nor 3 (ECDSA).
    UnknownVersion { found: u8 },
    /// ECDSA hash type (offset 2) is neither 0 (SHA-256) nor 1 (SHA-384).
    UnknownHashType { found: u8 },
    /// ECDSA `curve_id` is not 1, 2 or 3 (`offset` is where it was read).
    UnknownCurve { offset: usize, found: u8 },
    /// A P-384 block with the SHA-256 layout, or a P-192/P-256 block with the SHA-384 one.
    CurveHashMismatch { curve: Curve, hash_type: u8 },
}

/// A block that cannot be used, and why; `index` is 0..=2 in the sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockError {
    pub index: u8,
    pub kind: BlockErrorKind,
}

impl fmt::Display for BlockErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BlockErrorKind::Absent => f.write_str("absent (all 0xFF)"),
            BlockErrorKind::BadMagic { found } => {
                write!(f, "bad magic at offset 0: expected 0x{BLOCK_MAGIC:02x}, found 0x{found:02x}")
            }
            BlockErrorKind::BadCrc { stored, computed } => write!(
                f,
                "bad CRC at offset {BLOCK_CRC_OFFSET}: stored 0x{stored:08x}, computed 0x{computed:08x}"
            ),
            BlockErrorKind::UnknownVersion { found } => write!(
                f,
                "unknown version at offset 1: expected 2 (RSA) or 3 (ECDSA), found {found}"
            ),
            BlockErrorKind::UnknownHashType { found } => write!(
                f,
                "unknown ECDSA hash type at offset 2: expected 0 (SHA-256) or 1 (SHA-384), found {found}"
            ),
            BlockErrorKind::UnknownCurve { offset, found } => write!(
                f,
                "unknown curve_id at offset {offset}: expected 1 (P-192), 2 (P-256) or 3 (P-384), found {found}"
            ),
            BlockErrorKind::CurveHashMismatch { curve, hash_type } => write!(
                f,
                "curve {curve} with hash type {hash_type} at offset 2 (expected {})",
                if curve == Curve::P384 { 1 } else { 0 }
            ),
        }
    }
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signature block {}: {}", self.index, self.kind)
    }
}

impl core::error::Error for BlockError {}

/// The key and signature of a parsed block, borrowed from the sector. Numbers are
/// little-endian, as in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKey<'a> {
    Rsa {
        n: &'a [u8; RSA_LEN],
        e: u32,
        rinv: &'a [u8; RSA_LEN],
        mdash: u32,
        signature: &'a [u8; RSA_LEN],
    },
    Ecdsa {
        curve: Curve,
        /// X ‖ Y, each `curve.coord_len()` bytes (P-192's are zero-padded to 32 in the block).
        point: &'a [u8],
        /// r ‖ s, each `curve.coord_len()` bytes.
        signature: &'a [u8],
    },
}

/// One valid (magic, CRC, known scheme and curve) signature block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureBlock<'a> {
    pub index: u8,
    raw: &'a [u8; BLOCK_SIZE],
    pub key: BlockKey<'a>,
}

fn arr<const N: usize>(b: &[u8], at: usize) -> &[u8; N] {
    // Callers pass in-bounds constant offsets of a BLOCK_SIZE array.
    b[at..at + N].try_into().expect("in-bounds field")
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(*arr::<4>(b, at))
}

/// The CRC of a block's first 1196 bytes, as stored at offset 1196.
pub fn block_crc(raw: &[u8; BLOCK_SIZE]) -> u32 {
    CRC32.checksum(&raw[..BLOCK_CRC_OFFSET])
}

impl<'a> SignatureBlock<'a> {
    /// Parses block `index` of a sector. Checks what ESP-IDF and espsecure check (magic, CRC,
    /// version) and what is needed to read the fields (hash type, curve).
    pub fn parse(index: u8, raw: &'a [u8; BLOCK_SIZE]) -> Result<Self, BlockError> {
        let err = |kind| BlockError { index, kind };
        if raw.iter().all(|&b| b == 0xFF) {
            return Err(err(BlockErrorKind::Absent));
        }
        if raw[0] != BLOCK_MAGIC {
            return Err(err(BlockErrorKind::BadMagic { found: raw[0] }));
        }
        let stored = le32(raw, BLOCK_CRC_OFFSET);
        let computed = block_crc(raw);
        if stored != computed {
            return Err(err(BlockErrorKind::BadCrc { stored, computed }));
        }
        let key = match raw[1] {
            VERSION_RSA => BlockKey::Rsa {
                n: arr(raw, RSA_N),
                e: le32(raw, RSA_E),
                rinv: arr(raw, RSA_RINV),
                mdash: le32(raw, RSA_MDASH),
                signature: arr(raw, RSA_SIG),
            },
            VERSION_ECDSA => {
                let hash_type = raw[2];
                let curve_at = match hash_type {
                    ECDSA_SHA_256 => 36,
                    ECDSA_SHA_384 => 52,
                    found => return Err(err(BlockErrorKind::UnknownHashType { found })),
                };
                let curve = match raw[curve_at] {
                    CURVE_ID_P192 => Curve::P192,
                    CURVE_ID_P256 => Curve::P256,
                    CURVE_ID_P384 => Curve::P384,
                    found => {
                        return Err(err(BlockErrorKind::UnknownCurve {
                            offset: curve_at,
                            found,
                        }))
                    }
                };
                let expected = if curve == Curve::P384 {
                    ECDSA_SHA_384
                } else {
                    ECDSA_SHA_256
                };
                if hash_type != expected {
                    return Err(err(BlockErrorKind::CurveHashMismatch { curve, hash_type }));
                }
                // Point and signature areas: 64 bytes each after a SHA-256 digest, 96 after a
                // SHA-384 one; P-192's numbers fill the first 24 bytes of each 32.
                let area = if curve == Curve::P384 { 96 } else { 64 };
                let point_at = curve_at + 1;
                let sig_at = point_at + area;
                let half = curve.coord_len();
                let point = &raw[point_at..point_at + area];
                let signature = &raw[sig_at..sig_at + area];
                let (point, signature) = if curve == Curve::P192 {
                    // micro-ecc's native little-endian P-192 numbers: X at 0, Y at 24.
                    (&point[..2 * half], &signature[..2 * half])
                } else {
                    (point, signature)
                };
                BlockKey::Ecdsa {
                    curve,
                    point,
                    signature,
                }
            }
            found => return Err(err(BlockErrorKind::UnknownVersion { found })),
        };
        Ok(SignatureBlock { index, raw, key })
    }

    pub fn scheme(&self) -> Scheme {
        match self.key {
            BlockKey::Rsa { .. } => Scheme::Rsa3072,
            BlockKey::Ecdsa { .. } => Scheme::Ecdsa,
        }
    }

    pub fn curve(&self) -> Option<Curve> {
        match self.key {
            BlockKey::Rsa { .. } => None,
            BlockKey::Ecdsa { curve, .. } => Some(curve),
        }
    }

    /// The digest the block is made over: SHA-384 for P-384, SHA-256 otherwise.
    pub fn hash(&self) -> HashKind {
        match self.key {
            BlockKey::Rsa { .. } => HashKind::Sha256,
            BlockKey::Ecdsa { curve, .. } => curve.hash(),
        }
    }

    /// The `image_digest` field the signer stored (offset 4). Informative only: verification
    /// uses the digest computed over the data.
    pub fn stored_image_digest(&self) -> &'a [u8] {
        &self.raw[4..4 + self.hash().digest_len()]
    }

    /// The bytes ESP-IDF hashes into the public-key digest: `key` of the block (RSA:
    /// n ‖ e ‖ rinv ‖ mdash; ECDSA: curve_id ‖ point, 65 or 97 bytes).
    pub fn key_bytes(&self) -> &'a [u8] {
        match self.key {
            BlockKey::Rsa { .. } => &self.raw[RSA_N..RSA_N + RSA_KEY_LEN],
            BlockKey::Ecdsa { curve, .. } => {
                if curve == Curve::P384 {
                    &self.raw[52..52 + 97]
                } else {
                    &self.raw[36..36 + 65]
                }
            }
        }
    }

    /// SHA-256 of [`Self::key_bytes`]: the public-key digest as eFuse holds it.
    pub fn key_digest(&self) -> [u8; 32] {
        super::digest::key_digest(self.key_bytes())
    }

    pub fn raw(&self) -> &'a [u8; BLOCK_SIZE] {
        self.raw
    }
}

/// A 4096-byte signature sector (three block slots, the rest padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureSector<'a> {
    bytes: &'a [u8; SECTOR_SIZE],
}

/// A sector of the wrong length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SectorLenError {
    pub found: usize,
}

impl fmt::Display for SectorLenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "signature sector: expected {SECTOR_SIZE} bytes, found {}",
            self.found
        )
    }
}

impl core::error::Error for SectorLenError {}

impl<'a> SignatureSector<'a> {
    pub fn new(bytes: &'a [u8; SECTOR_SIZE]) -> Self {
        SignatureSector { bytes }
    }

    /// From a slice that must be exactly 4096 bytes.
    pub fn from_slice(bytes: &'a [u8]) -> Result<Self, SectorLenError> {
        bytes
            .try_into()
            .map(Self::new)
            .map_err(|_| SectorLenError { found: bytes.len() })
    }

    /// Block `index` (0..=2) or why it is not usable. Out-of-range indexes are `Absent`.
    pub fn block(&self, index: usize) -> Result<SignatureBlock<'a>, BlockError> {
        if index >= MAX_BLOCKS {
            return Err(BlockError {
                index: index.min(255) as u8,
                kind: BlockErrorKind::Absent,
            });
        }
        let raw: &'a [u8; BLOCK_SIZE] = arr(self.bytes, index * BLOCK_SIZE);
        SignatureBlock::parse(index as u8, raw)
    }

    /// The three block statuses in order.
    pub fn blocks(&self) -> [Result<SignatureBlock<'a>, BlockError>; MAX_BLOCKS] {
        [self.block(0), self.block(1), self.block(2)]
    }

    /// Number of valid blocks.
    pub fn valid_count(&self) -> usize {
        self.blocks().iter().filter(|b| b.is_ok()).count()
    }

    /// The leading valid blocks as espsecure's `--append-signatures` keeps them: blocks
    /// 0, 1, 2 in order up to the first invalid one.
    pub fn leading_valid(&self) -> usize {
        self.blocks().iter().take_while(|b| b.is_ok()).count()
    }

    pub fn bytes(&self) -> &'a [u8; SECTOR_SIZE] {
        self.bytes
    }
}

/// Finishes a block: CRC at 1196 and 16 zero bytes after it.
fn seal(mut b: [u8; BLOCK_SIZE]) -> [u8; BLOCK_SIZE] {
    let crc = block_crc(&b);
    b[BLOCK_CRC_OFFSET..BLOCK_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    b[BLOCK_CRC_OFFSET + 4..].fill(0);
    b
}

/// An RSA-3072 block (espsecure `generate_rsa_signature_block`): all numbers little-endian.
pub fn encode_rsa_block(
    digest: &[u8; 32],
    n: &[u8; RSA_LEN],
    e: u32,
    rinv: &[u8; RSA_LEN],
    mdash: u32,
    signature: &[u8; RSA_LEN],
) -> [u8; BLOCK_SIZE] {
    let mut b = [0u8; BLOCK_SIZE];
    b[0] = BLOCK_MAGIC;
    b[1] = VERSION_RSA;
    b[4..36].copy_from_slice(digest);
    b[RSA_N..RSA_N + RSA_LEN].copy_from_slice(n);
    b[RSA_E..RSA_E + 4].copy_from_slice(&e.to_le_bytes());
    b[RSA_RINV..RSA_RINV + RSA_LEN].copy_from_slice(rinv);
    b[RSA_MDASH..RSA_MDASH + 4].copy_from_slice(&mdash.to_le_bytes());
    b[RSA_SIG..RSA_SIG + RSA_LEN].copy_from_slice(signature);
    seal(b)
}

/// Wrong lengths given to [`encode_ecdsa_block`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncodeError {
    pub field: &'static str,
    pub expected: usize,
    pub found: usize,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "signature block {}: expected {} bytes, found {}",
            self.field, self.expected, self.found
        )
    }
}

impl core::error::Error for EncodeError {}

/// An ECDSA block (espsecure `generate_ecdsa_signature_block`): `digest` is SHA-256 (P-192,
/// P-256) or SHA-384 (P-384); `point` X ‖ Y and `signature` r ‖ s little-endian, each half
/// `curve.coord_len()` bytes.
pub fn encode_ecdsa_block(
    curve: Curve,
    digest: &[u8],
    point: &[u8],
    signature: &[u8],
) -> Result<[u8; BLOCK_SIZE], EncodeError> {
    let check = |field, expected, found: usize| {
        if expected == found {
            Ok(())
        } else {
            Err(EncodeError {
                field,
                expected,
                found,
            })
        }
    };
    let half = curve.coord_len();
    check("image_digest", curve.hash().digest_len(), digest.len())?;
    check("public key point", 2 * half, point.len())?;
    check("signature", 2 * half, signature.len())?;
    let mut b = [0u8; BLOCK_SIZE];
    b[0] = BLOCK_MAGIC;
    b[1] = VERSION_ECDSA;
    let (hash_type, curve_at, area) = if curve == Curve::P384 {
        (ECDSA_SHA_384, 52, 96)
    } else {
        (ECDSA_SHA_256, 36, 64)
    };
    b[2] = hash_type;
    b[4..4 + digest.len()].copy_from_slice(digest);
    b[curve_at] = curve.id();
    let point_at = curve_at + 1;
    let sig_at = point_at + area;
    b[point_at..point_at + point.len()].copy_from_slice(point);
    b[sig_at..sig_at + signature.len()].copy_from_slice(signature);
    Ok(seal(b))
}

/// Too many blocks for one sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorFull {
    pub present: usize,
    pub adding: usize,
}

impl fmt::Display for SectorFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "signature sector has room for {MAX_BLOCKS} blocks: {} present, {} more asked",
            self.present, self.adding
        )
    }
}

impl core::error::Error for SectorFull {}

/// Builds a sector: blocks in order, the rest 0xFF (espsecure `sign_secure_boot_v2`).
#[derive(Clone)]
pub struct SectorBuilder {
    bytes: [u8; SECTOR_SIZE],
    count: usize,
}

impl Default for SectorBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SectorBuilder {
    pub fn new() -> Self {
        SectorBuilder {
            bytes: [0xFF; SECTOR_SIZE],
            count: 0,
        }
    }

    /// Keeps the leading valid blocks of an existing sector (espsecure's
    /// `--append-signatures`: blocks 0.. up to the first invalid one).
    pub fn from_existing(sector: &SignatureSector<'_>) -> Self {
        let mut b = Self::new();
        let keep = sector.leading_valid();
        b.bytes[..keep * BLOCK_SIZE].copy_from_slice(&sector.bytes()[..keep * BLOCK_SIZE]);
        b.count = keep;
        b
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether `n` more blocks fit.
    pub fn check_room(&self, n: usize) -> Result<(), SectorFull> {
        if self.count + n > MAX_BLOCKS {
            Err(SectorFull {
                present: self.count,
                adding: n,
            })
        } else {
            Ok(())
        }
    }

    pub fn push(&mut self, block: &[u8; BLOCK_SIZE]) -> Result<(), SectorFull> {
        self.check_room(1)?;
        self.bytes[self.count * BLOCK_SIZE..][..BLOCK_SIZE].copy_from_slice(block);
        self.count += 1;
        Ok(())
    }

    pub fn finish(&self) -> [u8; SECTOR_SIZE] {
        self.bytes
    }
}

impl fmt::Display for SignatureBlock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signature block {}: {}", self.index, self.scheme())?;
        if let Some(c) = self.curve() {
            write!(f, " {c}")?;
        }
        write!(f, ", key digest {}", Hex(&self.key_digest()))
    }
}
