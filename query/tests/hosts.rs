//! The host index: closed days get two files with every flow under both of
//! its addresses (one per role); `orig_h = x OR resp_h = x` reads it where it matches the
//! day's hours and gives exactly the rows the hours give; a day whose
//! hours changed is read from its hours until it is indexed again;
//! retention takes a day's index with its first hour.

use std::fs;
use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampNanosecondType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use tapstream_engine::records::Table;
use tapstream_query::compact::Compactor;
use tapstream_query::hosts::{self, HOSTS_DIR};
use tapstream_query::layout::{self, HOUR_NS};
use tapstream_query::retention::{RetentionPolicy, sweep};
use tapstream_query::synth::FlowSynth;
use tapstream_query::{Guardrails, History, HourLocks, HourlyWriter, WriterConfig};

/// 2026-11-01 00:00 UTC in hours since the epoch.
const BASE_HOUR: i64 = 498_192;
const DAY1: &str = "2026-11-01";
const DAY2: &str = "2026-11-02";
/// The synthetic history's busiest internal address (both roles).
const HOST: &str = "10.1.0.10";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn query(root: &Path, sql: &str) -> Vec<RecordBatch> {
    rt().block_on(async {
        let h = History::open(root, Guardrails { max_rows: None, ..Guardrails::default() }).await.unwrap();
        let mut r = h.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut out = Vec::new();
        while let Some(b) = r.stream.next().await {
            out.push(b.unwrap());
        }
        out
    })
}

/// Every row as text, sorted: the answer regardless of order.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let opts = FormatOptions::default().with_null("∅");
    let mut out = Vec::new();
    for b in batches {
        let f: Vec<ArrayFormatter> = b.columns().iter().map(|c| ArrayFormatter::try_new(c, &opts).unwrap()).collect();
        for r in 0..b.num_rows() {
            out.push(f.iter().map(|x| x.value(r).to_string()).collect::<Vec<_>>().join("|"));
        }
    }
    out.sort();
    out
}

fn lookup(host: &str) -> String {
    format!("SELECT * FROM flows WHERE ts >= TIMESTAMP '{DAY1}T00:00:00Z' AND (orig_h = '{host}' OR resp_h = '{host}')")
}

/// The same rows read from the hours alone (the index moved aside).
fn from_hours(root: &Path, sql: &str) -> Vec<String> {
    let idx = root.join(HOSTS_DIR);
    let aside = root.join("hosts-aside");
    fs::rename(&idx, &aside).unwrap();
    let r = rows(&query(root, sql));
    fs::rename(&aside, &idx).unwrap();
    r
}

fn plan(root: &Path, sql: &str) -> String {
    rows(&query(root, &format!("EXPLAIN {sql}"))).join("\n")
}

/// Two whole days and three hours of a third, written as the appliance
/// writes them (compaction and the host index on).
fn history(root: &Path) -> u64 {
    history_with(root, WriterConfig::default())
}

fn history_with(root: &Path, cfg: WriterConfig) -> u64 {
    let per_hour = 400;
    let hours = 51;
    let mut w = HourlyWriter::new(root, cfg).unwrap();
    let mut s = FlowSynth::new(11, BASE_HOUR * HOUR_NS, per_hour);
    for _ in 0..hours {
        w.write(Table::Flows, &s.batch(per_hour as usize)).unwrap();
    }
    w.close().unwrap();
    per_hour * hours as u64
}

