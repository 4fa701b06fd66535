//! The DDI server against a DDI client nobody here wrote (the `hawkbit` crate), and against
//! hostile or foreign requests.

mod common;
mod fleet;

use fleet::{admin, call, fleet_server, release_id, ADMIN, GATEWAY};
use hawkbit::ddi::{Client, ClientAuthorization, Execution, Finished, Mode};
use ota_core::Chip;
use serde_json::json;

fn setup() -> (tempfile::TempDir, ota_server::Background, Vec<u8>) {
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let img = common::image(Chip::Esp32c3, "fleetapp", "2.0.0", 64 * 1024);
    std::fs::write(www.join("fleetapp-2.0.0.bin"), &img).unwrap();
    let db = format!("sqlite:{}", t.path().join("fleet.db").display());
    let srv = fleet_server(&www, &db);
    (t, srv, img)
}

#[test]
fn hawkbit_crate_client_completes_a_deployment() {
    let (t, srv, img) = setup();
    let addr = srv.info.addr;
    let rel = release_id(addr, 1);
    let reg = admin(addr, "POST", "/api/v1/devices", Some(r#"{"id":"dev-1"}"#));
    assert_eq!(reg.status, 201, "{}", reg.text);
    let token = reg.json["token"].as_str().unwrap().to_string();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new(
            &srv.info.base_url,
            "DEFAULT",
            "dev-1",
            ClientAuthorization::TargetToken(token.clone()),
            None,
            None,
            Some(std::time::Duration::from_secs(10)),
        )
        .unwrap();
        // First poll: nothing to install, attributes requested.
        let reply = client.poll().await.unwrap();
        assert_eq!(reply.polling_sleep().unwrap().as_secs(), 5);
        assert!(reply.update().is_none());
        let cfg = reply
            .config_data_request()
            .expect("configData asked on first contact");
        cfg.upload(
            Execution::Closed,
            Finished::Success,
            Some(Mode::Merge),
            json!({"chip": "esp32c3", "project": "fleetapp", "version": "1.0.0",
                   "otadata_state": "valid", "secure_version": "0"}),
            vec!["attributes"],
        )
        .await
        .unwrap();
        let reply = client.poll().await.unwrap();
        assert!(
            reply.config_data_request().is_none(),
            "attributes were stored"
        );

        // A rollout of that release to this one device.
        let body = json!({"name": "r1", "release": rel, "groups": [100], "start": true});
        let r = admin(addr, "POST", "/api/v1/rollouts", Some(&body.to_string()));
        assert_eq!(r.status, 201, "{}", r.text);
        let rollout = r.json["id"].as_i64().unwrap();

        let reply = client.poll().await.unwrap();
        let update = reply.update().expect("a deployment").fetch().await.unwrap();
        let chunks: Vec<_> = update.chunks().collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].name(), "fleetapp");
        assert_eq!(chunks[0].version(), "2.0.0");
        let arts: Vec<_> = chunks[0].artifacts().collect();
        assert_eq!(arts[0].filename(), "fleetapp-2.0.0.bin");
        assert_eq!(arts[0].size() as usize, img.len());
        update
            .send_feedback_with_progress(
                Execution::Proceeding,
                Finished::None,
                json!({"cnt": 1, "of": 2}),
                vec!["downloading"],
            )
            .await
            .unwrap();
        let dl = t.path().join("dl");
        let files = update.download(&dl).await.unwrap();
        assert_eq!(files.len(), 1);
        files[0]
            .check_sha256()
            .await
            .expect("SHA-256 of the artifact");
        assert_eq!(std::fs::read(files[0].file()).unwrap(), img);
        update
            .send_feedback(Execution::Closed, Finished::Success, vec!["installed"])
            .await
            .unwrap();

        let reply = client.poll().await.unwrap();
        assert!(reply.update().is_none(), "the action is closed");
        let r = admin(addr, "GET", &format!("/api/v1/rollouts/{rollout}"), None);
        assert_eq!(r.json["state"], "finished", "{}", r.text);
        assert_eq!(r.json["counts"]["success"], 1);
    });
    let d = admin(addr, "GET", "/api/v1/devices", None);
    let dev = &d.json["devices"][0];
    assert_eq!(dev["id"], "dev-1");
    assert_eq!(dev["chip"], "esp32c3");
    assert_eq!(dev["version"], "1.0.0");
    assert_eq!(dev["otadata_state"], "valid");
    assert_eq!(dev["last_result"], "success");
    assert!(dev["last_seen"].as_i64().unwrap() > 0);
}

