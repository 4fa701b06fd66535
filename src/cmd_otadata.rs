//! `ota otadata read|switch|erase`: otatool.py's otadata operations on a flash image. Entries
//! are judged with the bootloader's rules and `switch` writes with ESP-IDF v6's
//! `esp_ota_set_boot_partition` (ota_core::otadata; esp-idf `components/app_update/esp_ota_ops.c`,
//! `components/bootloader_support/src/bootloader_utility.c`), with the state that function
//! writes for the device's rollback setting (NEW with rollback, else UNDEFINED).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use ota_core::boot::{self, BootConfig};
use ota_core::guard::FlashMap;
use ota_core::image;
use ota_core::otadata::{OtaData, OtaSelectEntry, OtaState, SEQ_ERASED};
use ota_core::partition::{Partition, PartitionTable};
use serde_json::{json, Value};

use crate::cmd_partition::TableOffsetArg;
use crate::flashfile::{read_table, FlashFile};
use crate::FlashArg;
use ota_core::image::Hex;
use ota_emu::settings::DeviceSettings;

#[derive(Subcommand)]
pub enum OtadataCmd {
    /// Show both otadata entries, the active one and the partition that boots.
    Read {
        #[command(flatten)]
        flash: FlashArg,
        #[command(flatten)]
        table: TableOffsetArg,
        /// Print JSON (keys documented in README).
        #[arg(long)]
        json: bool,
    },
    /// Make SLOT the boot partition, as esp_ota_set_boot_partition does (ESP-IDF v6 rules).
    Switch {
        /// `N` or `ota_N` (an OTA app slot), an app partition's label, or `factory` (erases
        /// otadata, as esp_ota_set_boot_partition(factory) does).
        slot: String,
        #[command(flatten)]
        flash: FlashArg,
        #[command(flatten)]
        table: TableOffsetArg,
        /// Write state NEW, as esp_ota_set_boot_partition does when the app is built with
        /// CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE. Default: the device's setting (`rollback` in
        /// F.device.toml beside the flash image; without that file, off: UNDEFINED).
        #[arg(long, conflicts_with = "no_rollback")]
        rollback: bool,
        /// Write state UNDEFINED whatever the device's settings say.
        #[arg(long)]
        no_rollback: bool,
        /// Do not verify the slot's image first (esp_ota_set_boot_partition verifies it).
        #[arg(long)]
        no_verify: bool,
        /// Print JSON (keys documented in README).
        #[arg(long)]
        json: bool,
    },
    /// Erase the otadata partition (both entries): the device then boots factory, else ota_0.
    Erase {
        #[command(flatten)]
        flash: FlashArg,
        #[command(flatten)]
        table: TableOffsetArg,
    },
}

/// The table and the otadata partition of a flash image.
fn open(ff: &mut FlashFile, table: &TableOffsetArg) -> Result<(PartitionTable, Partition)> {
    let t = read_table(ff, table.get()?)?;
    let part = *t.table.otadata().ok_or_else(|| {
        anyhow!(
            "the partition table at 0x{:x} has no otadata (data/ota) partition",
            t.offset
        )
    })?;
    OtaData::check_partition(&part).map_err(|e| anyhow!("{}", e))?;
    ff.check_range(part.offset, u64::from(part.size), "the otadata partition")?;
    Ok((t.table, part))
}

/// `switch` and `erase` write otadata: it must keep clear of the bootloader region, the
/// partition table and every other partition (the apps it selects among), as the update
/// engines require (`ota_core::guard`). `read` only reads.
fn check_writable(ff: &mut FlashFile, table: &PartitionTable, table_offset: u32) -> Result<()> {
    let map = FlashMap {
        table,
        bootloader_offset: ff.bootloader().map(|b| b.chip.bootloader_offset()),
        table_offset,
        flash_size: None,
        running: None,
    };
    map.check_otadata().map_err(|e| anyhow!("{}", e))
}

