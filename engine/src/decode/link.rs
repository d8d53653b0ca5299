//! Link layers: Ethernet (VLAN, QinQ, MPLS, PPPoE, LLC/SNAP, VN-Tag, PBB),
//! Linux cooked v1/v2, BSD null/loopback, PPP, raw IP, FDDI, 802.11 with
//! radiotap, NFLOG.

use super::{Anomaly, Decoder, be16};
use crate::source::LinkType;

const MAX_L2_STEPS: usize = 16;

impl Decoder<'_, '_> {
    pub(super) fn link(&mut self, link: LinkType, off: usize) {
        let f = self.frame;
        let end = f.len();
        match link {
            LinkType::ETHERNET => self.ether(off, end),
            LinkType::RAW | LinkType::RAW_LEGACY | LinkType::RAW_LEGACY14 => self.ip_by_version(off, end),
            LinkType::IPV4 => self.ipv4(off, end),
            LinkType::IPV6 => self.ipv6(off, end),
            LinkType::NULL | LinkType::LOOP => {
                let Some(b) = f.get(off..off + 4) else {
                    return self.anomaly(Anomaly::TruncatedLinkHeader);
                };
                let le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let fam = if link == LinkType::LOOP || le > 0xffff {
                    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
                } else {
                    le
                };
                match fam {
                    2 => self.ipv4(off + 4, end),
                    10 | 24 | 28 | 30 => self.ipv6(off + 4, end),
                    _ => self.out.non_ip = true,
                }
            }
            LinkType::LINUX_SLL => {
                let Some(proto) = be16(f, off + 14) else {
                    return self.anomaly(Anomaly::TruncatedLinkHeader);
                };
                self.ethertype(proto, off + 16, end, 0);
            }
            LinkType::LINUX_SLL2 => {
                let Some(proto) = be16(f, off) else {
                    return self.anomaly(Anomaly::TruncatedLinkHeader);
                };
                if f.len() < off + 20 {
                    return self.anomaly(Anomaly::TruncatedLinkHeader);
                }
                self.ethertype(proto, off + 20, end, 0);
            }
            LinkType::PPP | LinkType::PPP_HDLC => self.ppp(off, end),
            LinkType::PPP_ETHER => self.pppoe(off, end),
            LinkType::FDDI => {
                // frame control(1) dst(6) src(6), then 802.2 LLC
                if f.len() < off + 13 {
                    return self.anomaly(Anomaly::TruncatedLinkHeader);
                }
                self.llc(off + 13, end, 0);
            }
            LinkType::IEEE802_11_RADIOTAP => {
                let Some(len) = f.get(off + 2..off + 4).map(|b| u16::from_le_bytes([b[0], b[1]])) else {
                    return self.anomaly(Anomaly::TruncatedRadiotap);
                };
                let len = len as usize;
                if len < 8 || f.len() < off + len {
                    return self.anomaly(Anomaly::TruncatedRadiotap);
                }
                // Flags field (bit 1 of the present word) tells whether an FCS trails.
                let present = u32::from_le_bytes([f[off + 4], f[off + 5], f[off + 6], f[off + 7]]);
                let mut end = end;
                if present & 0x2 != 0 {
                    // Skip extended present words, then TSFT (8 bytes, 8-aligned) if present.
                    let mut p = off + 8;
                    let mut pw = present;
                    while pw & 0x8000_0000 != 0 && p + 4 <= off + len {
                        pw = u32::from_le_bytes([f[p], f[p + 1], f[p + 2], f[p + 3]]);
                        p += 4;
                    }
                    if present & 0x1 != 0 {
                        p = off + ((p - off + 7) & !7) + 8;
                    }
                    if let Some(&flags) = f.get(p)
                        && p < off + len
                        && flags & 0x10 != 0
                    {
                        end = end.saturating_sub(4);
                    }
                }
                self.dot11(off + len, end);
            }
            LinkType::IEEE802_11 => self.dot11(off, end),
            LinkType::NFLOG => self.nflog(off, end),
            _ => self.anomaly(Anomaly::UnknownLinkType),
        }
    }

