//! The constant-memory streaming verifier: feeds an image in chunks of any size and enforces
//! the ESP-IDF loader's rules (segments, MMU alignment, checksum, SHA-256), then summarises it.

use super::{
    le32, put, AppDesc, BootloaderDesc, ImageError, ImageHeader, ImagePart, APP_DESC_SIZE,
    BOOTLOADER_DESC_SIZE, CHECKSUM_ALIGN, CHECKSUM_SEED, HASH_LEN, HEADER_SIZE, IMAGE_MAGIC,
    MAX_SEGMENTS, MAX_SEGMENT_LEN, SEGMENT_HEADER_SIZE,
};
use crate::chip::{Chip, MemType, DEFAULT_MMU_PAGE_SIZE};
use sha2::{Digest, Sha256};

/// One segment as esptool reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SegmentInfo {
    pub load_addr: u32,
    pub data_len: u32,
    /// File offset of the segment *header* (what esptool prints as "File offs").
    pub file_offset: u32,
}

/// Everything learnt from reading a whole image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    pub header: ImageHeader,
    pub chip: Option<Chip>,
    pub segments: [SegmentInfo; MAX_SEGMENTS],
    pub segment_count: usize,
    pub checksum_read: u8,
    pub checksum_calc: u8,
    pub hash_read: Option<[u8; 32]>,
    pub hash_calc: Option<[u8; 32]>,
    /// Bytes of the image proper, including the appended hash when present.
    pub image_len: u32,
    /// The app descriptor by esptool image-info's rule: the data of the first segment whose
    /// memory types include DROM, if it starts with the magic word.
    pub app_desc: Option<AppDesc>,
    /// The app descriptor where ESP-IDF (bootloader, OTA) reads it: segment 0 data, file
    /// offset 0x20. Equal to `app_desc` for every real app image.
    pub loader_app_desc: Option<AppDesc>,
    /// esptool image-info's "Bootloader Information": the last DRAM segment of ≥ 80 bytes,
    /// when the image has no DROM segment and that segment starts with magic 0x50.
    pub bootloader_desc: Option<BootloaderDesc>,
    /// The MMU page size the flash-mapped segments were checked against, and where it came from.
    pub mmu_page: u32,
    pub mmu_page_source: MmuPageSource,
    /// With [`ImageVerifier::set_strict`] off: the first flash-mapped segment whose data is
    /// not at its load address's offset within an MMU page (a bootloader with that page size
    /// refuses the image). Always None in strict mode (the verifier fails instead).
    pub mmu_misaligned: Option<ImageError>,
    /// With [`ImageVerifier::set_strict`] off: the first segment whose length breaks the
    /// loader's rule (a multiple of 4), which the bootloader refuses and esptool reads.
    pub segment_length_error: Option<ImageError>,
}

/// Which MMU page size the loader's alignment rule uses (`verify_segment_header` compares
/// `data_addr % SPI_FLASH_MMU_PAGE_SIZE` with `load_addr % SPI_FLASH_MMU_PAGE_SIZE`, esp-idf
/// `components/bootloader_support/src/esp_image_format.c`; `SPI_FLASH_MMU_PAGE_SIZE` is the
/// `CONFIG_MMU_PAGE_SIZE` the bootloader was built with).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MmuPageRule {
    /// The bootloader's own page size, known (e.g. from its sdkconfig): the image must match it.
    Fixed(u32),
    /// The app descriptor's `mmu_page_size` (ESP-IDF v5.4+ records `CONFIG_MMU_PAGE_SIZE`
    /// there) when set and valid for the chip, else this page size.
    AppDescOr(u32),
    /// The app descriptor's `mmu_page_size` when set, else Kconfig's default for the chip and
    /// the flash size in the image's own header ([`Chip::default_mmu_page_size`]).
    #[default]
    AppDescOrHeaderFlashSize,
}

