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
    /// The server certificate (leaf, then the CA) and its key, for reuse with
    /// `--tls-cert/--tls-key`.
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    /// The certificate's subject alternative names, as given.
    pub names: Vec<String>,
    /// Whether the CA was already in the folder (false: created now).
    pub ca_reused: bool,
}

/// File names in the `--tls-dir` folder.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
/// Largest PEM file read from the folder.
const MAX_PEM_BYTES: u64 = 64 * 1024;
/// Longest DNS name (RFC 1035 §2.3.4: 255 octets on the wire, 253 as text).
const MAX_DNS_NAME: usize = 253;

/// One subject alternative name from `--tls-san` (or the bind address).
fn san(name: &str) -> Result<rcgen::SanType, ServeError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(rcgen::SanType::IpAddress(ip));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let body = name.strip_prefix("*.").unwrap_or(name);
    if name.len() > MAX_DNS_NAME || !body.split('.').all(label_ok) {
        return Err(ServeError::Tls(format!(
            "--tls-san `{name}`: neither an IP address nor a DNS name (letters, digits, `-` \
             and dots, labels of 1 to 63 characters, at most {MAX_DNS_NAME} in all; `*.` allowed \
             in front)"
        )));
    }
    let ia5 = rcgen::Ia5String::try_from(name.to_string())
        .map_err(|e| ServeError::Tls(format!("--tls-san `{name}`: {e}")))?;
    Ok(rcgen::SanType::DnsName(ia5))
}

/// `--tls-self-signed`: a server certificate for `ip` (plus `localhost` on loopback) and each of
/// `extra_sans`, issued by the CA kept in `dir`. A CA already there (`ca.pem` and `ca-key.pem`)
/// is reused, because devices pin it; it is created (and the key written 0600) only when the
/// folder has neither file. A CA that is incomplete, unreadable, not a CA, expired or whose key
/// does not match is an error naming the file: it is never replaced. The server's `cert.pem`
/// (leaf then CA) and `key.pem` (0600) are written anew on every start.
pub fn self_signed(
    ip: IpAddr,
    dir: &Path,
    extra_sans: &[String],
) -> Result<SelfSigned, ServeError> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let err = |e: rcgen::Error| ServeError::Tls(format!("generating a certificate: {e}"));

    let mut names = vec![ip.to_string()];
    if ip.is_loopback() {
        names.push("localhost".to_string());
    }
    for n in extra_sans {
        let n = n.trim().to_string();
        if !names.iter().any(|m| m.eq_ignore_ascii_case(&n)) {
            names.push(n);
        }
    }
    let sans = names
        .iter()
        .map(|n| san(n))
        .collect::<Result<Vec<_>, _>>()?;

    std::fs::create_dir_all(dir)
        .map_err(|e| ServeError::Tls(format!("creating {}: {e}", dir.display())))?;
    let ca_cert_path = dir.join(CA_CERT_FILE);
    let ca_key_path = dir.join(CA_KEY_FILE);
    let (ca, ca_reused) = match ca_files(&ca_cert_path, &ca_key_path) {
        (true, true) => (load_ca(&ca_cert_path, &ca_key_path)?, true),
        (false, false) => match create_ca(ip, &ca_cert_path, &ca_key_path)? {
            Some(ca) => (ca, false),
            // Another `ota serve` created it meanwhile: use that one.
            None => (load_ca(&ca_cert_path, &ca_key_path)?, true),
        },
        (true, false) => {
            return Err(ServeError::Tls(format!(
                "{} has {CA_CERT_FILE} but no {CA_KEY_FILE}: a certificate cannot be issued from \
                 that CA without its key, and it is not replaced (devices may pin it). Put its \
                 key there as {CA_KEY_FILE} (PKCS#8 PEM), or serve an existing certificate with \
                 --tls-cert {} --tls-key {}, or remove the folder to create a new CA",
                dir.display(),
                dir.join(CERT_FILE).display(),
                dir.join(KEY_FILE).display()
            )))
        }
        (false, true) => {
            return Err(ServeError::Tls(format!(
                "{} has {CA_KEY_FILE} but no {CA_CERT_FILE}: put the CA certificate back, or \
                 remove the folder to create a new CA",
                dir.display()
            )))
        }
    };

    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca.issuer, &ca.key).map_err(err)?;

    let cert_pem = dir.join(CERT_FILE);
    let key_pem = dir.join(KEY_FILE);
    write_file(&key_pem, &key.serialize_pem(), true)?;
    write_file(&cert_pem, &format!("{}{}", cert.pem(), ca.pem), false)?;
    let config = server_config(
        vec![cert.der().clone(), CertificateDer::from(ca.der.clone())],
        PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| ServeError::Tls(format!("generated key: {e}")))?,
        "generated certificate",
    )?;
    Ok(SelfSigned {
        config,
        ca_pem: ca_cert_path,
        cert_pem,
        key_pem,
        names,
        ca_reused,
    })
}

