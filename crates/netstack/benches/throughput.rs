//! Throughput and connection setup through the stack, with the simulated guest of the tests (a
//! smoltcp interface on the same thread) and real host sockets on 127.0.0.1.
//!
//! This measures the stack's own cost, not a VM: the guest side here is another smoltcp, so
//! the numbers bound what the stack can carry on one core. `cargo bench -p msb-netstack`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use msb_netstack::Rule;
use smoltcp::socket::tcp::State;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BULK: usize = 256 << 20;
const CONNECTS: usize = 200;

async fn setup() -> (Running, TcpListener, std::net::SocketAddrV4) {
    let host = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = v4(host.local_addr().unwrap());
    let mut config = test_config("bench");
    config.policy.rules.push(
        Rule::allow()
            .cidr("127.0.0.1/32".parse().unwrap())
            .port(addr.port()),
    );
    (start(config).await, host, addr)
}

fn mbps(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

async fn guest_to_host() {
    let (mut run, host, addr) = setup().await;
    let sink = tokio::spawn(async move {
        let (mut stream, _) = host.accept().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    });
    let (h, ok) = run.guest.connect_and_wait(addr).await;
    assert!(ok);
    let chunk = vec![0x5a; 64 * 1024];
    let started = Instant::now();
    let mut sent = 0;
    run.guest
        .run_until(Duration::from_secs(120), |g| {
            let socket = g.tcp(h);
            while sent < BULK && socket.can_send() {
                let end = (BULK - sent).min(chunk.len());
                sent += socket.send_slice(&chunk[..end]).unwrap();
            }
            if sent == BULK && socket.state() == State::Established {
                socket.close();
            }
            sent == BULK && socket.send_queue() == 0
        })
        .await;
    run.guest
        .run_until(Duration::from_secs(30), |_| sink.is_finished())
        .await;
    let received = sink.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(received, BULK);
    println!(
        "guest -> host: {} MiB in {elapsed:.2?}: {:.0} MB/s",
        BULK >> 20,
        mbps(BULK, elapsed)
    );
}

async fn host_to_guest() {
    let (mut run, host, addr) = setup().await;
    tokio::spawn(async move {
        let (mut stream, _) = host.accept().await.unwrap();
        let chunk = vec![0xa5u8; 256 * 1024];
        for _ in 0..BULK / chunk.len() {
            stream.write_all(&chunk).await.unwrap();
        }
        stream.shutdown().await.unwrap();
    });
    let (h, ok) = run.guest.connect_and_wait(addr).await;
    assert!(ok);
    let started = Instant::now();
    let mut received = 0;
    run.guest
        .run_until(Duration::from_secs(120), |g| {
            let socket = g.tcp(h);
            while socket.can_recv() {
                received += socket.recv(|buf| (buf.len(), buf.len())).unwrap();
            }
            !socket.may_recv()
        })
        .await;
    let elapsed = started.elapsed();
    assert_eq!(received, BULK);
    println!(
        "host -> guest: {} MiB in {elapsed:.2?}: {:.0} MB/s",
        BULK >> 20,
        mbps(BULK, elapsed)
    );
}

async fn connect_latency() {
    let (mut run, host, addr) = setup().await;
    tokio::spawn(async move {
        while let Ok((s, _)) = host.accept().await {
            drop(s)
        }
    });
    let mut samples = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        let started = Instant::now();
        let (h, ok) = run.guest.connect_and_wait(addr).await;
        samples.push(started.elapsed());
        assert!(ok);
        run.guest.tcp(h).abort();
        run.guest.sockets.remove(h);
    }
    samples.sort();
    println!(
        "connect (guest SYN to established, host connect included): median {:?}, p99 {:?}",
        samples[CONNECTS / 2],
        samples[CONNECTS * 99 / 100]
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        guest_to_host().await;
        host_to_guest().await;
        connect_latency().await;
    });
}
