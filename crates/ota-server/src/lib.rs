//! `ota-server`: the firmware server behind `ota serve`, replacing `python -m http.server`.
//!
//! Async (tokio + hyper 1). It serves one folder, or an S3-compatible bucket, over HTTP or
//! HTTPS with ranges, strong ETags and conditional requests, and publishes a catalogue of every
//! app image and tone bin at `/manifest.json` (its JSON types: the `ota-catalogue` crate).

pub mod catalogue;
pub mod conns;
pub mod deltas;
pub mod fleet;
pub mod http;
pub mod local;
pub mod range;
pub mod s3;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use crate::http::Stats;
use crate::http::{Backend, State};
use crate::local::LocalDir;
pub use crate::s3::{S3Options, S3Store};

/// Default bind address: loopback only.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Default catalogue rescan interval.
pub const DEFAULT_RESCAN: Duration = Duration::from_secs(2);
/// A client must send its request head within this time by default (slowloris guard).
pub const HEADER_TIMEOUT: Duration = conns::DEFAULT_HEADER_TIMEOUT;
/// A TLS handshake must finish within this time, or the header timeout when that is shorter.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted by default (request line and headers).
pub const MAX_HEAD_BYTES: usize = conns::DEFAULT_MAX_HEAD;
pub use crate::conns::ConnLimits;
/// Connections the kernel queues for us while all `--max-connections` are busy (the `listen`
/// backlog; Linux caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 1024;
/// Threads for blocking file reads and hashing.
pub const MAX_BLOCKING_THREADS: usize = 64;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    S3(#[from] s3::S3Error),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("fleet: {0}")]
    Fleet(#[from] fleet::store::StoreError),
    #[error("{0}")]
    Options(String),
}

/// What to serve.
#[derive(Clone, Debug)]
pub enum Store {
    Dir(PathBuf),
    S3(S3Options),
}

/// TLS settings.
#[derive(Clone, Debug)]
pub enum Tls {
    None,
    /// PEM certificate chain and key.
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// A certificate for the bind address and `sans`, issued by the CA kept in this folder
    /// (created there the first time; reused afterwards, as devices pin it).
    SelfSigned {
        dir: PathBuf,
        sans: Vec<String>,
    },
}

/// Everything `ota serve` takes.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub bind: SocketAddr,
    pub store: Store,
    pub tls: Tls,
    /// Folder catalogue: how often the folder is rescanned. S3: how long HEADs and the
    /// catalogue are reused.
    pub rescan: Duration,
    /// Write one access-log line per request to stderr.
    pub access_log: bool,
    /// Folder store: which file versions are kept in memory.
    pub cache: local::CacheLimits,
    /// Connections: cap, head limit and deadlines.
    pub limits: ConnLimits,
    /// `--fleet`: the hawkBit DDI server, the admin API and the rollout engine.
    pub fleet: Option<fleet::FleetOptions>,
    /// Folder store: sign every catalogue document with this key (`--sign-key`). An S3
    /// store's catalogue is signed by `ota publish --sign-key` and served as it is.
    pub sign_key: Option<Arc<ota_catalogue::signed::SigningKey>>,
    /// Folder store: delta patches from this many previous versions of each chip and project
    /// to the newest (`--delta-bases`, 0: none; see [`deltas`]).
    pub delta_bases: usize,
}

impl ServeOptions {
    pub fn dir(dir: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            bind: DEFAULT_BIND
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            store: Store::Dir(dir.into()),
            tls: Tls::None,
            rescan: DEFAULT_RESCAN,
            access_log: true,
            cache: local::DEFAULT_CACHE,
            limits: ConnLimits::default(),
            fleet: None,
            sign_key: None,
            delta_bases: deltas::DEFAULT_DELTA_BASES,
        }
    }
}

/// What a bound server tells its caller.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:8080` or `https://…` (no trailing slash).
    pub base_url: String,
    /// With `--tls-self-signed`: the CA certificate devices should pin.
    pub ca_pem: Option<PathBuf>,
    /// With `--tls-self-signed`: whether the CA was reused and which names the certificate has.
    pub tls_note: Option<String>,
    /// What is served, for messages.
    pub source: String,
    /// Catalogue entries found at start (folder stores).
    pub entries: Option<usize>,
    pub stats: Arc<Stats>,
}

/// A bound, ready server.
pub struct Server {
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    state: Arc<State>,
    scanner: Option<Arc<Mutex<catalogue::DirCatalogue>>>,
    rescan: Duration,
    registry: Arc<conns::Registry>,
    info: ServerInfo,
}

