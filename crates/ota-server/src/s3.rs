//! The S3 back-end: the same files and catalogue, from an S3-compatible object store
//! (AWS S3, SeaweedFS, MinIO…), path-style, SigV4 through `rust-s3`.
//!
//! Reads are HEAD (cached for the rescan interval) then a presigned GET with the client's range
//! passed through as `Range` and `If-Match: <S3 ETag>`, streamed to the client chunk by chunk.
//! Every call is bounded by a timeout; an unreachable store is a clear 503, never a hang.
//! `ota publish` uploads under a content-addressed key, makes and uploads the delta patches to a
//! new newest app ([`crate::deltas`]) and rewrites `manifest.json`.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue};
use ota_catalogue::{Catalogue, CatalogueEntry, EntryKind, CATALOGUE_FORMAT};
use s3::creds::Credentials;
use s3::{Bucket, Region};
use sha2::Digest as _;
use tokio::sync::mpsc;

use crate::catalogue::{analyse, CatalogueDoc};
use crate::http::RespBody;
use crate::local::relative_path;

/// Default S3 region (SeaweedFS and MinIO accept any; delta-and-scale.md §5.2).
pub const DEFAULT_REGION: &str = "us-east-1";
/// The catalogue's key, under the store's prefix.
pub const CATALOGUE_KEY: &str = "manifest.json";
/// User metadata holding the object's SHA-256 (`x-amz-meta-sha256`), set by `ota publish`.
/// S3 ETags are MD5s or multipart digests, not content hashes (delta-and-scale.md §5.1).
pub const SHA256_META: &str = "sha256";
/// Lifetime of the presigned GET URLs the server makes for itself (seconds).
const PRESIGN_SECS: u32 = 300;
/// Chunks buffered between the S3 stream and the client.
const STREAM_DEPTH: usize = 4;

/// Why the object store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("{0}")]
    Config(String),
    #[error("{0}: not found in the object store")]
    NotFound(String),
    #[error("path `{0}` does not name an object")]
    BadPath(String),
    #[error("object store {endpoint} unreachable while {what}: {detail}")]
    Unreachable {
        endpoint: String,
        what: String,
        detail: String,
    },
    #[error("object store {endpoint} did not answer within {} s while {what}", timeout.as_secs_f32())]
    Timeout {
        endpoint: String,
        what: String,
        timeout: Duration,
    },
    #[error("object store {endpoint} answered HTTP {status} while {what}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Status {
        endpoint: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{0} changed in the object store during the request; retry")]
    Changed(String),
}

/// `s3://BUCKET[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Key prefix, empty or ending with `/`.
    pub prefix: String,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<S3Location, S3Error> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            S3Error::Config(format!("store `{url}` must look like s3://BUCKET[/PREFIX]"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
            return Err(S3Error::Config(format!(
                "store `{url}`: bucket name `{bucket}` must be 3-63 lower-case letters, digits, `-` or `.`"
            )));
        }
        let prefix = prefix.trim_matches('/');
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

/// How to reach the store.
#[derive(Clone, Debug)]
pub struct S3Options {
    pub location: S3Location,
    /// `http://127.0.0.1:8333`, `https://s3.eu-west-1.amazonaws.com`, …
    pub endpoint: String,
    pub region: String,
    /// Credentials; `None` falls back to `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, then anonymous.
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Bound on every call to the store (connect + answer; each chunk of a body).
    pub timeout: Duration,
    /// How long HEAD answers and the catalogue are reused.
    pub cache_ttl: Duration,
}

impl S3Options {
    pub fn new(store: &str, endpoint: &str) -> Result<S3Options, S3Error> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(S3Error::Config(format!(
                "--s3-endpoint `{endpoint}` must start with http:// or https://"
            )));
        }
        Ok(S3Options {
            location: S3Location::parse(store)?,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: DEFAULT_REGION.to_string(),
            access_key: None,
            secret_key: None,
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(2),
        })
    }
}

/// An object as HEAD described it.
#[derive(Clone)]
pub struct S3Object {
    pub key: String,
    pub size: u64,
    /// Our ETag: `"<sha256>"` from the object's metadata when present (strong, a content
    /// hash), else the store's own ETag.
    pub etag: String,
    /// The store's ETag, sent back as `If-Match` so a replaced object is never mixed in.
    pub s3_etag: Option<String>,
    pub modified: Option<SystemTime>,
    store: Arc<Inner>,
}

