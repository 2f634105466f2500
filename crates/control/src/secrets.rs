//! A sandbox's secrets as the engine hands them to its runtime: plain data, validated for
//! shape by the engine and in full by the runtime (`msb-secrets`), which is the only process
//! that ever holds the values in clear.
//!
//! The values travel only inside [`crate::BootSpec`] over the control socket, in memory. They
//! are never serialized anywhere else (not the state database, not a log), and [`SecretValue`]
//! prints `<redacted>` and is zeroed when dropped.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A secret's value: zeroed on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> SecretValue {
        SecretValue(Zeroizing::new(value.into()))
    }

    /// The clear value: for the runtime, which hands it to the rewriter.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Serializes the clear value: only [`crate::BootSpec`], on the control socket, carries it.
impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SecretValue, D::Error> {
        String::deserialize(deserializer).map(SecretValue::new)
    }
}

/// Where in a request a placeholder may be replaced (`secretEnv.NAME.locations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretLocation {
    Headers,
    BasicAuth,
    Path,
    Query,
    Body,
}

/// What happens when a placeholder goes where it may not (`secretEnv.NAME.onViolation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnViolation {
    Block,
    #[default]
    BlockAndLog,
    BlockAndKill,
}

/// One secret environment variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnv {
    pub name: String,
    pub value: SecretValue,
    /// Exact names and `*.suffix` wildcards.
    pub domains: Vec<String>,
    /// `None`: the runtime generates one.
    pub placeholder: Option<String>,
    pub locations: Vec<SecretLocation>,
    pub on_violation: OnViolation,
    pub require_tls: bool,
}

/// Which TLS flows the runtime intercepts (`network.tls.intercept`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterceptMode {
    /// Only flows to a host some secret allows.
    #[default]
    SecretsOnly,
    /// Every TLS flow with a server name (but `bypass_domains`): values are still substituted
    /// only where their secrets allow, and a placeholder sent anywhere else is a violation.
    All,
    /// None: secrets are then never substituted.
    Off,
}

/// A sandbox's secrets and how its TLS is intercepted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsConfig {
    pub secrets: Vec<SecretEnv>,
    pub intercept: InterceptMode,
    /// Names never intercepted (exact names and `*.suffix`).
    pub bypass_domains: Vec<String>,
    /// More trust anchors for the upstream side (PEM), besides the host's own.
    pub ca_certificates: Vec<String>,
}

impl SecretsConfig {
    /// Whether anything is to be intercepted at all.
    pub fn intercepts(&self) -> bool {
        match self.intercept {
            InterceptMode::SecretsOnly => !self.secrets.is_empty(),
            InterceptMode::All => true,
            InterceptMode::Off => false,
        }
    }
}

/// Whether `host` (lower case, no trailing dot) matches a pattern list of exact names and
/// `*.suffix` wildcards (a wildcard matches names under the suffix, not the suffix itself).
pub fn domain_matches(patterns: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    patterns.iter().any(|pattern| {
        let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
            None => host == pattern,
        }
    })
}

/// Whether `name` is a DNS name a secret or bypass list may hold: labels of letters, digits,
/// `-` and `_`, at most 63 bytes each and 253 in all, optionally led by a `*.` wildcard with at
/// least two labels after it; not an IP address.
pub fn is_domain_pattern(name: &str) -> bool {
    let bare = name.strip_suffix('.').unwrap_or(name);
    let (wildcard, rest) = match bare.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, bare),
    };
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !rest.is_empty()
        && rest.len() <= 253
        && rest.parse::<std::net::IpAddr>().is_err()
        && rest.split('.').all(label_ok)
        && (!wildcard || rest.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_redacted() {
        let env = SecretEnv {
            name: "K".into(),
            value: SecretValue::new("sk-hidden"),
            domains: vec!["a.example".into()],
            placeholder: None,
            locations: vec![SecretLocation::Headers],
            on_violation: OnViolation::BlockAndLog,
            require_tls: true,
        };
        let shown = format!(
            "{:?}",
            SecretsConfig {
                secrets: vec![env],
                ..SecretsConfig::default()
            }
        );
        assert!(
            !shown.contains("sk-hidden") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn domains() {
        let list = vec!["api.example.com".to_string(), "*.corp.example".to_string()];
        assert!(domain_matches(&list, "API.example.com."));
        assert!(domain_matches(&list, "a.b.corp.example"));
        assert!(!domain_matches(&list, "corp.example"));
        assert!(!domain_matches(&list, "xcorp.example"));
        assert!(is_domain_pattern("api.openai.com"));
        assert!(is_domain_pattern("*.openai.com"));
        for bad in ["", "*.com", "a b", "10.0.0.1", "a..b", "*", "x.*.y"] {
            assert!(!is_domain_pattern(bad), "{bad:?}");
        }
    }
}
