//! End-to-end tests: a simulated guest (see `common`) talks through `NetStack::run` to real
//! host sockets on 127.0.0.1 (and, to test the host's own addresses, on one of this machine's
//! interfaces: still nothing leaves the machine). Loopback is a private range, so tests that need
//! a host peer allow it explicitly (a rule for the test's port, or `allow-all`); the deny tests
//! check the refusal when there is no such rule.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use msb_netstack::{
    NetError, NetStack, PolicyKind, PortMapping, PortProtocol, Rule, GATEWAY_IPV4, MTU,
};
use smoltcp::socket::tcp::State;
use smoltcp::wire::{IpAddress, IpEndpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

fn allow_port(port: u16) -> Rule {
    Rule::allow()
        .cidr("127.0.0.1/32".parse().unwrap())
        .port(port)
}

async fn listener() -> (TcpListener, SocketAddrV4) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = v4(listener.local_addr().unwrap());
    (listener, addr)
}

#[tokio::test]
async fn tcp_round_trip_with_half_close_both_ways() {
    let (host, addr) = listener().await;
    let mut config = test_config("tcp");
    config.policy.rules.push(allow_port(addr.port()));
    let mut run = start(config).await;

    // 1. The guest sends, then closes its side; the host replies after seeing end-of-file.
    let server = tokio::spawn(async move {
        let (mut stream, _) = host.accept().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        let mut reply = b"reply:".to_vec();
        reply.extend_from_slice(&got);
        stream.write_all(&reply).await.unwrap();
        stream.shutdown().await.unwrap();
        // 2. The host closes first this time, and still receives what the guest sends after.
        let (mut stream, _) = host.accept().await.unwrap();
        stream.write_all(b"banner").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        got
    });
    let guest = &mut run.guest;
    let (h, established) = guest.connect_and_wait(addr).await;
    assert!(established);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    guest.write_tcp(h, &payload).await;
    guest.tcp(h).close();
    let reply = guest.read_tcp(h, true, 0).await;
    assert_eq!(&reply[..6], b"reply:");
    assert!(reply[6..] == payload[..], "payload came back intact");

    let (h, established) = guest.connect_and_wait(addr).await;
    assert!(established);
    let banner = guest.read_tcp(h, true, 0).await;
    assert_eq!(banner, b"banner");
    assert_eq!(guest.tcp(h).state(), State::CloseWait);
    guest.write_tcp(h, b"after the host's fin").await;
    guest.tcp(h).close();
    let ok = guest.run_until(STEP, |_| server.is_finished()).await;
    assert!(ok);
    assert_eq!(server.await.unwrap(), b"after the host's fin");
    // Both flows are gone once closed.
    let stats = run.stats.clone();
    assert!(
        guest
            .run_until(STEP, |_| stats.snapshot().tcp_flows == 0)
            .await
    );
}

#[tokio::test]
async fn public_only_refuses_private_destinations_without_host_sockets() {
    let (host, addr) = listener().await;
    let config = test_config("deny");
    let log = config.clone();
    let mut run = start(config).await;
    let denied = [
        addr,
        SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 80),
        SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 1), 80),
        SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 1), 80),
        SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 254), 80),
        SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 1), 80),
    ];
    for dst in denied {
        let (_, established) = run.guest.connect_and_wait(dst).await;
        assert!(!established, "{dst} must be refused");
    }
    // UDP to a private address is dropped too.
    let (udp, _) = run.guest.udp_socket();
    let dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 9);
    assert!(run
        .guest
        .udp_exchange(udp, dst, b"x", Duration::from_millis(100))
        .await
        .is_none());

    let stats = run.stats.snapshot();
    assert_eq!(stats.flows_denied, denied.len() as u64 + 1);
    assert_eq!(stats.peak_flows, 0, "no host socket was ever opened");
    // The loopback listener never saw a connection.
    let accepted = tokio::time::timeout(Duration::from_millis(50), host.accept()).await;
    assert!(accepted.is_err());
    let text = read_log(&log);
    for dst in denied {
        let line = text
            .lines()
            .find(|l| l.contains(&format!(" deny tcp {dst} ")))
            .unwrap_or_else(|| panic!("no deny line for {dst} in:\n{text}"));
        assert!(line.contains("default public-only ("), "{line}");
    }
    assert!(text.contains(" deny tcp 169.254.169.254:80 default public-only (link-local)"));
    assert!(text.contains(" deny udp 10.0.0.1:9 default public-only (private)"));
}

