//! Running processes in a sandbox: requests, the event stream of one process
//! and its collected output.
//!
//! Flow control: the guest may send [`OUTPUT_WINDOW`] bytes ahead; each byte is
//! credited back when the consumer takes it from [`ExecStream::next`]. A slow
//! consumer therefore holds at most one window per process in memory, and the
//! guest process blocks on its pipe rather than anything being dropped.

use std::sync::Arc;

use msb_protocol::{
    ExecRequest, ExitStatus, Failure, FailureKind, GuestMessage, HostMessage, StdinMode,
};
use msb_runtime::control::{FromRuntime, ToRuntime};
use tokio::sync::mpsc;

use crate::config::{validate_env, validate_guest_path};
use crate::conn::RuntimeConn;
use crate::error::{ExecError, InvalidOption};

/// Output bytes in flight per process before the guest waits for the consumer.
pub const OUTPUT_WINDOW: u32 = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
}

impl ExecOptions {
    fn validate(&self) -> Result<(), InvalidOption> {
        if let Some(cwd) = &self.cwd {
            validate_guest_path("cwd", cwd)?;
        }
        validate_env("env", &self.env)
    }
}

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

/// One running process's events, in order, ending with `Exited`.
pub struct ExecStream {
    id: u64,
    pid: u32,
    events: mpsc::UnboundedReceiver<FromRuntime>,
    conn: Arc<RuntimeConn>,
    sandbox: String,
    finished: bool,
}

impl ExecStream {
    pub(crate) async fn start(
        conn: Arc<RuntimeConn>,
        sandbox: &str,
        program: String,
        args: Vec<String>,
        options: ExecOptions,
    ) -> Result<ExecStream, ExecError> {
        options.validate()?;
        if program.is_empty() {
            return Err(InvalidOption::new("command", "must not be empty").into());
        }
        let not_running = |conn: &RuntimeConn| ExecError::NotRunning {
            name: sandbox.to_string(),
            reason: conn.lifecycle().reason(),
        };
        let (id, mut events) = conn.open_request().map_err(|_| not_running(&conn))?;
        let request = ExecRequest {
            program,
            args,
            env: options.env,
            cwd: options.cwd,
            stdin: StdinMode::Null,
            output_window: OUTPUT_WINDOW,
        };
        let sent = conn
            .send(id, ToRuntime::Agent(HostMessage::Exec(request)))
            .await;
        let first = match sent {
            Ok(()) => events.recv().await,
            Err(_) => None,
        };
        match first {
            Some(FromRuntime::Agent(GuestMessage::Started { pid })) => Ok(ExecStream {
                id,
                pid,
                events,
                conn,
                sandbox: sandbox.to_string(),
                finished: false,
            }),
            Some(FromRuntime::Agent(GuestMessage::Failed(failure))) => {
                conn.close_request(id);
                Err(failure_to_error(failure))
            }
            _ => {
                conn.close_request(id);
                Err(not_running(&conn))
            }
        }
    }

    /// The process id inside the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next event, or `None` after `Exited` was returned.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, ExecError> {
        while !self.finished {
            let event = match self.events.recv().await {
                Some(FromRuntime::Agent(GuestMessage::Stdout(data))) => {
                    self.credit(data.len()).await;
                    ExecEvent::Stdout(data)
                }
                Some(FromRuntime::Agent(GuestMessage::Stderr(data))) => {
                    self.credit(data.len()).await;
                    ExecEvent::Stderr(data)
                }
                Some(FromRuntime::Agent(GuestMessage::Exited(status))) => {
                    self.finish();
                    ExecEvent::Exited(status)
                }
                Some(FromRuntime::Agent(GuestMessage::Failed(failure))) => {
                    self.finish();
                    return Err(failure_to_error(failure));
                }
                // Nothing else belongs to a running exec; ignore it.
                Some(_) => continue,
                None => {
                    self.finish();
                    return Err(ExecError::NotRunning {
                        name: self.sandbox.clone(),
                        reason: self.conn.lifecycle().reason(),
                    });
                }
            };
            return Ok(Some(event));
        }
        Ok(None)
    }

    /// Reads the stream to its end.
    pub async fn collect(mut self) -> Result<ExecOutput, ExecError> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(event) = self.next().await? {
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
        Err(ExecError::NotRunning {
            name: self.sandbox.clone(),
            reason: self.conn.lifecycle().reason(),
        })
    }

    async fn credit(&self, bytes: usize) {
        // A failed send means the sandbox is going away; `next` will report it.
        let _ = self
            .conn
            .send(self.id, ToRuntime::Agent(HostMessage::Credit(bytes as u32)))
            .await;
    }

    fn finish(&mut self) {
        self.finished = true;
        self.conn.close_request(self.id);
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_request(self.id);
        }
    }
}

fn failure_to_error(failure: Failure) -> ExecError {
    match failure.kind {
        FailureKind::NotFound => ExecError::CommandNotFound {
            message: failure.message,
        },
        _ => ExecError::Failed {
            message: failure.message,
            errno: failure.errno,
        },
    }
}
