//! ELF files made at test time for `ota image from-elf` vs `esptool elf2image`: a general ELF32
//! writer (any section type, flags and alignment, optional program headers) and randomised
//! firmware layouts for every chip: flash-mapped rodata (with or without an app descriptor,
//! named as ESP-IDF or as esp-hal names it), flash code, DRAM, IRAM, `.bss`, debug sections,
//! init arrays, sections that merge and sections that don't.
#![allow(dead_code)]

use ota_core::Chip;
use rand::Rng;

pub const SHT_PROGBITS: u32 = 1;
pub const SHT_STRTAB: u32 = 3;
pub const SHT_NOTE: u32 = 7;
pub const SHT_NOBITS: u32 = 8;
pub const SHT_INIT_ARRAY: u32 = 14;
pub const SHF_WRITE: u32 = 1;
pub const SHF_ALLOC: u32 = 2;
pub const SHF_EXECINSTR: u32 = 4;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_XTENSA: u16 = 0x5E;
const EM_RISCV: u16 = 0xF3;

#[derive(Clone, Debug)]
pub struct Sec {
    pub name: String,
    pub ty: u32,
    pub addr: u32,
    pub flags: u32,
    pub align: u32,
    /// File bytes (for NOBITS: only the size counts).
    pub data: Vec<u8>,
}

impl Sec {
    pub fn new(name: &str, addr: u32, flags: u32, data: Vec<u8>) -> Sec {
        Sec {
            name: name.into(),
            ty: SHT_PROGBITS,
            addr,
            flags,
            align: 4,
            data,
        }
    }
}

pub fn machine(chip: Chip) -> u16 {
    match chip {
        Chip::Esp32 | Chip::Esp32s2 | Chip::Esp32s3 => EM_XTENSA,
        _ => EM_RISCV,
    }
}

/// An ELF32 little-endian executable; with `phdrs`, one PT_LOAD per allocated section (plus a
/// PT_NOTE), physical address = section address.
pub fn write_elf(machine: u16, entry: u32, secs: &[Sec], phdrs: bool) -> Vec<u8> {
    let mut strtab = vec![0u8];
    let mut names = Vec::new();
    for n in secs.iter().map(|s| s.name.as_str()).chain([".shstrtab"]) {
        names.push(strtab.len() as u32);
        strtab.extend_from_slice(n.as_bytes());
        strtab.push(0);
    }
    let nph = if phdrs { secs.len() + 1 } else { 0 };
    let phoff = 52u32;
    let mut body = vec![0u8; 52 + nph * 32];
    let mut offs = Vec::new();
    for s in secs {
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        offs.push(body.len() as u32);
        if s.ty != SHT_NOBITS {
            body.extend_from_slice(&s.data);
        }
    }
    let str_off = body.len() as u32;
    body.extend_from_slice(&strtab);
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let shoff = body.len() as u32;
    let shnum = secs.len() as u16 + 2;
    let mut h = Vec::new();
    h.extend_from_slice(&[0x7F, b'E', b'L', b'F', 1, 1, 1]);
    h.resize(16, 0);
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&machine.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&entry.to_le_bytes());
    h.extend_from_slice(&(if phdrs { phoff } else { 0 }).to_le_bytes());
    h.extend_from_slice(&shoff.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&52u16.to_le_bytes());
    h.extend_from_slice(&32u16.to_le_bytes());
    h.extend_from_slice(&(nph as u16).to_le_bytes());
    h.extend_from_slice(&40u16.to_le_bytes());
    h.extend_from_slice(&shnum.to_le_bytes());
    h.extend_from_slice(&(shnum - 1).to_le_bytes());
    body[..52].copy_from_slice(&h);
    if phdrs {
        let mut at = 52;
        for (i, s) in secs.iter().enumerate() {
            let filesz = if s.ty == SHT_NOBITS {
                0
            } else {
                s.data.len() as u32
            };
            let ty = if s.flags & SHF_ALLOC != 0 {
                PT_LOAD
            } else {
                PT_NOTE
            };
            for w in [
                ty,
                offs[i],
                s.addr,
                s.addr,
                filesz,
                s.data.len() as u32,
                5,
                s.align,
            ] {
                body[at..at + 4].copy_from_slice(&w.to_le_bytes());
                at += 4;
            }
        }
        for w in [PT_NOTE, 0, 0, 0, 0, 0, 4, 4] {
            body[at..at + 4].copy_from_slice(&w.to_le_bytes());
            at += 4;
        }
    }
    let mut shdr = |ty: u32, name: u32, flags: u32, addr: u32, off: u32, size: u32, align: u32| {
        for w in [name, ty, flags, addr, off, size, 0, 0, align, 0] {
            body.extend_from_slice(&w.to_le_bytes());
        }
    };
    shdr(0, 0, 0, 0, 0, 0, 0);
    for (i, s) in secs.iter().enumerate() {
        shdr(
            s.ty,
            names[i],
            s.flags,
            s.addr,
            offs[i],
            s.data.len() as u32,
            s.align,
        );
    }
    shdr(
        SHT_STRTAB,
        names[secs.len()],
        0,
        0,
        str_off,
        strtab.len() as u32,
        1,
    );
    body
}

