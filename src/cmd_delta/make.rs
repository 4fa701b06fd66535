//! `ota delta make OLD NEW -o PATCH`: the patch maker's front door (the work is in `ota-delta`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ota_delta::{Compression, Options, MAX_INPUT_LEN};

use crate::input::read_bounded;
use crate::output::{say, write_output};

pub const LONG_ABOUT: &str = "Make a detools sequential patch (type 0) that turns OLD into NEW.\n\n\
    Matching is bsdiff's suffix-array search. The patch is what `detools apply_patch OLD PATCH NEW` \
    and detools' C library apply; with the default heatshrink compression (window 8, lookahead 7) \
    and --esp-header it is what ESP-IDF's esp_delta_ota example accepts (the 64-byte header holds \
    magic 0xfccdde10 and the base image's appended SHA-256, checked against the running slot).\n\n\
    OLD and NEW are at most 16 MiB each. Prints the patch size and its ratio to NEW.\n\n\
    Examples:\n  \
    ota delta make app-1.0.bin app-1.1.bin -o app-1.0-to-1.1.patch\n  \
    ota delta make app-1.0.bin app-1.1.bin -o p.patch --esp-header\n  \
    ota delta make old.bin new.bin -o p.lzma.patch --compression lzma";

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    /// heatshrink 8/7: esp_delta_ota's only compression (the default).
    Heatshrink,
    /// No compression (detools' C library needs the patch length for it; esp_delta_ota refuses it).
    None,
    /// LZMA alone container, 8 MiB dictionary: smallest, for hosts and Linux devices.
    Lzma,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::Heatshrink => Compression::Heatshrink,
            CompressionArg::None => Compression::None,
            CompressionArg::Lzma => Compression::Lzma,
        }
    }
}

#[derive(Args)]
pub struct MakeArgs {
    /// The base image (what the device runs now).
    old: PathBuf,
    /// The new image.
    new: PathBuf,
    /// The patch file to write.
    #[arg(short, long, value_name = "PATCH")]
    output: PathBuf,
    /// Compression of the patch body.
    #[arg(short, long, value_enum, default_value = "heatshrink")]
    compression: CompressionArg,
    /// Put esp_delta_ota's 64-byte header in front (magic, OLD's appended SHA-256, 28 zero
    /// bytes), as Espressif's esp_delta_ota_patch_gen.py does. OLD must be an ESP-IDF image
    /// with a valid appended SHA-256.
    #[arg(long)]
    esp_header: bool,
}

pub fn run(a: MakeArgs) -> Result<ExitCode> {
    let limit = MAX_INPUT_LEN as u64;
    let old = read_bounded(&a.old, limit, "old image")?;
    let new = read_bounded(&a.new, limit, "new image")?;
    for (input, what) in [(&a.old, "OLD"), (&a.new, "NEW")] {
        if same_file(input, &a.output) {
            bail!(
                "-o {} is {what} itself: refusing to overwrite an input",
                a.output.display()
            );
        }
    }
    let options = Options {
        compression: a.compression.into(),
        esp_header: a.esp_header,
    };
    if a.esp_header && options.compression != Compression::Heatshrink {
        eprintln!(
            "warning: --esp-header with --compression {}: esp_delta_ota applies heatshrink patches only",
            options.compression
        );
    }
    let started = Instant::now();
    let patch = ota_delta::make(&old, &new, &options).with_context(|| {
        format!(
            "making a patch from {} to {}",
            a.old.display(),
            a.new.display()
        )
    })?;
    let elapsed = started.elapsed();
    let wrote = write_output(&a.output, &patch, "patch")?;
    let ratio = if new.is_empty() {
        0.0
    } else {
        patch.len() as f64 * 100.0 / new.len() as f64
    };
    say(
        wrote,
        format_args!(
            "Wrote {}: {} bytes, {:.1} % of the new image ({} bytes; base {} bytes), {}{}, made in {:.2} s",
            a.output.display(),
            patch.len(),
            ratio,
            new.len(),
            old.len(),
            options.compression,
            if a.esp_header { " + esp_delta_ota header" } else { "" },
            elapsed.as_secs_f64()
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
