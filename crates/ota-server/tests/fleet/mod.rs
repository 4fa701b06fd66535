//! Helpers of the fleet tests: a fleet server on loopback over SQLite or a throwaway
//! PostgreSQL server, a JSON client, and simulated DDI devices.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ota_server::fleet::FleetOptions;
use ota_server::Background;
use serde_json::Value;

use crate::common;

#[path = "pg.rs"]
mod pg;
#[allow(unused_imports)]
pub use pg::Postgres;

pub const ADMIN: &str = "admin-secret-1";
pub const GATEWAY: &str = "gateway-secret-1";

/// A fleet server over `db` serving `dir`.
pub fn fleet_server(dir: &Path, db: &str) -> Background {
    common::serve_with(dir, |o| {
        let mut f = FleetOptions::new(db);
        f.admin_token = Some(ADMIN.into());
        f.gateway_token = Some(GATEWAY.into());
        f.poll_sleep = Duration::from_secs(5);
        f.engine_every = Duration::from_millis(100);
        o.fleet = Some(f);
        o.access_log = std::env::var_os("FLEET_ACCESS_LOG").is_some();
    })
}

pub struct Reply {
    pub status: u16,
    pub json: Value,
    pub text: String,
    pub headers: std::collections::HashMap<String, String>,
}

/// One request with an optional body.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    let r = common::raw_bytes(addr, req.as_bytes());
    let text = String::from_utf8_lossy(&r.body).to_string();
    Reply {
        status: r.status,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        headers: r.headers,
    }
}

pub fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    call(addr, method, path, Some(&format!("Bearer {ADMIN}")), body)
}

/// Wait until the server lists `n` releases; returns the first one's id.
pub fn release_id(addr: SocketAddr, n: usize) -> i64 {
    let mut id = 0;
    assert!(
        common::wait_for(20, || {
            let r = admin(addr, "GET", "/api/v1/releases", None);
            let list = r.json["releases"].as_array().cloned().unwrap_or_default();
            if list.len() >= n {
                id = list[0]["id"].as_i64().unwrap();
                true
            } else {
                false
            }
        }),
        "the releases did not appear"
    );
    id
}

/// A simulated device speaking DDI with the gateway token: one poll; when a deployment is
/// offered, report configData when asked and close the action with `ok`. Returns whether it
/// had something to do.
pub fn device_step(addr: SocketAddr, id: &str, chip: &str, ok: bool) -> bool {
    let auth = format!("GatewayToken {GATEWAY}");
    let base = format!("/DEFAULT/controller/v1/{id}");
    let p = call(addr, "GET", &base, Some(&auth), None);
    assert_eq!(p.status, 200, "{}", p.text);
    if p.json["_links"]["configData"].is_object() {
        let body = format!(
            r#"{{"mode":"merge","data":{{"chip":"{chip}","project":"fleetapp","version":"1.0.0"}}}}"#
        );
        let r = call(
            addr,
            "PUT",
            &format!("{base}/configData"),
            Some(&auth),
            Some(&body),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let Some(href) = p.json["_links"]["deploymentBase"]["href"].as_str() else {
        if let Some(c) = p.json["_links"]["cancelAction"]["href"].as_str() {
            let path = strip(c);
            let a = call(addr, "GET", &path, Some(&auth), None);
            let aid = a.json["cancelAction"]["stopId"]
                .as_str()
                .unwrap()
                .to_string();
            let fb = format!(
                r#"{{"id":"{aid}","status":{{"execution":"closed","result":{{"finished":"success"}},"details":[]}}}}"#
            );
            let r = call(
                addr,
                "POST",
                &format!("{path}/feedback"),
                Some(&auth),
                Some(&fb),
            );
            assert_eq!(r.status, 200, "{}", r.text);
            return true;
        }
        return false;
    };
    let path = strip(href);
    let d = call(addr, "GET", &path, Some(&auth), None);
    assert_eq!(d.status, 200, "{}", d.text);
    let aid = d.json["id"].as_str().unwrap().to_string();
    let fin = if ok { "success" } else { "failure" };
    let fb = format!(
        r#"{{"id":"{aid}","status":{{"execution":"closed","result":{{"finished":"{fin}"}},"details":["done"]}}}}"#
    );
    let fpath = path.split('?').next().unwrap().to_string() + "/feedback";
    let r = call(addr, "POST", &fpath, Some(&auth), Some(&fb));
    assert_eq!(r.status, 200, "{}", r.text);
    true
}

/// The path (and query) of an absolute link.
pub fn strip(href: &str) -> String {
    let rest = href.split_once("://").map(|x| x.1).unwrap_or(href);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".into(),
    }
}
