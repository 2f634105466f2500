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
    Init(Box<GuestInit>),
    /// Start a process. Answered by [`GuestMessage::Started`] then stream events and
    /// one [`GuestMessage::Exited`], or by [`GuestMessage::Failed`].
    Exec(ExecRequest),
    /// A filesystem operation; see [`FsRequest`] for each one's answer.
    Fs(FsRequest),
    /// Bytes for the request's input: a process's stdin or a file being written.
    /// The host may send [`crate::INPUT_WINDOW`] bytes per request before the
    /// guest's first [`GuestMessage::InputCredit`], and what each grants after that.
    Input(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The request's input is complete (stdin reads end-of-file; a file is closed).
    InputEnd,
    /// Send a signal (Linux number) to the process group of this request's process.
    Signal(i32),
    /// Kill every process this request's process started, wherever it moved.
    Kill,
    /// Set the terminal size of a process started with a TTY.
    Resize(TtySize),
    /// Allow the guest to send this many more bytes of output for this request.
    Credit(u32),
    /// Nobody will read this request's output any more: the guest discards it
    /// and lets the process run on.
    Detach,
    /// Stop every process, flush filesystems and power the VM off.
    Shutdown,
    /// Liveness check, sent by the runtime under [`crate::LIVENESS_ID`]:
    /// answered at once by [`GuestMessage::Pong`] with the same id.
    Ping,
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
    /// Content of a file being read.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The host may send this many more bytes of input for the request.
    InputCredit(u32),
    /// The process exited and all of its output was sent. Ends the request.
    Exited(ExitStatus),
    /// Answer to a filesystem request. Ends the request, except `Entries` with `more`.
    Fs(FsReply),
    /// The request failed. Ends the request.
    Failed(Failure),
    /// Answer to [`HostMessage::Ping`].
    Pong,
}

impl GuestMessage {
    /// Whether this message is the last one the guest sends for its request.
    pub fn ends_request(&self) -> bool {
        match self {
            GuestMessage::Exited(_) | GuestMessage::Failed(_) => true,
            GuestMessage::Fs(FsReply::Entries { more, .. }) => !more,
            GuestMessage::Fs(_) => true,
            _ => false,
        }
    }

    /// Bytes of this message that count against the request's output window.
    pub fn output_len(&self) -> Option<usize> {
        match self {
            GuestMessage::Stdout(data) | GuestMessage::Stderr(data) | GuestMessage::Data(data) => {
                Some(data.len())
            }
            _ => None,
        }
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
    /// Mount tag of the host's read-only transfer share, if there is one.
    pub transfer_tag: Option<String>,
    /// The network interface's configuration; `None`: loopback only.
    pub network: Option<GuestNetwork>,
    /// A CA certificate (PEM) the guest must trust: the sandbox's own, whose leaves the host
    /// presents on TLS connections it intercepts for secrets. The agent appends it to the
    /// image's trust bundles in the writable overlay. Public data, never a key.
    pub ca_certificate: Option<String>,
    /// Where the root's writable layer lives.
    pub upper: UpperSpec,
    /// Filesystems mounted into the root once it is assembled, parents before
    /// children (the host sorts them).
    pub mounts: Vec<GuestMount>,
    /// Fresh random bytes from the host. The agent mixes them into the kernel's
    /// pool and reseeds its generator before anything else runs: guests restored
    /// from one snapshot would otherwise share the generator's state.
    #[serde(with = "serde_bytes")]
    pub entropy: Vec<u8>,
    /// The host's wall clock when `Init` was sent, in nanoseconds since the Unix
    /// epoch: a restored guest's clock is the snapshot's until it is set.
    pub realtime_ns: u64,
}

/// The writable layer over the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpperSpec {
    /// A tmpfs in guest memory: gone when the VM stops.
    Memory,
    /// An ext4 filesystem on the virtio block device with this serial: kept
    /// on the host between runs (a persistent root).
    Disk { serial: String },
}

/// One filesystem mounted at an absolute guest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    /// Absolute, normalized (no `.` or `..` components, no trailing slash).
    pub path: String,
    pub source: MountSource,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSource {
    /// A host directory shared over 9p with this mount tag.
    Share { tag: String },
    /// An ext4 filesystem on the virtio block device with this serial.
    Disk { serial: String },
    /// A tmpfs of at most this many MiB, in guest memory.
    Tmpfs { size_mib: u32 },
}

