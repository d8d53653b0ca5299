//! Hourly partitioned Parquet writer:
//! `<root>/<table>/date=YYYY-MM-DD/hour=HH/part-<n>.parquet`.
//!
//! Rows are routed to the partition of their `ts` column. Each open
//! partition writes to a hidden temporary file; closing it (row cap, age, or
//! shutdown) finishes the Parquet footer, fsyncs, and renames it into place,
//! so a reader never sees a partial file.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::{Array, BooleanArray, RecordBatch, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tapstream_engine::records::Table;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: parquet: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
    #[error("batch for table {0} has no `ts` timestamp column")]
    NoTs(&'static str),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Close a part file after this many rows.
    pub max_rows_per_file: usize,
    /// Close a part file this long after it was opened.
    pub max_file_age: Duration,
    pub zstd_level: i32,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { max_rows_per_file: 1_000_000, max_file_age: Duration::from_secs(60), zstd_level: 3 }
    }
}

#[derive(Clone, Debug, Default)]
pub struct WriterStats {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

type PartKey = (Table, i64); // table, hour since epoch

struct OpenPart {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    dir: PathBuf,
    rows: usize,
    opened: Instant,
}

pub struct HourlyWriter {
    root: PathBuf,
    cfg: WriterConfig,
    open: BTreeMap<PartKey, OpenPart>,
    pub stats: WriterStats,
}

const HOUR_NS: i64 = 3_600_000_000_000;

impl HourlyWriter {
    /// Open a writer under `root`, removing temporary files a crashed run left.
    pub fn new(root: &Path, cfg: WriterConfig) -> Result<HourlyWriter, WriterError> {
        fs::create_dir_all(root).map_err(|e| WriterError::Io { path: root.into(), source: e })?;
        clean_tmp(root);
        Ok(HourlyWriter { root: root.into(), cfg, open: BTreeMap::new(), stats: WriterStats::default() })
    }

    /// Write a batch of `table`, splitting it by hour.
    pub fn write(&mut self, table: Table, batch: &RecordBatch) -> Result<(), WriterError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let ts = batch
            .column_by_name("ts")
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            .ok_or(WriterError::NoTs(table.name()))?;
        let first = ts.value(0).div_euclid(HOUR_NS);
        let all_same = ts.values().iter().all(|v| v.div_euclid(HOUR_NS) == first);
        if all_same {
            self.write_hour(table, first, batch)?;
        } else {
            let mut hours: Vec<i64> = ts.values().iter().map(|v| v.div_euclid(HOUR_NS)).collect();
            hours.sort_unstable();
            hours.dedup();
            for h in hours {
                let mask: BooleanArray = ts.values().iter().map(|v| Some(v.div_euclid(HOUR_NS) == h)).collect();
                let part = filter_record_batch(batch, &mask)?;
                self.write_hour(table, h, &part)?;
            }
        }
        self.close_aged()?;
        Ok(())
    }

    fn write_hour(&mut self, table: Table, hour: i64, batch: &RecordBatch) -> Result<(), WriterError> {
        let key = (table, hour);
        if !self.open.contains_key(&key) {
            let part = self.open_part(table, hour, batch)?;
            self.open.insert(key, part);
        }
        let p = self.open.get_mut(&key).expect("just inserted");
        p.writer.write(batch).map_err(|e| WriterError::Parquet { path: p.tmp.clone(), source: e })?;
        p.rows += batch.num_rows();
        self.stats.rows += batch.num_rows() as u64;
        if p.rows >= self.cfg.max_rows_per_file
            && let Some(p) = self.open.remove(&key)
        {
            self.close_part(p)?;
        }
        Ok(())
    }

