use std::collections::HashMap;

use super::agg::Aggregator;
use super::detectors::{Detectors, thousands};
use super::*;
use crate::alert::{AlertEvent, Category};
use crate::decode::{DecodeConfig, Decoded, decode};
use crate::flow::{FlowConfig, FlowTracker};
use crate::records::Sinks;
use crate::source::{Desc, Layers, LinkType};

const T0: u64 = 1_767_225_600 * SEC;
const MS: u64 = 1_000_000;

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0u8; 16];
    x[..4].copy_from_slice(&a);
    x
}

/// An Ethernet/IPv4 frame with a TCP (flags) or UDP (`flags == None`) header.
fn frame(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, flags: Option<u8>, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let l4 = if flags.is_some() { 20 } else { 8 };
    let total = (20 + l4 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, if flags.is_some() { 6 } else { 17 }, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    match flags {
        Some(fl) => {
            f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, fl, 0xff, 0xff, 0, 0, 0, 0]);
        }
        None => f.extend_from_slice(&[((8 + payload) >> 8) as u8, (8 + payload) as u8, 0, 0]),
    }
    f.extend(std::iter::repeat_n(0u8, payload));
    f
}

struct Rig {
    t: FlowTracker,
    sinks: Sinks,
    d: Decoded,
}

impl Rig {
    fn new() -> Rig {
        let mut t = FlowTracker::new(FlowConfig::default(), 0);
        let mut sinks = Sinks::new(1024);
        t.enable_windows(1 << 12, &mut sinks);
        Rig { t, sinks, d: Decoded::default() }
    }
    fn send(&mut self, ts: u64, f: &[u8]) {
        decode(LinkType::ETHERNET, f, &DecodeConfig::default(), &mut self.d);
        let desc = Desc {
            offset: 0,
            caplen: f.len() as u32,
            wire_len: f.len() as u32,
            ts_ns: ts,
            link: LinkType::ETHERNET,
            iface: 0,
            layers: Layers::All,
            in_aux: false,
        };
        self.t.packet(&desc, f, &self.d, &mut self.sinks);
    }
    fn reports(&mut self) -> Vec<WindowReport> {
        self.t.take_windows().collect()
    }
}

const SYN: Option<u8> = Some(0x02);
const SYNACK: Option<u8> = Some(0x12);
const ACK: Option<u8> = Some(0x10);
const RSTACK: Option<u8> = Some(0x14);

fn conv(r: &WindowReport, src: [u8; 4], dst: [u8; 4], dport: u16) -> ConvStat {
    r.convs
        .iter()
        .find(|(k, _)| k.src == v4(src) && k.dst == v4(dst) && k.dport == dport)
        .map(|(_, s)| *s)
        .unwrap_or_default()
}

#[test]
fn windows_count_attempts_answers_and_per_second_deltas() {
    let (c, s) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let mut r = Rig::new();
    // answered: SYN, SYN-ACK, ACK + data
    r.send(T0 + 100 * MS, &frame(c, s, 40000, 80, SYN, 0));
    r.send(T0 + 101 * MS, &frame(s, c, 80, 40000, SYNACK, 0));
    r.send(T0 + 102 * MS, &frame(c, s, 40000, 80, ACK, 100));
    // refused
    r.send(T0 + 200 * MS, &frame(c, s, 40001, 81, SYN, 0));
    r.send(T0 + 201 * MS, &frame(s, c, 81, 40001, RSTACK, 0));
    // unanswered: judged when the next second closes
    r.send(T0 + 300 * MS, &frame(c, s, 40002, 82, SYN, 0));
    // unanswered and young: judged a second later
    r.send(T0 + 900 * MS, &frame(c, s, 40003, 83, SYN, 0));
    // young but answered in the next second: not a failure
    r.send(T0 + 950 * MS, &frame(c, s, 40004, 84, SYN, 0));
    // UDP answered
    r.send(T0 + 500 * MS, &frame(c, s, 5353, 53, None, 30));
    r.send(T0 + 501 * MS, &frame(s, c, 53, 5353, None, 60));
    assert!(r.reports().is_empty(), "the second is still open");
    r.send(T0 + 1100 * MS, &frame(s, c, 84, 40004, SYNACK, 0));
    r.send(T0 + 1200 * MS, &frame(c, s, 40000, 80, ACK, 10));
    let first = r.reports();
    assert_eq!(first.len(), 1);
    let w = &first[0];
    assert_eq!((w.sec, w.through), (T0 / SEC, T0 / SEC + 1));
    let a = conv(w, c, s, 80);
    assert_eq!((a.flows, a.syn, a.answered, a.failed, a.pkts, a.rpkts), (1, 1, 1, 0, 2, 1));
    assert!(a.sample != 0);
    let b = conv(w, c, s, 81);
    assert_eq!((b.syn, b.answered, b.rejected, b.failed), (1, 0, 1, 1));
    assert_eq!(conv(w, c, s, 82).failed, 0, "unanswered attempts wait a second");
    assert_eq!(conv(w, c, s, 83).failed, 0);
    assert_eq!(conv(w, c, s, 84).failed, 0);
    let u = conv(w, c, s, 53);
    assert_eq!((u.flows, u.answered, u.pkts, u.rpkts), (1, 1, 1, 1));
    // The next second: the young unanswered attempt is now judged failed;
    // the one answered meanwhile is not; flow 80's data packet is counted.
    r.send(T0 + 2100 * MS, &frame(c, s, 40000, 80, ACK, 10));
    let second = r.reports();
    assert_eq!(second.len(), 1);
    let w = &second[0];
    assert_eq!(w.sec, T0 / SEC + 1);
    assert_eq!(conv(w, c, s, 82).failed, 1);
    assert_eq!(conv(w, c, s, 83).failed, 1);
    assert_eq!(conv(w, c, s, 84).failed, 0);
    let a = conv(w, c, s, 80);
    assert_eq!((a.flows, a.pkts), (0, 1), "only this second's packets, no new flow");
    // End of input: the rest, and a watermark past everything.
    r.t.flush(&mut r.sinks);
    let last = r.reports();
    assert_eq!(last.last().unwrap().through, u64::MAX);
}

#[test]
fn a_time_jump_closes_the_second_once_and_removed_flows_still_count() {
    let (c, s) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let mut r = Rig::new();
    r.send(T0 + 100 * MS, &frame(c, s, 40000, 80, SYN, 0));
    // Ten seconds later (the attempt expired on the way: 5 s timeout).
    r.send(T0 + 10_000 * MS, &frame(c, s, 40001, 80, SYN, 0));
    let reps = r.reports();
    assert_eq!(reps.len(), 1);
    assert_eq!(reps[0].through, T0 / SEC + 10);
    assert_eq!(conv(&reps[0], c, s, 80).syn, 1);
    // Judged when it expired, in the second that removed it.
    r.t.flush(&mut r.sinks);
    let reps = r.reports();
    assert_eq!(reps[0].sec, T0 / SEC + 10);
    assert_eq!(conv(&reps[0], c, s, 80).failed, 2, "the expired attempt and, at the end, the new one");
    // A flow removed mid-second (refused and reused) still counts there.
    let mut r = Rig::new();
    for i in 0..3u64 {
        r.send(T0 + (100 + i * 10) * MS, &frame(c, s, 40000, 80, SYN, 0));
        r.send(T0 + (101 + i * 10) * MS, &frame(s, c, 80, 40000, RSTACK, 0));
    }
    r.send(T0 + 1500 * MS, &frame(c, s, 40009, 9, SYN, 0));
    let reps = r.reports();
    let k = conv(&reps[0], c, s, 80);
    assert!(k.syn >= 1 && k.rejected == k.syn, "{k:?}");
}

