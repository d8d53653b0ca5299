//! Printing record batches as Zeek TSV logs, JSON lines or CSV, using Zeek's
//! field names so output can be diffed against Zeek's own logs.

use std::io::Write;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, LargeStringArray, ListArray, RecordBatch, StringArray,
    StringViewArray, TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::DataType;
use tapstream_engine::arrow;

use crate::cli::{Format, LogKind};

/// How a column prints in Zeek's format.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Time,
    Str,
    Count,
    Bool,
    Interval,
    /// conn.log: unset unless duration > 0
    DurationGated,
    /// A list of seconds printed as intervals (dns TTLs)
    IntervalList,
    List,
}

struct Col {
    zeek: &'static str,
    ours: &'static str,
    zeek_type: &'static str,
    kind: Kind,
}

const fn c(zeek: &'static str, ours: &'static str, zeek_type: &'static str, kind: Kind) -> Col {
    Col { zeek, ours, zeek_type, kind }
}

const CONN: &[Col] = &[
    c("ts", "ts", "time", Kind::Time),
    c("uid", "uid", "string", Kind::Str),
    c("id.orig_h", "orig_h", "addr", Kind::Str),
    c("id.orig_p", "orig_p", "port", Kind::Count),
    c("id.resp_h", "resp_h", "addr", Kind::Str),
    c("id.resp_p", "resp_p", "port", Kind::Count),
    c("proto", "proto", "enum", Kind::Str),
    c("service", "service", "string", Kind::Str),
    c("duration", "duration", "interval", Kind::DurationGated),
    c("orig_bytes", "orig_bytes", "count", Kind::DurationGated),
    c("resp_bytes", "resp_bytes", "count", Kind::DurationGated),
    c("conn_state", "conn_state", "string", Kind::Str),
    c("local_orig", "local_orig", "bool", Kind::Bool),
    c("local_resp", "local_resp", "bool", Kind::Bool),
    c("missed_bytes", "missed_bytes", "count", Kind::Count),
    c("history", "history", "string", Kind::Str),
    c("orig_pkts", "orig_pkts", "count", Kind::Count),
    c("orig_ip_bytes", "orig_ip_bytes", "count", Kind::Count),
    c("resp_pkts", "resp_pkts", "count", Kind::Count),
    c("resp_ip_bytes", "resp_ip_bytes", "count", Kind::Count),
    c("tunnel_parents", "tunnel_parents", "set[string]", Kind::List),
    c("ip_proto", "ip_proto", "count", Kind::Count),
    c("community_id", "community_id", "string", Kind::Str),
];

const ID: [Col; 6] = [
    c("ts", "ts", "time", Kind::Time),
    c("uid", "uid", "string", Kind::Str),
    c("id.orig_h", "orig_h", "addr", Kind::Str),
    c("id.orig_p", "orig_p", "port", Kind::Count),
    c("id.resp_h", "resp_h", "addr", Kind::Str),
    c("id.resp_p", "resp_p", "port", Kind::Count),
];

const DNS: &[Col] = &[
    c("proto", "proto", "enum", Kind::Str),
    c("trans_id", "trans_id", "count", Kind::Count),
    c("rtt", "rtt", "interval", Kind::Interval),
    c("query", "query", "string", Kind::Str),
    c("qclass", "qclass", "count", Kind::Count),
    c("qclass_name", "qclass_name", "string", Kind::Str),
    c("qtype", "qtype", "count", Kind::Count),
    c("qtype_name", "qtype_name", "string", Kind::Str),
    c("rcode", "rcode", "count", Kind::Count),
    c("rcode_name", "rcode_name", "string", Kind::Str),
    c("AA", "aa", "bool", Kind::Bool),
    c("TC", "tc", "bool", Kind::Bool),
    c("RD", "rd", "bool", Kind::Bool),
    c("RA", "ra", "bool", Kind::Bool),
    c("Z", "z", "count", Kind::Count),
    c("answers", "answers", "vector[string]", Kind::List),
    c("TTLs", "ttls", "vector[interval]", Kind::IntervalList),
    c("rejected", "rejected", "bool", Kind::Bool),
];

const SSL: &[Col] = &[
    c("version", "version", "string", Kind::Str),
    c("cipher", "cipher", "string", Kind::Str),
    c("server_name", "server_name", "string", Kind::Str),
    c("next_protocol", "alpn", "string", Kind::List),
    c("established", "established", "bool", Kind::Bool),
    c("ja4", "ja4", "string", Kind::Str),
];

