//! QEMU's control channel (QMP) for the two things a template needs: saving a
//! VM that has booted to the point where every sandbox is alike, and resuming
//! a new VM from what was saved.
//!
//! The saved state is a migration stream of the devices only: the template's
//! memory is a file QEMU shares with it (`share=on`), and the `x-ignore-shared`
//! capability leaves shared memory out of the stream. A restored VM maps that
//! file privately (copy-on-write), so restored VMs share the template's pages
//! until they write them, and the stream is tens of kilobytes.
//!
//! QMP is line-delimited JSON over the socket the VM was given as `control`;
//! files travel with `getfd` as `SCM_RIGHTS`, so QEMU never opens a path the
//! runtime named for the state.

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::UnixStream;

/// The name the state file gets in QEMU's fd table.
const STATE_FD_NAME: &str = "msbstate";

/// How often a migration's progress is asked for.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Longest QMP line taken from QEMU (its replies here are small).
const MAX_LINE: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("QEMU control channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("QEMU control channel closed")]
    Closed,
    #[error("QEMU control channel: {0}")]
    Protocol(String),
    #[error("QEMU refused {command}: {message}")]
    Refused { command: String, message: String },
    #[error("migration failed: {0}")]
    Migration(String),
}

/// A QMP session with one VM.
pub struct Controller {
    stream: BufReader<UnixStream>,
}

impl Controller {
    /// Takes the host end of the VM's `control` link: reads QEMU's greeting,
    /// leaves capability negotiation, and turns on `x-ignore-shared` (both the
    /// saving and the loading side must have it).
    pub async fn connect(link: OwnedFd) -> Result<Controller, ControlError> {
        let std = std::os::unix::net::UnixStream::from(link);
        std.set_nonblocking(true)?;
        let mut controller = Controller {
            stream: BufReader::new(UnixStream::from_std(std)?),
        };
        let greeting = controller.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(ControlError::Protocol(format!(
                "expected QEMU's greeting, got {greeting}"
            )));
        }
        controller.execute("qmp_capabilities", json!({})).await?;
        controller
            .execute(
                "migrate-set-capabilities",
                json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] }),
            )
            .await?;
        Ok(controller)
    }

    /// Pauses the VM and writes its device state to `state`. The VM stays
    /// paused; [`Controller::quit`] ends it.
    pub async fn save(&mut self, state: &File) -> Result<(), ControlError> {
        self.execute("stop", json!({})).await?;
        self.pass_file(state).await?;
        self.execute("migrate", json!({ "uri": format!("fd:{STATE_FD_NAME}") }))
            .await?;
        self.wait_for_migration().await
    }

    /// Loads `state` into a VM started to receive it, then runs the VM.
    pub async fn resume(&mut self, state: &File) -> Result<(), ControlError> {
        self.pass_file(state).await?;
        self.execute(
            "migrate-incoming",
            json!({ "uri": format!("fd:{STATE_FD_NAME}") }),
        )
        .await?;
        self.wait_for_migration().await?;
        // The template was saved paused, so its state says paused: run it.
        self.execute("cont", json!({})).await?;
        Ok(())
    }

    /// Ends QEMU.
    pub async fn quit(&mut self) -> Result<(), ControlError> {
        self.execute("quit", json!({})).await.map(|_| ())
    }

    async fn wait_for_migration(&mut self) -> Result<(), ControlError> {
        loop {
            let info = self.execute("query-migrate", json!({})).await?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    let why = info
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(ControlError::Migration(why.to_string()));
                }
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// `getfd`: the command and the descriptor go in one message.
    async fn pass_file(&mut self, file: &File) -> Result<(), ControlError> {
        let command = command_line("getfd", json!({ "fdname": STATE_FD_NAME }));
        let fds = [file.as_raw_fd()];
        let socket = self.stream.get_ref();
        socket
            .async_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(command.as_bytes())];
                let sent = sendmsg::<()>(
                    socket.as_raw_fd(),
                    &iov,
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)?;
                if sent != command.len() {
                    // QMP lines are tiny; a short write of one would be a broken socket.
                    return Err(std::io::Error::other("short write of getfd"));
                }
                Ok(())
            })
            .await?;
        self.read_reply("getfd").await.map(|_| ())
    }

    async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, ControlError> {
        let line = command_line(command, arguments);
        self.stream.get_mut().write_all(line.as_bytes()).await?;
        self.read_reply(command).await
    }

    /// The reply to the command just sent; events on the way are skipped.
    async fn read_reply(&mut self, command: &str) -> Result<Value, ControlError> {
        loop {
            let message = self.read_message().await?;
            if message.get("event").is_some() {
                continue;
            }
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            let message = message
                .get("error")
                .and_then(|e| e.get("desc"))
                .and_then(Value::as_str)
                .unwrap_or("unexpected reply")
                .to_string();
            return Err(ControlError::Refused {
                command: command.to_string(),
                message,
            });
        }
    }

    async fn read_message(&mut self) -> Result<Value, ControlError> {
        let mut line = Vec::new();
        let read = (&mut self.stream)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Err(ControlError::Closed);
        }
        if !line.ends_with(b"\n") {
            return Err(ControlError::Protocol("reply line too long".into()));
        }
        serde_json::from_slice(&line).map_err(|e| ControlError::Protocol(e.to_string()))
    }
}

fn command_line(command: &str, arguments: Value) -> String {
    let mut line = json!({ "execute": command, "arguments": arguments }).to_string();
    line.push('\n');
    line
}
