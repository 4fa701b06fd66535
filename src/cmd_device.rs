//! `ota device ...`: create, inspect, boot and update an emulated device.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use embedded_storage::nor_flash::NorFlash;
use ota_core::boot::{self, BootConfig, BootEvent, BootOutcome};
use ota_core::image::{self, ImageSummary};

use crate::cmd_image::app_json;
use crate::cmd_partition::{subtype_name, type_name};
use ota_core::image::Hex;
use ota_core::otadata::{OtaData, OtaState};
use ota_core::partition::{self, CsvOptions, Partition, PartitionTable, TABLE_OFFSET};
use ota_core::update;
use ota_core::Chip;
use ota_emu::device::{layout, Device};
use ota_emu::flash::{EmuFlash, EmuFlashN, FaultPlan};
use ota_emu::sdcard::SdCard;
use ota_emu::settings::{BootloaderSettings, DeviceSettings, EfuseSettings, FlashSettings};
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
        /// Print JSON (keys documented in README).
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
/// Exit status when the bootloader finds nothing to boot (`device boot`, and any boot that
/// `device run` / `device rollback` / the demo do), in text and JSON mode alike. Distinct from
/// clap's 2 for a usage error. The whole table is in README's "Exit status" section.
pub const EXIT_UNBOOTABLE: u8 = 4;

/// The 2nd-stage bootloader found nothing to boot (`ota_core::boot::BootError`): the error
/// that makes a command exit with [`EXIT_UNBOOTABLE`].
#[derive(Debug)]
pub struct Unbootable(pub String);

impl std::fmt::Display for Unbootable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nothing boots: {}", self.0)
    }
}

impl std::error::Error for Unbootable {}

/// The exit status for an error: [`EXIT_UNBOOTABLE`] when the bootloader found nothing to
/// boot, else 1.
pub fn exit_status_for(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.downcast_ref::<Unbootable>().is_some()) {
        EXIT_UNBOOTABLE
    } else {
        crate::EXIT_ERROR
    }
}

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
    pub fn arm<const W: usize>(&self, flash: &mut EmuFlashN<W>) {
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
                if logger::output() == logger::Output::Json {
                    let _ = writeln!(out, "{}", json!({"event": "power_cut", "bytes": n}));
                } else {
                    let _ = writeln!(out, "power cut after {} bytes", n);
                }
                let _ = out.flush();
                std::process::exit(i32::from(EXIT_POWER_CUT));
            }));
        }
    }
}

