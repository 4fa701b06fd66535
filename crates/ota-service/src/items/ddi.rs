//! The DDI item: ask a hawkBit server what to install (Eclipse hawkBit's Direct Device
//! Integration API, `hawkbit-ddi/` of eclipse-hawkbit/hawkbit; the device flow of Zephyr's
//! `subsys/mgmt/hawkbit/hawkbit.c`), then install it through the app item.
//!
//! One run of the item: poll the base resource `GET {server}/{tenant}/controller/v1/{id}`
//! (`Authorization: TargetToken …` or `GatewayToken …`), `PUT` the device's attributes to
//! `configData` when the server asks for them, follow `deploymentBase`, pick the app image
//! among the artifacts, and download and install it with [`AppItem`] (the one download path,
//! the engine's checks and the version policy), the deployment's size and SHA-256 checked as
//! the bytes stream. Feedback goes to `…/deploymentBase/{actionId}/feedback`: `proceeding` when
//! the download starts and once the image is installed, `closed` + `failure` with the error as
//! its detail. `closed` + `success` is only sent once the new app runs and has confirmed itself:
//! the action stays open on the server across the restart, and the next poll finds it again;
//! the flash is the device's record of it (the slot that holds the artifact's bytes, and that
//! slot's otadata state), so nothing else has to survive the restart: the running app holding
//! the artifact and confirmed is `success`, still `pending_verify` is `proceeding`, the artifact
//! in another slot marked `invalid`/`aborted` (a rollback) is `failure`.

use alloc::rc::Rc;
use core::cell::RefCell;
use core::time::Duration;

use embedded_storage::nor_flash::NorFlash;
use ota_core::otadata::OtaState;
use ota_core::partition::Partition;
use ota_core::version::VersionPolicy;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::download::{Fetch, FetchSpec, Next};
use super::manifest::{parse_sha256, CatalogueCheck};
use super::{source_error, AppItem};
use crate::io::{BoxFuture, Upload, UploadMethod};
use crate::prelude::*;
use crate::reason::Reason;
use crate::service::{Cause, Device, Env, ItemError, Need, Outcome, UpgradeItem};
use crate::source::{duration_ms, RetryPolicy, Secret, SourceError, SourceOptions, TransferLimits};

const TAG: &str = "OTA_DDI";
/// The largest DDI document read (base resource, deploymentBase): hawkBit's are a few KiB.
pub const MAX_DDI_JSON: usize = 64 * 1024;
/// The most characters of a tenant, controller id or action id (hawkBit's controller ids are
/// at most 256, `Target.CONTROLLER_ID_MAX_SIZE` in hawkbit-repository-api; ours go into URLs).
pub const MAX_ID_LEN: usize = 256;
/// The longest wait between two polls by default, whatever `config.polling.sleep` says.
pub const DEFAULT_MAX_SLEEP: Duration = Duration::from_secs(3600);
/// The DDI documents' media type (hawkBit's DDI accepts `application/json`).
pub const JSON: &str = "application/json";
/// The steps a deployment's `proceeding` feedback counts (`progress.cnt` of `progress.of`):
/// 1 the download started, 2 the image is installed and the device restarts to confirm it.
pub const FEEDBACK_STEPS: u32 = 3;
const READ_CHUNK: usize = 2048;

/// How the device authenticates (hawkBit DDI: `Authorization: TargetToken <t>` for one
/// device's token, `GatewayToken <t>` for the tenant's gateway token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DdiAuth {
    None,
    TargetToken(Secret),
    GatewayToken(Secret),
}

impl DdiAuth {
    fn header(&self) -> Option<Secret> {
        match self {
            DdiAuth::None => None,
            DdiAuth::TargetToken(t) => Some(Secret::new(format!("TargetToken {}", t.expose()))),
            DdiAuth::GatewayToken(t) => Some(Secret::new(format!("GatewayToken {}", t.expose()))),
        }
    }
}

// The documents, as hawkBit's DDI OpenAPI names their fields (`hawkbit-ddi/…/ddi-api.yaml`:
// `DdiControllerBase`, `DdiDeploymentBase`, `DdiChunk`, `DdiArtifact`). Unknown fields are
// ignored, as a client must.
#[derive(Deserialize, Default)]
struct BaseDoc {
    #[serde(default)]
    config: Option<ConfigDoc>,
    #[serde(default, rename = "_links")]
    links: Option<BaseLinks>,
}

#[derive(Deserialize, Default)]
struct ConfigDoc {
    #[serde(default)]
    polling: Option<PollingDoc>,
}

#[derive(Deserialize, Default)]
struct PollingDoc {
    #[serde(default)]
    sleep: Option<String>,
}

