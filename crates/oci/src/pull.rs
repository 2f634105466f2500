//! Pulling an image: resolve the manifest (an index resolves to linux/amd64),
//! fetch the config, then for each layer not yet in the cache download it,
//! verify its digest and size, and unpack it; finally build the image's root
//! filesystem view. The missing layers are claimed (locked, in digest order),
//! downloaded all at once, then unpacked two at a time: downloads run at
//! network speed instead of competing with unpacking for the CPU and disk.
//!
//! Failure handling: registry 5xx answers, 429, timeouts and broken
//! connections are retried with exponential backoff, and an interrupted
//! download resumes from the bytes already received (HTTP range), its hash
//! carried over; content that does not match its digest is an error and is
//! never kept. Nothing appears in the cache except complete, verified results.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::BlobResponse;
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::registry::{self, ImageRef, ReferenceError, RegistryOptions};
use crate::store::{self, Store};
use crate::unpack::{self, Compression, UnpackError, UnpackLimits};
use crate::view::{self, ViewError};

/// Layers unpacked at the same time (downloads all run at once).
const PARALLEL_UNPACKS: usize = 2;
/// Attempts per registry operation before giving up.
const ATTEMPTS: u32 = 5;
/// First retry delay; doubles per attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Progress is reported at most once per this many bytes of a layer.
const PROGRESS_STEP: u64 = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub registry: RegistryOptions,
    pub limits: UnpackLimits,
}

/// What a pull reports as it goes, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The manifest is known: these layers (digest, compressed size), this total.
    Resolved {
        manifest_digest: String,
        layers: Vec<(String, u64)>,
        total_bytes: u64,
    },
    /// The layer was already in the cache.
    LayerCached { digest: String, size: u64 },
    /// Bytes of the layer downloaded so far.
    LayerProgress {
        digest: String,
        downloaded: u64,
        size: u64,
    },
    /// The layer is downloaded, verified and unpacked.
    LayerDone { digest: String, size: u64 },
    /// The image's root filesystem is ready.
    Done { manifest_digest: String },
}

/// The parts of an OCI image configuration a sandbox uses as defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RuntimeConfig>,
}

impl RuntimeConfig {
    /// The runtime defaults in an image configuration (the JSON the registry
    /// served); a configuration without a `config` section has none.
    pub fn from_config_json(json: &str) -> Result<RuntimeConfig, serde_json::Error> {
        let file: ConfigFile = serde_json::from_str(json)?;
        Ok(file.config.unwrap_or_default())
    }
}

/// A pulled image, ready to boot; also what the engine reports of a cached
/// image (rebuilt from its state record).
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub name: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// The image configuration exactly as the registry served it.
    pub config_json: String,
    pub config: RuntimeConfig,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    /// Compressed size of the layers.
    pub size: u64,
    pub rootfs: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("registry {registry} is unreachable")]
    Unreachable {
        registry: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("image {reference} not found")]
    NotFound {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("registry {registry} refused the credentials (or their absence)")]
    Unauthorized {
        registry: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("image {reference} has no linux/amd64 manifest")]
    NoPlatform { reference: String },
    #[error("registry {registry} failed")]
    Registry {
        registry: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("blob {digest} does not match its digest (got {actual})")]
    DigestMismatch { digest: String, actual: String },
    #[error("blob {digest} is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer {digest} has unsupported media type {media_type}")]
    UnsupportedLayer { digest: String, media_type: String },
    #[error("image configuration {digest} is not valid JSON")]
    BadConfig {
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("layer {digest} could not be unpacked")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("the root filesystem of {reference} could not be assembled")]
    View {
        reference: String,
        #[source]
        source: ViewError,
    },
    #[error("image cache: {what}")]
    Cache {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn cache_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> PullError {
    let what = what.into();
    move |source| PullError::Cache { what, source }
}

/// A layer this pull produces: its lock is held until it is in the cache.
struct Claim {
    layer: OciDescriptor,
    compression: Compression,
    blob: TempFile,
    _lock: store::Lock,
}

struct Fetched {
    claim: Claim,
    file: File,
}

/// A path removed when dropped (a download's blob, whatever happens to it).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Context for one pull: the client, credentials and where to report.
struct Pull<'a> {
    client: Client,
    auth: RegistryAuth,
    image: &'a ImageRef,
    store: &'a Store,
    options: &'a PullOptions,
    progress: &'a (dyn Fn(PullEvent) + Send + Sync),
}

