//! Delta updates end to end through the real binary: `ota serve` makes patches from the older
//! versions in its folder to the newest and lists them in the catalogue; an emulated device
//! whose running image is a listed base downloads the patch instead of the image, and falls
//! back to the image when no patch matches or the patch is not the one the catalogue lists.

mod common;

use std::path::{Path, PathBuf};

use common::delta::*;
use common::served::Served;
use common::weed::wait;
use common::*;

/// A device (ESP32, the example table) running `run`, booted once.
fn device(dir: &Path, run: &Path) -> PathBuf {
    let flash = dir.join("flash.bin");
    ok(&["device", "create", "--flash", s(&flash), "--app", s(run)]);
    ok(&["device", "boot", "--flash", s(&flash)]);
    flash
}

/// `www/` with app v1.0.0 (also returned: the image a device runs) and v1.1.0.
fn www(dir: &Path) -> (PathBuf, PathBuf) {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let old = www.join("app-1.0.0.bin");
    make_image(&old, "v1.0.0");
    make_image(&www.join("app-1.1.0.bin"), "v1.1.0");
    (www, old)
}

/// The single patch file `ota serve` wrote.
fn patch_file(www: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(www.join(".ota-delta"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn run(flash: &Path, cfg: &Path, stack: &str) -> (bool, String) {
    let o = ota(&[
        "device",
        "run",
        "--flash",
        s(flash),
        "--config",
        s(cfg),
        "--stack",
        stack,
    ]);
    (o.status.success(), text(&o))
}

#[test]
fn delta_update_through_the_served_catalogue_downloads_the_patch_only() {
    for stack in ["std", "embassy"] {
        let dir = tempfile::tempdir().unwrap();
        let (www, old) = www(dir.path());
        let flash = device(dir.path(), &old);
        let srv = Served::start(&[s(&www)], &dir.path().join("serve.log"));
        let patch = patch_file(&www);
        let patch_len = std::fs::metadata(&patch).unwrap().len();
        let image_len = std::fs::metadata(www.join("app-1.1.0.bin")).unwrap().len();
        let cfg = dir.path().join("ota.toml");
        config(&cfg, &srv.base, None);
        let (okay, log) = run(&flash, &cfg, stack);
        assert!(okay, "{stack}: {log}");
        assert!(
            log.contains("esp_delta_ota: patch from v1.0.0"),
            "{stack}: {log}"
        );
        assert!(!log.contains("falling back"), "{stack}: {log}");
        assert_eq!(boot_version(&flash), "v1.1.0");
        let served = srv.log();
        assert_eq!(served_bytes(&served, ".patch"), patch_len, "{served}");
        assert_eq!(served_bytes(&served, "app-1.1.0.bin"), 0, "{served}");
        assert!(patch_len < image_len);
        // The running slot (ota_0) still holds the base, byte for byte.
        let f = std::fs::read(&flash).unwrap();
        let base = std::fs::read(&old).unwrap();
        assert!(f[0x10000..0x10000 + base.len()] == base[..]);
    }
}

#[test]
fn delta_update_falls_back_to_the_image_when_no_patch_has_the_running_base() {
    let dir = tempfile::tempdir().unwrap();
    let (www, _) = www(dir.path());
    let other = dir.path().join("run-0.9.bin");
    make_image(&other, "v0.9.0");
    let flash = device(dir.path(), &other);
    let srv = Served::start(&[s(&www)], &dir.path().join("serve.log"));
    let cfg = dir.path().join("ota.toml");
    config(&cfg, &srv.base, None);
    let (okay, log) = run(&flash, &cfg, "std");
    assert!(okay, "{log}");
    assert!(log.contains("as its base: full image"), "{log}");
    assert_eq!(boot_version(&flash), "v1.1.0");
    let served = srv.log();
    assert_eq!(served_bytes(&served, ".patch"), 0, "{served}");
    assert!(served_bytes(&served, "app-1.1.0.bin") > 0, "{served}");
}

#[test]
fn delta_update_falls_back_when_the_patch_is_not_the_one_the_catalogue_lists() {
    // Plain and signed catalogues: the patch file is replaced after the catalogue listed it
    // (same length, one byte changed): its SHA-256 differs, the result is refused before
    // otadata is switched and the full image is installed instead.
    for signed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (www, old) = www(dir.path());
        let flash = device(dir.path(), &old);
        let mut args = vec![s(&www).to_string()];
        let key = dir.path().join("k.pem");
        let public = dir.path().join("k.pub.pem");
        if signed {
            ok(&[
                "catalogue",
                "keygen",
                "--algorithm",
                "ed25519",
                "-o",
                s(&key),
            ]);
            ok(&["catalogue", "pubkey", s(&key), "-o", s(&public)]);
            args.extend(["--sign-key".to_string(), s(&key).to_string()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let srv = Served::start(&argv, &dir.path().join("serve.log"));
        let patch = patch_file(&www);
        let mut bytes = std::fs::read(&patch).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x5a;
        std::fs::write(&patch, &bytes).unwrap();
        let cfg = dir.path().join("ota.toml");
        config(&cfg, &srv.base, signed.then_some(public.as_path()));
        let (okay, log) = run(&flash, &cfg, "std");
        assert!(okay, "signed {signed}: {log}");
        assert!(log.contains("falling back to the full image"), "{log}");
        assert!(log.contains("SHA-256"), "{log}");
        assert_eq!(boot_version(&flash), "v1.1.0");
        let served = srv.log();
        assert!(served_bytes(&served, "app-1.1.0.bin") > 0, "{served}");
    }
}

/// The delta resume record in the flash file: (output bytes in the slot, patch byte to ask
/// for next), or None.
fn delta_checkpoint(flash: &Path) -> Option<(u32, u32)> {
    use ota_core::resume::{RecordKind, ResumeLog};
    let f = ota_emu::EmuFlash::open(flash).ok()?;
    let mut dev = ota_emu::Device::open(f).ok()?;
    let table = dev.table().clone();
    let slot = *table.ota(1)?;
    let log = ResumeLog::locate(&table, &slot)?;
    let rec = log.read(dev.flash_mut()).ok()??;
    let d = rec.delta?;
    let esp = match rec.header.kind {
        RecordKind::Delta { esp_header: true } => 64,
        _ => 0,
    };
    Some((rec.progress, esp + d.checkpoint.patch_offset()))
}

/// How many bytes `device run` programs and erases for this update (on a copy of the flash).
fn flash_bytes_of_run(flash: &Path, cfg: &Path) -> u64 {
    let copy = flash.with_extension("dry");
    std::fs::copy(flash, &copy).unwrap();
    let o = ota(&[
        "device",
        "run",
        "--flash",
        s(&copy),
        "--config",
        s(cfg),
        "--power-cut-after-bytes",
        "4000000000",
    ]);
    let t = text(&o);
    let n = t
        .split("programmed or erased ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count: {t}"));
    let _ = std::fs::remove_file(&copy);
    n
}

#[test]
fn delta_update_cut_by_a_power_loss_resumes_with_only_the_rest_of_the_patch() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let old = www.join("app-1.0.0.bin");
    let new = www.join("app-1.1.0.bin");
    make_image_with(&old, "v1.0.0", &["--size", "400K", "--segments", "4"]);
    make_image_with(&new, "v1.1.0", &["--size", "420K", "--segments", "6"]);
    let flash = device(dir.path(), &old);
    let srv = Served::start(&[s(&www)], &dir.path().join("serve.log"));
    let patch_len = std::fs::metadata(patch_file(&www)).unwrap().len();
    assert!(patch_len > 16_000, "{patch_len}");
    let cfg = dir.path().join("ota.toml");
    config(&cfg, &srv.base, None);
    let total = flash_bytes_of_run(&flash, &cfg);
    // Cut at about two thirds of the update's flash bytes: well past the first checkpoints.
    let at = (total * 2 / 3).to_string();
    let cut = ota(&[
        "device",
        "run",
        "--flash",
        s(&flash),
        "--config",
        s(&cfg),
        "--power-cut-after-bytes",
        &at,
    ]);
    assert_eq!(cut.status.code(), Some(3), "{}", text(&cut));
    assert_eq!(boot_version(&flash), "v1.0.0");
    let (output, resume_at) = delta_checkpoint(&flash).expect("a delta checkpoint after the cut");
    assert!(output > 0 && resume_at > 0 && (resume_at as u64) < patch_len);
    let before = srv.log().len();
    // The rerun on the chip's stack (embassy-net over the emulated link, 4-byte flash words).
    let (okay, log) = run(&flash, &cfg, "embassy");
    assert!(okay, "{log}");
    assert!(
        log.contains(&format!(
            "Resuming the delta update at patch byte {resume_at}"
        )),
        "{log}"
    );
    assert!(!log.contains("falling back"), "{log}");
    assert_eq!(boot_version(&flash), "v1.1.0");
    let served = srv.log()[before..].to_string();
    assert_eq!(
        served_bytes(&served, ".patch"),
        patch_len - resume_at as u64,
        "{served}"
    );
    assert!(served.contains(" 206 "), "{served}");
    assert_eq!(served_bytes(&served, "app-1.1.0.bin"), 0, "{served}");
    // The record is gone with the commit.
    assert_eq!(delta_checkpoint(&flash), None);
    println!(
        "delta resume: cut at {at} of {total} flash bytes; resumed at output byte {output}, \
         patch byte {resume_at}: the rerun fetched {} of {patch_len} patch bytes",
        patch_len - resume_at as u64
    );
}

/// The names of the `.ota-delta/` files, sorted.
fn delta_files(www: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(www.join(".ota-delta"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The patch files the served catalogue lists now.
fn listed(srv: &Served) -> Vec<String> {
    let (status, _, body) = get(srv.base.trim_start_matches("http://"), "/manifest.json", "");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut out: Vec<String> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["deltas"].as_array().cloned().unwrap_or_default())
        .map(|d| {
            let p = d["path"].as_str().unwrap();
            p.rsplit('/').next().unwrap().to_string()
        })
        .collect();
    out.sort();
    out
}

/// Superseded patches go once neither the catalogue nor the one before it lists them (a device
/// that fetched the previous one can still download its patch); files in `.ota-delta/` that the
/// server did not name are left alone; a patch from the server's last run counts as listed by
/// the catalogue before the first.
#[test]
fn superseded_patches_are_removed_one_catalogue_later() {
    let dir = tempfile::tempdir().unwrap();
    let (www, _) = www(dir.path());
    let cache = www.join(".ota-delta");
    std::fs::create_dir_all(&cache).unwrap();
    let stale = format!("{}.patch", "ab".repeat(32));
    std::fs::write(cache.join(&stale), b"from the last run").unwrap();
    std::fs::write(cache.join("notes.txt"), b"not ours").unwrap();
    let srv = Served::start(
        &[s(&www), "--rescan-ms", "100", "--delta-bases", "1"],
        &dir.path().join("serve.log"),
    );
    let first = listed(&srv);
    assert_eq!(first.len(), 1, "{first:?}");
    let files = delta_files(&www);
    assert!(
        files.contains(&stale) && files.contains(&first[0]),
        "{files:?}"
    );
    let next = |version: &str, previous: &[String]| -> Vec<String> {
        make_image(&www.join(format!("app-{version}.bin")), version);
        let mut now = Vec::new();
        assert!(
            wait(20, || {
                now = listed(&srv);
                now.len() == 1 && now[..] != *previous
            }),
            "no patch to {version}: {now:?}"
        );
        now
    };
    // v1.2.0: the patch to v1.1.0 stays (the previous catalogue lists it); the last run's goes.
    let second = next("v1.2.0", &first);
    let files = delta_files(&www);
    assert_eq!(
        files,
        sorted(&[&first[0], &second[0], "notes.txt"]),
        "{files:?}"
    );
    // v1.3.0: the patch to v1.1.0 goes now.
    let third = next("v1.3.0", &second);
    let files = delta_files(&www);
    assert_eq!(
        files,
        sorted(&[&second[0], &third[0], "notes.txt"]),
        "{files:?}"
    );
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A hand-made catalogue server: `manifest.json` is `catalogue`, every other path a file of
/// `www`; the paths asked for are recorded.
fn catalogue_server(
    www: &Path,
    catalogue: String,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let srv = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", srv.server_addr().to_ip().unwrap());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let www = www.to_path_buf();
    std::thread::spawn(move || {
        for rq in srv.incoming_requests() {
            let url = rq.url().to_string();
            seen.lock().unwrap().push(url.clone());
            let _ = if url == "/manifest.json" {
                rq.respond(tiny_http::Response::from_string(catalogue.clone()))
            } else {
                match std::fs::read(www.join(url.trim_start_matches('/'))) {
                    Ok(b) => rq.respond(tiny_http::Response::from_data(b)),
                    Err(_) => rq.respond(tiny_http::Response::empty(404)),
                }
            };
        }
    });
    (base, asked)
}

/// Of several patches from the running base, the device takes the smallest it can apply that
/// is smaller than the image: an lzma patch (its applier decodes heatshrink and none) and one
/// no smaller than the image are passed over, never downloaded; with only those, it says why
/// and installs the full image.
#[test]
fn delta_update_picks_a_patch_it_can_apply_and_that_saves_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (www, old) = www(dir.path());
    // ota serve makes the real patch and its listing.
    let srv = Served::start(&[s(&www)], &dir.path().join("serve.log"));
    let (status, _, body) = get(srv.base.trim_start_matches("http://"), "/manifest.json", "");
    assert_eq!(status, 200);
    drop(srv);
    let mut cat: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let idx = cat["entries"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["version"] == "v1.1.0")
        .unwrap();
    let e = cat["entries"][idx].clone();
    let real = e["deltas"][0].clone();
    let image_size = e["size"].as_u64().unwrap();
    let mut lzma = real.clone();
    lzma["path"] = "/lzma.patch".into();
    lzma["compression"] = "lzma".into();
    lzma["size"] = 10.into();
    let mut big = real.clone();
    big["path"] = "/big.patch".into();
    big["compression"] = "none".into();
    big["size"] = image_size.into();
    for (deltas, want_patch) in [
        (vec![lzma.clone(), big.clone(), real.clone()], true),
        (vec![lzma, big], false),
    ] {
        cat["entries"][idx]["deltas"] = deltas.into();
        let flash = device(dir.path(), &old);
        let (base, asked) = catalogue_server(&www, cat.to_string());
        let cfg = dir.path().join("ota.toml");
        config(&cfg, &base, None);
        let (okay, log) = run(&flash, &cfg, "std");
        assert!(okay, "{log}");
        assert_eq!(boot_version(&flash), "v1.1.0");
        let asked = asked.lock().unwrap().clone();
        assert!(
            !asked
                .iter()
                .any(|u| u == "/lzma.patch" || u == "/big.patch"),
            "{asked:?}"
        );
        if want_patch {
            assert!(log.contains("esp_delta_ota: patch from v1.0.0"), "{log}");
            assert!(asked.iter().any(|u| u.ends_with(".patch")), "{asked:?}");
            assert!(!asked.iter().any(|u| u == "/app-1.1.0.bin"), "{asked:?}");
        } else {
            assert!(
                log.contains(
                    "/lzma.patch uses `lzma` compression, which this device does not decode (only heatshrink, none)"
                ),
                "{log}"
            );
            assert!(
                log.contains(&format!(
                    "/big.patch is {image_size} bytes, not smaller than the image ({image_size} bytes): full image"
                )),
                "{log}"
            );
            assert!(asked.iter().any(|u| u == "/app-1.1.0.bin"), "{asked:?}");
        }
        std::fs::remove_file(&flash).unwrap();
    }
}

/// On a Secure Boot v2 device (key `a`), a patch between two images signed with `a` installs
/// the signed v2 (its signature sector comes out of the patch and is verified from the slot
/// before otadata is switched). A patch to an image signed with another key applies, fails that
/// check, falls back to the full image, which is refused too: the device keeps v1, otadata
/// unchanged.
#[test]
fn delta_update_on_a_secure_boot_device_needs_the_trusted_signature() {
    let Some(esp) = common::espsecure::Esp::find() else {
        eprintln!("SKIP: espsecure not found (.venv with esptool, or OTA_PYTHON)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, _) = esp.keygen(d, "a", "ecdsa256");
    let (b, _) = esp.keygen(d, "b", "ecdsa256");
    make_image(&d.join("v1.bin"), "v1.0.0");
    make_image(&d.join("v2.bin"), "v1.1.0");
    esp.sign(&a, &d.join("v1.bin"), &d.join("v1.s.bin"));
    for (key, trusted) in [(&a, true), (&b, false)] {
        let www = d.join(if trusted { "www-a" } else { "www-b" });
        std::fs::create_dir_all(&www).unwrap();
        std::fs::copy(d.join("v1.s.bin"), www.join("app-1.0.0.bin")).unwrap();
        esp.sign(key, &d.join("v2.bin"), &www.join("app-1.1.0.bin"));
        let flash = d.join("flash.bin");
        let _ = std::fs::remove_file(&flash);
        ok(&[
            "device",
            "create",
            "--flash",
            s(&flash),
            "--app",
            s(&d.join("v1.s.bin")),
            "--secure-boot-key",
            s(&a),
        ]);
        ok(&["device", "boot", "--flash", s(&flash)]);
        let before = std::fs::read(&flash).unwrap();
        let srv = Served::start(&[s(&www)], &d.join("serve.log"));
        let patch_len = std::fs::metadata(patch_file(&www)).unwrap().len();
        let cfg = d.join("ota.toml");
        config(&cfg, &srv.base, None);
        let (okay, log) = run(&flash, &cfg, "std");
        assert!(log.contains("esp_delta_ota: patch from v1.0.0"), "{log}");
        let served = srv.log();
        if trusted {
            assert!(okay, "{log}");
            assert!(!log.contains("falling back"), "{log}");
            assert_eq!(boot_version(&flash), "v1.1.0");
            assert_eq!(served_bytes(&served, ".patch"), patch_len, "{served}");
            assert_eq!(served_bytes(&served, "app-1.1.0.bin"), 0, "{served}");
        } else {
            assert!(!okay, "{log}");
            assert!(log.contains("falling back to the full image"), "{log}");
            assert!(log.to_lowercase().contains("signature"), "{log}");
            assert_eq!(boot_version(&flash), "v1.0.0");
            assert_not_switched(&flash, &before);
        }
    }
}
