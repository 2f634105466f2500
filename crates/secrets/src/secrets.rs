//! The validated set of a sandbox's secrets: what [`crate::RequestRewriter`] matches against.

use std::collections::HashSet;
use std::fmt;

use msb_control::secrets::{
    domain_pattern_matches, is_env_name, is_placeholder_byte, normalize_host, OnViolation,
    SecretEnv, SecretLocation, SecretValue, MAX_PLACEHOLDER_LEN, MAX_VALUE_LEN,
    MIN_PLACEHOLDER_LEN,
};

use crate::config::{
    domain_pattern, field_prefix, invalid, ConfigError, LocationSet, PLACEHOLDER_PREFIX,
    PLACEHOLDER_RANDOM_LEN,
};
use crate::scan::Matcher;

/// One secret, validated.
pub(crate) struct Secret {
    pub(crate) name: String,
    pub(crate) value: SecretValue,
    pub(crate) placeholder: String,
    /// Checked, lower case, without a trailing dot.
    pub(crate) domains: Vec<String>,
    pub(crate) locations: LocationSet,
    pub(crate) on_violation: OnViolation,
    pub(crate) require_tls: bool,
}

impl Secret {
    /// `host` as [`normalize_host`] leaves it.
    pub(crate) fn allows_host(&self, host: &str) -> bool {
        self.domains
            .iter()
            .any(|pattern| domain_pattern_matches(pattern, host))
    }
}

/// A sandbox's secrets, validated, with their placeholders fixed. Build once per sandbox and
/// share (`Arc`) between connections; it is immutable.
pub struct Secrets {
    pub(crate) entries: Vec<Secret>,
    pub(crate) matcher: Matcher,
}

impl Secrets {
    /// Validates every secret and generates the placeholders not given. Errors name the field as
    /// the caller spells it and never contain a value.
    pub fn new(specs: Vec<SecretEnv>) -> Result<Secrets, ConfigError> {
        let mut entries: Vec<Secret> = Vec::with_capacity(specs.len());
        let mut names = HashSet::new();
        for spec in specs {
            let prefix = field_prefix(&spec.name);
            if !is_env_name(&spec.name) {
                return Err(invalid(prefix, "not a valid environment variable name"));
            }
            if !names.insert(spec.name.clone()) {
                return Err(invalid(prefix, "defined twice"));
            }
            check_value(&prefix, &spec)?;
            if spec.domains.is_empty() {
                return Err(invalid(
                    format!("{prefix}.domains"),
                    "needs at least one domain",
                ));
            }
            let domains = spec
                .domains
                .iter()
                .enumerate()
                .map(|(i, d)| domain_pattern(format!("{prefix}.domains[{i}]"), d))
                .collect::<Result<Vec<_>, _>>()?;
            let locations = LocationSet::from_list(&spec.locations);
            if locations.is_empty() {
                return Err(invalid(
                    format!("{prefix}.locations"),
                    "needs at least one location",
                ));
            }
            let placeholder = match &spec.placeholder {
                Some(p) => {
                    check_placeholder(&prefix, p)?;
                    p.clone()
                }
                None => generate_placeholder(&spec.name).ok_or_else(|| {
                    invalid(
                        format!("{prefix}.placeholder"),
                        "could not be generated: the random source failed",
                    )
                })?,
            };
            // One placeholder inside another would make substitution ambiguous (which one
            // was meant?) and detection report the wrong secret.
            for other in &entries {
                if other.placeholder.contains(&placeholder)
                    || placeholder.contains(&other.placeholder)
                {
                    return Err(invalid(
                        format!("{prefix}.placeholder"),
                        "overlaps the placeholder of another secret",
                    ));
                }
            }
            entries.push(Secret {
                name: spec.name,
                value: spec.value,
                placeholder,
                domains,
                locations,
                on_violation: spec.on_violation,
                require_tls: spec.require_tls,
            });
        }
        let matcher = Matcher::new(entries.iter().map(|s| s.placeholder.as_bytes()))
            .map_err(|_| invalid("secretEnv", "too many secrets to match at once"))?;
        Ok(Secrets { entries, matcher })
    }

    /// `(name, placeholder)` for each secret: the environment the guest gets instead of the
    /// values.
    pub fn guest_env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|s| (s.name.as_str(), s.placeholder.as_str()))
    }

    /// The placeholder standing for secret `name`.
    pub fn placeholder(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.placeholder.as_str())
    }

    /// Whether any secret may be sent to `host` (a TLS server name). Under intercept mode
    /// "secrets-only" the caller intercepts exactly the connections for which this is true.
    pub fn any_for_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.entries.iter().any(|s| s.allows_host(&host))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for s in &self.entries {
            list.entry(&format_args!(
                "{} = {} -> {:?}",
                s.name, s.placeholder, s.domains
            ));
        }
        list.finish()
    }
}

fn check_value(prefix: &str, spec: &SecretEnv) -> Result<(), ConfigError> {
    let field = || format!("{prefix}.value");
    let value = spec.value.expose();
    if value.is_empty() {
        return Err(invalid(field(), "must not be empty"));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid(field(), "longer than 16 KiB"));
    }
    // Substituted into a header as is: a line break would end the header and start another.
    if spec.locations.contains(&SecretLocation::Headers)
        && value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
    {
        return Err(invalid(
            field(),
            "contains a line break or NUL, which cannot go in a header",
        ));
    }
    Ok(())
}

