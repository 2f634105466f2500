//! The rewriter's stream invariants, in one place for the two drivers that check them: the
//! fuzz target (`fuzz/fuzz_targets/http_rewrite.rs`) and the seeded property test on stable
//! (`tests/rewrite_properties.rs`). Test support, not API: hidden from the docs.
//!
//! Two secrets with fixed placeholders and values; a stream is fed to a [`RequestRewriter`]
//! whole and cut at given positions, and then:
//! - fed whole or in pieces, one run fails and the other does not: never;
//! - a failed feed appends output: never;
//! - output of a run that did not fail holds a whole placeholder: never (each one is either
//!   replaced or refused, never forwarded);
//! - output to a host a secret does not allow holds its value more often than the input.

use std::sync::Arc;

use msb_control::secrets::{OnViolation, SecretEnv, SecretLocation, SecretValue};

use crate::{Limits, RequestRewriter, Secrets};

/// `KEY`'s placeholder (caller-chosen form).
pub const P1: &str = "$MSB_KEY_one";
/// `TWO`'s placeholder (generated form).
pub const P2: &str = "msb_secret_TWO_0123456789";
/// `KEY`'s value: JSON and form encoding both change it.
pub const VALUE: &str = "REAL\"VALUE;1";
pub const TWO_VALUE: &str = "second-value";
/// `[0]` and `[3]` are `KEY`'s host, `[1]` is under `TWO`'s wildcard, `[2]` neither's.
pub const HOSTS: [&str; 4] = [
    "api.example.com",
    "x.wild.example",
    "evil.example",
    "API.EXAMPLE.COM.",
];

/// The two secrets, with the locations whose bits are set in `locations` (bit 0: headers,
/// then Basic auth, path, query, body), headers alone if none is.
pub fn secrets(locations: u8) -> Arc<Secrets> {
    let all = [
        SecretLocation::Headers,
        SecretLocation::BasicAuth,
        SecretLocation::Path,
        SecretLocation::Query,
        SecretLocation::Body,
    ];
    let mut enabled: Vec<SecretLocation> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| locations & (1 << i) != 0)
        .map(|(_, l)| *l)
        .collect();
    if enabled.is_empty() {
        enabled.push(SecretLocation::Headers);
    }
    let spec = |name: &str, placeholder: &str, domain: &str, value: &str| SecretEnv {
        name: name.into(),
        value: SecretValue::new(value),
        domains: vec![domain.into()],
        placeholder: Some(placeholder.into()),
        locations: enabled.clone(),
        on_violation: OnViolation::BlockAndLog,
        require_tls: true,
    };
    Arc::new(
        Secrets::new(vec![
            spec("KEY", P1, "api.example.com", VALUE),
            spec("TWO", P2, "*.wild.example", TWO_VALUE),
        ])
        .expect("the fixed secrets are valid"),
    )
}

/// How often `needle` occurs in `hay` (overlaps included).
pub fn count(hay: &[u8], needle: &str) -> usize {
    hay.windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

/// Feeds `stream` cut at `cuts` (sorted positions) and finishes. `Ok(None)`: the rewriter
/// refused the stream.
fn run(
    secrets: &Arc<Secrets>,
    host: &str,
    tls: bool,
    stream: &[u8],
    cuts: &[usize],
) -> Result<Option<Vec<u8>>, String> {
    let limits = Limits {
        max_head: 2048,
        max_buffered_body: 4096,
        ..Limits::default()
    };
    let mut rewriter = RequestRewriter::new(secrets.clone(), host, tls, limits);
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let before = out.len();
        if rewriter.feed(&stream[start..cut], &mut out).is_err() {
            if out.len() != before {
                return Err("a failed feed appended output".into());
            }
            return Ok(None);
        }
        start = cut;
    }
    Ok(rewriter.finish(&mut out).ok().map(|()| out))
}

/// Runs `stream` to `HOSTS[host]` whole and cut at `cuts` (sorted positions) and checks every
/// invariant of the module. `Ok`: the outputs of the runs the rewriter did not refuse (none or
/// both); `Err`: which invariant broke.
pub fn check(
    secrets: &Arc<Secrets>,
    host: usize,
    tls: bool,
    stream: &[u8],
    cuts: &[usize],
) -> Result<Vec<Vec<u8>>, String> {
    let name = HOSTS[host];
    let whole = run(secrets, name, tls, stream, &[])?;
    let split = run(secrets, name, tls, stream, cuts)?;
    if whole.is_some() != split.is_some() {
        return Err("splitting changed the verdict".into());
    }
    let key_allowed = tls && matches!(host, 0 | 3);
    let two_allowed = tls && host == 1;
    let outputs: Vec<Vec<u8>> = [whole, split].into_iter().flatten().collect();
    for out in &outputs {
        if count(out, P1) + count(out, P2) != 0 {
            return Err("placeholder forwarded".into());
        }
        if !key_allowed && count(out, VALUE) > count(stream, VALUE) {
            return Err("KEY's value sent where not allowed".into());
        }
        if !two_allowed && count(out, TWO_VALUE) > count(stream, TWO_VALUE) {
            return Err("TWO's value sent where not allowed".into());
        }
    }
    Ok(outputs)
}
