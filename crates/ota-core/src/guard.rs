//! What an update may write: only its own target. Before the first erase every engine checks
//! the areas it is about to write (an app slot, a data partition, a staging partition, the
//! `ota_resume` record partition, otadata) against what must never be written on its behalf:
//!
//! * the bootloader region, from flash address 0 up to the partition table (the ROM loads the
//!   2nd-stage bootloader from [`Chip::bootloader_offset`]; with ESP32 Secure Boot V1 its
//!   digest sits at 0x0);
//! * the partition table sector at the table offset (`CONFIG_PARTITION_TABLE_OFFSET`, default
//!   [`TABLE_OFFSET`], [`TABLE_SECTOR_SIZE`] long; ESP-IDF `components/partition_table`);
//! * every other partition of the table: otadata, the running app, the other app slots, the
//!   `ota_resume` and staging partitions, any data partition;
//! * and the end of the flash, when the engine knows its size.
//!
//! gen_esp32part.py refuses such tables (`verify()`: overlapping partitions, partitions below
//! the table), but the 2nd-stage bootloader does not (`esp_partition_table_verify`, ESP-IDF
//! `components/bootloader_support/src/flash_partitions.c`, checks only magic, MD5 and that
//! entries fit the chip), so a device can run with one, and the engines must not trust it. Sans-IO, no allocation: the check reads nothing and writes nothing.

use core::fmt;

use crate::chip::Chip;
use crate::partition::{
    Label, Partition, PartitionTable, SUBTYPE_DATA_OTA, TABLE_OFFSET, TABLE_SECTOR_SIZE, TYPE_APP,
    TYPE_BOOTLOADER, TYPE_DATA, TYPE_PARTITION_TABLE,
};
use crate::resume::RESUME_PARTITION_LABEL;

/// The 32-bit flash address space (`esp_partition_info_t` offsets and sizes are u32): an area
/// ending past it cannot be addressed at all.
const ADDRESS_SPACE: u64 = 1 << 32;
/// Most partitions one [`FlashMap::check_area`] call may name as the area's own (more are
/// checked like any other partition).
const MAX_OWN: usize = 4;

/// What an area of flash is, for the error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AreaKind {
    /// The OTA app slot an app update writes.
    AppSlot,
    /// The data partition a data update writes.
    DataPartition,
    /// The spare partition a staged data update writes first.
    StagingPartition,
    /// The `ota_resume` partition holding the resume record of an app download.
    ResumeLog,
    /// The otadata partition (written when an app update commits).
    OtaData,
    /// Flash address 0 up to the partition table; `image_offset`: where the chip's ROM loads
    /// the 2nd-stage bootloader from (None: chip unknown).
    Bootloader { image_offset: Option<u32> },
    /// The partition table sector.
    PartitionTable,
    /// The app partition that is running.
    RunningApp,
    /// Another app partition (factory, test or an OTA slot not being written).
    AppPartition,
    /// A `bootloader`-type or `partition_table`-type entry (ESP-IDF v5.3+ tables).
    SystemPartition,
    /// Any other partition.
    Partition,
}

impl AreaKind {
    fn name(&self) -> &'static str {
        match self {
            AreaKind::AppSlot => "app slot",
            AreaKind::DataPartition => "data partition",
            AreaKind::StagingPartition => "staging partition",
            AreaKind::ResumeLog => "resume-record partition",
            AreaKind::OtaData => "otadata partition",
            AreaKind::Bootloader { .. } => "the bootloader region",
            AreaKind::PartitionTable => "the partition table",
            AreaKind::RunningApp => "the running app",
            AreaKind::AppPartition => "app partition",
            AreaKind::SystemPartition => "partition",
            AreaKind::Partition => "partition",
        }
    }
}

/// A named area of flash: `size` bytes at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    pub kind: AreaKind,
    pub label: Option<Label>,
    pub offset: u32,
    pub size: u32,
}

impl Area {
    /// A partition in a given role.
    pub fn of(kind: AreaKind, p: &Partition) -> Area {
        Area {
            kind,
            label: Some(p.label),
            offset: p.offset,
            size: p.size,
        }
    }

    /// End address (exclusive), which may lie past 4 GiB for a hostile table.
    pub fn end(&self) -> u64 {
        u64::from(self.offset) + u64::from(self.size)
    }

