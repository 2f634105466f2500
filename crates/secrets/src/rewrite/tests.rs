//! The rewriter's rules, one behaviour per test; `check_splits` feeds each input cut at
//! every byte boundary.

use super::*;
use msb_control::secrets::{SecretEnv, SecretValue};

const P: &str = "msb_secret_KEY_0123456789abcdefghijklmn";
const V: &str = "sk-REAL+value/&\"x";
const Q: &str = "msb_secret_OTHER_ABCDEFGHIJKLMNOPQRSTUVWX";
const HOST: &str = "api.example.com";

fn spec(locations: &[SecretLocation]) -> SecretEnv {
    SecretEnv {
        name: "KEY".into(),
        value: SecretValue::new(V),
        domains: vec![HOST.into()],
        placeholder: Some(P.into()),
        locations: locations.to_vec(),
        on_violation: OnViolation::BlockAndLog,
        require_tls: true,
    }
}

fn other() -> SecretEnv {
    SecretEnv {
        name: "OTHER".into(),
        value: SecretValue::new("other-value"),
        domains: vec!["*.other.example".into()],
        placeholder: Some(Q.into()),
        locations: vec![SecretLocation::Headers],
        on_violation: OnViolation::BlockAndKill,
        require_tls: true,
    }
}

fn secrets(locations: &[SecretLocation]) -> Arc<Secrets> {
    Arc::new(Secrets::new(vec![spec(locations), other()]).unwrap())
}

fn default_secrets() -> Arc<Secrets> {
    secrets(&[SecretLocation::Headers, SecretLocation::BasicAuth])
}

/// Feeds `input` cut at `cuts` (sorted positions), then finishes.
fn run_cuts(
    secrets: &Arc<Secrets>,
    host: &str,
    input: &[u8],
    cuts: &[usize],
) -> Result<Vec<u8>, RewriteError> {
    let mut rw = RequestRewriter::new(secrets.clone(), host, true, Limits::default());
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        rw.feed(&input[start..cut], &mut out)?;
        start = cut;
    }
    rw.finish(&mut out)?;
    Ok(out)
}

fn run(secrets: &Arc<Secrets>, host: &str, input: &str) -> Result<String, RewriteError> {
    run_cuts(secrets, host, input.as_bytes(), &[]).map(|o| String::from_utf8(o).unwrap())
}

