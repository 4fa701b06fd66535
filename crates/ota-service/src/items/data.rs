//! The data item: rewrite a data partition found by label, raw or as an ESP-ADF tone bin with
//! the example's policy (adf-ota-service.md §6, §7), with the size checked before any erase.
//! In place (header written last, so a torn rewrite reads as invalid and is redone), or staged
//! through a spare partition with a resumable copy (`ota_core::staging`).
//!
//! Bad data never replaces good data. In place, when the source can be read twice (`file://`
//! always, `http(s)://` with a strong `ETag`), a *verifying pass* reads the whole file first:
//! its length, and for a tone bin every structural rule ([`ToneStreamCheck`]). Only then does the
//! *writing pass* open it again (`If-Match` on the ETag) and write it, comparing each 4 KiB
//! block with the verifying pass before the block reaches flash. When the source cannot be read
//! twice, a tone bin is written in place only over a partition that is already invalid (its
//! header is programmed only if the whole stream passed the check), and refused otherwise with a
//! pointer to `staging`, which checks the bin in the spare partition before the target is
//! touched.

use embedded_storage::nor_flash::NorFlash;
use ota_core::image::Hex;
use ota_core::partition::Partition;
use ota_core::staging::{StagedCopy, StagedWrite, StagingError};
use ota_core::tone::{
    self, ToneDecision, ToneDesc, ToneError, ToneHeader, ToneStreamCheck, TONE_DESC_SIZE,
    TONE_FORMAT_1, TONE_HEADER_SIZE,
};
use ota_core::update::{DataUpdate, UpdateError};
use sha2::{Digest, Sha256};

use super::download::{Fetch, FetchSpec, Next};
use super::{core_error, source_error, Progress};
use crate::io::BoxFuture;
use crate::prelude::*;
use crate::reason::Reason;
use crate::service::{Device, Env, Event, ItemError, Need, UpgradeItem};
use crate::source::{RetryPolicy, SourceError, TransferLimits, ValidatorKind};

const TAG_DEFAULT: &str = "OTA_DEFAULT";
const TAG_EXAMPLE: &str = "HTTPS_OTA_EXAMPLE";
const TAG_TONE: &str = "TONE_PARTITION";
/// ADF's data read size (adf-ota-service.md §6: `read_buf[2048]`).
const CHUNK: usize = 2048;
/// The writing pass compares the stream with the verifying pass block by block, one flash
/// sector at a time (`ota_core::flash::SECTOR_SIZE`), before the block is written.
const BLOCK: usize = ota_core::flash::SECTOR_SIZE as usize;
/// HTTP 412 Precondition Failed: the `If-Match` ETag no longer names the server's file.
const HTTP_PRECONDITION_FAILED: u16 = 412;

/// How a data item's bytes are checked before they are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Any bytes (ADF's default data procedure, adf-ota-service.md §6).
    #[default]
    Raw,
    /// An ADF tone bin (adf-ota-service.md §7, §8).
    Tone,
}

pub struct DataItem {
    pub uri: String,
    pub label: String,
    pub format: DataFormat,
    pub ca_pem: Option<Vec<u8>>,
    /// Transfer bounds (rate rule, overall deadline); None: the run's (`Env::source`).
    pub limits: Option<TransferLimits>,
    pub reboot: bool,
    pub break_after_fail: bool,
    /// A spare data partition (by label) to stage the image in; None: write in place.
    pub staging: Option<String>,
    /// How often a failed download is tried again (and reconnected from the byte it reached),
    /// and the backoff between attempts.
    pub retry: RetryPolicy,
    /// The catalogue (`/manifest.json`) that lists `uri`: its entry's size and SHA-256 must
    /// match the bytes before the partition is erased (README "Authenticated catalogue").
    pub catalogue: Option<super::manifest::CatalogueLink>,
    /// Accept only a catalogue signed by this key (needs `catalogue`).
    pub trust: Option<super::manifest::CatalogueTrust>,
    run: Option<Run>,
}

/// What the catalogue says the data file is.
#[derive(Clone, Debug)]
struct Expected {
    catalogue: String,
    size: u64,
    sha256: [u8; 32],
}

/// Where the data goes: the target itself, or the staging partition first.
enum Sink {
    /// Boxed: the engine buffers the first sector (4 KiB).
    Direct(Box<DataUpdate>),
    /// Boxed: the writer keeps a partial flash word (up to 256 bytes).
    Staged(Box<StagedWrite>),
}

/// How the source can be read a second time (for a verifying pass before the writing pass).
#[derive(Clone, Debug)]
enum Reread {
    /// A file on the SD card: opened again.
    File,
    /// An HTTP(S) file with a strong ETag: fetched again with `If-Match`.
    Http { etag: String },
}

/// What the verifying pass read.
struct Verified {
    len: u64,
    /// SHA-256 of each [`BLOCK`] of the file (the last one may be shorter).
    blocks: Vec<[u8; 32]>,
}

