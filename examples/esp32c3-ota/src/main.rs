//! ESP32-C3 firmware that updates itself: ESP-ADF's OTA upgrade list run by `ota-service`
//! over Wi-Fi, or an image from a data partition installed with `ota-core`.
//!
//! On every boot: read the partition table through the flash driver, confirm this app if it is
//! on trial (rollback), then update. What updates is chosen at build time:
//! - feature `wifi` (default): join the Wi-Fi network compiled in ([`config`]), get an address
//!   by DHCP and run ESP-ADF's example upgrade list ([`list`]: the tone bin into `flash_tone`,
//!   then the app into the next OTA slot when its version is newer) with `ota-service`'s
//!   `run_list_async` on its embassy driver (ota-net's HTTP client on the embassy-net stack,
//!   embassy-time's clock): the very service code `ota device run` runs on a PC. Restart when
//!   the app item installed an image;
//! - without it: the image placed in the `ota_image` data partition ([`update::on_boot`]).
//!
//! The update logic is in [`update`] and [`list`] (no hardware in them; the root crate's tests
//! run both on a PC); this file is the chip glue: esp-hal start-up, the heap, the flash
//! driver, the console, the network tasks and the reset.
#![no_std]
#![no_main]

use esp_backtrace as _;
use esp_println::println;
use esp_storage::FlashStorage;

#[cfg(feature = "wifi")]
extern crate alloc;

#[cfg(feature = "wifi")]
mod config;
#[cfg(feature = "wifi")]
mod list;
#[cfg(feature = "wifi")]
mod net;
// The build without `wifi` uses `on_boot`; the `wifi` build only `confirm` and the table
// buffer (its image comes through the service's app item).
#[allow(dead_code)]
mod update;

// The app descriptor (`esp_app_desc_t`) the 2nd-stage bootloader and OTA read at offset 0x20 of
// the image: project name and version come from this crate's Cargo.toml.
esp_bootloader_esp_idf::esp_app_desc!();

fn banner() {
    println!(
        "{} {}: ota-core update check",
        ESP_APP_DESC.project_name(),
        ESP_APP_DESC.version()
    );
}

fn print_running(me: &ota_core::updater::RunningApp, confirmed: bool) {
    let state = me.state.map(|s| s.name()).unwrap_or("no otadata entry");
    println!(
        "running from {} at 0x{:x} ({})",
        me.partition.label.as_str(),
        me.partition.offset,
        state
    );
    if confirmed {
        println!("first boot after an update: app marked valid, rollback cancelled");
    }
}

fn idle() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(not(feature = "wifi"))]
#[esp_hal::main]
fn main() -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default());
    let mut flash = FlashStorage::new(peripherals.FLASH);
    let mut table_buf = update::Aligned([0u8; update::TABLE_BUF_LEN]);

    banner();
    match update::on_boot(&mut flash, &mut table_buf) {
        Ok(report) => {
            print_running(&report.running, report.confirmed);
            if let Some(c) = report.installed {
                println!(
                    "installed {} bytes into {}, otadata switched: restarting",
                    c.summary.image_len, c.slot
                );
                esp_hal::system::software_reset();
            }
            println!("nothing to install");
        }
        Err(e) => println!("update failed: {}", e),
    }
    idle()
}

/// Heap (esp-alloc) for esp-radio, the IP stack's users and the upgrade list: the RAM the
/// 2nd-stage bootloader used, free once the app runs (esp-radio's own examples' size, esp-radio
/// `src/lib.rs`, "Quick start"), plus a part of the app's own RAM sized for the service: its
/// heap high-water running this list on the PC (`tests/firmware_c3.rs`,
/// `firmware_c3_service_heap_high_water_fits_the_heap`) with a margin (README, "On the chip").
#[cfg(feature = "wifi")]
const HEAP_RECLAIMED: usize = 64 * 1024;
#[cfg(feature = "wifi")]
const HEAP_MAIN: usize = 100 * 1024;
/// How long to wait for the association and a DHCP lease before the list runs anyway (its
/// items then fail on the network and the firmware tries again after [`RETRY_DELAY`]).
#[cfg(feature = "wifi")]
const LINK_DEADLINE: embassy_time::Duration = embassy_time::Duration::from_secs(30);
/// Runs of the list per boot when no item succeeded (each item retries and resumes its own
/// download inside a run: `RetryPolicy::default()`), and the pause between two runs.
#[cfg(feature = "wifi")]
const RUNS: u32 = 3;
#[cfg(feature = "wifi")]
const RETRY_DELAY: embassy_time::Duration = embassy_time::Duration::from_secs(10);
/// TCP buffers of the one connection the service uses at a time: the receive buffer is the
/// window the device offers, about 3 full-size segments (MSS 1460 on Ethernet-sized frames).
#[cfg(feature = "wifi")]
const TCP_RX: usize = 4096;
#[cfg(feature = "wifi")]
const TCP_TX: usize = 1024;

