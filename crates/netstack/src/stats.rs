//! Counters a caller can read while the stack runs (for metrics and tests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) tcp_flows: AtomicU64,
    pub(crate) udp_flows: AtomicU64,
    pub(crate) peak_flows: AtomicU64,
    pub(crate) flows_refused_limit: AtomicU64,
    pub(crate) flows_denied: AtomicU64,
    pub(crate) dns_queries: AtomicU64,
    pub(crate) dns_redirected: AtomicU64,
    pub(crate) dns_blocked: AtomicU64,
    pub(crate) dns_rebinding_refused: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
    pub(crate) frames_oversized: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_flows(&self, tcp: usize, udp: usize) {
        self.tcp_flows.store(tcp as u64, Ordering::Relaxed);
        self.udp_flows.store(udp as u64, Ordering::Relaxed);
        self.peak_flows
            .fetch_max((tcp + udp) as u64, Ordering::Relaxed);
    }
}

/// A handle on a stack's counters; cheap to clone, valid after the stack has stopped.
#[derive(Clone, Debug, Default)]
pub struct NetStats(pub(crate) Arc<Counters>);

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStatsSnapshot {
    /// Open TCP flows, guest-initiated and published-port ones (each holds at most one host socket).
    pub tcp_flows: u64,
    /// Open UDP flows (each holds one host socket).
    pub udp_flows: u64,
    /// The most flows open at once.
    pub peak_flows: u64,
    /// Flows refused because `limits.max_flows` were open.
    pub flows_refused_limit: u64,
    /// Flows the policy denied, and DNS over TCP, TLS or QUIC refused.
    pub flows_denied: u64,
    /// DNS queries the stack answered (to the gateway or to any other address).
    pub dns_queries: u64,
    /// Of those, queries the guest sent to a server other than the gateway: answered by the
    /// stack all the same, never relayed.
    pub dns_redirected: u64,
    /// Queries answered NXDOMAIN because a name was blocked.
    pub dns_blocked: u64,
    /// Upstream answers refused because they carried addresses the policy denies.
    pub dns_rebinding_refused: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Frames from the guest that were malformed, oversized, not for the gateway, or not
    /// supported.
    pub frames_dropped: u64,
    /// Of those, frames longer than the link's MTU allows (dropped, or skipped unread when
    /// longer than [`crate::link::MAX_FRAME_LEN`]).
    pub frames_oversized: u64,
    /// Ethernet frame bytes the guest sent (its transmitted bytes), oversized frames included.
    pub bytes_in: u64,
    /// Ethernet frame bytes sent to the guest (its received bytes).
    pub bytes_out: u64,
}

impl NetStats {
    pub fn snapshot(&self) -> NetStatsSnapshot {
        let c = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetStatsSnapshot {
            tcp_flows: get(&c.tcp_flows),
            udp_flows: get(&c.udp_flows),
            peak_flows: get(&c.peak_flows),
            flows_refused_limit: get(&c.flows_refused_limit),
            flows_denied: get(&c.flows_denied),
            dns_queries: get(&c.dns_queries),
            dns_redirected: get(&c.dns_redirected),
            dns_blocked: get(&c.dns_blocked),
            dns_rebinding_refused: get(&c.dns_rebinding_refused),
            frames_in: get(&c.frames_in),
            frames_out: get(&c.frames_out),
            frames_dropped: get(&c.frames_dropped),
            frames_oversized: get(&c.frames_oversized),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
        }
    }
}