fn violation(result: Result<String, RewriteError>) -> Violation {
    match result {
        Err(RewriteError::Violation(v)) => {
            let shown = format!("{v} {v:?}");
            assert!(!shown.contains(V), "value in {shown}");
            v
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

fn get(headers: &str) -> String {
    format!("GET /v1/x HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n")
}

#[test]
fn header_placeholder_replaced_for_allowed_host() {
    let out = run(
        &default_secrets(),
        HOST,
        &get(&format!("Authorization: Bearer {P}\r\n")),
    )
    .unwrap();
    assert_eq!(out, get(&format!("Authorization: Bearer {V}\r\n")));
    // Several in one header, and in several headers.
    let out = run(
        &default_secrets(),
        "API.example.COM.",
        &get(&format!("X-A: {P},{P}\r\nX-B: {P}\r\n")),
    )
    .unwrap();
    assert_eq!(out, get(&format!("X-A: {V},{V}\r\nX-B: {V}\r\n")));
}

#[test]
fn traffic_without_placeholders_passes_unchanged() {
    let req = format!(
        "POST /a?b=c HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    );
    assert_eq!(run(&default_secrets(), HOST, &req).unwrap(), req);
    // And to any other host.
    let req = "GET / HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n";
    assert_eq!(
        run(&default_secrets(), "elsewhere.example", req).unwrap(),
        req
    );
}

#[test]
fn placeholder_to_other_host_is_violation() {
    let req = format!("GET / HTTP/1.1\r\nHost: evil.example\r\nX-Key: {P}\r\n\r\n");
    let v = violation(run(&default_secrets(), "evil.example", &req));
    assert_eq!(v.secret, "KEY");
    assert_eq!(v.reason, Reason::HostNotAllowed);
    assert_eq!(v.location, FoundIn::Header);
    assert_eq!(v.form, Form::Literal);
    assert_eq!(v.action, OnViolation::BlockAndLog);
    // A wildcard secret's placeholder sent to the other secret's host.
    let v = violation(run(&default_secrets(), HOST, &get(&format!("X: {Q}\r\n"))));
    assert_eq!(
        (v.secret.as_str(), v.reason),
        ("OTHER", Reason::HostNotAllowed)
    );
    assert_eq!(v.action, OnViolation::BlockAndKill);
    let ok = format!("GET / HTTP/1.1\r\nHost: a.b.other.example\r\nX: {Q}\r\n\r\n");
    assert!(run(&default_secrets(), "a.b.other.example", &ok)
        .unwrap()
        .contains("X: other-value\r\n"));
}

#[test]
fn host_header_must_equal_sni() {
    let s = default_secrets();
    let auth = format!("Authorization: Bearer {P}\r\n");
    for host in [
        "API.Example.com",
        "api.example.com:443",
        "api.example.com.:8443",
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n");
        assert!(run(&s, HOST, &req).unwrap().contains(V), "{host}");
    }
    for host in [
        "evil.example",
        "api.example.com.evil",
        "api.example.com@evil",
        "",
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n");
        let v = violation(run(&s, HOST, &req));
        assert_eq!(v.reason, Reason::HostMismatch, "{host}");
    }
    let v = violation(run(&s, HOST, &format!("GET / HTTP/1.1\r\n{auth}\r\n")));
    assert_eq!(v.reason, Reason::HostMismatch);
    // Absolute-form target: its authority must match too.
    let req = format!("GET https://evil.example/x HTTP/1.1\r\nHost: {HOST}\r\n{auth}\r\n");
    assert_eq!(violation(run(&s, HOST, &req)).reason, Reason::HostMismatch);
    let req = format!("GET https://{HOST}:443/x HTTP/1.1\r\nHost: {HOST}\r\n{auth}\r\n");
    assert!(run(&s, HOST, &req).unwrap().contains(V));
    // Several Host headers are refused outright.
    let req = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: evil.example\r\n\r\n");
    assert!(matches!(
        run(&s, HOST, &req),
        Err(RewriteError::Malformed(_))
    ));
}

#[test]
fn basic_auth_replaced_and_reencoded() {
    let creds = STANDARD.encode(format!("user:{P}"));
    let out = run(
        &default_secrets(),
        HOST,
        &get(&format!("Authorization: Basic {creds}\r\n")),
    )
    .unwrap();
    let expected = STANDARD.encode(format!("user:{V}"));
    assert_eq!(out, get(&format!("Authorization: Basic {expected}\r\n")));
    // Placeholder as the user name, scheme in another case, no padding.
    let creds = STANDARD_NO_PAD_ENGINE.encode(format!("{P}:x"));
    let out = run(
        &default_secrets(),
        HOST,
        &get(&format!("authorization: basic {creds}\r\n")),
    )
    .unwrap();
    let expected = STANDARD.encode(format!("{V}:x"));
    assert_eq!(out, get(&format!("authorization: basic {expected}\r\n")));
    // Other Basic credentials are left byte for byte.
    let plain = get("Authorization: Basic dXNlcjpwYXNz\r\n");
    assert_eq!(run(&default_secrets(), HOST, &plain).unwrap(), plain);
}

const STANDARD_NO_PAD_ENGINE: GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

#[test]
fn disabled_locations_are_violations() {
    let s = secrets(&[SecretLocation::Headers]);
    let creds = STANDARD.encode(format!("user:{P}"));
    let v = violation(run(
        &s,
        HOST,
        &get(&format!("Authorization: Basic {creds}\r\n")),
    ));
    assert_eq!(
        (v.reason, v.location),
        (Reason::LocationNotAllowed, FoundIn::BasicAuth)
    );

    let s = default_secrets();
    let req = format!("GET /x?key={P} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let v = violation(run(&s, HOST, &req));
    assert_eq!(
        (v.reason, v.location),
        (Reason::LocationNotAllowed, FoundIn::Query)
    );
    let req = format!("GET /bot{P}/send HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    assert_eq!(violation(run(&s, HOST, &req)).location, FoundIn::Path);
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n{P}",
        P.len()
    );
    let v = violation(run(&s, HOST, &req));
    assert_eq!(
        (v.reason, v.location),
        (Reason::LocationNotAllowed, FoundIn::Body)
    );
    let v = violation(run(&s, HOST, &get(&format!("{P}: x\r\n"))));
    assert_eq!(v.location, FoundIn::HeaderName);
    let req = format!("{P} / HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    assert_eq!(
        violation(run(&s, HOST, &req)).location,
        FoundIn::RequestLine
    );
}

#[test]
fn query_and_path_get_the_value_percent_encoded() {
    let s = secrets(&[SecretLocation::Query, SecretLocation::Path]);
    let req = format!("GET /bot{P}/send?key={P}&a=b HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let out = run(&s, HOST, &req).unwrap();
    let enc = "sk-REAL%2Bvalue%2F%26%22x";
    assert_eq!(
        out,
        format!("GET /bot{enc}/send?key={enc}&a=b HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
    );
    // Headers are not enabled for this secret.
    let v = violation(run(&s, HOST, &get(&format!("X: {P}\r\n"))));
    assert_eq!(
        (v.reason, v.location),
        (Reason::LocationNotAllowed, FoundIn::Header)
    );
}

#[test]
fn encoded_forms_are_violations() {
    let s = secrets(&[
        SecretLocation::Headers,
        SecretLocation::Query,
        SecretLocation::Body,
    ]);
    // Percent-encoded, wholly or partly, either hex case.
    let partly = P.replacen('_', "%5F", 1);
    let wholly: String = P.bytes().map(|b| format!("%{b:02x}")).collect();
    for q in [partly, wholly] {
        let req = format!("GET /x?k={q} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        let v = violation(run(&s, HOST, &req));
        assert_eq!(
            (v.reason, v.form, v.location),
            (Reason::Encoded, Form::PercentEncoded, FoundIn::Query)
        );
    }
    // Base64 at each alignment, both alphabets, in a header and in a body.
    for prefix in ["", "a", "ab"] {
        for engine in [STANDARD, base64::engine::general_purpose::URL_SAFE] {
            let b64 = engine.encode(format!("{prefix}{P}"));
            let v = violation(run(&s, HOST, &get(&format!("X-Token: {b64}\r\n"))));
            assert_eq!(
                (v.reason, v.form),
                (Reason::Encoded, Form::Base64),
                "{prefix:?}"
            );
            let req = format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n{b64}",
                b64.len()
            );
            let v = violation(run(&s, HOST, &req));
            assert_eq!((v.form, v.location), (Form::Base64, FoundIn::Body));
        }
    }
    // Base64 with its `+`, `/` and `=` percent-encoded, in a query.
    let b64 = STANDARD.encode(format!("xy{P}"));
    let escaped = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let req = format!("GET /?t={escaped} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    assert_eq!(violation(run(&s, HOST, &req)).form, Form::Base64);
    // On another host an encoded form is reported for the host first.
    let req = format!("GET /?t={escaped} HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    assert_eq!(
        violation(run(&s, "evil.example", &req)).reason,
        Reason::HostNotAllowed
    );
}

fn post(headers: &str, body: &str) -> String {
    format!("POST /v1 HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n{body}")
}

#[test]
fn content_length_body_rewritten_with_new_length() {
    let s = secrets(&[SecretLocation::Body]);
    let body = format!("{{\"key\":\"{P}\"}}");
    let req = post(
        &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ),
        &body,
    );
    let out = run(&s, HOST, &req).unwrap();
    let new_body = "{\"key\":\"sk-REAL+value/&\\\"x\"}";
    assert_eq!(
        out,
        post(
            &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                new_body.len()
            ),
            new_body
        )
    );
    // Form bodies get the value percent-encoded, other bodies get it as is.
    let body = format!("a=1&key={P}");
    let req = post(
        &format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ),
        &body,
    );
    assert!(run(&s, HOST, &req)
        .unwrap()
        .ends_with("a=1&key=sk-REAL%2Bvalue%2F%26%22x"));
    let req = post(&format!("Content-Length: {}\r\n", P.len()), P);
    assert!(run(&s, HOST, &req)
        .unwrap()
        .ends_with(&format!("\r\n\r\n{V}")));
}

#[test]
fn chunked_body_rechunked_with_placeholder_across_chunks() {
    let s = secrets(&[SecretLocation::Body]);
    let (a, b) = P.split_at(10);
    let req = post(
        "Transfer-Encoding: chunked\r\n",
        &format!(
            "{:x};ext=1\r\nx{a}\r\n{:x}\r\n{b}y\r\n0\r\nX-Trailer: t\r\n\r\n",
            a.len() + 1,
            b.len() + 1
        ),
    );
    let out = run(&s, HOST, &req).unwrap();
    let head = post("Transfer-Encoding: chunked\r\n", "");
    let body = dechunk(&out[head.len()..]);
    assert_eq!(body, format!("x{V}y"));
    assert!(out.ends_with("0\r\nX-Trailer: t\r\n\r\n"), "{out}");
    // Not enabled: the split placeholder is still found.
    let v = violation(run(&default_secrets(), HOST, &req));
    assert_eq!(
        (v.location, v.reason),
        (FoundIn::Body, Reason::LocationNotAllowed)
    );
    // In a trailer it is never replaced.
    let req = post(
        "Transfer-Encoding: chunked\r\n",
        &format!("0\r\nX-T: {P}\r\n\r\n"),
    );
    assert_eq!(violation(run(&s, HOST, &req)).location, FoundIn::Trailer);
}

/// The payload of a chunked body (ending with the last chunk and an empty trailer).
fn dechunk(mut raw: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, rest) = raw.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            return body;
        }
        body.push_str(&rest[..size]);
        raw = &rest[size + 2..];
    }
}

#[test]
fn keep_alive_requests_each_judged() {
    let s = default_secrets();
    let one = get(&format!("X-Key: {P}\r\n"));
    let two = post("Content-Length: 3\r\n", "abc");
    let three = format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nX-Key: {P}\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    let all = format!("{one}{two}{three}{one}");
    let mut rw = RequestRewriter::new(s.clone(), HOST, true, Limits::default());
    let mut out = Vec::new();
    rw.feed(all.as_bytes(), &mut out).unwrap();
    rw.finish(&mut out).unwrap();
    assert_eq!(rw.requests(), 4);
    let replaced = |r: &str| r.replace(P, V);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{}{two}{}{}",
            replaced(&one),
            replaced(&three),
            replaced(&one)
        )
    );

    // A later request on the same connection to another Host is judged on its own.
    let mut rw = RequestRewriter::new(s.clone(), HOST, true, Limits::default());
    let mut out = Vec::new();
    rw.feed(one.as_bytes(), &mut out).unwrap();
    assert!(String::from_utf8_lossy(&out).contains(V));
    let bad = format!("GET / HTTP/1.1\r\nHost: evil.example\r\nX-Key: {P}\r\n\r\n");
    let mark = out.len();
    let err = rw.feed(bad.as_bytes(), &mut out).unwrap_err();
    assert!(matches!(
        err,
        RewriteError::Violation(Violation {
            reason: Reason::HostMismatch,
            ..
        })
    ));
    assert_eq!(out.len(), mark, "nothing of the bad request goes out");
    assert!(matches!(
        rw.feed(one.as_bytes(), &mut out),
        Err(RewriteError::Stopped)
    ));
}

