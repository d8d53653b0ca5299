//! Flow keys: canonical (direction-free) 5-tuple plus VLAN, and the
//! symmetric hash that shards flows over workers.

use crate::decode::{DecodeConfig, Decoded, IpLayer, PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP};
use crate::source::LinkType;

/// A canonical flow key: the lower (address, port) endpoint first, so both
/// directions of a flow have the same key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub lo: [u8; 16],
    pub hi: [u8; 16],
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    pub v6: bool,
    pub vlan: u16,
}

/// A packet's view of its flow: the canonical key and whether the packet
/// travels from `lo` to `hi`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketKey {
    pub key: FlowKey,
    /// The packet's source is `key.lo`.
    pub from_lo: bool,
}

/// ICMP "ports", as Zeek defines them: the type, and for request/reply pairs
/// the counterpart type, otherwise the code. Returns (src_port, dst_port).
pub fn icmp_ports(v6: bool, ty: u8, code: u8) -> (u16, u16) {
    let counterpart = if v6 {
        match ty {
            128 => Some(129),
            129 => Some(128),
            130 => Some(131),
            131 => Some(130),
            133 => Some(134),
            134 => Some(133),
            135 => Some(136),
            136 => Some(135),
            139 => Some(140),
            140 => Some(139),
            144 => Some(145),
            145 => Some(144),
            _ => None,
        }
    } else {
        match ty {
            8 => Some(0),
            0 => Some(8),
            13 => Some(14),
            14 => Some(13),
            15 => Some(16),
            16 => Some(15),
            17 => Some(18),
            18 => Some(17),
            10 => Some(9),
            9 => Some(10),
            _ => None,
        }
    };
    (ty as u16, counterpart.unwrap_or(code) as u16)
}

/// The (src, dst) ports of a layer as used in flow keys.
pub fn layer_ports(l: &IpLayer) -> (u16, u16) {
    if !l.l4_ok {
        return (0, 0);
    }
    match l.proto {
        PROTO_TCP | PROTO_UDP => (l.sport, l.dport),
        PROTO_ICMP | PROTO_ICMP6 => icmp_ports(l.v6, l.icmp_type, l.icmp_code),
        _ => (0, 0),
    }
}

impl PacketKey {
    pub fn of_layer(l: &IpLayer, vlan: u16) -> PacketKey {
        let (sp, dp) = layer_ports(l);
        let proto = if l.proto == PROTO_ICMP6 { PROTO_ICMP6 } else { l.proto };
        PacketKey::canonical((l.src, sp), (l.dst, dp), proto, l.v6, vlan)
    }

    /// The key of a packet from `src` to `dst` (address, port): the lower
    /// endpoint first.
    #[inline]
    fn canonical(src: ([u8; 16], u16), dst: ([u8; 16], u16), proto: u8, v6: bool, vlan: u16) -> PacketKey {
        let from_lo = src <= dst;
        let ((lo, lo_port), (hi, hi_port)) = if from_lo { (src, dst) } else { (dst, src) };
        PacketKey { key: FlowKey { lo, hi, lo_port, hi_port, proto, v6, vlan }, from_lo }
    }
}

impl FlowKey {
    /// A fast, well-mixed hash of the key. Symmetric by construction (the key
    /// is canonical).
    #[inline]
    pub fn hash64(&self) -> u64 {
        let w = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for x in [
            w(&self.lo[0..8]),
            w(&self.lo[8..16]),
            w(&self.hi[0..8]),
            w(&self.hi[8..16]),
            (self.lo_port as u64)
                | (self.hi_port as u64) << 16
                | (self.proto as u64) << 32
                | (self.v6 as u64) << 40
                | (self.vlan as u64) << 48,
        ] {
            h = mix(h ^ x);
        }
        h
    }
}

#[inline]
fn mix(x: u64) -> u64 {
    let m = (x as u128).wrapping_mul(0xa076_1d64_78bd_642f_u128 ^ 0xe703_7ed1_a0b4_28db);
    ((m >> 64) as u64) ^ (m as u64)
}

