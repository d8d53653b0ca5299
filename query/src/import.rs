//! Import of flow records from CSV (the `flows` columns of docs/schema.md).
//!
//! The header names the columns, in any order. `ts`, `orig_h`, `resp_h`
//! and `proto` (or `ip_proto`) are required; the rest have defaults an
//! analyst would expect (ports 0, counters 0, `last_ts` = `ts` +
//! `duration`, `community_id` computed from the 5-tuple, `uid` derived from
//! it and the start, `local_*` from the address ranges). `date` and `hour` (from a
//! `SELECT *` export) are accepted and ignored: they follow from `ts`.
//!
//! Every bad field is reported with its line and column. An import with
//! bad rows imports nothing (the whole file is checked first), unless the
//! caller asks to skip them.

use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, ListBuilder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
    UInt8Builder, UInt16Builder, UInt64Builder,
};
use arrow::datatypes::DataType;
use tapstream_engine::derived::{SEED_COLUMN, community_id_of_addrs, octets, store_community_id, store_uid};
use tapstream_engine::records::{Table, flows_schema, is_local};

/// One bad field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    pub column: String,
    pub value: String,
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}: {:?}: {}", self.line, self.column, self.value, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("header: {0}")]
    Header(String),
    #[error("{} bad row(s); nothing imported (first: {}); pass --skip-bad-rows to import the good ones", .0.len(), .0[0])]
    BadRows(Vec<RowError>),
    #[error(transparent)]
    Write(#[from] crate::WriterError),
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub rows: u64,
    pub skipped: Vec<RowError>,
}

const REQUIRED: [&str; 3] = ["ts", "orig_h", "resp_h"];
const IGNORED: [&str; 2] = ["date", "hour"];

struct Columns {
    idx: Vec<Option<usize>>, // per schema field: position in the CSV
}

impl Columns {
    fn from_header(h: &csv::StringRecord) -> Result<Columns, ImportError> {
        let schema = flows_schema();
        let mut idx = vec![None; schema.fields().len()];
        for (pos, name) in h.iter().enumerate() {
            let name = name.trim();
            match schema.index_of(name) {
                Ok(_) if name == SEED_COLUMN => {
                    return Err(ImportError::Header(format!(
                        "unknown column {name:?} (the flows columns are listed in docs/schema.md)"
                    )));
                }
                Ok(i) if idx[i].is_some() => return Err(ImportError::Header(format!("column {name} appears twice"))),
                Ok(i) => idx[i] = Some(pos),
                Err(_) if IGNORED.contains(&name) => {}
                Err(_) => {
                    return Err(ImportError::Header(format!(
                        "unknown column {name:?} (the flows columns are listed in docs/schema.md)"
                    )));
                }
            }
        }
        for r in REQUIRED {
            if idx[schema.index_of(r).expect("schema column")].is_none() {
                return Err(ImportError::Header(format!("missing required column {r}")));
            }
        }
        if idx[schema.index_of("proto").expect("proto")].is_none()
            && idx[schema.index_of("ip_proto").expect("ip")].is_none()
        {
            return Err(ImportError::Header("missing required column proto (or ip_proto)".into()));
        }
        Ok(Columns { idx })
    }

    fn get<'r>(&self, rec: &'r csv::StringRecord, name: &str) -> Option<&'r str> {
        let i = flows_schema().index_of(name).ok()?;
        self.idx[i].and_then(|p| rec.get(p)).map(str::trim).filter(|v| !v.is_empty() && *v != "-")
    }
}

/// A parsed flow row (every column, defaults filled in).
struct Row {
    ts: i64,
    last_ts: i64,
    /// As given (`None`: derived).
    uid: Option<String>,
    community_id: String,
    orig_h: IpAddr,
    orig_p: u16,
    resp_h: IpAddr,
    resp_p: u16,
    proto: String,
    ip_proto: u8,
    service: Option<String>,
    duration: f64,
    counters: [u64; 7], // orig_bytes resp_bytes missed orig_pkts orig_ip_bytes resp_pkts resp_ip_bytes
    conn_state: String,
    local_orig: bool,
    local_resp: bool,
    history: String,
    tunnel_parents: Option<Vec<String>>,
    vlan: Option<u16>,
    interface: u16,
    orig_flags: Option<u8>,
    resp_flags: Option<u8>,
    record_kind: String,
    flow_start: i64,
    /// Countries and AS numbers as exported (GeoIP columns), when present.
    orig_cc: Option<String>,
    resp_cc: Option<String>,
    orig_asn: Option<u32>,
    resp_asn: Option<u32>,
}

