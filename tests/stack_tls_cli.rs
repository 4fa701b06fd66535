//! `ota device run --stack embassy` over `https://`: the embassy driver's TLS 1.3
//! (embedded-tls, ota-net's `tls`) against `ota serve --tls-self-signed` through the gateway,
//! the server certificate verified against the item's pinned CA (`cert`) and the URI's host.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use ota_server::{Background, ServeOptions, Tls};

struct Bench {
    dir: tempfile::TempDir,
}

impl Bench {
    /// A rollback ESP32-C3 running v1.0.0; `www/app.bin` = v2.0.0.
    fn new() -> Bench {
        let b = Bench {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(b.p("www")).unwrap();
        for (v, out) in [("v1.0.0", "old.bin"), ("v2.0.0", "www/app.bin")] {
            ok(&[
                "image",
                "make",
                "--chip",
                "esp32c3",
                "--project",
                "app",
                "--version",
                v,
                "--size",
                "120K",
                "-o",
                &b.s(out),
            ]);
        }
        ok(&[
            "device",
            "create",
            "--flash",
            &b.s("flash.bin"),
            "--chip",
            "esp32c3",
            "--app",
            &b.s("old.bin"),
            "--rollback",
        ]);
        // The first run of a new device writes otadata (its first boot), whatever the list
        // does: settle it with a run that fails (nothing listens on port 1), so that
        // snapshots taken afterwards see only what the https run changes.
        let settle = b.run("http://localhost:1/app.bin", None);
        assert_eq!(settle.status.code(), Some(1), "{}", text(&settle));
        b
    }

    fn p(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    fn s(&self, n: &str) -> String {
        self.p(n).to_str().unwrap().to_string()
    }

    /// Runs the device with one app item at `uri`, pinned to `cert` if given.
    fn run(&self, uri: &str, cert: Option<&Path>) -> std::process::Output {
        let cert = cert
            .map(|c| format!("cert = \"{}\"\n", c.display()))
            .unwrap_or_default();
        std::fs::write(
            self.p("ota.toml"),
            format!("[[upgrade]]\ntype = \"app\"\nuri = \"{uri}\"\n{cert}"),
        )
        .unwrap();
        let (flash, config) = (self.s("flash.bin"), self.s("ota.toml"));
        ota(&[
            "device", "run", "--flash", &flash, "--config", &config, "--stack", "embassy",
        ])
    }

    fn running(&self) -> String {
        ok(&["device", "boot", "--flash", &self.s("flash.bin")])
    }
}

/// `ota serve --tls-self-signed` on 127.0.0.1 (certificate for 127.0.0.1 and `localhost`,
/// issued by a CA kept in `tls_dir`).
fn serve_tls(www: &Path, tls_dir: &Path) -> Background {
    serve_tls_for(www, tls_dir, &[])
}

/// The same with more subjectAltNames (`--tls-san`).
fn serve_tls_for(www: &Path, tls_dir: &Path, sans: &[&str]) -> Background {
    let mut o = ServeOptions::dir(www);
    o.bind = "127.0.0.1:0".parse().unwrap();
    o.access_log = false;
    o.tls = Tls::SelfSigned {
        dir: tls_dir.to_path_buf(),
        sans: sans.iter().map(|n| n.to_string()).collect(),
    };
    Background::start(o).expect("ota serve --tls-self-signed starts")
}

#[test]
fn embassy_stack_fetches_https_from_ota_serve_with_the_pinned_ca() {
    let b = Bench::new();
    let srv = serve_tls(&b.p("www"), &b.p("tls"));
    let ca = srv.info.ca_pem.clone().expect("the CA devices pin");
    let port = srv.info.addr.port();
    let o = b.run(&format!("https://localhost:{port}/app.bin"), Some(&ca));
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(log.contains("OTA success"), "{log}");
    assert!(
        log.contains("the device connects to the gateway 10.0.2.2"),
        "{log}"
    );
    assert!(log.contains("connection(s) through the gateway"), "{log}");
    let after = log.rsplit("Restarting...").next().unwrap();
    assert!(after.contains("App version:      v2.0.0"), "{log}");
}

#[test]
fn embassy_stack_https_with_a_wrong_ca_fails_with_the_tls_reason_and_changes_nothing() {
    let b = Bench::new();
    let srv = serve_tls(&b.p("www"), &b.p("tls"));
    // Another server's CA: a real certificate, not the one that signed this server's.
    let other = serve_tls(&b.p("www"), &b.p("other-tls"));
    let wrong = other.info.ca_pem.clone().unwrap();
    let before = std::fs::read(b.p("flash.bin")).unwrap();
    let port = srv.info.addr.port();
    let o = b.run(&format!("https://localhost:{port}/app.bin"), Some(&wrong));
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("TLS failed"), "{log}");
    assert!(
        log.contains("the server certificate is not signed by the pinned CA"),
        "{log}"
    );
    assert!(
        std::fs::read(b.p("flash.bin")).unwrap() == before,
        "the flash changed"
    );
    assert!(b.running().contains("App version:      v1.0.0"));
}

#[test]
fn embassy_stack_https_without_a_pinned_ca_is_refused_before_connecting() {
    let b = Bench::new();
    let srv = serve_tls(&b.p("www"), &b.p("tls"));
    let before = std::fs::read(b.p("flash.bin")).unwrap();
    let port = srv.info.addr.port();
    let o = b.run(&format!("https://localhost:{port}/app.bin"), None);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("no pinned CA"), "{log}");
    assert!(log.contains("never fetched unverified"), "{log}");
    assert!(log.contains("0 connection(s) through the gateway"), "{log}");
    assert!(
        std::fs::read(b.p("flash.bin")).unwrap() == before,
        "the flash changed"
    );
}

