//! Unpacking one OCI layer (a tar stream, optionally gzip- or zstd-compressed) into a directory
//! of its own, safely, whatever the archive contains.
//!
//! # Contract
//!
//! [`unpack_layer`] is synchronous and runs on the caller's thread (run it on a blocking pool).
//! `target` must be an existing, empty directory that nobody else writes to while it runs,
//! reachable by root only (the layer cache is `0700`): the caller creates it under a temporary
//! name, renames it into `$MSB_HOME/cache/layers/<digest-hex>/` on success, and deletes it on
//! error. A failed unpack leaves a partial tree behind, by design: the caller owns cleanup.
//!
//! The archive is untrusted. Whatever it contains, nothing is created, modified or read outside
//! `target`; an entry that would require it fails the whole layer.
//!
//! # Paths
//!
//! Entry paths are normalized lexically: leading `/` and `./` are dropped, so an
//! absolute path such as `/etc/passwd` names `etc/passwd` inside the layer (Docker and
//! containerd do the same); `a/../b` becomes `b`; a `..` that would climb above the root is
//! [`UnpackError::PathEscape`]. Paths longer than `PATH_MAX` or deeper than 512 components are
//! refused.
//!
//! Parent directories are resolved from a descriptor of `target` with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` or, to create missing
//! ones (mode `0755`), one `openat(O_NOFOLLOW)` per component. A symlink anywhere in the parent
//! chain is an escape, even one that points inside the layer: a layer holding `etc -> /etc`
//! followed by `etc/passwd` fails instead of writing the host's `/etc/passwd`. Well-formed layers
//! never write through their own symlinks (producers record the real path). The final component
//! is never followed either: files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` after
//! whatever was at that path has been removed.
//!
//! # Entries
//!
//! - Regular files (also contiguous and GNU sparse files): streamed to disk. Sparse files are
//!   written with holes where the archive has them; their *logical* size counts against the
//!   limits.
//! - Directories: created, or kept if an earlier entry created one (its metadata is replaced).
//! - Symlinks: the target is stored verbatim and never resolved on the host; the guest resolves
//!   it inside its own root.
//! - Hard links: the target is normalized like an entry path and must be an existing
//!   non-directory in this layer, reached without symlinks; otherwise
//!   [`UnpackError::HardlinkEscape`], [`UnpackError::HardlinkMissing`] or
//!   [`UnpackError::HardlinkToDirectory`]. The link shares the target's inode and metadata (the
//!   link entry's own mode and owner are ignored, as GNU tar does).
//! - FIFOs: created.
//! - Character and block devices: not created, listed in [`UnpackReport::skipped`]. A guest
//!   gets its device nodes from its own devtmpfs, never from an image, so an image cannot hand
//!   a sandbox (or anyone who later reads the cache) a node for a host disk.
//! - PAX global headers are ignored. Anything else (GNU volume labels, unknown types) is
//!   [`UnpackError::UnsupportedEntry`].
//! - A later entry with the same path replaces the earlier one: a non-directory is unlinked, a
//!   directory replaced by a non-directory is removed recursively (without following symlinks).
//! - OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`) are ordinary files here and are kept as they
//!   are; [`crate::view`] interprets them. A whiteout naming `.` or `..` is refused.
//!
//! # Metadata
//!
//! Numeric uid and gid (user and group names are ignored; the image's own `/etc/passwd` is what
//! the guest uses), the full mode including setuid, setgid and sticky bits, the modification
//! time (PAX `mtime` with sub-second precision when present), and extended attributes from PAX
//! `SCHILY.xattr.*` records. Only `user.*`, `security.capability` and the POSIX ACL attributes
//! are applied: `trusted.*` is read by host kernel features (a `trusted.overlay.*` attribute
//! could forge overlayfs whiteouts or redirects for any host overlay over the cache) and
//! `security.selinux` and other LSM labels belong to the host's policy. Setuid binaries and file
//! capabilities are safe on the host only because the cache is `0700` and owned by root, which
//! the caller guarantees. Order per file: owner, then mode (`chown` clears setuid bits), then
//! xattrs (`chown` clears `security.capability`), then times. Directory metadata is applied
//! after all entries, deepest first, because creating children changes a directory's mtime
//! and a read-only directory mode could otherwise block its own children. The layer root gets
//! `0755` unless the archive has a `./` entry.
//!
//! An attribute the host filesystem refuses (`EPERM`, `ENOTSUP`, `EACCES`) is reported in
//! [`UnpackReport::skipped`] rather than failing the layer, as are refused namespaces and
//! xattrs on symlinks (which Linux only supports for namespaces images do not need).
//!
//! # Resource limits
//!
//! [`UnpackLimits`] bounds the work an archive can cause. Every entry's data counts against
//! `max_total_bytes` (also data the unpacker skips, and data after the end-of-archive marker,
//! which is read so that a compressed stream is verified to its end); regular files also
//! against `max_file_bytes`, checked against the size in the header before anything is
//! written. Metadata that the tar parser buffers in memory (long names, PAX records) is capped
//! separately ([`UnpackError::HeaderTooLarge`]).

