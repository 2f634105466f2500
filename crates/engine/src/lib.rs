//! The microsandbox engine: sandboxes as the SDK and CLI see them, with no
//! Node types. The napi binding (`src/` at the repository root) is a thin layer
//! over this crate.

mod config;
mod conn;
mod copy_out;
mod error;
mod exec;
mod fs;
mod images;
mod initramfs;
mod network;
mod patch;
mod paths;
mod request;
mod sandbox;

pub use config::{PullPolicy, SandboxOptions, DEFAULT_CPUS, DEFAULT_MEMORY_MIB, MAX_CPUS};
pub use conn::Lifecycle;
pub use error::{
    CreateError, ErrorCode, ErrorDetails, ExecError, FsError, FsErrorKind, HasCode, InvalidOption,
    NotRunning, StopError,
};
pub use exec::{
    ExecControl, ExecEvent, ExecEvents, ExecOptions, ExecOutput, StdinSource, OUTPUT_WINDOW,
};
pub use fs::{
    CopyToHostOptions, FileReader, FileWriter, SandboxFs, WriteOptions, DEFAULT_MAX_LIST_ENTRIES,
};
pub use images::{ImageError, ImageInfo, Images, Progress, PruneReport};
pub use msb_oci::{Credentials, PullEvent, RegistryOptions, RuntimeConfig};
pub use msb_protocol::{DirEntry, ExitStatus, FileKind, FileStat, TtySize, User};
pub use msb_runtime::control::BootInfo;
pub use msb_vmm::Accel;
pub use network::{NetworkOptions, PortOption, RuleOptions};
pub use patch::{Patch, SCRIPTS_DIR};
pub use paths::EngineSettings;
pub use sandbox::Sandbox;
pub use tokio_util::sync::CancellationToken;
