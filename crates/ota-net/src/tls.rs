//! TLS 1.3 on any connector (feature `tls`, `no_std`, no allocator): [`TlsConnector`] wraps a
//! [`Connect`] and opens `https://` connections with embedded-tls, the server's certificate
//! chain verified against one pinned CA (DER, [`Connect::pin_ca`]) and its DNS names checked
//! against the URL's host (embedded-tls `pki::CertVerifier`: ECDSA P-256 / SHA-256 signatures,
//! subjectAltName dNSName, or the CN when there is none). Without a pinned CA it refuses
//! ([`TlsFailure::NoPinnedCa`]): it never connects unverified. IP-literal hosts are refused
//! ([`TlsFailure::IpLiteral`]): the verifier matches DNS names only.
//!
//! Validity dates are checked only when the clock `K` knows the time ([`SystemClock`] with
//! `std`); a chip without a wall clock uses [`NoWallClock`] and skips them (as ESP-IDF's
//! esp-tls does when the time is not set: mbedTLS flags `MBEDTLS_X509_BADCERT_FUTURE`/`EXPIRED`
//! from `mbedtls_x509_time_is_past`, which without `MBEDTLS_HAVE_TIME_DATE` always passes).

use core::marker::PhantomData;

use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use embedded_tls::pki::CertVerifier;
use embedded_tls::{
    Aes128GcmSha256, Certificate, CryptoProvider, CryptoRngCore, TlsClock, TlsConfig,
    TlsConnection, TlsContext, TlsError, TlsVerifier,
};

use crate::http::{Connect, ConnectError, Connection, TlsFailure};

/// The largest TLS record plus its overhead (RFC 8446 §5.2: 2^14 + 256 bytes of ciphertext, 5
/// of header): the read buffer must hold one whole record, as embedded-tls decrypts in place.
pub const RECORD_BUF: usize = 16384 + 256 + 5;
/// The write buffer: our requests are one small record (the request head fits in the
/// client's buffer, `http::DEFAULT_BUF`), plus the handshake's ClientHello.
pub const WRITE_BUF: usize = 4096 + 256 + 5;
/// The largest pinned CA kept (DER bytes).
pub const MAX_CA_DER: usize = 4096;
/// The largest server certificate embedded-tls keeps to check the handshake signature.
pub const MAX_SERVER_CERT: usize = 4096;

/// The time for validity checks, in seconds since the Unix epoch.
pub use embedded_tls::TlsClock as Clock;

/// No wall clock: validity dates are not checked (the chip before SNTP).
pub struct NoWallClock;

impl TlsClock for NoWallClock {
    fn now() -> Option<u64> {
        None
    }
}

/// The host's clock (`std`): validity dates are checked.
#[cfg(feature = "std")]
pub struct SystemClock;

#[cfg(feature = "std")]
impl TlsClock for SystemClock {
    fn now() -> Option<u64> {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }
}

/// A connector that speaks `https://` over `inner` (plain connections pass through).
pub struct TlsConnector<C, R, K = NoWallClock> {
    inner: C,
    rng: R,
    ca: [u8; MAX_CA_DER],
    ca_len: Option<usize>,
    rx: [u8; RECORD_BUF],
    tx: [u8; WRITE_BUF],
    _clock: PhantomData<K>,
}

impl<C: Connect, R: CryptoRngCore, K: TlsClock> TlsConnector<C, R, K> {
    /// `rng` draws the handshake's key shares and randoms: a cryptographic generator (the
    /// chip's TRNG, the host's `getrandom`).
    pub fn new(inner: C, rng: R) -> Self {
        TlsConnector {
            inner,
            rng,
            ca: [0; MAX_CA_DER],
            ca_len: None,
            rx: [0; RECORD_BUF],
            tx: [0; WRITE_BUF],
            _clock: PhantomData,
        }
    }

    pub fn inner(&mut self) -> &mut C {
        &mut self.inner
    }
}

struct Provider<'a, R, K: TlsClock> {
    rng: &'a mut R,
    verifier: Guarded<'a, K>,
}

/// embedded-tls's `CertVerifier` with the order of the handshake enforced: the server's
/// CertificateVerify is taken only after its Certificate verified (embedded-tls would panic
/// on one without), and [`TlsConnector`] accepts a handshake only when both were verified
/// (embedded-tls would complete one whose server sent neither: an unauthenticated peer).
struct Guarded<'a, K: TlsClock> {
    inner: CertVerifier<'a, Aes128GcmSha256, K, MAX_SERVER_CERT>,
    certificate: bool,
    signature: bool,
}

