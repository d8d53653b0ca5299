//! SQL functions for network analysis (documented in docs/sql.md).
//!
//! - `cidr_contains(net, ip)`: is `ip` inside `net` (`10.0.0.0/8`,
//!   `2001:db8::/32`, or a bare address)? NULL when either side is NULL or
//!   unparseable.
//! - `ip_to_int(ip)`: an IPv4 address as an unsigned integer (NULL for IPv6
//!   and bad input); `int_to_ip(n)`: back to dotted text.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, StringArray, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::datatypes::FieldRef;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    SimpleScalarUDF, TypeSignature, Volatility, create_udf, lit,
};
use datafusion::prelude::SessionContext;

/// A parsed network: address bytes (IPv4 in the first 4), family, prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    v6: bool,
    addr: [u8; 16],
    prefix: u8,
}

fn bytes(a: IpAddr) -> (bool, [u8; 16]) {
    match a {
        IpAddr::V4(v) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v.octets());
            (false, b)
        }
        IpAddr::V6(v) => (true, v.octets()),
    }
}

impl Net {
    pub fn parse(s: &str) -> Option<Net> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let (v6, addr) = bytes(a.parse().ok()?);
        let max = if v6 { 128 } else { 32 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|&x| x <= max)?,
            None => max,
        };
        Some(Net { v6, addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, a) = bytes(ip);
        if v6 != self.v6 {
            return false;
        }
        let full = (self.prefix / 8) as usize;
        if a[..full] != self.addr[..full] {
            return false;
        }
        let rem = self.prefix % 8;
        rem == 0 || (a[full] ^ self.addr[full]) & (0xffu8 << (8 - rem)) == 0
    }
}

fn strings(a: &ArrayRef) -> Result<StringArray, DataFusionError> {
    let c = cast(a, &DataType::Utf8)?;
    Ok(c.as_any().downcast_ref::<StringArray>().cloned().expect("cast to Utf8 gives a StringArray"))
}

/// Dotted-quad IPv4 text as a number, without the general parser (the
/// common case in a scan of millions of addresses); None for anything else.
#[inline]
fn fast_v4(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if b.len() < 7 || b.len() > 15 {
        return None;
    }
    let (mut out, mut octet, mut digits, mut dots) = (0u32, 0u32, 0u8, 0u8);
    for &c in b {
        match c {
            b'0'..=b'9' => {
                // No leading zeros (`010` is not canonical), at most 255.
                if digits == 1 && octet == 0 {
                    return None;
                }
                octet = octet * 10 + u32::from(c - b'0');
                digits += 1;
                if octet > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && dots < 3 => {
                out = out << 8 | octet;
                (octet, digits) = (0, 0);
                dots += 1;
            }
            _ => return None,
        }
    }
    (dots == 3 && digits > 0).then_some(out << 8 | octet)
}

impl Net {
    /// Does the address in `text` fall inside? None when it is no address.
    #[inline]
    fn contains_text(&self, text: &str) -> Option<bool> {
        if !self.v6
            && let Some(a) = fast_v4(text)
        {
            let net = u32::from_be_bytes([self.addr[0], self.addr[1], self.addr[2], self.addr[3]]);
            let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
            return Some(a & mask == net & mask);
        }
        text.parse::<IpAddr>().ok().map(|ip| self.contains(ip))
    }
}

const CIDR_CONTAINS: &str = "cidr_contains";

/// Where the canonical text of a network's IPv4 addresses lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextRange {
    /// One address (a /32).
    Exact(String),
    /// From `.0` (inclusive) to `.1` (exclusive).
    Between(String, String),
}