impl FaultArgs {
    /// After a command that was given a cut it never reached: say on stderr how far it got, so
    /// a replay can pick N in `0..=bytes` (every such N cuts the power during this command).
    pub fn report<const W: usize>(&self, flash: &EmuFlashN<W>) {
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
        let file = DeviceSettings::path_for(flash);
        if std::fs::symlink_metadata(&file).is_ok() {
            crate::input::check_input(&file, crate::input::TEXT_LIMIT, "settings file")?;
        }
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
    /// Keep the serial of a newly accepted signed catalogue (it only goes up).
    pub fn store_catalogue_serial(&mut self, serial: u64) -> Result<()> {
        if self
            .settings
            .service
            .catalogue_serial
            .is_none_or(|s| serial > s)
        {
            self.settings.service.catalogue_serial = Some(serial);
            if let Some(p) = &self.flash_path {
                self.settings.save_for(p)?;
            }
        }
        Ok(())
    }

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

/// Run `$body` with `$w` a `const usize` equal to the write unit `$n` (one of
/// `ota_emu::flash::WRITE_SIZES`): the emulated flash's unit is a type parameter, as a flash
/// driver's `WRITE_SIZE` is.
macro_rules! at_write_size {
    ($n:expr, $w:ident => $body:expr) => {
        match $n {
            1 => {
                const $w: usize = 1;
                $body
            }
            2 => {
                const $w: usize = 2;
                $body
            }
            4 => {
                const $w: usize = 4;
                $body
            }
            8 => {
                const $w: usize = 8;
                $body
            }
            16 => {
                const $w: usize = 16;
                $body
            }
            32 => {
                const $w: usize = 32;
                $body
            }
            64 => {
                const $w: usize = 64;
                $body
            }
            128 => {
                const $w: usize = 128;
                $body
            }
            256 => {
                const $w: usize = 256;
                $body
            }
            n => bail!("flash write size {} is not a power of two from 1 to 256", n),
        }
    };
}

/// The flash write unit of the device in `path` (its settings', 4 without settings).
pub fn write_size_of(path: &Path) -> Result<u32> {
    let file = DeviceSettings::path_for(path);
    if std::fs::symlink_metadata(&file).is_ok() {
        crate::input::check_input(&file, crate::input::TEXT_LIMIT, "settings file")?;
    }
    Ok(DeviceSettings::write_size_for(path)?)
}

/// A device opened from its flash file, with the settings stored beside it; `W` is the flash's
/// read and write unit (the settings' `flash.write_size`).
pub struct Session<const W: usize = 4> {
    pub dev: Device<EmuFlashN<W>>,
    pub stored: Stored,
}

impl<const W: usize> Session<W> {
    pub fn open(path: &Path) -> Result<Session<W>> {
        let dev = glue::open_device_at::<W>(path)?;
        let stored = Stored::load(path, dev.chip())?;
        if stored.settings.write_size() as usize != W {
            bail!(
                "{}: the device's flash write size is {}, not {}",
                path.display(),
                stored.settings.write_size(),
                W
            );
        }
        Ok(Session { dev, stored })
    }

    /// Power-on: the bootloader, with this device's options; an eFuse it burns is stored.
    pub fn boot(&mut self, quiet: bool) -> Result<BootOutcome> {
        boot_stored(&mut self.dev, &mut self.stored, quiet)
    }
}

/// Boot with the stored options and keep what the bootloader burnt.
fn boot_stored<const W: usize>(
    dev: &mut Device<EmuFlashN<W>>,
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
    /// The flash driver's read and write unit in bytes (a power of two from 1 to 256; 4 is
    /// esp-storage's, the ESP32 chips' flash driver): every command then reads and writes the
    /// device's flash in whole units, as the chip's driver does.
    #[arg(long, value_name = "N", default_value_t = ota_emu::flash::DEFAULT_WRITE_SIZE)]
    flash_write_size: u32,
    /// Replace the flash file (and its settings file) if it exists; without it an existing
    /// file is refused.
    #[arg(long)]
    force: bool,
    /// An `idf.py build` folder: lay out its real bootloader, partition table, otadata and app
    /// from flasher_args.json, padded to the flash size, with the bootloader options of the
    /// project's sdkconfig (BUILD/../sdkconfig or BUILD/config/sdkconfig.json).
    #[arg(long, value_name = "BUILD", conflicts_with_all = ["chip", "flash_size", "partitions", "app", "data", "rollback", "anti_rollback"])]
    from_build: Option<PathBuf>,
    /// Secure Boot v2: burn this key's digest into the emulated eFuse (SECURE_BOOT_DIGESTn,
    /// repeatable up to 3; a public or private PEM, RSA-3072 or ECDSA P-256/P-384) and enable
    /// secure boot. The bootloader then boots only apps signed by one of them, and updates
    /// must be signed too. With --from-build it replaces the sdkconfig's signing key.
    #[arg(long, value_name = "KEY.pem")]
    secure_boot_key: Vec<PathBuf>,
    /// Revoke key digest N (0..2) of --secure-boot-key (eFuse SECURE_BOOT_KEY_REVOKEn).
    #[arg(long, value_name = "N", requires = "secure_boot_key")]
    revoke_key: Vec<u8>,
    /// The app is built with CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT: updates must be
    /// signed by the key of the running app's first signature block; the bootloader checks
    /// nothing.
    #[arg(long, conflicts_with = "secure_boot_key")]
    signed_apps_no_secure_boot: bool,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    flash: FlashArg,
    /// Upgrade list (TOML; see README).
    #[arg(long, value_name = "TOML", required_unless_present = "ddi")]
    config: Option<PathBuf>,
    #[command(flatten)]
    ddi: DdiArgs,
    /// SD card: a folder or a FAT image. Default: `sdcard/` beside the flash file.
    #[arg(long, value_name = "DIR|IMG")]
    sdcard: Option<PathBuf>,
    /// HTTP(S) timeout in milliseconds (connect and read).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Print one JSON event per line on stdout instead of the log: boot, item_start, progress,
    /// item_finish, restart, log, and a last `result` (keys in README).
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print only errors (the `E` log lines and the `error:` line, on stderr).
    #[arg(long, short)]
    quiet: bool,
    /// Accept only catalogues signed by this key (public or private PEM, Ed25519 or ECDSA
    /// P-256): the config's `catalogue_key`, set or replaced. Every item must then come
    /// through a catalogue (app items with `project`, data items with `catalogue`).
    #[arg(long, value_name = "PUB.pem")]
    catalogue_key: Option<PathBuf>,
    #[command(flatten)]
    faults: FaultArgs,
    #[command(flatten)]
    stack: crate::stack::StackArgs,
}

/// `--ddi URL ...`: one more upgrade item, after the config's: ask this hawkBit DDI server
/// what to install (the same item as `type = "ddi"` in a config).
#[derive(Args)]
pub struct DdiArgs {
    /// A hawkBit DDI server's URL (`http://host:port`, without the tenant): poll it for a
    /// deployment and install its app image.
    #[arg(long, value_name = "URL", requires_all = ["ddi_tenant", "ddi_id"])]
    ddi: Option<String>,
    /// The DDI tenant (hawkBit's default is `DEFAULT`).
    #[arg(long, value_name = "TENANT", requires = "ddi")]
    ddi_tenant: Option<String>,
    /// The device's controller id.
    #[arg(long, value_name = "ID", requires = "ddi")]
    ddi_id: Option<String>,
    /// A file holding the device's security token (`Authorization: TargetToken ...`).
    #[arg(
        long,
        value_name = "FILE",
        requires = "ddi",
        conflicts_with = "ddi_gateway_token_file"
    )]
    ddi_token_file: Option<PathBuf>,
    /// A file holding the tenant's gateway token (`Authorization: GatewayToken ...`).
    #[arg(long, value_name = "FILE", requires = "ddi")]
    ddi_gateway_token_file: Option<PathBuf>,
    /// Polls of the base resource while it offers nothing (waiting `config.polling.sleep`
    /// between two, at most --ddi-max-sleep-ms).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "ddi",
          value_parser = clap::value_parser!(u32).range(1..=ota_service::config::MAX_DDI_POLLS as i64))]
    ddi_polls: u32,
    /// The longest wait between two polls, in ms.
    #[arg(long, value_name = "MS", default_value_t = 3_600_000, requires = "ddi",
          value_parser = clap::value_parser!(u64).range(0..=ota_service::config::MAX_MAX_TIME_MS))]
    ddi_max_sleep_ms: u64,
    /// Install only an image newer than the running one (`version_check = "newer"`).
    #[arg(long, requires = "ddi")]
    ddi_newer: bool,
}

impl DdiArgs {
    /// The DDI item these flags describe, if `--ddi` is given.
    fn spec(&self) -> Result<Option<ota_service::config::UpgradeSpec>> {
        use ota_service::config::{DdiSpec, DdiToken, ItemKind, UpgradeSpec};
        let Some(url) = &self.ddi else {
            return Ok(None);
        };
        let tenant = self.ddi_tenant.clone().unwrap_or_default();
        let id = self.ddi_id.clone().unwrap_or_default();
        let probe = ota_service::items::DdiItem::new(
            url.clone(),
            tenant.clone(),
            id.clone(),
            ota_service::items::DdiAuth::None,
        );
        probe.validate().map_err(|e| anyhow!("--ddi: {e}"))?;
        let token = match (&self.ddi_token_file, &self.ddi_gateway_token_file) {
            (Some(t), _) => {
                crate::input::check_input(t, ota_service::config::MAX_TOKEN_FILE, "token file")?;
                DdiToken::Target(t.clone())
            }
            (None, Some(g)) => {
                crate::input::check_input(g, ota_service::config::MAX_TOKEN_FILE, "token file")?;
                DdiToken::Gateway(g.clone())
            }
            (None, None) => DdiToken::None,
        };
        Ok(Some(UpgradeSpec {
            kind: ItemKind::Ddi,
            uri: url.trim_end_matches('/').to_string(),
            label: None,
            format: ota_service::config::DataFormat::Raw,
            version_check: if self.ddi_newer {
                ota_core::version::VersionPolicy::Newer
            } else {
                ota_core::version::VersionPolicy::None
            },
            reboot: true,
            break_after_fail: false,
            cert: None,
            retry: ota_service::source::RetryPolicy::default(),
            resume: true,
            staging: None,
            project: None,
            catalogue: None,
            limits: ota_service::source::TransferLimits::default(),
            ddi: Some(DdiSpec {
                tenant,
                controller_id: id,
                token,
                polls: self.ddi_polls,
                max_sleep: std::time::Duration::from_millis(self.ddi_max_sleep_ms),
            }),
        }))
    }
}

