//! `ota`: the command-line front end of ota-service. Thin: it parses arguments, wires the
//! crates together and prints; format logic lives in `ota-core`.

mod cmd_device;
mod cmd_flash;
mod cmd_fleet;
mod cmd_image;
mod cmd_otadata;
mod cmd_partition;
mod cmd_ptable;
mod cmd_publish;
mod cmd_serve;
mod cmd_tone;
mod demo;
mod flashfile;
mod from_build;
mod glue;
mod logger;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ota",
    version,
    about = "OTA updates for ESP32-class devices: ESP-ADF's OTA service on an emulated ESP32 flash",
    long_about = "OTA updates for ESP32-class devices.\n\n\
        Runs ESP-ADF's OTA service (tone data partition + app update, otadata switch, restart) \
        against an emulated ESP32 flash image, byte-exact with ESP-IDF's formats, so the same \
        commands work on flash dumps read from real boards (`esptool read-flash`).\n\n\
        Start with `ota demo`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay the ESP-ADF OTA example on an emulated ESP32, all on loopback.
    Demo(demo::DemoArgs),
    /// Create, inspect, boot and update an emulated device (a flash image file).
    #[command(subcommand)]
    Device(cmd_device::DeviceCmd),
    /// Make and inspect ESP-IDF app images.
    #[command(subcommand)]
    Image(cmd_image::ImageCmd),
    /// Pack, inspect and unpack ESP-ADF tone bins (mk_audio_tone.py's format).
    #[command(subcommand)]
    Tone(cmd_tone::ToneCmd),
    /// Convert a partition table CSV to binary or back, like gen_esp32part.py.
    PartitionTable(cmd_ptable::PtableArgs),
    /// Read, switch or erase otadata in a flash image (like ESP-IDF's otatool.py).
    #[command(subcommand)]
    Otadata(cmd_otadata::OtadataCmd),
    /// List, read, write or erase partitions of a flash image (like ESP-IDF's parttool.py).
    #[command(subcommand)]
    Partition(cmd_partition::PartitionCmd),
    /// Merge files into a flash image (like esptool merge-bin) or read a region out of one.
    #[command(subcommand)]
    Flash(cmd_flash::FlashCmd),
    /// Serve firmware from a folder or an S3 bucket (ranges, ETags, catalogue, TLS).
    Serve(cmd_serve::ServeArgs),
    /// Upload an image to the S3 store under a content-addressed key; refresh the catalogue.
    Publish(cmd_publish::PublishArgs),
    /// Simulate a fleet: N in-memory devices update from one server's catalogue.
    FleetSim(cmd_fleet::FleetArgs),
}

/// `--flash F`: the emulated device's flash image.
#[derive(Args, Clone)]
pub struct FlashArg {
    /// Flash image file (made by `ota device create`, or a dump from `esptool read-flash`).
    #[arg(long, value_name = "FILE")]
    pub flash: PathBuf,
}

fn main() -> ExitCode {
    // `ota flash merge @flash_args` (esptool's argument files).
    let args = match cmd_flash::expand_argument_files(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {:#}", e);
            return ExitCode::from(1);
        }
    };
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Device(c) => cmd_device::run(c),
        Command::Image(c) => cmd_image::run(c),
        Command::Tone(c) => cmd_tone::run(c),
        Command::PartitionTable(a) => cmd_ptable::run(a),
        Command::Otadata(c) => cmd_otadata::run(c),
        Command::Partition(c) => cmd_partition::run(c),
        Command::Flash(c) => cmd_flash::run(c),
        Command::Serve(a) => cmd_serve::run(a),
        Command::Publish(a) => cmd_publish::run(a),
        Command::FleetSim(a) => cmd_fleet::run(a),
    };
    logger::progress_done();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {:#}", e);
            ExitCode::from(1)
        }
    }
}
