//! A flash image file for the toolbox commands (`ota otadata|partition|flash`): any length (an
//! `esptool merge-bin` output need not end on a sector; past its end the flash reads as erased
//! 0xFF), every change made through the emulated NOR flash (erase, then program), and the file
//! replaced only after the whole command succeeded, so bad input leaves it exactly as it was.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use ota_core::partition::{CsvOptions, Partition, PartitionTable, ReadRule, TABLE_MAX_LEN};
use ota_emu::device::{detect_bootloader, BootloaderInfo};
use ota_emu::flash::{EmuFlash, ERASED, SECTOR_SIZE};

/// A flash image loaded into an in-memory emulated flash.
pub struct FlashFile {
    path: PathBuf,
    flash: EmuFlash,
    /// Length of the file as it was opened.
    file_len: u64,
}

impl FlashFile {
    /// Load `path`: a regular file, not empty, of at most 128 MB (`input::FLASH_LIMIT`, the
    /// largest flash an ESP32-class chip has); FIFOs, devices and directories are refused.
    pub fn open(path: &Path) -> Result<FlashFile> {
        let mut image = crate::input::read_bounded(path, crate::input::FLASH_LIMIT, "flash image")?;
        let file_len = image.len() as u64;
        if file_len == 0 {
            bail!("flash image {} is empty", path.display());
        }
        image.resize(
            image.len().div_ceil(SECTOR_SIZE as usize) * SECTOR_SIZE as usize,
            ERASED,
        );
        let flash = EmuFlash::from_image(image)
            .map_err(|e| anyhow!("flash image {}: {}", path.display(), e))?;
        Ok(FlashFile {
            path: path.to_path_buf(),
            flash,
            file_len,
        })
    }

    /// The file name for messages.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }
    /// Length of the image file (the flash beyond it is not part of the image).
    pub fn len(&self) -> u64 {
        self.file_len
    }
    pub fn flash_mut(&mut self) -> &mut EmuFlash {
        &mut self.flash
    }

    /// `[offset, offset + len)` must lie inside the image file; `what` names it in the error.
    pub fn check_range(&self, offset: u32, len: u64, what: &str) -> Result<()> {
        let end = u64::from(offset) + len;
        if end > self.file_len {
            bail!(
                "{} (0x{:x}..0x{:x}) goes beyond the end of flash image {} (0x{:x} bytes)",
                what,
                offset,
                end,
                self.name(),
                self.file_len
            );
        }
        Ok(())
    }

    /// The part of `p` that the (sector-padded) image holds: past the file's end the flash
    /// reads as erased. Fails when the partition starts beyond the image.
    pub fn clip(&self, p: &Partition, what: &str) -> Result<ota_core::flash::Region> {
        let cap = u64::from(self.flash.size());
        if u64::from(p.offset) >= self.file_len {
            bail!(
                "{} starts at 0x{:x}, beyond the end of flash image {} (0x{:x} bytes)",
                what,
                p.offset,
                self.name(),
                self.file_len
            );
        }
        let size = (u64::from(p.size)).min(cap - u64::from(p.offset)) as u32;
        Ok(ota_core::flash::Region::new(p.offset, size))
    }

    /// Read bytes that lie inside the image file.
    pub fn read(&mut self, offset: u32, len: u32, what: &str) -> Result<Vec<u8>> {
        self.check_range(offset, u64::from(len), what)?;
        let mut buf = vec![0u8; len as usize];
        ota_core::flash::read(&mut self.flash, offset, &mut buf)
            .map_err(|e| anyhow!("{}: {}", what, e))?;
        Ok(buf)
    }

    /// Erase the sectors covering `[offset, offset + bytes.len())` and program `bytes` there,
    /// keeping the bytes of partly covered sectors outside the range (`layout::write_raw`).
    pub fn write(&mut self, offset: u32, bytes: &[u8], what: &str) -> Result<()> {
        self.check_range(offset, bytes.len() as u64, what)?;
        ota_emu::device::layout::write_raw(&mut self.flash, offset, bytes)
            .map_err(|e| anyhow!("{}: {}", what, e))
    }

    /// The 2nd-stage bootloader header (chip and flash size), if the image has one.
    pub fn bootloader(&mut self) -> Option<BootloaderInfo> {
        let name = self.name();
        detect_bootloader(&mut self.flash, &name).ok()
    }

    /// Write the image back, atomically (a temporary file renamed over it, or over the target
    /// of a symbolic link; `output::replace_regular`). The file keeps its length unless a change
    /// reached past its end (it then grows to the end of that sector).
    pub fn save(&self) -> Result<()> {
        let stats = self.flash.stats();
        let touched = stats
            .erase_counts
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |s| (s as u64 + 1) * u64::from(SECTOR_SIZE));
        let len = self.file_len.max(touched) as usize;
        let data = self
            .flash
            .contents()
            .get(..len)
            .unwrap_or(self.flash.contents());
        crate::output::replace_regular(&self.path, data, "flash image")?;
        Ok(())
    }
}

