//! Filesystem requests. Paths are resolved by the kernel exactly as for any
//! guest process: the agent runs chrooted in the sandbox root, so `..` and
//! symlinks cannot lead outside it, and they mean what they mean in the guest.
//!
//! Metadata calls and opens run on tokio's blocking pool. File content streams
//! through the same credit windows as process output and input, read and
//! written inline: for files in guest memory that is a copy, cheaper than a
//! hop to the pool and back.

use std::fs::{self, DirBuilder, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use msb_protocol::{DirEntry, Envelope, FileKind, FileStat, FsReply, FsRequest, GuestMessage};
use tokio::sync::mpsc;

use crate::exec::io_failure;
use crate::input::{self, InputReceiver, InputSender};
use crate::outbox::Outbox;
use crate::pump::{self, Window};

/// Directory entries per `Entries` message: well under the frame limit even
/// with long names.
const ENTRIES_PER_BATCH: usize = 256;

/// What the dispatcher keeps for a running file transfer, to route stream messages.
pub enum Transfer {
    /// A read: `Credit` grows its window.
    Read(Arc<Window>),
    /// A write: `Input`/`InputEnd` feed it.
    Write(InputSender),
}

/// Starts `request`. Returns the transfer to register under `id`, if it streams;
/// `on_end` runs before the final reply so the id is free by then.
pub fn start(
    id: u64,
    request: FsRequest,
    transfer_dir: Option<Arc<OwnedFd>>,
    outbox: Outbox,
    on_end: impl FnOnce() + Send + 'static,
) -> Option<Transfer> {
    match request {
        FsRequest::WriteFromTransfer {
            name,
            path,
            mode,
            append,
            create_parents,
        } => {
            tokio::spawn(async move {
                let destination = Destination {
                    path: path.clone(),
                    mode,
                    append,
                    create_parents,
                };
                let copied = tokio::task::spawn_blocking(move || {
                    copy_from_transfer(transfer_dir.as_deref(), &name, &destination)
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                let reply = match copied {
                    Ok(bytes) => GuestMessage::Fs(FsReply::Written { bytes }),
                    Err(err) => failed(&format!("write {path}"), err),
                };
                on_end();
                let _ = outbox.send(Envelope::new(id, reply)).await;
            });
            None
        }
        FsRequest::Read {
            path,
            output_window,
        } => {
            let window = Window::new(output_window);
            let send_window = window.clone();
            tokio::spawn(async move {
                let result = match open_for_reading(&path) {
                    Ok(file) => pump::send_file(id, file, send_window, &outbox).await,
                    Err(err) => Err(err),
                };
                let reply = match result {
                    Ok(()) => GuestMessage::Fs(FsReply::Done),
                    Err(err) => failed(&format!("read {path}"), err),
                };
                on_end();
                let _ = outbox.send(Envelope::new(id, reply)).await;
            });
            Some(Transfer::Read(window))
        }
        FsRequest::Write {
            path,
            mode,
            append,
            create_parents,
        } => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let destination = Destination {
                    path: path.clone(),
                    mode,
                    append,
                    create_parents,
                };
                let reply = match write(id, destination, &mut rx, &outbox).await {
                    Ok(bytes) => GuestMessage::Fs(FsReply::Written { bytes }),
                    Err(err) => failed(&format!("write {path}"), err),
                };
                on_end();
                let _ = outbox.send(Envelope::new(id, reply)).await;
                // Input that was already in flight gets its credit back.
                input::discard(id, &mut rx, &outbox).await;
            });
            Some(Transfer::Write(tx))
        }
        one_shot => {
            tokio::spawn(async move {
                let result = tokio::task::spawn_blocking(move || run_one_shot(one_shot))
                    .await
                    .unwrap_or_else(|e| Err((String::from("fs"), io::Error::other(e))));
                match result {
                    Ok(replies) => {
                        on_end();
                        for reply in replies {
                            let _ = outbox
                                .send(Envelope::new(id, GuestMessage::Fs(reply)))
                                .await;
                        }
                    }
                    Err((what, err)) => {
                        on_end();
                        let _ = outbox.send(Envelope::new(id, failed(&what, err))).await;
                    }
                }
            });
            None
        }
    }
}

fn failed(what: &str, err: io::Error) -> GuestMessage {
    GuestMessage::Failed(io_failure(what, err))
}

/// Opens a regular file to read. The open never blocks (a FIFO would hold the
/// agent's only thread until a writer came) and the descriptor stays
/// non-blocking, so a file that reads like a device (`/proc/kmsg`) fails
/// instead of hanging; anything but a regular file is refused.
fn open_for_reading(path: &str) -> io::Result<fs::File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    require_regular_file(&file)?;
    Ok(file)
}

/// Refuses directories (`EISDIR`) and anything else that is not a regular
/// file (`EINVAL`): FIFOs, sockets and devices are not file content.
fn require_regular_file(file: &fs::File) -> io::Result<()> {
    let kind = file.metadata()?.file_type();
    if kind.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(())
}

