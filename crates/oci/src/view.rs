//! Building an image's root filesystem ("view") from its unpacked layers, without copying data.
//!
//! # Contract
//!
//! [`build_view`] is synchronous (run it on a blocking pool). `layers` are directories produced
//! by [`crate::unpack::unpack_layer`], bottom layer first; `target` is an existing, empty
//! directory on the same filesystem, written by nobody else while this runs. The caller builds
//! into a temporary directory and renames it into place on success, deletes it on error. The
//! layer directories are only read; their files gain hard links, nothing else changes.
//!
//! # Result
//!
//! `target` becomes the merged tree an overlay mount of the layers would show:
//!
//! - Every non-directory (regular file, symlink, FIFO) is a hard link to the file in the
//!   topmost layer that has the path. A symlink is linked as the symlink itself (`linkat`
//!   without `AT_SYMLINK_FOLLOW`), never to what it points at. The view shares inodes, and so
//!   mode, owner and times, with the layer cache: it must stay read-only (it is shared into the
//!   VM read-only over 9p, with an overlay in the guest taking writes).
//! - Every directory is a real directory with the mode, owner, times and allowed extended
//!   attributes of the topmost layer that has it, applied after the tree is complete, deepest
//!   first (adding entries changes a directory's mtime). The view root takes its metadata from
//!   the top layer's root.
//! - A layer replaces what lower layers had at a path: a directory over a file or symlink
//!   replaces it (the symlink is removed, never traversed), a non-directory over a directory
//!   removes the directory and everything below it.
//!
//! # Whiteouts (OCI image spec, "Representing Changes")
//!
//! - `.wh.<name>` in a layer directory removes `<name>`, recursively if it is a directory, from
//!   what the lower layers put in that directory. It never appears in the view. Whiteouts of a
//!   layer are applied before that layer's own entries, so a layer may delete a path and
//!   recreate it.
//! - `.wh..wh..opq` in a layer directory hides everything lower layers put in that directory,
//!   but not what the same layer puts there; the directory itself stays.
//! - Other names starting with `.wh..wh.` are AUFS bookkeeping and are ignored.
//! - A whiteout naming `.`, `..` or nothing is [`ViewError::InvalidWhiteout`].
//!
//! # Safety
//!
//! Every operation is relative to a directory descriptor reached from the layer or target root
//! with `O_NOFOLLOW` (or `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), as in
//! [`crate::unpack`]: no symlink in a layer or in the view under construction is ever followed,
//! so a layer cannot make this code read or write outside the layer and target directories. The
//! walk holds two descriptors per directory level; the unpacker bounds layer depth.
//!
//! # Limits
//!
//! Hard links are counted per inode and filesystems cap them (65,000 on ext4): a layer file
//! shared by that many views fails with `EMLINK` ([`ViewError::Io`]). Views are built once per
//! image, not per sandbox, so this bounds the number of images sharing a layer, not sandboxes.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{
    fchmod, fchown, fgetxattr, flistxattr, fsetxattr, fstat, futimens, linkat, mkdirat, unlinkat,
    AtFlags, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use crate::unpack::fsops::{self, Removed, WalkError};
use crate::unpack::path::{self, RelPath, MAX_DEPTH};

/// The opaque-directory marker.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Prefix of whiteout files.
const WHITEOUT: &[u8] = b".wh.";
/// Prefix of AUFS metadata (and of [`OPAQUE`]).
const AUFS_META: &[u8] = b".wh..wh.";

/// What the view holds when [`build_view`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewReport {
    /// Non-directories (hard links into the layers).
    pub files: u64,
    /// Directories, not counting the view root.
    pub dirs: u64,
}

