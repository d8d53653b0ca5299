//! Storage life cycle: compaction, queries across compaction and deletion,
//! retention by age and by disk budget with its edge cases.

use std::fs;
use std::path::Path;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use futures::StreamExt;
use tapstream_engine::records::Table;
use tapstream_query::compact::{COMPACT_PREFIX, Compactor, TimeSlices, parquet_rows};
use tapstream_query::layout::{self, HOUR_NS, TRASH};
use tapstream_query::retention::{Reason, RetentionPolicy, sweep};
use tapstream_query::synth::FlowSynth;
use tapstream_query::{Guardrails, History, Holder, HourLocks, HourlyWriter, WriterConfig};

/// 2026-11-01 00:00 UTC in hours since the epoch.
const BASE_HOUR: i64 = 498_192;

fn small_parts() -> WriterConfig {
    WriterConfig { max_rows_per_file: 700, row_group_rows: 512, ..WriterConfig::default() }
}

/// Write `hours` hours of flows, `per_hour` rows each, starting at `start_hour`.
fn write_hours(root: &Path, cfg: WriterConfig, start_hour: i64, hours: i64, per_hour: u64) -> HourlyWriter {
    let mut w = HourlyWriter::new(root, cfg).unwrap();
    let mut s = FlowSynth::new(7, start_hour * HOUR_NS, per_hour);
    let total = (hours as u64 * per_hour) as usize;
    let mut done = 0;
    while done < total {
        let n = 250.min(total - done);
        w.write(Table::Flows, &s.batch(n)).unwrap();
        done += n;
    }
    w
}

/// One hour of `rows` flows at `BASE_HOUR`, compacted (in row groups of
/// `row_group_rows`, pages of 512 rows); its directory.
fn one_compacted_hour(root: &Path, row_group_rows: usize, rows: u64) -> std::path::PathBuf {
    let cfg = WriterConfig { row_group_rows, page_rows: 512, ..WriterConfig::default() };
    let mut w = write_hours(root, cfg, BASE_HOUR, 1, rows);
    w.close().unwrap();
    let hour = layout::hour_dir(root, Table::Flows, BASE_HOUR);
    assert_eq!(count_files(&hour), (1, 1));
    hour
}

fn count_files(dir: &Path) -> (usize, usize) {
    let files = layout::data_files(dir);
    let compacted =
        files.iter().filter(|f| f.file_name().unwrap().to_str().unwrap().starts_with(COMPACT_PREFIX)).count();
    (files.len(), compacted)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn count(h: &History, sql: &str) -> i64 {
    let mut r = h.query(sql).await.unwrap();
    let mut v = None;
    while let Some(b) = r.stream.next().await {
        let b = b.unwrap();
        if b.num_rows() > 0 {
            v = Some(b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0));
        }
    }
    v.unwrap()
}

/// The first column of a query's answer, its batches in one array.
fn first_column(h: &History, sql: &str) -> arrow::array::ArrayRef {
    rt().block_on(async {
        let mut r = h.query(sql).await.unwrap();
        let mut parts = Vec::new();
        while let Some(b) = r.stream.next().await {
            parts.push(b.unwrap().column(0).clone());
        }
        let parts: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        arrow::compute::concat(&parts).unwrap()
    })
}

/// The plan column of an `EXPLAIN [ANALYZE]` answer, one line per row.
fn plan_text(h: &History, explain: &str) -> String {
    rt().block_on(async {
        let mut r = h.query(explain).await.unwrap();
        let mut text = String::new();
        while let Some(b) = r.stream.next().await {
            let b = b.unwrap();
            let col = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
            for v in col.as_any().downcast_ref::<StringArray>().unwrap().iter().flatten() {
                text.push_str(v);
                text.push('\n');
            }
        }
        text
    })
}

fn wide_open() -> Guardrails {
    Guardrails { max_rows: None, ..Guardrails::default() }
}

#[test]
fn closed_hours_are_compacted_into_one_sorted_file_with_page_index_and_bloom_filters() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // Three hours, several parts each; the third is still "open" (no data
    // past its end + grace), so only the first two compact while writing.
    let mut w = write_hours(root, small_parts(), BASE_HOUR, 3, 3000);
    let h0 = layout::hour_dir(root, Table::Flows, BASE_HOUR);
    let h2 = layout::hour_dir(root, Table::Flows, BASE_HOUR + 2);
    // The compactor works in the background; close() waits for it.
    let before_close = count_files(&h2);
    assert!(before_close.0 > 1 || w.stats.files > 3, "hour 2 has several parts before close: {before_close:?}");
    w.close().unwrap();
    for h in 0..3 {
        let dir = layout::hour_dir(root, Table::Flows, BASE_HOUR + h);
        assert_eq!(count_files(&dir), (1, 1), "hour {h} is one compacted file");
        let f = &layout::data_files(&dir)[0];
        assert_eq!(parquet_rows(f).unwrap(), 3000);
    }
    assert!(w.stats.compactions >= 3);
    assert_eq!(w.stats.compaction_errors, 0);
    assert_eq!(w.stats.rows, 9000);

    // Row groups in time order, one or more per time slice of the hour,
    // each sorted by originator address then ts (declared in the footer),
    // with page index and bloom filters.
    let f = fs::File::open(&layout::data_files(&h0)[0]).unwrap();
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(
        f,
        parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required),
    )
    .unwrap();
    let md = b.metadata().clone();
    let slices = TimeSlices::for_hour(3000, 512);
    assert_eq!(slices.count(), 6, "3000 rows in row groups of 512: six 10-minute slices");
    assert!(md.num_row_groups() >= 6, "row groups of at most 512 rows, none across a slice");
    let schema = md.file_metadata().schema_descr();
    let col = |name: &str| (0..schema.num_columns()).find(|i| schema.column(*i).name() == name).unwrap();
    for rg in md.row_groups() {
        let sc = rg.sorting_columns().expect("sort order declared");
        let declared: Vec<usize> = sc.iter().map(|c| c.column_idx as usize).collect();
        assert_eq!(declared, [col("orig_h"), col("ts")]);
        assert!(rg.column(col("orig_h")).bloom_filter_offset().is_some(), "bloom filter on orig_h");
        assert!(rg.column(col("resp_h")).bloom_filter_offset().is_some(), "bloom filter on resp_h");
        assert!(rg.column(col("uid")).bloom_filter_offset().is_none());
    }
    assert!(md.column_index().is_some() && md.offset_index().is_some(), "page index written");
    let mut rows: Vec<(String, i64)> = Vec::new();
    let mut groups = Vec::new();
    for rg in 0..md.num_row_groups() {
        let f = fs::File::open(&layout::data_files(&h0)[0]).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .with_row_groups(vec![rg])
            .build()
            .unwrap();
        let mut group = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let ts = batch.column_by_name("ts").unwrap().as_any().downcast_ref::<TimestampNanosecondArray>().unwrap();
            let orig = batch.column_by_name("orig_h").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
            group.extend(orig.iter().zip(ts.values()).map(|(o, t)| (o.unwrap().to_string(), *t)));
        }
        assert!(group.is_sorted(), "row group {rg} sorted by (orig_h, ts)");
        let first = slices.of(group.iter().map(|r| r.1).min().unwrap());
        assert!(group.iter().all(|r| slices.of(r.1) == first), "row group {rg} within one slice");
        let hosts = group.windows(2).filter(|w| w[0].0 != w[1].0).count();
        assert!(hosts > 10, "many originators in row group {rg}, each one's rows together");
        groups.push(first);
        rows.extend(group);
    }
    assert!(groups.is_sorted(), "row groups in time order: {groups:?}");
    assert_eq!(groups.iter().collect::<std::collections::BTreeSet<_>>().len(), 6, "every slice: {groups:?}");
    assert_eq!(rows.len(), 3000);
}

