//! The ESP32-C3 firmware example (`examples/esp32c3-ota`): its image boots on the emulated
//! device, it links the Wi-Fi and IP stacks, its footprint (sections, the shares of ota-core,
//! esp-radio and embassy-net, the heap), and the stack its update path needs. The firmware's
//! update logic (`examples/esp32c3-ota/src/update.rs`: the data-partition source and the
//! installer the HTTP download feeds) is compiled into this test as it is, and run against a
//! RAM flash with esp-storage's granularity.
//!
//! The tests that need the firmware ELF say `SKIP: ...` when it has not been built;
//! `scripts/test.sh` builds it first (`cargo build --release` in the example's folder).

mod common;

#[path = "../examples/esp32c3-ota/src/update.rs"]
#[allow(dead_code)]
mod fw_update;

// The firmware's compiled-in settings (Wi-Fi network, update URL), built here with the same
// environment as the firmware's build.
#[path = "../examples/esp32c3-ota/src/config.rs"]
#[allow(dead_code)]
mod fw_config;

// The firmware's HTTP download (reqwless), run here over std::net; it names the update logic
// `crate::update`, as in the firmware.
#[path = "../examples/esp32c3-ota/src/http.rs"]
mod fw_http;
use fw_update as update;

use std::path::{Path, PathBuf};
use std::process::Command;

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
fn firmware_c3_links_wifi_ip_stack_http_client_and_compiled_in_url() {
    // The build CI makes is the Wi-Fi one: esp-radio and its blobs, embassy-net on smoltcp
    // with DHCP and DNS, reqwless, a heap, and the compiled-in network and URL.
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
        "reqwless",
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
        has(&|x| x.name.contains("embassy_net") && x.name.contains("DnsSocket")),
        "embassy-net's DNS socket is not linked"
    );
    assert!(
        has(&|x| x.name.contains("esp32c3_ota") && x.name.contains("8download")),
        "the firmware's net::download is not in the image"
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
        find(fw_config::WIFI_SSID),
        "the SSID {:?} is not in .rodata (built with another OTA_WIFI_SSID?)",
        fw_config::WIFI_SSID
    );
    println!(
        "Wi-Fi build: joins {:?}, downloads {}; heap {heap:?}",
        fw_config::WIFI_SSID,
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
        "embassy-net share: {net} bytes ({:.1}%: embassy_net {}, smoltcp {}); reqwless {}; \
         esp-rtos + embassy-executor {rtos}",
        pct(net),
        share("embassy_net"),
        share("smoltcp"),
        share("reqwless")
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
/// `ota_image`, otadata erased.
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
        fn limited_download(f: &mut CutFlash) -> BootResult {
            on_limited_stack(f, download_boot)
        }
        assert!(size > 0);
        // Both sources: the data partition's `on_boot`, and the Wi-Fi build's boot (confirm,
        // then the installer fed with the body).
        firmware_life(Some(STACK_PROBE_CUT), limited);
        firmware_life(Some(STACK_PROBE_CUT), limited_download);
        return;
    }
    let probe = |size: usize| -> bool {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "firmware_update_path_stack_need", "--nocapture"])
            .env("FW_STACK_PROBE", size.to_string())
            .output()
            .unwrap()
            .status
            .success()
    };
    let (mut lo, mut hi) = (4096usize, 1 << 20);
    assert!(
        probe(hi),
        "the update path fails even with a {hi}-byte stack"
    );
    assert!(
        !probe(lo),
        "a {lo}-byte stack passed: the probe measures nothing"
    );
    while hi - lo > 256 {
        let mid = (lo + hi) / 2 / 256 * 256;
        if probe(mid) {
            hi = mid
        } else {
            lo = mid
        }
    }
    println!(
        "stack: the firmware's boots (install cut by a power cut, install, confirm; from the data \
         partition and from a download; the table buffer included) need {hi} bytes of host thread \
         stack ({} build, x86_64; RISC-V use differs)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

// ---------------------------------------------------------------------------------------------
// The Wi-Fi build's update path: an HTTP body, chunk by chunk, into the firmware's `Installer`.

/// What the firmware's `net::download` does with a 200 response, over a body held in memory:
/// `begin` with the `Content-Length` (`content_length`), then the body in `chunk`-byte pieces
/// until its end or `Flow::NotNewer`. Returns the bytes delivered.
fn serve_body<S: fw_update::BodySink>(
    body: &[u8],
    content_length: Option<u32>,
    chunk: usize,
    sink: &mut S,
) -> Result<u64, S::Error> {
    sink.begin(content_length)?;
    let mut sent = 0u64;
    for piece in body.chunks(chunk) {
        sent += piece.len() as u64;
        if sink.chunk(piece)? == fw_update::Flow::NotNewer {
            break;
        }
    }
    Ok(sent)
}

/// One boot of the Wi-Fi build (`main` with the `wifi` feature): the updater on the table,
/// confirm, then the download of `body` into an `Installer` and its `finish`. Also returns the
/// body bytes delivered.
fn download_boot_with(
    f: &mut CutFlash,
    body: &[u8],
    content_length: Option<u32>,
    chunk: usize,
) -> (BootResult, u64) {
    let mut buf = fw_update::Aligned([0u8; fw_update::TABLE_BUF_LEN]);
    let mut sent = 0;
    let result = (|| {
        let mut ota = ota_core::OtaUpdater::new(f, fw_update::CONFIG, &mut buf.0)?;
        let (running, confirmed) = fw_update::confirm(&mut ota)?;
        let mut installer = fw_update::Installer::new(&mut ota);
        sent = serve_body(body, content_length, chunk, &mut installer)?;
        let installed = installer.finish()?;
        Ok(fw_update::BootReport {
            running,
            confirmed,
            installed,
        })
    })();
    (result, sent)
}

/// The server's image in the download tests: v2, while the device runs v1.
fn served_v2() -> &'static [u8] {
    static V2: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    V2.get_or_init(|| c3_image("v2"))
}

