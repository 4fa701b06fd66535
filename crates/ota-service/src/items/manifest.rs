//! The catalogue (`/manifest.json` of `ota serve`) and the app item that upgrades through it.
//!
//! [`Catalogue`] is the JSON contract between the server and devices. [`ManifestItem`] fetches
//! it, picks the newest valid image for the device's chip and project under the item's version
//! policy, and hands the download to [`AppItem`]; the bytes are checked against the catalogue's
//! size and SHA-256 as they stream, and a mismatch fails the item before the engine's `finish`,
//! so otadata is never switched to an image the catalogue does not vouch for.

use alloc::rc::Rc;
use core::cell::{Cell, RefCell};
use ota_core::image::Hex;

use embedded_storage::nor_flash::NorFlash;
use ota_core::version::VersionPolicy;
use sha2::{Digest, Sha256};

use super::delta::{apply_patch, DeltaPlan, DeltaRun};
use super::download::{Fetch, FetchSpec, Next, StreamCheck};
use super::{source_error, AppItem};
use crate::io::BoxFuture;
use crate::prelude::*;
use crate::reason::Reason;
use crate::service::{Device, Env, Event, ItemError, Need, Outcome, UpgradeItem};
use crate::source::{self, RetryPolicy, TransferLimits};

// The catalogue's format lives in `ota-catalogue` (no_std + alloc: the server and the chip
// read it too); re-exported so `items::manifest::*` paths keep working.
pub use ota_catalogue::{
    parse_sha256, pick, Catalogue, CatalogueEntry, EntryKind, PickError, CATALOGUE_FORMAT,
    CATALOGUE_PATH, MAX_CATALOGUE_BYTES,
};

pub use ota_catalogue::signed::{PublicKey as CatalogueKey, VerifyError as CatalogueRefused};

/// How a trust checks a document: [`ota_catalogue::signed::verify`] with its key.
type Verifier =
    dyn Fn(&[u8], Option<u64>) -> Result<ota_catalogue::signed::Verified, CatalogueRefused>;

/// A device's trust in signed catalogues: the public key they must be signed with, and the
/// serial of the newest one it accepted (older ones are replays). Shared by the items of a
/// list; the driver reads `last_serial` back (or follows [`Event::CatalogueAccepted`]) and
/// keeps it across runs (on a chip: NVS; on the emulator: the device's settings file).
///
/// The signature check is reached only through the closure [`CatalogueTrust::new`] makes, so a
/// firmware that never makes a trust does not link the Ed25519 / P-256 code.
#[derive(Clone)]
pub struct CatalogueTrust {
    verifier: Rc<Verifier>,
    /// The key's algorithm and id, for logs.
    pub algorithm: ota_catalogue::signed::Algorithm,
    pub key_id: String,
    pub last_serial: Rc<Cell<Option<u64>>>,
}

impl core::fmt::Debug for CatalogueTrust {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CatalogueTrust")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("last_serial", &self.last_serial.get())
            .finish()
    }
}

impl CatalogueTrust {
    pub fn new(key: CatalogueKey, last_serial: Option<u64>) -> Self {
        let (algorithm, key_id) = (key.algorithm(), key.key_id_hex());
        CatalogueTrust {
            verifier: Rc::new(move |doc: &[u8], last: Option<u64>| {
                ota_catalogue::signed::verify(doc, &key, last)
            }),
            algorithm,
            key_id,
            last_serial: Rc::new(Cell::new(last_serial)),
        }
    }

    /// [`ota_catalogue::signed::verify`] of `doc` with this trust's key and serial.
    pub fn verify(&self, doc: &[u8]) -> Result<ota_catalogue::signed::Verified, CatalogueRefused> {
        (self.verifier)(doc, self.last_serial.get())
    }
}

/// Where and how an item fetches a catalogue.
pub(crate) struct CatalogueFetch<'a> {
    pub uri: &'a str,
    pub ca_pem: &'a Option<Vec<u8>>,
    pub limits: Option<TransferLimits>,
    pub retry: RetryPolicy,
    pub trust: Option<&'a CatalogueTrust>,
}

/// The catalogue a data item's file is checked against (its `catalogue` in the config).
///
/// The fetch and the JSON parser are reached only through the function this makes, so a
/// firmware whose data items name no catalogue does not link them.
#[derive(Clone)]
pub struct CatalogueLink {
    /// The catalogue's URI (`http://host:port/manifest.json`, `https://…`, `file://sdcard/…`).
    pub uri: String,
    pub(crate) read: CatalogueRead,
}

