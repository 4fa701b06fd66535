//! `ota image make|info|sign|verify-signature|key-digest`: build a valid ESP-IDF app image;
//! read one like `esptool image-info`; Secure Boot v2 signing and verification (`crate::cmd_sign`).

use ota_core::image::Hex;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use ota_core::image::{self, ImageHeader, ImageSpec, ImageSummary};
use ota_core::Chip;
use serde_json::{json, Value};

// One value per command line: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ImageCmd {
    /// Make a valid app image: header, a DROM segment starting with the app descriptor, more
    /// segments up to the requested size, checksum and appended SHA-256.
    Make {
        /// Chip (esptool's name: esp32, esp32s2, esp32c3, esp32s3, esp32c6, ...).
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
        /// SPI flash mode in the header: qio, qout, dio, dout (esptool --flash-mode).
        #[arg(long, default_value = "dio")]
        flash_mode: String,
        /// Flash size in the header: 1MB .. 128MB (esptool --flash-size).
        #[arg(long, default_value = "4MB")]
        flash_size: String,
        /// Flash frequency in the header, as esptool names it for the chip (e.g. 40m, 80m;
        /// esptool --flash-freq). Default: the chip's code 0 (40m on most chips).
        #[arg(long)]
        flash_freq: Option<String>,
        /// Minimum chip revision in the header, major*100+minor (esptool --min-rev-full).
        #[arg(long, default_value_t = 0)]
        min_rev_full: u16,
        /// Maximum chip revision in the header, major*100+minor (esptool --max-rev-full;
        /// 65535 = not set).
        #[arg(long, default_value_t = 65535)]
        max_rev_full: u16,
        /// MMU page size the flash-mapped segments are laid out for: 8KB, 16KB, 32KB or 64KB on
        /// chips with a configurable page (ESP32-C2, C6, C61, H2, H21, H4), 64KB elsewhere.
        /// Default: what ESP-IDF's Kconfig picks for the chip and --flash-size (16KB for 1MB,
        /// 32KB for 2MB, else 64KB). Recorded in the app descriptor, as ESP-IDF v5.4+ does.
        #[arg(long, value_name = "SIZE")]
        mmu_page_size: Option<String>,
        /// Leave the app descriptor's mmu_page_size at 0, as ESP-IDF before v5.4 does.
        #[arg(long)]
        no_desc_mmu_page_size: bool,
        /// Output image file.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
    },
    /// Convert an ELF into an app image, byte for byte as `esptool --chip C elf2image` does
    /// (same options, same defaults).
    FromElf(FromElfArgs),
    /// Show an image's header, segments, checksum, hash and app descriptor (like esptool image-info).
    Info {
        /// App or bootloader image file (esptool elf2image output, not an ELF).
        image: PathBuf,
        /// Print JSON (keys documented in README).
        #[arg(long)]
        json: bool,
    },
    /// Sign an image for Secure Boot v2 (like `espsecure sign-data --version 2`): pad to 4096
    /// bytes with 0xFF and append a signature sector with one block per key.
    Sign {
        /// Private key (PEM: RSA-3072, ECDSA P-256 or P-384, as espsecure generate-signing-key
        /// writes it). Repeat for up to 3 blocks.
        #[arg(long, value_name = "KEY.pem")]
        keyfile: Vec<PathBuf>,
        /// Keep the valid blocks of the input's signature sector and add to them.
        #[arg(long)]
        append_signatures: bool,
        /// Public key of a signature made elsewhere (with --signature; repeatable, in pairs).
        #[arg(long, value_name = "PUB.pem")]
        pub_key: Vec<PathBuf>,
        /// A signature made elsewhere over the (4096-aligned) input: RSA raw 384 bytes
        /// big-endian, ECDSA DER. Verified against --pub-key before use.
        #[arg(long, value_name = "SIG.bin")]
        signature: Vec<PathBuf>,
        /// Signed image to write (may be the input).
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Image (or any data) to sign.
        input: PathBuf,
    },
    /// Verify a Secure Boot v2 signed image against a key or a key digest (like `espsecure
    /// verify-signature --version 2`); non-zero exit with each block's reason on failure.
    VerifySignature {
        /// Public or private key (PEM).
        #[arg(
            long,
            value_name = "KEY.pem",
            conflicts_with = "digest",
            required_unless_present = "digest"
        )]
        keyfile: Option<PathBuf>,
        /// A 32-byte public-key digest (as `ota image key-digest -o` / eFuse hold it).
        #[arg(long, value_name = "DIGEST.bin")]
        digest: Option<PathBuf>,
        /// Signed image.
        image: PathBuf,
    },
    /// The Secure Boot v2 public-key digest of a key, as eFuse holds it (like `espsecure
    /// digest-sbv2-public-key`): hex on stdout, raw 32 bytes to -o.
    KeyDigest {
        /// Public or private key (PEM).
        #[arg(long, value_name = "KEY.pem")]
        keyfile: PathBuf,
        /// File for the raw 32-byte digest.
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
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
            flash_mode,
            flash_size,
            flash_freq,
            min_rev_full,
            max_rev_full,
            mmu_page_size,
            no_desc_mmu_page_size,
            output,
        } => {
            let chip = Chip::from_name(&chip).ok_or_else(|| anyhow!("unknown chip '{}'", chip))?;
            let mut spec = ImageSpec::new(chip, &project, &version);
            spec.secure_version = secure_version;
            spec.segments = segments;
            spec.hash_appended = !no_hash;
            spec.flash_mode = crate::glue::parse_flash_mode(&flash_mode)?;
            spec.flash_size_code = crate::glue::parse_flash_size(&flash_size)?;
            if let Some(f) = flash_freq {
                spec.flash_freq_code = crate::glue::parse_flash_freq(chip, &f)?;
            }
            spec.mmu_page_size = match &mmu_page_size {
                Some(p) => {
                    let page = crate::glue::parse_size(p)?;
                    if !chip.mmu_page_size_supported(page) {
                        bail!(
                            "--mmu-page-size {}: {} supports {}",
                            p,
                            chip.display_name(),
                            page_sizes(chip)
                        );
                    }
                    page
                }
                None => chip.default_mmu_page_size(
                    image::flash_size_bytes(spec.flash_size_code).unwrap_or(u32::MAX),
                ),
            };
            spec.record_mmu_page_size = !no_desc_mmu_page_size;
            spec.min_chip_rev_full = min_rev_full;
            spec.max_chip_rev_full = max_rev_full;
            if let Some(s) = size {
                spec.total_size = Some(crate::glue::parse_size(&s)?);
            }
            let mut out = Vec::new();
            image::build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b))
                .map_err(|e| anyhow!("{}", e))?;
            let wrote = crate::output::write_output(&output, &out, "app image")?;
            crate::output::say(
                wrote,
                format_args!(
                    "wrote {} ({} bytes, {} {} for {})",
                    output.display(),
                    out.len(),
                    project,
                    version,
                    chip.name()
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::FromElf(args) => from_elf(args),
        ImageCmd::Sign {
            keyfile,
            append_signatures,
            pub_key,
            signature,
            output,
            input,
        } => crate::cmd_sign::sign(
            &keyfile,
            append_signatures,
            &pub_key,
            &signature,
            &output,
            &input,
        ),
        ImageCmd::VerifySignature {
            keyfile,
            digest,
            image,
        } => crate::cmd_sign::verify(keyfile.as_deref(), digest.as_deref(), &image),
        ImageCmd::KeyDigest { keyfile, output } => {
            crate::cmd_sign::key_digest(&keyfile, output.as_deref())
        }
        ImageCmd::Info {
            image: path,
            json: as_json,
        } => {
            let bytes = crate::input::read_bounded(&path, crate::input::FLASH_LIMIT, "image")?;
            crate::glue::refuse_elf(&bytes, &path, "an app or bootloader image")?;
            let s = read_image(&bytes).with_context(|| format!("{}", path.display()))?;
            let sig = crate::cmd_sign::signature_info(&bytes, s.image_len, s.chip);
            if as_json {
                let mut v = summary_json(&s);
                v["signatures"] = sig.json();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_info(&s, bytes.len());
                sig.print();
                // esptool's report has no line for this: a note on stderr, never a refusal.
                if let Some(e) = &s.segment_length_error {
                    eprintln!("note: {e}: the bootloader refuses this image");
                }
                if s.mmu_misaligned.is_none() && s.mmu_page != ota_core::chip::DEFAULT_MMU_PAGE_SIZE
                {
                    eprintln!(
                        "note: flash-mapped segments checked against {} KB MMU pages (from {})",
                        s.mmu_page / 1024,
                        s.mmu_page_source.describe()
                    );
                }
                if let Some(e) = &s.mmu_misaligned {
                    eprintln!(
                        "note: {} (MMU page size {} KB assumed, from {}): a bootloader built \
                         with that page size refuses this image",
                        e,
                        s.mmu_page / 1024,
                        s.mmu_page_source.describe()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The MMU page sizes of a chip, for messages (`8KB, 16KB, 32KB, 64KB`).
fn page_sizes(chip: Chip) -> String {
    let sizes = chip.mmu_page_sizes_log2();
    if sizes.is_empty() {
        return "only 64KB".to_string();
    }
    sizes
        .iter()
        .map(|l| format!("{}KB", (1u32 << l) / 1024))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Read a whole image; a bad checksum or hash is reported, not an error.
///
/// The MMU page alignment of flash-mapped segments is checked with the page size the image
/// itself implies (its descriptor's `mmu_page_size`, else Kconfig's default for its chip and
/// header flash size) and reported in the summary, never refused: esptool's image-info does
/// not check it, and the page size that matters is the bootloader's.
pub fn read_image(bytes: &[u8]) -> Result<ImageSummary> {
    let mut v = image::ImageVerifier::new();
    v.set_strict(false);
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
        .map(|g| {
            let types: Vec<&str> = chip
                .map(|c| {
                    c.memory_types(g.load_addr)
                        .iter()
                        .map(|t| t.name())
                        .collect()
                })
                .unwrap_or_default();
            json!({"load_addr": g.load_addr, "length": g.data_len, "file_offset": g.file_offset,
                   "memory_types": types})
        })
        .collect();
    let h = &s.header;
    json!({
        "chip": chip.map(|c| c.name()),
        "chip_id": s.header.chip_id,
        "entry_addr": s.header.entry_addr,
        "flash_mode": s.header.flash_mode_name(),
        "flash_size": s.header.flash_size_name(),
        "flash_freq": chip.and_then(|c| s.header.flash_freq_name(c)),
        "wp_pin": h.wp_pin,
        "spi_pin_drv": pin_drv(h),
        "min_chip_rev": h.min_chip_rev,
        "min_chip_rev_full": h.min_chip_rev_full,
        "max_chip_rev_full": h.max_chip_rev_full,
        "segments": segs,
        "checksum": s.checksum_read,
        "checksum_valid": s.checksum_valid(),
        "hash_appended": s.header.hash_appended == 1,
        "hash_valid": s.hash_valid(),
        "app": s.app_desc.as_ref().map(app_json),
        "mmu_page_size_assumed": s.mmu_page,
        "mmu_page_size_source": s.mmu_page_source.key(),
        "mmu_aligned": s.mmu_misaligned.is_none(),
        "mmu_alignment_error": s.mmu_misaligned.as_ref().map(|e| e.to_string()),
        "segment_length_error": s.segment_length_error.as_ref().map(|e| e.to_string()),
        "bootloader": s.bootloader_desc.as_ref().filter(|_| s.app_desc.is_none()).map(|b| json!({
            "version": b.version,
            "idf_ver": b.idf_ver_str(),
            "date_time": b.date_time_str(),
        })),
    })
}

/// The six SPI pin drive strengths of header bytes 9..11 (esptool's names).
fn pin_drv(h: &ImageHeader) -> Value {
    let [b9, b10, b11] = h.spi_pin_drv;
    json!({"clk_drv": b9 & 0xF, "q_drv": b9 >> 4, "d_drv": b10 & 0xF,
           "cs0_drv": b10 >> 4, "hd_drv": b11 & 0xF, "wp_drv": b11 >> 4})
}

/// `major.minor` of a `major*100+minor` revision (esptool's format).
fn rev(v: u16) -> String {
    format!("{}.{}", v / 100, v % 100)
}

/// The report of `esptool image-info` (esptool 5.x, `esptool/cmds.py` `image_info`), line for line,
/// without its first `esptool vX` line. Unknown flash size/frequency/mode values are warned
/// about on stderr, as esptool does.
fn print_info(s: &ImageSummary, size: usize) {
    let h = &s.header;
    let name = s.chip.map(|c| c.display_name()).unwrap_or("unknown chip");
    println!("Image size: {} bytes", size);
    println!("Detected image type: {}", name);
    println!();
    let title = format!("{} Image Header", name);
    println!("{}\n{}", title, "=".repeat(title.len()));
    println!("Image version: 1");
    if h.entry_addr != 0 {
        println!("Entry point: {:#8x}", h.entry_addr);
    } else {
        println!("Entry point not set");
    }
    println!("Segments: {}", s.segment_count);
    match h.flash_size_name() {
        Some(n) => println!("Flash size: {}", n),
        None => eprintln!(
            "Warning: Invalid flash size ({:#02x})",
            h.spi_speed_size & 0xF0
        ),
    }
    match s.chip.and_then(|c| h.flash_freq_name(c)) {
        Some(n) => println!("Flash freq: {}", n),
        None => eprintln!(
            "Warning: Invalid flash frequency ({:#02x})",
            h.flash_freq_code()
        ),
    }
    match h.flash_mode_name() {
        Some(n) => println!("Flash mode: {}", n),
        None => eprintln!("Warning: Invalid flash mode ({})", h.spi_mode),
    }
    println!();
    let title = format!("{} Extended Image Header", name);
    println!("{}\n{}", title, "=".repeat(title.len()));
    if h.wp_pin == image::WP_PIN_DISABLED {
        println!("WP pin: {:#02x} (disabled)", h.wp_pin);
    } else {
        println!("WP pin: {:#02x}", h.wp_pin);
    }
    let [b9, b10, b11] = h.spi_pin_drv;
    println!(
        "Flash pins drive settings: clk_drv: {:#02x}, q_drv: {:#02x}, d_drv: {:#02x}, \
         cs0_drv: {:#02x}, hd_drv: {:#02x}, wp_drv: {:#02x}",
        b9 & 0xF,
        b9 >> 4,
        b10 & 0xF,
        b10 >> 4,
        b11 & 0xF,
        b11 >> 4
    );
    match s.chip {
        Some(c) => println!("Chip ID: {} ({})", h.chip_id, c.display_name()),
        None => println!("Chip ID: {} (Unknown ID)", h.chip_id),
    }
    println!(
        "Minimal chip revision: v{}, (legacy min_rev = {})",
        rev(h.min_chip_rev_full),
        h.min_chip_rev
    );
    println!("Maximal chip revision: v{}", rev(h.max_chip_rev_full));
    println!();
    println!("Segments Information");
    println!("====================");
    println!(
        "{:>7}  {:>7}  {:>10}  {:>10}  {:10}",
        "Segment", "Length", "Load addr", "File offs", "Memory types"
    );
    println!("-------  -------  ----------  ----------  ------------");
    for (i, g) in s.segments[..s.segment_count].iter().enumerate() {
        let types = s
            .chip
            .map(|c| c.memory_types(g.load_addr).to_string())
            .unwrap_or_default();
        // esptool pads the data of a segment with a load address to a multiple of 4 when it
        // reads it (`ImageSegment.__init__`, esptool `esptool/bin_image.py`) and prints that.
        let shown = if g.load_addr != 0 {
            g.data_len.div_ceil(4) * 4
        } else {
            g.data_len
        };
        println!(
            "{:7}  {:#07x}  {:#010x}  {:#010x}  {}",
            i, shown, g.load_addr, g.file_offset, types
        );
    }
    println!();
    let title = format!("{} Image Footer", name);
    println!("{}\n{}", title, "=".repeat(title.len()));
    if s.checksum_valid() {
        println!("Checksum: {:#04x} (valid)", s.checksum_read);
    } else {
        println!(
            "Checksum: {:#04x} (invalid - calculated {:#04x})",
            s.checksum_read, s.checksum_calc
        );
    }
    if let Some(hc) = s.hash_calc {
        println!(
            "Validation hash: {} ({})",
            Hex(&hc),
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
        println!("ELF file SHA256: {}", Hex(&d.app_elf_sha256));
        println!("ESP-IDF: {}", d.idf_ver_str());
        println!(
            "Minimal eFuse block revision: {}",
            rev(d.min_efuse_blk_rev_full)
        );
        println!(
            "Maximal eFuse block revision: {}",
            rev(d.max_efuse_blk_rev_full)
        );
        if d.mmu_page_size != 0 {
            println!(
                "MMU page size: {} KB",
                (1u64 << d.mmu_page_size.min(63)) / 1024
            );
        }
        println!("Secure version: {}", d.secure_version);
    } else if let Some(b) = &s.bootloader_desc {
        println!();
        println!("Bootloader Information");
        println!("======================");
        println!("Bootloader version: {}", b.version);
        println!("ESP-IDF: {}", b.idf_ver_str());
        println!("Compile time: {}", b.date_time_str());
    }
}

/// The app descriptor as JSON (`image info --json` and `device info --json` share these keys).
pub fn app_json(d: &ota_core::image::AppDesc) -> Value {
    json!({
        "project_name": d.project_name_str(),
        "version": d.version_str(),
        "secure_version": d.secure_version,
        "time": d.time_str(),
        "date": d.date_str(),
        "idf_ver": d.idf_ver_str(),
        "elf_sha256": Hex(&d.app_elf_sha256).to_string(),
        "min_efuse_blk_rev_full": d.min_efuse_blk_rev_full,
        "max_efuse_blk_rev_full": d.max_efuse_blk_rev_full,
        "mmu_page_size": d.mmu_page_size,
    })
}

/// `ota image from-elf`: esptool elf2image's options, names and defaults (esptool 5.6
/// `esptool/__init__.py` `elf2image_cli`); the conversion itself is `ota_core::elf2image`.
#[derive(clap::Args)]
pub struct FromElfArgs {
    /// The ELF file (`cargo build` / `idf.py build` output).
    elf: PathBuf,
    /// Output image file (default: the ELF's name with `.bin`, as esptool).
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Chip (esptool's name: esp32, esp32s2, esp32c3, esp32s3, esp32c6, ...).
    #[arg(long)]
    chip: String,
    /// SPI flash mode in the header: qio, qout, dio, dout.
    #[arg(long, default_value = "qio")]
    flash_mode: String,
    /// Flash size in the header: 1MB .. 128MB.
    #[arg(long, default_value = "1MB")]
    flash_size: String,
    /// Flash frequency as esptool names it for the chip (default: the chip's code 0).
    #[arg(long)]
    flash_freq: Option<String>,
    /// Legacy minimum chip revision byte (esptool --min-rev).
    #[arg(long, default_value_t = 0)]
    min_rev: u8,
    /// Minimum chip revision, major*100+minor.
    #[arg(long, default_value_t = 0)]
    min_rev_full: u16,
    /// Maximum chip revision, major*100+minor (65535 = not set).
    #[arg(long, default_value_t = 65535)]
    max_rev_full: u16,
    /// Pad so that, once signed with Secure Boot v1, the image ends on an MMU page (ESP32).
    #[arg(long)]
    secure_pad: bool,
    /// Pad so that the Secure Boot v2 signature sector starts on the next MMU page.
    #[arg(long)]
    secure_pad_v2: bool,
    /// Patch the ELF's SHA-256 at this image offset (default: 0xB0 when the ELF has a
    /// `.flash.appdesc` section in flash).
    #[arg(long, value_name = "OFFSET")]
    elf_sha256_offset: Option<String>,
    /// Leave out the appended SHA-256 of the image.
    #[arg(long)]
    dont_append_digest: bool,
    /// Use the ELF's program headers (PT_LOAD) instead of its sections.
    #[arg(long)]
    use_segments: bool,
    /// MMU page size for the flash-mapped segments: 8KB, 16KB, 32KB, 64KB (default: the app
    /// descriptor's, else guessed from its address, else 64KB).
    #[arg(long, value_name = "SIZE")]
    flash_mmu_page_size: Option<String>,
    /// Pad the image with 0xFF to a multiple of this size (e.g. 64KB, 4MB).
    #[arg(long, value_name = "SIZE")]
    pad_to_size: Option<String>,
    /// RAM segments first, the header counts only them; implies --dont-append-digest.
    #[arg(long)]
    ram_only_header: bool,
}

fn from_elf(a: FromElfArgs) -> Result<ExitCode> {
    use ota_core::elf2image::{MmuPageFrom, Options, Plan, SecurePad};
    let chip = Chip::from_name(&a.chip).ok_or_else(|| anyhow!("unknown chip '{}'", a.chip))?;
    let mut o = Options::new(chip);
    o.flash_mode = crate::glue::parse_flash_mode(&a.flash_mode)?;
    o.flash_size_code = crate::glue::parse_flash_size(&a.flash_size)?;
    if let Some(f) = &a.flash_freq {
        o.flash_freq_code = crate::glue::parse_flash_freq(chip, f)?;
    }
    o.min_rev = a.min_rev;
    o.min_rev_full = a.min_rev_full;
    o.max_rev_full = a.max_rev_full;
    o.secure_pad = match (a.secure_pad, a.secure_pad_v2) {
        (true, true) => bail!("--secure-pad and --secure-pad-v2: pick one"),
        (true, false) => SecurePad::V1,
        (false, true) => SecurePad::V2,
        (false, false) => SecurePad::None,
    };
    if let Some(off) = &a.elf_sha256_offset {
        o.elf_sha256_offset = Some(
            crate::glue::parse_size(off).with_context(|| format!("--elf-sha256-offset {off}"))?,
        );
    }
    o.append_digest = !a.dont_append_digest;
    o.use_segments = a.use_segments;
    if let Some(p) = &a.flash_mmu_page_size {
        o.mmu_page_size =
            Some(crate::glue::parse_size(p).with_context(|| format!("--flash-mmu-page-size {p}"))?);
    }
    if let Some(p) = &a.pad_to_size {
        o.pad_to_size = crate::glue::parse_size(p).with_context(|| format!("--pad-to-size {p}"))?;
    }
    o.ram_only_header = a.ram_only_header;

    let elf = crate::input::read_bounded(&a.elf, crate::input::FLASH_LIMIT, "ELF")?;
    let plan = Plan::new(&elf, &o).map_err(|e| anyhow!("{}: {}", a.elf.display(), e))?;
    let mut out = Vec::with_capacity(plan.image_len() as usize);
    plan.emit(&mut |b: &[u8]| {
        out.extend_from_slice(b);
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|e: std::convert::Infallible| match e {});
    let output = a.output.unwrap_or_else(|| a.elf.with_extension("bin"));
    let (page, from) = plan.mmu_page();
    if from == MmuPageFrom::DefaultUnaligned {
        eprintln!(
            "warning: the .flash.appdesc section is not aligned to any MMU page size (a linker \
             script issue or a wrong page size?): using 64KB; set --flash-mmu-page-size"
        );
    }
    if plan.unknown_sections() > 0 {
        eprintln!(
            "note: skipped {} section(s) of a type esptool does not know",
            plan.unknown_sections()
        );
    }
    let wrote = crate::output::write_output(&output, &out, "app image")?;
    let (sections, segments) = plan.merged();
    crate::output::say(
        wrote,
        format_args!(
            "wrote {} ({} bytes, {} segments from {} ELF {}, {} KB MMU pages{}) for {}",
            output.display(),
            out.len(),
            plan.segment_count(),
            if a.use_segments { segments } else { sections },
            if a.use_segments {
                "segments"
            } else {
                "sections"
            },
            page / 1024,
            match plan.elf_sha256_offset() {
                Some(off) => format!(", ELF SHA-256 at {off:#x}"),
                None => String::new(),
            },
            chip.name()
        ),
    );
    Ok(ExitCode::SUCCESS)
}