    /// Whether the two areas share a byte.
    pub fn overlaps(&self, other: &Area) -> bool {
        self.size > 0
            && other.size > 0
            && u64::from(self.offset) < other.end()
            && u64::from(other.offset) < self.end()
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        if let Some(l) = &self.label {
            write!(f, " {}", l.as_str())?;
        }
        write!(
            f,
            " at 0x{:x}..0x{:x} ({} bytes)",
            self.offset,
            self.end(),
            self.size
        )?;
        if let AreaKind::Bootloader {
            image_offset: Some(image_offset),
        } = self.kind
        {
            write!(f, " (2nd-stage bootloader at 0x{:x})", image_offset)?;
        }
        Ok(())
    }
}

/// Why an update may not write an area. Raised before anything is erased.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardError {
    /// The area the update would write overlaps an area it must not write.
    Overlap { area: Area, protected: Area },
    /// The area ends beyond the flash chip (or past the 4 GiB address space: `flash_size`
    /// None).
    BeyondFlash { area: Area, flash_size: Option<u32> },
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::Overlap { area, protected } => write!(
                f,
                "{} overlaps {}: refusing to write outside its own partition (nothing was erased \
                 or written; fix the partition table)",
                area, protected
            ),
            GuardError::BeyondFlash {
                area,
                flash_size: Some(size),
            } => write!(
                f,
                "{} ends beyond the {} byte (0x{:x}) flash: nothing was erased or written",
                area, size, size
            ),
            GuardError::BeyondFlash {
                area,
                flash_size: None,
            } => write!(
                f,
                "{} ends past the 4 GiB flash address space: nothing was erased or written",
                area
            ),
        }
    }
}

impl core::error::Error for GuardError {}

/// The device as an update engine must see it: its partition table, where the table and the
/// bootloader are, the running app and (if known) the flash size.
#[derive(Clone, Copy, Debug)]
pub struct FlashMap<'a> {
    pub table: &'a PartitionTable,
    /// Where the chip's ROM loads the 2nd-stage bootloader from ([`Chip::bootloader_offset`];
    /// None: chip unknown). Only named in messages: the whole of flash below the table is
    /// protected whatever the chip.
    pub bootloader_offset: Option<u32>,
    /// Where the partition table is (`CONFIG_PARTITION_TABLE_OFFSET`).
    pub table_offset: u32,
    /// Flash chip size in bytes, when known.
    pub flash_size: Option<u32>,
    /// The app partition that is running, when known.
    pub running: Option<Partition>,
}

impl<'a> FlashMap<'a> {
    /// The map of a `chip` device with `table` at the default offset [`TABLE_OFFSET`], flash
    /// size unknown.
    pub fn new(table: &'a PartitionTable, chip: Chip, running: Option<&Partition>) -> Self {
        FlashMap {
            table,
            bootloader_offset: Some(chip.bootloader_offset()),
            table_offset: TABLE_OFFSET,
            flash_size: None,
            running: running.copied(),
        }
    }

    /// With the partition table at `offset` (a non-default `CONFIG_PARTITION_TABLE_OFFSET`).
    pub fn with_table_offset(mut self, offset: u32) -> Self {
        self.table_offset = offset;
        self
    }

    /// With a known flash chip size.
    pub fn with_flash_size(mut self, size: Option<u32>) -> Self {
        self.flash_size = size;
        self
    }

    /// Flash address 0 up to the partition table.
    pub fn bootloader_area(&self) -> Area {
        Area {
            kind: AreaKind::Bootloader {
                image_offset: self.bootloader_offset,
            },
            label: None,
            offset: 0,
            size: self.table_offset,
        }
    }

    /// The partition table sector.
    pub fn table_area(&self) -> Area {
        Area {
            kind: AreaKind::PartitionTable,
            label: None,
            offset: self.table_offset,
            size: TABLE_SECTOR_SIZE,
        }
    }

