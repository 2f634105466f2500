//! Image layers: a directory tree as a deterministic gzip-compressed tar, or a prebuilt tar file
//! pushed as it is.
//!
//! Determinism: entries come in byte order of their names, depth first (a directory before its
//! contents); each carries the file's own mtime (whole seconds), numeric uid and gid, and permission
//! bits including setuid, setgid and sticky; no user or group names; the gzip header has neither a
//! timestamp nor a file name. The same tree gives the same bytes, hence the same digests, every run.
//!
//! What a directory layer holds: directories, regular files, symlinks (target exactly as stored),
//! FIFOs. A regular file with several links inside the tree is written once, at the first of its
//! paths in that order, and then as hardlink entries naming that path. Device nodes and sockets are
//! left out and reported back in [`Layer::skipped`]. Extended attributes are not carried.
//!
//! Whiteouts need nothing special: a file named `.wh.NAME` or `.wh..wh..opq` in the directory is an
//! ordinary (empty) file and becomes the entry of the same name in the tar.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use oci_client::manifest::{IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// A layer blob ready to push.
pub struct Layer {
    /// The blob's media type: gzip-compressed or plain tar.
    pub media_type: &'static str,
    /// The blob as it goes to the registry.
    pub data: Vec<u8>,
    /// `sha256:` digest of `data`.
    pub digest: String,
    /// `sha256:` digest of the uncompressed tar (the image config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// Paths (relative to the layer directory) that were left out: device nodes and sockets.
    pub skipped: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot add {path} to the layer")]
    Append {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} changed size while it was being archived")]
    Changed { path: PathBuf },
}

