//! Flow columns that are stored only when they cannot be derived.
//!
//! Four columns of `flows` follow from others: `community_id` from the
//! five-tuple and the Community ID seed (kept in `community_id_seed`),
//! `duration` from `last_ts - ts`, `flow_start` from `ts` on every
//! record but those after an interim one, and `uid` from the five-tuple
//! and the connection's start ([`uid_of`]). Together they were two thirds
//! of a flows file (the two hashes half of it: they do not compress), so the
//! engine writes them as null where they are derivable and every reader
//! that shows them (SQL, exports, `tapstream flows`) fills them in with the
//! functions here. A stored value always wins: files written before this
//! layout, and imported rows whose values differ from the derivation, keep
//! theirs.
//!
//! Architecture Invariant: a flows batch is complete after [`complete`]:
//! no derived column is null where its sources are present.

use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringBuilder, TimestampNanosecondArray, UInt8Array,
    UInt16Array,
};
use arrow::datatypes::{DataType, Float64Type, TimestampNanosecondType, UInt8Type, UInt16Type};
use arrow::error::ArrowError;

use crate::flow::FlowKey;
use crate::flow::community_id::community_id_v1;

/// The stored-only column holding the seed the Community IDs derive from.
pub const SEED_COLUMN: &str = "community_id_seed";

/// Columns of `flows` that are null on disk where derivable.
pub const DERIVED: [&str; 4] = ["community_id", "duration", "flow_start", "uid"];

/// The columns each derived column is computed from (its stored value
/// first).
pub fn sources(column: &str) -> &'static [&'static str] {
    match column {
        "community_id" => &["community_id", SEED_COLUMN, "ip_proto", "orig_h", "orig_p", "resp_h", "resp_p"],
        "duration" => &["duration", "ts", "last_ts"],
        "flow_start" => &["flow_start", "ts"],
        "uid" => &["uid", "ip_proto", "orig_h", "orig_p", "resp_h", "resp_p", "flow_start", "ts"],
        _ => &[],
    }
}

/// The 16-byte form flow keys use (IPv4 in the first four bytes), and
/// whether it is IPv6.
pub fn octets(a: IpAddr) -> (bool, [u8; 16]) {
    let mut o = [0u8; 16];
    match a {
        IpAddr::V4(v4) => {
            o[..4].copy_from_slice(&v4.octets());
            (false, o)
        }
        IpAddr::V6(v6) => (true, v6.octets()),
    }
}

/// The Community ID of one flow row, as the engine computes it from the
/// flow's canonical key: `None` when the addresses do not parse or differ
/// in version.
pub fn community_id_of(
    seed: u16,
    ip_proto: u8,
    orig_h: &str,
    orig_p: u16,
    resp_h: &str,
    resp_p: u16,
) -> Option<String> {
    community_id_of_addrs(seed, ip_proto, orig_h.parse().ok()?, orig_p, resp_h.parse().ok()?, resp_p)
}

/// [`community_id_of`] for parsed addresses.
pub fn community_id_of_addrs(
    seed: u16,
    ip_proto: u8,
    orig_h: IpAddr,
    orig_p: u16,
    resp_h: IpAddr,
    resp_p: u16,
) -> Option<String> {
    let k = flow_key(ip_proto, orig_h, orig_p, resp_h, resp_p)?;
    Some(community_id_v1(seed, k.v6, &k.lo, &k.hi, k.proto, k.lo_port, k.hi_port))
}

/// A row's five-tuple as the engine keyed its flow (the lower address and
/// port first; VLAN 0); `None` when the addresses differ in version.
fn flow_key(ip_proto: u8, orig_h: IpAddr, orig_p: u16, resp_h: IpAddr, resp_p: u16) -> Option<FlowKey> {
    let (v6, o) = octets(orig_h);
    let (rv6, r) = octets(resp_h);
    if v6 != rv6 {
        return None;
    }
    let (lo, hi, lo_port, hi_port) =
        if (o, orig_p) <= (r, resp_p) { (o, r, orig_p, resp_p) } else { (r, o, resp_p, orig_p) };
    Some(FlowKey { lo, hi, lo_port, hi_port, proto: ip_proto, v6, vlan: 0 })
}

