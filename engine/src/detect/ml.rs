//! Anomaly detection with an isolation forest over one feature vector per
//! second of traffic. Trained on a baseline (history, or the first minutes
//! of a live run), saved as JSON and reloaded; a second that isolates in few
//! splits is unusual. Scores map to verdicts by thresholds, and each alert
//! names the features furthest from what the baseline held.

use serde::{Deserialize, Serialize};

/// The features, in vector order.
pub const FEATURES: [&str; 9] = [
    "packets/s",
    "bytes/s",
    "sources",
    "destinations",
    "destination ports",
    "unanswered SYN share",
    "mean packet size",
    "protocol-mix entropy",
    "DNS failure rate",
];
pub const NF: usize = FEATURES.len();

/// One second's features, raw (not scaled).
pub type Features = [f64; NF];

/// Counts of one second, from which the features are computed (live, from
/// the merged conversations; from history, by SQL over `stats`, `flows` and
/// `dns`: the same definitions).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SecondCounts {
    pub packets: f64,
    pub bytes: f64,
    /// Distinct sources, destinations and destination ports of new flows.
    pub sources: f64,
    pub destinations: f64,
    pub ports: f64,
    /// New TCP flows opened with a SYN, and those that failed (no SYN-ACK).
    pub syn: f64,
    pub syn_unanswered: f64,
    pub tcp_packets: f64,
    pub udp_packets: f64,
    pub icmp_packets: f64,
    pub other_packets: f64,
    pub dns_queries: f64,
    pub dns_nxdomain: f64,
}

impl SecondCounts {
    pub fn features(&self) -> Features {
        let total = self.tcp_packets + self.udp_packets + self.icmp_packets + self.other_packets;
        let entropy = if total > 0.0 {
            [self.tcp_packets, self.udp_packets, self.icmp_packets, self.other_packets]
                .iter()
                .filter(|&&c| c > 0.0)
                .map(|&c| {
                    let p = c / total;
                    -p * p.log2()
                })
                .sum()
        } else {
            0.0
        };
        [
            self.packets,
            self.bytes,
            self.sources,
            self.destinations,
            self.ports,
            if self.syn > 0.0 { self.syn_unanswered / self.syn } else { 0.0 },
            if self.packets > 0.0 { self.bytes / self.packets } else { 0.0 },
            entropy,
            if self.dns_queries > 0.0 { (self.dns_nxdomain / self.dns_queries).min(1.0) } else { 0.0 },
        ]
    }
}

/// Rates and counts spread over orders of magnitude: the trees split on
/// log scale; shares stay as they are.
fn scale(x: &Features) -> Features {
    let mut y = *x;
    for (i, v) in y.iter_mut().enumerate() {
        if matches!(i, 0..=4 | 6) {
            *v = (v.max(0.0)).ln_1p();
        }
    }
    y
}

/// Expected path length of an unsuccessful search in a binary search tree
/// of `n` points: the forest's normaliser (Liu, Ting and Zhou, 2008).
pub fn c(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n <= 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
    }
}

/// A tree node. Splits are random hyperplanes (the extended isolation
/// forest of Hariri, Carrasco Kind and Brunner, 2018): a point goes left
/// when `(x - point) · normal < 0`. Axis-parallel splits (the original
/// forest) see an outlier in one feature only when they happen to cut that
/// feature; a random hyperplane nearly always involves it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Node {
    Split { normal: Vec<f64>, point: Vec<f64>, left: Box<Node>, right: Box<Node> },
    Leaf { size: usize },
}

/// SplitMix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A standard normal deviate (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn side(x: &Features, normal: &[f64], point: &[f64]) -> bool {
    let mut d = 0.0;
    for f in 0..NF {
        d += (x[f] - point[f]) * normal[f];
    }
    d < 0.0
}