/// The ESP-ADF OTA example's partition table with 1 MB app slots, as in its README log
/// (esp-adf `examples/ota/partitions.csv`): ota_1 at 0x110000, flash_tone at 0x210000.
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
        DeviceCmd::Info { flash, json } => info(&flash.flash, json),
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
    let settings_path = DeviceSettings::path_for(path);
    if let Ok(m) = std::fs::metadata(&settings_path) {
        if !m.is_file() {
            bail!(
                "settings file {} is {}, not a regular file: refusing to replace it",
                settings_path.display(),
                crate::input::kind_name(&m)
            );
        }
    }
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
    // Only a regular file is replaced (a FIFO or device is never turned into one), and only
    // once the new device is complete: it is laid out in a temporary file beside it, then
    // renamed over it (through a symbolic link, over the link's target).
    crate::output::check_device_path(path, true)?;
    let target = crate::output::resolve(path)?;
    let tmp = crate::output::temp_beside(&target)?;
    let laid_out = (|| -> Result<()> {
        let mut flash = EmuFlash::create(&tmp, spec.flash_size)?;
        layout::write_raw(&mut flash, spec.chip.bootloader_offset(), &boot_img)?;
        layout::write_raw(&mut flash, TABLE_OFFSET, &table_bin)?;
        if let Some((slot, app)) = app_target {
            layout::write_raw(&mut flash, slot.offset, app)?;
        }
        for (p, bytes) in data {
            layout::write_raw(&mut flash, p.offset, bytes)?;
        }
        flash.sync()?;
        drop(flash);
        std::fs::rename(&tmp, &target).with_context(|| format!("replacing {}", path.display()))
    })();
    if laid_out.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    laid_out?;
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
        return crate::from_build::create_from_build(
            &a.flash.flash,
            build,
            a.efuse_secure_version,
            a.flash_write_size,
            (
                &a.secure_boot_key,
                &a.revoke_key,
                a.signed_apps_no_secure_boot,
            ),
        );
    }
    if !ota_emu::flash::WRITE_SIZES.contains(&a.flash_write_size) {
        bail!(
            "--flash-write-size {} is not a power of two from 1 to 256",
            a.flash_write_size
        );
    }
    let chip = Chip::from_name(&a.chip).ok_or_else(|| {
        anyhow!(
            "unknown chip '{}' (esp32, esp32s2, esp32c3, esp32s3, esp32c6, ...)",
            a.chip
        )
    })?;
    let flash_size = glue::parse_size(&a.flash_size)?;
    crate::output::check_device_path(&a.flash.flash, a.force)?;
    use crate::input::{read_bounded, FLASH_LIMIT};
    let csv = match &a.partitions {
        Some(p) => crate::from_build::partitions_csv(p)?,
        None => EXAMPLE_CSV.to_string(),
    };
    let app = match &a.app {
        Some(p) => {
            let bytes = read_bounded(p, FLASH_LIMIT, "app image")?;
            glue::refuse_elf(&bytes, p, "an app image")?;
            Some(bytes)
        }
        None => None,
    };
    let mut data = Vec::new();
    for d in &a.data {
        let (label, file) = d
            .split_once('=')
            .ok_or_else(|| anyhow!("--data takes LABEL=FILE, not '{}'", d))?;
        let what = format!("--data {} file", label);
        let bytes = read_bounded(Path::new(file), FLASH_LIMIT, &what)?;
        glue::refuse_elf(&bytes, Path::new(file), "data for a partition")?;
        data.push((label.to_string(), bytes));
    }
    let settings = DeviceSettings {
        bootloader: BootloaderSettings {
            rollback: a.rollback,
            anti_rollback: a.anti_rollback,
            // The stub bootloader is "built" with Kconfig's default page size.
            mmu_page_size: Some(chip.default_mmu_page_size(flash_size)),
        },
        efuse: EfuseSettings {
            secure_version: a.efuse_secure_version,
        },
        flash: FlashSettings {
            write_size: Some(a.flash_write_size),
        },
        secure_boot: crate::device_sb::settings_from_args(
            &a.secure_boot_key,
            &a.revoke_key,
            a.signed_apps_no_secure_boot,
        )?,
        service: Default::default(),
    };
    if let (Some(bytes), Some(p)) = (&app, &a.app) {
        crate::device_sb::check_first_app(&settings, bytes, p)?;
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
        &settings,
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

/// A tone bin found in a data partition (its first bytes carry the tone header tag): what
/// `device info` shows about it.
struct ToneView {
    partition: Partition,
    format: u32,
    count: u16,
    /// Format 1: the descriptor's version and project name.
    version: Option<String>,
    project_name: Option<String>,
    /// Our full check (`tone::tone_partition_check`: table, tail, CRC-32) passes.
    valid: bool,
    /// ESP-ADF's `tone_partition_init` accepts the partition.
    adf_valid: bool,
    error: Option<String>,
}

/// The tone bin in data partition `p`, if its header carries the tone tag. Uses
/// `ota_core::tone::{tone_partition_check, tone_partition_init}` directly.
fn tone_view<const W: usize>(flash: &mut EmuFlashN<W>, p: &Partition) -> Option<ToneView> {
    use ota_core::tone::{self, ToneHeader, TONE_HEADER_SIZE};
    if p.ptype != partition::TYPE_DATA || p.size < TONE_HEADER_SIZE as u32 {
        return None;
    }
    let mut head = [0u8; TONE_HEADER_SIZE];
    ota_core::flash::read(flash, p.offset, &mut head).ok()?;
    let header = ToneHeader::parse(&head).ok()?;
    if !header.tag_ok() {
        return None;
    }
    let checked = tone::tone_partition_check(flash, p);
    let adf = tone::tone_partition_init(flash, p);
    let desc = match (&checked, &adf) {
        (Ok(i), _) => i.desc,
        (_, Ok(i)) => i.desc,
        _ => None,
    };
    Some(ToneView {
        partition: *p,
        format: header.format,
        count: header.total_num,
        version: desc.map(|d| d.version_str().to_string()),
        project_name: desc.map(|d| d.project_name_str().to_string()),
        valid: checked.is_ok(),
        adf_valid: adf.is_ok(),
        error: checked.err().map(|e| e.to_string()),
    })
}

/// What `device info` shows, gathered from the flash.
struct InfoView {
    chip: Chip,
    flash_size: u32,
    settings: DeviceSettings,
    settings_file: Option<PathBuf>,
    partitions: Vec<Partition>,
    /// The bootloader's verdict when it refuses the table (the partitions are then those a
    /// lenient reader found: `flashfile::read_table_lenient`).
    table_error: Option<String>,
    table_warnings: Vec<String>,
    otadata: Option<std::result::Result<OtaData, String>>,
    apps: Vec<(Partition, std::result::Result<ImageSummary, String>)>,
    /// Each app's signature sector and its verdict under the device's settings.
    signatures: Vec<Option<ota_core::secure_boot::SlotSignatures>>,
    tones: Vec<ToneView>,
}

/// The partition table as `device info` read it.
struct TableRead {
    partitions: Vec<Partition>,
    /// The bootloader's verdict, when it refuses the table.
    error: Option<String>,
    /// What a lenient read noticed.
    notes: Vec<String>,
}

impl InfoView {
    fn gather<const W: usize>(
        flash: &mut EmuFlashN<W>,
        chip: Chip,
        flash_size: u32,
        read: TableRead,
        stored: Stored,
        path: &Path,
    ) -> InfoView {
        let TableRead {
            partitions,
            error: table_error,
            notes: mut table_warnings,
        } = read;
        let mut table = PartitionTable::new();
        for p in &partitions {
            let _ = table.push(*p);
        }
        let opts = CsvOptions {
            table_offset: TABLE_OFFSET,
            flash_size: Some(flash_size),
            ..CsvOptions::default()
        };
        if let Err(e) = table.verify(&opts) {
            table_warnings.push(format!("gen_esp32part would refuse this table: {}", e));
        }
        let otadata = partitions
            .iter()
            .find(|p| p.ptype == partition::TYPE_DATA && p.subtype == partition::SUBTYPE_DATA_OTA)
            .map(|p| OtaData::read(flash, p).map_err(|e| e.to_string()));
        let apps: Vec<(Partition, std::result::Result<ImageSummary, String>)> = partitions
            .iter()
            .filter(|p| p.is_app())
            .map(|p| {
                let mut v = image::ImageVerifier::new();
                v.set_expected_chip(Some(chip));
                v.set_mmu_page_rule(
                    stored
                        .settings
                        .boot_config_for(flash_size)
                        .mmu_page_rule(chip),
                );
                let r = image::verify_flash_with(flash, p.region(), v);
                (*p, r.map_err(|e| e.to_string()))
            })
            .collect();
        let signatures = apps
            .iter()
            .map(|(p, r)| {
                r.as_ref().ok().and_then(|s| {
                    crate::device_sb::slot_status(flash, &stored.settings, p, s.image_len)
                })
            })
            .collect();
        let tones = partitions
            .iter()
            .filter_map(|p| tone_view(flash, p))
            .collect();
        InfoView {
            chip,
            flash_size,
            settings: stored.settings,
            settings_file: stored.found.then(|| DeviceSettings::path_for(path)),
            partitions,
            table_error,
            table_warnings,
            otadata,
            apps,
            signatures,
            tones,
        }
    }
}

/// `device info` of a device whose partition table its bootloader refuses: the entries a
/// lenient reader finds and the bootloader's verdict.
/// `None` when the table is not the reason (the original error is then reported).
fn rejected_table_view(path: &Path) -> Option<InfoView> {
    crate::input::check_input(path, crate::input::FLASH_LIMIT, "flash image").ok()?;
    let mut flash = EmuFlash::open(path).ok()?;
    let name = path.display().to_string();
    let boot = ota_emu::device::detect_bootloader(&mut flash, &name).ok()?;
    let mut bytes = vec![0u8; partition::TABLE_MAX_LEN];
    ota_core::flash::read(&mut flash, TABLE_OFFSET, &mut bytes).ok()?;
    let verdict = PartitionTable::parse(
        &bytes,
        partition::ReadRule::Bootloader {
            chip_size: boot.flash_size,
        },
    )
    .err()?;
    let lenient = crate::flashfile::read_table_lenient(&bytes);
    let stored = Stored::load(path, boot.chip).unwrap_or_default();
    Some(InfoView::gather(
        &mut flash,
        boot.chip,
        boot.flash_size,
        TableRead {
            partitions: lenient.partitions,
            error: Some(verdict.to_string()),
            notes: lenient.notes,
        },
        stored,
        path,
    ))
}

fn info(path: &Path, as_json: bool) -> Result<ExitCode> {
    at_write_size!(write_size_of(path)?, W => info_at::<W>(path, as_json))
}

fn info_at<const W: usize>(path: &Path, as_json: bool) -> Result<ExitCode> {
    let view = match Session::<W>::open(path) {
        Ok(mut session) => {
            {
                let table = session.dev.table().clone();
                warn_rollback_state(session.dev.flash_mut(), &table, &session.stored);
            }
            let mut dev = session.dev;
            let chip = dev.chip();
            let flash_size = dev.flash_size();
            let partitions = dev.table().iter().copied().collect();
            InfoView::gather(
                dev.flash_mut(),
                chip,
                flash_size,
                TableRead {
                    partitions,
                    error: None,
                    notes: Vec::new(),
                },
                session.stored,
                path,
            )
        }
        Err(e) => match rejected_table_view(path) {
            Some(v) => v,
            None => return Err(e),
        },
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&info_json(&view))?);
    } else {
        print_info(&view);
    }
    match &view.table_error {
        Some(e) => {
            eprintln!(
                "error: ESP-IDF's 2nd-stage bootloader refuses the partition table at 0x{:x} of \
                 {}: {}; nothing can boot",
                TABLE_OFFSET,
                path.display(),
                e
            );
            Ok(ExitCode::from(EXIT_UNBOOTABLE))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

fn info_json(v: &InfoView) -> Value {
    let parts: Vec<Value> = v
        .partitions
        .iter()
        .map(|p| {
            json!({"label": p.label.as_str(), "type": type_name(p), "subtype": subtype_name(p),
                   "offset": p.offset, "size": p.size, "flags": p.flags})
        })
        .collect();
    let od = v.otadata.as_ref().map(|r| match r {
        Ok(od) => {
            let entries: Vec<Value> = od
                .entries
                .iter()
                .map(|e| json!({"seq": e.seq, "state": OtaState::from_u32(e.state).name(), "crc_valid": e.crc_ok()}))
                .collect();
            json!({"entries": entries, "active": od.active()})
        }
        Err(e) => json!({"entries": [], "active": null, "error": e}),
    });
    let apps: Vec<Value> = v
        .apps
        .iter()
        .zip(&v.signatures)
        .map(|((p, r), sig)| match r {
            Ok(s) => json!({"label": p.label.as_str(), "offset": p.offset,
                            "app": s.app_desc.as_ref().map(app_json),
                            "signature": crate::device_sb::slot_json(&v.settings, sig)}),
            Err(e) => json!({"label": p.label.as_str(), "offset": p.offset, "error": e}),
        })
        .collect();
    let tones: Vec<Value> = v
        .tones
        .iter()
        .map(|t| {
            json!({"label": t.partition.label.as_str(), "offset": t.partition.offset,
                   "format": t.format, "count": t.count, "version": t.version,
                   "project_name": t.project_name, "valid": t.valid, "adf_valid": t.adf_valid,
                   "error": t.error})
        })
        .collect();
    json!({"chip": v.chip.name(), "flash_size": glue::flash_size_name(v.flash_size), "partitions": parts,
    "table_error": v.table_error, "table_warnings": v.table_warnings,
    "otadata": od, "apps": apps, "tones": tones,
    "settings": {
        "rollback": v.settings.bootloader.rollback,
        "anti_rollback": v.settings.bootloader.anti_rollback,
        "mmu_page_size": v.settings.bootloader.mmu_page_size,
        "flash_write_size": v.settings.write_size(),
        "file": v.settings_file.as_ref().map(|p| p.display().to_string()),
        "secure_boot": crate::device_sb::settings_json(&v.settings),
    },
    "efuse": {
        "secure_version": v.settings.efuse.secure_version,
        "secure_version_bits": boot::secure_version_field_bits(v.chip),
    }})
}

fn print_info(v: &InfoView) {
    let (chip, settings) = (v.chip, &v.settings);
    println!(
        "Chip: {} ({}), flash size {} MB ({} bytes)",
        chip.display_name(),
        chip.name(),
        v.flash_size >> 20,
        v.flash_size
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
        match &v.settings_file {
            Some(p) => format!("settings in {}", p.display()),
            None => "no settings file: ESP-IDF defaults".to_string(),
        }
    );
    if let Some(p) = settings.bootloader.mmu_page_size {
        println!("Bootloader: MMU page size {} KB", p / 1024);
    }
    println!(
        "Flash: read/write unit {} bytes (the flash driver's READ_SIZE/WRITE_SIZE)",
        settings.write_size()
    );
    println!(
        "eFuse: secure_version {} (of {} bits)",
        settings.efuse.secure_version,
        boot::secure_version_field_bits(chip)
    );
    crate::device_sb::print_settings(settings);
    match &v.table_error {
        Some(e) => {
            println!(
                "Partition table at 0x{:x}: REFUSED by ESP-IDF's 2nd-stage bootloader: {}",
                TABLE_OFFSET, e
            );
            println!("  the entries as read, up to the first that is not a partition:");
        }
        None => println!("Partition table at 0x{:x}:", TABLE_OFFSET),
    }
    println!(
        "  {:<16} {:<6} {:<10} {:>10} {:>10} flags",
        "label", "type", "subtype", "offset", "size"
    );
    for p in &v.partitions {
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
    for w in &v.table_warnings {
        println!("  note: {}", w);
    }
    match &v.otadata {
        Some(Ok(od)) => {
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
            let ota_count = v
                .partitions
                .iter()
                .filter(|p| p.ota_slot().is_some())
                .count();
            match od.active() {
                Some(a) => println!(
                    "  active entry: {} (boot slot ota_{})",
                    a,
                    od.boot_slot((ota_count as u8).max(1)).unwrap_or(0)
                ),
                None => println!("  active entry: none (boots factory, or ota_0 without factory)"),
            }
        }
        Some(Err(e)) => println!("otadata: unreadable: {}", e),
        None => println!("otadata: none (boots factory)"),
    }
    println!("Apps:");
    for ((p, r), sig) in v.apps.iter().zip(&v.signatures) {
        match r {
            Ok(s) => match &s.app_desc {
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
        crate::device_sb::print_slot(&v.settings, sig);
    }
    if !v.tones.is_empty() {
        println!("Tone bins:");
    }
    for t in &v.tones {
        let version = t
            .version
            .as_deref()
            .map(|s| format!(", version {}", s))
            .unwrap_or_default();
        let state = match &t.error {
            None => "valid".to_string(),
            Some(e) => format!(
                "DAMAGED: {} (ESP-ADF's tone_partition_init {} it)",
                e,
                if t.adf_valid { "accepts" } else { "refuses" }
            ),
        };
        println!(
            "  {:<16} format {}, {} files{}: {}",
            t.partition.label.as_str(),
            t.format,
            t.count,
            version,
            state
        );
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
                partition::bootloader_usage(p.ptype, p.subtype),
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
        print_boot_banner(table, chip);
    }
    let mut on_event = |ev: BootEvent| {
        if !quiet {
            print_boot_event(&ev)
        }
    };
    let out = boot::boot(flash, table, chip, cfg, &mut on_event).map_err(|e| match e {
        ota_core::Error::Boot(b) => anyhow::Error::new(Unbootable(b.to_string())),
        other => anyhow!("boot: {}", other),
    })?;
    if !quiet {
        print_loaded(&out);
    }
    Ok(out)
}

/// The emulated bootloader's first lines: its banner and the partition table.
fn print_boot_banner(table: &PartitionTable, chip: Chip) {
    logger::info(
        "boot",
        &format!(
            "ota-service 2nd stage bootloader emulation, chip {}",
            chip.display_name()
        ),
    );
    print_table(table);
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
    at_write_size!(write_size_of(path)?, W => boot_cmd_at::<W>(path, as_json, faults))
}

fn boot_cmd_at<const W: usize>(path: &Path, as_json: bool, faults: &FaultArgs) -> Result<ExitCode> {
    let mut session = Session::<W>::open(path)?;
    let table = session.dev.table().clone();
    warn_rollback_state(session.dev.flash_mut(), &table, &session.stored);
    faults.arm(session.dev.flash_mut());
    let r = session.boot(as_json);
    faults.report(session.dev.flash());
    if as_json {
        let v = match &r {
            Ok(out) => boot_json(out),
            Err(e) => json!({"slot": null, "error": crate::error_text(e)}),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    // The same status in text and JSON mode: the error (nothing boots: EXIT_UNBOOTABLE) goes
    // to main, which prints it and picks the status.
    r.map(|_| ExitCode::SUCCESS)
}

/// What booted, as `device boot --json` prints it (and `device run --json`'s boot events).
fn boot_json(out: &BootOutcome) -> Value {
    let d = out.summary.app_desc.as_ref();
    json!({"slot": out.partition.label.as_str(), "offset": out.partition.offset,
           "project_name": d.map(|d| d.project_name_str()),
           "version": d.map(|d| d.version_str()),
           "ota_state": out.ota_state.map(|s| s.name()),
           "efuse_secure_version": out.efuse_secure_version})
}

/// `device run --json`'s boot event.
fn emit_boot(out: &BootOutcome) {
    if logger::output() == logger::Output::Json {
        let mut v = boot_json(out);
        v["event"] = json!("boot");
        logger::json_event(&v);
    }
}

fn run_cmd(a: RunArgs) -> Result<ExitCode> {
    a.stack.check();
    if a.json {
        logger::set_output(logger::Output::Json);
    } else if a.quiet {
        logger::set_output(logger::Output::Quiet);
    }
    let r = run_cmd_inner(&a);
    if a.json {
        let v = match &r {
            Ok((code, report, slot)) => {
                let failed = report
                    .results
                    .iter()
                    .filter(|(_, o)| matches!(o, ota_service::Outcome::Failed { .. }))
                    .count();
                json!({"event": "result", "status": if failed > 0 { "failed" } else { "ok" },
                       "exit": code, "items": report.results.len(), "failed": failed,
                       "restart": report.restart, "running": slot})
            }
            Err(e) => {
                let code = exit_status_for(e);
                json!({"event": "result",
                       "status": if code == EXIT_UNBOOTABLE { "unbootable" } else { "error" },
                       "exit": code, "error": crate::error_text(e)})
            }
        };
        logger::json_event(&v);
    }
    r.map(|(code, _, _)| ExitCode::from(code))
}

/// `device run`: the exit status, the report and the slot running at the end.
fn run_cmd_inner(a: &RunArgs) -> Result<(u8, ota_service::RunReport, Option<String>)> {
    let mut config = match &a.config {
        Some(path) => crate::input::load_config(path)?,
        None => Config {
            upgrade: Vec::new(),
            catalogue_key: None,
            catalogue_serial: None,
        },
    };
    if let Some(spec) = a.ddi.spec()? {
        config.upgrade.push(spec);
    }
    if let Some(k) = &a.catalogue_key {
        // Checked here so that a bad key file is named before the device powers on.
        crate::cmd_catalogue::load_public_key(k)?;
        config.catalogue_key = Some(k.clone());
        config
            .check_catalogue_items()
            .map_err(|e| anyhow!("--catalogue-key {}: {}", k.display(), e))?;
    }
    let config = config;
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
        // The card's own errors name it ("SD card DIR not found ...").
        Some(p) => Some(SdAdapter(SdCard::open(p)?)),
        None => None,
    };
    at_write_size!(write_size_of(&a.flash.flash)?, W => run_session::<W>(a, &config, sd.as_ref()))
}

/// `device run` on a flash of unit `W`, once the config and the SD card are loaded.
fn run_session<const W: usize>(
    a: &RunArgs,
    config: &Config,
    sd: Option<&SdAdapter>,
) -> Result<(u8, ota_service::RunReport, Option<String>)> {
    let mut session = Session::<W>::open(&a.flash.flash)?;
    // The newest signed catalogue this device accepted (older ones are replays).
    let mut config = config.clone();
    config.catalogue_serial = session.stored.settings.service.catalogue_serial;
    let config = &config;
    a.faults.arm(session.dev.flash_mut());
    let opts = ota_service::source::SourceOptions {
        timeout: std::time::Duration::from_millis(a.timeout_ms),
        ..Default::default()
    };
    let report = match a.stack.stack {
        crate::stack::StackKind::Std => {
            run_device_with(&mut session.dev, &mut session.stored, config, sd, opts)
        }
        crate::stack::StackKind::Embassy => crate::stack::with_embassy_service(
            a.stack.link.unwrap_or_default(),
            sd.map(|s| s as &dyn ota_service::source::SdCardFs),
            opts.clone(),
            |service| {
                run_device_service(
                    &mut session.dev,
                    &mut session.stored,
                    config,
                    sd,
                    opts,
                    &mut || {},
                    Some(service),
                )
            },
        )
        .and_then(|r| r),
    };
    a.faults.report(session.dev.flash());
    let (report, running) = report?;
    let running = Some(running.partition.label.as_str().to_string());
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
            "error: {} of {} upgrade items failed ({})",
            failed,
            report.results.len(),
            if a.json {
                "see the item_finish events"
            } else {
                "see the log above"
            }
        );
        return Ok((crate::EXIT_ERROR, report, running));
    }
    Ok((0, report, running))
}

/// Boot, run the upgrade list, and if asked restart and boot again, with ESP-IDF's default
/// bootloader (no rollback). `app_main` runs once the bootloader has started the app, before
/// the OTA service starts (the demo prints the example's own lines there). Returns the report
/// and what runs at the end.
pub fn run_device<const W: usize>(
    dev: &mut Device<EmuFlashN<W>>,
    config: &Config,
    sd: Option<&SdAdapter>,
    opts: ota_service::source::SourceOptions,
    app_main: &mut dyn FnMut(),
) -> Result<(ota_service::RunReport, BootOutcome)> {
    run_device_hooked(dev, &mut Stored::default(), config, sd, opts, app_main)
}

/// [`run_device`] with the device's stored settings: every boot uses its bootloader options,
/// the items commit as NEW with rollback and check the eFuse with anti-rollback. Returns the
/// report and what runs at the end (after the restart, if there was one).
pub fn run_device_with<const W: usize>(
    dev: &mut Device<EmuFlashN<W>>,
    stored: &mut Stored,
    config: &Config,
    sd: Option<&SdAdapter>,
    opts: ota_service::source::SourceOptions,
) -> Result<(ota_service::RunReport, BootOutcome)> {
    run_device_hooked(dev, stored, config, sd, opts, &mut || {})
}

/// [`run_device_with`] with an `app_main` hook (see [`run_device`]): the device's life is
/// `ota_sim::run`; what the CLI prints around it is [`CliHooks`].
fn run_device_hooked<const W: usize>(
    dev: &mut Device<EmuFlashN<W>>,
    stored: &mut Stored,
    config: &Config,
    sd: Option<&SdAdapter>,
    opts: ota_service::source::SourceOptions,
    app_main: &mut dyn FnMut(),
) -> Result<(ota_service::RunReport, BootOutcome)> {
    run_device_service(dev, stored, config, sd, opts, app_main, None)
}

/// [`run_device_hooked`] with the list run by `service` (another driver than the std one:
/// `--stack embassy`), when given.
fn run_device_service<const W: usize>(
    dev: &mut Device<EmuFlashN<W>>,
    stored: &mut Stored,
    config: &Config,
    sd: Option<&SdAdapter>,
    opts: ota_service::source::SourceOptions,
    app_main: &mut dyn FnMut(),
    service: Option<&mut ota_sim::Service<'_, EmuFlashN<W>>>,
) -> Result<(ota_service::RunReport, BootOutcome)> {
    let table = dev.table().clone();
    warn_rollback_state(dev.flash_mut(), &table, stored);
    let mut board = ota_sim::Board::new(
        table,
        dev.chip(),
        stored.settings.boot_config_for(dev.flash_size()),
    );
    // The emulated bootloader reads the table at the default offset (ota-emu's Device).
    board.table_offset = TABLE_OFFSET;
    board.flash_size = Some(dev.flash_size());
    board.signatures = stored.settings.app_signatures();
    let mut hooks = CliHooks {
        stored,
        config,
        progress: ProgressEvents::default(),
        app_main,
    };
    let sources = ota_sim::Sources {
        sd: sd.map(|s| s as &dyn ota_service::source::SdCardFs),
        options: opts,
    };
    let list = ota_sim::UpgradeList::Config(config);
    let run = match service {
        Some(service) => {
            ota_sim::run_with_service(dev.flash_mut(), &mut board, list, service, &mut hooks)
        }
        None => ota_sim::run(dev.flash_mut(), &mut board, list, sources, &mut hooks),
    }
    .map_err(device_error)?;
    let running = run.after_restart.unwrap_or(run.first);
    Ok((run.report, running))
}

/// What `ota device run` (and the demo) print around the device's life: the bootloader's
/// lines, the service's log or JSON events, and the eFuse the bootloader burns, stored.
struct CliHooks<'a> {
    stored: &'a mut Stored,
    config: &'a Config,
    progress: ProgressEvents,
    app_main: &'a mut dyn FnMut(),
}

impl ota_sim::Hooks for CliHooks<'_> {
    type Error = anyhow::Error;

    fn powering_on(&mut self, board: &ota_sim::Board) -> Result<()> {
        print_boot_banner(&board.table, board.chip);
        Ok(())
    }
    fn boot_event(&mut self, ev: &BootEvent) {
        print_boot_event(ev);
    }
    fn booted(&mut self, out: &BootOutcome, _board: &ota_sim::Board) -> Result<()> {
        print_loaded(out);
        self.stored.store_efuse(out.efuse_secure_version)?;
        emit_boot(out);
        Ok(())
    }
    fn app_main(&mut self) -> Result<()> {
        (self.app_main)();
        Ok(())
    }
    fn service_start(&mut self) {
        logger::info("HTTPS_OTA_EXAMPLE", "[2.2] Start OTA service");
    }
    fn event(&mut self, ev: ota_service::Event) {
        if let ota_service::Event::CatalogueAccepted { serial, .. } = &ev {
            // Kept beside the flash (on a chip: NVS), so an older catalogue is a replay later.
            if let Err(e) = self.stored.store_catalogue_serial(*serial) {
                logger::error(
                    "OTA_MANIFEST",
                    &format!("cannot keep the catalogue serial {serial}: {e:#}"),
                );
            }
        }
        print_event(&ev, self.config, &mut self.progress);
    }
    fn service_done(&mut self, report: &ota_service::RunReport) {
        logger::progress_done();
        if !report.restart {
            logger::info("HTTPS_OTA_EXAMPLE", "[2.3] Finish OTA service");
        }
    }
    fn restarting(&mut self) {
        logger::info("system", "Restarting...");
        if logger::output() == logger::Output::Json {
            logger::json_event(&json!({"event": "restart"}));
        }
    }
}

/// A device run's error as the CLI reports it: nothing to boot is [`Unbootable`] (exit
/// status [`EXIT_UNBOOTABLE`]).
pub fn device_error(e: ota_sim::Error<anyhow::Error>) -> anyhow::Error {
    match e {
        ota_sim::Error::Boot(ota_core::Error::Boot(b)) => {
            anyhow::Error::new(Unbootable(b.to_string()))
        }
        ota_sim::Error::Boot(other) => anyhow!("boot: {}", other),
        ota_sim::Error::Config(m) => anyhow!("{}", m),
        ota_sim::Error::Hook(e) => e,
        other => anyhow!("{}", other),
    }
}

/// otadata entries whose state only a bootloader with rollback acts on (NEW, PENDING_VERIFY),
/// as `(entry index, state)`: valid entries only (the bootloader ignores the others).
pub fn rollback_states<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
) -> Vec<(usize, OtaState)> {
    let Some(p) = table.otadata() else {
        return Vec::new();
    };
    let Ok(od) = OtaData::read(flash, p) else {
        return Vec::new();
    };
    od.entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.seq != ota_core::otadata::SEQ_ERASED && e.crc_ok())
        .map(|(i, e)| (i, e.state()))
        .filter(|(_, s)| matches!(s, OtaState::New | OtaState::PendingVerify))
        .collect()
}