pub async fn pull(
    store: &Store,
    image: &ImageRef,
    options: &PullOptions,
    progress: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<PulledImage, PullError> {
    let pull = Pull {
        client: registry::client(&options.registry)?,
        auth: registry::auth_for(image.registry(), &options.registry),
        image,
        store,
        options,
        progress,
    };
    let (manifest, manifest_digest) = pull.manifest().await?;
    let config_json = pull.config(&manifest.config).await?;
    let config =
        RuntimeConfig::from_config_json(&config_json).map_err(|source| PullError::BadConfig {
            digest: manifest.config.digest.clone(),
            source,
        })?;
    let layers: Vec<(String, u64)> = manifest
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size.max(0) as u64))
        .collect();
    let size = layers.iter().map(|(_, s)| s).sum();
    (pull.progress)(PullEvent::Resolved {
        manifest_digest: manifest_digest.clone(),
        layers: layers.clone(),
        total_bytes: size,
    });

    // Claim the missing layers (their locks, in digest order so that two
    // pulls of overlapping images cannot deadlock), download them all, then
    // unpack them: downloads are not slowed by unpacking competing for the
    // CPU and the disk.
    let claimed = pull.claim_layers(&manifest.layers).await?;
    let downloads: Vec<_> = claimed.into_iter().map(|claim| pull.fetch(claim)).collect();
    let fetched = futures::future::try_join_all(downloads).await?;
    let unpacks: Vec<_> = fetched
        .into_iter()
        .map(|layer| pull.unpack(layer))
        .collect();
    futures::stream::iter(unpacks)
        .buffer_unordered(PARALLEL_UNPACKS)
        .try_collect::<Vec<()>>()
        .await?;
    let rootfs = pull.view(&manifest_digest, &layers).await?;
    (pull.progress)(PullEvent::Done {
        manifest_digest: manifest_digest.clone(),
    });
    Ok(PulledImage {
        name: image.name.clone(),
        manifest_digest,
        config_digest: manifest.config.digest.clone(),
        config_json,
        config,
        layers: layers.into_iter().map(|(d, _)| d).collect(),
        size,
        rootfs,
    })
}

