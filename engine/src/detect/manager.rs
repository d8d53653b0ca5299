//! Alert life cycle: findings of one group become one alert, opened once,
//! updated while the condition lasts, closed after it has been quiet; every
//! event goes to the `alerts` table, the JSON-lines log and the live feed.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Mutex;

use super::{DetectConfig, DetectSetup, Finding, SEC};
use crate::alert::{Alert, AlertBuilder, AlertEvent, Category};

/// Recent alert events in memory, numbered, for live readers (the API's
/// stream, the console). Holds at most `capacity` events.
#[derive(Debug)]
pub struct AlertFeed {
    inner: Mutex<(u64, VecDeque<(u64, Alert)>)>,
    capacity: usize,
}

impl Default for AlertFeed {
    fn default() -> Self {
        AlertFeed::new(10_000)
    }
}

impl AlertFeed {
    pub fn new(capacity: usize) -> AlertFeed {
        AlertFeed { inner: Mutex::new((0, VecDeque::new())), capacity: capacity.max(1) }
    }

    /// Add an event (the alert manager does; tests and the API may too).
    pub fn push(&self, a: &Alert) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let n = g.0;
        if g.1.len() >= self.capacity {
            g.1.pop_front();
        }
        g.1.push_back((n, a.clone()));
    }

    /// The number of the newest event (0: none yet).
    pub fn head(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Events numbered after `seq` (0: all held), oldest first.
    pub fn since(&self, seq: u64) -> Vec<(u64, Alert)> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.iter().filter(|(n, _)| *n > seq).cloned().collect()
    }
}

fn rfc3339(ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// One alert event as a JSON object (a line of the alert log).
pub fn alert_json(a: &Alert) -> serde_json::Value {
    serde_json::json!({
        "timestamp": rfc3339(a.ts),
        "event_type": "alert",
        "event": a.event.name(),
        "id": a.id,
        "rule": a.rule,
        "severity": a.severity.name(),
        "category": a.category.name(),
        "verdict": a.verdict.name(),
        "start": rfc3339(a.start_ts),
        "last_seen": rfc3339(a.last_ts),
        "src_ips": a.src_ips,
        "dst_ips": a.dst_ips,
        "ports": a.ports,
        "countries": a.countries,
        "packets": a.packets,
        "bytes": a.bytes,
        "flows": a.flows,
        "rate": a.rate,
        "rate_unit": a.rate_unit,
        "top_sources": a.top_sources,
        "sample_flows": a.sample_flows,
        "explanation": a.explanation,
    })
}

struct Open {
    alert: Alert,
    last_emit: u64,
}

/// Opens, updates and closes alerts, and writes their events.
pub struct AlertManager {
    cfg: DetectConfig,
    open: HashMap<String, Open>,
    builder: AlertBuilder,
    log: Option<AlertLog>,
    feed: Option<std::sync::Arc<super::AlertFeed>>,
    geo: Option<std::sync::Arc<crate::geo::Geo>>,
    pub opened: u64,
    pub events: u64,
    pub log_errors: u64,
}

fn merge_list<T: PartialEq + Clone>(into: &mut Vec<T>, from: &[T], cap: usize) {
    for x in from {
        if into.len() >= cap {
            break;
        }
        if !into.contains(x) {
            into.push(x.clone());
        }
    }
}

/// A stable id: 'A' and base62 of a hash of the group and start time.
fn alert_id(group: &str, start: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.bytes().chain(start.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let s = crate::flow::uid_string(h);
    format!("A{}", &s[1..])
}

/// The JSON-lines alert log, rotated by size as Suricata rotates eve.json:
/// when a line would take the file past `max_bytes` it is renamed to
/// `NAME.1` (older ones shift up to `NAME.keep`, the oldest is deleted) and
/// a new file is started, so the log never grows without bound and a
/// shipper that follows the name (tail -F, Filebeat, Vector) sees every
/// line once.
struct AlertLog {
    path: std::path::PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    /// Bytes in the current file (what was there at open, plus written).
    len: u64,
    max_bytes: u64,
    keep: u32,
}

impl AlertLog {
    fn open(path: std::path::PathBuf, max_bytes: u64, keep: u32) -> std::io::Result<AlertLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let len = f.metadata()?.len();
        Ok(AlertLog { path, out: std::io::BufWriter::new(f), len, max_bytes, keep })
    }

    fn rotated(&self, n: u32) -> std::path::PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        s.into()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            // Nothing kept: start the file again.
            self.out = std::io::BufWriter::new(std::fs::File::create(&self.path)?);
            self.len = 0;
            return Ok(());
        }
        match std::fs::remove_file(self.rotated(self.keep)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..self.keep).rev() {
            match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.out = std::io::BufWriter::new(f);
        self.len = 0;
        tracing::info!(log = %self.path.display(), keep = self.keep, "alert log rotated");
        Ok(())
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let n = line.len() as u64 + 1;
        if self.max_bytes > 0 && self.len > 0 && self.len + n > self.max_bytes {
            self.rotate()?;
        }
        writeln!(self.out, "{line}")?;
        self.len += n;
        Ok(())
    }
}

