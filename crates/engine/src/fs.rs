//! The guest filesystem from the host: one agent request per operation, file
//! content streamed under the same credit windows as process output and input.
//!
//! Paths: absolute guest paths, or relative to the sandbox's working directory.
//! The guest resolves them as its own processes would: inside the sandbox root,
//! so `..` and symlinks never lead out of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use msb_protocol::{
    is_entry_name, DirEntry, FailureKind, FileKind, FileStat, FsReply, FsRequest, GuestMessage,
    HostMessage,
};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::conn::RuntimeConn;
use crate::copy_out::HostDir;
use crate::error::{FsError, FsErrorKind, InvalidOption};
use crate::request::{self, RequestEvents, RequestSender, OUTPUT_WINDOW};

/// How long the guest may take over one answer (a reply, a batch of entries,
/// a chunk of a file) before the call fails. The agent answers in
/// milliseconds; this bounds a guest that still answers liveness checks but
/// not the request.
const ANSWER_DEADLINE: Duration = Duration::from_secs(120);

/// For a copy through the transfer share: time per byte on top of
/// [`ANSWER_DEADLINE`] (1 s per 4 MB, far below any measured rate).
const TRANSFER_SECONDS_PER_BYTE: f64 = 1.0 / 4e6;

/// Default entry cap of [`SandboxFs::list`].
pub const DEFAULT_MAX_LIST_ENTRIES: u32 = 100_000;

/// Limits and cancellation of [`SandboxFs::copy_to_host`].
#[derive(Debug, Clone)]
pub struct CopyToHostOptions {
    /// Most bytes of file content copied in all.
    pub max_bytes: u64,
    /// Most directory entries looked at in all.
    pub max_entries: u64,
    /// Deepest directory level below the copied directory.
    pub max_depth: u32,
    /// Cancelling it stops the copy (`ABORTED`); no temporary file is left.
    pub cancel: CancellationToken,
}

impl Default for CopyToHostOptions {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            max_entries: 100_000,
            max_depth: 64,
            cancel: CancellationToken::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Permission bits; `None` keeps an existing file's, 0644 for a new one.
    pub mode: Option<u32>,
    pub append: bool,
    /// Create missing parent directories.
    pub create_parents: bool,
}

/// The filesystem of one sandbox. Cheap to clone.
#[derive(Clone)]
pub struct SandboxFs {
    conn: Arc<RuntimeConn>,
    sandbox: String,
    workdir: String,
    /// Host side of the sandbox's transfer share (see [`FileWriter`]).
    transfer: Arc<PathBuf>,
}

impl SandboxFs {
    pub(crate) fn new(
        conn: Arc<RuntimeConn>,
        sandbox: &str,
        workdir: Option<&str>,
        transfer: Arc<PathBuf>,
    ) -> Self {
        Self {
            conn,
            sandbox: sandbox.to_string(),
            workdir: workdir.unwrap_or("/").to_string(),
            transfer,
        }
    }

    /// The absolute guest path for `path`.
    fn resolve(&self, field: &str, path: &str) -> Result<String, FsError> {
        if path.is_empty() || path.contains('\0') {
            return Err(InvalidOption::new(field, format!("{path:?} is not a path")).into());
        }
        if path.starts_with('/') {
            Ok(path.to_string())
        } else {
            Ok(format!("{}/{path}", self.workdir.trim_end_matches('/')))
        }
    }

    fn not_running(&self) -> FsError {
        self.conn.not_running(&self.sandbox).into()
    }

    fn start(&self, request: FsRequest) -> Result<(RequestEvents, RequestSender), FsError> {
        request::start(&self.conn, HostMessage::Fs(request)).map_err(|_| self.not_running())
    }

    /// Runs a request whose whole answer is one `FsReply`.
    async fn one_shot(&self, path: &str, request: FsRequest) -> Result<FsReply, FsError> {
        self.one_shot_within(path, request, ANSWER_DEADLINE).await
    }

