//! Records leave the engine as Arrow record batches, one stream per table.
//!
//! Each worker owns a [`Sinks`]: column builders for every table. A record is
//! appended straight into the builders (strings are copied only here, when a
//! record is emitted); a builder that reaches the batch size becomes a
//! [`RecordBatch`] in `Sinks::ready`, which the worker hands downstream.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, ListBuilder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
    UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::decode::{AnomalyCounters, addr};
use crate::flow::community_id::community_id_v1;
use crate::flow::{FlowKey, Service, uid_string};

/// The tables the engine produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Flows,
    Dns,
    Tls,
    Http,
    Dhcp,
    Stats,
    Alerts,
}

impl Table {
    pub const COUNT: usize = 7;
    pub const ALL: [Table; Table::COUNT] =
        [Table::Flows, Table::Dns, Table::Tls, Table::Http, Table::Dhcp, Table::Stats, Table::Alerts];
    pub fn name(self) -> &'static str {
        match self {
            Table::Flows => "flows",
            Table::Dns => "dns",
            Table::Tls => "tls",
            Table::Http => "http",
            Table::Dhcp => "dhcp",
            Table::Stats => "stats",
            Table::Alerts => "alerts",
        }
    }
    pub fn from_name(s: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == s)
    }
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Flows => flows_schema(),
            Table::Dns => dns_schema(),
            Table::Tls => tls_schema(),
            Table::Http => http_schema(),
            Table::Dhcp => dhcp_schema(),
            Table::Stats => crate::stats::stats_schema(),
            Table::Alerts => crate::alert::alerts_schema(),
        }
    }
}

/// Why a flow record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// The flow ended (idle timeout, close, end of input).
    Final,
    /// Active timeout: the flow goes on; counters cover this period only.
    Interim,
    /// The flow table was full and this was the oldest flow.
    Evicted,
}

impl RecordKind {
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Final => "final",
            RecordKind::Interim => "interim",
            RecordKind::Evicted => "evicted",
        }
    }
}

/// A flow record as the tracker emits it (no heap data).
#[derive(Clone, Copy, Debug)]
pub struct FlowRecord<'a> {
    pub kind: RecordKind,
    pub ts: u64,
    pub first_ts: u64,
    pub last_ts: u64,
    pub uid: u64,
    pub key: FlowKey,
    pub orig_h: [u8; 16],
    pub orig_p: u16,
    pub resp_h: [u8; 16],
    pub resp_p: u16,
    pub v6: bool,
    pub ip_proto: u8,
    pub service: Service,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
    pub orig_pkts: u64,
    pub resp_pkts: u64,
    pub orig_ip_bytes: u64,
    pub resp_ip_bytes: u64,
    pub conn_state: &'static str,
    pub history: &'a str,
    pub missed_bytes: u64,
    pub vlan: u16,
    pub iface: u16,
    pub orig_flags: u8,
    pub resp_flags: u8,
    pub parents: [Option<FlowKey>; 2],
}

pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn f(name: &str, dt: DataType, nullable: bool) -> Field {
    Field::new(name, dt, nullable)
}

pub(crate) fn list_of(dt: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", dt, true)))
}

pub fn flows_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            f("ts", ts_type(), false),
            f("last_ts", ts_type(), false),
            f("uid", DataType::Utf8, true),
            f("community_id", DataType::Utf8, true),
            f("orig_h", DataType::Utf8, false),
            f("orig_p", DataType::UInt16, false),
            f("resp_h", DataType::Utf8, false),
            f("resp_p", DataType::UInt16, false),
            f("proto", DataType::Utf8, false),
            f("ip_proto", DataType::UInt8, false),
            f("service", DataType::Utf8, true),
            f("duration", DataType::Float64, true),
            f("orig_bytes", DataType::UInt64, false),
            f("resp_bytes", DataType::UInt64, false),
            f("conn_state", DataType::Utf8, false),
            f("local_orig", DataType::Boolean, false),
            f("local_resp", DataType::Boolean, false),
            f("missed_bytes", DataType::UInt64, false),
            f("history", DataType::Utf8, false),
            f("orig_pkts", DataType::UInt64, false),
            f("orig_ip_bytes", DataType::UInt64, false),
            f("resp_pkts", DataType::UInt64, false),
            f("resp_ip_bytes", DataType::UInt64, false),
            f("tunnel_parents", list_of(DataType::Utf8), true),
            f("vlan", DataType::UInt16, true),
            f("interface", DataType::UInt16, false),
            f("orig_tcp_flags", DataType::UInt8, true),
            f("resp_tcp_flags", DataType::UInt8, true),
            f("record_kind", DataType::Utf8, false),
            f("flow_start", ts_type(), true),
            f("orig_cc", DataType::Utf8, true),
            f("resp_cc", DataType::Utf8, true),
            f("orig_asn", DataType::UInt32, true),
            f("resp_asn", DataType::UInt32, true),
            f(crate::derived::SEED_COLUMN, DataType::UInt16, true),
        ]))
    })
    .clone()
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 | 58 => "icmp",
        _ => "unknown_transport",
    }
}

