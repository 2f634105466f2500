//! Sandboxes by name, from any process of the same user: the run records in the
//! state database and the runtimes' control sockets.
//!
//! The engine inserts a sandbox's run record (`starting`) before its runtime
//! starts; from then on the runtime records its own status (`crate::record` in
//! the runtime). Readers trust a status that expects a live runtime only when
//! the recorded runtime process is alive ([`msb_state::SandboxRun::effective_status`]),
//! so a runtime killed outright shows as `crashed`, never as `running`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use msb_control::{BootInfo, FromRuntime, HostMetrics, ToRuntime};
use msb_protocol::User;
use msb_state::{RunStatus, SandboxRun, State};
use serde::{Deserialize, Serialize};

use crate::conn::RuntimeConn;
use crate::error::{LifecycleError, NotRunning};
use crate::images::sandbox_alive;
use crate::options::sandbox::SandboxOptions;
use crate::settings::EngineSettings;

/// What a handle needs besides the runtime's `BootInfo`, kept in the run record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HandleInfo {
    pub workdir: Option<String>,
    pub default_user: Option<User>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The `secretEnv` names it was created with (never the values): `start`
    /// needs them given again.
    #[serde(default)]
    pub secret_names: Vec<String>,
    /// The options it was created with, less registry credentials and secret
    /// values, for `start`.
    #[serde(default)]
    pub options: Option<SandboxOptions>,
}

/// A sandbox as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSummary {
    pub name: String,
    /// "starting", "running", "stopping", "stopped" or "crashed".
    pub status: &'static str,
    /// Why it stopped or crashed.
    pub reason: Option<String>,
    /// The image as the creator named it.
    pub image: String,
    pub detached: bool,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    pub stopped_at_ms: Option<i64>,
    /// The runtime process, while it lives.
    pub pid: Option<u32>,
}

/// A running sandbox's resource use, as `Sandbox::metrics` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SandboxMetrics {
    /// CPU time of the VM process per wall time since this handle's previous
    /// sample (since boot for the first), in percent of one host CPU.
    pub cpu_percent: f64,
    /// The guest's own figures (`MemTotal - MemAvailable`, `MemTotal`), in MiB;
    /// `None` when it did not answer sensibly.
    pub memory_used_mib: Option<f64>,
    pub memory_total_mib: Option<f64>,
    /// The memory the VM was given, in MiB.
    pub memory_limit_mib: f64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub uptime_ms: u64,
}

impl SandboxMetrics {
    /// From the runtime's report and this handle's previous one.
    pub(crate) fn from_host(now: &HostMetrics, previous: Option<&HostMetrics>) -> SandboxMetrics {
        let (cpu, wall) = match previous {
            Some(p) if now.uptime_ms > p.uptime_ms => (
                now.cpu_ms.saturating_sub(p.cpu_ms),
                now.uptime_ms - p.uptime_ms,
            ),
            _ => (now.cpu_ms, now.uptime_ms.max(1)),
        };
        let mib = |kib: u64| kib as f64 / 1024.0;
        SandboxMetrics {
            cpu_percent: cpu as f64 * 100.0 / wall as f64,
            memory_used_mib: now
                .memory_total_kib
                .zip(now.memory_available_kib)
                .map(|(total, available)| mib(total - available)),
            memory_total_mib: now.memory_total_kib.map(mib),
            memory_limit_mib: mib(now.memory_limit_kib),
            net_rx_bytes: now.net_rx_bytes,
            net_tx_bytes: now.net_tx_bytes,
            disk_read_bytes: now.disk_read_bytes,
            disk_write_bytes: now.disk_write_bytes,
            uptime_ms: now.uptime_ms,
        }
    }
}

/// How long a handle waits for a runtime that reported the VM's end to exit.
const RUNTIME_EXIT_WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn with_state<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce(&mut State) -> msb_state::Result<T> + Send + 'static,
) -> Result<T, LifecycleError> {
    on_state(path, LifecycleError::io, f).await
}

/// Runs `f` on the state database at `path` (made if missing) on a blocking
/// thread. `io` makes the caller's error for what failed before `f` could run.
pub(crate) async fn on_state<T, E>(
    path: PathBuf,
    io: fn(&str, std::io::Error) -> E,
    f: impl FnOnce(&mut State) -> msb_state::Result<T> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<msb_state::StateError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(path.parent().expect("state.db has a parent"))
            .map_err(|e| io("create the state directory", e))?;
        let mut state = State::open(&path)?;
        Ok(f(&mut state)?)
    })
    .await
    .map_err(|e| io("read the state database", std::io::Error::other(e)))?
}

