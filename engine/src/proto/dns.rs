//! DNS over UDP and TCP: one record per request/response pair, matched by
//! transaction id within the flow.

use std::fmt::Write;

use super::{ProtoCtx, Reassembly, conn_id, malformed};
use crate::decode::{Anomaly, PROTO_TCP};
use crate::flow::FlowKey;
use crate::records::{DnsRecord, Sinks};

/// Most compression pointers followed in one name.
pub const MAX_POINTER_CHAIN: usize = 20;
/// Most answers kept per response.
const MAX_ANSWERS: usize = 64;
const TCP_LIMIT: usize = 65_536 + 2;

/// Per-flow DNS state (TCP needs reassembly of length-prefixed messages).
#[derive(Clone, Debug, Default)]
pub struct DnsFlow {
    tcp: [Option<Box<Reassembly>>; 2],
    pub messages: u32,
    /// The first message came from the originator but was a response: the
    /// flow's roles are reversed (the tracker flips them, as Zeek does).
    pub flip: bool,
}

/// A query waiting for its response.
#[derive(Clone, Debug, Default)]
struct Pending {
    uid: u64,
    trans_id: u16,
    ts: u64,
    key: FlowKey,
    orig_is_lo: bool,
    tcp: bool,
    query: String,
    qclass: u16,
    qtype: u16,
    rd: bool,
    live: bool,
}

/// Queries awaiting responses, shared by a worker's flows. Bounded: when
/// full, the oldest query is written out unanswered.
pub struct DnsPending {
    slots: Vec<Pending>,
    next: usize,
    answers: Vec<String>,
    ttls: Vec<u32>,
    name: String,
}

impl DnsPending {
    pub fn new(n: usize) -> DnsPending {
        DnsPending {
            slots: vec![Pending::default(); n.max(1)],
            next: 0,
            answers: Vec::with_capacity(MAX_ANSWERS),
            ttls: Vec::with_capacity(MAX_ANSWERS),
            name: String::with_capacity(256),
        }
    }

    /// The pending query a response answers: same flow and transaction id,
    /// and the same name when the response names one (multicast DNS uses id 0
    /// for everything, so the id alone would pair unrelated messages).
    fn take(&mut self, uid: u64, trans_id: u16, name: Option<&str>) -> Option<Pending> {
        // Most recent first.
        let n = self.slots.len();
        for i in 0..n {
            let j = (self.next + n - 1 - i) % n;
            let s = &mut self.slots[j];
            if s.live && s.uid == uid && s.trans_id == trans_id && name.is_none_or(|n| n.eq_ignore_ascii_case(&s.query))
            {
                s.live = false;
                return Some(std::mem::take(s));
            }
        }
        None
    }

    fn put(&mut self, p: Pending, sinks: &mut Sinks) {
        let n = self.slots.len();
        let slot = self.next;
        self.next = (self.next + 1) % n;
        if self.slots[slot].live {
            let old = std::mem::take(&mut self.slots[slot]);
            emit_unanswered(&old, sinks);
        }
        self.slots[slot] = p;
    }

    /// Write out every query of flow `uid` still waiting.
    pub fn finish_flow(&mut self, uid: u64, _key: &FlowKey, _orig_is_lo: bool, sinks: &mut Sinks) {
        for i in 0..self.slots.len() {
            if self.slots[i].live && self.slots[i].uid == uid {
                let p = std::mem::take(&mut self.slots[i]);
                emit_unanswered(&p, sinks);
            }
        }
    }
}

fn emit_unanswered(p: &Pending, sinks: &mut Sinks) {
    let c = conn_id(p.ts, p.uid, &p.key, p.orig_is_lo);
    let r = DnsRecord {
        proto: if p.tcp { "tcp" } else { "udp" },
        trans_id: p.trans_id,
        query: Some(&p.query),
        qclass: Some(p.qclass),
        qtype: Some(p.qtype),
        rd: p.rd,
        ..DnsRecord::default()
    };
    sinks.dns(&c, &r);
}

/// A quick plausibility check for classifying unknown ports.
pub fn looks_like(p: &[u8]) -> bool {
    p.len() >= 12 && u16::from_be_bytes([p[4], p[5]]) == 1 && p[2] & 0x78 == 0
}

