//! Sandbox options as callers give them ([`SandboxOptions`], numbers as
//! JavaScript has them) and the validated configuration the engine builds from
//! them ([`SandboxConfig`]). Every rule names the field it checks.

use std::path::{Path, PathBuf};

use msb_control::secrets::SecretsConfig;
use msb_oci::RegistryOptions;

use super::network::{NetworkOptions, PortOption};
use super::patch::{self, Patch, SCRIPTS_DIR};
use super::secrets::{self, SecretEnvOptions};
use super::storage::{self, MountConfig, MountOption, PersistentRoot};
use super::{integer_in, validate_env, validate_guest_path};
use crate::error::InvalidOption;

pub const DEFAULT_CPUS: u8 = 1;
pub const MAX_CPUS: u8 = 64;
pub const DEFAULT_MEMORY_MIB: u32 = 512;
pub const MIN_MEMORY_MIB: u32 = 128;
pub const MAX_MEMORY_MIB: u32 = 64 * 1024;
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MAX_NAME_LEN: usize = 63;

/// Kept in the run record so that `Sandbox::start` can boot the sandbox again;
/// what must not be stored is skipped: registry credentials and secret values
/// (the secrets' names are kept apart, see `lifecycle::HandleInfo`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SandboxOptions {
    pub name: Option<String>,
    pub image: String,
    pub cpus: Option<f64>,
    pub memory_mib: Option<f64>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// Name and content of scripts placed, executable, in `/.msb/scripts` (on `PATH`).
    pub scripts: Vec<(String, String)>,
    pub patches: Vec<Patch>,
    /// "always", "if-missing" (default) or "never".
    pub pull_policy: Option<String>,
    #[serde(skip)]
    pub registry: RegistryOptions,
    pub network: NetworkOptions,
    /// Host port (0: any free one) to guest port.
    pub ports: Vec<PortOption>,
    /// Secret environment variables: the guest gets placeholders, the values stay on the host.
    #[serde(skip)]
    pub secret_env: Vec<SecretEnvOptions>,
    /// Outlive the creating process; reachable by name from any process of the same user.
    pub detached: Option<bool>,
    /// Stop after this long with no request and none open.
    pub idle_timeout_ms: Option<f64>,
    /// Stop this long after boot.
    pub max_lifetime_ms: Option<f64>,
    /// Named volumes, bind mounts and tmpfs mounts, by guest path.
    #[serde(default)]
    pub volumes: Vec<MountOption>,
    /// Keep the root's writable layer on the host between runs of this name.
    #[serde(default)]
    pub persistent: Option<bool>,
    /// Size of a persistent root's disk, in MiB.
    #[serde(default)]
    pub rootfs_size_mib: Option<f64>,
    /// Where a persistent root's disk is (default: the sandbox directory).
    #[serde(default)]
    pub rootfs_path: Option<String>,
}

/// The shortest idle timeout and lifetime: the runtime checks once a second.
const MIN_LIFETIME_MS: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A directory on the host used as the (read-only) root.
    Directory(PathBuf),
    /// A raw filesystem image (ext4) on the host, attached read-only.
    Disk(PathBuf),
    /// An OCI image reference, pulled into the image cache.
    Reference(String),
}

/// When to contact the registry for an image reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve the reference at the registry every time (layers already
    /// cached are not downloaded again).
    Always,
    /// Use the cached image when the reference is known, else pull.
    #[default]
    IfMissing,
    /// Never contact a registry; a reference not in the cache is an error.
    Never,
}

