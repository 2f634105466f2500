//! The host side of `copyToHost`: the only place where names and modes that
//! came from the guest turn into host files.
//!
//! Rules, because the guest is hostile (see the threat model in docs/design.md):
//! - Every name is a single path component ([`msb_protocol::is_entry_name`]),
//!   checked here again although the runtime's guard already refused others.
//! - Everything is created relative to an open directory descriptor with
//!   `O_NOFOLLOW`: a symlink already in the destination is never followed, so
//!   nothing is created outside the destination the caller named.
//! - Modes are masked to permission bits without setuid, setgid or sticky and
//!   with the process umask applied; a directory that existed before the call
//!   keeps its mode. New directories are created owner-writable and get their
//!   final mode once their content is complete.
//! - A file is written to a temporary name (`.msb-copy-<pid>-<n>.tmp`) and
//!   renamed into place when complete; the temporary is removed on error and
//!   on cancellation, and stale ones of dead processes are removed when a later
//!   copy enters their directory.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{fchmod, mkdirat, openat, renameat, unlinkat, AtFlags, Dir, Mode, OFlags};
use rustix::io::Errno;

const DIR_OPEN: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

const TEMP_PREFIX: &str = ".msb-copy-";
const TEMP_SUFFIX: &str = ".tmp";

/// A directory of the destination tree, open by descriptor.
pub struct HostDir {
    fd: OwnedFd,
    /// Mode to apply once its content is complete; `None` for a directory
    /// that existed before the copy.
    final_mode: Option<u32>,
}

