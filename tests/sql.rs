//! `tapstream sql` over real history (a synthetic capture ingested by the
//! binary), checked against an outside engine (pyarrow with Hive
//! partitioning), and every guardrail.

mod common;
use common::bin;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// History for all tests: 40 000 synthetic packets (2026-01-01 00:00 UTC).
fn history() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, data) = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("s.pcap");
        let o = bin().args(["synth", "--packets", "40000", "--seed", "5", "--out"]).arg(&pcap).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let data = dir.path().join("data");
        let o = bin().args(["ingest", "--quiet", "--data"]).arg(&data).arg(&pcap).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (dir, data)
    });
    data
}

fn sql(q: &str, extra: &[&str], config: Option<&str>) -> Output {
    let mut c = bin();
    let cfg_dir = tempfile::tempdir().unwrap();
    if let Some(text) = config {
        let p = cfg_dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        c.arg("--config").arg(p);
    }
    c.args(["sql", q, "--data"]).arg(history()).args(extra).output().unwrap()
}

fn csv(q: &str) -> Vec<String> {
    let o = sql(q, &["--format", "csv"], None);
    assert!(o.status.success(), "{q}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().skip(1).map(str::to_string).collect()
}

fn pyarrow(script: &str) -> String {
    let o = Command::new("python3").arg("-c").arg(script).arg(history()).output().unwrap();
    assert!(o.status.success(), "pyarrow: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

const ALL: &str = "ts >= '2000-01-01T00:00:00Z'";

/// The derived flows columns (docs/schema.md): an outside reader fills in
/// `duration`, `flow_start` and `uid` as documented and gets our values;
/// the Community IDs are not in the files (null, with their seed) but
/// always in our answers.
#[test]
fn an_outside_reader_derives_the_unstored_flow_columns_as_documented() {
    let ours = csv(&format!(
        "SELECT uid, ts, duration, flow_start, community_id FROM flows WHERE {ALL} AND record_kind = 'final' ORDER BY uid, ts"
    ));
    assert!(ours.len() > 100);
    assert!(ours.iter().all(|l| l.split(',').nth(4).is_some_and(|c| c.starts_with("1:"))), "{:?}", &ours[..3]);
    let theirs = pyarrow(
        r#"
import sys, pyarrow.dataset as ds, pyarrow.compute as pc
t = ds.dataset(sys.argv[1] + "/flows", format="parquet", partitioning="hive").to_table()
import ipaddress
t = t.filter(pc.equal(t["record_kind"], "final"))
assert t["community_id"].null_count == t.num_rows, "community_id is not stored"
assert t["uid"].null_count == t.num_rows, "uid is not stored"
assert t["community_id_seed"].null_count == 0
ns = pc.subtract(t["last_ts"].cast("int64"), t["ts"].cast("int64"))
dur = pc.coalesce(t["duration"], pc.divide(ns.cast("float64"), 1e9))
start = pc.coalesce(t["flow_start"], t["ts"])
# The uid, step by step as docs/schema.md gives it.
M = (1 << 64) - 1
def fmix64(h):
    h ^= h >> 33; h = (h * 0xff51afd7ed558ccd) & M
    h ^= h >> 33; h = (h * 0xc4ceb9fe1a85ec53) & M
    return h ^ (h >> 33)
def uid(proto, oh, op, rh, rp, start_ns):
    a16 = lambda a: ipaddress.ip_address(a).packed.ljust(16, b"\0")
    (lo, lp), (hi, hp) = sorted([(a16(oh), op), (a16(rh), rp)])
    words = [int.from_bytes(x[i:i + 8], "big") for x in (lo, hi) for i in (0, 8)]
    words += [proto << 32 | lp << 16 | hp, start_ns & M]
    h = 0
    for w in words: h = fmix64(h ^ w)
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    out = ""
    for _ in range(11): out = digits[h % 62] + out; h //= 62
    return "C" + out
cols = [t[c].to_pylist() for c in ("ip_proto", "orig_h", "orig_p", "resp_h", "resp_p")]
rows = []
for p, oh, op, rh, rp, ts, d, s in zip(*cols, t["ts"].cast("int64").to_pylist(), dur.to_pylist(), start.cast("int64").to_pylist()):
    rows.append((uid(p, oh, op, rh, rp, s), ts, repr(d), s))
for r in sorted(rows): print(*r)
"#,
    );
    // The same rows, compared as numbers (timestamps in ns).
    let ts_ns = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp_nanos()
    };
    let ours: Vec<(String, i128, f64, i128)> = ours
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), ts_ns(f[1]), f[2].parse().unwrap(), ts_ns(f[3]))
        })
        .collect();
    let theirs: Vec<(String, i128, f64, i128)> = theirs
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect();
    assert_eq!(ours, theirs);
}

