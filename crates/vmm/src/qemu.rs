//! QEMU backend: `qemu-system-x86_64 -M microvm`, virtio-mmio devices, every
//! host link an inherited file descriptor.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use command_fds::{CommandFdExt, FdMapping};

use crate::{
    Accel, Backend, GuestLinks, LaunchError, NetDevice, RootDevice, Start, StorageDevice,
    VmProcess, VmSpec, ROOT_SHARE_TAG, TRANSFER_SHARE_TAG,
};

/// Fd numbers the links get inside QEMU.
const AGENT_FD: i32 = 3;
const CONSOLE_FD: i32 = 4;
const NET_FD: i32 = 5;
const CONTROL_FD: i32 = 6;
/// A restored VM's memory file.
const RAM_FD: i32 = 7;

/// The id of the memory backend when the guest's memory is a file.
const RAM_ID: &str = "msbram";

/// Where the guest's memory comes from, as the command line sees it.
enum Memory<'a> {
    /// Anonymous memory of QEMU's own.
    Anonymous,
    /// A new file shared with the guest: a template being made.
    SharedFile(&'a Path),
    /// The file at [`RAM_FD`], mapped copy-on-write, with the state to come over QMP.
    Restored,
}

/// Kernel arguments every guest gets. `reboot=t`: with no ACPI a triple fault is
/// the fast way out, and QEMU runs with `-no-reboot`, so the guest's reboot ends
/// the VM. `panic=-1`: a panicking guest reboots, i.e. exits, at once.
const BASE_KERNEL_ARGS: &str = "console=ttyS0 reboot=t panic=-1 quiet mitigations=off";

pub struct Qemu {
    binary: PathBuf,
}

impl Qemu {
    /// Runs `binary` (see [`crate::VmmSettings::qemu`]).
    pub fn new(binary: PathBuf) -> Self {
        Self { binary }
    }
}

impl Backend for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn launch(
        &self,
        spec: &VmSpec,
        links: GuestLinks,
        vmm_log: File,
        start: Start,
    ) -> Result<VmProcess, LaunchError> {
        require(&spec.kernel, "guest kernel")?;
        require(&spec.initramfs, "guest initramfs")?;
        match &spec.root {
            RootDevice::Share(dir) => require(dir, "root directory")?,
            RootDevice::Disk(file) => require(file, "root disk image")?,
        }
        let accel = match &start {
            Start::Restore { accel, .. } => *accel,
            _ => crate::resolve_accel(spec.accel)?,
        };
        let (memory, control, ram) = match &start {
            Start::Cold => (Memory::Anonymous, None, None),
            Start::Template { ram, control } => (Memory::SharedFile(ram), Some(control), None),
            Start::Restore { ram, control, .. } => (Memory::Restored, Some(control), Some(ram)),
        };
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(qemu_args(spec, accel, &memory))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(vmm_log)
            .kill_on_drop(true);
        let mut mappings = vec![map(links.agent, AGENT_FD), map(links.console, CONSOLE_FD)];
        if let Some(net) = links.net {
            mappings.push(map(net, NET_FD));
        }
        let cloned = |fd: std::io::Result<OwnedFd>, what: &str| {
            fd.map_err(|source| LaunchError::Spawn {
                program: format!("{} ({what})", self.binary.display()),
                source,
            })
        };
        if let Some(control) = control {
            mappings.push(map(
                cloned(control.try_clone(), "control link")?,
                CONTROL_FD,
            ));
        }
        if let Some(ram) = ram {
            let ram = cloned(ram.try_clone().map(OwnedFd::from), "memory file")?;
            mappings.push(map(ram, RAM_FD));
        }
        command
            .fd_mappings(mappings)
            .expect("the link fd numbers are distinct");
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                // The VM must not outlive the runtime that owns its links.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let program = self.binary.display().to_string();
        let child = command.spawn().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => LaunchError::ProgramNotFound { program },
            _ => LaunchError::Spawn { program, source },
        })?;
        // `command` holds the parent's copies of the links; drop them now so that
        // the guest ends live only in QEMU.
        drop(command);
        drop(start);
        Ok(VmProcess { child, accel })
    }

    fn template_identity(&self, spec: &VmSpec) -> Option<String> {
        // A block device's size is read by the guest when it probes the device:
        // a restored guest would keep the template's. Shares are found by tag.
        if matches!(spec.root, RootDevice::Disk(_))
            || spec
                .storage
                .iter()
                .any(|d| matches!(d, StorageDevice::Disk { .. }))
        {
            return None;
        }
        // The paths of shares and whether they are read-only are the host's
        // side only; the guest sees tags.
        let mut shape = spec.with_shares_at(Path::new("/"));
        for device in &mut shape.storage {
            if let StorageDevice::Share { readonly, .. } = device {
                *readonly = false;
            }
        }
        let mut identity = format!("accel {:?}\n", spec.accel);
        identity.push_str(&qemu_args(&shape, Accel::Tcg, &Memory::Restored).join("\n"));
        for file in [
            &resolve_program(&self.binary)?,
            &spec.kernel,
            &spec.initramfs,
        ] {
            identity.push('\n');
            identity.push_str(&file_identity(file)?);
        }
        Some(identity)
    }
}