/// Private and special-purpose address space (Zeek's default local nets).
pub fn is_local(v6: bool, a: &[u8; 16]) -> bool {
    if v6 {
        (a[0] & 0xfe) == 0xfc
            || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
            || a == &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    } else {
        a[0] == 10
            || a[0] == 127
            || (a[0] == 172 && (a[1] & 0xf0) == 16)
            || (a[0] == 192 && a[1] == 168)
            || (a[0] == 100 && (a[1] & 0xc0) == 64)
            || (a[0] == 169 && a[1] == 254)
    }
}

/// The community ID of a canonical key.
pub fn key_community_id(seed: u16, k: &FlowKey) -> String {
    community_id_v1(seed, k.v6, &k.lo, &k.hi, k.proto, k.lo_port, k.hi_port)
}

/// Builders of the `flows` table.
pub struct FlowBuilder {
    ts: TimestampNanosecondBuilder,
    last_ts: TimestampNanosecondBuilder,
    uid: StringBuilder,
    cid: StringBuilder,
    orig_h: StringBuilder,
    orig_p: UInt16Builder,
    resp_h: StringBuilder,
    resp_p: UInt16Builder,
    proto: StringBuilder,
    ip_proto: UInt8Builder,
    service: StringBuilder,
    duration: Float64Builder,
    orig_bytes: UInt64Builder,
    resp_bytes: UInt64Builder,
    conn_state: StringBuilder,
    local_orig: BooleanBuilder,
    local_resp: BooleanBuilder,
    missed: UInt64Builder,
    history: StringBuilder,
    orig_pkts: UInt64Builder,
    orig_ip_bytes: UInt64Builder,
    resp_pkts: UInt64Builder,
    resp_ip_bytes: UInt64Builder,
    parents: ListBuilder<StringBuilder>,
    vlan: UInt16Builder,
    iface: UInt16Builder,
    orig_flags: UInt8Builder,
    resp_flags: UInt8Builder,
    kind: StringBuilder,
    flow_start: TimestampNanosecondBuilder,
    orig_cc: StringBuilder,
    resp_cc: StringBuilder,
    orig_asn: UInt32Builder,
    resp_asn: UInt32Builder,
    seed: UInt16Builder,
    rows: usize,
}

fn tsb() -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::new().with_timezone("UTC")
}

impl Default for FlowBuilder {
    fn default() -> Self {
        FlowBuilder {
            ts: tsb(),
            last_ts: tsb(),
            uid: StringBuilder::new(),
            cid: StringBuilder::new(),
            orig_h: StringBuilder::new(),
            orig_p: UInt16Builder::new(),
            resp_h: StringBuilder::new(),
            resp_p: UInt16Builder::new(),
            proto: StringBuilder::new(),
            ip_proto: UInt8Builder::new(),
            service: StringBuilder::new(),
            duration: Float64Builder::new(),
            orig_bytes: UInt64Builder::new(),
            resp_bytes: UInt64Builder::new(),
            conn_state: StringBuilder::new(),
            local_orig: BooleanBuilder::new(),
            local_resp: BooleanBuilder::new(),
            missed: UInt64Builder::new(),
            history: StringBuilder::new(),
            orig_pkts: UInt64Builder::new(),
            orig_ip_bytes: UInt64Builder::new(),
            resp_pkts: UInt64Builder::new(),
            resp_ip_bytes: UInt64Builder::new(),
            parents: ListBuilder::new(StringBuilder::new()),
            vlan: UInt16Builder::new(),
            iface: UInt16Builder::new(),
            orig_flags: UInt8Builder::new(),
            resp_flags: UInt8Builder::new(),
            kind: StringBuilder::new(),
            flow_start: tsb(),
            orig_cc: StringBuilder::new(),
            resp_cc: StringBuilder::new(),
            orig_asn: UInt32Builder::new(),
            resp_asn: UInt32Builder::new(),
            seed: UInt16Builder::new(),
            rows: 0,
        }
    }
}

