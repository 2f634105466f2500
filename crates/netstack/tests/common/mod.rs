//! A simulated guest for end-to-end tests, in the style of smoltcp's netsim: a second smoltcp
//! `Interface` with the guest's static configuration, joined to a `NetStack` by an in-memory
//! duplex that carries length-prefixed Ethernet frames, exactly as QEMU's stream netdev does.
//! Host-side peers are real sockets on 127.0.0.1 (or, where a test needs the host's own address,
//! on one of this machine's interfaces); nothing leaves the machine.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use msb_netstack::{
    DnsConfig, Limits, NetConfig, NetStack, NetStats, RunError, GATEWAY_IPV4, GATEWAY_MAC,
    GUEST_IPV4, GUEST_MAC, PREFIX_LEN,
};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint,
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
    UdpRepr,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const STEP: Duration = Duration::from_secs(10);

/// A config that can never reach a real network: no upstream DNS unless a test adds its own,
/// and a network log in a fresh directory.
pub fn test_config(name: &str) -> NetConfig {
    // Cargo's scratch dir for integration tests, under target/: nothing left in /tmp.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("netstack-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    NetConfig {
        dns: DnsConfig {
            hosts: vec![],
            upstream: vec![],
        },
        limits: Limits {
            tcp_connect_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        log_path: Some(dir.join("network.log")),
        ..NetConfig::default()
    }
}

pub fn read_log(config: &NetConfig) -> String {
    std::fs::read_to_string(config.log_path.as_ref().unwrap()).unwrap_or_default()
}

pub struct Running {
    pub guest: Guest,
    pub stats: NetStats,
    pub stack: JoinHandle<Result<(), RunError>>,
    pub published: Vec<SocketAddr>,
}

/// Starts a stack with `config` and a guest attached to it.
pub async fn start(config: NetConfig) -> Running {
    let stack = NetStack::new(config).await.expect("stack starts");
    let stats = stack.stats();
    let published = stack.published().into_iter().map(|(_, a)| a).collect();
    let (guest_end, stack_end) = tokio::io::duplex(4 << 20);
    let stack = tokio::spawn(stack.run(stack_end));
    Running {
        guest: Guest::new(guest_end),
        stats,
        stack,
        published,
    }
}

/// Frames queued for the guest's smoltcp interface, and frames it sent.
#[derive(Default)]
struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = msb_netstack::MTU + 14;
        caps
    }
}

struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.0.push_back(frame);
        r
    }
}

pub struct Guest {
    iface: Interface,
    pub sockets: SocketSet<'static>,
    device: QueueDevice,
    link: DuplexStream,
    buf: Vec<u8>,
    next_port: u16,
}

fn now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::from(std::time::Instant::now())
}