pub(crate) mod fsops;
pub(crate) mod path;
mod stream;

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{
    chownat, fchmod, fchown, fsetxattr, futimens, linkat, mkdirat, mknodat, openat, symlinkat,
    unlinkat, utimensat, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::fs::{Gid, Uid};
use rustix::io::Errno;

use tar::EntryType;

use self::fsops::WalkError;
use self::path::{PathProblem, RelPath};
use self::stream::{classify, Budgeted, Decoded, HeaderBudget, Source, StreamError};

/// How the layer blob is compressed (from the layer's media type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar`
    None,
    /// `...tar+gzip` and Docker's `...rootfs.diff.tar.gzip`; multi-member streams are accepted.
    Gzip,
    /// `...tar+zstd`; multi-frame streams are accepted.
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// Bounds on what one layer may make the host do.
///
/// The defaults (32 GiB in all, 16 GiB for one file, 2,000,000 entries) are above what real
/// images need: the largest public layers (CUDA, ML frameworks with bundled weights) hold a few
/// GiB, single files up to around 10 GiB, and a few hundred thousand entries. They exist so a
/// decompression bomb or a million-entry tar cannot fill the host's disk or inode table, or keep
/// a pull busy indefinitely, before anyone notices: a limit is checked as soon as an entry
/// header announces a size, before any byte of it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackLimits {
    /// All entry data (logical sizes), in bytes.
    pub max_total_bytes: u64,
    /// One regular file's logical size, in bytes.
    pub max_file_bytes: u64,
    /// Archive entries, of any type.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_total_bytes: 32 << 30,
            max_file_bytes: 16 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What [`unpack_layer`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Archive entries processed, of any type.
    pub entries: u64,
    /// Bytes of regular-file content (logical sizes).
    pub bytes: u64,
    /// Human-readable reasons for things deliberately not created: device nodes, refused
    /// extended attributes. Capped at a thousand lines plus a final count.
    pub skipped: Vec<String>,
}

/// How an entry tried to leave the layer root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// A `..` component climbs above the root.
    DotDot,
    /// A parent directory is a symlink (which is never followed).
    Symlink,
}

impl fmt::Display for Escape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Escape::DotDot => "through `..`",
            Escape::Symlink => "through a symlink",
        })
    }
}

