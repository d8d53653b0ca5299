//! Detection end to end: injected attacks raise the right alert, once, within
//! two seconds of their start; benign traffic raises none.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray};
use common::bin;
use serde_json::Value;
use tapstream_engine::detect::{DetectConfig, DetectSetup};
use tapstream_engine::pipeline::{self, PipelineConfig, Progress};
use tapstream_engine::records::Table;
use tapstream_engine::source::{SynthConfig, SynthSource};

const START_NS: u64 = 1_767_225_600_000_000_000; // the generator's default start
const SEC: u64 = 1_000_000_000;

fn ns(rfc3339: &str) -> u64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
    t.unix_timestamp_nanos() as u64
}

/// The alert log's events, grouped by alert id (in order of opening).
fn alerts(data: &Path) -> Vec<Vec<Value>> {
    let text = std::fs::read_to_string(data.join("alerts.json")).unwrap_or_default();
    let mut by_id: BTreeMap<String, (usize, Vec<Value>)> = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("alert log line {l}: {e}"));
        let id = v["id"].as_str().unwrap().to_string();
        by_id.entry(id).or_insert_with(|| (i, Vec::new())).1.push(v);
    }
    let mut v: Vec<(usize, Vec<Value>)> = by_id.into_values().collect();
    v.sort_by_key(|x| x.0);
    v.into_iter().map(|x| x.1).collect()
}

fn ingest(pcap: &Path, data: &Path, config: Option<&Path>, workers: &str) -> String {
    let mut c = bin();
    if let Some(cfg) = config {
        c.arg("--config").arg(cfg);
    }
    let out = c.args(["ingest", "--quiet", "--workers", workers]).arg(pcap).arg("--data").arg(data).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "ingest {}: {err}", pcap.display());
    err
}

#[test]
fn each_injected_attack_raises_one_right_alert_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("attacks.pcap");
    // Normal traffic for 100 s with four attacks on 198.51.100.200, far
    // enough apart that each alert has closed (60 s quiet) or is a different
    // condition before the next starts.
    let attacks = [
        ("syn-flood", 4000, 20.3, 10.0, "syn_flood"),
        ("port-scan", 600, 40.6, 5.0, "port_scan_vertical"),
        ("udp-flood", 8000, 60.0, 5.0, "udp_flood"),
        ("icmp-flood", 3000, 80.5, 5.0, "icmp_flood"),
        ("dns-tunnel", 200, 100.2, 5.0, "dns_tunnel"),
        ("dns-nxdomain", 400, 110.0, 5.0, "dns_nxdomain_storm"),
    ];
    let spec: Vec<String> = attacks.iter().map(|(k, pps, at, d, _)| format!("{k}:{pps}@{at}+{d}")).collect();
    let out = bin()
        .args(["synth", "--packets", "470000", "--pps", "3000", "--attacks", &spec.join(",")])
        .arg("--out")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data = dir.path().join("data");
    let log = ingest(&pcap, &data, None, "2");
    assert!(log.contains("alerts 6 (events"), "{log}");
    let got = alerts(&data);
    assert_eq!(got.len(), attacks.len(), "one alert per attack: {got:#?}");
    for (events, (kind, _, at, _, rule)) in got.iter().zip(attacks) {
        let open = &events[0];
        assert_eq!(open["event"], "open");
        assert_eq!(open["rule"], rule, "{kind}: {open}");
        let start = START_NS + (at * 1e9) as u64;
        let raised = ns(open["timestamp"].as_str().unwrap());
        let latency = raised as f64 / 1e9 - start as f64 / 1e9;
        assert!((0.0..=2.0).contains(&latency), "{kind}: raised {latency:.3} s after it started");
        assert!(ns(open["start"].as_str().unwrap()) <= start + SEC, "{kind}: start");
        if !kind.starts_with("dns") {
            assert!(open["dst_ips"].as_array().unwrap().iter().any(|d| d == "198.51.100.200"), "{kind}: {open}");
        }
        assert!(!open["explanation"].as_str().unwrap().is_empty());
        assert!(!open["sample_flows"].as_array().unwrap().is_empty(), "{kind}: evidence");
        let close = events.last().unwrap();
        assert_eq!(close["event"], "close", "{kind}: closes");
        assert!(events[1..events.len() - 1].iter().all(|e| e["event"] == "update"));
    }
    // One worker or two: the same alerts at the same times.
    let one = dir.path().join("one");
    ingest(&pcap, &one, None, "1");
    let key = |a: &[Vec<Value>]| -> Vec<(String, String, String, u64)> {
        a.iter()
            .flatten()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap().to_string();
                (s("rule"), s("event"), s("timestamp"), e["packets"].as_u64().unwrap())
            })
            .collect()
    };
    assert_eq!(key(&alerts(&one)), key(&got));
    assert_eq!(got[1][0]["src_ips"][0], "10.9.9.9");
    assert!(got[4][0]["explanation"].as_str().unwrap().contains("under exfil.example"), "{}", got[4][0]);
    assert_eq!(got[5][0]["src_ips"][0], "10.1.0.66");
    assert_eq!(got[1][0]["category"], "scan");
    assert_eq!(got[0][0]["verdict"], "malicious");
    assert_eq!(got[0][0]["ports"][0], 80);
    // The alerts table holds the same events as the log.
    let out = bin()
        .args(["sql", "SELECT id, event, rule FROM alerts WHERE ts >= '2026-01-01' ORDER BY ts, id", "--format", "csv"])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8_lossy(&out.stdout);
    let rows = csv.lines().count() - 1;
    assert_eq!(rows, got.iter().map(|e| e.len()).sum::<usize>(), "{csv}");
    for events in &got {
        assert!(csv.contains(&format!(
            "{},open,{}",
            events[0]["id"].as_str().unwrap(),
            events[0]["rule"].as_str().unwrap()
        )));
    }
}

