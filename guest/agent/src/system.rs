//! The few things PID 1 does to the machine itself: first mounts, console
//! logging, stopping every process and powering off.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Mounts the kernel filesystems the agent itself needs before it can find its port.
pub fn early_mounts() -> io::Result<()> {
    for (source, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        std::fs::create_dir_all(target)?;
        mount(
            Some(source),
            target,
            Some(fstype),
            MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .map_err(io::Error::from)?;
    }
    Ok(())
}

/// Whether the kernel command line asked for boot-phase timings (`msb.debug`).
static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

pub fn set_debug(enabled: bool) {
    let _ = DEBUG.set(enabled);
}

/// Logs a boot phase with the time since the kernel started, when `msb.debug` is set.
pub fn phase(name: &str) {
    if DEBUG.get().copied().unwrap_or(false) {
        let since_boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
            .unwrap_or(0.0);
        log(&format!("[{since_boot:.3}] {name}"));
    }
}

/// Writes one line to the kernel console, which the host keeps as the console log.
pub fn log(line: &str) {
    if let Ok(mut console) = OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(console, "msb-agent: {line}");
    }
}

/// Asks every process but PID 1 to stop, waits up to `grace`, then kills what is left.
pub fn stop_all_processes(grace: Duration) {
    // kill(-1) from PID 1 reaches every other process in the guest.
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && other_processes_exist() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
}

fn other_processes_exist() -> bool {
    // Reap what has exited so that zombies do not count as alive.
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            return true;
        }
    }
    false
}

/// Flushes filesystems and stops the VM. The VMM runs with reboot turned into exit.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // Only reached if the reboot call failed; PID 1 returning would panic the kernel.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `RNDADDENTROPY` (`_IOW('R', 0x03, int[2])`) and `RNDRESEEDCRNG` (`_IO('R', 0x07)`) from
/// `linux/random.h`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Mixes the host's `entropy` into the kernel's pool, credited, and reseeds the
/// generator from it. Guests restored from one snapshot resume with the same
/// generator state; after this, what they draw differs. Runs before any process
/// of the sandbox exists.
pub fn reseed_random(entropy: &[u8]) -> io::Result<()> {
    if entropy.is_empty() {
        return Ok(());
    }
    let random = OpenOptions::new().write(true).open("/dev/random")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&((entropy.len() * 8) as libc::c_int).to_ne_bytes());
    info.extend_from_slice(&(entropy.len() as libc::c_int).to_ne_bytes());
    info.extend_from_slice(entropy);
    info.resize(info.len().next_multiple_of(4), 0);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&random);
    // SAFETY: RNDADDENTROPY reads a rand_pool_info of buf_size bytes of data, all
    // inside `info`, which outlives the call.
    if unsafe { libc::ioctl(fd, RNDADDENTROPY, info.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(fd, RNDRESEEDCRNG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the wall clock to the host's (nanoseconds since the Unix epoch).
pub fn set_clock(realtime_ns: u64) -> io::Result<()> {
    if realtime_ns == 0 {
        return Ok(());
    }
    let time = nix::sys::time::TimeSpec::new(
        (realtime_ns / 1_000_000_000) as libc::time_t,
        (realtime_ns % 1_000_000_000) as libc::c_long,
    );
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, time).map_err(io::Error::from)
}
