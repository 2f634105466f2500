//! `secretEnv` and `network.tls` as callers give them, validated into
//! [`SecretsConfig`], which the engine hands to the sandbox's runtime (the only
//! process that uses the values; see docs/secrets.md).
//!
//! Checked here, before anything boots: variable names, empty values, domain
//! names, and every enumerated string. The runtime validates again in full
//! (`msb-secrets`: value length, placeholder shape and overlaps) and fails the
//! boot naming the field. No error here ever holds a value.

use msb_control::secrets::{
    is_domain_pattern, is_env_name, is_placeholder_byte, InterceptMode, OnViolation, SecretEnv,
    SecretLocation, SecretValue, SecretsConfig, MAX_PLACEHOLDER_LEN, MIN_PLACEHOLDER_LEN,
};

use crate::error::InvalidOption;

/// One `secretEnv` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnvOptions {
    pub name: String,
    pub value: SecretValue,
    /// A single domain (shorthand; joins `domains`).
    pub domain: Option<String>,
    pub domains: Vec<String>,
    pub placeholder: Option<String>,
    /// "headers", "basic-auth", "path", "query", "body"; default headers and basic-auth.
    pub locations: Option<Vec<String>>,
    /// "block", "block-and-log" (default), "block-and-kill".
    pub on_violation: Option<String>,
    pub require_tls: Option<bool>,
}

/// `network.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsOptions {
    /// "secrets-only" (default), "all" or "off".
    pub intercept: Option<String>,
    pub bypass_domains: Vec<String>,
    /// PEM certificates the upstream side trusts besides the host's store.
    pub ca_certificates: Vec<String>,
}

const MAX_SECRETS: usize = 64;

/// Validates the secrets and TLS options.
pub fn build(
    secrets: &[SecretEnvOptions],
    tls: &TlsOptions,
) -> Result<SecretsConfig, InvalidOption> {
    if secrets.len() > MAX_SECRETS {
        return Err(InvalidOption::new(
            "secretEnv",
            format!("at most {MAX_SECRETS} secrets"),
        ));
    }
    let mut out = Vec::with_capacity(secrets.len());
    for s in secrets {
        out.push(secret(s)?);
    }
    let intercept = match tls.intercept.as_deref() {
        None | Some("secrets-only") => InterceptMode::SecretsOnly,
        Some("all") => InterceptMode::All,
        Some("off") => InterceptMode::Off,
        Some(other) => {
            return Err(InvalidOption::new(
                "network.tls.intercept",
                format!("{other:?} is not \"secrets-only\", \"all\" or \"off\""),
            ))
        }
    };
    for (i, domain) in tls.bypass_domains.iter().enumerate() {
        if !is_domain_pattern(domain) {
            return Err(InvalidOption::new(
                format!("network.tls.bypassDomains[{i}]"),
                format!("{domain:?} is not a domain name or `*.suffix`"),
            ));
        }
    }
    for (i, pem) in tls.ca_certificates.iter().enumerate() {
        if !pem.contains("-----BEGIN CERTIFICATE-----") || pem.len() > 1 << 20 {
            return Err(InvalidOption::new(
                format!("network.tls.caCertificates[{i}]"),
                "is not a PEM certificate (at most 1 MiB)",
            ));
        }
    }
    Ok(SecretsConfig {
        secrets: out,
        intercept,
        bypass_domains: tls.bypass_domains.clone(),
        ca_certificates: tls.ca_certificates.clone(),
    })
}

