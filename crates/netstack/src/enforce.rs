//! The policy together with what it needs to decide and to report: the names this sandbox
//! resolved, the host's own addresses, the network log and the counters. Owned by the stack's
//! task; TCP, UDP and DNS handling all go through it so that every denial is logged and counted
//! the same way.
//!
//! # DNS that would bypass the sandbox's resolver
//! Block lists and domain rules hold only if every name the guest resolves goes through the
//! stack's DNS. UDP port 53 to any address is therefore answered by the stack itself (see
//! `stack::Engine::on_dns_query`), and what cannot be answered is refused here before the policy is
//! asked, so no rule can open it: DNS over TCP (port 53: the stack serves DNS over UDP only),
//! DNS over TLS (TCP port 853) and DNS over QUIC (UDP port 853). Each refusal is a `deny` line in
//! the network log naming which. DNS over HTTPS cannot be told from other HTTPS and is not
//! covered.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::hostaddrs::HostAddrs;
use crate::names::ResolvedNames;
use crate::netlog::{EventKind, NetLog};
use crate::policy::{Decision, Destination, Policy, PolicyEval, Transport};
use crate::stats::Counters;

pub(crate) struct Enforcer {
    pub(crate) policy: Policy,
    pub(crate) names: ResolvedNames,
    pub(crate) host: HostAddrs,
    pub(crate) log: NetLog,
    pub(crate) stats: Arc<Counters>,
}

/// The DNS transport a flow to `port` would be, if it is one the stack refuses (see the module
/// docs); the name is the reason in the network log.
pub(crate) fn refused_dns_transport(port: u16, transport: Transport) -> Option<&'static str> {
    match (transport, port) {
        (Transport::Tcp, 53) => Some("dns-over-tcp"),
        (Transport::Tcp, 853) => Some("dns-over-tls"),
        (Transport::Udp, 853) => Some("dns-over-quic"),
        _ => None,
    }
}

impl Enforcer {
    /// Whether the guest may open a flow to `dst` (the host-side destination);
    /// a denial is logged and counted. `addressed` is the address the guest
    /// used: domain rules match the names it was resolved from (they differ
    /// for the gateway, which stands for the host's loopback).
    pub(crate) fn allow_flow(
        &mut self,
        dst: SocketAddr,
        addressed: IpAddr,
        transport: Transport,
        now: Instant,
    ) -> bool {
        if let Some(dns) = refused_dns_transport(dst.port(), transport) {
            Counters::add(&self.stats.flows_denied, 1);
            self.log
                .record(EventKind::Deny, &transport.to_string(), &dst, &dns);
            return false;
        }
        let names = self.names.lookup(addressed, now);
        let decision = self.policy.decide(
            &Destination {
                ip: dst.ip(),
                port: dst.port(),
                transport,
            },
            &names,
            self.host.get(now),
        );
        if !decision.is_allowed() {
            Counters::add(&self.stats.flows_denied, 1);
            self.log.record(
                EventKind::Deny,
                &transport.to_string(),
                &dst,
                &decision.reason,
            );
        }
        decision.is_allowed()
    }

    /// Whether a DNS answer may carry `ip` (see [`PolicyEval::admits_answer`]).
    pub(crate) fn admits_answer(&mut self, ip: IpAddr, names: &[String], now: Instant) -> Decision {
        let host = self.host.get(now);
        self.policy.admits_answer(ip, names, host)
    }

    /// Logs and counts a flow refused because the flow table is full.
    pub(crate) fn refuse_for_limit(&mut self, dst: SocketAddr, transport: Transport) {
        Counters::add(&self.stats.flows_refused_limit, 1);
        self.log.record(
            EventKind::Limit,
            &transport.to_string(),
            &dst,
            &"limits.max_flows",
        );
    }

    pub(crate) fn record_dns(
        &mut self,
        kind: EventKind,
        name: &dyn fmt::Display,
        reason: &dyn fmt::Display,
    ) {
        self.log.record(kind, "dns", name, reason);
    }
}
