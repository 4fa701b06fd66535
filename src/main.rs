//! `ota`: the command-line front end of ota-service. Thin: it parses arguments, wires the
//! crates together and prints; format logic lives in `ota-core`.

// Every module below prints through these instead of std's macros, which panic when standard
// output is a closed pipe (`ota device info ... | head -1`) or a full disk: a closed pipe ends
// the command quietly, another error is reported (`output::print_out`). Defined before the
// `mod` lines, they shadow std's `println!`, `print!` and `eprintln!` in all of them.
macro_rules! println {
    () => {
        $crate::output::print_out(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::print_out(format_args!($($arg)*), true)
    };
}
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::print_out(format_args!($($arg)*), false)
    };
}
macro_rules! eprintln {
    () => {
        $crate::output::print_err(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::print_err(format_args!($($arg)*))
    };
}

mod cmd_catalogue;
mod cmd_delta;
mod cmd_device;
mod cmd_flash;
mod cmd_fleet;
mod cmd_fleet_admin;
mod cmd_image;
mod cmd_otadata;
mod cmd_partition;
mod cmd_ptable;
mod cmd_publish;
mod cmd_serve;
mod cmd_sign;
mod cmd_tone;
mod demo;
mod device_sb;
mod flashfile;
mod from_build;
mod glue;
mod input;
mod keys;
mod logger;
mod output;
mod stack;

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
    /// Make and apply detools delta patches between two images (esp_delta_ota-compatible).
    #[command(subcommand)]
    Delta(cmd_delta::DeltaCmd),
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
    Serve(Box<cmd_serve::ServeArgs>),
    /// Upload an image to the S3 store under a content-addressed key; refresh the catalogue.
    Publish(cmd_publish::PublishArgs),
    /// Catalogue signing keys (keygen, pubkey) and a check of a signed catalogue (verify).
    #[command(subcommand)]
    Catalogue(cmd_catalogue::CatalogueCmd),
    /// Simulate a fleet: N in-memory devices update from one server's catalogue.
    FleetSim(cmd_fleet::FleetArgs),
    /// The devices a fleet server (`ota serve --fleet`) knows.
    #[command(subcommand)]
    Devices(cmd_fleet_admin::DevicesCmd),
    /// Rollouts on a fleet server: create, list, show, start, pause, resume, stop.
    #[command(subcommand)]
    Rollout(cmd_fleet_admin::RolloutCmd),
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
        Command::Delta(c) => cmd_delta::run(c),
        Command::Image(c) => cmd_image::run(c),
        Command::Tone(c) => cmd_tone::run(c),
        Command::PartitionTable(a) => cmd_ptable::run(a),
        Command::Otadata(c) => cmd_otadata::run(c),
        Command::Partition(c) => cmd_partition::run(c),
        Command::Flash(c) => cmd_flash::run(c),
        Command::Serve(a) => cmd_serve::run(*a),
        Command::Publish(a) => cmd_publish::run(a),
        Command::FleetSim(a) => cmd_fleet::run(a),
        Command::Devices(c) => cmd_fleet_admin::run_devices(c),
        Command::Rollout(c) => cmd_fleet_admin::run_rollout(c),
        Command::Catalogue(c) => cmd_catalogue::run(c),
    };
    logger::progress_done();
    output::flush_stdout();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::from(cmd_device::exit_status_for(&e))
        }
    }
}

/// Exit status of a command that failed (an error, a failed upgrade item). The whole table is
/// in README's "Exit status" section.
pub const EXIT_ERROR: u8 = 1;

/// An error and its causes on one line, `outer: cause: root`, without repeating a cause whose
/// text an outer message already holds (many error types print their source in their own
/// message *and* return it from `source()`, and anyhow's `{:#}` would print it twice).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if c.is_empty() || out.contains(&c) {
            continue;
        }
        out.push_str(": ");
        out.push_str(&c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every argument of every command, with the command path that holds it.
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for a in cmd.get_arguments() {
            out.push((path.to_string(), a.clone()));
        }
        for s in cmd.get_subcommands() {
            walk(s, &format!("{} {}", path, s.get_name()), out);
        }
    }

    #[test]
    fn every_argument_has_help_text() {
        let mut args = Vec::new();
        walk(&Cli::command(), "ota", &mut args);
        let missing: Vec<String> = args
            .iter()
            .filter(|(_, a)| !a.is_hide_set())
            .filter(|(_, a)| !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|(_, a)| a.get_help().is_none() && a.get_long_help().is_none())
            .map(|(p, a)| format!("{} {}", p, a.get_id()))
            .collect();
        assert!(
            missing.is_empty(),
            "arguments without help text: {:#?}",
            missing
        );
    }

    /// One spelling per option: a table offset is `--partition-table-offset`, a flash image
    /// `--flash`, in every command (old spellings stay as hidden aliases).
    #[test]
    fn options_have_one_spelling_across_commands() {
        let mut args = Vec::new();
        walk(&Cli::command(), "ota", &mut args);
        const OTHER_SPELLINGS: [&str; 6] = [
            "offset",
            "table-offset",
            "partition-offset",
            "flash-file",
            "flash-image",
            "image-file",
        ];
        let bad: Vec<String> = args
            .iter()
            .filter(|(_, a)| !a.is_hide_set())
            .filter_map(|(p, a)| {
                let mut names: Vec<&str> = a.get_long().into_iter().collect();
                names.extend(a.get_visible_aliases().unwrap_or_default());
                names
                    .into_iter()
                    .find(|n| OTHER_SPELLINGS.contains(n))
                    .map(|n| format!("{} --{}", p, n))
            })
            .collect();
        assert!(bad.is_empty(), "options with another spelling: {:#?}", bad);
        // The flash image option is called the same everywhere it exists.
        for (p, a) in &args {
            if a.get_id().as_str() == "flash" {
                assert_eq!(a.get_long(), Some("flash"), "{}", p);
            }
        }
    }

    /// Names of documents that live outside the repository: help texts cite upstream files.
    pub const OUTSIDE_DOCS: [&str; 7] = [
        "idf-formats",
        "adf-ota-service",
        "delta-and-scale",
        "peers.md",
        "chip-network-fleet",
        "shared/reference",
        "\u{a7}",
    ];

    fn help_texts(cmd: &clap::Command, out: &mut Vec<String>) {
        for t in [cmd.get_about(), cmd.get_long_about()]
            .into_iter()
            .flatten()
        {
            out.push(t.to_string());
        }
        for a in cmd.get_arguments() {
            for t in [a.get_help(), a.get_long_help()].into_iter().flatten() {
                out.push(t.to_string());
            }
        }
        for s in cmd.get_subcommands() {
            help_texts(s, out);
        }
    }

    #[test]
    fn help_texts_cite_no_document_outside_the_repository() {
        let mut texts = Vec::new();
        help_texts(&Cli::command(), &mut texts);
        assert!(texts.len() > 100, "{}", texts.len());
        for t in &texts {
            for d in OUTSIDE_DOCS {
                assert!(!t.contains(d), "help text cites {d:?}: {t}");
            }
        }
    }
}
