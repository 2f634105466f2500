//! A sandbox's network configuration: plain data the engine builds from the
//! caller's options and the runtime's stack (`msb-netstack`) enforces.
//! [`NetConfig::validate`] checks it before anything is bound or started; what
//! a policy *decides* for a destination is evaluated in `msb_netstack::policy`,
//! whose module doc states the evaluation order.
//!
//! The guest's side of the link is fixed: [`GUEST_IPV4`]/[`PREFIX_LEN`] behind
//! the gateway [`GATEWAY_IPV4`] (also its DNS server), MAC [`GUEST_MAC`], MTU
//! [`MTU`] (the reasons are in `msb-netstack`'s crate doc).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The guest's address.
pub const GUEST_IPV4: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 2);
/// The gateway's address; also the guest's DNS server.
pub const GATEWAY_IPV4: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 1);
/// The guest's prefix length: a /30 holding just the guest and the gateway.
pub const PREFIX_LEN: u8 = 30;
/// The guest's MAC (locally administered), to pass to the VMM.
pub const GUEST_MAC: [u8; 6] = [0x02, 0x6d, 0x73, 0x62, 0x00, 0x02];
/// The guest interface's MTU: 64 KiB frames on a link that never touches a
/// real network (measured in `msb-netstack`'s crate doc).
pub const MTU: usize = 65520;

/// [`GUEST_MAC`] as the VMM's `mac=` option takes it (`02-6d-73-62-00-02`).
pub fn guest_mac_string() -> String {
    GUEST_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join("-")
}

/// What happens to destinations no rule matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Allow only publicly routable addresses (`msb_netstack::policy::classify`). The default.
    #[default]
    PublicOnly,
    /// Allow every destination.
    AllowAll,
    /// Allow nothing; rules are ignored. DNS answers only from the hosts table.
    None,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyKind::PublicOnly => "public-only",
            PolicyKind::AllowAll => "allow-all",
            PolicyKind::None => "none",
        })
    }
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Allow,
    Deny,
}

/// The transport protocol a rule applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
}

/// An inclusive range of ports; a single port is `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

/// One allow or deny rule. Every matcher that is set must match (they combine with AND); a rule
/// with no matcher matches every destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub action: Action,
    /// Destination address range. IPv4 ranges also match IPv4-mapped IPv6 destinations.
    #[serde(default)]
    pub cidr: Option<IpNet>,
    /// Destination port(s).
    #[serde(default)]
    pub ports: Option<PortRange>,
    #[serde(default)]
    pub protocol: Protocol,
    /// A name this sandbox resolved to the destination address, exactly.
    #[serde(default)]
    pub domain: Option<String>,
    /// A name this sandbox resolved to the destination address, by suffix (the matching rule is in `msb_netstack::policy`).
    #[serde(default)]
    pub domain_suffix: Option<String>,
}

impl Rule {
    /// A rule that allows everything until matchers are added.
    pub fn allow() -> Rule {
        Rule::new(Action::Allow)
    }

    /// A rule that denies everything until matchers are added.
    pub fn deny() -> Rule {
        Rule::new(Action::Deny)
    }

    fn new(action: Action) -> Rule {
        Rule {
            action,
            cidr: None,
            ports: None,
            protocol: Protocol::Any,
            domain: None,
            domain_suffix: None,
        }
    }

    pub fn cidr(mut self, cidr: IpNet) -> Rule {
        self.cidr = Some(cidr);
        self
    }

    pub fn port(self, port: u16) -> Rule {
        self.ports(port, port)
    }

    pub fn ports(mut self, start: u16, end: u16) -> Rule {
        self.ports = Some(PortRange { start, end });
        self
    }

    pub fn protocol(mut self, protocol: Protocol) -> Rule {
        self.protocol = protocol;
        self
    }

    pub fn domain(mut self, name: &str) -> Rule {
        self.domain = Some(name.to_owned());
        self
    }

    pub fn domain_suffix(mut self, suffix: &str) -> Rule {
        self.domain_suffix = Some(suffix.to_owned());
        self
    }
}

/// A sandbox's network policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub default: PolicyKind,
    /// Evaluated in order; the first match decides.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Names answered NXDOMAIN by the stack's DNS, exactly (case-insensitive).
    #[serde(default)]
    pub block_domains: Vec<String>,
    /// Names answered NXDOMAIN by suffix (the matching rule is in `msb_netstack::policy`).
    #[serde(default)]
    pub block_domain_suffixes: Vec<String>,
    /// Destinations resolved from these exact names are allowed (after the rules, before the
    /// default). They also vouch for the addresses those names resolve to (no rebinding refusal).
    #[serde(default)]
    pub allow_domains: Vec<String>,
}

