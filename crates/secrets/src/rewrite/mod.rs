//! The HTTP/1.1 request stream rewriter: guest bytes in, bytes for the upstream out.
//!
//! One [`RequestRewriter`] per connection, fed the guest's decrypted bytes in whatever pieces
//! they arrive. It parses requests one after another (keep-alive, pipelining), and per request
//! replaces the literal placeholders it is allowed to and stops at any other placeholder with
//! a [`Violation`]. Nothing of a request head goes out before the whole head was checked; body
//! bytes go out as they arrive (see [`crate::scan`] for the little held back).
//!
//! A request may have a secret's placeholder replaced when all of these hold:
//! 1. the connection's host (the TLS server name the caller intercepted for) matches one of
//!    the secret's `domains`, and the connection is TLS or the secret does not `requireTls`;
//! 2. the request names the same host: exactly one `Host` header, and for an absolute-form
//!    target (`GET https://h/…`) its authority, equal to the connection's host (case and port
//!    ignored). A shared front end (a CDN) routes by `Host`, so a request for another host on
//!    an allowed connection must not get the value;
//! 3. the method is not `TRACE`, which echoes the request back to the guest;
//! 4. the placeholder is written literally, in a location the secret enables.
//!
//! Framing is parsed strictly and forwarded canonically, so the upstream sees exactly the
//! requests the rewriter judged: the head is rebuilt with CRLF line ends, chunked bodies are
//! re-chunked, and `Content-Length` together with `Transfer-Encoding`, conflicting lengths,
//! transfer codings other than `chunked`, and several `Host` headers are refused as
//! [`RewriteError::Malformed`]. A request with `Upgrade` (or a `CONNECT`) switches the rest of
//! the connection to an opaque stream, which is only scanned: every placeholder in it is a
//! violation (also when the server declined the upgrade and the guest sends more requests).
//!
//! What the upstream never receives, however the guest cuts its bytes: a whole placeholder, in
//! any form [`crate::scan`] detects, contiguous in the stream: each is replaced or refused. When
//! nothing on the connection may replace a placeholder, a proper prefix of it can go out before
//! the bytes that complete it arrive (and are refused); the unit and property tests and the
//! `http_rewrite` fuzz target check this.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use msb_control::secrets::{normalize_host, OnViolation, SecretLocation};

use crate::scan::{scan_complete, Encoding, Form, Region, ScanStop, Scanner};
use crate::secrets::Secrets;

/// Bounds on what one connection can make the rewriter hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A request head (request line and headers) or a trailer section, in bytes. Larger is
    /// [`RewriteError::HeadTooLarge`].
    pub max_head: usize,
    /// Headers in one request head or trailer section.
    pub max_headers: usize,
    /// A `Content-Length` body in which a placeholder may be replaced is held whole, because
    /// its length changes and goes in the head. Larger is [`RewriteError::BodyTooLarge`].
    /// Other bodies are never held. (A client that sends `Expect: 100-continue` and waits for
    /// the `100` before its body waits out its own timeout on such a request, since the head
    /// goes out with the body.)
    pub max_buffered_body: usize,
    /// Placeholders replaced in one request: each adds up to a value's length
    /// ([`msb_control::secrets::MAX_VALUE_LEN`]) to what the rewriter writes.
    pub max_substitutions: usize,
    /// How long each TLS handshake (guest, upstream) and the upstream connect may take.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: 64 * 1024,
            max_headers: 128,
            max_buffered_body: 1024 * 1024,
            max_substitutions: 64,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Where in a request a placeholder was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FoundIn {
    /// The method, or the scheme and authority of an absolute-form target: never replaced.
    RequestLine,
    Path,
    Query,
    /// A header name: never replaced.
    HeaderName,
    /// A header value.
    Header,
    /// The credentials of `Authorization: Basic`.
    BasicAuth,
    Body,
    /// A chunked body's trailer section: never replaced.
    Trailer,
    /// The bytes after a protocol upgrade or `CONNECT`: never replaced.
    AfterUpgrade,
}