/// A protocol record's `uid` (stored, as the engine wrote it) names its
/// connection's row in `flows`, whose `uid` is derived on read.
#[test]
fn every_protocol_record_finds_its_flow_by_uid() {
    for t in ["dns", "http", "tls"] {
        let n = csv(&format!("SELECT count(*) FROM {t} WHERE {ALL}"));
        assert!(n[0].parse::<u64>().unwrap() > 10, "{t}: {n:?}");
        let orphans =
            csv(&format!("SELECT count(*) FROM {t} WHERE {ALL} AND uid NOT IN (SELECT uid FROM flows WHERE {ALL})"));
        assert_eq!(orphans, ["0"], "{t}");
        // And the join answers by the same uid with the same five-tuple.
        let mismatched = csv(&format!(
            "SELECT count(*) FROM {t} r JOIN flows f ON r.uid = f.uid WHERE r.{ALL} AND f.{ALL} \
             AND (r.orig_h <> f.orig_h OR r.resp_h <> f.resp_h OR r.resp_p <> f.resp_p)"
        ));
        assert_eq!(mismatched, ["0"], "{t}");
    }
}

#[test]
fn answers_match_pyarrow() {
    let ours = csv(&format!(
        "SELECT orig_h, sum(orig_bytes + resp_bytes) AS b FROM flows WHERE {ALL} GROUP BY orig_h ORDER BY b DESC, orig_h LIMIT 5"
    ));
    let theirs = pyarrow(
        r#"
import sys, pyarrow.dataset as ds, pyarrow.compute as pc
t = ds.dataset(sys.argv[1] + "/flows", format="parquet", partitioning="hive").to_table()
t = t.append_column("b", pc.add(t["orig_bytes"], t["resp_bytes"]))
g = t.group_by("orig_h").aggregate([("b", "sum")]).sort_by([("b_sum", "descending"), ("orig_h", "ascending")])
for h, b in list(zip(g["orig_h"].to_pylist(), g["b_sum"].to_pylist()))[:5]: print(f"{h},{b}")
"#,
    );
    assert_eq!(ours.join("\n"), theirs);
    // Partition columns are queryable.
    let ours = csv(&format!("SELECT date, hour, count(*) FROM flows WHERE {ALL} GROUP BY date, hour ORDER BY 1, 2"));
    let theirs = pyarrow(
        r#"
import sys, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1] + "/flows", format="parquet", partitioning=ds.partitioning(flavor="hive")).to_table()
g = t.group_by(["date", "hour"]).aggregate([("ts", "count")]).sort_by([("date", "ascending"), ("hour", "ascending")])
for d, h, n in zip(g["date"].to_pylist(), g["hour"].to_pylist(), g["ts_count"].to_pylist()): print(f"{d},{h:02},{n}" if isinstance(h, int) else f"{d},{h},{n}")
"#,
    );
    assert_eq!(ours.join("\n"), theirs);
}

