//! Feeds arbitrary guest bytes, in arbitrary splits, to the secrets rewriter
//! (`msb_secrets::RequestRewriter`), which reads every byte a guest sends on an
//! intercepted connection. Any panic is a bug, and so is any of:
//! - fed whole or in pieces, one run fails and the other does not;
//! - output (from a run that did not fail) holding a whole placeholder: each one
//!   is either replaced or refused, never forwarded;
//! - output to a host no secret allows holding the value more often than the
//!   input did.
//!
//! Input layout: byte 0 picks the host, TLS and the enabled locations; byte 1
//! the number of cuts, then two bytes per cut; the rest is the stream, where
//! 0xFE and 0xFD stand for the two placeholders, so the fuzzer need not guess
//! them.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use msb_secrets::{
    Limits, Location, OnViolation, RequestRewriter, SecretSpec, SecretValue, Secrets,
};

const P1: &[u8] = b"$MSB_KEY_one";
const P2: &[u8] = b"msb_secret_TWO_0123456789";
const VALUE: &[u8] = b"REAL\"VALUE;1";
const TWO_VALUE: &[u8] = b"second-value";
const HOSTS: [&str; 4] = [
    "api.example.com",
    "x.wild.example",
    "evil.example",
    "API.EXAMPLE.COM.",
];

fn secrets(locations: u8) -> Arc<Secrets> {
    let all = [
        Location::Headers,
        Location::BasicAuth,
        Location::Path,
        Location::Query,
        Location::Body,
    ];
    let mut enabled: Vec<Location> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| locations & (1 << i) != 0)
        .map(|(_, l)| *l)
        .collect();
    if enabled.is_empty() {
        enabled.push(Location::Headers);
    }
    let spec = |name: &str, placeholder: &[u8], domain: &str, value: &[u8]| SecretSpec {
        name: name.into(),
        value: SecretValue::new(String::from_utf8(value.to_vec()).unwrap()),
        domains: vec![domain.into()],
        placeholder: Some(String::from_utf8(placeholder.to_vec()).unwrap()),
        locations: enabled.clone(),
        on_violation: OnViolation::BlockAndLog,
        require_tls: true,
    };
    Arc::new(
        Secrets::new(vec![
            spec("KEY", P1, "api.example.com", VALUE),
            spec("TWO", P2, "*.wild.example", TWO_VALUE),
        ])
        .unwrap(),
    )
}

fn run(
    secrets: &Arc<Secrets>,
    host: &str,
    tls: bool,
    stream: &[u8],
    cuts: &[usize],
) -> Option<Vec<u8>> {
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
            assert_eq!(out.len(), before, "a failed feed appends nothing");
            return None;
        }
        start = cut;
    }
    rewriter.finish(&mut out).ok()?;
    Some(out)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let Some((&ncuts, rest)) = rest.split_first() else {
        return;
    };
    let ncuts = usize::from(ncuts % 17);
    if rest.len() < 2 * ncuts {
        return;
    }
    let (cut_bytes, raw) = rest.split_at(2 * ncuts);
    let mut stream = Vec::with_capacity(raw.len());
    for &b in raw {
        match b {
            0xFE => stream.extend_from_slice(P1),
            0xFD => stream.extend_from_slice(P2),
            _ => stream.push(b),
        }
    }
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();

    let host = HOSTS[usize::from(control & 3)];
    let tls = control & 4 == 0;
    let secrets = secrets(control >> 3);

    let whole = run(&secrets, host, tls, &stream, &[]);
    let split = run(&secrets, host, tls, &stream, &cuts);
    assert_eq!(
        whole.is_some(),
        split.is_some(),
        "splitting changed the verdict"
    );
    // HOSTS[0] and [3] are KEY's host, [1] is under TWO's wildcard.
    let key_allowed = tls && matches!(control & 3, 0 | 3);
    let two_allowed = tls && control & 3 == 1;
    for out in [whole, split].into_iter().flatten() {
        assert_eq!(count(&out, P1), 0, "placeholder forwarded");
        assert_eq!(count(&out, P2), 0, "placeholder forwarded");
        if !key_allowed {
            assert!(
                count(&out, VALUE) <= count(&stream, VALUE),
                "value sent where not allowed"
            );
        }
        if !two_allowed {
            assert!(
                count(&out, TWO_VALUE) <= count(&stream, TWO_VALUE),
                "value sent where not allowed"
            );
        }
    }
});