#[tokio::test]
async fn an_allow_rule_opens_exactly_one_loopback_port() {
    let (allowed, allowed_addr) = listener().await;
    let (other, other_addr) = listener().await;
    let mut config = test_config("one-port");
    config.policy.rules.push(allow_port(allowed_addr.port()));
    let log = config.clone();
    let mut run = start(config).await;
    let accept = tokio::spawn(async move { allowed.accept().await.is_ok() });
    let (_, established) = run.guest.connect_and_wait(allowed_addr).await;
    assert!(established);
    assert!(run.guest.run_until(STEP, |_| accept.is_finished()).await);
    let (_, established) = run.guest.connect_and_wait(other_addr).await;
    assert!(!established);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), other.accept())
            .await
            .is_err()
    );
    assert!(read_log(&log).contains(&format!(
        " deny tcp {other_addr} default public-only (loopback)"
    )));
}

#[tokio::test]
async fn resets_both_ways() {
    let mut config = test_config("reset");
    config.policy.default = PolicyKind::AllowAll;
    let mut run = start(config).await;

    // The host refuses (nothing listens): the guest gets a reset, not a timeout.
    let closed = {
        let (l, addr) = listener().await;
        drop(l);
        addr
    };
    let started = tokio::time::Instant::now();
    let (_, established) = run.guest.connect_and_wait(closed).await;
    assert!(!established);
    assert!(started.elapsed() < Duration::from_secs(2));

    // The guest resets an established flow: the host socket sees it.
    let (host, addr) = listener().await;
    let (h, established) = run.guest.connect_and_wait(addr).await;
    assert!(established);
    let (mut stream, _) = host.accept().await.unwrap();
    run.guest.tcp(h).abort();
    run.guest.idle(Duration::from_millis(100)).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(STEP, stream.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // The host resets an established flow: the guest sees a reset.
    let (h, established) = run.guest.connect_and_wait(addr).await;
    assert!(established);
    let (stream, _) = host.accept().await.unwrap();
    stream.set_zero_linger().unwrap();
    drop(stream);
    let reset = run
        .guest
        .run_until(STEP, |g| g.tcp(h).state() == State::Closed)
        .await;
    assert!(reset);
}

#[tokio::test]
async fn udp_round_trip() {
    let host = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = v4(host.local_addr().unwrap());
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = host.recv_from(&mut buf).await.unwrap();
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            host.send_to(&reply, from).await.unwrap();
        }
    });
    let mut config = test_config("udp");
    config.policy.rules.push(allow_port(addr.port()));
    let mut run = start(config).await;
    let (h, _) = run.guest.udp_socket();
    for i in 0..3u8 {
        let (reply, from) = run
            .guest
            .udp_exchange(h, addr, &[i; 1000], STEP)
            .await
            .expect("udp reply");
        assert_eq!(&reply[..5], b"echo:");
        assert_eq!(&reply[5..], &[i; 1000]);
        assert_eq!(from.addr, smoltcp::wire::IpAddress::Ipv4(*addr.ip()));
        assert_eq!(from.port, addr.port());
    }
    assert_eq!(
        run.stats.snapshot().udp_flows,
        1,
        "one flow for one (port, destination)"
    );
}

