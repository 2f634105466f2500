//! Virtual machine monitors behind one interface.
//!
//! A backend turns a [`VmSpec`] and the guest ends of the host's links (agent
//! channel, console) into a running VM process. The VM is always a child
//! process: QEMU by nature, and libkrun because `krun_start_enter` takes over
//! the process that calls it. The caller (the sandbox runtime) owns the other
//! ends of the links and never learns which backend feeds them.

pub mod kvm_probe;
mod qemu;

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use qemu::Qemu;

/// What the VM is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// ELF vmlinux with a PVH entry note.
    pub kernel: PathBuf,
    /// Initramfs whose `/init` is the guest agent.
    pub initramfs: PathBuf,
    pub cpus: u8,
    pub memory_mib: u32,
    /// What the guest mounts read-only as the lower layer of its root.
    pub root: RootDevice,
    /// Host directory shared read-only for bulk transfers into the guest: the
    /// host drops a file there and the agent copies it in over 9p, far faster
    /// than the agent channel (QEMU moves at most 4 KiB per main-loop turn
    /// into a virtio-serial port).
    pub transfer_share: Option<PathBuf>,
    pub accel: AccelChoice,
    /// Appended to the kernel command line.
    pub kernel_args: Vec<String>,
    /// The guest's network interface, if it has one.
    pub net: Option<NetDevice>,
}

/// Where the guest's Ethernet frames go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetDevice {
    /// To the host-side stack over [`GuestLinks::net`] (frames with a 4-byte
    /// big-endian length prefix). `mac` is the guest's address, `aa:bb:...`.
    Stream { mac: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootDevice {
    /// A host directory, shared over 9p (mount tag [`ROOT_SHARE_TAG`]).
    Share(PathBuf),
    /// A filesystem image file, attached as the first virtio block device.
    Disk(PathBuf),
}

/// Mount tag of the root share, known to the guest through `RootSpec`.
pub const ROOT_SHARE_TAG: &str = "msbroot";

/// Mount tag of the transfer share.
pub const TRANSFER_SHARE_TAG: &str = "msbxfer";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccelChoice {
    /// KVM when the probe shows guests run at native speed, else emulation.
    Auto,
    /// KVM, and fail if it is not native.
    Kvm,
    /// Software emulation (QEMU TCG) always.
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn resolve(choice: AccelChoice) -> Result<Accel, LaunchError> {
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
    ) -> Result<VmProcess, LaunchError>;
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{what} not found at {path}")]
    MissingFile { what: &'static str, path: PathBuf },
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("KVM was requested but does not run guests at native speed here: {0}")]
    KvmNotNative(String),
}