fn secret(s: &SecretEnvOptions) -> Result<SecretEnv, InvalidOption> {
    if !is_env_name(&s.name) {
        let shown: String = s.name.chars().take(64).collect();
        return Err(InvalidOption::new(
            "secretEnv",
            format!("{shown:?} is not a valid environment variable name"),
        ));
    }
    let field = |name: &str| format!("secretEnv.{}.{name}", s.name);
    if s.value.is_empty() {
        return Err(InvalidOption::new(field("value"), "must not be empty"));
    }
    if s.value.expose().contains('\0') {
        return Err(InvalidOption::new(field("value"), "contains a NUL byte"));
    }
    let mut domains: Vec<String> = s.domain.iter().cloned().collect();
    domains.extend(s.domains.iter().cloned());
    if domains.is_empty() {
        return Err(InvalidOption::new(
            field("domains"),
            "needs at least one domain (`domain` or `domains`)",
        ));
    }
    for (i, domain) in domains.iter().enumerate() {
        if !is_domain_pattern(domain) {
            let which = if s.domain.is_some() && i == 0 {
                field("domain")
            } else {
                field(&format!("domains[{}]", i - usize::from(s.domain.is_some())))
            };
            return Err(InvalidOption::new(
                which,
                format!("{domain:?} is not a domain name or `*.suffix`"),
            ));
        }
    }
    let locations = match &s.locations {
        None => vec![SecretLocation::Headers, SecretLocation::BasicAuth],
        Some(list) => {
            if list.is_empty() {
                return Err(InvalidOption::new(
                    field("locations"),
                    "needs at least one location",
                ));
            }
            list.iter()
                .enumerate()
                .map(|(i, l)| match l.as_str() {
                    "headers" => Ok(SecretLocation::Headers),
                    "basic-auth" => Ok(SecretLocation::BasicAuth),
                    "path" => Ok(SecretLocation::Path),
                    "query" => Ok(SecretLocation::Query),
                    "body" => Ok(SecretLocation::Body),
                    other => Err(InvalidOption::new(
                        field(&format!("locations[{i}]")),
                        format!(
                            "{other:?} is not \"headers\", \"basic-auth\", \"path\", \"query\" \
                             or \"body\""
                        ),
                    )),
                })
                .collect::<Result<_, _>>()?
        }
    };
    let on_violation = match s.on_violation.as_deref() {
        None | Some("block-and-log") => OnViolation::BlockAndLog,
        Some("block") => OnViolation::Block,
        Some("block-and-kill") => OnViolation::BlockAndKill,
        Some(other) => {
            return Err(InvalidOption::new(
                field("onViolation"),
                format!("{other:?} is not \"block\", \"block-and-log\" or \"block-and-kill\""),
            ))
        }
    };
    if let Some(p) = &s.placeholder {
        let ok = (MIN_PLACEHOLDER_LEN..=MAX_PLACEHOLDER_LEN).contains(&p.len())
            && p.bytes().all(is_placeholder_byte);
        if !ok {
            return Err(InvalidOption::new(
                field("placeholder"),
                "must be 8 to 128 ASCII letters, digits or `_-.~$`",
            ));
        }
    }
    Ok(SecretEnv {
        name: s.name.clone(),
        value: s.value.clone(),
        domains,
        placeholder: s.placeholder.clone(),
        locations,
        on_violation,
        require_tls: s.require_tls.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, value: &str, domain: &str) -> SecretEnvOptions {
        SecretEnvOptions {
            name: name.into(),
            value: SecretValue::new(value),
            domain: Some(domain.into()),
            domains: vec![],
            placeholder: None,
            locations: None,
            on_violation: None,
            require_tls: None,
        }
    }

    fn field(result: Result<SecretsConfig, InvalidOption>) -> String {
        let err = result.unwrap_err();
        assert!(!err.to_string().contains("sk-hidden"), "{err}");
        err.field
    }

    #[test]
    fn defaults() {
        let config = build(
            &[spec("OPENAI_API_KEY", "sk-hidden", "api.openai.com")],
            &TlsOptions::default(),
        )
        .unwrap();
        let s = &config.secrets[0];
        assert_eq!(s.domains, vec!["api.openai.com".to_string()]);
        assert_eq!(
            s.locations,
            vec![SecretLocation::Headers, SecretLocation::BasicAuth]
        );
        assert_eq!(s.on_violation, OnViolation::BlockAndLog);
        assert!(s.require_tls);
        assert_eq!(config.intercept, InterceptMode::SecretsOnly);
        assert!(config.intercepts());
        assert!(!format!("{config:?}").contains("sk-hidden"));
    }

    #[test]
    fn fields_are_named() {
        let tls = TlsOptions::default();
        assert_eq!(
            field(build(&[spec("1BAD", "sk-hidden", "a.example")], &tls)),
            "secretEnv"
        );
        assert_eq!(
            field(build(&[spec("K", "", "a.example")], &tls)),
            "secretEnv.K.value"
        );
        assert_eq!(
            field(build(&[spec("K", "sk-hidden", "a b")], &tls)),
            "secretEnv.K.domain"
        );
        assert_eq!(
            field(build(&[spec("K", "sk-hidden", "10.0.0.1")], &tls)),
            "secretEnv.K.domain"
        );
        let mut s = spec("K", "sk-hidden", "a.example");
        s.domains = vec!["*.com".into()];
        assert_eq!(field(build(&[s.clone()], &tls)), "secretEnv.K.domains[0]");
        s.domains.clear();
        s.on_violation = Some("explode".into());
        assert_eq!(field(build(&[s.clone()], &tls)), "secretEnv.K.onViolation");
        s.on_violation = None;
        s.locations = Some(vec!["headers".into(), "cookie".into()]);
        assert_eq!(field(build(&[s.clone()], &tls)), "secretEnv.K.locations[1]");
        s.locations = None;
        s.placeholder = Some("short".into());
        assert_eq!(field(build(&[s.clone()], &tls)), "secretEnv.K.placeholder");
        s.placeholder = None;
        s.domain = None;
        assert_eq!(field(build(&[s], &tls)), "secretEnv.K.domains");

        let ok = [spec("K", "sk-hidden", "a.example")];
        let bad = |tls: TlsOptions| field(build(&ok, &tls));
        assert_eq!(
            bad(TlsOptions {
                intercept: Some("some".into()),
                ..TlsOptions::default()
            }),
            "network.tls.intercept"
        );
        assert_eq!(
            bad(TlsOptions {
                bypass_domains: vec!["x y".into()],
                ..TlsOptions::default()
            }),
            "network.tls.bypassDomains[0]"
        );
        assert_eq!(
            bad(TlsOptions {
                ca_certificates: vec!["nope".into()],
                ..TlsOptions::default()
            }),
            "network.tls.caCertificates[0]"
        );
    }
}
