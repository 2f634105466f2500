//! What a VM is made of, as the engine asks for it and a VMM backend builds it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the VM is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Which VMM runs it; the runtime resolves it with `msb_vmm::select`.
    pub backend: BackendChoice,
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
    /// Host storage the guest mounts: volumes, bind mounts, a persistent root.
    pub storage: Vec<StorageDevice>,
}

impl VmSpec {
    /// This spec with the host directory of every 9p share (root, transfer
    /// share, share volumes) replaced by `dir`. The guest sees a share by its
    /// tag only, so the result has the same shape as `self`: a template VM
    /// runs with its shares at an empty directory, and a template's identity
    /// leaves share paths out.
    pub fn with_shares_at(&self, dir: &Path) -> VmSpec {
        let mut shape = self.clone();
        if let RootDevice::Share(root) = &mut shape.root {
            *root = dir.to_path_buf();
        }
        if let Some(transfer) = &mut shape.transfer_share {
            *transfer = dir.to_path_buf();
        }
        for device in &mut shape.storage {
            if let StorageDevice::Share { path, .. } = device {
                *path = dir.to_path_buf();
            }
        }
        shape
    }
}

/// Host storage attached to the VM. The host decides every mode here; the
/// guest cannot widen it (QEMU refuses writes to a read-only device itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageDevice {
    /// A host directory shared over 9p with mount tag `tag`, guest ownership
    /// and modes kept as extended attributes (`security_model=mapped-xattr`):
    /// the host file is always a plain file or directory of the VMM's user,
    /// whatever setuid bit, device node or symlink the guest makes.
    Share {
        tag: String,
        path: PathBuf,
        readonly: bool,
    },
    /// A raw disk image attached as a virtio block device the guest finds by
    /// `serial` (at most 20 bytes).
    Disk {
        serial: String,
        path: PathBuf,
        readonly: bool,
    },
}

/// Which VMM backend runs a VM. The rule that turns a choice into a backend
/// is one function, `msb_vmm::select`, and documented there.
///
/// Room to grow: a `Krun` choice (libkrun in a child process, for hosts
/// where KVM runs guests at native speed), and a restore source (a snapshot
/// taken before the agent mounts its root) that the chosen backend starts
/// from instead of booting cold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendChoice {
    /// The runtime picks (today always QEMU).
    #[default]
    Auto,
    /// `qemu-system-x86_64 -M microvm`.
    Qemu,
}

/// Where the guest's Ethernet frames go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetDevice {
    /// To the host-side stack over the runtime's network link (frames with a
    /// 4-byte big-endian length prefix). `mac` is the guest's address, six
    /// hex bytes separated by `-` or `:`.
    Stream { mac: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootDevice {
    /// A host directory, shared over 9p (mount tag [`ROOT_SHARE_TAG`]).
    Share(PathBuf),
    /// A filesystem image file, attached read-only as a virtio block device
    /// with serial [`ROOT_SHARE_TAG`].
    Disk(PathBuf),
}

/// Mount tag of the root share (and serial of a root disk), known to the
/// guest through `RootSpec`.
pub const ROOT_SHARE_TAG: &str = "msbroot";

/// Mount tag of the transfer share.
pub const TRANSFER_SHARE_TAG: &str = "msbxfer";

/// The accelerator asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccelChoice {
    /// KVM when the probe shows guests run at native speed, else emulation.
    #[default]
    Auto,
    /// KVM, and fail if it is not native.
    Kvm,
    /// Software emulation (QEMU TCG) always.
    Tcg,
}

/// The accelerator a VM runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The name callers see (`bootInfo.accel`) and QEMU's `-accel` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}
