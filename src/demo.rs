//! `ota demo`: the ESP-ADF OTA example (examples/ota), replayed on an emulated ESP32 on
//! loopback: flash_tone rewritten from the SD card, the app downloaded over HTTP into ota_1,
//! verified, otadata switched, restart, and the bootloader boots the new app.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use ota_core::image::{self, ImageSpec};
use ota_core::tone::{self, ToneEntry};
use ota_core::Chip;
use ota_emu::sdcard::SdCard;

use crate::cmd_device::{self, CreateSpec, EXAMPLE_CSV};
use crate::glue::{self, SdAdapter};
use crate::logger;

#[derive(Args)]
pub struct DemoArgs {
    /// Folder for the demo's files (flash image, SD card folder, served files). Recreated.
    #[arg(long, default_value = "demo-out")]
    dir: PathBuf,
    /// Tone bin to put on the SD card as flash_tone.bin (default: one packed from sounds the demo synthesises).
    #[arg(long, value_name = "FILE")]
    tone: Option<PathBuf>,
}

const TAG: &str = "HTTPS_OTA_EXAMPLE";
/// The running app of the example's README log.
const RUNNING_VERSION: &str = "v2.2-252-g62edbd26-dirty";
/// The app the example downloads.
const NEW_PROJECT: &str = "play_mp3_control";
const NEW_VERSION: &str = "v2.2-237-g6532b89f";

/// A mono 16-bit PCM WAV of a few sine tones: the demo's voice prompts.
fn synth_wav(freqs: &[f32], ms_each: u32) -> Vec<u8> {
    const RATE: u32 = 16_000;
    let n_each = RATE * ms_each / 1000;
    let mut pcm = Vec::with_capacity((n_each as usize) * freqs.len() * 2);
    for &f in freqs {
        for i in 0..n_each {
            let t = i as f32 / RATE as f32;
            let env = (i.min(n_each - i) as f32 / 400.0).min(1.0);
            let s = (t * f * std::f32::consts::TAU).sin() * env * 0.4;
            pcm.extend_from_slice(&((s * i16::MAX as f32) as i16).to_le_bytes());
        }
    }
    let mut w = Vec::with_capacity(44 + pcm.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&RATE.to_le_bytes());
    w.extend_from_slice(&(RATE * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    w.extend_from_slice(&pcm);
    w
}

/// Voice prompts like the example's board: (name, notes).
const PROMPTS: [&str; 21] = [
    "Bt_Reconnect",
    "Wechat",
    "Welcome_To_Wifi",
    "New_Version_Available",
    "Bt_Success",
    "Freetalk",
    "Upgrade_Done",
    "shutdown",
    "Time_Out",
    "Wifi_Reconnect",
    "Under_Smartconfig",
    "Out_Of_Power",
    "server_connect",
    "Alarm",
    "Wifi_Success",
    "Wifi_Time_Out",
    "Please_Retry_Wifi",
    "Bt_Disconnect",
    "Upgrade_Fail",
    "Server_Disconnect",
    "Smart_Config",
];

/// Pack `count` synthesised prompts into a format-0 tone bin.
fn synth_tone_bin(count: usize, seed: f32) -> Result<Vec<u8>> {
    let wavs: Vec<(String, Vec<u8>)> = PROMPTS[..count]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let base = 330.0 + seed + 20.0 * i as f32;
            (
                format!("{}_{}.wav", i, name),
                synth_wav(&[base, base * 1.25, base * 1.5], 110),
            )
        })
        .collect();
    let entries: Vec<ToneEntry<'_>> = wavs
        .iter()
        .map(|(n, d)| ToneEntry { name: n, data: d })
        .collect();
    let mut out = Vec::new();
    tone::pack(&entries, 0, "", "", "", &mut |b: &[u8]| {
        out.extend_from_slice(b)
    })
    .map_err(|e| anyhow!("{}", e))?;
    Ok(out)
}

fn app_image(project: &str, version: &str, size: u32, seed: u32) -> Result<Vec<u8>> {
    let mut spec = ImageSpec::new(Chip::Esp32, project, version);
    spec.total_size = Some(size);
    spec.segments = 4;
    spec.fill_seed = seed;
    spec.idf_ver = "v4.4.4";
    spec.date = "Nov 28 2026";
    spec.time = "06:41:00";
    // Stands in for the SHA-256 of the app's ELF file (we have no ELF): a fixed digest per app.
    let mut sha = [0u8; 32];
    for (i, b) in sha.iter_mut().enumerate() {
        *b = (seed as u8)
            .wrapping_mul(97)
            .wrapping_add((i as u8).wrapping_mul(37))
            ^ project.len() as u8;
    }
    spec.elf_sha256 = sha;
    let mut out = Vec::new();
    image::build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b))
        .map_err(|e| anyhow!("{}", e))?;
    Ok(out)
}

