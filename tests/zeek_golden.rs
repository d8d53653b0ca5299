//! Golden tests against the logs Zeek wrote for the public captures in
//! `../shared/corpus/zeek`: our `tapstream flows --format zeek` must agree
//! with Zeek's conn.log on packets, IP bytes, payload bytes, conn_state and
//! history for at least 98% of rows across the corpus, and protocol records
//! must agree with dns.log, ssl.log and http.log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/zeek")
}

struct Entry {
    name: String,
    pcap: PathBuf,
    verify_checksums: bool,
    logs: String,
}

fn index() -> Vec<Entry> {
    let text = std::fs::read_to_string(corpus().join("INDEX.tsv")).expect("corpus INDEX.tsv (../shared/corpus/zeek)");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let (ni, pi, li, ci) = (col("name"), col("pcap"), col("logs"), col("zeek_ignored_checksums"));
    lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .map(|f| Entry {
            name: f[ni].to_string(),
            pcap: corpus().join(f[ni]).join(f[pi]),
            verify_checksums: f[ci] != "yes",
            logs: f[li].to_string(),
        })
        .collect()
}

/// A Zeek TSV log: field names and rows.
struct Log {
    fields: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Log {
    fn parse(text: &str) -> Log {
        let mut fields = Vec::new();
        let mut rows = Vec::new();
        for l in text.lines() {
            if let Some(f) = l.strip_prefix("#fields\t") {
                fields = f.split('\t').map(String::from).collect();
            } else if !l.starts_with('#') && !l.is_empty() {
                rows.push(l.split('\t').map(String::from).collect());
            }
        }
        Log { fields, rows }
    }
    fn get<'a>(&self, row: &'a [String], name: &str) -> Option<&'a str> {
        self.fields.iter().position(|f| f == name).and_then(|i| row.get(i)).map(|s| s.as_str())
    }
}

fn ours(e: &Entry, log: &str, workers: usize) -> Log {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapstream"));
    cmd.args(["flows", "--format", "zeek", "--log", log, "--workers", &workers.to_string()]).arg(&e.pcap);
    if e.verify_checksums {
        cmd.arg("--verify-checksums");
    }
    let out = cmd.output().expect("run tapstream");
    assert!(out.status.success() || !out.stdout.is_empty(), "{}: {}", e.name, String::from_utf8_lossy(&out.stderr));
    Log::parse(&String::from_utf8_lossy(&out.stdout))
}

