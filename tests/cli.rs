//! The real binary, end to end: synthetic capture → ingest → Parquet read
//! back by an outside engine (pyarrow); corrupt and missing captures.

mod common;
use common::bin;
use common::walk;

use std::path::Path;
use std::process::Command;

fn synth(out: &Path, packets: u64) {
    let o = bin().args(["synth", "--packets", &packets.to_string(), "--seed", "7", "--out"]).arg(out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn ingest_writes_hourly_parquet_that_pyarrow_reads() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("s.pcap");
    synth(&pcap, 50_000);
    let data = dir.path().join("data");
    let o = bin().args(["ingest", "--quiet", "--workers", "2", "--data"]).arg(&data).arg(&pcap).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("packets 50000"), "{err}");
    for t in ["flows", "dns", "tls", "http", "dhcp", "stats"] {
        let p = data.join(t).join("date=2026-01-01").join("hour=00");
        assert!(p.is_dir(), "missing partition {}", p.display());
    }
    // Outside engine: pyarrow with Hive partitioning.
    let script = r#"
import sys, pyarrow.dataset as ds
root = sys.argv[1]
flows = ds.dataset(root + "/flows", format="parquet", partitioning="hive").to_table()
stats = ds.dataset(root + "/stats", format="parquet", partitioning="hive").to_table()
dns = ds.dataset(root + "/dns", format="parquet", partitioning="hive").to_table()
pk = sum(flows.column("orig_pkts").to_pylist()) + sum(flows.column("resp_pkts").to_pylist())
print(flows.num_rows, sum(stats.column("packets").to_pylist()), pk, dns.num_rows, sorted(set(flows.column("hour").to_pylist())))
"#;
    let o = Command::new("python3").arg("-c").arg(script).arg(&data).output().expect("python3");
    assert!(o.status.success(), "pyarrow failed: {}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let v: Vec<&str> = out.split_whitespace().collect();
    let flows: u64 = v[0].parse().unwrap();
    assert!(flows > 1000, "{out}");
    assert_eq!(v[1], "50000", "stats packets: {out}");
    assert_eq!(v[2], "50000", "every packet is accounted to a flow: {out}");
    assert!(v[3].parse::<u64>().unwrap() > 100, "{out}");
    assert!(err.contains(&format!("flows {}", flows)) || flows > 0);
}

#[test]
fn truncated_capture_keeps_what_came_before_and_names_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("s.pcap");
    synth(&pcap, 2_000);
    let bytes = std::fs::read(&pcap).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let data = dir.path().join("data");
    let o = bin().args(["ingest", "--quiet", "--data"]).arg(&data).arg(&cut).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("cut.pcap") && err.contains("truncated at byte offset"), "{err}");
    assert!(data.join("flows").exists(), "records before the cut were written");
    // the flows command prints what it could and fails too
    let o = bin().args(["flows", "--format", "json"]).arg(&cut).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).lines().count() > 10);
}

#[test]
fn garbage_and_missing_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    let o = bin().args(["flows"]).arg(&junk).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("junk.pcap") && err.contains("not a pcap or pcapng"), "{err}");
    let o = bin().args(["flows", "/nonexistent/x.pcap"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("/nonexistent/x.pcap") && !err.contains("panicked"), "{err}");
}

#[test]
fn bad_config_value_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "[flows]\nudp_idle_timeout_secs = 0\n").unwrap();
    let o = bin().arg("--config").arg(&cfg).args(["flows", "x.pcap"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("flows.udp_idle_timeout_secs"), "{err}");
}

#[test]
fn flows_formats_and_community_ids() {
    // Community IDs must equal Suricata's for the same flows.
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/suricata-verify");
    for (dir, want) in [("community-id-ipv4", "1:IwiTNfuO7aCaamMijl+7/X9uLx0="), ("community-id-ipv6", "")] {
        let pcap = base.join(dir).join("input.pcap");
        let yaml_cfg = std::fs::read_to_string(base.join(dir).join("suricata.yaml")).unwrap_or_default();
        let seed = yaml_cfg
            .lines()
            .find_map(|l| l.trim().strip_prefix("community-id-seed: "))
            .unwrap_or("0")
            .trim()
            .to_string();
        let o = bin().args(["flows", "--format", "csv", "--community-id-seed", &seed]).arg(&pcap).output().unwrap();
        assert!(o.status.success());
        let out = String::from_utf8_lossy(&o.stdout);
        let yaml = std::fs::read_to_string(base.join(dir).join("test.yaml")).unwrap();
        let ids: Vec<&str> = yaml.lines().filter_map(|l| l.trim().strip_prefix("community_id: ")).collect();
        assert!(!ids.is_empty());
        for id in ids {
            assert!(out.contains(id), "{dir}: {id} not among our flows:\n{out}");
        }
        if !want.is_empty() {
            assert!(out.contains(want));
        }
    }
}

#[test]
fn demo_run_writes_history_while_running_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "[storage]\nflush_interval_secs = 0.5\n[demo]\npps = 500\n").unwrap();
    let data = dir.path().join("data");
    let mut child = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--duration", "30", "--data"])
        .arg(&data)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Files appear within a few flush intervals, long before the run ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut found = false;
    while std::time::Instant::now() < deadline && !found {
        std::thread::sleep(std::time::Duration::from_millis(200));
        found = data.join("stats").exists()
            && walk(&data)
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "parquet") && p.starts_with(data.join("flows")));
    }
    // SIGINT: flush every open flow and file, then exit cleanly.
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(found, "no flow history was flushed while the demo ran");
    assert!(status.success(), "demo did not stop cleanly on SIGINT: {status:?}");
    assert!(
        !walk(&data).iter().any(|p| p.to_string_lossy().ends_with(".tmp")),
        "temporary files left after a clean stop"
    );
}
