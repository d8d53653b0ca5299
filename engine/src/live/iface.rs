//! Facts about a network interface: index, RX queue count, driver.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_GDRVINFO: u32 = 0x3;
const ETHTOOL_GRXFHINDIR: u32 = 0x38;

#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// The kernel's index of interface `name`, or `None` when there is no such interface.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // Safety: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn ethtool<T>(name: &str, data: &mut T) -> io::Result<()> {
    ethtool_raw(name, (data as *mut T).cast())
}

/// SIOCETHTOOL with `data` pointing at the command struct (its first field
/// the command number), which must stay valid and writable for as long as
/// the command's struct is.
fn ethtool_raw(name: &str, data: *mut libc::c_void) -> io::Result<()> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    // Safety: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Safety: fresh descriptor, owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data, _pad: [0; 16] };
    for (d, b) in req.name.iter_mut().zip(name.bytes()) {
        *d = b as libc::c_char;
    }
    // Safety: SIOCETHTOOL reads `req` (name + pointer to a command struct of
    // the type and size the command expects, which the callers guarantee)
    // and writes only into that struct.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req as *mut IfReq) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Number of RX queues of `name`: the ethtool channel count, or the
/// `queues/rx-*` entries in sysfs when the driver does not report channels.
pub fn rx_queues(name: &str) -> u32 {
    let mut ch = EthtoolChannels { cmd: ETHTOOL_GCHANNELS, ..EthtoolChannels::default() };
    if ethtool(name, &mut ch).is_ok() {
        let n = ch.combined_count.max(ch.rx_count);
        if n > 0 {
            return n;
        }
    }
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count() as u32)
        .unwrap_or(1)
        .max(1)
}

/// The driver of `name` (e.g. `veth`, `ixgbe`, `virtio_net`), when ethtool says.
pub fn driver(name: &str) -> Option<String> {
    let mut d = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    ethtool(name, &mut d).ok()?;
    let end = d.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&d.driver[..end]).into_owned())
}

/// The RX queues `name`'s RSS indirection table sends flows to (sorted,
/// distinct) and the table's size. An error when the driver keeps no table
/// it reports (veth, many virtual NICs: `EOPNOTSUPP`).
pub fn rss_queues(name: &str) -> io::Result<(usize, Vec<u32>)> {
    // struct ethtool_rxfh_indir { u32 cmd; u32 size; u32 ring_index[]; }:
    // asked with size 0 first, the driver says how big the table is.
    let mut head = [ETHTOOL_GRXFHINDIR, 0u32];
    ethtool(name, &mut head)?;
    let size = head[1] as usize;
    if size == 0 || size > 1 << 16 {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "no RSS indirection table"));
    }
    let mut buf = vec![0u32; 2 + size];
    buf[0] = ETHTOOL_GRXFHINDIR;
    buf[1] = size as u32;
    // The command struct is the whole buffer (head + `size` entries), which
    // outlives the call.
    ethtool_raw(name, buf.as_mut_ptr().cast())?;
    let mut queues: Vec<u32> = buf[2..].to_vec();
    queues.sort_unstable();
    queues.dedup();
    Ok((size, queues))
}

/// Online CPU cores.
pub fn online_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Keeps an interface in promiscuous mode while it lives: a mirror port's
/// frames are addressed to other hosts, and a NIC's MAC filter drops them
/// before XDP sees them unless the interface is promiscuous.
///
/// It holds a packet socket that receives nothing (protocol 0) with a
/// `PACKET_MR_PROMISC` membership, as libpcap does: the kernel counts such
/// memberships and drops this one when the socket closes, so even a killed
/// process leaves the interface as it found it (an operator's own
/// `ip link set … promisc on` is a separate count and stays).
#[derive(Debug)]
pub struct Promisc {
    _sock: OwnedFd,
}

impl Promisc {
    /// Make `ifindex` promiscuous for as long as the guard lives.
    pub fn hold(ifindex: u32) -> io::Result<Promisc> {
        // Safety: plain socket(2) call; the result is checked. Protocol 0:
        // the socket is never bound and receives no packets.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Safety: fresh descriptor, owned here.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // Safety: a zeroed packet_mreq is valid; type and ifindex are set below.
        let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mr.mr_ifindex = ifindex as i32;
        mr.mr_type = libc::PACKET_MR_PROMISC as u16;
        // Safety: `mr` is a packet_mreq of the size passed.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mr as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Promisc { _sock: sock })
    }
}