impl<K: TlsClock> TlsVerifier<Aes128GcmSha256> for Guarded<'_, K> {
    fn set_hostname_verification(&mut self, hostname: &str) -> Result<(), TlsError> {
        self.inner.set_hostname_verification(hostname)
    }

    fn verify_certificate(
        &mut self,
        transcript: &<Aes128GcmSha256 as embedded_tls::TlsCipherSuite>::Hash,
        cert: embedded_tls::CertificateRef,
    ) -> Result<(), TlsError> {
        if self.certificate {
            // A second Certificate message.
            return Err(TlsError::InvalidHandshake);
        }
        self.inner.verify_certificate(transcript, cert)?;
        self.certificate = true;
        Ok(())
    }

    fn verify_signature(
        &mut self,
        verify: embedded_tls::CertificateVerifyRef,
    ) -> Result<(), TlsError> {
        if !self.certificate || self.signature {
            return Err(TlsError::InvalidHandshake);
        }
        self.inner.verify_signature(verify)?;
        self.signature = true;
        Ok(())
    }
}

impl<R: CryptoRngCore, K: TlsClock> CryptoProvider for Provider<'_, R, K> {
    type CipherSuite = Aes128GcmSha256;
    type Signature = &'static [u8];

    fn rng(&mut self) -> impl CryptoRngCore {
        &mut *self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<Self::CipherSuite>, TlsError> {
        Ok(&mut self.verifier)
    }
}

fn failure(e: TlsError) -> ConnectError {
    ConnectError::Tls(match e {
        TlsError::InvalidCertificate
        | TlsError::InvalidCertificateEntry
        | TlsError::DecodeError => TlsFailure::Certificate,
        TlsError::InvalidSignature | TlsError::CryptoError => TlsFailure::Signature,
        TlsError::HandshakeAborted(_, d) => TlsFailure::Alert(d as u8),
        TlsError::Io(_) | TlsError::ConnectionClosed => TlsFailure::Io,
        _ => TlsFailure::Protocol,
    })
}

/// Whether `host` is an IPv4 or IPv6 literal.
fn is_ip_literal(host: &str) -> bool {
    host.contains(':')
        || (!host.is_empty() && host.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

/// A connection of a [`TlsConnector`]: plain, or TLS over the inner connection.
// One connection at a time, without an allocator to box the TLS state: the size is the price.
#[allow(clippy::large_enum_variant)]
pub enum MaybeTls<'a, T: Connection> {
    Plain(T),
    /// `None` once closed.
    Tls(Option<TlsConnection<'a, T, Aes128GcmSha256>>),
}

/// An error of a [`MaybeTls`] connection.
#[derive(Debug)]
pub enum MaybeTlsError<E> {
    Plain(E),
    Tls(TlsError),
    Closed,
}

impl<E: embedded_io_async::Error> core::fmt::Display for MaybeTlsError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MaybeTlsError::Plain(e) => write!(f, "{e:?}"),
            MaybeTlsError::Tls(e) => write!(f, "TLS: {e:?}"),
            MaybeTlsError::Closed => f.write_str("TLS connection closed"),
        }
    }
}

impl<E: embedded_io_async::Error> core::error::Error for MaybeTlsError<E> {}

impl<E: embedded_io_async::Error> embedded_io_async::Error for MaybeTlsError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            MaybeTlsError::Plain(e) => e.kind(),
            MaybeTlsError::Tls(TlsError::Io(k)) => *k,
            MaybeTlsError::Tls(TlsError::ConnectionClosed) | MaybeTlsError::Closed => {
                ErrorKind::ConnectionAborted
            }
            MaybeTlsError::Tls(_) => ErrorKind::InvalidData,
        }
    }
}

impl<T: Connection> ErrorType for MaybeTls<'_, T> {
    type Error = MaybeTlsError<T::Error>;
}

impl<T: Connection> Read for MaybeTls<'_, T> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match self {
            MaybeTls::Plain(c) => c.read(buf).await.map_err(MaybeTlsError::Plain),
            MaybeTls::Tls(Some(t)) => match t.read(buf).await {
                // The server's close_notify ends the stream.
                Err(TlsError::ConnectionClosed) => Ok(0),
                r => r.map_err(MaybeTlsError::Tls),
            },
            MaybeTls::Tls(None) => Err(MaybeTlsError::Closed),
        }
    }
}

