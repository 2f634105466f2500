//! Becoming the agent: what guest root can do to PID 1. Every raw system call
//! of the crate lives here.
//!
//! 1. Freeze the real agent: `PTRACE_SEIZE` and `PTRACE_INTERRUPT` every
//!    thread of PID 1. Signals cannot do it (the kernel drops SIGSTOP sent to
//!    init), but a ptrace stop is not a signal. The agent stays frozen exactly
//!    as long as this process lives: when it dies the kernel detaches it and
//!    the agent resumes.
//! 2. Take its channel: find the descriptor of PID 1 whose link is the
//!    virtio port (`/proc/1/fd/N -> /dev/vport…`) and copy it with
//!    `pidfd_open(1)` + `pidfd_getfd`. Both ends now share one open file; the
//!    frozen agent no longer reads from it, so every host frame comes here.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// The agent's pid.
const INIT: i32 = 1;

/// The agent's descriptor number for the virtio port.
pub fn find_port_fd() -> io::Result<RawFd> {
    for entry in std::fs::read_dir(format!("/proc/{INIT}/fd"))? {
        let entry = entry?;
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        // The agent opened the port from the initramfs' /dev before it
        // switched root, so match the device name, not the full path.
        let is_port = link
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("vport"));
        if is_port {
            if let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                return Ok(fd);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no /dev/vport* descriptor in /proc/{INIT}/fd"),
    ))
}

/// A descriptor that refers to PID 1, for `pidfd_getfd`.
pub fn open_init() -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new
    // descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, INIT, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Stops every thread of PID 1 and returns how many were stopped.
pub fn freeze_init() -> io::Result<usize> {
    let mut frozen = BTreeSet::new();
    // A thread could be created between listing and stopping; list again
    // until a pass finds nothing new (stopped threads create none).
    loop {
        let mut new = Vec::new();
        for tid in init_threads()? {
            if frozen.insert(tid) {
                new.push(tid);
            }
        }
        if new.is_empty() {
            return Ok(frozen.len());
        }
        for tid in new {
            let pid = Pid::from_raw(tid);
            match ptrace::seize(pid, ptrace::Options::empty()) {
                Ok(()) => {}
                // The thread exited since the listing.
                Err(Errno::ESRCH) => continue,
                Err(err) => return Err(annotate(err, &format!("PTRACE_SEIZE of thread {tid}"))),
            }
            ptrace::interrupt(pid)
                .map_err(|e| annotate(e, &format!("PTRACE_INTERRUPT of thread {tid}")))?;
            // Returns once the thread is in its ptrace stop; __WALL because
            // the agent's threads are not children of this process.
            waitpid(pid, Some(WaitPidFlag::__WALL))
                .map_err(|e| annotate(e, &format!("waiting for thread {tid} to stop")))?;
        }
    }
}

/// Copies PID 1's descriptor `target` into this process.
pub fn steal_fd(init: &OwnedFd, target: RawFd) -> io::Result<File> {
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags by
    // value and returns a new descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, init.as_raw_fd(), target, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd as RawFd) };
    // The agent opened the port non-blocking; this process uses blocking I/O
    // on threads. The flag belongs to the shared open file, which only this
    // process uses now that the agent is frozen.
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| annotate(e, "F_GETFL"))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| annotate(e, "F_SETFL"))?;
    Ok(file)
}

fn init_threads() -> io::Result<Vec<i32>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{INIT}/task"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

fn annotate(err: Errno, what: &str) -> io::Error {
    io::Error::new(io::Error::from(err).kind(), format!("{what}: {err}"))
}
