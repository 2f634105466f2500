//! What the caller says about each secret: plain serde data ([`SecretSpec`]), validated by
//! [`Secrets::new`](crate::Secrets::new) into the runtime object the rewriter uses.
//!
//! Field names are spelled as the TypeScript API spells them (`secretEnv.NAME.onViolation`),
//! and so is every [`ConfigError::field`]. This module depends on serde and zeroize only, so
//! the types can move to the contract crate (`msb-control`) without pulling TLS along.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Longest accepted secret value. A secret is a token or a key; the bound keeps what one
/// substitution can add to a request small (see `Limits::max_substitutions`).
pub const MAX_VALUE_LEN: usize = 16 * 1024;
/// Shortest and longest placeholder a caller may choose. Short placeholders would match
/// ordinary text; long ones widen the window every body scan keeps.
pub const MIN_PLACEHOLDER_LEN: usize = 8;
pub const MAX_PLACEHOLDER_LEN: usize = 128;
/// Prefix of generated placeholders: `msb_secret_<NAME>_<24 base62 characters>`.
pub const PLACEHOLDER_PREFIX: &str = "msb_secret_";
/// Random characters in a generated placeholder (base62: about 143 bits).
pub const PLACEHOLDER_RANDOM_LEN: usize = 24;

/// One secret environment variable, as the caller gives it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    /// The environment variable the guest sees (holding the placeholder, never the value).
    pub name: String,
    pub value: SecretValue,
    /// Hosts the value may be sent to: exact DNS names (`api.openai.com`) or `*.suffix`
    /// wildcards (`*.openai.com`: any name under `openai.com`, at any depth, not `openai.com`
    /// itself). Matched case-insensitively against the TLS server name.
    pub domains: Vec<String>,
    /// What the guest sees instead of the value. `None`: generated, see [`PLACEHOLDER_PREFIX`].
    #[serde(default)]
    pub placeholder: Option<String>,
    /// Where in a request the placeholder is replaced. Default: headers and HTTP Basic auth.
    #[serde(default = "default_locations")]
    pub locations: Vec<Location>,
    #[serde(default)]
    pub on_violation: OnViolation,
    /// Substitute only in TLS connections the runtime intercepted, never in plaintext HTTP.
    #[serde(default = "default_true")]
    pub require_tls: bool,
}

fn default_locations() -> Vec<Location> {
    vec![Location::Headers, Location::BasicAuth]
}

fn default_true() -> bool {
    true
}

/// Where a placeholder may be replaced by the value.
///
/// Headers and Basic auth are the default because servers rarely echo them back; paths,
/// queries and bodies are routinely reflected (error messages, logs shown to the caller,
/// echo endpoints), so each is opt-in per secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Location {
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

/// What the caller does when a placeholder shows up where it may not go. The request is never
/// forwarded in any case; this tells the caller what else to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnViolation {
    /// Close the connection.
    Block,
    /// Close the connection and write a line to the network log.
    #[default]
    BlockAndLog,
    /// Close the connection, log, and kill the sandbox.
    BlockAndKill,
}

/// A secret's value. Zeroed when dropped, never shown by `Debug` or `Display`, never part of an
/// error. Copies the caller made before handing it over (a deserializer's input buffer, a
/// frame) are the caller's to clear.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> SecretValue {
        SecretValue(Zeroizing::new(value.into()))
    }

    /// The clear value. Only the rewriter should need this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> SecretValue {
        SecretValue::new(value)
    }
}

impl From<&str> for SecretValue {
    fn from(value: &str) -> SecretValue {
        SecretValue::new(value)
    }
}

/// Serializes the clear value: the engine hands the spec to the sandbox's runtime process over
/// its control channel. Nothing else should serialize it (not the state database, not a log).
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

/// A configuration value that cannot be used. `field` names it the way the caller spells it
/// (`secretEnv.OPENAI_API_KEY.domains[0]`); neither field nor problem ever holds a value.
#[derive(Debug, thiserror::Error)]
#[error("invalid secret config `{field}`: {problem}")]
pub struct ConfigError {
    pub field: String,
    pub problem: &'static str,
}

pub(crate) fn invalid(field: impl Into<String>, problem: &'static str) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem,
    }
}

/// `secretEnv.NAME`, with a name that failed validation shown escaped and cut short (it is the
/// caller's string, not a secret, but it may be long or hold control characters).
pub(crate) fn field_prefix(name: &str) -> String {
    if is_env_name(name) {
        format!("secretEnv.{name}")
    } else {
        let shown: String = name.chars().take(64).collect();
        format!("secretEnv[{:?}]", shown)
    }
}

