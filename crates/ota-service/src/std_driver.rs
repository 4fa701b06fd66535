//! The std driver: what the CLI runs. Its [`Transport`] opens `file://` on an [`SdCardFs`] and
//! `http(s)://` with the blocking client of `source/http.rs`; its [`Clock`] is the system clock
//! and sleeps the thread. Every future of the service then completes the first time it is
//! polled, so the blocking [`run_list`] runs the async service with [`block_on`] and no runtime.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use embedded_storage::nor_flash::NorFlash;

use crate::io::{block_on, Body, BoxFuture, Clock, Opened, Request, Transport, Upload};
use crate::service::{run_list_async, Device, Event, RunReport, UpgradeItem};
use crate::source::{self, SdCardFs, Source, SourceError, SourceOptions};

/// The origin of [`StdClock`]: the first time any std clock was read in this process.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// The instant `ms` milliseconds after the [`StdClock`] origin (a deadline in
/// [`SourceOptions::deadline`] for the blocking HTTP client).
pub fn instant_at(ms: u64) -> Instant {
    origin() + Duration::from_millis(ms)
}

/// The system's monotonic clock; `sleep_ms` blocks the thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdClock;

impl Clock for StdClock {
    fn now_ms(&self) -> u64 {
        source::duration_ms(origin().elapsed())
    }
    fn sleep_ms(&self, ms: u64) -> BoxFuture<'_, ()> {
        std::thread::sleep(Duration::from_millis(ms));
        Box::pin(core::future::ready(()))
    }
}

/// `file://` on the SD card `sd`, `http://` and `https://` with the blocking client
/// ([`source::open_request`]): every open and read completes before its future is returned.
#[derive(Clone, Copy, Default)]
pub struct StdTransport<'a> {
    pub sd: Option<&'a dyn SdCardFs>,
}

impl Transport for StdTransport<'_> {
    fn open<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Opened, SourceError>> {
        let r = source::open_request(&req, self.sd).map(|r| Opened {
            body: Box::new(SyncBody(r.source)),
            honoured: r.honoured,
            etag: r.etag,
            last_modified: r.last_modified,
            total_length: r.total_length,
        });
        Box::pin(core::future::ready(r))
    }
    fn send<'a>(&'a self, req: Upload<'a>) -> BoxFuture<'a, Result<u16, SourceError>> {
        Box::pin(core::future::ready(source::send_request(&req)))
    }
}

/// A blocking [`Source`] as an async [`Body`] (each read completes before it returns).
pub struct SyncBody(pub Box<dyn Source>);

impl Body for SyncBody {
    fn content_length(&self) -> Option<u64> {
        self.0.content_length()
    }
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, Result<usize, SourceError>> {
        Box::pin(core::future::ready(self.0.read(buf)))
    }
    fn uri(&self) -> &str {
        self.0.uri()
    }
}

/// What a blocking run needs besides the device: the SD card, source options, the event sink
/// (the service's [`crate::service::Env`] with the std transport and clock).
pub struct Env<'a> {
    pub sd: Option<&'a dyn SdCardFs>,
    pub source: SourceOptions,
    pub events: &'a mut dyn FnMut(Event),
}

/// Run the list in order, blocking ([`run_list_async`] on the std transport and clock).
pub fn run_list<F: NorFlash>(
    items: &mut [Box<dyn UpgradeItem<F> + '_>],
    dev: &mut Device<'_, F>,
    env: &mut Env<'_>,
) -> RunReport {
    let transport = StdTransport { sd: env.sd };
    let mut inner = crate::service::Env {
        transport: &transport,
        clock: &StdClock,
        source: env.source.clone(),
        events: &mut *env.events,
    };
    block_on(run_list_async(items, dev, &mut inner))
}
