//! `ota tone pack|info|unpack`: ESP-ADF tone bins, as made by mk_audio_tone.py.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use ota_core::tone::{self, ToneBin, ToneEntry};
use serde_json::json;

/// mk_audio_tone.py's default names for the C table (`-c`, `-H`), ESP-ADF
/// `tools/audio_tone/mk_audio_tone.py` `SRC_FILE_NAME` / `HEADER_FILE_NAME`.
const C_FILE_NAME: &str = "audio_tone_uri.c";
const H_FILE_NAME: &str = "audio_tone_uri.h";
/// The URI prefix ADF's `tone_stream` plays from (`flash://tone/<index>_<name>`), as the
/// generator writes it.
const TONE_URI_PREFIX: &str = "flash://tone/";
/// Line ending of the generated C files: the generator writes `\r\n`.
const CRLF: &str = "\r\n";

#[derive(Subcommand)]
pub enum ToneCmd {
    /// Pack every *.mp3 and *.wav of DIR (sorted by name) into a tone bin, like mk_audio_tone.py.
    /// Lists each index with its file name, and warns about the entries it skips.
    Pack {
        /// The folder of voice prompts (not searched recursively, like mk_audio_tone.py's -r).
        dir: PathBuf,
        /// The tone bin to write.
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
        /// Also write mk_audio_tone.py's C table into this folder (created if needed): the
        /// `tone_uri[]` array of `flash://tone/N_name` URIs and the `TONE_TYPE_*` enum that
        /// ADF firmware uses to play tones by name, byte for byte as the script writes them.
        #[arg(long, value_name = "DIR")]
        c_table: Option<PathBuf>,
        /// Name of the C source in the --c-table folder (mk_audio_tone.py's -c).
        #[arg(long, value_name = "NAME", default_value = C_FILE_NAME, requires = "c_table")]
        c_file: String,
        /// Name of the C header in the --c-table folder (mk_audio_tone.py's -H).
        #[arg(long, value_name = "NAME", default_value = H_FILE_NAME, requires = "c_table")]
        h_file: String,
    },
    /// Show a tone bin's header, descriptor, CRC and files. Also reads a partition dump
    /// (`ota partition read flash_tone ...`): 0xFF bytes after the bin are ignored.
    Info {
        /// The tone bin, or a dump of a tone partition.
        bin: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Extract the files of a tone bin (or of a partition dump) into DIR as NNN.mp3 / NNN.wav
    /// (names are not stored in the bin).
    Unpack {
        /// The tone bin, or a dump of a tone partition.
        bin: PathBuf,
        /// The folder to write the files into (created if needed).
        dir: PathBuf,
    },
}

/// mk_audio_tone.py's `gen_c_file(file_list)`: the `tone_uri[]` array, CRLF line endings.
pub fn c_source(names: &[String]) -> String {
    let mut c = format!("/*This is tone file*/{CRLF}{CRLF}const char* tone_uri[] = {{{CRLF}");
    for (i, n) in names.iter().enumerate() {
        c += &format!("   \"{TONE_URI_PREFIX}{i}_{n}\",{CRLF}");
    }
    c += &format!("}};{CRLF}{CRLF}");
    c += &format!(
        "int get_tone_uri_num(){CRLF}{{{CRLF}    return sizeof(tone_uri) / sizeof(char *) - 1;{CRLF}}}{CRLF}"
    );
    c
}

/// The enum constant the generator derives from a file name: `TONE_TYPE_` + the name up to
/// its first '.', upper-cased (`name.split(".")[0].upper()`).
pub fn enum_name(name: &str) -> String {
    let stem = name.split('.').next().unwrap_or(name);
    format!("TONE_TYPE_{}", stem.to_uppercase())
}

/// mk_audio_tone.py's `gen_h_file(file_list)`: the `tone_type_t` enum, CRLF line endings.
pub fn c_header(names: &[String]) -> String {
    let mut h = format!("#ifndef __AUDIO_TONEURI_H__{CRLF}#define __AUDIO_TONEURI_H__{CRLF}{CRLF}");
    h += &format!("extern const char* tone_uri[];{CRLF}{CRLF}");
    h += &format!("typedef enum {{{CRLF}");
    for n in names {
        h += &format!("    {},{CRLF}", enum_name(n));
    }
    h += &format!(
        "    TONE_TYPE_MAX,{CRLF}}} tone_type_t;{CRLF}{CRLF}int get_tone_uri_num();{CRLF}{CRLF}#endif{CRLF}"
    );
    h
}

/// A C identifier: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_c_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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

/// The files mk_audio_tone.py packs from `dir`: regular files whose name ends in `.mp3` or
/// `.wav` (case-sensitive, as its `endswith`), sorted by name (Python's order: by code point).
/// Everything else is skipped with a warning on stderr, saying why.
fn select(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
        let e = e.with_context(|| format!("reading folder {}", dir.display()))?;
        let path = e.path();
        let Ok(name) = e.file_name().into_string() else {
            skipped.push(format!(
                "{}: the name is not UTF-8 (mk_audio_tone.py writes names into the C table as UTF-8)",
                path.display()
            ));
            continue;
        };
        let selected = name.ends_with(".mp3") || name.ends_with(".wav");
        // Follows symbolic links, as Python's open() does.
        let meta = std::fs::metadata(&path);
        if meta.as_ref().is_ok_and(|m| m.is_dir()) {
            skipped.push(format!(
                "{}: a folder (sub-folders are not packed)",
                path.display()
            ));
            continue;
        }
        if !selected {
            let lower = name.to_ascii_lowercase();
            let why = if lower.ends_with(".mp3") || lower.ends_with(".wav") {
                "the extension must be lower-case .mp3 or .wav (mk_audio_tone.py selects case-sensitively)"
            } else {
                "not a .mp3 or .wav file"
            };
            skipped.push(format!("{}: {}", path.display(), why));
            continue;
        }
        match meta {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                skipped.push(format!("{}: not a regular file", path.display()));
                continue;
            }
            Err(err) => {
                skipped.push(format!("{}: unreadable ({})", path.display(), err));
                continue;
            }
        }
        match crate::input::read_bounded(&path, crate::input::FLASH_LIMIT, "tone file") {
            Ok(data) => found.push((name, data)),
            Err(err) => skipped.push(format!("{}: unreadable ({})", path.display(), err)),
        }
    }
    skipped.sort();
    for w in &skipped {
        eprintln!("warning: skipped {}", w);
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    if found.is_empty() {
        bail!("no *.mp3 or *.wav files in {}", dir.display());
    }
    Ok(found)
}

