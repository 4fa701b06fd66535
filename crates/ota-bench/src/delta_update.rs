//! `ota-bench delta-update`: a full image against a delta patch over the air, side by side in
//! one run, on real pairs.
//!
//! For each pair (OLD, NEW): `ota serve` (the `ota` binary beside this one, or `--ota`) on
//! 127.0.0.1:0 serves a folder with both images, once with `--delta-bases 3` (NEW's entry
//! lists a patch from OLD) and once with `--delta-bases 0` (no patch). Each time a fresh
//! emulated device running OLD updates through the catalogue with `ota device run --stack
//! embassy --link SPEC`. The bytes over the air are the server's access log (every GET but the
//! catalogue); the update time is the wall time of `ota device run`. Each run must end with the
//! device booting NEW (`ota device boot --json`), and the patch run must have taken the patch
//! (`esp_delta_ota: patch from`, no fallback), or the bench fails.
//!
//! Then, on the same pairs, `ota_delta::make` (what `ota delta make` runs) against detools'
//! `create_patch`, and ota-core's applier (what `ota delta apply` runs) against detools'
//! `apply_patch`, through the harnesses of `delta-make` and `delta-apply`.
//!
//! Every child process runs under a deadline and is killed when its handle is dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ota_core::delta::SliceBase;
use ota_delta::{Compression, Options};

use crate::{delta_apply, delta_make};

/// The link of the figures in the README: a slow Wi-Fi-like path.
pub const DEFAULT_LINK: &str = "rate=56kB/s,rtt=60ms";

/// The firmware target the example builds for.
const FW_TARGET: &str = "riscv32imc-unknown-none-elf";

pub struct Args {
    pub link: Option<String>,
    pub ota: Option<PathBuf>,
    pub quick: bool,
    pub python: String,
    pub vectors: PathBuf,
    pub runs: usize,
}

/// A pair as the device sees it: two image files, the device to create, the catalogue item.
struct Pair {
    name: String,
    /// What the pair is, printed above the table.
    note: String,
    old: PathBuf,
    new: PathBuf,
    new_version: String,
    project: String,
    /// The catalogue item's `version_check`: `semver`, or `none` for versions it cannot order
    /// (the server then takes NEW by its path, the greater one).
    version_check: &'static str,
    /// `ota device create` options beyond `--flash` and `--app`.
    create: Vec<String>,
}

/// One update: what went over the air and how long `ota device run` took.
struct Update {
    bytes: u64,
    secs: f64,
}

