//! A sandbox from the engine's side: created by [`Sandbox::create`] (the
//! steps are in [`crate::launch`]) or reached by name with [`Sandbox::get`]
//! (from any process of the same user), then serving execs and the guest
//! filesystem until it is stopped or its VM ends.
//!
//! The creator owns the sandbox's cleanup: a task waits for the runtime it
//! started and, for a sandbox that is not detached, forgets the records and
//! removes the directories once the runtime has exited, whether or not any
//! handle waits for it ([`watch_runtime`]). A detached sandbox keeps its record (status, reason)
//! and directory until [`Sandbox::remove`].

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use msb_control::{BootInfo, FromRuntime, HostMetrics, ToRuntime};
use msb_protocol::User;
use tokio::process::Child;
use tokio::sync::watch;

use crate::conn::{Lifecycle, RuntimeConn};
use crate::error::{CreateError, ExecError, InvalidOption, LifecycleError, StopError};
use crate::exec::{self, ExecControl, ExecEvents, ExecOutput};
use crate::fs::SandboxFs;
use crate::images::{Images, Progress};
use crate::launch::{self, Launch, LaunchKind};
use crate::lifecycle::{self, SandboxMetrics, SandboxSummary};
use crate::options::exec::ExecOptions;
use crate::options::sandbox::{self, SandboxOptions};
use crate::options::secrets::SecretEnvOptions;
use crate::settings::EngineSettings;
use crate::volumes;

/// Time the guest gets to stop its processes on `stop` before it is killed.
const STOP_GRACE_MS: u32 = 5_000;

#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    workdir: Option<String>,
    /// The image's `User`, used when an exec names none.
    default_user: Option<User>,
    /// Host side of the read-only share for bulk transfers into the guest.
    transfer: Arc<PathBuf>,
    boot: BootInfo,
    conn: Arc<RuntimeConn>,
    state_db: PathBuf,
    /// The runtime's previous metrics report to this handle, for CPU rates.
    last_metrics: std::sync::Mutex<Option<HostMetrics>>,
    /// How this handle came to be, which decides what ending it involves.
    origin: Origin,
}

enum Origin {
    /// `create` in this process: the runtime is our child, waited for by a
    /// task of its own ([`watch_runtime`]), which says here when it has exited
    /// and been cleaned up after (`Err`: waiting for it failed).
    Created {
        ended: watch::Receiver<Option<Result<(), String>>>,
    },
    /// `get`: the runtime belongs to another handle, maybe in another process.
    Attached { run: msb_state::SandboxRun },
}

impl Sandbox {
    /// Boots a sandbox, then applies its scripts and patches (on failure the
    /// sandbox is killed). `progress` hears about an image pull, if there is one.
    pub async fn create(
        settings: &EngineSettings,
        options: SandboxOptions,
        progress: Option<Progress>,
    ) -> Result<Sandbox, CreateError> {
        Self::launch(settings, options, progress, LaunchKind::Create).await
    }

    /// Boots a sandbox for the caller's warm pool: like `create`, but recorded
    /// as pooled (not listed, not found by name) until [`Sandbox::claim`].
    /// Options that tie a sandbox to a name, a host resource or a clock started
    /// at boot are refused (see [`sandbox::check_poolable`]).
    pub async fn prewarm(
        settings: &EngineSettings,
        options: SandboxOptions,
    ) -> Result<Sandbox, CreateError> {
        sandbox::check_poolable(&options)?;
        Self::launch(settings, options, None, LaunchKind::Pooled).await
    }

    /// Takes a pooled sandbox out of its pool: from now on it is listed and
    /// found by name as any sandbox of its creator. Fails if it is not pooled
    /// (any more): it ended, or was claimed before.
    pub async fn claim(&self) -> Result<(), LifecycleError> {
        // A VM that ended while pooled is not marked running on its way out.
        if self.is_running() {
            let name = self.inner.name.clone();
            let claimed = lifecycle::with_state(self.inner.state_db.clone(), move |state| {
                state.claim_pooled(&name)
            })
            .await?;
            if claimed {
                return Ok(());
            }
        }
        Err(LifecycleError::NotRunning(crate::error::NotRunning {
            name: self.inner.name.clone(),
            reason: "it is no pooled sandbox: it ended, or was claimed already".into(),
            guest_fault: false,
            secret_violation: false,
        }))
    }

