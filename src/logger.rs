//! ESP-IDF style log lines (`I (1234) TAG: message`), coloured on a terminal, and progress bars
//! for long transfers (only on a terminal, on stderr).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

struct Logger {
    start: Instant,
    color: bool,
    bars: bool,
    bar: Mutex<Option<ProgressBar>>,
}

fn logger() -> &'static Logger {
    static LOGGER: OnceLock<Logger> = OnceLock::new();
    LOGGER.get_or_init(|| Logger {
        start: Instant::now(),
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        bars: std::io::stderr().is_terminal() && std::io::stdout().is_terminal(),
        bar: Mutex::new(None),
    })
}

/// Where log lines go (`device run --quiet` / `--json`): ESP-IDF text on stdout (the default),
/// only the error lines (on stderr), or one JSON event per line on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text = 0,
    Quiet = 1,
    Json = 2,
}

static OUTPUT: AtomicU8 = AtomicU8::new(Output::Text as u8);

pub fn set_output(o: Output) {
    OUTPUT.store(o as u8, Ordering::Relaxed);
}

pub fn output() -> Output {
    match OUTPUT.load(Ordering::Relaxed) {
        1 => Output::Quiet,
        2 => Output::Json,
        _ => Output::Text,
    }
}

/// One JSON event as one line on stdout.
pub fn json_event(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", v);
    let _ = out.flush();
}

/// Print one ESP-IDF style line: `level` is 'E', 'W', 'I' or 'D'.
pub fn log(level: char, tag: &str, msg: &str) {
    let l = logger();
    let ms = l.start.elapsed().as_millis();
    match output() {
        Output::Text => {}
        Output::Quiet => {
            if level == 'E' {
                eprintln!("{} ({}) {}: {}", level, ms, tag, msg);
            }
            return;
        }
        Output::Json => {
            json_event(&serde_json::json!({"event": "log", "ms": ms as u64,
                "level": level.to_string(), "tag": tag, "message": msg}));
            return;
        }
    }
    let line = if l.color {
        let code = match level {
            'E' => "0;31",
            'W' => "0;33",
            'I' => "0;32",
            _ => "0",
        };
        format!("\x1b[{}m{} ({}) {}: {}\x1b[0m", code, level, ms, tag, msg)
    } else {
        format!("{} ({}) {}: {}", level, ms, tag, msg)
    };
    // A line that cannot be written (a closed pipe) is dropped, not fatal: the command goes on,
    // so a device that is booting or updating finishes its flash writes (see `output.rs`).
    let write = || {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", line);
    };
    let bar = l.bar.lock().unwrap_or_else(|p| p.into_inner());
    match bar.as_ref() {
        Some(b) => b.suspend(write),
        None => write(),
    }
}

pub fn info(tag: &str, msg: &str) {
    log('I', tag, msg)
}

pub fn warn(tag: &str, msg: &str) {
    log('W', tag, msg)
}

pub fn error(tag: &str, msg: &str) {
    log('E', tag, msg)
}

/// Update (or start) the progress bar of a transfer.
pub fn progress(label: &str, bytes: u64, total: Option<u64>) {
    let l = logger();
    if !l.bars || output() != Output::Text {
        return;
    }
    let mut bar = l.bar.lock().unwrap_or_else(|p| p.into_inner());
    let b = bar.get_or_insert_with(|| {
        let b = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        b.set_style(
            ProgressStyle::with_template(
                "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        b
    });
    b.set_message(label.to_string());
    b.set_position(bytes);
}

/// Remove the progress bar, if any.
pub fn progress_done() {
    let l = logger();
    let mut bar = l.bar.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
}
