//! `ota delta ...`: detools delta patches between two images.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

mod make;

#[derive(Subcommand)]
pub enum DeltaCmd {
    /// Make a detools sequential patch that turns OLD into NEW (what `detools apply_patch`,
    /// detools' C library and esp_delta_ota apply).
    #[command(long_about = make::LONG_ABOUT)]
    Make(make::MakeArgs),
}

pub fn run(cmd: DeltaCmd) -> Result<ExitCode> {
    match cmd {
        DeltaCmd::Make(a) => make::run(a),
    }
}
