//! `ota serve`: the firmware server (crate `ota-server`) for a folder or an S3 bucket, over
//! HTTP or HTTPS, with the catalogue at `/manifest.json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use ota_server::{S3Options, ServeOptions, Server, Store, Tls};

/// Where the S3 store is and how to sign requests (shared by `serve` and `publish`).
#[derive(Args, Clone)]
pub struct S3Args {
    /// S3-compatible store: s3://BUCKET[/PREFIX]. Needs --s3-endpoint.
    #[arg(long, value_name = "s3://BUCKET[/PREFIX]")]
    pub store: Option<String>,
    /// S3 endpoint URL (path-style), e.g. http://127.0.0.1:8333.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region used for signing.
    #[arg(long, default_value = ota_server::s3::DEFAULT_REGION)]
    pub s3_region: String,
    /// Access key (default: $AWS_ACCESS_KEY_ID; none: anonymous).
    #[arg(long, value_name = "KEY")]
    pub s3_access_key: Option<String>,
    /// Secret key (default: $AWS_SECRET_ACCESS_KEY).
    #[arg(long, value_name = "SECRET")]
    pub s3_secret_key: Option<String>,
    /// Bound on each call to the store, in ms (an unreachable store is a 503 after this).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub s3_timeout_ms: u64,
}

impl S3Args {
    /// The S3 options when `--store` is given.
    pub fn options(&self) -> Result<Option<S3Options>> {
        let Some(store) = &self.store else {
            if self.s3_endpoint.is_some() {
                bail!("--s3-endpoint needs --store s3://BUCKET");
            }
            return Ok(None);
        };
        let endpoint = self
            .s3_endpoint
            .as_deref()
            .ok_or_else(|| anyhow!("--store {store} needs --s3-endpoint URL"))?;
        let mut o = S3Options::new(store, endpoint)?;
        o.region = self.s3_region.clone();
        o.access_key = self.s3_access_key.clone();
        o.secret_key = self.s3_secret_key.clone();
        o.timeout = Duration::from_millis(self.s3_timeout_ms.max(1));
        Ok(Some(o))
    }
}

