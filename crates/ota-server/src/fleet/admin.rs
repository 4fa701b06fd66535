//! The admin JSON API under `/api/v1`, behind `Authorization: Bearer <admin token>`. What the
//! `ota devices` / `ota rollout` commands and a web page call:
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/api/v1/devices?after=ID&limit=N` | devices ordered by id (`limit` at most 1000) |
//! | POST | `/api/v1/devices` `{"id": ...}` | register; the answer holds the target token, once |
//! | GET | `/api/v1/releases` | releases (app images of the catalogue) |
//! | POST | `/api/v1/releases` `{"path", "project", "version", "chip"}` | any file of the folder as a release |
//! | GET | `/api/v1/rollouts` | rollouts with per-group counts |
//! | POST | `/api/v1/rollouts` | create (see `rollout::RolloutSpec`) |
//! | GET | `/api/v1/rollouts/{id}` | one rollout with per-group counts and its timeline |
//! | POST | `/api/v1/rollouts/{id}/start` (`pause`, `resume`, `stop`) | change its state |

use bytes::Bytes;
use http_body::Body;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::rollout::{self, Counts, RolloutSpec};
use super::store::{now_ms, Device, RolloutRow};
use super::{auth, read_json, valid_controller_id, ApiError, Fleet};
use crate::http::RespBody;

/// Most devices in one page of `GET /api/v1/devices`.
pub const MAX_PAGE: i64 = 1000;

pub async fn route<B>(fleet: &Fleet, parts: &Parts, body: B) -> Result<Response<RespBody>, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fleet.admin_ok(parts.headers.get(hyper::header::AUTHORIZATION))?;
    let path = parts.uri.path();
    let segs: Vec<&str> = path
        .trim_start_matches("/api/v1")
        .trim_matches('/')
        .split('/')
        .collect();
    let m = &parts.method;
    let ok = |v: Value| Ok(super::json(StatusCode::OK, &v));
    match (m, segs.as_slice()) {
        (&Method::GET, ["devices"]) => {
            let q = query(parts);
            let after = q.get("after").cloned().unwrap_or_default();
            let limit = match q.get("limit") {
                None => 100,
                Some(l) => l
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad(format!("limit {l:?}: expected 1..={MAX_PAGE}"))
                    })?,
            };
            let devices = fleet.store.devices(&after, limit).await?;
            let total = fleet.store.device_count().await?;
            let list: Vec<Value> = devices.iter().map(device_json).collect();
            ok(json!({"total": total, "devices": list}))
        }
        (&Method::POST, ["devices"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct NewDevice {
                id: String,
            }
            let nd: NewDevice = read_json(parts, body, "device").await?;
            if !valid_controller_id(&nd.id) {
                return Err(ApiError::bad(format!(
                    "device id {:?}: expected 1 to {} characters of A-Z a-z 0-9 . _ - :",
                    nd.id.chars().take(80).collect::<String>(),
                    super::MAX_CONTROLLER_ID
                )));
            }
            let token = auth::new_token().map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("random token: {e}"),
                )
            })?;
            let h = auth::TokenHash::of(&token);
            if !fleet
                .store
                .register_device(&nd.id, Some(h), now_ms())
                .await?
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("device {} is already registered", nd.id),
                ));
            }
            Ok(super::json(
                StatusCode::CREATED,
                &json!({"id": nd.id, "token": token}),
            ))
        }
        (&Method::GET, ["releases"]) => {
            fleet.sync_releases().await?;
            let r = fleet.store.releases().await?;
            ok(json!({"releases": r}))
        }
        (&Method::POST, ["releases"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct NewRelease {
                path: String,
                #[serde(default)]
                project: Option<String>,
                #[serde(default)]
                version: Option<String>,
                #[serde(default)]
                chip: Option<String>,
            }
            let nr: NewRelease = read_json(parts, body, "release").await?;
            for (field, v) in [
                ("project", &nr.project),
                ("version", &nr.version),
                ("chip", &nr.chip),
            ] {
                if v.as_ref().is_some_and(|s| s.is_empty() || s.len() > 128) {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("release field {field}: must have 1 to 128 characters"),
                    ));
                }
            }
            let r = super::releases::add_file(
                &fleet.store,
                fleet.root(),
                &nr.path,
                nr.project,
                nr.version,
                nr.chip,
            )
            .await?;
            Ok(super::json(
                StatusCode::CREATED,
                &serde_json::to_value(r).unwrap_or(Value::Null),
            ))
        }
        (&Method::GET, ["rollouts"]) => {
            let mut list = Vec::new();
            for r in fleet.store.rollouts().await? {
                list.push(rollout_json(fleet, &r, false).await?);
            }
            ok(json!({"rollouts": list}))
        }
        (&Method::POST, ["rollouts"]) => {
            let spec: RolloutSpec = read_json(parts, body, "rollout").await?;
            fleet.sync_releases().await?;
            let id = rollout::create(&fleet.store, &spec, now_ms()).await?;
            let r = fleet
                .store
                .rollout(id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("rollout {id} vanished")))?;
            Ok(super::json(
                StatusCode::CREATED,
                &rollout_json(fleet, &r, true).await?,
            ))
        }
        (&Method::GET, ["rollouts", id]) => {
            let id = rollout_id(id)?;
            let r = fleet
                .store
                .rollout(id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("rollout {id} does not exist")))?;
            ok(rollout_json(fleet, &r, true).await?)
        }
        (&Method::POST, ["rollouts", id, verb]) => {
            let id = rollout_id(id)?;
            let now = now_ms();
            match *verb {
                "start" => rollout::start(&fleet.store, id, now).await?,
                "pause" => rollout::pause(&fleet.store, id, now).await?,
                "resume" => rollout::resume(&fleet.store, id, now).await?,
                "stop" => rollout::stop(&fleet.store, id, now).await?,
                other => {
                    return Err(ApiError::not_found(format!(
                        "rollout action {:?}: expected start, pause, resume or stop",
                        other.chars().take(20).collect::<String>()
                    )))
                }
            }
            let r = fleet
                .store
                .rollout(id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("rollout {id} does not exist")))?;
            ok(rollout_json(fleet, &r, true).await?)
        }
        (_, ["devices"] | ["releases"] | ["rollouts"] | ["rollouts", _] | ["rollouts", _, _]) => {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path}: method {m} not allowed"),
            ))
        }
        _ => Err(ApiError::not_found(format!(
            "{path}: no such admin resource"
        ))),
    }
}

fn rollout_id(s: &str) -> Result<i64, ApiError> {
    s.parse().map_err(|_| {
        ApiError::not_found(format!(
            "rollout {:?} does not exist",
            s.chars().take(24).collect::<String>()
        ))
    })
}

/// The query string as a map (percent-decoded).
fn query(parts: &Parts) -> std::collections::HashMap<String, String> {
    parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let d = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .to_string()
            };
            (d(k), d(v))
        })
        .collect()
}

pub fn device_json(d: &Device) -> Value {
    json!({
        "id": d.controller_id,
        "chip": d.chip,
        "project": d.project,
        "version": d.version,
        "otadata_state": d.otadata_state,
        "secure_version": d.secure_version,
        "attributes": d.attributes,
        "created_at": d.created_at,
        "last_seen": d.last_seen,
        "last_result": d.last_result,
    })
}

pub(crate) async fn rollout_json(
    fleet: &Fleet,
    r: &RolloutRow,
    timeline: bool,
) -> Result<Value, ApiError> {
    let groups = fleet.store.groups(r.id).await?;
    let counts = fleet.store.group_counts(r.id).await?;
    let mut total = Counts::default();
    let gs: Vec<Value> = groups
        .iter()
        .map(|g| {
            let c = Counts::from_map(g.total, counts.get(&g.idx));
            total.total += c.total;
            total.scheduled += c.scheduled;
            total.running += c.running;
            total.canceling += c.canceling;
            total.canceled += c.canceled;
            total.success += c.success;
            total.failure += c.failure;
            json!({"index": g.idx, "percent": g.percent, "state": g.state, "counts": c})
        })
        .collect();
    let filter: Value = serde_json::from_str(&r.filter).unwrap_or(Value::Null);
    let mut v = json!({
        "id": r.id,
        "name": r.name,
        "release": r.release_id,
        "state": r.state,
        "filter": filter,
        "success_threshold": r.success_threshold,
        "error_threshold": r.error_threshold,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "counts": total,
        "groups": gs,
    });
    if timeline {
        v["timeline"] =
            serde_json::to_value(fleet.store.events(r.id).await?).unwrap_or(Value::Null);
    }
    Ok(v)
}
