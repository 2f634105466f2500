//! Descriptor-relative filesystem operations that never follow a symlink.
//!
//! Shared by layer unpacking and view building. Every operation starts from a directory
//! descriptor the caller already trusts (the layer or view root, or a directory reached from it
//! by this module) and names at most one component relative to it, or a multi-component path
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`. A
//! symlink met on the way is an error, never a detour: archive contents decide which symlinks
//! exist, so following one would let an archive choose where on the host we write.
//!
//! Final components are handled with `O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `O_EXCL` creation, or
//! calls that act on a link itself (`unlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{
    openat, openat2, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat,
};
use rustix::io::Errno;

/// Flags for opening a directory we walk through or modify.
const DIR_OPEN: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Resolution rules for multi-component lookups below a root.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Mode of directories created because an entry needed them and the archive never described
/// them (Docker and containerd use the same).
pub(crate) const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Why a directory below a root could not be opened.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// A component is a symlink.
    Symlink,
    /// A component exists and is neither a directory nor a symlink.
    NotDir,
    /// A component does not exist (and creation was not asked for).
    Missing,
    /// Anything else.
    Io(io::Error),
}

/// Opens a directory given by path; the final component must not be a symlink. This is for
/// paths the caller chose (the layer or view root), not for archive-controlled ones.
pub(crate) fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(openat(rustix::fs::CWD, path, DIR_OPEN, Mode::empty())?)
}

/// Opens the directory `name` inside `dir`, refusing a symlink.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(openat(dir, name, DIR_OPEN, Mode::empty())?)
}

/// Opens the directory at `path` (joined relative path, empty for `root` itself) below `root`
/// without following any symlink. With `create`, missing components are created with
/// [`IMPLICIT_DIR_MODE`] and the process's own uid/gid (root when unpacking for real).
pub(crate) fn open_dir(
    root: BorrowedFd<'_>,
    path: &[u8],
    create: bool,
) -> Result<OwnedFd, WalkError> {
    if path.is_empty() {
        return reopen(root).map_err(WalkError::Io);
    }
    // Fast path: one syscall for the whole path. Without O_NOFOLLOW so that a trailing symlink
    // is also refused by RESOLVE_NO_SYMLINKS (ELOOP) rather than reported as ENOTDIR.
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match openat2(root, path, flags, Mode::empty(), BENEATH) {
        Ok(fd) => return Ok(fd),
        Err(Errno::LOOP) | Err(Errno::XDEV) => return Err(WalkError::Symlink),
        // Missing or non-directory components (classified below), EAGAIN from a concurrent
        // rename, or a kernel before 5.6 without openat2: walk one component at a time.
        Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::AGAIN) | Err(Errno::NOSYS) => {}
        Err(e) => return Err(WalkError::Io(e.into())),
    }
    walk(root, path, create)
}

/// Component-by-component version of [`open_dir`]; also creates missing directories.
fn walk(root: BorrowedFd<'_>, path: &[u8], create: bool) -> Result<OwnedFd, WalkError> {
    let mut cur = reopen(root).map_err(WalkError::Io)?;
    for name in path.split(|&b| b == b'/') {
        let next = match openat(&cur, name, DIR_OPEN, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(IMPLICIT_DIR_MODE))
                    .map_err(|e| WalkError::Io(e.into()))?;
                let fd = openat(&cur, name, DIR_OPEN, Mode::empty())
                    .map_err(|e| WalkError::Io(e.into()))?;
                // mkdirat is subject to the umask; the mode must not depend on it.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(IMPLICIT_DIR_MODE))
                    .map_err(|e| WalkError::Io(e.into()))?;
                fd
            }
            Err(Errno::NOENT) => return Err(WalkError::Missing),
            // O_NOFOLLOW | O_DIRECTORY on a symlink reports ENOTDIR or ELOOP depending on the
            // kernel path taken; look at what is there to tell the cases apart.
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                return match lstat_at(cur.as_fd(), name) {
                    Ok(Some(st)) if file_type(&st) == FileType::Symlink => Err(WalkError::Symlink),
                    Ok(Some(_)) => Err(WalkError::NotDir),
                    Ok(None) => Err(WalkError::Missing),
                    Err(e) => Err(WalkError::Io(e)),
                };
            }
            Err(e) => return Err(WalkError::Io(e.into())),
        };
        cur = next;
    }
    Ok(cur)
}

