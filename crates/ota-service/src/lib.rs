//! `ota-service`: the OTA service of ESP-ADF, in Rust, generic over any `NorFlash`.
//!
//! An upgrade list of items (app, raw data, tone data), each with ADF's four hooks, fed from
//! sources (`file://` SD card, `http://`, `https://`), reporting events; configured from TOML.

pub mod config;
pub mod items;
pub mod reason;
pub mod service;
pub mod source;

pub use reason::Reason;
pub use service::{
    run_list, Device, Env, Event, ItemError, Level, Need, Outcome, RunReport, UpgradeItem,
};