/// Where [`ImageSummary::mmu_page`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MmuPageSource {
    /// Given by the caller ([`MmuPageRule::Fixed`]: the bootloader's configuration).
    Bootloader,
    /// `esp_app_desc_t.mmu_page_size`.
    AppDesc,
    /// Kconfig's default for the chip and a flash size (the caller's, or the image header's).
    FlashSize,
    /// 64 KiB: the chip has a fixed page size, or it is not known.
    #[default]
    Fixed64K,
}

impl MmuPageSource {
    /// Lower-case words for reports (`app descriptor`).
    pub const fn describe(self) -> &'static str {
        match self {
            MmuPageSource::Bootloader => "the bootloader's configuration",
            MmuPageSource::AppDesc => "the app descriptor",
            MmuPageSource::FlashSize => "Kconfig's default for the chip and flash size",
            MmuPageSource::Fixed64K => "the chip's fixed page size",
        }
    }
    /// Stable JSON key values.
    pub const fn key(self) -> &'static str {
        match self {
            MmuPageSource::Bootloader => "bootloader",
            MmuPageSource::AppDesc => "app_desc",
            MmuPageSource::FlashSize => "flash_size",
            MmuPageSource::Fixed64K => "chip",
        }
    }
}

impl ImageSummary {
    pub fn checksum_valid(&self) -> bool {
        self.checksum_read == self.checksum_calc
    }
    /// None when no hash is appended.
    pub fn hash_valid(&self) -> Option<bool> {
        match (self.hash_read, self.hash_calc) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        }
    }
    /// The segments actually present.
    pub fn segments(&self) -> &[SegmentInfo] {
        self.segments.get(..self.segment_count).unwrap_or(&[])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    SegHeader,
    SegData,
    Padding,
    Checksum,
    Hash,
    Done,
}

/// What the capture buffer is collecting for the current segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Capture {
    /// Segment 0: the app descriptor at file offset 0x20 (loader rule).
    loader: bool,
    /// The first DROM segment: esptool's app descriptor.
    esptool: bool,
    /// A DRAM segment of ≥ 80 bytes: esptool's bootloader descriptor candidate.
    boot: bool,
}

/// Streaming, constant-memory image verifier (sans-IO): feed it the image bytes in chunks of
/// any size; it parses the header and segment headers, XORs the checksum, hashes with SHA-256,
/// and stops consuming at the end of the image (trailing bytes are ignored and counted).
///
/// `feed` fails on structural errors (magic, counts, lengths, alignment, chip, size limit);
/// checksum and hash mismatches are reported by [`ImageVerifier::finish`] so that a caller can
/// still get the [`ImageVerifier::summary`] of a corrupt image.
pub struct ImageVerifier {
    // settings
    expected_chip: Option<Chip>,
    size_limit: Option<u32>,
    app_rules: bool,
    flash_offset: u32,
    mmu_rule: MmuPageRule,
    mmu_strict: bool,
    // progress
    state: State,
    consumed: u64,
    trailing: u64,
    failed: Option<ImageError>,
    buf: [u8; HASH_LEN],
    buf_len: usize,
    header: Option<ImageHeader>,
    chip: Option<Chip>,
    seg_index: u8,
    seg_remaining: u32,
    segments: [SegmentInfo; MAX_SEGMENTS],
    pad_remaining: u32,
    image_len: Option<u32>,
    checksum: u8,
    checksum_read: u8,
    sha: Option<Sha256>,
    hash_calc: Option<[u8; 32]>,
    hash_read: Option<[u8; 32]>,
    // descriptors
    cap: [u8; APP_DESC_SIZE],
    cap_len: usize,
    cap_want: usize,
    cap_for: Capture,
    drom_seen: bool,
    loader_desc: Option<AppDesc>,
    esptool_desc: Option<AppDesc>,
    boot_desc: Option<BootloaderDesc>,
    /// Segment 0's MMU alignment check waits for the app descriptor (its page size).
    pending_mmu: Option<(u32, u32)>,
    /// Non-strict mode: the first misaligned segment, the first bad segment length.
    mmu_misaligned: Option<ImageError>,
    segment_length_error: Option<ImageError>,
}

