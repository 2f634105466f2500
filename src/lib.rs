//! Node.js binding: thin `#[napi]` wrappers over `msb-engine`. Conversions and
//! error codes only; every rule lives in the engine.

use std::collections::HashMap;
use std::path::PathBuf;

use msb_engine::{
    EngineSettings, ExecOptions, ExecOutput, HasCode, Sandbox, SandboxOptions as EngineOptions,
};
use napi::bindgen_prelude::*;
use napi_derive::napi;

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
    pub console_tail: Option<String>,
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
            console_tail: details.console_tail,
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

#[napi(object)]
pub struct EngineConfig {
    /// Directory holding vmlinux, msb-agent and msb-runtime.
    pub assets_dir: String,
}

#[napi(object)]
pub struct SandboxOptions {
    pub name: Option<String>,
    pub image: String,
    pub cpus: Option<f64>,
    pub memory_mib: Option<f64>,
    pub env: Option<HashMap<String, String>>,
    pub workdir: Option<String>,
}

#[napi(object)]
pub struct ExecCallOptions {
    pub cwd: Option<String>,
    pub env: Option<HashMap<String, String>>,
}

#[napi(object)]
pub struct NativeExecOutput {
    /// Exit code, or null when a signal ended the process.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Buffer,
    pub stderr: Buffer,
}

#[napi(object)]
pub struct NativeBootInfo {
    pub accel: String,
    pub vm_pid: u32,
    pub boot_ms: f64,
    pub agent_version: String,
}

fn env_pairs(env: Option<HashMap<String, String>>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = env.unwrap_or_default().into_iter().collect();
    // Object key order is lost in a HashMap; sort for a deterministic guest env.
    pairs.sort();
    pairs
}

#[napi]
pub struct NativeSandbox {
    inner: Sandbox,
}

#[napi]
pub async fn create_sandbox(
    options: SandboxOptions,
    engine: EngineConfig,
) -> Either<NativeSandbox, NativeFailure> {
    let settings = EngineSettings::from_env(&PathBuf::from(engine.assets_dir));
    let options = EngineOptions {
        name: options.name,
        image: options.image,
        cpus: options.cpus,
        memory_mib: options.memory_mib,
        env: env_pairs(options.env),
        workdir: options.workdir,
    };
    outcome(
        Sandbox::create(&settings, options)
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
        }
    }

    #[napi]
    pub async fn exec(
        &self,
        command: String,
        args: Vec<String>,
        options: Option<ExecCallOptions>,
    ) -> Either<NativeExecOutput, NativeFailure> {
        let options = options.map_or_else(ExecOptions::default, |o| ExecOptions {
            cwd: o.cwd,
            env: env_pairs(o.env),
        });
        let result = self.inner.exec(command, args, options).await;
        outcome(result.map(
            |ExecOutput {
                 status,
                 stdout,
                 stderr,
             }| NativeExecOutput {
                code: status.code,
                signal: status.signal,
                stdout: stdout.into(),
                stderr: stderr.into(),
            },
        ))
    }

    #[napi]
    pub async fn stop(&self) {
        self.inner.stop().await
    }

    #[napi]
    pub async fn stop_and_wait(&self) -> Option<NativeFailure> {
        self.inner.stop_and_wait().await.err().map(failure)
    }

    #[napi]
    pub async fn kill(&self) -> Option<NativeFailure> {
        self.inner.kill().await.err().map(failure)
    }
}