struct Inner {
    bucket: Box<Bucket>,
    opts: S3Options,
    heads: Mutex<HashMap<String, (Instant, S3Object)>>,
    catalogue: Mutex<Option<(Instant, Arc<CatalogueDoc>)>>,
}

/// The store.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

fn classify(opts: &S3Options, what: &str, e: s3::error::S3Error) -> S3Error {
    use std::error::Error as _;
    if let s3::error::S3Error::Reqwest(r) = &e {
        if r.is_timeout() {
            return S3Error::Timeout {
                endpoint: opts.endpoint.clone(),
                what: what.to_string(),
                timeout: opts.timeout,
            };
        }
        if r.is_connect() {
            let mut detail = r.to_string();
            let mut src = r.source();
            while let Some(s) = src {
                detail = s.to_string();
                src = s.source();
            }
            return S3Error::Unreachable {
                endpoint: opts.endpoint.clone(),
                what: what.to_string(),
                detail,
            };
        }
    }
    if let s3::error::S3Error::HttpFailWithBody(status, body) = e {
        return S3Error::Status {
            endpoint: opts.endpoint.clone(),
            what: what.to_string(),
            status,
            detail: s3_message(&body),
        };
    }
    S3Error::Unreachable {
        endpoint: opts.endpoint.clone(),
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// The `<Message>` of an S3 XML error body, else the body's start.
fn s3_message(body: &str) -> String {
    if let (Some(a), Some(b)) = (body.find("<Message>"), body.find("</Message>")) {
        if a + 9 <= b {
            return body[a + 9..b].to_string();
        }
    }
    body.chars().take(200).collect()
}

fn reqwest_error(opts: &S3Options, what: &str, e: &dyn std::error::Error) -> S3Error {
    let mut detail = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    S3Error::Unreachable {
        endpoint: opts.endpoint.clone(),
        what: what.to_string(),
        detail,
    }
}

impl S3Store {
    pub fn new(opts: S3Options) -> Result<S3Store, S3Error> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let access = opts.access_key.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = opts
            .secret_key
            .clone()
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let creds = match (&access, &secret) {
            (Some(a), Some(s)) => Credentials::new(Some(a), Some(s), None, None, None),
            (None, None) => Credentials::anonymous(),
            _ => {
                return Err(S3Error::Config(
                    "give both the S3 access key and secret key, or neither".to_string(),
                ))
            }
        }
        .map_err(|e| S3Error::Config(format!("S3 credentials: {e}")))?;
        let region = Region::Custom {
            region: opts.region.clone(),
            endpoint: opts.endpoint.clone(),
        };
        let bucket = Bucket::new(&opts.location.bucket, region, creds)
            .map_err(|e| S3Error::Config(format!("S3 bucket {}: {e}", opts.location.bucket)))?
            .with_path_style();
        let bucket = bucket
            .with_request_timeout(opts.timeout)
            .map_err(|e| S3Error::Config(format!("S3 client: {e}")))?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                bucket,
                opts,
                heads: Mutex::new(HashMap::new()),
                catalogue: Mutex::new(None),
            }),
        })
    }

    pub fn options(&self) -> &S3Options {
        &self.inner.opts
    }

    /// `s3://bucket/prefix` for messages.
    pub fn describe(&self) -> String {
        let l = &self.inner.opts.location;
        format!(
            "s3://{}/{} at {}",
            l.bucket, l.prefix, self.inner.opts.endpoint
        )
    }

    /// The object key a URL path names (percent-decoded; `..` and absolute paths refused).
    pub fn key_for(&self, url_path: &str) -> Result<String, S3Error> {
        let rel = relative_path(url_path).map_err(|e| S3Error::BadPath(e.to_string()))?;
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.is_empty() {
            return Err(S3Error::BadPath(url_path.to_string()));
        }
        Ok(format!(
            "{}{}",
            self.inner.opts.location.prefix,
            parts.join("/")
        ))
    }

    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, s3::error::S3Error>>,
    ) -> Result<T, S3Error> {
        let opts = &self.inner.opts;
        match tokio::time::timeout(opts.timeout, fut).await {
            Ok(r) => r.map_err(|e| classify(opts, what, e)),
            Err(_) => Err(S3Error::Timeout {
                endpoint: opts.endpoint.clone(),
                what: what.to_string(),
                timeout: opts.timeout,
            }),
        }
    }

    /// HEAD of the object a URL path names (cached for `cache_ttl`).
    pub async fn head(&self, url_path: &str) -> Result<S3Object, S3Error> {
        let key = self.key_for(url_path)?;
        if let Some((at, obj)) = self.lock_heads().get(&key) {
            if at.elapsed() < self.inner.opts.cache_ttl {
                return Ok(obj.clone());
            }
        }
        let obj = self.head_key(&key).await?;
        self.lock_heads()
            .insert(key.clone(), (Instant::now(), obj.clone()));
        Ok(obj)
    }

    fn lock_heads(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, S3Object)>> {
        self.inner.heads.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn head_key(&self, key: &str) -> Result<S3Object, S3Error> {
        let what = format!("reading the metadata of {key}");
        let (h, status) = self
            .bounded(&what, self.inner.bucket.head_object(key))
            .await?;
        if status == 404 {
            return Err(S3Error::NotFound(key.to_string()));
        }
        if !(200..300).contains(&status) {
            return Err(S3Error::Status {
                endpoint: self.inner.opts.endpoint.clone(),
                what,
                status,
                detail: String::new(),
            });
        }
        let sha = h
            .metadata
            .as_ref()
            .and_then(|m| m.get(SHA256_META))
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|s| s.to_ascii_lowercase());
        let s3_etag = h.e_tag.clone();
        let etag = match (&sha, &s3_etag) {
            (Some(s), _) => format!("\"{s}\""),
            (None, Some(e)) if e.starts_with('"') => e.clone(),
            (None, Some(e)) => format!("\"{e}\""),
            (None, None) => format!("\"{key}\""),
        };
        Ok(S3Object {
            key: key.to_string(),
            size: h.content_length.unwrap_or(0).max(0) as u64,
            etag,
            s3_etag,
            modified: h
                .last_modified
                .as_deref()
                .and_then(|d| httpdate::parse_http_date(d).ok()),
            store: self.inner.clone(),
        })
    }

    /// The catalogue (`<prefix>manifest.json`), reused for `cache_ttl`. A store without one
    /// has an empty catalogue; a store that cannot be reached is an error (→ 503).
    pub async fn catalogue(&self) -> Result<Arc<CatalogueDoc>, S3Error> {
        if let Some((at, doc)) = self.lock_catalogue().as_ref() {
            if at.elapsed() < self.inner.opts.cache_ttl {
                return Ok(doc.clone());
            }
        }
        let (cat, signed) = self.read_catalogue_doc().await?;
        let doc = {
            let mut slot = self.lock_catalogue();
            // Keep the same document (and its Last-Modified) when nothing changed. A signed
            // one is served as the very bytes that were signed.
            let doc = match (slot.as_ref(), signed) {
                (Some((_, old)), None) if old.catalogue == cat => old.clone(),
                (Some((_, old)), Some(raw)) if old.json == raw => old.clone(),
                (_, None) => Arc::new(CatalogueDoc::from_catalogue(cat)),
                (_, Some(raw)) => Arc::new(CatalogueDoc::with_json(cat, raw)),
            };
            *slot = Some((Instant::now(), doc.clone()));
            doc
        };
        Ok(doc)
    }

    fn lock_catalogue(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Arc<CatalogueDoc>)>> {
        self.inner
            .catalogue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// `s3://bucket/prefix/manifest.json`, for messages.
    pub fn catalogue_url(&self) -> String {
        format!(
            "s3://{}/{}",
            self.inner.opts.location.bucket,
            self.catalogue_key()
        )
    }

    fn catalogue_key(&self) -> String {
        format!("{}{}", self.inner.opts.location.prefix, CATALOGUE_KEY)
    }

    async fn read_catalogue(&self) -> Result<Catalogue, S3Error> {
        self.read_catalogue_doc().await.map(|(c, _)| c)
    }

    /// The store's catalogue, and its bytes when it is a signed envelope (served as they are).
    async fn read_catalogue_doc(&self) -> Result<(Catalogue, Option<bytes::Bytes>), S3Error> {
        let key = self.catalogue_key();
        let what = format!("reading {key}");
        let r = self
            .bounded(&what, self.inner.bucket.get_object(&key))
            .await?;
        match r.status_code() {
            404 => Ok((
                Catalogue {
                    format: CATALOGUE_FORMAT,
                    serial: None,
                    entries: Vec::new(),
                },
                None,
            )),
            200 => {
                let doc = ota_catalogue::signed::read_document(r.bytes())
                    .map_err(|e| S3Error::Config(format!("{key} in {}: {e}", self.describe())))?;
                match doc {
                    ota_catalogue::signed::Document::Plain(c) => Ok((c, None)),
                    ota_catalogue::signed::Document::Signed { catalogue, .. } => {
                        Ok((catalogue, Some(bytes::Bytes::copy_from_slice(r.bytes()))))
                    }
                }
            }
            status => Err(S3Error::Status {
                endpoint: self.inner.opts.endpoint.clone(),
                what,
                status,
                detail: s3_message(&String::from_utf8_lossy(r.bytes())),
            }),
        }
    }

    /// Uploads FILE under a content-addressed key (`firmware/<project>/<sha256>.bin` for apps,
    /// `tone/<sha256>.bin` for tone bins), unless an object of that size is already there, and
    /// rewrites the catalogue: the new entry added, entries whose objects are gone dropped.
    /// Corrupt images and other files are refused before anything is uploaded.
    ///
    /// With `sign_key` the new catalogue is signed ([`ota_catalogue::signed`]) with a serial
    /// above the one it replaces; without, it is written plain.
    ///
    /// When the image becomes the newest app of its chip and project, patches to it from up to
    /// `opts.delta_bases` previous versions are made as [`crate::deltas`] makes a folder's (the
    /// bases downloaded from the store and checked against their entries' SHA-256; a base that
    /// fails is skipped and said so in [`PublishReport::deltas`]), uploaded content-addressed
    /// as `deltas/<project>/<sha256>.patch` and listed in its entry's `deltas`. The entries
    /// that are not the newest of their chip and project keep none.
    pub async fn publish(
        &self,
        file: &Path,
        sign_key: Option<&ota_catalogue::signed::SigningKey>,
        opts: &PublishOptions,
    ) -> Result<PublishReport, S3Error> {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|e| S3Error::Config(format!("reading {}: {e}", file.display())))?;
        let probe = analyse("", &bytes[..])
            .map_err(|e| S3Error::Config(format!("reading {}: {e}", file.display())))?;
        if let Some(err) = &probe.error {
            return Err(S3Error::Config(format!(
                "refusing to publish {}: {err}",
                file.display()
            )));
        }
        let rel = match probe.kind {
            EntryKind::App => format!(
                "firmware/{}/{}.bin",
                safe_segment(probe.project.as_deref().unwrap_or("app")),
                probe.sha256
            ),
            EntryKind::Tone => format!("tone/{}.bin", probe.sha256),
            EntryKind::Unknown => {
                return Err(S3Error::Config(format!(
                    "refusing to publish {}: neither an app image nor a tone bin",
                    file.display()
                )))
            }
        };
        let key = format!("{}{}", self.inner.opts.location.prefix, rel);
        let entry = CatalogueEntry {
            path: format!("/{rel}"),
            ..probe
        };
        let uploaded = self.put_once(&key, &bytes, &entry.sha256).await?;

        // Rewrite the catalogue: keep entries whose objects still exist, replace ours.
        let mut cat = self.read_catalogue().await?;
        let listed_before = self.patch_keys(&cat.entries);
        let what = format!("listing {}", self.describe());
        let pages = self
            .bounded(
                &what,
                self.inner
                    .bucket
                    .list(self.inner.opts.location.prefix.clone(), None),
            )
            .await?;
        let present: std::collections::HashSet<String> = pages
            .into_iter()
            .flat_map(|p| p.contents.into_iter().map(|o| o.key))
            .collect();
        let prefix = &self.inner.opts.location.prefix;
        cat.entries.retain(|e| {
            e.path != entry.path
                && present.contains(&format!("{prefix}{}", e.path.trim_start_matches('/')))
        });
        cat.entries.push(entry.clone());
        cat.entries.sort_by(|a, b| a.path.cmp(&b.path));
        cat.format = CATALOGUE_FORMAT;
        let notes = self
            .attach_deltas(&mut cat.entries, &entry, &bytes, &present, opts)
            .await;
        let entry = cat
            .entries
            .iter()
            .find(|e| e.path == entry.path)
            .cloned()
            .unwrap_or(entry);
        let json = match sign_key {
            Some(k) => {
                let serial = crate::catalogue::next_serial(cat.serial);
                let doc = k.sign(&cat, serial);
                cat = doc.catalogue;
                doc.json
            }
            None => {
                cat.serial = None;
                cat.to_json()
            }
        };
        let ckey = self.catalogue_key();
        let what = format!("writing {ckey}");
        let r = self
            .bounded(
                &what,
                self.inner
                    .bucket
                    .put_object_with_content_type(&ckey, &json, "application/json"),
            )
            .await?;
        self.check_status(&what, r.status_code(), r.bytes())?;
        *self.lock_catalogue() = None;
        let (pruned, prune_failed) = self
            .prune_patches(&present, &listed_before, &self.patch_keys(&cat.entries))
            .await;
        Ok(PublishReport {
            key,
            entry,
            uploaded,
            entries: cat.entries.len(),
            serial: cat.serial,
            deltas: notes,
            pruned,
            prune_failed,
        })
    }

    /// The object keys of the patches `entries` list.
    fn patch_keys(&self, entries: &[CatalogueEntry]) -> std::collections::HashSet<String> {
        entries
            .iter()
            .flat_map(|e| e.deltas.iter())
            .filter_map(|d| self.key_for(&d.path).ok())
            .collect()
    }

    /// Delete the superseded patch objects: `deltas/<project>/<64 hex>.patch` keys of the
    /// store (`present`, listed before this publish) that neither the new catalogue nor the
    /// one it replaced lists. Those of the replaced catalogue stay for one more publish: a
    /// device that fetched it may be downloading one of them now (and if it is gone later, the
    /// device falls back to the full image). Returns the keys deleted, and those that could
    /// not be, with why (the publish itself has succeeded by then).
    async fn prune_patches(
        &self,
        present: &std::collections::HashSet<String>,
        listed_before: &std::collections::HashSet<String>,
        listed_now: &std::collections::HashSet<String>,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let dir = format!("{}deltas/", self.inner.opts.location.prefix);
        let mut stale: Vec<&String> = present
            .iter()
            .filter(|k| {
                k.strip_prefix(&dir).is_some_and(is_patch_key)
                    && !listed_before.contains(*k)
                    && !listed_now.contains(*k)
            })
            .collect();
        stale.sort();
        let (mut pruned, mut failed) = (Vec::new(), Vec::new());
        for key in stale {
            let what = format!("deleting {key}");
            let r = self
                .bounded(&what, self.inner.bucket.delete_object(key))
                .await
                .and_then(|r| self.check_status(&what, r.status_code(), r.bytes()));
            match r {
                Ok(()) => pruned.push(key.clone()),
                Err(e) => failed.push((key.clone(), e.to_string())),
            }
        }
        *self.lock_heads() = Default::default();
        (pruned, failed)
    }

    /// Upload `bytes` under `key` (with its SHA-256 in the metadata) unless an object of that
    /// size is already there (the keys are content-addressed). True when uploaded.
    async fn put_once(&self, key: &str, bytes: &[u8], sha256: &str) -> Result<bool, S3Error> {
        match self.head_key(key).await {
            Ok(o) if o.size == bytes.len() as u64 => Ok(false),
            Ok(_) | Err(S3Error::NotFound(_)) => {
                let mut headers = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(sha256) {
                    headers.insert("x-amz-meta-sha256", v);
                }
                let what = format!("uploading {key}");
                let r = self
                    .bounded(
                        &what,
                        self.inner.bucket.put_object_with_content_type_and_headers(
                            key,
                            bytes,
                            "application/octet-stream",
                            Some(headers),
                        ),
                    )
                    .await?;
                self.check_status(&what, r.status_code(), r.bytes())?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// The `deltas` of the rewritten catalogue `entries` (which hold `new`, whose bytes are
    /// `new_bytes`): listings whose patch objects are gone are dropped, entries that are not
    /// the newest of their chip and project keep none, and when `new` is the newest of its
    /// own, its patches are made and uploaded afresh. Returns what became of them.
    async fn attach_deltas(
        &self,
        entries: &mut [CatalogueEntry],
        new: &CatalogueEntry,
        new_bytes: &[u8],
        present: &std::collections::HashSet<String>,
        opts: &PublishOptions,
    ) -> Vec<DeltaNote> {
        for e in entries.iter_mut() {
            e.deltas
                .retain(|d| self.key_for(&d.path).is_ok_and(|k| present.contains(&k)));
        }
        let plans = crate::deltas::plan(entries);
        for (i, e) in entries.iter_mut().enumerate() {
            if !plans.iter().any(|p| p.target == i) {
                e.deltas.clear();
            }
        }
        let Some(me) = entries.iter().position(|e| e.path == new.path) else {
            return Vec::new();
        };
        let Some(plan) = plans
            .iter()
            .find(|p| p.target == me || p.bases.contains(&me))
        else {
            return Vec::new(); // not an app that gets patches (tone bin, no version)
        };
        if plan.target != me {
            let t = &entries[plan.target];
            return vec![DeltaNote::NotNewest {
                newest_version: t.version.clone(),
                newest_path: t.path.clone(),
            }];
        }
        entries[me].deltas.clear();
        if opts.delta_bases == 0 {
            return Vec::new();
        }
        if plan.bases.is_empty() {
            return vec![DeltaNote::NoBases];
        }
        let mut notes = Vec::new();
        let mut made = Vec::new();
        for &b in &plan.bases {
            if made.len() >= opts.delta_bases {
                break;
            }
            let base = &entries[b];
            match self.delta_from(base, &entries[me], new_bytes, opts).await {
                Ok((listing, key, uploaded)) => {
                    notes.push(DeltaNote::Made {
                        base_version: base.version.clone(),
                        target_version: new.version.clone(),
                        size: listing.size,
                        image_size: new_bytes.len() as u64,
                        key,
                        uploaded,
                    });
                    made.push(listing);
                }
                Err(reason) => notes.push(DeltaNote::Skipped {
                    base_version: base.version.clone(),
                    base_path: base.path.clone(),
                    reason,
                }),
            }
        }
        entries[me].deltas = made;
        notes
    }

    /// The patch from `base` (downloaded and verified) to `target`, uploaded: its listing,
    /// key and whether it was uploaded (false: already there). Errors say why not.
    async fn delta_from(
        &self,
        base: &CatalogueEntry,
        target: &CatalogueEntry,
        new_bytes: &[u8],
        opts: &PublishOptions,
    ) -> Result<(ota_catalogue::DeltaPatch, String, bool), String> {
        let limit = opts.max_base.min(crate::deltas::MAX_IMAGE);
        let old = self.fetch_verified(base, limit).await?;
        let made = crate::deltas::make_patch(base, &old, target, new_bytes)?;
        let rel = format!(
            "deltas/{}/{}.patch",
            safe_segment(target.project.as_deref().unwrap_or("app")),
            made.listing.sha256
        );
        let key = format!("{}{}", self.inner.opts.location.prefix, rel);
        let uploaded = self
            .put_once(&key, &made.bytes, &made.listing.sha256)
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            ota_catalogue::DeltaPatch {
                path: format!("/{rel}"),
                ..made.listing
            },
            key,
            uploaded,
        ))
    }

    /// The bytes of the object entry `e` names, at most `limit` bytes and exactly the size the
    /// catalogue gives, checked against the entry's SHA-256. Each call and each chunk is
    /// bounded by the store's timeout, and the whole download by [`download_deadline`].
    async fn fetch_verified(&self, e: &CatalogueEntry, limit: u64) -> Result<Vec<u8>, String> {
        if e.size > limit {
            return Err(format!(
                "{} bytes in the catalogue, over the {limit}-byte bound",
                e.size
            ));
        }
        let key = self.key_for(&e.path).map_err(|x| x.to_string())?;
        let obj = self.head_key(&key).await.map_err(|x| x.to_string())?;
        if obj.size != e.size {
            return Err(format!(
                "{key} is {} bytes, the catalogue says {}",
                obj.size, e.size
            ));
        }
        let deadline = download_deadline(self.inner.opts.timeout, e.size);
        let download = async {
            let mut body = obj.body(0, obj.size).await.map_err(|x| x.to_string())?;
            let mut out = Vec::with_capacity(e.size as usize);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|x| x.to_string())?;
                if let Ok(data) = frame.into_data() {
                    if out.len() + data.len() > e.size as usize {
                        return Err(format!("{key}: more than the {} bytes announced", e.size));
                    }
                    out.extend_from_slice(&data);
                }
            }
            Ok(out)
        };
        let bytes = tokio::time::timeout(deadline, download)
            .await
            .map_err(|_| format!("{key}: not downloaded within {} s", deadline.as_secs_f32()))??;
        let sha = ota_core::image::Hex(&sha2::Sha256::digest(&bytes)).to_string();
        if sha != e.sha256 {
            return Err(format!(
                "{key}: its SHA-256 is {sha}, the catalogue says {}",
                e.sha256
            ));
        }
        Ok(bytes)
    }

    fn check_status(&self, what: &str, status: u16, body: &[u8]) -> Result<(), S3Error> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(S3Error::Status {
            endpoint: self.inner.opts.endpoint.clone(),
            what: what.to_string(),
            status,
            detail: s3_message(&String::from_utf8_lossy(body)),
        })
    }
}

