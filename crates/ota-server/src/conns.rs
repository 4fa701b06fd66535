//! Connection limits of `ota serve`: how many connections are served at once, how long one may
//! take to send its request head, how long a response may make no progress, and what happens
//! at the cap.
//!
//! Every accepted connection is registered here. A connection is *busy* while a request is
//! being answered (from the parsed head until the response body is done) and *idle* otherwise
//! (connected but no head yet, a head arriving slowly, or between keep-alive requests). At the
//! cap, the connections idle the longest are closed to make room (a few at a time, see
//! [`EVICT_BATCH_DIVISOR`]; one that has already been answered only after [`EVICT_MIN_IDLE`]
//! with nothing left to write), so idle or half-sent connections can never lock devices out. When every connection is busy, no more are accepted until one ends: the new
//! ones wait in the kernel's listen backlog (bounded: `somaxconn`), and cost nothing here.
//! Memory freed by a burst of closed connections is handed back to the system (`malloc_trim`
//! on glibc, whose arenas otherwise keep it).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Default cap on connections served at once. An idle connection costs about 20 KiB, so the
/// cap bounds idle connections to about 20 MiB.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default time a client has to send a request head, on a new connection and between
/// keep-alive requests (slowloris guard).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit of a request head (request line and headers), as the README promises.
pub const DEFAULT_MAX_HEAD: usize = 64 * 1024;
/// Default time a response may make no progress (the client reads nothing) before the
/// connection is closed.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Smallest head limit hyper's connection buffer accepts (`MINIMUM_MAX_BUFFER_SIZE` in hyper's
/// src/proto/h1/io.rs); the head limit itself can be smaller.
pub const HYPER_MIN_BUF: usize = 8192;
/// An idle connection is closed to make room only after it has been idle this long (so bytes
/// hyper is about to write after a response are never cut).
pub const EVICT_MIN_IDLE: Duration = Duration::from_millis(250);
/// At the cap, up to 1/`EVICT_BATCH_DIVISOR` of the cap (at least one) idle connections are
/// closed at once, so a flood of new connections is not accepted one close at a time.
pub const EVICT_BATCH_DIVISOR: usize = 8;
/// How often the registry checks stalled responses and returns freed memory.
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often the accept loop looks again for an idle connection to close when at the cap.
pub const AT_CAP_POLL: Duration = Duration::from_millis(25);
/// Memory is handed back after at least this many connections closed since the last time.
pub const TRIM_AFTER_CLOSED: usize = 64;

/// The limits, set from `ota serve`'s flags.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_head: usize,
    pub send_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_head: DEFAULT_MAX_HEAD,
            send_timeout: DEFAULT_SEND_TIMEOUT,
        }
    }
}

/// Counters about connections (see [`crate::Stats`]).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections being served now.
    pub open: AtomicUsize,
    /// The most served at once since the start.
    pub peak: AtomicUsize,
    /// Connections accepted since the start.
    pub accepted: AtomicU64,
    /// Idle connections closed to make room for new ones.
    pub evicted: AtomicU64,
    /// Connections closed because a response made no progress for the send timeout.
    pub stalled: AtomicU64,
}

/// One registered connection.
pub struct Conn {
    busy: AtomicU32,
    /// Whether a request was ever parsed on this connection.
    served: AtomicBool,
    /// Last write progress, response end or connect, in ms since the registry's epoch.
    last_ms: AtomicU64,
    /// When writes started to wait for the client (ms since the epoch, plus 1); 0 = not waiting.
    blocked_since: AtomicU64,
    killed: AtomicBool,
    /// Closed by [`Registry::make_room`] (counted in its `dying`).
    evicting: AtomicBool,
    kill: Notify,
    epoch: Instant,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Resolves when the registry closes this connection.
    pub async fn killed(&self) {
        self.kill.notified().await
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.kill.notify_one();
    }
}

/// A request being answered on a connection; dropped when its response body is done.
pub struct Busy(Arc<Conn>);

