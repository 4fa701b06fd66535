//! The rollout engine on SQLite and on a real PostgreSQL server: groups start in cascade, the
//! error threshold pauses, resume continues, stop cancels, and two servers over one database
//! make every transition once.

mod common;
mod fleet;

use std::net::SocketAddr;

use fleet::{admin, call, device_step, fleet_server, release_id, Postgres, GATEWAY};
use ota_core::Chip;
use serde_json::{json, Value};

fn folder() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let img = common::image(Chip::Esp32c3, "fleetapp", "2.0.0", 32 * 1024);
    std::fs::write(www.join("fleetapp-2.0.0.bin"), img).unwrap();
    t
}

fn sqlite(t: &tempfile::TempDir) -> String {
    format!("sqlite:{}", t.path().join("fleet.db").display())
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("dev-{i:03}")).collect()
}

/// Register the devices (gateway token) with their attributes.
fn register(addrs: &[SocketAddr], devs: &[String]) {
    for (i, d) in devs.iter().enumerate() {
        assert!(!device_step(addrs[i % addrs.len()], d, "esp32c3", true));
    }
    // one esp32 device that no esp32c3 release may reach
    assert!(!device_step(addrs[0], "other-chip", "esp32", true));
}

fn offered(addr: SocketAddr, id: &str) -> bool {
    let p = call(
        addr,
        "GET",
        &format!("/DEFAULT/controller/v1/{id}"),
        Some(&format!("GatewayToken {GATEWAY}")),
        None,
    );
    p.json["_links"]["deploymentBase"].is_object()
}

fn rollout(addr: SocketAddr, id: i64) -> Value {
    admin(addr, "GET", &format!("/api/v1/rollouts/{id}"), None).json
}

fn create(addr: SocketAddr, rel: i64, name: &str, error_threshold: i64) -> i64 {
    let body = json!({"name": name, "release": rel, "groups": [10, 50, 100],
                      "success_threshold": 100, "error_threshold": error_threshold});
    let r = admin(addr, "POST", "/api/v1/rollouts", Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["state"], "ready");
    let totals: Vec<i64> = r.json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["counts"]["total"].as_i64().unwrap())
        .collect();
    assert_eq!(totals, vec![2, 8, 10], "{}", r.text);
    r.json["id"].as_i64().unwrap()
}

fn events(v: &Value) -> Vec<(String, Option<i64>)> {
    v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["group"].as_i64(),
            )
        })
        .collect()
}