/// The VLAN id that goes into flow keys: the packet's first VLAN when VLANs
/// separate flows, else 0.
#[inline]
pub fn key_vlan(d: &Decoded, vlan_in_key: bool) -> u16 {
    if vlan_in_key { d.vlan_id() } else { 0 }
}

/// Which flows a packet touches, for sharding: the outermost and innermost.
pub fn shard_hashes(d: &Decoded, vlan_in_key: bool) -> Option<(u64, u64)> {
    let outer = d.outer()?;
    let inner = d.inner()?;
    let vlan = key_vlan(d, vlan_in_key);
    let ho = PacketKey::of_layer(outer, vlan).key.hash64();
    let hi = if d.depth > 1 { PacketKey::of_layer(inner, vlan).key.hash64() } else { ho };
    Some((ho, hi))
}

/// The shard hash of a plain frame read straight from its bytes, without
/// decoding it: Ethernet, untagged or with one 802.1Q tag, carrying
/// unfragmented IPv4 or IPv6 without extension headers, carrying TCP or UDP
/// that is not on a tunnel port. Whenever it answers, the answer is what
/// [`shard_hashes`] gives for the decoded frame (one flow, so outer = inner);
/// anything the decoder must look at more closely (tunnels, fragments, VLAN
/// stacks, extension headers, malformed or truncated headers, checksum
/// verification) gives `None`. The reader shards most frames with this and
/// decodes only the rest.
#[inline]
pub fn quick_shard_hash(link: LinkType, f: &[u8], cfg: &DecodeConfig, vlan_in_key: bool) -> Option<u64> {
    // A bad checksum changes what the decoder keeps of a packet.
    if link != LinkType::ETHERNET || cfg.verify_checksums {
        return None;
    }
    let be16 = |o: usize| Some(u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?]));
    let (mut et, mut ip, mut vlan) = (be16(12)?, 14, 0);
    if et == 0x8100 {
        vlan = be16(14)? & 0x0fff;
        et = be16(16)?;
        ip = 18;
    }
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    // (protocol, transport offset, transport length, end of the bytes present, IPv6)
    let (proto, l4, l4_len, end, v6) = match et {
        0x0800 => {
            let h = f.get(ip..ip + 20)?;
            let hl = (h[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            // Fragments are reassembled before sharding.
            let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
            if h[0] >> 4 != 4 || hl < 20 || f.len() < ip + hl || total < hl || fragment {
                return None;
            }
            src[..4].copy_from_slice(&h[12..16]);
            dst[..4].copy_from_slice(&h[16..20]);
            (h[9], ip + hl, total - hl, f.len().min(ip + total), false)
        }
        0x86dd => {
            let h = f.get(ip..ip + 40)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let plen = u16::from_be_bytes([h[4], h[5]]) as usize;
            src.copy_from_slice(&h[8..24]);
            dst.copy_from_slice(&h[24..40]);
            (h[6], ip + 40, plen, f.len().min(ip + 40 + plen), true)
        }
        _ => return None,
    };
    let (sp, dp) = match proto {
        PROTO_TCP => {
            let hl = (*f.get(l4 + 12)? >> 4) as usize * 4;
            if end < l4 + 20 || hl < 20 || hl > l4_len {
                return None;
            }
            (be16(l4)?, be16(l4 + 2)?)
        }
        PROTO_UDP => {
            if end < l4 + 8 {
                return None;
            }
            let (sp, dp) = (be16(l4)?, be16(l4 + 2)?);
            let tunnel = |port: u16| port != 0 && (sp == port || dp == port);
            if cfg.tunnels
                && [cfg.vxlan_port, cfg.geneve_port, cfg.teredo_port, cfg.gtpu_port, cfg.ayiya_port]
                    .into_iter()
                    .any(tunnel)
            {
                return None;
            }
            (sp, dp)
        }
        _ => return None,
    };
    let vlan = if vlan_in_key { vlan } else { 0 };
    Some(PacketKey::canonical((src, sp), (dst, dp), proto, v6, vlan).key.hash64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::decode::defrag::Defrag;
    use crate::source::synth::{SynthConfig, SynthSource};
    use crate::source::{Batch, PacketSource};
    use proptest::prelude::*;

    /// What the reader shards a decoded frame by, when it is one flow that
    /// needs no reassembly (the only frames the quick hash may answer for).
    fn decoded(f: &[u8], cfg: &DecodeConfig, vlan_in_key: bool) -> Option<u64> {
        let mut d = Decoded::default();
        decode(LinkType::ETHERNET, f, cfg, &mut d);
        if d.depth != 1 || Defrag::wants(&d) {
            return None;
        }
        let (ho, hi) = shard_hashes(&d, vlan_in_key)?;
        assert_eq!(ho, hi);
        Some(ho)
    }

    fn quick(f: &[u8], vlan_in_key: bool) -> Option<u64> {
        quick_shard_hash(LinkType::ETHERNET, f, &DecodeConfig::default(), vlan_in_key)
    }

    fn frame(vlan: Option<u16>, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(if ip[0] >> 4 == 6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        f.extend_from_slice(ip);
        f
    }

    fn transport(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut t = sport.to_be_bytes().to_vec();
        t.extend_from_slice(&dport.to_be_bytes());
        if proto == PROTO_TCP {
            t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        } else {
            t.extend_from_slice(&[0, 12, 0, 0]);
        }
        t.extend_from_slice(b"ping");
        t
    }

    fn ipv4(proto: u8, flags_frag: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 7];
        ip.extend_from_slice(&flags_frag.to_be_bytes());
        ip.extend_from_slice(&[64, proto, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&transport(proto, sport, dport));
        let len = ip.len() as u16;
        ip[2..4].copy_from_slice(&len.to_be_bytes());
        ip
    }

    fn ipv6(proto: u8, src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
        let t = transport(proto, sport, dport);
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(t.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[proto, 64]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&t);
        ip
    }

    fn v6(last: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&[0x20, 0x01]);
        a[15] = last;
        a
    }

    /// A VXLAN packet carrying a TCP frame.
    fn vxlan() -> Vec<u8> {
        let inner = frame(None, &ipv4(PROTO_TCP, 0, [172, 16, 0, 1], [172, 16, 0, 2], 5555, 22));
        let mut udp = ipv4(PROTO_UDP, 0, [10, 0, 0, 1], [10, 0, 0, 2], 49152, 4789);
        udp.truncate(20 + 8);
        udp.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]);
        udp.extend_from_slice(&inner);
        let len = udp.len() as u16;
        udp[2..4].copy_from_slice(&len.to_be_bytes());
        udp[24..26].copy_from_slice(&(len - 20).to_be_bytes());
        frame(None, &udp)
    }

    fn templates() -> Vec<Vec<u8>> {
        vec![
            frame(None, &ipv4(PROTO_TCP, 0x4000, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 443)),
            frame(None, &ipv4(PROTO_TCP, 0, [10, 0, 0, 9], [10, 0, 0, 2], 80, 40001)),
            frame(None, &ipv4(PROTO_UDP, 0, [192, 168, 1, 5], [8, 8, 8, 8], 5353, 53)),
            frame(Some(0x2064), &ipv4(PROTO_UDP, 0, [192, 168, 1, 5], [8, 8, 8, 8], 5353, 53)),
            frame(None, &ipv6(PROTO_UDP, v6(9), v6(3), 546, 547)),
            frame(Some(7), &ipv6(PROTO_TCP, v6(3), v6(9), 443, 50000)),
            vxlan(),
        ]
    }

    #[test]
    fn plain_frames_shard_as_decoded_without_decoding() {
        let plain = &templates()[..6];
        for vlan_in_key in [false, true] {
            for f in plain {
                let want = decoded(f, &DecodeConfig::default(), vlan_in_key);
                assert!(want.is_some(), "a plain frame is one flow");
                assert_eq!(quick(f, vlan_in_key), want);
            }
        }
        // Both directions of a flow alike (the key is canonical).
        let a = frame(None, &ipv4(PROTO_TCP, 0, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 443));
        let b = frame(None, &ipv4(PROTO_TCP, 0, [10, 0, 0, 2], [10, 0, 0, 1], 443, 40000));
        assert_eq!(quick(&a, false), quick(&b, false));
        // The VLAN id separates flows only when configured to.
        let tagged = &templates()[3];
        let untagged = &templates()[2];
        assert_eq!(quick(tagged, false), quick(untagged, false));
        assert_ne!(quick(tagged, true), quick(untagged, true));
    }

    #[test]
    fn frames_the_decoder_must_see_are_left_to_it() {
        let first_fragment = frame(None, &ipv4(PROTO_UDP, 0x2000, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2));
        let later_fragment = frame(None, &ipv4(PROTO_UDP, 0x0010, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2));
        let icmp = frame(None, &ipv4(1, 0, [10, 0, 0, 1], [10, 0, 0, 2], 0x0800, 0));
        for f in [&first_fragment, &later_fragment, &icmp, &vxlan()] {
            assert_eq!(quick(f, false), None);
        }
        // With tunnels off the VXLAN packet is plain UDP.
        let no_tunnels = DecodeConfig { tunnels: false, ..DecodeConfig::default() };
        let q = quick_shard_hash(LinkType::ETHERNET, &vxlan(), &no_tunnels, false);
        assert!(q.is_some());
        assert_eq!(q, decoded(&vxlan(), &no_tunnels, false));
        // Verifying checksums: the decoder decides.
        let verify = DecodeConfig { verify_checksums: true, ..DecodeConfig::default() };
        assert_eq!(quick_shard_hash(LinkType::ETHERNET, &templates()[0], &verify, false), None);
        let plain = &templates()[0];
        assert_eq!(quick_shard_hash(LinkType::RAW, &plain[14..], &DecodeConfig::default(), false), None);
        // Every prefix: no panic, and an answer only once the whole TCP header is there.
        for n in 0..plain.len() {
            assert_eq!(quick(&plain[..n], false).is_some(), n >= 14 + 20 + 20, "prefix of {n} bytes");
            assert_eq!(
                quick(&plain[..n], false),
                quick(&plain[..n], false).and(decoded(&plain[..n], &DecodeConfig::default(), false))
            );
        }
    }

    #[test]
    fn the_synthetic_mix_is_mostly_sharded_quickly_and_always_as_decoded() {
        let mut src = SynthSource::new(SynthConfig { packets: 20_000, seed: 3, ..SynthConfig::default() });
        let mut batch = Batch::with_capacity(256);
        let (mut frames, mut quick_ones) = (0, 0);
        let cfg = DecodeConfig::default();
        loop {
            batch.clear();
            if src.fill(&mut batch, 256).unwrap() == 0 {
                break;
            }
            for (d, f) in batch.frames() {
                frames += 1;
                if let Some(h) = quick_shard_hash(d.link, f, &cfg, false) {
                    quick_ones += 1;
                    assert_eq!(Some(h), decoded(f, &cfg, false), "frame {frames}");
                }
            }
        }
        assert_eq!(frames, 20_000);
        assert!(quick_ones * 10 > frames * 9, "{quick_ones} of {frames} frames sharded quickly");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// Damaged headers: whatever the quick hash answers, the decoder agrees.
        #[test]
        fn a_quick_answer_is_always_the_decoders(
            which in 0usize..7,
            edits in proptest::collection::vec((12usize..72, any::<u8>()), 1..4),
            cut in 14usize..160,
            vlan_in_key: bool,
            tunnels: bool,
        ) {
            let mut f = templates()[which].clone();
            for (at, b) in edits {
                if let Some(x) = f.get_mut(at) {
                    *x = b;
                }
            }
            f.truncate(f.len().min(cut));
            let cfg = DecodeConfig { tunnels, ..DecodeConfig::default() };
            if let Some(h) = quick_shard_hash(LinkType::ETHERNET, &f, &cfg, vlan_in_key) {
                prop_assert_eq!(Some(h), decoded(&f, &cfg, vlan_in_key));
            }
        }
    }
}