impl Server {
    /// Bind, set up TLS and scan the catalogue once (call inside a tokio runtime).
    pub async fn bind(opts: ServeOptions) -> Result<Server, ServeError> {
        let listener = listen(opts.bind).map_err(|source| ServeError::Bind {
            addr: opts.bind,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: opts.bind,
            source,
        })?;
        let (acceptor, ca_pem) = match &opts.tls {
            Tls::None => (None, None),
            Tls::Files { cert, key } => {
                (Some(TlsAcceptor::from(tls::from_files(cert, key)?)), None)
            }
            Tls::SelfSigned { dir, sans } => {
                let s = tls::self_signed(addr.ip(), dir, sans)?;
                let note = format!(
                    "{} CA {}; certificate for {}",
                    if s.ca_reused {
                        "reusing the"
                    } else {
                        "created a new"
                    },
                    s.ca_pem.display(),
                    s.names.join(", ")
                );
                (Some(TlsAcceptor::from(s.config)), Some((s.ca_pem, note)))
            }
        };
        let stats = Arc::new(Stats::default());
        let (backend, catalogue, scanner, source, entries) = match &opts.store {
            Store::Dir(path) => {
                let dir = LocalDir::new(path, opts.cache).map_err(|source| ServeError::Dir {
                    path: path.clone(),
                    source,
                })?;
                let root = dir.root().to_path_buf();
                let scanner = Arc::new(Mutex::new(
                    catalogue::DirCatalogue::with_signer(root.clone(), opts.sign_key.clone())
                        .with_deltas(opts.delta_bases),
                ));
                let sc = scanner.clone();
                tokio::task::spawn_blocking(move || {
                    sc.lock().unwrap_or_else(|p| p.into_inner()).rescan();
                })
                .await
                .map_err(|e| ServeError::Runtime(std::io::Error::other(e)))?;
                let handle = scanner.lock().unwrap_or_else(|p| p.into_inner()).handle();
                let n = handle
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .catalogue
                    .entries
                    .len();
                (
                    Backend::Dir(Arc::new(dir)),
                    handle,
                    Some(scanner),
                    root.display().to_string(),
                    Some(n),
                )
            }
            Store::S3(_) if opts.sign_key.is_some() => {
                return Err(ServeError::Options(
                    "--sign-key signs a folder's catalogue: an S3 store's manifest.json is \
                     signed when it is written, by `ota publish --sign-key KEY.pem`, and served \
                     as it is"
                        .to_string(),
                ))
            }
            Store::S3(o) => {
                let mut o = o.clone();
                o.cache_ttl = opts.rescan;
                let store = S3Store::new(o)?;
                let source = store.describe();
                let empty = Arc::new(std::sync::RwLock::new(Arc::new(
                    catalogue::CatalogueDoc::new(Vec::new()),
                )));
                (Backend::S3(Arc::new(store)), empty, None, source, None)
            }
        };
        let registry = Arc::new(conns::Registry::new(opts.limits, stats.conns.clone()));
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let (ca_pem, tls_note) = match ca_pem {
            Some((p, n)) => (Some(p), Some(n)),
            None => (None, None),
        };
        let fleet = match &opts.fleet {
            None => None,
            Some(fo) => {
                let root = match &opts.store {
                    Store::Dir(_) => Some(PathBuf::from(&source)),
                    Store::S3(_) => None,
                };
                Some(Arc::new(
                    fleet::Fleet::open(fo, root, catalogue.clone(), format!("{scheme}://{addr}"))
                        .await?,
                ))
            }
        };
        let info = ServerInfo {
            addr,
            base_url: format!("{scheme}://{addr}"),
            ca_pem,
            tls_note,
            source,
            entries,
            stats: stats.clone(),
        };
        Ok(Server {
            listener,
            acceptor,
            state: Arc::new(State {
                backend,
                catalogue,
                access_log: opts.access_log,
                stats,
                fleet,
            }),
            scanner,
            rescan: opts.rescan,
            registry,
            info,
        })
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// Serve until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(scanner) = self.scanner.clone() {
            let every = self.rescan;
            tasks.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let sc = scanner.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        sc.lock().unwrap_or_else(|p| p.into_inner()).rescan();
                    })
                    .await;
                }
            });
        }
        tasks.spawn(self.registry.clone().sweep_forever());
        if let Some(fleet) = self.state.fleet.clone() {
            tasks.spawn(async move {
                loop {
                    fleet.maintain().await;
                    tokio::time::sleep(fleet.engine_every).await;
                }
            });
        }
        tokio::pin!(shutdown);
        loop {
            // At the cap: close the longest-idle connections, or wait for one to end; new
            // connections wait in the listen backlog meanwhile.
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.registry.make_room() => {}
            }
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let reg = self.registry.register();
                        let state = self.state.clone();
                        let acceptor = self.acceptor.clone();
                        let limits = self.registry.limits;
                        tokio::spawn(connection(stream, peer, acceptor, state, reg, limits));
                    }
                    // Out of descriptors or similar: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                },
            }
        }
        tasks.abort_all();
    }
}

/// Bind and listen with [`LISTEN_BACKLOG`] (address reuse on, as `TcpListener::bind` does).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    state: Arc<State>,
    reg: conns::Registration,
    limits: ConnLimits,
) {
    let _ = stream.set_nodelay(true);
    let conn = reg.conn.clone();
    let stream = conns::TrackedIo::new(stream, conn.clone());
    let svc_conn = conn.clone();
    let svc = service_fn(move |req| {
        let st = state.clone();
        let busy = conns::Busy::new(&svc_conn);
        async move { Ok::<_, std::convert::Infallible>(http::handle(st, req, peer, Some(busy)).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_head)
        .max_buf_size(limits.max_head.max(conns::HYPER_MIN_BUF))
        .keep_alive(true);
    let serve = async {
        match acceptor {
            None => {
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            }
            Some(acc) => {
                if let Ok(Ok(tls)) = tokio::time::timeout(
                    limits.header_timeout.min(TLS_HANDSHAKE_TIMEOUT),
                    acc.accept(stream),
                )
                .await
                {
                    let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                }
            }
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = conn.killed() => {}
    }
    drop(reg);
}

/// The runtime `ota serve` uses: one worker per core, a bounded blocking pool.
pub fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n.max(1));
    }
    b.enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
}

/// A server on its own runtime thread (for tests, `fleet-sim` and the benchmark); it stops
/// when dropped.
pub struct Background {
    pub info: ServerInfo,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    pub fn start(opts: ServeOptions) -> Result<Background, ServeError> {
        let rt = runtime(None).map_err(ServeError::Runtime)?;
        let server = rt.block_on(Server::bind(opts))?;
        let info = server.info().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(server.run(async {
                let _ = rx.await;
            }));
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        Ok(Background {
            info,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Bytes of response bodies sent so far.
    pub fn bytes_served(&self) -> u64 {
        self.info.stats.bytes.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.info.stats.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