/// A time condition inside a compacted hour skips the row groups of the
/// slices before it, by their `ts` statistics, and counts what a test of
/// every row counts.
#[test]
fn a_time_condition_inside_a_compacted_hour_skips_row_groups_by_statistics() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let hour = one_compacted_hour(root, 1000, 12_000);
    let file = &layout::data_files(&hour)[0];
    let groups = parquet::file::reader::SerializedFileReader::new(fs::File::open(file).unwrap()).unwrap();
    let groups = parquet::file::reader::FileReader::metadata(&groups).num_row_groups();
    assert_eq!(TimeSlices::for_hour(12_000, 1000).count(), 12, "12 slices of 5 minutes");
    assert!(groups >= 12, "{groups} row groups");
    let h = rt().block_on(History::open(root, wide_open())).unwrap();
    let ts = first_column(&h, "SELECT ts FROM flows WHERE hour >= '00'");
    let all = ts.as_any().downcast_ref::<TimestampNanosecondArray>().unwrap().values().to_vec();
    assert_eq!(all.len(), 12_000);
    let start = BASE_HOUR * HOUR_NS;
    // 2026-11-01T00:40:00Z and 00:47:30Z: on a slice boundary and inside one.
    for (text, at) in [("00:40:00", start + 40 * 60 * 1_000_000_000), ("00:47:30", start + 475 * 6 * 1_000_000_000)] {
        let want = all.iter().filter(|t| **t >= at).count() as i64;
        assert!(want > 0 && want < 12_000);
        let q = format!("SELECT count(*) FROM flows WHERE ts >= '2026-11-01T{text}Z' AND resp_p >= 0");
        assert_eq!(rt().block_on(count(&h, &q)), want, "{q}");
        let plan = plan_text(&h, &format!("EXPLAIN ANALYZE {q}"));
        let line = plan.lines().find(|l| l.contains("DataSourceExec")).expect("a Parquet scan");
        let groups_read = line
            .split("row_groups_pruned_statistics=")
            .nth(1)
            .and_then(|r| r.split(" matched").next())
            .and_then(|r| r.rsplit(' ').next())
            .map(|n| n.parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("no row-group statistics in\n{line}"));
        // From 00:40 on: the last 4 of 12 slices (00:47:30 is inside the
        // tenth), and a burst may split a slice into two row groups.
        assert!(groups_read <= (groups as f64) / 3.0 + 2.0, "{q}: {groups_read} of {groups} row groups read\n{plan}");
        assert!(groups_read >= 3.0, "{q}: {groups_read}\n{plan}");
    }
}

/// A network condition on the originator reads the pages of that network
/// only (each row group of a compacted hour is sorted by `orig_h`, and
/// `cidr_contains` adds the network's text range for the page index), and
/// counts exactly what a test of every row counts, for networks on and off
/// octet boundaries.
#[test]
fn a_network_condition_skips_the_pages_of_other_addresses() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    one_compacted_hour(root, 8192, 20_000);
    let h = rt().block_on(History::open(root, wide_open())).unwrap();
    let orig = first_column(&h, "SELECT orig_h FROM flows WHERE hour >= '00'");
    let orig = arrow::compute::cast(&orig, &arrow::datatypes::DataType::Utf8).unwrap();
    let all: Vec<String> =
        orig.as_any().downcast_ref::<StringArray>().unwrap().iter().map(|x| x.unwrap().to_string()).collect();
    assert_eq!(all.len(), 20_000);
    for net in ["10.1.0.0/16", "10.2.0.0/15", "10.1.3.0/24", "10.1.0.10/32", "10.0.0.0/8", "0.0.0.0/0", "2001:db8::/32"]
    {
        let parsed = tapstream_query::udf::Net::parse(net).unwrap();
        let want = all.iter().filter(|a| parsed.contains(a.parse().unwrap())).count() as i64;
        let q = format!("SELECT count(*) FROM flows WHERE hour >= '00' AND cidr_contains('{net}', orig_h)");
        assert_eq!(rt().block_on(count(&h, &q)), want, "{net}");
        // The same in a projection (no pruning there) and negated.
        let q = format!("SELECT count(*) FROM flows WHERE hour >= '00' AND NOT cidr_contains('{net}', orig_h)");
        assert_eq!(rt().block_on(count(&h, &q)), 20_000 - want, "NOT {net}");
    }
    // Pages of other networks were skipped, by the page index.
    let plan = plan_text(
        &h,
        "EXPLAIN ANALYZE SELECT count(*) FROM flows WHERE hour >= '00' AND cidr_contains('10.1.3.0/24', orig_h)",
    );
    // The rows the filter looked at: those of the pages left after the
    // row-group statistics and the page index pruned the rest (what the
    // scan put out, and what its decoder dropped if it tested them).
    let metric = |name: &str| scan_metric(&plan, name);
    let (matched, looked_at) = (metric("output_rows"), metric("output_rows") + metric("pushdown_rows_pruned"));
    assert!(matched > 0.0, "{plan}");
    assert!(looked_at * 4.0 < 20_000.0, "a /24 reads a few of the hour's pages: {looked_at} of 20000 rows\n{plan}");
}

/// A metric of the Parquet scan in an EXPLAIN ANALYZE text, summed over
/// its mentions (the first number of each: `N total → M matched` gives N).
fn scan_metric(plan: &str, name: &str) -> f64 {
    let scan = plan.lines().find(|l| l.contains("DataSourceExec")).expect("a Parquet scan");
    scan.split(&format!("{name}="))
        .skip(1)
        .map(|rest| {
            let mut it = rest.split([',', ']']).next().unwrap().split_whitespace();
            let n: f64 = it.next().unwrap().parse().unwrap();
            n * match it.next() {
                Some("K") => 1e3,
                Some("M") => 1e6,
                _ => 1.0,
            }
        })
        .sum()
}