/// The whole download of a base may take one store timeout per MiB (started), i.e. it must
/// go at 1 MiB per timeout at least (≈ 205 KiB/s at the default 5 s): a store that trickles
/// bytes just fast enough to beat the per-chunk timeout still ends.
pub fn download_deadline(timeout: Duration, size: u64) -> Duration {
    let mibs = size.div_ceil(1 << 20).max(1);
    timeout.saturating_mul(u32::try_from(mibs).unwrap_or(u32::MAX))
}

/// How `publish` makes patches.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// Patches from this many previous versions of the chip and project (0: none).
    pub delta_bases: usize,
    /// The largest base image downloaded to make a patch from (the patch maker's own bound,
    /// [`crate::deltas::MAX_IMAGE`], applies as well).
    pub max_base: u64,
}

impl Default for PublishOptions {
    fn default() -> PublishOptions {
        PublishOptions {
            delta_bases: crate::deltas::DEFAULT_DELTA_BASES,
            max_base: crate::deltas::MAX_IMAGE,
        }
    }
}

/// What became of the patches to a published image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeltaNote {
    /// A patch made (and uploaded unless `uploaded` is false: the same one was there).
    Made {
        base_version: Option<String>,
        target_version: Option<String>,
        size: u64,
        /// Bytes of the target image.
        image_size: u64,
        key: String,
        uploaded: bool,
    },
    /// A base skipped (download, size, SHA-256, patch or upload failed): why.
    Skipped {
        base_version: Option<String>,
        base_path: String,
        reason: String,
    },
    /// The image is not the newest of its chip and project: no patches to it.
    NotNewest {
        newest_version: Option<String>,
        newest_path: String,
    },
    /// The store holds no earlier version of the chip and project to make a patch from.
    NoBases,
}

