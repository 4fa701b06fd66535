//! [`StackConnector`]: the HTTP client's [`Connect`] over an embassy-net [`Stack`] (the
//! chip's TCP/IP; on a PC the same stack runs over [`crate::sim`]).

use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::{ConnectError as TcpConnectError, TcpSocket};
use embassy_net::{IpAddress, IpEndpoint, Stack};
use embassy_time::Duration;

use crate::http::{Connect, ConnectError, Connection};

/// Default socket buffer sizes: a receive window of 8 KiB keeps a 56 kB/s link busy at
/// 100+ ms round trips; requests are small.
pub const DEFAULT_RX: usize = 8 * 1024;
pub const DEFAULT_TX: usize = 1024;
/// A connection silent this long is reset by the stack (smoltcp's socket timeout), a backstop
/// behind the client's own deadlines.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens `TcpSocket`s on `stack` with buffers it owns (one connection at a time).
pub struct StackConnector<'d, const RX: usize = DEFAULT_RX, const TX: usize = DEFAULT_TX> {
    stack: Stack<'d>,
    rx: [u8; RX],
    tx: [u8; TX],
}

impl<'d, const RX: usize, const TX: usize> StackConnector<'d, RX, TX> {
    pub fn new(stack: Stack<'d>) -> Self {
        StackConnector {
            stack,
            rx: [0; RX],
            tx: [0; TX],
        }
    }

    pub fn stack(&self) -> Stack<'d> {
        self.stack
    }
}

/// An IPv4 literal, or `None`.
fn ipv4_literal(host: &str) -> Option<IpAddress> {
    let mut octets = [0u8; 4];
    let mut parts = host.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(IpAddress::v4(octets[0], octets[1], octets[2], octets[3]))
}

impl<const RX: usize, const TX: usize> Connect for StackConnector<'_, RX, TX> {
    type Conn<'a>
        = TcpSocket<'a>
    where
        Self: 'a;

    async fn connect(&mut self, host: &str, port: u16) -> Result<TcpSocket<'_>, ConnectError> {
        let addr = match ipv4_literal(host) {
            Some(a) => a,
            None => *self
                .stack
                .dns_query(host, DnsQueryType::A)
                .await
                .map_err(|_| ConnectError::Dns)?
                .first()
                .ok_or(ConnectError::Dns)?,
        };
        let mut sock = TcpSocket::new(self.stack, &mut self.rx, &mut self.tx);
        sock.set_timeout(Some(SOCKET_TIMEOUT));
        sock.connect(IpEndpoint::new(addr, port))
            .await
            .map_err(|e| match e {
                TcpConnectError::ConnectionReset => ConnectError::Refused,
                TcpConnectError::TimedOut => ConnectError::TimedOut,
                TcpConnectError::NoRoute => ConnectError::NoRoute,
                TcpConnectError::InvalidState => ConnectError::Local,
            })?;
        Ok(sock)
    }
}

impl Connection for TcpSocket<'_> {
    /// Sends our FIN and waits until the server has acknowledged it (`flush` waits for that).
    async fn close(&mut self) {
        TcpSocket::close(self);
        let _ = embedded_io_async::Write::flush(self).await;
    }

    /// Sends a reset and waits until it is out (`flush` waits for that after `abort`).
    async fn abort(&mut self) {
        TcpSocket::abort(self);
        let _ = embedded_io_async::Write::flush(self).await;
    }
}
