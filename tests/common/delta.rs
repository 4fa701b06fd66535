//! The delta tests' helpers: images to patch, a device's catalogue config, the version it boots, the bytes
//! `ota serve`'s access log says it sent.

use std::path::Path;

use super::{ok, s};

/// App `version` of project `app`, 120 KiB (`ota image make`).
pub fn make_image(out: &Path, version: &str) {
    make_image_with(out, version, &["--size", "120K"]);
}

/// App `version` of project `app` with more `ota image make` options (size, segments).
pub fn make_image_with(out: &Path, version: &str, options: &[&str]) {
    let mut args = vec!["image", "make", "--project", "app", "--version", version];
    args.extend_from_slice(options);
    args.extend(["-o", s(out)]);
    ok(&args);
}

/// An `ota.toml` with one catalogue app item for project `app` at `base/manifest.json`
/// (semver check), and `catalogue_key` when `key` is given.
pub fn config(path: &Path, base: &str, key: Option<&Path>) {
    let key_line = key.map_or(String::new(), |k| format!("catalogue_key = \"{}\"\n", s(k)));
    std::fs::write(
        path,
        format!(
            "{key_line}[[upgrade]]\ntype = \"app\"\nuri = \"{base}/manifest.json\"\n\
             project = \"app\"\nversion_check = \"semver\"\n"
        ),
    )
    .unwrap();
}

/// The version `ota device boot` says the device boots.
pub fn boot_version(flash: &Path) -> String {
    let o = ok(&["device", "boot", "--flash", s(flash), "--json"]);
    let start = o.find('{').unwrap();
    let v: serde_json::Value = serde_json::from_str(&o[start..o.rfind('}').unwrap() + 1]).unwrap();
    v["version"].as_str().unwrap_or_default().to_string()
}

/// Bytes the server sent for GETs of paths containing `part` (its access log).
pub fn served_bytes(log: &str, part: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("\"GET ") && l.contains(part))
        .filter_map(|l| l.split("\" ").nth(1))
        .filter_map(|rest| rest.split_whitespace().nth(2))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}