/// The warning for otadata states that the device's bootloader ignores (rollback off), if any:
/// an app committed with rollback in mind would otherwise never be rolled back, silently.
pub fn rollback_state_warning<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    stored: &Stored,
) -> Option<String> {
    if stored.settings.bootloader.rollback {
        return None;
    }
    let states = rollback_states(flash, table);
    if states.is_empty() {
        return None;
    }
    let list: Vec<String> = states
        .iter()
        .map(|(i, s)| format!("otadata[{}] is {}", i, s.name().to_uppercase()))
        .collect();
    let settings = stored
        .flash_path
        .as_deref()
        .map(|p| DeviceSettings::path_for(p).display().to_string())
        .unwrap_or_else(|| "the device settings".to_string());
    let why = if stored.found {
        format!("{} says rollback = false", settings)
    } else {
        format!(
            "there is no {} (ESP-IDF's default: no CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE)",
            settings
        )
    };
    Some(format!(
        "{}, but {}: this bootloader ignores the state and never rolls the app back. If the \
         board's bootloader has rollback, set `rollback = true` under [bootloader] in {}",
        list.join(" and "),
        why,
        settings
    ))
}

/// Print [`rollback_state_warning`] on stderr (not with `--quiet`).
pub fn warn_rollback_state<F: NorFlash>(flash: &mut F, table: &PartitionTable, stored: &Stored) {
    if logger::output() == logger::Output::Quiet {
        return;
    }
    if let Some(w) = rollback_state_warning(flash, table, stored) {
        eprintln!("warning: {}", w);
    }
}

