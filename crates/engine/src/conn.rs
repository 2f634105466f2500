//! The engine's side of a runtime connection.
//!
//! A writer task owns the socket's write half and drains a queue; a reader task
//! owns the read half and routes each message to the request it belongs to.
//! Both are unbounded channels, and both are bounded in practice by credit:
//! what piles up in a route is at most the output window the request granted,
//! and the input a request queues is at most the input window the guest granted
//! (`InputCredit` goes straight to the route's semaphore). So a slow consumer of
//! one request never blocks another, and sending never needs an await, which
//! lets `Drop` impls send. When the runtime reports the VM gone, or the socket
//! closes, every open request sees its channel end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use msb_control::{FromRuntime, HostEnded, ToRuntime, VmExit};
use msb_protocol::{Envelope, FrameCodec, GuestMessage, INPUT_WINDOW, NO_REQUEST};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::error::NotRunning;

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
            Lifecycle::Exited(exit) => exit.describe(),
            Lifecycle::Lost => "its runtime process died".into(),
        }
    }

    /// Whether a secret's `block-and-kill` ended the VM.
    pub fn secret_violation(&self) -> bool {
        matches!(
            self,
            Lifecycle::Exited(VmExit {
                ended_by_host: Some(HostEnded::SecretViolation { .. }),
                ..
            })
        )
    }

    /// Whether the guest's own misbehaviour ended the VM.
    pub fn guest_fault(&self) -> bool {
        matches!(
            self,
            Lifecycle::Exited(VmExit {
                ended_by_host: Some(HostEnded::ProtocolViolation(_)),
                ..
            })
        )
    }
}

/// The connection is closed; no request can start.
#[derive(Debug, Clone, Copy)]
pub struct Closed;

pub struct RuntimeConn {
    outgoing: mpsc::UnboundedSender<Envelope<ToRuntime>>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    lifecycle: watch::Receiver<Lifecycle>,
}

#[derive(Default)]
struct Routes {
    open: HashMap<u64, Route>,
    closed: bool,
}

struct Route {
    events: mpsc::UnboundedSender<FromRuntime>,
    input_credit: Arc<Semaphore>,
}

/// What a caller holds of an open request's route.
pub struct RequestRoute {
    pub id: u64,
    pub events: mpsc::UnboundedReceiver<FromRuntime>,
    /// Input bytes the guest currently accepts for this request.
    pub input_credit: Arc<Semaphore>,
}

impl RuntimeConn {
    /// Starts the reader and writer tasks on `stream`.
    pub fn start(stream: UnixStream) -> Arc<RuntimeConn> {
        let (read_half, write_half) = stream.into_split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Envelope<ToRuntime>>();
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
                        match msg {
                            FromRuntime::Agent(GuestMessage::InputCredit(bytes)) => {
                                route.input_credit.add_permits(bytes as usize)
                            }
                            msg => {
                                if matches!(&msg, FromRuntime::Agent(m) if m.ends_request()) {
                                    // Input for a finished request goes nowhere: wake its writers.
                                    route.input_credit.close();
                                }
                                let _ = route.events.send(msg);
                            }
                        }
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
            for (_, route) in routes.open.drain() {
                route.input_credit.close();
            }
        });

        Arc::new(RuntimeConn {
            outgoing,
            routes,
            // Ids are per connection; the runtime keeps u64::MAX for itself.
            next_id: AtomicU64::new(1),
            lifecycle,
        })
    }

    /// Opens a route for a new request: its id, event channel and input credit.
    pub fn open_request(&self) -> Result<RequestRoute, Closed> {
        let mut routes = lock(&self.routes);
        if routes.closed || *self.lifecycle.borrow() != Lifecycle::Running {
            return Err(Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let input_credit = Arc::new(Semaphore::new(INPUT_WINDOW as usize));
        routes.open.insert(
            id,
            Route {
                events: tx,
                input_credit: input_credit.clone(),
            },
        );
        Ok(RequestRoute {
            id,
            events: rx,
            input_credit,
        })
    }

    pub fn close_request(&self, id: u64) {
        if let Some(route) = lock(&self.routes).open.remove(&id) {
            // Wake anyone waiting to send input: the request is over.
            route.input_credit.close();
        }
    }

    pub fn send(&self, id: u64, msg: ToRuntime) -> Result<(), Closed> {
        self.outgoing
            .send(Envelope::new(id, msg))
            .map_err(|_| Closed)
    }

    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.borrow().clone()
    }

    /// The error for a request that cannot be served because the VM is gone.
    pub fn not_running(&self, sandbox: &str) -> NotRunning {
        let lifecycle = self.lifecycle();
        NotRunning {
            name: sandbox.to_string(),
            reason: lifecycle.reason(),
            guest_fault: lifecycle.guest_fault(),
            secret_violation: lifecycle.secret_violation(),
        }
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
