//! The guest's kernel console: written to `console.log` up to a cap (the guest
//! controls what it prints, and must not be able to fill the host's disk), with
//! the last few KiB always kept in memory for error reports.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::events::EventLog;

/// Bytes of console output written to the log before it stops growing.
const LOG_CAP: u64 = 8 << 20;
/// Bytes of the most recent console output kept for error messages.
const TAIL_LEN: usize = 8 << 10;

#[derive(Clone, Default)]
pub struct ConsoleTail(Arc<Mutex<VecDeque<u8>>>);

impl ConsoleTail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tail.extend(bytes);
        let excess = tail.len().saturating_sub(TAIL_LEN);
        tail.drain(..excess);
    }

    /// The kept output as text, trimmed to whole lines where possible.
    pub fn text(&self) -> String {
        let tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = tail.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes).replace('\r', "");
        match text.find('\n') {
            Some(first_break) if tail.len() == TAIL_LEN => text[first_break + 1..].to_string(),
            _ => text,
        }
    }
}

/// Copies the console stream into `path`, the tail and the event log until the VM closes it.
pub async fn record(
    mut stream: UnixStream,
    path: &Path,
    tail: ConsoleTail,
    events: EventLog,
) -> std::io::Result<()> {
    let mut log = File::create(path).await?;
    let mut written = 0u64;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            events.flush_console();
            return log.flush().await;
        }
        tail.push(&buf[..n]);
        events.console(&buf[..n]);
        if written < LOG_CAP {
            let take = n.min((LOG_CAP - written) as usize);
            log.write_all(&buf[..take]).await?;
            written += take as u64;
            if written == LOG_CAP {
                log.write_all(b"\n[microsandbox: console log truncated here]\n")
                    .await?;
            }
            log.flush().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_latest_bytes_on_line_boundaries() {
        let tail = ConsoleTail::default();
        tail.push(b"first line\r\n");
        assert_eq!(tail.text(), "first line\n");
        for i in 0..2000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        let text = tail.text();
        assert!(text.len() <= TAIL_LEN);
        assert!(text.ends_with("line 1999\n"));
        assert!(text.starts_with("line "));
        assert!(!text.contains("first line"));
    }
}
