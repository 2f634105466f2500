//! Framing between the stack and the VMM: Ethernet frames over a byte stream, each prefixed by
//! its length as a 4-byte big-endian integer (QEMU's `-netdev stream`, and libkrun's
//! `krun_add_net_unixstream`, which speaks the same passt protocol).
//!
//! Frames bound for the guest are queued in an `OutQueue` in exactly that encoding, so a stream
//! link writes the queue as it is. Another transport (a datagram socket with one frame per
//! datagram, as libkrun's `unixgram` feed uses) plugs in by implementing `FrameLink`: it would
//! split the queue at the length prefixes instead.
//!
//! Nothing the guest sends can end the link: the guest chooses its frames' sizes (its MTU, raw
//! sockets), so a frame longer than [`MAX_FRAME_LEN`] is reported as [`Received::Oversized`] and
//! its bytes are discarded as they arrive, never buffered; the next frame is read as usual. Only
//! the link itself failing, or closing in the middle of a frame, stops the stack.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame the link buffers. Bigger than any Ethernet frame the stack's MTU allows (the
/// stack drops those too, see `stack::Engine::on_frame`); a longer frame is skipped, so a length
/// prefix cannot make the host buffer more than this.
pub const MAX_FRAME_LEN: usize = 65_536;
const PREFIX: usize = 4;

/// Why [`crate::NetStack::run`] stopped with an error: the link to the VMM failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("network link I/O failed")]
    Io(#[source] io::Error),
    #[error("network link closed in the middle of a frame")]
    Truncated,
}

/// What the link delivered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received<'a> {
    /// A whole frame.
    Frame(&'a [u8]),
    /// A frame of `len` bytes, more than [`MAX_FRAME_LEN`]: it is skipped (the caller only
    /// counts it).
    Oversized { len: usize },
}

/// A duplex source and sink of Ethernet frames.
pub(crate) trait FrameLink {
    /// The next frame; `Ok(None)` once the peer has closed the link.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Received<'_>>, RunError>>;

    /// Writes queued frames until the queue is empty (`Ready`) or the link is full (`Pending`).
    fn poll_send(&mut self, cx: &mut Context<'_>, out: &mut OutQueue)
        -> Poll<Result<(), RunError>>;
}

/// Length-prefixed frames over any byte stream.
pub(crate) struct StreamLink<L> {
    io: L,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes of an oversized frame still to be discarded as they arrive.
    skip: usize,
}

/// Where the next frame is, once its prefix has arrived.
enum Next {
    Frame(std::ops::Range<usize>),
    Oversized(usize),
}

impl<L: AsyncRead + AsyncWrite + Unpin> StreamLink<L> {
    pub(crate) fn new(io: L) -> StreamLink<L> {
        StreamLink {
            io,
            buf: vec![0; 2 * (MAX_FRAME_LEN + PREFIX)],
            start: 0,
            end: 0,
            skip: 0,
        }
    }

    /// The next complete frame in the buffer, if there is one. An oversized frame is reported as
    /// soon as its prefix is in, and its bytes are then skipped.
    fn next_frame(&mut self) -> Option<Next> {
        let available = &self.buf[self.start..self.end];
        let prefix = available.get(..PREFIX)?;
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > MAX_FRAME_LEN {
            self.start += PREFIX;
            self.skip = len;
            return Some(Next::Oversized(len));
        }
        if available.len() < PREFIX + len {
            return None;
        }
        let frame = self.start + PREFIX..self.start + PREFIX + len;
        self.start = frame.end;
        Some(Next::Frame(frame))
    }
}

impl<L: AsyncRead + AsyncWrite + Unpin> FrameLink for StreamLink<L> {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Received<'_>>, RunError>> {
        loop {
            // Discard what has arrived of an oversized frame.
            let skipped = self.skip.min(self.end - self.start);
            self.start += skipped;
            self.skip -= skipped;
            if self.skip == 0 {
                match self.next_frame() {
                    Some(Next::Frame(frame)) => {
                        return Poll::Ready(Ok(Some(Received::Frame(&self.buf[frame]))))
                    }
                    Some(Next::Oversized(len)) => {
                        return Poll::Ready(Ok(Some(Received::Oversized { len })))
                    }
                    None => {}
                }
            }
            // Make room for at least one whole frame after the partial one.
            if self.buf.len() - self.end < MAX_FRAME_LEN + PREFIX {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let mut read = ReadBuf::new(&mut self.buf[self.end..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut read)).map_err(RunError::Io)?;
            let n = read.filled().len();
            if n == 0 {
                return Poll::Ready(if self.start == self.end && self.skip == 0 {
                    Ok(None)
                } else {
                    Err(RunError::Truncated)
                });
            }
            self.end += n;
        }
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut OutQueue,
    ) -> Poll<Result<(), RunError>> {
        while !out.pending().is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, out.pending()))
                .map_err(RunError::Io)?;
            if n == 0 {
                return Poll::Ready(Err(RunError::Io(io::ErrorKind::WriteZero.into())));
            }
            out.consume(n);
        }
        Pin::new(&mut self.io).poll_flush(cx).map_err(RunError::Io)
    }
}

