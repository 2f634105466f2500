//! Node.js binding: thin `#[napi]` wrappers over `msb-engine`. Conversions and
//! error codes only; every rule lives in the engine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use msb_engine::{
    CancellationToken, CopyToHostOptions, CreateError, Credentials, DirEntry, EngineSettings,
    ExecControl, ExecEvent, ExecEvents, ExecOptions, FileKind, FileReader, FileStat, FileWriter,
    HasCode, ImageInfo, Images, InvalidOption, NetworkOptions, Patch, PortOption, Progress,
    PullEvent, RegistryOptions, RuleOptions, Sandbox, SandboxFs, SandboxOptions as EngineOptions,
    StdinSource, TtySize, User, WriteOptions, DEFAULT_MAX_LIST_ENTRIES,
};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tokio::sync::Mutex;

/// An engine error as data. Async calls resolve to `T | NativeFailure` rather
/// than rejecting, because a rejection from napi carries only a Node-API status
/// as its code; the TypeScript layer turns a failure into a typed error class.
#[napi(object)]
pub struct NativeError {
    /// Stable code, e.g. `INVALID_OPTION`.
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    pub errno: Option<i32>,
    pub path: Option<String>,
    pub console_tail: Option<String>,
    /// Output collected before the call failed (`LIMIT_EXCEEDED` of an exec).
    pub stdout: Option<Buffer>,
    pub stderr: Option<Buffer>,
}

#[napi(object)]
pub struct NativeFailure {
    pub failure: NativeError,
}

fn failure<E: HasCode + std::error::Error>(err: E) -> NativeFailure {
    let details = err.details();
    NativeFailure {
        failure: NativeError {
            code: err.code().as_str().to_string(),
            message: with_causes(&err),
            field: details.field,
            errno: details.errno,
            path: details.path,
            console_tail: details.console_tail,
            stdout: details.stdout.map(Buffer::from),
            stderr: details.stderr.map(Buffer::from),
        },
    }
}

/// The message followed by each cause's, as one line a person can act on.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn outcome<T, E: HasCode + std::error::Error>(
    result: std::result::Result<T, E>,
) -> Either<T, NativeFailure> {
    match result {
        Ok(value) => Either::A(value),
        Err(err) => Either::B(failure(err)),
    }
}

fn done<E: HasCode + std::error::Error>(
    result: std::result::Result<(), E>,
) -> Option<NativeFailure> {
    result.err().map(failure)
}

#[napi(object)]
pub struct EngineConfig {
    /// Directory holding vmlinux, msb-agent and msb-runtime.
    pub assets_dir: String,
}

#[napi(object)]
pub struct NativePatch {
    /// "text", "mkdir", "append" or "copy".
    pub kind: Option<String>,
    pub path: String,
    pub content: Option<Buffer>,
    pub mode: Option<u32>,
    pub host_path: Option<String>,
}

#[napi(object)]
pub struct SandboxOptions {
    pub name: Option<String>,
    pub image: String,
    pub cpus: Option<f64>,
    pub memory_mib: Option<f64>,
    pub env: Option<HashMap<String, String>>,
    pub workdir: Option<String>,
    pub scripts: Option<HashMap<String, String>>,
    pub patches: Option<Vec<NativePatch>>,
    /// "always", "if-missing" or "never".
    pub pull_policy: Option<String>,
    pub registry: Option<NativeRegistryOptions>,
    pub network: Option<NativeNetworkOptions>,
    /// Host port (as an object key) to guest port.
    pub ports: Option<HashMap<String, f64>>,
}

#[napi(object)]
pub struct NativeRule {
    pub action: String,
    pub cidr: Option<String>,
    pub ports: Option<String>,
    pub protocol: Option<String>,
    pub domain: Option<String>,
    pub domain_suffix: Option<String>,
}

#[napi(object)]
pub struct NativeNetworkOptions {
    pub policy: Option<String>,
    pub rules: Option<Vec<NativeRule>>,
    pub block_domains: Option<Vec<String>>,
    pub block_domain_suffixes: Option<Vec<String>>,
    pub allow_domains: Option<Vec<String>>,
    pub hosts: Option<HashMap<String, Vec<String>>>,
    pub dns_servers: Option<Vec<String>>,
    pub max_flows: Option<f64>,
}

