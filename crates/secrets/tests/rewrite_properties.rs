//! The fuzz target's invariants (`fuzz/fuzz_targets/http_rewrite.rs`, both checked by
//! `msb_secrets::rewrite_check::check`), on stable in every test run: random streams built
//! from HTTP fragments and placeholders in all their forms, fed whole and in random pieces,
//! from a fixed seed.
//! - fed whole or in pieces, one run fails and the other does not: never;
//! - output of a run that did not fail holds a whole placeholder: never;
//! - output to a host a secret does not allow holds its value more often than the input.

use base64::Engine as _;
use msb_secrets::rewrite_check::{check, count, secrets, HOSTS, P1, P2, TWO_VALUE, VALUE};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fragments() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut f: Vec<String> = [
        "GET ",
        "POST ",
        "TRACE ",
        "CONNECT ",
        "PUT ",
        "/",
        "/v1/x",
        "?",
        "q=",
        "&",
        "#",
        " HTTP/1.1\r\n",
        " HTTP/1.0\r\n",
        " HTTP/1.1\n",
        "Host: api.example.com\r\n",
        "Host: evil.example\r\n",
        "Host: x.wild.example\r\n",
        "Host: API.example.com:443\r\n",
        "Authorization: Bearer ",
        "Authorization: Basic ",
        "X-Key: ",
        "Content-Length: 0\r\n",
        "Content-Length: 5\r\n",
        "Content-Length: 13\r\n",
        "Content-Length: 40\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Upgrade: websocket\r\n",
        "Content-Type: application/json\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "\r\n",
        "\r\n\r\n",
        "\n",
        ": ",
        "5\r\n",
        "c\r\n",
        "1;x=y\r\n",
        "0\r\n\r\n",
        "0\r\nT: v\r\n\r\n",
        "abcde",
        "%",
        "%2",
        "%24",
        "\"",
        " ",
        "{\"k\":\"",
        "\"}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for p in [P1, P2] {
        f.push(p.to_string());
        f.push(p[..p.len() / 2].to_string());
        f.push(p[p.len() / 2..].to_string());
        f.push(p[..1].to_string());
        f.push(p.replace('_', "%5F").replace('$', "%24"));
        for prefix in ["", "u:", "ab"] {
            f.push(b64.encode(format!("{prefix}{p}")));
            f.push(url.encode(format!("{prefix}{p}")));
        }
        f.push(format!("{:x}\r\n{p}\r\n", p.len()));
    }
    f
}

/// One request, mostly well formed: a method, a target, headers and a framed body, each
/// drawn from the fragments (placeholders in every form among them).
fn request(rng: &mut Rng, fragments: &[String], host: &str) -> Vec<u8> {
    let pick = |rng: &mut Rng| fragments[rng.below(fragments.len())].clone();
    // Mostly the placeholder of the secret this host may get.
    let (own, other) = if host == HOSTS[1] { (P2, P1) } else { (P1, P2) };
    let piece = |rng: &mut Rng| -> String {
        match rng.below(10) {
            0 | 1 => own.to_string(),
            2 => other.to_string(),
            3 => pick(rng).replace(['\r', '\n', ' '], ""),
            _ => "plain".to_string(),
        }
    };
    let method = ["GET", "POST", "PUT", "TRACE"][rng.below(4).min(rng.below(20))];
    let mut out = format!("{method} /{}", piece(rng));
    if rng.below(2) == 0 {
        out.push_str(&format!("?k={}", piece(rng)));
    }
    out.push_str(" HTTP/1.1\r\n");
    let host_header = match rng.below(8) {
        0 => "evil.example",
        1 => "API.example.com:443",
        _ => host,
    };
    out.push_str(&format!("Host: {host_header}\r\n"));
    for _ in 0..rng.below(4) {
        let value = match rng.below(3) {
            0 => format!("Bearer {}", piece(rng)),
            1 => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("u:{}", piece(rng)))
            ),
            _ => piece(rng),
        };
        let name = match rng.below(20) {
            0 => "Upgrade",
            n if n % 2 == 0 => "Authorization",
            _ => "X-Key",
        };
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if rng.below(3) == 0 {
        out.push_str("Content-Type: application/json\r\n");
    }
    let body: String = (0..rng.below(4)).map(|_| piece(rng)).collect();
    let mut bytes = match rng.below(3) {
        0 => {
            out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
            out.into_bytes()
        }
        1 => {
            out.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = body.as_str();
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len());
                let (chunk, tail) = rest.split_at(n);
                out.push_str(&format!("{n:x}\r\n{chunk}\r\n"));
                rest = tail;
            }
            out.push_str("0\r\n\r\n");
            out.into_bytes()
        }
        _ => {
            out.push_str("\r\n");
            out.into_bytes()
        }
    };
    // Now and then, damage it.
    if rng.below(8) == 0 && !bytes.is_empty() {
        let at = rng.below(bytes.len());
        match rng.below(3) {
            0 => {
                bytes.remove(at);
            }
            1 => {
                let insert = pick(rng);
                bytes.splice(at..at, insert.into_bytes());
            }
            _ => bytes[at] = rng.next() as u8,
        }
    }
    bytes
}

#[test]
fn random_streams_keep_the_invariants() {
    let fragments = fragments();
    let mut rng = Rng(0x5EC2E75);
    let mut by_locations = std::collections::HashMap::new();
    let (mut ok_runs, mut replaced) = (0, 0);
    for iteration in 0..6000 {
        let control = rng.below(256);
        let secrets = by_locations
            .entry(control >> 3)
            .or_insert_with(|| secrets((control >> 3) as u8))
            .clone();
        let host = HOSTS[control & 3];
        let tls = rng.below(4) != 0;
        let mut stream = Vec::new();
        if rng.below(5) == 0 {
            // Fragment soup.
            for _ in 0..rng.below(40) {
                stream.extend_from_slice(fragments[rng.below(fragments.len())].as_bytes());
            }
        } else {
            for _ in 0..1 + rng.below(3) {
                stream.extend(request(&mut rng, &fragments, host));
            }
        }

        let mut cuts: Vec<usize> = (0..rng.below(12))
            .map(|_| rng.below(stream.len() + 1))
            .collect();
        cuts.sort_unstable();
        let outputs = check(&secrets, control & 3, tls, &stream, &cuts).unwrap_or_else(|broken| {
            panic!(
                "{broken}: #{iteration} {host} tls={tls} cuts={cuts:?} {:?}",
                String::from_utf8_lossy(&stream)
            )
        });
        for out in outputs {
            ok_runs += 1;
            if count(&out, VALUE) + count(&out, TWO_VALUE) > 0 {
                replaced += 1;
            }
        }
    }
    // The generator must get past the rewriter's refusals, and to substitutions, often
    // enough to mean something.
    println!("{ok_runs} runs went through, {replaced} replaced a placeholder");
    assert!(ok_runs > 1000, "only {ok_runs} runs went through");
    assert!(
        replaced > 150,
        "only {replaced} runs replaced a placeholder"
    );
}
