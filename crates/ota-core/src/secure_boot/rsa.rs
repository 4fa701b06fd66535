//! RSA-3072-PSS verification of a signature block (what the ROM's `ets_rsa_pss_verify` and
//! ESP-IDF's `verify_rsa_signature_block` do, `components/bootloader_support/src/
//! secure_boot_v2/secure_boot_rsa_signature.c`): s^e mod n by Montgomery multiplication with the
//! block's own `rinv` (R² mod n, R = 2^3072) and `mdash` (−n⁻¹ mod 2³²), then EMSA-PSS-VERIFY
//! (RFC 8017 9.1.2) with MGF1-SHA-256 and a 32-byte salt over the 32-byte image digest.
//!
//! Why not crypto-bigint: the block already carries the two Montgomery constants the chip's
//! RSA peripheral uses, so a fixed 96-limb multiply is all that is needed (about 60 lines, no
//! allocation, fixed 384-byte arrays on the stack); the constants are checked against n before
//! use, so a block with inconsistent ones is refused rather than giving a wrong answer. The
//! same code computes rinv and mdash for the host signer.

use core::fmt;

use sha2::{Digest, Sha256};

use super::block::RSA_LEN;

/// 32-bit limbs of a 3072-bit number.
const LIMBS: usize = RSA_LEN / 4;
type Limbs = [u32; LIMBS];
/// PSS salt length used by espsecure and ESP-IDF.
pub const PSS_SALT_LEN: usize = 32;
const HASH_LEN: usize = 32;

/// Why an RSA block does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RsaError {
    /// n is even or not 3072 bits.
    BadModulus,
    /// e is even or below 3.
    BadExponent { e: u32 },
    /// mdash is not −n⁻¹ mod 2³².
    BadMdash { stored: u32, expected: u32 },
    /// rinv is not R² mod n (or not below n).
    BadRinv,
    /// The signature is not below n.
    SignatureOutOfRange,
    /// The PSS encoding does not check out: the signature was not made with this key over
    /// this digest.
    Mismatch,
}

impl fmt::Display for RsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RsaError::BadModulus => f.write_str("RSA modulus n is not an odd 3072-bit number"),
            RsaError::BadExponent { e } => write!(f, "RSA exponent e = {e} is not odd and >= 3"),
            RsaError::BadMdash { stored, expected } => write!(
                f,
                "RSA mdash at offset 808 is 0x{stored:08x}, expected -n^-1 mod 2^32 = 0x{expected:08x}"
            ),
            RsaError::BadRinv => f.write_str("RSA rinv at offset 424 is not R^2 mod n"),
            RsaError::SignatureOutOfRange => f.write_str("RSA signature is not below n"),
            RsaError::Mismatch => {
                f.write_str("RSA-PSS signature does not match the image digest and key")
            }
        }
    }
}