/// A partition table read from a flash image the way parttool.py and otatool.py read it from a
/// device: the 0xC00 bytes at the table offset through gen_esp32part's `from_binary`
/// (idf-formats.md §1.4c: MD5 entry checked when present, an all-0xFF end marker required).
pub struct FlashTable {
    pub offset: u32,
    pub table: PartitionTable,
    /// gen_esp32part's `verify()` complaint (§1.7), if any: parttool.py does not verify, so this
    /// is a warning, but `partition write/erase` refuse a partition that overlaps another.
    pub verify_error: Option<String>,
    /// What the device's bootloader says about this table when the image has a bootloader
    /// header (§1.4a: e.g. an entry beyond the flash chip size makes it refuse the whole table).
    pub bootloader_error: Option<String>,
}

pub fn read_table(ff: &mut FlashFile, offset: u32) -> Result<FlashTable> {
    let bytes = ff.read(
        offset,
        TABLE_MAX_LEN as u32,
        &format!("the partition table at 0x{:x}", offset),
    )?;
    let table = PartitionTable::parse(&bytes, ReadRule::GenTool).map_err(|e| {
        anyhow!(
            "partition table at 0x{:x} of {} is invalid: {} (read as parttool.py does, with \
             gen_esp32part's from_binary)",
            offset,
            ff.name(),
            e
        )
    })?;
    let opts = CsvOptions {
        table_offset: offset,
        ..CsvOptions::default()
    };
    let verify_error = table.verify(&opts).err().map(|e| e.to_string());
    let bootloader_error = ff.bootloader().and_then(|b| {
        PartitionTable::parse(
            &bytes,
            ReadRule::Bootloader {
                chip_size: b.flash_size,
            },
        )
        .err()
        .map(|e| {
            format!(
                "the device's bootloader refuses this table: {} (flash size {} MB from its image header)",
                e,
                b.flash_size >> 20
            )
        })
    });
    Ok(FlashTable {
        offset,
        table,
        verify_error,
        bootloader_error,
    })
}

impl FlashTable {
    /// The partition labelled `label`, or an error listing the labels there are.
    pub fn find(&self, label: &str) -> Result<Partition> {
        if let Some(p) = self.table.find_by_label(label) {
            return Ok(*p);
        }
        let labels: Vec<&str> = self.table.iter().map(|p| p.label.as_str()).collect();
        bail!(
            "no partition labelled '{}' in the table at 0x{:x} (labels: {})",
            label,
            self.offset,
            labels.join(", ")
        )
    }

    /// Another partition sharing bytes with `p`, if any.
    pub fn overlapping(&self, p: &Partition) -> Option<Partition> {
        let (s, e) = (u64::from(p.offset), u64::from(p.offset) + u64::from(p.size));
        self.table
            .iter()
            .filter(|o| **o != *p)
            .find(|o| {
                let (os, oe) = (u64::from(o.offset), u64::from(o.offset) + u64::from(o.size));
                os < e && s < oe && p.size > 0 && o.size > 0
            })
            .copied()
    }
}

/// A partition table read leniently, for showing what a table that a reader refuses holds:
/// every entry from the start that is a partition (magic `AA 50`), skipping the MD5 entry
/// (`EB EB`), up to the end marker (`FF FF FF FF`) or the first entry that is neither, which is
/// named in `notes` (ESP-IDF `components/bootloader_support/src/flash_partitions.c`
/// `esp_partition_table_verify` walks the same entries, and refuses the table there).
pub struct LenientTable {
    pub partitions: Vec<Partition>,
    /// What the walk met besides partitions: the MD5 entry, where it stopped and why.
    pub notes: Vec<String>,
}

pub fn read_table_lenient(bytes: &[u8]) -> LenientTable {
    use ota_core::partition::{ENTRY_SIZE, MAGIC, MAGIC_END, MAGIC_MD5, TYPE_END};
    let mut partitions = Vec::new();
    let mut notes = Vec::new();
    let mut end = false;
    for (i, e) in bytes.chunks_exact(ENTRY_SIZE).enumerate() {
        let Ok(entry) = <&[u8; ENTRY_SIZE]>::try_from(e) else {
            break;
        };
        let magic = u16::from_le_bytes([e[0], e[1]]);
        if magic == MAGIC_END && e[2] == TYPE_END && e[3] == TYPE_END {
            end = true;
            break;
        }
        if magic == MAGIC_MD5 {
            notes.push(format!(
                "entry {} (byte 0x{:x}) is the MD5 entry",
                i,
                i * ENTRY_SIZE
            ));
            continue;
        }
        if magic != MAGIC {
            notes.push(format!(
                "entry {} (byte 0x{:x}) starts {:02x} {:02x}: neither a partition (aa 50), the \
                 MD5 entry (eb eb) nor the end marker (ff ff ff ff); read no further",
                i,
                i * ENTRY_SIZE,
                e[0],
                e[1]
            ));
            end = true;
            break;
        }
        partitions.push(Partition::from_bytes(entry));
    }
    if !end {
        notes.push(format!(
            "no end marker (ff ff ff ff) in the 0x{:x} bytes of the table",
            bytes.len()
        ));
    }
    LenientTable { partitions, notes }
}
