//! A guest that floods the stack with connection attempts must not make the host hold more than
//! the limits allow. In a binary of its own, because it counts the process's file descriptors.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use msb_netstack::{NetStack, Rule};
use smoltcp::wire::{EthernetFrame, EthernetProtocol, Ipv4Packet, TcpPacket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ATTEMPTS: u16 = 10_000;
const MAX_FLOWS: usize = 64;

#[derive(Default)]
struct Replies {
    resets: AtomicU64,
    syn_acks: AtomicU64,
}

#[tokio::test]
async fn ten_thousand_syns_stay_within_the_flow_limit() {
    // The host peer accepts nothing: its kernel completes handshakes into the backlog, so the
    // test process's own fd count only reflects what the stack opens.
    let host = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dst = v4(host.local_addr().unwrap());
    let mut config = test_config("flood");
    config.policy.rules.push(
        Rule::allow()
            .cidr("127.0.0.1/32".parse().unwrap())
            .port(dst.port()),
    );
    config.limits.max_flows = MAX_FLOWS;
    let log_path = config.log_path.clone().unwrap();
    let max_log = config.limits.max_log_bytes;
    let stack = NetStack::new(config).await.unwrap();
    let stats = stack.stats();
    let (guest_end, stack_end) = tokio::io::duplex(1 << 20);
    let (mut from_stack, mut to_stack) = tokio::io::split(guest_end);

    let fds_before = fd_count();
    let rss_before = rss_kib();
    let started = std::time::Instant::now();
    let stack = tokio::spawn(stack.run(stack_end));

    let replies = Arc::new(Replies::default());
    let counted = Arc::clone(&replies);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        loop {
            if from_stack.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
            while buf.len() >= 4 {
                let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if buf.len() < 4 + len {
                    break;
                }
                let eth = EthernetFrame::new_unchecked(&buf[4..4 + len]);
                if eth.ethertype() == EthernetProtocol::Ipv4 {
                    let ip = Ipv4Packet::new_unchecked(eth.payload());
                    let tcp = TcpPacket::new_unchecked(ip.payload());
                    if tcp.rst() {
                        counted.resets.fetch_add(1, Ordering::Relaxed);
                    } else if tcp.syn() && tcp.ack() {
                        counted.syn_acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                buf.drain(..4 + len);
            }
        }
    });

    let mut frames = Vec::new();
    arp_for_gateway(&mut frames);
    for i in 0..ATTEMPTS {
        syn(&mut frames, 1024 + i, dst);
    }
    let mut max_fds = fds_before;
    for chunk in frames.chunks(64 * 1024) {
        to_stack.write_all(chunk).await.unwrap();
        max_fds = max_fds.max(fd_count());
    }

    let expected_refusals = u64::from(ATTEMPTS) - MAX_FLOWS as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        max_fds = max_fds.max(fd_count());
        let s = stats.snapshot();
        assert!(s.tcp_flows <= MAX_FLOWS as u64, "{s:?}");
        if s.flows_refused_limit >= expected_refusals
            && replies.resets.load(Ordering::Relaxed) >= expected_refusals
            && replies.syn_acks.load(Ordering::Relaxed) >= MAX_FLOWS as u64
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flood not absorbed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let s = stats.snapshot();
    let rss_after = rss_kib();
    eprintln!(
        "flood: {ATTEMPTS} SYNs absorbed in {elapsed:?}; flows peak {} (limit {MAX_FLOWS}), \
         refused {}, resets sent {}, SYN-ACKs {}; fds {fds_before} -> max {max_fds}; \
         RSS {rss_before} KiB -> {rss_after} KiB",
        s.peak_flows,
        s.flows_refused_limit,
        replies.resets.load(Ordering::Relaxed),
        replies.syn_acks.load(Ordering::Relaxed),
    );
    assert_eq!(s.peak_flows, MAX_FLOWS as u64);
    assert_eq!(s.flows_refused_limit, expected_refusals);
    assert!(
        max_fds <= fds_before + MAX_FLOWS + 4,
        "fds grew from {fds_before} to {max_fds}"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The log says why, and stays within its cap.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains(&format!(" limit tcp {dst} limits.max_flows")),
        "{log}"
    );
    assert!(std::fs::metadata(&log_path).unwrap().len() <= max_log);
    assert!(!stack.is_finished());
}