/// Why a view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A layer directory cannot be opened.
    #[error("cannot open layer {layer:?}")]
    OpenLayer {
        layer: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The target directory cannot be opened.
    #[error("cannot open view directory {target:?}")]
    OpenTarget {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The target directory has entries already.
    #[error("view directory {target:?} is not empty")]
    TargetNotEmpty { target: PathBuf },
    /// A whiteout names `.`, `..` or nothing.
    #[error("layer {layer:?}: invalid whiteout {path:?}")]
    InvalidWhiteout { layer: PathBuf, path: String },
    /// A layer is nested deeper than any unpacked layer can be.
    #[error("layer {layer:?}: {path:?} is nested too deeply")]
    TooDeep { layer: PathBuf, path: String },
    /// A layer and the target are on different filesystems, so they cannot share inodes.
    #[error("layer {layer:?} is not on the view's filesystem")]
    CrossDevice {
        layer: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A filesystem operation failed.
    #[error("cannot {op} {path:?}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Builds the merged view of `layers` (bottom first) in `target`. See the module documentation.
pub fn build_view(layers: &[&Path], target: &Path) -> Result<ViewReport, ViewError> {
    let target_fd = fsops::open_root(target).map_err(|source| ViewError::OpenTarget {
        target: target.to_owned(),
        source,
    })?;
    let existing = fsops::list_dir(target_fd.as_fd()).map_err(|source| ViewError::OpenTarget {
        target: target.to_owned(),
        source,
    })?;
    if !existing.is_empty() {
        return Err(ViewError::TargetNotEmpty {
            target: target.to_owned(),
        });
    }
    let layer_fds = layers
        .iter()
        .map(|layer| {
            fsops::open_root(layer).map_err(|source| ViewError::OpenLayer {
                layer: layer.to_path_buf(),
                source,
            })
        })
        .collect::<Result<Vec<OwnedFd>, ViewError>>()?;

    let mut builder = Builder {
        target,
        target_fd: target_fd.as_fd(),
        report: ViewReport::default(),
        dir_sources: BTreeMap::new(),
    };
    for (index, (layer, fd)) in layers.iter().zip(&layer_fds).enumerate() {
        let layer = Layer {
            index,
            path: layer,
            fd: fd.as_fd(),
        };
        builder.dir_sources.insert(Vec::new(), index);
        builder.merge_dir(&layer, fd.as_fd(), target_fd.as_fd(), &RelPath::root())?;
    }
    builder.finish(layers, &layer_fds)
}

/// One layer being merged.
struct Layer<'a> {
    index: usize,
    path: &'a Path,
    fd: BorrowedFd<'a>,
}

impl Layer<'_> {
    fn err(&self, op: &'static str, rel: &[u8], source: io::Error) -> ViewError {
        ViewError::Io {
            op,
            path: join_display(self.path, rel),
            source,
        }
    }
}

/// State of one view build.
struct Builder<'a> {
    target: &'a Path,
    target_fd: BorrowedFd<'a>,
    report: ViewReport,
    /// For every directory in the view (by relative path, "" for the root), the index of the
    /// topmost layer that has it: where its metadata comes from.
    dir_sources: BTreeMap<Vec<u8>, usize>,
}

impl Builder<'_> {
    /// Merges the layer directory `src` (at `rel`) into the view directory `dst`.
    fn merge_dir(
        &mut self,
        layer: &Layer<'_>,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &RelPath,
    ) -> Result<(), ViewError> {
        if rel.depth() > MAX_DEPTH {
            return Err(ViewError::TooDeep {
                layer: layer.path.to_owned(),
                path: rel.display(),
            });
        }
        let entries = fsops::list_dir(src).map_err(|e| layer.err("list", rel.as_bytes(), e))?;

        // Lower layers' contents go first, then this layer's own entries are added.
        if entries.iter().any(|(name, _)| name == OPAQUE) {
            let removed =
                fsops::clear_dir(dst).map_err(|e| self.err("clear", rel.as_bytes(), e))?;
            self.subtract(removed);
            self.forget_below(rel.as_bytes());
        }
        for (name, _) in &entries {
            let Some(hidden) = name.strip_prefix(WHITEOUT) else {
                continue;
            };
            if name.starts_with(AUFS_META) {
                continue;
            }
            if matches!(hidden, b"" | b"." | b"..") {
                return Err(ViewError::InvalidWhiteout {
                    layer: layer.path.to_owned(),
                    path: rel.join(name).display(),
                });
            }
            let hidden_rel = rel.join(hidden);
            let removed = fsops::remove_any(dst, hidden)
                .map_err(|e| self.err("remove", hidden_rel.as_bytes(), e))?;
            if let Some(removed) = removed {
                self.subtract(removed);
                self.forget(hidden_rel.as_bytes());
            }
        }

        for (name, kind) in &entries {
            if name.starts_with(WHITEOUT) {
                continue;
            }
            let child = rel.join(name);
            if *kind == FileType::Directory {
                self.ensure_dir(dst, name, &child)?;
                self.dir_sources
                    .insert(child.as_bytes().to_vec(), layer.index);
                let src_child = fsops::open_child_dir(src, name)
                    .map_err(|e| layer.err("open", child.as_bytes(), e))?;
                let dst_child = fsops::open_child_dir(dst, name)
                    .map_err(|e| self.err("open", child.as_bytes(), e))?;
                self.merge_dir(layer, src_child.as_fd(), dst_child.as_fd(), &child)?;
            } else {
                let removed = fsops::remove_any(dst, name)
                    .map_err(|e| self.err("remove", child.as_bytes(), e))?;
                if let Some(removed) = removed {
                    self.subtract(removed);
                    self.forget(child.as_bytes());
                }
                // No AT_SYMLINK_FOLLOW: a symlink is linked as itself.
                match linkat(src, name.as_slice(), dst, name.as_slice(), AtFlags::empty()) {
                    Ok(()) => self.report.files += 1,
                    Err(Errno::XDEV) => {
                        return Err(ViewError::CrossDevice {
                            layer: layer.path.to_owned(),
                            source: Errno::XDEV.into(),
                        })
                    }
                    Err(e) => return Err(self.err("link", child.as_bytes(), e.into())),
                }
            }
        }
        Ok(())
    }

    /// Makes `name` in `dst` a directory: keeps an existing one, replaces anything else.
    fn ensure_dir(
        &mut self,
        dst: BorrowedFd<'_>,
        name: &[u8],
        child: &RelPath,
    ) -> Result<(), ViewError> {
        let existing =
            fsops::lstat_at(dst, name).map_err(|e| self.err("inspect", child.as_bytes(), e))?;
        match existing {
            Some(st) if fsops::file_type(&st) == FileType::Directory => return Ok(()),
            Some(_) => {
                // A file or symlink below: unlinked, never followed.
                unlinkat(dst, name, AtFlags::empty())
                    .map_err(|e| self.err("remove", child.as_bytes(), e.into()))?;
                self.report.files = self.report.files.saturating_sub(1);
            }
            None => {}
        }
        // Owner-only until `finish` copies the layer's metadata.
        mkdirat(dst, name, Mode::from_raw_mode(0o700))
            .map_err(|e| self.err("create directory", child.as_bytes(), e.into()))?;
        self.report.dirs += 1;
        Ok(())
    }

    /// Copies directory metadata from the topmost layer that has each directory, deepest first.
    fn finish(self, layers: &[&Path], layer_fds: &[OwnedFd]) -> Result<ViewReport, ViewError> {
        let mut dirs: Vec<(&Vec<u8>, &usize)> = self.dir_sources.iter().collect();
        dirs.sort_by_key(|(p, _)| Reverse(path::depth_of(p)));
        for (rel, &index) in dirs {
            let layer = Layer {
                index,
                path: layers[index],
                fd: layer_fds[index].as_fd(),
            };
            let src = open_existing_dir(layer.fd, rel).map_err(|e| layer.err("open", rel, e))?;
            let dst =
                open_existing_dir(self.target_fd, rel).map_err(|e| self.err("open", rel, e))?;
            copy_dir_metadata(src.as_fd(), dst.as_fd())
                .map_err(|e| self.err("set metadata of", rel, e))?;
        }
        Ok(self.report)
    }

    fn subtract(&mut self, removed: Removed) {
        self.report.files = self.report.files.saturating_sub(removed.files);
        self.report.dirs = self.report.dirs.saturating_sub(removed.dirs);
    }

    /// Forgets metadata sources at or below `rel`, which was removed from the view.
    fn forget(&mut self, rel: &[u8]) {
        let doomed: Vec<Vec<u8>> = self
            .dir_sources
            .range(rel.to_vec()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(rel))
            .filter(|k| path::is_within(k, rel))
            .cloned()
            .collect();
        for key in doomed {
            self.dir_sources.remove(&key);
        }
    }

    /// Forgets metadata sources strictly below `rel`, whose contents were cleared.
    fn forget_below(&mut self, rel: &[u8]) {
        let keep = self.dir_sources.get(rel).copied();
        self.forget(rel);
        if let Some(index) = keep {
            self.dir_sources.insert(rel.to_vec(), index);
        }
    }

    fn err(&self, op: &'static str, rel: &[u8], source: io::Error) -> ViewError {
        ViewError::Io {
            op,
            path: join_display(self.target, rel),
            source,
        }
    }
}