/// Which of the CA's two files exist; when only one does, wait a little for the other (another
/// `ota serve` may be creating the CA right now).
fn ca_files(cert: &Path, key: &Path) -> (bool, bool) {
    let deadline = std::time::Instant::now() + CA_CREATION_WAIT;
    loop {
        let found = (cert.exists(), key.exists());
        if found.0 == found.1 || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How long a half-created CA (one file of two) is waited for.
const CA_CREATION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Create a CA and store it without ever replacing one: each file is written to a temporary
/// name and then hard-linked into place (which fails if the name exists). None when another
/// process stored its CA first.
fn create_ca(ip: IpAddr, cert_path: &Path, key_path: &Path) -> Result<Option<Ca>, ServeError> {
    let ca = new_ca(ip)?;
    let place = |path: &Path, text: &str, private: bool| -> Result<bool, ServeError> {
        let tmp = temp_name(path);
        write_new(&tmp, text, private)?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ServeError::Tls(format!("writing {}: {e}", path.display()))),
        }
    };
    if !place(key_path, &ca.key.serialize_pem(), true)? {
        let _ = ca_files(cert_path, key_path);
        return Ok(None);
    }
    if !place(cert_path, &ca.pem, false)? {
        return Err(ServeError::Tls(format!(
            "{} appeared while a new CA was being stored beside {}: remove both and start again",
            cert_path.display(),
            key_path.display()
        )));
    }
    Ok(Some(ca))
}

/// A CA ready to issue: its certificate as stored (PEM and DER), its key, and an rcgen
/// certificate with the same subject and key to sign with.
struct Ca {
    pem: String,
    der: Vec<u8>,
    key: rcgen::KeyPair,
    issuer: rcgen::Certificate,
}

fn new_ca(ip: IpAddr) -> Result<Ca, ServeError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let err = |e: rcgen::Error| ServeError::Tls(format!("generating a certificate: {e}"));
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, format!("ota serve CA for {ip}"));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = params.self_signed(&key).map_err(err)?;
    Ok(Ca {
        pem: issuer.pem(),
        der: issuer.der().to_vec(),
        key,
        issuer,
    })
}

