//! `ota device ...`: create, inspect, boot and update an emulated device.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use embedded_storage::nor_flash::NorFlash;
use ota_core::boot::{self, BootConfig, BootEvent, BootOutcome};
use ota_core::image::{self, ImageSummary};

use crate::cmd_image::app_json;
use ota_core::image::Hex;
use ota_core::otadata::{OtaData, OtaState};
use ota_core::partition::{self, CsvOptions, Partition, PartitionTable, TABLE_OFFSET};
use ota_core::update;
use ota_core::Chip;
use ota_emu::device::{layout, Device};
use ota_emu::flash::{EmuFlash, FaultPlan};
use ota_emu::sdcard::SdCard;
use ota_emu::settings::{BootloaderSettings, DeviceSettings, EfuseSettings};
use ota_service::config::Config;
use serde_json::{json, Value};

use crate::glue::{self, SdAdapter};
use crate::logger;
use crate::FlashArg;

#[derive(Subcommand)]
pub enum DeviceCmd {
    /// Create a device: a flash image with a bootloader, a partition table, erased otadata and
    /// optionally an app in the first app partition (factory, else ota_0).
    Create(CreateArgs),
    /// Show the chip, partition table, otadata entries and the app in each slot.
    Info {
        #[command(flatten)]
        flash: FlashArg,
        /// Print JSON (keys documented in README).
        #[arg(long)]
        json: bool,
    },
    /// Run the 2nd-stage bootloader's selection and show which app boots.
    Boot {
        #[command(flatten)]
        flash: FlashArg,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// Power the device on: boot, run the upgrade list of CONFIG, restart and boot again if asked.
    Run(RunArgs),
    /// The running app confirms itself: esp_ota_mark_app_valid_cancel_rollback (the active
    /// otadata entry becomes VALID; with anti-rollback the eFuse takes its secure_version).
    Confirm {
        #[command(flatten)]
        flash: FlashArg,
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// The running app gives up: esp_ota_mark_app_invalid_rollback_and_reboot (the active
    /// entry becomes INVALID if the previous app can boot), then the device restarts.
    Rollback {
        #[command(flatten)]
        flash: FlashArg,
        #[command(flatten)]
        faults: FaultArgs,
    },
}

/// Exit status of a command stopped by an emulated power cut.
pub const EXIT_POWER_CUT: u8 = 3;
/// Exit status when nothing can boot.
pub const EXIT_UNBOOTABLE: u8 = 2;

/// Fault injection into the emulated flash, counted from power-on (the start of the command).
#[derive(Args, Clone, Default)]
pub struct FaultArgs {
    /// Cut the power once N bytes have been programmed or erased: the operation in progress is
    /// torn, the command prints `power cut after N bytes` and exits with status 3, and the flash
    /// file holds what the chip would hold.
    #[arg(long, value_name = "N")]
    pub power_cut_after_bytes: Option<u64>,
    /// With --power-cut-after-bytes: a torn erase leaves the rest of its sector as random bytes
    /// drawn from SEED (default: the old content stays).
    #[arg(long, value_name = "SEED", requires = "power_cut_after_bytes")]
    pub torn_erase_seed: Option<u64>,
    /// Make every flash write that covers address ADDR fail with an error (a worn-out cell).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub fail_write_at: Option<u32>,
    /// Make every flash erase that covers address ADDR fail with an error.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub fail_erase_at: Option<u32>,
}

fn parse_addr(s: &str) -> std::result::Result<u32, String> {
    glue::parse_size(s).map_err(|e| e.to_string())
}

impl FaultArgs {
    /// Arm the plan on `flash`. With a power cut, the process ends at the cut, as a chip whose
    /// power is gone runs no more code: nothing after it can print success or touch the file.
    pub fn arm(&self, flash: &mut EmuFlash) {
        if self.power_cut_after_bytes.is_none()
            && self.fail_write_at.is_none()
            && self.fail_erase_at.is_none()
        {
            return;
        }
        flash.set_fault_plan(FaultPlan {
            power_cut_after_bytes: self.power_cut_after_bytes,
            fail_write_at: self.fail_write_at,
            fail_erase_at: self.fail_erase_at,
            torn_erase_random: self.torn_erase_seed,
        });
        if self.power_cut_after_bytes.is_some() {
            flash.set_power_cut_hook(Box::new(|n| {
                logger::progress_done();
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "power cut after {} bytes", n);
                let _ = out.flush();
                std::process::exit(i32::from(EXIT_POWER_CUT));
            }));
        }
    }
}

impl FaultArgs {
    /// After a command that was given a cut it never reached: say on stderr how far it got, so
    /// a replay can pick N in `0..=bytes` (every such N cuts the power during this command).
    pub fn report(&self, flash: &EmuFlash) {
        if let Some(n) = self.power_cut_after_bytes {
            if !flash.power_cut_happened() {
                eprintln!(
                    "no power cut: this command programmed or erased {} bytes (fewer than {})",
                    flash.bytes_since_plan(),
                    n
                );
            }
        }
    }
}

/// A device's settings (bootloader rollback options, eFuse secure version: `ota_emu::settings`)
/// and the file they are stored in, if any.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub settings: DeviceSettings,
    /// The flash file whose settings file receives eFuse burns (None: kept in memory only).
    pub flash_path: Option<PathBuf>,
    /// Whether the settings came from a file (else ESP-IDF's defaults).
    pub found: bool,
}

