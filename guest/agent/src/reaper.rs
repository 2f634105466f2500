//! The one place that calls `waitpid`. As PID 1 the agent is parent of every
//! orphan in the guest, so it reaps all children and hands the exit status of
//! the processes it started to whoever waits for them; orphans are reaped and
//! forgotten.
//!
//! Registration happens right after spawn with no await in between, and the
//! reaper only runs at await points of the same (current-thread) runtime, so no
//! exit can be reaped before its waiter is registered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use msb_protocol::ExitStatus;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

#[derive(Clone, Default)]
pub struct Reaper {
    waiters: Arc<Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>>,
}

impl Reaper {
    /// Starts reaping. Call once, before the first child is spawned.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let task_reaper = reaper.clone();
        tokio::spawn(async move {
            loop {
                task_reaper.reap_all();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Returns a receiver for `pid`'s exit status. Call right after spawning it.
    pub fn watch(&self, pid: u32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(pid as i32, tx);
        rx
    }

    fn reap_all(&self) {
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (
                    pid,
                    ExitStatus {
                        code: Some(code),
                        signal: None,
                        guest_micros: 0,
                    },
                ),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (
                    pid,
                    ExitStatus {
                        code: None,
                        signal: Some(signal as i32),
                        guest_micros: 0,
                    },
                ),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                // Stopped/continued states are not reported without WUNTRACED.
                Ok(_) => continue,
            };
            if let Some(waiter) = self.lock().remove(&pid.as_raw()) {
                let _ = waiter.send(status);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        // A poisoned map only means a panic elsewhere; the data is still consistent.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}
