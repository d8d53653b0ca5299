//! Records into ABI batches: fixed-layout records, then a string area.
//! One buffer per record kind per runner, allocated once.

use tapstream_plugin_sdk::abi::{
    self, BATCH_RECORDS, BUFFER_BYTES, FieldType, Kind, MAX_STR, dns, flow, http, put_addr, put_str, put_u8, put_u16,
    put_u32, put_u64, tls, window,
};

use crate::detect::{ConvKey, ConvStat};
use crate::records::{ConnId, DnsRecord, FlowRecord, HttpRecord, RecordKind, TlsRecord};

/// One kind's batch being filled.
pub struct BatchBuf {
    pub kind: Kind,
    pub records: Vec<u8>,
    pub strings: Vec<u8>,
    pub count: usize,
}

/// The largest string area one record may add (its string fields at
/// [`MAX_STR`] each).
fn max_strings(kind: Kind) -> usize {
    let fields = match kind {
        Kind::Flow => flow::FIELDS,
        Kind::Dns => dns::FIELDS,
        Kind::Tls => tls::FIELDS,
        Kind::Http => http::FIELDS,
        Kind::Window => window::FIELDS,
    };
    fields.iter().filter(|f| f.2 == FieldType::Str).count() * MAX_STR
}

impl BatchBuf {
    pub fn new(kind: Kind) -> BatchBuf {
        BatchBuf {
            kind,
            records: Vec::with_capacity(BATCH_RECORDS * kind.stride()),
            strings: Vec::with_capacity(BUFFER_BYTES / 2),
            count: 0,
        }
    }