/// Where and how a file is written.
struct Destination {
    path: String,
    mode: Option<u32>,
    append: bool,
    create_parents: bool,
}

impl Destination {
    fn open(&self) -> io::Result<fs::File> {
        let path = Path::new(&self.path);
        if self.create_parents {
            if let Some(parent) = path.parent() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)?;
            }
        }
        // Non-blocking open: a FIFO without a reader fails (ENXIO) instead of
        // holding a thread; only regular files are written.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .append(self.append)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?;
        require_regular_file(&file)?;
        if !self.append {
            file.set_len(0)?;
        }
        if let Some(mode) = self.mode {
            // Exact bits, whatever the umask.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        Ok(file)
    }
}

async fn write(
    id: u64,
    destination: Destination,
    events: &mut InputReceiver,
    outbox: &Outbox,
) -> io::Result<u64> {
    let file = tokio::task::spawn_blocking(move || destination.open())
        .await
        .map_err(io::Error::other)??;
    let mut sink = input::Inline(file);
    input::feed(id, &mut sink, events, outbox).await
}

/// Bytes per read from the transfer share: large reads make few 9p round trips.
const TRANSFER_CHUNK: usize = 1 << 20;

fn copy_from_transfer(
    dir: Option<&OwnedFd>,
    name: &str,
    destination: &Destination,
) -> io::Result<u64> {
    let Some(dir) = dir else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no transfer share",
        ));
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let source = nix::fcntl::openat(
        dir,
        name,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let mut source = fs::File::from(source);
    let mut target = destination.open()?;
    let mut buf = vec![0u8; TRANSFER_CHUNK];
    let mut total = 0u64;
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        target.write_all(&buf[..n])?;
        total += n as u64;
    }
}

type OneShotResult = Result<Vec<FsReply>, (String, io::Error)>;

fn run_one_shot(request: FsRequest) -> OneShotResult {
    let ctx = |what: String| move |err: io::Error| (what, err);
    match request {
        FsRequest::Stat {
            path,
            follow_symlinks,
        } => {
            let meta = if follow_symlinks {
                fs::metadata(&path)
            } else {
                fs::symlink_metadata(&path)
            };
            let meta = meta.map_err(ctx(format!("stat {path}")))?;
            Ok(vec![FsReply::Stat(file_stat(&meta))])
        }
        FsRequest::List { path, max_entries } => {
            list(&path, max_entries).map_err(ctx(format!("list {path}")))
        }
        FsRequest::Mkdir {
            path,
            mode,
            recursive,
        } => {
            DirBuilder::new()
                .recursive(recursive)
                .mode(mode)
                .create(&path)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
                .map_err(ctx(format!("mkdir {path}")))?;
            Ok(vec![FsReply::Done])
        }
        FsRequest::Remove { path, recursive } => {
            let meta = fs::symlink_metadata(&path).map_err(ctx(format!("remove {path}")))?;
            let removed = match (meta.is_dir(), recursive) {
                (true, true) => fs::remove_dir_all(&path),
                (true, false) => fs::remove_dir(&path),
                (false, _) => fs::remove_file(&path),
            };
            removed.map_err(ctx(format!("remove {path}")))?;
            Ok(vec![FsReply::Done])
        }
        FsRequest::Rename { from, to } => {
            fs::rename(&from, &to).map_err(ctx(format!("rename {from} to {to}")))?;
            Ok(vec![FsReply::Done])
        }
        FsRequest::Symlink { path, target } => {
            std::os::unix::fs::symlink(&target, &path)
                .map_err(ctx(format!("symlink {path} -> {target}")))?;
            Ok(vec![FsReply::Done])
        }
        FsRequest::Read { .. } | FsRequest::Write { .. } | FsRequest::WriteFromTransfer { .. } => {
            unreachable!("streaming requests are started by `start`")
        }
    }
}

fn list(path: &str, max_entries: u32) -> io::Result<Vec<FsReply>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if entries.len() >= max_entries as usize {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("more than {max_entries} entries"),
            ));
        }
        // The entry may vanish between readdir and lstat; skip it then.
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        entries.push(DirEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            stat: file_stat(&meta),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut batches: Vec<FsReply> = entries
        .chunks(ENTRIES_PER_BATCH)
        .map(|chunk| FsReply::Entries {
            entries: chunk.to_vec(),
            more: true,
        })
        .collect();
    match batches.last_mut() {
        Some(FsReply::Entries { more, .. }) => *more = false,
        _ => batches.push(FsReply::Entries {
            entries: vec![],
            more: false,
        }),
    }
    Ok(batches)
}

fn file_stat(meta: &Metadata) -> FileStat {
    let kind = if meta.file_type().is_symlink() {
        FileKind::Symlink
    } else if meta.is_dir() {
        FileKind::Dir
    } else if meta.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileStat {
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_nanos: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    }
}
