//! One cgroup (v2) per exec, so that "kill this process and everything it
//! started" reaches processes that left its process group or session
//! (`setsid`, daemons): `cgroup.kill` ends every member at once.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

/// Where the agent mounts the cgroup2 hierarchy inside the sandbox root.
pub const ROOT: &str = "/sys/fs/cgroup";

pub struct ExecCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened before the fork so that the child only has to
    /// write to it (async-signal-safe) to join.
    procs: File,
    /// `cgroup.kill`, opened up front: a kill must not depend on opening a
    /// file at the moment a fork bomb has exhausted the guest's memory.
    kill: File,
}

impl ExecCgroup {
    /// Creates the exec's cgroup; `None` when the guest has no cgroup2 mounted.
    pub fn create(id: u64) -> Option<ExecCgroup> {
        let dir = PathBuf::from(ROOT).join(format!("msb-exec-{id}"));
        if std::fs::create_dir(&dir).is_err() && !dir.is_dir() {
            return None;
        }
        let procs = OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .ok()?;
        let kill = OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.kill"))
            .ok()?;
        Some(ExecCgroup { dir, procs, kill })
    }

    /// The fd a child writes "0" to in order to join this cgroup.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    pub fn kill(&self) -> io::Result<()> {
        (&self.kill).write_all(b"1")
    }
}

impl Drop for ExecCgroup {
    fn drop(&mut self) {
        // Fails while background processes of the exec still live in it; the
        // directory then stays, holding them, which is harmless.
        let _ = std::fs::remove_dir(&self.dir);
    }
}
