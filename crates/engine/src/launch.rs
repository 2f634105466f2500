//! Starting a sandbox, step by step: validate and resolve ([`Launch::prepare`],
//! no side effects but an image pull), claim the name ([`Launch::claim`]),
//! start the runtime and boot ([`Claimed::boot`]). `Sandbox::create` drives the
//! steps and then applies scripts and patches ([`apply_patches`]).
//!
//! Cleanup: from the moment the name lock is held, a [`Cleanup`] guard owns
//! what the launch created on disk. Whatever way a later step fails (an error
//! returned with `?` included), dropping the guard removes the sandbox
//! directory, or only its transfer directory for a sandbox the caller named
//! (its logs are kept for the post-mortem). A failure before the lock removes
//! nothing: the directory may belong to a running sandbox of the same name.
//! Only the boot's success disarms the guard. Steps that must await (waiting
//! for the runtime to exit, forgetting the sandbox in the state database) are
//! done explicitly on the boot's failure path, before the guard drops.
//!
//! Process model: the runtime is a child of the caller's process in a process
//! group of its own (terminal signals aimed at the caller do not reach the VM).
//! Its stdin is one end of a socket pair whose other end only this engine
//! holds: when the caller's process dies for any reason, the kernel closes
//! that end, the runtime sees end-of-file and kills the VM. That is the whole
//! no-orphan rule.

use std::fs::{self, File};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use command_fds::{CommandFdExt, FdMapping};
use msb_control::vm::{
    BackendChoice, NetDevice, RootDevice, VmSpec, ROOT_SHARE_TAG, TRANSFER_SHARE_TAG,
};
use msb_control::{
    files, BootInfo, BootSpec, FromRuntime, LifecycleSpec, RuntimeFailureKind, ToRuntime, LOCK_FD,
};
use msb_oci::RuntimeConfig;
use msb_protocol::{GuestInit, RootSpec, User};
use tokio::process::Child;

use crate::conn::RuntimeConn;
use crate::error::{CreateError, FsError, InvalidOption};
use crate::fs::{SandboxFs, WriteOptions};
use crate::images::{Images, Progress};
use crate::initramfs;
use crate::lifecycle::{self, HandleInfo};
use crate::options::network::{guest_mac, Network};
use crate::options::patch::{self, Patch, SCRIPTS_DIR};
use crate::options::sandbox::{self, ImageSource, SandboxConfig, SandboxOptions};
use crate::settings::EngineSettings;
use crate::volumes;

/// The transfer share's directory inside the sandbox directory.
pub(crate) const TRANSFER_DIR: &str = "transfer";

/// Boot deadline under emulation, from VM launch to the agent's `Ready`.
const BOOT_TIMEOUT_MS: u64 = 60_000;

/// A validated sandbox whose image is resolved; nothing is claimed yet.
pub(crate) struct Launch<'a> {
    settings: &'a EngineSettings,
    config: SandboxConfig,
    images: Images,
    image: ResolvedImage,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    default_user: Option<User>,
    /// The options as given, for the run record (`Sandbox::start`).
    stored: SandboxOptions,
    kind: LaunchKind,
}

/// What a launch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaunchKind {
    /// `Sandbox::create`.
    Create,
    /// `Sandbox::start`: boots an existing stopped sandbox again, whose record
    /// it may replace.
    Restart,
    /// `Sandbox::prewarm`: a sandbox for its creator's warm pool, recorded as
    /// pooled (unlisted, not found by name) until the creator claims it.
    Pooled,
}

/// A launch that holds the sandbox's name: its directory exists and the lock
/// is taken. Dropping it removes what it created (see the module doc).
pub(crate) struct Claimed<'a> {
    launch: Launch<'a>,
    network: Network,
    dir: PathBuf,
    lock: File,
    cleanup: Cleanup,
}

/// A booted sandbox's parts, for `Sandbox` to own.
pub(crate) struct Booted {
    pub name: String,
    pub workdir: Option<String>,
    pub default_user: Option<User>,
    pub images: Images,
    pub transfer: PathBuf,
    pub dir: PathBuf,
    pub keep_dir: bool,
    pub detached: bool,
    pub boot: BootInfo,
    pub conn: Arc<RuntimeConn>,
    pub runtime: Child,
    /// Scripts first, then the caller's patches.
    pub patches: Vec<Patch>,
}

