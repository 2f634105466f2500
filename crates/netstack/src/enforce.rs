//! The policy together with what it needs to decide and to report: the names this sandbox
//! resolved, the network log and the counters. Owned by the stack's task; TCP, UDP and DNS
//! handling all go through it so that every denial is logged and counted the same way.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::names::ResolvedNames;
use crate::netlog::{EventKind, NetLog};
use crate::policy::{Destination, Policy, Transport};
use crate::stats::Counters;

pub(crate) struct Enforcer {
    pub(crate) policy: Policy,
    pub(crate) names: ResolvedNames,
    pub(crate) log: NetLog,
    pub(crate) stats: Arc<Counters>,
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
        let names = self.names.lookup(addressed, now);
        let decision = self.policy.decide(
            &Destination {
                ip: dst.ip(),
                port: dst.port(),
                transport,
            },
            &names,
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