/// A fake upstream DNS server on loopback: `public.test` is a public address, `rebind.test`
/// points at loopback, `a-b-c-d.ip.test` is `a.b.c.d` (as wildcard services on the internet
/// answer for any address); counts the queries it gets.
async fn fake_upstream() -> (SocketAddr, tokio::sync::watch::Receiver<usize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(0);
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let mut count = 0;
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            count += 1;
            tx.send_replace(count);
            let query = Message::from_vec(&buf[..n]).unwrap();
            let mut reply = Message::response(query.metadata.id, OpCode::Query);
            reply.metadata.message_type = MessageType::Response;
            reply.queries = query.queries.clone();
            let name = query.queries[0].name().clone();
            let ip = match name.to_ascii().as_str() {
                "public.test." => Some(Ipv4Addr::new(93, 184, 216, 34)),
                "rebind.test." => Some(Ipv4Addr::LOCALHOST),
                other => other
                    .strip_suffix(".ip.test.")
                    .and_then(|ip| ip.replace('-', ".").parse().ok()),
            };
            match ip {
                Some(ip) => reply
                    .answers
                    .push(Record::from_rdata(name, 30, RData::A(A(ip)))),
                None => reply.metadata.response_code = ResponseCode::NXDomain,
            }
            socket
                .send_to(&reply.to_vec().unwrap(), from)
                .await
                .unwrap();
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn dns_hosts_blocks_forwarding_and_rebinding() {
    let (upstream, queries) = fake_upstream().await;
    let mut config = test_config("dns");
    config
        .dns
        .hosts
        .push(("web.test".into(), vec!["198.51.100.7".parse().unwrap()]));
    config.dns.upstream = vec![upstream];
    config.policy.block_domain_suffixes = vec![".evil.test".into()];
    let log = config.clone();
    let mut run = start(config).await;
    let guest = &mut run.guest;

    assert_eq!(
        guest.resolve_a("web.test.").await,
        vec!["198.51.100.7".parse::<IpAddr>().unwrap()]
    );
    for blocked in ["evil.test.", "a.evil.test."] {
        let reply = guest.resolve(blocked, RecordType::A).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{blocked}"
        );
    }
    assert_eq!(
        *queries.borrow(),
        0,
        "hosts and blocked names are never forwarded"
    );

    assert_eq!(
        guest.resolve_a("public.test.").await,
        vec!["93.184.216.34".parse::<IpAddr>().unwrap()]
    );
    let reply = guest.resolve("nope.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let reply = guest.resolve("rebind.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(reply.answers.is_empty());
    assert_eq!(*queries.borrow(), 3);

    let stats = run.stats.snapshot();
    assert_eq!(stats.dns_blocked, 2);
    assert_eq!(stats.dns_rebinding_refused, 1);
    let text = read_log(&log);
    assert!(
        text.contains(" dns-block dns a.evil.test block list"),
        "{text}"
    );
    assert!(
        text.contains(" dns-rebind dns rebind.test=127.0.0.1 default public-only (loopback)"),
        "{text}"
    );
}

#[tokio::test]
async fn domain_rules_match_only_resolved_addresses() {
    let (host, addr) = listener().await;
    let mut config = test_config("domain");
    config
        .dns
        .hosts
        .push(("app.test".into(), vec![IpAddr::V4(*addr.ip())]));
    config
        .policy
        .rules
        .push(Rule::allow().domain("app.test").port(addr.port()));
    let mut run = start(config).await;
    tokio::spawn(async move { while host.accept().await.is_ok() {} });

    // The address hard-coded: the domain rule does not match, public-only denies loopback.
    let (_, established) = run.guest.connect_and_wait(addr).await;
    assert!(!established);
    // Resolved through the stack first: allowed.
    assert_eq!(
        run.guest.resolve_a("app.test.").await,
        vec![IpAddr::V4(*addr.ip())]
    );
    let (_, established) = run.guest.connect_and_wait(addr).await;
    assert!(established);
    assert_eq!(run.stats.snapshot().flows_denied, 1);
}

#[tokio::test]
async fn policy_none_lets_nothing_out() {
    let (host, addr) = listener().await;
    let udp_host = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_addr = v4(udp_host.local_addr().unwrap());
    let (upstream, queries) = fake_upstream().await;
    let mut config = test_config("none");
    config.policy.default = PolicyKind::None;
    // Rules do not apply under `none`.
    config.policy.rules.push(Rule::allow());
    config.dns.upstream = vec![upstream];
    config
        .dns
        .hosts
        .push(("local.test".into(), vec!["198.51.100.1".parse().unwrap()]));
    let log = config.clone();
    let mut run = start(config).await;

    let (_, established) = run.guest.connect_and_wait(addr).await;
    assert!(!established);
    let public = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 443);
    let (_, established) = run.guest.connect_and_wait(public).await;
    assert!(!established);
    let (h, _) = run.guest.udp_socket();
    assert!(run
        .guest
        .udp_exchange(h, udp_addr, b"x", Duration::from_millis(100))
        .await
        .is_none());
    let reply = run.guest.resolve("public.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    // The hosts table is local: it still answers.
    assert_eq!(run.guest.resolve_a("local.test.").await.len(), 1);

    assert_eq!(*queries.borrow(), 0);
    assert_eq!(run.stats.snapshot().peak_flows, 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), host.accept())
            .await
            .is_err()
    );
    let mut buf = [0u8; 8];
    assert!(
        tokio::time::timeout(Duration::from_millis(50), udp_host.recv_from(&mut buf))
            .await
            .is_err()
    );
    let text = read_log(&log);
    assert!(
        text.contains(&format!(" deny tcp {addr} default none (loopback)")),
        "{text}"
    );
    assert!(
        text.contains(" deny tcp 198.51.100.1:443 default none (public)"),
        "{text}"
    );
    assert!(
        text.contains(" dns-refused dns public.test default none"),
        "{text}"
    );
}

