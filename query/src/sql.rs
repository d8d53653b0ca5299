//! SQL over the history: a DataFusion session with one table per record
//! type, each a Hive-partitioned listing of `<data>/<table>/date=…/hour=…/`.
//!
//! Guardrails, each breach a clear error: statements are read-only (no DDL,
//! DML or `SET`), every query has a deadline and a memory pool that spills
//! to disk, interactive results stop at a row limit, and a scan of a table
//! with no condition on `ts`, `date` or `hour` is limited to a default time
//! range (and says so in the result's notes).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::physical_plan::{FileScanConfig, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use tapstream_engine::records::Table;

use crate::layout::HOUR_NS;
use crate::store::SnapshotStore;
use crate::udf;

/// Errors of the SQL layer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Sql(String),
    #[error("query took longer than the {0:?} limit (raise sql.timeout_secs, or narrow the time range)")]
    Timeout(Duration),
    #[error("query needs more than the {0} bytes of memory allowed (raise sql.memory_limit_mb, or narrow the query)")]
    Memory(usize),
    #[error("only queries are allowed (SELECT, WITH, EXPLAIN, SHOW): {0}")]
    NotReadOnly(String),
    #[error("data dir {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl QueryError {
    fn from_df(e: DataFusionError, limits: &Guardrails) -> QueryError {
        let msg = e.to_string();
        if msg.contains("Resources exhausted") {
            return QueryError::Memory(limits.memory_bytes);
        }
        if msg.contains("not supported") && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement")) {
            return QueryError::NotReadOnly(msg);
        }
        QueryError::Sql(msg)
    }
}

/// Limits every query runs under.
#[derive(Clone, Debug)]
pub struct Guardrails {
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// Rows an interactive result shows at most (None: all).
    pub max_rows: Option<usize>,
    /// A scan with no condition on time covers this much history.
    pub default_range: Duration,
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            timeout: Duration::from_secs(60),
            memory_bytes: 1 << 30,
            max_rows: Some(10_000),
            default_range: Duration::from_secs(24 * 3600),
        }
    }
}

/// Notes a query's planning left for the user (e.g. a default time range).
pub type Notes = Arc<Mutex<Vec<String>>>;

/// The SQL session over one data dir.
pub struct History {
    ctx: SessionContext,
    limits: Guardrails,
    notes: Notes,
    store: Arc<SnapshotStore>,
    /// Exports streaming now: while any runs, no descriptor is forgotten.
    long_readers: Arc<std::sync::atomic::AtomicUsize>,
}

/// A running query: its batches as a stream, and what the user should know.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub stream: SendableRecordBatchStream,
    pub notes: Vec<String>,
}

impl History {
    /// Answer `country(ip)` and `asn(ip)` from these GeoIP databases.
    pub fn set_geo(&self, geo: Arc<tapstream_engine::geo::Geo>) {
        for f in udf::geo_functions(Some(geo)) {
            self.ctx.register_udf(f);
        }
    }

    /// Open the tables under `data` (missing tables are empty).
    pub async fn open(data: &Path, limits: Guardrails) -> Result<History, QueryError> {
        raise_open_files_limit();
        // No listing cache: compaction and retention change the files, and
        // every query must list what is there now.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(limits.memory_bytes)))
            .with_object_list_cache_limit(0)
            .build_arc()
            .map_err(|e| QueryError::Sql(e.to_string()))?;
        let store = Arc::new(SnapshotStore::new());
        let file_url = url::Url::parse("file://").map_err(|e| QueryError::Sql(e.to_string()))?;
        runtime.register_object_store(&file_url, store.clone());
        let config = SessionConfig::new()
            .with_information_schema(true)
            // Off for the session, on for each scan that gains from it
            // (`late_materialization_pays`).
            .set_bool("datafusion.execution.parquet.pushdown_filters", false)
            // No footers read while planning: each file's footer is read
            // once, when the scan opens it, and prunes its row groups and
            // pages then. Collected at planning, the footers of a 30-day
            // query (~70 MB parsed) overflowed the metadata cache, so a
            // third of them were read and parsed twice.
            .set_bool("datafusion.execution.collect_statistics", false)
            .set_bool("datafusion.execution.parquet.enable_page_index", true)
            .set_bool("datafusion.execution.parquet.bloom_filter_on_read", true)
            // Cheap, selective conditions first (e.g. a port before an address test).
            .set_bool("datafusion.execution.parquet.reorder_filters", true);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        udf::register(&ctx);
        let notes: Notes = Arc::default();
        for t in Table::ALL {
            let provider = table_provider(&ctx, data, t).await?;
            let mut guarded: Arc<dyn TableProvider> = Arc::new(TimeGuard {
                inner: provider,
                table: t.name(),
                range: limits.default_range,
                notes: notes.clone(),
            });
            if t == Table::Flows {
                guarded = Arc::new(crate::hosts::HostLookup::new(guarded, data));
                guarded = Arc::new(crate::flows::FlowsView::new(guarded));
                crate::topn::register(&ctx, guarded.clone());
            }
            ctx.register_table(t.name(), guarded).map_err(|e| QueryError::Sql(e.to_string()))?;
        }
        Ok(History { ctx, limits, notes, store, long_readers: Arc::default() })
    }

