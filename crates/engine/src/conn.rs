//! The engine's side of a runtime connection.
//!
//! A writer task owns the socket's write half and drains a bounded queue; a
//! reader task owns the read half and routes each message to the request it
//! belongs to. Routes are unbounded channels: what can pile up in one is bounded
//! by the output credit the request granted, so a slow consumer of one request
//! never blocks the others. When the runtime reports the VM gone, or the socket
//! closes, every open request sees its channel end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use msb_protocol::{Envelope, FrameCodec, NO_REQUEST};
use msb_runtime::control::{FromRuntime, ToRuntime, VmExit};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite};

const OUTGOING_DEPTH: usize = 64;

/// Where the sandbox's VM stands, as seen from the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    Running,
    /// The runtime reported the VM's exit.
    Exited(VmExit),
    /// The runtime went away without a report (it crashed or was killed).
    Lost,
}

impl Lifecycle {
    /// Why requests can no longer be served, for error messages.
    pub fn reason(&self) -> String {
        match self {
            Lifecycle::Running => String::new(),
            Lifecycle::Exited(exit) if exit.requested => "it was stopped".into(),
            Lifecycle::Exited(exit) => {
                let how = match (exit.code, exit.signal) {
                    (_, Some(signal)) => format!("killed by signal {signal}"),
                    (Some(code), None) => format!("exit status {code}"),
                    (None, None) => "unknown status".into(),
                };
                format!("the VM exited by itself ({how})")
            }
            Lifecycle::Lost => "its runtime process died".into(),
        }
    }
}

/// The connection is closed; no request can start.
#[derive(Debug, Clone, Copy)]
pub struct Closed;

pub struct RuntimeConn {
    outgoing: mpsc::Sender<Envelope<ToRuntime>>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    lifecycle: watch::Receiver<Lifecycle>,
}

#[derive(Default)]
struct Routes {
    open: HashMap<u64, mpsc::UnboundedSender<FromRuntime>>,
    closed: bool,
}

impl RuntimeConn {
    /// Starts the reader and writer tasks on `stream`.
    pub fn start(stream: UnixStream) -> Arc<RuntimeConn> {
        let (read_half, write_half) = stream.into_split();
        let (outgoing, mut queue) = mpsc::channel::<Envelope<ToRuntime>>(OUTGOING_DEPTH);
        tokio::spawn(async move {
            let mut frames =
                FramedWrite::new(write_half, FrameCodec::<FromRuntime, ToRuntime>::new());
            while let Some(envelope) = queue.recv().await {
                if frames.send(envelope).await.is_err() {
                    return;
                }
            }
        });

        let routes = Arc::new(Mutex::new(Routes::default()));
        let (lifecycle_tx, lifecycle) = watch::channel(Lifecycle::Running);
        let reader_routes = routes.clone();
        tokio::spawn(async move {
            let mut frames =
                FramedRead::new(read_half, FrameCodec::<FromRuntime, ToRuntime>::new());
            while let Some(Ok(Envelope { id, msg })) = frames.next().await {
                if let FromRuntime::Stopped(exit) = &msg {
                    let _ = lifecycle_tx.send(Lifecycle::Exited(exit.clone()));
                }
                if id != NO_REQUEST {
                    let routes = lock(&reader_routes);
                    if let Some(route) = routes.open.get(&id) {
                        let _ = route.send(msg);
                    }
                }
            }
            lifecycle_tx.send_if_modified(|state| {
                if *state == Lifecycle::Running {
                    *state = Lifecycle::Lost;
                    true
                } else {
                    false
                }
            });
            let mut routes = lock(&reader_routes);
            routes.closed = true;
            routes.open.clear();
        });

        Arc::new(RuntimeConn {
            outgoing,
            routes,
            // Ids are per connection; the runtime keeps u64::MAX for itself.
            next_id: AtomicU64::new(1),
            lifecycle,
        })
    }

    /// Opens a route for a new request and returns its id and event channel.
    pub fn open_request(&self) -> Result<(u64, mpsc::UnboundedReceiver<FromRuntime>), Closed> {
        let mut routes = lock(&self.routes);
        if routes.closed || *self.lifecycle.borrow() != Lifecycle::Running {
            return Err(Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        routes.open.insert(id, tx);
        Ok((id, rx))
    }

    pub fn close_request(&self, id: u64) {
        lock(&self.routes).open.remove(&id);
    }

    pub async fn send(&self, id: u64, msg: ToRuntime) -> Result<(), Closed> {
        self.outgoing
            .send(Envelope::new(id, msg))
            .await
            .map_err(|_| Closed)
    }

    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.borrow().clone()
    }

    /// Resolves once the VM is no longer running.
    pub async fn wait_not_running(&self) -> Lifecycle {
        let mut watcher = self.lifecycle.clone();
        let state = watcher
            .wait_for(|state| *state != Lifecycle::Running)
            .await
            .map(|state| state.clone());
        // The sender lives in the reader task, which always settles the state first.
        state.unwrap_or(Lifecycle::Lost)
    }
}

fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|e| e.into_inner())
}