pub fn fill(rng: &mut impl Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.gen()).collect()
}

/// A 256-byte `esp_app_desc_t` with `mmu_page_log2` at byte 180 and a zero `app_elf_sha256`.
pub fn app_desc(rng: &mut impl Rng, mmu_page_log2: u8) -> Vec<u8> {
    let mut d = vec![0u8; 256];
    d[0..4].copy_from_slice(&0xABCD_5432u32.to_le_bytes());
    d[4..8].copy_from_slice(&rng.gen_range(0..5u32).to_le_bytes());
    d[16..22].copy_from_slice(b"v1.0.0");
    d[48..55].copy_from_slice(b"elfgen!");
    d[80..88].copy_from_slice(b"12:00:00");
    d[96..107].copy_from_slice(b"Jun  1 2025");
    d[112..118].copy_from_slice(b"v5.4.1");
    d[180] = mmu_page_log2;
    d
}

fn size(rng: &mut impl Rng, max: usize, odd: f64) -> usize {
    let n = rng.gen_range(1..=max / 4) * 4;
    // Now and then a length that is not a multiple of 4 (esptool pads it).
    if rng.gen_bool(odd) {
        n - rng.gen_range(1..=3)
    } else {
        n
    }
}

/// A run of sections from `base`: each starts where the previous (padded to 4) ends, or after
/// a gap, so some merge and some don't.
fn run(
    rng: &mut impl Rng,
    out: &mut Vec<Sec>,
    names: &[&str],
    base: u32,
    flags: u32,
    max: usize,
    flash: bool,
) -> u32 {
    // Flash runs are contiguous, as a linker lays out rodata (a gap there would put two
    // segments in one MMU page, which esptool refuses); RAM runs have gaps.
    let (odd, gap) = if flash { (0.03, 0.03) } else { (0.15, 0.35) };
    let mut at = base;
    for n in names {
        let len = size(rng, max, odd);
        let mut s = Sec::new(n, at, flags, fill(rng, len));
        s.align = *[1u32, 4, 4, 8, 16].get(rng.gen_range(0..5)).unwrap();
        if rng.gen_bool(0.1) {
            s.ty = SHT_INIT_ARRAY;
        }
        at += (len as u32).div_ceil(4) * 4;
        if rng.gen_bool(gap) {
            at += rng.gen_range(1..=64) * 4;
        }
        out.push(s);
    }
    at
}

/// What a random layout holds (for choosing the options).
pub struct Layout {
    pub elf: Vec<u8>,
    pub describe: String,
}

