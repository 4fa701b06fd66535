//! esptool's `elf2image` for every ESP32-family chip, `no_std` and allocation-free.
//!
//! The algorithm is esptool 5.6's (`esptool/cmds.py` `elf2image`, `esptool/bin_image.py`
//! `ELFFile`, `BaseFirmwareImage.merge_adjacent_segments`, `ESP32FirmwareImage.save`):
//!
//! 1. the ELF's loadable sections (`SHT_PROGBITS`, `SHT_INIT_ARRAY`, `SHT_FINI_ARRAY`,
//!    `SHT_PREINIT_ARRAY` with a non-zero address and size; or, with `use_segments`, its
//!    `PT_LOAD` program headers by physical address), each zero-padded to 4 bytes;
//! 2. the MMU page: given, else the app descriptor's `mmu_page_size`, else the largest page
//!    the `.flash.appdesc` address minus 0x20 is a multiple of (chips with a configurable page);
//! 3. neighbours merged when one ends where the next starts in the same memory types;
//! 4. flash-mapped segments (IROM/DROM), sorted, `.flash.appdesc` first, each placed so that
//!    its file offset equals its address modulo the MMU page, the gaps filled with pieces of
//!    the RAM segments (or zero segments at address 0); then the rest of RAM;
//! 5. optional secure padding, the checksum, the appended SHA-256, padding to a block size;
//!    the ELF's own SHA-256 patched into the app descriptor (`app_elf_sha256`, file offset
//!    0xB0) when it is in flash.
//!
//! [`Plan::new`] checks everything and lays the image out (it refuses what esptool refuses,
//! and also corrupt ELFs esptool reads past or crashes on); [`Plan::emit`] streams the bytes to
//! a caller's sink, so a chip can convert too. Deliberate differences from esptool, all
//! refusals: a 64-bit, big-endian or truncated ELF; a section whose data lies outside the file;
//! overlapping sections; an ELF for the other CPU architecture than the chip's; a fixed-page
//! chip given another MMU page size (esptool warns and uses 64 KB); more than 16 segments in
//! the output (the bootloader's `ESP_IMAGE_MAX_SEGMENTS`).
use core::fmt;

use sha2::{Digest, Sha256};

use crate::bytes::{le16, le32};
use crate::chip::{Chip, DEFAULT_MMU_PAGE_SIZE};
use crate::image::{
    APP_DESC_MAGIC, APP_DESC_SIZE, CHECKSUM_SEED, HASH_LEN, HEADER_SIZE, IMAGE_MAGIC, MAX_SEGMENTS,
    MAX_SEGMENT_LEN, SEGMENT_HEADER_SIZE, WP_PIN_DISABLED,
};

/// Loadable sections (or segments) kept from one ELF; more is refused.
pub const MAX_SECTIONS: usize = 128;
/// Output segments of the laid-out image, pads included (room for `--ram-only-header`, whose
/// header counts only the RAM segments).
const MAX_OUT: usize = 3 * MAX_SEGMENTS + 2;

// ELF (System V gABI, `elf.h`).
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS32: u8 = 1;
const ELFDATA2LSB: u8 = 1;
/// `Elf32_Ehdr` size (esptool `LEN_FILE_HEADER`).
const EHDR_LEN: usize = 0x34;
/// `Elf32_Shdr` size (esptool `ELFFile.LEN_SEC_HEADER`).
const SHDR_LEN: usize = 0x28;
/// `Elf32_Phdr` size (esptool `ELFFile.LEN_SEG_HEADER`).
const PHDR_LEN: usize = 0x20;
/// `EM_XTENSA` and `EM_RISCV`, the two machines esptool accepts.
pub const EM_XTENSA: u16 = 0x5E;
pub const EM_RISCV: u16 = 0xF3;
const SHT_PROGBITS: u32 = 0x01;
const SHT_STRTAB: u32 = 0x03;
const SHT_NOBITS: u32 = 0x08;
const SHT_INIT_ARRAY: u32 = 0x0E;
const SHT_FINI_ARRAY: u32 = 0x0F;
const SHT_PREINIT_ARRAY: u32 = 0x10;
const PT_LOAD: u32 = 0x01;
/// `Elf32_Ehdr` field offsets (gABI; esptool's `"<16sHHLLLLLHHHHHH"`).
const E_MACHINE: usize = 18;
const E_ENTRY: usize = 24;
const E_PHOFF: usize = 28;
const E_SHOFF: usize = 32;
const E_PHENTSIZE: usize = 42;
const E_PHNUM: usize = 44;
const E_SHENTSIZE: usize = 46;
const E_SHNUM: usize = 48;
const E_SHSTRNDX: usize = 50;
/// `Elf32_Shdr` words: sh_name, sh_type, sh_addr, sh_offset, sh_size, sh_addralign.
const SH_NAME: usize = 0;
const SH_TYPE: usize = 1;
const SH_ADDR: usize = 3;
const SH_OFFSET: usize = 4;
const SH_SIZE: usize = 5;
const SH_ADDRALIGN: usize = 8;
/// `Elf32_Phdr` words: p_type, p_offset, p_paddr, p_filesz, p_align.
const P_TYPE: usize = 0;
const P_OFFSET: usize = 1;
const P_PADDR: usize = 3;
const P_FILESZ: usize = 4;
const P_ALIGN: usize = 7;

/// Section names esptool treats specially (`ESP32FirmwareImage.save`, `elf2image`).
const APPDESC_SECTION: &str = ".flash.appdesc";
const BOOTDESC_SECTION: &str = ".dram0.bootdesc";
/// The name esptool gives program-header segments (`ELFFile._read_segments`).
const PHDR_NAME: &str = "PHDR";
/// `app_elf_sha256` in the image when the descriptor is the first flash segment: 0x20 (image
/// header + segment header) + 0x90 (`esp_app_desc_t.app_elf_sha256`) (esptool `elf2image`).
const APPDESC_SHA256_OFFSET: u32 = 0xB0;
/// `esp_app_desc_t.mmu_page_size` (log2), ESP-IDF v5.4+ (esp-idf `esp_app_desc.h`).
const APPDESC_MMU_PAGE_OFFSET: usize = 180;
/// Image header + extended header + segment header before the first segment's data; what the
/// descriptor address minus this is a multiple of the MMU page (esptool `elf2image`).
const FIRST_DATA_OFFSET: u64 = 24 + 8;
/// ESP32 only: an IROM/DROM segment ending less than 0x24 bytes past an MMU page boundary is
/// padded to 0x24 there (ESP-IDF 2nd-stage bootloader bug; esptool `save_flash_segment`).
const ESP32_MMU_TAIL: u64 = 0x24;
/// Bytes after the checksum with secure padding (esptool `ESP32FirmwareImage.save`): v1 =
/// digest + version + signature + 12 alignment bytes; v2 = digest (the signature sector
/// follows the page boundary).
const SECURE_PAD_V1_AFTER: u64 = 32 + 4 + 64 + 12;
const SECURE_PAD_V2_AFTER: u64 = 32;
/// The checksum sits in the last byte of a 16-byte block (esptool `append_checksum`).
const CHECKSUM_BLOCK: u64 = 16;
/// The extended image header (`esp_image_header_t` bytes 8..24; its last byte: 1 = SHA-256
/// appended), esp-idf `components/bootloader_support/include/esp_app_format.h`.
const EXT_HEADER_LEN: usize = 16;

