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
}

pub fn run(a: PublishArgs) -> Result<ExitCode> {
    let opts = a
        .s3
        .options()?
        .ok_or_else(|| anyhow!("ota publish needs --store s3://BUCKET and --s3-endpoint URL"))?;
    crate::input::check_input(&a.file, crate::input::FLASH_LIMIT, "file to publish")?;
    let store = S3Store::new(opts)?;
    let rt = ota_server::runtime(Some(1))?;
    let report = rt.block_on(store.publish(&a.file))?;
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
    println!(
        "catalogue {} rewritten: {} entries",
        store.catalogue_url(),
        report.entries
    );
    Ok(ExitCode::SUCCESS)
}
