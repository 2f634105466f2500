//! Network options as callers give them, validated into the stack's config
//! ([`msb_control::net::NetConfig`], which the runtime's stack enforces) and
//! the guest's interface settings.
//!
//! Defaults: policy `public-only`, DNS forwarded to the host's nameservers,
//! no published ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use msb_control::files::NETWORK_LOG;
use msb_control::net::{
    self, DnsConfig, Limits, NetConfig, Policy, PolicyKind, PortMapping, PortProtocol, Protocol,
    Rule,
};
use msb_protocol::GuestNetwork;

use super::secrets::TlsOptions;
use crate::error::InvalidOption;

/// The fields of a network rule as callers give them, listed once:
/// `$callback!` receives the required and the optional fields (all strings,
/// validated by [`NetworkOptions::build`]). The engine defines [`RuleOptions`]
/// with it; the napi layer defines its JavaScript object type and the
/// conversion into [`RuleOptions`], so the two cannot drift.
// Docs are `#[doc = "..."]` with plain strings: they reach the generated
// TypeScript typings through the napi layer, which copies literals verbatim.
#[macro_export]
macro_rules! for_each_rule_option {
    ($callback:ident) => {
        $callback! {
            required {
                #[doc = "'allow' or 'deny'."]
                action,
            }
            optional {
                #[doc = "An address or a CIDR range."]
                cidr,
                #[doc = "A port ('443') or an inclusive range ('8000-8100')."]
                ports,
                #[doc = "'tcp', 'udp' or 'any' (default)."]
                protocol,
                #[doc = "A name this sandbox resolved to the destination, exactly."]
                domain,
                #[doc = "A name this sandbox resolved to the destination, by suffix."]
                domain_suffix,
            }
        }
    };
}

