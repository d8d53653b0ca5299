//! The host index: each closed day's flows once more, every flow once
//! under its originator and once under its responder (column `host`), in
//! two files, one per role, each sorted by `host` then `ts`.
//!
//! ```text
//! <root>/.hosts/flows/date=YYYY-MM-DD/hosts-<signature>-orig.parquet
//! <root>/.hosts/flows/date=YYYY-MM-DD/hosts-<signature>-resp.parquet
//! ```
//!
//! Why: "every flow of one address over 30 days" (`orig_h = x OR
//! resp_h = x`) cannot be pruned in the hourly files, whose rows are
//! sorted by `orig_h` alone: as a responder a busy address sits in nearly
//! every page of every hour, and each of the 720 hours' ~30 column chunks
//! costs its open, dictionary and decompression however few rows it
//! yields. In a day's index its flows are one run of rows in each file, so
//! a lookup reads a row group or two of each per day.
//!
//! Two files rather than one so the two halves can be sorted and encoded
//! on two cores at once when both sorts fit the compaction memory (a day's
//! index is built right after its last hour is compacted, at the end of
//! every file ingest; see `halves_at_once`), and each half's sort needs
//! half the memory (the whole day's sort spilled at the default
//! `compaction_memory_mb` even for a day of 160 000 flows).
//!
//! The index is a cache, never the truth: its names carry a signature of
//! the day's hourly files (each hour's one compacted file, name and size),
//! and a query uses it only while both files exist and that signature still
//! matches the hours on disk. A day with a late part file, a recompacted or a deleted hour
//! is read from its hours until the index is rebuilt (the compactor does
//! that once the day's hours are compacted again; retention removes a
//! day's index with its first hour). `tapstream sql` and everything above
//! it see the same rows either way.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::Result;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, col, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::ParquetReadOptions;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha1::{Digest, Sha1};
use tapstream_engine::records::Table;

use crate::compact::{COMPACT_PREFIX, Compactor, df_err, finish, io, sort_by_keys, sorting_columns};
use crate::layout;
use crate::sql::{METADATA_READ, mentions_time, partition_bounds, ts_bound};
use crate::writer::{WriterError, index_props};

/// The index's directory under the data dir (hidden: no table lists it).
pub const HOSTS_DIR: &str = ".hosts";
const PREFIX: &str = "hosts-";
/// The index's own columns after the flows columns.
pub const HOST: &str = "host";

/// `<root>/.hosts/flows`
pub fn index_root(root: &Path) -> PathBuf {
    root.join(HOSTS_DIR).join(Table::Flows.name())
}

/// `<root>/.hosts/flows/date=YYYY-MM-DD`
pub fn day_dir(root: &Path, date: &str) -> PathBuf {
    index_root(root).join(format!("date={date}"))
}

/// `YYYY-MM-DD` of a day since the epoch.
pub fn date_of(day: i64) -> String {
    layout::partition(day.saturating_mul(24)).0
}

