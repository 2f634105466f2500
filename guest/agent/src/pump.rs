//! Moves bytes from a guest source (a pipe, a pty master, a file) to the host,
//! never sending more than the host's credit allows, reading each chunk
//! straight into the buffer the message carries.
//!
//! Exit rule for process output: when the process has exited, its output is
//! drained until end-of-file, or until nothing arrived for [`DRAIN_IDLE`] (a
//! background grandchild may hold the pipe open forever). Time spent waiting for
//! credit does not count as idle, so a slow consumer loses nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::fs::File;
use std::io::{self, Read};

use bytes::BufMut;
use msb_protocol::{Envelope, GuestMessage, MAX_DATA_CHUNK, OUTPUT_MESSAGE_COST};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{watch, Semaphore};

use crate::outbox::Outbox;

/// How long to keep reading a dead process's output with nothing arriving.
pub const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// Credit a permit count can hold without overflow, granted when output is discarded.
const UNLIMITED: usize = usize::MAX >> 4;

/// A request's output window: bytes the host allows, and whether anyone still reads.
pub struct Window {
    credit: Semaphore,
    detached: AtomicBool,
}

impl Window {
    pub fn new(bytes: u32) -> Arc<Window> {
        Arc::new(Window {
            credit: Semaphore::new(bytes as usize),
            detached: AtomicBool::new(false),
        })
    }

    pub fn add_credit(&self, bytes: u32) {
        if !self.detached.load(Ordering::Relaxed) {
            self.credit.add_permits(bytes as usize);
        }
    }

    /// From now on output is read and dropped, so the source never blocks.
    pub fn detach(&self) {
        if !self.detached.swap(true, Ordering::Relaxed) {
            self.credit.add_permits(UNLIMITED);
        }
    }

    /// Ends the stream early: the pump stops at its next read.
    pub fn close(&self) {
        self.credit.close();
    }

    /// Waits for credit for one message of at least one byte, spends the
    /// message's cost and takes up to `chunk` bytes; returns the bytes taken.
    /// Hand back what goes unsent with [`Window::give_back`], and the cost too
    /// ([`Window::cancel`]) when no message is sent at all.
    async fn take(&self, chunk: usize) -> usize {
        let Ok(first) = self.credit.acquire_many(OUTPUT_MESSAGE_COST + 1).await else {
            return 0;
        };
        first.forget();
        let more = self.credit.available_permits().min(chunk - 1);
        match self.credit.try_acquire_many(more as u32) {
            Ok(permits) => {
                permits.forget();
                1 + more
            }
            Err(_) => 1,
        }
    }

    fn give_back(&self, bytes: usize) {
        self.credit.add_permits(bytes);
    }

    /// Returns a whole `take` of `bytes` for which no message was sent.
    fn cancel(&self, bytes: usize) {
        self.give_back(bytes + OUTPUT_MESSAGE_COST as usize);
    }
}

/// Forwards a process's output stream (pipe or pty master).
pub struct Pump {
    pub id: u64,
    pub message: fn(Vec<u8>) -> GuestMessage,
    pub window: Arc<Window>,
    pub outbox: Outbox,
    /// Set when the producing process exited.
    pub exited: watch::Receiver<bool>,
}

impl Pump {
    /// Forwards until end-of-file, a read error, or idleness after exit.
    pub async fn run<R: AsyncRead + Unpin>(mut self, mut source: R) {
        loop {
            let allowed = self.window.take(MAX_DATA_CHUNK).await;
            // Read straight into the message's own buffer: no copy per chunk.
            let mut data = Vec::with_capacity(allowed);
            let n = match self.read(&mut source, &mut data, allowed).await {
                Some(Ok(n)) if n > 0 => n,
                // End of file, a read error (a pty master reads EIO once the
                // terminal is gone) or idleness after exit: the stream is over.
                _ => {
                    self.window.cancel(allowed);
                    return;
                }
            };
            self.window.give_back(allowed - n);
            if !self
                .window
                .forward(self.id, (self.message)(data), &self.outbox)
                .await
            {
                return;
            }
        }
    }

    async fn read<R: AsyncRead + Unpin>(
        &mut self,
        source: &mut R,
        data: &mut Vec<u8>,
        allowed: usize,
    ) -> Option<std::io::Result<usize>> {
        loop {
            let mut limited = (&mut *data).limit(allowed);
            if *self.exited.borrow() {
                return tokio::time::timeout(DRAIN_IDLE, source.read_buf(&mut limited))
                    .await
                    .ok();
            }
            tokio::select! {
                read = source.read_buf(&mut limited) => return Some(read),
                changed = self.exited.changed() => {
                    if changed.is_err() {
                        let read = source.read_buf(&mut limited);
                        return tokio::time::timeout(DRAIN_IDLE, read).await.ok();
                    }
                }
            }
        }
    }
}

impl Window {
    /// Sends `msg` unless output is discarded; false when the host is gone.
    async fn forward(&self, id: u64, msg: GuestMessage, outbox: &Outbox) -> bool {
        if self.detached.load(Ordering::Relaxed) {
            return true;
        }
        outbox.send(Envelope::new(id, msg)).await.is_ok()
    }
}

/// Bytes per file read. Measured: 64 KiB moves a guest file to the host
/// about twice as fast as 256 KiB chunks under emulation.
const FILE_CHUNK: usize = 64 << 10;

/// Sends a regular file's content as `Data` chunks under the window. Reads
/// happen inline on the agent thread: a chunk of a file in guest memory is a
/// copy, cheaper than a hop to the blocking pool.
pub async fn send_file(
    id: u64,
    mut file: File,
    window: Arc<Window>,
    outbox: &Outbox,
) -> io::Result<()> {
    loop {
        let allowed = window.take(FILE_CHUNK).await;
        if allowed == 0 {
            // The window was closed: the host abandoned the read.
            return Ok(());
        }
        let mut data = Vec::with_capacity(allowed);
        let n = match (&mut file).take(allowed as u64).read_to_end(&mut data) {
            Ok(n) => n,
            Err(err) => {
                window.cancel(allowed);
                return Err(err);
            }
        };
        if n == 0 {
            window.cancel(allowed);
            return Ok(());
        }
        window.give_back(allowed - n);
        if !window.forward(id, GuestMessage::Data(data), outbox).await {
            return Ok(());
        }
    }
}
