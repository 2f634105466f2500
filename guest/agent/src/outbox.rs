//! The agent's one way to the host: every part of the agent (the request loop,
//! exec and file tasks) sends its messages into an [`Outbox`], and a single
//! task writes them to the port in order. A module of its own so that the
//! request loop and the tasks it starts do not import each other.

use futures::{Sink, SinkExt};
use msb_protocol::{Envelope, GuestMessage};
use tokio::sync::mpsc;

use crate::system;

/// Messages waiting for the port. Bounded: a full port makes senders wait.
pub type Outbox = mpsc::Sender<Envelope<GuestMessage>>;

const OUTBOX_DEPTH: usize = 64;

/// Starts the writer task on `port` and returns the outbox that feeds it. The
/// task ends when the port fails or every sender is gone.
pub fn start<S>(mut port: S) -> Outbox
where
    S: Sink<Envelope<GuestMessage>> + Unpin + Send + 'static,
    S::Error: std::fmt::Display,
{
    let (outbox, mut outgoing) = mpsc::channel::<Envelope<GuestMessage>>(OUTBOX_DEPTH);
    tokio::spawn(async move {
        while let Some(envelope) = outgoing.recv().await {
            if let Err(err) = port.send(envelope).await {
                system::log(&format!("writing to the host failed: {err}"));
                return;
            }
        }
    });
    outbox
}
