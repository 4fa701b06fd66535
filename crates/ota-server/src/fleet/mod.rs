//! The fleet server behind `ota serve --fleet`: hawkBit's Direct Device Integration API for
//! devices (`ddi`), a JSON admin API for operators (`admin`), the rollout engine (`rollout`),
//! the database (`store`), tokens (`auth`) and the releases taken from the folder's catalogue
//! (`releases`), and the operator's web page at `/ui` (`ui`).

pub mod admin;
pub mod auth;
pub mod ddi;
pub mod releases;
pub mod rollout;
pub mod store;
pub mod ui;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::catalogue::CatalogueDoc;
use crate::http::RespBody;
use auth::TokenHash;
use store::Store;

/// One log line in ESP-IDF's serial format, `E (1234) fleet: message` (milliseconds since the
/// server started). Tokens are never passed here.
pub fn log(level: char, msg: std::fmt::Arguments<'_>) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let ms = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis();
    eprintln!("{level} ({ms}) fleet: {msg}");
}

/// Default tenant (hawkBit's default tenant name).
pub const DEFAULT_TENANT: &str = "DEFAULT";
/// Default `config.polling.sleep` told to devices.
pub const DEFAULT_POLL_SLEEP: Duration = Duration::from_secs(30);
/// How often each server runs the rollout engine and looks for new releases.
pub const DEFAULT_ENGINE_EVERY: Duration = Duration::from_secs(1);
/// Largest request body the fleet routes read (DDI and admin).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest controller id (hawkBit allows 256; we keep ids short and printable).
pub const MAX_CONTROLLER_ID: usize = 64;

/// `ota serve --fleet` settings.
#[derive(Clone)]
pub struct FleetOptions {
    /// `sqlite:PATH` or `postgres://...`.
    pub db: String,
    pub tenant: String,
    /// Admin token (the admin API is refused without one).
    pub admin_token: Option<String>,
    /// Gateway token: any controller id may poll with it, and is registered on first poll.
    pub gateway_token: Option<String>,
    pub poll_sleep: Duration,
    pub engine_every: Duration,
}

impl std::fmt::Debug for FleetOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetOptions")
            .field("db", &store::redact(&self.db))
            .field("tenant", &self.tenant)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("gateway_token", &self.gateway_token.as_ref().map(|_| "***"))
            .field("poll_sleep", &self.poll_sleep)
            .finish()
    }
}

impl FleetOptions {
    pub fn new(db: impl Into<String>) -> FleetOptions {
        FleetOptions {
            db: db.into(),
            tenant: DEFAULT_TENANT.into(),
            admin_token: None,
            gateway_token: None,
            poll_sleep: DEFAULT_POLL_SLEEP,
            engine_every: DEFAULT_ENGINE_EVERY,
        }
    }
}

/// The fleet part of a running server.
pub struct Fleet {
    pub store: Store,
    pub tenant: String,
    admin: Option<TokenHash>,
    gateway: Option<TokenHash>,
    pub poll_sleep: Duration,
    pub engine_every: Duration,
    /// The served folder (release files are hashed from it) and its catalogue.
    root: Option<PathBuf>,
    catalogue: Arc<RwLock<Arc<CatalogueDoc>>>,
    /// `http` or `https`, for links when the request has no usable Host.
    pub base_url: String,
}

impl Fleet {
    pub async fn open(
        o: &FleetOptions,
        root: Option<PathBuf>,
        catalogue: Arc<RwLock<Arc<CatalogueDoc>>>,
        base_url: String,
    ) -> Result<Fleet, store::StoreError> {
        let store = Store::open(&o.db).await?;
        Ok(Fleet {
            store,
            tenant: o.tenant.clone(),
            admin: o.admin_token.as_deref().map(TokenHash::of),
            gateway: o.gateway_token.as_deref().map(TokenHash::of),
            poll_sleep: o.poll_sleep,
            engine_every: o.engine_every,
            root,
            catalogue,
            base_url,
        })
    }

    /// Whether a path is one of the fleet's: `/api/v1/...`, the page `/ui...` and this
    /// tenant's `/{tenant}/controller/v1/...` (other paths, other tenants included, are files).
    pub fn owns(&self, path: &str) -> bool {
        ui::owns(path)
            || path.starts_with("/api/v1/")
            || path == "/api/v1"
            || path
                .strip_prefix('/')
                .and_then(|p| p.strip_prefix(self.tenant.as_str()))
                .is_some_and(|rest| rest.starts_with("/controller/v1/"))
    }