impl Stored {
    /// The settings of the device in `flash`, checked against its chip.
    pub fn load(flash: &Path, chip: Chip) -> Result<Stored> {
        let loaded = DeviceSettings::load_for(flash)?;
        let settings = loaded.unwrap_or_default();
        settings
            .check_for_chip(chip)
            .map_err(|e| anyhow!("{}: {}", DeviceSettings::path_for(flash).display(), e))?;
        Ok(Stored {
            settings,
            flash_path: Some(flash.to_path_buf()),
            found: loaded.is_some(),
        })
    }

    /// Record a new eFuse counter (eFuses only ever go up).
    pub fn store_efuse(&mut self, value: u32) -> Result<()> {
        if value > self.settings.efuse.secure_version {
            self.settings.efuse.secure_version = value;
            if let Some(p) = &self.flash_path {
                self.settings.save_for(p)?;
            }
        }
        Ok(())
    }
}

/// A device opened from its flash file, with the settings stored beside it.
pub struct Session {
    pub dev: Device<EmuFlash>,
    pub stored: Stored,
}

impl Session {
    pub fn open(path: &Path) -> Result<Session> {
        let dev = glue::open_device(path)?;
        let stored = Stored::load(path, dev.chip())?;
        Ok(Session { dev, stored })
    }

    /// Power-on: the bootloader, with this device's options; an eFuse it burns is stored.
    pub fn boot(&mut self, quiet: bool) -> Result<BootOutcome> {
        boot_stored(&mut self.dev, &mut self.stored, quiet)
    }
}

/// Boot with the stored options and keep what the bootloader burnt.
fn boot_stored(
    dev: &mut Device<EmuFlash>,
    stored: &mut Stored,
    quiet: bool,
) -> Result<BootOutcome> {
    let chip = dev.chip();
    let table = dev.table().clone();
    let cfg = stored.settings.boot_config_for(dev.flash_size());
    let out = boot_device_with(dev.flash_mut(), &table, chip, &cfg, quiet)?;
    stored.store_efuse(out.efuse_secure_version)?;
    Ok(out)
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    flash: FlashArg,
    /// Chip (esptool's name: esp32, esp32s2, esp32c3, esp32s3, esp32c6, ...).
    #[arg(long, default_value = "esp32")]
    chip: String,
    /// Flash size: 1MB .. 128MB.
    #[arg(long, default_value = "4MB")]
    flash_size: String,
    /// Partition table CSV (gen_esp32part.py format). Default: the ESP-ADF OTA example's table.
    #[arg(long, value_name = "CSV")]
    partitions: Option<PathBuf>,
    /// App image to put in the first app partition (factory, else ota_0).
    #[arg(long, value_name = "IMAGE")]
    app: Option<PathBuf>,
    /// Data partition contents to write at creation: LABEL=FILE (repeatable).
    #[arg(long, value_name = "LABEL=FILE")]
    data: Vec<String>,
    /// Bootloader built with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE: new apps boot once as
    /// PENDING_VERIFY and are rolled back unless confirmed (`ota device confirm`).
    #[arg(long)]
    rollback: bool,
    /// Bootloader built with CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK (needs --rollback): apps whose
    /// secure_version is below the eFuse counter never boot and are refused by updates.
    #[arg(long, requires = "rollback")]
    anti_rollback: bool,
    /// Initial eFuse secure-version counter (number of burnt bits).
    #[arg(long, value_name = "N", default_value_t = 0)]
    efuse_secure_version: u32,
    /// An `idf.py build` folder: lay out its real bootloader, partition table, otadata and app
    /// from flasher_args.json, padded to the flash size, with the bootloader options of the
    /// project's sdkconfig (BUILD/../sdkconfig or BUILD/config/sdkconfig.json).
    #[arg(long, value_name = "BUILD", conflicts_with_all = ["chip", "flash_size", "partitions", "app", "data", "rollback", "anti_rollback"])]
    from_build: Option<PathBuf>,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    flash: FlashArg,
    /// Upgrade list (TOML; see README).
    #[arg(long, value_name = "TOML")]
    config: PathBuf,
    /// SD card: a folder or a FAT image. Default: `sdcard/` beside the flash file.
    #[arg(long, value_name = "DIR|IMG")]
    sdcard: Option<PathBuf>,
    /// HTTP(S) timeout in milliseconds (connect and read).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(flatten)]
    faults: FaultArgs,
}

