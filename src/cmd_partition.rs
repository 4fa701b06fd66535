//! `ota partition list|read|write|erase`: parttool.py's operations on a flash image. The table
//! is read as parttool.py reads it (`flashfile::read_table`); writes erase the partition's
//! sectors first and go through the emulated NOR flash.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use ota_core::guard::{Area, AreaKind, FlashMap};
use ota_core::partition::{self, Partition};
use serde_json::{json, Value};

use crate::flashfile::{read_table, FlashFile, FlashTable};
use crate::FlashArg;

/// `--partition-table-offset` (parttool.py's `-o`, default 0x8000).
#[derive(Args, Clone)]
pub struct TableOffsetArg {
    /// Where the partition table is (CONFIG_PARTITION_TABLE_OFFSET).
    #[arg(long, default_value = "0x8000", value_name = "ADDR")]
    pub partition_table_offset: String,
}

impl TableOffsetArg {
    pub fn get(&self) -> Result<u32> {
        crate::cmd_flash::parse_addr(&self.partition_table_offset)
    }
}

#[derive(Subcommand)]
pub enum PartitionCmd {
    /// List the partition table of a flash image.
    List {
        #[command(flatten)]
        flash: FlashArg,
        #[command(flatten)]
        table: TableOffsetArg,
        /// Print JSON (keys documented in README).
        #[arg(long)]
        json: bool,
    },
    /// Copy a whole partition to a file (parttool.py read_partition).
    Read {
        /// Partition label.
        label: String,
        #[command(flatten)]
        flash: FlashArg,
        /// Output file (or use -o).
        file: Option<PathBuf>,
        /// Output file (instead of FILE).
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
        #[command(flatten)]
        table: TableOffsetArg,
    },
    /// Erase a partition and write FILE at its start (parttool.py write_partition); FILE must
    /// fit in the partition.
    Write {
        /// Partition label.
        label: String,
        #[command(flatten)]
        flash: FlashArg,
        /// Input file.
        file: PathBuf,
        #[command(flatten)]
        table: TableOffsetArg,
    },
    /// Erase a partition to 0xFF (parttool.py erase_partition).
    Erase {
        /// Partition label.
        label: String,
        #[command(flatten)]
        flash: FlashArg,
        #[command(flatten)]
        table: TableOffsetArg,
    },
}

