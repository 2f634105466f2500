//! Network policy: which destinations a guest may reach.
//!
//! Decisions are pure functions of the policy, the destination, the names this sandbox resolved
//! for the destination address through the stack's DNS, and the addresses of the host's own
//! interfaces ([`HostAddresses`], which the stack enumerates and passes in). Nothing here touches a
//! socket, so every rule is unit-tested without packets.
//!
//! # Evaluation order
//! 1. [`PolicyKind::None`]: every destination is denied; rules are not consulted ("nothing leaves
//!    the VM" is absolute).
//! 2. [`Policy::rules`], in order: the first rule whose matchers all match decides.
//! 3. [`Policy::allow_domains`]: a destination whose address was resolved from one of these names
//!    is allowed.
//! 4. The default: [`PolicyKind::AllowAll`] allows; [`PolicyKind::PublicOnly`] allows an address
//!    only if [`classify_with`] says it is [`AddressClass::Public`].
//!
//! IPv4-mapped IPv6 destinations (`::ffff:a.b.c.d`) are evaluated as the IPv4 address they carry,
//! for rules and for the default alike.
//!
//! # The host
//! The host itself is never a public destination, whatever its address looks like: an address of
//! one of its own interfaces (its LAN address, or a public address it holds) reaches the services it
//! has bound on `0.0.0.0` just as `127.0.0.1` does. Such an address is classed
//! [`AddressClass::Host`] and is treated exactly like loopback: `public-only` denies it, `allow-all`
//! allows it, and a rule (or `allow_domains`) that matches it decides before the default, so
//! `Rule::allow().cidr(<host address>/32).port(p)` opens exactly that port.
//!
//! # Domain names
//! A domain matcher never looks at a name the guest *claims*; it matches only names that this
//! sandbox resolved to the destination address through the stack (the stack's `names` map). A guest
//! that hard-codes an address therefore never matches a domain rule. Names compare
//! case-insensitively and without a trailing dot. A suffix `evil.test` (a leading dot is accepted
//! and ignored: `.evil.test` is the same suffix) matches `evil.test` itself and every name that
//! ends in `.evil.test`, but not `notevil.test`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use msb_control::net::{Action, Policy, PolicyKind, PortRange, Protocol, Rule};

/// The transport protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        })
    }
}

/// Whether the address-level matchers (CIDR, domain, suffix) match.
fn matches_address(rule: &Rule, ip: IpAddr, names: &[String]) -> bool {
    if let Some(cidr) = &rule.cidr {
        if !cidr.contains(&ip) {
            return false;
        }
    }
    if let Some(domain) = &rule.domain {
        let domain = normalize_name(domain);
        if !names.iter().any(|n| normalize_name(n) == domain) {
            return false;
        }
    }
    if let Some(suffix) = &rule.domain_suffix {
        if !names.iter().any(|n| name_has_suffix(n, suffix)) {
            return false;
        }
    }
    true
}

/// Whether the rule is restricted by port or protocol.
fn is_conditional(rule: &Rule) -> bool {
    rule.ports.is_some() || rule.protocol != Protocol::Any
}

fn matches(rule: &Rule, dst: &Destination, names: &[String]) -> bool {
    if let Some(ports) = &rule.ports {
        if !ports.contains(dst.port) {
            return false;
        }
    }
    let protocol_ok = match rule.protocol {
        Protocol::Any => true,
        Protocol::Tcp => dst.transport == Transport::Tcp,
        Protocol::Udp => dst.transport == Transport::Udp,
    };
    protocol_ok && matches_address(rule, dst.ip, names)
}

/// The addresses of the host's own interfaces: a destination among them is the host itself
/// ([`AddressClass::Host`]). Plain data; the stack enumerates the interfaces and refreshes it.
/// Stored canonical (IPv4-mapped IPv6 addresses as IPv4), sorted, without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAddresses(Vec<IpAddr>);