/// What an index file holds: the flows columns, the day's `date` and the
/// row's `hour` (as the hourly partitions name them), and `host`.
pub fn schema() -> SchemaRef {
    let mut fields: Vec<Field> = Table::Flows.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("date", DataType::Utf8, false));
    fields.push(Field::new("hour", DataType::Utf8, false));
    fields.push(Field::new(HOST, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The day's compacted hour files (`hour=HH` directory name, file), or
/// None when some hour is not compacted into one file or the day has none.
fn day_files(root: &Path, date: &str) -> Option<Vec<(String, PathBuf)>> {
    let dir = root.join(Table::Flows.name()).join(format!("date={date}"));
    let mut hours: Vec<String> = fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("hour="))
        .collect();
    hours.sort();
    let mut out = Vec::with_capacity(hours.len());
    for h in hours {
        match layout::data_files(&dir.join(&h)).as_slice() {
            [] => {}
            [one] if one.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(COMPACT_PREFIX)) => {
                out.push((h, one.clone()))
            }
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The signature of a day's hourly files: which compacted file each hour
/// holds and its size. None when the day cannot be indexed as it is.
pub fn signature(root: &Path, date: &str) -> Option<String> {
    signature_of(&day_files(root, date)?)
}

fn signature_of(files: &[(String, PathBuf)]) -> Option<String> {
    let mut h = Sha1::new();
    for (hour, f) in files {
        let size = fs::metadata(f).ok()?.len();
        let name = f.file_name()?.to_str()?;
        h.update(format!("{hour}/{name}:{size}\n").as_bytes());
    }
    let mut s = String::with_capacity(16);
    for b in &h.finalize()[..8] {
        let _ = write!(s, "{b:02x}");
    }
    Some(s)
}

/// The address a file of the index files each flow under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Every flow under `orig_h`.
    Orig,
    /// Every flow under `resp_h`, but those to their own originator (the
    /// `Orig` file has them already).
    Resp,
}

impl Role {
    pub const BOTH: [Role; 2] = [Role::Orig, Role::Resp];

    fn name(self) -> &'static str {
        match self {
            Role::Orig => "orig",
            Role::Resp => "resp",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Role::Orig => "orig_h",
            Role::Resp => "resp_h",
        }
    }
}

fn index_name(sig: &str, role: Role) -> String {
    format!("{PREFIX}{sig}-{}.parquet", role.name())
}

/// Days that have an index directory, oldest first.
pub fn indexed_dates(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(index_root(root))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("date=")).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The index files of `date` (originator, responder), if both are there
/// and match the day's hours as they are now.
pub fn valid_index(root: &Path, date: &str) -> Option<[PathBuf; 2]> {
    let sig = signature(root, date)?;
    let files = Role::BOTH.map(|r| day_dir(root, date).join(index_name(&sig, r)));
    files.iter().all(|f| f.is_file()).then_some(files)
}

/// Remove a day's index; the bytes freed.
pub fn remove_day(root: &Path, date: &str) -> std::io::Result<u64> {
    let dir = day_dir(root, date);
    let bytes = layout::dir_bytes(&dir);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Remove index files a crashed build left (hidden temporaries).
pub fn recover(root: &Path) -> usize {
    let mut removed = 0;
    for d in indexed_dates(root) {
        let dir = day_dir(root, &d);
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let n = e.file_name();
            let Some(n) = n.to_str() else { continue };
            if n.starts_with('.') && n.ends_with(".tmp") && fs::remove_file(e.path()).is_ok() {
                tracing::info!(path = %e.path().display(), "removing an unfinished host index from an earlier run");
                removed += 1;
            }
        }
    }
    removed
}

/// Rows of a Parquet file by its footer (0 if it cannot be read: the
/// build then reports the file's error).
fn footer_rows(path: &Path) -> u64 {
    File::open(path)
        .ok()
        .and_then(|f| parquet::file::reader::SerializedFileReader::new(f).ok())
        .map_or(0, |r| parquet::file::reader::FileReader::metadata(&r).file_metadata().num_rows().max(0) as u64)
}

/// An index row as DataFusion's sort accounts for it: ~250 bytes of Arrow
/// (measured: 79 MB for the 323 766 rows of a day of mixed traffic), twice
/// over while a batch is sorted.
const SORT_BYTES_PER_ROW: u64 = 2 * 256;

/// Whether a day of `rows` flows has its two halves sorted at once: only
/// when both sorts (and what each sets aside for merging) fit `pool_bytes`
/// without spilling. Two sorts that spill
/// in one pool can starve each other's merge (DataFusion 55 then fails
/// with "Resources exhausted"; seen on days of 3.3 M flows at 256 MB); a
/// day that big is sorted one half after the other, each spilling alone.
fn halves_at_once(rows: u64, pool_bytes: usize) -> bool {
    2 * (rows * SORT_BYTES_PER_ROW + SORT_MERGE_RESERVATION) <= pool_bytes as u64
}

/// Whether a file's columns are exactly today's `flows` columns.
pub fn has_flows_columns(path: &Path) -> bool {
    File::open(path)
        .ok()
        .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
        .is_some_and(|b| b.schema().fields() == Table::Flows.schema().fields())
}

/// What each sort sets aside for its merge first (DataFusion's
/// `sort_spill_reservation_bytes`, left at its default).
const SORT_MERGE_RESERVATION: u64 = 10 << 20;

/// One index file written: its rows and bytes.
type Written = Result<(u64, u64), WriterError>;

/// What building one day's index did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indexed {
    pub date: String,
    pub hours: usize,
    pub rows: u64,
    pub bytes: u64,
}