impl<T: Connection> Write for MaybeTls<'_, T> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        match self {
            MaybeTls::Plain(c) => c.write(buf).await.map_err(MaybeTlsError::Plain),
            MaybeTls::Tls(Some(t)) => t.write(buf).await.map_err(MaybeTlsError::Tls),
            MaybeTls::Tls(None) => Err(MaybeTlsError::Closed),
        }
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        match self {
            MaybeTls::Plain(c) => c.flush().await.map_err(MaybeTlsError::Plain),
            MaybeTls::Tls(Some(t)) => t.flush().await.map_err(MaybeTlsError::Tls),
            MaybeTls::Tls(None) => Err(MaybeTlsError::Closed),
        }
    }
}

impl<T: Connection> Connection for MaybeTls<'_, T> {
    async fn close(&mut self) {
        match self {
            MaybeTls::Plain(c) => c.close().await,
            MaybeTls::Tls(t) => {
                if let Some(t) = t.take() {
                    // close_notify, then the TCP close.
                    let mut sock = match t.close().await {
                        Ok(s) | Err((s, _)) => s,
                    };
                    sock.close().await;
                }
            }
        }
    }

    async fn abort(&mut self) {
        match self {
            MaybeTls::Plain(c) => c.abort().await,
            MaybeTls::Tls(t) => {
                if let Some(t) = t.take() {
                    let mut sock = match t.close().await {
                        Ok(s) | Err((s, _)) => s,
                    };
                    sock.abort().await;
                }
            }
        }
    }
}

impl<C: Connect, R: CryptoRngCore, K: TlsClock> Connect for TlsConnector<C, R, K> {
    type Conn<'a>
        = MaybeTls<'a, C::Conn<'a>>
    where
        Self: 'a;

    async fn connect(&mut self, host: &str, port: u16) -> Result<Self::Conn<'_>, ConnectError> {
        Ok(MaybeTls::Plain(self.inner.connect(host, port).await?))
    }

    async fn connect_tls(&mut self, host: &str, port: u16) -> Result<Self::Conn<'_>, ConnectError> {
        let Some(ca_len) = self.ca_len else {
            return Err(ConnectError::Tls(TlsFailure::NoPinnedCa));
        };
        if is_ip_literal(host) {
            return Err(ConnectError::Tls(TlsFailure::IpLiteral));
        }
        let TlsConnector {
            inner,
            rng,
            ca,
            rx,
            tx,
            ..
        } = self;
        let sock = inner.connect(host, port).await?;
        let mut tls = TlsConnection::new(sock, &mut rx[..], &mut tx[..]);
        let config = TlsConfig::new().with_server_name(host);
        let mut provider = Provider::<R, K> {
            rng,
            verifier: Guarded {
                inner: CertVerifier::new(Certificate::X509(&ca[..ca_len])),
                certificate: false,
                signature: false,
            },
        };
        let opened = match tls.open(TlsContext::new(&config, &mut provider)).await {
            Ok(()) if !(provider.verifier.certificate && provider.verifier.signature) => {
                Err(TlsError::InvalidCertificate)
            }
            r => r,
        };
        match opened {
            Ok(()) => Ok(MaybeTls::Tls(Some(tls))),
            Err(e) => {
                let mut sock = match tls.close().await {
                    Ok(s) | Err((s, _)) => s,
                };
                sock.abort().await;
                Err(failure(e))
            }
        }
    }

    fn pin_ca(&mut self, der: Option<&[u8]>) -> Result<(), ConnectError> {
        match der {
            None => self.ca_len = None,
            Some(d) if d.is_empty() || d.len() > MAX_CA_DER || d[0] != DER_SEQUENCE => {
                self.ca_len = None;
                return Err(ConnectError::Tls(TlsFailure::BadPinnedCa));
            }
            Some(d) => {
                self.ca[..d.len()].copy_from_slice(d);
                self.ca_len = Some(d.len());
            }
        }
        Ok(())
    }
}

/// The tag of an X.509 certificate's outer DER SEQUENCE (X.690 §8.9, RFC 5280 §4.1).
const DER_SEQUENCE: u8 = 0x30;
