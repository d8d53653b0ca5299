//! Hourly partitioned Parquet writer:
//! `<root>/<table>/date=YYYY-MM-DD/hour=HH/part-<n>.parquet`.
//!
//! Rows are routed to the partition of their `ts` column. Each open
//! partition writes to a hidden temporary file; closing it (row cap, age, or
//! shutdown) finishes the Parquet footer, fsyncs, and renames it into place,
//! so a reader never sees a partial file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::{Array, BooleanArray, RecordBatch, TimestampNanosecondArray};
use arrow::compute::{filter_record_batch, sort_to_indices, take_record_batch};
use arrow::datatypes::DataType;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tapstream_engine::records::Table;

use crate::compact::{Compacted, Compactor};
use crate::dirlock::DataDirLock;
use crate::layout::{self, HOUR_NS};

const DAY_NS: i64 = 24 * HOUR_NS;

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
    #[error("compaction: {0}")]
    Compaction(String),
    #[error("the history writer is closed (the appliance is shutting down)")]
    Closed,
    #[error(
        "data dir {} is in use by {holder}: stop it first, or send the file to its API (POST /api/import)",
        root.display()
    )]
    InUse { root: PathBuf, holder: String },
}

#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Close a part file after this many rows.
    pub max_rows_per_file: usize,
    /// Close a part file this long after it was opened (the flush interval:
    /// at most this much is lost to a crash).
    pub max_file_age: Duration,
    pub zstd_level: i32,
    /// Rows per Parquet row group (the unit statistics and bloom filters prune).
    pub row_group_rows: usize,
    /// Rows per data page at most (the unit the page index prunes: a lookup
    /// in a compacted hour decodes the pages holding its rows, not the hour).
    pub page_rows: usize,
    /// Merge an hour's parts into one sorted file once it has closed.
    pub compaction: bool,
    /// An hour is closed when the newest record written is this far past its end.
    pub compaction_grace: Duration,
    /// Memory the compaction sort may use before it spills to disk.
    pub compaction_memory_bytes: usize,
    /// Keep a host index of each closed day's flows (`hosts`): every flow
    /// under both of its addresses, so one address's flows over weeks are
    /// read from a run of rows per day instead of every page of every hour.
    pub host_index: bool,
    /// Memory (Arrow bytes, all open hours together) a part's rows may be
    /// held in before its file is started. An hour whose rows are all still
    /// held when the writer closes, and that has no file yet, is written
    /// straight as its one sorted, compacted file: no part written, read
    /// back and encoded again (an ingest of a capture that fits). Held rows
    /// are committed exactly when a part would be (row cap, flush age), so
    /// a crash loses no more; 0 streams every batch into its part file as
    /// it comes (a long-running capture, which gains nothing from holding).
    pub hold_bytes: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_rows_per_file: 1_000_000,
            max_file_age: Duration::from_secs(60),
            zstd_level: 3,
            row_group_rows: 128 * 1024,
            page_rows: 8 * 1024,
            compaction: true,
            compaction_grace: Duration::from_secs(300),
            compaction_memory_bytes: 256 << 20,
            host_index: true,
            hold_bytes: 128 << 20,
        }
    }
}

impl WriterConfig {
    /// The same, streaming every batch into its part file (no rows held).
    pub fn streaming(self) -> WriterConfig {
        WriterConfig { hold_bytes: 0, ..self }
    }
}

#[derive(Clone, Debug, Default)]
pub struct WriterStats {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    pub compactions: u64,
    pub compaction_errors: u64,
    /// Hours written straight as their compacted file from held rows (no
    /// part file; counted in `compactions` and `files` too).
    pub held_hours: u64,
}

/// (table, hours since the epoch)
pub type PartKey = (Table, i64);

/// Who is working on an hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    Writer,
    Compaction,
    Retention,
}

