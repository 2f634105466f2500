//! Processes: exec options from JavaScript, collected output, and the handle
//! of a streaming process (events, stdin, signals, terminal size).

use std::collections::HashMap;
use std::time::Duration;

use msb_engine::{
    ExecControl, ExecEvent, ExecEvents, ExecOptions, InvalidOption, StdinSource, TtySize, User,
};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::sync::Mutex;

use crate::error::{done, outcome, whole_number, NativeFailure};

#[napi(object)]
pub struct NativeExecOptions {
    pub cwd: Option<String>,
    pub env: Option<HashMap<String, String>>,
    pub user: Option<Either<String, u32>>,
    pub timeout_ms: Option<f64>,
    /// Bytes for stdin, then end-of-file.
    pub stdin_data: Option<Buffer>,
    /// Stdin written through the handle.
    pub stdin_pipe: Option<bool>,
    pub tty: Option<NativeTtySize>,
    /// Cap on collected output (exec/shell, not streams); default 64 MiB.
    pub max_output_bytes: Option<f64>,
}

#[napi(object)]
pub struct NativeTtySize {
    pub cols: u32,
    pub rows: u32,
}

#[napi(object)]
pub struct NativeExecOutput {
    /// Exit code, or null when a signal ended the process.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Buffer,
    pub stderr: Buffer,
    /// Microseconds the guest measured from spawn to reaping.
    pub guest_micros: f64,
}

#[napi(object)]
pub struct NativeExecEvent {
    /// "stdout", "stderr" or "exited".
    pub event_type: String,
    pub data: Option<Buffer>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// A JavaScript object's entries sorted by key: object key order is lost in a
/// `HashMap`, and the guest's environment should not depend on it.
pub(crate) fn sorted_pairs(map: Option<HashMap<String, String>>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = map.unwrap_or_default().into_iter().collect();
    pairs.sort();
    pairs
}

pub(crate) fn exec_options(
    options: Option<NativeExecOptions>,
) -> std::result::Result<ExecOptions, InvalidOption> {
    let Some(o) = options else {
        return Ok(ExecOptions::default());
    };
    let stdin = match (o.stdin_data, o.stdin_pipe) {
        (Some(_), Some(true)) => {
            return Err(InvalidOption::new(
                "stdin",
                "is either bytes or \"pipe\", not both",
            ))
        }
        (Some(data), _) => StdinSource::Bytes(data.to_vec()),
        (None, Some(true)) => StdinSource::Pipe,
        (None, _) => StdinSource::Null,
    };
    let timeout = match o.timeout_ms {
        None => None,
        Some(ms) if ms.is_finite() && ms > 0.0 => Some(Duration::from_micros((ms * 1000.0) as u64)),
        Some(ms) => {
            return Err(InvalidOption::new(
                "timeout",
                format!("must be a positive number of milliseconds, got {ms}"),
            ))
        }
    };
    Ok(ExecOptions {
        cwd: o.cwd,
        env: sorted_pairs(o.env),
        user: o.user.map(|u| match u {
            Either::A(name) => User::Name(name),
            Either::B(uid) => User::Id(uid),
        }),
        timeout,
        stdin,
        tty: o.tty.map(tty_size).transpose()?,
        max_output_bytes: o
            .max_output_bytes
            .map(|bytes| whole_number("maxOutputBytes", bytes))
            .transpose()?,
    })
}

fn tty_size(size: NativeTtySize) -> std::result::Result<TtySize, InvalidOption> {
    let dimension = |v: u32| {
        u16::try_from(v).map_err(|_| {
            InvalidOption::new(
                "tty",
                format!("{}x{} is not a terminal size", size.cols, size.rows),
            )
        })
    };
    Ok(TtySize {
        cols: dimension(size.cols)?,
        rows: dimension(size.rows)?,
    })
}

pub(crate) fn exec_output(out: msb_engine::ExecOutput) -> NativeExecOutput {
    NativeExecOutput {
        code: out.status.code,
        signal: out.status.signal,
        stdout: out.stdout.into(),
        stderr: out.stderr.into(),
        guest_micros: out.status.guest_micros as f64,
    }
}

/// A running process: its events and its controls.
#[napi]
pub struct NativeExecHandle {
    events: Mutex<ExecEvents>,
    control: ExecControl,
}

impl NativeExecHandle {
    pub(crate) fn new(events: ExecEvents, control: ExecControl) -> Self {
        Self {
            events: Mutex::new(events),
            control,
        }
    }
}

#[napi]
impl NativeExecHandle {
    #[napi(getter)]
    pub fn pid(&self) -> u32 {
        self.control.pid()
    }

    /// The next event; null after `exited`.
    #[napi]
    pub async fn recv(&self) -> Either<Option<NativeExecEvent>, NativeFailure> {
        let next = self.events.lock().await.next().await;
        outcome(next.map(|event| {
            event.map(|event| match event {
                ExecEvent::Stdout(data) => NativeExecEvent {
                    event_type: "stdout".into(),
                    data: Some(data.into()),
                    code: None,
                    signal: None,
                },
                ExecEvent::Stderr(data) => NativeExecEvent {
                    event_type: "stderr".into(),
                    data: Some(data.into()),
                    code: None,
                    signal: None,
                },
                ExecEvent::Exited(status) => NativeExecEvent {
                    event_type: "exited".into(),
                    data: None,
                    code: status.code,
                    signal: status.signal,
                },
            })
        }))
    }

    #[napi]
    pub async fn write_stdin(&self, data: Buffer) -> Option<NativeFailure> {
        done(self.control.write_stdin(&data).await)
    }

    #[napi]
    pub async fn close_stdin(&self) -> Option<NativeFailure> {
        done(self.control.close_stdin().await)
    }

    #[napi]
    pub fn signal(&self, signal: i32) -> Option<NativeFailure> {
        done(self.control.signal(signal))
    }

    #[napi]
    pub fn kill(&self) {
        self.control.kill()
    }

    #[napi]
    pub fn resize(&self, cols: u32, rows: u32) -> Option<NativeFailure> {
        match tty_size(NativeTtySize { cols, rows }) {
            Ok(size) => done(self.control.resize(size)),
            Err(invalid) => done(Err(invalid)),
        }
    }
}
