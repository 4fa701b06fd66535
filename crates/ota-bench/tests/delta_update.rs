//! Smoke run of `ota-bench delta-update --quick`: one small generated pair updated through
//! `ota serve` with and without a patch; the table must show the patch run sending fewer bytes.
//! (No timing is asserted: the figures are the benchmark's to print.)

use std::path::PathBuf;
use std::process::Command;

/// The `ota` binary of this workspace's debug build (`cargo test --workspace` builds it with
/// the root package's tests).
fn ota() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let p = target.join("debug").join("ota");
    p.is_file().then_some(p)
}

#[test]
fn delta_update_quick_run_prints_a_table_where_the_patch_sends_fewer_bytes() {
    let Some(ota) = ota() else {
        println!("SKIP: target/debug/ota is not built (run the workspace's tests: cargo test --workspace)");
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_ota-bench"))
        .args(["delta-update", "--quick", "--ota"])
        .arg(&ota)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("64 KB generated"))
        .unwrap_or_else(|| panic!("no row: {text}"));
    // pair | image B patch B | full B full s | delta B delta s | ratios
    let cols: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cols.len(), 4, "{row}");
    let num = |c: &str, i: usize| -> f64 {
        c.split_whitespace()
            .nth(i)
            .and_then(|v| v.trim_end_matches('x').parse().ok())
            .unwrap_or_else(|| panic!("column {c:?} in {row}"))
    };
    let sizes = cols[0]
        .rsplit_once("new version")
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("{row}"));
    let (image, patch) = (num(sizes, 0), num(sizes, 1));
    let (full, delta) = (num(cols[1], 0), num(cols[2], 0));
    assert!(patch > 0.0 && patch < image, "{row}");
    assert!(full >= image, "the full run sent the image: {row}");
    assert!(
        delta >= patch && delta < full,
        "the delta run sent the patch: {row}"
    );
    println!("{text}");
}
