//! Exports stream: a 10-million-row export of the flows table, in every
//! format, runs in about the memory of a one-million-row export.

mod common;
use common::bin;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;

use tapstream_query::synth::FlowSynth;
use tapstream_query::{HourlyWriter, WriterConfig};

const ROWS: usize = 10_000_000;
/// 2026-01-01T00:00:00Z; rows fill 20 hours.
const START: i64 = 1_767_225_600_000_000_000;
const PER_HOUR: u64 = 500_000;

/// Run `tapstream sql … --out /dev/stdout`, counting what comes out.
/// Returns (bytes, newlines, occurrences of `needle`, peak RSS in KiB).
fn export(data: &Path, query: &str, format: &str, out: &str, needle: &[u8]) -> (u64, u64, u64, i64) {
    let mut child = bin()
        .args(["sql", query, "--format", format, "--out", out, "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child's high-water RSS (VmHWM), read until it exits: it only
    // grows, so the last reading is the peak. (getrusage would count the
    // test process's own memory, inherited at spawn.)
    let pid = child.id();
    let hwm = std::thread::spawn(move || {
        let mut peak = 0i64;
        while let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            match s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                Some(v) => peak = peak.max(v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0)),
                None => break, // exited (a zombie has no memory)
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        peak
    });
    let mut stdout = child.stdout.take().unwrap();
    let (mut bytes, mut lines, mut hits) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    // Carry the last bytes over, so a needle split between reads is found.
    // (memchr's searches, built optimised, keep the counting of gigabytes
    // from taking longer than the export being counted.)
    let finder = memchr::memmem::Finder::new(needle);
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        bytes += n as u64;
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        if !needle.is_empty() {
            let mut w = std::mem::take(&mut tail);
            w.extend_from_slice(&buf[..n]);
            hits += finder.find_iter(&w).count() as u64;
            tail = w[w.len().saturating_sub(needle.len() - 1)..].to_vec();
        }
    }
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{format}: {stderr}");
    (bytes, lines, hits, hwm.join().unwrap())
}

fn parquet_rows(p: &Path) -> i64 {
    let script = "import sys, pyarrow.parquet as pq\nprint(pq.ParquetFile(sys.argv[1]).metadata.num_rows)";
    let o = std::process::Command::new("python3").arg("-c").arg(script).arg(p).output().unwrap();
    assert!(o.status.success(), "pyarrow: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn ten_million_row_exports_stream_in_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Exports read whatever part files an hour holds: the hourly sort and the
    // host index (both of which the writer does at opt-level 1 here, longer
    // than all the exports together) are not what this test is about.
    let config = WriterConfig { compaction: false, host_index: false, ..WriterConfig::default() };
    let mut w = HourlyWriter::new(&data, config).unwrap();
    let mut synth = FlowSynth::new(11, START, PER_HOUR);
    let mut left = ROWS;
    while left > 0 {
        let n = left.min(65_536);
        w.write(tapstream_engine::records::Table::Flows, &synth.batch(n)).unwrap();
        left -= n;
    }
    w.close().unwrap();

    let all = "SELECT * FROM flows WHERE ts >= '2026-01-01T00:00:00Z'";
    // A tenth of it, for the baseline: the first two hours.
    let tenth = "SELECT * FROM flows WHERE ts >= '2026-01-01T00:00:00Z' AND ts < '2026-01-01T02:00:00Z'";
    for (format, needle) in [("csv", &b""[..]), ("ndjson", &b""[..]), ("json", &b"\"uid\":"[..])] {
        let (_, small_lines, small_hits, small_rss) = export(&data, tenth, format, "/dev/stdout", needle);
        let (bytes, lines, hits, rss) = export(&data, all, format, "/dev/stdout", needle);
        let rows = match format {
            "csv" => (lines - 1, small_lines - 1),
            "ndjson" => (lines, small_lines),
            _ => (hits, small_hits),
        };
        assert_eq!(rows, (ROWS as u64, 2 * PER_HOUR), "{format}: every row, once");
        eprintln!("{format}: {bytes} bytes; peak RSS {rss} KiB (1/10 of the rows: {small_rss} KiB)");
        // Ten times the rows, about the same memory: nothing accumulates.
        assert!(rss < small_rss + 128 * 1024, "{format}: {rss} KiB for 10M rows vs {small_rss} KiB for 1M");
        assert!(rss < 512 * 1024, "{format}: {rss} KiB");
        assert!(bytes > ROWS as u64 * 100, "{format}: {bytes} bytes");
    }
    let small = dir.path().join("small.parquet");
    let big = dir.path().join("all.parquet");
    let (_, _, _, small_rss) = export(&data, tenth, "parquet", small.to_str().unwrap(), b"");
    let (_, _, _, rss) = export(&data, all, "parquet", big.to_str().unwrap(), b"");
    assert_eq!(parquet_rows(&small), 2 * PER_HOUR as i64);
    assert_eq!(parquet_rows(&big), ROWS as i64);
    eprintln!("parquet: peak RSS {rss} KiB (1/10 of the rows: {small_rss} KiB)");
    assert!(rss < small_rss + 128 * 1024, "parquet: {rss} KiB for 10M rows vs {small_rss} KiB for 1M");
    assert!(rss < 768 * 1024, "parquet: {rss} KiB");
}
