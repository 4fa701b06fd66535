//! Smoke test of `ota-bench delta-update --quick`: one synthetic 64 KiB pair, no link shaping,
//! through the real `ota serve` and emulated device (the `ota` binary beside ota-bench, which
//! `cargo test --workspace` builds; alone: `cargo build -p ota` first). Checks that both
//! tables parse and that the patch run sent fewer bytes than the image run. No timing checks.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The rows of the markdown table whose header line starts with `header`.
fn table(out: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some(), "no table `{header}` in:\n{out}");
    lines
        .skip_while(|l| l.starts_with("|---"))
        .take_while(|l| l.starts_with("| "))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn num(cell: &str, out: &str) -> f64 {
    cell.trim_end_matches(['%', 'x', ' '])
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {cell:?} in:\n{out}"))
}

#[test]
fn delta_update_quick_patch_run_sends_fewer_bytes_than_the_image_run() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_ota-bench"));
    let ota = bench.with_file_name("ota");
    assert!(
        ota.is_file(),
        "no ota binary at {} (cargo test --workspace builds it; or `cargo build -p ota`)",
        ota.display()
    );
    let python = workspace().join(".venv/bin/python");
    let mut child = Command::new(&bench)
        .args(["delta-update", "--quick", "--runs", "1", "--ota"])
        .arg(&ota)
        .arg("--python")
        .arg(&python)
        .current_dir(workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ota-bench");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ota-bench delta-update --quick did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = t_out.join().unwrap();
    let err = t_err.join().unwrap();
    assert!(status.success(), "{status}\n{out}\n{err}");

    let rows = table(&out, "| pair | image B |");
    assert_eq!(rows.len(), 1, "{out}");
    let r = &rows[0];
    assert_eq!(r.len(), 9, "{r:?}");
    let (image, patch) = (num(&r[1], &out), num(&r[2], &out));
    let (air_image, air_patch) = (num(&r[3], &out), num(&r[4], &out));
    assert!(image >= 64.0 * 1024.0 * 0.9, "{out}");
    assert!(patch > 0.0 && patch < image, "{out}");
    // Each run downloads its whole file; the patch run nothing but the patch.
    assert!(air_image >= image, "{out}");
    assert!(air_patch >= patch, "{out}");
    assert!(air_patch < air_image, "{out}");
    let ratio = num(&r[5], &out);
    assert!(
        (ratio - air_patch * 100.0 / air_image).abs() < 0.01,
        "{out}"
    );
    for c in &r[6..] {
        num(c, &out);
    }

    let cmp = table(&out, "| pair | NEW B |");
    assert_eq!(cmp.len(), 1, "{out}");
    let c = &cmp[0];
    assert_eq!(c.len(), 9, "{c:?}");
    let ours = num(&c[2], &out);
    assert!(ours > 0.0 && ours < num(&c[1], &out), "{out}");
    // The served patch is ours behind the 64-byte esp_delta_ota header.
    assert_eq!(patch, ours + 64.0, "{out}");
    if python.is_file() && !out.contains("SKIP: detools") {
        let theirs = num(&c[3], &out);
        assert!(theirs > 0.0, "{out}");
        for cell in &c[4..] {
            num(cell, &out);
        }
    }
}