#[tokio::test]
async fn published_port_reaches_a_guest_listener() {
    let mut config = test_config("publish");
    config.ports.push(PortMapping {
        host: "127.0.0.1:0".parse().unwrap(),
        guest_port: 80,
        protocol: PortProtocol::Tcp,
    });
    let mut run = start(config).await;
    let published = run.published[0];
    let listener = run.guest.listen(80);
    let h = listener;
    let client = tokio::spawn(async move {
        let mut stream = TcpStream::connect(published).await.unwrap();
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        reply
    });
    let guest = &mut run.guest;
    assert!(
        guest.run_until(STEP, |g| g.tcp(h).may_send()).await,
        "accepted"
    );
    let request = guest.read_tcp(listener, true, 0).await;
    assert_eq!(request, b"GET / HTTP/1.0\r\n\r\n");
    let remote = guest.tcp(listener).remote_endpoint().unwrap();
    assert_eq!(remote.addr, smoltcp::wire::IpAddress::Ipv4(GATEWAY_IPV4));
    guest
        .write_tcp(listener, b"HTTP/1.0 200 OK\r\n\r\nhello")
        .await;
    guest.tcp(listener).close();
    assert!(guest.run_until(STEP, |_| client.is_finished()).await);
    assert_eq!(client.await.unwrap(), b"HTTP/1.0 200 OK\r\n\r\nhello");
}

#[tokio::test]
async fn published_port_to_a_closed_guest_port_resets_the_client() {
    let mut config = test_config("publish-closed");
    config.ports.push(PortMapping {
        host: "127.0.0.1:0".parse().unwrap(),
        guest_port: 8080,
        protocol: PortProtocol::Tcp,
    });
    let mut run = start(config).await;
    let published = run.published[0];
    let client = tokio::spawn(async move {
        let mut stream = TcpStream::connect(published).await.unwrap();
        let mut buf = [0u8; 8];
        stream.read(&mut buf).await
    });
    assert!(run.guest.run_until(STEP, |_| client.is_finished()).await);
    let read = client.await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn a_taken_port_is_a_typed_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut config = test_config("in-use");
    config.ports.push(PortMapping {
        host: addr,
        guest_port: 80,
        protocol: PortProtocol::Tcp,
    });
    match NetStack::new(config).await {
        Err(NetError::PortInUse { addr: a, .. }) => assert_eq!(a, addr),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("bound a taken port"),
    }
}

#[tokio::test]
async fn the_gateway_stands_for_the_hosts_loopback_and_is_judged_as_such() {
    let (allowed, allowed_addr) = listener().await;
    let (other, other_addr) = listener().await;
    let mut config = test_config("gateway");
    config.policy.rules.push(allow_port(allowed_addr.port()));
    let log = config.clone();
    let mut run = start(config).await;
    let accept = tokio::spawn(async move { allowed.accept().await.is_ok() });
    // The rule for 127.0.0.1:<port> opens that port through the gateway address...
    let (_, established) = run
        .guest
        .connect_and_wait(SocketAddrV4::new(GATEWAY_IPV4, allowed_addr.port()))
        .await;
    assert!(established);
    assert!(run.guest.run_until(STEP, |_| accept.is_finished()).await);
    // ...and public-only denies any other loopback port, logged as loopback.
    let (_, established) = run
        .guest
        .connect_and_wait(SocketAddrV4::new(GATEWAY_IPV4, other_addr.port()))
        .await;
    assert!(!established);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), other.accept())
            .await
            .is_err()
    );
    assert!(read_log(&log).contains(&format!(
        " deny tcp {other_addr} default public-only (loopback)"
    )));
}

