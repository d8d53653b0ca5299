//! History storage driven through the real binary: crash safety of the
//! writer, compaction and retention in a running appliance.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapstream"))
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let q = e.path();
            if q.is_dir() {
                out.extend(walk(&q));
            } else {
                out.push(q);
            }
        }
    }
    out
}

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

#[test]
fn writer_survives_kill_9_losing_at_most_one_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let flush = 2.0;
    std::fs::write(&cfg, format!("[storage]\nflush_interval_secs = {flush}\n[demo]\npps = 3000\n")).unwrap();
    let data = dir.path().join("data");
    let mut child = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--duration", "120", "--data"])
        .arg(&data)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
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
