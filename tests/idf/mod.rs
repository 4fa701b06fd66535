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

/// The partition table of the `idf.py build` fixtures: ESP-IDF's two-OTA layout without a
/// factory app (nvs, otadata, phy_init, ota_0, ota_1).
pub const OTA_CSV: &str = "# Name,   Type, SubType, Offset,  Size, Flags\n\
nvs,      data, nvs,     0x9000,  0x4000,\n\
otadata,  data, ota,     0xd000,  0x2000,\n\
phy_init, data, phy,     0xf000,  0x1000,\n\
ota_0,    app,  ota_0,   0x10000, 0x100000,\n\
ota_1,    app,  ota_1,   0x110000,0x100000,\n";

/// What an `idf.py build` fixture holds.
pub struct BuildSpec<'a> {
    pub chip: &'a str,
    pub project: &'a str,
    pub flash_mode: &'a str,
    pub flash_freq: &'a str,
    pub flash_size: &'a str,
    /// The real 2nd-stage bootloader image.
    pub bootloader: &'a std::path::Path,
    pub bootloader_offset: u32,
    /// The binary partition table (gen_esp32part's output).
    pub table: &'a [u8],
    pub app: &'a [u8],
    /// The project's sdkconfig text, written beside `build/` (None: none).
    pub sdkconfig: Option<&'a str>,
}

/// Lay out `root/build` exactly as `idf.py build` does for the files `idf.py flash` writes:
/// `flasher_args.json` and `flash_args` (esp-idf `components/esptool_py/project_include.cmake`,
/// `flasher_args.json.in`), `bootloader/bootloader.bin`, `partition_table/partition-table.bin`,
/// `ota_data_initial.bin` (0x2000 bytes of 0xFF, as `gen_empty_partition.py` makes it) and
/// `<project>.bin`; `root/sdkconfig` beside it. Returns the build folder.
pub fn idf_build_folder(root: &std::path::Path, b: &BuildSpec) -> std::path::PathBuf {
    let build = root.join("build");
    std::fs::create_dir_all(build.join("bootloader")).unwrap();
    std::fs::create_dir_all(build.join("partition_table")).unwrap();
    std::fs::create_dir_all(build.join("config")).unwrap();
    std::fs::copy(b.bootloader, build.join("bootloader/bootloader.bin")).unwrap();
    std::fs::write(build.join("partition_table/partition-table.bin"), b.table).unwrap();
    std::fs::write(build.join("ota_data_initial.bin"), vec![0xFFu8; 0x2000]).unwrap();
    let app = format!("{}.bin", b.project);
    std::fs::write(build.join(&app), b.app).unwrap();
    let bl = format!("0x{:x}", b.bootloader_offset);
    let json = format!(
        r#"{{
    "write_flash_args" : [ "--flash_mode", "{mode}",
                           "--flash_size", "{size}",
                           "--flash_freq", "{freq}" ],
    "flash_settings" : {{
        "flash_mode": "{mode}",
        "flash_size": "{size}",
        "flash_freq": "{freq}"
    }},
    "flash_files" : {{
        "{bl}" : "bootloader/bootloader.bin",
        "0x10000" : "{app}",
        "0x8000" : "partition_table/partition-table.bin",
        "0xd000" : "ota_data_initial.bin"
    }},
    "bootloader" : {{ "offset" : "{bl}", "file" : "bootloader/bootloader.bin", "encrypted" : "false" }},
    "app" : {{ "offset" : "0x10000", "file" : "{app}", "encrypted" : "false" }},
    "partition-table" : {{ "offset" : "0x8000", "file" : "partition_table/partition-table.bin", "encrypted" : "false" }},
    "otadata" : {{ "offset" : "0xd000", "file" : "ota_data_initial.bin", "encrypted" : "false" }},
    "extra_esptool_args" : {{
        "after"  : "hard_reset",
        "before" : "default_reset",
        "stub"   : true,
        "chip"   : "{chip}"
    }}
}}
"#,
        mode = b.flash_mode,
        size = b.flash_size,
        freq = b.flash_freq,
        chip = b.chip,
    );
    std::fs::write(build.join("flasher_args.json"), json).unwrap();
    let args = format!(
        "--flash_mode {} --flash_freq {} --flash_size {}\n{bl} bootloader/bootloader.bin\n\
         0x10000 {app}\n0x8000 partition_table/partition-table.bin\n0xd000 ota_data_initial.bin\n",
        b.flash_mode, b.flash_freq, b.flash_size
    );
    std::fs::write(build.join("flash_args"), args).unwrap();
    if let Some(s) = b.sdkconfig {
        std::fs::write(root.join("sdkconfig"), s).unwrap();
    }
    build
}

/// An sdkconfig as ESP-IDF writes it (the options the emulator reads, among others).
pub fn sdkconfig(
    chip: &str,
    flash_size: &str,
    rollback: bool,
    anti_rollback: bool,
    secure_version: u32,
) -> String {
    let flag = |name: &str, on: bool| {
        if on {
            format!("CONFIG_{name}=y\n")
        } else {
            format!("# CONFIG_{name} is not set\n")
        }
    };
    let mut s = String::from(
        "#\n# Automatically generated file. DO NOT EDIT.\n# Espressif IoT Development Framework (ESP-IDF) 5.4.1 Project Configuration\n#\n",
    );
    s += &format!("CONFIG_SOC_CPU_CORES_NUM=1\nCONFIG_IDF_TARGET=\"{chip}\"\nCONFIG_IDF_FIRMWARE_CHIP_ID=0x0005\n");
    s += "\n#\n# Bootloader config\n#\n";
    s += &flag("BOOTLOADER_APP_ROLLBACK_ENABLE", rollback);
    s += &flag("BOOTLOADER_APP_ANTI_ROLLBACK", anti_rollback);
    if anti_rollback {
        s += &format!("CONFIG_BOOTLOADER_APP_SECURE_VERSION={secure_version}\nCONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD=16\n");
    }
    s += "CONFIG_ESPTOOLPY_FLASHMODE_DIO=y\nCONFIG_ESPTOOLPY_FLASHMODE=\"dio\"\nCONFIG_ESPTOOLPY_FLASHFREQ_80M=y\nCONFIG_ESPTOOLPY_FLASHFREQ=\"80m\"\n";
    s += &format!(
        "CONFIG_ESPTOOLPY_FLASHSIZE_{flash_size}=y\nCONFIG_ESPTOOLPY_FLASHSIZE=\"{flash_size}\"\n"
    );
    s += "CONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"partitions.csv\"\nCONFIG_PARTITION_TABLE_OFFSET=0x8000\nCONFIG_PARTITION_TABLE_MD5=y\n";
    s += "CONFIG_MMU_PAGE_SIZE_64KB=y\nCONFIG_MMU_PAGE_MODE=\"64KB\"\nCONFIG_MMU_PAGE_SIZE=0x10000\n";
    s
}
