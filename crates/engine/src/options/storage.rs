//! Storage options: `volumes` (named volumes, bind mounts, tmpfs, each at a
//! guest path) and the persistent root (`persistent`, `rootfsSizeMib`).
//! Every error names the field as callers spell it: `volumes["/data"]`.

use std::path::{Path, PathBuf};

use super::integer_in;
use crate::error::InvalidOption;

/// The most mounts one sandbox may have: each is a virtio device, and the
/// machine has a few dozen slots in all.
pub const MAX_MOUNTS: usize = 16;
/// Largest tmpfs mount and volume quota, in MiB (1 TiB).
pub const MAX_SIZE_MIB: u32 = 1 << 20;
/// Smallest ext4 disk (a volume quota or a persistent root) that holds a journal and some data.
pub const MIN_DISK_MIB: u32 = 16;
pub const DEFAULT_ROOTFS_SIZE_MIB: u32 = 4096;
/// Guest paths no volume may cover: the kernel's filesystems and the scripts directory.
const RESERVED: [&str; 4] = ["/proc", "/sys", "/dev", "/.msb"];

/// One entry of `volumes`, as callers give it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MountOption {
    /// The guest path (the key of `volumes`).
    pub path: String,
    /// "named", "bind" or "tmpfs".
    pub kind: String,
    /// The volume's name (`named`) or the host directory (`bind`).
    pub source: Option<String>,
    pub readonly: Option<bool>,
    /// `tmpfs` only.
    pub size_mib: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    Named(String),
    /// An absolute host directory.
    Bind(PathBuf),
    Tmpfs {
        size_mib: u32,
    },
}

/// A validated mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    /// Absolute and normalized.
    pub path: String,
    pub kind: MountKind,
    pub readonly: bool,
}

/// Validates `volumes`: absolute, distinct guest paths outside the reserved
/// ones; named volumes by a valid name; bind sources existing host
/// directories (relative ones resolved against the current directory). The
/// result is sorted so that a mount comes after any mount it lies inside.
pub fn validate_mounts(options: &[MountOption]) -> Result<Vec<MountConfig>, InvalidOption> {
    if options.len() > MAX_MOUNTS {
        return Err(InvalidOption::new(
            "volumes",
            format!("{} mounts; at most {MAX_MOUNTS}", options.len()),
        ));
    }
    let mut mounts: Vec<MountConfig> = Vec::with_capacity(options.len());
    for option in options {
        let field = format!("volumes[{:?}]", option.path);
        let path = normalize_guest_path(&field, &option.path)?;
        if mounts.iter().any(|m| m.path == path) {
            return Err(InvalidOption::new(
                field,
                format!("{path} is mounted twice"),
            ));
        }
        let readonly = option.readonly.unwrap_or(false);
        let source = || {
            option
                .source
                .as_deref()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    InvalidOption::new(&field, format!("{} needs a source", option.kind))
                })
        };
        let kind = match option.kind.as_str() {
            "named" => {
                let name = source()?;
                validate_volume_name(&field, name)?;
                MountKind::Named(name.to_string())
            }
            "bind" => MountKind::Bind(bind_source(&field, source()?)?),
            "tmpfs" => {
                if option.readonly == Some(true) {
                    return Err(InvalidOption::new(
                        field,
                        "a read-only tmpfs would stay empty",
                    ));
                }
                let size_mib = integer_in(&field, option.size_mib, 64, 1, MAX_SIZE_MIB)?;
                MountKind::Tmpfs { size_mib }
            }
            other => {
                return Err(InvalidOption::new(
                    field,
                    format!("{other:?} is not one of \"named\", \"bind\", \"tmpfs\""),
                ))
            }
        };
        mounts.push(MountConfig {
            path,
            kind,
            readonly,
        });
    }
    mounts.sort_by_key(|m| m.path.matches('/').count());
    Ok(mounts)
}