struct Run {
    source: Fetch,
    /// The catalogue's size and SHA-256 for the file, when the item has a catalogue.
    expected: Option<Expected>,
    engine: DataUpdate,
    /// Bytes already read from the source by need_upgrade, to be written first.
    pending: Vec<u8>,
    reread: Option<Reread>,
    verified: Option<Verified>,
}

fn block_digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The writing pass: each piece of the stream is checked (tone structure, and after a
/// verifying pass its block's SHA-256) before it reaches flash.
struct WritePass<'v> {
    check: Option<ToneStreamCheck>,
    verified: Option<&'v Verified>,
    /// Bytes waiting for their block's comparison with the verifying pass.
    block: Vec<u8>,
    next_block: usize,
    written: u64,
    /// What a failure after the first write leaves behind (appended to the error).
    aftermath: String,
    /// The partition being written (the staging partition when staged).
    label: ota_core::partition::Label,
    target: Partition,
    /// SHA-256 of every byte handed to flash.
    digest: Sha256,
}

impl WritePass<'_> {
    /// The sentence to append to an error now: "nothing was written" or the aftermath.
    fn left(&self) -> String {
        if self.written == 0 {
            format!(
                "; nothing was written: partition {} is unchanged",
                self.target.label.as_str()
            )
        } else {
            self.aftermath.clone()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn feed<F: NorFlash>(
        &mut self,
        item: &DataItem,
        sink: &mut Sink,
        flash: &mut F,
        env: &mut Env<'_>,
        progress: &mut Progress,
        bytes: &[u8],
        last: bool,
    ) -> Result<(), ItemError> {
        let left = self.left();
        if let Some(c) = self.check.as_mut() {
            // Checked before the bytes reach flash: a file that is not a tone bin is refused
            // before the first erase.
            c.feed(bytes)
                .map_err(|e| item.tone_fault(env, &e, &|m: &str| format!("{}{}", m, left)))?;
        }
        let ready: Vec<u8> = match self.verified {
            None => bytes.to_vec(),
            Some(v) => {
                self.block.extend_from_slice(bytes);
                let full = if last {
                    self.block.len()
                } else {
                    self.block.len() / BLOCK * BLOCK
                };
                let mut at = 0;
                while at < full {
                    let end = (at + BLOCK).min(full);
                    if v.blocks.get(self.next_block) != Some(&block_digest(&self.block[at..end])) {
                        return Err(ItemError::new(
                            Reason::StreamRdFail,
                            format!(
                                "{}: the writing pass differs from the verifying pass in bytes \
                                 {}..{}{}",
                                item.uri,
                                self.next_block * BLOCK,
                                self.next_block * BLOCK + (end - at),
                                left
                            ),
                        ));
                    }
                    self.next_block += 1;
                    at = end;
                }
                self.block.drain(..full).collect()
            }
        };
        if ready.is_empty() {
            return Ok(());
        }
        match sink {
            Sink::Direct(d) => d.write(flash, &ready),
            Sink::Staged(w) => w.write(flash, &ready),
        }
        .map_err(|e| {
            ItemError::new(
                Reason::PartitionWtFail,
                format!(
                    "writing partition {}: {}{}",
                    self.label.as_str(),
                    e,
                    self.aftermath
                ),
            )
        })?;
        self.digest.update(&ready);
        self.written += ready.len() as u64;
        progress.add(env, ready.len());
        Ok(())
    }
}

/// The reason a tone structure fault is reported with: ADF's own where the example has one
/// ("not audio tone bin" is UNKNOWN, a bad descriptor magic ERROR_MAGIC_WORD;
/// adf-ota-service.md §7), else `ESP_ERR_OTA_VALIDATE_FAILED`.
fn tone_fault_reason(e: &ToneError) -> Reason {
    match e {
        ToneError::BadHeaderTag { .. } => Reason::Unknown,
        ToneError::BadDescMagic { .. } => Reason::ErrorMagicWord,
        _ => Reason::OtaValidateFailed,
    }
}

impl DataItem {
    pub fn new(uri: impl Into<String>, label: impl Into<String>, format: DataFormat) -> Self {
        DataItem {
            uri: uri.into(),
            label: label.into(),
            format,
            ca_pem: None,
            limits: None,
            reboot: false,
            break_after_fail: false,
            staging: None,
            retry: RetryPolicy::default(),
            catalogue: None,
            trust: None,
            run: None,
        }
    }

    /// The catalogue's entry for this item's file: fetched (and verified, with a trust), then
    /// the entry whose URL is `uri`. Nothing is written.
    async fn expected(&self, id: usize, env: &mut Env<'_>) -> Result<Option<Expected>, ItemError> {
        let Some(link) = &self.catalogue else {
            if self.trust.is_some() {
                return Err(ItemError::new(
                    Reason::OtaValidateFailed,
                    format!(
                        "{}: this device has a catalogue key, and a data item is trusted only \
                         through a signed catalogue: set `catalogue = \"…/manifest.json\"` on it \
                         (nothing was written)",
                        self.uri
                    ),
                ));
            }
            return Ok(None);
        };
        let cat_uri = &link.uri;
        let fetch = super::manifest::CatalogueFetch {
            uri: cat_uri,
            ca_pem: &self.ca_pem,
            limits: self.limits,
            retry: self.retry,
            trust: self.trust.as_ref(),
        };
        let cat = (link.read)(fetch, id, env).await?;
        let refuse = |what: String| {
            ItemError::new(
                Reason::OtaValidateFailed,
                format!(
                    "{}: {what}; nothing was written: partition {} is unchanged",
                    self.uri, self.label
                ),
            )
        };
        let entry = cat
            .entries
            .iter()
            .find(|e| super::manifest::resolve(cat_uri, &e.path) == self.uri)
            .ok_or_else(|| {
                refuse(format!(
                    "the catalogue {cat_uri} lists no entry for this file ({} entries)",
                    cat.entries.len()
                ))
            })?;
        if let Some(err) = &entry.error {
            return Err(refuse(format!(
                "the catalogue {cat_uri} lists this file as invalid: {err}"
            )));
        }
        let sha256 = super::manifest::parse_sha256(&entry.sha256).ok_or_else(|| {
            refuse(format!(
                "the catalogue {cat_uri} gives no valid sha256 for it (`{}`)",
                entry.sha256
            ))
        })?;
        env.info(
            TAG_DEFAULT,
            format!(
                "catalogue {cat_uri}: {} is {} bytes, sha256 {}…",
                self.uri,
                entry.size,
                entry.sha256.get(..16).unwrap_or(&entry.sha256)
            ),
        );
        Ok(Some(Expected {
            catalogue: cat_uri.clone(),
            size: entry.size,
            sha256,
        }))
    }

    /// The staging partition named by the config: a data partition, not otadata.
    fn staging_partition<F: NorFlash>(
        &self,
        dev: &Device<'_, F>,
    ) -> Result<Option<Partition>, ItemError> {
        let Some(label) = &self.staging else {
            return Ok(None);
        };
        let p = dev.table.find_data(label).copied().ok_or_else(|| {
            ItemError::new(
                Reason::PartitionNotFound,
                format!("{}: staging partition [{}] not found", self.uri, label),
            )
        })?;
        if p.subtype == ota_core::partition::SUBTYPE_DATA_OTA {
            return Err(ItemError::new(
                Reason::PartitionWtFail,
                format!(
                    "{}: staging partition [{}] is the otadata partition",
                    self.uri, label
                ),
            ));
        }
        Ok(Some(p))
    }

    /// Finish a staged copy that a power cut interrupted (the record in the staging
    /// partition says where it stopped). A staged image that no longer matches its hash is
    /// discarded: the target then reads as invalid and this run rewrites it.
    fn resume_staged_copy<F: NorFlash>(
        &self,
        id: usize,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        staging: &Partition,
        target: &Partition,
    ) -> Result<(), ItemError> {
        let map = dev.flash_map();
        match StagedCopy::resume(dev.flash, &map, staging, target) {
            Ok(None) => Ok(()),
            Ok(Some(copy)) => {
                env.warn(
                    TAG_DEFAULT,
                    format!(
                        "resuming the staged copy {} -> {} at step {} of {} (interrupted earlier)",
                        staging.label.as_str(),
                        target.label.as_str(),
                        copy.next_step(),
                        copy.record().steps()
                    ),
                );
                env.emit(Event::StagedCopyResume {
                    id,
                    step: copy.next_step(),
                    steps: copy.record().steps(),
                });
                copy.run(dev.flash).map_err(|e| core_error(e, &self.uri))?;
                env.info(
                    TAG_DEFAULT,
                    format!("partition {} copy completed", target.label.as_str()),
                );
                Ok(())
            }
            Err(ota_core::Error::Update(UpdateError::Staging(
                e @ StagingError::StagedImageCorrupt { .. },
            ))) => {
                env.error(
                    TAG_DEFAULT,
                    format!("{}; discarding the unfinished copy", e),
                );
                StagedCopy::discard(dev.flash, &map, staging).map_err(|e| core_error(e, &self.uri))
            }
            Err(e) => Err(core_error(e, &self.uri)),
        }
    }

    /// How this item's downloads start.
    fn spec(&self, id: usize) -> FetchSpec<'_> {
        FetchSpec {
            uri: &self.uri,
            id,
            tag: TAG_DEFAULT,
            retry: self.retry,
        }
    }

    /// In place (no staging) and the source can be read twice: verify it first.
    fn verify_first(&self, run: &Run) -> bool {
        self.staging.is_none() && run.reread.is_some()
    }

    /// The verifying pass: read the whole source (bounded by the partition), check its length
    /// and, for a tone bin, its whole structure. Nothing is written.
    async fn verify_pass(
        &self,
        env: &mut Env<'_>,
        src: &mut Fetch,
        part: &Partition,
        prefix: &[u8],
        expected: Option<&Expected>,
    ) -> Result<Verified, ItemError> {
        let announced = src.content_length();
        let mut check =
            (self.format == DataFormat::Tone).then(|| ToneStreamCheck::new(part.size, announced));
        let kept = |what: &str| {
            format!(
                "{}; checked before anything was erased: partition {} is unchanged",
                what,
                part.label.as_str()
            )
        };
        let mut blocks = Vec::new();
        let mut block: Vec<u8> = Vec::with_capacity(BLOCK);
        let mut whole = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; CHUNK];
        // The bytes need_upgrade already read come first.
        let mut first = Some(prefix).filter(|p| !p.is_empty());
        loop {
            let n = match first.take() {
                Some(p) => {
                    buf.resize(buf.len().max(p.len()), 0);
                    buf[..p.len()].copy_from_slice(p);
                    p.len()
                }
                None => match src.read(&mut buf[..CHUNK], env).await {
                    Ok(Next::Data(n)) => n,
                    Ok(Next::End) => 0,
                    Ok(Next::Restart) => {
                        return Err(ItemError::new(
                            Reason::StreamRdFail,
                            kept(&format!(
                                "verifying pass: {}: the server started the file over (it \
                                 changed, or ignores Range)",
                                self.uri
                            )),
                        ))
                    }
                    Err(e) => {
                        return Err(ItemError::new(
                            e.reason,
                            kept(&format!("verifying pass: {}", e.message)),
                        ))
                    }
                },
            };
            if n == 0 {
                break;
            }
            let bytes = &buf[..n];
            whole.update(bytes);
            total += n as u64;
            if let Some(x) = expected.filter(|x| total > x.size) {
                return Err(ItemError::new(
                    Reason::OtaValidateFailed,
                    kept(&format!(
                        "{}: longer than the {} bytes the catalogue {} says",
                        self.uri, x.size, x.catalogue
                    )),
                ));
            }
            if total > part.size as u64 {
                return Err(ItemError::new(
                    Reason::PartitionWtFail,
                    kept(&format!(
                        "{}: more than the {} bytes of partition {}",
                        self.uri,
                        part.size,
                        part.label.as_str()
                    )),
                ));
            }
            if let Some(c) = check.as_mut() {
                c.feed(bytes).map_err(|e| self.tone_fault(env, &e, &kept))?;
            }
            let mut rest = bytes;
            while !rest.is_empty() {
                let take = (BLOCK - block.len()).min(rest.len());
                block.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if block.len() == BLOCK {
                    blocks.push(block_digest(&block));
                    block.clear();
                }
            }
        }
        if !block.is_empty() {
            blocks.push(block_digest(&block));
        }
        if total == 0 {
            return Err(ItemError::new(
                Reason::StreamRdFail,
                kept(&format!("{}: the file is empty", self.uri)),
            ));
        }
        if let Some(x) = expected {
            let digest: [u8; 32] = whole.finalize().into();
            if total != x.size || digest != x.sha256 {
                return Err(ItemError::new(
                    Reason::OtaValidateFailed,
                    kept(&format!(
                        "{}: does not match the catalogue {}: {} bytes with SHA-256 {}, the \
                         catalogue says {} bytes with SHA-256 {}",
                        self.uri,
                        x.catalogue,
                        total,
                        Hex(&digest),
                        x.size,
                        Hex(&x.sha256)
                    )),
                ));
            }
            env.info(
                TAG_DEFAULT,
                format!(
                    "{}: {} bytes match the catalogue's SHA-256",
                    self.uri, total
                ),
            );
        }
        if let Some(c) = check.as_ref() {
            let summary = c.finish().map_err(|e| self.tone_fault(env, &e, &kept))?;
            env.info(
                TAG_DEFAULT,
                format!(
                    "verified {} ({} bytes): tone bin format {}, {} files, {} bytes{}",
                    self.uri,
                    total,
                    summary.header.format,
                    summary.header.total_num,
                    summary.size,
                    if summary.trailing_erased > 0 {
                        format!(" + {} erased (0xff) bytes", summary.trailing_erased)
                    } else {
                        String::new()
                    }
                ),
            );
        } else {
            env.info(
                TAG_DEFAULT,
                format!("verified {}: {} bytes read", self.uri, total),
            );
        }
        Ok(Verified { len: total, blocks })
    }

    /// An item error for a tone bin that fails the structural check.
    fn tone_fault(
        &self,
        env: &mut Env<'_>,
        e: &ToneError,
        context: &dyn Fn(&str) -> String,
    ) -> ItemError {
        if matches!(e, ToneError::BadHeaderTag { .. }) {
            env.error(TAG_EXAMPLE, "not audio tone bin");
        }
        ItemError::new(
            tone_fault_reason(e),
            context(&format!("{}: not a valid tone bin: {}", self.uri, e)),
        )
    }

    async fn raw_need_upgrade(&mut self, env: &mut Env<'_>) -> Result<Need, ItemError> {
        let mut run = self
            .run
            .take()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        let part = *run.engine.partition();
        let result = if self.verify_first(&run) {
            self.verify_pass(env, &mut run.source, &part, &[], run.expected.as_ref())
                .await
                .map(|v| run.verified = Some(v))
        } else if self.staging.is_none() && run.source.content_length().is_none() {
            Err(ItemError::new(
                Reason::StreamRdFail,
                format!(
                    "{}: the server sent neither a strong ETag nor a Content-Length, so the size \
                     cannot be checked before partition {} is erased; nothing was written. Set \
                     `staging = \"<spare data partition>\"` on this item to receive it in a \
                     spare partition first",
                    self.uri,
                    part.label.as_str()
                ),
            ))
        } else {
            Ok(())
        };
        self.run = Some(run);
        result.map(|_| Need::Yes)
    }

    async fn tone_need_upgrade<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
    ) -> Result<Need, ItemError> {
        let mut run = self
            .run
            .take()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        let r = self.tone_decide(dev, env, &mut run).await;
        self.run = Some(run);
        r
    }

    async fn tone_decide<F: NorFlash>(
        &self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        run: &mut Run,
    ) -> Result<Need, ItemError> {
        let part = *run.engine.partition();
        let current = match tone::tone_partition_init(dev.flash, &part) {
            Ok(info) => {
                env.info(
                    TAG_TONE,
                    format!(
                        "tone partition format {}, total {}",
                        info.header.format, info.header.total_num
                    ),
                );
                // ADF's init does not look at the table or the CRC: a torn rewrite can pass
                // it. Our full check (table, tail, CRC-32 for format 1) decides too.
                match tone::tone_partition_check(dev.flash, &part) {
                    Ok(_) => Some(info),
                    Err(e) => {
                        env.error(
                            TAG_TONE,
                            format!(
                                "tone partition {} fails the integrity check ({}): rewriting it",
                                part.label.as_str(),
                                e
                            ),
                        );
                        None
                    }
                }
            }
            Err(e) => {
                env.error(TAG_TONE, format!("{}", e));
                None
            }
        };
        // The incoming header (and descriptor), checked as they arrive: a file that is not a
        // tone bin is refused here. The rest is read by the verifying pass only if the policy
        // says the bin is wanted.
        let head: Vec<u8> = {
            let unchecked = |what: &str| {
                format!(
                    "{}; nothing was written: partition {} is unchanged",
                    what,
                    part.label.as_str()
                )
            };
            let mut check = ToneStreamCheck::new(part.size, run.source.content_length());
            let mut hdr = [0u8; TONE_HEADER_SIZE];
            let restarted = || {
                ItemError::new(
                    Reason::StreamRdFail,
                    unchecked(&format!(
                        "{}: the server started the file over while its header was read",
                        self.uri
                    )),
                )
            };
            let got = run.source.read_full(&mut hdr, env, &restarted).await?;
            run.pending.extend_from_slice(&hdr[..got]);
            check
                .feed(&hdr[..got])
                .map_err(|e| self.tone_fault(env, &e, &unchecked))?;
            if got < hdr.len() {
                return Err(ItemError::new(
                    Reason::StreamRdFail,
                    unchecked(&format!(
                        "{}: only {} bytes, a tone bin header needs {}",
                        self.uri,
                        got,
                        hdr.len()
                    )),
                ));
            }
            let incoming = ToneHeader::parse(&hdr)
                .map_err(|e| ItemError::new(Reason::Unknown, format!("{}: {}", self.uri, e)))?;
            if tone::incoming_needs_desc(&incoming) {
                let mut d = [0u8; TONE_DESC_SIZE];
                let got = run.source.read_full(&mut d, env, &restarted).await?;
                run.pending.extend_from_slice(&d[..got]);
                check
                    .feed(&d[..got])
                    .map_err(|e| self.tone_fault(env, &e, &unchecked))?;
                if got < d.len() {
                    return Err(ItemError::new(
                        Reason::StreamRdFail,
                        unchecked(&format!(
                            "{}: the tone descriptor is cut short ({} of {} bytes)",
                            self.uri,
                            got,
                            d.len()
                        )),
                    ));
                }
            }
            run.pending.clone()
        };
        let incoming = ToneHeader::parse(&head)
            .map_err(|e| ItemError::new(Reason::Unknown, format!("{}: {}", self.uri, e)))?;
        let Some(current) = current else {
            // Not a valid tone partition now: rewrite it whole from the stream (the write pass
            // checks every byte; the header is programmed only if the whole bin is valid).
            return self.wanted(env, run, &part).await;
        };
        env.info(
            TAG_EXAMPLE,
            format!("format {} : {}", current.header.format, incoming.format),
        );
        let mut desc = None;
        if tone::incoming_needs_desc(&incoming) {
            let d = head
                .get(TONE_HEADER_SIZE..TONE_HEADER_SIZE + TONE_DESC_SIZE)
                .unwrap_or(&[]);
            let parsed = ToneDesc::parse(d).map_err(|e| {
                ItemError::new(Reason::StreamRdFail, format!("{}: {}", self.uri, e))
            })?;
            env.info(
                TAG_EXAMPLE,
                format!(
                    "imcoming magic_word {:x}, project_name {}",
                    parsed.magic_word,
                    parsed.project_name_str()
                ),
            );
            if let Some(cur) = current.desc.as_ref() {
                env.info(
                    TAG_EXAMPLE,
                    format!(
                        "current version {}, incoming version {}",
                        cur.version_str(),
                        parsed.version_str()
                    ),
                );
            }
            desc = Some(parsed);
        }
        match tone::decide_upgrade(Some(&current), &incoming, desc.as_ref(), true) {
            ToneDecision::WriteAll | ToneDecision::Write { .. } => {
                if self.staging.is_none() && !self.verify_first(run) {
                    env.error(
                        TAG_DEFAULT,
                        "the incoming tone bin cannot be verified before the valid partition is erased",
                    );
                    return Err(ItemError::new(
                        Reason::PartitionWtFail,
                        format!(
                            "{}: refused: the server sent no strong ETag, so this tone bin cannot \
                             be read twice and verified before the valid tone partition {} is \
                             erased (nothing was written). Set `staging = \"<spare data \
                             partition>\"` on this item: a staged bin is verified in the spare \
                             partition before the target is touched",
                            self.uri,
                            part.label.as_str()
                        ),
                    ));
                }
                env.info(
                    TAG_DEFAULT,
                    format!("write_offset 0, size {}", TONE_HEADER_SIZE),
                );
                if incoming.format == TONE_FORMAT_1 {
                    env.info(
                        TAG_DEFAULT,
                        format!("write_offset {}, size {}", TONE_HEADER_SIZE, TONE_DESC_SIZE),
                    );
                }
                self.wanted(env, run, &part).await
            }
            ToneDecision::Reject(r) => {
                let reason = Reason::from_code(r.adf_reason());
                let message = format!("{}: {}", self.uri, r);
                if reason == Reason::NoHigherVersion {
                    env.warn(
                        TAG_EXAMPLE,
                        "The incoming version is same as or lower than the running version",
                    );
                    Ok(Need::No(reason, message))
                } else {
                    env.error(TAG_EXAMPLE, format!("{}", r));
                    Err(ItemError::new(reason, message))
                }
            }
        }
    }

    /// The policy wants the incoming bin: when the source can be read twice, the verifying
    /// pass reads the rest of it now (after the bytes already read), before anything is erased.
    async fn wanted(
        &self,
        env: &mut Env<'_>,
        run: &mut Run,
        part: &Partition,
    ) -> Result<Need, ItemError> {
        if self.verify_first(run) {
            let prefix = core::mem::take(&mut run.pending);
            run.verified = Some(
                self.verify_pass(env, &mut run.source, part, &prefix, run.expected.as_ref())
                    .await?,
            );
        }
        Ok(Need::Yes)
    }

    /// The writing pass's source after a verifying pass: the same file, or an error (nothing
    /// written yet) when it is not the one verified.
    async fn reopen(
        &self,
        id: usize,
        env: &mut Env<'_>,
        reread: &Reread,
        verified: &Verified,
        label: &str,
    ) -> Result<Fetch, ItemError> {
        let opts = super::item_source_options(env, &self.ca_pem, self.limits);
        let changed = |what: String| {
            ItemError::new(
                Reason::StreamRdFail,
                format!(
                    "{}: the file changed between the verifying pass and the writing pass ({}); \
                     nothing was written: partition {} is unchanged",
                    self.uri, what, label
                ),
            )
        };
        let mut used = 0;
        let src = match reread {
            Reread::File => Fetch::open(self.spec(id), opts, None, &mut used, env)
                .await
                .map_err(source_error)?,
            Reread::Http { etag } => {
                let r = match Fetch::open(self.spec(id), opts, Some(etag), &mut used, env).await {
                    Ok(r) => r,
                    Err(SourceError::HttpStatus { status, .. })
                        if status == HTTP_PRECONDITION_FAILED =>
                    {
                        return Err(changed(format!(
                            "the server answers 412 to If-Match: {}",
                            etag
                        )));
                    }
                    Err(e) => return Err(source_error(e)),
                };
                let now = r
                    .validator
                    .filter(|v| v.kind() == ValidatorKind::ETag)
                    .map(|v| v.as_str().to_string());
                if now.as_deref() != Some(etag.as_str()) {
                    return Err(changed(format!(
                        "ETag {} then {}",
                        etag,
                        now.as_deref().unwrap_or("none")
                    )));
                }
                r
            }
        };
        match src.content_length() {
            Some(len) if len != verified.len => {
                Err(changed(format!("{} bytes then {}", verified.len, len)))
            }
            _ => Ok(src),
        }
    }
}