/// What `publish` did.
#[derive(Clone, Debug)]
pub struct PublishReport {
    pub key: String,
    pub entry: CatalogueEntry,
    /// False when the same content was already stored under that key.
    pub uploaded: bool,
    /// The signed catalogue's serial (None: written unsigned).
    pub serial: Option<u64>,
    /// Entries in the rewritten catalogue.
    pub entries: usize,
    /// The patches to the published image, made or skipped.
    pub deltas: Vec<DeltaNote>,
    /// Superseded patch objects deleted (listed in neither the new catalogue nor the one it
    /// replaced).
    pub pruned: Vec<String>,
    /// Superseded patch objects that could not be deleted, with the error.
    pub prune_failed: Vec<(String, String)>,
}

/// `<project>/<64 lowercase hex>.patch`: a key this crate made under `deltas/`.
fn is_patch_key(rest: &str) -> bool {
    rest.split_once('/').is_some_and(|(project, file)| {
        !project.is_empty() && !file.contains('/') && crate::deltas::is_patch_name(file)
    })
}

/// A project name as one key segment (letters, digits, `-`, `_`, `.`; others become `_`).
fn safe_segment(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        "_".to_string()
    } else {
        out
    }
}

impl S3Object {
    /// Bytes `start..end` of the object, streamed: a presigned GET with `Range` (when not the
    /// whole object) and `If-Match` on the store's ETag.
    pub async fn body(&self, start: u64, end: u64) -> Result<RespBody, S3Error> {
        let inner = &self.store;
        let opts = &inner.opts;
        let what = format!("reading {}", self.key);
        let url = tokio::time::timeout(
            opts.timeout,
            inner.bucket.presign_get(&self.key, PRESIGN_SECS, None),
        )
        .await
        .map_err(|_| S3Error::Timeout {
            endpoint: opts.endpoint.clone(),
            what: what.clone(),
            timeout: opts.timeout,
        })?
        .map_err(|e| classify(opts, &what, e))?;
        let mut req = inner.bucket.http_client().get(url);
        if start != 0 || end != self.size {
            req = req.header(
                "Range",
                format!("bytes={}-{}", start, end.saturating_sub(1)),
            );
        }
        if let Some(e) = &self.s3_etag {
            req = req.header("If-Match", e.as_str());
        }
        let mut resp = match tokio::time::timeout(opts.timeout, req.send()).await {
            Err(_) => {
                return Err(S3Error::Timeout {
                    endpoint: opts.endpoint.clone(),
                    what,
                    timeout: opts.timeout,
                })
            }
            Ok(Err(e)) => return Err(reqwest_error(opts, &what, &e)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        match status {
            200 | 206 => {}
            404 => return Err(S3Error::NotFound(self.key.clone())),
            412 => {
                inner
                    .heads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.key);
                return Err(S3Error::Changed(self.key.clone()));
            }
            _ => {
                return Err(S3Error::Status {
                    endpoint: opts.endpoint.clone(),
                    what,
                    status,
                    detail: String::new(),
                })
            }
        }
        // A store that ignored the Range answers 200 with the whole object: skip to `start`.
        let skip = if status == 200 { start } else { 0 };
        let want = end - start;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(STREAM_DEPTH);
        let timeout = opts.timeout;
        let key = self.key.clone();
        tokio::spawn(async move {
            let mut skipped = 0u64;
            let mut sent = 0u64;
            loop {
                let chunk = match tokio::time::timeout(timeout, resp.chunk()).await {
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{key}: the object store stalled"),
                    )),
                    Ok(Err(e)) => Err(io::Error::other(format!("{key}: {e}"))),
                    Ok(Ok(c)) => Ok(c),
                };
                let mut chunk = match chunk {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        if sent < want {
                            let _ = tx
                                .send(Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    format!("{key}: the object store sent {sent} of {want} bytes"),
                                )))
                                .await;
                        }
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if skipped < skip {
                    let drop = (skip - skipped).min(chunk.len() as u64) as usize;
                    skipped += drop as u64;
                    chunk = chunk.slice(drop..);
                }
                let room = (want - sent).min(chunk.len() as u64) as usize;
                if room == 0 {
                    if sent >= want {
                        return;
                    }
                    continue;
                }
                let piece = chunk.slice(..room);
                sent += piece.len() as u64;
                if tx.send(Ok(piece)).await.is_err() {
                    return; // the client went away
                }
                if sent >= want {
                    return;
                }
            }
        });
        Ok(ChannelBody {
            rx,
            remaining: want,
        }
        .boxed_unsync())
    }
}

