//! Errors of the engine's operations. Each carries a stable [`ErrorCode`] that
//! crosses into JavaScript as `error.code`; messages are for people.

use std::path::PathBuf;

use msb_oci::PullError;
use msb_state::StateError;

/// The stable error codes, listed once. `$callback!` receives each code as
/// `Variant = "CODE"` with its doc comment: the engine defines [`ErrorCode`]
/// with it, and the napi layer the exported string enum from which the
/// TypeScript `ErrorCode` union is generated, so the three cannot drift.
// Docs are `#[doc = "..."]` with plain strings: they reach the generated
// TypeScript typings through the napi layer, which copies literals verbatim.
#[macro_export]
macro_rules! for_each_error_code {
    ($callback:ident) => {
        $callback! {
            #[doc = "An option is missing, malformed or out of range; `field` names it."]
            InvalidOption = "INVALID_OPTION",
            #[doc = "The image (a directory, a disk file or a reference) does not exist."]
            ImageNotFound = "IMAGE_NOT_FOUND",
            #[doc = "A running sandbox already has this name."]
            SandboxExists = "SANDBOX_EXISTS",
            #[doc = "No sandbox has this name (none was created with it, or it was removed)."]
            SandboxNotFound = "SANDBOX_NOT_FOUND",
            #[doc = "The sandbox is running and the operation needs it stopped (remove without force)."]
            SandboxRunning = "SANDBOX_RUNNING",
            #[doc = "No volume has this name."]
            VolumeNotFound = "VOLUME_NOT_FOUND",
            #[doc = "A volume with this name exists already."]
            VolumeExists = "VOLUME_EXISTS",
            #[doc = "The volume is mounted by a running sandbox (remove refused)."]
            VolumeInUse = "VOLUME_IN_USE",
            #[doc = "A disk volume is mounted by another running sandbox: one at a time."]
            VolumeBusy = "VOLUME_BUSY",
            #[doc = "A published port's host address is taken."]
            PortInUse = "PORT_IN_USE",
            #[doc = "The guest kernel, agent or runtime binary is not installed."]
            MissingAsset = "MISSING_ASSET",
            #[doc = "The VM did not come up."]
            BootFailed = "BOOT_FAILED",
            #[doc = "A script or patch could not be applied in the guest."]
            PatchFailed = "PATCH_FAILED",
            #[doc = "The image is used by a running sandbox."]
            ImageInUse = "IMAGE_IN_USE",
            #[doc = "The registry could not be reached."]
            RegistryUnreachable = "REGISTRY_UNREACHABLE",
            #[doc = "The registry refused the credentials."]
            RegistryUnauthorized = "REGISTRY_UNAUTHORIZED",
            #[doc = "Downloaded content did not match its digest or size."]
            ImageIntegrity = "IMAGE_INTEGRITY",
            #[doc = "The layer unpacker refused a layer."]
            LayerRejected = "LAYER_REJECTED",
            #[doc = "Any other failure of an image pull."]
            PullFailed = "PULL_FAILED",
            #[doc = "The sandbox was stopped, or its VM exited."]
            SandboxNotRunning = "SANDBOX_NOT_RUNNING",
            #[doc = "The program to run does not exist in the guest."]
            CommandNotFound = "COMMAND_NOT_FOUND",
            #[doc = "The user to run as is not in the guest's /etc/passwd."]
            UserNotFound = "USER_NOT_FOUND",
            #[doc = "The guest could not start the process."]
            ExecFailed = "EXEC_FAILED",
            #[doc = "The process outlived its timeout and was killed."]
            ExecTimeout = "EXEC_TIMEOUT",
            #[doc = "The caller's AbortSignal killed the process. Raised by the TypeScript"]
            #[doc = "layer, which owns the signal; listed here so that the list is whole."]
            ExecAborted = "EXEC_ABORTED",
            #[doc = "The interpreter of a PythonSandbox or NodeSandbox failed to start, died or broke its"]
            #[doc = "driver protocol. Raised by the TypeScript code runner; listed here so that the list is whole."]
            InterpreterFailed = "INTERPRETER_FAILED",
            #[doc = "The guest path does not exist."]
            FsNotFound = "FS_NOT_FOUND",
            #[doc = "The guest refused the access."]
            FsPermissionDenied = "FS_PERMISSION_DENIED",
            #[doc = "The guest path already exists."]
            FsAlreadyExists = "FS_ALREADY_EXISTS",
            #[doc = "A component of the guest path is not a directory."]
            FsNotADirectory = "FS_NOT_A_DIRECTORY",
            #[doc = "The guest path is a directory."]
            FsIsADirectory = "FS_IS_A_DIRECTORY",
            #[doc = "The guest directory is not empty."]
            FsNotEmpty = "FS_NOT_EMPTY",
            #[doc = "Any other failure of a guest filesystem operation."]
            FsError = "FS_ERROR",
            #[doc = "A host file of copyFromHost/copyToHost could not be read or written."]
            HostIo = "HOST_IO",
            #[doc = "The guest broke the agent protocol and was stopped."]
            GuestProtocol = "GUEST_PROTOCOL",
            #[doc = "The guest sent a secret's placeholder where it may not go, under"]
            #[doc = "`onViolation: \"block-and-kill\"`, and the sandbox was stopped."]
            SecretViolation = "SECRET_VIOLATION",
            #[doc = "A limit the caller set (or its default) was reached."]
            LimitExceeded = "LIMIT_EXCEEDED",
            #[doc = "The caller's AbortSignal stopped the operation."]
            Aborted = "ABORTED",
            #[doc = "Something failed on the host that options cannot fix."]
            Internal = "INTERNAL",
        }
    };
}

