//! Running processes in a sandbox: requests, the event stream of one process,
//! its controls (stdin, signals, terminal size) and its collected output.
//!
//! Flow control: the guest may send [`OUTPUT_WINDOW`] bytes ahead; each byte is
//! credited back when the consumer takes it from [`ExecEvents::next`]. A slow
//! consumer therefore holds at most one window per process in memory, and the
//! guest process blocks on its pipe rather than anything being dropped. Stdin
//! goes the other way under the guest's input credit.
//!
//! Timeout: when it expires the process and everything it started are killed
//! (the guest kills the exec's cgroup), the remaining output is drained, and
//! the stream ends with [`ExecError::Timeout`], never with a normal exit.

use std::sync::Arc;
use std::time::Duration;

use msb_protocol::{
    ExecRequest, ExitStatus, Failure, FailureKind, GuestMessage, HostMessage, StdinMode, TtySize,
};
use tokio::time::Instant;

use crate::conn::RuntimeConn;
use crate::error::{ExecError, InvalidOption};
use crate::options::exec::{validate_tty_size, ExecOptions, StdinSource, DEFAULT_MAX_OUTPUT_BYTES};
use crate::request::{self, RequestEvents, RequestSender, OUTPUT_WINDOW};

/// After a timeout's kill, how long to wait for the guest to report the exit.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How long the guest may take to report a process started. The agent answers
/// at once; this bounds a guest (or an impostor) that never does.
const START_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exited(ExitStatus),
}

/// Everything a finished process wrote, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Starts a process; returns its event stream and its controls.
pub async fn start(
    conn: &Arc<RuntimeConn>,
    sandbox: &str,
    program: String,
    args: Vec<String>,
    options: ExecOptions,
) -> Result<(ExecEvents, ExecControl), ExecError> {
    options.validate()?;
    if program.is_empty() {
        return Err(InvalidOption::new("command", "must not be empty").into());
    }
    // The guest would refuse these too, but nothing the host checks should
    // depend on the guest's word.
    if program.contains('\0') {
        return Err(InvalidOption::new("command", "contains a NUL byte").into());
    }
    if args.iter().any(|arg| arg.contains('\0')) {
        return Err(InvalidOption::new("args", "an argument contains a NUL byte").into());
    }
    let not_running = || ExecError::from(conn.not_running(sandbox));
    let stdin_mode = match options.stdin {
        StdinSource::Null => StdinMode::Null,
        StdinSource::Bytes(_) | StdinSource::Pipe => StdinMode::Pipe,
    };
    let request = ExecRequest {
        program,
        args,
        env: options.env,
        cwd: options.cwd,
        user: options.user,
        stdin: stdin_mode,
        tty: options.tty,
        output_window: OUTPUT_WINDOW,
    };
    let started_at = Instant::now();
    let (mut events, sender) =
        request::start(conn, HostMessage::Exec(request)).map_err(|_| not_running())?;
    // The caller's timeout runs from here: a guest that never reports the
    // start cannot hold the call beyond it.
    let start_by = match options.timeout {
        Some(timeout) if timeout < START_DEADLINE => started_at + timeout,
        _ => started_at + START_DEADLINE,
    };
    let pid = match tokio::time::timeout_at(start_by, events.recv()).await {
        Ok(Some(GuestMessage::Started { pid })) => pid,
        Ok(Some(GuestMessage::Failed(failure))) => return Err(failure_to_error(failure)),
        Ok(_) => return Err(not_running()),
        Err(_) => {
            let _ = sender.send(HostMessage::Kill);
            return Err(match options.timeout {
                Some(timeout) if timeout < START_DEADLINE => ExecError::Timeout {
                    timeout_ms: timeout.as_millis() as u64,
                },
                _ => ExecError::Failed {
                    message: format!(
                        "the guest did not start the process within {} s",
                        START_DEADLINE.as_secs()
                    ),
                    errno: None,
                },
            });
        }
    };
    if let StdinSource::Bytes(data) = options.stdin {
        let stdin = sender.clone();
        tokio::spawn(async move {
            // A process that exits without reading ends the request; nothing to report.
            if stdin.write_input(&data).await.is_ok() {
                let _ = stdin.end_input().await;
            }
        });
    }
    let control = ExecControl {
        sender: sender.clone(),
        pid,
        stdin_pipe: matches!(stdin_mode, StdinMode::Pipe),
        tty: options.tty.is_some(),
    };
    let events = ExecEvents {
        events,
        sender,
        sandbox: sandbox.to_string(),
        conn: conn.clone(),
        deadline: options.timeout.map(|t| (started_at + t, t)),
        killed_for_timeout: None,
        max_output_bytes: options.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES),
    };
    Ok((events, control))
}

/// One running process's events, in order, ending with `Exited`.
pub struct ExecEvents {
    events: RequestEvents,
    sender: RequestSender,
    sandbox: String,
    conn: Arc<RuntimeConn>,
    /// When to kill the process, and the timeout it came from.
    deadline: Option<(Instant, Duration)>,
    /// Set once the timeout fired: the timeout, and the deadline for the exit report.
    killed_for_timeout: Option<(Duration, Instant)>,
    /// Cap of [`ExecEvents::collect`].
    max_output_bytes: u64,
}