#[test]
fn closed_days_are_indexed_and_a_host_lookup_reads_them_with_the_same_answer() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    history(root);
    // Both whole days and the third (over by the wall clock) are indexed.
    assert_eq!(hosts::indexed_dates(root), vec![DAY1, DAY2, "2026-11-03"]);
    for day in [DAY1, DAY2] {
        let files = hosts::valid_index(root, day).expect("an index matching the day's hours");
        for (f, role) in files.iter().zip(["-orig.parquet", "-resp.parquet"]) {
            let name = f.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with("hosts-") && name.ends_with(role), "{name}");
        }
    }
    // Every flow is there once under each address, a flow to itself once.
    let day_rows: u64 = rows(&query(
        root,
        &format!("SELECT count(*) FROM flows WHERE ts >= TIMESTAMP '{DAY1}T00:00:00Z' AND date = '{DAY1}'"),
    ))[0]
        .parse()
        .unwrap();
    use parquet::file::reader::FileReader;
    let [orig_rows, resp_rows] = hosts::valid_index(root, DAY1).unwrap().map(|f| {
        let meta = parquet::file::reader::SerializedFileReader::new(fs::File::open(f).unwrap()).unwrap();
        meta.metadata().file_metadata().num_rows() as u64
    });
    let self_flows: u64 = rows(&query(
        root,
        &format!(
            "SELECT count(*) FROM flows WHERE ts >= TIMESTAMP '{DAY1}T00:00:00Z' AND date = '{DAY1}' AND orig_h = resp_h"
        ),
    ))[0]
        .parse()
        .unwrap();
    assert_eq!(orig_rows, day_rows, "every flow under its originator");
    assert_eq!(resp_rows, day_rows - self_flows, "every flow under its responder, once in all");
    assert_sorted_by_role(root, DAY1, self_flows);

    let sql = lookup(HOST);
    assert!(plan(root, &sql).contains("hosts-"), "the lookup reads the index:\n{}", plan(root, &sql));
    // A range that starts on day 2 opens no index of day 1.
    let day1_index = hosts::valid_index(root, DAY1).unwrap();
    let later = format!(
        "SELECT uid FROM flows WHERE ts >= TIMESTAMP '{DAY2}T00:00:00Z' AND (orig_h = '{HOST}' OR resp_h = '{HOST}')"
    );
    let p = plan(root, &later);
    assert!(p.contains("hosts-"), "{p}");
    for f in &day1_index {
        assert!(!p.contains(f.file_name().unwrap().to_str().unwrap()), "{p}");
    }
    let got = rows(&query(root, &sql));
    let want = from_hours(root, &sql);
    assert_eq!(got, want);
    // The host is in both roles, in all three days; the derived columns
    // (Community ID, duration) are filled in from the index's rows too.
    let both = query(
        root,
        &format!(
            "SELECT count(*) FILTER (WHERE orig_h = '{HOST}'), count(*) FILTER (WHERE resp_h = '{HOST}'), count(DISTINCT date), count(community_id), count(duration) FROM flows WHERE ts >= TIMESTAMP '{DAY1}T00:00:00Z' AND (orig_h = '{HOST}' OR resp_h = '{HOST}')"
        ),
    );
    let v: Vec<u64> = rows(&both)[0].split('|').map(|x| x.parse().unwrap()).collect();
    assert!(v[0] > 0 && v[1] > 0, "{v:?}");
    assert_eq!(v[2], 3);
    assert_eq!(v[3], got.len() as u64, "every row has a Community ID: {v:?}");
    assert_eq!(v[4], got.len() as u64);

    // Other conditions still apply to the index's rows, a host absent
    // from the history gives nothing, and a narrower time range is kept.
    for extra in [
        format!("{} AND resp_p = 443", lookup(HOST)),
        format!("{} AND ts < TIMESTAMP '{DAY2}T06:30:00Z'", lookup(HOST)),
        format!("{} AND hour = '05'", lookup(HOST)),
        lookup("192.0.2.99"),
        format!(
            "SELECT uid, hour FROM flows WHERE ts >= TIMESTAMP '{DAY2}T12:00:00Z' AND ('{HOST}' = resp_h OR orig_h = '{HOST}')"
        ),
        format!("SELECT * FROM flows WHERE ts >= TIMESTAMP '{DAY1}T00:00:00Z' AND '{HOST}' IN (resp_h, orig_h)"),
    ] {
        assert_eq!(rows(&query(root, &extra)), from_hours(root, &extra), "{extra}");
    }
}