/// Volume names follow sandbox names' rules: they name a host directory.
pub fn validate_volume_name(field: &str, name: &str) -> Result<(), InvalidOption> {
    if !is_valid_name(name, 63) {
        return Err(InvalidOption::new(
            field,
            format!(
                "{name:?} is not a valid volume name: use 1 to 63 letters, digits, '-', '_' or '.', \
                 starting with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// Sandbox and volume names: 1 to `max_len` letters, digits, '-', '_' or
/// '.', starting with a letter or digit (they name host directories).
pub(crate) fn is_valid_name(name: &str, max_len: usize) -> bool {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    !name.is_empty() && name.len() <= max_len && valid_chars && starts_well
}

fn normalize_guest_path(field: &str, path: &str) -> Result<String, InvalidOption> {
    if !path.starts_with('/') || path.contains('\0') || path.len() > 1024 {
        return Err(InvalidOption::new(
            field,
            format!("{path:?} must be an absolute guest path"),
        ));
    }
    let mut parts = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(InvalidOption::new(
                field,
                format!("{path:?} may not contain '.' or '..'"),
            ));
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(InvalidOption::new(
            field,
            "a volume cannot replace the root",
        ));
    }
    let normalized = format!("/{}", parts.join("/"));
    if let Some(reserved) = RESERVED
        .iter()
        .find(|r| normalized == **r || normalized.starts_with(&format!("{r}/")))
    {
        return Err(InvalidOption::new(
            field,
            format!("{reserved} is the sandbox's own; mount elsewhere"),
        ));
    }
    Ok(normalized)
}

/// Like patches' host paths: absolute, or `./` / `../` (or `.`) from the
/// current directory; made absolute.
fn host_path(field: &str, path: &str) -> Result<PathBuf, InvalidOption> {
    let relative = path.starts_with("./") || path.starts_with("../") || path == ".";
    if !path.starts_with('/') && !relative {
        return Err(InvalidOption::new(
            field,
            format!("{path:?}: a host path is absolute or starts with ./ or ../"),
        ));
    }
    std::path::absolute(Path::new(path))
        .map_err(|e| InvalidOption::new(field, format!("cannot resolve {path}: {e}")))
}

/// A bind mount's source: an existing host directory.
fn bind_source(field: &str, source: &str) -> Result<PathBuf, InvalidOption> {
    let absolute = host_path(field, source)?;
    match std::fs::metadata(&absolute) {
        Ok(meta) if meta.is_dir() => Ok(absolute),
        Ok(_) => Err(InvalidOption::new(
            field,
            format!("{} is not a directory", absolute.display()),
        )),
        Err(err) => Err(InvalidOption::new(
            field,
            format!("{}: {err}", absolute.display()),
        )),
    }
}

/// A validated persistent root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentRoot {
    /// Size of the disk when it is first made.
    pub size_mib: u32,
    /// Where the disk is (`rootfsPath`); `None`: in the sandbox directory.
    pub path: Option<PathBuf>,
}

/// `persistent`, `rootfsSizeMib` and `rootfsPath`: a kept root needs a name
/// to be found again; its size and path apply only to it.
pub fn validate_persistent(
    named: bool,
    persistent: Option<bool>,
    rootfs_size_mib: Option<f64>,
    rootfs_path: Option<&str>,
) -> Result<Option<PersistentRoot>, InvalidOption> {
    if persistent != Some(true) {
        for (field, given) in [
            ("rootfsSizeMib", rootfs_size_mib.is_some()),
            ("rootfsPath", rootfs_path.is_some()),
        ] {
            if given {
                return Err(InvalidOption::new(
                    field,
                    "applies to a persistent root: set persistent: true",
                ));
            }
        }
        return Ok(None);
    }
    if !named {
        return Err(InvalidOption::new(
            "persistent",
            "a persistent root is found again by the sandbox's name: give a name",
        ));
    }
    let size_mib = integer_in(
        "rootfsSizeMib",
        rootfs_size_mib,
        DEFAULT_ROOTFS_SIZE_MIB,
        MIN_DISK_MIB.max(64),
        MAX_SIZE_MIB,
    )?;
    let path = rootfs_path.map(root_disk_path).transpose()?;
    Ok(Some(PersistentRoot { size_mib, path }))
}

/// `rootfsPath`: a file (made on first use) in an existing host directory.
fn root_disk_path(path: &str) -> Result<PathBuf, InvalidOption> {
    let field = "rootfsPath";
    let absolute = host_path(field, path)?;
    let parent_is_dir = absolute.parent().is_some_and(Path::is_dir);
    if !parent_is_dir {
        return Err(InvalidOption::new(
            field,
            format!("the directory of {} does not exist", absolute.display()),
        ));
    }
    match std::fs::symlink_metadata(&absolute) {
        Ok(meta) if !meta.is_file() => Err(InvalidOption::new(
            field,
            format!("{} exists and is not a regular file", absolute.display()),
        )),
        _ => Ok(absolute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(path: &str, kind: &str, source: Option<&str>) -> MountOption {
        MountOption {
            path: path.into(),
            kind: kind.into(),
            source: source.map(str::to_string),
            ..Default::default()
        }
    }

    fn field(options: &[MountOption]) -> String {
        validate_mounts(options)
            .expect_err("should be refused")
            .field
    }

    #[test]
    fn guest_paths_are_absolute_distinct_and_not_reserved() {
        assert_eq!(field(&[mount("data", "tmpfs", None)]), "volumes[\"data\"]");
        assert_eq!(field(&[mount("/", "tmpfs", None)]), "volumes[\"/\"]");
        assert_eq!(
            field(&[mount("/a/../b", "tmpfs", None)]),
            "volumes[\"/a/../b\"]"
        );
        assert_eq!(
            field(&[mount("/proc/x", "tmpfs", None)]),
            "volumes[\"/proc/x\"]"
        );
        assert_eq!(
            field(&[mount("/.msb", "tmpfs", None)]),
            "volumes[\"/.msb\"]"
        );
        assert_eq!(
            field(&[mount("/d", "tmpfs", None), mount("/d/", "tmpfs", None)]),
            "volumes[\"/d/\"]"
        );
        let ok =
            validate_mounts(&[mount("/a/b/", "tmpfs", None), mount("/a", "tmpfs", None)]).unwrap();
        assert_eq!(
            ok.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(),
            ["/a", "/a/b"],
            "parents first"
        );
    }

    #[test]
    fn sources_are_checked() {
        assert_eq!(field(&[mount("/v", "named", None)]), "volumes[\"/v\"]");
        assert_eq!(
            field(&[mount("/v", "named", Some("../x"))]),
            "volumes[\"/v\"]"
        );
        assert_eq!(
            field(&[mount("/v", "bind", Some("relative"))]),
            "volumes[\"/v\"]"
        );
        assert_eq!(
            field(&[mount("/v", "bind", Some("/nonexistent/msb-bind"))]),
            "volumes[\"/v\"]"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        let file = file.path().display().to_string();
        assert_eq!(
            field(&[mount("/v", "bind", Some(&file))]),
            "volumes[\"/v\"]"
        );
        assert_eq!(field(&[mount("/v", "nfs", None)]), "volumes[\"/v\"]");
        let dir = tempfile::tempdir().unwrap();
        let ok = validate_mounts(&[mount("/v", "bind", Some(&dir.path().display().to_string()))])
            .unwrap();
        assert_eq!(ok[0].kind, MountKind::Bind(dir.path().to_path_buf()));
    }

    #[test]
    fn tmpfs_sizes_and_count_are_bounded() {
        let mut big = mount("/t", "tmpfs", None);
        big.size_mib = Some(f64::from(MAX_SIZE_MIB) + 1.0);
        assert_eq!(field(&[big]), "volumes[\"/t\"]");
        let many: Vec<MountOption> = (0..=MAX_MOUNTS)
            .map(|i| mount(&format!("/t{i}"), "tmpfs", None))
            .collect();
        assert_eq!(field(&many), "volumes");
    }

    #[test]
    fn a_persistent_root_needs_a_name_and_a_usable_path() {
        let field = |r: Result<Option<PersistentRoot>, InvalidOption>| r.unwrap_err().field;
        assert_eq!(
            field(validate_persistent(false, Some(true), None, None)),
            "persistent"
        );
        assert_eq!(
            field(validate_persistent(true, None, Some(100.0), None)),
            "rootfsSizeMib"
        );
        assert_eq!(
            field(validate_persistent(true, Some(false), None, Some("/tmp/x"))),
            "rootfsPath"
        );
        for bad in ["relative.img", "/nonexistent-dir/root.img", "/tmp"] {
            assert_eq!(
                field(validate_persistent(true, Some(true), None, Some(bad))),
                "rootfsPath",
                "{bad}"
            );
        }
        assert_eq!(
            validate_persistent(true, Some(true), None, Some("/tmp/root.img")).unwrap(),
            Some(PersistentRoot {
                size_mib: DEFAULT_ROOTFS_SIZE_MIB,
                path: Some("/tmp/root.img".into())
            })
        );
    }
}
