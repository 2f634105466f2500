//! The host's view of a running VM for `Metrics`: the VM process's CPU time
//! and storage I/O from `/proc`, and the network stack's byte counters. All
//! host-side, so collecting them never wakes the guest.

use std::time::Instant;

use msb_control::HostMetrics;
use msb_netstack::NetStats;

pub struct MetricsSource {
    pub vm_pid: u32,
    pub booted: Instant,
    pub net: Option<NetStats>,
    /// The VM's memory, the ceiling of any figure the guest reports.
    pub memory_kib: u64,
}

/// The guest file the memory figures come from.
pub const MEMINFO: &str = "/proc/meminfo";

/// The most of it the runtime reads (a real one is under 2 KiB).
pub const MEMINFO_WINDOW: u32 = 16 << 10;

impl MetricsSource {
    /// The host's counters, with the guest's memory figures from `meminfo`
    /// (`/proc/meminfo` as the guest sent it, at most [`MEMINFO_WINDOW`] bytes).
    pub fn sample(&self, meminfo: Option<&[u8]>) -> HostMetrics {
        let (memory_total_kib, memory_available_kib) = meminfo
            .map(|text| parse_meminfo(text, self.memory_kib))
            .unwrap_or_default();
        let (cpu_ms, disk_read_bytes, disk_write_bytes) = (
            cpu_ms(self.vm_pid).unwrap_or(0),
            io_field(self.vm_pid, "read_bytes").unwrap_or(0),
            io_field(self.vm_pid, "write_bytes").unwrap_or(0),
        );
        let net = self
            .net
            .as_ref()
            .map(NetStats::snapshot)
            .unwrap_or_default();
        HostMetrics {
            uptime_ms: self.booted.elapsed().as_millis() as u64,
            cpu_ms,
            disk_read_bytes,
            disk_write_bytes,
            // The stack's "in" is what the guest sent.
            net_rx_bytes: net.bytes_out,
            net_tx_bytes: net.bytes_in,
            memory_total_kib,
            memory_available_kib,
            memory_limit_kib: self.memory_kib,
        }
    }
}

/// `MemTotal` and `MemAvailable` from a `/proc/meminfo` the guest sent: each
/// kept only if it parses and is possible (total at most the VM's memory,
/// available at most the total).
fn parse_meminfo(text: &[u8], ceiling_kib: u64) -> (Option<u64>, Option<u64>) {
    let text = String::from_utf8_lossy(text);
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?.trim();
            value.strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    let total = field("MemTotal").filter(|kib| *kib <= ceiling_kib);
    let available = field("MemAvailable").filter(|kib| total.is_some_and(|total| *kib <= total));
    (total, available)
}

/// User plus system time of every thread of `pid` (fields 14 and 15 of
/// `/proc/PID/stat`), in milliseconds.
fn cpu_ms(pid: u32) -> Option<u64> {
    let fields = msb_state::process_stat(pid)?;
    let ticks: u64 =
        fields.get(14 - 3)?.parse::<u64>().ok()? + fields.get(15 - 3)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks * 1000 / per_second as u64)
}

/// One counter of `/proc/PID/io`.
fn io_field(pid: u32, name: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_io_counters() {
        let pid = std::process::id();
        // Burn a little CPU so that the count is not zero.
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < 30 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(cpu_ms(pid).is_some_and(|ms| ms > 0));
        assert!(io_field(pid, "read_bytes").is_some());
        assert_eq!(io_field(pid, "no_such_counter"), None);
    }

    #[test]
    fn meminfo_figures_are_kept_only_when_possible() {
        let real = b"MemTotal:         500000 kB\nMemFree:  1 kB\nMemAvailable:     400000 kB\n";
        assert_eq!(
            parse_meminfo(real, 512 * 1024),
            (Some(500000), Some(400000))
        );
        // More memory than the VM has, or more available than in total: dropped.
        assert_eq!(parse_meminfo(real, 1024), (None, None));
        let inverted = b"MemTotal: 100 kB\nMemAvailable: 200 kB\n";
        assert_eq!(parse_meminfo(inverted, 1 << 20), (Some(100), None));
        assert_eq!(parse_meminfo(b"\xff\xfe garbage", 1 << 20), (None, None));
        assert_eq!(parse_meminfo(b"MemTotal: -5 kB\n", 1 << 20), (None, None));
    }
}
