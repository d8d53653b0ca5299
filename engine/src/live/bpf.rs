//! The XDP program that hands each RX queue's frames to its AF_XDP socket,
//! loaded and attached with raw `bpf()` calls: no C toolchain, no libbpf,
//! no object file. The program is six instructions:
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)        ; ctx->rx_queue_index
//! r1 = map_fd (ld_imm64)        ; the XSKMAP (two instruction slots)
//! r3 = XDP_PASS                 ; default action when the queue has no socket
//! call bpf_redirect_map
//! exit
//! ```
//!
//! It is attached with `BPF_LINK_CREATE`, so the kernel detaches it when the
//! last descriptor of the link closes: at shutdown, and also when the process
//! is killed (`kill -9` included). A program attached the old way (netlink,
//! e.g. by `ip link set … xdp`) makes the link attach fail with `EBUSY`; it is
//! then detached over netlink and the attach retried.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::netlink;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const XDP_PASS: i32 = 2;

/// XDP attach flags (linux/if_link.h).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Where the program runs: in the driver (native) or on the generic path
/// after the kernel has built an skb (works on every device, slower).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XdpAttachMode {
    Native,
    Generic,
}

impl XdpAttachMode {
    pub fn flags(self) -> u32 {
        match self {
            XdpAttachMode::Native => XDP_FLAGS_DRV_MODE,
            XdpAttachMode::Generic => XDP_FLAGS_SKB_MODE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            XdpAttachMode::Native => "native",
            XdpAttachMode::Generic => "generic",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Insn {
    code: u8,
    /// dst register in the low nibble, src register in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
}

/// The redirect program for XSKMAP `map_fd`.
fn program(map_fd: RawFd) -> [Insn; 6] {
    [
        insn(0x61, 2, 1, 16, 0),                     // ldxw r2, [r1 + 16]
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd), // lddw r1, map
        insn(0, 0, 0, 0, 0),                         //   (upper half)
        insn(0xb7, 3, 0, 0, XDP_PASS),               // mov64 r3, XDP_PASS
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),  // call bpf_redirect_map
        insn(0x95, 0, 0, 0, 0),                      // exit
    ]
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    btf_vmlinux_value_type_id: u32,
    map_extra: u64,
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<RawFd> {
    // Safety: `attr` is a live, properly laid out `union bpf_attr` member
    // for `cmd`, and its size is passed with it; the kernel reads (and for
    // some commands writes) only within that size.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as RawFd) }
}

fn owned(fd: RawFd) -> OwnedFd {
    // Safety: `fd` was just returned by the kernel and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    for (d, b) in n.iter_mut().zip(s.bytes().take(15)) {
        *d = b;
    }
    n
}

/// A loaded and attached redirect program with its XSKMAP. Dropping it closes
/// the link, which detaches the program.
pub struct XdpProgram {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    pub ifindex: u32,
    pub mode: XdpAttachMode,
    /// An older program had to be detached first.
    pub replaced_stale: bool,
}

impl XdpProgram {
    /// Load the program with an XSKMAP of `queues` entries and attach it to
    /// `ifindex` in `mode`.
    pub fn attach(ifindex: u32, queues: u32, mode: XdpAttachMode) -> io::Result<XdpProgram> {
        let mut m = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: queues.max(1),
            map_name: name16("tapstream_xsks"),
            ..MapCreateAttr::default()
        };
        let map = owned(sys_bpf(BPF_MAP_CREATE, &mut m)?);
        let insns = program(map.as_raw_fd());
        let prog = load_xdp(&insns, "tapstream_xsk")?;
        let mut replaced_stale = false;
        let link = match link_create(prog.as_raw_fd(), ifindex, mode) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::EEXIST) => {
                // A program attached over netlink (left by a killed process or
                // another tool): replace it.
                netlink::detach_xdp(ifindex, XDP_FLAGS_DRV_MODE)
                    .or_else(|_| netlink::detach_xdp(ifindex, XDP_FLAGS_SKB_MODE))?;
                let _ = netlink::detach_xdp(ifindex, XDP_FLAGS_SKB_MODE);
                replaced_stale = true;
                link_create(prog.as_raw_fd(), ifindex, mode)?
            }
            Err(e) => return Err(e),
        };
        Ok(XdpProgram { map, _prog: prog, _link: link, ifindex, mode, replaced_stale })
    }

    /// Route frames of RX `queue` to the AF_XDP socket `xsk_fd`.
    pub fn register(&self, queue: u32, xsk_fd: RawFd) -> io::Result<()> {
        let key = queue;
        let value = xsk_fd as u32;
        let mut a = MapElemAttr {
            map_fd: self.map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            ..MapElemAttr::default()
        };
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
    }
}

