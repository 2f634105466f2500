//! Finding placeholders in bytes: every form the rewriter looks for, in one automaton, and a
//! stream scanner that replaces the allowed ones and stops at any other.
//!
//! Forms: the literal placeholder; its base64 (standard and URL-safe alphabets, each of the
//! three byte alignments a placeholder can have inside longer data, so `base64("user:" + P)`
//! is found too); and either of those percent-encoded, with any mix of `%XX` escapes and
//! plain characters. Only the literal form is ever replaced; the others are always reported.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use crate::secrets::Secrets;

/// How a placeholder was written where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    Literal,
    /// With at least one `%XX` escape (of the placeholder or of its base64).
    PercentEncoded,
    Base64,
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Form::Literal => "literal",
            Form::PercentEncoded => "percent-encoded",
            Form::Base64 => "base64",
        })
    }
}

/// Base64 needles shorter than this are skipped: they would match unrelated base64 text.
/// Only placeholders of 8 to 10 bytes lose an alignment to it.
const MIN_BASE64_NEEDLE: usize = 8;

/// One occurrence, as byte positions in the scanned buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) secret: usize,
    pub(crate) form: Form,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

pub(crate) struct Matcher {
    ac: Option<AhoCorasick>,
    /// Per pattern of `ac`: the secret and whether it is the literal or a base64 form.
    needles: Vec<(usize, Form)>,
    placeholders: Vec<Vec<u8>>,
    /// Look-behind a stream keeps: every form of every needle, fully percent-encoded, fits in
    /// `window + 1` bytes, so an occurrence ending in new data starts inside the window.
    window: usize,
}

impl Matcher {
    pub(crate) fn new<'a>(
        placeholders: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Matcher, aho_corasick::BuildError> {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut needles = Vec::new();
        let mut literals = Vec::new();
        for (secret, p) in placeholders.enumerate() {
            literals.push(p.to_vec());
            patterns.push(p.to_vec());
            needles.push((secret, Form::Literal));
            for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
                for align in 0..3 {
                    // The whole 3-byte groups of `p` starting at `align`: their encoding
                    // appears verbatim in the base64 of any data holding `p` at a position
                    // congruent to `-align` mod 3.
                    let whole = p.len().saturating_sub(align) / 3 * 3;
                    if whole == 0 {
                        continue;
                    }
                    let needle = engine.encode(&p[align..align + whole]).into_bytes();
                    if needle.len() >= MIN_BASE64_NEEDLE && !patterns.contains(&needle) {
                        patterns.push(needle);
                        needles.push((secret, Form::Base64));
                    }
                }
            }
        }
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let ac = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&patterns)?,
            )
        };
        Ok(Matcher {
            ac,
            needles,
            placeholders: literals,
            window: (3 * longest).saturating_sub(1),
        })
    }

    pub(crate) fn window(&self) -> usize {
        self.window
    }

    pub(crate) fn placeholder(&self, secret: usize) -> &[u8] {
        &self.placeholders[secret]
    }

    /// Every occurrence in `buf` that ends after `min_end`, overlapping ones included, sorted
    /// by start. Occurrences ending at or before `min_end` were reported by an earlier call.
    pub(crate) fn hits(&self, buf: &[u8], min_end: usize) -> Vec<Hit> {
        let Some(ac) = &self.ac else {
            return Vec::new();
        };
        let mut hits = Vec::new();
        for m in ac.find_overlapping_iter(buf) {
            if m.end() > min_end {
                let (secret, form) = self.needles[m.pattern().as_usize()];
                hits.push(Hit {
                    secret,
                    form,
                    start: m.start(),
                    end: m.end(),
                });
            }
        }
        if let Some((decoded, raw_pos)) = percent_decode(buf) {
            for m in ac.find_overlapping_iter(&decoded) {
                let (start, end) = (raw_pos[m.start()], raw_pos[m.end()]);
                // Same length raw and decoded: no escape inside, so the raw pass found it.
                if end > min_end && end - start != m.end() - m.start() {
                    let (secret, form) = self.needles[m.pattern().as_usize()];
                    let form = match form {
                        Form::Literal => Form::PercentEncoded,
                        other => other,
                    };
                    hits.push(Hit {
                        secret,
                        form,
                        start,
                        end,
                    });
                }
            }
        }
        hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
        hits
    }
}

/// `buf` with every valid `%XX` decoded, and for each decoded byte (plus one past the end) its
/// position in `buf`. `None` when `buf` holds no `%`.
fn percent_decode(buf: &[u8]) -> Option<(Vec<u8>, Vec<usize>)> {
    if !buf.contains(&b'%') {
        return None;
    }
    let mut decoded = Vec::with_capacity(buf.len());
    let mut raw_pos = Vec::with_capacity(buf.len() + 1);
    let mut i = 0;
    while i < buf.len() {
        raw_pos.push(i);
        if buf[i] == b'%' && i + 2 < buf.len() {
            if let (Some(h), Some(l)) = (hex(buf[i + 1]), hex(buf[i + 2])) {
                decoded.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        decoded.push(buf[i]);
        i += 1;
    }
    raw_pos.push(buf.len());
    Some((decoded, raw_pos))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// How a value is written where it replaces a placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// As is (headers, Basic credentials, bodies of other types).
    Raw,
    /// Every byte but the URL-unreserved ones as `%XX` (paths, queries, form bodies): a `&`
    /// or `#` in a value must not end the parameter.
    Percent,
    /// JSON string escaping (JSON bodies): a `"` in a value must not end the string.
    Json,
}

impl Encoding {
    pub(crate) fn encode(self, value: &[u8], out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        match self {
            Encoding::Raw => out.extend_from_slice(value),
            Encoding::Percent => {
                for &b in value {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                        out.push(b);
                    } else {
                        out.extend_from_slice(&[
                            b'%',
                            HEX[(b >> 4) as usize],
                            HEX[(b & 15) as usize],
                        ]);
                    }
                }
            }
            Encoding::Json => {
                for &b in value {
                    match b {
                        b'"' => out.extend_from_slice(b"\\\""),
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        0..=0x1f => out.extend_from_slice(&[
                            b'\\',
                            b'u',
                            b'0',
                            b'0',
                            HEX[(b >> 4) as usize],
                            HEX[(b & 15) as usize],
                        ]),
                        _ => out.push(b),
                    }
                }
            }
        }
    }
}

/// Where a scanned region may have placeholders replaced, and how.
pub(crate) struct Region<'a> {
    /// Per secret: may its literal placeholder be replaced here?
    pub(crate) allowed: &'a [bool],
    pub(crate) encoding: Encoding,
}