/// Why a layer could not be unpacked. Any error fails the whole layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry path leaves the layer root.
    #[error("entry {path:?} escapes the layer root {via}")]
    PathEscape { path: String, via: Escape },
    /// An entry path (or link target) cannot be used at all.
    #[error("entry {path:?}: path {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A parent of the entry exists and is not a directory.
    #[error("entry {path:?}: a parent is not a directory")]
    ParentNotDirectory { path: String },
    /// A hard link's target lies outside the layer (by `..` or through a symlink).
    #[error("hard link {path:?} points outside the layer, to {target:?}")]
    HardlinkEscape { path: String, target: String },
    /// A hard link's target does not exist in the layer (yet).
    #[error("hard link {path:?} points to {target:?}, which does not exist")]
    HardlinkMissing { path: String, target: String },
    /// A hard link's target is a directory.
    #[error("hard link {path:?} points to directory {target:?}")]
    HardlinkToDirectory { path: String, target: String },
    /// A uid or gid that cannot be represented (`-1` would mean "leave unchanged").
    #[error("entry {path:?}: owner id {id} out of range")]
    InvalidOwner { path: String, id: u64 },
    /// An entry type with no meaning in a root filesystem.
    #[error("entry {path:?}: unsupported entry type {kind:#04x}")]
    UnsupportedEntry { path: String, kind: u8 },
    /// A file is larger than [`UnpackLimits::max_file_bytes`].
    #[error("file {path:?} ({size} bytes) exceeds the {max}-byte file limit")]
    FileTooLarge { path: String, size: u64, max: u64 },
    /// The layer's data exceeds [`UnpackLimits::max_total_bytes`].
    #[error("layer data exceeds the {max}-byte limit")]
    LayerTooLarge { max: u64 },
    /// The layer has more than [`UnpackLimits::max_entries`] entries.
    #[error("layer has more than {max} entries")]
    TooManyEntries { max: u64 },
    /// Long names or PAX records before one entry exceed what is buffered in memory.
    #[error("entry metadata exceeds {max} bytes")]
    HeaderTooLarge { max: u64 },
    /// Reading the layer blob failed.
    #[error("reading the layer failed")]
    Read {
        #[source]
        source: io::Error,
    },
    /// The compressed stream is corrupt or truncated.
    #[error("layer is not valid {compression} data")]
    Decompress {
        compression: &'static str,
        #[source]
        source: io::Error,
    },
    /// The tar structure is invalid (checksums, numeric fields, sparse maps, truncation).
    #[error("malformed tar archive")]
    Malformed {
        #[source]
        source: io::Error,
    },
    /// A filesystem operation on the target failed.
    #[error("cannot {op} {path:?}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Unpacks one layer into `target`. See the module documentation for the rules.
pub fn unpack_layer(
    reader: impl Read,
    compression: Compression,
    target: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackReport, UnpackError> {
    let root = fsops::open_root(target).map_err(|source| UnpackError::Io {
        op: "open",
        path: target.display().to_string(),
        source,
    })?;
    let unpacker = Unpacker::new(root, limits, compression)?;
    let source = Source(reader);
    match compression {
        Compression::None => unpacker.run(source),
        Compression::Gzip => unpacker.run(Decoded(flate2::read::MultiGzDecoder::new(source))),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(source).map_err(|source| {
                UnpackError::Decompress {
                    compression: compression.name(),
                    source,
                }
            })?;
            unpacker.run(Decoded(decoder))
        }
    }
}

/// Size of the copy buffer for file contents.
const COPY_BUFFER: usize = 256 << 10;

/// Lines kept in [`UnpackReport::skipped`] before only counting.
const MAX_SKIPPED: usize = 1000;

/// Metadata of one entry, as the archive gives it.
#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// State of one unpack run.
struct Unpacker<'l> {
    root: OwnedFd,
    limits: &'l UnpackLimits,
    compression: Compression,
    report: UnpackReport,
    skipped_uncounted: u64,
    /// Entry data read so far (logical bytes).
    total: u64,
    /// Directory metadata to apply at the end, by normalized path ("" is the root).
    dirs: BTreeMap<Vec<u8>, Meta>,
    /// The last parent directory resolved: tar streams list a directory's entries together.
    /// Dropped whenever a directory is removed, since it might be the removed one.
    parent_cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    buf: Vec<u8>,
}

