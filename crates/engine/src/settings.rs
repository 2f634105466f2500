//! The engine's settings: where things live (the state home `MSB_HOME`, the
//! shipped assets: guest kernel, guest agent, runtime binary) and how VMs are
//! run. Every environment variable the engine obeys is read here, once, by
//! [`EngineSettings::from_env`] (the napi layer calls it at each entry point);
//! everything below gets the values passed down.
//!
//! ```text
//! $MSB_HOME/
//!   sandboxes/<name>/   lock, console.log, vmm.log, runtime.log
//!   cache/initramfs/    one initramfs per agent build, by content hash
//!   cache/snapshots/    template snapshots, one directory per machine shape
//! ```

use std::path::{Path, PathBuf};

use msb_control::vm::AccelChoice;
use msb_control::SnapshotPolicy;

use crate::error::CreateError;

/// What the engine works with. Built by the caller (the Node binding resolves
/// the package's asset directory) and cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    pub home: PathBuf,
    pub kernel: PathBuf,
    pub agent: PathBuf,
    pub runtime: PathBuf,
    /// The accelerator VMs ask for.
    pub accel: AccelChoice,
    /// Whether the agent logs its boot phases, with times, to the console log.
    pub guest_debug: bool,
    /// The program that formats disk volumes and persistent roots.
    pub mkfs_ext4: PathBuf,
    /// Whether VMs start from template snapshots where they can.
    pub snapshots: bool,
    /// How long one template serves before it is made again.
    pub snapshot_max_age_s: u64,
}

/// A template's default lifetime: its clones share its kernel's address layout.
const SNAPSHOT_MAX_AGE_S: u64 = 24 * 60 * 60;

impl EngineSettings {
    /// Assets from `assets_dir` and the home from `MSB_HOME` (default
    /// `~/.microsandbox`); `MSB_KERNEL`, `MSB_AGENT` and `MSB_RUNTIME` override
    /// single assets. `MSB_ACCEL=kvm|tcg` forces an accelerator (anything else
    /// lets the runtime's probe decide); `MSB_GUEST_DEBUG=1` turns on the
    /// agent's boot log; `MSB_MKFS_EXT4` names the ext4 formatter (default
    /// `mkfs.ext4` from `PATH` or the sbin directories); `MSB_SNAPSHOT=off` boots
    /// every VM's kernel instead of restoring a template, and
    /// `MSB_SNAPSHOT_MAX_AGE` (seconds, default a day) is how long a template serves.
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
            accel: match std::env::var("MSB_ACCEL").as_deref() {
                Ok("kvm") => AccelChoice::Kvm,
                Ok("tcg") => AccelChoice::Tcg,
                _ => AccelChoice::Auto,
            },
            guest_debug: std::env::var("MSB_GUEST_DEBUG").as_deref() == Ok("1"),
            mkfs_ext4: var("MSB_MKFS_EXT4").unwrap_or_else(find_mkfs_ext4),
            snapshots: std::env::var("MSB_SNAPSHOT").as_deref() != Ok("off"),
            snapshot_max_age_s: std::env::var("MSB_SNAPSHOT_MAX_AGE")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(SNAPSHOT_MAX_AGE_S),
        }
    }

    /// Template snapshots for the runtime, unless they are turned off.
    pub fn snapshot_policy(&self) -> Option<SnapshotPolicy> {
        self.snapshots.then(|| SnapshotPolicy {
            dir: self.home.join("cache").join("snapshots"),
            max_age_s: self.snapshot_max_age_s,
        })
    }

    pub fn sandbox_dir(&self, name: &str) -> PathBuf {
        self.home.join("sandboxes").join(name)
    }

    /// The state database every process of this home shares.
    pub fn state_db(&self) -> PathBuf {
        self.home.join("state.db")
    }

    /// Where runtimes listen: one control socket per running sandbox. Mode 0700,
    /// so that no other user can reach a sandbox.
    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }

    pub fn control_socket(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.sock"))
    }

    pub fn initramfs_cache(&self) -> PathBuf {
        self.home.join("cache").join("initramfs")
    }

    /// Fails with the first asset that is missing, so setup problems surface
    /// before any process starts.
    pub fn check_assets(&self) -> Result<(), CreateError> {
        for (what, path, env) in [
            ("guest kernel", &self.kernel, "MSB_KERNEL"),
            ("guest agent", &self.agent, "MSB_AGENT"),
            ("sandbox runtime", &self.runtime, "MSB_RUNTIME"),
        ] {
            if !path.is_file() {
                return Err(CreateError::MissingAsset {
                    what,
                    path: path.clone(),
                    env,
                });
            }
        }
        Ok(())
    }
}

/// `mkfs.ext4` from `PATH`, else the sbin directories a user's `PATH` often
/// lacks; the bare name when none has it (running it then says it is missing).
fn find_mkfs_ext4() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("mkfs.ext4"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("mkfs.ext4"))
}