fn syn_map(
    dst: [u8; 4],
    n_src: u32,
    syn_per_src: u32,
    answered: bool,
) -> HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> {
    let mut m = HashMap::default();
    for i in 0..n_src {
        let k = ConvKey { src: v4([203, 0, (i >> 8) as u8, i as u8]), dst: v4(dst), v6: false, proto: 6, dport: 80 };
        m.insert(
            k,
            ConvStat {
                pkts: syn_per_src as u64,
                bytes: 60 * syn_per_src as u64,
                flows: syn_per_src,
                syn: syn_per_src,
                answered: if answered { syn_per_src } else { 0 },
                rpkts: if answered { syn_per_src as u64 } else { 0 },
                failed: if answered { 0 } else { syn_per_src },
                sample: 1 + i as u64,
                ..Default::default()
            },
        );
    }
    m
}

#[test]
fn syn_flood_needs_rate_and_unanswered_syns() {
    let mut d = Detectors::new(DetectConfig::default());
    let sec = T0 / SEC;
    let f = eval(&mut d, sec, &syn_map([10, 0, 0, 5], 1000, 2, false));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "syn_flood");
    assert_eq!(f[0].group, "syn_flood:10.0.0.5");
    assert!(f[0].explanation.starts_with("SYN rate to 10.0.0.5:80 is 2,000/s"), "{}", f[0].explanation);
    assert!(f[0].explanation.contains("100% of SYNs unanswered"));
    assert_eq!(f[0].dst_ips, vec!["10.0.0.5"]);
    assert_eq!(f[0].sample_flows.len(), 5);
    // A busy server answering as many SYNs is not a flood.
    let mut d = Detectors::new(DetectConfig::default());
    assert!(eval(&mut d, sec, &syn_map([10, 0, 0, 5], 1000, 2, true)).is_empty());
    // Below the rate, not either.
    let mut d = Detectors::new(DetectConfig::default());
    assert!(eval(&mut d, sec, &syn_map([10, 0, 0, 5], 100, 2, false)).is_empty());
}

#[test]
fn floods_are_judged_against_the_hosts_baseline() {
    let mut d = Detectors::new(DetectConfig::default());
    let sec = T0 / SEC;
    // 300 quiet seconds of 100 SYNs/s, answered: the baseline.
    for i in 0..300 {
        assert!(eval(&mut d, sec + i, &syn_map([10, 0, 0, 5], 50, 2, true)).is_empty());
    }
    let f = eval(&mut d, sec + 300, &syn_map([10, 0, 0, 5], 1000, 5, false));
    assert_eq!(f.len(), 1);
    assert!(f[0].explanation.contains("50× its 1-hour baseline"), "{}", f[0].explanation);
    assert_eq!(f[0].severity, crate::alert::Severity::High);
}

fn scan_map(
    src: [u8; 4],
    targets: impl Iterator<Item = ([u8; 4], u16)>,
    failed: bool,
) -> HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> {
    let mut m = HashMap::default();
    for (dst, port) in targets {
        m.insert(
            ConvKey { src: v4(src), dst: v4(dst), v6: false, proto: 6, dport: port },
            ConvStat {
                pkts: 1,
                flows: 1,
                syn: 1,
                failed: failed as u32,
                answered: !failed as u32,
                rpkts: 1,
                ..Default::default()
            },
        );
    }
    m
}

#[test]
fn scans_vertical_horizontal_and_not_busy_clients() {
    let sec = T0 / SEC;
    let mut d = Detectors::new(DetectConfig::default());
    // 60 ports a second for two seconds: the second crosses 100.
    assert!(eval(&mut d, sec, &scan_map([10, 9, 9, 9], (1..=60).map(|p| ([10, 0, 0, 5], p)), true)).is_empty());
    let f = eval(&mut d, sec + 1, &scan_map([10, 9, 9, 9], (61..=120).map(|p| ([10, 0, 0, 5], p)), true));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].rule, f[0].category, f[0].group.as_str()),
        ("port_scan_vertical", Category::Scan, "scan:10.9.9.9")
    );
    assert!(f[0].explanation.contains("120 ports of 10.0.0.5"), "{}", f[0].explanation);
    // Horizontal: port 22 on 60 hosts.
    let mut d = Detectors::new(DetectConfig::default());
    let f = eval(&mut d, sec, &scan_map([10, 9, 9, 8], (1..=60).map(|h| ([10, 0, 1, h as u8], 22)), true));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, "port_scan_horizontal");
    assert!(f[0].explanation.contains("60 hosts on tcp/22"), "{}", f[0].explanation);
    // A proxy reaching 500 hosts on 443, all answered: nothing.
    let mut d = Detectors::new(DetectConfig::default());
    let f =
        eval(&mut d, sec, &scan_map([10, 9, 9, 7], (0..500).map(|h| ([10, 2, (h >> 8) as u8, h as u8], 443)), false));
    assert!(f.is_empty());
    // Old attempts leave the window.
    let mut d = Detectors::new(DetectConfig::default());
    eval(&mut d, sec, &scan_map([10, 9, 9, 9], (1..=60).map(|p| ([10, 0, 0, 5], p)), true));
    let f = eval(&mut d, sec + 61, &scan_map([10, 9, 9, 9], (61..=120).map(|p| ([10, 0, 0, 5], p)), true));
    assert!(f.is_empty(), "{f:?}");
}

fn udp_map(n: u32, to: [u8; 4], from_hosts: u32) -> HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> {
    let mut m = HashMap::default();
    for i in 0..n {
        let k = ConvKey {
            src: v4([10, 1, ((i % from_hosts) >> 8) as u8, (i % from_hosts) as u8]),
            dst: v4(to),
            v6: false,
            proto: 17,
            dport: 1000 + (i % 50) as u16,
        };
        let s = m.entry(k).or_insert_with(ConvStat::default);
        s.pkts += 1;
        s.bytes += 500;
        s.flows += 1;
        s.rpkts += 1;
    }
    m
}

#[test]
fn traffic_spike_after_warmup_unless_an_alerted_attack_explains_it() {
    let sec = T0 / SEC;
    let mut d = Detectors::new(DetectConfig::default());
    for i in 0..60 {
        assert!(eval(&mut d, sec + i, &udp_map(2000, [10, 0, 0, 9], 200)).is_empty());
    }
    // Triple the traffic (answered, spread over many hosts): a spike after
    // three seconds in a row.
    let mut fired = None;
    for i in 60..70 {
        let mut m = udp_map(2000, [10, 0, 0, 9], 200);
        m.extend(udp_map(4000, [10, 0, 0, 10], 300));
        let f = eval(&mut d, sec + i, &m);
        if !f.is_empty() {
            fired = Some((i, f));
            break;
        }
    }
    let (at, f) = fired.expect("a spike");
    assert_eq!(at, 62);
    assert_eq!(f[0].rule, "traffic_spike");
    let e = &f[0].explanation;
    assert!(e.starts_with("link rate is 12,000 packets/s, 2.8× its 5-minute average of 4,2"), "{e}");
    // The same excess as an unanswered flood is the flood's alert only.
    let mut d = Detectors::new(DetectConfig::default());
    for i in 0..60 {
        eval(&mut d, sec + i, &udp_map(2000, [10, 0, 0, 9], 200));
    }
    for i in 60..70 {
        let mut m = udp_map(2000, [10, 0, 0, 9], 200);
        let mut flood = udp_map(8000, [10, 0, 0, 10], 300);
        flood.values_mut().for_each(|s| s.rpkts = 0);
        m.extend(flood);
        let f = eval(&mut d, sec + i, &m);
        assert_eq!(f.iter().map(|f| f.rule).collect::<Vec<_>>(), vec!["udp_flood"], "second {i}");
    }
}