/// A new descriptor for the directory `dir` (so callers can own what [`open_dir`] returns).
fn reopen(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(openat(dir, ".", DIR_OPEN, Mode::empty())?)
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Stat>> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The file type encoded in a `stat` mode.
pub(crate) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Names (without `.` and `..`) and types of the entries of `dir`. The type comes from
/// `d_type` when the filesystem reports it, from `lstat` otherwise.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, FileType)>> {
    let mut stream = Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(entry) = stream.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => match lstat_at(dir, name)? {
                Some(st) => file_type(&st),
                // Gone between readdir and lstat: nothing to report.
                None => continue,
            },
            kind => kind,
        };
        out.push((name.to_vec(), kind));
    }
    Ok(out)
}

/// What a removal took away.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Removed {
    /// Non-directories unlinked.
    pub(crate) files: u64,
    /// Directories removed (including the top one, if it was a directory).
    pub(crate) dirs: u64,
}

/// Removes `name` from `dir` whatever it is; a directory is removed with everything in it.
/// Symlinks are unlinked, never followed. Returns `None` when nothing was there.
pub(crate) fn remove_any(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Removed>> {
    debug_assert!(name != b"." && name != b".." && !name.contains(&b'/'));
    match lstat_at(dir, name)? {
        None => Ok(None),
        Some(st) if file_type(&st) == FileType::Directory => remove_tree(dir, name).map(Some),
        Some(_) => {
            unlinkat(dir, name, AtFlags::empty())?;
            Ok(Some(Removed { files: 1, dirs: 0 }))
        }
    }
}

/// Removes the directory `name` in `dir` and everything below it, descending through
/// descriptors opened with `O_NOFOLLOW` (a symlink inside is unlinked, not entered). Recursion
/// depth is the tree's depth, which the unpacker bounds.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Removed> {
    let child = open_child_dir(dir, name)?;
    let removed = clear_dir(child.as_fd())?;
    drop(child);
    unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(Removed {
        files: removed.files,
        dirs: removed.dirs + 1,
    })
}

/// Removes everything inside `dir`, keeping `dir` itself.
pub(crate) fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<Removed> {
    let mut removed = Removed::default();
    // Listed first, removed after: deleting while a getdents stream is open can skip entries.
    for (name, kind) in list_dir(dir)? {
        if kind == FileType::Directory {
            let r = remove_tree(dir, &name)?;
            removed.files += r.files;
            removed.dirs += r.dirs;
        } else {
            unlinkat(dir, &name, AtFlags::empty())?;
            removed.files += 1;
        }
    }
    Ok(removed)
}

/// Extended attributes an image may carry onto the host, by name.
///
/// - `user.*`: ordinary application data.
/// - `security.capability`: file capabilities (`ping`'s `cap_net_raw`), which images rely on;
///   like setuid bits they are harmless on the host because the cache is reachable by root only.
/// - `system.posix_acl_access` / `system.posix_acl_default`: POSIX ACLs, part of the file mode.
///
/// Everything else is refused: `trusted.*` is read by host kernel features such as overlayfs
/// (`trusted.overlay.*` would let a layer forge whiteouts or redirects for any host overlay
/// over the cache), `security.selinux` and other LSM labels belong to the host's policy, not to
/// an image.
pub(crate) fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// Whether a failed `setxattr` is one to report and move past rather than fail the layer: the
/// filesystem does not support the attribute or its namespace, or policy forbids it.
pub(crate) fn xattr_error_tolerable(e: Errno) -> bool {
    e == Errno::PERM || e == Errno::NOTSUP || e == Errno::ACCESS
}
