//! Compaction: an hour's part files become one sorted file: row groups in
//! time order, each one sorted by the originator address and then `ts`
//! (see [`sort_key`] and [`TimeSlices`]).
//!
//! The sort runs in DataFusion with a spilling memory pool, so an hour of
//! any size is merged in bounded memory. The merged file is written under
//! `.staging`, checked (same row count as the parts), and swapped in for
//! the whole hour directory in one `renameat2(RENAME_EXCHANGE)`; the parts
//! then leave with the staging directory. A query listing the hour sees
//! the parts or the merged file, never both, never neither; one already
//! reading the parts keeps its open descriptors (see `store`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{SortOptions, take_record_batch};
use arrow::datatypes::{DataType, TimestampNanosecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext, cast, col, lit};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::SortingColumn;
use tapstream_engine::records::Table;

use crate::layout::{self, HOUR_NS, STAGING};
use crate::writer::{WriterConfig, WriterError, writer_props};

/// Prefix of merged files (parts are `part-NNNNN.parquet`).
pub const COMPACT_PREFIX: &str = "compact-";

/// What one compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    pub files_in: usize,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The order each row group of a compacted hour is written in: the
/// originator address and then time, for tables that have one; time alone
/// for the others. One address's rows then sit together in a few pages of
/// each row group, so a lookup of a host or a network (`orig_h = …`,
/// `cidr_contains(…, orig_h)`) decodes those pages and the page index skips
/// the rest; the row groups themselves follow each other in time
/// ([`TimeSlices`]), so a time condition inside the hour skips whole row
/// groups by their `ts` statistics.
pub fn sort_key(table: Table) -> Vec<&'static str> {
    let schema = table.schema();
    ["orig_h", "ts"].into_iter().filter(|c| schema.index_of(c).is_ok()).collect()
}

/// The time slices a compacted hour is written in, one after the other:
/// about one per `row_group_rows` rows the hour holds, each an equal
/// division of the hour (a whole number of seconds that divides it, so a
/// slice never straddles two hours). A slice's rows are flushed as row
/// groups of their own (more than one when a burst fills a slice past
/// `row_group_rows`), so every row group's `ts` statistics cover its slice
/// at most: `ts >= '…:40:00'` reads the row groups from 40 minutes on.
/// Within a slice rows are sorted by [`sort_key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSlices {
    /// A slice's length in nanoseconds.
    pub width_ns: i64,
}

impl TimeSlices {
    /// Slices for an hour of `rows` rows written in row groups of at most
    /// `row_group_rows`: the fewest equal slices (a divisor of 3600 s) that
    /// are at least `rows / row_group_rows` in number.
    pub fn for_hour(rows: u64, row_group_rows: usize) -> TimeSlices {
        let want = rows.div_ceil(row_group_rows.max(1) as u64).clamp(1, 3600);
        let n = (want..=3600).find(|n| 3600 % n == 0).unwrap_or(3600);
        TimeSlices { width_ns: HOUR_NS / n as i64 }
    }

    /// How many slices an hour has.
    pub fn count(self) -> i64 {
        HOUR_NS / self.width_ns
    }

    /// The slice `ts` falls in, numbered from the epoch (truncating toward
    /// zero, as the sort's `ts / width` does).
    pub fn of(self, ts: i64) -> i64 {
        ts / self.width_ns
    }
}

/// Whether an hour's files need merging: more than one file, or one part
/// that was never sorted.
pub fn needs_compaction(dir: &Path) -> bool {
    let files = layout::data_files(dir);
    match files.as_slice() {
        [] => false,
        [one] => !one.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(COMPACT_PREFIX)),
        _ => true,
    }
}

/// The merging side: a DataFusion session with a spilling pool.
pub struct Compactor {
    pub(crate) root: PathBuf,
    pub(crate) cfg: WriterConfig,
    pub(crate) ctx: SessionContext,
    pub(crate) rt: tokio::runtime::Runtime,
}