#[derive(Deserialize, Default)]
struct BaseLinks {
    #[serde(default, rename = "deploymentBase")]
    deployment_base: Option<Link>,
    #[serde(default, rename = "configData")]
    config_data: Option<Link>,
    #[serde(default, rename = "cancelAction")]
    cancel_action: Option<Link>,
}

/// `DdiCancel`: the action to cancel.
#[derive(Deserialize)]
struct CancelDoc {
    id: Value,
    #[serde(default, rename = "cancelAction")]
    cancel_action: Option<CancelInfo>,
}

#[derive(Deserialize)]
struct CancelInfo {
    #[serde(default, rename = "stopId")]
    stop_id: Option<Value>,
}

#[derive(Deserialize, Clone)]
struct Link {
    href: String,
}

#[derive(Deserialize)]
struct DeploymentDoc {
    id: Value,
    deployment: Deployment,
}

#[derive(Deserialize)]
struct Deployment {
    #[serde(default)]
    download: Option<String>,
    #[serde(default)]
    update: Option<String>,
    #[serde(default, rename = "maintenanceWindow")]
    maintenance_window: Option<String>,
    #[serde(default)]
    chunks: Vec<Chunk>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    part: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    artifacts: Vec<ArtifactDoc>,
}

#[derive(Deserialize)]
struct ArtifactDoc {
    filename: String,
    #[serde(default)]
    hashes: Hashes,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "_links")]
    links: ArtifactLinks,
}

#[derive(Deserialize, Default)]
struct Hashes {
    #[serde(default)]
    sha256: Option<String>,
}

#[derive(Deserialize, Default)]
struct ArtifactLinks {
    #[serde(default)]
    download: Option<Link>,
    #[serde(default, rename = "download-http")]
    download_http: Option<Link>,
}

/// hawkBit's `skip` / `attempt` / `forced` (`DdiDeployment.HandlingType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// Do not do it (now): nothing is downloaded or installed, no feedback is sent.
    Skip,
    /// The device may do it: this device does it at once.
    Attempt,
    /// The device must do it at once.
    Forced,
}

impl Handling {
    fn parse(field: &'static str, v: Option<&str>) -> Result<Handling, String> {
        match v {
            None | Some("forced") => Ok(Handling::Forced),
            Some("attempt") => Ok(Handling::Attempt),
            Some("skip") => Ok(Handling::Skip),
            Some(other) => Err(format!(
                "deployment.{field} is `{}`, expected skip, attempt or forced",
                shorten(other)
            )),
        }
    }
}

/// The deployment the item works on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// The action id as text, for URLs and messages (feedback echoes it as the server wrote
    /// it, a string or a number).
    pub id_text: String,
    pub filename: String,
    pub version: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub url: String,
    pub download: Handling,
    pub update: Handling,
}

/// What `prepare` found to do.
enum Plan {
    /// Nothing offered, or `skip`: the item is skipped.
    Idle(String),
    /// The running app is the deployment's artifact and confirmed itself: `closed` + `success`.
    Confirmed(String),
    /// Download and install.
    Install,
}

/// An upgrade-list item that asks a hawkBit DDI server what to install (config:
/// `kind = "ddi"`).
pub struct DdiItem {
    /// The server's URL (`http://host:port`, `https://…`), without the tenant.
    pub server: String,
    pub tenant: String,
    pub controller_id: String,
    pub auth: DdiAuth,
    /// The `project_name` the artifact's app descriptor must have; None: the running app's.
    pub project: Option<String>,
    pub policy: VersionPolicy,
    pub ca_pem: Option<Vec<u8>>,
    pub limits: Option<TransferLimits>,
    pub reboot: bool,
    pub break_after_fail: bool,
    pub retry: RetryPolicy,
    /// Keep a resume record in flash for an HTTP(S) artifact download, so a cut download
    /// continues where it stopped when the deployment is offered again (default on).
    pub resume: bool,
    /// Polls of the base resource in one run while it offers nothing (at least 1); between
    /// two, the item waits `config.polling.sleep`, at most `max_sleep`, and never past the
    /// item's deadline (`max_time_ms`).
    pub polls: u32,
    pub max_sleep: Duration,
    plan: Option<Plan>,
    /// The action id (as the server wrote it, and as text) once the deployment named one:
    /// from then on a failure is reported as its feedback.
    action_ref: Option<(Value, String)>,
    action: Option<Action>,
    inner: Option<AppItem>,
    mismatch: Rc<RefCell<Option<String>>>,
    installed: bool,
    /// The incoming image's version, once `need_upgrade` read its descriptor.
    incoming_version: Option<String>,
    closed: bool,
    poll_sleep: Option<Duration>,
    opts: Option<SourceOptions>,
}

