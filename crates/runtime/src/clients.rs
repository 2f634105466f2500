//! The runtime's clients: the creator's connection (the runtime's stdin) and
//! any number attached later through the sandbox's control socket, from this or
//! other processes of the same user.
//!
//! Each client numbers its requests itself, so two clients may both use id 7.
//! Toward the agent every request gets an id of the runtime's own; the guest's
//! answers are routed back to the client that asked, under the client's id. A
//! client therefore sees only its own requests' output.
//!
//! Each client has a reader task, which forwards its messages into one channel
//! the relay loop reads, and a writer task, which drains an unbounded queue so
//! that the loop never waits on a slow client. The queue is bounded in practice
//! by credit, as on the engine's side: a request's output in flight is at most
//! the window that request granted.

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use msb_control::{FromRuntime, ToRuntime};
use msb_protocol::{Envelope, FrameCodec, HostMessage, INIT_ID, LIVENESS_ID, NO_REQUEST};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

pub type ClientId = u64;

/// How long the last messages may take to reach the clients at exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the relay loop hears from its clients.
// Nearly every event is a message: boxing it would add an allocation to each
// one to shrink the rare `Left`.
#[allow(clippy::large_enum_variant)]
pub enum ClientEvent {
    Message(ClientId, Envelope<ToRuntime>),
    /// The client's connection closed (its process exited) or spoke garbage.
    Left(ClientId),
}

pub struct Clients {
    events_tx: mpsc::Sender<ClientEvent>,
    events: mpsc::Receiver<ClientEvent>,
    writers: HashMap<ClientId, mpsc::UnboundedSender<Envelope<FromRuntime>>>,
    /// The writer tasks, awaited by [`Clients::flush`].
    writer_tasks: Vec<JoinHandle<()>>,
    next_client: ClientId,
    /// Agent request id → (client, the client's id).
    to_client: HashMap<u64, (ClientId, u64)>,
    /// (client, the client's id) → agent request id.
    to_agent: HashMap<(ClientId, u64), u64>,
    next_agent_id: u64,
}

impl Default for Clients {
    fn default() -> Self {
        let (events_tx, events) = mpsc::channel(64);
        Clients {
            events_tx,
            events,
            writers: HashMap::new(),
            writer_tasks: Vec::new(),
            next_client: 1,
            to_client: HashMap::new(),
            to_agent: HashMap::new(),
            next_agent_id: 1,
        }
    }
}

impl Clients {
    /// Starts serving a connection; `read_buffer` holds bytes already read from
    /// it (past the creator's `Boot` frame).
    pub fn add(&mut self, stream: UnixStream, read_buffer: &[u8]) -> ClientId {
        let id = self.next_client;
        self.next_client += 1;
        let (read_half, write_half) = stream.into_split();
        let (writer, queue) = mpsc::unbounded_channel();
        self.writers.insert(id, writer);
        self.writer_tasks
            .push(tokio::spawn(write_client(write_half, queue)));
        tokio::spawn(read_client(
            id,
            read_half,
            read_buffer.to_vec(),
            self.events_tx.clone(),
        ));
        id
    }

    /// The next message from any client.
    pub async fn next(&mut self) -> ClientEvent {
        // The sender lives in `self`, so the channel never closes.
        self.events
            .recv()
            .await
            .expect("the clients' event channel is held open by its owner")
    }

    /// Sends to one client; a client that left is skipped.
    pub fn send(&self, client: ClientId, id: u64, msg: FromRuntime) {
        if let Some(writer) = self.writers.get(&client) {
            let _ = writer.send(Envelope::new(id, msg));
        }
    }

    /// Every client still connected.
    pub fn connected(&self) -> Vec<ClientId> {
        self.writers.keys().copied().collect()
    }

    /// The agent id for a client's message. A message that opens a request
    /// gets a fresh one; any other message goes to the request the client
    /// opened under that id, and nowhere (`None`) if it has none open.
    pub fn agent_id(&mut self, client: ClientId, id: u64, msg: &HostMessage) -> Option<u64> {
        let opens = matches!(msg, HostMessage::Exec(_) | HostMessage::Fs(_));
        if !opens {
            return self.to_agent.get(&(client, id)).copied();
        }
        if id == NO_REQUEST {
            return None;
        }
        let agent_id = self.next_agent_id;
        // The reserved ids are at the top of the range; a runtime never gets there.
        self.next_agent_id += 1;
        debug_assert!(agent_id != INIT_ID && agent_id != LIVENESS_ID);
        if let Some(old) = self.to_agent.insert((client, id), agent_id) {
            // The client reused an id that was still open: the old request's
            // answers go nowhere from now on.
            self.to_client.remove(&old);
        }
        self.to_client.insert(agent_id, (client, id));
        Some(agent_id)
    }

    /// An agent id for a request of the runtime's own, routed to no client.
    pub fn internal_id(&mut self) -> u64 {
        let agent_id = self.next_agent_id;
        self.next_agent_id += 1;
        agent_id
    }