fn finding(group: &str, rule: &'static str) -> Finding {
    Finding {
        group: group.into(),
        absorbed_by: vec![],
        rule_name: None,
        rule,
        severity: crate::alert::Severity::High,
        category: Category::Flood,
        verdict: crate::alert::Verdict::Malicious,
        src_ips: vec!["203.0.113.1".into()],
        dst_ips: vec!["10.0.0.5".into()],
        ports: vec![80],
        packets: 100,
        bytes: 6000,
        flows: 100,
        rate: 100.0,
        rate_unit: "syn/s".into(),
        top_sources: vec![],
        sample_flows: vec![],
        explanation: "x".into(),
    }
}

#[test]
fn one_alert_per_condition_updated_then_closed_when_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let feed = Arc::new(AlertFeed::new(100));
    let setup = DetectSetup {
        cfg: DetectConfig { close_after_ns: 10 * SEC, update_every_ns: 5 * SEC, ..DetectConfig::default() },
        log: Some(dir.path().join("sub/alerts.json")),
        feed: Some(feed.clone()),
        ..DetectSetup::default()
    };
    let mut m = AlertManager::new(&setup).unwrap();
    let s0 = T0 / SEC;
    for i in 0..12 {
        m.observe(s0 + i, vec![finding("syn_flood:10.0.0.5", "syn_flood")]);
    }
    // A volumetric finding on the same host joins the open flood.
    let mut dd = finding("ddos:10.0.0.5", "ddos");
    dd.absorbed_by = vec!["syn_flood:10.0.0.5".into()];
    m.observe(s0 + 12, vec![dd]);
    assert_eq!(m.open_count(), 1);
    for i in 13..40 {
        m.observe(s0 + i, vec![]);
    }
    assert_eq!(m.open_count(), 0);
    let b = m.take_batch().unwrap();
    let events: Vec<AlertEvent> = feed.since(0).iter().map(|(_, a)| a.event).collect();
    assert_eq!(
        events,
        vec![AlertEvent::Open, AlertEvent::Update, AlertEvent::Update, AlertEvent::Close],
        "open at 1 s, updates at 6 s and 11 s, close 10 s after 13 s"
    );
    assert_eq!(b.num_rows(), 4);
    let all = feed.since(0);
    let close = &all[3].1;
    assert_eq!(close.packets, 1300);
    assert_eq!(close.start_ts, T0);
    assert_eq!(close.last_ts, T0 + 13 * SEC);
    assert_eq!(close.ts, T0 + 23 * SEC);
    assert!(all.iter().all(|(_, a)| a.id == close.id));
    let log = std::fs::read_to_string(dir.path().join("sub/alerts.json")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["event_type"], "alert");
    assert_eq!(lines[0]["event"], "open");
    assert_eq!(lines[0]["timestamp"], "2026-01-01T00:00:01Z");
    assert_eq!(lines[3]["event"], "close");
    assert_eq!(lines[3]["id"], lines[0]["id"]);
    // The same condition later is a new alert.
    m.observe(s0 + 100, vec![finding("syn_flood:10.0.0.5", "syn_flood")]);
    assert_eq!(m.opened, 2);
    assert_ne!(feed.since(4)[0].1.id, close.id);
}

/// The alert log is rotated by size: no file passes the limit, only `keep`
/// rotated files stay, the newest events are in the live file, and the
/// files left hold the most recent events in order with none lost between
/// them. A restart appends to the live file and counts what it holds.
#[test]
fn the_alert_log_is_rotated_by_size_and_keeps_the_newest_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.json");
    let setup = |max: u64| DetectSetup {
        cfg: DetectConfig { log_max_bytes: max, log_keep: 3, update_every_ns: SEC, ..DetectConfig::default() },
        log: Some(path.clone()),
        ..DetectSetup::default()
    };
    let mut m = AlertManager::new(&setup(4000)).unwrap();
    let s0 = T0 / SEC;
    // One open alert updated every second: one line per second.
    for i in 0..200 {
        m.observe(s0 + i, vec![finding("syn_flood:10.0.0.5", "syn_flood")]);
    }
    m.take_batch();
    let events = m.events;
    assert!(events > 100, "{events}");
    let read = |p: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["alerts.json", "alerts.json.1", "alerts.json.2", "alerts.json.3"]);
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= 4000 && len > 0, "{}: {len} bytes", f.display());
    }
    // Oldest first: .3, .2, .1, live. Timestamps strictly increase across
    // the files, with one second between neighbours (nothing lost at a cut).
    let mut lines = Vec::new();
    for n in ["alerts.json.3", "alerts.json.2", "alerts.json.1", "alerts.json"] {
        let l = read(&dir.path().join(n));
        assert!(!l.is_empty());
        lines.extend(l);
    }
    let ts: Vec<String> = lines.iter().map(|l| l["timestamp"].as_str().unwrap().to_string()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    assert_eq!(lines.last().unwrap()["timestamp"], "2026-01-01T00:03:20Z", "the newest event is in the live file");
    assert!((lines.len() as u64) < events, "the oldest rotated files were deleted");
    // A restart appends to the live file, within the same limit.
    let before = read(&path).len();
    drop(m);
    let mut m = AlertManager::new(&setup(4000)).unwrap();
    m.observe(s0 + 300, vec![finding("syn_flood:10.0.0.6", "syn_flood")]);
    m.take_batch();
    let after = read(&path).len();
    assert!(after == before + 1 || after == 1, "appended, or rotated when full: {before} → {after}");
    assert!(std::fs::metadata(&path).unwrap().len() <= 4000);
    // 0 turns rotation off.
    let dir2 = tempfile::tempdir().unwrap();
    let mut m = AlertManager::new(&DetectSetup { log: Some(dir2.path().join("a.json")), ..setup(0) }).unwrap();
    for i in 0..200 {
        m.observe(s0 + i, vec![finding("syn_flood:10.0.0.5", "syn_flood")]);
    }
    m.take_batch();
    assert_eq!(std::fs::read_dir(dir2.path()).unwrap().count(), 1);
    assert_eq!(read(&dir2.path().join("a.json")).len() as u64, m.events);
}

#[test]
fn a_second_completes_when_every_worker_has_passed_it() {
    let mut a = Aggregator::new(2);
    let k = ConvKey { src: v4([1, 1, 1, 1]), dst: v4([2, 2, 2, 2]), v6: false, proto: 6, dport: 80 };
    let st = ConvStat { pkts: 5, ..Default::default() };
    a.add(WindowReport {
        worker: 0,
        sec: 100,
        through: 101,
        convs: vec![(k, st)],
        overflow: 0,
        names: vec![],
        findings: vec![],
    });
    assert!(a.next_complete().is_none(), "worker 1 has not reported");
    a.add(WindowReport {
        worker: 1,
        sec: 100,
        through: 105,
        convs: vec![(k, st)],
        overflow: 0,
        names: vec![],
        findings: vec![],
    });
    let (sec, m) = a.next_complete().unwrap();
    assert_eq!(sec, 100);
    assert_eq!(m.convs[&k].pkts, 10);
    a.add(WindowReport {
        worker: 0,
        sec: 103,
        through: 104,
        convs: vec![(k, st)],
        overflow: 0,
        names: vec![],
        findings: vec![],
    });
    assert_eq!(a.next_complete().map(|x| x.0), Some(103));
    a.add(WindowReport {
        worker: 1,
        sec: 106,
        through: 107,
        convs: vec![],
        overflow: 0,
        names: vec![],
        findings: vec![],
    });
    assert!(a.next_complete().is_none(), "worker 0 is still at 104");
    assert_eq!(a.drain().len(), 1);
}

