//! `ota-bench delta-make`: the patch maker (`ota_delta::make`, what `ota delta make` runs)
//! against detools' Python `create_patch` on the same pairs, measured side by side in one run:
//! patch sizes, make times, and apply times of both patches with detools' Python
//! `apply_patch` and, when its source is given, detools' C library.
//!
//! detools' PyPI package ships no C applier: the wheel's extensions are the bsdiff and
//! suffix-array creators and hdiffpatch, and the sdist has no `c/` folder (checked on
//! detools 0.53.0 with `pip download --no-binary :all: --no-deps detools`). The C library
//! lives in the detools repository's `c/` folder (eerimoq/detools `c/detools.c`,
//! `c/heatshrink/`); `--detools-c DIR` builds it here with gcc, with a small harness of ours
//! that applies a patch from memory through `detools_apply_patch_init/process/finalize`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ota_delta::{Compression, Options};

/// One pair: name, base, new.
pub(crate) struct Pair {
    pub(crate) name: String,
    pub(crate) old: Vec<u8>,
    pub(crate) new: Vec<u8>,
}

const COMPRESSIONS: [Compression; 3] = [
    Compression::Heatshrink,
    Compression::Lzma,
    Compression::None,
];

/// The C harness (ours): reads FROM, PATCH and NEW, applies PATCH from memory RUNS times with
/// detools' incremental API, checks the output against NEW, prints the median in microseconds.
const C_HARNESS: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "detools.h"

struct io { const uint8_t *from; size_t from_len; long pos; uint8_t *out; size_t out_len, out_cap; };

static int from_read(void *arg, uint8_t *buf, size_t size) {
    struct io *s = arg;
    if (s->pos < 0 || (size_t)s->pos + size > s->from_len) return -1;
    memcpy(buf, s->from + s->pos, size); s->pos += (long)size; return 0;
}
static int from_seek(void *arg, int offset) { ((struct io *)arg)->pos += offset; return 0; }
static int to_write(void *arg, const uint8_t *buf, size_t size) {
    struct io *s = arg;
    if (s->out_len + size > s->out_cap) return -1;
    memcpy(s->out + s->out_len, buf, size); s->out_len += size; return 0;
}
static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb"); if (!f) return NULL;
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (n > 0 && fread(b, 1, (size_t)n, f) != (size_t)n) { fclose(f); return NULL; }
    fclose(f); *len = (size_t)n; return b;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y);
}
int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: FROM PATCH NEW RUNS\n"); return 2; }
    size_t from_len, patch_len, new_len;
    uint8_t *from = slurp(argv[1], &from_len), *patch = slurp(argv[2], &patch_len), *want = slurp(argv[3], &new_len);
    if (!from || !patch || !want) { fprintf(stderr, "cannot read inputs\n"); return 2; }
    int runs = atoi(argv[4]); if (runs < 1) runs = 1;
    double *t = calloc((size_t)runs, sizeof(double));
    struct io s; s.out = malloc(new_len + 1); s.out_cap = new_len;
    for (int r = 0; r < runs; r++) {
        struct detools_apply_patch_t ap; struct timespec a, b;
        s.from = from; s.from_len = from_len; s.pos = 0; s.out_len = 0;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int res = detools_apply_patch_init(&ap, from_read, from_seek, patch_len, to_write, &s);
        if (res == 0) res = detools_apply_patch_process(&ap, patch, patch_len);
        int fin = detools_apply_patch_finalize(&ap);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (res != 0 || fin < 0) {
            fprintf(stderr, "detools: %s\n", detools_error_as_string(res != 0 ? res : fin)); return 1;
        }
        if (s.out_len != new_len || memcmp(s.out, want, new_len) != 0) { fprintf(stderr, "output differs\n"); return 1; }
        t[r] = (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3;
    }
    qsort(t, (size_t)runs, sizeof(double), cmp_double);
    printf("%.1f\n", t[runs / 2]);
    return 0;
}
"#;