impl HostAddresses {
    /// Whether `ip` is one of the host's addresses, also when written as an IPv6 form that
    /// embeds it (IPv4-mapped, NAT64, 6to4: see [`classify`]).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        [Some(ip), embedded]
            .into_iter()
            .flatten()
            .any(|ip| self.0.binary_search(&ip).is_ok())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<IpAddr> for HostAddresses {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> HostAddresses {
        let mut addrs: Vec<IpAddr> = iter.into_iter().map(canonical).collect();
        addrs.sort_unstable();
        addrs.dedup();
        HostAddresses(addrs)
    }
}

/// Where a guest wants to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    pub ip: IpAddr,
    pub port: u16,
    pub transport: Transport,
}

/// Why a decision was made; written to the network log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `rules[index]` matched.
    Rule { index: usize },
    /// The address was resolved from a name in `allow_domains`.
    AllowDomain,
    /// No rule matched; the policy's default decided, given the address's class.
    Default {
        kind: PolicyKind,
        class: AddressClass,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Rule { index } => write!(f, "rule[{index}]"),
            Reason::AllowDomain => f.write_str("allow_domains"),
            Reason::Default { kind, class } => write!(f, "default {kind} ({class})"),
        }
    }
}

/// A policy decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

/// What a [`Policy`] decides. The policy is plain data (`msb_control::net`, built by the engine);
/// evaluating it is the stack's business, so the rules live here, in the order the module doc
/// gives.
pub trait PolicyEval {
    /// Decides whether the guest may open a flow to `dst`. `names` are the names this sandbox
    /// resolved to `dst.ip` through the stack (empty when it resolved none); `host` the
    /// addresses of the host's own interfaces.
    fn decide(&self, dst: &Destination, names: &[String], host: &HostAddresses) -> Decision;

    /// Decides whether a DNS answer may carry `ip` for a query whose CNAME chain is `names`
    /// (DNS rebinding protection); see the implementation for the walk.
    fn admits_answer(&self, ip: IpAddr, names: &[String], host: &HostAddresses) -> Decision;

    /// Whether the stack's DNS answers `name` with NXDOMAIN.
    fn blocks_name(&self, name: &str) -> bool;
}