/// A long run of normal synthetic traffic through the real pipeline (four
/// workers, detection on) raises nothing; the same run with a flood in the
/// middle raises exactly that flood, and its events reach the sink as
/// `alerts` batches.
#[test]
fn a_long_benign_run_is_quiet_and_alerts_reach_the_sink() {
    let run = |attacks: tapstream_engine::source::AttackMix| {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("alerts.json");
        let cfg = PipelineConfig {
            workers: 4,
            detect: Some(Arc::new(DetectSetup {
                cfg: DetectConfig::default(),
                log: Some(log.clone()),
                ..DetectSetup::default()
            })),
            ..PipelineConfig::default()
        };
        let src = SynthSource::new(SynthConfig { packets: 4_800_000, pps: 8000, attacks, ..SynthConfig::default() });
        let rows = Arc::new(Mutex::new(Vec::new()));
        let r = rows.clone();
        let (summary, err) =
            pipeline::run(src, &cfg, Arc::new(AtomicBool::new(false)), Arc::new(Progress::default()), move |(t, b)| {
                if t == Table::Alerts {
                    let rules = b.column_by_name("rule").unwrap().as_string::<i32>();
                    let events = b.column_by_name("event").unwrap().as_string::<i32>();
                    let mut g = r.lock().unwrap();
                    for i in 0..b.num_rows() {
                        g.push((rules.value(i).to_string(), events.value(i).to_string()));
                    }
                    assert_eq!(rules.null_count(), 0);
                }
            });
        assert!(err.is_none());
        assert_eq!(summary.detect.dropped_windows, 0);
        let rows = rows.lock().unwrap().clone();
        (summary, rows, std::fs::read_to_string(&log).unwrap_or_default(), dir)
    };
    // 10 minutes of synthetic time.
    let (s, rows, log, _d) = run(Default::default());
    assert_eq!(s.packets, 4_800_000);
    assert_eq!((s.detect.alerts, rows.len()), (0, 0), "benign traffic raised alerts: {log}");
    let flood = tapstream_engine::source::ScheduledAttack {
        kind: tapstream_engine::source::AttackKind::UdpFlood,
        pps: 10_000,
        start_ns: 400 * SEC,
        duration_ns: 20 * SEC,
    };
    let (s, rows, log, _d) = run(tapstream_engine::source::AttackMix { schedule: vec![flood], ..Default::default() });
    assert_eq!(s.detect.alerts, 1, "{log}");
    assert_eq!(rows.first().map(|r| (r.0.as_str(), r.1.as_str())), Some(("udp_flood", "open")), "{rows:?}");
    assert_eq!(rows.last().map(|r| r.1.as_str()), Some("close"));
    assert_eq!(log.lines().count(), rows.len());
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/zeek")
}

