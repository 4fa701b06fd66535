//! The signed catalogue (`ota_catalogue::signed`): the document reader and `verify` over the
//! fuzzer's bytes as a whole document, and over the fuzzer's bytes as a payload signed with a
//! fixed key (so the fuzzer reaches the payload parser behind a valid signature), and the PEM
//! key readers. No panic; a document `verify` accepts reads as the same catalogue without it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_catalogue::signed::{self, Algorithm, PublicKey, SigningKey};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, bytes)) = data.split_first() else {
        return;
    };
    let alg = if ctl & 1 == 0 {
        Algorithm::Ed25519
    } else {
        Algorithm::EcdsaP256
    };
    let Some(key) = SigningKey::from_secret_bytes(alg, &[7; 32]) else {
        return;
    };
    let public = key.public_key();
    let last = (ctl & 2 != 0).then_some(u64::from(ctl) << 40);

    // The bytes as a document.
    let plain = signed::read_document(bytes);
    if let Ok(v) = signed::verify(bytes, &public, last) {
        assert_eq!(plain.map(|d| d.into_catalogue()), Ok(v.catalogue));
    }

    // The bytes as a payload behind a valid signature.
    let b64 = |b: &[u8]| {
        use base64ct::{Base64, Encoding};
        Base64::encode_string(b)
    };
    let doc = format!(
        "{{\"signed_catalogue\":1,\"alg\":\"{}\",\"key_id\":\"{}\",\"signature\":\"{}\",\"payload\":\"{}\"}}",
        alg.name(),
        public.key_id_hex(),
        b64(&key.sign_bytes(bytes)),
        b64(bytes)
    );
    match signed::verify(doc.as_bytes(), &public, last) {
        Ok(v) => assert!(last.is_none_or(|l| v.serial >= l)),
        Err(e) => assert!(
            matches!(
                e,
                signed::VerifyError::Payload { .. }
                    | signed::VerifyError::NoSerial
                    | signed::VerifyError::Replayed { .. }
                    | signed::VerifyError::TooLarge { .. }
            ),
            "a valid signature refused for another reason: {e}"
        ),
    }

    // The bytes as a key file.
    let _ = PublicKey::from_pem(bytes);
    let _ = SigningKey::from_pem(bytes);
});
