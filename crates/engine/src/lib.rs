//! The microsandbox engine: sandboxes as the SDK and CLI see them, with no
//! Node types. The napi binding (`src/` at the repository root) is a thin layer
//! over this crate.
//!
//! Layout, and which module may use which:
//! - [`options`]: what callers give, and its validation (depends only on
//!   [`error`]).
//! - `error`: one error enum per operation, each with a stable [`ErrorCode`].
//! - `settings`: [`EngineSettings`], every environment variable the engine obeys, read once.
//! - `launch`: the steps of `Sandbox::create`, with their cleanup;
//!   `sandbox`: the handle; `lifecycle`: sandboxes by name (run records,
//!   control sockets) for `get`, `list` and `remove`; `volumes`: named
//!   volumes and what a sandbox's storage options become. Both use the runtime connection (`conn`,
//!   `request`), `exec`, `fs` (with `copy_out`), `images` and `initramfs`.
//!
//! The engine talks to its runtime in `msb_control` messages and links no VMM
//! and no network stack (a test in `tests/dependencies.rs` keeps it so).

mod conn;
mod copy_out;
mod error;
mod exec;
mod fs;
mod images;
mod initramfs;
mod launch;
mod lifecycle;
pub mod options;
mod request;
mod sandbox;
mod settings;
mod volumes;

pub use conn::Lifecycle;
pub use error::{
    CreateError, ErrorCode, ErrorDetails, ExecError, FsError, FsErrorKind, HasCode, ImageError,
    InvalidOption, LifecycleError, NotRunning, StopError, VolumeError,
};
pub use exec::{ExecControl, ExecEvent, ExecEvents, ExecOutput};
pub use fs::{
    CopyToHostOptions, FileReader, FileWriter, SandboxFs, WriteOptions, DEFAULT_MAX_LIST_ENTRIES,
};
pub use images::{ImageInfo, Images, Progress, PruneReport};
pub use lifecycle::{SandboxMetrics, SandboxSummary};
pub use msb_control::secrets::SecretValue;
pub use msb_control::vm::Accel;
pub use msb_control::BootInfo;
pub use msb_oci::{Credentials, PullEvent, PulledImage, RegistryOptions, RuntimeConfig};
pub use msb_protocol::{DirEntry, ExitStatus, FileKind, FileStat, TtySize, User};
pub use options::exec::{ExecOptions, StdinSource};
pub use options::network::{NetworkOptions, PortOption, RuleOptions};
pub use options::patch::{Patch, SCRIPTS_DIR};
pub use options::sandbox::{
    PullPolicy, SandboxOptions, DEFAULT_CPUS, DEFAULT_MEMORY_MIB, MAX_CPUS,
};
pub use options::secrets::{SecretEnvOptions, TlsOptions};
pub use request::OUTPUT_WINDOW;
pub use sandbox::Sandbox;
pub use settings::EngineSettings;
pub use volumes::{VolumeInfo, VolumeKind, VolumeOptions, VolumeUsage};
/// Named volumes: create, get, list, remove, usage.
pub mod volume {
    pub use crate::volumes::{create, get, list, remove, usage};
}
pub use tokio_util::sync::CancellationToken;