/// A child killed (by its pid) when dropped: nothing outlives the bench.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to its end, at most `limit`; stdout and stderr collected. The elapsed wall time
/// comes back with the output.
fn run_bounded(cmd: &mut Command, limit: Duration, what: &str) -> Result<(Output, f64)> {
    let t0 = Instant::now();
    let mut child = Kill(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"))?,
    );
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = drain(child.0.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.0.stderr.take().map(|s| Box::new(s) as _));
    let deadline = t0 + limit;
    let status = loop {
        if let Some(st) = child.0.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not finish within {} s (killed)",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let secs = t0.elapsed().as_secs_f64();
    let output = Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    Ok((output, secs))
}

/// `ota ARGS`, which must succeed within `limit`; its stdout and stderr.
fn ota(bin: &Path, args: &[&str], limit: Duration) -> Result<(String, f64)> {
    let what = format!("ota {}", args.join(" "));
    let (o, secs) = run_bounded(Command::new(bin).args(args), limit, &what)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() {
        bail!("{what} failed ({}):\n{text}", o.status);
    }
    Ok((text, secs))
}

/// A running `ota serve`: its base URL; killed when dropped.
struct Serve {
    _child: Kill,
    base: String,
}

impl Serve {
    /// `ota serve WWW --bind 127.0.0.1:0 --delta-bases N`, once its catalogue is up (the
    /// patches are made by then). Its access log goes to `log`.
    fn start(bin: &Path, www: &Path, bases: u16, log: &Path) -> Result<Serve> {
        let mut child = Kill(
            Command::new(bin)
                .arg("serve")
                .arg(www)
                .args(["--bind", "127.0.0.1:0", "--delta-bases", &bases.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(std::fs::File::create(log)?))
                .spawn()
                .context("starting ota serve")?,
        );
        let stdout = child.0.stdout.take().context("ota serve stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut base = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                // `Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) from www`
                Ok(l) if l.starts_with("Serving") => {
                    base = l
                        .split(" (")
                        .nth(1)
                        .and_then(|r| r.split("/)").next())
                        .map(str::to_string);
                }
                Ok(l) if l.starts_with("catalogue:") => break,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(st) = child.0.try_wait()? {
                        bail!(
                            "ota serve exited at start ({st}): {}",
                            std::fs::read_to_string(log).unwrap_or_default()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("ota serve closed its output before its catalogue line")
                }
            }
            if Instant::now() > deadline {
                bail!("ota serve printed no catalogue line within 120 s");
            }
        }
        let base = base.context("no `Serving ... (URL/)` line from ota serve")?;
        Ok(Serve {
            _child: child,
            base,
        })
    }
}

/// Bytes the server sent for every GET but the catalogue, from access-log lines
/// `127.0.0.1 - - [date] "GET /path HTTP/1.1" 200 - BYTES 1.2ms`.
pub fn served_bytes(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("\"GET ") && !l.contains("manifest.json"))
        .filter_map(|l| l.rsplit_once("\" "))
        .filter_map(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

/// The `ota` binary: `--ota`, else the one beside this bench.
fn ota_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let bin = match given {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary's folder")?
            .join("ota"),
    };
    if !bin.is_file() {
        bail!(
            "no ota binary at {}: build it with `cargo build --release -p ota` (it lands beside \
             ota-bench in target/release), or give its path with --ota PATH",
            bin.display()
        );
    }
    Ok(bin)
}

pub fn run(a: Args) -> Result<()> {
    let bin = ota_binary(a.ota.clone())?;
    let link = if a.quick { None } else { a.link.clone() };
    let work = tempfile::tempdir()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "ota-bench delta-update: ota serve --delta-bases 3 (patch) and 0 (image) on 127.0.0.1, \
         device `ota device run --stack embassy{}`, {cores} cores; ota = {}",
        link.as_ref()
            .map_or(String::new(), |l| format!(" --link {l}")),
        bin.display()
    );
    if link.is_some() {
        println!(
            "(the link is emulated: a user-space model between the device's embassy-net stack \
             and the host's TCP)"
        );
    }

    let pairs = pairs(&a, &bin, work.path())?;
    println!();
    for p in &pairs {
        let (old, new) = (std::fs::read(&p.old)?, std::fs::read(&p.new)?);
        let (bytes, runs) = differences(&old, &new);
        println!(
            "- {}: {}. OLD {} B, NEW {} B; {bytes} bytes differ at the same offsets, in {runs} \
             runs (gaps under 64 bytes joined)",
            p.name,
            p.note,
            old.len(),
            new.len()
        );
    }
    println!();
    println!(
        "| pair | image B | patch B | air: image B | air: patch B | air patch/image | time: image s | time: patch s | time image/patch |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, p) in pairs.iter().enumerate() {
        let full = update(&bin, (i, p), 0, link.as_deref(), work.path())?;
        let delta = update(&bin, (i, p), 3, link.as_deref(), work.path())?;
        let image_len = std::fs::metadata(&p.new)?.len();
        println!(
            "| {} | {} | {} | {} | {} | {:.2} % | {:.2} | {:.2} | {:.1}x |",
            p.name,
            image_len,
            delta.1,
            full.0.bytes,
            delta.0.bytes,
            delta.0.bytes as f64 * 100.0 / full.0.bytes.max(1) as f64,
            full.0.secs,
            delta.0.secs,
            full.0.secs / delta.0.secs,
        );
    }
    println!(
        "(patch B: the esp_delta_ota-framed heatshrink patch `ota serve` made and listed; air: \
         bytes in the server's access log, catalogue excluded; time: wall time of `ota device \
         run`, boots included)"
    );
    println!();
    make_and_apply(&a, &pairs, work.path())
}

/// Bytes that differ between `a` and `b` at the same offsets (the longer one's tail counts),
/// and in how many runs (differences less than 64 bytes apart are one run).
fn differences(a: &[u8], b: &[u8]) -> (usize, usize) {
    let n = a.len().max(b.len());
    let (mut bytes, mut runs, mut last) = (0, 0, None::<usize>);
    for i in 0..n {
        if a.get(i) != b.get(i) {
            bytes += 1;
            if last.is_none_or(|l| i - l > 64) {
                runs += 1;
            }
            last = Some(i);
        }
    }
    (bytes, runs)
}

/// One update of a fresh device running OLD from a server with `bases` delta bases: the bytes
/// over the air, the time, and (with bases) the size of the patch it listed.
fn update(
    bin: &Path,
    (index, p): (usize, &Pair),
    bases: u16,
    link: Option<&str>,
    work: &Path,
) -> Result<(Update, u64)> {
    let dir = work.join(format!("run-{index}-{bases}"));
    let _ = std::fs::remove_dir_all(&dir);
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    // Named so that the path order agrees with the version order.
    std::fs::copy(&p.old, www.join("a-old.bin"))?;
    std::fs::copy(&p.new, www.join("b-new.bin"))?;
    let flash = dir.join("device.flash");
    let fs = flash.to_str().context("non-UTF-8 temp path")?;
    let old = p.old.to_str().context("non-UTF-8 temp path")?;
    let mut create = vec!["device", "create", "--flash", fs, "--app", old];
    create.extend(p.create.iter().map(String::as_str));
    let short = Duration::from_secs(60);
    ota(bin, &create, short)?;
    ota(bin, &["device", "boot", "--flash", fs], short)?;

    let log = dir.join("serve.log");
    let srv = Serve::start(bin, &www, bases, &log)?;
    let patches: Vec<PathBuf> = match std::fs::read_dir(www.join(".ota-delta")) {
        Ok(d) => d
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "patch"))
            .collect(),
        Err(_) => Vec::new(),
    };
    let patch_len = match (bases, patches.as_slice()) {
        (0, []) => 0,
        (0, _) => bail!("{}: ota serve --delta-bases 0 made patches", p.name),
        (_, [one]) => std::fs::metadata(one)?.len(),
        (_, other) => bail!(
            "{}: ota serve made {} patches, expected 1 (from OLD)",
            p.name,
            other.len()
        ),
    };
    let cfg = dir.join("ota.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upgrade]]\ntype = \"app\"\nuri = \"{}/manifest.json\"\nproject = \"{}\"\n\
             version_check = \"{}\"\n",
            srv.base, p.project, p.version_check
        ),
    )?;
    let cs = cfg.to_str().context("non-UTF-8 temp path")?;
    let mut args = vec![
        "device", "run", "--flash", fs, "--config", cs, "--stack", "embassy",
    ];
    if let Some(l) = link {
        args.extend(["--link", l]);
    }
    let (log_text, secs) = ota(bin, &args, Duration::from_secs(900))?;
    drop(srv);
    let used_patch = log_text.contains("esp_delta_ota: patch from");
    if bases > 0 && (!used_patch || log_text.contains("falling back")) {
        bail!(
            "{}: the device did not install the patch (no `esp_delta_ota: patch from` line, or \
             a fallback):\n{log_text}",
            p.name
        );
    }
    if bases == 0 && used_patch {
        bail!("{}: the device used a patch with --delta-bases 0", p.name);
    }
    let (boot, _) = ota(bin, &["device", "boot", "--flash", fs, "--json"], short)?;
    let version = boot
        .find('{')
        .zip(boot.rfind('}'))
        .and_then(|(a, b)| serde_json::from_str::<serde_json::Value>(&boot[a..=b]).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_default();
    if version != p.new_version {
        bail!(
            "{}: after the update the device boots version {version:?}, not NEW ({:?})",
            p.name,
            p.new_version
        );
    }
    let bytes = served_bytes(&std::fs::read_to_string(&log)?);
    Ok((Update { bytes, secs }, patch_len))
}