fn grow(points: &mut [Features], depth: usize, limit: usize, rng: &mut Rng) -> Node {
    if points.len() <= 1 || depth >= limit {
        return Node::Leaf { size: points.len() };
    }
    // The points' bounding box; features that do not vary get no weight.
    let mut normal = vec![0.0; NF];
    let mut point = vec![0.0; NF];
    let mut varies = false;
    for f in 0..NF {
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p[f]), hi.max(p[f])));
        point[f] = lo + rng.unit() * (hi - lo);
        if hi > lo {
            normal[f] = rng.normal();
            varies = true;
        }
    }
    if !varies {
        return Node::Leaf { size: points.len() };
    }
    let mut i = 0;
    for j in 0..points.len() {
        if side(&points[j], &normal, &point) {
            points.swap(i, j);
            i += 1;
        }
    }
    let (l, r) = points.split_at_mut(i);
    Node::Split {
        normal,
        point,
        left: Box::new(grow(l, depth + 1, limit, rng)),
        right: Box::new(grow(r, depth + 1, limit, rng)),
    }
}

fn path(node: &Node, x: &Features, depth: f64) -> f64 {
    match node {
        Node::Leaf { size } => depth + c(*size as f64),
        Node::Split { normal, point, left, right } => {
            if side(x, normal, point) {
                path(left, x, depth + 1.0)
            } else {
                path(right, x, depth + 1.0)
            }
        }
    }
}

/// A trained forest and what its baseline looked like.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Model {
    pub version: u32,
    pub trees: Vec<Node>,
    pub sample: usize,
    /// Per feature, the baseline's median and spread (median absolute
    /// deviation, floored), on the scaled values: for explanations.
    pub median: Vec<f64>,
    pub spread: Vec<f64>,
    /// Baseline seconds trained on, and their time range (ns).
    pub seconds: usize,
    pub from_ns: u64,
    pub to_ns: u64,
    pub features: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("training needs at least {need} seconds of traffic, got {got}")]
    TooLittle { need: usize, got: usize },
    #[error("model file {path}: {msg}")]
    File { path: String, msg: String },
}