pub fn run(cmd: PartitionCmd) -> Result<ExitCode> {
    match cmd {
        PartitionCmd::List { flash, table, json } => list(flash, table, json),
        PartitionCmd::Read {
            label,
            flash,
            file,
            output,
            table,
        } => {
            let out = match (file, output) {
                (Some(f), None) | (None, Some(f)) => f,
                (Some(_), Some(_)) => bail!("give the output file once (FILE or -o OUT)"),
                (None, None) => bail!("give an output file (FILE or -o OUT)"),
            };
            let mut ff = FlashFile::open(&flash.flash)?;
            let t = read_table(&mut ff, table.get()?)?;
            let p = t.find(&label)?;
            let data = ff.read(p.offset, p.size, &describe(&p))?;
            let wrote = crate::output::write_output(&out, &data, "partition contents")?;
            crate::output::say(
                wrote,
                format_args!(
                    "read partition '{}' (0x{:x} bytes at 0x{:x}) into {}",
                    label,
                    p.size,
                    p.offset,
                    out.display()
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        PartitionCmd::Write {
            label,
            flash,
            file,
            table,
        } => {
            let data =
                crate::input::read_bounded(&file, crate::input::FLASH_LIMIT, "partition contents")?;
            let mut ff = FlashFile::open(&flash.flash)?;
            let t = read_table(&mut ff, table.get()?)?;
            let p = writable(&t, &label, &mut ff)?;
            if data.len() as u64 > u64::from(p.size) {
                bail!(
                    "{} is {} bytes (0x{:x}), larger than partition '{}' ({} bytes, 0x{:x} at 0x{:x}); \
                     nothing was written",
                    file.display(),
                    data.len(),
                    data.len(),
                    label,
                    p.size,
                    p.size,
                    p.offset
                );
            }
            // parttool.py erases the whole partition, then writes the file at its start.
            let mut content = data.clone();
            content.resize(p.size as usize, 0xFF);
            ff.write(p.offset, &content, &describe(&p))?;
            ff.save()?;
            println!(
                "wrote {} bytes from {} to partition '{}' at 0x{:x} (erased 0x{:x} bytes first)",
                data.len(),
                file.display(),
                label,
                p.offset,
                p.size
            );
            Ok(ExitCode::SUCCESS)
        }
        PartitionCmd::Erase {
            label,
            flash,
            table,
        } => {
            let mut ff = FlashFile::open(&flash.flash)?;
            let t = read_table(&mut ff, table.get()?)?;
            let p = writable(&t, &label, &mut ff)?;
            ff.write(p.offset, &vec![0xFF; p.size as usize], &describe(&p))?;
            ff.save()?;
            println!(
                "erased partition '{}' (0x{:x} bytes at 0x{:x})",
                label, p.size, p.offset
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn describe(p: &Partition) -> String {
    format!("partition '{}'", p.label.as_str())
}

/// The partition to change: it must exist, lie inside the image, keep clear of the bootloader
/// region and the partition table (`ota_core::guard`), and overlap no other partition
/// (gen_esp32part's verify() rule; parttool.py itself does not check).
fn writable(t: &FlashTable, label: &str, ff: &mut FlashFile) -> Result<Partition> {
    let p = t.find(label)?;
    check_protected(t, &p, ff)?;
    if let Some(o) = t.overlapping(&p) {
        return Err(anyhow!(
            "partition '{}' (0x{:x}..0x{:x}) overlaps partition '{}' (0x{:x}..0x{:x}) in the table \
             at 0x{:x}: refusing to change it (gen_esp32part would refuse this table); nothing \
             was written",
            label,
            p.offset,
            u64::from(p.offset) + u64::from(p.size),
            o.label.as_str(),
            o.offset,
            u64::from(o.offset) + u64::from(o.size),
            t.offset
        ));
    }
    ff.check_range(p.offset, u64::from(p.size), &describe(&p))?;
    Ok(p)
}

/// A partition the toolbox writes must not cover flash below the partition table (the
/// bootloader region) nor the table sector itself, which a table the bootloader accepts can
/// still make it do. Only an entry of type `bootloader` (or `partition_table`), as ESP-IDF v5.3+
/// tables may list (`components/partition_table/gen_esp32part.py`), is meant to lie over its own
/// region. The rule and the names of the regions are `ota_core::guard`'s.
fn check_protected(t: &FlashTable, p: &Partition, ff: &mut FlashFile) -> Result<()> {
    let map = FlashMap {
        table: &t.table,
        bootloader_offset: ff.bootloader().map(|b| b.chip.bootloader_offset()),
        table_offset: t.offset,
        flash_size: None,
        running: None,
    };
    let area = Area::of(AreaKind::Partition, p);
    let regions = [
        (map.bootloader_area(), partition::TYPE_BOOTLOADER),
        (map.table_area(), partition::TYPE_PARTITION_TABLE),
    ];
    for (region, own_type) in regions {
        if p.ptype != own_type && area.overlaps(&region) {
            bail!(
                "{} overlaps {}: refusing to change it (that would overwrite what the device \
                 boots from); nothing was written",
                area,
                region
            );
        }
    }
    Ok(())
}

pub fn type_name(p: &Partition) -> String {
    partition::type_name(p.ptype)
        .map(str::to_string)
        .unwrap_or_else(|| format!("0x{:02x}", p.ptype))
}

pub fn subtype_name(p: &Partition) -> String {
    partition::subtype_name(p.ptype, p.subtype)
        .map(str::to_string)
        .unwrap_or_else(|| format!("0x{:02x}", p.subtype))
}

fn flag_names(p: &Partition) -> String {
    let mut v = Vec::new();
    if p.is_encrypted() {
        v.push("encrypted");
    }
    if p.is_readonly() {
        v.push("readonly");
    }
    v.join(":")
}

fn list(flash: FlashArg, table: TableOffsetArg, as_json: bool) -> Result<ExitCode> {
    let mut ff = FlashFile::open(&flash.flash)?;
    let t = read_table(&mut ff, table.get()?)?;
    let len = ff.len();
    let in_image = |p: &Partition| u64::from(p.offset) + u64::from(p.size) <= len;
    let mut warnings = Vec::new();
    if let Some(e) = &t.verify_error {
        warnings.push(format!("gen_esp32part would refuse this table: {}", e));
    }
    if let Some(e) = &t.bootloader_error {
        warnings.push(e.clone());
    }
    for p in t.table.iter().filter(|p| !in_image(p)) {
        warnings.push(format!(
            "partition '{}' (0x{:x}..0x{:x}) goes beyond the end of the image (0x{:x} bytes)",
            p.label.as_str(),
            p.offset,
            u64::from(p.offset) + u64::from(p.size),
            len
        ));
    }
    if as_json {
        let parts: Vec<Value> = t
            .table
            .iter()
            .map(|p| {
                json!({"label": p.label.as_str(), "type": type_name(p), "subtype": subtype_name(p),
                       "offset": p.offset, "size": p.size, "flags": p.flags,
                       "encrypted": p.is_encrypted(), "readonly": p.is_readonly(),
                       "in_image": in_image(p)})
            })
            .collect();
        let v = json!({"table_offset": t.offset, "image_size": len, "partitions": parts,
                       "warnings": warnings});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Partition table at 0x{:x} of {} ({} partitions):",
        t.offset,
        ff.name(),
        t.table.len()
    );
    println!(
        "  {:<16} {:<15} {:<10} {:>10} {:>10}  flags",
        "label", "type", "subtype", "offset", "size"
    );
    for p in t.table.iter() {
        println!(
            "  {:<16} {:<15} {:<10} {:>#10x} {:>#10x}  {}",
            p.label.as_str(),
            type_name(p),
            subtype_name(p),
            p.offset,
            p.size,
            flag_names(p)
        );
    }
    for w in &warnings {
        println!("warning: {}", w);
    }
    Ok(ExitCode::SUCCESS)
}