/// Feed one payload. Returns true if it held a DNS message.
pub fn analyze(pend: &mut DnsPending, st: &mut DnsFlow, ctx: &ProtoCtx, payload: &[u8], sinks: &mut Sinks) -> bool {
    if ctx.layer.proto != PROTO_TCP {
        return message(pend, st, ctx, payload, false, sinks);
    }
    let dir = ctx.is_orig as usize;
    let r = st.tcp[dir].get_or_insert_with(Box::default);
    if !r.push(ctx.layer.seq, payload, TCP_LIMIT) {
        // gap: resynchronise at this segment
        r.buf.clear();
        r.next_seq = None;
        r.push(ctx.layer.seq, payload, TCP_LIMIT);
    }
    let mut any = false;
    while let Some(r) = st.tcp[dir].as_mut() {
        if r.buf.len() < 2 {
            break;
        }
        let len = u16::from_be_bytes([r.buf[0], r.buf[1]]) as usize;
        if r.buf.len() < 2 + len {
            break;
        }
        let msg: Vec<u8> = r.buf.drain(..2 + len).skip(2).collect();
        any |= message(pend, st, ctx, &msg, true, sinks);
    }
    any
}

struct Header {
    id: u16,
    qr: bool,
    aa: bool,
    tc: bool,
    rd: bool,
    ra: bool,
    z: u8,
    rcode: u8,
    qd: u16,
    an: u16,
}