#[test]
fn a_day_whose_hours_changed_is_read_from_its_hours_until_it_is_indexed_again() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    history(root);
    let before = hosts::valid_index(root, DAY1).unwrap();
    // A late record for 05:00 on day 1, from a writer without compaction:
    // the hour gets a part file beside its compacted one.
    let mut s = FlowSynth::new(99, (BASE_HOUR + 5) * HOUR_NS, 3600);
    let late = s.batch(50);
    let mut w = HourlyWriter::new(root, WriterConfig { compaction: false, ..WriterConfig::default() }).unwrap();
    w.write(Table::Flows, &late).unwrap();
    w.close().unwrap();
    assert_eq!(hosts::valid_index(root, DAY1), None, "the index no longer matches day 1");
    assert!(hosts::valid_index(root, DAY2).is_some());
    let sql = lookup(HOST);
    let got = rows(&query(root, &sql));
    assert_eq!(got, from_hours(root, &sql), "the late rows are found");
    let late_rows = rows(&query(root, &format!("SELECT count(*) FROM flows WHERE ts >= TIMESTAMP '{DAY1}T00:00:00Z'")));
    assert_eq!(late_rows, vec![(51 * 400 + 50).to_string()]);

    // Compacting the hour again and indexing the day brings it back.
    let c = Compactor::new(root, WriterConfig::default()).unwrap();
    c.compact(Table::Flows, BASE_HOUR + 5).unwrap().expect("the hour is merged");
    let again = c.index_day(DAY1).unwrap().expect("day 1 is indexed again");
    assert_eq!(again.hours, 24);
    let now = hosts::valid_index(root, DAY1).unwrap();
    assert!(now.iter().all(|f| !before.contains(f)), "{now:?} {before:?}");
    assert!(before.iter().all(|f| !f.exists()), "the old index is gone");
    assert_eq!(c.index_day(DAY1).unwrap(), None, "nothing to do for a matching index");
    assert_eq!(rows(&query(root, &sql)), got);
}

#[test]
fn retention_takes_a_days_index_with_its_first_hour_and_counts_it_in_the_budget() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    history(root);
    let index_bytes: u64 = [DAY1, DAY2]
        .iter()
        .flat_map(|d| hosts::valid_index(root, d).unwrap())
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    assert!(index_bytes > 0);
    // A budget just under what is there: the oldest hour goes, and day 1's
    // index with it.
    // (The budget counts history and its index, not the writer's lock file.)
    let lock = fs::metadata(root.join(tapstream_query::dirlock::LOCK_FILE)).map_or(0, |m| m.len());
    let total = tapstream_query::layout::dir_bytes(root) - lock;
    let p = RetentionPolicy {
        max_age: Default::default(),
        disk_budget: Some(total - 1),
        interval: std::time::Duration::from_secs(60),
    };
    let locks = HourLocks::default();
    let now = (BASE_HOUR + 24 * 40) * HOUR_NS;
    let r = sweep(root, &p, now, &locks);
    assert_eq!(r.deleted.len(), 1, "{r:?}");
    assert_eq!(r.deleted[0].hour, BASE_HOUR);
    assert!(!hosts::day_dir(root, DAY1).exists());
    assert!(hosts::valid_index(root, DAY2).is_some());
    let sql = lookup(HOST);
    assert_eq!(rows(&query(root, &sql)), from_hours(root, &sql));

    // An index left for a day with no flows at all is removed by a sweep.
    let orphan = hosts::day_dir(root, "2026-10-01");
    fs::create_dir_all(&orphan).unwrap();
    fs::write(orphan.join("hosts-0000000000000000.parquet"), b"x").unwrap();
    let p = RetentionPolicy { disk_budget: None, ..p };
    sweep(root, &p, now, &locks);
    assert!(!orphan.exists());
}

