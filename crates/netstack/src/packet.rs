//! Inspection of guest frames before smoltcp sees them, and the UDP frames the stack builds
//! itself.
//!
//! Every frame from the guest is classified here first ([`inspect`]). Only what smoltcp should
//! answer is passed on to it: ARP for the gateway, ICMP to the gateway, and TCP. UDP never
//! reaches smoltcp: the stack relays datagrams itself (one host socket per flow) and builds the
//! replies with [`write_udp_frame`], which keeps UDP free of per-flow smoltcp sockets.
//!
//! Frames are validated as far as the stack relies on them: Ethernet destination (the gateway or
//! broadcast), IPv4 header checksum, source address (only [`GUEST_IPV4`]: a guest cannot speak
//! for other addresses), no fragments, and UDP checksums. TCP is validated by smoltcp. Frames
//! longer than the MTU never get here: `stack::Engine::on_frame` drops them first.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};

use crate::device::LinkDevice;
use crate::{ETHERNET_HEADER_LEN, GATEWAY_IPV4, GATEWAY_MAC, GUEST_IPV4, MTU};

const IPV4_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
/// The largest UDP payload that fits one frame (the stack does not fragment).
pub(crate) const MAX_UDP_PAYLOAD: usize = MTU - IPV4_HEADER_LEN - UDP_HEADER_LEN;

/// What a guest frame is, as far as the stack's dispatch cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inspected<'a> {
    /// Pass to smoltcp as it is (ARP for the gateway, ICMP to the gateway).
    Smoltcp,
    /// A TCP segment; passed to smoltcp after flow bookkeeping.
    Tcp(TcpSegment),
    /// A UDP datagram, checksum verified.
    Udp {
        src_port: u16,
        dst: SocketAddrV4,
        payload: &'a [u8],
    },
    /// Not for us or not valid; the reason is for tracing.
    Drop(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TcpSegment {
    pub(crate) src_port: u16,
    pub(crate) dst: SocketAddrV4,
    /// SYN without ACK: an attempt to open a connection.
    pub(crate) is_open: bool,
    pub(crate) is_reset: bool,
}

/// Classifies a frame from the guest. Returns the sender's MAC when the frame came from the
/// guest's address, so replies built outside smoltcp can be addressed to it.
pub(crate) fn inspect(frame: &[u8]) -> (Option<EthernetAddress>, Inspected<'_>) {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return (None, Inspected::Drop("short ethernet frame"));
    };
    let dst_mac = eth.dst_addr();
    if dst_mac != GATEWAY_MAC && !dst_mac.is_broadcast() {
        return (None, Inspected::Drop("not addressed to the gateway"));
    }
    let src_mac = eth.src_addr();
    if !src_mac.is_unicast() {
        return (None, Inspected::Drop("multicast source mac"));
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => (None, inspect_arp(eth.payload())),
        EthernetProtocol::Ipv4 => match inspect_ipv4(eth.payload()) {
            Inspected::Drop(why) => (None, Inspected::Drop(why)),
            inspected => (Some(src_mac), inspected),
        },
        // The guest has no IPv6 address; NDP, DHCPv6 and friends go unanswered.
        EthernetProtocol::Ipv6 => (None, Inspected::Drop("ipv6 is not routed")),
        _ => (None, Inspected::Drop("unsupported ethertype")),
    }
}

fn inspect_arp(payload: &[u8]) -> Inspected<'_> {
    let Ok(packet) = ArpPacket::new_checked(payload) else {
        return Inspected::Drop("short arp packet");
    };
    match ArpRepr::parse(&packet) {
        // smoltcp with any-ip answers ARP for every address; the guest must only learn the
        // gateway, or it would see conflicts for its own address and on-link hosts that are not.
        Ok(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            target_protocol_addr,
            ..
        }) if target_protocol_addr == GATEWAY_IPV4 => Inspected::Smoltcp,
        // Replies to the stack's own requests (for the guest's address) fill its neighbor cache.
        Ok(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_protocol_addr,
            ..
        }) if source_protocol_addr == GUEST_IPV4 => Inspected::Smoltcp,
        Ok(_) => Inspected::Drop("arp not for the gateway"),
        Err(_) => Inspected::Drop("malformed arp"),
    }
}

fn inspect_ipv4(payload: &[u8]) -> Inspected<'_> {
    let Ok(packet) = Ipv4Packet::new_checked(payload) else {
        return Inspected::Drop("short ipv4 packet");
    };
    if packet.version() != 4 || !packet.verify_checksum() {
        return Inspected::Drop("bad ipv4 header");
    }
    if packet.src_addr() != GUEST_IPV4 {
        return Inspected::Drop("source is not the guest's address");
    }
    if packet.more_frags() || packet.frag_offset() != 0 {
        // Nothing the guest legitimately sends at this MTU is fragmented.
        return Inspected::Drop("ipv4 fragment");
    }
    let dst = packet.dst_addr();
    match packet.next_header() {
        IpProtocol::Tcp => {
            let Ok(tcp) = TcpPacket::new_checked(packet.payload()) else {
                return Inspected::Drop("short tcp segment");
            };
            let is_open = tcp.syn() && !tcp.ack() && !tcp.rst();
            // A SYN makes the stack connect on the host: check it is intact first (smoltcp
            // checks every other segment).
            let (src, dst_ip) = (IpAddress::Ipv4(packet.src_addr()), IpAddress::Ipv4(dst));
            if is_open && !tcp.verify_checksum(&src, &dst_ip) {
                return Inspected::Drop("bad tcp checksum");
            }
            Inspected::Tcp(TcpSegment {
                src_port: tcp.src_port(),
                dst: SocketAddrV4::new(dst, tcp.dst_port()),
                is_open,
                is_reset: tcp.rst(),
            })
        }
        IpProtocol::Udp => {
            let Ok(udp) = UdpPacket::new_checked(packet.payload()) else {
                return Inspected::Drop("short udp datagram");
            };
            let caps = smoltcp::phy::ChecksumCapabilities::default();
            let src = IpAddress::Ipv4(packet.src_addr());
            if UdpRepr::parse(&udp, &src, &IpAddress::Ipv4(dst), &caps).is_err() {
                return Inspected::Drop("bad udp datagram");
            }
            Inspected::Udp {
                src_port: udp.src_port(),
                dst: SocketAddrV4::new(dst, udp.dst_port()),
                payload: udp.payload(),
            }
        }
        // Only the gateway answers pings: smoltcp with any-ip would otherwise answer for every
        // address and make the whole internet look reachable.
        IpProtocol::Icmp if dst == GATEWAY_IPV4 => Inspected::Smoltcp,
        _ => Inspected::Drop("unsupported ip protocol or destination"),
    }
}