/// The pairs, in order: the example firmware built twice, the real ESP-IDF blink app and an
/// edit of it, the two synthetic pairs (in quick mode one small synthetic pair only).
fn pairs(a: &Args, bin: &Path, work: &Path) -> Result<Vec<Pair>> {
    let mut out = Vec::new();
    let make = |name: &str, old: &[&str], new: &[&str], new_version: &str| -> Result<Pair> {
        let note = format!(
            "`ota image make --project app {}` -> `{}` (synthetic segments, not a compiled app); \
             ESP32 device",
            old.join(" "),
            new.join(" ")
        );
        let d = work.join(format!("pair-{}", out_len_tag(name)));
        std::fs::create_dir_all(&d)?;
        let (o, n) = (d.join("old.bin"), d.join("new.bin"));
        for (args, path) in [(old, &o), (new, &n)] {
            let mut v = vec!["image", "make", "--project", "app"];
            v.extend_from_slice(args);
            v.extend(["-o", path.to_str().context("non-UTF-8 temp path")?]);
            ota(bin, &v, Duration::from_secs(60))?;
        }
        Ok(Pair {
            name: name.to_string(),
            note,
            old: o,
            new: n,
            new_version: new_version.to_string(),
            project: "app".into(),
            version_check: "semver",
            create: Vec::new(),
        })
    };
    if a.quick {
        out.push(make(
            "synthetic 64 KiB: version bump",
            &["--version", "v1.0.0", "--size", "64K"],
            &["--version", "v1.0.1", "--size", "64K"],
            "v1.0.1",
        )?);
        return Ok(out);
    }
    match firmware_pair(bin, work) {
        Ok(Some(p)) => out.push(p),
        Ok(None) => {}
        Err(e) => return Err(e.context("the esp32c3-ota example firmware pair")),
    }
    if let Some(p) = blink_pair(&a.vectors, work)? {
        out.push(p);
    }
    out.push(make(
        "synthetic 768 KiB: version bump",
        &["--version", "v1.0.0", "--size", "768K"],
        &["--version", "v1.0.1", "--size", "768K"],
        "v1.0.1",
    )?);
    out.push(make(
        "synthetic: layout change, 768 to 800 KiB",
        &["--version", "v1.0.0", "--size", "768K"],
        &["--version", "v1.1.0", "--size", "800K", "--segments", "6"],
        "v1.1.0",
    )?);
    Ok(out)
}

