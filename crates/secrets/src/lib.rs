//! Secrets that never enter the VM.
//!
//! The guest gets a placeholder in place of each secret environment variable
//! (`OPENAI_API_KEY=msb_secret_OPENAI_API_KEY_<24 random base62>`). The sandbox's runtime
//! intercepts the guest's TLS connections to the secrets' hosts with a per-sandbox CA (whose
//! certificate the guest trusts), and replaces the placeholder with the real value only in
//! requests to a host the secret allows, in a location it allows. Everywhere else a
//! placeholder is a [`Violation`]: the request is not forwarded and the caller is told.
//!
//! This crate is the library for that; it opens no socket and spawns no task of its own:
//! - [`Secrets::new`]: validates the caller's configuration (the contract crate's plain data,
//!   [`msb_control::secrets::SecretEnv`] and friends) into the immutable set every connection
//!   shares, placeholders fixed;
//! - [`SandboxCa`]: the CA, generated in memory, and its leaf certificates;
//!   [`upstream_client_config`]: how the real servers are verified;
//! - [`peek_sni`]: the server name from a ClientHello the caller peeked at, to decide whether
//!   to intercept;
//! - [`RequestRewriter`]: the HTTP/1.1 request stream rewriter (sans-IO, see its module for
//!   the rules a request must meet for a value to be substituted);
//! - [`Interceptor::intercept`]: one connection, guest TLS in, upstream TLS out.
//!
//! # The caller's contract
//! The network stack owns every flow; for a TCP connection from the guest it:
//! 1. peeks at the first bytes and calls [`peek_sni`] (again as bytes arrive, up to
//!    [`MAX_CLIENT_HELLO`]);
//! 2. decides. Under intercept mode "secrets-only" it intercepts exactly when
//!    [`Secrets::any_for_host`] is true for the name; otherwise it does **not** call this
//!    crate at all and relays the connection byte for byte, so a connection to a host no
//!    secret names is never decrypted. (A placeholder sent there is not detected: it is only
//!    a placeholder, and that host gets nothing else.) The policy's verdict on the destination
//!    comes first either way;
//! 3. calls [`Interceptor::intercept`] with the guest stream, the name, and a connector for
//!    the upstream TCP connection (to the address the policy allowed);
//! 4. on [`Violation`]: the connection is already closed; it logs (the violation holds only
//!    names, never values or request bytes) and kills the sandbox if
//!    [`Violation::action`] says so.
//!
//! # Threading
//! [`Interceptor::intercept`] is one future per connection, driven by whichever task awaits
//! it (the runtime's single-threaded tokio runtime, or a task per flow). It does its work on
//! that task: both directions are polled by the same future (`try_join`), no task is spawned,
//! no channel is used. Shared state is immutable ([`Secrets`]) or behind a short mutex (the
//! leaf cache inside [`SandboxCa`], never held across an await). [`RequestRewriter`] itself
//! does no IO: it is fed bytes and returns bytes, which is what the unit tests and the fuzz
//! target drive.
//!
//! # Bounds (what a hostile guest can make the host hold, per connection)
//! - a request head or trailer section: [`Limits::max_head`] (64 KiB) and
//!   [`Limits::max_headers`]; a larger one ends the connection;
//! - bodies stream through: the rewriter keeps a look-behind of at most 3 × the longest
//!   placeholder form (a few hundred bytes) to find a placeholder split across reads, and
//!   holds back only a suffix that could still become a placeholder it may replace. The one
//!   exception is a `Content-Length` body in which a value may be substituted: its length
//!   changes, so it is held whole, up to [`Limits::max_buffered_body`] (1 MiB);
//! - replacements: [`Limits::max_substitutions`] per request, each at most
//!   [`msb_control::secrets::MAX_VALUE_LEN`] bytes;
//! - two 16 KiB read buffers and rustls's own buffers; the leaf cache is shared,
//!   [`LEAF_CACHE_SIZE`] entries;
//! - time: each handshake and the upstream connect within [`Limits::handshake_timeout`];
//!   idle connections are the caller's to time out (as for any flow).
//!
//! # What is never logged or shown
//! Values: [`msb_control::secrets::SecretValue`] is zeroed on drop and redacted in `Debug`; no error or violation
//! holds a value or request bytes (errors name fields, secrets and hosts). Buffers that held a
//! value on the way out are zeroed after writing; copies inside rustls's buffers and the
//! caller's own (a deserializer's input) are outside this crate's reach. The CA's private key
//! lives only in this process's memory.
//!
//! # What is detected
//! In every request on an intercepted connection, for every secret: the literal placeholder
//! anywhere (request line, header names and values, Basic credentials, body, trailers, an
//! upgraded stream), its base64 (both alphabets, any alignment), and either one
//! percent-encoded; split across reads or chunks included. Not detected: other encodings
//! (hex, double encoding, base64 broken across lines, compressed bodies, changed case). Those
//! cannot get a value out either: only a literal placeholder, in an allowed request, is ever
//! replaced. What the allowed upstream does with the value (echoing it in a response, which
//! goes back to the guest unchanged) is outside what interception can control, which is why
//! query, path and body substitution are opt-in.

mod client_hello;
pub mod config;
mod intercept;
mod rewrite;
#[doc(hidden)]
pub mod rewrite_check;
mod scan;
mod secrets;
mod tls;

pub use client_hello::{peek_sni, SniPeek, MAX_CLIENT_HELLO};
pub use config::ConfigError;
pub use intercept::{InterceptError, Interceptor, Transfer};
pub use rewrite::{FoundIn, Limits, Reason, RequestRewriter, RewriteError, Violation};
pub use scan::Form;
pub use secrets::Secrets;
pub use tls::{
    upstream_client_config, CaError, SandboxCa, TrustError, UpstreamTrust, ALPN_HTTP1,
    LEAF_CACHE_SIZE,
};
