//! The engine: one future that owns the smoltcp interface, every flow, the DNS server and the
//! published-port listeners, and drives them all (see the crate docs for the threading model).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

use crate::device::{LinkDevice, MAX_ETHERNET_FRAME};
use crate::dns::{Client, DnsServer};
use crate::enforce::Enforcer;
use crate::flow::FlowKey;
use crate::intercept::Intercepts;
use crate::link::{FrameLink, Received, RunError};
use crate::netlog::EventKind;
use crate::packet::{self, Inspected, TcpSegment};
use crate::policy::Transport;
use crate::ready::{FlowId, FlowWaker, ReadyQueue};
use crate::stats::Counters;
use crate::tcp::{Progress, Relay, Stage, TcpFlow};
use crate::udp::UdpFlow;
use crate::{Limits, PortMapping};
use crate::{GATEWAY_IPV4, GATEWAY_MAC, GUEST_IPV4, GUEST_MAC, PREFIX_LEN};
use msb_secrets::{peek_sni, SniPeek, MAX_CLIENT_HELLO};

/// Frames read from the link per round, and rounds per poll before the task yields to others
/// on the runtime (it wakes itself to continue).
const FRAMES_PER_ROUND: usize = 64;
const ROUNDS_PER_POLL: usize = 16;
/// How often idle UDP flows, stuck TCP flows and expired names are swept, and every flow is
/// looked at once regardless of wakes (a safety net: no flow can be forgotten).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// smoltcp aborts a guest-side connection whose sent data or SYN-ACK stays unacknowledged
/// this long.
const TCP_SOCKET_TIMEOUT: Duration = Duration::from_secs(60);
/// An aborted socket whose reset could not be sent is dropped after this long.
const STUCK_ABORT: Duration = Duration::from_secs(5);
/// Bytes of frames queued toward the guest before smoltcp is told the device is busy.
const OUT_QUEUE_LIMIT: usize = 256 * 1024;
/// Timer floor: smoltcp can ask to be polled "now" for work it cannot do yet (a reset waiting
/// for room on the link); the floor keeps that from becoming a busy loop.
const MIN_TIMER: Duration = Duration::from_millis(1);
/// Local ports the gateway opens published-port connections to the guest from.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// A flow's registration in the ready queue.
struct Wake {
    flow: Arc<FlowWaker>,
    waker: Waker,
}

impl Wake {
    fn new(id: FlowId, queue: &Arc<ReadyQueue>) -> Wake {
        let flow = FlowWaker::new(id, queue);
        Wake {
            waker: Waker::from(Arc::clone(&flow)),
            flow,
        }
    }
}

struct Flow<T> {
    inner: T,
    wake: Wake,
}

pub(crate) struct Published {
    pub(crate) mapping: PortMapping,
    pub(crate) listener: TcpListener,
}

/// What the engine is built from (everything `NetStack::new` prepared).
pub(crate) struct Parts {
    pub(crate) enforcer: Enforcer,
    pub(crate) dns: DnsServer,
    pub(crate) listeners: Vec<Published>,
    pub(crate) limits: Limits,
    pub(crate) intercepts: Option<Intercepts>,
}

pub(crate) struct Engine {
    iface: Interface,
    sockets: SocketSet<'static>,
    device: LinkDevice,
    enforcer: Enforcer,
    dns: DnsServer,
    listeners: Vec<Published>,
    limits: Limits,
    /// TLS interception for secrets; `None`: no flow's bytes are ever looked at.
    intercepts: Option<Intercepts>,
    tcp: HashMap<FlowId, Flow<TcpFlow>>,
    tcp_keys: HashMap<FlowKey, FlowId>,
    udp: HashMap<FlowId, Flow<UdpFlow>>,
    udp_keys: HashMap<FlowKey, FlowId>,
    /// Where host datagrams land before they are framed: one frame's worth, allocated once.
    udp_scratch: Vec<u8>,
    ready: Arc<ReadyQueue>,
    ready_ids: Vec<FlowId>,
    next_id: FlowId,
    next_local_port: u16,
    guest_mac: EthernetAddress,
    timer: Pin<Box<Sleep>>,
    next_sweep: Instant,
    /// Device counters already added to the shared stats.
    reported_sent: u64,
    reported_sent_bytes: u64,
    reported_dropped: u64,
}

fn smol_now(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from(now)
}

