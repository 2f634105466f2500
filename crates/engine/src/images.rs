//! Images as the SDK sees them: pull with a policy, list, inspect, remove,
//! prune. The OCI crate does the pulling and the cache; this module keeps the
//! state database in step with it and refuses to remove what a running
//! sandbox uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use msb_oci::{
    ImageRef, PullEvent, PullOptions, PulledImage, RegistryOptions, RuntimeConfig, Store,
};
use msb_state::{ImageRecord, State};

use crate::error::{ImageError, InvalidOption};
use crate::options::sandbox::PullPolicy;
use crate::settings::EngineSettings;

pub type Progress = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// An image in the local cache: what the pull produced (the OCI crate's
/// [`PulledImage`]) and when it was pulled.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub image: PulledImage,
    /// Seconds since the Unix epoch.
    pub pulled_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub images: u64,
    pub layers: u64,
}

/// The image service of one state home.
#[derive(Clone)]
pub struct Images {
    home: PathBuf,
    state_db: PathBuf,
}

impl Images {
    pub fn new(settings: &EngineSettings) -> Self {
        Self {
            home: settings.home.clone(),
            state_db: settings.state_db(),
        }
    }

    fn store(&self) -> Result<Store, ImageError> {
        Store::open(&self.home.join("cache").join("oci")).map_err(ImageError::Cache)
    }