    /// How a partition of the table is named when something overlaps it.
    fn protected_area(&self, p: &Partition) -> Area {
        let kind = if self.running.as_ref() == Some(p) {
            AreaKind::RunningApp
        } else if p.ptype == TYPE_DATA && p.subtype == SUBTYPE_DATA_OTA {
            AreaKind::OtaData
        } else if p.ptype == TYPE_DATA && p.label.as_str() == RESUME_PARTITION_LABEL {
            AreaKind::ResumeLog
        } else if p.ptype == TYPE_APP {
            AreaKind::AppPartition
        } else if p.ptype == TYPE_BOOTLOADER || p.ptype == TYPE_PARTITION_TABLE {
            AreaKind::SystemPartition
        } else if p.ptype == TYPE_DATA {
            AreaKind::DataPartition
        } else {
            AreaKind::Partition
        };
        Area::of(kind, p)
    }

    /// Check that `area`, which belongs to the partitions `own` (skipped once each in the
    /// table; an identical duplicate entry still counts as another partition), may be written:
    /// inside the flash, clear of the bootloader region, the partition table and every other
    /// partition.
    pub fn check_area(&self, area: Area, own: &[Partition]) -> Result<(), GuardError> {
        if let Some(size) = self.flash_size {
            if area.end() > u64::from(size) {
                return Err(GuardError::BeyondFlash {
                    area,
                    flash_size: Some(size),
                });
            }
        } else if area.end() > ADDRESS_SPACE {
            return Err(GuardError::BeyondFlash {
                area,
                flash_size: None,
            });
        }
        for protected in [self.bootloader_area(), self.table_area()] {
            if area.overlaps(&protected) {
                return Err(GuardError::Overlap { area, protected });
            }
        }
        let mut skipped = [false; MAX_OWN];
        let mut running_seen = false;
        for p in self.table.iter() {
            if self.running.as_ref() == Some(p) {
                running_seen = true;
            }
            let own_index = own
                .iter()
                .enumerate()
                .position(|(i, o)| o == p && !skipped.get(i).copied().unwrap_or(true));
            if let Some(i) = own_index {
                skipped[i] = true;
                continue;
            }
            let protected = self.protected_area(p);
            if area.overlaps(&protected) {
                return Err(GuardError::Overlap { area, protected });
            }
        }
        if let (Some(r), false) = (self.running, running_seen) {
            // A running partition the table does not list (a caller's mistake): still protected.
            let protected = Area::of(AreaKind::RunningApp, &r);
            if !own.contains(&r) && area.overlaps(&protected) {
                return Err(GuardError::Overlap { area, protected });
            }
        }
        Ok(())
    }

    /// Check a partition the update writes in role `kind` (app slot, data, staging, resume
    /// record or otadata). A data or staging target that is itself otadata is refused.
    pub fn check_partition(&self, kind: AreaKind, part: &Partition) -> Result<(), GuardError> {
        let area = Area::of(kind, part);
        let is_otadata = part.ptype == TYPE_DATA && part.subtype == SUBTYPE_DATA_OTA;
        if is_otadata && matches!(kind, AreaKind::DataPartition | AreaKind::StagingPartition) {
            return Err(GuardError::Overlap {
                area,
                protected: Area::of(AreaKind::OtaData, part),
            });
        }
        if self.running.as_ref() == Some(part) && kind != AreaKind::RunningApp {
            return Err(GuardError::Overlap {
                area,
                protected: Area::of(AreaKind::RunningApp, part),
            });
        }
        self.check_area(area, core::slice::from_ref(part))
    }

    /// The otadata partition (if the table has one) may be written.
    pub fn check_otadata(&self) -> Result<(), GuardError> {
        match self.table.otadata() {
            Some(od) => self.check_partition(AreaKind::OtaData, od),
            None => Ok(()),
        }
    }

    /// Everything an app update into `slot` writes: the slot, otadata (switched at commit),
    /// and the `ota_resume` partition when the table has one (the resume record).
    pub fn check_app_update(&self, slot: &Partition) -> Result<(), GuardError> {
        self.check_partition(AreaKind::AppSlot, slot)?;
        self.check_otadata()?;
        if let Some(r) = self.table.find_data(RESUME_PARTITION_LABEL) {
            self.check_partition(AreaKind::ResumeLog, r)?;
        }
        Ok(())
    }