impl Net {
    /// The text range every IPv4 address inside falls in, in its canonical
    /// dotted form: dotted quads sort as text, not as numbers (`10.1.…` <
    /// `10.10.…` < `10.2.…`), so the members of a network are a text range
    /// only through its first varying octet (a superset past it). None for
    /// IPv6 and for the whole IPv4 space.
    pub fn text_range(&self) -> Option<TextRange> {
        if self.v6 || self.prefix == 0 {
            return None;
        }
        let full = usize::from(self.prefix / 8);
        let rem = self.prefix % 8;
        let fixed: Vec<String> = self.addr[..full].iter().map(u8::to_string).collect();
        if full == 4 {
            return Some(TextRange::Exact(fixed.join(".")));
        }
        let mut prefix = fixed.join(".");
        if full > 0 {
            prefix.push('.');
        }
        Some(if rem == 0 {
            // Every member starts with `a.b.`; `/` follows `.` in ASCII.
            let mut hi = prefix.clone();
            hi.pop();
            hi.push('/');
            TextRange::Between(prefix, hi)
        } else {
            // The varying octet's values, smallest and largest as text; a
            // member goes on with `.` (below any digit) or ends there.
            let first = u16::from(self.addr[full] & (0xffu8 << (8 - rem)));
            let values = (first..first + (1u16 << (8 - rem))).map(|v| v.to_string());
            let min = values.clone().min().expect("at least one value");
            let max = values.max().expect("at least one value");
            TextRange::Between(format!("{prefix}{min}"), format!("{prefix}{max}/"))
        })
    }

    /// [`Net::text_range`] as a condition on `text`.
    ///
    /// `ty` is the column's string layout: the bounds are literals of that
    /// type, because the condition is added after type coercion and the
    /// Parquet pruning drops a comparison of two string layouts.
    pub fn text_guard(&self, text: Expr, ty: &DataType) -> Option<Expr> {
        use datafusion::common::ScalarValue;
        let as_ty = |s: String| {
            lit(match ty {
                DataType::Utf8View => ScalarValue::Utf8View(Some(s)),
                DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(s)),
                _ => ScalarValue::Utf8(Some(s)),
            })
        };
        Some(match self.text_range()? {
            TextRange::Exact(s) => text.eq(as_ty(s)),
            TextRange::Between(lo, hi) => text.clone().gt_eq(as_ty(lo)).and(text.lt(as_ty(hi))),
        })
    }
}

