//! A sandbox from the engine's side: created by [`Sandbox::create`] (the
//! steps are in [`crate::launch`]), then serving execs and the guest
//! filesystem until it is stopped or its VM ends.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use msb_control::{BootInfo, ToRuntime};
use msb_protocol::User;
use tokio::process::Child;
use tokio::sync::Mutex;

use crate::conn::{Lifecycle, RuntimeConn};
use crate::error::{CreateError, ExecError, StopError};
use crate::exec::{self, ExecControl, ExecEvents, ExecOutput};
use crate::fs::SandboxFs;
use crate::images::{Images, Progress};
use crate::launch::{self, Launch};
use crate::options::exec::ExecOptions;
use crate::options::sandbox::SandboxOptions;
use crate::settings::EngineSettings;

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
    images: Images,
    /// Host side of the read-only share for bulk transfers into the guest.
    transfer: Arc<PathBuf>,
    dir: PathBuf,
    /// Directories of sandboxes the caller did not name are removed after stop.
    keep_dir: bool,
    boot: BootInfo,
    conn: Arc<RuntimeConn>,
    runtime: Mutex<Option<Child>>,
}

impl Sandbox {
    /// Boots a sandbox, then applies its scripts and patches (on failure the
    /// sandbox is killed). `progress` hears about an image pull, if there is one.
    pub async fn create(
        settings: &EngineSettings,
        options: SandboxOptions,
        progress: Option<Progress>,
    ) -> Result<Sandbox, CreateError> {
        let booted = Launch::prepare(settings, options, progress)
            .await?
            .claim()?
            .boot()
            .await?;
        let patches = booted.patches;
        let sandbox = Sandbox {
            inner: Arc::new(Inner {
                name: booted.name,
                workdir: booted.workdir,
                default_user: booted.default_user,
                images: booted.images,
                transfer: Arc::new(booted.transfer),
                dir: booted.dir,
                keep_dir: booted.keep_dir,
                boot: booted.boot,
                conn: booted.conn,
                runtime: Mutex::new(Some(booted.runtime)),
            }),
        };
        if let Err((field, source)) = launch::apply_patches(&patches, &sandbox.fs()).await {
            let _ = sandbox.kill().await;
            return Err(CreateError::PatchFailed { field, source });
        }
        Ok(sandbox)
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

    /// Stops the sandbox and waits until its VM and runtime processes are gone.
    pub async fn stop_and_wait(&self) -> Result<(), StopError> {
        self.stop().await;
        self.wait_for_exit().await
    }

    /// Kills the VM at once and waits until it and the runtime are gone.
    pub async fn kill(&self) -> Result<(), StopError> {
        self.send_control(ToRuntime::Kill).await;
        self.wait_for_exit().await
    }

    async fn send_control(&self, msg: ToRuntime) {
        if let Ok(route) = self.inner.conn.open_request() {
            let _ = self.inner.conn.send(route.id, msg);
            // The reply is the lifecycle change; the route is not needed.
            self.inner.conn.close_request(route.id);
        }
    }

    async fn wait_for_exit(&self) -> Result<(), StopError> {
        self.inner.conn.wait_not_running().await;
        let mut runtime = self.inner.runtime.lock().await;
        if let Some(mut child) = runtime.take() {
            child.wait().await.map_err(StopError::Wait)?;
            let _ = self.inner.images.untrack_sandbox(&self.inner.name).await;
            if self.inner.keep_dir {
                let _ = fs::remove_dir_all(&*self.inner.transfer);
            } else {
                let _ = fs::remove_dir_all(&self.inner.dir);
            }
        }
        Ok(())
    }
}
