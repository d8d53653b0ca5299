//! The aggregation stage: one thread merging every worker's seconds and
//! running the detectors once a second is complete everywhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use super::detectors::Detectors;
use super::{AlertManager, ConvKey, ConvStat, DetectSetup, NameKey, NameStat, SEC, WindowReport};
use crate::alert::Category;
use crate::records::{Output, Table};

type Map = HashMap<ConvKey, ConvStat, foldhash::fast::FixedState>;
pub(crate) type Names = HashMap<NameKey, NameStat, foldhash::fast::FixedState>;

/// One second, merged from every worker.
#[derive(Default)]
pub(crate) struct Second {
    pub convs: Map,
    pub names: Names,
    /// What the workers' plugins raised.
    pub findings: Vec<super::Finding>,
}

/// Merges reports; yields a second once every worker has moved past it.
pub(crate) struct Aggregator {
    watermarks: Vec<u64>,
    pending: BTreeMap<u64, Second>,
    pub overflow: u64,
}

impl Aggregator {
    pub fn new(workers: usize) -> Aggregator {
        Aggregator { watermarks: vec![0; workers.max(1)], pending: BTreeMap::new(), overflow: 0 }
    }

    pub fn add(&mut self, r: WindowReport) {
        let m = self.pending.entry(r.sec).or_default();
        for (k, s) in r.convs {
            m.convs.entry(k).or_default().merge(&s);
        }
        for (k, s) in r.names {
            m.names.entry(k).or_default().merge(&s);
        }
        m.findings.extend(r.findings);
        self.overflow += r.overflow;
        if let Some(w) = self.watermarks.get_mut(r.worker as usize) {
            *w = (*w).max(r.through);
        }
    }

    /// Every worker has reported all seconds before this one.
    pub fn watermark(&self) -> u64 {
        self.watermarks.iter().copied().min().unwrap_or(0)
    }

    /// The oldest complete second, if any.
    pub fn next_complete(&mut self) -> Option<(u64, Second)> {
        let w = self.watermark();
        let (&sec, _) = self.pending.first_key_value()?;
        if sec < w { self.pending.remove(&sec).map(|m| (sec, m)) } else { None }
    }

    /// End of input: everything still pending, oldest first.
    pub fn drain(&mut self) -> Vec<(u64, Second)> {
        std::mem::take(&mut self.pending).into_iter().collect()
    }
}

/// What detection did in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectSummary {
    /// Alerts opened.
    pub alerts: u64,
    /// Alert events written (open, update, close).
    pub events: u64,
    /// Window reports lost because the aggregation stage fell behind (live capture).
    pub dropped_windows: u64,
    /// Conversations folded into unknown-source entries (a worker's table was full).
    pub folded_convs: u64,
}

/// The running aggregation stage: workers send their seconds through `tx`.
pub struct DetectHandle {
    pub tx: Sender<WindowReport>,
    thread: std::thread::JoinHandle<DetectSummary>,
}

impl DetectHandle {
    /// Wait for the stage (after every worker, and so every sender, is gone).
    pub fn join(self) -> DetectSummary {
        drop(self.tx);
        self.thread.join().unwrap_or_default()
    }
}

/// Start the aggregation stage for `workers` workers; alert batches go to `out`.
pub fn start(setup: Arc<DetectSetup>, workers: usize, out: Sender<Vec<Output>>) -> DetectHandle {
    let (tx, rx) = bounded::<WindowReport>(workers.max(1) * 64);
    let thread = std::thread::Builder::new()
        .name("tapstream-detect".into())
        .spawn(move || run(&setup, workers, rx, out))
        .expect("spawn detection thread");
    DetectHandle { tx, thread }
}