impl DataItem {
    async fn prepare_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<(), ItemError> {
        if dev.table.find_data(&self.label).is_none() {
            env.error(TAG_DEFAULT, format!("partition [{}] not found", self.label));
        }
        let engine = DataUpdate::begin(&dev.flash_map(), &self.label, None)
            .map_err(|e| core_error(e, &self.uri))?;
        let target = *engine.partition();
        if let Some(staging) = self.staging_partition(dev)? {
            StagedWrite::check(&dev.flash_map(), &staging, &target, None)
                .map_err(|e| core_error(e, &self.uri))?;
            self.resume_staged_copy(id, dev, env, &staging, &target)?;
        }
        let expected = self.expected(id, env).await?;
        env.info(TAG_DEFAULT, format!("data upgrade uri {}", self.uri));
        let opts = super::item_source_options(env, &self.ca_pem, self.limits);
        let mut used = 0;
        let src = match Fetch::open(self.spec(id), opts, None, &mut used, env).await {
            Ok(o) => o,
            Err(e) => {
                env.error(TAG_DEFAULT, "reader stream init failed");
                return Err(source_error(e));
            }
        };
        let reread = if self.uri.starts_with("file://") {
            Some(Reread::File)
        } else {
            match src.validator {
                Some(v) if v.kind() == ValidatorKind::ETag => Some(Reread::Http {
                    etag: v.as_str().to_string(),
                }),
                _ => None,
            }
        };
        if let Some(x) = &expected {
            let unchanged = |what: String| {
                ItemError::new(
                    Reason::OtaValidateFailed,
                    format!(
                        "{}: {what}; nothing was written: partition {} is unchanged",
                        self.uri, self.label
                    ),
                )
            };
            if let Some(len) = src.content_length().filter(|n| *n != x.size) {
                return Err(unchanged(format!(
                    "the server sends {len} bytes, the catalogue {} says {}",
                    x.catalogue, x.size
                )));
            }
            // The bytes must match the catalogue's SHA-256 before the partition is erased:
            // read twice (a verifying pass) or received in a spare partition first.
            if self.staging.is_none() && reread.is_none() {
                return Err(unchanged(format!(
                    "the server sent no strong ETag, so the file cannot be read twice and \
                     checked against the SHA-256 of the catalogue {} before partition {} is \
                     erased. Set `staging = \"<spare data partition>\"` on this item: a staged \
                     file is checked in the spare partition before the target is touched",
                    x.catalogue, self.label
                )));
            }
        }
        if src.content_length() == Some(0) {
            return Err(ItemError::new(
                Reason::StreamRdFail,
                format!(
                    "{}: the file is empty; an empty file never replaces partition {} (nothing was written)",
                    self.uri, self.label
                ),
            ));
        }
        if self.uri.starts_with("file://") {
            if let Some(len) = src.content_length() {
                env.info(
                    "FATFS_STREAM",
                    format!("File size: {} byte, file position: 0", len),
                );
            }
        }
        // Our fix (adf-ota-service.md §11.5): refuse an image larger than the partition before
        // anything is erased.
        let engine = match src.content_length() {
            Some(len) => {
                if let Some(staging) = self.staging_partition(dev)? {
                    StagedWrite::check(&dev.flash_map(), &staging, &target, Some(len))
                        .map_err(|e| core_error(e, &self.uri))?;
                }
                DataUpdate::begin(&dev.flash_map(), &self.label, Some(len))
                    .map_err(|e| core_error(e, &self.uri))?
            }
            None => engine,
        };
        self.run = Some(Run {
            source: src,
            expected,
            engine,
            pending: Vec::new(),
            reread,
            verified: None,
        });
        Ok(())
    }