impl DdiItem {
    pub fn new(
        server: impl Into<String>,
        tenant: impl Into<String>,
        controller_id: impl Into<String>,
        auth: DdiAuth,
    ) -> Self {
        DdiItem {
            server: server.into().trim_end_matches('/').to_string(),
            tenant: tenant.into(),
            controller_id: controller_id.into(),
            auth,
            project: None,
            policy: VersionPolicy::None,
            ca_pem: None,
            limits: None,
            reboot: true,
            break_after_fail: false,
            retry: RetryPolicy::default(),
            resume: true,
            polls: 1,
            max_sleep: DEFAULT_MAX_SLEEP,
            plan: None,
            action_ref: None,
            action: None,
            inner: None,
            mismatch: Rc::new(RefCell::new(None)),
            installed: false,
            incoming_version: None,
            closed: false,
            poll_sleep: None,
            opts: None,
        }
    }

    /// The controller's base resource: `{server}/{tenant}/controller/v1/{controller_id}`.
    pub fn base_url(&self) -> String {
        format!(
            "{}/{}/controller/v1/{}",
            self.server, self.tenant, self.controller_id
        )
    }

    /// `config.polling.sleep` of the last poll, when the server said.
    pub fn poll_sleep(&self) -> Option<Duration> {
        self.poll_sleep
    }

    /// The deployment of the last run, if the server offered one.
    pub fn action(&self) -> Option<&Action> {
        self.action.as_ref()
    }