impl<'a> Launch<'a> {
    /// Validates the options, checks the assets and resolves (pulls) the image.
    pub async fn prepare(
        settings: &'a EngineSettings,
        options: SandboxOptions,
        progress: Option<Progress>,
    ) -> Result<Launch<'a>, CreateError> {
        let stored = options.clone();
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
        let env = sandbox::environment(&image.config.env, &config.env);
        let workdir = config.workdir.clone().or_else(|| {
            image
                .config
                .working_dir
                .clone()
                .filter(|w| w.starts_with('/'))
        });
        let default_user = image.config.user.as_deref().and_then(parse_image_user);
        Ok(Launch {
            settings,
            config,
            images,
            image,
            env,
            workdir,
            default_user,
            stored,
            kind: LaunchKind::Create,
        })
    }

    /// Marks what this launch is for (a new launch is a `Create`).
    pub fn for_kind(mut self, kind: LaunchKind) -> Self {
        self.kind = kind;
        self
    }

    /// Creates the sandbox directory and takes the name lock.
    pub fn claim(self) -> Result<Claimed<'a>, CreateError> {
        let dir = self.settings.sandbox_dir(&self.config.name);
        // The network options are checked before anything is created.
        let network = self.config.network.build(&self.config.ports, &dir)?;
        let socket = self.settings.control_socket(&self.config.name);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(InvalidOption::new(
                "name",
                format!(
                    "the sandbox's control socket {} would be longer than the {MAX_SOCKET_PATH} \
                     bytes a Unix socket path may have: use a shorter name or MSB_HOME",
                    socket.display()
                ),
            )
            .into());
        }
        create_private_dir(&self.settings.run_dir())
            .map_err(io_error("create the control socket directory"))?;
        fs::create_dir_all(&dir).map_err(io_error("create the sandbox directory"))?;
        let lock = lock_name(&dir, &self.config.name)?;
        let cleanup = Cleanup {
            remove: if self.config.named {
                dir.join(TRANSFER_DIR)
            } else {
                dir.clone()
            },
            armed: true,
        };
        Ok(Claimed {
            launch: self,
            network,
            dir,
            lock,
            cleanup,
        })
    }
}