#[tokio::test]
async fn stack_stops_when_the_link_closes() {
    let config = test_config("close");
    let run = start(config).await;
    drop(run.guest);
    let result = tokio::time::timeout(STEP, run.stack)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok());
}

#[tokio::test]
async fn a_guest_that_does_not_read_stops_the_host_reader() {
    let host = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dst = v4(host.local_addr().unwrap());
    let mut config = test_config("backpressure");
    config.policy.rules.push(allow_port(dst.port()));
    let mut run = start(config).await;
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    const TOTAL: usize = 16 << 20;
    let writer = tokio::spawn(async move {
        let (mut stream, _) = host.accept().await.unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            stream.write_all(&chunk).await.unwrap();
            sent += chunk.len();
            counter.store(sent as u64, Ordering::Relaxed);
        }
        stream.shutdown().await.unwrap();
    });
    let (h, established) = run.guest.connect_and_wait(dst).await;
    assert!(established);
    // The guest reads nothing: after a while the host writer is stuck well short of the total.
    run.guest.idle(Duration::from_millis(300)).await;
    let stalled_at = written.load(Ordering::Relaxed);
    run.guest.idle(Duration::from_millis(300)).await;
    assert_eq!(
        written.load(Ordering::Relaxed),
        stalled_at,
        "host writer should be stalled"
    );
    assert!(
        stalled_at < TOTAL as u64 / 2,
        "{stalled_at} bytes accepted without a reader"
    );
    eprintln!("backpressure: host writer stalled after {stalled_at} bytes");
    // Once the guest reads, everything arrives.
    let data = run.guest.read_tcp(h, true, 0).await;
    assert_eq!(data.len(), TOTAL);
    assert!(data.iter().all(|&b| b == 7));
    writer.await.unwrap();
}

#[tokio::test]
async fn host_connect_timeout_resets_the_guest() {
    // A listener whose backlog is full drops further SYNs: the host connect hangs.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let host = socket.listen(0).unwrap();
    let dst = v4(host.local_addr().unwrap());
    let _queued = TcpStream::connect(dst).await.unwrap();
    let mut config = test_config("connect-timeout");
    config.policy.rules.push(allow_port(dst.port()));
    config.limits.tcp_connect_timeout = Duration::from_millis(300);
    let mut run = start(config).await;
    let started = tokio::time::Instant::now();
    let (_, established) = run.guest.connect_and_wait(dst).await;
    assert!(!established);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert_eq!(run.stats.snapshot().tcp_flows, 0);
}

#[tokio::test]
async fn idle_udp_flows_expire() {
    let host = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = v4(host.local_addr().unwrap());
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = host.recv_from(&mut buf).await {
            let _ = host.send_to(&buf[..n], from).await;
        }
    });
    let mut config = test_config("udp-idle");
    config.policy.rules.push(allow_port(addr.port()));
    config.limits.udp_idle_timeout = Duration::from_millis(200);
    let mut run = start(config).await;
    let (h, _) = run.guest.udp_socket();
    assert!(run.guest.udp_exchange(h, addr, b"hi", STEP).await.is_some());
    assert_eq!(run.stats.snapshot().udp_flows, 1);
    let stats = run.stats.clone();
    // The sweep runs once a second.
    assert!(
        run.guest
            .run_until(Duration::from_secs(3), |_| stats.snapshot().udp_flows == 0)
            .await
    );
    // A new datagram opens a new flow.
    assert!(run
        .guest
        .udp_exchange(h, addr, b"again", STEP)
        .await
        .is_some());
}

