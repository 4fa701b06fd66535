//! What the server is built from: the catalogue's types come from `ota-catalogue`, and the
//! device-side service is no part of the server (not even for its tests).

use std::process::Command;

#[test]
fn server_does_not_depend_on_the_service_even_in_tests() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--manifest-path",
            manifest,
            "-p",
            "ota-server",
            "-e",
            "normal,dev",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&"ota-catalogue"),
        "the server's catalogue types come from ota-catalogue:\n{text}"
    );
    for banned in ["ota-service", "ota-emu"] {
        assert!(
            !names.contains(&banned),
            "ota-server depends on {banned}:\n{text}"
        );
    }
}