struct PackArgs<'a> {
    dir: &'a Path,
    output: &'a Path,
    format: u32,
    version: &'a str,
    time: &'a str,
    date: &'a str,
    c_table: Option<(&'a Path, &'a str, &'a str)>,
}

fn pack(a: &PackArgs<'_>) -> Result<(u32, crate::output::Wrote)> {
    let files = select(a.dir)?;
    let entries: Vec<ToneEntry<'_>> = files
        .iter()
        .map(|(n, d)| ToneEntry { name: n, data: d })
        .collect();
    let mut out = Vec::new();
    let n = tone::pack(
        &entries,
        a.format,
        a.version,
        a.time,
        a.date,
        &mut |b: &[u8]| out.extend_from_slice(b),
    )
    .map_err(|e| anyhow!("{}: {}", a.dir.display(), e))?;
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    if let Some((dir, c_name, h_name)) = a.c_table {
        let mut seen = std::collections::BTreeMap::new();
        for n in &names {
            let e = enum_name(n);
            if !is_c_identifier(&e) {
                eprintln!(
                    "warning: {}: the enum constant {} is not a C identifier (the header will not compile; rename the file)",
                    n, e
                );
            }
            if let Some(first) = seen.insert(e.clone(), n.clone()) {
                eprintln!(
                    "warning: {} and {} both give the enum constant {} (the header will not compile)",
                    first, n, e
                );
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, text) in [(c_name, c_source(&names)), (h_name, c_header(&names))] {
            let path = dir.join(name);
            crate::output::write_regular(&path, text.as_bytes(), "C table file")?;
            eprintln!("wrote {}", path.display());
        }
    }
    let wrote = crate::output::write_output(a.output, &out, "tone bin")?;
    for (i, (name, data)) in files.iter().enumerate() {
        crate::output::say(
            wrote,
            format_args!(
                "  {:3} {} ({} bytes) {}{}_{}",
                i,
                name,
                data.len(),
                TONE_URI_PREFIX,
                i,
                name
            ),
        );
    }
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
            c_table,
            c_file,
            h_file,
        } => {
            let (t, d) = now_utc();
            let (n, wrote) = pack(&PackArgs {
                dir: &dir,
                output: &output,
                format,
                version: &version,
                time: time.as_deref().unwrap_or(&t),
                date: date.as_deref().unwrap_or(&d),
                c_table: c_table
                    .as_deref()
                    .map(|p| (p, c_file.as_str(), h_file.as_str())),
            })?;
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
            let t = ToneBin::parse_dump(&bytes).map_err(|e| anyhow!("{}: {}", bin.display(), e))?;
            let h = t.header();
            let trailing = bytes.len() - t.total_size() as usize;
            let files: Vec<_> = t
                .files()
                .map(|(f, _)| json!({"index": f.song_index, "type": if f.file_type == 1 { "wav" } else { "mp3" },
                                     "offset": f.song_adr, "length": f.song_len}))
                .collect();
            let desc = t.desc();
            if as_json {
                let v = json!({
                    "format": h.format, "total": h.total_num, "size": t.total_size(),
                    "trailing_erased": trailing,
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
                    "{}: tone bin format {}, {} files, {} bytes{}",
                    bin.display(),
                    h.format,
                    h.total_num,
                    t.total_size(),
                    if trailing > 0 {
                        format!(" (then {} erased 0xff bytes, ignored)", trailing)
                    } else {
                        String::new()
                    }
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
            let t = ToneBin::parse_dump(&bytes).map_err(|e| anyhow!("{}: {}", bin.display(), e))?;
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