impl Compactor {
    pub fn new(root: &Path, cfg: WriterConfig) -> Result<Compactor, WriterError> {
        let runtime = Compactor::runtime(&cfg)?;
        Compactor::with_runtime(root, cfg, runtime)
    }

    /// The spilling runtime of `cfg.compaction_memory_bytes`. Compactors
    /// that share one divide that budget fairly between the sorts running
    /// at once (one running alone may use all of it).
    pub fn runtime(cfg: &WriterConfig) -> Result<Arc<RuntimeEnv>, WriterError> {
        RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(cfg.compaction_memory_bytes)))
            .with_object_list_cache_limit(0)
            .build_arc()
            .map_err(|e| WriterError::Compaction(e.to_string()))
    }

    /// A compactor whose sorts draw on `runtime`'s memory pool.
    pub fn with_runtime(root: &Path, cfg: WriterConfig, runtime: Arc<RuntimeEnv>) -> Result<Compactor, WriterError> {
        // One sort over all inputs, not a sort per input merged: DataFusion
        // 55 computes no order for a union of the host index's 48 sorted
        // inputs and then refuses its own merge plan (SanityCheckPlan).
        // No statistics gathered from the inputs, and so no order taken from
        // their footers: DataFusion 55 reads a file's order from its first
        // row group's `sorting_columns`, and a compacted hour cut in time
        // slices declares (`orig_h`, `ts`) per row group, not for the file.
        // Trusted, a sort by `orig_h` became a merge of unsorted inputs.
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .set_bool("datafusion.optimizer.repartition_sorts", false)
            .set_bool("datafusion.execution.collect_statistics", false);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| WriterError::Io { path: root.into(), source: e })?;
        Ok(Compactor { root: root.into(), cfg, ctx, rt })
    }

    /// Merge the hour `hour` of `table`. The caller guarantees that nothing
    /// else writes or deletes this hour meanwhile.
    pub fn compact(&self, table: Table, hour: i64) -> Result<Option<Compacted>, WriterError> {
        let live = layout::hour_dir(&self.root, table, hour);
        if !needs_compaction(&live) {
            return Ok(None);
        }
        let parts = layout::data_files(&live);
        let bytes_in: u64 = parts.iter().map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
        let rows_in: u64 = parts.iter().map(|p| parquet_rows(p)).sum::<Result<u64, _>>()?;
        let staging = layout::scratch(&self.root, STAGING, table, hour).map_err(|e| io(&self.root, e))?;
        fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
        let slices = TimeSlices::for_hour(rows_in, self.cfg.row_group_rows);
        let result = self.merge_into(table, &parts, &staging, slices);
        let (name, rows_out, bytes_out) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        if rows_out != rows_in || layout::data_files(&live) != parts {
            let _ = fs::remove_dir_all(&staging);
            return Err(WriterError::Compaction(format!(
                "{}: merged {rows_out} rows from {rows_in}, or the hour changed meanwhile; parts kept",
                live.display()
            )));
        }
        layout::sync_dir(&staging);
        layout::exchange(&staging, &live).map_err(|e| io(&live, e))?;
        if let Some(p) = live.parent() {
            layout::sync_dir(p);
        }
        let _ = fs::remove_dir_all(&staging);
        tracing::debug!(dir = %live.display(), file = name, parts = parts.len(), rows = rows_out, bytes_in, bytes_out, "compacted hour");
        Ok(Some(Compacted { files_in: parts.len(), rows: rows_out, bytes_in, bytes_out }))
    }

    fn merge_into(
        &self,
        table: Table,
        parts: &[PathBuf],
        staging: &Path,
        slices: TimeSlices,
    ) -> Result<(String, u64, u64), WriterError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let name = format!("{COMPACT_PREFIX}{now}.parquet");
        let tmp = staging.join(format!(".{name}.tmp"));
        let schema = table.schema();
        let ts_at = schema.index_of("ts").map_err(|_| WriterError::NoTs(table.name()))?;
        let key = sort_key(table);
        // Sorted by time alone, the file's row groups already follow each
        // other in time: slices only matter under another key.
        let sliced = key != ["ts"] && slices.count() > 1;
        let props = writer_props(table, &self.cfg, Some(sorting_columns(&schema, &key)));
        let f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        let mut w = ArrowWriter::try_new(f, schema.clone(), Some(props))
            .map_err(|e| WriterError::Parquet { path: tmp.clone(), source: e })?;
        let paths: Vec<String> = parts.iter().map(|p| p.display().to_string()).collect();
        let rows = self.rt.block_on(async {
            let opts = ParquetReadOptions::default().schema(&schema);
            let df = self.ctx.read_parquet(paths, opts).await.map_err(df_err)?;
            let mut order: Vec<_> = key.iter().map(|c| col(*c).sort(true, false)).collect();
            if sliced {
                let slice = cast(col("ts"), DataType::Int64) / lit(slices.width_ns);
                order.insert(0, slice.sort(true, false));
            }
            let df = df.sort(order).map_err(df_err)?;
            let mut stream = df.execute_stream().await.map_err(df_err)?;
            let mut rows = 0u64;
            let mut cut = SliceCut { slices: sliced.then_some(slices), ts_at, current: None };
            while let Some(b) = stream.next().await {
                let b: RecordBatch = b.map_err(df_err)?;
                rows += b.num_rows() as u64;
                cut.write(&mut w, &b).map_err(|e| WriterError::Parquet { path: tmp.clone(), source: e })?;
            }
            Ok::<_, WriterError>(rows)
        })?;
        let bytes = finish(w, &tmp)?;
        let dst = staging.join(&name);
        fs::rename(&tmp, &dst).map_err(|e| io(&dst, e))?;
        Ok((name, rows, bytes))
    }

    /// Write an hour that has no file yet as its one compacted file, from
    /// rows held in memory (at most the writer's `hold_bytes`): sorted here
    /// exactly as [`Compactor::compact`] sorts parts, without writing them
    /// as parts and reading them back. The file is made under `.staging`
    /// and renamed into the hour directory, so it appears whole. The caller
    /// guarantees that nothing else writes or deletes this hour meanwhile.
    /// The rows are in memory about twice at most (the held batches give way
    /// to one batch, then to it sorted); on error they are given back.
    pub fn write_sorted(
        &self,
        table: Table,
        hour: i64,
        batches: Vec<RecordBatch>,
    ) -> Result<Compacted, (WriterError, Vec<RecordBatch>)> {
        let schema = table.schema();
        if let Some(b) = batches.iter().find(|b| b.schema().fields() != schema.fields()) {
            let e = WriterError::Compaction(format!(
                "rows held for {} do not have its columns: {:?}",
                table.name(),
                b.schema().fields().iter().map(|f| f.name()).collect::<Vec<_>>()
            ));
            return Err((e, batches));
        }
        let all = match arrow::compute::concat_batches(&schema, &batches) {
            Ok(a) => a,
            Err(e) => return Err((e.into(), batches)),
        };
        drop(batches);
        let (sorted, slices) = match self.sort_hour(table, &all) {
            Ok(v) => v,
            Err(e) => return Err((e, vec![all])),
        };
        drop(all);
        let staging = match layout::scratch(&self.root, STAGING, table, hour) {
            Ok(s) => s,
            Err(e) => return Err((io(&self.root, e), vec![sorted])),
        };
        let r = self.write_staged(table, hour, &sorted, slices, &staging);
        let _ = fs::remove_dir_all(&staging);
        match r {
            Ok(bytes) => Ok(Compacted { files_in: 0, rows: sorted.num_rows() as u64, bytes_in: 0, bytes_out: bytes }),
            Err(e) => Err((e, vec![sorted])),
        }
    }

    /// An hour's rows in the order a compacted file holds them (and the
    /// time slices its row groups are cut at, if it is cut).
    fn sort_hour(&self, table: Table, all: &RecordBatch) -> Result<(RecordBatch, Option<TimeSlices>), WriterError> {
        let schema = table.schema();
        let rows = all.num_rows();
        let ts_at = schema.index_of("ts").map_err(|_| WriterError::NoTs(table.name()))?;
        let key = sort_key(table);
        let slices = TimeSlices::for_hour(rows as u64, self.cfg.row_group_rows);
        let sliced = key != ["ts"] && slices.count() > 1;
        // The sort key as rows of bytes that compare as the columns do
        // (ascending, nulls last, as the merge of parts sorts).
        let ts = all.column(ts_at).as_primitive::<TimestampNanosecondType>();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(key.len() + 1);
        if sliced {
            cols.push(Arc::new(Int64Array::from_iter_values(ts.values().iter().map(|t| slices.of(*t)))));
        }
        for c in &key {
            cols.push(all.column(schema.index_of(c).map_err(|e| WriterError::Compaction(e.to_string()))?).clone());
        }
        Ok((sort_by_keys(all, cols)?, sliced.then_some(slices)))
    }

    /// Write `sorted` as a compacted file under `staging`, fsync it and
    /// rename it into the hour's directory; its size.
    fn write_staged(
        &self,
        table: Table,
        hour: i64,
        sorted: &RecordBatch,
        slices: Option<TimeSlices>,
        staging: &Path,
    ) -> Result<u64, WriterError> {
        let schema = table.schema();
        let ts_at = schema.index_of("ts").map_err(|_| WriterError::NoTs(table.name()))?;
        fs::create_dir_all(staging).map_err(|e| io(staging, e))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let name = format!("{COMPACT_PREFIX}{now}.parquet");
        let tmp = staging.join(&name);
        let props = writer_props(table, &self.cfg, Some(sorting_columns(&schema, &sort_key(table))));
        let f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        let mut w = ArrowWriter::try_new(f, schema.clone(), Some(props))
            .map_err(|e| WriterError::Parquet { path: tmp.clone(), source: e })?;
        let mut cut = SliceCut { slices, ts_at, current: None };
        cut.write(&mut w, sorted).map_err(|e| WriterError::Parquet { path: tmp.clone(), source: e })?;
        let bytes = finish(w, &tmp)?;
        let live = layout::hour_dir(&self.root, table, hour);
        fs::create_dir_all(&live).map_err(|e| io(&live, e))?;
        let dst = live.join(&name);
        fs::rename(&tmp, &dst).map_err(|e| io(&dst, e))?;
        layout::sync_dir(&live);
        if let Some(p) = live.parent() {
            layout::sync_dir(p);
        }
        Ok(bytes)
    }
}

