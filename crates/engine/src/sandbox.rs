//! A sandbox's lifecycle from the engine's side: validate, lock the name, start
//! the runtime process, boot, serve execs, stop.
//!
//! Process model: the runtime is a child of the caller's process in a process
//! group of its own (terminal signals aimed at the caller do not reach the VM).
//! Its stdin is one end of a socket pair whose other end only this engine holds:
//! when the caller's process dies for any reason, the kernel closes that end, the
//! runtime sees end-of-file and kills the VM. That is the whole no-orphan rule.

use std::fs::{self, File};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use command_fds::{CommandFdExt, FdMapping};
use msb_oci::RuntimeConfig;
use msb_protocol::GuestNetwork;
use msb_protocol::User;
use msb_protocol::{GuestInit, RootSpec};
use msb_runtime::control::{
    files, BootInfo, BootSpec, FromRuntime, RuntimeFailureKind, ToRuntime, LOCK_FD,
};
use msb_vmm::{AccelChoice, NetDevice, RootDevice, VmSpec, ROOT_SHARE_TAG, TRANSFER_SHARE_TAG};
use tokio::process::Child;
use tokio::sync::Mutex;

use crate::config::{self, ImageSource, SandboxConfig, SandboxOptions};
use crate::conn::{Lifecycle, RuntimeConn};
use crate::error::{CreateError, ExecError, InvalidOption, StopError};
use crate::exec::{self, ExecControl, ExecEvents, ExecOptions, ExecOutput};
use crate::fs::SandboxFs;
use crate::images::{Images, Progress};
use crate::paths::EngineSettings;
use crate::{initramfs, network, patch};

/// The transfer share's directory inside the sandbox directory.
const TRANSFER_DIR: &str = "transfer";

/// Boot deadline under emulation, from VM launch to the agent's `Ready`.
const BOOT_TIMEOUT_MS: u64 = 60_000;
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
    /// Boots a sandbox. `progress` hears about an image pull, if there is one.
    pub async fn create(
        settings: &EngineSettings,
        options: SandboxOptions,
        progress: Option<Progress>,
    ) -> Result<Sandbox, CreateError> {
        let config = options.validate()?;
        settings.check_assets()?;
        let images = Images::new(settings);
        let image = resolve_image(&images, &config, &settings.home, progress).await?;
        if let RootDevice::Share(root) = &image.root {
            // Scripts live under /.msb, which images do not have; only the
            // caller's patches can collide with the image.
            patch::validate(&config.patches, root, "patches")?;
        } else {
            // A disk image cannot be inspected from the host: syntax only.
            patch::validate(&config.patches, Path::new("/nonexistent"), "patches")?;
        }
        let env = config::environment(&image.config.env, &config.env);
        let workdir = config.workdir.clone().or_else(|| {
            image
                .config
                .working_dir
                .clone()
                .filter(|w| w.starts_with('/'))
        });
        let default_user = image.config.user.as_deref().and_then(parse_image_user);

        let dir = settings.sandbox_dir(&config.name);
        let (net_device, network_config, guest_network) = network_setup(&config, &dir)?;
        fs::create_dir_all(&dir).map_err(io_error("create the sandbox directory"))?;
        let lock = lock_name(&dir, &config.name)?;
        let initramfs = {
            let agent = settings.agent.clone();
            let cache = settings.initramfs_cache();
            tokio::task::spawn_blocking(move || initramfs::ensure(&agent, &cache))
                .await
                .map_err(|e| io_error("write the initramfs")(std::io::Error::other(e)))?
                .map_err(io_error("write the initramfs"))?
        };
        // Emptied at every start: a crashed caller may have left staged files.
        let transfer = dir.join(TRANSFER_DIR);
        let _ = fs::remove_dir_all(&transfer);
        fs::create_dir_all(&transfer).map_err(io_error("create the transfer directory"))?;
        let (mut runtime, conn) = spawn_runtime(settings, &dir, lock)?;
        images
            .track_sandbox(&config.name, image.manifest.clone(), &dir)
            .await?;

        let spec = BootSpec {
            vm: VmSpec {
                kernel: settings.kernel.clone(),
                initramfs,
                cpus: config.cpus,
                memory_mib: config.memory_mib,
                root: image.root.clone(),
                transfer_share: Some(transfer.clone()),
                accel: accel_choice(),
                kernel_args: guest_debug_args(),
                net: net_device,
            },
            guest: GuestInit {
                hostname: config.name.clone(),
                root: root_spec(&image.root),
                env,
                workdir: workdir.clone(),
                transfer_tag: Some(TRANSFER_SHARE_TAG.to_string()),
                network: guest_network,
            },
            sandbox_dir: dir.clone(),
            boot_timeout_ms: BOOT_TIMEOUT_MS,
            network: network_config,
        };
        match boot(&conn, spec).await {
            Ok(boot) => {
                let sandbox = Sandbox {
                    inner: Arc::new(Inner {
                        name: config.name,
                        workdir,
                        default_user,
                        transfer: Arc::new(transfer),
                        dir,
                        keep_dir: config.named,
                        boot,
                        conn,
                        runtime: Mutex::new(Some(runtime)),
                        images,
                    }),
                };
                let mut patches = config.scripts;
                patches.extend(config.patches);
                sandbox.apply_patches(&patches).await?;
                Ok(sandbox)
            }
            Err(failure) => {
                let _ = runtime.wait().await;
                let _ = images.untrack_sandbox(&config.name).await;
                let (reason, console_tail) = match failure {
                    BootFailure::PortInUse(message) => {
                        let _ = fs::remove_dir_all(if config.named { &transfer } else { &dir });
                        return Err(CreateError::PortInUse { message });
                    }
                    BootFailure::Reported {
                        reason,
                        console_tail,
                    } => (reason, console_tail),
                    BootFailure::RuntimeDied => (
                        format!(
                            "the sandbox runtime exited: {}",
                            tail_of_file(&dir.join(files::RUNTIME_LOG)).trim()
                        ),
                        String::new(),
                    ),
                };
                let _ = fs::remove_dir_all(if config.named { &transfer } else { &dir });
                Err(CreateError::BootFailed {
                    name: config.name,
                    reason,
                    console_tail,
                })
            }
        }
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

    /// Applies scripts and patches; on failure the sandbox is killed.
    async fn apply_patches(&self, patches: &[patch::Patch]) -> Result<(), CreateError> {
        let Err((index, source)) = patch::apply(patches, &self.fs()).await else {
            return Ok(());
        };
        let _ = self.kill().await;
        Err(CreateError::PatchFailed {
            field: patch_field(patches, index),
            source,
        })
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

/// The option a failed patch came from: scripts come first in the list.
fn patch_field(patches: &[patch::Patch], index: usize) -> String {
    let script_name = |p: &patch::Patch| match p {
        patch::Patch::Text { path, .. } => path
            .strip_prefix(patch::SCRIPTS_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_string),
        _ => None,
    };
    let scripts = patches
        .iter()
        .take_while(|p| script_name(p).is_some())
        .count();
    match script_name(&patches[index]) {
        Some(name) if index < scripts => format!("scripts.{name}"),
        _ => format!("patches[{}]", index - scripts),
    }
}

/// Takes the sandbox's name lock: an open file with an exclusive `flock`, which
/// the runtime inherits and holds for as long as it lives.
fn lock_name(dir: &Path, name: &str) -> Result<File, CreateError> {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(files::LOCK))
        .map_err(io_error("open the sandbox lock"))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(CreateError::SandboxExists {
            name: name.to_string(),
        }),
        Err(fs::TryLockError::Error(err)) => Err(io_error("lock the sandbox")(err)),
    }
}