impl Claimed<'_> {
    /// Writes the initramfs, starts the runtime and boots the VM. On failure
    /// the runtime has exited and the sandbox is forgotten.
    pub async fn boot(self) -> Result<Booted, CreateError> {
        let Claimed {
            launch,
            network,
            dir,
            lock,
            mut cleanup,
        } = self;
        let settings = launch.settings;
        let mut config = launch.config;
        let secrets = std::mem::take(&mut config.secrets);
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
        if launch.kind != LaunchKind::Restart {
            refuse_stopped_detached(settings, &config.name).await?;
        }
        let storage = volumes::claim(
            settings,
            &config.name,
            &dir,
            &config.mounts,
            config.persistent_root.as_ref(),
        )
        .await?;
        let images = launch.images;
        images
            .track_sandbox(&config.name, launch.image.manifest.clone(), &dir)
            .await?;
        let socket = settings.control_socket(&config.name);
        let handle = HandleInfo {
            workdir: launch.workdir.clone(),
            default_user: launch.default_user.clone(),
            dir: dir.clone(),
            socket: socket.clone(),
            secret_names: secrets.secrets.iter().map(|s| s.name.clone()).collect(),
            options: Some(launch.stored),
        };
        record_start(settings, &config, handle, launch.kind).await?;
        let (mut runtime, conn) = match spawn_runtime(settings, &dir, lock, config.detached) {
            Ok(spawned) => spawned,
            Err(err) => {
                // Nothing will ever update the record just made: forget it.
                let _ = images.untrack_sandbox(&config.name).await;
                let name = config.name.clone();
                let _ = lifecycle::with_state(settings.state_db(), move |state| {
                    state.remove_run(&name)
                })
                .await;
                return Err(err);
            }
        };

        let root = launch.image.root;
        let spec = BootSpec {
            vm: VmSpec {
                backend: BackendChoice::Auto,
                kernel: settings.kernel.clone(),
                initramfs,
                cpus: config.cpus,
                memory_mib: config.memory_mib,
                root: root.clone(),
                transfer_share: Some(transfer.clone()),
                accel: settings.accel,
                kernel_args: guest_debug_args(settings.guest_debug),
                // Every sandbox's network goes through the policy-enforcing
                // stack; there is no other network device.
                net: Some(NetDevice::Stream { mac: guest_mac() }),
                storage: storage.devices,
            },
            guest: GuestInit {
                hostname: config.name.clone(),
                root: root_spec(&root),
                env: launch.env,
                workdir: launch.workdir.clone(),
                transfer_tag: Some(TRANSFER_SHARE_TAG.to_string()),
                network: Some(network.guest),
                // The runtime adds its CA when it intercepts TLS for secrets.
                ca_certificate: None,
                upper: storage.upper,
                mounts: storage.mounts,
                // Drawn by the runtime as it sends `Init`.
                entropy: Vec::new(),
                realtime_ns: 0,
            },
            sandbox_dir: dir.clone(),
            boot_timeout_ms: BOOT_TIMEOUT_MS,
            network: Some(network.stack),
            secrets: (!secrets.secrets.is_empty() || secrets.intercepts()).then_some(secrets),
            lifecycle: LifecycleSpec {
                name: config.name.clone(),
                detached: config.detached,
                socket,
                state_db: settings.state_db(),
                idle_timeout_ms: config.idle_timeout_ms,
                max_lifetime_ms: config.max_lifetime_ms,
                pooled: launch.kind == LaunchKind::Pooled,
            },
            snapshots: settings.snapshot_policy(),
        };
        match boot(&conn, spec).await {
            Ok(boot) => {
                cleanup.armed = false;
                let mut patches = config.scripts;
                patches.extend(config.patches);
                Ok(Booted {
                    name: config.name,
                    workdir: launch.workdir,
                    default_user: launch.default_user,
                    images,
                    transfer,
                    dir,
                    keep_dir: config.named || config.detached,
                    detached: config.detached,
                    boot,
                    conn,
                    runtime,
                    patches,
                })
            }
            Err(failure) => {
                let _ = runtime.wait().await;
                let _ = images.untrack_sandbox(&config.name).await;
                let name = config.name.clone();
                let _ = lifecycle::with_state(settings.state_db(), move |state| {
                    state.remove_run(&name)
                })
                .await;
                Err(match failure {
                    BootFailure::PortInUse(message) => CreateError::PortInUse { message },
                    BootFailure::MissingProgram(message) => CreateError::MissingProgram { message },
                    BootFailure::Reported {
                        reason,
                        console_tail,
                    } => CreateError::BootFailed {
                        name: config.name,
                        reason,
                        console_tail,
                    },
                    BootFailure::RuntimeDied => CreateError::BootFailed {
                        name: config.name,
                        reason: format!(
                            "the sandbox runtime exited: {}",
                            files::tail(&dir.join(files::RUNTIME_LOG), 2048).trim()
                        ),
                        console_tail: String::new(),
                    },
                })
            }
        }
    }
}

/// Removes what a launch created unless the launch succeeded.
struct Cleanup {
    /// The sandbox directory, or the transfer directory of a named sandbox.
    remove: PathBuf,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.remove);
        }
    }
}

/// Applies scripts and patches in order through the guest filesystem.
/// Returns the failing one's option name (`scripts.<name>` or
/// `patches[<i>]`) with the error.
pub(crate) async fn apply_patches(
    patches: &[Patch],
    fs: &SandboxFs,
) -> Result<(), (String, FsError)> {
    for (i, patch) in patches.iter().enumerate() {
        let result = match patch {
            Patch::Text {
                path,
                content,
                mode,
            } => fs
                .write(
                    path,
                    content,
                    WriteOptions {
                        mode: Some(mode.unwrap_or(0o644)),
                        append: false,
                        create_parents: true,
                    },
                )
                .await
                .map(drop),
            Patch::Mkdir { path, mode } => fs.mkdir(path, mode.unwrap_or(0o755), true).await,
            Patch::Append { path, content } => fs
                .write(
                    path,
                    content,
                    WriteOptions {
                        mode: None,
                        append: true,
                        create_parents: true,
                    },
                )
                .await
                .map(drop),
            Patch::Copy { host_path, path } => {
                let parent = patch::parent_of(path);
                match fs.mkdir(&parent, 0o755, true).await {
                    Ok(()) => fs.copy_from_host(host_path, path).await.map(drop),
                    Err(err) => Err(err),
                }
            }
        };
        result.map_err(|err| (patch_field(patches, i), err))?;
    }
    Ok(())
}