/// Writes sorted batches, ending a row group wherever a time slice ends
/// (`slices`; `None` when the hour is not cut in slices).
struct SliceCut {
    slices: Option<TimeSlices>,
    ts_at: usize,
    current: Option<i64>,
}

impl SliceCut {
    fn write(&mut self, w: &mut ArrowWriter<File>, b: &RecordBatch) -> Result<(), parquet::errors::ParquetError> {
        let Some(slices) = self.slices else { return w.write(b) };
        // `ts` is never null.
        let ts = b.column(self.ts_at).as_primitive::<TimestampNanosecondType>();
        let mut from = 0;
        for (i, t) in ts.values().iter().enumerate() {
            let s = slices.of(*t);
            if self.current != Some(s) {
                if i > from {
                    w.write(&b.slice(from, i - from))?;
                    from = i;
                }
                if self.current.is_some() {
                    w.flush()?;
                }
                self.current = Some(s);
            }
        }
        if from < b.num_rows() {
            w.write(&b.slice(from, b.num_rows() - from))?;
        }
        Ok(())
    }
}

/// `batch`'s rows ordered by `keys` (columns of it or derived from it,
/// compared in turn, ascending, nulls last, as DataFusion's sort of
/// `col.sort(true, false)` orders them), compared as `arrow::row` bytes.
pub(crate) fn sort_by_keys(batch: &RecordBatch, keys: Vec<ArrayRef>) -> Result<RecordBatch, WriterError> {
    let order = SortOptions { descending: false, nulls_first: false };
    let conv =
        RowConverter::new(keys.iter().map(|c| SortField::new_with_options(c.data_type().clone(), order)).collect())?;
    let rows = conv.convert_columns(&keys)?;
    drop(keys);
    let mut idx: Vec<u32> = (0..batch.num_rows() as u32).collect();
    idx.sort_unstable_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    drop(rows);
    Ok(take_record_batch(batch, &UInt32Array::from(idx))?)
}