/// Which hours are in use, shared by the writer, the compactor and
/// retention. Touched when a part file opens or closes and when a
/// compaction or deletion starts or ends; never per record.
#[derive(Default)]
pub struct HourLocks {
    busy: Mutex<HashMap<PartKey, Holder>>,
    freed: Condvar,
}

impl HourLocks {
    /// Take `key` if nobody holds it.
    pub fn try_claim(&self, key: PartKey, who: Holder) -> bool {
        let mut g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if g.contains_key(&key) {
            return false;
        }
        g.insert(key, who);
        true
    }

    /// Take `key`, waiting while a compaction or deletion holds it.
    pub fn claim(&self, key: PartKey, who: Holder) {
        let mut g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while g.contains_key(&key) {
            g = self.freed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.insert(key, who);
    }

    pub fn release(&self, key: PartKey) {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        self.freed.notify_all();
    }

    pub fn holder(&self, key: PartKey) -> Option<Holder> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied()
    }
}

/// An hour's rows not yet in a file of their own.
struct OpenPart {
    state: PartState,
    dir: PathBuf,
    rows: usize,
    opened: Instant,
}

enum PartState {
    /// Held in memory (within [`WriterConfig::hold_bytes`]), as written.
    Held { batches: Vec<RecordBatch>, bytes: usize },
    /// Streaming into a hidden part file, each batch sorted by `ts`.
    Writing { writer: Box<ArrowWriter<File>>, tmp: PathBuf },
}

/// Work for the background thread.
enum Job {
    /// Merge a closed hour's parts.
    Compact(PartKey),
    /// Write an hour that has no file yet from the rows held for it: sorted
    /// and compacted at once, or as a part file if that fails.
    Write(PartKey, Vec<RecordBatch>),
    /// Build the host index of a closed day (days since the epoch).
    Index(i64),
}

/// A background thread that merges closed hours (and, for `flows`,
/// indexes closed days).
struct CompactionThread {
    jobs: std::sync::mpsc::Sender<Job>,
    done: Arc<Mutex<LaneDone>>,
    handle: JoinHandle<()>,
}

/// What a compaction thread did, summed into [`WriterStats`] at close.
#[derive(Default)]
struct LaneDone {
    compactions: u64,
    held_hours: u64,
    errors: u64,
    /// Files written from held rows, and their bytes.
    files: u64,
    bytes: u64,
    /// Held rows that could be written neither way.
    lost: Option<WriterError>,
}

impl LaneDone {
    fn absorb(&mut self, o: LaneDone) {
        self.compactions += o.compactions;
        self.held_hours += o.held_hours;
        self.errors += o.errors;
        self.files += o.files;
        self.bytes += o.bytes;
        if let Some(e) = o.lost {
            self.lost.get_or_insert(e);
        }
    }

    fn add_to(&self, s: &mut WriterStats) {
        s.compactions += self.compactions;
        s.compaction_errors += self.errors;
        s.held_hours += self.held_hours;
        s.files += self.files;
        s.bytes += self.bytes;
    }
}

/// The two compaction threads. `flows` hours and the host index go to one,
/// in the order they were handed over (a day's index reads its compacted
/// flows hours); every other table's hours to the other, so at the end of
/// an ingest the `dns`, `tls`, `http` … hours are merged while the flows
/// are. Both sort in one memory pool of `compaction_memory_bytes`.
struct Compaction {
    flows: CompactionThread,
    other: CompactionThread,
}

impl Compaction {
    fn lane(&self, table: Table) -> &CompactionThread {
        if table == Table::Flows { &self.flows } else { &self.other }
    }
}