impl<'l> Unpacker<'l> {
    fn new(
        root: OwnedFd,
        limits: &'l UnpackLimits,
        compression: Compression,
    ) -> Result<Unpacker<'l>, UnpackError> {
        // The root is a directory nobody described yet; `./` entries override this at the end.
        fchmod(&root, Mode::from_raw_mode(fsops::IMPLICIT_DIR_MODE))
            .map_err(|e| io_error("set the mode of", "", e.into()))?;
        Ok(Unpacker {
            root,
            limits,
            compression,
            report: UnpackReport::default(),
            skipped_uncounted: 0,
            total: 0,
            dirs: BTreeMap::new(),
            parent_cache: None,
            buf: vec![0; COPY_BUFFER],
        })
    }

    /// Drives the tar parser over the decompressed stream, then finishes directories.
    fn run<D: Read>(mut self, decoded: D) -> Result<UnpackReport, UnpackError> {
        let budget = Rc::new(HeaderBudget::default());
        let mut archive = tar::Archive::new(Budgeted {
            inner: decoded,
            budget: Rc::clone(&budget),
        });
        {
            let mut entries = archive.entries().map_err(|e| self.stream_error(e))?;
            loop {
                // Everything the parser reads from here until it hands out an entry is
                // metadata it may buffer whole; see `stream`.
                budget.open();
                let next = entries.next();
                budget.close();
                let Some(entry) = next else { break };
                let mut entry = entry.map_err(|e| self.stream_error(e))?;
                self.entry(&mut entry)?;
                // Whatever the handler left unread is read here, so it counts against the
                // limits and the parser's skip to the next header stays within the budget.
                self.drain(&mut entry)?;
            }
        }
        // Read past the end-of-archive marker to the end of the stream: a compressed stream's
        // trailer (gzip CRC, zstd checksum) is only verified there.
        let mut rest = archive.into_inner();
        self.drain(&mut rest)?;
        self.finish()
    }

    /// Handles one entry.
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        self.report.entries += 1;
        if self.report.entries > self.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        let mut kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Archive-wide defaults (comments, charset); nothing an image root needs.
            return Ok(());
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = lossy(&raw_path);
        // Pre-POSIX archives mark a directory as an old-style regular file ('\0') whose name
        // ends in '/'.
        if entry.header().as_old().linkflag[0] == 0 && raw_path.ends_with(b"/") {
            kind = EntryType::Directory;
        }
        let path = RelPath::normalize(&raw_path).map_err(|p| path_error(&shown, p))?;
        check_whiteout_name(&path, &shown)?;

        let size = entry.size();
        let is_file = kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse();
        if is_file && size > self.limits.max_file_bytes {
            return Err(UnpackError::FileTooLarge {
                path: shown,
                size,
                max: self.limits.max_file_bytes,
            });
        }
        if self.total.saturating_add(size) > self.limits.max_total_bytes {
            return Err(UnpackError::LayerTooLarge {
                max: self.limits.max_total_bytes,
            });
        }

        if is_file {
            let meta = self.meta(entry, &shown)?;
            self.file(entry, &path, &shown, meta, kind.is_gnu_sparse())
        } else if kind.is_dir() {
            let meta = self.meta(entry, &shown)?;
            self.dir(&path, &shown, meta)
        } else if kind.is_symlink() {
            let meta = self.meta(entry, &shown)?;
            let target = entry.link_name_bytes().map(|t| t.into_owned());
            self.symlink(&path, &shown, target.as_deref().unwrap_or_default(), meta)
        } else if kind.is_hard_link() {
            let target = entry.link_name_bytes().map(|t| t.into_owned());
            self.hardlink(&path, &shown, target.as_deref().unwrap_or_default())
        } else if kind.is_fifo() {
            let meta = self.meta(entry, &shown)?;
            self.fifo(&path, &shown, meta)
        } else if kind.is_character_special() || kind.is_block_special() {
            let what = if kind.is_character_special() {
                "character"
            } else {
                "block"
            };
            self.skip(format!(
                "{shown}: {what} device not created (guests get device nodes from devtmpfs)"
            ));
            Ok(())
        } else {
            Err(UnpackError::UnsupportedEntry {
                path: shown,
                kind: entry.header().as_old().linkflag[0],
            })
        }
    }

    /// Reads the metadata of an entry: header fields with PAX overrides.
    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let malformed = |source| UnpackError::Malformed { source };
        let mode = header.mode().map_err(malformed)? & 0o7777;
        // The tar crate has already applied PAX `uid`/`gid` records to the header.
        let uid = owner_id(header.uid().map_err(malformed)?, shown)?;
        let gid = owner_id(header.gid().map_err(malformed)?, shown)?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(header.mtime().map_err(malformed)?).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(records) = entry.pax_extensions().map_err(|e| self.stream_error(e))? {
            // Unparsable records are skipped, as the tar crate itself does for `path`.
            for record in records.flatten() {
                let key = record.key_bytes();
                if key == b"mtime" {
                    if let Some(t) = parse_pax_time(record.value_bytes()) {
                        mtime = t;
                    }
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), record.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    /// A regular file: stream its content, then its metadata.
    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &RelPath,
        shown: &str,
        meta: Meta,
        sparse: bool,
    ) -> Result<(), UnpackError> {
        let (parent, name) = self.slot(path, shown, false)?;
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::NOCTTY
            | OFlags::CLOEXEC;
        let fd = openat(&*parent, name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| io_error("create", shown, e.into()))?;
        let mut file = File::from(fd);
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(self.stream_error(e)),
            };
            written += n as u64;
            self.total += n as u64;
            // The header's size was checked before; these hold however the parser behaves.
            if written > self.limits.max_file_bytes {
                return Err(UnpackError::FileTooLarge {
                    path: shown.to_owned(),
                    size: written,
                    max: self.limits.max_file_bytes,
                });
            }
            if self.total > self.limits.max_total_bytes {
                return Err(UnpackError::LayerTooLarge {
                    max: self.limits.max_total_bytes,
                });
            }
            let chunk = &self.buf[..n];
            let result = if sparse && chunk.iter().all(|&b| b == 0) {
                // A hole in the archive's sparse map (or zeros within data): keep it a hole.
                file.seek(SeekFrom::Current(n as i64)).map(drop)
            } else {
                file.write_all(chunk)
            };
            result.map_err(|e| io_error("write", shown, e))?;
        }
        if sparse {
            // A trailing hole is only a seek so far; the length makes it part of the file.
            file.set_len(written)
                .map_err(|e| io_error("set the length of", shown, e))?;
        }
        self.report.bytes += written;
        self.apply_meta(file.as_fd(), &meta, shown)
    }

    /// A directory: create it unless one exists, remember its metadata for the end.
    fn dir(&mut self, path: &RelPath, shown: &str, meta: Meta) -> Result<(), UnpackError> {
        if !path.is_root() {
            let (parent, name) = self.slot(path, shown, true)?;
            if fsops::lstat_at(parent.as_fd(), name)
                .map_err(|e| io_error("inspect", shown, e))?
                .is_none()
            {
                // Owner-only until the end, when the archive's mode is applied.
                mkdirat(&*parent, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| io_error("create directory", shown, e.into()))?;
            }
        }
        self.dirs.insert(path.as_bytes().to_vec(), meta);
        Ok(())
    }

    /// A symlink, stored verbatim.
    fn symlink(
        &mut self,
        path: &RelPath,
        shown: &str,
        target: &[u8],
        meta: Meta,
    ) -> Result<(), UnpackError> {
        if target.is_empty() {
            return Err(invalid(shown, "has an empty symlink target"));
        }
        if target.contains(&0) {
            return Err(invalid(shown, "has a symlink target with a NUL byte"));
        }
        let (parent, name) = self.slot(path, shown, false)?;
        symlinkat(target, &*parent, name)
            .map_err(|e| io_error("create symlink", shown, e.into()))?;
        // A symlink has no descriptor of its own to work on: act on the name, never following.
        chownat(
            &*parent,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_error("set the owner of", shown, e.into()))?;
        for (xname, _) in &meta.xattrs {
            self.skip(format!(
                "{shown}: xattr {} not set on a symlink",
                lossy(xname)
            ));
        }
        let times = Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        };
        utimensat(&*parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_error("set the times of", shown, e.into()))
    }

    /// A hard link to an earlier entry of this layer.
    fn hardlink(&mut self, path: &RelPath, shown: &str, target: &[u8]) -> Result<(), UnpackError> {
        let target_shown = lossy(target);
        let escape = || UnpackError::HardlinkEscape {
            path: shown.to_owned(),
            target: target_shown.clone(),
        };
        let missing = || UnpackError::HardlinkMissing {
            path: shown.to_owned(),
            target: target_shown.clone(),
        };
        let to_dir = || UnpackError::HardlinkToDirectory {
            path: shown.to_owned(),
            target: target_shown.clone(),
        };
        let target = match RelPath::normalize(target) {
            Ok(t) => t,
            Err(PathProblem::Escapes) => return Err(escape()),
            Err(p) => return Err(invalid(shown, hardlink_reason(p))),
        };
        let Some((target_parent, target_name)) = target.split_last() else {
            return Err(to_dir());
        };
        let target_dir = match fsops::open_dir(self.root.as_fd(), target_parent, false) {
            Ok(fd) => fd,
            Err(WalkError::Symlink) => return Err(escape()),
            Err(WalkError::NotDir) | Err(WalkError::Missing) => return Err(missing()),
            Err(WalkError::Io(e)) => return Err(io_error("resolve", &target_shown, e)),
        };
        match fsops::lstat_at(target_dir.as_fd(), target_name) {
            Ok(None) => return Err(missing()),
            Ok(Some(st)) if fsops::file_type(&st) == FileType::Directory => return Err(to_dir()),
            Ok(Some(_)) => {}
            Err(e) => return Err(io_error("inspect", &target_shown, e)),
        }
        if target == *path {
            // A link to itself: the file is already what the entry describes.
            return Ok(());
        }
        let (parent, name) = self.slot(path, shown, false)?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked as the symlink itself.
        match linkat(&target_dir, target_name, &*parent, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            // The target lived under what this entry replaced.
            Err(Errno::NOENT) => Err(missing()),
            Err(e) => Err(io_error("create hard link", shown, e.into())),
        }
    }

    /// A named pipe.
    fn fifo(&mut self, path: &RelPath, shown: &str, meta: Meta) -> Result<(), UnpackError> {
        let (parent, name) = self.slot(path, shown, false)?;
        mknodat(
            &*parent,
            name,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(|e| io_error("create fifo", shown, e.into()))?;
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = openat(&*parent, name, flags, Mode::empty())
            .map_err(|e| io_error("open fifo", shown, e.into()))?;
        self.apply_meta(fd.as_fd(), &meta, shown)
    }

    /// Resolves the parent of `path` (creating missing directories) and clears the final name
    /// for a new entry: whatever is there is removed, except a directory when `keep_dir`.
    fn slot<'p>(
        &mut self,
        path: &'p RelPath,
        shown: &str,
        keep_dir: bool,
    ) -> Result<(Rc<OwnedFd>, &'p [u8]), UnpackError> {
        let Some((parent_path, name)) = path.split_last() else {
            return Err(invalid(shown, "names the layer root"));
        };
        let parent = self.parent(parent_path, shown)?;
        let existing =
            fsops::lstat_at(parent.as_fd(), name).map_err(|e| io_error("inspect", shown, e))?;
        match existing {
            None => {}
            Some(st) if fsops::file_type(&st) == FileType::Directory => {
                if keep_dir {
                    return Ok((parent, name));
                }
                fsops::remove_tree(parent.as_fd(), name)
                    .map_err(|e| io_error("remove directory", shown, e))?;
                self.forget_dirs(path.as_bytes());
                self.parent_cache = None;
            }
            Some(_) => {
                unlinkat(&*parent, name, AtFlags::empty())
                    .map_err(|e| io_error("remove", shown, e.into()))?;
            }
        }
        Ok((parent, name))
    }

    /// The directory `parent_path`, created if missing, reached without symlinks.
    fn parent(&mut self, parent_path: &[u8], shown: &str) -> Result<Rc<OwnedFd>, UnpackError> {
        if let Some((cached, fd)) = &self.parent_cache {
            if cached == parent_path {
                return Ok(Rc::clone(fd));
            }
        }
        let fd = match fsops::open_dir(self.root.as_fd(), parent_path, true) {
            Ok(fd) => Rc::new(fd),
            Err(WalkError::Symlink) => {
                return Err(UnpackError::PathEscape {
                    path: shown.to_owned(),
                    via: Escape::Symlink,
                })
            }
            Err(WalkError::NotDir) => {
                return Err(UnpackError::ParentNotDirectory {
                    path: shown.to_owned(),
                })
            }
            Err(WalkError::Missing) => {
                return Err(io_error(
                    "create parent of",
                    shown,
                    io::ErrorKind::NotFound.into(),
                ))
            }
            Err(WalkError::Io(e)) => return Err(io_error("open parent of", shown, e)),
        };
        self.parent_cache = Some((parent_path.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    /// Drops recorded directory metadata at or below `path` (removed from the tree).
    fn forget_dirs(&mut self, path: &[u8]) {
        let doomed: Vec<Vec<u8>> = self
            .dirs
            .range(path.to_vec()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(path))
            .filter(|k| path::is_within(k, path))
            .cloned()
            .collect();
        for key in doomed {
            self.dirs.remove(&key);
        }
    }

    /// Owner, mode, xattrs, times, in that order (see the module documentation).
    fn apply_meta(
        &mut self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| io_error("set the owner of", shown, e.into()))?;
        fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| io_error("set the mode of", shown, e.into()))?;
        for (name, value) in &meta.xattrs {
            if !fsops::xattr_allowed(name) {
                self.skip(format!(
                    "{shown}: xattr {} not set (namespace not allowed)",
                    lossy(name)
                ));
                continue;
            }
            match fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) if fsops::xattr_error_tolerable(e) => {
                    self.skip(format!("{shown}: xattr {} not set ({e})", lossy(name)));
                }
                Err(e) => return Err(io_error("set an xattr of", shown, e.into())),
            }
        }
        let times = Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        };
        futimens(fd, &times).map_err(|e| io_error("set the times of", shown, e.into()))
    }

    /// Applies directory metadata, deepest first, so no later change touches a finished
    /// directory's mtime and no read-only mode gets in the way of its children.
    fn finish(mut self) -> Result<UnpackReport, UnpackError> {
        let mut dirs: Vec<(Vec<u8>, Meta)> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by_key(|(p, _)| Reverse(path::depth_of(p)));
        self.parent_cache = None;
        for (dir_path, meta) in dirs {
            let shown = lossy(&dir_path);
            let fd = match fsops::open_dir(self.root.as_fd(), &dir_path, false) {
                Ok(fd) => fd,
                // Replaced directories were forgotten when they were removed; this is a bug.
                Err(WalkError::Io(e)) => return Err(io_error("reopen directory", &shown, e)),
                Err(_) => {
                    return Err(io_error(
                        "reopen directory",
                        &shown,
                        io::ErrorKind::NotFound.into(),
                    ))
                }
            };
            self.apply_meta(fd.as_fd(), &meta, &shown)?;
        }
        if self.skipped_uncounted > 0 {
            let more = self.skipped_uncounted;
            self.report
                .skipped
                .push(format!("... and {more} more skipped"));
        }
        Ok(self.report)
    }

    /// Reads and discards the rest of `reader`, counting it against the total.
    fn drain(&mut self, reader: &mut impl Read) -> Result<(), UnpackError> {
        loop {
            let n = match reader.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.stream_error(e)),
            };
            self.total += n as u64;
            if self.total > self.limits.max_total_bytes {
                return Err(UnpackError::LayerTooLarge {
                    max: self.limits.max_total_bytes,
                });
            }
        }
    }

    /// Records a skipped item.
    fn skip(&mut self, line: String) {
        if self.report.skipped.len() < MAX_SKIPPED {
            self.report.skipped.push(line);
        } else {
            self.skipped_uncounted += 1;
        }
    }

    /// Maps a read failure to the error for its origin.
    fn stream_error(&self, err: io::Error) -> UnpackError {
        match classify(err) {
            StreamError::Source(source) => UnpackError::Read { source },
            StreamError::Decode(source) => UnpackError::Decompress {
                compression: self.compression.name(),
                source,
            },
            StreamError::HeaderBudget => UnpackError::HeaderTooLarge {
                max: stream::HEADER_BUDGET,
            },
            StreamError::Malformed(source) => UnpackError::Malformed { source },
        }
    }
}