/// Write an address as text into `buf` without allocating. IPv4 (most
/// records) is written digit by digit: `core::fmt` was a tenth of the
/// worker's time on a capture of short flows.
pub fn write_addr(buf: &mut String, v6: bool, a: &[u8; 16]) {
    use std::fmt::Write;
    buf.clear();
    if v6 {
        let _ = write!(buf, "{}", addr(v6, a));
        return;
    }
    let mut digits = itoa::Buffer::new();
    for (i, b) in a[..4].iter().enumerate() {
        if i > 0 {
            buf.push('.');
        }
        buf.push_str(digits.format(*b));
    }
}

impl FlowBuilder {
    pub fn append(&mut self, r: &FlowRecord, seed: u16, scratch: &mut String, geo: Option<&mut crate::geo::GeoLookup>) {
        self.ts.append_value(r.ts as i64);
        self.last_ts.append_value(r.last_ts as i64);
        // Derived on read (`derived`): the two hashes were half of a flows
        // file and do not compress.
        self.uid.append_null();
        self.cid.append_null();
        self.seed.append_value(seed);
        write_addr(scratch, r.v6, &r.orig_h);
        self.orig_h.append_value(&*scratch);
        self.orig_p.append_value(r.orig_p);
        write_addr(scratch, r.v6, &r.resp_h);
        self.resp_h.append_value(&*scratch);
        self.resp_p.append_value(r.resp_p);
        self.proto.append_value(proto_name(r.ip_proto));
        self.ip_proto.append_value(r.ip_proto);
        self.service.append_option(r.service.name());
        self.duration.append_null();
        self.orig_bytes.append_value(r.orig_bytes);
        self.resp_bytes.append_value(r.resp_bytes);
        self.conn_state.append_value(r.conn_state);
        self.local_orig.append_value(is_local(r.v6, &r.orig_h));
        self.local_resp.append_value(is_local(r.v6, &r.resp_h));
        self.missed.append_value(r.missed_bytes);
        self.history.append_value(r.history);
        self.orig_pkts.append_value(r.orig_pkts);
        self.orig_ip_bytes.append_value(r.orig_ip_bytes);
        self.resp_pkts.append_value(r.resp_pkts);
        self.resp_ip_bytes.append_value(r.resp_ip_bytes);
        if r.parents[0].is_some() {
            for p in r.parents.iter().flatten() {
                self.parents.values().append_value(key_community_id(seed, p));
            }
            self.parents.append(true);
        } else {
            self.parents.append(false);
        }
        self.vlan.append_option((r.vlan != 0).then_some(r.vlan));
        self.iface.append_value(r.iface);
        let tcp = r.ip_proto == 6;
        self.orig_flags.append_option(tcp.then_some(r.orig_flags));
        self.resp_flags.append_option(tcp.then_some(r.resp_flags));
        self.kind.append_value(r.kind.name());
        self.flow_start.append_option((r.first_ts != r.ts).then_some(r.first_ts as i64));
        let ((occ, oasn), (rcc, rasn)) = match geo {
            Some(g) => (g.get(&r.orig_h, r.v6), g.get(&r.resp_h, r.v6)),
            None => ((None, None), (None, None)),
        };
        for (b, c) in [(&mut self.orig_cc, occ), (&mut self.resp_cc, rcc)] {
            match c {
                Some(c) => b.append_value(std::str::from_utf8(&c).unwrap_or("")),
                None => b.append_null(),
            }
        }
        self.orig_asn.append_option(oasn);
        self.resp_asn.append_option(rasn);
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.last_ts.finish()),
            Arc::new(self.uid.finish()),
            Arc::new(self.cid.finish()),
            Arc::new(self.orig_h.finish()),
            Arc::new(self.orig_p.finish()),
            Arc::new(self.resp_h.finish()),
            Arc::new(self.resp_p.finish()),
            Arc::new(self.proto.finish()),
            Arc::new(self.ip_proto.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.orig_bytes.finish()),
            Arc::new(self.resp_bytes.finish()),
            Arc::new(self.conn_state.finish()),
            Arc::new(self.local_orig.finish()),
            Arc::new(self.local_resp.finish()),
            Arc::new(self.missed.finish()),
            Arc::new(self.history.finish()),
            Arc::new(self.orig_pkts.finish()),
            Arc::new(self.orig_ip_bytes.finish()),
            Arc::new(self.resp_pkts.finish()),
            Arc::new(self.resp_ip_bytes.finish()),
            Arc::new(self.parents.finish()),
            Arc::new(self.vlan.finish()),
            Arc::new(self.iface.finish()),
            Arc::new(self.orig_flags.finish()),
            Arc::new(self.resp_flags.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.flow_start.finish()),
            Arc::new(self.orig_cc.finish()),
            Arc::new(self.resp_cc.finish()),
            Arc::new(self.orig_asn.finish()),
            Arc::new(self.resp_asn.finish()),
            Arc::new(self.seed.finish()),
        ];
        RecordBatch::try_new(flows_schema(), cols).expect("flows batch matches its schema")
    }
}