/// Bloom filters (on the address columns) still rule row groups out for an
/// equality on an address, now that a scan reads them only for a condition
/// they can answer (`bloom_answers` in src/sql.rs, unit-tested there).
#[test]
fn an_absent_address_is_ruled_out_by_bloom_filters() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = WriterConfig { row_group_rows: 1024, ..WriterConfig::default() };
    write_hours(root, cfg, BASE_HOUR, 1, 8000).close().unwrap();
    let h = rt().block_on(History::open(root, wide_open())).unwrap();
    // An address no flow has, inside every row group's min and max of
    // `resp_h` (not the sort column), so statistics keep the groups.
    let plan = plan_text(&h, "EXPLAIN ANALYZE SELECT count(*) FROM flows WHERE hour >= '00' AND resp_h = '10.1.0.11'");
    let scan = plan.lines().find(|l| l.contains("DataSourceExec")).expect("a Parquet scan");
    let bloom = scan.split("row_groups_pruned_bloom_filter=").nth(1).expect("bloom filter metrics");
    let n = |s: &str| s.trim().parse::<f64>().unwrap();
    let (total, rest) = bloom.split_once(" total → ").unwrap();
    let matched = rest.split_once(" matched").unwrap().0;
    assert!(n(total) >= 7.0, "the row groups statistics kept reached the bloom filters: {scan}");
    assert!(n(matched) <= 2.0, "the bloom filters ruled (nearly) every group out: {scan}");
}

#[test]
fn late_rows_after_compaction_are_merged_again() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write_hours(root, small_parts(), BASE_HOUR, 1, 2000).close().unwrap();
    let dir = layout::hour_dir(root, Table::Flows, BASE_HOUR);
    assert_eq!(count_files(&dir), (1, 1));
    // A long flow's record arrives later for the same hour.
    write_hours(root, small_parts(), BASE_HOUR, 1, 100).close().unwrap();
    assert_eq!(count_files(&dir), (1, 1));
    assert_eq!(parquet_rows(&layout::data_files(&dir)[0]).unwrap(), 2100);
}

/// An earlier run killed before it compacted its closed hours (or whose
/// compaction failed) leaves them as part files: the next writer compacts
/// them when it starts, and indexes their day, whatever rows it gets itself.
/// An hour that has not closed by the wall clock, and one another holder
/// has claimed, are left alone.
#[test]
fn the_next_start_compacts_the_hours_an_earlier_run_left_in_parts() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let parts_only = WriterConfig { compaction: false, ..small_parts() };
    let now_hour =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64 / HOUR_NS;
    let mut w = write_hours(root, parts_only, BASE_HOUR, 2, 1000);
    for h in [BASE_HOUR, now_hour] {
        for _ in 0..2 {
            w.write(Table::Dns, &rows_of(Table::Dns, h, 300)).unwrap();
        }
    }
    w.close().unwrap();
    drop(w);
    let flows = |h| layout::hour_dir(root, Table::Flows, h);
    let dns = |h| layout::hour_dir(root, Table::Dns, h);
    assert_eq!(count_files(&flows(BASE_HOUR)), (2, 0), "a run without compaction leaves parts");
    assert_eq!(count_files(&dns(now_hour)).1, 0);
    let date = tapstream_query::hosts::date_of(BASE_HOUR.div_euclid(24));
    assert!(tapstream_query::hosts::valid_index(root, &date).is_none());

    // The next writer: retention happens to hold the second flows hour.
    let locks = std::sync::Arc::new(HourLocks::default());
    assert!(locks.try_claim((Table::Flows, BASE_HOUR + 1), Holder::Retention));
    let mut w = HourlyWriter::with_locks(root, small_parts(), locks.clone()).unwrap();
    w.close().unwrap();
    assert_eq!(count_files(&flows(BASE_HOUR)), (1, 1), "the earlier run's flows hour is compacted");
    assert_eq!(parquet_rows(&layout::data_files(&flows(BASE_HOUR))[0]).unwrap(), 1000);
    assert_eq!(count_files(&dns(BASE_HOUR)), (1, 1), "and its dns hour, on the other thread");
    assert_eq!(parquet_rows(&layout::data_files(&dns(BASE_HOUR))[0]).unwrap(), 600);
    assert_eq!(count_files(&flows(BASE_HOUR + 1)).1, 0, "an hour retention holds is not touched");
    assert_eq!(count_files(&dns(now_hour)), (1, 0), "the hour still open by the wall clock is not touched");
    assert_eq!((w.stats.compactions, w.stats.compaction_errors), (2, 0));
    // The day is not indexed while one of its hours is still in parts.
    assert!(tapstream_query::hosts::valid_index(root, &date).is_none());

    // Once nobody holds it, the next start finishes the day and indexes it.
    locks.release((Table::Flows, BASE_HOUR + 1));
    drop(w);
    let mut w = HourlyWriter::new(root, small_parts()).unwrap();
    w.close().unwrap();
    assert_eq!(count_files(&flows(BASE_HOUR + 1)), (1, 1));
    assert_eq!(w.stats.compactions, 1);
    assert!(tapstream_query::hosts::valid_index(root, &date).is_some(), "the day of the leftover hours is indexed");
}

/// `n` rows of `table` one second apart from the start of `hour`: every
/// other column zero, or null where zero does not cast to its type.
fn rows_of(table: Table, hour: i64, n: usize) -> RecordBatch {
    let schema = table.schema();
    let zeros = Int64Array::from(vec![0i64; n]);
    let times = Int64Array::from((0..n as i64).map(|i| hour * HOUR_NS + i * 1_000_000_000).collect::<Vec<_>>());
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            let from = if matches!(f.data_type(), DataType::Timestamp(..)) { &times } else { &zeros };
            cast(from, f.data_type()).unwrap_or_else(|_| new_null_array(f.data_type(), n))
        })
        .collect();
    RecordBatch::try_new(schema, cols).unwrap()
}

#[test]
fn every_tables_closed_hours_are_compacted_and_counted() {
    // Flows (and the host index) and the other tables are merged on two
    // threads: every hour of every table still ends as one merged file.
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let mut w = write_hours(root, small_parts(), BASE_HOUR, 2, 900);
    for t in Table::ALL.into_iter().filter(|t| *t != Table::Flows) {
        for h in 0..2 {
            for _ in 0..3 {
                w.write(t, &rows_of(t, BASE_HOUR + h, 300)).unwrap();
            }
        }
    }
    w.close().unwrap();
    for t in Table::ALL {
        for h in 0..2 {
            let dir = layout::hour_dir(root, t, BASE_HOUR + h);
            assert_eq!(count_files(&dir), (1, 1), "{} hour {h}", t.name());
            let rows = parquet_rows(&layout::data_files(&dir)[0]).unwrap();
            assert_eq!(rows, 900, "{} hour {h}", t.name());
        }
    }
    assert_eq!((w.stats.compactions, w.stats.compaction_errors), (2 * Table::COUNT as u64, 0));
}

