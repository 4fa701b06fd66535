//! `ota device run --stack embassy [--link SPEC]`: the upgrade list runs on the service's
//! embassy driver (`ota_service::embassy_driver`, ota-net's async HTTP client) over embassy-net
//! on the PC (`ota_net::sim::Device`): the device's TCP/IP is the real embassy-net stack, its
//! frames cross a seeded link model to a user-space gateway at 10.0.2.2 that relays them to the
//! host's 127.0.0.1 (as QEMU's user networking does). `file://` items still read the SD card.

use std::cell::Cell;
use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use embedded_storage::nor_flash::NorFlash;
use ota_net::http::{Client, Connect, ConnectError};
use ota_net::sim::{Device as NetDevice, LinkSpec, GATEWAY, HOST_NAME};
use ota_net::tls::{SystemClock, TlsConnector};
use ota_service::embassy_driver::{run_with, EmbassyClock, EmbassyTransport};
use ota_service::io::{BoxFuture, Opened, Request, Transport, Upload};
use ota_service::source::{SdCardFs, SourceError, SourceOptions};
use ota_service::std_driver::StdTransport;
use ota_service::{Event, Outcome};

use crate::logger;

/// The log tag of the embassy stack's lines.
const TAG: &str = "STACK";

/// Which network stack and driver the device's OTA service runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum StackKind {
    /// The std driver: the host's sockets, blocking http(s) client (rustls).
    #[default]
    Std,
    /// The embassy driver: embassy-net on the PC behind a link model and a gateway; http, and
    /// https with a pinned CA.
    Embassy,
}

#[derive(Args, Clone, Debug)]
pub struct StackArgs {
    /// Network stack of the device: `std` (the host's sockets; http and https) or `embassy`
    /// (the service's embassy driver on embassy-net, as on the chip, behind a simulated link
    /// and a gateway at 10.0.2.2 that relays to this host's 127.0.0.1; http, and https only
    /// with a pinned CA (`cert`) and a host name; URIs naming 127.0.0.1 or localhost are sent
    /// to the gateway; `host.ota` resolves to it).
    #[arg(long, value_enum, default_value_t = StackKind::Std)]
    pub stack: StackKind,
    /// The link model of `--stack embassy`: comma-separated `rate=56kB/s` (also B/s, kbit/s,
    /// Mbit/s...), `rtt=60ms`, `loss=1%`, `reorder=1%`, `seed=N`, `queue=256KiB`. Default: no
    /// shaping.
    #[arg(long, value_name = "SPEC", value_parser = parse_link)]
    pub link: Option<LinkSpec>,
}

impl StackArgs {
    /// A usage error (exit status 2) when `--link` comes without `--stack embassy`.
    pub fn check(&self) {
        if self.link.is_some() && self.stack != StackKind::Embassy {
            clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                "--link shapes the simulated network of `--stack embassy`; it cannot be used with \
                 --stack std\n",
            )
            .exit();
        }
    }
}

fn parse_link(s: &str) -> std::result::Result<LinkSpec, String> {
    LinkSpec::parse(s).map_err(|e| e.to_string())
}

/// `http://127.0.0.1:PORT/...` and `http://localhost:PORT/...` as the device reaches them: the
/// gateway's address. `None` when the URI names another host.
pub fn via_gateway(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("http://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    if !is_this_host(host) {
        return None;
    }
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("http://{GATEWAY}{port}{}", &rest[end..]))
}

/// Whether `host` is this host as a URI names it (127.0.0.1 or localhost).
fn is_this_host(host: &str) -> bool {
    host == "127.0.0.1" || host.eq_ignore_ascii_case("localhost")
}

/// The device's connector: `localhost` / `127.0.0.1` are reached through the gateway (the
/// TCP connection goes to [`GATEWAY`]), while an `https://` URL keeps its host name for the
/// certificate check.
struct ViaGateway<C>(C);

impl<C: Connect> Connect for ViaGateway<C> {
    type Conn<'a>
        = C::Conn<'a>
    where
        Self: 'a;

