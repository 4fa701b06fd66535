//! The rollout engine: a release offered to the devices a filter selects, group by group.
//!
//! As in hawkBit's rollouts (eclipse-hawkbit `hawkbit-repository` rollout management: groups
//! started in cascade, a success condition that starts the next group, an error condition whose
//! action pauses the rollout, and an emergency stop that cancels open actions):
//! - groups are given as cumulative percentages of the matching devices (`[1, 10, 50, 100]`:
//!   the first 1 %, up to 10 %, up to 50 %, the rest); the last must be 100;
//! - devices are ordered by SHA-256 of `rollout name` + `/` + `controller id`, so a rollout's
//!   groups are the same on every server and every run, and unrelated to registration order;
//! - a group starts when the one before it has `success_threshold` % of its devices finished
//!   with success (or its error was acknowledged by a resume); a group that finished below
//!   its success threshold holds the cascade;
//! - when `error_threshold` % of a running group's devices have failed (at least one), the
//!   group is marked `error` and the rollout pauses; resuming acknowledges it and the cascade
//!   continues;
//! - stop cancels the actions not yet offered and asks the devices with an offered action to
//!   cancel it (DDI `cancelAction`);
//! - the rollout is finished when every group has started and no action is open.
//!
//! Every transition is a guarded update in the store (see `store`), so several servers running
//! this engine over one database make each transition once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::{ActionState, Device, Release, Store, StoreError};

/// Most groups in one rollout.
pub const MAX_GROUPS: usize = 100;

/// Which devices a rollout targets. Omitted `chip`/`project` default to the release's (an image
/// is never offered to a device known to be another chip or project).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chip: Option<String>,
    /// configData attributes that must have these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Filter {
    pub fn matches(&self, d: &Device) -> bool {
        let field = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref() == Some(w.as_str()),
        };
        field(&self.project, &d.project)
            && field(&self.chip, &d.chip)
            && self
                .attributes
                .iter()
                .all(|(k, v)| d.attributes.get(k) == Some(v))
    }
}

/// What `POST /api/v1/rollouts` takes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub name: String,
    /// Release id (see `GET /api/v1/releases`).
    pub release: i64,
    #[serde(default)]
    pub filter: Filter,
    /// Cumulative percentages, increasing, the last 100.
    #[serde(default = "default_groups")]
    pub groups: Vec<i64>,
    /// % of a group finished with success that starts the next group.
    #[serde(default = "default_success")]
    pub success_threshold: i64,
    /// % of a group failed that pauses the rollout.
    #[serde(default = "default_error")]
    pub error_threshold: i64,
    /// Start at once (otherwise the rollout waits in `ready` for `POST .../start`).
    #[serde(default)]
    pub start: bool,
}

fn default_groups() -> Vec<i64> {
    vec![1, 10, 50, 100]
}
fn default_success() -> i64 {
    100
}
fn default_error() -> i64 {
    10
}

/// Why a rollout cannot be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout field {field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("release {0} does not exist (GET /api/v1/releases lists them)")]
    NoRelease(i64),
    #[error("rollout {0} does not exist")]
    NoRollout(i64),
    #[error(
        "no registered device matches the filter {0} (devices in another open action are left out)"
    )]
    NoDevices(String),
    #[error("rollout {id} is {state}: cannot {what}")]
    State {
        id: i64,
        state: String,
        what: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RolloutSpec {
    pub fn validate(&self) -> Result<(), RolloutError> {
        let bad = |field, why: String| Err(RolloutError::Invalid { field, why });
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return bad("name", "must have 1 to 128 characters".into());
        }
        if self.groups.is_empty() || self.groups.len() > MAX_GROUPS {
            return bad("groups", format!("needs 1 to {MAX_GROUPS} percentages"));
        }
        let mut prev = 0;
        for &p in &self.groups {
            if p <= prev || p > 100 {
                return bad(
                    "groups",
                    format!(
                        "percentages must increase within 1..=100, found {:?}",
                        self.groups
                    ),
                );
            }
            prev = p;
        }
        if prev != 100 {
            return bad(
                "groups",
                format!("the last percentage must be 100, found {prev}"),
            );
        }
        for (field, v) in [
            ("success_threshold", self.success_threshold),
            ("error_threshold", self.error_threshold),
        ] {
            if !(0..=100).contains(&v) {
                return bad(field, format!("must be 0..=100, found {v}"));
            }
        }
        Ok(())
    }
}

