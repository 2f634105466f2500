//! The host side of a sandbox's network.
//!
//! The guest's only network interface is a virtio-net device whose frames the VMM hands to this
//! stack (QEMU: `-netdev stream,id=net0,addr.type=fd,addr.str=N -device
//! virtio-net-device,netdev=net0,mac=`[`GUEST_MAC`]). There is no bridge, tap or NAT on the host:
//! the stack terminates every TCP and UDP flow the guest opens and re-originates it from an
//! ordinary host socket, after the [`Policy`] has allowed its destination. So the guest reaches
//! nothing the policy did not allow, whatever it sends.
//!
//! # The guest's network
//! Static configuration (the guest agent sets it; there is no DHCP):
//!
//! | | |
//! |---|---|
//! | guest address | [`GUEST_IPV4`]/[`PREFIX_LEN`] (`100.96.0.2/30`), MAC [`GUEST_MAC`] |
//! | gateway, DNS server | [`GATEWAY_IPV4`] (`100.96.0.1`), MAC [`GATEWAY_MAC`] |
//! | MTU | [`MTU`] |
//!
//! The /30 sits in the CGNAT block (`100.64.0.0/10`), which sandboxes never need to reach
//! (`public-only` denies it) and test networks (10/8, 172.16/12, 192.168/16, documentation
//! ranges) do not use, so no destination a guest may want is ever "on link". The gateway
//! answers ARP and ICMP echo for its own address only, and serves DNS on UDP port 53. Any other
//! TCP port of the gateway address stands for the host itself: the flow goes to the host's
//! `127.0.0.1` on that port, and the policy judges it as a loopback destination (`public-only`
//! denies it; a rule allowing `127.0.0.1` and a port opens exactly that port). The addresses of
//! the host's own interfaces are the host too (class `host`, treated like loopback): the stack
//! lists them when it is created and again when it judges a flow with a list older than two
//! seconds (`hostaddrs`).
//! IPv6 is not routed yet (IPv6 frames are dropped; the stack offers the guest no IPv6 address
//! or route); AAAA queries are answered like any other, and policy classification already
//! handles IPv6 and IPv4-mapped addresses.
//!
//! # Policy
//! See [`policy`] for the evaluation order. Under `none`, no flow leaves and DNS answers only
//! from the hosts table; published ports still work (they are connections *into* the guest,
//! asked for by the sandbox's owner). Every denied flow and blocked query is written to the
//! network log ([`NetConfig::log_path`], format in `netlog`).
//!
//! Name-based policy (block lists, domain rules) holds only if the guest resolves through the
//! stack, so DNS never leaves any other way: a query to UDP port 53 of *any* address is answered
//! by the stack's own DNS, from the address the guest asked (nothing on port 53 is relayed), and
//! DNS over TCP (port 53), TLS (TCP 853) and QUIC (UDP 853) is refused before any rule is
//! consulted, and logged (`enforce`).
//!
//! # Threading model
//! [`NetStack::run`] is a single future, polled by whichever task awaits it (the sandbox
//! runtime spawns it on its current-thread tokio runtime, next to its other tasks). That task
//! owns everything: the smoltcp interface and sockets, every host socket (`TcpStream`,
//! `UdpSocket`), the published-port listeners and the DNS forwards in flight. There are no other
//! tasks, no channels and no locks held across awaits; bytes move directly between smoltcp's
//! buffers and the host sockets, which is what makes backpressure exact (see `tcp`).
//!
//! Why not a task per flow: a flow's two halves (smoltcp socket, host socket) would then live
//! in different tasks, with a queue between them that must be bounded and drained and a second
//! wake-up path to tell the stack that room freed up; here the host socket is read straight into
//! the smoltcp send buffer's free space and nothing else exists to bound. Host sockets are still
//! tokio sockets, driven by the same runtime's reactor.
//!
//! The one exception is a flow intercepted for secrets (`intercept`, only in a sandbox that
//! has secrets): TLS has to be terminated and re-originated, which is a future of its own, so
//! that flow's host socket moves to a task of its own (spawned on the same current-thread
//! runtime) running `msb_secrets::Interceptor::intercept`. The task and the flow's relay meet
//! through an in-memory duplex of `intercept::DUPLEX_BUFFER` (64 KiB) each way: the stack's
//! task drives its end exactly like a host socket (same wakers, same backpressure), the
//! interception task drives the other end and the upstream socket. Violations come back to the
//! stack through a bounded queue (`intercept::EVENT_QUEUE`), drained into the network log on
//! each poll.
//!
//! What wakes it:
//! - the link: a frame from the guest arrives, or room frees up to write frames to it;
//! - a flow: each flow has its own waker, registered with its host socket (readable, writable,
//!   connected) and with its smoltcp socket (data, window or state changed). Waking it queues
//!   the flow's id and wakes the task, which then services only the queued flows;
//! - a published-port listener accepting, a DNS forward finishing;
//! - a timer: smoltcp's next deadline (retransmission, zero-window probe), and a sweep once a second
//!   (idle UDP flows, expired names, and a look at every flow).
//!
//! One poll processes at most a bounded number of frames and rounds, then yields (waking itself),
//! so a busy guest cannot starve the runtime's other tasks.
//!
//! The one blocking call the task makes is listing the host's addresses (`getifaddrs`, a netlink
//! dump sized by the host's interfaces): at most once every two seconds, and only when a flow or
//! a DNS answer is being judged, never while the guest is idle.
//!
//! # Bounds (what a hostile guest can make the host hold)
//! - Flows: at most `limits.max_flows` TCP and UDP flows in all, each with at most one host
//!   socket; beyond it a SYN gets a reset and a datagram is dropped (both counted and logged).
//!   A host connect only starts after the policy and the limit allowed it. DNS forwards: at most
//!   `limits.max_dns_inflight`, one host socket each.
//! - Memory: two buffers of `limits.tcp_buffer` bytes per TCP flow (lazily backed by the OS),
//!   a 256 KiB queue toward the link (when it is full the stack stops reading guest frames), one
//!   frame of UDP in flight, the names map (`limits.max_resolved_addresses`), the log (rotated at
//!   `limits.max_log_bytes`), and the list of the host's addresses (as many as the host has; the
//!   guest cannot add to it).
//! - Interception (only in a sandbox with secrets): a deciding flow holds the guest's first bytes
//!   in its own receive buffer (peeked, at most `MAX_CLIENT_HELLO`, 16 KiB); an intercepted flow
//!   adds its duplex (`intercept::DUPLEX_BUFFER`, 64 KiB each way) and the per-connection bounds
//!   of `msb_secrets` (request heads, the rewriter's look-behind, a body held for rewriting);
//!   intercepted flows count against `limits.max_flows` like any other; violation events wait in
//!   a queue of `intercept::EVENT_QUEUE` (64).
//! - Frames: the link buffers at most two frames of [`link::MAX_FRAME_LEN`] bytes. The guest
//!   chooses its frames' sizes (it can raise its MTU to 65535), so no frame can end the link: one
//!   longer than [`link::MAX_FRAME_LEN`] is skipped as its bytes arrive, never buffered, and one
//!   longer than [`MTU`] plus the Ethernet header is dropped before anything parses it. Both are
//!   counted; only the link failing or closing stops the stack.
//!
//! # What is counted ([`NetStats`])
//! Flows open (TCP, UDP, the peak), flows refused for the limit, flows denied (by the policy, or
//! as DNS over TCP, TLS or QUIC), DNS queries answered (and of those, queries the guest sent to
//! another server: `dns_redirected`), names blocked, answers refused as rebinding, frames in and
//! out, and guest frames dropped (malformed, not for the gateway, unsupported, oversized), with
//! the oversized ones also counted on their own.