pub(crate) type CatalogueRead = for<'a, 'e> fn(
    CatalogueFetch<'a>,
    usize,
    &'a mut Env<'e>,
) -> BoxFuture<'a, Result<Catalogue, ItemError>>;

impl CatalogueLink {
    pub fn new(uri: impl Into<String>) -> Self {
        CatalogueLink {
            uri: uri.into(),
            read: read_boxed,
        }
    }
}

impl core::fmt::Debug for CatalogueLink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CatalogueLink")
            .field("uri", &self.uri)
            .finish()
    }
}

fn read_boxed<'a, 'e>(
    f: CatalogueFetch<'a>,
    id: usize,
    env: &'a mut Env<'e>,
) -> BoxFuture<'a, Result<Catalogue, ItemError>> {
    Box::pin(fetch_catalogue(f, id, env))
}

/// The catalogue is read this many bytes at a time.
const CATALOGUE_CHUNK: usize = 4096;
const TAG: &str = "OTA_MANIFEST";
/// The delta path's log tag (esp_delta_ota's component name).
const TAG_DELTA: &str = "esp_delta_ota";
/// detools compressions the device's applier (`ota_core::delta`, no allocator) decodes.
const DEVICE_COMPRESSIONS: [&str; 2] = ["heatshrink", "none"];
const TAG_DEFAULT: &str = "OTA_DEFAULT";

/// The download URL of `entry_path` in the catalogue at `catalogue_uri`: absolute URLs as they
/// are; `/x` on the catalogue's origin; anything else beside the catalogue.
pub fn resolve(catalogue_uri: &str, entry_path: &str) -> String {
    if source::Scheme::of(entry_path).is_some() {
        return entry_path.to_string();
    }
    let after_scheme = catalogue_uri.find("://").map_or(0, |i| i + 3);
    let rest = catalogue_uri.get(after_scheme..).unwrap_or("");
    if entry_path.starts_with('/') {
        let origin_end = rest
            .find('/')
            .map_or(catalogue_uri.len(), |i| after_scheme + i);
        format!("{}{}", &catalogue_uri[..origin_end], entry_path)
    } else {
        let dir_end = rest
            .rfind('/')
            .map_or(catalogue_uri.len(), |i| after_scheme + i);
        format!("{}/{}", &catalogue_uri[..dir_end], entry_path)
    }
}

/// The catalogue's word on the download: counts and hashes the bytes as they stream, and fails
/// the stream's end (or the byte past the size) when they differ from the catalogue's. It
/// follows the download through reconnects and starts over with it.
pub(crate) struct CatalogueCheck {
    size: u64,
    sha256: [u8; 32],
    hasher: Sha256,
    got: u64,
    mismatch: Rc<RefCell<Option<String>>>,
    /// Who vouches for size and hash, in messages: "the catalogue", "the deployment".
    pub(crate) who: &'static str,
}

impl CatalogueCheck {
    pub(crate) fn new(size: u64, sha256: [u8; 32], mismatch: Rc<RefCell<Option<String>>>) -> Self {
        CatalogueCheck {
            size,
            sha256,
            hasher: Sha256::new(),
            got: 0,
            mismatch,
            who: "the catalogue",
        }
    }

    fn fail(&self, detail: String) -> Result<(), String> {
        *self.mismatch.borrow_mut() = Some(detail.clone());
        Err(detail)
    }
}