impl Region<'_> {
    fn any_allowed(&self) -> bool {
        self.allowed.iter().any(|a| *a)
    }
}

/// Why a scan stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// A placeholder that may not be replaced here (or not in this form).
    Hit(Hit),
    /// The request's budget of replacements is spent.
    Budget,
}

/// Scans one stream (a body, the bytes after an upgrade) as it arrives.
///
/// Keeps `buf` = look-behind (bytes already dealt with, at most [`Matcher::window`]) followed
/// by held-back bytes (not yet forwarded). Bytes are held back only where a region allows
/// replacement and the data ends in what could be the start of an allowed placeholder: a
/// placeholder must be replaced whole, so its first part cannot go out before its last part
/// arrived. Everything else goes out at once; a placeholder split across pushes is still
/// found through the look-behind, before its last part is forwarded.
#[derive(Default)]
pub(crate) struct Scanner {
    buf: Vec<u8>,
    processed: usize,
}

impl Scanner {
    /// Appends to `out` what may be forwarded of `data`. `last`: the stream ends here, hold
    /// nothing back. `budget`: replacements left for this request, decremented.
    pub(crate) fn push(
        &mut self,
        secrets: &Secrets,
        region: &Region<'_>,
        data: &[u8],
        last: bool,
        out: &mut Vec<u8>,
        budget: &mut usize,
    ) -> Result<(), ScanStop> {
        self.buf.extend_from_slice(data);
        let processed = self.processed;
        let mut cursor = processed;
        let mut replaced_until = 0;
        for hit in secrets.matcher.hits(&self.buf, processed) {
            if hit.start < replaced_until {
                // Overlaps a placeholder just replaced: those bytes are gone.
                continue;
            }
            let replace =
                hit.form == Form::Literal && region.allowed[hit.secret] && hit.start >= processed;
            if !replace {
                return Err(ScanStop::Hit(hit));
            }
            if *budget == 0 {
                return Err(ScanStop::Budget);
            }
            *budget -= 1;
            out.extend_from_slice(&self.buf[cursor..hit.start]);
            let value = secrets.entries[hit.secret].value.expose().as_bytes();
            region.encoding.encode(value, out);
            cursor = hit.end;
            replaced_until = hit.end;
        }
        let end = if last {
            self.buf.len()
        } else {
            self.hold_from(secrets, region, cursor)
        };
        out.extend_from_slice(&self.buf[cursor..end]);
        // The look-behind survives `last`: see [`Scanner::look_behind`].
        let drop = end.saturating_sub(secrets.matcher.window());
        self.buf.drain(..drop);
        self.processed = end - drop;
        Ok(())
    }

    /// A scanner whose stream continues bytes that ended in `look_behind`.
    pub(crate) fn continuing(look_behind: Vec<u8>) -> Scanner {
        Scanner {
            processed: look_behind.len(),
            buf: look_behind,
        }
    }

    /// The last bytes pushed (at most [`Matcher::window`]), all dealt with: what a stream
    /// that follows this one without a separator needs to find a placeholder spanning both.
    pub(crate) fn look_behind(&self) -> &[u8] {
        &self.buf[..self.processed]
    }

    /// Where the held-back suffix starts: the earliest position from which the rest of `buf`
    /// is a proper prefix of a placeholder this region may replace; `buf.len()` when none.
    fn hold_from(&self, secrets: &Secrets, region: &Region<'_>, cursor: usize) -> usize {
        let len = self.buf.len();
        if !region.any_allowed() {
            return len;
        }
        let longest = (0..secrets.entries.len())
            .filter(|i| region.allowed[*i])
            .map(|i| secrets.matcher.placeholder(i).len())
            .max()
            .unwrap_or(0);
        let first = cursor.max(len.saturating_sub(longest.saturating_sub(1)));
        (first..len)
            .find(|&i| {
                let tail = &self.buf[i..];
                (0..secrets.entries.len()).any(|s| {
                    let p = secrets.matcher.placeholder(s);
                    region.allowed[s] && p.len() > tail.len() && p.starts_with(tail)
                })
            })
            .unwrap_or(len)
    }
}

/// Scans a complete field (a header value, a path) in one go.
pub(crate) fn scan_complete(
    secrets: &Secrets,
    region: &Region<'_>,
    data: &[u8],
    out: &mut Vec<u8>,
    budget: &mut usize,
) -> Result<(), ScanStop> {
    Scanner::default().push(secrets, region, data, true, out, budget)
}
