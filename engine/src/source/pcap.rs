//! Classic libpcap files: micro- and nanosecond magic, both byte orders.

use super::{Batch, Desc, Layers, LinkType, SourceError};

pub(crate) struct PcapState {
    pub big_endian: bool,
    pub nanos: bool,
    pub link: LinkType,
    pub snaplen: u32,
    pub pos: usize,
    /// Bytes below this offset have been prefetched.
    prefetched: usize,
}

pub(crate) const MAGIC_US: u32 = 0xa1b2_c3d4;
pub(crate) const MAGIC_NS: u32 = 0xa1b2_3c4d;

impl PcapState {
    /// Parse the 24-byte global header.
    pub fn open(path: &str, data: &[u8]) -> Result<PcapState, SourceError> {
        if data.len() < 24 {
            return Err(SourceError::Truncated {
                path: path.to_string(),
                offset: data.len() as u64,
                reason: "pcap file header needs 24 bytes".into(),
            });
        }
        let le = u32::from_le_bytes(data[0..4].try_into().unwrap_or_default());
        let (big_endian, nanos) = match le {
            MAGIC_US => (false, false),
            MAGIC_NS => (false, true),
            x if x.swap_bytes() == MAGIC_US => (true, false),
            x if x.swap_bytes() == MAGIC_NS => (true, true),
            x => {
                return Err(SourceError::BadMagic { path: path.to_string(), magic: x });
            }
        };
        let rd = |o: usize| read_u32(data, o, big_endian);
        let snaplen = rd(16);
        let link = LinkType::from_pcap(rd(20));
        Ok(PcapState { big_endian, nanos, link, snaplen, pos: 24, prefetched: 24 })
    }

    /// Append up to `max` records to `batch`. Returns Ok(n) (0 = end).
    pub fn fill(&mut self, path: &str, data: &[u8], batch: &mut Batch, max: usize) -> Result<usize, SourceError> {
        let mut n = 0;
        while n < max {
            let p = self.pos;
            if p == data.len() {
                break;
            }
            self.prefetched = prefetch_ahead(data, p, self.prefetched);
            if data.len() - p < 16 {
                return Err(SourceError::Truncated {
                    path: path.to_string(),
                    offset: p as u64,
                    reason: format!("record header needs 16 bytes, {} left", data.len() - p),
                });
            }
            let sec = read_u32(data, p, self.big_endian) as u64;
            let frac = read_u32(data, p + 4, self.big_endian) as u64;
            let caplen = read_u32(data, p + 8, self.big_endian);
            let wire = read_u32(data, p + 12, self.big_endian);
            let limit = self.snaplen.max(262_144);
            // A fraction of exactly one second is a writer's rounding carry
            // (some generators print it; libpcap and Wireshark read it as
            // the next second), not a sign of a broken header.
            if caplen > limit || (frac > 1_000_000_000) || (!self.nanos && frac > 1_000_000) {
                return Err(SourceError::Corrupt {
                    path: path.to_string(),
                    offset: p as u64,
                    reason: format!(
                        "implausible record header (caplen {caplen}, snaplen {}, fraction {frac})",
                        self.snaplen
                    ),
                });
            }
            let start = p + 16;
            if data.len() - start < caplen as usize {
                return Err(SourceError::Truncated {
                    path: path.to_string(),
                    offset: p as u64,
                    reason: format!("record needs {caplen} bytes, {} left", data.len() - start),
                });
            }
            let ts_ns = sec * 1_000_000_000 + if self.nanos { frac } else { frac * 1000 };
            batch.descs.push(Desc {
                offset: start as u64,
                caplen,
                wire_len: wire.max(caplen),
                ts_ns,
                link: self.link,
                iface: 0,
                layers: Layers::All,
                in_aux: false,
            });
            self.pos = start + caplen as usize;
            n += 1;
        }
        Ok(n)
    }
}

/// How far ahead of the read position the file is pulled into the CPU cache.
const PREFETCH_DISTANCE: usize = 16 * 1024;

/// Record headers lie at unpredictable offsets a packet apart: too sparse for
/// the hardware prefetcher (which does not cross 4 KiB pages), so every header
/// would be a cache miss. Stream the file into the cache a fixed distance
/// ahead instead. Returns the new prefetched-up-to offset.
#[inline]
pub(crate) fn prefetch_ahead(data: &[u8], pos: usize, done: usize) -> usize {
    let target = (pos + PREFETCH_DISTANCE).min(data.len());
    let mut q = done.max(pos);
    while q < target {
        #[cfg(target_arch = "x86_64")]
        // Safety: `q < data.len()`, so the address is inside the slice;
        // prefetching is only a hint and never faults.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch(data.as_ptr().add(q) as *const i8, _MM_HINT_T0);
        }
        q += 64;
    }
    q.max(done)
}

#[inline]
pub(crate) fn read_u32(d: &[u8], o: usize, be: bool) -> u32 {
    let b: [u8; 4] = d.get(o..o + 4).and_then(|s| s.try_into().ok()).unwrap_or_default();
    if be { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
}

#[inline]
pub(crate) fn read_u16(d: &[u8], o: usize, be: bool) -> u16 {
    let b: [u8; 2] = d.get(o..o + 2).and_then(|s| s.try_into().ok()).unwrap_or_default();
    if be { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&MAGIC_US.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        for (sec, usec, bytes) in records {
            for x in [*sec, *usec, bytes.len() as u32, bytes.len() as u32] {
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.extend_from_slice(bytes);
        }
        v
    }

    #[test]
    fn a_fraction_of_one_whole_second_is_the_next_second_and_more_is_corrupt() {
        let data = file(&[(10, 999_999, &[1; 60]), (10, 1_000_000, &[2; 60]), (11, 5, &[3; 60])]);
        let mut st = PcapState::open("t", &data).unwrap();
        let mut b = Batch::with_capacity(8);
        assert_eq!(st.fill("t", &data, &mut b, 8).unwrap(), 3);
        let ts: Vec<u64> = b.descs.iter().map(|d| d.ts_ns).collect();
        assert_eq!(ts, [10_999_999_000, 11_000_000_000, 11_000_005_000]);
        let bad = file(&[(10, 1_000_001, &[1; 60])]);
        let mut st = PcapState::open("t", &bad).unwrap();
        let e = st.fill("t", &bad, &mut Batch::with_capacity(8), 8).unwrap_err();
        assert!(e.to_string().contains("implausible record header"), "{e}");
    }
}