fn cascade(db: &str, t: &tempfile::TempDir, servers: usize) {
    let srvs: Vec<_> = (0..servers)
        .map(|_| fleet_server(&t.path().join("www"), db))
        .collect();
    let addrs: Vec<SocketAddr> = srvs.iter().map(|s| s.info.addr).collect();
    let devs = ids(20);
    register(&addrs, &devs);
    let rel = release_id(addrs[0], 1);
    let id = create(addrs[0], rel, "cascade", 50);
    assert!(
        devs.iter().all(|d| !offered(addrs[0], d)),
        "ready: nothing offered"
    );
    let r = admin(
        addrs[servers - 1],
        "POST",
        &format!("/api/v1/rollouts/{id}/start"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let first: Vec<&String> = devs.iter().filter(|d| offered(addrs[0], d)).collect();
    assert_eq!(first.len(), 2, "only the first group is offered");
    assert!(!offered(addrs[0], "other-chip"));
    // Devices report to alternating servers until the rollout is finished.
    let mut passes = 0;
    while rollout(addrs[0], id)["state"] != "finished" {
        passes += 1;
        assert!(passes < 50, "{}", rollout(addrs[0], id));
        for (i, d) in devs.iter().enumerate() {
            device_step(addrs[(i + passes) % addrs.len()], d, "esp32c3", true);
        }
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    let v = rollout(addrs[servers - 1], id);
    assert_eq!(v["counts"]["success"], 20, "{v}");
    let ev = events(&v);
    let started: Vec<Option<i64>> = ev
        .iter()
        .filter(|e| e.0 == "group started")
        .map(|e| e.1)
        .collect();
    assert_eq!(
        started,
        vec![Some(0), Some(1), Some(2)],
        "each group started once: {ev:?}"
    );
    assert_eq!(ev.iter().filter(|e| e.0 == "finished").count(), 1, "{ev:?}");
    assert_eq!(
        ev.iter().filter(|e| e.0 == "group finished").count(),
        3,
        "{ev:?}"
    );
    // The devices list shows the results.
    let d = admin(addrs[0], "GET", "/api/v1/devices?limit=1000", None);
    assert_eq!(d.json["total"], 21);
    let ok = d.json["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["last_result"] == "success")
        .count();
    assert_eq!(ok, 20);
}

fn error_pause_resume_stop(db: &str, t: &tempfile::TempDir) {
    let srv = fleet_server(&t.path().join("www"), db);
    let addr = srv.info.addr;
    let devs = ids(20);
    register(&[addr], &devs);
    let rel = release_id(addr, 1);
    let id = create(addr, rel, "bad-release", 50);
    admin(addr, "POST", &format!("/api/v1/rollouts/{id}/start"), None);
    // The first group's devices roll back: failure.
    for d in &devs {
        device_step(addr, d, "esp32c3", false);
    }
    let v = rollout(addr, id);
    assert_eq!(v["state"], "paused", "{v}");
    assert_eq!(v["groups"][0]["state"], "error", "{v}");
    assert_eq!(v["groups"][0]["counts"]["failure"], 2, "{v}");
    assert_eq!(v["groups"][1]["state"], "scheduled", "{v}");
    assert!(
        devs.iter().all(|d| !offered(addr, d)),
        "paused: nothing new offered"
    );
    // A second pause is a conflict, with the state named.
    let r = admin(addr, "POST", &format!("/api/v1/rollouts/{id}/pause"), None);
    assert_eq!(r.status, 409);
    assert!(r.text.contains("paused"), "{}", r.text);
    // Resume: the error is acknowledged and the next group starts.
    let r = admin(addr, "POST", &format!("/api/v1/rollouts/{id}/resume"), None);
    assert_eq!(r.status, 200, "{}", r.text);
    let v = rollout(addr, id);
    assert_eq!(v["groups"][1]["state"], "running", "{v}");
    assert_eq!(devs.iter().filter(|d| offered(addr, d)).count(), 8);
    // Emergency stop: the offered actions are canceled on the devices, the rest never offered.
    let r = admin(addr, "POST", &format!("/api/v1/rollouts/{id}/stop"), None);
    assert_eq!(r.status, 200, "{}", r.text);
    let v = rollout(addr, id);
    assert_eq!(v["state"], "stopped");
    assert_eq!(v["counts"]["canceling"], 8, "{v}");
    assert_eq!(v["counts"]["canceled"], 10, "{v}");
    for d in &devs {
        device_step(addr, d, "esp32c3", true);
    }
    let v = rollout(addr, id);
    assert_eq!(v["counts"]["canceled"], 18, "{v}");
    assert_eq!(v["counts"]["success"], 0, "{v}");
    let r = admin(addr, "POST", &format!("/api/v1/rollouts/{id}/resume"), None);
    assert_eq!(r.status, 409);
    let ev: Vec<String> = events(&v).into_iter().map(|e| e.0).collect();
    assert_eq!(
        ev,
        [
            "created",
            "started",
            "group started",
            "group error threshold reached",
            "paused: error threshold reached",
            "resumed",
            "group started",
            "stopped"
        ]
    );
}

/// One failure in the first group: below the error threshold (no pause), but the group ends
/// below its success threshold, so the next group never starts.
fn below_success_threshold_holds(db: &str, t: &tempfile::TempDir) {
    let srv = fleet_server(&t.path().join("www"), db);
    let addr = srv.info.addr;
    let devs = ids(20);
    register(&[addr], &devs);
    let rel = release_id(addr, 1);
    let id = create(addr, rel, "holds", 60);
    admin(addr, "POST", &format!("/api/v1/rollouts/{id}/start"), None);
    let mut failed = false;
    for d in &devs {
        if offered(addr, d) {
            device_step(addr, d, "esp32c3", failed);
            failed = true;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let v = rollout(addr, id);
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["groups"][0]["state"], "finished", "{v}");
    assert_eq!(v["groups"][0]["counts"]["failure"], 1, "{v}");
    assert_eq!(v["groups"][1]["state"], "scheduled", "{v}");
    assert!(devs.iter().all(|d| !offered(addr, d)));
}

#[test]
fn sqlite_a_group_below_its_success_threshold_holds_the_cascade() {
    let t = folder();
    below_success_threshold_holds(&sqlite(&t), &t);
}

#[test]
fn sqlite_groups_start_in_cascade() {
    let t = folder();
    cascade(&sqlite(&t), &t, 1);
}

#[test]
fn sqlite_error_threshold_pauses_and_stop_cancels() {
    let t = folder();
    error_pause_resume_stop(&sqlite(&t), &t);
}

#[test]
fn sqlite_two_servers_share_one_database() {
    let t = folder();
    cascade(&sqlite(&t), &t, 2);
}

#[test]
fn postgres_groups_start_in_cascade() {
    let Some(pg) = Postgres::start() else { return };
    let t = folder();
    cascade(&pg.url, &t, 1);
}

#[test]
fn postgres_error_threshold_pauses_and_stop_cancels() {
    let Some(pg) = Postgres::start() else { return };
    let t = folder();
    error_pause_resume_stop(&pg.url, &t);
}

#[test]
fn postgres_two_servers_share_one_database() {
    let Some(pg) = Postgres::start() else { return };
    let t = folder();
    cascade(&pg.url, &t, 2);
}
