//! The ESP32-C3 firmware example (`examples/esp32c3-ota`): its image boots on the emulated
//! device, it links the Wi-Fi and IP stacks and the service, its footprint (sections, the
//! shares of ota-core, ota-service, ota-net, esp-radio and embassy-net, the heap), the
//! service's heap high-water and the stack its update paths need. The firmware's update logic
//! is compiled into this test as it is: `examples/esp32c3-ota/src/update.rs` (the data-partition
//! source, the confirmation) and `src/list.rs` (the Wi-Fi build's upgrade list, run by
//! ota-service), run against a RAM flash with esp-storage's granularity, over an in-memory
//! transport and over the embassy driver on embassy-net (ota-net's simulated link).
//!
//! The tests that need the firmware ELF say `SKIP: ...` when it has not been built;
//! `scripts/test.sh` builds it first (`cargo build --release` in the example's folder).

// `list.rs` names `alloc::`, as in the firmware.
extern crate alloc;

mod common;

#[path = "../examples/esp32c3-ota/src/update.rs"]
#[allow(dead_code)]
mod fw_update;

// The Wi-Fi build's upgrade list.
#[path = "../examples/esp32c3-ota/src/list.rs"]
mod fw_list;

// The firmware's compiled-in settings (Wi-Fi network, URLs), built here with the same
// environment as the firmware's build.
#[path = "../examples/esp32c3-ota/src/config.rs"]
#[allow(dead_code)]
mod fw_config;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{ok, python, s};
use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use ota_core::image::{build_image, ImageSpec};
use ota_core::otadata::OtaState;
use ota_core::partition::{
    Label, Partition, PartitionTable, ReadRule, TABLE_MAX_LEN, TABLE_OFFSET, TYPE_APP, TYPE_DATA,
};
use ota_core::{Chip, Slot, UpdaterError};
use ota_net::http::Client as HttpClient;
use ota_net::sim::{Device as SimDevice, LinkSpec, GATEWAY};
use ota_service::embassy_driver::{run_with, EmbassyClock};
use ota_service::io::{BoxFuture, Clock, MemBody, Opened, Request, Transport};
use ota_service::source::{SourceError, SourceOptions};
use ota_service::{Event, Outcome, RunReport};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/esp32c3-ota")
}

/// The release ELF `scripts/test.sh` builds, or None after saying so.
fn firmware_elf() -> Option<PathBuf> {
    let p = example_dir().join("target/riscv32imc-unknown-none-elf/release/esp32c3-ota");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: firmware ELF {} not built (run scripts/test.sh, or `cargo build --release` in examples/esp32c3-ota)",
            p.display()
        );
        None
    }
}

/// `name` and `version` of the example's Cargo.toml `[package]` (what `esp_app_desc!()` puts
/// in the app descriptor).
fn package_field(name: &str) -> String {
    let toml = std::fs::read_to_string(example_dir().join("Cargo.toml")).unwrap();
    let prefix = format!("{name} = \"");
    toml.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {name} in the example's Cargo.toml"))
        .to_string()
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().expect("running a tool");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "{cmd:?} failed ({:?}):\n{out}",
        o.status
    );
    out
}

#[test]
fn firmware_c3_image_converts_and_boots_on_emulated_device() {
    let (Some(elf), Some(py)) = (firmware_elf(), python()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("esp32c3-ota.bin");
    // `ota image from-elf` converts; esptool's elf2image of the same ELF is the byte-for-byte
    // judge, and esptool image-info must accept the result.
    ok(&[
        "image",
        "from-elf",
        s(&elf),
        "-o",
        s(&app),
        "--chip",
        "esp32c3",
        "--flash-size",
        "4MB",
    ]);
    let judge = dir.path().join("esptool.bin");
    run(Command::new(&py).args([
        "-m",
        "esptool",
        "--chip",
        "esp32c3",
        "elf2image",
        "--flash-size",
        "4MB",
        "-o",
        s(&judge),
        s(&elf),
    ]));
    assert!(
        std::fs::read(&app).unwrap() == std::fs::read(&judge).unwrap(),
        "ota image from-elf and esptool elf2image differ on the firmware ELF"
    );
    let (name, version) = (package_field("name"), package_field("version"));
    let info = run(Command::new(&py).args(["-m", "esptool", "image-info", s(&app)]));
    assert!(
        info.contains("Checksum: ") && info.contains("(valid)"),
        "{info}"
    );
    assert!(info.contains(&format!("Project name: {name}")), "{info}");
    assert!(info.contains(&format!("App version: {version}")), "{info}");

    // The firmware's own table, with the image also placed where the firmware installs from.
    let flash = dir.path().join("c3.flash");
    let csv = example_dir().join("partitions.csv");
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--chip",
        "esp32c3",
        "--partitions",
        s(&csv),
        "--app",
        s(&app),
        "--rollback",
    ]);
    ok(&[
        "partition",
        "write",
        fw_update::IMAGE_LABEL,
        "--flash",
        s(&flash),
        s(&app),
    ]);
    let boot = ok(&["device", "boot", "--flash", s(&flash)]);
    assert!(
        boot.contains("Loaded app from partition at offset 0x10000"),
        "{boot}"
    );
    assert!(
        boot.contains(&format!("Project name:     {name}")),
        "{boot}"
    );
    assert!(
        boot.contains(&format!("App version:      {version}")),
        "{boot}"
    );
}

#[test]
fn firmware_c3_update_logic_installs_its_own_image_on_the_emulated_device() {
    // The firmware's first two boots, played on the emulated ESP32-C3 with the converted
    // firmware itself: its update logic (this very source) runs against the device's flash
    // file, the emulator's bootloader (`ota device boot`) boots between them.
    let Some(elf) = firmware_elf() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Two conversions of the ELF that differ in the header's flash frequency only, so the one
    // in `ota_image` is not the running image.
    let convert = |out: &Path, freq: &str| {
        ok(&[
            "image",
            "from-elf",
            s(&elf),
            "-o",
            s(out),
            "--chip",
            "esp32c3",
            "--flash-size",
            "4MB",
            "--flash-freq",
            freq,
        ]);
    };
    let (v1, v2) = (dir.path().join("v1.bin"), dir.path().join("v2.bin"));
    convert(&v1, "80m");
    convert(&v2, "40m");
    assert_ne!(std::fs::read(&v1).unwrap(), std::fs::read(&v2).unwrap());
    let flash = dir.path().join("c3.flash");
    let csv = example_dir().join("partitions.csv");
    let args = [
        "device",
        "create",
        "--flash",
        s(&flash),
        "--chip",
        "esp32c3",
    ];
    ok(&[
        &args[..],
        &["--partitions", s(&csv), "--app", s(&v1), "--rollback"],
    ]
    .concat());
    ok(&[
        "partition",
        "write",
        fw_update::IMAGE_LABEL,
        "--flash",
        s(&flash),
        s(&v2),
    ]);
    let boot = ok(&["device", "boot", "--flash", s(&flash)]);
    assert!(
        boot.contains("Loaded app from partition at offset 0x10000"),
        "{boot}"
    );

    let on_boot = || {
        let mut f = ota_emu::flash::EmuFlash::open(&flash).unwrap();
        let mut buf = fw_update::Aligned([0u8; fw_update::TABLE_BUF_LEN]);
        fw_update::on_boot(&mut f, &mut buf).unwrap()
    };
    let first = on_boot();
    assert_eq!(first.running.partition.label.as_str(), "ota_0");
    let installed = first
        .installed
        .expect("the image in ota_image was not installed");
    assert_eq!(installed.slot, Slot::new(1).unwrap());
    assert_eq!(installed.partition.label.as_str(), "ota_1");
    assert_eq!(
        installed.summary.image_len as usize,
        std::fs::read(&v2).unwrap().len()
    );
    let boot = ok(&["device", "boot", "--flash", s(&flash)]);
    assert!(
        boot.contains("Loaded app from partition at offset 0x110000"),
        "{boot}"
    );
    assert!(
        boot.contains(&format!("Project name:     {}", package_field("name"))),
        "{boot}"
    );

    let second = on_boot();
    assert_eq!(second.running.partition.label.as_str(), "ota_1");
    assert_eq!(second.running.state, Some(OtaState::PendingVerify));
    assert!(second.confirmed && second.installed.is_none(), "{second:?}");
    let third = on_boot();
    assert_eq!(third.running.state, Some(OtaState::Valid));
    assert!(!third.confirmed && third.installed.is_none(), "{third:?}");
    let boot = ok(&["device", "boot", "--flash", s(&flash)]);
    assert!(
        boot.contains("Loaded app from partition at offset 0x110000"),
        "{boot}"
    );
}

// ---------------------------------------------------------------------------------------------
// Footprint: ELF32 section headers and symbol table, read here (no binutils needed).

const SHT_SYMTAB: u32 = 2;
const SHT_NOBITS: u32 = 8;
const SHF_WRITE: u32 = 0x1;
const SHF_ALLOC: u32 = 0x2;
const SHF_EXECINSTR: u32 = 0x4;

