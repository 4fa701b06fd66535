//! hawkBit's Direct Device Integration API, the subset devices use (eclipse-hawkbit
//! `hawkbit-ddi/hawkbit-ddi-api` `DdiRootControllerRestApi`: resource paths and JSON names).
//!
//! | method | path under `/{tenant}/controller/v1/{controllerId}` | |
//! |---|---|---|
//! | GET | (none) | poll: `config.polling.sleep`, `_links` |
//! | GET | `/deploymentBase/{actionId}` | the deployment: chunks, artifacts, hashes, links |
//! | POST | `/deploymentBase/{actionId}/feedback` | progress; `closed` + `success`/`failure` |
//! | PUT | `/configData` | the device's attributes (`merge`, `replace`, `remove`) |
//! | GET | `/cancelAction/{actionId}` | an action the operator stopped |
//! | POST | `/cancelAction/{actionId}/feedback` | the device's answer to it |
//!
//! Authentication: `TargetToken` opens only its own controller id (anything else is 401, as
//! hawkBit answers a token that does not belong to the target); `GatewayToken` opens every
//! controller id of the tenant and registers unknown ones on their first poll.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body::Body;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{self, Credential};
use super::store::{now_ms, Action, ActionState, Device};
use super::{hhmmss, read_json, valid_controller_id, ApiError, Fleet};
use crate::http::RespBody;

/// Most attributes a device may keep (hawkBit bounds them too).
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute key and value.
pub const MAX_ATTR_KEY: usize = 128;
pub const MAX_ATTR_VALUE: usize = 512;
/// Most `details` lines kept from one feedback, and their total length (the rest is dropped).
pub const MAX_DETAILS: usize = 32;
pub const MAX_DETAILS_BYTES: usize = 4096;

/// Attribute names with a column of their own (others are kept in the attribute map only),
/// and the other names devices use for them.
const ALIASES: &[(&str, &str)] = &[
    ("project_name", "project"),
    ("running_version", "version"),
    ("app_version", "version"),
];

pub async fn route<B>(
    fleet: &Fleet,
    parts: &Parts,
    body: B,
    base: &str,
) -> Result<Response<RespBody>, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = parts.uri.path();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // [tenant, "controller", "v1", id, rest...]
    if segs.len() < 4 || segs[1] != "controller" || segs[2] != "v1" {
        return Err(ApiError::not_found(format!("{path}: no such DDI resource")));
    }
    if segs[0] != fleet.tenant {
        return Err(ApiError::not_found(format!(
            "tenant {:?} is not served here",
            segs[0].chars().take(64).collect::<String>()
        )));
    }
    let id = segs[3];
    if !valid_controller_id(id) {
        return Err(ApiError::bad(format!(
            "controller id {:?}: expected 1 to {} characters of A-Z a-z 0-9 . _ - :",
            id.chars().take(80).collect::<String>(),
            super::MAX_CONTROLLER_ID
        )));
    }
    let device = authenticate(fleet, parts, id).await?;
    let rest = &segs[4..];
    let m = &parts.method;
    let href = format!("{base}/{}/controller/v1/{id}", fleet.tenant);
    match (m, rest) {
        (&Method::GET, []) => poll(fleet, &device, &href).await,
        (&Method::GET, ["deploymentBase", aid]) => deployment(fleet, &device, aid, base).await,
        (&Method::POST, ["deploymentBase", aid, "feedback"]) => {
            let fb: Feedback = read_json(parts, body, "feedback").await?;
            feedback(fleet, &device, aid, fb, false).await
        }
        (&Method::PUT, ["configData"]) => {
            let cd: ConfigData = read_json(parts, body, "configData").await?;
            config_data(fleet, &device, cd).await
        }
        (&Method::GET, ["cancelAction", aid]) => cancel_action(fleet, &device, aid).await,
        (&Method::POST, ["cancelAction", aid, "feedback"]) => {
            let fb: Feedback = read_json(parts, body, "cancel feedback").await?;
            feedback(fleet, &device, aid, fb, true).await
        }
        (_, [] | ["deploymentBase", _] | ["cancelAction", _])
        | (_, ["deploymentBase", _, "feedback"] | ["cancelAction", _, "feedback"])
        | (_, ["configData"]) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path}: method {m} not allowed"),
        )),
        _ => Err(ApiError::not_found(format!("{path}: no such DDI resource"))),
    }
}

