//! The AF_PACKET fallback: a TPACKET_V3 ring per socket, several sockets per
//! interface joined in a fanout group (spread by flow hash). Used where XDP
//! cannot be attached. Frames are lent from the ring's blocks; a block goes
//! back to the kernel when every frame read from it has been recycled.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use super::LiveError;
use crate::source::{Batch, CaptureStats, Desc, FrameArea, LinkType, PacketSource, Region, SourceError, SourceStats};

const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_USER: u32 = 1;
const PACKET_FANOUT_HASH: u32 = 0;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
/// tpacket3_hdr (48 bytes) + sockaddr_ll (20): the frame starts after this.
const FRAME_HDR: usize = 68;

#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    packets: u32,
    drops: u32,
    freeze_q_cnt: u32,
}

/// The mapped ring.
struct Ring {
    ptr: NonNull<u8>,
    len: usize,
}

// Safety: plain shared memory; blocks are read only while user space owns them.
unsafe impl Send for Ring {}
// Safety: as above.
unsafe impl Sync for Ring {}

impl FrameArea for Ring {
    fn frame(&self, offset: usize, len: usize) -> &[u8] {
        match offset.checked_add(len) {
            // Safety: in bounds of the mapping; the frame's block stays with
            // user space until every batch naming the frame is recycled.
            Some(end) if end <= self.len => unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) },
            _ => &[],
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Safety: unmapping exactly the ring mapped in `open`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One TPACKET_V3 socket.
pub struct PacketSocket {
    fd: OwnedFd,
    ring: Arc<Ring>,
    block_size: usize,
    blocks: usize,
    /// Block being read, the offset of its next frame, and frames left in it.
    cur: usize,
    off: usize,
    left: u32,
    /// Frames of each block not yet recycled, and whether it has been read whole.
    lent: Vec<u32>,
    read_done: Vec<bool>,
    name: String,
    iface_name: String,
    iface: u16,
    queue: u32,
    stats: SourceStats,
    kernel_drops: std::cell::Cell<u64>,
}

fn last_err(context: String) -> LiveError {
    LiveError::io(context, io::Error::last_os_error())
}

impl PacketSocket {
    /// Open socket `member` of `members` on `iface_name` (fanout group `group`).
    pub fn open(
        iface_name: &str,
        iface: u16,
        member: u32,
        group: u16,
        block_size: u32,
        blocks: u32,
    ) -> Result<PacketSocket, LiveError> {
        let ifindex =
            super::iface::ifindex(iface_name).ok_or_else(|| LiveError::NoSuchInterface(iface_name.to_string()))?;
        let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // Safety: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => LiveError::Permission {
                    what: format!("{iface_name}: opening a packet socket"),
                    capability: "cap_net_raw",
                },
                _ => LiveError::io(format!("{iface_name}: packet socket"), e),
            });
        }
        // Safety: fresh descriptor, owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let setopt = |opt: libc::c_int, val: *const libc::c_void, len: usize| -> bool {
            // Safety: `val` points to `len` valid bytes of the option's type.
            unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, opt, val, len as u32) == 0 }
        };
        let v = TPACKET_V3;
        if !setopt(libc::PACKET_VERSION, (&v as *const libc::c_int).cast(), 4) {
            return Err(last_err(format!("{iface_name}: TPACKET_V3")));
        }
        let req = TpacketReq3 {
            block_size,
            block_nr: blocks,
            frame_size: 2048,
            frame_nr: block_size / 2048 * blocks,
            retire_blk_tov: 10,
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        if !setopt(libc::PACKET_RX_RING, (&req as *const TpacketReq3).cast(), std::mem::size_of::<TpacketReq3>()) {
            return Err(last_err(format!("{iface_name}: packet ring of {blocks} x {block_size} bytes")));
        }
        let len = block_size as usize * blocks as usize;
        // Safety: mapping the ring the kernel just set up for this socket.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_err(format!("{iface_name}: mapping the packet ring")));
        }
        let ring = Arc::new(Ring { ptr: NonNull::new(p.cast()).expect("mmap returned null"), len });
        // Safety: zeroed sockaddr_ll is valid; the fields bind reads are set below.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sa.sll_ifindex = ifindex as i32;
        // Safety: `sa` is a properly sized sockaddr_ll.
        if unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        } < 0
        {
            return Err(last_err(format!("{iface_name}: binding the packet socket")));
        }
        let fanout: u32 = group as u32 | (PACKET_FANOUT_HASH << 16);
        if !setopt(libc::PACKET_FANOUT, (&fanout as *const u32).cast(), 4) {
            return Err(last_err(format!("{iface_name}: joining fanout group {group}")));
        }
        // Promiscuous: a mirror port's frames are not addressed to us.
        // Safety: zeroed packet_mreq is valid; type and ifindex are set.
        let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mr.mr_ifindex = ifindex as i32;
        mr.mr_type = libc::PACKET_MR_PROMISC as u16;
        // Safety: `mr` is a packet_mreq.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mr as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as u32,
            )
        };
        Ok(PacketSocket {
            fd,
            ring,
            block_size: block_size as usize,
            blocks: blocks as usize,
            cur: 0,
            off: 0,
            left: 0,
            lent: vec![0; blocks as usize],
            read_done: vec![false; blocks as usize],
            name: format!("{iface_name}:{member}"),
            iface_name: iface_name.to_string(),
            iface,
            queue: member,
            stats: SourceStats::default(),
            kernel_drops: std::cell::Cell::new(0),
        })
    }

    fn block_status(&self, b: usize) -> u32 {
        let off = b * self.block_size + 8; // tpacket_block_desc: version, offset_to_priv, then block_status
        let s = self.ring.frame(off, 4);
        u32::from_ne_bytes([s[0], s[1], s[2], s[3]])
    }

    fn give_back(&mut self, b: usize) {
        let off = b * self.block_size + 8;
        // Safety: the status word of block `b`, which user space owns (status
        // USER) and whose frames are all recycled; writing 0 hands it back.
        unsafe {
            let p = self.ring.ptr.as_ptr().add(off) as *mut u32;
            std::ptr::write_volatile(p, 0);
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.read_done[b] = false;
    }

    /// Read up to `max` frames, continuing inside the current block.
    fn take(&mut self, batch: &mut Batch, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let b = self.cur;
            if self.left == 0 {
                if self.read_done[b] || self.block_status(b) & TP_STATUS_USER == 0 {
                    break;
                }
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                let hdr = self.ring.frame(b * self.block_size, 48);
                self.left = u32at(hdr, 12);
                self.off = u32at(hdr, 16) as usize;
                if self.left == 0 {
                    self.finish_block(b);
                    continue;
                }
            }
            let base = b * self.block_size;
            let h = self.ring.frame(base + self.off, 48);
            if h.len() < 48 {
                self.left = 0;
                self.finish_block(b);
                continue;
            }
            let next = u32at(h, 0) as usize;
            let (sec, nsec, mut snap, mut len) = (u32at(h, 4), u32at(h, 8), u32at(h, 12), u32at(h, 16));
            let mut mac = u16::from_ne_bytes([h[24], h[25]]) as usize;
            let status = u32at(h, 20);
            // The kernel takes 802.1Q tags off into the header (VLAN
            // offload); put the tag back where it was on the wire, in the
            // slack before the frame, as libpcap does.
            if status & TP_STATUS_VLAN_VALID != 0 && mac >= FRAME_HDR + 4 && snap >= 12 {
                let tci = u32at(h, 32) as u16;
                let tpid =
                    if status & TP_STATUS_VLAN_TPID_VALID != 0 { u16::from_ne_bytes([h[36], h[37]]) } else { 0x8100 };
                let at = base + self.off + mac;
                if at + 12 <= self.ring.len {
                    // Safety: inside the ring and inside this frame's slot of
                    // a block user space owns (status USER): the kernel does
                    // not touch it until we hand the block back. The 4 bytes
                    // before the frame are padding after the frame header.
                    unsafe {
                        let p = self.ring.ptr.as_ptr().add(at);
                        std::ptr::copy(p, p.sub(4), 12);
                        std::ptr::copy_nonoverlapping(tpid.to_be_bytes().as_ptr(), p.add(8), 2);
                        std::ptr::copy_nonoverlapping(tci.to_be_bytes().as_ptr(), p.add(10), 2);
                    }
                    mac -= 4;
                    snap += 4;
                    len += 4;
                }
            }
            batch.descs.push(Desc {
                offset: (base + self.off + mac) as u64,
                caplen: snap,
                wire_len: len,
                ts_ns: sec as u64 * 1_000_000_000 + nsec as u64,
                link: LinkType::ETHERNET,
                iface: self.iface,
                ..Desc::default()
            });
            self.lent[b] += 1;
            self.stats.bytes += len as u64;
            n += 1;
            self.left -= 1;
            if next == 0 {
                self.left = 0;
            }
            self.off += next;
            if self.left == 0 {
                self.finish_block(b);
            }
        }
        self.stats.packets += n as u64;
        if n > 0 {
            batch.region = Region::Frames(self.ring.clone());
        }
        n
    }

    /// Every frame of block `b` has been read: move on, and hand the block
    /// back at once if none of its frames is still lent.
    fn finish_block(&mut self, b: usize) {
        self.read_done[b] = true;
        if self.lent[b] == 0 {
            self.give_back(b);
        }
        self.cur = (b + 1) % self.blocks;
    }

    fn wait(&self, ms: i32) {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // Safety: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) };
    }

    /// Add the kernel's drop counter (reset by each read) to ours.
    fn poll_kernel_stats(&self) {
        let mut st = TpacketStatsV3::default();
        let mut len = std::mem::size_of::<TpacketStatsV3>() as libc::socklen_t;
        // Safety: PACKET_STATISTICS writes at most `len` bytes into `st`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut TpacketStatsV3).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.kernel_drops.set(self.kernel_drops.get() + st.drops as u64);
        }
    }
}

fn u32at(s: &[u8], o: usize) -> u32 {
    s.get(o..o + 4).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

impl PacketSource for PacketSocket {
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, SourceError> {
        let mut n = self.take(batch, max);
        if n == 0 {
            self.wait(20);
            n = self.take(batch, max);
        }
        Ok(n)
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn is_live(&self) -> bool {
        true
    }

    fn recycle(&mut self, batch: &Batch) {
        for d in batch.descs.iter().filter(|d| !d.in_aux) {
            let b = d.offset as usize / self.block_size;
            if let Some(l) = self.lent.get_mut(b) {
                *l = l.saturating_sub(1);
                if *l == 0 && self.read_done[b] {
                    self.give_back(b);
                }
            }
        }
    }

    fn capture_stats(&self) -> Option<CaptureStats> {
        self.poll_kernel_stats();
        Some(CaptureStats {
            interface: self.iface_name.clone(),
            queue: self.queue,
            mode: "af_packet tpacket_v3".into(),
            rx_dropped: self.kernel_drops.get(),
            ..CaptureStats::default()
        })
    }
}