#[test]
fn queries_keep_working_across_compaction_and_deletion() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let cfg = WriterConfig { compaction: false, ..small_parts() };
    let mut w = write_hours(&root, cfg.clone(), BASE_HOUR, 2, 20_000);
    w.close().unwrap();
    let h0 = layout::hour_dir(&root, Table::Flows, BASE_HOUR);
    assert!(count_files(&h0).0 > 10);
    let rt = rt();
    rt.block_on(async {
        let hist = History::open(&root, wide_open()).await.unwrap();
        let all = "SELECT ts, uid FROM flows WHERE date = '2026-11-01'";
        // Start a scan, read one batch, then compact hour 0 and delete hour 1
        // underneath it; the scan must still return every row.
        let mut r = hist.query(all).await.unwrap();
        let mut rows = 0;
        if let Some(b) = r.stream.next().await {
            rows += b.unwrap().num_rows();
        }
        let root2 = root.clone();
        let cfg2 = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let c = Compactor::new(&root2, cfg2).unwrap();
            c.compact(Table::Flows, BASE_HOUR).unwrap().expect("compacted");
            let hd = layout::HourDir {
                table: Table::Flows,
                hour: BASE_HOUR + 1,
                path: layout::hour_dir(&root2, Table::Flows, BASE_HOUR + 1),
            };
            layout::remove_hour(&root2, &hd).unwrap();
        })
        .await
        .unwrap();
        assert_eq!(count_files(&h0), (1, 1));
        while let Some(b) = r.stream.next().await {
            rows += b.unwrap().num_rows();
        }
        assert_eq!(rows, 40_000, "the running query saw the history as it was when it started");
        // A new query sees the new state: hour 0 compacted, hour 1 gone.
        assert_eq!(count(&hist, "SELECT count(*) FROM flows WHERE date = '2026-11-01'").await, 20_000);
    });
}

fn policy(days: u64, budget: Option<u64>) -> RetentionPolicy {
    RetentionPolicy {
        max_age: Table::ALL.into_iter().map(|t| (t, Duration::from_secs(days * 86_400))).collect(),
        disk_budget: budget,
        interval: Duration::from_secs(60),
    }
}

fn hours_of(root: &Path, t: Table) -> Vec<i64> {
    layout::list_hours(root, t).into_iter().map(|h| h.hour - BASE_HOUR).collect()
}

/// 40 days of flows, one small hour every 6 hours.
fn forty_days(root: &Path) {
    let mut w = HourlyWriter::new(root, WriterConfig { compaction: false, ..WriterConfig::default() }).unwrap();
    for day in 0..40 {
        for h in [0, 6, 12, 18] {
            let hour = BASE_HOUR + day * 24 + h;
            let mut s = FlowSynth::new(hour as u64, hour * HOUR_NS, 50);
            w.write(Table::Flows, &s.batch(50)).unwrap();
        }
    }
    w.close().unwrap();
}

#[test]
fn age_retention_per_table_keeps_what_is_young_and_logs_why() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    forty_days(root);
    // A dns hour from day 0 as well: dns keeps 90 days, flows 30.
    let mut w = HourlyWriter::new(root, WriterConfig::default()).unwrap();
    let mut s = FlowSynth::new(1, BASE_HOUR * HOUR_NS, 10);
    let b = s.batch(5);
    let dns_like = RecordBatch::try_new(b.schema(), b.columns().to_vec()).unwrap();
    w.write(Table::Dns, &dns_like).unwrap();
    w.close().unwrap();

    let now = (BASE_HOUR + 40 * 24) * HOUR_NS; // day 40, 00:00
    let mut p = policy(30, None);
    p.max_age.insert(Table::Dns, Duration::from_secs(90 * 86_400));
    let locks = HourLocks::default();
    let r = sweep(root, &p, now, &locks);
    // Age counts from the newest data (day 39 18:00, before the wall clock):
    // hours ending 30 days or more before it go: days 0..8 and day 9's
    // 00, 06 and 12 o'clock hours.
    assert_eq!(r.deleted.len(), 39, "{:?}", r.deleted.iter().map(|d| d.hour - BASE_HOUR).collect::<Vec<_>>());
    assert!(r.deleted.iter().all(|d| d.table == Table::Flows && d.reason == Reason::Age { limit_days: 30 }));
    assert!(r.deleted.iter().all(|d| d.bytes > 0));
    assert_eq!(hours_of(root, Table::Flows)[0], 9 * 24 + 18);
    assert_eq!(hours_of(root, Table::Dns), vec![0], "dns keeps 90 days");
    // Emptied date directories go too; no trash is left.
    assert!(!root.join("flows/date=2026-11-01").exists());
    assert_eq!(fs::read_dir(root.join(TRASH)).map(|r| r.count()).unwrap_or(0), 0);
    // Idempotent.
    assert!(sweep(root, &p, now, &locks).deleted.is_empty());
}

#[test]
fn clock_jumps_do_not_delete_history() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    forty_days(root);
    let locks = HourLocks::default();
    let p = policy(30, None);
    let before = hours_of(root, Table::Flows).len();
    // The wall clock jumps a year ahead, but no data arrived at that time:
    // age counts from the newest data, so only what is 30 days older than
    // the newest hour goes (the same as at day 40).
    let far = (BASE_HOUR + 400 * 24) * HOUR_NS;
    let r = sweep(root, &p, far, &locks);
    assert_eq!(r.deleted.len(), 39, "only hours older than newest data - 30 days");
    assert_eq!(hours_of(root, Table::Flows).len(), before - 39);
    // The clock jumps back before all the data: nothing is "old", nothing goes,
    // and the future hours are not touched.
    let past = (BASE_HOUR - 24) * HOUR_NS;
    assert!(sweep(root, &p, past, &locks).deleted.is_empty());
    assert_eq!(hours_of(root, Table::Flows).len(), before - 39);
}

#[test]
fn disk_budget_deletes_oldest_hours_first_across_tables() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    forty_days(root);
    let total = layout::dir_bytes(root);
    let now = (BASE_HOUR + 40 * 24) * HOUR_NS;
    let locks = HourLocks::default();
    let budget = total / 2;
    let r = sweep(root, &policy(730, Some(budget)), now, &locks);
    assert!(layout::dir_bytes(root) <= budget);
    assert!(r.over_budget_by.is_none());
    assert!(matches!(r.deleted[0].reason, Reason::Budget { budget: b, .. } if b == budget));
    // Oldest first: what is left is one contiguous run of the newest hours.
    let left = hours_of(root, Table::Flows);
    let deleted: Vec<i64> = r.deleted.iter().map(|d| d.hour - BASE_HOUR).collect();
    assert!(deleted.iter().max().unwrap() < left.iter().min().unwrap());
    assert_eq!(*left.last().unwrap(), 39 * 24 + 18);
}

