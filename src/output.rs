//! Every file the CLI writes goes through [`write_output`] (or, for a flash image it edits,
//! through [`replace_regular`]), and every line it prints through [`print_out`].
//!
//! Files, by class:
//! - **Outputs named by the user** (`-o OUT` of `image make`, `tone pack`, `partition read`,
//!   `flash read`, `partition-table`): a regular
//!   file (or a new one) is replaced atomically, a temporary file in the same folder renamed
//!   over it, keeping the old file's permissions; through a symbolic link the link's target is
//!   replaced and the link stays. A FIFO or a character device (`/dev/stdout`, `/dev/null`, a
//!   named pipe) is written into as a stream, as a shell redirection would: never replaced.
//!   A socket, a block device or a directory is refused, naming the file.
//! - **Files the command names itself** (the files of `tone unpack` in its folder, the demo's
//!   files): replaced like the above when regular; a special file in the way is refused
//!   ([`write_regular`]): nobody would read a FIFO there, and a writer would wait for ever.
//! - **Flash images edited in place** (`otadata`, `partition write/erase`) and **devices**
//!   (`device create --flash F`): a flash image is storage that is read back, so it must be a
//!   regular file; anything else is refused ([`replace_regular`], [`check_device_path`]).
//!
//! Standard output: a reader that went away (`ota device info ... | head -1`) ends the command
//! quietly with status 0 at the next line printed (likewise a stream output whose reader went
//! away); any other write error (a full disk) is an error with status 1. The `println!` of every module is [`print_out`] (see `main.rs`).

use std::ffi::OsString;
use std::fs::Metadata;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::input::kind_name;

/// Exit status when standard output was closed by its reader: success, the reader had what it
/// wanted (as ripgrep and fd do; see README "Exit status").
pub const EXIT_STDOUT_CLOSED: i32 = 0;

/// Print `args` and a newline to standard output. A closed pipe ends the process quietly with
/// [`EXIT_STDOUT_CLOSED`]; another error is reported on stderr with exit status 1.
pub fn print_out(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|_| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = r {
        stdout_failed(e);
    }
}

/// Write raw bytes to standard output (binary output), with [`print_out`]'s rules.
pub fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|_| out.flush()) {
        stdout_failed(e);
    }
}

fn stdout_failed(e: std::io::Error) -> ! {
    crate::logger::progress_done();
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(EXIT_STDOUT_CLOSED);
    }
    print_err(format_args!("error: writing to standard output: {}", e));
    std::process::exit(1);
}

/// Print to standard error; a failure is ignored (there is nowhere left to report it).
pub fn print_err(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|_| err.write_all(b"\n"));
}

/// Flush standard output at the end of a command (same rules as [`print_out`]).
pub fn flush_stdout() {
    if let Err(e) = std::io::stdout().lock().flush() {
        stdout_failed(e);
    }
}

#[cfg(unix)]
fn is_stream(m: &Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    m.file_type().is_fifo() || m.file_type().is_char_device()
}
#[cfg(not(unix))]
fn is_stream(_: &Metadata) -> bool {
    false
}

/// How [`write_output`] wrote its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrote {
    /// A regular file was created or replaced.
    File,
    /// A FIFO or character device (maybe standard output itself) was written into.
    Stream,
}

/// The line saying what a command wrote: on standard output, or on standard error when the
/// output went into a stream (`-o /dev/stdout`), so that it does not mix with the data.
pub fn say(wrote: Wrote, args: std::fmt::Arguments<'_>) {
    match wrote {
        Wrote::File => print_out(args, true),
        Wrote::Stream => print_err(args),
    }
}

/// Write `bytes` as the output file `path` (`what` names it in errors), by the rules above.
pub fn write_output(path: &Path, bytes: &[u8], what: &str) -> Result<Wrote> {
    write_output_inner(path, bytes, what)?;
    Ok(match std::fs::metadata(path) {
        Ok(m) if is_stream(&m) => Wrote::Stream,
        _ => Wrote::File,
    })
}

