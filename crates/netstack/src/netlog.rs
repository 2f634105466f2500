//! The sandbox's network log: one line per denied flow, refused flow or blocked query.
//!
//! ```text
//! 2025-01-31T12:00:00.123Z deny tcp 127.0.0.1:8080 default public-only (loopback)
//! 2025-01-31T12:00:00.200Z dns-block udp a.evil.test block_domain_suffixes
//! 2025-01-31T12:00:01.000Z secret tls other.test:443 placeholder of secret `K` (literal) in header: host not allowed for this secret
//! ```
//!
//! Fields are separated by one space: UTC time, event, protocol, destination (address and port,
//! or a DNS name), and what decided it (a rule index, a list, or the default and the address's
//! class). The log is bounded twice over, because a guest chooses how many events it causes:
//! the file is rotated to `<path>.1` when it would pass its cap (so at most twice the cap is on
//! disk), and lines are rate-limited (a burst of [`BURST`], then [`PER_SECOND`] a second), with a
//! `suppressed N` line when writing resumes. Writes are small appends to a local file made
//! directly from the stack's task; a failed write is reported once through `tracing` and the
//! log is then disabled rather than failing the network.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub(crate) const BURST: u32 = 200;
pub(crate) const PER_SECOND: u32 = 100;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// The policy denied a flow, or it was DNS that would bypass the stack's resolver.
    Deny,
    /// A flow was refused because the flow table is full.
    Limit,
    /// A query for a blocked name was answered NXDOMAIN.
    DnsBlock,
    /// An upstream answer carried an address the policy denies (rebinding); SERVFAIL.
    DnsRebind,
    /// Under policy `none`, a query not in the hosts table was answered REFUSED.
    DnsRefused,
    /// A secret's placeholder where it may not go (the request was not forwarded), or a flow
    /// to intercept whose address this sandbox did not resolve from its server name (reset).
    Secret,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Deny => "deny",
            EventKind::Limit => "limit",
            EventKind::DnsBlock => "dns-block",
            EventKind::DnsRebind => "dns-rebind",
            EventKind::DnsRefused => "dns-refused",
            EventKind::Secret => "secret",
        })
    }
}

struct Rotating {
    path: PathBuf,
    file: File,
    size: u64,
    cap: u64,
}

impl Rotating {
    fn open(path: &Path, cap: u64) -> io::Result<Rotating> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Rotating {
            path: path.to_owned(),
            file,
            size,
            cap,
        })
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        if self.size + line.len() as u64 > self.cap {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .truncate(false)
                .open(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// Token bucket for lines.
struct RateLimit {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

pub(crate) struct NetLog {
    file: Option<Rotating>,
    rate: RateLimit,
}

impl NetLog {
    /// Opens (appends to) the log at `path`; `None` logs nowhere.
    pub(crate) fn open(path: Option<&Path>, cap: u64) -> io::Result<NetLog> {
        Ok(NetLog {
            file: path.map(|p| Rotating::open(p, cap)).transpose()?,
            rate: RateLimit {
                tokens: f64::from(BURST),
                last: Instant::now(),
                suppressed: 0,
            },
        })
    }

    pub(crate) fn record(
        &mut self,
        kind: EventKind,
        protocol: &str,
        destination: &dyn fmt::Display,
        reason: &dyn fmt::Display,
    ) {
        self.record_at(Instant::now(), kind, protocol, destination, reason);
    }

    fn record_at(
        &mut self,
        now: Instant,
        kind: EventKind,
        protocol: &str,
        destination: &dyn fmt::Display,
        reason: &dyn fmt::Display,
    ) {
        tracing::debug!(%kind, protocol, %destination, %reason, "network event");
        if self.file.is_none() {
            return;
        }
        let rate = &mut self.rate;
        let refill = now.duration_since(rate.last).as_secs_f64() * f64::from(PER_SECOND);
        rate.tokens = (rate.tokens + refill).min(f64::from(BURST));
        rate.last = rate.last.max(now);
        if rate.tokens < 1.0 {
            rate.suppressed += 1;
            return;
        }
        rate.tokens -= 1.0;
        let time = utc_timestamp(SystemTime::now());
        let mut text = String::new();
        if rate.suppressed > 0 {
            text.push_str(&format!("{time} suppressed {} events\n", rate.suppressed));
            rate.suppressed = 0;
        }
        text.push_str(&format!(
            "{time} {kind} {protocol} {destination} {reason}\n"
        ));
        if let Some(file) = &mut self.file {
            if let Err(error) = file.write_line(&text) {
                tracing::warn!(%error, path = %file.path.display(), "network log disabled");
                self.file = None;
            }
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` without a date library.
fn utc_timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(utc_timestamp(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn rotates_and_rate_limits() {
        let dir = std::env::temp_dir().join(format!("msb-netlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("network.log");
        let _ = std::fs::remove_file(&path);
        let mut log = NetLog::open(Some(&path), 4096).unwrap();
        let start = log.rate.last;
        for i in 0..1000 {
            let destination = format!("10.0.0.1:{i}");
            log.record_at(start, EventKind::Deny, "tcp", &destination, &"default");
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let rotated = std::fs::metadata(dir.join("network.log.1")).unwrap().len();
        assert!(current <= 4096 && rotated <= 4096, "{current} {rotated}");
        let text = std::fs::read_to_string(&path).unwrap();
        let last = text.lines().last().unwrap();
        assert!(last.ends_with(" deny tcp 10.0.0.1:199 default"), "{last}");
        // Everything past the burst was suppressed and is reported when writing resumes.
        let later = start + Duration::from_millis(10);
        log.record_at(later, EventKind::Limit, "tcp", &"1.1.1.1:1", &"max_flows");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(" suppressed 800 events\n"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