    async fn with_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, ImageError> + Send + 'static,
    ) -> Result<T, ImageError> {
        let path = self.state_db.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(path.parent().expect("state.db has a parent"))
                .map_err(ImageError::Cache)?;
            let mut state = State::open(&path)?;
            f(&mut state)
        })
        .await
        .map_err(|e| ImageError::Cache(std::io::Error::other(e)))?
    }

    fn parse(reference: &str, registry: &RegistryOptions) -> Result<ImageRef, ImageError> {
        ImageRef::parse(reference, registry)
            .map_err(|e| InvalidOption::new("image", e.to_string()).into())
    }

    /// Pulls `reference` (layers already cached are reused) and records it.
    pub async fn pull(
        &self,
        reference: &str,
        registry: &RegistryOptions,
        progress: Progress,
    ) -> Result<ImageInfo, ImageError> {
        let image = Self::parse(reference, registry)?;
        let store = self.store()?;
        let _ = store.remove_temporary();
        let options = PullOptions {
            registry: registry.clone(),
            ..Default::default()
        };
        let pulled = msb_oci::pull(&store, &image, &options, &*progress).await?;
        let record = ImageRecord {
            reference: pulled.name.clone(),
            manifest_digest: pulled.manifest_digest.clone(),
            config_digest: pulled.config_digest.clone(),
            config_json: pulled.config_json.clone(),
            layers: pulled.layers.clone(),
            size: pulled.size,
            pulled_at: now(),
        };
        let pulled_at = record.pulled_at;
        self.with_state(move |state| Ok(state.put_image(&record)?))
            .await?;
        Ok(ImageInfo {
            image: pulled,
            pulled_at,
        })
    }

    /// The cached image for `reference`, pulling it as `policy` says.
    pub async fn ensure(
        &self,
        reference: &str,
        registry: &RegistryOptions,
        policy: PullPolicy,
        progress: Progress,
    ) -> Result<ImageInfo, ImageError> {
        if policy != PullPolicy::Always {
            match self.cached(reference, registry).await? {
                Some(found) => return Ok(found),
                None if policy == PullPolicy::Never => {
                    return Err(ImageError::NotCached {
                        reference: reference.to_string(),
                    })
                }
                None => {}
            }
        }
        self.pull(reference, registry, progress).await
    }

    /// The cached image, if its record and root filesystem both exist.
    async fn cached(
        &self,
        reference: &str,
        registry: &RegistryOptions,
    ) -> Result<Option<ImageInfo>, ImageError> {
        let name = Self::parse(reference, registry)?.name;
        let store = self.store()?;
        let record = self
            .with_state(move |state| Ok(state.image(&name)?))
            .await?;
        Ok(record
            .map(|r| info(r, &store))
            .filter(|info| info.image.rootfs.is_dir()))
    }

    pub async fn inspect(
        &self,
        reference: &str,
        registry: &RegistryOptions,
    ) -> Result<ImageInfo, ImageError> {
        self.cached(reference, registry)
            .await?
            .ok_or_else(|| ImageError::NotKnown {
                reference: reference.to_string(),
            })
    }

    pub async fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let store = self.store()?;
        let records = self.with_state(|state| Ok(state.images()?)).await?;
        Ok(records.into_iter().map(|r| info(r, &store)).collect())
    }

    /// Forgets `reference`, refusing while a running sandbox uses its image.
    /// The content goes at the next [`Images::prune`] if nothing else uses it.
    pub async fn remove(
        &self,
        reference: &str,
        registry: &RegistryOptions,
    ) -> Result<(), ImageError> {
        let image = self.inspect(reference, registry).await?;
        let name = image.image.name.clone();
        let manifest = image.image.manifest_digest.clone();
        self.with_state(move |state| {
            let running: Vec<String> = state
                .sandboxes_using(&manifest)?
                .into_iter()
                .filter(|sandbox| {
                    let alive = sandbox_alive(Path::new(&sandbox.dir));
                    if !alive {
                        // Its runtime is gone without cleaning up: forget it.
                        let _ = state.remove_sandbox(&sandbox.name);
                    }
                    alive
                })
                .map(|sandbox| sandbox.name)
                .collect();
            if !running.is_empty() {
                return Err(ImageError::InUse {
                    reference: name,
                    sandboxes: running.join(", "),
                });
            }
            state.remove_image(&name)?;
            Ok(())
        })
        .await
    }

    /// Deletes root filesystems and layers no known image uses.
    pub async fn prune(&self) -> Result<PruneReport, ImageError> {
        let store = self.store()?;
        let (manifests, keep_layers) = self
            .with_state(|state| {
                let manifests = state.take_unreferenced_manifests()?;
                Ok((manifests, state.referenced_layers()?))
            })
            .await?;
        let mut report = PruneReport::default();
        for manifest in manifests {
            let dir = store.image_dir(&manifest);
            if dir.exists() {
                msb_oci::store::remove_any(&dir).map_err(ImageError::Cache)?;
                report.images += 1;
            }
        }
        let keep: Vec<String> = keep_layers
            .iter()
            .map(|d| msb_oci::store::hex_of(d).to_string())
            .collect();
        let layers = store.root().join("layers");
        for entry in std::fs::read_dir(&layers).map_err(ImageError::Cache)? {
            let entry = entry.map_err(ImageError::Cache)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                msb_oci::store::remove_any(&entry.path()).map_err(ImageError::Cache)?;
                report.layers += 1;
            }
        }
        let _ = store.remove_temporary();
        Ok(report)
    }

    /// Records that sandbox `name` (directory `dir`) runs `manifest_digest`.
    pub async fn track_sandbox(
        &self,
        name: &str,
        manifest_digest: Option<String>,
        dir: &Path,
    ) -> Result<(), ImageError> {
        let record = msb_state::SandboxRecord {
            name: name.to_string(),
            manifest_digest,
            dir: dir.display().to_string(),
        };
        self.with_state(move |state| Ok(state.put_sandbox(&record)?))
            .await
    }

    pub async fn untrack_sandbox(&self, name: &str) -> Result<(), ImageError> {
        let name = name.to_string();
        self.with_state(move |state| Ok(state.remove_sandbox(&name)?))
            .await
    }
}

fn info(record: ImageRecord, store: &Store) -> ImageInfo {
    // The configuration was checked when the image was pulled; a record that
    // no longer parses gets no defaults rather than failing every listing.
    let config = RuntimeConfig::from_config_json(&record.config_json).unwrap_or_default();
    ImageInfo {
        image: PulledImage {
            rootfs: store.rootfs_dir(&record.manifest_digest),
            name: record.reference,
            manifest_digest: record.manifest_digest,
            config_digest: record.config_digest,
            config_json: record.config_json,
            config,
            layers: record.layers,
            size: record.size,
        },
        pulled_at: record.pulled_at,
    }
}

/// Whether a sandbox's runtime is alive: it holds the sandbox lock.
pub fn sandbox_alive(dir: &Path) -> bool {
    match std::fs::File::open(dir.join(msb_control::files::LOCK)) {
        Ok(file) => matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
