//! Byte sources for upgrade items: `file://` (the SD card), `http://` and `https://`.
//!
//! A [`Source`] hands out the bytes of one upgrade image in chunks and knows how many to expect;
//! a body that ends before its promised length is an error, never a silent end of data.
//! The scheme is matched as a prefix (ADF matched a substring anywhere: adf-ota-service.md §11.4).

use core::fmt;
use core::time::Duration;
#[cfg(feature = "std")]
use std::io::{self, Read};
#[cfg(feature = "std")]
use std::path::{Component, Path, PathBuf};
#[cfg(feature = "std")]
use std::sync::Arc;

pub use crate::io::{content_range_start, content_range_total, HTTP_RANGE_NOT_SATISFIABLE};
use crate::prelude::*;
pub use ota_core::resume::ValidatorKind;

#[cfg(feature = "std")]
mod http;
#[cfg(feature = "std")]
pub use http::{MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADER_FIELDS, MAX_URI_LEN};

/// The path an SD card error names: a host path with `std`, the ADF path without.
#[cfg(feature = "std")]
pub type SdPath = PathBuf;
/// The path an SD card error names: a host path with `std`, the ADF path without.
#[cfg(not(feature = "std"))]
pub type SdPath = String;

#[cfg(feature = "std")]
fn show_path(p: &SdPath) -> std::path::Display<'_> {
    p.display()
}
#[cfg(not(feature = "std"))]
fn show_path(p: &SdPath) -> &str {
    p
}

/// ADF's numeric failure reasons that a source error can turn into
/// (`ota_service_err_reason_t`, adf-ota-service.md §2.3): the codes of [`crate::Reason`], their
/// one home.
pub mod reason {
    use crate::Reason;
    /// `OTA_SERV_ERR_REASON_URL_PARSE_FAIL`: the URI has no supported scheme (§2.3).
    pub const URL_PARSE_FAIL: i32 = Reason::UrlParseFail.code();
    /// `OTA_SERV_ERR_REASON_FILE_NOT_FOUND`: the SD card file is missing (§2.3).
    pub const FILE_NOT_FOUND: i32 = Reason::FileNotFound.code();
    /// `OTA_SERV_ERR_REASON_STREAM_INIT_FAIL`: the source could not be opened (§2.3, §6.1 step 5).
    pub const STREAM_INIT_FAIL: i32 = Reason::StreamInitFail.code();
    /// `OTA_SERV_ERR_REASON_STREAM_RD_FAIL`: a read failed or the data ended early (§2.3, §6.3).
    pub const STREAM_RD_FAIL: i32 = Reason::StreamRdFail.code();
}

/// `file://` prefix: the SD card back-end (adf-ota-service.md §4.1, §6.1 step 4).
pub const FILE_PREFIX: &str = "file://";
/// `http://` prefix (adf-ota-service.md §4.1, §6.1 step 4).
pub const HTTP_PREFIX: &str = "http://";
/// `https://` prefix (adf-ota-service.md §4.1, §6.1 step 4).
pub const HTTPS_PREFIX: &str = "https://";
/// Where ADF's sdcard peripheral mounts the FAT volume (adf-ota-service.md §6.1, last bullet).
pub const SDCARD_MOUNT: &str = "/sdcard";
/// ADF's HTTP client timeout for OTA, `timeout_ms = 5000` (adf-ota-service.md §4.1).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);
/// How many redirects we follow by default (ureq 2's default, kept when our own HTTP client
/// replaced it; esp_http_client sets its own limit with `max_redirection_count`).
pub const DEFAULT_MAX_REDIRECTS: u32 = 5;
/// Default `low_speed_limit`: a download slower than this many bytes per second, on average
/// over a whole `low_speed_time` window, fails (curl's `--speed-limit`).
pub const DEFAULT_LOW_SPEED_LIMIT: u64 = 1024;
/// Default `low_speed_time_ms` (curl's `--speed-time`, here 30 s).
pub const DEFAULT_LOW_SPEED_TIME: Duration = Duration::from_secs(30);
/// Default `max_time_ms`: every item's network transfers end within this much time of its
/// first request (curl's `--max-time`), retries and reconnects included.
pub const DEFAULT_MAX_TIME: Duration = Duration::from_secs(3600);
/// The most bytes any source yields: 128 MiB, the largest flash size ESP-IDF and esptool know
/// (`--flash-size 128MB`, esptool `cmds.py`); no partition can take more.
pub const MAX_SOURCE_LEN: u64 = 128 << 20;

/// The scheme of a URI, matched as a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    File,
    Http,
    Https,
}

impl Scheme {
    /// The scheme `uri` starts with, or `None` (ADF: URL_PARSE_FAIL). Case-sensitive, like ADF.
    pub fn of(uri: &str) -> Option<Scheme> {
        if uri.starts_with(FILE_PREFIX) {
            Some(Scheme::File)
        } else if uri.starts_with(HTTP_PREFIX) {
            Some(Scheme::Http)
        } else if uri.starts_with(HTTPS_PREFIX) {
            Some(Scheme::Https)
        } else {
            None
        }
    }
}

