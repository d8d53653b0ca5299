//! Internet checksums (RFC 1071) for IPv4 headers and TCP/UDP/ICMP.

use super::{IpLayer, PROTO_ICMP};

/// One's-complement sum of `data` added to `acc` (not folded).
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [b] = chunks.remainder() {
        acc += (*b as u64) << 8;
    }
    acc
}

pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Verify the transport checksum of `seg` (header + payload) in layer `l`.
pub fn l4_ok(l: &IpLayer, seg: &[u8]) -> bool {
    let mut acc = 0u64;
    // ICMPv4 has no pseudo-header.
    if l.proto != PROTO_ICMP || l.v6 {
        if l.v6 {
            acc = sum(&l.src, acc);
            acc = sum(&l.dst, acc);
            acc += seg.len() as u64;
            acc += l.proto as u64;
        } else {
            acc = sum(&l.src[..4], acc);
            acc = sum(&l.dst[..4], acc);
            acc += l.proto as u64;
            acc += seg.len() as u64;
        }
    }
    acc = sum(seg, acc);
    fold(acc) == 0
}