/// A POSIX-style environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Characters a caller-chosen placeholder may use: URL-unreserved characters and `$`, so the
/// placeholder survives a shell, a URL and a header unchanged and its encoded forms are the
/// ones the rewriter looks for.
pub(crate) fn is_placeholder_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~' | b'$')
}

/// A validated domain pattern, lower case, without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DomainPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

impl DomainPattern {
    pub(crate) fn parse(field: String, text: &str) -> Result<DomainPattern, ConfigError> {
        let lower = text.to_ascii_lowercase();
        let bare = lower.strip_suffix('.').unwrap_or(&lower);
        let (wildcard, name) = match bare.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, bare),
        };
        if name.is_empty() {
            return Err(invalid(field, "empty domain name"));
        }
        if name.contains('*') {
            return Err(invalid(
                field,
                "`*` is only allowed as the whole first label (`*.example.com`)",
            ));
        }
        if name.parse::<std::net::IpAddr>().is_ok() {
            // TLS clients send no server name for an address, so it could never match.
            return Err(invalid(field, "an IP address, not a domain name"));
        }
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(invalid(field, "not a domain name"));
        }
        if wildcard {
            // `*.com` would send the value to every host of a top-level domain.
            if !name.contains('.') {
                return Err(invalid(
                    field,
                    "a wildcard needs at least two labels after `*.`",
                ));
            }
            Ok(DomainPattern::Suffix(format!(".{name}")))
        } else {
            Ok(DomainPattern::Exact(name.to_owned()))
        }
    }

    /// `host` must already be normalized by [`normalize_host`].
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            DomainPattern::Exact(name) => host == name,
            DomainPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

/// Lower case, without a trailing dot: the form hosts are compared in.
pub(crate) fn normalize_host(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(bare) => bare.to_owned(),
        None => lower,
    }
}

/// The set of enabled [`Location`]s of one secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LocationSet(u8);

impl LocationSet {
    fn bit(location: Location) -> u8 {
        match location {
            Location::Headers => 1,
            Location::BasicAuth => 2,
            Location::Path => 4,
            Location::Query => 8,
            Location::Body => 16,
        }
    }

    pub(crate) fn from_list(list: &[Location]) -> LocationSet {
        LocationSet(list.iter().fold(0, |set, l| set | LocationSet::bit(*l)))
    }

    pub(crate) fn contains(self, location: Location) -> bool {
        self.0 & LocationSet::bit(location) != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_never_in_debug() {
        let spec = SecretSpec {
            name: "K".into(),
            value: SecretValue::new("sk-very-secret"),
            domains: vec!["api.example.com".into()],
            placeholder: None,
            locations: default_locations(),
            on_violation: OnViolation::default(),
            require_tls: true,
        };
        let shown = format!("{spec:?} {:?}", spec.value);
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn serde_spelling_and_defaults() {
        let spec: SecretSpec = serde_json::from_str(
            r#"{"name":"OPENAI_API_KEY","value":"sk-1","domains":["api.openai.com"]}"#,
        )
        .unwrap();
        assert_eq!(spec.locations, vec![Location::Headers, Location::BasicAuth]);
        assert_eq!(spec.on_violation, OnViolation::BlockAndLog);
        assert!(spec.require_tls);
        assert_eq!(spec.value.expose(), "sk-1");

        let spec: SecretSpec = serde_json::from_str(
            r#"{"name":"K","value":"v","domains":["*.example.com"],"placeholder":"$MSB_K_xyz",
                "locations":["query","body","basic-auth"],"onViolation":"block-and-kill",
                "requireTls":false}"#,
        )
        .unwrap();
        assert_eq!(
            spec.locations,
            vec![Location::Query, Location::Body, Location::BasicAuth]
        );
        assert_eq!(spec.on_violation, OnViolation::BlockAndKill);
        assert!(!spec.require_tls);
        let back = serde_json::to_string(&spec).unwrap();
        assert!(back.contains(r#""onViolation":"block-and-kill""#), "{back}");
    }

    #[test]
    fn domain_patterns() {
        let p = |s: &str| DomainPattern::parse("f".into(), s);
        assert_eq!(
            p("API.Example.com.").unwrap(),
            DomainPattern::Exact("api.example.com".into())
        );
        let wild = p("*.example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("notexample.com"));
        for bad in [
            "",
            "*",
            "*.com",
            "a.*.com",
            "exa mple.com",
            "10.0.0.1",
            "::1",
            "a..b",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("OPENAI_API_KEY"));
        assert!(is_env_name("_x1"));
        for bad in ["", "1A", "A-B", "A B", "Ä"] {
            assert!(!is_env_name(bad), "{bad:?}");
        }
        assert_eq!(field_prefix("A B"), "secretEnv[\"A B\"]");
    }
}