/// The Python side, one process for every case: detools' create_patch timed (median of RUNS,
/// in-process: no interpreter start-up), its size, and apply_patch of both patches timed.
const PY_HARNESS: &str = r#"
import io, json, statistics, sys, time
import detools
req = json.load(sys.stdin)
runs = req["runs"]
out = []
for c in req["cases"]:
    old = open(c["old"], "rb").read(); new = open(c["new"], "rb").read()
    ours = open(c["ours"], "rb").read()
    times = []
    for _ in range(runs):
        p = io.BytesIO(); t = time.perf_counter()
        detools.create_patch(io.BytesIO(old), io.BytesIO(new), p, compression=c["compression"])
        times.append(time.perf_counter() - t)
    theirs = p.getvalue()
    open(c["theirs"], "wb").write(theirs)
    def apply(patch):
        ts = []
        for _ in range(runs):
            o = io.BytesIO(); t = time.perf_counter()
            detools.apply_patch(io.BytesIO(old), io.BytesIO(patch), o)
            ts.append(time.perf_counter() - t)
            if o.getvalue() != new:
                raise SystemExit("detools apply_patch output differs for " + c["ours"])
        return statistics.median(ts)
    out.append({"size": len(theirs), "make_s": statistics.median(times),
                "apply_ours_s": apply(ours), "apply_theirs_s": apply(theirs)})
json.dump(out, sys.stdout)
"#;

pub fn run(vectors: &Path, python: &str, detools_c: Option<&Path>, runs: usize) -> Result<()> {
    let runs = runs.max(1);
    let pairs = pairs(vectors)?;
    let dir = tempfile::tempdir()?;
    let harness = match detools_c {
        Some(c) => Some(build_c(c, dir.path())?),
        None => {
            println!(
                "(no --detools-c DIR: detools' C library is not in its PyPI package; give the `c/` \
                 folder of an eerimoq/detools checkout to time it)"
            );
            None
        }
    };

    struct Row {
        pair: String,
        compression: Compression,
        new_len: usize,
        ours: usize,
        ours_make_s: f64,
        c_ours_us: Option<f64>,
        c_theirs_us: Option<f64>,
    }
    let mut rows = Vec::new();
    let mut cases = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let old = dir.path().join(format!("{i}.old"));
        let new = dir.path().join(format!("{i}.new"));
        std::fs::write(&old, &p.old)?;
        std::fs::write(&new, &p.new)?;
        for c in COMPRESSIONS {
            let options = Options {
                compression: c,
                esp_header: false,
            };
            let mut times = Vec::new();
            let mut patch = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                patch = ota_delta::make(&p.old, &p.new, &options)?;
                times.push(t.elapsed().as_secs_f64());
            }
            let ours = dir.path().join(format!("{i}.{c}.ours"));
            std::fs::write(&ours, &patch)?;
            let theirs = dir.path().join(format!("{i}.{c}.detools"));
            cases.push(serde_json::json!({
                "old": old, "new": new, "ours": ours, "theirs": theirs, "compression": c.name(),
            }));
            rows.push(Row {
                pair: p.name.clone(),
                compression: c,
                new_len: p.new.len(),
                ours: patch.len(),
                ours_make_s: median(&mut times),
                c_ours_us: None,
                c_theirs_us: None,
            });
        }
    }
    let py = python_side(python, &cases, runs)?;
    if let Some(h) = &harness {
        for (row, case) in rows.iter_mut().zip(&cases) {
            let p = |k: &str| PathBuf::from(case[k].as_str().unwrap_or_default());
            // esp_delta_ota compiles "none" out and the C library needs liblzma for lzma: all
            // three are measured here with the full library.
            row.c_ours_us = Some(c_apply(h, &p("old"), &p("ours"), &p("new"), runs)?);
            row.c_theirs_us = Some(c_apply(h, &p("old"), &p("theirs"), &p("new"), runs)?);
        }
    }

    println!(
        "ota delta make vs detools 0.53 create_patch (median of {runs}; Python times in-process, \
         without interpreter start-up)"
    );
    println!(
        "{:<34} {:<10} {:>9} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>9} {:>9} | {:>9} {:>9}",
        "pair",
        "compr.",
        "new B",
        "ours B",
        "detools B",
        "size",
        "ours ms",
        "py ms",
        "speed",
        "C ours",
        "C theirs",
        "py ours",
        "py theirs"
    );
    for (row, py) in rows.iter().zip(&py) {
        let fmt_us = |v: Option<f64>| v.map_or("-".to_string(), |us| format!("{:.2}", us / 1000.0));
        println!(
            "{:<34} {:<10} {:>9} | {:>9} {:>9} {:>6.3} | {:>9.1} {:>9.1} {:>5.1}x | {:>9} {:>9} | {:>9.1} {:>9.1}",
            row.pair,
            row.compression.name(),
            row.new_len,
            row.ours,
            py.size,
            row.ours as f64 / py.size as f64,
            row.ours_make_s * 1e3,
            py.make_s * 1e3,
            py.make_s / row.ours_make_s,
            fmt_us(row.c_ours_us),
            fmt_us(row.c_theirs_us),
            py.apply_ours_s * 1e3,
            py.apply_theirs_s * 1e3,
        );
    }
    println!(
        "size = ours / detools bytes; speed = detools make time / ours; C/py ours|theirs = apply \
         time in ms of our patch | detools' patch with detools' C library | Python apply_patch"
    );
    Ok(())
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// What the detools side measured for one case (sizes in bytes, times in seconds).
pub(crate) struct PyResult {
    pub size: usize,
    pub make_s: f64,
    pub apply_ours_s: f64,
    pub apply_theirs_s: f64,
}

