//! TLS interception for secrets: which flows are handed to `msb-secrets`, and the task that
//! carries each one.
//!
//! Only a stack built with an [`Interception`] ever looks at a flow's bytes; without one
//! (a sandbox with no secrets) every flow is relayed as before and nothing here runs.
//!
//! # Deciding
//! With an interception, a new TCP flow starts *deciding*: the guest's first bytes stay in
//! the smoltcp receive buffer (nothing is forwarded yet; bytes from the host still reach the
//! guest, for protocols where the server speaks first) and are peeked with
//! [`msb_secrets::peek_sni`] as they arrive. A flow whose first bytes are not a TLS
//! ClientHello, carry no server name, are malformed, or name a host that is not to be
//! intercepted, is relayed unchanged from then on. A ClientHello naming a host to intercept
//! ([`Interception::wants`]: a secret allows the host, or mode "all"; and the host is not in
//! `bypass_domains`) is intercepted only if this sandbox's DNS resolved the flow's
//! destination address from that very name; otherwise the flow is reset and logged, so a guest
//! cannot point a secret's server name at an address of its choosing.
//!
//! # Carrying an intercepted flow
//! The flow's host socket moves to a task of its own ([`spawn`]), which runs
//! [`msb_secrets::Interceptor::intercept`] between the upstream socket and one end of an
//! in-memory duplex ([`tokio::io::duplex`], [`DUPLEX_BUFFER`] bytes each way). The other end
//! takes the host socket's place in the flow's relay, so the stack's task drives it exactly
//! like a socket (readiness, wakers, backpressure: a full duplex stops the guest's window, a
//! guest that does not read stops the task's writes). The task is spawned on the stack's own
//! runtime, holds no state of the stack, and ends when either side closes; dropping the
//! duplex end (the flow ending) ends it too.
//!
//! # Violations
//! The task reports what the interceptor refused through a bounded channel
//! ([`EVENT_QUEUE`] entries; each task sends at most one event and waits for room) that the
//! stack's task drains into the network log, and, for `block-and-kill`, through
//! [`Interception::kill`] to the runtime, which stops the VM. Events hold names (secret,
//! host) and reasons, never a value or request bytes.

use std::net::SocketAddr;

use msb_control::secrets::{domain_matches, InterceptMode, OnViolation};
use msb_secrets::Interceptor;
use tokio::io::DuplexStream;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Bytes buffered each way between an intercepted flow's relay and its task.
pub(crate) const DUPLEX_BUFFER: usize = 64 * 1024;
/// Violation events waiting for the stack's task to log them.
pub(crate) const EVENT_QUEUE: usize = 64;

/// A placeholder sent where it may not go, under a secret whose `onViolation` is
/// `block-and-kill`: the runtime stops the sandbox. Names only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretKill {
    pub secret: String,
    pub host: String,
    pub reason: String,
}

/// How a stack intercepts TLS for secrets (see the module doc).
pub struct Interception {
    pub interceptor: Interceptor,
    pub mode: InterceptMode,
    /// Names never intercepted: exact names and `*.suffix`.
    pub bypass_domains: Vec<String>,
    /// Where `block-and-kill` violations go (the runtime holds the receiver).
    pub kill: mpsc::Sender<SecretKill>,
}

impl Interception {
    /// Whether a flow whose ClientHello names `host` is intercepted.
    pub(crate) fn wants(&self, host: &str) -> bool {
        let named = match self.mode {
            InterceptMode::Off => false,
            InterceptMode::SecretsOnly => self.interceptor.secrets().any_for_host(host),
            InterceptMode::All => true,
        };
        named && !domain_matches(&self.bypass_domains, host)
    }
}

/// What an intercepted flow's task reports to the stack's log.
#[derive(Debug)]
pub(crate) struct SecretEvent {
    /// `host:port` as the guest named it.
    pub(crate) destination: String,
    pub(crate) reason: String,
}

/// The stack's side of interception: the configuration and the event queue.
pub(crate) struct Intercepts {
    pub(crate) config: Interception,
    pub(crate) events_tx: mpsc::Sender<SecretEvent>,
    pub(crate) events_rx: mpsc::Receiver<SecretEvent>,
}

impl Intercepts {
    pub(crate) fn new(config: Interception) -> Intercepts {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Intercepts {
            config,
            events_tx,
            events_rx,
        }
    }

    /// Moves `upstream` to a task of its own that intercepts the flow; returns the stream
    /// that stands for it in the relay.
    pub(crate) fn spawn(&self, upstream: TcpStream, host: String, dst: SocketAddr) -> DuplexStream {
        let (relay_end, task_end) = tokio::io::duplex(DUPLEX_BUFFER);
        let interceptor = self.config.interceptor.clone();
        let events = self.events_tx.clone();
        let kill = self.config.kill.clone();
        tokio::spawn(async move {
            let mut violation = None;
            let result = interceptor
                .intercept(
                    task_end,
                    &host,
                    dst.port(),
                    move || async move { Ok(upstream) },
                    |v: &msb_secrets::Violation| violation = Some(v.clone()),
                )
                .await;
            if let Err(error) = &result {
                tracing::debug!(%host, %dst, %error, "intercepted connection ended");
            }
            let Some(violation) = violation else {
                return;
            };
            if violation.action == OnViolation::BlockAndKill {
                let _ = kill.try_send(SecretKill {
                    secret: violation.secret.clone(),
                    host: host.clone(),
                    reason: violation.reason.to_string(),
                });
            }
            if violation.action != OnViolation::Block {
                let _ = events
                    .send(SecretEvent {
                        destination: format!("{host}:{}", dst.port()),
                        reason: violation.to_string(),
                    })
                    .await;
            }
        });
        relay_end
    }
}
