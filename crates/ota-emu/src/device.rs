//! The emulated device: the flash image is the whole device. Opening one finds the chip and
//! flash size in the 2nd-stage bootloader's image header (idf-formats.md §1.1, §3.2) and reads
//! the partition table the way the bootloader does (§1.4a). [`layout`] lays out a new image.

use embedded_storage::nor_flash::{NorFlashErrorKind, ReadNorFlash};
use ota_core::flash::TrackedFlash;
use ota_core::image::{ImageHeader, HEADER_SIZE};
use ota_core::partition::{PartitionTable, ReadRule, TABLE_MAX_LEN, TABLE_OFFSET};
use ota_core::Chip;

use crate::error::EmuError;
use crate::flash::{EmuFlash, EmuFlashN, SECTOR_SIZE};

pub mod layout;

/// Where the ROMs load the 2nd-stage bootloader from, in the order we probe them: ESP32/S2,
/// then C3/S3/C6/..., then C5/P4 (idf-formats.md §1.1).
pub const BOOTLOADER_OFFSETS: [u32; 3] = [0x1000, 0x0, 0x2000];
/// What the bootloader image header says about the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootloaderInfo {
    pub chip: Chip,
    /// Flash offset of the header (the chip's bootloader offset).
    pub offset: u32,
    /// Flash size from the header (`spi_size`), in bytes.
    pub flash_size: u32,
    /// The raw 24-byte header.
    pub header: [u8; HEADER_SIZE],
}

/// Find the 2nd-stage bootloader header: at 0x1000, 0x0 and 0x2000, the first place where the
/// magic is `ota_core::image::IMAGE_MAGIC` (0xE9) and the chip id names a chip whose
/// bootloader lives at that very offset.
/// `name` names the flash in errors.
pub fn detect_bootloader<F: ReadNorFlash>(
    flash: &mut F,
    name: &str,
) -> Result<BootloaderInfo, EmuError>
where
    F::Error: 'static,
{
    let capacity = flash.capacity() as u64;
    let mut found = Vec::new();
    for offset in BOOTLOADER_OFFSETS {
        if u64::from(offset) + HEADER_SIZE as u64 > capacity {
            found.push(format!("end of file before 0x{offset:x}"));
            continue;
        }
        let mut header = [0u8; HEADER_SIZE];
        read_units(flash, offset, &mut header)?;
        let Ok(parsed) = ImageHeader::parse(&header) else {
            found.push(format!("0x{:02x} at 0x{offset:x}", header[0]));
            continue;
        };
        let chip_id = parsed.chip_id;
        let chip = match parsed.chip() {
            Some(c) if c.bootloader_offset() == offset => c,
            Some(c) => {
                found.push(format!(
                    "0xe9 at 0x{offset:x} but chip id 0x{chip_id:04x} ({}) whose bootloader is at 0x{:x}",
                    c.display_name(),
                    c.bootloader_offset()
                ));
                continue;
            }
            None => {
                found.push(format!(
                    "0xe9 at 0x{offset:x} but unknown chip id 0x{chip_id:04x}"
                ));
                continue;
            }
        };
        let code = parsed.flash_size_code();
        let flash_size = parsed
            .flash_size_bytes()
            .ok_or_else(|| EmuError::BadFlashSizeCode {
                file: name.to_string(),
                offset,
                byte3: parsed.spi_speed_size,
                code,
            })?;
        return Ok(BootloaderInfo {
            chip,
            offset,
            flash_size,
            header,
        });
    }
    Err(EmuError::NoBootloader {
        file: name.to_string(),
        found: format!("found {}", found.join(", ")),
    })
}

/// Read `buf.len()` bytes at `offset` from a flash that reads in units of `READ_SIZE`, through
/// `ota_core::flash::read` (the whole units around them), keeping the driver's own error.
pub fn read_units<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    buf: &mut [u8],
) -> Result<(), EmuError>
where
    F::Error: 'static,
{
    let mut tracked = TrackedFlash::new(flash);
    ota_core::flash::read(&mut tracked, offset, buf).map_err(|f| {
        match tracked.driver_error(&ota_core::Error::Flash(f)) {
            Some(d) => EmuError::from_flash(d.driver, d.error.op, d.error.offset, d.error.len),
            // Refused by ota-core before the driver was asked (e.g. an unsupported unit).
            None => EmuError::Flash {
                op: f.op,
                offset: f.offset,
                len: f.len,
                kind: NorFlashErrorKind::Other,
                detail: f.to_string(),
            },
        }
    })
}