/// The five-tuple columns every protocol record carries.
#[derive(Clone, Copy, Debug)]
pub struct ConnId {
    pub ts: u64,
    pub uid: u64,
    pub v6: bool,
    pub orig_h: [u8; 16],
    pub orig_p: u16,
    pub resp_h: [u8; 16],
    pub resp_p: u16,
    pub ip_proto: u8,
}

impl ConnId {
    pub fn orig_addr(&self) -> IpAddr {
        addr(self.v6, &self.orig_h)
    }
    pub fn resp_addr(&self) -> IpAddr {
        addr(self.v6, &self.resp_h)
    }
}

fn conn_fields() -> Vec<Field> {
    vec![
        f("ts", ts_type(), false),
        f("uid", DataType::Utf8, false),
        f("orig_h", DataType::Utf8, false),
        f("orig_p", DataType::UInt16, false),
        f("resp_h", DataType::Utf8, false),
        f("resp_p", DataType::UInt16, false),
    ]
}

/// Builders for the shared connection columns.
struct ConnCols {
    ts: TimestampNanosecondBuilder,
    uid: StringBuilder,
    orig_h: StringBuilder,
    orig_p: UInt16Builder,
    resp_h: StringBuilder,
    resp_p: UInt16Builder,
}

impl Default for ConnCols {
    fn default() -> Self {
        ConnCols {
            ts: tsb(),
            uid: StringBuilder::new(),
            orig_h: StringBuilder::new(),
            orig_p: UInt16Builder::new(),
            resp_h: StringBuilder::new(),
            resp_p: UInt16Builder::new(),
        }
    }
}

impl ConnCols {
    fn append(&mut self, c: &ConnId, scratch: &mut String) {
        self.ts.append_value(c.ts as i64);
        self.uid.append_value(uid_string(c.uid));
        write_addr(scratch, c.v6, &c.orig_h);
        self.orig_h.append_value(&*scratch);
        self.orig_p.append_value(c.orig_p);
        write_addr(scratch, c.v6, &c.resp_h);
        self.resp_h.append_value(&*scratch);
        self.resp_p.append_value(c.resp_p);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.uid.finish()),
            Arc::new(self.orig_h.finish()),
            Arc::new(self.orig_p.finish()),
            Arc::new(self.resp_h.finish()),
            Arc::new(self.resp_p.finish()),
        ]
    }
}

// ---------------------------------------------------------------- DNS

/// One DNS request/response pair (or an unanswered request, or a lone response).
#[derive(Clone, Debug, Default)]
pub struct DnsRecord<'a> {
    pub proto: &'static str,
    pub trans_id: u16,
    pub rtt_ns: Option<u64>,
    pub query: Option<&'a str>,
    pub qclass: Option<u16>,
    pub qtype: Option<u16>,
    pub rcode: Option<u8>,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    pub z: u8,
    pub answers: &'a [String],
    pub ttls: &'a [u32],
    pub rejected: bool,
}

pub fn dns_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut v = conn_fields();
        v.extend([
            f("proto", DataType::Utf8, false),
            f("trans_id", DataType::UInt16, false),
            f("rtt", DataType::Float64, true),
            f("query", DataType::Utf8, true),
            f("qclass", DataType::UInt16, true),
            f("qclass_name", DataType::Utf8, true),
            f("qtype", DataType::UInt16, true),
            f("qtype_name", DataType::Utf8, true),
            f("rcode", DataType::UInt8, true),
            f("rcode_name", DataType::Utf8, true),
            f("aa", DataType::Boolean, false),
            f("tc", DataType::Boolean, false),
            f("rd", DataType::Boolean, false),
            f("ra", DataType::Boolean, false),
            f("z", DataType::UInt8, false),
            f("answers", list_of(DataType::Utf8), true),
            f("ttls", list_of(DataType::UInt32), true),
            f("rejected", DataType::Boolean, false),
        ]);
        Arc::new(Schema::new(v))
    })
    .clone()
}

