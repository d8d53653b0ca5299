//! Packet sources: anything that yields batches of frames.
//!
//! A source hands out [`Batch`]es. A batch is a list of [`Desc`] descriptors
//! (offset, lengths, timestamp, link type, interface) into a [`Region`] of
//! bytes the batch keeps alive: a memory-mapped capture file shared by every
//! batch cut from it, or an arena the batch owns (the synthetic source). An
//! AF_XDP source fits the same shape: the region is the UMEM and the frames
//! go back to the fill ring when the batch is recycled.

mod file;
pub(crate) mod pcap;
mod pcapng;
pub mod synth;
mod writer;

use std::sync::Arc;

pub use file::{CaptureFile, CaptureFormat, open_capture};
pub use synth::{AttackKind, AttackMix, ScheduledAttack, SynthConfig, SynthSource};
pub use writer::PcapWriter;

/// Link-layer types we understand (values are the pcap LINKTYPE_ numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LinkType(pub u16);

impl LinkType {
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    pub const PPP: LinkType = LinkType(9);
    pub const FDDI: LinkType = LinkType(10);
    pub const RAW_LEGACY: LinkType = LinkType(12);
    pub const RAW_LEGACY14: LinkType = LinkType(14);
    pub const PPP_HDLC: LinkType = LinkType(50);
    pub const PPP_ETHER: LinkType = LinkType(51);
    pub const RAW: LinkType = LinkType(101);
    pub const IEEE802_11: LinkType = LinkType(105);
    pub const LOOP: LinkType = LinkType(108);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IEEE802_11_RADIOTAP: LinkType = LinkType(127);
    pub const NFLOG: LinkType = LinkType(239);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const LINUX_SLL2: LinkType = LinkType(276);

    /// Map the pcap file-header network value (DLT) to the LINKTYPE value.
    pub fn from_pcap(v: u32) -> LinkType {
        LinkType((v & 0x0fff_ffff) as u16)
    }

    pub fn name(self) -> &'static str {
        match self {
            LinkType::NULL => "null",
            LinkType::ETHERNET => "ethernet",
            LinkType::PPP | LinkType::PPP_HDLC => "ppp",
            LinkType::FDDI => "fddi",
            LinkType::RAW | LinkType::RAW_LEGACY | LinkType::RAW_LEGACY14 => "raw",
            LinkType::IPV4 => "ipv4",
            LinkType::IPV6 => "ipv6",
            LinkType::LOOP => "loop",
            LinkType::LINUX_SLL => "linux_sll",
            LinkType::LINUX_SLL2 => "linux_sll2",
            LinkType::IEEE802_11 => "ieee802_11",
            LinkType::IEEE802_11_RADIOTAP => "radiotap",
            LinkType::NFLOG => "nflog",
            LinkType::PPP_ETHER => "pppoe",
            _ => "unknown",
        }
    }
}

/// One frame of a batch: where its bytes lie in the batch's region, plus metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// Byte offset of the captured bytes inside the region.
    pub offset: u64,
    /// Captured length (bytes present in the region).
    pub caplen: u32,
    /// Original length on the wire.
    pub wire_len: u32,
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub link: LinkType,
    /// Interface index (pcapng interface id, or capture interface number).
    pub iface: u16,
    /// Which layers the receiving worker accounts (see [`Layers`]).
    pub layers: Layers,
    /// The bytes are in the batch's `aux` buffer (a reassembled datagram),
    /// not in its region.
    pub in_aux: bool,
}

/// When a tunnelled packet's outer and inner flows hash to different workers,
/// the packet's descriptor goes to both, each accounting only its part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layers {
    /// Account every layer (the usual case).
    #[default]
    All,
    /// Account only the outermost (tunnel) flow.
    OuterOnly,
    /// Account only the inner flows (not the outermost tunnel flow).
    InnerOnly,
    /// Count in traffic statistics only: an IP fragment whose reassembled
    /// datagram is delivered separately.
    StatsOnly,
}

