//! Unit tests of the signed catalogue: both algorithms, openssl's key files, every refusal.

use super::*;
use crate::{CatalogueEntry, EntryKind, CATALOGUE_FORMAT};
use alloc::vec;

// Keys written by OpenSSL 3.0 (`openssl genpkey -algorithm ed25519`, `openssl ecparam -name
// prime256v1 -genkey`, `openssl pkey -pubout`), kept here as text so the unit tests need no tool.
const ED_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIMgqfVEww+nRRO/dculWD1fe3AfCl+AWZdwCUodLTEQ1
-----END PRIVATE KEY-----
";
const EC_SEC1: &str = "-----BEGIN EC PARAMETERS-----
BggqhkjOPQMBBw==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIPYjwXvyYPUzVpRR+63HxwK1QZeRJ6OiE0CVBBFMvj25oAoGCCqGSM49
AwEHoUQDQgAE+YkK0UXAXnMJOQJzUmmB52GyIheVOLi/M9OktlhbWhZQBAVRqrBX
ETXfRKwKzf8+yp++0KT9xbBGPTqEmfKpsQ==
-----END EC PRIVATE KEY-----
";
const EC_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+YkK0UXAXnMJOQJzUmmB52GyIheV
OLi/M9OktlhbWhZQBAVRqrBXETXfRKwKzf8+yp++0KT9xbBGPTqEmfKpsQ==
-----END PUBLIC KEY-----
";
const ED_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAvNIiH+LFk5hYGa94z1mHJDO3nOYR3IOZLZ6NLAPcBPY=
-----END PUBLIC KEY-----
";
/// An RSA public key and a P-384 one (another algorithm, another curve; openssl 3.0).
const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBANM6fdD4tvryKZIwIn0iVIV+Anatqd60
k8jJPnGU1UAh7g0XknyElUaoi66dEjrh6wYAJHIKR+FDDpIiqx50Cg8CAwEAAQ==
-----END PUBLIC KEY-----
";
const P384_PUB: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEng02yWm+hIvfA5ml3pQV1xYDfRVC6p4T
Mk9+7Iahsp4fhIAvtFU9TPP3bk5df9mYsQXcyrD7tGcjIcsw2apECEHUhX3wWwCt
lSJXlCRNkYkkpWNOpeBWHUKRu4/t7Lzj
-----END PUBLIC KEY-----
";

fn cat() -> Catalogue {
    Catalogue {
        format: CATALOGUE_FORMAT,
        serial: None,
        entries: vec![CatalogueEntry {
            path: "/fw/app.bin".into(),
            kind: EntryKind::App,
            size: 1234,
            sha256: "ab".repeat(32),
            chip: Some("esp32".into()),
            project: Some("demo".into()),
            version: Some("v1.0.0".into()),
            secure_version: Some(0),
            idf_ver: None,
            format: None,
            files: None,
            error: None,
            deltas: Vec::new(),
        }],
    }
}

fn keys() -> [SigningKey; 2] {
    [
        SigningKey::from_pem(ED_PKCS8.as_bytes()).unwrap(),
        SigningKey::from_pem(EC_SEC1.as_bytes()).unwrap(),
    ]
}

#[test]
fn openssl_key_files_load_and_public_halves_match() {
    let [ed, ec] = keys();
    assert_eq!(ed.algorithm(), Algorithm::Ed25519);
    assert_eq!(ec.algorithm(), Algorithm::EcdsaP256);
    assert_eq!(
        PublicKey::from_pem(ED_PUB.as_bytes()).unwrap(),
        ed.public_key()
    );
    assert_eq!(
        PublicKey::from_pem(EC_PUB.as_bytes()).unwrap(),
        ec.public_key()
    );
    // A private key file also gives its public key.
    assert_eq!(
        PublicKey::from_pem(EC_SEC1.as_bytes()).unwrap(),
        ec.public_key()
    );
    // Round trips: PKCS#8 and SPKI as written by us read back the same.
    for k in [&ed, &ec] {
        let again = SigningKey::from_pem(k.to_pkcs8_pem().as_bytes()).unwrap();
        assert_eq!(again.public_key(), k.public_key());
        let p = PublicKey::from_pem(k.public_key().to_pem().as_bytes()).unwrap();
        assert_eq!(p, k.public_key());
    }
    // Our SPKI PEM is byte-for-byte what openssl wrote.
    assert_eq!(ec.public_key().to_pem(), EC_PUB);
    assert_eq!(ed.public_key().to_pem(), ED_PUB);
}