    /// Boots a stopped sandbox again with the options it was created with
    /// (its root starts afresh: its scripts and patches are applied again).
    /// Secret values are never stored: a sandbox created with `secretEnv` needs
    /// each of them given again.
    pub async fn start(
        settings: &EngineSettings,
        name: &str,
        secret_env: Vec<SecretEnvOptions>,
        progress: Option<Progress>,
    ) -> Result<Sandbox, LifecycleError> {
        sandbox::validate_name(name)?;
        let run = lifecycle::find(settings, name).await?;
        if run.runtime_alive() {
            return Err(LifecycleError::Running {
                name: name.to_string(),
            });
        }
        let handle: lifecycle::HandleInfo =
            serde_json::from_str(&run.handle_json).map_err(|e| {
                LifecycleError::io("read the sandbox's record", std::io::Error::other(e))
            })?;
        let Some(mut options) = handle.options else {
            return Err(LifecycleError::io(
                "start the sandbox",
                std::io::Error::other("its record holds no options (made by an older version)"),
            ));
        };
        let given: std::collections::BTreeSet<&str> =
            secret_env.iter().map(|s| s.name.as_str()).collect();
        let missing: Vec<&str> = handle
            .secret_names
            .iter()
            .map(String::as_str)
            .filter(|needed| !given.contains(needed))
            .collect();
        if !missing.is_empty() {
            return Err(InvalidOption::new(
                "secretEnv",
                format!(
                    "sandbox {name:?} was created with secret environment variables; give {} \
                     again (secret values are never stored)",
                    missing.join(", ")
                ),
            )
            .into());
        }
        options.secret_env = secret_env;
        options.name = Some(name.to_string());
        Ok(Self::launch(settings, options, progress, LaunchKind::Restart).await?)
    }

    async fn launch(
        settings: &EngineSettings,
        options: SandboxOptions,
        progress: Option<Progress>,
        kind: LaunchKind,
    ) -> Result<Sandbox, CreateError> {
        let launch = Launch::prepare(settings, options, progress)
            .await?
            .for_kind(kind);
        let booted = launch.claim()?.boot().await?;
        let patches = booted.patches;
        let ended = watch_runtime(
            booted.runtime,
            AfterExit {
                name: booted.name.clone(),
                dir: booted.dir,
                keep_dir: booted.keep_dir,
                detached: booted.detached,
                images: booted.images,
                state_db: settings.state_db(),
            },
        );
        let sandbox = Sandbox {
            inner: Arc::new(Inner {
                name: booted.name,
                workdir: booted.workdir,
                default_user: booted.default_user,
                transfer: Arc::new(booted.transfer),
                boot: booted.boot,
                conn: booted.conn,
                state_db: settings.state_db(),
                last_metrics: Default::default(),
                origin: Origin::Created { ended },
            }),
        };
        if let Err((field, source)) = launch::apply_patches(&patches, &sandbox.fs()).await {
            let _ = sandbox.kill().await;
            return Err(CreateError::PatchFailed { field, source });
        }
        Ok(sandbox)
    }

    /// Whether sandboxes can start on this host: the assets are installed and
    /// the VMM program is there; the error says what is missing and how to get it.
    pub fn check_installed(settings: &EngineSettings) -> Result<(), CreateError> {
        launch::check_installed(settings)
    }

    /// A handle to the running sandbox `name`, created by this or another
    /// process of the same user. Several handles may serve one sandbox at
    /// once; each sees only its own processes' output.
    pub async fn get(settings: &EngineSettings, name: &str) -> Result<Sandbox, LifecycleError> {
        sandbox::validate_name(name)?;
        let attached = lifecycle::attach(settings, name).await?;
        let dir = attached.handle.dir;
        Ok(Sandbox {
            inner: Arc::new(Inner {
                name: name.to_string(),
                workdir: attached.handle.workdir,
                default_user: attached.handle.default_user,
                transfer: Arc::new(dir.join(launch::TRANSFER_DIR)),
                boot: attached.boot,
                conn: attached.conn,
                state_db: settings.state_db(),
                last_metrics: Default::default(),
                origin: Origin::Attached { run: attached.run },
            }),
        })
    }

    /// Every sandbox with a record: detached ones until removed, others while
    /// they run.
    pub async fn list(settings: &EngineSettings) -> Result<Vec<SandboxSummary>, LifecycleError> {
        lifecycle::list(settings).await
    }