impl FoundIn {
    /// The configurable location this is, if any.
    pub fn location(self) -> Option<SecretLocation> {
        match self {
            FoundIn::Path => Some(SecretLocation::Path),
            FoundIn::Query => Some(SecretLocation::Query),
            FoundIn::Header => Some(SecretLocation::Headers),
            FoundIn::BasicAuth => Some(SecretLocation::BasicAuth),
            FoundIn::Body => Some(SecretLocation::Body),
            FoundIn::RequestLine
            | FoundIn::HeaderName
            | FoundIn::Trailer
            | FoundIn::AfterUpgrade => None,
        }
    }
}

impl std::fmt::Display for FoundIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FoundIn::RequestLine => "request line",
            FoundIn::Path => "path",
            FoundIn::Query => "query",
            FoundIn::HeaderName => "header name",
            FoundIn::Header => "header",
            FoundIn::BasicAuth => "basic auth",
            FoundIn::Body => "body",
            FoundIn::Trailer => "trailer",
            FoundIn::AfterUpgrade => "upgraded stream",
        })
    }
}

/// Why a placeholder was not replaced, the first rule (in this order) that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The connection's host is not in the secret's domains.
    HostNotAllowed,
    /// The secret requires TLS and the connection is plaintext.
    PlaintextConnection,
    /// The request's `Host` (or absolute-form authority) is missing or not the connection's
    /// host.
    HostMismatch,
    /// `TRACE`, which reflects the request.
    ReflectingMethod,
    /// Percent-encoded or base64: only the literal placeholder is ever replaced.
    Encoded,
    /// The secret does not enable this location (or it is never enabled: header names, the
    /// request line, trailers, upgraded streams).
    LocationNotAllowed,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::HostNotAllowed => "host not allowed for this secret",
            Reason::PlaintextConnection => "secret requires TLS",
            Reason::HostMismatch => "Host header differs from the TLS server name",
            Reason::ReflectingMethod => "TRACE reflects the request",
            Reason::Encoded => "encoded placeholder",
            Reason::LocationNotAllowed => "location not enabled for this secret",
        })
    }
}

/// A placeholder where it may not go. The request was not forwarded (not from the placeholder
/// on); the caller closes the connection and does what `action` says. Holds names, never
/// values or request bytes, so it can be logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The secret's environment variable name.
    pub secret: String,
    pub reason: Reason,
    pub location: FoundIn,
    pub form: Form,
    /// The secret's `onViolation`.
    pub action: OnViolation,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "placeholder of secret `{}` ({}) in {}: {}",
            self.secret, self.form, self.location, self.reason
        )
    }
}

/// Why the rewriter stopped. After any error it forwards nothing more.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("{0}")]
    Violation(Violation),
    #[error("request head or trailers longer than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("more than {limit} headers")]
    TooManyHeaders { limit: usize },
    #[error("body to rewrite longer than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("more than {limit} placeholders in one request")]
    TooManySubstitutions { limit: usize },
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("the rewriter stopped at an earlier error")]
    Stopped,
}

/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Per-request judgement, fixed when its head is parsed.
#[derive(Default)]
struct Request {
    host_ok: bool,
    reflecting: bool,
    /// Per secret: rules 1–3 hold (see the module doc).
    allowed: Vec<bool>,
    body_encoding: Option<Encoding>,
    budget: usize,
}

enum Framing {
    Length(u64),
    Chunked(ChunkPhase),
}

enum ChunkPhase {
    /// Reading a chunk-size line.
    Size(Vec<u8>),
    Data(u64),
    /// The CRLF after a chunk's data; `true` once the CR was seen.
    DataEnd(bool),
    /// After the last chunk: the trailer section up to its empty line.
    Trailers(Vec<u8>),
}

struct Body {
    framing: Framing,
    scanner: Scanner,
    held: Option<HeldRequest>,
    upgrade_after: bool,
}

