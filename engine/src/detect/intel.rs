//! Threat intelligence: IP/CIDR and domain indicators loaded from feed files
//! in the common formats, matched against every second's conversations and
//! names in the aggregation stage.
//!
//! IPs and networks become sorted, disjoint ranges (a lookup is one binary
//! search); domains a hash map looked up for the name and each parent.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How a feed file is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeedFormat {
    /// Decide from the content: JSON lines, abuse.ch CSV, hosts file, or a
    /// plain list.
    #[default]
    Auto,
    /// One IP, CIDR or domain per line; `#` and `;` start comments (this
    /// also reads Spamhaus DROP: `1.10.16.0/20 ; SBL256894`).
    Plain,
    /// `0.0.0.0 bad.example` / `127.0.0.1 bad.example` lines.
    Hosts,
    /// abuse.ch CSV exports (Feodo Tracker, URLhaus, ThreatFox, SSLBL IPs):
    /// the indicator column is found by its header name.
    AbuseChCsv,
    /// One JSON object per line with a `cidr`, `ip`, `domain` or
    /// `ioc_value` field (Spamhaus DROP JSON).
    JsonLines,
}

impl FeedFormat {
    pub fn from_name(s: &str) -> Option<FeedFormat> {
        Some(match s {
            "auto" => FeedFormat::Auto,
            "plain" | "spamhaus-drop" => FeedFormat::Plain,
            "hosts" => FeedFormat::Hosts,
            "abusech-csv" => FeedFormat::AbuseChCsv,
            "json-lines" => FeedFormat::JsonLines,
            _ => return None,
        })
    }
}

/// A feed to load.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedSpec {
    /// Shown in alerts ("listed by NAME").
    pub name: String,
    pub path: PathBuf,
    pub format: FeedFormat,
}

/// What loading one feed found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeedReport {
    pub name: String,
    pub networks: usize,
    pub domains: usize,
    /// Lines that held no indicator we could read: (line number, text).
    pub bad_lines: Vec<(usize, String)>,
    pub bad_count: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum IntelError {
    #[error("threat feed {name} ({path}): {source}")]
    Read { name: String, path: String, source: std::io::Error },
    #[error("threat feed {name} ({path}): no indicator in {lines} lines (is the format right?)")]
    Empty { name: String, path: String, lines: usize },
}

/// Disjoint, sorted ranges with the feed that listed each.
#[derive(Clone, Debug, Default)]
struct Ranges<T> {
    items: Vec<(T, T, u16)>,
}

impl<T: Copy + Ord + std::fmt::Debug> Ranges<T> {
    fn build(mut v: Vec<(T, T, u16)>) -> Ranges<T> {
        v.sort();
        let mut out: Vec<(T, T, u16)> = Vec::with_capacity(v.len());
        for (lo, hi, f) in v {
            if let Some(last) = out.last_mut()
                && lo <= last.1
            {
                if hi > last.1 {
                    last.1 = hi;
                }
                continue;
            }
            out.push((lo, hi, f));
        }
        Ranges { items: out }
    }

    fn find(&self, x: T) -> Option<u16> {
        let i = self.items.partition_point(|r| r.0 <= x);
        let r = self.items.get(i.checked_sub(1)?)?;
        (x <= r.1).then_some(r.2)
    }
}

/// Every indicator of every feed.
#[derive(Clone, Debug, Default)]
pub struct Intel {
    pub feeds: Vec<String>,
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    domains: HashMap<String, u16>,
}

fn cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let ip: IpAddr = a.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((ip, len))
}

/// A plausible domain name: letters, digits, `-`, dots, and a letter in the last label.
fn domain(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let s = s.strip_prefix("*.").unwrap_or(&s).to_string();
    let ok = s.len() <= 253
        && s.contains('.')
        && s.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && s.rsplit('.').next().is_some_and(|t| t.bytes().any(|b| b.is_ascii_alphabetic()));
    ok.then_some(s)
}

/// An indicator from one field: an IP (with an optional `:port`), a CIDR, a
/// URL's host, or a domain.
fn indicator(field: &str) -> Option<Indicator> {
    let f = field.trim().trim_matches('"').trim();
    if f.is_empty() {
        return None;
    }
    if let Some((ip, len)) = cidr(f) {
        return Some(Indicator::Net(ip, len));
    }
    if let Ok(sa) = f.parse::<std::net::SocketAddr>() {
        return Some(Indicator::Net(sa.ip(), if sa.is_ipv4() { 32 } else { 128 }));
    }
    if let Some(rest) = f.split_once("://").map(|(_, r)| r) {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let host = if host.starts_with('[') {
            host.trim_start_matches('[').split(']').next().unwrap_or("")
        } else {
            host.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(host, |(h, _)| h)
        };
        return indicator(host);
    }
    if let Some((h, p)) = f.rsplit_once(':')
        && p.parse::<u16>().is_ok()
    {
        return domain(h).map(Indicator::Domain);
    }
    domain(f).map(Indicator::Domain)
}