fn limbs(le: &[u8; RSA_LEN]) -> Limbs {
    let mut l = [0u32; LIMBS];
    for (i, c) in le.chunks_exact(4).enumerate() {
        l[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    l
}

fn to_le(l: &Limbs) -> [u8; RSA_LEN] {
    let mut out = [0u8; RSA_LEN];
    for (i, v) in l.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// a < b.
fn less(a: &Limbs, b: &Limbs) -> bool {
    for i in (0..LIMBS).rev() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    false
}

/// a -= b (mod 2^3072); returns the borrow.
fn sub_assign(a: &mut Limbs, b: &Limbs) -> bool {
    let mut borrow = 0u64;
    for i in 0..LIMBS {
        let d = (a[i] as u64).wrapping_sub(b[i] as u64).wrapping_sub(borrow);
        a[i] = d as u32;
        borrow = (d >> 63) & 1;
    }
    borrow != 0
}

/// a · b · R⁻¹ mod n for a, b < n (CIOS Montgomery multiplication).
fn mont_mul(a: &Limbs, b: &Limbs, n: &Limbs, mdash: u32) -> Limbs {
    let mut t = [0u32; LIMBS + 2];
    for &bi in b.iter() {
        let mut carry = 0u64;
        for j in 0..LIMBS {
            let s = t[j] as u64 + a[j] as u64 * bi as u64 + carry;
            t[j] = s as u32;
            carry = s >> 32;
        }
        let s = t[LIMBS] as u64 + carry;
        t[LIMBS] = s as u32;
        t[LIMBS + 1] = (s >> 32) as u32;
        let m = t[0].wrapping_mul(mdash);
        let s = t[0] as u64 + m as u64 * n[0] as u64;
        let mut carry = s >> 32;
        for j in 1..LIMBS {
            let s = t[j] as u64 + m as u64 * n[j] as u64 + carry;
            t[j - 1] = s as u32;
            carry = s >> 32;
        }
        let s = t[LIMBS] as u64 + carry;
        t[LIMBS - 1] = s as u32;
        t[LIMBS] = t[LIMBS + 1] + (s >> 32) as u32;
        t[LIMBS + 1] = 0;
    }
    let mut r = [0u32; LIMBS];
    r.copy_from_slice(&t[..LIMBS]);
    if t[LIMBS] != 0 || !less(&r, n) {
        sub_assign(&mut r, n);
    }
    r
}

/// −n⁻¹ mod 2³² for odd n0 (Newton iteration: each step doubles the correct low bits).
pub fn mdash_of(n0: u32) -> u32 {
    let mut inv: u32 = 1;
    for _ in 0..5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}

fn check_modulus(n: &Limbs) -> Result<(), RsaError> {
    if n[0] & 1 == 0 || n[LIMBS - 1] >> 31 == 0 {
        return Err(RsaError::BadModulus);
    }
    Ok(())
}

/// rinv = R² mod n and mdash for a modulus (little-endian), as espsecure's
/// `_get_sbv2_rsa_primitives` computes them: what the host signer writes into a block.
pub fn montgomery_params(n_le: &[u8; RSA_LEN]) -> Result<([u8; RSA_LEN], u32), RsaError> {
    let n = limbs(n_le);
    check_modulus(&n)?;
    // 2^6144 mod n by doubling 1 6144 times, reducing each step (r < n, so 2r < 2n).
    let mut r = [0u32; LIMBS];
    r[0] = 1;
    for _ in 0..2 * RSA_LEN * 8 {
        let mut carry = 0u32;
        for v in r.iter_mut() {
            let next = *v >> 31;
            *v = (*v << 1) | carry;
            carry = next;
        }
        if carry != 0 || !less(&r, &n) {
            sub_assign(&mut r, &n);
        }
    }
    Ok((to_le(&r), mdash_of(n[0])))
}

/// Checks the key's Montgomery constants, computes sig^e mod n and returns it big-endian
/// (the PSS encoded message EM).
fn public_op(
    n_le: &[u8; RSA_LEN],
    e: u32,
    rinv_le: &[u8; RSA_LEN],
    mdash: u32,
    sig_le: &[u8; RSA_LEN],
) -> Result<[u8; RSA_LEN], RsaError> {
    let n = limbs(n_le);
    check_modulus(&n)?;
    if e < 3 || e & 1 == 0 {
        return Err(RsaError::BadExponent { e });
    }
    let expected = mdash_of(n[0]);
    if mdash != expected {
        return Err(RsaError::BadMdash {
            stored: mdash,
            expected,
        });
    }
    let rinv = limbs(rinv_le);
    let mut one = [0u32; LIMBS];
    one[0] = 1;
    // rinv < n and mont(mont(rinv, 1), 1) == 1  <=>  rinv == R² mod n.
    if !less(&rinv, &n) || mont_mul(&mont_mul(&rinv, &one, &n, mdash), &one, &n, mdash) != one {
        return Err(RsaError::BadRinv);
    }
    let s = limbs(sig_le);
    if !less(&s, &n) {
        return Err(RsaError::SignatureOutOfRange);
    }
    let sm = mont_mul(&s, &rinv, &n, mdash); // s·R mod n
    let mut acc = sm;
    let top = 31 - e.leading_zeros();
    for bit in (0..top).rev() {
        acc = mont_mul(&acc, &acc, &n, mdash);
        if (e >> bit) & 1 == 1 {
            acc = mont_mul(&acc, &sm, &n, mdash);
        }
    }
    let m = to_le(&mont_mul(&acc, &one, &n, mdash));
    let mut em = [0u8; RSA_LEN];
    for (i, b) in m.iter().enumerate() {
        em[RSA_LEN - 1 - i] = *b;
    }
    Ok(em)
}

/// EMSA-PSS-VERIFY for a 3072-bit modulus (emBits = 3071, emLen = 384), SHA-256, salt 32.
fn pss_verify(em: &[u8; RSA_LEN], m_hash: &[u8; HASH_LEN]) -> Result<(), RsaError> {
    const DB_LEN: usize = RSA_LEN - HASH_LEN - 1;
    if em[RSA_LEN - 1] != 0xBC {
        return Err(RsaError::Mismatch);
    }
    let (masked_db, rest) = em.split_at(DB_LEN);
    let h: &[u8] = &rest[..HASH_LEN];
    // 8·emLen − emBits = 1 leftmost bit must be zero.
    if masked_db[0] & 0x80 != 0 {
        return Err(RsaError::Mismatch);
    }
    let mut db = [0u8; DB_LEN];
    db.copy_from_slice(masked_db);
    // MGF1-SHA-256(H, DB_LEN) xor'ed into DB.
    for (counter, chunk) in db.chunks_mut(HASH_LEN).enumerate() {
        let mask: [u8; HASH_LEN] = Sha256::new()
            .chain_update(h)
            .chain_update((counter as u32).to_be_bytes())
            .finalize()
            .into();
        for (d, m) in chunk.iter_mut().zip(mask.iter()) {
            *d ^= m;
        }
    }
    db[0] &= 0x7F;
    let ps_len = DB_LEN - PSS_SALT_LEN - 1;
    if db[..ps_len].iter().any(|&b| b != 0) || db[ps_len] != 0x01 {
        return Err(RsaError::Mismatch);
    }
    let salt = &db[ps_len + 1..];
    let h2: [u8; HASH_LEN] = Sha256::new()
        .chain_update([0u8; 8])
        .chain_update(m_hash)
        .chain_update(salt)
        .finalize()
        .into();
    if h2[..] != *h {
        return Err(RsaError::Mismatch);
    }
    Ok(())
}

/// Verifies an RSA-3072-PSS block's signature over `digest` (SHA-256 of the signed data).
pub fn verify(
    n: &[u8; RSA_LEN],
    e: u32,
    rinv: &[u8; RSA_LEN],
    mdash: u32,
    signature: &[u8; RSA_LEN],
    digest: &[u8; 32],
) -> Result<(), RsaError> {
    let em = public_op(n, e, rinv, mdash, signature)?;
    pss_verify(&em, digest)
}

impl core::error::Error for RsaError {}
