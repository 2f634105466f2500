//! Validation helpers for the caller's secrets. The configuration itself is the contract
//! crate's plain data ([`msb_control::secrets::SecretEnv`] and friends), which
//! [`Secrets::new`](crate::Secrets::new) validates into the runtime object the rewriter uses.
//!
//! Field names are spelled as the TypeScript API spells them (`secretEnv.NAME.onViolation`),
//! and so is every [`ConfigError::field`].

use msb_control::secrets::{domain_pattern_problem, is_env_name, normalize_host, SecretLocation};

/// Prefix of generated placeholders: `msb_secret_<NAME>_<24 base62 characters>`.
pub const PLACEHOLDER_PREFIX: &str = "msb_secret_";
/// Random characters in a generated placeholder (base62: about 143 bits).
pub const PLACEHOLDER_RANDOM_LEN: usize = 24;

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

/// A domain pattern checked by [`domain_pattern_problem`], in the form hosts are compared in
/// (lower case, no trailing dot), ready for
/// [`domain_pattern_matches`](msb_control::secrets::domain_pattern_matches).
pub(crate) fn domain_pattern(field: String, text: &str) -> Result<String, ConfigError> {
    match domain_pattern_problem(text) {
        Some(problem) => Err(invalid(field, problem)),
        None => Ok(normalize_host(text)),
    }
}

/// The set of enabled [`SecretLocation`]s of one secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LocationSet(u8);

impl LocationSet {
    fn bit(location: SecretLocation) -> u8 {
        match location {
            SecretLocation::Headers => 1,
            SecretLocation::BasicAuth => 2,
            SecretLocation::Path => 4,
            SecretLocation::Query => 8,
            SecretLocation::Body => 16,
        }
    }

    pub(crate) fn from_list(list: &[SecretLocation]) -> LocationSet {
        LocationSet(list.iter().fold(0, |set, l| set | LocationSet::bit(*l)))
    }

    pub(crate) fn contains(self, location: SecretLocation) -> bool {
        self.0 & LocationSet::bit(location) != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use msb_control::secrets::domain_pattern_matches;

    use super::*;

    #[test]
    fn domain_patterns() {
        let p = |s: &str| domain_pattern("f".into(), s);
        assert_eq!(p("API.Example.com.").unwrap(), "api.example.com");
        let wild = p("*.example.com").unwrap();
        assert!(domain_pattern_matches(&wild, "a.example.com"));
        assert!(domain_pattern_matches(&wild, "a.b.example.com"));
        assert!(!domain_pattern_matches(&wild, "example.com"));
        assert!(!domain_pattern_matches(&wild, "notexample.com"));
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
    fn field_prefixes() {
        assert_eq!(field_prefix("OPENAI_API_KEY"), "secretEnv.OPENAI_API_KEY");
        assert_eq!(field_prefix("A B"), "secretEnv[\"A B\"]");
    }
}
