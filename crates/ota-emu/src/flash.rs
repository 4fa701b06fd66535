//! Emulated NOR flash, file-backed: strict NOR rules, wear counters and fault injection.
//!
//! The contents live in memory for reads; every program or erase is written through to the
//! backing file at once, so whenever the process stops the file holds exactly what a chip's
//! flash would hold. NOR rules (esp-idf `components/spi_flash`): 4 KiB erase sectors, erase sets
//! 0xFF, programming can only clear bits.
//!
//! Granularity: [`EmuFlashN<W>`] takes reads and writes in units of `W` bytes (offset and length
//! multiples of `W`) and refuses anything else with `NotAligned`, as esp-storage does
//! (`esp-storage/src/nor_flash.rs`: `READ_SIZE = WRITE_SIZE = 4`). [`EmuFlash`] is the ESP32
//! driver's `W` = 4; a device's write unit is in its settings (`flash_write_size`).
//!
//! Power cuts tear the write in progress *inside* a word: a write cut after `k` of its bytes
//! has programmed exactly its first `k` bytes (whatever the word boundaries), so the word in
//! progress holds a prefix of its new bytes followed by its old ones. This is the harsher of
//! the two models (a cut at a word boundary is the special case `k % W == 0`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};
use ota_core::flash::FlashOp;

use crate::error::EmuError;

/// Erase granularity of ESP32 SPI flash: 4 KiB sectors (`SPI_FLASH_SEC_SIZE`, esp-idf `components/spi_flash/include/spi_flash_mmap.h`).
pub const SECTOR_SIZE: u32 = ota_core::flash::SECTOR_SIZE;
/// Value of every byte of an erased sector (`SPI_FLASH_SEC_SIZE`, esp-idf `components/spi_flash/include/spi_flash_mmap.h`).
pub const ERASED: u8 = 0xFF;

/// Faults to inject, counted from the moment the plan is set ([`EmuFlash::set_fault_plan`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Cut the power when the number of bytes programmed or erased since the plan was set
    /// reaches N: the operation in progress is torn (a write programs only its first k bytes, an
    /// erase sets only the first k bytes of the sector it was working on to 0xFF, where k makes
    /// the total exactly N) and fails with [`EmuError::PowerCut`], as does every later
    /// operation (reads included) until [`EmuFlash::power_cycle`]. `Some(0)`: the next
    /// non-empty write or erase changes nothing and fails.
    pub power_cut_after_bytes: Option<u64>,
    /// A flash address whose programming fails: every write whose range covers it fails with
    /// [`EmuError::InjectedFault`] and changes nothing (a worn-out cell). Lasts while the plan
    /// is set.
    pub fail_write_at: Option<u32>,
    /// A flash address whose erase fails: every erase whose range covers it fails with
    /// [`EmuError::InjectedFault`] and changes nothing. Lasts while the plan is set.
    pub fail_erase_at: Option<u32>,
    /// How a power cut leaves the rest of the sector a torn erase was working on. `None`: those
    /// bytes keep their old content. `Some(seed)`: they hold pseudo-random bytes drawn from
    /// `seed` and their address (the same seed always gives the same garbage), as a real
    /// interrupted erase may leave them (embedded-storage's power-loss contract
    /// calls such a sector undefined). Only the sector in progress is affected: later sectors of
    /// a multi-sector erase keep their old content.
    pub torn_erase_random: Option<u64>,
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fixed, portable mixing function, so a seed
/// names the same torn-erase garbage on every platform and release.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The garbage byte a torn erase with `seed` leaves at flash address `addr`.
pub fn torn_erase_byte(seed: u64, addr: u32) -> u8 {
    let word = splitmix64(seed ^ splitmix64(u64::from(addr / 8)));
    word.to_le_bytes()[(addr % 8) as usize]
}

/// Operation counters since creation or the last [`EmuFlash::reset_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlashStats {
    /// Bytes returned by reads.
    pub bytes_read: u64,
    /// Bytes programmed by writes (a torn write counts the bytes it did program).
    pub bytes_written: u64,
    /// Bytes set to 0xFF by erases (a torn erase counts the bytes it did erase).
    pub bytes_erased: u64,
    pub read_ops: u64,
    pub write_ops: u64,
    pub erase_ops: u64,
    /// Erase count of each 4 KiB sector, indexed by sector number (a torn erase counts).
    pub erase_counts: Vec<u32>,
}

