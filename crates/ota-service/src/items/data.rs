//! The data item: rewrite a data partition found by label, raw or as an ESP-ADF tone bin with
//! the example's policy (adf-ota-service.md §6, §7), with the size checked before any erase.
//! In place (header written last, so a torn rewrite reads as invalid and is redone), or staged
//! through a spare partition with a resumable copy (`ota_core::staging`).

use embedded_storage::nor_flash::NorFlash;
use ota_core::partition::Partition;
use ota_core::staging::{StagedCopy, StagedWrite, StagingError};
use ota_core::tone::{self, ToneDecision, ToneDesc, ToneHeader, TONE_DESC_SIZE, TONE_HEADER_SIZE};
use ota_core::update::{DataUpdate, UpdateError};

use super::{core_error, read_full, source_error, Progress};
use crate::reason::Reason;
use crate::service::{Device, Env, ItemError, Need, UpgradeItem};
use crate::source::{self, Source, TransferLimits};

const TAG_DEFAULT: &str = "OTA_DEFAULT";
const TAG_EXAMPLE: &str = "HTTPS_OTA_EXAMPLE";
const TAG_TONE: &str = "TONE_PARTITION";
/// ADF's data read size (adf-ota-service.md §6: `read_buf[2048]`).
const CHUNK: usize = 2048;

pub use crate::config::DataFormat;

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
    run: Option<Run>,
}

/// Where the data goes: the target itself, or the staging partition first.
enum Sink {
    /// Boxed: the engine buffers the first sector (4 KiB).
    Direct(Box<DataUpdate>),
    Staged(StagedWrite),
}

struct Run {
    source: Box<dyn Source>,
    engine: DataUpdate,
    /// Bytes already read from the source by need_upgrade, to be written first.
    pending: Vec<u8>,
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
            run: None,
        }
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

    fn tone_need_upgrade<F: NorFlash>(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
    ) -> Result<Need, ItemError> {
        let run = self
            .run
            .as_mut()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
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
        let mut hdr = [0u8; TONE_HEADER_SIZE];
        let got = read_full(run.source.as_mut(), &mut hdr).map_err(source_error)?;
        if got < hdr.len() {
            return Err(ItemError::new(
                Reason::StreamRdFail,
                format!(
                    "{}: only {} bytes, a tone bin header needs {}",
                    self.uri,
                    got,
                    hdr.len()
                ),
            ));
        }
        run.pending.extend_from_slice(&hdr);
        // Unlike ADF, the incoming tag is checked even when the current partition is invalid:
        // a file that is not a tone bin never replaces one.
        let incoming = ToneHeader::parse(&hdr).map_err(|e| {
            env.error(TAG_EXAMPLE, "not audio tone bin");
            ItemError::new(Reason::Unknown, format!("{}: {}", self.uri, e))
        })?;
        let Some(current) = current else {
            // Not a valid tone partition now: rewrite it whole from the stream.
            return Ok(Need::Yes);
        };
        env.info(
            TAG_EXAMPLE,
            format!("format {} : {}", current.header.format, incoming.format),
        );
        let mut desc = None;
        if tone::incoming_needs_desc(&incoming) {
            let mut d = [0u8; TONE_DESC_SIZE];
            let got = read_full(run.source.as_mut(), &mut d).map_err(source_error)?;
            if got < d.len() {
                return Err(ItemError::new(
                    Reason::StreamRdFail,
                    format!(
                        "{}: the tone descriptor is cut short ({} of {} bytes)",
                        self.uri,
                        got,
                        d.len()
                    ),
                ));
            }
            run.pending.extend_from_slice(&d);
            let parsed = ToneDesc::parse(&d).map_err(|e| {
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
                env.info(
                    TAG_DEFAULT,
                    format!("write_offset 0, size {}", TONE_HEADER_SIZE),
                );
                if desc.is_some() {
                    env.info(
                        TAG_DEFAULT,
                        format!("write_offset {}, size {}", TONE_HEADER_SIZE, TONE_DESC_SIZE),
                    );
                }
                Ok(Need::Yes)
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
}

impl<F: NorFlash> UpgradeItem<F> for DataItem {
    fn describe(&self) -> String {
        self.uri.clone()
    }

    fn prepare(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        _id: usize,
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
            self.resume_staged_copy(dev, env, &staging, &target)?;
        }
        env.info(TAG_DEFAULT, format!("data upgrade uri {}", self.uri));
        let opts = super::item_source_options(env, &self.ca_pem, self.limits);
        let src = source::open(&self.uri, env.sd, &opts).map_err(|e| {
            env.error(TAG_DEFAULT, "reader stream init failed");
            source_error(e)
        })?;
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
            engine,
            pending: Vec::new(),
        });
        Ok(())
    }

    fn need_upgrade(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        _id: usize,
    ) -> Result<Need, ItemError> {
        match self.format {
            DataFormat::Raw => Ok(Need::Yes),
            DataFormat::Tone => self.tone_need_upgrade(dev, env),
        }
    }

    fn execute(
        &mut self,
        dev: &mut Device<'_, F>,
        env: &mut Env<'_>,
        id: usize,
    ) -> Result<(), ItemError> {
        let Run {
            mut source,
            engine,
            pending,
        } = self
            .run
            .take()
            .ok_or_else(|| ItemError::new(Reason::NullPointer, "run prepare first"))?;
        let target = *engine.partition();
        let map = dev.flash_map();
        let mut sink = match self.staging_partition(dev)? {
            None => Sink::Direct(Box::new(engine)),
            Some(staging) => Sink::Staged(
                StagedWrite::begin(dev.flash, &map, &staging, &target, source.content_length())
                    .map_err(|e| core_error(e, &self.uri))?,
            ),
        };
        let label = match &sink {
            Sink::Direct(_) => target.label,
            Sink::Staged(w) => w.staging().label,
        };
        let mut progress = Progress::new(id, TAG_DEFAULT, "data", source.content_length());
        let write = |sink: &mut Sink, flash: &mut F, bytes: &[u8]| {
            match sink {
                Sink::Direct(d) => d.write(flash, bytes),
                Sink::Staged(w) => w.write(flash, bytes),
            }
            .map_err(|e| {
                ItemError::new(
                    Reason::PartitionWtFail,
                    format!("writing partition {}: {}", label.as_str(), e),
                )
            })
        };
        write(&mut sink, dev.flash, &pending)?;
        progress.add(env, pending.len());
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = source.read(&mut buf).map_err(source_error)?;
            if n == 0 {
                break;
            }
            write(&mut sink, dev.flash, &buf[..n])?;
            progress.add(env, n);
        }
        match sink {
            Sink::Direct(engine) => {
                engine
                    .finish(dev.flash)
                    .map_err(|e| core_error(e, &self.uri))?;
            }
            Sink::Staged(w) => {
                let staging = *w.staging();
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

    fn reboot(&self) -> bool {
        self.reboot
    }

    fn break_after_fail(&self) -> bool {
        self.break_after_fail
    }
}
