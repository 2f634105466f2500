//! The DNS server the guest uses: UDP port 53 of the gateway address, and of every other address
//! too. A query the guest sends to another resolver (`nslookup name 9.9.9.9`) is answered here
//! all the same, from the address it was sent to, so block lists and domain rules hold whichever
//! server the guest asks (see `enforce` for DNS over TCP, TLS and QUIC).
//!
//! Each query is answered in this order:
//! 1. A malformed query gets FORMERR (or nothing, if even the header is unreadable); anything
//!    but a standard query with exactly one question gets NOTIMP or FORMERR.
//! 2. A name blocked by `block_domains` / `block_domain_suffixes` gets **NXDOMAIN**, logged.
//! 3. A name in the hosts table is answered locally (A and AAAA records; other types get an
//!    empty NOERROR answer).
//! 4. Under policy `none` nothing is forwarded: **REFUSED**, logged.
//! 5. Otherwise the question (never the guest's raw bytes) is forwarded from a fresh host UDP
//!    socket with a new random id, to each upstream server in turn with a per-server timeout.
//!    At most `max_dns_inflight` queries are in flight; beyond that, and when every server
//!    fails, the guest gets SERVFAIL.
//!
//! An upstream answer is checked before the guest sees it: its id and question must match;
//! a CNAME chain that leads to a blocked name gives **NXDOMAIN**; an A or AAAA record whose
//! address the policy would never let the guest reach ([`crate::PolicyEval::admits_answer`]) makes the
//! whole answer **SERVFAIL** (DNS rebinding protection; SERVFAIL rather than NXDOMAIN because the
//! name may well exist: the stack just will not vouch for it), logged. Addresses that pass are
//! recorded with the names of the chain, which is what domain rules match on.
//!
//! Answers are capped at the guest's advertised UDP size (512 without EDNS) and at one frame;
//! longer ones are truncated (TC set). DNS over TCP is not served (and refused: see `enforce`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

use crate::enforce::Enforcer;
use crate::netlog::EventKind;
use crate::packet::MAX_UDP_PAYLOAD;
use crate::policy::{normalize_name, PolicyEval, PolicyKind};
use crate::stats::Counters;
use crate::DnsConfig;

/// TTL of answers from the hosts table.
const HOSTS_TTL: u32 = 60;
/// The EDNS payload size the stack advertises upstream and to the guest: fits one frame.
const EDNS_PAYLOAD: u16 = 1232;
/// CNAME chains longer than this are not followed further.
const MAX_CHAIN: usize = 16;

/// Who asked: the reply goes from `server` (the address the guest sent the query to: the gateway,
/// or the resolver it tried to reach) to the guest's `guest_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Client {
    pub(crate) guest_port: u16,
    pub(crate) server: SocketAddrV4,
}

/// An upstream exchange that has finished, successfully or not.
pub(crate) struct Forwarded {
    pub(crate) client: Client,
    request: Message,
    upstream_id: u16,
    result: Result<Vec<u8>, ForwardError>,
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("no upstream server answered in time")]
    Timeout,
    #[error("upstream DNS I/O failed")]
    Io(#[source] io::Error),
}

pub(crate) struct DnsServer {
    hosts: HashMap<String, Vec<IpAddr>>,
    upstream: Arc<[SocketAddr]>,
    timeout: Duration,
    max_inflight: usize,
    inflight: FuturesUnordered<BoxFuture<'static, Forwarded>>,
}