pub struct HourlyWriter {
    root: PathBuf,
    cfg: WriterConfig,
    open: BTreeMap<PartKey, OpenPart>,
    /// Hours that got part files since they were last compacted.
    dirty: BTreeSet<PartKey>,
    /// Days whose flows hours were handed to compaction since the day was
    /// last indexed.
    index_due: BTreeSet<i64>,
    /// Newest record time written (the data clock that closes hours).
    newest_ns: i64,
    locks: Arc<HourLocks>,
    compactor: Option<Compaction>,
    /// Arrow bytes held by every open hour together.
    held_bytes: usize,
    /// This thread's own counts; the compaction threads' are added when the
    /// writer closes ([`Self::stats`] has them all at any time).
    pub stats: WriterStats,
    /// This process's claim on the data dir, held while the writer lives.
    _dir_lock: Arc<DataDirLock>,
}

/// Writer properties of one table's compacted files: zstd, page-level
/// statistics (the page index), bloom filters on the address columns, and
/// the declared sort order.
pub fn writer_props(table: Table, cfg: &WriterConfig, sorting: Option<Vec<SortingColumn>>) -> WriterProperties {
    let level = ZstdLevel::try_new(cfg.zstd_level).unwrap_or_default();
    column_props(table, cfg, Compression::ZSTD(level), true).set_sorting_columns(sorting).build()
}

/// Writer properties of a host index file: those of a compacted `flows`
/// file without bloom filters. Lookups find their rows by `host`, which the
/// file is sorted by (row group statistics rule the rest out), never by
/// `orig_h` or `resp_h`.
pub fn index_props(cfg: &WriterConfig, sorting: Vec<SortingColumn>) -> WriterProperties {
    let level = ZstdLevel::try_new(cfg.zstd_level).unwrap_or_default();
    column_props(Table::Flows, cfg, Compression::ZSTD(level), false).set_sorting_columns(Some(sorting)).build()
}

/// Writer properties of a part file: what a compacted file has, but LZ4
/// instead of zstd and no bloom filters. A part lives until its hour is
/// compacted (read once, sorted and written again), so it is cheap to
/// write and to read back rather than small: at the end of an ingest the
/// hour's flows are encoded twice on the way to their one file.
pub fn part_props(table: Table, cfg: &WriterConfig) -> WriterProperties {
    column_props(table, cfg, Compression::LZ4_RAW, false).build()
}

fn column_props(
    table: Table,
    cfg: &WriterConfig,
    compression: Compression,
    bloom: bool,
) -> parquet::file::properties::WriterPropertiesBuilder {
    let mut b = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(cfg.row_group_rows))
        .set_data_page_row_count_limit(cfg.page_rows)
        .set_statistics_enabled(EnabledStatistics::Page);
    // Sized for a row group of distinct values; the writer folds each filter
    // down to what the values it saw need.
    let ndv = cfg.row_group_rows as u64;
    for f in table.schema().fields() {
        let c = ColumnPath::from(f.name().as_str());
        if matches!(f.data_type(), DataType::Timestamp(..)) {
            // Times within an hour, sorted per address: their differences
            // pack in fewer bits than zstd finds in the raw values.
            b = b
                .set_column_dictionary_enabled(c.clone(), false)
                .set_column_encoding(c.clone(), Encoding::DELTA_BINARY_PACKED);
        } else if matches!(f.name().as_str(), "uid" | "community_id") {
            // Nearly every value distinct: a dictionary only adds a page.
            b = b.set_column_dictionary_enabled(c.clone(), false);
        }
        if bloom && is_address_column(f.name()) {
            b = b
                .set_column_bloom_filter_enabled(c.clone(), true)
                .set_column_bloom_filter_fpp(c.clone(), 0.01)
                .set_column_bloom_filter_max_ndv(c, ndv);
        }
    }
    b
}

/// Columns holding IP addresses (bloom-filtered: `WHERE orig_h = '…'`).
pub fn is_address_column(name: &str) -> bool {
    matches!(name, "orig_h" | "resp_h") || name.ends_with("_addr")
}

/// Where batches go: a writer of one's own, or one shared with a running
/// capture ([`SharedWriter`]).
pub trait BatchSink {
    fn write_batch(&mut self, table: Table, batch: &RecordBatch) -> Result<(), WriterError>;
}