/// Every way of cutting `input` in two, and byte by byte, gives `expected`.
fn check_splits(s: &Arc<Secrets>, input: &str, expected: &Result<String, RewriteError>) {
    let same = |got: Result<Vec<u8>, RewriteError>, how: &str| match (&got, expected) {
        (Ok(got), Ok(want)) => assert_eq!(String::from_utf8_lossy(got), *want, "{how}"),
        (Err(RewriteError::Violation(a)), Err(RewriteError::Violation(b))) => {
            assert_eq!(a, b, "{how}")
        }
        _ => panic!("{how}: got {got:?}, want {expected:?}"),
    };
    let bytes = input.as_bytes();
    for cut in 0..=bytes.len() {
        same(run_cuts(s, HOST, bytes, &[cut]), &format!("cut at {cut}"));
    }
    let every: Vec<usize> = (1..bytes.len()).collect();
    same(run_cuts(s, HOST, bytes, &every), "byte by byte");
}

#[test]
fn splits_at_every_byte_boundary() {
    let s = default_secrets();
    let req = get(&format!("Authorization: Bearer {P}\r\n"));
    check_splits(&s, &req, &Ok(req.replace(P, V)));

    // A Content-Length body scanned only: violation wherever the cut falls.
    let req = post(
        &format!("Content-Length: {}\r\n", P.len() + 4),
        &format!("ab{P}cd"),
    );
    let expected = run(&s, HOST, &req);
    assert!(matches!(expected, Err(RewriteError::Violation(_))));
    check_splits(&s, &req, &expected);
    // Base64 in a body, split anywhere.
    let b64 = STANDARD.encode(format!("z{P}"));
    let req = post(&format!("Content-Length: {}\r\n", b64.len()), &b64);
    let expected = run(&s, HOST, &req);
    assert!(matches!(&expected, Err(RewriteError::Violation(v)) if v.form == Form::Base64));
    check_splits(&s, &req, &expected);

    // Chunked body rewritten: the same payload whatever the cuts (the chunking differs,
    // so compare payloads).
    let s = secrets(&[SecretLocation::Body]);
    let req = post(
        "Transfer-Encoding: chunked\r\n",
        &format!("{:x}\r\n<{P}>\r\n0\r\n\r\n", P.len() + 2),
    );
    let head = post("Transfer-Encoding: chunked\r\n", "");
    let bytes = req.as_bytes();
    let mut cuts: Vec<Vec<usize>> = (0..=bytes.len()).map(|c| vec![c]).collect();
    cuts.push((1..bytes.len()).collect());
    for cut in cuts {
        let out = String::from_utf8(run_cuts(&s, HOST, bytes, &cut).unwrap()).unwrap();
        assert!(out.starts_with(&head));
        assert_eq!(
            dechunk(&out[head.len()..]),
            format!("<{V}>"),
            "cuts {cut:?}"
        );
    }
    // Content-Length body rewritten.
    let req = post(
        &format!("Content-Length: {}\r\n", P.len() + 2),
        &format!("<{P}>"),
    );
    let expected = Ok(post(
        &format!("Content-Length: {}\r\n", V.len() + 2),
        &format!("<{V}>"),
    ));
    check_splits(&s, &req, &expected);
}

