//! What a worker (or the aggregation stage) owns: a batch buffer per record
//! kind and a slot per plugin. No lock on the packet path: the plugin set is
//! checked through a generation counter once per packet batch, and metrics
//! are published once per second.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tapstream_plugin_sdk::Kind;

use super::PluginTap;
use super::encode::BatchBuf;
use super::instance::{Crash, Instance, Kv};
use super::load::LoadedPlugin;
use super::manifest::Scope;
use crate::alert::{Category, Severity, Verdict};
use crate::detect::{ConvKey, ConvStat, Finding};
use crate::records::{ConnId, DnsRecord, FlowRecord, HttpRecord, TlsRecord};

/// Restart delays double per consecutive crash, up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const SEC: u64 = 1_000_000_000;

/// Where a plugin's instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Not started yet, or running.
    Running,
    /// Crashed: restarts after a delay; records meanwhile are skipped.
    Backoff,
    /// Crashed too often: gets no records until its file changes.
    Quarantined,
}

impl SlotState {
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Running => "running",
            SlotState::Backoff => "backoff",
            SlotState::Quarantined => "quarantined",
        }
    }
}

/// A plugin's metrics (one instance's, or merged over every instance).
#[derive(Clone, Debug)]
pub struct PluginMetrics {
    pub calls: u64,
    pub records: u64,
    pub alerts: u64,
    pub alerts_refused: u64,
    pub traps: u64,
    pub restarts: u64,
    pub quarantines: u64,
    /// Records not handed over: the instance was backing off or quarantined.
    pub skipped_records: u64,
    /// Calls that returned a non-zero status.
    pub errors: u64,
    pub logs_dropped: u64,
    /// Time per call, ns.
    pub call_ns: hdrhistogram::Histogram<u64>,
    /// The plugin's own counters.
    pub counters: BTreeMap<String, i64>,
    /// Worst state over the instances.
    pub state: Option<SlotState>,
    pub last_crash: Option<String>,
}

impl Default for PluginMetrics {
    fn default() -> Self {
        PluginMetrics {
            calls: 0,
            records: 0,
            alerts: 0,
            alerts_refused: 0,
            traps: 0,
            restarts: 0,
            quarantines: 0,
            skipped_records: 0,
            errors: 0,
            logs_dropped: 0,
            call_ns: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds"),
            counters: BTreeMap::new(),
            state: None,
            last_crash: None,
        }
    }
}

