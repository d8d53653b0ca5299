//! The AF_XDP source: one socket per (interface, RX queue), its own UMEM.
//!
//! Frames stay where the kernel wrote them: a batch's descriptors point into
//! the UMEM ([`Region::Frames`]) and the frames go back to the fill ring when
//! the workers hand the batch back ([`PacketSource::recycle`]). Fill and
//! receive are batched (reserve → write/read → commit/release; an
//! uncommitted reservation is rolled back when dropped).

use std::ffi::CString;
use std::io;
use std::num::NonZeroU32;
use std::ptr::NonNull;
use std::sync::Arc;

use xdpilone::{DeviceQueue, IfInfo, RingRx, Socket, SocketConfig, Umem, UmemConfig, User};

use super::LiveError;
use super::iface::{self, Promisc};
use crate::source::{Batch, CaptureStats, Desc, FrameArea, LinkType, PacketSource, Region, SourceError, SourceStats};

/// How the socket is bound: frames DMA'd straight into the UMEM by the
/// driver, or copied into it by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindMode {
    /// Zero-copy when the driver supports it, copy otherwise.
    #[default]
    Auto,
    ZeroCopy,
    Copy,
}

/// Ring and UMEM sizes of one socket.
#[derive(Clone, Debug)]
pub struct XskConfig {
    /// Frames in the UMEM (each `frame_size` bytes).
    pub frames: u32,
    pub frame_size: u32,
    pub fill_size: u32,
    pub rx_size: u32,
    pub bind: BindMode,
    /// Spin on the RX ring instead of sleeping in poll() when it is empty.
    pub busy_poll: bool,
    /// Without busy polling: how long to keep checking an empty RX ring
    /// before sleeping in poll(). A sleeping reader must be woken by the
    /// kernel after every receive batch, on the core that received the
    /// frames; a short spin keeps it awake while traffic flows.
    pub spin: std::time::Duration,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frames: 65536,
            frame_size: 2048,
            fill_size: 32768,
            rx_size: 32768,
            bind: BindMode::Auto,
            busy_poll: false,
            spin: std::time::Duration::from_micros(50),
        }
    }
}

/// Anonymous, page-aligned memory registered as a UMEM.
struct UmemArea {
    ptr: NonNull<u8>,
    len: usize,
}

// Safety: the area is plain memory; concurrent access is governed by the
// ring protocol (a frame is read by user space only while no ring gives it
// to the kernel).
unsafe impl Send for UmemArea {}
// Safety: as above; `frame` only creates shared views of frames that
// descriptors hand to readers.
unsafe impl Sync for UmemArea {}

impl UmemArea {
    fn new(len: usize) -> io::Result<UmemArea> {
        // Safety: anonymous private mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(UmemArea { ptr: NonNull::new(p.cast()).expect("mmap returned null"), len })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl FrameArea for UmemArea {
    fn frame(&self, offset: usize, len: usize) -> &[u8] {
        match offset.checked_add(len) {
            // Safety: in bounds of the mapping, which lives as long as
            // `self`. The frame was handed to us on the RX ring and goes back
            // to the kernel only after every batch naming it is recycled, so
            // nothing writes it while this view exists.
            Some(end) if end <= self.len => unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) },
            _ => &[],
        }
    }
}

impl Drop for UmemArea {
    fn drop(&mut self) {
        // Safety: unmapping exactly what `new` mapped; no view outlives the
        // area (views borrow it). The kernel pins registered pages itself.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One AF_XDP socket on one RX queue.
pub struct XskSource {
    // Field order is drop order: rings and sockets before the memory.
    rx: RingRx,
    fq: DeviceQueue,
    user: User,
    area: Arc<UmemArea>,
    /// Frame addresses neither on the fill ring nor lent to a batch.
    free: Vec<u64>,
    frame_mask: u64,
    name: String,
    iface_name: String,
    iface: u16,
    queue: u32,
    zero_copy: bool,
    busy_poll: bool,
    spin: std::time::Duration,
    /// Traffic is heavy: spin on an empty ring before sleeping (see `fill`).
    hot: bool,
    mode: String,
    stats: SourceStats,
    /// The interface stays promiscuous while this socket is open.
    _promisc: Promisc,
}

fn errno_io(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw().abs())
}

impl XskSource {
    /// Open a socket on (`iface_name`, `queue`). `iface` is the interface
    /// number recorded in every descriptor; `attach` names the XDP mode for
    /// the report ("native"/"generic").
    pub fn open(
        iface_name: &str,
        iface: u16,
        queue: u32,
        cfg: &XskConfig,
        attach: &str,
    ) -> Result<XskSource, LiveError> {
        match cfg.bind {
            BindMode::Copy => Self::open_with(iface_name, iface, queue, cfg, attach, false),
            BindMode::ZeroCopy => Self::open_with(iface_name, iface, queue, cfg, attach, true),
            BindMode::Auto => Self::open_with(iface_name, iface, queue, cfg, attach, true).or_else(|e| match e {
                LiveError::Bind { .. } => Self::open_with(iface_name, iface, queue, cfg, attach, false),
                e => Err(e),
            }),
        }
    }