/// An emulated ESP32-class device: its flash, and what the flash says about it.
#[derive(Debug)]
pub struct Device<F = EmuFlash> {
    name: String,
    boot: BootloaderInfo,
    file_size: u64,
    table: PartitionTable,
    flash: F,
}

impl<const W: usize> Device<EmuFlashN<W>> {
    /// Open the device held by an emulated flash (see [`Device::open_named`]).
    pub fn open(flash: EmuFlashN<W>) -> Result<Self, EmuError> {
        let name = flash.name();
        Device::open_named(flash, name)
    }
}

impl<F: ReadNorFlash> Device<F>
where
    F::Error: 'static,
{
    /// Open the device held by any flash: detect the chip and flash size from the bootloader
    /// header ([`detect_bootloader`]), then read the partition table at 0x8000 with the
    /// bootloader's rules (idf-formats.md §1.4a, `chip_size` = the header's flash size).
    /// `name` names the flash (usually its file) in errors.
    pub fn open_named(mut flash: F, name: impl Into<String>) -> Result<Self, EmuError> {
        let name = name.into();
        let boot = detect_bootloader(&mut flash, &name)?;
        let file_size = flash.capacity() as u64;
        let table = read_table(&mut flash, &name, boot.flash_size)?;
        Ok(Device {
            name,
            boot,
            file_size,
            table,
            flash,
        })
    }

    /// Read the partition table again (after something rewrote it).
    pub fn reload_table(&mut self) -> Result<(), EmuError> {
        self.table = read_table(&mut self.flash, &self.name, self.boot.flash_size)?;
        Ok(())
    }

    /// The chip named by the bootloader header.
    pub fn chip(&self) -> Chip {
        self.boot.chip
    }
    /// Flash size in bytes as the bootloader header says (the ROM's idea of the chip size).
    pub fn flash_size(&self) -> u32 {
        self.boot.flash_size
    }
    /// Size of the flash image (file) itself; may differ from [`Device::flash_size`] for a dump.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }
    /// Offset of the 2nd-stage bootloader.
    pub fn bootloader_offset(&self) -> u32 {
        self.boot.offset
    }
    pub fn bootloader(&self) -> &BootloaderInfo {
        &self.boot
    }
    pub fn table(&self) -> &PartitionTable {
        &self.table
    }
    /// The name used in errors (the flash file's path).
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn flash(&self) -> &F {
        &self.flash
    }
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }
    pub fn into_flash(self) -> F {
        self.flash
    }
}

