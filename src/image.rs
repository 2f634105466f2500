//! Images: pull, inspect, list, remove, prune, and the registry options and
//! pull progress shared with `createSandbox`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use msb_engine::{
    Credentials, ImageInfo, Images, InvalidOption, Progress, PullEvent, RegistryOptions,
};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use crate::error::{done, failure, outcome, NativeFailure};
use crate::{settings, EngineConfig};

/// A JavaScript callback for pull progress. (Spelled out in the `#[napi]`
/// signatures: the typings generator does not follow type aliases.)
type ProgressCallback = ThreadsafeFunction<NativePullEvent, (), NativePullEvent, Status, false>;

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

/// Credentials are `{ token }` or `{ username, password }`; anything else is
/// refused naming `registry.auth.<registry>`.
pub(crate) fn registry_options(
    options: Option<NativeRegistryOptions>,
) -> std::result::Result<RegistryOptions, InvalidOption> {
    let Some(o) = options else {
        return Ok(RegistryOptions::default());
    };
    let credentials = o
        .auth
        .unwrap_or_default()
        .into_iter()
        .map(|(registry, c)| {
            let credentials = match (c.token, c.username, c.password) {
                (Some(token), _, _) => Credentials::Bearer { token },
                (None, Some(username), Some(password)) => Credentials::Basic { username, password },
                _ => {
                    return Err(InvalidOption::new(
                        format!("registry.auth.{registry}"),
                        "needs { username, password } or { token }",
                    ))
                }
            };
            Ok((registry, credentials))
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(RegistryOptions {
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
    })
}

/// Forwards pull progress to a JavaScript callback without blocking the pull.
pub(crate) fn progress(callback: Option<ProgressCallback>) -> Option<Progress> {
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
    let image = info.image;
    NativeImageInfo {
        reference: image.name,
        manifest_digest: image.manifest_digest,
        config_digest: image.config_digest,
        config: NativeImageConfig {
            env: image.config.env,
            cmd: image.config.cmd,
            entrypoint: image.config.entrypoint,
            working_dir: image.config.working_dir,
            user: image.config.user,
        },
        layers: image.layers,
        size: image.size as f64,
        pulled_at: info.pulled_at as f64,
    }
}

fn images(engine: EngineConfig) -> Images {
    Images::new(&settings(engine))
}

#[napi]
pub async fn pull_image(
    reference: String,
    registry: Option<NativeRegistryOptions>,
    engine: EngineConfig,
    on_progress: Option<ThreadsafeFunction<NativePullEvent, (), NativePullEvent, Status, false>>,
) -> Either<NativeImageInfo, NativeFailure> {
    let registry = match registry_options(registry) {
        Ok(registry) => registry,
        Err(invalid) => return Either::B(failure(invalid)),
    };
    let progress = progress(on_progress).unwrap_or_else(|| Arc::new(|_| {}));
    let result = images(engine).pull(&reference, &registry, progress).await;
    outcome(result.map(image_info))
}

#[napi]
pub async fn inspect_image(
    reference: String,
    registry: Option<NativeRegistryOptions>,
    engine: EngineConfig,
) -> Either<NativeImageInfo, NativeFailure> {
    let registry = match registry_options(registry) {
        Ok(registry) => registry,
        Err(invalid) => return Either::B(failure(invalid)),
    };
    let result = images(engine).inspect(&reference, &registry).await;
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
    let registry = match registry_options(registry) {
        Ok(registry) => registry,
        Err(invalid) => return Some(failure(invalid)),
    };
    done(images(engine).remove(&reference, &registry).await)
}

#[napi]
pub async fn prune_images(engine: EngineConfig) -> Either<NativePruneReport, NativeFailure> {
    outcome(images(engine).prune().await.map(|r| NativePruneReport {
        images: r.images as f64,
        layers: r.layers as f64,
    }))
}