#[napi(object)]
pub struct NativePublishedPort {
    /// Where the host listens, e.g. `127.0.0.1:8080`.
    pub host: String,
    pub host_port: u32,
    pub guest_port: u32,
}

fn network_options(options: Option<NativeNetworkOptions>) -> NetworkOptions {
    let Some(o) = options else {
        return NetworkOptions::default();
    };
    let mut hosts: Vec<(String, Vec<String>)> = o.hosts.unwrap_or_default().into_iter().collect();
    hosts.sort();
    NetworkOptions {
        policy: o.policy,
        rules: o
            .rules
            .unwrap_or_default()
            .into_iter()
            .map(|r| RuleOptions {
                action: r.action,
                cidr: r.cidr,
                ports: r.ports,
                protocol: r.protocol,
                domain: r.domain,
                domain_suffix: r.domain_suffix,
            })
            .collect(),
        block_domains: o.block_domains.unwrap_or_default(),
        block_domain_suffixes: o.block_domain_suffixes.unwrap_or_default(),
        allow_domains: o.allow_domains.unwrap_or_default(),
        hosts,
        dns_servers: o.dns_servers,
        max_flows: o.max_flows,
    }
}

fn port_options(ports: Option<HashMap<String, f64>>) -> Vec<PortOption> {
    let mut pairs: Vec<PortOption> = ports
        .unwrap_or_default()
        .into_iter()
        // A key that is not a number fails the engine's port check, naming it.
        .map(|(host, guest)| (host.trim().parse::<f64>().unwrap_or(f64::NAN), guest))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    pairs
}