impl AlertManager {
    /// `setup.log` is opened for appending; an error there is returned (the
    /// caller decides whether detection runs without the log).
    pub fn new(setup: &DetectSetup) -> std::io::Result<AlertManager> {
        let log = match &setup.log {
            Some(p) => Some(AlertLog::open(p.clone(), setup.cfg.log_max_bytes, setup.cfg.log_keep)?),
            None => None,
        };
        Ok(AlertManager {
            cfg: setup.cfg.clone(),
            open: HashMap::new(),
            builder: AlertBuilder::default(),
            log,
            feed: setup.feed.clone(),
            geo: setup.geo.clone(),
            opened: 0,
            events: 0,
            log_errors: 0,
        })
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The countries of an alert's addresses (with GeoIP), sorted.
    fn countries(&self, a: &mut Alert) {
        let Some(g) = &self.geo else { return };
        for ip in a.src_ips.iter().chain(&a.dst_ips) {
            if let Some(c) = g.country_of(ip)
                && !a.countries.contains(&c)
            {
                a.countries.push(c);
            }
        }
        a.countries.sort();
    }

    fn emit(&mut self, a: &Alert) {
        self.events += 1;
        self.builder.push(a);
        if let Some(l) = &mut self.log {
            let line = alert_json(a).to_string();
            if l.write_line(&line).is_err() {
                self.log_errors += 1;
            }
        }
        if let Some(f) = &self.feed {
            f.push(a);
        }
        match a.event {
            AlertEvent::Open => {
                tracing::warn!(id = %a.id, rule = %a.rule, severity = a.severity.name(), "alert: {}", a.explanation)
            }
            AlertEvent::Close => {
                tracing::info!(id = %a.id, rule = %a.rule, "alert closed after {} s quiet", self.cfg.close_after_ns / SEC)
            }
            AlertEvent::Update => {}
        }
    }

    /// The findings of second `sec`; then close what has been quiet.
    pub fn observe(&mut self, sec: u64, findings: Vec<Finding>) {
        let now = (sec + 1) * SEC;
        let mut seen: Vec<String> = Vec::new();
        for mut f in findings {
            if let Some(g) = f.absorbed_by.iter().find(|g| self.open.contains_key(*g)) {
                f.group = g.clone();
            }
            if seen.contains(&f.group) {
                continue;
            }
            seen.push(f.group.clone());
            if let Some(o) = self.open.get_mut(&f.group) {
                let a = &mut o.alert;
                a.ts = now;
                a.event = AlertEvent::Update;
                a.last_ts = now;
                a.severity = a.severity.max(f.severity);
                a.verdict = a.verdict.max(f.verdict);
                a.packets += f.packets;
                a.bytes += f.bytes;
                // Scans and anomalies count what their window holds: the peak, not a sum.
                a.flows = if matches!(a.category, Category::Scan | Category::Anomaly) {
                    a.flows.max(f.flows)
                } else {
                    a.flows + f.flows
                };
                a.rate = a.rate.max(f.rate);
                merge_list(&mut a.src_ips, &f.src_ips, 20);
                merge_list(&mut a.dst_ips, &f.dst_ips, 20);
                merge_list(&mut a.ports, &f.ports, 20);
                merge_list(&mut a.sample_flows, &f.sample_flows, 10);
                a.top_sources = f.top_sources;
                a.explanation = f.explanation;
                if now >= o.last_emit + self.cfg.update_every_ns {
                    o.last_emit = now;
                    let mut a = o.alert.clone();
                    self.countries(&mut a);
                    if let Some(o) = self.open.get_mut(&f.group) {
                        o.alert.countries = a.countries.clone();
                    }
                    self.emit(&a);
                }
                continue;
            }
            let start = sec * SEC;
            let a = Alert {
                ts: now,
                event: AlertEvent::Open,
                id: alert_id(&f.group, start),
                rule: f.rule_name.clone().unwrap_or_else(|| f.rule.to_string()),
                severity: f.severity,
                category: f.category,
                verdict: f.verdict,
                start_ts: start,
                last_ts: now,
                src_ips: f.src_ips,
                dst_ips: f.dst_ips,
                ports: f.ports,
                countries: vec![],
                packets: f.packets,
                bytes: f.bytes,
                flows: f.flows,
                rate: f.rate,
                rate_unit: f.rate_unit.to_string(),
                top_sources: f.top_sources,
                sample_flows: f.sample_flows,
                explanation: f.explanation,
            };
            let mut a = a;
            self.countries(&mut a);
            self.opened += 1;
            self.emit(&a);
            self.open.insert(f.group, Open { alert: a, last_emit: now });
        }
        self.close_quiet(now);
    }

    /// Close alerts quiet since `now - close_after`.
    pub fn close_quiet(&mut self, now: u64) {
        let quiet = self.cfg.close_after_ns;
        let mut done: Vec<String> =
            self.open.iter().filter(|(_, o)| o.alert.last_ts + quiet <= now).map(|(k, _)| k.clone()).collect();
        done.sort();
        for k in done {
            if let Some(o) = self.open.remove(&k) {
                let mut a = o.alert;
                a.ts = a.last_ts + quiet;
                a.event = AlertEvent::Close;
                self.emit(&a);
            }
        }
    }

    /// End of input or shutdown: close every open alert at `now`.
    pub fn close_all(&mut self, now: u64) {
        let mut keys: Vec<String> = self.open.keys().cloned().collect();
        keys.sort();
        for k in keys {
            if let Some(o) = self.open.remove(&k) {
                let mut a = o.alert;
                a.ts = now.max(a.last_ts);
                a.event = AlertEvent::Close;
                self.emit(&a);
            }
        }
    }

    /// Events since the last call as a record batch (None when there were none).
    pub fn take_batch(&mut self) -> Option<arrow::array::RecordBatch> {
        if let Some(l) = &mut self.log
            && l.out.flush().is_err()
        {
            self.log_errors += 1;
        }
        (self.builder.rows() > 0).then(|| self.builder.finish())
    }
}
