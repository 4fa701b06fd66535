//! `ota-bench delta-update`: bytes over the air and update time, full image vs delta patch,
//! measured side by side in one run on the same pairs.
//!
//! For each pair, an emulated device (`ota device create`) runs OLD; `ota serve` (the release
//! `ota` binary beside this one, or `--ota`) serves OLD and NEW from a folder on 127.0.0.1
//! (ephemeral port), once with `--delta-bases 3` (its catalogue lists a patch from OLD to NEW)
//! and once with `--delta-bases 0` (no patch); the device updates through the catalogue with
//! `ota device run --stack embassy --link LINK` (the chip's TCP/IP stack over an emulated link).
//! Bytes are counted from the server's access log (the catalogue excluded), time is the wall
//! time of `ota device run`. Each run must end with NEW in the booted slot, byte for byte, and
//! the delta run must have used the patch, or the benchmark fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What to measure.
pub struct Args {
    pub ota: Option<PathBuf>,
    pub link: String,
    pub vectors: PathBuf,
    pub firmware_elf: PathBuf,
    pub quick: bool,
}

/// One pair of app images a device updates between.
struct Pair {
    name: String,
    chip: &'static str,
    old: Vec<u8>,
    new: Vec<u8>,
}

/// Deadline of one `ota device run` (a 1 MB image at 56 kB/s takes about 20 s).
const RUN_DEADLINE: Duration = Duration::from_secs(300);

/// `ota serve`, killed when dropped.
struct Serve {
    child: Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(ota: &Path, www: &Path, bases: u32, log: &Path) -> Result<Serve> {
    let err = std::fs::File::create(log)?;
    let mut child = Command::new(ota)
        .arg("serve")
        .arg(www)
        .args(["--bind", "127.0.0.1:0", "--delta-bases", &bases.to_string()])
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {} serve", ota.display()))?;
    let out = child.stdout.take().context("ota serve stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut base = None;
    let mut server = Serve {
        child,
        base: String::new(),
    };
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                if l.starts_with("Serving") {
                    base = l
                        .split(" (")
                        .nth(1)
                        .and_then(|r| r.split("/)").next())
                        .map(str::to_string);
                }
                if l.starts_with("catalogue:") {
                    if let Some(b) = base.take() {
                        server.base = b;
                        return Ok(server);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(st) = server.child.try_wait()? {
            bail!(
                "ota serve exited at start ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
    bail!("ota serve printed no catalogue line within 60 s")
}

/// Run `ota ARGS` to completion within `deadline`; (success, stdout + stderr).
fn run_ota(ota: &Path, args: &[&str], deadline: Duration) -> Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path)?;
    let mut child = Command::new(ota)
        .args(args)
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("running {}", ota.display()))?;
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "ota {} did not finish within {:?}",
                args.join(" "),
                deadline
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((status.success(), std::fs::read_to_string(&out_path)?))
}

fn ok(ota: &Path, args: &[&str]) -> Result<String> {
    let (success, out) = run_ota(ota, args, Duration::from_secs(120))?;
    if !success {
        bail!("ota {} failed:\n{out}", args.join(" "));
    }
    Ok(out)
}

/// Bytes the server sent for GETs other than the catalogue (its access log lines:
/// `... "GET /path HTTP/1.1" 200 - BYTES 1.2ms`).
fn served_bytes(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("\"GET ") && !l.contains("manifest.json"))
        .filter_map(|l| l.split("\" ").nth(1))
        .filter_map(|rest| rest.split_whitespace().nth(2))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// One measured update.
struct Measured {
    bytes: u64,
    secs: f64,
    patch: Option<u64>,
}

/// Update a fresh device running OLD to NEW through `ota serve --delta-bases BASES`.
fn update(ota: &Path, pair: &Pair, dir: &Path, bases: u32, link: Option<&str>) -> Result<Measured> {
    let www = dir.join("www");
    let _ = std::fs::remove_dir_all(&www);
    std::fs::create_dir_all(&www)?;
    // Named so that the folder's order (after semver, the path) makes NEW the newest.
    std::fs::write(www.join("a-old.bin"), &pair.old)?;
    std::fs::write(www.join("b-new.bin"), &pair.new)?;
    let flash = dir.join("flash.bin");
    let fs = flash.to_str().context("path")?;
    let old = www.join("a-old.bin");
    ok(
        ota,
        &[
            "device",
            "create",
            "--force",
            "--flash",
            fs,
            "--chip",
            pair.chip,
            "--app",
            old.to_str().context("path")?,
        ],
    )?;
    ok(ota, &["device", "boot", "--flash", fs])?;
    let log = dir.join(format!("serve-{bases}.log"));
    let srv = serve(ota, &www, bases, &log)?;
    let boot = ok(ota, &["device", "boot", "--flash", fs, "--json"])?;
    let project = json_field(&boot, "project_name")?;
    let cfg = dir.join("ota.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upgrade]]\ntype = \"app\"\nuri = \"{}/manifest.json\"\nproject = \"{project}\"\n",
            srv.base
        ),
    )?;
    let mut args = vec![
        "device",
        "run",
        "--flash",
        fs,
        "--config",
        cfg.to_str().context("path")?,
        "--stack",
        "embassy",
    ];
    if let Some(l) = link {
        args.extend(["--link", l]);
    }
    let t0 = Instant::now();
    let (success, out) = run_ota(ota, &args, RUN_DEADLINE)?;
    let secs = t0.elapsed().as_secs_f64();
    if !success {
        bail!("{}: ota device run failed:\n{out}", pair.name);
    }
    drop(srv);
    let used_patch = out.contains("esp_delta_ota: patch from");
    if used_patch != (bases > 0) {
        bail!(
            "{}: with --delta-bases {bases} the device {} the patch:\n{out}",
            pair.name,
            if used_patch { "used" } else { "did not use" }
        );
    }
    // NEW is in the booted slot, byte for byte.
    let boot = ok(ota, &["device", "boot", "--flash", fs, "--json"])?;
    let at: usize = json_field(&boot, "offset")?.parse()?;
    let image = std::fs::read(&flash)?;
    if image.get(at..at + pair.new.len()) != Some(&pair.new[..]) {
        bail!(
            "{}: the booted slot does not hold NEW after the update",
            pair.name
        );
    }
    let served = std::fs::read_to_string(&log)?;
    let patch = std::fs::read_dir(www.join(".ota-delta"))
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .find(|e| e.path().extension().is_some_and(|x| x == "patch"))
        })
        .and_then(|e| e.metadata().ok())
        .map(|m| m.len());
    Ok(Measured {
        bytes: served_bytes(&served),
        secs,
        patch,
    })
}

