//! Test fixtures shaped like ESP-IDF build products, made at test time (never committed):
//! small RISC-V ELF files laid out as ESP-IDF's linker lays out an ESP32-C6/H2 app for a given
//! MMU page size (for `esptool elf2image`), and helpers for `idf.py build` folders.
#![allow(dead_code)]

/// `esp_app_desc_t` magic word (esp-idf `components/esp_app_format/include/esp_app_desc.h`).
const APP_DESC_MAGIC: u32 = 0xABCD_5432;
/// ELF constants (System V ABI): 32-bit, little endian, RISC-V, section types and flags.
const ELFCLASS32: u8 = 1;
const ELFDATA2LSB: u8 = 1;
const EM_RISCV: u16 = 0xF3;
const ET_EXEC: u16 = 2;
const SHT_PROGBITS: u32 = 1;
const SHT_STRTAB: u32 = 3;
const SHF_WRITE: u32 = 1;
const SHF_ALLOC: u32 = 2;
const SHF_EXECINSTR: u32 = 4;
const EHDR_LEN: usize = 52;
const SHDR_LEN: usize = 40;

/// One ELF section: name, load address, flags, bytes.
pub struct Section {
    pub name: &'static str,
    pub addr: u32,
    pub flags: u32,
    pub data: Vec<u8>,
}

/// A minimal ELF32 executable holding `sections` (no program headers: esptool elf2image reads
/// sections by default).
pub fn elf(entry: u32, sections: &[Section]) -> Vec<u8> {
    let mut shstrtab = vec![0u8];
    let mut names = Vec::new();
    for s in sections.iter().map(|s| s.name).chain([".shstrtab"]) {
        names.push(shstrtab.len() as u32);
        shstrtab.extend_from_slice(s.as_bytes());
        shstrtab.push(0);
    }
    let mut body = Vec::new();
    let mut offsets = Vec::new();
    for s in sections {
        while !(EHDR_LEN + body.len()).is_multiple_of(4) {
            body.push(0);
        }
        offsets.push((EHDR_LEN + body.len()) as u32);
        body.extend_from_slice(&s.data);
    }
    let strtab_off = (EHDR_LEN + body.len()) as u32;
    body.extend_from_slice(&shstrtab);
    while !(EHDR_LEN + body.len()).is_multiple_of(4) {
        body.push(0);
    }
    let shoff = (EHDR_LEN + body.len()) as u32;
    let shnum = sections.len() as u16 + 2;
    let mut out = Vec::new();
    out.extend_from_slice(&[0x7F, b'E', b'L', b'F', ELFCLASS32, ELFDATA2LSB, 1]);
    out.resize(16, 0);
    out.extend_from_slice(&ET_EXEC.to_le_bytes());
    out.extend_from_slice(&EM_RISCV.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&entry.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // e_phoff
    out.extend_from_slice(&shoff.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&(EHDR_LEN as u16).to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes()); // e_phentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&(SHDR_LEN as u16).to_le_bytes());
    out.extend_from_slice(&shnum.to_le_bytes());
    out.extend_from_slice(&(shnum - 1).to_le_bytes()); // e_shstrndx
    assert_eq!(out.len(), EHDR_LEN);
    out.extend_from_slice(&body);
    let shdr =
        |out: &mut Vec<u8>, name: u32, ty: u32, flags: u32, addr: u32, off: u32, size: u32| {
            for w in [name, ty, flags, addr, off, size, 0, 0, 4, 0] {
                out.extend_from_slice(&w.to_le_bytes());
            }
        };
    shdr(&mut out, 0, 0, 0, 0, 0, 0);
    for (i, s) in sections.iter().enumerate() {
        shdr(
            &mut out,
            names[i],
            SHT_PROGBITS,
            s.flags,
            s.addr,
            offsets[i],
            s.data.len() as u32,
        );
    }
    shdr(
        &mut out,
        names[sections.len()],
        SHT_STRTAB,
        0,
        0,
        strtab_off,
        shstrtab.len() as u32,
    );
    out
}

/// A 256-byte `esp_app_desc_t` (esp-idf `esp_app_desc.h` layout).
pub fn app_desc(project: &str, version: &str, secure_version: u32, mmu_page_log2: u8) -> Vec<u8> {
    let mut d = vec![0u8; 256];
    d[0..4].copy_from_slice(&APP_DESC_MAGIC.to_le_bytes());
    d[4..8].copy_from_slice(&secure_version.to_le_bytes());
    d[16..16 + version.len()].copy_from_slice(version.as_bytes());
    d[48..48 + project.len()].copy_from_slice(project.as_bytes());
    d[80..88].copy_from_slice(b"12:00:00");
    d[96..107].copy_from_slice(b"Jun  1 2025");
    d[112..118].copy_from_slice(b"v5.4.1");
    d[178..180].copy_from_slice(&0xFFFFu16.to_le_bytes()); // max_efuse_blk_rev_full
    d[180] = mmu_page_log2;
    d
}

fn fill(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// ESP-IDF's first flash address on ESP32-C6/H2 (0x42000000 + 0x20: the image header and the
/// first segment header sit before the data in the first MMU page; esp-idf
/// `components/esp_system/ld/esp32c6/memory.ld.in`).
pub const C6_FLASH_START: u32 = 0x4200_0020;
/// ESP32-C6/H2 HP SRAM (esptool `targets/esp32c6.py` MEMORY_MAP).
pub const C6_SRAM: u32 = 0x4080_0000;

/// An ELF laid out as ESP-IDF lays out an ESP32-C6 (or H2: same memory map) app for MMU pages
/// of `page` bytes: `.flash.text` first at 0x42000020, then `.flash.appdesc` + `.flash.rodata`
/// at the next page boundary + 0x20 (the rodata follows the code in the shared I/D address
/// space), then DRAM and IRAM. `desc_page_log2` goes into `esp_app_desc_t.mmu_page_size`
/// (0 = not recorded, as before ESP-IDF v5.4).
pub fn c6_app_elf(page: u32, desc_page_log2: u8, project: &str, version: &str) -> Vec<u8> {
    let text_len = 0x6000u32;
    let text_end = C6_FLASH_START + text_len;
    let rodata_start = text_end.div_ceil(page) * page + 0x20;
    let desc = app_desc(project, version, 0, desc_page_log2);
    let sections = [
        Section {
            name: ".flash.text",
            addr: C6_FLASH_START,
            flags: SHF_ALLOC | SHF_EXECINSTR,
            data: fill(text_len as usize, 1),
        },
        Section {
            name: ".flash.appdesc",
            addr: rodata_start,
            flags: SHF_ALLOC,
            data: desc,
        },
        Section {
            name: ".flash.rodata",
            addr: rodata_start + 0x100,
            flags: SHF_ALLOC,
            data: fill(0x1F00, 2),
        },
        Section {
            name: ".dram0.data",
            addr: C6_SRAM + 0x1_0000,
            flags: SHF_ALLOC | SHF_WRITE,
            data: fill(0x800, 3),
        },
        Section {
            name: ".iram0.text",
            addr: C6_SRAM,
            flags: SHF_ALLOC | SHF_EXECINSTR,
            data: fill(0x1000, 4),
        },
    ];
    elf(C6_SRAM, &sections)
}