/// A request whose `Content-Length` body is being rewritten: sent when the body is complete,
/// with the body's new length.
struct HeldRequest {
    /// Without its length header and final CRLF.
    head: Zeroizing<Vec<u8>>,
    body: Zeroizing<Vec<u8>>,
}

enum State {
    Head,
    Body(Box<Body>),
    Opaque(Scanner),
    Failed,
}

/// Rewrites one connection's guest-to-upstream bytes. See the module doc for the rules.
pub struct RequestRewriter {
    secrets: Arc<Secrets>,
    limits: Limits,
    host: String,
    /// Per secret: the connection's host is in its domains.
    domain_ok: Vec<bool>,
    /// Per secret: TLS, or the secret does not require it.
    tls_ok: Vec<bool>,
    state: State,
    head: Vec<u8>,
    req: Request,
    requests: u64,
    /// The end of the last `Content-Length` body, when what follows it (the next request
    /// line, an upgraded stream) is forwarded right after it, with no line break between: a
    /// placeholder split across the two must not go out joined. Empty after anything that
    /// ends in CRLF (heads, chunked bodies), which no placeholder spans.
    boundary: Vec<u8>,
}

impl RequestRewriter {
    /// `host`: the name the connection is for (the TLS server name the caller intercepted
    /// for; for plaintext HTTP the name the guest resolved). `tls`: whether the guest's
    /// connection was TLS.
    pub fn new(secrets: Arc<Secrets>, host: &str, tls: bool, limits: Limits) -> RequestRewriter {
        let host = normalize_host(host);
        let domain_ok = secrets
            .entries
            .iter()
            .map(|s| s.allows_host(&host))
            .collect();
        let tls_ok = secrets
            .entries
            .iter()
            .map(|s| tls || !s.require_tls)
            .collect();
        RequestRewriter {
            secrets,
            limits,
            host,
            domain_ok,
            tls_ok,
            state: State::Head,
            head: Vec::new(),
            req: Request::default(),
            requests: 0,
            boundary: Vec::new(),
        }
    }

