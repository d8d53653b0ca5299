//! WASM plugins end to end, through the real binary: the three example
//! detectors fire on traffic that should trigger them and stay quiet
//! otherwise; misbehaving plugins are contained while the flow records stay
//! exact; a plugin swapped while the appliance runs loses no records.
//!
//! Every plugin is built from source by scripts/build-plugins.sh (Rust,
//! C with clang, AssemblyScript from npm).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::bin;
use serde_json::Value;

fn built() -> &'static Path {
    common::built_plugins()
}

/// Install `names` (e.g. "examples/beacon") into DATA/plugins, with the
/// manifest's text passed through `edit`.
fn install(data: &Path, names: &[&str], edit: impl Fn(&str, String) -> String) -> PathBuf {
    let dir = data.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for n in names {
        let stem = Path::new(n).file_name().unwrap().to_str().unwrap();
        std::fs::copy(built().join(format!("{n}.wasm")), dir.join(format!("{stem}.wasm"))).unwrap();
        let text = std::fs::read_to_string(built().join(format!("{n}.toml"))).unwrap();
        std::fs::write(dir.join(format!("{stem}.toml")), edit(stem, text)).unwrap();
    }
    dir
}

fn synth(dir: &Path, name: &str, packets: u64, pps: u64, attacks: &str) -> PathBuf {
    let pcap = dir.join(name);
    let mut c = bin();
    c.args(["synth", "--packets", &packets.to_string(), "--pps", &pps.to_string()]);
    if !attacks.is_empty() {
        c.args(["--attacks", attacks]);
    }
    let out = c.arg("--out").arg(&pcap).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    pcap
}

fn ingest(pcaps: &[&Path], data: &Path, workers: &str) -> String {
    let mut c = bin();
    c.args(["ingest", "--quiet", "--workers", workers]);
    for p in pcaps {
        c.arg(p);
    }
    let out = c.arg("--data").arg(data).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "ingest: {err}");
    err
}

/// Opening events of the alert log.
fn opened(data: &Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("alerts.json"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "open")
        .collect()
}

fn rules(alerts: &[Value]) -> Vec<String> {
    alerts.iter().map(|a| a["rule"].as_str().unwrap().to_string()).collect()
}

/// The alerts one plugin raised (the built-in detectors run too).
fn of(plugin: &str, alerts: &[Value]) -> Vec<Value> {
    alerts.iter().filter(|a| a["rule"].as_str().unwrap().starts_with(&format!("{plugin}/"))).cloned().collect()
}

/// `[flows N dns N tls N http N dhcp N stats N]` from a run's summary.
fn table_counts(log: &str) -> String {
    let i = log.find("[flows ").unwrap_or_else(|| panic!("no summary in {log}"));
    log[i..i + log[i..].find(']').unwrap() + 1].to_string()
}

#[test]
fn beacon_fires_on_regular_connections_and_not_on_normal_traffic() {
    let dir = tempfile::tempdir().unwrap();
    // 480 s at 500 packets/s; a connection every 30 s from 10.1.0.77 from 5 s on.
    let with = synth(dir.path(), "beacon.pcap", 240_000, 500, "beacon:30@5+470");
    let without = synth(dir.path(), "normal.pcap", 240_000, 500, "port-scan:300@100+10");
    let mut per_workers = Vec::new();
    for workers in ["1", "2"] {
        let data = dir.path().join(format!("with-{workers}"));
        install(&data, &["examples/beacon"], |_, t| t);
        let log = ingest(&[&with], &data, workers);
        let got = of("beacon", &opened(&data));
        assert_eq!(rules(&got), ["beacon/beacon"], "{got:#?}\n{log}");
        let a = &got[0];
        assert_eq!(a["category"], "malware");
        assert_eq!(a["src_ips"][0], "10.1.0.77");
        assert_eq!(a["dst_ips"][0], "198.51.100.250");
        assert_eq!(a["ports"][0], 443);
        let text = a["explanation"].as_str().unwrap();
        assert!(text.contains("10.1.0.77 → 198.51.100.250:443/tcp connected 10 times at regular"), "{text}");
        assert!(!a["sample_flows"].as_array().unwrap().is_empty());
        assert!(log.contains("plugin beacon: "), "{log}");
        per_workers.push(a["start_ts"].clone());
    }
    // The plugin sees every worker's conversations merged: same alert, same moment.
    assert_eq!(per_workers[0], per_workers[1]);
    let data = dir.path().join("without");
    install(&data, &["examples/beacon"], |_, t| t);
    ingest(&[&without], &data, "2");
    let got = of("beacon", &opened(&data));
    assert!(got.is_empty(), "{got:#?}");
}

/// The manifest with its `sni_patterns` replaced.
fn set_sni(t: &str, patterns: &str) -> String {
    t.lines()
        .map(|l| if l.starts_with("sni_patterns") { format!("sni_patterns = {patterns}\n") } else { format!("{l}\n") })
        .collect()
}