#[test]
fn budget_smaller_than_one_hour_keeps_the_hour_being_written() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    forty_days(root);
    let newest = BASE_HOUR + 39 * 24 + 18;
    // The writer is in the newest hour (it holds it) and the clock is there.
    let locks = HourLocks::default();
    assert!(locks.try_claim((Table::Flows, newest), Holder::Writer));
    let r = sweep(root, &policy(730, Some(10)), newest * HOUR_NS + 60_000_000_000, &locks);
    assert_eq!(hours_of(root, Table::Flows), vec![newest - BASE_HOUR]);
    assert!(r.over_budget_by.is_some(), "reported, not hidden");
    assert_eq!(r.deleted.len(), 159);
    // Released, but still the current hour by the clock: still kept.
    locks.release((Table::Flows, newest));
    assert!(sweep(root, &policy(730, Some(10)), newest * HOUR_NS + 60_000_000_000, &locks).deleted.is_empty());
}

#[test]
fn busy_hours_are_skipped_until_free() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    forty_days(root);
    let locks = HourLocks::default();
    assert!(locks.try_claim((Table::Flows, BASE_HOUR), Holder::Compaction));
    let now = (BASE_HOUR + 40 * 24) * HOUR_NS;
    let r = sweep(root, &policy(30, None), now, &locks);
    assert_eq!(r.deleted.len(), 38);
    assert_eq!(r.busy, 1);
    assert_eq!(hours_of(root, Table::Flows)[0], 0);
    locks.release((Table::Flows, BASE_HOUR));
    assert_eq!(sweep(root, &policy(30, None), now, &locks).deleted.len(), 1);
}

#[test]
fn empty_partitions_and_interrupted_deletions_break_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    forty_days(&root);
    // An hour directory with no files, a stray non-partition directory, and
    // a half-deleted hour in .trash (a crash between rename and delete).
    let empty = layout::hour_dir(&root, Table::Flows, BASE_HOUR + 1);
    fs::create_dir_all(&empty).unwrap();
    fs::create_dir_all(root.join("flows/not-a-partition")).unwrap();
    let half = root.join(TRASH).join("flows-498192-1-0/");
    fs::create_dir_all(&half).unwrap();
    fs::write(half.join("part-00000.parquet"), b"not parquet at all").unwrap();
    rt().block_on(async {
        let hist = History::open(&root, wide_open()).await.unwrap();
        let n = count(&hist, "SELECT count(*) FROM flows WHERE ts >= TIMESTAMP '2026-11-01T00:00:00Z'").await;
        assert_eq!(n, 40 * 4 * 50);
    });
    let now = (BASE_HOUR + 40 * 24) * HOUR_NS;
    let r = sweep(&root, &policy(30, None), now, &HourLocks::default());
    assert!(r.errors.is_empty());
    assert!(r.deleted.iter().any(|d| d.hour == BASE_HOUR + 1 && d.bytes == 0), "the empty hour is aged out too");
    assert!(root.join("flows/not-a-partition").exists(), "only partitions are touched");
    // The next writer start clears the trash.
    drop(HourlyWriter::new(&root, WriterConfig::default()).unwrap());
    assert!(!half.exists());
}

#[test]
fn alerts_are_written_queried_and_read_by_an_outside_engine() {
    use tapstream_engine::alert::{Alert, AlertBuilder, AlertEvent, Category, Severity, Verdict};
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let t0 = (BASE_HOUR * HOUR_NS) as u64;
    let open = Alert {
        ts: t0 + 1_000_000_000,
        event: AlertEvent::Open,
        id: "A7".into(),
        rule: "syn_flood".into(),
        severity: Severity::High,
        category: Category::Flood,
        verdict: Verdict::Malicious,
        start_ts: t0 + 1_000_000_000,
        last_ts: t0 + 1_000_000_000,
        src_ips: vec!["198.51.100.7".into(), "198.51.100.8".into()],
        dst_ips: vec!["10.0.0.5".into()],
        ports: vec![80],
        countries: vec![],
        packets: 48_000,
        bytes: 2_880_000,
        flows: 47_500,
        rate: 48_000.0,
        rate_unit: "syn/s".into(),
        top_sources: vec!["198.51.100.7".into()],
        sample_flows: vec!["CHhAvVGS1DHFjwGM9".into()],
        explanation: "SYN rate to 10.0.0.5:80 is 48,000/s, 120x its 1-hour baseline".into(),
    };
    let mut b = AlertBuilder::default();
    b.push(&open);
    b.push(&Alert { ts: t0 + 2 * HOUR_NS as u64, event: AlertEvent::Close, ..open.clone() });
    let mut w = HourlyWriter::new(root, WriterConfig::default()).unwrap();
    w.write(Table::Alerts, &b.finish()).unwrap();
    w.close().unwrap();
    assert_eq!(layout::list_hours(root, Table::Alerts).len(), 2, "partitioned by the event's hour");
    let h = rt().block_on(History::open(root, wide_open())).unwrap();
    let n = rt().block_on(count(
        &h,
        "SELECT count(*) FROM alerts WHERE ts >= '2026-11-01T00:00:00Z' AND severity = 'high' \
         AND array_has(dst_ips, '10.0.0.5') AND event = 'close'",
    ));
    assert_eq!(n, 1);
    let script = "import sys, pyarrow.dataset as ds\n\
                  t = ds.dataset(sys.argv[1], format='parquet', partitioning='hive').to_table()\n\
                  print(t.num_rows, sorted(t['event'].to_pylist()), t['src_ips'].to_pylist()[0])";
    let o = std::process::Command::new("python3").arg("-c").arg(script).arg(root.join("alerts")).output().unwrap();
    assert!(o.status.success(), "pyarrow: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "2 ['close', 'open'] ['198.51.100.7', '198.51.100.8']");
}

#[test]
fn time_conditions_skip_whole_hour_directories() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let mut w = write_hours(root, WriterConfig::default(), BASE_HOUR, 3, 1000);
    w.close().unwrap();
    let hours = layout::list_hours(root, Table::Flows);
    assert_eq!(hours.len(), 3);
    // Break every file of the first hour: a query that opened it would fail.
    for f in layout::data_files(&hours[0].path) {
        fs::write(&f, b"not parquet").unwrap();
    }
    let h = rt().block_on(History::open(root, wide_open())).unwrap();
    let at = |hour: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp((BASE_HOUR + hour) * 3600).unwrap();
        format!("{:04}-{:02}-{:02}T{:02}:00:00Z", t.year(), t.month() as u8, t.day(), t.hour())
    };
    // Lower bounds, either side of the comparison, and through now() arithmetic.
    for q in [
        format!("SELECT count(*) FROM flows WHERE ts >= '{}'", at(1)),
        format!("SELECT count(*) FROM flows WHERE '{}' <= ts", at(1)),
        format!("SELECT count(*) FROM flows WHERE ts > '{}' AND resp_p > 0 OR false", at(1)),
        format!("SELECT count(*) FROM flows WHERE ts BETWEEN '{}' AND '{}'", at(1), at(5)),
    ] {
        let n = rt().block_on(count(&h, &q));
        assert!((1900..=2000).contains(&n), "{q}: {n}");
    }
    // An upper bound skips later hours: break the last one too.
    for f in layout::data_files(&hours[2].path) {
        fs::write(&f, b"not parquet").unwrap();
    }
    let q = format!("SELECT count(*) FROM flows WHERE ts >= '{}' AND ts < '{}'", at(1), at(2));
    assert_eq!(rt().block_on(count(&h, &q)), 1000);
    // The broken hours are really broken: reading them fails.
    let q = format!("SELECT count(*) FROM flows WHERE ts >= '{}'", at(0));
    let failed = rt().block_on(async {
        match h.query(&q).await {
            Err(_) => true,
            Ok(mut r) => {
                let mut bad = false;
                while let Some(b) = r.stream.next().await {
                    bad |= b.is_err();
                }
                bad
            }
        }
    });
    assert!(failed, "a query over the broken hour must fail");
}