fn spawn_runtime(
    settings: &EngineSettings,
    dir: &Path,
    lock: File,
) -> Result<(Child, Arc<RuntimeConn>), CreateError> {
    let (ours, theirs) = StdUnixStream::pair().map_err(io_error("create the runtime socket"))?;
    ours.set_nonblocking(true)
        .map_err(io_error("create the runtime socket"))?;
    let log =
        File::create(dir.join(files::RUNTIME_LOG)).map_err(io_error("create the runtime log"))?;
    let mut command = tokio::process::Command::new(&settings.runtime);
    command
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false);
    command
        .fd_mappings(vec![FdMapping {
            parent_fd: lock.into(),
            child_fd: LOCK_FD,
        }])
        .expect("a single mapping cannot collide");
    let child = command
        .spawn()
        .map_err(io_error("start the sandbox runtime"))?;
    // Release the parent's copies of the runtime's socket end and of the lock.
    drop(command);
    let ours = tokio::net::UnixStream::from_std(ours).map_err(io_error("runtime socket"))?;
    Ok((child, RuntimeConn::start(ours)))
}

/// The VM's network device, the host stack's config and the guest's settings.
/// Every sandbox's network goes through the policy-enforcing stack; there is
/// no other network device.
fn network_setup(config: &SandboxConfig, dir: &Path) -> Result<NetworkSetup, CreateError> {
    let mac = network::guest_mac();
    let built = config.network.build(&config.ports, dir)?;
    Ok((
        Some(NetDevice::Stream { mac }),
        Some(built.stack),
        Some(built.guest),
    ))
}

type NetworkSetup = (
    Option<NetDevice>,
    Option<msb_netstack::NetConfig>,
    Option<GuestNetwork>,
);

/// The root filesystem of a sandbox, wherever it came from.
struct ResolvedImage {
    root: RootDevice,
    config: RuntimeConfig,
    /// The OCI manifest digest, for images from a registry.
    manifest: Option<String>,
}

