//! One agent request from the engine's side: its events in, and its input and
//! stream control out. The two halves are separate so that a caller can write
//! a process's stdin while another task reads its output.

use std::sync::Arc;

use msb_control::{FromRuntime, ToRuntime};
use msb_protocol::{output_charge, GuestMessage, HostMessage, MAX_DATA_CHUNK};
use tokio::sync::{mpsc, Mutex, Semaphore};

use crate::conn::{Closed, RuntimeConn};

/// Output charge in flight per request (a process's output, a file being
/// read) before the guest waits for the consumer's credit.
pub const OUTPUT_WINDOW: u32 = 1 << 20;

/// The receiving half: guest messages of one request, in order.
pub struct RequestEvents {
    id: u64,
    events: mpsc::UnboundedReceiver<FromRuntime>,
    conn: Arc<RuntimeConn>,
    finished: bool,
}

/// The sending half; cheap to clone.
#[derive(Clone)]
pub struct RequestSender {
    id: u64,
    conn: Arc<RuntimeConn>,
    input_credit: Arc<Semaphore>,
    /// Serialises input writers so that concurrent writes do not interleave chunks.
    input_order: Arc<Mutex<()>>,
}

/// Opens a route and sends the request's first message.
pub fn start(
    conn: &Arc<RuntimeConn>,
    msg: HostMessage,
) -> Result<(RequestEvents, RequestSender), Closed> {
    let route = conn.open_request()?;
    let events = RequestEvents {
        id: route.id,
        events: route.events,
        conn: conn.clone(),
        finished: false,
    };
    let sender = RequestSender {
        id: route.id,
        conn: conn.clone(),
        input_credit: route.input_credit,
        input_order: Arc::default(),
    };
    // On failure `events` drops and closes the route.
    sender.send(msg)?;
    Ok((events, sender))
}

impl RequestEvents {
    /// The next guest message, or `None` once the request ended or the sandbox
    /// went away. The route closes after the request's last message.
    pub async fn recv(&mut self) -> Option<GuestMessage> {
        while !self.finished {
            match self.events.recv().await {
                Some(FromRuntime::Agent(msg)) => {
                    if msg.ends_request() {
                        self.finish();
                    }
                    return Some(msg);
                }
                // Nothing else is routed to a request; ignore it.
                Some(_) => continue,
                None => self.finish(),
            }
        }
        None
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn finish(&mut self) {
        self.finished = true;
        self.conn.close_request(self.id);
    }
}

impl Drop for RequestEvents {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_request(self.id);
        }
    }
}

impl RequestSender {
    pub fn send(&self, msg: HostMessage) -> Result<(), Closed> {
        self.conn.send(self.id, ToRuntime::Agent(msg))
    }

    /// Credits back one output message of `len` bytes the consumer took: its
    /// length and its per-message cost ([`msb_protocol::output_charge`]).
    pub fn credit_output(&self, len: usize) {
        // A failed send means the sandbox is going away; the receiver reports it.
        let _ = self.send(HostMessage::Credit(output_charge(len) as u32));
    }

    /// Streams `data` as input, waiting for the guest's credit as it goes.
    /// Fails once the request has ended or the sandbox is gone.
    pub async fn write_input(&self, data: &[u8]) -> Result<(), Closed> {
        let _order = self.input_order.lock().await;
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            self.input_credit
                .acquire_many(chunk.len() as u32)
                .await
                .map_err(|_| Closed)?
                .forget();
            self.send(HostMessage::Input(chunk.to_vec()))?;
        }
        Ok(())
    }

    /// Ends the input, after every chunk already written.
    pub async fn end_input(&self) -> Result<(), Closed> {
        let _order = self.input_order.lock().await;
        self.send(HostMessage::InputEnd)
    }
}