#[test]
fn network_functions() {
    let ours = csv(&format!(
        "SELECT count(*) FROM flows WHERE {ALL} AND cidr_contains('10.0.0.0/8', orig_h) AND resp_p IN (53, 443)"
    ));
    let theirs = pyarrow(
        r#"
import sys, ipaddress, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1] + "/flows", format="parquet", partitioning="hive").to_table()
n = ipaddress.ip_network("10.0.0.0/8")
print(sum(1 for h, p in zip(t["orig_h"].to_pylist(), t["resp_p"].to_pylist())
          if ipaddress.ip_address(h).version == 4 and ipaddress.ip_address(h) in n and p in (53, 443)))
"#,
    );
    assert_eq!(ours, vec![theirs]);
    assert_eq!(
        csv(
            "SELECT ip_to_int('10.0.0.1'), int_to_ip(167772161), ip_to_int('::1') IS NULL, cidr_contains('2001:db8::/32', '2001:db8::5')"
        ),
        vec!["167772161,10.0.0.1,true,true"]
    );
}

#[test]
fn top_n_helpers_agree_with_the_group_by_they_stand_for() {
    let range = "'2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z'";
    let b = "orig_ip_bytes + resp_ip_bytes";
    let p = "orig_pkts + resp_pkts";
    let cases = [
        (
            format!("SELECT * FROM top_sources(7, {range})"),
            format!(
                "SELECT orig_h AS host, sum({b}) AS bytes, sum({p}) AS packets, count(*) AS flows FROM flows WHERE {ALL} GROUP BY orig_h ORDER BY bytes DESC, host LIMIT 7"
            ),
        ),
        (
            format!("SELECT * FROM top_destinations(7, {range})"),
            format!(
                "SELECT resp_h AS host, sum({b}) AS bytes, sum({p}) AS packets, count(*) AS flows FROM flows WHERE {ALL} GROUP BY resp_h ORDER BY bytes DESC, host LIMIT 7"
            ),
        ),
        (
            format!("SELECT * FROM top_talkers(7, {range})"),
            format!(
                "SELECT host, sum(b) AS bytes, sum(p) AS packets, count(*) AS flows FROM \
                     (SELECT orig_h AS host, {b} AS b, {p} AS p FROM flows WHERE {ALL} \
                      UNION ALL SELECT resp_h, {b}, {p} FROM flows WHERE {ALL}) GROUP BY host ORDER BY bytes DESC, host LIMIT 7"
            ),
        ),
        (
            format!("SELECT * FROM top_conversations(7, {range})"),
            format!(
                "SELECT orig_h, resp_h, sum({b}) AS bytes, sum({p}) AS packets, count(*) AS flows FROM flows WHERE {ALL} GROUP BY orig_h, resp_h ORDER BY bytes DESC, orig_h, resp_h LIMIT 7"
            ),
        ),
        (
            format!("SELECT * FROM top_ports(7, {range})"),
            format!(
                "SELECT proto, resp_p AS port, sum({b}) AS bytes, sum({p}) AS packets, count(*) AS flows FROM flows WHERE {ALL} GROUP BY proto, resp_p ORDER BY flows DESC, proto, port LIMIT 7"
            ),
        ),
    ];
    for (helper, by_hand) in cases {
        let ours = csv(&helper);
        assert_eq!(ours.len(), 7, "{helper}");
        assert_eq!(ours, csv(&by_hand), "{helper}");
    }
    // Hours back from now: the capture (2026-01-01) is outside the last day.
    assert!(csv("SELECT * FROM top_talkers(5)").is_empty());
    assert_eq!(csv("SELECT count(*) FROM top_talkers(5, 100000)"), vec!["5"]);
    // Bad arguments are clear errors.
    for (q, msg) in [
        ("SELECT * FROM top_talkers()", "N is missing"),
        ("SELECT * FROM top_talkers(0)", "positive whole number"),
        ("SELECT * FROM top_talkers(5, 'soon', 'later')", "is not a time"),
        ("SELECT * FROM top_ports(5, '2026-01-02T00:00:00Z', '2026-01-01T00:00:00Z')", "TO must be after FROM"),
    ] {
        let o = sql(q, &[], None);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(msg), "{q}: {e}");
    }
}

