use tapstream_plugin_sdk::abi::window;
use tapstream_plugin_sdk::testing::{BatchWriter, RecordingHost};
use tapstream_plugin_sdk::{Category, Kind, Plugin, dispatch};

use super::Beacon;

const S: u64 = 1_000_000_000;

fn conn(w: &mut BatchWriter, sec: u64, src: &str, dst: &str, port: u16) {
    w.record()
        .u64(window::SEC_NS, sec * S)
        .addr(window::SRC, src)
        .addr(window::DST, dst)
        .u8(window::PROTO, 6)
        .u16(window::DPORT, port)
        .u32(window::FLOWS, 1)
        .u64(window::PKTS, 5)
        .u64(window::BYTES, 400)
        .u64(window::SAMPLE, sec);
}

/// Feed one second at a time, as the appliance does.
fn run(b: &mut Beacon, host: &mut RecordingHost, conns: &[(u64, &str, &str, u16)]) {
    let mut secs: Vec<u64> = conns.iter().map(|c| c.0).collect();
    secs.dedup();
    for s in secs {
        let mut w = BatchWriter::new(Kind::Window);
        for c in conns.iter().filter(|c| c.0 == s) {
            conn(&mut w, c.0, c.1, c.2, c.3);
        }
        assert_eq!(dispatch(b, host, Kind::Window as u32, &w.bytes(), w.count), 0);
        b.on_tick(host, (s + 1) * S);
    }
}

fn plugin(host: &mut RecordingHost) -> Beacon {
    Beacon::init(host).unwrap()
}

#[test]
fn regular_connections_are_a_beacon() {
    let mut host = RecordingHost::default();
    let mut b = plugin(&mut host);
    // Every 60 s ± 1 s, with background traffic to other places.
    let mut conns = Vec::new();
    for i in 0..12u64 {
        let jitter = [0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0][i as usize];
        conns.push((1000 + i * 60 + jitter, "10.0.0.5", "203.0.113.9", 443));
        conns.push((1000 + i * 37 + 3, "10.0.0.5", "198.51.100.1", 80));
    }
    conns.sort();
    run(&mut b, &mut host, &conns);
    let a = host.alerts.iter().find(|a| a.dst_ips == "203.0.113.9").expect("no alert for the 60 s pair");
    assert_eq!(a.rule, "beacon");
    assert_eq!(a.category, Category::Malware);
    assert_eq!(a.src_ips, "10.0.0.5");
    assert_eq!(a.dst_ips, "203.0.113.9");
    assert_eq!(a.ports[0], 443);
    assert!(a.explanation.contains("10.0.0.5 → 203.0.113.9:443/tcp connected 10 times"), "{}", a.explanation);
    assert!(a.explanation.contains("60."), "{}", a.explanation);
    // The pair at 37 s intervals is regular too, and reported separately.
    assert!(host.alerts.iter().all(|a| a.group.contains("203.0.113.9") || a.group.contains("198.51.100.1")));
}

#[test]
fn irregular_connections_are_not() {
    let mut host = RecordingHost::default();
    let mut b = plugin(&mut host);
    let gaps = [12u64, 95, 7, 300, 41, 66, 150, 9, 33, 210];
    let mut t = 5000;
    let mut conns = Vec::new();
    for g in gaps {
        t += g;
        conns.push((t, "10.0.0.7", "192.0.2.80", 443));
    }
    run(&mut b, &mut host, &conns);
    assert!(host.alerts.is_empty(), "{:?}", host.alerts);
}

#[test]
fn too_fast_or_too_few_is_not_a_beacon() {
    let mut host = RecordingHost::default();
    let mut b = plugin(&mut host);
    // Every 2 s (an interactive session polling), below min_interval_secs.
    let fast: Vec<_> = (0..20).map(|i| (100 + i * 2, "10.0.0.8", "192.0.2.1", 8080)).collect();
    // Regular but only 9 times.
    let few: Vec<_> = (0..9).map(|i| (100 + i * 60, "10.0.0.9", "192.0.2.2", 443)).collect();
    let mut all = [fast, few].concat();
    all.sort();
    run(&mut b, &mut host, &all);
    assert!(host.alerts.is_empty(), "{:?}", host.alerts);
}

#[test]
fn config_is_read_and_checked() {
    let mut host = RecordingHost::with_config(&[("min_connections", "2")]);
    assert!(Beacon::init(&mut host).is_err());
    let mut host = RecordingHost::with_config(&[("min_connections", "3"), ("max_jitter", "0.5")]);
    let mut b = Beacon::init(&mut host).unwrap();
    run(
        &mut b,
        &mut host,
        &[(10, "10.0.0.1", "10.0.0.2", 22), (20, "10.0.0.1", "10.0.0.2", 22), (32, "10.0.0.1", "10.0.0.2", 22)],
    );
    assert_eq!(host.alerts.len(), 1, "3 connections, jitter 9% ≤ 50%");
}

#[test]
fn the_pair_table_is_bounded() {
    let mut host = RecordingHost::with_config(&[("max_pairs", "100")]);
    let mut b = Beacon::init(&mut host).unwrap();
    let ips: Vec<String> = (0..1000).map(|i| format!("10.1.{}.{}", i / 250, i % 250)).collect();
    let conns: Vec<_> = ips.iter().map(|ip| (50, ip.as_str(), "192.0.2.9", 443)).collect();
    run(&mut b, &mut host, &conns);
    assert!(b.pairs() <= 100, "{} pairs", b.pairs());
}
