//! Scripts and patches: changes to a sandbox's root made before `create`
//! returns, so no process of the caller's ever sees the root without them.
//!
//! They are written through the guest filesystem API right after the agent
//! reports ready (`crate::launch::apply_patches`), into the sandbox's private
//! overlay: the shared image is never touched, and a second sandbox of the
//! same image sees none of them. Paths resolve as the guest resolves them (the
//! image's own symlinks apply).
//!
//! Validation happens on the host before any process starts: every path must be
//! absolute, a copied host path must exist, and no patch may need a directory
//! where the image (or an earlier patch) has a file. The image is inspected
//! through the same symlink rules, confined to the image root.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::error::InvalidOption;

/// Where scripts live in the guest; the directory is added to `PATH`.
pub const SCRIPTS_DIR: &str = "/.msb/scripts";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Patch {
    /// Create or replace a file (mode default 0644).
    Text {
        path: String,
        content: Vec<u8>,
        mode: Option<u32>,
    },
    /// Create a directory and its parents (mode default 0755).
    Mkdir { path: String, mode: Option<u32> },
    /// Append to a file, creating it if missing.
    Append { path: String, content: Vec<u8> },
    /// Copy a host file or directory tree to a guest path.
    Copy { host_path: PathBuf, path: String },
}

impl Patch {
    pub fn path(&self) -> &str {
        match self {
            Patch::Text { path, .. }
            | Patch::Mkdir { path, .. }
            | Patch::Append { path, .. }
            | Patch::Copy { path, .. } => path,
        }
    }
}

/// Scripts as patches: executable files in [`SCRIPTS_DIR`].
pub fn scripts_as_patches(scripts: &[(String, String)]) -> Result<Vec<Patch>, InvalidOption> {
    scripts
        .iter()
        .map(|(name, content)| {
            let valid = !name.is_empty()
                && name.len() <= 255
                && name != "."
                && name != ".."
                && !name.contains('/')
                && !name.contains('\0');
            if !valid {
                return Err(InvalidOption::new(
                    format!("scripts.{name}"),
                    "a script name must be a file name (no '/', not '.' or '..')",
                ));
            }
            Ok(Patch::Text {
                path: format!("{SCRIPTS_DIR}/{name}"),
                content: content.as_bytes().to_vec(),
                mode: Some(0o755),
            })
        })
        .collect()
}

/// What a path is in the merged view of the image and earlier patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    NotDir,
}

/// Checks every patch; `field` names the list (`patches`) for error messages.
pub fn validate(patches: &[Patch], image: &Path, field: &str) -> Result<(), InvalidOption> {
    let mut created: BTreeMap<String, Kind> = BTreeMap::new();
    for (i, patch) in patches.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let path = normalize(patch.path()).ok_or_else(|| {
            InvalidOption::new(
                &field,
                format!("{:?} must be an absolute guest path", patch.path()),
            )
        })?;
        if path == "/" && !matches!(patch, Patch::Mkdir { .. }) {
            return Err(InvalidOption::new(
                &field,
                "cannot replace the root directory",
            ));
        }
        if let Patch::Copy { host_path, .. } = patch {
            if let Err(err) = std::fs::symlink_metadata(host_path) {
                return Err(InvalidOption::new(
                    &field,
                    format!("host path {}: {err}", host_path.display()),
                ));
            }
        }
        // Every ancestor must be (or become) a directory.
        for ancestor in ancestors(&path) {
            let kind = created
                .get(&ancestor)
                .copied()
                .or_else(|| kind_in_image(image, &ancestor));
            if kind == Some(Kind::NotDir) {
                return Err(InvalidOption::new(
                    &field,
                    format!("{path}: its parent {ancestor} is a file"),
                ));
            }
            created.entry(ancestor).or_insert(Kind::Dir);
        }
        let kind = match patch {
            Patch::Mkdir { .. } => Kind::Dir,
            Patch::Copy { host_path, .. } if host_path.is_dir() => Kind::Dir,
            _ => Kind::NotDir,
        };
        let existing = created
            .get(&path)
            .copied()
            .or_else(|| kind_in_image(image, &path));
        if existing == Some(Kind::Dir) && kind == Kind::NotDir {
            return Err(InvalidOption::new(&field, format!("{path} is a directory")));
        }
        created.insert(path, kind);
    }
    Ok(())
}