/// Refuses whiteouts that would name `.`, `..` or nothing: `.wh..` would otherwise make the
/// view remove the directory holding it, or its parent.
fn check_whiteout_name(path: &RelPath, shown: &str) -> Result<(), UnpackError> {
    if let Some((_, name)) = path.split_last() {
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if matches!(hidden, b"" | b"." | b"..") {
                return Err(invalid(shown, "is a whiteout of `.`, `..` or nothing"));
            }
        }
    }
    Ok(())
}

/// A uid or gid as the kernel takes it; `u32::MAX` is `-1`, "leave unchanged", not an owner.
fn owner_id(id: u64, shown: &str) -> Result<u32, UnpackError> {
    match u32::try_from(id) {
        Ok(v) if v != u32::MAX => Ok(v),
        _ => Err(UnpackError::InvalidOwner {
            path: shown.to_owned(),
            id,
        }),
    }
}

/// Parses a PAX time (`[-]seconds[.fraction]`).
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        nanos = nanos * 10 + digit;
    }
    Some(if !negative {
        Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        }
    } else if nanos == 0 {
        Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        }
    } else {
        // -1.25 is 2 seconds before the epoch plus 0.75.
        Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        }
    })
}

fn path_error(shown: &str, problem: PathProblem) -> UnpackError {
    match problem {
        PathProblem::Escapes => UnpackError::PathEscape {
            path: shown.to_owned(),
            via: Escape::DotDot,
        },
        other => invalid(shown, other.reason()),
    }
}