/// The ESP-ADF OTA example's partition table with 1 MB app slots, as in its README log
/// (adf-ota-service.md §9.2): ota_1 at 0x110000, flash_tone at 0x210000.
pub const EXAMPLE_CSV: &str = "\
# ESP-ADF examples/ota partition table (1 MB app slots, as in the example's README log)
# Name,   Type, SubType, Offset,   Size, Flags
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
flash_tone, data, 0xff,  ,        1M,
";

pub fn run(cmd: DeviceCmd) -> Result<ExitCode> {
    match cmd {
        DeviceCmd::Create(a) => create(a).map(|_| ExitCode::SUCCESS),
        DeviceCmd::Info { flash, json } => info(&flash.flash, json).map(|_| ExitCode::SUCCESS),
        DeviceCmd::Boot {
            flash,
            json,
            faults,
        } => boot_cmd(&flash.flash, json, &faults),
        DeviceCmd::Run(a) => run_cmd(a),
        DeviceCmd::Confirm { flash, faults } => confirm_cmd(&flash.flash, &faults),
        DeviceCmd::Rollback { flash, faults } => rollback_cmd(&flash.flash, &faults),
    }
}

pub struct CreateSpec<'a> {
    pub chip: Chip,
    pub flash_size: u32,
    pub csv: &'a str,
    pub app: Option<&'a [u8]>,
    pub data: Vec<(String, Vec<u8>)>,
}

/// Lay out a new device in `path`, with ESP-IDF's default bootloader options.
pub fn create_device(path: &Path, spec: &CreateSpec<'_>) -> Result<()> {
    create_device_with(path, spec, &DeviceSettings::default())
}

/// Lay out a new device in `path`; `settings` are stored beside it (always written, so a new
/// device never inherits an old one's).
pub fn create_device_with(
    path: &Path,
    spec: &CreateSpec<'_>,
    settings: &DeviceSettings,
) -> Result<()> {
    let size_code = glue::flash_size_code(spec.flash_size)?;
    let opts = CsvOptions {
        flash_size: Some(spec.flash_size),
        ..CsvOptions::default()
    };
    let table =
        PartitionTable::from_csv(spec.csv, &opts).map_err(|e| anyhow!("partition table: {}", e))?;
    let mut table_bin = [0xFFu8; partition::TABLE_MAX_LEN];
    table
        .to_binary(true, &mut table_bin)
        .map_err(|e| anyhow!("partition table: {}", e))?;
    let mut boot_img = Vec::new();
    image::build_bootloader(spec.chip, size_code, &mut |b: &[u8]| {
        boot_img.extend_from_slice(b)
    })
    .map_err(|e| anyhow!("building the bootloader image: {}", e))?;
    // Check everything before touching the file.
    let app_target = match spec.app {
        Some(app) => {
            let target = table
                .factory()
                .or_else(|| table.ota(0))
                .copied()
                .ok_or_else(|| {
                    anyhow!("the partition table has no factory or ota_0 partition for --app")
                })?;
            check_image(
                app,
                spec.chip,
                &target,
                &settings.boot_config_for(spec.flash_size),
            )?;
            Some((target, app))
        }
        None => None,
    };
    settings.check().map_err(|e| anyhow!("{}", e))?;
    settings
        .check_for_chip(spec.chip)
        .map_err(|e| anyhow!("{}", e))?;
    let mut data = Vec::new();
    for (label, bytes) in &spec.data {
        let p = *table
            .find_data(label)
            .ok_or_else(|| anyhow!("no data partition labelled '{}'", label))?;
        if bytes.len() as u64 > p.size as u64 {
            bail!(
                "{} bytes do not fit in partition {} ({} bytes)",
                bytes.len(),
                label,
                p.size
            );
        }
        data.push((p, bytes));
    }
    if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("replacing {}", path.display()))?;
    }
    let mut flash = EmuFlash::create(path, spec.flash_size)?;
    layout::write_raw(&mut flash, spec.chip.bootloader_offset(), &boot_img)?;
    layout::write_raw(&mut flash, TABLE_OFFSET, &table_bin)?;
    if let Some((target, app)) = app_target {
        layout::write_raw(&mut flash, target.offset, app)?;
    }
    for (p, bytes) in data {
        layout::write_raw(&mut flash, p.offset, bytes)?;
    }
    settings.save_for(path)?;
    Ok(())
}