/// The recorded run of `name`, or `SandboxNotFound`.
pub(crate) async fn find(
    settings: &EngineSettings,
    name: &str,
) -> Result<SandboxRun, LifecycleError> {
    let key = name.to_string();
    let run = with_state(settings.state_db(), move |state| state.run(&key)).await?;
    match run {
        // A live pooled sandbox is its pool's until claimed: nobody else's to find.
        Some(run) if believed_status(settings, &run) != RunStatus::Pooled => Ok(run),
        _ => Err(LifecycleError::NotFound {
            name: name.to_string(),
        }),
    }
}

/// Every sandbox with a record but the live pooled ones.
pub(crate) async fn list(settings: &EngineSettings) -> Result<Vec<SandboxSummary>, LifecycleError> {
    let runs = with_state(settings.state_db(), |state| state.runs()).await?;
    Ok(runs
        .iter()
        .filter(|run| believed_status(settings, run) != RunStatus::Pooled)
        .map(|run| summary(settings, run))
        .collect())
}

/// The status readers should believe: [`SandboxRun::effective_status`], and a
/// record not yet booted (`starting`, or `pooled` without a runtime) whose name
/// lock nobody holds was left by a creator that died before its sandbox booted
/// (the creating engine holds the lock from before the record is written until
/// the runtime takes it over).
fn believed_status(settings: &EngineSettings, run: &SandboxRun) -> RunStatus {
    match run.status {
        RunStatus::Starting | RunStatus::Pooled
            if run.runtime_pid.is_none() && !sandbox_alive(&settings.sandbox_dir(&run.name)) =>
        {
            RunStatus::Crashed
        }
        _ => run.effective_status(),
    }
}

fn summary(settings: &EngineSettings, run: &SandboxRun) -> SandboxSummary {
    let status = believed_status(settings, run);
    SandboxSummary {
        name: run.name.clone(),
        status: status.as_str(),
        reason: match (status, run.status) {
            (RunStatus::Crashed, RunStatus::Starting | RunStatus::Pooled)
                if run.runtime_pid.is_none() =>
            {
                Some("the process creating it ended before it booted".into())
            }
            (RunStatus::Crashed, recorded) if recorded.expects_runtime() => {
                Some("its runtime process died without recording an end".into())
            }
            _ => run.reason.clone(),
        },
        image: run.image.clone(),
        detached: run.detached,
        cpus: run.cpus,
        memory_mib: run.memory_mib,
        created_at_ms: run.created_at_ms,
        stopped_at_ms: run.stopped_at_ms,
        pid: status
            .expects_runtime()
            .then_some(run.runtime_pid)
            .flatten(),
    }
}

/// A running sandbox's handle parts: its record's handle info, a connection
/// to its runtime, and the `BootInfo` the runtime answered `Attach` with.
pub(crate) struct Attached {
    pub run: SandboxRun,
    pub handle: HandleInfo,
    pub conn: Arc<RuntimeConn>,
    pub boot: BootInfo,
}

pub(crate) async fn attach(
    settings: &EngineSettings,
    name: &str,
) -> Result<Attached, LifecycleError> {
    let run = find(settings, name).await?;
    let not_running = |reason: String| {
        LifecycleError::NotRunning(NotRunning {
            name: name.to_string(),
            reason,
            guest_fault: false,
            secret_violation: false,
        })
    };
    let status = believed_status(settings, &run);
    if status != RunStatus::Running {
        let summary = summary(settings, &run);
        let reason = match summary.reason {
            Some(reason) => format!("it is {} ({reason})", summary.status),
            None => format!("it is {}", summary.status),
        };
        return Err(not_running(reason));
    }
    let handle: HandleInfo = serde_json::from_str(&run.handle_json)
        .map_err(|e| LifecycleError::io("read the sandbox's record", std::io::Error::other(e)))?;
    let stream = match tokio::net::UnixStream::connect(&handle.socket).await {
        Ok(stream) => stream,
        // The runtime ended between the status check and the connection.
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(not_running("its runtime is no longer listening".into()))
        }
        Err(err) => return Err(LifecycleError::io("connect to the sandbox's runtime", err)),
    };
    let conn = RuntimeConn::start(stream);
    let mut route = conn
        .open_request()
        .map_err(|_| not_running("its runtime closed the connection".into()))?;
    let reply = match conn.send(route.id, ToRuntime::Attach) {
        Ok(()) => route.events.recv().await,
        Err(_) => None,
    };
    conn.close_request(route.id);
    match reply {
        Some(FromRuntime::Attached(boot)) => Ok(Attached {
            run,
            handle,
            conn,
            boot,
        }),
        _ => Err(not_running("its runtime closed the connection".into())),
    }
}