const HTTP: &[Col] = &[
    c("trans_depth", "trans_depth", "count", Kind::Count),
    c("method", "method", "string", Kind::Str),
    c("host", "host", "string", Kind::Str),
    c("uri", "uri", "string", Kind::Str),
    c("referrer", "referrer", "string", Kind::Str),
    c("version", "version", "string", Kind::Str),
    c("user_agent", "user_agent", "string", Kind::Str),
    c("request_body_len", "request_body_len", "count", Kind::Count),
    c("response_body_len", "response_body_len", "count", Kind::Count),
    c("status_code", "status_code", "count", Kind::Count),
    c("status_msg", "status_msg", "string", Kind::Str),
];

const DHCP: &[Col] = &[
    c("trans_id", "trans_id", "count", Kind::Count),
    c("msg_type", "msg_type", "string", Kind::Str),
    c("mac", "mac", "string", Kind::Str),
    c("client_addr", "client_addr", "addr", Kind::Str),
    c("requested_addr", "requested_addr", "addr", Kind::Str),
    c("assigned_addr", "assigned_addr", "addr", Kind::Str),
    c("server_addr", "server_addr", "addr", Kind::Str),
    c("host_name", "host_name", "string", Kind::Str),
    c("domain", "domain", "string", Kind::Str),
    c("lease_time", "lease_time", "interval", Kind::Interval),
];

fn columns(log: LogKind) -> (&'static str, Vec<&'static Col>) {
    let with_id = |rest: &'static [Col]| ID.iter().chain(rest.iter()).collect::<Vec<_>>();
    match log {
        LogKind::Conn => ("conn", CONN.iter().collect()),
        LogKind::Dns => ("dns", with_id(DNS)),
        LogKind::Tls => ("ssl", with_id(SSL)),
        LogKind::Http => ("http", with_id(HTTP)),
        LogKind::Dhcp => ("dhcp", with_id(DHCP)),
    }
}

/// A typed cell value.
enum Val {
    Null,
    Str(String),
    U(u64),
    F(f64),
    B(bool),
    Time(i64),
    List(Vec<Val>),
}

fn value(a: &ArrayRef, row: usize) -> Val {
    if a.is_null(row) {
        return Val::Null;
    }
    let any = a.as_any();
    match a.data_type() {
        DataType::Utf8 => {
            Val::Str(any.downcast_ref::<StringArray>().map(|x| x.value(row).to_string()).unwrap_or_default())
        }
        DataType::Utf8View => {
            Val::Str(any.downcast_ref::<StringViewArray>().map(|x| x.value(row).to_string()).unwrap_or_default())
        }
        DataType::LargeUtf8 => {
            Val::Str(any.downcast_ref::<LargeStringArray>().map(|x| x.value(row).to_string()).unwrap_or_default())
        }
        DataType::UInt8 => Val::U(any.downcast_ref::<UInt8Array>().map_or(0, |x| x.value(row) as u64)),
        DataType::UInt16 => Val::U(any.downcast_ref::<UInt16Array>().map_or(0, |x| x.value(row) as u64)),
        DataType::UInt32 => Val::U(any.downcast_ref::<UInt32Array>().map_or(0, |x| x.value(row) as u64)),
        DataType::UInt64 => Val::U(any.downcast_ref::<UInt64Array>().map_or(0, |x| x.value(row))),
        DataType::Float64 => Val::F(any.downcast_ref::<Float64Array>().map_or(0.0, |x| x.value(row))),
        DataType::Boolean => Val::B(any.downcast_ref::<BooleanArray>().is_some_and(|x| x.value(row))),
        DataType::Timestamp(_, _) => {
            Val::Time(any.downcast_ref::<TimestampNanosecondArray>().map_or(0, |x| x.value(row)))
        }
        DataType::List(_) => {
            let l = any.downcast_ref::<ListArray>().map(|x| x.value(row));
            match l {
                Some(v) => Val::List((0..v.len()).map(|i| value(&v, i)).collect()),
                None => Val::Null,
            }
        }
        _ => Val::Null,
    }
}