    /// Forgets a sandbox and deletes its directory (logs and a persistent root
    /// included). A running one is refused unless `force`, which kills it first.
    pub async fn remove(
        settings: &EngineSettings,
        name: &str,
        force: bool,
    ) -> Result<(), LifecycleError> {
        sandbox::validate_name(name)?;
        let run = match lifecycle::find(settings, name).await {
            Ok(run) => Some(run),
            // A sandbox that was not detached has no record once stopped; its
            // persistent root is what is left to remove.
            Err(LifecycleError::NotFound { .. })
                if volumes::root_disk(settings, name).is_some() =>
            {
                None
            }
            Err(err) => return Err(err),
        };
        if let Some(run) = run.filter(|run| run.runtime_alive()) {
            if !force {
                return Err(LifecycleError::Running {
                    name: name.to_string(),
                });
            }
            match Sandbox::get(settings, name).await {
                Ok(sandbox) => sandbox.kill().await?,
                // Between starting and booted there is no socket yet: the
                // runtime's own process is the way in (its VM has a parent-death signal).
                Err(_) => {
                    if let Some(pid) = run.runtime_pid {
                        // SAFETY: kill(2) on a pid whose start time matched the record just above.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                    lifecycle::wait_runtime_gone(&run).await;
                }
            }
        }
        // Holding the name lock while deleting: a concurrent create of the same
        // name either finished before (and this refuses) or starts after.
        let dir = settings.sandbox_dir(name);
        let _lock = match launch::lock_name(&dir, name) {
            Ok(lock) => Some(lock),
            Err(CreateError::SandboxExists { .. }) => {
                return Err(LifecycleError::Running {
                    name: name.to_string(),
                })
            }
            // No directory left: nothing to hold.
            Err(_) => None,
        };
        let images = Images::new(settings);
        let _ = images.untrack_sandbox(name).await;
        let key = name.to_string();
        lifecycle::with_state(settings.state_db(), move |state| state.remove_run(&key)).await?;
        match fs::remove_dir_all(&dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(LifecycleError::io("remove the sandbox directory", err))
            }
            _ => Ok(()),
        }
    }

