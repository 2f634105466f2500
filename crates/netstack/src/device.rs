//! The smoltcp device: one received frame at a time in, length-prefixed frames out.
//!
//! The stack hands smoltcp each guest frame individually (after inspecting it, see
//! `stack::Engine::on_frame`) and calls `poll_ingress_single` right away, so the device never
//! holds more than one received frame. Transmitted frames go straight into the link's
//! [`OutQueue`]; when it is full the device reports itself busy and smoltcp keeps its segments
//! for retransmission, which is how a slow link pushes back on the guest's TCP peers.

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::link::OutQueue;
use crate::{ETHERNET_HEADER_LEN, MTU};

pub(crate) const MAX_ETHERNET_FRAME: usize = MTU + ETHERNET_HEADER_LEN;

pub(crate) struct LinkDevice {
    rx: Vec<u8>,
    has_rx: bool,
    pub(crate) out: OutQueue,
    /// Frames smoltcp produced while the queue was full (only replies to ingress can be).
    pub(crate) dropped: u64,
    pub(crate) sent: u64,
}

impl LinkDevice {
    pub(crate) fn new(out_limit: usize) -> LinkDevice {
        LinkDevice {
            rx: Vec::with_capacity(MAX_ETHERNET_FRAME),
            has_rx: false,
            out: OutQueue::new(out_limit),
            dropped: 0,
            sent: 0,
        }
    }

    /// Stages one frame for the next `poll_ingress_single`.
    pub(crate) fn stage(&mut self, frame: &[u8]) {
        self.rx.clear();
        self.rx.extend_from_slice(frame);
        self.has_rx = true;
    }

    /// Forgets a staged frame smoltcp did not take.
    pub(crate) fn unstage(&mut self) {
        self.has_rx = false;
    }
}

impl phy::Device for LinkDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        if !self.has_rx {
            return None;
        }
        self.has_rx = false;
        Some((
            RxToken { frame: &self.rx },
            TxToken {
                out: &mut self.out,
                dropped: &mut self.dropped,
                sent: &mut self.sent,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if !self.out.has_room(MAX_ETHERNET_FRAME) {
            return None;
        }
        Some(TxToken {
            out: &mut self.out,
            dropped: &mut self.dropped,
            sent: &mut self.sent,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_ETHERNET_FRAME;
        // The guest's virtio-net has no offloads over a stream netdev: every checksum is real,
        // so verify all of them on the way in and compute all of them on the way out.
        let mut checksum = ChecksumCapabilities::default();
        checksum.ipv4 = Checksum::Both;
        checksum.tcp = Checksum::Both;
        checksum.udp = Checksum::Both;
        checksum.icmpv4 = Checksum::Both;
        caps.checksum = checksum;
        caps
    }
}

pub(crate) struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

pub(crate) struct TxToken<'a> {
    out: &'a mut OutQueue,
    dropped: &'a mut u64,
    sent: &'a mut u64,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // A reply to an ingress frame can be produced with the queue full; it is dropped (the
        // guest retransmits) rather than letting a flooding guest grow the queue.
        if self.out.has_room(len) {
            *self.sent += 1;
            return self.out.push(len, f).expect("room was checked");
        }
        *self.dropped += 1;
        f(&mut vec![0; len])
    }
}