impl Compactor {
    /// Build (or rebuild) the host index of `date` from its compacted
    /// hours. `Ok(None)` when there is nothing to do: an hour of the day is
    /// not compacted, or the index already matches the hours.
    pub fn index_day(&self, date: &str) -> Result<Option<Indexed>, WriterError> {
        let Some(files) = day_files(&self.root, date) else { return Ok(None) };
        let Some(sig) = signature_of(&files) else { return Ok(None) };
        let dir = day_dir(&self.root, date);
        let names = Role::BOTH.map(|r| index_name(&sig, r));
        if names.iter().all(|n| dir.join(n).is_file()) {
            return Ok(None);
        }
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let tmps = names.clone().map(|n| dir.join(format!(".{n}.tmp")));
        // Both halves at once when both sorts fit the memory pool without
        // spilling; otherwise (or if sorting both at once ran out of memory
        // after all) one after the other.
        let rows: u64 = files.iter().map(|(_, f)| footer_rows(f)).sum();
        let mut built = None;
        if halves_at_once(rows, self.cfg.compaction_memory_bytes) {
            match self.write_halves_at_once(date, &files, &tmps) {
                (Ok(o), Ok(r)) => built = Some((o, r)),
                (o, r) => {
                    let e = o.err().or(r.err()).map(|e| e.to_string()).unwrap_or_default();
                    tracing::warn!(date, error = %e, "host index halves at once failed; building them one after the other");
                }
            }
        }
        let built = match built {
            Some(v) => Ok(v),
            None => self
                .write_index(&self.rt, date, &files, Role::Orig, &tmps[0])
                .and_then(|o| Ok((o, self.write_index(&self.rt, date, &files, Role::Resp, &tmps[1])?))),
        };
        let ((orig_rows, orig_bytes), (resp_rows, resp_bytes)) = match built {
            Ok(v) => v,
            Err(e) => {
                for t in &tmps {
                    let _ = fs::remove_file(t);
                }
                return Err(e);
            }
        };
        let dsts = names.map(|n| dir.join(n));
        for (tmp, dst) in tmps.iter().zip(&dsts) {
            fs::rename(tmp, dst).map_err(|e| io(dst, e))?;
        }
        // Older indexes of the day (other signatures) go.
        for old in layout::data_files(&dir).into_iter().filter(|p| !dsts.contains(p)) {
            let _ = fs::remove_file(old);
        }
        layout::sync_dir(&dir);
        Ok(Some(Indexed {
            date: date.to_string(),
            hours: files.len(),
            rows: orig_rows + resp_rows,
            bytes: orig_bytes + resp_bytes,
        }))
    }

    /// The responders' half on a thread of its own, the originators' half
    /// on this one. Both fit in memory, so each is sorted there
    /// ([`Self::write_index_held`]), unless a file's columns are not today's
    /// flows columns (an older layout, which DataFusion's scan adapts: then
    /// both sorts draw on the compactor's memory pool, with an executor
    /// each).
    fn write_halves_at_once(&self, date: &str, files: &[(String, PathBuf)], tmps: &[PathBuf; 2]) -> (Written, Written) {
        let held = files.iter().all(|(_, f)| has_flows_columns(f));
        std::thread::scope(|s| {
            let other = std::thread::Builder::new().name("host-index".into()).spawn_scoped(s, || {
                if held {
                    return self.write_index_held(date, files, Role::Resp, &tmps[1]);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| WriterError::Io { path: tmps[1].clone(), source: e })?;
                self.write_index(&rt, date, files, Role::Resp, &tmps[1])
            });
            let orig = if held {
                self.write_index_held(date, files, Role::Orig, &tmps[0])
            } else {
                self.write_index(&self.rt, date, files, Role::Orig, &tmps[0])
            };
            let resp = match other {
                Ok(t) => {
                    t.join().unwrap_or_else(|_| Err(WriterError::Compaction("the host index thread panicked".into())))
                }
                Err(e) => Err(WriterError::Io { path: tmps[1].clone(), source: e }),
            };
            (orig, resp)
        })
    }

