//! The user-space gateway: the other end of the device's link, a smoltcp interface on its own
//! thread that answers ARP, terminates the device's TCP connections to the gateway address and
//! relays each one to a socket on 127.0.0.1 (QEMU's user networking maps 10.0.2.2 to the
//! host's loopback the same way, libslirp `slirp.c`), and answers DNS for [`HOST_NAME`].
//! Nothing but 127.0.0.1 is ever contacted: frames for any other address are dropped.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, IpProtocol, Ipv4Packet, TcpPacket,
};

use super::driver::MTU;
use super::Shared;

/// The gateway's address, which stands for the host's loopback (slirp's default, 10.0.2.2).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The DNS server's address (slirp's default, 10.0.2.3).
pub const DNS_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The device's address (slirp's first DHCP address, 10.0.2.15), on a /24.
pub const DEVICE: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const PREFIX_LEN: u8 = 24;
/// The one name the gateway's DNS answers; it resolves to [`GATEWAY`].
pub const HOST_NAME: &str = "host.ota";
/// The gateway's MAC (locally administered, slirp-like: 52:55 then the IPv4 address).
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];
/// DNS port (RFC 1035 §4.2).
const DNS_PORT: u16 = 53;
/// DHCP server and client ports (RFC 2131 §4.1).
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
/// The lease the DHCP server gives: a day (slirp's default, `LEASE_TIME` in libslirp
/// `bootp.c`).
pub const DHCP_LEASE_SECS: u32 = 24 * 3600;
/// Connections relayed at once; more SYNs are answered with a reset.
pub const MAX_CONNECTIONS: usize = 64;
/// Buffers of each relayed connection, per direction.
const CONN_BUF: usize = 64 * 1024;
/// A relayed connection with no byte moved for this long is reset.
pub const CONN_IDLE: Duration = Duration::from_secs(120);
/// A connection whose host side has closed, and whose FIN the device acknowledged without
/// closing its own side, is reset after this long (a device that dropped its socket sends no
/// FIN; Linux waits `tcp_fin_timeout`, 60 s, for the same case).
pub const FIN_WAIT2_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to the host's loopback port.
const HOST_CONNECT: Duration = Duration::from_secs(2);
/// With connections open, the gateway looks at the host sockets at least this often.
const TICK: Duration = Duration::from_millis(1);
/// Without connections it sleeps until the device sends a frame, or this long.
const IDLE: Duration = Duration::from_millis(100);

/// What the gateway has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub connections: u64,
    /// Connections being relayed now.
    pub open: u64,
    /// SYNs answered with a reset because the host port refused (or too many connections).
    pub refused: u64,
    pub bytes_to_host: u64,
    pub bytes_to_device: u64,
    pub dns_answers: u64,
    /// DHCP OFFERs, ACKs and NAKs sent.
    pub dhcp_answers: u64,
}

struct Phy {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct PhyRx(Vec<u8>);
struct PhyTx<'a>(&'a mut Vec<Vec<u8>>);

impl smoltcp::phy::RxToken for PhyRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for PhyTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len.min(MTU)];
        let r = f(&mut frame);
        self.0.push(frame);
        r
    }
}

impl Device for Phy {
    type RxToken<'a> = PhyRx;
    type TxToken<'a> = PhyTx<'a>;

    fn receive(&mut self, _t: smoltcp::time::Instant) -> Option<(PhyRx, PhyTx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((PhyRx(f), PhyTx(&mut self.tx)))
    }

    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<PhyTx<'_>> {
        Some(PhyTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = MTU;
        c
    }
}

/// The device's side of a connection: its address, its port, the gateway port it dialled.
type Key = (Ipv4Addr, u16, u16);

struct Conn {
    handle: SocketHandle,
    host: TcpStream,
    /// Bytes from the device not yet written to the host.
    pending: Vec<u8>,
    host_eof: bool,
    shut_host_write: bool,
    last_activity: Instant,
}

/// A TCP SYN (without ACK) from the device to the gateway address.
fn syn_to_gateway(frame: &[u8]) -> Option<Key> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.dst_addr() != GATEWAY {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    (tcp.syn() && !tcp.ack()).then(|| (ip.src_addr(), tcp.src_port(), tcp.dst_port()))
}

