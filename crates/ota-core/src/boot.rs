//! Emulation of ESP-IDF's 2nd-stage bootloader app selection (idf-formats.md §2.6): which app
//! it picks from otadata, the rollback state writes it makes, the anti-rollback eFuse checks and
//! burns (§2.7), and the fallback to other slots when an image fails verification. Sans-IO apart from the flash; what it does is reported as
//! [`BootEvent`]s so a front end can print ESP-IDF-style lines.

use core::fmt;

use embedded_storage::nor_flash::NorFlash;

use crate::chip::Chip;
use crate::image::{self, AppDesc, ImageSummary, APP_DESC_OFFSET, APP_DESC_SIZE};
use crate::otadata::{OtaData, OtaSelectEntry, OtaState, OTADATA_SIZE};
use crate::partition::{Partition, PartitionTable};
use crate::Error;

/// Bootloader build options that change selection (Kconfig, idf-formats.md §2.6, §2.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootConfig {
    /// `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE`.
    pub rollback: bool,
    /// `CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK` (needs `rollback`).
    pub anti_rollback: bool,
    /// The eFuse secure-version counter (popcount of the field), for anti-rollback.
    pub efuse_secure_version: u32,
    /// `CONFIG_MMU_PAGE_SIZE` the bootloader was built with, when known: flash-mapped segments
    /// must be aligned to it (`verify_segment_header`). None: the app descriptor's
    /// `mmu_page_size` when set, else Kconfig's default for the chip and `flash_size`.
    pub mmu_page_size: Option<u32>,
    /// The device's flash size (the bootloader header's), for that default. None: the app
    /// image header's flash size is used instead.
    pub flash_size: Option<u32>,
    /// Secure Boot v2 (`CONFIG_SECURE_BOOT_V2_ENABLED`, eFuse `SECURE_BOOT_EN`) with the eFuse
    /// key digests: every app is signature-checked before it boots
    /// (`esp_image_format.c` `verify_secure_boot_signature`), and one that fails is skipped
    /// like an image that fails to load. None: disabled.
    pub secure_boot: Option<crate::secure_boot::SecureBootKeys>,
}

impl BootConfig {
    /// The MMU page rule the image loader uses on `chip`.
    pub fn mmu_page_rule(&self, chip: Chip) -> image::MmuPageRule {
        match (self.mmu_page_size, self.flash_size) {
            (Some(p), _) => image::MmuPageRule::Fixed(p),
            (None, Some(fs)) => image::MmuPageRule::AppDescOr(chip.default_mmu_page_size(fs)),
            (None, None) => image::MmuPageRule::AppDescOrHeaderFlashSize,
        }
    }
}

/// Width in bits of the eFuse `SECURE_VERSION` field the bootloader uses
/// (`CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD`, idf-formats.md §2.7): ESP32 32, ESP32-C2 4,
/// ESP32-C5 9, the others 16. The counter is the number of burnt bits, so it can reach this value
/// and no more.
pub fn secure_version_field_bits(chip: Chip) -> u32 {
    match chip {
        Chip::Esp32 => 32,
        Chip::Esp32c2 => 4,
        Chip::Esp32c5 => 9,
        _ => 16,
    }
}

/// `esp_efuse_update_secure_version(version)` (idf-formats.md §2.7) on a counter value `efuse`:
/// the new counter (bits are only ever added), or `None` when `version` does not fit the
/// chip's field (ESP-IDF logs an error and burns nothing).
pub fn efuse_update_secure_version(chip: Chip, efuse: u32, version: u32) -> Option<u32> {
    if version > secure_version_field_bits(chip) {
        return None;
    }
    Some(efuse.max(version))
}

/// `bootloader_common_get_partition_description`: the app descriptor at offset 0x20 of an app
/// partition, if its magic word is there (no image verification).
pub fn partition_app_desc<F: NorFlash>(flash: &mut F, part: &Partition) -> Option<AppDesc> {
    let mut buf = [0u8; APP_DESC_SIZE];
    part.region()
        .read(flash, APP_DESC_OFFSET as u32, &mut buf)
        .ok()?;
    AppDesc::parse(&buf).ok()
}

/// A bootloader partition index: `FACTORY_INDEX` (-1), an OTA slot, or `TEST_APP_INDEX` (-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootIndex {
    Factory,
    Ota(u8),
    Test,
}