fn run(setup: &DetectSetup, workers: usize, rx: Receiver<WindowReport>, out: Sender<Vec<Output>>) -> DetectSummary {
    let mut mgr = match AlertManager::new(setup) {
        Ok(m) => m,
        Err(e) => {
            let log = setup.log.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            tracing::error!("alert log {log}: {e}; alerts go to the alerts table and the feed only");
            AlertManager::new(&DetectSetup { log: None, ..setup.clone() }).expect("no file to open")
        }
    };
    let mut agg = Aggregator::new(workers);
    let mut stages = Stages::new(setup);
    let mut last_sec = 0u64;
    let send = |mgr: &mut AlertManager| {
        if let Some(b) = mgr.take_batch() {
            let _ = out.send(vec![(Table::Alerts, b)]);
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => agg.add(r),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while let Ok(r) = rx.try_recv() {
            agg.add(r);
        }
        stages.feeds.refresh();
        stages.rules.refresh();
        while let Some((sec, m)) = agg.next_complete() {
            stages.second(sec, m, &mut mgr);
            last_sec = sec;
        }
        // Seconds without traffic still end quiet alerts.
        let w = agg.watermark();
        if w != u64::MAX && w > last_sec + 1 {
            mgr.close_quiet(w * SEC);
        }
        send(&mut mgr);
    }
    for (sec, m) in agg.drain() {
        stages.second(sec, m, &mut mgr);
        last_sec = sec;
    }
    if let Some(p) = stages.plugins.as_mut() {
        p.finish((last_sec + 1) * SEC);
        let f = p.take_findings();
        if !f.is_empty() {
            mgr.observe(last_sec, f);
        }
    }
    mgr.close_all((last_sec + 1) * SEC);
    send(&mut mgr);
    DetectSummary { alerts: mgr.opened, events: mgr.events, dropped_windows: 0, folded_convs: agg.overflow }
}

/// Everything that judges a merged second, in order: built-in detectors,
/// threat intel, online reputation, custom rules, global plugins, the anomaly model; then the
/// workers' plugin findings join.
struct Stages<'s> {
    setup: &'s DetectSetup,
    det: Detectors,
    anomaly: super::ml::Anomaly,
    rules: super::rules::RuleSet,
    feeds: super::intel::IntelFeeds,
    reputation: Vec<super::reputation::Stage>,
    plugins: Option<crate::plugin::PluginRunner>,
}

impl<'s> Stages<'s> {
    fn new(setup: &'s DetectSetup) -> Stages<'s> {
        let mut det = Detectors::new(setup.cfg.clone());
        det.geo = setup.geo.clone();
        let close_secs = setup.cfg.close_after_ns / SEC;
        let rules = match &setup.rules_file {
            Some(p) => super::rules::RuleSet::load(p, close_secs).unwrap_or_else(|e| {
                tracing::error!("{e}; no custom rules until the file is fixed");
                super::rules::RuleSet::empty()
            }),
            None => super::rules::RuleSet::empty(),
        };
        Stages {
            setup,
            det,
            anomaly: super::ml::Anomaly::new(setup.cfg.ml.clone()),
            rules,
            feeds: super::intel::IntelFeeds::new(setup.intel_feeds.clone(), setup.intel.clone(), setup.intel_refresh),
            reputation: setup.reputation.iter().map(|l| super::reputation::Stage::new(l.clone())).collect(),
            plugins: setup.plugins.as_ref().map(|p| {
                crate::plugin::PluginRunner::new(crate::plugin::Scope::Global, u16::MAX, p.tap.clone(), p.stats.clone())
            }),
        }
    }

    fn second(&mut self, sec: u64, m: Second, mgr: &mut AlertManager) {
        let mut f = self.det.evaluate(sec, &m.convs, &m.names);
        self.det.intel(&self.feeds.intel, &m.convs, &m.names, &mut f);
        for r in &mut self.reputation {
            r.second(sec, m.convs.iter(), &mut f);
        }
        self.rules.evaluate(sec, &m.convs, self.setup.geo.as_deref(), &mut f);
        if let Some(p) = self.plugins.as_mut() {
            let mut convs: Vec<(ConvKey, ConvStat)> = if p.wants(tapstream_plugin_sdk::Kind::Window) {
                m.convs.iter().map(|(k, s)| (*k, *s)).collect()
            } else {
                Vec::new()
            };
            p.window_second(sec, &mut convs);
            f.extend(p.take_findings());
        }
        let explained = f.iter().any(|x| matches!(x.category, Category::Flood | Category::Ddos | Category::Scan));
        self.anomaly.evaluate(sec, &super::ml::counts(&m.convs, &m.names), explained, &mut f);
        f.extend(m.findings);
        mgr.observe(sec, f);
    }
}
