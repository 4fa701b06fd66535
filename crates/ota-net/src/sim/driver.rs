//! The device's Ethernet driver for embassy-net: frames go into the link's up pipe and come
//! out of its down pipe; the gateway thread wakes the stack when a frame arrives.

use std::sync::Arc;
use std::task::Context;
use std::time::Instant;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState, RxToken, TxToken};

use super::Shared;

/// Largest Ethernet frame without FCS (1500-byte payload + 14-byte header).
pub const MTU: usize = 1514;

/// The simulated network interface of the device.
pub struct SimDriver {
    pub(crate) shared: Arc<Shared>,
    pub(crate) mac: [u8; 6],
}

pub struct SimRx(Vec<u8>);

pub struct SimTx<'a>(&'a Shared);

impl RxToken for SimRx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        f(&mut self.0)
    }
}

impl TxToken for SimTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len.min(MTU)];
        let r = f(&mut frame);
        self.0.send_up(frame);
        r
    }
}

impl embassy_net_driver::Driver for SimDriver {
    type RxToken<'a>
        = SimRx
    where
        Self: 'a;
    type TxToken<'a>
        = SimTx<'a>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context) -> Option<(SimRx, SimTx<'_>)> {
        let frame = self.shared.recv_down(Instant::now(), cx.waker())?;
        Some((SimRx(frame), SimTx(&self.shared)))
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<SimTx<'_>> {
        Some(SimTx(&self.shared))
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.max_transmission_unit = MTU;
        c
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