#[derive(Default)]
pub struct DnsBuilder {
    c: ConnCols,
    proto: StringBuilder,
    trans_id: UInt16Builder,
    rtt: Float64Builder,
    query: StringBuilder,
    qclass: UInt16Builder,
    qclass_name: StringBuilder,
    qtype: UInt16Builder,
    qtype_name: StringBuilder,
    rcode: UInt8Builder,
    rcode_name: StringBuilder,
    aa: BooleanBuilder,
    tc: BooleanBuilder,
    rd: BooleanBuilder,
    ra: BooleanBuilder,
    z: UInt8Builder,
    answers: ListBuilder<StringBuilder>,
    ttls: ListBuilder<UInt32Builder>,
    rejected: BooleanBuilder,
    rows: usize,
}

impl DnsBuilder {
    pub fn append(&mut self, c: &ConnId, r: &DnsRecord, scratch: &mut String) {
        use crate::proto::dns::{class_name, rcode_name, type_name};
        self.c.append(c, scratch);
        self.proto.append_value(r.proto);
        self.trans_id.append_value(r.trans_id);
        self.rtt.append_option(r.rtt_ns.map(|n| n as f64 / 1e9));
        self.query.append_option(r.query);
        self.qclass.append_option(r.qclass);
        self.qclass_name.append_option(r.qclass.map(class_name));
        self.qtype.append_option(r.qtype);
        self.qtype_name.append_option(r.qtype.map(type_name));
        self.rcode.append_option(r.rcode);
        self.rcode_name.append_option(r.rcode.map(rcode_name));
        self.aa.append_value(r.aa);
        self.tc.append_value(r.tc);
        self.rd.append_value(r.rd);
        self.ra.append_value(r.ra);
        self.z.append_value(r.z);
        if r.answers.is_empty() {
            self.answers.append(false);
            self.ttls.append(false);
        } else {
            for a in r.answers {
                self.answers.values().append_value(a);
            }
            self.answers.append(true);
            for t in r.ttls {
                self.ttls.values().append_value(*t);
            }
            self.ttls.append(true);
        }
        self.rejected.append_value(r.rejected);
        self.rows += 1;
    }
    pub fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let mut cols = self.c.finish();
        cols.extend([
            Arc::new(self.proto.finish()) as ArrayRef,
            Arc::new(self.trans_id.finish()),
            Arc::new(self.rtt.finish()),
            Arc::new(self.query.finish()),
            Arc::new(self.qclass.finish()),
            Arc::new(self.qclass_name.finish()),
            Arc::new(self.qtype.finish()),
            Arc::new(self.qtype_name.finish()),
            Arc::new(self.rcode.finish()),
            Arc::new(self.rcode_name.finish()),
            Arc::new(self.aa.finish()),
            Arc::new(self.tc.finish()),
            Arc::new(self.rd.finish()),
            Arc::new(self.ra.finish()),
            Arc::new(self.z.finish()),
            Arc::new(self.answers.finish()),
            Arc::new(self.ttls.finish()),
            Arc::new(self.rejected.finish()),
        ]);
        RecordBatch::try_new(dns_schema(), cols).expect("dns batch matches its schema")
    }
}

// ---------------------------------------------------------------- TLS

#[derive(Clone, Debug, Default)]
pub struct TlsRecord<'a> {
    pub client_version: Option<u16>,
    pub version: Option<u16>,
    pub cipher: Option<u16>,
    pub server_name: Option<&'a str>,
    pub alpn: &'a [String],
    pub cipher_suites: &'a [u16],
    pub ja3: Option<&'a str>,
    pub ja4: Option<&'a str>,
    pub established: bool,
}

pub fn tls_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut v = conn_fields();
        v.extend([
            f("version", DataType::Utf8, true),
            f("client_version", DataType::Utf8, true),
            f("cipher", DataType::Utf8, true),
            f("server_name", DataType::Utf8, true),
            f("alpn", list_of(DataType::Utf8), true),
            f("cipher_suites", list_of(DataType::UInt16), true),
            f("ja3", DataType::Utf8, true),
            f("ja4", DataType::Utf8, true),
            f("established", DataType::Boolean, false),
        ]);
        Arc::new(Schema::new(v))
    })
    .clone()
}