struct Section {
    name: String,
    kind: u32,
    flags: u32,
    offset: u32,
    size: u32,
    link: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn cstr_at(b: &[u8], at: usize) -> String {
    let end = b[at..].iter().position(|&c| c == 0).unwrap() + at;
    String::from_utf8_lossy(&b[at..end]).into_owned()
}

/// Section headers of a little-endian ELF32 (the RISC-V firmware).
fn sections(elf: &[u8]) -> Vec<Section> {
    assert_eq!(&elf[..6], b"\x7fELF\x01\x01", "not a little-endian ELF32");
    let (shoff, shentsize, shnum, shstrndx) = (
        u32_at(elf, 0x20) as usize,
        u16_at(elf, 0x2E) as usize,
        u16_at(elf, 0x30) as usize,
        u16_at(elf, 0x32) as usize,
    );
    let raw: Vec<&[u8]> = (0..shnum)
        .map(|i| &elf[shoff + i * shentsize..shoff + (i + 1) * shentsize])
        .collect();
    let strtab = u32_at(raw[shstrndx], 16) as usize;
    raw.iter()
        .map(|h| Section {
            name: cstr_at(elf, strtab + u32_at(h, 0) as usize),
            kind: u32_at(h, 4),
            flags: u32_at(h, 8),
            offset: u32_at(h, 16),
            size: u32_at(h, 20),
            link: u32_at(h, 24),
        })
        .collect()
}

/// The crate a Rust symbol comes from. Legacy mangling (`_ZN8ota_core5image...`): the first
/// path segment, or the first path inside `<...>` of a trait impl
/// (`_ZN61_$LT$ota_core..error..Error$u20$as$u20$...`), or the trait's path for a bare type
/// parameter (`<&T as core::fmt::Debug>`). v0 mangling (`_RNv...Cs<hash>_4core...`,
/// the precompiled `core`): the name after the first crate root `C`.
fn crate_of(sym: &str) -> Option<String> {
    let ident = |s: &str| -> Option<String> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let len: usize = s[..digits].parse().ok()?;
        Some(s.get(digits..digits + len)?.to_string())
    };
    if let Some(rest) = sym.strip_prefix("_ZN") {
        let first = ident(rest)?;
        let first = first.strip_prefix("_$LT$").unwrap_or(&first);
        // `<&T as core::fmt::Debug>`: a blanket impl for a bare type parameter belongs to the
        // trait's crate.
        let first = match first.split_once("$u20$as$u20$") {
            Some((ty, tr)) if !ty.contains("..") => tr,
            _ => first,
        };
        let mut path = first.split("..").next()?;
        // `$RF$T`, `$u5b$T$u5d$`...: skip the escapes before the type's path.
        while let Some(r) = path.strip_prefix('$') {
            path = r.split_once('$').map(|(_, t)| t).unwrap_or("");
        }
        let name: String = path
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        return (!name.is_empty()).then_some(name);
    }
    let rest = sym.strip_prefix("_R")?;
    let at = rest.find('C')?;
    let mut r = &rest[at + 1..];
    if let Some(d) = r.strip_prefix('s') {
        r = d.split_once('_')?.1; // the crate's disambiguator
    }
    ident(r)
}

/// A sized OBJECT or FUNC symbol of `.symtab`.
struct Sym {
    name: String,
    size: u32,
    /// `STT_FUNC` (2) or `STT_OBJECT` (1).
    kind: u8,
    /// Index of its section (`st_shndx`).
    section: u16,
}

fn sized_symbols(elf: &[u8], secs: &[Section]) -> Vec<Sym> {
    let symtab = secs.iter().find(|x| x.kind == SHT_SYMTAB).expect(".symtab");
    let strtab = &secs[symtab.link as usize];
    elf[symtab.offset as usize..(symtab.offset + symtab.size) as usize]
        .chunks_exact(16)
        .filter_map(|e| {
            let (name, size, info) = (u32_at(e, 0), u32_at(e, 8), e[12]);
            let kind = info & 0xF;
            (size > 0 && matches!(kind, 1 | 2)).then(|| Sym {
                name: cstr_at(elf, (strtab.offset + name) as usize),
                size,
                kind,
                section: u16_at(e, 14),
            })
        })
        .collect()
}

/// The sizes of the firmware's heap regions: the `HEAP` statics `esp_alloc::heap_allocator!`
/// makes inside the firmware's `main` (legacy mangling `..4HEAP17h<hash>E`).
fn heap_regions(syms: &[Sym]) -> Vec<u32> {
    syms.iter()
        .filter(|x| {
            x.kind == 1
                && crate_of(&x.name).as_deref() == Some("esp32c3_ota")
                && x.name.contains("4HEAP17h")
        })
        .map(|x| x.size)
        .collect()
}

#[test]
fn firmware_c3_links_wifi_ip_stack_the_service_and_compiled_in_urls() {
    // The build CI makes is the Wi-Fi one: esp-radio and its blobs, embassy-net on smoltcp
    // with DHCP and DNS, ota-service's items and embassy driver on ota-net's HTTP client (no
    // reqwless, no download code of the firmware's own), a heap, and the compiled-in network
    // and URLs.
    let Some(elf_path) = firmware_elf() else {
        return;
    };
    let elf = std::fs::read(&elf_path).unwrap();
    let secs = sections(&elf);
    let syms = sized_symbols(&elf, &secs);
    let crates: std::collections::BTreeSet<String> =
        syms.iter().filter_map(|x| crate_of(&x.name)).collect();
    for krate in [
        "esp_radio",
        "esp_rtos",
        "embassy_net",
        "smoltcp",
        "ota_service",
        "ota_net",
        "esp_alloc",
    ] {
        assert!(
            crates.contains(krate),
            "no {krate} symbol in {}: not the Wi-Fi build (`cargo build --release` with the \
             default features)",
            elf_path.display()
        );
    }
    let has = |pred: &dyn Fn(&Sym) -> bool| syms.iter().any(pred);
    // The vendor Wi-Fi library (esp-wifi-sys' libnet80211): initialised, started, connected.
    for f in [
        "esp_wifi_init_internal",
        "esp_wifi_start",
        "esp_wifi_connect_internal",
    ] {
        assert!(
            has(&|x| x.kind == 2 && x.name == f),
            "the Wi-Fi blob's {f} is not linked"
        );
    }
    assert!(
        has(&|x| x.name.contains("smoltcp") && x.name.contains("dhcpv4")),
        "smoltcp's DHCPv4 is not linked"
    );
    assert!(
        has(&|x| x.name.contains("embassy_net") && x.name.contains("dns_query"))
            && has(&|x| x.name.contains("smoltcp") && x.name.contains("6socket3dns")),
        "embassy-net's DNS client (Stack::dns_query on smoltcp's DNS socket) is not linked"
    );
    // The service's code, not the firmware's: the list's two items (their hooks), the embassy
    // driver's transport and pump, ota-net's HTTP client on the embassy-net connector.
    for (what, parts) in [
        (
            "the app item's execute hook",
            &["ota_service", "7AppItem12execute_hook"][..],
        ),
        (
            "the data item's execute hook",
            &["ota_service", "8DataItem12execute_hook"],
        ),
        (
            "the items' download (retries, reconnect)",
            &["ota_service", "5Fetch9reconnect"],
        ),
        (
            // Under LTO, which of the driver's functions survive as symbols (`run_with`'s
            // closures, the pump's `run` or `serve`, `call`) changes with the code around
            // them: any function of the module will do.
            "the embassy driver (run_with and its pump)",
            &["11ota_service14embassy_driver"],
        ),
        (
            "the embassy transport's open",
            &["EmbassyTransport", "Transport$GT$4open"],
        ),
        ("ota-net's HTTP response reader", &["ota_net", "4http"]),
        (
            "ota-net's connector on the embassy-net stack",
            &["StackConnector", "Connect"],
        ),
    ] {
        assert!(
            has(&|x| x.kind == 2 && parts.iter().all(|p| x.name.contains(p))),
            "{what} is not linked into {}",
            elf_path.display()
        );
    }
    assert!(
        !crates.contains("reqwless")
            && !has(&|x| x.name.contains("esp32c3_ota") && x.name.contains("8download")),
        "the firmware still links its own download code"
    );
    let heap = heap_regions(&syms);
    assert!(
        heap.iter().sum::<u32>() >= 64 * 1024,
        "heap regions {heap:?}: esp-radio needs a heap"
    );
    // The compiled-in settings, in the read-only data.
    let rodata = secs.iter().find(|x| x.name == ".rodata").expect(".rodata");
    let rodata = &elf[rodata.offset as usize..(rodata.offset + rodata.size) as usize];
    let find = |needle: &str| rodata.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        find(fw_config::UPDATE_URL),
        "the update URL {:?} is not in .rodata (was the firmware built with another OTA_UPDATE_URL?)",
        fw_config::UPDATE_URL
    );
    assert!(
        find(fw_config::TONE_URL),
        "the tone URL {:?} is not in .rodata (was the firmware built with another OTA_TONE_URL?)",
        fw_config::TONE_URL
    );
    assert!(
        find(fw_list::TONE_LABEL),
        "the data item's partition label {:?} is not in .rodata",
        fw_list::TONE_LABEL
    );
    assert!(
        find(fw_config::WIFI_SSID),
        "the SSID {:?} is not in .rodata (built with another OTA_WIFI_SSID?)",
        fw_config::WIFI_SSID
    );
    println!(
        "Wi-Fi build: joins {:?}, runs the list {} -> {}, {} -> next OTA slot; heap {heap:?}",
        fw_config::WIFI_SSID,
        fw_config::TONE_URL,
        fw_list::TONE_LABEL,
        fw_config::UPDATE_URL
    );
}