/// A connection's uid: a hash of its flow key's five-tuple (canonical: the
/// lower address and port first; not the VLAN, which rows do not carry as
/// keys do) and the time of its first packet, so every record of the
/// connection (interim ones included) and every protocol record on it
/// carry the same uid, and a reader can derive it from the flows row.
/// docs/schema.md spells out the same steps for outside readers: six
/// 64-bit words (each address as 16 bytes, IPv4 in the first four, read
/// big-endian in two halves; `proto << 32 | lo_port << 16 | hi_port`; the
/// start in ns), each folded in as `h = fmix64(h ^ w)` from `h = 0`.
pub fn uid_of(k: &FlowKey, start_ns: u64) -> u64 {
    let half = |a: &[u8; 16], i: usize| {
        u64::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5], a[i + 6], a[i + 7]])
    };
    let ports = u64::from(k.proto) << 32 | u64::from(k.lo_port) << 16 | u64::from(k.hi_port);
    [half(&k.lo, 0), half(&k.lo, 8), half(&k.hi, 0), half(&k.hi, 8), ports, start_ns]
        .into_iter()
        .fold(0, |h, w| fmix64(h ^ w))
}

/// MurmurHash3's 64-bit finaliser.
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// [`uid_of`] for a row's addresses and ports in either orientation;
/// `None` when the addresses differ in version.
pub fn uid_of_addrs(
    ip_proto: u8,
    orig_h: IpAddr,
    orig_p: u16,
    resp_h: IpAddr,
    resp_p: u16,
    start_ns: u64,
) -> Option<u64> {
    Some(uid_of(&flow_key(ip_proto, orig_h, orig_p, resp_h, resp_p)?, start_ns))
}

/// A uid as text: 'C' and eleven base62 digits, most significant first
/// (Zeek's uids are 'C' and base62 too).
pub fn uid_text(uid: u64) -> [u8; 12] {
    const A: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = [b'C'; 12];
    let mut n = uid;
    for c in s[1..].iter_mut().rev() {
        *c = A[(n % 62) as usize];
        n /= 62;
    }
    s
}

/// `uid` filled in: the stored value where there is one, else derived
/// (null only when the addresses do not parse or differ in version). Of
/// the stored column's type.
#[allow(clippy::too_many_arguments)]
pub fn uids(
    stored: &ArrayRef,
    ip_proto: &ArrayRef,
    orig_h: &ArrayRef,
    orig_p: &ArrayRef,
    resp_h: &ArrayRef,
    resp_p: &ArrayRef,
    flow_start: &ArrayRef,
    ts: &ArrayRef,
) -> Result<ArrayRef, ArrowError> {
    if stored.null_count() == 0 {
        return Ok(stored.clone());
    }
    let have = Strs::of("uid", stored)?;
    let mut tuples = FiveTuples::of(ip_proto, orig_h, orig_p, resp_h, resp_p)?;
    let start =
        flow_start.as_primitive_opt::<TimestampNanosecondType>().ok_or_else(|| not("flow_start", flow_start))?;
    let ts = ts.as_primitive_opt::<TimestampNanosecondType>().ok_or_else(|| not("ts", ts))?;
    let mut out = StringBuilder::with_capacity(stored.len(), stored.len() * 12);
    for i in 0..stored.len() {
        if let Some(v) = have.get(i) {
            out.append_value(v);
            continue;
        }
        let start = if start.is_valid(i) { Some(start.value(i)) } else { ts.is_valid(i).then(|| ts.value(i)) };
        let uid = start.and_then(|s| {
            let (proto, o, op, r, rp) = tuples.row(i)?;
            uid_of_addrs(proto, o, op, r, rp, s as u64)
        });
        match uid {
            Some(u) => out.append_value(std::str::from_utf8(&uid_text(u)).unwrap_or_default()),
            None => out.append_null(),
        }
    }
    cast(&(Arc::new(out.finish()) as ArrayRef), stored.data_type())
}