    pub fn limits(&self) -> &Guardrails {
        &self.limits
    }

    /// Plan and start `sql`. The stream must be read within the deadline
    /// (see [`History::deadline`]).
    pub async fn query(&self, sql: &str) -> Result<QueryResult, QueryError> {
        check_read_only(sql)?;
        // Files opened for queries that must have ended by now (deadline);
        // an export has none, so nothing is forgotten while one runs.
        if self.long_readers.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            self.store.forget_older_than(self.limits.timeout * 2 + Duration::from_secs(60));
        }
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let fut = async {
            let opts = datafusion::execution::context::SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let df = self.ctx.sql_with_options(sql, opts).await.map_err(|e| QueryError::from_df(e, &self.limits))?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let stream = df.execute_stream().await.map_err(|e| QueryError::from_df(e, &self.limits))?;
            Ok::<_, QueryError>((schema, stream))
        };
        let (schema, stream) = tokio::time::timeout(self.limits.timeout, fut)
            .await
            .map_err(|_| QueryError::Timeout(self.limits.timeout))??;
        let notes = self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(QueryResult { schema, stream, notes })
    }

    /// Plan and start `sql` for an export: planning has the deadline, the
    /// stream has none (it goes as fast as its reader takes it), and the
    /// files it planned with stay open until the stream is dropped.
    pub async fn export(&self, sql: &str) -> Result<QueryResult, QueryError> {
        use futures::StreamExt;
        let res = self.query(sql).await?;
        let guard = LongReader::new(self.long_readers.clone());
        let stream = res.stream.map(move |b| {
            let _held = &guard;
            b
        });
        let stream =
            Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(res.schema.clone(), stream));
        Ok(QueryResult { schema: res.schema, stream, notes: res.notes })
    }

    /// Map an error met while reading a result stream.
    pub fn stream_error(&self, e: DataFusionError) -> QueryError {
        QueryError::from_df(e, &self.limits)
    }
}

/// Counts a streaming export while it lives.
struct LongReader(Arc<std::sync::atomic::AtomicUsize>);

impl LongReader {
    fn new(n: Arc<std::sync::atomic::AtomicUsize>) -> LongReader {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        LongReader(n)
    }
}

impl Drop for LongReader {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Queries hold a descriptor per file they list (see `store`): allow as
/// many as the hard limit permits.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// Reject anything but queries before DataFusion sees it (also catches
/// statements DataFusion would run, like `COPY … TO`).
fn check_read_only(sql: &str) -> Result<(), QueryError> {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::parser::Parser;
    let stmts = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| QueryError::Sql(format!("SQL syntax: {e}")))?;
    if stmts.len() != 1 {
        return Err(QueryError::Sql(format!("expected one statement, got {}", stmts.len())));
    }
    match &stmts[0] {
        Statement::Query(_)
        | Statement::Explain { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. } => Ok(()),
        other => {
            let text = other.to_string();
            let head: String = text.chars().take(40).collect();
            Err(QueryError::NotReadOnly(head))
        }
    }
}

/// Bytes read from the end of a file to find its footer and page index,
/// in one read when they fit (about 42 KiB for a compacted hour of flows;
/// more takes a second read). DataFusion's default of 512 KiB copied twelve
/// times that for every file opened: a 30-day query opens 720 of them.
pub(crate) const METADATA_READ: usize = 64 * 1024;

