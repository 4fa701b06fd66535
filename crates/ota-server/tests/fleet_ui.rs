//! The `/ui` page in headless Chromium (Debian's `chromium`, driven by `playwright-core` from
//! `tests/ui/`): sign-in, device strings escaped, a rollout advancing while devices report
//! through DDI, and the stop button stopping it. Screenshots go to `target/ui-screenshots/`
//! (or `$OTA_UI_SHOTS`).

mod common;
mod fleet;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet::{admin, call, device_step, fleet_server, release_id, ADMIN, GATEWAY};
use ota_core::Chip;
use serde_json::json;

fn ui_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/ui")
}

#[test]
fn page_shows_a_rollout_advancing_and_stops_it() {
    let chromium = PathBuf::from("/usr/bin/chromium");
    let ui = ui_dir();
    if !chromium.exists() {
        eprintln!("SKIP: /usr/bin/chromium is not installed (apt-get install chromium)");
        return;
    }
    if !ui.join("node_modules/playwright-core").exists() {
        eprintln!(
            "SKIP: {} has no node_modules/playwright-core (npm ci there)",
            ui.display()
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let img = common::image(Chip::Esp32c3, "fleetapp", "2.0.0", 32 * 1024);
    std::fs::write(www.join("fleetapp-2.0.0.bin"), img).unwrap();
    let db = format!("sqlite:{}", t.path().join("fleet.db").display());
    let srv = fleet_server(&www, &db);
    let addr = srv.info.addr;

    let devs: Vec<String> = (0..20).map(|i| format!("dev-{i:03}")).collect();
    for d in &devs {
        assert!(!device_step(addr, d, "esp32c3", true));
    }
    // A device whose attributes are markup and script (attacker-controlled strings).
    let auth = format!("GatewayToken {GATEWAY}");
    let p = call(
        addr,
        "GET",
        "/DEFAULT/controller/v1/evil",
        Some(&auth),
        None,
    );
    assert_eq!(p.status, 200, "{}", p.text);
    let body = json!({"mode": "merge", "data": {
        "chip": "<img src=x onerror=\"window.__pwned=true\">",
        "project": "</td><script>window.__pwned=true</script>",
        "version": "\"'><b>v</b>"}});
    let r = call(
        addr,
        "PUT",
        "/DEFAULT/controller/v1/evil/configData",
        Some(&auth),
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    let rel = release_id(addr, 1);
    let spec = json!({"name": "spring <b>2026</b>", "release": rel, "groups": [10, 50, 100],
                      "success_threshold": 100, "error_threshold": 50, "start": true});
    let r = admin(addr, "POST", "/api/v1/rollouts", Some(&spec.to_string()));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_i64().unwrap();

    // Devices poll one at a time, slowly, so that the page sees the groups move. They hold
    // still once group 1 is finished and group 2 has its first success: the state the page
    // waits for then lasts until its stop button, however slowly the browser gets there (on a
    // loaded machine the whole rollout used to finish before the page looked).
    let stop = Arc::new(AtomicBool::new(false));
    let devices = {
        let stop = stop.clone();
        let devs = devs.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            let mut held = false;
            while !stop.load(Ordering::Relaxed) {
                if !held {
                    device_step(addr, &devs[i % devs.len()], "esp32c3", true);
                    i += 1;
                    let v = admin(addr, "GET", &format!("/api/v1/rollouts/{id}"), None).json;
                    held = v["groups"][0]["state"] == "finished"
                        && v["groups"][1]["state"] == "running"
                        && v["groups"][1]["counts"]["success"].as_i64() >= Some(1);
                }
                std::thread::sleep(Duration::from_millis(120));
            }
            held
        })
    };

    let shots = std::env::var_os("OTA_UI_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots")
        });
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("timeout")
        .arg("150")
        .arg("node")
        .arg(ui.join("fleet_ui.mjs"))
        .current_dir(&ui)
        .env("OTA_UI_URL", format!("http://{addr}"))
        .env("OTA_UI_TOKEN", ADMIN)
        .env("OTA_UI_ROLLOUT", id.to_string())
        .env("OTA_UI_SHOTS", &shots)
        .output()
        .expect("running node");
    stop.store(true, Ordering::Relaxed);
    let held = devices.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("STEP done"), "{stdout}");
    assert!(held, "the devices never brought the rollout to group 2");

    let v = admin(addr, "GET", &format!("/api/v1/rollouts/{id}"), None).json;
    assert_eq!(v["state"], "stopped", "{v}");
    assert_eq!(v["groups"][0]["state"], "finished", "{v}");
    let ev: Vec<&str> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(ev.contains(&"stopped"), "{ev:?}");
    for f in ["fleet-ui.png", "fleet-ui-stopped.png"] {
        let m = std::fs::metadata(shots.join(f)).unwrap();
        assert!(m.len() > 10_000, "{f}: {} bytes", m.len());
    }
}

