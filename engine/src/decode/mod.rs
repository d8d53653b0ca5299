//! Packet decoding: link layer → IP → transport, through tunnels.
//!
//! [`decode`] fills a caller-owned [`Decoded`] (no allocation) and never
//! panics on any input: every read is bounds-checked, and every malformation
//! becomes a named [`Anomaly`] on the packet while whatever could be decoded
//! is kept for accounting.

pub mod anomaly;
mod checksum;
pub mod defrag;
mod link;

pub use anomaly::{Anomaly, AnomalyCounters, AnomalySet};

use crate::source::LinkType;

/// Most IP layers decoded in one packet (outer + nested tunnels).
pub const MAX_LAYERS: usize = 4;

/// Decoder settings.
#[derive(Clone, Copy, Debug)]
pub struct DecodeConfig {
    /// Verify IPv4 header, TCP, UDP and ICMP checksums. Off by default: NIC
    /// checksum offload makes locally sent packets look bad on capture.
    pub verify_checksums: bool,
    pub vxlan_port: u16,
    pub geneve_port: u16,
    pub teredo_port: u16,
    pub gtpu_port: u16,
    pub ayiya_port: u16,
    /// Decapsulate tunnels at all.
    pub tunnels: bool,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            verify_checksums: false,
            vxlan_port: 4789,
            geneve_port: 6081,
            teredo_port: 3544,
            gtpu_port: 2152,
            ayiya_port: 5072,
            tunnels: true,
        }
    }
}

/// What an IP layer carries inside, when it is a tunnel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tunnel {
    #[default]
    None,
    IpInIp,
    Gre,
    Vxlan,
    Geneve,
    Teredo,
    GtpU,
    Ayiya,
}

impl Tunnel {
    pub fn name(self) -> &'static str {
        match self {
            Tunnel::None => "",
            Tunnel::IpInIp => "ip-in-ip",
            Tunnel::Gre => "gre",
            Tunnel::Vxlan => "vxlan",
            Tunnel::Geneve => "geneve",
            Tunnel::Teredo => "teredo",
            Tunnel::GtpU => "gtpv1",
            Tunnel::Ayiya => "ayiya",
        }
    }
}

/// IP fragment position of a layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frag {
    #[default]
    None,
    /// Offset 0 with more fragments to come.
    First,
    /// A later fragment (no transport header).
    Later,
}

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP6: u8 = 58;
pub const PROTO_GRE: u8 = 47;

/// One decoded IP layer and its transport header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpLayer {
    pub v6: bool,
    /// Offset of this IP header in the frame.
    pub ip_off: u32,
    /// Offset of the IPv6 fragment header, when there is one.
    pub frag_hdr_off: u32,
    /// Addresses; IPv4 uses the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    pub ttl: u8,
    /// Length of the IP datagram per its header (IPv4 total length, IPv6 40 + payload length).
    pub ip_len: u32,
    /// Offset of the transport header in the frame.
    pub l4_off: u32,
    /// Transport bytes per the IP header (header + payload).
    pub l4_len: u32,
    pub frag: Frag,
    /// Fragment identification, offset (bytes) and more-fragments flag.
    pub frag_id: u32,
    pub frag_off: u32,
    pub more_frags: bool,
    /// Transport header parsed (false for later fragments, truncation, unknown protocols).
    pub l4_ok: bool,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Transport payload: offset in the frame, length per headers, bytes captured.
    pub payload_off: u32,
    pub payload_len: u32,
    pub payload_cap: u32,
    /// Checksum verification failed (only when verification is on).
    pub bad_checksum: bool,
    /// The tunnel this layer's payload carries, if any.
    pub encap: Tunnel,
}

impl IpLayer {
    /// Source address as a std IpAddr.
    pub fn src_addr(&self) -> std::net::IpAddr {
        addr(self.v6, &self.src)
    }
    pub fn dst_addr(&self) -> std::net::IpAddr {
        addr(self.v6, &self.dst)
    }
    /// The payload bytes that are present in `frame`.
    #[inline]
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let s = self.payload_off as usize;
        frame.get(s..s + self.payload_cap as usize).unwrap_or(&[])
    }
}

