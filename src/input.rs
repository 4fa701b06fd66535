//! Every file the CLI reads goes through [`read_bounded`]: a regular file (a FIFO, a socket, a
//! device node such as `/dev/zero` or a directory is refused, without ever blocking on it or
//! reading from it), at most `limit` bytes (the largest size that means something for that
//! input), read once with the bound enforced while reading (a file that grows meanwhile is
//! refused too). Files that a library crate opens itself (pinned CA certificates of a config,
//! TLS PEM files of `ota serve`) are checked first with [`check_input`].

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Result};

const MIB: u64 = 1024 * 1024;

/// Flash images, app images, tone bins and partition contents: the largest flash an ESP32-class
/// chip addresses, 128 MB (`spi_size` code 7 of the image header: ESP-IDF
/// `components/bootloader_support/include/esp_app_format.h` `ESP_IMAGE_FLASH_SIZE_128MB`,
/// esptool's `--flash-size` choices).
pub const FLASH_LIMIT: u64 = 128 * MIB;
/// Text inputs: upgrade-list configs (TOML), partition table CSVs and binaries, device
/// settings. A partition table binary is at most 0xC00 bytes (ESP-IDF
/// `components/partition_table/gen_esp32part.py` `MAX_PARTITION_LENGTH`); a CSV of the at most
/// 95 partitions that fit in it is a few KiB.
pub const TEXT_LIMIT: u64 = MIB;
/// PEM files (CA certificates, TLS certificate chains and keys): a long chain of RSA-4096
/// certificates is some tens of KiB.
pub const PEM_LIMIT: u64 = MIB;

/// How a size appears in messages: `128 MiB`, `1 MiB`, or bytes.
pub fn size_name(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{} bytes", n)
    }
}

/// What kind of file system object `m` is, for messages.
pub fn kind_name(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

fn refuse_kind(path: &Path, what: &str, m: &Metadata, limit: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "{} {} is {}, not a regular file: refusing to read it (inputs are regular files of at \
         most {})",
        what,
        path.display(),
        kind_name(m),
        size_name(limit)
    )
}

fn refuse_size(path: &Path, what: &str, len: u64, limit: u64, grew: bool) -> anyhow::Error {
    anyhow::anyhow!(
        "{} {} is {}{} bytes, more than the limit of {} for this input: refusing to read it",
        what,
        path.display(),
        if grew { "at least " } else { "" },
        len,
        size_name(limit)
    )
}

/// Open `path` for reading without blocking on a FIFO (O_NONBLOCK: a FIFO with no writer
/// would otherwise wait for ever) and check, on the opened file, that it is a regular file of
/// at most `limit` bytes.
fn open_checked(path: &Path, limit: u64, what: &str) -> Result<(File, u64)> {
    // A metadata look first: a directory cannot be opened on every platform, and this names
    // the kind of a FIFO or device without opening it at all.
    let m = std::fs::metadata(path).map_err(|e| io_error(path, what, "reading", e))?;
    if !m.is_file() {
        return Err(refuse_kind(path, what, &m, limit));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts
        .open(path)
        .map_err(|e| io_error(path, what, "opening", e))?;
    // Checked again on the file itself: it may have been replaced since the look above.
    let m = file
        .metadata()
        .map_err(|e| io_error(path, what, "reading", e))?;
    if !m.is_file() {
        return Err(refuse_kind(path, what, &m, limit));
    }
    if m.len() > limit {
        return Err(refuse_size(path, what, m.len(), limit, false));
    }
    Ok((file, m.len()))
}

/// `reading flash image F: No such file or directory (os error 2)`, said once.
pub fn io_error(path: &Path, what: &str, doing: &str, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("{} {} {}: {}", doing, what, path.display(), e)
}

/// Read the whole of `path`, a regular file of at most `limit` bytes; `what` names the input
/// in errors (`app image`, `partition table CSV`, ...).
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let (file, len) = open_checked(path, limit, what)?;
    let mut data = Vec::with_capacity(len as usize);
    // One byte more than the limit: a file that grew past it since the check is refused.
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| io_error(path, what, "reading", e))?;
    if data.len() as u64 > limit {
        return Err(refuse_size(path, what, data.len() as u64, limit, true));
    }
    Ok(data)
}

/// [`read_bounded`] for a text file (UTF-8).
pub fn read_text_bounded(path: &Path, limit: u64, what: &str) -> Result<String> {
    let bytes = read_bounded(path, limit, what)?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => bail!(
            "{} {} is not UTF-8 text (invalid byte at offset {})",
            what,
            path.display(),
            e.utf8_error().valid_up_to()
        ),
    }
}

/// The checks of [`read_bounded`] without reading: for a file a library opens itself.
pub fn check_input(path: &Path, limit: u64, what: &str) -> Result<()> {
    open_checked(path, limit, what).map(|_| ())
}

/// An upgrade-list config: read bounded, parsed by `ota_service::config` (cert paths relative
/// to its folder), and each pinned CA certificate it names checked as an input.
pub fn load_config(path: &Path) -> Result<ota_service::config::Config> {
    let text = read_text_bounded(path, TEXT_LIMIT, "config file")?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let config =
        ota_service::config::Config::from_str_named(&text, &path.display().to_string(), base)
            .map_err(|e| anyhow::anyhow!("{}", e))?;
    for spec in &config.upgrade {
        if let Some(cert) = &spec.cert {
            check_input(cert, PEM_LIMIT, "CA certificate")?;
        }
    }
    Ok(config)
}