    /// Request heads parsed so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Takes the next bytes from the guest and appends to `out` what may go upstream. On error
    /// `out` is left as it was before the call (what this call appended is wiped), and the
    /// rewriter refuses further input: the caller closes the connection.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let mark = out.len();
        let result = self.feed_inner(input, out);
        if result.is_err() {
            out[mark..].zeroize();
            out.truncate(mark);
            self.state = State::Failed;
        }
        result
    }

    /// The guest closed its side. Appends what was held back (the end of a body). A request
    /// head or a rewritten body that was not complete is dropped, never sent:
    /// [`RewriteError::Truncated`].
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let mark = out.len();
        let state = std::mem::replace(&mut self.state, State::Failed);
        let result = match state {
            State::Failed => Err(RewriteError::Stopped),
            State::Head if self.head.is_empty() => Ok(()),
            State::Head => Err(RewriteError::Truncated),
            State::Opaque(mut scanner) => self.push_opaque(&mut scanner, &[], true, out),
            State::Body(mut body) => match body.framing {
                Framing::Length(_) if body.held.is_some() => Err(RewriteError::Truncated),
                Framing::Length(_) => self.push_body(&mut body, &[], true, out),
                Framing::Chunked(_) => {
                    let mut data = Zeroizing::new(Vec::new());
                    self.push_body(&mut body, &[], true, &mut data)
                        .map(|()| write_chunk(&data, out))
                }
            },
        };
        if result.is_err() {
            out[mark..].zeroize();
            out.truncate(mark);
        }
        result
    }

    fn feed_inner(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        while !input.is_empty() {
            let state = std::mem::replace(&mut self.state, State::Failed);
            self.state = match state {
                State::Failed => return Err(RewriteError::Stopped),
                State::Head => {
                    let (rest, next) = self.read_head(input, out)?;
                    input = rest;
                    next.unwrap_or(State::Head)
                }
                State::Body(mut body) => {
                    let (rest, done) = self.read_body(&mut body, input, out)?;
                    input = rest;
                    if done {
                        self.after_request(body.upgrade_after)
                    } else {
                        State::Body(body)
                    }
                }
                State::Opaque(mut scanner) => {
                    self.push_opaque(&mut scanner, input, false, out)?;
                    input = &[];
                    State::Opaque(scanner)
                }
            };
        }
        Ok(())
    }

    fn after_request(&mut self, upgrade: bool) -> State {
        if upgrade {
            State::Opaque(Scanner::continuing(std::mem::take(&mut self.boundary)))
        } else {
            State::Head
        }
    }

    /// Refuses a head whose first bytes complete a placeholder begun at the end of the
    /// previous body (see `boundary`).
    fn check_boundary(&mut self, head: &[u8]) -> Result<(), RewriteError> {
        let boundary = std::mem::take(&mut self.boundary);
        if boundary.is_empty() {
            return Ok(());
        }
        let window = self.secrets.matcher.window();
        let mut joined = boundary;
        let seam = joined.len();
        joined.extend_from_slice(&head[..head.len().min(window)]);
        let spanning = self
            .secrets
            .matcher
            .hits(&joined, seam)
            .into_iter()
            .find(|hit| hit.start < seam);
        match spanning {
            Some(hit) => Err(RewriteError::Violation(self.violation(
                hit.secret,
                hit.form,
                FoundIn::RequestLine,
            ))),
            None => Ok(()),
        }
    }

    /// Collects the head; once complete, judges and emits it. Returns the input not consumed
    /// and, once the head was complete, the state for what follows it.
    fn read_head<'a>(
        &mut self,
        mut input: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Result<(&'a [u8], Option<State>), RewriteError> {
        if self.head.is_empty() {
            // Empty lines before a request line are ignored (RFC 9112, 2.2), and dropped.
            let blank = input
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            input = &input[blank..];
            if input.is_empty() {
                return Ok((input, None));
            }
        }
        let before = self.head.len();
        // Never store more than one byte past the limit: enough to know it was exceeded.
        let take = input.len().min(self.limits.max_head + 1 - before);
        self.head.extend_from_slice(&input[..take]);
        match find_head_end(&self.head, before.saturating_sub(2)) {
            Some(end) => {
                let rest = &input[take - (self.head.len() - end)..];
                self.head.truncate(end);
                let head = std::mem::take(&mut self.head);
                let next = self.start_request(&head, out)?;
                Ok((rest, Some(next)))
            }
            None if self.head.len() > self.limits.max_head => Err(RewriteError::HeadTooLarge {
                limit: self.limits.max_head,
            }),
            None => Ok((&input[take..], None)),
        }
    }

    /// Judges a complete head, emits it (or holds it with its body) and returns the state
    /// for what follows it.
    fn start_request(&mut self, head: &[u8], out: &mut Vec<u8>) -> Result<State, RewriteError> {
        let mut headers = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => return Err(RewriteError::Malformed("request head does not parse")),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(RewriteError::TooManyHeaders {
                    limit: self.limits.max_headers,
                })
            }
            Err(_) => return Err(RewriteError::Malformed("request head does not parse")),
        }
        let (Some(method), Some(target), Some(version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Err(RewriteError::Malformed("request head does not parse"));
        };
        self.requests += 1;

        // Framing and the host, before anything is judged.
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut hosts = 0;
        let mut host_header: &[u8] = b"";
        let mut upgrade = false;
        let mut content_type: &[u8] = b"";
        for h in parsed.headers.iter() {
            let value = trim(h.value);
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let n = parse_length(value)?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(RewriteError::Malformed(
                        "conflicting Content-Length headers",
                    ));
                }
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if chunked {
                    return Err(RewriteError::Malformed("several Transfer-Encoding headers"));
                }
                if !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(RewriteError::Malformed(
                        "transfer coding other than chunked",
                    ));
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case("host") {
                hosts += 1;
                host_header = value;
            } else if name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            } else if name.eq_ignore_ascii_case("content-type") {
                content_type = value;
            }
        }
        if chunked && content_length.is_some() {
            return Err(RewriteError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if chunked && version == 0 {
            return Err(RewriteError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        if hosts > 1 {
            return Err(RewriteError::Malformed("several Host headers"));
        }
        let connect = method.eq_ignore_ascii_case("CONNECT");
        let (authority_part, path_and_query) = split_absolute(target);
        let host_ok = hosts == 1
            && host_matches(host_header, &self.host)
            && authority_part.is_none_or(|a| host_matches(authority_host(a), &self.host));
        let reflecting = method.eq_ignore_ascii_case("TRACE");
        let allowed = (0..self.secrets.entries.len())
            .map(|i| self.domain_ok[i] && self.tls_ok[i] && host_ok && !reflecting)
            .collect();
        self.req = Request {
            host_ok,
            reflecting,
            allowed,
            body_encoding: Some(body_encoding(content_type)),
            budget: self.limits.max_substitutions,
        };

        // The head, rebuilt: request line, then each header judged.
        let mut new = Zeroizing::new(Vec::with_capacity(head.len() + 64));
        self.scan_fixed(method.as_bytes(), FoundIn::RequestLine, &mut new)?;
        new.push(b' ');
        if connect {
            self.scan_fixed(target.as_bytes(), FoundIn::RequestLine, &mut new)?;
        } else {
            if let Some(authority) = authority_part {
                let prefix = &target[..target.len() - path_and_query.len()];
                debug_assert!(prefix.ends_with(authority));
                self.scan_fixed(prefix.as_bytes(), FoundIn::RequestLine, &mut new)?;
            }
            let (path, query) = match path_and_query.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (path_and_query, None),
            };
            self.scan_field(path.as_bytes(), FoundIn::Path, Encoding::Percent, &mut new)?;
            if let Some(query) = query {
                new.push(b'?');
                self.scan_field(
                    query.as_bytes(),
                    FoundIn::Query,
                    Encoding::Percent,
                    &mut new,
                )?;
            }
        }
        new.extend_from_slice(if version == 0 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                continue; // Written once, last, with the length actually sent.
            }
            self.scan_fixed(h.name.as_bytes(), FoundIn::HeaderName, &mut new)?;
            new.extend_from_slice(b": ");
            let value = trim(h.value);
            match basic_credentials(h.name, value) {
                Some((scheme, credentials)) => {
                    let credentials = Zeroizing::new(credentials);
                    let mut rewritten = Zeroizing::new(Vec::new());
                    self.scan_field(
                        &credentials,
                        FoundIn::BasicAuth,
                        Encoding::Raw,
                        &mut rewritten,
                    )?;
                    if *rewritten == *credentials {
                        new.extend_from_slice(value);
                    } else {
                        new.extend_from_slice(scheme);
                        new.push(b' ');
                        new.extend_from_slice(
                            Zeroizing::new(STANDARD.encode(&*rewritten)).as_bytes(),
                        );
                    }
                }
                None => self.scan_field(value, FoundIn::Header, Encoding::Raw, &mut new)?,
            }
            new.extend_from_slice(b"\r\n");
        }

        self.check_boundary(&new)?;

        if connect {
            emit_head(&new, content_length, out);
            return Ok(State::Opaque(Scanner::default()));
        }
        let framing = match (chunked, content_length) {
            (true, _) => Framing::Chunked(ChunkPhase::Size(Vec::new())),
            (false, Some(n)) if n > 0 => Framing::Length(n),
            _ => {
                emit_head(&new, content_length, out);
                return Ok(self.after_request(upgrade));
            }
        };
        let rewrite_body = self.region_allows(FoundIn::Body).iter().any(|a| *a);
        let held = match framing {
            Framing::Length(n) if rewrite_body => {
                if n > self.limits.max_buffered_body as u64 {
                    return Err(RewriteError::BodyTooLarge {
                        limit: self.limits.max_buffered_body,
                    });
                }
                Some(HeldRequest {
                    head: new,
                    body: Zeroizing::new(Vec::new()),
                })
            }
            Framing::Length(n) => {
                emit_head(&new, Some(n), out);
                None
            }
            Framing::Chunked(_) => {
                emit_head(&new, None, out);
                None
            }
        };
        Ok(State::Body(Box::new(Body {
            framing,
            scanner: Scanner::default(),
            held,
            upgrade_after: upgrade,
        })))
    }

    /// Per secret: may its placeholder be replaced in `found_in` of the current request?
    fn region_allows(&self, found_in: FoundIn) -> Vec<bool> {
        self.secrets
            .entries
            .iter()
            .enumerate()
            .map(|(i, s)| {
                self.req.allowed.get(i).copied().unwrap_or(false)
                    && found_in.location().is_some_and(|l| s.locations.contains(l))
            })
            .collect()
    }

    /// Scans a complete field where placeholders may be replaced.
    fn scan_field(
        &mut self,
        data: &[u8],
        found_in: FoundIn,
        encoding: Encoding,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let allowed = self.region_allows(found_in);
        let region = Region {
            allowed: &allowed,
            encoding,
        };
        let mut budget = self.req.budget;
        let result = scan_complete(&self.secrets, &region, data, out, &mut budget);
        self.req.budget = budget;
        result.map_err(|stop| self.stopped(stop, found_in))
    }

    /// Scans a complete field where nothing is ever replaced.
    fn scan_fixed(
        &mut self,
        data: &[u8],
        found_in: FoundIn,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        self.scan_field(data, found_in, Encoding::Raw, out)
    }

    fn stopped(&self, stop: ScanStop, found_in: FoundIn) -> RewriteError {
        match stop {
            ScanStop::Budget => RewriteError::TooManySubstitutions {
                limit: self.limits.max_substitutions,
            },
            ScanStop::Hit(hit) => {
                RewriteError::Violation(self.violation(hit.secret, hit.form, found_in))
            }
        }
    }

    fn violation(&self, secret: usize, form: Form, location: FoundIn) -> Violation {
        let s = &self.secrets.entries[secret];
        let reason = if !self.domain_ok[secret] {
            Reason::HostNotAllowed
        } else if !self.tls_ok[secret] {
            Reason::PlaintextConnection
        } else if !self.req.host_ok {
            Reason::HostMismatch
        } else if self.req.reflecting {
            Reason::ReflectingMethod
        } else if form != Form::Literal {
            Reason::Encoded
        } else {
            Reason::LocationNotAllowed
        };
        Violation {
            secret: s.name.clone(),
            reason,
            location,
            form,
            action: s.on_violation,
        }
    }

    fn push_opaque(
        &mut self,
        scanner: &mut Scanner,
        data: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let allowed = vec![false; self.secrets.entries.len()];
        let region = Region {
            allowed: &allowed,
            encoding: Encoding::Raw,
        };
        let mut budget = 0;
        scanner
            .push(&self.secrets, &region, data, last, out, &mut budget)
            .map_err(|stop| self.stopped(stop, FoundIn::AfterUpgrade))
    }

    /// Body bytes through the scanner, into `out`.
    fn push_body(
        &mut self,
        body: &mut Body,
        data: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let allowed = self.region_allows(FoundIn::Body);
        let region = Region {
            allowed: &allowed,
            encoding: self.req.body_encoding.unwrap_or(Encoding::Raw),
        };
        let mut budget = self.req.budget;
        let result = body
            .scanner
            .push(&self.secrets, &region, data, last, out, &mut budget);
        self.req.budget = budget;
        result.map_err(|stop| self.stopped(stop, FoundIn::Body))
    }

    /// Consumes body bytes. Returns the input left and whether the body is complete.
    fn read_body<'a>(
        &mut self,
        body: &mut Body,
        mut input: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Result<(&'a [u8], bool), RewriteError> {
        if let Framing::Length(remaining) = body.framing {
            let n = input
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let left = remaining - n as u64;
            let last = left == 0;
            body.framing = Framing::Length(left);
            match body.held.take() {
                Some(mut held) => {
                    self.push_body(body, &input[..n], last, &mut held.body)?;
                    if held.body.len() > self.limits.max_buffered_body {
                        return Err(RewriteError::BodyTooLarge {
                            limit: self.limits.max_buffered_body,
                        });
                    }
                    if last {
                        emit_head(&held.head, Some(held.body.len() as u64), out);
                        out.extend_from_slice(&held.body);
                    } else {
                        body.held = Some(held);
                    }
                }
                None => self.push_body(body, &input[..n], last, out)?,
            }
            if last {
                self.boundary = body.scanner.look_behind().to_vec();
            }
            return Ok((&input[n..], last));
        }
        let mut data = Zeroizing::new(Vec::new());
        while !input.is_empty() {
            let Framing::Chunked(phase) = &mut body.framing else {
                unreachable!("only chunked bodies loop here")
            };
            match phase {
                ChunkPhase::Size(line) => match input.iter().position(|b| *b == b'\n') {
                    Some(pos) => {
                        line.extend_from_slice(&input[..pos]);
                        input = &input[pos + 1..];
                        let size = parse_chunk_size(line)?;
                        *phase = if size == 0 {
                            ChunkPhase::Trailers(Vec::new())
                        } else {
                            ChunkPhase::Data(size)
                        };
                    }
                    None => {
                        line.extend_from_slice(input);
                        input = &[];
                    }
                },
                ChunkPhase::Data(remaining) => {
                    let n = input
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        *phase = ChunkPhase::DataEnd(false);
                    }
                    let chunk = &input[..n];
                    input = &input[n..];
                    data.clear();
                    self.push_body(body, chunk, false, &mut data)?;
                    write_chunk(&data, out);
                }
                ChunkPhase::DataEnd(seen_cr) => {
                    match (input[0], *seen_cr) {
                        (b'\r', false) => *seen_cr = true,
                        (b'\n', _) => *phase = ChunkPhase::Size(Vec::new()),
                        _ => {
                            return Err(RewriteError::Malformed("chunk data not followed by CRLF"))
                        }
                    }
                    input = &input[1..];
                }
                ChunkPhase::Trailers(block) => {
                    let before = block.len();
                    let take = input.len().min(self.limits.max_head + 1 - before);
                    block.extend_from_slice(&input[..take]);
                    let end = if block.starts_with(b"\r\n") {
                        Some(2)
                    } else if block.starts_with(b"\n") {
                        Some(1)
                    } else {
                        find_head_end(block, before.saturating_sub(2))
                    };
                    let Some(end) = end else {
                        if block.len() > self.limits.max_head {
                            return Err(RewriteError::HeadTooLarge {
                                limit: self.limits.max_head,
                            });
                        }
                        input = &input[take..];
                        continue;
                    };
                    input = &input[take - (block.len() - end)..];
                    block.truncate(end);
                    let block = std::mem::take(block);
                    data.clear();
                    self.push_body(body, &[], true, &mut data)?;
                    write_chunk(&data, out);
                    out.extend_from_slice(b"0\r\n");
                    self.emit_trailers(&block, out)?;
                    out.extend_from_slice(b"\r\n");
                    return Ok((input, true));
                }
            }
            if let Framing::Chunked(ChunkPhase::Size(line)) = &body.framing {
                if line.len() > MAX_CHUNK_LINE {
                    return Err(RewriteError::Malformed("chunk-size line too long"));
                }
            }
        }
        Ok((input, false))
    }

    /// Checks and writes a trailer section (without its final empty line).
    fn emit_trailers(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if matches!(block, b"\r\n" | b"\n") {
            return Ok(());
        }
        let mut headers = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        match httparse::parse_headers(block, &mut headers) {
            Ok(httparse::Status::Complete((n, _))) if n == block.len() => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(RewriteError::TooManyHeaders {
                    limit: self.limits.max_headers,
                })
            }
            _ => return Err(RewriteError::Malformed("trailer section does not parse")),
        }
        for h in headers.iter().take_while(|h| !h.name.is_empty()) {
            self.scan_fixed(h.name.as_bytes(), FoundIn::Trailer, out)?;
            out.extend_from_slice(b": ");
            self.scan_fixed(trim(h.value), FoundIn::Trailer, out)?;
            out.extend_from_slice(b"\r\n");
        }
        Ok(())
    }
}