    fn write_index(
        &self,
        rt: &tokio::runtime::Runtime,
        date: &str,
        files: &[(String, PathBuf)],
        role: Role,
        tmp: &Path,
    ) -> Written {
        let flows = Table::Flows.schema();
        let out = schema();
        let props = index_props(&self.cfg, sorting_columns(&out, &[HOST, "ts"]));
        let f = File::create(tmp).map_err(|e| io(tmp, e))?;
        let mut w = ArrowWriter::try_new(f, out.clone(), Some(props))
            .map_err(|e| WriterError::Parquet { path: tmp.into(), source: e })?;
        let rows = rt.block_on(async {
            let mut day: Option<datafusion::dataframe::DataFrame> = None;
            for (hour, path) in files {
                let opts = ParquetReadOptions::default().schema(&flows);
                let df = self.ctx.read_parquet(path.display().to_string(), opts).await.map_err(df_err)?;
                let hh = hour.trim_start_matches("hour=").to_string();
                let df = df
                    .with_column("date", lit(date.to_string()))
                    .and_then(|d| d.with_column("hour", lit(hh)))
                    .map_err(df_err)?;
                day = Some(match day {
                    None => df,
                    Some(d) => d.union(df).map_err(df_err)?,
                });
            }
            let Some(day) = day else { return Ok(0) };
            let day = match role {
                Role::Orig => day,
                // A flow from an address to itself is in the other half.
                Role::Resp => day.filter(col("resp_h").not_eq(col("orig_h"))).map_err(df_err)?,
            };
            let names: Vec<Expr> = out.fields().iter().map(|f| col(f.name().as_str())).collect();
            let all = day
                .with_column(HOST, col(role.column()))
                .and_then(|d| d.select(names))
                .and_then(|d| d.sort(vec![col(HOST).sort(true, false), col("ts").sort(true, false)]))
                .map_err(df_err)?;
            let mut stream = all.execute_stream().await.map_err(df_err)?;
            let mut rows = 0u64;
            while let Some(b) = stream.next().await {
                let b: RecordBatch = b.map_err(df_err)?;
                let b = RecordBatch::try_new(out.clone(), b.columns().to_vec())?;
                rows += b.num_rows() as u64;
                w.write(&b).map_err(|e| WriterError::Parquet { path: tmp.into(), source: e })?;
            }
            Ok::<_, WriterError>(rows)
        })?;
        Ok((rows, finish(w, tmp)?))
    }

    /// One half of a day's index sorted in memory: the day's files read
    /// whole, the role's rows sorted by (`host`, `ts`) as `arrow::row` keys
    /// and taken in that order: the rows and order [`Self::write_index`]
    /// writes, without DataFusion's per-batch sorts and merge. Only for a
    /// day that [`halves_at_once`] says fits the memory pool.
    fn write_index_held(&self, date: &str, files: &[(String, PathBuf)], role: Role, tmp: &Path) -> Written {
        let out = schema();
        let mut parts = Vec::new();
        for (hour, path) in files {
            let f = File::open(path).map_err(|e| io(path, e))?;
            let parquet = |e| WriterError::Parquet { path: path.clone(), source: e };
            let reader = ParquetRecordBatchReaderBuilder::try_new(f).map_err(parquet)?.with_batch_size(64 * 1024);
            let hh = hour.trim_start_matches("hour=");
            for b in reader.build().map_err(parquet)? {
                let b = b?;
                let b = match role {
                    Role::Orig => b,
                    // A flow from an address to itself is in the other half.
                    Role::Resp => {
                        let (o, r) = (b.column_by_name("orig_h"), b.column_by_name("resp_h"));
                        let (Some(o), Some(r)) = (o, r) else {
                            return Err(WriterError::Compaction(format!("{}: no orig_h/resp_h", path.display())));
                        };
                        let keep = arrow::compute::kernels::cmp::neq(r, o)?;
                        arrow::compute::filter_record_batch(&b, &keep)?
                    }
                };
                let n = b.num_rows();
                let mut cols = b.columns().to_vec();
                cols.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(date, n))));
                cols.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(hh, n))));
                let own = b
                    .column_by_name(role.column())
                    .ok_or_else(|| WriterError::Compaction(format!("{}: no {}", path.display(), role.column())))?
                    .clone();
                cols.push(own);
                parts.push(RecordBatch::try_new(out.clone(), cols)?);
            }
        }
        let all = arrow::compute::concat_batches(&out, &parts)?;
        drop(parts);
        let keys = vec![all.column(out.index_of(HOST)?).clone(), all.column(out.index_of("ts")?).clone()];
        let sorted = sort_by_keys(&all, keys)?;
        drop(all);
        let props = index_props(&self.cfg, sorting_columns(&out, &[HOST, "ts"]));
        let f = File::create(tmp).map_err(|e| io(tmp, e))?;
        let parquet = |e| WriterError::Parquet { path: tmp.into(), source: e };
        let mut w = ArrowWriter::try_new(f, out, Some(props)).map_err(parquet)?;
        w.write(&sorted).map_err(parquet)?;
        Ok((sorted.num_rows() as u64, finish(w, tmp)?))
    }

    /// Index every closed day (ending at or before `now_ns`) that has
    /// compacted hours and no index matching them: a history written
    /// before the index existed, or a day whose rebuild was interrupted.
    /// One day per step of the iterator, oldest first, so the caller can
    /// report each as it is done (a month takes minutes).
    pub fn index_missing(&self, now_ns: i64) -> impl Iterator<Item = Result<Indexed, WriterError>> + '_ {
        let today = now_ns.div_euclid(layout::HOUR_NS * 24);
        let mut days = BTreeSet::new();
        for h in layout::list_hours(&self.root, Table::Flows) {
            let day = h.hour.div_euclid(24);
            if day < today {
                days.insert(day);
            }
        }
        days.into_iter().filter_map(|d| self.index_day(&date_of(d)).transpose())
    }
}