impl BatchSink for HourlyWriter {
    fn write_batch(&mut self, table: Table, batch: &RecordBatch) -> Result<(), WriterError> {
        self.write(table, batch)
    }
}

/// A writer shared by a running appliance's engine and its imports, locked
/// per batch (`None` once closed at shutdown).
pub type SharedWriter = Arc<std::sync::Mutex<Option<HourlyWriter>>>;

impl BatchSink for SharedWriter {
    fn write_batch(&mut self, table: Table, batch: &RecordBatch) -> Result<(), WriterError> {
        let mut g = self.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_mut() {
            Some(w) => w.write(table, batch),
            None => Err(WriterError::Closed),
        }
    }
}

impl HourlyWriter {
    /// Open a writer under `root`, removing what a crashed run left behind.
    pub fn new(root: &Path, cfg: WriterConfig) -> Result<HourlyWriter, WriterError> {
        HourlyWriter::with_locks(root, cfg, Arc::default())
    }

    /// As [`HourlyWriter::new`], sharing hour claims with retention.
    pub fn with_locks(root: &Path, cfg: WriterConfig, locks: Arc<HourLocks>) -> Result<HourlyWriter, WriterError> {
        fs::create_dir_all(root).map_err(|e| WriterError::Io { path: root.into(), source: e })?;
        // Before anything is removed: what looks left over may be another
        // writer's work in progress.
        let dir_lock = DataDirLock::acquire(root)?;
        layout::recover(root);
        crate::hosts::recover(root);
        let compactor = if cfg.compaction { Some(spawn_compaction(root, &cfg, locks.clone())?) } else { None };
        Ok(HourlyWriter {
            root: root.into(),
            cfg,
            open: BTreeMap::new(),
            dirty: BTreeSet::new(),
            index_due: BTreeSet::new(),
            newest_ns: i64::MIN,
            locks,
            compactor,
            held_bytes: 0,
            stats: WriterStats::default(),
            _dir_lock: dir_lock,
        })
    }

    pub fn locks(&self) -> Arc<HourLocks> {
        self.locks.clone()
    }