const COUNTERS: [&str; 7] =
    ["orig_bytes", "resp_bytes", "missed_bytes", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes"];

/// Timestamps: RFC 3339 (`2026-11-01T10:00:00.5Z`, as our CSV export
/// writes them) or seconds since the epoch (`1320279566.831620`, as Zeek).
fn parse_ts(v: &str) -> Result<i64, String> {
    if let Ok(secs) = v.parse::<f64>() {
        if !(0.0..=4.0e9).contains(&secs) {
            return Err("epoch seconds out of range".into());
        }
        let whole = secs.trunc() as i64;
        // Keep the digits as written: 1320279566.831620 is exact to the µs.
        let frac_ns = match v.split_once('.') {
            Some((_, f)) => {
                let digits: String = f.chars().chain(std::iter::repeat('0')).take(9).collect();
                digits.parse::<i64>().map_err(|_| "bad fraction".to_string())?
            }
            None => 0,
        };
        return Ok(whole * 1_000_000_000 + frac_ns);
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .or_else(|_| {
            // "2026-11-01T10:00:00" without an offset: UTC.
            time::PrimitiveDateTime::parse(v, &time::format_description::well_known::Iso8601::DEFAULT)
                .map(|p| p.assume_utc())
        })
        .map_err(|_| "not a timestamp (RFC 3339 like 2026-11-01T10:00:00Z, or epoch seconds)".to_string())?;
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| "timestamp out of range".to_string())
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "t" | "true" | "1" => Ok(true),
        "f" | "false" | "0" => Ok(false),
        _ => Err("not a boolean (true/false, T/F, 1/0)".into()),
    }
}

fn proto_number(p: &str) -> Option<u8> {
    match p {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "unknown_transport" => Some(0),
        _ => None,
    }
}