pub fn addr(v6: bool, a: &[u8; 16]) -> std::net::IpAddr {
    if v6 {
        std::net::IpAddr::V6(std::net::Ipv6Addr::from(*a))
    } else {
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    }
}

/// A decoded packet. Reused across packets: [`decode`] resets it.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    /// Outer and inner VLAN ids of the outermost link layer (0 = none).
    pub vlan: [u16; 2],
    pub n_vlan: u8,
    /// Source and destination MAC of the outermost link layer, when it has them.
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub has_mac: bool,
    /// IP layers, outermost first.
    pub layers: [IpLayer; MAX_LAYERS],
    pub depth: u8,
    pub anomalies: AnomalySet,
    /// The frame is not IP (ARP, STP, LLDP, 802.11 management …).
    pub non_ip: bool,
}

impl Decoded {
    #[inline]
    pub fn layers(&self) -> &[IpLayer] {
        &self.layers[..self.depth as usize]
    }
    /// The innermost IP layer, if any.
    #[inline]
    pub fn inner(&self) -> Option<&IpLayer> {
        self.depth.checked_sub(1).map(|i| &self.layers[i as usize])
    }
    #[inline]
    pub fn outer(&self) -> Option<&IpLayer> {
        if self.depth > 0 { Some(&self.layers[0]) } else { None }
    }
    /// First VLAN id (0 when untagged).
    pub fn vlan_id(&self) -> u16 {
        self.vlan[0]
    }
}

/// Decode one frame into `out`.
pub fn decode(link: LinkType, frame: &[u8], cfg: &DecodeConfig, out: &mut Decoded) {
    out.vlan = [0; 2];
    out.n_vlan = 0;
    out.has_mac = false;
    out.depth = 0;
    out.anomalies = AnomalySet::default();
    out.non_ip = false;
    let mut d = Decoder { frame, cfg, out };
    d.link(link, 0);
}

struct Decoder<'a, 'o> {
    frame: &'a [u8],
    cfg: &'a DecodeConfig,
    out: &'o mut Decoded,
}

#[inline]
fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

#[inline]
fn be32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(o)?, *b.get(o + 1)?, *b.get(o + 2)?, *b.get(o + 3)?]))
}

impl Decoder<'_, '_> {
    #[inline]
    fn anomaly(&mut self, a: Anomaly) {
        self.out.anomalies.add(a);
    }

    /// Dispatch on a raw IP packet by its version nibble.
    fn ip_by_version(&mut self, off: usize, end: usize) {
        match self.frame.get(off).map(|b| b >> 4) {
            Some(4) => self.ipv4(off, end),
            Some(6) => self.ipv6(off, end),
            Some(_) => self.anomaly(Anomaly::BadIpVersion),
            None => self.anomaly(Anomaly::TruncatedIpv4),
        }
    }

