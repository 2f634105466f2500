//! msb-hostile-agent: a **test tool**, an impostor guest agent. It is never part
//! of a shipped package: `scripts/build.sh` installs it to `assets/` for the
//! end-to-end tests only (`__test__/hostile.e2e.test.ts`), and the npm package
//! leaves it out.
//!
//! It shows what guest root can do to the host: freeze the real agent (PID 1)
//! with ptrace, take its virtio port with `pidfd_getfd`, and from then on
//! answer the host's requests itself, with any content (see `takeover`). The
//! host must survive every answer; each scenario is one kind of lie
//! (`scenario`).
//!
//! Usage, as root inside a booted sandbox: `msb-hostile-agent <scenario> [tag]`.
//! It checks that the takeover can work, then daemonizes (its stdio goes to
//! /dev/null, so the exec that started it ends normally) and waits 300 ms, so
//! the real agent has sent that exec's `Exited` before it is frozen. Then it
//! serves the host until it is killed or the host shuts the VM down. The tag,
//! if given, is appended to the escaping names of `traversal`. Diagnostics
//! from the daemon go to the guest console (the sandbox's `console.log`).
//!
//! Threading: the main thread reads host frames and answers them; each flood
//! runs on a thread of its own (`port` says how they share the port).

mod port;
mod scenario;
mod takeover;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use msb_protocol::Envelope;
use nix::unistd::{fork, setsid, ForkResult};

use crate::port::Writer;
use crate::scenario::{Action, Scenario, Session};

/// Time for the real agent to finish the exec that started this process.
const SETTLE: Duration = Duration::from_millis(300);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(scenario) = args.get(1).and_then(|name| Scenario::parse(name)) else {
        let names: Vec<&str> = Scenario::ALL.iter().map(|(name, _)| *name).collect();
        eprintln!(
            "usage: msb-hostile-agent <scenario> [tag]\nscenarios: {}",
            names.join(", ")
        );
        std::process::exit(2);
    };
    let tag = args.get(2).cloned().unwrap_or_default();

    // Fail in the foreground, where the exec that started us sees why.
    if let Err(err) = preflight() {
        eprintln!("msb-hostile-agent: {err}");
        std::process::exit(1);
    }
    if let Err(err) = daemonize() {
        eprintln!("msb-hostile-agent: cannot daemonize: {err}");
        std::process::exit(1);
    }
    std::thread::sleep(SETTLE);
    if let Err(err) = serve(scenario, &tag) {
        console(&format!("stopped: {err}"));
        std::process::exit(1);
    }
}

/// The takeover's prerequisites: root, and a port descriptor in PID 1.
fn preflight() -> std::io::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(std::io::Error::other("must run as root"));
    }
    takeover::find_port_fd()?;
    takeover::open_init()?;
    Ok(())
}

/// Leaves the exec that started this process: the parent exits at once; the
/// child, in a session of its own with stdio on /dev/null, carries on.
fn daemonize() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // SAFETY: the process is single-threaded here, so the child may run any code.
    match unsafe { fork() }.map_err(std::io::Error::from)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().map_err(std::io::Error::from)?;
    // Redirecting closes this process's ends of the exec's pipes, so the
    // agent sees end-of-file and reports the exec finished.
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}

fn serve(scenario: Scenario, tag: &str) -> std::io::Result<()> {
    let threads = takeover::freeze_init()?;
    let init = takeover::open_init()?;
    let port_fd = takeover::find_port_fd()?;
    let port = takeover::steal_fd(&init, port_fd)?;
    console(&format!(
        "froze {threads} thread(s) of PID 1, took its port (fd {port_fd}); serving {scenario:?}"
    ));
    let (mut frames, writer) = port::split(port)?;
    let writer = Arc::new(writer);
    let mut session = Session::new(scenario, tag);
    for action in session.opening() {
        perform(&writer, action)?;
    }
    while let Some(Envelope { id, msg }) = frames.next()? {
        for action in session.answer(id, msg) {
            perform(&writer, action)?;
        }
    }
    console("the host closed the channel");
    Ok(())
}

fn perform(writer: &Arc<Writer>, action: Action) -> std::io::Result<()> {
    match action {
        Action::Send(envelope) => writer.send(envelope),
        Action::Raw(bytes) => writer.send_raw(&bytes),
        Action::Flood(id, flood) => {
            let writer = writer.clone();
            std::thread::spawn(move || {
                // Ends when the port fails, i.e. when the host has gone.
                for seq in 0.. {
                    if writer
                        .send_flood(Envelope::new(id, flood.message(seq)))
                        .is_err()
                    {
                        break;
                    }
                }
            });
            Ok(())
        }
        Action::PowerOff => {
            // What the agent does on Shutdown; the VMM turns the reset into exit.
            nix::unistd::sync();
            let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
            Err(std::io::Error::other(format!("reboot failed: {err:?}")))
        }
    }
}

/// One line on the guest console, which the host records as `console.log`.
fn console(line: &str) {
    if let Ok(mut console) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(console, "msb-hostile-agent: {line}");
    }
}