impl FlashStats {
    /// How many times sector `sector` (its number, not its address) was erased.
    pub fn erase_count(&self, sector: usize) -> u32 {
        self.erase_counts.get(sector).copied().unwrap_or(0)
    }
    /// Sector erases in total.
    pub fn sectors_erased(&self) -> u64 {
        self.erase_counts.iter().map(|&n| u64::from(n)).sum()
    }
    /// The highest erase count of any sector (the wear hot spot).
    pub fn max_erase_count(&self) -> u32 {
        self.erase_counts.iter().copied().max().unwrap_or(0)
    }
}

#[derive(Debug)]
struct Backing {
    file: File,
    path: PathBuf,
}

#[derive(Clone, Copy, Debug)]
struct FaultState {
    plan: FaultPlan,
    /// Bytes programmed or erased since the plan was set.
    done: u64,
}

/// Write units an emulated flash can have: the powers of two up to
/// [`ota_core::flash::MAX_WORD`].
pub const WRITE_SIZES: [u32; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// The write unit of esp-storage, the flash driver of esp-hal (`esp-storage/src/nor_flash.rs`).
pub const DEFAULT_WRITE_SIZE: u32 = 4;

/// The emulated flash with esp-storage's 4-byte granularity.
pub type EmuFlash = EmuFlashN<4>;

/// An emulated NOR flash chip with read and write unit `W`, optionally backed by a file (see
/// the module docs).
#[derive(Debug)]
pub struct EmuFlashN<const W: usize> {
    mem: Vec<u8>,
    backing: Option<Backing>,
    stats: FlashStats,
    fault: Option<FaultState>,
    /// `Some(after_bytes)` once the fault plan has cut the power.
    cut: Option<u64>,
    on_cut: Option<CutHook>,
    /// The message of the last failed operation (callers above `NorFlash` only see its kind).
    last_error: Option<String>,
}

/// What to do the moment the fault plan cuts the power (see [`EmuFlash::set_power_cut_hook`]).
pub type PowerCutHook = Box<dyn FnMut(u64) + Send>;

struct CutHook(PowerCutHook);

impl std::fmt::Debug for CutHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PowerCutHook")
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EmuError + 'a {
    move |source| EmuError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `x` is a multiple of [`SECTOR_SIZE`].
// `is_multiple_of` needs Rust 1.87; the workspace's rust-version is 1.80.
#[allow(clippy::manual_is_multiple_of)]
fn sector_aligned(x: u64) -> bool {
    x % u64::from(SECTOR_SIZE) == 0
}

fn sectors_for(size: usize) -> usize {
    size.div_ceil(SECTOR_SIZE as usize)
}

impl<const W: usize> EmuFlashN<W> {
    /// Create (or truncate) `path` as an erased flash of `size` bytes (all 0xFF).
    /// `size` must be a non-zero multiple of [`SECTOR_SIZE`].
    pub fn create(path: impl AsRef<Path>, size: u32) -> Result<Self, EmuError> {
        let path = path.as_ref();
        if size == 0 || !sector_aligned(u64::from(size)) {
            return Err(EmuError::BadFlashSize {
                path: path.to_path_buf(),
                size: u64::from(size),
            });
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_err("create flash file", path))?;
        let sector = [ERASED; SECTOR_SIZE as usize];
        for _ in 0..size / SECTOR_SIZE {
            file.write_all(&sector)
                .map_err(io_err("write flash file", path))?;
        }
        let mem = vec![ERASED; size as usize];
        Ok(Self::with_parts(
            mem,
            Some(Backing {
                file,
                path: path.to_path_buf(),
            }),
        ))
    }

    /// Open an existing flash file read-write; the flash size is the file's length, which must
    /// be a non-zero multiple of [`SECTOR_SIZE`] (and at most 4 GiB).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, EmuError> {
        let path = path.as_ref();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err("open flash file", path))?;
        let len = file
            .metadata()
            .map_err(io_err("stat flash file", path))?
            .len();
        if len == 0 || !sector_aligned(len) || len > u64::from(u32::MAX) + 1 {
            return Err(EmuError::BadFlashSize {
                path: path.to_path_buf(),
                size: len,
            });
        }
        let mut mem = Vec::with_capacity(len as usize);
        file.read_to_end(&mut mem)
            .map_err(io_err("read flash file", path))?;
        if mem.len() as u64 != len {
            return Err(EmuError::BadFlashSize {
                path: path.to_path_buf(),
                size: mem.len() as u64,
            });
        }
        Ok(Self::with_parts(
            mem,
            Some(Backing {
                file,
                path: path.to_path_buf(),
            }),
        ))
    }

    /// An erased flash with no file behind it (fleet simulations). `size` is rounded up to a
    /// whole number of sectors.
    pub fn in_memory(size: u32) -> Self {
        let size = sectors_for(size as usize) * SECTOR_SIZE as usize;
        Self::with_parts(vec![ERASED; size], None)
    }

    /// A flash with no file behind it holding `image` (e.g. a dump); its length must be a
    /// non-zero multiple of [`SECTOR_SIZE`].
    pub fn from_image(image: Vec<u8>) -> Result<Self, EmuError> {
        let len = image.len() as u64;
        if len == 0 || !sector_aligned(len) || len > u64::from(u32::MAX) + 1 {
            return Err(EmuError::BadFlashSize {
                path: PathBuf::from("<in-memory image>"),
                size: len,
            });
        }
        Ok(Self::with_parts(image, None))
    }

    /// A copy of the contents as a new in-memory flash (no file, fresh counters, no fault
    /// plan): e.g. one laid-out device image copied for each device of a fleet simulation.
    pub fn clone_in_memory(&self) -> Self {
        Self::with_parts(self.mem.clone(), None)
    }

    /// The same contents as a flash with another write unit (no file, fresh counters).
    pub fn regranulated<const V: usize>(&self) -> EmuFlashN<V> {
        EmuFlashN::<V>::with_parts(self.mem.clone(), None)
    }

    /// The read and write unit `W`.
    pub const fn write_size(&self) -> u32 {
        W as u32
    }

    fn with_parts(mem: Vec<u8>, backing: Option<Backing>) -> Self {
        let stats = FlashStats {
            erase_counts: vec![0; sectors_for(mem.len())],
            ..FlashStats::default()
        };
        EmuFlashN {
            mem,
            backing,
            stats,
            fault: None,
            cut: None,
            on_cut: None,
            last_error: None,
        }
    }

    /// The backing file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.backing.as_ref().map(|b| b.path.as_path())
    }

    /// A name for messages: the file path, or `<in-memory flash>`.
    pub fn name(&self) -> String {
        match self.path() {
            Some(p) => p.display().to_string(),
            None => String::from("<in-memory flash>"),
        }
    }

    /// Flash size in bytes.
    pub fn size(&self) -> u32 {
        // `open`/`from_image` cap the size at 4 GiB; 4 GiB itself saturates.
        u32::try_from(self.mem.len()).unwrap_or(u32::MAX)
    }

    /// The whole flash contents, without counting a read and regardless of a power cut.
    pub fn contents(&self) -> &[u8] {
        &self.mem
    }

    /// Counters since creation or the last [`EmuFlash::reset_stats`].
    pub fn stats(&self) -> FlashStats {
        self.stats.clone()
    }

    pub fn reset_stats(&mut self) {
        self.stats = FlashStats {
            erase_counts: vec![0; sectors_for(self.mem.len())],
            ..FlashStats::default()
        };
    }

    /// Sector erases (since the last reset) of the sectors that overlap `range` (byte addresses).
    pub fn erases_in(&self, range: Range<u32>) -> u64 {
        if range.start >= range.end {
            return 0;
        }
        let first = (range.start / SECTOR_SIZE) as usize;
        let last = ((range.end - 1) / SECTOR_SIZE) as usize;
        self.stats
            .erase_counts
            .iter()
            .skip(first)
            .take(last.saturating_sub(first) + 1)
            .map(|&n| u64::from(n))
            .sum()
    }

    /// Arm a fault plan; its byte counter starts at zero now. Clears an earlier power cut.
    pub fn set_fault_plan(&mut self, plan: FaultPlan) {
        self.fault = Some(FaultState { plan, done: 0 });
        self.cut = None;
    }

    /// Call `hook(after_bytes)` the moment the fault plan cuts the power: after the torn
    /// operation reached the backing file, before the failing call returns. A front end that
    /// emulates a power loss ends the process there (`ota device run --power-cut-after-bytes`),
    /// so no code runs on a device whose power is gone. Kept across [`EmuFlash::power_cycle`];
    /// not copied by [`EmuFlash::clone_in_memory`].
    pub fn set_power_cut_hook(&mut self, hook: PowerCutHook) {
        self.on_cut = Some(CutHook(hook));
    }

    /// Disarm the fault plan (a power cut that already happened stays until
    /// [`EmuFlash::power_cycle`]).
    pub fn clear_fault_plan(&mut self) {
        self.fault = None;
    }

    pub fn fault_plan(&self) -> Option<FaultPlan> {
        self.fault.map(|f| f.plan)
    }

    /// Bytes programmed or erased since the fault plan was set (0 without a plan).
    pub fn bytes_since_plan(&self) -> u64 {
        self.fault.map_or(0, |f| f.done)
    }

    /// What the last failed read, write or erase said, with its addresses: code above the
    /// `NorFlash` traits only sees an error kind, so a front end can show this detail.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn note<T>(&mut self, r: Result<T, EmuError>) -> Result<T, EmuError> {
        if let Err(e) = &r {
            self.last_error = Some(e.to_string());
        }
        r
    }

    /// Whether the fault plan has cut the power.
    pub fn power_cut_happened(&self) -> bool {
        self.cut.is_some()
    }

    /// Power the chip back on after a cut: the contents stay as the cut left them, the fault plan
    /// is disarmed, operations work again. Counters are kept.
    pub fn power_cycle(&mut self) {
        self.cut = None;
        self.fault = None;
    }

    /// Ask the OS to put the file's data on disk (not needed for a process crash, only for an
    /// OS crash).
    pub fn sync(&self) -> Result<(), EmuError> {
        if let Some(b) = &self.backing {
            b.file
                .sync_data()
                .map_err(io_err("sync flash file", &b.path))?;
        }
        Ok(())
    }

    fn check_power(&self) -> Result<(), EmuError> {
        match self.cut {
            Some(after_bytes) => Err(EmuError::PowerCut { after_bytes }),
            None => Ok(()),
        }
    }

    fn check_bounds(&self, op: FlashOp, offset: u32, len: usize) -> Result<Range<usize>, EmuError> {
        let start = offset as usize;
        match start.checked_add(len) {
            Some(end) if end <= self.mem.len() => Ok(start..end),
            _ => Err(EmuError::OutOfBounds {
                op,
                offset,
                len: len as u64,
                capacity: self.mem.len(),
            }),
        }
    }

    /// How many of the next `len` bytes may be programmed/erased before the power cut, and
    /// whether the cut happens during this operation.
    fn budget(&self, len: usize) -> (usize, Option<u64>) {
        let Some(FaultState {
            plan:
                FaultPlan {
                    power_cut_after_bytes: Some(n),
                    ..
                },
            done,
        }) = self.fault
        else {
            return (len, None);
        };
        let remaining = n.saturating_sub(done);
        if len > 0 && len as u64 >= remaining {
            // `remaining <= len`, so it fits in usize.
            (remaining as usize, Some(n))
        } else {
            (len, None)
        }
    }

    fn count_done(&mut self, n: usize) {
        if let Some(f) = &mut self.fault {
            f.done += n as u64;
        }
    }

    /// Write `bytes` to the backing file at `offset` (nothing without a file).
    fn write_through(&mut self, offset: usize, bytes: &[u8]) -> Result<(), EmuError> {
        let Some(b) = &mut self.backing else {
            return Ok(());
        };
        b.file
            .seek(SeekFrom::Start(offset as u64))
            .and_then(|_| b.file.write_all(bytes))
            .map_err(io_err("write flash file", &b.path))
    }

    /// A torn erase stopped at `at` (absolute): with [`FaultPlan::torn_erase_random`], the rest
    /// of that sector (if the erase had started on it) gets the seed's garbage.
    fn tear_erased_sector(&mut self, at: usize) -> Result<(), EmuError> {
        let Some(seed) = self.fault.and_then(|f| f.plan.torn_erase_random) else {
            return Ok(());
        };
        let sector = SECTOR_SIZE as usize;
        if at.is_multiple_of(sector) {
            // The cut fell between two sectors: none is half erased.
            return Ok(());
        }
        let end = (at / sector + 1) * sector;
        let garbage: Vec<u8> = (at..end).map(|a| torn_erase_byte(seed, a as u32)).collect();
        self.write_through(at, &garbage)?;
        self.mem[at..end].copy_from_slice(&garbage);
        Ok(())
    }

    /// Record the cut, tell the hook, and return the error every later operation gets too.
    fn cut_power(&mut self, after_bytes: u64) -> EmuError {
        self.cut = Some(after_bytes);
        if let Some(hook) = self.on_cut.as_mut() {
            (hook.0)(after_bytes);
        }
        EmuError::PowerCut { after_bytes }
    }

    /// esp-storage's rule: offset and length multiples of the unit.
    fn check_unit(op: FlashOp, offset: u32, len: usize) -> Result<(), EmuError> {
        if (offset as usize).is_multiple_of(W) && len.is_multiple_of(W) {
            return Ok(());
        }
        Err(EmuError::NotWordAligned {
            op,
            offset,
            len: len as u32,
            unit: W as u32,
        })
    }

    fn do_read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), EmuError> {
        self.check_power()?;
        Self::check_unit(FlashOp::Read, offset, buf.len())?;
        let r = self.check_bounds(FlashOp::Read, offset, buf.len())?;
        buf.copy_from_slice(&self.mem[r]);
        self.stats.read_ops += 1;
        self.stats.bytes_read += buf.len() as u64;
        Ok(())
    }

    fn do_write(&mut self, offset: u32, data: &[u8]) -> Result<(), EmuError> {
        self.check_power()?;
        Self::check_unit(FlashOp::Write, offset, data.len())?;
        let r = self.check_bounds(FlashOp::Write, offset, data.len())?;
        if let Some(at) = self.fault.and_then(|f| f.plan.fail_write_at) {
            if r.contains(&(at as usize)) {
                return Err(EmuError::InjectedFault {
                    op: FlashOp::Write,
                    offset,
                    len: data.len() as u32,
                    at,
                });
            }
        }
        // NOR: programming clears bits only (esp-idf `components/spi_flash`). Check all before changing any.
        if let Some((i, (&old, &new))) = self.mem[r.clone()]
            .iter()
            .zip(data)
            .enumerate()
            .find(|(_, (&o, &n))| !o & n != 0)
        {
            return Err(EmuError::BitSet {
                offset: offset + i as u32,
                old,
                new,
            });
        }
        let (k, cut) = self.budget(data.len());
        let done = &data[..k];
        self.write_through(r.start, done)?;
        self.mem[r.start..r.start + k].copy_from_slice(done);
        self.stats.write_ops += 1;
        self.stats.bytes_written += k as u64;
        self.count_done(k);
        if let Some(after_bytes) = cut {
            return Err(self.cut_power(after_bytes));
        }
        Ok(())
    }

    fn do_erase(&mut self, from: u32, to: u32) -> Result<(), EmuError> {
        self.check_power()?;
        let len = to.wrapping_sub(from);
        if from > to || to as usize > self.mem.len() {
            return Err(EmuError::OutOfBounds {
                op: FlashOp::Erase,
                offset: from,
                len: u64::from(to).wrapping_sub(u64::from(from)),
                capacity: self.mem.len(),
            });
        }
        if !sector_aligned(u64::from(from)) || !sector_aligned(u64::from(to)) {
            return Err(EmuError::NotAligned {
                op: FlashOp::Erase,
                offset: from,
                len,
            });
        }
        if let Some(at) = self.fault.and_then(|f| f.plan.fail_erase_at) {
            if (from..to).contains(&at) {
                return Err(EmuError::InjectedFault {
                    op: FlashOp::Erase,
                    offset: from,
                    len,
                    at,
                });
            }
        }
        let (k, cut) = self.budget(len as usize);
        let start = from as usize;
        self.write_through(start, &vec![ERASED; k])?;
        self.mem[start..start + k].fill(ERASED);
        if cut.is_some() {
            self.tear_erased_sector(start + k)?;
        }
        // Every sector that got at least one byte erased counts, including a torn one.
        let sectors_touched = k.div_ceil(SECTOR_SIZE as usize);
        let first = start / SECTOR_SIZE as usize;
        for c in self
            .stats
            .erase_counts
            .iter_mut()
            .skip(first)
            .take(sectors_touched)
        {
            *c += 1;
        }
        self.stats.erase_ops += 1;
        self.stats.bytes_erased += k as u64;
        self.count_done(k);
        if let Some(after_bytes) = cut {
            return Err(self.cut_power(after_bytes));
        }
        Ok(())
    }
}

impl<const W: usize> ErrorType for EmuFlashN<W> {
    type Error = EmuError;
}

impl<const W: usize> ReadNorFlash for EmuFlashN<W> {
    /// Reads in units of `W` (esp-storage: 4).
    const READ_SIZE: usize = W;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), EmuError> {
        let r = self.do_read(offset, bytes);
        self.note(r)
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const W: usize> NorFlash for EmuFlashN<W> {
    /// Writes in units of `W` (esp-storage: 4).
    const WRITE_SIZE: usize = W;
    /// One sector (`SPI_FLASH_SEC_SIZE`).
    const ERASE_SIZE: usize = SECTOR_SIZE as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), EmuError> {
        let r = self.do_erase(from, to);
        self.note(r)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), EmuError> {
        let r = self.do_write(offset, bytes);
        self.note(r)
    }
}

/// NOR flash may program a location again as long as bits only go from 1 to 0, which
/// [`EmuFlashN`] checks on every write (esp-storage implements it too).
impl<const W: usize> MultiwriteNorFlash for EmuFlashN<W> {}