#[tokio::test]
async fn garbage_from_the_guest_does_not_hurt_the_stack() {
    let (_host, addr) = listener().await;
    let mut config = test_config("garbage");
    config.policy.rules.push(allow_port(addr.port()));
    config
        .dns
        .hosts
        .push(("ok.test".into(), vec!["198.51.100.1".parse().unwrap()]));
    let mut run = start(config).await;

    let mut query = Message::query();
    query.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("ok.test.").unwrap(),
        RecordType::A,
    ));
    let dns_query = query.to_vec().unwrap();
    let dns_server = SocketAddrV4::new(GATEWAY_IPV4, 53);
    let mut templates = Vec::new();
    let mut push = |build: &dyn Fn(&mut Vec<u8>)| {
        let mut b = Vec::new();
        build(&mut b);
        templates.push(b[4..].to_vec());
    };
    push(&|b| arp_for_gateway(b));
    push(&|b| syn(b, 50000, addr));
    push(&|b| syn(b, 50001, SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 80)));
    push(&|b| udp_datagram(b, 50002, dns_server, &dns_query));
    push(&|b| udp_datagram(b, 50003, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9), b"x"));

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut frames = Vec::new();
    for _ in 0..20_000 {
        let template = &templates[rng.below(templates.len())];
        let mut f = match rng.below(5) {
            0 => {
                let mut f = template.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(f.len());
                    f[i] = rng.next() as u8;
                }
                f
            }
            1 => template[..rng.below(template.len())].to_vec(),
            2 => {
                let mut f = template.clone();
                f.extend((0..rng.below(64)).map(|_| rng.next() as u8));
                f
            }
            // A well-formed datagram to the DNS server carrying a mangled message.
            3 => {
                let mut payload = dns_query.clone();
                for _ in 0..1 + rng.below(6) {
                    let i = rng.below(payload.len());
                    payload[i] = rng.next() as u8;
                }
                payload.truncate(1 + rng.below(payload.len()));
                let mut b = Vec::new();
                udp_datagram(&mut b, 50004, dns_server, &payload);
                b[4..].to_vec()
            }
            _ => (0..rng.below(1600)).map(|_| rng.next() as u8).collect(),
        };
        // Half of them addressed to the gateway, so they get past the first check.
        if rng.below(2) == 0 && f.len() >= 6 {
            f[..6].copy_from_slice(&msb_netstack::GATEWAY_MAC.0);
        }
        frames.extend_from_slice(&(f.len() as u32).to_be_bytes());
        frames.extend_from_slice(&f);
    }
    run.guest.send_raw(&frames).await;
    let stats = run.stats.clone();
    assert!(
        run.guest
            .run_until(STEP, |_| stats.snapshot().frames_in >= 20_000)
            .await
    );
    // Still serving: DNS answers and a connection works.
    assert_eq!(run.guest.resolve_a("ok.test.").await.len(), 1);
    let (_, established) = run.guest.connect_and_wait(addr).await;
    assert!(established);
    assert!(!run.stack.is_finished());
    let s = run.stats.snapshot();
    assert!(s.frames_dropped > 1000, "{s:?}");
    eprintln!("garbage: {s:?}");
}

/// A non-loopback IPv4 address of this machine's own interfaces.
fn host_ipv4() -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|interface| Some(interface.address?.as_sockaddr_in()?.ip()))
        .find(|ip| !ip.is_loopback())
}

#[tokio::test]
async fn the_hosts_own_addresses_are_the_host() {
    // Not a skip: a machine without such an address cannot check this rule.
    let ip = host_ipv4().expect("this test needs a non-loopback IPv4 address on the host");
    // A host service on one of the host's own addresses (a service bound on 0.0.0.0 answers
    // there too). The guest's traffic to it never leaves this machine.
    let service = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = v4(service.local_addr().unwrap());
    let (upstream, _) = fake_upstream().await;
    let mut config = test_config("host-addresses");
    config.dns.upstream = vec![upstream];
    let log = config.clone();
    let mut run = start(config).await;

    // public-only refuses it like loopback, whatever range the address is in (on a machine with
    // a public address, that address is otherwise "public").
    let (_, established) = run.guest.connect_and_wait(addr).await;
    assert!(!established, "{addr} is the host");
    assert!(
        tokio::time::timeout(Duration::from_millis(50), service.accept())
            .await
            .is_err()
    );
    // A name that resolves to it is refused too (DNS rebinding onto the host).
    let name = format!("{}.ip.test.", ip.to_string().replace('.', "-"));
    let reply = run.guest.resolve(&name, RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    let stats = run.stats.snapshot();
    assert_eq!(stats.peak_flows, 0, "no host socket was opened");
    assert_eq!(stats.dns_rebinding_refused, 1);
    let text = read_log(&log);
    assert!(
        text.contains(&format!(" deny tcp {addr} default public-only (host)")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            " dns-rebind dns {}={ip} default public-only (host)",
            name.trim_end_matches('.')
        )),
        "{text}"
    );

    // A rule for the address opens exactly that port (and shows the service was reachable).
    let mut config = test_config("host-addresses-rule");
    let cidr = ipnet::IpNet::from(IpAddr::V4(ip));
    config
        .policy
        .rules
        .push(Rule::allow().cidr(cidr).port(addr.port()));
    let mut run = start(config).await;
    let accept = tokio::spawn(async move { service.accept().await.is_ok() });
    let (_, established) = run.guest.connect_and_wait(addr).await;
    assert!(established);
    assert!(run.guest.run_until(STEP, |_| accept.is_finished()).await);
    let other = SocketAddrV4::new(ip, addr.port().wrapping_add(1).max(1));
    let (_, established) = run.guest.connect_and_wait(other).await;
    assert!(!established);
}