fn parse_row(c: &Columns, rec: &csv::StringRecord, line: u64, errs: &mut Vec<RowError>) -> Option<Row> {
    let n0 = errs.len();
    let mut bad = |col: &str, v: &str, reason: String| {
        errs.push(RowError { line, column: col.into(), value: v.into(), reason });
    };
    macro_rules! field {
        ($name:expr, $parse:expr) => {
            match c.get(rec, $name) {
                None => None,
                Some(v) => match $parse(v) {
                    Ok(x) => Some(x),
                    Err(e) => {
                        bad($name, v, e);
                        None
                    }
                },
            }
        };
    }
    let num = |what: &'static str| move |v: &str| v.parse::<u64>().map_err(|_| format!("not a {what}"));
    let ts = field!("ts", parse_ts);
    if c.get(rec, "ts").is_none() {
        bad("ts", "", "required".into());
    }
    let ip = |v: &str| v.parse::<IpAddr>().map_err(|_| "not an IP address".to_string());
    let orig_h = field!("orig_h", ip);
    let resp_h = field!("resp_h", ip);
    for r in ["orig_h", "resp_h"] {
        if c.get(rec, r).is_none() {
            bad(r, "", "required".into());
        }
    }
    let port = |v: &str| v.parse::<u16>().map_err(|_| "not a port (0-65535)".to_string());
    let orig_p = field!("orig_p", port).unwrap_or(0);
    let resp_p = field!("resp_p", port).unwrap_or(0);
    let proto_s = c.get(rec, "proto");
    let ip_proto = field!("ip_proto", |v: &str| v.parse::<u8>().map_err(|_| "not an IP protocol number".to_string()));
    let ip_proto = match (proto_s, ip_proto) {
        (_, Some(p)) => Some(p),
        (Some(p), None) => match proto_number(p) {
            Some(n) => Some(n),
            None => {
                bad("proto", p, "not tcp, udp, icmp or unknown_transport".into());
                None
            }
        },
        (None, None) => {
            bad("proto", "", "required (or ip_proto)".into());
            None
        }
    };
    let duration = field!("duration", |v: &str| v
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && *d >= 0.0)
        .ok_or_else(|| "not a duration in seconds".to_string()));
    let last_ts = field!("last_ts", parse_ts);
    let flow_start = field!("flow_start", parse_ts);
    let mut counters = [0u64; 7];
    for (i, name) in COUNTERS.iter().enumerate() {
        counters[i] = field!(*name, num("count")).unwrap_or(0);
    }
    let local_orig = field!("local_orig", parse_bool);
    let local_resp = field!("local_resp", parse_bool);
    let vlan = field!("vlan", |v: &str| v
        .parse::<u16>()
        .ok()
        .filter(|x| *x < 4096)
        .ok_or_else(|| "not a VLAN id (0-4095)".to_string()));
    let interface =
        field!("interface", |v: &str| v.parse::<u16>().map_err(|_| "not an interface number".to_string())).unwrap_or(0);
    let flags = |v: &str| v.parse::<u8>().map_err(|_| "not TCP flags (0-255)".to_string());
    let orig_flags = field!("orig_tcp_flags", flags);
    let resp_flags = field!("resp_tcp_flags", flags);
    let cc = |v: &str| {
        if v.len() == 2 && v.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(v.to_ascii_uppercase())
        } else {
            Err("not a two-letter country code".to_string())
        }
    };
    let orig_cc = field!("orig_cc", cc);
    let resp_cc = field!("resp_cc", cc);
    let asn = |v: &str| v.parse::<u32>().map_err(|_| "not an AS number".to_string());
    let orig_asn = field!("orig_asn", asn);
    let resp_asn = field!("resp_asn", asn);
    let record_kind = c.get(rec, "record_kind").unwrap_or("final").to_string();
    if !["final", "interim", "evicted"].contains(&record_kind.as_str()) {
        bad("record_kind", &record_kind, "not final, interim or evicted".into());
    }
    if errs.len() > n0 {
        return None;
    }
    let (ts, orig_h, resp_h, ip_proto) = (ts?, orig_h?, resp_h?, ip_proto?);
    if orig_h.is_ipv4() != resp_h.is_ipv4() {
        errs.push(RowError {
            line,
            column: "resp_h".into(),
            value: resp_h.to_string(),
            reason: "orig_h and resp_h are of different IP versions".into(),
        });
        return None;
    }
    let last_ts = last_ts.unwrap_or(ts + (duration.unwrap_or(0.0) * 1e9) as i64);
    if last_ts < ts {
        errs.push(RowError {
            line,
            column: "last_ts".into(),
            value: c.get(rec, "last_ts").unwrap_or_default().into(),
            reason: "before ts".into(),
        });
        return None;
    }
    let ((v6, o), (_, r)) = (octets(orig_h), octets(resp_h));
    let community_id = match c.get(rec, "community_id") {
        Some(v) => v.to_string(),
        // Versions were checked equal above, so the derivation has a value.
        None => community_id_of_addrs(IMPORT_SEED, ip_proto, orig_h, orig_p, resp_h, resp_p).unwrap_or_default(),
    };
    // Without one, the uid is derived on read from the five-tuple and
    // start, as the engine's are: the same flow imported twice gets the
    // same uid.
    let uid = c.get(rec, "uid").map(str::to_string);
    let proto = proto_s.map(str::to_string).unwrap_or_else(|| tapstream_engine::records::proto_name(ip_proto).into());
    let tunnel_parents = c
        .get(rec, "tunnel_parents")
        .filter(|v| *v != "(empty)")
        .map(|v| v.trim_matches(['[', ']']).split(',').map(|s| s.trim().trim_matches('"').to_string()).collect());
    Some(Row {
        ts,
        last_ts,
        uid,
        community_id,
        orig_h,
        orig_p,
        resp_h,
        resp_p,
        proto,
        ip_proto,
        service: c.get(rec, "service").map(str::to_string),
        duration: duration.unwrap_or((last_ts - ts) as f64 / 1e9),
        counters,
        conn_state: c.get(rec, "conn_state").unwrap_or("OTH").to_string(),
        local_orig: local_orig.unwrap_or_else(|| is_local(v6, &o)),
        local_resp: local_resp.unwrap_or_else(|| is_local(v6, &r)),
        history: c.get(rec, "history").unwrap_or("").to_string(),
        tunnel_parents,
        vlan,
        interface,
        orig_flags,
        resp_flags,
        record_kind,
        flow_start: flow_start.unwrap_or(ts),
        orig_cc,
        resp_cc,
        orig_asn,
        resp_asn,
    })
}

