//! The per-sandbox certificate authority and both TLS configurations of an intercepted
//! connection.
//!
//! - [`SandboxCa`]: generated in memory when the sandbox starts; its private key never leaves
//!   the runtime process (this crate writes nothing to disk). Only its certificate
//!   ([`SandboxCa::cert_pem`]) goes to the guest, for its trust store. It issues one leaf
//!   certificate per server name the guest connects to, kept in a bounded cache.
//! - The guest-facing [`ServerConfig`] offers ALPN `http/1.1` only. The rewriter parses
//!   HTTP/1.1; HTTP/2 would need a full HPACK and stream implementation to find and replace a
//!   header. Every mainstream HTTP client falls back to HTTP/1.1 when the server does not
//!   select `h2`; a client that insists on `h2` (gRPC) fails the handshake with
//!   `no_application_protocol`, visibly, rather than getting an unrewritten connection.
//! - The upstream [`ClientConfig`] verifies the real server against the host's trust store
//!   (the native certificates) plus any CA the caller adds (a corporate proxy's, a test's),
//!   and also offers only `http/1.1`, since the rewriter's output is HTTP/1.1.
//!
//! Crypto is `aws-lc-rs`, the provider the rest of the workspace's rustls already builds
//! with, chosen explicitly so no process-wide default provider is needed.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use time::OffsetDateTime;

/// The only application protocol either side of an interception offers.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// Leaf certificates (one per server name) kept: generating one costs an ECDSA key and a
/// signature, about a millisecond; a sandbox rarely talks to more hosts than this at once.
pub const LEAF_CACHE_SIZE: usize = 256;
/// A cached leaf is reissued after this long, well inside its validity (398 days, the
/// longest clients accept for a TLS server certificate).
const LEAF_REISSUE_AFTER: Duration = Duration::from_secs(300 * 24 * 3600);
const LEAF_VALIDITY_DAYS: i64 = 398;
const CA_VALIDITY_DAYS: i64 = 10 * 365;
/// Backdating covers a guest whose clock lags the host's.
const BACKDATE_DAYS: i64 = 1;

/// Why the CA or a leaf could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating a certificate failed")]
    Generate(#[source] rcgen::Error),
    #[error("`{0}` is not a DNS name a certificate can be issued for")]
    BadName(String),
    #[error("building the TLS configuration failed")]
    Tls(#[source] rustls::Error),
    #[error("the system's random source failed")]
    Random,
}

/// Why the upstream trust store could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("extra CA PEM [{index}] holds no certificate")]
    EmptyPem { index: usize },
    #[error("extra CA PEM [{index}] does not parse")]
    BadPem {
        index: usize,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("extra CA PEM [{index}] is not a usable trust anchor")]
    BadAnchor {
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("no trust anchors: the host has no native certificates and none were given")]
    NoRoots,
    #[error("building the TLS configuration failed")]
    Tls(#[source] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A sandbox's certificate authority. Share it (`Arc`) between connections.
pub struct SandboxCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<LeafCache>,
}

impl fmt::Debug for SandboxCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxCa").finish_non_exhaustive()
    }
}

impl SandboxCa {
    /// A fresh CA: ECDSA P-256 key, random serial, named `microsandbox sandbox CA <id>` so a
    /// guest's trust store shows which sandbox installed it. Constrained to issue only leaves
    /// (path length 0).
    pub fn generate() -> Result<SandboxCa, CaError> {
        let provider = provider();
        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        let mut id = [0u8; 6];
        provider
            .secure_random
            .fill(&mut id)
            .map_err(|_| CaError::Random)?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("microsandbox sandbox CA {id}"));
        name.push(DnType::OrganizationName, "microsandbox");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(BACKDATE_DAYS);
        params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
        params.serial_number = Some(serial(&provider)?);
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(SandboxCa {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            provider,
            leaves: Mutex::new(LeafCache::default()),
        })
    }

    /// The CA certificate, PEM: what the guest adds to its trust store.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The guest-facing TLS configuration for `host` (a DNS name: the server name the guest
    /// sent), with a leaf certificate for it. Cached per name, at most [`LEAF_CACHE_SIZE`],
    /// least recently used evicted first.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let host = msb_control::secrets::normalize_host(host);
        if let Some(config) = self.lock_leaves().get(&host) {
            return Ok(config);
        }
        // Issued without the lock: two first connections to one host may both issue, and the
        // second insert wins; both certificates are valid.
        let config = self.issue(&host)?;
        self.lock_leaves().insert(host, config.clone());
        Ok(config)
    }

    fn lock_leaves(&self) -> std::sync::MutexGuard<'_, LeafCache> {
        // A panic while holding the lock cannot leave the cache inconsistent (every change is
        // a single insert or remove), so a poisoned lock is still usable.
        self.leaves.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn issue(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        // rcgen takes any IA5 string; rustls's DNS name rules are what a client checks.
        let bad_name = || CaError::BadName(host.to_owned());
        rustls::pki_types::DnsName::try_from(host).map_err(|_| bad_name())?;
        let name = host.to_owned().try_into().map_err(|_| bad_name())?;
        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::DnsName(name)];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(BACKDATE_DAYS);
        params.not_after = now + time::Duration::days(LEAF_VALIDITY_DAYS - BACKDATE_DAYS);
        params.serial_number = Some(serial(&self.provider)?);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Generate)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(CaError::Tls)?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .map_err(CaError::Tls)?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }
}