#[napi(object)]
pub struct NativeCredentials {
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

#[napi(object)]
pub struct NativeRegistryOptions {
    pub mirror: Option<String>,
    pub insecure: Option<Vec<String>>,
    pub ca_certificates: Option<Vec<String>>,
    pub auth: Option<HashMap<String, NativeCredentials>>,
    pub docker_config: Option<String>,
}

/// One progress event of an image pull.
#[napi(object)]
pub struct NativePullEvent {
    /// "resolved", "layer-cached", "layer-progress", "layer-done" or "done".
    pub kind: String,
    pub digest: Option<String>,
    pub downloaded: Option<f64>,
    pub size: Option<f64>,
    pub total_bytes: Option<f64>,
    pub layers: Option<Vec<NativeLayer>>,
}

#[napi(object)]
pub struct NativeLayer {
    pub digest: String,
    pub size: f64,
}

#[napi(object)]
pub struct NativeImageConfig {
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

#[napi(object)]
pub struct NativeImageInfo {
    pub reference: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub config: NativeImageConfig,
    pub layers: Vec<String>,
    pub size: f64,
    /// Seconds since the Unix epoch.
    pub pulled_at: f64,
}

#[napi(object)]
pub struct NativePruneReport {
    pub images: f64,
    pub layers: f64,
}

fn registry_options(options: Option<NativeRegistryOptions>) -> RegistryOptions {
    let Some(o) = options else {
        return RegistryOptions::default();
    };
    let credentials = o
        .auth
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(registry, c)| {
            let credentials = match (c.token, c.username, c.password) {
                (Some(token), _, _) => Credentials::Bearer { token },
                (None, Some(username), Some(password)) => Credentials::Basic { username, password },
                // The TypeScript layer rejects incomplete credentials.
                _ => return None,
            };
            Some((registry, credentials))
        })
        .collect();
    RegistryOptions {
        mirror: o.mirror,
        insecure: o.insecure.unwrap_or_default(),
        ca_certificates: o
            .ca_certificates
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        credentials,
        docker_config: o.docker_config.map(PathBuf::from),
    }
}

/// Forwards pull progress to a JavaScript callback without blocking the pull.
fn progress(
    callback: Option<ThreadsafeFunction<NativePullEvent, (), NativePullEvent, Status, false>>,
) -> Option<Progress> {
    let callback = Arc::new(callback?);
    Some(Arc::new(move |event: PullEvent| {
        callback.call(pull_event(event), ThreadsafeFunctionCallMode::NonBlocking);
    }))
}

fn pull_event(event: PullEvent) -> NativePullEvent {
    let empty = |kind: &str| NativePullEvent {
        kind: kind.into(),
        digest: None,
        downloaded: None,
        size: None,
        total_bytes: None,
        layers: None,
    };
    match event {
        PullEvent::Resolved {
            layers,
            total_bytes,
            manifest_digest,
        } => NativePullEvent {
            digest: Some(manifest_digest),
            total_bytes: Some(total_bytes as f64),
            layers: Some(
                layers
                    .into_iter()
                    .map(|(digest, size)| NativeLayer {
                        digest,
                        size: size as f64,
                    })
                    .collect(),
            ),
            ..empty("resolved")
        },
        PullEvent::LayerCached { digest, size } => NativePullEvent {
            digest: Some(digest),
            size: Some(size as f64),
            ..empty("layer-cached")
        },
        PullEvent::LayerProgress {
            digest,
            downloaded,
            size,
        } => NativePullEvent {
            digest: Some(digest),
            downloaded: Some(downloaded as f64),
            size: Some(size as f64),
            ..empty("layer-progress")
        },
        PullEvent::LayerDone { digest, size } => NativePullEvent {
            digest: Some(digest),
            size: Some(size as f64),
            ..empty("layer-done")
        },
        PullEvent::Done { manifest_digest } => NativePullEvent {
            digest: Some(manifest_digest),
            ..empty("done")
        },
    }
}

fn image_info(info: ImageInfo) -> NativeImageInfo {
    NativeImageInfo {
        reference: info.reference,
        manifest_digest: info.manifest_digest,
        config_digest: info.config_digest,
        config: NativeImageConfig {
            env: info.config.env,
            cmd: info.config.cmd,
            entrypoint: info.config.entrypoint,
            working_dir: info.config.working_dir,
            user: info.config.user,
        },
        layers: info.layers,
        size: info.size as f64,
        pulled_at: info.pulled_at as f64,
    }
}

fn images(engine: EngineConfig) -> Images {
    Images::new(&EngineSettings::from_env(&PathBuf::from(engine.assets_dir)))
}

#[napi]
pub async fn pull_image(
    reference: String,
    registry: Option<NativeRegistryOptions>,
    engine: EngineConfig,
    on_progress: Option<ThreadsafeFunction<NativePullEvent, (), NativePullEvent, Status, false>>,
) -> Either<NativeImageInfo, NativeFailure> {
    let progress = progress(on_progress).unwrap_or_else(|| Arc::new(|_| {}));
    let result = images(engine)
        .pull(&reference, &registry_options(registry), progress)
        .await;
    outcome(result.map(image_info))
}

#[napi]
pub async fn inspect_image(
    reference: String,
    registry: Option<NativeRegistryOptions>,
    engine: EngineConfig,
) -> Either<NativeImageInfo, NativeFailure> {
    let result = images(engine)
        .inspect(&reference, &registry_options(registry))
        .await;
    outcome(result.map(image_info))
}

#[napi]
pub async fn list_images(engine: EngineConfig) -> Either<Vec<NativeImageInfo>, NativeFailure> {
    outcome(
        images(engine)
            .list()
            .await
            .map(|list| list.into_iter().map(image_info).collect()),
    )
}

#[napi]
pub async fn remove_image(
    reference: String,
    registry: Option<NativeRegistryOptions>,
    engine: EngineConfig,
) -> Option<NativeFailure> {
    done(
        images(engine)
            .remove(&reference, &registry_options(registry))
            .await,
    )
}

#[napi]
pub async fn prune_images(engine: EngineConfig) -> Either<NativePruneReport, NativeFailure> {
    outcome(images(engine).prune().await.map(|r| NativePruneReport {
        images: r.images as f64,
        layers: r.layers as f64,
    }))
}

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

#[napi(object)]
pub struct NativeBootInfo {
    pub accel: String,
    pub vm_pid: u32,
    pub boot_ms: f64,
    pub agent_version: String,
    pub published_ports: Vec<NativePublishedPort>,
}

#[napi(object)]
pub struct NativeFileStat {
    /// "file", "dir", "symlink" or "other".
    pub kind: String,
    pub size: f64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ms: f64,
}

#[napi(object)]
pub struct NativeDirEntry {
    pub name: String,
    pub stat: NativeFileStat,
}

#[napi(object)]
pub struct NativeWriteOptions {
    pub mode: Option<u32>,
    pub append: Option<bool>,
    pub create_parents: Option<bool>,
}

fn env_pairs(env: Option<HashMap<String, String>>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = env.unwrap_or_default().into_iter().collect();
    // Object key order is lost in a HashMap; sort for a deterministic guest env.
    pairs.sort();
    pairs
}

fn to_patch(index: usize, patch: NativePatch) -> std::result::Result<Patch, InvalidOption> {
    let content = patch.content.map(|c| c.to_vec()).unwrap_or_default();
    Ok(match patch.kind.as_deref() {
        Some("text") => Patch::Text {
            path: patch.path,
            content,
            mode: patch.mode,
        },
        Some("mkdir") => Patch::Mkdir {
            path: patch.path,
            mode: patch.mode,
        },
        Some("append") => Patch::Append {
            path: patch.path,
            content,
        },
        Some("copy") => Patch::Copy {
            host_path: PathBuf::from(patch.host_path.unwrap_or_default()),
            path: patch.path,
        },
        other => {
            return Err(InvalidOption::new(
                format!("patches[{index}].kind"),
                format!("{other:?} is not one of \"text\", \"mkdir\", \"append\", \"copy\""),
            ))
        }
    })
}

fn exec_options(options: Option<NativeExecOptions>) -> ExecOptions {
    let Some(o) = options else {
        return ExecOptions::default();
    };
    let stdin = match (o.stdin_data, o.stdin_pipe) {
        (Some(data), _) => StdinSource::Bytes(data.to_vec()),
        (None, Some(true)) => StdinSource::Pipe,
        _ => StdinSource::Null,
    };
    ExecOptions {
        cwd: o.cwd,
        env: env_pairs(o.env),
        user: o.user.map(|u| match u {
            Either::A(name) => User::Name(name),
            Either::B(uid) => User::Id(uid),
        }),
        // The TypeScript layer passes positive finite numbers only.
        timeout: o
            .timeout_ms
            .map(|ms| Duration::from_micros((ms * 1000.0) as u64)),
        stdin,
        tty: o.tty.map(tty_size),
        // The TypeScript layer passes positive safe integers only.
        max_output_bytes: o.max_output_bytes.map(|bytes| bytes as u64),
    }
}

fn tty_size(size: NativeTtySize) -> TtySize {
    let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
    TtySize {
        cols: clamp(size.cols),
        rows: clamp(size.rows),
    }
}

fn file_stat(stat: FileStat) -> NativeFileStat {
    NativeFileStat {
        kind: match stat.kind {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
        .to_string(),
        size: stat.size as f64,
        mode: stat.mode,
        uid: stat.uid,
        gid: stat.gid,
        mtime_ms: stat.mtime_nanos as f64 / 1e6,
    }
}

#[napi]
pub struct NativeSandbox {
    inner: Sandbox,
}

#[napi]
pub async fn create_sandbox(
    options: SandboxOptions,
    engine: EngineConfig,
    on_progress: Option<ThreadsafeFunction<NativePullEvent, (), NativePullEvent, Status, false>>,
) -> Either<NativeSandbox, NativeFailure> {
    let settings = EngineSettings::from_env(&PathBuf::from(engine.assets_dir));
    let patches = options
        .patches
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, patch)| to_patch(index, patch))
        .collect::<std::result::Result<Vec<_>, _>>();
    let patches = match patches {
        Ok(patches) => patches,
        Err(invalid) => return Either::B(failure(CreateError::from(invalid))),
    };
    let options = EngineOptions {
        name: options.name,
        image: options.image,
        cpus: options.cpus,
        memory_mib: options.memory_mib,
        env: env_pairs(options.env),
        workdir: options.workdir,
        scripts: env_pairs(options.scripts),
        patches,
        pull_policy: options.pull_policy,
        registry: registry_options(options.registry),
        network: network_options(options.network),
        ports: port_options(options.ports),
    };
    outcome(
        Sandbox::create(&settings, options, progress(on_progress))
            .await
            .map(|inner| NativeSandbox { inner }),
    )
}