    pub(super) fn ether(&mut self, off: usize, end: usize) {
        let f = &self.frame[..end.min(self.frame.len())];
        let Some(t) = be16(f, off + 12) else {
            return self.anomaly(Anomaly::TruncatedLinkHeader);
        };
        if self.out.depth == 0 && !self.out.has_mac {
            self.out.dst_mac.copy_from_slice(&f[off..off + 6]);
            self.out.src_mac.copy_from_slice(&f[off + 6..off + 12]);
            self.out.has_mac = true;
        }
        self.ethertype(t, off + 14, end, 0);
    }

    /// Continue after an ethertype (or 802.3 length) field.
    fn ethertype(&mut self, t: u16, off: usize, end: usize, steps: usize) {
        if steps > MAX_L2_STEPS {
            return self.anomaly(Anomaly::TruncatedLinkHeader);
        }
        let f = self.frame;
        match t {
            0x0800 => self.ipv4(off, end),
            0x86dd => self.ipv6(off, end),
            0x8100 | 0x88a8 | 0x9100 | 0x9200 => {
                let (Some(tci), Some(nt)) = (be16(f, off), be16(f, off + 2)) else {
                    return self.anomaly(Anomaly::TruncatedVlan);
                };
                if self.out.depth == 0 && (self.out.n_vlan as usize) < 2 {
                    self.out.vlan[self.out.n_vlan as usize] = tci & 0x0fff;
                    self.out.n_vlan += 1;
                }
                self.ethertype(nt, off + 4, end, steps + 1)
            }
            0x8847 | 0x8848 => {
                let mut p = off;
                loop {
                    let Some(b) = f.get(p..p + 4) else {
                        return self.anomaly(Anomaly::TruncatedMpls);
                    };
                    p += 4;
                    if b[2] & 1 != 0 {
                        break;
                    }
                    if p - off > 64 {
                        return self.anomaly(Anomaly::TruncatedMpls);
                    }
                }
                match f.get(p).map(|b| b >> 4) {
                    Some(4) => self.ipv4(p, end),
                    Some(6) => self.ipv6(p, end),
                    // Pseudowire control word (0000), then Ethernet.
                    Some(0) => self.ether(p + 4, end),
                    _ => self.anomaly(Anomaly::TruncatedMpls),
                }
            }
            0x8864 => self.pppoe(off, end),
            0x8926 => {
                // VN-Tag: 4 bytes then the next ethertype.
                let Some(nt) = be16(f, off + 4) else {
                    return self.anomaly(Anomaly::TruncatedLinkHeader);
                };
                self.ethertype(nt, off + 6, end, steps + 1)
            }
            0x88e7 => {
                // 802.1ah PBB I-TAG (4) + customer DA/SA (12) + ethertype
                let Some(nt) = be16(f, off + 16) else {
                    return self.anomaly(Anomaly::TruncatedLinkHeader);
                };
                self.ethertype(nt, off + 18, end, steps + 1)
            }
            0x8903 => {
                // Cisco FabricPath: inner Ethernet follows a 16-byte header.
                self.ether(off + 2, end)
            }
            0x0806 | 0x8035 | 0x88cc | 0x8863 | 0x888e | 0x88f7 | 0x8809 | 0x9000 | 0x22f0 | 0x893a | 0x88e5
            | 0x8902 => {
                self.out.non_ip = true;
            }
            t if t <= 1500 => self.llc(off, end, steps + 1),
            _ => {
                self.out.non_ip = true;
                self.anomaly(Anomaly::UnknownEthertype);
            }
        }
    }