    fn open_part(&self, table: Table, hour: i64, batch: &RecordBatch) -> Result<OpenPart, WriterError> {
        let secs = hour * 3600;
        let dt = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let dir = self
            .root
            .join(table.name())
            .join(format!("date={:04}-{:02}-{:02}", dt.year(), dt.month() as u8, dt.day()))
            .join(format!("hour={:02}", dt.hour()));
        fs::create_dir_all(&dir).map_err(|e| WriterError::Io { path: dir.clone(), source: e })?;
        let n = next_part_number(&dir);
        let tmp = dir.join(format!(".part-{n:05}.parquet.tmp"));
        let f = File::create(&tmp).map_err(|e| WriterError::Io { path: tmp.clone(), source: e })?;
        let level = ZstdLevel::try_new(self.cfg.zstd_level).unwrap_or_default();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(128 * 1024))
            .build();
        let writer = ArrowWriter::try_new(f, batch.schema(), Some(props))
            .map_err(|e| WriterError::Parquet { path: tmp.clone(), source: e })?;
        Ok(OpenPart { writer, tmp, dir, rows: 0, opened: Instant::now() })
    }

    fn close_part(&mut self, p: OpenPart) -> Result<(), WriterError> {
        let OpenPart { writer, tmp, dir, .. } = p;
        let f = writer.into_inner().map_err(|e| WriterError::Parquet { path: tmp.clone(), source: e })?;
        f.sync_all().map_err(|e| WriterError::Io { path: tmp.clone(), source: e })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        drop(f);
        let name = tmp
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_start_matches('.').trim_end_matches(".tmp").to_string())
            .unwrap_or_else(|| "part-00000.parquet".into());
        let dst = dir.join(name);
        fs::rename(&tmp, &dst).map_err(|e| WriterError::Io { path: dst.clone(), source: e })?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        self.stats.files += 1;
        self.stats.bytes += len;
        Ok(())
    }

    /// Close part files older than the flush interval.
    pub fn close_aged(&mut self) -> Result<(), WriterError> {
        let age = self.cfg.max_file_age;
        let old: Vec<PartKey> = self.open.iter().filter(|(_, p)| p.opened.elapsed() >= age).map(|(k, _)| *k).collect();
        for k in old {
            if let Some(p) = self.open.remove(&k) {
                self.close_part(p)?;
            }
        }
        Ok(())
    }

    /// Close every open part (shutdown / end of input).
    pub fn close(&mut self) -> Result<(), WriterError> {
        let keys: Vec<PartKey> = self.open.keys().copied().collect();
        let mut first_err = None;
        for k in keys {
            if let Some(p) = self.open.remove(&k)
                && let Err(e) = self.close_part(p)
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for HourlyWriter {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn next_part_number(dir: &Path) -> u32 {
    let mut max = None;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let name = name.trim_start_matches('.');
            if let Some(rest) = name.strip_prefix("part-")
                && let Some(num) = rest.split('.').next()
                && let Ok(n) = num.parse::<u32>()
            {
                max = Some(max.map_or(n, |m: u32| m.max(n)));
            }
        }
    }
    max.map_or(0, |m| m + 1)
}

/// Remove `.part-*.tmp` files left by a crash (they were never renamed, so
/// no reader ever saw them).
fn clean_tmp(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".part-") && n.ends_with(".tmp"))
            {
                tracing::info!(path = %p.display(), "removing unfinished part file from an earlier run");
                let _ = fs::remove_file(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    #[test]
    fn splits_by_hour_and_renames_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
            Field::new("v", DataType::Int64, false),
        ]));
        let h = HOUR_NS;
        let ts = TimestampNanosecondArray::from(vec![0, 1, h, h + 5, 3 * h]).with_timezone("UTC");
        let b =
            RecordBatch::try_new(schema, vec![Arc::new(ts), Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5]))]).unwrap();
        let mut w = HourlyWriter::new(dir.path(), WriterConfig::default()).unwrap();
        w.write(Table::Flows, &b).unwrap();
        // nothing visible before close
        let visible = |d: &str| dir.path().join("flows").join(d).join("part-00000.parquet").exists();
        assert!(!visible("date=1970-01-01/hour=00"));
        w.close().unwrap();
        assert!(visible("date=1970-01-01/hour=00"));
        assert!(visible("date=1970-01-01/hour=01"));
        assert!(visible("date=1970-01-01/hour=03"));
        assert!(!visible("date=1970-01-01/hour=02"));
        assert_eq!(w.stats.rows, 5);
        assert_eq!(w.stats.files, 3);
    }
}
