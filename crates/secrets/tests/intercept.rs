//! A real TLS round trip on loopback: a rustls client as the guest, trusting only the sandbox
//! CA; the interceptor in the middle; a TLS server as the upstream, with a certificate from a
//! test CA that the interceptor trusts, recording every plaintext byte it receives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use msb_control::secrets::{OnViolation, SecretEnv, SecretLocation, SecretValue};
use msb_secrets::{
    upstream_client_config, FoundIn, InterceptError, Interceptor, Reason, SandboxCa, Secrets,
    Transfer, UpstreamTrust, Violation,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const API: &str = "api.example.test";
const OTHER: &str = "other.example.test";
const VALUE: &str = "sk-live-REAL-VALUE-0123456789";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A CA of the test's own, standing for a public CA (or one that nobody trusts).
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// An HTTPS server answering `200 ok` to each request (Content-Length framing only), and
/// recording every byte it received.
struct Upstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Upstream {
    async fn start(config: Arc<ServerConfig>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = received.clone();
        tokio::spawn(async move {
            let acceptor = TlsAcceptor::from(config);
            while let Ok((tcp, _)) = listener.accept().await {
                let record = record.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(len) = complete_request(&pending) {
                            pending.drain(..len);
                            let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if tls.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
        Upstream { addr, received }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// Length of the first complete request in `buf` (head plus Content-Length body).
fn complete_request(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    (buf.len() >= head_end + body).then_some(head_end + body)
}

struct Sandbox {
    secrets: Arc<Secrets>,
    ca: Arc<SandboxCa>,
    interceptor: Interceptor,
}

impl Sandbox {
    /// Secret `KEY` allowed to [`API`] only; the interceptor trusts `trusted` upstream.
    fn new(trusted: &TestCa) -> Sandbox {
        let secrets = Arc::new(
            Secrets::new(vec![SecretEnv {
                name: "KEY".into(),
                value: SecretValue::new(VALUE),
                domains: vec![API.into()],
                placeholder: None,
                locations: vec![SecretLocation::Headers, SecretLocation::BasicAuth],
                on_violation: OnViolation::BlockAndKill,
                require_tls: true,
            }])
            .unwrap(),
        );
        let ca = Arc::new(SandboxCa::generate().unwrap());
        let upstream = upstream_client_config(&UpstreamTrust {
            native_roots: false,
            extra_ca_pems: vec![trusted.pem.clone()],
        })
        .unwrap();
        let interceptor = Interceptor::new(secrets.clone(), ca.clone(), upstream);
        Sandbox {
            secrets,
            ca,
            interceptor,
        }
    }

    fn placeholder(&self) -> &str {
        self.secrets.placeholder("KEY").unwrap()
    }

    /// The guest's TLS client: trusts the sandbox CA and nothing else.
    fn guest_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert_der().clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// What one guest connection saw: the responses it read (all bytes, to EOF), or the error
/// that ended it; the interceptor's result; the violations reported; whether it connected
/// upstream.
struct Run {
    guest: Result<String, std::io::Error>,
    alpn: Option<Vec<u8>>,
    intercept: Result<Transfer, InterceptError>,
    violations: Vec<Violation>,
    connected: bool,
}

/// One guest connection with server name `sni`, intercepted for `host`, sending `requests`
/// one at a time (each after the previous response), then closing.
async fn run(
    sandbox: &Sandbox,
    guest_alpn: &[&[u8]],
    sni: &str,
    host: &str,
    upstream: SocketAddr,
    requests: Vec<String>,
) -> Run {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let guest_addr = listener.local_addr().unwrap();
    let connected = AtomicBool::new(false);
    let mut violations = Vec::new();

    let middle = async {
        let (stream, _) = listener.accept().await.unwrap();
        sandbox
            .interceptor
            .intercept(
                stream,
                host,
                443,
                || {
                    connected.store(true, Ordering::SeqCst);
                    TcpStream::connect(upstream)
                },
                |v| violations.push(v.clone()),
            )
            .await
    };
    let guest_config = sandbox.guest_config(guest_alpn);
    let sni = ServerName::try_from(sni.to_owned()).unwrap();
    let guest = async {
        let tcp = TcpStream::connect(guest_addr).await?;
        let mut tls = TlsConnector::from(guest_config).connect(sni, tcp).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let mut seen = Vec::new();
        for request in &requests {
            tls.write_all(request.as_bytes()).await?;
            // Read one response: "ok" ends each.
            loop {
                let mut buf = [0u8; 4096];
                let n = tls.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("closed after {:?}", String::from_utf8_lossy(&seen)),
                    ));
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.ends_with(b"ok") {
                    break;
                }
            }
        }
        tls.shutdown().await?;
        let mut rest = Vec::new();
        let _ = tls.read_to_end(&mut rest).await;
        seen.extend_from_slice(&rest);
        Ok((String::from_utf8_lossy(&seen).into_owned(), alpn))
    };
    let both = async { tokio::join!(guest, middle) };
    let (guest, intercept) = tokio::time::timeout(Duration::from_secs(20), both)
        .await
        .expect("round trip hung");
    let (guest, alpn) = match guest {
        Ok((text, alpn)) => (Ok(text), alpn),
        Err(e) => (Err(e), None),
    };
    Run {
        guest,
        alpn,
        intercept,
        violations,
        connected: connected.load(Ordering::SeqCst),
    }
}

#[tokio::test]
async fn upstream_gets_the_value_and_the_guest_never_does() {
    let public = TestCa::new();
    let upstream = Upstream::start(public.server_config(&[API, OTHER])).await;
    let sandbox = Sandbox::new(&public);
    let p = sandbox.placeholder().to_owned();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{p}"));
    let requests = vec![
        format!("GET /v1/models HTTP/1.1\r\nHost: {API}\r\nAuthorization: Bearer {p}\r\n\r\n"),
        format!(
            "POST /v1/x HTTP/1.1\r\nHost: {API}\r\nAuthorization: Basic {basic}\r\nContent-Length: 4\r\n\r\nbody"
        ),
    ];
    let done = run(
        &sandbox,
        &[b"h2", b"http/1.1"],
        API,
        API,
        upstream.addr,
        requests,
    )
    .await;

    let seen = done.guest.expect("guest's requests succeed");
    assert_eq!(seen.matches("HTTP/1.1 200 OK").count(), 2, "{seen}");
    assert!(!seen.contains(VALUE));
    assert_eq!(
        done.alpn.as_deref(),
        Some(&b"http/1.1"[..]),
        "h2 was not selected"
    );
    let transfer = done.intercept.expect("clean close");
    assert_eq!(transfer.requests, 2);
    assert!(done.violations.is_empty());

    let received = upstream.received();
    assert!(
        received.contains(&format!("Authorization: Bearer {VALUE}\r\n")),
        "{received}"
    );
    let basic_value = base64::engine::general_purpose::STANDARD.encode(format!("user:{VALUE}"));
    assert!(received.contains(&format!("Authorization: Basic {basic_value}\r\n")));
    assert!(received.ends_with("\r\n\r\nbody"));
    assert!(
        !received.contains(&p),
        "no placeholder reaches the upstream"
    );
}

#[tokio::test]
async fn placeholder_to_a_host_it_is_not_for_is_blocked() {
    let public = TestCa::new();
    let upstream = Upstream::start(public.server_config(&[API, OTHER])).await;
    let sandbox = Sandbox::new(&public);
    let p = sandbox.placeholder().to_owned();

    // Intercepted (as under intercept mode "all"), but the secret is not for this host.
    let request = format!("GET / HTTP/1.1\r\nHost: {OTHER}\r\nX-Api-Key: {p}\r\n\r\n");
    let blocked = run(
        &sandbox,
        &[b"http/1.1"],
        OTHER,
        OTHER,
        upstream.addr,
        vec![request],
    )
    .await;
    assert!(blocked.guest.is_err(), "the guest gets no response");
    let expected = Violation {
        secret: "KEY".into(),
        reason: Reason::HostNotAllowed,
        location: FoundIn::Header,
        form: msb_secrets::Form::Literal,
        action: OnViolation::BlockAndKill,
    };
    assert_eq!(blocked.violations, vec![expected.clone()]);
    assert!(matches!(blocked.intercept, Err(InterceptError::Blocked(v)) if v == expected));
    assert!(blocked.connected);
    assert_eq!(
        upstream.received(),
        "",
        "no request byte reached the upstream"
    );

    // The allowed host's connection, asked for another host by `Host`.
    let request = format!("GET / HTTP/1.1\r\nHost: {OTHER}\r\nX-Api-Key: {p}\r\n\r\n");
    let mismatch = run(
        &sandbox,
        &[b"http/1.1"],
        API,
        API,
        upstream.addr,
        vec![request],
    )
    .await;
    assert!(mismatch.guest.is_err());
    assert_eq!(mismatch.violations.len(), 1);
    assert_eq!(mismatch.violations[0].reason, Reason::HostMismatch);
    assert_eq!(upstream.received(), "");
}

#[tokio::test]
async fn untrusted_upstream_fails_the_guest_with_nothing_sent() {
    let public = TestCa::new();
    let impostor = TestCa::new();
    let upstream = Upstream::start(impostor.server_config(&[API])).await;
    let sandbox = Sandbox::new(&public);
    let p = sandbox.placeholder().to_owned();
    let request = format!("GET / HTTP/1.1\r\nHost: {API}\r\nAuthorization: Bearer {p}\r\n\r\n");
    let failed = run(
        &sandbox,
        &[b"http/1.1"],
        API,
        API,
        upstream.addr,
        vec![request],
    )
    .await;
    assert!(failed.guest.is_err(), "the guest's handshake fails");
    assert!(matches!(
        failed.intercept,
        Err(InterceptError::UpstreamHandshake(_))
    ));
    assert!(failed.violations.is_empty());
    assert_eq!(upstream.received(), "");
}

#[tokio::test]
async fn refused_before_connecting_upstream() {
    let public = TestCa::new();
    let upstream = Upstream::start(public.server_config(&[API])).await;
    let sandbox = Sandbox::new(&public);
    let get = format!("GET / HTTP/1.1\r\nHost: {API}\r\n\r\n");

    // A guest that only speaks HTTP/2.
    let run1 = run(
        &sandbox,
        &[b"h2"],
        API,
        API,
        upstream.addr,
        vec![get.clone()],
    )
    .await;
    assert!(run1.guest.is_err());
    assert!(matches!(run1.intercept, Err(InterceptError::NoHttp1)));
    assert!(!run1.connected);

    // A server name other than the one the caller intercepted for.
    let run2 = run(
        &sandbox,
        &[b"http/1.1"],
        OTHER,
        API,
        upstream.addr,
        vec![get],
    )
    .await;
    assert!(run2.guest.is_err());
    assert!(matches!(
        run2.intercept,
        Err(InterceptError::SniMismatch { sent: Some(ref s), .. }) if s == OTHER
    ));
    assert!(!run2.connected);
    assert_eq!(upstream.received(), "");
}

#[test]
fn caller_decides_by_server_name() {
    let public = TestCa::new();
    let sandbox = Sandbox::new(&public);
    // What the caller does under "secrets-only": intercept API, relay OTHER untouched.
    assert!(sandbox.secrets.any_for_host(API));
    assert!(!sandbox.secrets.any_for_host(OTHER));
    let mut conn = rustls::ClientConnection::new(
        sandbox.guest_config(&[b"http/1.1"]),
        ServerName::try_from(API).unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert_eq!(
        msb_secrets::peek_sni(&hello),
        msb_secrets::SniPeek::Sni(API.into())
    );
    // The guest trusts exactly this PEM.
    let der = CertificateDer::from_pem_slice(sandbox.ca.cert_pem().as_bytes()).unwrap();
    assert_eq!(&der, sandbox.ca.cert_der());
}

use rustls::pki_types::pem::PemObject as _;