    /// `end` bounds the bytes that belong to this IP packet (outer length field
    /// or frame end).
    fn ipv4(&mut self, off: usize, end: usize) {
        let f = self.frame;
        let end = end.min(f.len());
        if self.out.depth as usize >= MAX_LAYERS {
            self.anomaly(Anomaly::TunnelDepthExceeded);
            return;
        }
        if end < off + 20 {
            self.anomaly(Anomaly::TruncatedIpv4);
            return;
        }
        let vihl = f[off];
        if vihl >> 4 != 4 {
            self.anomaly(Anomaly::BadIpVersion);
            return;
        }
        let hl = ((vihl & 0x0f) as usize) * 4;
        if hl < 20 {
            self.anomaly(Anomaly::BadIpv4HeaderLength);
            return;
        }
        if end < off + hl {
            self.anomaly(Anomaly::TruncatedIpv4);
            return;
        }
        let total = be16(f, off + 2).unwrap_or(0) as usize;
        if total < hl {
            self.anomaly(Anomaly::BadIpv4TotalLength);
            return;
        }
        let mut l = IpLayer { v6: false, ..IpLayer::default() };
        l.src[..4].copy_from_slice(&f[off + 12..off + 16]);
        l.dst[..4].copy_from_slice(&f[off + 16..off + 20]);
        l.proto = f[off + 9];
        l.ttl = f[off + 8];
        l.ip_len = total as u32;
        let fl = be16(f, off + 6).unwrap_or(0);
        l.more_frags = fl & 0x2000 != 0;
        l.frag_off = ((fl & 0x1fff) as u32) * 8;
        l.frag_id = be16(f, off + 4).unwrap_or(0) as u32;
        l.frag = if l.frag_off > 0 {
            Frag::Later
        } else if l.more_frags {
            Frag::First
        } else {
            Frag::None
        };
        if l.frag != Frag::None {
            self.anomaly(Anomaly::FragmentedPacket);
        }
        if self.cfg.verify_checksums && checksum::fold(checksum::sum(&f[off..off + hl], 0)) != 0 {
            self.anomaly(Anomaly::BadIpv4Checksum);
            l.bad_checksum = true;
        }
        let ip_end = off + total;
        let avail_end = if ip_end > end {
            // The datagram claims more than we have: snaplen cut, or a lie.
            self.anomaly(Anomaly::IpPayloadTruncatedBySnaplen);
            end
        } else {
            ip_end
        };
        l.ip_off = off as u32;
        l.l4_off = (off + hl) as u32;
        l.l4_len = (total - hl) as u32;
        let idx = self.out.depth as usize;
        self.out.layers[idx] = l;
        self.out.depth += 1;
        if l.bad_checksum {
            return;
        }
        self.transport(idx, off + hl, avail_end);
    }

    fn ipv6(&mut self, off: usize, end: usize) {
        let f = self.frame;
        let end = end.min(f.len());
        if self.out.depth as usize >= MAX_LAYERS {
            self.anomaly(Anomaly::TunnelDepthExceeded);
            return;
        }
        if end < off + 40 {
            self.anomaly(Anomaly::TruncatedIpv6);
            return;
        }
        if f[off] >> 4 != 6 {
            self.anomaly(Anomaly::BadIpVersion);
            return;
        }
        let plen = be16(f, off + 4).unwrap_or(0) as usize;
        let mut l = IpLayer { v6: true, ip_off: off as u32, ..IpLayer::default() };
        l.src.copy_from_slice(&f[off + 8..off + 24]);
        l.dst.copy_from_slice(&f[off + 24..off + 40]);
        l.ttl = f[off + 7];
        l.ip_len = 40 + plen as u32;
        let ip_end = off + 40 + plen;
        let avail_end = if ip_end > end {
            self.anomaly(Anomaly::IpPayloadTruncatedBySnaplen);
            end
        } else {
            ip_end
        };
        // Walk extension headers.
        let mut nh = f[off + 6];
        let mut p = off + 40;
        let mut guard = 0;
        loop {
            guard += 1;
            if guard > 16 {
                self.anomaly(Anomaly::TruncatedIpv6ExtensionHeader);
                break;
            }
            match nh {
                0 | 43 | 60 | 135 | 139 | 140 => {
                    // hop-by-hop, routing, destination options, mobility, HIP, shim6
                    if avail_end < p + 8 {
                        self.anomaly(Anomaly::TruncatedIpv6ExtensionHeader);
                        l.l4_off = p as u32;
                        l.proto = nh;
                        self.push_layer_no_l4(l);
                        return;
                    }
                    let len = (f[p + 1] as usize + 1) * 8;
                    nh = f[p];
                    p += len;
                }
                44 => {
                    if avail_end < p + 8 {
                        self.anomaly(Anomaly::TruncatedIpv6ExtensionHeader);
                        l.l4_off = p as u32;
                        l.proto = nh;
                        self.push_layer_no_l4(l);
                        return;
                    }
                    let fo = be16(f, p + 2).unwrap_or(0);
                    l.frag_off = (fo & 0xfff8) as u32;
                    l.more_frags = fo & 1 != 0;
                    l.frag_id = be32(f, p + 4).unwrap_or(0);
                    l.frag_hdr_off = p as u32;
                    l.frag = if l.frag_off > 0 {
                        Frag::Later
                    } else if l.more_frags {
                        Frag::First
                    } else {
                        Frag::None // atomic fragment
                    };
                    if l.frag != Frag::None {
                        self.anomaly(Anomaly::FragmentedPacket);
                    }
                    nh = f[p];
                    p += 8;
                }
                51 => {
                    // AH: length in 4-byte units minus 2
                    if avail_end < p + 8 {
                        self.anomaly(Anomaly::TruncatedIpv6ExtensionHeader);
                        l.l4_off = p as u32;
                        l.proto = nh;
                        self.push_layer_no_l4(l);
                        return;
                    }
                    let len = (f[p + 1] as usize + 2) * 4;
                    nh = f[p];
                    p += len;
                }
                _ => break,
            }
        }
        if p > ip_end {
            self.anomaly(Anomaly::BadIpv6PayloadLength);
            l.l4_off = ip_end.min(avail_end) as u32;
            l.proto = nh;
            self.push_layer_no_l4(l);
            return;
        }
        l.proto = nh;
        l.l4_off = p as u32;
        l.l4_len = (ip_end - p) as u32;
        let idx = self.out.depth as usize;
        self.out.layers[idx] = l;
        self.out.depth += 1;
        self.transport(idx, p, avail_end);
    }

