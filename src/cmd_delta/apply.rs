//! `ota delta apply OLD PATCH -o NEW`: the ota-core applier on a PC. The base is OLD (a file),
//! or with `--base-slot` the app in a partition of the flash image OLD, read through the
//! emulated flash at its granularity as the device reads its running slot. An esp_delta_ota
//! header (magic `0xfccdde10`, espressif/idf-extra-components `esp_delta_ota/examples/
//! https_delta_ota/tools/esp_delta_ota_patch_gen.py`) is detected and its base SHA-256 checked
//! before anything is written. lzma (detools' "LZMA alone" stream, Python `lzma.FORMAT_ALONE`,
//! detools `detools/compression/lzma.py`) is decoded here with lzma-rs and fed to the applier.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use ota_core::delta::{
    base_image_sha256, varint::MAX_VARINT, ApplyError, Compression, DeltaApplier, DeltaBase,
    DeltaError, EspDeltaHeader, FlashBase, PatchHeader, SliceBase, ESP_DELTA_HEADER_LEN,
};
use ota_core::flash::Region;
use ota_core::image::Hex;
use ota_core::mem_flash::MemFlash;
use sha2::{Digest, Sha256};

use crate::cmd_partition::TableOffsetArg;
use crate::flashfile::{read_table, FlashFile};
use crate::input::read_bounded;
use crate::output::{say, write_output};

/// Largest OLD, PATCH or NEW: detools sizes are below 2^27 (its C decoder's 4-byte varints).
const MAX_LEN: u64 = MAX_VARINT as u64 + 1;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    ota delta apply v1.bin v1-to-v2.patch -o v2.bin\n  \
    ota delta apply device.flash v1-to-v2.patch --base-slot ota_0 -o v2.bin\n\n\
    Accepted: detools sequential patches (`detools create_patch`, type 0) compressed with \
    heatshrink (window 8, lookahead 7: what esp_delta_ota accepts), none or lzma, optionally \
    behind esp_delta_ota's 64-byte header, whose base SHA-256 must match OLD's image (the \
    appended SHA-256, esptool image-info's \"Validation Hash\"). Refused with a clear error: \
    in-place and hdiffpatch patches, other heatshrink parameters, crle/bz2/zstd/lz4, \
    --data-format patches, bad sizes or seeks, truncated patches, data after the end.")]
pub struct ApplyArgs {
    /// The base: the old image file, or with --base-slot a flash image (`ota device create`,
    /// `esptool read-flash`).
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The patch (`detools create_patch`, `ota delta make`, esp_delta_ota_patch_gen.py).
    #[arg(value_name = "PATCH")]
    patch: PathBuf,
    /// Where to write the new image.
    #[arg(short, long, value_name = "NEW")]
    output: PathBuf,
    /// OLD is a flash image: the base is the app image in this partition (a label such as
    /// `ota_0` or `factory`), as esp_delta_ota reads the running slot.
    #[arg(long, value_name = "LABEL")]
    base_slot: Option<String>,
    #[command(flatten)]
    table: TableOffsetArg,
}

/// Why applying failed: the patch, or reading the base (a flash error).
enum Failure {
    Patch(DeltaError),
    Base(String),
}

impl From<DeltaError> for Failure {
    fn from(e: DeltaError) -> Self {
        Failure::Patch(e)
    }
}

/// Where the patch bytes go: the applier, then into `out`.
struct Run<'b, B: DeltaBase + ?Sized> {
    applier: DeltaApplier,
    base: &'b mut B,
    out: Vec<u8>,
}

impl<B: DeltaBase + ?Sized> Run<'_, B>
where
    B::Error: std::fmt::Display,
{
    fn feed(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let out = &mut self.out;
        self.applier
            .feed(self.base, bytes, &mut |b: &[u8]| {
                out.extend_from_slice(b);
                Ok::<(), std::convert::Infallible>(())
            })
            .map_err(|e| match e {
                ApplyError::Patch(p) => Failure::Patch(p),
                // A base read (the flash); the sink here cannot fail.
                other => Failure::Base(other.to_string()),
            })
    }
}

