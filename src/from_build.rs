//! `ota device create --from-build BUILD`: an `idf.py build` folder as an emulated device
//! (the reading and layout are `ota_emu::build`; this prints and writes the files).

use std::path::Path;

use anyhow::{anyhow, Result};
use ota_emu::build::IdfBuild;
use ota_emu::device::layout;
use ota_emu::flash::EmuFlash;
use ota_emu::Device;

/// Lay out the device of build folder `build` in `flash` (and its settings file beside it),
/// byte-identical to `esptool merge-bin --pad-to-size <flash size> @flash_args` run in the
/// build folder. Nothing is written unless everything checks out. `write_size`: the flash
/// driver's unit recorded in the settings.
pub fn create_from_build(
    flash: &Path,
    build: &Path,
    efuse_secure_version: u32,
    write_size: u32,
    (sb_keys, sb_revoke, sb_signed_apps): (&[std::path::PathBuf], &[u8], bool),
) -> Result<()> {
    let b = IdfBuild::read(build)?;
    let mut settings = b.settings()?;
    settings.secure_boot = secure_boot_of(&b, sb_keys, sb_revoke, sb_signed_apps)?;
    settings.efuse.secure_version = efuse_secure_version;
    settings.flash.write_size = Some(write_size);
    settings
        .check()
        .map_err(|e| anyhow!("--flash-write-size: {}", e))?;
    settings
        .check_for_chip(b.chip)
        .map_err(|e| anyhow!("--efuse-secure-version: {}", e))?;
    let image = b.flash_image()?;
    if settings.secure_boot.enabled {
        // The app at the first app slot must boot under secure boot.
        if let Some(app) = b.files.iter().find(|f| f.role.as_deref() == Some("app")) {
            let bytes = &image[app.offset as usize..(app.offset + app.len) as usize];
            crate::device_sb::check_first_app(&settings, bytes, &app.path)?;
        }
    }
    // The image must open as a device (bootloader header at the chip's offset, a table).
    let probe = EmuFlash::from_image(image.clone())?;
    let dev = Device::open_named(probe, build.display().to_string()).map_err(|e| {
        anyhow!(
            "{}: the laid-out flash is not a device: {}",
            build.display(),
            e
        )
    })?;
    if dev.chip() != b.chip {
        anyhow::bail!(
            "{}: the bootloader at 0x{:x} is for {}, flasher_args.json says {}",
            build.display(),
            b.chip.bootloader_offset(),
            dev.chip().name(),
            b.chip.name()
        );
    }
    if let Ok(meta) = std::fs::symlink_metadata(flash) {
        if !meta.is_file() {
            anyhow::bail!(
                "{} exists and is not a regular file: not replaced",
                flash.display()
            );
        }
        std::fs::remove_file(flash).map_err(|e| anyhow!("replacing {}: {}", flash.display(), e))?;
    }
    let mut f = EmuFlash::create(flash, b.flash_size)?;
    layout::write_raw(&mut f, 0, &image)?;
    drop(f);
    settings.save_for(flash)?;
    println!(
        "created {} from {} ({} flash, {} MB)",
        flash.display(),
        build.display(),
        b.chip.name(),
        b.flash_size >> 20
    );
    for file in &b.files {
        println!(
            "  0x{:08x}  {:>8} bytes  {}{}",
            file.offset,
            file.len,
            file.file,
            file.role
                .as_deref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default()
        );
    }
    match &b.sdkconfig {
        Some((p, _)) => println!("  settings from {}:", p.display()),
        None => println!(
            "  no sdkconfig found (../sdkconfig, config/sdkconfig.json): ESP-IDF's defaults"
        ),
    }
    println!(
        "  rollback {}, anti-rollback {}, MMU page size {} KB, eFuse secure version {}",
        settings.bootloader.rollback,
        settings.bootloader.anti_rollback,
        settings.bootloader.mmu_page_size.unwrap_or(0) / 1024,
        settings.efuse.secure_version
    );
    crate::device_sb::print_settings(&settings);
    if let Some(v) = b.app_secure_version() {
        println!(
            "  the project's apps carry secure_version {v} (CONFIG_BOOTLOADER_APP_SECURE_VERSION)"
        );
    }
    Ok(())
}

/// The signed-app settings of a build: the sdkconfig's mode (`CONFIG_SECURE_BOOT_V2_ENABLED`,
/// `CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT`) with the digest of
/// `CONFIG_SECURE_BOOT_SIGNING_KEY` (relative to the project folder), or the command line's
/// `--secure-boot-key` / `--signed-apps-no-secure-boot` when given.
fn secure_boot_of(
    b: &IdfBuild,
    keys: &[std::path::PathBuf],
    revoke: &[u8],
    signed_apps: bool,
) -> Result<ota_emu::settings::SecureBootSettings> {
    let cfg = b.secure_boot();
    let mut s = if !keys.is_empty() || signed_apps {
        crate::device_sb::settings_from_args(keys, revoke, signed_apps)?
    } else if cfg.enabled {
        let key = cfg.signing_key.as_ref().ok_or_else(|| {
            anyhow!(
                "{}: CONFIG_SECURE_BOOT_V2_ENABLED without CONFIG_SECURE_BOOT_SIGNING_KEY: give the key with --secure-boot-key",
                build_sdkconfig(b)
            )
        })?;
        crate::device_sb::settings_from_args(std::slice::from_ref(key), revoke, false)
            .map_err(|e| anyhow!("{} (CONFIG_SECURE_BOOT_SIGNING_KEY in {}); or give the public key with --secure-boot-key", e, build_sdkconfig(b)))?
    } else {
        crate::device_sb::settings_from_args(&[], &[], cfg.signed_apps_no_secure_boot)?
    };
    s.scheme = cfg.scheme;
    Ok(s)
}

fn build_sdkconfig(b: &IdfBuild) -> String {
    b.sdkconfig
        .as_ref()
        .map(|(p, _)| p.display().to_string())
        .unwrap_or_else(|| "sdkconfig".to_string())
}

/// What `device create` says when it writes its own bootloader image.
pub const STUB_BOOTLOADER_NOTE: &str = "note: the bootloader is ota-service's stand-in (a valid \
image header for the emulator, no code): this flash image is for the emulator, not for a board; \
use --from-build with an idf.py build folder for one a board boots";

/// `--partitions FILE`: a gen_esp32part CSV, or a binary table (it starts with the entry magic
/// `AA 50`, esp-idf `components/partition_table/gen_esp32part.py`), as CSV text.
pub fn partitions_csv(path: &Path) -> Result<String> {
    let bytes = crate::input::read_bounded(path, crate::input::TEXT_LIMIT, "partition table")?;
    if bytes.starts_with(&ota_core::partition::MAGIC.to_le_bytes()) {
        let table = ota_core::partition::PartitionTable::parse(
            &bytes,
            ota_core::partition::ReadRule::GenTool,
        )
        .map_err(|e| anyhow!("{} (binary partition table): {}", path.display(), e))?;
        let mut csv = String::new();
        table
            .write_csv(&mut csv)
            .map_err(|_| anyhow!("{}: cannot write the table as CSV", path.display()))?;
        return Ok(csv);
    }
    String::from_utf8(bytes).map_err(|_| {
        anyhow!(
            "{}: neither a partition table CSV (not UTF-8 text) nor a binary table (no AA 50 magic)",
            path.display()
        )
    })
}
