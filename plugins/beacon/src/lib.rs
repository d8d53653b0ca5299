//! Beaconing detector: a host opening connections to the same destination
//! and port at regular intervals with little jitter, like malware calling
//! its command-and-control server.
//!
//! It reads `window` records (one per conversation per second, merged over
//! every worker), so every connection of a pair is seen whatever worker
//! handled it. A second with at least one new flow is one connection; the
//! intervals between the last `min_connections` of them are judged by
//! their mean (within the configured range) and jitter (standard deviation
//! over mean).

use std::collections::HashMap;

use tapstream_plugin_sdk::{Alert, Batch, Category, Host, Plugin, Severity, Verdict, export_plugin};

/// Intervals remembered per pair (`min_connections` can be at most one more).
const KEEP: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Pair {
    src: [u8; 16],
    dst: [u8; 16],
    v6: bool,
    proto: u8,
    port: u16,
}

#[derive(Clone)]
struct Track {
    last_sec: u64,
    /// Ring of the latest intervals, seconds.
    intervals: [u32; KEEP],
    n: usize,
    connections: u64,
    bytes: u64,
    packets: u64,
    sample: u64,
}

struct Cfg {
    min_connections: usize,
    min_interval: f64,
    max_interval: f64,
    max_jitter: f64,
    max_pairs: usize,
}

pub struct Beacon {
    cfg: Cfg,
    pairs: HashMap<Pair, Track>,
}

/// Mean interval and jitter of the last `min_connections - 1` intervals,
/// when they are regular.
fn judge(c: &Cfg, t: &Track) -> Option<(f64, f64)> {
    let k = (c.min_connections - 1).min(KEEP);
    if t.n < k {
        return None;
    }
    let last = |i: usize| t.intervals[(t.n - 1 - i) % KEEP] as f64;
    let mean = (0..k).map(last).sum::<f64>() / k as f64;
    if mean < c.min_interval || mean > c.max_interval {
        return None;
    }
    let var = (0..k).map(|i| (last(i) - mean) * (last(i) - mean)).sum::<f64>() / k as f64;
    let jitter = var.sqrt() / mean;
    (jitter <= c.max_jitter).then_some((mean, jitter))
}

impl Beacon {
    pub fn pairs(&self) -> usize {
        self.pairs.len()
    }

    fn evict(&mut self, now: u64) {
        // Forget pairs silent for longer than the longest interval; if still
        // full, the stalest.
        let horizon = self.cfg.max_interval as u64 * 2;
        self.pairs.retain(|_, t| now.saturating_sub(t.last_sec) <= horizon);
        if self.pairs.len() >= self.cfg.max_pairs
            && let Some(k) = self.pairs.iter().min_by_key(|(_, t)| t.last_sec).map(|(k, _)| *k)
        {
            self.pairs.remove(&k);
        }
    }
}

impl Plugin for Beacon {
    fn init(host: &mut dyn Host) -> Result<Self, &'static str> {
        let min_connections = host.config_u64("min_connections").unwrap_or(10) as usize;
        if min_connections < 3 {
            return Err("min_connections must be at least 3");
        }
        let cfg = Cfg {
            min_connections,
            min_interval: host.config_f64("min_interval_secs").unwrap_or(5.0),
            max_interval: host.config_f64("max_interval_secs").unwrap_or(3600.0),
            max_jitter: host.config_f64("max_jitter").unwrap_or(0.1),
            max_pairs: host.config_u64("max_pairs").unwrap_or(100_000).max(1) as usize,
        };
        // The whole table up front: growing it later would rehash every pair
        // in one call, a pause that could overrun the call's deadline.
        let pairs = HashMap::with_capacity(cfg.max_pairs.min(1 << 20));
        Ok(Beacon { cfg, pairs })
    }

    fn on_windows(&mut self, host: &mut dyn Host, batch: Batch<'_>) {
        for w in batch.windows() {
            // Folded sources (all zero) are not one host.
            if w.flows() == 0 || w.src() == [0; 16] {
                continue;
            }
            let sec = w.sec_ns() / 1_000_000_000;
            let key = Pair { src: w.src(), dst: w.dst(), v6: w.v6(), proto: w.proto(), port: w.dport() };
            if self.pairs.len() >= self.cfg.max_pairs && !self.pairs.contains_key(&key) {
                self.evict(sec);
            }
            let t = self.pairs.entry(key).or_insert(Track {
                last_sec: sec,
                intervals: [0; KEEP],
                n: 0,
                connections: 0,
                bytes: 0,
                packets: 0,
                sample: 0,
            });
            t.connections += 1;
            t.bytes += w.bytes() + w.rbytes();
            t.packets += w.pkts() + w.rpkts();
            t.sample = w.sample();
            if t.connections > 1 && sec > t.last_sec {
                let gap = (sec - t.last_sec).min(u32::MAX as u64) as u32;
                t.intervals[t.n % KEEP] = gap;
                t.n += 1;
            }
            t.last_sec = sec;
            // Every regular connection repeats the alert: the appliance
            // keeps one open alert per pair and updates it.
            if let Some((mean, jitter)) = judge(&self.cfg, t) {
                host.counter("beacon_connections", 1);
                let _ = Alert::new("beacon")
                        .severity(if jitter < 0.02 { Severity::High } else { Severity::Medium })
                        .category(Category::Malware)
                        .verdict(Verdict::Suspicious)
                        .src(&key.src, key.v6)
                        .dst(&key.dst, key.v6)
                        .port(key.port)
                        .group_fmt(format_args!("{}", PairText(&key)))
                        .sample_flow(t.sample)
                        .counters(t.packets, t.bytes, t.connections)
                        .rate(mean, "s interval")
                        .explanation_fmt(format_args!(
                            "{} connected {} times at regular {:.1} s intervals (jitter {:.1}%), like a beacon calling home",
                            PairText(&key),
                            t.connections,
                            mean,
                            jitter * 100.0
                        ))
                        .emit(host);
            }
        }
    }

    fn on_tick(&mut self, _host: &mut dyn Host, now_ns: u64) {
        let now = now_ns / 1_000_000_000;
        // Once a minute of traffic time, forget silent pairs.
        if now.is_multiple_of(60) {
            let horizon = self.cfg.max_interval as u64 * 2;
            self.pairs.retain(|_, t| now.saturating_sub(t.last_sec) <= horizon);
        }
    }
}

/// `10.0.0.5 → 203.0.113.9:443/tcp`
struct PairText<'a>(&'a Pair);

impl core::fmt::Display for PairText<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let p = self.0;
        tapstream_plugin_sdk::fmt_addr(f, &p.src, p.v6)?;
        f.write_str(" → ")?;
        if p.v6 {
            f.write_str("[")?;
            tapstream_plugin_sdk::fmt_addr(f, &p.dst, p.v6)?;
            f.write_str("]")?;
        } else {
            tapstream_plugin_sdk::fmt_addr(f, &p.dst, p.v6)?;
        }
        let proto = match p.proto {
            6 => "tcp",
            17 => "udp",
            _ => "ip",
        };
        write!(f, ":{}/{proto}", p.port)
    }
}

export_plugin!(Beacon);

#[cfg(test)]
mod tests;
