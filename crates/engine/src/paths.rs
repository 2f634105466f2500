//! Where things live: the state home (`MSB_HOME`) and the shipped assets (guest
//! kernel, guest agent, runtime binary).
//!
//! ```text
//! $MSB_HOME/
//!   sandboxes/<name>/   lock, console.log, vmm.log, runtime.log
//!   cache/initramfs/    one initramfs per agent build, by content hash
//! ```

use std::path::{Path, PathBuf};

use crate::error::CreateError;

/// Locations the engine works with. Built once by the caller (the Node binding
/// resolves the package's asset directory) and cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    pub home: PathBuf,
    pub kernel: PathBuf,
    pub agent: PathBuf,
    pub runtime: PathBuf,
}

impl EngineSettings {
    /// Assets from `assets_dir` and the home from `MSB_HOME` (default
    /// `~/.microsandbox`); `MSB_KERNEL`, `MSB_AGENT` and `MSB_RUNTIME` override
    /// single assets.
    pub fn from_env(assets_dir: &Path) -> Self {
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
        let home = var("MSB_HOME").unwrap_or_else(|| {
            var("HOME")
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".microsandbox")
        });
        Self {
            home,
            kernel: var("MSB_KERNEL").unwrap_or_else(|| assets_dir.join("vmlinux")),
            agent: var("MSB_AGENT").unwrap_or_else(|| assets_dir.join("msb-agent")),
            runtime: var("MSB_RUNTIME").unwrap_or_else(|| assets_dir.join("msb-runtime")),
        }
    }

    pub fn sandbox_dir(&self, name: &str) -> PathBuf {
        self.home.join("sandboxes").join(name)
    }

    pub fn initramfs_cache(&self) -> PathBuf {
        self.home.join("cache").join("initramfs")
    }

    /// Fails with the first asset that is missing, so setup problems surface
    /// before any process starts.
    pub fn check_assets(&self) -> Result<(), CreateError> {
        for (what, path) in [
            ("guest kernel", &self.kernel),
            ("guest agent", &self.agent),
            ("sandbox runtime", &self.runtime),
        ] {
            if !path.is_file() {
                return Err(CreateError::MissingAsset {
                    what,
                    path: path.clone(),
                });
            }
        }
        Ok(())
    }
}