fn hardlink_reason(problem: PathProblem) -> &'static str {
    match problem {
        PathProblem::Escapes => "has a hard link target above the layer root",
        PathProblem::Nul => "has a hard link target with a NUL byte",
        PathProblem::TooLong => "has a hard link target longer than PATH_MAX",
        PathProblem::TooDeep => "has a hard link target nested too deeply",
    }
}

fn invalid(shown: &str, reason: &'static str) -> UnpackError {
    UnpackError::InvalidPath {
        path: shown.to_owned(),
        reason,
    }
}

fn io_error(op: &'static str, shown: &str, source: io::Error) -> UnpackError {
    UnpackError::Io {
        op,
        path: shown.to_owned(),
        source,
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.123456789").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 123_456_789));
        let t = parse_pax_time(b"12.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 500_000_000));
        let t = parse_pax_time(b"-1.25").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 750_000_000));
        let t = parse_pax_time(b"-3").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-3, 0));
        assert!(parse_pax_time(b"").is_none());
        assert!(parse_pax_time(b"1e5").is_none());
        assert!(parse_pax_time(b".5").is_none());
        assert!(parse_pax_time(b"99999999999999999999").is_none());
    }

    #[test]
    fn owner_ids() {
        assert_eq!(owner_id(0, "x").unwrap(), 0);
        assert_eq!(owner_id(65534, "x").unwrap(), 65534);
        assert!(owner_id(u64::from(u32::MAX), "x").is_err());
        assert!(owner_id(1 << 40, "x").is_err());
    }
}