/// Split `n` ordered devices by cumulative percentages: group i ends at ceil(n * p_i / 100).
pub fn split(n: usize, percents: &[i64]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::with_capacity(percents.len());
    let mut start = 0usize;
    for &p in percents {
        let end = ((n as u128 * p as u128).div_ceil(100) as usize).clamp(start, n);
        out.push(start..end);
        start = end;
    }
    out
}

/// The stable order of a rollout's devices.
pub fn order_key(rollout_name: &str, controller_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(rollout_name.as_bytes());
    h.update(b"/");
    h.update(controller_id.as_bytes());
    h.finalize().into()
}

/// Create a rollout (and start it when asked). Returns its id.
pub async fn create(store: &Store, spec: &RolloutSpec, now: i64) -> Result<i64, RolloutError> {
    spec.validate()?;
    let release = store
        .release(spec.release)
        .await?
        .ok_or(RolloutError::NoRelease(spec.release))?;
    let filter = effective_filter(&spec.filter, &release);
    let busy: std::collections::HashSet<String> = store.busy_devices().await?.into_iter().collect();
    let mut chosen: Vec<([u8; 32], String)> = store
        .all_devices()
        .await?
        .into_iter()
        .filter(|d| filter.matches(d) && !busy.contains(&d.controller_id))
        .map(|d| (order_key(&spec.name, &d.controller_id), d.controller_id))
        .collect();
    if chosen.is_empty() {
        return Err(RolloutError::NoDevices(
            serde_json::to_string(&filter).unwrap_or_default(),
        ));
    }
    chosen.sort();
    let members: Vec<Vec<String>> = split(chosen.len(), &spec.groups)
        .into_iter()
        .map(|r| chosen[r].iter().map(|(_, id)| id.clone()).collect())
        .collect();
    let id = store
        .create_rollout(
            spec.name.trim(),
            release.id,
            &serde_json::to_string(&filter).unwrap_or_else(|_| "{}".into()),
            spec.success_threshold,
            spec.error_threshold,
            &spec.groups,
            &members,
            now,
        )
        .await?;
    if spec.start {
        start(store, id, now).await?;
    }
    Ok(id)
}

fn effective_filter(f: &Filter, r: &Release) -> Filter {
    Filter {
        project: f.project.clone().or_else(|| r.project.clone()),
        chip: f.chip.clone().or_else(|| r.chip.clone()),
        attributes: f.attributes.clone(),
    }
}

async fn change(
    store: &Store,
    id: i64,
    from: &[&str],
    to: &str,
    event: &str,
    what: &'static str,
    now: i64,
) -> Result<(), RolloutError> {
    if store
        .rollout_transition(id, from, to, event, None, now)
        .await?
    {
        return Ok(());
    }
    match store.rollout(id).await? {
        None => Err(RolloutError::NoRollout(id)),
        Some(r) => Err(RolloutError::State {
            id,
            state: r.state,
            what,
        }),
    }
}

pub async fn start(store: &Store, id: i64, now: i64) -> Result<(), RolloutError> {
    change(store, id, &["ready"], "running", "started", "start", now).await?;
    evaluate(store, id, now).await
}

pub async fn pause(store: &Store, id: i64, now: i64) -> Result<(), RolloutError> {
    change(store, id, &["running"], "paused", "paused", "pause", now).await
}

pub async fn resume(store: &Store, id: i64, now: i64) -> Result<(), RolloutError> {
    change(store, id, &["paused"], "running", "resumed", "resume", now).await?;
    evaluate(store, id, now).await
}

/// Emergency stop.
pub async fn stop(store: &Store, id: i64, now: i64) -> Result<(), RolloutError> {
    change(
        store,
        id,
        &["ready", "running", "paused"],
        "stopped",
        "stopped",
        "stop",
        now,
    )
    .await
}

/// Counts of one group.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub total: i64,
    pub scheduled: i64,
    pub running: i64,
    pub canceling: i64,
    pub canceled: i64,
    pub success: i64,
    pub failure: i64,
}