#[derive(Default)]
pub struct TlsBuilder {
    c: ConnCols,
    version: StringBuilder,
    client_version: StringBuilder,
    cipher: StringBuilder,
    server_name: StringBuilder,
    alpn: ListBuilder<StringBuilder>,
    suites: ListBuilder<UInt16Builder>,
    ja3: StringBuilder,
    ja4: StringBuilder,
    established: BooleanBuilder,
    rows: usize,
}

impl TlsBuilder {
    pub fn append(&mut self, c: &ConnId, r: &TlsRecord, scratch: &mut String) {
        use crate::proto::tls::{cipher_name, version_name};
        self.c.append(c, scratch);
        self.version.append_option(r.version.map(version_name));
        self.client_version.append_option(r.client_version.map(version_name));
        match r.cipher {
            Some(c) => match cipher_name(c) {
                Some(n) => self.cipher.append_value(n),
                None => self.cipher.append_value(format!("unknown-{c}")),
            },
            None => self.cipher.append_null(),
        }
        self.server_name.append_option(r.server_name);
        for a in r.alpn {
            self.alpn.values().append_value(a);
        }
        self.alpn.append(!r.alpn.is_empty());
        for s in r.cipher_suites {
            self.suites.values().append_value(*s);
        }
        self.suites.append(!r.cipher_suites.is_empty());
        self.ja3.append_option(r.ja3);
        self.ja4.append_option(r.ja4);
        self.established.append_value(r.established);
        self.rows += 1;
    }
    pub fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let mut cols = self.c.finish();
        cols.extend([
            Arc::new(self.version.finish()) as ArrayRef,
            Arc::new(self.client_version.finish()),
            Arc::new(self.cipher.finish()),
            Arc::new(self.server_name.finish()),
            Arc::new(self.alpn.finish()),
            Arc::new(self.suites.finish()),
            Arc::new(self.ja3.finish()),
            Arc::new(self.ja4.finish()),
            Arc::new(self.established.finish()),
        ]);
        RecordBatch::try_new(tls_schema(), cols).expect("tls batch matches its schema")
    }
}

// ---------------------------------------------------------------- HTTP

#[derive(Clone, Debug, Default)]
pub struct HttpRecord<'a> {
    pub trans_depth: u32,
    pub method: Option<&'a str>,
    pub host: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub referrer: Option<&'a str>,
    pub version: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_body_len: u64,
    pub response_body_len: u64,
    pub status_code: Option<u16>,
    pub status_msg: Option<&'a str>,
}

pub fn http_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut v = conn_fields();
        v.extend([
            f("trans_depth", DataType::UInt32, false),
            f("method", DataType::Utf8, true),
            f("host", DataType::Utf8, true),
            f("uri", DataType::Utf8, true),
            f("referrer", DataType::Utf8, true),
            f("version", DataType::Utf8, true),
            f("user_agent", DataType::Utf8, true),
            f("request_body_len", DataType::UInt64, false),
            f("response_body_len", DataType::UInt64, false),
            f("status_code", DataType::UInt16, true),
            f("status_msg", DataType::Utf8, true),
        ]);
        Arc::new(Schema::new(v))
    })
    .clone()
}

#[derive(Default)]
pub struct HttpBuilder {
    c: ConnCols,
    depth: UInt32Builder,
    method: StringBuilder,
    host: StringBuilder,
    uri: StringBuilder,
    referrer: StringBuilder,
    version: StringBuilder,
    ua: StringBuilder,
    req_len: UInt64Builder,
    resp_len: UInt64Builder,
    status: UInt16Builder,
    status_msg: StringBuilder,
    rows: usize,
}

impl HttpBuilder {
    pub fn append(&mut self, c: &ConnId, r: &HttpRecord, scratch: &mut String) {
        self.c.append(c, scratch);
        self.depth.append_value(r.trans_depth);
        self.method.append_option(r.method);
        self.host.append_option(r.host);
        self.uri.append_option(r.uri);
        self.referrer.append_option(r.referrer);
        self.version.append_option(r.version);
        self.ua.append_option(r.user_agent);
        self.req_len.append_value(r.request_body_len);
        self.resp_len.append_value(r.response_body_len);
        self.status.append_option(r.status_code);
        self.status_msg.append_option(r.status_msg);
        self.rows += 1;
    }
    pub fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let mut cols = self.c.finish();
        cols.extend([
            Arc::new(self.depth.finish()) as ArrayRef,
            Arc::new(self.method.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.uri.finish()),
            Arc::new(self.referrer.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.ua.finish()),
            Arc::new(self.req_len.finish()),
            Arc::new(self.resp_len.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.status_msg.finish()),
        ]);
        RecordBatch::try_new(http_schema(), cols).expect("http batch matches its schema")
    }
}

