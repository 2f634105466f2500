//! Options as callers give them ([`SandboxOptions`], numbers as JavaScript has
//! them) and the validated configuration the engine builds from them
//! ([`SandboxConfig`]). Every rule names the field it checks.

use std::path::{Path, PathBuf};

use crate::error::InvalidOption;
use crate::patch::{self, Patch, SCRIPTS_DIR};

pub const DEFAULT_CPUS: u8 = 1;
pub const MAX_CPUS: u8 = 64;
pub const DEFAULT_MEMORY_MIB: u32 = 512;
pub const MIN_MEMORY_MIB: u32 = 128;
pub const MAX_MEMORY_MIB: u32 = 64 * 1024;
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Clone, Default)]
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A directory on the host used as the (read-only) root.
    Directory(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    pub name: String,
    /// Whether the caller chose the name (a generated one is not worth keeping logs under).
    pub named: bool,
    pub image: ImageSource,
    pub cpus: u8,
    pub memory_mib: u32,
    /// Complete environment of every process: defaults, then the caller's.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// Scripts (as patches) then patches, validated against the image.
    pub patches: Vec<Patch>,
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
        let mut env = vec![
            ("PATH".to_string(), DEFAULT_PATH.to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        merge_env(&mut env, self.env);
        // Scripts are always reachable by name, whatever PATH the caller set.
        if let Some((_, path)) = env.iter_mut().find(|(k, _)| k == "PATH") {
            path.push(':');
            path.push_str(SCRIPTS_DIR);
        }
        if let Some(workdir) = &self.workdir {
            validate_guest_path("workdir", workdir)?;
        }
        let mut patches = patch::scripts_as_patches(&self.scripts)?;
        let ImageSource::Directory(root) = &image;
        // Scripts live under /.msb, which images do not have; only patches can
        // collide with the image, so only they are named in errors.
        patch::validate(&self.patches, root, "patches")?;
        patches.extend(self.patches);
        Ok(SandboxConfig {
            name,
            named,
            image,
            cpus,
            memory_mib,
            env,
            workdir: self.workdir,
            patches,
        })
    }
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

fn validate_name(name: &str) -> Result<String, InvalidOption> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars || !starts_well {
        return Err(InvalidOption::new(
            "name",
            format!(
                "{name:?} is not a valid sandbox name: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit"
            ),
        ));
    }
    Ok(name.to_string())
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

fn parse_image(image: &str) -> Result<ImageSource, InvalidOption> {
    if image.is_empty() {
        return Err(InvalidOption::new("image", "is required"));
    }
    if image.starts_with('/') || image.starts_with("./") || image.starts_with("../") {
        let path = Path::new(image);
        let absolute = std::path::absolute(path)
            .map_err(|e| InvalidOption::new("image", format!("cannot resolve {image}: {e}")))?;
        return Ok(ImageSource::Directory(absolute));
    }
    Err(InvalidOption::new(
        "image",
        format!(
            "{image:?}: OCI image references are not supported yet; pass a root filesystem directory (an absolute path or one starting with ./)"
        ),
    ))
}

fn integer_in(
    field: &str,
    value: Option<f64>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, InvalidOption> {
    let Some(value) = value else {
        return Ok(default);
    };
    if value.fract() != 0.0 || !value.is_finite() || value < min as f64 || value > max as f64 {
        return Err(InvalidOption::new(
            field,
            format!("must be an integer from {min} to {max}, got {value}"),
        ));
    }
    Ok(value as u32)
}

pub fn validate_env(field: &str, env: &[(String, String)]) -> Result<(), InvalidOption> {
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(InvalidOption::new(
                field,
                format!("{key:?} is not a valid variable name"),
            ));
        }
        if value.contains('\0') {
            return Err(InvalidOption::new(
                format!("{field}.{key}"),
                "contains a NUL byte",
            ));
        }
    }
    Ok(())
}

pub fn validate_guest_path(field: &str, path: &str) -> Result<(), InvalidOption> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(InvalidOption::new(
            field,
            format!("{path:?} must be an absolute guest path"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(config
            .env
            .contains(&("PATH".into(), format!("{DEFAULT_PATH}:{SCRIPTS_DIR}"))));
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
    fn image_must_be_a_path_for_now() {
        let opts = SandboxOptions {
            image: "python:3.12".into(),
            ..Default::default()
        };
        assert_eq!(field_of(opts.validate()), "image");
        assert_eq!(field_of(SandboxOptions::default().validate()), "image");
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
        let env = opts.validate().unwrap().env;
        assert_eq!(env[0], ("PATH".into(), format!("/bin:{SCRIPTS_DIR}")));
        assert!(env.contains(&("X".into(), "1".into())));
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
