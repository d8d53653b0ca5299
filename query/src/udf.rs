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
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
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

fn cidr_contains(args: &[ColumnarValue]) -> Result<ColumnarValue, DataFusionError> {
    // The usual call: a constant network over a column of addresses.
    if let ColumnarValue::Scalar(s) = &args[0] {
        let net = if s.is_null() { None } else { Net::parse(&s.to_string()) };
        let ips = match &args[1] {
            ColumnarValue::Array(a) => a.clone(),
            ColumnarValue::Scalar(v) => v.to_array()?,
        };
        let mut out = arrow::array::BooleanBuilder::with_capacity(ips.len());
        each_str(&ips, |ip| out.append_option(net.and_then(|n| n.contains_text(ip?))))?;
        let out = Arc::new(out.finish()) as ArrayRef;
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

/// The functions, ready to register.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        create_udf(
            "cidr_contains",
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(cidr_contains),
        ),
        create_udf("ip_to_int", vec![DataType::Utf8], DataType::UInt64, Volatility::Immutable, Arc::new(ip_to_int)),
        create_udf("int_to_ip", vec![DataType::Int64], DataType::Utf8, Volatility::Immutable, Arc::new(int_to_ip)),
    ]
}

pub fn register(ctx: &SessionContext) {
    for f in functions().into_iter().chain(geo_functions(None)) {
        ctx.register_udf(f);
    }
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
}