#[test]
fn a_target_token_opens_only_its_own_controller() {
    let (_t, srv, _) = setup();
    let addr = srv.info.addr;
    let rel = release_id(addr, 1);
    let a = admin(addr, "POST", "/api/v1/devices", Some(r#"{"id":"dev-a"}"#));
    let b = admin(addr, "POST", "/api/v1/devices", Some(r#"{"id":"dev-b"}"#));
    let ta = format!("TargetToken {}", a.json["token"].as_str().unwrap());
    let tb = format!("TargetToken {}", b.json["token"].as_str().unwrap());
    // a registered twice: conflict, no new token
    let again = admin(addr, "POST", "/api/v1/devices", Some(r#"{"id":"dev-a"}"#));
    assert_eq!(again.status, 409);
    assert!(again.json.get("token").is_none());

    assert_eq!(
        call(addr, "GET", "/DEFAULT/controller/v1/dev-a", Some(&ta), None).status,
        200
    );
    // a's token on b's resources
    assert_eq!(
        call(addr, "GET", "/DEFAULT/controller/v1/dev-b", Some(&ta), None).status,
        401
    );
    let r = call(addr, "GET", "/DEFAULT/controller/v1/dev-a", None, None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers.get("www-authenticate").map(|s| s.as_str()),
        Some("TargetToken")
    );
    assert_eq!(
        call(
            addr,
            "GET",
            "/DEFAULT/controller/v1/dev-a",
            Some("TargetToken wrong"),
            None
        )
        .status,
        401
    );
    // the admin token is not a device token, and a device token is not the admin token
    assert_eq!(
        call(
            addr,
            "GET",
            "/DEFAULT/controller/v1/dev-a",
            Some(&format!("Bearer {ADMIN}")),
            None
        )
        .status,
        401
    );
    assert_eq!(
        call(addr, "GET", "/api/v1/devices", Some(&ta), None).status,
        401
    );
    assert_eq!(call(addr, "GET", "/api/v1/devices", None, None).status, 401);
    // an unknown tenant
    assert_eq!(
        call(addr, "GET", "/OTHER/controller/v1/dev-a", Some(&ta), None).status,
        404
    );

    // b gets an action; a can neither read it nor report for it
    let body = json!({"name": "only-b", "release": rel, "groups": [100], "start": true,
                      "filter": {"attributes": {"role": "b"}}});
    let cfg = r#"{"mode":"merge","data":{"chip":"esp32c3","project":"fleetapp","role":"b"}}"#;
    assert_eq!(
        call(
            addr,
            "PUT",
            "/DEFAULT/controller/v1/dev-b/configData",
            Some(&tb),
            Some(cfg)
        )
        .status,
        200
    );
    let r = admin(addr, "POST", "/api/v1/rollouts", Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json["counts"]["total"], 1,
        "only dev-b matches: {}",
        r.text
    );
    let p = call(addr, "GET", "/DEFAULT/controller/v1/dev-b", Some(&tb), None);
    let href = fleet::strip(p.json["_links"]["deploymentBase"]["href"].as_str().unwrap());
    let aid = href
        .split('/')
        .nth(6)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let a_path = format!("/DEFAULT/controller/v1/dev-a/deploymentBase/{aid}");
    assert_eq!(call(addr, "GET", &a_path, Some(&ta), None).status, 404);
    let fb = format!(
        r#"{{"id":"{aid}","status":{{"execution":"closed","result":{{"finished":"failure"}}}}}}"#
    );
    assert_eq!(
        call(
            addr,
            "POST",
            &format!("{a_path}/feedback"),
            Some(&ta),
            Some(&fb)
        )
        .status,
        404
    );
    assert_eq!(
        call(
            addr,
            "POST",
            &format!("/DEFAULT/controller/v1/dev-b/deploymentBase/{aid}/feedback"),
            Some(&ta),
            Some(&fb)
        )
        .status,
        401
    );
    // still open for b
    assert_eq!(call(addr, "GET", &href, Some(&tb), None).status, 200);
}

#[test]
fn bad_requests_get_clear_4xx() {
    let (_t, srv, _) = setup();
    let addr = srv.info.addr;
    let gw = format!("GatewayToken {GATEWAY}");
    let base = "/DEFAULT/controller/v1/dev-x";
    // the gateway token registers on first poll
    let p = call(addr, "GET", base, Some(&gw), None);
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.json["config"]["polling"]["sleep"], "00:00:05");
    let r = call(
        addr,
        "PUT",
        &format!("{base}/configData"),
        Some(&gw),
        Some("{not json"),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json["message"].as_str().unwrap().contains("invalid JSON"),
        "{}",
        r.text
    );
    let r = call(
        addr,
        "PUT",
        &format!("{base}/configData"),
        Some(&gw),
        Some(r#"{"data":{"chip":[1]}}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.text.contains("data.chip"), "{}", r.text);
    let big = format!(r#"{{"data":{{"x":"{}"}}}}"#, "a".repeat(70 * 1024));
    let r = call(
        addr,
        "PUT",
        &format!("{base}/configData"),
        Some(&gw),
        Some(&big),
    );
    assert_eq!(r.status, 413, "{}", r.text);
    let fb = r#"{"id":"999","status":{"execution":"closed","result":{"finished":"success"}}}"#;
    let r = call(
        addr,
        "POST",
        &format!("{base}/deploymentBase/999/feedback"),
        Some(&gw),
        Some(fb),
    );
    assert_eq!(r.status, 404);
    assert!(r.text.contains("999"), "{}", r.text);
    let r = call(
        addr,
        "GET",
        &format!("{base}/deploymentBase/abc"),
        Some(&gw),
        None,
    );
    assert_eq!(r.status, 404);
    let r = call(addr, "DELETE", base, Some(&gw), None);
    assert_eq!(r.status, 405);
    let r = call(
        addr,
        "GET",
        "/DEFAULT/controller/v1/bad%2Fid",
        Some(&gw),
        None,
    );
    assert_eq!(r.status, 400);
    let r = admin(
        addr,
        "POST",
        "/api/v1/rollouts",
        Some(r#"{"name":"x","release":1,"groups":[50]}"#),
    );
    assert_eq!(r.status, 422);
    assert!(r.text.contains("groups"), "{}", r.text);
    let r = admin(
        addr,
        "POST",
        "/api/v1/rollouts",
        Some(r#"{"name":"x","release":12345}"#),
    );
    assert_eq!(r.status, 422);
    assert!(r.text.contains("12345"), "{}", r.text);
    let r = admin(addr, "POST", "/api/v1/rollouts/77/pause", None);
    assert_eq!(r.status, 404);
    // the files are still served as before
    let r = common::get(addr, "/fleetapp-2.0.0.bin", &[("Range", "bytes=0-15")]);
    assert_eq!(r.status, 206);
}

#[test]
fn the_admin_api_is_off_without_an_admin_token() {
    let t = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", t.path().join("f.db").display());
    let srv = common::serve_with(t.path(), |o| {
        o.fleet = Some(ota_server::fleet::FleetOptions::new(db));
    });
    let r = call(
        srv.info.addr,
        "GET",
        "/api/v1/devices",
        Some("Bearer anything"),
        None,
    );
    assert_eq!(r.status, 403);
    assert!(r.text.contains("--admin-token-file"), "{}", r.text);
    // and DDI without a gateway token knows no device
    let r = call(
        srv.info.addr,
        "GET",
        "/DEFAULT/controller/v1/d",
        Some("GatewayToken x"),
        None,
    );
    assert_eq!(r.status, 401);
}