#[test]
fn key_id_is_sha256_of_the_spki_der() {
    let [ed, _] = keys();
    let body: String = ED_PUB.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = Base64::decode_vec(&body).unwrap();
    assert_eq!(
        ed.public_key().key_id(),
        <[u8; 32]>::from(Sha256::digest(&der))
    );
    assert_eq!(ed.public_key().key_id_hex().len(), 64);
}

#[test]
fn bad_key_files_are_named() {
    let e = PublicKey::from_pem(RSA_PUB.as_bytes()).unwrap_err();
    assert!(
        e.to_string().contains("1.2.840.113549.1.1.1"),
        "the RSA OID is named: {e}"
    );
    let e = PublicKey::from_pem(P384_PUB.as_bytes()).unwrap_err();
    assert!(
        e.to_string().contains("1.3.132.0.34"),
        "the P-384 OID is named: {e}"
    );
    assert!(matches!(
        SigningKey::from_pem(ED_PUB.as_bytes()),
        Err(KeyError::Unsupported { .. })
    ));
    assert!(matches!(
        PublicKey::from_pem(b"hello"),
        Err(KeyError::NoKeyBlock { .. })
    ));
    let cert = "-----BEGIN CERTIFICATE-----\nMAEC\n-----END CERTIFICATE-----\n";
    let e = PublicKey::from_pem(cert.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("CERTIFICATE"), "{e}");
    let open = "-----BEGIN PUBLIC KEY-----\nMAEC\n";
    assert!(matches!(
        PublicKey::from_pem(open.as_bytes()),
        Err(KeyError::Unterminated { .. })
    ));
    let bad = "-----BEGIN PUBLIC KEY-----\nMA!C\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        PublicKey::from_pem(bad.as_bytes()),
        Err(KeyError::Base64 { .. })
    ));
    let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAEC\n-----END ENCRYPTED PRIVATE KEY-----\n";
    assert_eq!(
        SigningKey::from_pem(enc.as_bytes()).unwrap_err(),
        KeyError::Encrypted
    );
    let big = vec![b'a'; MAX_PEM_BYTES + 1];
    assert!(matches!(
        PublicKey::from_pem(&big),
        Err(KeyError::TooLarge { .. })
    ));
    assert_eq!(PublicKey::from_pem(&[0xff, 0xfe]), Err(KeyError::NotText));
}

#[test]
fn signed_catalogue_verifies_with_both_algorithms() {
    for k in keys() {
        let doc = k.sign(&cat(), 42);
        let v = verify(&doc.json, &k.public_key(), None).unwrap();
        assert_eq!(v.serial, 42);
        assert_eq!(v.catalogue.entries, cat().entries);
        assert_eq!(v.algorithm, k.algorithm());
        assert_eq!(v.key_id, k.public_key().key_id_hex());
        // A device without a key reads the same catalogue.
        assert_eq!(Catalogue::from_json(&doc.json).unwrap(), v.catalogue);
        // The same serial again (the same document) and a newer one are accepted.
        assert!(verify(&doc.json, &k.public_key(), Some(42)).is_ok());
        assert!(verify(&doc.json, &k.public_key(), Some(41)).is_ok());
    }
}