mod device;
mod dns;
mod enforce;
mod flow;
mod hostaddrs;
mod intercept;
pub mod link;
mod names;
mod netlog;
mod packet;
pub mod policy;
mod ready;
mod stack;
mod stats;
mod tcp;
mod udp;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use smoltcp::wire::EthernetAddress;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

pub use intercept::{Interception, SecretKill};
pub use link::RunError;
// The configuration is plain data from the contract crate (the engine builds it without linking
// this stack); re-exported so that users of the stack need no second import.
pub use msb_control::net::{
    system_nameservers, ConfigError, DnsConfig, Limits, NetConfig, PortMapping, PortProtocol,
    GATEWAY_IPV4, GUEST_IPV4, MTU, PREFIX_LEN,
};
pub use policy::{Action, Policy, PolicyEval, PolicyKind, PortRange, Protocol, Rule};
pub use stats::{NetStats, NetStatsSnapshot};

// The guest's addresses ([`GUEST_IPV4`], [`PREFIX_LEN`], [`GATEWAY_IPV4`]) and [`MTU`] are in
// `msb_control::net`, because the engine hands them to the guest agent.
//
// Why [`MTU`] is 65520: the link is a virtual wire to the VMM, never a real network, so it
// carries 64 KiB frames (as passt does): a bulk TCP transfer costs the TCG-emulated guest a
// fortieth of the segments a 1500-byte MTU would. Host sockets on the far side segment for their
// own paths. Measured (benchmark/RESULTS.md, the two development runs of 2026-11-25):
// host-to-guest bulk 102 MB/s at 1500, 206 MB/s at 65520.