/// A boot of the Wi-Fi build against a server with v2, TCP-segment-sized chunks.
fn download_boot(f: &mut CutFlash) -> BootResult {
    let body = served_v2();
    download_boot_with(f, body, Some(body.len() as u32), 1460).0
}

#[test]
fn firmware_download_path_installs_newer_confirms_and_survives_every_power_cut() {
    // Boot 1 downloads v2 and installs it, boot 2 confirms it and finds v2 not newer, boot 3
    // does nothing (`firmware_life`).
    assert_eq!(firmware_life(None, download_boot), 2);
    let ops = {
        let mut f = c3_device();
        reboot(&mut f);
        f.budget = Some(usize::MAX);
        download_boot(&mut f).unwrap();
        usize::MAX - f.budget.unwrap()
    };
    assert!(ops > 20, "suspiciously few flash operations: {ops}");
    let mut extra = 0;
    for cut in 0..ops {
        extra += firmware_life(Some(cut), download_boot) - 2;
    }
    println!("download path: power cut at each of {ops} flash operations: every run recovered ({extra} extra boots in all)");
    assert!(extra > 0, "no cut interrupted the update");
}

#[test]
fn firmware_download_path_installs_the_same_bytes_whatever_the_chunking() {
    let body = served_v2();
    let len = body.len() as u32;
    // 1 byte at a time, around the 289-byte prefix the version check needs, odd sizes that
    // break every word and sector boundary, a whole sector, the whole body; with and without
    // Content-Length (a chunked or read-to-close response).
    for chunk in [1, 3, 288, 289, 290, 1000, 1460, 4096, 4097, body.len()] {
        for content_length in [Some(len), None] {
            let mut f = c3_device();
            assert_eq!(reboot(&mut f), "ota_0");
            let (r, sent) = download_boot_with(&mut f, body, content_length, chunk);
            let r = r.unwrap_or_else(|e| panic!("chunk {chunk}, {content_length:?}: {e}"));
            let c = r.installed.expect("v2 not installed");
            assert_eq!(c.partition.label.as_str(), "ota_1");
            assert_eq!(sent, body.len() as u64);
            let slot = c.partition.offset as usize;
            assert!(
                f.data[slot..slot + body.len()] == *body,
                "chunk {chunk}: the slot does not hold the served image"
            );
            assert_eq!(reboot(&mut f), "ota_1", "chunk {chunk}");
        }
    }
}

