//! Reading the server name from the first bytes of a guest's TLS connection, without
//! consuming them.
//!
//! The caller decides whether to intercept a connection before it hands it to
//! [`crate::Interceptor::intercept`] (under "secrets-only", only names some secret allows),
//! and a connection it does not intercept must reach the upstream byte for byte. So it peeks
//! at what the guest sent (the stack still holds it) and asks [`peek_sni`]; nothing here
//! buffers or consumes. The bytes are the guest's: every length is checked against what is
//! there and against [`MAX_CLIENT_HELLO`].

/// Longest ClientHello read (the handshake message, across records). Real ones are under
/// 2 KiB, post-quantum key shares included; a longer one is [`SniPeek::Malformed`].
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// What the first bytes of a connection say about its TLS server name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SniPeek {
    /// Not enough bytes yet: peek again when more arrived.
    NeedMore,
    /// Not a TLS handshake record: not TLS at all.
    NotTls,
    /// TLS framing, but the ClientHello is malformed or longer than [`MAX_CLIENT_HELLO`].
    Malformed,
    /// A ClientHello without a server name (a connection to an address).
    NoSni,
    /// The server name, lower case, without a trailing dot.
    Sni(String),
}

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;
const RECORD_HEADER: usize = 5;

/// Parses the ClientHello at the start of `buf` (which may hold more: it is never consumed).
pub fn peek_sni(buf: &[u8]) -> SniPeek {
    let mut hello = Vec::new();
    let mut pos = 0;
    let message_len = loop {
        let Some(header) = buf.get(pos..pos + RECORD_HEADER) else {
            // A partial header is judged on what is there, so a plain-HTTP connection is
            // told apart after its first byte.
            return match buf.get(pos) {
                Some(&t) if t != RECORD_HANDSHAKE => not_tls(pos),
                Some(_) if buf.get(pos + 1).is_some_and(|v| *v != 3) => not_tls(pos),
                _ => SniPeek::NeedMore,
            };
        };
        if header[0] != RECORD_HANDSHAKE || header[1] != 3 {
            return not_tls(pos);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return SniPeek::Malformed;
        }
        let Some(fragment) = buf.get(pos + RECORD_HEADER..pos + RECORD_HEADER + len) else {
            return SniPeek::NeedMore;
        };
        hello.extend_from_slice(fragment);
        pos += RECORD_HEADER + len;
        if hello.len() >= 4 {
            if hello[0] != HANDSHAKE_CLIENT_HELLO {
                return SniPeek::Malformed;
            }
            let message_len =
                usize::from(hello[1]) << 16 | usize::from(hello[2]) << 8 | usize::from(hello[3]);
            if message_len > MAX_CLIENT_HELLO {
                return SniPeek::Malformed;
            }
            if hello.len() >= 4 + message_len {
                break message_len;
            }
        }
        if hello.len() > MAX_CLIENT_HELLO + 4 {
            return SniPeek::Malformed;
        }
    };
    match parse_client_hello(&hello[4..4 + message_len]) {
        Some(Some(name)) => SniPeek::Sni(name),
        Some(None) => SniPeek::NoSni,
        None => SniPeek::Malformed,
    }
}

/// A second record that is not a handshake record, after a first that was, is malformed TLS
/// rather than another protocol.
fn not_tls(pos: usize) -> SniPeek {
    if pos == 0 {
        SniPeek::NotTls
    } else {
        SniPeek::Malformed
    }
}

/// A cursor that fails instead of reading past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a `len_bytes`-byte length prefix.
    fn vec(&mut self, len_bytes: usize) -> Option<Reader<'a>> {
        let len = match len_bytes {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(len).map(Reader)
    }
}

/// `None`: malformed. `Some(None)`: no server name.
fn parse_client_hello(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec(1)?; // legacy_session_id
    r.vec(2)?; // cipher_suites
    r.vec(1)?; // legacy_compression_methods
    if r.0.is_empty() {
        return Some(None); // no extensions at all (an old client)
    }
    let mut extensions = r.vec(2)?;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vec(2)?;
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        let mut names = data.vec(2)?;
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let name = names.vec(2)?.0;
            if name_type == NAME_TYPE_HOST {
                return host_name(name).map(Some);
            }
        }
        return Some(None);
    }
    Some(None)
}

