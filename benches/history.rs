//! History benchmark, driven by `benches/history.sh` (not part of CI):
//!
//!   history gen DATA ROWS DAYS END_UNIX_S [SEED]
//!                                            write ROWS synthetic flow rows over DAYS
//!                                            of hourly partitions ending at END
//!   history query DATA RUNS END_UNIX_S      run the benchmark queries RUNS times in
//!                                            this process; one line per run:
//!                                            `query<TAB>seconds<TAB>rows`
//!
//! The queries are in `benches/history_queries.sql`, shared with the DuckDB
//! side. Run by `cargo test` (no arguments) it checks itself on a small history.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tapstream_engine::records::Table;
use tapstream_query::compact::Compactor;
use tapstream_query::synth::FlowSynth;
use tapstream_query::{Guardrails, History, HourlyWriter, WriterConfig};

const QUERIES: &str = include_str!("history_queries.sql");
const HOUR_NS: i64 = 3_600_000_000_000;

/// (name, SQL) of each query, times filled in from `end_s`.
fn queries(end_s: i64) -> Vec<(String, String)> {
    let at = |hours_back: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp(end_s - hours_back * 3600).expect("valid time");
        format!("{:04}-{:02}-{:02}T{:02}:00:00Z", t.year(), t.month() as u8, t.day(), t.hour())
    };
    let mut out = Vec::new();
    let mut name = String::new();
    let mut sql = String::new();
    for line in QUERIES.lines() {
        if let Some(n) = line.strip_prefix("-- name: ") {
            name = n.trim().to_string();
        } else if let Some(q) = line.strip_prefix("-- tapstream: ") {
            sql = q.to_string();
        } else if line.trim().is_empty() && !sql.is_empty() {
            out.push((name.clone(), std::mem::take(&mut sql)));
        }
    }
    if !sql.is_empty() {
        out.push((name, sql));
    }
    out.into_iter()
        .map(|(n, q)| (n, q.replace("{T24H}", &at(24)).replace("{T7D}", &at(24 * 7)).replace("{T30D}", &at(24 * 30))))
        .collect()
}

fn generate(data: &Path, rows: u64, days: i64, end_s: i64, seed: u64) {
    let hours = days * 24;
    let end_hour = end_s * 1_000_000_000 / HOUR_NS;
    let start = (end_hour - hours + 1) * HOUR_NS;
    let per_hour = rows.div_ceil(hours as u64);
    let cfg = WriterConfig {
        // One file per hour, then compacted (sorted) below, as a running
        // appliance leaves a closed hour.
        max_rows_per_file: per_hour as usize + 1,
        max_file_age: Duration::from_secs(3600),
        compaction: false,
        ..WriterConfig::default()
    };
    let mut w = HourlyWriter::new(data, cfg.clone()).expect("data dir");
    let mut s = FlowSynth::new(seed, start, per_hour);
    let t = Instant::now();
    let mut left = rows;
    while left > 0 {
        let n = left.min(65_536);
        w.write(Table::Flows, &s.batch(n as usize)).expect("write");
        left -= n;
    }
    w.close().expect("close");
    let compactor = Compactor::new(data, cfg).expect("compactor");
    for h in 0..hours {
        compactor.compact(Table::Flows, start / HOUR_NS + h).expect("compact");
    }
    // As the appliance does when a day closes: its host index. The day of
    // `end_s` is still open, so its hours stay unindexed.
    let indexed: Vec<_> = compactor.index_missing(end_s * 1_000_000_000).collect();
    for r in &indexed {
        r.as_ref().expect("host index");
    }
    eprintln!("indexed {} closed days", indexed.len());
    eprintln!("{rows} rows over {hours} hours in {:.1} s", t.elapsed().as_secs_f64());
}

async fn run_queries(data: &Path, runs: usize, end_s: i64) -> Vec<(String, f64, u64)> {
    let limits = Guardrails { max_rows: None, timeout: Duration::from_secs(600), ..Guardrails::default() };
    let h = History::open(data, limits).await.expect("open history");
    let mut out = Vec::new();
    for _ in 0..runs {
        for (name, q) in queries(end_s) {
            let t = Instant::now();
            let mut r = h.query(&q).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut rows = 0u64;
            while let Some(b) = r.stream.next().await {
                rows += b.unwrap_or_else(|e| panic!("{name}: {e}")).num_rows() as u64;
            }
            out.push((name, t.elapsed().as_secs_f64(), rows));
        }
    }
    out
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let arg = |i: usize| args.get(i).unwrap_or_else(|| panic!("missing argument {i}; see benches/history.rs"));
    match args.first().map(String::as_str) {
        Some("gen") => generate(
            Path::new(arg(1)),
            arg(2).parse().expect("ROWS"),
            arg(3).parse().expect("DAYS"),
            arg(4).parse().expect("END"),
            args.get(5).map_or(1, |s| s.parse().expect("SEED")),
        ),
        Some("index") => {
            // Index the closed days a `gen` left unindexed (the day two
            // halves generated apart were joined in).
            let data = Path::new(arg(1));
            let end: i64 = arg(2).parse().expect("END");
            let c = Compactor::new(data, WriterConfig::default()).expect("compactor");
            let done: Vec<_> = c.index_missing(end * 1_000_000_000).collect();
            for r in &done {
                r.as_ref().expect("host index");
            }
            eprintln!("indexed {} more days", done.len());
        }
        Some("query") => {
            let end: i64 = arg(3).parse().expect("END");
            for (name, secs, rows) in rt().block_on(run_queries(Path::new(arg(1)), arg(2).parse().expect("RUNS"), end))
            {
                println!("{name}\t{secs:.4}\t{rows}");
            }
        }
        _ => {
            // `cargo test`: the benchmark's own check on a small history.
            let d = tempfile::tempdir().expect("tempdir");
            let end = 1_767_225_600 + 40 * 86_400;
            generate(d.path(), 50_000, 31, end, 1);
            let res = rt().block_on(run_queries(d.path(), 1, end));
            assert_eq!(res.len(), 4, "{res:?}");
            for (name, _, rows) in &res {
                assert!(*rows > 0, "{name} found nothing");
            }
            eprintln!("history benchmark self-check: {res:?}");
        }
    }
}
