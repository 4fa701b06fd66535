//! The crate-wide error: one enum that wraps each module's own error type.
//!
//! Every variant carries what was wrong and where (offset, field, expected vs found), and
//! implements `Display` with a message a person can act on. No allocation, no panics.

use core::fmt;

use crate::boot::BootError;
use crate::flash::FlashError;
use crate::image::ImageError;
use crate::otadata::OtaDataError;
use crate::partition::PartitionError;
use crate::tone::ToneError;
use crate::update::UpdateError;

#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    Flash(FlashError),
    Partition(PartitionError),
    OtaData(OtaDataError),
    Image(ImageError),
    Tone(ToneError),
    Update(UpdateError),
    Boot(BootError),
}

impl core::error::Error for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Flash(e) => e.fmt(f),
            Error::Partition(e) => e.fmt(f),
            Error::OtaData(e) => e.fmt(f),
            Error::Image(e) => e.fmt(f),
            Error::Tone(e) => e.fmt(f),
            Error::Update(e) => e.fmt(f),
            Error::Boot(e) => e.fmt(f),
        }
    }
}

macro_rules! from_impl {
    ($($t:ident => $v:ident),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::$v(e)
            }
        }
    )*};
}
from_impl!(FlashError => Flash, PartitionError => Partition, OtaDataError => OtaData,
    ImageError => Image, ToneError => Tone, UpdateError => Update, BootError => Boot);
