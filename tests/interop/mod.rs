//! Shared parts of the interop suites, the CLI's (`tests/interop_*.rs`) and ota-core's
//! (`crates/ota-core/tests/interop_*.rs`, which include this file by path): the seed, the case
//! count, the Python with the oracles, and the batch oracle runner. Every comparison generates all its cases first, asks ONE Python process
//! (`tests/oracle/*.py`, the real esptool / esp-idf-defs from PyPI) about all of them, then
//! compares; it prints `interop <format>: N cases, seed 0x…, all equal`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

/// The seed used when `OTA_INTEROP_SEED` is not set: fixed, so CI runs are reproducible.
/// `OTA_INTEROP_SEED=random` draws a fresh one (printed, to replay a failure).
pub const DEFAULT_SEED: u64 = 0x07A5_E2D1_0C0F_FEE5;

/// The seed of this run for `format`, printed so a failure can be replayed with
/// `OTA_INTEROP_SEED=0x… cargo test [-p ota-core] --test interop_…`.
pub fn seed(format: &str) -> u64 {
    let s = match std::env::var("OTA_INTEROP_SEED") {
        Ok(v) if v == "random" => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        Ok(v) => {
            let t = v.trim();
            let parsed = match t.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => t.parse::<u64>(),
            };
            parsed.unwrap_or_else(|_| panic!("OTA_INTEROP_SEED={:?} is not a number", v))
        }
        Err(_) => DEFAULT_SEED,
    };
    eprintln!(
        "interop {}: seed {:#x} (replay with OTA_INTEROP_SEED={:#x})",
        format, s, s
    );
    s
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Number of cases: `default`, or `OTA_INTEROP_CASES` (to run more locally).
pub fn cases(default: usize) -> usize {
    std::env::var("OTA_INTEROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The workspace's root folder: the nearest folder at or above the crate's that holds
/// `tests/oracle` (the root crate's own folder, or two up from `crates/ota-core`).
pub fn workspace() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .find(|d| d.join("tests/oracle").is_dir())
        .unwrap_or(crate_dir)
        .to_path_buf()
}

/// The oracle scripts, shared by every interop suite: the workspace's `tests/oracle`.
pub fn oracle_script(name: &str) -> PathBuf {
    workspace().join("tests/oracle").join(name)
}

/// The Python with esptool and esp-idf-defs: $OTA_PYTHON, else the workspace's
/// `.venv/bin/python`; None after saying so (the test then skips).
pub fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("OTA_PYTHON").map(PathBuf::from),
        Some(workspace().join(".venv/bin/python")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.exists() {
            let ok = Command::new(&c)
                .args(["-c", "import esptool"])
                .output()
                .map(|o| o.status.success());
            if ok.unwrap_or(false) {
                return Some(c);
            }
        }
    }
    eprintln!("SKIP: no Python with esptool (run scripts/test.sh, or set OTA_PYTHON)");
    None
}

/// Run `python tests/oracle/<script>` once with `request` as JSON on stdin; its JSON answer.
pub fn ask(py: &Path, script: &str, request: &Value) -> Value {
    let mut child = Command::new(py)
        .arg(oracle_script(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the Python oracle");
    let body = serde_json::to_vec(request).unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&body).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "oracle {} failed ({:?}):\n{}",
        script,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "oracle {} printed no JSON ({}):\n{}",
            script,
            e,
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
