//! The contract between the engine (inside Node), the sandbox runtime
//! (`msb-runtime`, one process per sandbox) and the VMM backends: the plain
//! data that crosses those boundaries, and nothing that acts on it.
//!
//! - [`vm`]: what a VM is made of ([`vm::VmSpec`]), which backend and
//!   accelerator run it.
//! - [`net`]: a sandbox's network configuration as the engine builds it and
//!   the runtime's stack enforces it (policy *data* and its validation; the
//!   evaluation lives in `msb-netstack`).
//! - [`messages`] (re-exported here): the control protocol between a client
//!   and the runtime, framed like agent messages (`msb_protocol::FrameCodec`).
//! - [`files`]: what the runtime writes in the sandbox directory, and the
//!   descriptor that carries the sandbox lock.
//!
//! Rule: every type here is serde data or a pure function of its fields. A
//! crate that needs one of these types depends on this crate, never on the
//! crate that runs them, so the engine (and the Node addon) link no VMM and no
//! network stack.

pub mod files;
pub mod messages;
pub mod net;
pub mod secrets;
pub mod vm;

pub use files::LOCK_FD;
pub use messages::{
    BootInfo, BootSpec, FromRuntime, HostEnded, HostMetrics, LifecycleSpec, RuntimeFailure,
    RuntimeFailureKind, SnapshotPolicy, ToRuntime, VmExit,
};
