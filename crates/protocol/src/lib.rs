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
pub const VERSION: u32 = 1;

/// Largest frame payload either side accepts.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Largest chunk of stream data (stdout, stderr, stdin, file content) in one message.
pub const MAX_DATA_CHUNK: usize = 256 << 10;

/// Input bytes the host may send for a request before the guest grants more
/// with `InputCredit`.
pub const INPUT_WINDOW: u32 = 1 << 20;

/// Envelope id reserved for messages outside any request.
pub const NO_REQUEST: u64 = 0;

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

/// The guest agent speaks another protocol version than the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guest agent speaks protocol version {guest}, host speaks {host}")]
pub struct VersionMismatch {
    pub guest: u32,
    pub host: u32,
}