#[cfg(feature = "wifi")]
type HttpClient = ota_net::http::Client<ota_net::embassy::StackConnector<'static, TCP_RX, TCP_TX>>;

/// The service's events on the console, ESP-IDF style for its log lines.
#[cfg(feature = "wifi")]
fn print_event(e: ota_service::Event) {
    use ota_service::Event;
    match e {
        Event::Log {
            level,
            tag,
            message,
        } => println!("{} {}: {}", level.letter(), tag, message),
        // One line per chunk would flood the console: the service logs its progress itself.
        Event::Progress { .. } => {}
        other => println!("event: {:?}", other),
    }
}

#[cfg(feature = "wifi")]
#[esp_rtos::main]
async fn main(spawner: embassy_executor::Spawner) -> ! {
    use embassy_time::{with_timeout, Timer};
    use esp_hal::timer::timg::TimerGroup;
    use ota_core::OtaUpdater;
    use ota_service::embassy_driver::{run_with, EmbassyClock};
    use static_cell::StaticCell;

    // 160 MHz, ESP-IDF's default for the ESP32-C3 (`CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ`); esp-hal
    // starts at 80 MHz otherwise.
    let config = esp_hal::Config::default().with_cpu_clock(esp_hal::clock::CpuClock::max());
    let peripherals = esp_hal::init(config);
    esp_alloc::heap_allocator!(#[esp_hal::ram(reclaimed)] size: HEAP_RECLAIMED);
    esp_alloc::heap_allocator!(size: HEAP_MAIN);
    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    banner();
    let mut flash = FlashStorage::new(peripherals.FLASH);
    // The table and the running app through ota-core's front door, and the rollback rule: a
    // first boot after an update confirms itself before anything else.
    let (table, running) = {
        let mut table_buf = update::Aligned([0u8; update::TABLE_BUF_LEN]);
        let mut ota = match OtaUpdater::new(&mut flash, update::CONFIG, &mut table_buf.0) {
            Ok(ota) => ota,
            Err(e) => {
                println!("update failed: {}", e);
                idle()
            }
        };
        match update::confirm(&mut ota) {
            Ok((me, confirmed)) => {
                print_running(&me, confirmed);
                (ota.table().clone(), me.partition)
            }
            Err(e) => {
                println!("update failed: {}", e);
                idle()
            }
        }
    };
    let stack = match net::start(spawner, peripherals.WIFI) {
        Ok(stack) => stack,
        Err(e) => {
            println!("wifi: start failed: {:?}", e);
            idle()
        }
    };
    println!(
        "wifi: joining {}, then the upgrade list: {} -> {}, {} -> next OTA slot",
        config::WIFI_SSID,
        config::TONE_URL,
        list::TONE_LABEL,
        config::UPDATE_URL
    );
    static CLIENT: StaticCell<HttpClient> = StaticCell::new();
    let client = CLIENT.init(HttpClient::new(ota_net::embassy::StackConnector::new(
        stack,
    )));
    for run in 1..=RUNS {
        if run > 1 {
            Timer::after(RETRY_DELAY).await;
        }
        if with_timeout(LINK_DEADLINE, stack.wait_config_up())
            .await
            .is_err()
        {
            println!("run {run}: no network within {} s", LINK_DEADLINE.as_secs());
            continue;
        }
        if let Some(c) = stack.config_v4() {
            println!("run {run}: address {}", c.address);
        }
        let report = run_with(client, async |transport| {
            list::run(
                &mut flash,
                &table,
                running,
                config::TONE_URL,
                config::UPDATE_URL,
                ota_service::source::SourceOptions::default(),
                &transport,
                &EmbassyClock,
                &mut print_event,
            )
            .await
        })
        .await;
        for (id, outcome) in &report.results {
            println!("item {id}: {}", outcome.name());
        }
        if report.restart {
            println!("new app installed, otadata switched: restarting");
            esp_hal::system::software_reset();
        }
        // Done when every item succeeded or was skipped (nothing newer); a failed one (network,
        // server) is tried again by the next run.
        if report
            .results
            .iter()
            .all(|(_, o)| !matches!(o, ota_service::Outcome::Failed { .. }))
        {
            break;
        }
    }
    loop {
        Timer::after(embassy_time::Duration::from_secs(3600)).await;
    }
}
