//! Messages between the runtime and its client, framed like agent messages
//! (`msb_protocol::FrameCodec`). Agent requests and events travel inside
//! [`ToRuntime::Agent`] and [`FromRuntime::Agent`] under the agent request id.
//!
//! Contract: the creator's first message (on the runtime's stdin) is `Boot`,
//! answered by `Booted` or `Failed`. Once booted, the runtime also accepts
//! clients on the sandbox's control socket ([`LifecycleSpec::socket`]); their
//! first message is `Attach`, answered by `Attached`. Each client numbers its own
//! requests. `Stop`/`Kill` from any client are answered by `Stopped`; every other
//! client gets `Stopped` with id 0, which is also how a VM that ended by itself
//! is reported. After `Stopped` the runtime exits. If the creator's connection
//! closes and the sandbox is not detached, the runtime kills the VM.

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
    /// First message of a client on the control socket. Answered by `Attached`.
    Attach,
    /// The host's counters of the VM. Answered by `Metrics`.
    Metrics,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromRuntime {
    Booted(BootInfo),
    Agent(GuestMessage),
    /// The VM is gone. Answers `Stop`/`Kill`, or arrives with id 0 when the VM
    /// ended on its own. The runtime exits after sending it.
    Stopped(VmExit),
    Failed(RuntimeFailure),
    /// Answer to `Attach`: how the running VM came up.
    Attached(BootInfo),
    Metrics(HostMetrics),
}

/// What the host measures of a running VM, counters cumulative since boot, and
/// the guest's own memory figures. Only those two come from the guest (its
/// `/proc/meminfo`, read by the runtime); the runtime drops figures that
/// cannot be true (more than the VM has).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMetrics {
    pub uptime_ms: u64,
    /// CPU time of the VM process (all its threads: vCPUs and device emulation).
    pub cpu_ms: u64,
    /// Bytes the VM process read from and wrote to storage on the host.
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    /// Ethernet bytes the guest received and sent through its network stack.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    /// `MemTotal` and `MemAvailable` of the guest, in KiB; `None` when the guest
    /// did not answer sensibly.
    pub memory_total_kib: Option<u64>,
    pub memory_available_kib: Option<u64>,
    /// The memory the VM was given (the host's figure).
    pub memory_limit_kib: u64,
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
    pub lifecycle: LifecycleSpec,
    /// Start from a template snapshot where the VM allows it; `None`: always
    /// boot the kernel.
    pub snapshots: Option<SnapshotPolicy>,
}

/// Where template snapshots live and how long one serves. A template is the
/// saved state of a VM booted until its agent greets the host, before `Init`:
/// identical for every sandbox of one machine shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPolicy {
    /// One subdirectory per template; the runtime creates it.
    pub dir: PathBuf,
    /// Clones of one template share its kernel's address layout and whatever
    /// the kernel derived at boot; a template older than this is made again.
    pub max_age_s: u64,
}

/// Who the sandbox belongs to, where other clients reach it, and when the
/// runtime ends it by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleSpec {
    pub name: String,
    /// Whether the sandbox outlives its creator's connection.
    pub detached: bool,
    /// The control socket the runtime listens on once booted. Its directory is
    /// the caller's to create, mode 0700.
    pub socket: PathBuf,
    /// The state database in which the runtime records the run's status.
    pub state_db: PathBuf,
    /// Stop after this long with no request from any client and no request open.
    pub idle_timeout_ms: Option<u64>,
    /// Stop this long after boot, whatever is running.
    pub max_lifetime_ms: Option<u64>,
    /// Booted into its creator's warm pool: recorded as pooled (unlisted,
    /// unreachable by name) until the creator claims it.
    pub pooled: bool,
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
    /// The process that created the sandbox went away, and it was not detached.
    CreatorLeft,
    /// No client asked anything and no request was open for this long.
    IdleTimeout { idle_ms: u64 },
    /// The sandbox reached its maximum lifetime.
    MaxLifetime { lifetime_ms: u64 },
}

impl VmExit {
    /// Why the VM is gone, in words: for error messages and the recorded status.
    pub fn describe(&self) -> String {
        match &self.ended_by_host {
            Some(HostEnded::ProtocolViolation(what)) => {
                format!("the guest broke the agent protocol and was stopped ({what})")
            }
            Some(HostEnded::Unresponsive { silent_ms }) => format!(
                "the guest stopped answering (no liveness reply for {silent_ms} ms) and was stopped"
            ),
            Some(HostEnded::SecretViolation {
                secret,
                host,
                reason,
            }) => format!(
                "the guest sent the placeholder of secret {secret} to {host} ({reason}) and was \
                 stopped (onViolation: block-and-kill)"
            ),
            Some(HostEnded::CreatorLeft) => {
                "the process that created it exited (it was not detached)".into()
            }
            Some(HostEnded::IdleTimeout { idle_ms }) => {
                format!("it was idle for {idle_ms} ms (idleTimeoutMs) and was stopped")
            }
            Some(HostEnded::MaxLifetime { lifetime_ms }) => {
                format!("it reached its maximum lifetime of {lifetime_ms} ms (maxLifetimeMs) and was stopped")
            }
            None if self.requested => "it was stopped".into(),
            None => {
                let how = match (self.code, self.signal) {
                    (_, Some(signal)) => format!("killed by signal {signal}"),
                    (Some(code), None) => format!("exit status {code}"),
                    (None, None) => "unknown status".into(),
                };
                format!("the VM exited by itself ({how})")
            }
        }
    }
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
