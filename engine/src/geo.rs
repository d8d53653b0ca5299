//! GeoIP: the country and autonomous system of an address, from MaxMind-
//! format (mmdb) databases — MaxMind's GeoLite2/GeoIP2 or the free
//! ip-location-db ones — or, for ASNs, the ip-location-db CSV ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("GeoIP database {path}: {msg}")]
    Open { path: String, msg: String },
    #[error("ASN ranges {path}, line {line}: {msg}")]
    Csv { path: String, line: usize, msg: String },
}

/// Where the databases are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoConfig {
    /// Country database (mmdb).
    pub country: Option<PathBuf>,
    /// ASN databases: an mmdb (GeoLite2-ASN), or CSV files of
    /// `start,end,asn,organisation` ranges (ip-location-db's asn package).
    pub asn: Vec<PathBuf>,
}

/// Where a country database keeps the ISO code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CountryKey {
    /// MaxMind: `country.iso_code` (falling back to `registered_country`).
    MaxMind,
    /// ip-location-db: `country_code`.
    Flat,
}

#[derive(Default)]
struct AsnRanges {
    v4: Vec<(u32, u32, u32, u32)>,
    v6: Vec<(u128, u128, u32, u32)>,
    orgs: Vec<String>,
}

fn find<T: Copy + Ord>(v: &[(T, T, u32, u32)], x: T) -> Option<(u32, u32)> {
    let i = v.partition_point(|r| r.0 <= x);
    let r = v.get(i.checked_sub(1)?)?;
    (x <= r.1).then_some((r.2, r.3))
}

/// Loaded GeoIP databases; lookups allocate nothing.
#[derive(Default)]
pub struct Geo {
    country: Option<(maxminddb::Reader<Vec<u8>>, CountryKey)>,
    asn_mmdb: Option<maxminddb::Reader<Vec<u8>>>,
    asn_ranges: AsnRanges,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo")
            .field("country", &self.country.as_ref().map(|c| c.1))
            .field("asn_mmdb", &self.asn_mmdb.is_some())
            .field("asn_ranges", &(self.asn_ranges.v4.len() + self.asn_ranges.v6.len()))
            .finish()
    }
}

fn ip(a: &[u8; 16], v6: bool) -> IpAddr {
    if v6 { IpAddr::V6(Ipv6Addr::from(*a)) } else { IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])) }
}

fn open_mmdb(p: &Path) -> Result<maxminddb::Reader<Vec<u8>>, GeoError> {
    maxminddb::Reader::open_readfile(p)
        .map_err(|e| GeoError::Open { path: p.display().to_string(), msg: e.to_string() })
}

fn load_csv(p: &Path, into: &mut AsnRanges) -> Result<(), GeoError> {
    let text =
        std::fs::read_to_string(p).map_err(|e| GeoError::Open { path: p.display().to_string(), msg: e.to_string() })?;
    let mut orgs: std::collections::HashMap<String, u32> =
        into.orgs.iter().enumerate().map(|(i, o)| (o.clone(), i as u32)).collect();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |msg: &str| GeoError::Csv { path: p.display().to_string(), line: i + 1, msg: msg.to_string() };
        let mut it = line.splitn(4, ',');
        let (Some(a), Some(b), Some(n)) = (it.next(), it.next(), it.next()) else {
            return Err(bad("expected start,end,asn,organisation"));
        };
        let org = it.next().unwrap_or("").trim().trim_matches('"').replace("\"\"", "\"");
        let asn: u32 = n.trim().parse().map_err(|_| bad("the ASN is not a number"))?;
        let next = orgs.len() as u32;
        let o = *orgs.entry(org.clone()).or_insert_with(|| {
            into.orgs.push(org);
            next
        });
        // Either addresses or their numbers (the `-num` files).
        match (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>()) {
            (Ok(IpAddr::V4(x)), Ok(IpAddr::V4(y))) => into.v4.push((x.into(), y.into(), asn, o)),
            (Ok(IpAddr::V6(x)), Ok(IpAddr::V6(y))) => into.v6.push((x.into(), y.into(), asn, o)),
            _ => match (a.trim().parse::<u128>(), b.trim().parse::<u128>()) {
                (Ok(x), Ok(y)) if y <= u32::MAX as u128 && p.to_string_lossy().contains("ipv4") => {
                    into.v4.push((x as u32, y as u32, asn, o))
                }
                (Ok(x), Ok(y)) => into.v6.push((x, y, asn, o)),
                _ => return Err(bad("start and end must be addresses of one family")),
            },
        }
    }
    Ok(())
}