impl Busy {
    pub fn new(c: &Arc<Conn>) -> Busy {
        c.busy.fetch_add(1, Ordering::Relaxed);
        c.served.store(true, Ordering::Relaxed);
        Busy(c.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All connections being served.
pub struct Registry {
    pub limits: ConnLimits,
    pub stats: Arc<ConnStats>,
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    ended: Notify,
    /// Connections being closed by [`Registry::make_room`] that have not ended yet.
    dying: AtomicUsize,
    /// The most open since memory was last handed back.
    high_water: AtomicUsize,
}

/// Deregisters its connection when the connection's task ends.
pub struct Registration {
    reg: Arc<Registry>,
    id: u64,
    pub conn: Arc<Conn>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let removed = self
            .reg
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        if removed.is_some() {
            self.reg.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
        if self.conn.evicting.load(Ordering::Relaxed) {
            self.reg.dying.fetch_sub(1, Ordering::Relaxed);
        }
        self.reg.ended.notify_waiters();
    }
}

impl Registry {
    pub fn new(limits: ConnLimits, stats: Arc<ConnStats>) -> Registry {
        Registry {
            limits: ConnLimits {
                max_connections: limits.max_connections.max(1),
                ..limits
            },
            stats,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            ended: Notify::new(),
            dying: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn open(&self) -> usize {
        self.stats.open.load(Ordering::Relaxed)
    }

    /// Wait until one more connection may be served: at the cap, close the longest-idle
    /// connection and wait for it to end; with none idle, wait for any to end.
    pub async fn make_room(&self) {
        loop {
            let ended = self.ended.notified();
            if self.open() < self.limits.max_connections {
                return;
            }
            if self.dying.load(Ordering::Relaxed) == 0 {
                self.evict((self.limits.max_connections / EVICT_BATCH_DIVISOR).max(1));
            }
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep(AT_CAP_POLL) => {}
            }
        }
    }

    /// Close the `n` connections idle the longest: ones that never completed a request head,
    /// or whose last response ended at least [`EVICT_MIN_IDLE`] ago with nothing left to write.
    fn evict(&self, n: usize) -> usize {
        let now = self.now_ms();
        let min_idle = EVICT_MIN_IDLE.as_millis() as u64;
        let mut idle: Vec<(u64, Arc<Conn>)> = self
            .lock()
            .values()
            .filter(|c| {
                c.busy.load(Ordering::Relaxed) == 0
                    && c.blocked_since.load(Ordering::Relaxed) == 0
                    && !c.killed.load(Ordering::Relaxed)
                    && (!c.served.load(Ordering::Relaxed)
                        || now.saturating_sub(c.last_ms.load(Ordering::Relaxed)) >= min_idle)
            })
            .map(|c| (c.last_ms.load(Ordering::Relaxed), c.clone()))
            .collect();
        idle.sort_unstable_by_key(|(t, _)| *t);
        idle.truncate(n);
        for (_, c) in &idle {
            self.dying.fetch_add(1, Ordering::Relaxed);
            c.evicting.store(true, Ordering::Relaxed);
            c.kill();
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
        idle.len()
    }

    /// Register an accepted connection (call after [`Registry::make_room`]).
    pub fn register(self: &Arc<Self>) -> Registration {
        let conn = Arc::new(Conn {
            busy: AtomicU32::new(0),
            served: AtomicBool::new(false),
            last_ms: AtomicU64::new(self.now_ms()),
            blocked_since: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            evicting: AtomicBool::new(false),
            kill: Notify::new(),
            epoch: self.epoch,
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, conn.clone());
        let open = self.stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.peak.fetch_max(open, Ordering::Relaxed);
        self.high_water.fetch_max(open, Ordering::Relaxed);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Registration {
            reg: self.clone(),
            id,
            conn,
        }
    }

    /// Close responses that made no progress for the send timeout, and hand memory back after
    /// a burst of connections closed. Runs every [`SWEEP_EVERY`] until the server stops.
    pub async fn sweep_forever(self: Arc<Self>) {
        let stall = self.limits.send_timeout.as_millis() as u64;
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let now = self.now_ms();
            for c in self.lock().values() {
                let since = c.blocked_since.load(Ordering::Relaxed);
                let stalled = since != 0 && now.saturating_sub(since - 1) >= stall;
                if stalled && !c.killed.load(Ordering::Relaxed) {
                    c.kill();
                    self.stats.stalled.fetch_add(1, Ordering::Relaxed);
                }
            }
            let open = self.open();
            let high = self.high_water.load(Ordering::Relaxed);
            if high.saturating_sub(open) >= TRIM_AFTER_CLOSED {
                self.high_water.store(open, Ordering::Relaxed);
                let _ = tokio::task::spawn_blocking(release_free_memory).await;
            }
        }
    }
}

/// Hand memory the allocator keeps after many connections closed back to the system.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A connection's socket, noting write progress and writes that wait for the client.
pub struct TrackedIo<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, conn: Arc<Conn>) -> TrackedIo<T> {
        TrackedIo { inner, conn }
    }

    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.conn.blocked_since.store(0, Ordering::Relaxed);
                self.conn.touch();
            }
            Poll::Pending if self.conn.blocked_since.load(Ordering::Relaxed) == 0 => {
                self.conn
                    .blocked_since
                    .store(self.conn.now_ms() + 1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
