//! Tokens: target tokens (one per device), the gateway token (any device of the tenant) and the
//! admin token. Only their SHA-256 is kept (in the database for target tokens, in memory for the
//! others); a presented token is hashed and compared in constant time (`subtle`). Tokens are
//! never logged: the access log prints the request line only, and errors never quote them.
//!
//! Header forms as hawkBit's DDI takes them (eclipse-hawkbit `hawkbit-ddi` security:
//! `Authorization: TargetToken <token>` and `Authorization: GatewayToken <token>`); the admin API
//! takes `Authorization: Bearer <token>`.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Longest token accepted (anything longer is refused before hashing).
pub const MAX_TOKEN_LEN: usize = 256;
/// Random bytes in a generated token (hex-encoded: twice as many characters).
pub const TOKEN_BYTES: usize = 24;

/// A token's SHA-256.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Even the hash stays out of logs and debug output.
        f.write_str("TokenHash(..)")
    }
}

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn to_hex(self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<TokenHash> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(TokenHash(out))
    }
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// What an `Authorization` header presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    Target(TokenHash),
    Gateway(TokenHash),
    Bearer(TokenHash),
}

/// Why a header was not accepted (the message never contains the token).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization header")]
    Missing,
    #[error(
        "Authorization header: expected `TargetToken <t>`, `GatewayToken <t>` or `Bearer <t>`"
    )]
    Scheme,
    #[error("Authorization header: token longer than {MAX_TOKEN_LEN} characters or empty")]
    Length,
}

/// Parse an `Authorization` header value (scheme names are case-insensitive, as in RFC 9110).
pub fn parse(value: Option<&[u8]>) -> Result<Credential, AuthError> {
    let v = value.ok_or(AuthError::Missing)?;
    let v = std::str::from_utf8(v).map_err(|_| AuthError::Scheme)?;
    let (scheme, token) = v.trim().split_once(' ').ok_or(AuthError::Scheme)?;
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Length);
    }
    let h = TokenHash::of(token);
    if scheme.eq_ignore_ascii_case("TargetToken") {
        Ok(Credential::Target(h))
    } else if scheme.eq_ignore_ascii_case("GatewayToken") {
        Ok(Credential::Gateway(h))
    } else if scheme.eq_ignore_ascii_case("Bearer") {
        Ok(Credential::Bearer(h))
    } else {
        Err(AuthError::Scheme)
    }
}

/// A new random token (hex), from the operating system's generator.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut b)?;
    Ok(hex(&b))
}

/// Read a token file: the first line, trimmed; refused when empty or too long.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut s = String::new();
    f.take(MAX_TOKEN_LEN as u64 + 2)
        .read_to_string(&mut s)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let t = s.lines().next().unwrap_or("").trim().to_string();
    if t.is_empty() {
        return Err(format!("{}: the token file is empty", path.display()));
    }
    if t.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "{}: the token is longer than {MAX_TOKEN_LEN} characters",
            path.display()
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_one_line_bounded_and_not_empty() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("t");
        std::fs::write(&f, "  abc \nignored\n").unwrap();
        assert_eq!(read_token_file(&f).unwrap(), "abc");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_token_file(&f).unwrap_err().contains("empty"));
        std::fs::write(&f, "a".repeat(MAX_TOKEN_LEN + 1)).unwrap();
        assert!(read_token_file(&f).unwrap_err().contains("longer"));
        let e = read_token_file(&d.path().join("missing")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn parses_the_three_schemes_and_refuses_others() {
        let t = TokenHash::of("abc");
        assert_eq!(parse(Some(b"TargetToken abc")), Ok(Credential::Target(t)));
        assert_eq!(parse(Some(b"gatewaytoken abc")), Ok(Credential::Gateway(t)));
        assert_eq!(parse(Some(b"Bearer abc")), Ok(Credential::Bearer(t)));
        assert_eq!(parse(Some(b"Basic abc")), Err(AuthError::Scheme));
        assert_eq!(parse(Some(b"TargetToken")), Err(AuthError::Scheme));
        assert_eq!(parse(None), Err(AuthError::Missing));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(parse(Some(long.as_bytes())), Err(AuthError::Length));
    }

    #[test]
    fn hashes_round_trip_and_compare() {
        let a = TokenHash::of("secret");
        assert_eq!(TokenHash::from_hex(&a.to_hex()), Some(a));
        assert!(a.matches(&TokenHash::of("secret")));
        assert!(!a.matches(&TokenHash::of("secreT")));
        assert_eq!(TokenHash::from_hex("zz"), None);
        assert!(!format!("{a:?}").contains(&a.to_hex()));
        let t = new_token().unwrap();
        assert_eq!(t.len(), TOKEN_BYTES * 2);
        assert_ne!(t, new_token().unwrap());
    }
}