enum Indicator {
    Net(IpAddr, u8),
    Domain(String),
}

#[derive(Default)]
struct Builder {
    v4: Vec<(u32, u32, u16)>,
    v6: Vec<(u128, u128, u16)>,
    domains: HashMap<String, u16>,
}

impl Builder {
    fn add(&mut self, ind: Indicator, feed: u16, r: &mut FeedReport) {
        match ind {
            Indicator::Net(IpAddr::V4(a), len) => {
                let x = u32::from(a);
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                self.v4.push((x & mask, (x & mask) | !mask, feed));
                r.networks += 1;
            }
            Indicator::Net(IpAddr::V6(a), len) => {
                let x = u128::from(a);
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                self.v6.push((x & mask, (x & mask) | !mask, feed));
                r.networks += 1;
            }
            Indicator::Domain(d) => {
                self.domains.entry(d).or_insert(feed);
                r.domains += 1;
            }
        }
    }
}

fn strip_comment(line: &str) -> &str {
    let line = line.split('#').next().unwrap_or("");
    line.split(';').next().unwrap_or("").trim()
}

fn detect_format(text: &str) -> FeedFormat {
    let mut header_csv = false;
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if l.starts_with('#') {
            if l.contains("\",\"") {
                header_csv = true;
            }
            continue;
        }
        if l.starts_with('{') {
            return FeedFormat::JsonLines;
        }
        if header_csv || l.starts_with('"') {
            return FeedFormat::AbuseChCsv;
        }
        let mut parts = l.split_whitespace();
        if let (Some(a), Some(b)) = (parts.next(), parts.next())
            && a.parse::<IpAddr>().is_ok()
            && b.bytes().any(|c| c.is_ascii_alphabetic())
            && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
        {
            return FeedFormat::Hosts;
        }
        return FeedFormat::Plain;
    }
    FeedFormat::Plain
}

/// Split a CSV line (double quotes, no embedded newlines).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Column names abuse.ch files carry their indicator in.
const CSV_COLUMNS: &[&str] = &["dst_ip", "ip_address", "ioc_value", "ioc", "url", "host", "domain", "ip"];

fn parse(text: &str, format: FeedFormat, feed: u16, b: &mut Builder, r: &mut FeedReport) {
    let format = if format == FeedFormat::Auto { detect_format(text) } else { format };
    let bad = |n: usize, l: &str, r: &mut FeedReport| {
        r.bad_count += 1;
        if r.bad_lines.len() < 5 {
            r.bad_lines.push((n, l.chars().take(120).collect()));
        }
    };
    let mut column: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match format {
            FeedFormat::AbuseChCsv => {
                let body = line.trim_start_matches('#').trim();
                let fields = csv_fields(body);
                if column.is_none() || line.starts_with('#') {
                    if let Some(c) =
                        fields.iter().position(|f| CSV_COLUMNS.contains(&f.trim().to_ascii_lowercase().as_str()))
                    {
                        column = Some(c);
                        continue;
                    }
                    if line.starts_with('#') {
                        continue;
                    }
                }
                let field = column.and_then(|c| fields.get(c)).map(String::as_str);
                match field.and_then(indicator).or_else(|| fields.iter().find_map(|f| ip_only(f))) {
                    Some(ind) => b.add(ind, feed, r),
                    None => bad(n, line, r),
                }
            }
            FeedFormat::JsonLines => {
                if line.starts_with('#') {
                    continue;
                }
                let v: Option<serde_json::Value> = serde_json::from_str(line).ok();
                let field = v.as_ref().and_then(|v| {
                    ["cidr", "ip", "ip_address", "domain", "ioc_value", "ioc"]
                        .iter()
                        .find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(str::to_string))
                });
                match field.as_deref().and_then(indicator) {
                    Some(ind) => b.add(ind, feed, r),
                    // Spamhaus ends its JSON with a metadata object.
                    None if v.as_ref().is_some_and(|v| v.get("type").is_some()) => {}
                    None => bad(n, line, r),
                }
            }
            FeedFormat::Hosts => {
                let l = strip_comment(line);
                if l.is_empty() {
                    continue;
                }
                let mut parts = l.split_whitespace();
                let first = parts.next().unwrap_or("");
                if first.parse::<IpAddr>().is_err() {
                    bad(n, line, r);
                    continue;
                }
                for h in parts {
                    if matches!(h, "localhost" | "localhost.localdomain" | "local" | "broadcasthost") {
                        continue;
                    }
                    match domain(h) {
                        Some(d) => b.add(Indicator::Domain(d), feed, r),
                        None => bad(n, line, r),
                    }
                }
            }
            FeedFormat::Plain | FeedFormat::Auto => {
                let l = strip_comment(line);
                if l.is_empty() {
                    continue;
                }
                let first = l.split_whitespace().next().unwrap_or("");
                match indicator(first) {
                    Some(ind) => b.add(ind, feed, r),
                    None => bad(n, line, r),
                }
            }
        }
    }
}

