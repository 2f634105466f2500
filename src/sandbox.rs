//! Sandboxes: the options of `createSandbox` (patches, network, ports,
//! registry) and the handle of a running sandbox.

use std::collections::HashMap;
use std::path::PathBuf;

use msb_engine::options::storage::MountOption;
use msb_engine::{
    CreateError, InvalidOption, Lifecycle, NetworkOptions, Patch, PortOption, RuleOptions, Sandbox,
    SandboxOptions as EngineOptions, SecretEnvOptions, SecretValue, TlsOptions,
};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunction;
use napi_derive::napi;

use crate::error::{done, failure, outcome, NativeFailure};
use crate::exec::{
    exec_options, exec_output, sorted_pairs, NativeExecHandle, NativeExecOptions, NativeExecOutput,
};
use crate::fs::NativeFs;
use crate::image::{progress, registry_options, NativePullEvent, NativeRegistryOptions};
use crate::{settings, EngineConfig};

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
    /// Environment variable name to secret: the guest sees a placeholder, never the value.
    pub secret_env: Option<HashMap<String, NativeSecret>>,
    /// Outlive the creating process; reachable by name from other processes.
    pub detached: Option<bool>,
    pub idle_timeout_ms: Option<f64>,
    pub max_lifetime_ms: Option<f64>,
    /// Mounts, in the order given.
    pub volumes: Option<Vec<NativeMount>>,
    pub persistent: Option<bool>,
    pub rootfs_size_mib: Option<f64>,
    pub rootfs_path: Option<String>,
}

/// One mount of `volumes`, flattened by the TypeScript layer.
#[napi(object)]
pub struct NativeMount {
    /// The guest path.
    pub path: String,
    /// "named", "bind" or "tmpfs".
    pub kind: String,
    /// The volume's name or the host directory.
    pub source: Option<String>,
    pub readonly: Option<bool>,
    pub size_mib: Option<f64>,
}

/// One secret environment variable (see docs/secrets.md).
#[napi(object)]
pub struct NativeSecret {
    pub value: String,
    pub domain: Option<String>,
    pub domains: Option<Vec<String>>,
    pub placeholder: Option<String>,
    /// "headers", "basic-auth", "path", "query", "body".
    pub locations: Option<Vec<String>>,
    /// "block", "block-and-log" or "block-and-kill".
    pub on_violation: Option<String>,
    pub require_tls: Option<bool>,
}

/// TLS interception (see docs/secrets.md).
#[napi(object)]
pub struct NativeTlsOptions {
    /// "secrets-only", "all" or "off".
    pub intercept: Option<String>,
    pub bypass_domains: Option<Vec<String>>,
    /// PEM certificates the host trusts for upstream servers, besides its own store.
    pub ca_certificates: Option<Vec<String>>,
}