    /// The sandbox's event log (`events.log`: its console's lines and its
    /// runtime's events, timestamped), whether or not it exists yet.
    pub fn events_log(settings: &EngineSettings, name: &str) -> Result<PathBuf, LifecycleError> {
        sandbox::validate_name(name)?;
        Ok(settings
            .sandbox_dir(name)
            .join(msb_control::files::EVENTS_LOG))
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn boot_info(&self) -> &BootInfo {
        &self.inner.boot
    }

    /// Whether the VM is still running.
    pub fn is_running(&self) -> bool {
        self.inner.conn.lifecycle() == Lifecycle::Running
    }

    /// Starts a process; returns its event stream and its controls.
    pub async fn exec_stream(
        &self,
        program: String,
        args: Vec<String>,
        mut options: ExecOptions,
    ) -> Result<(ExecEvents, ExecControl), ExecError> {
        if options.user.is_none() {
            options.user = self.inner.default_user.clone();
        }
        exec::start(&self.inner.conn, &self.inner.name, program, args, options).await
    }

    /// Runs a process to its end and returns all it wrote.
    pub async fn exec(
        &self,
        program: String,
        args: Vec<String>,
        options: ExecOptions,
    ) -> Result<ExecOutput, ExecError> {
        let (events, _control) = self.exec_stream(program, args, options).await?;
        events.collect().await
    }

    /// CPU, memory, network and disk use. The counters are the host's; only
    /// the memory figures come from the guest, and only plausible ones are kept.
    pub async fn metrics(&self) -> Result<SandboxMetrics, LifecycleError> {
        let conn = &self.inner.conn;
        let not_running = || LifecycleError::NotRunning(conn.not_running(&self.inner.name));
        let mut route = conn.open_request().map_err(|_| not_running())?;
        let reply = match conn.send(route.id, ToRuntime::Metrics) {
            Ok(()) => route.events.recv().await,
            Err(_) => None,
        };
        conn.close_request(route.id);
        let Some(FromRuntime::Metrics(now)) = reply else {
            return Err(not_running());
        };
        let mut last = self
            .inner
            .last_metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let metrics = SandboxMetrics::from_host(&now, last.as_ref());
        *last = Some(now);
        Ok(metrics)
    }

    /// The guest filesystem.
    pub fn fs(&self) -> SandboxFs {
        SandboxFs::new(
            self.inner.conn.clone(),
            &self.inner.name,
            self.inner.workdir.as_deref(),
            self.inner.transfer.clone(),
        )
    }

    /// Asks the guest to shut down (processes get SIGTERM, then SIGKILL after a
    /// grace period) and returns without waiting. Stopping a stopped sandbox is a no-op.
    pub async fn stop(&self) {
        self.send_control(ToRuntime::Stop {
            grace_ms: STOP_GRACE_MS,
        })
        .await;
    }

    /// Stops the sandbox and waits until its VM and runtime processes are gone;
    /// returns how the VM ended (for a sandbox already stopped, how it did).
    pub async fn stop_and_wait(&self) -> Result<Lifecycle, StopError> {
        self.stop().await;
        self.wait_for_exit().await
    }

    /// Kills the VM at once and waits until it and the runtime are gone.
    pub async fn kill(&self) -> Result<(), StopError> {
        self.send_control(ToRuntime::Kill).await;
        self.wait_for_exit().await.map(drop)
    }

    async fn send_control(&self, msg: ToRuntime) {
        if let Ok(route) = self.inner.conn.open_request() {
            let _ = self.inner.conn.send(route.id, msg);
            // The reply is the lifecycle change; the route is not needed.
            self.inner.conn.close_request(route.id);
        }
    }

    async fn wait_for_exit(&self) -> Result<Lifecycle, StopError> {
        let ended = self.inner.conn.wait_not_running().await;
        match &self.inner.origin {
            Origin::Attached { run } => {
                lifecycle::wait_runtime_gone(run).await;
                Ok(ended)
            }
            Origin::Created { ended: watcher } => {
                let mut watcher = watcher.clone();
                let failed = match watcher.wait_for(Option::is_some).await {
                    Ok(outcome) => outcome.as_ref().and_then(|r| r.clone().err()),
                    // The watcher is gone with the async runtime, which happens
                    // only as the process ends.
                    Err(_) => None,
                };
                match failed {
                    Some(message) => Err(StopError::Wait(std::io::Error::other(message))),
                    None => Ok(ended),
                }
            }
        }
    }
}

/// What the creator's side does once a sandbox's runtime has exited, whoever
/// stopped it and whether or not a handle waits: a detached sandbox loses its
/// transfer directory (record and logs stay until `remove`); another loses its
/// record and image use, and its directory (only the transfer directory, for a
/// name the caller chose: the logs stay for the post-mortem).
struct AfterExit {
    name: String,
    dir: PathBuf,
    keep_dir: bool,
    detached: bool,
    images: Images,
    state_db: PathBuf,
}

impl AfterExit {
    async fn run(self) {
        // The runtime held the name lock until it exited. If someone holds it
        // now, a new sandbox of this name has started meanwhile (a `create`,
        // a `start`) and the record and directory are its own.
        let Ok(_lock) = launch::lock_name(&self.dir, &self.name) else {
            return;
        };
        let transfer = self.dir.join(launch::TRANSFER_DIR);
        if self.detached {
            let _ = fs::remove_dir_all(&transfer);
            return;
        }
        let _ = self.images.untrack_sandbox(&self.name).await;
        let name = self.name.clone();
        let _ = lifecycle::with_state(self.state_db, move |state| state.remove_run(&name)).await;
        let _ = fs::remove_dir_all(if self.keep_dir { &transfer } else { &self.dir });
    }
}

/// Waits for the runtime in a task of its own, then cleans up after it, so
/// that a sandbox stopped without waiting (`stop`), or whose VM ended by
/// itself, leaves nothing behind. The task holds no connection to the runtime:
/// dropping every handle still closes it, which stops the VM.
fn watch_runtime(
    mut runtime: Child,
    after: AfterExit,
) -> watch::Receiver<Option<Result<(), String>>> {
    let (tell, ended) = watch::channel(None);
    tokio::spawn(async move {
        let waited = runtime.wait().await;
        if waited.is_ok() {
            after.run().await;
        }
        let _ = tell.send(Some(waited.map(drop).map_err(|err| err.to_string())));
    });
    ended
}