/// Secure Boot padding (esptool `--secure-pad` / `--secure-pad-v2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurePad {
    None,
    /// Secure Boot v1 (ESP32 only).
    V1,
    V2,
}

/// esptool's elf2image options. [`Options::new`] gives esptool's defaults (`qio`, `1MB`,
/// frequency code 0, revisions 0..65535, digest appended).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub chip: Chip,
    /// Header byte 2 (`--flash-mode`: 0 qio, 1 qout, 2 dio, 3 dout).
    pub flash_mode: u8,
    /// Flash size nibble (`--flash-size`: 0 = 1MB .. 7 = 128MB).
    pub flash_size_code: u8,
    /// Flash frequency nibble (`--flash-freq`, per chip).
    pub flash_freq_code: u8,
    /// Legacy `min_chip_rev` byte (`--min-rev`).
    pub min_rev: u8,
    pub min_rev_full: u16,
    pub max_rev_full: u16,
    pub secure_pad: SecurePad,
    /// Where to patch the ELF's SHA-256 (`--elf-sha256-offset`; `None`/0: 0xB0 when the ELF
    /// has a `.flash.appdesc` in flash, else nowhere).
    pub elf_sha256_offset: Option<u32>,
    /// Append the image's SHA-256 (`--dont-append-digest` clears it).
    pub append_digest: bool,
    /// Program headers instead of sections (`--use-segments`).
    pub use_segments: bool,
    /// `--flash-mmu-page-size` in bytes.
    pub mmu_page_size: Option<u32>,
    /// Pad the output with 0xFF to a multiple of this (`--pad-to-size`; 0 = no).
    pub pad_to_size: u32,
    /// `--ram-only-header`: RAM segments first, header counts only them, no digest.
    pub ram_only_header: bool,
}

impl Options {
    pub const fn new(chip: Chip) -> Options {
        Options {
            chip,
            flash_mode: 0,
            flash_size_code: 0,
            flash_freq_code: 0,
            min_rev: 0,
            min_rev_full: 0,
            max_rev_full: 0xFFFF,
            secure_pad: SecurePad::None,
            elf_sha256_offset: None,
            append_digest: true,
            use_segments: false,
            mmu_page_size: None,
            pad_to_size: 0,
            ram_only_header: false,
        }
    }
}

/// Where the MMU page size of the layout came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuPageFrom {
    /// `Options::mmu_page_size`.
    Option,
    /// `esp_app_desc_t.mmu_page_size`.
    AppDesc,
    /// The `.flash.appdesc` address (ESP-IDF before v5.4 records no page size).
    AppDescAddress,
    /// 64 KB: the chip's fixed page, or no descriptor to learn from.
    Default,
    /// 64 KB, but the `.flash.appdesc` address fits no page size (esptool warns: probably a
    /// linker script issue).
    DefaultUnaligned,
}

/// Why an ELF cannot be converted. Offsets are ELF file offsets; names are section names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Elf2ImageError<'a> {
    /// `what` at `offset` needs `need` bytes; the file has `file_len`.
    Truncated {
        what: &'static str,
        offset: u64,
        need: u64,
        file_len: usize,
    },
    NotElf,
    /// `e_ident[EI_CLASS]` is not ELFCLASS32.
    Class(u8),
    /// `e_ident[EI_DATA]` is not little endian.
    Encoding(u8),
    /// `e_machine` is neither Xtensa nor RISC-V.
    Machine(u16),
    /// The ELF's architecture is not the chip's.
    WrongArch {
        chip: Chip,
        machine: u16,
    },
    SectionHeaderSize(u16),
    ProgramHeaderSize(u16),
    NoSections,
    NoProgramHeaders,
    ShstrndxOutOfRange {
        index: u16,
        count: u16,
    },
    /// Section `index`'s name at `name_offset` in the name table is not a NUL-terminated
    /// UTF-8 string inside it.
    SectionName {
        index: u16,
        name_offset: u32,
    },
    /// A section's (or program header's) data lies outside the file.
    SectionData {
        name: &'a str,
        index: u16,
        offset: u32,
        size: u32,
        file_len: usize,
    },
    /// A section's address range wraps past 4 GiB.
    AddressOverflow {
        name: &'a str,
        addr: u32,
        size: u32,
    },
    /// More than [`MAX_SECTIONS`] loadable sections.
    TooManySections,
    Overlap {
        first: &'a str,
        first_addr: u32,
        first_end: u64,
        second: &'a str,
        second_addr: u32,
    },
    /// More than 16 segments after merging (esptool `verify`).
    TooManySegments(usize),
    /// The laid-out image would have more than 16 segments (pads included).
    TooManyOutputSegments(usize),
    /// Two flash segments start in the same MMU page.
    SamePage {
        addr: u32,
        previous: u32,
        page: u32,
    },
    /// `.flash.appdesc` is shorter than an `esp_app_desc_t`.
    AppDescTooShort(usize),
    /// An MMU page size the chip cannot use (from the options or the app descriptor).
    MmuPage {
        chip: Chip,
        size: u64,
        from_desc: bool,
    },
    /// An output segment's length is not a multiple of 4 (an unaligned ELF address).
    SegmentLength {
        name: &'a str,
        len: u64,
    },
    /// An output segment of 16 MB or more.
    SegmentTooLong {
        name: &'a str,
        len: u64,
    },
    /// No pad segment can place the flash segment at `addr` (it would need a pad of exactly
    /// one segment header; esptool fails an assertion).
    Unplaceable {
        name: &'a str,
        addr: u32,
    },
    /// The ELF SHA-256 at `offset` would straddle a segment boundary.
    Sha256Boundary {
        offset: u32,
    },
    /// The 32 bytes at `offset` are not zero.
    Sha256NotZero {
        offset: u32,
    },
    /// Secure padding without an appended digest.
    SecurePadNeedsDigest,
    /// Secure Boot v1 padding on a chip other than the ESP32.
    SecurePadV1(Chip),
    /// Padding to a block size without the appended digest: esptool 5.6 then pads from file
    /// offset 2 (it forgets to seek back to the end), overwriting the image with 0xFF.
    PadWithoutDigest,
}