fn trace(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        let n = p.file_name().unwrap().to_string_lossy().to_string();
        n.contains(".pcap") && !n.ends_with(".log")
    })
}

/// Zeek's public traces are ordinary traffic: none raises an alert. Three
/// hold traffic that looks like a flood or a scan; what each raises:
/// - `cisco-fabric-path`: 64 SYN-only connections and UDP to 2.2.2.2 and
///   5678:: — 16 packets/s each, far under every flood threshold. Nothing at
///   the defaults; with the thresholds lowered to 10 packets/s, one
///   `udp_flood` alert per destination (2.2.2.2 and 5678::), which shows the
///   detectors do see it.
/// - `dhcp-flood`: 500 DHCP messages, every request answered by its relay:
///   nothing, even at 10 packets/s thresholds (answered traffic is no flood).
/// - `portmapper-unanswered`: 187 RPC calls on one TCP connection: not a
///   flood (one connection, answered handshake) and not a scan (one port):
///   nothing, even at the lowered thresholds.
#[test]
fn zeek_corpus_traces_raise_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(corpus()).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    names.sort();
    for d in names {
        let Some(pcap) = trace(&d) else { continue };
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        let data = dir.path().join(&name);
        let log = ingest(&pcap, &data, None, "2");
        assert!(alerts(&data).is_empty(), "{name} raised alerts: {log}");
        n += 1;
    }
    assert!(n >= 50, "only {n} traces found");
    let low = dir.path().join("low.toml");
    std::fs::write(
        &low,
        "[detect.syn_flood]\nmin_rate = 10\n[detect.udp_flood]\nmin_pps = 10\n[detect.icmp_flood]\nmin_pps = 10\n\
         [detect.scan]\nvertical_ports = 5\nhorizontal_hosts = 5\n",
    )
    .unwrap();
    let raised = |name: &str| -> Vec<(String, String)> {
        let data = dir.path().join(format!("{name}-low"));
        ingest(&trace(&corpus().join(name)).unwrap(), &data, Some(&low), "1");
        let mut v: Vec<(String, String)> = alerts(&data)
            .iter()
            .map(|e| (e[0]["rule"].as_str().unwrap().to_string(), e[0]["dst_ips"][0].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        raised("cisco-fabric-path"),
        vec![("udp_flood".to_string(), "2.2.2.2".to_string()), ("udp_flood".to_string(), "5678::".to_string())]
    );
    assert_eq!(raised("dhcp-flood"), vec![]);
    assert_eq!(raised("portmapper-unanswered"), vec![]);
}

#[test]
fn bad_detection_settings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("[detect.syn_flood]\nmin_rate = -1\n", "detect.syn_flood.min_rate"),
        ("[detect.udp_flood]\nmax_reply_ratio = 2\n", "detect.udp_flood.max_reply_ratio"),
        ("[detect]\nclose_after_secs = 0\n", "detect.close_after_secs"),
        ("[detect.scan]\nvertical_port = 5\n", "vertical_port"),
    ] {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        let out = bin().arg("--config").arg(&p).args(["sql", "SELECT 1"]).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
    }
    let out = bin().args(["synth", "--out", "/dev/null", "--attacks", "syn-flood:fast@1+2"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME:PPS@START+DURATION"));
}

/// Threat feeds: traffic to a listed address and a listed name looked up
/// and contacted raise one `threat_intel` alert each; a feed that cannot be
/// read stops the start with its name. A subnet's allow-list raises one
/// alert per host and service it does not allow.
#[test]
fn listed_addresses_names_and_policy_breaches_raise_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("normal.pcap");
    let out = bin().args(["synth", "--packets", "60000", "--pps", "2000"]).arg("--out").arg(&pcap).output().unwrap();
    assert!(out.status.success());
    std::fs::write(
        dir.path().join("feodo.csv"),
        "# \"first_seen_utc\",\"dst_ip\",\"dst_port\"\n\"2024-01-01\",\"198.51.100.3\",\"443\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("hosts.txt"), "0.0.0.0 login.example.net\n0.0.0.0 never.example\n").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[intel.feeds]]\npath = \"{0}/feodo.csv\"\n[[intel.feeds]]\nname = \"blocked-hosts\"\npath = \"{0}/hosts.txt\"\nformat = \"hosts\"\n\
             [[detect.policy]]\nname = \"servers\"\nsubnet = \"198.51.100.0/24\"\nallow = [\"tcp/80\", \"tcp/443\", \"icmp\"]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    ingest(&pcap, &data, Some(&cfg), "2");
    let all = alerts(&data);
    // The policy lets the servers take web traffic and pings only: every
    // server answering DNS is one violation alert (udp/53).
    let policy: Vec<&Vec<Value>> = all.iter().filter(|e| e[0]["rule"] == "policy_violation").collect();
    let out = bin()
        .args([
            "sql",
            "SELECT count(DISTINCT resp_h) FROM flows WHERE ts >= '2026-01-01' AND proto = 'udp' AND resp_p = 53 AND cidr_contains('198.51.100.0/24', resp_h)",
            "--format",
            "csv",
        ])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let dns_servers: usize = String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(dns_servers > 5);
    assert_eq!(policy.len(), dns_servers);
    for e in &policy {
        let x = e[0]["explanation"].as_str().unwrap();
        assert!(x.contains("udp/53 connection") && x.contains("policy `servers` (into 198.51.100.0/24)"), "{x}");
        assert_eq!(e[0]["category"], "policy");
    }
    let got: Vec<Vec<Value>> = all.into_iter().filter(|e| e[0]["rule"] != "policy_violation").collect();
    let opens: Vec<(String, String)> = got
        .iter()
        .map(|e| (e[0]["rule"].as_str().unwrap().to_string(), e[0]["explanation"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(opens.len(), 2, "{opens:#?}");
    assert!(opens.iter().all(|(r, _)| r == "threat_intel"));
    assert!(opens.iter().any(|(_, e)| e.contains("talked to 198.51.100.3, listed by feodo")), "{opens:#?}");
    assert!(
        opens.iter().any(|(_, e)| e.starts_with("login.example.net (listed by blocked-hosts) looked up in DNS")),
        "{opens:#?}"
    );
    for e in &got {
        assert_eq!(e[0]["category"], "intel");
        assert!(!e[0]["sample_flows"].as_array().unwrap().is_empty());
    }
    // A missing feed is a clear error at start.
    std::fs::remove_file(dir.path().join("hosts.txt")).unwrap();
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["ingest", "--quiet"])
        .arg(&pcap)
        .arg("--data")
        .arg(dir.path().join("d2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("threat feed blocked-hosts"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn geoip_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/share"));
    base.join("tapstream/geoip")
}

fn geo() -> tapstream_engine::geo::Geo {
    let cfg = tapstream_engine::geo::installed(&geoip_dir());
    assert!(cfg.country.is_some() && cfg.asn.len() == 2, "GeoIP databases missing: run scripts/geoip.sh ({cfg:?})");
    tapstream_engine::geo::Geo::open(&cfg).unwrap()
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0u8; 16];
    x[..4].copy_from_slice(&a);
    x
}

/// The free databases answer for well-known addresses.
#[test]
fn geoip_databases_name_countries_and_autonomous_systems() {
    let g = geo();
    assert_eq!(g.country_str(&v4([8, 8, 8, 8]), false).as_deref(), Some("US"));
    assert_eq!(g.asn(&v4([8, 8, 8, 8]), false), Some(15169));
    assert_eq!(g.asn_full(&v4([1, 0, 0, 1]), false), Some((13335, "Cloudflare, Inc.")));
    let google6: std::net::Ipv6Addr = "2001:4860:4860::8888".parse().unwrap();
    assert_eq!(g.asn(&google6.octets(), true), Some(15169));
    assert_eq!(g.country_str(&google6.octets(), true).as_deref(), Some("US"));
    assert_eq!(g.country(&v4([10, 0, 0, 1]), false), None, "private addresses have no country");
    // A worker's cache answers as the databases do, hit or miss.
    let mut c = tapstream_engine::geo::GeoLookup::new(std::sync::Arc::new(geo()));
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..50_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = v4(((x as u32 % 4096) | 0x0800_0000).to_be_bytes());
        assert_eq!(c.get(&a, false), (g.country(&a, false), g.asn(&a, false)));
    }
    assert!(c.hits > c.misses, "{} hits, {} misses", c.hits, c.misses);
    assert_eq!(g.asn(&v4([192, 168, 1, 1]), false), None);
    // A configured file that is not a database is a clear error.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("x.mmdb");
    std::fs::write(&bad, [0xffu8; 64]).unwrap();
    let e = tapstream_engine::geo::Geo::open(&tapstream_engine::geo::GeoConfig { country: Some(bad), asn: vec![] })
        .unwrap_err();
    assert!(e.to_string().starts_with("GeoIP database "), "{e}");
}

/// An Ethernet/IPv4 frame: TCP with `flags`, or UDP when `flags` is None.
fn frame(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, flags: Option<u8>) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let l4 = if flags.is_some() { 20 } else { 8 };
    f.extend_from_slice(&[0x45, 0, 0, (20 + l4) as u8, 0, 0, 0x40, 0, 64, if flags.is_some() { 6 } else { 17 }, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    match flags {
        Some(fl) => f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, fl, 0xff, 0xff, 0, 0, 0, 0]),
        None => f.extend_from_slice(&[0, 8, 0, 0]),
    }
    f
}