    async fn one_shot_within(
        &self,
        path: &str,
        request: FsRequest,
        deadline: Duration,
    ) -> Result<FsReply, FsError> {
        let (mut events, _sender) = self.start(request)?;
        match answer(&mut events, path, deadline).await? {
            Some(GuestMessage::Fs(reply)) => Ok(reply),
            other => Err(self.unexpected(path, other)),
        }
    }

    fn unexpected(&self, path: &str, message: Option<GuestMessage>) -> FsError {
        match message {
            Some(GuestMessage::Failed(failure)) if failure.kind == FailureKind::LimitExceeded => {
                FsError::LimitExceeded {
                    field: "maxEntries",
                    path: path.to_string(),
                    message: failure.message,
                }
            }
            Some(GuestMessage::Failed(failure)) => FsError::Guest {
                kind: FsErrorKind::from_errno(failure.errno),
                errno: failure.errno,
                path: path.to_string(),
                message: failure.message,
            },
            None => self.not_running(),
            Some(other) => FsError::Guest {
                kind: FsErrorKind::Other,
                errno: None,
                path: path.to_string(),
                message: format!("unexpected answer from the guest: {other:?}"),
            },
        }
    }

    pub async fn stat(&self, path: &str, follow_symlinks: bool) -> Result<FileStat, FsError> {
        let path = self.resolve("path", path)?;
        let request = FsRequest::Stat {
            path: path.clone(),
            follow_symlinks,
        };
        match self.one_shot(&path, request).await? {
            FsReply::Stat(stat) => Ok(stat),
            other => Err(self.unexpected(&path, Some(GuestMessage::Fs(other)))),
        }
    }

