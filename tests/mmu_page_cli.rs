//! The emulated device checks app segment alignment with its bootloader's MMU page size:
//! the `[bootloader] mmu_page_size` setting, else the app descriptor's `mmu_page_size`, else
//! Kconfig's default for the chip and flash size (16 KB on 1 MB, 32 KB on 2 MB on chips with a
//! configurable page). Apps are real `esptool elf2image` output from ELFs laid out as ESP-IDF
//! lays them out.

mod common;
mod idf;
mod interop;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// A partition table that fits 1 MB of flash.
const CSV_1MB: &str = "nvs,data,nvs,0x9000,0x4000\notadata,data,ota,0xd000,0x2000\n\
phy_init,data,phy,0xf000,0x1000\nota_0,app,ota_0,0x10000,0x70000\nota_1,app,ota_1,0x80000,0x70000\n";

/// `esptool --chip CHIP elf2image --flash-size SIZE --flash-mmu-page-size PAGE` of an ELF laid
/// out for `page` (descriptor field `log2` or 0).
fn esptool_app(py: &Path, dir: &Path, chip: &str, size: &str, page: u32, record: bool) -> PathBuf {
    let log2 = if record {
        page.trailing_zeros() as u8
    } else {
        0
    };
    let elf = dir.join(format!("{chip}-{size}-{record}.elf"));
    std::fs::write(&elf, idf::c6_app_elf(page, log2, "small_flash", "v1.2.3")).unwrap();
    let out = dir.join(format!("{chip}-{size}-{record}.bin"));
    let page_name = format!("{}KB", page / 1024);
    let answer = interop::ask(
        py,
        "esptool_oracle.py",
        &json!({"op": "elf2image", "chip": chip, "elf": s(&elf),
                "cases": [{"args": ["--flash-size", size, "--flash-mmu-page-size", page_name],
                           "out": s(&out)}]}),
    );
    assert_eq!(answer["reports"][0]["ok"], true, "{}", answer);
    out
}

#[test]
fn c6_and_h2_apps_for_1mb_and_2mb_flash_boot_on_a_device_of_that_size() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("p.csv");
    std::fs::write(&csv, CSV_1MB).unwrap();
    for chip in ["esp32c6", "esp32h2"] {
        for (size, page) in [("1MB", 0x4000u32), ("2MB", 0x8000)] {
            for record in [false, true] {
                let app = esptool_app(&py, dir.path(), chip, size, page, record);
                let flash = dir.path().join(format!("{chip}-{size}-{record}.flash"));
                ok(&[
                    "device",
                    "create",
                    "--flash",
                    s(&flash),
                    "--chip",
                    chip,
                    "--flash-size",
                    size,
                    "--partitions",
                    s(&csv),
                    "--app",
                    s(&app),
                ]);
                let settings =
                    std::fs::read_to_string(format!("{}.device.toml", s(&flash))).unwrap();
                assert!(
                    settings.contains(&format!("mmu_page_size = 0x{page:x}")),
                    "{settings}"
                );
                let out = ok(&["device", "boot", "--flash", s(&flash), "--json"]);
                let j: Value = serde_json::from_str(&out).unwrap();
                assert_eq!(j["slot"], "ota_0", "{chip} {size} {record}: {out}");
                assert_eq!(j["project_name"], "small_flash");
                let info = ok(&["device", "info", "--flash", s(&flash), "--json"]);
                let j: Value = serde_json::from_str(&info).unwrap();
                assert_eq!(j["apps"][0]["app"]["version"], "v1.2.3", "{info}");
                assert_eq!(j["settings"]["mmu_page_size"], page, "{info}");
            }
        }
    }
}

#[test]
fn a_bootloader_with_64k_pages_refuses_a_16k_page_app_and_the_setting_decides() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("p.csv");
    std::fs::write(&csv, CSV_1MB).unwrap();
    let app = esptool_app(&py, dir.path(), "esp32c6", "1MB", 0x4000, false);
    // A 4 MB device: Kconfig's bootloader uses 64 KB pages and refuses the app.
    let flash = dir.path().join("c6-4mb.flash");
    let o = ota(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--chip",
        "esp32c6",
        "--flash-size",
        "4MB",
        "--partitions",
        s(&csv),
        "--app",
        s(&app),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("doesn't match data"), "{}", text(&o));
    assert!(!flash.exists(), "a refused create leaves no file");
    // A 1 MB device boots it; its settings say 16 KB. Set 64 KB and the same flash no longer
    // boots: the bootloader's page size is what counts, whatever the flash size.
    let flash = dir.path().join("c6-1mb.flash");
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--chip",
        "esp32c6",
        "--flash-size",
        "1MB",
        "--partitions",
        s(&csv),
        "--app",
        s(&app),
    ]);
    ok(&["device", "boot", "--flash", s(&flash)]);
    let side = format!("{}.device.toml", s(&flash));
    std::fs::write(&side, "[bootloader]\nmmu_page_size = 0x10000\n").unwrap();
    let o = ota(&["device", "boot", "--flash", s(&flash)]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("doesn't match data"), "{}", text(&o));
    // Without a setting the app descriptor is not set (pre-v5.4 app) either, so the default for
    // the 1 MB bootloader header applies: 16 KB, it boots.
    std::fs::write(&side, "[bootloader]\n").unwrap();
    ok(&["device", "boot", "--flash", s(&flash)]);
    // A page size the chip does not have is a settings error naming the file.
    std::fs::write(&side, "[bootloader]\nmmu_page_size = 0x3000\n").unwrap();
    let o = ota(&["device", "boot", "--flash", s(&flash)]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("device.toml") && text(&o).contains("0x3000"),
        "{}",
        text(&o)
    );
}