/// Which step failed: opening the source (ADF STREAM_INIT_FAIL) or reading it (STREAM_RD_FAIL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Open,
    Read,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Open => "opening",
            Phase::Read => "reading",
        })
    }
}

/// An I/O error of the std driver, shareable: [`SourceError`] is `Clone` and comparable so an
/// item's outcome can carry it ([`crate::service::Cause`]). Two are equal when their kind and
/// text are.
#[cfg(feature = "std")]
#[derive(Clone, Debug)]
pub struct IoError(pub Arc<io::Error>);

#[cfg(feature = "std")]
impl IoError {
    /// The underlying `std::io::Error`.
    pub fn get(&self) -> &io::Error {
        &self.0
    }
    pub fn kind(&self) -> io::ErrorKind {
        self.0.kind()
    }
}

#[cfg(feature = "std")]
impl From<io::Error> for IoError {
    fn from(e: io::Error) -> Self {
        IoError(Arc::new(e))
    }
}

#[cfg(feature = "std")]
impl PartialEq for IoError {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string()
    }
}

#[cfg(feature = "std")]
impl Eq for IoError {}

#[cfg(feature = "std")]
impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Why a source could not be opened or read. Every variant names the URI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{uri}: connection refused ({detail})")]
    ConnectionRefused { uri: String, detail: String },
    #[error("{uri}: timed out after {} ms while {phase}", timeout.as_millis())]
    Timeout {
        uri: String,
        phase: Phase,
        timeout: Duration,
    },
    #[error("{uri}: host name lookup failed ({detail})")]
    Dns { uri: String, detail: String },
    #[error("{uri}: TLS failed: {detail}")]
    Tls { uri: String, detail: String },
    #[error("{uri}: server answered HTTP {status} {reason}")]
    HttpStatus {
        uri: String,
        status: u16,
        reason: String,
    },
    #[error("{uri}: more than {max} redirects")]
    TooManyRedirects { uri: String, max: u32 },
    #[error("{uri}: body ended after {got} of {expected} bytes (Content-Length/file size)")]
    ShortBody {
        uri: String,
        expected: u64,
        got: u64,
    },
    #[cfg(feature = "std")]
    #[error("{uri}: I/O error while {phase}: {source}")]
    Io {
        uri: String,
        phase: Phase,
        #[source]
        source: IoError,
    },
    /// A transport without `std` lost its connection or failed to read (an `Io` error of the
    /// std driver): transient.
    #[error("{uri}: network error while {phase}: {detail}")]
    Network {
        uri: String,
        phase: Phase,
        detail: String,
    },
    #[error("{uri}: file not found on the SD card: {}", show_path(path))]
    SdFileNotFound { uri: String, path: SdPath },
    #[error("{uri}: path {path} does not name a file on the SD card (expected {SDCARD_MOUNT}/<file>, no `..`)")]
    OutsideSdCard { uri: String, path: String },
    #[error("{uri}: no SD card is mounted")]
    NoSdCard { uri: String },
    #[error("{uri}: unsupported URI: it must start with file://, http:// or https://")]
    UnsupportedScheme { uri: String },
    #[error("{uri}: malformed URI: {detail}")]
    InvalidUri { uri: String, detail: String },
    #[error("{uri}: pinned CA certificate unusable: {detail}")]
    BadCert { uri: String, detail: String },
    #[error("{uri}: range request for bytes {requested}- answered with Content-Range `{got}`")]
    RangeMismatch {
        uri: String,
        requested: u64,
        got: String,
    },
    #[error("{uri}: cannot start at byte {start}: the file has only {length} bytes")]
    RangeNotSatisfiable {
        uri: String,
        start: u64,
        length: u64,
    },
    #[error("{uri}: malformed HTTP response: {detail}")]
    BadResponse { uri: String, detail: String },
    #[error("{uri}: redirect to `{location}` refused: {detail}")]
    BadRedirect {
        uri: String,
        location: String,
        detail: String,
    },
    #[error("{uri}: transfer too slow: {got} bytes in {} ms, below low_speed_limit = {limit} bytes/s (over low_speed_time_ms = {})", elapsed.as_millis(), window.as_millis())]
    TooSlow {
        uri: String,
        got: u64,
        elapsed: Duration,
        limit: u64,
        window: Duration,
    },
    #[error("{uri}: gave up while {phase}: the item's transfers exceeded max_time_ms = {}", max_time.as_millis())]
    DeadlineExceeded {
        uri: String,
        phase: Phase,
        max_time: Duration,
    },
    #[error("{uri}: more than {limit} bytes: larger than any flash")]
    TooLarge { uri: String, limit: u64 },
    /// The bytes are not the ones promised (the catalogue's size or SHA-256): final.
    #[error("{uri}: {detail}")]
    Mismatch { uri: String, detail: String },
    /// The transport cannot do what was asked (a `PUT` on a file system).
    #[error("{uri}: {detail}")]
    Unsupported { uri: String, detail: String },
    #[error("{uri}: internal error while {phase} (caught): {detail}")]
    Internal {
        uri: String,
        phase: Phase,
        detail: String,
    },
}

