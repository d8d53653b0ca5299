//! Derived flow columns: `community_id`, `duration` and `flow_start` are
//! null on disk where they follow from other columns, filled in by SQL,
//! and files that store them (the earlier layout, imports with their own
//! values) keep their values, also through compaction.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt16Array,
};
use arrow::datatypes::{Float64Type, Schema, TimestampNanosecondType, UInt8Type, UInt16Type};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tapstream_engine::derived::{SEED_COLUMN, community_id_of};
use tapstream_engine::records::Table;
use tapstream_query::compact::Compactor;
use tapstream_query::layout::{self, HOUR_NS};
use tapstream_query::synth::FlowSynth;
use tapstream_query::{Guardrails, History, HourlyWriter, WriterConfig};

/// 2026-11-01 00:00 UTC in hours since the epoch.
const BASE_HOUR: i64 = 498_192;
const ALL: &str = "ts >= TIMESTAMP '2026-11-01T00:00:00Z'";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn query(root: &Path, sql: &str) -> Vec<RecordBatch> {
    rt().block_on(async {
        let h = History::open(root, Guardrails { max_rows: None, ..Guardrails::default() }).await.unwrap();
        let mut r = h.query(sql).await.unwrap();
        let mut out = Vec::new();
        while let Some(b) = r.stream.next().await {
            out.push(b.unwrap());
        }
        out
    })
}

fn read_files(dir: &Path) -> Vec<RecordBatch> {
    layout::data_files(dir)
        .iter()
        .flat_map(|f| ParquetRecordBatchReaderBuilder::try_new(fs::File::open(f).unwrap()).unwrap().build().unwrap())
        .map(Result::unwrap)
        .collect()
}

fn strs(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = arrow::compute::cast(b.column_by_name(name).unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
    c.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
}

#[test]
fn derivable_columns_are_null_on_disk_and_filled_in_by_sql() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let mut w = HourlyWriter::new(root, WriterConfig::default()).unwrap();
    let mut s = FlowSynth::new(3, BASE_HOUR * HOUR_NS, 2000);
    w.write(Table::Flows, &s.batch(3000)).unwrap();
    w.close().unwrap();

    // On disk: the three columns are null, the seed is there.
    let stored = read_files(&layout::hour_dir(root, Table::Flows, BASE_HOUR));
    let rows: usize = stored.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2000, "the first hour");
    for b in &stored {
        for c in ["community_id", "duration", "flow_start"] {
            assert_eq!(b.column_by_name(c).unwrap().null_count(), b.num_rows(), "{c} stored as null");
        }
        assert_eq!(b.column_by_name(SEED_COLUMN).unwrap().null_count(), 0);
    }

    // Through SQL: filled in, equal to the derivations, the seed hidden.
    let q = format!(
        "SELECT community_id, orig_h, orig_p, resp_h, resp_p, ip_proto, duration, ts, last_ts, flow_start FROM flows WHERE {ALL}"
    );
    let out = query(root, &q);
    let mut n = 0;
    let mut some_id = String::new();
    for b in &out {
        let ids = strs(b, "community_id");
        let (oh, rh) = (strs(b, "orig_h"), strs(b, "resp_h"));
        let (op, rp) = (b.column(2).as_primitive::<UInt16Type>(), b.column(4).as_primitive::<UInt16Type>());
        let proto = b.column(5).as_primitive::<UInt8Type>();
        let dur = b.column(6).as_primitive::<Float64Type>();
        let (ts, last, start) = (
            b.column(7).as_primitive::<TimestampNanosecondType>(),
            b.column(8).as_primitive::<TimestampNanosecondType>(),
            b.column(9).as_primitive::<TimestampNanosecondType>(),
        );
        for i in 0..b.num_rows() {
            let want = community_id_of(
                0,
                proto.value(i),
                oh[i].as_deref().unwrap(),
                op.value(i),
                rh[i].as_deref().unwrap(),
                rp.value(i),
            );
            assert_eq!(ids[i], want);
            assert_eq!(dur.value(i), (last.value(i) - ts.value(i)) as f64 / 1e9);
            assert!(dur.is_valid(i) && start.is_valid(i));
            assert_eq!(start.value(i), ts.value(i));
            some_id = want.unwrap();
            n += 1;
        }
    }
    assert_eq!(n, 3000);
    // Conditions on derived columns are tested on the derived values.
    let one = query(root, &format!("SELECT orig_h FROM flows WHERE {ALL} AND community_id = '{some_id}'"));
    assert!(one.iter().map(|b| b.num_rows()).sum::<usize>() >= 1);
    let nulls = query(
        root,
        &format!(
            "SELECT count(*) FROM flows WHERE {ALL} AND (community_id IS NULL OR duration IS NULL OR flow_start IS NULL)"
        ),
    );
    assert_eq!(nulls[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), 0);
    let long = query(root, &format!("SELECT count(*) FROM flows WHERE {ALL} AND duration > 0"));
    assert!(long[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0) > 0);
    let all = query(root, &format!("SELECT * FROM flows WHERE {ALL} LIMIT 3"));
    assert!(all[0].schema().index_of(SEED_COLUMN).is_err(), "the seed is not a column of the table");
    assert!(all[0].schema().index_of("community_id").is_ok());
    let cols = query(
        root,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'flows' AND column_name LIKE 'community%'",
    );
    assert_eq!(strs(&cols[0], "column_name"), [Some("community_id".to_string())]);
}

