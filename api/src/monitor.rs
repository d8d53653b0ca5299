//! The server's once-a-second view of the appliance: engine rates from the
//! engine's counters, new alert events from its feed, host figures from
//! sysinfo. Each sample is kept (the last ten minutes, for charts) and
//! published to every `/api/stream` client through a bounded broadcast: a
//! client that falls behind is dropped, never buffered for.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::engine::{EngineLink, EngineStatus};

/// Samples kept for `/api/performance`.
const HISTORY: usize = 600;
/// Messages a stream client may lag before it is dropped.
pub const STREAM_BACKLOG: usize = 64;

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Rates {
    pub pps: f64,
    pub bps: f64,
    pub drops_per_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Host {
    /// Busy share of each core, 0–100.
    pub cpu_per_core: Vec<f32>,
    pub memory_total: u64,
    pub memory_used: u64,
    /// This process's resident memory.
    pub process_rss: u64,
    /// Bytes under the data directory, and free on its file system.
    pub data_dir_bytes: u64,
    pub disk_free: u64,
    pub disk_total: u64,
}

/// One second of the appliance.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Sample {
    /// Unix seconds.
    pub ts: u64,
    pub rates: Rates,
    pub engine: EngineStatus,
    pub host: Host,
}

/// Counters of the server itself (for `/metrics`).
#[derive(Debug, Default)]
pub struct ApiCounters {
    pub requests: AtomicU64,
    pub responses_2xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub stream_clients: AtomicU64,
    pub stream_dropped: AtomicU64,
    pub alert_events: AtomicU64,
}

pub struct Monitor {
    pub tx: broadcast::Sender<std::sync::Arc<str>>,
    history: Mutex<VecDeque<Sample>>,
    pub counters: ApiCounters,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            tx: broadcast::channel(STREAM_BACKLOG).0,
            history: Mutex::new(VecDeque::new()),
            counters: ApiCounters::default(),
        }
    }
}

impl Monitor {
    pub fn latest(&self) -> Option<Sample> {
        self.history.lock().unwrap_or_else(|p| p.into_inner()).back().cloned()
    }

    /// Samples of the last `secs` seconds, oldest first.
    pub fn history(&self, secs: usize) -> Vec<Sample> {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.iter().skip(h.len().saturating_sub(secs)).cloned().collect()
    }

    fn push(&self, s: Sample) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() >= HISTORY {
            h.pop_front();
        }
        h.push_back(s);
    }

    pub fn publish(&self, v: serde_json::Value) {
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(std::sync::Arc::from(v.to_string()));
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

struct HostProbe {
    sys: sysinfo::System,
    disks: sysinfo::Disks,
    pid: Option<sysinfo::Pid>,
    data: PathBuf,
    data_bytes: u64,
    last_walk: Option<Instant>,
}

impl HostProbe {
    fn new(data: &Path) -> HostProbe {
        HostProbe {
            sys: sysinfo::System::new(),
            disks: sysinfo::Disks::new_with_refreshed_list(),
            pid: sysinfo::get_current_pid().ok(),
            data: std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf()),
            data_bytes: 0,
            last_walk: None,
        }
    }

    fn sample(&mut self) -> Host {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let mut h = Host {
            cpu_per_core: self.sys.cpus().iter().map(|c| c.cpu_usage()).collect(),
            memory_total: self.sys.total_memory(),
            memory_used: self.sys.used_memory(),
            ..Host::default()
        };
        if let Some(pid) = self.pid {
            self.sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
            h.process_rss = self.sys.process(pid).map(|p| p.memory()).unwrap_or(0);
        }
        // The data directory's size: walked every 10 s (it can hold many files).
        if self.last_walk.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            self.data_bytes = dir_bytes(&self.data);
            self.disks.refresh(true);
            self.last_walk = Some(Instant::now());
        }
        h.data_dir_bytes = self.data_bytes;
        if let Some(d) = self
            .disks
            .list()
            .iter()
            .filter(|d| self.data.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
        {
            h.disk_free = d.available_space();
            h.disk_total = d.total_space();
        }
        h
    }
}

/// Sample every second, on a thread of its own, for as long as the monitor lives.
pub fn spawn(monitor: &std::sync::Arc<Monitor>, engine: EngineLink, data: PathBuf) -> std::io::Result<()> {
    let weak = std::sync::Arc::downgrade(monitor);
    std::thread::Builder::new().name("api-monitor".into()).spawn(move || {
        let mut probe = HostProbe::new(&data);
        let mut prev: Option<(Instant, EngineStatus)> = None;
        // Alerts already in the feed at start are history, not news.
        let mut seq = engine.alerts.as_ref().and_then(|f| f.since(0).last().map(|(n, _)| *n)).unwrap_or(0);
        let mut next = Instant::now();
        loop {
            next += Duration::from_secs(1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let Some(monitor) = weak.upgrade() else { return };
            let now = Instant::now();
            let status = engine.status();
            let rates = match &prev {
                Some((t, p)) => {
                    let secs = now.duration_since(*t).as_secs_f64().max(1e-3);
                    Rates {
                        pps: status.packets.saturating_sub(p.packets) as f64 / secs,
                        bps: 8.0 * status.bytes.saturating_sub(p.bytes) as f64 / secs,
                        drops_per_s: status.drops.saturating_sub(p.drops) as f64 / secs,
                    }
                }
                None => Rates::default(),
            };
            prev = Some((now, status.clone()));
            let host = probe.sample();
            let ts =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let sample = Sample { ts, rates, engine: status, host };
            monitor.publish(serde_json::json!({ "type": "stats", "data": &sample }));
            monitor.push(sample);
            if let Some(feed) = &engine.alerts {
                for (n, a) in feed.since(seq) {
                    seq = n;
                    monitor.counters.alert_events.fetch_add(1, Ordering::Relaxed);
                    monitor.publish(
                        serde_json::json!({ "type": "alert", "data": tapstream_engine::detect::alert_json(&a) }),
                    );
                }
            }
        }
    })?;
    Ok(())
}