/// Without a session the page is the login form, the buttons are refused, a POST from another
/// origin is refused, and the page is off without an admin token.
#[test]
fn page_needs_a_session() {
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let db = format!("sqlite:{}", t.path().join("fleet.db").display());
    let srv = fleet_server(&www, &db);
    let addr = srv.info.addr;
    let r = call(addr, "GET", "/ui", None, None);
    assert_eq!(r.status, 200);
    assert!(r.text.contains("name=\"token\""), "{}", r.text);
    assert!(!r.text.contains("Rollouts"));
    let r = call(
        addr,
        "GET",
        "/ui?part=main",
        Some(&format!("Bearer {ADMIN}")),
        None,
    );
    assert!(
        !r.text.contains("Rollouts"),
        "a bearer header is not a session"
    );
    let r = call(addr, "POST", "/ui/rollouts/1/stop", None, None);
    assert_eq!(r.status, 401);
    // A forged cookie.
    let raw = format!(
        "GET /ui HTTP/1.1\r\nHost: {addr}\r\nCookie: ota_ui=99999999999999.{}\r\nConnection: close\r\n\r\n",
        "0".repeat(64)
    );
    let r = common::raw_bytes(addr, raw.as_bytes());
    assert!(!String::from_utf8_lossy(&r.body).contains("Rollouts"));
    // Login: the cookie is HttpOnly, holds no token, and opens the page.
    let form = format!("token={ADMIN}");
    let raw = format!(
        "POST /ui/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    let r = common::raw_bytes(addr, raw.as_bytes());
    assert_eq!(r.status, 303);
    let c = r
        .headers
        .get("set-cookie")
        .expect("a session cookie")
        .clone();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );
    assert!(!c.contains(ADMIN), "{c}");
    let value = c.split(';').next().unwrap().to_string();
    let get = |extra: &str| {
        let raw = format!(
            "GET /ui HTTP/1.1\r\nHost: {addr}\r\nCookie: {value}\r\n{extra}Connection: close\r\n\r\n"
        );
        common::raw_bytes(addr, raw.as_bytes())
    };
    let r = get("");
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("Rollouts"));
    // A POST with the cookie from another origin.
    let raw = format!(
        "POST /ui/rollouts/1/stop HTTP/1.1\r\nHost: {addr}\r\nCookie: {value}\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let r = common::raw_bytes(addr, raw.as_bytes());
    assert_eq!(r.status, 403);
    // A rollout that does not exist: an error page naming it, not a panic.
    let raw = format!(
        "POST /ui/rollouts/77/stop HTTP/1.1\r\nHost: {addr}\r\nCookie: {value}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let r = common::raw_bytes(addr, raw.as_bytes());
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("77"));
    // An oversized login body.
    let big = format!("token={}", "a".repeat(10_000));
    let raw = format!(
        "POST /ui/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let r = common::raw_bytes(addr, raw.as_bytes());
    assert_eq!(r.status, 413);
    drop(srv);

    let plain = common::serve_with(&www, |o| {
        o.fleet = Some(ota_server::fleet::FleetOptions::new(db.clone()));
    });
    let r = call(plain.info.addr, "GET", "/ui", None, None);
    assert_eq!(r.status, 403);
    assert!(r.text.contains("--admin-token-file"), "{}", r.text);
}
