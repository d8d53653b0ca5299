//! Community ID v1 flow hashing (https://github.com/corelight/community-id-spec).

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::decode::{PROTO_ICMP, PROTO_ICMP6};

/// Community ID v1 of a flow given as (src, sport) → (dst, dport).
/// For ICMP, pass type and code as the ports; the mapping to the
/// spec's port pair happens here.
pub fn community_id_v1(
    seed: u16,
    v6: bool,
    src: &[u8; 16],
    dst: &[u8; 16],
    proto: u8,
    sport: u16,
    dport: u16,
) -> String {
    let alen = if v6 { 16 } else { 4 };
    let (mut s, mut d) = (&src[..alen], &dst[..alen]);
    let (mut sp, mut dp) = (sport, dport);
    let mut one_way = false;
    if proto == PROTO_ICMP || proto == PROTO_ICMP6 {
        let (p, q, ow) = icmp_pair(proto == PROTO_ICMP6, sport as u8, dport as u8);
        sp = p;
        dp = q;
        one_way = ow;
    }
    // Order so the smaller endpoint comes first, unless a one-way ICMP
    // message, which keeps its direction.
    let swap = !one_way && (s, sp) > (d, dp);
    if swap {
        std::mem::swap(&mut s, &mut d);
        std::mem::swap(&mut sp, &mut dp);
    }
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(s);
    h.update(d);
    h.update([proto, 0]);
    let has_ports = matches!(proto, 1 | 6 | 17 | 58 | 132);
    if has_ports {
        h.update(sp.to_be_bytes());
        h.update(dp.to_be_bytes());
    }
    let digest = h.finalize();
    format!("1:{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// The spec's ICMP mapping: (type, code) → (port1, port2, one_way).
fn icmp_pair(v6: bool, ty: u8, code: u8) -> (u16, u16, bool) {
    let pair = if v6 {
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
            0 => Some(8),
            8 => Some(0),
            9 => Some(10),
            10 => Some(9),
            13 => Some(14),
            14 => Some(13),
            15 => Some(16),
            16 => Some(15),
            17 => Some(18),
            18 => Some(17),
            _ => None,
        }
    };
    match pair {
        Some(p) => (ty as u16, p, false),
        None => (ty as u16, code as u16, true),
    }
}
