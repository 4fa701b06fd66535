//! The network side of the `wifi` build: Wi-Fi station (esp-radio), DHCP and DNS (embassy-net
//! on smoltcp), and [`download`], which runs the HTTP download of `http.rs` over them.

use embassy_executor::Spawner;
use embassy_net::dns::DnsSocket;
use embassy_net::tcp::client::{TcpClient, TcpClientState};
use embassy_net::{Runner, Stack, StackResources};
use embassy_time::{Duration, Timer};
use esp_hal::peripherals::WIFI;
use esp_hal::rng::Rng;
use esp_println::println;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{
    AuthenticationMethodConfig, Config, ControllerConfig, Interface, WifiController, WifiError,
};
use static_cell::StaticCell;

use crate::config;
use crate::http::{self, DownloadError};
use crate::update::BodySink;

/// Sockets the stack holds at once: the DHCP client, one DNS query, one TCP connection.
const SOCKETS: usize = 3;
/// TCP buffers of the one download connection: the receive buffer is the window the device
/// offers, about 3 full-size segments (MSS 1460 on Ethernet-sized frames).
const TCP_RX: usize = 4096;
const TCP_TX: usize = 1024;
/// A connection on which nothing arrives for this long is closed (the deadline of every
/// network wait inside one download); ESP-ADF's app item uses 5 s (`timeout_ms = 5000`,
/// esp-adf `components/ota_service/ota_proc_default.c`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait between two association attempts.
const REJOIN_DELAY: Duration = Duration::from_secs(5);

/// `http::download` of `url` into `sink` over the stack: one TCP connection with the
/// [`IDLE_TIMEOUT`] deadline, names resolved by the stack's DNS client.
pub async fn download<S: BodySink>(
    stack: Stack<'_>,
    url: &str,
    sink: &mut S,
) -> Result<u64, DownloadError<S::Error>> {
    let state = TcpClientState::<1, TCP_TX, TCP_RX>::new();
    let mut tcp = TcpClient::new(stack, &state);
    tcp.set_timeout(Some(IDLE_TIMEOUT));
    let dns = DnsSocket::new(stack);
    http::download(&tcp, &dns, url, sink).await
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
