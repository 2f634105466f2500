//! The sandbox directory as the engine and the runtime share it:
//!
//! ```text
//! <sandbox dir>/lock          the name lock (flock), held by the runtime through LOCK_FD
//!               runtime.log   the runtime's stderr
//!               vmm.log       the VMM's stderr
//!               console.log   the guest kernel console (capped)
//!               events.log    the console's lines and the runtime's events, timestamped (capped)
//!               network.log   denied flows and blocked names
//! ```

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The runtime's stdin is the client connection; this fd carries the sandbox's
/// lock, held for as long as the runtime lives.
pub const LOCK_FD: i32 = 3;

pub const CONSOLE_LOG: &str = "console.log";
/// Timestamped lines: the console's and the runtime's events (`<unix ms> <source> <text>`).
pub const EVENTS_LOG: &str = "events.log";
pub const VMM_LOG: &str = "vmm.log";
pub const RUNTIME_LOG: &str = "runtime.log";
pub const NETWORK_LOG: &str = "network.log";
pub const LOCK: &str = "lock";

/// The last `max` bytes of a log file as text (lossy), for error messages;
/// empty when the file cannot be read. Only the tail is read: logs the guest
/// can grow are never loaded whole.
pub fn tail(path: &Path, max: u64) -> String {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
        let mut bytes = Vec::new();
        file.take(max).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    String::from_utf8_lossy(&read().unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_the_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "first\nsecond\n").unwrap();
        assert_eq!(tail(&path, 7), "second\n");
        assert_eq!(tail(&path, 1000), "first\nsecond\n");
        assert_eq!(tail(&dir.path().join("missing"), 10), "");
    }
}