/// The Community ID seed of rows imported without a `community_id`.
const IMPORT_SEED: u16 = 0;

fn to_batch(rows: &[Row]) -> RecordBatch {
    let ts = |f: &dyn Fn(&Row) -> i64| {
        let mut b = TimestampNanosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
        rows.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let ts_opt = |f: &dyn Fn(&Row) -> Option<i64>| {
        let mut b = TimestampNanosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let s = |f: &dyn Fn(&Row) -> Option<String>| {
        let mut b = StringBuilder::new();
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let u64s = |i: usize| {
        let mut b = UInt64Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_value(r.counters[i]));
        Arc::new(b.finish()) as ArrayRef
    };
    let u16s = |f: &dyn Fn(&Row) -> Option<u16>| {
        let mut b = UInt16Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let u32s = |f: &dyn Fn(&Row) -> Option<u32>| {
        let mut b = arrow::array::UInt32Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let u8s = |f: &dyn Fn(&Row) -> Option<u8>| {
        let mut b = UInt8Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let bools = |f: &dyn Fn(&Row) -> bool| {
        let mut b = BooleanBuilder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    // Stored as the engine stores them: derivable values as null
    // (`tapstream_engine::derived`), values that differ kept.
    let mut dur = Float64Builder::with_capacity(rows.len());
    rows.iter().for_each(|r| {
        let derived = (r.last_ts - r.ts).max(0) as f64 / 1e9;
        dur.append_option((r.duration != derived).then_some(r.duration))
    });
    let mut parents = ListBuilder::new(StringBuilder::new());
    for r in rows {
        match &r.tunnel_parents {
            Some(v) => {
                v.iter().for_each(|p| parents.values().append_value(p));
                parents.append(true);
            }
            None => parents.append(false),
        }
    }
    let schema = flows_schema();
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "ts" => ts(&|r| r.ts),
            "last_ts" => ts(&|r| r.last_ts),
            "flow_start" => ts_opt(&|r| (r.flow_start != r.ts).then_some(r.flow_start)),
            "uid" => s(&|r| {
                let u = r.uid.as_deref()?;
                store_uid(r.ip_proto, r.orig_h, r.orig_p, r.resp_h, r.resp_p, r.flow_start, u)
            }),
            "community_id" => s(&|r| {
                store_community_id(IMPORT_SEED, r.ip_proto, r.orig_h, r.orig_p, r.resp_h, r.resp_p, &r.community_id)
            }),
            SEED_COLUMN => u16s(&|_| Some(IMPORT_SEED)),
            "orig_h" => s(&|r| Some(r.orig_h.to_string())),
            "resp_h" => s(&|r| Some(r.resp_h.to_string())),
            "orig_p" => u16s(&|r| Some(r.orig_p)),
            "resp_p" => u16s(&|r| Some(r.resp_p)),
            "proto" => s(&|r| Some(r.proto.clone())),
            "ip_proto" => u8s(&|r| Some(r.ip_proto)),
            "service" => s(&|r| r.service.clone()),
            "duration" => Arc::new(dur.finish()) as ArrayRef,
            "conn_state" => s(&|r| Some(r.conn_state.clone())),
            "local_orig" => bools(&|r| r.local_orig),
            "local_resp" => bools(&|r| r.local_resp),
            "history" => s(&|r| Some(r.history.clone())),
            "tunnel_parents" => Arc::new(parents.finish()) as ArrayRef,
            "vlan" => u16s(&|r| r.vlan),
            "interface" => u16s(&|r| Some(r.interface)),
            "orig_tcp_flags" => u8s(&|r| r.orig_flags),
            "resp_tcp_flags" => u8s(&|r| r.resp_flags),
            "record_kind" => s(&|r| Some(r.record_kind.clone())),
            "orig_cc" => s(&|r| r.orig_cc.clone()),
            "resp_cc" => s(&|r| r.resp_cc.clone()),
            "orig_asn" => u32s(&|r| r.orig_asn),
            "resp_asn" => u32s(&|r| r.resp_asn),
            name => {
                let i = COUNTERS.iter().position(|c| *c == name).expect("every flows column is built");
                debug_assert_eq!(f.data_type(), &DataType::UInt64);
                u64s(i)
            }
        })
        .collect();
    RecordBatch::try_new(schema, cols).expect("import batch matches the flows schema")
}

const BATCH: usize = 8192;

/// Check a CSV file's rows without importing: every bad field.
pub fn check_flows_csv<R: Read>(input: R) -> Result<Vec<RowError>, ImportError> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let cols = Columns::from_header(rdr.headers()?)?;
    let mut errs = Vec::new();
    let mut rec = csv::StringRecord::new();
    while rdr.read_record(&mut rec)? {
        let line = rec.position().map_or(0, |p| p.line());
        parse_row(&cols, &rec, line, &mut errs);
    }
    Ok(errs)
}

/// Import flows from CSV into the writer. With `skip_bad_rows` false the
/// caller must have checked the file first (see [`import_flows_csv_file`]).
pub fn import_flows_csv<R: Read>(
    input: R,
    writer: &mut impl crate::writer::BatchSink,
    skip_bad_rows: bool,
) -> Result<ImportReport, ImportError> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let cols = Columns::from_header(rdr.headers()?)?;
    let mut report = ImportReport::default();
    let mut rows = Vec::with_capacity(BATCH);
    let mut rec = csv::StringRecord::new();
    let mut errs = Vec::new();
    while rdr.read_record(&mut rec)? {
        let line = rec.position().map_or(0, |p| p.line());
        if let Some(r) = parse_row(&cols, &rec, line, &mut errs) {
            rows.push(r);
        } else if !skip_bad_rows {
            return Err(ImportError::BadRows(errs));
        }
        if rows.len() == BATCH {
            writer.write_batch(Table::Flows, &to_batch(&rows))?;
            report.rows += rows.len() as u64;
            rows.clear();
        }
    }
    if !rows.is_empty() {
        writer.write_batch(Table::Flows, &to_batch(&rows))?;
        report.rows += rows.len() as u64;
    }
    report.skipped = errs;
    Ok(report)
}

/// Import a CSV file: checked in full first, so a file with bad rows
/// imports nothing unless `skip_bad_rows`.
pub fn import_flows_csv_file(
    path: &std::path::Path,
    writer: &mut impl crate::writer::BatchSink,
    skip_bad_rows: bool,
) -> Result<ImportReport, ImportError> {
    let open = || std::fs::File::open(path).map_err(|e| ImportError::Csv(csv::Error::from(e)));
    if !skip_bad_rows {
        let errs = check_flows_csv(std::io::BufReader::new(open()?))?;
        if !errs.is_empty() {
            return Err(ImportError::BadRows(errs));
        }
    }
    import_flows_csv(std::io::BufReader::new(open()?), writer, skip_bad_rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_both_spellings() {
        assert_eq!(parse_ts("1320279566.831620").unwrap(), 1_320_279_566_831_620_000);
        assert_eq!(parse_ts("2026-11-01T00:00:00Z").unwrap(), 1_793_491_200_000_000_000);
        assert_eq!(parse_ts("2026-11-01T00:00:00.5+00:00").unwrap(), 1_793_491_200_500_000_000);
        assert!(parse_ts("yesterday").is_err());
        assert!(parse_ts("-5").is_err());
    }

    #[test]
    fn row_errors_name_line_and_column() {
        let csv = "ts,orig_h,orig_p,resp_h,resp_p,proto,orig_bytes\n\
                   2026-11-01T00:00:00Z,10.0.0.1,1234,10.0.0.2,80,tcp,100\n\
                   2026-11-01T00:00:01Z,10.0.0.999,1234,10.0.0.2,80,tcp,100\n\
                   2026-11-01T00:00:02Z,10.0.0.1,70000,10.0.0.2,80,sctp,-1\n";
        let errs = check_flows_csv(csv.as_bytes()).unwrap();
        let got: Vec<(u64, &str)> = errs.iter().map(|e| (e.line, e.column.as_str())).collect();
        assert_eq!(got, vec![(3, "orig_h"), (4, "orig_p"), (4, "proto"), (4, "orig_bytes")]);
        assert!(errs[0].to_string().contains("line 3, column orig_h: \"10.0.0.999\": not an IP address"));
    }

    #[test]
    fn header_errors() {
        let e = check_flows_csv("ts,orig_h,resp_h,proto,colour\n".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("unknown column \"colour\""), "{e}");
        let e = check_flows_csv("ts,orig_h,proto\n".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("missing required column resp_h"), "{e}");
    }
}