fn out_len_tag(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The workspace root (this crate is `crates/ota-bench`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes `bytes` to `path` unless it already holds them (cargo's fingerprints go by mtime).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Copies the files of `from` (recursively, `target/` left out) into `to`, each through `edit`.
fn copy_tree(from: &Path, to: &Path, edit: &dyn Fn(&Path, Vec<u8>) -> Vec<u8>) -> Result<()> {
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let name = e.file_name();
        if name == "target" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst, edit)?;
        } else {
            let rel = src.strip_prefix(from).unwrap_or(&src).to_path_buf();
            write_if_changed(&dst, &edit(&rel, std::fs::read(&src)?))?;
        }
    }
    Ok(())
}

/// Pair a: `examples/esp32c3-ota` built twice (`cargo build --release`, the Wi-Fi build CI
/// tests), the second time with the patch digit of its Cargo.toml `version` raised: the one
/// line that puts a new version in the app descriptor (`esp_app_desc!()` reads
/// `CARGO_PKG_VERSION`). Both builds are copies of the example under the bench's target folder
/// (path dependencies made absolute, a `[workspace]` of their own) sharing one target folder,
/// so they differ in that line only. `None` (after a SKIP line) without the riscv32imc target.
fn firmware_pair(bin: &Path, work: &Path) -> Result<Option<Pair>> {
    const NAME: &str = "esp32c3-ota firmware, rebuilt";
    let example = workspace().join("examples/esp32c3-ota");
    let installed = run_bounded(
        Command::new("rustup").args(["target", "list", "--installed"]),
        Duration::from_secs(60),
        "rustup target list",
    )
    .map(|(o, _)| o);
    let has_target = match &installed {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == FW_TARGET),
        Err(_) => false,
    };
    if !has_target {
        println!(
            "SKIP: {NAME}: the firmware toolchain is missing ({}; `rustup target add \
             {FW_TARGET}`)",
            match &installed {
                Ok(_) => format!("rustup lists no installed {FW_TARGET}"),
                Err(e) => format!("{e:#}"),
            }
        );
        return Ok(None);
    }
    let manifest = std::fs::read_to_string(example.join("Cargo.toml"))
        .with_context(|| format!("reading {}/Cargo.toml", example.display()))?;
    let old_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"'))
        .context("no `version = \"...\"` line in the example's Cargo.toml")?
        .to_string();
    let new_version = bump_patch(&old_version)?;
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("bench folder")?
        .to_path_buf();
    // target/release/ota-bench -> target/ota-bench-fw
    let cache = exe_dir
        .parent()
        .context("target folder")?
        .join("ota-bench-fw");
    let crates = workspace()
        .join("crates")
        .canonicalize()
        .context("the workspace's crates folder")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut elves = Vec::new();
    for (tag, version) in [("old", &old_version), ("new", &new_version)] {
        let src = cache.join(tag);
        let edit = |rel: &Path, bytes: Vec<u8>| -> Vec<u8> {
            if rel != Path::new("Cargo.toml") {
                return bytes;
            }
            let text = String::from_utf8_lossy(&bytes)
                .replace(
                    "path = \"../../crates/",
                    &format!("path = \"{}/", crates.display()),
                )
                .replacen(
                    &format!("version = \"{old_version}\""),
                    &format!("version = \"{version}\""),
                    1,
                );
            format!("{text}\n# ota-bench delta-update: a workspace of its own\n[workspace]\n")
                .into_bytes()
        };
        copy_tree(&example, &src, &edit)?;
        let log = cache.join(format!("build-{tag}.log"));
        println!(
            "building {NAME} {version} (cargo build --release in {}; log {})",
            src.display(),
            log.display()
        );
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--release"])
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", cache.join("target"));
        // `cargo run` gives this process its own package's CARGO_* variables: not the firmware's.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
                cmd.env_remove(&k);
            }
        }
        let (o, secs) = run_bounded(&mut cmd, Duration::from_secs(3600), "the firmware build")?;
        std::fs::write(&log, [o.stdout.as_slice(), o.stderr.as_slice()].concat())?;
        if !o.status.success() {
            let e = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = e.lines().rev().take(30).collect();
            bail!(
                "the firmware build ({tag}, {version}) failed ({}):\n{}",
                o.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        println!("  built in {secs:.0} s");
        let elf = cache.join(format!("target/{FW_TARGET}/release/esp32c3-ota"));
        let kept = work.join(format!("fw-{tag}.elf"));
        std::fs::copy(&elf, &kept).with_context(|| format!("copying {}", elf.display()))?;
        elves.push(kept);
    }
    let mut images = Vec::new();
    for (elf, tag) in elves.iter().zip(["old", "new"]) {
        let img = work.join(format!("fw-{tag}.bin"));
        let (e, i) = (
            elf.to_str().context("non-UTF-8 path")?,
            img.to_str().context("non-UTF-8 path")?,
        );
        ota(
            bin,
            &[
                "image",
                "from-elf",
                e,
                "--chip",
                "esp32c3",
                "--flash-size",
                "4MB",
                "-o",
                i,
            ],
            Duration::from_secs(60),
        )?;
        images.push(img);
    }
    let parts = example.join("partitions.csv");
    Ok(Some(Pair {
        name: format!("{NAME} {old_version} -> {new_version}"),
        note: format!(
            "examples/esp32c3-ota built twice with `cargo build --release` (the Wi-Fi build), \
             the second with Cargo.toml `version = \"{new_version}\"` (the only change), each \
             ELF through `ota image from-elf --chip esp32c3`; ESP32-C3 device with the \
             example's partitions.csv"
        ),
        old: images[0].clone(),
        new: images[1].clone(),
        new_version,
        project: "esp32c3-ota".into(),
        version_check: "semver",
        create: vec![
            "--chip".into(),
            "esp32c3".into(),
            "--partitions".into(),
            parts.to_str().context("non-UTF-8 path")?.into(),
        ],
    }))
}