impl StreamCheck for CatalogueCheck {
    fn restart(&mut self, total: Option<u64>) -> Result<(), String> {
        self.hasher = Sha256::new();
        self.got = 0;
        match total {
            Some(n) if n != self.size => self.fail(format!(
                "the server sends {n} bytes, {} says {}",
                self.who, self.size
            )),
            _ => Ok(()),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.got += bytes.len() as u64;
        if self.got > self.size {
            return self.fail(format!(
                "the download is longer than the {} bytes {} says",
                self.size, self.who
            ));
        }
        self.hasher.update(bytes);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        if self.got != self.size {
            return self.fail(format!(
                "the download has {} bytes, {} says {}",
                self.got, self.who, self.size
            ));
        }
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        if digest != self.sha256 {
            return self.fail(format!(
                "SHA-256 of the download is {}, {} says {}",
                Hex(&digest),
                self.who,
                Hex(&self.sha256)
            ));
        }
        Ok(())
    }
}

/// Fetch the catalogue at `f.uri` (bounded by [`MAX_CATALOGUE_BYTES`]) and read it: with a
/// trust, only a signed catalogue that [`ota_catalogue::signed::verify`] accepts, whose serial
/// then becomes the device's newest ([`Event::CatalogueAccepted`]); without, a plain or signed
/// one, unverified. Nothing is written to flash here.
pub(crate) async fn fetch_catalogue(
    f: CatalogueFetch<'_>,
    id: usize,
    env: &mut Env<'_>,
) -> Result<Catalogue, ItemError> {
    let opts = super::item_source_options(env, f.ca_pem, f.limits);
    let spec = FetchSpec {
        uri: f.uri,
        id,
        tag: TAG,
        retry: f.retry,
    };
    let mut used = 0;
    let mut src = Fetch::open(spec, opts, None, &mut used, env)
        .await
        .map_err(source_error)?;
    let too_large = || {
        ItemError::new(
            Reason::StreamRdFail,
            format!(
                "{}: catalogue larger than {} bytes",
                f.uri, MAX_CATALOGUE_BYTES
            ),
        )
    };
    if src
        .content_length()
        .is_some_and(|n| n > MAX_CATALOGUE_BYTES as u64)
    {
        return Err(too_large());
    }
    // Grown as the bytes arrive (a device has no room for the bound up front).
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; CATALOGUE_CHUNK];
    loop {
        let n = match src.read(&mut chunk, env).await? {
            Next::Data(n) => n,
            Next::End => break,
            // The server sends the catalogue from its start again.
            Next::Restart => {
                buf.clear();
                continue;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_CATALOGUE_BYTES {
            return Err(too_large());
        }
    }
    let Some(trust) = f.trust else {
        return Catalogue::from_json(&buf).map_err(|e| {
            ItemError::new(
                Reason::StreamRdFail,
                format!("{}: not a catalogue: {e}", f.uri),
            )
        });
    };
    let last = trust.last_serial.get();
    match trust.verify(&buf) {
        Ok(v) => {
            env.info(
                TAG,
                format!(
                    "catalogue {}: signature verified ({} key id {}…), serial {}{}",
                    f.uri,
                    v.algorithm,
                    v.key_id.get(..16).unwrap_or(&v.key_id),
                    v.serial,
                    match last {
                        Some(l) => format!(" (last accepted {l})"),
                        None => String::new(),
                    }
                ),
            );
            if last.is_none_or(|l| v.serial > l) {
                trust.last_serial.set(Some(v.serial));
                env.emit(Event::CatalogueAccepted {
                    id,
                    serial: v.serial,
                });
            }
            Ok(v.catalogue)
        }
        Err(e) => {
            env.error(TAG, format!("catalogue {} refused: {}", f.uri, e));
            Err(ItemError::new(
                Reason::OtaValidateFailed,
                format!(
                    "{}: catalogue refused: {e}; nothing was downloaded or written",
                    f.uri
                ),
            )
            .with_cause(crate::service::Cause::Catalogue(e)))
        }
    }
}

/// An app item that reads a catalogue instead of naming an image (config: an app item with
/// `project`).
pub struct ManifestItem {
    /// The catalogue's URI (`http://host:port/manifest.json`, `https://…`, `file://sdcard/…`).
    pub uri: String,
    /// The `project_name` to look for.
    pub project: String,
    pub policy: VersionPolicy,
    pub ca_pem: Option<Vec<u8>>,
    /// Transfer bounds (rate rule, overall deadline); None: the run's (`Env::source`).
    pub limits: Option<TransferLimits>,
    pub reboot: bool,
    pub break_after_fail: bool,
    /// How often a failed download (of the catalogue, then of the image) is tried again.
    pub retry: RetryPolicy,
    /// Accept only a catalogue signed by this key, and newer than the last one accepted.
    pub trust: Option<CatalogueTrust>,
    /// Download a delta patch the catalogue lists for the running image instead of the whole
    /// image, falling back to the image when there is none or it fails (default: on).
    pub deltas: bool,
    /// Keep a resume record in flash for HTTP(S) downloads of the image and of a patch, so a
    /// cut download continues where it stopped (default on; the config's `resume`).
    pub resume: bool,
    inner: Option<AppItem>,
    /// The patch chosen in `prepare` (the full image is then opened only on fallback).
    delta: Option<DeltaPlan>,
    /// The chosen entry's version (the delta path's version check).
    incoming_version: Option<String>,
    mismatch: Rc<RefCell<Option<String>>>,
}

impl ManifestItem {
    pub fn new(uri: impl Into<String>, project: impl Into<String>) -> Self {
        ManifestItem {
            uri: uri.into(),
            project: project.into(),
            policy: VersionPolicy::None,
            ca_pem: None,
            limits: None,
            reboot: true,
            break_after_fail: false,
            retry: RetryPolicy::default(),
            trust: None,
            deltas: true,
            resume: true,
            inner: None,
            delta: None,
            incoming_version: None,
            mismatch: Rc::new(RefCell::new(None)),
        }
    }

    fn catalogue_fetch(&self) -> CatalogueFetch<'_> {
        CatalogueFetch {
            uri: &self.uri,
            ca_pem: &self.ca_pem,
            limits: self.limits,
            retry: self.retry,
            trust: self.trust.as_ref(),
        }
    }

    /// The inner item's error, or the catalogue mismatch it was caused by.
    fn explain(&self, e: ItemError) -> ItemError {
        let detail = self.mismatch.borrow().clone();
        match (detail, &self.inner) {
            (Some(d), Some(inner)) => ItemError::new(
                Reason::OtaValidateFailed,
                format!(
                    "{}: does not match the catalogue {}: {d}; otadata was not switched",
                    inner.uri, self.uri
                ),
            ),
            _ => e,
        }
    }
}

impl ManifestItem {
    async fn prepare_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<(), ItemError> {
        let cat = fetch_catalogue(self.catalogue_fetch(), id, env).await?;
        let chip = dev.chip.name();
        let entry = pick(&cat, chip, &self.project, self.policy).map_err(|e| {
            ItemError::new(Reason::FileNotFound, format!("{}: {e}", self.uri))
                .with_cause(crate::service::Cause::Pick(e))
        })?;
        let sha256 = parse_sha256(&entry.sha256).ok_or_else(|| {
            ItemError::new(
                Reason::StreamRdFail,
                format!(
                    "{}: entry {} has no valid sha256 (`{}`)",
                    self.uri, entry.path, entry.sha256
                ),
            )
        })?;
        let url = resolve(&self.uri, &entry.path);
        env.info(
            TAG,
            format!(
                "catalogue {}: {} entries; for {} project {} the newest is {} ({} bytes, sha256 {}…) at {}",
                self.uri,
                cat.entries.len(),
                chip,
                self.project,
                entry.version.as_deref().unwrap_or("?"),
                entry.size,
                entry.sha256.get(..16).unwrap_or(&entry.sha256),
                url
            ),
        );
        let mut inner = AppItem::new(url);
        inner.policy = self.policy;
        inner.ca_pem = self.ca_pem.clone();
        inner.limits = self.limits;
        inner.reboot = self.reboot;
        inner.break_after_fail = self.break_after_fail;
        let (size, mismatch) = (entry.size, self.mismatch.clone());
        *mismatch.borrow_mut() = None;
        inner.retry = self.retry;
        inner.resume = self.resume;
        inner.check = Some(Box::new(move || {
            Box::new(CatalogueCheck::new(size, sha256, mismatch.clone()))
        }));
        self.inner = Some(inner);
        self.incoming_version = entry.version.clone();
        self.delta = if self.deltas {
            self.choose_delta(entry, dev, env)
        } else {
            None
        };
        if self.delta.is_some() {
            // The full image is opened only if the patch fails.
            return Ok(());
        }
        self.prepare_full(dev, env, id).await
    }

