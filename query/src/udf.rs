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

fn cidr_contains(args: &[ColumnarValue]) -> Result<ColumnarValue, DataFusionError> {
    let scalar_net = match &args[0] {
        ColumnarValue::Scalar(s) if !s.is_null() => Some(Net::parse(&s.to_string())),
        _ => None,
    };
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let nets = strings(&arrays[0])?;
    let ips = strings(&arrays[1])?;
    let out: BooleanArray = (0..ips.len())
        .map(|i| {
            if ips.is_null(i) || nets.is_null(i) {
                return None;
            }
            let net = match scalar_net {
                Some(n) => n,
                None => Net::parse(nets.value(i)),
            }?;
            let ip: IpAddr = ips.value(i).parse().ok()?;
            Some(net.contains(ip))
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
    for f in functions() {
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
}