#[test]
fn a_query_without_time_gets_the_default_range_and_says_so() {
    // The capture is from 2026-01-01: outside the last 24 h.
    let o = sql("SELECT count(*) AS n FROM flows", &["--format", "csv"], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().nth(1), Some("0"));
    assert!(err.contains("only the last 24 h were searched"), "{err}");
    let n: u64 = csv(&format!("SELECT count(*) FROM flows WHERE {ALL}"))[0].parse().unwrap();
    assert!(n > 100);
    let n2: u64 = csv("SELECT count(*) FROM flows WHERE date = '2026-01-01'")[0].parse().unwrap();
    assert_eq!(n, n2);
}

#[test]
fn guardrails_are_clear_errors() {
    for q in [
        "CREATE TABLE x AS SELECT 1",
        "DROP TABLE flows",
        "INSERT INTO flows SELECT * FROM flows",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let o = sql(q, &[], None);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && (e.contains("only queries are allowed") || e.contains("SQL syntax")),
            "{q}: {e}"
        );
    }
    let o = sql("SELEC 1", &[], None);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("SQL syntax"));
    let o = sql("SELECT nope FROM flows", &[], None);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nope"));
    // Row limit on interactive results; --out takes everything.
    let o = sql(&format!("SELECT uid FROM flows WHERE {ALL}"), &["--format", "csv"], Some("[sql]\nmax_rows = 7\n"));
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 8);
    assert!(String::from_utf8_lossy(&o.stderr).contains("result cut at 7 rows"));
    // Timeout: a cross join far too big for 50 ms.
    let q = format!(
        "SELECT count(*) FROM flows a, flows b, flows c WHERE a.{ALL} AND b.{ALL} AND c.{ALL} AND a.uid < b.uid"
    );
    let o = sql(&q, &[], Some("[sql]\ntimeout_secs = 0.05\n"));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("longer than the"), "{e}");
    // Memory: a hash join (which cannot spill) over 700 000 keys in 16 MiB.
    let pairs =
        format!("SELECT a.uid || b.uid AS k FROM flows a JOIN flows b ON a.proto = b.proto WHERE a.{ALL} AND b.{ALL}");
    let q = format!("SELECT count(*) FROM ({pairs}) x JOIN ({pairs}) y ON x.k = y.k");
    let o =
        sql(&q, &["--out", "/dev/null", "--format", "csv"], Some("[sql]\nmemory_limit_mb = 16\ntimeout_secs = 120\n"));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("memory"), "{e}");
}

#[test]
fn exports_stream_to_files_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let q = format!("SELECT uid, orig_h, resp_p, orig_bytes FROM flows WHERE {ALL} ORDER BY uid");
    let n: usize = csv(&format!("SELECT count(*) FROM flows WHERE {ALL}"))[0].parse().unwrap();
    for (fmt, file) in [("csv", "o.csv"), ("json", "o.json"), ("ndjson", "o.ndjson"), ("parquet", "o.parquet")] {
        let p = dir.path().join(file);
        let o = sql(&q, &["--format", fmt, "--out", p.to_str().unwrap()], Some("[sql]\nmax_rows = 3\n"));
        assert!(o.status.success(), "{fmt}: {}", String::from_utf8_lossy(&o.stderr));
        let script = format!(
            r#"
import sys, json, csv, pyarrow.parquet as pq
p = "{}"
f = "{fmt}"
if f == "csv": rows = list(csv.DictReader(open(p)))
elif f == "json": rows = json.load(open(p))
elif f == "ndjson": rows = [json.loads(l) for l in open(p)]
else: rows = pq.read_table(p).to_pylist()
print(len(rows), rows[0]["uid"])
"#,
            p.display()
        );
        let out = pyarrow(&script);
        let first = csv(&format!("{q} LIMIT 1"))[0].split(',').next().unwrap().to_string();
        assert_eq!(out, format!("{n} {first}"), "{fmt}: no row limit with --out");
    }
}
