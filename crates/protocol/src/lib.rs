//! The language spoken between the host (runtime, engine) and the guest agent.
//!
//! Every message travels in a frame: a 4-byte big-endian payload length, then the
//! payload, a [postcard] encoding of an [`Envelope`]. The envelope's `id` names the
//! request a message belongs to: the host picks ids for the requests it starts, the
//! guest echoes them on every reply and stream event. Id 0 is reserved for messages
//! that belong to no request (the guest's [`Hello`]).
//!
//! The first frame on a fresh channel is the guest's [`GuestMessage::Hello`]; the
//! host answers with [`HostMessage::Init`] only if [`check_version`] accepts it.
//!
//! Both sides treat the other as untrusted: frames longer than [`MAX_FRAME_LEN`] and
//! payloads that do not decode are errors ([`FrameError`]), never panics, and a
//! channel that produced one is closed.

mod frame;
mod message;

pub use frame::{FrameCodec, FrameError};
pub use message::*;

/// Version of this protocol. Host and guest must speak the same one.
pub const VERSION: u32 = 5;

/// Largest frame payload either side accepts.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Largest chunk of stream data (stdout, stderr, stdin, file content) in one message.
pub const MAX_DATA_CHUNK: usize = 256 << 10;

/// Input bytes the host may send for a request before the guest grants more
/// with `InputCredit`.
pub const INPUT_WINDOW: u32 = 1 << 20;

/// What each output message (`Stdout`, `Stderr`, `Data`) costs of the output
/// window beyond its length. Charging per message bounds how many messages can
/// wait on the host, not only their bytes: a window of 1 MiB admits at most
/// 4096 messages however small.
pub const OUTPUT_MESSAGE_COST: u32 = 256;

/// The output-window charge of one output message carrying `len` bytes. The
/// guest spends it, the host's guard checks it, the client credits it back.
pub fn output_charge(len: usize) -> u64 {
    len as u64 + OUTPUT_MESSAGE_COST as u64
}

/// Envelope id reserved for messages outside any request.
pub const NO_REQUEST: u64 = 0;

/// Envelope id of the runtime's `Init` request.
pub const INIT_ID: u64 = u64::MAX;

/// Envelope id of the runtime's liveness `Ping`s and the guest's `Pong`s.
pub const LIVENESS_ID: u64 = u64::MAX - 1;

/// Longest directory entry name a guest may report (Linux's `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// Whether `name` can be a directory entry name: one path component, so that a
/// host joining it to a directory stays in that directory. Empty names, `.`,
/// `..`, and names holding `/` or NUL are not, nor names over [`MAX_NAME_LEN`].
pub fn is_entry_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
}

/// Checks the guest's greeting against the version this host speaks.
pub fn check_version(hello: &Hello) -> Result<(), VersionMismatch> {
    if hello.version == VERSION {
        Ok(())
    } else {
        Err(VersionMismatch {
            guest: hello.version,
            host: VERSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_entry_name;

    #[test]
    fn entry_names_are_single_components() {
        for good in ["a", "ok.txt", ".hidden", "...", "a b", "ünï"] {
            assert!(is_entry_name(good), "{good:?}");
        }
        let long = "x".repeat(256);
        for bad in ["", ".", "..", "a/b", "/abs", "../x", "a\0b", long.as_str()] {
            assert!(!is_entry_name(bad), "{bad:?}");
        }
    }
}

/// The guest agent speaks another protocol version than the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guest agent speaks protocol version {guest}, host speaks {host}")]
pub struct VersionMismatch {
    pub guest: u32,
    pub host: u32,
}
