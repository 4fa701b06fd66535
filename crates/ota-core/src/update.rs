//! Streaming update engines for app slots and data partitions (idf-formats.md §2.4, §2.8;
//! adf-ota-service.md §6, §7).
//!
//! CONTRACT (skeleton): to be written.

use core::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateError {
    Invalid,
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self)
    }
}