#[test]
fn numbers_read_well() {
    assert_eq!(thousands(48_000.0), "48,000");
    assert_eq!(thousands(999.4), "999");
    assert_eq!(thousands(1_234_567.0), "1,234,567");
}

fn eval(d: &mut Detectors, sec: u64, convs: &HashMap<ConvKey, ConvStat, foldhash::fast::FixedState>) -> Vec<Finding> {
    d.evaluate(sec, convs, &Default::default())
}

fn names(list: &[(&str, [u8; 4], u32, u32)]) -> super::agg::Names {
    let mut m = super::agg::Names::default();
    for (name, client, q, nx) in list {
        let s = m.entry(NameKey { name: name.to_string(), client: v4(*client), v6: false }).or_default();
        s.seen_in |= NAME_DNS;
        s.queries += q;
        s.nxdomain += nx;
        s.server = v4([10, 0, 0, 53]);
        s.sample = 7;
    }
    m
}

#[test]
fn domains_split_where_they_are_registered() {
    use super::detectors::{entropy, split_domain};
    assert_eq!(split_domain("a.b.example.com"), ("example.com", "a.b"));
    assert_eq!(split_domain("example.com"), ("example.com", ""));
    assert_eq!(split_domain("www.bbc.co.uk"), ("bbc.co.uk", "www"));
    assert_eq!(split_domain("localhost"), ("localhost", ""));
    assert!(entropy("aaaa") < 0.01);
    assert!((entropy("abcd") - 2.0).abs() < 1e-9);
}

#[test]
fn dns_tunnels_and_nxdomain_storms() {
    let sec = T0 / SEC;
    let empty = HashMap::default();
    // 40 long random names under one domain over 4 seconds.
    let mut d = Detectors::new(DetectConfig::default());
    let mut fired = Vec::new();
    for i in 0..4u64 {
        let list: Vec<String> = (0..10)
            .map(|j| {
                let mut x = (i * 10 + j + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let label: String = (0..40)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (b'a' + (x % 26) as u8) as char
                    })
                    .collect();
                format!("{label}.t.exfil.example")
            })
            .collect();
        let n: Vec<(&str, [u8; 4], u32, u32)> = list.iter().map(|s| (s.as_str(), [10, 1, 0, 7], 1, 0)).collect();
        fired.extend(d.evaluate(sec + i, &empty, &names(&n)));
    }
    assert_eq!(
        fired.iter().map(|f| f.rule).collect::<Vec<_>>(),
        vec!["dns_tunnel", "dns_tunnel"],
        "at 30 and 40 names"
    );
    assert_eq!(fired[0].group, "dns_tunnel:exfil.example");
    assert!(fired[0].explanation.starts_with("30 distinct names under exfil.example in the last 60 s, 42 characters"));
    assert_eq!(fired[0].src_ips, vec!["10.1.0.7"]);
    // Many short ordinary names under one domain: no tunnel.
    let mut d = Detectors::new(DetectConfig::default());
    let list: Vec<String> = (0..200).map(|i| format!("host{i}.cdn.example.net")).collect();
    let n: Vec<(&str, [u8; 4], u32, u32)> = list.iter().map(|s| (s.as_str(), [10, 1, 0, 8], 3, 0)).collect();
    assert!(d.evaluate(sec, &empty, &names(&n)).is_empty());
    // NXDOMAIN storm: 120 NXDOMAIN of 130 queries in 10 s from one client.
    let mut d = Detectors::new(DetectConfig::default());
    let mut got = Vec::new();
    for i in 0..10u64 {
        let list: Vec<String> = (0..12).map(|j| format!("q{i}x{j}.com")).collect();
        let mut n: Vec<(&str, [u8; 4], u32, u32)> = list.iter().map(|s| (s.as_str(), [10, 1, 0, 66], 1, 1)).collect();
        n.push(("www.example.com", [10, 1, 0, 66], 1, 0));
        got.extend(d.evaluate(sec + i, &empty, &names(&n)));
    }
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].rule, "dns_nxdomain_storm");
    assert!(
        got[0].explanation.starts_with("10.1.0.66 got 108 NXDOMAIN answers in the last 10 s (92% of its 117 queries)"),
        "{}",
        got[0].explanation
    );
    // A client with a few typos among many good answers: nothing.
    let mut d = Detectors::new(DetectConfig::default());
    for i in 0..10u64 {
        let list: Vec<String> = (0..50).map(|j| format!("h{j}.example.org")).collect();
        let mut n: Vec<(&str, [u8; 4], u32, u32)> = list.iter().map(|s| (s.as_str(), [10, 1, 0, 9], 4, 0)).collect();
        n.push(("typo.example.org", [10, 1, 0, 9], 20, 20));
        assert!(d.evaluate(sec + i, &empty, &names(&n)).is_empty());
    }
}

fn feed(dir: &std::path::Path, name: &str, text: &str, format: intel::FeedFormat) -> intel::FeedSpec {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    intel::FeedSpec { name: name.split('.').next().unwrap().to_string(), path, format }
}