impl Pull<'_> {
    fn registry(&self) -> String {
        self.image.registry().to_string()
    }

    /// Maps a client error to ours, and says whether trying again may help.
    fn classify(&self, error: OciDistributionError) -> (PullError, bool) {
        let registry = self.registry();
        let status = match &error {
            OciDistributionError::ServerError { code, .. } => Some(*code),
            OciDistributionError::RequestError(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        };
        let envelope_codes: Vec<String> = match &error {
            OciDistributionError::RegistryError { envelope, .. } => envelope
                .errors
                .iter()
                .map(|e| format!("{:?}", e.code).to_uppercase())
                .collect(),
            _ => vec![],
        };
        let not_found = matches!(error, OciDistributionError::ImageManifestNotFoundError(_))
            || status == Some(404)
            || envelope_codes
                .iter()
                .any(|c| c.contains("UNKNOWN") && !c.contains("UNSUPPORTED"));
        let unauthorized = matches!(
            error,
            OciDistributionError::UnauthorizedError { .. }
                | OciDistributionError::AuthenticationFailure(_)
        ) || matches!(status, Some(401) | Some(403))
            || envelope_codes
                .iter()
                .any(|c| c.contains("UNAUTHORIZED") || c.contains("DENIED"));
        let unreachable = match &error {
            OciDistributionError::RequestError(e) => {
                e.is_connect() || e.is_timeout() || e.is_request() && e.status().is_none()
            }
            OciDistributionError::IoError(_) => true,
            _ => false,
        };
        let transient = unreachable || matches!(status, Some(429) | Some(500..=599));
        if error.to_string().contains("platform") {
            return (
                PullError::NoPlatform {
                    reference: self.image.name.clone(),
                },
                false,
            );
        }
        let mapped = if not_found {
            PullError::NotFound {
                reference: self.image.name.clone(),
                source: error,
            }
        } else if unauthorized {
            PullError::Unauthorized {
                registry,
                source: error,
            }
        } else if unreachable {
            PullError::Unreachable {
                registry,
                source: error,
            }
        } else {
            PullError::Registry {
                registry,
                source: error,
            }
        };
        (mapped, transient && !not_found && !unauthorized)
    }

    async fn backoff(attempt: u32) {
        tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt)).await;
    }

    /// The image manifest for linux/amd64 and its digest.
    async fn manifest(&self) -> Result<(OciImageManifest, String), PullError> {
        let mut attempt = 0;
        loop {
            match self
                .client
                .pull_image_manifest_and_list_digest(&self.image.fetch, &self.auth)
                .await
            {
                Ok((manifest, digest, list_digest)) => {
                    if let Some(wanted) = self.image.fetch.digest() {
                        let got = list_digest.as_deref().unwrap_or(&digest);
                        if got != wanted {
                            return Err(PullError::DigestMismatch {
                                digest: wanted.to_string(),
                                actual: got.to_string(),
                            });
                        }
                    }
                    return Ok((manifest, digest));
                }
                Err(error) => {
                    let (error, transient) = self.classify(error);
                    attempt += 1;
                    if !transient || attempt >= ATTEMPTS {
                        return Err(error);
                    }
                    tracing::debug!(%error, attempt, "retrying the manifest");
                    Self::backoff(attempt - 1).await;
                }
            }
        }
    }

    async fn config(&self, descriptor: &OciDescriptor) -> Result<String, PullError> {
        let mut attempt = 0;
        loop {
            let mut bytes = Vec::new();
            match self
                .client
                .pull_blob(&self.image.fetch, descriptor, &mut bytes)
                .await
            {
                Ok(()) => {
                    verify(&descriptor.digest, &Sha256::digest(&bytes))?;
                    return String::from_utf8(bytes).map_err(|e| PullError::BadConfig {
                        digest: descriptor.digest.clone(),
                        source: serde::de::Error::custom(e),
                    });
                }
                Err(error) => {
                    let (error, transient) = self.classify(error);
                    attempt += 1;
                    if !transient || attempt >= ATTEMPTS {
                        return Err(error);
                    }
                    Self::backoff(attempt - 1).await;
                }
            }
        }
    }

    /// Locks every layer not yet in the cache, in digest order, and returns
    /// the claims; reports the others as cached.
    async fn claim_layers(&self, layers: &[OciDescriptor]) -> Result<Vec<Claim>, PullError> {
        let mut ordered: Vec<&OciDescriptor> = layers.iter().collect();
        ordered.sort_by(|a, b| a.digest.cmp(&b.digest));
        ordered.dedup_by(|a, b| a.digest == b.digest);
        let mut claims = Vec::new();
        for layer in ordered {
            let digest = layer.digest.clone();
            let size = layer.size.max(0) as u64;
            let target = self.store.layer_dir(&digest);
            if target.is_dir() {
                (self.progress)(PullEvent::LayerCached { digest, size });
                continue;
            }
            let compression =
                compression_of(&layer.media_type).ok_or_else(|| PullError::UnsupportedLayer {
                    digest: digest.clone(),
                    media_type: layer.media_type.clone(),
                })?;
            let lock = self
                .store
                .lock(&digest)
                .await
                .map_err(cache_error(format!("lock layer {digest}")))?;
            // Another pull (perhaps in another process) may have finished it while we waited.
            if target.is_dir() {
                (self.progress)(PullEvent::LayerCached { digest, size });
                continue;
            }
            claims.push(Claim {
                layer: layer.clone(),
                compression,
                blob: TempFile(self.store.temp_path("blob")),
                _lock: lock,
            });
        }
        Ok(claims)
    }

    /// Downloads a claimed layer and verifies it.
    async fn fetch(&self, claim: Claim) -> Result<Fetched, PullError> {
        let file = self.download(&claim.layer, &claim.blob.0).await?;
        Ok(Fetched { claim, file })
    }

    /// Unpacks a downloaded layer into the cache; the claim (lock, blob) ends here.
    async fn unpack(&self, fetched: Fetched) -> Result<(), PullError> {
        let Fetched { claim, file } = fetched;
        let digest = claim.layer.digest.clone();
        let size = claim.layer.size.max(0) as u64;
        let unpack_dir = self.store.temp_path("layer");
        std::fs::create_dir(&unpack_dir).map_err(cache_error("create an unpack directory"))?;
        let limits = self.options.limits.clone();
        let dir = unpack_dir.clone();
        let compression = claim.compression;
        let unpacked = tokio::task::spawn_blocking(move || {
            unpack::unpack_layer(io::BufReader::new(file), compression, &dir, &limits)
        })
        .await
        .map_err(|e| cache_error("unpack task")(io::Error::other(e)))?;
        match unpacked {
            Ok(_) => std::fs::rename(&unpack_dir, self.store.layer_dir(&digest))
                .map_err(cache_error(format!("store layer {digest}")))
                .inspect_err(|_| {
                    let _ = store::remove_any(&unpack_dir);
                })?,
            Err(source) => {
                let _ = store::remove_any(&unpack_dir);
                return Err(PullError::Unpack { digest, source });
            }
        }
        drop(claim);
        (self.progress)(PullEvent::LayerDone { digest, size });
        Ok(())
    }

    /// Downloads a blob into `path`, resuming after failures, and verifies it.
    /// Returns the file positioned at its start.
    async fn download(
        &self,
        layer: &OciDescriptor,
        path: &std::path::Path,
    ) -> Result<File, PullError> {
        let digest = layer.digest.clone();
        let size = layer.size.max(0) as u64;
        let mut file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .map_err(cache_error("create a download file"))?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut reported = 0u64;
        let mut attempt = 0;
        loop {
            let response = if received == 0 {
                self.client
                    .pull_blob_stream(&self.image.fetch, layer)
                    .await
                    .map(BlobResponse::Full)
            } else {
                self.client
                    .pull_blob_stream_partial(&self.image.fetch, layer, received, None)
                    .await
            };
            let failure = match response {
                Err(error) => Some(self.classify(error)),
                Ok(response) => {
                    let mut stream = match response {
                        BlobResponse::Full(stream) => {
                            if received > 0 {
                                // The registry ignored the range: start over.
                                hasher = Sha256::new();
                                received = 0;
                                file.set_len(0)
                                    .map_err(cache_error("truncate a download"))?;
                                file.rewind().map_err(cache_error("rewind a download"))?;
                            }
                            stream.stream
                        }
                        BlobResponse::Partial(stream) => stream.stream,
                    };
                    let mut failure = None;
                    while let Some(chunk) = stream.next().await {
                        match chunk {
                            Ok(bytes) => {
                                received += bytes.len() as u64;
                                if received > size {
                                    return Err(PullError::SizeMismatch {
                                        digest,
                                        expected: size,
                                        actual: received,
                                    });
                                }
                                hasher.update(&bytes);
                                file.write_all(&bytes)
                                    .map_err(cache_error("write a download"))?;
                                if received - reported >= PROGRESS_STEP || received == size {
                                    reported = received;
                                    (self.progress)(PullEvent::LayerProgress {
                                        digest: digest.clone(),
                                        downloaded: received,
                                        size,
                                    });
                                }
                            }
                            Err(error) => {
                                let mismatch = error.get_ref().is_some_and(|inner| {
                                    inner
                                        .downcast_ref::<oci_client::errors::DigestError>()
                                        .is_some()
                                });
                                if mismatch {
                                    // The client checked the digest at the end of the body: every
                                    // byte went through our hasher too.
                                    let actual = hasher.clone().finalize();
                                    return Err(verify(&digest, &actual).err().unwrap_or(
                                        PullError::DigestMismatch {
                                            digest: digest.clone(),
                                            actual: "unknown".into(),
                                        },
                                    ));
                                }
                                failure = Some(self.classify(OciDistributionError::IoError(error)));
                                break;
                            }
                        }
                    }
                    match failure {
                        Some(failure) => Some(failure),
                        None if received < size => Some((
                            PullError::SizeMismatch {
                                digest: digest.clone(),
                                expected: size,
                                actual: received,
                            },
                            // A short body is a broken connection: resume it.
                            true,
                        )),
                        None => None,
                    }
                }
            };
            match failure {
                None => break,
                Some((error, transient)) => {
                    attempt += 1;
                    if !transient || attempt >= ATTEMPTS {
                        return Err(error);
                    }
                    tracing::debug!(%error, attempt, received, "resuming a layer download");
                    Self::backoff(attempt - 1).await;
                }
            }
        }
        verify(&digest, &hasher.finalize())?;
        file.rewind().map_err(cache_error("rewind a download"))?;
        Ok(file)
    }

    /// Builds (once) the image's root filesystem from its layers.
    async fn view(
        &self,
        manifest_digest: &str,
        layers: &[(String, u64)],
    ) -> Result<PathBuf, PullError> {
        let rootfs = self.store.rootfs_dir(manifest_digest);
        if rootfs.is_dir() {
            return Ok(rootfs);
        }
        let _lock = self
            .store
            .lock(manifest_digest)
            .await
            .map_err(cache_error("lock an image"))?;
        if rootfs.is_dir() {
            return Ok(rootfs);
        }
        let layer_dirs: Vec<PathBuf> = layers
            .iter()
            .map(|(digest, _)| self.store.layer_dir(digest))
            .collect();
        let temp = self.store.temp_path("rootfs");
        std::fs::create_dir(&temp).map_err(cache_error("create a root filesystem"))?;
        let build_temp = temp.clone();
        let built = tokio::task::spawn_blocking(move || {
            let refs: Vec<&std::path::Path> = layer_dirs.iter().map(PathBuf::as_path).collect();
            view::build_view(&refs, &build_temp)
        })
        .await
        .map_err(|e| cache_error("view task")(io::Error::other(e)))?;
        if let Err(source) = built {
            let _ = store::remove_any(&temp);
            return Err(PullError::View {
                reference: self.image.name.clone(),
                source,
            });
        }
        let image_dir = self.store.image_dir(manifest_digest);
        std::fs::create_dir_all(&image_dir).map_err(cache_error("create an image directory"))?;
        std::fs::rename(&temp, &rootfs).map_err(cache_error("store a root filesystem"))?;
        Ok(rootfs)
    }
}