/// An app image must verify, be for this chip and fit its partition.
fn check_image(
    bytes: &[u8],
    chip: Chip,
    target: &Partition,
    boot: &BootConfig,
) -> Result<ImageSummary> {
    let mut v = image::ImageVerifier::new();
    v.set_mmu_page_rule(boot.mmu_page_rule(chip));
    v.feed(bytes).map_err(|e| anyhow!("app image: {}", e))?;
    let s = v.finish().map_err(|e| anyhow!("app image: {}", e))?;
    if s.header.chip_id != chip.id() {
        bail!(
            "app image is for chip id {} , the device is {} (chip id {})",
            s.header.chip_id,
            chip.name(),
            chip.id()
        );
    }
    if bytes.len() as u64 > target.size as u64 {
        bail!(
            "app image of {} bytes does not fit in {} ({} bytes)",
            bytes.len(),
            target.label.as_str(),
            target.size
        );
    }
    Ok(s)
}

fn create(a: CreateArgs) -> Result<()> {
    if let Some(build) = &a.from_build {
        return crate::from_build::create_from_build(&a.flash.flash, build, a.efuse_secure_version);
    }
    let chip = Chip::from_name(&a.chip).ok_or_else(|| {
        anyhow!(
            "unknown chip '{}' (esp32, esp32s2, esp32c3, esp32s3, esp32c6, ...)",
            a.chip
        )
    })?;
    let flash_size = glue::parse_size(&a.flash_size)?;
    let csv = match &a.partitions {
        Some(p) => crate::from_build::partitions_csv(p)?,
        None => EXAMPLE_CSV.to_string(),
    };
    let app = match &a.app {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let mut data = Vec::new();
    for d in &a.data {
        let (label, file) = d
            .split_once('=')
            .ok_or_else(|| anyhow!("--data takes LABEL=FILE, not '{}'", d))?;
        data.push((
            label.to_string(),
            std::fs::read(file).with_context(|| format!("reading {}", file))?,
        ));
    }
    create_device_with(
        &a.flash.flash,
        &CreateSpec {
            chip,
            flash_size,
            csv: &csv,
            app: app.as_deref(),
            data,
        },
        &DeviceSettings {
            bootloader: BootloaderSettings {
                rollback: a.rollback,
                anti_rollback: a.anti_rollback,
                // The stub bootloader is "built" with Kconfig's default page size.
                mmu_page_size: Some(chip.default_mmu_page_size(flash_size)),
            },
            efuse: EfuseSettings {
                secure_version: a.efuse_secure_version,
            },
        },
    )?;
    println!(
        "created {} ({} flash, {} MB) with {} partitions",
        a.flash.flash.display(),
        chip.name(),
        flash_size >> 20,
        PartitionTable::from_csv(&csv, &CsvOptions::default())
            .map(|t| t.len())
            .unwrap_or(0)
    );
    println!("{}", crate::from_build::STUB_BOOTLOADER_NOTE);
    Ok(())
}

fn type_name(p: &Partition) -> String {
    partition::type_name(p.ptype)
        .map(str::to_string)
        .unwrap_or_else(|| format!("0x{:02x}", p.ptype))
}

fn subtype_name(p: &Partition) -> String {
    partition::subtype_name(p.ptype, p.subtype)
        .map(str::to_string)
        .unwrap_or_else(|| format!("0x{:02x}", p.subtype))
}

fn info(path: &Path, as_json: bool) -> Result<()> {
    let session = Session::open(path)?;
    let settings = session.stored.settings;
    let settings_file = session.stored.found.then(|| DeviceSettings::path_for(path));
    let mut dev = session.dev;
    let chip = dev.chip();
    let table = dev.table().clone();
    let flash_size = dev.flash_size();
    let otadata = match table.otadata() {
        Some(p) => Some(OtaData::read(dev.flash_mut(), p).map_err(|e| anyhow!("otadata: {}", e))?),
        None => None,
    };
    let mut apps = Vec::new();
    for p in table.iter().filter(|p| p.is_app()) {
        let mut v = image::ImageVerifier::new();
        v.set_expected_chip(Some(chip));
        v.set_mmu_page_rule(settings.boot_config_for(flash_size).mmu_page_rule(chip));
        let r = image::verify_flash_with(dev.flash_mut(), p.region(), v);
        apps.push((*p, r));
    }
    if as_json {
        let parts: Vec<Value> = table
            .iter()
            .map(|p| {
                json!({"label": p.label.as_str(), "type": type_name(p), "subtype": subtype_name(p),
                       "offset": p.offset, "size": p.size, "flags": p.flags})
            })
            .collect();
        let od = otadata.map(|od| {
            let entries: Vec<Value> = od
                .entries
                .iter()
                .map(|e| json!({"seq": e.seq, "state": OtaState::from_u32(e.state).name(), "crc_valid": e.crc_ok()}))
                .collect();
            json!({"entries": entries, "active": od.active()})
        });
        let apps: Vec<Value> = apps
            .iter()
            .map(|(p, r)| match r {
                Ok(s) => json!({"label": p.label.as_str(), "offset": p.offset,
                                "app": s.app_desc.as_ref().map(app_json)}),
                Err(e) => {
                    json!({"label": p.label.as_str(), "offset": p.offset, "error": e.to_string()})
                }
            })
            .collect();
        let v = json!({"chip": chip.name(), "flash_size": flash_size, "partitions": parts,
        "otadata": od, "apps": apps,
        "settings": {
            "rollback": settings.bootloader.rollback,
            "anti_rollback": settings.bootloader.anti_rollback,
            "mmu_page_size": settings.bootloader.mmu_page_size,
            "file": settings_file.as_ref().map(|p| p.display().to_string()),
        },
        "efuse": {
            "secure_version": settings.efuse.secure_version,
            "secure_version_bits": boot::secure_version_field_bits(chip),
        }});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "Chip: {} ({}), flash size {} MB ({} bytes)",
        chip.display_name(),
        chip.name(),
        flash_size >> 20,
        flash_size
    );
    println!(
        "Bootloader: rollback {}, anti-rollback {} ({})",
        if settings.bootloader.rollback {
            "enabled"
        } else {
            "disabled"
        },
        if settings.bootloader.anti_rollback {
            "enabled"
        } else {
            "disabled"
        },
        match &settings_file {
            Some(p) => format!("settings in {}", p.display()),
            None => "no settings file: ESP-IDF defaults".to_string(),
        }
    );
    if let Some(p) = settings.bootloader.mmu_page_size {
        println!("Bootloader: MMU page size {} KB", p / 1024);
    }
    println!(
        "eFuse: secure_version {} (of {} bits)",
        settings.efuse.secure_version,
        boot::secure_version_field_bits(chip)
    );
    println!("Partition table at 0x{:x}:", TABLE_OFFSET);
    println!(
        "  {:<16} {:<6} {:<10} {:>10} {:>10} flags",
        "label", "type", "subtype", "offset", "size"
    );
    for p in table.iter() {
        println!(
            "  {:<16} {:<6} {:<10} {:>#10x} {:>#10x} {}",
            p.label.as_str(),
            type_name(p),
            subtype_name(p),
            p.offset,
            p.size,
            p.flags
        );
    }
    match otadata {
        Some(od) => {
            println!("otadata:");
            for (i, e) in od.entries.iter().enumerate() {
                if e.seq == u32::MAX {
                    println!("  [{}] erased", i);
                } else {
                    println!(
                        "  [{}] seq {} state {} crc {}",
                        i,
                        e.seq,
                        OtaState::from_u32(e.state).name(),
                        if e.crc_ok() { "ok" } else { "BAD" }
                    );
                }
            }
            match od.active() {
                Some(a) => println!(
                    "  active entry: {} (boot slot ota_{})",
                    a,
                    od.boot_slot(table.ota_count().max(1)).unwrap_or(0)
                ),
                None => println!("  active entry: none (boots factory, or ota_0 without factory)"),
            }
        }
        None => println!("otadata: none (boots factory)"),
    }
    println!("Apps:");
    for (p, r) in apps {
        match r {
            Ok(s) => match s.app_desc {
                Some(d) => println!(
                    "  {:<16} {} {} (secure_version {}, {} bytes)",
                    p.label.as_str(),
                    d.project_name_str(),
                    d.version_str(),
                    d.secure_version,
                    s.image_len
                ),
                None => println!(
                    "  {:<16} valid image without app descriptor",
                    p.label.as_str()
                ),
            },
            Err(e) => println!("  {:<16} not bootable: {}", p.label.as_str(), e),
        }
    }
    Ok(())
}

/// ESP-IDF's bootloader "Usage" column (bootloader_utility.c).
fn usage(p: &Partition) -> &'static str {
    match (p.ptype, p.subtype) {
        (0, 0x00) => "factory app",
        (0, 0x20) => "test app",
        (0, s) if (0x10..0x20).contains(&s) => "OTA app",
        (0, _) => "Unknown app",
        (1, 0x00) => "OTA data",
        (1, 0x01) => "RF data",
        (1, 0x02) => "WiFi data",
        (1, 0x04) => "NVS keys",
        (1, 0x05) => "efuse",
        (1, _) => "Unknown data",
        _ => "unknown",
    }
}

