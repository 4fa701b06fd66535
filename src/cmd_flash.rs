//! `ota flash merge|read`: assemble a flash image from files at addresses, like
//! `esptool merge-bin` (0xFF padding, sector-overlap rule of `ota_core::layout`), and copy a
//! region of a flash image out, like `esptool read-flash`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use ota_core::layout::{self, LayoutError, Piece};
use serde_json::json;

use crate::flashfile::FlashFile;
use crate::FlashArg;

#[derive(Subcommand)]
pub enum FlashCmd {
    /// Merge files into one flash image, like `esptool merge-bin`: each file at its address,
    /// 0xFF in between; files sharing a 4 KiB sector are refused.
    Merge {
        /// Output flash image.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Pad the image with 0xFF to this flash size (e.g. 4MB); esptool's --pad-to-size.
        #[arg(long, visible_alias = "pad-to-size", value_name = "SIZE")]
        fill_flash_size: Option<String>,
        /// Pairs of ADDRESS FILE (address in hex `0x1000` or decimal).
        #[arg(value_name = "ADDR FILE", num_args = 2.., required = true)]
        pairs: Vec<String>,
        /// Print JSON: `size` and `files` (`address`, `file`, `length`).
        #[arg(long)]
        json: bool,
    },
    /// Copy SIZE bytes at ADDR of a flash image to a file, like `esptool read-flash`.
    Read {
        #[command(flatten)]
        flash: FlashArg,
        /// Start address (hex `0x8000` or decimal).
        addr: String,
        /// Number of bytes (hex, decimal, or with K/M suffix).
        size: String,
        /// Output file.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
    },
}

pub fn run(cmd: FlashCmd) -> Result<ExitCode> {
    match cmd {
        FlashCmd::Merge {
            output,
            fill_flash_size,
            pairs,
            json: as_json,
        } => merge(&output, fill_flash_size.as_deref(), &pairs, as_json),
        FlashCmd::Read {
            flash,
            addr,
            size,
            output,
        } => {
            let addr = parse_addr(&addr)?;
            let size = crate::glue::parse_size(&size)?;
            let mut ff = FlashFile::open(&flash.flash)?;
            let what = format!("{} bytes at 0x{:x}", size, addr);
            let data = ff.read(addr, size, &what)?;
            let wrote = crate::output::write_output(&output, &data, "flash region")?;
            crate::output::say(
                wrote,
                format_args!(
                    "read {} bytes at 0x{:x} of {} into {}",
                    size,
                    addr,
                    ff.name(),
                    output.display()
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An address: `0x…` hex, `0o…`, `0b…` or decimal (esptool's `arg_auto_int`).
pub fn parse_addr(s: &str) -> Result<u32> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else if let Some(o) = lower.strip_prefix("0o") {
        u64::from_str_radix(o, 8)
    } else if let Some(b) = lower.strip_prefix("0b") {
        u64::from_str_radix(b, 2)
    } else {
        lower.parse::<u64>()
    };
    match v {
        Ok(v) if v <= u64::from(u32::MAX) => Ok(v as u32),
        _ => bail!("'{}' is not a flash address (examples: 0x10000, 65536)", s),
    }
}

fn merge(
    output: &PathBuf,
    fill: Option<&str>,
    pairs: &[String],
    as_json: bool,
) -> Result<ExitCode> {
    if !pairs.len().is_multiple_of(2) {
        bail!(
            "give pairs of ADDRESS FILE; '{}' has no address or no file",
            pairs.last().map(String::as_str).unwrap_or("")
        );
    }
    let mut inputs = Vec::new();
    for pair in pairs.chunks(2) {
        let addr = parse_addr(&pair[0])?;
        let path = PathBuf::from(&pair[1]);
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let len = u32::try_from(data.len())
            .map_err(|_| anyhow!("{} is larger than 4 GiB", path.display()))?;
        inputs.push((addr, path, data, len));
    }
    let pieces: Vec<Piece> = inputs
        .iter()
        .map(|(addr, _, _, len)| Piece {
            addr: *addr,
            len: *len,
        })
        .collect();
    let end = layout::check_pieces(&pieces).map_err(|e| match e {
        LayoutError::Overlap { first, second, .. } => anyhow!(
            "{} at 0x{:x} overlaps {} at 0x{:x}: {}",
            inputs[second].1.display(),
            inputs[second].0,
            inputs[first].1.display(),
            inputs[first].0,
            e
        ),
        LayoutError::BeyondAddressSpace { index, .. } => {
            anyhow!("{}: {}", inputs[index].1.display(), e)
        }
        LayoutError::TooLarge { .. } => anyhow!("{}", e),
    })?;
    let size = match fill {
        Some(s) => {
            let size = crate::glue::parse_size(s)?;
            layout::check_fill(end, size).map_err(|e| anyhow!("--fill-flash-size {}: {}", s, e))?;
            size
        }
        None => end,
    };
    // esptool writes from the lowest address: the output starts at flash address 0 (its
    // default --target-offset), padded with 0xFF.
    let mut image = vec![0xFFu8; size as usize];
    for (addr, _, data, _) in &inputs {
        let start = *addr as usize;
        image[start..start + data.len()].copy_from_slice(data);
    }
    std::fs::write(output, &image).with_context(|| format!("writing {}", output.display()))?;
    if as_json {
        let files: Vec<_> = inputs
            .iter()
            .map(|(a, p, _, l)| json!({"address": a, "file": p.display().to_string(), "length": l}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"output": output.display().to_string(), "size": size, "files": files})
            )?
        );
    } else {
        for (a, p, _, l) in &inputs {
            println!("0x{:08x}  {:>8} bytes  {}", a, l, p.display());
        }
        println!("wrote {} (0x{:x} bytes)", output.display(), size);
    }
    Ok(ExitCode::SUCCESS)
}