impl Counts {
    pub fn from_map(total: i64, m: Option<&BTreeMap<ActionState, i64>>) -> Counts {
        let g = |s| m.and_then(|m| m.get(&s)).copied().unwrap_or(0);
        Counts {
            total,
            scheduled: g(ActionState::Scheduled),
            running: g(ActionState::Running),
            canceling: g(ActionState::Canceling),
            canceled: g(ActionState::Canceled),
            success: g(ActionState::Success),
            failure: g(ActionState::Failure),
        }
    }
    pub fn open(&self) -> i64 {
        self.scheduled + self.running + self.canceling
    }
}

/// Advance one running rollout as far as its counts allow.
pub async fn evaluate(store: &Store, id: i64, now: i64) -> Result<(), RolloutError> {
    let Some(r) = store.rollout(id).await? else {
        return Err(RolloutError::NoRollout(id));
    };
    if r.state != "running" {
        return Ok(());
    }
    let groups = store.groups(id).await?;
    let counts = store.group_counts(id).await?;
    let mut prev_passed = true;
    let mut all_done = true;
    for g in &groups {
        let c = Counts::from_map(g.total, counts.get(&g.idx));
        let mut state = g.state.clone();
        if state == "scheduled" {
            if !prev_passed {
                all_done = false;
                break;
            }
            store
                .group_transition(id, g.idx, "scheduled", "running", now)
                .await?;
            // Whichever server started it, it runs now; its counts are those of a fresh group.
            state = "running".into();
        }
        let c = if g.state == "scheduled" {
            Counts {
                running: c.scheduled + c.running,
                scheduled: 0,
                ..c
            }
        } else {
            c
        };
        if state == "running" {
            if c.failure > 0 && c.failure * 100 >= r.error_threshold * c.total.max(1) {
                // Pauses the rollout too, in one transaction (see `group_transition`).
                store
                    .group_transition(id, g.idx, "running", "error", now)
                    .await?;
                return Ok(());
            }
            if c.open() == 0 {
                store
                    .group_transition(id, g.idx, "running", "finished", now)
                    .await?;
                state = "finished".into();
            }
        }
        // A group passes on its success threshold, finished or not (a group that finished
        // below it holds the cascade, as in hawkBit); an error group passes once resumed.
        let passed = match state.as_str() {
            "error" => true,
            "finished" | "running" => c.success * 100 >= r.success_threshold * c.total,
            _ => false,
        };
        if state != "finished" && !(state == "error" && c.open() == 0) {
            all_done = false;
        }
        prev_passed = passed;
    }
    if all_done {
        store
            .rollout_transition(id, &["running"], "finished", "finished", None, now)
            .await?;
    }
    Ok(())
}

/// One pass of the engine over every running rollout (each server runs this periodically).
pub async fn tick(store: &Store, now: i64) -> Result<(), RolloutError> {
    for id in store.active_rollouts().await? {
        evaluate(store, id, now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_cumulative_and_covers_everything() {
        let s = split(1000, &[1, 10, 50, 100]);
        assert_eq!(s, vec![0..10, 10..100, 100..500, 500..1000]);
        let s = split(3, &[1, 10, 50, 100]);
        assert_eq!(s, vec![0..1, 1..1, 1..2, 2..3]);
        let s = split(1, &[50, 100]);
        assert_eq!(s, vec![0..1, 1..1]);
    }

    #[test]
    fn spec_validation_names_the_field() {
        let mut s = RolloutSpec {
            name: "r".into(),
            release: 1,
            filter: Filter::default(),
            groups: vec![10, 5, 100],
            success_threshold: 100,
            error_threshold: 10,
            start: false,
        };
        assert!(s.validate().unwrap_err().to_string().contains("groups"));
        s.groups = vec![10, 50];
        assert!(s.validate().unwrap_err().to_string().contains("100"));
        s.groups = vec![10, 100];
        s.error_threshold = 101;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("error_threshold"));
        s.error_threshold = 0;
        s.validate().unwrap();
    }

    #[test]
    fn order_is_stable_and_depends_on_the_rollout() {
        assert_eq!(order_key("a", "dev1"), order_key("a", "dev1"));
        assert_ne!(order_key("a", "dev1"), order_key("b", "dev1"));
    }
}
