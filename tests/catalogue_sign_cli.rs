//! The authenticated catalogue end to end, through the real binary: `ota serve --sign-key` on
//! 127.0.0.1 (ephemeral port), a tampering HTTP proxy in front of it, and emulated devices with
//! `catalogue_key` / `--catalogue-key`. Keys come from openssl (when it is installed) and from
//! `ota catalogue keygen`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::served::Served;
use common::*;

/// A device: ESP32, the example table, `app v1.0.0` in ota_0 and a format-0 tone bin in
/// flash_tone, booted once. Also writes `snd/` (the sounds of the tone bins).
fn device(dir: &Path) -> PathBuf {
    let run = dir.join("run.bin");
    make_image(&run, "app", "v1.0.0", "60K");
    let snd = dir.join("snd");
    std::fs::create_dir_all(&snd).unwrap();
    for i in 0..3u8 {
        std::fs::write(
            snd.join(format!("{i}_beep.mp3")),
            vec![i + 1; 1000 + 77 * i as usize],
        )
        .unwrap();
    }
    let old = dir.join("old_tone.bin");
    ok(&["tone", "pack", s(&snd), "-o", s(&old), "--format", "0"]);
    let flash = dir.join("flash.bin");
    let data = format!("flash_tone={}", s(&old));
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--app",
        s(&run),
        "--data",
        &data,
    ]);
    ok(&["device", "boot", "--flash", s(&flash)]);
    flash
}

fn make_image(out: &Path, project: &str, version: &str, size: &str) {
    ok(&[
        "image",
        "make",
        "--project",
        project,
        "--version",
        version,
        "--size",
        size,
        "-o",
        s(out),
    ]);
}

/// A format-1 tone bin of `snd` with `version`.
fn make_tone(dir: &Path, out: &Path, version: &str) {
    ok(&[
        "tone",
        "pack",
        s(&dir.join("snd")),
        "-o",
        s(out),
        "--format",
        "1",
        "--version",
        version,
    ]);
}

/// The served folder: `app.bin` (app v2.0.0) and `tone.bin` (format 1, v1.0.0).
fn www(dir: &Path) -> PathBuf {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    make_image(&www.join("app.bin"), "app", "v2.0.0", "90K");
    make_tone(dir, &www.join("tone.bin"), "v1.0.0");
    www
}