impl SourceError {
    /// The URI this error is about.
    pub fn uri(&self) -> &str {
        match self {
            #[cfg(feature = "std")]
            SourceError::Io { uri, .. } => uri,
            SourceError::ConnectionRefused { uri, .. }
            | SourceError::Timeout { uri, .. }
            | SourceError::Dns { uri, .. }
            | SourceError::Tls { uri, .. }
            | SourceError::HttpStatus { uri, .. }
            | SourceError::TooManyRedirects { uri, .. }
            | SourceError::ShortBody { uri, .. }
            | SourceError::Network { uri, .. }
            | SourceError::Mismatch { uri, .. }
            | SourceError::SdFileNotFound { uri, .. }
            | SourceError::OutsideSdCard { uri, .. }
            | SourceError::NoSdCard { uri }
            | SourceError::UnsupportedScheme { uri }
            | SourceError::InvalidUri { uri, .. }
            | SourceError::BadCert { uri, .. }
            | SourceError::RangeMismatch { uri, .. }
            | SourceError::RangeNotSatisfiable { uri, .. }
            | SourceError::BadResponse { uri, .. }
            | SourceError::BadRedirect { uri, .. }
            | SourceError::TooSlow { uri, .. }
            | SourceError::DeadlineExceeded { uri, .. }
            | SourceError::TooLarge { uri, .. }
            | SourceError::Unsupported { uri, .. }
            | SourceError::Internal { uri, .. } => uri,
        }
    }

    /// ADF's numeric reason for this failure (adf-ota-service.md §2.3): URL_PARSE_FAIL for a bad
    /// URI, FILE_NOT_FOUND for a missing SD file, STREAM_RD_FAIL for failures while reading,
    /// STREAM_INIT_FAIL for everything that fails while opening.
    pub fn adf_reason(&self) -> i32 {
        match self {
            SourceError::UnsupportedScheme { .. } | SourceError::InvalidUri { .. } => {
                reason::URL_PARSE_FAIL
            }
            SourceError::SdFileNotFound { .. } | SourceError::OutsideSdCard { .. } => {
                reason::FILE_NOT_FOUND
            }
            SourceError::ShortBody { .. }
            | SourceError::Mismatch { .. }
            | SourceError::TooSlow { .. }
            | SourceError::TooLarge { .. }
            | SourceError::DeadlineExceeded {
                phase: Phase::Read, ..
            }
            | SourceError::Internal {
                phase: Phase::Read, ..
            }
            | SourceError::Timeout {
                phase: Phase::Read, ..
            }
            | SourceError::Network {
                phase: Phase::Read, ..
            } => reason::STREAM_RD_FAIL,
            #[cfg(feature = "std")]
            SourceError::Io {
                phase: Phase::Read, ..
            } => reason::STREAM_RD_FAIL,
            _ => reason::STREAM_INIT_FAIL,
        }
    }
}

#[cfg(feature = "std")]
/// The bytes of one upgrade image.
pub trait Source: Send {
    /// How many bytes the source promised (Content-Length, file size), if known.
    fn content_length(&self) -> Option<u64>;
    /// Reads up to `buf.len()` bytes; `Ok(0)` means the end (and is only returned when all the
    /// promised bytes arrived — a short body is [`SourceError::ShortBody`]).
    /// An empty `buf` also returns `Ok(0)`.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError>;
    /// The URI this source was opened from.
    fn uri(&self) -> &str;
}

