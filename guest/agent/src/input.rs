//! Input the host streams into the guest (a process's stdin, a file being
//! written): written in order, with credit granted back for every byte taken,
//! so the host never has more than `INPUT_WINDOW` bytes in flight.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use msb_protocol::{Envelope, GuestMessage};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::outbox::Outbox;

pub enum InputEvent {
    Data(Vec<u8>),
    End,
}

pub type InputSender = mpsc::UnboundedSender<InputEvent>;
pub type InputReceiver = mpsc::UnboundedReceiver<InputEvent>;

/// Writes input into `sink` until `End`; returns the bytes written. On a write
/// error the rest is left in `events` for the caller to fail or discard.
pub async fn feed<W: AsyncWrite + Unpin>(
    id: u64,
    sink: &mut W,
    events: &mut InputReceiver,
    outbox: &Outbox,
) -> io::Result<u64> {
    let mut written = 0u64;
    while let Some(InputEvent::Data(data)) = events.recv().await {
        sink.write_all(&data).await?;
        written += data.len() as u64;
        grant(id, data.len(), outbox).await;
    }
    sink.flush().await?;
    Ok(written)
}

/// Takes and drops the rest of the input, still granting credit, so that a host
/// writing to a process that stopped reading is never left waiting.
pub async fn discard(id: u64, events: &mut InputReceiver, outbox: &Outbox) {
    while let Some(InputEvent::Data(data)) = events.recv().await {
        grant(id, data.len(), outbox).await;
    }
}

async fn grant(id: u64, bytes: usize, outbox: &Outbox) {
    let _ = outbox
        .send(Envelope::new(id, GuestMessage::InputCredit(bytes as u32)))
        .await;
}

/// A blocking writer driven inline on the agent thread. For a file in guest
/// memory a write is a copy: cheaper than a hop to the blocking pool and back.
pub struct Inline<W>(pub W);

impl<W: Write + Unpin> AsyncWrite for Inline<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.get_mut().0.write(data))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().0.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
