//! Processes started for the host: spawn (user, TTY, cgroup, session), stdin,
//! output under the host's credit window (see `pump` for the exit rule),
//! signals, tree kill and the exit report.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use msb_protocol::{
    Envelope, ExecRequest, ExitStatus, Failure, FailureKind, GuestMessage, StdinMode, TtySize,
};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

use crate::cgroup::ExecCgroup;
use crate::input::{self, InputEvent, InputSender};
use crate::outbox::Outbox;
use crate::pty;
use crate::pump::{Pump, Window};
use crate::reaper::Reaper;
use crate::users::{self, Account, LookupError};

/// Settings from `Init` that every process starts with.
#[derive(Clone, Default)]
pub struct Defaults {
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
}

/// The agent's handle on one running process.
pub struct Exec {
    pid: u32,
    window: Arc<Window>,
    stdin: Option<InputSender>,
    pty_master: Option<Arc<OwnedFd>>,
    cgroup: Option<Arc<ExecCgroup>>,
}

impl Exec {
    pub fn add_credit(&self, bytes: u32) {
        self.window.add_credit(bytes);
    }

    pub fn detach(&self) {
        self.window.detach();
    }

    pub fn input(&self, event: InputEvent) {
        if let Some(stdin) = &self.stdin {
            let _ = stdin.send(event);
        }
    }

    /// Signals the process's group: every exec starts a session of its own, so
    /// this reaches its children unless they made groups of their own.
    pub fn signal(&self, signal: i32) {
        if let Ok(signal) = Signal::try_from(signal) {
            let _ = killpg(Pid::from_raw(self.pid as i32), signal);
        }
    }

    /// Kills the process and everything it started, through its cgroup.
    pub fn kill(&self) {
        let killed = self.cgroup.as_ref().is_some_and(|cg| cg.kill().is_ok());
        if !killed {
            self.signal(libc::SIGKILL);
        }
    }

    pub fn resize(&self, size: TtySize) {
        if let Some(master) = &self.pty_master {
            let _ = pty::resize(master, size);
        }
    }
}

/// Everything the child does between fork and exec, prepared beforehand so
/// that the child only makes system calls (no allocation after fork).
struct ChildSetup {
    tty: bool,
    cgroup_procs: Option<i32>,
    account: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
}