/// Conditions (each one conjunct) implied by `e`, one of a filter's
/// conjuncts, that the Parquet statistics can prune with: for
/// `cidr_contains('<IPv4 net>', column)`, the column's text range
/// ([`Net::text_guard`]). Given to the Parquet scan beside the filter,
/// never instead of it: they hold for every row the filter keeps, so the
/// answer is the same and whole row groups and pages of other addresses
/// are skipped (each row group of a compacted hour is sorted by the
/// originator address).
pub fn address_bounds(e: &Expr, schema: &arrow::datatypes::Schema) -> Vec<Expr> {
    use datafusion::common::ScalarValue;
    match e {
        Expr::ScalarFunction(f) if f.name() == CIDR_CONTAINS && f.args.len() == 2 => {
            let net = match &f.args[0] {
                Expr::Literal(ScalarValue::Utf8(Some(n)) | ScalarValue::Utf8View(Some(n)), _) => Net::parse(n),
                _ => None,
            };
            match (net, &f.args[1]) {
                (Some(net), Expr::Column(c)) => match schema.field_with_name(&c.name) {
                    Ok(f) => net
                        .text_guard(Expr::Column(c.clone()), f.data_type())
                        .map(datafusion::logical_expr::utils::split_conjunction_owned)
                        .unwrap_or_default(),
                    Err(_) => Vec::new(),
                },
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// Call `f` with each value of a text column (any of Arrow's string
/// layouts), without copying the strings.
fn each_str(a: &ArrayRef, mut f: impl FnMut(Option<&str>)) -> Result<(), DataFusionError> {
    use arrow::array::AsArray;
    match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().iter().for_each(f),
        DataType::LargeUtf8 => a.as_string::<i64>().iter().for_each(f),
        DataType::Utf8View => a.as_string_view().iter().for_each(f),
        _ => strings(a)?.iter().for_each(&mut f),
    }
    Ok(())
}

/// `net` contains each of `len` addresses: null for a null or a
/// non-address, or when there is no network. A compacted hour's row groups
/// are each sorted by `orig_h`, so an address comes in runs: a run is found
/// with `same(first, i)`, tested once (`text(first)`) and answered with one
/// append.
fn contains_runs<'a>(
    len: usize,
    nulls: Option<arrow::buffer::NullBuffer>,
    same: impl Fn(usize, usize) -> bool,
    text: impl Fn(usize) -> &'a [u8],
    net: Option<&Net>,
) -> BooleanArray {
    let Some(n) = net else { return BooleanArray::new_null(len) };
    let mut bits = arrow::array::BooleanBufferBuilder::new(len);
    let mut valid = arrow::array::NullBufferBuilder::new(len);
    let is_null = |i: usize| nulls.as_ref().is_some_and(|b| b.is_null(i));
    let mut i = 0;
    while i < len {
        if is_null(i) {
            bits.append(false);
            valid.append_null();
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < len && !is_null(end) && same(i, end) {
            end += 1;
        }
        match std::str::from_utf8(text(i)).ok().and_then(|t| n.contains_text(t)) {
            Some(inside) => {
                bits.append_n(end - i, inside);
                valid.append_n_non_nulls(end - i);
            }
            None => {
                bits.append_n(end - i, false);
                valid.append_n_nulls(end - i);
            }
        }
        i = end;
    }
    BooleanArray::new(bits.finish(), valid.finish())
}

/// [`contains_runs`] over offsets and bytes (`Utf8`, `LargeUtf8`).
fn contains_offsets<O: arrow::array::OffsetSizeTrait>(
    ips: &arrow::array::GenericStringArray<O>,
    net: Option<&Net>,
) -> BooleanArray {
    let (offsets, values) = (ips.value_offsets(), ips.value_data());
    let text = |i: usize| &values[offsets[i].as_usize()..offsets[i + 1].as_usize()];
    contains_runs(ips.len(), ips.logical_nulls(), |a, b| same_text(text(a), text(b)), text, net)
}

/// [`contains_runs`] over `Utf8View`: text of up to 12 bytes (most IPv4
/// addresses) lies inside its 16-byte view, so a run of one such address
/// is found by comparing views, without reading the text.
fn contains_views(ips: &arrow::array::StringViewArray, net: Option<&Net>) -> BooleanArray {
    let views = ips.views();
    let same = |a: usize, b: usize| {
        let (va, vb) = (views[a], views[b]);
        if (va as u32) <= 12 { va == vb } else { same_text(ips.value(a).as_bytes(), ips.value(b).as_bytes()) }
    };
    contains_runs(ips.len(), ips.logical_nulls(), same, |i| ips.value(i).as_bytes(), net)
}

/// `a == b`, without a call to `memcmp` for text of 8 to 16 bytes (most
/// address text): two overlapping 8-byte words each.
#[inline]
fn same_text(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

fn cidr_contains(args: &[ColumnarValue]) -> Result<ColumnarValue, DataFusionError> {
    // The usual call: a constant network over a column of addresses.
    if let ColumnarValue::Scalar(s) = &args[0] {
        let net = if s.is_null() { None } else { Net::parse(&s.to_string()) };
        let ips = match &args[1] {
            ColumnarValue::Array(a) => a.clone(),
            ColumnarValue::Scalar(v) => v.to_array()?,
        };
        let out = {
            use arrow::array::AsArray;
            let n = net.as_ref();
            match ips.data_type() {
                DataType::Utf8 => contains_offsets(ips.as_string::<i32>(), n),
                DataType::LargeUtf8 => contains_offsets(ips.as_string::<i64>(), n),
                DataType::Utf8View => contains_views(ips.as_string_view(), n),
                _ => contains_offsets(&strings(&ips)?, n),
            }
        };
        let out = Arc::new(out) as ArrayRef;
        return Ok(match &args[1] {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(out),
        });
    }
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let nets = strings(&arrays[0])?;
    let ips = strings(&arrays[1])?;
    let out: BooleanArray = (0..ips.len())
        .map(|i| {
            if ips.is_null(i) || nets.is_null(i) {
                return None;
            }
            Net::parse(nets.value(i))?.contains_text(ips.value(i))
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

fn ip_to_int(args: &[ColumnarValue]) -> Result<ColumnarValue, DataFusionError> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let ips = strings(&arrays[0])?;
    let out: UInt64Array =
        ips.iter().map(|v| v.and_then(|s| s.parse::<Ipv4Addr>().ok()).map(|a| u32::from(a) as u64)).collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

fn int_to_ip(args: &[ColumnarValue]) -> Result<ColumnarValue, DataFusionError> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let n = cast(&arrays[0], &DataType::Int64)?;
    let n = n.as_any().downcast_ref::<arrow::array::Int64Array>().expect("cast to Int64");
    let out: StringArray =
        n.iter().map(|v| v.and_then(|x| u32::try_from(x).ok()).map(|x| Ipv4Addr::from(x).to_string())).collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

/// `country(ip)` and `asn(ip)` over `geo`; without databases they fail
/// with a message saying how to get one.
pub fn geo_functions(geo: Option<Arc<tapstream_engine::geo::Geo>>) -> Vec<ScalarUDF> {
    let lookup = |name: &'static str, g: Option<Arc<tapstream_engine::geo::Geo>>, out: DataType| {
        let f = move |args: &[ColumnarValue]| -> Result<ColumnarValue, DataFusionError> {
            let Some(g) = &g else {
                return Err(DataFusionError::Execution(format!(
                    "{name}(): no GeoIP database (scripts/geoip.sh installs the free ones; or set geoip.country_db / geoip.asn_db)"
                )));
            };
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let parse = |s: &str| -> Option<([u8; 16], bool)> {
                match s.parse::<std::net::IpAddr>().ok()? {
                    std::net::IpAddr::V4(v) => {
                        let mut a = [0u8; 16];
                        a[..4].copy_from_slice(&v.octets());
                        Some((a, false))
                    }
                    std::net::IpAddr::V6(v) => Some((v.octets(), true)),
                }
            };
            let out: ArrayRef = if name == "country" {
                let mut b = arrow::array::StringBuilder::new();
                each_str(&arrays[0], |ip| match ip.and_then(parse).and_then(|(a, v6)| g.country(&a, v6)) {
                    Some(c) => b.append_value(std::str::from_utf8(&c).unwrap_or("")),
                    None => b.append_null(),
                })?;
                Arc::new(b.finish())
            } else {
                let mut b = arrow::array::UInt32Builder::new();
                each_str(&arrays[0], |ip| b.append_option(ip.and_then(parse).and_then(|(a, v6)| g.asn(&a, v6))))?;
                Arc::new(b.finish())
            };
            Ok(ColumnarValue::Array(out))
        };
        create_udf(name, vec![DataType::Utf8], out, Volatility::Immutable, Arc::new(f))
    };
    vec![lookup("country", geo.clone(), DataType::Utf8), lookup("asn", geo, DataType::UInt32)]
}

/// DataFusion's `date_trunc`, with the work of a scan done as arithmetic
/// for `hour` and `day` over UTC timestamps. Ours carry the zone `UTC`, and
/// DataFusion takes its fast path for those units only when a timestamp has
/// no zone at all, converting each value through the time-zone database
/// otherwise: most of the time of `GROUP BY date_trunc('hour', ts)` over a
/// week of flows. In UTC an hour and a day are fixed lengths, so the answer
/// is the same; anything else is handed to DataFusion's own function.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UtcDateTrunc {
    inner: ScalarUDF,
}

fn is_utc(tz: &str) -> bool {
    tz.eq_ignore_ascii_case("UTC") || matches!(tz, "+00:00" | "Z" | "Etc/UTC" | "+0000" | "+00")
}

impl UtcDateTrunc {
    /// The truncated array, when the call is one the arithmetic answers.
    fn fast(args: &ScalarFunctionArgs) -> Option<ArrayRef> {
        use arrow::array::AsArray;
        use arrow::datatypes::{
            TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
        };
        use datafusion::common::ScalarValue;
        let [ColumnarValue::Scalar(granularity), ColumnarValue::Array(a)] = args.args.as_slice() else {
            return None;
        };
        let (ScalarValue::Utf8(Some(g)) | ScalarValue::Utf8View(Some(g)) | ScalarValue::LargeUtf8(Some(g))) =
            granularity
        else {
            return None;
        };
        let secs: i64 = match g.to_ascii_lowercase().as_str() {
            "hour" => 3600,
            "day" => 86_400,
            _ => return None,
        };
        let DataType::Timestamp(unit, Some(tz)) = a.data_type() else { return None };
        if !is_utc(tz) {
            return None;
        }
        let tz = Some(tz.clone());
        let trunc = |step: i64| move |v: i64| v - v.rem_euclid(step);
        Some(match unit {
            TimeUnit::Second => Arc::new(
                a.as_primitive::<TimestampSecondType>()
                    .unary::<_, TimestampSecondType>(trunc(secs))
                    .with_timezone_opt(tz),
            ),
            TimeUnit::Millisecond => Arc::new(
                a.as_primitive::<TimestampMillisecondType>()
                    .unary::<_, TimestampMillisecondType>(trunc(secs * 1_000))
                    .with_timezone_opt(tz),
            ),
            TimeUnit::Microsecond => Arc::new(
                a.as_primitive::<TimestampMicrosecondType>()
                    .unary::<_, TimestampMicrosecondType>(trunc(secs * 1_000_000))
                    .with_timezone_opt(tz),
            ),
            TimeUnit::Nanosecond => Arc::new(
                a.as_primitive::<TimestampNanosecondType>()
                    .unary::<_, TimestampNanosecondType>(trunc(secs * 1_000_000_000))
                    .with_timezone_opt(tz),
            ),
        })
    }
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> datafusion::error::Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        match Self::fast(&args) {
            Some(a) => Ok(ColumnarValue::Array(a)),
            None => self.inner.invoke_with_args(args),
        }
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn output_ordering(&self, inputs: &[ExprProperties]) -> datafusion::error::Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> datafusion::error::Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// The functions, ready to register.
pub fn functions() -> Vec<ScalarUDF> {
    // Any of Arrow's string layouts on either side, taken as they come: a
    // cast of a scanned column (read as Utf8View) would copy every address.
    let text = [DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8];
    let pairs =
        text.iter().flat_map(|a| text.iter().map(move |b| TypeSignature::Exact(vec![a.clone(), b.clone()]))).collect();
    vec![
        ScalarUDF::from(SimpleScalarUDF::new_with_signature(
            CIDR_CONTAINS,
            Signature::one_of(pairs, Volatility::Immutable),
            DataType::Boolean,
            Arc::new(cidr_contains),
        )),
        create_udf("ip_to_int", vec![DataType::Utf8], DataType::UInt64, Volatility::Immutable, Arc::new(ip_to_int)),
        create_udf("int_to_ip", vec![DataType::Int64], DataType::Utf8, Volatility::Immutable, Arc::new(int_to_ip)),
    ]
}

pub fn register(ctx: &SessionContext) {
    for f in functions().into_iter().chain(geo_functions(None)) {
        ctx.register_udf(f);
    }
    // Replaces the built-in of the same name.
    ctx.register_udf(ScalarUDF::new_from_impl(UtcDateTrunc {
        inner: datafusion::functions::datetime::date_trunc().as_ref().clone(),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets() {
        let n = Net::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()) && !n.contains("10.2.0.1".parse().unwrap()));
        assert!(!n.contains("::ffff:10.1.0.1".parse().unwrap()));
        let n = Net::parse("2001:db8::/33").unwrap();
        assert!(n.contains("2001:db8:7fff::1".parse().unwrap()) && !n.contains("2001:db8:8000::1".parse().unwrap()));
        assert!(Net::parse("10.0.0.1").unwrap().contains("10.0.0.1".parse().unwrap()));
        assert_eq!(Net::parse("10.0.0.0/33"), None);
        assert_eq!(Net::parse("banana"), None);
        assert!(Net::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn every_member_of_a_network_lies_in_its_text_range() {
        // Deterministic pseudo-random networks and members.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..4000 {
            let base = next() as u32;
            let prefix = (next() % 33) as u8;
            let net = Net::parse(&format!("{}/{prefix}", Ipv4Addr::from(base))).expect("valid network");
            let range = net.text_range();
            assert_eq!(range.is_none(), prefix == 0);
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            for _ in 0..50 {
                let member = Ipv4Addr::from((base & mask) | (next() as u32 & !mask));
                assert!(net.contains(IpAddr::V4(member)));
                let t = member.to_string();
                match &range {
                    None => {}
                    Some(TextRange::Exact(s)) => assert_eq!(&t, s),
                    Some(TextRange::Between(lo, hi)) => {
                        assert!(
                            t.as_str() >= lo.as_str() && t.as_str() < hi.as_str(),
                            "{t} outside [{lo}, {hi}) of {net:?}"
                        )
                    }
                }
            }
        }
        // The ranges are tight where the octets are whole.
        let r = |s: &str| Net::parse(s).unwrap().text_range();
        assert_eq!(r("10.1.0.0/16"), Some(TextRange::Between("10.1.".into(), "10.1/".into())));
        assert_eq!(r("10.1.2.3/32"), Some(TextRange::Exact("10.1.2.3".into())));
        assert_eq!(r("10.16.0.0/12"), Some(TextRange::Between("10.16".into(), "10.31/".into())));
        assert_eq!(r("2001:db8::/32"), None);
    }

    /// Ours and DataFusion's own `date_trunc` agree on UTC timestamps (the
    /// arithmetic path) and on every other zone and unit (handed over).
    #[tokio::test]
    async fn date_trunc_agrees_with_datafusion_for_every_zone_and_unit() {
        use arrow::array::{RecordBatch, TimestampNanosecondArray};
        use arrow::datatypes::{Field, Schema, TimeUnit};
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let values: Vec<i64> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Around the epoch and today, both signs.
                (x % 4_000_000_000_000_000_000) as i64 - 1_000_000_000_000_000_000
            })
            .collect();
        for tz in ["UTC", "+00:00", "Europe/Berlin", "+05:30"] {
            let a = TimestampNanosecondArray::from(values.clone()).with_timezone(tz);
            let schema = Arc::new(Schema::new(vec![Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some(tz.into())),
                false,
            )]));
            let batch = RecordBatch::try_new(schema, vec![Arc::new(a)]).unwrap();
            let ours = SessionContext::new();
            register(&ours);
            let theirs = SessionContext::new();
            for ctx in [&ours, &theirs] {
                ctx.register_batch("t", batch.clone()).unwrap();
            }
            for unit in ["hour", "day", "HOUR", "minute", "month"] {
                let q = format!("SELECT date_trunc('{unit}', ts) AS d, date_trunc('{unit}', ts) = ts AS same FROM t");
                let a = ours.sql(&q).await.unwrap().collect().await.unwrap();
                let b = theirs.sql(&q).await.unwrap().collect().await.unwrap();
                assert_eq!(a, b, "{unit} in {tz}");
            }
        }
    }

    #[test]
    fn the_fast_ipv4_path_agrees_with_the_general_parser() {
        for t in [
            "10.1.2.3",
            "0.0.0.0",
            "255.255.255.255",
            "10.1.2",
            "10.1.2.3.4",
            "256.1.1.1",
            "01.1.1.1",
            "1..1.1",
            "1.1.1.",
            ".1.1.1",
            "a.b.c.d",
            "10.1.2.3 ",
            "::1",
            "::ffff:10.1.2.3",
            "1.2.3.04",
            "",
        ] {
            let std = t.parse::<Ipv4Addr>().ok().map(u32::from);
            assert_eq!(fast_v4(t), std, "{t:?}");
        }
        for (net, ip, inside) in [
            ("10.1.0.0/16", "10.1.255.3", Some(true)),
            ("10.1.0.0/16", "10.2.0.1", Some(false)),
            ("10.0.0.0/7", "11.9.9.9", Some(true)),
            ("0.0.0.0/0", "1.2.3.4", Some(true)),
            ("10.0.0.0/8", "2001:db8::1", Some(false)),
            ("2001:db8::/32", "2001:db8::1", Some(true)),
            ("10.0.0.0/8", "banana", None),
        ] {
            assert_eq!(Net::parse(net).unwrap().contains_text(ip), inside, "{net} {ip}");
        }
    }

    /// Over a column, runs of one address (a sorted hour) give the same
    /// answers as each value alone, across nulls and texts that are no
    /// address, in every string layout.
    #[test]
    fn cidr_contains_over_runs_answers_each_row_as_alone() {
        use arrow::array::{LargeStringArray, StringViewArray};
        let values = [
            Some("10.1.2.3"),
            Some("10.1.2.3"),
            Some("10.1.2.3"),
            None,
            Some("10.1.2.3"),
            Some("10.2.0.1"),
            Some("10.2.0.1"),
            Some("banana"),
            Some("banana"),
            Some("10.1.2.3"),
            Some("10.1.2.30"),
            Some("10.1.2.3"),
            None,
            None,
            Some("2001:db8::1"),
            Some("10.1.255.255"),
            // Equal lengths, differing in the first, middle or last bytes.
            Some("10.1.23.45"),
            Some("11.1.23.45"),
            Some("10.1.32.45"),
            Some("10.1.32.46"),
            Some("10.2.32.46"),
            Some("10.1.200.200"),
            Some("10.2.200.200"),
            // Longer than a string view holds inline.
            Some("192.168.100.200"),
            Some("192.168.100.200"),
            Some("192.168.100.201"),
            Some("10.1.2.3"),
            Some("192.168.100.201"),
            None,
            Some("192.168.100.201"),
        ];
        for net in ["10.1.0.0/16", "10.1.2.3/32", "10.1.32.45/32", "2001:db8::/32", "192.168.100.201/32"] {
            let n = Net::parse(net).unwrap();
            let want: BooleanArray = values.iter().map(|v| v.and_then(|t| n.contains_text(t))).collect();
            for column in [
                Arc::new(StringArray::from(values.to_vec())) as ArrayRef,
                Arc::new(LargeStringArray::from(values.to_vec())),
                Arc::new(StringViewArray::from(values.to_vec())),
            ] {
                let got = cidr_contains(&[
                    ColumnarValue::Scalar(datafusion::common::ScalarValue::Utf8(Some(net.into()))),
                    ColumnarValue::Array(column.clone()),
                ])
                .unwrap();
                let ColumnarValue::Array(got) = got else { panic!("an array") };
                assert_eq!(
                    got.as_any().downcast_ref::<BooleanArray>().unwrap(),
                    &want,
                    "{net} {:?}",
                    column.data_type()
                );
            }
        }
    }
}