#[cfg(feature = "std")]
/// The SD card as seen by `file://` URIs. The binary implements it on the emulator's SD card;
/// [`HostDir`] maps it to a host folder.
pub trait SdCardFs: Send + Sync {
    /// Opens the file a `file://` URI names; returns a reader and the file size.
    fn open(&self, uri: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError>;
}

/// The path ADF's fatfs_stream opens for `uri` (adf-ota-service.md §6.1, "How a `file://` URI
/// becomes a path"): a URI starting with `/` is used as is; otherwise keep everything from the
/// second `/` of `://`, skipping one more `/` if it follows (`file:///sdcard/x` → `/sdcard/x`).
pub fn adf_sd_path(uri: &str) -> Result<String, SourceError> {
    if uri.starts_with('/') {
        return Ok(uri.to_string());
    }
    let sep = uri.find("://").ok_or_else(|| SourceError::InvalidUri {
        uri: uri.to_string(),
        detail: "no `://` in a file URI".to_string(),
    })?;
    // `sep + 2` is the second `/` of `://` (adf-ota-service.md §6.1).
    let mut path = uri.get(sep + 2..).unwrap_or("");
    if path.starts_with("//") {
        path = path.get(1..).unwrap_or("");
    }
    Ok(path.to_string())
}

#[cfg(feature = "std")]
/// The path of `uri` relative to the SD card's mount point (`file://sdcard/a/b.bin` → `a/b.bin`).
/// Rejects paths outside `/sdcard` and any `..`, so an implementation can join it to its root.
pub fn sd_relative_path(uri: &str) -> Result<PathBuf, SourceError> {
    let path = adf_sd_path(uri)?;
    let outside = || SourceError::OutsideSdCard {
        uri: uri.to_string(),
        path: path.clone(),
    };
    let rest = path.strip_prefix(SDCARD_MOUNT).ok_or_else(outside)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Err(outside());
    }
    let mut rel = PathBuf::new();
    for comp in Path::new(rest).components() {
        match comp {
            Component::Normal(c) => rel.push(c),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(outside()),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(outside());
    }
    Ok(rel)
}

#[cfg(feature = "std")]
/// An SD card backed by a host folder: `file://sdcard/x.bin` is `<folder>/x.bin`.
#[derive(Clone, Debug)]
pub struct HostDir(pub PathBuf);

#[cfg(feature = "std")]
impl SdCardFs for HostDir {
    /// Only a regular file whose real path (links resolved) is inside the folder is opened,
    /// without blocking (a FIFO is refused, never opened) and at most [`MAX_SOURCE_LEN`] bytes.
    fn open(&self, uri: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        let path = self.0.join(sd_relative_path(uri)?);
        let io_err = |source: io::Error| SourceError::Io {
            uri: uri.to_string(),
            phase: Phase::Open,
            source: source.into(),
        };
        let refuse = |msg: String| io_err(io::Error::new(io::ErrorKind::PermissionDenied, msg));
        let real = match path.canonicalize() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SourceError::SdFileNotFound {
                    uri: uri.to_string(),
                    path,
                })
            }
            Err(e) => return Err(io_err(e)),
        };
        let root = self.0.canonicalize().map_err(io_err)?;
        if !real.starts_with(&root) {
            return Err(refuse(format!(
                "{} leads to {}, outside the card folder {}",
                path.display(),
                real.display(),
                root.display()
            )));
        }
        let meta = std::fs::metadata(&real).map_err(io_err)?;
        if !meta.is_file() {
            return Err(refuse(format!("{} is not a regular file", path.display())));
        }
        let mut o = std::fs::OpenOptions::new();
        o.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            /// `O_NONBLOCK | O_NOFOLLOW` on Linux (`include/uapi/asm-generic/fcntl.h`).
            const O_NONBLOCK_NOFOLLOW: i32 = 0o4000 | 0o400000;
            o.custom_flags(O_NONBLOCK_NOFOLLOW);
        }
        let file = o.open(&real).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(refuse(format!("{} is not a regular file", path.display())));
        }
        if meta.len() > MAX_SOURCE_LEN {
            return Err(SourceError::TooLarge {
                uri: uri.to_string(),
                limit: MAX_SOURCE_LEN,
            });
        }
        Ok((Box::new(file.take(meta.len())), meta.len()))
    }
}

/// How HTTP(S) sources connect.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Connect timeout, and the longest wait for any single read (ADF `timeout_ms = 5000`).
    pub timeout: Duration,
    /// Redirects followed before giving up (`0`: a 3xx answer is an error).
    pub max_redirects: u32,
    /// A pinned CA in PEM (ADF `cert_pem`): when set, ONLY these certificates are trusted.
    /// When `None`, the Mozilla roots of `webpki-roots` are.
    pub ca_pem: Option<Vec<u8>>,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Minimum average rate of a body in bytes per second, over each `low_speed_time` window
    /// (config `low_speed_limit`; 0: no rate rule).
    pub low_speed_limit: u64,
    /// The window of the rate rule (config `low_speed_time_ms`).
    pub low_speed_time: Duration,
    /// How long an item's transfers may take in all (config `max_time_ms`): the items set
    /// `deadline` from it when they start; a source opened without one gets its own.
    pub max_time: Duration,
    /// When every transfer of the current item must be over, in ms of the run's clock
    /// ([`crate::io::Clock::now_ms`]; set by the item).
    pub deadline: Option<u64>,
    /// The `Authorization` header value of every request (a DDI item's `TargetToken …`):
    /// sent to the URI's own origin only (not after a redirect to another host), and never
    /// shown by `Debug`.
    pub authorization: Option<Secret>,
}

/// A header value that must not appear in logs: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself, for the request that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The transfer bounds an item can set for itself (config keys `low_speed_limit`,
/// `low_speed_time_ms`, `max_time_ms`, top level or per item).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferLimits {
    pub low_speed_limit: u64,
    pub low_speed_time: Duration,
    pub max_time: Duration,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            low_speed_limit: DEFAULT_LOW_SPEED_LIMIT,
            low_speed_time: DEFAULT_LOW_SPEED_TIME,
            max_time: DEFAULT_MAX_TIME,
        }
    }
}

