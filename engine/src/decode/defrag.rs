//! IP fragment reassembly for the outermost IP layer.
//!
//! A fixed number of reassembly slots, each with a preallocated 64 KiB
//! buffer, so reassembly never allocates per packet. A completed datagram is
//! rebuilt as a whole frame — the first fragment's link-layer and IP headers
//! (lengths and fragment fields patched, IPv4 checksum recomputed) followed by
//! the payload — and decoded like any other frame. Incomplete datagrams
//! time out; a full table evicts its oldest datagram. Both are counted.

use super::checksum;
use super::{Anomaly, AnomalyCounters, Decoded, Frag};

const MAX_DATAGRAM: usize = 65_535;
const MAX_RANGES: usize = 64;
const MAX_PREFIX: usize = 512;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Key {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    proto: u8,
}

struct Slot {
    live: bool,
    key: Key,
    first_ts: u64,
    data: Vec<u8>,
    /// Received byte ranges [start, end), sorted and merged.
    ranges: [(u32, u32); MAX_RANGES],
    n_ranges: usize,
    total: Option<u32>,
    /// Bytes before the fragmentable part, from the first fragment.
    prefix: Vec<u8>,
    ip_off: u32,
    frag_hdr_off: u32,
    have_first: bool,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            live: false,
            key: Key::default(),
            first_ts: 0,
            // Filled in when the slot first holds a datagram: most captures
            // have few fragments, and 64 slots of 64 KiB would otherwise be
            // fresh memory touched at every start, per worker.
            data: Vec::new(),
            ranges: [(0, 0); MAX_RANGES],
            n_ranges: 0,
            total: None,
            prefix: Vec::with_capacity(MAX_PREFIX),
            ip_off: 0,
            frag_hdr_off: 0,
            have_first: false,
        }
    }

    /// Record [s, e); false if the range table is full.
    fn add_range(&mut self, s: u32, e: u32, overlap: &mut bool) -> bool {
        let mut i = 0;
        while i < self.n_ranges && self.ranges[i].1 < s {
            i += 1;
        }
        // merge with every range touching [s, e)
        let (mut ns, mut ne) = (s, e);
        let mut j = i;
        while j < self.n_ranges && self.ranges[j].0 <= e {
            if self.ranges[j].0 < e && self.ranges[j].1 > s {
                *overlap = true;
            }
            ns = ns.min(self.ranges[j].0);
            ne = ne.max(self.ranges[j].1);
            j += 1;
        }
        let removed = j - i;
        if removed == 0 {
            if self.n_ranges == MAX_RANGES {
                return false;
            }
            self.ranges.copy_within(i..self.n_ranges, i + 1);
            self.n_ranges += 1;
        } else if removed > 1 {
            self.ranges.copy_within(j..self.n_ranges, i + 1);
            self.n_ranges -= removed - 1;
        }
        self.ranges[i] = (ns, ne);
        true
    }

    fn complete(&self) -> bool {
        self.have_first && self.total.is_some_and(|t| self.n_ranges == 1 && self.ranges[0] == (0, t))
    }
}

/// Reassembles fragments of the outermost IP layer.
pub struct Defrag {
    slots: Vec<Slot>,
    timeout_ns: u64,
    out: Vec<u8>,
    /// Datagrams reassembled so far.
    pub reassembled: u64,
}

impl Defrag {
    pub fn new(slots: usize, timeout_ns: u64) -> Defrag {
        Defrag {
            slots: (0..slots.max(1)).map(|_| Slot::new()).collect(),
            timeout_ns,
            out: Vec::with_capacity(MAX_DATAGRAM + MAX_PREFIX),
            reassembled: 0,
        }
    }

    /// Is the outermost layer of `d` a fragment this reassembles?
    pub fn wants(d: &Decoded) -> bool {
        d.depth > 0 && d.layers[0].frag != Frag::None
    }