fn read_pem(path: &Path) -> Result<String, ServeError> {
    let fail = |e: String| ServeError::Tls(format!("reading {}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(fail(format!(
            "{} bytes: larger than a PEM file can be here ({MAX_PEM_BYTES})",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| fail("not a PEM (text) file".into()))
}

/// Load and check the CA in the folder; every failure names the file and says it is kept.
fn load_ca(cert_path: &Path, key_path: &Path) -> Result<Ca, ServeError> {
    use rcgen::{CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let kept = "it is not replaced (devices may pin it): fix it, or remove the folder to create \
                a new CA";
    let bad = |p: &Path, what: String| ServeError::Tls(format!("{}: {what}; {kept}", p.display()));
    let pem = read_pem(cert_path)?;
    let first = rustls_pemfile::certs(&mut pem.as_bytes()).next();
    let der = match first {
        Some(Ok(c)) => c.to_vec(),
        Some(Err(e)) => return Err(bad(cert_path, format!("not a PEM certificate: {e}"))),
        None => return Err(bad(cert_path, "no CERTIFICATE block".into())),
    };
    let info = der::parse_cert(&der)
        .map_err(|e| bad(cert_path, format!("not an X.509 certificate: {e}")))?;
    if !info.is_ca {
        return Err(bad(
            cert_path,
            "not a CA certificate (no basicConstraints cA=TRUE)".into(),
        ));
    }
    if info
        .key_usage
        .is_some_and(|ku| ku & der::KEY_USAGE_CERT_SIGN == 0)
    {
        return Err(bad(
            cert_path,
            "its keyUsage does not allow signing certificates (keyCertSign)".into(),
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if info.not_after < now {
        return Err(bad(
            cert_path,
            format!(
                "the CA expired ({} seconds past its notAfter)",
                now - info.not_after
            ),
        ));
    }
    let key_text = read_pem(key_path)?;
    let key = KeyPair::from_pem(&key_text).map_err(|e| {
        bad(
            key_path,
            format!("not a private key this server can sign with (PKCS#8 PEM: ECDSA P-256/P-384, Ed25519 or RSA): {e}"),
        )
    })?;
    if key.public_key_raw() != info.public_key {
        return Err(bad(
            key_path,
            format!("this key does not belong to {}", cert_path.display()),
        ));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = der::distinguished_name(info.subject).map_err(|e| {
        bad(
            cert_path,
            format!("its subject name cannot be reproduced: {e}"),
        )
    })?;
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let issuer = params
        .self_signed(&key)
        .map_err(|e| bad(key_path, format!("cannot sign with this key: {e}")))?;
    // Certificates issued now must name the CA byte for byte as it names itself.
    let again = der::parse_cert(issuer.der()).map_err(|e| bad(cert_path, e))?;
    if again.subject != info.subject {
        return Err(bad(
            cert_path,
            "its subject name cannot be reproduced byte for byte (repeated attribute types or \
             unusual string types)"
                .into(),
        ));
    }
    let pem = match pem.find("-----END CERTIFICATE-----") {
        Some(end) => {
            let start = pem.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
            format!("{}\n", &pem[start..end + "-----END CERTIFICATE-----".len()])
        }
        None => pem,
    };
    Ok(Ca {
        pem,
        der,
        key,
        issuer,
    })
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Create `path` (it must not exist) with `text`, synced; private files are created 0600.
fn write_new(path: &Path, text: &str, private: bool) -> Result<(), ServeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| ServeError::Tls(format!("writing {}: {e}", path.display()));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    o.mode(if private { 0o600 } else { 0o644 });
    let mut f = o.open(path).map_err(fail)?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)
}

/// Write `text` to `path` through a temporary file and a rename, so a crash never leaves half
/// a certificate or key.
fn write_file(path: &Path, text: &str, private: bool) -> Result<(), ServeError> {
    let tmp = temp_name(path);
    write_new(&tmp, text, private)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ServeError::Tls(format!("writing {}: {e}", path.display()))
    })
}

/// Just enough DER to check a CA certificate (X.509, RFC 5280 §4.1) and rebuild its name.
mod der {
    /// keyUsage bit 5, keyCertSign (RFC 5280 §4.2.1.3), as a mask on the first content byte.
    pub const KEY_USAGE_CERT_SIGN: u8 = 0x04;
    /// id-ce-basicConstraints 2.5.29.19 and id-ce-keyUsage 2.5.29.15, DER-encoded.
    const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const BIT_STRING: u8 = 0x03;
    const UTF8_STRING: u8 = 0x0c;
    const PRINTABLE_STRING: u8 = 0x13;
    const IA5_STRING: u8 = 0x16;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    const EXPLICIT_0: u8 = 0xa0;
    const EXPLICIT_3: u8 = 0xa3;

    pub struct CertInfo<'a> {
        /// The subject Name, whole (tag and length included).
        pub subject: &'a [u8],
        /// The subjectPublicKey bits.
        pub public_key: &'a [u8],
        pub not_after: i64,
        pub is_ca: bool,
        pub key_usage: Option<u8>,
    }

    /// One TLV: (tag, content, whole, rest).
    type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);
    /// A TLV of an expected tag: (content, whole, rest).
    type Expected<'a> = (&'a [u8], &'a [u8], &'a [u8]);

    fn tlv(buf: &[u8]) -> Result<Tlv<'_>, String> {
        let (&tag, rest) = buf.split_first().ok_or("truncated DER")?;
        if tag & 0x1f == 0x1f {
            return Err("multi-byte DER tags are not expected here".into());
        }
        let (&first, mut rest) = rest.split_first().ok_or("truncated DER length")?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return Err("bad DER length".into());
            }
            let mut l = 0usize;
            for &b in &rest[..n] {
                l = (l << 8) | b as usize;
            }
            rest = &rest[n..];
            l
        };
        if rest.len() < len {
            return Err("DER length past the end".into());
        }
        let head = buf.len() - rest.len();
        Ok((tag, &rest[..len], &buf[..head + len], &rest[len..]))
    }

    fn expect<'a>(buf: &'a [u8], want: u8, what: &str) -> Result<Expected<'a>, String> {
        let (tag, content, whole, rest) = tlv(buf)?;
        if tag != want {
            return Err(format!("{what}: tag 0x{tag:02x}, expected 0x{want:02x}"));
        }
        Ok((content, whole, rest))
    }

    pub fn parse_cert(der: &[u8]) -> Result<CertInfo<'_>, String> {
        let (cert, _, _) = expect(der, SEQUENCE, "Certificate")?;
        let (tbs, _, _) = expect(cert, SEQUENCE, "TBSCertificate")?;
        let mut rest = tbs;
        if rest.first() == Some(&EXPLICIT_0) {
            rest = tlv(rest)?.3; // version
        }
        rest = tlv(rest)?.3; // serialNumber
        rest = expect(rest, SEQUENCE, "signature")?.2;
        rest = expect(rest, SEQUENCE, "issuer")?.2;
        let (validity, _, r) = expect(rest, SEQUENCE, "validity")?;
        rest = r;
        let not_before = tlv(validity)?.3;
        let (tag, after, _, _) = tlv(not_before)?;
        let not_after = parse_time(tag, after)?;
        let (_, subject, r) = expect(rest, SEQUENCE, "subject")?;
        rest = r;
        let (spki, _, r) = expect(rest, SEQUENCE, "subjectPublicKeyInfo")?;
        rest = r;
        let (bits, _, _) = expect(
            expect(spki, SEQUENCE, "algorithm")?.2,
            BIT_STRING,
            "subjectPublicKey",
        )?;
        let public_key = bits.get(1..).ok_or("empty subjectPublicKey")?;
        let mut is_ca = false;
        let mut key_usage = None;
        while !rest.is_empty() {
            let (tag, content, _, r) = tlv(rest)?;
            rest = r;
            if tag != EXPLICIT_3 {
                continue;
            }
            let (mut exts, _, _) = expect(content, SEQUENCE, "extensions")?;
            while !exts.is_empty() {
                let (ext, _, r) = expect(exts, SEQUENCE, "extension")?;
                exts = r;
                let (oid, _, mut body) = expect(ext, OID, "extension id")?;
                if body.first() == Some(&BOOLEAN) {
                    body = tlv(body)?.3; // critical
                }
                let (value, _, _) = expect(body, OCTET_STRING, "extension value")?;
                if oid == OID_BASIC_CONSTRAINTS {
                    let (bc, _, _) = expect(value, SEQUENCE, "basicConstraints")?;
                    if bc.first() == Some(&BOOLEAN) {
                        let (_, b, _, _) = tlv(bc)?;
                        is_ca = b.first().is_some_and(|&v| v != 0);
                    }
                } else if oid == OID_KEY_USAGE {
                    let (ku, _, _) = expect(value, BIT_STRING, "keyUsage")?;
                    key_usage = Some(ku.get(1).copied().unwrap_or(0));
                }
            }
        }
        Ok(CertInfo {
            subject,
            public_key,
            not_after,
            is_ca,
            key_usage,
        })
    }

    /// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` as seconds since 1970.
    fn parse_time(tag: u8, t: &[u8]) -> Result<i64, String> {
        let s = std::str::from_utf8(t).map_err(|_| "bad time")?;
        let digits = |r: std::ops::Range<usize>| -> Result<i64, String> {
            s.get(r)
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| format!("bad time `{s}`"))
        };
        let (year, rest) = match tag {
            UTC_TIME if s.len() == 13 => {
                let yy = digits(0..2)?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
            }
            GENERALIZED_TIME if s.len() == 15 => (digits(0..4)?, 4),
            _ => return Err(format!("unsupported time `{s}`")),
        };
        let (mo, d) = (digits(rest..rest + 2)?, digits(rest + 2..rest + 4)?);
        let (h, mi, se) = (
            digits(rest + 4..rest + 6)?,
            digits(rest + 6..rest + 8)?,
            digits(rest + 8..rest + 10)?,
        );
        if !s.ends_with('Z') || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
            return Err(format!("bad time `{s}`"));
        }
        // Days from civil (H. Hinnant's algorithm).
        let y = if mo <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Ok(days * 86_400 + h * 3600 + mi * 60 + se)
    }

    fn oid_arcs(oid: &[u8]) -> Result<Vec<u64>, String> {
        let mut arcs = Vec::new();
        let mut v: u64 = 0;
        for (i, &b) in oid.iter().enumerate() {
            if v > (u64::MAX >> 7) {
                return Err("OID arc too large".into());
            }
            v = (v << 7) | (b & 0x7f) as u64;
            if b & 0x80 == 0 {
                if arcs.is_empty() {
                    let first = (v / 40).min(2);
                    arcs.push(first);
                    arcs.push(v - first * 40);
                } else {
                    arcs.push(v);
                }
                v = 0;
            } else if i + 1 == oid.len() {
                return Err("truncated OID".into());
            }
        }
        Ok(arcs)
    }

    /// The rcgen name for a DER Name: single-attribute RDNs of UTF8String, PrintableString or
    /// IA5String values.
    pub fn distinguished_name(name: &[u8]) -> Result<rcgen::DistinguishedName, String> {
        let (mut rdns, _, _) = expect(name, SEQUENCE, "Name")?;
        let mut dn = rcgen::DistinguishedName::new();
        while !rdns.is_empty() {
            let (set, _, r) = expect(rdns, SET, "RelativeDistinguishedName")?;
            rdns = r;
            let (atv, _, more) = expect(set, SEQUENCE, "AttributeTypeAndValue")?;
            if !more.is_empty() {
                return Err("a multi-valued RDN".into());
            }
            let (oid, _, value) = expect(atv, OID, "attribute type")?;
            let (tag, content, _, _) = tlv(value)?;
            let text = std::str::from_utf8(content)
                .map_err(|_| "an attribute value that is not text")?
                .to_string();
            let value = match tag {
                UTF8_STRING => rcgen::DnValue::Utf8String(text),
                PRINTABLE_STRING => rcgen::DnValue::PrintableString(
                    rcgen::PrintableString::try_from(text).map_err(|e| e.to_string())?,
                ),
                IA5_STRING => rcgen::DnValue::Ia5String(
                    rcgen::Ia5String::try_from(text).map_err(|e| e.to_string())?,
                ),
                t => return Err(format!("an attribute value of string type 0x{t:02x}")),
            };
            dn.push(rcgen::DnType::from_oid(&oid_arcs(oid)?), value);
        }
        Ok(dn)
    }
}
