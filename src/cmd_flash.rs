//! `ota flash merge|read`: assemble a flash image from files at addresses, like
//! `esptool merge-bin` (0xFF padding, sector-overlap rule of `ota_core::layout`), and copy a
//! region of a flash image out, like `esptool read-flash`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use ota_core::layout::{self, LayoutError, Piece};
use ota_core::Chip;
use serde_json::json;

use crate::flashfile::FlashFile;
use crate::FlashArg;

#[derive(Subcommand)]
pub enum FlashCmd {
    /// Merge files into one flash image, like `esptool merge-bin`: each file at its address,
    /// 0xFF in between; files sharing a 4 KiB sector are refused. `@FILE` arguments are read
    /// from FILE (whitespace separated, one or more per line, as esptool reads them), so
    /// `ota flash merge -o merged.bin @flash_args` works in an `idf.py build` folder.
    Merge {
        /// Output flash image.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Pad the image with 0xFF to this flash size (e.g. 4MB); esptool's --pad-to-size.
        #[arg(long, visible_alias = "pad-to-size", value_name = "SIZE")]
        fill_flash_size: Option<String>,
        /// Chip whose bootloader header --flash-mode/--flash-freq/--flash-size rewrite
        /// (esptool's --chip). Default: the chip named by the image at its bootloader offset.
        #[arg(long)]
        chip: Option<String>,
        /// Rewrite the bootloader header's SPI mode: qio, qout, dio, dout, or keep (default).
        #[arg(
            long,
            alias = "flash_mode",
            value_name = "MODE",
            default_value = "keep"
        )]
        flash_mode: String,
        /// Rewrite the bootloader header's flash frequency (the chip's names: 80m, 40m, ...)
        /// or keep (default).
        #[arg(
            long,
            alias = "flash_freq",
            value_name = "FREQ",
            default_value = "keep"
        )]
        flash_freq: String,
        /// Rewrite the bootloader header's flash size (1MB .. 128MB) or keep (default).
        #[arg(
            long,
            alias = "flash_size",
            value_name = "SIZE",
            default_value = "keep"
        )]
        flash_size: String,
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
            chip,
            flash_mode,
            flash_freq,
            flash_size,
            pairs,
            json: as_json,
        } => merge(
            &output,
            fill_flash_size.as_deref(),
            &FlashParams {
                chip,
                mode: flash_mode,
                freq: flash_freq,
                size: flash_size,
            },
            &pairs,
            as_json,
        ),
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

/// Largest `@FILE` argument file read (ESP-IDF's `flash_args` is a few hundred bytes).
const MAX_ARGFILE: u64 = 1 << 20;
/// Largest bootloader image whose header is rewritten in memory (the whole region below the
/// partition table is 32 KiB; esptool has no limit, an image is below 16 MiB).
const MAX_PATCHED_IMAGE: u64 = 16 << 20;
/// Chunk size of the streamed output (0xFF fill and file copies).
const CHUNK: usize = 64 * 1024;

/// esptool's `@FILE` expansion (`expand_file_arguments`, esptool `esptool/__init__.py`) for
/// `ota flash merge`: an argument `@FILE` is replaced by the words of FILE, each line split as a
/// POSIX shell splits words (quotes, backslashes); not recursive. Paths inside are used as
/// given, i.e. relative to the current directory, as with esptool. Other commands' arguments
/// are left alone.
pub fn expand_argument_files(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let is_merge =
        args.get(1).is_some_and(|a| a == "flash") && args.get(2).is_some_and(|a| a == "merge");
    if !is_merge {
        return Ok(args);
    }
    let mut out = Vec::with_capacity(args.len());
    for (i, a) in args.into_iter().enumerate() {
        let path = match a.to_str().and_then(|s| s.strip_prefix('@')) {
            Some(p) if i > 2 => PathBuf::from(p),
            _ => {
                out.push(a);
                continue;
            }
        };
        let text = read_argument_file(&path)?;
        for (n, line) in text.lines().enumerate() {
            let words =
                split_words(line).map_err(|e| anyhow!("{}:{}: {}", path.display(), n + 1, e))?;
            out.extend(words.into_iter().map(OsString::from));
        }
    }
    Ok(out)
}

