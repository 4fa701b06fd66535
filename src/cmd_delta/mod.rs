//! `ota delta ...`: detools-compatible delta patches (esp_delta_ota's format).

pub mod apply;

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DeltaCmd {
    /// Apply a detools sequential patch to OLD and write NEW (plain detools patches and
    /// esp_delta_ota-headed ones; none, heatshrink 8/7 and lzma).
    Apply(apply::ApplyArgs),
}

pub fn run(cmd: DeltaCmd) -> Result<ExitCode> {
    match cmd {
        DeltaCmd::Apply(a) => apply::run(a),
    }
}
