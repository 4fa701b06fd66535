//! ESP32-C3 firmware that updates itself with `ota-core` through esp-storage.
//!
//! On every boot: read the partition table through the flash driver, confirm this app if it is
//! on trial (rollback), then fetch an app image and install it into the other OTA slot, switch
//! otadata and restart. Where the image comes from is chosen at build time:
//! - feature `wifi` (default): join the Wi-Fi network compiled in ([`config`]), get an address
//!   by DHCP and download the image from the compiled-in URL over HTTP ([`http::download`]),
//!   streamed chunk by chunk into the front door; installed only when its version is newer;
//! - without it: the image placed in the `ota_image` data partition.
//!
//! The update logic is in [`update`] (no hardware in it, written on `ota-core`'s front door
//! `OtaUpdater`; the root crate's tests run it on a PC); this file is the chip glue: esp-hal
//! start-up, the flash driver, the console, the network tasks and the reset.
#![no_std]
#![no_main]

use esp_backtrace as _;
use esp_println::println;
use esp_storage::FlashStorage;

#[cfg(feature = "wifi")]
mod config;
#[cfg(feature = "wifi")]
mod http;
#[cfg(feature = "wifi")]
mod net;
// Each build uses one of its two image sources (`on_boot`'s data partition without `wifi`,
// `Installer` with it); the host tests run both.
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

/// Heap for esp-radio and the IP stack (esp-alloc): the RAM the 2nd-stage bootloader used,
/// free once the app runs, plus a part of the app's own RAM; the sizes of esp-radio's own
/// examples (esp-radio `src/lib.rs`, "Quick start").
#[cfg(feature = "wifi")]
const HEAP_RECLAIMED: usize = 64 * 1024;
#[cfg(feature = "wifi")]
const HEAP_MAIN: usize = 36 * 1024;
/// How long to wait for the association and a DHCP lease before an attempt is given up.
#[cfg(feature = "wifi")]
const LINK_DEADLINE: embassy_time::Duration = embassy_time::Duration::from_secs(30);
/// The deadline of one whole download (1 MB slot at a slow 10 KB/s: 100 s).
#[cfg(feature = "wifi")]
const DOWNLOAD_DEADLINE: embassy_time::Duration = embassy_time::Duration::from_secs(120);
/// Download attempts per boot, and the pause between two.
#[cfg(feature = "wifi")]
const ATTEMPTS: u32 = 3;
#[cfg(feature = "wifi")]
const RETRY_DELAY: embassy_time::Duration = embassy_time::Duration::from_secs(10);

#[cfg(feature = "wifi")]
#[esp_rtos::main]
async fn main(spawner: embassy_executor::Spawner) -> ! {
    use embassy_time::{with_timeout, Timer};
    use esp_hal::timer::timg::TimerGroup;
    use ota_core::OtaUpdater;

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
    let mut table_buf = update::Aligned([0u8; update::TABLE_BUF_LEN]);
    let mut ota = match OtaUpdater::new(&mut flash, update::CONFIG, &mut table_buf.0) {
        Ok(ota) => ota,
        Err(e) => {
            println!("update failed: {}", e);
            idle()
        }
    };
    match update::confirm(&mut ota) {
        Ok((me, confirmed)) => print_running(&me, confirmed),
        Err(e) => {
            println!("update failed: {}", e);
            idle()
        }
    }
    let stack = match net::start(spawner, peripherals.WIFI) {
        Ok(stack) => stack,
        Err(e) => {
            println!("wifi: start failed: {:?}", e);
            idle()
        }
    };
    println!(
        "wifi: joining {}, then GET {}",
        config::WIFI_SSID,
        config::UPDATE_URL
    );
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            Timer::after(RETRY_DELAY).await;
        }
        if with_timeout(LINK_DEADLINE, stack.wait_config_up())
            .await
            .is_err()
        {
            println!(
                "attempt {attempt}: no network within {} s",
                LINK_DEADLINE.as_secs()
            );
            continue;
        }
        if let Some(c) = stack.config_v4() {
            println!("attempt {attempt}: address {}", c.address);
        }
        let mut installer = update::Installer::new(&mut ota);
        let fetched = with_timeout(
            DOWNLOAD_DEADLINE,
            net::download(stack, config::UPDATE_URL, &mut installer),
        )
        .await;
        match fetched {
            Ok(Ok(bytes)) => match installer.finish() {
                Ok(Some(c)) => {
                    println!(
                        "installed {} bytes into {}, otadata switched: restarting",
                        c.summary.image_len, c.slot
                    );
                    esp_hal::system::software_reset();
                }
                Ok(None) => {
                    println!(
                        "{}: not newer than the running version (stopped after {} bytes): nothing to install",
                        config::UPDATE_URL,
                        bytes
                    );
                    break;
                }
                Err(e) => {
                    // A bad image stays bad: no retry. otadata is untouched.
                    println!("{}: image refused: {}", config::UPDATE_URL, e);
                    break;
                }
            },
            Ok(Err(e)) => {
                installer.abort();
                println!("attempt {attempt}: {}: {}", config::UPDATE_URL, e);
            }
            Err(_) => {
                installer.abort();
                println!(
                    "attempt {attempt}: {}: not done within {} s",
                    config::UPDATE_URL,
                    DOWNLOAD_DEADLINE.as_secs()
                );
            }
        }
    }
    loop {
        Timer::after(embassy_time::Duration::from_secs(3600)).await;
    }
}