/// The first and last day (`YYYY-MM-DD`) that constant bounds on `ts` in
/// `filters` (conjunctions followed) leave open.
fn date_range(filters: &[Expr]) -> (Option<String>, Option<String>) {
    fn walk(e: &Expr, from: &mut Option<i128>, to: &mut Option<i128>) {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else { return };
        if *op == Operator::And {
            walk(left, from, to);
            walk(right, from, to);
            return;
        }
        match ts_bound(left, *op, right) {
            Some((Operator::Gt | Operator::GtEq, v)) => *from = Some(from.map_or(v, |f| f.max(v))),
            Some((Operator::Lt | Operator::LtEq, v)) => *to = Some(to.map_or(v, |t| t.min(v))),
            Some((Operator::Eq, v)) => {
                *from = Some(from.map_or(v, |f| f.max(v)));
                *to = Some(to.map_or(v, |t| t.min(v)));
            }
            _ => {}
        }
    }
    let (mut from, mut to) = (None, None);
    for f in filters {
        walk(f, &mut from, &mut to);
    }
    let day = |ns: i128| date_of((ns.div_euclid(i128::from(layout::HOUR_NS) * 24)) as i64);
    (from.map(day), to.map(day))
}

/// `x`, when `e` asks for the flows of address `x` in either role:
/// `orig_h = 'x' OR resp_h = 'x'` (either order, either side) or
/// `'x' IN (orig_h, resp_h)`.
pub fn host_of(e: &Expr) -> Option<String> {
    let both = |mut cols: [&str; 2]| {
        cols.sort_unstable();
        cols == ["orig_h", "resp_h"]
    };
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let (a, ca) = column_eq(left)?;
            let (b, cb) = column_eq(right)?;
            (a == b && both([ca.as_str(), cb.as_str()])).then_some(a)
        }
        Expr::InList(l) if !l.negated => match l.list.as_slice() {
            [Expr::Column(a), Expr::Column(b)] if both([a.name.as_str(), b.name.as_str()]) => text(&l.expr),
            _ => None,
        },
        _ => None,
    }
}

fn text(x: &Expr) -> Option<String> {
    match x {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

fn column_eq(e: &Expr) -> Option<(String, String)> {
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = e else { return None };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), v) | (v, Expr::Column(c)) => Some((text(v)?, c.name.clone())),
        _ => None,
    }
}

/// The flows table with host lookups answered from the index where it is
/// valid. Wraps the stored listing (behind its time guard), below the view
/// that derives columns.
#[derive(Debug)]
pub struct HostLookup {
    inner: Arc<dyn TableProvider>,
    root: PathBuf,
}

impl HostLookup {
    pub fn new(inner: Arc<dyn TableProvider>, root: &Path) -> HostLookup {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        HostLookup { inner, root }
    }
}

#[async_trait]
impl TableProvider for HostLookup {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Only a lookup bounded in time: without a bound the guard below
        // searches its default range, which the hours answer quickly.
        let host = filters.iter().find_map(host_of);
        let Some(host) = host.filter(|_| filters.iter().any(mentions_time)) else {
            return self.inner.scan(state, projection, filters, limit).await;
        };
        // Only the days the query's time bounds reach: their signatures are
        // checked and their files opened, not those of the whole history.
        let (from, to) = date_range(filters);
        let indexes: Vec<(String, [PathBuf; 2])> = indexed_dates(&self.root)
            .into_iter()
            .filter(|d| from.as_ref().is_none_or(|f| d >= f) && to.as_ref().is_none_or(|t| d <= t))
            .filter_map(|d| valid_index(&self.root, &d).map(|f| (d, f)))
            .collect();
        if indexes.is_empty() {
            return self.inner.scan(state, projection, filters, limit).await;
        }
        let days: Vec<Expr> = indexes.iter().map(|(d, _)| lit(d.clone())).collect();
        // The hours of days without a valid index, as before.
        let mut hourly_filters = filters.to_vec();
        hourly_filters.push(col("date").in_list(days, true));
        let hourly = self.inner.scan(state, projection, &hourly_filters, limit).await?;