/// A server name as RFC 6066 allows it: ASCII letters, digits, `-`, `_` and dots, no empty
/// label, at most 253 bytes (a trailing dot dropped).
fn host_name(raw: &[u8]) -> Option<String> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    let ok = !raw.is_empty()
        && raw.len() <= 253
        && raw.split(|b| *b == b'.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        });
    ok.then(|| String::from_utf8_lossy(raw).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it for `name`.
    fn real_hello(name: &str) -> Vec<u8> {
        let ca = crate::tls::SandboxCa::generate().unwrap();
        let config = crate::tls::upstream_client_config(&crate::tls::UpstreamTrust {
            native_roots: false,
            extra_ca_pems: vec![ca.cert_pem().to_owned()],
        })
        .unwrap();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(config, server_name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_name_rustls_sends() {
        let hello = real_hello("API.Example.com");
        assert_eq!(peek_sni(&hello), SniPeek::Sni("api.example.com".into()));
        // With more bytes after it, and cut anywhere before its end.
        let mut more = hello.clone();
        more.extend_from_slice(b"trailing");
        assert_eq!(peek_sni(&more), SniPeek::Sni("api.example.com".into()));
        for cut in 0..hello.len() {
            assert_eq!(peek_sni(&hello[..cut]), SniPeek::NeedMore, "cut at {cut}");
        }
        // Split across two records.
        let body = &hello[5..];
        let (a, b) = body.split_at(40);
        let mut two = vec![22, 3, 1];
        two.extend_from_slice(&(a.len() as u16).to_be_bytes());
        two.extend_from_slice(a);
        two.extend_from_slice(&[22, 3, 3]);
        two.extend_from_slice(&(b.len() as u16).to_be_bytes());
        two.extend_from_slice(b);
        assert_eq!(peek_sni(&two), SniPeek::Sni("api.example.com".into()));
    }

    #[test]
    fn other_protocols_and_garbage() {
        assert_eq!(peek_sni(b"G"), SniPeek::NotTls);
        assert_eq!(peek_sni(b"GET / HTTP/1.1\r\n"), SniPeek::NotTls);
        assert_eq!(peek_sni(b"\x16\x02"), SniPeek::NotTls);
        assert_eq!(peek_sni(b""), SniPeek::NeedMore);
        assert_eq!(peek_sni(b"\x16\x03\x01\x00\x00"), SniPeek::Malformed);
        // A handshake message that is not a ClientHello.
        assert_eq!(
            peek_sni(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"),
            SniPeek::Malformed
        );
        // Claims a 1 MiB ClientHello.
        assert_eq!(
            peek_sni(b"\x16\x03\x01\x00\x04\x01\x10\x00\x00"),
            SniPeek::Malformed
        );
        // Inner lengths that run past the message: cut its last byte and shorten the record
        // and handshake lengths to match.
        let mut hello = real_hello("a.example");
        hello.pop();
        let len = u16::from_be_bytes([hello[3], hello[4]]) - 1;
        hello[3..5].copy_from_slice(&len.to_be_bytes());
        let msg =
            (usize::from(hello[6]) << 16 | usize::from(hello[7]) << 8 | usize::from(hello[8])) - 1;
        hello[6..9].copy_from_slice(&msg.to_be_bytes()[5..8]);
        assert_eq!(peek_sni(&hello), SniPeek::Malformed);
    }

    #[test]
    fn hello_without_name() {
        // Version, random, empty session id, one suite, one compression method, no extensions.
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        let mut msg = vec![1, 0, 0, body.len() as u8];
        msg.extend_from_slice(&body);
        let mut record = vec![22, 3, 1, 0, msg.len() as u8];
        record.extend_from_slice(&msg);
        assert_eq!(peek_sni(&record), SniPeek::NoSni);
    }
}