/// What the bootloader did, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootEvent {
    /// A PENDING_VERIFY entry was turned into ABORTED before selection (rollback).
    Aborted { sector: usize, seq: u32 },
    /// Both otadata entries are invalid and there is no factory app.
    NoFactoryTryingOta0,
    /// otadata is invalid; falling back to factory.
    OtaDataInvalidFallback,
    /// otadata is invalid and there is no factory app: every partition is tried.
    OtaDataInvalidTryAll,
    /// The selected entry went from NEW to PENDING_VERIFY (rollback).
    PendingVerify { sector: usize, seq: u32 },
    /// An image was tried and failed verification.
    LoadFailed { partition: Partition, error: Error },
    /// `set_actual_ota_seq`: otadata\[0\] was written for the initial boot.
    SetActualOtaSeq { seq: u32 },
    /// The image that boots.
    Loaded { partition: Partition },
    /// Only the test app could boot.
    FallingBackToTestApp,
    /// Anti-rollback: the eFuse secure-version counter was raised (`update_anti_rollback`).
    SecureVersionBurnt { from: u32, to: u32 },
    /// Anti-rollback: an app's `secure_version` does not fit the eFuse field; nothing burnt.
    SecureVersionOutOfRange { version: u32, field_bits: u32 },
    /// Anti-rollback: this partition's app is older than the eFuse counter and is skipped.
    SecureVersionTooLow {
        partition: Partition,
        version: u32,
        efuse: u32,
    },
}

/// Why nothing boots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootError {
    /// The otadata partition is smaller than two sectors: the bootloader resets.
    OtaDataTooSmall { size: u32 },
    /// No partition holds a bootable app ("No bootable app partitions in the partition table").
    NoBootableApp,
}

impl core::error::Error for BootError {}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::OtaDataTooSmall { size } => write!(
                f,
                "otadata partition is 0x{:x} bytes, the bootloader needs 0x{:x}: it resets",
                size, OTADATA_SIZE
            ),
            BootError::NoBootableApp => {
                f.write_str("No bootable app partitions in the partition table")
            }
        }
    }
}

/// What booted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOutcome {
    pub index: BootIndex,
    pub partition: Partition,
    pub summary: ImageSummary,
    /// State of the otadata entry for the booted slot after boot (`esp_ota_get_state_partition`),
    /// or None when no entry applies (factory, test, or no matching entry).
    pub ota_state: Option<OtaState>,
    /// The eFuse secure-version counter after this boot (anti-rollback may have raised it; the
    /// caller stores it). Equal to [`BootConfig::efuse_secure_version`] without anti-rollback.
    pub efuse_secure_version: u32,
}

/// The partition behind a bootloader index, if the table has one.
fn partition_for(table: &PartitionTable, index: BootIndex) -> Option<Partition> {
    match index {
        BootIndex::Factory => table.factory().copied(),
        BootIndex::Test => table.test_app().copied(),
        // `index_to_partition`: only slots below the bootloader's app_count exist.
        BootIndex::Ota(n) if n < table.bootloader_app_count() => table.ota(n).copied(),
        BootIndex::Ota(_) => None,
    }
}

/// Result of `get_selected_boot_partition`.
struct Selection {
    start: i32,
    initial_contents: bool,
}

const FACTORY: i32 = -1;

fn index_of(i: i32) -> BootIndex {
    if i < 0 {
        BootIndex::Factory
    } else {
        BootIndex::Ota(i as u8)
    }
}

fn blank_or_bad(e: &OtaSelectEntry) -> bool {
    e.seq == u32::MAX || !e.crc_ok()
}

/// `check_anti_rollback` (idf-formats.md §2.7): without anti-rollback always true; with it, the
/// partition's app descriptor must be readable and its `secure_version` ≥ the eFuse counter.
fn secure_version_ok<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    cfg: &BootConfig,
    index: BootIndex,
) -> bool {
    if !cfg.anti_rollback {
        return true;
    }
    partition_for(table, index)
        .and_then(|p| partition_app_desc(flash, &p))
        .is_some_and(|d| d.secure_version >= cfg.efuse_secure_version)
}