fn read_argument_file(path: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("argument file {}", path.display()))?;
    if !meta.is_file() {
        bail!("argument file {} is not a regular file", path.display());
    }
    if meta.len() > MAX_ARGFILE {
        bail!(
            "argument file {} is {} bytes, more than the {} bytes an argument file may have",
            path.display(),
            meta.len(),
            MAX_ARGFILE
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("argument file {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "argument file {} is not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Split one line into words as Python's `shlex.split` does (POSIX mode, no comments).
fn split_words(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("no closing quotation".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("no escaped character".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// esptool merge-bin's `--chip`, `--flash-mode`, `--flash-freq`, `--flash-size` (`keep` = as is).
pub struct FlashParams {
    pub chip: Option<String>,
    pub mode: String,
    pub freq: String,
    pub size: String,
}

impl FlashParams {
    fn all_keep(&self) -> bool {
        [&self.mode, &self.freq, &self.size]
            .iter()
            .all(|v| v.eq_ignore_ascii_case("keep"))
    }
}

/// The header values `--flash-mode/--flash-freq/--flash-size` ask for on `chip` (None = keep).
fn flash_param_codes(chip: Chip, p: &FlashParams) -> Result<(Option<u8>, Option<u8>, Option<u8>)> {
    let keep = |v: &str| v.eq_ignore_ascii_case("keep");
    let code = |opt: &str, v: &str, parse: &dyn Fn(&str) -> Result<u8>| -> Result<Option<u8>> {
        if keep(v) {
            Ok(None)
        } else {
            parse(v)
                .map(Some)
                .map_err(|e| anyhow!("--{}: {} (or keep)", opt, e))
        }
    };
    let mode = code("flash-mode", &p.mode, &crate::glue::parse_flash_mode)?;
    let freq = code("flash-freq", &p.freq, &|v| {
        crate::glue::parse_flash_freq(chip, v)
    })?;
    let size = code("flash-size", &p.size, &crate::glue::parse_flash_size)?;
    Ok((mode, size, freq))
}

/// One input of a merge.
struct Input {
    addr: u32,
    path: PathBuf,
    len: u32,
    /// The bytes to write instead of the file's (a bootloader whose header was rewritten).
    patched: Option<Vec<u8>>,
}

/// The chip whose bootloader sits at `addr` in `file`, from its header (chip id whose
/// bootloader offset is `addr`).
fn chip_at(addr: u32, file: &Path) -> Option<Chip> {
    let mut head = [0u8; ota_core::image::HEADER_SIZE];
    let mut f = std::fs::File::open(file).ok()?;
    f.read_exact(&mut head).ok()?;
    let h = ota_core::image::ImageHeader::parse(&head).ok()?;
    h.chip().filter(|c| c.bootloader_offset() == addr)
}

fn merge(
    output: &Path,
    fill: Option<&str>,
    params: &FlashParams,
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
        let meta =
            std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", path.display());
        }
        let len = u32::try_from(meta.len())
            .map_err(|_| anyhow!("{} is larger than 4 GiB", path.display()))?;
        inputs.push(Input {
            addr,
            path,
            len,
            patched: None,
        });
    }
    // esptool sorts by address (merge_bin); the overlap rule is checked in the given order.
    let pieces: Vec<Piece> = inputs
        .iter()
        .map(|i| Piece {
            addr: i.addr,
            len: i.len,
        })
        .collect();
    let end = layout::check_pieces(&pieces).map_err(|e| match e {
        LayoutError::Overlap { first, second, .. } => anyhow!(
            "{} at 0x{:x} overlaps {} at 0x{:x}: {}",
            inputs[second].path.display(),
            inputs[second].addr,
            inputs[first].path.display(),
            inputs[first].addr,
            e
        ),
        LayoutError::BeyondAddressSpace { index, .. } => {
            anyhow!("{}: {}", inputs[index].path.display(), e)
        }
        _ => anyhow!("{}", e),
    })?;
    inputs.sort_by_key(|i| i.addr);
    let size = match fill {
        Some(s) => {
            let size = crate::glue::parse_size(s)?;
            layout::check_fill(end, size).map_err(|e| anyhow!("--fill-flash-size {}: {}", s, e))?;
            size
        }
        None => end,
    };
    if !params.all_keep() {
        let chip = match &params.chip {
            Some(name) => {
                Some(Chip::from_name(name).ok_or_else(|| anyhow!("unknown chip '{}'", name))?)
            }
            None => inputs.iter().find_map(|i| chip_at(i.addr, &i.path)),
        };
        let Some(chip) = chip else {
            bail!(
                "--flash-mode/--flash-freq/--flash-size rewrite the bootloader's header, but no \
                 file is a bootloader image at its chip's bootloader offset: give --chip"
            );
        };
        let (mode, size, freq) = flash_param_codes(chip, params)?;
        for i in inputs
            .iter_mut()
            .filter(|i| i.addr == chip.bootloader_offset())
        {
            if u64::from(i.len) > MAX_PATCHED_IMAGE {
                eprintln!(
                    "Warning: {} at 0x{:x} is larger than an image can be, so not changing any flash settings.",
                    i.path.display(),
                    i.addr
                );
                continue;
            }
            let bytes =
                std::fs::read(&i.path).with_context(|| format!("reading {}", i.path.display()))?;
            if bytes.len() as u64 != u64::from(i.len) {
                bail!("{} changed size while being merged", i.path.display());
            }
            let mut bytes = bytes;
            if bytes.first() != Some(&ota_core::image::IMAGE_MAGIC) {
                eprintln!(
                    "Warning: Image file at 0x{:x} doesn't look like an image file, so not changing any flash settings.",
                    i.addr
                );
            } else if ota_core::image::set_image_flash_params(&mut bytes, chip, mode, size, freq) {
                i.patched = Some(bytes);
            } else {
                eprintln!(
                    "Warning: Image file at 0x{:x} is not a valid {} image, so not changing any flash settings.",
                    i.addr,
                    chip.display_name()
                );
            }
        }
    }
    write_merged(output, &inputs, size)?;
    if as_json {
        let files: Vec<_> = inputs
            .iter()
            .map(|i| json!({"address": i.addr, "file": i.path.display().to_string(), "length": i.len}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"output": output.display().to_string(), "size": size, "files": files})
            )?
        );
    } else {
        for i in &inputs {
            println!("0x{:08x}  {:>8} bytes  {}", i.addr, i.len, i.path.display());
        }
        println!("wrote {} (0x{:x} bytes)", output.display(), size);
    }
    Ok(ExitCode::SUCCESS)
}

/// Stream the merged image (from flash address 0, esptool's default --target-offset) into
/// `output` with bounded memory: 0xFF fill and file copies in [`CHUNK`]s. A regular (or new)
/// output is written to a temporary file beside it and renamed over it at the end, so an
/// output that is also an input is read whole before it is replaced, and a failure leaves the
/// old file; a special file (a FIFO, a device) is written in place, never replaced.
fn write_merged(output: &Path, inputs: &[Input], size: u32) -> Result<()> {
    let special = std::fs::metadata(output).is_ok_and(|m| !m.is_file());
    let tmp = if special {
        output.to_path_buf()
    } else {
        let mut name = output.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp{}", std::process::id()));
        output.with_file_name(name)
    };
    let result = (|| -> Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(!special)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        let mut w = std::io::BufWriter::with_capacity(CHUNK, f);
        let ff = [0xFFu8; CHUNK];
        let mut pos: u64 = 0;
        let pad_to =
            |w: &mut std::io::BufWriter<std::fs::File>, pos: &mut u64, to: u64| -> Result<()> {
                while *pos < to {
                    let n = (to - *pos).min(CHUNK as u64) as usize;
                    w.write_all(&ff[..n])
                        .with_context(|| format!("writing {}", output.display()))?;
                    *pos += n as u64;
                }
                Ok(())
            };
        let mut buf = vec![0u8; CHUNK];
        for i in inputs {
            pad_to(&mut w, &mut pos, u64::from(i.addr))?;
            if let Some(p) = &i.patched {
                w.write_all(p)
                    .with_context(|| format!("writing {}", output.display()))?;
                pos += p.len() as u64;
                continue;
            }
            let mut src = std::fs::File::open(&i.path)
                .with_context(|| format!("reading {}", i.path.display()))?;
            let mut left = u64::from(i.len);
            while left > 0 {
                let want = left.min(CHUNK as u64) as usize;
                let n = src
                    .read(&mut buf[..want])
                    .with_context(|| format!("reading {}", i.path.display()))?;
                if n == 0 {
                    bail!("{} got shorter while being merged", i.path.display());
                }
                w.write_all(&buf[..n])
                    .with_context(|| format!("writing {}", output.display()))?;
                left -= n as u64;
                pos += n as u64;
            }
        }
        pad_to(&mut w, &mut pos, u64::from(size))?;
        w.flush()
            .with_context(|| format!("writing {}", output.display()))?;
        Ok(())
    })();
    if special {
        return result;
    }
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, output).with_context(|| format!("replacing {}", output.display()))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
