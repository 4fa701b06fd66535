//! The ESP32-C3 firmware example (`examples/esp32c3-ota`): its image boots on the emulated
//! device, its footprint (sections, the share from ota-core), and the stack its update path
//! needs. The firmware's update logic (`examples/esp32c3-ota/src/update.rs`) is compiled into
//! this test as it is, and run against a RAM flash with esp-storage's granularity.
//!
//! The tests that need the firmware ELF say `SKIP: ...` when it has not been built;
//! `scripts/test.sh` builds it first (`cargo build --release` in the example's folder).

mod common;

#[path = "../examples/esp32c3-ota/src/update.rs"]
#[allow(dead_code)]
mod fw_update;

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

    // Symbols by crate (function and object sizes from .symtab).
    let symtab = secs.iter().find(|x| x.kind == SHT_SYMTAB).expect(".symtab");
    let strtab = &secs[symtab.link as usize];
    let mut by_crate: std::collections::BTreeMap<String, u64> = Default::default();
    let mut total = 0u64;
    for e in elf[symtab.offset as usize..(symtab.offset + symtab.size) as usize].chunks_exact(16) {
        let (name, size, info) = (u32_at(e, 0), u32_at(e, 8), e[12]);
        if size == 0 || !matches!(info & 0xF, 1 | 2) {
            continue; // only OBJECT and FUNC symbols
        }
        let name = cstr_at(&elf, (strtab.offset + name) as usize);
        let krate = match crate_of(&name) {
            Some(k) => k,
            None if name == "main" => {
                "main (the firmware's glue and what LTO inlined into it)".into()
            }
            None => "(not Rust-mangled)".into(),
        };
        *by_crate.entry(krate).or_default() += size as u64;
        total += size as u64;
    }
    let ota_core = by_crate.get("ota_core").copied().unwrap_or(0);
    let mut top: Vec<_> = by_crate.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    println!("symbol bytes by crate (of {total} in sized symbols):");
    for (k, v) in top.iter().take(10) {
        println!("  {k:<58} {v:>7}");
    }
    println!(
        "ota-core share: {ota_core} bytes = {:.1}% of .text+.rodata ({}); a lower bound: with LTO, \
         ota-core code inlined into its callers counts to them (main)",
        100.0 * ota_core as f64 / (text + rodata) as f64,
        text + rodata
    );
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
    f.put(OTA_0, &c3_image("v1"));
    f.put(IMAGE_PART, &c3_image("v2"));
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
        fn limited(f: &mut CutFlash) -> BootResult {
            let size: usize = std::env::var("FW_STACK_PROBE").unwrap().parse().unwrap();
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .stack_size(size)
                    .spawn_scoped(s, || firmware_boot(f))
                    .unwrap()
                    .join()
                    .unwrap()
            })
        }
        assert!(size > 0);
        firmware_life(Some(STACK_PROBE_CUT), limited);
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
        "stack: the firmware's on_boot (install cut by a power cut, install, confirm; the table \
         buffer included) needs {hi} bytes of host thread stack ({} build, x86_64; RISC-V use differs)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}