    /// Answer a fleet request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<RespBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let base = self.link_base(&req);
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let r = if ui::owns(&path) {
            ui::route(self, &parts, body).await
        } else if path.starts_with("/api/v1") {
            admin::route(self, &parts, body).await
        } else {
            ddi::route(self, &parts, body, &base).await
        };
        r.unwrap_or_else(|e| e.response())
    }

    /// Scheme and authority for absolute links (`http://host:port`).
    fn link_base<B>(&self, req: &Request<B>) -> String {
        let scheme = if self.base_url.starts_with("https") {
            "https"
        } else {
            "http"
        };
        match req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            Some(h)
                if !h.is_empty()
                    && h.len() <= 255
                    && h.bytes().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']')
                    }) =>
            {
                format!("{scheme}://{h}")
            }
            _ => self.base_url.clone(),
        }
    }

    /// Look for new releases, then advance running rollouts (what each server does every
    /// `engine_every`).
    pub async fn maintain(&self) {
        if let Err(e) = self.sync_releases().await {
            log('E', format_args!("releases: {e}"));
        }
        if let Err(e) = rollout::tick(&self.store, store::now_ms()).await {
            log('E', format_args!("rollout engine: {e}"));
        }
    }

    pub async fn sync_releases(&self) -> Result<usize, store::StoreError> {
        let Some(root) = &self.root else {
            return Ok(0);
        };
        let doc = self
            .catalogue
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        releases::sync(&self.store, root, &doc.catalogue).await
    }

    pub fn root(&self) -> Option<&std::path::Path> {
        self.root.as_deref()
    }

    fn admin_ok(&self, h: Option<&HeaderValue>) -> Result<(), ApiError> {
        let Some(want) = &self.admin else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the admin API is off: start the server with --admin-token-file",
            ));
        };
        match auth::parse(h.map(|v| v.as_bytes())) {
            Ok(auth::Credential::Bearer(t)) if t.matches(want) => Ok(()),
            Ok(_) => Err(ApiError::unauthorized("Bearer", "admin token not accepted")),
            Err(e) => Err(ApiError::unauthorized("Bearer", e.to_string())),
        }
    }
}

/// An error answer: status and a JSON body `{"errorCode": ..., "message": ...}` (hawkBit's
/// error body has these two keys).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub challenge: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            challenge: None,
        }
    }
    pub fn unauthorized(scheme: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            challenge: Some(scheme),
        }
    }
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn response(self) -> Response<RespBody> {
        let code = match self.status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            409 => "conflict",
            410 => "gone",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            422 => "unprocessable",
            _ => "server_error",
        };
        let body = serde_json::json!({"errorCode": code, "message": self.message});
        let mut r = json(self.status, &body);
        if let Some(s) = self.challenge {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(s));
        }
        r
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> ApiError {
        log('E', format_args!("{e}"));
        let mut a = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        a.challenge = None;
        a
    }
}

impl From<releases::AddError> for ApiError {
    fn from(e: releases::AddError) -> ApiError {
        match e {
            releases::AddError::Store(s) => s.into(),
            other => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
        }
    }
}

impl From<rollout::RolloutError> for ApiError {
    fn from(e: rollout::RolloutError) -> ApiError {
        use rollout::RolloutError as E;
        match e {
            E::Store(s) => s.into(),
            E::Invalid { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            E::NoRelease(_) | E::NoDevices(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            E::NoRollout(_) => ApiError::not_found(e.to_string()),
            E::State { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        }
    }
}

/// A JSON response.
pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<RespBody> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let len = body.len();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/hal+json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An empty 200 answer.
pub fn ok_empty() -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

/// Read a JSON body of at most [`MAX_BODY`] bytes.
pub async fn read_json<B, T>(
    parts: &hyper::http::request::Parts,
    body: B,
    what: &str,
) -> Result<T, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: serde::de::DeserializeOwned,
{
    if let Some(ct) = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let ct = ct.to_ascii_lowercase();
        if !ct.starts_with("application/json") && !ct.contains("+json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{what}: Content-Type {ct} is not JSON (expected application/json)"),
            ));
        }
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{what}: body of {} bytes is larger than {MAX_BODY} bytes",
                declared.unwrap_or(0)
            ),
        ));
    }
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("{what}: body larger than {MAX_BODY} bytes"),
                ));
            }
            return Err(ApiError::bad(format!("{what}: reading the body: {e}")));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("{what}: invalid JSON: {e}")))
}

/// A controller id we accept: 1 to [`MAX_CONTROLLER_ID`] characters of `A-Z a-z 0-9 . _ - :`.
pub fn valid_controller_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CONTROLLER_ID
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b':'))
}

/// `HH:MM:SS`, as DDI's `config.polling.sleep`.
pub fn hhmmss(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_is_hh_mm_ss() {
        assert_eq!(hhmmss(Duration::from_secs(30)), "00:00:30");
        assert_eq!(hhmmss(Duration::from_secs(3723)), "01:02:03");
    }

    #[test]
    fn controller_ids() {
        assert!(valid_controller_id("dev-01.a_b:c"));
        assert!(!valid_controller_id(""));
        assert!(!valid_controller_id("a/b"));
        assert!(!valid_controller_id(&"a".repeat(65)));
    }
}