/// The five-tuple columns both hashes derive from, read row by row.
struct FiveTuples<'a> {
    ip_proto: UInt8Array,
    orig_h: Strs<'a>,
    orig_p: UInt16Array,
    resp_h: Strs<'a>,
    resp_p: UInt16Array,
    /// The last text parsed per end: rows of one connection or one host
    /// side by side (files sorted by address) parse it once.
    last: [Option<(&'a str, IpAddr)>; 2],
}

impl<'a> FiveTuples<'a> {
    fn of(
        ip_proto: &ArrayRef,
        orig_h: &'a ArrayRef,
        orig_p: &ArrayRef,
        resp_h: &'a ArrayRef,
        resp_p: &ArrayRef,
    ) -> Result<FiveTuples<'a>, ArrowError> {
        let u16s = |a: &ArrayRef| cast(a, &DataType::UInt16).map(|a| a.as_primitive::<UInt16Type>().clone());
        Ok(FiveTuples {
            ip_proto: cast(ip_proto, &DataType::UInt8)?.as_primitive::<UInt8Type>().clone(),
            orig_h: Strs::of("orig_h", orig_h)?,
            orig_p: u16s(orig_p)?,
            resp_h: Strs::of("resp_h", resp_h)?,
            resp_p: u16s(resp_p)?,
            last: [None, None],
        })
    }

    /// Row `i`'s protocol, addresses and ports (a null port reads 0);
    /// `None` without a protocol or with an address missing or not one.
    fn row(&mut self, i: usize) -> Option<(u8, IpAddr, u16, IpAddr, u16)> {
        if !self.ip_proto.is_valid(i) {
            return None;
        }
        let o = parse_cached(&mut self.last[0], self.orig_h.get(i)?)?;
        let r = parse_cached(&mut self.last[1], self.resp_h.get(i)?)?;
        let port = |a: &UInt16Array| if a.is_valid(i) { a.value(i) } else { 0 };
        Some((self.ip_proto.value(i), o, port(&self.orig_p), r, port(&self.resp_p)))
    }
}

/// `t` parsed, or the address parsed last if `t` is the same text.
fn parse_cached<'a>(last: &mut Option<(&'a str, IpAddr)>, t: &'a str) -> Option<IpAddr> {
    match *last {
        Some((s, a)) if s == t => Some(a),
        _ => {
            let a: IpAddr = t.parse().ok()?;
            *last = Some((t, a));
            Some(a)
        }
    }
}

/// The stored form of a uid: null where it equals what [`derive`] would
/// give (for writers of rows that did not come from the engine: imports).
pub fn store_uid(
    ip_proto: u8,
    orig_h: IpAddr,
    orig_p: u16,
    resp_h: IpAddr,
    resp_p: u16,
    start_ns: i64,
    uid: &str,
) -> Option<String> {
    let derived = uid_of_addrs(ip_proto, orig_h, orig_p, resp_h, resp_p, start_ns as u64).map(uid_text);
    (derived.as_ref().map(|d| &d[..]) != Some(uid.as_bytes())).then(|| uid.to_string())
}

fn cast(a: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if a.data_type() == to { Ok(a.clone()) } else { arrow::compute::cast(a, to) }
}