/// Load an XDP program, with the verifier's log in the error.
fn load_xdp(insns: &[Insn], name: &str) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 8192];
    let mut p = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name16(name),
        prog_ifindex: 0,
        expected_attach_type: BPF_XDP,
    };
    sys_bpf(BPF_PROG_LOAD, &mut p).map(owned).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        let msg = String::from_utf8_lossy(&log[..end]);
        io::Error::new(e.kind(), format!("loading XDP program {name}: {e}; verifier: {}", msg.trim()))
    })
}

fn link_create(prog_fd: RawFd, ifindex: u32, mode: XdpAttachMode) -> io::Result<OwnedFd> {
    let mut l = LinkCreateAttr {
        prog_fd: prog_fd as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: mode.flags(),
        ..LinkCreateAttr::default()
    };
    sys_bpf(BPF_LINK_CREATE, &mut l).map(owned)
}

/// Attach a redirect program the old way (netlink, no link): what an older
/// tool leaves behind. For tests of stale-program replacement.
#[doc(hidden)]
pub fn attach_legacy_for_test(ifindex: u32, mode: XdpAttachMode) -> io::Result<()> {
    let mut m = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        ..MapCreateAttr::default()
    };
    let map = owned(sys_bpf(BPF_MAP_CREATE, &mut m)?);
    let prog = load_xdp(&program(map.as_raw_fd()), "stale_xdp")?;
    netlink::attach_xdp(ifindex, prog.as_raw_fd(), mode.flags())
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
const BPF_FUNC_GET_PRANDOM_U32: i32 = 7;
const XDP_TX: i32 = 3;
const XDP_DROP: i32 = 1;

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// A kernel-side frame blaster: an XDP program run with
/// `BPF_PROG_TEST_RUN` in live-frame mode bounces a template frame out of
/// an interface (`XDP_TX`) as fast as the kernel can, rewriting the UDP
/// source port of each copy to one of `ports` values at random (so traffic
/// spreads over that many flows). For benchmarks: millions of frames per
/// second without a socket per frame.
///
/// With a `send_fraction` below 1 the program transmits each copy with that
/// probability and drops the rest (`XDP_DROP`, which costs the kernel far
/// less than a transmit): the transmitted stream thins out evenly, frame by
/// frame, so a lower rate is offered without gaps or bursts. (Pacing by
/// spacing runner calls cannot do that: each call costs ~20 ms of set-up and
/// tear-down, and the frames of a call leave at full speed.)
pub struct XdpBlaster {
    prog: OwnedFd,
    frame: Vec<u8>,
    ifindex: u32,
}

/// The `get_prandom_u32` threshold at or below which a copy is sent:
/// P(r <= t) = (t + 1) / 2^32 = `send_fraction`. `None` when every copy is sent.
fn keep_threshold(send_fraction: f64) -> Option<u32> {
    if send_fraction >= 1.0 {
        return None;
    }
    let t = (send_fraction.max(0.0) * 4_294_967_296.0).round() - 1.0;
    Some(t.clamp(0.0, u32::MAX as f64) as u32)
}