#[test]
fn firmware_download_path_stops_at_the_descriptor_when_not_newer_and_writes_nothing() {
    // The device runs v2 (confirmed); servers offer the same and an older version.
    for (served, why) in [("v2", "the same"), ("v1.9", "an older")] {
        let mut f = c3_device_with("v2", "v1");
        assert_eq!(reboot(&mut f), "ota_0");
        let body = c3_image(served);
        let before = f.data.clone();
        let (r, sent) = download_boot_with(&mut f, &body, Some(body.len() as u32), 64);
        let r = r.unwrap_or_else(|e| panic!("{why} version: {e}"));
        assert!(r.installed.is_none(), "{why} version was installed");
        // Stopped as soon as the header and descriptor (289 bytes) were in.
        assert!(
            sent <= 320,
            "{why} version: {sent} bytes taken before stopping"
        );
        let changed: Vec<usize> = (0..f.data.len())
            .step_by(SECTOR)
            .filter(|&s| f.data[s..s + SECTOR] != before[s..s + SECTOR])
            .collect();
        assert!(
            changed.iter().all(|&s| !(0x110000..0x210000).contains(&s)),
            "{why} version: the ota_1 slot was written: sectors {changed:x?}"
        );
        assert_eq!(reboot(&mut f), "ota_0");
        // Booting again changes nothing at all.
        let before = f.data.clone();
        let (r, _) = download_boot_with(&mut f, &body, Some(body.len() as u32), 64);
        assert!(r.unwrap().installed.is_none());
        assert!(
            f.data == before,
            "{why} version: a boot that installs nothing wrote to flash"
        );
    }
}

#[test]
fn firmware_download_path_refuses_bad_bodies_and_keeps_the_running_app() {
    let v2 = served_v2();
    let len = v2.len() as u32;
    let mut other_chip = ImageSpec::new(Chip::Esp32s3, "esp32c3-ota", "v2");
    other_chip.total_size = Some(96 * 1024);
    let mut s3 = Vec::new();
    build_image(&other_chip, &mut |b: &[u8]| s3.extend_from_slice(b)).unwrap();
    let mut corrupt = v2.to_vec();
    corrupt[50_000] ^= 0x40;
    let mut not_an_image = v2.to_vec();
    not_an_image[0] = b'<'; // an HTML error page served as 200
                            // (what, body, Content-Length, facts the error must name: expected and found)
    let short = format!("{}", len - 100);
    type Case<'a> = (&'a str, &'a [u8], Option<u32>, [&'a str; 2]);
    let cases: [Case; 6] = [
        (
            "body shorter than its Content-Length",
            &v2[..v2.len() - 100],
            Some(len),
            [&format!("{len}"), &short],
        ),
        (
            "body cut mid-image, no Content-Length",
            &v2[..40_000],
            None,
            ["40000", "truncated"],
        ),
        (
            "Content-Length beyond the slot",
            v2,
            Some(0x100000 + 16),
            ["1048592", "ota_1"],
        ),
        (
            "an ESP32-S3 image",
            &s3,
            Some(s3.len() as u32),
            ["ESP32-S3", "ESP32-C3"],
        ),
        (
            "a flipped bit in a segment",
            &corrupt,
            Some(len),
            ["hecksum", "0x"],
        ),
        (
            "not an app image",
            &not_an_image,
            Some(len),
            ["0x3c", "0xe9"],
        ),
    ];
    for (what, body, content_length, facts) in cases {
        let mut f = c3_device();
        assert_eq!(reboot(&mut f), "ota_0");
        let (r, _) = download_boot_with(&mut f, body, content_length, 1460);
        let e = match r {
            Ok(r) => panic!("{what}: accepted ({r:?})"),
            Err(e) => e.to_string(),
        };
        println!("{what}: {e}");
        for fact in facts {
            assert!(
                e.contains(fact),
                "{what}: the error does not say {fact:?}: {e}"
            );
        }
        assert_eq!(reboot(&mut f), "ota_0", "{what}: otadata was switched");
        // The next boot, against a good server, still installs v2.
        let (r, _) = download_boot_with(&mut f, v2, Some(len), 1460);
        assert!(r.unwrap().installed.is_some(), "{what}: no recovery");
    }
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
    }
}