/// A table written for the first time after the history was opened is
/// queried like any other (a server opened on a fresh data directory sees
/// the first DHCP or HTTP records when they arrive); before that it is an
/// empty table, not an error.
#[test]
fn a_table_written_after_opening_is_seen() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let h = rt().block_on(History::open(root, wide_open())).unwrap();
    let q = "SELECT count(*) FROM flows WHERE ts >= '2026-11-01T00:00:00Z'";
    assert_eq!(rt().block_on(count(&h, q)), 0, "no directory yet: empty");
    assert!(!root.join("flows").exists(), "opening creates nothing");
    let mut w = write_hours(root, small_parts(), BASE_HOUR, 2, 600);
    w.close().unwrap();
    assert_eq!(rt().block_on(count(&h, q)), 1200, "the same History sees the new table");
    assert_eq!(rt().block_on(count(&h, "SELECT count(*) FROM flows WHERE hour = '01'")), 600);
}

/// A bound on `ts` at the start of an hour is answered by the hour
/// directories alone (the scan neither decodes nor compares `ts`); every
/// other bound is still tested row by row. Rows on either side of the
/// boundaries, to the nanosecond, count as the condition says.
#[test]
fn hour_aligned_time_bounds_are_answered_by_the_partitions_exactly() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let h = (BASE_HOUR + 1) * HOUR_NS;
    let half = HOUR_NS / 2;
    let times = [h - HOUR_NS, h - 1, h, h + 1, h + half, h + HOUR_NS - 1, h + HOUR_NS, h + HOUR_NS + 1];
    let mut s = FlowSynth::new(3, BASE_HOUR * HOUR_NS, 100);
    let b = s.batch(times.len());
    let i = b.schema().index_of("ts").unwrap();
    let ts = TimestampNanosecondArray::from(times.to_vec()).with_data_type(b.schema().field(i).data_type().clone());
    let mut cols = b.columns().to_vec();
    cols[i] = std::sync::Arc::new(ts);
    let b = RecordBatch::try_new(b.schema(), cols).unwrap();
    let mut w = HourlyWriter::new(root, WriterConfig::default()).unwrap();
    w.write(Table::Flows, &b).unwrap();
    w.close().unwrap();
    let hist = rt().block_on(History::open(root, wide_open())).unwrap();
    let text = |ns: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond()
        )
    };
    let plan_of = |q: &str| plan_text(&hist, &format!("EXPLAIN {q}"));
    type Cond = fn(i64, i64) -> bool;
    let cases: [(&str, i64, Cond, bool); 9] = [
        (">=", h, |t, v| t >= v, true),
        ("<", h, |t, v| t < v, true),
        (">=", h + HOUR_NS, |t, v| t >= v, true),
        ("<", h + HOUR_NS, |t, v| t < v, true),
        (">", h, |t, v| t > v, false),
        ("<=", h, |t, v| t <= v, false),
        ("=", h, |t, v| t == v, false),
        (">=", h + half, |t, v| t >= v, false),
        ("<", h + 1, |t, v| t < v, false),
    ];
    for (op, v, cond, by_partition) in cases {
        let want = times.iter().filter(|t| cond(**t, v)).count() as i64;
        let q = format!("SELECT count(*) FROM flows WHERE ts {op} '{}'", text(v));
        assert_eq!(rt().block_on(count(&hist, &q)), want, "{q}");
        let q = format!(
            "SELECT count(*) FROM flows WHERE '{}' {} ts",
            text(v),
            match op {
                ">=" => "<=",
                "<" => ">",
                ">" => "<",
                "<=" => ">=",
                o => o,
            }
        );
        assert_eq!(rt().block_on(count(&hist, &q)), want, "{q}");
        let q = format!("SELECT orig_h FROM flows WHERE ts {op} '{}' AND resp_p >= 0", text(v));
        let plan = plan_of(&q);
        assert_eq!(
            !plan.contains("ts@"),
            by_partition,
            "{q}: ts tested per row only when the hours cannot answer it\n{plan}"
        );
    }
    // Together: one hour exactly.
    let q = format!("SELECT count(*) FROM flows WHERE ts >= '{}' AND ts < '{}'", text(h), text(h + HOUR_NS));
    assert_eq!(rt().block_on(count(&hist, &q)), 4);
}

/// The Parquet decoder tests a query's conditions (so the other columns
/// are decoded only for the rows kept) only when the query reads a column
/// the conditions do not test; a count over tested columns filters whole
/// decoded batches instead, which is cheaper. Both answer as a row-by-row
/// test does.
#[test]
fn conditions_are_tested_in_the_decoder_only_when_other_columns_are_read() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let mut s = FlowSynth::new(5, BASE_HOUR * HOUR_NS, 5_000);
    let b = s.batch(5_000);
    let ports = b.column(b.schema().index_of("resp_p").unwrap()).clone();
    let ports = ports.as_any().downcast_ref::<arrow::array::UInt16Array>().unwrap();
    let want = ports.iter().filter(|p| *p == Some(443)).count() as i64;
    assert!(want > 0 && want < 5_000, "{want}");
    let mut w = HourlyWriter::new(root, WriterConfig::default()).unwrap();
    w.write(Table::Flows, &b).unwrap();
    w.close().unwrap();
    let hist = rt().block_on(History::open(root, wide_open())).unwrap();
    let since = "2026-10-31T00:00:00Z";
    let counted = format!("SELECT count(*) FROM flows WHERE ts >= '{since}' AND resp_p = 443");
    let read = format!("SELECT count(uid) FROM flows WHERE ts >= '{since}' AND resp_p = 443");
    assert_eq!(rt().block_on(count(&hist, &counted)), want);
    assert_eq!(rt().block_on(count(&hist, &read)), want);
    let plan = plan_text(&hist, &format!("EXPLAIN {counted}"));
    assert!(plan.contains("FilterExec: resp_p@"), "tested on decoded batches:\n{plan}");
    let plan = plan_text(&hist, &format!("EXPLAIN {read}"));
    assert!(!plan.contains("FilterExec"), "tested in the decoder:\n{plan}");
    assert!(plan.contains("predicate=resp_p@"), "{plan}");
}

