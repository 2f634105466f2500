//! The host channel: the virtio-serial port the VMM names `agent`.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::unix::pipe;

/// Name the host gives the agent's virtio-serial port.
const PORT_NAME: &str = "agent";

/// How long to wait for the port's device to appear after boot.
const PORT_WAIT: Duration = Duration::from_secs(10);

/// Finds the port by name (there is no udev: sysfs holds each port's name) and
/// opens it non-blocking, as a read half and a write half over one open file.
pub async fn open() -> io::Result<(pipe::Receiver, pipe::Sender)> {
    let device = find_port().await?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(&device)?;
    let read_half: OwnedFd = file.try_clone()?.into();
    let write_half: OwnedFd = file.into();
    // A virtio port is a character device, not a FIFO, hence the unchecked
    // constructors; both halves were opened non-blocking above.
    Ok((
        pipe::Receiver::from_owned_fd_unchecked(read_half)?,
        pipe::Sender::from_owned_fd_unchecked(write_half)?,
    ))
}

async fn find_port() -> io::Result<PathBuf> {
    let deadline = tokio::time::Instant::now() + PORT_WAIT;
    loop {
        if let Some(path) = port_by_name()? {
            if path.exists() {
                return Ok(path);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no virtio-serial port named {PORT_NAME:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn port_by_name() -> io::Result<Option<PathBuf>> {
    let ports = match std::fs::read_dir("/sys/class/virtio-ports") {
        Ok(ports) => ports,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    for port in ports {
        let port = port?;
        let name = std::fs::read_to_string(port.path().join("name")).unwrap_or_default();
        if name.trim_end() == PORT_NAME {
            return Ok(Some(PathBuf::from("/dev").join(port.file_name())));
        }
    }
    Ok(None)
}
