//! `events.log`: the sandbox's output log, one line per event, each with the
//! time it happened: `<unix ms> <source> <text>`. Sources are `console` (a
//! line the guest's console printed) and `runtime` (boot, stop requests, the
//! end and why). `Sandbox.logs()` reads and follows it.
//!
//! The guest controls the console's bytes: each line is made printable (other
//! control characters become U+FFFD, invalid UTF-8 too), split at
//! [`MAX_LINE`] bytes, and the file stops growing at [`LOG_CAP`] with a last
//! line that says so. A write failure is logged once and never stops the VM.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes the log may reach before it stops growing.
const LOG_CAP: u64 = 8 << 20;
/// The longest line; longer console lines are split.
const MAX_LINE: usize = 4096;
/// Room kept for the line that says the log stopped.
const CLOSING_RESERVE: u64 = 128;

#[derive(Clone)]
pub struct EventLog(Arc<Mutex<Inner>>);

struct Inner {
    file: Option<File>,
    written: u64,
    /// A console line still being received.
    partial: Vec<u8>,
}

impl EventLog {
    pub fn create(path: &Path) -> EventLog {
        let file = File::create(path)
            .inspect_err(|err| tracing::warn!(%err, "cannot create the event log"))
            .ok();
        EventLog(Arc::new(Mutex::new(Inner {
            file,
            written: 0,
            partial: Vec::new(),
        })))
    }

    /// An event of the runtime's own.
    pub fn runtime(&self, text: &str) {
        self.lock().write_line("runtime", text.as_bytes());
    }

    /// Console bytes as they arrive; whole lines are logged.
    pub fn console(&self, bytes: &[u8]) {
        let mut inner = self.lock();
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut inner.partial);
                inner.write_line("console", &line);
            } else {
                inner.partial.push(byte);
                if inner.partial.len() == MAX_LINE {
                    let line = std::mem::take(&mut inner.partial);
                    inner.write_line("console", &line);
                }
            }
        }
    }

    /// Logs a console line left without its newline (the VM ended).
    pub fn flush_console(&self) {
        let mut inner = self.lock();
        if !inner.partial.is_empty() {
            let line = std::mem::take(&mut inner.partial);
            inner.write_line("console", &line);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn write_line(&mut self, source: &str, text: &[u8]) {
        let Some(file) = &mut self.file else {
            return;
        };
        if self.written >= LOG_CAP {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let text = printable(text);
        let mut line = format!("{now} {source} {text}\n");
        let closing = self.written + line.len() as u64 + CLOSING_RESERVE > LOG_CAP;
        if closing {
            line = format!("{now} runtime the event log reached its size limit and stops here\n");
        }
        match file.write_all(line.as_bytes()) {
            Ok(()) if closing => self.written = LOG_CAP,
            Ok(()) => self.written += line.len() as u64,
            Err(err) => {
                tracing::warn!(%err, "cannot write the event log; no more events are logged");
                self.file = None;
            }
        }
    }
}

/// Text with no control characters but tab; carriage returns are dropped.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| *c != '\r')
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<(String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| {
                let mut parts = line.splitn(3, ' ');
                let time = parts.next().unwrap();
                assert!(time.parse::<u128>().unwrap() > 1_600_000_000_000);
                (
                    parts.next().unwrap().to_string(),
                    parts.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn console_lines_are_whole_printable_and_split_when_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let log = EventLog::create(&path);
        log.runtime("booted");
        log.console(b"hello ");
        log.console(b"world\r\nescape \x1b[31m and\x00 nul\n");
        log.console(&vec![b'x'; MAX_LINE + 10]);
        log.console(b"\ntail without newline");
        log.flush_console();
        let got = lines(&path);
        assert_eq!(got[0], ("runtime".into(), "booted".into()));
        assert_eq!(got[1], ("console".into(), "hello world".into()));
        assert_eq!(got[2].1, "escape \u{FFFD}[31m and\u{FFFD} nul");
        assert_eq!(got[3].1.len(), MAX_LINE);
        assert_eq!(got[4].1, "x".repeat(10));
        assert_eq!(got[5].1, "tail without newline");
        assert_eq!(got.len(), 6);
    }

    #[test]
    fn the_log_stops_growing_at_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let log = EventLog::create(&path);
        let line = vec![b'y'; 1000];
        for _ in 0..(LOG_CAP / 1000 + 100) {
            log.console(&line);
            log.console(b"\n");
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= LOG_CAP, "{len}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.trim_end().ends_with("stops here"));
    }
}