fn verify(digest: &str, actual: &[u8]) -> Result<(), PullError> {
    let actual_hex: String = actual.iter().map(|b| format!("{b:02x}")).collect();
    let (algorithm, expected_hex) = digest.split_once(':').unwrap_or(("", digest));
    if algorithm != "sha256" || !expected_hex.eq_ignore_ascii_case(&actual_hex) {
        return Err(PullError::DigestMismatch {
            digest: digest.to_string(),
            actual: format!("sha256:{actual_hex}"),
        });
    }
    Ok(())
}

fn compression_of(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd),
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_exactly() {
        let bytes = b"layer";
        let hex: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(verify(&format!("sha256:{hex}"), &Sha256::digest(bytes)).is_ok());
        assert!(matches!(
            verify(&format!("sha256:{hex}"), &Sha256::digest(b"other")),
            Err(PullError::DigestMismatch { .. })
        ));
        assert!(verify(&format!("sha512:{hex}"), &Sha256::digest(bytes)).is_err());
    }

    #[test]
    fn runtime_config_parses_the_image_config() {
        let json = r#"{"architecture":"amd64","config":{"Env":["PATH=/bin","A=b"],"Cmd":["python3"],"WorkingDir":"/app","User":"1000"}}"#;
        let parsed: ConfigFile = serde_json::from_str(json).unwrap();
        let config = parsed.config.unwrap();
        assert_eq!(config.env, vec!["PATH=/bin", "A=b"]);
        assert_eq!(config.cmd, Some(vec!["python3".to_string()]));
        assert_eq!(config.working_dir.as_deref(), Some("/app"));
        assert_eq!(config.user.as_deref(), Some("1000"));
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(
            compression_of("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            compression_of("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            compression_of("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            None
        );
    }
}
