//! Packet recording driven through the real binary: sessions started and
//! stopped while the appliance runs, caps, and exports that tshark reads.

mod common;
use common::bin;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn record(data: &Path, args: &[&str]) -> Output {
    bin().arg("record").args(args).arg("--data").arg(data).output().unwrap()
}

fn sessions(data: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(record(data, &["list", "--json"]), "record list")).unwrap()
}

fn session<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array().unwrap().iter().find(|s| s["spec"]["name"] == name).unwrap()
}

/// `tshark -r FILE -T fields -e …`: one line per packet, fields tab-separated.
fn tshark(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut c = Command::new("tshark");
    c.arg("-r").arg(file).args(["-T", "fields"]);
    for f in fields {
        c.args(["-e", f]);
    }
    let o = c.output().expect("tshark (installed by scripts/test.sh)");
    assert!(o.status.success(), "tshark -r {}: {}", file.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

fn now_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn sessions_record_while_the_appliance_runs_and_exports_open_in_tshark() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "[storage]\nflush_interval_secs = 1\n[demo]\npps = 2000\n").unwrap();

    // Requested before the appliance runs: they start with its first packet.
    ok(record(&data, &["start", "dns", "--filter", "udp port 53", "--rotate-size", "8KiB"]), "start dns");
    ok(record(&data, &["start", "capped", "--max-size", "200KiB"]), "start capped");
    assert_eq!(session(&sessions(&data), "dns")["state"], "pending");
    // Bad requests: clear errors, nothing created.
    let o = record(&data, &["start", "bad", "--filter", "udp port"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("column"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = record(&data, &["start", "dns"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists already"));
    let o = record(&data, &["start", "x", "--max-size", "lots"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("size `lots`"));

    let mut child = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--duration", "9", "--data"])
        .arg(&data)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while session(&sessions(&data), "dns")["state"] != "recording" {
        assert!(Instant::now() < deadline, "the session never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A session started while the appliance runs.
    ok(record(&data, &["start", "late", "--filter", "tcp"]), "start late");
    std::thread::sleep(Duration::from_secs(4));
    ok(record(&data, &["stop", "dns"]), "stop dns");
    let stopped_at = now_s();
    assert!(child.wait().unwrap().success());

    let list = sessions(&data);
    let dns = session(&list, "dns");
    assert_eq!(dns["state"], "stopped");
    assert_eq!(dns["status"]["reason"], "stopped by operator");
    assert!(dns["files"].as_array().unwrap().len() > 2, "rotated at 8 KiB: {dns}");
    let capped = session(&list, "capped");
    assert_eq!(capped["status"]["reason"], "size cap");
    let capped_bytes = capped["disk_bytes"].as_u64().unwrap();
    assert!(capped_bytes <= 200 << 10 && capped_bytes > 150 << 10, "{capped_bytes} bytes");
    let late = session(&list, "late");
    assert_eq!(late["state"], "paused", "still recording when the appliance stopped: resumes next run");
    assert!(late["status"]["packets"].as_u64().unwrap() > 0);

    // Everything the dns session holds: DNS only, nothing after the stop.
    let all_dns = dir.path().join("dns.pcap");
    ok(record(&data, &["export", "--session", "dns", "--from", "0", "--out", all_dns.to_str().unwrap()]), "export dns");
    let rows = tshark(&all_dns, &["frame.time_epoch", "udp.srcport", "udp.dstport"]);
    assert!(rows.len() > 50, "{} DNS packets", rows.len());
    for r in &rows {
        assert!(r[1] == "53" || r[2] == "53", "not DNS: {r:?}");
        let t: f64 = r[0].parse().unwrap();
        assert!(t <= stopped_at + 1.5, "packet at {t} after the stop at {stopped_at}");
    }
    assert_eq!(rows.len() as u64, dns["status"]["packets"].as_u64().unwrap());

    // One flow by its id from the flows table: exactly its packets.
    // An IPv4 DNS flow (tshark's ip.* fields below) that ended a second before the dns session stopped, so the
    // session holds all of it (the appliance ran on after the stop).
    let q = format!(
        "SELECT uid, sum(orig_pkts + resp_pkts) AS n, min(orig_h) AS a, min(resp_h) AS b FROM flows \
         WHERE proto = 'udp' AND resp_p = 53 AND orig_h NOT LIKE '%:%' GROUP BY uid \
         HAVING count(*) = 1 AND max(last_ts) < to_timestamp_nanos({}) ORDER BY uid LIMIT 1",
        ((stopped_at - 1.0) * 1e9) as i64
    );
    let out = ok(bin().args(["sql", &q, "--format", "csv", "--data"]).arg(&data).output().unwrap(), "sql");
    let row: Vec<&str> = out.lines().nth(1).expect("a DNS flow in the history").split(',').collect();
    let (uid, n, a, b) = (row[0], row[1].parse::<usize>().unwrap(), row[2], row[3]);
    let flow = dir.path().join("flow.pcap");
    let o = record(&data, &["export", "--uid", uid, "--out", flow.to_str().unwrap()]);
    ok(o, "export --uid");
    let pkts = tshark(&flow, &["ip.src", "ip.dst", "udp.port"]);
    assert_eq!(pkts.len(), n, "flow {uid}: {pkts:?}");
    for p in &pkts {
        assert!((p[0] == a && p[1] == b) || (p[0] == b && p[1] == a), "{p:?} is not {a} <-> {b}");
    }

    // The same flow by 5-tuple from tshark's view of it.
    let ports = tshark(&flow, &["udp.srcport", "udp.dstport"]);
    let spec = format!("udp {a}:{} {b}:53", ports[0][0]);
    let by_tuple = dir.path().join("tuple.pcap");
    ok(
        record(&data, &["export", "--session", "dns", "--flow", &spec, "--out", by_tuple.to_str().unwrap()]),
        "export --flow",
    );
    assert_eq!(std::fs::read(&by_tuple).unwrap(), std::fs::read(&flow).unwrap());

    // Export needs a selection; unknown sessions are errors.
    let o = record(&data, &["export", "--out", "/dev/null"]);
    assert!(!o.status.success());
    let o = record(&data, &["export", "--session", "nope", "--from", "0", "--out", "/dev/null"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no recording session named `nope`"));

    // Delete: refused while paused (still wanted), done once stopped.
    assert!(!record(&data, &["delete", "late"]).status.success());
    ok(record(&data, &["delete", "dns"]), "delete dns");
    assert!(!data.join("pcap/dns").exists());
}