#[test]
fn firmware_c3_download_path_installs_the_real_firmware_on_the_emulated_device() {
    // The Wi-Fi build's boots on the emulated ESP32-C3: the device runs an older app (0.0.1)
    // of the same project; the "server" offers the firmware's own converted image (its
    // Cargo.toml version). Boot 1 downloads and installs it, `ota device boot` loads it from
    // ota_1, boot 2 confirms it and stops the next download at the descriptor (same version).
    let Some(elf) = firmware_elf() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (name, version) = (package_field("name"), package_field("version"));
    let real = dir.path().join("fw.bin");
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
    let body = std::fs::read(&real).unwrap();
    let download_boot = || {
        let mut f = ota_emu::flash::EmuFlash::open(&flash).unwrap();
        let mut buf = fw_update::Aligned([0u8; fw_update::TABLE_BUF_LEN]);
        let mut ota = ota_core::OtaUpdater::new(&mut f, fw_update::CONFIG, &mut buf.0).unwrap();
        let (running, confirmed) = fw_update::confirm(&mut ota).unwrap();
        let mut installer = fw_update::Installer::new(&mut ota);
        let sent = serve_body(&body, Some(body.len() as u32), 1460, &mut installer).unwrap();
        (running, confirmed, installer.finish().unwrap(), sent)
    };
    let (running, confirmed, installed, sent) = download_boot();
    assert_eq!(running.partition.label.as_str(), "ota_0");
    assert!(!confirmed);
    let installed = installed.expect("the newer firmware was not installed");
    assert_eq!(installed.partition.label.as_str(), "ota_1");
    assert_eq!(sent, body.len() as u64);
    let boot = ok(&["device", "boot", "--flash", s(&flash)]);
    assert!(
        boot.contains("Loaded app from partition at offset 0x110000"),
        "{boot}"
    );
    assert!(
        boot.contains(&format!("App version:      {version}")),
        "{boot}"
    );
    let (running, confirmed, installed, sent) = download_boot();
    assert_eq!(running.partition.label.as_str(), "ota_1");
    assert_eq!(running.state, Some(OtaState::PendingVerify));
    assert!(confirmed && installed.is_none());
    assert!(
        sent < 2 * 1460,
        "{sent} bytes fetched of a version not newer"
    );
    let boot = ok(&["device", "boot", "--flash", s(&flash)]);
    assert!(
        boot.contains("Loaded app from partition at offset 0x110000"),
        "{boot}"
    );
}

// ---------------------------------------------------------------------------------------------
// The firmware's HTTP download (`src/http.rs`, reqwless) on the PC, against real servers.

/// What embassy-net gives the firmware, on the PC: TCP connections (std::net) whose reads and
/// writes have a deadline (the firmware's `net::IDLE_TIMEOUT`; shorter here), and names
/// resolved by the system.
struct StdNet {
    idle: Duration,
}

struct StdConn(std::net::TcpStream);

impl embedded_io_async::ErrorType for StdConn {
    type Error = std::io::Error;
}

impl embedded_io_async::Read for StdConn {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, std::io::Error> {
        std::io::Read::read(&mut self.0, buf)
    }
}

