//! The network side of the `wifi` build: Wi-Fi station (esp-radio), DHCP and DNS (embassy-net
//! on smoltcp), and [`download`], the one function that fetches the update: an HTTP/1.1 GET
//! (reqwless) whose body it hands, chunk by chunk, to a [`BodySink`]. Replacing the HTTP
//! client means replacing `download` only.

use core::fmt;

use embassy_executor::Spawner;
use embassy_net::dns::DnsSocket;
use embassy_net::tcp::client::{TcpClient, TcpClientState};
use embassy_net::{Runner, Stack, StackResources};
use embassy_time::{Duration, Timer};
use embedded_io_async::Read;
use esp_hal::peripherals::WIFI;
use esp_hal::rng::Rng;
use esp_println::println;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{
    AuthenticationMethodConfig, Config, ControllerConfig, Interface, WifiController, WifiError,
};
use reqwless::client::HttpClient;
use reqwless::request::Method;
use static_cell::StaticCell;

use crate::config;
use crate::update::{BodySink, Flow};

/// Sockets the stack holds at once: the DHCP client, one DNS query, one TCP connection.
const SOCKETS: usize = 3;
/// TCP buffers of the one download connection: the receive buffer is the window the device
/// offers, about 3 full-size segments (MSS 1460 on Ethernet-sized frames).
const TCP_RX: usize = 4096;
const TCP_TX: usize = 1024;
/// The response head (status line and headers) must fit here; ESP-IDF's HTTP client reads
/// its head through a 512-byte buffer by default (`DEFAULT_HTTP_BUF_SIZE`, esp-idf
/// `components/esp_http_client/esp_http_client.c`); 2 KiB leaves room for long headers.
const HEAD_MAX: usize = 2048;
/// Bytes of body read per step and handed to the sink (a multiple of esp-storage's 4-byte
/// word, like the data-partition path's chunk).
const CHUNK: usize = 1024;
/// A connection on which nothing arrives for this long is closed (the deadline of every
/// network wait inside one download); ESP-ADF's app item uses 5 s (`timeout_ms = 5000`,
/// esp-adf `components/ota_service/ota_proc_default.c`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest image accepted: more than any app slot can hold (4 MB flash); the slot's own
/// size is checked by `OtaUpdater::begin`/`write`.
const BODY_MAX: usize = 4 << 20;
/// Wait between two association attempts.
const REJOIN_DELAY: Duration = Duration::from_secs(5);

/// Why a download failed.
#[derive(Debug)]
pub enum DownloadError<E> {
    /// Connecting, sending the request or reading the response failed (DNS, TCP, a malformed
    /// or oversized head, the connection closed early).
    Http(reqwless::Error),
    /// The server answered with another status than 200.
    Status(u16),
    /// `Content-Length` larger than [`BODY_MAX`].
    TooLarge(usize),
    /// The sink (the installer) refused the body.
    Sink(E),
}

impl<E: fmt::Display> fmt::Display for DownloadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadError::Http(e) => write!(f, "HTTP: {e:?}"),
            DownloadError::Status(s) => write!(f, "server answered {s}, not 200"),
            DownloadError::TooLarge(n) => write!(
                f,
                "Content-Length {n} is larger than the {BODY_MAX}-byte limit"
            ),
            DownloadError::Sink(e) => write!(f, "{e}"),
        }
    }
}

impl<E> From<reqwless::Error> for DownloadError<E> {
    fn from(e: reqwless::Error) -> Self {
        DownloadError::Http(e)
    }
}

/// `GET url` and hand the body to `sink`: `begin` with its `Content-Length`, then chunks of
/// at most [`CHUNK`] bytes until the end of the body or [`Flow::NotNewer`]. Every read has
/// the [`IDLE_TIMEOUT`] deadline; the caller puts a deadline on the whole. Returns the body
/// bytes delivered.
pub async fn download<S: BodySink>(
    stack: Stack<'_>,
    url: &str,
    sink: &mut S,
) -> Result<u64, DownloadError<S::Error>> {
    let state = TcpClientState::<1, TCP_TX, TCP_RX>::new();
    let mut tcp = TcpClient::new(stack, &state);
    tcp.set_timeout(Some(IDLE_TIMEOUT));
    let dns = DnsSocket::new(stack);
    let mut http = HttpClient::new(&tcp, &dns);
    let mut request = http.request(Method::GET, url).await?;
    let mut head = [0u8; HEAD_MAX];
    let response = request.send(&mut head).await?;
    if response.status.0 != 200 {
        return Err(DownloadError::Status(response.status.0));
    }
    let len = match response.content_length {
        Some(n) if n > BODY_MAX => return Err(DownloadError::TooLarge(n)),
        // BODY_MAX fits in u32.
        Some(n) => Some(n as u32),
        None => None,
    };
    sink.begin(len).map_err(DownloadError::Sink)?;
    let mut body = response.body().reader();
    let mut buf = [0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = body.read(&mut buf).await?;
        if n == 0 {
            return Ok(bytes);
        }
        bytes += n as u64;
        if sink.chunk(&buf[..n]).map_err(DownloadError::Sink)? == Flow::NotNewer {
            return Ok(bytes);
        }
    }
}

/// Bring up Wi-Fi in station mode for [`config::WIFI_SSID`] and the IP stack with DHCP; the
/// association (and re-association) and the stack run as tasks. The stack is returned at
/// once: wait for `stack.wait_config_up()` (with a deadline) before [`download`].
pub fn start(spawner: Spawner, wifi: WIFI<'static>) -> Result<Stack<'static>, WifiError> {
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let auth = if config::WIFI_PASSWORD.is_empty() {
        AuthenticationMethodConfig::Open
    } else {
        // The length was checked at build time (config.rs).
        AuthenticationMethodConfig::Wpa2Personal(
            config::WIFI_PASSWORD
                .try_into()
                .map_err(|_| WifiError::InvalidArguments)?,
        )
    };
    let station = StationConfig::default()
        .with_ssid(
            config::WIFI_SSID
                .try_into()
                .map_err(|_| WifiError::InvalidArguments)?,
        )
        .with_authentication(auth);
    let controller = WifiController::new(
        wifi,
        ControllerConfig::default().with_initial_config(Config::Station(station)),
    )?;
    let interface = Interface::station();
    let rng = Rng::new();
    let seed = (u64::from(rng.random()) << 32) | u64::from(rng.random());
    let (stack, runner) = embassy_net::new(
        interface,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    match (associate(controller), run_stack(runner)) {
        (Ok(a), Ok(r)) => {
            spawner.spawn(a);
            spawner.spawn(r);
        }
        _ => println!("wifi: the network tasks could not be spawned"),
    }
    Ok(stack)
}

/// Join the network, and join it again whenever the link drops.
#[embassy_executor::task]
async fn associate(mut controller: WifiController<'static>) {
    loop {
        match controller.connect_async().await {
            Ok(_) => {
                println!("wifi: associated with {}", config::WIFI_SSID);
                let _ = controller.wait_for_disconnect_async().await;
                println!("wifi: disconnected");
            }
            Err(e) => println!("wifi: association with {} failed: {e:?}", config::WIFI_SSID),
        }
        Timer::after(REJOIN_DELAY).await;
    }
}

/// The IP stack's own task (frames in and out, DHCP, timers).
#[embassy_executor::task]
async fn run_stack(mut runner: Runner<'static, Interface>) {
    runner.run().await
}
