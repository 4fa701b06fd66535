//! The firmware's HTTP download: [`download`], the one function that fetches the update, an
//! HTTP/1.1 GET (reqwless) whose body it hands, chunk by chunk, to a [`BodySink`]. It is
//! generic over the `embedded-nal-async` TCP and DNS traits: on the chip embassy-net provides
//! them (`net.rs`), and the root crate's `tests/firmware_c3.rs` runs this very file on a PC
//! over `std::net` against real servers. Replacing the HTTP client means replacing this file
//! only.

use core::fmt;

use embedded_io_async::Read;
use embedded_nal_async::{Dns, TcpConnect};
use reqwless::client::HttpClient;
use reqwless::request::Method;

use crate::update::{BodySink, Flow};

/// The response head (status line and headers) must fit here; ESP-IDF's HTTP client reads
/// its head through a 512-byte buffer by default (`DEFAULT_HTTP_BUF_SIZE`, esp-idf
/// `components/esp_http_client/esp_http_client.c`); 2 KiB leaves room for long headers.
const HEAD_MAX: usize = 2048;
/// Bytes of body read per step and handed to the sink (a multiple of esp-storage's 4-byte
/// word, like the data-partition path's chunk).
const CHUNK: usize = 1024;
/// The longest image accepted: more than any app slot can hold (4 MB flash); the slot's own
/// size is checked by `OtaUpdater::begin`/`write`.
const BODY_MAX: usize = 4 << 20;
/// Where a download was when the network or the server failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Resolving the host, connecting.
    Connect,
    /// Sending the request, reading the status line and headers.
    Head,
    /// Reading the body, at this body offset.
    Body(u64),
}

/// Why a download failed.
#[derive(Debug)]
pub enum DownloadError<E> {
    /// The URL, DNS, TCP or HTTP failed (a malformed or oversized head, the connection lost,
    /// nothing received before the connection's deadline).
    Http {
        stage: Stage,
        error: reqwless::Error,
    },
    /// The server answered with another status than 200.
    Status(u16),
    /// `Content-Length` larger than [`BODY_MAX`].
    TooLarge(usize),
    /// The connection ended before the `Content-Length` bytes had come.
    Short { expected: u32, received: u64 },
    /// The sink (the installer) refused the body.
    Sink(E),
}

impl<E: fmt::Display> fmt::Display for DownloadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadError::Http {
                stage: Stage::Head,
                error: reqwless::Error::BufferTooSmall,
            } => write!(f, "the response head is larger than {HEAD_MAX} bytes"),
            DownloadError::Http { stage, error } => {
                match stage {
                    Stage::Connect => f.write_str("connecting (URL, DNS, TCP)")?,
                    Stage::Head => f.write_str("sending the request or reading the response head")?,
                    Stage::Body(at) => write!(f, "reading the body at byte {at}")?,
                }
                write!(f, " failed: {error:?}")
            }
            DownloadError::Status(s) => write!(f, "the server answered {s}, not 200"),
            DownloadError::TooLarge(n) => write!(
                f,
                "Content-Length {n} is larger than the {BODY_MAX}-byte limit"
            ),
            DownloadError::Short { expected, received } => write!(
                f,
                "the connection ended after {received} of the {expected} body bytes its Content-Length announced"
            ),
            DownloadError::Sink(e) => write!(f, "{e}"),
        }
    }
}

/// `GET url` and hand the body to `sink`: `begin` with its `Content-Length`, then chunks of
/// at most [`CHUNK`] bytes until the end of the body or [`Flow::NotNewer`]. Connections come
/// from `tcp`, addresses from `dns`: their deadlines are the deadlines of every network wait
/// here (the caller also puts one on the whole). Returns the body bytes delivered.
pub async fn download<T: TcpConnect, D: Dns, S: BodySink>(
    tcp: &T,
    dns: &D,
    url: &str,
    sink: &mut S,
) -> Result<u64, DownloadError<S::Error>> {
    let mut http = HttpClient::new(tcp, dns);
    let at = |stage| move |error| DownloadError::Http { stage, error };
    let mut request = http
        .request(Method::GET, url)
        .await
        .map_err(at(Stage::Connect))?;
    let mut head = [0u8; HEAD_MAX];
    let response = request.send(&mut head).await.map_err(at(Stage::Head))?;
    if response.status.0 != 200 {
        return Err(DownloadError::Status(response.status.0));
    }
    let len = match response.content_length {
        Some(n) if n > BODY_MAX => return Err(DownloadError::TooLarge(n)),
        // BODY_MAX fits in u32.
        Some(n) => Some(n as u32),
        None => None,
    };
    sink.begin(len).map_err(DownloadError::Sink)?;
    let mut body = response.body().reader();
    let mut buf = [0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = body.read(&mut buf).await.map_err(at(Stage::Body(bytes)))?;
        if n == 0 {
            // reqwless ends a fixed-length body at an early close without an error.
            return match len {
                Some(expected) if bytes != u64::from(expected) => Err(DownloadError::Short {
                    expected,
                    received: bytes,
                }),
                _ => Ok(bytes),
            };
        }
        bytes += n as u64;
        if sink.chunk(&buf[..n]).map_err(DownloadError::Sink)? == Flow::NotNewer {
            return Ok(bytes);
        }
    }
}
