//! `ota-bench delta-apply`: ota-core's delta applier against detools' Python `apply_patch`
//! on the same 1 MiB firmware-like pair and the same detools-made patches, side by side in one
//! run. Prints patch sizes, apply times (medians) and the applier's RAM.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ota_core::delta::{DeltaApplier, DeltaBase, FlashBase, SliceBase, CHECKPOINT_LEN, CHUNK};
use ota_core::flash::Region;
use ota_core::mem_flash::MemFlash;

/// A deterministic firmware-like pair: "code" from a small instruction vocabulary with
/// embedded pointers, string tables and padding; the new image relinks (pointers above a
/// threshold move by 0x40), has scattered byte changes, a few inserted and deleted blocks and
/// a new build id. Sizes: 1 MiB old, about 1 MiB + a few KiB new.
pub fn firmware_pair(size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut x: u32 = 0x1234_5678;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let ops: [u32; 8] = [
        0x0000_0513,
        0x0000_0593,
        0x00b5_0533,
        0x0010_0073,
        0x0000_8067,
        0xfe01_0113,
        0x0081_2423,
        0x0041_2403,
    ];
    let mut old = Vec::with_capacity(size);
    let mut pointers = Vec::new();
    while old.len() < size {
        match next() % 10 {
            0..=6 => {
                for _ in 0..64 {
                    let r = next();
                    if r % 5 == 0 {
                        pointers.push(old.len());
                        let p = 0x4200_0000 + (r >> 8) % (size as u32);
                        old.extend_from_slice(&p.to_le_bytes());
                    } else {
                        old.extend_from_slice(
                            &(ops[(r % 8) as usize] | (r & 0x0f80)).to_le_bytes(),
                        );
                    }
                }
            }
            7 | 8 => {
                for i in 0..(next() % 40) {
                    old.extend_from_slice(
                        format!("component_{} error %d at line {}\0", i, next() % 900).as_bytes(),
                    );
                }
            }
            _ => old.resize(old.len() + (next() % 512) as usize, 0xff),
        }
    }
    old.truncate(size);
    let mut new = old.clone();
    let threshold = 0x4200_0000 + size as u32 / 3;
    for &at in &pointers {
        if at + 4 <= size {
            let p = u32::from_le_bytes(new[at..at + 4].try_into().unwrap());
            if p > threshold {
                new[at..at + 4].copy_from_slice(&(p + 0x40).to_le_bytes());
            }
        }
    }
    for _ in 0..300 {
        let at = next() as usize % size;
        new[at] = next() as u8;
    }
    // Edits from the end so earlier offsets stay valid.
    let mut edits: Vec<usize> = (0..24).map(|_| next() as usize % size).collect();
    edits.sort_unstable();
    for (i, &at) in edits.iter().enumerate().rev() {
        match i % 3 {
            0 => {
                let end = (at + 200 + next() as usize % 800).min(new.len());
                new.drain(at..end);
            }
            1 => {
                let fresh: Vec<u8> = (0..300 + next() % 1500).map(|_| next() as u8).collect();
                new.splice(at..at, fresh);
            }
            _ => {
                let from = next() as usize % (size - 4096);
                let block = old[from..from + 1000 + next() as usize % 3000].to_vec();
                new.splice(at..at, block);
            }
        }
    }
    let id = b"build-id: 2026-12-02T05:00:00 delta bench v2";
    new[64..64 + id.len()].copy_from_slice(id);
    (old, new)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Applies `patch` to `base` in 1 KiB pieces with ota-core's applier (what `ota delta apply`
/// runs), the output into `out`.
pub(crate) fn apply_with<B: DeltaBase>(
    base: &mut B,
    patch: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    let mut a = DeltaApplier::new(base.len());
    // 1 KiB pieces, as esp_delta_ota's example reads them from the network.
    for piece in patch.chunks(1024) {
        if a.feed(base, piece, &mut |b: &[u8]| {
            out.extend_from_slice(b);
            Ok::<(), ()>(())
        })
        .is_err()
        {
            bail!("the applier refused the patch");
        }
    }
    a.finish().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The detools side: one Python process creates each patch (timed) and times
/// `detools.apply_patch` over in-memory files (median of `runs`).
const PY: &str = r#"
import io, json, sys, time, detools
req = json.load(sys.stdin)
old = open(req["old"], "rb").read(); new = open(req["new"], "rb").read()
res = {}
for c in req["compressions"]:
    t = time.perf_counter(); out = io.BytesIO()
    detools.create_patch(io.BytesIO(old), io.BytesIO(new), out, compression=c)
    create = time.perf_counter() - t
    patch = out.getvalue()
    open(req["dir"] + "/" + c + ".patch", "wb").write(patch)
    times = []
    for _ in range(req["runs"]):
        t = time.perf_counter(); to = io.BytesIO()
        detools.apply_patch(io.BytesIO(old), io.BytesIO(patch), to)
        times.append(time.perf_counter() - t)
        assert to.getvalue() == new
    times.sort()
    res[c] = {"create_s": create, "apply_s": times[len(times) // 2], "size": len(patch)}
json.dump(res, sys.stdout)
"#;

pub fn bench(python: &str, runs: usize) -> Result<()> {
    let (old, new) = firmware_pair(1 << 20);
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("old.bin"), &old)?;
    std::fs::write(d.join("new.bin"), &new)?;
    let comps = ["heatshrink", "none", "lzma"];
    let req = format!(
        r#"{{"old": "{}", "new": "{}", "dir": "{}", "compressions": ["heatshrink", "none", "lzma"], "runs": {}}}"#,
        d.join("old.bin").display(),
        d.join("new.bin").display(),
        d.display(),
        runs
    );
    let mut child = Command::new(python)
        .args(["-c", PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {python} (needs detools: pip install detools)"))?;
    child.stdin.take().unwrap().write_all(req.as_bytes())?;
    let o = child.wait_with_output()?;
    if !o.status.success() {
        bail!("the detools side failed ({})", o.status);
    }
    let py: serde_json::Value =
        serde_json::from_slice(&o.stdout).context("the detools side printed no JSON")?;
    let field = |c: &str, k: &str| py[c][k].as_f64().unwrap_or(f64::NAN);

    println!(
        "delta apply, 1 MiB firmware-like pair: old {} bytes, new {} bytes; patches by \
         detools (create_patch, default bsdiff)",
        old.len(),
        new.len()
    );
    println!(
        "{:<11} {:>10} {:>7} {:>12} {:>14} {:>14} {:>14} {:>8}",
        "compression",
        "patch B",
        "% new",
        "py create",
        "py apply",
        "ota (RAM)",
        "ota (4B flash)",
        "py/ota"
    );
    let mut out = Vec::with_capacity(new.len());
    for c in comps {
        let patch = std::fs::read(Path::new(d).join(format!("{c}.patch")))?;
        let (ours, flash) = if c == "lzma" {
            (None, None)
        } else {
            let mut t1 = Vec::new();
            let mut t2 = Vec::new();
            let slot = (old.len() as u32).next_multiple_of(0x1000);
            let mut mem = vec![0xFFu8; slot as usize];
            mem[..old.len()].copy_from_slice(&old);
            for _ in 0..runs {
                let t = Instant::now();
                apply_with(&mut SliceBase(&old), &patch, &mut out)?;
                t1.push(t.elapsed().as_secs_f64());
                if out != new {
                    bail!("ota-core output differs from NEW ({c})");
                }
                let mut fl = MemFlash::<4, 4>::new(&mut mem);
                let mut base = FlashBase::new(&mut fl, Region::new(0, slot), old.len() as u32)
                    .context("base region")?;
                let t = Instant::now();
                apply_with(&mut base, &patch, &mut out)?;
                t2.push(t.elapsed().as_secs_f64());
                if out != new {
                    bail!("ota-core output (flash base) differs from NEW ({c})");
                }
            }
            (Some(median(t1)), Some(median(t2)))
        };
        let pa = field(c, "apply_s");
        let ms =
            |v: Option<f64>| v.map_or("(host: CLI)".to_string(), |s| format!("{:.1} ms", s * 1e3));
        println!(
            "{:<11} {:>10} {:>6.1}% {:>9.0} ms {:>11.1} ms {:>14} {:>14} {:>8}",
            c,
            patch.len(),
            patch.len() as f64 * 100.0 / new.len() as f64,
            field(c, "create_s") * 1e3,
            pa * 1e3,
            ms(ours),
            ms(flash),
            ours.map_or("-".to_string(), |o| format!("{:.1}x", pa / o)),
        );
    }
    println!(
        "applier RAM: DeltaApplier {} bytes + {} bytes of stack buffers ({}-byte chunks) + the \
         flash layer's 256-byte read scratch; checkpoint record {} bytes; no heap",
        std::mem::size_of::<DeltaApplier>(),
        2 * CHUNK,
        CHUNK,
        CHECKPOINT_LEN
    );
    println!("(medians of {runs} runs; release build recommended: cargo run --release -p ota-bench -- delta-apply)");
    Ok(())
}
