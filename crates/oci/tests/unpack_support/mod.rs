//! Shared helpers for the unpack and view tests: a raw tar writer that accepts any name bytes
//! (the tar crate's `set_path` refuses `..`), and a sandbox directory layout that can tell
//! whether anything was written outside the layer.
#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use msb_oci::unpack::{unpack_layer, Compression, UnpackError, UnpackLimits, UnpackReport};
use tar::{EntryType, Header};

/// One archive entry to write.
#[derive(Clone)]
pub struct Spec {
    pub kind: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub data: Vec<u8>,
    pub pax: Vec<(String, Vec<u8>)>,
    pub dev: Option<(u32, u32)>,
}

impl Spec {
    pub fn new(kind: u8, path: impl AsRef<[u8]>) -> Spec {
        let mode = match kind {
            b'5' => 0o755,
            b'2' => 0o777,
            _ => 0o644,
        };
        Spec {
            kind,
            path: path.as_ref().to_vec(),
            link: Vec::new(),
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            data: Vec::new(),
            pax: Vec::new(),
            dev: None,
        }
    }
    pub fn link(mut self, target: impl AsRef<[u8]>) -> Spec {
        self.link = target.as_ref().to_vec();
        self
    }
    pub fn mode(mut self, mode: u32) -> Spec {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Spec {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> Spec {
        self.mtime = mtime;
        self
    }
    pub fn data(mut self, data: impl AsRef<[u8]>) -> Spec {
        self.data = data.as_ref().to_vec();
        self
    }
    pub fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> Spec {
        self.pax.push((key.to_owned(), value.as_ref().to_vec()));
        self
    }
    pub fn dev(mut self, major: u32, minor: u32) -> Spec {
        self.dev = Some((major, minor));
        self
    }
}

/// A tar stream written block by block.
#[derive(Default)]
pub struct Tar {
    buf: Vec<u8>,
}

impl Tar {
    pub fn new() -> Tar {
        Tar::default()
    }

    pub fn file(&mut self, path: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> &mut Tar {
        self.add(Spec::new(b'0', path).data(data))
    }
    pub fn dir(&mut self, path: impl AsRef<[u8]>) -> &mut Tar {
        self.add(Spec::new(b'5', path))
    }
    pub fn symlink(&mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Tar {
        self.add(Spec::new(b'2', path).link(target))
    }
    pub fn hardlink(&mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Tar {
        self.add(Spec::new(b'1', path).link(target))
    }

    /// Adds an entry, with GNU long-name/long-link entries and a PAX header as needed.
    pub fn add(&mut self, spec: Spec) -> &mut Tar {
        if !spec.pax.is_empty() {
            let mut records = Vec::new();
            for (key, value) in &spec.pax {
                records.extend(pax_record(key, value));
            }
            self.raw(b'x', b"././@PaxHeader", b"", 0o644, 0, &records);
        }
        if spec.path.len() > 100 {
            let mut name = spec.path.clone();
            name.push(0);
            self.raw(b'L', b"././@LongLink", b"", 0o644, 0, &name);
        }
        if spec.link.len() > 100 {
            let mut name = spec.link.clone();
            name.push(0);
            self.raw(b'K', b"././@LongLink", b"", 0o644, 0, &name);
        }
        let mut header = Header::new_gnu();
        put(&mut header.as_old_mut().name, &spec.path);
        put(&mut header.as_old_mut().linkname, &spec.link);
        header.set_mode(spec.mode);
        header.set_uid(spec.uid);
        header.set_gid(spec.gid);
        header.set_mtime(spec.mtime);
        header.set_size(spec.data.len() as u64);
        // Written as the raw byte: EntryType maps '\0' to '0'.
        header.as_old_mut().linkflag[0] = spec.kind;
        if let Some((major, minor)) = spec.dev {
            header.set_device_major(major).unwrap();
            header.set_device_minor(minor).unwrap();
        }
        header.set_cksum();
        self.block(header.as_bytes(), &spec.data);
        self
    }

    /// A header with exactly these name bytes (truncated to 100) and this data.
    pub fn raw(
        &mut self,
        kind: u8,
        name: &[u8],
        link: &[u8],
        mode: u32,
        size_override: u64,
        data: &[u8],
    ) -> &mut Tar {
        let mut header = Header::new_gnu();
        put(&mut header.as_old_mut().name, name);
        put(&mut header.as_old_mut().linkname, link);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        let size = if size_override > 0 {
            size_override
        } else {
            data.len() as u64
        };
        header.set_size(size);
        header.as_old_mut().linkflag[0] = kind;
        header.set_cksum();
        self.block(header.as_bytes(), data);
        self
    }

    /// A GNU sparse file: `blocks` are (offset, data) pairs in order; all but the last data
    /// length must be multiples of 512. At most 4 blocks (no extension headers).
    pub fn sparse(&mut self, path: &str, real_size: u64, blocks: &[(u64, Vec<u8>)]) -> &mut Tar {
        assert!(blocks.len() <= 4);
        let mut header = Header::new_gnu();
        put(&mut header.as_old_mut().name, path.as_bytes());
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_entry_type(EntryType::GNUSparse);
        let mut data = Vec::new();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.set_real_size(real_size);
            for (i, (offset, bytes)) in blocks.iter().enumerate() {
                gnu.sparse[i].set_offset(*offset);
                gnu.sparse[i].set_length(bytes.len() as u64);
                data.extend_from_slice(bytes);
            }
        }
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.block(header.as_bytes(), &data);
        self
    }

    /// Appends raw bytes (for truncation and corruption tests).
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Tar {
        self.buf.extend_from_slice(bytes);
        self
    }

    fn block(&mut self, header: &[u8; 512], data: &[u8]) {
        self.buf.extend_from_slice(header);
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    /// The archive with its end-of-archive marker.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    /// The archive without an end marker.
    pub fn unterminated(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

fn put(field: &mut [u8; 100], bytes: &[u8]) {
    let n = bytes.len().min(100);
    field[..n].copy_from_slice(&bytes[..n]);
}

/// One PAX record: "<len> <key>=<value>\n", where len counts itself.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // space, '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// A temporary directory holding the layer directory and an empty sibling that nothing may
/// ever write to, so escapes are observable.
pub struct Sandbox {
    pub base: tempfile::TempDir,
    pub layer: PathBuf,
    pub outside: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let base = tempfile::tempdir().unwrap();
        let layer = base.path().join("layer");
        let outside = base.path().join("outside");
        fs::create_dir(&layer).unwrap();
        fs::create_dir(&outside).unwrap();
        Sandbox {
            base,
            layer,
            outside,
        }
    }

    pub fn unpack(&self, tar: &[u8], limits: &UnpackLimits) -> Result<UnpackReport, UnpackError> {
        unpack_layer(tar, Compression::None, &self.layer, limits)
    }

    pub fn unpack_with(
        &self,
        data: &[u8],
        compression: Compression,
    ) -> Result<UnpackReport, UnpackError> {
        unpack_layer(data, compression, &self.layer, &UnpackLimits::default())
    }

    /// The outside directory is still empty and the base holds nothing else.
    pub fn assert_nothing_outside(&self) {
        let outside: Vec<_> = fs::read_dir(&self.outside).unwrap().collect();
        assert!(
            outside.is_empty(),
            "something was written outside: {outside:?}"
        );
        let mut names: Vec<String> = fs::read_dir(self.base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["layer", "outside"]);
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.layer.join(rel)
    }
}

/// Every path below `root`, relative, found without following symlinks.
pub fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let child = rel.join(entry.file_name());
            let meta = fs::symlink_metadata(root.join(&child)).unwrap();
            out.push(child.to_string_lossy().into_owned());
            if meta.is_dir() {
                stack.push(child);
            }
        }
    }
    out.sort();
    out
}

pub fn ino(path: &Path) -> (u64, u64) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.dev(), m.ino())
}

/// A reader that counts how much was taken from it.
pub struct Counting<R> {
    pub inner: R,
    pub count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A reader that fails after `ok` bytes.
pub struct Failing {
    pub data: Vec<u8>,
    pub pos: usize,
    pub ok: usize,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.ok {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "network went away",
            ));
        }
        let n = buf
            .len()
            .min(self.ok - self.pos)
            .min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A name unique to this process and call, for paths outside the sandbox.
pub fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "msb-unpack-{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