impl fmt::Display for Elf2ImageError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Elf2ImageError as E;
        match *self {
            E::Truncated {
                what,
                offset,
                need,
                file_len,
            } => write!(
                f,
                "ELF truncated: the {what} at offset {offset:#x} needs {need} bytes, the file \
                 has {file_len}"
            ),
            E::NotElf => f.write_str("not an ELF file (no \\x7fELF magic)"),
            E::Class(c) => write!(
                f,
                "ELF class {c} is not ELFCLASS32 (1): ESP32 firmware is 32-bit"
            ),
            E::Encoding(d) => write!(
                f,
                "ELF data encoding {d} is not little endian (ELFDATA2LSB, 1)"
            ),
            E::Machine(m) => write!(
                f,
                "e_machine {m:#06x} is neither Xtensa ({EM_XTENSA:#06x}) nor RISC-V \
                 ({EM_RISCV:#06x})"
            ),
            E::WrongArch { chip, machine } => write!(
                f,
                "the ELF is for {} (e_machine {machine:#06x}), {} is {}",
                arch_name(machine),
                chip.display_name(),
                arch_name(chip_machine(chip))
            ),
            E::SectionHeaderSize(n) => write!(
                f,
                "e_shentsize {n:#x} is not {SHDR_LEN:#x} (an ELF32 section header)"
            ),
            E::ProgramHeaderSize(n) => write!(
                f,
                "e_phentsize {n:#x} is not {PHDR_LEN:#x} (an ELF32 program header)"
            ),
            E::NoSections => f.write_str("the ELF has 0 section headers"),
            E::NoProgramHeaders => {
                f.write_str("the ELF has no program headers (needed to convert by segments)")
            }
            E::ShstrndxOutOfRange { index, count } => write!(
                f,
                "e_shstrndx {index} is not one of the {count} sections (no section name table)"
            ),
            E::SectionName { index, name_offset } => write!(
                f,
                "section {index}: name at offset {name_offset:#x} of the section name table \
                 is not a NUL-terminated UTF-8 string inside it"
            ),
            E::SectionData {
                name,
                index,
                offset,
                size,
                file_len,
            } => write!(
                f,
                "section {index} ({name}): data at offset {offset:#x}, {size} bytes, lies \
                 outside the {file_len}-byte file"
            ),
            E::AddressOverflow { name, addr, size } => write!(
                f,
                "section {name} at {addr:#010x}, {size} bytes, runs past the 4 GiB address space"
            ),
            E::TooManySections => {
                write!(f, "the ELF has more than {MAX_SECTIONS} loadable sections")
            }
            E::Overlap {
                first,
                first_addr,
                first_end,
                second,
                second_addr,
            } => write!(
                f,
                "section {second} at {second_addr:#010x} overlaps section {first} \
                 [{first_addr:#010x}, {first_end:#010x})"
            ),
            E::TooManySegments(n) => write!(
                f,
                "{n} segments after merging adjacent sections (max {MAX_SEGMENTS}); usually a \
                 linker script problem"
            ),
            E::TooManyOutputSegments(n) => write!(
                f,
                "the image would have {n} segments with its alignment pads; the bootloader \
                 loads at most {MAX_SEGMENTS} (ESP_IMAGE_MAX_SEGMENTS)"
            ),
            E::SamePage {
                addr,
                previous,
                page,
            } => write!(
                f,
                "segment loaded at {addr:#010x} lands in the same {} KB flash mapping as the \
                 segment loaded at {previous:#010x}: change the linker script to merge them",
                page / 1024
            ),
            E::AppDescTooShort(n) => write!(
                f,
                "section {APPDESC_SECTION} is {n} bytes, an esp_app_desc_t is {APP_DESC_SIZE}"
            ),
            E::MmuPage {
                chip,
                size,
                from_desc,
            } => {
                let src = if from_desc {
                    "the app descriptor's mmu_page_size"
                } else {
                    "the MMU page size"
                };
                write!(
                    f,
                    "{src} {size} bytes is not one {} can use ({})",
                    chip.display_name(),
                    PageSizes(chip)
                )
            }
            E::SegmentLength { name, len } => write!(
                f,
                "segment {name}: length {len:#x} is not a multiple of 4 (an unaligned address)"
            ),
            E::SegmentTooLong { name, len } => {
                write!(f, "segment {name}: length {len:#x} is 16 MB or more")
            }
            E::Unplaceable { name, addr } => write!(
                f,
                "flash segment {name} at {addr:#010x} cannot be placed at its MMU page offset"
            ),
            E::Sha256Boundary { offset } => write!(
                f,
                "cannot place the ELF SHA-256 at {offset:#x}: it crosses a segment boundary"
            ),
            E::Sha256NotZero { offset } => write!(
                f,
                "the 32 bytes at the ELF SHA-256 offset {offset:#x} are not zero: refusing to \
                 overwrite them"
            ),
            E::SecurePadNeedsDigest => {
                f.write_str("secure padding only applies with an appended SHA-256 digest")
            }
            E::PadWithoutDigest => f.write_str(
                "padding to a size without the appended digest: esptool 5.6 overwrites the \
                 image with 0xFF from offset 2 then (a bug); refusing to write such an image",
            ),
            E::SecurePadV1(chip) => write!(
                f,
                "Secure Boot v1 padding is for the ESP32 only, not {}",
                chip.display_name()
            ),
        }
    }
}

impl core::error::Error for Elf2ImageError<'_> {}

struct PageSizes(Chip);
impl fmt::Display for PageSizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes = self.0.mmu_page_sizes_log2();
        if sizes.is_empty() {
            return f.write_str("only 64KB");
        }
        for (i, l) in sizes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}KB", (1u32 << l) / 1024)?;
        }
        Ok(())
    }
}

const fn arch_name(machine: u16) -> &'static str {
    if machine == EM_XTENSA {
        "Xtensa"
    } else {
        "RISC-V"
    }
}

/// The `e_machine` of a chip's CPU.
pub const fn chip_machine(chip: Chip) -> u16 {
    match chip {
        Chip::Esp32 | Chip::Esp32s2 | Chip::Esp32s3 => EM_XTENSA,
        _ => EM_RISCV,
    }
}

/// Where the chip's ROM expects the bootloader, subtracted from the `--ram-only-header` pads
/// (esptool `BOOTLOADER_FLASH_OFFSET`).
const fn bootloader_flash_offset(chip: Chip) -> u64 {
    chip.bootloader_offset() as u64
}

/// One loadable section (or program header): `size` bytes at `off` in the file, then `zeros`.
#[derive(Clone, Copy, Debug)]
struct Piece<'a> {
    name: &'a str,
    addr: u32,
    off: u32,
    size: u32,
    zeros: u64,
    align: u32,
}

impl Piece<'_> {
    fn len(&self) -> u64 {
        self.size as u64 + self.zeros
    }
}

/// A run of merged pieces.
#[derive(Clone, Copy, Debug, Default)]
struct Seg {
    addr: u32,
    first: u16,
    count: u16,
    len: u64,
}

#[derive(Clone, Copy, Debug)]
enum Src {
    Zeros,
    /// `len` bytes of segment `seg` from byte `from`.
    Seg {
        seg: u8,
        from: u64,
    },
}

/// One segment of the output image.
#[derive(Clone, Copy, Debug)]
struct Out {
    addr: u32,
    src: Src,
    /// Data length, without `tail`.
    len: u64,
    /// Zeros after the data (the ESP32 page-tail workaround).
    tail: u64,
    checksum: bool,
}

const NO_PIECE: Piece<'static> = Piece {
    name: "",
    addr: 0,
    off: 0,
    size: 0,
    zeros: 0,
    align: 0,
};
const NO_OUT: Out = Out {
    addr: 0,
    src: Src::Zeros,
    len: 0,
    tail: 0,
    checksum: false,
};

/// A converted image, laid out: every check done, ready to [`emit`](Plan::emit).
pub struct Plan<'a> {
    elf: &'a [u8],
    opts: Options,
    entry: u32,
    pieces: [Piece<'a>; MAX_SECTIONS],
    segs: [Seg; MAX_SEGMENTS],
    nsegs: usize,
    outs: [Out; MAX_OUT],
    nouts: usize,
    /// Entries before the checksum (all, except with `ram_only_header`).
    checksum_after: usize,
    header_count: u8,
    patch: Option<(u32, [u8; HASH_LEN])>,
    /// Image length before the digest and 0xFF padding.
    body_len: u64,
    total_len: u64,
    mmu_page: u32,
    mmu_from: MmuPageFrom,
    sections: usize,
    unknown_sections: usize,
}

