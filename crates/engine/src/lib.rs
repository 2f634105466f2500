//! The microsandbox engine: sandboxes as the SDK and CLI see them, with no
//! Node types. The napi binding (`src/` at the repository root) is a thin layer
//! over this crate.

mod config;
mod conn;
mod error;
mod exec;
mod initramfs;
mod paths;
mod sandbox;

pub use config::{SandboxOptions, DEFAULT_CPUS, DEFAULT_MEMORY_MIB, MAX_CPUS};
pub use conn::Lifecycle;
pub use error::{
    CreateError, ErrorCode, ErrorDetails, ExecError, HasCode, InvalidOption, StopError,
};
pub use exec::{ExecEvent, ExecOptions, ExecOutput, ExecStream, OUTPUT_WINDOW};
pub use msb_protocol::ExitStatus;
pub use msb_runtime::control::BootInfo;
pub use msb_vmm::Accel;
pub use paths::EngineSettings;
pub use sandbox::Sandbox;