/// Print the bootloader's partition table listing.
pub fn print_table(table: &PartitionTable) {
    logger::info("boot", "Partition Table:");
    logger::info(
        "boot",
        "## Label            Usage          Type ST Offset   Length",
    );
    for (i, p) in table.iter().enumerate() {
        logger::info(
            "boot",
            &format!(
                "{:2} {:<16} {:<16} {:02x} {:02x} {:08x} {:08x}",
                i,
                p.label.as_str(),
                usage(p),
                p.ptype,
                p.subtype,
                p.offset,
                p.size
            ),
        );
    }
    logger::info("boot", "End of partition table");
}

fn print_boot_event(ev: &BootEvent) {
    match ev {
        BootEvent::Aborted { sector, seq } => logger::warn(
            "boot",
            &format!(
                "otadata[{}] seq {}: PENDING_VERIFY -> ABORTED (app was not confirmed)",
                sector, seq
            ),
        ),
        BootEvent::NoFactoryTryingOta0 => logger::info("boot", "No factory image, trying OTA 0"),
        BootEvent::OtaDataInvalidFallback => logger::error(
            "boot",
            "ota data partition invalid, falling back to factory",
        ),
        BootEvent::OtaDataInvalidTryAll => logger::error(
            "boot",
            "ota data partition invalid and no factory, will try all partitions",
        ),
        BootEvent::PendingVerify { sector, seq } => logger::info(
            "boot",
            &format!("otadata[{}] seq {}: NEW -> PENDING_VERIFY", sector, seq),
        ),
        BootEvent::LoadFailed { partition, error } => logger::error(
            "boot",
            &format!(
                "Failed to verify app image @ 0x{:x} ({}): {}",
                partition.offset,
                partition.label.as_str(),
                error
            ),
        ),
        BootEvent::SetActualOtaSeq { seq } => {
            logger::info("boot", &format!("Set actual ota_seq={} in otadata[0]", seq))
        }
        BootEvent::Loaded { .. } => {}
        BootEvent::FallingBackToTestApp => logger::warn(
            "boot",
            "Falling back to test app as only bootable partition",
        ),
        BootEvent::SecureVersionBurnt { from, to } => logger::info(
            "efuse",
            &format!("Anti-rollback: eFuse secure_version {} -> {}", from, to),
        ),
        BootEvent::SecureVersionOutOfRange {
            version,
            field_bits,
        } => logger::error(
            "efuse",
            &format!(
                "Secure version {} is out of range of the {}-bit eFuse field: not burnt",
                version, field_bits
            ),
        ),
        BootEvent::SecureVersionTooLow {
            partition,
            version,
            efuse,
        } => logger::warn(
            "boot",
            &format!(
                "App @ 0x{:x} ({}) has secure_version {} < eFuse {}: anti-rollback skips it",
                partition.offset,
                partition.label.as_str(),
                version,
                efuse
            ),
        ),
    }
}