/// A signing key: openssl's own file when openssl is installed (`ecparam -genkey` writes SEC1
/// after an EC PARAMETERS block), else `ota catalogue keygen`. Returns (private, public).
fn key(dir: &Path, alg: &str, name: &str) -> (PathBuf, PathBuf) {
    let k = dir.join(format!("{name}.pem"));
    let p = dir.join(format!("{name}.pub.pem"));
    let openssl = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if openssl {
        let args: Vec<&str> = match alg {
            "ed25519" => vec!["genpkey", "-algorithm", "ed25519", "-out", s(&k)],
            _ => vec!["ecparam", "-name", "prime256v1", "-genkey", "-out", s(&k)],
        };
        let o = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let o = std::process::Command::new("openssl")
            .args(["pkey", "-in", s(&k), "-pubout", "-out", s(&p)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    } else {
        eprintln!("SKIP (part): openssl not found, keys from `ota catalogue keygen`");
        ok(&["catalogue", "keygen", "--algorithm", alg, "-o", s(&k)]);
        ok(&["catalogue", "pubkey", s(&k), "-o", s(&p)]);
    }
    (k, p)
}

/// The upgrade list: the tone item authenticated by the catalogue, then the app from it.
fn config(path: &Path, base: &str, key: Option<&Path>, tone_extra: &str) {
    let key_line = key.map_or(String::new(), |k| format!("catalogue_key = \"{}\"\n", s(k)));
    std::fs::write(
        path,
        format!(
            "{key_line}\
             [[upgrade]]\ntype = \"data\"\nuri = \"{base}/tone.bin\"\nlabel = \"flash_tone\"\n\
             format = \"tone\"\ncatalogue = \"{base}/manifest.json\"\n{tone_extra}\n\
             [[upgrade]]\ntype = \"app\"\nuri = \"{base}/manifest.json\"\nproject = \"app\"\n\
             version_check = \"semver\"\n"
        ),
    )
    .unwrap();
}

fn run_device(flash: &Path, config: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["device", "run", "--flash", s(flash), "--config", s(config)];
    args.extend_from_slice(extra);
    ota(&args)
}

fn boot_json(flash: &Path) -> serde_json::Value {
    let o = ok(&["device", "boot", "--flash", s(flash), "--json"]);
    let start = o.find('{').unwrap();
    serde_json::from_str(&o[start..o.rfind('}').unwrap() + 1]).unwrap()
}

fn settings(flash: &Path) -> String {
    std::fs::read_to_string(flash.with_file_name("flash.bin.device.toml")).unwrap()
}

/// GET over plain HTTP on loopback: the whole response body.
fn get(base: &str, path: &str) -> Vec<u8> {
    let addr = base.trim_start_matches("http://");
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    all[end + 4..].to_vec()
}

/// A response as the proxy sees it: the path asked for, the head's lines, the body.
type Rewrite = dyn Fn(&str, &mut Vec<String>, &mut Vec<u8>) + Send + Sync;

/// A man in the middle on 127.0.0.1: forwards each request to `upstream` (with `Connection:
/// close`) and hands the response to `rewrite` before the device sees it.
struct Proxy {
    base: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: &str, rewrite: Box<Rewrite>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let up = upstream.trim_start_matches("http://").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !st.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                let Ok((mut c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req).to_string();
                let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                let fwd: Vec<&str> = head
                    .split("\r\n")
                    .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
                    .collect();
                let mut u = TcpStream::connect(&up).unwrap();
                u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                write!(u, "{}\r\nConnection: close\r\n\r\n", fwd.join("\r\n")).unwrap();
                let mut resp = Vec::new();
                let _ = u.read_to_end(&mut resp);
                let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let mut lines: Vec<String> = String::from_utf8_lossy(&resp[..end])
                    .split("\r\n")
                    .map(str::to_string)
                    .collect();
                let mut body = resp[end + 4..].to_vec();
                rewrite(&path, &mut lines, &mut body);
                lines.retain(|l| {
                    let l = l.to_ascii_lowercase();
                    !l.starts_with("content-length:") && !l.starts_with("connection:")
                });
                let out = format!(
                    "{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    lines.join("\r\n"),
                    body.len()
                );
                let _ = c.write_all(out.as_bytes()).and_then(|_| c.write_all(&body));
            }
        });
        Proxy {
            base,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The flash is byte-for-byte what it was.
#[track_caller]
fn assert_unchanged(flash: &Path, before: &[u8]) {
    assert!(std::fs::read(flash).unwrap() == before, "the flash changed");
}

#[test]
fn signed_catalogue_updates_tone_and_app_over_plain_http_with_both_algorithms() {
    // Ed25519 on the std driver, P-256 on the embassy driver (embassy-net on the PC): the
    // items are the same code on both.
    for (alg, stack) in [("ed25519", "std"), ("p256", "embassy")] {
        let t = tempfile::tempdir().unwrap();
        let flash = device(t.path());
        let www = www(t.path());
        let (k, p) = key(t.path(), alg, "cat");
        let srv = Served::start(
            &[s(&www), "--sign-key", s(&k), "--quiet"],
            &t.path().join("serve.log"),
        );
        assert!(
            srv.lines.iter().any(|l| l.starts_with("catalogue signed:")),
            "{:?}",
            srv.lines
        );
        // The document is the envelope, and `ota catalogue verify` accepts it.
        let doc = get(&srv.base, "/manifest.json");
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(v["signed_catalogue"], 1);
        assert_eq!(
            v["alg"],
            if alg == "p256" {
                "ecdsa-p256"
            } else {
                "ed25519"
            }
        );
        let saved = t.path().join("manifest.json");
        std::fs::write(&saved, &doc).unwrap();
        let out = ok(&["catalogue", "verify", "--key", s(&p), s(&saved)]);
        assert!(out.contains("2 entries"), "{out}");

        let cfg = t.path().join("ota.toml");
        config(&cfg, &srv.base, Some(&p), "");
        let o = run_device(&flash, &cfg, &["--stack", stack]);
        let log = text(&o);
        assert!(o.status.success(), "{alg} on {stack}: {log}");
        assert!(log.contains("signature verified"), "{log}");
        assert!(log.contains("match the catalogue's SHA-256"), "{log}");
        assert!(
            log.contains("partition flash_tone upgrade successes"),
            "{log}"
        );
        assert_eq!(boot_json(&flash)["version"], "v2.0.0");
        // The tone partition holds exactly the served bin.
        let tone = std::fs::read(www.join("tone.bin")).unwrap();
        let f = std::fs::read(&flash).unwrap();
        assert!(f[0x210000..0x210000 + tone.len()] == tone[..]);
        // The accepted serial is kept beside the flash.
        assert!(
            settings(&flash).contains("catalogue_serial = "),
            "{}",
            settings(&flash)
        );
    }
}

#[test]
fn unsigned_altered_wrongly_signed_and_replayed_catalogues_are_refused_before_anything_is_written()
{
    let t = tempfile::tempdir().unwrap();
    let flash = device(t.path());
    let www = www(t.path());
    let (k, p) = key(t.path(), "ed25519", "cat");
    let (_, other) = key(t.path(), "ed25519", "other");
    let cfg = t.path().join("ota.toml");
    let before = std::fs::read(&flash).unwrap();

    // Unsigned: the same folder served without --sign-key.
    {
        let plain = Served::start(&[s(&www), "--quiet"], &t.path().join("plain.log"));
        config(&cfg, &plain.base, Some(&p), "");
        let o = run_device(&flash, &cfg, &[]);
        let log = text(&o);
        assert_eq!(o.status.code(), Some(1), "{log}");
        assert!(log.contains("the catalogue is not signed"), "{log}");
        assert!(log.contains("0x1503 ESP_ERR_OTA_VALIDATE_FAILED"), "{log}");
        assert_unchanged(&flash, &before);
    }

    let srv = Served::start(
        &[
            s(&www),
            "--sign-key",
            s(&k),
            "--rescan-ms",
            "100",
            "--quiet",
        ],
        &t.path().join("serve.log"),
    );
    // One character of the signed payload changed on the way.
    {
        let mitm = Proxy::start(
            &srv.base,
            Box::new(|path, _, body| {
                if path == "/manifest.json" {
                    let text = String::from_utf8(body.clone()).unwrap();
                    let at = text.find("\"payload\": \"").unwrap() + 40;
                    let c = body[at];
                    body[at] = if c == b'A' { b'B' } else { b'A' };
                }
            }),
        );
        config(&cfg, &mitm.base, Some(&p), "");
        let o = run_device(&flash, &cfg, &[]);
        let log = text(&o);
        assert_eq!(o.status.code(), Some(1), "{log}");
        assert!(log.contains("signature does not verify"), "{log}");
        assert_unchanged(&flash, &before);
    }
    // The wrong key, from the config and from --catalogue-key (which replaces it).
    config(&cfg, &srv.base, Some(&other), "");
    let o = run_device(&flash, &cfg, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("signed by key id"), "{}", text(&o));
    assert_unchanged(&flash, &before);
    config(&cfg, &srv.base, None, "");
    let o = run_device(&flash, &cfg, &["--catalogue-key", s(&other)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("signed by key id"), "{}", text(&o));
    assert_unchanged(&flash, &before);

    // Replay: keep today's document, let the server sign a newer one, update the device from
    // it, then serve the old one again.
    let old_doc = get(&srv.base, "/manifest.json");
    make_image(&www.join("other.bin"), "other", "v1.0.0", "40K");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&srv.base, "/manifest.json") == old_doc {
        assert!(std::time::Instant::now() < deadline, "no rescan");
        std::thread::sleep(Duration::from_millis(50));
    }
    config(&cfg, &srv.base, Some(&p), "");
    let o = run_device(&flash, &cfg, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let updated = std::fs::read(&flash).unwrap();
    let replay = Server::start(Reply::Body(old_doc));
    let base = format!("http://127.0.0.1:{}", replay.port);
    config(&cfg, &base, Some(&p), "");
    let o = run_device(&flash, &cfg, &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("a replayed catalogue"), "{log}");
    assert_unchanged(&flash, &updated);
}

#[test]
fn tone_bin_and_app_swapped_for_other_valid_bytes_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let flash = device(t.path());
    let www = www(t.path());
    let (k, p) = key(t.path(), "p256", "cat");
    // The catalogue is signed once (no rescan); then the server swaps the files for other
    // valid ones of the same size (a newer tone bin, another app build).
    let srv = Served::start(
        &[
            s(&www),
            "--sign-key",
            s(&k),
            "--rescan-ms",
            "3600000",
            "--quiet",
        ],
        &t.path().join("serve.log"),
    );
    let swap = t.path().join("swap.bin");
    make_tone(t.path(), &swap, "v1.0.1");
    std::fs::rename(&swap, www.join("tone.bin")).unwrap();
    make_image(&swap, "app", "v2.0.1", "90K");
    std::fs::rename(&swap, www.join("app.bin")).unwrap();
    let cfg = t.path().join("ota.toml");
    config(&cfg, &srv.base, Some(&p), "");
    let before = std::fs::read(&flash).unwrap();
    let o = run_device(&flash, &cfg, &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    // The tone bin is refused by its verifying pass, before flash_tone is erased.
    assert!(
        log.contains("tone.bin: does not match the catalogue"),
        "{log}"
    );
    assert!(log.contains("partition flash_tone is unchanged"), "{log}");
    // The app is refused before otadata is switched.
    assert!(log.contains("SHA-256 of the download is"), "{log}");
    assert_not_switched(&flash, &before);
    assert_eq!(boot_json(&flash)["version"], "v1.0.0");

    // The same through a man in the middle: the tone bin's bytes replaced on the way, its
    // ETag kept (the verifying pass sees other bytes) or dropped (nothing to read twice).
    let other_tone = std::fs::read(www.join("tone.bin")).unwrap();
    let old_www = t.path().join("www2");
    std::fs::create_dir_all(&old_www).unwrap();
    make_tone(t.path(), &old_www.join("tone.bin"), "v1.0.0");
    make_image(&old_www.join("app.bin"), "app", "v2.0.0", "90K");
    let srv2 = Served::start(
        &[s(&old_www), "--sign-key", s(&k), "--quiet"],
        &t.path().join("serve2.log"),
    );
    for drop_etag in [false, true] {
        let swapped = other_tone.clone();
        let mitm = Proxy::start(
            &srv2.base,
            Box::new(move |path, head, body| {
                if path == "/tone.bin" {
                    *body = swapped.clone();
                    if drop_etag {
                        head.retain(|l| !l.to_ascii_lowercase().starts_with("etag:"));
                    }
                }
            }),
        );
        config(&cfg, &mitm.base, Some(&p), "");
        let before = std::fs::read(&flash).unwrap();
        let o = run_device(&flash, &cfg, &[]);
        let log = text(&o);
        assert_eq!(o.status.code(), Some(1), "{log}");
        if drop_etag {
            assert!(log.contains("the server sent no strong ETag"), "{log}");
            assert!(log.contains("staging"), "{log}");
        } else {
            assert!(log.contains("does not match the catalogue"), "{log}");
        }
        // The app item of the same list still installs: it is the catalogue's.
        assert_eq!(boot_json(&flash)["version"], "v2.0.0");
        let after = std::fs::read(&flash).unwrap();
        assert!(
            after[0x210000..0x310000] == before[0x210000..0x310000],
            "flash_tone changed"
        );
        // Back to v1.0.0 for the next round.
        std::fs::write(&flash, &before).unwrap();
    }
}

#[test]
fn staged_tone_item_without_etag_is_checked_in_the_spare_partition() {
    let t = tempfile::tempdir().unwrap();
    // The example table plus a spare data partition for staging.
    let csv = t.path().join("parts.csv");
    std::fs::write(
        &csv,
        "nvs,data,nvs,,0x4000,\notadata,data,ota,,0x2000,\nphy_init,data,phy,,0x1000,\n\
         ota_0,app,ota_0,,1M,\nota_1,app,ota_1,,1M,\nflash_tone,data,0xff,,512K,\n\
         tone_stage,data,0xfe,,512K,\n",
    )
    .unwrap();
    let dir = t.path();
    let run = dir.join("run.bin");
    make_image(&run, "app", "v1.0.0", "60K");
    let snd = dir.join("snd");
    std::fs::create_dir_all(&snd).unwrap();
    std::fs::write(snd.join("0_beep.mp3"), vec![7u8; 3000]).unwrap();
    let old = dir.join("old_tone.bin");
    ok(&["tone", "pack", s(&snd), "-o", s(&old), "--format", "0"]);
    let flash = dir.join("flash.bin");
    let data = format!("flash_tone={}", s(&old));
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--partitions",
        s(&csv),
        "--app",
        s(&run),
        "--data",
        &data,
    ]);
    ok(&["device", "boot", "--flash", s(&flash)]);
    let www = www(dir);
    let (k, p) = key(dir, "ed25519", "cat");
    let srv = Served::start(
        &[s(&www), "--sign-key", s(&k), "--quiet"],
        &dir.join("serve.log"),
    );
    let good = std::fs::read(www.join("tone.bin")).unwrap();
    // Another valid tone bin of the same size (another version).
    let other_path = dir.join("other_tone.bin");
    make_tone(dir, &other_path, "v1.0.1");
    let other_tone = std::fs::read(&other_path).unwrap();
    assert_eq!(other_tone.len(), good.len());
    let cfg = dir.join("ota.toml");
    for tamper in [true, false] {
        let other = other_tone.clone();
        let mitm = Proxy::start(
            &srv.base,
            Box::new(move |path, head, body| {
                if path == "/tone.bin" {
                    head.retain(|l| !l.to_ascii_lowercase().starts_with("etag:"));
                    if tamper {
                        *body = other.clone();
                    }
                }
            }),
        );
        config(&cfg, &mitm.base, Some(&p), "staging = \"tone_stage\"\n");
        let before = std::fs::read(&flash).unwrap();
        let o = run_device(&flash, &cfg, &[]);
        let log = text(&o);
        let after = std::fs::read(&flash).unwrap();
        let tone_at = 0x210000;
        if tamper {
            assert_eq!(o.status.code(), Some(1), "{log}");
            assert!(log.contains("does not match the catalogue"), "{log}");
            assert!(
                after[tone_at..tone_at + 0x80000] == before[tone_at..tone_at + 0x80000],
                "flash_tone changed"
            );
        } else {
            assert!(o.status.success(), "{log}");
            assert!(after[tone_at..tone_at + good.len()] == good[..]);
        }
    }
}

#[test]
fn cli_and_config_errors_name_the_key_the_item_and_the_file() {
    let t = tempfile::tempdir().unwrap();
    let flash = device(t.path());
    let before = std::fs::read(&flash).unwrap();
    let cfg = t.path().join("ota.toml");
    let base = "http://127.0.0.1:9";

    // A key file that does not exist / is not a key.
    config(&cfg, base, None, "");
    let missing = t.path().join("missing.pem");
    let o = run_device(&flash, &cfg, &["--catalogue-key", s(&missing)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("missing.pem"), "{}", text(&o));
    let cert = t.path().join("cert.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMAEC\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let o = run_device(&flash, &cfg, &["--catalogue-key", s(&cert)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("no PRIVATE KEY, EC PRIVATE KEY or PUBLIC KEY block (found CERTIFICATE)"),
        "{}",
        text(&o)
    );
    // In the config file: the line and column of the key.
    let bad_cfg = t.path().join("bad.toml");
    std::fs::write(
        &bad_cfg,
        "catalogue_key = \"nope.pem\"\n[[upgrade]]\ntype = \"app\"\nuri = \"http://127.0.0.1:9/manifest.json\"\nproject = \"app\"\n",
    )
    .unwrap();
    let o = run_device(&flash, &bad_cfg, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("bad.toml:1:17: catalogue_key file not found"),
        "{}",
        text(&o)
    );

    // With a key, an item that does not come through a catalogue is refused up front.
    let (_, p) = key(t.path(), "ed25519", "cat");
    std::fs::write(
        &bad_cfg,
        format!(
            "catalogue_key = \"{}\"\n[[upgrade]]\ntype = \"data\"\nuri = \"http://127.0.0.1:9/t.bin\"\nlabel = \"flash_tone\"\n",
            s(&p)
        ),
    )
    .unwrap();
    let o = run_device(&flash, &bad_cfg, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("item 0 (http://127.0.0.1:9/t.bin) is not authenticated"),
        "{}",
        text(&o)
    );
    let plain_app = t.path().join("plain.toml");
    std::fs::write(
        &plain_app,
        "firmware_upgrade_uri = \"http://127.0.0.1:9/fw.bin\"\n",
    )
    .unwrap();
    let o = run_device(&flash, &plain_app, &["--catalogue-key", s(&p)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("an app item must read a catalogue"),
        "{}",
        text(&o)
    );
    // `catalogue` on an app item is a config error.
    std::fs::write(
        &bad_cfg,
        "[[upgrade]]\ntype = \"app\"\nuri = \"http://127.0.0.1:9/a.bin\"\ncatalogue = \"http://127.0.0.1:9/manifest.json\"\n",
    )
    .unwrap();
    let o = run_device(&flash, &bad_cfg, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("`catalogue` is for data items"),
        "{}",
        text(&o)
    );
    assert_unchanged(&flash, &before);

    // Server side: a public key cannot sign; --sign-key and --store do not go together.
    let o = ota(&[
        "serve",
        s(t.path()),
        "--sign-key",
        s(&p),
        "--bind",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("a public key cannot sign"),
        "{}",
        text(&o)
    );
    let o = ota(&[
        "serve",
        "--store",
        "s3://b",
        "--s3-endpoint",
        "http://127.0.0.1:9",
        "--sign-key",
        s(&p),
    ]);
    assert!(!o.status.success());

    // The key helper: never overwrites, names an unknown algorithm.
    let k = t.path().join("new.pem");
    let out = ok(&["catalogue", "keygen", "--algorithm", "p256", "-o", s(&k)]);
    assert!(out.contains("ecdsa-p256 private key, key id"), "{out}");
    let o = ota(&["catalogue", "keygen", "-o", s(&k)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("refusing to overwrite"), "{}", text(&o));
    let o = ota(&[
        "catalogue",
        "keygen",
        "--algorithm",
        "rsa",
        "-o",
        s(&t.path().join("x.pem")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    // `verify` refuses a plain catalogue, naming the file.
    let plain = t.path().join("plain.json");
    std::fs::write(&plain, "{\"format\": 1, \"entries\": []}").unwrap();
    let o = ota(&["catalogue", "verify", "--key", s(&p), s(&plain)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("plain.json: the catalogue is not signed"),
        "{}",
        text(&o)
    );
}