impl SourceOptions {
    /// These options with `limits` (when given) and the item's deadline starting now, on the
    /// std driver's clock (`crate::std_driver::StdClock`).
    #[cfg(feature = "std")]
    pub fn for_item(&self, limits: Option<TransferLimits>) -> SourceOptions {
        use crate::io::Clock;
        self.for_item_at(limits, crate::std_driver::StdClock.now_ms())
    }

    /// These options with `limits` (when given) and the item's deadline starting now
    /// (`now_ms` on the run's clock): what an item uses for all its transfers.
    pub fn for_item_at(&self, limits: Option<TransferLimits>, now_ms: u64) -> SourceOptions {
        let mut o = self.clone();
        if let Some(l) = limits {
            o.low_speed_limit = l.low_speed_limit;
            o.low_speed_time = l.low_speed_time;
            o.max_time = l.max_time;
        }
        o.deadline = Some(now_ms.saturating_add(duration_ms(o.max_time)));
        o
    }
}

/// A duration in whole milliseconds (saturating).
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            timeout: DEFAULT_TIMEOUT,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            ca_pem: None,
            user_agent: concat!("ota-service/", env!("CARGO_PKG_VERSION")).to_string(),
            low_speed_limit: DEFAULT_LOW_SPEED_LIMIT,
            low_speed_time: DEFAULT_LOW_SPEED_TIME,
            max_time: DEFAULT_MAX_TIME,
            deadline: None,
            authorization: None,
        }
    }
}

#[cfg(feature = "std")]
/// A source over any reader with a known or unknown length; checks the length at the end.
struct StreamSource {
    uri: String,
    reader: Box<dyn Read + Send>,
    content_length: Option<u64>,
    got: u64,
    timeout: Duration,
}

#[cfg(feature = "std")]
impl StreamSource {
    fn short(&self) -> Option<SourceError> {
        match self.content_length {
            Some(expected) if self.got < expected => Some(SourceError::ShortBody {
                uri: self.uri.clone(),
                expected,
                got: self.got,
            }),
            _ => None,
        }
    }
}

#[cfg(feature = "std")]
impl Source for StreamSource {
    fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.reader.read(buf) {
                Ok(0) => return self.short().map_or(Ok(0), Err),
                Ok(n) => {
                    self.got = self.got.saturating_add(n as u64);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // A reader may report a body cut short of its length this way.
                    return Err(self.short().unwrap_or_else(|| SourceError::Io {
                        uri: self.uri.clone(),
                        phase: Phase::Read,
                        source: e.into(),
                    }));
                }
                Err(e) => return Err(classify_io(e, &self.uri, Phase::Read, self.timeout)),
            }
        }
    }

    fn uri(&self) -> &str {
        &self.uri
    }
}

#[cfg(feature = "std")]
/// Opens `uri`: `file://` on the SD card `sd`, `http://` / `https://` with `opts`.
/// Anything else is [`SourceError::UnsupportedScheme`] (ADF URL_PARSE_FAIL).
pub fn open(
    uri: &str,
    sd: Option<&dyn SdCardFs>,
    opts: &SourceOptions,
) -> Result<Box<dyn Source>, SourceError> {
    open_range(uri, 0, sd, opts).map(|r| r.source)
}

#[cfg(feature = "std")]
/// A source opened at an offset by [`open_range`].
pub struct RangeOpen {
    /// The bytes from `start` on (when `honoured`) or from 0.
    pub source: Box<dyn Source>,
    /// `true` when the source starts at the requested offset (HTTP 206, or a file), `false`
    /// when the server ignored the `Range` header and sent the whole body (HTTP 200), or the
    /// `If-Range` validator no longer matched (the file changed).
    pub honoured: bool,
    /// The `ETag` header of the response, if any.
    pub etag: Option<String>,
    /// The `Last-Modified` header of the response, if any.
    pub last_modified: Option<String>,
    /// The length of the whole file: the total of `Content-Range` on a 206, `Content-Length`
    /// on a 200, the size of a file. `None` when the server did not say.
    pub total_length: Option<u64>,
}

#[cfg(feature = "std")]
impl RangeOpen {
    /// The validator to send back in `If-Range`: a strong `ETag` (a weak `W/` one may not be
    /// used there, RFC 9110 §13.1.5), else `Last-Modified`.
    pub fn validator(&self) -> Option<(ValidatorKind, &str)> {
        crate::io::validator_of(self.etag.as_deref(), self.last_modified.as_deref())
    }
}

#[cfg(feature = "std")]
/// Like [`open`], but asks for the bytes from `start` on (`Range: bytes=start-`, as esp_https_ota
/// does for resumption, idf-formats.md §4). Files are skipped forward. The source's
/// `content_length` is then the remaining length.
pub fn open_range(
    uri: &str,
    start: u64,
    sd: Option<&dyn SdCardFs>,
    opts: &SourceOptions,
) -> Result<RangeOpen, SourceError> {
    open_range_if(uri, start, None, sd, opts)
}