#[test]
fn threat_feeds_in_every_common_format() {
    use intel::{FeedFormat, Intel};
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![
        feed(
            dir.path(),
            "plain.txt",
            "# my list\n192.0.2.7\n198.51.100.0/24 ; a network\n2001:db8:bad::/48\nbad.example\nnot an indicator\n",
            FeedFormat::Auto,
        ),
        feed(
            dir.path(),
            "drop.txt",
            "; Spamhaus DROP List\n1.10.16.0/20 ; SBL256894\n1.19.0.0/16 ; SBL434604\n",
            FeedFormat::Plain,
        ),
        feed(
            dir.path(),
            "hosts.txt",
            "127.0.0.1 localhost\n0.0.0.0 ads.tracker.example\n0.0.0.0 malware.example # comment\n",
            FeedFormat::Auto,
        ),
        feed(
            dir.path(),
            "feodo.csv",
            "################\n# Feodo Tracker\n# \"first_seen_utc\",\"dst_ip\",\"dst_port\",\"c2_status\",\"last_online\",\"malware\"\n\"2024-01-01 00:00:00\",\"203.0.113.66\",\"443\",\"online\",\"2024-01-02\",\"QakBot\"\n",
            FeedFormat::Auto,
        ),
        feed(
            dir.path(),
            "urlhaus.csv",
            "# id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter\n\"1\",\"2024-01-01\",\"http://dl.evil.example:8080/x.exe\",\"online\",\"\",\"malware_download\",\"exe\",\"https://urlhaus.abuse.ch/url/1/\",\"r\"\n\"2\",\"2024-01-01\",\"http://203.0.113.99/bins/mozi\",\"online\",\"\",\"malware_download\",\"elf\",\"https://urlhaus.abuse.ch/url/2/\",\"r\"\n",
            FeedFormat::Auto,
        ),
        feed(
            dir.path(),
            "threatfox.csv",
            "# \"first_seen_utc\",\"ioc_id\",\"ioc_value\",\"ioc_type\",\"threat_type\"\n\"2024-01-01\",\"9\",\"203.0.113.120:4444\",\"ip:port\",\"botnet_cc\"\n\"2024-01-01\",\"10\",\"c2.evil.example\",\"domain\",\"botnet_cc\"\n",
            FeedFormat::Auto,
        ),
        feed(
            dir.path(),
            "drop_v4.json",
            "{\"cidr\":\"1.2.3.0/24\",\"sblid\":\"SBL1\",\"rir\":\"apnic\"}\n{\"type\":\"metadata\",\"timestamp\":1}\n",
            FeedFormat::Auto,
        ),
    ];
    let (i, reports) = Intel::load(&specs).unwrap();
    let r = |n: &str| reports.iter().find(|r| r.name == n).unwrap().clone();
    assert_eq!((r("plain").networks, r("plain").domains, r("plain").bad_count), (3, 1, 1));
    assert_eq!(r("plain").bad_lines, vec![(6, "not an indicator".to_string())]);
    assert_eq!((r("drop").networks, r("hosts").domains), (2, 2));
    assert_eq!((r("feodo").networks, r("urlhaus").networks, r("urlhaus").domains), (1, 1, 1));
    assert_eq!((r("threatfox").networks, r("threatfox").domains, r("drop_v4").networks), (1, 1, 1));
    let ip = |s: &str| {
        let a: std::net::IpAddr = s.parse().unwrap();
        match a {
            std::net::IpAddr::V4(v) => i.ip(&v4(v.octets()), false).map(str::to_string),
            std::net::IpAddr::V6(v) => i.ip(&v.octets(), true).map(str::to_string),
        }
    };
    assert_eq!(ip("192.0.2.7").as_deref(), Some("plain"));
    assert_eq!(ip("192.0.2.8"), None);
    assert_eq!(ip("198.51.100.0").as_deref(), Some("plain"));
    assert_eq!(ip("198.51.100.255").as_deref(), Some("plain"));
    assert_eq!(ip("198.51.101.0"), None);
    assert_eq!(ip("1.10.31.255").as_deref(), Some("drop"));
    assert_eq!(ip("1.10.32.0"), None);
    assert_eq!(ip("203.0.113.66").as_deref(), Some("feodo"));
    assert_eq!(ip("203.0.113.99").as_deref(), Some("urlhaus"));
    assert_eq!(ip("203.0.113.120").as_deref(), Some("threatfox"));
    assert_eq!(ip("1.2.3.4").as_deref(), Some("drop_v4"));
    assert_eq!(ip("2001:db8:bad:1::5").as_deref(), Some("plain"));
    assert_eq!(ip("2001:db8:bae::5"), None);
    assert_eq!(i.domain("www.bad.example"), Some(("bad.example", "plain")));
    assert_eq!(i.domain("bad.example"), Some(("bad.example", "plain")));
    assert_eq!(i.domain("notbad.example"), None);
    assert_eq!(i.domain("dl.evil.example"), Some(("dl.evil.example", "urlhaus")));
    assert_eq!(i.domain("x.c2.evil.example"), Some(("c2.evil.example", "threatfox")));
    assert_eq!(i.domain("ads.tracker.example"), Some(("ads.tracker.example", "hosts")));
    assert_eq!(i.domain("localhost"), None);
    // Unreadable or empty feeds are errors naming the feed.
    let missing = intel::FeedSpec { name: "gone".into(), path: dir.path().join("gone.txt"), format: FeedFormat::Auto };
    assert!(Intel::load(&[missing]).unwrap_err().to_string().contains("threat feed gone"));
    let empty = feed(dir.path(), "empty.txt", "# nothing\n\nfoo bar\n", FeedFormat::Plain);
    assert!(Intel::load(&[empty]).unwrap_err().to_string().contains("no indicator in 3 lines"));
    let blank = feed(dir.path(), "blank.txt", "", FeedFormat::Plain);
    assert!(Intel::load(&[blank]).unwrap_err().to_string().contains("no indicator in 0 lines"));
    // A list emptied on purpose (only comments) loads with nothing in it.
    let cleared = feed(dir.path(), "cleared.txt", "# tapstream blocklist: no entries\n", FeedFormat::Plain);
    let (i, _) = Intel::load(&[cleared]).unwrap();
    assert_eq!(i.domain("bad.example"), None);
}

#[test]
fn listed_addresses_and_names_raise_one_alert_each() {
    use intel::{FeedFormat, Intel};
    let dir = tempfile::tempdir().unwrap();
    let (i, _) = Intel::load(&[feed(dir.path(), "bl.txt", "203.0.113.66\nbad.example\n", FeedFormat::Plain)]).unwrap();
    let mut convs: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> = HashMap::default();
    for (src, dst) in
        [([10, 0, 0, 1], [203, 0, 113, 66]), ([10, 0, 0, 2], [203, 0, 113, 66]), ([10, 0, 0, 1], [10, 0, 0, 9])]
    {
        convs.insert(
            ConvKey { src: v4(src), dst: v4(dst), v6: false, proto: 6, dport: 443 },
            ConvStat {
                pkts: 5,
                rpkts: 4,
                bytes: 500,
                rbytes: 400,
                flows: 1,
                syn: 1,
                answered: 1,
                sample: 9,
                ..Default::default()
            },
        );
    }
    let mut n = names(&[("www.bad.example", [10, 0, 0, 3], 2, 0), ("ok.example", [10, 0, 0, 3], 2, 0)]);
    n.insert(
        NameKey { name: "bad.example".into(), client: v4([10, 0, 0, 4]), v6: false },
        NameStat { seen_in: NAME_SNI, other: 1, sample: 3, ..Default::default() },
    );
    let mut d = Detectors::new(DetectConfig::default());
    let mut out = Vec::new();
    d.intel(&i, &convs, &n, &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    let ipf = out.iter().find(|f| f.group == "intel:203.0.113.66").unwrap();
    assert_eq!(ipf.rule, "threat_intel");
    assert_eq!(ipf.category, Category::Intel);
    assert_eq!(ipf.packets, 18);
    assert_eq!(ipf.dst_ips, vec!["203.0.113.66"]);
    assert_eq!(ipf.src_ips.len(), 2);
    assert!(ipf.explanation.contains("talked to 203.0.113.66, listed by bl: 18 packets"), "{}", ipf.explanation);
    let nf = out.iter().find(|f| f.group == "intel:bad.example").unwrap();
    assert!(
        nf.explanation.starts_with("bad.example (listed by bl) looked up in DNS, named in TLS (SNI) by "),
        "{}",
        nf.explanation
    );
    // Nothing listed, nothing raised.
    let mut out = Vec::new();
    d.intel(&Intel::default(), &convs, &n, &mut out);
    assert!(out.is_empty());
}

#[test]
fn feeds_reload_when_their_file_changes_and_keep_the_old_on_error() {
    use intel::{FeedFormat, Intel, IntelFeeds};
    let dir = tempfile::tempdir().unwrap();
    let spec = feed(dir.path(), "bl.txt", "192.0.2.1\n", FeedFormat::Plain);
    let (i, _) = Intel::load(std::slice::from_ref(&spec)).unwrap();
    let mut f = IntelFeeds::new(vec![spec.clone()], i, std::time::Duration::ZERO);
    let touch = |text: &str, secs: u64| {
        std::fs::write(&spec.path, text).unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000 + secs);
        std::fs::File::options().write(true).open(&spec.path).unwrap().set_modified(t).unwrap();
    };
    touch("192.0.2.2\n", 1);
    f.refresh();
    assert!(f.intel.ip(&v4([192, 0, 2, 2]), false).is_some());
    assert!(f.intel.ip(&v4([192, 0, 2, 1]), false).is_none());
    touch("garbage only\n", 2);
    f.refresh();
    assert!(f.intel.ip(&v4([192, 0, 2, 2]), false).is_some(), "a broken file keeps the old list");
}