/// The guest's MAC (locally administered), as the VMM is given it.
pub const GUEST_MAC: EthernetAddress = EthernetAddress(msb_control::net::GUEST_MAC);
/// The gateway's MAC.
pub const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x02, 0x6d, 0x73, 0x62, 0x00, 0x01]);
pub(crate) const ETHERNET_HEADER_LEN: usize = 14;

/// Why [`NetStack::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A published port's host address is taken.
    #[error("host address {addr} is already in use")]
    PortInUse {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on host address {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the network log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The host's own addresses, which the policy must know (see [`policy`]), cannot be listed.
    #[error("cannot list the host's network addresses")]
    HostAddresses(#[source] io::Error),
}

/// A sandbox's network stack, ready to serve a link.
pub struct NetStack {
    parts: stack::Parts,
    stats: NetStats,
}

impl NetStack {
    /// Validates `config`, binds every published port and opens the network log, so that a taken
    /// port ([`NetError::PortInUse`]) is reported when the sandbox is created, not when the
    /// guest first uses it.
    pub async fn new(config: NetConfig) -> Result<NetStack, NetError> {
        config.validate()?;
        let mut listeners = Vec::with_capacity(config.ports.len());
        for &mapping in &config.ports {
            let addr = mapping.host;
            let listener = TcpListener::bind(addr).await.map_err(|source| {
                if source.kind() == io::ErrorKind::AddrInUse {
                    NetError::PortInUse { addr, source }
                } else {
                    NetError::Bind { addr, source }
                }
            })?;
            listeners.push(stack::Published { mapping, listener });
        }
        let log = netlog::NetLog::open(config.log_path.as_deref(), config.limits.max_log_bytes)
            .map_err(|source| NetError::Log {
                path: config.log_path.clone().unwrap_or_default(),
                source,
            })?;
        let host = hostaddrs::HostAddrs::new(std::time::Instant::now())
            .map_err(NetError::HostAddresses)?;
        let stats = NetStats::default();
        let limits = config.limits;
        let parts = stack::Parts {
            enforcer: enforce::Enforcer {
                policy: config.policy,
                names: names::ResolvedNames::new(limits.max_resolved_addresses),
                host,
                log,
                stats: Arc::clone(&stats.0),
            },
            dns: dns::DnsServer::new(&config.dns, limits.dns_timeout, limits.max_dns_inflight),
            listeners,
            limits,
            intercepts: None,
        };
        Ok(NetStack { parts, stats })
    }

    /// Intercepts TLS for the sandbox's secrets (see `intercept`). Without this call no flow's
    /// bytes are looked at.
    pub fn with_interception(mut self, interception: Interception) -> NetStack {
        self.parts.intercepts = Some(intercept::Intercepts::new(interception));
        self
    }

    /// The stack's counters; the handle stays valid while and after it runs.
    pub fn stats(&self) -> NetStats {
        self.stats.clone()
    }

    /// Each published port with the host address it is bound to (the actual port when the
    /// mapping asked for port 0).
    pub fn published(&self) -> Vec<(PortMapping, SocketAddr)> {
        self.parts
            .listeners
            .iter()
            .filter_map(|p| Some((p.mapping, p.listener.local_addr().ok()?)))
            .collect()
    }

    /// Serves the guest on `link` (length-prefixed Ethernet frames, see [`link`]) until the VMM
    /// closes it: `Ok(())`. Dropping the future stops the stack and closes every host socket.
    pub async fn run<L: AsyncRead + AsyncWrite + Unpin>(self, link: L) -> Result<(), RunError> {
        let mut link = link::StreamLink::new(link);
        let mut engine = stack::Engine::new(self.parts);
        poll_fn(|cx| engine.poll_run(cx, &mut link)).await
    }
}