/// Text of any of Arrow's string layouts (scans read `Utf8View`).
enum Strs<'a> {
    Utf8(&'a arrow::array::StringArray),
    Large(&'a arrow::array::LargeStringArray),
    View(&'a arrow::array::StringViewArray),
}

impl<'a> Strs<'a> {
    fn of(name: &str, a: &'a ArrayRef) -> Result<Strs<'a>, ArrowError> {
        match a.data_type() {
            DataType::Utf8 => Ok(Strs::Utf8(a.as_string::<i32>())),
            DataType::LargeUtf8 => Ok(Strs::Large(a.as_string::<i64>())),
            DataType::Utf8View => Ok(Strs::View(a.as_string_view())),
            other => Err(ArrowError::InvalidArgumentError(format!("{name} is {other}, not text"))),
        }
    }
    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Strs::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Strs::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Strs::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// `community_id` filled in: the stored value where there is one, else
/// derived from the seed and five-tuple (null only when the row has no
/// seed or its addresses do not parse). Of the stored column's type.
pub fn community_ids(
    stored: &ArrayRef,
    seed: &ArrayRef,
    ip_proto: &ArrayRef,
    orig_h: &ArrayRef,
    orig_p: &ArrayRef,
    resp_h: &ArrayRef,
    resp_p: &ArrayRef,
) -> Result<ArrayRef, ArrowError> {
    if stored.null_count() == 0 {
        return Ok(stored.clone());
    }
    let have = Strs::of("community_id", stored)?;
    let seed = cast(seed, &DataType::UInt16)?;
    let seed = seed.as_primitive::<UInt16Type>();
    let mut tuples = FiveTuples::of(ip_proto, orig_h, orig_p, resp_h, resp_p)?;
    let mut out = StringBuilder::with_capacity(stored.len(), stored.len() * 30);
    for i in 0..stored.len() {
        if let Some(v) = have.get(i) {
            out.append_value(v);
            continue;
        }
        let id = match seed.is_valid(i) {
            true => tuples
                .row(i)
                .and_then(|(proto, o, op, r, rp)| community_id_of_addrs(seed.value(i), proto, o, op, r, rp)),
            false => None,
        };
        out.append_option(id);
    }
    cast(&(Arc::new(out.finish()) as ArrayRef), stored.data_type())
}

/// `duration` filled in: the stored value, else `last_ts - ts` in seconds
/// (never negative), as the engine computes it.
pub fn durations(stored: &ArrayRef, ts: &ArrayRef, last_ts: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let stored = cast(stored, &DataType::Float64)?;
    let stored = stored.as_primitive::<Float64Type>();
    if stored.null_count() == 0 {
        return Ok(Arc::new(stored.clone()));
    }
    let ts = ts.as_primitive_opt::<TimestampNanosecondType>().ok_or_else(|| not("ts", ts))?;
    let last = last_ts.as_primitive_opt::<TimestampNanosecondType>().ok_or_else(|| not("last_ts", last_ts))?;
    let out: Float64Array = (0..stored.len())
        .map(|i| {
            if stored.is_valid(i) {
                Some(stored.value(i))
            } else if ts.is_valid(i) && last.is_valid(i) {
                Some(last.value(i).saturating_sub(ts.value(i)).max(0) as f64 / 1e9)
            } else {
                None
            }
        })
        .collect();
    Ok(Arc::new(out))
}

/// `flow_start` filled in: the stored value, else `ts`.
pub fn flow_starts(stored: &ArrayRef, ts: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let stored = stored.as_primitive_opt::<TimestampNanosecondType>().ok_or_else(|| not("flow_start", stored))?;
    if stored.null_count() == 0 {
        return Ok(Arc::new(stored.clone()));
    }
    let ts = ts.as_primitive_opt::<TimestampNanosecondType>().ok_or_else(|| not("ts", ts))?;
    let out: TimestampNanosecondArray = stored
        .iter()
        .zip(ts.iter())
        .map(|(s, t)| s.or(t))
        .collect::<TimestampNanosecondArray>()
        .with_data_type(stored.data_type().clone());
    Ok(Arc::new(out))
}

fn not(name: &str, a: &ArrayRef) -> ArrowError {
    ArrowError::InvalidArgumentError(format!("{name} is {}, not a nanosecond timestamp", a.data_type()))
}

/// Derive `column` from its [`sources`], given in that order (the way
/// SQL's projection and [`derive`] both call it).
pub fn derive_from(column: &str, args: &[ArrayRef]) -> Result<ArrayRef, ArrowError> {
    match (column, args) {
        ("community_id", [stored, seed, proto, oh, op, rh, rp]) => community_ids(stored, seed, proto, oh, op, rh, rp),
        ("duration", [stored, ts, last]) => durations(stored, ts, last),
        ("flow_start", [stored, ts]) => flow_starts(stored, ts),
        ("uid", [stored, proto, oh, op, rh, rp, start, ts]) => uids(stored, proto, oh, op, rh, rp, start, ts),
        _ => Err(ArrowError::InvalidArgumentError(format!(
            "{column}: not a derived column taking {} arguments",
            args.len()
        ))),
    }
}

/// Derive one column from `batch` (which holds its [`sources`]; a batch
/// without the seed column derives no Community ID).
pub fn derive(batch: &RecordBatch, column: &str) -> Result<ArrayRef, ArrowError> {
    let args = sources(column)
        .iter()
        .map(|n| match batch.column_by_name(n) {
            Some(c) => Ok(c.clone()),
            None if *n == SEED_COLUMN => Ok(Arc::new(UInt16Array::new_null(batch.num_rows())) as ArrayRef),
            None => Err(ArrowError::SchemaError(format!("{column} needs the column {n}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    derive_from(column, &args)
}

/// A flows batch as stored, with every derived column filled in and the
/// seed column left out: what readers show.
pub fn complete(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut cols = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if f.name() == SEED_COLUMN {
            continue;
        }
        if DERIVED.contains(&f.name().as_str()) {
            cols.push(derive(batch, f.name())?);
        } else {
            cols.push(c.clone());
        }
        fields.push(f.clone());
    }
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols)
}

/// The stored form of a Community ID: null where it equals what
/// [`derive`] would give. For writers of rows that did not come from the
/// engine (imports), so a differing value is kept and nothing is lost.
pub fn store_community_id(
    seed: u16,
    ip_proto: u8,
    orig_h: IpAddr,
    orig_p: u16,
    resp_h: IpAddr,
    resp_p: u16,
    id: &str,
) -> Option<String> {
    (community_id_of_addrs(seed, ip_proto, orig_h, orig_p, resp_h, resp_p).as_deref() != Some(id))
        .then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    fn arr<A: Array + 'static>(a: A) -> ArrayRef {
        Arc::new(a)
    }

    #[test]
    fn stored_values_win_and_nulls_are_derived() {
        let ids = community_ids(
            &arr(StringArray::from(vec![Some("1:kept"), None, None])),
            &arr(UInt16Array::from(vec![Some(0), Some(0), None])),
            &arr(UInt8Array::from(vec![6, 6, 6])),
            &arr(StringArray::from(vec!["10.0.0.1", "10.0.0.1", "10.0.0.1"])),
            &arr(UInt16Array::from(vec![1234, 1234, 1234])),
            &arr(StringArray::from(vec!["10.0.0.2", "10.0.0.2", "10.0.0.2"])),
            &arr(UInt16Array::from(vec![80, 80, 80])),
        )
        .unwrap();
        let ids = ids.as_string::<i32>();
        assert_eq!(ids.value(0), "1:kept");
        // Either direction gives the same ID.
        let fwd = community_id_of(0, 6, "10.0.0.1", 1234, "10.0.0.2", 80).unwrap();
        assert_eq!(fwd, community_id_of(0, 6, "10.0.0.2", 80, "10.0.0.1", 1234).unwrap());
        assert_eq!(ids.value(1), fwd);
        // No seed (a row of an old file that lost its value): unknown.
        assert!(ids.is_null(2));
        assert_eq!(community_id_of(0, 6, "10.0.0.1", 1, "::1", 2), None);
        assert_eq!(community_id_of(0, 6, "bogus", 1, "10.0.0.1", 2), None);
    }

    #[test]
    fn durations_and_starts_follow_the_timestamps() {
        let ts = |v: Vec<Option<i64>>| arr(TimestampNanosecondArray::from(v).with_timezone("UTC"));
        let d = durations(
            &arr(Float64Array::from(vec![Some(9.5), None, None, None])),
            &ts(vec![Some(0), Some(1_000_000), Some(3_000_000_000), None]),
            &ts(vec![Some(5), Some(2_501_000_000), Some(2_000_000_000), Some(7)]),
        )
        .unwrap();
        let d = d.as_primitive::<Float64Type>();
        assert_eq!(d.value(0), 9.5);
        assert_eq!(d.value(1), 2.5);
        assert_eq!(d.value(2), 0.0, "never negative");
        assert!(d.is_null(3));
        let s = flow_starts(&ts(vec![Some(1), None]), &ts(vec![Some(5), Some(6)])).unwrap();
        let s = s.as_primitive::<TimestampNanosecondType>();
        assert_eq!((s.value(0), s.value(1)), (1, 6));
        assert_eq!(s.data_type(), &DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())));
    }

    #[test]
    fn a_stored_value_is_kept_only_where_it_differs() {
        let id = community_id_of(0, 17, "10.0.0.1", 53, "10.0.0.2", 5353).unwrap();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(store_community_id(0, 17, a, 53, b, 5353, &id), None);
        assert_eq!(store_community_id(7, 17, a, 53, b, 5353, &id), Some(id.clone()));
    }

    #[test]
    fn derived_ids_equal_the_engines_for_either_orientation() {
        use crate::decode::addr;
        use crate::flow::key::icmp_ports;
        use crate::records::key_community_id;
        let v4 = |a: [u8; 4]| {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&a);
            o
        };
        let v6 = |last: u8| {
            let mut o = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            o[15] = last;
            o
        };
        let mut keys = Vec::new();
        for (v6f, a, b) in [(false, v4([10, 0, 0, 9]), v4([192, 168, 1, 1])), (true, v6(1), v6(200))] {
            let icmp = if v6f { 58 } else { 1 };
            let mut ports = vec![(6, 443, 51000), (17, 53, 53), (17, 5353, 53), (47, 0, 0)];
            // Echo (a pair), unreachable (one-way) and a code-bearing type.
            for (ty, code) in [(8u8, 0u8), (128, 0), (3, 1), (1, 4), (11, 0)] {
                let (sp, dp) = icmp_ports(v6f, ty, code);
                ports.push((icmp, sp, dp));
            }
            for (proto, sp, dp) in ports {
                let (lo, hi, lo_port, hi_port) = if (a, sp) <= (b, dp) { (a, b, sp, dp) } else { (b, a, dp, sp) };
                keys.push(crate::flow::FlowKey { lo, hi, lo_port, hi_port, proto, v6: v6f, vlan: 0 });
            }
        }
        for seed in [0u16, 7] {
            for k in &keys {
                let want = key_community_id(seed, k);
                // The originator on either side of the canonical key.
                let uid = uid_of(k, 1_700_000_000_123_456_789);
                for (oh, op, rh, rp) in [(k.lo, k.lo_port, k.hi, k.hi_port), (k.hi, k.hi_port, k.lo, k.lo_port)] {
                    let (o, r) = (addr(k.v6, &oh).to_string(), addr(k.v6, &rh).to_string());
                    assert_eq!(community_id_of(seed, k.proto, &o, op, &r, rp).as_deref(), Some(want.as_str()), "{k:?}");
                    let (o, r) = (o.parse().unwrap(), r.parse().unwrap());
                    assert_eq!(uid_of_addrs(k.proto, o, op, r, rp, 1_700_000_000_123_456_789), Some(uid), "{k:?}");
                }
            }
        }
    }

    #[test]
    fn uids_are_derived_from_the_five_tuple_and_start_and_stored_ones_win() {
        let ts = |v: Vec<Option<i64>>| arr(TimestampNanosecondArray::from(v).with_timezone("UTC"));
        let start = 1_700_000_000_000_000_000i64;
        let u = uids(
            &arr(StringArray::from(vec![Some("Ckept"), None, None, None, None, None])),
            &arr(UInt8Array::from(vec![6, 6, 6, 6, 6, 17])),
            &arr(StringArray::from(vec!["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.1", "bogus", "10.0.0.1"])),
            &arr(UInt16Array::from(vec![1234, 1234, 80, 1234, 1, 1234])),
            &arr(StringArray::from(vec!["10.0.0.2", "10.0.0.2", "10.0.0.1", "10.0.0.2", "10.0.0.2", "10.0.0.2"])),
            &arr(UInt16Array::from(vec![80, 80, 1234, 80, 2, 80])),
            // An interim continuation: its start is stored, its ts later.
            &ts(vec![None, None, None, Some(start), None, None]),
            &ts(vec![Some(start), Some(start), Some(start), Some(start + 60_000_000_000), Some(start), Some(start)]),
        )
        .unwrap();
        let u = u.as_string::<i32>();
        assert_eq!(u.value(0), "Ckept");
        let want = uid_of_addrs(6, "10.0.0.1".parse().unwrap(), 1234, "10.0.0.2".parse().unwrap(), 80, start as u64);
        let want = String::from_utf8(uid_text(want.unwrap()).to_vec()).unwrap();
        assert_eq!(want.len(), 12);
        assert!(want.starts_with('C') && want.bytes().all(|b| b.is_ascii_alphanumeric()), "{want}");
        // Either orientation, and every record of the connection.
        assert_eq!((u.value(1), u.value(2), u.value(3)), (want.as_str(), want.as_str(), want.as_str()));
        assert!(u.is_null(4), "an address that does not parse derives nothing");
        assert_ne!(u.value(5), want, "another protocol is another connection");
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(store_uid(6, a, 1234, b, 80, start, &want), None);
        assert_eq!(store_uid(6, a, 1234, b, 80, start + 1, &want), Some(want.clone()));
        assert_eq!(store_uid(6, a, 1234, b, 80, start, "Cimported"), Some("Cimported".to_string()));
    }
}