/// Every flow carries its endpoints' country and AS; alerts list the
/// countries of their addresses; traffic with a watched country raises one
/// `country_watch` alert per foreign address.
#[test]
fn flows_and_alerts_carry_countries_and_watched_countries_alert() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("geo.pcap");
    let mut w = tapstream_engine::source::PcapWriter::new(
        std::fs::File::create(&pcap).unwrap(),
        tapstream_engine::source::LinkType::ETHERNET,
        65535,
    )
    .unwrap();
    let (me, google, cloudflare) = ([10, 0, 0, 7], [8, 8, 8, 8], [1, 0, 0, 1]);
    let mut ts = START_NS;
    for i in 0..20u16 {
        for f in [
            frame(me, google, 40000 + i, 443, Some(0x02)),
            frame(google, me, 443, 40000 + i, Some(0x12)),
            frame(me, cloudflare, 50000 + i, 853, Some(0x02)),
            frame(cloudflare, me, 853, 50000 + i, Some(0x12)),
        ] {
            ts += 10_000_000;
            w.write(ts, &f, f.len() as u32).unwrap();
        }
    }
    w.into_inner().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[detect]\nwatch_countries = [\"US\"]\n").unwrap();
    let data = dir.path().join("data");
    ingest(&pcap, &data, Some(&cfg), "2");
    let out = bin()
        .args([
            "sql",
            "SELECT resp_h, orig_cc, resp_cc, orig_asn, resp_asn, count(*) n FROM flows WHERE ts >= '2026-01-01' \
             GROUP BY 1, 2, 3, 4, 5 ORDER BY 1",
            "--format",
            "csv",
        ])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout).to_string();
    let g = geo();
    let cf_cc = g.country_str(&v4(cloudflare), false).unwrap_or_default();
    assert_eq!(
        csv.lines().skip(1).collect::<Vec<_>>(),
        vec![format!("1.0.0.1,,{cf_cc},,13335,20"), "8.8.8.8,,US,,15169,20".to_string()],
        "{csv}"
    );
    // The SQL functions give the same answers as the stored columns.
    let out = bin()
        .args([
            "sql",
            "SELECT count(*) FROM flows WHERE ts >= '2026-01-01' AND country(resp_h) = resp_cc AND asn(resp_h) = resp_asn \
             AND country(orig_h) IS NULL",
            "--format",
            "csv",
        ])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().nth(1), Some("40"), "{out:?}");
    let got = alerts(&data);
    assert_eq!(got.len(), 1, "{got:#?}");
    let a = &got[0][0];
    assert_eq!(a["rule"], "country_watch");
    assert_eq!(a["dst_ips"][0], "8.8.8.8");
    assert_eq!(a["countries"], serde_json::json!(["US"]));
    assert!(
        a["explanation"].as_str().unwrap().starts_with("10.0.0.7 talked to 8.8.8.8 in US (a watched country)"),
        "{a}"
    );
    let out = bin().arg("--config").arg(dir.path().join("bad.toml")).args(["sql", "SELECT 1"]).output().unwrap();
    assert!(!out.status.success());
    std::fs::write(dir.path().join("bad.toml"), "[detect]\nwatch_countries = [\"usa\"]\n").unwrap();
    let out = bin().arg("--config").arg(dir.path().join("bad.toml")).args(["sql", "SELECT 1"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("`usa` is not a two-letter country code"));
    // Without databases, country() says how to get one.
    std::fs::write(dir.path().join("nogeo.toml"), format!("[geoip]\ndir = \"{}/none\"\n", dir.path().display()))
        .unwrap();
    let out = bin()
        .arg("--config")
        .arg(dir.path().join("nogeo.toml"))
        .args(["sql", "SELECT country('8.8.8.8')"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("country(): no GeoIP database (scripts/geoip.sh"), "{out:?}");
    // The databases load only for a query that can use them: a broken one
    // fails such a query, naming the file, and leaves the others alone.
    let broken = dir.path().join("broken.mmdb");
    std::fs::write(&broken, b"not a database").unwrap();
    std::fs::write(dir.path().join("broken.toml"), format!("[geoip]\ncountry_db = \"{}\"\n", broken.display()))
        .unwrap();
    let sql = |q: &str| bin().arg("--config").arg(dir.path().join("broken.toml")).args(["sql", q]).output().unwrap();
    let out = sql("SELECT 1");
    assert!(out.status.success(), "{out:?}");
    let out = sql("SELECT country('8.8.8.8')");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.mmdb"), "{out:?}");
}

/// A custom rule from a rules file raises its own alert, named after the
/// rule; a rules file with a mistake stops the start with its line.
#[test]
fn custom_rules_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("r.pcap");
    let out = bin()
        .args(["synth", "--packets", "60000", "--pps", "2000", "--attacks", "udp-flood:3000@10+5"])
        .arg("--out")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success());
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"udp-heavy\"\ndescription = \"too much UDP to one host\"\n\
         condition = \"packets_per_s by dst_ip > 2500 for 3s where proto = udp\"\nseverity = \"critical\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("[detect]\nrules_file = \"{}\"\n", rules.display())).unwrap();
    let data = dir.path().join("data");
    ingest(&pcap, &data, Some(&cfg), "2");
    let got = alerts(&data);
    let custom: Vec<&Vec<Value>> = got.iter().filter(|e| e[0]["rule"] == "udp-heavy").collect();
    assert_eq!(custom.len(), 1, "{got:#?}");
    let open = &custom[0][0];
    assert_eq!(open["severity"], "critical");
    assert_eq!(open["dst_ips"][0], "198.51.100.200");
    let raised = ns(open["timestamp"].as_str().unwrap());
    // Three seconds in a row over the limit, from the flood's start at 10 s.
    assert!((START_NS + 12 * SEC..=START_NS + 14 * SEC).contains(&raised), "{open}");
    assert!(
        open["explanation"]
            .as_str()
            .unwrap()
            .starts_with("too much UDP to one host: packets/s for dst_ip 198.51.100.200 is")
    );
    // Under the built-in flood threshold (5,000 packets/s): only the rule speaks.
    assert_eq!(got.len(), 1, "{got:#?}");
    // A mistake: the start is refused, naming the line.
    std::fs::write(&rules, "[[rule]]\nname = \"x\"\n\ncondition = \"packets_per_s by dst_ip > 2500 for ages\"\n")
        .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["ingest", "--quiet"])
        .arg(&pcap)
        .arg("--data")
        .arg(dir.path().join("d2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4: rule `x`: `for` needs a duration"), "{err}");
}