#[test]
fn an_unfinished_index_is_removed_on_start_and_a_missing_one_is_built() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    history(root);
    hosts::remove_day(root, DAY2).unwrap();
    let tmp = hosts::day_dir(root, DAY1).join(".hosts-abc.parquet.tmp");
    fs::write(&tmp, b"half").unwrap();
    // A writer starting over this data dir cleans up and indexes day 2 in
    // the background; closing it waits for that.
    let mut w = HourlyWriter::new(root, WriterConfig::default()).unwrap();
    w.close().unwrap();
    assert!(!tmp.exists());
    assert!(hosts::valid_index(root, DAY2).is_some());
    // Off by configuration: nothing is indexed.
    let d2 = tempfile::tempdir().unwrap();
    let mut w = HourlyWriter::new(d2.path(), WriterConfig { host_index: false, ..WriterConfig::default() }).unwrap();
    let mut s = FlowSynth::new(1, BASE_HOUR * HOUR_NS, 100);
    w.write(Table::Flows, &s.batch(2400)).unwrap();
    w.close().unwrap();
    assert!(hosts::indexed_dates(d2.path()).is_empty());
}

#[test]
fn missing_indexes_are_built_one_day_per_step_oldest_first() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    history(root);
    hosts::remove_day(root, DAY1).unwrap();
    hosts::remove_day(root, DAY2).unwrap();
    let c = Compactor::new(root, WriterConfig::default()).unwrap();
    let later = (BASE_HOUR + 24 * 30) * HOUR_NS;
    let mut days = c.index_missing(later);
    // Each day is built when asked for, so each can be reported as it ends.
    let first = days.next().expect("a day to index").unwrap();
    assert_eq!(first.date, DAY1);
    assert!(hosts::valid_index(root, DAY1).is_some());
    assert_eq!(hosts::valid_index(root, DAY2), None, "day 2 waits for the next step");
    let second = days.next().expect("day 2").unwrap();
    assert_eq!(second.date, DAY2);
    assert!(hosts::valid_index(root, DAY2).is_some());
    // The third day kept its index: nothing more to do.
    assert!(days.next().is_none());
}

#[test]
fn half_an_index_is_not_used_and_the_day_is_indexed_again() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    history(root);
    let [orig, resp] = hosts::valid_index(root, DAY1).unwrap();
    // As a crash between the two renames would leave it, beside a one-file
    // index of an older version.
    fs::remove_file(&resp).unwrap();
    let old = hosts::day_dir(root, DAY1).join("hosts-0123456789abcdef.parquet");
    fs::copy(&orig, &old).unwrap();
    assert_eq!(hosts::valid_index(root, DAY1), None);
    let sql = lookup(HOST);
    let p = plan(root, &sql);
    assert!(!p.contains(orig.file_name().unwrap().to_str().unwrap()), "half an index is read:\n{p}");
    assert_eq!(rows(&query(root, &sql)), from_hours(root, &sql));
    // A memory cap too small for both halves' sorts at once (24 × 400
    // flows): built one half after the other, to the same files.
    let c =
        Compactor::new(root, WriterConfig { compaction_memory_bytes: 24 << 20, ..WriterConfig::default() }).unwrap();
    let again = c.index_day(DAY1).unwrap().expect("day 1 is indexed again");
    assert_eq!(hosts::valid_index(root, DAY1), Some([orig, resp]));
    assert!(!old.exists(), "an index of another shape goes");
    assert!(again.rows > 0 && again.bytes > 0);
    assert_eq!(rows(&query(root, &sql)), from_hours(root, &sql));
}