/// A positive 128-bit serial (RFC 5280 allows up to 20 octets; the top bit is cleared so the
/// DER integer stays positive).
fn serial(provider: &CryptoProvider) -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    provider
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01 << 6; // never a leading zero octet
    Ok(SerialNumber::from_slice(&bytes))
}

/// Least-recently-used map from server name to its configuration. A linear scan on eviction:
/// at 256 entries it costs less than issuing one certificate.
#[derive(Default)]
struct LeafCache {
    entries: HashMap<String, Leaf>,
    tick: u64,
}

struct Leaf {
    config: Arc<ServerConfig>,
    issued: Instant,
    used: u64,
}

impl LeafCache {
    fn get(&mut self, host: &str) -> Option<Arc<ServerConfig>> {
        self.tick += 1;
        let tick = self.tick;
        match self.entries.get_mut(host) {
            Some(leaf) if leaf.issued.elapsed() < LEAF_REISSUE_AFTER => {
                leaf.used = tick;
                Some(leaf.config.clone())
            }
            Some(_) => {
                self.entries.remove(host);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, host: String, config: Arc<ServerConfig>) {
        self.tick += 1;
        if self.entries.len() >= LEAF_CACHE_SIZE && !self.entries.contains_key(&host) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, leaf)| leaf.used)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            host,
            Leaf {
                config,
                issued: Instant::now(),
                used: self.tick,
            },
        );
    }
}

/// What the upstream leg trusts.
#[derive(Clone, Debug, Default)]
pub struct UpstreamTrust {
    /// The host's native trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set, otherwise the
    /// platform's certificates).
    pub native_roots: bool,
    /// More CA certificates, PEM (each may hold several): a corporate proxy's, a test's.
    pub extra_ca_pems: Vec<String>,
}

impl UpstreamTrust {
    /// The host's trust store only.
    pub fn native() -> UpstreamTrust {
        UpstreamTrust {
            native_roots: true,
            extra_ca_pems: Vec::new(),
        }
    }
}

/// The upstream TLS configuration. Build it once per runtime (loading the native store reads
/// and parses every certificate on the host) and share it.
pub fn upstream_client_config(trust: &UpstreamTrust) -> Result<Arc<ClientConfig>, TrustError> {
    let mut roots = RootCertStore::empty();
    if trust.native_roots {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "some native CA certificates could not be loaded");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "native CA certificates");
    }
    for (index, pem) in trust.extra_ca_pems.iter().enumerate() {
        let mut any = false;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|source| TrustError::BadPem { index, source })?;
            roots
                .add(cert)
                .map_err(|source| TrustError::BadAnchor { index, source })?;
            any = true;
        }
        if !any {
            return Err(TrustError::EmptyPem { index });
        }
    }
    if roots.is_empty() {
        return Err(TrustError::NoRoots);
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TrustError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_issues_cached_leaves() {
        let ca = SandboxCa::generate().unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
        let a = ca.server_config("API.example.com").unwrap();
        let b = ca.server_config("api.example.com.").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one leaf per name");
        assert_eq!(a.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(matches!(
            ca.server_config("not a name"),
            Err(CaError::BadName(_))
        ));
        // Two CAs are different CAs.
        assert_ne!(SandboxCa::generate().unwrap().cert_der(), ca.cert_der());
    }

    #[test]
    fn leaf_cache_is_bounded_lru() {
        let ca = SandboxCa::generate().unwrap();
        let first = ca.server_config("h0.example").unwrap();
        for i in 1..LEAF_CACHE_SIZE {
            ca.server_config(&format!("h{i}.example")).unwrap();
        }
        // Touch h0 so h1 is now the least recently used.
        assert!(Arc::ptr_eq(
            &first,
            &ca.server_config("h0.example").unwrap()
        ));
        ca.server_config("new.example").unwrap();
        let cache = ca.lock_leaves();
        assert_eq!(cache.entries.len(), LEAF_CACHE_SIZE);
        assert!(cache.entries.contains_key("h0.example"));
        assert!(!cache.entries.contains_key("h1.example"));
    }

    #[test]
    fn upstream_trust() {
        let ca = SandboxCa::generate().unwrap();
        let config = upstream_client_config(&UpstreamTrust {
            native_roots: false,
            extra_ca_pems: vec![ca.cert_pem().to_owned()],
        })
        .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(matches!(
            upstream_client_config(&UpstreamTrust::default()),
            Err(TrustError::NoRoots)
        ));
        assert!(matches!(
            upstream_client_config(&UpstreamTrust {
                native_roots: false,
                extra_ca_pems: vec!["not a pem".into()],
            }),
            Err(TrustError::EmptyPem { index: 0 })
        ));
    }
}