/// `0.1.0` -> `0.1.1`.
fn bump_patch(v: &str) -> Result<String> {
    let (head, last) = v
        .rsplit_once('.')
        .context("version without a patch number")?;
    let n: u64 = last.parse().context("version's patch number")?;
    Ok(format!("{head}.{}", n + 1))
}

/// Pair b: the real ESP-IDF blink app (ESP32-S2) as OLD; NEW is that build edited as a rebuild
/// on an ESP-IDF tree 5 commits later would change it: the app descriptor's version
/// (`git describe` of the tree), `idf_ver`, build time and date and ELF SHA-256, and 8
/// scattered instruction words of the largest code segment; checksum and appended SHA-256
/// redone. Not a second real build: there is one in the vectors.
fn blink_pair(vectors: &Path, work: &Path) -> Result<Option<Pair>> {
    const NAME: &str = "ESP-IDF blink (real build) -> edited \"IDF bump\"";
    let path = vectors.join("esptool/esp_idf_blink_esp32s2.bin");
    let Ok(blink) = std::fs::read(&path) else {
        println!("SKIP: {NAME}: no {}", path.display());
        return Ok(None);
    };
    let mut segs = delta_make::segments(&blink)?;
    let desc = &mut segs[0].1;
    // esp_app_desc_t (ESP-IDF components/esp_app_format/include/esp_app_desc.h): magic_word,
    // secure_version, reserv1[2], then version[32] at 16, project_name[32] at 48, time[16] at 80,
    // date[16] at 96, idf_ver[32] at 112, app_elf_sha256[32] at 144; 256 bytes in all.
    if desc.get(..4) != Some(&ota_core::image::APP_DESC_MAGIC.to_le_bytes()[..]) || desc.len() < 256
    {
        bail!("{}: no app descriptor in its first segment", path.display());
    }
    let old_version = cstr(&desc[16..48]);
    let project = cstr(&desc[48..80]);
    let set = |d: &mut [u8], s: &str| {
        d.fill(0);
        d[..s.len()].copy_from_slice(s.as_bytes());
    };
    let new_version = "qa-test-v5.0-20220830-9-g2ad8c7";
    set(&mut desc[16..48], new_version);
    set(&mut desc[80..96], "10:12:55");
    set(&mut desc[96..112], "Sep 14 2022");
    set(&mut desc[112..144], "v5.0-beta1-432-g2ad8c7e5a1-dirt");
    {
        use sha2::{Digest, Sha256};
        let elf = Sha256::digest(new_version.as_bytes());
        desc[144..176].copy_from_slice(&elf);
    }
    let largest = (0..segs.len())
        .max_by_key(|&i| segs[i].1.len())
        .unwrap_or(0);
    let code = &mut segs[largest].1;
    for k in 1..=8 {
        let at = code.len() * k / 9 / 4 * 4;
        code[at] ^= 0x10;
    }
    let new = delta_make::seal(&blink, &segs);
    let d = work.join("pair-blink");
    std::fs::create_dir_all(&d)?;
    let (o, n) = (d.join("old.bin"), d.join("new.bin"));
    std::fs::write(&o, &blink)?;
    std::fs::write(&n, new)?;
    Ok(Some(Pair {
        name: NAME.into(),
        note: format!(
            "OLD: the real esp_idf_blink_esp32s2.bin ({old_version}, ESP-IDF \
             v5.0-beta1-427); NEW: that build edited as a rebuild 5 IDF commits later would \
             change it (descriptor version {new_version}, idf_ver, time, date, ELF SHA-256; 8 \
             code words; checksum and SHA-256 redone), not a second real build; ESP32-S2 device"
        ),
        old: o,
        new: n,
        new_version: new_version.into(),
        project,
        // `qa-test-v5.0-20220830-4-g4532e6` is no semantic version nor a `git describe` of a
        // `vX.Y` tag: the item installs whatever the catalogue's newest (by path) is.
        version_check: "none",
        create: vec!["--chip".into(), "esp32s2".into()],
    }))
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).to_string()
}