/// The public resolver the DNS tests aim at, and a rule that denies it: it keeps these tests
/// from ever sending a packet off this machine, even against a stack that let DNS through.
const PUBLIC_RESOLVER: Ipv4Addr = Ipv4Addr::new(9, 9, 9, 9);

fn deny_public_resolver() -> Rule {
    Rule::deny().cidr(ipnet::IpNet::from(IpAddr::V4(PUBLIC_RESOLVER)))
}

#[tokio::test]
async fn dns_sent_to_any_resolver_is_answered_by_the_sandbox() {
    let (upstream, queries) = fake_upstream().await;
    let (host, addr) = listener().await;
    let mut config = test_config("dns-redirect");
    config.dns.upstream = vec![upstream];
    config
        .dns
        .hosts
        .push(("app.test".into(), vec![IpAddr::V4(*addr.ip())]));
    config.policy.block_domain_suffixes = vec![".evil.test".into()];
    // The service is reachable only through a name the sandbox resolved.
    config.policy.rules = vec![
        Rule::allow().domain("app.test").port(addr.port()),
        deny_public_resolver(),
    ];
    let log = config.clone();
    let mut run = start(config).await;
    tokio::spawn(async move { while host.accept().await.is_ok() {} });

    let resolvers = [
        SocketAddrV4::new(PUBLIC_RESOLVER, 53),
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 53), 53),
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 53), 53),
    ];
    for server in resolvers {
        let (reply, from) = run
            .guest
            .resolve_via(server, "a.evil.test.", RecordType::A)
            .await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{server}"
        );
        // From the server the guest asked, or its resolver would not take the answer.
        assert_eq!(from, IpEndpoint::new(IpAddress::Ipv4(*server.ip()), 53));
    }
    assert_eq!(*queries.borrow(), 0, "a blocked name is never forwarded");
    // Other names are forwarded to the sandbox's upstream, not to the server the guest named.
    let (reply, _) = run
        .guest
        .resolve_via(resolvers[0], "public.test.", RecordType::A)
        .await;
    assert_eq!(
        reply.answers[0].data.ip_addr(),
        Some("93.184.216.34".parse().unwrap())
    );
    assert_eq!(*queries.borrow(), 1);
    // What the guest resolved through another server counts for domain rules, as it does
    // through the gateway: hard-coded, the address is refused; resolved, it is allowed.
    let (_, established) = run.guest.connect_and_wait(addr).await;
    assert!(!established);
    let (reply, _) = run
        .guest
        .resolve_via(resolvers[1], "app.test.", RecordType::A)
        .await;
    assert_eq!(
        reply.answers[0].data.ip_addr(),
        Some(IpAddr::V4(*addr.ip()))
    );
    let (_, established) = run.guest.connect_and_wait(addr).await;
    assert!(established);

    let stats = run.stats.snapshot();
    assert_eq!(stats.dns_redirected, 5);
    assert_eq!(stats.dns_blocked, 3);
    assert_eq!(stats.udp_flows, 0, "no datagram to port 53 was relayed");
    let text = read_log(&log);
    assert!(
        text.contains(" dns-block dns a.evil.test block list"),
        "{text}"
    );
}