/// Waits until the runtime process a run recorded has exited.
pub(crate) async fn wait_runtime_gone(run: &SandboxRun) {
    let deadline = tokio::time::Instant::now() + RUNTIME_EXIT_WAIT;
    while run.runtime_alive() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starting(name: &str) -> SandboxRun {
        SandboxRun {
            name: name.into(),
            status: RunStatus::Starting,
            reason: None,
            image: "img".into(),
            detached: false,
            cpus: 1,
            memory_mib: 512,
            created_at_ms: 0,
            stopped_at_ms: None,
            runtime_pid: None,
            runtime_start: None,
            handle_json: "{}".into(),
        }
    }

    #[tokio::test]
    async fn a_starting_record_whose_creator_died_lists_as_crashed() {
        let home = tempfile::tempdir().unwrap();
        let settings = EngineSettings {
            home: home.path().to_path_buf(),
            ..EngineSettings::from_env(home.path())
        };
        for name in ["booting", "abandoned"] {
            std::fs::create_dir_all(settings.sandbox_dir(name)).unwrap();
            let run = starting(name);
            with_state(settings.state_db(), move |state| state.put_run(&run))
                .await
                .unwrap();
        }
        // A creator still at work holds its sandbox's name lock.
        let _held = crate::launch::lock_name(&settings.sandbox_dir("booting"), "booting").unwrap();

        let listed = list(&settings).await.unwrap();
        let status = |name: &str| {
            let entry = listed.iter().find(|s| s.name == name).unwrap();
            (entry.status, entry.reason.clone())
        };
        assert_eq!(status("booting"), ("starting", None));
        assert_eq!(
            status("abandoned"),
            (
                "crashed",
                Some("the process creating it ended before it booted".into())
            )
        );
        match attach(&settings, "abandoned").await {
            Err(LifecycleError::NotRunning(not_running)) => {
                assert!(
                    not_running.reason.contains("crashed"),
                    "{}",
                    not_running.reason
                )
            }
            other => panic!("attached to an abandoned record: {:?}", other.err()),
        }
    }

    #[tokio::test]
    async fn a_live_pooled_sandbox_is_neither_listed_nor_found() {
        let home = tempfile::tempdir().unwrap();
        let settings = EngineSettings {
            home: home.path().to_path_buf(),
            ..EngineSettings::from_env(home.path())
        };
        let this = std::process::id();
        let this_start = msb_state::process_start(this).unwrap();
        // (name, runtime): booting into the pool (no runtime yet, lock held),
        // booted (a live runtime: this process), its runtime dead, abandoned
        // before boot (no runtime, lock free).
        let records = [
            ("booting", None),
            ("booted", Some((this, this_start))),
            ("dead", Some((this, this_start + 1))),
            ("abandoned", None),
        ];
        for (name, runtime) in records {
            std::fs::create_dir_all(settings.sandbox_dir(name)).unwrap();
            let run = SandboxRun {
                status: RunStatus::Pooled,
                runtime_pid: runtime.map(|(pid, _)| pid),
                runtime_start: runtime.map(|(_, start)| start),
                ..starting(name)
            };
            with_state(settings.state_db(), move |state| state.put_run(&run))
                .await
                .unwrap();
        }
        let _held = crate::launch::lock_name(&settings.sandbox_dir("booting"), "booting").unwrap();

        let listed: Vec<(String, &str)> = list(&settings)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.status))
            .collect();
        assert_eq!(
            listed,
            [
                ("abandoned".to_string(), "crashed"),
                ("dead".to_string(), "crashed")
            ]
        );
        for hidden in ["booting", "booted"] {
            assert!(
                matches!(
                    find(&settings, hidden).await,
                    Err(LifecycleError::NotFound { .. })
                ),
                "{hidden} was found"
            );
        }
        assert!(find(&settings, "dead").await.is_ok());
    }
}