/// `ota delta make` against detools `create_patch` (heatshrink, no esp header on either, so
/// both are the same format), and ota-core's applier against detools `apply_patch`, on the
/// pairs above: one table, medians of `--runs`.
fn make_and_apply(a: &Args, pairs: &[Pair], work: &Path) -> Result<()> {
    let runs = a.runs.max(1);
    let detools = detools_ok(&a.python);
    let options = Options {
        compression: Compression::Heatshrink,
        esp_header: false,
    };
    struct Row {
        name: String,
        new_len: usize,
        size: usize,
        make_s: f64,
        apply_s: f64,
    }
    let mut rows = Vec::new();
    let mut cases = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let (old, new) = (std::fs::read(&p.old)?, std::fs::read(&p.new)?);
        let mut times = Vec::new();
        let mut patch = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            patch = ota_delta::make(&old, &new, &options)?;
            times.push(t.elapsed().as_secs_f64());
        }
        let mut applied = Vec::with_capacity(new.len());
        let mut apply = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            delta_apply::apply_with(&mut SliceBase(&old), &patch, &mut applied)?;
            apply.push(t.elapsed().as_secs_f64());
            if applied != new {
                bail!("{}: ota-core's applier output differs from NEW", p.name);
            }
        }
        let ours = work.join(format!("cmp-{i}.ours.patch"));
        std::fs::write(&ours, &patch)?;
        cases.push(serde_json::json!({
            "old": p.old, "new": p.new, "ours": ours,
            "theirs": work.join(format!("cmp-{i}.detools.patch")), "compression": "heatshrink",
        }));
        rows.push(Row {
            name: p.name.clone(),
            new_len: new.len(),
            size: patch.len(),
            make_s: delta_make::median(&mut times),
            apply_s: delta_make::median(&mut apply),
        });
    }
    let py = match &detools {
        Ok(()) => Some(delta_make::python_side(&a.python, &cases, runs)?),
        Err(why) => {
            println!("SKIP: detools columns: {why}");
            None
        }
    };
    println!(
        "ota delta make vs detools create_patch, heatshrink, no esp header (median of {runs}; \
         Python in-process, without interpreter start-up); apply: ota-core's applier (what `ota \
         delta apply` runs) vs detools apply_patch (Python), each applying its own patch"
    );
    println!(
        "| pair | NEW B | ota patch B | detools patch B | size ota/detools | make ota ms | make detools ms | apply ota ms | apply detools ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in rows.iter().enumerate() {
        let d = py.as_ref().and_then(|v| v.get(i));
        let or = |f: &dyn Fn(&delta_make::PyResult) -> String| d.map_or("-".to_string(), f);
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {} | {:.2} | {} |",
            r.name,
            r.new_len,
            r.size,
            or(&|d| d.size.to_string()),
            or(&|d| format!("{:.3}", r.size as f64 / d.size as f64)),
            r.make_s * 1e3,
            or(&|d| format!("{:.1}", d.make_s * 1e3)),
            r.apply_s * 1e3,
            or(&|d| format!("{:.2}", d.apply_theirs_s * 1e3)),
        );
    }
    Ok(())
}