impl DnsServer {
    pub(crate) fn new(config: &DnsConfig, timeout: Duration, max_inflight: usize) -> DnsServer {
        let mut hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, addrs) in &config.hosts {
            hosts
                .entry(normalize_name(name))
                .or_default()
                .extend(addrs.iter().copied());
        }
        DnsServer {
            hosts,
            upstream: config.upstream.clone().into(),
            timeout,
            max_inflight,
            inflight: FuturesUnordered::new(),
        }
    }

    /// Handles a query from `client`. Returns the reply when it is known now; `None` when the
    /// query was forwarded (see [`DnsServer::poll_forwarded`]) or dropped.
    pub(crate) fn on_query(
        &mut self,
        enforcer: &mut Enforcer,
        client: Client,
        payload: &[u8],
        now: Instant,
    ) -> Option<Vec<u8>> {
        Counters::add(&enforcer.stats.dns_queries, 1);
        let request = match Message::from_vec(payload) {
            Ok(request) => request,
            Err(_) => {
                let id = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
                let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return reply.to_vec().ok();
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        if request.metadata.op_code != OpCode::Query {
            return encode(reply_to(&request, ResponseCode::NotImp), &request);
        }
        let [question] = request.queries.as_slice() else {
            return encode(reply_to(&request, ResponseCode::FormErr), &request);
        };
        let name = normalize_name(&question.name().to_ascii());
        if enforcer.policy.blocks_name(&name) {
            Counters::add(&enforcer.stats.dns_blocked, 1);
            enforcer.record_dns(EventKind::DnsBlock, &name, &"block list");
            return encode(reply_to(&request, ResponseCode::NXDomain), &request);
        }
        if let Some(addrs) = self.hosts.get(&name) {
            let mut reply = reply_to(&request, ResponseCode::NoError);
            reply.metadata.authoritative = true;
            for &ip in addrs {
                let data = match (ip, question.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                    _ => continue,
                };
                enforcer
                    .names
                    .insert(ip, &name, Duration::from_secs(HOSTS_TTL.into()), now);
                reply
                    .answers
                    .push(Record::from_rdata(question.name().clone(), HOSTS_TTL, data));
            }
            return encode(reply, &request);
        }
        if enforcer.policy.default == PolicyKind::None {
            enforcer.record_dns(EventKind::DnsRefused, &name, &"default none");
            return encode(reply_to(&request, ResponseCode::Refused), &request);
        }
        if self.upstream.is_empty() || self.inflight.len() >= self.max_inflight {
            return encode(reply_to(&request, ResponseCode::ServFail), &request);
        }
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.metadata.checking_disabled = request.metadata.checking_disabled;
        query.add_query(question.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        query.set_edns(edns);
        let Ok(bytes) = query.to_vec() else {
            return encode(reply_to(&request, ResponseCode::ServFail), &request);
        };
        let upstream_id = query.metadata.id;
        let servers = Arc::clone(&self.upstream);
        let timeout = self.timeout;
        self.inflight.push(Box::pin(async move {
            let result = forward(&servers, &bytes, upstream_id, timeout).await;
            Forwarded {
                client,
                request,
                upstream_id,
                result,
            }
        }));
        None
    }

    /// The next finished upstream exchange. Registers the caller's waker when there is none.
    pub(crate) fn poll_forwarded(&mut self, cx: &mut Context<'_>) -> Poll<Forwarded> {
        match self.inflight.poll_next_unpin(cx) {
            Poll::Ready(Some(done)) => Poll::Ready(done),
            // An empty set is "done" for FuturesUnordered; for us it is "nothing yet". A query
            // pushed later is polled because the stack loops after on_query.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// Checks an upstream answer and builds the reply for the guest.
    pub(crate) fn finish(
        &self,
        enforcer: &mut Enforcer,
        forwarded: Forwarded,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let request = &forwarded.request;
        let question = request.queries.first()?;
        let answer = match forwarded.result {
            Ok(bytes) => Message::from_vec(&bytes).ok(),
            Err(error) => {
                tracing::debug!(%error, name = %question.name(), "dns forward failed");
                None
            }
        };
        let Some(answer) = answer.filter(|answer| {
            answer.metadata.id == forwarded.upstream_id
                && answer.metadata.message_type == MessageType::Response
                && answer.queries.len() == 1
                && same_question(&answer.queries[0], question)
        }) else {
            return encode(reply_to(request, ResponseCode::ServFail), request);
        };
        let code = answer.metadata.response_code;
        if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
            return encode(reply_to(request, code), request);
        }
        let chain = cname_chain(question, &answer.answers);
        if let Some(blocked) = chain.iter().find(|n| enforcer.policy.blocks_name(n)) {
            Counters::add(&enforcer.stats.dns_blocked, 1);
            enforcer.record_dns(
                EventKind::DnsBlock,
                blocked,
                &format_args!("block list (alias of {})", chain[0]),
            );
            return encode(reply_to(request, ResponseCode::NXDomain), request);
        }
        for record in &answer.answers {
            let Some(ip) = record.data.ip_addr() else {
                continue;
            };
            let decision = enforcer.admits_answer(ip, &chain, now);
            if !decision.is_allowed() {
                Counters::add(&enforcer.stats.dns_rebinding_refused, 1);
                enforcer.record_dns(
                    EventKind::DnsRebind,
                    &format_args!("{}={ip}", chain[0]),
                    &decision.reason,
                );
                return encode(reply_to(request, ResponseCode::ServFail), request);
            }
        }
        for record in &answer.answers {
            let Some(ip) = record.data.ip_addr() else {
                continue;
            };
            if chain.contains(&normalize_name(&record.name.to_ascii())) {
                let ttl = Duration::from_secs(record.ttl.into());
                for name in &chain {
                    enforcer.names.insert(ip, name, ttl, now);
                }
            }
        }
        let mut reply = reply_to(request, code);
        reply.metadata.truncation = answer.metadata.truncation;
        reply.answers = answer.answers;
        // The authority section carries the SOA that negative answers are cached by. The
        // additional section is dropped: stub resolvers do not need it, and it is where
        // unrelated addresses would travel past the checks above.
        reply.authorities = answer.authorities;
        encode(reply, request)
    }
}

/// The normalized names of the question and every alias (CNAME) that leads from it.
fn cname_chain(question: &Query, answers: &[Record]) -> Vec<String> {
    let mut chain = vec![normalize_name(&question.name().to_ascii())];
    for _ in 0..MAX_CHAIN {
        let next = answers.iter().find_map(|record| match &record.data {
            RData::CNAME(target) if chain.contains(&normalize_name(&record.name.to_ascii())) => {
                let target = normalize_name(&target.0.to_ascii());
                (!chain.contains(&target)).then_some(target)
            }
            _ => None,
        });
        match next {
            Some(target) => chain.push(target),
            None => break,
        }
    }
    chain
}

fn same_question(a: &Query, b: &Query) -> bool {
    a.query_type() == b.query_type()
        && a.query_class() == b.query_class()
        && normalize_name(&a.name().to_ascii()) == normalize_name(&b.name().to_ascii())
}

/// A response to `request` with its question, flags copied as RFC 6895 says, and `code`.
fn reply_to(request: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.checking_disabled = request.metadata.checking_disabled;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = code;
    reply.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        reply.set_edns(edns);
    }
    reply
}

/// Serializes a reply within the guest's UDP limit, truncating (TC) when it does not fit.
fn encode(reply: Message, request: &Message) -> Option<Vec<u8>> {
    let limit = usize::from(request.max_payload().max(512)).min(MAX_UDP_PAYLOAD);
    let bytes = reply.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    reply.truncate().to_vec().ok()
}

async fn forward(
    servers: &[SocketAddr],
    query: &[u8],
    id: u16,
    per_server: Duration,
) -> Result<Vec<u8>, ForwardError> {
    let mut last = ForwardError::Timeout;
    for &server in servers {
        match tokio::time::timeout(per_server, ask(server, query, id)).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(error)) => last = ForwardError::Io(error),
            Err(_) => last = ForwardError::Timeout,
        }
    }
    Err(last)
}