impl Geo {
    pub fn open(cfg: &GeoConfig) -> Result<Geo, GeoError> {
        let mut g = Geo::default();
        if let Some(p) = &cfg.country {
            let r = open_mmdb(p)?;
            // Which layout: try both on a few well-known addresses.
            let mut key = CountryKey::Flat;
            for probe in ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "81.2.69.142"] {
                let a: IpAddr = probe.parse().expect("static address");
                if let Ok(res) = r.lookup(a)
                    && res.decode_path::<&str>(&maxminddb::path!["country", "iso_code"]).ok().flatten().is_some()
                {
                    key = CountryKey::MaxMind;
                    break;
                }
            }
            g.country = Some((r, key));
        }
        for p in &cfg.asn {
            let is_mmdb = std::fs::File::open(p)
                .and_then(|mut f| {
                    use std::io::Read;
                    let mut head = [0u8; 16];
                    let n = f.read(&mut head)?;
                    Ok(!head[..n].iter().all(|b| b.is_ascii()))
                })
                .map_err(|e| GeoError::Open { path: p.display().to_string(), msg: e.to_string() })?;
            if is_mmdb {
                g.asn_mmdb = Some(open_mmdb(p)?);
            } else {
                load_csv(p, &mut g.asn_ranges)?;
            }
        }
        g.asn_ranges.v4.sort_unstable();
        g.asn_ranges.v6.sort_unstable();
        Ok(g)
    }

    pub fn has_country(&self) -> bool {
        self.country.is_some()
    }

    pub fn has_asn(&self) -> bool {
        self.asn_mmdb.is_some() || !self.asn_ranges.v4.is_empty() || !self.asn_ranges.v6.is_empty()
    }

    /// ISO 3166 code of the country an address is registered in.
    pub fn country(&self, a: &[u8; 16], v6: bool) -> Option<[u8; 2]> {
        let (r, key) = self.country.as_ref()?;
        let res = r.lookup(ip(a, v6)).ok()?;
        let code: Option<&str> = match key {
            CountryKey::Flat => res.decode_path(&maxminddb::path!["country_code"]).ok().flatten(),
            CountryKey::MaxMind => res
                .decode_path(&maxminddb::path!["country", "iso_code"])
                .ok()
                .flatten()
                .or_else(|| res.decode_path(&maxminddb::path!["registered_country", "iso_code"]).ok().flatten()),
        };
        let b = code?.as_bytes();
        (b.len() == 2).then(|| [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()])
    }

    /// The autonomous system number announcing an address.
    pub fn asn(&self, a: &[u8; 16], v6: bool) -> Option<u32> {
        self.asn_full(a, v6).map(|x| x.0)
    }

    /// The AS number and its organisation.
    pub fn asn_full(&self, a: &[u8; 16], v6: bool) -> Option<(u32, &str)> {
        let hit = if v6 {
            find(&self.asn_ranges.v6, u128::from_be_bytes(*a))
        } else {
            find(&self.asn_ranges.v4, u32::from_be_bytes([a[0], a[1], a[2], a[3]]))
        };
        if let Some((n, o)) = hit {
            return Some((n, self.asn_ranges.orgs.get(o as usize).map_or("", String::as_str)));
        }
        let r = self.asn_mmdb.as_ref()?;
        let res = r.lookup(ip(a, v6)).ok()?;
        let n: u32 = res.decode_path(&maxminddb::path!["autonomous_system_number"]).ok().flatten()?;
        let org: &str =
            res.decode_path(&maxminddb::path!["autonomous_system_organization"]).ok().flatten().unwrap_or("");
        Some((n, org))
    }

    /// The country of an address given as text (alerts list addresses so).
    pub fn country_of(&self, text: &str) -> Option<String> {
        let (a, v6) = match text.parse::<IpAddr>().ok()? {
            IpAddr::V4(v) => {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&v.octets());
                (a, false)
            }
            IpAddr::V6(v) => (v.octets(), true),
        };
        self.country_str(&a, v6)
    }

    /// Country code as text.
    pub fn country_str(&self, a: &[u8; 16], v6: bool) -> Option<String> {
        self.country(a, v6).map(|c| String::from_utf8_lossy(&c).into_owned())
    }
}

/// Where `tapstream`'s setup installs the free databases (the npm packages
/// `@ip-location-db/geo-whois-asn-country-mmdb` and `@ip-location-db/asn`),
/// under `base`: found there when no path is configured.
pub fn installed(base: &Path) -> GeoConfig {
    let m = base.join("node_modules/@ip-location-db");
    let country = m.join("geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb");
    let asn: Vec<PathBuf> =
        ["asn/asn-ipv4.csv", "asn/asn-ipv6.csv"].iter().map(|f| m.join(f)).filter(|p| p.exists()).collect();
    GeoConfig { country: country.exists().then_some(country), asn }
}

/// A worker's cache of lookups in front of [`Geo`]: direct-mapped, fixed
/// size, allocated once. Traffic repeats its addresses (popular servers,
/// busy clients), so most flow records skip the database.
pub struct GeoLookup {
    geo: std::sync::Arc<Geo>,
    slots: Vec<Slot>,
    pub hits: u64,
    pub misses: u64,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u128,
    /// bit 0: used, bit 1: IPv6, bit 2: has a country, bit 3: has an AS.
    flags: u8,
    cc: [u8; 2],
    asn: u32,
}

const CACHE_SLOTS: usize = 1 << 14;

impl GeoLookup {
    pub fn new(geo: std::sync::Arc<Geo>) -> GeoLookup {
        GeoLookup { geo, slots: vec![Slot::default(); CACHE_SLOTS], hits: 0, misses: 0 }
    }

    /// Country and AS of an address.
    #[inline]
    pub fn get(&mut self, a: &[u8; 16], v6: bool) -> (Option<[u8; 2]>, Option<u32>) {
        let key = u128::from_be_bytes(*a);
        let tag = 1 | ((v6 as u8) << 1);
        let h = (key as u64 ^ (key >> 64) as u64 ^ v6 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let i = (h >> 50) as usize & (CACHE_SLOTS - 1);
        let s = self.slots[i];
        if s.flags & 3 == tag && s.key == key {
            self.hits += 1;
            return ((s.flags & 4 != 0).then_some(s.cc), (s.flags & 8 != 0).then_some(s.asn));
        }
        self.misses += 1;
        let cc = self.geo.country(a, v6);
        let asn = self.geo.asn(a, v6);
        self.slots[i] = Slot {
            key,
            flags: tag | if cc.is_some() { 4 } else { 0 } | if asn.is_some() { 8 } else { 0 },
            cc: cc.unwrap_or_default(),
            asn: asn.unwrap_or(0),
        };
        (cc, asn)
    }
}