/// Frames waiting to be written to the link, already length-prefixed. Bounded: when it is full,
/// smoltcp is told the device is busy (TCP retransmits later) and datagrams are dropped.
pub(crate) struct OutQueue {
    buf: Vec<u8>,
    start: usize,
    limit: usize,
    /// Frame bytes queued for the guest so far (its received bytes, for metrics).
    pub(crate) pushed_bytes: u64,
}

impl OutQueue {
    pub(crate) fn new(limit: usize) -> OutQueue {
        OutQueue {
            buf: Vec::new(),
            start: 0,
            limit,
            pushed_bytes: 0,
        }
    }

    pub(crate) fn has_room(&self, frame_len: usize) -> bool {
        self.buf.len() - self.start + PREFIX + frame_len <= self.limit
    }

    /// Appends a frame of `len` bytes filled by `fill`; `None` (and `fill` not called) when full.
    pub(crate) fn push<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        if !self.has_room(len) {
            return None;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.pushed_bytes += len as u64;
        // Frames are at most MAX_FRAME_LEN (a u32 always holds it).
        self.buf.extend_from_slice(&(len as u32).to_be_bytes());
        let at = self.buf.len();
        self.buf.resize(at + len, 0);
        Some(fill(&mut self.buf[at..]))
    }

    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.limit {
            // Keep the vector from creeping: drop what was written.
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn frames_round_trip_across_reads() {
        let (mut a, b) = tokio::io::duplex(16);
        let mut link = StreamLink::new(b);
        let writer = tokio::spawn(async move {
            for len in [0usize, 1, 60, 1514, 3000] {
                a.write_all(&(len as u32).to_be_bytes()).await.unwrap();
                a.write_all(&vec![len as u8; len]).await.unwrap();
            }
            a.shutdown().await.unwrap();
            a
        });
        for len in [0usize, 1, 60, 1514, 3000] {
            assert_eq!(
                next(&mut link).await.unwrap(),
                Some(Got::Frame(vec![len as u8; len]))
            );
        }
        assert_eq!(next(&mut link).await.unwrap(), None);
        drop(writer.await.unwrap());
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Frame(Vec<u8>),
        Oversized(usize),
    }

    async fn next<L: AsyncRead + AsyncWrite + Unpin>(
        link: &mut StreamLink<L>,
    ) -> Result<Option<Got>, RunError> {
        poll_fn(|cx| {
            link.poll_frame(cx).map(|r| {
                r.map(|received| {
                    received.map(|received| match received {
                        Received::Frame(f) => Got::Frame(f.to_vec()),
                        Received::Oversized { len } => Got::Oversized(len),
                    })
                })
            })
        })
        .await
    }

    #[tokio::test]
    async fn oversized_frames_are_skipped_without_being_buffered() {
        // Through a small pipe, so the skipped frames arrive over many reads; the largest is
        // far more than the link's buffer holds.
        let (mut a, b) = tokio::io::duplex(4096);
        let mut link = StreamLink::new(b);
        let sizes = [MAX_FRAME_LEN + 1, 65_549, 5 * MAX_FRAME_LEN];
        let writer = tokio::spawn(async move {
            for (i, len) in sizes.into_iter().enumerate() {
                a.write_all(&(len as u32).to_be_bytes()).await.unwrap();
                a.write_all(&vec![0xee; len]).await.unwrap();
                a.write_all(&[0, 0, 0, 3, i as u8, 2, 3]).await.unwrap();
            }
            a
        });
        for (i, len) in sizes.into_iter().enumerate() {
            assert_eq!(next(&mut link).await.unwrap(), Some(Got::Oversized(len)));
            assert_eq!(
                next(&mut link).await.unwrap(),
                Some(Got::Frame(vec![i as u8, 2, 3]))
            );
        }
        assert_eq!(
            link.buf.len(),
            2 * (MAX_FRAME_LEN + PREFIX),
            "the buffer never grew"
        );
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_link_closed_inside_a_frame_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut link = StreamLink::new(b);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(next(&mut link).await, Err(RunError::Truncated)));

        // Also inside a frame being skipped.
        let (mut a, b) = tokio::io::duplex(64);
        let mut link = StreamLink::new(b);
        a.write_all(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        a.write_all(&[0; 10]).await.unwrap();
        drop(a);
        assert_eq!(
            next(&mut link).await.unwrap(),
            Some(Got::Oversized(MAX_FRAME_LEN + 1))
        );
        assert!(matches!(next(&mut link).await, Err(RunError::Truncated)));
    }

    #[test]
    fn out_queue_is_bounded() {
        let mut q = OutQueue::new(100);
        assert!(q.push(40, |b| b.fill(1)).is_some());
        assert!(q.push(40, |b| b.fill(2)).is_some());
        assert!(q.push(40, |_| ()).is_none());
        assert_eq!(q.pending().len(), 88);
        assert_eq!(&q.pending()[..4], &[0, 0, 0, 40]);
        q.consume(44);
        assert!(q.push(40, |_| ()).is_some());
        q.consume(88);
        assert!(q.pending().is_empty());
    }
}