impl HostDir {
    /// Opens (or creates) the destination the caller named. The caller's own
    /// path is trusted and resolved normally; only what is below it is not.
    pub fn open_destination(path: &Path, guest_mode: u32) -> io::Result<HostDir> {
        match mkdirat(rustix::fs::CWD, path, Mode::from_raw_mode(0o700)) {
            Ok(()) => Ok(HostDir {
                fd: openat(rustix::fs::CWD, path, DIR_OPEN, Mode::empty())?,
                final_mode: Some(sanitize_mode(guest_mode)),
            }),
            Err(Errno::EXIST) => {
                let open = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let dir = HostDir {
                    fd: openat(rustix::fs::CWD, path, open, Mode::empty())?,
                    final_mode: None,
                };
                dir.remove_stale_temporaries();
                Ok(dir)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Opens (or creates) the subdirectory `name`, which must be a valid entry name.
    pub fn child_dir(&self, name: &str, guest_mode: u32) -> io::Result<HostDir> {
        match mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => Ok(HostDir {
                fd: openat(&self.fd, name, DIR_OPEN, Mode::empty())?,
                final_mode: Some(sanitize_mode(guest_mode)),
            }),
            Err(Errno::EXIST) => {
                // An existing directory is entered, never a symlink (O_NOFOLLOW).
                let dir = HostDir {
                    fd: openat(&self.fd, name, DIR_OPEN, Mode::empty())?,
                    final_mode: None,
                };
                dir.remove_stale_temporaries();
                Ok(dir)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Starts a file that will be named `name` when complete.
    pub fn new_file(&self, name: &str, guest_mode: u32) -> io::Result<PendingFile<'_>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let temp = format!(
            "{TEMP_PREFIX}{}-{}{TEMP_SUFFIX}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // The kernel applies the umask to the creation mode.
        let fd = openat(
            &self.fd,
            temp.as_str(),
            flags,
            Mode::from_raw_mode(guest_mode & 0o777),
        )?;
        Ok(PendingFile {
            dir: self,
            temp,
            name: name.to_string(),
            file: Some(std::fs::File::from(fd)),
            done: false,
        })
    }

    /// Gives a directory this copy created its final mode.
    pub fn finish(self) -> io::Result<()> {
        if let Some(mode) = self.final_mode {
            fchmod(&self.fd, Mode::from_raw_mode(mode))?;
        }
        Ok(())
    }

    /// Removes temporaries left by copies whose process no longer exists.
    fn remove_stale_temporaries(&self) {
        let Ok(dir) = Dir::read_from(&self.fd) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_bytes();
            let Some(pid) = temp_owner(name) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = unlinkat(&self.fd, OsStr::from_bytes(name), AtFlags::empty());
            }
        }
    }
}

/// The pid in a temporary's name, if `name` is one of ours.
fn temp_owner(name: &[u8]) -> Option<u32> {
    let rest = name.strip_prefix(TEMP_PREFIX.as_bytes())?;
    let rest = rest.strip_suffix(TEMP_SUFFIX.as_bytes())?;
    let pid = rest.split(|b| *b == b'-').next()?;
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// A file being written under a temporary name; removed unless [`PendingFile::persist`]ed.
pub struct PendingFile<'a> {
    dir: &'a HostDir,
    temp: String,
    name: String,
    file: Option<std::fs::File>,
    done: bool,
}

impl PendingFile<'_> {
    /// The open file, for writing the content.
    pub fn file(&mut self) -> &mut std::fs::File {
        self.file.as_mut().expect("open until persisted")
    }

    /// Renames the complete file to its name (replacing a file of that name).
    pub fn persist(mut self) -> io::Result<()> {
        drop(self.file.take());
        renameat(
            &self.dir.fd,
            self.temp.as_str(),
            &self.dir.fd,
            self.name.as_str(),
        )?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PendingFile<'_> {
    fn drop(&mut self) {
        if !self.done {
            drop(self.file.take());
            let _ = unlinkat(self.dir.fd.as_fd(), self.temp.as_str(), AtFlags::empty());
        }
    }
}

/// Permission bits only (no setuid, setgid, sticky), with the umask applied.
pub fn sanitize_mode(guest_mode: u32) -> u32 {
    guest_mode & 0o777 & !process_umask()
}

/// The process umask, read without changing it (`umask(2)` can only set it,
/// which would race with other threads creating files).
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Umask:"))
                .and_then(|value| u32::from_str_radix(value.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn modes_lose_special_bits_and_get_the_umask() {
        let umask = process_umask();
        assert_eq!(sanitize_mode(0o7777), 0o777 & !umask);
        assert_eq!(sanitize_mode(0o4755), 0o755 & !umask);
    }

    #[test]
    fn an_existing_destination_keeps_its_mode_and_new_dirs_get_sanitized_modes() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o700)).unwrap();

        let top = HostDir::open_destination(&dest, 0o7777).unwrap();
        let sub = top.child_dir("sub", 0o7777).unwrap();
        let mut file = sub.new_file("f", 0o6777).unwrap();
        file.file().write_all(b"x").unwrap();
        file.persist().unwrap();
        sub.finish().unwrap();
        top.finish().unwrap();

        assert_eq!(mode(&dest), 0o700);
        assert_eq!(mode(&dest.join("sub")), sanitize_mode(0o7777));
        assert_eq!(mode(&dest.join("sub/f")), sanitize_mode(0o777));
        assert_eq!(std::fs::read(dest.join("sub/f")).unwrap(), b"x");
    }

    #[test]
    fn a_symlink_in_the_destination_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let dest = root.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();

        let top = HostDir::open_destination(&dest, 0o755).unwrap();
        assert!(top.child_dir("link", 0o755).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn an_unfinished_file_leaves_no_temporary_and_stale_ones_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        let top = HostDir::open_destination(&dest, 0o755).unwrap();
        let mut file = top.new_file("f", 0o644).unwrap();
        file.file().write_all(b"partial").unwrap();
        drop(file);
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);

        // A temporary of a process that no longer exists (pid 0 never does).
        let stale = dest.join(format!("{TEMP_PREFIX}0-1{TEMP_SUFFIX}"));
        std::fs::write(&stale, b"old").unwrap();
        let ours = dest.join(format!(
            "{TEMP_PREFIX}{}-1{TEMP_SUFFIX}",
            std::process::id()
        ));
        std::fs::write(&ours, b"in progress").unwrap();
        let _again = HostDir::open_destination(&dest, 0o755).unwrap();
        assert!(!stale.exists());
        assert!(ours.exists(), "a live process's temporary stays");
    }
}