    /// Add a fragment (the outermost layer of `d`, decoded from `frame`).
    /// Returns the rebuilt frame once the datagram is complete.
    pub fn push(&mut self, ts: u64, frame: &[u8], d: &Decoded, anomalies: &mut AnomalyCounters) -> Option<&[u8]> {
        let l = &d.layers[0];
        let key = Key { v6: l.v6, src: l.src, dst: l.dst, id: l.frag_id, proto: l.proto };
        let start = l.l4_off as usize;
        let len = l.l4_len as usize;
        let data = frame.get(start..start + len)?; // truncated capture: cannot use
        let off = l.frag_off as usize;
        if off + len > MAX_DATAGRAM || start > MAX_PREFIX {
            anomalies.bump(Anomaly::FragmentTooLarge);
            return None;
        }
        // expire old datagrams, find ours or a free slot
        let mut idx = None;
        let mut free = None;
        let mut oldest = 0;
        let mut oldest_ts = u64::MAX;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.live && ts.saturating_sub(s.first_ts) > self.timeout_ns {
                s.live = false;
                anomalies.bump(Anomaly::FragmentTableFull);
            }
            if s.live && s.key == key {
                idx = Some(i);
                break;
            }
            if !s.live && free.is_none() {
                free = Some(i);
            }
            if s.live && s.first_ts < oldest_ts {
                oldest = i;
                oldest_ts = s.first_ts;
            }
        }
        let i = match (idx, free) {
            (Some(i), _) => i,
            (None, Some(i)) => self.start(i, key, ts),
            (None, None) => {
                anomalies.bump(Anomaly::FragmentTableFull);
                self.start(oldest, key, ts)
            }
        };
        let s = &mut self.slots[i];
        if s.data.is_empty() {
            s.data = vec![0; MAX_DATAGRAM];
        }
        s.data[off..off + len].copy_from_slice(data);
        let mut overlap = false;
        if !s.add_range(off as u32, (off + len) as u32, &mut overlap) {
            anomalies.bump(Anomaly::FragmentTooLarge);
            s.live = false;
            return None;
        }
        if overlap {
            anomalies.bump(Anomaly::FragmentOverlap);
        }
        if !l.more_frags {
            s.total = Some((off + len) as u32);
        }
        if off == 0 {
            s.have_first = true;
            s.prefix.clear();
            s.prefix.extend_from_slice(&frame[..start]);
            s.ip_off = l.ip_off;
            s.frag_hdr_off = l.frag_hdr_off;
        }
        if !s.complete() {
            return None;
        }
        s.live = false;
        let total = s.total.unwrap_or(0) as usize;
        self.out.clear();
        self.out.extend_from_slice(&s.prefix);
        self.out.extend_from_slice(&s.data[..total]);
        let ip = s.ip_off as usize;
        let hdr = s.prefix.len() - ip;
        if key.v6 {
            let plen = (hdr - 40 + total) as u16;
            self.out[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
            // leave the fragment header in place as an atomic fragment
            let fh = s.frag_hdr_off as usize;
            if fh + 4 <= self.out.len() {
                self.out[fh + 2] = 0;
                self.out[fh + 3] = 0;
            }
        } else {
            let tl = (hdr + total) as u16;
            self.out[ip + 2..ip + 4].copy_from_slice(&tl.to_be_bytes());
            self.out[ip + 6] = 0;
            self.out[ip + 7] = 0;
            self.out[ip + 10] = 0;
            self.out[ip + 11] = 0;
            let ck = checksum::fold(checksum::sum(&self.out[ip..ip + hdr], 0));
            self.out[ip + 10..ip + 12].copy_from_slice(&ck.to_be_bytes());
        }
        self.reassembled += 1;
        Some(&self.out)
    }

