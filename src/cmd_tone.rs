//! `ota tone pack|info|unpack`: ESP-ADF tone bins, as made by mk_audio_tone.py.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use ota_core::tone::{self, ToneBin, ToneEntry};
use serde_json::json;

#[derive(Subcommand)]
pub enum ToneCmd {
    /// Pack every *.mp3 and *.wav of DIR (sorted by name) into a tone bin, like mk_audio_tone.py.
    Pack {
        /// Folder holding the *.mp3 / *.wav files.
        dir: PathBuf,
        /// Output tone bin.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// 0: header + table + files; 1: adds the descriptor, CRC and tail (mk_audio_tone.py's default).
        #[arg(long, default_value_t = 1)]
        format: u32,
        /// Version in the descriptor (format 1).
        #[arg(long, default_value = "v1.0")]
        version: String,
        /// Build time in the descriptor, HH:MM:SS (default: now, UTC).
        #[arg(long)]
        time: Option<String>,
        /// Build date in the descriptor, YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        date: Option<String>,
    },
    /// Show a tone bin's header, descriptor, CRC and files.
    Info {
        /// Tone bin file.
        bin: PathBuf,
        /// Print JSON (keys documented in README).
        #[arg(long)]
        json: bool,
    },
    /// Extract the files of a tone bin into DIR as NNN.mp3 / NNN.wav (names are not stored in the bin).
    Unpack {
        /// Tone bin file.
        bin: PathBuf,
        /// Folder to write the files into (created if missing).
        dir: PathBuf,
    },
}

/// UTC now as ("HH:MM:SS", "YYYY-MM-DD").
fn now_utc() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60),
        format!("{:04}-{:02}-{:02}", y, m, d),
    )
}

fn pack(
    dir: &Path,
    output: &Path,
    format: u32,
    version: &str,
    time: &str,
    date: &str,
) -> Result<(u32, crate::output::Wrote)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".mp3") || n.ends_with(".wav"))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no *.mp3 or *.wav files in {}", dir.display());
    }
    let datas: Vec<Vec<u8>> = names
        .iter()
        .map(|n| crate::input::read_bounded(&dir.join(n), crate::input::FLASH_LIMIT, "tone file"))
        .collect::<Result<_>>()?;
    let entries: Vec<ToneEntry<'_>> = names
        .iter()
        .zip(&datas)
        .map(|(n, d)| ToneEntry { name: n, data: d })
        .collect();
    let mut out = Vec::new();
    let n = tone::pack(&entries, format, version, time, date, &mut |b: &[u8]| {
        out.extend_from_slice(b)
    })
    .map_err(|e| anyhow!("{}", e))?;
    let wrote = crate::output::write_output(output, &out, "tone bin")?;
    Ok((n, wrote))
}

pub fn run(cmd: ToneCmd) -> Result<ExitCode> {
    match cmd {
        ToneCmd::Pack {
            dir,
            output,
            format,
            version,
            time,
            date,
        } => {
            let (t, d) = now_utc();
            let (n, wrote) = pack(
                &dir,
                &output,
                format,
                &version,
                time.as_deref().unwrap_or(&t),
                date.as_deref().unwrap_or(&d),
            )?;
            crate::output::say(
                wrote,
                format_args!(
                    "wrote {} ({} bytes, format {})",
                    output.display(),
                    n,
                    format
                ),
            );
        }
        ToneCmd::Info { bin, json: as_json } => {
            let bytes = crate::input::read_bounded(&bin, crate::input::FLASH_LIMIT, "tone bin")?;
            let t = ToneBin::parse(&bytes).map_err(|e| anyhow!("{}: {}", bin.display(), e))?;
            let h = t.header();
            let files: Vec<_> = t
                .files()
                .map(|(f, _)| json!({"index": f.song_index, "type": if f.file_type == 1 { "wav" } else { "mp3" },
                                     "offset": f.song_adr, "length": f.song_len}))
                .collect();
            let desc = t.desc();
            if as_json {
                let v = json!({
                    "format": h.format, "total": h.total_num, "size": bytes.len(),
                    "version": desc.as_ref().map(|d| d.version_str().to_string()),
                    "project_name": desc.as_ref().map(|d| d.project_name_str().to_string()),
                    "time": desc.as_ref().map(|d| d.time_str().to_string()),
                    "date": desc.as_ref().map(|d| d.date_str().to_string()),
                    "crc": t.crc().map(|(stored, _)| stored),
                    "crc_valid": t.crc().map(|(s, c)| s == c),
                    "files": files,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{}: tone bin format {}, {} files, {} bytes",
                    bin.display(),
                    h.format,
                    h.total_num,
                    bytes.len()
                );
                if let Some(d) = &desc {
                    println!(
                        "descriptor: project {}, version {}, built {} {}",
                        d.project_name_str(),
                        d.version_str(),
                        d.date_str(),
                        d.time_str()
                    );
                }
                if let Some((s, c)) = t.crc() {
                    println!(
                        "crc: 0x{:08x} ({})",
                        s,
                        if s == c { "valid" } else { "INVALID" }
                    );
                }
                for (f, _) in t.files() {
                    println!(
                        "  {:3} {} offset 0x{:06x} length {}",
                        f.song_index,
                        if f.file_type == 1 { "wav" } else { "mp3" },
                        f.song_adr,
                        f.song_len
                    );
                }
            }
        }
        ToneCmd::Unpack { bin, dir } => {
            let bytes = crate::input::read_bounded(&bin, crate::input::FLASH_LIMIT, "tone bin")?;
            let t = ToneBin::parse(&bytes).map_err(|e| anyhow!("{}: {}", bin.display(), e))?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut n = 0;
            for (f, data) in t.files() {
                let name = format!(
                    "{:03}.{}",
                    f.song_index,
                    if f.file_type == 1 { "wav" } else { "mp3" }
                );
                crate::output::write_regular(&dir.join(&name), data, "tone file")?;
                n += 1;
            }
            println!("unpacked {} files into {}", n, dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