    /// Checks the names that go into URLs; the item's error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, v) in [
            ("tenant", &self.tenant),
            ("controller id", &self.controller_id),
        ] {
            check_id(v).map_err(|e| format!("DDI {field} `{}`: {e}", shorten(v)))?;
        }
        match crate::source::Scheme::of(&self.server) {
            Some(crate::source::Scheme::Http) | Some(crate::source::Scheme::Https) => Ok(()),
            _ => Err(format!(
                "DDI server `{}`: expected an http:// or https:// URL",
                shorten(&self.server)
            )),
        }
    }

    fn options(&self, env: &Env<'_>) -> SourceOptions {
        let mut o = super::item_source_options(env, &self.ca_pem, self.limits);
        o.authorization = self.auth.header();
        o
    }

    fn error(&self, reason: Reason, detail: impl Into<String>) -> ItemError {
        ItemError::new(reason, format!("{}: {}", self.base_url(), detail.into()))
    }

    /// `href` of a DDI resource: it must be on the server's own origin (the token goes there).
    fn own_link(&self, what: &str, href: &str) -> Result<String, ItemError> {
        if origin(href).is_some() && origin(href) == origin(&self.server) {
            Ok(href.to_string())
        } else {
            Err(self.error(
                Reason::StreamRdFail,
                format!(
                    "the {what} link `{}` is not on the server's origin {}: not followed",
                    shorten(href),
                    self.server
                ),
            ))
        }
    }

    /// GET a DDI document (at most [`MAX_DDI_JSON`] bytes) and parse it.
    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        uri: &str,
        what: &str,
        opts: &SourceOptions,
        id: usize,
        env: &mut Env<'_>,
    ) -> Result<T, ItemError> {
        let spec = FetchSpec {
            uri,
            id,
            tag: TAG,
            retry: self.retry,
        };
        let mut used = 0;
        let mut src = Fetch::open(spec, opts.clone(), None, &mut used, env)
            .await
            .map_err(source_error)?;
        let too_large = || {
            ItemError::new(
                Reason::StreamRdFail,
                format!("{uri}: the {what} is larger than {MAX_DDI_JSON} bytes"),
            )
        };
        if src
            .content_length()
            .is_some_and(|n| n > MAX_DDI_JSON as u64)
        {
            return Err(too_large());
        }
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            match src.read(&mut chunk, env).await? {
                Next::Data(n) => buf.extend_from_slice(&chunk[..n]),
                Next::End => break,
                Next::Restart => buf.clear(),
            }
            if buf.len() > MAX_DDI_JSON {
                return Err(too_large());
            }
        }
        serde_json::from_slice(&buf).map_err(|e| {
            ItemError::new(
                Reason::StreamRdFail,
                format!("{uri}: the {what} is not DDI JSON: {e}"),
            )
        })
    }

    /// PUT/POST a JSON document to `uri`.
    async fn send_json(
        &self,
        method: UploadMethod,
        uri: &str,
        doc: &Value,
        env: &mut Env<'_>,
    ) -> Result<(), SourceError> {
        let body = serde_json::to_vec(doc).unwrap_or_default();
        let opts = self.opts.clone().unwrap_or_else(|| self.options(env));
        let req = Upload {
            method,
            uri,
            content_type: JSON,
            body: &body,
            opts: &opts,
        };
        if let Some(d) = opts.deadline {
            if env.clock.now_ms() >= d {
                return Err(SourceError::DeadlineExceeded {
                    uri: uri.to_string(),
                    phase: crate::source::Phase::Open,
                    max_time: opts.max_time,
                });
            }
        }
        env.transport.send(req).await.map(|_| ())
    }

    /// POST the action's feedback (`DdiActionFeedback`).
    async fn feedback(
        &self,
        env: &mut Env<'_>,
        execution: &str,
        finished: &str,
        progress: Option<u32>,
        detail: &str,
    ) -> Result<(), SourceError> {
        let Some((action_id, action_text)) = self.action_ref.as_ref() else {
            return Ok(());
        };
        let mut result = json!({ "finished": finished });
        if let (Some(cnt), Some(obj)) = (progress, result.as_object_mut()) {
            obj.insert(
                "progress".into(),
                json!({ "cnt": cnt, "of": FEEDBACK_STEPS }),
            );
        }
        let doc = json!({
            "id": action_id,
            "status": {
                "execution": execution,
                "result": result,
                "details": [detail],
            }
        });
        let uri = format!(
            "{}/deploymentBase/{}/feedback",
            self.base_url(),
            action_text
        );
        env.info(
            TAG,
            format!("feedback for action {action_text}: {execution}/{finished}: {detail}"),
        );
        self.send_json(UploadMethod::Post, &uri, &doc, env).await
    }

    /// A `proceeding` feedback: a failure to send it is only a warning.
    async fn progress(&self, env: &mut Env<'_>, cnt: u32, detail: &str) {
        if let Err(e) = self
            .feedback(env, "proceeding", "none", Some(cnt), detail)
            .await
        {
            env.warn(TAG, format!("feedback not delivered: {e}"));
        }
    }

    /// The device's attributes for `configData`.
    fn attributes<F: NorFlash>(&self, dev: &mut Device<'_, F>) -> Value {
        let desc = super::app::running_desc(dev);
        let state = dev
            .running
            .and_then(|p| ota_core::boot::ota_state_of(dev.flash, dev.table, &p));
        let mut data = serde_json::Map::new();
        data.insert("chip".into(), dev.chip.name().into());
        if let Some(d) = desc.as_ref() {
            data.insert("project".into(), d.project_name_str().into());
            data.insert("version".into(), d.version_str().into());
            data.insert("secure_version".into(), d.secure_version.to_string().into());
        }
        if let Some(p) = dev.running.as_ref() {
            data.insert("partition".into(), p.label.as_str().into());
        }
        data.insert(
            "otadata_state".into(),
            state.map_or("none", |s| s.name()).into(),
        );
        if let Some(e) = dev.anti_rollback {
            data.insert("efuse_secure_version".into(), e.to_string().into());
        }
        json!({ "mode": "merge", "data": Value::Object(data) })
    }

    /// The base resource, polled up to `polls` times while it offers no deployment.
    async fn poll<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
        opts: &SourceOptions,
    ) -> Result<Option<Link>, ItemError> {
        let base = self.base_url();
        let mut n = 0u32;
        loop {
            n += 1;
            let doc: BaseDoc = self.get_json(&base, "base resource", opts, id, env).await?;
            let sleep = doc
                .config
                .and_then(|c| c.polling)
                .and_then(|p| p.sleep)
                .map(|s| {
                    parse_sleep(&s).ok_or_else(|| {
                        self.error(
                            Reason::StreamRdFail,
                            format!(
                                "config.polling.sleep is `{}`, expected HH:MM:SS",
                                shorten(&s)
                            ),
                        )
                    })
                })
                .transpose()?;
            self.poll_sleep = sleep;
            let links = doc.links.unwrap_or_default();
            if let Some(l) = links.config_data {
                let uri = self.own_link("configData", &l.href)?;
                let attrs = self.attributes(dev);
                env.info(
                    TAG,
                    format!("the server asks for attributes: PUT {uri} {attrs}"),
                );
                // The attributes inform the server; a refusal does not stop the deployment.
                if let Err(e) = self.send_json(UploadMethod::Put, &uri, &attrs, env).await {
                    env.warn(TAG, format!("configData not delivered: {e}"));
                }
            }
            if let Some(l) = links.cancel_action {
                // Answered, never fatal: a deployment offered beside it still runs.
                if let Err(e) = self.cancel(&l, opts, id, env).await {
                    env.warn(TAG, format!("the cancel request not answered: {e}"));
                }
            }
            if let Some(l) = links.deployment_base {
                return Ok(Some(l));
            }
            if n >= self.polls.max(1) {
                return Ok(None);
            }
            let wait = sleep.unwrap_or(self.max_sleep).min(self.max_sleep);
            let wait_ms = duration_ms(wait);
            if let Some(d) = opts.deadline {
                if env.clock.now_ms().saturating_add(wait_ms) >= d {
                    env.info(
                        TAG,
                        "nothing to do; the next poll would pass the item's deadline",
                    );
                    return Ok(None);
                }
            }
            env.info(
                TAG,
                format!(
                    "nothing to do; next poll in {} ms (poll {n} of {})",
                    wait_ms, self.polls
                ),
            );
            env.sleep_ms(wait_ms).await;
        }
    }

    /// Answer the server's `cancelAction` (`DdiCancel`): GET it, then confirm it with a
    /// `closed`/`success` feedback. Nothing is ever in progress between two polls on this
    /// device (a deployment runs to its end, or to an error, within one run of the item; a
    /// download cut by a power loss resumes only when a deployment offers it again), so there
    /// is nothing to undo and the cancellation is confirmed, as hawkBit expects of an idle
    /// target. An installed image stays: the attributes tell the server what runs.
    async fn cancel(
        &self,
        link: &Link,
        opts: &SourceOptions,
        id: usize,
        env: &mut Env<'_>,
    ) -> Result<(), ItemError> {
        let uri = self.own_link("cancelAction", &link.href)?;
        let doc: CancelDoc = self.get_json(&uri, "cancelAction", opts, id, env).await?;
        let text = action_id(&doc.id, "cancel").map_err(|e| bad_doc(&uri, e))?;
        let stop = doc
            .cancel_action
            .and_then(|c| c.stop_id)
            .map(|v| match v {
                Value::String(s) => s,
                v => v.to_string(),
            })
            .unwrap_or_else(|| text.clone());
        let detail = format!(
            "canceled: no update of action {} in progress",
            shorten(&stop)
        );
        let body = json!({
            "id": doc.id,
            "status": {
                "execution": "closed",
                "result": { "finished": "success" },
                "details": [detail],
            }
        });
        let fb = format!("{}/cancelAction/{text}/feedback", self.base_url());
        env.info(
            TAG,
            format!(
                "the server cancels action {}: closed/success: {detail}",
                shorten(&stop)
            ),
        );
        self.send_json(UploadMethod::Post, &fb, &body, env)
            .await
            .map_err(source_error)
    }

    /// Read the deployment and choose its app image.
    async fn deployment(
        &mut self,
        link: &Link,
        opts: &SourceOptions,
        id: usize,
        env: &mut Env<'_>,
    ) -> Result<Action, ItemError> {
        let uri = self.own_link("deploymentBase", &link.href)?;
        let doc: DeploymentDoc = self.get_json(&uri, "deploymentBase", opts, id, env).await?;
        let bad = |detail: String| bad_doc(&uri, detail);
        let id_text = action_id(&doc.id, "action").map_err(bad)?;
        self.action_ref = Some((doc.id.clone(), id_text.clone()));
        let d = doc.deployment;
        let download = Handling::parse("download", d.download.as_deref()).map_err(bad)?;
        let mut update = Handling::parse("update", d.update.as_deref()).map_err(bad)?;
        if d.maintenance_window.as_deref() == Some("unavailable") {
            update = Handling::Skip;
        }
        // The app image: an artifact named `*.bin` (ESP-IDF's build output, `idf.py build`).
        let mut seen = Vec::new();
        let mut found = None;
        for chunk in &d.chunks {
            for a in &chunk.artifacts {
                seen.push(shorten(&a.filename));
                if found.is_none() && a.filename.to_ascii_lowercase().ends_with(".bin") {
                    found = Some((chunk, a));
                }
            }
        }
        let Some((chunk, art)) = found else {
            return Err(ItemError::new(
                Reason::FileNotFound,
                format!(
                    "{uri}: action {id_text} has no app image (an artifact named *.bin) among its {} artifacts [{}]",
                    seen.len(),
                    seen.join(", ")
                ),
            ));
        };
        let sha = art.hashes.sha256.as_deref().unwrap_or("");
        let sha256 = parse_sha256(sha).ok_or_else(|| {
            bad(format!(
                "artifact {} has no valid hashes.sha256 (`{}`)",
                shorten(&art.filename),
                shorten(sha)
            ))
        })?;
        let size = art
            .size
            .ok_or_else(|| bad(format!("artifact {} has no size", shorten(&art.filename))))?;
        if size > crate::source::MAX_SOURCE_LEN {
            return Err(bad(format!(
                "artifact {} has size {size}, larger than any flash",
                shorten(&art.filename)
            )));
        }
        // `download` is the https link, `download-http` the plain one (DDI API docs).
        let https = self.server.starts_with("https://");
        let link = if https {
            art.links.download.as_ref()
        } else {
            art.links
                .download_http
                .as_ref()
                .or(art.links.download.as_ref())
        };
        let url = link.map(|l| l.href.clone()).ok_or_else(|| {
            bad(format!(
                "artifact {} has no {} link",
                shorten(&art.filename),
                if https {
                    "download"
                } else {
                    "download-http or download"
                }
            ))
        })?;
        if https && !url.starts_with("https://") {
            return Err(bad(format!(
                "artifact {} would be downloaded over `{}` from an https:// server",
                shorten(&art.filename),
                shorten(&url)
            )));
        }
        env.info(
            TAG,
            format!(
                "action {id_text}: chunk {} version {}, artifact {} ({size} bytes, sha256 {}…), download {:?}, update {:?}",
                shorten(&chunk.part),
                shorten(&chunk.version),
                shorten(&art.filename),
                sha.get(..16).unwrap_or(sha),
                download,
                update
            ),
        );
        Ok(Action {
            id_text,
            filename: art.filename.clone(),
            version: chunk.version.clone(),
            size,
            sha256,
            url,
            download,
            update,
        })
    }

    async fn prepare_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<(), ItemError> {
        self.plan = None;
        self.action_ref = None;
        self.action = None;
        self.inner = None;
        self.installed = false;
        self.incoming_version = None;
        self.closed = false;
        self.validate()
            .map_err(|e| ItemError::new(Reason::UrlParseFail, e))?;
        let opts = self.options(env);
        self.opts = Some(opts.clone());
        let Some(link) = self.poll(dev, env, id, &opts).await? else {
            self.plan = Some(Plan::Idle(format!(
                "{}: no deployment for this device",
                self.base_url()
            )));
            return Ok(());
        };
        let action = self.deployment(&link, &opts, id, env).await?;
        let skip = [action.download, action.update].contains(&Handling::Skip);
        let (filename, version) = (action.filename.clone(), action.version.clone());
        self.action = Some(action);
        if skip {
            self.plan = Some(Plan::Idle(format!(
                "{}: action {} says skip: not installed",
                self.base_url(),
                self.action.as_ref().map_or("", |a| a.id_text.as_str())
            )));
            return Ok(());
        }
        // Is the artifact already here (the restart after the install)?
        let Some(action) = self.action.clone() else {
            return Ok(());
        };
        if let Some(running) = dev.running {
            if slot_holds(dev, &running, &action)? {
                let state = ota_core::boot::ota_state_of(dev.flash, dev.table, &running);
                let label = running.label.as_str();
                match state {
                    Some(OtaState::PendingVerify) | Some(OtaState::New) => {
                        let detail = format!(
                            "{label} runs {filename}, waiting for the app to confirm itself"
                        );
                        self.progress(env, 2, &detail).await;
                        self.plan = Some(Plan::Idle(format!("{}: {detail}", self.base_url())));
                    }
                    _ => {
                        let detail = format!(
                            "{label} runs {filename} version {version}, confirmed ({})",
                            state.map_or("no otadata", |s| s.name())
                        );
                        self.plan = Some(Plan::Confirmed(detail));
                    }
                }
                return Ok(());
            }
        }
        let apps: Vec<Partition> = dev
            .table
            .iter()
            .filter(|p| p.is_app() && p.ota_slot().is_some() && Some(**p) != dev.running)
            .copied()
            .collect();
        for p in apps {
            let state = ota_core::boot::ota_state_of(dev.flash, dev.table, &p);
            if matches!(state, Some(OtaState::Invalid) | Some(OtaState::Aborted))
                && slot_holds(dev, &p, &action)?
            {
                return Err(self.error(
                    Reason::OtaValidateFailed,
                    format!(
                        "{filename} in {} was rolled back (otadata state {}); {} runs",
                        p.label.as_str(),
                        state.map_or("?", |s| s.name()),
                        dev.running
                            .map_or("no app".into(), |r| r.label.as_str().to_string())
                    ),
                ));
            }
        }
        self.progress(
            env,
            1,
            &format!("downloading {} ({} bytes)", action.filename, action.size),
        )
        .await;
        let mut inner = AppItem::new(action.url.clone());
        inner.policy = self.policy;
        inner.ca_pem = self.ca_pem.clone();
        inner.limits = self.limits;
        inner.reboot = self.reboot;
        inner.break_after_fail = self.break_after_fail;
        inner.retry = self.retry;
        inner.resume = self.resume;
        if origin(&action.url) == origin(&self.server) {
            inner.authorization = self.auth.header();
        }
        let (size, sha256, mismatch) = (action.size, action.sha256, self.mismatch.clone());
        *mismatch.borrow_mut() = None;
        inner.check = Some(Box::new(move || {
            let mut c = CatalogueCheck::new(size, sha256, mismatch.clone());
            c.who = "the deployment";
            Box::new(c)
        }));
        self.plan = Some(Plan::Install);
        let inner = self.inner.insert(inner);
        let r = UpgradeItem::<F>::prepare(inner, dev, env, id).await;
        r.map_err(|e| self.explain(e))
    }

    /// The app item's error, or the deployment mismatch it was caused by.
    fn explain(&self, e: ItemError) -> ItemError {
        let detail = self.mismatch.borrow().clone();
        match (detail, &self.action) {
            (Some(d), Some(a)) => ItemError::new(
                Reason::OtaValidateFailed,
                format!(
                    "{}: does not match action {} of {}: {d}; otadata was not switched",
                    a.url,
                    a.id_text,
                    self.base_url()
                ),
            )
            .with_cause(e.cause.unwrap_or(Cause::Source(SourceError::Mismatch {
                uri: a.url.clone(),
                detail: String::new(),
            }))),
            _ => e,
        }
    }

    async fn need_upgrade_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<Need, ItemError> {
        match self.plan.as_ref() {
            Some(Plan::Idle(msg)) => return Ok(Need::No(Reason::NoHigherVersion, msg.clone())),
            Some(Plan::Confirmed(_)) => return Ok(Need::Yes),
            Some(Plan::Install) => {}
            None => return Err(ItemError::new(Reason::NullPointer, "run prepare first")),
        }
        let inner = self
            .inner
            .as_mut()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        let r = UpgradeItem::<F>::need_upgrade(inner, dev, env, id).await;
        let incoming = inner.incoming_desc();
        self.incoming_version = incoming.as_ref().map(|d| d.version_str().to_string());
        let need = r.map_err(|e| self.explain(e))?;
        let wanted = match &self.project {
            Some(p) => Some(p.clone()),
            None => super::app::running_desc(dev).map(|d| d.project_name_str().to_string()),
        };
        if let (Some(w), Some(i)) = (wanted, incoming.as_ref()) {
            if i.project_name_str() != w {
                return Err(ItemError::new(
                    Reason::ErrorProjectName,
                    format!(
                        "{}: the artifact is project `{}`, this device runs `{w}`: refused",
                        self.action.as_ref().map_or("", |a| a.url.as_str()),
                        i.project_name_str()
                    ),
                ));
            }
        }
        if let Need::No(_, msg) = &need {
            // The server wants an image the version policy refuses: the action fails.
            let detail = format!("refused: {msg}");
            match self.feedback(env, "closed", "failure", None, &detail).await {
                Ok(()) => self.closed = true,
                Err(e) => env.warn(TAG, format!("feedback not delivered: {e}")),
            }
        }
        Ok(need)
    }

    async fn execute_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<(), ItemError> {
        if let Some(Plan::Confirmed(detail)) = self.plan.as_ref() {
            let detail = detail.clone();
            self.feedback(env, "closed", "success", None, &detail)
                .await
                .map_err(|e| {
                    let mut err = source_error(e);
                    err.message = format!("reporting success of the deployment: {}", err.message);
                    err
                })?;
            self.closed = true;
            return Ok(());
        }
        let inner = self
            .inner
            .as_mut()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        let r = UpgradeItem::<F>::execute(inner, dev, env, id).await;
        r.map_err(|e| self.explain(e))?;
        self.installed = true;
        let slot = ota_core::update::next_update_slot(dev.table, dev.running.as_ref());
        let detail = format!(
            "installed {} version {} in {}; restarting to confirm",
            self.action.as_ref().map_or("", |a| a.filename.as_str()),
            self.incoming_version.as_deref().unwrap_or("?"),
            slot.as_ref().map_or("?", |s| s.label.as_str())
        );
        self.progress(env, 2, &detail).await;
        Ok(())
    }

    async fn finished_check_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
        result: Outcome,
    ) -> Outcome {
        let result = match self.inner.as_mut() {
            Some(inner) => UpgradeItem::<F>::finished_check(inner, dev, env, id, result).await,
            None => result,
        };
        if let Outcome::Failed { message, .. } = &result {
            if self.action_ref.is_some() && !self.closed {
                let detail = message.clone();
                match self.feedback(env, "closed", "failure", None, &detail).await {
                    Ok(()) => self.closed = true,
                    Err(e) => env.warn(TAG, format!("feedback not delivered: {e}")),
                }
            }
        }
        result
    }
}

