//! Assembles the sandbox's root: the image read-only underneath, a writable
//! upper on top (overlayfs: a tmpfs, or the ext4 disk of a persistent root),
//! then moves it over `/` and enters it, the way switch_root does, and mounts
//! the sandbox's volumes inside it. The image share is never written.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use msb_protocol::{GuestMount, MountSource, RootSpec, UpperSpec};
use nix::mount::{mount, MsFlags};

const LOWER: &str = "/msb/lower";
const WRITABLE: &str = "/msb/rw";
const NEW_ROOT: &str = "/msb/root";

/// 9p options: the image is immutable while the sandbox runs, so the guest may
/// cache it aggressively; a large msize cuts round trips under emulation.
const NINEP_OPTIONS: &str = "trans=virtio,version=9p2000.L,cache=loose,msize=524288";

/// Where the transfer share is mounted, outside the sandbox root: after the
/// switch into the root only the agent's descriptor reaches it.
const TRANSFER: &str = "/msb/transfer";

/// Mounts the host's transfer share and returns a descriptor of its directory.
/// Call before [`assemble`], which leaves this root behind.
pub fn mount_transfer(tag: &str) -> io::Result<OwnedFd> {
    mkdir(TRANSFER)?;
    // cache=none: every transfer file is new, and nothing of it should linger
    // in guest memory after the copy.
    mount_fs(
        tag,
        TRANSFER,
        "9p",
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("trans=virtio,version=9p2000.L,cache=none,msize=524288"),
    )?;
    nix::fcntl::open(
        TRANSFER,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// 9p options of writable or shared volumes: without a page cache, what
/// another sandbox or the host writes to the same directory is seen at once;
/// mmap keeps `mmap` of shared files working (databases, compilers).
const SHARE_OPTIONS: &str = "trans=virtio,version=9p2000.L,cache=mmap,msize=524288";

pub fn assemble(spec: &RootSpec, upper: &UpperSpec, mounts: &[GuestMount]) -> io::Result<()> {
    match spec {
        RootSpec::Virtio9p { tag } => {
            mkdir(LOWER)?;
            mount_fs(tag, LOWER, "9p", MsFlags::MS_RDONLY, Some(NINEP_OPTIONS))?;
        }
        RootSpec::Block { serial, fstype } => {
            mkdir(LOWER)?;
            mount_fs(
                &block_device(serial)?,
                LOWER,
                fstype,
                MsFlags::MS_RDONLY,
                None,
            )?;
        }
    }
    mkdir(WRITABLE)?;
    match upper {
        UpperSpec::Memory => mount_fs(
            "tmpfs",
            WRITABLE,
            "tmpfs",
            MsFlags::empty(),
            Some("mode=0755"),
        )?,
        // The upper and work directories of earlier runs are on it already;
        // overlayfs clears a stale work directory itself.
        UpperSpec::Disk { serial } => mount_fs(
            &block_device(serial)?,
            WRITABLE,
            "ext4",
            MsFlags::MS_NOATIME,
            None,
        )?,
    }
    mkdir(format!("{WRITABLE}/upper"))?;
    mkdir(format!("{WRITABLE}/work"))?;
    mkdir(NEW_ROOT)?;
    mount_fs(
        "overlay",
        NEW_ROOT,
        "overlay",
        MsFlags::empty(),
        Some(&format!(
            "lowerdir={LOWER},upperdir={WRITABLE}/upper,workdir={WRITABLE}/work"
        )),
    )?;
    mount_kernel_filesystems(Path::new(NEW_ROOT))?;
    enter(NEW_ROOT)?;
    // After the switch, so that each path resolves inside the sandbox's root
    // as its processes will see it (an image's absolute symlink included).
    for volume in mounts {
        mount_volume(volume)?;
    }
    Ok(())
}

fn mount_volume(volume: &GuestMount) -> io::Result<()> {
    mkdir(&volume.path)?;
    let mut flags = MsFlags::MS_NODEV;
    if volume.readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    match &volume.source {
        MountSource::Share { tag } => mount_fs(tag, &volume.path, "9p", flags, Some(SHARE_OPTIONS)),
        // norecovery: a read-only device cannot take a journal replay; the
        // host attached it read-only, so the guest could not write it anyway.
        MountSource::Disk { serial } => mount_fs(
            &block_device(serial)?,
            &volume.path,
            "ext4",
            flags | MsFlags::MS_NOATIME,
            volume.readonly.then_some("norecovery"),
        ),
        MountSource::Tmpfs { size_mib } => mount_fs(
            "tmpfs",
            &volume.path,
            "tmpfs",
            flags | MsFlags::MS_NOSUID,
            Some(&format!("size={size_mib}m,mode=0755")),
        ),
    }
}

/// The `/dev` node of the virtio disk whose serial the host set.
fn block_device(serial: &str) -> io::Result<String> {
    for entry in fs::read_dir("/sys/block")? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let found = fs::read_to_string(format!("/sys/block/{name}/serial"))
            .is_ok_and(|s| s.trim_end_matches(['\n', '\0']) == serial);
        if found {
            return Ok(format!("/dev/{name}"));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no disk with serial {serial}"),
    ))
}

fn mount_kernel_filesystems(root: &Path) -> io::Result<()> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mounts: [(&str, &str, &str, MsFlags, Option<&str>); 7] = [
        (
            "proc",
            "proc",
            "proc",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "sysfs",
            "sys",
            "sysfs",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "cgroup2",
            "sys/fs/cgroup",
            "cgroup2",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            None,
        ),
        ("devtmpfs", "dev", "devtmpfs", MsFlags::MS_NOSUID, None),
        (
            "devpts",
            "dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        ("tmpfs", "dev/shm", "tmpfs", nosuid_nodev, Some("mode=1777")),
        ("tmpfs", "run", "tmpfs", nosuid_nodev, Some("mode=0755")),
    ];
    for (source, target, fstype, flags, data) in mounts {
        let target = root.join(target);
        mkdir(&target)?;
        mount_fs(source, &target, fstype, flags, data)?;
    }
    // What udev would create: shells and tools expect these names.
    for (link, target) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        let link = root.join(link);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(target, link)?;
        }
    }
    Ok(())
}

/// Moves `new_root` over `/` and makes it this process's root; children inherit it.
fn enter(new_root: &str) -> io::Result<()> {
    std::env::set_current_dir(new_root)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|err| with_context(err, "move the new root over /"))?;
    nix::unistd::chroot(".").map_err(|err| with_context(err, "chroot into the new root"))?;
    std::env::set_current_dir("/")
}

fn mount_fs(
    source: &str,
    target: impl AsRef<Path>,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let target = target.as_ref();
    mount(Some(source), target, Some(fstype), flags, data).map_err(|err| {
        with_context(
            err,
            &format!("mount {fstype} {source} on {}", target.display()),
        )
    })
}

fn mkdir(path: impl AsRef<Path>) -> io::Result<()> {
    fs::create_dir_all(path)
}

fn with_context(err: nix::Error, what: &str) -> io::Error {
    io::Error::new(io::Error::from(err).kind(), format!("{what}: {err}"))
}