    async fn connect(&mut self, host: &str, port: u16) -> Result<C::Conn<'_>, ConnectError> {
        let gateway = GATEWAY.to_string();
        let host = if is_this_host(host) { &gateway } else { host };
        self.0.connect(host, port).await
    }
}

/// The device's transport on the embassy stack: `file://` on the SD card (the std driver's),
/// `http://` and `https://` (TLS 1.3 with the item's pinned CA) through embassy-net.
struct DeviceTransport<'a> {
    sd: StdTransport<'a>,
    net: EmbassyTransport,
    /// Whether the rewrite of 127.0.0.1 / localhost was said in the log.
    said: Cell<bool>,
}

impl Transport for DeviceTransport<'_> {
    fn open<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Opened, SourceError>> {
        if req.uri.starts_with("file://") || req.uri.starts_with('/') {
            return self.sd.open(req);
        }
        if req.uri.starts_with("https://") {
            if !self.said.replace(true)
                && via_gateway(&req.uri.replacen("https", "http", 1)).is_some()
            {
                logger::info(
                    TAG,
                    &format!(
                        "{} names this host: the device connects to the gateway {GATEWAY} and \
                         checks the certificate against the URI's host name",
                        req.uri
                    ),
                );
            }
            return self.net.open(req);
        }
        match via_gateway(req.uri) {
            Some(uri) => {
                if !self.said.replace(true) {
                    logger::info(
                        TAG,
                        &format!(
                            "{} names this host: the device reaches it through the gateway as {}",
                            req.uri, uri
                        ),
                    );
                }
                Box::pin(async move { self.net.open(Request { uri: &uri, ..req }).await })
            }
            None => self.net.open(req),
        }
    }

    /// A DDI item's `PUT`/`POST`: through embassy-net, to this host through the gateway as
    /// `open` does.
    fn send<'a>(&'a self, req: Upload<'a>) -> BoxFuture<'a, Result<u16, SourceError>> {
        match via_gateway(req.uri) {
            Some(uri) => Box::pin(async move { self.net.send(Upload { uri: &uri, ..req }).await }),
            None => self.net.send(req),
        }
    }
}

/// What the rate lines need of one item's download.
struct Rate {
    id: usize,
    started: Instant,
    /// Where the download began (a resumed one: its first byte).
    base: u64,
    bytes: u64,
    /// The next quarter of the total to report.
    next_quarter: u64,
}

fn kb_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / secs / 1000.0
    } else {
        0.0
    }
}

impl Rate {
    fn new(id: usize) -> Rate {
        Rate {
            id,
            started: Instant::now(),
            base: 0,
            bytes: 0,
            next_quarter: 1,
        }
    }

    /// The line of one item's progress: bytes, time since the item started, rate.
    fn line(&self, what: &str) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let fetched = self.bytes.saturating_sub(self.base);
        format!(
            "item {}: {what} in {secs:.2} s, {:.1} kB/s ({fetched} bytes fetched)",
            self.id,
            kb_per_s(fetched, secs)
        )
    }

    /// A progress line with the rate at each quarter of the total (every 64 KiB when the
    /// total is unknown).
    fn progress(&mut self, id: usize, bytes: u64, total: Option<u64>) {
        if self.id != id {
            *self = Rate::new(id);
        }
        self.bytes = bytes;
        let step = total.map_or(PROGRESS_STEP, |t| t.div_ceil(4).max(1));
        if bytes >= step.saturating_mul(self.next_quarter) {
            self.next_quarter = bytes / step + 1;
            let of = total.map(|t| format!("/{t}")).unwrap_or_default();
            logger::info(TAG, &self.line(&format!("{bytes}{of} bytes")));
        }
    }
}

/// Bytes between two rate lines when the total is unknown.
const PROGRESS_STEP: u64 = 64 * 1024;