impl PullPolicy {
    pub fn parse(field: &str, value: Option<&str>) -> Result<PullPolicy, InvalidOption> {
        match value {
            None | Some("if-missing") => Ok(PullPolicy::IfMissing),
            Some("always") => Ok(PullPolicy::Always),
            Some("never") => Ok(PullPolicy::Never),
            Some(other) => Err(InvalidOption::new(
                field,
                format!("{other:?} is not one of \"always\", \"if-missing\", \"never\""),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    pub name: String,
    /// Whether the caller chose the name (a generated one is not worth keeping logs under).
    pub named: bool,
    pub image: ImageSource,
    pub cpus: u8,
    pub memory_mib: u32,
    /// The caller's environment; [`environment`] adds defaults and the image's.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// Scripts, as patches; valid by construction.
    pub scripts: Vec<Patch>,
    /// The caller's patches, checked against the image once it is resolved.
    pub patches: Vec<Patch>,
    pub pull_policy: PullPolicy,
    pub registry: RegistryOptions,
    pub network: NetworkOptions,
    pub ports: Vec<PortOption>,
    /// `secretEnv` and `network.tls`, for the runtime (holds the values; `Debug` redacts them).
    pub secrets: SecretsConfig,
    pub detached: bool,
    pub idle_timeout_ms: Option<u64>,
    pub max_lifetime_ms: Option<u64>,
    /// Sorted: a mount after any it lies inside.
    pub mounts: Vec<MountConfig>,
    /// `None`: the writable layer is in memory.
    pub persistent_root: Option<PersistentRoot>,
}

impl SandboxOptions {
    pub fn validate(self) -> Result<SandboxConfig, InvalidOption> {
        let named = self.name.is_some();
        let name = match self.name {
            Some(name) => validate_name(&name)?,
            None => generated_name(),
        };
        let image = parse_image(&self.image)?;
        let cpus = integer_in("cpus", self.cpus, DEFAULT_CPUS as u32, 1, MAX_CPUS as u32)? as u8;
        let memory_mib = integer_in(
            "memoryMib",
            self.memory_mib,
            DEFAULT_MEMORY_MIB,
            MIN_MEMORY_MIB,
            MAX_MEMORY_MIB,
        )?;
        validate_env("env", &self.env)?;
        if let Some(workdir) = &self.workdir {
            validate_guest_path("workdir", workdir)?;
        }
        let scripts = patch::scripts_as_patches(&self.scripts)?;
        let pull_policy = PullPolicy::parse("pullPolicy", self.pull_policy.as_deref())?;
        let secrets = secrets::build(&self.secret_env, &self.network.tls)?;
        let duration = |field, value: Option<f64>| -> Result<Option<u64>, InvalidOption> {
            value
                .map(|v| integer_in(field, Some(v), 0, MIN_LIFETIME_MS, u32::MAX).map(u64::from))
                .transpose()
        };
        let idle_timeout_ms = duration("idleTimeoutMs", self.idle_timeout_ms)?;
        let max_lifetime_ms = duration("maxLifetimeMs", self.max_lifetime_ms)?;
        let mounts = storage::validate_mounts(&self.volumes)?;
        let persistent_root = storage::validate_persistent(
            named,
            self.persistent,
            self.rootfs_size_mib,
            self.rootfs_path.as_deref(),
        )?;
        Ok(SandboxConfig {
            name,
            named,
            image,
            cpus,
            memory_mib,
            env: self.env,
            workdir: self.workdir,
            scripts,
            patches: self.patches,
            pull_policy,
            registry: self.registry,
            network: self.network,
            ports: self.ports,
            secrets,
            detached: self.detached.unwrap_or(false),
            idle_timeout_ms,
            max_lifetime_ms,
            mounts,
            persistent_root,
        })
    }
}

/// Every process's environment: defaults, then the image's (`KEY=VALUE`
/// strings from its config), then the caller's; the scripts directory is
/// always on `PATH`, whatever PATH the others set.
pub fn environment(image_env: &[String], caller: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOME".to_string(), "/root".to_string()),
    ];
    let image: Vec<(String, String)> = image_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, v)| !k.is_empty() && !k.contains('\0') && !v.contains('\0'))
        .collect();
    merge_env(&mut env, image);
    merge_env(&mut env, caller.to_vec());
    if let Some((_, path)) = env.iter_mut().find(|(k, _)| k == "PATH") {
        path.push(':');
        path.push_str(SCRIPTS_DIR);
    }
    env
}

/// Later entries override earlier ones with the same key, keeping first positions.
pub fn merge_env(env: &mut Vec<(String, String)>, overrides: Vec<(String, String)>) {
    for (key, value) in overrides {
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => env.push((key, value)),
        }
    }
}