    async fn prepare_full<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<(), ItemError> {
        let inner = self.inner.as_mut().ok_or_else(|| {
            ItemError::new(Reason::NullPointer, "manifest item lost its app item")
        })?;
        let r = UpgradeItem::<F>::prepare(inner, dev, env, id).await;
        r.map_err(|e| self.explain(e))
    }

    /// The patch the entry lists for the running image's digest (`esp_partition_get_sha256`
    /// of the running slot), with a log line saying which one, or why the full image is used.
    fn choose_delta<F: NorFlash>(
        &self,
        entry: &CatalogueEntry,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
    ) -> Option<DeltaPlan> {
        if entry.deltas.is_empty() {
            env.info(
                TAG_DELTA,
                format!(
                    "{}: the catalogue lists no patch to it: full image",
                    entry.path
                ),
            );
            return None;
        }
        let running = dev.running?;
        let base =
            match ota_core::delta::base_image_sha256(dev.flash, running.region(), Some(dev.chip)) {
                Ok(b) => b,
                Err(e) => {
                    env.warn(
                        TAG_DELTA,
                        format!(
                            "the running image in {} cannot be a patch base ({e}): full image",
                            running.label.as_str()
                        ),
                    );
                    return None;
                }
            };
        // Of the patches from this base, the smallest this device can apply that is smaller
        // than the image; the others are said why not.
        let mut d = None::<&ota_catalogue::DeltaPatch>;
        let mut refused = Vec::new();
        for p in entry.deltas_for(&base.sha256) {
            if !DEVICE_COMPRESSIONS.contains(&p.compression.as_str()) {
                refused.push(format!(
                    "{} uses `{}` compression, which this device does not decode (only {})",
                    p.path,
                    p.compression,
                    DEVICE_COMPRESSIONS.join(", ")
                ));
            } else if p.size >= entry.size {
                refused.push(format!(
                    "{} is {} bytes, not smaller than the image ({} bytes)",
                    p.path, p.size, entry.size
                ));
            } else if d.is_none_or(|b| p.size < b.size) {
                d = Some(p);
            }
        }
        if d.is_none() && !refused.is_empty() {
            env.info(TAG_DELTA, format!("{}: full image", refused.join("; ")));
            return None;
        }
        let Some(d) = d else {
            env.info(
                TAG_DELTA,
                format!(
                    "no patch among the {} listed has the running image (sha256 {}) as its base: full image",
                    entry.deltas.len(),
                    Hex(&base.sha256)
                ),
            );
            return None;
        };
        let Some(sha256) = parse_sha256(&d.sha256) else {
            env.warn(
                TAG_DELTA,
                format!(
                    "patch {} has no valid sha256 (`{}`): full image",
                    d.path, d.sha256
                ),
            );
            return None;
        };
        let target = parse_sha256(&d.target_sha256);
        let Some(target_sha256) = target.filter(|t| Some(*t) == parse_sha256(&entry.sha256)) else {
            env.warn(
                TAG_DELTA,
                format!(
                    "patch {} makes sha256 `{}`, not the entry's image ({}): full image",
                    d.path, d.target_sha256, entry.sha256
                ),
            );
            return None;
        };
        let url = resolve(&self.uri, &d.path);
        env.info(
            TAG_DELTA,
            format!(
                "patch from {} (sha256 {}…) to {}: {} bytes instead of {} ({} compression) at {}",
                d.base_version.as_deref().unwrap_or("?"),
                d.base_sha256.get(..16).unwrap_or(&d.base_sha256),
                entry.version.as_deref().unwrap_or("?"),
                d.size,
                entry.size,
                d.compression,
                url
            ),
        );
        Some(DeltaPlan {
            url,
            size: d.size,
            sha256,
            base,
            target_sha256,
            image_size: entry.size,
        })
    }

