//! Message types. Host-to-guest and guest-to-host are separate enums so that
//! neither side can be sent a message only the other may send.

use serde::{Deserialize, Serialize};

/// One message and the request it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<M> {
    pub id: u64,
    pub msg: M,
}

impl<M> Envelope<M> {
    pub fn new(id: u64, msg: M) -> Self {
        Self { id, msg }
    }
}

/// Messages the host sends to the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMessage {
    /// Set the guest up (root filesystem, hostname, environment). Answered by
    /// [`GuestMessage::Ready`] or [`GuestMessage::Failed`]. Sent once.
    Init(GuestInit),
    /// Start a process. Answered by [`GuestMessage::Started`] then stream events and
    /// one [`GuestMessage::Exited`], or by [`GuestMessage::Failed`].
    Exec(ExecRequest),
    /// Bytes for the stdin of the process started by this request id.
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Close the stdin of the process started by this request id.
    StdinClose,
    /// Send a signal (Linux number) to the process started by this request id.
    Signal(i32),
    /// Allow the guest to send this many more bytes of output for this request id.
    Credit(u32),
    /// Stop every process, flush filesystems and power the VM off.
    Shutdown,
}

/// Messages the guest agent sends to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMessage {
    /// First frame on the channel, with id [`crate::NO_REQUEST`].
    Hello(Hello),
    /// The guest finished [`HostMessage::Init`].
    Ready,
    /// The process of an [`HostMessage::Exec`] is running.
    Started {
        pid: u32,
    },
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The process exited and all of its output was sent. Ends the request.
    Exited(ExitStatus),
    /// The request failed. Ends the request.
    Failed(Failure),
}

impl GuestMessage {
    /// Whether this message is the last one the guest sends for its request.
    pub fn ends_request(&self) -> bool {
        matches!(self, GuestMessage::Exited(_) | GuestMessage::Failed(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// The agent's crate version, for logs.
    pub agent_version: String,
}

/// Everything the guest needs to become the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInit {
    pub hostname: String,
    pub root: RootSpec,
    /// Environment every process starts with, before its own.
    pub env: Vec<(String, String)>,
    /// Directory processes start in unless a request names one.
    pub workdir: Option<String>,
}

/// Where the sandbox's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootSpec {
    /// A read-only 9p share with this mount tag, overlaid by a writable tmpfs.
    Virtio9p { tag: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program to run, looked up on `PATH` when it has no slash.
    pub program: String,
    pub args: Vec<String>,
    /// Added to (and overriding) the sandbox environment.
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub stdin: StdinMode,
    /// Output bytes the guest may send before it must wait for [`HostMessage::Credit`].
    pub output_window: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StdinMode {
    /// Stdin reads end-of-file at once.
    Null,
    /// Stdin is fed by [`HostMessage::Stdin`] until [`HostMessage::StdinClose`].
    Pipe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when the process exited on its own.
    pub code: Option<i32>,
    /// Signal number, when a signal ended the process.
    pub signal: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    /// The guest's errno, where the failure came from a system call.
    pub errno: Option<i32>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// A path or program does not exist.
    NotFound,
    PermissionDenied,
    /// The request made no sense (unknown id, bad argument, sent twice).
    InvalidRequest,
    /// Any other system error.
    Io,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            errno: None,
            message: message.into(),
        }
    }
}