fn standardise(x: &Features, median: &[f64], spread: &[f64]) -> Features {
    let mut y = *x;
    for f in 0..NF {
        y[f] = ((x[f] - median[f]) / spread[f]).clamp(-1e3, 1e3);
    }
    y
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub const MIN_SECONDS: usize = 30;

impl Model {
    /// Train `trees` trees on subsamples of `sample` seconds.
    pub fn train(
        seconds: &[Features],
        trees: usize,
        sample: usize,
        seed: u64,
        from_ns: u64,
        to_ns: u64,
    ) -> Result<Model, ModelError> {
        if seconds.len() < MIN_SECONDS {
            return Err(ModelError::TooLittle { need: MIN_SECONDS, got: seconds.len() });
        }
        let scaled: Vec<Features> = seconds.iter().map(scale).collect();
        let mut median_v = Vec::with_capacity(NF);
        let mut spread = Vec::with_capacity(NF);
        for f in 0..NF {
            let mut col: Vec<f64> = scaled.iter().map(|p| p[f]).collect();
            let m = median(&mut col);
            let mut dev: Vec<f64> = col.iter().map(|x| (x - m).abs()).collect();
            let mad = median(&mut dev);
            median_v.push(m);
            spread.push(mad.max(if matches!(f, 0..=4 | 6) { 0.1 } else { 0.02 }));
        }
        // The forest works on standardised values, so every feature's
        // scale weighs alike in the random hyperplanes.
        let scaled: Vec<Features> = scaled.iter().map(|x| standardise(x, &median_v, &spread)).collect();
        let sample = sample.clamp(2, scaled.len());
        let limit = (sample as f64).log2().ceil() as usize;
        let mut rng = Rng(seed ^ 0x150f_0e57);
        let mut out = Vec::with_capacity(trees);
        for _ in 0..trees.max(1) {
            // Subsample without replacement (partial Fisher–Yates).
            let mut idx: Vec<usize> = (0..scaled.len()).collect();
            for i in 0..sample {
                let j = i + rng.below(idx.len() - i);
                idx.swap(i, j);
            }
            let mut pts: Vec<Features> = idx[..sample].iter().map(|&i| scaled[i]).collect();
            out.push(grow(&mut pts, 0, limit, &mut rng));
        }
        Ok(Model {
            version: 2,
            trees: out,
            sample,
            median: median_v,
            spread,
            seconds: seconds.len(),
            from_ns,
            to_ns,
            features: FEATURES.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The anomaly score in (0, 1): near 1 isolates fast (anomalous), about
    /// 0.5 or less is ordinary.
    pub fn score(&self, x: &Features) -> f64 {
        let s = standardise(&scale(x), &self.median, &self.spread);
        let mean = self.trees.iter().map(|t| path(t, &s, 0.0)).sum::<f64>() / self.trees.len().max(1) as f64;
        2f64.powf(-mean / c(self.sample as f64))
    }

    /// The features furthest from the baseline, most deviant first, with
    /// how many spreads away (signed: above or below the usual).
    pub fn drivers(&self, x: &Features) -> Vec<(usize, f64)> {
        let s = scale(x);
        let mut v: Vec<(usize, f64)> = (0..NF).map(|f| (f, (s[f] - self.median[f]) / self.spread[f])).collect();
        v.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        v
    }

    /// The baseline's typical raw value of feature `f`.
    pub fn usual(&self, f: usize) -> f64 {
        let m = self.median[f];
        if matches!(f, 0..=4 | 6) { m.exp_m1() } else { m }
    }

    pub fn save(&self, path: &std::path::Path) -> Result<(), ModelError> {
        let err = |e: String| ModelError::File { path: path.display().to_string(), msg: e };
        let text = serde_json::to_string(self).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    pub fn load(path: &std::path::Path) -> Result<Model, ModelError> {
        let err = |e: String| ModelError::File { path: path.display().to_string(), msg: e };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let m: Model = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if m.version != 2 || m.median.len() != NF || m.spread.len() != NF || m.trees.is_empty() {
            return Err(err(format!("not a version-2 model of the {NF} features")));
        }
        Ok(m)
    }
}

/// One second's counts from the merged conversations and names.
pub fn counts(
    convs: &std::collections::HashMap<super::ConvKey, super::ConvStat, foldhash::fast::FixedState>,
    names: &super::agg::Names,
) -> SecondCounts {
    use crate::decode::{PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP};
    let mut c = SecondCounts::default();
    let mut srcs = std::collections::HashSet::new();
    let mut dsts = std::collections::HashSet::new();
    let mut ports = std::collections::HashSet::new();
    for (k, s) in convs {
        let p = (s.pkts + s.rpkts) as f64;
        c.packets += p;
        c.bytes += (s.bytes + s.rbytes) as f64;
        match k.proto {
            PROTO_TCP => c.tcp_packets += p,
            PROTO_UDP => c.udp_packets += p,
            PROTO_ICMP | PROTO_ICMP6 => c.icmp_packets += p,
            _ => c.other_packets += p,
        }
        if s.flows > 0 {
            if k.src_known() {
                srcs.insert((k.src, k.v6));
            }
            dsts.insert((k.dst, k.v6));
            ports.insert((k.proto, k.dport));
        }
        if k.proto == PROTO_TCP {
            c.syn += s.syn as f64;
            // Failed attempts (refused, or unanswered well after they were
            // sent): what the flows table's S0/REJ connections are in history.
            c.syn_unanswered += s.failed as f64;
        }
    }
    for s in names.values() {
        c.dns_queries += s.queries as f64;
        c.dns_nxdomain += s.nxdomain as f64;
    }
    c.sources = srcs.len() as f64;
    c.destinations = dsts.len() as f64;
    c.ports = ports.len() as f64;
    c
}

/// The aggregation stage's model: loaded, or learning from the first
/// seconds, then scoring.
pub(crate) struct Anomaly {
    cfg: super::MlConfig,
    pub model: Option<Model>,
    learning: Vec<Features>,
    first_ns: u64,
    run: u64,
    /// The first second seen: for a minute after it, every connection
    /// already open looks new to an empty flow table, so seconds are
    /// neither learnt from nor judged.
    start: u64,
}

/// Seconds after the start of a run that the model ignores.
pub const SETTLE_SECS: u64 = 60;

impl Anomaly {
    pub fn new(cfg: super::MlConfig) -> Anomaly {
        let model = match (&cfg.model, cfg.enabled) {
            (Some(p), true) if p.exists() => match Model::load(p) {
                Ok(m) => {
                    tracing::info!(path = %p.display(), seconds = m.seconds, "anomaly model loaded");
                    Some(m)
                }
                Err(e) => {
                    tracing::error!("{e}; anomaly detection off until a model is trained");
                    None
                }
            },
            _ => None,
        };
        Anomaly { cfg, model, learning: Vec::new(), first_ns: 0, run: 0, start: 0 }
    }

    /// Judge second `sec`; `explained`: another detector already alerted on
    /// this second's traffic (its attack is that alert, not an anomaly too).
    pub fn evaluate(&mut self, sec: u64, c: &SecondCounts, explained: bool, out: &mut Vec<super::Finding>) {
        if !self.cfg.enabled {
            return;
        }
        if self.start == 0 {
            self.start = sec;
        }
        if sec < self.start + SETTLE_SECS {
            return;
        }
        let x = c.features();
        let Some(model) = &self.model else {
            if self.cfg.learn_secs == 0 {
                return;
            }
            if self.first_ns == 0 {
                self.first_ns = sec * 1_000_000_000;
            }
            if !explained {
                self.learning.push(x);
            }
            if self.learning.len() as u64 >= self.cfg.learn_secs {
                match Model::train(
                    &self.learning,
                    self.cfg.trees,
                    self.cfg.sample,
                    sec,
                    self.first_ns,
                    (sec + 1) * 1_000_000_000,
                ) {
                    Ok(m) => {
                        tracing::info!(seconds = m.seconds, "anomaly model learned from the first seconds of traffic");
                        if let Some(p) = &self.cfg.model
                            && let Err(e) = m.save(p)
                        {
                            tracing::error!("{e}");
                        }
                        self.model = Some(m);
                    }
                    Err(e) => tracing::error!("anomaly model: {e}"),
                }
                self.learning = Vec::new();
            }
            return;
        };
        let score = model.score(&x);
        if score < self.cfg.suspicious || explained {
            self.run = 0;
            return;
        }
        self.run += 1;
        if self.run < self.cfg.for_secs.max(1) {
            return;
        }
        let verdict = if score >= self.cfg.malicious {
            crate::alert::Verdict::Malicious
        } else {
            crate::alert::Verdict::Suspicious
        };
        let drivers: Vec<String> = model
            .drivers(&x)
            .into_iter()
            .take(3)
            .filter(|(_, z)| z.abs() >= 3.0)
            .map(|(f, _)| {
                let fmt =
                    |v: f64| if matches!(f, 5 | 7 | 8) { format!("{v:.2}") } else { super::detectors::thousands(v) };
                format!("{} {} (usual {})", FEATURES[f], fmt(x[f]), fmt(model.usual(f)))
            })
            .collect();
        out.push(super::Finding {
            group: "anomaly:link".into(),
            // One unusual stretch of traffic is one alert, whichever of the
            // spike detector and the model saw it first.
            absorbed_by: vec!["spike:link".into()],
            rule_name: None,
            rule: "ml_anomaly",
            severity: if verdict == crate::alert::Verdict::Malicious {
                crate::alert::Severity::High
            } else {
                crate::alert::Severity::Medium
            },
            category: crate::alert::Category::Anomaly,
            verdict,
            src_ips: vec![],
            dst_ips: vec![],
            ports: vec![],
            packets: c.packets as u64,
            bytes: c.bytes as u64,
            flows: 0,
            rate: score,
            rate_unit: "score".into(),
            top_sources: vec![],
            sample_flows: vec![],
            explanation: format!(
                "traffic scores {score:.2} as an anomaly ({} from {:.2}, {} from {:.2}) against the model of {} baseline seconds, for {} s: {}",
                "suspicious",
                self.cfg.suspicious,
                "malicious",
                self.cfg.malicious,
                model.seconds,
                self.run,
                if drivers.is_empty() { "no single feature stands out; their combination is unusual".to_string() } else { drivers.join(", ") }
            ),
        });
    }
}