/// A table's schema as queries read it: text columns as `Utf8View`.
/// Parquet text decodes to views without copying each value (a dictionary
/// page's text is shared by the rows that use it, short text lies inside
/// the view), where `Utf8` copies every value into one buffer: a count over
/// 41 M addresses spent more on that copy than on its test. What DataFusion
/// reads Parquet text as by default; results carry views too. The columns
/// named in `keep` stay as they are.
pub(crate) fn read_schema(schema: &arrow::datatypes::Schema, keep: &[&str]) -> SchemaRef {
    text_as(schema, DataType::Utf8View, keep)
}

/// `schema` with every top-level text column (other than those in `keep`)
/// of type `to`.
pub(crate) fn text_as(schema: &arrow::datatypes::Schema, to: DataType, keep: &[&str]) -> SchemaRef {
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if !keep.contains(&f.name().as_str()) => {
                f.as_ref().clone().with_data_type(to.clone())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The listing table of `t`. Its directory may not exist yet (nothing
/// written so far): every scan lists what is there at that moment, so a
/// table that appears later is read like the others.
async fn table_provider(ctx: &SessionContext, data: &Path, t: Table) -> Result<Arc<dyn TableProvider>, QueryError> {
    let partition_cols = vec![("date".to_string(), DataType::Utf8), ("hour".to_string(), DataType::Utf8)];
    let dir = data.join(t.name());
    let abs = match dir.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::path::absolute(&dir).map_err(|e| QueryError::Io { path: dir.clone(), source: e })?
        }
        Err(e) => return Err(QueryError::Io { path: dir.clone(), source: e }),
    };
    let url = ListingTableUrl::parse(format!("{}/", abs.display())).map_err(|e| QueryError::Sql(e.to_string()))?;
    let format = ParquetFormat::default().with_metadata_size_hint(Some(METADATA_READ));
    let opts =
        ListingOptions::new(Arc::new(format)).with_file_extension(".parquet").with_table_partition_cols(partition_cols);
    let cfg = ListingTableConfig::new(url).with_listing_options(opts).with_schema(read_schema(&t.schema(), &[]));
    let _ = ctx;
    Ok(Arc::new(ListingTable::try_new(cfg).map_err(|e| QueryError::Sql(e.to_string()))?))
}

/// Wraps a table: a scan with no condition on time gets the default range.
#[derive(Debug)]
struct TimeGuard {
    inner: Arc<dyn TableProvider>,
    table: &'static str,
    range: Duration,
    notes: Notes,
}

/// The `date` and `hour` partition values of a time (UTC).
fn date_hour(t: time::OffsetDateTime) -> (String, String) {
    (format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day()), format!("{:02}", t.hour()))
}

/// Partitions at or after hour `h` of day `d`.
fn at_or_after(d: &str, h: &str) -> Expr {
    col("date").gt(lit(d.to_string())).or(col("date").eq(lit(d.to_string())).and(col("hour").gt_eq(lit(h.to_string()))))
}

/// Partitions at or before hour `h` of day `d`.
fn at_or_before(d: &str, h: &str) -> Expr {
    col("date").lt(lit(d.to_string())).or(col("date").eq(lit(d.to_string())).and(col("hour").lt_eq(lit(h.to_string()))))
}

