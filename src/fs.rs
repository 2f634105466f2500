//! The guest filesystem of one sandbox: stat, list, read, write, copies in and
//! out, streams, and the cancel handle an `AbortSignal` is wired to.

use std::path::PathBuf;

use msb_engine::{
    CancellationToken, CopyToHostOptions, DirEntry, FileKind, FileReader, FileStat, FileWriter,
    InvalidOption, SandboxFs, WriteOptions, DEFAULT_MAX_LIST_ENTRIES,
};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::sync::Mutex;

use crate::error::{done, failure, outcome, whole_number, NativeFailure};

#[napi(object)]
pub struct NativeFileStat {
    /// "file", "dir", "symlink" or "other".
    pub kind: String,
    pub size: f64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ms: f64,
}

#[napi(object)]
pub struct NativeDirEntry {
    pub name: String,
    pub stat: NativeFileStat,
}

#[napi(object)]
pub struct NativeWriteOptions {
    pub mode: Option<u32>,
    pub append: Option<bool>,
    pub create_parents: Option<bool>,
}

#[napi(object)]
pub struct NativeCopyToHostOptions {
    /// Most bytes of file content; default 1 GiB.
    pub max_bytes: Option<f64>,
    /// Most directory entries; default 100 000.
    pub max_entries: Option<f64>,
    /// Deepest directory level; default 64.
    pub max_depth: Option<u32>,
}