#[tokio::test]
async fn dns_over_tcp_tls_and_quic_are_refused_and_logged() {
    let mut config = test_config("dns-bypass");
    // Loopback is allowed on every port here: only the DNS check can refuse ports 53 and 853.
    config.policy.rules = vec![
        deny_public_resolver(),
        Rule::allow().cidr("127.0.0.1/32".parse().unwrap()),
    ];
    let log = config.clone();
    let mut run = start(config).await;
    let public = PUBLIC_RESOLVER;
    let tcp = [
        (SocketAddrV4::new(public, 853), "9.9.9.9:853 dns-over-tls"),
        (
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 853),
            "127.0.0.1:853 dns-over-tls",
        ),
        (
            SocketAddrV4::new(GATEWAY_IPV4, 853),
            "127.0.0.1:853 dns-over-tls",
        ),
        (SocketAddrV4::new(public, 53), "9.9.9.9:53 dns-over-tcp"),
        (
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53),
            "127.0.0.1:53 dns-over-tcp",
        ),
        (
            SocketAddrV4::new(GATEWAY_IPV4, 53),
            "127.0.0.1:53 dns-over-tcp",
        ),
    ];
    for (dst, _) in tcp {
        let (_, established) = run.guest.connect_and_wait(dst).await;
        assert!(!established, "{dst}");
    }
    let (udp, _) = run.guest.udp_socket();
    for dst in [
        SocketAddrV4::new(public, 853),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 853),
    ] {
        let reply = run
            .guest
            .udp_exchange(udp, dst, b"quic", Duration::from_millis(100))
            .await;
        assert!(reply.is_none(), "{dst}");
    }
    let stats = run.stats.snapshot();
    assert_eq!(stats.peak_flows, 0, "not even a host connect was tried");
    assert_eq!(stats.flows_denied, tcp.len() as u64 + 2);
    let text = read_log(&log);
    for (_, line) in tcp {
        assert!(
            text.contains(&format!(" deny tcp {line}\n")),
            "{line} in:\n{text}"
        );
    }
    for line in ["9.9.9.9:853 dns-over-quic", "127.0.0.1:853 dns-over-quic"] {
        assert!(
            text.contains(&format!(" deny udp {line}\n")),
            "{line} in:\n{text}"
        );
    }
}

#[tokio::test]
async fn oversized_frames_are_dropped_and_counted_and_the_stack_keeps_serving() {
    let (host, addr) = listener().await;
    let mut config = test_config("oversized");
    config.policy.rules.push(allow_port(addr.port()));
    config
        .dns
        .hosts
        .push(("ok.test".into(), vec!["198.51.100.1".parse().unwrap()]));
    let mut run = start(config).await;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = host.accept().await {
            let _ = stream.write_all(b"still here").await;
        }
    });

    let mut frames = Vec::new();
    arp_for_gateway(&mut frames);
    // `ping -s 65507 100.96.0.1` from a guest that set its MTU to 65535: a 65535-byte IPv4
    // packet, a 65549-byte frame, longer than the link buffers.
    icmp_echo(&mut frames, GATEWAY_IPV4, 65_507);
    // One byte over the stack's MTU, within what the link buffers.
    icmp_echo(&mut frames, GATEWAY_IPV4, MTU - 28 + 1);
    // Far longer than any frame: skipped as it streams in.
    frame(&mut frames, 1 << 20, |buf| buf.fill(0xab));
    // The largest ping the MTU allows is still answered.
    icmp_echo(&mut frames, GATEWAY_IPV4, MTU - 28);
    run.guest.send_raw(&frames).await;
    let stats = run.stats.clone();
    assert!(
        run.guest
            .run_until(STEP, |_| stats.snapshot().frames_in >= 5)
            .await
    );
    let s = run.stats.snapshot();
    assert_eq!(s.frames_oversized, 3, "{s:?}");
    assert!(s.frames_dropped >= 3, "{s:?}");
    // ARP reply and the echo reply.
    assert!(s.frames_out >= 2, "{s:?}");

    // Still serving: DNS answers and a connection carries data.
    assert_eq!(run.guest.resolve_a("ok.test.").await.len(), 1);
    let (h, established) = run.guest.connect_and_wait(addr).await;
    assert!(established);
    assert_eq!(run.guest.read_tcp(h, false, 10).await, b"still here");
    assert!(!run.stack.is_finished());
}
