//! Flash layout of a merged image: pieces (bootloader, table, otadata, apps...) placed at flash
//! addresses, checked with esptool's `merge-bin` / `write-flash` rule that no two pieces may
//! touch the same 4 KiB sector (flashing erases whole sectors). Sans-IO, no allocation.

use core::fmt;

use crate::flash::SECTOR_SIZE;

/// One input of a merge: `len` bytes to be placed at flash address `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub addr: u32,
    pub len: u32,
}

impl Piece {
    /// End address (exclusive), or None past 4 GiB.
    pub fn end(&self) -> Option<u32> {
        self.addr.checked_add(self.len)
    }
    /// The 4 KiB sectors the piece touches, as esptool computes them (`AddrFilenamePairAction`):
    /// `[addr rounded down, end rounded up)`. An empty piece touches the sector of `addr`.
    pub fn sectors(&self) -> (u64, u64) {
        let s = u64::from(SECTOR_SIZE);
        let start = u64::from(self.addr) / s * s;
        let end = (u64::from(self.addr) + u64::from(self.len)).div_ceil(s) * s;
        (start, end.max(start + s))
    }
}

/// Why a set of pieces cannot be merged. Indices are positions in the caller's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// Two pieces share a sector: `first` starts at or before `second`.
    Overlap {
        first: usize,
        second: usize,
        first_piece: Piece,
        second_piece: Piece,
    },
    /// A piece ends past the 32-bit flash address space.
    BeyondAddressSpace { index: usize, piece: Piece },
    /// The merged image would be larger than the size it must fit (`--fill-flash-size`).
    TooLarge { end: u32, size: u32 },
}

impl core::error::Error for LayoutError {}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::Overlap {
                first_piece: a,
                second_piece: b,
                ..
            } => {
                let (sa, ea) = a.sectors();
                write!(
                    f,
                    "0x{:x}..0x{:x} overlaps 0x{:x}..0x{:x} (flashing erases whole 4 KiB sectors: \
                     sectors 0x{:x}..0x{:x} are already taken)",
                    b.addr,
                    u64::from(b.addr) + u64::from(b.len),
                    a.addr,
                    u64::from(a.addr) + u64::from(a.len),
                    sa,
                    ea
                )
            }
            LayoutError::BeyondAddressSpace { piece, .. } => write!(
                f,
                "{} bytes at 0x{:x} end past the 4 GiB flash address space",
                piece.len, piece.addr
            ),
            LayoutError::TooLarge { end, size } => write!(
                f,
                "the merged image ends at 0x{:x}, beyond the flash size 0x{:x}",
                end, size
            ),
        }
    }
}

/// Check pieces like esptool's `merge-bin` does and return the merged length (the end of the
/// last piece). Overlap is judged on sectors: esptool sorts by address and refuses a piece whose
/// first sector is at or before the last sector of the piece before it. When several pairs
/// overlap, the reported pair is the one esptool reports first (lowest start of the later piece).
pub fn check_pieces(pieces: &[Piece]) -> Result<u32, LayoutError> {
    let mut end = 0u32;
    for (index, p) in pieces.iter().enumerate() {
        let e = p
            .end()
            .ok_or(LayoutError::BeyondAddressSpace { index, piece: *p })?;
        end = end.max(e);
    }
    // The pair esptool meets first in address order: for each piece (in address order, ties in
    // list order), the earlier pieces' sectors must end at or before its first sector.
    let mut found: Option<(usize, usize)> = None;
    for (j, b) in pieces.iter().enumerate() {
        for (i, a) in pieces.iter().enumerate() {
            if i == j {
                continue;
            }
            let a_first = a.addr < b.addr || (a.addr == b.addr && i < j);
            if !a_first {
                continue;
            }
            let (_, a_end) = a.sectors();
            let (b_start, _) = b.sectors();
            if b_start < a_end {
                let better = match found {
                    None => true,
                    Some((_, fj)) => {
                        let fb = pieces[fj];
                        (b.addr, j) < (fb.addr, fj)
                    }
                };
                if better {
                    found = Some((i, j));
                }
            }
        }
    }
    if let Some((i, j)) = found {
        return Err(LayoutError::Overlap {
            first: i,
            second: j,
            first_piece: pieces[i],
            second_piece: pieces[j],
        });
    }
    Ok(end)
}

/// `--fill-flash-size`: a merged image ending at `end` must fit in `size` bytes.
pub fn check_fill(end: u32, size: u32) -> Result<(), LayoutError> {
    if end > size {
        return Err(LayoutError::TooLarge { end, size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    fn p(addr: u32, len: u32) -> Piece {
        Piece { addr, len }
    }

    #[test]
    fn disjoint_pieces_merge_to_the_end_of_the_last() {
        assert_eq!(
            check_pieces(&[p(0x8000, 0xC00), p(0x1000, 0x1EC0), p(0x10000, 100)]),
            Ok(0x10064)
        );
    }

    #[test]
    fn pieces_sharing_a_sector_are_refused_like_esptool() {
        // 0x1000 + 0x1001 ends in sector 0x2000; a piece at 0x2800 shares it.
        let e = check_pieces(&[p(0x1000, 0x1001), p(0x2800, 4)]).unwrap_err();
        assert!(matches!(
            e,
            LayoutError::Overlap {
                first: 0,
                second: 1,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "0x2800..0x2804 overlaps 0x1000..0x2001 (flashing erases whole 4 KiB sectors: \
             sectors 0x1000..0x3000 are already taken)"
        );
    }

    #[test]
    fn pieces_ending_on_a_sector_boundary_may_touch() {
        assert_eq!(check_pieces(&[p(0x1000, 0x1000), p(0x2000, 1)]), Ok(0x2001));
    }

    #[test]
    fn same_address_twice_is_an_overlap_naming_list_order() {
        let e = check_pieces(&[p(0x10000, 8), p(0x10000, 8)]).unwrap_err();
        assert!(matches!(
            e,
            LayoutError::Overlap {
                first: 0,
                second: 1,
                ..
            }
        ));
    }

    #[test]
    fn reported_overlap_is_the_lowest_one() {
        let e = check_pieces(&[
            p(0x20000, 0x3000),
            p(0x21000, 4),
            p(0x0, 0x1800),
            p(0x1000, 4),
        ])
        .unwrap_err();
        assert!(matches!(
            e,
            LayoutError::Overlap {
                first: 2,
                second: 3,
                ..
            }
        ));
    }

    #[test]
    fn fill_size_must_hold_the_image() {
        assert_eq!(check_fill(0x10_0000, 0x10_0000), Ok(()));
        assert_eq!(
            check_fill(0x10_0001, 0x10_0000).unwrap_err().to_string(),
            "the merged image ends at 0x100001, beyond the flash size 0x100000"
        );
    }

    #[test]
    fn piece_past_4_gib_is_refused() {
        assert!(matches!(
            check_pieces(&[p(0xFFFF_F000, 0x2000)]),
            Err(LayoutError::BeyondAddressSpace { index: 0, .. })
        ));
    }
}
