//! `ota-service`: the OTA service of ESP-ADF, in Rust, generic over any `NorFlash`.
//!
//! An upgrade list of items (app, raw data, tone data), each with ADF's four hooks, fed from
//! sources (`file://` SD card, `http://`, `https://`), reporting events; configured from TOML.
//!
//! The service itself is `no_std` + `alloc` (default features off): its hooks and
//! [`service::run_list_async`] are `async fn`s generic over two small traits, a
//! [`io::Transport`] (open a URI with an optional byte range and validator, read the body) and
//! a [`io::Clock`] (`now_ms`, `sleep_ms`). The default `std` feature adds the std driver
//! ([`std_driver`]): SD card folders, the blocking http(s) client, TOML config files, the
//! system clock, and the blocking [`run_list`] that runs the same futures with
//! [`io::block_on`]. The `embassy` feature adds the embassy driver ([`embassy_driver`],
//! `no_std`): `http://` on `ota-net`'s async client over any connector, embassy-time's clock.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod prelude;

#[cfg(feature = "std")]
pub mod config;
#[cfg(feature = "embassy")]
pub mod embassy_driver;
pub mod io;
pub mod items;
#[cfg(feature = "tls")]
pub mod pem;
pub mod reason;
pub mod service;
pub mod source;
#[cfg(feature = "std")]
pub mod std_driver;

pub use reason::Reason;
pub use service::{
    run_list_async, Cause, Device, Env as AsyncEnv, Event, ItemError, Level, Need, Outcome,
    ResumeFrom, RunReport, StartOverWhy, UpgradeItem,
};
#[cfg(feature = "std")]
pub use std_driver::{run_list, Env};