/// The option a failed patch came from: scripts come first in the list.
fn patch_field(patches: &[Patch], index: usize) -> String {
    let script_name = |p: &Patch| match p {
        Patch::Text { path, .. } => path
            .strip_prefix(SCRIPTS_DIR)
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
pub(crate) fn lock_name(dir: &Path, name: &str) -> Result<File, CreateError> {
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

/// Whether sandboxes can start here: the kernel, agent and runtime are
/// installed, and the runtime finds the VMM program it would launch (it is
/// asked, `msb-runtime --check`, so that only it knows how it finds QEMU).
/// Synchronous (two short-lived processes), for callers that ask before anything else.
pub(crate) fn check_installed(settings: &EngineSettings) -> Result<(), CreateError> {
    settings.check_assets()?;
    let output = std::process::Command::new(&settings.runtime)
        .arg("--check")
        .stdin(Stdio::null())
        .output()
        .map_err(io_error("run the sandbox runtime's check"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(CreateError::MissingProgram {
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// The longest path a Unix socket address holds (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Creates `dir` (and its parents) and makes it owner-only, whatever mode an
/// earlier version left it with.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// A detached sandbox keeps its name while stopped (until `remove`): a new
/// sandbox may not take it. (The caller holds the name lock, so no runtime of
/// that name is alive: any record of a detached one is a stopped or crashed run.)
/// Records of sandboxes that were not detached do not hold names.
async fn refuse_stopped_detached(settings: &EngineSettings, name: &str) -> Result<(), CreateError> {
    let key = name.to_string();
    let run = lifecycle::with_state(settings.state_db(), move |state| state.run(&key))
        .await
        .map_err(|err| CreateError::Io {
            what: "read the state database".into(),
            source: std::io::Error::other(err.to_string()),
        })?;
    match run {
        Some(run) if run.detached => Err(CreateError::SandboxStopped {
            name: name.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Inserts the run record (`starting`) that the runtime updates from then on.
async fn record_start(
    settings: &EngineSettings,
    config: &SandboxConfig,
    handle: HandleInfo,
    kind: LaunchKind,
) -> Result<(), CreateError> {
    let run = msb_state::SandboxRun {
        name: config.name.clone(),
        // A pooled sandbox is hidden from its first record on.
        status: match kind {
            LaunchKind::Pooled => msb_state::RunStatus::Pooled,
            LaunchKind::Create | LaunchKind::Restart => msb_state::RunStatus::Starting,
        },
        reason: None,
        image: match &config.image {
            ImageSource::Directory(path) | ImageSource::Disk(path) => path.display().to_string(),
            ImageSource::Reference(reference) => reference.clone(),
        },
        detached: config.detached,
        cpus: config.cpus as u32,
        memory_mib: config.memory_mib,
        created_at_ms: msb_state::now_ms(),
        stopped_at_ms: None,
        runtime_pid: None,
        runtime_start: None,
        handle_json: serde_json::to_string(&handle).expect("the handle info serializes"),
    };
    lifecycle::with_state(settings.state_db(), move |state| state.put_run(&run))
        .await
        .map_err(|err| CreateError::Io {
            what: "record the sandbox in the state database".into(),
            source: std::io::Error::other(err.to_string()),
        })
}

/// Starts the runtime. A detached one gets a session of its own (no
/// controlling terminal, no signals aimed at the caller's groups); an attached
/// one a process group of its own, so that a terminal's Ctrl-C reaches Node,
/// which decides, and not the VM.
fn spawn_runtime(
    settings: &EngineSettings,
    dir: &Path,
    lock: File,
    detached: bool,
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
        .kill_on_drop(false);
    if detached {
        // SAFETY: setsid is async-signal-safe and touches only the child's own
        // process state, as pre_exec requires.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    } else {
        command.process_group(0);
    }
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
                root: RootDevice::Share(image.image.rootfs),
                config: image.image.config,
                manifest: Some(image.image.manifest_digest),
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
            serial: ROOT_SHARE_TAG.to_string(),
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

/// The kernel argument that makes the agent log its boot phases, with times,
/// to the console log (`msb.debug`, the only switch the agent obeys).
fn guest_debug_args(guest_debug: bool) -> Vec<String> {
    if guest_debug {
        vec!["msb.debug".to_string()]
    } else {
        vec![]
    }
}

enum BootFailure {
    PortInUse(String),
    /// The host lacks the VMM program; the message names it and its package.
    MissingProgram(String),
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
        Some(FromRuntime::Failed(failure))
            if failure.kind == RuntimeFailureKind::MissingProgram =>
        {
            Err(BootFailure::MissingProgram(failure.message))
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
