//! Feeds arbitrary guest bytes, in arbitrary splits, to the secrets rewriter
//! (`msb_secrets::RequestRewriter`), which reads every byte a guest sends on an
//! intercepted connection. Any panic is a bug, and so is any of:
//! - fed whole or in pieces, one run fails and the other does not;
//! - output (from a run that did not fail) holding a whole placeholder: each one
//!   is either replaced or refused, never forwarded;
//! - output to a host no secret allows holding the value more often than the
//!   input did.
//!
//! The secrets, the runs and these checks are `msb_secrets::rewrite_check`,
//! shared with the seeded property test `crates/secrets/tests/rewrite_properties.rs`.
//!
//! Input layout: byte 0 picks the host, TLS and the enabled locations; byte 1
//! the number of cuts, then two bytes per cut; the rest is the stream, where
//! 0xFE and 0xFD stand for the two placeholders, so the fuzzer need not guess
//! them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msb_secrets::rewrite_check::{check, secrets, P1, P2};

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
            0xFE => stream.extend_from_slice(P1.as_bytes()),
            0xFD => stream.extend_from_slice(P2.as_bytes()),
            _ => stream.push(b),
        }
    }
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();

    let host = usize::from(control & 3);
    let tls = control & 4 == 0;
    let secrets = secrets(control >> 3);
    if let Err(broken) = check(&secrets, host, tls, &stream, &cuts) {
        panic!("{broken}");
    }
});