#[test]
fn every_refusal_has_its_reason() {
    let [ed, ec] = keys();
    let doc = ed.sign(&cat(), 7);
    let key = ed.public_key();

    // Unsigned.
    assert_eq!(
        verify(&cat().to_json(), &key, None),
        Err(VerifyError::Unsigned)
    );
    // Not JSON at all.
    assert!(matches!(
        verify(b"\x00garbage", &key, None),
        Err(VerifyError::Malformed { .. })
    ));
    // Replay of an older serial.
    assert_eq!(
        verify(&doc.json, &key, Some(8)),
        Err(VerifyError::Replayed { serial: 7, last: 8 })
    );
    // Another key of the same algorithm.
    let other = SigningKey::from_secret_bytes(Algorithm::Ed25519, &[9; 32]).unwrap();
    assert!(matches!(
        verify(&doc.json, &other.public_key(), None),
        Err(VerifyError::WrongKey { .. })
    ));
    // Another algorithm.
    assert!(matches!(
        verify(&doc.json, &ec.public_key(), None),
        Err(VerifyError::Algorithm { .. })
    ));
    // A key id that claims the device's key over another key's signature.
    let forged = String::from_utf8(other.sign(&cat(), 7).json)
        .unwrap()
        .replace(&other.public_key().key_id_hex(), &key.key_id_hex());
    assert_eq!(
        verify(forged.as_bytes(), &key, None),
        Err(VerifyError::BadSignature {
            key_id: key.key_id_hex()
        })
    );
    // A future envelope format.
    let text = String::from_utf8(doc.json.clone()).unwrap();
    let future = text.replace("\"signed_catalogue\": 1", "\"signed_catalogue\": 2");
    assert_eq!(
        verify(future.as_bytes(), &key, None),
        Err(VerifyError::Format { found: 2 })
    );
    // An unknown key in the envelope.
    let extra = text.replacen('{', "{\"x\": 1,", 1);
    assert!(matches!(
        verify(extra.as_bytes(), &key, None),
        Err(VerifyError::Malformed { .. })
    ));
    // A signed payload without a serial (signed by hand).
    let payload = cat().to_json();
    let env = Envelope {
        signed_catalogue: SIGNED_FORMAT,
        alg: "ed25519".into(),
        key_id: key.key_id_hex(),
        signature: Base64::encode_string(&ed.sign_bytes(&payload)),
        payload: Base64::encode_string(&payload),
    };
    let no_serial = serde_json::to_vec(&env).unwrap();
    assert_eq!(verify(&no_serial, &key, None), Err(VerifyError::NoSerial));
    // A signed payload that is not a catalogue.
    let env = Envelope {
        signature: Base64::encode_string(&ed.sign_bytes(b"[1,2]")),
        payload: Base64::encode_string(b"[1,2]"),
        ..env
    };
    assert!(matches!(
        verify(&serde_json::to_vec(&env).unwrap(), &key, None),
        Err(VerifyError::Payload { .. })
    ));
}

#[test]
fn any_changed_byte_of_the_document_is_refused() {
    for k in keys() {
        let doc = k.sign(&cat(), 1).json;
        let key = k.public_key();
        let mut accepted = 0;
        for i in 0..doc.len() {
            for flip in [0x01u8, 0x20] {
                let mut d = doc.clone();
                d[i] ^= flip;
                if let Ok(v) = verify(&d, &key, None) {
                    // Only changes that leave the signed bytes as they were may pass (JSON
                    // whitespace, the case of a hex digit of key_id).
                    assert_eq!(v.catalogue.entries, cat().entries, "byte {i} ^ {flip:#x}");
                    accepted += 1;
                }
            }
        }
        // Whitespace and key_id case are all that can change.
        assert!(accepted < doc.len() / 2, "{accepted} of {}", doc.len());
    }
}

#[test]
fn the_signature_covers_the_context_and_the_payload_exactly() {
    let [ed, ec] = keys();
    for k in [&ed, &ec] {
        let sig = k.sign_bytes(b"abc");
        assert_eq!(sig.len(), SIGNATURE_BYTES);
        assert!(k.public_key().verifies(b"abc", &sig));
        assert!(!k.public_key().verifies(b"abd", &sig));
    }
    // Ed25519 is deterministic (RFC 8032), as is ECDSA with RFC 6979.
    assert_eq!(ed.sign_bytes(b"abc"), ed.sign_bytes(b"abc"));
    assert_eq!(ec.sign_bytes(b"abc"), ec.sign_bytes(b"abc"));
}

#[test]
fn secret_bytes_outside_the_p256_order_are_refused() {
    assert!(SigningKey::from_secret_bytes(Algorithm::EcdsaP256, &[0xff; 32]).is_none());
    assert!(SigningKey::from_secret_bytes(Algorithm::EcdsaP256, &[0; 32]).is_none());
    assert!(SigningKey::from_secret_bytes(Algorithm::EcdsaP256, &[1; 32]).is_some());
}
