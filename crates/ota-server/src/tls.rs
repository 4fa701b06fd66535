//! TLS for `ota serve`: a certificate chain and key from PEM files, or a freshly generated
//! pair for the bind address (a small CA plus a server certificate signed by it). The CA's PEM
//! is what a device pins (config item `cert = "…"`, ADF's `cert_pem`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::ServeError;

/// ALPN: HTTP/1.1 only (the server speaks HTTP/1.1).
const ALPN_HTTP11: &[u8] = b"http/1.1";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config from a certificate chain and a private key.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    what: &str,
) -> Result<Arc<ServerConfig>, ServeError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(format!("{what}: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| ServeError::Tls(format!("{what}: {e}")))?;
    cfg.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(cfg))
}

/// `--tls-cert CERT --tls-key KEY`: PEM files (the chain, leaf first; a PKCS#8, PKCS#1 or SEC1 key).
pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ServeError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| ServeError::Tls(format!("reading {}: {e}", p.display())))
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(ServeError::Tls(format!(
            "{}: no CERTIFICATE block in the PEM file",
            cert.display()
        )));
    }
    let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| {
            ServeError::Tls(format!(
                "{}: no PRIVATE KEY block in the PEM file",
                key.display()
            ))
        })?;
    server_config(
        chain,
        key_der,
        &format!("{} / {}", cert.display(), key.display()),
    )
}

/// What `--tls-self-signed` produced.
pub struct SelfSigned {
    pub config: Arc<ServerConfig>,
    /// The CA certificate to pin on devices.
    pub ca_pem: PathBuf,
    /// The server certificate (leaf) and its key, for reuse with `--tls-cert/--tls-key`.
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

/// Generate a CA and a server certificate for `ip` (plus `localhost`), write `ca.pem`,
/// `cert.pem` and `key.pem` into `out_dir` (created if needed; the key is written 0600).
pub fn self_signed(ip: IpAddr, out_dir: &Path) -> Result<SelfSigned, ServeError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| ServeError::Tls(format!("generating a certificate: {e}"));
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("ota serve CA for {ip}"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;

    let key = KeyPair::generate().map_err(err)?;
    let mut names = vec![ip.to_string()];
    if ip.is_loopback() {
        names.push("localhost".to_string());
    }
    let mut params = CertificateParams::new(names).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, ip.to_string());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;

    std::fs::create_dir_all(out_dir)
        .map_err(|e| ServeError::Tls(format!("creating {}: {e}", out_dir.display())))?;
    let write = |name: &str, text: &str, private: bool| -> Result<PathBuf, ServeError> {
        let p = out_dir.join(name);
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o
            .open(&p)
            .map_err(|e| ServeError::Tls(format!("writing {}: {e}", p.display())))?;
        std::io::Write::write_all(&mut f, text.as_bytes())
            .map_err(|e| ServeError::Tls(format!("writing {}: {e}", p.display())))?;
        Ok(p)
    };
    let ca_pem = write("ca.pem", &ca.pem(), false)?;
    let cert_pem = write("cert.pem", &format!("{}{}", cert.pem(), ca.pem()), false)?;
    let key_pem = write("key.pem", &key.serialize_pem(), true)?;
    let config = server_config(
        vec![cert.der().clone(), ca.der().clone()],
        PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| ServeError::Tls(format!("generated key: {e}")))?,
        "generated certificate",
    )?;
    Ok(SelfSigned {
        config,
        ca_pem,
        cert_pem,
        key_pem,
    })
}
