//! Errors of the engine's operations. Each carries a stable [`ErrorCode`] that
//! crosses into JavaScript as `error.code`; messages are for people.

use std::path::PathBuf;

/// Stable codes, one per class of failure a caller may handle differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidOption,
    ImageNotFound,
    SandboxExists,
    MissingAsset,
    BootFailed,
    SandboxNotRunning,
    CommandNotFound,
    ExecFailed,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidOption => "INVALID_OPTION",
            ErrorCode::ImageNotFound => "IMAGE_NOT_FOUND",
            ErrorCode::SandboxExists => "SANDBOX_EXISTS",
            ErrorCode::MissingAsset => "MISSING_ASSET",
            ErrorCode::BootFailed => "BOOT_FAILED",
            ErrorCode::SandboxNotRunning => "SANDBOX_NOT_RUNNING",
            ErrorCode::CommandNotFound => "COMMAND_NOT_FOUND",
            ErrorCode::ExecFailed => "EXEC_FAILED",
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
    /// The guest's errno, for failures of guest system calls.
    pub errno: Option<i32>,
    /// The end of the guest console, for boot failures.
    pub console_tail: Option<String>,
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

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    InvalidOption(#[from] InvalidOption),
    #[error("image: {path} is not a directory")]
    ImageNotFound { path: PathBuf },
    #[error("a sandbox named {name:?} is already running")]
    SandboxExists { name: String },
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
            CreateError::SandboxExists { .. } => ErrorCode::SandboxExists,
            CreateError::MissingAsset { .. } => ErrorCode::MissingAsset,
            CreateError::BootFailed { .. } => ErrorCode::BootFailed,
            CreateError::Io { .. } => ErrorCode::Internal,
        }
    }

    fn details(&self) -> ErrorDetails {
        match self {
            CreateError::InvalidOption(invalid) => invalid.details(),
            CreateError::ImageNotFound { .. } => ErrorDetails {
                field: Some("image".into()),
                ..Default::default()
            },
            CreateError::SandboxExists { .. } => ErrorDetails {
                field: Some("name".into()),
                ..Default::default()
            },
            CreateError::BootFailed { console_tail, .. } => ErrorDetails {
                console_tail: Some(console_tail.clone()),
                ..Default::default()
            },
            _ => ErrorDetails::default(),
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
pub enum ExecError {
    #[error(transparent)]
    InvalidOption(#[from] InvalidOption),
    #[error("sandbox {name:?} is not running{}", reason_suffix(reason))]
    NotRunning { name: String, reason: String },
    #[error("{message}")]
    CommandNotFound { message: String },
    #[error("{message}")]
    Failed { message: String, errno: Option<i32> },
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
            ExecError::NotRunning { .. } => ErrorCode::SandboxNotRunning,
            ExecError::CommandNotFound { .. } => ErrorCode::CommandNotFound,
            ExecError::Failed { .. } => ErrorCode::ExecFailed,
        }
    }

    fn details(&self) -> ErrorDetails {
        match self {
            ExecError::InvalidOption(invalid) => invalid.details(),
            ExecError::Failed { errno, .. } => ErrorDetails {
                errno: *errno,
                ..Default::default()
            },
            _ => ErrorDetails::default(),
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