#[test]
fn firmware_c3_footprint_by_section_and_crate() {
    let Some(elf_path) = firmware_elf() else {
        return;
    };
    let elf = std::fs::read(&elf_path).unwrap();
    let secs = sections(&elf);
    // `size`-style classes of the allocated sections. NOBITS sections without the write flag
    // (`.rwdata_dummy`, `.rotext_dummy`: esp-hal's address-space placeholders, and `.stack`)
    // hold nothing; `.stack` is reported on its own.
    let (mut text, mut rodata, mut data, mut bss, mut stack) = (0u32, 0u32, 0u32, 0u32, 0u32);
    println!("firmware {}:", elf_path.display());
    for sec in secs
        .iter()
        .filter(|x| x.flags & SHF_ALLOC != 0 && x.size > 0)
    {
        let class = match (sec.kind == SHT_NOBITS, sec.flags) {
            _ if sec.name == ".stack" => &mut stack,
            (true, f) if f & SHF_WRITE != 0 => &mut bss,
            (true, _) => continue,
            (false, f) if f & SHF_EXECINSTR != 0 => &mut text,
            (false, f) if f & SHF_WRITE != 0 => &mut data,
            (false, _) => &mut rodata,
        };
        *class += sec.size;
        println!("  {:<16} {:>7} bytes", sec.name, sec.size);
    }
    println!("footprint: .text {text}  .rodata {rodata}  .data {data}  .bss {bss}  (flash {}, RAM {} + stack reserve {stack})",
        text + rodata + data, data + bss);

    // Symbols by crate (function and object sizes from .symtab), those with bytes in the image
    // only: not the zero-initialised or uninitialised RAM (heap regions, task pools) of NOBITS
    // sections.
    let mut by_crate: std::collections::BTreeMap<String, u64> = Default::default();
    let mut total = 0u64;
    let syms = sized_symbols(&elf, &secs);
    let in_image = |x: &&Sym| {
        secs.get(x.section as usize)
            .is_some_and(|sec| sec.kind != SHT_NOBITS && sec.flags & SHF_ALLOC != 0)
    };
    for sym in syms.iter().filter(in_image) {
        let krate = match crate_of(&sym.name) {
            Some(k) => k,
            None if sym.name == "main" => {
                "main (the firmware's glue and what LTO inlined into it)".into()
            }
            None => "(not Rust-mangled)".into(),
        };
        *by_crate.entry(krate).or_default() += sym.size as u64;
        total += sym.size as u64;
    }
    let share = |k: &str| by_crate.get(k).copied().unwrap_or(0);
    let ota_core = share("ota_core");
    let mut top: Vec<_> = by_crate.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    println!("symbol bytes by crate (of {total} in sized symbols with bytes in the image):");
    for (k, v) in top.iter().take(12) {
        println!("  {k:<58} {v:>7}");
    }
    let code = (text + rodata) as f64;
    let pct = |n: u64| 100.0 * n as f64 / code;
    println!(
        "ota-core share: {ota_core} bytes = {:.1}% of .text+.rodata ({}); a lower bound: with LTO, \
         ota-core code inlined into its callers counts to them (main)",
        pct(ota_core),
        text + rodata
    );
    // The Wi-Fi build: esp-radio's Rust side, the vendor blobs (C, in the `.wifi` sections and
    // among the symbols that are not Rust-mangled), the IP stack and the HTTP client.
    let wifi_secs: u32 = secs
        .iter()
        .filter(|x| x.flags & SHF_ALLOC != 0 && x.name.ends_with(".wifi"))
        .map(|x| x.size)
        .sum();
    let net = share("embassy_net") + share("smoltcp");
    let rtos = share("esp_rtos") + share("embassy_executor");
    println!(
        "esp-radio share: {} bytes of Rust symbols ({:.1}%); .wifi sections (blob code and data in \
         IRAM/DRAM): {wifi_secs} bytes; symbols that are not Rust-mangled (mostly the Wi-Fi/PHY \
         blobs): {} bytes ({:.1}%)",
        share("esp_radio"),
        pct(share("esp_radio")),
        share("(not Rust-mangled)"),
        pct(share("(not Rust-mangled)"))
    );
    println!(
        "embassy-net share: {net} bytes ({:.1}%: embassy_net {}, smoltcp {}); \
         esp-rtos + embassy-executor {rtos}",
        pct(net),
        share("embassy_net"),
        share("smoltcp"),
    );
    let (service, client) = (share("ota_service"), share("ota_net"));
    println!(
        "ota-service share: {service} bytes ({:.1}%); ota-net share (HTTP client, connector): \
         {client} bytes ({:.1}%); serde_json {}, sha2 {}; lower bounds too (LTO inlines into \
         the callers: the list's futures are polled inside esp-rtos' main task, `main`)",
        pct(service),
        pct(client),
        share("serde_json"),
        share("sha2")
    );
    let heap = heap_regions(&syms);
    if !heap.is_empty() {
        println!(
            "heap given to esp-alloc: {} bytes in {} regions ({:?})",
            heap.iter().sum::<u32>(),
            heap.len(),
            heap
        );
    }
    if let Some(pool) = syms.iter().find(|x| x.name.contains("__embassy_main4POOL")) {
        println!(
            "the main task's future (esp-rtos' executor pool, static): {} bytes",
            pool.size
        );
    }
    assert!(text > 0 && rodata > 0, "no code or read-only data found");
    assert!(
        service > 0 && client > 0,
        "no ota_service or ota_net symbol: the service is not linked in"
    );
    assert!(
        ota_core > 0,
        "no ota_core symbol in the firmware: ota-core is not linked in"
    );
    assert!(
        ota_core <= (text + rodata) as u64,
        "ota_core symbols larger than the sections holding them"
    );
}

// ---------------------------------------------------------------------------------------------
// The firmware's update path on a host RAM flash: power cuts, then the stack it needs.

/// esp-storage's granularity (`FlashStorage::WORD_SIZE`, esp-storage `src/common.rs`): reads
/// are 4-byte words.
const READ_SIZE: usize = 4;
/// esp-storage writes 4-byte words too (`WRITE_SIZE = WORD_SIZE`).
const WRITE_SIZE: usize = 4;
const SECTOR: usize = 4096;
const FLASH_SIZE: usize = 4 << 20;

#[derive(Debug)]
struct CutError(NorFlashErrorKind);
impl NorFlashError for CutError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

/// NOR flash in RAM with esp-storage's alignment rules and a power cut: after `budget` more
/// writes/erases, the operation in progress is torn (half its bytes land, an erase is lost)
/// and every later one fails, until `power_on`.
struct CutFlash {
    data: Vec<u8>,
    budget: Option<usize>,
    cut: bool,
}

impl CutFlash {
    fn new() -> Self {
        CutFlash {
            data: vec![0xFF; FLASH_SIZE],
            budget: None,
            cut: false,
        }
    }
    fn put(&mut self, at: u32, b: &[u8]) {
        self.data[at as usize..at as usize + b.len()].copy_from_slice(b);
    }
    fn power_on(&mut self) {
        self.budget = None;
        self.cut = false;
    }
    /// Whether this operation runs to its end.
    fn spend(&mut self) -> Result<bool, CutError> {
        if self.cut {
            return Err(CutError(NorFlashErrorKind::Other));
        }
        match &mut self.budget {
            Some(0) => {
                self.cut = true;
                Ok(false)
            }
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => Ok(true),
        }
    }
    fn check(&self, at: u32, len: usize, align: usize) -> Result<(), CutError> {
        if !(at as usize).is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(CutError(NorFlashErrorKind::NotAligned));
        }
        if at as usize + len > self.data.len() {
            return Err(CutError(NorFlashErrorKind::OutOfBounds));
        }
        Ok(())
    }
}

impl ErrorType for CutFlash {
    type Error = CutError;
}
impl ReadNorFlash for CutFlash {
    const READ_SIZE: usize = READ_SIZE;
    fn read(&mut self, at: u32, out: &mut [u8]) -> Result<(), CutError> {
        self.check(at, out.len(), READ_SIZE)?;
        out.copy_from_slice(&self.data[at as usize..at as usize + out.len()]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.data.len()
    }
}
impl NorFlash for CutFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = SECTOR;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), CutError> {
        self.check(from, to.saturating_sub(from) as usize, SECTOR)?;
        if self.spend()? {
            self.data[from as usize..to as usize].fill(0xFF);
        }
        Ok(())
    }
    fn write(&mut self, at: u32, b: &[u8]) -> Result<(), CutError> {
        self.check(at, b.len(), WRITE_SIZE)?;
        let whole = self.spend()?;
        let n = if whole { b.len() } else { b.len() / 2 };
        for (d, &v) in self.data[at as usize..].iter_mut().zip(&b[..n]) {
            if v & !*d != 0 {
                return Err(CutError(NorFlashErrorKind::Other)); // a 0 bit cannot become 1
            }
            *d &= v;
        }
        if whole {
            Ok(())
        } else {
            Err(CutError(NorFlashErrorKind::Other))
        }
    }
}
impl MultiwriteNorFlash for CutFlash {}

