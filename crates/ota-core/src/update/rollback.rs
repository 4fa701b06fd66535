//! The app-side rollback API (`esp_ota_mark_app_valid_cancel_rollback`,
//! `esp_ota_mark_app_invalid_rollback`) and `esp_ota_begin`'s rollback rules (idf-formats.md §2.5).

use super::UpdateError;
use crate::chip::Chip;
use crate::guard::FlashMap;
use crate::image::{self};
use crate::otadata::OtaData;
use crate::partition::{Partition, PartitionTable};
use crate::Error;
use embedded_storage::nor_flash::NorFlash;

/// `esp_ota_begin`'s refusal with `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE` (ESP-IDF v5.5+,
/// idf-formats.md §2.5): no new update while the running app is PENDING_VERIFY, i.e. has not
/// confirmed itself. Read-only. `running`: the booted app partition (None: nothing to check).
pub fn check_running_confirmed<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    running: Option<&Partition>,
) -> Result<(), Error> {
    let Some(running) = running else {
        return Ok(());
    };
    match crate::boot::ota_state_of(flash, table, running) {
        Some(crate::otadata::OtaState::PendingVerify) => Err(UpdateError::RollbackInvalidState {
            running: running.label,
        }
        .into()),
        _ => Ok(()),
    }
}

/// What `esp_ota_begin` does with rollback enabled before the first write (ESP-IDF v5.5+,
/// idf-formats.md §2.5): [`check_running_confirmed`], then
/// `esp_ota_invalidate_inactive_ota_data_slot` — erase the otadata sector of the inactive entry
/// (it points at the slot about to be overwritten) unless that entry is blank or names the
/// running slot. Returns `(sector, slot)` erased, if any.
///
/// `map` names the table, the running app and what must not be written: the otadata partition
/// is checked against it ([`crate::guard`]) before anything is erased.
pub fn begin_with_rollback<F: NorFlash>(
    flash: &mut F,
    map: &FlashMap<'_>,
) -> Result<Option<(usize, u8)>, Error> {
    let (table, running) = (map.table, map.running.as_ref());
    map.check_otadata()?;
    check_running_confirmed(flash, table, running)?;
    let Some(otadata) = table.otadata().copied() else {
        return Ok(None);
    };
    let mut od = OtaData::read(flash, &otadata)?;
    let running_slot = running.and_then(|p| p.ota_slot());
    od.invalidate_inactive(flash, &otadata, table.ota_count(), running_slot)
}

/// What [`mark_app_valid_cancel_rollback`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkedValid {
    /// The active otadata entry and its seq.
    pub entry: usize,
    pub seq: u32,
    /// The state it had, when it was rewritten as VALID (None: already VALID, nothing written).
    pub was: Option<crate::otadata::OtaState>,
    /// Anti-rollback: the eFuse counter after the call (raised to the app's secure_version).
    pub efuse_secure_version: Option<u32>,
}

/// `esp_ota_mark_app_valid_cancel_rollback` (idf-formats.md §2.5): the ACTIVE otadata entry
/// becomes VALID (same seq, same sector: erase + write), unless it already is. With
/// anti-rollback (`anti_rollback = Some(eFuse counter)`), after a successful write the eFuse
/// takes the `secure_version` of the app in that entry's slot (`esp_ota_set_anti_rollback`);
/// a version beyond the chip's field is an error, as `esp_efuse_update_secure_version` fails.
pub fn mark_app_valid_cancel_rollback<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    chip: Chip,
    anti_rollback: Option<u32>,
) -> Result<MarkedValid, Error> {
    let part = *table.otadata().ok_or(UpdateError::NoOtaData)?;
    // otadata must lie clear of the bootloader, the table (at its default offset) and the apps.
    FlashMap::new(table, chip, None).check_otadata()?;
    let count = table.ota_count();
    let mut od = OtaData::read(flash, &part)?;
    let plan = od.plan_mark_valid(count)?;
    let entry = od.active().unwrap_or(0);
    let seq = od.entries[entry].seq;
    let Some((idx, e)) = plan else {
        return Ok(MarkedValid {
            entry,
            seq,
            was: None,
            efuse_secure_version: anti_rollback,
        });
    };
    let was = od.entries[idx].state();
    od.commit(flash, &part, idx, e)?;
    let mut efuse = anti_rollback;
    if let Some(cur) = anti_rollback {
        let slot = e.slot(count).unwrap_or(0);
        if let Some(d) = table
            .ota(slot)
            .and_then(|p| crate::boot::partition_app_desc(flash, p))
        {
            let to = crate::boot::efuse_update_secure_version(chip, cur, d.secure_version).ok_or(
                UpdateError::SecureVersionOutOfRange {
                    version: d.secure_version,
                    field_bits: crate::boot::secure_version_field_bits(chip),
                },
            )?;
            efuse = Some(to);
        }
    }
    Ok(MarkedValid {
        entry: idx,
        seq,
        was: Some(was),
        efuse_secure_version: efuse,
    })
}

/// `esp_ota_mark_app_invalid_rollback` (the part before `…_and_reboot` restarts,
/// idf-formats.md §2.5): `esp_ota_check_rollback_is_possible` verifies the app it would fall
/// back to (the other entry's slot, else a factory app; with anti-rollback its
/// `secure_version` must reach the eFuse counter and a factory app does not count), then the
/// active entry becomes INVALID. Returns the sector written. Nothing is written on error.
pub fn mark_app_invalid_rollback<F: NorFlash>(
    flash: &mut F,
    table: &PartitionTable,
    chip: Chip,
    anti_rollback: Option<u32>,
) -> Result<usize, Error> {
    let part = *table.otadata().ok_or(UpdateError::NoOtaData)?;
    // otadata must lie clear of the bootloader, the table (at its default offset) and the apps.
    FlashMap::new(table, chip, None).check_otadata()?;
    let count = table.ota_count();
    let mut od = OtaData::read(flash, &part)?;
    let mut verifies = |p: Option<&Partition>| -> bool {
        let Some(p) = p else { return false };
        match image::verify_flash(flash, p.region(), Some(chip)) {
            Ok(s) => match anti_rollback {
                Some(efuse) => s.loader_app_desc.is_some_and(|d| d.secure_version >= efuse),
                None => true,
            },
            Err(_) => false,
        }
    };
    let other_ok = match od.rollback_candidate(count) {
        Some(crate::otadata::RollbackCandidate::Slot { slot, .. }) => verifies(table.ota(slot)),
        Some(crate::otadata::RollbackCandidate::Factory) => {
            anti_rollback.is_none() && verifies(table.factory())
        }
        None => false,
    };
    od.mark_invalid(flash, &part, count, other_ok)
}