pub(crate) fn validate_name(name: &str) -> Result<String, InvalidOption> {
    if !storage::is_valid_name(name, MAX_NAME_LEN) {
        return Err(InvalidOption::new(
            "name",
            format!(
                "{name:?} is not a valid sandbox name: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit"
            ),
        ));
    }
    Ok(name.to_string())
}

/// Options a pooled sandbox cannot have: it is booted before anyone asks for
/// it and handed to whoever does, so nothing about it may depend on who that
/// is (a name, a detached life), hold a host resource exclusively while it
/// waits (published ports, volumes, a persistent root), or start a clock at
/// boot that should start at the claim (idle timeout, lifetime).
pub(crate) fn check_poolable(options: &SandboxOptions) -> Result<(), InvalidOption> {
    let refused = [
        ("name", options.name.is_some()),
        ("detached", options.detached == Some(true)),
        ("ports", !options.ports.is_empty()),
        ("volumes", !options.volumes.is_empty()),
        ("persistent", options.persistent == Some(true)),
        ("rootfsSizeMib", options.rootfs_size_mib.is_some()),
        ("rootfsPath", options.rootfs_path.is_some()),
        ("idleTimeoutMs", options.idle_timeout_ms.is_some()),
        ("maxLifetimeMs", options.max_lifetime_ms.is_some()),
    ];
    match refused.into_iter().find(|(_, given)| *given) {
        Some((field, _)) => Err(InvalidOption::new(
            field,
            "a pooled sandbox cannot have it: it is booted before anyone asks for it and handed to \
             whoever does (leave it out of prewarm, and create such sandboxes without the pool)",
        )),
        None => Ok(()),
    }
}