/// `update_anti_rollback(partition)` (idf-formats.md §2.6, §2.7): raise the eFuse counter to the
/// `secure_version` of the app in `part` (read from its descriptor, not verified, as ESP-IDF).
fn update_anti_rollback<F: NorFlash>(
    flash: &mut F,
    chip: Chip,
    cfg: &mut BootConfig,
    part: Option<Partition>,
    events: &mut dyn FnMut(BootEvent),
) {
    let Some(desc) = part.and_then(|p| partition_app_desc(flash, &p)) else {
        return;
    };
    let from = cfg.efuse_secure_version;
    match efuse_update_secure_version(chip, from, desc.secure_version) {
        Some(to) if to > from => {
            cfg.efuse_secure_version = to;
            events(BootEvent::SecureVersionBurnt { from, to });
        }
        Some(_) => {}
        None => events(BootEvent::SecureVersionOutOfRange {
            version: desc.secure_version,
            field_bits: secure_version_field_bits(chip),
        }),
    }
}

fn select<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    chip: Chip,
    cfg: &mut BootConfig,
    events: &mut dyn FnMut(BootEvent),
) -> Result<Selection, Error> {
    let Some(otadata) = table.otadata().copied() else {
        return Ok(Selection {
            start: FACTORY,
            initial_contents: false,
        });
    };
    if otadata.size < OTADATA_SIZE {
        return Err(Error::Boot(BootError::OtaDataTooSmall {
            size: otadata.size,
        }));
    }
    let mut od = OtaData::read(flash, &otadata)?;
    let app_count = table.bootloader_app_count();
    if cfg.rollback {
        let aborted = od.bootloader_pre_select(flash, &otadata, true)?;
        for (i, _) in aborted.iter().enumerate().filter(|(_, &w)| w) {
            events(BootEvent::Aborted {
                sector: i,
                seq: od.entries[i].seq,
            });
        }
    }
    let active = if !cfg.anti_rollback {
        if (od.entries[0].is_invalid() && od.entries[1].is_invalid()) || app_count == 0 {
            if table.factory().is_some() {
                return Ok(Selection {
                    start: FACTORY,
                    initial_contents: false,
                });
            }
            events(BootEvent::NoFactoryTryingOta0);
            let initial = blank_or_bad(&od.entries[0]) && blank_or_bad(&od.entries[1]);
            return Ok(Selection {
                start: 0,
                initial_contents: initial,
            });
        }
        od.active()
    } else {
        if blank_or_bad(&od.entries[0]) && blank_or_bad(&od.entries[1]) {
            return Ok(Selection {
                start: FACTORY,
                initial_contents: true,
            });
        }
        let mut ok = [false; 2];
        for (i, slot_ok) in ok.iter_mut().enumerate() {
            let e = od.entries[i];
            *slot_ok = e.is_valid()
                && app_count > 0
                && secure_version_ok(
                    flash,
                    table,
                    cfg,
                    BootIndex::Ota(e.slot(app_count).unwrap_or(0)),
                );
        }
        crate::otadata::select_otadata(&od.entries, ok, true)
    };
    if let Some(a) = active {
        let e = od.entries[a];
        let idx = e.slot(app_count).unwrap_or(0);
        if od.bootloader_mark_pending(flash, &otadata, a, cfg.rollback)? {
            events(BootEvent::PendingVerify {
                sector: a,
                seq: e.seq,
            });
        }
        if cfg.anti_rollback && od.entries[a].state == OtaState::Valid.to_u32() {
            let part = partition_for(table, BootIndex::Ota(idx));
            update_anti_rollback(flash, chip, cfg, part, events);
        }
        return Ok(Selection {
            start: idx as i32,
            initial_contents: false,
        });
    }
    events(if table.factory().is_some() {
        BootEvent::OtaDataInvalidFallback
    } else {
        BootEvent::OtaDataInvalidTryAll
    });
    Ok(Selection {
        start: FACTORY,
        initial_contents: false,
    })
}