#[napi]
impl NativeSandbox {
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name().to_string()
    }

    #[napi(getter)]
    pub fn running(&self) -> bool {
        self.inner.is_running()
    }

    #[napi(getter)]
    pub fn boot_info(&self) -> NativeBootInfo {
        let info = self.inner.boot_info();
        NativeBootInfo {
            accel: format!("{:?}", info.accel).to_lowercase(),
            vm_pid: info.vm_pid,
            boot_ms: info.boot_ms as f64,
            agent_version: info.agent_version.clone(),
            published_ports: info
                .published
                .iter()
                .map(|(host, guest)| NativePublishedPort {
                    host: host.to_string(),
                    host_port: host.port() as u32,
                    guest_port: *guest as u32,
                })
                .collect(),
        }
    }

    #[napi]
    pub async fn exec(
        &self,
        command: String,
        args: Vec<String>,
        options: Option<NativeExecOptions>,
    ) -> Either<NativeExecOutput, NativeFailure> {
        let result = self.inner.exec(command, args, exec_options(options)).await;
        outcome(result.map(|out| NativeExecOutput {
            code: out.status.code,
            signal: out.status.signal,
            stdout: out.stdout.into(),
            stderr: out.stderr.into(),
            guest_micros: out.status.guest_micros as f64,
        }))
    }

    #[napi]
    pub async fn exec_stream(
        &self,
        command: String,
        args: Vec<String>,
        options: Option<NativeExecOptions>,
    ) -> Either<NativeExecHandle, NativeFailure> {
        let result = self
            .inner
            .exec_stream(command, args, exec_options(options))
            .await;
        outcome(result.map(|(events, control)| NativeExecHandle {
            events: Mutex::new(events),
            control,
        }))
    }

    #[napi]
    pub fn fs(&self) -> NativeFs {
        NativeFs {
            inner: self.inner.fs(),
        }
    }

    #[napi]
    pub async fn stop(&self) {
        self.inner.stop().await
    }

    #[napi]
    pub async fn stop_and_wait(&self) -> Option<NativeFailure> {
        done(self.inner.stop_and_wait().await)
    }

    #[napi]
    pub async fn kill(&self) -> Option<NativeFailure> {
        done(self.inner.kill().await)
    }
}