/// Queues a UDP datagram from `src` to the guest. Returns false (and queues nothing) when it is
/// too big for one frame or the link's queue is full: UDP may drop.
pub(crate) fn write_udp_frame(
    device: &mut LinkDevice,
    guest_mac: EthernetAddress,
    src: SocketAddrV4,
    dst_port: u16,
    payload: &[u8],
) -> bool {
    if payload.len() > MAX_UDP_PAYLOAD {
        return false;
    }
    let udp_len = UDP_HEADER_LEN + payload.len();
    let len = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + udp_len;
    let written = device.out.push(len, |buf| {
        let mut eth = EthernetFrame::new_unchecked(buf);
        EthernetRepr {
            src_addr: GATEWAY_MAC,
            dst_addr: guest_mac,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        Ipv4Repr {
            src_addr: *src.ip(),
            dst_addr: GUEST_IPV4,
            next_header: IpProtocol::Udp,
            payload_len: udp_len,
            hop_limit: 64,
        }
        .emit(&mut ip, &caps);
        let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
        UdpRepr {
            src_port: src.port(),
            dst_port,
        }
        .emit(
            &mut udp,
            &IpAddress::Ipv4(*src.ip()),
            &IpAddress::Ipv4(GUEST_IPV4),
            payload.len(),
            |buf| buf.copy_from_slice(payload),
            &caps,
        );
    });
    if written.is_some() {
        device.sent += 1;
        true
    } else {
        false
    }
}

/// Whether `ip` is inside the sandbox's own link (the guest, the gateway, the subnet's network
/// and broadcast addresses): such destinations are never relayed to the host's network.
pub(crate) fn is_sandbox_link(ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - u32::from(crate::PREFIX_LEN));
    u32::from(ip) & mask == u32::from(GATEWAY_IPV4) & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GUEST_MAC;

    fn udp_frame_from_guest(dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        // Build with the same writer, then swap the roles of the addresses.
        let mut device = LinkDevice::new(1 << 18);
        assert!(write_udp_frame(&mut device, GUEST_MAC, dst, 5353, payload));
        let mut frame = device.out.pending()[4..].to_vec();
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_src_addr(GUEST_MAC);
        eth.set_dst_addr(GATEWAY_MAC);
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.set_src_addr(GUEST_IPV4);
        ip.set_dst_addr(*dst.ip());
        ip.fill_checksum();
        let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
        udp.set_src_port(5353);
        udp.set_dst_port(dst.port());
        udp.fill_checksum(&IpAddress::Ipv4(GUEST_IPV4), &IpAddress::Ipv4(*dst.ip()));
        frame
    }

    #[test]
    fn udp_round_trip_through_inspect() {
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 9);
        let frame = udp_frame_from_guest(dst, b"hello");
        let (mac, inspected) = inspect(&frame);
        assert_eq!(mac, Some(GUEST_MAC));
        assert_eq!(
            inspected,
            Inspected::Udp {
                src_port: 5353,
                dst,
                payload: b"hello"
            }
        );
        // A corrupted checksum is dropped.
        let mut bad = frame.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(inspect(&bad).1, Inspected::Drop(_)));
        // A spoofed source is dropped.
        let mut spoofed = frame;
        let mut eth = EthernetFrame::new_unchecked(&mut spoofed[..]);
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.set_src_addr(Ipv4Addr::new(100, 96, 0, 9));
        ip.fill_checksum();
        assert_eq!(
            inspect(&spoofed).1,
            Inspected::Drop("source is not the guest's address")
        );
    }

    #[test]
    fn oversized_datagrams_are_not_queued() {
        let mut device = LinkDevice::new(1 << 18);
        let src = SocketAddrV4::new(Ipv4Addr::new(1, 1, 1, 1), 53);
        assert!(write_udp_frame(
            &mut device,
            GUEST_MAC,
            src,
            1,
            &[0; MAX_UDP_PAYLOAD]
        ));
        assert!(!write_udp_frame(
            &mut device,
            GUEST_MAC,
            src,
            1,
            &[0; MAX_UDP_PAYLOAD + 1]
        ));
    }

    #[test]
    fn garbage_is_dropped() {
        for len in [0, 5, 14, 40, 100] {
            let frame = vec![0xffu8; len];
            assert!(matches!(inspect(&frame).1, Inspected::Drop(_)));
        }
    }

    #[test]
    fn sandbox_link() {
        assert!(is_sandbox_link(GUEST_IPV4));
        assert!(is_sandbox_link(GATEWAY_IPV4));
        assert!(!is_sandbox_link(Ipv4Addr::new(8, 8, 8, 8)));
    }
}