/// Everything the runtime's network stack (`msb_netstack::NetStack::new`) needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NetConfig {
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub dns: DnsConfig,
    /// Host ports published to guest ports.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub limits: Limits,
    /// The network log (denied flows, blocked queries). `None` keeps only counters and tracing.
    #[serde(default)]
    pub log_path: Option<PathBuf>,
}

/// The stack's DNS server (it listens on UDP port 53 of the gateway address).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Names answered locally, never forwarded. Matched exactly (case-insensitive, trailing dot
    /// ignored). An A query gets the IPv4 addresses, an AAAA query the IPv6 ones.
    #[serde(default)]
    pub hosts: Vec<(String, Vec<IpAddr>)>,
    /// Servers other queries are forwarded to, in order of preference. [`Default`] reads them
    /// from the host's `/etc/resolv.conf`; an empty list answers SERVFAIL to every query that is
    /// not in `hosts`.
    #[serde(default = "system_nameservers")]
    pub upstream: Vec<SocketAddr>,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            hosts: Vec::new(),
            upstream: system_nameservers(),
        }
    }
}

/// The `nameserver` entries of the host's `/etc/resolv.conf`, on port 53; empty when the file is
/// missing or names none.
pub fn system_nameservers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| parse_resolv_conf(&text))
        .unwrap_or_default()
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => {
                    // Scoped IPv6 addresses (`fe80::1%eth0`) cannot be expressed as IpAddr.
                    addr.parse::<IpAddr>()
                        .ok()
                        .map(|ip| SocketAddr::new(ip, 53))
                }
                _ => None,
            }
        })
        .collect()
}

/// A host address whose connections are relayed to a guest port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Where the host listens, e.g. `127.0.0.1:8080`. Port 0 picks a free port
    /// (the stack reports the port it bound).
    pub host: SocketAddr,
    pub guest_port: u16,
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// Published ports are TCP only for now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortProtocol {
    #[default]
    Tcp,
}

/// Bounds on what one guest can make the host hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Concurrent TCP and UDP flows (each holds one host socket). Flows beyond it are refused:
    /// TCP with a reset, UDP by dropping the datagram. Each refusal is counted and logged.
    pub max_flows: usize,
    /// Bytes of each TCP flow's receive and of its send buffer inside the stack. The host side
    /// is read only while the send buffer toward the guest has room (backpressure), and the
    /// guest's window closes while the host does not take the bytes.
    pub tcp_buffer: usize,
    /// How long a host `connect` may take before the guest gets a reset.
    pub tcp_connect_timeout: Duration,
    /// A UDP flow with no datagram in either direction for this long is closed.
    pub udp_idle_timeout: Duration,
    /// Per upstream server; the next server is tried after it.
    pub dns_timeout: Duration,
    /// Forwarded DNS queries in flight (each holds one host socket). Beyond it: SERVFAIL.
    pub max_dns_inflight: usize,
    /// Addresses remembered with the names they were resolved from (for domain rules).
    pub max_resolved_addresses: usize,
    /// The network log is rotated to `<log>.1` past this size, so it takes at most twice this.
    pub max_log_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_flows: 256,
            tcp_buffer: 256 * 1024,
            tcp_connect_timeout: Duration::from_secs(10),
            udp_idle_timeout: Duration::from_secs(60),
            dns_timeout: Duration::from_secs(3),
            max_dns_inflight: 64,
            max_resolved_addresses: 4096,
            max_log_bytes: 1024 * 1024,
        }
    }
}

/// A configuration value that cannot be used. `field` names it the way the config spells it.
#[derive(Debug, thiserror::Error)]
#[error("invalid network config `{field}`: {problem}")]
pub struct ConfigError {
    pub field: String,
    pub problem: &'static str,
}

fn invalid(field: impl Into<String>, problem: &'static str) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem,
    }
}

fn check_name(field: String, name: &str) -> Result<(), ConfigError> {
    let bare = name.strip_prefix('.').unwrap_or(name);
    let bare = bare.strip_suffix('.').unwrap_or(bare);
    if bare.is_empty() {
        return Err(invalid(field, "empty domain name"));
    }
    // Letters, digits, '-' and '_' (service labels), 1..=63 per label: what a
    // resolver can be asked for. Anything else could never match a query.
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if bare.len() > 253 || !bare.split('.').all(label_ok) {
        return Err(invalid(field, "not a domain name"));
    }
    Ok(())
}

