//! `ota serve --fleet` end to end with the `ota devices` and `ota rollout` commands.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::served::Served;
use common::{ok, ota, text};

fn serve(args: &[&str], log: &std::path::Path) -> Served {
    Served::start(args, log)
}

/// A poll, then (when it was accepted) the device's attributes; the poll's status.
fn poll(base: &str, id: &str, token: &str) -> u16 {
    let st = send(
        base,
        "GET",
        &format!("/DEFAULT/controller/v1/{id}"),
        token,
        "",
    );
    if st == 200 {
        let cfg =
            r#"{"mode":"merge","data":{"chip":"esp32c3","project":"fleetapp","version":"1.0.0"}}"#;
        assert_eq!(
            send(
                base,
                "PUT",
                &format!("/DEFAULT/controller/v1/{id}/configData"),
                token,
                cfg
            ),
            200
        );
    }
    st
}

fn send(base: &str, method: &str, path: &str, token: &str, body: &str) -> u16 {
    let hp = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(hp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {hp}\r\nAuthorization: GatewayToken {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut all = String::new();
    let _ = s.read_to_string(&mut all);
    all.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn serve_fleet_with_devices_and_rollout_commands() {
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    ok(&[
        "image",
        "make",
        "--chip",
        "esp32c3",
        "--project",
        "fleetapp",
        "--version",
        "2.0.0",
        "--size",
        "64K",
        "-o",
        &p(&www.join("fleetapp-2.0.0.bin")),
    ]);
    let admin = t.path().join("admin.token");
    let gw = t.path().join("gw.token");
    std::fs::write(&admin, "admin-token-cli-1\n").unwrap();
    std::fs::write(&gw, "gateway-token-cli-1\n").unwrap();
    let log = t.path().join("serve.log");
    let srv = serve(
        &[
            &p(&www),
            "--fleet",
            "--admin-token-file",
            &p(&admin),
            "--gateway-token-file",
            &p(&gw),
        ],
        &log,
    );
    assert!(
        t.path().join("fleet.db").exists(),
        "fleet.db beside the folder"
    );
    let conn = ["--server", &srv.base, "--admin-token-file", &p(&admin)];
    let with = |cmd: &[&str]| -> Vec<String> {
        cmd.iter()
            .chain(conn.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |cmd: &[&str]| {
        let a = with(cmd);
        ok(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>())
    };
    let out = run(&["devices", "register", "dev-1"]);
    assert!(out.contains("target token"), "{out}");
    for i in 0..3 {
        assert_eq!(
            poll(&srv.base, &format!("gw-{i}"), "gateway-token-cli-1"),
            200
        );
    }
    assert_eq!(poll(&srv.base, "gw-x", "wrong"), 401);
    let out = run(&["devices", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["devices"].as_array().unwrap().len(), 4, "{out}");
    let out = run(&["devices", "list"]);
    assert!(
        out.contains("LAST SEEN") && out.contains("gw-2") && out.contains("4 devices"),
        "{out}"
    );

    // dev-1 never said which chip it is: it is left out (3 devices, not 4).
    let out = run(&[
        "rollout",
        "create",
        "--name",
        "r1",
        "--release",
        "1",
        "--groups",
        "50,100",
    ]);
    assert!(
        out.contains("group 0 (to 50 %): scheduled 2 devices"),
        "{out}"
    );
    assert!(
        out.contains("group 1 (to 100 %): scheduled 1 devices"),
        "{out}"
    );
    let out = run(&["rollout", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["rollouts"][0]["state"], "ready", "{out}");
    let out = run(&["rollout", "start", "1"]);
    assert!(out.contains("running"), "{out}");
    let out = run(&["rollout", "pause", "1"]);
    assert!(out.contains("paused"), "{out}");
    let a = with(&["rollout", "pause", "1"]);
    let o = ota(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(
        text(&o).contains("409") && text(&o).contains("paused"),
        "{}",
        text(&o)
    );
    let out = run(&["rollout", "resume", "1"]);
    assert!(out.contains("running") || out.contains("finished"), "{out}");
    let out = run(&["rollout", "show", "1"]);
    assert!(out.contains("group 0") && out.contains("started"), "{out}");

    // A wrong admin token is refused, with the status named.
    std::fs::write(&admin, "not-the-token\n").unwrap();
    let a = with(&["devices", "list"]);
    let o = ota(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(text(&o).contains("401"), "{}", text(&o));
    // Tokens never reach the log.
    let logged = std::fs::read_to_string(&log).unwrap();
    for secret in ["admin-token-cli-1", "gateway-token-cli-1", "not-the-token"] {
        assert!(!logged.contains(secret), "{secret} in the log:\n{logged}");
    }
}

#[test]
fn serve_fleet_refuses_bad_databases_and_token_files_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let w = www.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--db", "mysql://x"], "unsupported URL"),
        (
            &["--db", "sqlite:/nonexistent/dir/f.db"],
            "unable to open database file",
        ),
        // the password is not repeated in the message
        (
            &["--db", "postgres://u:pw-secret@127.0.0.1:1/db"],
            "Connection refused",
        ),
        (
            &["--admin-token-file", "/nonexistent/admin.token"],
            "--admin-token-file",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["serve", w, "--fleet", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let o = ota(&args);
        assert!(!o.status.success(), "{args:?}");
        let out = text(&o);
        assert!(out.contains(want), "{args:?}: {out}");
        assert!(!out.contains("pw-secret"), "{out}");
    }
    let tok = t.path().join("a.token");
    std::fs::write(&tok, "t\n").unwrap();
    let o = ota(&[
        "rollout",
        "pause",
        "3",
        "--server",
        "https://x",
        "--admin-token-file",
        tok.to_str().unwrap(),
    ]);
    assert!(text(&o).contains("plain HTTP"), "{}", text(&o));
}
