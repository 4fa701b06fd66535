//! The device side of Secure Boot v2 for `ota device create|info`: eFuse key digests from PEM
//! keys, the check that a device's first app can boot, and each app slot's signature status.
//! The rules are `ota_core::secure_boot`'s; this reads files and prints.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use embedded_storage::nor_flash::ReadNorFlash;
use ota_core::image::Hex;
use ota_core::partition::Partition;
use ota_core::secure_boot::{
    self, slot_signatures, AppSignatures, BlockErrorKind, SignatureSector, SlotSignatures,
    TrustContext,
};
use ota_emu::settings::{DeviceSettings, KeyDigest, SecureBootSettings};
use serde_json::{json, Value};

/// `--secure-boot-key` (up to 3, public or private PEM), `--revoke-key N`,
/// `--signed-apps-no-secure-boot`: the settings they make.
pub fn settings_from_args(
    keys: &[PathBuf],
    revoke: &[u8],
    signed_apps: bool,
) -> Result<SecureBootSettings> {
    if keys.len() > secure_boot::MAX_BLOCKS {
        bail!(
            "--secure-boot-key given {} times: eFuse holds at most {} key digests (SECURE_BOOT_DIGEST0..2)",
            keys.len(),
            secure_boot::MAX_BLOCKS
        );
    }
    if signed_apps && !keys.is_empty() {
        bail!("--signed-apps-no-secure-boot and --secure-boot-key exclude each other (CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT depends on !CONFIG_SECURE_BOOT)");
    }
    let mut s = SecureBootSettings {
        enabled: !keys.is_empty(),
        signed_apps_no_secure_boot: signed_apps,
        ..Default::default()
    };
    let mut digests = [None; 3];
    for (i, k) in keys.iter().enumerate() {
        let d = crate::keys::key_digest_of_file(k)
            .map_err(|e| anyhow!("--secure-boot-key {}: {:#}", k.display(), e))?;
        digests[i] = Some(KeyDigest(d));
    }
    [s.digest0, s.digest1, s.digest2] = digests;
    for &n in revoke {
        if n as usize >= keys.len() {
            bail!(
                "--revoke-key {n}: there is no key digest {n} (given {} --secure-boot-key)",
                keys.len()
            );
        }
        match n {
            0 => s.revoke0 = true,
            1 => s.revoke1 = true,
            _ => s.revoke2 = true,
        }
    }
    Ok(s)
}

/// With secure boot enabled, the app a device is created with must be one its bootloader
/// boots: signed by a trusted, unrevoked key (checked over the bytes, before anything is
/// written).
pub fn check_first_app(settings: &DeviceSettings, app: &[u8], what: &Path) -> Result<()> {
    let Some(keys) = settings.secure_boot.keys() else {
        return Ok(());
    };
    let mut v = ota_core::image::ImageVerifier::new();
    v.feed(app)
        .map_err(|e| anyhow!("{}: {}", what.display(), e))?;
    let summary = v
        .finish()
        .map_err(|e| anyhow!("{}: {}", what.display(), e))?;
    let at = secure_boot::sector_offset(summary.image_len).unwrap_or(u32::MAX) as usize;
    let Some(sector) = app.get(at..at.saturating_add(secure_boot::SECTOR_SIZE)) else {
        bail!(
            "{}: secure boot is enabled but the app is not signed: its image ends at byte {}, \
             no 4096-byte signature sector at 0x{:x} (sign it with `ota image sign` or \
             espsecure sign-data --version 2)",
            what.display(),
            summary.image_len,
            at
        );
    };
    let sector = SignatureSector::from_slice(sector).map_err(|e| anyhow!("{e}"))?;
    let digests = secure_boot::ImageDigests::of(&app[..at], true);
    secure_boot::verify_secure_boot(&sector, &digests, &keys).map_err(|r| {
        anyhow!(
            "{}: secure boot would not boot this app: {} (signature sector at 0x{:x})",
            what.display(),
            r,
            at
        )
    })?;
    Ok(())
}

/// Each app slot's signature status under the device's settings.
pub fn slot_status<F: ReadNorFlash + embedded_storage::nor_flash::NorFlash>(
    flash: &mut F,
    settings: &DeviceSettings,
    part: &Partition,
    image_len: u32,
) -> Option<SlotSignatures> {
    // The bootloader's verdict under secure boot; in "signed apps" mode the blocks only (the
    // trusted key depends on which app runs).
    let rule = match settings.app_signatures() {
        s @ AppSignatures::SecureBoot(_) => s,
        _ => AppSignatures::NotChecked,
    };
    let ctx = TrustContext {
        rule,
        running_key: None,
    };
    slot_signatures(flash, part, image_len, &ctx).ok().flatten()
}