/// A body fed by a task through a bounded channel.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the object store stream ended early",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_bucket_and_prefix() {
        assert_eq!(
            S3Location::parse("s3://firmware").unwrap(),
            S3Location {
                bucket: "firmware".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            S3Location::parse("s3://firmware/ota/prod/").unwrap().prefix,
            "ota/prod/"
        );
        for bad in ["firmware", "s3://", "s3://AB", "s3://a_b/x", "http://x/y"] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_refuse_traversal() {
        let mut o = S3Options::new("s3://fwb/pre", "http://127.0.0.1:1").unwrap();
        o.timeout = Duration::from_millis(100);
        let s = S3Store::new(o).unwrap();
        assert_eq!(s.key_for("/a/b.bin").unwrap(), "pre/a/b.bin");
        assert!(s.key_for("/../x").is_err());
        assert!(s.key_for("/%2e%2e/x").is_err());
        assert!(s.key_for("/").is_err());
    }

    #[test]
    fn a_base_download_has_one_timeout_per_mib() {
        let t = Duration::from_secs(5);
        assert_eq!(download_deadline(t, 0), t);
        assert_eq!(download_deadline(t, 1 << 20), t);
        assert_eq!(download_deadline(t, (1 << 20) + 1), t * 2);
        assert_eq!(download_deadline(t, 16 << 20), t * 16);
    }

    #[test]
    fn endpoints_need_a_scheme() {
        assert!(S3Options::new("s3://fw", "127.0.0.1:8333").is_err());
    }

    #[test]
    fn safe_segment_keeps_keys_simple() {
        assert_eq!(safe_segment("play_mp3_control"), "play_mp3_control");
        assert_eq!(safe_segment("a/b c"), "a_b_c");
        assert_eq!(safe_segment(".."), "_");
    }

    #[test]
    fn s3_message_extracts_the_xml_message() {
        assert_eq!(
            s3_message("<Error><Code>X</Code><Message>Access Denied.</Message></Error>"),
            "Access Denied."
        );
    }
}