fn blaster_program(base_port: u16, ports: u16, send_fraction: f64) -> Vec<Insn> {
    let ports = ports.max(1) as i32;
    // r6 = data, r7 = data_end
    let mut insns = vec![
        insn(0x61, 6, 1, 0, 0), // ldxw r6, [r1 + 0]
        insn(0x61, 7, 1, 4, 0), // ldxw r7, [r1 + 4]
    ];
    if let Some(t) = keep_threshold(send_fraction) {
        insns.extend([
            insn(0x85, 0, 0, 0, BPF_FUNC_GET_PRANDOM_U32), // call get_prandom_u32
            insn(0xb4, 1, 0, 0, t as i32),                 // mov32 r1, t (zero-extended)
            insn(0xbd, 0, 1, 2, 0),                        // jle r0, r1, +2 (send)
            insn(0xb7, 0, 0, 0, XDP_DROP),                 // mov64 r0, XDP_DROP
            insn(0x95, 0, 0, 0, 0),                        // exit
        ]);
    }
    // if data + 42 > data_end skip the rewrite
    insns.extend([
        insn(0xbf, 8, 6, 0, 0),                        // mov64 r8, r6
        insn(0x07, 8, 0, 0, 42),                       // add64 r8, 42
        insn(0x2d, 8, 7, 5, 0),                        // jgt r8, r7, +5
        insn(0x85, 0, 0, 0, BPF_FUNC_GET_PRANDOM_U32), // call get_prandom_u32
        insn(0x97, 0, 0, 0, ports),                    // mod64 r0, ports
        insn(0x07, 0, 0, 0, base_port as i32),         // add64 r0, base
        insn(0xdc, 0, 0, 0, 16),                       // be16 r0
        insn(0x6b, 6, 0, 34, 0),                       // stxh [r6 + 34], r0
        insn(0xb7, 0, 0, 0, XDP_TX),                   // mov64 r0, XDP_TX
        insn(0x95, 0, 0, 0, 0),                        // exit
    ]);
    insns
}

impl XdpBlaster {
    /// `frame` must be Ethernet + IPv4 (no options) + UDP with a zero UDP
    /// checksum. `send_fraction` (0, 1]: the share of runner copies sent.
    pub fn new(ifindex: u32, frame: Vec<u8>, base_port: u16, ports: u16, send_fraction: f64) -> io::Result<XdpBlaster> {
        let prog = load_xdp(&blaster_program(base_port, ports, send_fraction), "tapstream_blast")?;
        Ok(XdpBlaster { prog, frame, ifindex })
    }

    /// Send `n` frames (one syscall; the kernel batches internally).
    pub fn send(&self, n: u32) -> io::Result<()> {
        let ctx = XdpMd { data_end: self.frame.len() as u32, ingress_ifindex: self.ifindex, ..XdpMd::default() };
        let mut a = TestRunAttr {
            prog_fd: self.prog.as_raw_fd() as u32,
            data_size_in: self.frame.len() as u32,
            data_in: self.frame.as_ptr() as u64,
            repeat: n,
            ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
            ctx_in: &ctx as *const XdpMd as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: 256,
            ..TestRunAttr::default()
        };
        sys_bpf(BPF_PROG_TEST_RUN, &mut a).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_fraction_sets_the_share_of_random_values_sent() {
        assert_eq!(keep_threshold(1.0), None);
        assert_eq!(keep_threshold(1.5), None);
        // P(r <= t) = (t + 1) / 2^32
        assert_eq!(keep_threshold(0.5), Some((1u32 << 31) - 1));
        assert_eq!(keep_threshold(0.25), Some((1u32 << 30) - 1));
        assert_eq!(keep_threshold(0.0), Some(0));
        // Every copy sent: no random draw for the decision, the same
        // program as before send fractions existed.
        assert_eq!(blaster_program(1024, 100, 1.0).len(), 12);
        let thin = blaster_program(1024, 100, 0.5);
        assert_eq!(thin.len(), 17);
        // the jump over the drop lands on the rewrite
        assert_eq!(thin[4].code, 0xbd);
        assert_eq!(thin[4].off, 2);
    }
}
