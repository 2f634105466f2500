//! A sandbox's secrets, made ready before the VM starts: the placeholders the guest's
//! environment gets, the per-sandbox CA (generated here, in this process's memory only; its
//! certificate goes to the guest, its key nowhere), and the interceptor the network stack
//! hands intercepted flows to. The values live only in the interceptor's `Secrets` (zeroed when
//! the stack is dropped, i.e. when the sandbox stops).

use std::sync::Arc;

use msb_control::secrets::{InterceptMode, SecretsConfig};
use msb_netstack::{Interception, SecretKill};
use msb_protocol::GuestInit;
use msb_secrets::{upstream_client_config, Interceptor, SandboxCa, Secrets, UpstreamTrust};
use tokio::sync::mpsc;

/// What [`prepare`] hands the runtime: the stack's interception and where kills arrive.
pub(crate) type Prepared = (Interception, mpsc::Receiver<SecretKill>);

/// Validates `config`, puts the placeholders (and, when flows are intercepted, the CA) into
/// `guest`. `Ok(None)`: nothing to intercept. The error message names fields, never values.
pub(crate) fn prepare(
    config: SecretsConfig,
    guest: &mut GuestInit,
) -> Result<Option<Prepared>, String> {
    let intercepts = config.intercepts();
    let secrets = Secrets::new(config.secrets).map_err(|e| e.to_string())?;
    for (name, placeholder) in secrets.guest_env() {
        guest.env.retain(|(k, _)| k != name);
        guest.env.push((name.to_owned(), placeholder.to_owned()));
    }
    if !intercepts {
        return Ok(None);
    }
    let ca = SandboxCa::generate().map_err(|e| format!("sandbox CA: {e}"))?;
    let upstream = upstream_client_config(&UpstreamTrust {
        native_roots: true,
        extra_ca_pems: config.ca_certificates,
    })
    .map_err(|e| format!("network.tls.caCertificates: {e}"))?;
    guest.ca_certificate = Some(ca.cert_pem().to_owned());
    let (kill, kills) = mpsc::channel(1);
    let interception = Interception {
        interceptor: Interceptor::new(Arc::new(secrets), Arc::new(ca), upstream),
        mode: config.intercept,
        bypass_domains: config.bypass_domains,
        kill,
    };
    debug_assert!(interception.mode != InterceptMode::Off);
    Ok(Some((interception, kills)))
}

#[cfg(test)]
mod tests {
    use msb_control::secrets::{OnViolation, SecretEnv, SecretLocation, SecretValue};
    use msb_protocol::RootSpec;

    use super::*;

    fn guest() -> GuestInit {
        GuestInit {
            hostname: "t".into(),
            root: RootSpec::Virtio9p { tag: "r".into() },
            env: vec![
                ("K".into(), "caller's".into()),
                ("PATH".into(), "/bin".into()),
            ],
            workdir: None,
            transfer_tag: None,
            network: None,
            ca_certificate: None,
            upper: msb_protocol::UpperSpec::Memory,
            mounts: vec![],
            entropy: vec![],
            realtime_ns: 0,
        }
    }

    fn secret(value: &str, domain: &str) -> SecretEnv {
        SecretEnv {
            name: "K".into(),
            value: SecretValue::new(value),
            domains: vec![domain.into()],
            placeholder: None,
            locations: vec![SecretLocation::Headers],
            on_violation: OnViolation::BlockAndLog,
            require_tls: true,
        }
    }

    fn config(secrets: Vec<SecretEnv>, intercept: InterceptMode) -> SecretsConfig {
        SecretsConfig {
            secrets,
            intercept,
            ..SecretsConfig::default()
        }
    }

    #[test]
    fn the_guest_gets_placeholders_and_the_ca_never_values() {
        let mut init = guest();
        let prepared = prepare(
            config(
                vec![secret("sk-hidden", "api.example.com")],
                InterceptMode::SecretsOnly,
            ),
            &mut init,
        )
        .unwrap();
        let (interception, _kills) = prepared.expect("intercepts");
        assert!(interception
            .interceptor
            .secrets()
            .any_for_host("api.example.com"));
        let shown = format!("{init:?}");
        assert!(!shown.contains("sk-hidden"), "{shown}");
        let value = &init.env.iter().find(|(k, _)| k == "K").unwrap().1;
        assert!(value.starts_with("msb_secret_K_"), "{value}");
        assert_eq!(init.env.iter().filter(|(k, _)| k == "K").count(), 1);
        let ca = init.ca_certificate.as_deref().unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    }

    #[test]
    fn modes() {
        // "off": placeholders, but no CA and nothing intercepted.
        let mut init = guest();
        let off = prepare(
            config(vec![secret("sk-hidden", "a.example")], InterceptMode::Off),
            &mut init,
        )
        .unwrap();
        assert!(off.is_none() && init.ca_certificate.is_none());
        assert!(init
            .env
            .iter()
            .any(|(k, v)| k == "K" && v.starts_with("msb_secret_K_")));
        // "all" without secrets: everything intercepted, nothing to substitute.
        let mut init = guest();
        assert!(prepare(config(vec![], InterceptMode::All), &mut init)
            .unwrap()
            .is_some());
        assert!(init.ca_certificate.is_some());
    }

    #[test]
    fn errors_name_fields_not_values() {
        let mut bad = secret("sk-hidden\n", "a.example");
        bad.locations = vec![SecretLocation::Headers];
        let err = prepare(config(vec![bad], InterceptMode::SecretsOnly), &mut guest())
            .err()
            .unwrap();
        assert!(
            err.contains("secretEnv.K.value") && !err.contains("sk-hidden"),
            "{err}"
        );
        let mut cas = config(vec![secret("v", "a.example")], InterceptMode::SecretsOnly);
        cas.ca_certificates =
            vec!["-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into()];
        let err = prepare(cas, &mut guest()).err().unwrap();
        assert!(err.starts_with("network.tls.caCertificates"), "{err}");
    }
}