impl embedded_io_async::Write for StdConn {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, std::io::Error> {
        std::io::Write::write(&mut self.0, buf)
    }
    async fn flush(&mut self) -> Result<(), std::io::Error> {
        std::io::Write::flush(&mut self.0)
    }
}

impl embedded_nal_async::TcpConnect for StdNet {
    type Error = std::io::Error;
    type Connection<'a> = StdConn;

    async fn connect(&self, remote: std::net::SocketAddr) -> Result<StdConn, std::io::Error> {
        let s = std::net::TcpStream::connect_timeout(&remote, self.idle)?;
        s.set_read_timeout(Some(self.idle))?;
        s.set_write_timeout(Some(self.idle))?;
        Ok(StdConn(s))
    }
}

impl embedded_nal_async::Dns for StdNet {
    type Error = std::io::Error;

    async fn get_host_by_name(
        &self,
        host: &str,
        addr_type: embedded_nal_async::AddrType,
    ) -> Result<std::net::IpAddr, std::io::Error> {
        use embedded_nal_async::AddrType;
        use std::net::ToSocketAddrs;
        (host, 0)
            .to_socket_addrs()?
            .map(|a| a.ip())
            .find(|ip| match addr_type {
                AddrType::IPv4 => ip.is_ipv4(),
                AddrType::IPv6 => ip.is_ipv6(),
                AddrType::Either => true,
            })
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, host.to_string()))
    }

    async fn get_host_by_address(
        &self,
        _addr: std::net::IpAddr,
        _result: &mut [u8],
    ) -> Result<usize, std::io::Error> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Run a future whose I/O blocks (StdNet's): it completes within one poll; a future still
/// pending after many polls waits for something nothing here wakes.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..1_000_000 {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
    panic!("the download future never completed");
}

use std::time::Duration;

/// Deadline of each network wait in these tests.
const TEST_IDLE: Duration = Duration::from_secs(1);

