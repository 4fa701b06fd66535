//! Keeping the flash driver's own error.
//!
//! The layers of `ota-core` return one error type that does not depend on the driver
//! ([`crate::Error`], with a [`FlashError`] for flash failures: operation, absolute offset,
//! length, kind). The driver's own error value (esp-storage's `FlashStorageError`, an emulator's
//! detailed error...) cannot live in it without an allocator or a type parameter on every
//! engine, so it is kept beside the call instead: run the engines on a [`TrackedFlash`]
//! around the flash, and after a call fails ask it for the driver error that caused the
//! failure ([`TrackedFlash::driver_error`]). The front door does this itself and returns
//! the driver error in [`crate::UpdaterError::Flash`].

use core::fmt;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use super::{map_kind, FlashError, FlashErrorKind, FlashOp};

/// The error the core layers see from a [`TrackedFlash`]: the driver error's kind (the
/// driver error itself stays in the wrapper).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverErrorKind(pub NorFlashErrorKind);

impl NorFlashError for DriverErrorKind {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl fmt::Display for DriverErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flash driver error ({:?})", self.0)
    }
}

impl core::error::Error for DriverErrorKind {}

/// A flash driver's own error, with the access that raised it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverError<E> {
    /// What `ota-core` was doing: operation, absolute offset, length.
    pub error: FlashError,
    /// The driver's error value, as the driver returned it.
    pub driver: E,
}

impl<E: fmt::Debug> fmt::Display for DriverError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.error, self.driver)
    }
}

impl<E: fmt::Debug> core::error::Error for DriverError<E> {}

/// A flash as the core layers get it, that remembers the last error its driver returned, so
/// it can be handed back after a call fails (see [`crate::flash`]).
///
/// ```
/// use ota_core::flash::{self, TrackedFlash};
/// use ota_core::mem_flash::{MemFlash, MemFlashError};
///
/// let mut mem = vec![0xFF; 0x1000];
/// let mut raw = MemFlash::<4, 4>::new(&mut mem);
/// let mut kept = TrackedFlash::new(&mut raw);
/// let e = flash::erase(&mut kept, 0x2000, 0x1000).unwrap_err(); // beyond this 4 KiB flash
/// let driver = kept.driver_error(&e.into()).unwrap();
/// assert_eq!(driver.error.offset, 0x2000);
/// assert!(matches!(driver.driver, MemFlashError::OutOfBounds { .. }));
/// ```
pub struct TrackedFlash<'f, F: ErrorType> {
    flash: &'f mut F,
    last: Option<DriverError<F::Error>>,
}

impl<'f, F: ReadNorFlash> TrackedFlash<'f, F> {
    pub fn new(flash: &'f mut F) -> Self {
        TrackedFlash { flash, last: None }
    }

    /// The flash inside.
    pub fn inner(&mut self) -> &mut F {
        self.flash
    }

    /// Take the last driver error met, whatever the outcome of the calls since.
    pub fn take(&mut self) -> Option<DriverError<F::Error>> {
        self.last.take()
    }

    /// The driver error behind `e`, the error a call on this flash returned: `Some` when `e`
    /// is a flash error the driver raised (not one `ota-core` raised before calling the
    /// driver, such as an access outside its partition). Takes it out of the wrapper.
    pub fn driver_error(&mut self, e: &crate::Error) -> Option<DriverError<F::Error>> {
        match e {
            crate::Error::Flash(f) if f.kind.raised_by_driver() => {
                // The same access: not an older error some layer took for "nothing there".
                let same =
                    |d: &DriverError<F::Error>| d.error.op == f.op && d.error.offset == f.offset;
                if self.last.as_ref().is_some_and(same) {
                    self.last.take()
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn note(&mut self, op: FlashOp, offset: u32, len: usize, e: F::Error) -> DriverErrorKind {
        let kind = e.kind();
        self.last = Some(DriverError {
            error: FlashError {
                op,
                offset,
                len: u32::try_from(len).unwrap_or(u32::MAX),
                kind: map_kind(kind),
            },
            driver: e,
        });
        DriverErrorKind(kind)
    }
}

impl FlashErrorKind {
    /// The kind is the driver's verdict (not a check `ota-core` made before calling it).
    pub(crate) fn raised_by_driver(&self) -> bool {
        matches!(
            self,
            FlashErrorKind::NotAligned | FlashErrorKind::OutOfBounds | FlashErrorKind::Other
        )
    }
}

impl<F: ErrorType> ErrorType for TrackedFlash<'_, F> {
    type Error = DriverErrorKind;
}

impl<F: ReadNorFlash> ReadNorFlash for TrackedFlash<'_, F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), DriverErrorKind> {
        self.flash
            .read(offset, bytes)
            .map_err(|e| self.note(FlashOp::Read, offset, bytes.len(), e))
    }

    fn capacity(&self) -> usize {
        self.flash.capacity()
    }
}

impl<F: NorFlash> NorFlash for TrackedFlash<'_, F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), DriverErrorKind> {
        self.flash
            .erase(from, to)
            .map_err(|e| self.note(FlashOp::Erase, from, to.saturating_sub(from) as usize, e))
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), DriverErrorKind> {
        self.flash
            .write(offset, bytes)
            .map_err(|e| self.note(FlashOp::Write, offset, bytes.len(), e))
    }
}

impl<F: MultiwriteNorFlash> MultiwriteNorFlash for TrackedFlash<'_, F> {}