/// Try one index: it must exist, pass anti-rollback (`check_anti_rollback`, before the image is
/// loaded) and verify.
fn try_load<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    chip: Chip,
    cfg: &BootConfig,
    index: BootIndex,
    events: &mut dyn FnMut(BootEvent),
) -> Option<(Partition, ImageSummary)> {
    let p = partition_for(table, index)?;
    if p.size == 0 {
        return None;
    }
    if cfg.anti_rollback {
        if let Some(d) = partition_app_desc(flash, &p) {
            if d.secure_version < cfg.efuse_secure_version {
                events(BootEvent::SecureVersionTooLow {
                    partition: p,
                    version: d.secure_version,
                    efuse: cfg.efuse_secure_version,
                });
                return None;
            }
        }
    }
    let mut v = image::ImageVerifier::new();
    v.set_expected_chip(Some(chip));
    v.set_mmu_page_rule(cfg.mmu_page_rule(chip));
    match image::verify_flash_with(flash, p.region(), v) {
        Ok(summary) => {
            if let Some(keys) = cfg.secure_boot {
                let ctx = crate::secure_boot::TrustContext {
                    rule: crate::secure_boot::AppSignatures::SecureBoot(keys),
                    running_key: None,
                };
                if let Err(error) =
                    crate::secure_boot::check_stored_app(flash, &p, summary.image_len, &ctx)
                {
                    events(BootEvent::LoadFailed {
                        partition: p,
                        error,
                    });
                    return None;
                }
            }
            if cfg.anti_rollback {
                // No descriptor where the bootloader reads it: `check_anti_rollback` fails.
                let sv = summary.loader_app_desc.map(|d| d.secure_version);
                if sv.is_none_or(|v| v < cfg.efuse_secure_version) {
                    return None;
                }
            }
            Some((p, summary))
        }
        Err(error) => {
            events(BootEvent::LoadFailed {
                partition: p,
                error,
            });
            None
        }
    }
}

/// Run the bootloader's selection on `flash` (idf-formats.md §2.6): returns what boots, after
/// making the otadata writes the real bootloader would make. With anti-rollback the eFuse
/// counter it burns is reported in [`BootOutcome::efuse_secure_version`] (and as events).
pub fn boot<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    chip: Chip,
    cfg: &BootConfig,
    events: &mut dyn FnMut(BootEvent),
) -> Result<BootOutcome, Error> {
    let mut cfg = *cfg;
    let sel = select(flash, table, chip, &mut cfg, events)?;
    let app_count = table.bootloader_app_count() as i32;
    let mut order = heapless_order(sel.start, app_count);
    for idx in order.by_ref() {
        let index = index_of(idx);
        if let Some((partition, summary)) = try_load(flash, table, chip, &cfg, index, events) {
            if idx >= 0 && sel.initial_contents {
                if let Some(otadata) = table.otadata().copied() {
                    let entry = OtaSelectEntry::new(idx as u32 + 1, OtaState::Valid);
                    OtaData::write_entry(flash, &otadata, 0, &entry)?;
                    events(BootEvent::SetActualOtaSeq {
                        seq: idx as u32 + 1,
                    });
                    if cfg.anti_rollback {
                        update_anti_rollback(flash, chip, &mut cfg, Some(partition), events);
                    }
                }
            }
            events(BootEvent::Loaded { partition });
            let ota_state = ota_state_of(flash, table, &partition);
            return Ok(BootOutcome {
                index,
                partition,
                summary,
                ota_state,
                efuse_secure_version: cfg.efuse_secure_version,
            });
        }
    }
    if let Some((partition, summary)) = try_load(flash, table, chip, &cfg, BootIndex::Test, events)
    {
        events(BootEvent::FallingBackToTestApp);
        events(BootEvent::Loaded { partition });
        return Ok(BootOutcome {
            index: BootIndex::Test,
            partition,
            summary,
            ota_state: None,
            efuse_secure_version: cfg.efuse_secure_version,
        });
    }
    Err(Error::Boot(BootError::NoBootableApp))
}

/// Order of `load_boot_image`: from `start` down to factory, then forwards from `start + 1`.
fn heapless_order(start: i32, app_count: i32) -> impl Iterator<Item = i32> {
    let down = (FACTORY..=start).rev();
    let up = (start + 1).max(0)..app_count;
    down.chain(up)
}

