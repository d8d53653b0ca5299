//! Just enough rtnetlink to attach, detach and inspect an interface's XDP
//! program the old way (`IFLA_XDP`), and to read link facts.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFLA_XDP: u16 = 43;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;

/// What `IFLA_XDP` reports for an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpState {
    /// 0 none, 1 native, 2 generic, 3 offloaded, 4 several.
    pub attached: u8,
    pub prog_id: u32,
}

struct Msg(Vec<u8>);

impl Msg {
    fn new(ty: u16, flags: u16, ifindex: u32) -> Msg {
        let mut b = vec![0u8; 16];
        b[4..6].copy_from_slice(&ty.to_ne_bytes());
        b[6..8].copy_from_slice(&flags.to_ne_bytes());
        b[8..12].copy_from_slice(&1u32.to_ne_bytes());
        // struct ifinfomsg
        let mut ifi = [0u8; 16];
        ifi[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        b.extend_from_slice(&ifi);
        Msg(b)
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }

    fn nested(&mut self, ty: u16, f: impl FnOnce(&mut Msg)) {
        let start = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        f(self);
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn socket() -> io::Result<OwnedFd> {
    // Safety: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Safety: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send one request and return the reply datagram.
fn transact(req: &[u8]) -> io::Result<Vec<u8>> {
    let s = socket()?;
    // Safety: `req` is a valid buffer of the given length.
    let n = unsafe { libc::send(s.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    // Safety: `buf` is writable for its whole length.
    let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2).map_or(0, |s| u16::from_ne_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4).map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// The error code of an ack (0 = success).
fn ack(reply: &[u8]) -> io::Result<()> {
    if u16_at(reply, 4) == NLMSG_ERROR {
        let code = u32_at(reply, 16) as i32;
        if code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
    }
    Ok(())
}

fn set_xdp_fd(ifindex: u32, fd: i32, flags: u32) -> io::Result<()> {
    let mut m = Msg::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex);
    m.nested(IFLA_XDP, |m| {
        m.attr(IFLA_XDP_FD, &fd.to_ne_bytes());
        m.attr(IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    });
    ack(&transact(&m.finish())?)
}

/// Attach program `prog_fd` to `ifindex` over netlink.
pub fn attach_xdp(ifindex: u32, prog_fd: i32, flags: u32) -> io::Result<()> {
    set_xdp_fd(ifindex, prog_fd, flags)
}

/// Detach whatever program is attached over netlink in the mode of `flags`.
pub fn detach_xdp(ifindex: u32, flags: u32) -> io::Result<()> {
    set_xdp_fd(ifindex, -1, flags)
}

/// The XDP program state of `ifindex`.
pub fn xdp_state(ifindex: u32) -> io::Result<XdpState> {
    let m = Msg::new(RTM_GETLINK, NLM_F_REQUEST, ifindex);
    let reply = transact(&m.finish())?;
    ack(&reply)?;
    let len = (u32_at(&reply, 0) as usize).min(reply.len());
    let mut st = XdpState::default();
    let mut o = 32; // nlmsghdr + ifinfomsg
    while o + 4 <= len {
        let alen = u16_at(&reply, o) as usize;
        let ty = u16_at(&reply, o + 2) & !NLA_F_NESTED;
        if alen < 4 {
            break;
        }
        if ty == IFLA_XDP {
            let end = (o + alen).min(len);
            let mut p = o + 4;
            while p + 4 <= end {
                let l = u16_at(&reply, p) as usize;
                if l < 4 {
                    break;
                }
                match u16_at(&reply, p + 2) {
                    IFLA_XDP_ATTACHED => st.attached = reply.get(p + 4).copied().unwrap_or(0),
                    IFLA_XDP_PROG_ID => st.prog_id = u32_at(&reply, p + 4),
                    _ => {}
                }
                p += (l + 3) & !3;
            }
        }
        o += (alen + 3) & !3;
    }
    Ok(st)
}
