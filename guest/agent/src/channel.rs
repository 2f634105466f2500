//! The host channel: the virtio-serial port the VMM names `agent`.
//!
//! Why not tokio's pipe types: they assume a short read or write means the
//! descriptor is drained (true of pipes and sockets) and stop polling until the
//! next edge. A virtio port returns one host buffer per read and takes at most
//! 32 KiB per write, so a short transfer says nothing about what is left, and
//! waiting for an edge that already came would hang. [`PortReader`] and
//! [`PortWriter`] keep going until the port itself says "would block".

use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Name the host gives the agent's virtio-serial port.
const PORT_NAME: &str = "agent";

/// How long to wait for the port's device to appear after boot.
const PORT_WAIT: Duration = Duration::from_secs(10);

pub struct PortReader(Arc<AsyncFd<OwnedFd>>);
pub struct PortWriter(Arc<AsyncFd<OwnedFd>>);

/// Finds the port by name (there is no udev: sysfs holds each port's name) and
/// opens it non-blocking, as a read half and a write half over one open file.
pub async fn open() -> io::Result<(PortReader, PortWriter)> {
    let device = find_port().await?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(&device)?;
    let fd = OwnedFd::from(file);
    // SAFETY: an OwnedFd's descriptor is open and owned by it alone, and the
    // AsyncFd owns the OwnedFd until it is dropped.
    let port = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
    let port = Arc::new(port);
    Ok((PortReader(port.clone()), PortWriter(port)))
}

impl AsyncRead for PortReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            // try_io clears readiness only on WouldBlock.
            match guard.try_io(|fd| retry_interrupted(|| nix::unistd::read(fd.get_ref(), unfilled)))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PortWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| retry_interrupted(|| nix::unistd::write(fd.get_ref(), data))) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn retry_interrupted(mut call: impl FnMut() -> nix::Result<usize>) -> io::Result<usize> {
    loop {
        match call() {
            Err(nix::errno::Errno::EINTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
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