    async fn need_upgrade_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<Need, ItemError> {
        if self.delta.is_some() {
            let running = super::app::running_desc(dev);
            let incoming = self.incoming_version.clone().unwrap_or_default();
            if self.policy == VersionPolicy::None {
                return Ok(Need::Yes);
            }
            return match ota_core::version::check(
                self.policy,
                running.as_ref().map(|d| d.version_str()),
                &incoming,
            ) {
                ota_core::version::VersionVerdict::Accept => Ok(Need::Yes),
                v => {
                    env.warn(
                        TAG_DEFAULT,
                        "Current running version is the same as or higher than a new. We will not continue the update.",
                    );
                    Ok(Need::No(
                        Reason::NoHigherVersion,
                        format!(
                            "{}: catalogue version '{}' is not accepted over the running '{}' ({v:?})",
                            self.uri,
                            incoming,
                            running.as_ref().map(|d| d.version_str()).unwrap_or("?")
                        ),
                    ))
                }
            };
        }
        let inner = self
            .inner
            .as_mut()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        let r = UpgradeItem::<F>::need_upgrade(inner, dev, env, id).await;
        r.map_err(|e| self.explain(e))
    }

    async fn execute_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<(), ItemError> {
        if let Some(plan) = self.delta.take() {
            let run = DeltaRun {
                plan: &plan,
                policy: self.policy,
                ca_pem: &self.ca_pem,
                limits: self.limits,
                retry: self.retry,
                resume: self.resume,
            };
            match apply_patch(run, dev, env, id).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    env.warn(
                        TAG_DELTA,
                        format!(
                            "patch {} failed ({}): falling back to the full image",
                            plan.url, e.message
                        ),
                    );
                }
            }
            self.prepare_full(dev, env, id).await?;
            let inner = self
                .inner
                .as_mut()
                .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
            match UpgradeItem::<F>::need_upgrade(inner, dev, env, id).await {
                Ok(Need::Yes) => {}
                Ok(Need::No(reason, message)) => return Err(ItemError::new(reason, message)),
                Err(e) => return Err(self.explain(e)),
            }
        }
        let inner = self
            .inner
            .as_mut()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        let r = UpgradeItem::<F>::execute(inner, dev, env, id).await;
        r.map_err(|e| self.explain(e))
    }

    async fn finished_check_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
        result: Outcome,
    ) -> Outcome {
        match self.inner.as_mut() {
            Some(inner) => UpgradeItem::<F>::finished_check(inner, dev, env, id, result).await,
            None => result,
        }
    }
}