fn ip_only(f: &str) -> Option<Indicator> {
    match indicator(f)? {
        i @ Indicator::Net(..) => Some(i),
        Indicator::Domain(_) => None,
    }
}

impl Intel {
    /// Load every feed. A feed that cannot be read, or holds no indicator at
    /// all (and is not just comments), is an error naming it; lines without
    /// an indicator are reported.
    pub fn load(specs: &[FeedSpec]) -> Result<(Intel, Vec<FeedReport>), IntelError> {
        let mut b = Builder::default();
        let mut reports = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let text = std::fs::read_to_string(&s.path).map_err(|e| IntelError::Read {
                name: s.name.clone(),
                path: s.path.display().to_string(),
                source: e,
            })?;
            let mut r = FeedReport { name: s.name.clone(), ..FeedReport::default() };
            parse(&text, s.format, i as u16, &mut b, &mut r);
            // No indicator is an error (a format mistake, a failed
            // download) unless the file says it is empty on purpose: only
            // comments, as the API's own blocklist when it is cleared.
            let commented_only = r.bad_count == 0 && text.lines().any(|l| l.trim_start().starts_with('#'));
            if r.networks + r.domains == 0 && !commented_only {
                return Err(IntelError::Empty {
                    name: s.name.clone(),
                    path: s.path.display().to_string(),
                    lines: text.lines().count(),
                });
            }
            reports.push(r);
        }
        let intel = Intel {
            feeds: specs.iter().map(|s| s.name.clone()).collect(),
            v4: Ranges::build(b.v4),
            v6: Ranges::build(b.v6),
            domains: b.domains,
        };
        Ok((intel, reports))
    }

    pub fn is_empty(&self) -> bool {
        self.v4.items.is_empty() && self.v6.items.is_empty() && self.domains.is_empty()
    }

    /// The feed listing this address, if any.
    #[inline]
    pub fn ip(&self, a: &[u8; 16], v6: bool) -> Option<&str> {
        let f = if v6 {
            self.v6.find(u128::from_be_bytes(*a))
        } else {
            self.v4.find(u32::from_be_bytes([a[0], a[1], a[2], a[3]]))
        }?;
        self.feeds.get(f as usize).map(String::as_str)
    }

    /// The listed domain `name` is or is under, and the feed listing it.
    pub fn domain<'a>(&'a self, name: &'a str) -> Option<(&'a str, &'a str)> {
        let mut n = name;
        loop {
            if let Some(&f) = self.domains.get(n) {
                return Some((n, self.feeds.get(f as usize).map_or("", String::as_str)));
            }
            n = n.split_once('.')?.1;
        }
    }
}

/// Feeds as last loaded, reloaded when a file changes.
pub struct IntelFeeds {
    specs: Vec<FeedSpec>,
    stamps: Vec<Option<SystemTime>>,
    pub intel: Intel,
    last_check: std::time::Instant,
    every: std::time::Duration,
}

fn stamp(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl IntelFeeds {
    pub fn new(specs: Vec<FeedSpec>, intel: Intel, every: std::time::Duration) -> IntelFeeds {
        let stamps = specs.iter().map(|s| stamp(&s.path)).collect();
        IntelFeeds { specs, stamps, intel, last_check: std::time::Instant::now(), every }
    }

    /// Reload when a feed file changed (checked at most every `every`). A
    /// feed that fails to load keeps the previous indicators, logged.
    pub fn refresh(&mut self) {
        if self.specs.is_empty() || self.last_check.elapsed() < self.every {
            return;
        }
        self.last_check = std::time::Instant::now();
        let now: Vec<Option<SystemTime>> = self.specs.iter().map(|s| stamp(&s.path)).collect();
        if now == self.stamps {
            return;
        }
        match Intel::load(&self.specs) {
            Ok((intel, reports)) => {
                for r in &reports {
                    tracing::info!(feed = %r.name, networks = r.networks, domains = r.domains, bad_lines = r.bad_count, "threat feed reloaded");
                }
                self.intel = intel;
                self.stamps = now;
            }
            Err(e) => tracing::error!("{e}; keeping the indicators loaded before"),
        }
    }
}
