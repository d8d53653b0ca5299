//! The built-in detectors, run once per second on the merged view of every
//! worker. Each finding names the group it belongs to: findings of one
//! group (one target host under attack, one scanning source, the link) are
//! one alert, so one attack is one alert however many detectors see it.

use std::collections::{HashMap, HashSet};

use super::{ConvKey, ConvStat, DetectConfig, NameKey, severity_for};
use crate::alert::{Category, Severity, Verdict};
use crate::decode::{PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP, addr};
use crate::flow::uid_string;

type Addr = ([u8; 16], bool);

/// What a detector saw in one second.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Findings with the same group are one alert.
    pub group: String,
    /// Groups that take this finding in when one of them is open (a
    /// volumetric DDoS on a host already alerted on for a SYN flood is that
    /// flood, not a second alert).
    pub absorbed_by: Vec<String>,
    /// A custom rule's name (`rule` is then `custom`).
    pub rule_name: Option<String>,
    pub rule: &'static str,
    pub severity: Severity,
    pub category: Category,
    pub verdict: Verdict,
    pub src_ips: Vec<String>,
    pub dst_ips: Vec<String>,
    pub ports: Vec<u16>,
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    pub rate: f64,
    pub rate_unit: std::borrow::Cow<'static, str>,
    pub top_sources: Vec<String>,
    pub sample_flows: Vec<String>,
    pub explanation: String,
}

pub(crate) fn ip(a: &Addr) -> String {
    addr(a.1, &a.0).to_string()
}

/// What one listed address (a threat-feed entry, an address a reputation
/// service flags) exchanged with its peers in one second.
#[derive(Default)]
pub(crate) struct Contact {
    pub peers: HashMap<Addr, u64>,
    /// Responder ports, the first ten.
    pub ports: Vec<u16>,
    pub pkts: u64,
    pub bytes: u64,
    pub flows: u64,
    pub samples: Vec<u64>,
    /// Our side reached out to it (it was the responder at least once).
    pub outbound: bool,
}

impl Contact {
    /// Count conversation `k` with the listed address on the `outbound`
    /// side (responder) or not (originator); `peer` is the other end.
    pub fn add(&mut self, k: &ConvKey, s: &ConvStat, peer: &[u8; 16], outbound: bool) {
        self.outbound |= outbound;
        if *peer != [0; 16] {
            *self.peers.entry((*peer, k.v6)).or_default() += s.pkts + s.rpkts;
        }
        if self.ports.len() < 10 && !self.ports.contains(&k.dport) {
            self.ports.push(k.dport);
        }
        self.pkts += s.pkts + s.rpkts;
        self.bytes += s.bytes + s.rbytes;
        self.flows += s.flows as u64;
        push_sample(&mut self.samples, s.sample);
    }

    /// The `n` busiest peers.
    pub fn top_peers(&self, n: usize) -> Vec<(Addr, u64)> {
        top(&self.peers, n)
    }

    /// "N packets, N bytes, N new flows".
    pub fn figures(&self) -> String {
        format!(
            "{} packets, {} bytes, {} new flows",
            thousands(self.pkts as f64),
            thousands(self.bytes as f64),
            thousands(self.flows as f64)
        )
    }

    pub fn port_list(&self) -> String {
        self.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// `48000.0` → `48,000`.
pub(crate) fn thousands(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.0}%", (x * 100.0).clamp(0.0, 100.0))
}

/// An exponentially weighted moving average with bias correction, fed once
/// per second (seconds without data count as zero).
#[derive(Clone, Copy, Debug, Default)]
struct Ewma {
    value: f64,
    first_sec: u64,
    last_sec: u64,
}

impl Ewma {
    fn update(&mut self, sec: u64, x: f64, tau: f64) {
        let keep = (-1.0 / tau).exp();
        if self.first_sec == 0 {
            self.first_sec = sec;
        } else if sec > self.last_sec + 1 {
            self.value *= keep.powf((sec - self.last_sec - 1) as f64);
        }
        self.value = self.value * keep + x * (1.0 - keep);
        self.last_sec = sec;
    }

    /// The average, corrected for having started at zero.
    fn get(&self, sec: u64, tau: f64) -> f64 {
        if self.first_sec == 0 {
            return 0.0;
        }
        let n = (self.last_sec - self.first_sec + 1) as f64;
        let keep = (-1.0 / tau).exp();
        let corr = 1.0 - keep.powf(n);
        // Seconds with no traffic since the last update count as zeros (the
        // second being judged is not one of them).
        let decay = keep.powf(sec.saturating_sub(self.last_sec + 1) as f64);
        if corr <= 0.0 { 0.0 } else { self.value * decay / corr }
    }