/// A random firmware layout for `chip` with flash segments laid out for `page`: rodata in
/// DROM at a page + 0x20 (first the app descriptor, as `.flash.appdesc` or esp-hal's
/// `.rodata_desc`, or none), code in IROM at a later page + a random offset, DRAM, IRAM,
/// `.bss`, debug and note sections; sometimes shuffled section order and program headers.
pub fn random_layout(rng: &mut impl Rng, chip: Chip, page: u32, desc_log2: u8) -> Layout {
    let mut secs = Vec::new();
    let (drom, _) = chip.drom_map();
    let irom = chip.builder_irom_base();
    let desc = rng.gen_range(0..4);
    let mut at = drom + page * rng.gen_range(0..3) + 0x20;
    match desc {
        0 | 1 => {
            secs.push(Sec::new(
                ".flash.appdesc",
                at,
                SHF_ALLOC,
                app_desc(rng, desc_log2),
            ));
            at += 256;
        }
        2 => {
            secs.push(Sec::new(
                ".rodata_desc",
                at,
                SHF_ALLOC,
                app_desc(rng, desc_log2),
            ));
            at += 256;
        }
        _ => {}
    }
    let ro_end = run(
        rng,
        &mut secs,
        &[".flash.rodata", ".eh_frame"],
        at,
        SHF_ALLOC,
        0x3000,
        true,
    );
    let mut text = irom + page * rng.gen_range(0..3);
    if text / page <= ro_end / page && chip.irom_map().0 == chip.drom_map().0 {
        text = (ro_end / page + 1) * page;
    }
    let text = text
        + match rng.gen_range(0..3) {
            0 => 0x20,
            1 => rng.gen_range(0..page / 4) * 4,
            _ => 0,
        };
    let flash_text = rng.gen_bool(0.9);
    if flash_text {
        run(
            rng,
            &mut secs,
            &[".flash.text"],
            text,
            SHF_ALLOC | SHF_EXECINSTR,
            0x4000,
            true,
        );
    }
    let dram = chip.builder_dram_base() + rng.gen_range(0..16) * 0x100;
    let nd = rng.gen_range(1..=3);
    let d_end = run(
        rng,
        &mut secs,
        &[".dram0.data", ".dram0.rodata", ".noinit"][..nd],
        dram,
        SHF_ALLOC | SHF_WRITE,
        0x1800,
        false,
    );
    let mut bss = Sec::new(
        ".dram0.bss",
        d_end + 0x40,
        SHF_ALLOC | SHF_WRITE,
        vec![0; 0x400],
    );
    bss.ty = SHT_NOBITS;
    secs.push(bss);
    let iram = chip.builder_iram_base() + rng.gen_range(0..16) * 0x100;
    let ni = rng.gen_range(1..=2);
    run(
        rng,
        &mut secs,
        &[".iram0.vectors", ".iram0.text"][..ni],
        iram,
        SHF_ALLOC | SHF_EXECINSTR,
        0x2000,
        false,
    );
    // Not loaded: address 0, or a type esptool skips.
    let mut dbg = Sec::new(".debug_info", 0, 0, fill(rng, 64));
    dbg.align = 1;
    secs.push(dbg);
    if rng.gen_bool(0.2) {
        let mut note = Sec::new(".note.gnu", dram + 0x8000, SHF_ALLOC, fill(rng, 16));
        note.ty = SHT_NOTE;
        secs.push(note);
    }
    let shuffled = rng.gen_bool(0.2);
    if shuffled {
        use rand::seq::SliceRandom;
        secs.shuffle(rng);
    }
    let phdrs = rng.gen_bool(0.85);
    let entry = if flash_text { text } else { iram };
    Layout {
        elf: write_elf(machine(chip), entry, &secs, phdrs),
        describe: format!(
            "{} page {:#x} desc {} log2 {} text {:#x} shuffled {} phdrs {}",
            chip.name(),
            page,
            desc,
            desc_log2,
            text,
            shuffled,
            phdrs
        ),
    }
}

/// An ESP32-C3 app as esp-hal (with esp-bootloader-esp-idf) links it: `.rodata_desc` then
/// `.rodata` in DROM at 0x3C000020, `.text` in IROM at the matching MMU page offset, `.rwtext`
/// in IRAM, `.data` in DRAM, `.bss`.
pub fn esp_hal_c3(rng: &mut impl Rng) -> Vec<u8> {
    let desc = app_desc(rng, 0);
    let rodata = fill(rng, 0x2340);
    let ro_end = 0x3C00_0020 + 256 + rodata.len() as u32;
    // The code follows the rodata in flash: its file offset, mod 64 KB, is its address's.
    let text_addr = 0x4200_0000 + ((ro_end - 0x3C00_0000 + 0x20).div_ceil(4) * 4) + 0x1_0000;
    let secs = vec![
        Sec::new(".rodata_desc", 0x3C00_0020, SHF_ALLOC, desc),
        Sec::new(".rodata", 0x3C00_0120, SHF_ALLOC, rodata),
        Sec::new(
            ".text",
            text_addr,
            SHF_ALLOC | SHF_EXECINSTR,
            fill(rng, 0x5000),
        ),
        Sec::new(
            ".rwtext",
            0x4038_0000,
            SHF_ALLOC | SHF_EXECINSTR,
            fill(rng, 0x900),
        ),
        Sec::new(
            ".data",
            0x3FC8_0000,
            SHF_ALLOC | SHF_WRITE,
            fill(rng, 0x300),
        ),
        Sec {
            ty: SHT_NOBITS,
            ..Sec::new(".bss", 0x3FC8_0300, SHF_ALLOC | SHF_WRITE, vec![0; 0x800])
        },
    ];
    write_elf(EM_RISCV, text_addr, &secs, true)
}
