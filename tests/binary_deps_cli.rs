//! What the `ota` binary is built from: one HTTP server (`ota-server`, also behind `ota demo`),
//! not a second one for the demo.

use std::process::Command;

/// The packages the `ota` binary links (normal dependencies, no dev-dependencies).
fn binary_packages() -> Vec<String> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--manifest-path",
            manifest,
            "-p",
            "ota",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn ota_binary_has_one_http_server_and_the_demo_uses_it() {
    let pkgs = binary_packages();
    assert!(
        pkgs.iter().any(|p| p == "ota-server"),
        "ota serve's server: {pkgs:?}"
    );
    for other in ["tiny_http", "tiny-http"] {
        assert!(
            !pkgs.iter().any(|p| p == other),
            "the ota binary links a second HTTP server ({other})"
        );
    }
    // The demo still serves its app over HTTP (the example's download), now from ota-server.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .expect("ota demo runs");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("firmware served from http://127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains("List id: 1, OTA success"), "{log}");
}
