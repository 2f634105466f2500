//! Named volumes: create, get, list, remove, usage.

use msb_engine::{volume, VolumeInfo, VolumeOptions};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::{done, outcome, NativeFailure};
use crate::{settings, EngineConfig};

#[napi(object)]
pub struct NativeVolumeOptions {
    pub name: String,
    pub quota_mib: Option<f64>,
    /// "dir" or "disk".
    pub kind: Option<String>,
}

#[napi(object)]
pub struct NativeVolumeInfo {
    pub name: String,
    /// "dir" or "disk".
    pub kind: String,
    pub quota_mib: Option<f64>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: f64,
    /// The host directory (`dir`) or disk image (`disk`) holding the contents.
    pub path: String,
}

#[napi(object)]
pub struct NativeVolumeUsage {
    pub used_bytes: f64,
    pub capacity_bytes: Option<f64>,
}

fn volume_info(info: VolumeInfo) -> NativeVolumeInfo {
    NativeVolumeInfo {
        name: info.name,
        kind: info.kind.as_str().to_string(),
        quota_mib: info.quota_mib.map(f64::from),
        created_at_ms: info.created_at_ms as f64,
        path: info.path.display().to_string(),
    }
}

#[napi]
pub async fn create_volume(
    options: NativeVolumeOptions,
    engine: EngineConfig,
) -> Either<NativeVolumeInfo, NativeFailure> {
    let options = VolumeOptions {
        name: options.name,
        quota_mib: options.quota_mib,
        kind: options.kind,
    };
    outcome(
        volume::create(&settings(engine), options)
            .await
            .map(volume_info),
    )
}

#[napi]
pub async fn get_volume(
    name: String,
    engine: EngineConfig,
) -> Either<NativeVolumeInfo, NativeFailure> {
    outcome(volume::get(&settings(engine), &name).await.map(volume_info))
}

#[napi]
pub async fn list_volumes(engine: EngineConfig) -> Either<Vec<NativeVolumeInfo>, NativeFailure> {
    outcome(
        volume::list(&settings(engine))
            .await
            .map(|list| list.into_iter().map(volume_info).collect()),
    )
}

#[napi]
pub async fn remove_volume(name: String, engine: EngineConfig) -> Option<NativeFailure> {
    done(volume::remove(&settings(engine), &name).await)
}

#[napi]
pub async fn volume_usage(
    name: String,
    engine: EngineConfig,
) -> Either<NativeVolumeUsage, NativeFailure> {
    outcome(
        volume::usage(&settings(engine), &name)
            .await
            .map(|usage| NativeVolumeUsage {
                used_bytes: usage.used_bytes as f64,
                capacity_bytes: usage.capacity_bytes.map(|b| b as f64),
            }),
    )
}
