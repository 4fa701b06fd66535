//! The network side of the `wifi` build: Wi-Fi station (esp-radio), DHCP and DNS (embassy-net
//! on smoltcp). The upgrade list's HTTP goes over the returned stack through ota-net's
//! `StackConnector` and ota-service's embassy driver (`main.rs`).

use embassy_executor::Spawner;
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

/// Sockets the stack holds at once: the DHCP client, one DNS query, one TCP connection.
const SOCKETS: usize = 3;
/// Wait between two association attempts.
const REJOIN_DELAY: Duration = Duration::from_secs(5);

/// Bring up Wi-Fi in station mode for [`config::WIFI_SSID`] and the IP stack with DHCP; the
/// association (and re-association) and the stack run as tasks. The stack is returned at
/// once: wait for `stack.wait_config_up()` (with a deadline) before running the list.
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