/// Static IPv4 configuration of the guest's one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    pub address: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: std::net::Ipv4Addr,
    /// Written to /etc/resolv.conf.
    pub nameservers: Vec<std::net::Ipv4Addr>,
    pub mtu: u32,
}

/// Where the sandbox's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootSpec {
    /// A read-only 9p share with this mount tag, overlaid by the writable layer.
    Virtio9p { tag: String },
    /// A filesystem (e.g. ext4) on the virtio block device with this serial,
    /// mounted read-only and overlaid by the writable layer.
    Block { serial: String, fstype: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program to run, looked up on `PATH` when it has no slash.
    pub program: String,
    pub args: Vec<String>,
    /// Added to (and overriding) the sandbox environment.
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Who runs it; the guest looks names up in its own /etc/passwd.
    pub user: Option<User>,
    pub stdin: StdinMode,
    /// Run under a pseudo-terminal of this size; stdout then carries stderr too.
    pub tty: Option<TtySize>,
    /// Output bytes the guest may send before it must wait for [`HostMessage::Credit`].
    pub output_window: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum User {
    Name(String),
    Id(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub cols: u16,
    pub rows: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StdinMode {
    /// Stdin reads end-of-file at once.
    Null,
    /// Stdin is fed by [`HostMessage::Input`] until [`HostMessage::InputEnd`].
    Pipe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when the process exited on its own.
    pub code: Option<i32>,
    /// Signal number, when a signal ended the process.
    pub signal: Option<i32>,
    /// Microseconds from just before the guest spawned the process to its reaping:
    /// the guest's own cost of fork, exec, run and wait.
    pub guest_micros: u64,
}

/// Filesystem operations, on guest paths resolved by the guest as any of its
/// processes would (inside its root; symlinks followed unless said otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsRequest {
    /// Answered by `FsReply::Stat`.
    Stat { path: String, follow_symlinks: bool },
    /// Answered by `FsReply::Entries` batches, the last with `more: false`,
    /// holding at most `max_entries` entries in all; a directory with more is
    /// answered by `Failed` with [`FailureKind::LimitExceeded`].
    List { path: String, max_entries: u32 },
    /// Answered by `FsReply::Done`.
    Mkdir {
        path: String,
        mode: u32,
        recursive: bool,
    },
    /// Answered by `FsReply::Done`.
    Remove { path: String, recursive: bool },
    /// Answered by `FsReply::Done`.
    Rename { from: String, to: String },
    /// Answered by `Data` chunks under the output window, then `FsReply::Done`.
    Read { path: String, output_window: u32 },
    /// The content follows as `Input` chunks and `InputEnd`. Answered by
    /// `FsReply::Written` once the file is complete.
    Write {
        path: String,
        /// Permission bits applied to the file; `None` keeps an existing file's
        /// and gives a new one 0644.
        mode: Option<u32>,
        append: bool,
        /// Create missing parent directories (mode 0755).
        create_parents: bool,
    },
    /// Create a symbolic link at `path` pointing to `target`. Answered by `FsReply::Done`.
    Symlink { path: String, target: String },
    /// Like `Write`, with the content taken from the file `name` (a plain file
    /// name) of the transfer share instead of `Input` messages. Answered by
    /// `FsReply::Written`.
    WriteFromTransfer {
        name: String,
        path: String,
        mode: Option<u32>,
        append: bool,
        create_parents: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsReply {
    Done,
    Stat(FileStat),
    Entries { entries: Vec<DirEntry>, more: bool },
    Written { bytes: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (and setuid/setgid/sticky), without the file type.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    /// The entry itself, not what a symlink points to.
    pub stat: FileStat,
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
    /// The program to run does not exist.
    ProgramNotFound,
    /// The user to run as does not exist in the guest.
    UnknownUser,
    /// The request made no sense (unknown id, bad argument, sent twice).
    InvalidRequest,
    /// A system call failed; `errno` says how.
    Io,
    /// The answer would exceed a limit the host set in its request.
    LimitExceeded,
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