#[test]
fn policies_flag_services_a_subnet_does_not_allow() {
    let (svc, any) = Service::parse("tcp/443").unwrap();
    let (icmp, _) = Service::parse("icmp").unwrap();
    assert!(!any && Service::parse("icmp/1").is_none() && Service::parse("sctp/1").is_none());
    let subnet = Subnet::parse("10.0.0.0/23").unwrap();
    assert!(subnet.contains(&v4([10, 0, 1, 255]), false) && !subnet.contains(&v4([10, 0, 2, 0]), false));
    assert!(
        Subnet::parse("2001:db8::/33")
            .unwrap()
            .contains(&"2001:db8:7fff::1".parse::<std::net::Ipv6Addr>().unwrap().octets(), true)
    );
    let cfg = DetectConfig {
        policies: vec![
            Policy {
                name: "dmz".into(),
                subnet,
                outbound: false,
                allow: vec![AllowRule { service: svc, any_port: false }, AllowRule { service: icmp, any_port: false }],
            },
            Policy {
                name: "no-smtp-out".into(),
                subnet: Subnet::parse("10.0.0.0/8").unwrap(),
                outbound: true,
                allow: vec![AllowRule { service: Service { proto: 6, port: 0 }, any_port: true }],
            },
        ],
        ..DetectConfig::default()
    };
    let mut convs: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> = HashMap::default();
    let st = ConvStat { pkts: 3, flows: 1, syn: 1, answered: 1, rpkts: 2, sample: 5, ..Default::default() };
    for (src, dst, proto, port) in [
        ([192, 0, 2, 1], [10, 0, 0, 5], 6, 443), // allowed
        ([192, 0, 2, 1], [10, 0, 0, 5], 6, 22),  // not allowed in
        ([192, 0, 2, 2], [10, 0, 0, 5], 6, 22),  // same host and service: same alert
        ([192, 0, 2, 1], [10, 0, 0, 5], 1, 0),   // icmp allowed
        ([10, 0, 0, 5], [192, 0, 2, 9], 17, 25), // out of 10/8 over UDP: not allowed out
        ([10, 0, 0, 5], [192, 0, 2, 9], 6, 25),  // tcp out: allowed
    ] {
        convs.insert(ConvKey { src: v4(src), dst: v4(dst), v6: false, proto, dport: port }, st);
    }
    let mut d = Detectors::new(cfg);
    let f = eval(&mut d, T0 / SEC, &convs);
    let groups: Vec<&str> = f.iter().map(|f| f.group.as_str()).collect();
    assert_eq!(groups, vec!["policy:dmz:10.0.0.5:tcp/22", "policy:no-smtp-out:10.0.0.5:udp/25"], "{f:?}");
    assert_eq!(f[0].flows, 2);
    assert!(
        f[0].explanation.starts_with("2 new tcp/22 connections to 10.0.0.5 (2 answered), which policy `dmz` (into 10.0.0.0/23) does not allow; allowed: tcp/443, icmp"),
        "{}",
        f[0].explanation
    );
    assert_eq!(f[1].src_ips, vec!["10.0.0.5"]);
}

#[test]
fn rules_parse_with_lines_for_every_mistake() {
    use rules::parse;
    let p = std::path::Path::new("rules.toml");
    let shipped = include_str!("../../../configs/rules.toml");
    let r = parse(p, shipped).unwrap();
    assert_eq!(r.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["udp-exfiltration", "many-ports"]);
    assert_eq!(r[0].severity, crate::alert::Severity::High);
    assert_eq!(r[0].cooldown_secs, 300);
    let bad = |text: &str| parse(p, text).unwrap_err().to_string();
    let e = bad(
        "[[rule]]\nname = \"a\"\ncondition = \"packets_per_s by src_ip > 10\"\n\n[[rule]]\nname = \"b\"\n\ncondition = \"bytes_per_s by nothing > 5\"\n",
    );
    assert_eq!(e, "rules file rules.toml, line 8: rule `b`: `by` needs a key field, found `nothing`");
    let e = bad("[[rule]]\nname = \"a\"\ncondition = \"packets_per_s by src_ip > lots\"\n");
    assert!(e.contains("line 3: rule `a`: `lots` is not a number"), "{e}");
    let e = bad("[[rule]]\nname = \"a\"\ncondition = \"flows by dst_ip > 5 for ever\"\n");
    assert!(e.contains("`for` needs a duration"), "{e}");
    let e = bad("[[rule]]\nname = \"a\"\ncondition = \"dst_port = 22 and src_ip in [10.0.0.0/33]\"\n");
    assert!(e.contains("`10.0.0.0/33` is not an address or network"), "{e}");
    let e = bad("[[rule]]\nname = \"a\"\nseverity = \"loud\"\ncondition = \"dst_port = 22\"\n");
    assert!(e.contains("line 1: rule `a`: severity `loud`"), "{e}");
    let e = bad(
        "[[rule]]\nname = \"a\"\ncondition = \"dst_port = 22\"\n[[rule]]\nname = \"a\"\ncondition = \"dst_port = 23\"\n",
    );
    assert!(e.contains("names must be set and distinct"), "{e}");
    let e = bad("[[rule]]\nname = \"a\"\ncondition = \"dst_port = 22\"\ncolour = 1\n");
    assert!(e.starts_with("rules file rules.toml: ") && e.contains("colour"), "{e}");
    let e = bad("[[rule]]\nname = \"a\"\ncondition = \"dst_port = 22\"\nactions = [\"page\"]\n");
    assert!(e.contains("action `page`"), "{e}");
}

fn rule(text: &str) -> rules::Rule {
    rules::parse(std::path::Path::new("r.toml"), &format!("[[rule]]\nname = \"r\"\ncondition = '{text}'\n"))
        .unwrap()
        .remove(0)
}

fn udp(src: [u8; 4], dst: [u8; 4], port: u16, pkts: u64, bytes: u64) -> (ConvKey, ConvStat) {
    (
        ConvKey { src: v4(src), dst: v4(dst), v6: false, proto: 17, dport: port },
        ConvStat { pkts, bytes, flows: 1, sample: 11, ..Default::default() },
    )
}

