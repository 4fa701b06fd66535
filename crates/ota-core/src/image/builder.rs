//! A streaming builder of valid, deterministic app and bootloader images (for tests, the
//! emulator and the CLI).

use super::verifier::round_up;
use super::{
    cstr_field, put, AppDesc, BootloaderDesc, ImageError, ImageHeader, APP_DESC_OFFSET,
    APP_DESC_SIZE, BOOTLOADER_DESC_MAGIC, BOOTLOADER_DESC_SIZE, CHECKSUM_ALIGN, CHECKSUM_SEED,
    CHIP_REV_UNSET, HASH_LEN, HEADER_SIZE, IMAGE_MAGIC, MAX_SEGMENTS, MAX_SEGMENT_LEN,
    SEGMENT_HEADER_SIZE, WP_PIN_DISABLED,
};
use crate::chip::{Chip, DEFAULT_MMU_PAGE_SIZE};
use sha2::{Digest, Sha256};

/// What [`build_image`] should produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec<'a> {
    pub chip: Chip,
    pub project_name: &'a str,
    pub version: &'a str,
    pub secure_version: u32,
    pub time: &'a str,
    pub date: &'a str,
    pub idf_ver: &'a str,
    pub elf_sha256: [u8; 32],
    /// Header byte 2 (0 QIO, 1 QOUT, 2 DIO, 3 DOUT).
    pub flash_mode: u8,
    /// Size nibble 0..=7 (1MB..128MB), see [`flash_size_code_from_name`](super::flash_size_code_from_name).
    pub flash_size_code: u8,
    /// Frequency nibble, see [`flash_freq_code_from_name`](super::flash_freq_code_from_name).
    pub flash_freq_code: u8,
    pub entry_addr: u32,
    /// Approximate size of the file; segment data grows to reach it (None = tiny image).
    pub total_size: Option<u32>,
    /// Number of segments, 1..=16. Segment 0 is DROM with the app descriptor.
    pub segments: u8,
    pub hash_appended: bool,
    pub min_chip_rev_full: u16,
    pub max_chip_rev_full: u16,
    /// Seed of the deterministic pseudo-random segment content.
    pub fill_seed: u32,
    /// MMU page size the flash-mapped segments are laid out for (a power of two the chip
    /// supports; default 64 KiB). With a smaller page, IROM segments are placed as a linker
    /// for that page places them, so the image is valid only with that page size.
    pub mmu_page_size: u32,
    /// Record the page size in `esp_app_desc_t.mmu_page_size` (log2), as ESP-IDF v5.4+ does;
    /// false leaves the field 0, as older ESP-IDF versions do.
    pub record_mmu_page_size: bool,
}

/// Default compile time/date/IDF version written into built descriptors.
const DEFAULT_TIME: &str = "00:00:00";
const DEFAULT_DATE: &str = "Jan  1 2025";
const DEFAULT_IDF_VER: &str = "v5.4.1";
/// Default header flash parameters: DIO, 4MB (idf-formats.md §3.2).
const DEFAULT_FLASH_MODE: u8 = 2;
const DEFAULT_FLASH_SIZE_CODE: u8 = 2;
/// Built RAM segments stay this small so they fit every chip's RAM ranges.
const BUILD_RAM_SEG_CAP: u32 = 8 * 1024;
/// Segment data lengths when no total size is asked for.
const TINY_SEG0_LEN: u32 = APP_DESC_SIZE as u32 + 64;
const TINY_RAM_LEN: u32 = 64;
const TINY_FLASH_LEN: u32 = 128;

impl<'a> ImageSpec<'a> {
    /// A 3-segment, hash-appended, DIO/4MB image with fixed time/date/IDF version.
    pub fn new(chip: Chip, project_name: &'a str, version: &'a str) -> Self {
        ImageSpec {
            chip,
            project_name,
            version,
            secure_version: 0,
            time: DEFAULT_TIME,
            date: DEFAULT_DATE,
            idf_ver: DEFAULT_IDF_VER,
            elf_sha256: [0; 32],
            flash_mode: DEFAULT_FLASH_MODE,
            flash_size_code: DEFAULT_FLASH_SIZE_CODE,
            flash_freq_code: 0,
            entry_addr: chip.builder_iram_base(),
            total_size: None,
            segments: 3,
            hash_appended: true,
            min_chip_rev_full: 0,
            max_chip_rev_full: CHIP_REV_UNSET,
            fill_seed: 1,
            mmu_page_size: DEFAULT_MMU_PAGE_SIZE,
            record_mmu_page_size: false,
        }
    }

