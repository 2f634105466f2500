//! A flow's identity, shared by the stack (which keys its flow tables by it) and the TCP and
//! UDP flows (which carry their own); a module of its own so that neither side imports the other.

use std::net::SocketAddrV4;

/// A flow as the guest sees it: its own port and the remote endpoint (for published ports, the
/// gateway's ephemeral port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub(crate) guest_port: u16,
    pub(crate) remote: SocketAddrV4,
}