    fn push_layer_no_l4(&mut self, l: IpLayer) {
        let idx = self.out.depth as usize;
        self.out.layers[idx] = l;
        self.out.depth += 1;
    }

    /// Decode the transport header of layer `idx`, whose bytes are `off..end`.
    fn transport(&mut self, idx: usize, off: usize, end: usize) {
        let f = self.frame;
        // Only the fields it needs, not a copy of the whole layer (~110
        // bytes, written field by field just before).
        let (frag, proto, l4_len, v6) = {
            let l = &self.out.layers[idx];
            (l.frag, l.proto, l.l4_len, l.v6)
        };
        if frag == Frag::Later {
            return;
        }
        // For a first fragment, only the header is interpreted; payload
        // lengths come from the (unreassembled) fragment.
        match proto {
            PROTO_TCP => {
                if end < off + 20 {
                    self.anomaly(Anomaly::TruncatedTcp);
                    return;
                }
                let hl = ((f[off + 12] >> 4) as usize) * 4;
                if hl < 20 || (hl as u32) > l4_len {
                    self.anomaly(Anomaly::BadTcpHeaderLength);
                    return;
                }
                let flags = f[off + 13];
                if flags & tcp_flags::SYN != 0 && flags & tcp_flags::FIN != 0 {
                    self.anomaly(Anomaly::TcpSynWithFin);
                }
                if flags & tcp_flags::SYN != 0 && flags & tcp_flags::RST != 0 {
                    self.anomaly(Anomaly::TcpSynWithRst);
                }
                let bad = self.cfg.verify_checksums
                    && frag == Frag::None
                    && off + l4_len as usize <= end
                    && !checksum::l4_ok(&self.out.layers[idx], &f[off..off + l4_len as usize]);
                if bad {
                    self.anomaly(Anomaly::BadTcpChecksum);
                }
                let o = &mut self.out.layers[idx];
                o.sport = be16(f, off).unwrap_or(0);
                o.dport = be16(f, off + 2).unwrap_or(0);
                o.seq = be32(f, off + 4).unwrap_or(0);
                o.ack = be32(f, off + 8).unwrap_or(0);
                o.tcp_flags = flags;
                o.window = be16(f, off + 14).unwrap_or(0);
                o.bad_checksum = bad;
                o.l4_ok = true;
                set_payload(o, off + hl, l4_len as usize - hl, end);
            }
            PROTO_UDP => {
                if end < off + 8 {
                    self.anomaly(Anomaly::TruncatedUdp);
                    return;
                }
                let ulen = be16(f, off + 4).unwrap_or(0) as usize;
                let claimed = if ulen < 8 || (frag == Frag::None && ulen > l4_len as usize) {
                    self.anomaly(Anomaly::BadUdpLength);
                    l4_len as usize
                } else {
                    ulen
                };
                let ck = be16(f, off + 6).unwrap_or(0);
                let bad = self.cfg.verify_checksums
                    && frag == Frag::None
                    && (ck != 0 || v6)
                    && off + claimed <= end
                    && !checksum::l4_ok(&self.out.layers[idx], &f[off..off + claimed]);
                if bad {
                    self.anomaly(Anomaly::BadUdpChecksum);
                }
                let (sport, dport) = (be16(f, off).unwrap_or(0), be16(f, off + 2).unwrap_or(0));
                {
                    let o = &mut self.out.layers[idx];
                    o.sport = sport;
                    o.dport = dport;
                    o.bad_checksum = bad;
                    o.l4_ok = true;
                    set_payload(o, off + 8, claimed.saturating_sub(8), end);
                }
                if !bad && self.cfg.tunnels && frag == Frag::None {
                    self.udp_tunnel(idx, sport, dport);
                }
            }
            PROTO_ICMP | PROTO_ICMP6 => {
                if (proto == PROTO_ICMP) == v6 {
                    // ICMPv4 inside IPv6 or vice versa: still parse, it is what it is.
                }
                if end < off + 4 || l4_len < 4 {
                    self.anomaly(Anomaly::TruncatedIcmp);
                    return;
                }
                let bad = self.cfg.verify_checksums
                    && frag == Frag::None
                    && off + l4_len as usize <= end
                    && !checksum::l4_ok(&self.out.layers[idx], &f[off..off + l4_len as usize]);
                if bad {
                    self.anomaly(Anomaly::BadIcmpChecksum);
                }
                let o = &mut self.out.layers[idx];
                o.icmp_type = f[off];
                o.icmp_code = f[off + 1];
                o.bad_checksum = bad;
                o.l4_ok = true;
                let hdr = 8.min(l4_len as usize);
                set_payload(o, off + hdr, l4_len as usize - hdr, end);
            }
            4 | 41 if self.cfg.tunnels => {
                let o = &mut self.out.layers[idx];
                o.encap = Tunnel::IpInIp;
                set_payload(o, off, l4_len as usize, end);
                if proto == 4 { self.ipv4(off, end) } else { self.ipv6(off, end) }
            }
            PROTO_GRE if self.cfg.tunnels => {
                set_payload(&mut self.out.layers[idx], off, l4_len as usize, end);
                self.gre(idx, off, end);
            }
            _ => {
                set_payload(&mut self.out.layers[idx], off, l4_len as usize, end);
            }
        }
    }