    pub async fn exists(&self, path: &str) -> Result<bool, FsError> {
        match self.stat(path, false).await {
            Ok(_) => Ok(true),
            Err(FsError::Guest {
                kind: FsErrorKind::NotFound | FsErrorKind::NotADirectory,
                ..
            }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The entries of a directory, at most `max_entries` of them (more is a
    /// `LIMIT_EXCEEDED` error naming `maxEntries`).
    pub async fn list(&self, path: &str, max_entries: u32) -> Result<Vec<DirEntry>, FsError> {
        if max_entries == 0 {
            return Err(InvalidOption::new("maxEntries", "must be positive").into());
        }
        let path = self.resolve("path", path)?;
        self.list_resolved(&path, max_entries).await
    }

    async fn list_resolved(&self, path: &str, max_entries: u32) -> Result<Vec<DirEntry>, FsError> {
        let (mut events, _sender) = self.start(FsRequest::List {
            path: path.to_string(),
            max_entries,
        })?;
        let mut all = Vec::new();
        loop {
            match answer(&mut events, path, ANSWER_DEADLINE).await? {
                Some(GuestMessage::Fs(FsReply::Entries { entries, more })) => {
                    all.extend(entries);
                    if !more {
                        return Ok(all);
                    }
                }
                other => return Err(self.unexpected(path, other)),
            }
        }
    }

    pub async fn mkdir(&self, path: &str, mode: u32, recursive: bool) -> Result<(), FsError> {
        let path = self.resolve("path", path)?;
        let request = FsRequest::Mkdir {
            path: path.clone(),
            mode: check_mode(mode)?,
            recursive,
        };
        self.expect_done(&path, request).await
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<(), FsError> {
        let path = self.resolve("path", path)?;
        if path.trim_end_matches('/').is_empty() {
            return Err(InvalidOption::new("path", "refusing to remove the root directory").into());
        }
        let request = FsRequest::Remove {
            path: path.clone(),
            recursive,
        };
        self.expect_done(&path, request).await
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<(), FsError> {
        let from = self.resolve("from", from)?;
        let to = self.resolve("to", to)?;
        let request = FsRequest::Rename {
            from: from.clone(),
            to,
        };
        self.expect_done(&from, request).await
    }

    pub async fn symlink(&self, path: &str, target: &str) -> Result<(), FsError> {
        let path = self.resolve("path", path)?;
        if target.is_empty() || target.contains('\0') {
            return Err(InvalidOption::new("target", "is not a path").into());
        }
        let request = FsRequest::Symlink {
            path: path.clone(),
            target: target.to_string(),
        };
        self.expect_done(&path, request).await
    }

    async fn expect_done(&self, path: &str, request: FsRequest) -> Result<(), FsError> {
        match self.one_shot(path, request).await? {
            FsReply::Done => Ok(()),
            other => Err(self.unexpected(path, Some(GuestMessage::Fs(other)))),
        }
    }

    /// Opens a guest file for reading in chunks.
    pub async fn read_stream(&self, path: &str) -> Result<FileReader, FsError> {
        let path = self.resolve("path", path)?;
        let (events, sender) = self.start(FsRequest::Read {
            path: path.clone(),
            output_window: OUTPUT_WINDOW,
        })?;
        Ok(FileReader {
            fs: self.clone(),
            path,
            events,
            sender,
        })
    }

    pub async fn read(&self, path: &str) -> Result<Vec<u8>, FsError> {
        let mut reader = self.read_stream(path).await?;
        let mut content = Vec::new();
        while let Some(chunk) = reader.next_chunk().await? {
            content.extend_from_slice(&chunk);
        }
        Ok(content)
    }

    /// Opens a guest file for writing in chunks; see [`FileWriter`].
    pub async fn write_stream(
        &self,
        path: &str,
        options: WriteOptions,
    ) -> Result<FileWriter, FsError> {
        let path = self.resolve("path", path)?;
        let options = WriteOptions {
            mode: options.mode.map(check_mode).transpose()?,
            ..options
        };
        Ok(FileWriter {
            fs: self.clone(),
            path,
            options,
            content: Content::Memory(Vec::new()),
        })
    }

    pub async fn write(
        &self,
        path: &str,
        content: &[u8],
        options: WriteOptions,
    ) -> Result<u64, FsError> {
        let mut writer = self.write_stream(path, options).await?;
        writer.write(content).await?;
        writer.finish().await
    }

    /// Copies a host file or directory tree into the guest, keeping permission
    /// bits and symlinks. Returns the bytes of file content copied.
    pub async fn copy_from_host(&self, host: &Path, guest: &str) -> Result<u64, FsError> {
        let guest = self.resolve("guestPath", guest)?;
        let meta = tokio::fs::symlink_metadata(host)
            .await
            .map_err(host_error(host))?;
        if meta.is_dir() {
            let mut total = 0;
            let mut pending = vec![(host.to_path_buf(), guest)];
            while let Some((host_dir, guest_dir)) = pending.pop() {
                let mode = permission_bits(
                    &tokio::fs::metadata(&host_dir)
                        .await
                        .map_err(host_error(&host_dir))?,
                );
                self.mkdir(&guest_dir, mode, true).await?;
                let mut entries = tokio::fs::read_dir(&host_dir)
                    .await
                    .map_err(host_error(&host_dir))?;
                while let Some(entry) = entries.next_entry().await.map_err(host_error(&host_dir))? {
                    let host_path = entry.path();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let guest_path = format!("{}/{name}", guest_dir.trim_end_matches('/'));
                    let kind = entry.file_type().await.map_err(host_error(&host_path))?;
                    if kind.is_dir() {
                        pending.push((host_path, guest_path));
                    } else {
                        total += self.copy_entry_from_host(&host_path, &guest_path).await?;
                    }
                }
            }
            Ok(total)
        } else {
            self.copy_entry_from_host(host, &guest).await
        }
    }

    /// Copies one non-directory: a symlink as a symlink, a file by content.
    async fn copy_entry_from_host(&self, host: &Path, guest: &str) -> Result<u64, FsError> {
        let meta = tokio::fs::symlink_metadata(host)
            .await
            .map_err(host_error(host))?;
        if meta.file_type().is_symlink() {
            let target = tokio::fs::read_link(host).await.map_err(host_error(host))?;
            self.symlink(guest, &target.to_string_lossy()).await?;
            return Ok(0);
        }
        let options = WriteOptions {
            mode: Some(permission_bits(&meta)),
            append: false,
            create_parents: false,
        };
        // The file goes to the transfer share as a hard link (no copy) when it
        // is on the same filesystem, else as a copy.
        let staged = TransferFile::new(&self.transfer);
        if std::fs::hard_link(host, &staged.path).is_err() {
            tokio::fs::copy(host, &staged.path)
                .await
                .map_err(host_error(host))?;
        }
        self.write_from_transfer(guest, &staged, options).await
    }

    /// Has the guest copy a staged transfer file to `path`.
    async fn write_from_transfer(
        &self,
        path: &str,
        staged: &TransferFile,
        options: WriteOptions,
    ) -> Result<u64, FsError> {
        let request = FsRequest::WriteFromTransfer {
            name: staged.name.clone(),
            path: path.to_string(),
            mode: options.mode,
            append: options.append,
            create_parents: options.create_parents,
        };
        let size = std::fs::metadata(&staged.path).map_or(0, |meta| meta.len());
        let deadline =
            ANSWER_DEADLINE + Duration::from_secs_f64(size as f64 * TRANSFER_SECONDS_PER_BYTE);
        match self.one_shot_within(path, request, deadline).await? {
            FsReply::Written { bytes } => Ok(bytes),
            other => Err(self.unexpected(path, Some(GuestMessage::Fs(other)))),
        }
    }

    /// Writes `content` through the agent channel: for small files, where one
    /// round trip beats staging a file.
    async fn write_inline(
        &self,
        path: &str,
        content: &[u8],
        options: WriteOptions,
    ) -> Result<u64, FsError> {
        let (mut events, sender) = self.start(FsRequest::Write {
            path: path.to_string(),
            mode: options.mode,
            append: options.append,
            create_parents: options.create_parents,
        })?;
        // A failed send means the guest ended the request early: its answer says why.
        if sender.write_input(content).await.is_ok() {
            let _ = sender.end_input().await;
        }
        match answer(&mut events, path, ANSWER_DEADLINE).await? {
            Some(GuestMessage::Fs(FsReply::Written { bytes })) => Ok(bytes),
            other => Err(self.unexpected(path, other)),
        }
    }

    /// Copies a guest file or directory tree to the host; see [`crate::copy_out`]
    /// for how guest names and modes are kept from steering host writes.
    /// Symlinks and special files are not copied out (their meaning is the
    /// guest's). Returns the bytes of file content copied.
    pub async fn copy_to_host(
        &self,
        guest: &str,
        host: &Path,
        options: CopyToHostOptions,
    ) -> Result<u64, FsError> {
        let guest = self.resolve("guestPath", guest)?;
        let stat = self.stat(&guest, true).await?;
        let mut copy = CopyOut {
            fs: self,
            options: &options,
            bytes: 0,
            entries: 0,
        };
        if stat.kind != FileKind::Dir {
            let (parent, name) = split_host_path(host)?;
            // A single file goes into a directory that must already exist.
            if !parent.is_dir() {
                return Err(host_error(&parent)(std::io::Error::from_raw_os_error(
                    libc::ENOENT,
                )));
            }
            let dir = HostDir::open_destination(&parent, 0o755).map_err(host_error(&parent))?;
            copy.file(&guest, &dir, &name, stat.mode, host).await?;
            return Ok(copy.bytes);
        }
        let top = HostDir::open_destination(host, stat.mode).map_err(host_error(host))?;
        copy.tree(guest, top, host.to_path_buf(), 0).await?;
        Ok(copy.bytes)
    }
}

/// The host path `path` as its parent directory and its last component.
fn split_host_path(path: &Path) -> Result<(PathBuf, String), FsError> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| InvalidOption::new("hostPath", format!("{path:?} names no file")))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// One `copyToHost` call: its limits and what it has used of them.
struct CopyOut<'a> {
    fs: &'a SandboxFs,
    options: &'a CopyToHostOptions,
    bytes: u64,
    entries: u64,
}

impl CopyOut<'_> {
    fn check_cancel(&self, path: &str) -> Result<(), FsError> {
        if self.options.cancel.is_cancelled() {
            return Err(FsError::Aborted {
                path: path.to_string(),
            });
        }
        Ok(())
    }

    /// Copies the guest directory `guest` into `dir`, depth first.
    fn tree<'s>(
        &'s mut self,
        guest: String,
        dir: HostDir,
        host: PathBuf,
        depth: u32,
    ) -> futures::future::BoxFuture<'s, Result<(), FsError>> {
        Box::pin(async move {
            self.check_cancel(&guest)?;
            let budget = self.options.max_entries.saturating_sub(self.entries);
            // One more than the budget, so a directory that overflows it is
            // reported as our limit rather than the guest's.
            let cap = budget.saturating_add(1).min(u32::MAX as u64) as u32;
            let entries = tokio::select! {
                listed = self.fs.list_resolved(&guest, cap) => listed,
                _ = self.options.cancel.cancelled() => return Err(FsError::Aborted { path: guest }),
            };
            let entries = match entries {
                Err(FsError::LimitExceeded { path, message, .. }) => {
                    return Err(FsError::LimitExceeded {
                        field: "maxEntries",
                        path,
                        message,
                    })
                }
                other => other?,
            };
            self.entries += entries.len() as u64;
            if self.entries > self.options.max_entries {
                return Err(FsError::LimitExceeded {
                    field: "maxEntries",
                    path: guest,
                    message: format!("more than {} entries", self.options.max_entries),
                });
            }
            for entry in entries {
                if !is_entry_name(&entry.name) {
                    return Err(FsError::GuestProtocol {
                        problem: format!("{:?} as a directory entry name", entry.name),
                    });
                }
                let guest_path = format!("{}/{}", guest.trim_end_matches('/'), entry.name);
                let host_path = host.join(&entry.name);
                match entry.stat.kind {
                    FileKind::Dir => {
                        if depth + 1 > self.options.max_depth {
                            return Err(FsError::LimitExceeded {
                                field: "maxDepth",
                                path: guest_path,
                                message: format!("deeper than {} levels", self.options.max_depth),
                            });
                        }
                        let child = dir
                            .child_dir(&entry.name, entry.stat.mode)
                            .map_err(host_error(&host_path))?;
                        self.tree(guest_path, child, host_path, depth + 1).await?;
                    }
                    FileKind::File => {
                        self.file(&guest_path, &dir, &entry.name, entry.stat.mode, &host_path)
                            .await?
                    }
                    FileKind::Symlink | FileKind::Other => {}
                }
            }
            dir.finish().map_err(host_error(&host))
        })
    }

    /// Copies the guest file `guest` to `name` in `dir`.
    async fn file(
        &mut self,
        guest: &str,
        dir: &HostDir,
        name: &str,
        mode: u32,
        host: &Path,
    ) -> Result<(), FsError> {
        self.check_cancel(guest)?;
        let limit = |copy: &Self| FsError::LimitExceeded {
            field: "maxBytes",
            path: guest.to_string(),
            message: format!("more than {} bytes", copy.options.max_bytes),
        };
        let mut pending = dir.new_file(name, mode).map_err(host_error(host))?;
        let mut reader = self.fs.read_stream(guest).await?;
        loop {
            let chunk = tokio::select! {
                chunk = reader.next_chunk() => chunk?,
                _ = self.options.cancel.cancelled() => return Err(FsError::Aborted { path: guest.to_string() }),
            };
            let Some(chunk) = chunk else { break };
            self.bytes += chunk.len() as u64;
            if self.bytes > self.options.max_bytes {
                return Err(limit(self));
            }
            // Local disk writes of at most one chunk; done inline.
            pending.file().write_all(&chunk).map_err(host_error(host))?;
        }
        pending.persist().map_err(host_error(host))
    }
}

/// The next message of a request, failing if the guest takes longer than `deadline`.
async fn answer(
    events: &mut RequestEvents,
    path: &str,
    deadline: Duration,
) -> Result<Option<GuestMessage>, FsError> {
    tokio::time::timeout(deadline, events.recv())
        .await
        .map_err(|_| FsError::NoAnswer {
            path: path.to_string(),
            waited_ms: deadline.as_millis() as u64,
        })
}

fn check_mode(mode: u32) -> Result<u32, FsError> {
    if mode > 0o7777 {
        return Err(
            InvalidOption::new("mode", format!("{mode:o} is not a permission mode")).into(),
        );
    }
    Ok(mode)
}

fn permission_bits(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

fn host_error(path: &Path) -> impl Fn(std::io::Error) -> FsError + '_ {
    move |source| FsError::Host {
        path: path.to_path_buf(),
        source,
    }
}

/// A guest file being read, chunk by chunk; credit is returned as chunks are taken.
pub struct FileReader {
    fs: SandboxFs,
    path: String,
    events: RequestEvents,
    sender: RequestSender,
}

impl FileReader {
    /// The next chunk, or `None` at the end of the file.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, FsError> {
        if self.events.is_finished() {
            return Ok(None);
        }
        match answer(&mut self.events, &self.path, ANSWER_DEADLINE).await? {
            Some(GuestMessage::Data(data)) => {
                self.sender.credit_output(data.len());
                Ok(Some(data))
            }
            Some(GuestMessage::Fs(FsReply::Done)) => Ok(None),
            other => Err(self.fs.unexpected(&self.path, other)),
        }
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        if !self.events.is_finished() {
            // Stop the guest from reading further.
            let _ = self.sender.send(HostMessage::Kill);
        }
    }
}

