//! The run's status in the state database, as the runtime lives it: running
//! once booted (with this process's pid and start time, so that readers can
//! tell a crashed runtime from a live one), stopping, then stopped or crashed
//! with the reason. The engine inserted the record before starting the runtime;
//! a record it has removed since (a non-detached sandbox whose handle cleaned
//! up) is simply not updated.
//!
//! A failed write is logged, never fatal: the VM matters more than its record,
//! and readers fall back on the pid check.

use std::path::PathBuf;

use msb_control::{HostEnded, LifecycleSpec, VmExit};
use msb_state::{now_ms, RunStatus, State};

pub struct RunRecord {
    db: PathBuf,
    name: String,
    /// Booted into a warm pool: recorded `pooled` until the engine claims it.
    pooled: bool,
}

impl RunRecord {
    pub fn new(lifecycle: &LifecycleSpec) -> RunRecord {
        RunRecord {
            db: lifecycle.state_db.clone(),
            name: lifecycle.name.clone(),
            pooled: lifecycle.pooled,
        }
    }

    pub fn running(&self) {
        let pid = std::process::id();
        let status = if self.pooled {
            RunStatus::Pooled
        } else {
            RunStatus::Running
        };
        match msb_state::process_start(pid) {
            Some(start) => self.write(status.as_str(), |state| {
                state.set_booted(&self.name, status, pid, start)
            }),
            None => tracing::warn!("cannot read this process's start time; status not recorded"),
        }
    }

    pub fn stopping(&self) {
        self.write("stopping", |state| {
            state.set_status(&self.name, RunStatus::Stopping, None, now_ms())
        });
    }

    /// Records how the VM ended.
    pub fn ended(&self, exit: &VmExit) {
        let status = end_status(exit);
        let reason = exit.describe();
        self.write(status.as_str(), |state| {
            state.set_status(&self.name, status, Some(&reason), now_ms())
        });
    }

    fn write(&self, what: &str, update: impl FnOnce(&mut State) -> msb_state::Result<()>) {
        if let Err(err) = State::open(&self.db).and_then(|mut state| update(&mut state)) {
            tracing::warn!(status = what, err = %format!("{:#}", anyhow::Error::new(err)), "cannot record the sandbox's status");
        }
    }
}

/// Stopped when someone or something decided it (a client, the runtime's own
/// limits, a guest that powered off cleanly); crashed when the VM died by
/// itself abnormally or the guest misbehaved.
fn end_status(exit: &VmExit) -> RunStatus {
    match &exit.ended_by_host {
        Some(
            HostEnded::CreatorLeft | HostEnded::IdleTimeout { .. } | HostEnded::MaxLifetime { .. },
        ) => RunStatus::Stopped,
        Some(
            HostEnded::ProtocolViolation(_)
            | HostEnded::Unresponsive { .. }
            | HostEnded::SecretViolation { .. },
        ) => RunStatus::Crashed,
        None if exit.requested || (exit.code == Some(0) && exit.signal.is_none()) => {
            RunStatus::Stopped
        }
        None => RunStatus::Crashed,
    }
}