    fn gre(&mut self, idx: usize, off: usize, end: usize) {
        let f = &self.frame[..end.min(self.frame.len())];
        let (Some(flags), Some(proto)) = (be16(f, off), be16(f, off + 2)) else {
            self.anomaly(Anomaly::TruncatedTunnel);
            return;
        };
        let version = flags & 7;
        let mut p = off + 4;
        if flags & 0x8000 != 0 {
            p += 4; // checksum + reserved
        }
        if flags & 0x2000 != 0 {
            p += 4; // key (always present in version 1)
        }
        if flags & 0x1000 != 0 {
            p += 4; // sequence
        }
        if version == 1 && flags & 0x0080 != 0 {
            p += 4; // acknowledgment (enhanced GRE)
        }
        if p > f.len() {
            self.anomaly(Anomaly::TruncatedTunnel);
            return;
        }
        self.out.layers[idx].encap = Tunnel::Gre;
        match proto {
            0x0800 => self.ipv4(p, end),
            0x86dd => self.ipv6(p, end),
            0x6558 => self.ether(p, end),
            0x880b => self.ppp(p, end),
            0x88be => {
                // ERSPAN type II: 8-byte header when the sequence bit is set.
                if flags & 0x1000 != 0 { self.ether(p + 8, end) } else { self.ether(p, end) }
            }
            0x22eb => {
                // ERSPAN type III: 12 bytes, plus 8 when the O bit is set.
                let o = f.get(p + 11).map(|b| b & 1).unwrap_or(0);
                self.ether(p + 12 + if o == 1 { 8 } else { 0 }, end)
            }
            _ => {
                self.out.layers[idx].encap = Tunnel::None;
            }
        }
    }