pub fn run(cmd: OtadataCmd) -> Result<ExitCode> {
    match cmd {
        OtadataCmd::Read { flash, table, json } => read(flash, table, json),
        OtadataCmd::Switch {
            slot,
            flash,
            table,
            rollback,
            no_rollback,
            no_verify,
            json,
        } => {
            let rollback = match (rollback, no_rollback) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            switch(&slot, flash, table, rollback, no_verify, json)
        }
        OtadataCmd::Erase { flash, table } => {
            let mut ff = FlashFile::open(&flash.flash)?;
            let (t, part) = open(&mut ff, &table)?;
            check_writable(&mut ff, &t, table.get()?)?;
            OtaData::erase_all(ff.flash_mut(), &part).map_err(|e| anyhow!("{}", e))?;
            ff.save()?;
            println!(
                "erased otadata '{}' (0x{:x} bytes at 0x{:x})",
                part.label.as_str(),
                part.size,
                part.offset
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn slot_label(table: &PartitionTable, slot: Option<u8>) -> Option<String> {
    slot.and_then(|s| table.ota(s))
        .map(|p| p.label.as_str().to_string())
}

fn entry_json(
    i: usize,
    e: &OtaSelectEntry,
    part: &Partition,
    table: &PartitionTable,
    count: u8,
) -> Value {
    let erased = e.to_bytes().iter().all(|&b| b == 0xFF);
    json!({
        "sector": i,
        "offset": part.offset + (i as u32) * ota_core::otadata::OTADATA_SECTOR_SIZE,
        "erased": erased,
        "seq": e.seq,
        "state": e.state().name(),
        "state_raw": e.state,
        "crc": e.crc,
        "crc_valid": e.crc_ok(),
        "valid": e.is_valid(),
        "slot": if e.seq == SEQ_ERASED { None } else { slot_label(table, e.slot(count)) },
        "seq_label": Hex(&e.seq_label).to_string(),
    })
}

fn read(flash: crate::FlashArg, table: TableOffsetArg, as_json: bool) -> Result<ExitCode> {
    let mut ff = FlashFile::open(&flash.flash)?;
    let (table, part) = open(&mut ff, &table)?;
    let od = OtaData::read(ff.flash_mut(), &part).map_err(|e| anyhow!("otadata: {}", e))?;
    let count = table.ota_count();
    // esp_ota_get_boot_partition (`esp_ota_ops.c`): the active entry's slot, else the default app.
    let boot_partition = match od.boot_slot(count).filter(|_| !od.both_invalid()) {
        Some(s) => slot_label(&table, Some(s)),
        None => table
            .factory()
            .or_else(|| table.ota(0))
            .or_else(|| table.test_app())
            .map(|p| p.label.as_str().to_string()),
    };
    // What the 2nd-stage bootloader boots (`bootloader_utility.c`, default config), run on a copy of the flash.
    let bootloader = ff.bootloader();
    let boots = bootloader.map(|b| {
        let mut copy = ff.flash_mut().clone_in_memory();
        boot::boot(
            &mut copy,
            &table,
            b.chip,
            &BootConfig::default(),
            &mut |_| {},
        )
        .map(|o| o.partition.label.as_str().to_string())
        .map_err(|e| e.to_string())
    });
    if as_json {
        let entries: Vec<Value> = od
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| entry_json(i, e, &part, &table, count))
            .collect();
        let (boots, boot_error) = match &boots {
            Some(Ok(l)) => (Some(l.clone()), None),
            Some(Err(e)) => (None, Some(e.clone())),
            None => (None, None),
        };
        let v = json!({
            "partition": {"label": part.label.as_str(), "offset": part.offset, "size": part.size},
            "ota_count": count,
            "entries": entries,
            "active": od.active(),
            "boot_partition": boot_partition,
            "bootloader_boots": boots,
            "bootloader_error": boot_error,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "otadata '{}' at 0x{:x} (0x{:x} bytes), {} OTA app slot(s)",
        part.label.as_str(),
        part.offset,
        part.size,
        count
    );
    for (i, e) in od.entries.iter().enumerate() {
        if e.to_bytes().iter().all(|&b| b == 0xFF) {
            println!("  [{}] erased", i);
            continue;
        }
        println!(
            "  [{}] seq {} state {} crc 0x{:08x} ({}) -> {} ({})",
            i,
            e.seq,
            e.state().name(),
            e.crc,
            if e.crc_ok() { "ok" } else { "BAD" },
            slot_label(&table, e.slot(count)).unwrap_or_else(|| "no slot".into()),
            if e.is_valid() {
                "valid"
            } else {
                "ignored by the bootloader"
            }
        );
    }
    match od.active() {
        Some(a) => println!("active entry: {}", a),
        None => println!("active entry: none"),
    }
    println!(
        "boot partition (esp_ota_get_boot_partition): {}",
        boot_partition.as_deref().unwrap_or("none")
    );
    match boots {
        Some(Ok(l)) => println!("the bootloader boots: {}", l),
        Some(Err(e)) => println!("the bootloader boots nothing: {}", e),
        None => println!("the bootloader: no bootloader image header in this flash image"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `N`, `ota_N`, or the label of an OTA app partition → the OTA slot number; `None` = factory.
fn parse_slot(table: &PartitionTable, s: &str) -> Result<Option<u8>> {
    if s == "factory" {
        return Ok(None);
    }
    let n = s.strip_prefix("ota_").unwrap_or(s);
    if let Ok(n) = n.parse::<u8>() {
        return Ok(Some(n));
    }
    match table.find_by_label(s) {
        Some(p) => match p.ota_slot() {
            Some(n) => Ok(Some(n)),
            None if p.is_app() && p.subtype == ota_core::partition::SUBTYPE_APP_FACTORY => Ok(None),
            None => bail!("partition '{}' is not an OTA app slot", s),
        },
        None => bail!(
            "'{}' is neither a slot number, ota_N, factory, nor a partition label",
            s
        ),
    }
}

fn switch(
    slot: &str,
    flash: crate::FlashArg,
    table: TableOffsetArg,
    rollback: Option<bool>,
    no_verify: bool,
    as_json: bool,
) -> Result<ExitCode> {
    // The state esp_ota_set_boot_partition writes follows the rollback option the firmware
    // was built with: the device settings beside the flash image say it, unless overridden.
    let settings_path = DeviceSettings::path_for(&flash.flash);
    let (rollback, rollback_from) = match rollback {
        Some(r) => (
            r,
            if r { "--rollback" } else { "--no-rollback" }.to_string(),
        ),
        None => match DeviceSettings::load_for(&flash.flash)? {
            Some(s) => (
                s.bootloader.rollback,
                format!(
                    "rollback = {} in {}",
                    s.bootloader.rollback,
                    settings_path.display()
                ),
            ),
            None => (
                false,
                format!("no {}: rollback off", settings_path.display()),
            ),
        },
    };
    let mut ff = FlashFile::open(&flash.flash)?;
    let table_offset = table.get()?;
    let (table, part) = open(&mut ff, &table)?;
    check_writable(&mut ff, &table, table_offset)?;
    let target = parse_slot(&table, slot)?;
    let count = table.ota_count();
    let target_part = match target {
        Some(n) => *table.ota(n).ok_or_else(|| {
            anyhow!(
                "no ota_{} partition: the table has {} OTA app slot(s) (ota_0..ota_{})",
                n,
                count,
                count.saturating_sub(1)
            )
        })?,
        None => *table
            .factory()
            .ok_or_else(|| anyhow!("the partition table has no factory app partition"))?,
    };
    if !no_verify {
        // esp_ota_set_boot_partition verifies the image first (ESP_ERR_OTA_VALIDATE_FAILED).
        let chip = ff.bootloader().map(|b| b.chip);
        let what = format!("partition '{}'", target_part.label.as_str());
        let region = ff.clip(&target_part, &what)?;
        image::verify_flash(ff.flash_mut(), region, chip).map_err(|e| {
            anyhow!(
                "the image in '{}' at 0x{:x} does not verify: {} (otadata unchanged; \
                 --no-verify to switch anyway)",
                target_part.label.as_str(),
                target_part.offset,
                e
            )
        })?;
    }
    let mut od = OtaData::read(ff.flash_mut(), &part).map_err(|e| anyhow!("otadata: {}", e))?;
    let result = match target {
        None => {
            OtaData::erase_all(ff.flash_mut(), &part).map_err(|e| anyhow!("{}", e))?;
            None
        }
        Some(n) => {
            let idx = od
                .set_boot(ff.flash_mut(), &part, n, count, rollback)
                .map_err(|e| anyhow!("{}", e))?;
            Some((idx, od.entries[idx]))
        }
    };
    ff.save()?;
    if as_json {
        let v = match result {
            Some((idx, e)) => {
                json!({"boot_partition": target_part.label.as_str(), "offset": target_part.offset,
                       "sector": idx, "seq": e.seq, "state": e.state().name(),
                       "rollback": rollback})
            }
            None => {
                json!({"boot_partition": target_part.label.as_str(), "offset": target_part.offset,
                       "sector": null, "seq": null, "state": null, "rollback": rollback})
            }
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        match result {
            Some((idx, e)) => println!(
                "otadata[{}] updated: seq {}, state {} ({}): boot partition is now {} at 0x{:x}",
                idx,
                e.seq,
                OtaState::from_u32(e.state).name(),
                rollback_from,
                target_part.label.as_str(),
                target_part.offset
            ),
            None => println!(
                "otadata erased: boot partition is now {} at 0x{:x}",
                target_part.label.as_str(),
                target_part.offset
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