macro_rules! define_error_code {
    ($($(#[$doc:meta])* $variant:ident = $code:literal,)*) => {
        /// Stable codes, one per class of failure a caller may handle differently.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order listed.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as JavaScript sees it (`error.code`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

for_each_error_code!(define_error_code);

/// What the engine reports about each error beyond its message: the stable
/// code and the structured facts a caller may act on.
pub trait HasCode {
    fn code(&self) -> ErrorCode;

    fn details(&self) -> ErrorDetails {
        ErrorDetails::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorDetails {
    /// The option at fault, as callers spell it.
    pub field: Option<String>,
    /// The guest's errno (or the host's, for host file errors).
    pub errno: Option<i32>,
    /// The path the failed operation was about.
    pub path: Option<String>,
    /// The end of the guest console, for boot failures.
    pub console_tail: Option<String>,
    /// Output collected before the call failed (an output limit).
    pub stdout: Option<Vec<u8>>,
    pub stderr: Option<Vec<u8>>,
}

/// An option failed validation. `field` is the option's name as callers spell it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidOption {
    pub field: String,
    pub problem: String,
}

impl InvalidOption {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl HasCode for InvalidOption {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidOption
    }

    fn details(&self) -> ErrorDetails {
        ErrorDetails {
            field: Some(self.field.clone()),
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    InvalidOption(#[from] InvalidOption),
    #[error("image: {path} is not a directory")]
    ImageNotFound { path: PathBuf },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("a sandbox named {name:?} is already running")]
    SandboxExists { name: String },
    /// A detached sandbox of this name exists, stopped: its name is taken until it is removed.
    #[error(
        "a stopped detached sandbox named {name:?} exists: start it (Sandbox.start) or remove it \
         (Sandbox.remove) first"
    )]
    SandboxStopped { name: String },
    #[error("ports: {message}")]
    PortInUse { message: String },
    #[error(
        "{what} not found at {path}: in a checkout, scripts/build.sh builds it (scripts/setup.sh \
         runs that); installed from npm, it comes from the optional package \
         microsandbox-linux-x64-gnu, which npm leaves out on other platforms and with \
         --omit=optional; {env} points at another file"
    )]
    MissingAsset {
        what: &'static str,
        path: PathBuf,
        /// The variable that overrides this asset's path.
        env: &'static str,
    },
    /// A program the host must provide (QEMU) is not installed.
    #[error("{message}")]
    MissingProgram { message: String },
    #[error(
        "sandbox {name:?} failed to boot: {reason}{}",
        console_section(console_tail)
    )]
    BootFailed {
        name: String,
        reason: String,
        console_tail: String,
    },
    /// A script or patch could not be applied in the guest; the sandbox was removed.
    #[error("{field}: could not be applied")]
    PatchFailed {
        field: String,
        #[source]
        source: FsError,
    },
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn console_section(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- end of the guest console ---\n{}", tail.trim_end())
    }
}

impl HasCode for CreateError {
    fn code(&self) -> ErrorCode {
        match self {
            CreateError::InvalidOption(_) => ErrorCode::InvalidOption,
            CreateError::ImageNotFound { .. } => ErrorCode::ImageNotFound,
            CreateError::Image(err) => err.code(),
            CreateError::SandboxExists { .. } | CreateError::SandboxStopped { .. } => {
                ErrorCode::SandboxExists
            }
            CreateError::PortInUse { .. } => ErrorCode::PortInUse,
            CreateError::MissingAsset { .. } | CreateError::MissingProgram { .. } => {
                ErrorCode::MissingAsset
            }
            CreateError::BootFailed { .. } => ErrorCode::BootFailed,
            CreateError::PatchFailed { .. } => ErrorCode::PatchFailed,
            CreateError::Volume(err) => err.code(),
            CreateError::Io { .. } => ErrorCode::Internal,
        }
    }

    fn details(&self) -> ErrorDetails {
        match self {
            CreateError::InvalidOption(invalid) => invalid.details(),
            CreateError::Image(err) => err.details(),
            CreateError::ImageNotFound { .. } => ErrorDetails {
                field: Some("image".into()),
                ..Default::default()
            },
            CreateError::SandboxExists { .. } | CreateError::SandboxStopped { .. } => {
                ErrorDetails {
                    field: Some("name".into()),
                    ..Default::default()
                }
            }
            CreateError::PortInUse { .. } => ErrorDetails {
                field: Some("ports".into()),
                ..Default::default()
            },
            CreateError::BootFailed { console_tail, .. } => ErrorDetails {
                console_tail: Some(console_tail.clone()),
                ..Default::default()
            },
            CreateError::PatchFailed { field, source } => ErrorDetails {
                field: Some(field.clone()),
                ..source.details()
            },
            CreateError::Volume(err) => err.details(),
            _ => ErrorDetails::default(),
        }
    }
}

/// The sandbox's VM is gone (or going): why, and whether the guest's own
/// misbehaviour ended it, which callers see as `GUEST_PROTOCOL` (or
/// `SECRET_VIOLATION`, when a secret's `block-and-kill` ended it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sandbox {name:?} is not running{}", reason_suffix(reason))]
pub struct NotRunning {
    pub name: String,
    pub reason: String,
    pub guest_fault: bool,
    pub secret_violation: bool,
}

impl NotRunning {
    fn code(&self) -> ErrorCode {
        if self.secret_violation {
            ErrorCode::SecretViolation
        } else if self.guest_fault {
            ErrorCode::GuestProtocol
        } else {
            ErrorCode::SandboxNotRunning
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    InvalidOption(#[from] InvalidOption),
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
    #[error("{message}")]
    CommandNotFound { message: String },
    #[error("{message}")]
    UserNotFound { message: String },
    #[error("{message}")]
    Failed { message: String, errno: Option<i32> },
    #[error("the process did not finish within {timeout_ms} ms and was killed with everything it started")]
    Timeout { timeout_ms: u64 },
    /// The collected output outgrew `maxOutputBytes`; the process was killed.
    #[error("maxOutputBytes: the process wrote more than {limit} bytes of output and was killed with everything it started")]
    OutputLimit {
        limit: u64,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl HasCode for ExecError {
    fn code(&self) -> ErrorCode {
        match self {
            ExecError::InvalidOption(_) => ErrorCode::InvalidOption,
            ExecError::NotRunning(gone) => gone.code(),
            ExecError::CommandNotFound { .. } => ErrorCode::CommandNotFound,
            ExecError::UserNotFound { .. } => ErrorCode::UserNotFound,
            ExecError::Failed { .. } => ErrorCode::ExecFailed,
            ExecError::Timeout { .. } => ErrorCode::ExecTimeout,
            ExecError::OutputLimit { .. } => ErrorCode::LimitExceeded,
        }
    }

    fn details(&self) -> ErrorDetails {
        match self {
            ExecError::InvalidOption(invalid) => invalid.details(),
            ExecError::Failed { errno, .. } => ErrorDetails {
                errno: *errno,
                ..Default::default()
            },
            ExecError::OutputLimit { stdout, stderr, .. } => ErrorDetails {
                field: Some("maxOutputBytes".into()),
                stdout: Some(stdout.clone()),
                stderr: Some(stderr.clone()),
                ..Default::default()
            },
            _ => ErrorDetails::default(),
        }
    }
}

/// What kind of filesystem failure, from the errno the guest (or host) reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsErrorKind {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    NotEmpty,
    Other,
}

impl FsErrorKind {
    pub fn from_errno(errno: Option<i32>) -> Self {
        match errno {
            Some(libc::ENOENT) => FsErrorKind::NotFound,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                FsErrorKind::PermissionDenied
            }
            Some(libc::EEXIST) => FsErrorKind::AlreadyExists,
            Some(libc::ENOTDIR) => FsErrorKind::NotADirectory,
            Some(libc::EISDIR) => FsErrorKind::IsADirectory,
            Some(libc::ENOTEMPTY) => FsErrorKind::NotEmpty,
            _ => FsErrorKind::Other,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    InvalidOption(#[from] InvalidOption),
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
    /// A limit the caller set (or its default) was reached; `field` names it.
    #[error("{field}: {message}")]
    LimitExceeded {
        field: &'static str,
        path: String,
        message: String,
    },
    /// The caller's AbortSignal fired.
    #[error("{path}: aborted")]
    Aborted { path: String },
    /// The guest answered something no honest guest sends.
    #[error("the guest sent {problem}")]
    GuestProtocol { problem: String },
    /// The guest did not answer in time, though it still answers liveness checks.
    #[error("{path}: the guest did not answer within {waited_ms} ms")]
    NoAnswer { path: String, waited_ms: u64 },
    /// The guest's system call failed.
    #[error("{message}")]
    Guest {
        kind: FsErrorKind,
        errno: Option<i32>,
        path: String,
        message: String,
    },
    /// A host-side file of `copyFromHost`/`copyToHost` failed.
    #[error("host file {path}")]
    Host {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HasCode for FsError {
    fn code(&self) -> ErrorCode {
        match self {
            FsError::InvalidOption(_) => ErrorCode::InvalidOption,
            FsError::NotRunning(gone) => gone.code(),
            FsError::Host { .. } => ErrorCode::HostIo,
            FsError::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            FsError::Aborted { .. } => ErrorCode::Aborted,
            FsError::GuestProtocol { .. } => ErrorCode::GuestProtocol,
            FsError::NoAnswer { .. } => ErrorCode::FsError,
            FsError::Guest { kind, .. } => match kind {
                FsErrorKind::NotFound => ErrorCode::FsNotFound,
                FsErrorKind::PermissionDenied => ErrorCode::FsPermissionDenied,
                FsErrorKind::AlreadyExists => ErrorCode::FsAlreadyExists,
                FsErrorKind::NotADirectory => ErrorCode::FsNotADirectory,
                FsErrorKind::IsADirectory => ErrorCode::FsIsADirectory,
                FsErrorKind::NotEmpty => ErrorCode::FsNotEmpty,
                FsErrorKind::Other => ErrorCode::FsError,
            },
        }
    }

    fn details(&self) -> ErrorDetails {
        match self {
            FsError::InvalidOption(invalid) => invalid.details(),
            FsError::Guest { errno, path, .. } => ErrorDetails {
                errno: *errno,
                path: Some(path.clone()),
                ..Default::default()
            },
            FsError::Host { path, source } => ErrorDetails {
                errno: source.raw_os_error(),
                path: Some(path.display().to_string()),
                ..Default::default()
            },
            FsError::LimitExceeded { field, path, .. } => ErrorDetails {
                field: Some(field.to_string()),
                path: Some(path.clone()),
                ..Default::default()
            },
            FsError::Aborted { path } | FsError::NoAnswer { path, .. } => ErrorDetails {
                path: Some(path.clone()),
                ..Default::default()
            },
            FsError::NotRunning(_) | FsError::GuestProtocol { .. } => ErrorDetails::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("waiting for the sandbox runtime to exit")]
    Wait(#[source] std::io::Error),
}

impl HasCode for StopError {
    fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

/// Failures of the operations on sandboxes by name (get, list, remove).
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    InvalidOption(#[from] InvalidOption),
    #[error("there is no sandbox named {name:?}")]
    NotFound { name: String },
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
    #[error("sandbox {name:?} is running: stop it first, or remove it with force")]
    Running { name: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Stop(#[from] StopError),
    /// `start`: booting the sandbox again failed.
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl LifecycleError {
    pub(crate) fn io(what: &str, source: std::io::Error) -> LifecycleError {
        LifecycleError::Io {
            what: what.to_string(),
            source,
        }
    }
}

impl HasCode for LifecycleError {
    fn code(&self) -> ErrorCode {
        match self {
            LifecycleError::InvalidOption(_) => ErrorCode::InvalidOption,
            LifecycleError::NotFound { .. } => ErrorCode::SandboxNotFound,
            LifecycleError::NotRunning(not_running) => not_running.code(),
            LifecycleError::Running { .. } => ErrorCode::SandboxRunning,
            LifecycleError::Create(err) => err.code(),
            LifecycleError::State(_) | LifecycleError::Stop(_) | LifecycleError::Io { .. } => {
                ErrorCode::Internal
            }
        }
    }

    fn details(&self) -> ErrorDetails {
        match self {
            LifecycleError::InvalidOption(invalid) => invalid.details(),
            LifecycleError::Create(err) => err.details(),
            LifecycleError::NotFound { .. } | LifecycleError::Running { .. } => ErrorDetails {
                field: Some("name".into()),
                ..Default::default()
            },
            _ => ErrorDetails::default(),
        }
    }
}

/// Failures of volume operations, and of a sandbox's claim on its volumes.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    InvalidOption(#[from] InvalidOption),
    #[error("there is no volume named {name:?}")]
    NotFound {
        name: String,
        /// The option that named it (`volumes["/data"]`), when a sandbox did.
        field: Option<String>,
    },
    #[error("a volume named {name:?} exists already")]
    Exists { name: String },
    #[error("volume {name:?} is mounted by running sandbox(es): {sandboxes}")]
    InUse { name: String, sandboxes: String },
    #[error(
        "disk volume {name:?} is mounted by running sandbox {sandbox:?}: a disk volume is \
         mounted by one sandbox at a time"
    )]
    Busy {
        name: String,
        sandbox: String,
        field: String,
    },
    /// `mkfs.ext4` (e2fsprogs) is not installed.
    #[error("{message}")]
    MissingProgram { message: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl VolumeError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
        let what = what.into();
        move |source| VolumeError::Io { what, source }
    }

    pub(crate) fn io_error(what: &str, source: std::io::Error) -> VolumeError {
        VolumeError::io(what)(source)
    }
}

impl HasCode for VolumeError {
    fn code(&self) -> ErrorCode {
        match self {
            VolumeError::InvalidOption(_) => ErrorCode::InvalidOption,
            VolumeError::NotFound { .. } => ErrorCode::VolumeNotFound,
            VolumeError::Exists { .. } => ErrorCode::VolumeExists,
            VolumeError::InUse { .. } => ErrorCode::VolumeInUse,
            VolumeError::Busy { .. } => ErrorCode::VolumeBusy,
            VolumeError::MissingProgram { .. } => ErrorCode::MissingAsset,
            VolumeError::State(_) | VolumeError::Io { .. } => ErrorCode::Internal,
        }
    }

    fn details(&self) -> ErrorDetails {
        let field = match self {
            VolumeError::InvalidOption(invalid) => return invalid.details(),
            VolumeError::NotFound { field, .. } => field.clone(),
            VolumeError::Busy { field, .. } => Some(field.clone()),
            VolumeError::Exists { .. } | VolumeError::InUse { .. } => Some("name".into()),
            _ => None,
        };
        ErrorDetails {
            field,
            ..Default::default()
        }
    }
}

/// Failures of the image service (pull, inspect, list, remove, prune).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    InvalidOption(#[from] InvalidOption),
    #[error("image {reference} is not in the local cache and pullPolicy is \"never\"")]
    NotCached { reference: String },
    #[error("image {reference} is not in the local cache")]
    NotKnown { reference: String },
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error("image {reference} is used by running sandbox(es): {sandboxes}")]
    InUse {
        reference: String,
        sandboxes: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("image cache")]
    Cache(#[source] std::io::Error),
}

impl HasCode for ImageError {
    fn code(&self) -> ErrorCode {
        match self {
            ImageError::InvalidOption(_) => ErrorCode::InvalidOption,
            ImageError::NotCached { .. } | ImageError::NotKnown { .. } => ErrorCode::ImageNotFound,
            ImageError::InUse { .. } => ErrorCode::ImageInUse,
            ImageError::Pull(err) => match err {
                PullError::Reference(msb_oci::ReferenceError::Invalid { .. }) => {
                    ErrorCode::InvalidOption
                }
                PullError::NotFound { .. } | PullError::NoPlatform { .. } => {
                    ErrorCode::ImageNotFound
                }
                PullError::Unreachable { .. } => ErrorCode::RegistryUnreachable,
                PullError::Unauthorized { .. } => ErrorCode::RegistryUnauthorized,
                PullError::DigestMismatch { .. } | PullError::SizeMismatch { .. } => {
                    ErrorCode::ImageIntegrity
                }
                PullError::Unpack { .. } | PullError::UnsupportedLayer { .. } => {
                    ErrorCode::LayerRejected
                }
                _ => ErrorCode::PullFailed,
            },
            ImageError::State(_) | ImageError::Cache(_) => ErrorCode::Internal,
        }
    }

    fn details(&self) -> ErrorDetails {
        match self {
            ImageError::InvalidOption(invalid) => invalid.details(),
            ImageError::Pull(PullError::Reference(_)) => ErrorDetails {
                field: Some("image".into()),
                ..Default::default()
            },
            _ => ErrorDetails::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_upper_snake_strings() {
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
        for code in &codes {
            assert!(
                code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{code}"
            );
        }
        assert_eq!(ErrorCode::InvalidOption.as_str(), "INVALID_OPTION");
        assert_eq!(ErrorCode::FsNotADirectory.as_str(), "FS_NOT_A_DIRECTORY");
        assert_eq!(ErrorCode::ALL.len(), 39);
    }
}
