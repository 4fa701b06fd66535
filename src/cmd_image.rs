//! `ota image make|info`: build a valid ESP-IDF app image; read one like `esptool image-info`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use ota_core::image::{self, ImageSpec, ImageSummary};
use ota_core::Chip;
use serde_json::{json, Value};

use crate::cmd_device::hex;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Make a valid app image: header, a DROM segment starting with the app descriptor, more
    /// segments up to the requested size, checksum and appended SHA-256.
    Make {
        #[arg(long, default_value = "esp32")]
        chip: String,
        /// Project name in the app descriptor.
        #[arg(long)]
        project: String,
        /// App version in the app descriptor (PROJECT_VER).
        #[arg(long)]
        version: String,
        /// Anti-rollback secure_version in the app descriptor.
        #[arg(long, default_value_t = 0)]
        secure_version: u32,
        /// Approximate image size in bytes (default: small).
        #[arg(long)]
        size: Option<String>,
        /// Number of segments (1..=16).
        #[arg(long, default_value_t = 4)]
        segments: u8,
        /// Leave out the appended SHA-256.
        #[arg(long)]
        no_hash: bool,
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
    },
    /// Show an image's header, segments, checksum, hash and app descriptor (like esptool image-info).
    Info {
        image: PathBuf,
        /// Print JSON (keys documented in README).
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ImageCmd) -> Result<ExitCode> {
    match cmd {
        ImageCmd::Make {
            chip,
            project,
            version,
            secure_version,
            size,
            segments,
            no_hash,
            output,
        } => {
            let chip = Chip::from_name(&chip).ok_or_else(|| anyhow!("unknown chip '{}'", chip))?;
            let mut spec = ImageSpec::new(chip, &project, &version);
            spec.secure_version = secure_version;
            spec.segments = segments;
            spec.hash_appended = !no_hash;
            if let Some(s) = size {
                spec.total_size = Some(crate::glue::parse_size(&s)?);
            }
            let mut out = Vec::new();
            image::build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b))
                .map_err(|e| anyhow!("{}", e))?;
            std::fs::write(&output, &out)
                .with_context(|| format!("writing {}", output.display()))?;
            println!(
                "wrote {} ({} bytes, {} {} for {})",
                output.display(),
                out.len(),
                project,
                version,
                chip.name()
            );
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Info {
            image: path,
            json: as_json,
        } => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let s = read_image(&bytes).with_context(|| format!("{}", path.display()))?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&summary_json(&s))?);
            } else {
                print_info(&s, bytes.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Read a whole image; a bad checksum or hash is reported, not an error.
pub fn read_image(bytes: &[u8]) -> Result<ImageSummary> {
    let mut v = image::ImageVerifier::new();
    v.feed(bytes).map_err(|e| anyhow!("{}", e))?;
    // A complete image with a bad checksum or hash is still reported (as invalid).
    match (v.is_complete(), v.summary()) {
        (true, Some(s)) => Ok(s),
        _ => v.finish().map_err(|e| anyhow!("{}", e)),
    }
}

pub fn summary_json(s: &ImageSummary) -> Value {
    let chip = s.chip;
    let segs: Vec<Value> = s.segments[..s.segment_count]
        .iter()
        .map(|g| json!({"load_addr": g.load_addr, "length": g.data_len, "file_offset": g.file_offset}))
        .collect();
    json!({
        "chip": chip.map(|c| c.name()),
        "chip_id": s.header.chip_id,
        "entry_addr": s.header.entry_addr,
        "flash_mode": s.header.flash_mode_name(),
        "flash_size": s.header.flash_size_name(),
        "flash_freq": chip.and_then(|c| s.header.flash_freq_name(c)),
        "segments": segs,
        "checksum": s.checksum_read,
        "checksum_valid": s.checksum_valid(),
        "hash_appended": s.header.hash_appended == 1,
        "hash_valid": s.hash_valid(),
        "app": s.app_desc.as_ref().map(|d| json!({
            "project_name": d.project_name_str(),
            "version": d.version_str(),
            "secure_version": d.secure_version,
            "time": d.time_str(),
            "date": d.date_str(),
            "idf_ver": d.idf_ver_str(),
            "elf_sha256": hex(&d.app_elf_sha256),
        })),
    })
}

fn print_info(s: &ImageSummary, size: usize) {
    let name = s.chip.map(|c| c.display_name()).unwrap_or("unknown chip");
    println!("Image size: {} bytes", size);
    println!("Detected image type: {}", name);
    println!();
    println!("{} Image Header", name);
    println!("{}", "=".repeat(name.len() + 13));
    println!("Entry point: {:#8x}", s.header.entry_addr);
    println!("Segments: {}", s.segment_count);
    println!(
        "Flash size: {}",
        s.header.flash_size_name().unwrap_or("unknown")
    );
    if let Some(c) = s.chip {
        println!(
            "Flash freq: {}",
            s.header.flash_freq_name(c).unwrap_or("unknown")
        );
    }
    println!(
        "Flash mode: {}",
        s.header.flash_mode_name().unwrap_or("unknown")
    );
    println!("Chip ID: {} ({})", s.header.chip_id, name);
    println!();
    println!("Segments Information");
    println!("====================");
    println!("Segment   Length   Load addr   File offs");
    println!("-------  -------  ----------  ----------");
    for (i, g) in s.segments[..s.segment_count].iter().enumerate() {
        println!(
            "{:7}  {:#07x}  {:#010x}  {:#010x}",
            i, g.data_len, g.load_addr, g.file_offset
        );
    }
    println!();
    println!("{} Image Footer", name);
    println!("{}", "=".repeat(name.len() + 13));
    if s.checksum_valid() {
        println!("Checksum: {:#04x} (valid)", s.checksum_read);
    } else {
        println!(
            "Checksum: {:#04x} (invalid - calculated {:#04x})",
            s.checksum_read, s.checksum_calc
        );
    }
    if let Some(h) = s.hash_calc {
        println!(
            "Validation hash: {} ({})",
            hex(&h),
            if s.hash_valid() == Some(true) {
                "valid"
            } else {
                "invalid"
            }
        );
    }
    if let Some(d) = &s.app_desc {
        println!();
        println!("Application Information");
        println!("=======================");
        println!("Project name: {}", d.project_name_str());
        println!("App version: {}", d.version_str());
        println!("Compile time: {} {}", d.date_str(), d.time_str());
        println!("ELF file SHA256: {}", hex(&d.app_elf_sha256));
        println!("ESP-IDF: {}", d.idf_ver_str());
        println!("Secure version: {}", d.secure_version);
    }
}