const OTA_0: u32 = 0x10000;
const IMAGE_PART: u32 = 0x210000;
/// `flash_tone` in the firmware's table.
const TONE_PART: u32 = 0x310000;
const TONE_SIZE: u32 = 0x80000;
/// ESP-ADF's subtype for `flash_tone` (esp-adf `examples/system/ota/partitions.csv`).
const TONE_SUBTYPE: u8 = 0xFF;

fn part(label: &str, ptype: u8, subtype: u8, offset: u32, size: u32) -> Partition {
    Partition {
        ptype,
        subtype,
        offset,
        size,
        label: Label::new(label),
        flags: 0,
    }
}

fn c3_image(version: &str) -> Vec<u8> {
    let mut spec = ImageSpec::new(Chip::Esp32c3, "esp32c3-ota", version);
    spec.total_size = Some(96 * 1024);
    let mut out = Vec::new();
    build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
    out
}

/// The firmware's table (`examples/esp32c3-ota/partitions.csv`) at 0x8000, v1 in ota_0, v2 in
/// `ota_image`, otadata and `flash_tone` erased.
fn c3_device() -> CutFlash {
    c3_device_with("v1", "v2")
}

/// The same with `running` in ota_0 and `staged` in `ota_image`.
fn c3_device_with(running: &str, staged: &str) -> CutFlash {
    let mut t = PartitionTable::new();
    for p in [
        part("nvs", TYPE_DATA, 0x02, 0x9000, 0x4000),
        part("otadata", TYPE_DATA, 0x00, 0xD000, 0x2000),
        part("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000),
        part("ota_0", TYPE_APP, 0x10, OTA_0, 0x100000),
        part("ota_1", TYPE_APP, 0x11, 0x110000, 0x100000),
        part(
            fw_update::IMAGE_LABEL,
            TYPE_DATA,
            0x40,
            IMAGE_PART,
            0x100000,
        ),
        part(
            fw_list::TONE_LABEL,
            TYPE_DATA,
            TONE_SUBTYPE,
            TONE_PART,
            TONE_SIZE,
        ),
    ] {
        t.push(p).unwrap();
    }
    let mut bin = [0u8; TABLE_MAX_LEN];
    t.to_binary(true, &mut bin).unwrap();
    let mut f = CutFlash::new();
    f.put(TABLE_OFFSET, &bin);
    f.put(OTA_0, &c3_image(running));
    f.put(IMAGE_PART, &c3_image(staged));
    f
}

#[test]
fn firmware_test_flash_has_the_table_of_the_firmwares_partitions_csv() {
    // The RAM flash of these tests carries the firmware's own table (flash_tone included):
    // `ota partition-table` of `partitions.csv` (gen_esp32part.py's rules) gives the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("t.bin");
    ok(&[
        "partition-table",
        s(&example_dir().join("partitions.csv")),
        "-o",
        s(&bin),
    ]);
    let made = std::fs::read(&bin).unwrap();
    let f = c3_device();
    let n = made.len().min(TABLE_MAX_LEN);
    assert!(
        made[..n] == f.data[TABLE_OFFSET as usize..TABLE_OFFSET as usize + n],
        "the test flash's table differs from partitions.csv"
    );
}

/// The 2nd-stage bootloader (rollback enabled) between two boots: returns the booted slot.
fn reboot(f: &mut CutFlash) -> String {
    let mut buf = [0u8; TABLE_MAX_LEN];
    ota_core::flash::read(f, TABLE_OFFSET, &mut buf).unwrap();
    let table = PartitionTable::parse(&buf, ReadRule::App).unwrap();
    let cfg = ota_core::boot::BootConfig {
        rollback: true,
        ..Default::default()
    };
    let out = ota_core::boot::boot(f, &table, Chip::Esp32c3, &cfg, &mut |_| {}).unwrap();
    out.partition.label.as_str().to_string()
}

type BootResult = Result<fw_update::BootReport, UpdaterError<CutError>>;
type OnBoot = fn(&mut CutFlash) -> BootResult;

/// One boot of the firmware: its `on_boot` with the table buffer on the stack, as on the chip.
fn firmware_boot(f: &mut CutFlash) -> BootResult {
    let mut buf = fw_update::Aligned([0u8; fw_update::TABLE_BUF_LEN]);
    fw_update::on_boot(f, &mut buf)
}

/// The firmware's life: boots (each one `on_boot`) until it has installed v2 and confirmed it,
/// the power cut after `cut` flash operations of the first update (None: no cut), with the
/// bootloader between boots. Returns the boots it took.
fn firmware_life(cut: Option<usize>, on_boot: OnBoot) -> usize {
    let mut f = c3_device();
    assert_eq!(reboot(&mut f), "ota_0");
    f.budget = cut;
    let mut boots = 0;
    loop {
        boots += 1;
        assert!(boots <= 4, "no progress after {boots} boots (cut {cut:?})");
        let report = on_boot(&mut f);
        let was_cut = f.cut;
        f.power_on();
        let slot = reboot(&mut f);
        match report {
            Err(e) => assert!(was_cut, "update failed without a power cut: {e}"),
            Ok(r) if r.installed.is_some() => {
                assert_eq!(slot, "ota_1", "the installed slot did not boot");
            }
            Ok(r) if r.confirmed => {
                assert_eq!(r.running.partition.label.as_str(), "ota_1");
                // Confirmed: the next boot finds the image installed and valid.
                let again = on_boot(&mut f).unwrap();
                assert!(again.installed.is_none() && !again.confirmed);
                assert_eq!(again.running.state, Some(OtaState::Valid));
                assert_eq!(reboot(&mut f), "ota_1");
                return boots;
            }
            Ok(r) => panic!(
                "boot {boots} neither installed nor confirmed (cut {cut:?}): {r:?}, booted {slot}"
            ),
        }
    }
}

#[test]
fn firmware_update_path_installs_confirms_and_survives_every_power_cut() {
    // Boot 1 installs and restarts, boot 2 confirms.
    assert_eq!(firmware_life(None, firmware_boot), 2);
    // How many flash operations one clean update makes.
    let ops = {
        let mut f = c3_device();
        reboot(&mut f);
        f.budget = Some(usize::MAX);
        let mut buf = fw_update::Aligned([0u8; fw_update::TABLE_BUF_LEN]);
        fw_update::on_boot(&mut f, &mut buf).unwrap();
        usize::MAX - f.budget.unwrap()
    };
    assert!(ops > 20, "suspiciously few flash operations: {ops}");
    // A cut at every operation: the next boot runs the old app and installs again.
    let mut extra = 0;
    for cut in 0..ops {
        extra += firmware_life(Some(cut), firmware_boot) - 2;
    }
    println!("power cut at each of {ops} flash operations of the update: every run recovered ({extra} extra boots in all)");
    assert!(extra > 0, "no cut interrupted the update");
}

/// Where the stack probe cuts the power: inside the first install (a clean one makes 123 flash
/// operations, see the sweep above).
const STACK_PROBE_CUT: usize = 60;

#[test]
fn firmware_update_path_stack_need() {
    // Largest stack that fails, smallest that passes; a too-small stack overflows the thread,
    // so each probe runs in a child process (`--exact` this test with FW_STACK_PROBE set).
    if let Ok(size) = std::env::var("FW_STACK_PROBE") {
        // Each boot's `on_boot` runs on a thread with this stack; the bootloader between boots
        // (not firmware code) runs on the test's own thread.
        let size: usize = size.parse().unwrap();
        fn on_limited_stack(f: &mut CutFlash, boot: OnBoot) -> BootResult {
            let size: usize = std::env::var("FW_STACK_PROBE").unwrap().parse().unwrap();
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .stack_size(size)
                    .spawn_scoped(s, || boot(f))
                    .unwrap()
                    .join()
                    .unwrap()
            })
        }
        fn limited(f: &mut CutFlash) -> BootResult {
            on_limited_stack(f, firmware_boot)
        }
        fn limited_service(f: &mut CutFlash, files: &MemFiles) -> ServiceResult {
            let size: usize = std::env::var("FW_STACK_PROBE").unwrap().parse().unwrap();
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .stack_size(size)
                    .spawn_scoped(s, || mem_boot(f, files))
                    .unwrap()
                    .join()
                    .unwrap()
            })
        }
        assert!(size > 0);
        match std::env::var("FW_STACK_PROBE_PATH").as_deref() {
            // The data partition's `on_boot` (the build without `wifi`).
            Ok("partition") => {
                firmware_life(Some(STACK_PROBE_CUT), limited);
            }
            // The Wi-Fi build's boot: confirm, then the service's list (both items, the app
            // item resuming after the cut), its futures polled on this stack.
            Ok("service") => {
                service_life(Some(STACK_PROBE_CUT), limited_service);
            }
            // The same over the embassy driver, ota-net's client and embassy-net: the stack's
            // runner is polled on the same thread, as esp-rtos' one executor polls its tasks
            // on one stack (the PC's simulated link and gateway too: an upper bound).
            Ok("embassy") => {
                use ota_testsrv::{Faults, FlakyServer};
                let tone = FlakyServer::start(served_tone().to_vec(), Faults::default()).unwrap();
                let app = FlakyServer::start(served_v2().to_vec(), Faults::default()).unwrap();
                let mut f = c3_device();
                reboot(&mut f);
                let (t, a) = (
                    sim_url(tone.addr().port(), "flash_tone.bin"),
                    sim_url(app.addr().port(), "esp32c3-ota.bin"),
                );
                let report = std::thread::scope(|s| {
                    std::thread::Builder::new()
                        .stack_size(size)
                        .spawn_scoped(s, || sim_boot(&mut f, &t, &a, "", false, &mut |_| {}))
                        .unwrap()
                        .join()
                        .unwrap()
                })
                .unwrap()
                .2;
                assert!(report.restart, "{report:?}");
            }
            other => panic!("FW_STACK_PROBE_PATH {other:?}"),
        }
        return;
    }
    let need = |path: &str| -> usize {
        let probe = |size: usize| -> bool {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "firmware_update_path_stack_need", "--nocapture"])
                .env("FW_STACK_PROBE", size.to_string())
                .env("FW_STACK_PROBE_PATH", path)
                .output()
                .unwrap()
                .status
                .success()
        };
        let (mut lo, mut hi) = (4096usize, 1 << 20);
        assert!(
            probe(hi),
            "{path}: the update path fails even with a {hi}-byte stack"
        );
        assert!(
            !probe(lo),
            "{path}: a {lo}-byte stack passed: the probe measures nothing"
        );
        while hi - lo > 256 {
            let mid = (lo + hi) / 2 / 256 * 256;
            if probe(mid) {
                hi = mid
            } else {
                lo = mid
            }
        }
        hi
    };
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let (partition, service, embassy) = (need("partition"), need("service"), need("embassy"));
    println!(
        "stack ({build} build, x86_64 host threads; RISC-V use differs): the data-partition \
         boots (install cut by a power cut, install, confirm; the table buffer included) need \
         {partition} bytes; the Wi-Fi build's boots with the service's list (the same cut, \
         resume, confirm) {service} bytes; one boot over the embassy driver, ota-net's client \
         and embassy-net (with the PC's simulated link) {embassy} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// The Wi-Fi build's upgrade list (`examples/esp32c3-ota/src/list.rs`, this very source) run by
// the service: over an in-memory transport (power cuts, bad bodies, the stack it needs) and
// over the embassy driver on embassy-net (a simulated link and gateway to real servers on
// 127.0.0.1: `ota serve`, a flaky server), where the heap is measured too.

/// The list's URLs for the in-memory transport.
const MEM_APP_URL: &str = "http://ota.test/esp32c3-ota.bin";
const MEM_TONE_URL: &str = "http://ota.test/flash_tone.bin";

/// An ESP-ADF tone bin (format 1, with its version descriptor) of two small sounds.
fn tone_bin(version: &str) -> Vec<u8> {
    let a: Vec<u8> = (0..6000u32).map(|i| (i * 7 + i / 255) as u8).collect();
    let b: Vec<u8> = (0..2500u32).map(|i| (i * 13) as u8).collect();
    let entries = [
        ota_core::tone::ToneEntry {
            name: "a.mp3",
            data: &a,
        },
        ota_core::tone::ToneEntry {
            name: "b.wav",
            data: &b,
        },
    ];
    let mut out = Vec::new();
    ota_core::tone::pack(&entries, 1, version, "12:00:00", "Dec  2 2026", &mut |x| {
        out.extend_from_slice(x)
    })
    .unwrap();
    out
}

fn served_tone() -> &'static [u8] {
    static T: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    T.get_or_init(|| tone_bin("v1.1.0"))
}