async fn authenticate(fleet: &Fleet, parts: &Parts, id: &str) -> Result<Device, ApiError> {
    let cred = auth::parse(
        parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    )
    .map_err(|e| ApiError::unauthorized("TargetToken", e.to_string()))?;
    let denied =
        || ApiError::unauthorized("TargetToken", format!("not authorized for controller {id}"));
    match cred {
        Credential::Target(t) => {
            let Some(d) = fleet.store.device(id).await? else {
                // The same work as for a known device, so timing does not tell ids apart.
                let _ = auth::TokenHash([0; 32]).matches(&t);
                return Err(denied());
            };
            match &d.token_hash {
                Some(h) if h.matches(&t) => Ok(d),
                _ => Err(denied()),
            }
        }
        Credential::Gateway(t) => {
            match &fleet.gateway {
                Some(g) if g.matches(&t) => {}
                _ => return Err(denied()),
            }
            if let Some(d) = fleet.store.device(id).await? {
                return Ok(d);
            }
            if fleet.store.register_device(id, None, now_ms()).await? {
                super::log(
                    'I',
                    format_args!("registered controller {id} (gateway token)"),
                );
            }
            fleet
                .store
                .device(id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("controller {id} vanished")))
        }
        Credential::Bearer(_) => Err(denied()),
    }
}

async fn poll(fleet: &Fleet, d: &Device, href: &str) -> Result<Response<RespBody>, ApiError> {
    let now = now_ms();
    fleet.store.touch(&d.controller_id, now).await?;
    let mut links = serde_json::Map::new();
    if let Some(a) = fleet.store.open_action(&d.controller_id).await? {
        match a.state {
            ActionState::Running => {
                links.insert(
                    "deploymentBase".into(),
                    json!({"href": format!("{href}/deploymentBase/{}?c={}", a.id, a.release_id)}),
                );
            }
            ActionState::Canceling => {
                links.insert(
                    "cancelAction".into(),
                    json!({"href": format!("{href}/cancelAction/{}", a.id)}),
                );
            }
            _ => {}
        }
    }
    if d.attrs_requested {
        links.insert(
            "configData".into(),
            json!({"href": format!("{href}/configData")}),
        );
    }
    Ok(super::json(
        StatusCode::OK,
        &json!({
            "config": {"polling": {"sleep": hhmmss(fleet.poll_sleep)}},
            "_links": links,
        }),
    ))
}

/// The device's own action with this id, or 404 (another device's action is not found either).
async fn own_action(fleet: &Fleet, d: &Device, aid: &str) -> Result<Action, ApiError> {
    let not_found = || {
        ApiError::not_found(format!(
            "action {:?} not found for controller {}",
            aid.chars().take(24).collect::<String>(),
            d.controller_id
        ))
    };
    let n: i64 = aid.parse().map_err(|_| not_found())?;
    match fleet.store.action(n).await? {
        Some(a) if a.controller_id == d.controller_id && a.state != ActionState::Scheduled => Ok(a),
        _ => Err(not_found()),
    }
}