/// `path`, its size and modification time: a rebuilt kernel or QEMU makes a
/// new template.
fn file_identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(format!(
        "{} {} {}.{}",
        path.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

/// `program` as `Command` would find it: a path as is, a bare name on `PATH`.
fn resolve_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn map(fd: OwnedFd, child_fd: i32) -> FdMapping {
    FdMapping {
        parent_fd: fd,
        child_fd,
    }
}

fn require(path: &Path, what: &'static str) -> Result<(), LaunchError> {
    if path.exists() {
        Ok(())
    } else {
        Err(LaunchError::MissingFile {
            what,
            path: path.to_path_buf(),
        })
    }
}

/// The QEMU command line for `spec`, links at [`AGENT_FD`] and [`CONSOLE_FD`].
fn qemu_args(spec: &VmSpec, accel: Accel, memory: &Memory) -> Vec<String> {
    let mut cmdline = BASE_KERNEL_ARGS.to_string();
    for arg in &spec.kernel_args {
        cmdline.push(' ');
        cmdline.push_str(arg);
    }
    let accel = accel.as_str();
    [
        // No ACPI, PCI or firmware tables: virtio-mmio devices announced on the
        // kernel command line, which QEMU appends itself when ACPI is off.
        "-M",
        &match memory {
            Memory::Anonymous => "microvm,acpi=off,x-option-roms=off".to_string(),
            _ => format!("microvm,acpi=off,x-option-roms=off,memory-backend={RAM_ID}"),
        },
        "-accel",
        accel,
        "-cpu",
        if accel == "kvm" { "host" } else { "max" },
        "-smp",
        &spec.cpus.to_string(),
        "-m",
        &format!("{}M", spec.memory_mib),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-kernel",
        &spec.kernel.display().to_string(),
        "-initrd",
        &spec.initramfs.display().to_string(),
        "-append",
        &cmdline,
        "-chardev",
        &format!("socket,id=console,fd={CONSOLE_FD}"),
        "-serial",
        "chardev:console",
        "-device",
        "virtio-serial-device",
        "-chardev",
        &format!("socket,id=agent,fd={AGENT_FD}"),
        "-device",
        "virtserialport,chardev=agent,name=agent",
        "-device",
        "virtio-rng-device",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(root_args(&spec.root))
    .chain(transfer_args(spec))
    .chain(net_args(spec.net.as_ref()))
    .chain(spec.storage.iter().enumerate().flat_map(storage_args))
    .chain(memory_args(spec, memory))
    .collect()
}

/// The memory backend and control link of a template or a restored VM.
fn memory_args(spec: &VmSpec, memory: &Memory) -> Vec<String> {
    let (path, share, incoming) = match memory {
        Memory::Anonymous => return vec![],
        Memory::SharedFile(path) => (path.display().to_string(), "on", false),
        // QEMU opens the inherited descriptor's file again by its /proc name,
        // whatever has happened to the template's path since it was checked.
        Memory::Restored => (format!("/proc/self/fd/{RAM_FD}"), "off", true),
    };
    let mut args = vec![
        "-object".into(),
        format!(
            "memory-backend-file,id={RAM_ID},size={}M,mem-path={},share={share}",
            spec.memory_mib,
            escape_option(&path)
        ),
        "-chardev".into(),
        format!("socket,id=control,fd={CONTROL_FD}"),
        "-mon".into(),
        "chardev=control,mode=control".into(),
    ];
    if incoming {
        args.extend(["-incoming".into(), "defer".into()]);
    }
    args
}

/// One storage device's arguments; `index` keeps QEMU's ids unique.
fn storage_args((index, device): (usize, &StorageDevice)) -> Vec<String> {
    let readonly = |ro: bool| if ro { "on" } else { "off" };
    match device {
        // mapped-xattr: the guest's owners, modes, device nodes and symlinks
        // are attributes of plain host files, never real ones (a guest cannot
        // leave a setuid binary or a device node on the host); the host file
        // modes are QEMU's defaults (0600 files, 0700 directories).
        StorageDevice::Share {
            tag,
            path,
            readonly: ro,
        } => vec![
            "-fsdev".into(),
            format!(
                "local,id=share{index},path={},security_model=mapped-xattr,readonly={}",
                escape_option(&path.display().to_string()),
                readonly(*ro)
            ),
            "-device".into(),
            format!("virtio-9p-device,fsdev=share{index},mount_tag={tag}"),
        ],
        // QEMU locks the image (shared for readers, exclusive for a writer):
        // a second VM writing the same disk fails to start instead of
        // corrupting it, whatever the engine's own bookkeeping says.
        StorageDevice::Disk {
            serial,
            path,
            readonly: ro,
        } => vec![
            "-drive".into(),
            format!(
                "file={},if=none,id=disk{index},format=raw,readonly={},cache=writeback,discard=unmap",
                escape_option(&path.display().to_string()),
                readonly(*ro)
            ),
            "-device".into(),
            format!("virtio-blk-device,drive=disk{index},serial={serial}"),
        ],
    }
}

/// The guest's only network device is a stream on [`NET_FD`] to the runtime's
/// stack, which enforces the network policy; no other backend is offered.
fn net_args(net: Option<&NetDevice>) -> Vec<String> {
    let Some(NetDevice::Stream { mac }) = net else {
        return vec![];
    };
    vec![
        "-netdev".into(),
        format!("stream,id=net0,addr.type=fd,addr.str={NET_FD}"),
        "-device".into(),
        format!("virtio-net-device,netdev=net0,mac={mac}"),
    ]
}

fn root_args(root: &RootDevice) -> Vec<String> {
    match root {
        // security_model=none: the guest sees the files' real owners and modes;
        // readonly: the image is never written, writes go to the guest's overlay.
        RootDevice::Share(dir) => vec![
            "-fsdev".into(),
            format!(
                "local,id=root,path={},security_model=none,readonly=on",
                escape_option(&dir.display().to_string())
            ),
            "-device".into(),
            format!("virtio-9p-device,fsdev=root,mount_tag={ROOT_SHARE_TAG}"),
        ],
        RootDevice::Disk(file) => vec![
            "-drive".into(),
            format!(
                "file={},if=none,id=root,format=raw,readonly=on",
                escape_option(&file.display().to_string())
            ),
            "-device".into(),
            format!("virtio-blk-device,drive=root,serial={ROOT_SHARE_TAG}"),
        ],
    }
}

fn transfer_args(spec: &VmSpec) -> Vec<String> {
    let Some(dir) = &spec.transfer_share else {
        return vec![];
    };
    vec![
        "-fsdev".into(),
        format!(
            "local,id=transfer,path={},security_model=none,readonly=on",
            escape_option(&dir.display().to_string())
        ),
        "-device".into(),
        format!("virtio-9p-device,fsdev=transfer,mount_tag={TRANSFER_SHARE_TAG}"),
    ]
}

/// QEMU option values separate keys with commas; a literal comma is doubled.
fn escape_option(value: &str) -> String {
    value.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccelChoice, BackendChoice};

    fn spec() -> VmSpec {
        VmSpec {
            backend: BackendChoice::Qemu,
            kernel: "/k/vmlinux".into(),
            initramfs: "/k/initramfs".into(),
            cpus: 2,
            memory_mib: 512,
            root: RootDevice::Share("/images/a,b".into()),
            transfer_share: Some("/sandboxes/x/transfer".into()),
            accel: AccelChoice::Tcg,
            kernel_args: vec!["msb.extra=1".into()],
            net: Some(NetDevice::Stream {
                mac: "02:00:00:00:00:02".into(),
            }),
            storage: vec![
                StorageDevice::Share {
                    tag: "msbvol0".into(),
                    path: "/v/a,b".into(),
                    readonly: true,
                },
                StorageDevice::Disk {
                    serial: "msbvol1".into(),
                    path: "/v/disk.img".into(),
                    readonly: false,
                },
            ],
        }
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn wires_links_to_inherited_fds_and_sizes_the_machine() {
        let args = qemu_args(&spec(), Accel::Tcg, &Memory::Anonymous);
        assert_eq!(value_after(&args, "-accel"), ["tcg"]);
        assert_eq!(value_after(&args, "-smp"), ["2"]);
        assert_eq!(value_after(&args, "-m"), ["512M"]);
        let chardevs = value_after(&args, "-chardev");
        assert!(chardevs.contains(&"socket,id=agent,fd=3"));
        assert!(chardevs.contains(&"socket,id=console,fd=4"));
        let cmdline = value_after(&args, "-append")[0];
        assert!(cmdline.starts_with("console=ttyS0 reboot=t"));
        assert!(cmdline.ends_with(" msb.extra=1"));
        assert!(args.contains(&"-no-reboot".to_string()));
    }

    #[test]
    fn shares_the_root_read_only_with_commas_escaped() {
        let args = qemu_args(&spec(), Accel::Tcg, &Memory::Anonymous);
        let fsdev = value_after(&args, "-fsdev")[0];
        assert!(fsdev.contains("path=/images/a,,b,"));
        assert!(fsdev.contains("readonly=on"));
        let transfer = value_after(&args, "-fsdev")[1];
        assert!(transfer.contains("path=/sandboxes/x/transfer,"));
        assert!(transfer.contains("readonly=on"));
        assert!(value_after(&args, "-device")
            .contains(&"virtio-9p-device,fsdev=transfer,mount_tag=msbxfer"));
    }

    #[test]
    fn a_disk_root_is_a_read_only_block_device() {
        let disk = VmSpec {
            root: RootDevice::Disk("/images/root.ext4".into()),
            ..spec()
        };
        let args = qemu_args(&disk, Accel::Tcg, &Memory::Anonymous);
        assert_eq!(
            value_after(&args, "-drive")[0],
            "file=/images/root.ext4,if=none,id=root,format=raw,readonly=on"
        );
        assert!(
            value_after(&args, "-device").contains(&"virtio-blk-device,drive=root,serial=msbroot")
        );
    }

    #[test]
    fn the_network_is_a_stream_on_an_inherited_fd() {
        let args = qemu_args(&spec(), Accel::Tcg, &Memory::Anonymous);
        assert_eq!(
            value_after(&args, "-netdev"),
            ["stream,id=net0,addr.type=fd,addr.str=5"]
        );
        assert!(value_after(&args, "-device")
            .contains(&"virtio-net-device,netdev=net0,mac=02:00:00:00:00:02"));
        let offline = VmSpec {
            net: None,
            ..spec()
        };
        assert!(value_after(
            &qemu_args(&offline, Accel::Tcg, &Memory::Anonymous),
            "-netdev"
        )
        .is_empty());
    }

    #[test]
    fn storage_keeps_guest_metadata_off_host_files_and_host_chosen_modes() {
        let args = qemu_args(&spec(), Accel::Tcg, &Memory::Anonymous);
        let share = value_after(&args, "-fsdev")[2];
        assert_eq!(
            share,
            "local,id=share0,path=/v/a,,b,security_model=mapped-xattr,readonly=on"
        );
        assert!(value_after(&args, "-device")
            .contains(&"virtio-9p-device,fsdev=share0,mount_tag=msbvol0"));
        let drive = value_after(&args, "-drive")[0];
        assert!(drive.starts_with("file=/v/disk.img,if=none,id=disk1,format=raw,readonly=off,"));
        assert!(
            value_after(&args, "-device").contains(&"virtio-blk-device,drive=disk1,serial=msbvol1")
        );
    }

    #[test]
    fn a_restored_vm_maps_its_memory_file_privately_and_waits_for_its_state() {
        let args = qemu_args(&spec(), Accel::Tcg, &Memory::Restored);
        assert_eq!(
            value_after(&args, "-M"),
            ["microvm,acpi=off,x-option-roms=off,memory-backend=msbram"]
        );
        assert_eq!(
            value_after(&args, "-object"),
            ["memory-backend-file,id=msbram,size=512M,mem-path=/proc/self/fd/7,share=off"]
        );
        assert_eq!(value_after(&args, "-incoming"), ["defer"]);
        assert_eq!(value_after(&args, "-mon"), ["chardev=control,mode=control"]);
        let template = qemu_args(
            &spec(),
            Accel::Tcg,
            &Memory::SharedFile(Path::new("/t/ram")),
        );
        assert_eq!(
            value_after(&template, "-object"),
            ["memory-backend-file,id=msbram,size=512M,mem-path=/t/ram,share=on"]
        );
        assert!(value_after(&template, "-incoming").is_empty());
        assert!(value_after(
            &qemu_args(&spec(), Accel::Tcg, &Memory::Anonymous),
            "-object"
        )
        .is_empty());
    }

    #[test]
    fn one_template_serves_every_share_path_but_no_block_device() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        let initramfs = dir.path().join("initramfs");
        std::fs::write(&kernel, "k").unwrap();
        std::fs::write(&initramfs, "i").unwrap();
        let qemu = Qemu::new(kernel.clone());
        let shares_only = VmSpec {
            kernel,
            initramfs,
            storage: vec![StorageDevice::Share {
                tag: "msbvol0".into(),
                path: "/v/a".into(),
                readonly: true,
            }],
            ..spec()
        };
        let identity = qemu.template_identity(&shares_only).unwrap();
        let elsewhere = VmSpec {
            root: RootDevice::Share("/images/other".into()),
            transfer_share: Some("/sandboxes/y/transfer".into()),
            storage: vec![StorageDevice::Share {
                tag: "msbvol0".into(),
                path: "/v/b".into(),
                readonly: false,
            }],
            ..shares_only.clone()
        };
        assert_eq!(qemu.template_identity(&elsewhere).unwrap(), identity);
        for different in [
            VmSpec {
                memory_mib: 256,
                ..shares_only.clone()
            },
            VmSpec {
                cpus: 1,
                ..shares_only.clone()
            },
            VmSpec {
                storage: vec![],
                ..shares_only.clone()
            },
            VmSpec {
                kernel_args: vec![],
                ..shares_only.clone()
            },
        ] {
            assert_ne!(qemu.template_identity(&different).unwrap(), identity);
        }
        // A changed kernel file is a new template.
        std::fs::write(&shares_only.kernel, "k2").unwrap();
        assert_ne!(qemu.template_identity(&shares_only).unwrap(), identity);
        assert!(qemu.template_identity(&spec()).is_none(), "a disk volume");
        let disk_root = VmSpec {
            root: RootDevice::Disk("/images/root.ext4".into()),
            storage: vec![],
            ..shares_only
        };
        assert!(qemu.template_identity(&disk_root).is_none());
    }

    #[test]
    fn kvm_uses_the_host_cpu_model() {
        let args = qemu_args(&spec(), Accel::Kvm, &Memory::Anonymous);
        assert_eq!(value_after(&args, "-accel"), ["kvm"]);
        assert_eq!(value_after(&args, "-cpu"), ["host"]);
    }
}