/// The server's app image in the service tests: v2, while the device runs v1.
fn served_v2() -> &'static [u8] {
    static V2: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    V2.get_or_init(|| c3_image("v2"))
}

/// Files behind URIs, served from memory as an HTTP server with strong ETags would: a range
/// with a matching `If-Range` is honoured, else the whole file comes. Counts what it serves.
struct MemFiles {
    files: std::collections::HashMap<String, Vec<u8>>,
    /// `(uri, start)` of every open that found its file.
    opens: std::sync::Mutex<Vec<(String, u64)>>,
}

impl MemFiles {
    fn new(files: &[(&str, &[u8])]) -> MemFiles {
        MemFiles {
            files: files
                .iter()
                .map(|(u, d)| (u.to_string(), d.to_vec()))
                .collect(),
            opens: Default::default(),
        }
    }
    fn standard() -> MemFiles {
        MemFiles::new(&[(MEM_TONE_URL, served_tone()), (MEM_APP_URL, served_v2())])
    }
    fn etag(data: &[u8]) -> String {
        format!("\"{:08x}-{}\"", crc32(data), data.len())
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

impl Transport for MemFiles {
    fn open<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Opened, SourceError>> {
        let r = match self.files.get(req.uri) {
            None => Err(SourceError::HttpStatus {
                uri: req.uri.to_string(),
                status: 404,
                reason: "Not Found".into(),
            }),
            Some(data) => {
                let etag = MemFiles::etag(data);
                let honoured = req.start == 0
                    || (req.start < data.len() as u64 && req.if_range.is_none_or(|v| v == etag));
                let from = if honoured { req.start as usize } else { 0 };
                self.opens
                    .lock()
                    .unwrap()
                    .push((req.uri.to_string(), from as u64));
                Ok(Opened {
                    body: Box::new(MemBody::new(req.uri, data[from..].to_vec())),
                    honoured,
                    etag: Some(etag),
                    last_modified: None,
                    total_length: Some(data.len() as u64),
                })
            }
        };
        Box::pin(std::future::ready(r))
    }
}

/// A clock whose sleeps pass at once (the list's backoffs cost no test time).
#[derive(Default)]
struct VirtualClock(std::cell::Cell<u64>);

impl Clock for VirtualClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
    fn sleep_ms(&self, ms: u64) -> BoxFuture<'_, ()> {
        self.0.set(self.0.get() + ms);
        Box::pin(std::future::ready(()))
    }
}

/// What one boot of the Wi-Fi build did.
#[derive(Debug)]
struct ServiceBoot {
    running: ota_core::updater::RunningApp,
    confirmed: bool,
    report: RunReport,
    events: Vec<Event>,
}

impl ServiceBoot {
    fn outcome(&self, id: usize) -> &Outcome {
        &self
            .report
            .results
            .iter()
            .find(|(i, _)| *i == id)
            .unwrap()
            .1
    }
    fn resumed(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::Resume { id: 1, .. }))
    }
}

/// The first half of the Wi-Fi build's `main`: the table and the running app through the
/// updater, confirmed when on trial (the firmware's `update::confirm`).
fn confirm_boot<F: NorFlash>(
    f: &mut F,
) -> Result<(PartitionTable, ota_core::updater::RunningApp, bool), UpdaterError<F::Error>> {
    let mut buf = fw_update::Aligned([0u8; fw_update::TABLE_BUF_LEN]);
    let mut ota = ota_core::OtaUpdater::new(f, fw_update::CONFIG, &mut buf.0)?;
    let (running, confirmed) = fw_update::confirm(&mut ota)?;
    Ok((ota.table().clone(), running, confirmed))
}

/// One boot of the Wi-Fi build over `transport` (blocking: the transport answers at once).
fn mem_boot<F: NorFlash>(
    f: &mut F,
    transport: &dyn Transport,
) -> Result<ServiceBoot, UpdaterError<F::Error>> {
    let (table, running, confirmed) = confirm_boot(f)?;
    let clock = VirtualClock::default();
    let mut events = Vec::new();
    let report = ota_service::io::block_on(fw_list::run(
        f,
        &table,
        running.partition,
        MEM_TONE_URL,
        MEM_APP_URL,
        SourceOptions::default(),
        transport,
        &clock,
        &mut |e| events.push(e),
    ));
    Ok(ServiceBoot {
        running,
        confirmed,
        report,
        events,
    })
}

fn region(f: &CutFlash, at: u32, len: usize) -> &[u8] {
    &f.data[at as usize..at as usize + len]
}

/// The Wi-Fi build's life on the in-memory transport: boots until v2 is installed and
/// confirmed and `flash_tone` holds the served tone bin, the power cut after `cut` flash
/// operations of the first boot, the bootloader between boots. Returns the boots it took and
/// whether a boot resumed the app download.
fn service_life(
    cut: Option<usize>,
    boot: fn(&mut CutFlash, &MemFiles) -> ServiceResult,
) -> (usize, bool) {
    let files = MemFiles::standard();
    let mut f = c3_device();
    assert_eq!(reboot(&mut f), "ota_0");
    f.budget = cut;
    let (mut boots, mut resumed) = (0, false);
    loop {
        boots += 1;
        assert!(boots <= 5, "no progress after {boots} boots (cut {cut:?})");
        let r = boot(&mut f, &files);
        let was_cut = f.cut;
        f.power_on();
        let slot = reboot(&mut f);
        let b = match r {
            Err(e) => {
                assert!(was_cut, "boot failed without a power cut: {e}");
                continue;
            }
            Ok(b) => b,
        };
        resumed |= b.resumed();
        if b.report.restart {
            assert!(b.outcome(1).is_success(), "{b:?}");
            assert_eq!(slot, "ota_1", "the installed slot did not boot");
        } else if b.confirmed {
            assert_eq!(b.running.partition.label.as_str(), "ota_1");
            assert!(
                matches!(b.outcome(1), Outcome::Skipped { .. }),
                "the confirmed v2 was not found not newer: {:?}",
                b.outcome(1)
            );
            assert!(b.outcome(0).is_success() || matches!(b.outcome(0), Outcome::Skipped { .. }));
            assert!(
                region(&f, TONE_PART, served_tone().len()) == served_tone(),
                "flash_tone does not hold the served tone bin (cut {cut:?})"
            );
            let again = boot(&mut f, &files).unwrap();
            assert!(!again.report.restart && !again.confirmed, "{again:?}");
            assert_eq!(again.running.state, Some(OtaState::Valid));
            assert_eq!(reboot(&mut f), "ota_1");
            return (boots, resumed);
        } else {
            assert!(
                was_cut,
                "boot {boots} neither installed nor confirmed without a power cut: {b:?}"
            );
        }
    }
}