/// Finish a file's footer and fsync it; its size.
pub(crate) fn finish(w: ArrowWriter<File>, tmp: &Path) -> Result<u64, WriterError> {
    let f = w.into_inner().map_err(|e| WriterError::Parquet { path: tmp.into(), source: e })?;
    f.sync_all().map_err(|e| io(tmp, e))?;
    Ok(f.metadata().map(|m| m.len()).unwrap_or(0))
}

/// The footer's declaration that a file is sorted by `columns`, ascending.
pub(crate) fn sorting_columns(schema: &arrow::datatypes::Schema, columns: &[&str]) -> Vec<SortingColumn> {
    columns
        .iter()
        .map(|c| SortingColumn {
            column_idx: schema.index_of(c).expect("sort columns are in the schema they sort") as i32,
            descending: false,
            nulls_first: false,
        })
        .collect()
}

pub(crate) fn df_err(e: datafusion::error::DataFusionError) -> WriterError {
    WriterError::Compaction(e.to_string())
}

pub(crate) fn io(path: &Path, e: std::io::Error) -> WriterError {
    WriterError::Io { path: path.into(), source: e }
}

/// Rows in a Parquet file, from its footer.
pub fn parquet_rows(path: &Path) -> Result<u64, WriterError> {
    let f = File::open(path).map_err(|e| io(path, e))?;
    let r = parquet::file::reader::SerializedFileReader::new(f)
        .map_err(|e| WriterError::Parquet { path: path.into(), source: e })?;
    use parquet::file::reader::FileReader;
    Ok(r.metadata().file_metadata().num_rows() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_sliced_evenly_about_once_per_row_group() {
        let n = |rows, per_group| TimeSlices::for_hour(rows, per_group).count();
        assert_eq!(n(0, 131_072), 1);
        assert_eq!(n(131_072, 131_072), 1);
        assert_eq!(n(138_889, 131_072), 2, "two half hours");
        assert_eq!(n(1_500_000, 131_072), 12, "5-minute slices");
        assert_eq!(n(7 * 1000, 1000), 8, "7 does not divide an hour: 8 slices of 450 s");
        assert_eq!(n(u64::MAX, 1), 3600, "never shorter than a second");
        assert_eq!(n(10, 0), 10, "row groups of no rows count as one row");
        for rows in [1, 999, 1000, 1001, 77_777, 10_000_000] {
            let s = TimeSlices::for_hour(rows, 1000);
            assert_eq!(HOUR_NS % s.width_ns, 0, "{rows}: slices divide the hour");
            assert!(s.count() as u64 >= rows.div_ceil(1000).min(3600), "{rows}");
            // Every slice of an hour lies inside it.
            let h = 498_192 * HOUR_NS;
            assert_eq!(s.of(h + HOUR_NS - 1) - s.of(h), s.count() - 1);
            assert_eq!(s.of(h + HOUR_NS), s.of(h) + s.count());
        }
    }
}