    /// A placeholder holding no memory (while the real buffer is lent out).
    pub(crate) fn unallocated(kind: Kind) -> BatchBuf {
        BatchBuf { kind, records: Vec::new(), strings: Vec::new(), count: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn bytes(&self) -> usize {
        self.records.len() + self.strings.len()
    }

    /// Another record could overflow the batch: send it first.
    pub fn full(&self) -> bool {
        self.count >= BATCH_RECORDS || self.bytes() + self.kind.stride() + max_strings(self.kind) > BUFFER_BYTES
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.strings.clear();
        self.count = 0;
    }

    /// Start a record: zeroed, `stride` bytes.
    fn begin(&mut self) -> usize {
        let at = self.records.len();
        self.records.resize(at + self.kind.stride(), 0);
        self.count += 1;
        at
    }

    fn rec(&mut self, at: usize) -> &mut [u8] {
        let end = at + self.kind.stride();
        &mut self.records[at..end]
    }

    fn string(&mut self, at: usize, f: (usize, FieldType), s: &str) {
        let mut n = s.len().min(MAX_STR);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(&s.as_bytes()[..n]);
        put_str(self.rec(at), f, off, n as u32);
    }

    /// Several strings joined with `,` into one field.
    fn joined<'s>(&mut self, at: usize, f: (usize, FieldType), parts: impl Iterator<Item = &'s str>) {
        let off = self.strings.len();
        for (i, p) in parts.enumerate() {
            if i > 0 {
                self.strings.push(b',');
            }
            self.strings.extend_from_slice(p.as_bytes());
            if self.strings.len() - off >= MAX_STR {
                break;
            }
        }
        // Cut at MAX_STR on a character boundary.
        let mut end = self.strings.len().min(off + MAX_STR);
        while end > off && std::str::from_utf8(&self.strings[off..end]).is_err() {
            end -= 1;
        }
        self.strings.truncate(end);
        put_str(self.rec(at), f, off as u32, (end - off) as u32);
    }

    fn conn(&mut self, at: usize, c: &ConnId) {
        // The five connection fields sit at the same offsets in every kind.
        let r = self.rec(at);
        put_u64(r, flow::TS_NS, c.ts);
        put_u64(r, flow::UID, c.uid);
        put_addr(r, flow::ORIG_H, &c.orig_h);
        put_addr(r, flow::RESP_H, &c.resp_h);
        put_u16(r, flow::ORIG_P, c.orig_p);
        put_u16(r, flow::RESP_P, c.resp_p);
        put_u8(r, flow::PROTO, c.ip_proto);
        put_u8(r, flow::V6, c.v6 as u8);
    }

    pub fn flow(&mut self, f: &FlowRecord) {
        let at = self.begin();
        let c = ConnId {
            ts: f.ts,
            uid: f.uid,
            v6: f.v6,
            orig_h: f.orig_h,
            orig_p: f.orig_p,
            resp_h: f.resp_h,
            resp_p: f.resp_p,
            ip_proto: f.ip_proto,
        };
        self.conn(at, &c);
        let r = self.rec(at);
        put_u16(r, flow::IFACE, f.iface);
        put_u16(r, flow::VLAN, f.vlan);
        put_u8(
            r,
            flow::KIND,
            match f.kind {
                RecordKind::Final => 0,
                RecordKind::Interim => 1,
                RecordKind::Evicted => 2,
            },
        );
        put_u8(r, flow::ORIG_FLAGS, f.orig_flags);
        put_u8(r, flow::RESP_FLAGS, f.resp_flags);
        put_u64(r, flow::FIRST_TS, f.first_ts);
        put_u64(r, flow::LAST_TS, f.last_ts);
        put_u64(r, flow::ORIG_BYTES, f.orig_bytes);
        put_u64(r, flow::RESP_BYTES, f.resp_bytes);
        put_u64(r, flow::ORIG_PKTS, f.orig_pkts);
        put_u64(r, flow::RESP_PKTS, f.resp_pkts);
        self.string(at, flow::HISTORY, f.history);
        self.string(at, flow::STATE, f.conn_state);
        self.string(at, flow::SERVICE, f.service.name().unwrap_or(""));
    }

    pub fn dns(&mut self, c: &ConnId, d: &DnsRecord) {
        let at = self.begin();
        self.conn(at, c);
        let r = self.rec(at);
        put_u16(r, dns::QTYPE, d.qtype.unwrap_or(0));
        put_u16(r, dns::QCLASS, d.qclass.unwrap_or(0));
        put_u8(r, dns::RCODE, d.rcode.unwrap_or(255));
        use abi::dns_flags as fl;
        let flags = (d.aa as u8 * fl::AA)
            | (d.tc as u8 * fl::TC)
            | (d.rd as u8 * fl::RD)
            | (d.ra as u8 * fl::RA)
            | (d.rejected as u8 * fl::REJECTED)
            | (d.rtt_ns.is_some() as u8 * fl::HAS_RTT);
        put_u8(r, dns::FLAGS, flags);
        put_u16(r, dns::TRANS_ID, d.trans_id);
        put_u16(r, dns::ANSWER_COUNT, d.answers.len().min(u16::MAX as usize) as u16);
        put_u64(r, dns::RTT_NS, d.rtt_ns.unwrap_or(0));
        self.string(at, dns::QUERY, d.query.unwrap_or(""));
        self.joined(at, dns::ANSWERS, d.answers.iter().map(String::as_str));
    }

    pub fn tls(&mut self, c: &ConnId, t: &TlsRecord) {
        let at = self.begin();
        self.conn(at, c);
        let r = self.rec(at);
        put_u16(r, tls::VERSION, t.version.unwrap_or(0));
        put_u16(r, tls::CLIENT_VERSION, t.client_version.unwrap_or(0));
        put_u16(r, tls::CIPHER, t.cipher.unwrap_or(0));
        put_u8(r, tls::ESTABLISHED, t.established as u8);
        self.string(at, tls::SERVER_NAME, t.server_name.unwrap_or(""));
        self.string(at, tls::JA3, t.ja3.unwrap_or(""));
        self.string(at, tls::JA4, t.ja4.unwrap_or(""));
        self.joined(at, tls::ALPN, t.alpn.iter().map(String::as_str));
    }

    pub fn http(&mut self, c: &ConnId, h: &HttpRecord) {
        let at = self.begin();
        self.conn(at, c);
        let r = self.rec(at);
        put_u16(r, http::STATUS, h.status_code.unwrap_or(0));
        put_u32(r, http::TRANS_DEPTH, h.trans_depth);
        put_u64(r, http::REQUEST_BODY_LEN, h.request_body_len);
        put_u64(r, http::RESPONSE_BODY_LEN, h.response_body_len);
        self.string(at, http::METHOD, h.method.unwrap_or(""));
        self.string(at, http::HOST, h.host.unwrap_or(""));
        self.string(at, http::URI, h.uri.unwrap_or(""));
        self.string(at, http::USER_AGENT, h.user_agent.unwrap_or(""));
        self.string(at, http::REFERRER, h.referrer.unwrap_or(""));
        self.string(at, http::STATUS_MSG, h.status_msg.unwrap_or(""));
    }

    pub fn window(&mut self, sec_ns: u64, k: &ConvKey, s: &ConvStat) {
        let at = self.begin();
        let r = self.rec(at);
        put_u64(r, window::SEC_NS, sec_ns);
        put_addr(r, window::SRC, &k.src);
        put_addr(r, window::DST, &k.dst);
        put_u8(r, window::V6, k.v6 as u8);
        put_u8(r, window::PROTO, k.proto);
        put_u16(r, window::DPORT, k.dport);
        put_u32(r, window::FLOWS, s.flows);
        put_u64(r, window::PKTS, s.pkts);
        put_u64(r, window::BYTES, s.bytes);
        put_u64(r, window::RPKTS, s.rpkts);
        put_u64(r, window::RBYTES, s.rbytes);
        put_u32(r, window::SYN, s.syn);
        put_u32(r, window::ANSWERED, s.answered);
        put_u32(r, window::REJECTED, s.rejected);
        put_u32(r, window::FAILED, s.failed);
        put_u64(r, window::SAMPLE, s.sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapstream_plugin_sdk::Batch;

    #[test]
    fn a_dns_record_reads_back_through_the_sdk_views() {
        let mut b = BatchBuf::new(Kind::Dns);
        let c = ConnId {
            ts: 7,
            uid: 9,
            v6: false,
            orig_h: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            orig_p: 5353,
            resp_h: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            resp_p: 53,
            ip_proto: 17,
        };
        let answers = vec!["1.2.3.4".to_string(), "é".repeat(700)];
        let d = DnsRecord {
            proto: "udp",
            trans_id: 0x1234,
            rtt_ns: Some(5),
            query: Some("example.com"),
            qclass: Some(1),
            qtype: Some(28),
            rcode: Some(3),
            aa: false,
            tc: false,
            rd: true,
            ra: true,
            z: 0,
            answers: &answers,
            ttls: &[],
            rejected: false,
        };
        b.dns(&c, &d);
        b.dns(&c, &DnsRecord { query: None, rcode: None, ..d.clone() });
        let mut bytes = b.records.clone();
        bytes.extend_from_slice(&b.strings);
        let batch = Batch::new(Kind::Dns, &bytes, b.count).unwrap();
        let v: Vec<_> = batch.dns().collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].query(), "example.com");
        assert_eq!(v[0].qtype(), 28);
        assert_eq!(v[0].rcode(), 3);
        assert_eq!(v[0].resp_p(), 53);
        assert_eq!(v[0].flags(), abi::dns_flags::RD | abi::dns_flags::RA | abi::dns_flags::HAS_RTT);
        assert!(v[0].answers().starts_with("1.2.3.4,éé"));
        assert!(v[0].answers().len() <= MAX_STR, "cut at MAX_STR on a character boundary");
        assert_eq!(v[1].query(), "");
        assert_eq!(v[1].rcode(), 255);
        assert_eq!(v[1].uid(), 9);
    }
}