/// Every column chunk of a Parquet file: (compression, has a bloom filter).
fn chunks(path: &Path) -> Vec<(parquet::basic::Compression, bool)> {
    use parquet::file::reader::FileReader;
    let r = parquet::file::reader::SerializedFileReader::new(fs::File::open(path).unwrap()).unwrap();
    let md = r.metadata();
    md.row_groups()
        .iter()
        .flat_map(|rg| rg.columns().iter().map(|c| (c.compression(), c.bloom_filter_offset().is_some())))
        .collect()
}

#[test]
fn parts_are_written_to_be_read_back_soon_and_compacted_files_to_be_kept() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // One hour, still open (no record past its end): parts only.
    let mut w = write_hours(root, small_parts(), BASE_HOUR, 1, 3000);
    let hour = layout::hour_dir(root, Table::Flows, BASE_HOUR);
    let parts = layout::data_files(&hour);
    assert!(parts.len() >= 4, "parts of 700 rows: {parts:?}");
    for p in &parts {
        let c = chunks(p);
        assert!(!c.is_empty());
        assert!(c.iter().all(|&(z, _)| z == parquet::basic::Compression::LZ4_RAW), "{p:?}: {c:?}");
        assert!(c.iter().all(|&(_, bloom)| !bloom), "{p:?}: no bloom filters in a part");
    }
    w.close().unwrap();
    assert_eq!(count_files(&hour), (1, 1));
    let c = chunks(&layout::data_files(&hour)[0]);
    assert!(c.iter().all(|&(z, _)| matches!(z, parquet::basic::Compression::ZSTD(_))), "{c:?}");
    assert!(c.iter().any(|&(_, bloom)| bloom), "the compacted file has its bloom filters");
}

/// A file's rows in order, its row groups' sizes and its footer's
/// per-row-group sort declarations and bloom filter columns.
fn file_layout(path: &Path) -> (RecordBatch, Vec<i64>, Vec<String>) {
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(
        fs::File::open(path).unwrap(),
        parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required),
    )
    .unwrap();
    let md = b.metadata().clone();
    assert!(md.column_index().is_some() && md.offset_index().is_some(), "page index written: {}", path.display());
    let schema = b.schema().clone();
    let batches: Vec<RecordBatch> = b.build().unwrap().map(|b| b.unwrap()).collect();
    let groups = md.row_groups().iter().map(|g| g.num_rows()).collect();
    let descr = md.file_metadata().schema_descr();
    let footer = md
        .row_groups()
        .iter()
        .map(|g| {
            let bloom: Vec<String> = (0..descr.num_columns())
                .filter(|i| g.column(*i).bloom_filter_offset().is_some())
                .map(|i| descr.column(i).name().to_string())
                .collect();
            format!("sorted {:?} bloom {bloom:?} codec {:?}", g.sorting_columns(), g.column(0).compression())
        })
        .collect();
    (arrow::compute::concat_batches(&schema, &batches).unwrap(), groups, footer)
}

/// Every table's hours of `per_hour` rows, written in batches of 250 with
/// `cfg`; (the writer's stats, each hour directory's files).
fn write_all_tables(
    root: &Path,
    cfg: WriterConfig,
    hours: i64,
    per_hour: usize,
) -> (tapstream_query::WriterStats, Vec<(Table, i64, Vec<std::path::PathBuf>)>) {
    let mut w = write_hours(root, cfg, BASE_HOUR, hours, per_hour as u64);
    for t in Table::ALL.into_iter().filter(|t| *t != Table::Flows) {
        for h in 0..hours {
            for _ in 0..per_hour / 250 {
                w.write(t, &rows_of(t, BASE_HOUR + h, 250)).unwrap();
            }
        }
    }
    w.close().unwrap();
    let mut dirs = Vec::new();
    for t in Table::ALL {
        for h in 0..hours {
            dirs.push((t, h, layout::data_files(&layout::hour_dir(root, t, BASE_HOUR + h))));
        }
    }
    (w.stats.clone(), dirs)
}

#[test]
fn an_hour_held_until_close_is_written_once_as_compaction_would_write_it() {
    // The same rows, streamed into part files that are then compacted, and
    // held in memory until close and written once: the same file, row for
    // row, row group for row group, footer for footer.
    let cfg = WriterConfig { row_group_rows: 512, page_rows: 128, ..WriterConfig::default() };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (streamed, streamed_files) = write_all_tables(a.path(), cfg.clone().streaming(), 2, 3000);
    let (held, held_files) = write_all_tables(b.path(), cfg, 2, 3000);
    assert_eq!(streamed.rows, held.rows);
    let hours = 2 * Table::COUNT as u64;
    // Streamed: batches of 250 rows in parts, then one merge per hour.
    assert_eq!((streamed.compactions, streamed.compaction_errors), (hours, 0));
    assert_eq!(streamed.files, hours, "one part file per hour before its merge");
    assert_eq!(streamed.held_hours, 0);
    // Held: each hour's one file written straight, and no part file ever.
    assert_eq!((held.compactions, held.compaction_errors), (hours, 0));
    assert_eq!((held.files, held.held_hours), (hours, hours));
    let on_disk: u64 = held_files.iter().flat_map(|(_, _, f)| f).map(|f| fs::metadata(f).unwrap().len()).sum();
    assert_eq!(held.bytes, on_disk, "what was written is what is on disk: the compacted files");
    for ((t, h, s), (_, _, hf)) in streamed_files.iter().zip(&held_files) {
        assert_eq!((s.len(), hf.len()), (1, 1), "{} hour {h}: one file each", t.name());
        assert!(hf[0].file_name().unwrap().to_str().unwrap().starts_with(COMPACT_PREFIX));
        let (s_rows, s_groups, s_footer) = file_layout(&s[0]);
        let (h_rows, h_groups, h_footer) = file_layout(&hf[0]);
        assert_eq!(h_rows.num_rows(), 3000, "{} hour {h}", t.name());
        assert_eq!(s_groups, h_groups, "{} hour {h}: row groups", t.name());
        assert_eq!(s_footer, h_footer, "{} hour {h}: footers", t.name());
        assert_eq!(s_rows, h_rows, "{} hour {h}: rows in the same order", t.name());
        if *t == Table::Flows {
            assert!(h_groups.len() >= 6, "flows hours are cut in time slices: {h_groups:?}");
        }
    }
}