/// `device run --json` progress events: one per item every [`PROGRESS_EVENT_STEP`] bytes,
/// plus the last one.
#[derive(Default)]
struct ProgressEvents {
    last: Option<(usize, u64)>,
}

/// Bytes between two progress events of one item.
const PROGRESS_EVENT_STEP: u64 = 64 * 1024;

/// `esp_ota_mark_app_valid_cancel_rollback` (esp-idf `esp_ota_ops.c`) by the running app.
fn confirm_cmd(path: &Path, faults: &FaultArgs) -> Result<ExitCode> {
    at_write_size!(write_size_of(path)?, W => confirm_cmd_at::<W>(path, faults))
}

fn confirm_cmd_at<const W: usize>(path: &Path, faults: &FaultArgs) -> Result<ExitCode> {
    let mut session = Session::<W>::open(path)?;
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

/// `esp_ota_mark_app_invalid_rollback_and_reboot` (esp-idf `esp_ota_ops.c`), then the restart.
fn rollback_cmd(path: &Path, faults: &FaultArgs) -> Result<ExitCode> {
    at_write_size!(write_size_of(path)?, W => rollback_cmd_at::<W>(path, faults))
}

fn rollback_cmd_at<const W: usize>(path: &Path, faults: &FaultArgs) -> Result<ExitCode> {
    let mut session = Session::<W>::open(path)?;
    faults.arm(session.dev.flash_mut());
    let table = session.dev.table().clone();
    let chip = session.dev.chip();
    let anti = session.stored.settings.anti_rollback();
    let flash = session.dev.flash_mut();
    let idx = update::mark_app_invalid_rollback(flash, &table, chip, anti).map_err(|e| {
        anyhow!(
            "esp_ota_mark_app_invalid_rollback_and_reboot failed on {} \
             ({}, nothing written): {}",
            path.display(),
            ota_service::Reason::Other(ota_service::reason::ESP_ERR_OTA_ROLLBACK_FAILED),
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

fn print_event(ev: &ota_service::Event, config: &Config, progress: &mut ProgressEvents) {
    use ota_service::{Event, Outcome};
    if logger::output() == logger::Output::Json {
        let v = match ev {
            Event::Log { .. } | Event::Finish | Event::Restart => None,
            // Typed for tests and embedders; the log lines say the same to a person.
            Event::Resume { .. } | Event::StartOver { .. } | Event::StagedCopyResume { .. } => None,
            Event::CatalogueAccepted { id, serial } => {
                Some(json!({"event": "catalogue_accepted", "id": id, "serial": serial}))
            }
            Event::Start { id, item } => {
                let spec = config.upgrade.get(*id);
                Some(json!({"event": "item_start", "id": id, "item": item,
                    "type": spec.map(|s| match s.kind {
                        ota_service::config::ItemKind::App => "app",
                        ota_service::config::ItemKind::Data => "data",
                        ota_service::config::ItemKind::Ddi => "ddi",
                    }),
                    "uri": spec.map(|s| s.uri.as_str()),
                    "label": spec.and_then(|s| s.label.as_deref())}))
            }
            Event::Progress { id, bytes, total } => {
                let due = match progress.last {
                    Some((i, b)) if i == *id => {
                        bytes.saturating_sub(b) >= PROGRESS_EVENT_STEP || Some(*bytes) == *total
                    }
                    _ => true,
                };
                due.then(|| {
                    progress.last = Some((*id, *bytes));
                    json!({"event": "progress", "id": id, "bytes": bytes, "total": total})
                })
            }
            Event::Result { id, outcome } => {
                let (reason, message) = match outcome {
                    Outcome::Success => (None, None),
                    Outcome::Skipped { reason, message }
                    | Outcome::Failed {
                        reason, message, ..
                    } => (Some(*reason), Some(message.as_str())),
                };
                Some(
                    json!({"event": "item_finish", "id": id, "outcome": outcome.name(),
                    "reason": reason.map(|r| r.to_string()),
                    "code": reason.map(|r| r.code()),
                    "message": message}),
                )
            }
        };
        if let Some(v) = v {
            logger::json_event(&v);
        }
        // Log events are printed by the logger itself, as `log` events.
        if !matches!(ev, Event::Log { .. }) {
            return;
        }
    }
    match ev {
        Event::Start { .. } => {}
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
                        "List id: {}, OTA skipped, result: {}: {}",
                        id, reason, message
                    ),
                ),
                Outcome::Failed {
                    reason, message, ..
                } => logger::error(
                    "HTTPS_OTA_EXAMPLE",
                    &format!(
                        "List id: {}, OTA failed, result: {}: {}",
                        id, reason, message
                    ),
                ),
            }
        }
        Event::Finish => {}
        Event::Restart => {}
        Event::Resume { .. } | Event::StartOver { .. } | Event::StagedCopyResume { .. } => {}
        Event::CatalogueAccepted { .. } => {}
    }
}