impl Guest {
    pub fn new(link: DuplexStream) -> Guest {
        let mut device = QueueDevice::default();
        let mut config = Config::new(HardwareAddress::Ethernet(GUEST_MAC));
        config.random_seed = 0x5eed;
        let mut iface = Interface::new(config, &mut device, now());
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv4(GUEST_IPV4), PREFIX_LEN))
                .unwrap();
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(GATEWAY_IPV4)
            .unwrap();
        Guest {
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            link,
            buf: Vec::new(),
            next_port: 40000,
        }
    }

    /// Drives the guest's interface and the link until `done` says so; false on timeout.
    pub async fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&mut Guest) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.iface.poll(now(), &mut self.device, &mut self.sockets);
            while let Some(frame) = self.device.tx.pop_front() {
                self.link
                    .write_all(&(frame.len() as u32).to_be_bytes())
                    .await
                    .unwrap();
                self.link.write_all(&frame).await.unwrap();
            }
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let wait = self
                .iface
                .poll_delay(now(), &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(left)
                .min(left)
                .min(Duration::from_millis(20));
            tokio::select! {
                read = self.link.read_buf(&mut self.buf) => {
                    assert!(read.unwrap() > 0, "stack closed the link");
                    self.take_frames();
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Writes already length-prefixed frames to the stack, bypassing the guest's interface.
    pub async fn send_raw(&mut self, frames: &[u8]) {
        self.link.write_all(frames).await.unwrap();
    }

    /// Runs for a while regardless (to let something that should not happen have its chance).
    pub async fn idle(&mut self, duration: Duration) {
        self.run_until(duration, |_| false).await;
    }

    fn take_frames(&mut self) {
        loop {
            if self.buf.len() < 4 {
                return;
            }
            let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
            if self.buf.len() < 4 + len {
                return;
            }
            let frame = self.buf[4..4 + len].to_vec();
            self.buf.drain(..4 + len);
            self.device.rx.push_back(frame);
        }
    }

    fn port(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    pub fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    pub fn udp(&mut self, handle: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(handle)
    }

    fn new_tcp_socket() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        )
    }

    /// Starts a TCP connection (does not wait for it).
    pub fn connect(&mut self, dst: SocketAddrV4) -> SocketHandle {
        let port = self.port();
        let mut socket = Self::new_tcp_socket();
        socket
            .connect(
                self.iface.context(),
                (IpAddress::Ipv4(*dst.ip()), dst.port()),
                port,
            )
            .unwrap();
        self.sockets.add(socket)
    }

    pub fn listen(&mut self, port: u16) -> SocketHandle {
        let mut socket = Self::new_tcp_socket();
        socket.listen(port).unwrap();
        self.sockets.add(socket)
    }

    /// Connects and waits for the outcome: true when established, false when reset.
    pub async fn connect_and_wait(&mut self, dst: SocketAddrV4) -> (SocketHandle, bool) {
        let handle = self.connect(dst);
        let settled = self
            .run_until(STEP, |g| {
                let state = g.tcp(handle).state();
                state == tcp::State::Established || state == tcp::State::Closed
            })
            .await;
        assert!(settled, "connect to {dst} neither succeeded nor failed");
        let established = self.tcp(handle).state() == tcp::State::Established;
        (handle, established)
    }

    /// Reads from a TCP socket until `n` bytes or the peer's FIN.
    pub async fn read_tcp(&mut self, handle: SocketHandle, until_fin: bool, n: usize) -> Vec<u8> {
        let mut data = Vec::new();
        let ok = self
            .run_until(STEP, |g| {
                let socket = g.tcp(handle);
                while socket.can_recv() {
                    socket
                        .recv(|buf| {
                            data.extend_from_slice(buf);
                            (buf.len(), ())
                        })
                        .unwrap();
                }
                if until_fin {
                    !socket.may_recv()
                } else {
                    data.len() >= n
                }
            })
            .await;
        assert!(ok, "read timed out with {} bytes", data.len());
        data
    }

    /// Queues all of `data` on a TCP socket, driving the link as it drains.
    pub async fn write_tcp(&mut self, handle: SocketHandle, data: &[u8]) {
        let mut sent = 0;
        let ok = self
            .run_until(STEP, |g| {
                sent += g.tcp(handle).send_slice(&data[sent..]).unwrap();
                sent == data.len()
            })
            .await;
        assert!(ok, "write timed out");
    }

    pub fn udp_socket(&mut self) -> (SocketHandle, u16) {
        let port = self.port();
        let mut socket = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]),
        );
        socket.bind(port).unwrap();
        (self.sockets.add(socket), port)
    }

    /// Sends one datagram and waits up to `wait` for one back: (payload, source).
    pub async fn udp_exchange(
        &mut self,
        handle: SocketHandle,
        dst: SocketAddrV4,
        payload: &[u8],
        wait: Duration,
    ) -> Option<(Vec<u8>, IpEndpoint)> {
        let endpoint = IpEndpoint::new(IpAddress::Ipv4(*dst.ip()), dst.port());
        self.udp(handle).send_slice(payload, endpoint).unwrap();
        let mut got = None;
        self.run_until(wait, |g| {
            if let Ok((data, meta)) = g.udp(handle).recv() {
                got = Some((data.to_vec(), meta.endpoint));
            }
            got.is_some()
        })
        .await;
        got
    }

    /// Asks the stack's DNS server.
    pub async fn resolve(&mut self, name: &str, kind: RecordType) -> Message {
        let server = SocketAddrV4::new(GATEWAY_IPV4, 53);
        let (reply, from) = self.resolve_via(server, name, kind).await;
        assert_eq!(from.port, 53);
        reply
    }

    /// Sends a DNS query to `server` and waits for the answer: (answer, where it came from).
    pub async fn resolve_via(
        &mut self,
        server: SocketAddrV4,
        name: &str,
        kind: RecordType,
    ) -> (Message, IpEndpoint) {
        let (handle, _) = self.udp_socket();
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        let (reply, from) = self
            .udp_exchange(handle, server, &query.to_vec().unwrap(), STEP)
            .await
            .unwrap_or_else(|| panic!("no dns answer from {server}"));
        self.sockets.remove(handle);
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, query.metadata.id);
        (reply, from)
    }

    pub async fn resolve_a(&mut self, name: &str) -> Vec<IpAddr> {
        let reply = self.resolve(name, RecordType::A).await;
        reply
            .answers
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .collect()
    }
}