fn worse(a: Option<SlotState>, b: Option<SlotState>) -> Option<SlotState> {
    let rank = |s: Option<SlotState>| match s {
        None => 0,
        Some(SlotState::Running) => 1,
        Some(SlotState::Backoff) => 2,
        Some(SlotState::Quarantined) => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

impl PluginMetrics {
    /// Add `o` (a delta) into `self`; the state is the worse of the two.
    pub fn merge(&mut self, o: &PluginMetrics) {
        self.calls += o.calls;
        self.records += o.records;
        self.alerts += o.alerts;
        self.alerts_refused += o.alerts_refused;
        self.traps += o.traps;
        self.restarts += o.restarts;
        self.quarantines += o.quarantines;
        self.skipped_records += o.skipped_records;
        self.errors += o.errors;
        self.logs_dropped += o.logs_dropped;
        let _ = self.call_ns.add(&o.call_ns);
        for (k, v) in &o.counters {
            *self.counters.entry(k.clone()).or_default() += v;
        }
        self.state = worse(self.state, o.state);
        if o.last_crash.is_some() {
            self.last_crash = o.last_crash.clone();
        }
    }

    /// As JSON, for `plugins.json` and `tapstream plugin list`.
    pub fn to_json(&self) -> serde_json::Value {
        let q = |p: f64| if self.call_ns.is_empty() { 0 } else { self.call_ns.value_at_quantile(p) };
        serde_json::json!({
            "state": self.state.map_or("idle", SlotState::name),
            "calls": self.calls, "records": self.records, "alerts": self.alerts,
            "alerts_refused": self.alerts_refused, "traps": self.traps, "restarts": self.restarts,
            "quarantines": self.quarantines, "skipped_records": self.skipped_records, "errors": self.errors,
            "logs_dropped": self.logs_dropped,
            "call_ns": {"p50": q(0.5), "p99": q(0.99), "max": self.call_ns.max(), "mean": self.call_ns.mean().round()},
            "counters": self.counters, "last_crash": self.last_crash,
        })
    }
}

/// Every plugin's metrics, merged over the runners: a lock taken once per
/// second per runner.
#[derive(Default, Debug)]
pub struct PluginStats {
    by_plugin: Mutex<BTreeMap<String, PluginMetrics>>,
    /// Instances' current states, by (plugin, runner).
    states: Mutex<BTreeMap<(String, u16), SlotState>>,
}

impl PluginStats {
    fn publish(&self, name: &str, runner: u16, delta: &PluginMetrics, state: SlotState) {
        if let Ok(mut m) = self.by_plugin.lock() {
            m.entry(name.to_string()).or_default().merge(delta);
        }
        if let Ok(mut s) = self.states.lock() {
            s.insert((name.to_string(), runner), state);
        }
    }

    /// Merged metrics per plugin, with the worst current state of its instances.
    pub fn snapshot(&self) -> BTreeMap<String, PluginMetrics> {
        let mut out = self.by_plugin.lock().map(|m| m.clone()).unwrap_or_default();
        for m in out.values_mut() {
            m.state = None;
        }
        if let Ok(s) = self.states.lock() {
            for ((name, _), st) in s.iter() {
                if let Some(m) = out.get_mut(name) {
                    m.state = worse(m.state, Some(*st));
                }
            }
        }
        out
    }

    /// As a JSON object keyed by plugin name.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.snapshot().into_iter().map(|(k, v)| (k, v.to_json())).collect())
    }
}

struct Slot {
    plugin: Arc<LoadedPlugin>,
    inst: Option<Instance>,
    kv: Kv,
    state: SlotState,
    retry_at: Instant,
    consecutive: u32,
    crashes: VecDeque<Instant>,
    started: bool,
    delta: PluginMetrics,
}

impl Slot {
    fn new(plugin: Arc<LoadedPlugin>) -> Slot {
        Slot {
            plugin,
            inst: None,
            kv: Kv::default(),
            state: SlotState::Running,
            retry_at: Instant::now(),
            consecutive: 0,
            crashes: VecDeque::new(),
            started: false,
            delta: PluginMetrics::default(),
        }
    }
}

/// The plugins of one worker (scope `shard`) or of the aggregation stage
/// (scope `global`).
pub struct PluginRunner {
    scope: Scope,
    id: u16,
    tap: Arc<PluginTap>,
    generation: u64,
    slots: Vec<Slot>,
    bufs: [BatchBuf; 5],
    wants: [bool; 5],
    /// Alerts raised, waiting for the aggregation stage.
    pub findings: Vec<Finding>,
    stats: Arc<PluginStats>,
    /// Traffic time, seconds (rate windows of alerts and logs).
    now_sec: u64,
}

fn idx(k: Kind) -> usize {
    k as usize - 1
}

impl PluginRunner {
    pub fn new(scope: Scope, id: u16, tap: Arc<PluginTap>, stats: Arc<PluginStats>) -> PluginRunner {
        let mut r = PluginRunner {
            scope,
            id,
            tap,
            generation: u64::MAX,
            slots: Vec::new(),
            bufs: Kind::ALL.map(BatchBuf::new),
            wants: [false; 5],
            findings: Vec::new(),
            stats,
            now_sec: 0,
        };
        r.refresh();
        r
    }

    /// Pick up a changed plugin set (between batches): the old instances
    /// get what is buffered for them first; unchanged plugins keep theirs.
    pub fn refresh(&mut self) {
        if self.tap.generation() == self.generation {
            return;
        }
        self.flush_all();
        let (generation, set) = self.tap.snapshot();
        self.generation = generation;
        let mut old = std::mem::take(&mut self.slots);
        for p in set.plugins.iter().filter(|p| p.manifest.scope == self.scope) {
            match old.iter().position(|s| Arc::ptr_eq(&s.plugin, p)) {
                Some(i) => self.slots.push(old.swap_remove(i)),
                None => {
                    // A new version keeps the state of the one it replaces.
                    let mut s = Slot::new(p.clone());
                    if let Some(i) = old.iter().position(|o| o.plugin.name == p.name) {
                        let mut o = old.swap_remove(i);
                        self.publish_slot(&mut o);
                        s.kv = match o.inst.take() {
                            Some(inst) => inst.into_kv(),
                            None => std::mem::take(&mut o.kv),
                        };
                    }
                    self.slots.push(s);
                }
            }
        }
        for mut o in old {
            self.publish_slot(&mut o);
        }
        self.wants = Kind::ALL.map(|k| self.slots.iter().any(|s| s.plugin.manifest.wants(k)));
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    #[inline]
    pub fn wants(&self, k: Kind) -> bool {
        self.wants[idx(k)]
    }

    #[inline]
    fn buf(&mut self, k: Kind) -> &mut BatchBuf {
        if self.bufs[idx(k)].full() {
            self.flush(k);
        }
        &mut self.bufs[idx(k)]
    }

    #[inline]
    pub fn flow(&mut self, r: &FlowRecord) {
        if self.wants(Kind::Flow) {
            self.buf(Kind::Flow).flow(r);
        }
    }
    #[inline]
    pub fn dns(&mut self, c: &ConnId, r: &DnsRecord) {
        if self.wants(Kind::Dns) {
            self.buf(Kind::Dns).dns(c, r);
        }
    }
    #[inline]
    pub fn tls(&mut self, c: &ConnId, r: &TlsRecord) {
        if self.wants(Kind::Tls) {
            self.buf(Kind::Tls).tls(c, r);
        }
    }
    #[inline]
    pub fn http(&mut self, c: &ConnId, r: &HttpRecord) {
        if self.wants(Kind::Http) {
            self.buf(Kind::Http).http(c, r);
        }
    }

    /// A second of merged conversations (global plugins), handed over
    /// sorted so the plugins see the same order whatever the worker count.
    pub fn window_second(&mut self, sec: u64, convs: &mut [(ConvKey, ConvStat)]) {
        self.refresh();
        if self.wants(Kind::Window) {
            convs.sort_unstable_by(|a, b| {
                (a.0.src, a.0.dst, a.0.proto, a.0.dport, a.0.v6).cmp(&(b.0.src, b.0.dst, b.0.proto, b.0.dport, b.0.v6))
            });
            for (k, s) in convs.iter() {
                self.buf(Kind::Window).window(sec * SEC, k, s);
            }
        }
        self.tick(sec * SEC);
    }

    fn flush(&mut self, k: Kind) {
        let i = idx(k);
        if self.bufs[i].is_empty() {
            return;
        }
        // Lent out while the plugins read it; the placeholder allocates nothing.
        let buf = std::mem::replace(&mut self.bufs[i], BatchBuf::unallocated(k));
        for s in 0..self.slots.len() {
            if self.slots[s].plugin.manifest.wants(k) {
                self.run(s, |inst| inst.batch(k as u32, &buf.records, &buf.strings, buf.count), buf.count as u64);
            }
        }
        let mut buf = buf;
        buf.clear();
        self.bufs[i] = buf;
    }

    /// Hand every partly filled batch over.
    pub fn flush_all(&mut self) {
        for k in Kind::ALL {
            self.flush(k);
        }
    }

    /// A second of traffic time passed: hand batches over, let plugins
    /// expire state, publish metrics.
    pub fn tick(&mut self, now_ns: u64) {
        self.now_sec = now_ns / SEC;
        self.flush_all();
        for s in 0..self.slots.len() {
            if self.slots[s].inst.as_ref().is_some_and(Instance::has_tick) {
                self.run(s, |inst| inst.tick(now_ns).map(|_| 0), 0);
            }
        }
        let PluginRunner { slots, stats, id, .. } = self;
        for st in slots.iter_mut() {
            if let Some(inst) = st.inst.as_mut() {
                take_counters(inst, &mut st.delta);
            }
            stats.publish(&st.plugin.name, *id, &st.delta, st.state);
            st.delta = PluginMetrics::default();
        }
    }

    /// End of input: everything handed over, metrics published.
    pub fn finish(&mut self, now_ns: u64) {
        self.tick(now_ns);
    }

    fn publish_slot(&self, s: &mut Slot) {
        if let Some(inst) = s.inst.as_mut() {
            take_counters(inst, &mut s.delta);
        }
        self.stats.publish(&s.plugin.name, self.id, &s.delta, s.state);
        s.delta = PluginMetrics::default();
    }

    /// Alerts raised since the last call.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// Run `call` on slot `s`'s instance (starting it if due); `records`
    /// is what the call hands over, for the metrics.
    fn run(&mut self, s: usize, call: impl FnOnce(&mut Instance) -> Result<i32, Crash>, records: u64) {
        let now_sec = self.now_sec;
        let slot = &mut self.slots[s];
        match slot.state {
            SlotState::Quarantined => {
                slot.delta.skipped_records += records;
                return;
            }
            SlotState::Backoff if Instant::now() < slot.retry_at => {
                slot.delta.skipped_records += records;
                return;
            }
            _ => {}
        }
        if slot.inst.is_none() {
            match Instance::start(&slot.plugin, std::mem::take(&mut slot.kv)) {
                Ok(i) => {
                    if slot.started {
                        slot.delta.restarts += 1;
                    }
                    slot.started = true;
                    slot.state = SlotState::Running;
                    slot.inst = Some(i);
                }
                Err((c, kv)) => {
                    slot.kv = kv;
                    slot.started = true;
                    slot.delta.skipped_records += records;
                    self.crashed(s, format!("failed to start: {}", c.0));
                    return;
                }
            }
        }
        let Some(inst) = slot.inst.as_mut() else { return };
        inst.store.data_mut().now_sec = now_sec;
        let t0 = Instant::now();
        let r = call(inst);
        let ns = t0.elapsed().as_nanos() as u64;
        let st = inst.store.data_mut();
        let alerts = std::mem::take(&mut st.alerts);
        slot.delta.alerts += alerts.len() as u64;
        slot.delta.alerts_refused += std::mem::take(&mut st.alerts_refused);
        slot.delta.logs_dropped += std::mem::take(&mut st.logs_dropped);
        self.findings.extend(alerts);
        match r {
            Ok(rc) => {
                slot.delta.calls += 1;
                slot.delta.records += records;
                let _ = slot.delta.call_ns.record(ns.max(1));
                if rc != 0 {
                    slot.delta.errors += 1;
                }
                slot.consecutive = 0;
            }
            Err(c) => {
                slot.delta.skipped_records += records;
                self.crashed(s, c.0);
            }
        }
    }

    fn crashed(&mut self, s: usize, why: String) {
        let slot = &mut self.slots[s];
        if let Some(mut inst) = slot.inst.take() {
            take_counters(&mut inst, &mut slot.delta);
            slot.kv = inst.into_kv();
        }
        let l = slot.plugin.manifest.limits;
        let now = Instant::now();
        slot.delta.traps += 1;
        slot.delta.last_crash = Some(why.clone());
        slot.consecutive += 1;
        slot.crashes.push_back(now);
        let window = Duration::from_secs(l.crash_window_secs);
        while slot.crashes.front().is_some_and(|t| now.duration_since(*t) > window) {
            slot.crashes.pop_front();
        }
        let name = slot.plugin.name.clone();
        if slot.crashes.len() >= l.max_crashes as usize {
            slot.state = SlotState::Quarantined;
            slot.delta.quarantines += 1;
            tracing::error!(
                plugin = %name,
                "{why}; {} crashes within {} s: quarantined (it gets no records until its file changes)",
                slot.crashes.len(),
                l.crash_window_secs
            );
            self.findings.push(Finding {
                group: format!("plugin-quarantine:{name}"),
                absorbed_by: Vec::new(),
                rule_name: Some(format!("{name}/quarantine")),
                rule: "plugin",
                severity: Severity::High,
                category: Category::System,
                verdict: Verdict::Suspicious,
                src_ips: Vec::new(),
                dst_ips: Vec::new(),
                ports: Vec::new(),
                packets: 0,
                bytes: 0,
                flows: 0,
                rate: slot.crashes.len() as f64,
                rate_unit: "crashes".into(),
                top_sources: Vec::new(),
                sample_flows: Vec::new(),
                explanation: format!(
                    "Plugin {name} crashed {} times within {} s (last: {why}) and is quarantined: it gets no more records until its file changes. Capture and the other detectors go on.",
                    slot.crashes.len(),
                    l.crash_window_secs
                ),
            });
        } else {
            slot.state = SlotState::Backoff;
            let backoff = Duration::from_millis(l.restart_backoff_ms)
                .saturating_mul(1 << (slot.consecutive - 1).min(16))
                .min(BACKOFF_MAX);
            slot.retry_at = now + backoff;
            tracing::warn!(plugin = %name, "{why}; restarting in {} ms", backoff.as_millis());
        }
    }

    /// Current state of each plugin here.
    pub fn states(&self) -> Vec<(Arc<str>, SlotState)> {
        self.slots.iter().map(|s| (s.plugin.name.clone(), s.state)).collect()
    }
}

/// Move an instance's counters into `delta`, keeping its names (so counting
/// on allocates nothing).
fn take_counters(inst: &mut Instance, delta: &mut PluginMetrics) {
    for (k, v) in inst.store.data_mut().counters.iter_mut() {
        if *v != 0 {
            match delta.counters.get_mut(k) {
                Some(d) => *d += *v,
                None => {
                    delta.counters.insert(k.clone(), *v);
                }
            }
            *v = 0;
        }
    }
}

/// One plugin instance outside any runner, for benchmarks and tools: no
/// backoff, no quarantine, errors returned as they are.
pub struct Standalone(Instance);

impl Standalone {
    pub fn start(p: &LoadedPlugin) -> Result<Standalone, String> {
        Instance::start(p, Kv::default()).map(Standalone).map_err(|(c, _)| c.0)
    }

    /// Hand `b` over; the plugin's status, or why it crashed.
    pub fn batch(&mut self, b: &BatchBuf) -> Result<i32, String> {
        self.0.batch(b.kind as u32, &b.records, &b.strings, b.count).map_err(|c| c.0)
    }

    /// Alerts raised so far (taken).
    pub fn take_alerts(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.0.store.data_mut().alerts)
    }
}