/// Opens the directory at relative path `rel` below `root`, refusing symlinks.
fn open_existing_dir(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    fsops::open_dir(root, rel, false).map_err(|e| match e {
        WalkError::Io(e) => e,
        WalkError::Symlink => Errno::LOOP.into(),
        WalkError::NotDir => Errno::NOTDIR.into(),
        WalkError::Missing => Errno::NOENT.into(),
    })
}

/// Gives `dst` the owner, mode, allowed xattrs and times of `src`.
fn copy_dir_metadata(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    let st = fstat(src)?;
    fchown(
        dst,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )?;
    // After chown, which may clear setgid.
    fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    copy_xattrs(src, dst)?;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as i64,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as i64,
        },
    };
    futimens(dst, &times)?;
    Ok(())
}

/// Copies the extended attributes of `src` that [`fsops::xattr_allowed`] admits. The unpacker
/// has already reported attributes the filesystem refused; they are not reported twice.
fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let len = loop {
        match flistxattr(src, &mut names[..]) {
            Ok(len) => break len,
            Err(Errno::RANGE) if names.len() < (1 << 20) => names.resize(names.len() * 4, 0),
            Err(Errno::NOTSUP) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    };
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !fsops::xattr_allowed(name) {
            continue;
        }
        let mut value = vec![0u8; 4096];
        let value_len = loop {
            match fgetxattr(src, name, &mut value[..]) {
                Ok(len) => break Some(len),
                Err(Errno::RANGE) if value.len() < (1 << 20) => value.resize(value.len() * 4, 0),
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        let Some(value_len) = value_len else { continue };
        match fsetxattr(dst, name, &value[..value_len], XattrFlags::empty()) {
            Ok(()) => {}
            Err(e) if fsops::xattr_error_tolerable(e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `base/rel` for messages.
fn join_display(base: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        base.to_owned()
    } else {
        base.join(String::from_utf8_lossy(rel).as_ref())
    }
}