/// Whether the first `action.size` bytes of `part` are the artifact (its SHA-256).
fn slot_holds<F: NorFlash>(
    dev: &mut Device<'_, F>,
    part: &Partition,
    action: &Action,
) -> Result<bool, ItemError> {
    if action.size == 0 || action.size > u64::from(part.size) {
        return Ok(false);
    }
    let mut h = Sha256::new();
    let mut buf = [0u8; 1024];
    let mut at = 0u64;
    while at < action.size {
        let n = (action.size - at).min(buf.len() as u64) as usize;
        ota_core::flash::read(dev.flash, part.offset + at as u32, &mut buf[..n])
            .map_err(|e| super::core_error(ota_core::Error::Flash(e), part.label.as_str()))?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    let digest: [u8; 32] = h.finalize().into();
    Ok(digest == action.sha256)
}

/// Scheme and authority of an `http(s)://` URL, lowercased.
fn origin(url: &str) -> Option<(bool, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    let auth = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    Some((https, auth.to_ascii_lowercase()))
}

/// A DDI document from `uri` that says something it must not.
fn bad_doc(uri: &str, detail: String) -> ItemError {
    ItemError::new(Reason::StreamRdFail, format!("{uri}: {detail}"))
}

/// An action's `id` (a string or a number, as servers write it) as URL-safe text; `what`
/// names it in the error (`action`, `cancel`).
fn action_id(id: &Value, what: &str) -> Result<String, String> {
    let text = match id {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(format!("the {what} id is neither a string nor a number")),
    };
    check_id(&text).map_err(|e| format!("{what} id `{}`: {e}", shorten(&text)))?;
    Ok(text)
}

/// A tenant, controller id or action id: 1..=[`MAX_ID_LEN`] characters that need no escaping
/// in a URL path (letters, digits, `-`, `_`, `.`, `~`, `:`, `@`).
fn check_id(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > MAX_ID_LEN {
        return Err(format!("must be 1 to {MAX_ID_LEN} characters"));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.~:@".contains(*c)))
    {
        return Err(format!("character {c:?} is not allowed"));
    }
    if v == "." || v == ".." {
        return Err("is a path step".into());
    }
    Ok(())
}

/// `HH:MM:SS` (hawkBit's `config.polling.sleep`).
pub fn parse_sleep(s: &str) -> Option<Duration> {
    let mut parts = s.split(':');
    let mut total = 0u64;
    for limit in [u64::MAX, 59, 59] {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: u64 = p.parse().ok()?;
        if v > limit {
            return None;
        }
        total = total.checked_mul(60)?.checked_add(v)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// At most 80 characters of a server's string, for messages.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 80 {
        return s.to_string();
    }
    let mut t: String = s.chars().take(80).collect();
    t.push('…');
    t
}

impl<F: NorFlash> UpgradeItem<F> for DdiItem {
    fn describe(&self) -> String {
        format!("{} (DDI)", self.base_url())
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

    /// A restart only after an image was installed in this run (not after reporting success).
    fn reboot(&self) -> bool {
        self.reboot && self.installed
    }

    fn break_after_fail(&self) -> bool {
        self.break_after_fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sleep_reads_hh_mm_ss_and_refuses_the_rest() {
        assert_eq!(parse_sleep("00:01:00"), Some(Duration::from_secs(60)));
        assert_eq!(parse_sleep("12:00:05"), Some(Duration::from_secs(43205)));
        assert_eq!(parse_sleep("100:00:00"), Some(Duration::from_secs(360000)));
        for bad in [
            "",
            "1:2",
            "00:60:00",
            "00:00:61",
            "a:b:c",
            "00:00:00:00",
            "-1:00:00",
            "9999999:00:00",
        ] {
            assert_eq!(parse_sleep(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_that_need_escaping_are_refused() {
        assert!(check_id("DEFAULT").is_ok());
        assert!(check_id("dev-01_a.b").is_ok());
        for bad in ["", "a/b", "a b", "..", "a?b", "é"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        assert!(check_id(&"x".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn origin_compares_scheme_and_authority() {
        assert_eq!(origin("http://H:1/a"), origin("http://h:1"));
        assert_ne!(origin("http://h:1/a"), origin("http://h:2/a"));
        assert_ne!(origin("https://h/a"), origin("http://h/a"));
        assert_eq!(origin("ftp://h/a"), None);
    }

    #[test]
    fn tokens_are_not_shown_by_debug() {
        let a = DdiAuth::TargetToken(Secret::new("s3cret"));
        assert!(!format!("{a:?}").contains("s3cret"));
        assert_eq!(a.header().unwrap().expose(), "TargetToken s3cret");
    }
}