/// Writes a head built by `start_request` with its length header and final empty line.
fn emit_head(head: &[u8], content_length: Option<u64>, out: &mut Vec<u8>) {
    out.extend_from_slice(head);
    if let Some(n) = content_length {
        out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn write_chunk(data: &[u8], out: &mut Vec<u8>) {
    if !data.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// End of a head: just past the first empty line (`\n\n` or `\n\r\n`), searching from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| {
        if buf[i] != b'\n' {
            None
        } else if buf.get(i + 1) == Some(&b'\n') {
            Some(i + 2)
        } else if buf.get(i + 1..i + 3) == Some(b"\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |p| p + 1);
    &value[start..end]
}

fn parse_length(value: &[u8]) -> Result<u64, RewriteError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(RewriteError::Malformed("invalid Content-Length"));
    }
    value
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(RewriteError::Malformed("invalid Content-Length"))
}

/// A chunk-size line without its LF: hex size, optional extensions (dropped: the body is
/// re-chunked), optional CR.
fn parse_chunk_size(line: &[u8]) -> Result<u64, RewriteError> {
    const BAD: RewriteError = RewriteError::Malformed("invalid chunk size");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let size = match line.iter().position(|b| *b == b';') {
        Some(p) => &line[..p],
        None => line,
    };
    let size = trim(size);
    if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(BAD);
    }
    let text = std::str::from_utf8(size).map_err(|_| BAD)?;
    u64::from_str_radix(text, 16).map_err(|_| BAD)
}