impl ExecEvents {
    /// The next event, or `None` after `Exited` was returned.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, ExecError> {
        loop {
            if self.events.is_finished() {
                return Ok(None);
            }
            let message = self.recv_before_deadline().await?;
            let event = match message {
                Some(GuestMessage::Stdout(data)) => {
                    self.sender.credit_output(data.len());
                    ExecEvent::Stdout(data)
                }
                Some(GuestMessage::Stderr(data)) => {
                    self.sender.credit_output(data.len());
                    ExecEvent::Stderr(data)
                }
                Some(GuestMessage::Exited(status)) => match self.killed_for_timeout {
                    Some((timeout, _)) => {
                        return Err(ExecError::Timeout {
                            timeout_ms: timeout.as_millis() as u64,
                        })
                    }
                    None => ExecEvent::Exited(status),
                },
                Some(GuestMessage::Failed(failure)) => return Err(failure_to_error(failure)),
                // Nothing else belongs to a running exec.
                Some(_) => continue,
                None => return Err(self.conn.not_running(&self.sandbox).into()),
            };
            if self.killed_for_timeout.is_some() {
                // Output after the kill is drained, not delivered.
                continue;
            }
            return Ok(Some(event));
        }
    }

    /// Receives the next message, killing the process when the timeout expires.
    async fn recv_before_deadline(&mut self) -> Result<Option<GuestMessage>, ExecError> {
        loop {
            if let Some((timeout, report_by)) = self.killed_for_timeout {
                return match tokio::time::timeout_at(report_by, self.events.recv()).await {
                    Ok(message) => Ok(message),
                    // The guest did not even report the exit: give up on it.
                    Err(_) => Err(ExecError::Timeout {
                        timeout_ms: timeout.as_millis() as u64,
                    }),
                };
            }
            let Some((deadline, timeout)) = self.deadline else {
                return Ok(self.events.recv().await);
            };
            tokio::select! {
                message = self.events.recv() => return Ok(message),
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = self.sender.send(HostMessage::Kill);
                    self.killed_for_timeout = Some((timeout, Instant::now() + KILL_GRACE));
                }
            }
        }
    }

    /// Reads the stream to its end, keeping at most the options'
    /// `max_output_bytes`: beyond that the process is killed and the call fails
    /// with the output so far.
    pub async fn collect(mut self) -> Result<ExecOutput, ExecError> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(event) = self.next().await? {
            let room =
                self.max_output_bytes
                    .saturating_sub((stdout.len() + stderr.len()) as u64) as usize;
            let len = match &event {
                ExecEvent::Stdout(data) | ExecEvent::Stderr(data) => data.len(),
                ExecEvent::Exited(_) => 0,
            };
            if len > room {
                match &event {
                    ExecEvent::Stdout(data) => stdout.extend_from_slice(&data[..room]),
                    ExecEvent::Stderr(data) => stderr.extend_from_slice(&data[..room]),
                    ExecEvent::Exited(_) => {}
                }
                let _ = self.sender.send(HostMessage::Kill);
                return Err(ExecError::OutputLimit {
                    limit: self.max_output_bytes,
                    stdout,
                    stderr,
                });
            }
            match event {
                ExecEvent::Stdout(data) => stdout.extend_from_slice(&data),
                ExecEvent::Stderr(data) => stderr.extend_from_slice(&data),
                ExecEvent::Exited(status) => {
                    return Ok(ExecOutput {
                        status,
                        stdout,
                        stderr,
                    })
                }
            }
        }
        Err(self.conn.not_running(&self.sandbox).into())
    }
}

impl Drop for ExecEvents {
    fn drop(&mut self) {
        if !self.events.is_finished() {
            // Nobody reads the output any more: let the process run on without
            // blocking on a full pipe.
            let _ = self.sender.send(HostMessage::Detach);
        }
    }
}

/// Controls of a running process; cheap to clone.
#[derive(Clone)]
pub struct ExecControl {
    sender: RequestSender,
    pid: u32,
    stdin_pipe: bool,
    tty: bool,
}

impl ExecControl {
    /// The process id inside the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Writes to the process's stdin; waits while the guest's input window is full.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ExecError> {
        self.require_pipe()?;
        self.sender
            .write_input(data)
            .await
            .map_err(|_| stdin_closed())
    }

    pub async fn close_stdin(&self) -> Result<(), ExecError> {
        self.require_pipe()?;
        self.sender.end_input().await.map_err(|_| stdin_closed())
    }

    /// Sends a signal to the process's group.
    pub fn signal(&self, signal: i32) -> Result<(), ExecError> {
        if !(1..=64).contains(&signal) {
            return Err(
                InvalidOption::new("signal", format!("{signal} is not a signal number")).into(),
            );
        }
        let _ = self.sender.send(HostMessage::Signal(signal));
        Ok(())
    }

    /// Kills the process and everything it started.
    pub fn kill(&self) {
        let _ = self.sender.send(HostMessage::Kill);
    }

    pub fn resize(&self, size: TtySize) -> Result<(), ExecError> {
        if !self.tty {
            return Err(InvalidOption::new("tty", "the process was not started with a TTY").into());
        }
        validate_tty_size(size)?;
        let _ = self.sender.send(HostMessage::Resize(size));
        Ok(())
    }

    fn require_pipe(&self) -> Result<(), ExecError> {
        if self.stdin_pipe {
            Ok(())
        } else {
            Err(
                InvalidOption::new("stdin", "the process was not started with stdin: \"pipe\"")
                    .into(),
            )
        }
    }
}

fn stdin_closed() -> ExecError {
    ExecError::Failed {
        message: "stdin is closed: the process has exited or its input was ended".into(),
        errno: Some(libc::EPIPE),
    }
}

fn failure_to_error(failure: Failure) -> ExecError {
    match failure.kind {
        FailureKind::ProgramNotFound => ExecError::CommandNotFound {
            message: failure.message,
        },
        FailureKind::UnknownUser => ExecError::UserNotFound {
            message: failure.message,
        },
        FailureKind::InvalidRequest | FailureKind::Io | FailureKind::LimitExceeded => {
            ExecError::Failed {
                message: failure.message,
                errno: failure.errno,
            }
        }
    }
}