type ServiceResult = Result<ServiceBoot, UpdaterError<CutError>>;

fn mem_boot_standard(f: &mut CutFlash, files: &MemFiles) -> ServiceResult {
    mem_boot(f, files)
}

#[test]
fn firmware_list_installs_tone_and_newer_app_confirms_and_survives_every_power_cut() {
    // Boot 1 writes the tone bin into flash_tone and installs v2 (restart), boot 2 confirms v2
    // and finds it not newer.
    assert_eq!(service_life(None, mem_boot_standard).0, 2);
    let mut f = c3_device();
    reboot(&mut f);
    f.budget = Some(usize::MAX);
    let files = MemFiles::standard();
    let b = mem_boot(&mut f, &files).unwrap();
    let ops = usize::MAX - f.budget.unwrap();
    assert!(b.report.restart, "{b:?}");
    assert!(ops > 20, "suspiciously few flash operations: {ops}");
    // The tone item first, then the app (ESP-ADF's order), each fetched once.
    let opens = files.opens.lock().unwrap();
    let uris: Vec<&str> = opens.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(uris.first(), Some(&MEM_TONE_URL), "{uris:?}");
    assert_eq!(uris.last(), Some(&MEM_APP_URL), "{uris:?}");
    drop(opens);
    // A cut at every operation of the first boot: a later boot finishes the work.
    let (mut extra, mut resumes) = (0, 0);
    for cut in 0..ops {
        let (boots, resumed) = service_life(Some(cut), mem_boot_standard);
        extra += boots - 2;
        resumes += resumed as usize;
    }
    println!(
        "upgrade list: power cut at each of {ops} flash operations: every run recovered ({extra} \
         extra boots in all, {resumes} runs resumed the app download from its resume record)"
    );
    assert!(extra > 0, "no cut interrupted the update");
    assert!(resumes > 0, "no cut led to a resumed app download");
}

#[test]
fn firmware_list_skips_an_app_not_newer_and_writes_nothing_to_the_slot() {
    for (running, served, why) in [("v2", "v2", "the same"), ("v3", "v2", "an older")] {
        let mut f = c3_device_with(running, "v1");
        assert_eq!(reboot(&mut f), "ota_0");
        let image = c3_image(served);
        let files = MemFiles::new(&[(MEM_TONE_URL, served_tone()), (MEM_APP_URL, &image)]);
        let b = mem_boot(&mut f, &files).unwrap();
        assert!(
            matches!(b.outcome(1), Outcome::Skipped { .. }),
            "{why} version: {:?}",
            b.outcome(1)
        );
        assert!(!b.report.restart);
        assert!(
            region(&f, 0x110000, 0x100000).iter().all(|&x| x == 0xFF),
            "{why} version: ota_1 was written"
        );
        assert_eq!(reboot(&mut f), "ota_0");
    }
}

#[test]
fn firmware_list_refuses_bad_bodies_and_keeps_the_running_app_and_tone() {
    let v2 = served_v2().to_vec();
    let other_chip = {
        let mut spec = ImageSpec::new(Chip::Esp32, "esp32c3-ota", "v2");
        spec.total_size = Some(96 * 1024);
        let mut out = Vec::new();
        build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
        out
    };
    let mut flipped = v2.clone();
    flipped[40_000] ^= 0x01;
    let mut bad_tone = served_tone().to_vec();
    let at = bad_tone.len() / 2;
    bad_tone[at] ^= 0x55;
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        (
            "an image for the ESP32",
            served_tone().to_vec(),
            other_chip,
            "app",
        ),
        (
            "an image truncated by 100 bytes",
            served_tone().to_vec(),
            v2[..v2.len() - 100].to_vec(),
            "app",
        ),
        (
            "an image with a flipped bit",
            served_tone().to_vec(),
            flipped,
            "app",
        ),
        (
            "no image at all (zeros)",
            served_tone().to_vec(),
            vec![0; 4096],
            "app",
        ),
        (
            "a tone bin with a corrupt byte",
            bad_tone,
            v2.clone(),
            "tone",
        ),
        (
            "a tone bin truncated",
            served_tone()[..served_tone().len() - 64].to_vec(),
            v2.clone(),
            "tone",
        ),
    ];
    for (what, tone, app, bad) in cases {
        let mut f = c3_device();
        // An older tone bin in flash_tone, as on a board that was flashed with one.
        let old_tone = tone_bin("v1.0.0");
        f.put(TONE_PART, &old_tone);
        assert_eq!(reboot(&mut f), "ota_0");
        let files = MemFiles::new(&[(MEM_TONE_URL, &tone), (MEM_APP_URL, &app)]);
        let b = mem_boot(&mut f, &files).unwrap();
        let (tone_out, app_out) = (b.outcome(0), b.outcome(1));
        println!("{what}: tone {tone_out:?}; app {app_out:?}");
        match bad {
            "app" => {
                assert!(
                    matches!(app_out, Outcome::Failed { .. }),
                    "{what}: {app_out:?}"
                );
                assert!(tone_out.is_success(), "{what}: {tone_out:?}");
                assert!(!b.report.restart, "{what}: restart asked");
                assert_eq!(reboot(&mut f), "ota_0", "{what}: otadata was switched");
            }
            _ => {
                assert!(
                    matches!(tone_out, Outcome::Failed { .. }),
                    "{what}: {tone_out:?}"
                );
                assert!(
                    region(&f, TONE_PART, old_tone.len()) == old_tone,
                    "{what}: flash_tone was changed"
                );
                // The app item still runs (break_after_fail off, as in ESP-ADF's example).
                assert!(
                    app_out.is_success() && b.report.restart,
                    "{what}: {app_out:?}"
                );
                assert_eq!(reboot(&mut f), "ota_1");
            }
        }
        // Against good files, the next boot does what the bad one could not.
        let good = MemFiles::standard();
        let b = mem_boot(&mut f, &good).unwrap();
        // The tone item: written now, or found already there (same version: skipped).
        assert!(
            b.outcome(0).is_success() || matches!(b.outcome(0), Outcome::Skipped { .. }),
            "{what}, then good files: {:?}",
            b.outcome(0)
        );
        if bad == "app" {
            assert!(b.report.restart, "{what}: no recovery: {b:?}");
            assert_eq!(reboot(&mut f), "ota_1");
        }
        assert!(region(&f, TONE_PART, served_tone().len()) == served_tone());
    }
}

/// `ota serve DIR --bind 127.0.0.1:0 --quiet`, killed (by its own pid) when dropped.
struct OtaServe {
    child: std::process::Child,
    port: u16,
}

