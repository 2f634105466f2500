//! One intercepted TLS connection, from the guest's ClientHello to both sides closing.
//!
//! Order of events, each step bounded by [`Limits::handshake_timeout`]:
//! 1. read the guest's ClientHello; its server name must be the host the caller intercepted
//!    for, and if it offers ALPN it must offer `http/1.1`;
//! 2. connect upstream (the caller's connector) and complete the upstream TLS handshake,
//!    verified for that host. Any failure ends here: the guest's handshake never completes, so
//!    its request fails, and the upstream received a handshake but no request byte;
//! 3. complete the guest's handshake with a leaf the sandbox CA issued for the host;
//! 4. relay: guest to upstream through a [`RequestRewriter`], upstream to guest unchanged,
//!    until both directions closed or the rewriter stops. A violation is passed to the
//!    caller's callback and ends the connection at once, both sides dropped.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::server::Acceptor;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};
use zeroize::Zeroize;

use crate::rewrite::{Limits, RequestRewriter, RewriteError, Violation};
use crate::secrets::Secrets;
use crate::tls::{CaError, SandboxCa, ALPN_HTTP1};
use msb_control::secrets::normalize_host;

/// Bytes read from either side at a time.
const READ_BUF: usize = 16 * 1024;

/// Why an intercepted connection ended other than by both sides closing. None of these
/// messages holds request bytes or a value.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("`{0}` is not a DNS name to intercept for")]
    BadHost(String),
    #[error("guest TLS handshake failed")]
    GuestHandshake(#[source] io::Error),
    #[error("guest's server name {sent:?} is not the intercepted host `{expected}`")]
    SniMismatch {
        expected: String,
        sent: Option<String>,
    },
    #[error("guest does not offer HTTP/1.1 (ALPN)")]
    NoHttp1,
    #[error("issuing the certificate failed")]
    Certificate(#[source] CaError),
    #[error("connecting upstream failed")]
    Connect(#[source] io::Error),
    #[error("upstream TLS handshake failed")]
    UpstreamHandshake(#[source] io::Error),
    #[error("{stage} timed out")]
    Timeout { stage: &'static str },
    #[error("blocked: {0}")]
    Blocked(Violation),
    #[error("request refused")]
    Rewrite(#[source] RewriteError),
    #[error("guest connection failed")]
    Guest(#[source] io::Error),
    #[error("upstream connection failed")]
    Upstream(#[source] io::Error),
}

/// What a connection carried, once both sides closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Request heads the rewriter parsed.
    pub requests: u64,
    /// Plaintext bytes written upstream (after rewriting).
    pub to_upstream: u64,
    /// Plaintext bytes written to the guest.
    pub to_guest: u64,
}

/// Everything a sandbox's intercepted connections share: its secrets, its CA, the upstream
/// trust and the limits. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Interceptor {
    secrets: Arc<Secrets>,
    ca: Arc<SandboxCa>,
    upstream: Arc<ClientConfig>,
    limits: Limits,
}

impl Interceptor {
    /// `upstream`: from [`crate::upstream_client_config`]; its ALPN should be `http/1.1`
    /// only (that function's is).
    pub fn new(secrets: Arc<Secrets>, ca: Arc<SandboxCa>, upstream: Arc<ClientConfig>) -> Self {
        Interceptor {
            secrets,
            ca,
            upstream,
            limits: Limits::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn secrets(&self) -> &Arc<Secrets> {
        &self.secrets
    }

    /// Intercepts one guest connection to `host:port` (`host`: the server name the caller
    /// peeked with [`crate::peek_sni`] and decided to intercept). `connect` opens the TCP
    /// connection to the real server; it is called only after the guest's ClientHello
    /// checked out. `on_violation` hears of a placeholder where it may not go, before the
    /// connection is dropped; the caller logs or kills as [`Violation::action`] says.
    ///
    /// Returns when both directions closed. Runs on the caller's task; the future is `Send`
    /// when the streams, the connector and the callback are.
    pub async fn intercept<G, U, C, F, V>(
        &self,
        guest: G,
        host: &str,
        port: u16,
        connect: C,
        mut on_violation: V,
    ) -> Result<Transfer, InterceptError>
    where
        G: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
        C: FnOnce() -> F,
        F: Future<Output = io::Result<U>>,
        V: FnMut(&Violation),
    {
        let host = normalize_host(host);
        let server_name = ServerName::try_from(host.clone())
            .ok()
            .filter(|name| matches!(name, ServerName::DnsName(_)))
            .ok_or_else(|| InterceptError::BadHost(host.clone()))?;
        let timeout = self.limits.handshake_timeout;

        let start = within(
            timeout,
            "guest ClientHello",
            LazyConfigAcceptor::new(Acceptor::default(), guest),
        )
        .await?
        .map_err(InterceptError::GuestHandshake)?;
        let hello = start.client_hello();
        let sent = hello.server_name().map(normalize_host);
        if sent.as_deref() != Some(host.as_str()) {
            return Err(InterceptError::SniMismatch {
                expected: host,
                sent,
            });
        }
        // Checked before anything is connected: the handshake would fail anyway (no common
        // protocol), and the upstream need not see a connection for it.
        if let Some(mut offered) = hello.alpn() {
            if !offered.any(|p| p == ALPN_HTTP1) {
                return Err(InterceptError::NoHttp1);
            }
        }
        let server_config = self
            .ca
            .server_config(&host)
            .map_err(InterceptError::Certificate)?;

        let tcp = within(timeout, "upstream connect", connect())
            .await?
            .map_err(InterceptError::Connect)?;
        let upstream = within(
            timeout,
            "upstream TLS handshake",
            TlsConnector::from(self.upstream.clone()).connect(server_name, tcp),
        )
        .await?
        .map_err(InterceptError::UpstreamHandshake)?;

        let guest = within(
            timeout,
            "guest TLS handshake",
            start.into_stream(server_config),
        )
        .await?
        .map_err(InterceptError::GuestHandshake)?;
        tracing::debug!(%host, port, "intercepting");
        self.relay(guest, upstream, &host, &mut on_violation).await
    }

    // Generic over the callback (not `dyn`), so the future is `Send` when the callback is.
    async fn relay<G, U, V>(
        &self,
        guest: G,
        upstream: U,
        host: &str,
        on_violation: &mut V,
    ) -> Result<Transfer, InterceptError>
    where
        G: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
        V: FnMut(&Violation),
    {
        let (mut guest_rd, mut guest_wr) = tokio::io::split(guest);
        let (mut up_rd, mut up_wr) = tokio::io::split(upstream);
        let mut rewriter =
            RequestRewriter::new(self.secrets.clone(), host, true, self.limits.clone());

        let to_upstream = async {
            let mut buf = vec![0u8; READ_BUF];
            let mut out = Vec::with_capacity(READ_BUF);
            let mut sent = 0u64;
            loop {
                let n = read_or_eof(&mut guest_rd, &mut buf)
                    .await
                    .map_err(InterceptError::Guest)?;
                let result = if n == 0 {
                    rewriter.finish(&mut out)
                } else {
                    rewriter.feed(&buf[..n], &mut out)
                };
                match result {
                    Ok(()) => {}
                    Err(RewriteError::Violation(violation)) => {
                        on_violation(&violation);
                        return Err(InterceptError::Blocked(violation));
                    }
                    // The guest closed in the middle of a request: what was held of it is
                    // dropped, the upstream sees the close.
                    Err(RewriteError::Truncated) => {}
                    Err(e) => return Err(InterceptError::Rewrite(e)),
                }
                if !out.is_empty() {
                    up_wr
                        .write_all(&out)
                        .await
                        .map_err(InterceptError::Upstream)?;
                    up_wr.flush().await.map_err(InterceptError::Upstream)?;
                    sent += out.len() as u64;
                    // It may hold a value: clear it rather than leave it for the allocator.
                    out.zeroize();
                }
                if n == 0 {
                    up_wr.shutdown().await.map_err(InterceptError::Upstream)?;
                    return Ok((sent, rewriter.requests()));
                }
            }
        };
        let to_guest = async {
            let mut buf = vec![0u8; READ_BUF];
            let mut sent = 0u64;
            loop {
                let n = read_or_eof(&mut up_rd, &mut buf)
                    .await
                    .map_err(InterceptError::Upstream)?;
                if n == 0 {
                    guest_wr.shutdown().await.map_err(InterceptError::Guest)?;
                    return Ok(sent);
                }
                guest_wr
                    .write_all(&buf[..n])
                    .await
                    .map_err(InterceptError::Guest)?;
                guest_wr.flush().await.map_err(InterceptError::Guest)?;
                sent += n as u64;
            }
        };
        let ((to_upstream, requests), to_guest) = tokio::try_join!(to_upstream, to_guest)?;
        Ok(Transfer {
            requests,
            to_upstream,
            to_guest,
        })
    }
}

/// A read where a peer that closes TCP without TLS `close_notify` counts as closing: many
/// HTTPS servers do, and the response was complete by its own framing.
async fn read_or_eof<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    match reader.read(buf).await {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    }
}

async fn within<T>(
    limit: Duration,
    stage: &'static str,
    fut: impl Future<Output = T>,
) -> Result<T, InterceptError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| InterceptError::Timeout { stage })
}
