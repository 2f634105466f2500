//! Virtual machine monitors behind one interface.
//!
//! A backend turns a [`VmSpec`] and the guest ends of the host's links (agent
//! channel, console) into a running VM process; [`select`] is the one place
//! that picks the backend for a spec's [`BackendChoice`]. The VM is always a child
//! process: QEMU by nature, and libkrun because `krun_start_enter` takes over
//! the process that calls it. The caller (the sandbox runtime) owns the other
//! ends of the links and never learns which backend feeds them.

mod control;
pub mod kvm_probe;
mod qemu;

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

pub use control::{ControlError, Controller};
pub use qemu::Qemu;

// The spec is plain data shared with the engine, which must not link this crate.
pub use msb_control::vm::{
    Accel, AccelChoice, BackendChoice, NetDevice, RootDevice, StorageDevice, VmSpec,
    ROOT_SHARE_TAG, TRANSFER_SHARE_TAG,
};

/// Settings of the backends, read once by the runtime at startup and passed down: nothing in
/// this crate reads the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmSettings {
    /// The QEMU binary (`MSB_QEMU`, else `qemu-system-x86_64` from `PATH`).
    pub qemu: PathBuf,
}

impl Default for VmmSettings {
    fn default() -> Self {
        Self {
            qemu: PathBuf::from("qemu-system-x86_64"),
        }
    }
}

/// The one place a backend is chosen. The rule:
///
/// - [`BackendChoice::Qemu`] picks QEMU.
/// - [`BackendChoice::Auto`] picks QEMU too. A krun backend will be picked by `Auto` only where KVM
///   runs guests at native speed ([`kvm_probe`]) and only once it has passed the end-to-end
///   suite on such a host; until then it will be opt-in by name.
///
/// The accelerator is a separate choice ([`resolve_accel`]), made by the backend at launch.
pub fn select(choice: BackendChoice, settings: &VmmSettings) -> Box<dyn Backend> {
    match choice {
        BackendChoice::Auto | BackendChoice::Qemu => Box::new(Qemu::new(settings.qemu.clone())),
    }
}

/// The accelerator for `choice`: KVM only when the probe shows it runs guests at native speed.
pub fn resolve_accel(choice: AccelChoice) -> Result<Accel, LaunchError> {
    let native = || kvm_probe::probe_cached().verdict == kvm_probe::KvmVerdict::Native;
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Auto if native() => Ok(Accel::Kvm),
        AccelChoice::Auto => Ok(Accel::Tcg),
        AccelChoice::Kvm if native() => Ok(Accel::Kvm),
        AccelChoice::Kvm => Err(LaunchError::KvmNotNative(
            kvm_probe::probe_cached().detail.clone(),
        )),
    }
}

/// The guest ends of the host's links, handed to the VMM.
pub struct GuestLinks {
    /// Stream socket carrying agent frames (a virtio-serial port named `agent`).
    pub agent: OwnedFd,
    /// Stream socket receiving the kernel console.
    pub console: OwnedFd,
    /// Stream socket carrying Ethernet frames, for [`NetDevice::Stream`].
    pub net: Option<OwnedFd>,
}

/// How a VM comes up.
pub enum Start {
    /// Boots the kernel.
    Cold,
    /// Boots the kernel with the guest's memory in the new file `ram`, shared
    /// with it, and QMP on `control`: a VM to be saved as a template
    /// ([`Controller::save`]).
    Template { ram: PathBuf, control: OwnedFd },
    /// Waits for a template's state on `control` ([`Controller::resume`]), its
    /// memory the template's `ram` file mapped copy-on-write: the file is never
    /// written, and VMs restored from it share the pages they have not changed.
    /// `accel` is the template's: a restore does not probe again, and should
    /// the host have changed, the restore fails and the caller boots cold.
    Restore {
        ram: File,
        control: OwnedFd,
        accel: Accel,
    },
}

/// A VM running as a child process. Dropping it kills the process.
pub struct VmProcess {
    pub child: tokio::process::Child,
    pub accel: Accel,
}

pub trait Backend {
    fn name(&self) -> &'static str;
    /// Starts the VM. `vmm_log` receives the VMM's own diagnostics (stderr).
    fn launch(
        &self,
        spec: &VmSpec,
        links: GuestLinks,
        vmm_log: File,
        start: Start,
    ) -> Result<VmProcess, LaunchError>;

    /// Everything a template's saved state depends on for `spec`, as text (the
    /// caller hashes it): VMs whose specs give the same text can be restored from
    /// one template. `None` when `spec` cannot start from a template. The
    /// accelerator counts as asked for, not as resolved: resolving may probe,
    /// which a restore exists to avoid; a template keeps the one it ran on.
    fn template_identity(&self, spec: &VmSpec) -> Option<String>;
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{what} not found at {path}")]
    MissingFile { what: &'static str, path: PathBuf },
    /// The VMM program is not installed (or not where it was said to be).
    #[error(
        "{program} not found: install QEMU (on Debian and Ubuntu: apt-get install qemu-system-x86), \
         or set MSB_QEMU to its path"
    )]
    ProgramNotFound { program: String },
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("KVM was requested but does not run guests at native speed here: {0}")]
    KvmNotNative(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_and_qemu_select_qemu() {
        let settings = VmmSettings::default();
        assert_eq!(select(BackendChoice::Auto, &settings).name(), "qemu");
        assert_eq!(select(BackendChoice::Qemu, &settings).name(), "qemu");
    }
}