    fn udp_tunnel(&mut self, idx: usize, sport: u16, dport: u16) {
        let l = self.out.layers[idx];
        let f = self.frame;
        let p = l.payload_off as usize;
        let end = p + l.payload_cap as usize;
        let on = |port: u16| port != 0 && (sport == port || dport == port);
        let c = *self.cfg;
        if on(c.vxlan_port) && dport == c.vxlan_port {
            // flags(1: I bit 0x08) reserved(3) VNI(3) reserved(1)
            if end < p + 8 + 14 || f[p] & 0x08 == 0 {
                return;
            }
            self.out.layers[idx].encap = Tunnel::Vxlan;
            self.ether(p + 8, end);
        } else if on(c.geneve_port) && dport == c.geneve_port {
            if end < p + 8 {
                return;
            }
            let optlen = ((f[p] & 0x3f) as usize) * 4;
            let proto = be16(f, p + 2).unwrap_or(0);
            let q = p + 8 + optlen;
            if f[p] >> 6 != 0 || q > end {
                return;
            }
            self.out.layers[idx].encap = Tunnel::Geneve;
            match proto {
                0x6558 => self.ether(q, end),
                0x0800 => self.ipv4(q, end),
                0x86dd => self.ipv6(q, end),
                _ => self.out.layers[idx].encap = Tunnel::None,
            }
        } else if on(c.gtpu_port) {
            // GTPv1-U: flags(1) type(1) length(2) TEID(4) [seq(2) npdu(1) next(1)] [ext…]
            if end < p + 8 {
                return;
            }
            let flags = f[p];
            if flags >> 5 != 1 || flags & 0x10 == 0 || f[p + 1] != 0xff {
                return;
            }
            let mut q = p + 8;
            if flags & 0x07 != 0 {
                if end < q + 4 {
                    self.anomaly(Anomaly::TruncatedTunnel);
                    return;
                }
                let mut next = f[q + 3];
                q += 4;
                let mut guard = 0;
                while next != 0 && guard < 8 {
                    guard += 1;
                    let Some(&len) = f.get(q) else {
                        self.anomaly(Anomaly::TruncatedTunnel);
                        return;
                    };
                    let len = len as usize * 4;
                    if len == 0 || q + len > end {
                        self.anomaly(Anomaly::TruncatedTunnel);
                        return;
                    }
                    next = f[q + len - 1];
                    q += len;
                }
            }
            if q >= end {
                return;
            }
            self.out.layers[idx].encap = Tunnel::GtpU;
            self.ip_by_version(q, end);
        } else if on(c.teredo_port) {
            // Optional authentication and origin indication, then IPv6.
            let mut q = p;
            if be16(f, q) == Some(0x0001) {
                let (Some(&idl), Some(&aul)) = (f.get(q + 2), f.get(q + 3)) else {
                    return;
                };
                q += 4 + idl as usize + aul as usize + 9;
            }
            if be16(f, q) == Some(0x0000) {
                q += 8;
            }
            if end < q + 40 || f[q] >> 4 != 6 {
                return;
            }
            let plen = be16(f, q + 4).unwrap_or(0) as usize;
            if q + 40 + plen != end {
                return;
            }
            self.out.layers[idx].encap = Tunnel::Teredo;
            self.ipv6(q, end);
        } else if on(c.ayiya_port) {
            if end < p + 8 {
                return;
            }
            let id_len = (f[p] >> 4) as u32;
            let sig_len = (f[p + 1] >> 4) as usize;
            let op = f[p + 2] & 0x0f;
            let next = f[p + 3];
            let Some(idb) = 1usize.checked_shl(id_len) else {
                return;
            };
            let q = p + 8 + idb + sig_len * 4;
            if op != 1 || q >= end {
                return;
            }
            self.out.layers[idx].encap = Tunnel::Ayiya;
            match next {
                4 => self.ipv4(q, end),
                41 => self.ipv6(q, end),
                _ => self.out.layers[idx].encap = Tunnel::None,
            }
        }
    }
}

#[inline]
fn set_payload(o: &mut IpLayer, off: usize, claimed: usize, end: usize) {
    o.payload_off = off as u32;
    o.payload_len = claimed as u32;
    o.payload_cap = claimed.min(end.saturating_sub(off)) as u32;
}

#[cfg(test)]
mod tests;