fn json_field(json: &str, key: &str) -> Result<String> {
    let start = json.find('{').context("no JSON")?;
    let end = json.rfind('}').context("no JSON")?;
    let v: serde_json::Value = serde_json::from_str(&json[start..=end])?;
    Ok(match &v[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => bail!("no {key} in {other}"),
    })
}

fn make_image(ota: &Path, dir: &Path, name: &str, args: &[&str]) -> Result<Vec<u8>> {
    let out = dir.join(name);
    let mut a = vec!["image", "make", "--project", "app"];
    a.extend_from_slice(args);
    a.extend(["-o", out.to_str().context("path")?]);
    ok(ota, &a)?;
    Ok(std::fs::read(out)?)
}

fn pairs(ota: &Path, a: &Args, dir: &Path) -> Result<Vec<Pair>> {
    let mut out = Vec::new();
    if a.quick {
        out.push(Pair {
            name: "64 KB generated, new version".into(),
            chip: "esp32",
            old: make_image(
                ota,
                dir,
                "q1.bin",
                &["--version", "v1.0.0", "--size", "64K"],
            )?,
            new: make_image(
                ota,
                dir,
                "q2.bin",
                &["--version", "v1.0.1", "--size", "64K", "--segments", "5"],
            )?,
        });
        return Ok(out);
    }
    // The real ESP32-C3 firmware of examples/esp32c3-ota (esp-hal, Wi-Fi, the service),
    // rebuilt with a new version tag (the descriptor's version and ELF SHA-256 change, the
    // checksum and appended SHA-256 with them).
    match firmware_pair(ota, &a.firmware_elf, dir) {
        Ok(p) => out.push(p),
        Err(e) => println!("SKIP: ESP32-C3 firmware pair: {e:#}"),
    }
    // The real ESP-IDF v5.0 blink app (ESP32-S2), with the edits `delta-make` uses.
    match crate::delta_make::app_pairs(&a.vectors) {
        Ok(ps) => out.extend(ps.into_iter().map(|p| Pair {
            name: p.name,
            chip: "esp32s2",
            old: p.old,
            new: p.new,
        })),
        Err(e) => println!("SKIP: ESP-IDF blink pairs: {e:#}"),
    }
    out.push(Pair {
        name: "768 KB generated, new version".into(),
        chip: "esp32",
        old: make_image(
            ota,
            dir,
            "s1.bin",
            &["--version", "v1.0.0", "--size", "768K"],
        )?,
        new: make_image(
            ota,
            dir,
            "s2.bin",
            &["--version", "v1.0.1", "--size", "768K"],
        )?,
    });
    out.push(Pair {
        name: "768 KB generated, new layout".into(),
        chip: "esp32",
        old: make_image(
            ota,
            dir,
            "l1.bin",
            &["--version", "v1.0.0", "--size", "768K"],
        )?,
        new: make_image(
            ota,
            dir,
            "l2.bin",
            &["--version", "v1.1.0", "--size", "800K", "--segments", "6"],
        )?,
    });
    Ok(out)
}

