//! History storage driven through the real binary: crash safety of the
//! writer, compaction and retention in a running appliance.

mod common;
use common::bin;
use common::walk;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn sql(data: &Path, q: &str) -> String {
    let o = bin().args(["sql", q, "--format", "csv", "--data"]).arg(data).output().unwrap();
    assert!(o.status.success(), "{q}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The single value of a one-row CSV result.
fn value(csv: &str) -> String {
    csv.lines().nth(1).unwrap_or_default().trim().to_string()
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

fn pyarrow_rows(data: &Path, table: &str) -> i64 {
    let script = "import sys, pyarrow.dataset as ds\n\
                  print(ds.dataset(sys.argv[1], format='parquet', partitioning='hive').count_rows())";
    let o = Command::new("python3").arg("-c").arg(script).arg(data.join(table)).output().expect("python3");
    assert!(o.status.success(), "pyarrow: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// `tapstream run` on demo traffic for up to two minutes, writing `data`.
fn demo_run(cfg: &Path, data: &Path) -> std::process::Child {
    bin()
        .arg("--config")
        .arg(cfg)
        .args(["run", "--duration", "120", "--data"])
        .arg(data)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn writer_survives_kill_9_losing_at_most_one_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let flush = 2.0;
    std::fs::write(&cfg, format!("[storage]\nflush_interval_secs = {flush}\n[demo]\npps = 3000\n")).unwrap();
    let data = dir.path().join("data");
    let mut child = demo_run(&cfg, &data);
    // Let it run a few flush intervals, so several parts are committed and
    // some are being written, then kill it with no chance to clean up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !data.join("stats").exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(7));
    let killed_at = now_ns();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Every committed file reads, in our SQL and in an outside engine, and
    // the newest committed stats second is at most one flush interval (plus
    // the second it takes a per-second row to close) before the kill.
    let newest = value(&sql(&data, "SELECT CAST(max(ts) AS BIGINT) FROM stats WHERE ts > now() - INTERVAL '1 hour'"));
    let newest: i64 = newest.parse().unwrap_or_else(|_| panic!("no stats committed: {newest:?}"));
    let lost = (killed_at - newest) as f64 / 1e9;
    assert!(lost <= flush + 1.5, "{lost:.2} s of records lost, flush interval {flush} s");
    let ours: i64 =
        value(&sql(&data, "SELECT count(*) FROM flows WHERE ts > now() - INTERVAL '1 hour'")).parse().unwrap();
    assert!(ours > 0);
    assert_eq!(pyarrow_rows(&data, "flows"), ours, "pyarrow reads the same committed history");

    // Restart: the unfinished files of the killed run are removed, and the
    // history grows from where it was.
    let o = bin().arg("--config").arg(&cfg).args(["run", "--duration", "3", "--data"]).arg(&data).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let left: Vec<PathBuf> = walk(&data).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(left.is_empty(), "temporary files survived a restart: {left:?}");
    let after: i64 =
        value(&sql(&data, "SELECT count(*) FROM flows WHERE ts > now() - INTERVAL '1 hour'")).parse().unwrap();
    assert!(after > ours, "{after} rows after restart, {ours} before");
    assert_eq!(pyarrow_rows(&data, "flows"), after);
}

/// A second process writing the same data dir would take the first one's
/// open part files, compactions and uploads for a crashed run's leftovers
/// and remove them: every writing command is refused while another holds
/// the dir, naming it, and touches nothing.
#[test]
fn a_data_dir_has_one_writing_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "[demo]\npps = 2000\n").unwrap();
    let data = dir.path().join("data");
    let pcap = dir.path().join("s.pcap");
    let o = bin().args(["synth", "--packets", "2000", "--seed", "5", "--out"]).arg(&pcap).output().unwrap();
    assert!(o.status.success());
    let csv = dir.path().join("f.csv");
    std::fs::write(&csv, "ts,orig_h,orig_p,resp_h,resp_p,proto\n2026-01-01T00:00:00Z,10.0.0.1,1,10.0.0.2,2,tcp\n")
        .unwrap();

    let mut holder = demo_run(&cfg, &data);
    let lock = data.join(".writer.lock");
    let me = format!("pid {} (", holder.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&lock).unwrap_or_default().starts_with(&me) {
        assert!(Instant::now() < deadline, "the running appliance never took {}", lock.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    // What a writer at work has on disk and its restart would clear.
    let hour = data.join("flows/date=2026-01-01/hour=00");
    let work = [hour.join(".part-00042.parquet.tmp"), data.join(".staging/flows-x"), data.join("api/imports/upload-1")];
    for w in &work {
        std::fs::create_dir_all(w.parent().unwrap()).unwrap();
        std::fs::write(w, b"in progress").unwrap();
    }

    let attempts: [Vec<&std::ffi::OsStr>; 4] = [
        vec!["ingest".as_ref(), "--quiet".as_ref(), pcap.as_os_str()],
        vec!["import".as_ref(), "flows".as_ref(), csv.as_os_str()],
        vec!["run".as_ref(), "--duration".as_ref(), "2".as_ref()],
        vec!["serve".as_ref(), "--duration".as_ref(), "2".as_ref(), "--listen".as_ref(), "127.0.0.1:0".as_ref()],
    ];
    for args in &attempts {
        let o = bin().arg("--config").arg(&cfg).args(args).arg("--data").arg(&data).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} ran beside another writer: {err}");
        assert!(
            err.contains("is in use by pid") && err.contains(&me) && err.contains("run --duration 120"),
            "{args:?}: {err}"
        );
        for w in &work {
            assert!(w.exists(), "{args:?} removed {} of the running appliance", w.display());
        }
    }
    // Reading is never refused.
    sql(&data, "SELECT count(*) FROM flows");

    let pid = holder.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    assert!(holder.wait().unwrap().success(), "the running appliance failed");
    // Its lock went with it; its leftovers (the planted ones) are now a
    // crashed run's, removed by the next writer.
    let o = bin().args(["ingest", "--quiet", "--data"]).arg(&data).arg(&pcap).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!work[0].exists() && !work[1].exists(), "a crashed run's leftovers stay");
}

const FLOW_COLUMNS: &str = "ts, last_ts, uid, community_id, orig_h, orig_p, resp_h, resp_p, proto, ip_proto, service, \
     duration, orig_bytes, resp_bytes, conn_state, local_orig, local_resp, missed_bytes, history, orig_pkts, \
     orig_ip_bytes, resp_pkts, resp_ip_bytes, tunnel_parents, vlan, interface, orig_tcp_flags, resp_tcp_flags, record_kind, flow_start";

fn export_flows(data: &Path, out: &Path) {
    let q = format!("SELECT {FLOW_COLUMNS} FROM flows WHERE ts >= TIMESTAMP '2000-01-01T00:00:00Z' ORDER BY uid, ts");
    let o = bin().args(["sql", &q, "--format", "csv", "--data"]).arg(data).arg("--out").arg(out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn csv_export_import_round_trip_and_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("s.pcap");
    let o = bin().args(["synth", "--packets", "20000", "--seed", "3", "--out"]).arg(&pcap).output().unwrap();
    assert!(o.status.success());
    let a = dir.path().join("a");
    let o = bin().args(["ingest", "--quiet", "--data"]).arg(&a).arg(&pcap).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv_a = dir.path().join("a.csv");
    export_flows(&a, &csv_a);
    let rows = std::fs::read_to_string(&csv_a).unwrap().lines().count() - 1;
    assert!(rows > 100, "{rows} flows exported");

    // Import into an empty history; exporting it again gives the same file.
    let b = dir.path().join("b");
    let o = bin().args(["import", "flows", "--data"]).arg(&b).arg(&csv_a).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&format!("imported {rows} row(s)")), "{err}");
    let csv_b = dir.path().join("b.csv");
    export_flows(&b, &csv_b);
    assert_eq!(std::fs::read_to_string(&csv_a).unwrap(), std::fs::read_to_string(&csv_b).unwrap());

    // Tunnelled flows: the list of tunnel parents goes out as `a,b` and back.
    let vxlan = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/zeek/tunnel-vxlan/trace.pcap");
    let t = dir.path().join("t");
    let o = bin().args(["ingest", "--quiet", "--data"]).arg(&t).arg(&vxlan).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv_t = dir.path().join("t.csv");
    export_flows(&t, &csv_t);
    let text = std::fs::read_to_string(&csv_t).unwrap();
    assert!(text.lines().skip(1).any(|l| l.contains(",C")), "a flow names its tunnel parent: {text}");
    let u = dir.path().join("u");
    let o = bin().args(["import", "flows", "--data"]).arg(&u).arg(&csv_t).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv_u = dir.path().join("u.csv");
    export_flows(&u, &csv_u);
    assert_eq!(text, std::fs::read_to_string(&csv_u).unwrap());
    // Every table exports whole to CSV, nested columns included.
    let q = "SELECT * FROM flows WHERE ts >= TIMESTAMP '2000-01-01T00:00:00Z'";
    let o = bin().args(["sql", q, "--format", "csv", "--data"]).arg(&t).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A file with bad rows imports nothing, and says where each problem is.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "ts,orig_h,orig_p,resp_h,resp_p,proto,orig_bytes\n\
         2026-01-01T00:00:00Z,10.0.0.1,1234,10.0.0.2,80,tcp,100\n\
         2026-01-01T00:00:01Z,10.0.0.300,1234,10.0.0.2,80,tcp,100\n\
         1767225602.5,10.0.0.1,1234,10.0.0.2,80,udp,100\n\
         2026-01-01T00:00:03Z,10.0.0.1,1234,10.0.0.2,80,tcp,lots\n",
    )
    .unwrap();
    let c = dir.path().join("c");
    let report = dir.path().join("report.csv");
    let o = bin().args(["import", "flows", "--data"]).arg(&c).arg(&bad).arg("--report").arg(&report).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("2 bad row(s); nothing imported"), "{err}");
    assert!(err.contains("line 3, column orig_h: \"10.0.0.300\": not an IP address"), "{err}");
    assert!(err.contains("line 5, column orig_bytes: \"lots\": not a count"), "{err}");
    assert!(!walk(&c).iter().any(|p| p.extension().is_some_and(|e| e == "parquet")), "nothing imported");
    let rep = std::fs::read_to_string(&report).unwrap();
    assert_eq!(rep.lines().count(), 3, "{rep}");
    assert!(rep.contains(",3,orig_h,10.0.0.300,not an IP address"), "{rep}");

    // Asked to skip them, the good rows go in and the bad ones are reported.
    let o = bin().args(["import", "flows", "--skip-bad-rows", "--data"]).arg(&c).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("imported 2 row(s), skipped 2 bad row(s)"), "{err}");
    let n = value(&sql(&c, "SELECT count(*) FROM flows WHERE ts >= TIMESTAMP '2026-01-01T00:00:00Z'"));
    assert_eq!(n, "2");
    let cid = value(&sql(
        &c,
        "SELECT community_id FROM flows WHERE proto = 'tcp' AND ts >= TIMESTAMP '2026-01-01T00:00:00Z'",
    ));
    assert!(cid.starts_with("1:"), "community id computed: {cid}");
}