    fn open_with(
        iface_name: &str,
        iface: u16,
        queue: u32,
        cfg: &XskConfig,
        attach: &str,
        zero_copy: bool,
    ) -> Result<XskSource, LiveError> {
        let frame_size = cfg.frame_size.next_power_of_two().clamp(2048, 4096);
        let frames = cfg.frames.max(cfg.fill_size).max(64);
        let len = frames as usize * frame_size as usize;
        let area = Arc::new(
            UmemArea::new(len).map_err(|e| LiveError::io(format!("{iface_name}: allocating a {len}-byte UMEM"), e))?,
        );
        let ucfg = UmemConfig {
            fill_size: cfg.fill_size.next_power_of_two(),
            complete_size: 64,
            frame_size,
            headroom: 0,
            flags: 0,
        };
        // Safety: the area is page aligned and `len` bytes long; XskSource
        // keeps it alive after the rings (field order), and the kernel pins
        // the registered pages itself.
        let umem = unsafe { Umem::new(ucfg, area.as_slice_ptr()) }.map_err(|e| {
            let err = errno_io(e);
            match err.raw_os_error() {
                Some(libc::EPERM) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
                    LiveError::Memlock { iface: iface_name.to_string(), bytes: len as u64, source: err }
                }
                Some(libc::EAFNOSUPPORT) => LiveError::Unsupported {
                    iface: iface_name.to_string(),
                    reason: "the kernel has no AF_XDP sockets".into(),
                },
                _ => LiveError::io(format!("{iface_name}: registering the UMEM"), err),
            }
        })?;
        let mut info = IfInfo::invalid();
        let cname = CString::new(iface_name).map_err(|_| LiveError::NoSuchInterface(iface_name.to_string()))?;
        info.from_name(&cname).map_err(|_| LiveError::NoSuchInterface(iface_name.to_string()))?;
        info.set_queue(queue);
        let sock = Socket::with_shared(&info, &umem)
            .map_err(|e| LiveError::io(format!("{iface_name}: socket"), errno_io(e)))?;
        let fq = umem.fq_cq(&sock).map_err(|e| LiveError::io(format!("{iface_name}: fill ring"), errno_io(e)))?;
        let flags = SocketConfig::XDP_BIND_NEED_WAKEUP
            | if zero_copy { SocketConfig::XDP_BIND_ZEROCOPY } else { SocketConfig::XDP_BIND_COPY };
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: NonZeroU32::new(cfg.rx_size.next_power_of_two()),
                    tx_size: None,
                    bind_flags: flags,
                },
            )
            .map_err(|e| LiveError::io(format!("{iface_name}: RX ring"), errno_io(e)))?;
        let rx = user.map_rx().map_err(|e| LiveError::io(format!("{iface_name}: mapping the RX ring"), errno_io(e)))?;
        umem.bind(&user).map_err(|e| LiveError::Bind {
            iface: iface_name.to_string(),
            queue,
            zero_copy,
            source: errno_io(e),
        })?;
        let ifindex = iface::ifindex(iface_name).ok_or_else(|| LiveError::NoSuchInterface(iface_name.to_string()))?;
        let promisc = Promisc::hold(ifindex)
            .map_err(|e| LiveError::io(format!("{iface_name}: making the interface promiscuous"), e))?;
        // Every frame starts free; the first fill() puts them on the fill ring.
        let free: Vec<u64> = (0..frames as u64).rev().map(|i| i * frame_size as u64).collect();
        let mode = format!("af_xdp {attach} {}", if zero_copy { "zero-copy" } else { "copy" });
        let mut s = XskSource {
            rx,
            fq,
            user,
            area,
            free,
            frame_mask: !(frame_size as u64 - 1),
            name: format!("{iface_name}:{queue}"),
            iface_name: iface_name.to_string(),
            iface,
            queue,
            zero_copy,
            busy_poll: cfg.busy_poll,
            spin: cfg.spin,
            hot: false,
            mode,
            stats: SourceStats::default(),
            _promisc: promisc,
        };
        // The Umem handle is only needed for set-up: the sockets and rings
        // keep the registration (its descriptor) alive.
        drop(umem);
        if cfg.busy_poll {
            s.enable_busy_poll(cfg.rx_size.min(1024));
        }
        s.refill();
        Ok(s)
    }

    /// The socket's descriptor (for the XSKMAP).
    pub fn fd(&self) -> i32 {
        self.rx.as_raw_fd()
    }

    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    pub fn mode(&self) -> &str {
        &self.mode
    }

    /// Ask the kernel to busy-poll the device queue from our receive calls
    /// (SO_PREFER_BUSY_POLL, SO_BUSY_POLL 20 µs, a budget per poll). Where
    /// the kernel or driver has no busy polling these fail harmlessly and we
    /// still spin on the ring.
    fn enable_busy_poll(&self, budget: u32) {
        const SO_BUSY_POLL: libc::c_int = 46;
        const SO_PREFER_BUSY_POLL: libc::c_int = 69;
        const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
        for (opt, val) in [(SO_PREFER_BUSY_POLL, 1), (SO_BUSY_POLL, 20), (SO_BUSY_POLL_BUDGET, budget as libc::c_int)] {
            // Safety: setsockopt with an int option on our socket.
            let r = unsafe {
                libc::setsockopt(
                    self.fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&val as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if r != 0 {
                tracing::debug!(queue = self.queue, opt, "busy-poll option refused: {}", io::Error::last_os_error());
            }
        }
    }

    /// Drive the device queue from this thread (busy polling).
    fn kick(&self) {
        // Safety: a zero-length, non-blocking receive on our socket.
        unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Give free frames to the kernel.
    fn refill(&mut self) {
        if self.free.is_empty() {
            return;
        }
        // A reservation counts free entries from a cached view of the
        // kernel's consumer, refreshed only once that view shows no room, so
        // one can come back short while the ring has room: repeat until every
        // frame is given or a refreshed reservation finds none.
        while !self.free.is_empty() {
            let mut w = self.fq.fill(self.free.len() as u32);
            let n = w.insert(self.free.iter().rev().copied());
            w.commit();
            drop(w);
            if n == 0 {
                break;
            }
            let keep = self.free.len() - n as usize;
            self.free.truncate(keep);
        }
        if self.fq.needs_wakeup() {
            self.fq.wake();
        }
    }

    /// Sleep until frames arrive (or `ms` pass).
    fn wait(&self, ms: i32) {
        let mut p = libc::pollfd { fd: self.rx.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // Safety: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) };
    }
}

/// A receive of at least this many frames (what piles up while the reader
/// wakes from a sleep at some 0.5 M packets/s or more) means traffic is
/// heavy enough for an empty ring to be worth a spin.
const SPIN_AFTER: usize = 32;

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl PacketSource for XskSource {
    /// Frames received since the last call (zero when none came within a
    /// short wait: a live source never ends by itself).
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, SourceError> {
        self.refill();
        let mut n = self.take(batch, max);
        if n == 0 {
            if self.busy_poll {
                self.kick();
                n = self.take(batch, max);
            } else {
                // While traffic is heavy, check the ring for a moment before
                // sleeping: a sleeping reader costs the receiving core a
                // wake-up after every batch. At low rates (small batches) it
                // sleeps at once, so a quiet link burns no CPU.
                if self.hot {
                    n = self.spin(batch, max);
                    self.hot = n > 0;
                }
                if n == 0 {
                    self.wait(20);
                    n = self.take(batch, max);
                }
            }
        }
        self.hot |= n >= SPIN_AFTER;
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
            self.free.push(d.offset & self.frame_mask);
        }
    }

    fn capture_stats(&self) -> Option<CaptureStats> {
        let s = self.user.statistics_v2().unwrap_or_default();
        Some(CaptureStats {
            interface: self.iface_name.clone(),
            queue: self.queue,
            mode: self.mode.clone(),
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            fill_ring_empty: s.rx_fill_ring_empty_descs,
        })
    }
}

impl XskSource {
    /// Check the RX ring until frames arrive or the spin time passes.
    fn spin(&mut self, batch: &mut Batch, max: usize) -> usize {
        if self.spin.is_zero() {
            return 0;
        }
        let start = std::time::Instant::now();
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            let n = self.take(batch, max);
            if n > 0 || start.elapsed() >= self.spin {
                return n;
            }
        }
    }

    fn take(&mut self, batch: &mut Batch, max: usize) -> usize {
        let mut r = self.rx.receive(max as u32);
        if r.capacity() == 0 {
            return 0;
        }
        let ts = now_ns();
        let mut n = 0;
        while let Some(x) = r.read() {
            batch.descs.push(Desc {
                offset: x.addr,
                caplen: x.len,
                wire_len: x.len,
                ts_ns: ts,
                link: LinkType::ETHERNET,
                iface: self.iface,
                ..Desc::default()
            });
            self.stats.bytes += x.len as u64;
            n += 1;
        }
        r.release();
        drop(r);
        self.stats.packets += n as u64;
        batch.region = Region::Frames(self.area.clone());
        n
    }
}
