//! `ota publish FILE --store s3://…`: upload an app image or tone bin to the object store under
//! a content-addressed key, make and upload delta patches to a new newest app from its previous
//! versions, and rewrite the store's catalogue (`manifest.json`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Args;
use ota_server::s3::{DeltaNote, PublishOptions};
use ota_server::S3Store;

use crate::cmd_serve::S3Args;

#[derive(Args)]
pub struct PublishArgs {
    /// The app image or tone bin to publish (corrupt files are refused).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    s3: S3Args,
    /// Sign the rewritten catalogue with this private key (Ed25519 or ECDSA P-256 PEM; see
    /// `ota catalogue keygen`). Without it the catalogue is written unsigned.
    #[arg(long, value_name = "KEY.pem")]
    sign_key: Option<PathBuf>,
    /// When FILE becomes the newest app of its chip and project: make delta patches (detools
    /// sequential, heatshrink, esp_delta_ota header) from this many previous versions in the
    /// store, upload them as deltas/<project>/<sha256>.patch and list them in its entry's
    /// `deltas` (0: none). Bases are downloaded and checked against the catalogue first.
    /// Patch objects that neither the new catalogue nor the one it replaces lists are deleted.
    #[arg(long, value_name = "N", default_value_t = ota_server::deltas::DEFAULT_DELTA_BASES as u16,
          value_parser = clap::value_parser!(u16).range(0..=64))]
    delta_bases: u16,
}

pub fn run(a: PublishArgs) -> Result<ExitCode> {
    let opts = a
        .s3
        .options()?
        .ok_or_else(|| anyhow!("ota publish needs --store s3://BUCKET and --s3-endpoint URL"))?;
    crate::input::check_input(&a.file, crate::input::FLASH_LIMIT, "file to publish")?;
    let key = match &a.sign_key {
        Some(p) => Some(crate::cmd_catalogue::load_signing_key(p)?),
        None => None,
    };
    let store = S3Store::new(opts)?;
    let rt = ota_server::runtime(Some(1))?;
    let popts = PublishOptions {
        delta_bases: a.delta_bases as usize,
        max_base: crate::input::FLASH_LIMIT,
    };
    let report = rt.block_on(store.publish(&a.file, key.as_ref(), &popts))?;
    let e = &report.entry;
    println!(
        "{} {} as {} ({} {} {}, {} bytes, sha256 {})",
        if report.uploaded {
            "published"
        } else {
            "already published (same content)"
        },
        a.file.display(),
        report.key,
        match e.kind {
            ota_catalogue::EntryKind::App => "app",
            _ => "tone bin",
        },
        e.project.as_deref().unwrap_or("-"),
        e.version.as_deref().unwrap_or("-"),
        e.size,
        e.sha256
    );
    if a.delta_bases == 0 && e.kind == ota_catalogue::EntryKind::App {
        println!("no delta patches (--delta-bases 0)");
    } else {
        for note in &report.deltas {
            print_note(note);
        }
    }
    for k in &report.pruned {
        println!(
            "removed superseded patch {k} (listed in neither this catalogue nor the one it replaced)"
        );
    }
    for (k, why) in &report.prune_failed {
        eprintln!("warning: superseded patch {k} not removed: {why}");
    }
    match &key {
        Some(k) => println!(
            "catalogue {} rewritten: {} entries, signed ({} key id {}, serial {})",
            store.catalogue_url(),
            report.entries,
            k.algorithm(),
            k.public_key().key_id_hex(),
            report.serial.unwrap_or_default()
        ),
        None => println!(
            "catalogue {} rewritten: {} entries",
            store.catalogue_url(),
            report.entries
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_note(note: &DeltaNote) {
    let v = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    match note {
        DeltaNote::Made {
            base_version,
            target_version,
            size,
            image_size,
            key,
            uploaded,
        } => println!(
            "delta from {} to {}: {size} bytes ({:.1} % of the image), key {key}{}",
            v(base_version),
            v(target_version),
            *size as f64 * 100.0 / (*image_size).max(1) as f64,
            if *uploaded { "" } else { " (already there)" }
        ),
        DeltaNote::Skipped {
            base_version,
            base_path,
            reason,
        } => eprintln!(
            "warning: no delta from {} ({base_path}): {reason}",
            v(base_version)
        ),
        DeltaNote::NotNewest {
            newest_version,
            newest_path,
        } => println!(
            "no delta patches: not the newest of its chip and project ({} is, {newest_path})",
            v(newest_version)
        ),
        DeltaNote::NoBases => println!(
            "no delta patches: the store holds no earlier version of this chip and project"
        ),
    }
}