#[test]
fn embassy_stack_https_to_an_ip_literal_is_refused_with_the_reason() {
    let b = Bench::new();
    let srv = serve_tls(&b.p("www"), &b.p("tls"));
    let ca = srv.info.ca_pem.clone().unwrap();
    let port = srv.info.addr.port();
    let o = b.run(&format!("https://127.0.0.1:{port}/app.bin"), Some(&ca));
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("names an IP address"), "{log}");
    assert!(b.running().contains("App version:      v1.0.0"));
}

#[test]
fn embassy_stack_https_with_an_unusable_pinned_ca_names_the_problem() {
    let b = Bench::new();
    let srv = serve_tls(&b.p("www"), &b.p("tls"));
    let ca = std::fs::read_to_string(srv.info.ca_pem.clone().unwrap()).unwrap();
    let two = b.p("two.pem");
    std::fs::write(&two, format!("{ca}{ca}")).unwrap();
    let port = srv.info.addr.port();
    let o = b.run(&format!("https://localhost:{port}/app.bin"), Some(&two));
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("pinned CA certificate unusable"), "{log}");
    assert!(log.contains("exactly one CA"), "{log}");
}

#[test]
fn embassy_stack_https_checks_the_certificate_names_the_host() {
    let b = Bench::new();
    let srv = serve_tls(&b.p("www"), &b.p("tls"));
    let ca = srv.info.ca_pem.clone().unwrap();
    let port = srv.info.addr.port();
    // `host.ota` reaches the same server (the gateway's DNS name), but its certificate names
    // 127.0.0.1 and localhost only.
    let o = b.run(&format!("https://host.ota:{port}/app.bin"), Some(&ca));
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("does not name the host"), "{log}");
    assert!(b.running().contains("App version:      v1.0.0"));
}

#[test]
fn embassy_stack_https_to_host_ota_works_when_the_certificate_names_it() {
    let b = Bench::new();
    let srv = serve_tls_for(&b.p("www"), &b.p("tls"), &["host.ota"]);
    let ca = srv.info.ca_pem.clone().unwrap();
    let port = srv.info.addr.port();
    let o = b.run(&format!("https://host.ota:{port}/app.bin"), Some(&ca));
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    let after = log.rsplit("Restarting...").next().unwrap();
    assert!(after.contains("App version:      v2.0.0"), "{log}");
}