/// The anomaly model: trained by `tapstream model train` on a baseline
/// period of history, it flags a later stretch of traffic unlike the
/// baseline that no other detector alerts on (UDP at 2,500 packets/s, under
/// the flood threshold), once, naming what moved; normal traffic before it
/// raises nothing.
#[test]
fn an_anomaly_model_trained_on_history_flags_unusual_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let synth = |name: &str, attacks: &str| {
        let p = dir.path().join(name);
        let mut c = bin();
        c.args(["synth", "--packets", "240000", "--pps", "1000", "--seed", if attacks.is_empty() { "5" } else { "6" }]);
        if !attacks.is_empty() {
            c.args(["--attacks", attacks]);
        }
        let out = c.arg("--out").arg(&p).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        p
    };
    let base = synth("base.pcap", "");
    let baseline = dir.path().join("baseline");
    ingest(&base, &baseline, None, "2");
    let model = dir.path().join("model.json");
    let out = bin()
        .args(["model", "train", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T00:05:00Z"])
        .arg("--data")
        .arg(&baseline)
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    let secs: usize = said.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!((200..=241).contains(&secs), "{said}");
    // Too short a baseline is a clear error.
    let out = bin()
        .args(["model", "train", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T00:00:10Z"])
        .arg("--data")
        .arg(&baseline)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("training needs at least 30 seconds"), "{out:?}");
    let test = synth("test.pcap", "udp-flood:2500@120+20");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("[detect.ml]\nmodel = \"{}\"\n[detect.spike]\nenabled = false\n", model.display()))
        .unwrap();
    let data = dir.path().join("data");
    ingest(&test, &data, Some(&cfg), "2");
    let got = alerts(&data);
    assert_eq!(got.len(), 1, "{got:#?}");
    let open = &got[0][0];
    assert_eq!(open["rule"], "ml_anomaly");
    assert_eq!(open["category"], "anomaly");
    let raised = ns(open["timestamp"].as_str().unwrap());
    assert!((START_NS + 121 * SEC..=START_NS + 126 * SEC).contains(&raised), "{open}");
    let e = open["explanation"].as_str().unwrap();
    assert!(e.starts_with("traffic scores 0.") && e.contains("(usual "), "{e}");
    assert!(open["rate"].as_f64().unwrap() >= 0.6);
}

/// Serve `body` over HTTP on loopback for each GET; returns the URL base
/// and the request counter.
fn serve(body: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = write!(
                r.into_inner(),
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, n)
}

/// A feed from a URL: downloaded at start into the data directory, used
/// from that copy while it is fresh or when the server is down; with no
/// copy and no server the start fails, naming the feed.
#[test]
fn threat_feeds_from_urls() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("n.pcap");
    assert!(
        bin()
            .args(["synth", "--packets", "20000", "--pps", "2000"])
            .arg("--out")
            .arg(&pcap)
            .output()
            .unwrap()
            .status
            .success()
    );
    let (base, hits) = serve("; remote DROP list\n198.51.100.3/32 ; SBL1\n");
    let cfg = |url: &str, name: &str, refresh: &str| {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!("[[intel.feeds]]\nname = \"{name}\"\nurl = \"{url}\"\nrefresh_minutes = {refresh}\n"),
        )
        .unwrap();
        p
    };
    let data = dir.path().join("data");
    let c1 = cfg(&format!("{base}/drop.txt"), "remote-drop", "60");
    ingest(&pcap, &data, Some(&c1), "2");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(data.join("feeds/remote-drop").exists());
    let got = alerts(&data);
    assert!(got.iter().any(|e| e[0]["explanation"].as_str().unwrap().contains("listed by remote-drop")), "{got:#?}");
    // Fresh copy: no download.
    ingest(&pcap, &data, Some(&c1), "2");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Stale copy and the server gone: the copy is used, and the start goes on.
    let dead = format!(
        "http://127.0.0.1:{}/drop.txt",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let c2 = cfg(&dead, "remote-drop", "0.01");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let log = ingest(&pcap, &data, Some(&c2), "2");
    assert!(log.contains("using the copy from before"), "{log}");
    // No copy, no server: a clear error.
    let out = bin()
        .arg("--config")
        .arg(cfg(&dead, "other", "60"))
        .args(["ingest", "--quiet"])
        .arg(&pcap)
        .arg("--data")
        .arg(dir.path().join("d2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("threat feed other: downloading http://127.0.0.1"),
        "{out:?}"
    );
}