/// The link spec as `--link` takes it.
pub fn spec_text(l: &LinkSpec) -> String {
    if l.is_unshaped() {
        return "no shaping".to_string();
    }
    let mut parts = Vec::new();
    if let Some(r) = l.rate {
        parts.push(format!("rate={r}B/s"));
    }
    parts.push(format!("rtt={}ms", l.rtt.as_millis()));
    parts.push(format!("loss={}%", l.loss * 100.0));
    if l.reorder > 0.0 {
        parts.push(format!("reorder={}%", l.reorder * 100.0));
    }
    parts.push(format!("seed={}", l.seed));
    parts.join(",")
}

/// Runs `f` with a [`ota_sim::Service`] that runs the list on the embassy driver over a new
/// simulated device network shaped by `link`.
pub fn with_embassy_service<F: NorFlash, T>(
    link: LinkSpec,
    sd: Option<&dyn SdCardFs>,
    opts: SourceOptions,
    f: impl FnOnce(&mut ota_sim::Service<'_, F>) -> T,
) -> Result<T> {
    let mut net = NetDevice::new(link)
        .map_err(|e| anyhow!("cannot start the simulated network (--stack embassy): {e}"))?;
    let shaping = spec_text(&link);
    logger::info(
        TAG,
        &format!(
            "embassy-net device {} behind gateway {} ({HOST_NAME} resolves to it), link: {shaping}",
            ota_net::sim::DEVICE,
            GATEWAY
        ),
    );
    // https: TLS 1.3 over the gateway connector, the handshake randoms from the host's
    // getrandom, certificate dates checked against the host's clock.
    let tls: TlsConnector<_, _, SystemClock> =
        TlsConnector::new(ViaGateway(net.connector()), rand_core::OsRng);
    let mut client: Client<_> = Client::new(tls);
    let mut service = |items: &mut [Box<dyn ota_service::UpgradeItem<F> + '_>],
                       device: &mut ota_service::Device<'_, F>,
                       events: &mut dyn FnMut(Event)| {
        let mut rate = Rate::new(usize::MAX);
        let mut on_event = |ev: Event| {
            let done = match &ev {
                Event::Start { id, .. } => {
                    rate = Rate::new(*id);
                    None
                }
                Event::Resume { id, at, .. } if *id == rate.id => {
                    rate.base = *at;
                    None
                }
                Event::Progress { id, bytes, total } => {
                    rate.progress(*id, *bytes, *total);
                    None
                }
                Event::Result { id, outcome } if *id == rate.id => {
                    Some(matches!(outcome, Outcome::Success))
                }
                _ => None,
            };
            events(ev);
            if let Some(ok) = done {
                let what = if ok { "done" } else { "stopped" };
                logger::info(TAG, &rate.line(&format!("{what} at {} bytes", rate.bytes)));
                rate = Rate::new(usize::MAX);
            }
        };
        let opts = opts.clone();
        net.block_on(run_with(&mut client, async |t| {
            let transport = DeviceTransport {
                sd: StdTransport { sd },
                net: t,
                said: Cell::new(false),
            };
            let mut env = ota_service::AsyncEnv {
                transport: &transport,
                clock: &EmbassyClock,
                source: opts,
                events: &mut on_event,
            };
            ota_service::run_list_async(items, device, &mut env).await
        }))
    };
    let out = f(&mut service);
    let st = net.stats();
    logger::info(
        TAG,
        &format!(
            "link: {} frames down ({} lost), {} up ({} lost), {} connection(s) through the gateway",
            st.down.frames_in, st.down.lost, st.up.frames_in, st.up.lost, st.gateway.connections
        ),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_uris_go_through_the_gateway_and_others_do_not() {
        assert_eq!(
            via_gateway("http://127.0.0.1:8070/fw.bin").as_deref(),
            Some("http://10.0.2.2:8070/fw.bin")
        );
        assert_eq!(
            via_gateway("http://LOCALHOST/x?y").as_deref(),
            Some("http://10.0.2.2/x?y")
        );
        assert_eq!(via_gateway("http://host.ota:80/x"), None);
        assert_eq!(via_gateway("http://127.0.0.10/x"), None);
        assert_eq!(via_gateway("https://127.0.0.1/x"), None);
    }
}