fn write_output_inner(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => replace_file(&resolve(path)?, bytes, Some(&m), what),
        Ok(m) if is_stream(&m) => {
            // Opened for writing without truncation or creation: it is written, not replaced.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("opening {} {} for writing", what, path.display()))?;
            match f.write_all(bytes).and_then(|_| f.flush()) {
                // The reader went away, as for standard output: a quiet end.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => stdout_failed(e),
                r => r.with_context(|| format!("writing {} into {}", what, path.display())),
            }
        }
        Ok(m) => bail!(
            "{} {} is {}: refusing to write into it or replace it (give a regular file, a FIFO \
             or a character device such as /dev/stdout)",
            what,
            path.display(),
            kind_name(&m)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                bail!(
                    "{} {} is a symbolic link to nothing: refusing to replace it",
                    what,
                    path.display()
                );
            }
            replace_file(path, bytes, None, what)
        }
        Err(e) => Err(anyhow!("{} {}: {}", what, path.display(), e)),
    }
}

/// Write `bytes` as the file `path` that the command names itself (the files of `tone unpack`,
/// the demo's SD card and served files): like [`write_output`] for a regular or new file, but
/// any special file in the way is refused, never written into (nobody reads it) nor replaced.
pub fn write_regular(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_symlink() && !m.is_file() => bail!(
            "{} {} is {}, not a regular file: refusing to write into it or replace it",
            what,
            path.display(),
            kind_name(&m)
        ),
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::metadata(path).map_err(|e| {
                anyhow!(
                    "{} {} is a symbolic link that cannot be followed ({}): refusing to replace it",
                    what,
                    path.display(),
                    e
                )
            })?;
            if !target.is_file() {
                bail!(
                    "{} {} leads to {}, not a regular file: refusing to write into it or replace it",
                    what,
                    path.display(),
                    kind_name(&target)
                );
            }
            write_output_inner(path, bytes, what)
        }
        _ => write_output_inner(path, bytes, what),
    }
}

/// Replace the flash image `path`, which must still be a regular file, with `bytes`
/// (atomically; through a symbolic link its target is replaced, keeping the link).
pub fn replace_regular(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    let m = std::fs::metadata(path).with_context(|| format!("{} {}", what, path.display()))?;
    if !m.is_file() {
        bail!(
            "{} {} is {} now, not a regular file: refusing to replace it",
            what,
            path.display(),
            kind_name(&m)
        );
    }
    replace_file(&resolve(path)?, bytes, Some(&m), what)
}

/// A device's flash file must be a regular file or not exist yet: refuse anything else, and
/// refuse an existing file unless `force`.
pub fn check_device_path(path: &Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(_) => {
            let m = std::fs::metadata(path).map_err(|e| {
                anyhow!(
                    "flash image {} is a symbolic link that cannot be followed ({}): refusing to \
                     replace it",
                    path.display(),
                    e
                )
            })?;
            if !m.is_file() {
                bail!(
                    "flash image {} is {}, not a regular file: a device's flash must be a \
                     regular file (refusing to replace it, even with --force)",
                    path.display(),
                    kind_name(&m)
                );
            }
            if !force {
                bail!(
                    "flash image {} already exists: give --force to replace it (its settings \
                     file too)",
                    path.display()
                );
            }
            Ok(())
        }
    }
}

/// The file a path names, symbolic links followed (the path itself when it does not exist).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
            .with_context(|| format!("following the symbolic link {}", path.display())),
        _ => Ok(path.to_path_buf()),
    }
}

/// Write a temporary file beside `path`, then rename it over `path`. The new file gets the
/// permissions of the one it replaces (`old`), or the process's default for a new file.
fn replace_file(path: &Path, bytes: &[u8], old: Option<&Metadata>, what: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default();
    let (tmp_path, mut tmp) = create_temp(dir, name)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let result = (|| -> Result<()> {
        tmp.write_all(bytes)
            .and_then(|_| tmp.flush())
            .with_context(|| format!("writing {} {}", what, path.display()))?;
        if let Some(m) = old {
            std::fs::set_permissions(&tmp_path, m.permissions())
                .with_context(|| format!("setting the permissions of {}", path.display()))?;
        }
        drop(tmp);
        std::fs::rename(&tmp_path, path)
            .with_context(|| format!("replacing {} {}", what, path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result
}

/// A new, empty temporary file beside `path` (see [`create_temp`]), to be renamed over it.
pub fn temp_beside(path: &Path) -> Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (p, _) = create_temp(dir, path.file_name().unwrap_or_default())
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    Ok(p)
}

/// A new file `.NAME.tmp-PID-N` in `dir`, created exclusively (so with the default
/// permissions of a new file, unlike a 0600 temporary file).
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut last = None;
    for n in 0..100u32 {
        let mut file_name = OsString::from(".");
        file_name.push(name);
        file_name.push(format!(".tmp-{}-{}", std::process::id(), n));
        let p = dir.join(file_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}