pub(crate) struct Gateway {
    shared: Arc<Shared>,
    start: Instant,
    phy: Phy,
    iface: Interface,
    sockets: SocketSet<'static>,
    dns: SocketHandle,
    dhcp: SocketHandle,
    conns: HashMap<Key, Conn>,
    buf: Vec<u8>,
}

impl Gateway {
    pub(crate) fn new(shared: Arc<Shared>) -> Gateway {
        let start = Instant::now();
        let mut phy = Phy {
            rx: VecDeque::new(),
            tx: Vec::new(),
        };
        let cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(GATEWAY_MAC)));
        let mut iface = Interface::new(cfg, &mut phy, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| {
            for ip in [GATEWAY, DNS_SERVER] {
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), PREFIX_LEN));
            }
        });
        let mut sockets = SocketSet::new(Vec::new());
        let udp_buf =
            || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0u8; 8 * 1024]);
        let mut dns_socket = udp::Socket::new(udp_buf(), udp_buf());
        // Binding a fresh socket to a fixed port cannot fail.
        let _ = dns_socket.bind((IpAddress::Ipv4(DNS_SERVER), DNS_PORT));
        let dns = sockets.add(dns_socket);
        let mut dhcp_socket = udp::Socket::new(udp_buf(), udp_buf());
        let _ = dhcp_socket.bind(DHCP_SERVER_PORT);
        let dhcp = sockets.add(dhcp_socket);
        Gateway {
            shared,
            start,
            phy,
            iface,
            sockets,
            dns,
            dhcp,
            conns: HashMap::new(),
            buf: vec![0u8; CONN_BUF],
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    /// Runs until the device is dropped.
    pub(crate) fn run(mut self) {
        loop {
            let now = Instant::now();
            {
                let mut st = self.shared.lock();
                if st.stop {
                    return;
                }
                while let Some(f) = st.up.pop(now) {
                    self.phy.rx.push_back(f);
                }
            }
            let frames: Vec<Key> = self
                .phy
                .rx
                .iter()
                .filter_map(|f| syn_to_gateway(f))
                .collect();
            for key in frames {
                self.open(key);
            }
            let t = self.now();
            self.iface.poll(t, &mut self.phy, &mut self.sockets);
            self.relay();
            self.answer_dns();
            self.answer_dhcp();
            let t = self.now();
            self.iface.poll(t, &mut self.phy, &mut self.sockets);
            let most = if self.conns.is_empty() { IDLE } else { TICK };
            let delay = self
                .iface
                .poll_delay(t, &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(most)
                .min(most);
            let mut st = self.shared.lock();
            let now = Instant::now();
            for f in self.phy.tx.drain(..) {
                st.down.push(now, f);
            }
            if st.down.next_event().is_some_and(|t| t <= now) {
                if let Some(w) = st.waker.take() {
                    w.wake();
                }
            }
            let mut wait = delay;
            for t in [st.up.next_event(), st.down.next_event()]
                .into_iter()
                .flatten()
            {
                wait = wait.min(t.saturating_duration_since(now));
            }
            if !wait.is_zero() && st.up.next_event().is_none_or(|t| t > now) {
                let (g, _) = self.shared.wait(st, wait);
                drop(g);
            }
        }
    }

    /// A new connection from the device: connect to the same port on 127.0.0.1 first (as
    /// slirp does); if that fails, no socket listens and smoltcp answers the SYN with a reset.
    fn open(&mut self, key: Key) {
        if self.conns.contains_key(&key) {
            return; // a retransmitted SYN
        }
        let mut stats = self.shared.lock();
        if self.conns.len() >= MAX_CONNECTIONS {
            stats.gateway.refused += 1;
            return;
        }
        drop(stats);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, key.2));
        let host = match TcpStream::connect_timeout(&addr, HOST_CONNECT) {
            Ok(h) if h.set_nonblocking(true).is_ok() => h,
            _ => {
                self.shared.lock().gateway.refused += 1;
                return;
            }
        };
        let _ = host.set_nodelay(true);
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; CONN_BUF]),
            tcp::SocketBuffer::new(vec![0u8; CONN_BUF]),
        );
        sock.set_nagle_enabled(false);
        let ep = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(GATEWAY)),
            port: key.2,
        };
        if sock.listen(ep).is_err() {
            return;
        }
        let handle = self.sockets.add(sock);
        self.conns.insert(
            key,
            Conn {
                handle,
                host,
                pending: Vec::new(),
                host_eof: false,
                shut_host_write: false,
                last_activity: Instant::now(),
            },
        );
        self.shared.lock().gateway.connections += 1;
    }

    fn relay(&mut self) {
        let mut done = Vec::new();
        let (mut to_host, mut to_device) = (0u64, 0u64);
        for (key, c) in self.conns.iter_mut() {
            let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
            match relay_one(c, sock, &mut self.buf) {
                Ok((a, b)) => {
                    to_host += a;
                    to_device += b;
                    if a + b > 0 {
                        c.last_activity = Instant::now();
                    }
                }
                Err(()) => {
                    sock.abort();
                    done.push(*key);
                    continue;
                }
            }
            let quiet = c.last_activity.elapsed();
            let idle = quiet > CONN_IDLE
                || (sock.state() == tcp::State::FinWait2 && quiet > FIN_WAIT2_TIMEOUT);
            if idle {
                sock.abort();
            }
            if idle || matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait) {
                done.push(*key);
            }
        }
        for key in done {
            if let Some(c) = self.conns.remove(&key) {
                // Let smoltcp send the reset or the last ACK before the socket goes.
                let t = self.now();
                self.iface.poll(t, &mut self.phy, &mut self.sockets);
                self.sockets.remove(c.handle);
            }
        }
        let mut st = self.shared.lock();
        st.gateway.open = self.conns.len() as u64;
        st.gateway.bytes_to_host += to_host;
        st.gateway.bytes_to_device += to_device;
    }

    fn answer_dns(&mut self) {
        let sock = self.sockets.get_mut::<udp::Socket>(self.dns);
        let mut answered = 0;
        while let Ok((n, meta)) = sock.recv_slice(&mut self.buf) {
            if let Some(reply) = dns_reply(&self.buf[..n]) {
                if sock.send_slice(&reply, meta.endpoint).is_ok() {
                    answered += 1;
                }
            }
        }
        self.shared.lock().gateway.dns_answers += answered;
    }
}