// ---------------------------------------------------------------- DHCP

#[derive(Clone, Debug, Default)]
pub struct DhcpRecord<'a> {
    pub trans_id: u32,
    pub msg_type: Option<u8>,
    pub mac: [u8; 6],
    pub client_addr: Option<[u8; 4]>,
    pub requested_addr: Option<[u8; 4]>,
    pub assigned_addr: Option<[u8; 4]>,
    pub server_id: Option<[u8; 4]>,
    pub host_name: Option<&'a str>,
    pub domain: Option<&'a str>,
    pub lease_time: Option<u32>,
}

pub fn dhcp_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut v = conn_fields();
        v.extend([
            f("trans_id", DataType::UInt32, false),
            f("msg_type", DataType::Utf8, true),
            f("mac", DataType::Utf8, false),
            f("client_addr", DataType::Utf8, true),
            f("requested_addr", DataType::Utf8, true),
            f("assigned_addr", DataType::Utf8, true),
            f("server_addr", DataType::Utf8, true),
            f("host_name", DataType::Utf8, true),
            f("domain", DataType::Utf8, true),
            f("lease_time", DataType::Float64, true),
        ]);
        Arc::new(Schema::new(v))
    })
    .clone()
}

#[derive(Default)]
pub struct DhcpBuilder {
    c: ConnCols,
    xid: UInt32Builder,
    msg: StringBuilder,
    mac: StringBuilder,
    client: StringBuilder,
    requested: StringBuilder,
    assigned: StringBuilder,
    server: StringBuilder,
    host: StringBuilder,
    domain: StringBuilder,
    lease: Float64Builder,
    rows: usize,
}

fn v4(a: Option<[u8; 4]>) -> Option<String> {
    a.map(|a| std::net::Ipv4Addr::from(a).to_string())
}

impl DhcpBuilder {
    pub fn append(&mut self, c: &ConnId, r: &DhcpRecord, scratch: &mut String) {
        use crate::proto::dhcp::msg_type_name;
        self.c.append(c, scratch);
        self.xid.append_value(r.trans_id);
        self.msg.append_option(r.msg_type.map(msg_type_name));
        let m = r.mac;
        self.mac.append_value(format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]));
        self.client.append_option(v4(r.client_addr));
        self.requested.append_option(v4(r.requested_addr));
        self.assigned.append_option(v4(r.assigned_addr));
        self.server.append_option(v4(r.server_id));
        self.host.append_option(r.host_name);
        self.domain.append_option(r.domain);
        self.lease.append_option(r.lease_time.map(|s| s as f64));
        self.rows += 1;
    }
    pub fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let mut cols = self.c.finish();
        cols.extend([
            Arc::new(self.xid.finish()) as ArrayRef,
            Arc::new(self.msg.finish()),
            Arc::new(self.mac.finish()),
            Arc::new(self.client.finish()),
            Arc::new(self.requested.finish()),
            Arc::new(self.assigned.finish()),
            Arc::new(self.server.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.domain.finish()),
            Arc::new(self.lease.finish()),
        ]);
        RecordBatch::try_new(dhcp_schema(), cols).expect("dhcp batch matches its schema")
    }
}

// ---------------------------------------------------------------- sinks

/// A finished batch for one table.
pub type Output = (Table, RecordBatch);

/// A worker's record builders plus anomaly counters.
pub struct Sinks {
    pub flows: FlowBuilder,
    pub dns: DnsBuilder,
    pub tls: TlsBuilder,
    pub http: HttpBuilder,
    pub dhcp: DhcpBuilder,
    pub anomalies: AnomalyCounters,
    /// Batches ready to go downstream.
    pub ready: Vec<Output>,
    batch_rows: usize,
    scratch: String,
    /// Community ID seed (0 unless configured).
    pub community_id_seed: u16,
    /// Names used this second, for detection (disabled unless it runs).
    pub names: crate::detect::NameAcc,
    /// Country and AS of flow endpoints (none without databases).
    pub geo: Option<crate::geo::GeoLookup>,
    /// This worker's plugins (none unless configured).
    pub plugins: Option<Box<crate::plugin::PluginRunner>>,
}