fn message(pend: &mut DnsPending, st: &mut DnsFlow, ctx: &ProtoCtx, m: &[u8], tcp: bool, sinks: &mut Sinks) -> bool {
    if m.len() < 12 {
        malformed(sinks, Anomaly::DnsMalformed);
        return false;
    }
    let h = Header {
        id: u16::from_be_bytes([m[0], m[1]]),
        qr: m[2] & 0x80 != 0,
        aa: m[2] & 0x04 != 0,
        tc: m[2] & 0x02 != 0,
        rd: m[2] & 0x01 != 0,
        ra: m[3] & 0x80 != 0,
        z: (m[3] >> 4) & 0x7,
        rcode: m[3] & 0x0f,
        qd: u16::from_be_bytes([m[4], m[5]]),
        an: u16::from_be_bytes([m[6], m[7]]),
    };
    if st.messages == 0 && h.qr && ctx.is_orig && !is_group_addr(ctx.layer.v6, &ctx.layer.dst) {
        st.flip = true;
    }
    st.messages += 1;
    let orig_is_lo = ctx.orig_is_lo != st.flip;
    let mut p = 12;
    let mut qname_ok = false;
    let (mut qtype, mut qclass) = (0u16, 0u16);
    pend.name.clear();
    if h.qd > 0 {
        match read_name(m, p, &mut pend.name) {
            Ok(np) if np + 4 <= m.len() => {
                normalize_query(&mut pend.name, ctx.key.lo_port == 137 || ctx.key.hi_port == 137);
                qtype = u16::from_be_bytes([m[np], m[np + 1]]);
                qclass = u16::from_be_bytes([m[np + 2], m[np + 3]]);
                p = np + 4;
                qname_ok = true;
            }
            Ok(_) | Err(NameError::Truncated) => {
                malformed(sinks, Anomaly::DnsMalformed);
                return false;
            }
            Err(NameError::Loop) => {
                malformed(sinks, Anomaly::DnsCompressionLoop);
                return false;
            }
        }
        // skip further questions
        for _ in 1..h.qd {
            let mut scratch = String::new();
            match read_name(m, p, &mut scratch) {
                Ok(np) if np + 4 <= m.len() => p = np + 4,
                _ => break,
            }
        }
    }
    if !h.qr {
        if qname_ok {
            // Detection counts a query when it is asked (not when its record
            // is written, which for an unanswered one can be much later).
            let c = conn_id(ctx.ts, ctx.uid, &ctx.key, orig_is_lo);
            sinks.names.dns_query(&pend.name, c.orig_h, c.v6, c.resp_h, c.uid);
        }
        let q = Pending {
            uid: ctx.uid,
            trans_id: h.id,
            ts: ctx.ts,
            key: ctx.key,
            orig_is_lo,
            tcp,
            query: if qname_ok { pend.name.clone() } else { String::new() },
            qclass,
            qtype,
            rd: h.rd,
            live: true,
        };
        pend.put(q, sinks);
        return true;
    }
    // response: parse answers
    let query = pend.name.clone();
    pend.answers.clear();
    pend.ttls.clear();
    let mut name = String::new();
    let mut first_answer: Option<String> = None;
    for _ in 0..h.an {
        if pend.answers.len() >= MAX_ANSWERS {
            break;
        }
        name.clear();
        let Ok(np) = read_name(m, p, &mut name) else {
            malformed(sinks, Anomaly::DnsMalformed);
            break;
        };
        if np + 10 > m.len() {
            malformed(sinks, Anomaly::DnsMalformed);
            break;
        }
        if first_answer.is_none() {
            let mut n = name.clone();
            n.make_ascii_lowercase();
            first_answer = Some(n);
        }
        let rtype = u16::from_be_bytes([m[np], m[np + 1]]);
        let ttl = u32::from_be_bytes([m[np + 4], m[np + 5], m[np + 6], m[np + 7]]);
        let rdlen = u16::from_be_bytes([m[np + 8], m[np + 9]]) as usize;
        let rd = np + 10;
        if rd + rdlen > m.len() {
            malformed(sinks, Anomaly::DnsMalformed);
            break;
        }
        let data = &m[rd..rd + rdlen];
        let mut ans = String::new();
        match rtype {
            1 if rdlen == 4 => {
                let _ = write!(ans, "{}", std::net::Ipv4Addr::new(data[0], data[1], data[2], data[3]));
            }
            28 if rdlen == 16 => {
                let a: [u8; 16] = data.try_into().unwrap_or_default();
                let _ = write!(ans, "{}", std::net::Ipv6Addr::from(a));
            }
            2 | 5 | 12 => {
                if read_name(m, rd, &mut ans).is_err() {
                    ans.clear();
                }
            }
            15 if rdlen > 2 => {
                if read_name(m, rd + 2, &mut ans).is_err() {
                    ans.clear();
                }
            }
            // SRV: priority, weight, port, target
            33 if rdlen > 6 => {
                if read_name(m, rd + 6, &mut ans).is_err() {
                    ans.clear();
                }
            }
            // SOA: the primary name server
            6 => {
                if read_name(m, rd, &mut ans).is_err() {
                    ans.clear();
                }
            }
            // SSHFP: algorithm, fingerprint type, fingerprint (as Zeek: "SSHFP: <hex>")
            44 if rdlen > 2 => {
                ans.push_str("SSHFP: ");
                for b in &data[2..] {
                    let _ = write!(ans, "{b:02x}");
                }
            }
            // RRSIG: type covered … signer name (as Zeek: "RRSIG <type> <signer>")
            46 if rdlen > 18 => {
                let covered = u16::from_be_bytes([data[0], data[1]]);
                let mut signer = String::new();
                let _ = read_name(m, rd + 18, &mut signer);
                let _ = write!(ans, "RRSIG {covered} {signer}");
            }
            16 => {
                // TXT: each string as "TXT <len> <text>"
                let mut q = 0;
                let mut first = true;
                while q < data.len() {
                    let l = data[q] as usize;
                    let s = &data[q + 1..(q + 1 + l).min(data.len())];
                    if !first {
                        ans.push(' ');
                    }
                    first = false;
                    let _ = write!(ans, "TXT {} ", s.len());
                    escape_into(&mut ans, s);
                    q += 1 + l;
                }
            }
            _ => {
                let _ = write!(ans, "<{}>", type_name(rtype));
            }
        }
        pend.answers.push(ans);
        pend.ttls.push(ttl);
        p = rd + rdlen;
    }
    // A response without a question (multicast DNS) is named by its first answer.
    let name_for_match = if qname_ok { Some(query.as_str()) } else { first_answer.as_deref() };
    let matched = pend.take(ctx.uid, h.id, name_for_match);
    let (ts, rtt, query) = match &matched {
        Some(q) => (q.ts, Some(ctx.ts.saturating_sub(q.ts)), q.query.clone()),
        None => (ctx.ts, None, name_for_match.unwrap_or_default().to_string()),
    };
    let c = conn_id(ts, ctx.uid, &ctx.key, orig_is_lo);
    if !query.is_empty() {
        sinks.names.dns_answer(&query, c.orig_h, c.v6, c.resp_h, c.uid, h.rcode == 3, matched.is_none());
    }
    let r = DnsRecord {
        proto: if tcp { "tcp" } else { "udp" },
        trans_id: h.id,
        rtt_ns: rtt,
        query: (qname_ok || matched.is_some() || first_answer.is_some()).then_some(query.as_str()),
        qclass: if qname_ok { Some(qclass) } else { matched.as_ref().map(|q| q.qclass) },
        qtype: if qname_ok { Some(qtype) } else { matched.as_ref().map(|q| q.qtype) },
        rcode: Some(h.rcode),
        aa: h.aa,
        tc: h.tc,
        rd: h.rd,
        ra: h.ra,
        z: h.z,
        answers: &pend.answers,
        ttls: &pend.ttls,
        rejected: h.rcode == 5,
    };
    sinks.dns(&c, &r);
    true
}