impl ChildSetup {
    fn apply(&self) -> io::Result<()> {
        let check = |ret: libc::c_int| {
            if ret < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: each call is an async-signal-safe system call on values prepared
        // before the fork; nothing here allocates or takes locks.
        unsafe {
            check(libc::setsid())?;
            // The agent runs at a raised priority (main.rs); its processes do not.
            check(libc::setpriority(libc::PRIO_PROCESS, 0, 0))?;
            if self.tty {
                // Stdin is the pty slave: make it the new session's terminal.
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            if let Some(fd) = self.cgroup_procs {
                // Writing "0" moves the writing process into the cgroup.
                check(libc::write(fd, b"0".as_ptr().cast(), 1) as libc::c_int)?;
            }
            if let Some((uid, gid, groups)) = &self.account {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(*gid))?;
                check(libc::setuid(*uid))?;
            }
        }
        Ok(())
    }
}

/// Starts the process and the task that reports on it. The task calls `on_exit`
/// before it sends `Exited`, so the request's id is free again by then.
pub fn spawn(
    id: u64,
    request: ExecRequest,
    defaults: &Defaults,
    reaper: &Reaper,
    outbox: Outbox,
    on_exit: impl FnOnce() + Send + 'static,
) -> Result<Exec, Failure> {
    let cwd = request
        .cwd
        .clone()
        .or_else(|| defaults.workdir.clone())
        .unwrap_or_else(|| "/".into());
    if !Path::new(&cwd).is_dir() {
        return Err(Failure::new(
            FailureKind::InvalidRequest,
            format!("working directory {cwd} does not exist"),
        ));
    }
    let account = match &request.user {
        None => None,
        Some(user) => Some(users::resolve(user).map_err(|err| match err {
            LookupError::Unknown(message) => Failure::new(FailureKind::UnknownUser, message),
            LookupError::Io(err) => io_failure("read the guest's user database", err),
        })?),
    };
    let cgroup = ExecCgroup::create(id).map(Arc::new);
    let pty = request
        .tty
        .map(pty::open)
        .transpose()
        .map_err(|e| io_failure("open a pseudo-terminal", e))?;

    let mut command = Command::new(&request.program);
    command
        .args(&request.args)
        .env_clear()
        .envs(environment(defaults, account.as_ref(), &request.env))
        .current_dir(&cwd);
    match &pty {
        Some(pty) => {
            let slave = |what| {
                pty.slave
                    .try_clone()
                    .map(Stdio::from)
                    .map_err(|e| io_failure(what, e))
            };
            command
                .stdin(slave("pty stdin")?)
                .stdout(slave("pty stdout")?)
                .stderr(slave("pty stderr")?);
        }
        None => {
            command
                .stdin(match request.stdin {
                    StdinMode::Null => Stdio::null(),
                    StdinMode::Pipe => Stdio::piped(),
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    let setup = ChildSetup {
        tty: pty.is_some(),
        cgroup_procs: cgroup.as_ref().map(|cg| cg.procs_fd()),
        account: account.as_ref().map(|a| (a.uid, a.gid, a.groups.clone())),
    };
    // SAFETY: `apply` only makes async-signal-safe system calls (see ChildSetup).
    unsafe {
        command.pre_exec(move || setup.apply());
    }

    let started_at = Instant::now();
    let mut child = command.spawn().map_err(|err| {
        let kind = if err.kind() == io::ErrorKind::NotFound {
            FailureKind::ProgramNotFound
        } else {
            FailureKind::Io
        };
        Failure {
            kind,
            errno: err.raw_os_error(),
            message: format!("cannot run {}: {err}", request.program),
        }
    })?;
    // The parent's copies of the slave end live in `command`.
    drop(command);
    let pid = child.id();
    let exit = reaper.watch(pid);

    let window = Window::new(request.output_window);
    let (stdout, stderr, stdin_sink, pty_master) = match pty {
        Some(pty) => {
            drop(pty.slave);
            let master = Arc::new(pty.master);
            let reader = dup_fd(&master).and_then(pipe::Receiver::from_owned_fd_unchecked);
            let writer = dup_fd(&master).and_then(pipe::Sender::from_owned_fd_unchecked);
            let reader = reader.map_err(|e| io_failure("pty master", e))?;
            let writer = writer.map_err(|e| io_failure("pty master", e))?;
            let stdin = (request.stdin == StdinMode::Pipe).then_some(writer);
            (Some(reader), None, stdin, Some(master))
        }
        None => {
            let stdin = child
                .stdin
                .take()
                .map(|fd| pipe::Sender::from_owned_fd(OwnedFd::from(fd)))
                .transpose()
                .map_err(|e| io_failure("stdin pipe", e))?;
            let stdout = child
                .stdout
                .take()
                .map(|fd| output_pipe(OwnedFd::from(fd)))
                .transpose()
                .map_err(|e| io_failure("stdout pipe", e))?;
            let stderr = child
                .stderr
                .take()
                .map(|fd| output_pipe(OwnedFd::from(fd)))
                .transpose()
                .map_err(|e| io_failure("stderr pipe", e))?;
            (stdout, stderr, stdin, None)
        }
    };
    let stdin = stdin_sink.map(|mut sink| {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let outbox = outbox.clone();
        tokio::spawn(async move {
            if input::feed(id, &mut sink, &mut rx, &outbox).await.is_err() {
                input::discard(id, &mut rx, &outbox).await;
            }
        });
        tx
    });

    let task_window = window.clone();
    let task_cgroup = cgroup.clone();
    tokio::spawn(async move {
        let _ = outbox
            .send(Envelope::new(id, GuestMessage::Started { pid }))
            .await;
        let (exited_tx, exited_rx) = watch::channel(false);
        let pump = |source: Option<pipe::Receiver>, message: fn(Vec<u8>) -> GuestMessage| {
            let pump = Pump {
                id,
                message,
                window: task_window.clone(),
                outbox: outbox.clone(),
                exited: exited_rx.clone(),
            };
            tokio::spawn(async move {
                if let Some(source) = source {
                    pump.run(source).await;
                }
            })
        };
        let out_pump = pump(stdout, GuestMessage::Stdout);
        let err_pump = pump(stderr, GuestMessage::Stderr);
        let mut status = exit.await.unwrap_or(ExitStatus {
            code: None,
            signal: None,
            guest_micros: 0,
        });
        status.guest_micros = started_at.elapsed().as_micros() as u64;
        let _ = exited_tx.send(true);
        let _ = out_pump.await;
        let _ = err_pump.await;
        drop(task_cgroup);
        on_exit();
        let _ = outbox
            .send(Envelope::new(id, GuestMessage::Exited(status)))
            .await;
    });

    Ok(Exec {
        pid,
        window,
        stdin,
        pty_master,
        cgroup,
    })
}

/// Sandbox env, then the user's identity (unless the request sets it), then the request's.
fn environment(
    defaults: &Defaults,
    account: Option<&Account>,
    request_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = defaults.env.clone();
    let mut set = |key: &str, value: String| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => env.push((key.to_string(), value)),
    };
    if let Some(account) = account {
        set("HOME", account.home.clone());
        if let Some(name) = &account.name {
            set("USER", name.clone());
            set("LOGNAME", name.clone());
        }
    }
    for (key, value) in request_env {
        set(key, value.clone());
    }
    env
}

/// Capacity of a process's output pipes: a bulk writer then fills whole
/// messages between context switches instead of 64 KiB (the default) at a time.
const OUTPUT_PIPE_SIZE: i32 = 1 << 20;

fn output_pipe(fd: OwnedFd) -> io::Result<pipe::Receiver> {
    // Best effort: the default size works too, only slower.
    let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_SIZE));
    pipe::Receiver::from_owned_fd(fd)
}

fn dup_fd(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let dup = fd.try_clone()?;
    // Both ends are polled by tokio: the descriptor must not block.
    let flags = nix::fcntl::fcntl(&dup, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&dup, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(dup)
}

/// Reports a failed system call with the guest's errno.
pub fn io_failure(what: &str, err: io::Error) -> Failure {
    // A limit the host set (e.g. `List`'s entry cap) is reported by the agent
    // as `FileTooLarge` without an errno.
    let limit = err.kind() == io::ErrorKind::FileTooLarge && err.raw_os_error().is_none();
    Failure {
        kind: if limit {
            FailureKind::LimitExceeded
        } else {
            FailureKind::Io
        },
        errno: err.raw_os_error(),
        message: format!("{what}: {err}"),
    }
}