impl PolicyEval for Policy {
    /// Decides whether the guest may open a flow to `dst`. `names` are the names this sandbox
    /// resolved to `dst.ip` through the stack (empty when it resolved none); `host` the
    /// addresses of the host's own interfaces.
    fn decide(&self, dst: &Destination, names: &[String], host: &HostAddresses) -> Decision {
        let dst = Destination {
            ip: canonical(dst.ip),
            ..*dst
        };
        let class = classify_with(dst.ip, host);
        if self.default == PolicyKind::None {
            return Decision {
                action: Action::Deny,
                reason: Reason::Default {
                    kind: PolicyKind::None,
                    class,
                },
            };
        }
        if let Some((index, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| matches(rule, &dst, names))
        {
            return Decision {
                action: rule.action,
                reason: Reason::Rule { index },
            };
        }
        if resolved_from_allowed_domain(self, names) {
            return Decision {
                action: Action::Allow,
                reason: Reason::AllowDomain,
            };
        }
        default_decision(self, class)
    }

    /// Decides whether a DNS answer may carry `ip` for a query whose CNAME chain is `names`
    /// (DNS rebinding protection). An address is admitted when *some* flow to it could be
    /// allowed: rules are walked in order; an allow rule whose address matchers match admits it
    /// (its port or protocol restrictions are enforced later, per flow); a deny rule whose
    /// address matchers match refuses it only if it has no port or protocol restriction; then
    /// `allow_domains`, then the default.
    fn admits_answer(&self, ip: IpAddr, names: &[String], host: &HostAddresses) -> Decision {
        let ip = canonical(ip);
        let class = classify_with(ip, host);
        if self.default == PolicyKind::None {
            return default_decision(self, class);
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if !matches_address(rule, ip, names) {
                continue;
            }
            match rule.action {
                Action::Allow => {
                    return Decision {
                        action: Action::Allow,
                        reason: Reason::Rule { index },
                    }
                }
                Action::Deny if !is_conditional(rule) => {
                    return Decision {
                        action: Action::Deny,
                        reason: Reason::Rule { index },
                    }
                }
                Action::Deny => {}
            }
        }
        if resolved_from_allowed_domain(self, names) {
            return Decision {
                action: Action::Allow,
                reason: Reason::AllowDomain,
            };
        }
        default_decision(self, class)
    }

    /// Whether the stack's DNS answers `name` with NXDOMAIN.
    fn blocks_name(&self, name: &str) -> bool {
        let name = normalize_name(name);
        self.block_domains
            .iter()
            .any(|blocked| normalize_name(blocked) == name)
            || self
                .block_domain_suffixes
                .iter()
                .any(|suffix| name_has_suffix(&name, suffix))
    }
}

fn resolved_from_allowed_domain(policy: &Policy, names: &[String]) -> bool {
    !names.is_empty()
        && policy.allow_domains.iter().any(|allowed| {
            let allowed = normalize_name(allowed);
            names.iter().any(|n| normalize_name(n) == allowed)
        })
}

fn default_decision(policy: &Policy, class: AddressClass) -> Decision {
    let allowed = match policy.default {
        PolicyKind::AllowAll => true,
        PolicyKind::PublicOnly => class == AddressClass::Public,
        PolicyKind::None => false,
    };
    Decision {
        action: if allowed { Action::Allow } else { Action::Deny },
        reason: Reason::Default {
            kind: policy.default,
            class,
        },
    }
}

/// Lower-case ASCII view of a DNS name without its trailing dot. Names come from DNS packets and
/// user config; non-ASCII bytes are compared as they are.
pub(crate) fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// `name` equals `suffix` or ends with `.suffix`, on label boundaries, ignoring case, a trailing
/// dot on either and a leading dot on `suffix`.
pub(crate) fn name_has_suffix(name: &str, suffix: &str) -> bool {
    let name = normalize_name(name);
    let suffix = normalize_name(suffix.strip_prefix('.').unwrap_or(suffix));
    if suffix.is_empty() {
        return false;
    }
    name == suffix
        || (name.len() > suffix.len()
            && name.ends_with(&suffix)
            && name.as_bytes()[name.len() - suffix.len() - 1] == b'.')
}

/// What kind of address this is, as far as `public-only` is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), IPv6 unique-local `fc00::/7` and the
    /// deprecated site-local `fec0::/10`.
    Private,
    /// `169.254.0.0/16` (including the `169.254.169.254` metadata address), `fe80::/10`.
    LinkLocal,
    /// Carrier-grade NAT shared space `100.64.0.0/10`.
    Cgnat,
    /// An address of one of the host's own interfaces (see [`HostAddresses`]), whatever range
    /// it is in: the host itself, like loopback.
    Host,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Other special-purpose space no sandbox has a reason to reach: `240.0.0.0/4`,
    /// `192.0.0.0/24`, `198.18.0.0/15`, IPv4-compatible `::a.b.c.d`, discard-only `100::/64`.
    Reserved,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Public => "public",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Cgnat => "cgnat",
            AddressClass::Host => "host",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
        })
    }
}

/// IPv4-mapped IPv6 addresses become the IPv4 address they carry; everything else is unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Classifies an address as seen from a host whose own interfaces hold `host`: one of them is
/// [`AddressClass::Host`], unless [`classify`] already calls it loopback or unspecified (which
/// stand for the host too, and say so more precisely).
pub fn classify_with(ip: IpAddr, host: &HostAddresses) -> AddressClass {
    match classify(ip) {
        class @ (AddressClass::Loopback | AddressClass::Unspecified) => class,
        _ if host.contains(ip) => AddressClass::Host,
        class => class,
    }
}