/// One attempt of the Wi-Fi build's boot (its `main`): open the updater, confirm, download
/// `url` into an `Installer`; on a download error abort the update (otadata untouched), else
/// `finish`. Returns the report and the body bytes delivered, or the error as the firmware
/// prints it.
fn http_boot(f: &mut CutFlash, url: &str) -> Result<(fw_update::BootReport, u64), String> {
    let mut buf = fw_update::Aligned([0u8; fw_update::TABLE_BUF_LEN]);
    let mut ota =
        ota_core::OtaUpdater::new(f, fw_update::CONFIG, &mut buf.0).map_err(|e| e.to_string())?;
    let (running, confirmed) = fw_update::confirm(&mut ota).map_err(|e| e.to_string())?;
    let net = StdNet { idle: TEST_IDLE };
    let mut installer = fw_update::Installer::new(&mut ota);
    match block_on(fw_http::download(&net, &net, url, &mut installer)) {
        Ok(bytes) => {
            let installed = installer.finish().map_err(|e| e.to_string())?;
            Ok((
                fw_update::BootReport {
                    running,
                    confirmed,
                    installed,
                },
                bytes,
            ))
        }
        Err(e) => {
            installer.abort();
            Err(e.to_string())
        }
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

#[test]
fn firmware_http_download_from_ota_serve_installs_newer_then_stops_at_the_same() {
    // The firmware's own download code (reqwless) against `ota serve`, by address and by
    // name: boot 1 installs v2 over v1, boot 2 confirms it and stops the download of v2 at
    // its descriptor.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("esp32c3-ota.bin"), served_v2()).unwrap();
    let server = OtaServe::start(dir.path());
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("http://{host}:{}/esp32c3-ota.bin", server.port);
        let mut f = c3_device();
        assert_eq!(reboot(&mut f), "ota_0");
        let (r, bytes) = http_boot(&mut f, &url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let c = r.installed.expect("v2 not installed");
        assert_eq!(bytes, served_v2().len() as u64);
        let slot = c.partition.offset as usize;
        assert!(f.data[slot..slot + served_v2().len()] == *served_v2());
        assert_eq!(reboot(&mut f), "ota_1");
        let (r, bytes) = http_boot(&mut f, &url).unwrap();
        assert!(r.confirmed && r.installed.is_none(), "{r:?}");
        assert!(
            bytes < 4096,
            "{bytes} body bytes read of an image not newer"
        );
        assert_eq!(reboot(&mut f), "ota_1");
    }
    // 404 from the real server: an error naming the status; nothing changes.
    let mut f = c3_device();
    reboot(&mut f);
    let before = f.data.clone();
    let e = http_boot(
        &mut f,
        &format!("http://127.0.0.1:{}/none.bin", server.port),
    )
    .unwrap_err();
    assert!(e.contains("404"), "{e}");
    assert!(f.data == before, "a 404 wrote to flash");
}

#[test]
fn firmware_http_download_refuses_a_misbehaving_server_and_keeps_the_running_app() {
    use ota_testsrv::{Faults, FlakyServer, Stall};
    let v2 = served_v2().to_vec();
    let good = || Faults::default();
    // (what, faults, what the error must say)
    let cases: Vec<(&str, Faults, &str)> = vec![
        (
            "404",
            Faults {
                status_first: Some((404, 1)),
                ..good()
            },
            "404",
        ),
        (
            "a redirect (not followed)",
            Faults {
                redirect_to: Some("http://127.0.0.1:1/x".into()),
                ..good()
            },
            "302",
        ),
        (
            "the connection dropped mid-body",
            Faults {
                drop_at: vec![40_000],
                ..good()
            },
            "after 40000 of the 98304 body bytes",
        ),
        (
            "a Content-Length 100 bytes longer than the body",
            Faults {
                content_length_delta: 100,
                ..good()
            },
            "after 98304 of the 98404 body bytes",
        ),
        (
            "a Content-Length 100 bytes shorter than the image",
            Faults {
                content_length_delta: -100,
                ..good()
            },
            "truncated at offset 98204",
        ),
        (
            "a server that never answers",
            Faults {
                never_answer: true,
                ..good()
            },
            "reading the response head failed",
        ),
        (
            "a body that stalls past the deadline",
            Faults {
                stall: Some(Stall {
                    at: 30_000,
                    duration: Duration::from_secs(3),
                }),
                ..good()
            },
            "reading the body at byte 30",
        ),
    ];
    for (what, faults, says) in cases {
        let server = FlakyServer::start(v2.clone(), faults).unwrap();
        let mut f = c3_device();
        assert_eq!(reboot(&mut f), "ota_0");
        let started = std::time::Instant::now();
        let e = match http_boot(&mut f, &server.url("esp32c3-ota.bin")) {
            Ok((r, n)) => panic!("{what}: accepted ({n} bytes, {r:?})"),
            Err(e) => e,
        };
        println!("{what}: {e} ({} ms)", started.elapsed().as_millis());
        assert!(e.contains(says), "{what}: {e:?} does not say {says:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: the download did not give up within its deadlines"
        );
        assert_eq!(reboot(&mut f), "ota_0", "{what}: otadata was switched");
        // The next attempt, against a good server, installs (the aborted update left the
        // updater ready for another).
        let ok = FlakyServer::start(v2.clone(), good()).unwrap();
        let (r, _) = http_boot(&mut f, &ok.url("esp32c3-ota.bin"))
            .unwrap_or_else(|e| panic!("{what}, then a good server: {e}"));
        assert!(r.installed.is_some(), "{what}: no recovery");
        assert_eq!(reboot(&mut f), "ota_1");
    }
    // A head trickled a byte at a time is slow, not wrong.
    let slow = FlakyServer::start(
        v2.clone(),
        Faults {
            trickle_head: Some(Duration::from_millis(1)),
            ..good()
        },
    )
    .unwrap();
    let mut f = c3_device();
    reboot(&mut f);
    let (r, _) = http_boot(&mut f, &slow.url("esp32c3-ota.bin")).unwrap();
    assert!(r.installed.is_some());
}