/// For an absolute-form target (`http://host:port/path?q`): the authority, and the path and
/// query after it (which may be empty). Otherwise `None` and the whole target.
fn split_absolute(target: &str) -> (Option<&str>, &str) {
    let lower_starts = |prefix: &str| {
        target.len() >= prefix.len() && target[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    let scheme_len = if lower_starts("https://") {
        8
    } else if lower_starts("http://") {
        7
    } else {
        return (None, target);
    };
    let rest = &target[scheme_len..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    (Some(&rest[..end]), &rest[end..])
}

/// The host of an authority, without userinfo (`user@`). The port stays; [`host_matches`]
/// ignores it.
fn authority_host(authority: &str) -> &[u8] {
    match authority.rfind('@') {
        Some(at) => &authority.as_bytes()[at + 1..],
        None => authority.as_bytes(),
    }
}

/// Whether a `Host` value (`name`, `name:port`, `[v6]:port`) names `host` (normalized).
fn host_matches(value: &[u8], host: &str) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let name = if let Some(rest) = value.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, _)) => inner,
            None => return false,
        }
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => value,
        }
    };
    !name.is_empty() && normalize_host(name) == host
}

/// `Authorization: Basic <base64>`: the scheme as written and the decoded credentials.
/// `None` for any other header, scheme, or a token that is not base64.
fn basic_credentials<'a>(name: &str, value: &'a [u8]) -> Option<(&'a [u8], Vec<u8>)> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if !name.eq_ignore_ascii_case("authorization") {
        return None;
    }
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, token) = (&value[..space], trim(&value[space..]));
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    LENIENT
        .decode(token)
        .ok()
        .map(|credentials| (scheme, credentials))
}

/// How a value is written into a body of this `Content-Type`.
fn body_encoding(content_type: &[u8]) -> Encoding {
    let media = content_type
        .split(|b| *b == b';')
        .next()
        .map(trim)
        .unwrap_or_default()
        .to_ascii_lowercase();
    if media == b"application/x-www-form-urlencoded" {
        Encoding::Percent
    } else if media == b"application/json" || media.ends_with(b"+json") {
        Encoding::Json
    } else {
        Encoding::Raw
    }
}

#[cfg(test)]
mod tests;