/// The bytes a batch's descriptors point into.
#[derive(Clone)]
pub enum Region {
    /// Shared, read-only memory (a memory-mapped capture file). Cloning costs
    /// one reference-count increment per batch, never per packet.
    Shared(Arc<dyn AsRef<[u8]> + Send + Sync>),
    /// Bytes the batch owns (synthetic traffic), reused when recycled.
    Owned(Vec<u8>),
    /// Frames in memory another party writes to between uses (an AF_XDP
    /// UMEM): only the frames a batch's descriptors name may be read.
    Frames(Arc<dyn FrameArea>),
}

/// Memory shared with a producer that writes frames in place (the kernel,
/// for AF_XDP). Unlike a file map it is never viewed whole: a descriptor's
/// frame is the only part a batch may read while it holds the descriptor.
pub trait FrameArea: Send + Sync {
    /// The `len` bytes at `offset`, or an empty slice when out of bounds.
    fn frame(&self, offset: usize, len: usize) -> &[u8];
}

impl Region {
    /// All of the memory, when it may be read whole (not AF_XDP frames).
    #[inline]
    pub fn whole(&self) -> Option<&[u8]> {
        match self {
            Region::Shared(a) => Some((**a).as_ref()),
            Region::Owned(v) => Some(v),
            Region::Frames(_) => None,
        }
    }

    /// The `len` bytes at `start` (empty when out of bounds).
    #[inline]
    pub fn slice(&self, start: usize, len: usize) -> &[u8] {
        let whole = match self {
            Region::Shared(a) => (**a).as_ref(),
            Region::Owned(v) => v,
            Region::Frames(f) => return f.frame(start, len),
        };
        whole.get(start..start.saturating_add(len)).unwrap_or(&[])
    }
}

/// [`Batch::frame`] without its per-frame dispatch on the region (a
/// dynamic call, for a file's map): the memory is looked up once.
pub struct FrameView<'a> {
    whole: Option<&'a [u8]>,
    aux: &'a [u8],
    region: &'a Region,
}

impl<'a> FrameView<'a> {
    /// The frames of `region` alone (descriptors outside any batch's aux).
    #[inline]
    pub fn of_region(region: &'a Region) -> FrameView<'a> {
        FrameView { whole: region.whole(), aux: &[], region }
    }

    /// The captured bytes of descriptor `d`, as [`Batch::frame`].
    #[inline]
    pub fn frame(&self, d: &Desc) -> &'a [u8] {
        let (start, len) = (d.offset as usize, d.caplen as usize);
        let mem = match (d.in_aux, self.whole) {
            (true, _) => self.aux,
            (false, Some(w)) => w,
            (false, None) => return self.region.slice(start, len),
        };
        mem.get(start..start.saturating_add(len)).unwrap_or(&[])
    }
}

impl Default for Region {
    fn default() -> Self {
        Region::Owned(Vec::new())
    }
}

/// A batch of frames. Preallocated and recycled: clearing keeps capacity.
#[derive(Default)]
pub struct Batch {
    pub region: Region,
    pub descs: Vec<Desc>,
    /// Frames built by the pipeline itself (reassembled IP datagrams).
    pub aux: Vec<u8>,
    /// The feeder (reader thread) that cut this batch, to return it to.
    pub origin: u16,
}

impl Batch {
    pub fn with_capacity(n: usize) -> Batch {
        Batch { region: Region::default(), descs: Vec::with_capacity(n), aux: Vec::new(), origin: 0 }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.descs.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }

    /// The captured bytes of descriptor `d` (empty if it points outside the region).
    #[inline]
    pub fn frame(&self, d: &Desc) -> &[u8] {
        self.view().frame(d)
    }

    /// The batch's memory looked up once, for reading many frames.
    #[inline]
    pub fn view(&self) -> FrameView<'_> {
        FrameView { whole: self.region.whole(), aux: &self.aux, region: &self.region }
    }

    /// Iterate over (descriptor, bytes).
    pub fn frames(&self) -> impl Iterator<Item = (&Desc, &[u8])> {
        self.descs.iter().map(move |d| (d, self.frame(d)))
    }

    /// Forget the frames, keep the allocations (for an owned region).
    pub fn clear(&mut self) {
        self.descs.clear();
        self.aux.clear();
        match &mut self.region {
            Region::Owned(v) => v.clear(),
            r @ (Region::Shared(_) | Region::Frames(_)) => *r = Region::Owned(Vec::new()),
        }
    }
}