#[derive(Args)]
pub struct ServeArgs {
    /// Folder to serve (every file under it; app images and tone bins are catalogued).
    /// Default: the current folder, as `python -m http.server` does.
    #[arg(value_name = "DIR", conflicts_with = "store")]
    dir: Option<PathBuf>,
    /// Address to listen on. Loopback unless you say otherwise.
    #[arg(long, default_value = ota_server::DEFAULT_BIND)]
    bind: SocketAddr,
    #[command(flatten)]
    s3: S3Args,
    /// TLS certificate chain (PEM, leaf first). Needs --tls-key.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). Needs --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Issue a server certificate for the bind address (and every --tls-san) from the CA in
    /// --tls-dir, creating the CA there first if the folder has none; prints the CA's PEM path
    /// to pin.
    #[arg(long)]
    tls_self_signed: bool,
    /// Where --tls-self-signed keeps its CA (ca.pem, ca-key.pem, reused on every start) and
    /// writes the server's cert.pem and key.pem (default: ota-serve-tls-PORT in the system
    /// temp folder).
    #[arg(long, value_name = "DIR", requires = "tls_self_signed")]
    tls_dir: Option<PathBuf>,
    /// Another subject alternative name for the --tls-self-signed certificate: a DNS name or an
    /// IP address (repeatable), e.g. the name or LAN address devices use.
    #[arg(long, value_name = "NAME|IP", requires = "tls_self_signed")]
    tls_san: Vec<String>,
    /// Folder: rescan interval of the catalogue. S3: how long metadata and the catalogue are reused.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    rescan_ms: u64,
    /// Memory for file contents, in MiB: versions of files up to 16 MiB are kept (least
    /// recently used dropped first); 0 streams every response from the file.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    cache_mib: u64,
    /// Connections served at once. At the cap the longest-idle connection (no request in
    /// flight) is closed to make room; when all are busy, new ones wait in the listen backlog.
    #[arg(long, default_value_t = ota_server::conns::DEFAULT_MAX_CONNECTIONS as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Time a client has to send a request head (new connection or between keep-alive
    /// requests) before the connection is closed.
    #[arg(long, default_value_t = ota_server::conns::DEFAULT_HEADER_TIMEOUT.as_millis() as u64,
          value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    header_timeout_ms: u64,
    /// Largest request head (request line and headers), in KiB; a bigger one gets 431 and the
    /// connection is closed. Also bounds each connection's read buffer.
    #[arg(long, default_value_t = (ota_server::conns::DEFAULT_MAX_HEAD / 1024) as u64,
          value_name = "KIB", value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_head_kib: u64,
    /// Time a response may make no progress (the client reads nothing) before the connection
    /// is closed.
    #[arg(long, default_value_t = ota_server::conns::DEFAULT_SEND_TIMEOUT.as_millis() as u64,
          value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    send_timeout_ms: u64,
    /// Sign the folder's catalogue with this private key (Ed25519 or ECDSA P-256 PEM; see
    /// `ota catalogue keygen`): every document it serves at /manifest.json is signed, with a
    /// serial that grows with each change. (An S3 store's catalogue is signed by `ota publish
    /// --sign-key`.)
    #[arg(long, value_name = "KEY.pem", conflicts_with = "store")]
    sign_key: Option<PathBuf>,
    /// Folder store: make delta patches (detools sequential, heatshrink, esp_delta_ota
    /// header) from this many previous versions of each chip and project to the newest, under
    /// `.ota-delta/` in the folder, and list them in the newest entry's `deltas` (0: none).
    /// Patch files that neither the catalogue nor the one before it lists are deleted.
    /// With --store s3://… the catalogue's patches are made by `ota publish --delta-bases`.
    #[arg(long, value_name = "N", default_value_t = ota_server::deltas::DEFAULT_DELTA_BASES as u16,
          value_parser = clap::value_parser!(u16).range(0..=64))]
    delta_bases: u16,
    /// No access log.
    #[arg(long, short)]
    quiet: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Also be a fleet server: hawkBit's DDI device API under /TENANT/controller/v1/, the
    /// admin API under /api/v1/ and the rollout engine (releases are the folder's app images).
    #[arg(long)]
    fleet: bool,
    /// Fleet database: sqlite:PATH or postgres://USER@HOST:PORT/DB (default: sqlite: fleet.db
    /// beside the served folder).
    #[arg(long, value_name = "URL", requires = "fleet")]
    db: Option<String>,
    /// DDI tenant (the first path segment devices use).
    #[arg(long, default_value = ota_server::fleet::DEFAULT_TENANT, requires = "fleet")]
    tenant: String,
    /// File holding the admin token (first line) for /api/v1/ (Authorization: Bearer); without
    /// it the admin API is off.
    #[arg(long, value_name = "FILE", requires = "fleet")]
    admin_token_file: Option<PathBuf>,
    /// File holding the DDI gateway token (first line): any controller id may poll with
    /// `Authorization: GatewayToken` and is registered on its first poll.
    #[arg(long, value_name = "FILE", requires = "fleet")]
    gateway_token_file: Option<PathBuf>,
    /// Polling interval told to devices (DDI config.polling.sleep), in seconds.
    #[arg(long, default_value_t = 30, value_name = "S", requires = "fleet",
          value_parser = clap::value_parser!(u64).range(1..=86_399))]
    poll_sleep_s: u64,
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let store = match (a.s3.options()?, &a.dir) {
        (Some(o), _) => Store::S3(o),
        (None, Some(d)) => Store::Dir(d.clone()),
        (None, None) => Store::Dir(PathBuf::from(".")),
    };
    let tls = match (&a.tls_cert, &a.tls_key, a.tls_self_signed) {
        (Some(cert), Some(key), _) => {
            crate::input::check_input(cert, crate::input::PEM_LIMIT, "TLS certificate")?;
            crate::input::check_input(key, crate::input::PEM_LIMIT, "TLS key")?;
            Tls::Files {
                cert: cert.clone(),
                key: key.clone(),
            }
        }
        (_, _, true) => Tls::SelfSigned {
            dir: a.tls_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("ota-serve-tls-{}", a.bind.port()))
            }),
            sans: a.tls_san.clone(),
        },
        _ => Tls::None,
    };
    let sign_key = match &a.sign_key {
        Some(p) => Some(std::sync::Arc::new(crate::cmd_catalogue::load_signing_key(
            p,
        )?)),
        None => None,
    };
    let opts = ServeOptions {
        sign_key: sign_key.clone(),
        delta_bases: a.delta_bases as usize,
        bind: a.bind,
        store,
        tls,
        rescan: Duration::from_millis(a.rescan_ms.max(10)),
        access_log: !a.quiet,
        cache: ota_server::local::CacheLimits {
            max_file: if a.cache_mib == 0 {
                0
            } else {
                ota_server::local::DEFAULT_CACHE.max_file
            },
            budget: a.cache_mib << 20,
        },
        limits: ota_server::ConnLimits {
            max_connections: a.max_connections as usize,
            header_timeout: Duration::from_millis(a.header_timeout_ms),
            max_head: (a.max_head_kib as usize) << 10,
            send_timeout: Duration::from_millis(a.send_timeout_ms),
        },
        fleet: None,
    };
    let fleet = if a.fleet {
        let db = match &a.db {
            Some(d) => d.clone(),
            None => {
                let dir = match &a.dir {
                    Some(d) => d.clone(),
                    None if a.s3.store.is_some() => {
                        bail!("--fleet with --store needs --db (sqlite:PATH or postgres://...)")
                    }
                    None => PathBuf::from("."),
                };
                let dir =
                    std::fs::canonicalize(&dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
                let beside = dir.parent().unwrap_or(&dir).join("fleet.db");
                format!("sqlite:{}", beside.display())
            }
        };
        let token = |f: &Option<PathBuf>, what: &str| -> Result<Option<String>> {
            match f {
                None => Ok(None),
                Some(p) => ota_server::fleet::auth::read_token_file(p)
                    .map(Some)
                    .map_err(|e| anyhow!("{what}: {e}")),
            }
        };
        let mut fo = ota_server::fleet::FleetOptions::new(db);
        fo.tenant = a.tenant.clone();
        fo.admin_token = token(&a.admin_token_file, "--admin-token-file")?;
        fo.gateway_token = token(&a.gateway_token_file, "--gateway-token-file")?;
        fo.poll_sleep = Duration::from_secs(a.poll_sleep_s);
        Some(fo)
    } else {
        None
    };
    let fleet_note = fleet.as_ref().map(|f| {
        format!(
            "fleet: DDI at /{}/controller/v1/ID, admin API at /api/v1/ ({}), database {}",
            f.tenant,
            if f.admin_token.is_some() {
                "on"
            } else {
                "off: no --admin-token-file"
            },
            ota_server::fleet::store::redact(&f.db)
        )
    });
    let opts = ServeOptions { fleet, ..opts };
    let rt = ota_server::runtime(a.workers)?;
    let server = rt.block_on(Server::bind(opts))?;
    let info = server.info().clone();
    let proto = if info.base_url.starts_with("https") {
        "HTTPS"
    } else {
        "HTTP"
    };
    println!(
        "Serving {proto} on {} port {} ({}/) from {}",
        info.addr.ip(),
        info.addr.port(),
        info.base_url,
        info.source
    );
    if let Some(k) = &sign_key {
        println!(
            "catalogue signed: {} key id {} (devices: catalogue_key = the public key, `ota catalogue pubkey`)",
            k.algorithm(),
            k.public_key().key_id_hex()
        );
    }
    match info.entries {
        Some(n) => println!(
            "catalogue: {}/manifest.json ({n} entries; the folder is rescanned every {} ms)",
            info.base_url, a.rescan_ms
        ),
        None => println!(
            "catalogue: {}/manifest.json (from the store's manifest.json, reused for {} ms)",
            info.base_url, a.rescan_ms
        ),
    }
    if let Some(note) = &fleet_note {
        println!("{note}");
    }
    if let Some(note) = &info.tls_note {
        println!("TLS: {note}");
    }
    if let Some(ca) = &info.ca_pem {
        println!(
            "TLS CA certificate (pin it on devices: cert = \"{}\"): {}",
            ca.display(),
            ca.display()
        );
    }
    rt.block_on(server.run(std::future::pending::<()>()));
    Ok(ExitCode::SUCCESS)
}
