//! ESP32-C3 firmware that updates itself with `ota-core` through esp-storage.
//!
//! On every boot: read the partition table through the flash driver, confirm this app if it is
//! on trial (rollback), install the image found in the `ota_image` data partition into the
//! other OTA slot, switch otadata and restart. The logic is in [`update`] (no hardware in it,
//! written on `ota-core`'s front door `OtaUpdater`); this file is the chip glue: esp-hal
//! start-up, the flash driver, the console and the reset.
#![no_std]
#![no_main]

use esp_backtrace as _;
use esp_hal::main;
use esp_println::println;
use esp_storage::FlashStorage;

mod update;

// The app descriptor (`esp_app_desc_t`) the 2nd-stage bootloader and OTA read at offset 0x20 of
// the image: project name and version come from this crate's Cargo.toml.
esp_bootloader_esp_idf::esp_app_desc!();

#[main]
fn main() -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default());
    let mut flash = FlashStorage::new(peripherals.FLASH);
    let mut table_buf = update::Aligned([0u8; update::TABLE_BUF_LEN]);

    println!(
        "{} {}: ota-core update check",
        ESP_APP_DESC.project_name(),
        ESP_APP_DESC.version()
    );
    match update::on_boot(&mut flash, &mut table_buf) {
        Ok(report) => {
            let me = report.running;
            let state = me.state.map(|s| s.name()).unwrap_or("no otadata entry");
            println!(
                "running from {} at 0x{:x} ({})",
                me.partition.label.as_str(),
                me.partition.offset,
                state
            );
            if report.confirmed {
                println!("first boot after an update: app marked valid, rollback cancelled");
            }
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
    loop {
        core::hint::spin_loop();
    }
}