fn generated_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "sandbox-{}-{:x}{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A path (absolute, or starting with `./` or `../`) is a host directory or a
/// filesystem image file; anything else is an OCI reference.
fn parse_image(image: &str) -> Result<ImageSource, InvalidOption> {
    if image.is_empty() {
        return Err(InvalidOption::new("image", "is required"));
    }
    if image.starts_with('/') || image.starts_with("./") || image.starts_with("../") {
        let absolute = std::path::absolute(Path::new(image))
            .map_err(|e| InvalidOption::new("image", format!("cannot resolve {image}: {e}")))?;
        return Ok(if absolute.is_file() {
            ImageSource::Disk(absolute)
        } else {
            ImageSource::Directory(absolute)
        });
    }
    Ok(ImageSource::Reference(image.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_refuses_what_ties_a_sandbox_to_its_claimer() {
        assert!(check_poolable(&options()).is_ok());
        let refused = |options: SandboxOptions| check_poolable(&options).unwrap_err().field;
        assert_eq!(
            refused(SandboxOptions {
                name: Some("w".into()),
                ..options()
            }),
            "name"
        );
        assert_eq!(
            refused(SandboxOptions {
                detached: Some(true),
                ..options()
            }),
            "detached"
        );
        assert!(check_poolable(&SandboxOptions {
            detached: Some(false),
            ..options()
        })
        .is_ok());
        assert_eq!(
            refused(SandboxOptions {
                persistent: Some(true),
                ..options()
            }),
            "persistent"
        );
        assert_eq!(
            refused(SandboxOptions {
                idle_timeout_ms: Some(5000.0),
                ..options()
            }),
            "idleTimeoutMs"
        );
        assert_eq!(
            refused(SandboxOptions {
                max_lifetime_ms: Some(5000.0),
                ..options()
            }),
            "maxLifetimeMs"
        );
        assert_eq!(
            refused(SandboxOptions {
                rootfs_path: Some("/r".into()),
                ..options()
            }),
            "rootfsPath"
        );
    }

    fn options() -> SandboxOptions {
        SandboxOptions {
            image: "/srv/root".into(),
            ..Default::default()
        }
    }

    fn field_of(result: Result<SandboxConfig, InvalidOption>) -> String {
        result.expect_err("should be rejected").field
    }

    #[test]
    fn defaults_apply() {
        let config = options().validate().unwrap();
        assert_eq!(config.cpus, DEFAULT_CPUS);
        assert_eq!(config.memory_mib, DEFAULT_MEMORY_MIB);
        assert_eq!(config.image, ImageSource::Directory("/srv/root".into()));
        assert!(!config.named);
        assert_eq!(config.pull_policy, PullPolicy::IfMissing);
        let env = environment(&[], &config.env);
        assert!(env.contains(&("PATH".into(), format!("{DEFAULT_PATH}:{SCRIPTS_DIR}"))));
    }

    #[test]
    fn numbers_must_be_integers_in_range() {
        for bad in [0.0, -1.0, 1.5, 65.0, f64::NAN] {
            let opts = SandboxOptions {
                cpus: Some(bad),
                ..options()
            };
            assert_eq!(field_of(opts.validate()), "cpus", "cpus {bad}");
        }
        for bad in [-1.0, 0.0, 64.0, 512.5, 1e9] {
            let opts = SandboxOptions {
                memory_mib: Some(bad),
                ..options()
            };
            assert_eq!(field_of(opts.validate()), "memoryMib", "memoryMib {bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(64)] {
            let opts = SandboxOptions {
                name: Some(bad.to_string()),
                ..options()
            };
            assert_eq!(field_of(opts.validate()), "name", "name {bad:?}");
        }
        let opts = SandboxOptions {
            name: Some("web-1.test_a".into()),
            ..options()
        };
        assert_eq!(opts.validate().unwrap().name, "web-1.test_a");
    }

    #[test]
    fn images_are_directories_disk_files_or_references() {
        let reference = SandboxOptions {
            image: "python:3.12".into(),
            ..Default::default()
        };
        assert_eq!(
            reference.validate().unwrap().image,
            ImageSource::Reference("python:3.12".into())
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        let disk = SandboxOptions {
            image: file.path().display().to_string(),
            ..Default::default()
        };
        assert_eq!(
            disk.validate().unwrap().image,
            ImageSource::Disk(file.path().to_path_buf())
        );
        assert_eq!(field_of(SandboxOptions::default().validate()), "image");
        let policy = SandboxOptions {
            pull_policy: Some("sometimes".into()),
            ..options()
        };
        assert_eq!(field_of(policy.validate()), "pullPolicy");
    }

    #[test]
    fn env_is_checked_and_overrides_defaults() {
        let opts = SandboxOptions {
            env: vec![("A=B".into(), "x".into())],
            ..options()
        };
        assert_eq!(field_of(opts.validate()), "env");
        let opts = SandboxOptions {
            env: vec![("PATH".into(), "/bin".into()), ("X".into(), "1".into())],
            ..options()
        };
        let env = environment(
            &["X=from-image".into(), "Y=2".into()],
            &opts.validate().unwrap().env,
        );
        assert_eq!(env[0], ("PATH".into(), format!("/bin:{SCRIPTS_DIR}")));
        assert!(env.contains(&("X".into(), "1".into())));
        assert!(env.contains(&("Y".into(), "2".into())));
    }

    #[test]
    fn workdir_must_be_absolute() {
        let opts = SandboxOptions {
            workdir: Some("tmp".into()),
            ..options()
        };
        assert_eq!(field_of(opts.validate()), "workdir");
    }
}