#[test]
fn rules_measure_per_key_for_and_in_windows() {
    let s0 = T0 / SEC;
    // bytes_per_s over 50 MB/s for 30 s, UDP only.
    let mut set =
        rules::RuleSet::from_rules(vec![rule("bytes_per_s by src_ip > 50 MB/s for 30s where proto = udp")], 60);
    let mut fired_at = None;
    for i in 0..40 {
        let mut m: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> = HashMap::default();
        m.extend([
            udp([10, 0, 0, 1], [192, 0, 2, 1], 9000, 60_000, 60_000_000),
            udp([10, 0, 0, 2], [192, 0, 2, 1], 9000, 1000, 1_000_000),
        ]);
        let mut out = Vec::new();
        set.evaluate(s0 + i, &m, None, &mut out);
        if !out.is_empty() && fired_at.is_none() {
            fired_at = Some(i);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].rule_name.as_deref(), Some("r"));
            assert_eq!(out[0].group, "rule:r:10.0.0.1");
            assert_eq!(out[0].src_ips, vec!["10.0.0.1"]);
            assert!(
                out[0]
                    .explanation
                    .starts_with("bytes/s for src_ip 10.0.0.1 is 60,000,000 (> 50,000,000 (MB/s), for 30 s in a row)"),
                "{}",
                out[0].explanation
            );
        }
    }
    assert_eq!(fired_at, Some(29), "the 30th second in a row");
    // The same volume over TCP does not count.
    let mut set = rules::RuleSet::from_rules(vec![rule("bytes_per_s by src_ip > 50 MB/s where proto = udp")], 60);
    let mut m: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> = HashMap::default();
    let (mut k, st) = udp([10, 0, 0, 1], [192, 0, 2, 1], 9000, 60_000, 60_000_000);
    k.proto = 6;
    m.insert(k, st);
    let mut out = Vec::new();
    set.evaluate(s0, &m, None, &mut out);
    assert!(out.is_empty());
    // distinct dst_port over 60 s.
    let mut set = rules::RuleSet::from_rules(vec![rule("distinct dst_port by src_ip > 100 in 60s")], 60);
    let mut out = Vec::new();
    for i in 0..3u64 {
        let m: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> =
            (0..40).map(|p| udp([10, 0, 0, 9], [192, 0, 2, 5], (i * 40 + p) as u16 + 1, 1, 60)).collect();
        set.evaluate(s0 + i * 10, &m, None, &mut out);
    }
    assert_eq!(out.len(), 1, "120 ports within 60 s: {out:?}");
    assert!(
        out[0].explanation.starts_with("distinct dst_port for src_ip 10.0.0.9 is 120 over 60 s (> 100)"),
        "{}",
        out[0].explanation
    );
    // A filter alone: every new flow it matches, per source and destination.
    let mut set =
        rules::RuleSet::from_rules(vec![rule(r#"dst_port = 22 and src_ip in ["10.0.0.0/8"] and proto != udp"#)], 60);
    let mut m: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> = HashMap::default();
    for (src, port, proto) in
        [([10, 1, 1, 1], 22, 6), ([172, 16, 0, 1], 22, 6), ([10, 1, 1, 2], 23, 6), ([10, 1, 1, 3], 22, 17)]
    {
        let (mut k, st) = udp(src, [192, 0, 2, 7], port, 3, 180);
        k.proto = proto;
        m.insert(k, st);
    }
    let mut out = Vec::new();
    set.evaluate(s0, &m, None, &mut out);
    assert_eq!(out.iter().map(|f| f.group.as_str()).collect::<Vec<_>>(), vec!["rule:r:10.1.1.1 → 192.0.2.7"]);
    assert_eq!(
        (out[0].src_ips.clone(), out[0].dst_ips.clone()),
        (vec!["10.1.1.1".to_string()], vec!["192.0.2.7".to_string()])
    );
}

#[test]
fn rules_cool_down_and_reload_only_whole_good_files() {
    let s0 = T0 / SEC;
    let mut r = rule("packets_per_s by dst_ip > 100");
    r.cooldown_secs = 30;
    let mut set = rules::RuleSet::from_rules(vec![r], 10);
    let hot: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> =
        [udp([10, 0, 0, 1], [192, 0, 2, 1], 53, 500, 1)].into_iter().collect();
    let quiet: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> = HashMap::default();
    let fires = |set: &mut rules::RuleSet, sec: u64, m: &HashMap<ConvKey, ConvStat, foldhash::fast::FixedState>| {
        let mut out = Vec::new();
        set.evaluate(sec, m, None, &mut out);
        !out.is_empty()
    };
    assert!(fires(&mut set, s0, &hot));
    assert!(fires(&mut set, s0 + 5, &hot), "an open alert keeps being fed");
    for i in 6..20 {
        assert!(!fires(&mut set, s0 + i, &quiet));
    }
    // Closed after 10 s quiet (at 15 s): quiet for 30 s more.
    assert!(!fires(&mut set, s0 + 20, &hot), "cooling down");
    assert!(!fires(&mut set, s0 + 45, &hot), "cooling down");
    assert!(fires(&mut set, s0 + 46, &hot));
    // Reload: a good file replaces the rules, a bad one changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    let write = |text: &str, secs: u64| {
        std::fs::write(&path, text).unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000 + secs);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(t).unwrap();
    };
    write("[[rule]]\nname = \"one\"\ncondition = \"dst_port = 22\"\n", 1);
    let mut set = rules::RuleSet::load(&path, 60).unwrap().check_every(std::time::Duration::ZERO);
    write(
        "[[rule]]\nname = \"one\"\ncondition = \"dst_port = 22\"\n[[rule]]\nname = \"two\"\ncondition = \"dst_port = 23\"\n",
        2,
    );
    set.refresh();
    assert_eq!(set.rules.len(), 2);
    write(
        "[[rule]]\nname = \"three\"\ncondition = \"dst_port = 24\"\n[[rule]]\nname = \"bad\"\ncondition = \"dst_port = x\"\n",
        3,
    );
    set.refresh();
    assert_eq!(
        set.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["one", "two"],
        "the bad file is refused whole"
    );
}

fn normal_second(rng: &mut u64) -> ml::SecondCounts {
    let mut r = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        (*rng % 1000) as f64 / 1000.0
    };
    let pps = 2000.0 * (0.8 + 0.4 * r());
    ml::SecondCounts {
        packets: pps,
        bytes: pps * (700.0 + 100.0 * r()),
        sources: 150.0 + 30.0 * r(),
        destinations: 30.0 + 8.0 * r(),
        ports: 6.0 + 2.0 * r(),
        syn: 60.0 + 10.0 * r(),
        syn_unanswered: 2.0 * r(),
        tcp_packets: pps * 0.7,
        udp_packets: pps * 0.28,
        icmp_packets: pps * 0.02,
        other_packets: 0.0,
        dns_queries: 50.0 + 10.0 * r(),
        dns_nxdomain: r(),
    }
}

#[test]
fn isolation_forest_isolates_outliers_and_names_what_moved() {
    assert_eq!(ml::c(1.0), 0.0);
    assert_eq!(ml::c(2.0), 1.0);
    assert!((ml::c(256.0) - 10.244).abs() < 0.01, "{}", ml::c(256.0));
    let mut rng = 7u64;
    let base: Vec<ml::Features> = (0..600).map(|_| normal_second(&mut rng).features()).collect();
    assert!(ml::Model::train(&base[..10], 100, 256, 1, 0, 1).is_err(), "too little to learn from");
    let m = ml::Model::train(&base, 100, 256, 1, 0, 1).unwrap();
    assert!(m == ml::Model::train(&base, 100, 256, 1, 0, 1).unwrap(), "deterministic for a seed");
    let fresh: Vec<f64> = (0..200).map(|_| m.score(&normal_second(&mut rng).features())).collect();
    let mean = fresh.iter().sum::<f64>() / fresh.len() as f64;
    assert!(fresh.iter().all(|s| *s > 0.0 && *s < 1.0));
    let mx = fresh.iter().cloned().fold(0.0, f64::max);
    let mut bu = normal_second(&mut rng);
    bu.packets *= 30.0;
    bu.bytes *= 30.0;
    bu.udp_packets *= 100.0;
    assert!(mean < 0.5, "ordinary seconds score about 0.5 or less: {mean}");
    assert!(mx < 0.6, "none reaches the suspicious threshold: {mx}");
    assert!(m.score(&bu.features()) > 0.6, "a burst: {}", m.score(&bu.features()));
    // A port sweep: the same traffic, 40× the destination ports.
    let mut sweep = normal_second(&mut rng);
    sweep.ports = 300.0;
    let x = sweep.features();
    assert!(m.score(&x) > 0.6, "{}", m.score(&x));
    assert_eq!(ml::FEATURES[m.drivers(&x)[0].0], "destination ports");
    assert!(m.drivers(&x)[0].1 > 3.0, "above the usual");
    // Far outside everything: isolated at least as fast as the oddest
    // second of the baseline (scores saturate outside the training range).
    let far = [1e9, 1e12, 1e6, 1e6, 6e4, 1.0, 60.0, 0.0, 1.0];
    let train_max = base.iter().map(|x| m.score(x)).fold(0.0, f64::max);
    assert!(m.score(&far) > 0.6 && m.score(&far) >= train_max - 0.02, "{} vs {train_max}", m.score(&far));
    // Saved and loaded, the same model.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.json");
    m.save(&p).unwrap();
    let back = ml::Model::load(&p).unwrap();
    for x in [&far, &x, &base[0]] {
        assert!((back.score(x) - m.score(x)).abs() < 1e-9, "the loaded model scores alike");
    }
    std::fs::write(&p, "{\"version\": 9}").unwrap();
    assert!(ml::Model::load(&p).unwrap_err().to_string().starts_with("model file "));
}

