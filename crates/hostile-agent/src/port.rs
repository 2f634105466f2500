//! The stolen port, with blocking I/O: frames in on the main thread, frames
//! and raw bytes out from any thread.
//!
//! Writers take a lock per frame, so frames never interleave. A flood holds
//! the lock over and over; control replies (`Pong`, answers) mark themselves
//! urgent and the flood steps aside while one is waiting, so a flooding
//! impostor still answers the host's pings.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use msb_protocol::{Envelope, FrameCodec, GuestMessage, HostMessage};
use tokio_util::codec::{Decoder, Encoder};

type Codec = FrameCodec<HostMessage, GuestMessage>;

/// The read half: host frames, one at a time.
pub struct Frames {
    file: File,
    buf: BytesMut,
    codec: Codec,
}

/// The write half, shared by the main thread and flood threads.
pub struct Writer {
    file: Mutex<File>,
    /// Urgent writers waiting for the lock.
    urgent: AtomicUsize,
}

pub fn split(file: File) -> io::Result<(Frames, Writer)> {
    let writer = Writer {
        file: Mutex::new(file.try_clone()?),
        urgent: AtomicUsize::new(0),
    };
    let frames = Frames {
        file,
        buf: BytesMut::new(),
        codec: Codec::new(),
    };
    Ok((frames, writer))
}

impl Frames {
    /// The next host frame; `None` when the host closed the channel.
    pub fn next(&mut self) -> io::Result<Option<Envelope<HostMessage>>> {
        let mut chunk = [0u8; 64 << 10];
        loop {
            if let Some(envelope) = self.codec.decode(&mut self.buf).map_err(io::Error::other)? {
                return Ok(Some(envelope));
            }
            match self.file.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }
}

impl Writer {
    /// Sends one frame ahead of any flood.
    pub fn send(&self, envelope: Envelope<GuestMessage>) -> io::Result<()> {
        self.urgent.fetch_add(1, Ordering::SeqCst);
        let result = self.write_frame(envelope);
        self.urgent.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Writes bytes as they are, ahead of any flood.
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.urgent.fetch_add(1, Ordering::SeqCst);
        let result = self.lock().write_all(bytes);
        self.urgent.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Sends one frame of a flood, after any urgent frame that is waiting.
    pub fn send_flood(&self, envelope: Envelope<GuestMessage>) -> io::Result<()> {
        while self.urgent.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.write_frame(envelope)
    }

    fn write_frame(&self, envelope: Envelope<GuestMessage>) -> io::Result<()> {
        let mut bytes = BytesMut::new();
        Codec::new()
            .encode(envelope, &mut bytes)
            .map_err(io::Error::other)?;
        // The port takes at most 32 KiB per write; write_all keeps going.
        self.lock().write_all(&bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }
}