impl Gateway {
    fn answer_dhcp(&mut self) {
        let sock = self.sockets.get_mut::<udp::Socket>(self.dhcp);
        let mut answered = 0;
        while let Ok((n, _)) = sock.recv_slice(&mut self.buf) {
            if let Some(reply) = dhcp_reply(&self.buf[..n]) {
                let to = (IpAddress::Ipv4(Ipv4Addr::BROADCAST), DHCP_CLIENT_PORT);
                if sock.send_slice(&reply, to).is_ok() {
                    answered += 1;
                }
            }
        }
        self.shared.lock().gateway.dhcp_answers += answered;
    }
}

/// The DHCP server's answer (RFC 2131 §4.3) to a DISCOVER (an OFFER of [`DEVICE`]) or a
/// REQUEST (an ACK for [`DEVICE`], a NAK for any other address); `None` for anything else.
pub fn dhcp_reply(request: &[u8]) -> Option<Vec<u8>> {
    let packet = DhcpPacket::new_checked(request).ok()?;
    let req = DhcpRepr::parse(&packet).ok()?;
    let asked = req.requested_ip.unwrap_or(req.client_ip);
    let message_type = match req.message_type {
        DhcpMessageType::Discover => DhcpMessageType::Offer,
        DhcpMessageType::Request if asked == DEVICE || asked.is_unspecified() => {
            DhcpMessageType::Ack
        }
        DhcpMessageType::Request => DhcpMessageType::Nak,
        _ => return None,
    };
    let nak = message_type == DhcpMessageType::Nak;
    let mut dns_servers = heapless::Vec::new();
    let _ = dns_servers.push(DNS_SERVER);
    let mask = Ipv4Addr::from(u32::MAX << (32 - PREFIX_LEN));
    let reply = DhcpRepr {
        message_type,
        transaction_id: req.transaction_id,
        secs: 0,
        client_hardware_address: req.client_hardware_address,
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: if nak { Ipv4Addr::UNSPECIFIED } else { DEVICE },
        server_ip: GATEWAY,
        router: (!nak).then_some(GATEWAY),
        subnet_mask: (!nak).then_some(mask),
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: req.broadcast,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(GATEWAY),
        parameter_request_list: None,
        dns_servers: (!nak).then_some(dns_servers),
        max_size: None,
        lease_duration: (!nak).then_some(DHCP_LEASE_SECS),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut out = vec![0u8; reply.buffer_len()];
    let mut p = DhcpPacket::new_unchecked(&mut out[..]);
    reply.emit(&mut p).ok()?;
    Some(out)
}

/// Moves bytes both ways; returns (to host, to device), or `Err` when the host side failed.
fn relay_one(c: &mut Conn, sock: &mut tcp::Socket, buf: &mut [u8]) -> Result<(u64, u64), ()> {
    let (mut to_host, mut to_device) = (0u64, 0u64);
    // Host -> device, as much as the socket's send buffer takes.
    if !c.host_eof && sock.may_send() {
        let room = sock.send_capacity() - sock.send_queue();
        if room > 0 {
            let want = room.min(buf.len());
            match c.host.read(&mut buf[..want]) {
                Ok(0) => {
                    c.host_eof = true;
                    sock.close();
                }
                Ok(n) => {
                    let sent = sock.send_slice(&buf[..n]).map_err(|_| ())?;
                    to_device += sent as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }
    // Device -> host, never holding more than one socket buffer.
    loop {
        if !c.pending.is_empty() {
            match c.host.write(&c.pending) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    c.pending.drain(..n);
                    to_host += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
            continue;
        }
        if !sock.can_recv() {
            break;
        }
        let n = sock.recv_slice(buf).map_err(|_| ())?;
        if n == 0 {
            break;
        }
        c.pending.extend_from_slice(&buf[..n]);
    }
    // The device closed its sending side: pass the FIN on.
    let device_closed = matches!(
        sock.state(),
        tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::Closing
            | tcp::State::TimeWait
            | tcp::State::Closed
    );
    if device_closed && c.pending.is_empty() && !sock.can_recv() && !c.shut_host_write {
        let _ = c.host.shutdown(Shutdown::Write);
        c.shut_host_write = true;
    }
    Ok((to_host, to_device))
}

/// DNS header length (RFC 1035 §4.1.1).
const DNS_HEADER: usize = 12;
/// Longest name in a question, longest label, longest UDP message (RFC 1035 §2.3.4).
const DNS_MAX_NAME: usize = 255;
const DNS_MAX_LABEL: usize = 63;
const DNS_MAX_UDP: usize = 512;
/// Header flag bits (RFC 1035 §4.1.1): QR (a response), AA, RD, RA; the OPCODE field; RCODE 3.
const DNS_QR: u16 = 0x8000;
const DNS_AA: u16 = 0x0400;
const DNS_RD: u16 = 0x0100;
const DNS_RA: u16 = 0x0080;
const DNS_OPCODE_SHIFT: u16 = 11;
const DNS_OPCODE_MASK: u16 = 0xf;
const DNS_NXDOMAIN: u16 = 3;
/// A compression pointer's top bits (RFC 1035 §4.1.4).
const DNS_POINTER: u8 = 0xc0;
/// Query type A and class IN (RFC 1035 §3.2.2, §3.2.4).
const DNS_TYPE_A: u16 = 1;
const DNS_CLASS_IN: u16 = 1;
/// TTL of our one answer.
const DNS_TTL: u32 = 60;

/// The answer to a standard query for [`HOST_NAME`] (an A record for [`GATEWAY`]); any other
/// name gets NXDOMAIN, any other type an empty answer. `None`: not a query we can parse.
pub fn dns_reply(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < DNS_HEADER || q.len() > DNS_MAX_UDP {
        return None;
    }
    let flags = u16::from_be_bytes([q[2], q[3]]);
    let qdcount = u16::from_be_bytes([q[4], q[5]]);
    // QR=0 (query), OPCODE=0 (standard), exactly one question.
    if flags & DNS_QR != 0 || (flags >> DNS_OPCODE_SHIFT) & DNS_OPCODE_MASK != 0 || qdcount != 1 {
        return None;
    }
    let mut i = DNS_HEADER;
    let mut name = String::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > DNS_MAX_LABEL || name.len() + len + 1 > DNS_MAX_NAME {
            return None;
        }
        let label = q.get(i..i + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|&b| b.to_ascii_lowercase() as char));
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*q.get(i + 2)?, *q.get(i + 3)?]);
    let question_end = i + 4;
    let known = name == HOST_NAME;
    let answer = known && qtype == DNS_TYPE_A && qclass == DNS_CLASS_IN;
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&q[0..2]); // ID
                                   // A response, authoritative, RD copied, RA; NXDOMAIN for names we do not know.
    let rcode = if known { 0 } else { DNS_NXDOMAIN };
    let rflags: u16 = DNS_QR | DNS_AA | (flags & DNS_RD) | DNS_RA | rcode;
    r.extend_from_slice(&rflags.to_be_bytes());
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&u16::from(answer).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q[DNS_HEADER..question_end]);
    if answer {
        r.extend_from_slice(&[DNS_POINTER, DNS_HEADER as u8]); // the question's name
        r.extend_from_slice(&DNS_TYPE_A.to_be_bytes());
        r.extend_from_slice(&DNS_CLASS_IN.to_be_bytes());
        r.extend_from_slice(&DNS_TTL.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&GATEWAY.octets());
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    fn dhcp(message_type: DhcpMessageType, requested_ip: Option<Ipv4Addr>) -> Vec<u8> {
        let req = DhcpRepr {
            message_type,
            transaction_id: 0xfeed,
            secs: 0,
            client_hardware_address: EthernetAddress([2, 0, 0, 0, 0, 1]),
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: Ipv4Addr::UNSPECIFIED,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip,
            client_identifier: None,
            server_identifier: None,
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut out = vec![0u8; req.buffer_len()];
        req.emit(&mut DhcpPacket::new_unchecked(&mut out[..]))
            .unwrap();
        out
    }

    #[test]
    fn dhcp_offers_and_acks_the_device_address_and_naks_others() {
        let offer = dhcp_reply(&dhcp(DhcpMessageType::Discover, None)).unwrap();
        let p = DhcpPacket::new_checked(&offer[..]).unwrap();
        let r = DhcpRepr::parse(&p).unwrap();
        assert_eq!(r.message_type, DhcpMessageType::Offer);
        assert_eq!((r.transaction_id, r.your_ip), (0xfeed, DEVICE));
        assert_eq!(
            (r.router, r.server_identifier),
            (Some(GATEWAY), Some(GATEWAY))
        );
        assert_eq!(r.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(r.dns_servers.unwrap().as_slice(), &[DNS_SERVER]);
        assert_eq!(r.lease_duration, Some(DHCP_LEASE_SECS));
        let ack = dhcp_reply(&dhcp(DhcpMessageType::Request, Some(DEVICE))).unwrap();
        let p = DhcpPacket::new_checked(&ack[..]).unwrap();
        assert_eq!(
            DhcpRepr::parse(&p).unwrap().message_type,
            DhcpMessageType::Ack
        );
        let other = Some(Ipv4Addr::new(10, 0, 2, 77));
        let nak = dhcp_reply(&dhcp(DhcpMessageType::Request, other)).unwrap();
        let p = DhcpPacket::new_checked(&nak[..]).unwrap();
        assert_eq!(
            DhcpRepr::parse(&p).unwrap().message_type,
            DhcpMessageType::Nak
        );
        // Answers and garbage get nothing; truncations never panic.
        assert_eq!(dhcp_reply(&offer), None);
        let d = dhcp(DhcpMessageType::Discover, None);
        for n in 0..d.len() {
            let _ = dhcp_reply(&d[..n]);
        }
        assert_eq!(dhcp_reply(&[0xff; 300]), None);
    }

    #[test]
    fn dns_answers_host_ota_with_the_gateway_and_nothing_else() {
        let r = dns_reply(&query("Host.OTA", 1)).unwrap();
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0xf, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[r.len() - 4..], &GATEWAY.octets());
        let r = dns_reply(&query("example.com", 1)).unwrap();
        assert_eq!(r[3] & 0xf, 3);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
        let r = dns_reply(&query("host.ota", 28)).unwrap(); // AAAA: no answer
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
        // Hostile queries: truncated, a label running off the end, answers, huge.
        let q = query("host.ota", 1);
        for n in 0..q.len() {
            let _ = dns_reply(&q[..n]);
        }
        assert_eq!(dns_reply(&[0; 11]), None);
        let mut bad = q.clone();
        bad[12] = 63;
        assert_eq!(dns_reply(&bad), None);
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert_eq!(dns_reply(&resp), None);
        assert_eq!(dns_reply(&vec![0; 513]), None);
    }
}
