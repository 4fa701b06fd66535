//! `ota image sign|verify-signature|key-digest`: Secure Boot v2 on the host, compatible with
//! `espsecure sign-data --version 2`, `verify-signature --version 2` and
//! `digest-sbv2-public-key` (esptool `espsecure/__init__.py`). Parsing and verification are
//! ota-core's `secure_boot`; keys and signing are `crate::keys`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use ota_core::image::Hex;
use ota_core::secure_boot::{
    self, verify_block, verify_secure_boot, BlockErrorKind, ImageDigests, SectorBuilder,
    SecureBootKeys, SignatureSector, MAX_BLOCKS, SECTOR_SIZE,
};
use serde_json::{json, Value};

use crate::keys;

/// Signature files (raw RSA or DER ECDSA) are small.
const SIGNATURE_FILE_LIMIT: u64 = 4096;

/// `ota image sign`.
pub fn sign(
    keyfiles: &[PathBuf],
    append: bool,
    pub_keys: &[PathBuf],
    signatures: &[PathBuf],
    output: &Path,
    input: &Path,
) -> Result<ExitCode> {
    let external = !signatures.is_empty() || !pub_keys.is_empty();
    if external && !keyfiles.is_empty() {
        bail!("--keyfile signs here; --pub-key with --signature adds signatures made elsewhere: give one or the other");
    }
    if external && pub_keys.len() != signatures.len() {
        bail!(
            "number of public keys ({}) not equal to the number of signatures ({})",
            pub_keys.len(),
            signatures.len()
        );
    }
    if !external && keyfiles.is_empty() {
        bail!("no signing key: give --keyfile KEY.pem (or --pub-key PUB.pem --signature SIG.bin)");
    }
    let key_count = keyfiles.len() + signatures.len();
    if key_count > MAX_BLOCKS {
        bail!("{key_count} keys given: a signature sector holds {MAX_BLOCKS} blocks");
    }
    for k in keyfiles.iter().chain(pub_keys) {
        if crate::output::resolve(k)? == crate::output::resolve(output)? {
            bail!("output {} is the key file", output.display());
        }
    }
    let mut contents =
        crate::input::read_bounded(input, crate::input::FLASH_LIMIT, "image to sign")?;
    if contents.is_empty() {
        bail!("{}: empty file, nothing to sign", input.display());
    }
    // espsecure sign_secure_boot_v2: pad to a sector (the signature sector must start on one),
    // or with --append-signatures keep the valid blocks of the file's last sector.
    let mut builder = SectorBuilder::new();
    if contents.len() % SECTOR_SIZE != 0 {
        if external {
            bail!(
                "{}: {} bytes is not a multiple of 4096: a signature made elsewhere must be over \
                 sector-aligned data (the signature sector starts on a 4 KiB boundary)",
                input.display(),
                contents.len()
            );
        }
        let pad = SECTOR_SIZE - contents.len() % SECTOR_SIZE;
        eprintln!(
            "Padding data contents by {pad} bytes so signature sector aligns at sector boundary."
        );
        contents.resize(contents.len() + pad, 0xFF);
    } else if append {
        let at = contents.len() - SECTOR_SIZE;
        let existing = SignatureSector::from_slice(&contents[at..]).expect("4096 bytes");
        builder = SectorBuilder::from_existing(&existing);
        if builder.count() == 0 {
            eprintln!("No valid signature blocks found: signing the whole file afresh.");
        } else {
            eprintln!(
                "{} valid signature block(s) already present in the signature sector.",
                builder.count()
            );
            if let Err(e) = builder.check_room(key_count) {
                bail!("{}: {e}", input.display());
            }
            contents.truncate(at);
        }
    }
    builder
        .check_room(key_count)
        .map_err(|e| anyhow!("{}: {e}", input.display()))?;
    note_app_sector_position(&contents, input);

    let digests = ImageDigests::of(&contents, true);
    let mut added = Vec::new();
    if external {
        for (pk, sig) in pub_keys.iter().zip(signatures) {
            let key = keys::load(pk)?;
            let sig_bytes = crate::input::read_bounded(sig, SIGNATURE_FILE_LIMIT, "signature")?;
            let block = key
                .public
                .block_from_signature(&sig_bytes, &contents)
                .with_context(|| format!("{} with {}", sig.display(), pk.display()))?;
            added.push((block, key.public.describe()));
        }
    } else {
        for kf in keyfiles {
            let key = keys::load(kf)?;
            let Some(private) = &key.private else {
                if key.public.curve() == Some(ota_core::secure_boot::Curve::P192) {
                    bail!(
                        "{}: ECDSA P-192 keys cannot sign here (RustCrypto's p192 verifies \
                         only): sign with espsecure, verify with ota",
                        kf.display()
                    );
                }
                bail!(
                    "{}: a public key cannot sign: give the private key, or a signature made \
                     elsewhere with --pub-key and --signature",
                    kf.display()
                );
            };
            let block = private
                .sign_block(&key.public, &contents)
                .with_context(|| kf.display().to_string())?;
            added.push((block, key.public.describe()));
        }
    }
    for (block, what) in &added {
        // Our own check of what we wrote, by the device's verifier.
        let b = secure_boot::SignatureBlock::parse(builder.count() as u8, block)
            .map_err(|e| anyhow!("internal: {e}"))?;
        verify_block(&b, &digests).map_err(|e| anyhow!("internal: new {what} block: {e}"))?;
        builder
            .push(block)
            .map_err(|e| anyhow!("{}: {e}", input.display()))?;
    }
    let signed_len = contents.len();
    contents.extend_from_slice(&builder.finish());
    let wrote = crate::output::write_output(output, &contents, "signed image")?;
    crate::output::say(
        wrote,
        format_args!(
            "Signed {signed_len} bytes of data from {}. Signature sector now has {} signature block(s); wrote {} ({} bytes)",
            input.display(),
            builder.count(),
            output.display(),
            contents.len()
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// When the data is an app image, ESP-IDF looks for the sector at `align_up(image_len, 4096)`:
/// say so when the file puts it elsewhere (trailing bytes after the image).
fn note_app_sector_position(signed: &[u8], input: &Path) {
    if let Ok(s) = crate::cmd_image::read_image(signed) {
        if let Some(at) = secure_boot::sector_offset(s.image_len) {
            if at as usize != signed.len() {
                eprintln!(
                    "note: {}: the image ends at {:#x}, so ESP-IDF looks for its signature \
                     sector at {:#x}, but this file's sector goes at {:#x}",
                    input.display(),
                    s.image_len,
                    at,
                    signed.len()
                );
            }
        }
    }
}

/// `ota image verify-signature`.
pub fn verify(keyfile: Option<&Path>, digest: Option<&Path>, image: &Path) -> Result<ExitCode> {
    let (trusted, what) = match (keyfile, digest) {
        (Some(k), None) => {
            let key = keys::load(k)?;
            (
                key.public.key_digest()?,
                format!("{} ({})", k.display(), key.public.describe()),
            )
        }
        (None, Some(d)) => {
            let raw = crate::input::read_bounded(d, 64, "key digest")?;
            let arr: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
                anyhow!(
                    "{}: a key digest is 32 bytes (espsecure digest-sbv2-public-key), found {}",
                    d.display(),
                    raw.len()
                )
            })?;
            (arr, format!("key digest {}", Hex(&arr)))
        }
        _ => bail!("give --keyfile KEY.pem or --digest DIGEST.bin"),
    };
    let bytes = crate::input::read_bounded(image, crate::input::FLASH_LIMIT, "signed image")?;
    if bytes.len() < SECTOR_SIZE || bytes.len() % SECTOR_SIZE != 0 {
        bail!(
            "{}: {} bytes: a signed image is a non-zero multiple of 4096 bytes (data padded to a \
             sector, then the 4096-byte signature sector)",
            image.display(),
            bytes.len()
        );
    }
    let at = bytes.len() - SECTOR_SIZE;
    let sector = SignatureSector::from_slice(&bytes[at..]).expect("4096 bytes");
    let digests = ImageDigests::of(&bytes[..at], true);
    let mut keys = SecureBootKeys::default();
    keys.digests[0] = Some(trusted);
    match verify_secure_boot(&sector, &digests, &keys) {
        Ok(v) => {
            for b in sector.blocks().iter().flatten() {
                if secure_boot::stored_digest_matches(b, &digests) == Some(false) {
                    eprintln!(
                        "note: signature block {}: its stored image_digest does not match the \
                         data (not used: the computed digest is what is verified)",
                        b.index
                    );
                }
            }
            println!(
                "{}: signature block {} verified with {what} (sector at {at:#x})",
                image.display(),
                v.block
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(r) => bail!(
            "{}: signature not verified with {what} (sector at {at:#x}): {r}",
            image.display()
        ),
    }
}

/// `ota image key-digest`.
pub fn key_digest(keyfile: &Path, output: Option<&Path>) -> Result<ExitCode> {
    let d = keys::key_digest_of_file(keyfile)?;
    if let Some(out) = output {
        if crate::output::resolve(out)? == crate::output::resolve(keyfile)? {
            bail!("output {} is the key file", out.display());
        }
        crate::output::write_output(out, &d, "key digest")?;
    }
    println!("{}", Hex(&d));
    Ok(ExitCode::SUCCESS)
}

/// The signature section of `ota image info`, from the whole file and the image's length.
pub struct SignatureInfo {
    pub sector_offset: Option<u32>,
    pub sector_present: bool,
    pub blocks: Vec<Value>,
    pub lines: Vec<String>,
    pub sbv1: bool,
}

pub fn signature_info(file: &[u8], image_len: u32, chip: Option<ota_core::Chip>) -> SignatureInfo {
    let sector_offset = secure_boot::sector_offset(image_len);
    let sector = secure_boot::sector_of(file, image_len);
    let mut blocks = Vec::new();
    let mut lines = Vec::new();
    if let (Some(at), Some(sector)) = (sector_offset, sector) {
        let digests = ImageDigests::of(&file[..at as usize], true);
        for b in sector.blocks() {
            match b {
                Ok(b) => {
                    let res = verify_block(&b, &digests);
                    let curve = b.curve().map(|c| c.name());
                    let kd = b.key_digest();
                    let stored = secure_boot::stored_digest_matches(&b, &digests);
                    lines.push(format!(
                        "Signature block {}: {}{}, key digest {}, {}",
                        b.index,
                        b.scheme(),
                        curve.map(|c| format!(" {c}")).unwrap_or_default(),
                        Hex(&kd),
                        match &res {
                            Ok(()) => "signature valid for this image".to_string(),
                            Err(e) => format!("signature NOT valid for this image: {e}"),
                        }
                    ));
                    blocks.push(json!({
                        "index": b.index,
                        "status": "ok",
                        "scheme": b.scheme().name(),
                        "curve": curve,
                        "key_digest": Hex(&kd).to_string(),
                        "valid_for_image": res.is_ok(),
                        "error": res.err().map(|e| e.to_string()),
                        "stored_digest_matches": stored,
                    }));
                }
                Err(e) if e.kind == BlockErrorKind::Absent => {
                    blocks.push(json!({"index": e.index, "status": "absent"}));
                }
                Err(e) => {
                    lines.push(format!("Signature block {}: invalid: {}", e.index, e.kind));
                    blocks.push(
                        json!({"index": e.index, "status": "invalid", "error": e.kind.to_string()}),
                    );
                }
            }
        }
    }
    let sbv1 = chip == Some(ota_core::Chip::Esp32)
        && file
            .get(image_len as usize..)
            .and_then(secure_boot::Sbv1Block::parse)
            .is_some();
    SignatureInfo {
        sector_offset,
        sector_present: sector.is_some(),
        blocks,
        lines,
        sbv1,
    }
}

impl SignatureInfo {
    pub fn json(&self) -> Value {
        json!({
            "sector_offset": self.sector_offset,
            "sector_present": self.sector_present,
            "blocks": self.blocks,
            "valid_blocks": self.blocks.iter().filter(|b| b["status"] == "ok").count(),
            "secure_boot_v1": self.sbv1,
        })
    }

    /// After esptool's report, and only for an image with something to show (a block that is
    /// not absent, or an SBv1 block), so an unsigned image's report stays esptool's.
    pub fn print(&self) {
        if self.lines.is_empty() && !self.sbv1 {
            return;
        }
        println!();
        println!("Secure Boot Signatures");
        println!("======================");
        if self.sbv1 {
            println!(
                "Secure Boot v1 signature block found after the image (ECDSA P-256; not verified)"
            );
        }
        if let (Some(at), false) = (self.sector_offset, self.lines.is_empty()) {
            println!("Secure Boot v2 signature sector at {at:#x}:");
            for l in &self.lines {
                println!("{l}");
            }
        }
    }
}