    /// Whom an agent message is for; `ends` forgets the request.
    pub fn route(&mut self, agent_id: u64, ends: bool) -> Option<(ClientId, u64)> {
        let route = if ends {
            let route = self.to_client.remove(&agent_id)?;
            self.to_agent.remove(&route);
            route
        } else {
            *self.to_client.get(&agent_id)?
        };
        self.writers.contains_key(&route.0).then_some(route)
    }

    /// Closes every client's queue and waits (briefly) until what was queued
    /// is written: the runtime's last words (`Stopped`) must reach them before
    /// the process exits.
    pub async fn flush(&mut self) {
        self.writers.clear();
        let writers = futures::future::join_all(self.writer_tasks.drain(..));
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, writers).await;
    }

    /// Whether any client has a request open.
    pub fn any_open(&self) -> bool {
        !self.to_client.is_empty()
    }

    /// Forgets a client; returns the agent ids of its open requests, whose
    /// answers go nowhere from now on.
    pub fn remove(&mut self, client: ClientId) -> Vec<u64> {
        self.writers.remove(&client);
        let mine: Vec<(ClientId, u64)> = self
            .to_agent
            .keys()
            .filter(|(owner, _)| *owner == client)
            .copied()
            .collect();
        mine.into_iter()
            .filter_map(|key| self.to_agent.remove(&key))
            .inspect(|agent_id| {
                self.to_client.remove(agent_id);
            })
            .collect()
    }
}

async fn write_client(
    write_half: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Envelope<FromRuntime>>,
) {
    let mut frames = FramedWrite::new(write_half, FrameCodec::<ToRuntime, FromRuntime>::new());
    while let Some(envelope) = queue.recv().await {
        if frames.send(envelope).await.is_err() {
            return;
        }
    }
}

async fn read_client(
    id: ClientId,
    read_half: OwnedReadHalf,
    read_buffer: Vec<u8>,
    events: mpsc::Sender<ClientEvent>,
) {
    let mut frames = FramedRead::new(read_half, FrameCodec::<ToRuntime, FromRuntime>::new());
    frames.read_buffer_mut().extend_from_slice(&read_buffer);
    while let Some(Ok(envelope)) = frames.next().await {
        if events
            .send(ClientEvent::Message(id, envelope))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = events.send(ClientEvent::Left(id)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use msb_protocol::{ExecRequest, StdinMode};

    fn exec() -> HostMessage {
        HostMessage::Exec(ExecRequest {
            program: "true".into(),
            args: vec![],
            env: vec![],
            cwd: None,
            user: None,
            tty: None,
            stdin: StdinMode::Null,
            output_window: 1 << 16,
        })
    }

    fn clients_with(n: usize) -> (Clients, Vec<ClientId>) {
        let mut clients = Clients::default();
        let ids = (0..n)
            .map(|_| {
                let id = clients.next_client;
                clients.next_client += 1;
                clients.writers.insert(id, mpsc::unbounded_channel().0);
                id
            })
            .collect();
        (clients, ids)
    }

    #[test]
    fn two_clients_using_one_id_get_separate_requests_and_their_own_answers() {
        let (mut clients, ids) = clients_with(2);
        let (a, b) = (ids[0], ids[1]);
        let for_a = clients.agent_id(a, 7, &exec()).unwrap();
        let for_b = clients.agent_id(b, 7, &exec()).unwrap();
        assert_ne!(for_a, for_b);
        assert_eq!(clients.route(for_a, false), Some((a, 7)));
        assert_eq!(clients.route(for_b, false), Some((b, 7)));
        // Follow-up messages reach the sender's own request.
        assert_eq!(clients.agent_id(b, 7, &HostMessage::Kill), Some(for_b));
        // The end of a request forgets it, for that client only.
        assert_eq!(clients.route(for_a, true), Some((a, 7)));
        assert_eq!(clients.agent_id(a, 7, &HostMessage::Kill), None);
        assert_eq!(clients.route(for_a, false), None);
        assert_eq!(clients.route(for_b, false), Some((b, 7)));
    }

    #[test]
    fn a_message_for_no_open_request_goes_nowhere() {
        let (mut clients, ids) = clients_with(1);
        assert_eq!(
            clients.agent_id(ids[0], 3, &HostMessage::Input(vec![1])),
            None
        );
        assert_eq!(clients.agent_id(ids[0], NO_REQUEST, &exec()), None);
        assert!(!clients.any_open());
    }

    #[test]
    fn a_client_that_leaves_takes_its_routes_and_leaves_the_others() {
        let (mut clients, ids) = clients_with(2);
        let (a, b) = (ids[0], ids[1]);
        let first = clients.agent_id(a, 1, &exec()).unwrap();
        let second = clients.agent_id(a, 2, &exec()).unwrap();
        let other = clients.agent_id(b, 1, &exec()).unwrap();
        let mut gone = clients.remove(a);
        gone.sort();
        assert_eq!(gone, vec![first, second]);
        assert_eq!(clients.route(first, false), None);
        assert_eq!(clients.route(other, false), Some((b, 1)));
        assert_eq!(clients.connected(), vec![b]);
    }
}
