//! `--tls-self-signed`: the CA in the TLS folder is reused across starts (devices pin it), the
//! server certificate covers the bind address and every `--tls-san`, and a CA that cannot be
//! used is an error that leaves it in place. Checked with a rustls client pinning the CA, and
//! with `openssl verify` where it is installed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ota_server::{Background, ServeError, ServeOptions, Tls};
use rustls::pki_types::{CertificateDer, ServerName};

fn start(www: &Path, tls_dir: &Path, sans: &[&str]) -> Result<Background, ServeError> {
    let mut o = ServeOptions::dir(www);
    o.bind = "127.0.0.1:0".parse().unwrap();
    o.access_log = false;
    o.tls = Tls::SelfSigned {
        dir: tls_dir.to_path_buf(),
        sans: sans.iter().map(|s| s.to_string()).collect(),
    };
    Background::start(o)
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(path).unwrap();
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .unwrap()
}

/// GET /fw.bin over TLS, trusting only `ca`, checking the certificate for `name`.
fn https_get(addr: SocketAddr, ca: &Path, name: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca) {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), server_name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(b"GET /fw.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // Servers may close without close_notify; what matters is what arrived.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {text}"));
    }
    let body = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    Ok(out[body..].to_vec())
}

fn www() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("fw.bin"), b"firmware").unwrap();
    d
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    ["ca.pem", "ca-key.pem"]
        .iter()
        .filter_map(|n| {
            let p = dir.join(n);
            std::fs::read(&p).ok().map(|b| (p, b))
        })
        .collect()
}

#[test]
fn self_signed_reuses_the_ca_in_the_tls_dir_and_covers_every_tls_san() {
    let www = www();
    let tmp = tempfile::tempdir().unwrap();
    let tls_dir = tmp.path().join("tls");
    let srv = start(www.path(), &tls_dir, &["fw.example", "192.0.2.7"]).unwrap();
    let ca = tls_dir.join("ca.pem");
    assert_eq!(srv.info.ca_pem.as_deref(), Some(ca.as_path()));
    assert!(srv
        .info
        .tls_note
        .as_deref()
        .unwrap()
        .contains("created a new CA"));
    let a = srv.info.addr;
    for name in ["127.0.0.1", "localhost", "fw.example", "192.0.2.7"] {
        assert_eq!(https_get(a, &ca, name).unwrap(), b"firmware", "{name}");
    }
    let err = https_get(a, &ca, "other.example").unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("not valid"),
        "{err}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tls_dir.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the CA key is private");
    let before = files(&tls_dir);
    assert_eq!(before.len(), 2);
    drop(srv);

    // Started again with other names: the same CA, a new certificate.
    let srv = start(www.path(), &tls_dir, &["fw2.example"]).unwrap();
    assert_eq!(files(&tls_dir), before, "the CA was replaced");
    assert!(srv
        .info
        .tls_note
        .as_deref()
        .unwrap()
        .contains("reusing the CA"));
    assert_eq!(
        https_get(srv.info.addr, &ca, "fw2.example").unwrap(),
        b"firmware"
    );
    assert!(https_get(srv.info.addr, &ca, "fw.example").is_err());
    // cert.pem is the leaf then the pinned CA.
    let chain = pem_certs(&tls_dir.join("cert.pem"));
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], pem_certs(&ca)[0]);
}

#[test]
fn tls_san_refuses_names_that_are_neither_hosts_nor_addresses() {
    let www = www();
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["two words", "a..b", "-x.example", "x_y.example", ""] {
        let Err(e) = start(www.path(), &tmp.path().join("tls"), &[bad]) else {
            panic!("{bad:?} accepted");
        };
        assert!(e.to_string().contains("--tls-san"), "{bad:?}: {e}");
    }
}

/// Files to put in a TLS folder: (name, bytes).
type Files = Vec<(&'static str, Vec<u8>)>;

#[test]
fn self_signed_refuses_an_unusable_ca_and_leaves_it_in_place() {
    let www = www();
    let tmp = tempfile::tempdir().unwrap();
    // Two good CAs to mix up.
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    drop(start(www.path(), &one, &[]).unwrap());
    drop(start(www.path(), &two, &[]).unwrap());
    let read = |d: &Path, n: &str| std::fs::read(d.join(n)).unwrap();

    let cases: Vec<(&str, Files, &str)> = vec![
        (
            "garbage certificate",
            vec![
                ("ca.pem", b"not a pem".to_vec()),
                ("ca-key.pem", read(&one, "ca-key.pem")),
            ],
            "no CERTIFICATE",
        ),
        (
            "corrupt certificate",
            vec![
                (
                    "ca.pem",
                    b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n".to_vec(),
                ),
                ("ca-key.pem", read(&one, "ca-key.pem")),
            ],
            "ca.pem",
        ),
        (
            "garbage key",
            vec![
                ("ca.pem", read(&one, "ca.pem")),
                ("ca-key.pem", b"junk".to_vec()),
            ],
            "ca-key.pem",
        ),
        (
            "the key of another CA",
            vec![
                ("ca.pem", read(&one, "ca.pem")),
                ("ca-key.pem", read(&two, "ca-key.pem")),
            ],
            "does not belong",
        ),
        (
            "a server certificate as the CA",
            vec![
                ("ca.pem", read(&one, "cert.pem")),
                ("ca-key.pem", read(&one, "key.pem")),
            ],
            "not a CA",
        ),
        (
            "no key",
            vec![("ca.pem", read(&one, "ca.pem"))],
            "no ca-key.pem",
        ),
        (
            "no certificate",
            vec![("ca-key.pem", read(&one, "ca-key.pem"))],
            "no ca.pem",
        ),
    ];
    for (label, put, want) in cases {
        let dir = tmp.path().join(label.replace(' ', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        for (n, b) in &put {
            std::fs::write(dir.join(n), b).unwrap();
        }
        let before = files(&dir);
        let Err(e) = start(www.path(), &dir, &[]) else {
            panic!("{label}: started");
        };
        let msg = e.to_string();
        assert!(msg.contains(want), "{label}: {msg}");
        assert!(
            msg.contains("not replaced") || msg.contains("remove the folder"),
            "{label}: {msg}"
        );
        assert_eq!(files(&dir), before, "{label}: the CA files were changed");
    }
}

#[test]
fn self_signed_issues_from_a_ca_made_by_openssl() {
    let Ok(v) = std::process::Command::new("openssl")
        .arg("version")
        .output()
    else {
        println!("SKIP: openssl not installed");
        return;
    };
    assert!(v.status.success());
    let www = www();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    std::fs::create_dir(&dir).unwrap();
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/C=DE/O=Example Fleet/CN=Fleet Root CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .arg("-keyout")
        .arg(dir.join("ca-key.pem"))
        .arg("-out")
        .arg(dir.join("ca.pem"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let before = files(&dir);
    let srv = start(www.path(), &dir, &["fw.example"]).unwrap();
    assert_eq!(files(&dir), before);
    let ca = dir.join("ca.pem");
    assert_eq!(
        https_get(srv.info.addr, &ca, "fw.example").unwrap(),
        b"firmware"
    );
    // openssl agrees that the server certificate chains to the CA.
    let leaf = tmp.path().join("leaf.pem");
    let chain = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    let end = chain.find("-----END CERTIFICATE-----").unwrap() + 25;
    std::fs::write(&leaf, &chain[..end]).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "verify",
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "fw.example",
            "-CAfile",
        ])
        .arg(&ca)
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