pub fn run(a: ApplyArgs) -> Result<ExitCode> {
    let patch_all = read_bounded(&a.patch, MAX_LEN + ESP_DELTA_HEADER_LEN as u64, "patch")?;
    let patch_name = a.patch.display().to_string();
    let (esp, patch) = if EspDeltaHeader::detect(&patch_all) {
        let head: &[u8; ESP_DELTA_HEADER_LEN] = patch_all
            .get(..ESP_DELTA_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| {
                anyhow!(
                    "patch {patch_name}: esp_delta_ota header truncated: {} of 64 bytes",
                    patch_all.len()
                )
            })?;
        let h = EspDeltaHeader::parse(head).with_context(|| format!("patch {patch_name}"))?;
        (Some(h), &patch_all[ESP_DELTA_HEADER_LEN..])
    } else {
        (None, &patch_all[..])
    };
    let at = |e: DeltaError| {
        let shift = if esp.is_some() {
            format!(" (after its {ESP_DELTA_HEADER_LEN}-byte esp_delta_ota header)")
        } else {
            String::new()
        };
        anyhow!("patch {patch_name}{shift}: {e}")
    };
    let header = PatchHeader::parse(patch).map_err(at)?;

    let (out, base_desc) = match &a.base_slot {
        None => {
            let old = read_bounded(&a.old, MAX_LEN, "base image")?;
            if let Some(h) = &esp {
                let mut copy = old.clone();
                let len = copy.len() as u32;
                let mut flash = MemFlash::<1, 1>::new(&mut copy);
                let img =
                    base_image_sha256(&mut flash, Region::new(0, len), None).map_err(|e| {
                        anyhow!(
                            "base image {}: not a valid ESP app image, so its SHA-256 cannot \
                             be checked against the patch's esp_delta_ota header: {e}",
                            a.old.display()
                        )
                    })?;
                h.check_base(&img.sha256)
                    .map_err(|e| anyhow!("patch {patch_name} vs base {}: {e}", a.old.display()))?;
            }
            let out = apply(&mut SliceBase(&old), patch, &header).map_err(|f| match f {
                Failure::Patch(e) => at(e),
                Failure::Base(e) => anyhow!("reading base image {}: {e}", a.old.display()),
            })?;
            (out, format!("{} ({} bytes)", a.old.display(), old.len()))
        }
        Some(label) => {
            let mut ff = FlashFile::open(&a.old)?;
            let t = read_table(&mut ff, a.table.get()?)?;
            let part = t.find(label)?;
            let region = ff.clip(&part, &format!("partition {label}"))?;
            let flash = ff.flash_mut();
            let img = base_image_sha256(flash, region, None).map_err(|e| {
                anyhow!(
                    "flash image {}: partition {label} at 0x{:x} holds no valid app image to \
                     patch: {e}",
                    a.old.display(),
                    region.offset
                )
            })?;
            if let Some(h) = &esp {
                h.check_base(&img.sha256).map_err(|e| {
                    anyhow!(
                        "patch {patch_name} vs partition {label} of {}: {e}",
                        a.old.display()
                    )
                })?;
            }
            let mut base = FlashBase::new(flash, region, img.image_len)
                .ok_or_else(|| anyhow!("partition {label}: image longer than the partition"))?;
            let out = apply(&mut base, patch, &header).map_err(|f| match f {
                Failure::Patch(e) => at(e),
                Failure::Base(e) => {
                    anyhow!("reading partition {label} of {}: {e}", a.old.display())
                }
            })?;
            (
                out,
                format!(
                    "partition {label} of {} (image of {} bytes at 0x{:x})",
                    a.old.display(),
                    img.image_len,
                    region.offset
                ),
            )
        }
    };

    let wrote = write_output(&a.output, &out, "new image")?;
    let digest: [u8; 32] = Sha256::digest(&out).into();
    say(
        wrote,
        format_args!(
            "Applied {} patch {} ({} bytes{}) to {}: wrote {} ({} bytes, SHA-256 {})",
            header.compression.name(),
            patch_name,
            patch_all.len(),
            if esp.is_some() {
                ", esp_delta_ota header, base SHA-256 checked"
            } else {
                ""
            },
            base_desc,
            a.output.display(),
            out.len(),
            Hex(&digest)
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// Run the whole patch through the applier over `base`.
fn apply<B>(base: &mut B, patch: &[u8], header: &PatchHeader) -> Result<Vec<u8>, Failure>
where
    B: DeltaBase + ?Sized,
    B::Error: std::fmt::Display,
{
    let base_len = base.len();
    if header.compression != Compression::Lzma {
        let mut run = Run {
            applier: DeltaApplier::new(base_len),
            base,
            out: Vec::with_capacity(header.to_size as usize),
        };
        run.feed(patch)?;
        run.applier.finish()?;
        return Ok(run.out);
    }
    let mut run = Run {
        applier: DeltaApplier::for_decompressed_body(header, base_len),
        base,
        out: Vec::with_capacity(header.to_size as usize),
    };
    let stream = &patch[header.len..];
    if header.to_size == 0 {
        if !stream.is_empty() {
            return Err(DeltaError::TrailingData {
                offset: header.len as u64,
            }
            .into());
        }
        return Ok(run.out);
    }
    let mut input = std::io::Cursor::new(stream);
    let mut sink = LzmaSink {
        run: &mut run,
        err: None,
    };
    let r = lzma_rs::lzma_decompress_with_options(
        &mut input,
        &mut sink,
        &lzma_rs::decompress::Options {
            // detools' 8 MiB dictionary, and no more.
            memlimit: Some(16 << 20),
            ..Default::default()
        },
    );
    if let Some(e) = sink.err {
        return Err(e);
    }
    if let Err(e) = r {
        return Err(DeltaError::Truncated {
            offset: header.len as u64 + input.position(),
            out_pos: run.applier.output_offset(),
            to_size: header.to_size,
            expecting: lzma_error(&e),
        }
        .into());
    }
    if !input.fill_buf().map(|b| b.is_empty()).unwrap_or(true) {
        return Err(DeltaError::TrailingData {
            offset: header.len as u64 + input.position(),
        }
        .into());
    }
    run.applier.finish()?;
    Ok(run.out)
}

fn lzma_error(e: &lzma_rs::error::Error) -> &'static str {
    match e {
        lzma_rs::error::Error::IoError(_) => "a complete lzma stream",
        _ => "a valid lzma stream (the decoder refused it)",
    }
}

/// lzma-rs writes decompressed bytes here; they go to the applier as they come.
struct LzmaSink<'r, 'b, B: DeltaBase + ?Sized> {
    run: &'r mut Run<'b, B>,
    err: Option<Failure>,
}

impl<B: DeltaBase + ?Sized> Write for LzmaSink<'_, '_, B>
where
    B::Error: std::fmt::Display,
{
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Err(e) = self.run.feed(buf) {
            self.err = Some(e);
            return Err(std::io::Error::other("delta patch refused"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