/// A running process: its events and its controls.
#[napi]
pub struct NativeExecHandle {
    events: Mutex<ExecEvents>,
    control: ExecControl,
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
        done(self.control.resize(tty_size(NativeTtySize { cols, rows })))
    }
}

/// The guest filesystem of one sandbox.
#[napi]
pub struct NativeFs {
    inner: SandboxFs,
}

#[napi]
impl NativeFs {
    #[napi]
    pub async fn stat(
        &self,
        path: String,
        follow_symlinks: bool,
    ) -> Either<NativeFileStat, NativeFailure> {
        outcome(self.inner.stat(&path, follow_symlinks).await.map(file_stat))
    }

    #[napi]
    pub async fn exists(&self, path: String) -> Either<bool, NativeFailure> {
        outcome(self.inner.exists(&path).await)
    }

    #[napi]
    pub async fn list(
        &self,
        path: String,
        max_entries: Option<u32>,
    ) -> Either<Vec<NativeDirEntry>, NativeFailure> {
        let max_entries = max_entries.unwrap_or(DEFAULT_MAX_LIST_ENTRIES);
        outcome(self.inner.list(&path, max_entries).await.map(|entries| {
            entries
                .into_iter()
                .map(|DirEntry { name, stat }| NativeDirEntry {
                    name,
                    stat: file_stat(stat),
                })
                .collect()
        }))
    }

    #[napi]
    pub async fn mkdir(&self, path: String, mode: u32, recursive: bool) -> Option<NativeFailure> {
        done(self.inner.mkdir(&path, mode, recursive).await)
    }

    #[napi]
    pub async fn remove(&self, path: String, recursive: bool) -> Option<NativeFailure> {
        done(self.inner.remove(&path, recursive).await)
    }

    #[napi]
    pub async fn rename(&self, from: String, to: String) -> Option<NativeFailure> {
        done(self.inner.rename(&from, &to).await)
    }

    #[napi]
    pub async fn read(&self, path: String) -> Either<Buffer, NativeFailure> {
        outcome(self.inner.read(&path).await.map(Buffer::from))
    }

    #[napi]
    pub async fn write(
        &self,
        path: String,
        content: Buffer,
        options: NativeWriteOptions,
    ) -> Either<f64, NativeFailure> {
        let result = self
            .inner
            .write(&path, &content, write_options(options))
            .await;
        outcome(result.map(|bytes| bytes as f64))
    }