/// A flows file of the earlier layout: every column stored, no seed column.
fn earlier_layout(rows: &RecordBatch) -> RecordBatch {
    let stored = rows.schema();
    let n = rows.num_rows();
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in stored.fields().iter().zip(rows.columns()) {
        let col: ArrayRef = match f.name().as_str() {
            SEED_COLUMN => continue,
            "community_id" => Arc::new(StringArray::from(vec!["1:stored"; n])),
            "duration" => Arc::new(Float64Array::from(vec![9.0; n])),
            "flow_start" => {
                let ts = rows.column_by_name("ts").unwrap().as_primitive::<TimestampNanosecondType>();
                Arc::new(ts.iter().map(|t| t.map(|t| t - 1)).collect::<TimestampNanosecondArray>().with_timezone("UTC"))
            }
            _ => c.clone(),
        };
        fields.push(f.as_ref().clone());
        cols.push(col);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

#[test]
fn stored_values_of_earlier_files_are_kept_through_compaction() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let mut s = FlowSynth::new(5, BASE_HOUR * HOUR_NS, 1000);
    let old = earlier_layout(&s.batch(300));
    let new = s.batch(200);
    let dir = layout::hour_dir(root, Table::Flows, BASE_HOUR);
    fs::create_dir_all(&dir).unwrap();
    let mut w =
        ArrowWriter::try_new(fs::File::create(dir.join("part-00000.parquet")).unwrap(), old.schema(), None).unwrap();
    w.write(&old).unwrap();
    w.close().unwrap();
    let mut w =
        ArrowWriter::try_new(fs::File::create(dir.join("part-00001.parquet")).unwrap(), new.schema(), None).unwrap();
    w.write(&new).unwrap();
    w.close().unwrap();

    let check = |when: &str| {
        let q = format!(
            "SELECT community_id, duration, flow_start = ts - INTERVAL '1 nanosecond' AS earlier FROM flows WHERE {ALL}"
        );
        let (mut stored, mut derived) = (0, 0);
        for b in query(root, &q) {
            let ids = strs(&b, "community_id");
            let dur = b.column(1).as_primitive::<Float64Type>();
            let earlier = b.column(2).as_boolean();
            for i in 0..b.num_rows() {
                if ids[i].as_deref() == Some("1:stored") {
                    assert_eq!(dur.value(i), 9.0, "{when}");
                    assert!(earlier.value(i), "{when}: stored flow_start kept");
                    stored += 1;
                } else {
                    assert!(ids[i].as_deref().is_some_and(|v| v.starts_with("1:") && v.len() == 30), "{when}: {ids:?}");
                    assert!(!earlier.value(i));
                    derived += 1;
                }
            }
        }
        assert_eq!((stored, derived), (300, 200), "{when}");
    };
    check("before compaction");
    let c = Compactor::new(root, WriterConfig::default()).unwrap();
    let done = c.compact(Table::Flows, BASE_HOUR).unwrap().expect("two parts merged");
    assert_eq!((done.files_in, done.rows), (2, 500));
    check("after compaction");
    // The merged file holds the stored values, and nulls where derivable.
    let merged = read_files(&dir);
    let ids: usize = merged.iter().map(|b| b.num_rows() - b.column_by_name("community_id").unwrap().null_count()).sum();
    assert_eq!(ids, 300);
    let seeds: usize = merged
        .iter()
        .map(|b| b.column_by_name(SEED_COLUMN).unwrap().as_any().downcast_ref::<UInt16Array>().unwrap().null_count())
        .sum();
    assert_eq!(seeds, 300, "rows of the earlier layout have no seed");
}

#[test]
fn imported_values_that_differ_from_the_derivation_are_kept() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let csv = "ts,last_ts,orig_h,orig_p,resp_h,resp_p,proto,community_id,duration,flow_start\n\
               2026-11-01T00:00:01Z,2026-11-01T00:00:03Z,10.0.0.1,1234,10.0.0.2,80,tcp,1:fromzeek=,5.5,2026-10-31T23:59:00Z\n\
               2026-11-01T00:00:02Z,2026-11-01T00:00:04Z,10.0.0.1,1235,10.0.0.2,80,tcp,,,\n";
    let mut w = HourlyWriter::new(root, WriterConfig::default()).unwrap();
    let r = tapstream_query::import::import_flows_csv(csv.as_bytes(), &mut w, false).unwrap();
    assert_eq!(r.rows, 2);
    w.close().unwrap();
    let out = query(
        root,
        &format!(
            "SELECT orig_p, community_id, duration, flow_start = ts AS starts_at_ts FROM flows WHERE {ALL} ORDER BY orig_p"
        ),
    );
    let b = &out[0];
    let ids = strs(b, "community_id");
    let dur = b.column(2).as_primitive::<Float64Type>();
    let at_ts = b.column(3).as_boolean();
    // Kept as given.
    assert_eq!(ids[0].as_deref(), Some("1:fromzeek="));
    assert_eq!(dur.value(0), 5.5);
    assert!(!at_ts.value(0));
    // Derived, and nothing stored for them.
    assert_eq!(ids[1], community_id_of(0, 6, "10.0.0.1", 1235, "10.0.0.2", 80));
    assert_eq!(dur.value(1), 2.0);
    assert!(at_ts.value(1));
    let stored = read_files(&layout::hour_dir(root, Table::Flows, BASE_HOUR));
    let held: usize =
        stored.iter().map(|b| b.num_rows() - b.column_by_name("community_id").unwrap().null_count()).sum();
    assert_eq!(held, 1, "only the differing Community ID is stored");
}