fn need<'a>(
    elf: &[u8],
    what: &'static str,
    offset: u64,
    len: u64,
) -> Result<(), Elf2ImageError<'a>> {
    if offset.checked_add(len).is_none_or(|e| e > elf.len() as u64) {
        return Err(Elf2ImageError::Truncated {
            what,
            offset,
            need: len,
            file_len: elf.len(),
        });
    }
    Ok(())
}

/// Python's `a % m` for a positive `m`.
fn pymod(a: i64, m: u64) -> u64 {
    a.rem_euclid(m as i64) as u64
}

fn pad4(n: u32) -> u32 {
    (4 - n % 4) % 4
}

impl<'a> Plan<'a> {
    /// Check `elf` and lay out its image for `opts`.
    pub fn new(elf: &'a [u8], opts: &Options) -> Result<Plan<'a>, Elf2ImageError<'a>> {
        use Elf2ImageError as E;
        let chip = opts.chip;
        let mut p = Plan {
            elf,
            opts: *opts,
            entry: 0,
            pieces: [NO_PIECE; MAX_SECTIONS],
            segs: [Seg::default(); MAX_SEGMENTS],
            nsegs: 0,
            outs: [NO_OUT; MAX_OUT],
            nouts: 0,
            checksum_after: 0,
            header_count: 0,
            patch: None,
            body_len: 0,
            total_len: 0,
            mmu_page: DEFAULT_MMU_PAGE_SIZE,
            mmu_from: MmuPageFrom::Default,
            sections: 0,
            unknown_sections: 0,
        };
        if opts.secure_pad == SecurePad::V1 && chip != Chip::Esp32 {
            return Err(E::SecurePadV1(chip));
        }
        // The file header (esptool `ELFFile._read_elf_file`).
        if elf.len() >= 4 && elf[..4] != crate::image::ELF_MAGIC {
            return Err(E::NotElf);
        }
        need(elf, "ELF header", 0, EHDR_LEN as u64)?;
        if elf[..4] != crate::image::ELF_MAGIC {
            return Err(E::NotElf);
        }
        if elf[EI_CLASS] != ELFCLASS32 {
            return Err(E::Class(elf[EI_CLASS]));
        }
        if elf[EI_DATA] != ELFDATA2LSB {
            return Err(E::Encoding(elf[EI_DATA]));
        }
        let machine = le16(elf, E_MACHINE);
        if machine != EM_XTENSA && machine != EM_RISCV {
            return Err(E::Machine(machine));
        }
        if machine != chip_machine(chip) {
            return Err(E::WrongArch { chip, machine });
        }
        p.entry = le32(elf, E_ENTRY);
        let phoff = le32(elf, E_PHOFF) as u64;
        let shoff = le32(elf, E_SHOFF) as u64;
        let phentsize = le16(elf, E_PHENTSIZE);
        let phnum = le16(elf, E_PHNUM);
        let shentsize = le16(elf, E_SHENTSIZE);
        let shnum = le16(elf, E_SHNUM);
        let shstrndx = le16(elf, E_SHSTRNDX);
        if shentsize as usize != SHDR_LEN {
            return Err(E::SectionHeaderSize(shentsize));
        }
        if shnum == 0 {
            return Err(E::NoSections);
        }
        need(
            elf,
            "section header table",
            shoff,
            shnum as u64 * SHDR_LEN as u64,
        )?;
        if shstrndx >= shnum {
            return Err(E::ShstrndxOutOfRange {
                index: shstrndx,
                count: shnum,
            });
        }
        let sh =
            |i: u16, field: usize| le32(elf, shoff as usize + i as usize * SHDR_LEN + field * 4);
        let (str_off, str_size) = (sh(shstrndx, SH_OFFSET) as u64, sh(shstrndx, SH_SIZE) as u64);
        need(elf, "section name table", str_off, str_size)?;
        let strtab = &elf[str_off as usize..(str_off + str_size) as usize];
        let name_of = |i: u16| -> Result<&'a str, Elf2ImageError<'a>> {
            let n = sh(i, SH_NAME);
            let bad = E::SectionName {
                index: i,
                name_offset: n,
            };
            let rest = strtab.get(n as usize..).ok_or(bad)?;
            let end = rest.iter().position(|&b| b == 0).ok_or(bad)?;
            let s = str_offset(elf, str_off as usize + n as usize, end);
            core::str::from_utf8(s).map_err(|_| bad)
        };
        // Sections (esptool `_read_sections`).
        let mut npieces = 0usize;
        let mut appdesc: Option<(u32, u32, u32)> = None; // addr, off, size
        for i in 0..shnum {
            let (ty, addr, off, size, align) = (
                sh(i, SH_TYPE),
                sh(i, SH_ADDR),
                sh(i, SH_OFFSET),
                sh(i, SH_SIZE),
                sh(i, SH_ADDRALIGN),
            );
            if addr == 0 || size == 0 {
                continue;
            }
            let prog = matches!(
                ty,
                SHT_PROGBITS | SHT_INIT_ARRAY | SHT_FINI_ARRAY | SHT_PREINIT_ARRAY
            );
            if !prog {
                if ty != SHT_NOBITS && ty != SHT_STRTAB {
                    p.unknown_sections += 1;
                }
                continue;
            }
            let name = name_of(i)?;
            if off as u64 + size as u64 > elf.len() as u64 {
                return Err(E::SectionData {
                    name,
                    index: i,
                    offset: off,
                    size,
                    file_len: elf.len(),
                });
            }
            if addr as u64 + size as u64 > 1 << 32 {
                return Err(E::AddressOverflow { name, addr, size });
            }
            p.sections += 1;
            if appdesc.is_none() && name.contains(APPDESC_SECTION) {
                appdesc = Some((addr, off, size));
            }
            if !opts.use_segments {
                if npieces == MAX_SECTIONS {
                    return Err(E::TooManySections);
                }
                p.pieces[npieces] = Piece {
                    name,
                    addr,
                    off,
                    size,
                    zeros: pad4(size) as u64,
                    align,
                };
                npieces += 1;
            }
        }
        // Program headers: always read (esptool `_read_segments` refuses a truncated table).
        if phnum > 0 {
            if phentsize as usize != PHDR_LEN {
                return Err(E::ProgramHeaderSize(phentsize));
            }
            need(
                elf,
                "program header table",
                phoff,
                phnum as u64 * PHDR_LEN as u64,
            )?;
        }
        if opts.use_segments {
            if phnum == 0 {
                return Err(E::NoProgramHeaders);
            }
            for i in 0..phnum {
                let ph =
                    |field: usize| le32(elf, phoff as usize + i as usize * PHDR_LEN + field * 4);
                let (ty, off, paddr, filesz, align) = (
                    ph(P_TYPE),
                    ph(P_OFFSET),
                    ph(P_PADDR),
                    ph(P_FILESZ),
                    ph(P_ALIGN),
                );
                if ty != PT_LOAD || paddr == 0 || filesz == 0 {
                    continue;
                }
                if off as u64 + filesz as u64 > elf.len() as u64 {
                    return Err(E::SectionData {
                        name: PHDR_NAME,
                        index: i,
                        offset: off,
                        size: filesz,
                        file_len: elf.len(),
                    });
                }
                if paddr as u64 + filesz as u64 > 1 << 32 {
                    return Err(E::AddressOverflow {
                        name: PHDR_NAME,
                        addr: paddr,
                        size: filesz,
                    });
                }
                if npieces == MAX_SECTIONS {
                    return Err(E::TooManySections);
                }
                p.pieces[npieces] = Piece {
                    name: PHDR_NAME,
                    addr: paddr,
                    off,
                    size: filesz,
                    zeros: pad4(filesz) as u64,
                    align,
                };
                npieces += 1;
            }
        }
        p.check_overlaps(npieces)?;
        // The MMU page size (esptool `elf2image`, `set_mmu_page_size`).
        let is_flash = |a: u32| chip.is_flash_mapped(a);
        let configurable = !chip.mmu_page_sizes_log2().is_empty();
        if let Some(size) = opts.mmu_page_size {
            if !chip.mmu_page_size_supported(size) {
                return Err(E::MmuPage {
                    chip,
                    size: size as u64,
                    from_desc: false,
                });
            }
            p.mmu_page = size;
            p.mmu_from = MmuPageFrom::Option;
        } else if let Some((addr, off, size)) = appdesc.filter(|a| is_flash(a.0) && configurable) {
            if (size as u64 + pad4(size) as u64) < APP_DESC_SIZE as u64 {
                return Err(E::AppDescTooShort(size as usize));
            }
            let byte = |i: usize| {
                if i < size as usize {
                    elf[off as usize + i]
                } else {
                    0
                }
            };
            let magic = u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]);
            if magic == APP_DESC_MAGIC {
                let log2 = byte(APPDESC_MMU_PAGE_OFFSET);
                if log2 != 0 {
                    // esptool: f"{2**log2 // 1024} KB" back to bytes.
                    let size = if log2 >= 64 {
                        u64::MAX
                    } else {
                        ((1u128 << log2) / 1024 * 1024) as u64
                    };
                    if size > u32::MAX as u64 || !chip.mmu_page_size_supported(size as u32) {
                        return Err(E::MmuPage {
                            chip,
                            size,
                            from_desc: true,
                        });
                    }
                    p.mmu_page = size as u32;
                    p.mmu_from = MmuPageFrom::AppDesc;
                } else {
                    p.mmu_from = MmuPageFrom::DefaultUnaligned;
                    for &l in chip.mmu_page_sizes_log2().iter().rev() {
                        let page = 1u64 << l;
                        if (addr as i64 - FIRST_DATA_OFFSET as i64).rem_euclid(page as i64) == 0 {
                            p.mmu_page = page as u32;
                            p.mmu_from = MmuPageFrom::AppDescAddress;
                            break;
                        }
                    }
                }
            }
        }
        // The ELF's SHA-256 into the image.
        let sha_offset = match opts.elf_sha256_offset {
            Some(o) if o != 0 => Some(o),
            _ => {
                let first = p.pieces[..npieces]
                    .iter()
                    .find(|s| s.name.contains(APPDESC_SECTION));
                first
                    .filter(|s| is_flash(s.addr))
                    .map(|_| APPDESC_SHA256_OFFSET)
            }
        };
        if opts.ram_only_header {
            // A stable sort by address (esptool `sort_segments`).
            let pieces = &mut p.pieces[..npieces];
            for i in 1..pieces.len() {
                let mut j = i;
                while j > 0 && pieces[j - 1].addr > pieces[j].addr {
                    pieces.swap(j - 1, j);
                    j -= 1;
                }
            }
        }
        p.merge(npieces)?;
        p.layout(sha_offset)?;
        Ok(p)
    }

    fn check_overlaps(&self, n: usize) -> Result<(), Elf2ImageError<'a>> {
        let mut idx = [0u8; MAX_SECTIONS];
        for (i, v) in idx.iter_mut().enumerate().take(n) {
            *v = i as u8;
        }
        let idx = &mut idx[..n];
        for i in 1..idx.len() {
            let mut j = i;
            while j > 0 && self.pieces[idx[j - 1] as usize].addr > self.pieces[idx[j] as usize].addr
            {
                idx.swap(j - 1, j);
                j -= 1;
            }
        }
        for w in idx.windows(2) {
            let (a, b) = (&self.pieces[w[0] as usize], &self.pieces[w[1] as usize]);
            let a_end = a.addr as u64 + a.size as u64;
            if a_end > b.addr as u64 {
                return Err(Elf2ImageError::Overlap {
                    first: a.name,
                    first_addr: a.addr,
                    first_end: a_end,
                    second: b.name,
                    second_addr: b.addr,
                });
            }
        }
        Ok(())
    }

    /// esptool `merge_adjacent_segments`: a piece joins its predecessor when it starts where
    /// the predecessor's (padded) data ends, in the same memory types.
    #[allow(clippy::needless_range_loop)] // pieces i-1 and i, and joins[i], together
    fn merge(&mut self, n: usize) -> Result<(), Elf2ImageError<'a>> {
        let chip = self.opts.chip;
        if n == 0 {
            return Ok(());
        }
        // Pass 1: which piece joins its predecessor (`joins[i]` for piece i).
        let mut joins = [false; MAX_SECTIONS];
        let mut count = 1usize;
        for i in 1..n {
            let next = self.pieces[i];
            let elem = &mut self.pieces[i - 1];
            if self.opts.ram_only_header {
                // esptool pads the predecessor up to the next one's alignment when that is
                // exactly where the next one starts (a 0 alignment counts as 1).
                let align = next.align.max(1) as u64;
                let end = elem.addr as u64 + elem.len();
                let padded = end.div_ceil(align) * align;
                if padded != end && padded == next.addr as u64 {
                    elem.zeros += padded - end;
                }
            }
            let elem = *elem;
            let same_types = chip
                .memory_types(elem.addr)
                .iter()
                .eq(chip.memory_types(next.addr).iter());
            joins[i] = same_types && next.addr as u64 == elem.addr as u64 + elem.len();
            count += usize::from(!joins[i]);
        }
        if count > MAX_SEGMENTS {
            return Err(Elf2ImageError::TooManySegments(count));
        }
        // Pass 2: the runs.
        let mut k = 0usize;
        for i in 0..n {
            let len = self.pieces[i].len();
            if i > 0 && joins[i] {
                self.segs[k - 1].count += 1;
                self.segs[k - 1].len += len;
            } else {
                self.segs[k] = Seg {
                    addr: self.pieces[i].addr,
                    first: i as u16,
                    count: 1,
                    len,
                };
                k += 1;
            }
        }
        self.nsegs = k;
        Ok(())
    }

    fn seg_name(&self, s: usize) -> &'a str {
        self.pieces[self.segs[s].first as usize].name
    }

    fn push_out(
        &mut self,
        pos: &mut u64,
        o: Out,
        name: &'a str,
        sha: Option<u32>,
    ) -> Result<(), Elf2ImageError<'a>> {
        use Elf2ImageError as E;
        let len = o.len + o.tail;
        if self.nouts == MAX_OUT {
            return Err(E::TooManyOutputSegments(self.nouts + 1));
        }
        if let Some(off) = sha {
            let off64 = off as u64;
            if *pos <= off64 && off64 < *pos + len {
                let rel = off64 - *pos;
                if rel < SEGMENT_HEADER_SIZE as u64 || rel + HASH_LEN as u64 > len {
                    return Err(E::Sha256Boundary { offset: off });
                }
                if !self.all_zero(&o, rel - SEGMENT_HEADER_SIZE as u64, HASH_LEN as u64) {
                    return Err(E::Sha256NotZero { offset: off });
                }
                let mut h = [0u8; HASH_LEN];
                h.copy_from_slice(&Sha256::digest(self.elf));
                self.patch = Some((off, h));
            }
        }
        if !len.is_multiple_of(4) {
            return Err(E::SegmentLength { name, len });
        }
        if len >= MAX_SEGMENT_LEN as u64 {
            return Err(E::SegmentTooLong { name, len });
        }
        self.outs[self.nouts] = o;
        self.nouts += 1;
        *pos += SEGMENT_HEADER_SIZE as u64 + len;
        Ok(())
    }

    fn all_zero(&self, o: &Out, from: u64, n: u64) -> bool {
        let mut zero = true;
        let _ = self.for_each(o, from, n, &mut |c: Chunk| {
            if let Chunk::Data(d) = c {
                zero &= d.iter().all(|&b| b == 0);
            }
            Ok::<(), ()>(())
        });
        zero
    }

    /// The bytes `[from, from + n)` of an output segment's data (tail included), in chunks.
    fn for_each<E>(
        &self,
        o: &Out,
        from: u64,
        n: u64,
        f: &mut impl FnMut(Chunk<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let end = from + n;
        let (dlo, dhi) = (from.min(o.len), end.min(o.len));
        match o.src {
            Src::Zeros => {
                if dlo < dhi {
                    f(Chunk::Zeros(dhi - dlo))?;
                }
            }
            Src::Seg { seg, from: base } => {
                // Bytes [base + dlo, base + dhi) of the merged segment.
                let (lo, hi) = (base + dlo, base + dhi);
                let s = self.segs[seg as usize];
                let mut start = 0u64;
                for p in &self.pieces[s.first as usize..(s.first + s.count) as usize] {
                    let pend = start + p.len();
                    let (a, b) = (lo.max(start), hi.min(pend));
                    if a < b {
                        let (a, b) = (a - start, b - start);
                        let size = p.size as u64;
                        if a < size {
                            let (da, db) = (p.off as u64 + a, p.off as u64 + b.min(size));
                            f(Chunk::Data(&self.elf[da as usize..db as usize]))?;
                        }
                        if b > size {
                            f(Chunk::Zeros(b - a.max(size)))?;
                        }
                    }
                    start = pend;
                }
            }
        }
        let (ta, tb) = (from.max(o.len), end.min(o.len + o.tail));
        if ta < tb {
            f(Chunk::Zeros(tb - ta))?;
        }
        Ok(())
    }

    /// esptool `ESP32FirmwareImage.save`, as positions.
    fn layout(&mut self, sha: Option<u32>) -> Result<(), Elf2ImageError<'a>> {
        use Elf2ImageError as E;
        let chip = self.opts.chip;
        let page = self.mmu_page as u64;
        let hdr = SEGMENT_HEADER_SIZE as u64;
        // Flash and RAM segments, each sorted by address (stable).
        let mut flash = [0u8; MAX_SEGMENTS];
        let mut ram = [0u8; MAX_SEGMENTS];
        let (mut nf, mut nr) = (0usize, 0usize);
        let mut order = [0u8; MAX_SEGMENTS];
        for (i, v) in order.iter_mut().enumerate().take(self.nsegs) {
            *v = i as u8;
        }
        let order = &mut order[..self.nsegs];
        for i in 1..order.len() {
            let mut j = i;
            while j > 0 && self.segs[order[j - 1] as usize].addr > self.segs[order[j] as usize].addr
            {
                order.swap(j - 1, j);
                j -= 1;
            }
        }
        for &s in order.iter() {
            if chip.is_flash_mapped(self.segs[s as usize].addr) {
                flash[nf] = s;
                nf += 1;
            } else {
                ram[nr] = s;
                nr += 1;
            }
        }
        let to_front = |list: &mut [u8], name: &str, plan: &Plan| {
            if let Some(k) = list.iter().position(|&s| plan.seg_name(s as usize) == name) {
                list[..=k].rotate_right(1);
            }
        };
        to_front(&mut flash[..nf], APPDESC_SECTION, self);
        to_front(&mut ram[..nr], BOOTDESC_SECTION, self);
        for w in flash[..nf].windows(2) {
            let (a, b) = (self.segs[w[0] as usize].addr, self.segs[w[1] as usize].addr);
            if b as u64 / page == a as u64 / page {
                return Err(E::SamePage {
                    addr: b,
                    previous: a,
                    page: self.mmu_page,
                });
            }
        }
        let esp32_tail = |pos: u64, len: u64| -> u64 {
            if chip != Chip::Esp32 {
                return 0;
            }
            let rem = (pos + len + hdr) % page;
            ESP32_MMU_TAIL.saturating_sub(rem)
        };
        let seg_out = |s: u8, plan: &Plan, from: u64, len: u64, tail: u64, checksum: bool| Out {
            addr: (plan.segs[s as usize].addr as u64 + from) as u32,
            src: Src::Seg { seg: s, from },
            len,
            tail,
            checksum,
        };
        let zeros = |len: u64, checksum: bool| Out {
            addr: 0,
            src: Src::Zeros,
            len,
            tail: 0,
            checksum,
        };
        let mut pos = (HEADER_SIZE) as u64;
        if self.opts.ram_only_header {
            for &r in &ram[..nr] {
                let len = self.segs[r as usize].len;
                let o = seg_out(r, self, 0, len, 0, true);
                self.push_out(&mut pos, o, self.seg_name(r as usize), sha)?;
            }
            self.checksum_after = self.nouts;
            pos = (pos / CHECKSUM_BLOCK + 1) * CHECKSUM_BLOCK;
            let bfo = bootloader_flash_offset(chip);
            for k in (0..nf).rev() {
                let f = flash[k];
                let addr = self.segs[f as usize].addr as i64;
                let mut pad = pymod(addr - pos as i64 - 2 * hdr as i64, page);
                if pad < bfo {
                    pad += page;
                }
                pad -= bfo;
                let name = self.seg_name(f as usize);
                self.push_out(&mut pos, zeros(pad, false), name, sha)?;
                let len = self.segs[f as usize].len;
                let tail = esp32_tail(pos, len);
                let o = seg_out(f, self, 0, len, tail, false);
                self.push_out(&mut pos, o, name, sha)?;
            }
            self.header_count = nr as u8;
        } else {
            let (mut ri, mut rfrom) = (0usize, 0u64);
            let mut fi = 0usize;
            while fi < nf {
                let f = flash[fi];
                let addr = self.segs[f as usize].addr as u64;
                let name = self.seg_name(f as usize);
                // esptool `get_alignment_data_needed`.
                let align_past = (addr % page) as i64 - hdr as i64;
                let raw = (page - pos % page) as i64 + align_past;
                let pad = if raw == 0 || raw == page as i64 {
                    0
                } else {
                    let p = raw - hdr as i64;
                    if p < 0 {
                        (p + page as i64) as u64
                    } else {
                        p as u64
                    }
                };
                if pad > 0 {
                    if ri < nr && pad > hdr {
                        let r = ram[ri];
                        let left = self.segs[r as usize].len - rfrom;
                        let take = pad.min(left);
                        let o = seg_out(r, self, rfrom, take, 0, true);
                        self.push_out(&mut pos, o, name, sha)?;
                        rfrom += take;
                        if rfrom == self.segs[r as usize].len {
                            ri += 1;
                            rfrom = 0;
                        }
                    } else {
                        self.push_out(&mut pos, zeros(pad, true), name, sha)?;
                    }
                } else {
                    if (pos + hdr) % page != addr % page {
                        return Err(E::Unplaceable {
                            name,
                            addr: addr as u32,
                        });
                    }
                    let len = self.segs[f as usize].len;
                    let tail = esp32_tail(pos, len);
                    let o = seg_out(f, self, 0, len, tail, true);
                    self.push_out(&mut pos, o, name, sha)?;
                    fi += 1;
                }
            }
            while ri < nr {
                let r = ram[ri];
                let len = self.segs[r as usize].len - rfrom;
                let o = seg_out(r, self, rfrom, len, 0, true);
                self.push_out(&mut pos, o, self.seg_name(r as usize), sha)?;
                ri += 1;
                rfrom = 0;
            }
        }
        let append_digest = self.opts.append_digest && !self.opts.ram_only_header;
        if self.opts.secure_pad != SecurePad::None {
            if !append_digest {
                return Err(E::SecurePadNeedsDigest);
            }
            let after = if self.opts.secure_pad == SecurePad::V1 {
                SECURE_PAD_V1_AFTER
            } else {
                SECURE_PAD_V2_AFTER
            };
            let align_past = (pos + hdr) % page;
            let pad = pymod(
                page as i64 - align_past as i64 - CHECKSUM_BLOCK as i64 - after as i64,
                page,
            );
            self.push_out(&mut pos, zeros(pad, true), "secure padding", sha)?;
        }
        if !self.opts.ram_only_header {
            self.checksum_after = self.nouts;
            pos = (pos / CHECKSUM_BLOCK + 1) * CHECKSUM_BLOCK;
            if self.nouts > MAX_SEGMENTS {
                return Err(E::TooManyOutputSegments(self.nouts));
            }
            self.header_count = self.nouts as u8;
        }
        self.body_len = pos;
        let mut total = pos + if append_digest { HASH_LEN as u64 } else { 0 };
        let block = self.opts.pad_to_size as u64;
        if !append_digest && block > 2 {
            return Err(E::PadWithoutDigest);
        }
        if block > 0 && !total.is_multiple_of(block) {
            total += block - total % block;
        }
        self.total_len = total;
        Ok(())
    }

    /// The image's length in bytes.
    pub fn image_len(&self) -> u64 {
        self.total_len
    }
    /// Segments in the image header.
    pub fn segment_count(&self) -> u8 {
        self.header_count
    }
    /// Loadable sections (or program headers) the ELF holds, and segments after merging.
    pub fn merged(&self) -> (usize, usize) {
        (self.sections, self.nsegs)
    }
    /// The MMU page the flash segments are aligned to, and where it came from.
    pub fn mmu_page(&self) -> (u32, MmuPageFrom) {
        (self.mmu_page, self.mmu_from)
    }
    /// Where the ELF's SHA-256 is patched into the image, if anywhere.
    pub fn elf_sha256_offset(&self) -> Option<u32> {
        self.patch.map(|(o, _)| o)
    }
    /// Sections of a type esptool does not know (skipped, as esptool does with a warning).
    pub fn unknown_sections(&self) -> usize {
        self.unknown_sections
    }

    /// Stream the image to `sink`, in order; returns its length.
    pub fn emit<E>(&self, sink: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<u64, E> {
        let o = &self.opts;
        let mut w = Writer {
            sink,
            pos: 0,
            sha: Sha256::new(),
            csum: CHECKSUM_SEED,
            in_csum: false,
            patch: self.patch,
        };
        let mut hdr = [0u8; HEADER_SIZE];
        hdr[0] = IMAGE_MAGIC;
        hdr[1] = self.header_count;
        hdr[2] = o.flash_mode;
        hdr[3] = (o.flash_size_code << 4).wrapping_add(o.flash_freq_code);
        hdr[4..8].copy_from_slice(&self.entry.to_le_bytes());
        let ext = &mut hdr[8..8 + EXT_HEADER_LEN];
        // wp_pin, 3 SPI drive bytes, chip_id, min_chip_rev, min_chip_rev_full,
        // max_chip_rev_full, 4 reserved, hash_appended (esp_app_format.h).
        ext[0] = WP_PIN_DISABLED;
        ext[4..6].copy_from_slice(&o.chip.id().to_le_bytes());
        ext[6] = o.min_rev;
        ext[7..9].copy_from_slice(&o.min_rev_full.to_le_bytes());
        ext[9..11].copy_from_slice(&o.max_rev_full.to_le_bytes());
        ext[15] = u8::from(o.append_digest && !o.ram_only_header);
        w.put(&hdr)?;
        for (i, out) in self.outs[..self.nouts].iter().enumerate() {
            if i == self.checksum_after {
                w.checksum()?;
            }
            let len = out.len + out.tail;
            let mut sh = [0u8; SEGMENT_HEADER_SIZE];
            sh[..4].copy_from_slice(&out.addr.to_le_bytes());
            sh[4..].copy_from_slice(&(len as u32).to_le_bytes());
            w.in_csum = false;
            w.put(&sh)?;
            w.in_csum = out.checksum;
            self.for_each(out, 0, len, &mut |c| match c {
                Chunk::Data(d) => w.put(d),
                Chunk::Zeros(n) => w.fill(0, n),
            })?;
            w.in_csum = false;
        }
        if self.checksum_after == self.nouts {
            w.checksum()?;
        }
        if o.append_digest && !o.ram_only_header {
            let digest = w.sha.clone().finalize();
            w.put(&digest)?;
        }
        let pad = self.total_len.saturating_sub(w.pos);
        w.fill(0xFF, pad)?;
        Ok(w.pos)
    }
}