macro_rules! define_rule_options {
    (
        required { $($(#[doc = $rdoc:tt])* $required:ident,)* }
        optional { $($(#[doc = $odoc:tt])* $optional:ident,)* }
    ) => {
        /// One allow or deny rule as callers give it.
        #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct RuleOptions {
            $($(#[doc = $rdoc])* pub $required: String,)*
            $($(#[doc = $odoc])* pub $optional: Option<String>,)*
        }
    };
}

for_each_rule_option!(define_rule_options);

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetworkOptions {
    /// "public-only" (default), "allow-all" or "none".
    pub policy: Option<String>,
    pub rules: Vec<RuleOptions>,
    pub block_domains: Vec<String>,
    pub block_domain_suffixes: Vec<String>,
    pub allow_domains: Vec<String>,
    /// Names the stack's DNS answers itself: name, addresses.
    pub hosts: Vec<(String, Vec<String>)>,
    /// Upstream DNS servers (`ip` or `ip:port`); `None`: the host's resolv.conf.
    pub dns_servers: Option<Vec<String>>,
    /// Concurrent flows a sandbox may hold (default 256).
    pub max_flows: Option<f64>,
    /// TLS interception for secrets (validated with `secretEnv`, see [`super::secrets`]).
    pub tls: TlsOptions,
}

/// Host port (0 picks a free one) published to a guest port.
pub type PortOption = (f64, f64);

/// What a validated network becomes.
pub struct Network {
    pub stack: NetConfig,
    pub guest: GuestNetwork,
}

fn port(field: &str, value: f64, allow_zero: bool) -> Result<u16, InvalidOption> {
    let min = if allow_zero { 0.0 } else { 1.0 };
    if value.fract() != 0.0 || !(min..=65535.0).contains(&value) {
        return Err(InvalidOption::new(
            field,
            format!("{value} is not a port number"),
        ));
    }
    Ok(value as u16)
}

fn rule(index: usize, options: &RuleOptions) -> Result<Rule, InvalidOption> {
    let field = |name: &str| format!("network.rules[{index}].{name}");
    let mut rule = match options.action.as_str() {
        "allow" => Rule::allow(),
        "deny" => Rule::deny(),
        other => {
            return Err(InvalidOption::new(
                field("action"),
                format!("{other:?} is not \"allow\" or \"deny\""),
            ))
        }
    };
    if let Some(cidr) = &options.cidr {
        // A bare address means that address alone.
        let parsed = cidr
            .parse()
            .or_else(|_| cidr.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| InvalidOption::new(field("cidr"), format!("{cidr:?} is not a CIDR")))?;
        rule = rule.cidr(parsed);
    }
    if let Some(ports) = &options.ports {
        let bad = || {
            InvalidOption::new(
                field("ports"),
                format!("{ports:?} is not a port or a range"),
            )
        };
        let (start, end) = match ports.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u16>(), b.trim().parse::<u16>()),
            None => (ports.trim().parse::<u16>(), ports.trim().parse::<u16>()),
        };
        let (start, end) = (start.map_err(|_| bad())?, end.map_err(|_| bad())?);
        if start == 0 || start > end {
            return Err(bad());
        }
        rule = rule.ports(start, end);
    }
    rule.protocol = match options.protocol.as_deref() {
        None | Some("any") => Protocol::Any,
        Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some(other) => {
            return Err(InvalidOption::new(
                field("protocol"),
                format!("{other:?} is not \"tcp\", \"udp\" or \"any\""),
            ))
        }
    };
    if let Some(domain) = &options.domain {
        rule = rule.domain(domain);
    }
    if let Some(suffix) = &options.domain_suffix {
        rule = rule.domain_suffix(suffix);
    }
    Ok(rule)
}

impl NetworkOptions {
    /// Validates the options; `dir` receives the network log.
    pub fn build(&self, ports: &[PortOption], dir: &Path) -> Result<Network, InvalidOption> {
        let default = match self.policy.as_deref() {
            None | Some("public-only") => PolicyKind::PublicOnly,
            Some("allow-all") => PolicyKind::AllowAll,
            Some("none") => PolicyKind::None,
            Some(other) => {
                return Err(InvalidOption::new(
                    "network.policy",
                    format!("{other:?} is not \"public-only\", \"allow-all\" or \"none\""),
                ))
            }
        };
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let mut hosts = Vec::new();
        for (name, addresses) in &self.hosts {
            let parsed = addresses
                .iter()
                .map(|a| a.parse::<IpAddr>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    InvalidOption::new(
                        format!("network.hosts.{name}"),
                        format!("{addresses:?} are not IP addresses"),
                    )
                })?;
            hosts.push((name.clone(), parsed));
        }
        let upstream = match &self.dns_servers {
            None => net::system_nameservers(),
            Some(servers) => servers
                .iter()
                .map(|s| {
                    s.parse::<SocketAddr>()
                        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                        .map_err(|_| {
                            InvalidOption::new(
                                "network.dnsServers",
                                format!("{s:?} is not an address"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut limits = Limits::default();
        if let Some(max) = self.max_flows {
            if max.fract() != 0.0 || !(1.0..=65536.0).contains(&max) {
                return Err(InvalidOption::new(
                    "network.maxFlows",
                    format!("must be an integer from 1 to 65536, got {max}"),
                ));
            }
            limits.max_flows = max as usize;
        }
        let ports = ports
            .iter()
            .map(|&(host, guest)| {
                let host = port("ports", host, true)?;
                let guest = port(&format!("ports.{host}"), guest, false)?;
                Ok(PortMapping {
                    host: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), host),
                    guest_port: guest,
                    protocol: PortProtocol::Tcp,
                })
            })
            .collect::<Result<Vec<_>, InvalidOption>>()?;
        let stack = NetConfig {
            policy: Policy {
                default,
                rules,
                block_domains: self.block_domains.clone(),
                block_domain_suffixes: self.block_domain_suffixes.clone(),
                allow_domains: self.allow_domains.clone(),
            },
            dns: DnsConfig { hosts, upstream },
            ports,
            limits,
            log_path: Some(dir.join(NETWORK_LOG)),
        };
        stack
            .validate()
            .map_err(|e| InvalidOption::new(option_field(&e.field), e.problem))?;
        Ok(Network {
            stack,
            guest: stack_guest_network(),
        })
    }
}

/// The interface settings matching the host-side stack.
pub fn stack_guest_network() -> GuestNetwork {
    GuestNetwork {
        address: net::GUEST_IPV4,
        prefix_len: net::PREFIX_LEN,
        gateway: net::GATEWAY_IPV4,
        nameservers: vec![net::GATEWAY_IPV4],
        mtu: net::MTU as u32,
    }
}

/// The guest's MAC as the VMM takes it.
pub fn guest_mac() -> String {
    net::guest_mac_string()
}

/// The stack's name for a config field as the caller spelled the option
/// (`policy.block_domain_suffixes[0]` → `network.blockDomainSuffixes[0]`).
fn option_field(stack_field: &str) -> String {
    let field = stack_field
        .strip_prefix("policy.")
        .or_else(|| stack_field.strip_prefix("dns."))
        .unwrap_or(stack_field);
    if field.starts_with("ports") {
        return camel_case(field);
    }
    format!("network.{}", camel_case(field))
}

/// `block_domain_suffixes[0]` → `blockDomainSuffixes[0]`.
fn camel_case(field: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(options: NetworkOptions, ports: &[PortOption]) -> Result<Network, InvalidOption> {
        options.build(ports, Path::new("/tmp/x"))
    }

    #[test]
    fn defaults_to_public_only_with_the_log_in_the_sandbox_dir() {
        let network = build(NetworkOptions::default(), &[]).unwrap();
        assert_eq!(network.stack.policy.default, PolicyKind::PublicOnly);
        assert_eq!(
            network.stack.log_path.as_deref(),
            Some(Path::new("/tmp/x/network.log"))
        );
        assert_eq!(network.guest.address, net::GUEST_IPV4);
    }

    #[test]
    fn rules_ports_and_hosts_are_parsed_with_field_names_in_errors() {
        let options = NetworkOptions {
            policy: Some("allow-all".into()),
            rules: vec![RuleOptions {
                action: "allow".into(),
                cidr: Some("127.0.0.1".into()),
                ports: Some("8000-8001".into()),
                protocol: Some("tcp".into()),
                ..Default::default()
            }],
            hosts: vec![("api.test".into(), vec!["198.51.100.1".into()])],
            dns_servers: Some(vec!["198.51.100.53".into(), "198.51.100.54:5353".into()]),
            ..Default::default()
        };
        let network = build(options, &[(8080.0, 80.0), (0.0, 22.0)]).unwrap();
        let rule = &network.stack.policy.rules[0];
        assert_eq!(
            rule.ports,
            Some(net::PortRange {
                start: 8000,
                end: 8001
            })
        );
        assert_eq!(rule.cidr.unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(network.stack.ports[0].host.port(), 8080);
        assert_eq!(network.stack.dns.upstream[1].port(), 5353);

        let field = |o: NetworkOptions, p: &[PortOption]| build(o, p).err().unwrap().field;
        assert_eq!(
            field(
                NetworkOptions {
                    policy: Some("open".into()),
                    ..Default::default()
                },
                &[]
            ),
            "network.policy"
        );
        let bad_rule = |r: RuleOptions| NetworkOptions {
            rules: vec![r],
            ..Default::default()
        };
        assert_eq!(
            field(
                bad_rule(RuleOptions {
                    action: "maybe".into(),
                    ..Default::default()
                }),
                &[]
            ),
            "network.rules[0].action"
        );
        assert_eq!(
            field(
                bad_rule(RuleOptions {
                    action: "deny".into(),
                    cidr: Some("10.0.0.0/33".into()),
                    ..Default::default()
                }),
                &[]
            ),
            "network.rules[0].cidr"
        );
        assert_eq!(
            field(
                bad_rule(RuleOptions {
                    action: "deny".into(),
                    ports: Some("9-1".into()),
                    ..Default::default()
                }),
                &[]
            ),
            "network.rules[0].ports"
        );
        assert_eq!(
            field(NetworkOptions::default(), &[(70000.0, 80.0)]),
            "ports"
        );
        assert_eq!(
            field(NetworkOptions::default(), &[(8080.0, 0.0)]),
            "ports.8080"
        );
        assert_eq!(
            field(
                NetworkOptions {
                    block_domain_suffixes: vec!["bad name!".into()],
                    ..Default::default()
                },
                &[]
            ),
            "network.blockDomainSuffixes[0]"
        );
    }
}