fn key_role(settings: &DeviceSettings, d: &[u8; 32]) -> String {
    let sb = &settings.secure_boot;
    for (i, (k, r)) in sb.digests().iter().zip(sb.revoked()).enumerate() {
        if k.map(|k| &k.0 == d).unwrap_or(false) {
            return if r {
                format!("eFuse digest {i}, REVOKED")
            } else {
                format!("eFuse digest {i}, trusted")
            };
        }
    }
    if sb.enabled {
        "not in eFuse".to_string()
    } else {
        "no secure boot".to_string()
    }
}

/// Lines under an app in `device info`.
pub fn print_slot(settings: &DeviceSettings, s: &Option<SlotSignatures>) {
    let Some(s) = s else {
        if settings.secure_boot.enabled {
            println!("    signature: none (no room for a sector after the image): secure boot will not boot it");
        }
        return;
    };
    let mut any = false;
    for (i, b) in s.blocks.iter().enumerate() {
        match b {
            Ok(d) => {
                any = true;
                println!(
                    "    signature block {i}: key digest {} ({})",
                    Hex(d),
                    key_role(settings, d)
                );
            }
            Err(BlockErrorKind::Absent) => {}
            Err(k) => println!("    signature block {i}: invalid ({k})"),
        }
    }
    if !any {
        println!(
            "    signature: unsigned (no valid block in the sector at 0x{:x})",
            s.sector_offset
        );
    }
    match &s.verdict {
        Some(Ok(v)) => println!(
            "    secure boot: boots (block {} verified, eFuse digest {})",
            v.block, v.trusted_index
        ),
        Some(Err(e)) => println!("    secure boot: REFUSED: {}", e),
        None => {}
    }
}

pub fn slot_json(settings: &DeviceSettings, s: &Option<SlotSignatures>) -> Value {
    let Some(s) = s else { return Value::Null };
    let blocks: Vec<Value> = s
        .blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| !matches!(b, Err(BlockErrorKind::Absent)))
        .map(|(i, b)| match b {
            Ok(d) => json!({"block": i, "valid": true, "key_digest": Hex(d).to_string(),
                            "role": key_role(settings, d)}),
            Err(k) => json!({"block": i, "valid": false, "error": k.to_string()}),
        })
        .collect();
    let verdict = match &s.verdict {
        Some(Ok(v)) => json!({"boots": true, "block": v.block, "efuse_digest": v.trusted_index}),
        Some(Err(e)) => {
            json!({"boots": false, "error": e.to_string(), "reason": e.reason().to_string()})
        }
        None => Value::Null,
    };
    json!({"sector_offset": s.sector_offset, "blocks": blocks, "secure_boot": verdict})
}

pub fn settings_json(settings: &DeviceSettings) -> Value {
    let sb = &settings.secure_boot;
    let digests: Vec<Value> = sb
        .digests()
        .iter()
        .zip(sb.revoked())
        .map(|(d, r)| match d {
            Some(d) => json!({"digest": d.hex(), "revoked": r}),
            None => Value::Null,
        })
        .collect();
    json!({"enabled": sb.enabled, "key_digests": digests,
           "signed_apps_no_secure_boot": sb.signed_apps_no_secure_boot,
           "scheme": sb.scheme.map(|s| s.name())})
}

pub fn print_settings(settings: &DeviceSettings) {
    let sb = &settings.secure_boot;
    if sb.enabled {
        println!(
            "Secure boot: v2 enabled (eFuse SECURE_BOOT_EN){}",
            sb.scheme
                .map(|s| format!(", scheme {}", s.scheme()))
                .unwrap_or_default()
        );
        for (i, (d, r)) in sb.digests().iter().zip(sb.revoked()).enumerate() {
            if let Some(d) = d {
                println!(
                    "  SECURE_BOOT_DIGEST{i} {}{}",
                    d.hex(),
                    if r { " (KEY_REVOKE: revoked)" } else { "" }
                );
            }
        }
    } else if sb.signed_apps_no_secure_boot {
        println!("Secure boot: disabled; signed apps without secure boot (CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT): updates must be signed by the running app's key");
    } else {
        println!("Secure boot: disabled (apps are not signature-checked)");
    }
}