/// Read and parse the table sector at [`TABLE_OFFSET`] (idf-formats.md §1.1, §1.4a).
fn read_table<F: ReadNorFlash>(
    flash: &mut F,
    name: &str,
    chip_size: u32,
) -> Result<PartitionTable, EmuError>
where
    F::Error: 'static,
{
    let capacity = flash.capacity() as u64;
    let table_end = TABLE_OFFSET + TABLE_MAX_LEN as u32;
    if u64::from(table_end) > capacity {
        return Err(EmuError::TableBeyondFile {
            file: name.to_string(),
            table_offset: TABLE_OFFSET,
            table_end,
            file_size: capacity,
        });
    }
    // The whole sector when the file has it (the app reader wants 4 KiB), else the 0xC00 bytes.
    let len = (capacity - u64::from(TABLE_OFFSET)).min(u64::from(SECTOR_SIZE)) as usize;
    let mut sector = vec![0u8; len];
    read_units(flash, TABLE_OFFSET, &mut sector)?;
    PartitionTable::parse(&sector, ReadRule::Bootloader { chip_size }).map_err(|e| {
        EmuError::PartitionTable {
            file: name.to_string(),
            offset: TABLE_OFFSET,
            detail: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_storage::nor_flash::NorFlash;
    use ota_core::image::IMAGE_MAGIC;

    const ONE_MB: u32 = 1 << 20;

    /// A hand-built 24-byte header: magic, 4 segments, DIO, `byte3`, chip id.
    fn header(byte3: u8, chip_id: u16) -> [u8; HEADER_SIZE] {
        let mut h = [0u8; HEADER_SIZE];
        h[0] = IMAGE_MAGIC;
        h[1] = 4;
        h[2] = 2;
        h[3] = byte3;
        h[8] = 0xEE;
        h[12..14].copy_from_slice(&chip_id.to_le_bytes());
        h
    }

    #[test]
    fn detect_finds_esp32_header_at_0x1000() {
        let mut f = EmuFlash::in_memory(0x40_0000);
        f.write(0x1000, &header(0x20, 0x0000)).unwrap();
        let b = detect_bootloader(&mut f, "t").unwrap();
        assert_eq!(
            (b.chip, b.offset, b.flash_size),
            (Chip::Esp32, 0x1000, 4 * ONE_MB)
        );
    }

    #[test]
    fn detect_finds_esp32c3_header_at_0x0() {
        let mut f = EmuFlash::in_memory(0x40_0000);
        f.write(0, &header(0x1F, 0x0005)).unwrap();
        let b = detect_bootloader(&mut f, "t").unwrap();
        assert_eq!(
            (b.chip, b.offset, b.flash_size),
            (Chip::Esp32c3, 0, 2 * ONE_MB)
        );
    }

    #[test]
    fn detect_finds_esp32c5_header_at_0x2000() {
        let mut f = EmuFlash::in_memory(0x40_0000);
        f.write(0x2000, &header(0x30, 0x0017)).unwrap();
        let b = detect_bootloader(&mut f, "t").unwrap();
        assert_eq!(
            (b.chip, b.offset, b.flash_size),
            (Chip::Esp32c5, 0x2000, 8 * ONE_MB)
        );
    }

    #[test]
    fn detect_rejects_chip_at_the_wrong_offset() {
        // An ESP32-C3 header at 0x1000 is not a C3 bootloader (the C3 ROM loads from 0x0).
        let mut f = EmuFlash::in_memory(0x10_0000);
        f.write(0x1000, &header(0x20, 0x0005)).unwrap();
        let e = detect_bootloader(&mut f, "dev.bin").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, EmuError::NoBootloader { .. }), "{msg}");
        assert!(
            msg.contains("chip id 0x0005 (ESP32-C3) whose bootloader is at 0x0"),
            "{msg}"
        );
    }

    #[test]
    fn detect_rejects_flash_size_code_above_7() {
        let mut f = EmuFlash::in_memory(0x10_0000);
        f.write(0, &header(0x80, 0x0009)).unwrap();
        let e = detect_bootloader(&mut f, "dev.bin").unwrap_err();
        assert!(
            matches!(
                e,
                EmuError::BadFlashSizeCode {
                    offset: 0,
                    code: 8,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn open_blank_flash_names_file_and_offsets() {
        let f = EmuFlash::in_memory(0x10_0000);
        let e = Device::open(f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no bootloader image header found at 0x1000, 0x0 or 0x2000 of <in-memory flash> \
             (found 0xff at 0x1000, 0xff at 0x0, 0xff at 0x2000)"
        );
    }

    #[test]
    fn open_tiny_flash_reports_table_beyond_file() {
        let mut f = EmuFlash::in_memory(0x8000);
        f.write(0, &header(0x10, 0x0005)).unwrap();
        let e = Device::open(f).unwrap_err();
        assert!(
            matches!(
                e,
                EmuError::TableBeyondFile {
                    table_offset: 0x8000,
                    table_end: 0x8C00,
                    file_size: 0x8000,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn open_reports_bad_table_with_offset() {
        // Bootloader fine, table sector blank: an error naming 0x8000 (whatever the parser says).
        let mut f = EmuFlash::in_memory(0x20_0000);
        f.write(0, &header(0x10, 0x0005)).unwrap();
        let e = Device::open(f).unwrap_err();
        assert!(
            matches!(e, EmuError::PartitionTable { offset: 0x8000, .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("partition table at 0x8000 of <in-memory flash> is invalid"),
            "{e}"
        );
    }
}