        // The indexed days: the host's rows, with every condition tested.
        let stored = self.inner.schema();
        let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..stored.fields().len()).collect());
        let names: Vec<String> = wanted.iter().map(|i| stored.field(*i).name().clone()).collect();
        let mut conditions = filters.to_vec();
        conditions.extend(filters.iter().flat_map(partition_bounds));
        conditions.push(col(HOST).eq(lit(ScalarValue::Utf8View(Some(host)))));
        // Read as the hourly files are (text as views, the partition
        // columns as the listing gives them), so the two unite.
        let index_schema = crate::sql::read_schema(&schema(), &["date", "hour"]);
        let mut read: BTreeSet<usize> = BTreeSet::new();
        for n in names.iter().map(String::as_str).chain(
            conditions.iter().flat_map(|e| e.column_refs().into_iter().map(|c| c.name.as_str()).collect::<Vec<_>>()),
        ) {
            read.insert(index_schema.index_of(n)?);
        }
        let read: Vec<usize> = read.into_iter().collect();
        let urls = indexes
            .iter()
            .flat_map(|(_, files)| files.iter())
            .map(|f| ListingTableUrl::parse(f.display().to_string()))
            .collect::<Result<Vec<_>>>()?;
        let format = ParquetFormat::default().with_metadata_size_hint(Some(METADATA_READ));
        let cfg = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(ListingOptions::new(Arc::new(format)).with_file_extension(".parquet"))
            .with_schema(index_schema);
        let table = ListingTable::try_new(cfg)?;
        let scan = table.scan(state, Some(&read), &conditions, None).await?;
        let scanned = DFSchema::try_from(scan.schema().as_ref().clone())?;
        let predicate = conjunction(conditions).expect("at least the host condition");
        let filtered = Arc::new(FilterExec::try_new(state.create_physical_expr(predicate, &scanned)?, scan)?);
        let exprs = names
            .iter()
            .map(|n| Ok((state.create_physical_expr(col(n.as_str()), &scanned)?, n.clone())))
            .collect::<Result<Vec<_>>>()?;
        let index: Arc<dyn ExecutionPlan> = Arc::new(ProjectionExec::try_new(exprs, filtered)?);
        UnionExec::try_new(vec![hourly, index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_day_whose_two_sorts_fit_the_pool_has_them_at_once() {
        let pool = 256 << 20;
        // The mixed capture's day; a day of the 100 M-row history.
        assert!(halves_at_once(161_883, pool));
        assert!(!halves_at_once(3_333_336, pool));
        assert!(halves_at_once(3_333_336, 4 << 30));
        assert!(!halves_at_once(9_600, 24 << 20));
        assert!(halves_at_once(9_600, 32 << 20));
    }

    #[test]
    fn a_host_lookup_is_recognised_in_either_order() {
        let x = || lit("10.0.0.1");
        assert_eq!(host_of(&col("orig_h").eq(x()).or(col("resp_h").eq(x()))).as_deref(), Some("10.0.0.1"));
        assert_eq!(host_of(&x().eq(col("resp_h")).or(col("orig_h").eq(x()))).as_deref(), Some("10.0.0.1"));
        assert_eq!(host_of(&x().in_list(vec![col("resp_h"), col("orig_h")], false)).as_deref(), Some("10.0.0.1"));
        assert_eq!(host_of(&x().in_list(vec![col("resp_h"), col("orig_h")], true)), None);
        // Two addresses, one column twice, or an AND: not a host lookup.
        assert_eq!(host_of(&col("orig_h").eq(x()).or(col("resp_h").eq(lit("10.0.0.2")))), None);
        assert_eq!(host_of(&col("orig_h").eq(x()).or(col("orig_h").eq(x()))), None);
        assert_eq!(host_of(&col("orig_h").eq(x()).and(col("resp_h").eq(x()))), None);
    }
}
