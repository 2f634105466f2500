//! The addresses of the host's own interfaces, which the policy treats as the host itself
//! ([`AddressClass::Host`](crate::policy::AddressClass::Host)): a service the host bound on
//! `0.0.0.0` answers on every one of them, not only on `127.0.0.1`.
//!
//! They are listed with `getifaddrs(3)` when the stack is created (a failure there fails
//! [`crate::NetStack::new`]: the stack does not start without knowing what the host is), and
//! listed again when a flow or a DNS answer is judged and the list is older than [`REFRESH`], so an
//! address the host gains (DHCP, a new interface) is the host within that long. Nothing is
//! listed while the guest is idle. A later listing that fails (say, no file descriptor is left for
//! its netlink socket) keeps the previous list and is retried at the next judgement after
//! [`REFRESH`]: addresses only ever go stale, never missing.
//!
//! The listing runs on the stack's task. It is one netlink dump, so its cost grows with the
//! host's interfaces, not with anything the guest does, and it runs at most once per [`REFRESH`].

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::policy::HostAddresses;

/// How old the list may be when a flow is judged.
pub(crate) const REFRESH: Duration = Duration::from_secs(2);

/// The host's addresses as last listed.
pub(crate) struct HostAddrs {
    current: HostAddresses,
    listed: Instant,
}

impl HostAddrs {
    /// Lists the host's addresses now.
    pub(crate) fn new(now: Instant) -> io::Result<HostAddrs> {
        Ok(HostAddrs {
            current: list()?,
            listed: now,
        })
    }

    /// The host's addresses, listed again first if the list is older than [`REFRESH`].
    pub(crate) fn get(&mut self, now: Instant) -> &HostAddresses {
        if now.saturating_duration_since(self.listed) >= REFRESH {
            match list() {
                Ok(addrs) => self.current = addrs,
                Err(error) => {
                    tracing::warn!(%error, "cannot list the host's addresses; keeping the last list")
                }
            }
            self.listed = now;
        }
        &self.current
    }
}

/// Every address of every interface of the host (loopback included, which the policy already
/// knows as such), IPv4 and IPv6.
pub(crate) fn list() -> io::Result<HostAddresses> {
    let interfaces = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(interfaces
        .filter_map(|interface| {
            let address = interface.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_loopback_and_refreshes_when_stale() {
        let start = Instant::now();
        let mut addrs = HostAddrs::new(start).unwrap();
        // Every Linux host has lo; its address is in the list like any other.
        assert!(addrs.get(start).contains("127.0.0.1".parse().unwrap()));
        // A stale list is replaced by a fresh one (here: the same interfaces).
        addrs.current = HostAddresses::default();
        assert!(addrs.get(start + REFRESH / 2).is_empty());
        assert!(addrs
            .get(start + REFRESH)
            .contains("127.0.0.1".parse().unwrap()));
    }
}
