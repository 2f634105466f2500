//! A stack with TLS interception for secrets (see `intercept` in the crate): flows that are not
//! TLS to a secret's host are relayed byte for byte as before, and a ClientHello naming a
//! secret's host at an address the sandbox did not resolve from that name is reset and logged.
//! The interception itself (TLS both ways, substitution) is tested in `msb-secrets` and end to
//! end in `__test__/netns/secrets.e2e.test.ts`.

mod common;

use std::net::SocketAddrV4;
use std::sync::Arc;

use common::*;
use msb_control::secrets::{InterceptMode, OnViolation, SecretEnv, SecretLocation, SecretValue};
use msb_netstack::{Interception, NetConfig, NetStack, Rule};
use msb_secrets::{upstream_client_config, Interceptor, SandboxCa, Secrets, UpstreamTrust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET_HOST: &str = "api.example.test";

fn interception() -> Interception {
    let secrets = Secrets::new(vec![SecretEnv {
        name: "K".into(),
        value: SecretValue::new("sk-never-seen"),
        domains: vec![SECRET_HOST.into()],
        placeholder: None,
        locations: vec![SecretLocation::Headers],
        on_violation: OnViolation::BlockAndLog,
        require_tls: true,
    }])
    .unwrap();
    let ca = SandboxCa::generate().unwrap();
    let upstream = upstream_client_config(&UpstreamTrust {
        native_roots: false,
        extra_ca_pems: vec![ca.cert_pem().to_owned()],
    })
    .unwrap();
    Interception {
        interceptor: Interceptor::new(Arc::new(secrets), Arc::new(ca), upstream),
        mode: InterceptMode::SecretsOnly,
        bypass_domains: vec![],
        kill: mpsc::channel(1).0,
    }
}

/// A minimal TLS 1.2/1.3 ClientHello record with a server name.
fn client_hello(name: &str) -> Vec<u8> {
    let name = name.as_bytes();
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes()); // server name list
    sni.push(0); // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut extensions = vec![0, 0]; // server_name
    extensions.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&sni);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

async fn start_intercepting(config: NetConfig) -> Running {
    let stack = NetStack::new(config)
        .await
        .unwrap()
        .with_interception(interception());
    let stats = stack.stats();
    let (guest_end, stack_end) = tokio::io::duplex(4 << 20);
    Running {
        guest: Guest::new(guest_end),
        stats,
        stack: tokio::spawn(stack.run(stack_end)),
        published: vec![],
    }
}

async fn listener() -> (TcpListener, SocketAddrV4) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = v4(listener.local_addr().unwrap());
    (listener, addr)
}

fn allow(addr: SocketAddrV4) -> Rule {
    Rule::allow()
        .cidr("127.0.0.1/32".parse().unwrap())
        .port(addr.port())
}

#[tokio::test]
async fn flows_not_intercepted_are_relayed_unchanged() {
    let (host, addr) = listener().await;
    let mut config = test_config("intercept-plain");
    config.policy.rules.push(allow(addr));
    let mut run = start_intercepting(config).await;
    let hello = client_hello("other.example.test");
    let expected = [b"plain bytes".to_vec(), hello.clone()];
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        // A server that speaks first, then echoes what it got.
        for _ in 0..2 {
            let (mut stream, _) = host.accept().await.unwrap();
            stream.write_all(b"banner\n").await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            stream.write_all(&got).await.unwrap();
            stream.shutdown().await.unwrap();
            seen.push(got);
        }
        seen
    });
    let guest = &mut run.guest;
    for payload in &expected {
        let (h, established) = guest.connect_and_wait(addr).await;
        assert!(established);
        assert_eq!(guest.read_tcp(h, false, 7).await, b"banner\n");
        guest.write_tcp(h, payload).await;
        guest.tcp(h).close();
        let echoed = guest.read_tcp(h, true, 0).await;
        assert_eq!(&echoed, payload);
    }
    assert!(guest.run_until(STEP, |_| server.is_finished()).await);
    assert_eq!(server.await.unwrap(), expected);
}

#[tokio::test]
async fn a_secret_host_at_an_address_not_resolved_from_it_is_reset_and_logged() {
    let (host, addr) = listener().await;
    let mut config = test_config("intercept-unresolved");
    config.policy.rules.push(allow(addr));
    let log = config.clone();
    let mut run = start_intercepting(config).await;
    let server = tokio::spawn(async move {
        let (mut stream, _) = host.accept().await.unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got).await;
        got
    });
    let guest = &mut run.guest;
    let (h, established) = guest.connect_and_wait(addr).await;
    assert!(established);
    guest.write_tcp(h, &client_hello(SECRET_HOST)).await;
    let reset = guest
        .run_until(STEP, |g| {
            g.tcp(h).state() == smoltcp::socket::tcp::State::Closed
        })
        .await;
    assert!(reset, "the flow was not reset");
    assert!(guest.run_until(STEP, |_| server.is_finished()).await);
    assert!(server.await.unwrap().is_empty(), "the host got bytes");
    let text = read_log(&log);
    assert!(
        text.contains(&format!(
            " secret tls {SECRET_HOST}:{} 127.0.0.1 was not resolved from this name",
            addr.port()
        )),
        "{text}"
    );
}
