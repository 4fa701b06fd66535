//! `ota partition-table IN [-o OUT]`: CSV to binary and binary to CSV, like gen_esp32part.py.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Args;
use ota_core::partition::{CsvOptions, PartitionTable, ReadRule, TABLE_MAX_LEN};

#[derive(Args)]
pub struct PtableArgs {
    /// Input: a CSV, or a binary table (detected by its first bytes `AA 50`, as gen_esp32part.py does).
    input: PathBuf,
    /// Output file (default: standard output; binary output needs a file).
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Leave out the MD5 entry (gen_esp32part.py --disable-md5sum).
    #[arg(long)]
    disable_md5sum: bool,
    /// Flash size to check the table against (e.g. 4MB).
    #[arg(long)]
    flash_size: Option<String>,
    /// Partition table offset (gen_esp32part.py's --offset; the same option as the other
    /// commands' --partition-table-offset).
    #[arg(long, alias = "offset", default_value = "0x8000", value_name = "ADDR")]
    partition_table_offset: String,
    /// Where the primary bootloader is (needed by `bootloader` rows; gen_esp32part.py's option).
    #[arg(long, value_name = "ADDR")]
    primary_bootloader_offset: Option<String>,
    /// Where the recovery bootloader is (needed by a `bootloader, recovery` row).
    #[arg(long, value_name = "ADDR")]
    recovery_bootloader_offset: Option<String>,
    /// Skip gen_esp32part.py's verify() checks (alignment, overlap, unique names, ...).
    #[arg(long)]
    no_verify: bool,
}

pub fn run(a: PtableArgs) -> Result<ExitCode> {
    let input =
        crate::input::read_bounded(&a.input, crate::input::TEXT_LIMIT, "partition table input")?;
    let addr = |s: &Option<String>| s.as_deref().map(crate::cmd_flash::parse_addr).transpose();
    let opts = CsvOptions {
        table_offset: crate::glue::parse_size(&a.partition_table_offset)?,
        flash_size: a
            .flash_size
            .as_deref()
            .map(crate::glue::parse_size)
            .transpose()?,
        primary_bootloader_offset: addr(&a.primary_bootloader_offset)?,
        recovery_bootloader_offset: addr(&a.recovery_bootloader_offset)?,
        verify: !a.no_verify,
        ..CsvOptions::default()
    };
    if input.starts_with(&[0xAA, 0x50]) {
        let table = PartitionTable::parse(&input, ReadRule::GenTool)
            .map_err(|e| anyhow!("{}: {}", a.input.display(), e))?;
        // gen_esp32part.py verifies binary input too (unless --no-verify).
        if opts.verify {
            table
                .verify(&opts)
                .map_err(|e| anyhow!("{}: {}", a.input.display(), e))?;
        }
        let mut csv = String::new();
        table
            .write_csv(&mut csv)
            .map_err(|_| anyhow!("formatting CSV"))?;
        match &a.output {
            Some(p) => {
                crate::output::write_output(p, csv.as_bytes(), "partition table CSV")?;
            }
            None => print!("{}", csv),
        }
    } else {
        let text = String::from_utf8(input).map_err(|_| {
            anyhow!(
                "{}: not UTF-8 text and not a binary table",
                a.input.display()
            )
        })?;
        let table = PartitionTable::from_csv(&text, &opts)
            .map_err(|e| anyhow!("{}: {}", a.input.display(), e))?;
        let mut bin = [0xFFu8; TABLE_MAX_LEN];
        table
            .to_binary(!a.disable_md5sum, &mut bin)
            .map_err(|e| anyhow!("{}", e))?;
        match &a.output {
            Some(p) => {
                crate::output::write_output(p, &bin, "partition table binary")?;
            }
            None => {
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    return Err(anyhow!(
                        "refusing to write a binary table to a terminal: give -o OUT"
                    ));
                }
                crate::output::write_stdout(&bin);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