/// `path` made absolute-lexical: `.` and empty parts dropped, `..` applied.
/// `None` for relative paths or NUL bytes.
fn normalize(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

pub(crate) fn parent_of(path: &str) -> String {
    let normalized = normalize(path).unwrap_or_else(|| "/".into());
    match normalized.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => normalized[..i].to_string(),
    }
}

/// Proper ancestors of a normalized path, outermost first, without `/`.
fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        current.push('/');
        current.push_str(part);
        out.push(current.clone());
    }
    out
}

/// Symlinks followed before giving up, as the kernel's limit.
const MAX_SYMLINKS: usize = 40;

/// What `guest_path` is inside the image directory, resolving symlinks the way
/// the guest would: absolute targets from the image root, `..` stopping at it.
fn kind_in_image(image: &Path, guest_path: &str) -> Option<Kind> {
    let mut pending: Vec<String> = guest_path
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut followed = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let mut host = image.to_path_buf();
        host.extend(resolved.iter());
        host.push(&part);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            followed += 1;
            if followed > MAX_SYMLINKS {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            if target.has_root() {
                resolved.clear();
            }
            let parts: Vec<String> = target
                .components()
                .filter_map(|c| match c {
                    Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                })
                .collect();
            pending.extend(parts.into_iter().rev());
            continue;
        }
        if !meta.is_dir() {
            // A file, at the end of the path or in its middle (then nothing
            // below it can exist): either way, not a directory.
            return Some(Kind::NotDir);
        }
        resolved.push(part);
    }
    Some(Kind::Dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        // Merged /usr, as Debian has it, and a link that tries to leave the root.
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("usr/escape")).unwrap();
        dir
    }

    fn text(path: &str) -> Patch {
        Patch::Text {
            path: path.into(),
            content: b"x".to_vec(),
            mode: None,
        }
    }

    #[test]
    fn resolves_symlinks_inside_the_image_root() {
        let dir = image();
        assert_eq!(kind_in_image(dir.path(), "/bin"), Some(Kind::Dir));
        assert_eq!(kind_in_image(dir.path(), "/etc/passwd"), Some(Kind::NotDir));
        // `..` stops at the image root, as in the guest: this is the image's /etc.
        assert_eq!(
            kind_in_image(dir.path(), "/usr/escape/passwd"),
            Some(Kind::NotDir)
        );
        assert_eq!(kind_in_image(dir.path(), "/nothing/here"), None);
    }

    #[test]
    fn accepts_new_files_under_existing_and_new_directories() {
        let dir = image();
        let patches = vec![
            text("/etc/app/config"),
            text("/bin/tool"),
            Patch::Mkdir {
                path: "/srv/data".into(),
                mode: None,
            },
            text("/srv/data/x"),
        ];
        validate(&patches, dir.path(), "patches").unwrap();
    }

    #[test]
    fn rejects_relative_paths_and_files_used_as_directories() {
        let dir = image();
        let err = validate(&[text("etc/x")], dir.path(), "patches").unwrap_err();
        assert_eq!(err.field, "patches[0]");

        let err = validate(&[text("/etc/passwd/x")], dir.path(), "patches").unwrap_err();
        assert_eq!(err.field, "patches[0]");
        assert!(err.problem.contains("is a file"), "{}", err.problem);

        // An earlier patch's file counts too.
        let err = validate(&[text("/opt/a"), text("/opt/a/b")], dir.path(), "patches").unwrap_err();
        assert_eq!(err.field, "patches[1]");

        let err = validate(&[text("/etc")], dir.path(), "patches").unwrap_err();
        assert!(err.problem.contains("is a directory"));
    }

    #[test]
    fn copy_needs_an_existing_host_path() {
        let dir = image();
        let copy = Patch::Copy {
            host_path: "/definitely/not/here".into(),
            path: "/x".into(),
        };
        let err = validate(&[copy], dir.path(), "patches").unwrap_err();
        assert!(err.problem.contains("/definitely/not/here"));
    }

    #[test]
    fn script_names_must_be_file_names() {
        assert!(scripts_as_patches(&[("setup".into(), "#!/bin/sh\n".into())]).is_ok());
        for bad in ["", "a/b", "..", "."] {
            let err = scripts_as_patches(&[(bad.into(), String::new())]).unwrap_err();
            assert_eq!(err.field, format!("scripts.{bad}"));
        }
    }

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(normalize("/a/./b//c/../d").as_deref(), Some("/a/b/d"));
        assert_eq!(normalize("/../..").as_deref(), Some("/"));
        assert_eq!(normalize("a"), None);
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(ancestors("/a/b/c"), vec!["/a", "/a/b"]);
    }
}