/// Each index file of `day` holds its role's address as `host`, sorted by
/// it and then by time; only the originators' file has the `self_flows`.
fn assert_sorted_by_role(root: &Path, day: &str, self_flows: u64) {
    for (f, role) in hosts::valid_index(root, day).unwrap().iter().zip(["orig_h", "resp_h"]) {
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(fs::File::open(f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut keys: Vec<(String, i64)> = Vec::new();
        let mut self_in_file = 0;
        for b in r {
            let b = b.unwrap();
            let text = |c: &str| b.column_by_name(c).unwrap().as_string::<i32>().clone();
            let (host, own, orig, resp) = (text("host"), text(role), text("orig_h"), text("resp_h"));
            let ts = b.column_by_name("ts").unwrap().as_primitive::<TimestampNanosecondType>().clone();
            for i in 0..b.num_rows() {
                assert_eq!(host.value(i), own.value(i), "{role}");
                self_in_file += usize::from(orig.value(i) == resp.value(i));
                keys.push((host.value(i).to_string(), ts.value(i)));
            }
        }
        assert!(keys.is_sorted(), "{role}: sorted by host and then ts");
        assert_eq!(self_in_file as u64, if role == "orig_h" { self_flows } else { 0 }, "{role}");
        // Found by `host` and its statistics: no bloom filters to write.
        let md = parquet::file::reader::SerializedFileReader::new(fs::File::open(f).unwrap()).unwrap();
        let md = parquet::file::reader::FileReader::metadata(&md);
        let bloom = md.row_groups().iter().flat_map(|rg| rg.columns()).any(|c| c.bloom_filter_offset().is_some());
        assert!(!bloom, "{role}: no bloom filters in the index");
    }
}

#[test]
fn a_day_of_hours_cut_in_time_slices_is_indexed_in_order() {
    // Hours compacted in slices of 128 rows: each row group is sorted by
    // `orig_h`, the file is not (and its footer says so per row group).
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    history_with(root, WriterConfig { row_group_rows: 128, ..WriterConfig::default() });
    assert_sorted_by_role(root, DAY1, self_flows(root, DAY1));
    let sql = lookup(HOST);
    assert_eq!(rows(&query(root, &sql)), from_hours(root, &sql));
}

fn self_flows(root: &Path, day: &str) -> u64 {
    rows(&query(
        root,
        &format!(
            "SELECT count(*) FROM flows WHERE ts >= TIMESTAMP '{day}T00:00:00Z' AND date = '{day}' AND orig_h = resp_h"
        ),
    ))[0]
        .parse()
        .unwrap()
}

/// Every row of a file, in order.
fn file_rows(f: &Path) -> RecordBatch {
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(fs::File::open(f).unwrap()).unwrap();
    let schema = b.schema().clone();
    let batches: Vec<RecordBatch> = b.build().unwrap().map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

#[test]
fn a_day_that_fits_in_memory_is_indexed_there_with_the_rows_a_spilling_sort_writes() {
    // The default pool holds both halves of these days: they are read
    // whole and sorted in memory. A pool too small for that sorts with
    // DataFusion, spilling, one half after the other. Same files.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    history_with(a.path(), WriterConfig { row_group_rows: 1024, ..WriterConfig::default() });
    history_with(
        b.path(),
        WriterConfig { row_group_rows: 1024, compaction_memory_bytes: 24 << 20, ..WriterConfig::default() },
    );
    for day in [DAY1, DAY2] {
        let hour = layout::data_files(&layout::hour_dir(a.path(), Table::Flows, BASE_HOUR))[0].clone();
        assert!(hosts::has_flows_columns(&hour), "compacted hours have today's columns: the in-memory sort is used");
        let (held, spilled) = (hosts::valid_index(a.path(), day).unwrap(), hosts::valid_index(b.path(), day).unwrap());
        for (h, s) in held.iter().zip(&spilled) {
            let (h_rows, s_rows) = (file_rows(h), file_rows(s));
            assert!(h_rows.num_rows() > 9000, "{day}: a day's flows in {}", h.display());
            assert_eq!(h_rows, s_rows, "{day}: {} and {}", h.display(), s.display());
        }
        assert_sorted_by_role(a.path(), day, self_flows(a.path(), day));
    }
}