/// One exchange with one server, from a fresh socket (a new random source port each time).
async fn ask(server: SocketAddr, query: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0; 4096];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything that is not the reply to this id is ignored (stray or spoofed).
        if n >= 12 && buf[..2] == id.to_be_bytes() {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostaddrs::HostAddrs;
    use crate::names::ResolvedNames;
    use crate::netlog::NetLog;
    use crate::policy::Policy;
    use hickory_proto::rr::rdata::CNAME;
    use hickory_proto::rr::Name;

    fn enforcer(policy: Policy) -> Enforcer {
        Enforcer {
            policy,
            names: ResolvedNames::new(16),
            host: HostAddrs::new(Instant::now()).unwrap(),
            log: NetLog::open(None, 4096).unwrap(),
            stats: Arc::default(),
        }
    }

    fn client(guest_port: u16) -> Client {
        Client {
            guest_port,
            server: SocketAddrV4::new(crate::GATEWAY_IPV4, 53),
        }
    }

    fn query(name: &str, kind: RecordType) -> Message {
        let mut q = Message::query();
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        q
    }

    fn server(hosts: Vec<(String, Vec<IpAddr>)>) -> DnsServer {
        let config = DnsConfig {
            hosts,
            upstream: vec![],
        };
        DnsServer::new(&config, Duration::from_secs(1), 4)
    }

    #[test]
    fn hosts_blocks_and_refusals() {
        let mut dns = server(vec![(
            "Web.Test".into(),
            vec![
                "198.51.100.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ],
        )]);
        let mut enf = enforcer(Policy {
            block_domain_suffixes: vec![".evil.test".into()],
            ..Policy::default()
        });
        let now = Instant::now();
        let ask = |dns: &mut DnsServer, enf: &mut Enforcer, name: &str, kind| {
            let q = query(name, kind);
            let reply = dns
                .on_query(enf, client(1000), &q.to_vec().unwrap(), now)
                .unwrap();
            let reply = Message::from_vec(&reply).unwrap();
            assert_eq!(reply.metadata.id, q.metadata.id);
            reply
        };
        let reply = ask(&mut dns, &mut enf, "web.test.", RecordType::A);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(
            reply.answers[0].data.ip_addr(),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            enf.names.lookup("198.51.100.7".parse().unwrap(), now),
            vec!["web.test".to_string()]
        );
        let reply = ask(&mut dns, &mut enf, "web.test.", RecordType::AAAA);
        assert_eq!(reply.answers.len(), 1);
        let reply = ask(&mut dns, &mut enf, "web.test.", RecordType::MX);
        assert!(reply.answers.is_empty());
        for blocked in ["evil.test.", "a.b.evil.test."] {
            let reply = ask(&mut dns, &mut enf, blocked, RecordType::A);
            assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        }
        assert_eq!(
            enf.stats
                .dns_blocked
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        // No upstream: SERVFAIL.
        let reply = ask(&mut dns, &mut enf, "other.test.", RecordType::A);
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        // Policy none: REFUSED, but the hosts table still answers.
        enf.policy.default = PolicyKind::None;
        let reply = ask(&mut dns, &mut enf, "other.test.", RecordType::A);
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
        let reply = ask(&mut dns, &mut enf, "web.test.", RecordType::A);
        assert_eq!(reply.answers.len(), 1);
    }

    #[test]
    fn malformed_queries() {
        let mut dns = server(vec![]);
        let mut enf = enforcer(Policy::default());
        let now = Instant::now();
        assert!(dns.on_query(&mut enf, client(1), &[], now).is_none());
        let reply = dns
            .on_query(&mut enf, client(1), &[0x12, 0x34, 0xff], now)
            .unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        // Two questions.
        let mut q = query("a.test.", RecordType::A);
        q.add_query(Query::query(
            Name::from_ascii("b.test.").unwrap(),
            RecordType::A,
        ));
        let reply = dns
            .on_query(&mut enf, client(1), &q.to_vec().unwrap(), now)
            .unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        // A response sent to the server is ignored.
        let r = Message::response(7, OpCode::Query);
        assert!(dns
            .on_query(&mut enf, client(1), &r.to_vec().unwrap(), now)
            .is_none());
    }

    fn upstream_answer(q: &Message, id: u16, records: Vec<Record>) -> Forwarded {
        let mut answer = Message::response(id, OpCode::Query);
        answer.queries = q.queries.clone();
        answer.answers = records;
        Forwarded {
            client: client(1),
            request: q.clone(),
            upstream_id: id,
            result: Ok(answer.to_vec().unwrap()),
        }
    }

    #[test]
    fn answers_are_vetted() {
        let dns = server(vec![]);
        let mut enf = enforcer(Policy {
            block_domain_suffixes: vec!["evil.test".into()],
            ..Policy::default()
        });
        let now = Instant::now();
        let name = Name::from_ascii("www.example.").unwrap();
        let cdn = Name::from_ascii("edge.cdn.example.").unwrap();
        let q = query("www.example.", RecordType::A);
        let a = |owner: &Name, ip: &str| {
            Record::from_rdata(owner.clone(), 300, RData::A(A(ip.parse().unwrap())))
        };
        let alias = Record::from_rdata(name.clone(), 300, RData::CNAME(CNAME(cdn.clone())));

        // A public answer through a CNAME: passed on, and both names recorded for the address.
        let fwd = upstream_answer(&q, 9, vec![alias.clone(), a(&cdn, "93.184.216.34")]);
        let reply = Message::from_vec(&dns.finish(&mut enf, fwd, now).unwrap()).unwrap();
        assert_eq!(reply.metadata.id, q.metadata.id);
        assert_eq!(reply.answers.len(), 2);
        let mut names = enf.names.lookup("93.184.216.34".parse().unwrap(), now);
        names.sort();
        assert_eq!(names, vec!["edge.cdn.example", "www.example"]);

        // Rebinding: a private address in the answer.
        let fwd = upstream_answer(&q, 9, vec![a(&name, "127.0.0.1")]);
        let reply = Message::from_vec(&dns.finish(&mut enf, fwd, now).unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert!(reply.answers.is_empty());
        assert!(enf
            .names
            .lookup("127.0.0.1".parse().unwrap(), now)
            .is_empty());

        // An alias into a blocked suffix.
        let evil = Name::from_ascii("x.evil.test.").unwrap();
        let to_evil = Record::from_rdata(name.clone(), 300, RData::CNAME(CNAME(evil.clone())));
        let fwd = upstream_answer(&q, 9, vec![to_evil, a(&evil, "93.184.216.35")]);
        let reply = Message::from_vec(&dns.finish(&mut enf, fwd, now).unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

        // Wrong id, or a different question: SERVFAIL.
        let mut fwd = upstream_answer(&q, 9, vec![a(&name, "93.184.216.34")]);
        fwd.upstream_id = 10;
        let reply = Message::from_vec(&dns.finish(&mut enf, fwd, now).unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        let other = query("other.example.", RecordType::A);
        let mut fwd = upstream_answer(&other, 9, vec![]);
        fwd.request = q.clone();
        let reply = Message::from_vec(&dns.finish(&mut enf, fwd, now).unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn long_answers_are_truncated() {
        let dns = server(vec![]);
        let mut enf = enforcer(Policy::default());
        let q = query("many.example.", RecordType::A);
        let owner = Name::from_ascii("many.example.").unwrap();
        let records = (0..100u8)
            .map(|i| Record::from_rdata(owner.clone(), 60, RData::A(A(Ipv4Addr::new(93, 1, 1, i)))))
            .collect();
        let fwd = upstream_answer(&q, 3, records);
        let bytes = dns.finish(&mut enf, fwd, Instant::now()).unwrap();
        assert!(bytes.len() <= 512);
        assert!(Message::from_vec(&bytes).unwrap().metadata.truncation);
    }
}
