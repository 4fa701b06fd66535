//! SWUpdate's suricatta mode (Debian's `swupdate`), a hawkBit client nobody here wrote, against
//! our DDI server: it polls, downloads a signed `.swu` release, installs it and reports.
//! The `.swu` is made here as SWUpdate's documentation describes (sbabic/swupdate
//! `doc/source/signed_images.rst`, `doc/source/swupdate.rst`): `sw-description` signed with
//! `openssl cms`, then a `cpio -H crc` archive with sw-description first.

mod common;
mod fleet;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use fleet::{admin, fleet_server};
use serde_json::json;

/// A process group (`timeout`, swupdate and its forks), killed whole when dropped, so that no
/// suricatta outlives its part of the test, even when an assertion fails.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(dir: &Path, cmd: &str) {
    let o = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A signed `.swu` whose one image (`payload.bin`, raw handler) is written to `target`.
fn make_swu(dir: &Path, target: &Path, payload: &[u8]) {
    std::fs::write(dir.join("payload.bin"), payload).unwrap();
    let sha = common::sha256_hex(payload);
    let desc = format!(
        "software =\n{{\n\tversion = \"2.0.0\";\n\thardware-compatibility: [ \"1.0\" ];\n\
         \timages: (\n\t\t{{\n\t\t\tfilename = \"payload.bin\";\n\t\t\ttype = \"raw\";\n\
         \t\t\tdevice = \"{}\";\n\t\t\tsha256 = \"{sha}\";\n\t\t}}\n\t);\n}}\n",
        target.display()
    );
    std::fs::write(dir.join("sw-description"), desc).unwrap();
    run(
        dir,
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 \
         -subj /CN=ota-test -addext extendedKeyUsage=emailProtection 2>/dev/null",
    );
    run(
        dir,
        "openssl cms -sign -in sw-description -out sw-description.sig -signer cert.pem \
         -inkey key.pem -outform DER -nosmimecap -binary",
    );
    run(
        dir,
        "printf 'sw-description\\nsw-description.sig\\npayload.bin\\n' | cpio -o -H crc > update.swu 2>/dev/null",
    );
}

#[test]
fn swupdate_suricatta_completes_a_deployment() {
    for tool in ["swupdate", "cpio", "openssl"] {
        if !have(tool) {
            eprintln!("SKIP: {tool} not installed (Debian packages swupdate, cpio, openssl)");
            return;
        }
    }
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    let work = t.path().join("work");
    let tmp = t.path().join("tmp");
    for d in [&www, &work, &tmp] {
        std::fs::create_dir(d).unwrap();
    }
    let target = t.path().join("target.img");
    std::fs::write(&target, b"").unwrap();
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    make_swu(&work, &target, &payload);
    std::fs::copy(work.join("update.swu"), www.join("update.swu")).unwrap();

    let db = format!("sqlite:{}", t.path().join("fleet.db").display());
    let srv = fleet_server(&www, &db);
    let addr = srv.info.addr;
    let reg = admin(addr, "POST", "/api/v1/devices", Some(r#"{"id":"swu-dev"}"#));
    assert_eq!(reg.status, 201, "{}", reg.text);
    let token = reg.json["token"].as_str().unwrap().to_string();
    let r = admin(
        addr,
        "POST",
        "/api/v1/releases",
        Some(r#"{"path":"/update.swu","version":"2.0.0"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let rel = r.json["id"].as_i64().unwrap();
    let body = json!({"name": "swu", "release": rel, "groups": [100], "start": true});
    let r = admin(addr, "POST", "/api/v1/rollouts", Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.text);
    let rollout = r.json["id"].as_i64().unwrap();

    // suricatta is a daemon: it runs until killed, and reports success only after the
    // "reboot" (started again with `-c 2`, confirm success), as a device whose new software
    // came up. Each run is bounded by `timeout` and stopped once it has done its part.
    let suricatta = |extra: &str, log: &Path| {
        let args = format!(
            "-t DEFAULT -u http://{addr} -i swu-dev -k {token} -p 1 -r 1 -w 1 -s 10{extra}"
        );
        // Its own process group: swupdate forks helpers, and killing `timeout` alone left
        // them all running (a stale suricatta kept polling as the same device into the next
        // run and the next test).
        Command::new("timeout")
            .args(["90", "swupdate", "-v", "-H", "board:1.0", "-k"])
            .arg(work.join("cert.pem"))
            .args(["-m", "-M", "-u", &args])
            .env("TMPDIR", &tmp)
            .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map(Group)
            .unwrap()
    };
    let tail = |log: &Path| {
        let out = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let install_log = t.path().join("install.log");
    let child = suricatta("", &install_log);
    let installed = common::wait_for(80, || {
        std::fs::read_to_string(&install_log)
            .unwrap_or_default()
            .contains("Update successful")
    });
    drop(child);
    assert!(
        installed,
        "suricatta did not install:\n{}",
        tail(&install_log)
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        payload,
        "the raw handler wrote the payload"
    );
    let v = admin(addr, "GET", &format!("/api/v1/rollouts/{rollout}"), None).json;
    assert_eq!(
        v["counts"]["running"], 1,
        "not closed before the confirmation: {v}"
    );

    let confirm_log = t.path().join("confirm.log");
    let child = suricatta(" -c 2", &confirm_log);
    let mut state = serde_json::Value::Null;
    common::wait_for(80, || {
        state = admin(addr, "GET", &format!("/api/v1/rollouts/{rollout}"), None).json;
        state["state"] == "finished"
    });
    drop(child);
    assert_eq!(
        state["state"],
        "finished",
        "{state}\nswupdate log:\n{}",
        tail(&confirm_log)
    );
    assert_eq!(state["counts"]["success"], 1, "{state}");
    let d = admin(addr, "GET", "/api/v1/devices", None);
    assert_eq!(d.json["devices"][0]["last_result"], "success", "{}", d.text);
}
