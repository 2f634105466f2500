//! Messages between the runtime and its client, framed like agent messages
//! (`msb_protocol::FrameCodec`). Agent requests and events travel inside
//! [`ToRuntime::Agent`] and [`FromRuntime::Agent`] under the agent request id.
//!
//! Contract: the first client message is `Boot`, answered by `Booted` or
//! `Failed`; `Stop`/`Kill` are answered by `Stopped`, and `Stopped` with id 0
//! means the VM ended by itself. After `Stopped` the runtime exits; if the
//! client's connection closes, the runtime kills the VM and exits.

use std::path::PathBuf;

use msb_protocol::{GuestInit, GuestMessage, HostMessage};
use serde::{Deserialize, Serialize};

use crate::net::NetConfig;
use crate::secrets::SecretsConfig;
use crate::vm::{Accel, VmSpec};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToRuntime {
    /// First message: start the VM. Answered by `Booted` or `Failed`.
    Boot(Box<BootSpec>),
    /// Forward to the agent.
    Agent(HostMessage),
    /// Ask the guest to shut down; kill it after `grace_ms`. Answered by `Stopped`.
    Stop { grace_ms: u32 },
    /// Kill the VM now. Answered by `Stopped`.
    Kill,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromRuntime {
    Booted(BootInfo),
    Agent(GuestMessage),
    /// The VM is gone. Answers `Stop`/`Kill`, or arrives with id 0 when the VM
    /// ended on its own. The runtime exits after sending it.
    Stopped(VmExit),
    Failed(RuntimeFailure),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootSpec {
    pub vm: VmSpec,
    pub guest: GuestInit,
    /// Where the console and VMM logs go.
    pub sandbox_dir: PathBuf,
    /// From launch to the agent's `Ready`.
    pub boot_timeout_ms: u64,
    /// The host-side network stack, for a VM whose `net` is a stream.
    pub network: Option<NetConfig>,
    /// Secret environment variables and TLS interception (see [`crate::secrets`]). Holds the
    /// values: this spec only ever travels over the control socket, never to a file or a log
    /// (its `Debug` shows values as `<redacted>`).
    pub secrets: Option<SecretsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    pub accel: Accel,
    pub vm_pid: u32,
    pub agent_version: String,
    /// From launch to the agent's `Ready`.
    pub boot_ms: u64,
    /// Published ports: the host address bound (the real port when 0 was asked) and the guest port.
    pub published: Vec<(std::net::SocketAddr, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Whether the client asked for it (stop, kill) or the VM ended by itself.
    pub requested: bool,
    /// Why the runtime ended the VM on its own, if it did.
    pub ended_by_host: Option<HostEnded>,
    pub console_tail: String,
}

/// The runtime's reasons for ending a VM nobody asked it to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostEnded {
    /// The guest sent something the host never allows (see the runtime's
    /// guard): what.
    ProtocolViolation(String),
    /// The guest answered no liveness check for this long (halted, hung, or an
    /// impostor that stopped talking).
    Unresponsive { silent_ms: u64 },
    /// A secret's placeholder went where it may not, and the secret's `onViolation` is
    /// `block-and-kill`. Names only: the secret's variable name, the TLS server name, why.
    SecretViolation {
        secret: String,
        host: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeFailure {
    pub kind: RuntimeFailureKind,
    pub message: String,
    /// The end of the kernel console, for boot failures.
    pub console_tail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuntimeFailureKind {
    /// The VMM could not be started (missing kernel, KVM refused).
    Launch,
    /// The VMM program (QEMU) is not installed; the message says how to install it.
    MissingProgram,
    /// The VM started but the agent never became ready.
    Boot,
    /// A published port's host address is taken.
    PortInUse,
    /// The client broke the protocol (e.g. a request before `Boot`).
    BadRequest,
}
