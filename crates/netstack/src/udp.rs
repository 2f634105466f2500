//! One UDP flow: the guest's (source port, destination) pair and a host UDP socket `connect`ed
//! to that destination, so only the destination's replies come back (no other host can inject
//! datagrams into the flow). Datagrams are relayed one for one, never queued: when the host
//! socket or the link to the guest is full, the datagram is dropped, as UDP allows. A flow with
//! no traffic either way for `udp_idle_timeout` is closed by the stack's sweep.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::task::{Context, Poll};
use std::time::Instant;

use smoltcp::wire::EthernetAddress;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

use crate::device::LinkDevice;
use crate::flow::FlowKey;
use crate::packet::{write_udp_frame, MAX_UDP_PAYLOAD};

/// Datagrams relayed to the guest per service of one flow before others get a turn.
const BUDGET: usize = 64;
/// The receive buffer `service` needs: one byte more than fits a frame, to tell "too big" from
/// "exactly fits".
pub(crate) const SCRATCH_LEN: usize = MAX_UDP_PAYLOAD + 1;

pub(crate) struct UdpFlow {
    pub(crate) key: FlowKey,
    socket: UdpSocket,
    pub(crate) last_active: Instant,
}

impl UdpFlow {
    /// Opens the host socket for `key`. Must run inside the tokio runtime.
    /// Opens the host socket to `host` (the guest sees replies come from `key.remote`).
    pub(crate) fn open(key: FlowKey, host: SocketAddr, now: Instant) -> io::Result<UdpFlow> {
        let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect(host)?;
        socket.set_nonblocking(true)?;
        Ok(UdpFlow {
            key,
            socket: UdpSocket::from_std(socket)?,
            last_active: now,
        })
    }

    /// Sends one datagram from the guest.
    pub(crate) fn send(&mut self, payload: &[u8], now: Instant) {
        self.last_active = now;
        // A direct send(2) on the non-blocking socket: tokio's try_send would refuse until the
        // reactor has seen the socket writable, which loses the first datagram of every flow.
        if let Err(error) = socket2::SockRef::from(&self.socket).send(payload) {
            // WouldBlock (socket buffer full) or an ICMP error from an earlier datagram.
            tracing::trace!(%error, dst = %self.key.remote, "udp datagram dropped");
        }
    }

    /// Relays datagrams from the host to the guest until the socket has none (registering
    /// `cx`) or the budget is spent (waking `cx` to come back).
    pub(crate) fn service(
        &mut self,
        cx: &mut Context<'_>,
        device: &mut LinkDevice,
        scratch: &mut [u8],
        guest_mac: EthernetAddress,
        now: Instant,
    ) {
        for _ in 0..BUDGET {
            let mut read = ReadBuf::new(scratch);
            match self.socket.poll_recv(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    self.last_active = now;
                    let src = SocketAddrV4::new(*self.key.remote.ip(), self.key.remote.port());
                    let datagram = read.filled();
                    if !write_udp_frame(device, guest_mac, src, self.key.guest_port, datagram) {
                        tracing::trace!(len = datagram.len(), "udp datagram to the guest dropped");
                    }
                }
                // Connected UDP sockets report ICMP errors (port unreachable) on receive.
                Poll::Ready(Err(error)) => {
                    tracing::trace!(%error, dst = %self.key.remote, "udp flow error");
                }
                Poll::Pending => return,
            }
        }
        cx.waker().wake_by_ref();
    }
}