/// Partition conditions implied by one filter: `ts` compared with a
/// constant bounds the hours that can hold matching rows. Conjunctions are
/// followed; anything else implies nothing.
pub(crate) fn partition_bounds(e: &Expr) -> Vec<Expr> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    if let Expr::Between(b) = e
        && !b.negated
    {
        let mut v = partition_bounds(&b.expr.clone().gt_eq(*b.low.clone()));
        v.extend(partition_bounds(&b.expr.clone().lt_eq(*b.high.clone())));
        return v;
    }
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else { return Vec::new() };
    if *op == Operator::And {
        let mut v = partition_bounds(left);
        v.extend(partition_bounds(right));
        return v;
    }
    let Some((op, v)) = ts_bound(left, *op, right) else { return Vec::new() };
    let hour_of = |ns: i128| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok().map(date_hour);
    match op {
        Operator::Gt | Operator::GtEq => hour_of(v).map(|(d, h)| vec![at_or_after(&d, &h)]).unwrap_or_default(),
        // `ts < 10:00` needs nothing from the 10:00 hour.
        Operator::Lt => hour_of(v - 1).map(|(d, h)| vec![at_or_before(&d, &h)]).unwrap_or_default(),
        Operator::LtEq => hour_of(v).map(|(d, h)| vec![at_or_before(&d, &h)]).unwrap_or_default(),
        Operator::Eq => hour_of(v).map(|(d, h)| vec![at_or_after(&d, &h), at_or_before(&d, &h)]).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `left op right` as `ts op constant` (nanoseconds), when it is a
/// comparison of `ts` with a constant time.
pub(crate) fn ts_bound(
    left: &Expr,
    op: datafusion::logical_expr::Operator,
    right: &Expr,
) -> Option<(datafusion::logical_expr::Operator, i128)> {
    use datafusion::common::ScalarValue;
    let ts_ns = |x: &Expr| match x {
        Expr::Literal(ScalarValue::TimestampNanosecond(Some(n), _), _) => Some(*n as i128),
        Expr::Literal(ScalarValue::TimestampMicrosecond(Some(n), _), _) => Some(*n as i128 * 1_000),
        Expr::Literal(ScalarValue::TimestampMillisecond(Some(n), _), _) => Some(*n as i128 * 1_000_000),
        Expr::Literal(ScalarValue::TimestampSecond(Some(n), _), _) => Some(*n as i128 * 1_000_000_000),
        _ => None,
    };
    let is_ts = |x: &Expr| matches!(x, Expr::Column(c) if c.name == "ts");
    match (is_ts(left), ts_ns(right), is_ts(right), ts_ns(left)) {
        (true, Some(v), _, _) => Some((op, v)),
        (_, _, true, Some(v)) => Some((op.swap()?, v)),
        _ => None,
    }
}

/// Whether the partition bounds of `e` select exactly the rows `e` does:
/// `ts >= T` or `ts < T` with `T` on the hour. An hour's directory holds
/// exactly the rows whose `ts` falls in that hour (the writer partitions
/// by it), so such a condition needs no test of each row's `ts`: the scan
/// applies it by listing, and neither decodes nor compares the column.
fn exact_by_partition(e: &Expr) -> bool {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else { return false };
    match ts_bound(left, *op, right) {
        Some((Operator::GtEq | Operator::Lt, v)) => {
            v.rem_euclid(i128::from(HOUR_NS)) == 0 && !partition_bounds(e).is_empty()
        }
        _ => false,
    }
}

pub(crate) fn mentions_time(e: &Expr) -> bool {
    e.column_refs().iter().any(|c| matches!(c.name.as_str(), "ts" | "date" | "hour" | "last_ts"))
}

#[async_trait]
impl TableProvider for TimeGuard {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        let mut answers = self.inner.supports_filters_pushdown(filters)?;
        for (a, f) in answers.iter_mut().zip(filters) {
            if exact_by_partition(f) {
                *a = TableProviderFilterPushDown::Exact;
            }
        }
        Ok(answers)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // Conditions on `ts` that the partitions answer exactly are
        // replaced by their partition bounds (see `exact_by_partition`).
        let mut f: Vec<Expr> = filters.iter().filter(|e| !exact_by_partition(e)).cloned().collect();
        if filters.iter().any(mentions_time) {
            // Bounds on `ts` become bounds on the partition columns too, so
            // the listing skips whole hour directories (row-group statistics
            // would prune inside them only after every footer was read).
            f.extend(filters.iter().flat_map(partition_bounds));
        } else {
            let since = time::OffsetDateTime::now_utc() - self.range;
            let (d, h) = date_hour(since);
            self.notes.lock().unwrap_or_else(|p| p.into_inner()).push(format!(
                "{}: no condition on ts, date or hour reached this table, so only the last {} h were searched (since {d} {h}:00 UTC); add one (e.g. WHERE ts > now() - INTERVAL '7 days') to search more",
                self.table,
                self.range.as_secs() / 3600
            ));
            f.push(at_or_after(&d, &h));
        }
        let plan = self.inner.scan(state, projection, &f, limit).await?;
        let schema = self.inner.schema();
        let Some(exec) = plan.downcast_ref::<DataSourceExec>() else { return Ok(plan) };
        let Some(cfg) = exec.data_source().downcast_ref::<FileScanConfig>() else { return Ok(plan) };
        let Some(parquet) = cfg.file_source.downcast_ref::<ParquetSource>() else { return Ok(plan) };
        let mut source = parquet.clone();
        // Ranges of address text implied by `cidr_contains` conditions go
        // to the scan's predicate only (DataFusion adds the query's filter
        // to it): row groups and pages outside them are skipped, and no
        // row is compared with them (the condition itself is).
        let bounds =
            datafusion::logical_expr::utils::conjunction(f.iter().flat_map(|e| udf::address_bounds(e, &schema)));
        if let Some(b) = bounds {
            let df_schema = datafusion::common::DFSchema::try_from(schema.as_ref().clone())?;
            source = source.with_predicate(state.create_physical_expr(b, &df_schema)?);
        }
        // Bloom filters are read only for a condition they can answer.
        source = source.with_bloom_filter_on_read(f.iter().any(bloom_answers));
        // The Parquet decoder tests the conditions (the session leaves it
        // off) only where that pays.
        if late_materialization_pays(&schema, projection, &f) {
            source = source.with_pushdown_filters(true);
        }
        let mut cfg = cfg.clone();
        cfg.file_source = Arc::new(source);
        Ok(DataSourceExec::from_data_source(cfg))
    }
}

