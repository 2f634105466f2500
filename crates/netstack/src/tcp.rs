//! One TCP flow: a smoltcp socket facing the guest and a tokio `TcpStream` facing the host.
//!
//! # Opening
//! A guest flow starts when the stack sees the guest's SYN. The policy and the flow limit are
//! checked first; if either says no, the SYN goes to smoltcp with no socket listening and smoltcp
//! answers with a reset (the guest sees "connection refused"), and no host socket is ever made.
//! Otherwise the SYN is *held* while the host connects ([`Stage::Connecting`]; the guest's
//! retransmissions replace the held copy). Only when the host connection is up does the stack
//! create a socket listening on exactly the destination the guest asked for and hand it the held
//! SYN, so the guest's handshake completes only if the host's did: a host that refuses or does
//! not answer within `tcp_connect_timeout` gives the guest a reset, as a real network would.
//!
//! A published-port flow starts from an accepted host connection: the stack opens the guest side
//! actively (gateway address, a local ephemeral port, to the guest's port).
//!
//! # Relaying ([`Relay::step`])
//! Bytes move straight between the smoltcp socket's buffers and the host socket, with no queue
//! in between: host data is read only into free space of the socket's send buffer (so a guest
//! that does not read closes its window, the buffer fills, and the host socket is no longer read:
//! the host's TCP sees backpressure), and guest data leaves the receive buffer only as fast as the
//! host socket takes it (so the guest's window closes instead).
//!
//! # Closing
//! - Half-close: the guest's FIN becomes `shutdown(Write)` on the host socket once everything
//!   before it was written; the host's end-of-file becomes a FIN to the guest once everything
//!   before it was sent. Either direction keeps flowing while the other is closed.
//! - Resets: a host socket error (e.g. the host peer reset) aborts the guest side (RST); a guest
//!   RST (or smoltcp timing out) drops the host socket with `SO_LINGER` 0, so the host peer sees a
//!   reset too.
//! - The host socket is closed as soon as both directions are done; the flow (and its slot in the
//!   flow limit) goes when the smoltcp socket reaches CLOSED or TIME-WAIT (TIME-WAIT is not kept:
//!   a late retransmission from the guest is answered with a reset, which it ignores).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::flow::FlowKey;

pub(crate) type Connect = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

pub(crate) struct TcpFlow {
    pub(crate) key: FlowKey,
    pub(crate) stage: Stage,
    pub(crate) created: Instant,
    /// When the smoltcp socket was first seen aborted with its reset not yet sent.
    pub(crate) stuck_since: Option<Instant>,
}

pub(crate) enum Stage {
    /// The host connection is being made; `syn` is the guest's held SYN frame.
    Connecting {
        connect: Connect,
        syn: Vec<u8>,
    },
    Relaying(Relay),
}

/// Whether a flow is still alive after a step.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    Open,
    Finished,
}

/// What a flow's guest side is relayed to: the host socket, or (for a flow intercepted for
/// secrets) the stack's end of the in-memory duplex whose other end the flow's interception
/// task drives (see `intercept`).
pub(crate) enum HostStream {
    Tcp(TcpStream),
    Intercepted(tokio::io::DuplexStream),
}

