//! The device's DDI item end to end through the CLI (`ota device run --ddi ...`), against
//! `hawkbit_mock` (liebherr-group/hawkbit-rs, a mock hawkBit DDI server: its expectations
//! match the exact JSON of configData and feedback, and the `Authorization` header), and a
//! hand-made server on 127.0.0.1 for answers no real server gives.

mod common;

use std::io::Read;
use std::path::PathBuf;

use common::*;
use hawkbit::ddi::{Execution, Finished, MaintenanceWindow, Type};
use hawkbit_mock::ddi::{
    ChunkProtocol, DeploymentBuilder, Server, ServerBuilder, TargetAuthorization,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

struct Dev {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Dev {
    /// A device running `app v1.0.0` (esp32) in ota_0, created with `flags`.
    fn new(flags: &[&str]) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let d = Dev {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        d.image("v1.bin", "app", "v1.0.0");
        let mut args = vec![
            "device",
            "create",
            "--flash",
            d.p("flash.bin"),
            "--app",
            d.p("v1.bin"),
        ];
        args.extend_from_slice(flags);
        ok(&args);
        // The first boot writes otadata (the bootloader's first selection): done here, so
        // that a run which changes nothing leaves the flash byte for byte as it was.
        ok(&["device", "boot", "--flash", d.p("flash.bin")]);
        d
    }

    fn p(&self, name: &str) -> &'static str {
        let s = self.dir.join(name).to_str().unwrap().to_string();
        Box::leak(s.into_boxed_str())
    }

    fn image(&self, file: &str, project: &str, version: &str) {
        ok(&[
            "image",
            "make",
            "--chip",
            "esp32",
            "--project",
            project,
            "--version",
            version,
            "--size",
            "30K",
            "-o",
            self.p(file),
        ]);
    }

    fn sha256(&self, file: &str) -> String {
        let b = std::fs::read(self.dir.join(file)).unwrap();
        hex(&Sha256::digest(&b))
    }

    fn size(&self, file: &str) -> u64 {
        std::fs::metadata(self.dir.join(file)).unwrap().len()
    }

    /// `device run --ddi URL --ddi-tenant DEFAULT --ddi-id ID` with a token file holding `token`.
    fn run(
        &self,
        url: &str,
        id: &str,
        token: Option<&str>,
        extra: &[&str],
    ) -> std::process::Output {
        let mut args = vec![
            "device",
            "run",
            "--flash",
            self.p("flash.bin"),
            "--ddi",
            url,
            "--ddi-tenant",
            "DEFAULT",
            "--ddi-id",
            id,
        ];
        if let Some(t) = token {
            std::fs::write(self.dir.join("token"), format!("{t}\n")).unwrap();
            args.extend_from_slice(&["--ddi-token-file", self.p("token")]);
        }
        args.extend_from_slice(extra);
        ota(&args)
    }

    fn boot(&self) -> Value {
        let o = ota(&["device", "boot", "--flash", self.p("flash.bin"), "--json"]);
        serde_json::from_str(&String::from_utf8_lossy(&o.stdout))
            .unwrap_or_else(|e| panic!("boot --json ({e}):\n{}", text(&o)))
    }

    fn flash(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("flash.bin")).unwrap()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn running(v: &Value) -> (String, String) {
    (
        v["slot"].as_str().unwrap_or("-").to_string(),
        v["version"].as_str().unwrap_or("-").to_string(),
    )
}

/// The attributes the device PUTs to configData.
fn attributes(version: &str, partition: &str, state: &str) -> Value {
    json!({"mode": "merge", "data": {
        "chip": "esp32", "project": "app", "version": version, "secure_version": "0",
        "partition": partition, "otadata_state": state}})
}

/// A deployment of `file` (with `sha256`) as action `id`.
fn deployment(
    d: &Dev,
    id: &str,
    file: &str,
    sha256: &str,
    update: Type,
) -> hawkbit_mock::ddi::Deployment {
    DeploymentBuilder::new(id, Type::Forced, update)
        .maintenance_window(MaintenanceWindow::Available)
        .chunk(
            ChunkProtocol::BOTH,
            "bApp",
            "v2.0.0",
            "app",
            vec![(d.dir.join(file), "md5-unused", "sha1-unused", sha256)],
        )
        .build()
}

fn base(server: &Server, id: &str) -> String {
    format!("{}/DEFAULT/controller/v1/{id}", server.base_url())
}

/// A full deployment on a device with bootloader rollback: configData, download, install,
/// `proceeding` twice, the restart; `closed`/`success` only on the run after the new app
/// confirmed itself.
fn full_deployment(stack: &[&str]) {
    let d = Dev::new(&["--rollback"]);
    d.image("v2.bin", "app", "v2.0.0");
    let server = ServerBuilder::default().build();
    let target = server.add_target("dev1");
    target.request_config(attributes("v1.0.0", "ota_0", "valid"));
    target.push_deployment(deployment(
        &d,
        "10",
        "v2.bin",
        &d.sha256("v2.bin"),
        Type::Forced,
    ));
    let size = d.size("v2.bin");
    let started = target.expect_deployment_feedback(
        "10",
        Execution::Proceeding,
        Finished::None,
        Some(json!({"cnt": 1, "of": 3})),
        vec![&format!("downloading v2.bin ({size} bytes)")],
    );
    let installed = target.expect_deployment_feedback(
        "10",
        Execution::Proceeding,
        Finished::None,
        Some(json!({"cnt": 2, "of": 3})),
        vec!["installed v2.bin version v2.0.0 in ota_1; restarting to confirm"],
    );
    let closed = target.expect_deployment_feedback(
        "10",
        Execution::Closed,
        Finished::Success,
        None,
        vec!["ota_1 runs v2.bin version v2.0.0, confirmed (valid)"],
    );
    let o = d.run(&server.base_url(), "dev1", Some("Keydev1"), stack);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert_eq!(target.poll_hits(), 1, "{log}");
    assert_eq!(target.config_data_hits(), 1, "{log}");
    assert_eq!(target.deployment_hits(), 1, "{log}");
    assert_eq!(started.calls(), 1, "{log}");
    assert_eq!(installed.calls(), 1, "{log}");
    assert_eq!(
        closed.calls(),
        0,
        "success before the new app confirmed itself:\n{log}"
    );
    assert!(log.contains("Restarting..."), "{log}");
    assert!(!log.contains("Keydev1"), "the token is in the log:\n{log}");
    // Confirmed, the next poll finds the action open and closes it with success.
    ok(&["device", "confirm", "--flash", d.p("flash.bin")]);
    target.request_config(attributes("v2.0.0", "ota_1", "valid"));
    let o = d.run(&server.base_url(), "dev1", Some("Keydev1"), stack);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert_eq!(closed.calls(), 1, "{log}");
    assert_eq!(installed.calls(), 1, "installed again:\n{log}");
    assert_eq!(target.config_data_hits(), 1, "{log}");
    assert!(!log.contains("Restarting..."), "{log}");
    assert_eq!(running(&d.boot()), ("ota_1".into(), "v2.0.0".into()));
}

#[test]
fn ddi_deployment_installs_and_reports_success_once_the_new_app_confirmed() {
    full_deployment(&[]);
}

#[test]
fn ddi_deployment_over_the_embassy_stack() {
    full_deployment(&["--stack", "embassy"]);
}

#[test]
fn ddi_rolled_back_app_reports_failure() {
    let d = Dev::new(&["--rollback"]);
    d.image("v2.bin", "app", "v2.0.0");
    let server = ServerBuilder::default().build();
    let target = server.add_target("dev1");
    target.push_deployment(deployment(
        &d,
        "7",
        "v2.bin",
        &d.sha256("v2.bin"),
        Type::Attempt,
    ));
    let o = d.run(&server.base_url(), "dev1", Some("Keydev1"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The new app gives up on itself: the bootloader boots ota_0 again.
    ok(&["device", "rollback", "--flash", d.p("flash.bin")]);
    let detail = format!(
        "{}: v2.bin in ota_1 was rolled back (otadata state invalid); ota_0 runs",
        base(&server, "dev1")
    );
    let failed = target.expect_deployment_feedback(
        "7",
        Execution::Closed,
        Finished::Failure,
        None,
        vec![&detail],
    );
    let o = d.run(&server.base_url(), "dev1", Some("Keydev1"), &[]);
    let log = text(&o);
    assert_ne!(o.status.code(), Some(0), "{log}");
    assert_eq!(failed.calls(), 1, "{log}");
    assert!(log.contains("was rolled back"), "{log}");
    assert_eq!(running(&d.boot()), ("ota_0".into(), "v1.0.0".into()));
}

#[test]
fn ddi_bad_artifact_hash_leaves_the_device_unchanged_and_reports_failure() {
    let d = Dev::new(&[]);
    d.image("v2.bin", "app", "v2.0.0");
    let server = ServerBuilder::default().build();
    let target = server.add_target("dev1");
    let wrong = "ab".repeat(32);
    target.push_deployment(deployment(&d, "3", "v2.bin", &wrong, Type::Forced));
    let url = format!("{}/download/v2.bin", server.base_url());
    let detail = format!(
        "{url}: does not match action 3 of {}: SHA-256 of the download is {}, the deployment says {wrong}; otadata was not switched",
        base(&server, "dev1"),
        d.sha256("v2.bin")
    );
    let failed = target.expect_deployment_feedback(
        "3",
        Execution::Closed,
        Finished::Failure,
        None,
        vec![&detail],
    );
    let otadata_before = d.flash()[0xD000..0xF000].to_vec();
    let o = d.run(&server.base_url(), "dev1", Some("Keydev1"), &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("SHA-256 of the download is"), "{log}");
    assert_eq!(failed.calls(), 1, "{log}");
    assert!(!log.contains("Restarting..."), "{log}");
    assert_eq!(
        d.flash()[0xD000..0xF000],
        otadata_before[..],
        "otadata changed"
    );
    assert_eq!(running(&d.boot()), ("ota_0".into(), "v1.0.0".into()));
}

#[test]
fn ddi_update_skip_installs_nothing_and_sends_no_feedback() {
    let d = Dev::new(&[]);
    d.image("v2.bin", "app", "v2.0.0");
    let server = ServerBuilder::default().build();
    let target = server.add_target("dev1");
    target.push_deployment(deployment(
        &d,
        "5",
        "v2.bin",
        &d.sha256("v2.bin"),
        Type::Skip,
    ));
    let before = d.flash();
    let o = d.run(&server.base_url(), "dev1", Some("Keydev1"), &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert_eq!(target.deployment_hits(), 1, "{log}");
    assert!(log.contains("action 5 says skip: not installed"), "{log}");
    assert!(!log.contains("feedback"), "{log}");
    assert!(d.flash() == before, "the flash changed");
}

#[test]
fn ddi_no_deployment_polls_and_honours_the_polling_sleep_up_to_the_bound() {
    let d = Dev::new(&[]);
    let server = ServerBuilder::default().build();
    let target = server.add_target("dev1");
    let before = d.flash();
    let o = d.run(&server.base_url(), "dev1", Some("Keydev1"), &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert_eq!(target.poll_hits(), 1, "{log}");
    assert!(log.contains("no deployment for this device"), "{log}");
    // Three polls: the server says 00:01:00, the bound (300 ms) wins.
    let t = std::time::Instant::now();
    let o = d.run(
        &server.base_url(),
        "dev1",
        Some("Keydev1"),
        &["--ddi-polls", "3", "--ddi-max-sleep-ms", "300"],
    );
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert_eq!(target.poll_hits(), 4, "{log}");
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(600),
        "{log}"
    );
    assert!(log.contains("next poll in 300 ms (poll 1 of 3)"), "{log}");
    assert!(d.flash() == before);
}

#[test]
fn ddi_sends_the_target_or_gateway_token_and_a_wrong_one_is_refused() {
    let d = Dev::new(&[]);
    let server = ServerBuilder::default().build();
    let target = server.add_target("dev1");
    let o = d.run(&server.base_url(), "dev1", Some("wrong-token"), &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "{}: server answered HTTP 404",
            base(&server, "dev1")
        )),
        "{log}"
    );
    assert!(
        !log.contains("wrong-token"),
        "the token is in the log:\n{log}"
    );
    assert_eq!(target.poll_hits(), 0);
    let o = d.run(&server.base_url(), "dev1", Some("Keydev1"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(target.poll_hits(), 1);

    let gw = ServerBuilder::default()
        .target_authorization(TargetAuthorization::GatewayToken)
        .build();
    let t2 = gw.add_target("dev2");
    std::fs::write(d.dir.join("gw"), "KeyDEFAULT").unwrap();
    let o = d.run(
        &gw.base_url(),
        "dev2",
        None,
        &["--ddi-gateway-token-file", d.p("gw")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(t2.poll_hits(), 1);
}

#[test]
fn ddi_refuses_an_artifact_of_another_project() {
    let d = Dev::new(&[]);
    d.image("other.bin", "other", "v9.0.0");
    let server = ServerBuilder::default().build();
    let target = server.add_target("dev1");
    target.push_deployment(deployment(
        &d,
        "4",
        "other.bin",
        &d.sha256("other.bin"),
        Type::Forced,
    ));
    let o = d.run(&server.base_url(), "dev1", Some("Keydev1"), &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("the artifact is project `other`, this device runs `app`: refused"),
        "{log}"
    );
    assert_eq!(running(&d.boot()), ("ota_0".into(), "v1.0.0".into()));
}

/// A DDI server that answers every request with `reply(path)`.
struct Hostile {
    url: String,
    _t: std::thread::JoinHandle<()>,
}

fn hostile(reply: impl Fn(&str, &str) -> (u16, Vec<u8>) + Send + 'static) -> Hostile {
    let srv = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", srv.server_addr().to_ip().unwrap());
    let t = std::thread::spawn(move || {
        for mut rq in srv.incoming_requests() {
            let mut body = String::new();
            let _ = rq.as_reader().take(1 << 20).read_to_string(&mut body);
            let (status, bytes) = reply(rq.url(), &body);
            let _ = rq.respond(tiny_http::Response::from_data(bytes).with_status_code(status));
        }
    });
    Hostile { url, _t: t }
}

#[test]
fn ddi_hostile_answers_are_clear_errors_and_leave_the_device_as_it_was() {
    let d = Dev::new(&[]);
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deploy_link = |url: &str| {
        format!(
            r#"{{"_links":{{"deploymentBase":{{"href":"{url}/DEFAULT/controller/v1/d/deploymentBase/1"}}}}}}"#
        )
    };
    let cases: Vec<(&str, String, String)> = vec![
        ("not json", "hello".into(), "is not DDI JSON".into()),
        ("oversized", big, "larger than 65536 bytes".into()),
        ("nested", nested, "is not DDI JSON".into()),
        (
            "bad sleep",
            r#"{"config":{"polling":{"sleep":"99:99:99"}}}"#.into(),
            "expected HH:MM:SS".into(),
        ),
        (
            "foreign link",
            deploy_link("http://10.9.9.9:1"),
            "is not on the server's origin".into(),
        ),
        (
            "href not a string",
            r#"{"_links":{"deploymentBase":{"href":5}}}"#.into(),
            "is not DDI JSON".into(),
        ),
    ];
    for (name, body, needle) in cases {
        let h = hostile(move |_, _| (200, body.clone().into_bytes()));
        let before = d.flash();
        let o = d.run(&h.url, "d", None, &[]);
        let log = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {log}");
        assert!(log.contains(&needle), "{name}: `{needle}` not in\n{log}");
        assert!(!log.contains("panicked"), "{name}: {log}");
        assert!(d.flash() == before, "{name}: the flash changed");
    }
    // deploymentBase documents that cannot be installed.
    let deployments: Vec<(&str, String, &str)> = vec![
        ("no app image", r#"{"id":"1","deployment":{"chunks":[{"part":"os","version":"1","artifacts":[{"filename":"a.swu","size":3,"hashes":{"sha256":"00"}}]}]}}"#.into(), "has no app image (an artifact named *.bin) among its 1 artifacts [a.swu]"),
        ("bad hash", r#"{"id":"1","deployment":{"chunks":[{"artifacts":[{"filename":"a.bin","size":3,"hashes":{"sha256":"zz"}}]}]}}"#.into(), "has no valid hashes.sha256 (`zz`)"),
        ("huge size", format!(r#"{{"id":"1","deployment":{{"chunks":[{{"artifacts":[{{"filename":"a.bin","size":{},"hashes":{{"sha256":"{}"}}}}]}}]}}}}"#, u64::MAX, "00".repeat(32)), "larger than any flash"),
        ("bad handling", r#"{"id":"1","deployment":{"update":"now","chunks":[]}}"#.into(), "deployment.update is `now`, expected skip, attempt or forced"),
        ("bad id", r#"{"id":"../x","deployment":{"chunks":[]}}"#.into(), "action id `../x`"),
        ("no link", format!(r#"{{"id":1,"deployment":{{"chunks":[{{"artifacts":[{{"filename":"a.bin","size":3,"hashes":{{"sha256":"{}"}}}}]}}]}}}}"#, "00".repeat(32)), "has no download-http or download link"),
    ];
    for (name, doc, needle) in deployments {
        let feedback = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = feedback.clone();
        let h = {
            let port_url = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let pu = port_url.clone();
            let h = hostile(move |path, body| {
                if path.ends_with("/feedback") {
                    seen.lock().unwrap().push(body.to_string());
                    (200, Vec::new())
                } else if path.contains("/deploymentBase/") {
                    (200, doc.clone().into_bytes())
                } else {
                    (200, deploy_link(&pu.lock().unwrap()).into_bytes())
                }
            });
            *port_url.lock().unwrap() = h.url.clone();
            h
        };
        let before = d.flash();
        let o = d.run(&h.url, "d", None, &[]);
        let log = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {log}");
        assert!(log.contains(needle), "{name}: `{needle}` not in\n{log}");
        assert!(d.flash() == before, "{name}: the flash changed");
        let fb = feedback.lock().unwrap();
        if name != "bad id" {
            // An action the device cannot carry out is closed with failure and the reason.
            let last: Value = serde_json::from_str(fb.last().expect("a feedback")).unwrap();
            assert_eq!(last["status"]["execution"], "closed", "{name}");
            assert_eq!(last["status"]["result"]["finished"], "failure", "{name}");
            assert!(
                last["status"]["details"][0]
                    .as_str()
                    .unwrap()
                    .contains(needle),
                "{name}: {last}"
            );
        }
    }
}

#[test]
fn ddi_token_goes_to_the_server_only_not_to_a_download_host_elsewhere() {
    let d = Dev::new(&[]);
    d.image("v2.bin", "app", "v2.0.0");
    let image = std::fs::read(d.dir.join("v2.bin")).unwrap();
    let (sha, size) = (d.sha256("v2.bin"), image.len());
    // The artifact's host records the Authorization headers it gets.
    let cdn_auth = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let cdn = tiny_http::Server::http("127.0.0.1:0").unwrap();
    // Another origin: the same address under another name.
    let cdn_url = format!(
        "http://localhost:{}",
        cdn.server_addr().to_ip().unwrap().port()
    );
    let seen = cdn_auth.clone();
    std::thread::spawn(move || {
        for rq in cdn.incoming_requests() {
            let auth = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.to_string());
            seen.lock().unwrap().push(auth);
            let _ = rq.respond(tiny_http::Response::from_data(image.clone()));
        }
    });
    let ddi_auth = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let seen = ddi_auth.clone();
    let srv = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", srv.server_addr().to_ip().unwrap());
    let base_url = url.clone();
    std::thread::spawn(move || {
        for rq in srv.incoming_requests() {
            let auth = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.to_string());
            seen.lock().unwrap().push(auth);
            let body = if rq.url().ends_with("/feedback") {
                String::new()
            } else if rq.url().contains("/deploymentBase/") {
                format!(
                    r#"{{"id":"9","deployment":{{"download":"forced","update":"forced","chunks":[{{"part":"bApp","version":"v2.0.0","artifacts":[{{"filename":"v2.bin","size":{size},"hashes":{{"sha256":"{sha}"}},"_links":{{"download-http":{{"href":"{cdn_url}/v2.bin"}}}}}}]}}]}}}}"#
                )
            } else {
                format!(
                    r#"{{"config":{{"polling":{{"sleep":"00:00:30"}}}},"_links":{{"deploymentBase":{{"href":"{base_url}/DEFAULT/controller/v1/d/deploymentBase/9?c=1"}}}}}}"#
                )
            };
            let _ = rq.respond(tiny_http::Response::from_string(body));
        }
    });
    let o = d.run(&url, "d", Some("s3cret"), &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(!log.contains("s3cret"), "the token is in the log:\n{log}");
    let ddi = ddi_auth.lock().unwrap();
    assert!(
        ddi.len() >= 4,
        "poll, deploymentBase, two feedbacks: {ddi:?}"
    );
    assert!(
        ddi.iter()
            .all(|a| a.as_deref() == Some("TargetToken s3cret")),
        "{ddi:?}"
    );
    let cdn = cdn_auth.lock().unwrap();
    assert!(
        !cdn.is_empty() && cdn.iter().all(Option::is_none),
        "{cdn:?}"
    );
    assert_eq!(running(&d.boot()), ("ota_1".into(), "v2.0.0".into()));
}

/// A `cancelAction` from the server is fetched and confirmed (`closed`/`success`, the feedback
/// hawkBit expects of a target with nothing in progress); the flash is untouched.
#[test]
fn ddi_cancel_action_is_confirmed_and_leaves_the_device_as_it_was() {
    let d = Dev::new(&[]);
    let server = ServerBuilder::default().build();
    let target = server.add_target("dev1");
    target.cancel_action("5");
    let confirmed = target.expect_cancel_feedback(
        "5",
        Execution::Closed,
        Finished::Success,
        vec!["canceled: no update of action 5 in progress"],
    );
    let before = d.flash();
    let o = d.run(&server.base_url(), "dev1", Some("Keydev1"), &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert_eq!(target.cancel_action_hits(), 1, "{log}");
    assert_eq!(confirmed.calls(), 1, "{log}");
    assert!(log.contains("the server cancels action 5"), "{log}");
    assert!(d.flash() == before, "the flash changed");
}

/// A hostile cancelAction (a link to another origin, an id that needs escaping, not JSON) is a
/// warning: the cancel is not answered, the token goes nowhere else, the run still succeeds.
#[test]
fn ddi_hostile_cancel_action_is_a_warning_only() {
    let d = Dev::new(&[]);
    for (href, doc, want) in [
        (
            "http://localhost:9/DEFAULT/controller/v1/d/cancelAction/1",
            r#"{"id":"1"}"#,
            "is not on the server's origin",
        ),
        (
            "BASE/DEFAULT/controller/v1/d/cancelAction/1",
            r#"{"id":"../../x","cancelAction":{"stopId":"1"}}"#,
            "cancel id `../../x`",
        ),
        (
            "BASE/DEFAULT/controller/v1/d/cancelAction/1",
            "<html>",
            "the cancelAction is not DDI JSON",
        ),
    ] {
        let srv = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}", srv.server_addr().to_ip().unwrap());
        let base_doc = format!(
            r#"{{"_links":{{"cancelAction":{{"href":"{}"}}}}}}"#,
            href.replace("BASE", &url)
        );
        let feedbacks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = feedbacks.clone();
        let doc = doc.to_string();
        std::thread::spawn(move || {
            for rq in srv.incoming_requests() {
                let body = if rq.url().ends_with("/feedback") {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    String::new()
                } else if rq.url().contains("/cancelAction/") {
                    doc.clone()
                } else {
                    base_doc.clone()
                };
                let _ = rq.respond(tiny_http::Response::from_string(body));
            }
        });
        let before = d.flash();
        let o = d.run(&url, "d", Some("s3cret"), &[]);
        let log = text(&o);
        assert_eq!(o.status.code(), Some(0), "{log}");
        assert!(log.contains("the cancel request not answered"), "{log}");
        assert!(log.contains(want), "{want}:\n{log}");
        assert_eq!(
            feedbacks.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{log}"
        );
        assert!(d.flash() == before, "the flash changed");
    }
}

/// `ota serve --fleet` end to end: a device installs the rollout's release and waits for its
/// new app to confirm itself; the operator stops the rollout; the device's next poll gets the
/// cancel and confirms it, and the server counts the action canceled (not left `canceling`).
#[test]
fn ddi_rollout_stopped_while_the_device_waits_is_canceled_on_the_fleet_server() {
    let d = Dev::new(&["--rollback"]);
    let www = d.dir.join("www");
    std::fs::create_dir(&www).unwrap();
    d.image("www/app-v2.0.0.bin", "app", "v2.0.0");
    std::fs::write(d.dir.join("admin.token"), "admin-token-cancel\n").unwrap();
    std::fs::write(d.dir.join("gw.token"), "gateway-token-cancel\n").unwrap();
    let srv = common::served::Served::start(
        &[
            d.p("www"),
            "--fleet",
            "--admin-token-file",
            d.p("admin.token"),
            "--gateway-token-file",
            d.p("gw.token"),
        ],
        &d.dir.join("serve.log"),
    );
    let admin = |cmd: &[&str]| {
        let mut a = cmd.to_vec();
        a.extend_from_slice(&[
            "--server",
            &srv.base,
            "--admin-token-file",
            d.p("admin.token"),
        ]);
        ok(&a)
    };
    let run = || {
        let o = ota(&[
            "device",
            "run",
            "--flash",
            d.p("flash.bin"),
            "--ddi",
            &srv.base,
            "--ddi-tenant",
            "DEFAULT",
            "--ddi-id",
            "dev1",
            "--ddi-gateway-token-file",
            d.p("gw.token"),
        ]);
        let log = text(&o);
        assert_eq!(o.status.code(), Some(0), "{log}");
        log
    };
    // The first poll: the server learns the device's chip, project and version.
    let log = run();
    assert!(log.contains("no deployment for this device"), "{log}");
    admin(&[
        "rollout",
        "create",
        "--name",
        "r1",
        "--release",
        "1",
        "--groups",
        "100",
        "--start",
    ]);
    let log = run();
    assert!(log.contains("Restarting..."), "{log}");
    let show = || -> Value {
        let out = admin(&["rollout", "show", "1", "--json"]);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    assert_eq!(show()["counts"]["running"], 1, "{}", show());
    admin(&["rollout", "stop", "1"]);
    assert_eq!(show()["counts"]["canceling"], 1, "{}", show());
    let log = run();
    assert!(log.contains("the server cancels action"), "{log}");
    let v = show();
    assert_eq!(v["counts"]["canceled"], 1, "{v}");
    assert_eq!(v["counts"]["canceling"], 0, "{v}");
    assert_eq!(v["state"], "stopped", "{v}");
}