impl Sinks {
    pub fn new(batch_rows: usize) -> Sinks {
        Sinks {
            flows: FlowBuilder::default(),
            dns: DnsBuilder::default(),
            tls: TlsBuilder::default(),
            http: HttpBuilder::default(),
            dhcp: DhcpBuilder::default(),
            anomalies: AnomalyCounters::default(),
            ready: Vec::with_capacity(8),
            batch_rows: batch_rows.max(1),
            scratch: String::with_capacity(64),
            community_id_seed: 0,
            names: crate::detect::NameAcc::default(),
            geo: None,
            plugins: None,
        }
    }

    pub fn flow(&mut self, r: &FlowRecord) {
        if let Some(p) = self.plugins.as_deref_mut() {
            p.flow(r);
        }
        self.flows.append(r, self.community_id_seed, &mut self.scratch, self.geo.as_mut());
        if self.flows.len() >= self.batch_rows {
            let b = self.flows.finish();
            self.ready.push((Table::Flows, b));
        }
    }

    pub fn dns(&mut self, c: &ConnId, r: &DnsRecord) {
        if let Some(p) = self.plugins.as_deref_mut() {
            p.dns(c, r);
        }
        self.dns.append(c, r, &mut self.scratch);
        if self.dns.rows >= self.batch_rows {
            let b = self.dns.finish();
            self.ready.push((Table::Dns, b));
        }
    }

    pub fn tls(&mut self, c: &ConnId, r: &TlsRecord) {
        if let Some(p) = self.plugins.as_deref_mut() {
            p.tls(c, r);
        }
        if let Some(n) = r.server_name {
            self.names.note(n, c.orig_h, c.v6, c.resp_h, c.uid, crate::detect::NAME_SNI);
        }
        self.tls.append(c, r, &mut self.scratch);
        if self.tls.rows >= self.batch_rows {
            let b = self.tls.finish();
            self.ready.push((Table::Tls, b));
        }
    }

    pub fn http(&mut self, c: &ConnId, r: &HttpRecord) {
        if let Some(p) = self.plugins.as_deref_mut() {
            p.http(c, r);
        }
        if let Some(h) = r.host {
            // Host may carry a port.
            let h = h.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(h, |(n, _)| n);
            self.names.note(h, c.orig_h, c.v6, c.resp_h, c.uid, crate::detect::NAME_HTTP);
        }
        self.http.append(c, r, &mut self.scratch);
        if self.http.rows >= self.batch_rows {
            let b = self.http.finish();
            self.ready.push((Table::Http, b));
        }
    }

    pub fn dhcp(&mut self, c: &ConnId, r: &DhcpRecord) {
        self.dhcp.append(c, r, &mut self.scratch);
        if self.dhcp.rows >= self.batch_rows {
            let b = self.dhcp.finish();
            self.ready.push((Table::Dhcp, b));
        }
    }

    /// Move every partly filled builder into `ready` (time-based flush, end).
    pub fn flush_all(&mut self) {
        if !self.flows.is_empty() {
            let b = self.flows.finish();
            self.ready.push((Table::Flows, b));
        }
        if self.dns.rows > 0 {
            let b = self.dns.finish();
            self.ready.push((Table::Dns, b));
        }
        if self.tls.rows > 0 {
            let b = self.tls.finish();
            self.ready.push((Table::Tls, b));
        }
        if self.http.rows > 0 {
            let b = self.http.finish();
            self.ready.push((Table::Http, b));
        }
        if self.dhcp.rows > 0 {
            let b = self.dhcp.finish();
            self.ready.push((Table::Dhcp, b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::write_addr;

    #[test]
    fn addresses_are_written_as_std_displays_them() {
        let mut buf = String::from("left over");
        let mut check = |v6: bool, a: [u8; 16]| {
            write_addr(&mut buf, v6, &a);
            assert_eq!(buf, crate::decode::addr(v6, &a).to_string());
        };
        for v4 in [[0, 0, 0, 0], [255, 255, 255, 255], [10, 0, 0, 1], [192, 168, 100, 9], [1, 20, 199, 250]] {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4);
            check(false, a);
        }
        // Every octet value in every position.
        for b in 0..=255u8 {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[b, 255 - b, b / 3, b.wrapping_mul(7)]);
            check(false, a);
        }
        check(true, [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        check(true, [0; 16]);
    }
}