/// A directory image is shared with the guest read-only, so every file in it
/// is readable there: the host's root (its `/etc/shadow`, keys, other
/// sandboxes' state) and any directory holding the state home are refused.
fn refuse_sensitive_root(dir: &Path, home: &Path) -> Result<(), CreateError> {
    let refuse = |why: &str| {
        CreateError::InvalidOption(InvalidOption::new(
            "image",
            format!("{} {why}", dir.display()),
        ))
    };
    let dir = dir.canonicalize().map_err(|_| CreateError::ImageNotFound {
        path: dir.to_path_buf(),
    })?;
    if dir == Path::new("/") {
        return Err(refuse("is the host's root directory"));
    }
    let home = home.canonicalize().unwrap_or_else(|_| home.to_path_buf());
    if home.starts_with(&dir) {
        return Err(refuse("contains the microsandbox state directory"));
    }
    Ok(())
}

async fn resolve_image(
    images: &Images,
    config: &SandboxConfig,
    home: &Path,
    progress: Option<Progress>,
) -> Result<ResolvedImage, CreateError> {
    match &config.image {
        ImageSource::Directory(dir) if dir.is_dir() => {
            refuse_sensitive_root(dir, home)?;
            Ok(ResolvedImage {
                root: RootDevice::Share(dir.clone()),
                config: RuntimeConfig::default(),
                manifest: None,
            })
        }
        ImageSource::Directory(dir) => Err(CreateError::ImageNotFound { path: dir.clone() }),
        ImageSource::Disk(file) => Ok(ResolvedImage {
            root: RootDevice::Disk(file.clone()),
            config: RuntimeConfig::default(),
            manifest: None,
        }),
        ImageSource::Reference(reference) => {
            let progress = progress.unwrap_or_else(|| Arc::new(|_| {}));
            let image = images
                .ensure(reference, &config.registry, config.pull_policy, progress)
                .await?;
            Ok(ResolvedImage {
                root: RootDevice::Share(image.rootfs),
                config: image.config,
                manifest: Some(image.manifest_digest),
            })
        }
    }
}

fn root_spec(root: &RootDevice) -> RootSpec {
    match root {
        RootDevice::Share(_) => RootSpec::Virtio9p {
            tag: ROOT_SHARE_TAG.to_string(),
        },
        RootDevice::Disk(_) => RootSpec::Block {
            device: "/dev/vda".into(),
            fstype: "ext4".into(),
        },
    }
}

/// The image's `User` (`name`, `uid`, `name:group`, `uid:gid`) as the default
/// user of execs. The group part is not used: the user's own groups apply.
fn parse_image_user(user: &str) -> Option<User> {
    let name = user.split(':').next().unwrap_or("");
    match name {
        "" => None,
        name => Some(match name.parse::<u32>() {
            Ok(uid) => User::Id(uid),
            Err(_) => User::Name(name.to_string()),
        }),
    }
}

/// `MSB_ACCEL=kvm|tcg` forces an accelerator; anything else lets the probe decide.
fn accel_choice() -> AccelChoice {
    match std::env::var("MSB_ACCEL").as_deref() {
        Ok("kvm") => AccelChoice::Kvm,
        Ok("tcg") => AccelChoice::Tcg,
        _ => AccelChoice::Auto,
    }
}

/// `MSB_GUEST_DEBUG=1` makes the agent log its boot phases, with times, to the console log.
fn guest_debug_args() -> Vec<String> {
    match std::env::var("MSB_GUEST_DEBUG").as_deref() {
        Ok("1") => vec!["msb.debug".to_string()],
        _ => vec![],
    }
}

enum BootFailure {
    PortInUse(String),
    Reported {
        reason: String,
        console_tail: String,
    },
    RuntimeDied,
}

async fn boot(conn: &RuntimeConn, spec: BootSpec) -> Result<BootInfo, BootFailure> {
    let mut route = conn.open_request().map_err(|_| BootFailure::RuntimeDied)?;
    let reply = match conn.send(route.id, ToRuntime::Boot(Box::new(spec))) {
        Ok(()) => route.events.recv().await,
        Err(_) => None,
    };
    conn.close_request(route.id);
    match reply {
        Some(FromRuntime::Booted(info)) => Ok(info),
        Some(FromRuntime::Failed(failure)) if failure.kind == RuntimeFailureKind::PortInUse => {
            Err(BootFailure::PortInUse(failure.message))
        }
        Some(FromRuntime::Failed(failure)) => {
            let reason = match failure.kind {
                RuntimeFailureKind::Launch => format!("cannot launch the VM: {}", failure.message),
                _ => failure.message,
            };
            Err(BootFailure::Reported {
                reason,
                console_tail: failure.console_tail,
            })
        }
        _ => Err(BootFailure::RuntimeDied),
    }
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> CreateError {
    move |source| CreateError::Io {
        what: what.to_string(),
        source,
    }
}

fn tail_of_file(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(2048);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
