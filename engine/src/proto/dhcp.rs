//! DHCP (BOOTP with the DHCP magic cookie): one record per message.

use super::{ProtoCtx, malformed};
use crate::decode::Anomaly;
use crate::records::{DhcpRecord, Sinks};

const COOKIE: [u8; 4] = [0x63, 0x82, 0x53, 0x63];

pub fn looks_like(p: &[u8]) -> bool {
    p.len() >= 240 && (p[0] == 1 || p[0] == 2) && p[236..240] == COOKIE
}

/// Parse one DHCP message and emit its record. Returns true if it was DHCP.
pub fn analyze(ctx: &ProtoCtx, p: &[u8], sinks: &mut Sinks) -> bool {
    if !looks_like(p) {
        malformed(sinks, Anomaly::DhcpMalformed);
        return false;
    }
    let xid = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    let ip = |o: usize| -> Option<[u8; 4]> {
        let a = [p[o], p[o + 1], p[o + 2], p[o + 3]];
        (a != [0; 4]).then_some(a)
    };
    let ciaddr = ip(12);
    let yiaddr = ip(16);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&p[28..34]);
    let mut r = DhcpRecord { trans_id: xid, mac, client_addr: ciaddr, ..DhcpRecord::default() };
    let mut host = None;
    let mut domain = None;
    let mut o = 240;
    while o < p.len() {
        let code = p[o];
        if code == 255 {
            break;
        }
        if code == 0 {
            o += 1;
            continue;
        }
        let Some(&len) = p.get(o + 1) else {
            malformed(sinks, Anomaly::DhcpMalformed);
            break;
        };
        let len = len as usize;
        let Some(v) = p.get(o + 2..o + 2 + len) else {
            malformed(sinks, Anomaly::DhcpMalformed);
            break;
        };
        match (code, len) {
            (53, 1) => r.msg_type = Some(v[0]),
            (50, 4) => r.requested_addr = Some([v[0], v[1], v[2], v[3]]),
            (54, 4) => r.server_id = Some([v[0], v[1], v[2], v[3]]),
            (51, 4) => r.lease_time = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            (12, _) => host = Some(String::from_utf8_lossy(v).into_owned()),
            (15, _) => domain = Some(String::from_utf8_lossy(v).into_owned()),
            _ => {}
        }
        o += 2 + len;
    }
    if matches!(r.msg_type, Some(2) | Some(5)) {
        r.assigned_addr = yiaddr;
    }
    r.host_name = host.as_deref();
    r.domain = domain.as_deref();
    sinks.dhcp(&ctx.conn_id(ctx.ts), &r);
    true
}

pub fn msg_type_name(t: u8) -> &'static str {
    match t {
        1 => "DISCOVER",
        2 => "OFFER",
        3 => "REQUEST",
        4 => "DECLINE",
        5 => "ACK",
        6 => "NAK",
        7 => "RELEASE",
        8 => "INFORM",
        9 => "FORCERENEW",
        10 => "LEASEQUERY",
        11 => "LEASEUNASSIGNED",
        12 => "LEASEUNKNOWN",
        13 => "LEASEACTIVE",
        _ => "UNKNOWN",
    }
}
