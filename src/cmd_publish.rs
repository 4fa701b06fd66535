//! `ota publish FILE --store s3://…`: upload an app image or tone bin to the object store under
//! a content-addressed key and rewrite the store's catalogue (`manifest.json`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Args;
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
    let report = rt.block_on(store.publish(&a.file, key.as_ref()))?;
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