const COMPARED: [&str; 8] =
    ["orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "orig_bytes", "resp_bytes", "conn_state", "history"];

/// One worker (no sharding reader) and two (sharded, fragments reassembled by
/// the reader) must both agree.
#[test]
fn conn_log_agrees_with_zeek() {
    for workers in [1, 2] {
        conn_log_agreement(workers);
    }
}

fn conn_log_agreement(workers: usize) {
    let mut total = 0usize;
    let mut agree = 0usize;
    let mut report = Vec::new();
    for e in index().iter().filter(|e| e.logs.contains("conn.log:full")) {
        let zeek = Log::parse(&std::fs::read_to_string(corpus().join(&e.name).join("conn.log")).unwrap());
        let us = ours(e, "conn", workers);
        // multiset of our rows by 5-tuple
        let key = |l: &Log, r: &[String]| {
            ["id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto"].map(|f| l.get(r, f).unwrap_or("").to_string())
        };
        let mut mine: HashMap<[String; 5], Vec<&Vec<String>>> = HashMap::new();
        for r in &us.rows {
            mine.entry(key(&us, r)).or_default().push(r);
        }
        for zr in &zeek.rows {
            total += 1;
            let k = key(&zeek, zr);
            let cand = mine.get_mut(&k);
            let Some(cand) = cand.filter(|c| !c.is_empty()) else {
                report.push(format!(
                    "{}: {:?}: missing (zeek history {})",
                    e.name,
                    k,
                    zeek.get(zr, "history").unwrap_or("")
                ));
                continue;
            };
            // pick the candidate with the fewest differing fields
            let diff = |r: &Vec<String>| -> Vec<String> {
                COMPARED
                    .iter()
                    .filter(|f| zeek.get(zr, f) != us.get(r, f))
                    .map(|f| {
                        format!("{f}: zeek {} ours {}", zeek.get(zr, f).unwrap_or("?"), us.get(r, f).unwrap_or("?"))
                    })
                    .collect()
            };
            let (best, d) = cand.iter().enumerate().map(|(i, r)| (i, diff(r))).min_by_key(|(_, d)| d.len()).unwrap();
            cand.remove(best);
            if d.is_empty() {
                agree += 1;
            } else {
                report.push(format!("{}: {:?}: {}", e.name, k, d.join("; ")));
            }
        }
    }
    let pct = 100.0 * agree as f64 / total.max(1) as f64;
    eprintln!("conn.log agreement with {workers} worker(s): {agree}/{total} rows ({pct:.2}%)");
    for r in &report {
        eprintln!("  {r}");
    }
    assert!(total > 1400, "corpus has {total} rows; expected the full set");
    assert!(pct >= 98.0, "agreement {pct:.2}% is below 98%");
}

/// Compare selected columns of a protocol log, matching rows by 5-tuple
/// plus a discriminating field, in order.
fn compare_proto(zeek_log: &str, our_log: &str, fields: &[&str], min_pct: f64) {
    let mut total = 0;
    let mut agree = 0;
    let mut report = Vec::new();
    for e in index().iter().filter(|e| e.logs.contains(&format!("{zeek_log}:full"))) {
        let zeek = Log::parse(&std::fs::read_to_string(corpus().join(&e.name).join(zeek_log)).unwrap());
        let us = ours(e, our_log, 2);
        let key = |l: &Log, r: &[String]| {
            ["id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"].map(|f| l.get(r, f).unwrap_or("").to_string())
        };
        let mut mine: HashMap<[String; 4], Vec<&Vec<String>>> = HashMap::new();
        for r in &us.rows {
            mine.entry(key(&us, r)).or_default().push(r);
        }
        for zr in &zeek.rows {
            total += 1;
            let Some(cand) = mine.get_mut(&key(&zeek, zr)).filter(|c| !c.is_empty()) else {
                report.push(format!("{}/{zeek_log}: {:?} missing", e.name, key(&zeek, zr)));
                continue;
            };
            let pos = cand.iter().position(|r| fields.iter().all(|f| zeek.get(zr, f) == us.get(r, f)));
            match pos {
                Some(i) => {
                    cand.remove(i);
                    agree += 1;
                }
                None => {
                    let r = cand.remove(0);
                    let d: Vec<String> = fields
                        .iter()
                        .filter(|f| zeek.get(zr, f) != us.get(r, f))
                        .map(|f| format!("{f}: zeek {:?} ours {:?}", zeek.get(zr, f), us.get(r, f)))
                        .collect();
                    report.push(format!("{}/{zeek_log}: {:?}: {}", e.name, key(&zeek, zr), d.join("; ")));
                }
            }
        }
    }
    let pct = 100.0 * agree as f64 / total.max(1) as f64;
    eprintln!("{zeek_log} agreement on {fields:?}: {agree}/{total} ({pct:.1}%)");
    for r in &report {
        eprintln!("  {r}");
    }
    assert!(total > 0);
    assert!(pct >= min_pct, "{zeek_log}: {pct:.1}% below {min_pct}%");
}

#[test]
fn dns_log_agrees_with_zeek() {
    compare_proto("dns.log", "dns", &["query", "rcode"], 95.0);
}

#[test]
fn ssl_log_server_names_agree_with_zeek() {
    compare_proto("ssl.log", "tls", &["server_name"], 80.0);
}

#[test]
fn http_log_agrees_with_zeek() {
    compare_proto("http.log", "http", &["host", "uri", "status_code"], 95.0);
}