    #[napi]
    pub async fn copy_from_host(
        &self,
        host_path: String,
        guest_path: String,
    ) -> Either<f64, NativeFailure> {
        let result = self
            .inner
            .copy_from_host(&PathBuf::from(host_path), &guest_path)
            .await;
        outcome(result.map(|bytes| bytes as f64))
    }

    #[napi]
    pub async fn copy_to_host(
        &self,
        guest_path: String,
        host_path: String,
        options: NativeCopyToHostOptions,
        cancel: &NativeCancel,
    ) -> Either<f64, NativeFailure> {
        let defaults = CopyToHostOptions::default();
        // The TypeScript layer passes positive safe integers only.
        let options = CopyToHostOptions {
            max_bytes: options.max_bytes.map_or(defaults.max_bytes, |v| v as u64),
            max_entries: options
                .max_entries
                .map_or(defaults.max_entries, |v| v as u64),
            max_depth: options.max_depth.unwrap_or(defaults.max_depth),
            cancel: cancel.token.clone(),
        };
        let result = self
            .inner
            .copy_to_host(&guest_path, &PathBuf::from(host_path), options)
            .await;
        outcome(result.map(|bytes| bytes as f64))
    }

    #[napi]
    pub async fn read_stream(&self, path: String) -> Either<NativeFileReader, NativeFailure> {
        outcome(
            self.inner
                .read_stream(&path)
                .await
                .map(|reader| NativeFileReader {
                    inner: Mutex::new(reader),
                }),
        )
    }

    #[napi]
    pub async fn write_stream(
        &self,
        path: String,
        options: NativeWriteOptions,
    ) -> Either<NativeFileWriter, NativeFailure> {
        let result = self.inner.write_stream(&path, write_options(options)).await;
        outcome(result.map(|writer| NativeFileWriter {
            inner: Mutex::new(Some(writer)),
        }))
    }
}

#[napi(object)]
pub struct NativeCopyToHostOptions {
    /// Most bytes of file content; default 1 GiB.
    pub max_bytes: Option<f64>,
    /// Most directory entries; default 100 000.
    pub max_entries: Option<f64>,
    /// Deepest directory level; default 64.
    pub max_depth: Option<u32>,
}

/// Cancels an operation it is passed to (the TypeScript layer wires an
/// `AbortSignal` to it).
#[napi]
pub struct NativeCancel {
    token: CancellationToken,
}

#[napi]
impl NativeCancel {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            token: CancellationToken::new(),
        }
    }

    #[napi]
    pub fn cancel(&self) {
        self.token.cancel();
    }
}

fn write_options(options: NativeWriteOptions) -> WriteOptions {
    WriteOptions {
        mode: options.mode,
        append: options.append.unwrap_or(false),
        create_parents: options.create_parents.unwrap_or(false),
    }
}

#[napi]
pub struct NativeFileReader {
    inner: Mutex<FileReader>,
}

#[napi]
impl NativeFileReader {
    /// The next chunk; null at the end of the file.
    #[napi]
    pub async fn next(&self) -> Either<Option<Buffer>, NativeFailure> {
        let chunk = self.inner.lock().await.next_chunk().await;
        outcome(chunk.map(|c| c.map(Buffer::from)))
    }
}

#[napi]
pub struct NativeFileWriter {
    /// `None` once finished.
    inner: Mutex<Option<FileWriter>>,
}

#[napi]
impl NativeFileWriter {
    #[napi]
    pub async fn write(&self, data: Buffer) -> Option<NativeFailure> {
        let mut writer = self.inner.lock().await;
        match writer.as_mut() {
            Some(writer) => done(writer.write(&data).await),
            None => Some(finished_writer()),
        }
    }

    /// Closes the file; resolves to the bytes written.
    #[napi]
    pub async fn finish(&self) -> Either<f64, NativeFailure> {
        let writer = self.inner.lock().await.take();
        match writer {
            Some(writer) => outcome(writer.finish().await.map(|bytes| bytes as f64)),
            None => Either::B(finished_writer()),
        }
    }
}

fn finished_writer() -> NativeFailure {
    failure(InvalidOption::new(
        "write",
        "the write stream is already finished",
    ))
}