/// Classifies an address by its range alone (never [`AddressClass::Host`]: see
/// [`classify_with`]). IPv6 forms that embed an IPv4 address (mapped `::ffff:0:0/96`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) take the class of the embedded address, since a host with
/// such translation routes them to it.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    if in_v4(ip, [0, 0, 0, 0], 8) {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if in_v4(ip, [100, 64, 0, 0], 10) {
        AddressClass::Cgnat
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if in_v4(ip, [240, 0, 0, 0], 4)
        || in_v4(ip, [192, 0, 0, 0], 24)
        || in_v4(ip, [198, 18, 0, 0], 15)
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// The IPv4 address that an IPv4-mapped, NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address
/// carries: a host with such translation routes the IPv6 form to it.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let seg = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // NAT64 well-known prefix.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(embedded(seg[6], seg[7]));
    }
    // 6to4: the IPv4 address follows the 16-bit prefix.
    if seg[0] == 0x2002 {
        return Some(embedded(seg[1], seg[2]));
    }
    None
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = embedded_ipv4(ip) {
        return classify_v4(v4);
    }
    // Deprecated IPv4-compatible addresses (`::a.b.c.d`).
    if seg[..6] == [0; 6] {
        return AddressClass::Reserved;
    }
    if seg[..4] == [0x100, 0, 0, 0] {
        return AddressClass::Reserved;
    }
    match seg[0] {
        s if s & 0xfe00 == 0xfc00 => AddressClass::Private,
        s if s & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        s if s & 0xffc0 == 0xfec0 => AddressClass::Private,
        s if s & 0xff00 == 0xff00 => AddressClass::Multicast,
        _ => AddressClass::Public,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(ip: &str, port: u16) -> Destination {
        Destination {
            ip: ip.parse().unwrap(),
            port,
            transport: Transport::Tcp,
        }
    }

    fn udp(ip: &str, port: u16) -> Destination {
        Destination {
            transport: Transport::Udp,
            ..tcp(ip, port)
        }
    }

    /// No host addresses (the host is then only loopback).
    fn no_host() -> HostAddresses {
        HostAddresses::default()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const DENIED_BY_PUBLIC_ONLY: &[(&str, AddressClass)] = &[
        ("127.0.0.1", AddressClass::Loopback),
        ("127.255.255.254", AddressClass::Loopback),
        ("10.0.0.1", AddressClass::Private),
        ("10.255.255.255", AddressClass::Private),
        ("172.16.0.1", AddressClass::Private),
        ("172.31.255.254", AddressClass::Private),
        ("192.168.1.1", AddressClass::Private),
        ("169.254.169.254", AddressClass::LinkLocal),
        ("169.254.0.1", AddressClass::LinkLocal),
        ("100.64.0.1", AddressClass::Cgnat),
        ("100.127.255.254", AddressClass::Cgnat),
        ("224.0.0.1", AddressClass::Multicast),
        ("239.255.255.250", AddressClass::Multicast),
        ("255.255.255.255", AddressClass::Broadcast),
        ("0.0.0.0", AddressClass::Unspecified),
        ("0.1.2.3", AddressClass::Unspecified),
        ("240.0.0.1", AddressClass::Reserved),
        ("::1", AddressClass::Loopback),
        ("::", AddressClass::Unspecified),
        ("fc00::1", AddressClass::Private),
        ("fd12:3456::1", AddressClass::Private),
        ("fe80::1", AddressClass::LinkLocal),
        ("febf::1", AddressClass::LinkLocal),
        ("fec0::1", AddressClass::Private),
        ("ff02::1", AddressClass::Multicast),
        ("ff0e::1", AddressClass::Multicast),
        ("::ffff:127.0.0.1", AddressClass::Loopback),
        ("::ffff:10.1.2.3", AddressClass::Private),
        ("::ffff:172.16.0.1", AddressClass::Private),
        ("::ffff:192.168.0.1", AddressClass::Private),
        ("::ffff:169.254.169.254", AddressClass::LinkLocal),
        ("::ffff:100.64.0.1", AddressClass::Cgnat),
        ("::ffff:224.0.0.1", AddressClass::Multicast),
        ("::ffff:255.255.255.255", AddressClass::Broadcast),
        ("::ffff:0.0.0.0", AddressClass::Unspecified),
        ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
        ("64:ff9b::7f00:1", AddressClass::Loopback),
        ("2002:c0a8:0101::1", AddressClass::Private),
        ("::127.0.0.1", AddressClass::Reserved),
    ];

    const PUBLIC: &[&str] = &[
        "1.1.1.1",
        "8.8.8.8",
        "198.51.100.7",
        "203.0.113.9",
        "100.128.0.1",
        "100.63.255.255",
        "172.32.0.1",
        "172.15.255.255",
        "169.253.0.1",
        "11.0.0.1",
        "2606:4700:4700::1111",
        "2001:db8::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:0808:0808::1",
    ];

    #[test]
    fn public_only_denies_every_special_range() {
        let policy = Policy::default();
        for (ip, class) in DENIED_BY_PUBLIC_ONLY {
            let decision = policy.decide(&tcp(ip, 443), &[], &no_host());
            assert_eq!(classify(ip.parse().unwrap()), *class, "{ip}");
            assert_eq!(decision.action, Action::Deny, "{ip}");
            assert_eq!(
                decision.reason,
                Reason::Default {
                    kind: PolicyKind::PublicOnly,
                    class: *class
                },
                "{ip}"
            );
        }
    }

    #[test]
    fn public_only_allows_public_addresses() {
        let policy = Policy::default();
        for ip in PUBLIC {
            assert_eq!(classify(ip.parse().unwrap()), AddressClass::Public, "{ip}");
            assert!(
                policy.decide(&tcp(ip, 443), &[], &no_host()).is_allowed(),
                "{ip}"
            );
            assert!(
                policy.decide(&udp(ip, 53), &[], &no_host()).is_allowed(),
                "{ip}"
            );
        }
    }

    #[test]
    fn allow_all_allows_everything() {
        let policy = Policy {
            default: PolicyKind::AllowAll,
            ..Policy::default()
        };
        for (ip, _) in DENIED_BY_PUBLIC_ONLY {
            assert!(
                policy.decide(&tcp(ip, 1), &[], &no_host()).is_allowed(),
                "{ip}"
            );
        }
        for ip in PUBLIC {
            assert!(
                policy.decide(&udp(ip, 1), &[], &no_host()).is_allowed(),
                "{ip}"
            );
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_the_host() {
        let host: HostAddresses = ["203.0.113.7", "10.1.1.1", "2001:db8::7", "127.0.0.1"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let public_only = Policy::default();
        let forms = [
            "203.0.113.7",
            "::ffff:203.0.113.7",
            "64:ff9b::cb00:7107",
            "2002:cb00:7107::1",
            "10.1.1.1",
            "2001:db8::7",
        ];
        for ip in forms {
            assert_eq!(
                classify_with(ip.parse().unwrap(), &host),
                AddressClass::Host,
                "{ip}"
            );
            let d = public_only.decide(&tcp(ip, 22), &[], &host);
            assert_eq!(
                (d.action, d.reason),
                (
                    Action::Deny,
                    Reason::Default {
                        kind: PolicyKind::PublicOnly,
                        class: AddressClass::Host
                    }
                ),
                "{ip}"
            );
            assert!(!public_only
                .admits_answer(ip.parse().unwrap(), &[], &host)
                .is_allowed());
        }
        // Loopback says so more precisely; a neighbour of a host address is what it is.
        assert_eq!(
            classify_with("127.0.0.1".parse().unwrap(), &host),
            AddressClass::Loopback
        );
        assert!(public_only
            .decide(&tcp("203.0.113.8", 22), &[], &host)
            .is_allowed());
        // allow-all allows the host, as it allows loopback; none denies it.
        let allow_all = Policy {
            default: PolicyKind::AllowAll,
            ..Policy::default()
        };
        assert!(allow_all
            .decide(&tcp("203.0.113.7", 22), &[], &host)
            .is_allowed());
        let none = Policy {
            default: PolicyKind::None,
            rules: vec![Rule::allow()],
            ..Policy::default()
        };
        assert!(!none
            .decide(&tcp("203.0.113.7", 22), &[], &host)
            .is_allowed());
        // A rule for the address opens exactly its port, as for loopback.
        let rule = Policy {
            rules: vec![Rule::allow()
                .cidr("203.0.113.7/32".parse().unwrap())
                .port(8080)],
            ..Policy::default()
        };
        assert!(rule
            .decide(&tcp("203.0.113.7", 8080), &[], &host)
            .is_allowed());
        assert!(!rule
            .decide(&tcp("203.0.113.7", 8081), &[], &host)
            .is_allowed());
    }

    #[test]
    fn none_denies_everything_even_with_allow_rules() {
        let policy = Policy {
            default: PolicyKind::None,
            rules: vec![Rule::allow()],
            allow_domains: names(&["example.com"]),
            ..Policy::default()
        };
        for ip in PUBLIC {
            let d = policy.decide(&tcp(ip, 443), &names(&["example.com"]), &no_host());
            assert_eq!(d.action, Action::Deny, "{ip}");
            assert!(matches!(
                d.reason,
                Reason::Default {
                    kind: PolicyKind::None,
                    ..
                }
            ));
            assert!(!policy
                .admits_answer(ip.parse().unwrap(), &[], &no_host())
                .is_allowed());
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let policy = Policy {
            rules: vec![
                Rule::deny().cidr("8.8.8.0/24".parse().unwrap()).port(53),
                Rule::allow().cidr("8.8.0.0/16".parse().unwrap()),
                Rule::deny().cidr("8.0.0.0/8".parse().unwrap()),
            ],
            ..Policy::default()
        };
        let d = policy.decide(&udp("8.8.8.8", 53), &[], &no_host());
        assert_eq!(
            (d.action, d.reason),
            (Action::Deny, Reason::Rule { index: 0 })
        );
        let d = policy.decide(&udp("8.8.8.8", 54), &[], &no_host());
        assert_eq!(
            (d.action, d.reason),
            (Action::Allow, Reason::Rule { index: 1 })
        );
        let d = policy.decide(&tcp("8.9.0.1", 80), &[], &no_host());
        assert_eq!(
            (d.action, d.reason),
            (Action::Deny, Reason::Rule { index: 2 })
        );
        // No rule matches: the default decides.
        let d = policy.decide(&tcp("9.9.9.9", 80), &[], &no_host());
        assert!(d.is_allowed());
        assert!(matches!(d.reason, Reason::Default { .. }));
    }

    #[test]
    fn cidr_port_and_protocol_matchers_combine() {
        let policy = Policy {
            rules: vec![Rule::allow()
                .cidr("127.0.0.1/32".parse().unwrap())
                .ports(8000, 8080)
                .protocol(Protocol::Tcp)],
            ..Policy::default()
        };
        assert!(policy
            .decide(&tcp("127.0.0.1", 8000), &[], &no_host())
            .is_allowed());
        assert!(policy
            .decide(&tcp("127.0.0.1", 8080), &[], &no_host())
            .is_allowed());
        assert!(!policy
            .decide(&tcp("127.0.0.1", 8081), &[], &no_host())
            .is_allowed());
        assert!(!policy
            .decide(&tcp("127.0.0.1", 7999), &[], &no_host())
            .is_allowed());
        assert!(!policy
            .decide(&udp("127.0.0.1", 8000), &[], &no_host())
            .is_allowed());
        assert!(!policy
            .decide(&tcp("127.0.0.2", 8000), &[], &no_host())
            .is_allowed());
        // An IPv4 rule also matches the IPv4-mapped form.
        assert!(policy
            .decide(&tcp("::ffff:127.0.0.1", 8000), &[], &no_host())
            .is_allowed());
    }

    #[test]
    fn udp_protocol_rule() {
        let policy = Policy {
            default: PolicyKind::AllowAll,
            rules: vec![Rule::deny().protocol(Protocol::Udp)],
            ..Policy::default()
        };
        assert!(!policy
            .decide(&udp("1.1.1.1", 53), &[], &no_host())
            .is_allowed());
        assert!(policy
            .decide(&tcp("1.1.1.1", 53), &[], &no_host())
            .is_allowed());
    }

    #[test]
    fn deny_rules_override_allow_all_and_public() {
        let policy = Policy {
            default: PolicyKind::AllowAll,
            rules: vec![Rule::deny().cidr("203.0.113.0/24".parse().unwrap())],
            ..Policy::default()
        };
        assert!(!policy
            .decide(&tcp("203.0.113.5", 443), &[], &no_host())
            .is_allowed());
        assert!(policy
            .decide(&tcp("203.0.114.5", 443), &[], &no_host())
            .is_allowed());
    }

    #[test]
    fn domain_rules_need_a_resolution() {
        let policy = Policy {
            rules: vec![Rule::allow().domain("internal.example")],
            ..Policy::default()
        };
        // The same private address: denied when not resolved, allowed when resolved from the name.
        assert!(!policy
            .decide(&tcp("10.1.2.3", 443), &[], &no_host())
            .is_allowed());
        assert!(!policy
            .decide(
                &tcp("10.1.2.3", 443),
                &names(&["other.example"]),
                &no_host()
            )
            .is_allowed());
        let d = policy.decide(
            &tcp("10.1.2.3", 443),
            &names(&["Internal.Example."]),
            &no_host(),
        );
        assert_eq!(
            (d.action, d.reason),
            (Action::Allow, Reason::Rule { index: 0 })
        );
    }

    #[test]
    fn domain_suffix_rules_match_on_label_boundaries() {
        let policy = Policy {
            default: PolicyKind::AllowAll,
            rules: vec![Rule::deny().domain_suffix(".evil.test")],
            ..Policy::default()
        };
        let ip = "198.51.100.1";
        assert!(!policy
            .decide(&tcp(ip, 80), &names(&["evil.test"]), &no_host())
            .is_allowed());
        assert!(!policy
            .decide(&tcp(ip, 80), &names(&["a.b.EVIL.test"]), &no_host())
            .is_allowed());
        assert!(policy
            .decide(&tcp(ip, 80), &names(&["notevil.test"]), &no_host())
            .is_allowed());
        assert!(policy.decide(&tcp(ip, 80), &[], &no_host()).is_allowed());
    }

    #[test]
    fn domain_and_cidr_combine() {
        let policy = Policy {
            rules: vec![Rule::allow()
                .domain_suffix("corp.example")
                .cidr("10.0.0.0/8".parse().unwrap())],
            ..Policy::default()
        };
        assert!(policy
            .decide(
                &tcp("10.0.0.5", 22),
                &names(&["git.corp.example"]),
                &no_host()
            )
            .is_allowed());
        assert!(!policy
            .decide(
                &tcp("192.168.0.5", 22),
                &names(&["git.corp.example"]),
                &no_host()
            )
            .is_allowed());
    }

    #[test]
    fn allow_domains_apply_after_rules() {
        let policy = Policy {
            rules: vec![Rule::deny().port(25)],
            allow_domains: names(&["db.internal"]),
            ..Policy::default()
        };
        let resolved = names(&["db.internal"]);
        let d = policy.decide(&tcp("10.9.9.9", 5432), &resolved, &no_host());
        assert_eq!((d.action, d.reason), (Action::Allow, Reason::AllowDomain));
        assert!(!policy
            .decide(&tcp("10.9.9.9", 25), &resolved, &no_host())
            .is_allowed());
        assert!(!policy
            .decide(&tcp("10.9.9.9", 5432), &[], &no_host())
            .is_allowed());
    }

    #[test]
    fn block_lists() {
        let policy = Policy {
            block_domains: names(&["exact.test"]),
            block_domain_suffixes: names(&[".evil.test", "bad.example."]),
            ..Policy::default()
        };
        assert!(policy.blocks_name("exact.test"));
        assert!(policy.blocks_name("EXACT.test."));
        assert!(!policy.blocks_name("sub.exact.test"));
        assert!(policy.blocks_name("evil.test"));
        assert!(policy.blocks_name("a.evil.test"));
        assert!(policy.blocks_name("x.y.bad.example"));
        assert!(!policy.blocks_name("notevil.test"));
        assert!(!policy.blocks_name("evil.test.com"));
        assert!(!policy.blocks_name("good.test"));
    }

    #[test]
    fn rebinding_answers() {
        let public_only = Policy::default();
        assert!(!public_only
            .admits_answer("127.0.0.1".parse().unwrap(), &[], &no_host())
            .is_allowed());
        assert!(!public_only
            .admits_answer("::ffff:10.0.0.1".parse().unwrap(), &[], &no_host())
            .is_allowed());
        assert!(public_only
            .admits_answer("93.184.216.34".parse().unwrap(), &[], &no_host())
            .is_allowed());
        let allow_all = Policy {
            default: PolicyKind::AllowAll,
            ..Policy::default()
        };
        assert!(allow_all
            .admits_answer("127.0.0.1".parse().unwrap(), &[], &no_host())
            .is_allowed());
        // A port-restricted allow rule admits the address (the port is checked per flow);
        // a port-restricted deny rule does not refuse it.
        let rules = Policy {
            default: PolicyKind::AllowAll,
            rules: vec![
                Rule::allow().cidr("10.0.0.0/8".parse().unwrap()).port(443),
                Rule::deny()
                    .cidr("203.0.113.0/24".parse().unwrap())
                    .port(25),
                Rule::deny().cidr("198.51.100.0/24".parse().unwrap()),
            ],
            ..Policy::default()
        };
        assert!(rules
            .admits_answer("10.0.0.1".parse().unwrap(), &[], &no_host())
            .is_allowed());
        assert!(rules
            .admits_answer("203.0.113.1".parse().unwrap(), &[], &no_host())
            .is_allowed());
        assert!(!rules
            .admits_answer("198.51.100.1".parse().unwrap(), &[], &no_host())
            .is_allowed());
        // A domain allow rule vouches for the addresses its names resolve to.
        let domain = Policy {
            rules: vec![Rule::allow().domain("intranet.example")],
            ..Policy::default()
        };
        assert!(domain
            .admits_answer(
                "10.0.0.1".parse().unwrap(),
                &names(&["intranet.example"]),
                &no_host()
            )
            .is_allowed());
        assert!(!domain
            .admits_answer(
                "10.0.0.1".parse().unwrap(),
                &names(&["other.example"]),
                &no_host()
            )
            .is_allowed());
    }

    #[test]
    fn serde_shape() {
        let policy: Policy = serde_json::from_str(
            r#"{"default":"allow-all","rules":[{"action":"deny","cidr":"10.0.0.0/8","ports":{"start":1,"end":1024},"protocol":"tcp"}]}"#,
        )
        .unwrap();
        assert_eq!(policy.default, PolicyKind::AllowAll);
        assert_eq!(
            policy.rules[0],
            Rule::deny()
                .cidr("10.0.0.0/8".parse().unwrap())
                .ports(1, 1024)
                .protocol(Protocol::Tcp)
        );
    }
}