/// Counters every source keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets whose link type we cannot decode (counted, skipped).
    pub unknown_link: u64,
    /// Bytes of the input consumed so far (file offset).
    pub position: u64,
}

/// Errors from packet sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a pcap or pcapng capture (magic {magic:#010x} at byte offset 0)")]
    BadMagic { path: String, magic: u32 },
    #[error("{path}: corrupt capture at byte offset {offset}: {reason}")]
    Corrupt { path: String, offset: u64, reason: String },
    #[error("{path}: capture truncated at byte offset {offset}: {reason}")]
    Truncated { path: String, offset: u64, reason: String },
}

impl SourceError {
    /// Byte offset at which the capture went bad, when there is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            SourceError::Corrupt { offset, .. } | SourceError::Truncated { offset, .. } => Some(*offset),
            SourceError::BadMagic { .. } => Some(0),
            SourceError::Io { .. } => None,
        }
    }
}

/// A producer of frame batches.
///
/// `fill` appends up to `max` frames to `batch` (which the caller has cleared
/// and which may still hold a region from a previous round). It returns the
/// number of frames added; zero means end of input. An error comes after all
/// frames before the bad spot have been handed out.
pub trait PacketSource: Send {
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, SourceError>;
    fn stats(&self) -> SourceStats;
    /// A name for messages (file path, interface, "synthetic").
    fn name(&self) -> &str;
    /// Every frame below region offset `offset` has been processed; the
    /// source may give back the memory behind it.
    fn release(&mut self, _offset: u64) {}
    /// A live source (a network interface): frames arrive whether or not we
    /// keep up, so the pipeline drops and counts instead of waiting.
    fn is_live(&self) -> bool {
        false
    }
    /// Every frame of `batch` (cut from this source's batches) has been
    /// processed: a source that lends its frames (AF_XDP) takes them back.
    /// Each frame is handed back exactly once.
    fn recycle(&mut self, _batch: &Batch) {}
    /// Counters of a live capture (kernel ring statistics and the like).
    fn capture_stats(&self) -> Option<CaptureStats> {
        None
    }
}

/// What a live source knows about its losses and mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Interface name and RX queue.
    pub interface: String,
    pub queue: u32,
    /// How frames are taken: e.g. "af_xdp native copy", "af_packet".
    pub mode: String,
    /// Dropped by the kernel because our RX ring was full.
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty (no frame to write into).
    pub fill_ring_empty: u64,
}

#[cfg(test)]
mod tests {
    use super::{Batch, Desc, FrameView, Layers, LinkType, Region};
    use std::sync::Arc;

    fn desc(offset: u64, caplen: u32, in_aux: bool) -> Desc {
        Desc {
            offset,
            caplen,
            wire_len: caplen,
            ts_ns: 0,
            link: LinkType::ETHERNET,
            iface: 0,
            layers: Layers::All,
            in_aux,
        }
    }

    #[test]
    fn a_frame_view_reads_frames_from_the_region_or_the_aux_buffer() {
        let bytes: Vec<u8> = (0..=255).collect();
        let descs = [
            desc(0, 10, false),
            desc(250, 6, false),
            desc(250, 10, false),
            desc(300, 1, false),
            desc(2, 3, true),
            desc(4, 9, true),
        ];
        for region in [Region::Shared(Arc::new(bytes.clone())), Region::Owned(bytes.clone())] {
            let mut b = Batch::with_capacity(8);
            b.region = region;
            b.aux = vec![9, 8, 7, 6, 5];
            let view = b.view();
            assert_eq!(view.frame(&descs[0]), &bytes[..10]);
            assert_eq!(view.frame(&descs[1]), &[250, 251, 252, 253, 254, 255]);
            assert_eq!(view.frame(&descs[2]), &[] as &[u8], "past the end");
            assert_eq!(view.frame(&descs[3]), &[] as &[u8], "outside the region");
            assert_eq!(view.frame(&descs[4]), &[7, 6, 5]);
            assert_eq!(view.frame(&descs[5]), &[] as &[u8], "past the aux buffer");
            let alone = FrameView::of_region(&b.region);
            assert_eq!(alone.frame(&descs[0]), &bytes[..10]);
        }
    }
}
