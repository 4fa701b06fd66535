//! `ota delta ...`: detools delta patches between two images (esp_delta_ota's format).

pub mod apply;
mod make;

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DeltaCmd {
    /// Make a detools sequential patch that turns OLD into NEW (what `detools apply_patch`,
    /// detools' C library and esp_delta_ota apply).
    #[command(long_about = make::LONG_ABOUT)]
    Make(make::MakeArgs),
    /// Apply a detools sequential patch to OLD and write NEW (plain detools patches and
    /// esp_delta_ota-headed ones; none, heatshrink 8/7 and lzma).
    Apply(apply::ApplyArgs),
}

pub fn run(cmd: DeltaCmd) -> Result<ExitCode> {
    match cmd {
        DeltaCmd::Make(a) => make::run(a),
        DeltaCmd::Apply(a) => apply::run(a),
    }
}