impl NetConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let policy = &self.policy;
        for (i, rule) in policy.rules.iter().enumerate() {
            if let Some(ports) = rule.ports {
                if ports.start > ports.end {
                    return Err(invalid(format!("policy.rules[{i}].ports"), "start > end"));
                }
            }
            if let Some(name) = &rule.domain {
                check_name(format!("policy.rules[{i}].domain"), name)?;
            }
            if let Some(name) = &rule.domain_suffix {
                check_name(format!("policy.rules[{i}].domain_suffix"), name)?;
            }
        }
        for (list, field) in [
            (&policy.block_domains, "policy.block_domains"),
            (
                &policy.block_domain_suffixes,
                "policy.block_domain_suffixes",
            ),
            (&policy.allow_domains, "policy.allow_domains"),
        ] {
            for (i, name) in list.iter().enumerate() {
                check_name(format!("{field}[{i}]"), name)?;
            }
        }
        for (i, (name, _)) in self.dns.hosts.iter().enumerate() {
            check_name(format!("dns.hosts[{i}]"), name)?;
        }
        for (i, mapping) in self.ports.iter().enumerate() {
            if mapping.guest_port == 0 {
                return Err(invalid(format!("ports[{i}].guest_port"), "must not be 0"));
            }
            let duplicate = self.ports[..i]
                .iter()
                .any(|other| other.host == mapping.host && mapping.host.port() != 0);
            if duplicate {
                return Err(invalid(format!("ports[{i}].host"), "published twice"));
            }
        }
        let limits = &self.limits;
        if limits.max_flows == 0 {
            return Err(invalid("limits.max_flows", "must be at least 1"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&limits.tcp_buffer) {
            return Err(invalid(
                "limits.tcp_buffer",
                "must be between 1 KiB and 16 MiB",
            ));
        }
        if limits.max_dns_inflight == 0 {
            return Err(invalid("limits.max_dns_inflight", "must be at least 1"));
        }
        for (value, field) in [
            (limits.tcp_connect_timeout, "limits.tcp_connect_timeout"),
            (limits.udp_idle_timeout, "limits.udp_idle_timeout"),
            (limits.dns_timeout, "limits.dns_timeout"),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must not be zero"));
            }
        }
        if limits.max_log_bytes < 4096 {
            return Err(invalid("limits.max_log_bytes", "must be at least 4096"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_mac_is_written_as_the_vmm_takes_it() {
        assert_eq!(guest_mac_string(), "02-6d-73-62-00-02");
    }

    #[test]
    fn resolv_conf() {
        let text = "# comment\nnameserver 192.0.2.1\nnameserver  2001:db8::1\nnameserver fe80::1%eth0\nsearch x\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn validation() {
        let ok = NetConfig {
            dns: DnsConfig {
                hosts: vec![],
                upstream: vec![],
            },
            ..NetConfig::default()
        };
        ok.validate().unwrap();
        let mut bad = ok.clone();
        bad.policy.rules.push(Rule::allow().ports(9, 1));
        assert_eq!(bad.validate().unwrap_err().field, "policy.rules[0].ports");
        let mut bad = ok.clone();
        bad.policy.block_domain_suffixes.push(".".into());
        assert_eq!(
            bad.validate().unwrap_err().field,
            "policy.block_domain_suffixes[0]"
        );
        for name in ["bad name!", "a..b", &format!("{}.test", "x".repeat(64))] {
            let mut bad = ok.clone();
            bad.policy.block_domains.push(name.to_string());
            assert_eq!(
                bad.validate().unwrap_err().field,
                "policy.block_domains[0]",
                "{name}"
            );
        }
        let mut fine = ok.clone();
        fine.policy.block_domains = vec!["_dmarc.example.test".into(), ".Ads-1.example.".into()];
        fine.validate().unwrap();
        let mut bad = ok.clone();
        bad.ports.push(PortMapping {
            host: "127.0.0.1:1".parse().unwrap(),
            guest_port: 0,
            protocol: PortProtocol::Tcp,
        });
        assert_eq!(bad.validate().unwrap_err().field, "ports[0].guest_port");
        let mut bad = ok;
        bad.limits.max_flows = 0;
        assert!(bad.validate().is_err());
    }
}