impl Engine {
    pub(crate) fn new(parts: Parts) -> Engine {
        let now = Instant::now();
        let mut device = LinkDevice::new(OUT_QUEUE_LIMIT);
        let mut config = Config::new(HardwareAddress::Ethernet(GATEWAY_MAC));
        // Seeds smoltcp's initial sequence numbers and ephemeral ports: unpredictable per stack.
        config.random_seed = RandomState::new().hash_one(now);
        let mut iface = Interface::new(config, &mut device, smol_now(now));
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv4(GATEWAY_IPV4), PREFIX_LEN))
                .expect("one address fits");
        });
        // The gateway terminates every destination the guest connects to: with any-ip, smoltcp
        // accepts packets for all addresses (packet::inspect decides which reach it at all).
        iface.set_any_ip(true);
        Engine {
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            enforcer: parts.enforcer,
            dns: parts.dns,
            listeners: parts.listeners,
            limits: parts.limits,
            intercepts: parts.intercepts,
            tcp: HashMap::new(),
            tcp_keys: HashMap::new(),
            udp: HashMap::new(),
            udp_keys: HashMap::new(),
            udp_scratch: vec![0; crate::udp::SCRATCH_LEN],
            ready: Arc::new(ReadyQueue::default()),
            ready_ids: Vec::new(),
            next_id: 0,
            next_local_port: *EPHEMERAL_PORTS.start(),
            guest_mac: GUEST_MAC,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            next_sweep: now + SWEEP_INTERVAL,
            reported_sent: 0,
            reported_sent_bytes: 0,
            reported_dropped: 0,
        }
    }

    fn stats(&self) -> &Counters {
        &self.enforcer.stats
    }

    fn flow_count(&self) -> usize {
        self.tcp.len() + self.udp.len()
    }

    /// Runs until the link closes (`Ready(Ok)`) or fails.
    pub(crate) fn poll_run(
        &mut self,
        cx: &mut Context<'_>,
        link: &mut impl FrameLink,
    ) -> Poll<Result<(), RunError>> {
        self.ready.register(cx.waker());
        for _ in 0..ROUNDS_PER_POLL {
            let now = Instant::now();
            let mut busy = false;

            // Guest frames, while there is room for what they may cause to be sent back. When
            // there is none, the link is not read: the guest's queue toward us backs up.
            let mut frames = 0;
            let starved = !self.device.out.has_room(MAX_ETHERNET_FRAME);
            while frames < FRAMES_PER_ROUND && self.device.out.has_room(MAX_ETHERNET_FRAME) {
                match link.poll_frame(cx) {
                    Poll::Ready(Ok(Some(Received::Frame(frame)))) => {
                        self.on_frame(frame, now);
                        frames += 1;
                    }
                    Poll::Ready(Ok(Some(Received::Oversized { len }))) => {
                        Counters::add(&self.stats().frames_in, 1);
                        Counters::add(&self.stats().bytes_in, len as u64);
                        self.drop_oversized(len);
                        frames += 1;
                    }
                    Poll::Ready(Ok(None)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => break,
                }
            }
            busy |= frames > 0;
            busy |= self.accept_published(cx, now);
            while let Poll::Ready(forwarded) = self.dns.poll_forwarded(cx) {
                busy = true;
                let client = forwarded.client;
                if let Some(reply) = self.dns.finish(&mut self.enforcer, forwarded, now) {
                    self.send_dns_reply(client, &reply);
                }
            }
            busy |= self.service_ready(now);
            busy |= self.log_secret_events(cx);
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + SWEEP_INTERVAL;
            }
            self.egress(now);
            let queued = self.device.out.pending().len();
            if let Poll::Ready(Err(error)) = link.poll_send(cx, &mut self.device.out) {
                return Poll::Ready(Err(error));
            }
            // The link was not read for lack of room, and now there is room: read it (nothing
            // else would wake the task for it).
            busy |= starved && self.device.out.has_room(MAX_ETHERNET_FRAME);
            // Frames left: smoltcp may have more it could not queue while the queue was full.
            busy |= self.device.out.pending().len() < queued;
            self.report();
            if !busy {
                self.arm_timer(cx, now);
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks on the runtime run, and come straight back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn report(&mut self) {
        let stats = &self.enforcer.stats;
        stats.set_flows(self.tcp.len(), self.udp.len());
        Counters::add(&stats.frames_out, self.device.sent - self.reported_sent);
        Counters::add(
            &stats.bytes_out,
            self.device.out.pushed_bytes - self.reported_sent_bytes,
        );
        self.reported_sent_bytes = self.device.out.pushed_bytes;
        Counters::add(
            &stats.frames_dropped,
            self.device.dropped - self.reported_dropped,
        );
        self.reported_sent = self.device.sent;
        self.reported_dropped = self.device.dropped;
    }

    fn arm_timer(&mut self, cx: &mut Context<'_>, now: Instant) {
        let smoltcp_delay = self
            .iface
            .poll_delay(smol_now(now), &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()));
        let until_sweep = self.next_sweep.saturating_duration_since(now);
        let delay = smoltcp_delay.map_or(until_sweep, |d| d.min(until_sweep));
        let deadline = now + delay.max(MIN_TIMER);
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(deadline));
        if self.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }

    /// Hands one frame to smoltcp and lets it process it right away.
    fn ingress(&mut self, frame: &[u8], now: Instant) {
        self.device.stage(frame);
        let _ = self
            .iface
            .poll_ingress_single(smol_now(now), &mut self.device, &mut self.sockets);
        self.device.unstage();
    }

    fn egress(&mut self, now: Instant) {
        // Each call sends at most one packet per socket; stop when nothing more goes out (or
        // after a bound, leaving the rest to the next round).
        for _ in 0..64 {
            let sent = self.device.sent;
            let _ = self
                .iface
                .poll_egress(smol_now(now), &mut self.device, &mut self.sockets);
            if self.device.sent == sent {
                break;
            }
        }
    }

    fn on_frame(&mut self, frame: &[u8], now: Instant) {
        Counters::add(&self.stats().frames_in, 1);
        Counters::add(&self.stats().bytes_in, frame.len() as u64);
        if frame.len() > MAX_ETHERNET_FRAME {
            // The guest can raise its interface's MTU past the stack's (to 65535): its frames
            // are then longer than anything smoltcp or the replies were sized for.
            self.drop_oversized(frame.len());
            return;
        }
        let (mac, inspected) = packet::inspect(frame);
        if let Some(mac) = mac {
            self.guest_mac = mac;
        }
        match inspected {
            Inspected::Drop(why) => {
                Counters::add(&self.stats().frames_dropped, 1);
                tracing::trace!(why, "guest frame dropped");
            }
            Inspected::Smoltcp => self.ingress(frame, now),
            Inspected::Udp {
                src_port,
                dst,
                payload,
            } => self.on_udp(src_port, dst, payload, now),
            Inspected::Tcp(segment) => self.on_tcp(frame, segment, now),
        }
    }

    /// Counts a guest frame longer than the MTU allows; it goes no further.
    fn drop_oversized(&self, len: usize) {
        Counters::add(&self.stats().frames_dropped, 1);
        Counters::add(&self.stats().frames_oversized, 1);
        tracing::trace!(len, "oversized guest frame dropped");
    }

    fn on_tcp(&mut self, frame: &[u8], segment: TcpSegment, now: Instant) {
        let key = FlowKey {
            guest_port: segment.src_port,
            remote: segment.dst,
        };
        let mut existing = self.tcp_keys.get(&key).copied();
        if let (true, Some(id)) = (segment.is_open, existing) {
            // A new connection reusing the ports of one that is closing: the old one goes.
            if self
                .tcp_socket_state(id)
                .is_some_and(|s| matches!(s, tcp::State::TimeWait | tcp::State::Closed))
            {
                self.remove_tcp(id);
                existing = None;
            }
        }
        let Some(id) = existing else {
            if segment.is_open {
                self.open_tcp(key, frame, now);
            } else {
                // No flow: smoltcp answers with a reset.
                self.ingress(frame, now);
            }
            return;
        };
        let flow = self.tcp.get_mut(&id).expect("keys and flows agree");
        match &mut flow.inner.stage {
            Stage::Connecting { syn, .. } => {
                if segment.is_open {
                    // A retransmission: keep the latest copy for when the host answers.
                    syn.clear();
                    syn.extend_from_slice(frame);
                } else if segment.is_reset {
                    self.remove_tcp(id);
                }
                // Anything else cannot be valid before our SYN-ACK; drop it.
            }
            Stage::Relaying(_) => {
                self.ingress(frame, now);
                // A reset before establishment puts a listening socket back to LISTEN, where it
                // could take another connection's SYN: never leave one there.
                if self.tcp_socket_state(id) == Some(tcp::State::Listen) {
                    self.remove_tcp(id);
                }
            }
        }
    }

    fn tcp_socket_state(&self, id: FlowId) -> Option<tcp::State> {
        match &self.tcp.get(&id)?.inner.stage {
            Stage::Relaying(relay) => Some(self.sockets.get::<tcp::Socket>(relay.handle).state()),
            Stage::Connecting { .. } => None,
        }
    }

    fn alloc_id(&mut self) -> FlowId {
        self.next_id += 1;
        self.next_id
    }

    fn new_tcp_socket(&self) -> tcp::Socket<'static> {
        let size = self.limits.tcp_buffer;
        // Zeroed allocations are lazily backed by the OS: an idle flow costs little RSS.
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; size]),
            tcp::SocketBuffer::new(vec![0; size]),
        );
        // Host bytes are relayed as they come; the guest's TCP does its own coalescing.
        socket.set_nagle_enabled(false);
        // ACKs are produced at egress, once per batch of guest frames, so they are coalesced
        // already; smoltcp's extra 10 ms delay only stalls a guest that waits for the ACK of a
        // partial segment (measured: guest-to-host bulk 54 MB/s with it, 439 MB/s without).
        socket.set_ack_delay(None);
        socket.set_timeout(Some(smoltcp::time::Duration::from_micros(
            TCP_SOCKET_TIMEOUT.as_micros() as u64,
        )));
        socket
    }

    /// A guest SYN for a new flow: policy, limit, then a host connect with the SYN held.
    fn open_tcp(&mut self, key: FlowKey, syn: &[u8], now: Instant) {
        let dst = host_destination(key.remote);
        let refuse = is_unroutable(key.remote)
            || !self
                .enforcer
                .allow_flow(dst, (*key.remote.ip()).into(), Transport::Tcp, now)
            || self.refuse_for_limit(dst, Transport::Tcp);
        if refuse {
            // No socket listens, so smoltcp answers the SYN with a reset.
            self.ingress(syn, now);
            return;
        }
        let timeout = self.limits.tcp_connect_timeout;
        let connect: crate::tcp::Connect = Box::pin(async move {
            match tokio::time::timeout(timeout, TcpStream::connect(dst)).await {
                Ok(result) => result,
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            }
        });
        let stage = Stage::Connecting {
            connect,
            syn: syn.to_vec(),
        };
        self.insert_tcp(key, stage, now);
    }

    /// Adds a TCP flow and queues it to be serviced at once.
    fn insert_tcp(&mut self, key: FlowKey, stage: Stage, now: Instant) {
        let id = self.alloc_id();
        let wake = Wake::new(id, &self.ready);
        wake.waker.wake_by_ref();
        let inner = TcpFlow {
            key,
            stage,
            created: now,
            stuck_since: None,
        };
        self.tcp.insert(id, Flow { inner, wake });
        self.tcp_keys.insert(key, id);
    }

    /// Whether the flow table is full; if so the refusal is logged and counted.
    fn refuse_for_limit(&mut self, dst: SocketAddr, transport: Transport) -> bool {
        if self.flow_count() < self.limits.max_flows {
            return false;
        }
        self.enforcer.refuse_for_limit(dst, transport);
        true
    }

    fn on_udp(&mut self, src_port: u16, dst: SocketAddrV4, payload: &[u8], now: Instant) {
        if is_unroutable(dst) {
            return;
        }
        if dst.port() == 53 {
            self.on_dns_query(src_port, dst, payload, now);
            return;
        }
        if *dst.ip() == GATEWAY_IPV4 {
            // The gateway serves nothing else over UDP.
            return;
        }
        let key = FlowKey {
            guest_port: src_port,
            remote: dst,
        };
        let id = match self.udp_keys.get(&key) {
            Some(&id) => id,
            None => {
                let remote = host_destination(dst);
                if !self
                    .enforcer
                    .allow_flow(remote, (*dst.ip()).into(), Transport::Udp, now)
                    || self.refuse_for_limit(remote, Transport::Udp)
                {
                    return;
                }
                let flow = match UdpFlow::open(key, remote, now) {
                    Ok(flow) => flow,
                    Err(error) => {
                        tracing::debug!(%error, %remote, "udp flow not opened");
                        return;
                    }
                };
                let id = self.alloc_id();
                let wake = Wake::new(id, &self.ready);
                // First service registers the flow's waker with its socket.
                wake.waker.wake_by_ref();
                self.udp.insert(id, Flow { inner: flow, wake });
                self.udp_keys.insert(key, id);
                id
            }
        };
        if let Some(flow) = self.udp.get_mut(&id) {
            flow.inner.send(payload, now);
        }
    }

    /// A datagram to port 53 of `server`. The stack's DNS answers it whichever server the guest
    /// sent it to, so a guest cannot step around block lists (or resolve names that domain rules
    /// then fail to see) by asking another resolver; nothing on port 53 is relayed. The reply
    /// comes from `server`, the address the guest's resolver waits on.
    fn on_dns_query(
        &mut self,
        guest_port: u16,
        server: SocketAddrV4,
        payload: &[u8],
        now: Instant,
    ) {
        let ip = server.ip();
        if ip.is_broadcast() || ip.is_multicast() || ip.is_unspecified() {
            // No server the reply could come from.
            Counters::add(&self.stats().frames_dropped, 1);
            return;
        }
        if *ip != GATEWAY_IPV4 {
            Counters::add(&self.stats().dns_redirected, 1);
        }
        let client = Client { guest_port, server };
        if let Some(reply) = self.dns.on_query(&mut self.enforcer, client, payload, now) {
            self.send_dns_reply(client, &reply);
        }
    }

    fn send_dns_reply(&mut self, client: Client, reply: &[u8]) {
        let (from, to) = (client.server, client.guest_port);
        if !packet::write_udp_frame(&mut self.device, self.guest_mac, from, to, reply) {
            tracing::trace!("dns reply dropped");
        }
    }

    fn accept_published(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut accepted = Vec::new();
        for published in &self.listeners {
            // A bounded number per listener per round, so a connection storm cannot starve
            // the guest's traffic.
            for _ in 0..16 {
                match published.listener.poll_accept(cx) {
                    Poll::Ready(Ok((stream, _peer))) => {
                        accepted.push((stream, published.mapping.guest_port));
                    }
                    Poll::Ready(Err(error)) => {
                        // E.g. out of fds: try again at the next sweep at the latest.
                        tracing::debug!(%error, "accept on a published port failed");
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        let busy = !accepted.is_empty();
        for (stream, guest_port) in accepted {
            self.open_published(stream, guest_port, now);
        }
        busy
    }

    /// Connects an accepted host connection to the guest's port (an active open from the
    /// gateway's address).
    fn open_published(&mut self, stream: TcpStream, guest_port: u16, now: Instant) {
        let guest = SocketAddr::V4(SocketAddrV4::new(GUEST_IPV4, guest_port));
        if self.refuse_for_limit(guest, Transport::Tcp) {
            let _ = stream.set_zero_linger();
            return;
        }
        let Some(local_port) = self.alloc_local_port(guest_port) else {
            let _ = stream.set_zero_linger();
            return;
        };
        let mut socket = self.new_tcp_socket();
        let connected = socket.connect(
            self.iface.context(),
            (IpAddress::Ipv4(GUEST_IPV4), guest_port),
            IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(GATEWAY_IPV4)),
                port: local_port,
            },
        );
        if let Err(error) = connected {
            tracing::debug!(%error, "published connection not opened");
            return;
        }
        let handle = self.sockets.add(socket);
        let key = FlowKey {
            guest_port,
            remote: SocketAddrV4::new(GATEWAY_IPV4, local_port),
        };
        // Published ports are connections into the guest: never intercepted.
        self.insert_tcp(key, Stage::Relaying(Relay::new(handle, stream, false)), now);
    }

    fn alloc_local_port(&mut self, guest_port: u16) -> Option<u16> {
        let span = usize::from(EPHEMERAL_PORTS.end() - EPHEMERAL_PORTS.start()) + 1;
        for _ in 0..span {
            let port = self.next_local_port;
            self.next_local_port = if port == *EPHEMERAL_PORTS.end() {
                *EPHEMERAL_PORTS.start()
            } else {
                port + 1
            };
            let key = FlowKey {
                guest_port,
                remote: SocketAddrV4::new(GATEWAY_IPV4, port),
            };
            if !self.tcp_keys.contains_key(&key) {
                return Some(port);
            }
        }
        None
    }

    /// Services every flow that was woken. Returns whether there was any.
    fn service_ready(&mut self, now: Instant) -> bool {
        let mut ids = std::mem::take(&mut self.ready_ids);
        self.ready.drain_into(&mut ids);
        let any = !ids.is_empty();
        for &id in &ids {
            if self.tcp.contains_key(&id) {
                self.service_tcp(id, now);
            } else if let Some(flow) = self.udp.get_mut(&id) {
                flow.wake.flow.clear();
                let mut cx = Context::from_waker(&flow.wake.waker);
                flow.inner.service(
                    &mut cx,
                    &mut self.device,
                    &mut self.udp_scratch,
                    self.guest_mac,
                    now,
                );
            }
        }
        ids.clear();
        self.ready_ids = ids;
        any
    }

    fn service_tcp(&mut self, id: FlowId, now: Instant) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        flow.wake.flow.clear();
        let mut cx = Context::from_waker(&flow.wake.waker);
        match &mut flow.inner.stage {
            Stage::Connecting { connect, syn } => {
                let Poll::Ready(result) = connect.as_mut().poll(&mut cx) else {
                    return;
                };
                let syn = std::mem::take(syn);
                self.on_connected(id, result, &syn, now);
            }
            Stage::Relaying(relay) => {
                if relay.deciding {
                    let key = flow.inner.key;
                    self.decide(id, key, now);
                }
                let Some(flow) = self.tcp.get_mut(&id) else {
                    return;
                };
                let Stage::Relaying(relay) = &mut flow.inner.stage else {
                    return;
                };
                let mut cx = Context::from_waker(&flow.wake.waker);
                let socket = self.sockets.get_mut::<tcp::Socket>(relay.handle);
                if relay.step(socket, &mut cx) == Progress::Finished {
                    self.remove_tcp(id);
                }
            }
        }
    }

    /// The host connect finished: on success, a socket listening on exactly the guest's
    /// destination takes the held SYN (and answers it once polled); on failure, the SYN gets a
    /// reset.
    fn on_connected(
        &mut self,
        id: FlowId,
        result: io::Result<TcpStream>,
        syn: &[u8],
        now: Instant,
    ) {
        let key = self.tcp[&id].inner.key;
        let stream = match result {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, dst = %key.remote, "host refused or did not answer");
                self.remove_tcp(id);
                self.ingress(syn, now);
                return;
            }
        };
        let mut socket = self.new_tcp_socket();
        let listen = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*key.remote.ip())),
            port: key.remote.port(),
        };
        if socket.listen(listen).is_err() {
            self.remove_tcp(id);
            return;
        }
        let handle = self.sockets.add(socket);
        self.ingress(syn, now);
        let socket = self.sockets.get::<tcp::Socket>(handle);
        let took_it = socket.state() == tcp::State::SynReceived
            && socket.remote_endpoint().map(|ep| ep.port) == Some(key.guest_port);
        let flow = self.tcp.get_mut(&id).expect("flow is alive");
        let deciding = self.intercepts.is_some();
        flow.inner.stage = Stage::Relaying(Relay::new(handle, stream, deciding));
        if took_it {
            // First step registers the flow's waker with both sockets.
            flow.wake.waker.wake_by_ref();
        } else {
            self.remove_tcp(id);
        }
    }

    fn remove_tcp(&mut self, id: FlowId) {
        let Some(flow) = self.tcp.remove(&id) else {
            return;
        };
        self.tcp_keys.remove(&flow.inner.key);
        if let Stage::Relaying(mut relay) = flow.inner.stage {
            let state = self.sockets.get::<tcp::Socket>(relay.handle).state();
            self.sockets.remove(relay.handle);
            // Removed before both sides finished (a forced removal): the host peer sees a reset.
            if relay.has_host_socket()
                && !matches!(state, tcp::State::TimeWait | tcp::State::Closed)
            {
                relay.reset_host();
            }
        }
    }

    /// A deciding flow (see `intercept`): peeks at the guest's first bytes and, once they
    /// say enough, relays the flow unchanged, hands it to an interception task, or (a server
    /// name to intercept at an address not resolved from it) resets it.
    fn decide(&mut self, id: FlowId, key: FlowKey, now: Instant) {
        let Some(intercepts) = &self.intercepts else {
            return;
        };
        let Some(Flow {
            inner:
                TcpFlow {
                    stage: Stage::Relaying(relay),
                    ..
                },
            ..
        }) = self.tcp.get_mut(&id)
        else {
            return;
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(relay.handle);
        if !socket.may_recv() && !socket.can_recv() {
            // Closed (or the guest sent FIN) before a ClientHello: nothing to intercept.
            if socket.state() != tcp::State::SynReceived {
                relay.deciding = false;
            }
            return;
        }
        let peeked = match socket.peek(MAX_CLIENT_HELLO) {
            Ok(bytes) => peek_sni(bytes),
            Err(_) => SniPeek::NotTls,
        };
        let host = match peeked {
            SniPeek::NeedMore if socket.may_recv() && socket.recv_queue() < MAX_CLIENT_HELLO => {
                return
            }
            SniPeek::Sni(host) if intercepts.config.wants(&host) => host,
            _ => {
                relay.deciding = false;
                return;
            }
        };
        let dst = host_destination(key.remote);
        let resolved = self
            .enforcer
            .names
            .lookup((*key.remote.ip()).into(), now)
            .contains(&host);
        if !resolved {
            self.enforcer.log.record(
                EventKind::Secret,
                "tls",
                &format!("{host}:{}", dst.port()),
                &format_args!("{} was not resolved from this name", key.remote.ip()),
            );
            socket.abort();
            relay.reset_host();
            relay.deciding = false;
            return;
        }
        let Some(upstream) = relay.take_tcp() else {
            relay.deciding = false;
            return;
        };
        let duplex = intercepts.spawn(upstream, host, dst);
        relay.intercepted(duplex);
    }

    /// Writes what interception tasks reported to the network log. Returns whether there was
    /// any.
    fn log_secret_events(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(intercepts) = &mut self.intercepts else {
            return false;
        };
        let mut any = false;
        while let Poll::Ready(Some(event)) = intercepts.events_rx.poll_recv(cx) {
            any = true;
            self.enforcer
                .log
                .record(EventKind::Secret, "tls", &event.destination, &event.reason);
        }
        any
    }

    fn sweep(&mut self, now: Instant) {
        self.enforcer.names.purge(now);
        let idle = self.limits.udp_idle_timeout;
        let expired: Vec<FlowId> = self
            .udp
            .iter()
            .filter(|(_, flow)| now.duration_since(flow.inner.last_active) >= idle)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(flow) = self.udp.remove(&id) {
                self.udp_keys.remove(&flow.inner.key);
            }
        }
        let connect_timeout = self.limits.tcp_connect_timeout;
        let mut stuck = Vec::new();
        for (&id, flow) in &mut self.tcp {
            if let Stage::Relaying(relay) = &flow.inner.stage {
                let socket = self.sockets.get_mut::<tcp::Socket>(relay.handle);
                match socket.state() {
                    // The guest never completed its handshake.
                    tcp::State::SynReceived
                        if now.duration_since(flow.inner.created) > 2 * connect_timeout =>
                    {
                        socket.abort();
                    }
                    tcp::State::Closed if socket.remote_endpoint().is_some() => {
                        let since = *flow.inner.stuck_since.get_or_insert(now);
                        if now.duration_since(since) >= STUCK_ABORT {
                            stuck.push(id);
                        }
                    }
                    _ => {}
                }
            }
            flow.wake.waker.wake_by_ref();
        }
        for id in stuck {
            self.remove_tcp(id);
        }
        for flow in self.udp.values() {
            flow.wake.waker.wake_by_ref();
        }
    }
}

/// Where a guest flow goes on the host. The gateway address stands for the
/// host itself: a connection to it is a connection to the host's loopback, and
/// the policy judges it as such (public-only denies it; a rule for
/// `127.0.0.1` and a port opens exactly that port).
pub(crate) fn host_destination(remote: SocketAddrV4) -> SocketAddr {
    if *remote.ip() == GATEWAY_IPV4 {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), remote.port())
    } else {
        SocketAddr::V4(remote)
    }
}

/// Addresses of the sandbox link other than the gateway lead nowhere.
fn is_unroutable(remote: SocketAddrV4) -> bool {
    packet::is_sandbox_link(*remote.ip()) && *remote.ip() != GATEWAY_IPV4
}
