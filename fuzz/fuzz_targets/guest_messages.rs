//! Drives the runtime's guard (the host's check of every guest message) with
//! decoded messages: the input is a sequence of postcard-encoded steps, each
//! either a host request the client sends or a guest message to judge. The
//! guard must never panic, and once it has refused a message for a request,
//! it has said why. Decoding uses the protocol's own types, so this explores
//! message contents (names, counts, modes, ids, kinds), not only framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msb_protocol::{GuestMessage, HostMessage};
use msb_runtime::guard::Guard;

#[derive(serde::Deserialize)]
enum Step {
    Host(u64, HostMessage),
    Guest(u64, GuestMessage),
}

fuzz_target!(|data: &[u8]| {
    let mut guard = Guard::default();
    let mut rest = data;
    while !rest.is_empty() {
        let Ok((step, tail)) = postcard::take_from_bytes::<Step>(rest) else {
            return;
        };
        rest = tail;
        match step {
            Step::Host(id, msg) => guard.on_host(id % 8, &msg),
            Step::Guest(id, msg) => {
                if let Err(violation) = guard.on_guest(id % 8, &msg) {
                    // A violation ends the sandbox: nothing after it is judged.
                    assert!(!violation.problem.is_empty());
                    return;
                }
            }
        }
    }
});