#[cfg(feature = "std")]
/// [`open_range`] with `If-Range: <if_range>` (an ETag or a Last-Modified date seen before):
/// a server whose file no longer matches answers 200 with the whole new file, which comes back
/// with `honoured == false`. Files ignore `if_range` (the SD card has no validators).
pub fn open_range_if(
    uri: &str,
    start: u64,
    if_range: Option<&str>,
    sd: Option<&dyn SdCardFs>,
    opts: &SourceOptions,
) -> Result<RangeOpen, SourceError> {
    match Scheme::of(uri) {
        Some(Scheme::File) => open_file(uri, start, sd, opts),
        Some(Scheme::Http) | Some(Scheme::Https) => open_http(uri, start, if_range, None, opts),
        None => Err(SourceError::UnsupportedScheme {
            uri: uri.to_string(),
        }),
    }
}

#[cfg(feature = "std")]
/// The whole file again, on condition that it is still the version whose strong `ETag` is
/// `etag` (`If-Match: <etag>`, RFC 9110 §13.1.1): a server whose file changed answers 412,
/// which is [`SourceError::HttpStatus`] with status 412. Used by a data item's writing pass
/// after a verifying pass. Files are simply opened again (the SD card has no validators).
pub fn open_if_match(
    uri: &str,
    etag: &str,
    sd: Option<&dyn SdCardFs>,
    opts: &SourceOptions,
) -> Result<RangeOpen, SourceError> {
    match Scheme::of(uri) {
        Some(Scheme::File) => open_file(uri, 0, sd, opts),
        Some(Scheme::Http) | Some(Scheme::Https) => open_http(uri, 0, None, Some(etag), opts),
        None => Err(SourceError::UnsupportedScheme {
            uri: uri.to_string(),
        }),
    }
}

/// How often a download is tried again after a network failure, and how long to wait: the
/// config keys `retries` and `retry_backoff_ms` (README, "Resumable downloads").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first one failed (0: fail at the first error).
    pub retries: u32,
    /// Wait before the first retry; it doubles for each further one, up to [`MAX_BACKOFF`].
    pub backoff: Duration,
}

/// Default `retries`.
pub const DEFAULT_RETRIES: u32 = 3;
/// Default `retry_backoff_ms`.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two attempts, however many retries are allowed.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: DEFAULT_RETRIES,
            backoff: DEFAULT_RETRY_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `n` (1-based): `backoff * 2^(n-1)`, at most [`MAX_BACKOFF`].
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF)
    }
}

impl SourceError {
    /// Whether trying again may help: the connection failed, timed out or broke off, or the
    /// server answered 408, 429 or 5xx. A bad URI, a missing file, TLS and other 4xx answers
    /// are final.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::ConnectionRefused { .. }
            | SourceError::Timeout { .. }
            | SourceError::TooSlow { .. }
            | SourceError::ShortBody { .. }
            | SourceError::Network { .. } => true,
            #[cfg(feature = "std")]
            SourceError::Io { .. } => true,
            SourceError::HttpStatus { status, .. } => {
                matches!(status, 408 | 429) || (500..600).contains(status)
            }
            _ => false,
        }
    }
}

#[cfg(feature = "std")]
fn open_file(
    uri: &str,
    start: u64,
    sd: Option<&dyn SdCardFs>,
    opts: &SourceOptions,
) -> Result<RangeOpen, SourceError> {
    let sd = sd.ok_or_else(|| SourceError::NoSdCard {
        uri: uri.to_string(),
    })?;
    let (mut reader, length) = sd.open(uri)?;
    if length > MAX_SOURCE_LEN {
        return Err(SourceError::TooLarge {
            uri: uri.to_string(),
            limit: MAX_SOURCE_LEN,
        });
    }
    if start > length {
        return Err(SourceError::RangeNotSatisfiable {
            uri: uri.to_string(),
            start,
            length,
        });
    }
    let skipped =
        io::copy(&mut (&mut reader).take(start), &mut io::sink()).map_err(|e| SourceError::Io {
            uri: uri.to_string(),
            phase: Phase::Open,
            source: e.into(),
        })?;
    if skipped < start {
        return Err(SourceError::ShortBody {
            uri: uri.to_string(),
            expected: length,
            got: skipped,
        });
    }
    let remaining = length - start;
    Ok(RangeOpen {
        source: Box::new(StreamSource {
            uri: uri.to_string(),
            reader: Box::new(reader.take(remaining)),
            content_length: Some(remaining),
            got: 0,
            timeout: opts.timeout,
        }),
        honoured: true,
        etag: None,
        last_modified: None,
        total_length: Some(length),
    })
}