#[test]
fn the_anomaly_detector_learns_then_flags_and_stays_quiet_when_explained() {
    let cfg = MlConfig { learn_secs: 300, ..MlConfig::default() };
    let mut a = ml::Anomaly::new(cfg);
    let mut rng = 11u64;
    let s0 = T0 / SEC;
    let mut out = Vec::new();
    for i in 0..400 {
        a.evaluate(s0 + i, &normal_second(&mut rng), false, &mut out);
    }
    assert!(a.model.is_some(), "learned from 300 seconds after the first minute");
    assert!(out.is_empty(), "ordinary traffic: {out:?}");
    let mut burst = normal_second(&mut rng);
    burst.packets *= 30.0;
    burst.bytes *= 30.0;
    burst.udp_packets *= 100.0;
    for i in 0..3 {
        a.evaluate(s0 + 400 + i, &burst, true, &mut out);
    }
    assert!(out.is_empty(), "another detector explains it");
    for i in 0..3 {
        a.evaluate(s0 + 410 + i, &burst, false, &mut out);
    }
    assert_eq!(out.len(), 1, "after for_secs seconds in a row");
    assert_eq!(out[0].rule, "ml_anomaly");
    assert!(out[0].explanation.contains("packets/s"), "{}", out[0].explanation);
    assert!(
        out[0].explanation.contains("(usual 2,0") || out[0].explanation.contains("(usual 1,9"),
        "{}",
        out[0].explanation
    );
}

/// Traffic to one host from `n` sources: `pps` packets/s of TCP data, all answered.
fn to_host(dst: [u8; 4], n: u32, pps: u64) -> HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> {
    (0..n)
        .map(|i| {
            (
                ConvKey { src: v4([100, 64, (i >> 8) as u8, i as u8]), dst: v4(dst), v6: false, proto: 6, dport: 443 },
                ConvStat { pkts: pps / n as u64, bytes: 1000 * pps / n as u64, rpkts: 1, ..Default::default() },
            )
        })
        .collect()
}

#[test]
fn volumetric_ddos_against_the_hosts_baseline_and_the_unlearned_limit() {
    let s0 = T0 / SEC;
    let cfg = DetectConfig {
        ddos: DdosConfig { warmup_secs: 60, ..DetectConfig::default().ddos },
        spike: SpikeConfig { enabled: false, ..DetectConfig::default().spike },
        ..DetectConfig::default()
    };
    // A busy host: 5,000 packets/s from 200 sources, learnt over 2 minutes.
    let mut d = Detectors::new(cfg.clone());
    for i in 0..120 {
        assert!(eval(&mut d, s0 + i, &to_host([10, 0, 0, 80], 200, 5000)).is_empty());
    }
    // 12x its baseline from 1,000 sources: a DDoS.
    let f = eval(&mut d, s0 + 120, &to_host([10, 0, 0, 80], 1000, 60_000));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].rule, f[0].category), ("ddos", Category::Ddos));
    assert!(
        f[0].explanation.contains("from 1,000 sources, 12× its 1-hour baseline of 5,000 packets/s"),
        "{}",
        f[0].explanation
    );
    // Twice its baseline: busy, not an attack.
    assert!(eval(&mut d, s0 + 121, &to_host([10, 0, 0, 80], 1000, 10_000)).is_empty());
    // Far over the baseline but from a handful of sources: not distributed.
    assert!(eval(&mut d, s0 + 122, &to_host([10, 0, 0, 80], 20, 60_000)).is_empty());
    // A host never seen before: only the unlearned limit counts.
    let mut d = Detectors::new(cfg);
    assert!(eval(&mut d, s0, &to_host([10, 0, 0, 81], 500, 60_000)).is_empty());
    let f = eval(&mut d, s0 + 1, &to_host([10, 0, 0, 82], 500, 150_000));
    assert_eq!(f.len(), 1);
    assert!(f[0].explanation.contains("no baseline yet; over the 100,000 packets/s limit"), "{}", f[0].explanation);
}

#[test]
fn icmp_and_udp_floods_need_their_rates_and_no_answers() {
    let s0 = T0 / SEC;
    let mut d = Detectors::new(DetectConfig::default());
    let icmp: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> = (0..50u32)
        .map(|i| {
            (
                ConvKey { src: v4([100, 64, 0, i as u8]), dst: v4([10, 0, 0, 9]), v6: false, proto: 1, dport: 0 },
                ConvStat { pkts: 40, bytes: 40 * 84, rpkts: 40, flows: 1, ..Default::default() },
            )
        })
        .collect();
    let f = eval(&mut d, s0, &icmp);
    assert_eq!(f.iter().map(|f| f.rule).collect::<Vec<_>>(), vec!["icmp_flood"], "2,000 echo requests/s");
    let slow: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> =
        icmp.iter().map(|(k, s)| (*k, ConvStat { pkts: s.pkts / 4, ..*s })).collect();
    assert!(eval(&mut Detectors::new(DetectConfig::default()), s0, &slow).is_empty(), "500/s is ping traffic");
    // A DNS server answering 8,000 queries/s is not flooded.
    let answered = udp_map(8000, [10, 0, 0, 53], 400);
    assert!(eval(&mut Detectors::new(DetectConfig::default()), s0, &answered).is_empty());
    let mut unanswered = answered.clone();
    unanswered.values_mut().for_each(|s| s.rpkts = 0);
    let f = eval(&mut Detectors::new(DetectConfig::default()), s0, &unanswered);
    assert_eq!(f.iter().map(|f| f.rule).collect::<Vec<_>>(), vec!["udp_flood"]);
}

#[test]
fn a_spoofed_flood_does_not_blind_the_scan_detector() {
    let s0 = T0 / SEC;
    let mut d = Detectors::new(DetectConfig::default());
    // A spoofed SYN flood on 10.0.0.5: 150,000 sources, one SYN each; a
    // second later their attempts are judged failed (no flood that second).
    let flood = syn_map([10, 0, 0, 5], 150_000, 1, false);
    assert_eq!(eval(&mut d, s0, &flood).first().map(|f| f.rule), Some("syn_flood"));
    let mut late: HashMap<ConvKey, ConvStat, foldhash::fast::FixedState> = HashMap::default();
    for k in flood.keys() {
        late.insert(*k, ConvStat { failed: 1, ..Default::default() });
    }
    assert!(eval(&mut d, s0 + 1, &late).is_empty(), "the flood's failures are not 150,000 scans");
    // Then a real scan of another host: seen.
    let f = eval(&mut d, s0 + 3, &scan_map([10, 9, 9, 9], (1..=150).map(|p| ([10, 0, 0, 6], p)), true));
    assert_eq!(f.iter().map(|f| f.rule).collect::<Vec<_>>(), vec!["port_scan_vertical"]);
    // And a scan of the flooded host itself, a few seconds after the flood.
    let f = eval(&mut d, s0 + 4, &scan_map([10, 9, 9, 8], (1..=150).map(|p| ([10, 0, 0, 5], p)), true));
    assert_eq!(f.iter().map(|f| f.rule).collect::<Vec<_>>(), vec!["port_scan_vertical"]);
}
