//! Assembles the sandbox's root: the image read-only underneath, a writable
//! tmpfs upper on top (overlayfs), then moves it over `/` and enters it, the
//! way switch_root does. The image share is never written.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use msb_protocol::RootSpec;
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

pub fn assemble(spec: &RootSpec) -> io::Result<()> {
    match spec {
        RootSpec::Virtio9p { tag } => {
            mkdir(LOWER)?;
            mount_fs(tag, LOWER, "9p", MsFlags::MS_RDONLY, Some(NINEP_OPTIONS))?;
        }
        RootSpec::Block { device, fstype } => {
            mkdir(LOWER)?;
            mount_fs(device, LOWER, fstype, MsFlags::MS_RDONLY, None)?;
        }
    }
    mkdir(WRITABLE)?;
    mount_fs(
        "tmpfs",
        WRITABLE,
        "tmpfs",
        MsFlags::empty(),
        Some("mode=0755"),
    )?;
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
    enter(NEW_ROOT)
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