    fn start(&mut self, i: usize, key: Key, ts: u64) -> usize {
        let s = &mut self.slots[i];
        s.live = true;
        s.key = key;
        s.first_ts = ts;
        s.n_ranges = 0;
        s.total = None;
        s.have_first = false;
        s.prefix.clear();
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{DecodeConfig, decode};
    use crate::source::LinkType;

    fn ipv4_udp(payload_len: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let total = 20 + 8 + payload_len;
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        f.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend((0..payload_len).map(|i| i as u8));
        f
    }

    /// Split an IPv4 frame into fragments of `chunk` payload bytes.
    fn fragment(f: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let body = &f[34..];
        let mut out = Vec::new();
        for (i, c) in body.chunks(chunk).enumerate() {
            let mut g = f[..34].to_vec();
            g.extend_from_slice(c);
            let tl = (20 + c.len()) as u16;
            g[16..18].copy_from_slice(&tl.to_be_bytes());
            let more = (i + 1) * chunk < body.len();
            let fo = ((i * chunk) / 8) as u16 | if more { 0x2000 } else { 0 };
            g[20..22].copy_from_slice(&fo.to_be_bytes());
            out.push(g);
        }
        out
    }

    /// A slot's 64 KiB buffer is taken when it first holds a datagram, not
    /// when the table is made (fresh memory at every start, per worker).
    #[test]
    fn slot_buffers_are_taken_on_first_use() {
        let mut df = Defrag::new(8, 30_000_000_000);
        let held = |df: &Defrag| df.slots.iter().filter(|s| s.data.capacity() > 0).count();
        assert_eq!(held(&df), 0);
        let frags = fragment(&ipv4_udp(3000), 1480);
        let (mut d, mut an) = (Decoded::default(), AnomalyCounters::default());
        decode(LinkType::ETHERNET, &frags[0], &DecodeConfig::default(), &mut d);
        assert!(df.push(1, &frags[0], &d, &mut an).is_none());
        assert_eq!(held(&df), 1);
        let mut out = None;
        for f in &frags[1..] {
            decode(LinkType::ETHERNET, f, &DecodeConfig::default(), &mut d);
            out = df.push(1, f, &d, &mut an).map(<[u8]>::to_vec);
        }
        assert_eq!(out.map(|o| o.len()), Some(14 + 20 + 8 + 3000));
        // The freed slot keeps its buffer for the next datagram.
        assert_eq!(held(&df), 1);
    }

    #[test]
    fn reassembles_in_any_order_and_checksums() {
        let whole = ipv4_udp(3000);
        let mut frags = fragment(&whole, 1480);
        frags.reverse();
        let mut df = Defrag::new(4, 30_000_000_000);
        let mut an = AnomalyCounters::default();
        let cfg = DecodeConfig { verify_checksums: true, ..DecodeConfig::default() };
        let mut d = Decoded::default();
        let mut got = None;
        for f in &frags {
            decode(LinkType::ETHERNET, f, &cfg, &mut d);
            assert!(Defrag::wants(&d));
            if let Some(out) = df.push(1, f, &d, &mut an) {
                got = Some(out.to_vec());
            }
        }
        let out = got.expect("complete");
        decode(LinkType::ETHERNET, &out, &cfg, &mut d);
        let l = d.layers[0];
        assert_eq!((l.frag, l.sport, l.dport, l.payload_len), (Frag::None, 12345, 53, 3000));
        assert!(!d.anomalies.contains(Anomaly::BadIpv4Checksum));
        assert_eq!(&out[14 + 28..], &whole[14 + 28..]);
    }

    #[test]
    fn incomplete_datagrams_time_out_and_the_table_is_bounded() {
        let whole = ipv4_udp(3000);
        let frags = fragment(&whole, 1480);
        let mut df = Defrag::new(2, 1_000);
        let mut an = AnomalyCounters::default();
        let mut d = Decoded::default();
        for id in 0..10u16 {
            let mut f = frags[0].clone();
            f[18..20].copy_from_slice(&id.to_be_bytes());
            decode(LinkType::ETHERNET, &f, &DecodeConfig::default(), &mut d);
            assert!(df.push(id as u64, &f, &d, &mut an).is_none());
        }
        assert!(an.get(Anomaly::FragmentTableFull) > 0);
    }
}
