//! Options of one process (`exec`, `execStream`) and their validation.

use std::time::Duration;

use msb_protocol::{TtySize, User};

use super::{validate_env, validate_guest_path};
use crate::error::InvalidOption;

/// Default cap on the output `ExecEvents::collect` keeps in memory.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Default)]
pub enum StdinSource {
    /// Stdin reads end-of-file at once.
    #[default]
    Null,
    /// These bytes, then end-of-file.
    Bytes(Vec<u8>),
    /// Written by the caller through `ExecControl::write_stdin`.
    Pipe,
}

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub user: Option<User>,
    pub timeout: Option<Duration>,
    pub stdin: StdinSource,
    /// Run under a pseudo-terminal of this size.
    pub tty: Option<TtySize>,
    /// Most stdout and stderr bytes together that `ExecEvents::collect`
    /// keeps; beyond it the process is killed. `None`: [`DEFAULT_MAX_OUTPUT_BYTES`].
    pub max_output_bytes: Option<u64>,
}

impl ExecOptions {
    pub(crate) fn validate(&self) -> Result<(), InvalidOption> {
        if let Some(cwd) = &self.cwd {
            validate_guest_path("cwd", cwd)?;
        }
        validate_env("env", &self.env)?;
        if let Some(User::Name(name)) = &self.user {
            if name.is_empty() || name.contains(':') || name.contains('\0') {
                return Err(InvalidOption::new(
                    "user",
                    format!("{name:?} is not a user name"),
                ));
            }
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(InvalidOption::new("timeout", "must be positive"));
        }
        if self.max_output_bytes == Some(0) {
            return Err(InvalidOption::new("maxOutputBytes", "must be positive"));
        }
        if let Some(size) = self.tty {
            validate_tty_size(size)?;
        }
        Ok(())
    }
}

pub fn validate_tty_size(size: TtySize) -> Result<(), InvalidOption> {
    if size.cols == 0 || size.rows == 0 {
        return Err(InvalidOption::new(
            "tty",
            "columns and rows must be at least 1",
        ));
    }
    Ok(())
}