/// Content above this size is staged in the transfer share rather than sent
/// through the agent channel.
const INLINE_LIMIT: usize = 1 << 20;

/// A guest file being written; it appears in the guest, complete, at
/// [`FileWriter::finish`]. Small content is sent through the agent channel. Once
/// it outgrows [`INLINE_LIMIT`] it is staged in a host file on the sandbox's
/// transfer share (read-only to the guest) and the guest copies it in over 9p:
/// QEMU feeds a virtio-serial port at most 4 KiB per main-loop turn, 9p moves
/// up to 512 KiB per request. Dropping a writer before `finish` writes nothing.
pub struct FileWriter {
    fs: SandboxFs,
    path: String,
    options: WriteOptions,
    content: Content,
}

enum Content {
    Memory(Vec<u8>),
    Staged {
        file: tokio::fs::File,
        staged: TransferFile,
    },
}

impl FileWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), FsError> {
        match &mut self.content {
            Content::Memory(buf) if buf.len() + data.len() <= INLINE_LIMIT => {
                buf.extend_from_slice(data);
                Ok(())
            }
            Content::Memory(buf) => {
                let staged = TransferFile::new(&self.fs.transfer);
                let mut file = tokio::fs::File::create(&staged.path)
                    .await
                    .map_err(host_error(&staged.path))?;
                file.write_all(buf)
                    .await
                    .map_err(host_error(&staged.path))?;
                file.write_all(data)
                    .await
                    .map_err(host_error(&staged.path))?;
                self.content = Content::Staged { file, staged };
                Ok(())
            }
            Content::Staged { file, staged } => {
                file.write_all(data).await.map_err(host_error(&staged.path))
            }
        }
    }

    /// Writes the file in the guest and returns its size.
    pub async fn finish(self) -> Result<u64, FsError> {
        match self.content {
            Content::Memory(buf) => self.fs.write_inline(&self.path, &buf, self.options).await,
            Content::Staged { mut file, staged } => {
                file.flush().await.map_err(host_error(&staged.path))?;
                drop(file);
                self.fs
                    .write_from_transfer(&self.path, &staged, self.options)
                    .await
            }
        }
    }
}

/// A uniquely named file in the transfer share, removed when dropped.
struct TransferFile {
    name: String,
    path: PathBuf,
}

impl TransferFile {
    fn new(dir: &Path) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "in-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            path: dir.join(&name),
            name,
        }
    }
}

impl Drop for TransferFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
