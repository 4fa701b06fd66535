//! The device side's network for ota-service.
//!
//! - [`http`]: a small async HTTP/1.1 client (`GET` with `Range`, `If-Range`, `If-Match`;
//!   `ETag`, `Content-Range`, chunked and identity bodies), `no_std` without an allocator, over
//!   any [`embedded_io_async`] connection that a [`http::Connect`] opens. Every size is
//!   bounded and every wait has a deadline (embassy-time).
//! - `embassy` (feature): [`embassy::StackConnector`], the connector over an embassy-net
//!   `Stack` (the chip's TCP/IP, and the PC's with `sim`).
//! - `tls` (feature): [`tls::TlsConnector`], `https://` (TLS 1.3, embedded-tls) over any
//!   connector, verified against one pinned CA and the URL's host name.
//! - `sim` (feature, std): embassy-net on a PC: a simulated Ethernet driver whose frames cross a
//!   seeded link model ([`sim::LinkSpec`]) to a user-space gateway that relays the device's TCP
//!   connections to 127.0.0.1, as QEMU's user networking (slirp) does.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod http;

#[cfg(feature = "embassy")]
pub mod embassy;

#[cfg(feature = "sim")]
pub mod sim;

#[cfg(feature = "tls")]
pub mod tls;