#[cfg(feature = "std")]
/// The trust anchors for `https://`: only the certificates in `pem` when pinned (ADF
/// `cert_pem`), otherwise the Mozilla roots of `webpki-roots`.
fn root_store(pem: Option<&[u8]>, uri: &str) -> Result<rustls::RootCertStore, SourceError> {
    let Some(pem) = pem else {
        return Ok(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let bad = |detail: String| SourceError::BadCert {
        uri: uri.to_string(),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0usize;
    for item in rustls_pemfile::certs(&mut &pem[..]) {
        let der = item.map_err(|e| bad(format!("PEM does not parse: {e}")))?;
        count += 1;
        roots
            .add(der)
            .map_err(|e| bad(format!("certificate #{count} rejected: {e}")))?;
    }
    if count == 0 {
        return Err(bad("no CERTIFICATE block in the PEM".to_string()));
    }
    Ok(roots)
}

#[cfg(feature = "std")]
/// The `rustls` client config for `https://` (ring provider, TLS 1.2 and 1.3).
fn tls_config(pem: Option<&[u8]>, uri: &str) -> Result<rustls::ClientConfig, SourceError> {
    let roots = root_store(pem, uri)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SourceError::Tls {
            uri: uri.to_string(),
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(feature = "std")]
fn open_http(
    uri: &str,
    start: u64,
    if_range: Option<&str>,
    if_match: Option<&str>,
    opts: &SourceOptions,
) -> Result<RangeOpen, SourceError> {
    let req = crate::io::Request {
        uri,
        start,
        if_range,
        if_match,
        opts,
    };
    let extra = crate::io::request_headers(&req);
    guard(uri, Phase::Open, || open_http_answer(&req, &extra))
}

/// `GET uri` with `extra` headers (redirects followed and checked by [`http::get`]), judged as
/// an answer to `req` ([`crate::io::judge_http_answer`]).
#[cfg(feature = "std")]
fn open_http_answer(
    req: &crate::io::Request<'_>,
    extra: &[(&str, String)],
) -> Result<RangeOpen, SourceError> {
    let answer = http::get(req.uri, extra, req.opts)?;
    let response = &answer.head;
    let head = crate::io::HttpHead {
        status: response.status,
        reason: &response.reason,
        content_length: answer.body.content_length(),
        content_range: response.header("Content-Range"),
        etag: response.header("ETag"),
        last_modified: response.header("Last-Modified"),
        location: response.header("Location").is_some(),
    };
    let v = crate::io::judge_http_answer(req, &head)?;
    Ok(RangeOpen {
        source: Box::new(answer.body),
        honoured: v.honoured,
        etag: v.etag,
        last_modified: v.last_modified,
        total_length: v.total_length,
    })
}

/// Opens what `req` asks for: `file://` on the SD card `sd` (skipped forward to `req.start`;
/// the card has no validators), `http://` / `https://` with `Range`, `If-Range`, `If-Match`.
/// What the std driver's transport does.
#[cfg(feature = "std")]
pub fn open_request(
    req: &crate::io::Request<'_>,
    sd: Option<&dyn SdCardFs>,
) -> Result<RangeOpen, SourceError> {
    match Scheme::of(req.uri) {
        Some(Scheme::File) => open_file(req.uri, req.start, sd, req.opts),
        Some(Scheme::Http) | Some(Scheme::Https) => {
            open_http(req.uri, req.start, req.if_range, req.if_match, req.opts)
        }
        None => Err(SourceError::UnsupportedScheme {
            uri: req.uri.to_string(),
        }),
    }
}

/// What the std driver's transport does for [`crate::io::Transport::send`]: `http(s)://`
/// only; a 2xx answer is the status, anything else [`SourceError::HttpStatus`].
#[cfg(feature = "std")]
pub fn send_request(req: &crate::io::Upload<'_>) -> Result<u16, SourceError> {
    match Scheme::of(req.uri) {
        Some(Scheme::Http) | Some(Scheme::Https) => guard(req.uri, Phase::Open, || {
            let (status, reason) = http::send(
                req.uri,
                req.method.as_str(),
                req.content_type,
                req.body,
                req.opts,
            )?;
            if (200..300).contains(&status) {
                Ok(status)
            } else {
                Err(SourceError::HttpStatus {
                    uri: req.uri.to_string(),
                    status,
                    reason,
                })
            }
        }),
        Some(Scheme::File) => Err(SourceError::Unsupported {
            uri: req.uri.to_string(),
            detail: format!("cannot {} to the SD card", req.method.as_str()),
        }),
        None => Err(SourceError::UnsupportedScheme {
            uri: req.uri.to_string(),
        }),
    }
}

#[cfg(feature = "std")]
/// Runs `f`, turning a panic (in a dependency, on input nobody foresaw) into
/// [`SourceError::Internal`]: no input may end the process.
fn guard<T>(
    uri: &str,
    phase: Phase,
    f: impl FnOnce() -> Result<T, SourceError>,
) -> Result<T, SourceError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            Err(SourceError::Internal {
                uri: uri.to_string(),
                phase,
                detail,
            })
        }
    }
}

#[cfg(feature = "std")]
/// Maps an I/O error by its kind: refused, timed out, or a plain I/O failure.
fn classify_io(e: io::Error, uri: &str, phase: Phase, timeout: Duration) -> SourceError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => SourceError::ConnectionRefused {
            uri: uri.to_string(),
            detail: e.to_string(),
        },
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => SourceError::Timeout {
            uri: uri.to_string(),
            phase,
            timeout,
        },
        _ => {
            if let Some(tls) = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return SourceError::Tls {
                    uri: uri.to_string(),
                    detail: tls.to_string(),
                };
            }
            SourceError::Io {
                uri: uri.to_string(),
                phase,
                source: e.into(),
            }
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn scheme_is_matched_as_prefix_only() {
        assert_eq!(Scheme::of("file://sdcard/x"), Some(Scheme::File));
        assert_eq!(Scheme::of("http://h/x"), Some(Scheme::Http));
        assert_eq!(Scheme::of("https://h/x"), Some(Scheme::Https));
        assert_eq!(Scheme::of("xhttp://h/x"), None);
        assert_eq!(Scheme::of("foo http://h/x"), None);
        assert_eq!(Scheme::of("HTTP://h/x"), None);
        assert_eq!(Scheme::of(""), None);
    }

    #[test]
    fn adf_sd_path_follows_fatfs_stream_rules() {
        assert_eq!(adf_sd_path("file://sdcard/x.bin").unwrap(), "/sdcard/x.bin");
        assert_eq!(
            adf_sd_path("file:///sdcard/x.bin").unwrap(),
            "/sdcard/x.bin"
        );
        assert_eq!(adf_sd_path("/sdcard/x.bin").unwrap(), "/sdcard/x.bin");
        assert!(adf_sd_path("sdcard/x.bin").is_err());
    }

    #[test]
    fn sd_relative_path_strips_mount_and_rejects_escapes() {
        assert_eq!(
            sd_relative_path("file://sdcard/a/b.bin").unwrap(),
            PathBuf::from("a/b.bin")
        );
        assert_eq!(
            sd_relative_path("file:///sdcard/x.bin").unwrap(),
            PathBuf::from("x.bin")
        );
        for bad in [
            "file://sdcard/../etc/passwd",
            "file://sdcardx/y.bin",
            "file://other/y.bin",
            "file://sdcard/",
        ] {
            let err = sd_relative_path(bad).unwrap_err();
            assert!(
                matches!(err, SourceError::OutsideSdCard { .. }),
                "{bad}: {err}"
            );
            assert_eq!(err.adf_reason(), reason::FILE_NOT_FOUND);
        }
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            retries: 40,
            backoff: Duration::from_millis(100),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(4), Duration::from_millis(800));
        assert_eq!(p.delay(40), MAX_BACKOFF);
    }

    #[test]
    fn only_network_failures_are_transient() {
        let status = |s| SourceError::HttpStatus {
            uri: "u".into(),
            status: s,
            reason: String::new(),
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(404).is_transient());
        assert!(!status(416).is_transient());
        assert!(!SourceError::UnsupportedScheme { uri: "u".into() }.is_transient());
        assert!(SourceError::ShortBody {
            uri: "u".into(),
            expected: 2,
            got: 1
        }
        .is_transient());
    }

    #[test]
    fn adf_reason_depends_on_phase() {
        let t = |phase| SourceError::Timeout {
            uri: "http://x".into(),
            phase,
            timeout: DEFAULT_TIMEOUT,
        };
        assert_eq!(t(Phase::Open).adf_reason(), reason::STREAM_INIT_FAIL);
        assert_eq!(t(Phase::Read).adf_reason(), reason::STREAM_RD_FAIL);
        let u = SourceError::UnsupportedScheme { uri: "x".into() };
        assert_eq!(u.adf_reason(), reason::URL_PARSE_FAIL);
        assert_eq!(u.adf_reason(), 0x90002);
    }

    #[test]
    fn pinned_pem_without_certificate_is_bad_cert() {
        let err = tls_config(Some(b"hello, no pem here"), "https://h/").unwrap_err();
        assert!(matches!(err, SourceError::BadCert { .. }), "{err}");
        assert!(err.to_string().contains("no CERTIFICATE"));
    }

    #[test]
    fn default_roots_are_webpki_roots() {
        let roots = root_store(None, "https://h/").unwrap();
        assert_eq!(roots.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(!roots.is_empty());
    }

    #[test]
    fn stream_source_reports_short_body_not_eof() {
        let mut s = StreamSource {
            uri: "file://sdcard/x".into(),
            reader: Box::new(io::Cursor::new(vec![1u8; 10])),
            content_length: Some(20),
            got: 0,
            timeout: DEFAULT_TIMEOUT,
        };
        let mut buf = [0u8; 64];
        assert_eq!(s.read(&mut buf).unwrap(), 10);
        match s.read(&mut buf) {
            Err(SourceError::ShortBody { expected, got, .. }) => {
                assert_eq!((expected, got), (20, 10))
            }
            other => panic!("expected ShortBody, got {other:?}"),
        }
    }
}