/// `esp_ota_get_state_partition` for an app partition (entry 0 first, CRC must match).
pub fn ota_state_of<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    part: &Partition,
) -> Option<OtaState> {
    let slot = part.ota_slot()?;
    let otadata = table.otadata()?;
    let od = OtaData::read(flash, otadata).ok()?;
    od.state_of_slot(slot, table.ota_count())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::testutil::{app_image, example_table, RamFlash};

    fn boot_events(
        f: &mut RamFlash,
        t: &PartitionTable,
        cfg: &BootConfig,
    ) -> (Result<BootOutcome, Error>, Vec<BootEvent>) {
        let mut evs = Vec::new();
        let r = boot(f, t, Chip::Esp32, cfg, &mut |e| evs.push(e));
        (r, evs)
    }

    fn device() -> (RamFlash, PartitionTable) {
        let mut f = RamFlash::new(4 << 20);
        f.put(0x10000, &app_image(Chip::Esp32, "a", "v1", 30_000));
        (f, example_table())
    }

    #[test]
    fn first_boot_without_factory_tries_ota0_and_sets_actual_seq() {
        let (mut f, t) = device();
        let (r, evs) = boot_events(&mut f, &t, &BootConfig::default());
        let out = r.unwrap();
        assert_eq!(out.index, BootIndex::Ota(0));
        assert!(evs.contains(&BootEvent::NoFactoryTryingOta0));
        assert!(evs.contains(&BootEvent::SetActualOtaSeq { seq: 1 }));
        // otadata[0] = seq 1, VALID, CRC 0x4743989A (idf-formats.md §2.2).
        let e = &f.data[0xD000..0xD020];
        assert_eq!(&e[0..4], &[1, 0, 0, 0]);
        assert_eq!(&e[24..28], &[2, 0, 0, 0]);
        assert_eq!(&e[28..32], &[0x9a, 0x98, 0x43, 0x47]);
        assert_eq!(out.ota_state, Some(OtaState::Valid));
        // A second boot writes nothing.
        let before = f.total_erases();
        let (r, _) = boot_events(&mut f, &t, &BootConfig::default());
        assert_eq!(r.unwrap().index, BootIndex::Ota(0));
        assert_eq!(f.total_erases(), before);
    }

    #[test]
    fn a_slot_that_fails_verification_falls_back_without_otadata_writes() {
        let (mut f, t) = device();
        boot_events(&mut f, &t, &BootConfig::default()).0.unwrap();
        let part = *t.otadata().unwrap();
        let mut od = OtaData::read(&mut f, &part).unwrap();
        od.set_boot(&mut f, &part, 1, 2, false).unwrap(); // ota_1 holds nothing
        let before = f.data.clone();
        let (r, evs) = boot_events(&mut f, &t, &BootConfig::default());
        let out = r.unwrap();
        assert_eq!(out.partition.label.as_str(), "ota_0");
        assert!(evs.iter().any(|e| matches!(e, BootEvent::LoadFailed { partition, .. } if partition.label.as_str() == "ota_1")));
        assert!(f.data == before, "fallback must not write otadata");
    }

    #[test]
    fn rollback_gives_an_unconfirmed_app_one_boot() {
        let (mut f, t) = device();
        let cfg = BootConfig {
            rollback: true,
            ..BootConfig::default()
        };
        boot_events(&mut f, &t, &cfg).0.unwrap();
        f.put(0x110000, &app_image(Chip::Esp32, "b", "v2", 30_000));
        let part = *t.otadata().unwrap();
        let mut od = OtaData::read(&mut f, &part).unwrap();
        od.set_boot(&mut f, &part, 1, 2, true).unwrap();
        let (r, evs) = boot_events(&mut f, &t, &cfg);
        let out = r.unwrap();
        assert_eq!(out.partition.label.as_str(), "ota_1");
        assert_eq!(out.ota_state, Some(OtaState::PendingVerify));
        assert!(evs
            .iter()
            .any(|e| matches!(e, BootEvent::PendingVerify { .. })));
        let (r, evs) = boot_events(&mut f, &t, &cfg);
        assert_eq!(r.unwrap().partition.label.as_str(), "ota_0");
        assert!(evs.iter().any(|e| matches!(e, BootEvent::Aborted { .. })));
    }

    #[test]
    fn nothing_bootable_is_an_error() {
        let mut f = RamFlash::new(4 << 20);
        let t = example_table();
        let (r, _) = boot_events(&mut f, &t, &BootConfig::default());
        assert_eq!(r.unwrap_err(), Error::Boot(BootError::NoBootableApp));
    }

    fn secure_app(version: &str, secure_version: u32) -> Vec<u8> {
        let mut spec = crate::image::ImageSpec::new(Chip::Esp32, "a", version);
        spec.total_size = Some(20_000);
        spec.secure_version = secure_version;
        let mut out = Vec::new();
        crate::image::build_image(&spec, &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
        out
    }

    #[test]
    fn segments_are_checked_with_the_bootloaders_mmu_page_size() {
        // An ESP32-C6 app laid out for 16 KB pages, the descriptor field left 0 (pre-v5.4).
        let mut spec = crate::image::ImageSpec::new(Chip::Esp32c6, "small", "v1");
        spec.total_size = Some(90_000);
        spec.segments = 7;
        spec.mmu_page_size = 0x4000;
        spec.flash_size_code = 0;
        let mut img = Vec::new();
        crate::image::build_image(&spec, &mut |b: &[u8]| img.extend_from_slice(b)).unwrap();
        let t = example_table();
        let boots = |img: &[u8], cfg: BootConfig| {
            let mut f: RamFlash = RamFlash::new(4 << 20);
            f.put(0x10000, img);
            boot(&mut f, &t, Chip::Esp32c6, &cfg, &mut |_| {}).map(|o| o.summary.mmu_page)
        };
        let fixed = |p| BootConfig {
            mmu_page_size: Some(p),
            ..BootConfig::default()
        };
        assert_eq!(boots(&img, fixed(0x4000)).unwrap(), 0x4000);
        assert!(boots(&img, fixed(0x10000)).is_err());
        let on_flash = |fs| BootConfig {
            flash_size: Some(fs),
            ..BootConfig::default()
        };
        assert_eq!(boots(&img, on_flash(1 << 20)).unwrap(), 0x4000);
        assert!(boots(&img, on_flash(4 << 20)).is_err());
        // Neither known: the image header's flash size (1MB) decides.
        assert_eq!(boots(&img, BootConfig::default()).unwrap(), 0x4000);
        // The descriptor field, when set, is the app's CONFIG_MMU_PAGE_SIZE.
        spec.record_mmu_page_size = true;
        spec.flash_size_code = 2;
        img.clear();
        crate::image::build_image(&spec, &mut |b: &[u8]| img.extend_from_slice(b)).unwrap();
        assert_eq!(boots(&img, on_flash(4 << 20)).unwrap(), 0x4000);
        assert!(boots(&img, fixed(0x10000)).is_err());
    }

    #[test]
    fn anti_rollback_burns_the_valid_app_version_and_skips_older_apps() {
        let mut f = RamFlash::new(4 << 20);
        let t = example_table();
        f.put(0x10000, &secure_app("v1", 2));
        let mut cfg = BootConfig {
            rollback: true,
            anti_rollback: true,
            efuse_secure_version: 0,
            ..BootConfig::default()
        };
        // Initial otadata: set_actual_ota_seq, then the eFuse takes the app's version.
        let (r, evs) = boot_events(&mut f, &t, &cfg);
        let out = r.unwrap();
        assert_eq!(out.partition.label.as_str(), "ota_0");
        assert_eq!(out.efuse_secure_version, 2);
        assert!(evs.contains(&BootEvent::SecureVersionBurnt { from: 0, to: 2 }));
        cfg.efuse_secure_version = out.efuse_secure_version;
        // An older app committed to ota_1 is never selected; ota_0 boots, nothing is burnt.
        f.put(0x110000, &secure_app("v0", 1));
        let part = *t.otadata().unwrap();
        let mut od = OtaData::read(&mut f, &part).unwrap();
        od.set_boot(&mut f, &part, 1, 2, true).unwrap();
        let (r, evs) = boot_events(&mut f, &t, &cfg);
        let out = r.unwrap();
        assert_eq!(out.partition.label.as_str(), "ota_0");
        assert_eq!(out.efuse_secure_version, 2);
        assert!(!evs
            .iter()
            .any(|e| matches!(e, BootEvent::PendingVerify { .. })));
        // A version beyond the ESP32's 32-bit field is never burnt.
        assert_eq!(efuse_update_secure_version(Chip::Esp32, 2, 33), None);
        assert_eq!(efuse_update_secure_version(Chip::Esp32c2, 2, 4), Some(4));
        assert_eq!(efuse_update_secure_version(Chip::Esp32c2, 2, 5), None);
        assert_eq!(efuse_update_secure_version(Chip::Esp32, 5, 3), Some(5));
    }
}