macro_rules! native_rule {
    (
        required { $($(#[doc = $rdoc:tt])* $required:ident,)* }
        optional { $($(#[doc = $odoc:tt])* $optional:ident,)* }
    ) => {
        /// One allow or deny rule, as the engine's `RuleOptions` (the fields
        /// come from its one list, `msb_engine::for_each_rule_option`).
        #[napi(object)]
        pub struct NativeRule {
            $($(#[doc = $rdoc])* pub $required: String,)*
            $($(#[doc = $odoc])* pub $optional: Option<String>,)*
        }

        impl From<NativeRule> for RuleOptions {
            fn from(rule: NativeRule) -> RuleOptions {
                RuleOptions {
                    $($required: rule.$required,)*
                    $($optional: rule.$optional,)*
                }
            }
        }
    };
}

msb_engine::for_each_rule_option!(native_rule);

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
    pub tls: Option<NativeTlsOptions>,
}

#[napi(object)]
pub struct NativePublishedPort {
    /// Where the host listens, e.g. `127.0.0.1:8080`.
    pub host: String,
    pub host_port: u32,
    pub guest_port: u32,
}

#[napi(object)]
pub struct NativeBootInfo {
    pub accel: String,
    pub vm_pid: u32,
    pub boot_ms: f64,
    pub agent_version: String,
    pub published_ports: Vec<NativePublishedPort>,
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
            .map(RuleOptions::from)
            .collect(),
        block_domains: o.block_domains.unwrap_or_default(),
        block_domain_suffixes: o.block_domain_suffixes.unwrap_or_default(),
        allow_domains: o.allow_domains.unwrap_or_default(),
        hosts,
        dns_servers: o.dns_servers,
        max_flows: o.max_flows,
        tls: o.tls.map_or_else(TlsOptions::default, |t| TlsOptions {
            intercept: t.intercept,
            bypass_domains: t.bypass_domains.unwrap_or_default(),
            ca_certificates: t.ca_certificates.unwrap_or_default(),
        }),
    }
}

/// Sorted by name, so that errors name the same secret first every time.
fn secret_env_options(secrets: Option<HashMap<String, NativeSecret>>) -> Vec<SecretEnvOptions> {
    let mut list: Vec<SecretEnvOptions> = secrets
        .unwrap_or_default()
        .into_iter()
        .map(|(name, s)| SecretEnvOptions {
            name,
            value: SecretValue::new(s.value),
            domain: s.domain,
            domains: s.domains.unwrap_or_default(),
            placeholder: s.placeholder,
            locations: s.locations,
            on_violation: s.on_violation,
            require_tls: s.require_tls,
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

/// Object keys are strings: each must be a number (the engine checks the range).
fn port_options(
    ports: Option<HashMap<String, f64>>,
) -> std::result::Result<Vec<PortOption>, InvalidOption> {
    let mut pairs = ports
        .unwrap_or_default()
        .into_iter()
        .map(|(host, guest)| match host.trim().parse::<f64>() {
            Ok(host) => Ok((host, guest)),
            Err(_) => Err(InvalidOption::new(
                "ports",
                format!("{host:?} is not a port number"),
            )),
        })
        .collect::<std::result::Result<Vec<PortOption>, _>>()?;
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(pairs)
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
            host_path: match patch.host_path {
                Some(host_path) => PathBuf::from(host_path),
                None => {
                    return Err(InvalidOption::new(
                        format!("patches[{index}].hostPath"),
                        "is required for a copy",
                    ))
                }
            },
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

fn engine_options(options: SandboxOptions) -> std::result::Result<EngineOptions, InvalidOption> {
    let patches = options
        .patches
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, patch)| to_patch(index, patch))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(EngineOptions {
        name: options.name,
        image: options.image,
        cpus: options.cpus,
        memory_mib: options.memory_mib,
        env: sorted_pairs(options.env),
        workdir: options.workdir,
        scripts: sorted_pairs(options.scripts),
        patches,
        pull_policy: options.pull_policy,
        registry: registry_options(options.registry)?,
        network: network_options(options.network),
        ports: port_options(options.ports)?,
        secret_env: secret_env_options(options.secret_env),
        detached: options.detached,
        idle_timeout_ms: options.idle_timeout_ms,
        max_lifetime_ms: options.max_lifetime_ms,
        volumes: options
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|m| MountOption {
                path: m.path,
                kind: m.kind,
                source: m.source,
                readonly: m.readonly,
                size_mib: m.size_mib,
            })
            .collect(),
        persistent: options.persistent,
        rootfs_size_mib: options.rootfs_size_mib,
        rootfs_path: options.rootfs_path,
    })
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
    let settings = settings(engine);
    let options = match engine_options(options) {
        Ok(options) => options,
        Err(invalid) => return Either::B(failure(CreateError::from(invalid))),
    };
    outcome(
        Sandbox::create(&settings, options, progress(on_progress))
            .await
            .map(|inner| NativeSandbox { inner }),
    )
}

/// Boots a sandbox for the caller's warm pool (`Sandbox.prewarm`): hidden from
/// `list` and `get` until `claim`.
#[napi]
pub async fn prewarm_sandbox(
    options: SandboxOptions,
    engine: EngineConfig,
) -> Either<NativeSandbox, NativeFailure> {
    let settings = settings(engine);
    let options = match engine_options(options) {
        Ok(options) => options,
        Err(invalid) => return Either::B(failure(CreateError::from(invalid))),
    };
    outcome(
        Sandbox::prewarm(&settings, options)
            .await
            .map(|inner| NativeSandbox { inner }),
    )
}

#[napi]
pub async fn start_sandbox(
    name: String,
    secret_env: Option<HashMap<String, NativeSecret>>,
    engine: EngineConfig,
    on_progress: Option<ThreadsafeFunction<NativePullEvent, (), NativePullEvent, Status, false>>,
) -> Either<NativeSandbox, NativeFailure> {
    outcome(
        Sandbox::start(
            &settings(engine),
            &name,
            secret_env_options(secret_env),
            progress(on_progress),
        )
        .await
        .map(|inner| NativeSandbox { inner }),
    )
}

/// Resolves to nothing when sandboxes can start here, else to what is missing.
#[napi]
pub fn check_installed(engine: EngineConfig) -> Option<NativeFailure> {
    done(Sandbox::check_installed(&settings(engine)))
}

#[napi]
pub async fn get_sandbox(
    name: String,
    engine: EngineConfig,
) -> Either<NativeSandbox, NativeFailure> {
    outcome(
        Sandbox::get(&settings(engine), &name)
            .await
            .map(|inner| NativeSandbox { inner }),
    )
}

/// A sandbox as `listSandboxes` reports it.
#[napi(object)]
pub struct NativeSandboxSummary {
    pub name: String,
    /// "starting", "running", "stopping", "stopped" or "crashed".
    pub status: String,
    pub reason: Option<String>,
    pub image: String,
    pub detached: bool,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: f64,
    pub stopped_at_ms: Option<f64>,
    pub pid: Option<u32>,
}

#[napi]
pub async fn list_sandboxes(
    engine: EngineConfig,
) -> Either<Vec<NativeSandboxSummary>, NativeFailure> {
    outcome(Sandbox::list(&settings(engine)).await.map(|list| {
        list.into_iter()
            .map(|s| NativeSandboxSummary {
                name: s.name,
                status: s.status.to_string(),
                reason: s.reason,
                image: s.image,
                detached: s.detached,
                cpus: s.cpus,
                memory_mib: s.memory_mib,
                created_at_ms: s.created_at_ms as f64,
                stopped_at_ms: s.stopped_at_ms.map(|t| t as f64),
                pid: s.pid,
            })
            .collect()
    }))
}

/// How a stopped sandbox's VM ended: its exit code, or the signal that ended it.
#[napi(object)]
pub struct NativeStopStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// A running sandbox's resource use.
#[napi(object)]
pub struct NativeSandboxMetrics {
    pub cpu_percent: f64,
    pub memory_used_mib: Option<f64>,
    pub memory_total_mib: Option<f64>,
    pub memory_limit_mib: f64,
    pub net_rx_bytes: f64,
    pub net_tx_bytes: f64,
    pub disk_read_bytes: f64,
    pub disk_write_bytes: f64,
    pub uptime_ms: f64,
}

/// Where the sandbox's event log is (it may not exist yet).
#[napi]
pub fn sandbox_events_log(name: String, engine: EngineConfig) -> Either<String, NativeFailure> {
    outcome(Sandbox::events_log(&settings(engine), &name).map(|path| path.display().to_string()))
}

#[napi]
pub async fn remove_sandbox(
    name: String,
    force: bool,
    engine: EngineConfig,
) -> Option<NativeFailure> {
    done(Sandbox::remove(&settings(engine), &name, force).await)
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
            accel: info.accel.as_str().to_string(),
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
        let options = match exec_options(options) {
            Ok(options) => options,
            Err(invalid) => return Either::B(failure(invalid)),
        };
        outcome(
            self.inner
                .exec(command, args, options)
                .await
                .map(exec_output),
        )
    }

    #[napi]
    pub async fn exec_stream(
        &self,
        command: String,
        args: Vec<String>,
        options: Option<NativeExecOptions>,
    ) -> Either<NativeExecHandle, NativeFailure> {
        let options = match exec_options(options) {
            Ok(options) => options,
            Err(invalid) => return Either::B(failure(invalid)),
        };
        let result = self.inner.exec_stream(command, args, options).await;
        outcome(result.map(|(events, control)| NativeExecHandle::new(events, control)))
    }

    #[napi]
    pub async fn metrics(&self) -> Either<NativeSandboxMetrics, NativeFailure> {
        outcome(self.inner.metrics().await.map(|m| NativeSandboxMetrics {
            cpu_percent: m.cpu_percent,
            memory_used_mib: m.memory_used_mib,
            memory_total_mib: m.memory_total_mib,
            memory_limit_mib: m.memory_limit_mib,
            net_rx_bytes: m.net_rx_bytes as f64,
            net_tx_bytes: m.net_tx_bytes as f64,
            disk_read_bytes: m.disk_read_bytes as f64,
            disk_write_bytes: m.disk_write_bytes as f64,
            uptime_ms: m.uptime_ms as f64,
        }))
    }

    #[napi]
    pub fn fs(&self) -> NativeFs {
        NativeFs::new(self.inner.fs())
    }

    #[napi]
    pub async fn stop(&self) {
        self.inner.stop().await
    }

    #[napi]
    pub async fn stop_and_wait(&self) -> Either<NativeStopStatus, NativeFailure> {
        outcome(self.inner.stop_and_wait().await.map(|ended| {
            let (code, signal) = match ended {
                Lifecycle::Exited(exit) => (exit.code, exit.signal),
                _ => (None, None),
            };
            NativeStopStatus { code, signal }
        }))
    }

    /// Takes a pooled sandbox out of its pool.
    #[napi]
    pub async fn claim(&self) -> Option<NativeFailure> {
        done(self.inner.claim().await)
    }

    #[napi]
    pub async fn kill(&self) -> Option<NativeFailure> {
        done(self.inner.kill().await)
    }
}
