//! Flow keys: canonical (direction-free) 5-tuple plus VLAN, and the
//! symmetric hash that shards flows over workers.

use crate::decode::{Decoded, IpLayer, PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP};

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
        let src_first = (l.src, sp) <= (l.dst, dp);
        let key = if src_first {
            FlowKey { lo: l.src, hi: l.dst, lo_port: sp, hi_port: dp, proto, v6: l.v6, vlan }
        } else {
            FlowKey { lo: l.dst, hi: l.src, lo_port: dp, hi_port: sp, proto, v6: l.v6, vlan }
        };
        PacketKey { key, from_lo: src_first }
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