/// Whether a bloom filter can rule row groups out for `e`: an equality or
/// `IN` list on a column that has them (the address columns,
/// [`crate::writer::is_address_column`]), alone or under AND/OR. Otherwise
/// reading them is pure cost: DataFusion looks up a filter in every row
/// group for any `column = constant` (a port, say), ~50 ms over 720 hours
/// for a column that has none.
fn bloom_answers(e: &Expr) -> bool {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let address = |e: &Expr| matches!(e, Expr::Column(c) if crate::writer::is_address_column(&c.name));
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => address(left) || address(right),
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And | Operator::Or, right }) => {
            bloom_answers(left) || bloom_answers(right)
        }
        Expr::InList(l) => !l.negated && address(&l.expr),
        _ => false,
    }
}

/// Whether testing `filters` inside the Parquet decoder (before the other
/// columns are decoded) can save anything for a scan of `projection`: only
/// when some column read is not one the conditions test. Otherwise the
/// decoder's row selection is pure cost (its per-batch selections make a
/// port or address count over 40 M rows ~1.6x slower than decoding the
/// columns and filtering them as a whole); page and row-group pruning work
/// either way.
fn late_materialization_pays(
    schema: &arrow::datatypes::Schema,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
) -> bool {
    let refs: Vec<_> = filters.iter().flat_map(|e| e.column_refs()).collect();
    if refs.is_empty() {
        return true;
    }
    let other = |i: &usize| {
        let name = schema.field(*i).name();
        !refs.iter().any(|c| &c.name == name) && !matches!(name.as_str(), "date" | "hour")
    };
    match projection {
        Some(p) => p.iter().any(other),
        None => (0..schema.fields().len()).any(|i| other(&i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloom_filters_are_read_for_equalities_on_addresses_only() {
        let ip = || lit("10.0.0.1");
        let port = || col("resp_p").eq(lit(443u16));
        let net = udf::functions()
            .into_iter()
            .find(|f| f.name() == "cidr_contains")
            .expect("cidr_contains")
            .call(vec![lit("10.0.0.0/8"), col("orig_h")]);
        for (e, answers) in [
            (col("orig_h").eq(ip()), true),
            (ip().eq(col("resp_h")), true),
            (col("resp_h").in_list(vec![ip(), lit("10.0.0.2")], false), true),
            (col("resp_h").in_list(vec![ip()], true), false),
            (col("orig_h").eq(ip()).or(col("resp_h").eq(ip())), true),
            (port().and(col("orig_h").eq(ip())), true),
            (port(), false),
            (col("orig_h").not_eq(ip()), false),
            (col("service").eq(lit("dns")), false),
            (net.clone(), false),
            (net.and(port()), false),
        ] {
            assert_eq!(bloom_answers(&e), answers, "{e}");
        }
    }
}