/// Runs detools' side of every case (`old`, `new`, `ours`, `theirs`, `compression` paths and
/// name) in one Python process: `create_patch` timed, and `apply_patch` of both patches timed.
pub(crate) fn python_side(
    python: &str,
    cases: &[serde_json::Value],
    runs: usize,
) -> Result<Vec<PyResult>> {
    let mut child = Command::new(python)
        .args(["-c", PY_HARNESS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {python}"))?;
    let request = serde_json::json!({"runs": runs, "cases": cases});
    child
        .stdin
        .take()
        .context("python stdin")?
        .write_all(&serde_json::to_vec(&request)?)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{python} (detools) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let answer: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).context("detools harness output")?;
    Ok(answer
        .iter()
        .map(|a| PyResult {
            size: a["size"].as_u64().unwrap_or(0) as usize,
            make_s: a["make_s"].as_f64().unwrap_or(f64::NAN),
            apply_ours_s: a["apply_ours_s"].as_f64().unwrap_or(f64::NAN),
            apply_theirs_s: a["apply_theirs_s"].as_f64().unwrap_or(f64::NAN),
        })
        .collect())
}

/// Builds the harness against detools' C library in `c_dir` (`detools.c`, `detools.h`,
/// `heatshrink/`), with its own Makefile's optimisation (`-O2`) and liblzma.
fn build_c(c_dir: &Path, tmp: &Path) -> Result<PathBuf> {
    for f in ["detools.c", "detools.h", "heatshrink/heatshrink_decoder.c"] {
        if !c_dir.join(f).is_file() {
            bail!(
                "--detools-c {}: no {f} there (give the `c/` folder of eerimoq/detools)",
                c_dir.display()
            );
        }
    }
    let src = tmp.join("harness.c");
    std::fs::write(&src, C_HARNESS)?;
    let exe = tmp.join("detools-c-apply");
    let out = Command::new("gcc")
        .args(["-O2", "-std=gnu99", "-I"])
        .arg(c_dir)
        .arg("-I")
        .arg(c_dir.join("heatshrink"))
        .arg(&src)
        .arg(c_dir.join("detools.c"))
        .arg(c_dir.join("heatshrink/heatshrink_decoder.c"))
        .args(["-llzma", "-o"])
        .arg(&exe)
        .output()
        .context("running gcc")?;
    if !out.status.success() {
        bail!(
            "building detools' C library failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(exe)
}

fn c_apply(exe: &Path, old: &Path, patch: &Path, new: &Path, runs: usize) -> Result<f64> {
    let out = Command::new(exe)
        .arg(old)
        .arg(patch)
        .arg(new)
        .arg(runs.to_string())
        .output()?;
    if !out.status.success() {
        bail!(
            "detools C apply of {}: {}",
            patch.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("C harness output")
}

/// The pairs: real images from the vectors folder with realistic edits, and a 1 MiB
/// firmware-like pair generated here.
fn pairs(vectors: &Path) -> Result<Vec<Pair>> {
    let esptool = vectors.join("esptool");
    let read = |n: &str| {
        std::fs::read(esptool.join(n))
            .with_context(|| format!("reading {}", esptool.join(n).display()))
    };
    let blink = read("esp_idf_blink_esp32s2.bin")?;
    let mut out = app_pairs(vectors)?;

    out.push(Pair {
        name: "ESP32 bootloader -> v5.2".into(),
        old: read("bootloader_esp32.bin")?,
        new: read("bootloader_esp32_v5_2.bin")?,
    });
    out.push(Pair {
        name: "hello-world -> blink (other app)".into(),
        old: read("hello-world-signed.bin")?,
        new: blink,
    });
    let (old, new) = firmware_pair(1 << 20);
    out.push(Pair {
        name: "1 MiB firmware-like, relinked".into(),
        old,
        new,
    });
    Ok(out)
}

/// The real ESP-IDF app pairs (name, OLD, NEW): the blink app rebuilt with a new version tag,
/// and with 1 KiB of code inserted mid-segment. Also `delta-update`'s.
pub(crate) fn app_pairs(vectors: &Path) -> Result<Vec<Pair>> {
    let path = vectors.join("esptool").join("esp_idf_blink_esp32s2.bin");
    let blink = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    out.push(Pair {
        name: "blink app: new version".into(),
        old: blink.clone(),
        new: with_new_version(&blink, b"qa-test-v5.0-20220901-7-g9f3c21")?,
    });

    // 1 KiB of new code in the middle of the largest segment: everything after it shifts.
    let mut segs = segments(&blink)?;
    let largest = (0..segs.len())
        .max_by_key(|&i| segs[i].1.len())
        .unwrap_or(0);
    let data = &mut segs[largest].1;
    let mid = data.len() / 2 / 4 * 4;
    let copy = data[mid / 2..mid / 2 + 1024].to_vec();
    data.splice(mid..mid, copy);
    out.push(Pair {
        name: "blink app: 1 KiB code inserted".into(),
        old: blink.clone(),
        new: seal(&blink, &segs),
    });
    Ok(out)
}

/// `image` rebuilt with a new version tag: esp_app_desc_t.version (at most 31 bytes) and
/// elf_sha256 change, the checksum and appended SHA-256 with them.
pub(crate) fn with_new_version(image: &[u8], version: &[u8]) -> Result<Vec<u8>> {
    let mut segs = segments(image)?;
    let desc = &mut segs.first_mut().context("no segment")?.1;
    if desc.len() < 256 || le32(&desc[..4]) != 0xABCD_5432 {
        bail!("the first segment does not start with an app descriptor");
    }
    if version.len() > 31 {
        bail!("version tag longer than 31 bytes");
    }
    desc[16..48].fill(0);
    desc[16..16 + version.len()].copy_from_slice(version);
    desc[144..176].copy_from_slice(&[0x5a; 32]);
    Ok(seal(image, &segs))
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The segments of an ESP-IDF image (24-byte header, then `[load, len, data]` each).
pub(crate) fn segments(image: &[u8]) -> Result<Vec<(u32, Vec<u8>)>> {
    let mut at = 24;
    let mut out = Vec::new();
    for _ in 0..*image.get(1).context("image header")? {
        let head = image.get(at..at + 8).context("segment header")?;
        let len = le32(&head[4..]) as usize;
        let data = image.get(at + 8..at + 8 + len).context("segment data")?;
        out.push((le32(head), data.to_vec()));
        at += 8 + len;
    }
    Ok(out)
}

/// The image rebuilt from `segs` with its checksum and SHA-256 recomputed (esptool
/// `bin_image.py`: XOR seed 0xEF in the last byte of the padding to 16, then the SHA-256 of
/// everything before it when header byte 23 is 1).
pub(crate) fn seal(original: &[u8], segs: &[(u32, Vec<u8>)]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = original[..24].to_vec();
    let mut checksum = 0xEFu8;
    for (load, data) in segs {
        out.extend_from_slice(&load.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        checksum = data.iter().fold(checksum, |c, b| c ^ b);
    }
    while out.len() % 16 != 15 {
        out.push(0);
    }
    out.push(checksum);
    if original[23] == 1 {
        let d = Sha256::digest(&out);
        out.extend_from_slice(&d);
    }
    out
}

/// A deterministic firmware-like pair: "code" from a small instruction vocabulary with
/// embedded 32-bit pointers, string tables and random tables; the new one is relinked (every
/// pointer above a threshold moves by 0x40), has 300 scattered byte changes, 24 insertions
/// and deletions, and a new build id.
fn firmware_pair(len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let vocab: [[u8; 4]; 8] = [
        [0x13, 0x05, 0x00, 0x00],
        [0x93, 0x87, 0x07, 0x00],
        [0x23, 0x20, 0xa4, 0x00],
        [0x03, 0x25, 0x04, 0x00],
        [0x6f, 0x00, 0x00, 0x00],
        [0x67, 0x80, 0x00, 0x00],
        [0xb7, 0x07, 0x00, 0x42],
        [0x33, 0x05, 0xb5, 0x00],
    ];
    let mut old = Vec::with_capacity(len);
    let mut pointers = Vec::new();
    while old.len() < len * 7 / 10 {
        let r = next();
        if r % 9 == 0 {
            pointers.push(old.len());
            old.extend_from_slice(
                &(0x4200_0000u32 + (r >> 20) as u32 % 0x10_0000 / 4 * 4).to_le_bytes(),
            );
        } else {
            old.extend_from_slice(&vocab[(r % 8) as usize]);
        }
    }
    let words = [
        "wifi",
        "connect",
        "error",
        "timeout",
        "http",
        "ota",
        "partition",
        "sha256",
        "boot",
    ];
    while old.len() < len * 85 / 100 {
        let r = next();
        old.extend_from_slice(words[(r % words.len() as u64) as usize].as_bytes());
        old.push(if r % 5 == 0 { 0 } else { b' ' });
    }
    while old.len() < len {
        old.push(next() as u8);
    }
    old.truncate(len);
    let mut new = old.clone();
    for &p in &pointers {
        let v = le32(&new[p..]);
        if v > 0x4208_0000 {
            new[p..p + 4].copy_from_slice(&(v + 0x40).to_le_bytes());
        }
    }
    for _ in 0..300 {
        let at = (next() % new.len() as u64) as usize;
        new[at] = next() as u8;
    }
    for i in 0..24 {
        let at = (next() % (new.len() as u64 - 4096)) as usize;
        let n = 16 + (next() % 1024) as usize;
        match i % 3 {
            0 => drop(new.drain(at..at + n)),
            1 => {
                let fresh: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                new.splice(at..at, fresh);
            }
            _ => {
                let from = (next() % (new.len() as u64 - 2048)) as usize;
                let copy = new[from..from + n.min(2000)].to_vec();
                new.splice(at..at, copy);
            }
        }
    }
    new[64..96].copy_from_slice(b"build-id 2026-12-02 g1b2c3d4e5f6");
    (old, new)
}