/// Boot the device like the 2nd-stage bootloader, printing ESP-IDF-style lines.
pub fn boot_device<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    chip: Chip,
    quiet: bool,
) -> Result<BootOutcome> {
    boot_device_with(flash, table, chip, &BootConfig::default(), quiet)
}

/// [`boot_device`] for a bootloader built with the options of `cfg` (rollback, anti-rollback).
pub fn boot_device_with<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    chip: Chip,
    cfg: &BootConfig,
    quiet: bool,
) -> Result<BootOutcome> {
    if !quiet {
        logger::info(
            "boot",
            &format!(
                "ota-service 2nd stage bootloader emulation, chip {}",
                chip.display_name()
            ),
        );
        print_table(table);
    }
    let mut on_event = |ev: BootEvent| {
        if !quiet {
            print_boot_event(&ev)
        }
    };
    let out =
        boot::boot(flash, table, chip, cfg, &mut on_event).map_err(|e| anyhow!("boot: {}", e))?;
    if !quiet {
        print_loaded(&out);
    }
    Ok(out)
}

fn print_loaded(out: &BootOutcome) {
    let s = &out.summary;
    for (i, seg) in s.segments[..s.segment_count].iter().enumerate() {
        logger::info(
            "esp_image",
            &format!(
                "segment {}: paddr={:08x} vaddr={:08x} size={:05x} ({:6})",
                i,
                out.partition.offset + seg.file_offset + 8,
                seg.load_addr,
                seg.data_len,
                seg.data_len
            ),
        );
    }
    logger::info(
        "boot",
        &format!(
            "Loaded app from partition at offset 0x{:x}",
            out.partition.offset
        ),
    );
    if let Some(d) = &s.app_desc {
        logger::info(
            "app_init",
            &format!("Project name:     {}", d.project_name_str()),
        );
        logger::info(
            "app_init",
            &format!("App version:      {}", d.version_str()),
        );
        logger::info(
            "app_init",
            &format!("Compile time:     {} {}", d.date_str(), d.time_str()),
        );
        logger::info(
            "app_init",
            &format!(
                "ELF file SHA256:  {}...",
                &Hex(&d.app_elf_sha256).to_string()[..16]
            ),
        );
        logger::info(
            "app_init",
            &format!("ESP-IDF:          {}", d.idf_ver_str()),
        );
    }
}

