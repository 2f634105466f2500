//! Errors of the engine's operations. Each carries a stable [`ErrorCode`] that
//! crosses into JavaScript as `error.code`; messages are for people.

use std::path::PathBuf;

/// Stable codes, one per class of failure a caller may handle differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidOption,
    ImageNotFound,
    SandboxExists,
    PortInUse,
    MissingAsset,
    BootFailed,
    PatchFailed,
    ImageInUse,
    RegistryUnreachable,
    RegistryUnauthorized,
    ImageIntegrity,
    LayerRejected,
    PullFailed,
    SandboxNotRunning,
    CommandNotFound,
    UserNotFound,
    ExecFailed,
    ExecTimeout,
    FsNotFound,
    FsPermissionDenied,
    FsAlreadyExists,
    FsNotADirectory,
    FsIsADirectory,
    FsNotEmpty,
    FsError,
    HostIo,
    GuestProtocol,
    LimitExceeded,
    Aborted,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidOption => "INVALID_OPTION",
            ErrorCode::ImageNotFound => "IMAGE_NOT_FOUND",
            ErrorCode::SandboxExists => "SANDBOX_EXISTS",
            ErrorCode::PortInUse => "PORT_IN_USE",
            ErrorCode::MissingAsset => "MISSING_ASSET",
            ErrorCode::BootFailed => "BOOT_FAILED",
            ErrorCode::PatchFailed => "PATCH_FAILED",
            ErrorCode::ImageInUse => "IMAGE_IN_USE",
            ErrorCode::RegistryUnreachable => "REGISTRY_UNREACHABLE",
            ErrorCode::RegistryUnauthorized => "REGISTRY_UNAUTHORIZED",
            ErrorCode::ImageIntegrity => "IMAGE_INTEGRITY",
            ErrorCode::LayerRejected => "LAYER_REJECTED",
            ErrorCode::PullFailed => "PULL_FAILED",
            ErrorCode::SandboxNotRunning => "SANDBOX_NOT_RUNNING",
            ErrorCode::CommandNotFound => "COMMAND_NOT_FOUND",
            ErrorCode::UserNotFound => "USER_NOT_FOUND",
            ErrorCode::ExecFailed => "EXEC_FAILED",
            ErrorCode::ExecTimeout => "EXEC_TIMEOUT",
            ErrorCode::FsNotFound => "FS_NOT_FOUND",
            ErrorCode::FsPermissionDenied => "FS_PERMISSION_DENIED",
            ErrorCode::FsAlreadyExists => "FS_ALREADY_EXISTS",
            ErrorCode::FsNotADirectory => "FS_NOT_A_DIRECTORY",
            ErrorCode::FsIsADirectory => "FS_IS_A_DIRECTORY",
            ErrorCode::FsNotEmpty => "FS_NOT_EMPTY",
            ErrorCode::FsError => "FS_ERROR",
            ErrorCode::HostIo => "HOST_IO",
            ErrorCode::GuestProtocol => "GUEST_PROTOCOL",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

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
    Image(#[from] crate::images::ImageError),
    #[error("a sandbox named {name:?} is already running")]
    SandboxExists { name: String },
    #[error("ports: {message}")]
    PortInUse { message: String },
    #[error("{what} not found at {path}; run the setup script (see README)")]
    MissingAsset { what: &'static str, path: PathBuf },
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
            CreateError::SandboxExists { .. } => ErrorCode::SandboxExists,
            CreateError::PortInUse { .. } => ErrorCode::PortInUse,
            CreateError::MissingAsset { .. } => ErrorCode::MissingAsset,
            CreateError::BootFailed { .. } => ErrorCode::BootFailed,
            CreateError::PatchFailed { .. } => ErrorCode::PatchFailed,
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
            CreateError::SandboxExists { .. } => ErrorDetails {
                field: Some("name".into()),
                ..Default::default()
            },
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
            _ => ErrorDetails::default(),
        }
    }
}

/// The sandbox's VM is gone (or going): why, and whether the guest's own
/// misbehaviour ended it, which callers see as `GUEST_PROTOCOL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sandbox {name:?} is not running{}", reason_suffix(reason))]
pub struct NotRunning {
    pub name: String,
    pub reason: String,
    pub guest_fault: bool,
}

impl NotRunning {
    fn code(&self) -> ErrorCode {
        if self.guest_fault {
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