pub fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("ipv4 expected"),
    }
}

pub fn log_dir(config: &NetConfig) -> PathBuf {
    config
        .log_path
        .as_ref()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned()
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident set size of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// Raw frames, for tests that act as a misbehaving guest rather than through smoltcp.

pub fn frame(out: &mut Vec<u8>, len: usize, fill: impl FnOnce(&mut [u8])) {
    out.extend_from_slice(&(len as u32).to_be_bytes());
    let at = out.len();
    out.resize(at + len, 0);
    fill(&mut out[at..]);
}

pub fn arp_for_gateway(out: &mut Vec<u8>) {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: GUEST_MAC,
        source_protocol_addr: GUEST_IPV4,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: GATEWAY_IPV4,
    };
    frame(out, 14 + arp.buffer_len(), |buf| {
        let mut eth = EthernetFrame::new_unchecked(buf);
        EthernetRepr {
            src_addr: GUEST_MAC,
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut eth);
        arp.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    });
}

pub fn syn(out: &mut Vec<u8>, src_port: u16, dst: std::net::SocketAddrV4) {
    let tcp = TcpRepr {
        src_port,
        dst_port: dst.port(),
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(i32::from(src_port) * 7919),
        ack_number: None,
        window_len: 64240,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: GUEST_IPV4,
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    frame(out, 14 + 20 + tcp.buffer_len(), |buf| {
        let caps = ChecksumCapabilities::default();
        let mut eth = EthernetFrame::new_unchecked(buf);
        EthernetRepr {
            src_addr: GUEST_MAC,
            dst_addr: GATEWAY_MAC,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let mut packet = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut packet, &caps);
        tcp.emit(
            &mut TcpPacket::new_unchecked(packet.payload_mut()),
            &IpAddress::Ipv4(GUEST_IPV4),
            &IpAddress::Ipv4(*dst.ip()),
            &caps,
        );
    });
}

/// A UDP datagram from the guest, length-prefixed like `frame`.
pub fn udp_datagram(out: &mut Vec<u8>, src_port: u16, dst: SocketAddrV4, payload: &[u8]) {
    let udp = UdpRepr {
        src_port,
        dst_port: dst.port(),
    };
    let udp_len = udp.header_len() + payload.len();
    let ip = Ipv4Repr {
        src_addr: GUEST_IPV4,
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    frame(out, 14 + 20 + udp_len, |buf| {
        let caps = ChecksumCapabilities::default();
        let mut eth = EthernetFrame::new_unchecked(buf);
        EthernetRepr {
            src_addr: GUEST_MAC,
            dst_addr: GATEWAY_MAC,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let mut packet = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut packet, &caps);
        udp.emit(
            &mut UdpPacket::new_unchecked(packet.payload_mut()),
            &IpAddress::Ipv4(GUEST_IPV4),
            &IpAddress::Ipv4(*dst.ip()),
            payload.len(),
            |buf| buf.copy_from_slice(payload),
            &caps,
        );
    });
}

/// An ICMP echo request from the guest to `dst` carrying `data_len` bytes, length-prefixed like
/// `frame`. Any size the IPv4 header can state (`data_len` up to 65507), whatever the MTU: a guest
/// can raise its own.
pub fn icmp_echo(out: &mut Vec<u8>, dst: Ipv4Addr, data_len: usize) {
    let data = vec![0x5a; data_len];
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x6d73,
        seq_no: 1,
        data: &data,
    };
    let ip = Ipv4Repr {
        src_addr: GUEST_IPV4,
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    frame(out, 14 + 20 + icmp.buffer_len(), |buf| {
        let caps = ChecksumCapabilities::default();
        let mut eth = EthernetFrame::new_unchecked(buf);
        EthernetRepr {
            src_addr: GUEST_MAC,
            dst_addr: GATEWAY_MAC,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let mut packet = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut packet, &caps);
        icmp.emit(
            &mut Icmpv4Packet::new_unchecked(packet.payload_mut()),
            &caps,
        );
    });
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