fn check_placeholder(prefix: &str, placeholder: &str) -> Result<(), ConfigError> {
    let field = || format!("{prefix}.placeholder");
    if !(MIN_PLACEHOLDER_LEN..=MAX_PLACEHOLDER_LEN).contains(&placeholder.len()) {
        return Err(invalid(field(), "must be 8 to 128 characters long"));
    }
    if !placeholder.bytes().all(is_placeholder_byte) {
        return Err(invalid(
            field(),
            "may only contain ASCII letters, digits and `_-.~$`",
        ));
    }
    Ok(())
}

/// `msb_secret_<NAME>_<24 base62 characters>`: greppable (the prefix and the name say what it
/// stands for), unguessable (about 143 random bits, so no text the guest did not get from its
/// environment matches by accident), and made of URL-unreserved characters, so it passes
/// through shells, URLs and headers unchanged.
fn generate_placeholder(name: &str) -> Option<String> {
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let random = rustls::crypto::aws_lc_rs::default_provider().secure_random;
    let mut out = format!("{PLACEHOLDER_PREFIX}{name}_");
    let mut produced = 0;
    while produced < PLACEHOLDER_RANDOM_LEN {
        let mut bytes = [0u8; 32];
        random.fill(&mut bytes).ok()?;
        // Rejection sampling: 248 = 4 * 62, so every accepted byte is uniform modulo 62.
        for b in bytes.iter().filter(|b| **b < 248) {
            if produced == PLACEHOLDER_RANDOM_LEN {
                break;
            }
            out.push(BASE62[(*b % 62) as usize] as char);
            produced += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec(name: &str, value: &str, domains: &[&str]) -> SecretEnv {
        SecretEnv {
            name: name.into(),
            value: SecretValue::new(value),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            placeholder: None,
            locations: vec![SecretLocation::Headers, SecretLocation::BasicAuth],
            on_violation: OnViolation::BlockAndLog,
            require_tls: true,
        }
    }

    fn err(specs: Vec<SecretEnv>) -> String {
        Secrets::new(specs).unwrap_err().to_string()
    }

    #[test]
    fn generated_placeholders() {
        let secrets = Secrets::new(vec![
            spec("OPENAI_API_KEY", "sk-1", &["api.openai.com"]),
            spec("OTHER", "v", &["*.example.com"]),
        ])
        .unwrap();
        let p = secrets.placeholder("OPENAI_API_KEY").unwrap();
        let random = p.strip_prefix("msb_secret_OPENAI_API_KEY_").unwrap();
        assert_eq!(random.len(), PLACEHOLDER_RANDOM_LEN);
        assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(
            Secrets::new(vec![spec("OPENAI_API_KEY", "sk-1", &["x.example"])])
                .unwrap()
                .placeholder("OPENAI_API_KEY")
                .unwrap(),
            p
        );
        assert!(secrets.any_for_host("API.OpenAI.com."));
        assert!(secrets.any_for_host("a.example.com"));
        assert!(!secrets.any_for_host("example.com"));
        let env: Vec<_> = secrets.guest_env().collect();
        assert_eq!(env[0].0, "OPENAI_API_KEY");
        assert!(!format!("{secrets:?}").contains("sk-1"));
    }

    #[test]
    fn errors_name_the_field_and_hide_the_value() {
        let mut bad_domain = spec("OPENAI_API_KEY", "sk-hidden", &["api.openai.com", "a b"]);
        assert_eq!(
            err(vec![bad_domain.clone()]),
            "invalid secret config `secretEnv.OPENAI_API_KEY.domains[1]`: not a domain name"
        );
        bad_domain.domains.clear();
        assert!(err(vec![bad_domain]).contains("secretEnv.OPENAI_API_KEY.domains`"));

        let empty = spec("K", "", &["a.example"]);
        assert!(err(vec![empty]).contains("`secretEnv.K.value`: must not be empty"));

        let newline = spec("K", "line1\nsk-hidden", &["a.example"]);
        let text = err(vec![newline.clone()]);
        assert!(
            text.contains("secretEnv.K.value") && !text.contains("sk-hidden"),
            "{text}"
        );
        // Without header substitution a multi-line value (a PEM key in a body) is fine.
        let mut body_only = newline;
        body_only.locations = vec![SecretLocation::Body];
        Secrets::new(vec![body_only]).unwrap();

        assert!(err(vec![spec("1X", "v", &["a.example"])]).contains("secretEnv[\"1X\"]"));
        assert!(err(vec![
            spec("K", "v", &["a.example"]),
            spec("K", "w", &["a.example"])
        ])
        .contains("defined twice"));

        let mut no_loc = spec("K", "v", &["a.example"]);
        no_loc.locations.clear();
        assert!(err(vec![no_loc]).contains("secretEnv.K.locations"));

        let mut short = spec("K", "v", &["a.example"]);
        short.placeholder = Some("$K".into());
        assert!(err(vec![short.clone()]).contains("secretEnv.K.placeholder"));
        short.placeholder = Some("has space!".into());
        assert!(err(vec![short]).contains("may only contain"));

        let mut a = spec("A", "v", &["a.example"]);
        a.placeholder = Some("$MSB_TOKEN".into());
        let mut b = spec("B", "w", &["a.example"]);
        b.placeholder = Some("$MSB_TOKEN_2".into());
        assert!(err(vec![a, b]).contains("secretEnv.B.placeholder`: overlaps"));
    }
}