impl OtaServe {
    fn start(dir: &Path) -> OtaServe {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ota"))
            .args(["serve", s(dir), "--bind", "127.0.0.1:0", "--quiet"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ota serve");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        // "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) from DIR"
        let port = loop {
            let l = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("ota serve printed no banner within 20 s");
            if let Some(rest) = l.strip_prefix("Serving HTTP on 127.0.0.1 port ") {
                break rest.split(' ').next().unwrap().parse().unwrap();
            }
        };
        OtaServe { child, port }
    }
}

impl Drop for OtaServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The same list over the embassy driver: ota-net's HTTP client on embassy-net (smoltcp), its
// frames through a simulated link to a user-space gateway that relays to 127.0.0.1.

/// The URL of `file` on a server listening on 127.0.0.1:`port`, as the device reaches it
/// (through the simulated network's gateway).
fn sim_url(port: u16, file: &str) -> String {
    format!("http://{GATEWAY}:{port}/{file}")
}

/// One boot of the Wi-Fi build over the embassy driver on a simulated link `link`, with the
/// firmware's source options:
/// `confirm_boot`, then `list::run` inside `run_with` (the pump beside the service) with
/// embassy-time's clock, as the firmware's `main` does. `meter`: count the heap the list's
/// future allocates while it is polled (see [`Metered`]).
fn sim_boot<F: NorFlash>(
    f: &mut F,
    tone_url: &str,
    app_url: &str,
    link: &str,
    meter: bool,
    events: &mut dyn FnMut(Event),
) -> Result<(ota_core::updater::RunningApp, bool, RunReport), UpdaterError<F::Error>> {
    sim_boot_with(
        f,
        tone_url,
        app_url,
        link,
        SourceOptions::default(),
        meter,
        events,
    )
}

/// [`sim_boot`] with `source` options.
fn sim_boot_with<F: NorFlash>(
    f: &mut F,
    tone_url: &str,
    app_url: &str,
    link: &str,
    source: SourceOptions,
    meter: bool,
    events: &mut dyn FnMut(Event),
) -> Result<(ota_core::updater::RunningApp, bool, RunReport), UpdaterError<F::Error>> {
    let (table, running, confirmed) = confirm_boot(f)?;
    let mut dev = SimDevice::new(LinkSpec::parse(link).unwrap()).unwrap();
    let mut client: HttpClient<_> = HttpClient::new(dev.connector());
    let part = running.partition;
    let fut = run_with(&mut client, async |t| {
        fw_list::run(
            f,
            &table,
            part,
            tone_url,
            app_url,
            source,
            &t,
            &EmbassyClock,
            events,
        )
        .await
    });
    let report = if meter {
        dev.block_on(Metered(Box::pin(fut)))
    } else {
        dev.block_on(fut)
    };
    Ok((running, confirmed, report))
}

#[test]
fn firmware_list_over_embassy_net_installs_the_real_firmware_and_tone_from_ota_serve() {
    // The Wi-Fi build's boots on the emulated ESP32-C3 (its own partitions.csv), the list over
    // the embassy driver and a lossy simulated link, against `ota serve`: the device runs an
    // older app (0.0.1) of the same project; the server offers the firmware's own converted
    // image (its Cargo.toml version) and a tone bin. Boot 1 writes flash_tone and installs
    // the app, `ota device boot` loads it from ota_1, boot 2 confirms it and skips it.
    let Some(elf) = firmware_elf() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (name, version) = (package_field("name"), package_field("version"));
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let real = www.join("esp32c3-ota.bin");
    ok(&[
        "image",
        "from-elf",
        s(&elf),
        "-o",
        s(&real),
        "--chip",
        "esp32c3",
        "--flash-size",
        "4MB",
    ]);
    std::fs::write(www.join("flash_tone.bin"), served_tone()).unwrap();
    let old = dir.path().join("old.bin");
    let mut spec = ImageSpec::new(Chip::Esp32c3, &name, "0.0.1");
    spec.total_size = Some(64 * 1024);
    let mut bytes = Vec::new();
    build_image(&spec, &mut |b: &[u8]| bytes.extend_from_slice(b)).unwrap();
    std::fs::write(&old, &bytes).unwrap();
    let flash = dir.path().join("c3.flash");
    let csv = example_dir().join("partitions.csv");
    ok(&[
        "device",
        "create",
        "--flash",
        s(&flash),
        "--chip",
        "esp32c3",
        "--partitions",
        s(&csv),
        "--app",
        s(&old),
        "--rollback",
    ]);
    let boot = ok(&["device", "boot", "--flash", s(&flash)]);
    assert!(
        boot.contains("Loaded app from partition at offset 0x10000"),
        "{boot}"
    );
    let server = OtaServe::start(&www);
    let (tone_url, app_url) = (
        sim_url(server.port, "flash_tone.bin"),
        sim_url(server.port, "esp32c3-ota.bin"),
    );
    let body = std::fs::read(&real).unwrap();
    let run = |link: &str| {
        let mut f = ota_emu::flash::EmuFlash::open(&flash).unwrap();
        let mut events = Vec::new();
        let r = sim_boot(&mut f, &tone_url, &app_url, link, false, &mut |e| {
            events.push(e)
        })
        .unwrap();
        let mut tone = vec![0u8; served_tone().len()];
        ota_core::flash::read(&mut f, TONE_PART, &mut tone).unwrap();
        (r, tone, events)
    };
    let ((running, confirmed, report), tone, _) = run("loss=2%,seed=7");
    assert_eq!(running.partition.label.as_str(), "ota_0");
    assert!(!confirmed);
    assert!(report.results[0].1.is_success(), "{report:?}");
    assert!(
        report.results[1].1.is_success() && report.restart,
        "{report:?}"
    );
    assert!(
        tone == served_tone(),
        "flash_tone does not hold the served tone bin"
    );
    let boot = ok(&["device", "boot", "--flash", s(&flash)]);
    assert!(
        boot.contains("Loaded app from partition at offset 0x110000"),
        "{boot}"
    );
    assert!(
        boot.contains(&format!("App version:      {version}")),
        "{boot}"
    );
    {
        let mut f = ota_emu::flash::EmuFlash::open(&flash).unwrap();
        let mut slot = vec![0u8; body.len()];
        ota_core::flash::read(&mut f, 0x110000, &mut slot).unwrap();
        assert!(slot == body, "ota_1 does not hold the served firmware");
    }
    let ((running, confirmed, report), _, _) = run("");
    assert_eq!(running.partition.label.as_str(), "ota_1");
    assert_eq!(running.state, Some(OtaState::PendingVerify));
    assert!(confirmed && !report.restart, "{report:?}");
    assert!(
        matches!(report.results[1].1, Outcome::Skipped { .. }),
        "{report:?}"
    );
    let boot = ok(&["device", "boot", "--flash", s(&flash)]);
    assert!(
        boot.contains("Loaded app from partition at offset 0x110000"),
        "{boot}"
    );
    // A 404 from the real server: the item fails naming the status; nothing changes.
    let before = std::fs::read(&flash).unwrap();
    let mut f = ota_emu::flash::EmuFlash::open(&flash).unwrap();
    let none = sim_url(server.port, "none.bin");
    let (_, _, report) = sim_boot(&mut f, &none, &none, "", false, &mut |_| {}).unwrap();
    drop(f);
    for (_, o) in &report.results {
        match o {
            Outcome::Failed { message, .. } => assert!(message.contains("404"), "{message}"),
            o => panic!("a 404 gave {o:?}"),
        }
    }
    assert!(
        std::fs::read(&flash).unwrap() == before,
        "a 404 wrote to flash"
    );
}

#[test]
fn firmware_list_over_embassy_net_resumes_a_dropped_download_with_range() {
    use ota_testsrv::{Faults, FlakyServer};
    let tone = FlakyServer::start(served_tone().to_vec(), Faults::default()).unwrap();
    let app = FlakyServer::start(
        served_v2().to_vec(),
        Faults {
            drop_at: vec![40_000],
            ..Faults::default()
        },
    )
    .unwrap();
    let mut f = c3_device();
    assert_eq!(reboot(&mut f), "ota_0");
    let mut events = Vec::new();
    let (_, _, report) = sim_boot(
        &mut f,
        &sim_url(tone.addr().port(), "flash_tone.bin"),
        &sim_url(app.addr().port(), "esp32c3-ota.bin"),
        "seed=3",
        false,
        &mut |e| events.push(e),
    )
    .unwrap();
    assert!(report.restart, "{report:?}");
    assert!(region(&f, 0x110000, served_v2().len()) == served_v2());
    let reqs = app.requests();
    assert!(reqs.len() >= 2, "{reqs:?}");
    let again = reqs.last().unwrap();
    assert!(
        again.range_start.is_some_and(|s| s > 0 && s <= 40_000),
        "the second request did not continue with a Range: {reqs:?}"
    );
    let refetched = 40_000 - again.range_start.unwrap();
    println!(
        "dropped at 40000: resumed from {:?}, {refetched} bytes fetched again",
        again.range_start
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Resume { id: 1, .. })),
        "no Resume event: {events:?}"
    );
    assert_eq!(reboot(&mut f), "ota_1");
}

