//! Processes started for the host: spawn, stdin feeding, output pumping under
//! the host's credit window, signals and the exit report.
//!
//! Output rule: output is forwarded in order per stream. When the main process
//! exits, its pipes are drained until end-of-file, or until no byte has come for
//! [`DRAIN_IDLE`] (a grandchild may keep the pipe open forever); then `Exited` is
//! sent. Time spent waiting for credit does not count as idle.

use std::io;
use std::os::unix::io::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use msb_protocol::{
    Envelope, ExecRequest, ExitStatus, Failure, FailureKind, GuestMessage, StdinMode,
    MAX_DATA_CHUNK,
};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::reaper::Reaper;
use crate::server::Outbox;

/// How long to keep reading a dead process's pipes with nothing arriving.
const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// Settings from `Init` that every process starts with.
#[derive(Clone, Default)]
pub struct Defaults {
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
}

pub enum StdinEvent {
    Data(Vec<u8>),
    Close,
}

/// The agent's handle on one running process.
pub struct Exec {
    pid: u32,
    credit: Arc<Semaphore>,
    stdin: Option<mpsc::UnboundedSender<StdinEvent>>,
}

impl Exec {
    pub fn add_credit(&self, bytes: u32) {
        self.credit.add_permits(bytes as usize);
    }

    pub fn stdin(&self, event: StdinEvent) {
        if let Some(stdin) = &self.stdin {
            let _ = stdin.send(event);
        }
    }

    /// Signals the process's group: every exec starts a group of its own, so this
    /// reaches its children too unless they made groups of their own.
    pub fn signal(&self, signal: i32) {
        if let Ok(signal) = Signal::try_from(signal) {
            let _ = killpg(Pid::from_raw(self.pid as i32), signal);
        }
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
        // Not `NotFound`: that kind means the program itself is missing.
        return Err(Failure::new(
            FailureKind::InvalidRequest,
            format!("working directory {cwd} does not exist"),
        ));
    }
    let mut command = Command::new(&request.program);
    command
        .args(&request.args)
        .env_clear()
        .envs(defaults.env.iter().map(|(k, v)| (k, v)))
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cwd)
        .process_group(0)
        .stdin(match request.stdin {
            StdinMode::Null => Stdio::null(),
            StdinMode::Pipe => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|err| io_failure(&format!("cannot run {}", request.program), err))?;
    let pid = child.id();
    let exit = reaper.watch(pid);

    let credit = Arc::new(Semaphore::new(request.output_window as usize));
    let pipes = (
        child.stdin.take().map(OwnedFd::from),
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    );
    let (stdin_fd, stdout_fd, stderr_fd) = pipes;
    let stdin = match stdin_fd.map(pipe::Sender::from_owned_fd).transpose() {
        Ok(Some(sender)) => {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(feed_stdin(sender, rx));
            Some(tx)
        }
        Ok(None) => None,
        Err(err) => return Err(io_failure("stdin pipe", err)),
    };
    let stdout = stdout_fd
        .map(pipe::Receiver::from_owned_fd)
        .transpose()
        .map_err(|err| io_failure("stdout pipe", err))?;
    let stderr = stderr_fd
        .map(pipe::Receiver::from_owned_fd)
        .transpose()
        .map_err(|err| io_failure("stderr pipe", err))?;

    let report_credit = credit.clone();
    tokio::spawn(async move {
        let _ = outbox
            .send(Envelope::new(id, GuestMessage::Started { pid }))
            .await;
        let (exited_tx, exited_rx) = watch::channel(false);
        let pump = |pipe: Option<pipe::Receiver>, stdout: bool| {
            let pump = Pump {
                id,
                stdout,
                credit: report_credit.clone(),
                outbox: outbox.clone(),
                exited: exited_rx.clone(),
            };
            tokio::spawn(async move {
                if let Some(pipe) = pipe {
                    pump.run(pipe).await;
                }
            })
        };
        let out_pump = pump(stdout, true);
        let err_pump = pump(stderr, false);
        let status = exit.await.unwrap_or(ExitStatus {
            code: None,
            signal: None,
        });
        let _ = exited_tx.send(true);
        let _ = out_pump.await;
        let _ = err_pump.await;
        on_exit();
        let _ = outbox
            .send(Envelope::new(id, GuestMessage::Exited(status)))
            .await;
    });

    Ok(Exec { pid, credit, stdin })
}

async fn feed_stdin(mut pipe: pipe::Sender, mut events: mpsc::UnboundedReceiver<StdinEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            StdinEvent::Data(data) => {
                if pipe.write_all(&data).await.is_err() {
                    return;
                }
            }
            StdinEvent::Close => return,
        }
    }
}

struct Pump {
    id: u64,
    stdout: bool,
    credit: Arc<Semaphore>,
    outbox: Outbox,
    exited: watch::Receiver<bool>,
}

impl Pump {
    async fn run(mut self, mut pipe: pipe::Receiver) {
        let mut buf = vec![0u8; MAX_DATA_CHUNK];
        loop {
            let allowed = self.take_credit().await;
            let read = self.read_or_idle_out(&mut pipe, &mut buf[..allowed]).await;
            let n = match read {
                Some(Ok(n)) if n > 0 => n,
                _ => {
                    self.credit.add_permits(allowed);
                    return;
                }
            };
            self.credit.add_permits(allowed - n);
            let data = buf[..n].to_vec();
            let msg = if self.stdout {
                GuestMessage::Stdout(data)
            } else {
                GuestMessage::Stderr(data)
            };
            if self.outbox.send(Envelope::new(self.id, msg)).await.is_err() {
                return;
            }
        }
    }

    /// Waits for at least one byte of credit and takes as much as one chunk allows.
    async fn take_credit(&self) -> usize {
        let Ok(first) = self.credit.acquire().await else {
            return 0;
        };
        first.forget();
        let more = self.credit.available_permits().min(MAX_DATA_CHUNK - 1);
        if let Ok(permits) = self.credit.try_acquire_many(more as u32) {
            permits.forget();
            1 + more
        } else {
            1
        }
    }

    /// Reads; once the process has exited, gives up after [`DRAIN_IDLE`] of silence.
    async fn read_or_idle_out(
        &mut self,
        pipe: &mut pipe::Receiver,
        buf: &mut [u8],
    ) -> Option<io::Result<usize>> {
        loop {
            if *self.exited.borrow() {
                return tokio::time::timeout(DRAIN_IDLE, pipe.read(buf)).await.ok();
            }
            tokio::select! {
                read = pipe.read(buf) => return Some(read),
                changed = self.exited.changed() => {
                    if changed.is_err() {
                        return tokio::time::timeout(DRAIN_IDLE, pipe.read(buf)).await.ok();
                    }
                }
            }
        }
    }
}

/// Reports a failed system call with the guest's errno and the kind the host maps
/// to a typed error.
pub fn io_failure(what: &str, err: io::Error) -> Failure {
    let kind = match err.kind() {
        io::ErrorKind::NotFound => FailureKind::NotFound,
        io::ErrorKind::PermissionDenied => FailureKind::PermissionDenied,
        _ => FailureKind::Io,
    };
    Failure {
        kind,
        errno: err.raw_os_error(),
        message: format!("{what}: {err}"),
    }
}
