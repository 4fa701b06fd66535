//! The pinned CA of an item (`cert` / `ca_pem`, ADF `cert_pem`) as the embassy driver's TLS
//! takes it: the DER bytes of the PEM's one `CERTIFICATE` block (RFC 7468 §2, base64 of RFC
//! 4648 §4), decoded without std.

use crate::prelude::*;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The value of one base64 character (RFC 4648 §4, table 1).
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn base64(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits, mut pad) = (0u32, 0u32, 0usize);
    for (i, c) in text.bytes().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            pad += 1;
            continue;
        }
        if pad > 0 {
            return Err(format!(
                "base64 text after `=` padding (byte {i} of the block)"
            ));
        }
        let v = sextet(c)
            .ok_or_else(|| format!("byte {i} of the block is not base64: {:?}", c as char))?;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if pad > 2 || bits >= 6 {
        return Err("the base64 text is truncated".to_string());
    }
    Ok(out)
}

/// The DER of the only certificate in `pem`. Errors say what is wrong: not UTF-8, no block,
/// an unterminated block, bad base64, or more than one certificate (this stack pins one CA).
pub fn single_certificate_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let text = core::str::from_utf8(pem).map_err(|e| format!("the PEM is not text: {e}"))?;
    let Some(start) = text.find(BEGIN) else {
        return Err("no CERTIFICATE block in the PEM".to_string());
    };
    let body = &text[start + BEGIN.len()..];
    let Some(end) = body.find(END) else {
        return Err(format!("the CERTIFICATE block has no `{END}` line"));
    };
    if body[end + END.len()..].contains(BEGIN) {
        return Err(
            "more than one CERTIFICATE block: the embassy stack pins exactly one CA".to_string(),
        );
    }
    let der = base64(&body[..end])?;
    if der.first() != Some(&0x30) {
        return Err("the CERTIFICATE block is not a DER SEQUENCE".to_string());
    }
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_block_decodes_and_bad_blocks_are_named() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nMAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(
            single_certificate_der(pem).unwrap(),
            vec![0x30, 0x01, 0x02, 0x03]
        );
        assert!(single_certificate_der(b"nothing")
            .unwrap_err()
            .contains("no CERTIFICATE"));
        let two = [&pem[..], &pem[..]].concat();
        assert!(single_certificate_der(&two)
            .unwrap_err()
            .contains("exactly one CA"));
        let bad = b"-----BEGIN CERTIFICATE-----\nMA!C\n-----END CERTIFICATE-----\n";
        assert!(single_certificate_der(bad)
            .unwrap_err()
            .contains("not base64"));
        let open = b"-----BEGIN CERTIFICATE-----\nMAEC\n";
        assert!(single_certificate_der(open)
            .unwrap_err()
            .contains("no `-----END"));
    }
}