    /// Everything a data update into `target` writes (staged through `staging`, if given).
    pub fn check_data_update(
        &self,
        target: &Partition,
        staging: Option<&Partition>,
    ) -> Result<(), GuardError> {
        if let Some(s) = staging {
            self.check_partition(AreaKind::StagingPartition, s)?;
        }
        self.check_partition(AreaKind::DataPartition, target)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;
    use crate::partition::{SUBTYPE_APP_OTA_0, TYPE_APP};
    use crate::testutil::example_table;

    fn part(label: &str, ptype: u8, subtype: u8, offset: u32, size: u32) -> Partition {
        Partition {
            ptype,
            subtype,
            offset,
            size,
            label: Label::new(label),
            flags: 0,
        }
    }

    /// The example table with its entry `label` moved to `offset`/`size`.
    fn moved(label: &str, offset: u32, size: u32) -> PartitionTable {
        let t = example_table();
        let mut out = PartitionTable::new();
        for p in t.iter() {
            let mut p = *p;
            if p.label.as_str() == label {
                p.offset = offset;
                p.size = size;
            }
            out.push(p).unwrap();
        }
        out
    }

    #[test]
    fn a_sound_table_passes_every_check() {
        let t = example_table();
        let running = *t.ota(0).unwrap();
        let map = FlashMap::new(&t, Chip::Esp32, Some(&running)).with_flash_size(Some(4 << 20));
        map.check_app_update(t.ota(1).unwrap()).unwrap();
        map.check_data_update(t.find_data("flash_tone").unwrap(), Some(t.ota(1).unwrap()))
            .unwrap();
        map.check_data_update(t.find_data("flash_tone").unwrap(), None)
            .unwrap();
        map.check_otadata().unwrap();
    }

    #[test]
    fn guard_refuses_an_app_slot_over_the_partition_table() {
        let t = moved("ota_1", 0x8000, 0x1000);
        let running = *t.ota(0).unwrap();
        let map = FlashMap::new(&t, Chip::Esp32, Some(&running));
        let e = map.check_app_update(t.ota(1).unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "app slot ota_1 at 0x8000..0x9000 (4096 bytes) overlaps the partition table at \
             0x8000..0x9000 (4096 bytes): refusing to write outside its own partition (nothing \
             was erased or written; fix the partition table)"
        );
    }

    #[test]
    fn guard_names_the_bootloader_region_with_the_chips_bootloader_offset() {
        let t = moved("flash_tone", 0x1000, 0x2000);
        for (chip, at) in [
            (Chip::Esp32, 0x1000),
            (Chip::Esp32c3, 0),
            (Chip::Esp32p4, 0x2000),
        ] {
            let map = FlashMap::new(&t, chip, None);
            let e = map
                .check_data_update(t.find_data("flash_tone").unwrap(), None)
                .unwrap_err();
            let GuardError::Overlap { protected, .. } = e else {
                panic!("{e:?}")
            };
            assert_eq!(
                protected.kind,
                AreaKind::Bootloader {
                    image_offset: Some(at)
                }
            );
            assert!(e
                .to_string()
                .contains(&std::format!("(2nd-stage bootloader at 0x{at:x})")));
        }
    }

    #[test]
    fn guard_follows_a_non_default_table_offset() {
        // Table at 0x10000: 0x8000..0x10000 is bootloader space, 0x10000 the table.
        let t = moved("flash_tone", 0xC000, 0x1000);
        let map = FlashMap::new(&t, Chip::Esp32, None).with_table_offset(0x10000);
        let e = map
            .check_data_update(t.find_data("flash_tone").unwrap(), None)
            .unwrap_err();
        assert!(matches!(
            e,
            GuardError::Overlap {
                protected: Area {
                    kind: AreaKind::Bootloader { .. },
                    offset: 0,
                    size: 0x10000,
                    ..
                },
                ..
            }
        ));
        let t = moved("flash_tone", 0x10000, 0x1000);
        let map = FlashMap::new(&t, Chip::Esp32, None).with_table_offset(0x10000);
        let e = map
            .check_data_update(t.find_data("flash_tone").unwrap(), None)
            .unwrap_err();
        assert!(e
            .to_string()
            .contains("the partition table at 0x10000..0x11000"));
    }

    #[test]
    fn guard_refuses_a_resume_partition_in_the_running_app_or_on_otadata() {
        let mut t = example_table();
        t.push(part(
            RESUME_PARTITION_LABEL,
            TYPE_DATA,
            0x99,
            0x100000,
            0x1000,
        ))
        .unwrap();
        let running = *t.ota(0).unwrap();
        let map = FlashMap::new(&t, Chip::Esp32, Some(&running));
        let e = map.check_app_update(t.ota(1).unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "resume-record partition ota_resume at 0x100000..0x101000 (4096 bytes) overlaps the \
             running app ota_0 at 0x10000..0x110000 (1048576 bytes): refusing to write outside its \
             own partition (nothing was erased or written; fix the partition table)"
        );
        let mut t = example_table();
        t.push(part(
            RESUME_PARTITION_LABEL,
            TYPE_DATA,
            0x99,
            0xD000,
            0x1000,
        ))
        .unwrap();
        let map = FlashMap::new(&t, Chip::Esp32, Some(&running));
        let e = map.check_app_update(t.ota(1).unwrap()).unwrap_err();
        // otadata is checked first (it is written at commit) and meets ota_resume.
        assert!(e
            .to_string()
            .starts_with("otadata partition otadata at 0xd000..0xf000"));
        assert!(e
            .to_string()
            .contains("overlaps resume-record partition ota_resume"));
    }

    #[test]
    fn guard_refuses_a_slot_over_the_running_app_and_duplicate_entries() {
        let t = example_table();
        let running = *t.ota(0).unwrap();
        let mut dup = running;
        dup.subtype = SUBTYPE_APP_OTA_0 + 1;
        dup.label = Label::new("ota_1");
        let map = FlashMap::new(&t, Chip::Esp32, Some(&running));
        let e = map.check_partition(AreaKind::AppSlot, &dup).unwrap_err();
        assert!(matches!(
            e,
            GuardError::Overlap {
                protected: Area {
                    kind: AreaKind::RunningApp,
                    ..
                },
                ..
            }
        ));
        // The running app itself is never a target.
        assert!(map.check_partition(AreaKind::AppSlot, &running).is_err());
        // A second, identical flash_tone entry is another partition over the first.
        let mut t2 = example_table();
        let tone = *t2.find_data("flash_tone").unwrap();
        t2.push(tone).unwrap();
        let map = FlashMap::new(&t2, Chip::Esp32, None);
        assert!(map.check_data_update(&tone, None).is_err());
    }

    #[test]
    fn guard_refuses_staging_over_otadata_and_a_data_target_that_is_otadata() {
        let t = example_table();
        let od = *t.otadata().unwrap();
        let map = FlashMap::new(&t, Chip::Esp32, None);
        let e = map.check_data_update(&od, None).unwrap_err();
        assert!(e.to_string().starts_with("data partition otadata"));
        let staging = part("spare", TYPE_DATA, 0x99, 0xE000, 0x4000);
        let e = map
            .check_data_update(t.find_data("flash_tone").unwrap(), Some(&staging))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("staging partition spare at 0xe000..0x12000 (16384 bytes) overlaps otadata partition otadata"),
            "{e}"
        );
    }