/// Multicast or broadcast: a response sent to a group answers nobody in
/// particular, so it says nothing about who originated the flow.
fn is_group_addr(v6: bool, a: &[u8; 16]) -> bool {
    if v6 { a[0] == 0xff } else { (a[0] & 0xf0) == 0xe0 || a[..4] == [255; 4] }
}

#[derive(Debug, PartialEq, Eq)]
pub enum NameError {
    Truncated,
    Loop,
}

/// Read a possibly compressed name at `off` into `out` (dotted, escaped).
/// Returns the offset just past the name in the original position.
pub fn read_name(m: &[u8], off: usize, out: &mut String) -> Result<usize, NameError> {
    let mut p = off;
    let mut end = None;
    let mut jumps = 0;
    let mut total = 0;
    loop {
        let &len = m.get(p).ok_or(NameError::Truncated)?;
        match len >> 6 {
            0 => {
                if len == 0 {
                    return Ok(end.unwrap_or(p + 1));
                }
                let l = len as usize;
                let label = m.get(p + 1..p + 1 + l).ok_or(NameError::Truncated)?;
                total += l + 1;
                if total > 255 {
                    return Err(NameError::Truncated);
                }
                if !out.is_empty() {
                    out.push('.');
                }
                escape_into(out, label);
                p += 1 + l;
            }
            3 => {
                let &lo = m.get(p + 1).ok_or(NameError::Truncated)?;
                let target = (((len & 0x3f) as usize) << 8) | lo as usize;
                if end.is_none() {
                    end = Some(p + 2);
                }
                jumps += 1;
                if jumps > MAX_POINTER_CHAIN || target >= m.len() {
                    return Err(NameError::Loop);
                }
                p = target;
            }
            _ => return Err(NameError::Truncated),
        }
    }
}

/// Query names are logged in lower case (as Zeek does); NetBIOS names are
/// decoded from their first-level encoding.
fn normalize_query(name: &mut String, netbios: bool) {
    if netbios && let Some(n) = decode_netbios(name) {
        *name = n;
        return;
    }
    name.make_ascii_lowercase();
}

/// RFC 1001 first-level decoding: 32 letters A–P → 16 bytes; the last byte
/// is the name type, trailing spaces are padding.
pub fn decode_netbios(s: &str) -> Option<String> {
    let label = s.split('.').next()?;
    let b = label.as_bytes();
    if b.len() != 32 || !b.iter().all(|c| (b'A'..=b'P').contains(c)) {
        return None;
    }
    let bytes: Vec<u8> = b.chunks_exact(2).map(|p| ((p[0] - b'A') << 4) | (p[1] - b'A')).collect();
    let name = &bytes[..15];
    let end = name.iter().rposition(|&c| c != b' ' && c != 0).map_or(0, |i| i + 1);
    let mut out = String::new();
    escape_into(&mut out, &name[..end]);
    Some(out)
}

fn escape_into(out: &mut String, s: &[u8]) {
    for &b in s {
        if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

pub fn type_name(t: u16) -> &'static str {
    match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        41 => "OPT",
        43 => "DS",
        44 => "SSHFP",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        50 => "NSEC3",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        252 => "AXFR",
        255 => "*",
        257 => "CAA",
        _ => "unknown",
    }
}

pub fn class_name(c: u16) -> &'static str {
    match c & 0x7fff {
        1 => "C_INTERNET",
        3 => "C_CHAOS",
        4 => "C_HESIOD",
        254 => "C_NONE",
        255 => "C_ANY",
        _ => "unknown",
    }
}

pub fn rcode_name(r: u8) -> &'static str {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_loop_is_an_error_not_a_hang() {
        let mut m = vec![0u8; 12];
        m.extend([0xc0, 12]); // points at itself
        let mut s = String::new();
        assert_eq!(read_name(&m, 12, &mut s), Err(NameError::Loop));
    }

    #[test]
    fn plain_and_compressed_names() {
        let mut m = vec![0u8; 12];
        m.extend(b"\x03www\x07example\x03com\x00");
        m.extend([0xc0, 16]); // -> "example.com"
        let mut s = String::new();
        assert_eq!(read_name(&m, 12, &mut s), Ok(29));
        assert_eq!(s, "www.example.com");
        s.clear();
        assert_eq!(read_name(&m, 29, &mut s), Ok(31));
        assert_eq!(s, "example.com");
    }
}
