//! msb-agent: PID 1 of every microsandbox guest.
//!
//! Boot: mount /proc, /sys and /dev, open the virtio-serial port named `agent`,
//! greet the host, wait for `Init`, assemble the root filesystem and switch into
//! it, then serve requests until the host asks for shutdown or goes away. Any
//! fatal error powers the VM off: PID 1 must never return.
//!
//! Threading: one current-thread tokio runtime. The dispatcher task reads host
//! frames and routes them; one writer task owns the port's write half, fed by a
//! channel; each exec runs in its own task; the reaper task is the only caller
//! of `waitpid`, since as PID 1 the agent also inherits every orphan.

mod cgroup;
mod channel;
mod exec;
mod fs;
mod input;
mod net;
mod outbox;
mod pty;
mod pump;
mod reaper;
mod rootfs;
mod server;
mod system;
mod trust;
mod users;

/// The agent's nice value: ahead of every process it starts (which run at 0).
pub const AGENT_NICE: libc::c_int = -10;

fn main() {
    if std::process::id() != 1 {
        eprintln!("msb-agent: must run as PID 1 inside a microsandbox guest");
        std::process::exit(2);
    }
    // Files the agent creates get 0644/0755 unless a request says otherwise.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if let Err(err) = system::early_mounts() {
        system::log(&format!("early mounts failed: {err}"));
        system::power_off();
    }
    // The host stops a guest whose agent leaves liveness pings unanswered for
    // seconds; a guest busy with its own work must not starve the agent into
    // that. Children get the default priority back (exec.rs, before exec).
    // SAFETY: setpriority on this process; no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, AGENT_NICE) } != 0 {
        system::log("could not raise the agent's priority");
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    system::set_debug(cmdline.split_whitespace().any(|arg| arg == "msb.debug"));
    system::phase("agent started");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            system::log(&format!("cannot start the async runtime: {err}"));
            system::power_off();
        }
    };
    match runtime.block_on(server::serve()) {
        Ok(()) => system::log("host asked for shutdown"),
        Err(err) => system::log(&format!("stopping: {err}")),
    }
    system::power_off();
}