impl ImageVerifier {
    pub fn new() -> Self {
        ImageVerifier {
            expected_chip: None,
            size_limit: None,
            app_rules: false,
            flash_offset: 0,
            mmu_rule: MmuPageRule::default(),
            mmu_strict: true,
            state: State::Header,
            consumed: 0,
            trailing: 0,
            failed: None,
            buf: [0; HASH_LEN],
            buf_len: 0,
            header: None,
            chip: None,
            seg_index: 0,
            seg_remaining: 0,
            segments: [SegmentInfo::default(); MAX_SEGMENTS],
            pad_remaining: 0,
            image_len: None,
            checksum: CHECKSUM_SEED,
            checksum_read: 0,
            sha: None,
            hash_calc: None,
            hash_read: None,
            cap: [0; APP_DESC_SIZE],
            cap_len: 0,
            cap_want: 0,
            cap_for: Capture::default(),
            drom_seen: false,
            loader_desc: None,
            esptool_desc: None,
            boot_desc: None,
            pending_mmu: None,
            mmu_misaligned: None,
            segment_length_error: None,
        }
    }

    /// Which MMU page size the segment alignment rule uses (default:
    /// [`MmuPageRule::AppDescOrHeaderFlashSize`]). A page size that is not a power of two is
    /// taken as 64 KiB.
    pub fn set_mmu_page_rule(&mut self, rule: MmuPageRule) {
        let sane = |p: u32| {
            if p.is_power_of_two() {
                p
            } else {
                DEFAULT_MMU_PAGE_SIZE
            }
        };
        self.mmu_rule = match rule {
            MmuPageRule::Fixed(p) => MmuPageRule::Fixed(sane(p)),
            MmuPageRule::AppDescOr(p) => MmuPageRule::AppDescOr(sane(p)),
            r => r,
        };
    }
    /// Strict (default): a misaligned flash-mapped segment, or a segment length that is not a
    /// multiple of 4, is an error, as in the bootloader. Off: they are recorded in
    /// [`ImageSummary::mmu_misaligned`] / [`ImageSummary::segment_length_error`] and reading goes
    /// on (esptool's image-info checks neither). Lengths of 16 MiB or more are always refused.
    pub fn set_strict(&mut self, strict: bool) {
        self.mmu_strict = strict;
    }

    /// Require header `chip_id` to be this chip (`mismatch chip ID` otherwise). Default: any.
    pub fn set_expected_chip(&mut self, chip: Option<Chip>) {
        self.expected_chip = chip;
    }
    /// Fail as soon as the image is known to be longer than `limit` bytes (the slot size).
    pub fn set_size_limit(&mut self, limit: Option<u32>) {
        self.size_limit = limit;
    }
    /// Enforce app-only rules: at least one segment, segment 0 ≥ 256 bytes. Default: off.
    pub fn set_app_rules(&mut self, on: bool) {
        self.app_rules = on;
    }
    /// Flash address of the image's first byte (default 0): used for the MMU-page alignment
    /// rule and in messages. Partitions holding apps are 64 KiB aligned, so 0 is equivalent.
    pub fn set_flash_offset(&mut self, offset: u32) {
        self.flash_offset = offset;
    }