    fn age(&self, sec: u64) -> u64 {
        if self.first_sec == 0 { 0 } else { sec.saturating_sub(self.first_sec) }
    }
}

/// Everything sent to one host in a second.
#[derive(Default)]
struct Target {
    pkts: u64,
    bytes: u64,
    rpkts: u64,
    udp_pkts: u64,
    udp_bytes: u64,
    udp_rpkts: u64,
    icmp_pkts: u64,
    icmp_bytes: u64,
    flows: u64,
    srcs: HashMap<Addr, u64>,
    /// Unknown sources (folded when a worker's table was full).
    folded_srcs: bool,
    /// Per TCP port: (SYNs, answered, rejected, packets, bytes, sources, samples).
    syn_ports: HashMap<u16, SynPort>,
    udp_ports: HashMap<u16, u64>,
    samples: Vec<u64>,
}

#[derive(Default)]
struct SynPort {
    syn: u64,
    answered: u64,
    pkts: u64,
    bytes: u64,
    srcs: HashMap<Addr, u64>,
    samples: Vec<u64>,
}

#[derive(Default)]
struct ScanSrc {
    /// (destination, protocol, port) → last second a failed attempt was seen.
    pairs: HashMap<(Addr, u8, u16), u64>,
    last_sec: u64,
    samples: Vec<u64>,
}

const MAX_SCAN_PAIRS: usize = 8192;
const MAX_BASELINES: usize = 200_000;
const MAX_SCAN_SOURCES: usize = 100_000;

/// The detectors' memory across seconds.
pub struct Detectors {
    cfg: DetectConfig,
    /// Per destination host: packets/s.
    baselines: HashMap<Addr, Ewma>,
    link_pps: Ewma,
    spike_run: u64,
    scans: HashMap<Addr, ScanSrc>,
    last_sweep: u64,
    domains: HashMap<String, DomainState>,
    nx: HashMap<Addr, NxState>,
    pub geo: Option<std::sync::Arc<crate::geo::Geo>>,
}

#[derive(Default)]
struct DomainState {
    /// Name (left of the domain) → (last second seen, length, entropy).
    names: HashMap<String, (u64, usize, f64)>,
    clients: HashMap<Addr, u64>,
    servers: Vec<Addr>,
    samples: Vec<u64>,
    last_sec: u64,
}

#[derive(Default)]
struct NxState {
    /// Per second: (second, NXDOMAIN answers, queries).
    secs: std::collections::VecDeque<(u64, u64, u64)>,
    names: Vec<String>,
    samples: Vec<u64>,
}

const MAX_DOMAIN_NAMES: usize = 4096;
const MAX_DOMAINS: usize = 100_000;

/// The registered domain of `name` and what is left of it: `a.b.example.com`
/// → (`example.com`, `a.b`). Two labels, or three under a two-letter country
/// code with a generic second level (`example.co.uk`).
pub(crate) fn split_domain(name: &str) -> (&str, &str) {
    let labels: Vec<&str> = name.split('.').collect();
    let n = labels.len();
    if n <= 2 {
        return (name, "");
    }
    let cc_sld = labels[n - 1].len() == 2
        && matches!(labels[n - 2], "co" | "com" | "net" | "org" | "gov" | "edu" | "ac" | "or" | "ne" | "go");
    let keep = if cc_sld { 3 } else { 2 };
    if n <= keep {
        return (name, "");
    }
    let cut: usize = labels[..n - keep].iter().map(|l| l.len() + 1).sum();
    (&name[cut..], &name[..cut - 1])
}

/// Shannon entropy of `s` in bits per character (dots not counted).
pub(crate) fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes().filter(|&b| b != b'.') {
        counts[b as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

fn top<K: Clone + Ord>(m: &HashMap<K, u64>, n: usize) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = m.iter().map(|(k, c)| (k.clone(), *c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn push_sample(v: &mut Vec<u64>, uid: u64) {
    if uid != 0 && v.len() < 5 && !v.contains(&uid) {
        v.push(uid);
    }
}

impl Detectors {
    pub fn new(cfg: DetectConfig) -> Detectors {
        Detectors {
            cfg,
            baselines: HashMap::new(),
            link_pps: Ewma::default(),
            spike_run: 0,
            scans: HashMap::new(),
            last_sweep: 0,
            domains: HashMap::new(),
            nx: HashMap::new(),
            geo: None,
        }
    }

    /// Judge second `sec` from every conversation seen in it.
    pub fn evaluate(
        &mut self,
        sec: u64,
        convs: &HashMap<ConvKey, ConvStat, foldhash::fast::FixedState>,
        names: &super::agg::Names,
    ) -> Vec<Finding> {
        let mut targets: HashMap<Addr, Target> = HashMap::new();
        let mut total_pkts = 0u64;
        for (k, s) in convs {
            total_pkts += s.pkts + s.rpkts;
            let t = targets.entry((k.dst, k.v6)).or_default();
            t.pkts += s.pkts;
            t.bytes += s.bytes;
            t.rpkts += s.rpkts;
            t.flows += s.flows as u64;
            if k.src_known() {
                *t.srcs.entry((k.src, k.v6)).or_default() += s.pkts;
            } else {
                t.folded_srcs = true;
            }
            push_sample(&mut t.samples, s.sample);
            match k.proto {
                PROTO_TCP if s.syn > 0 => {
                    let p = t.syn_ports.entry(k.dport).or_default();
                    p.syn += s.syn as u64;
                    p.answered += s.answered as u64;
                    p.pkts += s.pkts;
                    p.bytes += s.bytes;
                    if k.src_known() {
                        *p.srcs.entry((k.src, k.v6)).or_default() += s.syn as u64;
                    }
                    push_sample(&mut p.samples, s.sample);
                }
                PROTO_UDP => {
                    t.udp_pkts += s.pkts;
                    t.udp_bytes += s.bytes;
                    t.udp_rpkts += s.rpkts;
                    *t.udp_ports.entry(k.dport).or_default() += s.pkts;
                }
                PROTO_ICMP | PROTO_ICMP6 => {
                    t.icmp_pkts += s.pkts;
                    t.icmp_bytes += s.bytes;
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        let mut under_attack: HashSet<Addr> = HashSet::new();
        let mut attack_pps = 0u64;
        let tau = self.cfg.baseline_tau_secs.max(1) as f64;
        let mut dsts: Vec<&Addr> = targets.keys().collect();
        dsts.sort();
        for dst in dsts {
            let t = &targets[dst];
            let base = self.baselines.get(dst).map_or(0.0, |b| b.get(sec, tau));
            let learned = self.baselines.get(dst).is_some_and(|b| b.age(sec) >= self.cfg.ddos.warmup_secs);
            let before = out.len();
            self.syn_flood(dst, t, base, &mut out);
            if out.len() == before {
                self.udp_flood(dst, t, base, learned, &mut out);
            }
            if out.len() == before {
                self.icmp_flood(dst, t, &mut out);
            }
            if out.len() == before {
                self.ddos(dst, t, base, learned, &mut out);
            }
            if out.len() > before {
                under_attack.insert(*dst);
                attack_pps += t.pkts;
            }
        }
        // Baselines learn from normal seconds only.
        for (dst, t) in &targets {
            if under_attack.contains(dst) {
                continue;
            }
            if self.baselines.len() >= MAX_BASELINES && !self.baselines.contains_key(dst) {
                continue;
            }
            self.baselines.entry(*dst).or_default().update(sec, t.pkts as f64, tau);
        }
        if self.baselines.len() >= MAX_BASELINES {
            // Forget the hosts not seen for the longest.
            let horizon = sec.saturating_sub(self.cfg.baseline_tau_secs);
            self.baselines.retain(|_, b| b.last_sec > horizon);
        }
        self.scan(sec, convs, &under_attack, &mut out);
        self.spike(sec, total_pkts, attack_pps, &mut out);
        self.dns(sec, names, &mut out);
        self.policy(convs, &mut out);
        self.countries(convs, &mut out);
        out
    }

    fn dns(&mut self, sec: u64, names: &super::agg::Names, out: &mut Vec<Finding>) {
        let c = self.cfg.dns.clone();
        if !c.enabled {
            return;
        }
        let mut touched: Vec<String> = Vec::new();
        let mut nx_touched: Vec<Addr> = Vec::new();
        let mut keys: Vec<&NameKey> = names.keys().filter(|k| names[*k].queries > 0).collect();
        keys.sort_by(|a, b| (&a.name, a.client, a.v6).cmp(&(&b.name, b.client, b.v6)));
        for k in keys {
            let st = &names[k];
            let client = (k.client, k.v6);
            // NXDOMAIN answers per client
            let e = self.nx.entry(client).or_default();
            match e.secs.back_mut() {
                Some(last) if last.0 == sec => {
                    last.1 += st.nxdomain as u64;
                    last.2 += st.queries as u64;
                }
                _ => e.secs.push_back((sec, st.nxdomain as u64, st.queries as u64)),
            }
            if st.nxdomain > 0 {
                if e.names.len() < 5 && !e.names.contains(&k.name) {
                    e.names.push(k.name.clone());
                }
                push_sample(&mut e.samples, st.sample);
            }
            nx_touched.push(client);
            // names per registered domain
            let (domain, sub) = split_domain(&k.name);
            if sub.is_empty() {
                continue;
            }
            if self.domains.len() >= MAX_DOMAINS && !self.domains.contains_key(domain) {
                continue;
            }
            let d = self.domains.entry(domain.to_string()).or_default();
            d.last_sec = sec;
            if d.names.len() < MAX_DOMAIN_NAMES || d.names.contains_key(sub) {
                d.names.insert(sub.to_string(), (sec, sub.len(), entropy(sub)));
            }
            *d.clients.entry(client).or_default() += st.queries as u64;
            let server = (st.server, k.v6);
            if d.servers.len() < 5 && !d.servers.contains(&server) {
                d.servers.push(server);
            }
            push_sample(&mut d.samples, st.sample);
            touched.push(domain.to_string());
        }
        touched.sort();
        touched.dedup();
        let horizon = sec.saturating_sub(c.window_secs);
        for domain in touched {
            let Some(d) = self.domains.get_mut(&domain) else { continue };
            d.names.retain(|_, v| v.0 > horizon);
            let n = d.names.len() as u64;
            if n < c.tunnel_names {
                continue;
            }
            let len = d.names.values().map(|v| v.1 as f64).sum::<f64>() / n as f64;
            let ent = d.names.values().map(|v| v.2).sum::<f64>() / n as f64;
            if len < c.tunnel_min_length || ent < c.tunnel_min_entropy {
                continue;
            }
            let tops = top(&d.clients, 5);
            let example = d.names.keys().min().cloned().unwrap_or_default();
            out.push(Finding {
                group: format!("dns_tunnel:{domain}"),
                absorbed_by: vec![],
                rule_name: None,
                rule: "dns_tunnel",
                severity: severity_for(n as f64 / c.tunnel_names as f64),
                category: Category::Anomaly,
                verdict: Verdict::Suspicious,
                src_ips: tops.iter().map(|(a, _)| ip(a)).collect(),
                dst_ips: d.servers.iter().map(ip).collect(),
                ports: vec![53],
                packets: 0,
                bytes: 0,
                flows: n,
                rate: n as f64 / c.window_secs as f64,
                rate_unit: "names/s".into(),
                top_sources: tops.iter().map(|(a, q)| format!("{} ({q} queries)", ip(a))).collect(),
                sample_flows: d.samples.iter().map(|u| uid_string(*u)).collect(),
                explanation: format!(
                    "{} distinct names under {domain} in the last {} s, {len:.0} characters long on average with \
                     {ent:.1} bits of entropy per character (e.g. {example}.{domain}): data tunnelled through DNS?",
                    thousands(n as f64),
                    c.window_secs,
                ),
            });
        }
        let nx_horizon = sec.saturating_sub(c.nx_window_secs);
        nx_touched.sort();
        nx_touched.dedup();
        for client in nx_touched {
            let Some(e) = self.nx.get_mut(&client) else { continue };
            while e.secs.front().is_some_and(|x| x.0 <= nx_horizon) {
                e.secs.pop_front();
            }
            let (nx, q) = e.secs.iter().fold((0, 0), |a, x| (a.0 + x.1, a.1 + x.2));
            if nx < c.nx_answers || (nx as f64) < c.nx_ratio * q as f64 {
                continue;
            }
            out.push(Finding {
                group: format!("dns_nx:{}", ip(&client)),
                absorbed_by: vec![],
                rule_name: None,
                rule: "dns_nxdomain_storm",
                severity: severity_for(nx as f64 / c.nx_answers as f64),
                category: Category::Anomaly,
                verdict: Verdict::Suspicious,
                src_ips: vec![ip(&client)],
                dst_ips: vec![],
                ports: vec![53],
                packets: 0,
                bytes: 0,
                flows: q,
                rate: nx as f64 / c.nx_window_secs as f64,
                rate_unit: "nxdomain/s".into(),
                top_sources: vec![ip(&client)],
                sample_flows: e.samples.iter().map(|u| uid_string(*u)).collect(),
                explanation: format!(
                    "{} got {} NXDOMAIN answers in the last {} s ({} of its {} queries), e.g. {}",
                    ip(&client),
                    thousands(nx as f64),
                    c.nx_window_secs,
                    pct(nx as f64 / q.max(1) as f64),
                    thousands(q as f64),
                    e.names.join(", ")
                ),
            });
        }
        if sec.is_multiple_of(10) {
            self.domains.retain(|_, d| d.last_sec > horizon);
            self.nx.retain(|_, e| e.secs.back().is_some_and(|x| x.0 > nx_horizon));
        }
    }

    /// Traffic to or from listed addresses, and listed names looked up or
    /// contacted. One alert per indicator.
    pub fn intel(
        &mut self,
        intel: &super::intel::Intel,
        convs: &HashMap<ConvKey, ConvStat, foldhash::fast::FixedState>,
        names: &super::agg::Names,
        out: &mut Vec<Finding>,
    ) {
        if intel.is_empty() {
            return;
        }
        #[derive(Default)]
        struct Hit {
            feed: String,
            c: Contact,
            seen_in: u8,
        }
        let mut hits: HashMap<String, Hit> = HashMap::new();
        for (k, s) in convs {
            for (listed, peer, outbound) in [(&k.dst, &k.src, true), (&k.src, &k.dst, false)] {
                if !outbound && !k.src_known() {
                    continue;
                }
                let Some(feed) = intel.ip(listed, k.v6) else { continue };
                let h = hits.entry(ip(&(*listed, k.v6))).or_default();
                h.feed = feed.to_string();
                h.c.add(k, s, peer, outbound);
            }
        }
        for (k, s) in names {
            let Some((listed, feed)) = intel.domain(&k.name) else { continue };
            let h = hits.entry(listed.to_string()).or_default();
            h.feed = feed.to_string();
            h.c.outbound = true;
            h.seen_in |= s.seen_in;
            *h.c.peers.entry((k.client, k.v6)).or_default() += (s.queries + s.other) as u64;
            h.c.flows += (s.queries + s.other) as u64;
            push_sample(&mut h.c.samples, s.sample);
        }
        let mut keys: Vec<String> = hits.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let h = &hits[&key];
            let c = &h.c;
            let peers = c.top_peers(5);
            let peer_list = peers.iter().map(|(a, _)| ip(a)).collect::<Vec<_>>();
            let how = if h.seen_in != 0 {
                let mut w = Vec::new();
                if h.seen_in & super::NAME_DNS != 0 {
                    w.push("looked up in DNS");
                }
                if h.seen_in & super::NAME_SNI != 0 {
                    w.push("named in TLS (SNI)");
                }
                if h.seen_in & super::NAME_HTTP != 0 {
                    w.push("asked for over HTTP");
                }
                format!("{key} (listed by {}) {} by {}", h.feed, w.join(", "), peer_list.join(", "))
            } else if c.outbound {
                format!(
                    "{} talked to {key}, listed by {}: {}, ports {}",
                    peer_list.join(", "),
                    h.feed,
                    c.figures(),
                    c.port_list()
                )
            } else {
                format!("{key}, listed by {}, reached {}: {}", h.feed, peer_list.join(", "), c.figures())
            };
            let (src_ips, dst_ips) = if c.outbound {
                (peer_list.clone(), vec![key.clone()])
            } else {
                (vec![key.clone()], peer_list.clone())
            };
            out.push(Finding {
                group: format!("intel:{key}"),
                absorbed_by: vec![],
                rule_name: None,
                rule: "threat_intel",
                severity: Severity::High,
                category: Category::Intel,
                verdict: Verdict::Malicious,
                src_ips,
                dst_ips,
                ports: c.ports.clone(),
                packets: c.pkts,
                bytes: c.bytes,
                flows: c.flows,
                rate: c.pkts as f64,
                rate_unit: "packets/s".into(),
                top_sources: peers.iter().map(|(a, n)| format!("{} ({n})", ip(a))).collect(),
                sample_flows: c.samples.iter().map(|u| uid_string(*u)).collect(),
                explanation: how,
            });
        }
    }

    /// Connections into (or out of) a subnet on a protocol/port its policy
    /// does not allow. One alert per policy, host and service.
    pub fn policy(&mut self, convs: &HashMap<ConvKey, ConvStat, foldhash::fast::FixedState>, out: &mut Vec<Finding>) {
        if self.cfg.policies.is_empty() {
            return;
        }
        #[derive(Default)]
        struct Hit {
            peers: HashMap<Addr, u64>,
            pkts: u64,
            bytes: u64,
            flows: u64,
            answered: u64,
            samples: Vec<u64>,
        }
        let mut hits: HashMap<(usize, Addr, u8, u16), Hit> = HashMap::new();
        for (k, s) in convs {
            if s.flows == 0 {
                continue;
            }
            for (pi, p) in self.cfg.policies.iter().enumerate() {
                let (inside, peer) = if p.outbound { (&k.src, &k.dst) } else { (&k.dst, &k.src) };
                if (p.outbound && !k.src_known()) || !p.subnet.contains(inside, k.v6) || p.allows(k.proto, k.dport) {
                    continue;
                }
                let h = hits.entry((pi, (*inside, k.v6), k.proto, k.dport)).or_default();
                if *peer != [0; 16] {
                    *h.peers.entry((*peer, k.v6)).or_default() += s.flows as u64;
                }
                h.pkts += s.pkts + s.rpkts;
                h.bytes += s.bytes + s.rbytes;
                h.flows += s.flows as u64;
                h.answered += s.answered as u64;
                push_sample(&mut h.samples, s.sample);
            }
        }
        let mut keys: Vec<&(usize, Addr, u8, u16)> = hits.keys().collect();
        keys.sort();
        for key in keys {
            let (pi, host, proto, port) = *key;
            let h = &hits[key];
            let p = &self.cfg.policies[pi];
            let svc = super::Service { proto, port }.to_string();
            let peers = top(&h.peers, 5);
            let peer_list: Vec<String> = peers.iter().map(|(a, _)| ip(a)).collect();
            let (src_ips, dst_ips) =
                if p.outbound { (vec![ip(&host)], peer_list.clone()) } else { (peer_list.clone(), vec![ip(&host)]) };
            let explanation = format!(
                "{} new {svc} connection{} {} {} ({} answered), which policy `{}` ({} {}) does not allow; allowed: {}",
                thousands(h.flows as f64),
                if h.flows == 1 { "" } else { "s" },
                if p.outbound { "from" } else { "to" },
                ip(&host),
                thousands(h.answered as f64),
                p.name,
                if p.outbound { "from" } else { "into" },
                p.subnet,
                p.allow.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
            );
            out.push(Finding {
                group: format!("policy:{}:{}:{svc}", p.name, ip(&host)),
                absorbed_by: vec![],
                rule_name: None,
                rule: "policy_violation",
                severity: Severity::Medium,
                category: Category::Policy,
                verdict: Verdict::Suspicious,
                src_ips,
                dst_ips,
                ports: vec![port],
                packets: h.pkts,
                bytes: h.bytes,
                flows: h.flows,
                rate: h.flows as f64,
                rate_unit: "flows/s".into(),
                top_sources: peers.iter().map(|(a, n)| format!("{} ({n})", ip(a))).collect(),
                sample_flows: h.samples.iter().map(|u| uid_string(*u)).collect(),
                explanation,
            });
        }
    }

    /// Traffic with hosts in watched countries. One alert per country and
    /// foreign address.
    pub fn countries(
        &mut self,
        convs: &HashMap<ConvKey, ConvStat, foldhash::fast::FixedState>,
        out: &mut Vec<Finding>,
    ) {
        let Some(geo) = self.geo.clone() else { return };
        if self.cfg.watch_countries.is_empty() || !geo.has_country() {
            return;
        }
        #[derive(Default)]
        struct Hit {
            cc: String,
            peers: HashMap<Addr, u64>,
            outbound: bool,
            pkts: u64,
            bytes: u64,
            flows: u64,
            ports: Vec<u16>,
            samples: Vec<u64>,
        }
        let mut hits: HashMap<Addr, Hit> = HashMap::new();
        for (k, s) in convs {
            for (far, near, outbound) in [(&k.dst, &k.src, true), (&k.src, &k.dst, false)] {
                if !outbound && !k.src_known() {
                    continue;
                }
                let Some(cc) = geo.country(far, k.v6) else { continue };
                let cc = std::str::from_utf8(&cc).unwrap_or("");
                if !self.cfg.watch_countries.iter().any(|w| w == cc) {
                    continue;
                }
                let h = hits.entry((*far, k.v6)).or_default();
                h.cc = cc.to_string();
                h.outbound |= outbound;
                if *near != [0; 16] {
                    *h.peers.entry((*near, k.v6)).or_default() += s.pkts + s.rpkts;
                }
                h.pkts += s.pkts + s.rpkts;
                h.bytes += s.bytes + s.rbytes;
                h.flows += s.flows as u64;
                if h.ports.len() < 10 && !h.ports.contains(&k.dport) {
                    h.ports.push(k.dport);
                }
                push_sample(&mut h.samples, s.sample);
            }
        }
        let mut keys: Vec<Addr> = hits.keys().copied().collect();
        keys.sort();
        for far in keys {
            let h = &hits[&far];
            let peers = top(&h.peers, 5);
            let peer_list: Vec<String> = peers.iter().map(|(a, _)| ip(a)).collect();
            let (src_ips, dst_ips) =
                if h.outbound { (peer_list.clone(), vec![ip(&far)]) } else { (vec![ip(&far)], peer_list.clone()) };
            out.push(Finding {
                group: format!("country:{}:{}", h.cc, ip(&far)),
                absorbed_by: vec![],
                rule_name: None,
                rule: "country_watch",
                severity: Severity::Medium,
                category: Category::Policy,
                verdict: Verdict::Suspicious,
                src_ips,
                dst_ips,
                ports: h.ports.clone(),
                packets: h.pkts,
                bytes: h.bytes,
                flows: h.flows,
                rate: h.pkts as f64,
                rate_unit: "packets/s".into(),
                top_sources: peers.iter().map(|(a, n)| format!("{} ({n})", ip(a))).collect(),
                sample_flows: h.samples.iter().map(|u| uid_string(*u)).collect(),
                explanation: format!(
                    "{} {} {} in {} (a watched country): {} packets, {} bytes, ports {}",
                    peer_list.join(", "),
                    if h.outbound { "talked to" } else { "was reached from" },
                    ip(&far),
                    h.cc,
                    thousands(h.pkts as f64),
                    thousands(h.bytes as f64),
                    h.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }

    fn syn_flood(&self, dst: &Addr, t: &Target, base: f64, out: &mut Vec<Finding>) {
        let c = &self.cfg.syn_flood;
        if !c.enabled {
            return;
        }
        let mut ports: Vec<(&u16, &SynPort)> = t.syn_ports.iter().collect();
        ports.sort_by(|a, b| b.1.syn.cmp(&a.1.syn).then(a.0.cmp(b.0)));
        let Some((&port, p)) = ports.first().copied() else { return };
        let rate = p.syn as f64;
        let answered = p.answered as f64 / rate.max(1.0);
        if rate < c.min_rate || answered > c.max_answered {
            return;
        }
        let unanswered = p.syn - p.answered;
        let srcs = p.srcs.len();
        let tops = top(&p.srcs, 5);
        let mut e = format!("SYN rate to {}:{port} is {}/s", ip(dst), thousands(rate));
        if base >= 1.0 {
            e += &format!(", {}× its 1-hour baseline", thousands(rate / base));
        }
        e += &format!(
            "; {} of SYNs unanswered ({} half-open this second); from {}{} sources",
            pct(1.0 - answered),
            thousands(unanswered as f64),
            if t.folded_srcs { "at least " } else { "" },
            thousands(srcs as f64)
        );
        out.push(Finding {
            group: format!("syn_flood:{}", ip(dst)),
            absorbed_by: vec![],
            rule_name: None,
            rule: "syn_flood",
            severity: severity_for(rate / c.min_rate),
            category: Category::Flood,
            verdict: Verdict::Malicious,
            src_ips: tops.iter().map(|(a, _)| ip(a)).collect(),
            dst_ips: vec![ip(dst)],
            ports: vec![port],
            packets: p.pkts,
            bytes: p.bytes,
            flows: p.syn,
            rate,
            rate_unit: "syn/s".into(),
            top_sources: tops.iter().map(|(a, n)| format!("{} ({n})", ip(a))).collect(),
            sample_flows: p.samples.iter().map(|u| uid_string(*u)).collect(),
            explanation: e,
        });
    }

    fn udp_flood(&self, dst: &Addr, t: &Target, base: f64, learned: bool, out: &mut Vec<Finding>) {
        let c = &self.cfg.udp_flood;
        if !c.enabled {
            return;
        }
        let pps = t.udp_pkts as f64;
        let reply = t.udp_rpkts as f64 / pps.max(1.0);
        if pps < c.min_pps || reply > c.max_reply_ratio || (learned && pps < c.baseline_factor * base) {
            return;
        }
        let tops = top(&t.srcs, 5);
        let ports = top(&t.udp_ports, 3);
        let mut e = format!(
            "UDP rate to {} is {} packets/s ({} Mbit/s)",
            ip(dst),
            thousands(pps),
            thousands(t.udp_bytes as f64 * 8.0 / 1e6)
        );
        if base >= 1.0 {
            e += &format!(", {}× its 1-hour baseline", thousands(pps / base));
        }
        e += &format!(
            "; {} answered; from {}{} sources; top ports {}",
            pct(reply),
            if t.folded_srcs { "at least " } else { "" },
            thousands(t.srcs.len() as f64),
            ports.iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>().join(", ")
        );
        out.push(Finding {
            group: format!("udp_flood:{}", ip(dst)),
            absorbed_by: vec![],
            rule_name: None,
            rule: "udp_flood",
            severity: severity_for(pps / c.min_pps),
            category: Category::Flood,
            verdict: Verdict::Malicious,
            src_ips: tops.iter().map(|(a, _)| ip(a)).collect(),
            dst_ips: vec![ip(dst)],
            ports: ports.iter().map(|(p, _)| *p).collect(),
            packets: t.udp_pkts,
            bytes: t.udp_bytes,
            flows: t.flows,
            rate: pps,
            rate_unit: "packets/s".into(),
            top_sources: tops.iter().map(|(a, n)| format!("{} ({n})", ip(a))).collect(),
            sample_flows: t.samples.iter().map(|u| uid_string(*u)).collect(),
            explanation: e,
        });
    }

    fn icmp_flood(&self, dst: &Addr, t: &Target, out: &mut Vec<Finding>) {
        let c = &self.cfg.icmp_flood;
        if !c.enabled || (t.icmp_pkts as f64) < c.min_pps {
            return;
        }
        let pps = t.icmp_pkts as f64;
        let tops = top(&t.srcs, 5);
        out.push(Finding {
            group: format!("icmp_flood:{}", ip(dst)),
            absorbed_by: vec![],
            rule_name: None,
            rule: "icmp_flood",
            severity: severity_for(pps / c.min_pps),
            category: Category::Flood,
            verdict: Verdict::Malicious,
            src_ips: tops.iter().map(|(a, _)| ip(a)).collect(),
            dst_ips: vec![ip(dst)],
            ports: vec![],
            packets: t.icmp_pkts,
            bytes: t.icmp_bytes,
            flows: t.flows,
            rate: pps,
            rate_unit: "packets/s".into(),
            top_sources: tops.iter().map(|(a, n)| format!("{} ({n})", ip(a))).collect(),
            sample_flows: t.samples.iter().map(|u| uid_string(*u)).collect(),
            explanation: format!(
                "ICMP rate to {} is {} packets/s (threshold {}); from {} sources",
                ip(dst),
                thousands(pps),
                thousands(c.min_pps),
                thousands(t.srcs.len() as f64)
            ),
        });
    }

    fn ddos(&self, dst: &Addr, t: &Target, base: f64, learned: bool, out: &mut Vec<Finding>) {
        let c = &self.cfg.ddos;
        if !c.enabled {
            return;
        }
        let pps = t.pkts as f64;
        let srcs = t.srcs.len() as u64;
        let over =
            if learned { pps >= c.min_pps && pps >= c.baseline_factor * base } else { pps >= c.unlearned_min_pps };
        if !over || srcs < c.min_sources {
            return;
        }
        let tops = top(&t.srcs, 5);
        let mut e = format!(
            "traffic to {} is {} packets/s ({} Mbit/s) from {}{} sources",
            ip(dst),
            thousands(pps),
            thousands(t.bytes as f64 * 8.0 / 1e6),
            if t.folded_srcs { "at least " } else { "" },
            thousands(srcs as f64)
        );
        if learned {
            e +=
                &format!(", {}× its 1-hour baseline of {} packets/s", thousands(pps / base.max(1e-9)), thousands(base));
        } else {
            e += &format!(" (no baseline yet; over the {} packets/s limit)", thousands(c.unlearned_min_pps));
        }
        out.push(Finding {
            group: format!("ddos:{}", ip(dst)),
            absorbed_by: ["syn_flood", "udp_flood", "icmp_flood"].iter().map(|r| format!("{r}:{}", ip(dst))).collect(),
            rule_name: None,
            rule: "ddos",
            severity: severity_for(pps / c.min_pps),
            category: Category::Ddos,
            verdict: Verdict::Malicious,
            src_ips: tops.iter().map(|(a, _)| ip(a)).collect(),
            dst_ips: vec![ip(dst)],
            ports: vec![],
            packets: t.pkts,
            bytes: t.bytes,
            flows: t.flows,
            rate: pps,
            rate_unit: "packets/s".into(),
            top_sources: tops.iter().map(|(a, n)| format!("{} ({n})", ip(a))).collect(),
            sample_flows: t.samples.iter().map(|u| uid_string(*u)).collect(),
            explanation: e,
        });
    }

    /// Failed attempts to a host under a flood are the flood (random-port
    /// floods fail on many ports from each source), not scans.
    fn scan(
        &mut self,
        sec: u64,
        convs: &HashMap<ConvKey, ConvStat, foldhash::fast::FixedState>,
        under_attack: &HashSet<Addr>,
        out: &mut Vec<Finding>,
    ) {
        let c = self.cfg.scan.clone();
        if !c.enabled {
            return;
        }
        let mut touched: HashSet<Addr> = HashSet::new();
        for (k, s) in convs {
            if s.failed == 0 || !k.src_known() || under_attack.contains(&(k.dst, k.v6)) {
                continue;
            }
            let src = (k.src, k.v6);
            if self.scans.len() >= MAX_SCAN_SOURCES && !self.scans.contains_key(&src) {
                // Full (spoofed floods make a source per packet): forget the
                // sources with a single attempt, so a real scanner is seen.
                self.scans.retain(|_, s| s.pairs.len() > 1);
                if self.scans.len() >= MAX_SCAN_SOURCES {
                    continue;
                }
            }
            let st = self.scans.entry(src).or_default();
            st.last_sec = sec;
            if st.pairs.len() < MAX_SCAN_PAIRS || st.pairs.contains_key(&((k.dst, k.v6), k.proto, k.dport)) {
                st.pairs.insert(((k.dst, k.v6), k.proto, k.dport), sec);
            }
            push_sample(&mut st.samples, s.sample);
            touched.insert(src);
        }
        let horizon = sec.saturating_sub(c.window_secs);
        let mut srcs: Vec<Addr> = touched.into_iter().collect();
        srcs.sort();
        for src in srcs {
            let Some(st) = self.scans.get_mut(&src) else { continue };
            st.pairs.retain(|_, last| *last > horizon);
            let mut ports_per_dst: HashMap<Addr, u64> = HashMap::new();
            let mut dsts_per_port: HashMap<(u8, u16), u64> = HashMap::new();
            for (dst, proto, port) in st.pairs.keys() {
                *ports_per_dst.entry(*dst).or_default() += 1;
                *dsts_per_port.entry((*proto, *port)).or_default() += 1;
            }
            let v = top(&ports_per_dst, 3);
            let h = top(&dsts_per_port, 3);
            let vert = v.first().filter(|(_, n)| *n >= c.vertical_ports);
            let horiz = h.first().filter(|(_, n)| *n >= c.horizontal_hosts);
            if vert.is_none() && horiz.is_none() {
                continue;
            }
            let attempts = st.pairs.len() as u64;
            let (explanation, dst_ips, ports, rate, ratio) = match (vert, horiz) {
                (Some((dst, n)), _) => {
                    let mut ps: Vec<u16> = st.pairs.keys().filter(|(d, _, _)| d == dst).map(|(_, _, p)| *p).collect();
                    ps.sort_unstable();
                    let (lo, hi) = (ps.first().copied().unwrap_or(0), ps.last().copied().unwrap_or(0));
                    (
                        format!(
                            "{} failed to connect to {} ports of {} in the last {} s (ports {lo}–{hi}): a vertical port scan",
                            ip(&src),
                            thousands(*n as f64),
                            ip(dst),
                            c.window_secs
                        ),
                        vec![ip(dst)],
                        ps.iter().take(20).copied().collect(),
                        *n as f64 / c.window_secs as f64,
                        *n as f64 / c.vertical_ports as f64,
                    )
                }
                (None, Some(((proto, port), n))) => (
                    format!(
                        "{} failed to connect to {} hosts on {}/{port} in the last {} s: a horizontal scan",
                        ip(&src),
                        thousands(*n as f64),
                        match *proto {
                            PROTO_TCP => "tcp",
                            PROTO_UDP => "udp",
                            _ => "ip",
                        },
                        c.window_secs
                    ),
                    {
                        let mut d: Vec<String> = st
                            .pairs
                            .keys()
                            .filter(|(_, pr, p)| (*pr, *p) == (*proto, *port))
                            .map(|(d, _, _)| ip(d))
                            .collect();
                        d.sort();
                        d.truncate(20);
                        d
                    },
                    vec![*port],
                    *n as f64 / c.window_secs as f64,
                    *n as f64 / c.horizontal_hosts as f64,
                ),
                (None, None) => continue,
            };
            out.push(Finding {
                group: format!("scan:{}", ip(&src)),
                absorbed_by: vec![],
                rule_name: None,
                rule: if vert.is_some() { "port_scan_vertical" } else { "port_scan_horizontal" },
                severity: severity_for(ratio),
                category: Category::Scan,
                verdict: Verdict::Suspicious,
                src_ips: vec![ip(&src)],
                dst_ips,
                ports,
                packets: 0,
                bytes: 0,
                flows: attempts,
                rate,
                rate_unit: "attempts/s".into(),
                top_sources: vec![ip(&src)],
                sample_flows: st.samples.iter().map(|u| uid_string(*u)).collect(),
                explanation,
            });
        }
        if sec >= self.last_sweep + 10 {
            self.last_sweep = sec;
            self.scans.retain(|_, s| s.last_sec > horizon);
        }
    }

    fn spike(&mut self, sec: u64, pkts: u64, attack_pkts: u64, out: &mut Vec<Finding>) {
        let c = self.cfg.spike.clone();
        if !c.enabled {
            return;
        }
        let tau = c.average_secs.max(1) as f64;
        let avg = self.link_pps.get(sec, tau);
        let pps = pkts as f64;
        let warm = self.link_pps.age(sec) >= c.warmup_secs;
        let excess = pps - avg;
        // An attack already alerted on that makes up most of the excess is
        // that alert, not a second one.
        let explained = attack_pkts as f64 >= 0.5 * excess;
        let high = warm && pps >= c.min_pps && pps > c.factor * avg;
        if high && !explained {
            self.spike_run += 1;
        } else {
            self.spike_run = 0;
        }
        if self.spike_run >= c.for_secs.max(1) {
            out.push(Finding {
                group: "spike:link".into(),
                absorbed_by: vec!["anomaly:link".into()],
                rule_name: None,
                rule: "traffic_spike",
                severity: severity_for(pps / (c.factor * avg.max(1.0))),
                category: Category::Anomaly,
                verdict: Verdict::Suspicious,
                src_ips: vec![],
                dst_ips: vec![],
                ports: vec![],
                packets: pkts,
                bytes: 0,
                flows: 0,
                rate: pps,
                rate_unit: "packets/s".into(),
                top_sources: vec![],
                sample_flows: vec![],
                explanation: format!(
                    "link rate is {} packets/s, {:.1}× its {}-minute average of {} packets/s, for {} s",
                    thousands(pps),
                    pps / avg.max(1e-9),
                    c.average_secs / 60,
                    thousands(avg),
                    self.spike_run
                ),
            });
        }
        // The average learns from traffic without the alerted attacks in it.
        self.link_pps.update(sec, (pps - attack_pkts as f64).max(0.0), tau);
    }
}
