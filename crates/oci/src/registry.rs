//! Where images come from: reference normalization, the default-registry
//! mirror, plain-HTTP and private-CA registries, and credentials.
//!
//! Short names (`python`, `python:3.12`) mean what they mean to Docker: the
//! official-images namespace of the default registry (normalization by the
//! `oci-spec` reference parser). A configured mirror serves that default
//! registry: references to it are fetched from the mirror, same repository
//! path, while the image keeps its original name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { username: String, password: String },
    Bearer { token: String },
}

/// How to reach registries. Empty means: HTTPS with the system's roots,
/// anonymous unless `~/.docker/config.json` has credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// `host[:port]` of a mirror for the default registry.
    pub mirror: Option<String>,
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Extra PEM root certificates to trust (private registries).
    pub ca_certificates: Vec<PathBuf>,
    /// Credentials per registry `host[:port]`; they take precedence over the docker config.
    pub credentials: HashMap<String, Credentials>,
    /// The docker config file to read credentials from; `None` means the default
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{reference:?} is not an image reference")]
    Invalid {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error("CA certificate {path}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A parsed reference: its canonical name and where to fetch it from.
#[derive(Debug, Clone)]
pub struct ImageRef {
    /// Canonical name, e.g. `registry/repository:tag` or `...@sha256:...`.
    pub name: String,
    /// The reference the client fetches (differs from `name` through a mirror).
    pub fetch: Reference,
}

impl ImageRef {
    pub fn parse(reference: &str, options: &RegistryOptions) -> Result<ImageRef, ReferenceError> {
        let parsed: Reference = reference
            .parse()
            .map_err(|source| ReferenceError::Invalid {
                reference: reference.to_string(),
                source,
            })?;
        let name = parsed.whole();
        let fetch = match &options.mirror {
            Some(mirror) if !has_explicit_registry(reference) || is_default_registry(&parsed) => {
                rebase(&parsed, mirror)
            }
            _ => parsed,
        };
        Ok(ImageRef { name, fetch })
    }

    /// The registry actually contacted.
    pub fn registry(&self) -> &str {
        self.fetch.resolve_registry()
    }
}

/// Docker's rule: the first path component names a registry when it has a
/// dot or a port, or is `localhost`.
fn has_explicit_registry(reference: &str) -> bool {
    match reference.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// Whether the parsed reference points at the default registry (what short
/// names normalize to), without this crate naming that registry.
fn is_default_registry(reference: &Reference) -> bool {
    let probe: Reference = "msb-probe".parse().expect("a short name parses");
    reference.registry() == probe.registry()
}

fn rebase(reference: &Reference, registry: &str) -> Reference {
    let repository = reference.repository().to_string();
    match (reference.digest(), reference.tag()) {
        (Some(digest), _) => {
            Reference::with_digest(registry.to_string(), repository, digest.to_string())
        }
        (None, tag) => Reference::with_tag(
            registry.to_string(),
            repository,
            tag.unwrap_or("latest").to_string(),
        ),
    }
}

/// Builds the registry client for these options.
pub fn client(options: &RegistryOptions) -> Result<Client, ReferenceError> {
    let mut roots = Vec::new();
    for path in &options.ca_certificates {
        let data = std::fs::read(path).map_err(|source| ReferenceError::Certificate {
            path: path.clone(),
            source,
        })?;
        roots.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let protocol = if options.insecure.is_empty() {
        ClientProtocol::Https
    } else {
        ClientProtocol::HttpsExcept(options.insecure.clone())
    };
    Ok(Client::new(ClientConfig {
        protocol,
        extra_root_certificates: roots,
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        max_concurrent_download: 4,
        ..ClientConfig::default()
    }))
}

/// Credentials for `registry`: the options first, then the docker config,
/// else anonymous (the client still performs the anonymous token flow).
pub fn auth_for(registry: &str, options: &RegistryOptions) -> RegistryAuth {
    match options.credentials.get(registry) {
        Some(Credentials::Basic { username, password }) => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
        Some(Credentials::Bearer { token }) => RegistryAuth::Bearer(token.clone()),
        None => docker_config_auth(registry, options.docker_config.as_deref())
            .unwrap_or(RegistryAuth::Anonymous),
    }
}

fn default_docker_config() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
    }
}

/// `auths.<registry>.auth` (base64 `user:password`) from a docker config.
/// Credential helpers are not supported: they run arbitrary programs.
fn docker_config_auth(registry: &str, path: Option<&Path>) -> Option<RegistryAuth> {
    use base64::Engine;
    let path = path.map(Path::to_path_buf).or_else(default_docker_config)?;
    let text = std::fs::read_to_string(path).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let entry = auths.iter().find_map(|(key, value)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        (host == registry).then_some(value)
    })?;
    let encoded = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(RegistryAuth::Basic(user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_registries_follow_dockers_rule() {
        assert!(!has_explicit_registry("python:3.12"));
        assert!(!has_explicit_registry("library/python"));
        assert!(has_explicit_registry("127.0.0.1:5000/x"));
        assert!(has_explicit_registry("localhost/x"));
        assert!(has_explicit_registry("registry.example/x/y:1"));
    }

    #[test]
    fn a_mirror_serves_short_names_and_keeps_the_canonical_name() {
        let options = RegistryOptions {
            mirror: Some("127.0.0.1:5000".into()),
            ..Default::default()
        };
        let short = ImageRef::parse("python:3.12", &options).unwrap();
        assert_eq!(short.registry(), "127.0.0.1:5000");
        assert_eq!(short.fetch.repository(), "library/python");
        assert_eq!(short.fetch.tag(), Some("3.12"));
        assert!(short.name.ends_with("/library/python:3.12"));
        assert!(!short.name.starts_with("127.0.0.1"));

        let other = ImageRef::parse("127.0.0.1:5444/team/app@sha256:0123456789012345678901234567890123456789012345678901234567890123", &options).unwrap();
        assert_eq!(other.registry(), "127.0.0.1:5444");
        assert!(other.fetch.digest().is_some());
    }

    #[test]
    fn invalid_references_are_errors() {
        for bad in ["", "has spaces", "a@sha256:short", "-leading/dash", "x:"] {
            assert!(
                ImageRef::parse(bad, &RegistryOptions::default()).is_err(),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn credentials_come_from_options_then_the_docker_config() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p");
        std::fs::write(
            &config,
            format!(r#"{{"auths": {{"https://127.0.0.1:5444/v1/": {{"auth": "{auth}"}}}}}}"#),
        )
        .unwrap();
        let mut options = RegistryOptions {
            docker_config: Some(config),
            ..Default::default()
        };
        assert_eq!(
            auth_for("127.0.0.1:5444", &options),
            RegistryAuth::Basic("u".into(), "p".into())
        );
        assert_eq!(
            auth_for("127.0.0.1:5000", &options),
            RegistryAuth::Anonymous
        );
        options.credentials.insert(
            "127.0.0.1:5444".into(),
            Credentials::Bearer { token: "t".into() },
        );
        assert_eq!(
            auth_for("127.0.0.1:5444", &options),
            RegistryAuth::Bearer("t".into())
        );
    }
}
