//! The guest's network: loopback up, and the one virtio-net interface given
//! the static address, default route, MTU and nameservers the host chose.
//! The host side of the link is the sandbox's own stack, which enforces every
//! policy; nothing here is a security boundary.
//!
//! The classic `SIOCSIF*` and `SIOCADDRT` ioctls do all of it with no netlink
//! client in a static binary; this is the module's only unsafe code.

use std::ffi::CString;
use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use msb_protocol::GuestNetwork;

/// Brings loopback up (always) and configures the interface (when given).
pub fn configure(network: Option<&GuestNetwork>, hostname: &str) -> io::Result<()> {
    let socket = control_socket()?;
    set_up(&socket, "lo")?;
    write_hosts(hostname)?;
    let Some(network) = network else {
        return Ok(());
    };
    let interface = first_ethernet()?;
    set_mtu(&socket, &interface, network.mtu)?;
    set_address(&socket, &interface, libc::SIOCSIFADDR, network.address)?;
    set_address(
        &socket,
        &interface,
        libc::SIOCSIFNETMASK,
        netmask(network.prefix_len),
    )?;
    set_up(&socket, &interface)?;
    add_default_route(&socket, network.gateway)?;
    write_resolv_conf(&network.nameservers)
}

fn netmask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

/// The first interface that is not loopback (the VMM gives the guest one).
fn first_ethernet() -> io::Result<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "lo")
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no network interface"))
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory arguments; a non-negative result is a new
    // descriptor that the OwnedFd then owns alone.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn request(interface: &str) -> io::Result<libc::ifreq> {
    let name = CString::new(interface).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn ioctl(socket: &OwnedFd, op: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: `arg` points to a live, initialised structure of the type `op`
    // expects (ifreq or rtentry, built by the callers), used only during the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), op as _, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr_in(address: Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux and the
    // kernel reads an AF_INET sockaddr as a sockaddr_in.
    unsafe { mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

fn set_address(
    socket: &OwnedFd,
    interface: &str,
    op: libc::c_ulong,
    address: Ipv4Addr,
) -> io::Result<()> {
    let mut req = request(interface)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(address);
    ioctl(socket, op, (&mut req as *mut libc::ifreq).cast())
}

fn set_mtu(socket: &OwnedFd, interface: &str, mtu: u32) -> io::Result<()> {
    let mut req = request(interface)?;
    req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    ioctl(
        socket,
        libc::SIOCSIFMTU,
        (&mut req as *mut libc::ifreq).cast(),
    )
}

fn set_up(socket: &OwnedFd, interface: &str) -> io::Result<()> {
    let mut req = request(interface)?;
    ioctl(
        socket,
        libc::SIOCGIFFLAGS,
        (&mut req as *mut libc::ifreq).cast(),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(
        socket,
        libc::SIOCSIFFLAGS,
        (&mut req as *mut libc::ifreq).cast(),
    )
}

/// `struct rtentry` of <net/route.h> on 64-bit Linux.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_tos: libc::c_uchar,
    rt_class: libc::c_uchar,
    rt_pad4: [libc::c_short; 3],
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

const RTF_UP: libc::c_ushort = 0x0001;
const RTF_GATEWAY: libc::c_ushort = 0x0002;

fn add_default_route(socket: &OwnedFd, gateway: Ipv4Addr) -> io::Result<()> {
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(gateway),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_tos: 0,
        rt_class: 0,
        rt_pad4: [0; 3],
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(socket, libc::SIOCADDRT, (&mut route as *mut RtEntry).cast())
}

/// Replaces /etc/resolv.conf (in the sandbox's writable layer), first
/// removing a symlink there so nothing is written through it.
fn write_resolv_conf(nameservers: &[Ipv4Addr]) -> io::Result<()> {
    let path = std::path::Path::new("/etc/resolv.conf");
    if path
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        std::fs::remove_file(path)?;
    }
    std::fs::create_dir_all("/etc")?;
    let text: String = nameservers
        .iter()
        .map(|ns| format!("nameserver {ns}\n"))
        .collect();
    std::fs::write(path, text)
}

/// Names loopback and the sandbox itself, unless the image has its own hosts file.
fn write_hosts(hostname: &str) -> io::Result<()> {
    let path = std::path::Path::new("/etc/hosts");
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    std::fs::create_dir_all("/etc")?;
    std::fs::write(
        path,
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{hostname}\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_from_prefix_lengths() {
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn rtentry_has_the_kernels_layout() {
        // 8 + 3 * 16 + 2 + 2 + 4 (pad) + 8 + 1 + 1 + 6 + 2 + 8 + 8 + 8 + 2 (+6 pad) on x86_64.
        assert_eq!(mem::size_of::<RtEntry>(), 120);
    }
}