    /// Feed the next chunk. Errors name the field and the image offset. After an error every
    /// further call returns the same error.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.feed_some(data).map(|_| ())
    }

    /// Like [`feed`](Self::feed), returning how many bytes of `data` belong to the image (the
    /// rest, after the image end, is counted in [`trailing`](Self::trailing)).
    pub fn feed_some(&mut self, data: &[u8]) -> Result<usize, ImageError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.feed_inner(data) {
            Ok(n) => {
                self.trailing += (data.len() - n) as u64;
                Ok(n)
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// True once the whole image (including the appended hash) has been consumed.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }
    /// Image bytes consumed so far (trailing bytes not included).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }
    /// Bytes fed after the end of the image.
    pub fn trailing(&self) -> u64 {
        self.trailing
    }
    /// Total image length (incl. the hash), known once the last segment header is read.
    pub fn image_len(&self) -> Option<u32> {
        self.image_len
    }
    /// The header, once its 24 bytes have been fed.
    pub fn header(&self) -> Option<&ImageHeader> {
        self.header.as_ref()
    }
    /// The app descriptor at file offset 0x20 (where ESP-IDF reads it), as soon as its 256
    /// bytes have been fed and its magic word matched.
    pub fn app_desc(&self) -> Option<&AppDesc> {
        self.loader_desc.as_ref()
    }
    /// Segments whose header has been read so far.
    pub fn segments(&self) -> &[SegmentInfo] {
        let n = match self.state {
            State::Header => 0,
            State::SegHeader => self.seg_index as usize,
            State::SegData => self.seg_index as usize + 1,
            _ => self.header.map(|h| h.segment_count as usize).unwrap_or(0),
        };
        self.segments.get(..n).unwrap_or(&[])
    }

    /// The summary of a complete image, whether or not its checksum/hash are valid.
    pub fn summary(&self) -> Option<ImageSummary> {
        if self.state != State::Done {
            return None;
        }
        let header = self.header?;
        Some(ImageSummary {
            header,
            chip: self.chip,
            segments: self.segments,
            segment_count: header.segment_count as usize,
            checksum_read: self.checksum_read,
            checksum_calc: self.checksum,
            hash_read: self.hash_read,
            hash_calc: self.hash_calc,
            image_len: self.image_len.unwrap_or(self.consumed as u32),
            app_desc: self.esptool_desc,
            loader_app_desc: self.loader_desc,
            bootloader_desc: if self.drom_seen { None } else { self.boot_desc },
            mmu_page: self.mmu_page().0,
            mmu_page_source: self.mmu_page().1,
            mmu_misaligned: self.mmu_misaligned.clone(),
            segment_length_error: self.segment_length_error.clone(),
        })
    }

    /// The summary; an error if the image is incomplete (truncated) or its checksum/hash fail.
    pub fn finish(&self) -> Result<ImageSummary, ImageError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let summary = match self.summary() {
            Some(s) => s,
            None => return Err(self.truncation()),
        };
        if !summary.checksum_valid() {
            return Err(ImageError::ChecksumMismatch {
                calculated: summary.checksum_calc,
                read: summary.checksum_read,
            });
        }
        if let (Some(read), Some(calculated)) = (summary.hash_read, summary.hash_calc) {
            if read != calculated {
                return Err(ImageError::HashMismatch { calculated, read });
            }
        }
        Ok(summary)
    }

    fn truncation(&self) -> ImageError {
        let (part, missing) = match self.state {
            State::Header => (ImagePart::Header, HEADER_SIZE - self.buf_len),
            State::SegHeader => (
                ImagePart::SegmentHeader(self.seg_index),
                SEGMENT_HEADER_SIZE - self.buf_len,
            ),
            State::SegData => (
                ImagePart::SegmentData(self.seg_index),
                self.seg_remaining as usize,
            ),
            State::Padding => (ImagePart::Padding, self.pad_remaining as usize + 1),
            State::Checksum => (ImagePart::Checksum, 1),
            State::Hash | State::Done => (ImagePart::Hash, HASH_LEN - self.buf_len),
        };
        ImageError::Truncated {
            offset: self.consumed,
            part,
            missing: missing as u32,
        }
    }

    /// The page size the alignment rule uses now, and where it comes from.
    fn mmu_page(&self) -> (u32, MmuPageSource) {
        let Some(chip) = self.chip else {
            return (DEFAULT_MMU_PAGE_SIZE, MmuPageSource::Fixed64K);
        };
        let from_desc = self.loader_desc.and_then(|d| {
            let log2 = d.mmu_page_size;
            (log2 != 0 && chip.mmu_page_sizes_log2().contains(&log2)).then(|| 1u32 << log2)
        });
        let kconfig = |flash_size: Option<u32>| match flash_size {
            _ if chip.mmu_page_sizes_log2().is_empty() => {
                (DEFAULT_MMU_PAGE_SIZE, MmuPageSource::Fixed64K)
            }
            Some(fs) => (chip.default_mmu_page_size(fs), MmuPageSource::FlashSize),
            None => (DEFAULT_MMU_PAGE_SIZE, MmuPageSource::Fixed64K),
        };
        match self.mmu_rule {
            MmuPageRule::Fixed(p) => (p, MmuPageSource::Bootloader),
            MmuPageRule::AppDescOr(p) => match from_desc {
                Some(d) => (d, MmuPageSource::AppDesc),
                None if chip.mmu_page_sizes_log2().is_empty() => {
                    (DEFAULT_MMU_PAGE_SIZE, MmuPageSource::Fixed64K)
                }
                None => (p, MmuPageSource::FlashSize),
            },
            MmuPageRule::AppDescOrHeaderFlashSize => match from_desc {
                Some(d) => (d, MmuPageSource::AppDesc),
                None => kconfig(self.header.and_then(|h| h.flash_size_bytes())),
            },
        }
    }

    fn check_mmu(
        &mut self,
        index: u8,
        load_addr: u32,
        data_file_off: u32,
    ) -> Result<(), ImageError> {
        let Some(chip) = self.chip else { return Ok(()) };
        if !chip.is_flash_mapped(load_addr) {
            return Ok(());
        }
        let page = self.mmu_page().0.max(1);
        let data_addr = self.flash_offset.wrapping_add(data_file_off);
        if data_addr % page != load_addr % page {
            let e = ImageError::SegmentAlignment {
                index,
                load_addr,
                data_addr,
                page,
            };
            if self.mmu_strict {
                return Err(e);
            }
            if self.mmu_misaligned.is_none() {
                self.mmu_misaligned = Some(e);
            }
        }
        Ok(())
    }

    fn check_len(&self, len: u64, at_least: bool) -> Result<(), ImageError> {
        match self.size_limit {
            Some(limit) if len > limit as u64 => Err(ImageError::DoesNotFit {
                image_len: len,
                partition_len: limit,
                at_least,
            }),
            _ => Ok(()),
        }
    }

    /// Smallest possible image length, given that the data of the current segment ends at
    /// `data_end` and `left` more (empty) segments follow.
    fn min_len(&self, data_end: u64, left: u64) -> u64 {
        let unpadded = data_end + left * SEGMENT_HEADER_SIZE as u64;
        let hash = match self.header {
            Some(h) if h.hash_appended == 1 => HASH_LEN as u64,
            _ => 0,
        };
        round_up(unpadded + 1, CHECKSUM_ALIGN) + hash
    }

    fn on_header(&mut self) -> Result<(), ImageError> {
        let at = self.flash_offset;
        let h = match ImageHeader::parse(&self.buf[..HEADER_SIZE]) {
            Ok(h) => h,
            Err(ImageError::BadMagic { found, .. }) => {
                return Err(ImageError::BadMagic { at, found })
            }
            Err(e) => return Err(e),
        };
        if h.hash_appended > 1 {
            return Err(ImageError::BadHashAppended {
                found: h.hash_appended,
            });
        }
        if let Some(c) = self.expected_chip {
            if h.chip_id != c.id() {
                return Err(ImageError::ChipMismatch {
                    expected: c.id(),
                    found: h.chip_id,
                });
            }
        }
        if h.segment_count as usize > MAX_SEGMENTS {
            return Err(ImageError::TooManySegments {
                at,
                count: h.segment_count,
            });
        }
        if self.app_rules && h.segment_count == 0 {
            return Err(ImageError::AppNoSegments);
        }
        self.chip = h.chip();
        self.header = Some(h);
        if h.hash_appended == 1 {
            let mut sha = Sha256::new();
            sha.update(&self.buf[..HEADER_SIZE]);
            self.sha = Some(sha);
        }
        let min = self.min_len(HEADER_SIZE as u64, h.segment_count as u64);
        self.check_len(min, h.segment_count > 0)?;
        if h.segment_count == 0 {
            self.image_len = Some(min as u32);
        }
        self.start_segment_or_footer();
        Ok(())
    }

    fn start_segment_or_footer(&mut self) {
        let count = self.header.map(|h| h.segment_count).unwrap_or(0);
        if self.seg_index < count {
            self.state = State::SegHeader;
        } else {
            let unpadded = self.consumed;
            let chk_at = round_up(unpadded + 1, CHECKSUM_ALIGN) - 1;
            self.pad_remaining = (chk_at - unpadded) as u32;
            self.state = if self.pad_remaining > 0 {
                State::Padding
            } else {
                State::Checksum
            };
        }
    }

    fn on_segment_header(&mut self) -> Result<(), ImageError> {
        let index = self.seg_index;
        let load_addr = le32(&self.buf, 0);
        let len = le32(&self.buf, 4);
        let hdr_off = (self.consumed - SEGMENT_HEADER_SIZE as u64) as u32;
        if len & 3 != 0 || len >= MAX_SEGMENT_LEN {
            let e = ImageError::SegmentLength {
                index,
                offset: hdr_off,
                len,
            };
            if self.mmu_strict || len >= MAX_SEGMENT_LEN {
                return Err(e);
            }
            if self.segment_length_error.is_none() {
                self.segment_length_error = Some(e);
            }
        }
        if self.app_rules && index == 0 && (len as usize) < APP_DESC_SIZE {
            return Err(ImageError::AppSegmentTooShort { len });
        }
        let count = self.header.map(|h| h.segment_count).unwrap_or(0);
        let data_end = self.consumed + len as u64;
        let left = (count - index - 1) as u64;
        let min = self.min_len(data_end, left);
        self.check_len(min, left > 0)?;
        if left == 0 {
            self.image_len = Some(min as u32);
        }
        let data_off = self.consumed as u32;
        if index == 0 {
            self.pending_mmu = Some((load_addr, data_off));
        } else {
            self.check_mmu(index, load_addr, data_off)?;
        }
        if let Some(s) = self.segments.get_mut(index as usize) {
            *s = SegmentInfo {
                load_addr,
                data_len: len,
                file_offset: hdr_off,
            };
        }
        // What to capture from this segment's data (esptool's image-info rules, §3.10).
        let types = self.chip.map(|c| c.memory_types(load_addr));
        let is_drom = types.map(|t| t.contains(MemType::Drom)).unwrap_or(false);
        let is_dram = types.map(|t| t.contains(MemType::Dram)).unwrap_or(false);
        let mut cap = Capture {
            loader: index == 0,
            ..Capture::default()
        };
        if is_drom && !self.drom_seen {
            self.drom_seen = true;
            cap.esptool = true;
        } else if is_dram && len as usize >= BOOTLOADER_DESC_SIZE {
            cap.boot = true;
        }
        self.cap_for = cap;
        self.cap_len = 0;
        self.cap_want = if cap.loader || cap.esptool {
            APP_DESC_SIZE
        } else if cap.boot {
            BOOTLOADER_DESC_SIZE
        } else {
            0
        };
        self.seg_remaining = len;
        self.state = State::SegData;
        if len == 0 {
            self.end_segment()?;
        }
        Ok(())
    }

    fn end_capture(&mut self) -> Result<(), ImageError> {
        let cap = self.cap_for;
        let bytes = self.cap.get(..self.cap_len).unwrap_or(&[]);
        if cap.loader {
            self.loader_desc = AppDesc::parse(bytes).ok();
        }
        if cap.esptool {
            self.esptool_desc = AppDesc::parse(bytes).ok();
        }
        if cap.boot {
            // The last DRAM segment of ≥ 80 bytes wins, magic or not (esptool).
            self.boot_desc = BootloaderDesc::parse(bytes).ok();
        }
        self.cap_for = Capture::default();
        self.cap_want = 0;
        if cap.loader {
            if let Some((load, off)) = self.pending_mmu.take() {
                self.check_mmu(0, load, off)?;
            }
        }
        Ok(())
    }

    fn end_segment(&mut self) -> Result<(), ImageError> {
        if self.cap_for != Capture::default() {
            self.end_capture()?;
        }
        if let Some((load, off)) = self.pending_mmu.take() {
            self.check_mmu(0, load, off)?;
        }
        self.seg_index += 1;
        self.start_segment_or_footer();
        Ok(())
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<usize, ImageError> {
        let total = data.len();
        while !data.is_empty() {
            let (want, take) = match self.state {
                State::Done => break,
                State::Header => (HEADER_SIZE, HEADER_SIZE - self.buf_len),
                State::SegHeader => (SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE - self.buf_len),
                State::SegData => (0, self.seg_remaining as usize),
                State::Padding => (0, self.pad_remaining as usize),
                State::Checksum => (0, 1),
                State::Hash => (HASH_LEN, HASH_LEN - self.buf_len),
            };
            let n = take.min(data.len());
            let (chunk, rest) = data.split_at(n);
            data = rest;
            if self.state == State::Header && self.buf_len == 0 {
                if let Some(&b) = chunk.first() {
                    if b != IMAGE_MAGIC {
                        return Err(ImageError::BadMagic {
                            at: self.flash_offset,
                            found: b,
                        });
                    }
                }
            }
            if self.state != State::Hash && self.state != State::Header {
                if let Some(sha) = self.sha.as_mut() {
                    sha.update(chunk);
                }
            }
            self.consumed += n as u64;
            match self.state {
                State::Header | State::SegHeader | State::Hash => {
                    put(&mut self.buf, self.buf_len, chunk);
                    self.buf_len += n;
                    if self.buf_len == want {
                        self.buf_len = 0;
                        match self.state {
                            State::Header => self.on_header()?,
                            State::SegHeader => self.on_segment_header()?,
                            _ => {
                                self.hash_read = Some(self.buf);
                                self.state = State::Done;
                            }
                        }
                    }
                }
                State::SegData => {
                    self.checksum = chunk.iter().fold(self.checksum, |c, b| c ^ b);
                    if self.cap_len < self.cap_want {
                        let m = (self.cap_want - self.cap_len).min(n);
                        put(&mut self.cap, self.cap_len, chunk.get(..m).unwrap_or(&[]));
                        self.cap_len += m;
                        if self.cap_len == self.cap_want {
                            self.end_capture()?;
                        }
                    }
                    self.seg_remaining -= n as u32;
                    if self.seg_remaining == 0 {
                        self.end_segment()?;
                    }
                }
                State::Padding => {
                    self.pad_remaining -= n as u32;
                    if self.pad_remaining == 0 {
                        self.state = State::Checksum;
                    }
                }
                State::Checksum => {
                    self.checksum_read = chunk.first().copied().unwrap_or(0);
                    match self.sha.take() {
                        Some(sha) => {
                            self.hash_calc = Some(sha.finalize().into());
                            self.state = State::Hash;
                        }
                        None => self.state = State::Done,
                    }
                }
                State::Done => {}
            }
        }
        Ok(total - data.len())
    }
}

impl Default for ImageVerifier {
    fn default() -> Self {
        Self::new()
    }
}

pub(super) fn round_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}