    /// 802.2 LLC; SNAP carries an ethertype.
    fn llc(&mut self, off: usize, end: usize, steps: usize) {
        let f = self.frame;
        let Some(h) = f.get(off..off + 3) else {
            return self.anomaly(Anomaly::TruncatedLlc);
        };
        if h[0] == 0xaa && h[1] == 0xaa {
            let Some(t) = be16(f, off + 6) else {
                return self.anomaly(Anomaly::TruncatedLlc);
            };
            self.ethertype(t, off + 8, end, steps + 1)
        } else if h[0] == 0x06 && h[1] == 0x06 {
            self.ipv4(off + 3, end)
        } else {
            self.out.non_ip = true; // STP, NetBIOS, IPX …
        }
    }

    fn pppoe(&mut self, off: usize, end: usize) {
        let f = self.frame;
        if f.len() < off + 6 {
            return self.anomaly(Anomaly::TruncatedPppoe);
        }
        let code = f[off + 1];
        if code != 0 {
            self.out.non_ip = true; // discovery
            return;
        }
        let len = be16(f, off + 4).unwrap_or(0) as usize;
        let end = end.min(off + 6 + len);
        self.ppp(off + 6, end)
    }

    pub(super) fn ppp(&mut self, off: usize, end: usize) {
        let f = self.frame;
        let mut p = off;
        if f.get(p) == Some(&0xff) && f.get(p + 1) == Some(&0x03) {
            p += 2;
        }
        let Some(&b0) = f.get(p) else {
            return self.anomaly(Anomaly::TruncatedLinkHeader);
        };
        let proto = if b0 & 1 == 1 {
            p += 1;
            b0 as u16
        } else {
            let Some(v) = be16(f, p) else {
                return self.anomaly(Anomaly::TruncatedLinkHeader);
            };
            p += 2;
            v
        };
        match proto {
            0x0021 => self.ipv4(p, end),
            0x0057 => self.ipv6(p, end),
            0xc021 | 0x8021 | 0x8057 | 0xc023 | 0xc223 | 0x80fd => self.out.non_ip = true,
            _ => {
                self.out.non_ip = true;
                self.anomaly(Anomaly::UnknownPppProtocol)
            }
        }
    }

    fn dot11(&mut self, off: usize, end: usize) {
        let f = self.frame;
        let Some(fc) = f.get(off..off + 2) else {
            return self.anomaly(Anomaly::TruncatedLinkHeader);
        };
        let ftype = (fc[0] >> 2) & 3;
        let subtype = fc[0] >> 4;
        if ftype != 2 || subtype & 0x4 != 0 {
            // management/control, or a data frame with no body
            self.out.non_ip = true;
            return;
        }
        if fc[1] & 0x40 != 0 {
            // protected: we cannot see inside
            self.out.non_ip = true;
            return;
        }
        let mut hl = 24;
        if fc[1] & 0x03 == 0x03 {
            hl += 6;
        }
        if subtype & 0x8 != 0 {
            hl += 2;
            if fc[1] & 0x80 != 0 {
                hl += 4;
            }
        }
        self.llc(off + hl, end, 0)
    }

    fn nflog(&mut self, off: usize, end: usize) {
        let f = self.frame;
        if f.len() < off + 4 {
            return self.anomaly(Anomaly::TruncatedNflog);
        }
        let family = f[off];
        let mut p = off + 4;
        while p + 4 <= end {
            let len = u16::from_le_bytes([f[p], f[p + 1]]) as usize;
            let typ = u16::from_le_bytes([f[p + 2], f[p + 3]]) & 0x7fff;
            if len < 4 || p + len > end {
                return self.anomaly(Anomaly::TruncatedNflog);
            }
            if typ == 9 {
                let s = p + 4;
                let e = p + len;
                return match family {
                    2 => self.ipv4(s, e),
                    10 => self.ipv6(s, e),
                    _ => self.ip_by_version(s, e),
                };
            }
            p += (len + 3) & !3;
        }
        self.anomaly(Anomaly::TruncatedNflog)
    }
}