fn boot_cmd(path: &Path, as_json: bool, faults: &FaultArgs) -> Result<ExitCode> {
    let mut session = Session::open(path)?;
    faults.arm(session.dev.flash_mut());
    let r = session.boot(as_json);
    faults.report(session.dev.flash());
    if as_json {
        let v = match &r {
            Ok(out) => {
                let d = out.summary.app_desc.as_ref();
                json!({"slot": out.partition.label.as_str(), "offset": out.partition.offset,
                       "project_name": d.map(|d| d.project_name_str()),
                       "version": d.map(|d| d.version_str()),
                       "ota_state": out.ota_state.map(|s| s.name()),
                       "efuse_secure_version": out.efuse_secure_version})
            }
            Err(e) => json!({"slot": null, "error": e.to_string()}),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    match r {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) if as_json => {
            eprintln!("error: {:#}", e);
            Ok(ExitCode::from(EXIT_UNBOOTABLE))
        }
        Err(e) => Err(e),
    }
}

fn run_cmd(a: RunArgs) -> Result<ExitCode> {
    let config = Config::load(&a.config).map_err(|e| anyhow!("{}", e))?;
    let sd_path = match &a.sdcard {
        Some(p) => Some(p.clone()),
        None => {
            let p = a
                .flash
                .flash
                .parent()
                .unwrap_or(Path::new("."))
                .join("sdcard");
            p.exists().then_some(p)
        }
    };
    let sd = match &sd_path {
        Some(p) => Some(SdAdapter(
            SdCard::open(p).with_context(|| format!("SD card {}", p.display()))?,
        )),
        None => None,
    };
    let mut session = Session::open(&a.flash.flash)?;
    a.faults.arm(session.dev.flash_mut());
    let opts = ota_service::source::SourceOptions {
        timeout: std::time::Duration::from_millis(a.timeout_ms),
        ..Default::default()
    };
    let report = run_device_with(
        &mut session.dev,
        &mut session.stored,
        &config,
        sd.as_ref(),
        opts,
    );
    a.faults.report(session.dev.flash());
    let report = report?;
    let failed = report
        .results
        .iter()
        .filter(|(_, o)| matches!(o, ota_service::Outcome::Failed { .. }))
        .count();
    if failed > 0 {
        // With injected faults, name the failing operation (items only see an error kind).
        if let (Some(_), Some(e)) = (
            session.dev.flash().fault_plan(),
            session.dev.flash().last_error(),
        ) {
            eprintln!("error: the emulated flash reported: {}", e);
        }
        eprintln!(
            "error: {} of {} upgrade items failed (see the log above)",
            failed,
            report.results.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Boot, run the upgrade list, and if asked restart and boot again, with ESP-IDF's default
/// bootloader (no rollback). Shared by `device run` and the demo.
pub fn run_device(
    dev: &mut Device<EmuFlash>,
    config: &Config,
    sd: Option<&SdAdapter>,
    opts: ota_service::source::SourceOptions,
) -> Result<ota_service::RunReport> {
    run_device_with(dev, &mut Stored::default(), config, sd, opts)
}

/// [`run_device`] with the device's stored settings: every boot uses its bootloader options,
/// the items commit as NEW with rollback and check the eFuse with anti-rollback.
pub fn run_device_with(
    dev: &mut Device<EmuFlash>,
    stored: &mut Stored,
    config: &Config,
    sd: Option<&SdAdapter>,
    opts: ota_service::source::SourceOptions,
) -> Result<ota_service::RunReport> {
    let chip = dev.chip();
    let table = dev.table().clone();
    let booted = boot_stored(dev, stored, false)?;
    let mut items = ota_service::items::from_config(config).map_err(|e| anyhow!("{}", e))?;
    logger::info("HTTPS_OTA_EXAMPLE", "[2.2] Start OTA service");
    let settings = stored.settings;
    let mut device = ota_service::Device {
        flash: dev.flash_mut(),
        table: &table,
        chip,
        running: Some(booted.partition),
        rollback: settings.bootloader.rollback,
        anti_rollback: settings.anti_rollback(),
    };
    let mut on_event = |ev: ota_service::Event| print_event(&ev);
    let mut env = ota_service::Env {
        sd: sd.map(|s| s as &dyn ota_service::source::SdCardFs),
        source: opts,
        events: &mut on_event,
    };
    let report = ota_service::run_list(&mut items, &mut device, &mut env);
    logger::progress_done();
    if report.restart {
        logger::info("system", "Restarting...");
        boot_stored(dev, stored, false)?;
    } else {
        logger::info("HTTPS_OTA_EXAMPLE", "[2.3] Finish OTA service");
    }
    Ok(report)
}

/// `esp_ota_mark_app_valid_cancel_rollback` (idf-formats.md §2.5) by the running app.
fn confirm_cmd(path: &Path, faults: &FaultArgs) -> Result<ExitCode> {
    let mut session = Session::open(path)?;
    faults.arm(session.dev.flash_mut());
    let table = session.dev.table().clone();
    let chip = session.dev.chip();
    let anti = session.stored.settings.anti_rollback();
    let done = update::mark_app_valid_cancel_rollback(session.dev.flash_mut(), &table, chip, anti)
        .map_err(|e| {
            anyhow!(
                "esp_ota_mark_app_valid_cancel_rollback failed on {}: {}",
                path.display(),
                e
            )
        })?;
    const TAG: &str = "esp_ota_ops";
    match done.was {
        None => logger::info(
            TAG,
            &format!(
                "otadata[{}] seq {} is already VALID: nothing written",
                done.entry, done.seq
            ),
        ),
        Some(was) => logger::info(
            TAG,
            &format!(
                "otadata[{}] seq {}: {} -> VALID (esp_ota_mark_app_valid_cancel_rollback)",
                done.entry,
                done.seq,
                was.name().to_uppercase()
            ),
        ),
    }
    if let Some(to) = done.efuse_secure_version {
        let from = session.stored.settings.efuse.secure_version;
        if to > from {
            session.stored.store_efuse(to)?;
            logger::info(
                "efuse",
                &format!("Anti-rollback: eFuse secure_version {} -> {}", from, to),
            );
        }
    }
    faults.report(session.dev.flash());
    if !session.stored.settings.bootloader.rollback {
        logger::warn(
            TAG,
            "this device's bootloader has no rollback (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE): \
             it never changes app states, so confirming changes nothing at boot",
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `esp_ota_mark_app_invalid_rollback_and_reboot` (idf-formats.md §2.5), then the restart.
fn rollback_cmd(path: &Path, faults: &FaultArgs) -> Result<ExitCode> {
    let mut session = Session::open(path)?;
    faults.arm(session.dev.flash_mut());
    let table = session.dev.table().clone();
    let chip = session.dev.chip();
    let anti = session.stored.settings.anti_rollback();
    let flash = session.dev.flash_mut();
    let idx = update::mark_app_invalid_rollback(flash, &table, chip, anti).map_err(|e| {
        anyhow!(
            "esp_ota_mark_app_invalid_rollback_and_reboot failed on {} \
             (ESP_ERR_OTA_ROLLBACK_FAILED, nothing written): {}",
            path.display(),
            e
        )
    })?;
    logger::info(
        "esp_ota_ops",
        &format!(
            "otadata[{}]: -> INVALID (esp_ota_mark_app_invalid_rollback_and_reboot)",
            idx
        ),
    );
    logger::info("system", "Restarting...");
    let booted = session.boot(false);
    faults.report(session.dev.flash());
    booted?;
    Ok(ExitCode::SUCCESS)
}

fn print_event(ev: &ota_service::Event) {
    use ota_service::{Event, Outcome};
    match ev {
        Event::Log {
            level,
            tag,
            message,
        } => logger::log(level.letter(), tag, message),
        Event::Progress { id, bytes, total } => {
            logger::progress(&format!("item {}", id), *bytes, *total)
        }
        Event::Result { id, outcome } => {
            logger::progress_done();
            match outcome {
                Outcome::Success => logger::info(
                    "HTTPS_OTA_EXAMPLE",
                    &format!("List id: {}, OTA success", id),
                ),
                Outcome::Skipped { reason, message } => logger::warn(
                    "HTTPS_OTA_EXAMPLE",
                    &format!(
                        "List id: {}, OTA skipped, result: {} ({}): {}",
                        id,
                        reason.code(),
                        reason.name(),
                        message
                    ),
                ),
                Outcome::Failed { reason, message } => logger::error(
                    "HTTPS_OTA_EXAMPLE",
                    &format!(
                        "List id: {}, OTA failed, result: {} ({}): {}",
                        id,
                        reason.code(),
                        reason.name(),
                        message
                    ),
                ),
            }
        }
        Event::Finish => {}
        Event::Restart => {}
    }
}