async fn deployment(
    fleet: &Fleet,
    d: &Device,
    aid: &str,
    base: &str,
) -> Result<Response<RespBody>, ApiError> {
    let a = own_action(fleet, d, aid).await?;
    let r = fleet
        .store
        .release(a.release_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("release {} is gone", a.release_id)))?;
    let filename = r.path.rsplit('/').next().unwrap_or(&r.path).to_string();
    let link = format!("{base}{}", r.path);
    let status = if a.state.is_open() {
        "proceeding"
    } else {
        "closed"
    };
    Ok(super::json(
        StatusCode::OK,
        &json!({
            "id": a.id.to_string(),
            "deployment": {
                "download": "forced",
                "update": "forced",
                "chunks": [{
                    "part": "os",
                    "name": r.project.clone().unwrap_or_default(),
                    "version": r.version.clone().unwrap_or_default(),
                    "metadata": [
                        {"key": "chip", "value": r.chip.clone().unwrap_or_default()},
                        {"key": "secure_version",
                         "value": r.secure_version.map(|v| v.to_string()).unwrap_or_default()},
                    ],
                    "artifacts": [{
                        "filename": filename,
                        "hashes": {"sha1": r.sha1, "md5": r.md5, "sha256": r.sha256},
                        "size": r.size,
                        "_links": {
                            "download-http": {"href": link},
                            "download": {"href": link},
                        },
                    }],
                }],
            },
            "actionHistory": {"status": status, "messages": []},
        }),
    ))
}

/// `POST .../feedback` (DDI `DdiActionFeedback`).
#[derive(Debug, Deserialize)]
pub struct Feedback {
    #[serde(default)]
    pub id: Option<Value>,
    pub status: FeedbackStatus,
}

#[derive(Debug, Deserialize)]
pub struct FeedbackStatus {
    pub execution: Execution,
    pub result: FeedbackResult,
    #[serde(default)]
    pub details: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct FeedbackResult {
    pub finished: Finished,
    #[serde(default)]
    pub progress: Option<Value>,
}

/// hawkBit's `DdiStatus.ExecutionStatus`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    Closed,
    Proceeding,
    Canceled,
    Scheduled,
    Rejected,
    Resumed,
    Downloaded,
    Download,
}

impl Execution {
    fn as_str(self) -> &'static str {
        match self {
            Execution::Closed => "closed",
            Execution::Proceeding => "proceeding",
            Execution::Canceled => "canceled",
            Execution::Scheduled => "scheduled",
            Execution::Rejected => "rejected",
            Execution::Resumed => "resumed",
            Execution::Downloaded => "downloaded",
            Execution::Download => "download",
        }
    }
}

/// hawkBit's `DdiResult.FinalResult`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    Success,
    Failure,
    None,
}

/// The details kept from one feedback: the first [`MAX_DETAILS`] lines, at most
/// [`MAX_DETAILS_BYTES`] in all (SWUpdate sends its whole log here; the body bound applies
/// before this).
fn details_text(d: &[String]) -> String {
    let mut t = String::new();
    for (i, line) in d.iter().enumerate() {
        if i == MAX_DETAILS || t.len() + line.len() + 1 > MAX_DETAILS_BYTES {
            t.push_str(&format!("({} more lines)", d.len() - i));
            break;
        }
        t.push_str(line);
        t.push('\n');
    }
    t
}

