//! The signed catalogue against OpenSSL as the judge: keys made by `openssl genpkey` /
//! `openssl ecparam`, our signatures verified by `openssl pkeyutl` / `openssl dgst`, and
//! OpenSSL's signatures over a payload verified by `signed::verify`. Prints `SKIP: ...` without
//! an `openssl` binary.

use std::path::Path;
use std::process::Command;

use base64ct::{Base64, Encoding};
use ota_catalogue::signed::{self, PublicKey, SigningKey, SIGNING_CONTEXT};
use ota_catalogue::{Catalogue, CatalogueEntry, EntryKind, CATALOGUE_FORMAT};

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl")
}

fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: openssl not found");
    }
    ok
}

#[track_caller]
fn run(args: &[&str]) {
    let o = openssl(args);
    assert!(
        o.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn catalogue() -> Catalogue {
    Catalogue {
        format: CATALOGUE_FORMAT,
        serial: None,
        entries: vec![CatalogueEntry {
            path: "/flash_tone.bin".into(),
            kind: EntryKind::Tone,
            size: 4096,
            sha256: "0f".repeat(32),
            chip: None,
            project: Some("ESP_TONE_BIN".into()),
            version: Some("v1.0".into()),
            secure_version: None,
            idf_ver: None,
            format: Some(1),
            files: Some(3),
            error: None,
            deltas: Vec::new(),
        }],
    }
}

/// (private, public) key files made by openssl for `alg`.
fn keys(dir: &Path, alg: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let k = dir.join(format!("{alg}.pem"));
    let p = dir.join(format!("{alg}.pub.pem"));
    match alg {
        "ed25519" => run(&["genpkey", "-algorithm", "ed25519", "-out", s(&k)]),
        _ => run(&["ecparam", "-name", "prime256v1", "-genkey", "-out", s(&k)]),
    }
    run(&["pkey", "-in", s(&k), "-pubout", "-out", s(&p)]);
    (k, p)
}

#[test]
fn openssl_verifies_our_signatures_and_we_verify_openssls() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for alg in ["ed25519", "p256"] {
        let (k, p) = keys(dir.path(), alg);
        let key = SigningKey::from_pem(&std::fs::read(&k).unwrap()).unwrap();
        let public = PublicKey::from_pem(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(key.public_key(), public, "{alg}");

        // The key id is what `openssl pkey -pubin -outform DER | sha256sum` gives.
        let der = dir.path().join("pub.der");
        run(&[
            "pkey",
            "-pubin",
            "-in",
            s(&p),
            "-outform",
            "DER",
            "-out",
            s(&der),
        ]);
        let id: [u8; 32] =
            <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&der).unwrap()).into();
        assert_eq!(public.key_id(), id);

        // Ours, checked by openssl over the context and the payload.
        let doc = key.sign(&catalogue(), 1_796_000_000_000);
        let env: serde_json::Value = serde_json::from_slice(&doc.json).unwrap();
        let payload = Base64::decode_vec(env["payload"].as_str().unwrap()).unwrap();
        let sig = Base64::decode_vec(env["signature"].as_str().unwrap()).unwrap();
        let msg = dir.path().join("msg");
        std::fs::write(&msg, [SIGNING_CONTEXT, &payload[..]].concat()).unwrap();
        let sig_file = dir.path().join("sig");
        if alg == "ed25519" {
            std::fs::write(&sig_file, &sig).unwrap();
            run(&[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                s(&p),
                "-rawin",
                "-in",
                s(&msg),
                "-sigfile",
                s(&sig_file),
            ]);
        } else {
            let der_sig = p256::ecdsa::Signature::from_slice(&sig).unwrap().to_der();
            std::fs::write(&sig_file, der_sig.as_bytes()).unwrap();
            run(&[
                "dgst",
                "-sha256",
                "-verify",
                s(&p),
                "-signature",
                s(&sig_file),
                s(&msg),
            ]);
        }
        // One payload byte changed: openssl refuses it too.
        let mut bad = std::fs::read(&msg).unwrap();
        let last = bad.len() - 3;
        bad[last] ^= 1;
        std::fs::write(&msg, &bad).unwrap();
        let o = if alg == "ed25519" {
            openssl(&[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                s(&p),
                "-rawin",
                "-in",
                s(&msg),
                "-sigfile",
                s(&sig_file),
            ])
        } else {
            openssl(&[
                "dgst",
                "-sha256",
                "-verify",
                s(&p),
                "-signature",
                s(&sig_file),
                s(&msg),
            ])
        };
        assert!(
            !o.status.success(),
            "{alg}: openssl accepted an altered payload"
        );

        // Openssl's signature over our payload, in an envelope made by hand: we accept it.
        std::fs::write(&msg, [SIGNING_CONTEXT, &payload[..]].concat()).unwrap();
        let their_sig = if alg == "ed25519" {
            run(&[
                "pkeyutl",
                "-sign",
                "-inkey",
                s(&k),
                "-rawin",
                "-in",
                s(&msg),
                "-out",
                s(&sig_file),
            ]);
            std::fs::read(&sig_file).unwrap()
        } else {
            run(&[
                "dgst",
                "-sha256",
                "-sign",
                s(&k),
                "-out",
                s(&sig_file),
                s(&msg),
            ]);
            let der = std::fs::read(&sig_file).unwrap();
            p256::ecdsa::Signature::from_der(&der)
                .unwrap()
                .to_bytes()
                .to_vec()
        };
        let envelope = serde_json::json!({
            "signed_catalogue": 1,
            "alg": env["alg"],
            "key_id": public.key_id_hex(),
            "signature": Base64::encode_string(&their_sig),
            "payload": env["payload"],
        });
        let bytes = serde_json::to_vec(&envelope).unwrap();
        let v = signed::verify(&bytes, &public, None).unwrap();
        assert_eq!(v.serial, 1_796_000_000_000);
        assert_eq!(v.catalogue.entries, catalogue().entries);
    }
}