fn firmware_pair(ota: &Path, elf: &Path, dir: &Path) -> Result<Pair> {
    if !elf.is_file() {
        bail!(
            "{} is missing (build it: cd examples/esp32c3-ota && cargo build --release)",
            elf.display()
        );
    }
    let img = dir.join("fw.bin");
    ok(
        ota,
        &[
            "image",
            "from-elf",
            "--chip",
            "esp32c3",
            elf.to_str().context("path")?,
            "-o",
            img.to_str().context("path")?,
        ],
    )?;
    let old = std::fs::read(&img)?;
    let new = crate::delta_make::with_new_version(&old, b"0.1.1-bench")?;
    Ok(Pair {
        name: "ESP32-C3 esp-hal firmware, new version".into(),
        chip: "esp32c3",
        old,
        new,
    })
}

pub fn run(a: Args) -> Result<()> {
    let ota = match &a.ota {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("bench binary folder")?
            .join("ota"),
    };
    if !ota.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release` (or pass --ota PATH)",
            ota.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let link = (!a.quick).then_some(a.link.as_str());
    let pairs = pairs(&ota, &a, dir.path())?;
    println!(
        "delta-update: full image vs delta patch through `ota serve`'s catalogue, ota device run --stack embassy{}",
        link.map(|l| format!(" --link {l}")).unwrap_or_default()
    );
    println!(
        "{:<40} {:>9} {:>8} | {:>9} {:>8} | {:>9} {:>8} | {:>7} {:>7}",
        "pair", "image B", "patch B", "full B", "full s", "delta B", "delta s", "bytes", "time"
    );
    for (i, pair) in pairs.iter().enumerate() {
        let d = dir.path().join(format!("pair{i}"));
        std::fs::create_dir_all(&d)?;
        let delta = update(&ota, pair, &d, 3, link)?;
        let full = update(&ota, pair, &d, 0, link)?;
        println!(
            "{:<40} {:>9} {:>8} | {:>9} {:>8.2} | {:>9} {:>8.2} | {:>6.1}x {:>6.1}x",
            pair.name,
            pair.new.len(),
            delta.patch.map(|n| n.to_string()).unwrap_or("-".into()),
            full.bytes,
            full.secs,
            delta.bytes,
            delta.secs,
            full.bytes as f64 / delta.bytes.max(1) as f64,
            full.secs / delta.secs.max(1e-9),
        );
    }
    println!("(bytes: what the server sent, catalogue excluded; time: wall time of ota device run; ratios full / delta)");
    Ok(())
}
