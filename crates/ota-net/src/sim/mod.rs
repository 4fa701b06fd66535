//! embassy-net on a PC, without root: the device's stack is the real embassy-net (smoltcp),
//! its Ethernet frames cross a seeded [`LinkSpec`] model to a user-space gateway on smoltcp
//! that relays TCP connections to 127.0.0.1, as QEMU's user networking does.
//!
//! ```text
//!  device: embassy-net Stack ── SimDriver ── up pipe ──▶ gateway (smoltcp, own thread)
//!          10.0.2.15/24       ◀── down pipe ──┘          10.0.2.2 ─▶ 127.0.0.1:<same port>
//!                                                        10.0.2.3: DNS, host.ota ─▶ 10.0.2.2
//! ```
//!
//! A [`Device`] owns the stack and its runner; [`Device::block_on`] runs a future (e.g. an
//! HTTP download through [`Device::connector`]) with the runner beside it, on the calling
//! thread, with embassy-time's std driver as the clock.

pub mod driver;
pub mod gateway;
pub mod link;

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, WaitTimeoutResult};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use embassy_net::{Config, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};

pub use driver::SimDriver;
pub use gateway::{GatewayStats, DEVICE, DNS_SERVER, GATEWAY, HOST_NAME, PREFIX_LEN};
pub use link::{LinkSpec, LinkSpecError, PipeStats};

use crate::embassy::StackConnector;

/// Sockets in the device's stack (TCP connections and the DNS socket).
pub const SOCKETS: usize = 8;
/// The device's MAC: QEMU's default guest address (52:54:00:12:34:56).
pub const DEVICE_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Salts that give the two directions different draws from one seed.
const UP_SALT: u64 = 0x7570; // "up"
const DOWN_SALT: u64 = 0x646f_776e; // "down"

pub(crate) struct State {
    /// Device -> gateway.
    pub(crate) up: link::Pipe,
    /// Gateway -> device.
    pub(crate) down: link::Pipe,
    /// The stack's waker, woken when a frame arrives for it.
    pub(crate) waker: Option<Waker>,
    pub(crate) stop: bool,
    pub(crate) gateway: GatewayStats,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not turn every later call into one.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wait<'a>(
        &self,
        g: MutexGuard<'a, State>,
        d: Duration,
    ) -> (MutexGuard<'a, State>, WaitTimeoutResult) {
        self.cond
            .wait_timeout(g, d)
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A frame from the device enters the link.
    pub(crate) fn send_up(&self, frame: Vec<u8>) {
        self.lock().up.push(Instant::now(), frame);
        self.cond.notify_one();
    }

    /// A frame for the device, or `None` (the waker is kept and woken when one arrives).
    pub(crate) fn recv_down(&self, now: Instant, waker: &Waker) -> Option<Vec<u8>> {
        let mut st = self.lock();
        if let Some(f) = st.down.pop(now) {
            return Some(f);
        }
        match &st.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => st.waker = Some(waker.clone()),
        }
        None
    }
}

/// What crossed the link so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub up: PipeStats,
    pub down: PipeStats,
    pub gateway: GatewayStats,
}

/// A device on the simulated network: an embassy-net stack at [`DEVICE`] whose gateway
/// ([`GATEWAY`]) leads to the host's 127.0.0.1.
///
/// The stack's socket table (`StackResources`, a few KiB) is leaked so that the stack
/// can be `'static` and live in this struct; a process makes few devices.
pub struct Device {
    stack: Stack<'static>,
    runner: Runner<'static, SimDriver>,
    shared: Arc<Shared>,
    gateway: Option<JoinHandle<()>>,
    pub spec: LinkSpec,
}

/// How the device gets its address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Addressing {
    /// 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3, set at once.
    #[default]
    Static,
    /// From the gateway's DHCP server (the same address), as on a Wi-Fi network; wait for it
    /// with [`Device::wait_config_up`].
    Dhcp,
}

impl Device {
    /// A device with a static address (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3) behind a
    /// link shaped by `spec`.
    pub fn new(spec: LinkSpec) -> std::io::Result<Device> {
        Self::with_addressing(spec, Addressing::Static)
    }

    /// A device whose address is static or comes from the gateway's DHCP server.
    pub fn with_addressing(spec: LinkSpec, addressing: Addressing) -> std::io::Result<Device> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                up: link::Pipe::new(spec, UP_SALT),
                down: link::Pipe::new(spec, DOWN_SALT),
                waker: None,
                stop: false,
                gateway: GatewayStats::default(),
            }),
            cond: Condvar::new(),
        });
        let gw = gateway::Gateway::new(shared.clone());
        let gateway = thread::Builder::new()
            .name("ota-net-gateway".into())
            .spawn(move || gw.run())?;
        let mut dns_servers = heapless::Vec::new();
        let _ = dns_servers.push(DNS_SERVER);
        let config = match addressing {
            Addressing::Static => Config::ipv4_static(StaticConfigV4 {
                address: Ipv4Cidr::new(DEVICE, gateway::PREFIX_LEN),
                gateway: Some(GATEWAY),
                dns_servers,
            }),
            Addressing::Dhcp => Config::dhcpv4(Default::default()),
        };
        let driver = SimDriver {
            shared: shared.clone(),
            mac: DEVICE_MAC,
        };
        let resources: &'static mut StackResources<SOCKETS> =
            Box::leak(Box::new(StackResources::new()));
        let (stack, runner) = embassy_net::new(driver, config, resources, spec.seed);
        Ok(Device {
            stack,
            runner,
            shared,
            gateway: Some(gateway),
            spec,
        })
    }

    pub fn stack(&self) -> Stack<'static> {
        self.stack
    }

    /// Runs the stack until it has an IPv4 address; `None` if that takes longer than
    /// `timeout`, else the address and prefix length it got.
    pub fn wait_config_up(&mut self, timeout: Duration) -> Option<(std::net::Ipv4Addr, u8)> {
        let stack = self.stack;
        let t = embassy_time::Duration::from_micros(timeout.as_micros().try_into().ok()?);
        self.block_on(embassy_time::with_timeout(t, stack.wait_config_up()))
            .ok()?;
        let c = stack.config_v4()?;
        Some((c.address.address(), c.address.prefix_len()))
    }

    /// A connector for the HTTP client over this device's stack.
    pub fn connector(&self) -> StackConnector<'static> {
        StackConnector::new(self.stack)
    }

    pub fn stats(&self) -> LinkStats {
        let st = self.shared.lock();
        LinkStats {
            up: st.up.stats,
            down: st.down.stats,
            gateway: st.gateway,
        }
    }

    /// Runs `fut` to completion on this thread with the stack's runner beside it.
    pub fn block_on<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        let mut run = pin!(self.runner.run());
        block_on(std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
            let _ = run.as_mut().poll(cx);
            // The runner may have made progress the future waits for.
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
            Poll::Pending
        }))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cond.notify_all();
        if let Some(t) = self.gateway.take() {
            let _ = t.join();
        }
    }
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread, sleeping until it is woken.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}
