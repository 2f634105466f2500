//! `msb-runtime`: started by the engine, one per sandbox. Its stdin is the
//! client connection (a stream socket); fd 3 holds the sandbox lock; stderr is
//! the runtime log.
//!
//! `msb-runtime --check` only checks that the VMM program it would launch is
//! there and runs (exit 0), or says what to install (exit 1): the engine's
//! `isInstalled()` asks it, so that only the runtime knows how it finds QEMU.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use msb_control::LOCK_FD;
use msb_runtime::RuntimeSettings;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MSB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let settings = RuntimeSettings::from_env();
    if std::env::args().nth(1).as_deref() == Some("--check") {
        return check_vmm(&settings);
    }
    let client = match client_socket() {
        Ok(client) => client,
        Err(message) => {
            eprintln!("msb-runtime: {message}");
            return ExitCode::from(2);
        }
    };
    let _lock = take_lock_fd();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let client = tokio::net::UnixStream::from_std(client)?;
        msb_runtime::run(client, &settings).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "runtime failed");
            ExitCode::FAILURE
        }
    }
}

/// Runs the VMM program with `--version`: present and runnable, or what to install.
fn check_vmm(settings: &RuntimeSettings) -> ExitCode {
    let program = &settings.vmm.qemu;
    match std::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{} --version failed ({status})", program.display());
            ExitCode::FAILURE
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let missing = msb_vmm::LaunchError::ProgramNotFound {
                program: program.display().to_string(),
            };
            eprintln!("{missing}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("{}: {err}", program.display());
            ExitCode::FAILURE
        }
    }
}

/// The client connection, checked to be a socket: the runtime is started by the
/// engine, not by hand.
fn client_socket() -> Result<UnixStream, String> {
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("stdin: {e}"))?;
    let file = std::fs::File::from(stdin);
    let is_socket = file
        .metadata()
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    if !is_socket {
        return Err(
            "stdin must be the engine's socket; msb-runtime is started by microsandbox".into(),
        );
    }
    let socket = UnixStream::from(OwnedFd::from(file));
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("stdin: {e}"))?;
    Ok(socket)
}

/// Takes ownership of the inherited lock fd, marking it close-on-exec so the VMM
/// does not inherit it. Returns `None` when the engine passed no lock.
fn take_lock_fd() -> Option<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor table entry; an unused number fails with EBADF.
    if unsafe { libc::fcntl(LOCK_FD, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the fd is open (checked above) and by the launch contract nothing
    // else in this process uses fd 3, so this is its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(LOCK_FD) };
    // SAFETY: F_SETFD on an fd we own changes only its close-on-exec flag.
    unsafe { libc::fcntl(LOCK_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(fd)
}
