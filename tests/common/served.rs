//! A running `ota serve` on 127.0.0.1 (ephemeral port) for the CLI tests.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `ota serve`; killed (by its own pid) when dropped.
pub struct Served {
    child: Child,
    pub base: String,
    pub lines: Vec<String>,
    log: PathBuf,
}

impl Served {
    /// Start `ota serve ARGS --bind 127.0.0.1:0` and wait (at most 30 s) for its banner.
    pub fn start(args: &[&str], log: &Path) -> Served {
        Served::start_in(None, args, log)
    }

    /// The same, run in folder `cwd`.
    pub fn start_in(cwd: Option<&Path>, args: &[&str], log: &Path) -> Served {
        let err = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota"));
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd
            .arg("serve")
            .args(args)
            .args(["--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn ota serve");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = Vec::new();
        let mut base = None;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    if let Some(b) = l.split(" (").nth(1).and_then(|r| r.split("/)").next()) {
                        if l.starts_with("Serving") {
                            base = Some(b.to_string());
                        }
                    }
                    lines.push(l);
                    // With `--fleet`, also its `fleet:` line (the DDI server is up).
                    let done = base.is_some()
                        && lines.iter().any(|l| l.starts_with("catalogue:"))
                        && (!args.contains(&"--fleet")
                            || lines.iter().any(|l| l.starts_with("fleet:")));
                    if done && !args.contains(&"--tls-self-signed") {
                        break;
                    }
                    if lines.iter().any(|l| l.starts_with("TLS CA")) {
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(st)) = child.try_wait() {
                        let mut e = String::new();
                        let _ = std::fs::File::open(log).map(|mut f| f.read_to_string(&mut e));
                        panic!("ota serve exited ({st}): {e}");
                    }
                }
                Err(_) => break,
            }
        }
        let base = base.unwrap_or_else(|| panic!("no banner from ota serve: {lines:?}"));
        Served {
            child,
            base,
            lines,
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