#[test]
fn held_rows_over_the_budget_stream_into_a_part_and_the_hour_is_merged() {
    // A budget of a few batches: hours that outgrow it stream into part
    // files, which are merged as usual; the end is the same.
    let cfg = WriterConfig { row_group_rows: 512, page_rows: 128, ..WriterConfig::default() };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one_batch = FlowSynth::new(7, BASE_HOUR * HOUR_NS, 3000).batch(250).get_array_memory_size();
    let tight = WriterConfig { hold_bytes: 4 * one_batch, ..cfg.clone() };
    let (held, held_files) = write_all_tables(a.path(), tight, 1, 3000);
    let (_, streamed_files) = write_all_tables(b.path(), cfg.streaming(), 1, 3000);
    assert_eq!(held.compaction_errors, 0);
    // Some hours outgrew the budget (the flows hour, the first written,
    // at its fifth batch) and went through part files; some stayed held.
    assert!((1..Table::COUNT as u64).contains(&held.held_hours), "{held:?}");
    for ((t, _, s), (_, _, hf)) in streamed_files.iter().zip(&held_files) {
        assert_eq!(count_files(hf[0].parent().unwrap()), (1, 1), "{}", t.name());
        assert_eq!(file_layout(&s[0]).0, file_layout(&hf[0]).0, "{}: same rows, same order", t.name());
    }
}

#[test]
fn held_rows_are_committed_at_the_flush_age_like_a_part() {
    // Holding changes when rows are encoded, never when they are committed.
    let d = tempfile::tempdir().unwrap();
    let cfg = WriterConfig { max_file_age: Duration::ZERO, ..WriterConfig::default() };
    let mut w = HourlyWriter::new(d.path(), cfg).unwrap();
    let mut s = FlowSynth::new(7, BASE_HOUR * HOUR_NS, 3000);
    w.write(Table::Flows, &s.batch(100)).unwrap();
    let dir = layout::hour_dir(d.path(), Table::Flows, BASE_HOUR);
    assert_eq!(count_files(&dir), (1, 0), "a part file, visible before close");
    assert_eq!(parquet_rows(&layout::data_files(&dir)[0]).unwrap(), 100);
    // The row cap too.
    let d2 = tempfile::tempdir().unwrap();
    let mut w2 =
        HourlyWriter::new(d2.path(), WriterConfig { max_rows_per_file: 150, ..WriterConfig::default() }).unwrap();
    w2.write(Table::Flows, &s.batch(100)).unwrap();
    let dir2 = layout::hour_dir(d2.path(), Table::Flows, BASE_HOUR);
    assert_eq!(count_files(&dir2), (0, 0), "held, as an open part file is unseen");
    w2.write(Table::Flows, &s.batch(100)).unwrap();
    assert_eq!(count_files(&dir2), (1, 0), "committed at the row cap");
    w.close().unwrap();
    w2.close().unwrap();
    assert_eq!(count_files(&dir), (1, 1));
    assert_eq!(count_files(&dir2), (1, 1));
    assert_eq!(parquet_rows(&layout::data_files(&dir2)[0]).unwrap(), 200);
}

#[test]
fn held_rows_an_hour_already_has_files_for_are_merged_with_them() {
    // A second ingest into an hour that has its compacted file: the held
    // rows become a part and the hour is merged again, nothing doubled.
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let hour = one_compacted_hour(root, 512, 1000);
    let mut w = HourlyWriter::new(root, WriterConfig::default()).unwrap();
    let mut s = FlowSynth::new(8, BASE_HOUR * HOUR_NS + 1, 1000);
    w.write(Table::Flows, &s.batch(400)).unwrap();
    w.close().unwrap();
    assert_eq!(count_files(&hour), (1, 1));
    assert_eq!(parquet_rows(&layout::data_files(&hour)[0]).unwrap(), 1400);
    assert_eq!((w.stats.compactions, w.stats.compaction_errors, w.stats.files, w.stats.held_hours), (1, 0, 1, 0));
}

#[test]
fn held_rows_that_cannot_be_written_compacted_are_kept_in_a_part_file() {
    // Rows without the table's columns cannot be sorted by its key: the
    // failure is counted and the rows land in a part file, none lost.
    let d = tempfile::tempdir().unwrap();
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new(
            "ts",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        arrow::datatypes::Field::new("v", DataType::Int64, false),
    ]));
    let t0 = BASE_HOUR * HOUR_NS;
    let ts = TimestampNanosecondArray::from(vec![t0 + 5, t0 + 1, t0 + 3]).with_timezone("UTC");
    let b = RecordBatch::try_new(
        schema,
        vec![std::sync::Arc::new(ts), std::sync::Arc::new(Int64Array::from(vec![1, 2, 3]))],
    )
    .unwrap();
    let mut w = HourlyWriter::new(d.path(), WriterConfig::default()).unwrap();
    w.write(Table::Flows, &b).unwrap();
    w.close().unwrap();
    assert_eq!((w.stats.compactions, w.stats.compaction_errors, w.stats.files), (0, 1, 1));
    let dir = layout::hour_dir(d.path(), Table::Flows, BASE_HOUR);
    assert_eq!(count_files(&dir), (1, 0), "a part file");
    let (rows, _, _) = file_layout(&layout::data_files(&dir)[0]);
    let v = rows.column_by_name("v").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(v.values(), &[2, 3, 1], "every row, sorted by ts as parts are");
    assert!(
        !d.path().join(layout::STAGING).exists()
            || fs::read_dir(d.path().join(layout::STAGING)).unwrap().next().is_none()
    );
}

#[test]
fn held_rows_whose_sorted_file_cannot_be_staged_are_kept_in_a_part_file() {
    // The rows are sorted in one batch when the staging area turns out to
    // be unusable (here a plain file where its directory belongs): that
    // batch is written as a part file, nothing lost.
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join(layout::STAGING), b"not a directory").unwrap();
    let mut w = HourlyWriter::new(d.path(), WriterConfig::default()).unwrap();
    let mut s = FlowSynth::new(7, BASE_HOUR * HOUR_NS, 3000);
    let rows = s.batch(700);
    w.write(Table::Flows, &rows.slice(0, 300)).unwrap();
    w.write(Table::Flows, &rows.slice(300, 400)).unwrap();
    w.close().unwrap();
    assert_eq!((w.stats.compactions, w.stats.compaction_errors, w.stats.files, w.stats.held_hours), (0, 1, 1, 0));
    let dir = layout::hour_dir(d.path(), Table::Flows, BASE_HOUR);
    assert_eq!(count_files(&dir), (1, 0), "a part file");
    let (kept, _, _) = file_layout(&layout::data_files(&dir)[0]);
    let ts = |b: &RecordBatch| {
        let mut v = b
            .column_by_name("ts")
            .unwrap()
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap()
            .values()
            .to_vec();
        v.sort_unstable();
        v
    };
    assert_eq!(ts(&kept), ts(&rows), "every row");
}
