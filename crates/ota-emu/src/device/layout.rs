//! Laying out a device image (`ota device create`): put raw bytes (bootloader, partition
//! table, apps) at flash offsets, erasing first as a flasher does (idf-formats.md §2.8, §7 item 5).

use embedded_storage::nor_flash::NorFlash;
use ota_core::flash::FlashOp;

use crate::error::EmuError;
use crate::flash::SECTOR_SIZE;

/// Erase the 4 KiB sectors covering `[offset, offset + bytes.len())` and program `bytes` there.
///
/// Unlike esptool (which leaves the uncovered rest of a partly covered sector 0xFF), the bytes
/// of a partly covered first or last sector that lie outside the range are read first and
/// programmed back, so separate `write_raw` calls can share a sector. Empty `bytes`: nothing.
pub fn write_raw<F: NorFlash>(flash: &mut F, offset: u32, bytes: &[u8]) -> Result<(), EmuError>
where
    F::Error: 'static,
{
    if bytes.is_empty() {
        return Ok(());
    }
    let oob = || EmuError::OutOfBounds {
        op: FlashOp::Write,
        offset,
        len: bytes.len() as u64,
        capacity: flash.capacity(),
    };
    let end = u64::from(offset) + bytes.len() as u64;
    let sector = u64::from(SECTOR_SIZE);
    let from = u64::from(offset) / sector * sector;
    let to = end.div_ceil(sector) * sector;
    if to > flash.capacity() as u64 {
        return Err(oob());
    }
    // `to` fits in the flash, whose addresses are u32, so these conversions cannot fail.
    let (Ok(from), Ok(to)) = (u32::try_from(from), u32::try_from(to)) else {
        return Err(oob());
    };
    let mut image = vec![0u8; (to - from) as usize];
    flash
        .read(from, &mut image)
        .map_err(|e| EmuError::from_flash(e, FlashOp::Read, from, to - from))?;
    let start = (offset - from) as usize;
    image[start..start + bytes.len()].copy_from_slice(bytes);
    flash
        .erase(from, to)
        .map_err(|e| EmuError::from_flash(e, FlashOp::Erase, from, to - from))?;
    flash
        .write(from, &image)
        .map_err(|e| EmuError::from_flash(e, FlashOp::Write, from, to - from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::EmuFlash;

    #[test]
    fn write_raw_replaces_old_contents_and_keeps_sector_neighbours() {
        let mut f = EmuFlash::in_memory(0x4000);
        // Old data everywhere in sectors 0..2.
        f.write(0, &[0x00; 0x3000]).unwrap();
        write_raw(&mut f, 0x0FF0, &[0xAB; 0x20]).unwrap();
        let c = f.contents();
        assert!(
            c[..0x0FF0].iter().all(|&b| b == 0x00),
            "bytes before the range kept"
        );
        assert!(
            c[0x0FF0..0x1010].iter().all(|&b| b == 0xAB),
            "bytes written"
        );
        assert!(
            c[0x1010..0x2000].iter().all(|&b| b == 0x00),
            "bytes after the range kept"
        );
        assert!(
            c[0x2000..0x3000].iter().all(|&b| b == 0x00),
            "sector not covered untouched"
        );
        let s = f.stats();
        assert_eq!(
            (s.erase_count(0), s.erase_count(1), s.erase_count(2)),
            (1, 1, 0)
        );
    }

    #[test]
    fn write_raw_rejects_range_past_the_end() {
        let mut f = EmuFlash::in_memory(0x2000);
        let e = write_raw(&mut f, 0x1F00, &[0; 0x200]).unwrap_err();
        assert!(
            matches!(
                e,
                EmuError::OutOfBounds {
                    offset: 0x1F00,
                    len: 0x200,
                    ..
                }
            ),
            "{e}"
        );
        assert!(f.contents().iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn write_raw_passes_flash_errors_through() {
        let mut f = EmuFlash::in_memory(0x2000);
        f.set_fault_plan(crate::flash::FaultPlan {
            fail_erase_at: Some(0x1000),
            ..Default::default()
        });
        let e = write_raw(&mut f, 0x1000, &[1, 2, 3]).unwrap_err();
        assert!(
            matches!(
                e,
                EmuError::InjectedFault {
                    op: FlashOp::Erase,
                    at: 0x1000,
                    ..
                }
            ),
            "{e}"
        );
    }
}