fn zeek_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\t' => o.push_str("\\x09"),
            '\n' => o.push_str("\\x0a"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\x{:02x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

fn zeek_cell(v: &Val, kind: Kind) -> String {
    match (v, kind) {
        (Val::Null, _) => "-".into(),
        (Val::Time(t), _) => format!("{}.{:06}", t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000) / 1000),
        (Val::Str(s), _) if s.is_empty() => "(empty)".into(),
        (Val::Str(s), _) => zeek_escape(s),
        (Val::U(u), Kind::Interval | Kind::IntervalList) => format!("{u}.000000"),
        (Val::U(u), _) => u.to_string(),
        (Val::F(f), _) => format!("{f:.6}"),
        (Val::B(b), _) => if *b { "T" } else { "F" }.into(),
        (Val::List(l), _) if l.is_empty() => "(empty)".into(),
        (Val::List(l), k) => l.iter().map(|x| zeek_cell(x, k)).collect::<Vec<_>>().join(","),
    }
}

fn json_val(v: &Val) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Val::Null => J::Null,
        Val::Str(s) => J::String(s.clone()),
        Val::U(u) => J::from(*u),
        Val::F(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Val::B(b) => J::Bool(*b),
        Val::Time(t) => serde_json::Number::from_f64(*t as f64 / 1e9).map_or(J::Null, J::Number),
        Val::List(l) => J::Array(l.iter().map(json_val).collect()),
    }
}

fn csv_cell(v: &Val) -> String {
    let s = match v {
        Val::Null => String::new(),
        Val::List(l) => l.iter().map(csv_cell).collect::<Vec<_>>().join(";"),
        other => zeek_cell(other, Kind::Str).replace("(empty)", ""),
    };
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// Print `batches` (all of one table) sorted by time.
pub fn print(out: &mut dyn Write, log: LogKind, format: Format, batches: &[RecordBatch]) -> std::io::Result<()> {
    let (path, cols) = columns(log);
    // Flows leave the engine with their derivable columns unfilled.
    let completed;
    let batches = if log == LogKind::Conn {
        completed = batches
            .iter()
            .map(tapstream_engine::derived::complete)
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        &completed[..]
    } else {
        batches
    };
    let mut rows: Vec<(i64, usize, usize)> = Vec::new();
    for (bi, b) in batches.iter().enumerate() {
        let ts = b.column_by_name("ts").and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>().cloned());
        for r in 0..b.num_rows() {
            rows.push((ts.as_ref().map_or(0, |t| t.value(r)), bi, r));
        }
    }
    rows.sort();
    match format {
        Format::Zeek => {
            writeln!(out, "#separator \\x09")?;
            writeln!(out, "#set_separator\t,")?;
            writeln!(out, "#empty_field\t(empty)")?;
            writeln!(out, "#unset_field\t-")?;
            writeln!(out, "#path\t{path}")?;
            let names: Vec<&str> = cols.iter().map(|c| c.zeek).collect();
            let types: Vec<&str> = cols.iter().map(|c| c.zeek_type).collect();
            writeln!(out, "#fields\t{}", names.join("\t"))?;
            writeln!(out, "#types\t{}", types.join("\t"))?;
        }
        Format::Csv => {
            let names: Vec<&str> = cols.iter().map(|c| c.zeek).collect();
            writeln!(out, "{}", names.join(","))?;
        }
        Format::Json => {}
    }
    for (_, bi, r) in rows {
        let b = &batches[bi];
        let get = |name: &str| b.column_by_name(name).map(|a| value(a, r)).unwrap_or(Val::Null);
        let gated = log == LogKind::Conn && !matches!(get("duration"), Val::F(d) if d > 0.0);
        match format {
            Format::Zeek => {
                let cells: Vec<String> = cols
                    .iter()
                    .map(|c| {
                        let empty_history =
                            c.ours == "history" && matches!(get("history"), Val::Str(ref h) if h.is_empty());
                        if empty_history || (c.kind == Kind::DurationGated && gated) {
                            "-".into()
                        } else {
                            zeek_cell(&get(c.ours), c.kind)
                        }
                    })
                    .collect();
                writeln!(out, "{}", cells.join("\t"))?;
            }
            Format::Json => {
                let mut m = serde_json::Map::new();
                for c in &cols {
                    let v = get(c.ours);
                    if matches!(v, Val::Null) || (c.kind == Kind::DurationGated && gated) {
                        continue;
                    }
                    m.insert(c.zeek.to_string(), json_val(&v));
                }
                writeln!(out, "{}", serde_json::Value::Object(m))?;
            }
            Format::Csv => {
                let cells: Vec<String> = cols.iter().map(|c| csv_cell(&get(c.ours))).collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
    }
    Ok(())
}