/// Builds a gzip-compressed tar layer from the tree under `root` (not including `root` itself).
pub fn from_dir(root: &Path) -> Result<Layer, LayerError> {
    let meta = fs::metadata(root).map_err(|source| LayerError::Read {
        path: root.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(LayerError::NotADirectory(root.to_owned()));
    }
    let gzip = GzEncoder::new(Vec::new(), Compression::default());
    let mut tree = TreeArchiver {
        root,
        builder: tar::Builder::new(HashingWriter::new(gzip)),
        first_link: HashMap::new(),
        skipped: Vec::new(),
    };
    tree.add_contents(Path::new(""))?;
    let finish = |source| LayerError::Append {
        path: root.to_owned(),
        source,
    };
    let hashing = tree.builder.into_inner().map_err(finish)?;
    let (gzip, diff_id) = hashing.finish();
    let data = gzip.finish().map_err(finish)?;
    Ok(Layer {
        media_type: IMAGE_LAYER_GZIP_MEDIA_TYPE,
        digest: sha256_digest(&data),
        diff_id,
        data,
        skipped: tree.skipped,
    })
}

/// Takes a prebuilt tar file as a layer, byte for byte: no checks, so crafted (hostile) archives
/// reach the puller intact. A file starting with the gzip magic is pushed as a gzip layer, its
/// diff_id computed over the decompressed stream; anything else is pushed as a plain tar.
pub fn from_tar_file(path: &Path) -> Result<Layer, LayerError> {
    let read_err = |source| LayerError::Read {
        path: path.to_owned(),
        source,
    };
    let data = fs::read(path).map_err(read_err)?;
    let digest = sha256_digest(&data);
    let (media_type, diff_id) = if data.starts_with(&[0x1f, 0x8b]) {
        let mut hashing = HashingWriter::new(io::sink());
        io::copy(
            &mut flate2::read::MultiGzDecoder::new(&data[..]),
            &mut hashing,
        )
        .map_err(read_err)?;
        (IMAGE_LAYER_GZIP_MEDIA_TYPE, hashing.finish().1)
    } else {
        (IMAGE_LAYER_MEDIA_TYPE, digest.clone())
    };
    Ok(Layer {
        media_type,
        data,
        digest,
        diff_id,
        skipped: Vec::new(),
    })
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Walks one tree into a tar builder; see the module docs for what goes in and in which order.
struct TreeArchiver<'a, W: Write> {
    root: &'a Path,
    builder: tar::Builder<W>,
    /// (device, inode) of each multiply-linked regular file -> the archive path it was written at.
    first_link: HashMap<(u64, u64), PathBuf>,
    skipped: Vec<PathBuf>,
}

impl<W: Write> TreeArchiver<'_, W> {
    /// Adds the entries of the directory `rel` (relative to the root), sorted, recursively.
    fn add_contents(&mut self, rel: &Path) -> Result<(), LayerError> {
        let dir = self.root.join(rel);
        let read_err = |source| LayerError::Read {
            path: dir.clone(),
            source,
        };
        let mut names = fs::read_dir(&dir)
            .map_err(read_err)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<Vec<OsString>>>()
            .map_err(read_err)?;
        // OsString orders by bytes on Unix.
        names.sort();
        for name in names {
            self.add(&rel.join(name))?;
        }
        Ok(())
    }

    fn add(&mut self, rel: &Path) -> Result<(), LayerError> {
        let path = self.root.join(rel);
        let read_err = |source| LayerError::Read {
            path: path.clone(),
            source,
        };
        let append_err = |source| LayerError::Append {
            path: path.clone(),
            source,
        };
        let meta = fs::symlink_metadata(&path).map_err(read_err)?;
        let kind = meta.file_type();

        let mut header = Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_size(0);

        if kind.is_dir() {
            header.set_entry_type(EntryType::Directory);
            let mut name = rel.as_os_str().to_owned();
            name.push("/");
            self.builder
                .append_data(&mut header, name, io::empty())
                .map_err(append_err)?;
            self.add_contents(rel)
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(read_err)?;
            header.set_entry_type(EntryType::Symlink);
            self.builder
                .append_link(&mut header, rel, target)
                .map_err(append_err)
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.first_link.get(&key) {
                    header.set_entry_type(EntryType::Link);
                    return self
                        .builder
                        .append_link(&mut header, rel, first)
                        .map_err(append_err);
                }
                self.first_link.insert(key, rel.to_owned());
            }
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(&path).map_err(read_err)?;
            // The tar crate pads a short read instead of failing, which would silently corrupt the
            // layer; count what was copied and refuse a file that changed under us.
            let mut reader = CountingReader {
                inner: file.take(meta.len()),
                count: 0,
            };
            self.builder
                .append_data(&mut header, rel, &mut reader)
                .map_err(append_err)?;
            if reader.count != meta.len() {
                return Err(LayerError::Changed { path });
            }
            Ok(())
        } else if kind.is_fifo() {
            header.set_entry_type(EntryType::Fifo);
            self.builder
                .append_data(&mut header, rel, io::empty())
                .map_err(append_err)
        } else {
            // Character and block devices, sockets.
            self.skipped.push(rel.to_owned());
            Ok(())
        }
    }
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Passes bytes through to `inner` while hashing them (the uncompressed tar for the diff_id).
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Returns the inner writer and the `sha256:` digest of everything written.
    fn finish(self) -> (W, String) {
        (self.inner, format!("sha256:{:x}", self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn entries(layer: &Layer) -> Vec<(String, EntryType, String)> {
        let tar = flate2::read::GzDecoder::new(&layer.data[..]);
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                    link,
                )
            })
            .collect()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("msb-oci-testkit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn sorted_links_whiteouts_and_stable_digests() {
        let dir = scratch("layer");
        fs::create_dir_all(dir.join("b/sub")).unwrap();
        fs::write(dir.join("b/sub/file"), b"hello").unwrap();
        fs::hard_link(dir.join("b/sub/file"), dir.join("a-link")).unwrap();
        symlink("../escape", dir.join("b/up")).unwrap();
        fs::write(dir.join(".wh.gone"), b"").unwrap();
        fs::write(dir.join("b/.wh..wh..opq"), b"").unwrap();

        let layer = from_dir(&dir).unwrap();
        let got = entries(&layer);
        let expect = [
            (".wh.gone", EntryType::Regular, ""),
            ("a-link", EntryType::Regular, ""),
            ("b/", EntryType::Directory, ""),
            ("b/.wh..wh..opq", EntryType::Regular, ""),
            ("b/sub/", EntryType::Directory, ""),
            ("b/sub/file", EntryType::Link, "a-link"),
            ("b/up", EntryType::Symlink, "../escape"),
        ];
        let expect: Vec<_> = expect
            .iter()
            .map(|(p, t, l)| (p.to_string(), *t, l.to_string()))
            .collect();
        assert_eq!(got, expect);

        let again = from_dir(&dir).unwrap();
        assert_eq!(again.digest, layer.digest);
        assert_eq!(again.diff_id, layer.diff_id);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&layer.data[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(layer.diff_id, sha256_digest(&tar));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn raw_tar_is_pushed_verbatim() {
        let dir = scratch("raw");
        let path = dir.join("evil.tar");
        fs::write(&path, b"not even a tar").unwrap();
        let layer = from_tar_file(&path).unwrap();
        assert_eq!(layer.media_type, IMAGE_LAYER_MEDIA_TYPE);
        assert_eq!(layer.data, b"not even a tar");
        assert_eq!(layer.diff_id, layer.digest);
        fs::remove_dir_all(&dir).unwrap();
    }
}