impl<F: NorFlash> UpgradeItem<F> for ManifestItem {
    fn describe(&self) -> String {
        format!("{} (project {})", self.uri, self.project)
    }

    fn prepare<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<(), ItemError>> {
        Box::pin(self.prepare_hook(dev, env, id))
    }

    fn need_upgrade<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<Need, ItemError>> {
        Box::pin(self.need_upgrade_hook(dev, env, id))
    }

    fn execute<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<(), ItemError>> {
        Box::pin(self.execute_hook(dev, env, id))
    }

    fn finished_check<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
        result: Outcome,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(self.finished_check_hook(dev, env, id, result))
    }

    fn reboot(&self) -> bool {
        self.reboot
    }

    fn break_after_fail(&self) -> bool {
        self.break_after_fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_uses_origin_for_absolute_paths() {
        let m = "http://127.0.0.1:8080/manifest.json";
        assert_eq!(resolve(m, "/fw/a.bin"), "http://127.0.0.1:8080/fw/a.bin");
        assert_eq!(resolve(m, "b.bin"), "http://127.0.0.1:8080/b.bin");
        assert_eq!(
            resolve("https://h/x/manifest.json", "b.bin"),
            "https://h/x/b.bin"
        );
        assert_eq!(
            resolve("https://h/x/manifest.json", "/b.bin"),
            "https://h/b.bin"
        );
        assert_eq!(resolve(m, "https://cdn/a.bin"), "https://cdn/a.bin");
        assert_eq!(
            resolve("file://sdcard/manifest.json", "/a.bin"),
            "file://sdcard/a.bin"
        );
    }

    fn checked(size: u64, sha: [u8; 32]) -> CatalogueCheck {
        CatalogueCheck::new(size, sha, Rc::new(RefCell::new(None)))
    }

    /// Feed `data` in 7-byte pieces, then end the stream.
    fn drain(c: &mut CatalogueCheck, len: Option<u64>, data: &[u8]) -> Result<(), String> {
        c.restart(len)?;
        for piece in data.chunks(7) {
            c.feed(piece)?;
        }
        c.finish()
    }

    #[test]
    fn catalogue_check_passes_matching_bytes_and_fails_the_end_on_mismatch() {
        let data = b"hello, firmware".to_vec();
        let sha: [u8; 32] = Sha256::digest(&data).into();
        let n = data.len() as u64;
        assert_eq!(drain(&mut checked(n, sha), Some(n), &data), Ok(()));

        let mut flipped = data.clone();
        flipped[3] ^= 1;
        let mut bad = checked(n, sha);
        let e = drain(&mut bad, None, &flipped).unwrap_err();
        assert!(e.contains("SHA-256 of the download"), "{e}");
        assert!(bad.mismatch.borrow().is_some());

        assert!(drain(&mut checked(n, sha), None, &data[..5])
            .unwrap_err()
            .contains("has 5 bytes"));
        assert!(drain(&mut checked(5, sha), None, &data)
            .unwrap_err()
            .contains("longer than"));
        assert!(drain(&mut checked(n, sha), Some(99), &data)
            .unwrap_err()
            .contains("sends 99 bytes"));

        // A download that starts over is checked from its new start.
        let mut again = checked(n, sha);
        again.restart(Some(n)).unwrap();
        again.feed(&flipped[..9]).unwrap();
        assert_eq!(drain(&mut again, Some(n), &data), Ok(()));
    }
}