/// Whether `python` runs and imports detools (the reason when not).
fn detools_ok(python: &str) -> Result<(), String> {
    let mut cmd = Command::new(python);
    cmd.args(["-c", "import detools"]);
    match run_bounded(&mut cmd, Duration::from_secs(60), python) {
        Ok((o, _)) if o.status.success() => Ok(()),
        Ok((o, _)) => Err(format!(
            "{python} cannot import detools ({}): python3 -m venv .venv && .venv/bin/python -m \
             pip install detools",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{python}: {e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_bytes_sums_gets_but_the_catalogue() {
        let log = "127.0.0.1 - - [02/Dec/2026 13:00:00] \"GET /manifest.json HTTP/1.1\" 200 - 900 0.3ms\n\
                   127.0.0.1 - - [02/Dec/2026 13:00:01] \"GET /.ota-delta/ab.patch HTTP/1.1\" 200 - 1140 1.0ms\n\
                   127.0.0.1 - - [02/Dec/2026 13:00:02] \"GET /b-new.bin HTTP/1.1\" 206 - 4096 1.0ms\n\
                   127.0.0.1 - - [02/Dec/2026 13:00:03] \"HEAD /b-new.bin HTTP/1.1\" 200 - 0 0.1ms\n\
                   I (12) other line\n";
        assert_eq!(served_bytes(log), 1140 + 4096);
    }

    #[test]
    fn differences_counts_bytes_and_runs() {
        let a = vec![0u8; 1000];
        let mut b = a.clone();
        b[10] = 1;
        b[20] = 1;
        b[500] = 1;
        b.push(7);
        assert_eq!(differences(&a, &b), (4, 3));
        assert_eq!(differences(&a, &a), (0, 0));
    }

    #[test]
    fn bump_patch_raises_the_last_number() {
        assert_eq!(bump_patch("0.1.0").unwrap(), "0.1.1");
        assert_eq!(bump_patch("1.2.9").unwrap(), "1.2.10");
        assert!(bump_patch("1").is_err());
    }
}