    async fn need_upgrade_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        _id: usize,
    ) -> Result<Need, ItemError> {
        match self.format {
            DataFormat::Raw => self.raw_need_upgrade(env).await,
            DataFormat::Tone => self.tone_need_upgrade(dev, env).await,
        }
    }

    async fn execute_hook<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<(), ItemError> {
        let Run {
            source,
            expected,
            engine,
            pending,
            reread,
            verified,
        } = self
            .run
            .take()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        let target = *engine.partition();
        let map = dev.flash_map();
        // After a verifying pass the writing pass reads the source again from byte 0.
        let (mut source, pending) = match (&reread, &verified) {
            (Some(r), Some(v)) => (
                self.reopen(id, env, r, v, target.label.as_str()).await?,
                Vec::new(),
            ),
            _ => (source, pending),
        };
        let mut sink = match self.staging_partition(dev)? {
            None => Sink::Direct(Box::new(engine)),
            Some(staging) => Sink::Staged(Box::new(
                StagedWrite::begin(dev.flash, &map, &staging, &target, source.content_length())
                    .map_err(|e| core_error(e, &self.uri))?,
            )),
        };
        let label = match &sink {
            Sink::Direct(_) => target.label,
            Sink::Staged(w) => w.staging().label,
        };
        // What a failure after the first write leaves behind.
        let aftermath = match &sink {
            Sink::Direct(_) if self.format == DataFormat::Tone => format!(
                "; partition {} was being rewritten and reads as invalid (its header is not \
                 written): the next run rewrites it",
                target.label.as_str()
            ),
            Sink::Direct(_) => format!(
                "; partition {} was being rewritten and holds part of the new data",
                target.label.as_str()
            ),
            Sink::Staged(_) => format!(
                "; only the staging partition {} was written: {} is unchanged",
                label.as_str(),
                target.label.as_str()
            ),
        };
        let mut pass = WritePass {
            check: (self.format == DataFormat::Tone)
                .then(|| ToneStreamCheck::new(target.size, source.content_length())),
            verified: verified.as_ref(),
            block: Vec::with_capacity(BLOCK),
            next_block: 0,
            written: 0,
            aftermath,
            label,
            target,
            digest: Sha256::new(),
        };
        let mut progress = Progress::new(env, id, TAG_DEFAULT, "data", source.content_length());
        pass.feed(
            self,
            &mut sink,
            dev.flash,
            env,
            &mut progress,
            &pending,
            false,
        )?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match source.read(&mut buf, env).await {
                Ok(Next::Data(n)) => n,
                Ok(Next::End) => break,
                Ok(Next::Restart) => {
                    return Err(ItemError::new(
                        Reason::StreamRdFail,
                        format!(
                            "{}: the server started the file over during the download (it \
                             changed, or ignores Range){}",
                            self.uri,
                            pass.left()
                        ),
                    ))
                }
                Err(mut err) => {
                    err.message.push_str(&pass.left());
                    return Err(err);
                }
            };
            pass.feed(
                self,
                &mut sink,
                dev.flash,
                env,
                &mut progress,
                &buf[..n],
                false,
            )?;
        }
        pass.feed(self, &mut sink, dev.flash, env, &mut progress, &[], true)?;
        let lost = pass.left();
        let written = pass.written;
        if let Some(x) = &expected {
            let digest: [u8; 32] = pass.digest.clone().finalize().into();
            if written != x.size || digest != x.sha256 {
                return Err(ItemError::new(
                    Reason::OtaValidateFailed,
                    format!(
                        "{}: does not match the catalogue {}: {} bytes with SHA-256 {}, the \
                         catalogue says {} bytes with SHA-256 {}{}",
                        self.uri,
                        x.catalogue,
                        written,
                        Hex(&digest),
                        x.size,
                        Hex(&x.sha256),
                        lost
                    ),
                ));
            }
        }
        if let Some(v) = &verified {
            if written != v.len || pass.next_block != v.blocks.len() {
                return Err(ItemError::new(
                    Reason::StreamRdFail,
                    format!(
                        "{}: the writing pass sent {} bytes, the verifying pass {}{}",
                        self.uri, written, v.len, lost
                    ),
                ));
            }
        }
        if let Some(c) = &pass.check {
            c.finish()
                .map_err(|e| self.tone_fault(env, &e, &|m: &str| format!("{}{}", m, lost)))?;
        }
        if written == 0 {
            return Err(ItemError::new(
                Reason::StreamRdFail,
                format!(
                    "{}: the file is empty; an empty file never replaces partition {} (nothing \
                     was written)",
                    self.uri,
                    target.label.as_str()
                ),
            ));
        }
        match sink {
            Sink::Direct(engine) => {
                engine
                    .finish(dev.flash)
                    .map_err(|e| core_error(e, &self.uri))?;
            }
            Sink::Staged(mut w) => {
                let staging = *w.staging();
                // The last partial flash word is still in RAM: program it before reading back.
                w.flush(dev.flash).map_err(|e| core_error(e, &self.uri))?;
                if self.format == DataFormat::Tone {
                    // The staged bin must be a whole, valid tone bin before the target is touched.
                    let mut view = staging;
                    view.size = w.written();
                    tone::tone_partition_check(dev.flash, &view).map_err(|e| {
                        ItemError::new(
                            Reason::StreamRdFail,
                            format!(
                                "{}: the tone bin staged in {} is invalid: {}",
                                self.uri,
                                staging.label.as_str(),
                                e
                            ),
                        )
                    })?;
                }
                let copy = w.commit(dev.flash).map_err(|e| core_error(e, &self.uri))?;
                env.info(
                    TAG_DEFAULT,
                    format!(
                        "image of {} bytes staged and verified in {}; copying into {} ({} steps)",
                        copy.record().image_len,
                        staging.label.as_str(),
                        target.label.as_str(),
                        copy.record().steps()
                    ),
                );
                copy.run(dev.flash).map_err(|e| core_error(e, &self.uri))?;
            }
        }
        env.info(
            TAG_DEFAULT,
            format!("partition {} upgrade successes", target.label.as_str()),
        );
        Ok(())
    }
}

impl<F: NorFlash> UpgradeItem<F> for DataItem {
    fn describe(&self) -> String {
        self.uri.clone()
    }

    fn prepare<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<(), ItemError>> {
        Box::pin(self.prepare_hook(dev, env, id))
    }

    fn need_upgrade<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<Need, ItemError>> {
        Box::pin(self.need_upgrade_hook(dev, env, id))
    }

    fn execute<'a>(
        &'a mut self,
        dev: &'a mut Device<'_, F>,
        env: &'a mut Env<'_>,
        id: usize,
    ) -> BoxFuture<'a, Result<(), ItemError>> {
        Box::pin(self.execute_hook(dev, env, id))
    }

    fn reboot(&self) -> bool {
        self.reboot
    }

    fn break_after_fail(&self) -> bool {
        self.break_after_fail
    }
}