impl AsyncRead for HostStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HostStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            HostStream::Intercepted(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HostStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HostStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            HostStream::Intercepted(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HostStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            HostStream::Intercepted(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HostStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            HostStream::Intercepted(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

pub(crate) struct Relay {
    pub(crate) handle: SocketHandle,
    /// `None` once both directions are done on the host side (or it failed).
    host: Option<HostStream>,
    /// Interception is on and the guest's first bytes have not been judged yet: guest bytes
    /// stay in the smoltcp buffer (see `intercept`).
    pub(crate) deciding: bool,
    /// The host sent end-of-file; the guest side was closed (FIN).
    host_eof: bool,
    /// The guest's FIN was passed on (`shutdown(Write)` on the host socket).
    host_shutdown: bool,
}

impl Relay {
    pub(crate) fn new(handle: SocketHandle, host: TcpStream, deciding: bool) -> Relay {
        // Small writes from either side should leave promptly; the guest's TCP does its own
        // coalescing.
        let _ = host.set_nodelay(true);
        Relay {
            handle,
            host: Some(HostStream::Tcp(host)),
            deciding,
            host_eof: false,
            host_shutdown: false,
        }
    }

    /// Moves what can be moved in both directions, propagates closes and resets, and registers
    /// `cx`'s waker with both sockets for whatever it is now waiting on.
    pub(crate) fn step(&mut self, socket: &mut tcp::Socket<'_>, cx: &mut Context<'_>) -> Progress {
        if let Some(host) = &mut self.host {
            let result = if self.deciding {
                Ok(())
            } else {
                pump_to_host(socket, host, cx, &mut self.host_shutdown)
            }
            .and_then(|()| pump_to_guest(socket, host, cx, &mut self.host_eof));
            if let Err(error) = result {
                tracing::debug!(%error, "host side of a tcp flow failed; resetting the guest side");
                socket.abort();
                self.reset_host();
            } else if self.host_eof && self.host_shutdown {
                self.host = None;
            }
        }
        socket.register_recv_waker(cx.waker());
        socket.register_send_waker(cx.waker());
        match socket.state() {
            // The guest reset the connection before it was established.
            State::Listen => {
                self.reset_host();
                Progress::Finished
            }
            // Aborted, with the reset still to be sent.
            State::Closed if socket.remote_endpoint().is_some() => Progress::Open,
            // Reset by the guest, or timed out, while the host side was open.
            State::Closed if !self.host_eof => {
                self.reset_host();
                Progress::Finished
            }
            // Both sides closed; finished once the guest's last bytes reached the host.
            State::Closed | State::TimeWait if !socket.can_recv() || self.host.is_none() => {
                Progress::Finished
            }
            _ => Progress::Open,
        }
    }

    /// Drops the host socket so that its peer sees a reset rather than an orderly close.
    pub(crate) fn reset_host(&mut self) {
        if let Some(HostStream::Tcp(host)) = self.host.take() {
            let _ = host.set_zero_linger();
        }
    }

    /// Takes the host socket for interception (only while deciding, before any guest byte was
    /// forwarded); the caller puts the duplex end back with [`Relay::intercepted`].
    pub(crate) fn take_tcp(&mut self) -> Option<TcpStream> {
        match self.host.take() {
            Some(HostStream::Tcp(tcp)) => Some(tcp),
            other => {
                self.host = other;
                None
            }
        }
    }

    pub(crate) fn intercepted(&mut self, stream: tokio::io::DuplexStream) {
        self.host = Some(HostStream::Intercepted(stream));
        self.deciding = false;
    }

    pub(crate) fn has_host_socket(&self) -> bool {
        self.host.is_some()
    }
}

/// The guest has sent its FIN (and smoltcp has taken it in order).
fn guest_finished_sending(state: State) -> bool {
    matches!(
        state,
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
    )
}

fn pump_to_host(
    socket: &mut tcp::Socket<'_>,
    host: &mut HostStream,
    cx: &mut Context<'_>,
    shutdown: &mut bool,
) -> io::Result<()> {
    if *shutdown {
        return Ok(());
    }
    while socket.can_recv() {
        let written = socket.recv(|buf| match Pin::new(&mut *host).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => (n, Poll::Ready(Ok(n))),
            Poll::Ready(Err(e)) => (0, Poll::Ready(Err(e))),
            Poll::Pending => (0, Poll::Pending),
        });
        match written {
            Ok(Poll::Ready(Ok(0))) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Poll::Ready(Ok(_))) => {}
            Ok(Poll::Ready(Err(e))) => return Err(e),
            Ok(Poll::Pending) | Err(_) => return Ok(()),
        }
    }
    if guest_finished_sending(socket.state()) {
        match Pin::new(&mut *host).poll_shutdown(cx) {
            Poll::Ready(Ok(())) => *shutdown = true,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {}
        }
    }
    Ok(())
}

fn pump_to_guest(
    socket: &mut tcp::Socket<'_>,
    host: &mut HostStream,
    cx: &mut Context<'_>,
    eof: &mut bool,
) -> io::Result<()> {
    while !*eof && socket.can_send() {
        let read = socket.send(|buf| {
            if buf.is_empty() {
                // can_send() promises room; an empty window here would read as end-of-file.
                return (0, Poll::Pending);
            }
            let mut read = ReadBuf::new(buf);
            match Pin::new(&mut *host).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    (n, Poll::Ready(Ok(n)))
                }
                Poll::Ready(Err(e)) => (0, Poll::Ready(Err(e))),
                Poll::Pending => (0, Poll::Pending),
            }
        });
        match read {
            Ok(Poll::Ready(Ok(0))) => {
                *eof = true;
                socket.close();
            }
            Ok(Poll::Ready(Ok(_))) => {}
            Ok(Poll::Ready(Err(e))) => return Err(e),
            Ok(Poll::Pending) | Err(_) => break,
        }
    }
    Ok(())
}