async fn feedback(
    fleet: &Fleet,
    d: &Device,
    aid: &str,
    fb: Feedback,
    cancel: bool,
) -> Result<Response<RespBody>, ApiError> {
    let a = own_action(fleet, d, aid).await?;
    if let Some(id) = &fb.id {
        let same = match id {
            Value::String(s) => s == &a.id.to_string(),
            Value::Number(n) => n.as_i64() == Some(a.id),
            _ => false,
        };
        if !same {
            return Err(ApiError::bad(format!(
                "feedback id {id} does not match action {} of the path",
                a.id
            )));
        }
    }
    if !a.state.is_open() {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!("action {} is closed ({})", a.id, a.state.as_str()),
        ));
    }
    let s = &fb.status;
    let details = details_text(&s.details);
    let exec = s.execution.as_str();
    let now = now_ms();
    let close = match (cancel, s.execution, s.result.finished) {
        (_, Execution::Closed, Finished::None) => {
            return Err(ApiError::bad(
                "feedback: execution closed needs result.finished success or failure",
            ))
        }
        (false, Execution::Closed, Finished::Success) => Some(ActionState::Success),
        (false, Execution::Closed, Finished::Failure) => Some(ActionState::Failure),
        // The device acknowledges the cancellation.
        (true, Execution::Closed | Execution::Canceled, Finished::Success | Finished::None) => {
            Some(ActionState::Canceled)
        }
        (false, Execution::Canceled, _) if a.state == ActionState::Canceling => {
            Some(ActionState::Canceled)
        }
        _ => None,
    };
    match close {
        Some(to) => {
            let closed = fleet
                .store
                .close_action(a.id, &d.controller_id, to, exec, &details, now)
                .await?;
            if closed {
                if let Some(r) = a.rollout_id {
                    // The engine may advance this rollout now (the periodic pass would too).
                    if let Err(e) = super::rollout::evaluate(&fleet.store, r, now).await {
                        super::log('E', format_args!("rollout {r}: {e}"));
                    }
                }
            }
        }
        None => {
            let progress = s
                .result
                .progress
                .as_ref()
                .and_then(|p| Some((p.get("cnt")?.as_i64()?, p.get("of")?.as_i64()?)));
            fleet
                .store
                .action_progress(a.id, exec, progress, &details, now)
                .await?;
        }
    }
    fleet.store.touch(&d.controller_id, now).await?;
    Ok(super::ok_empty())
}

/// `PUT .../configData` (DDI `DdiConfigData`).
#[derive(Debug, Deserialize)]
pub struct ConfigData {
    #[serde(default)]
    pub mode: Option<Mode>,
    pub data: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Merge,
    Replace,
    Remove,
}

async fn config_data(
    fleet: &Fleet,
    d: &Device,
    cd: ConfigData,
) -> Result<Response<RespBody>, ApiError> {
    let mut incoming = BTreeMap::new();
    for (k, v) in cd.data {
        if k.is_empty() || k.len() > MAX_ATTR_KEY {
            return Err(ApiError::bad(format!(
                "configData data: key {:?} must have 1 to {MAX_ATTR_KEY} characters",
                k.chars().take(40).collect::<String>()
            )));
        }
        let v = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ApiError::bad(format!(
                    "configData data.{k}: expected a string, found {}",
                    match other {
                        Value::Null => "null",
                        Value::Array(_) => "an array",
                        _ => "an object",
                    }
                )))
            }
        };
        if v.len() > MAX_ATTR_VALUE {
            return Err(ApiError::bad(format!(
                "configData data.{k}: value of {} characters, at most {MAX_ATTR_VALUE}",
                v.len()
            )));
        }
        let k = ALIASES
            .iter()
            .find(|(a, _)| *a == k)
            .map_or(k.clone(), |(_, c)| c.to_string());
        incoming.insert(k, v);
    }
    let attrs = match cd.mode.unwrap_or(Mode::Merge) {
        Mode::Merge => {
            let mut a = d.attributes.clone();
            a.extend(incoming);
            a
        }
        Mode::Replace => incoming,
        Mode::Remove => {
            let mut a = d.attributes.clone();
            for k in incoming.keys() {
                a.remove(k);
            }
            a
        }
    };
    if attrs.len() > MAX_ATTRIBUTES {
        return Err(ApiError::bad(format!(
            "configData: {} attributes, at most {MAX_ATTRIBUTES}",
            attrs.len()
        )));
    }
    fleet
        .store
        .set_attributes(&d.controller_id, &attrs, now_ms())
        .await?;
    Ok(super::ok_empty())
}

async fn cancel_action(
    fleet: &Fleet,
    d: &Device,
    aid: &str,
) -> Result<Response<RespBody>, ApiError> {
    let a = own_action(fleet, d, aid).await?;
    if !matches!(a.state, ActionState::Canceling | ActionState::Canceled) {
        return Err(ApiError::not_found(format!(
            "action {} is not being canceled",
            a.id
        )));
    }
    Ok(super::json(
        StatusCode::OK,
        &json!({"id": a.id.to_string(), "cancelAction": {"stopId": a.id.to_string()}}),
    ))
}
