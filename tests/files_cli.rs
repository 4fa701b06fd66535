//! Files and resources of the CLI: every input is a regular file with a size bound (never a
//! FIFO, a device node or a directory, never an unbounded read), outputs never replace a
//! special file, `device create` does not overwrite without `--force`, and a closed or full
//! standard output never makes a command panic.
#![cfg(unix)]

mod common;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How long a refused input may take: it must never block or read for long.
const QUICK: Duration = Duration::from_secs(10);

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(r, 0, "mkfifo {}", p.display());
}

fn is_fifo(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false)
}

/// Address space allowed to a command under test: an unbounded read (of `/dev/zero`) fails
/// there instead of eating the machine's memory.
const MEMORY_LIMIT: libc::rlim_t = 2 << 30;

/// Run `ota args`, killing it if it takes longer than [`QUICK`] (a blocked read fails the test),
/// with at most [`MEMORY_LIMIT`] of memory.
fn ota_quick(args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota"));
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > QUICK {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "ota {:?} did not finish within {:?} (blocked on its input?):\n{}",
                args,
                QUICK,
                text(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
    /// [`Dir::p`] as a `&'static str` (leaked: a test's handful of paths).
    fn s(&self, name: &str) -> &'static str {
        Box::leak(self.p(name).into_boxed_str())
    }
    /// A device `flash.bin` with an app in ota_0, and `app.bin`, `tone.bin`, `table.csv`.
    fn device(&self) {
        ok(&[
            "image",
            "make",
            "--project",
            "p",
            "--version",
            "v1",
            "-o",
            &self.p("app.bin"),
        ]);
        ok(&[
            "device",
            "create",
            "--flash",
            &self.p("flash.bin"),
            "--app",
            &self.p("app.bin"),
        ]);
        let snd = self.path("snd");
        std::fs::create_dir_all(&snd).unwrap();
        std::fs::write(snd.join("a.mp3"), [1u8; 100]).unwrap();
        ok(&["tone", "pack", &self.p("snd"), "-o", &self.p("tone.bin")]);
        std::fs::write(
            self.path("table.csv"),
            "nvs, data, nvs, 0x9000, 0x6000,\nfactory, app, factory, 0x10000, 1M,\n",
        )
        .unwrap();
    }
}

/// Every command that reads a file, with `{}` where the input goes.
fn input_commands(d: &Dir) -> Vec<Vec<String>> {
    let f = d.p("flash.bin");
    let out = d.p("out.bin");
    let new = d.p("new.bin");
    let cmds: Vec<Vec<&str>> = vec![
        vec!["image", "info", "{}"],
        vec!["tone", "info", "{}"],
        vec!["tone", "unpack", "{}", &out],
        vec!["partition-table", "{}"],
        vec!["device", "create", "--flash", &new, "--app", "{}"],
        vec!["device", "create", "--flash", &new, "--partitions", "{}"],
        vec!["device", "create", "--flash", &new, "--data", "nvs={}"],
        vec!["device", "info", "--flash", "{}"],
        vec!["device", "boot", "--flash", "{}"],
        vec!["device", "run", "--flash", &f, "--config", "{}"],
        vec!["partition", "list", "--flash", "{}"],
        vec!["partition", "write", "nvs", "--flash", &f, "{}"],
        vec!["otadata", "read", "--flash", "{}"],
        vec!["flash", "read", "--flash", "{}", "0", "16", "-o", &out],
        vec![
            "fleet-sim",
            "--server",
            "http://127.0.0.1:9",
            "--cert",
            "{}",
        ],
    ];
    cmds.into_iter()
        .map(|c| c.into_iter().map(str::to_string).collect())
        .collect()
}

fn with_input(cmd: &[String], input: &str) -> Vec<String> {
    cmd.iter().map(|a| a.replace("{}", input)).collect()
}

#[test]
fn inputs_refuse_dev_zero_fifo_and_directory_naming_file_and_limit() {
    let d = Dir::new();
    d.device();
    let fifo = d.path("fifo");
    mkfifo(&fifo);
    std::fs::create_dir_all(d.path("folder")).unwrap();
    let flash_before = std::fs::read(d.path("flash.bin")).unwrap();
    let cases = [
        ("/dev/zero".to_string(), "a character device"),
        (d.p("fifo"), "a FIFO"),
        (d.p("folder"), "a directory"),
    ];
    for cmd in input_commands(&d) {
        for (input, kind) in &cases {
            let args = with_input(&cmd, input);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = ota_quick(&argv);
            let t = text(&o);
            assert_eq!(o.status.code(), Some(1), "ota {:?}:\n{}", argv, t);
            assert!(
                t.contains(input.as_str()) && t.contains(kind) && t.contains("not a regular file"),
                "ota {:?} must name {} and say it is {}:\n{}",
                argv,
                input,
                kind,
                t
            );
            assert!(
                t.contains("MiB"),
                "ota {:?} must name the limit:\n{}",
                argv,
                t
            );
            assert!(!t.contains("panicked"), "{}", t);
        }
    }
    assert!(is_fifo(&fifo), "the FIFO is still a FIFO");
    assert!(!d.path("new.bin").exists(), "no device was created");
    assert_eq!(
        std::fs::read(d.path("flash.bin")).unwrap(),
        flash_before,
        "the device is unchanged"
    );
}

#[test]
fn a_fifo_as_the_settings_file_beside_a_flash_is_refused_without_blocking() {
    let d = Dir::new();
    d.device();
    let settings = d.path("flash.bin.device.toml");
    std::fs::remove_file(&settings).unwrap();
    mkfifo(&settings);
    for cmd in ["info", "boot", "confirm"] {
        let o = ota_quick(&["device", cmd, "--flash", &d.p("flash.bin")]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{}", t);
        assert!(
            t.contains("flash.bin.device.toml") && t.contains("a FIFO"),
            "{}",
            t
        );
    }
}

#[test]
fn inputs_larger_than_their_limit_are_refused_naming_the_limit() {
    let d = Dir::new();
    d.device();
    // Sparse files: their length is what is checked, nothing is read.
    let big_text = d.path("big.csv");
    std::fs::File::create(&big_text)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let big_image = d.path("big.bin");
    std::fs::File::create(&big_image)
        .unwrap()
        .set_len((128 << 20) + 1)
        .unwrap();
    let f = d.p("flash.bin");
    let text_cmds: Vec<Vec<String>> = vec![
        vec!["partition-table".into(), d.p("big.csv")],
        vec![
            "device".into(),
            "run".into(),
            "--flash".into(),
            f.clone(),
            "--config".into(),
            d.p("big.csv"),
        ],
        vec![
            "device".into(),
            "create".into(),
            "--flash".into(),
            d.p("new.bin"),
            "--partitions".into(),
            d.p("big.csv"),
        ],
    ];
    for args in text_cmds {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = ota_quick(&argv);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{:?}: {}", argv, t);
        assert!(
            t.contains("big.csv") && t.contains("limit of 1 MiB"),
            "{:?}: {}",
            argv,
            t
        );
    }
    for args in [
        vec!["image", "info", &d.p("big.bin")],
        vec!["tone", "info", &d.p("big.bin")],
        vec!["partition", "list", "--flash", &d.p("big.bin")],
        vec!["device", "info", "--flash", &d.p("big.bin")],
        vec!["partition", "write", "nvs", "--flash", &f, &d.p("big.bin")],
    ] {
        let o = ota_quick(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{:?}: {}", args, t);
        assert!(
            t.contains("big.bin") && t.contains("limit of 128 MiB"),
            "{:?}: {}",
            args,
            t
        );
    }
}

#[test]
fn device_create_refuses_to_replace_a_file_without_force() {
    let d = Dir::new();
    d.device();
    let before = std::fs::read(d.path("flash.bin")).unwrap();
    let o = ota(&["device", "create", "--flash", &d.p("flash.bin")]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{}", t);
    assert!(
        t.contains(&d.p("flash.bin")) && t.contains("already exists") && t.contains("--force"),
        "{}",
        t
    );
    assert_eq!(std::fs::read(d.path("flash.bin")).unwrap(), before);
    // With --force but bad input (an app for another chip) nothing is touched either.
    let o = ota(&[
        "device",
        "create",
        "--flash",
        &d.p("flash.bin"),
        "--force",
        "--chip",
        "esp32c3",
        "--app",
        &d.p("app.bin"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(std::fs::read(d.path("flash.bin")).unwrap(), before);
    // With --force it is replaced: the new device has no app. Through a symbolic link, the
    // link's target is replaced and the link stays.
    std::os::unix::fs::symlink(d.path("flash.bin"), d.path("link.bin")).unwrap();
    ok(&["device", "create", "--flash", &d.p("link.bin"), "--force"]);
    assert!(std::fs::symlink_metadata(d.path("link.bin"))
        .unwrap()
        .file_type()
        .is_symlink());
    let info = ok(&["device", "info", "--flash", &d.p("flash.bin")]);
    assert!(info.contains("not bootable"), "{}", info);
    assert!(
        !std::fs::read_dir(d.dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp-")),
        "no temporary file left behind"
    );
}

#[test]
fn device_create_never_replaces_a_fifo_or_a_device_even_with_force() {
    let d = Dir::new();
    let fifo = d.path("fifo");
    mkfifo(&fifo);
    for target in [d.p("fifo"), "/dev/null".to_string()] {
        let o = ota_quick(&["device", "create", "--flash", &target, "--force"]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{}", t);
        assert!(
            t.contains(&target) && t.contains("not a regular file"),
            "{}",
            t
        );
    }
    assert!(is_fifo(&fifo));
    let null = std::fs::metadata("/dev/null").unwrap();
    assert!(
        null.file_type().is_char_device(),
        "/dev/null is still a device"
    );
}

/// Run `args` whose output file is a FIFO, reading it meanwhile; returns what came through.
fn through_fifo(args: &[&str], fifo: &Path) -> (Output, Vec<u8>) {
    let path = fifo.to_path_buf();
    let reader = std::thread::spawn(move || {
        let mut data = Vec::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        data
    });
    let o = ota_quick(args);
    if !o.status.success() {
        // Unblock the reader if the command never opened the FIFO.
        let _ = std::fs::OpenOptions::new().write(true).open(fifo);
    }
    (o, reader.join().unwrap())
}

#[test]
fn outputs_stream_into_a_fifo_and_never_replace_it() {
    let d = Dir::new();
    d.device();
    let fifo = d.path("out.fifo");
    mkfifo(&fifo);
    let fp = d.p("out.fifo");
    let f = d.p("flash.bin");
    let nvs = std::fs::read(d.path("flash.bin")).unwrap()[0x9000..0xD000].to_vec();
    let cases: Vec<(Vec<&str>, Option<Vec<u8>>)> = vec![
        (
            vec!["partition", "read", "nvs", "--flash", &f, "-o", &fp],
            Some(nvs),
        ),
        (
            vec!["flash", "read", "--flash", &f, "0x9000", "16", "-o", &fp],
            Some(vec![0xFF; 16]),
        ),
        (
            vec![
                "image",
                "make",
                "--project",
                "p",
                "--version",
                "v2",
                "-o",
                &fp,
            ],
            None,
        ),
        (vec!["tone", "pack", d.s("snd"), "-o", &fp], None),
        (vec!["partition-table", d.s("table.csv"), "-o", &fp], None),
    ];
    for (args, expect) in cases {
        let (o, data) = through_fifo(&args, &fifo);
        assert!(o.status.success(), "{:?}: {}", args, text(&o));
        assert!(is_fifo(&fifo), "{:?} replaced the FIFO", args);
        assert!(
            !data.is_empty(),
            "{:?}: nothing came through the FIFO",
            args
        );
        if let Some(e) = expect {
            assert_eq!(data, e, "{:?}", args);
        }
        // The summary line goes to stderr when the output is a stream, not into the data.
        assert!(
            o.stdout.is_empty(),
            "{:?}: {}",
            args,
            String::from_utf8_lossy(&o.stdout)
        );
    }
    // Standard output as the output file: the data and nothing else.
    let o = ota(&[
        "partition",
        "read",
        "nvs",
        "--flash",
        &f,
        "-o",
        "/dev/stdout",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        o.stdout.len(),
        0x4000,
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn outputs_refuse_a_socket_and_leave_it_in_place() {
    let d = Dir::new();
    d.device();
    let sock = d.path("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let o = ota_quick(&[
        "partition",
        "read",
        "nvs",
        "--flash",
        &d.p("flash.bin"),
        "-o",
        &d.p("s.sock"),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{}", t);
    assert!(t.contains("s.sock") && t.contains("a socket"), "{}", t);
    assert!(std::fs::symlink_metadata(&sock)
        .unwrap()
        .file_type()
        .is_socket());
}

#[test]
fn editing_a_flash_image_through_a_symlink_keeps_the_link_and_its_permissions() {
    let d = Dir::new();
    d.device();
    let real = d.path("flash.bin");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = d.path("link.bin");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    ok(&["partition", "erase", "ota_0", "--flash", &d.p("link.bin")]);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symbolic link was replaced by a file"
    );
    let data = std::fs::read(&real).unwrap();
    assert!(
        data[0x10000..0x110000].iter().all(|&b| b == 0xFF),
        "the link's target was erased"
    );
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the flash image keeps its permissions");
    // A new output file gets the ordinary permissions of a new file, not a temp file's 0600.
    ok(&[
        "partition",
        "read",
        "nvs",
        "--flash",
        &d.p("flash.bin"),
        "-o",
        &d.p("nvs.bin"),
    ]);
    let mode = std::fs::metadata(d.path("nvs.bin"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_ne!(mode, 0o600, "a new output is not created 0600");
    assert!(
        !std::fs::read_dir(d.dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp-")),
        "no temporary file left behind"
    );
}

/// Run `args` with standard output a pipe whose reader is already gone.
fn with_closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_every_command_quietly_with_status_0() {
    let d = Dir::new();
    d.device();
    let f = d.p("flash.bin");
    let bin = d.p("table.bin");
    ok(&["partition-table", &d.p("table.csv"), "-o", &bin]);
    for args in [
        vec!["device", "info", "--flash", &f],
        vec!["device", "info", "--flash", &f, "--json"],
        vec!["device", "boot", "--flash", &f],
        vec!["partition", "list", "--flash", &f],
        vec!["otadata", "read", "--flash", &f],
        vec!["image", "info", &d.p("app.bin")],
        vec!["tone", "info", &d.p("tone.bin")],
        vec!["partition-table", &bin],
        vec!["partition-table", &d.p("table.csv")],
        vec![
            "partition",
            "read",
            "nvs",
            "--flash",
            &f,
            "-o",
            "/dev/stdout",
        ],
    ] {
        let o = with_closed_stdout(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{:?} panicked: {}", args, err);
        assert_eq!(o.status.code(), Some(0), "{:?}: {}", args, err);
        assert!(err.is_empty(), "{:?} is quiet: {}", args, err);
    }
    // Log lines are not output that anyone waits for: a command that logs (the bootloader's
    // first boot records ota_0 in otadata) still does all its work.
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["device", "info", "--flash", &f, "--json"])).unwrap();
    assert_eq!(v["otadata"]["entries"][0]["seq"], 1, "{}", v);
}

#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    if !Path::new("/dev/full").exists() {
        eprintln!("SKIP: no /dev/full");
        return;
    }
    let d = Dir::new();
    d.device();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(["device", "info", "--flash", &d.p("flash.bin")])
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{}", err);
    assert_eq!(o.status.code(), Some(1), "{}", err);
    assert!(err.contains("writing to standard output"), "{}", err);
}

#[test]
fn tone_unpack_refuses_a_fifo_in_the_way_without_blocking() {
    let d = Dir::new();
    d.device();
    std::fs::create_dir_all(d.path("out")).unwrap();
    let fifo = d.path("out/000.mp3");
    mkfifo(&fifo);
    let o = ota_quick(&["tone", "unpack", &d.p("tone.bin"), &d.p("out")]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{}", t);
    assert!(t.contains("000.mp3") && t.contains("a FIFO"), "{}", t);
    assert!(is_fifo(&fifo));
    // Without it the file is written.
    std::fs::remove_file(&fifo).unwrap();
    ok(&["tone", "unpack", &d.p("tone.bin"), &d.p("out")]);
    assert_eq!(std::fs::read(&fifo).unwrap(), vec![1u8; 100]);
}