    /// Write a batch of `table`, splitting it by hour; each piece is sorted
    /// by `ts` before it is written to a part file.
    pub fn write(&mut self, table: Table, batch: &RecordBatch) -> Result<(), WriterError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let ts = ts_of(table, batch)?;
        if let Some(max) = ts.values().iter().max() {
            self.newest_ns = self.newest_ns.max(*max);
        }
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
                self.write_hour(table, h, &filter_record_batch(batch, &mask)?)?;
            }
        }
        self.close_aged()?;
        Ok(())
    }

    fn write_hour(&mut self, table: Table, hour: i64, batch: &RecordBatch) -> Result<(), WriterError> {
        let key = (table, hour);
        let p = match self.open.entry(key) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                // Waits only if this (late) hour is being compacted or deleted.
                self.locks.claim(key, Holder::Writer);
                e.insert(OpenPart {
                    state: PartState::Held { batches: Vec::new(), bytes: 0 },
                    dir: layout::hour_dir(&self.root, table, hour),
                    rows: 0,
                    opened: Instant::now(),
                })
            }
        };
        match &mut p.state {
            PartState::Held { batches, bytes } => {
                let size = batch.get_array_memory_size();
                batches.push(batch.clone());
                if self.compactor.is_some() && self.held_bytes + size <= self.cfg.hold_bytes {
                    *bytes += size;
                    self.held_bytes += size;
                } else {
                    // Over the budget (or nothing to gain): the part file
                    // starts with what was held.
                    match start_part(&p.dir, table, &self.cfg, batches) {
                        Ok((writer, tmp)) => {
                            self.held_bytes -= *bytes;
                            p.state = PartState::Writing { writer, tmp };
                        }
                        Err(e) => {
                            // What was held stays held; this batch is refused.
                            batches.pop();
                            return Err(e);
                        }
                    }
                }
            }
            PartState::Writing { writer, tmp } => {
                let sorted = sort_by_ts(batch, ts_of(table, batch)?)?;
                writer.write(&sorted).map_err(|e| WriterError::Parquet { path: tmp.clone(), source: e })?;
            }
        }
        p.rows += batch.num_rows();
        self.stats.rows += batch.num_rows() as u64;
        if p.rows >= self.cfg.max_rows_per_file
            && let Some(p) = self.open.remove(&key)
        {
            self.close_part(key, p)?;
        }
        Ok(())
    }

    fn close_part(&mut self, key: PartKey, p: OpenPart) -> Result<(), WriterError> {
        let r = self.finish_part(key.0, p);
        self.locks.release(key);
        if let Ok(Some(_)) = r {
            self.dirty.insert(key);
        }
        r.map(|_| ())
    }

    /// Commit an open hour's rows as a part file (`None`: it had none).
    fn finish_part(&mut self, table: Table, p: OpenPart) -> Result<Option<u64>, WriterError> {
        let (writer, tmp) = match p.state {
            PartState::Writing { writer, tmp } => (writer, tmp),
            PartState::Held { batches, bytes } => {
                self.held_bytes -= bytes;
                if batches.is_empty() {
                    return Ok(None);
                }
                start_part(&p.dir, table, &self.cfg, &batches)?
            }
        };
        let len = finish_part_file(writer, tmp, &p.dir)?;
        self.stats.files += 1;
        self.stats.bytes += len;
        Ok(Some(len))
    }

    /// Close part files older than the flush interval, and hand hours that
    /// have closed to the compactor.
    pub fn close_aged(&mut self) -> Result<(), WriterError> {
        let age = self.cfg.max_file_age;
        let old: Vec<PartKey> = self.open.iter().filter(|(_, p)| p.opened.elapsed() >= age).map(|(k, _)| *k).collect();
        for k in old {
            if let Some(p) = self.open.remove(&k) {
                self.close_part(k, p)?;
            }
        }
        let grace = self.cfg.compaction_grace.as_nanos() as i64;
        let closed: Vec<PartKey> = self
            .dirty
            .iter()
            .filter(|(t, h)| {
                !self.open.contains_key(&(*t, *h))
                    && self.newest_ns >= (h + 1).saturating_mul(HOUR_NS).saturating_add(grace)
            })
            .copied()
            .collect();
        for k in closed {
            self.submit(k, false);
        }
        // A day closes like an hour: on the data clock, once no hour of it
        // is open or waiting.
        let due: Vec<i64> = self
            .index_due
            .iter()
            .filter(|d| self.newest_ns >= (*d + 1).saturating_mul(DAY_NS).saturating_add(grace) && !self.day_busy(**d))
            .copied()
            .collect();
        for d in due {
            self.submit_index(d);
        }
        Ok(())
    }

    /// Whether a flows hour of `day` is open or not yet handed to compaction.
    fn day_busy(&self, day: i64) -> bool {
        let in_day = |k: &PartKey| k.0 == Table::Flows && k.1.div_euclid(24) == day;
        self.open.keys().any(in_day) || self.dirty.iter().any(in_day)
    }

    fn submit_index(&mut self, day: i64) {
        self.index_due.remove(&day);
        if let Some(c) = &self.compactor
            && self.cfg.host_index
        {
            let _ = c.flows.jobs.send(Job::Index(day));
        }
    }

    /// Hand a closed hour to the compactor. If retention holds it, `wait`
    /// waits it out (shutdown); otherwise a later tick tries again.
    fn submit(&mut self, key: PartKey, wait: bool) {
        let Some(c) = &self.compactor else {
            self.dirty.remove(&key);
            return;
        };
        if wait {
            self.locks.claim(key, Holder::Compaction);
        } else if !self.locks.try_claim(key, Holder::Compaction) {
            return;
        }
        self.dirty.remove(&key);
        if key.0 == Table::Flows {
            self.index_due.insert(key.1.div_euclid(24));
        }
        if c.lane(key.0).jobs.send(Job::Compact(key)).is_err() {
            self.locks.release(key);
        }
    }

    /// What the writer has done so far, with what its compaction threads
    /// have done (folded into [`Self::stats`] only when it closes): what a
    /// running appliance's metrics report.
    pub fn stats(&self) -> WriterStats {
        let mut s = self.stats.clone();
        if let Some(c) = &self.compactor {
            for lane in [&c.flows, &c.other] {
                lane.done.lock().unwrap_or_else(|p| p.into_inner()).add_to(&mut s);
            }
        }
        s
    }

    /// Close every open part (shutdown / end of input), then compact every
    /// hour written and wait for the compactor.
    pub fn close(&mut self) -> Result<(), WriterError> {
        let keys: Vec<PartKey> = self.open.keys().copied().collect();
        let mut first_err = None;
        for k in keys {
            let Some(p) = self.open.remove(&k) else { continue };
            let p = match self.write_held(k, p) {
                Ok(()) => continue,
                Err(p) => p,
            };
            if let Err(e) = self.close_part(k, p)
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        let dirty: Vec<PartKey> = self.dirty.iter().copied().collect();
        for k in dirty {
            self.submit(k, true);
        }
        // At the end of input (or shutdown), days that are over by the wall
        // clock are indexed too: an old capture's last day is closed.
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        let due: Vec<i64> = self.index_due.iter().filter(|d| (*d + 1).saturating_mul(DAY_NS) <= now).copied().collect();
        for d in due {
            self.submit_index(d);
        }
        // The threads release each hour they finish; joining them waits for
        // all. A later write (unusual after close) works without compaction.
        if let Some(Compaction { flows, other }) = self.compactor.take() {
            for c in [flows, other] {
                drop(c.jobs);
                let _ = c.handle.join();
                let mut g = c.done.lock().unwrap_or_else(|p| p.into_inner());
                g.add_to(&mut self.stats);
                if let Some(e) = g.lost.take() {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// At close: hand an hour whose rows are all held, and that has no
    /// file yet, to its compaction thread to be written sorted and
    /// compacted at once. `Err` gives the hour back to be committed as a
    /// part file.
    fn write_held(&mut self, key: PartKey, p: OpenPart) -> Result<(), OpenPart> {
        let Some(c) = &self.compactor else { return Err(p) };
        let PartState::Held { batches, bytes } = p.state else { return Err(p) };
        if batches.is_empty() || !layout::data_files(&p.dir).is_empty() {
            return Err(OpenPart { state: PartState::Held { batches, bytes }, ..p });
        }
        self.held_bytes -= bytes;
        self.locks.release(key);
        self.locks.claim(key, Holder::Compaction);
        match c.lane(key.0).jobs.send(Job::Write(key, batches)) {
            Ok(()) => {
                if key.0 == Table::Flows {
                    self.index_due.insert(key.1.div_euclid(24));
                }
                Ok(())
            }
            Err(std::sync::mpsc::SendError(job)) => {
                let Job::Write(_, batches) = job else { unreachable!("the job just sent") };
                self.locks.release(key);
                self.locks.claim(key, Holder::Writer);
                self.held_bytes += bytes;
                Err(OpenPart { state: PartState::Held { batches, bytes }, ..p })
            }
        }
    }
}

fn spawn_compaction(root: &Path, cfg: &WriterConfig, locks: Arc<HourLocks>) -> Result<Compaction, WriterError> {
    let runtime = Compactor::runtime(cfg)?;
    let flows = Compactor::with_runtime(root, cfg.clone(), runtime.clone())?;
    let other = Compactor::with_runtime(root, cfg.clone(), runtime)?;
    let others: Vec<Table> = Table::ALL.into_iter().filter(|t| *t != Table::Flows).collect();
    Ok(Compaction {
        flows: spawn_compactor(flows, "compactor", vec![Table::Flows], cfg.host_index, locks.clone())?,
        other: spawn_compactor(other, "compactor-2", others, false, locks)?,
    })
}

/// A compaction thread for `tables`. It starts with the hours an earlier
/// run left with part files (killed before it compacted them, or their
/// compaction failed), then, with `index_missing`, indexes the closed days
/// that have no host index yet (the flows thread, when the index is on).
fn spawn_compactor(
    compactor: Compactor,
    name: &str,
    tables: Vec<Table>,
    index_missing: bool,
    locks: Arc<HourLocks>,
) -> Result<CompactionThread, WriterError> {
    let root = compactor.root.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let done = Arc::new(Mutex::new(LaneDone::default()));
    let d = done.clone();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
            let grace = compactor.cfg.compaction_grace.as_nanos() as i64;
            for t in tables {
                for h in layout::list_hours(&compactor.root, t) {
                    let closed = now >= (h.hour + 1).saturating_mul(HOUR_NS).saturating_add(grace);
                    // Held by this run's writer (rows for it again: it
                    // hands the hour over itself once it closes) or by
                    // retention (deleting it): not ours.
                    if closed
                        && crate::compact::needs_compaction(&h.path)
                        && locks.try_claim((t, h.hour), Holder::Compaction)
                    {
                        compact_hour(&compactor, (t, h.hour), &locks, &d, "an earlier run's parts");
                    }
                }
            }
            if index_missing {
                // Days closed before this start that have no index yet.
                let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
                for r in compactor.index_missing(now) {
                    log_indexed(r);
                }
            }
            for job in rx {
                let key = match job {
                    Job::Compact(key) => key,
                    Job::Write(key, batches) => {
                        // Counted apart and added after: `done` is read by
                        // `stats()` while the hour is written.
                        let mut this = LaneDone::default();
                        write_held_hour(&compactor, key, batches, &mut this);
                        d.lock().unwrap_or_else(|p| p.into_inner()).absorb(this);
                        locks.release(key);
                        continue;
                    }
                    Job::Index(day) => {
                        if let Some(r) = compactor.index_day(&crate::hosts::date_of(day)).transpose() {
                            log_indexed(r);
                        }
                        continue;
                    }
                };
                compact_hour(&compactor, key, &locks, &d, "closed");
            }
        })
        .map_err(|e| WriterError::Io { path: root, source: e })?;
    Ok(CompactionThread { jobs: tx, done, handle })
}

/// Compact an hour this thread has claimed, release it, count and log
/// the outcome (`why`: what the hour was waiting for).
fn compact_hour(compactor: &Compactor, key: PartKey, locks: &HourLocks, done: &Mutex<LaneDone>, why: &str) {
    let r = compactor.compact(key.0, key.1);
    locks.release(key);
    let mut g = done.lock().unwrap_or_else(|p| p.into_inner());
    let (date, hour) = layout::partition(key.1);
    match r {
        Ok(Some(Compacted { files_in, rows, bytes_in, bytes_out })) => {
            g.compactions += 1;
            tracing::info!(
                table = key.0.name(),
                date,
                hour,
                files_in,
                rows,
                bytes_in,
                bytes_out,
                why,
                "compacted hour"
            );
        }
        Ok(None) => {}
        Err(e) => {
            g.errors += 1;
            tracing::error!(table = key.0.name(), date, hour, error = %e, "compaction failed; the hour keeps its part files until it is compacted again (rows for it again, or the next start)");
        }
    }
}

fn log_indexed(r: Result<crate::hosts::Indexed, WriterError>) {
    match r {
        Ok(i) => {
            tracing::info!(date = i.date, hours = i.hours, rows = i.rows, bytes = i.bytes, "indexed the hosts of a day")
        }
        Err(e) => tracing::error!(error = %e, "host index failed; lookups of that day read its hours"),
    }
}

fn ts_of(table: Table, batch: &RecordBatch) -> Result<&TimestampNanosecondArray, WriterError> {
    batch
        .column_by_name("ts")
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or(WriterError::NoTs(table.name()))
}

/// Start a hidden part file under `dir` holding `batches` (each sorted by
/// `ts`); on error nothing is left behind.
fn start_part(
    dir: &Path,
    table: Table,
    cfg: &WriterConfig,
    batches: &[RecordBatch],
) -> Result<(Box<ArrowWriter<File>>, PathBuf), WriterError> {
    let Some(first) = batches.first() else { return Err(WriterError::Compaction("no rows to write".into())) };
    fs::create_dir_all(dir).map_err(|e| WriterError::Io { path: dir.into(), source: e })?;
    let n = next_part_number(dir);
    let tmp = dir.join(format!(".part-{n:05}.parquet.tmp"));
    let f = File::create(&tmp).map_err(|e| WriterError::Io { path: tmp.clone(), source: e })?;
    let r = (|| {
        let mut w = ArrowWriter::try_new(f, first.schema(), Some(part_props(table, cfg)))
            .map_err(|e| WriterError::Parquet { path: tmp.clone(), source: e })?;
        for b in batches {
            let sorted = sort_by_ts(b, ts_of(table, b)?)?;
            w.write(&sorted).map_err(|e| WriterError::Parquet { path: tmp.clone(), source: e })?;
        }
        Ok(w)
    })();
    match r {
        Ok(w) => Ok((Box::new(w), tmp)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Finish a part file's footer, fsync it and rename it into place; its size.
fn finish_part_file(writer: Box<ArrowWriter<File>>, tmp: PathBuf, dir: &Path) -> Result<u64, WriterError> {
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
    layout::sync_dir(dir);
    Ok(len)
}

/// A compaction thread's [`Job::Write`]: the held rows as the hour's one
/// compacted file, or, if that fails, as a part file (which stays, as the
/// parts of an hour whose compaction failed do, until rows for the hour
/// come again or the next writer starts).
fn write_held_hour(compactor: &Compactor, key: PartKey, batches: Vec<RecordBatch>, g: &mut LaneDone) {
    let (date, hour) = layout::partition(key.1);
    let table = key.0.name();
    match compactor.write_sorted(key.0, key.1, batches) {
        Ok(Compacted { rows, bytes_out, .. }) => {
            g.compactions += 1;
            g.held_hours += 1;
            g.files += 1;
            g.bytes += bytes_out;
            tracing::info!(table, date, hour, rows, bytes_out, "wrote hour sorted and compacted");
        }
        Err((e, batches)) => {
            g.errors += 1;
            tracing::error!(table, date, hour, error = %e, "writing the hour compacted failed; writing it as a part file");
            let dir = layout::hour_dir(&compactor.root, key.0, key.1);
            match start_part(&dir, key.0, &compactor.cfg, &batches).and_then(|(w, tmp)| finish_part_file(w, tmp, &dir))
            {
                Ok(len) => {
                    g.files += 1;
                    g.bytes += len;
                }
                Err(e) => {
                    tracing::error!(table, date, hour, error = %e, "writing the hour's rows failed; they are lost");
                    g.lost.get_or_insert(e);
                }
            }
        }
    }
}

fn sort_by_ts(batch: &RecordBatch, ts: &TimestampNanosecondArray) -> Result<RecordBatch, WriterError> {
    if ts.values().windows(2).all(|w| w[0] <= w[1]) {
        return Ok(batch.clone());
    }
    let idx = sort_to_indices(ts, None, None)?;
    Ok(take_record_batch(batch, &idx)?)
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
        let cfg = WriterConfig { compaction: false, ..WriterConfig::default() };
        let mut w = HourlyWriter::new(dir.path(), cfg).unwrap();
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