pub fn run(a: DemoArgs) -> Result<ExitCode> {
    let dir = a.dir;
    let sd_dir = dir.join("sdcard");
    let www = dir.join("www");
    let flash_path = dir.join("flash.bin");
    for p in [&sd_dir, &www] {
        if p.exists() {
            std::fs::remove_dir_all(p).with_context(|| format!("clearing {}", p.display()))?;
        }
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }

    // The board as the example finds it: ota_example running from ota_0, an older tone bin
    // in flash_tone, otadata erased (first boot of a freshly flashed board).
    let running = app_image("ota_example", RUNNING_VERSION, 180 * 1024, 1)?;
    let old_tone = synth_tone_bin(5, 0.0)?;
    cmd_device::create_device(
        &flash_path,
        &CreateSpec {
            chip: Chip::Esp32,
            flash_size: 4 << 20,
            csv: EXAMPLE_CSV,
            app: Some(&running),
            data: vec![("flash_tone".to_string(), old_tone)],
        },
    )?;

    // The SD card and the HTTP server's folder.
    let new_tone = match &a.tone {
        Some(p) => crate::input::read_bounded(p, crate::input::FLASH_LIMIT, "tone bin")?,
        None => synth_tone_bin(21, 60.0)?,
    };
    crate::output::write_regular(&sd_dir.join("flash_tone.bin"), &new_tone, "SD card file")?;
    let new_app = app_image(NEW_PROJECT, NEW_VERSION, 620 * 1024, 2)?;
    crate::output::write_regular(&www.join("play_mp3_control.bin"), &new_app, "served file")?;
    let server = serve_demo_files(&www)?;
    let host = format!("127.0.0.1:{}", server.info.addr.port());

    // The upgrade list, as a config file left in the folder: the demo runs exactly what
    // `ota device run --config DIR/ota.toml` replays.
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(&config_path, demo_config(&dir, &host))
        .with_context(|| format!("writing {}", config_path.display()))?;
    let config = ota_service::config::Config::load(&config_path).map_err(|e| anyhow!("{}", e))?;
    let sd = SdAdapter(SdCard::open(&sd_dir)?);
    let mut dev = glue::open_device(&flash_path)?;
    // The example's app_main, once the bootloader has started it (esp-adf examples/ota/main/
    // ota_example.c): its own lines come after the bootloader's.
    let mut app_main = || {
        logger::info(TAG, "[1.0] Initialize peripherals management");
        logger::info(
            TAG,
            &format!(
                "[1.1] Network: loopback, firmware served from http://{}/",
                host
            ),
        );
        logger::info(TAG, &format!("[1.2] Mount SDCard: {}", sd_dir.display()));
        logger::info(TAG, "[2.0] Create OTA service");
        logger::info(TAG, "[2.1] Set upgrade list");
    };
    let (report, booted) = cmd_device::run_device(
        &mut dev,
        &config,
        Some(&sd),
        Default::default(),
        &mut app_main,
    )?;
    drop(server);

    println!();
    println!(
        "demo: files are in {} (flash.bin, {}, sdcard/, www/); try `ota device info --flash {}`.",
        dir.display(),
        CONFIG_FILE,
        flash_path.display()
    );
    println!(
        "demo: to replay the upgrade list, serve www/ again and run it: `ota serve {} --bind {} &` \
         then `ota device run --flash {} --config {}`.",
        www.display(),
        host,
        flash_path.display(),
        config_path.display()
    );
    // No item may have failed, and the device must boot the new app after the restart.
    let failed: Vec<String> = report
        .results
        .iter()
        .filter_map(|(id, o)| match o {
            ota_service::Outcome::Success | ota_service::Outcome::Skipped { .. } => None,
            ota_service::Outcome::Failed {
                reason, message, ..
            } => Some(format!(
                "item {} ({}) {}: {}: {}",
                id,
                config
                    .upgrade
                    .get(*id)
                    .map(|s| s.uri.as_str())
                    .unwrap_or("?"),
                o.name(),
                reason,
                message
            )),
        })
        .collect();
    let version = booted
        .summary
        .app_desc
        .map(|d| d.version_str().to_string())
        .unwrap_or_default();
    let label = booted.partition.label.as_str();
    if !failed.is_empty() {
        return Err(anyhow!(
            "demo failed: {} of {} upgrade items did not succeed ({}); the device boots {} '{}'",
            failed.len(),
            report.results.len(),
            failed.join("; "),
            label,
            version
        ));
    }
    if !report.restart || label != "ota_1" || version != NEW_VERSION {
        return Err(anyhow!(
            "demo failed: expected a restart into ota_1 running {}, got {} running '{}'",
            NEW_VERSION,
            label,
            version
        ));
    }
    println!(
        "demo: the device now boots {} {} from ota_1.",
        NEW_PROJECT, NEW_VERSION
    );
    Ok(ExitCode::SUCCESS)
}

/// The demo's firmware server: `ota serve DIR` (the `ota-server` crate) on an ephemeral
/// loopback port, without its access log (the demo's output is the device's log); it stops
/// when dropped.
fn serve_demo_files(www: &std::path::Path) -> Result<ota_server::Background> {
    let mut opts = ota_server::ServeOptions::dir(www);
    opts.bind = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    opts.access_log = false;
    ota_server::Background::start(opts)
        .map_err(|e| anyhow!("starting the demo's server for {}: {}", www.display(), e))
}

/// The demo's config file, left in its folder.
const CONFIG_FILE: &str = "ota.toml";

/// The ESP-ADF example's upgrade list in its Kconfig names (esp-adf examples/ota/main/
/// Kconfig.projbuild), pointing at the demo's server.
fn demo_config(dir: &std::path::Path, host: &str) -> String {
    format!(
        "# The upgrade list `ota demo` ran: the ESP-ADF OTA example's settings (its Kconfig names).\n\
         # The demo's own HTTP server is gone; to replay the list on {dir}/flash.bin:\n\
         #   ota serve {dir}/www --bind {host} &\n\
         #   ota device run --flash {dir}/flash.bin --config {dir}/{CONFIG_FILE}\n\
         # (the SD card is {dir}/sdcard, beside the flash file).\n\
         firmware_upgrade_uri = \"http://{host}/play_mp3_control.bin\"\n\
         data_upgrade_uri = \"{data}\"\n\
         data_partition_label = \"{label}\"\n\
         force_check_firmware_version = false\n",
        dir = dir.display(),
        host = host,
        data = ota_service::config::EXAMPLE_DATA_UPGRADE_URI,
        label = ota_service::config::EXAMPLE_DATA_PARTITION_LABEL,
    )
}
