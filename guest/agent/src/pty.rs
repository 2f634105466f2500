//! Pseudo-terminals for execs that ask for a TTY: the child gets the slave as
//! its controlling terminal and stdio; the agent keeps the master.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use msb_protocol::TtySize;
use nix::pty::{openpty, Winsize};

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

fn winsize(size: TtySize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

pub fn open(size: TtySize) -> io::Result<Pty> {
    let pair = openpty(Some(&winsize(size)), None).map_err(io::Error::from)?;
    // The child gets the slave through dup2, the agent keeps only the master:
    // neither must leak into other children.
    for fd in [&pair.master, &pair.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(io::Error::from)?;
    }
    Ok(Pty {
        master: pair.master,
        slave: pair.slave,
    })
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// Sets the terminal size; the kernel sends SIGWINCH to the terminal's foreground group.
pub fn resize(master: &OwnedFd, size: TtySize) -> io::Result<()> {
    let ws = winsize(size);
    // SAFETY: `master` is an open pty master and `ws` a valid winsize that the
    // kernel only reads during the call.
    unsafe { set_winsize(master.as_raw_fd(), &ws) }
        .map(drop)
        .map_err(io::Error::from)
}