    /// The app descriptor this spec puts at file offset 0x20.
    pub fn app_desc(&self) -> Result<AppDesc, ImageError> {
        Ok(AppDesc {
            secure_version: self.secure_version,
            version: cstr_field(self.version, "version")?,
            project_name: cstr_field(self.project_name, "project_name")?,
            time: cstr_field(self.time, "time")?,
            date: cstr_field(self.date, "date")?,
            idf_ver: cstr_field(self.idf_ver, "idf_ver")?,
            app_elf_sha256: self.elf_sha256,
            mmu_page_size: if self.record_mmu_page_size {
                self.mmu_page_size.trailing_zeros() as u8
            } else {
                0
            },
            ..AppDesc::default()
        })
    }

    fn header(&self) -> Result<ImageHeader, ImageError> {
        if self.flash_size_code > 0xF {
            return Err(ImageError::BadSpec {
                field: "flash_size_code",
                reason: "must be a nibble (0..=15)",
            });
        }
        if self.flash_freq_code > 0xF {
            return Err(ImageError::BadSpec {
                field: "flash_freq_code",
                reason: "must be a nibble (0..=15)",
            });
        }
        Ok(ImageHeader {
            magic: IMAGE_MAGIC,
            segment_count: self.segments,
            spi_mode: self.flash_mode,
            spi_speed_size: (self.flash_size_code << 4) | self.flash_freq_code,
            entry_addr: self.entry_addr,
            wp_pin: WP_PIN_DISABLED,
            spi_pin_drv: [0; 3],
            chip_id: self.chip.id(),
            min_chip_rev: 0,
            min_chip_rev_full: self.min_chip_rev_full,
            max_chip_rev_full: self.max_chip_rev_full,
            reserved: [0; 4],
            hash_appended: self.hash_appended as u8,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SegKind {
    Drom,
    Dram,
    Iram,
    Irom,
}

/// Segment kinds after segment 0, repeating (like an IDF app: DROM, DRAM, IRAM, IROM, ...).
const KIND_CYCLE: [SegKind; 3] = [SegKind::Dram, SegKind::Iram, SegKind::Irom];

fn seg_kind(index: usize) -> SegKind {
    if index == 0 {
        SegKind::Drom
    } else {
        KIND_CYCLE[(index - 1) % KIND_CYCLE.len()]
    }
}

/// Deterministic xorshift32 filler.
struct Filler(u32);

impl Filler {
    fn new(seed: u32, segment: usize) -> Self {
        let s = seed ^ (segment as u32).wrapping_add(1).wrapping_mul(0x9E37_79B9);
        Filler(if s == 0 { 0x1234_5678 } else { s })
    }
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(4) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            let b = x.to_le_bytes();
            let n = chunk.len();
            chunk.copy_from_slice(b.get(..n).unwrap_or(&[]));
        }
    }
}

/// Writes to the sink while hashing, XORing segment data and counting.
struct Emitter<'s, S: FnMut(&[u8])> {
    sink: &'s mut S,
    sha: Option<Sha256>,
    xor: u8,
    written: u64,
}

impl<S: FnMut(&[u8])> Emitter<'_, S> {
    fn raw(&mut self, b: &[u8]) {
        if let Some(sha) = self.sha.as_mut() {
            sha.update(b);
        }
        (self.sink)(b);
        self.written += b.len() as u64;
    }
    fn data(&mut self, b: &[u8]) {
        self.xor = b.iter().fold(self.xor, |c, x| c ^ x);
        self.raw(b);
    }
    fn filler(&mut self, filler: &mut Filler, mut len: u32) {
        let mut buf = [0u8; 64];
        while len > 0 {
            let n = (len as usize).min(buf.len());
            let chunk = &mut buf[..n];
            filler.fill(chunk);
            self.data(chunk);
            len -= n as u32;
        }
    }
    /// Zero padding and the checksum byte, then the hash if any. Returns bytes written.
    fn footer(mut self) -> u64 {
        let chk_at = round_up(self.written + 1, CHECKSUM_ALIGN) - 1;
        let pad = (chk_at - self.written) as usize;
        let zeros = [0u8; CHECKSUM_ALIGN as usize];
        self.raw(zeros.get(..pad).unwrap_or(&[]));
        let xor = self.xor;
        self.raw(&[xor]);
        if let Some(sha) = self.sha.take() {
            let digest: [u8; 32] = sha.finalize().into();
            (self.sink)(&digest);
            self.written += HASH_LEN as u64;
        }
        self.written
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct SegPlan {
    load: u32,
    len: u32,
}

fn plan_lengths(spec: &ImageSpec, n: usize) -> Result<[u32; MAX_SEGMENTS], ImageError> {
    let mut lens = [0u32; MAX_SEGMENTS];
    for (i, l) in lens.iter_mut().enumerate().take(n) {
        *l = match seg_kind(i) {
            SegKind::Drom => TINY_SEG0_LEN,
            SegKind::Dram | SegKind::Iram => TINY_RAM_LEN,
            SegKind::Irom => TINY_FLASH_LEN,
        };
    }
    let Some(target) = spec.total_size else {
        return Ok(lens);
    };
    let min_sum: u64 = lens.iter().map(|&l| l as u64).sum();
    let overhead = (HEADER_SIZE + n * SEGMENT_HEADER_SIZE + 1) as u64
        + if spec.hash_appended {
            HASH_LEN as u64
        } else {
            0
        };
    let data = (target as u64).saturating_sub(overhead) & !3;
    let mut extra = data.saturating_sub(min_sum);
    // RAM segments get a modest share, flash segments (0 and IROM ones) the rest.
    let ram_share = ((extra / n as u64) & !3).min(BUILD_RAM_SEG_CAP as u64);
    for (i, l) in lens.iter_mut().enumerate().take(n) {
        if matches!(seg_kind(i), SegKind::Dram | SegKind::Iram) {
            *l += ram_share as u32;
            extra -= ram_share;
        }
    }
    let flash_segs = (0..n)
        .filter(|&i| matches!(seg_kind(i), SegKind::Drom | SegKind::Irom))
        .count() as u64;
    let share = (extra / flash_segs) & !3;
    for (i, l) in lens.iter_mut().enumerate().take(n) {
        if matches!(seg_kind(i), SegKind::Drom | SegKind::Irom) {
            let add = if i == 0 {
                extra - share * (flash_segs - 1)
            } else {
                share
            };
            if *l as u64 + add >= MAX_SEGMENT_LEN as u64 {
                return Err(ImageError::BadSpec {
                    field: "total_size",
                    reason: "too large: a segment would reach 16 MiB",
                });
            }
            *l += add as u32;
        }
    }
    Ok(lens)
}

fn plan(spec: &ImageSpec) -> Result<[SegPlan; MAX_SEGMENTS], ImageError> {
    let n = spec.segments as usize;
    if n == 0 || n > MAX_SEGMENTS {
        return Err(ImageError::BadSpec {
            field: "segments",
            reason: "must be 1..=16",
        });
    }
    let lens = plan_lengths(spec, n)?;
    let chip = spec.chip;
    if !chip.mmu_page_size_supported(spec.mmu_page_size) {
        return Err(ImageError::BadSpec {
            field: "mmu_page_size",
            reason: "not an MMU page size this chip supports",
        });
    }
    let page = spec.mmu_page_size as u64;
    let mut plans = [SegPlan::default(); MAX_SEGMENTS];
    let mut file_pos = HEADER_SIZE as u64;
    let mut dram = chip.builder_dram_base();
    let mut iram = chip.builder_iram_base();
    let mut irom_page = chip.builder_irom_base() as u64;
    for i in 0..n {
        let len = lens[i];
        let data_off = file_pos + SEGMENT_HEADER_SIZE as u64;
        let load = match seg_kind(i) {
            // Segment 0 data sits at file offset 0x20: load at DROM base + 0x20 (MMU rule).
            SegKind::Drom => chip.drom_map().0 + APP_DESC_OFFSET as u32,
            SegKind::Dram => {
                let a = dram;
                dram = dram.wrapping_add(len);
                a
            }
            SegKind::Iram => {
                let a = iram;
                iram = iram.wrapping_add(len);
                a
            }
            // A fresh page, entered at the same in-page offset as the data's file offset.
            SegKind::Irom => {
                let a = irom_page + data_off % page;
                irom_page = round_up(a + len as u64, page);
                a as u32
            }
        };
        plans[i] = SegPlan { load, len };
        file_pos = data_off + len as u64;
    }
    Ok(plans)
}

/// Stream a valid app image for `spec` into `sink` (constant memory). Returns bytes written.
///
/// Layout: header; segment 0 = DROM at the chip's DROM base + 0x20 starting with the app
/// descriptor (file offset 0x20); then DRAM, IRAM, IROM, DRAM, ... segments of pseudo-random
/// content; zero padding; checksum; SHA-256 when `hash_appended`.
pub fn build_image(spec: &ImageSpec, sink: &mut impl FnMut(&[u8])) -> Result<u32, ImageError> {
    let header = spec.header()?;
    let desc = spec.app_desc()?;
    let plans = plan(spec)?;
    let mut e = Emitter {
        sink,
        sha: if spec.hash_appended {
            Some(Sha256::new())
        } else {
            None
        },
        xor: CHECKSUM_SEED,
        written: 0,
    };
    e.raw(&header.to_bytes());
    for (i, p) in plans.iter().enumerate().take(spec.segments as usize) {
        let mut sh = [0u8; SEGMENT_HEADER_SIZE];
        put(&mut sh, 0, &p.load.to_le_bytes());
        put(&mut sh, 4, &p.len.to_le_bytes());
        e.raw(&sh);
        let mut filler = Filler::new(spec.fill_seed, i);
        let mut len = p.len;
        if i == 0 {
            e.data(&desc.to_bytes());
            len -= APP_DESC_SIZE as u32;
        }
        e.filler(&mut filler, len);
    }
    let total = e.footer();
    u32::try_from(total).map_err(|_| ImageError::BadSpec {
        field: "total_size",
        reason: "image over 4 GiB",
    })
}

/// Bootloader descriptor fields written by [`build_bootloader`].
const BOOTLOADER_VERSION: u32 = 1;
const BOOTLOADER_IDF_VER: &str = "v5.4.1";
const BOOTLOADER_DATE_TIME: &str = "Jan  1 2025 00:00:00";
/// Segment sizes of the built bootloader: DRAM (descriptor + filler) and IRAM. The IRAM
/// segment stays below 80 bytes so that esptool (which takes the last DRAM-typed segment of
/// ≥ 80 bytes) still finds the descriptor on chips where IRAM and DRAM share addresses.
const BOOTLOADER_DRAM_LEN: u32 = 256;
const BOOTLOADER_IRAM_LEN: u32 = 64;

/// Stream a small "bootloader-like" image for `chip` (header with DIO, the chip's code-0
/// frequency and `flash_size_code`; a DRAM segment starting with an `esp_bootloader_desc_t`
/// at file offset 0x20; an IRAM segment; checksum; SHA-256). Returns bytes written.
pub fn build_bootloader(
    chip: Chip,
    flash_size_code: u8,
    sink: &mut impl FnMut(&[u8]),
) -> Result<u32, ImageError> {
    if flash_size_code > 0xF {
        return Err(ImageError::BadSpec {
            field: "flash_size_code",
            reason: "must be a nibble (0..=15)",
        });
    }
    let iram = chip.builder_iram_base();
    let header = ImageHeader {
        magic: IMAGE_MAGIC,
        segment_count: 2,
        spi_mode: DEFAULT_FLASH_MODE,
        spi_speed_size: flash_size_code << 4,
        entry_addr: iram,
        wp_pin: WP_PIN_DISABLED,
        chip_id: chip.id(),
        max_chip_rev_full: CHIP_REV_UNSET,
        hash_appended: 1,
        ..ImageHeader::default()
    };
    let desc = BootloaderDesc {
        magic_byte: BOOTLOADER_DESC_MAGIC,
        reserved: [0; 2],
        secure_version: 0,
        version: BOOTLOADER_VERSION,
        idf_ver: cstr_field(BOOTLOADER_IDF_VER, "idf_ver")?,
        date_time: cstr_field(BOOTLOADER_DATE_TIME, "date_time")?,
        reserved2: [0; 16],
    };
    let mut e = Emitter {
        sink,
        sha: Some(Sha256::new()),
        xor: CHECKSUM_SEED,
        written: 0,
    };
    e.raw(&header.to_bytes());
    let segs = [
        (chip.builder_dram_base(), BOOTLOADER_DRAM_LEN),
        (iram, BOOTLOADER_IRAM_LEN),
    ];
    for (i, (load, len)) in segs.into_iter().enumerate() {
        let mut sh = [0u8; SEGMENT_HEADER_SIZE];
        put(&mut sh, 0, &load.to_le_bytes());
        put(&mut sh, 4, &len.to_le_bytes());
        e.raw(&sh);
        let mut filler = Filler::new(chip.id() as u32, i);
        let mut rest = len;
        if i == 0 {
            e.data(&desc.to_bytes());
            rest -= BOOTLOADER_DESC_SIZE as u32;
        }
        e.filler(&mut filler, rest);
    }
    Ok(e.footer() as u32)
}
