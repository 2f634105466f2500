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

/// Longest accepted secret value. A secret is a token or a key; the bound keeps what one
/// substitution can add to a request small.
pub const MAX_VALUE_LEN: usize = 16 * 1024;
/// Shortest and longest placeholder a caller may choose. Short placeholders would match
/// ordinary text; long ones widen the window every body scan keeps.
pub const MIN_PLACEHOLDER_LEN: usize = 8;
pub const MAX_PLACEHOLDER_LEN: usize = 128;

/// A secret's value: zeroed on drop, redacted in `Debug`, never part of an error. Copies made
/// before it was wrapped (a deserializer's input buffer, a frame) are their owner's to clear.
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
///
/// Headers and Basic auth are the default because servers rarely echo them back; paths,
/// queries and bodies are routinely reflected (error messages, echo endpoints), so each is
/// opt-in per secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretLocation {
    /// Any header value (`Authorization: Bearer …`, `x-api-key: …`), as the literal
    /// placeholder. Header names never.
    Headers,
    /// The password or user inside `Authorization: Basic base64(user:password)`: decoded,
    /// replaced, encoded again.
    BasicAuth,
    /// The request path (e.g. `/bot<token>/sendMessage`); the value is percent-encoded.
    Path,
    /// The query string; the value is percent-encoded.
    Query,
    /// The request body (`Content-Length` or chunked); the value is encoded for the body's
    /// `Content-Type` (JSON string escaping, form percent-encoding, otherwise as is).
    Body,
}

/// What happens when a placeholder goes where it may not (`secretEnv.NAME.onViolation`). The
/// request is never forwarded in any case; this says what else to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnViolation {
    /// Close the connection.
    Block,
    /// Close the connection and write a line to the network log.
    #[default]
    BlockAndLog,
    /// Close the connection, log, and kill the sandbox.
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

/// Lower case, without a trailing dot: the form hosts and patterns are compared in.
pub fn normalize_host(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(bare) => bare.to_owned(),
        None => lower,
    }
}

/// Whether `host` matches a pattern list of exact names and `*.suffix` wildcards (a wildcard
/// matches names under the suffix, at any depth, not the suffix itself). Both sides are
/// compared as [`normalize_host`] leaves them.
pub fn domain_matches(patterns: &[String], host: &str) -> bool {
    let host = normalize_host(host);
    patterns
        .iter()
        .any(|pattern| domain_pattern_matches(&normalize_host(pattern), &host))
}

/// [`domain_matches`] for one `pattern` and a `host`, both already as [`normalize_host`]
/// leaves them.
pub fn domain_pattern_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => host == pattern,
    }
}

/// Whether `name` is a DNS name a secret or bypass list may hold: see [`domain_pattern_problem`].
pub fn is_domain_pattern(name: &str) -> bool {
    domain_pattern_problem(name).is_none()
}

/// What is wrong with `name` as a domain pattern, `None` if nothing: it must be labels of
/// letters, digits, `-` and `_`, at most 63 bytes each and 253 in all, optionally led by a `*.`
/// wildcard with at least two labels after it, and not an IP address. A trailing dot is allowed.
pub fn domain_pattern_problem(name: &str) -> Option<&'static str> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    let (wildcard, rest) = match bare.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, bare),
    };
    if rest.is_empty() {
        return Some("empty domain name");
    }
    if rest.contains('*') {
        return Some("`*` is only allowed as the whole first label (`*.example.com`)");
    }
    if rest.parse::<std::net::IpAddr>().is_ok() {
        // TLS clients send no server name for an address, so it could never match.
        return Some("an IP address, not a domain name");
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if rest.len() > 253 || !rest.split('.').all(label_ok) {
        return Some("not a domain name");
    }
    // `*.com` would send the value to every host of a top-level domain.
    if wildcard && !rest.contains('.') {
        return Some("a wildcard needs at least two labels after `*.`");
    }
    None
}

/// A POSIX-style environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes.
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Characters a caller-chosen placeholder may use: URL-unreserved characters and `$`, so the
/// placeholder survives a shell, a URL and a header unchanged and its encoded forms are the
/// ones the rewriter looks for.
pub fn is_placeholder_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~' | b'$')
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
        assert!(is_domain_pattern("API.Example.com."));
        for bad in [
            "", "*.com", "a b", "10.0.0.1", "::1", "a..b", "*", "x.*.y", "a.*.com",
        ] {
            assert!(!is_domain_pattern(bad), "{bad:?}");
        }
        assert_eq!(domain_pattern_problem("a b"), Some("not a domain name"));
        assert_eq!(domain_pattern_problem(""), Some("empty domain name"));
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("OPENAI_API_KEY"));
        assert!(is_env_name("_x1"));
        for bad in ["", "1A", "A-B", "A B", "Ä"] {
            assert!(!is_env_name(bad), "{bad:?}");
        }
    }
}