fn str_offset(elf: &[u8], at: usize, len: usize) -> &[u8] {
    elf.get(at..at + len).unwrap_or(&[])
}

#[derive(Clone, Copy)]
enum Chunk<'a> {
    Data(&'a [u8]),
    Zeros(u64),
}

struct Writer<'s, S> {
    sink: &'s mut S,
    pos: u64,
    sha: Sha256,
    csum: u8,
    in_csum: bool,
    patch: Option<(u32, [u8; HASH_LEN])>,
}

impl<S: FnMut(&[u8]) -> Result<(), E>, E> Writer<'_, S> {
    fn raw(&mut self, b: &[u8]) -> Result<(), E> {
        if self.in_csum {
            self.csum = b.iter().fold(self.csum, |c, x| c ^ x);
        }
        self.sha.update(b);
        self.pos += b.len() as u64;
        (self.sink)(b)
    }

    /// Write `b` at the current position, the ELF SHA-256 patch laid over it.
    fn put(&mut self, mut b: &[u8]) -> Result<(), E> {
        if let Some((off, hash)) = self.patch {
            let (ps, pe) = (off as u64, off as u64 + HASH_LEN as u64);
            while !b.is_empty() {
                let (s, e) = (self.pos, self.pos + b.len() as u64);
                if e <= ps || s >= pe {
                    break;
                }
                if s < ps {
                    let n = (ps - s) as usize;
                    self.raw(&b[..n])?;
                    b = &b[n..];
                    continue;
                }
                let n = (pe.min(e) - s) as usize;
                let h = (s - ps) as usize;
                self.raw(&hash[h..h + n])?;
                b = &b[n..];
            }
        }
        if !b.is_empty() {
            self.raw(b)?;
        }
        Ok(())
    }

    fn fill(&mut self, byte: u8, mut n: u64) -> Result<(), E> {
        let buf = [byte; 64];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.put(&buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Zeros to the last byte of a 16-byte block, then the checksum there.
    fn checksum(&mut self) -> Result<(), E> {
        self.in_csum = false;
        let n = CHECKSUM_BLOCK - 1 - self.pos % CHECKSUM_BLOCK;
        self.fill(0, n)?;
        let c = self.csum;
        self.put(&[c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small RISC-V ELF: `.flash.appdesc` + `.flash.rodata` in DROM, `.flash.text` in IROM,
    /// `.dram0.data`, one PT_LOAD per section.
    fn small_elf(out: &mut [u8; 2048]) -> usize {
        let put = |o: &mut [u8; 2048], at: usize, v: &[u8]| o[at..at + v.len()].copy_from_slice(v);
        let names = b"\0.flash.appdesc\0.flash.rodata\0.flash.text\0.dram0.data\0.shstrtab\0";
        // (name offset, addr, size)
        let secs: [(u32, u32, u32); 4] = [
            (1, 0x3C00_0020, 256),
            (16, 0x3C00_0120, 0x40),
            (30, 0x4200_0020, 0x80),
            (42, 0x3FC8_0000, 0x3E),
        ];
        let phoff = 52usize;
        let mut data_at = phoff + 4 * 32;
        let mut offs = [0usize; 4];
        for (i, s) in secs.iter().enumerate() {
            offs[i] = data_at;
            for k in 0..s.2 as usize {
                out[data_at + k] = (k as u8).wrapping_mul(7).wrapping_add(i as u8);
            }
            data_at += (s.2 as usize).div_ceil(4) * 4;
        }
        // The descriptor: magic, zero SHA-256 field.
        put(out, offs[0], &APP_DESC_MAGIC.to_le_bytes());
        out[offs[0] + 0x90..offs[0] + 0xB0].fill(0);
        out[offs[0] + 180] = 0;
        let str_at = data_at;
        put(out, str_at, names);
        let shoff = (str_at + names.len()).div_ceil(4) * 4;
        put(out, 0, b"\x7fELF\x01\x01\x01");
        put(out, 16, &2u16.to_le_bytes());
        put(out, 18, &EM_RISCV.to_le_bytes());
        put(out, 24, &0x4200_0020u32.to_le_bytes());
        put(out, 28, &(phoff as u32).to_le_bytes());
        put(out, 32, &(shoff as u32).to_le_bytes());
        put(out, 42, &32u16.to_le_bytes());
        put(out, 44, &4u16.to_le_bytes());
        put(out, 46, &40u16.to_le_bytes());
        put(out, 48, &6u16.to_le_bytes());
        put(out, 50, &5u16.to_le_bytes());
        for (i, s) in secs.iter().enumerate() {
            let ph = [PT_LOAD, offs[i] as u32, s.1, s.1, s.2, s.2, 5, 4];
            for (k, w) in ph.iter().enumerate() {
                put(out, phoff + i * 32 + k * 4, &w.to_le_bytes());
            }
            let sh = [s.0, SHT_PROGBITS, 2, s.1, offs[i] as u32, s.2, 0, 0, 4, 0];
            for (k, w) in sh.iter().enumerate() {
                put(out, shoff + (i + 1) * 40 + k * 4, &w.to_le_bytes());
            }
        }
        let sh = [
            55u32,
            SHT_STRTAB,
            0,
            0,
            str_at as u32,
            names.len() as u32,
            0,
            0,
            1,
            0,
        ];
        for (k, w) in sh.iter().enumerate() {
            put(out, shoff + 5 * 40 + k * 4, &w.to_le_bytes());
        }
        shoff + 6 * 40
    }

    fn emit_len(p: &Plan) -> u64 {
        let mut n = 0u64;
        let got = p
            .emit(&mut |b: &[u8]| {
                n += b.len() as u64;
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(got, n);
        n
    }

    #[test]
    fn a_small_elf_converts_and_every_mutation_of_it_is_handled_without_panic() {
        let mut buf = [0u8; 2048];
        let len = small_elf(&mut buf);
        let elf = &buf[..len];
        let mut opts = Options::new(Chip::Esp32c3);
        let p = Plan::new(elf, &opts).unwrap();
        assert_eq!(emit_len(&p), p.image_len());
        // desc+rodata merge; text; data: 3 segments plus the pads that align the text.
        assert_eq!(p.merged(), (4, 3));
        assert_eq!(p.elf_sha256_offset(), Some(APPDESC_SHA256_OFFSET));
        let mut x = 0x1234_5678u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..3_000u32 {
            let mut m = [0u8; 2048];
            m[..len].copy_from_slice(elf);
            for _ in 0..1 + next() % 4 {
                let at = next() as usize % len;
                m[at] = next() as u8;
            }
            let cut = if round % 7 == 0 {
                next() as usize % len
            } else {
                len
            };
            let bits = next();
            opts.use_segments = bits & 1 != 0;
            opts.ram_only_header = bits & 2 != 0;
            opts.append_digest = bits & 4 == 0;
            opts.secure_pad = if bits & 8 != 0 {
                SecurePad::V2
            } else {
                SecurePad::None
            };
            if let Ok(p) = Plan::new(&m[..cut], &opts) {
                assert_eq!(emit_len(&p), p.image_len(), "round {round}");
            }
        }
    }

    #[test]
    fn garbage_and_truncated_elfs_are_refused_without_panic() {
        let opts = Options::new(Chip::Esp32c3);
        assert_eq!(
            Plan::new(b"", &opts).err(),
            Some(Elf2ImageError::Truncated {
                what: "ELF header",
                offset: 0,
                need: 52,
                file_len: 0
            })
        );
        assert_eq!(
            Plan::new(b"MZ\0\0\0", &opts).err(),
            Some(Elf2ImageError::NotElf)
        );
        let mut h = [0u8; 52];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        assert_eq!(Plan::new(&h, &opts).err(), Some(Elf2ImageError::Class(2)));
        h[4] = 1;
        h[5] = 1;
        h[18] = 0x5E;
        assert!(matches!(
            Plan::new(&h, &opts).err(),
            Some(Elf2ImageError::WrongArch { .. })
        ));
        // Every prefix and every single-byte corruption of a tiny valid-looking header.
        h[18] = 0xF3;
        h[46] = 40;
        h[48] = 1;
        for n in 0..h.len() {
            let _ = Plan::new(&h[..n], &opts);
        }
        for i in 0..h.len() {
            for v in [0u8, 1, 0x7F, 0xFF] {
                let mut c = h;
                c[i] = v;
                let _ = Plan::new(&c, &opts);
            }
        }
    }
}
