//! The one error type of `ota-emu`: every variant says what went wrong and where (file, URI,
//! flash offset), with a message a person can act on.

use std::path::PathBuf;

use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind};
use ota_core::flash::FlashOp;

#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    /// A host file operation failed (the flash file, an SD card file or image).
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A flash file whose length is not a whole number of 4 KiB sectors (or is empty).
    #[error(
        "flash file {} is {size} bytes, which is not a non-zero multiple of the 4096-byte sector size",
        path.display()
    )]
    BadFlashSize { path: PathBuf, size: u64 },

    /// An erase (or an aligned-access rule) was not sector aligned.
    #[error("flash {op} of {len} bytes at 0x{offset:x} is not aligned to 4096-byte sectors")]
    NotAligned { op: FlashOp, offset: u32, len: u32 },

    /// A read or write whose offset or length is not a multiple of the flash's unit (as
    /// esp-storage refuses it).
    #[error(
        "flash {op} of {len} bytes at 0x{offset:x} is not aligned to the flash's {unit}-byte unit"
    )]
    NotWordAligned {
        op: FlashOp,
        offset: u32,
        len: u32,
        unit: u32,
    },

    /// The access runs past the end of the flash.
    #[error(
        "flash {op} of {len} bytes at 0x{offset:x} is beyond the end of the {capacity}-byte flash"
    )]
    OutOfBounds {
        op: FlashOp,
        offset: u32,
        len: u64,
        capacity: usize,
    },

    /// NOR flash can only clear bits when programming; this write needs a 0 bit to become 1.
    /// Nothing was written.
    #[error(
        "flash write at 0x{offset:x} would set bits from 0 to 1 (byte there is 0x{old:02x}, \
         write wants 0x{new:02x}); NOR flash must be erased first"
    )]
    BitSet { offset: u32, old: u8, new: u8 },

    /// The fault plan cut the power: the operation in progress was torn and the flash accepts
    /// nothing more until [`crate::flash::EmuFlash::power_cycle`] (or the file is reopened).
    #[error("power cut after {after_bytes} bytes programmed or erased (fault injection)")]
    PowerCut { after_bytes: u64 },

    /// The fault plan marks this address as failing for this operation; nothing was changed.
    #[error("injected flash {op} failure: the {op} of {len} bytes at 0x{offset:x} covers the failing address 0x{at:x}")]
    InjectedFault {
        op: FlashOp,
        offset: u32,
        len: u32,
        at: u32,
    },

    /// An error from a flash that is not an [`crate::flash::EmuFlash`] (generic `NorFlash`).
    #[error("flash {op} of {len} bytes at 0x{offset:x} failed ({kind:?}): {detail}")]
    Flash {
        op: FlashOp,
        offset: u32,
        len: u32,
        kind: NorFlashErrorKind,
        detail: String,
    },

    /// No 2nd-stage bootloader header at any chip's bootloader offset.
    #[error("no bootloader image header found at 0x1000, 0x0 or 0x2000 of {file} ({found})")]
    NoBootloader { file: String, found: String },

    /// The bootloader header's flash-size nibble is not one of 0..=7.
    #[error(
        "bootloader image header at 0x{offset:x} of {file} has flash size code 0x{code:x} \
         (byte 3 = 0x{byte3:02x}); expected 0..7 (1MB..128MB)"
    )]
    BadFlashSizeCode {
        file: String,
        offset: u32,
        byte3: u8,
        code: u8,
    },

    /// The flash file is too short to hold the partition table.
    #[error(
        "partition table at 0x{table_offset:x}..0x{table_end:x} lies beyond the end of {file} \
         ({file_size} bytes)"
    )]
    TableBeyondFile {
        file: String,
        table_offset: u32,
        table_end: u32,
        file_size: u64,
    },

    /// The partition table did not parse.
    #[error("partition table at 0x{offset:x} of {file} is invalid: {detail}")]
    PartitionTable {
        file: String,
        offset: u32,
        detail: String,
    },

    /// The SD card (folder or FAT image) does not exist.
    #[error("SD card {} not found (expected a folder or a FAT image file)", path.display())]
    SdCardNotFound { path: PathBuf },

    /// The FAT image does not mount.
    #[error("SD card image {} is not a FAT file system: {source}", path.display())]
    SdNotFat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The URI does not name a file under the `/sdcard` mount.
    #[error("URI {uri:?} does not name a file on the SD card: {reason}")]
    SdBadUri { uri: String, reason: String },

    /// The URI names a path on the card, but there is no such file.
    #[error("file {path} (from URI {uri:?}) not found on the SD card {}", card.display())]
    SdFileNotFound {
        uri: String,
        path: String,
        card: PathBuf,
    },

    /// The file is there but reading it failed (or it is a folder).
    #[error("cannot read {path} (from URI {uri:?}) on the SD card {}: {source}", card.display())]
    SdRead {
        uri: String,
        path: String,
        card: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The device settings file beside a flash image is invalid.
    #[error("device settings {}: {detail}", path.display())]
    Settings { path: PathBuf, detail: String },

    /// Building a FAT image failed.
    #[error("cannot build FAT image {}: {detail}", path.display())]
    FatBuild { path: PathBuf, detail: String },
}

impl NorFlashError for EmuError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            EmuError::NotAligned { .. } | EmuError::NotWordAligned { .. } => {
                NorFlashErrorKind::NotAligned
            }
            EmuError::OutOfBounds { .. } => NorFlashErrorKind::OutOfBounds,
            EmuError::Flash { kind, .. } => *kind,
            _ => NorFlashErrorKind::Other,
        }
    }
}

impl EmuError {
    /// Wrap an error of any `NorFlash` driver. When the driver is an `EmuFlash` (its error is
    /// an `EmuError`), that error is returned as it is, keeping all its detail.
    pub fn from_flash<E: NorFlashError + 'static>(
        e: E,
        op: FlashOp,
        offset: u32,
        len: u32,
    ) -> EmuError {
        let kind = e.kind();
        let detail = format!("{e:?}");
        let boxed: Box<dyn std::any::Any> = Box::new(e);
        match boxed.downcast::<EmuError>() {
            Ok(own) => *own,
            Err(_) => EmuError::Flash {
                op,
                offset,
                len,
                kind,
                detail,
            },
        }
    }
}
