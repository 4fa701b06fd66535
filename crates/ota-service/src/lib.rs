//! ota-service (skeleton)

pub mod config;
pub mod source;