#[test]
fn firmware_list_over_embassy_net_gives_up_on_a_misbehaving_server_and_keeps_the_running_app() {
    use ota_testsrv::{Faults, FlakyServer, Stall};
    // The app's server misbehaves (the tone's is good); every network wait within 800 ms here
    // (the firmware: 5 s), the service's default retries and backoff.
    let opts = SourceOptions {
        timeout: Duration::from_millis(800),
        ..SourceOptions::default()
    };
    let good = Faults::default;
    // (what, faults, installed in the end, what a failure says). A `Content-Length` beyond the
    // body: the body is short, the item reconnects for the rest with `Range`, finds the file's
    // real end and installs the image (its SHA-256 verified); one short of the image: the 200's
    // body stops early, the rest comes with `Range` (the server lies on 200 answers only).
    let cases: Vec<(&str, Faults, bool, &str)> = vec![
        (
            "a server that never answers",
            Faults {
                never_answer: true,
                ..good()
            },
            false,
            "timed out",
        ),
        (
            "a Content-Length 100 bytes beyond the body",
            Faults {
                content_length_delta: 100,
                ..good()
            },
            true,
            "",
        ),
        (
            "a Content-Length 100 bytes short of the image",
            Faults {
                content_length_delta: -100,
                ..good()
            },
            true,
            "",
        ),
        (
            "a server that answers 503 every time",
            Faults {
                status_first: Some((503, 64)),
                ..good()
            },
            false,
            "503",
        ),
        (
            "two 503 answers, then the file",
            Faults {
                status_first: Some((503, 2)),
                ..good()
            },
            true,
            "",
        ),
        (
            "a body that stalls 3 s at byte 30000",
            Faults {
                stall: Some(Stall {
                    at: 30_000,
                    duration: Duration::from_secs(3),
                }),
                ..good()
            },
            true,
            "",
        ),
    ];
    for (what, faults, installs, says) in cases {
        let tone = FlakyServer::start(served_tone().to_vec(), good()).unwrap();
        let app = FlakyServer::start(served_v2().to_vec(), faults).unwrap();
        let mut f = c3_device();
        assert_eq!(reboot(&mut f), "ota_0");
        let started = std::time::Instant::now();
        let (_, _, report) = sim_boot_with(
            &mut f,
            &sim_url(tone.addr().port(), "flash_tone.bin"),
            &sim_url(app.addr().port(), "esp32c3-ota.bin"),
            "",
            opts.clone(),
            false,
            &mut |_| {},
        )
        .unwrap();
        let took = started.elapsed();
        let app_out = &report.results[1].1;
        println!(
            "{what}: {app_out:?} ({} ms, {} requests)",
            took.as_millis(),
            app.requests().len()
        );
        assert!(
            report.results[0].1.is_success(),
            "{what}: the tone item: {report:?}"
        );
        assert!(
            took < Duration::from_secs(20),
            "{what}: not given up within its deadlines"
        );
        if installs {
            assert!(
                app_out.is_success() && report.restart,
                "{what}: {app_out:?}"
            );
            assert!(
                region(&f, 0x110000, served_v2().len()) == served_v2(),
                "{what}"
            );
            assert_eq!(reboot(&mut f), "ota_1");
        } else {
            match app_out {
                Outcome::Failed { message, .. } => {
                    assert!(
                        message.contains(says),
                        "{what}: {message:?} does not say {says:?}"
                    )
                }
                o => panic!("{what}: {o:?}"),
            }
            assert!(!report.restart);
            assert_eq!(reboot(&mut f), "ota_0", "{what}: otadata was switched");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The service's heap on the PC: a counting global allocator, per thread, switched on while the
// list's future (service, embassy driver and its pump, ota-net's client) is polled.

struct CountingAlloc;

thread_local! {
    /// (counting, bytes now, high-water) of this thread.
    static METER: std::cell::Cell<(bool, usize, usize)> = const { std::cell::Cell::new((false, 0, 0)) };
}

// SAFETY: every call goes to the system allocator unchanged; the bookkeeping touches only a
// const-initialised thread local (no allocation, no destructor).
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's layout contract is passed on.
        let p = unsafe { std::alloc::System.alloc(l) };
        if !p.is_null() {
            let _ = METER.try_with(|m| {
                let (on, now, peak) = m.get();
                if on {
                    m.set((on, now + l.size(), peak.max(now + l.size())));
                }
            });
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: `p` came from `alloc` above with this layout.
        unsafe { std::alloc::System.dealloc(p, l) };
        let _ = METER.try_with(|m| {
            let (on, now, peak) = m.get();
            if on {
                m.set((on, now.saturating_sub(l.size()), peak));
            }
        });
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Counts this thread's heap while `0` is polled (not the simulated network's own polls).
struct Metered<'a, T>(std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>);

impl<T> std::future::Future for Metered<'_, T> {
    type Output = T;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        METER.with(|m| {
            let (_, now, peak) = m.get();
            m.set((true, now, peak))
        });
        let r = self.0.as_mut().poll(cx);
        METER.with(|m| {
            let (_, now, peak) = m.get();
            m.set((false, now, peak))
        });
        r
    }
}

/// The heap esp-radio and the IP stack had before the service came (the firmware's sizes then:
/// 64 KiB reclaimed + 36 KiB, esp-radio's examples'): the service's part comes on top.
const HEAP_BEFORE_SERVICE: usize = (64 + 36) * 1024;
/// The margin on the measured high-water: 3/2 (RISC-V 32-bit pointers make the chip's heap
/// smaller than x86_64's for the same list; the margin covers the allocator's own overhead and
/// fragmentation, esp-alloc's TLSF).
const HEAP_MARGIN: (usize, usize) = (3, 2);

/// `HEAP_RECLAIMED + HEAP_MAIN` of the firmware's `main.rs` (`N * 1024` forms).
fn firmware_heap() -> usize {
    let main = std::fs::read_to_string(example_dir().join("src/main.rs")).unwrap();
    [
        "const HEAP_RECLAIMED: usize = ",
        "const HEAP_MAIN: usize = ",
    ]
    .iter()
    .map(|prefix| {
        let line = main
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in main.rs"));
        let expr = line.trim_end_matches(';');
        expr.split('*')
            .map(|n| n.trim().parse::<usize>().unwrap())
            .product::<usize>()
    })
    .sum()
}

#[test]
fn firmware_c3_service_heap_high_water_fits_the_heap() {
    use ota_testsrv::{Faults, FlakyServer};
    // The list as on the chip (tone bin, app image of 96 KiB), once clean and once with the
    // connection dropped in the app download (the reconnect and resume path).
    let mut peaks = Vec::new();
    for drop_at in [vec![], vec![50_000u64]] {
        let tone = FlakyServer::start(served_tone().to_vec(), Faults::default()).unwrap();
        let app = FlakyServer::start(
            served_v2().to_vec(),
            Faults {
                drop_at: drop_at.clone(),
                ..Faults::default()
            },
        )
        .unwrap();
        let mut f = c3_device();
        reboot(&mut f);
        METER.with(|m| m.set((false, 0, 0)));
        let (_, _, report) = sim_boot(
            &mut f,
            &sim_url(tone.addr().port(), "flash_tone.bin"),
            &sim_url(app.addr().port(), "esp32c3-ota.bin"),
            "",
            true,
            // The firmware prints each event and keeps none.
            &mut |e| drop(std::hint::black_box(e)),
        )
        .unwrap();
        assert!(report.restart, "{report:?}");
        peaks.push(METER.with(|m| m.get().2));
    }
    let peak = *peaks.iter().max().unwrap();
    let need = HEAP_BEFORE_SERVICE + peak * HEAP_MARGIN.0 / HEAP_MARGIN.1;
    let heap = firmware_heap();
    println!(
        "service heap high-water (host run, x86_64, the list over the embassy driver): clean \
         {} bytes, with a reconnect {} bytes; the firmware's heap {heap} bytes >= {} \
         (esp-radio + IP stack) + 3/2 x {peak} = {need}",
        peaks[0], peaks[1], HEAP_BEFORE_SERVICE
    );
    assert!(peak > 4096, "{peak} bytes: the meter counted nothing");
    assert!(
        heap >= need,
        "the firmware's heap ({heap} bytes) is smaller than {need}: raise HEAP_MAIN"
    );
}

#[test]
fn firmware_config_accepts_good_settings_and_refuses_bad_ones_at_build_time() {
    // `config::check` runs while the firmware compiles (a const assertion): a bad environment
    // variable stops the build with the message that names it.
    let ok = |ssid, pass, url| fw_config::check(ssid, pass, url);
    assert_eq!(
        ok(
            fw_config::WIFI_SSID,
            fw_config::WIFI_PASSWORD,
            fw_config::UPDATE_URL
        ),
        Ok(())
    );
    for url in [
        "http://192.168.0.3:8080/esp32c3-ota.bin",
        "http://ota.example.com/fw/app.bin",
        "http://h:1/",
        "http://h:65535/a?b=c",
    ] {
        assert_eq!(ok("net", "", url), Ok(()), "{url}");
    }
    let long_url = format!("http://h/{}", "a".repeat(fw_config::URL_MAX));
    let cases: [(&str, &str, &str, &str); 13] = [
        ("", "mypassword", "http://h/a", "OTA_WIFI_SSID"),
        (
            "0123456789abcdef0123456789abcdef!",
            "",
            "http://h/a",
            "OTA_WIFI_SSID",
        ),
        ("net", "short", "http://h/a", "OTA_WIFI_PASSWORD"),
        ("net", &"p".repeat(64), "http://h/a", "OTA_WIFI_PASSWORD"),
        ("net", "", "https://h/a", "http://"),
        ("net", "", "ftp://h/a", "http://"),
        ("net", "", "http:///a", "no host"),
        ("net", "", "http://h", "path"),
        ("net", "", "http://h:0/a", "port"),
        ("net", "", "http://h:65536/a", "port"),
        ("net", "", "http://h:/a", "port"),
        ("net", "", "http://h/a b", "space"),
        ("net", "", &long_url, "256"),
    ];
    for (ssid, pass, url, says) in cases {
        let e = ok(ssid, pass, url).expect_err(url);
        assert!(
            e.contains(says),
            "({ssid:?}, {pass:?}, {url:?}): {e:?} does not say {says:?}"
        );
        // The tone URL has the same rules, and its messages name its own variable.
        if ssid == "net" && pass.is_empty() {
            let e = fw_config::check_tone_url(url).expect_err(url);
            assert!(
                e.contains(says) && e.starts_with("OTA_TONE_URL"),
                "tone {url:?}: {e:?}"
            );
        }
    }
    assert_eq!(fw_config::check_tone_url(fw_config::TONE_URL), Ok(()));
    assert_eq!(
        fw_config::check_tone_url("http://192.168.0.3:8080/flash_tone.bin"),
        Ok(())
    );
}
