//! Interop, ESP-ADF tone bins: every real bin in `../shared/vectors/tone` (made by
//! mk_audio_tone.py) goes through `ota tone unpack` then `ota tone pack` with the format,
//! version, time and date `ota tone info` reads from it, and must come back byte for byte.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn tone_unpack_then_pack_reproduces_every_real_tone_bin() {
    let Some(v) = vectors() else { return };
    let mut bins: Vec<_> = std::fs::read_dir(v.join("tone"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    bins.sort();
    assert!(
        bins.len() >= 6,
        "expected the 6 tone vectors, found {}",
        bins.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files = 0;
    for (i, bin) in bins.iter().enumerate() {
        let info: Value = serde_json::from_str(&ok(&["tone", "info", s(bin), "--json"])).unwrap();
        assert_ne!(info["crc_valid"], false, "{}", bin.display());
        let unpacked = dir.path().join(format!("u{}", i));
        ok(&["tone", "unpack", s(bin), s(&unpacked)]);
        let mut names: Vec<String> = std::fs::read_dir(&unpacked)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names.len() as u64,
            info["total"].as_u64().unwrap(),
            "{}",
            bin.display()
        );
        // NNN.ext in index order, so `tone pack` (sorted by name) keeps the order.
        for (k, n) in names.iter().enumerate() {
            assert!(
                n.starts_with(&format!("{:03}.", k)),
                "{}: {}",
                bin.display(),
                n
            );
        }
        files += names.len();
        let out = dir.path().join(format!("p{}.bin", i));
        let format = info["format"].as_u64().unwrap().to_string();
        let mut args = vec![
            "tone",
            "pack",
            s(&unpacked),
            "-o",
            s(&out),
            "--format",
            &format,
        ];
        let (ver, time, date);
        if info["format"] == 1 {
            ver = info["version"].as_str().unwrap().to_string();
            time = info["time"].as_str().unwrap().to_string();
            date = info["date"].as_str().unwrap().to_string();
            args.extend(["--version", &ver, "--time", &time, "--date", &date]);
        }
        ok(&args);
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(bin).unwrap(),
            "{}: unpack + pack does not reproduce the file",
            bin.display()
        );
    }
    eprintln!(
        "interop tone: {} real tone bins ({} files), unpack + pack reproduces each byte for byte",
        bins.len(),
        files
    );
}
