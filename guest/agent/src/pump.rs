//! Moves bytes from a guest source (a pipe, a pty master, a file) to the host,
//! never sending more than the host's credit allows.
//!
//! Exit rule for process output: when the process has exited, its output is
//! drained until end-of-file, or until nothing arrived for [`DRAIN_IDLE`] (a
//! background grandchild may hold the pipe open forever). Time spent waiting for
//! credit does not count as idle, so a slow consumer loses nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use msb_protocol::{Envelope, GuestMessage, MAX_DATA_CHUNK};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{watch, Semaphore};

use crate::server::Outbox;

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

    /// Waits for at least one byte of credit and takes as much as one chunk allows.
    async fn take(&self) -> usize {
        let Ok(first) = self.credit.acquire().await else {
            return 0;
        };
        first.forget();
        let more = self.credit.available_permits().min(MAX_DATA_CHUNK - 1);
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
}

pub struct Pump {
    pub id: u64,
    pub message: fn(Vec<u8>) -> GuestMessage,
    pub window: Arc<Window>,
    pub outbox: Outbox,
    /// Set when the producing process exited; `None` for sources that end by
    /// themselves (files).
    pub exited: Option<watch::Receiver<bool>>,
}

impl Pump {
    /// Forwards until end-of-file, a read error, or (after exit) idleness.
    /// Returns the number of bytes read.
    pub async fn run<R: AsyncRead + Unpin>(mut self, mut source: R) -> u64 {
        let mut buf = vec![0u8; MAX_DATA_CHUNK];
        let mut total = 0u64;
        loop {
            let allowed = self.window.take().await;
            let n = match self.read(&mut source, &mut buf[..allowed]).await {
                Some(Ok(n)) if n > 0 => n,
                // End of file, a read error (a pty master reads EIO once the
                // terminal is gone) or idleness after exit: the stream is over.
                _ => {
                    self.window.give_back(allowed);
                    return total;
                }
            };
            self.window.give_back(allowed - n);
            total += n as u64;
            if self.window.detached.load(Ordering::Relaxed) {
                continue;
            }
            let msg = (self.message)(buf[..n].to_vec());
            if self.outbox.send(Envelope::new(self.id, msg)).await.is_err() {
                return total;
            }
        }
    }

    async fn read<R: AsyncRead + Unpin>(
        &mut self,
        source: &mut R,
        buf: &mut [u8],
    ) -> Option<std::io::Result<usize>> {
        let Some(exited) = &mut self.exited else {
            return Some(source.read(buf).await);
        };
        loop {
            if *exited.borrow() {
                return tokio::time::timeout(DRAIN_IDLE, source.read(buf))
                    .await
                    .ok();
            }
            tokio::select! {
                read = source.read(buf) => return Some(read),
                changed = exited.changed() => {
                    if changed.is_err() {
                        return tokio::time::timeout(DRAIN_IDLE, source.read(buf)).await.ok();
                    }
                }
            }
        }
    }
}