    #[test]
    fn guard_refuses_partitions_beyond_the_flash() {
        let t = moved("flash_tone", 0x300000, 0x100000);
        let map = FlashMap::new(&t, Chip::Esp32, None).with_flash_size(Some(4 << 20));
        map.check_data_update(t.find_data("flash_tone").unwrap(), None)
            .unwrap();
        let map = map.with_flash_size(Some(0x380000));
        let e = map
            .check_data_update(t.find_data("flash_tone").unwrap(), None)
            .unwrap_err();
        assert!(matches!(e, GuardError::BeyondFlash { .. }));
        assert!(e
            .to_string()
            .contains("beyond the 3670016 byte (0x380000) flash"));
        let t = moved("flash_tone", 0xFFFF_0000, 0x20000);
        let map = FlashMap::new(&t, Chip::Esp32, None);
        let e = map
            .check_data_update(t.find_data("flash_tone").unwrap(), None)
            .unwrap_err();
        assert!(e.to_string().contains("past the 4 GiB"), "{e}");
    }

    #[test]
    fn empty_areas_overlap_nothing() {
        let a = Area::of(AreaKind::DataPartition, &part("a", TYPE_DATA, 1, 0x9000, 0));
        let b = Area::of(
            AreaKind::DataPartition,
            &part("b", TYPE_APP, 0, 0x9000, 0x1000),
        );
        assert!(!a.overlaps(&b));
        assert!(b.overlaps(&b));
    }
}