#[test]
fn partial_placeholder_is_held_only_while_it_may_complete() {
    let s = secrets(&[SecretLocation::Body]);
    let mut rw = RequestRewriter::new(s.clone(), HOST, true, Limits::default());
    let mut out = Vec::new();
    rw.feed(
        post("Transfer-Encoding: chunked\r\n", "").as_bytes(),
        &mut out,
    )
    .unwrap();
    out.clear();
    // Ends with the placeholder's first 5 bytes: those wait.
    rw.feed(b"9\r\nhey msb_s\r\n", &mut out).unwrap();
    assert_eq!(out, b"4\r\nhey \r\n");
    out.clear();
    // The next byte shows it is not the placeholder: everything goes.
    rw.feed(b"1\r\nX\r\n", &mut out).unwrap();
    assert_eq!(out, b"6\r\nmsb_sX\r\n");

    // When nothing may be replaced nothing waits, and a placeholder completed later is
    // still found before its end goes out.
    let s = default_secrets();
    let mut rw = RequestRewriter::new(s, HOST, true, Limits::default());
    let mut out = Vec::new();
    let body = format!("ab{P}");
    rw.feed(
        post(&format!("Content-Length: {}\r\n", body.len()), "").as_bytes(),
        &mut out,
    )
    .unwrap();
    out.clear();
    rw.feed(&body.as_bytes()[..10], &mut out).unwrap();
    assert_eq!(out, &body.as_bytes()[..10]);
    out.clear();
    assert!(rw.feed(&body.as_bytes()[10..], &mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn placeholder_across_a_body_and_the_next_request_line() {
    let s = default_secrets();
    let (a, b) = P.split_at(12);
    // `…msb_secret_` ends one body, `KEY_… / HTTP/1.1` starts the next request: the
    // upstream would receive the placeholder whole. Also across dropped empty lines, and
    // into an upgraded stream.
    for gap in ["", "\r\n"] {
        let req = format!(
            "{}{gap}{b} / HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
            post(
                &format!("Content-Length: {}\r\n", a.len() + 1),
                &format!("x{a}")
            )
        );
        let v = violation(run(&s, HOST, &req));
        assert_eq!(v.location, FoundIn::RequestLine, "{gap:?}");
        check_splits(&s, &req, &Err(RewriteError::Violation(v)));
    }
    let req = post(
        &format!("Upgrade: x\r\nContent-Length: {}\r\n", a.len()),
        &format!("{a}{b}"),
    );
    assert_eq!(
        violation(run(&s, HOST, &req)).location,
        FoundIn::AfterUpgrade
    );
    // A chunked body ends with CRLF: nothing joins.
    let req = format!(
        "{}{b} / HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
        post(
            "Transfer-Encoding: chunked\r\n",
            &format!("{:x}\r\n{a}\r\n0\r\n\r\n", a.len())
        )
    );
    assert!(run(&s, HOST, &req).is_ok());
}

#[test]
fn oversized_and_malformed_heads() {
    let s = default_secrets();
    let big = get(&format!("X-Big: {}\r\n", "a".repeat(70 * 1024)));
    assert!(matches!(
        run(&s, HOST, &big),
        Err(RewriteError::HeadTooLarge { limit: 65536 })
    ));
    // Without an end of head at all, byte by byte.
    let endless = "GET / HTTP/1.1\r\nX: ".to_string() + &"a".repeat(65 * 1024);
    let every: Vec<usize> = (1..endless.len()).step_by(7).collect();
    assert!(matches!(
        run_cuts(&s, HOST, endless.as_bytes(), &every),
        Err(RewriteError::HeadTooLarge { .. })
    ));
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    assert!(matches!(
        run(&s, HOST, &get(&many)),
        Err(RewriteError::TooManyHeaders { .. })
    ));
    for bad in [
        post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "abc"),
        post("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd"),
        post("Content-Length: 3, 3\r\n", "abc"),
        post("Content-Length: +3\r\n", "abc"),
        post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
        post(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
        ),
        format!("POST / HTTP/1.0\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        post("Transfer-Encoding: chunked\r\n", "zz\r\n"),
        post("Transfer-Encoding: chunked\r\n", "3\r\nabcX\r\n"),
        "GET / HTTP/2.0\r\n\r\n".to_string(),
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_string(),
        "GET /\r\n\r\n".to_string(),
    ] {
        assert!(
            matches!(run(&s, HOST, &bad), Err(RewriteError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn head_is_rebuilt_canonically() {
    let s = default_secrets();
    let req = format!("\r\nGET / HTTP/1.1\nHost:   {HOST}  \nX-Key:{P}\n\n");
    assert_eq!(
        run(&s, HOST, &req).unwrap(),
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Key: {V}\r\n\r\n")
    );
}

#[test]
fn trace_and_plaintext_never_get_the_value() {
    let s = default_secrets();
    let req = format!("TRACE / HTTP/1.1\r\nHost: {HOST}\r\nX-Key: {P}\r\n\r\n");
    assert_eq!(
        violation(run(&s, HOST, &req)).reason,
        Reason::ReflectingMethod
    );

    let mut rw = RequestRewriter::new(s.clone(), HOST, false, Limits::default());
    let err = rw.feed(get(&format!("X-Key: {P}\r\n")).as_bytes(), &mut Vec::new());
    assert!(matches!(
        err,
        Err(RewriteError::Violation(Violation {
            reason: Reason::PlaintextConnection,
            ..
        }))
    ));

    let mut plain_ok = spec(&[SecretLocation::Headers]);
    plain_ok.require_tls = false;
    let s = Arc::new(Secrets::new(vec![plain_ok]).unwrap());
    let mut rw = RequestRewriter::new(s, HOST, false, Limits::default());
    let mut out = Vec::new();
    rw.feed(get(&format!("X-Key: {P}\r\n")).as_bytes(), &mut out)
        .unwrap();
    assert!(String::from_utf8(out).unwrap().contains(V));
}

#[test]
fn upgraded_stream_is_only_scanned() {
    let s = default_secrets();
    let req = get(&format!(
        "Connection: Upgrade\r\nUpgrade: websocket\r\nX-Key: {P}\r\n"
    ));
    let mut rw = RequestRewriter::new(s.clone(), HOST, true, Limits::default());
    let mut out = Vec::new();
    rw.feed(req.as_bytes(), &mut out).unwrap();
    assert!(String::from_utf8_lossy(&out).contains(V));
    out.clear();
    // Frames that look like a request are not parsed as one.
    rw.feed(b"\x81\x05hello GET / HTTP/1.1\r\n\r\n", &mut out)
        .unwrap();
    assert_eq!(out, b"\x81\x05hello GET / HTTP/1.1\r\n\r\n");
    let (a, b) = P.split_at(7);
    rw.feed(a.as_bytes(), &mut out).unwrap();
    let err = rw.feed(b.as_bytes(), &mut out).unwrap_err();
    assert!(matches!(
        err,
        RewriteError::Violation(Violation {
            location: FoundIn::AfterUpgrade,
            ..
        })
    ));
}

#[test]
fn substitutions_per_request_are_bounded() {
    let s = default_secrets();
    let limits = Limits {
        max_substitutions: 3,
        ..Limits::default()
    };
    let headers: String = (0..4).map(|i| format!("X-{i}: {P}\r\n")).collect();
    let mut rw = RequestRewriter::new(s.clone(), HOST, true, limits.clone());
    let mut out = Vec::new();
    assert!(matches!(
        rw.feed(get(&headers).as_bytes(), &mut out),
        Err(RewriteError::TooManySubstitutions { limit: 3 })
    ));
    assert!(out.is_empty());
    // The budget is per request.
    let three: String = (0..3).map(|i| format!("X-{i}: {P}\r\n")).collect();
    let mut rw = RequestRewriter::new(s, HOST, true, limits);
    rw.feed(
        format!("{}{}", get(&three), get(&three)).as_bytes(),
        &mut out,
    )
    .unwrap();
}

#[test]
fn incomplete_requests_at_close() {
    let s = default_secrets();
    let mut rw = RequestRewriter::new(s.clone(), HOST, true, Limits::default());
    let mut out = Vec::new();
    rw.feed(b"GET / HTTP/1.1\r\nHost: ", &mut out).unwrap();
    assert!(out.is_empty());
    assert!(matches!(rw.finish(&mut out), Err(RewriteError::Truncated)));

    // A rewritten Content-Length body cut short is never sent.
    let s = secrets(&[SecretLocation::Body]);
    let mut rw = RequestRewriter::new(s.clone(), HOST, true, Limits::default());
    rw.feed(post("Content-Length: 100\r\n", P).as_bytes(), &mut out)
        .unwrap();
    assert!(out.is_empty());
    assert!(matches!(rw.finish(&mut out), Err(RewriteError::Truncated)));
    assert!(out.is_empty());

    // Too long to hold.
    let limits = Limits {
        max_buffered_body: 10,
        ..Limits::default()
    };
    let mut rw = RequestRewriter::new(s, HOST, true, limits);
    assert!(matches!(
        rw.feed(post("Content-Length: 11\r\n", "").as_bytes(), &mut out),
        Err(RewriteError::BodyTooLarge { limit: 10 })
    ));
}