fn file_stat(stat: FileStat) -> NativeFileStat {
    NativeFileStat {
        kind: match stat.kind {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
        .to_string(),
        size: stat.size as f64,
        mode: stat.mode,
        uid: stat.uid,
        gid: stat.gid,
        mtime_ms: stat.mtime_nanos as f64 / 1e6,
    }
}

fn write_options(options: NativeWriteOptions) -> WriteOptions {
    WriteOptions {
        mode: options.mode,
        append: options.append.unwrap_or(false),
        create_parents: options.create_parents.unwrap_or(false),
    }
}

fn copy_to_host_options(
    options: NativeCopyToHostOptions,
    cancel: CancellationToken,
) -> std::result::Result<CopyToHostOptions, InvalidOption> {
    let defaults = CopyToHostOptions::default();
    Ok(CopyToHostOptions {
        max_bytes: match options.max_bytes {
            Some(v) => whole_number("maxBytes", v)?,
            None => defaults.max_bytes,
        },
        max_entries: match options.max_entries {
            Some(v) => whole_number("maxEntries", v)?,
            None => defaults.max_entries,
        },
        max_depth: options.max_depth.unwrap_or(defaults.max_depth),
        cancel,
    })
}

/// The guest filesystem of one sandbox.
#[napi]
pub struct NativeFs {
    inner: SandboxFs,
}

impl NativeFs {
    pub(crate) fn new(inner: SandboxFs) -> Self {
        Self { inner }
    }
}

#[napi]
impl NativeFs {
    #[napi]
    pub async fn stat(
        &self,
        path: String,
        follow_symlinks: bool,
    ) -> Either<NativeFileStat, NativeFailure> {
        outcome(self.inner.stat(&path, follow_symlinks).await.map(file_stat))
    }

    #[napi]
    pub async fn exists(&self, path: String) -> Either<bool, NativeFailure> {
        outcome(self.inner.exists(&path).await)
    }

    #[napi]
    pub async fn list(
        &self,
        path: String,
        max_entries: Option<u32>,
    ) -> Either<Vec<NativeDirEntry>, NativeFailure> {
        let max_entries = max_entries.unwrap_or(DEFAULT_MAX_LIST_ENTRIES);
        outcome(self.inner.list(&path, max_entries).await.map(|entries| {
            entries
                .into_iter()
                .map(|DirEntry { name, stat }| NativeDirEntry {
                    name,
                    stat: file_stat(stat),
                })
                .collect()
        }))
    }

    #[napi]
    pub async fn mkdir(&self, path: String, mode: u32, recursive: bool) -> Option<NativeFailure> {
        done(self.inner.mkdir(&path, mode, recursive).await)
    }

    #[napi]
    pub async fn remove(&self, path: String, recursive: bool) -> Option<NativeFailure> {
        done(self.inner.remove(&path, recursive).await)
    }

    #[napi]
    pub async fn rename(&self, from: String, to: String) -> Option<NativeFailure> {
        done(self.inner.rename(&from, &to).await)
    }

    #[napi]
    pub async fn read(&self, path: String) -> Either<Buffer, NativeFailure> {
        outcome(self.inner.read(&path).await.map(Buffer::from))
    }

    #[napi]
    pub async fn write(
        &self,
        path: String,
        content: Buffer,
        options: NativeWriteOptions,
    ) -> Either<f64, NativeFailure> {
        let result = self
            .inner
            .write(&path, &content, write_options(options))
            .await;
        outcome(result.map(|bytes| bytes as f64))
    }

    #[napi]
    pub async fn copy_from_host(
        &self,
        host_path: String,
        guest_path: String,
    ) -> Either<f64, NativeFailure> {
        let result = self
            .inner
            .copy_from_host(&PathBuf::from(host_path), &guest_path)
            .await;
        outcome(result.map(|bytes| bytes as f64))
    }

    #[napi]
    pub async fn copy_to_host(
        &self,
        guest_path: String,
        host_path: String,
        options: NativeCopyToHostOptions,
        cancel: &NativeCancel,
    ) -> Either<f64, NativeFailure> {
        let options = match copy_to_host_options(options, cancel.token.clone()) {
            Ok(options) => options,
            Err(invalid) => return Either::B(failure(invalid)),
        };
        let result = self
            .inner
            .copy_to_host(&guest_path, &PathBuf::from(host_path), options)
            .await;
        outcome(result.map(|bytes| bytes as f64))
    }

    #[napi]
    pub async fn read_stream(&self, path: String) -> Either<NativeFileReader, NativeFailure> {
        outcome(
            self.inner
                .read_stream(&path)
                .await
                .map(|reader| NativeFileReader {
                    inner: Mutex::new(reader),
                }),
        )
    }

    #[napi]
    pub async fn write_stream(
        &self,
        path: String,
        options: NativeWriteOptions,
    ) -> Either<NativeFileWriter, NativeFailure> {
        let result = self.inner.write_stream(&path, write_options(options)).await;
        outcome(result.map(|writer| NativeFileWriter {
            inner: Mutex::new(Some(writer)),
        }))
    }
}

/// Cancels an operation it is passed to (the TypeScript layer wires an
/// `AbortSignal` to it).
#[napi]
pub struct NativeCancel {
    token: CancellationToken,
}

#[napi]
impl NativeCancel {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            token: CancellationToken::new(),
        }
    }

    #[napi]
    pub fn cancel(&self) {
        self.token.cancel();
    }
}

#[napi]
pub struct NativeFileReader {
    inner: Mutex<FileReader>,
}

#[napi]
impl NativeFileReader {
    /// The next chunk; null at the end of the file.
    #[napi]
    pub async fn next(&self) -> Either<Option<Buffer>, NativeFailure> {
        let chunk = self.inner.lock().await.next_chunk().await;
        outcome(chunk.map(|c| c.map(Buffer::from)))
    }
}

#[napi]
pub struct NativeFileWriter {
    /// `None` once finished.
    inner: Mutex<Option<FileWriter>>,
}

#[napi]
impl NativeFileWriter {
    #[napi]
    pub async fn write(&self, data: Buffer) -> Option<NativeFailure> {
        let mut writer = self.inner.lock().await;
        match writer.as_mut() {
            Some(writer) => done(writer.write(&data).await),
            None => Some(finished_writer()),
        }
    }

    /// Closes the file; resolves to the bytes written.
    #[napi]
    pub async fn finish(&self) -> Either<f64, NativeFailure> {
        let writer = self.inner.lock().await.take();
        match writer {
            Some(writer) => outcome(writer.finish().await.map(|bytes| bytes as f64)),
            None => Either::B(finished_writer()),
        }
    }
}

fn finished_writer() -> NativeFailure {
    failure(InvalidOption::new(
        "write",
        "the write stream is already finished",
    ))
}