#[test]
fn tls_watch_matches_server_names_and_ja3_lists() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/zeek");
    let gstatic = corpus.join("tls-conn-with-extensions/trace.pcap");
    let ech = corpus.join("tls13-ech/trace.pcap");
    let dir = tempfile::tempdir().unwrap();
    // Case-insensitive glob on the server name.
    let data = dir.path().join("sni");
    install(&data, &["examples/tls_watch"], |_, t| set_sni(&t, r#"["*.GSTATIC.com"]"#));
    ingest(&[&gstatic, &ech], &data, "1");
    let got = of("tls-watch", &opened(&data));
    assert_eq!(rules(&got), ["tls-watch/sni-match"], "{got:#?}");
    let text = got[0]["explanation"].as_str().unwrap();
    assert!(text.contains("(server name ssl.gstatic.com)") && text.contains("on the watch list"), "{text}");
    assert_eq!(got[0]["category"], "intel");
    // The default watch list matches nothing in the corpus's TLS traces.
    let data = dir.path().join("quiet");
    install(&data, &["examples/tls_watch"], |_, t| t);
    let traces: Vec<PathBuf> =
        ["tls-conn-with-extensions", "tls13-ech", "tls-gridftp", "tls12-handshake-failure", "tls-irc-starttls"]
            .iter()
            .map(|d| corpus.join(d).join("trace.pcap"))
            .collect();
    let refs: Vec<&Path> = traces.iter().map(PathBuf::as_path).collect();
    ingest(&refs, &data, "1");
    assert!(of("tls-watch", &opened(&data)).is_empty(), "{:#?}", opened(&data));
    // A JA4 on the list: take the one our decoder computes for the ech trace.
    let out = bin()
        .args([
            "sql",
            "SELECT ja4 FROM tls WHERE ts >= '2023-01-01' AND ja4 IS NOT NULL LIMIT 1",
            "--format",
            "csv",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout).to_string();
    let ja4 = csv.lines().nth(1).unwrap_or_else(|| panic!("no ja4: {csv}")).trim().to_string();
    assert!(ja4.starts_with("t13d"), "{ja4}");
    let data = dir.path().join("ja4");
    install(&data, &["examples/tls_watch"], |_, t| {
        set_sni(&t, "[]").replace("ja4 = []", &format!("ja4 = [\"{ja4}\"]"))
    });
    ingest(&refs, &data, "1");
    let got = of("tls-watch", &opened(&data));
    // Both handshakes of the ech trace, from one client: one alert.
    assert_eq!(rules(&got), ["tls-watch/ja4-match"], "{got:#?}");
    assert!(got[0]["explanation"].as_str().unwrap().contains(&format!("JA4 {ja4} is on the watch list")));
    // A JA3 on the list: Suricata's golden hash for this trace's first hello.
    let draft = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus/suricata-verify/tls__tls13-draft28/tls13_draft28.pcap");
    let data = dir.path().join("ja3");
    install(&data, &["examples/tls_watch"], |_, t| {
        set_sni(&t, "[]").replace("ja3 = []", "ja3 = [\"d00857e0c8e7a7f35e446508c6233460\"]")
    });
    ingest(&[&draft], &data, "1");
    let got = of("tls-watch", &opened(&data));
    assert_eq!(rules(&got), ["tls-watch/ja3-match"], "{got:#?}");
    assert!(got[0]["explanation"].as_str().unwrap().contains("(server name localhost)"), "{got:#?}");
}

#[test]
fn dns_exfil_fires_on_a_tunnel_and_not_on_normal_dns() {
    let dir = tempfile::tempdir().unwrap();
    let tunnel = synth(dir.path(), "tunnel.pcap", 300_000, 2000, "dns-tunnel:300@40+30");
    let normal = synth(dir.path(), "normal.pcap", 300_000, 2000, "");
    let data = dir.path().join("tunnel");
    install(&data, &["examples/dns_exfil"], |_, t| t);
    ingest(&[&tunnel], &data, "1");
    let got = of("dns-exfil", &opened(&data));
    assert_eq!(rules(&got), ["dns-exfil/dns-exfil"], "{got:#?}");
    assert_eq!(got[0]["category"], "exfiltration");
    assert_eq!(got[0]["verdict"], "malicious");
    let text = got[0]["explanation"].as_str().unwrap();
    assert!(text.contains("distinct names under exfil.example"), "{text}");
    // Normal synthetic DNS and every DNS trace of the corpus: quiet.
    let data = dir.path().join("normal");
    install(&data, &["examples/dns_exfil"], |_, t| t);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/zeek");
    let mut traces: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("dns"))
        .map(|p| p.join("trace.pcap"))
        .filter(|p| p.exists())
        .collect();
    traces.sort();
    traces.push(normal);
    let refs: Vec<&Path> = traces.iter().map(PathBuf::as_path).collect();
    ingest(&refs, &data, "1");
    assert!(of("dns-exfil", &opened(&data)).is_empty(), "{:#?}", opened(&data));
}

#[test]
fn misbehaving_plugins_are_contained_and_flow_records_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = synth(dir.path(), "mixed.pcap", 200_000, 1000, "beacon:15@2+195,dns-tunnel:100@50+20");
    let plain = dir.path().join("plain");
    let base = ingest(&[&pcap], &plain, "2");
    let data = dir.path().join("bad");
    install(
        &data,
        &["misbehave/loop", "misbehave/hog", "misbehave/trap", "misbehave/badabi", "examples/beacon"],
        // Two crashes on a worker quarantine: the capture is short.
        |_, t| t.replace("max_crashes = 3", "max_crashes = 2"),
    );
    let log = ingest(&[&pcap], &data, "2");
    // Every record written, exactly as without plugins.
    assert_eq!(table_counts(&log), table_counts(&base), "{log}");
    // The wrong ABI was refused at load, with both versions named.
    assert!(log.contains("badabi.wasm: speaks plugin ABI version 99; this tapstream speaks version 1"), "{log}");
    let got = opened(&data);
    let r = rules(&got);
    for q in ["loop/quarantine", "hog/quarantine", "trap/quarantine"] {
        assert!(r.contains(&q.to_string()), "{q} missing: {r:?}");
    }
    let q = got.iter().find(|a| a["rule"] == "loop/quarantine").unwrap();
    assert_eq!(q["category"], "system");
    assert!(q["explanation"].as_str().unwrap().contains("ran past its deadline"), "{q}");
    let q = got.iter().find(|a| a["rule"] == "hog/quarantine").unwrap();
    assert!(q["explanation"].as_str().unwrap().contains("memory cap"), "{q}");
    // The well-behaved plugin beside them did its job.
    assert!(r.contains(&"beacon/beacon".to_string()), "{r:?}");
    // Metrics: every culprit crashed max_crashes (2) times on each worker
    // at most, then was quarantined.
    let status: Value = serde_json::from_slice(&std::fs::read(data.join("plugins.json")).unwrap()).unwrap();
    for name in ["loop", "hog", "trap"] {
        let p = status["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
        let m = &p["metrics"];
        assert_eq!(m["state"], "quarantined", "{name}: {m}");
        assert!((1..=2).contains(&m["quarantines"].as_u64().unwrap()), "{name}: {m}");
        assert!(m["traps"].as_u64().unwrap() <= 4, "{name}: {m}");
        assert!(m["skipped_records"].as_u64().unwrap() > 0, "{name}: {m}");
    }
    assert!(status["errors"].as_object().unwrap().keys().any(|k| k.ends_with("badabi.wasm")), "{status}");
}

#[test]
fn a_plugin_swapped_while_running_loses_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = install(&data, &["misbehave/count"], |_, t| t);
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "[plugins]\npoll_secs = 0.2\n[storage]\nflush_interval_secs = 1\n").unwrap();
    let child = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--pps", "3000", "--duration", "8", "--workers", "2", "--data"])
        .arg(&data)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once version 1 has handled records, put version 2 in its place.
    let status = data.join("plugins.json");
    let t0 = Instant::now();
    loop {
        let v: Value = std::fs::read(&status).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
        if v["plugins"][0]["metrics"]["records"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(6), "version 1 never ran: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::copy(built().join("misbehave/count2.wasm"), plugins.join("count.wasm.new")).unwrap();
    std::fs::rename(plugins.join("count.wasm.new"), plugins.join("count.wasm")).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("plugin count 0.1.0 loaded"), "{log}");
    let v: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    let m = &v["plugins"][0]["metrics"];
    let (v1, v2) =
        (m["counters"]["records_seen"].as_u64().unwrap(), m["counters"]["records_seen_v2"].as_u64().unwrap_or(0));
    assert!(v1 > 0 && v2 > 0, "both versions ran: {m}");
    assert_eq!(m["skipped_records"], 0, "{m}");
    // Every flow and DNS record the run wrote went to one version or the other.
    let counts = table_counts(&log);
    let num = |k: &str| -> u64 {
        let i = counts.find(&format!("{k} ")).unwrap() + k.len() + 1;
        counts[i..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    assert_eq!(v1 + v2, num("flows") + num("dns"), "{m} vs {counts}");
    assert_eq!(m["records"].as_u64().unwrap(), v1 + v2);
}

#[test]
fn plugin_check_and_list() {
    let b = built();
    let out = bin()
        .args(["plugin", "check"])
        .arg(b.join("examples/beacon.wasm"))
        .args(["--seconds", "250"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ok   beacon 1.0.0: ABI 1, scope global, reads window"), "{text}");
    assert!(text.contains("alert [high] beacon/beacon: 10.1.0.77 → 198.51.100.250:443/tcp"), "{text}");
    let out = bin().args(["plugin", "check"]).arg(b.join("misbehave/badabi.wasm")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL") && text.contains("ABI version 99"), "{text}");
    let out =
        bin().args(["plugin", "check"]).arg(b.join("misbehave/trap.wasm")).args(["--seconds", "30"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL trap crashed: trapped"), "{text}");
    // A sample capture of one's own.
    let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/zeek/tls-conn-with-extensions/trace.pcap");
    let out = bin()
        .args(["plugin", "check"])
        .arg(b.join("examples/tls_watch.wasm"))
        .arg("--pcap")
        .arg(&pcap)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("0 alerts; 1 records in 1 calls"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    install(&data, &["examples/beacon", "examples/dns_exfil", "misbehave/badabi"], |_, t| t);
    let out = bin().args(["plugin", "list", "--data"]).arg(&data).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a plugin that does not load fails the listing: {text}");
    assert!(text.contains("beacon") && text.contains("global") && text.contains("window"), "{text}");
    assert!(text.contains("dns-exfil") && text.contains("not running"), "{text}");
    assert!(text.contains("ABI version 99"), "{text}");
    let out = bin().args(["plugin", "list", "--json", "--data"]).arg(&data).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
}

/// The code block after `marker` in docs/plugins.md.
fn snippet(doc: &str, marker: &str) -> String {
    let i = doc.find(marker).unwrap_or_else(|| panic!("no {marker} in docs/plugins.md")) + marker.len();
    let start = i + doc[i..].find("```").unwrap();
    let body = start + doc[start..].find('\n').unwrap() + 1;
    doc[body..body + doc[body..].find("```").unwrap()].to_string()
}

/// The tutorial's three plugins, as docs/plugins.md writes them, build with
/// the commands it gives and run clean under `plugin check`.
#[test]
fn the_tutorial_plugins_build_and_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/plugins.md")).unwrap();
    let manifest = snippet(&doc, "## The manifest");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root, dir.path().join("tapstream")).unwrap();
    let proj = dir.path().join("telnet-watch");
    std::fs::create_dir_all(proj.join("src")).unwrap();
    std::fs::create_dir_all(proj.join("assembly")).unwrap();
    let run = |c: &mut std::process::Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut wasm = Vec::new();
    // Rust.
    std::fs::write(proj.join("src/lib.rs"), snippet(&doc, "`src/lib.rs`:")).unwrap();
    let cargo = snippet(&doc, "`Cargo.toml`:");
    std::fs::write(
        proj.join("Cargo.toml"),
        format!(
            "[package]\nname = \"telnet-watch\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n\n{cargo}"
        ),
    )
    .unwrap();
    let target =
        std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target")).join("tutorial");
    run(std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "--target", "wasm32-unknown-unknown"])
        .current_dir(&proj)
        .env("CARGO_TARGET_DIR", &target));
    std::fs::copy(target.join("wasm32-unknown-unknown/release/telnet_watch.wasm"), proj.join("rust.wasm")).unwrap();
    wasm.push(proj.join("rust.wasm"));
    // C, with the command the page gives.
    std::fs::write(proj.join("telnet_watch.c"), snippet(&doc, "`telnet_watch.c`:")).unwrap();
    let cmd = snippet(&doc, "TS_PLUGIN(on_batch)\n```").replace("\\\n", " ");
    run(std::process::Command::new("bash").arg("-c").arg(cmd.trim()).current_dir(&proj));
    std::fs::rename(proj.join("telnet_watch.wasm"), proj.join("c.wasm")).unwrap();
    wasm.push(proj.join("c.wasm"));
    // AssemblyScript, with the compiler the build script installed.
    std::fs::write(proj.join("assembly/index.ts"), snippet(&doc, "`assembly/index.ts`:")).unwrap();
    std::os::unix::fs::symlink(root.join("plugins/dns-exfil/node_modules"), proj.join("node_modules")).unwrap();
    let cmd = snippet(&doc, "  return 0;\n}\n```").replace("\\\n", " ").replace("npx asc", "node_modules/.bin/asc");
    run(std::process::Command::new("bash").arg("-c").arg(cmd.trim()).current_dir(&proj));
    std::fs::rename(proj.join("telnet_watch.wasm"), proj.join("as.wasm")).unwrap();
    wasm.push(proj.join("as.wasm"));
    for w in wasm {
        std::fs::write(w.with_extension("toml"), &manifest).unwrap();
        let out = bin().args(["plugin", "check"]).arg(&w).args(["--seconds", "20"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {text}{}", w.display(), String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("ok   telnet-watch 1.0.0") && text.contains("0 traps"), "{text}");
    }
}
