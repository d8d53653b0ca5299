//! Top-N table functions over `flows`: the questions an operator asks
//! first, answered without writing the GROUP BY.
//!
//! ```sql
//! SELECT * FROM top_talkers(10)                         -- last 24 h
//! SELECT * FROM top_ports(20, 168)                      -- last 7 days
//! SELECT * FROM top_sources(5, '2026-11-01T00:00:00Z', '2026-11-02T00:00:00Z')
//! ```
//!
//! Each takes N, then either a number of hours back from now (default 24)
//! or a `from`, `to` pair of times, and reads `flows` through the same
//! guarded table as any query (so partitions outside the range are skipped).
//! Bytes are IP bytes both ways (`orig_ip_bytes + resp_ip_bytes`), packets
//! both ways; rows are ordered by bytes (ports: by flows), ties by key.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col, lit};
use datafusion::prelude::SessionContext;

/// Which top-N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Hosts by traffic sent and received (each flow counts for both ends).
    Talkers,
    /// Originators (`orig_h`) by traffic.
    Sources,
    /// Responders (`resp_h`) by traffic.
    Destinations,
    /// Host pairs by traffic.
    Conversations,
    /// Responder ports (with transport protocol) by flows.
    Ports,
}

impl Kind {
    const ALL: [(Kind, &'static str); 5] = [
        (Kind::Talkers, "top_talkers"),
        (Kind::Sources, "top_sources"),
        (Kind::Destinations, "top_destinations"),
        (Kind::Conversations, "top_conversations"),
        (Kind::Ports, "top_ports"),
    ];
}

#[derive(Debug)]
struct TopN {
    kind: Kind,
    name: &'static str,
    flows: Arc<dyn TableProvider>,
}

const NS_PER_HOUR: i64 = 3_600_000_000_000;

fn bad(name: &str, msg: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "{name}: {msg}; call it as {name}(N), {name}(N, HOURS) or {name}(N, 'FROM', 'TO') with RFC 3339 times"
    ))
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        Expr::Cast(c) => literal(&c.expr),
        _ => None,
    }
}

/// A time argument: a timestamp, or text in RFC 3339.
fn time_arg(name: &str, e: &Expr) -> Result<i64> {
    let v = literal(e).ok_or_else(|| bad(name, "times must be literals"))?;
    let ts = datafusion::arrow::datatypes::DataType::Timestamp(
        datafusion::arrow::datatypes::TimeUnit::Nanosecond,
        Some("UTC".into()),
    );
    match v.cast_to(&ts) {
        Ok(ScalarValue::TimestampNanosecond(Some(n), _)) => Ok(n),
        _ => Err(bad(name, &format!("`{v}` is not a time"))),
    }
}

fn count_arg(name: &str, e: &Expr, what: &str) -> Result<i64> {
    let v = literal(e).ok_or_else(|| bad(name, &format!("{what} must be a number")))?;
    match v.cast_to(&datafusion::arrow::datatypes::DataType::Int64) {
        Ok(ScalarValue::Int64(Some(n))) if n > 0 => Ok(n),
        _ => Err(bad(name, &format!("{what} must be a positive whole number, not `{v}`"))),
    }
}

impl TableFunctionImpl for TopN {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let name = self.name;
        let exprs = args.exprs();
        let n = match exprs.first() {
            Some(e) => count_arg(name, e, "N")?,
            None => return Err(bad(name, "N is missing")),
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        let (from, to) = match exprs.len() {
            1 => (now - 24 * NS_PER_HOUR, None),
            2 => (now - count_arg(name, &exprs[1], "HOURS")?.saturating_mul(NS_PER_HOUR), None),
            3 => (time_arg(name, &exprs[1])?, Some(time_arg(name, &exprs[2])?)),
            _ => return Err(bad(name, "too many arguments")),
        };
        if to.is_some_and(|t| t <= from) {
            return Err(bad(name, "TO must be after FROM"));
        }
        let plan = self.plan(n as usize, from, to)?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

impl TopN {
    fn plan(&self, n: usize, from: i64, to: Option<i64>) -> Result<datafusion::logical_expr::LogicalPlan> {
        let ts = |v: i64| lit(ScalarValue::TimestampNanosecond(Some(v), Some("UTC".into())));
        let scan = || -> Result<LogicalPlanBuilder> {
            let mut cond = col("ts").gt_eq(ts(from));
            if let Some(t) = to {
                cond = cond.and(col("ts").lt(ts(t)));
            }
            LogicalPlanBuilder::scan("flows", provider_as_source(self.flows.clone()), None)?.filter(cond)
        };
        let bytes = || (col("orig_ip_bytes") + col("resp_ip_bytes")).alias("b");
        let pkts = || (col("orig_pkts") + col("resp_pkts")).alias("p");
        let (rows, keys, order) = match self.kind {
            Kind::Talkers => {
                let resp = scan()?.project(vec![col("resp_h").alias("host"), bytes(), pkts()])?.build()?;
                let b = scan()?.project(vec![col("orig_h").alias("host"), bytes(), pkts()])?.union(resp)?;
                (b, vec!["host"], "bytes")
            }
            Kind::Sources => {
                (scan()?.project(vec![col("orig_h").alias("host"), bytes(), pkts()])?, vec!["host"], "bytes")
            }
            Kind::Destinations => {
                (scan()?.project(vec![col("resp_h").alias("host"), bytes(), pkts()])?, vec!["host"], "bytes")
            }
            Kind::Conversations => (
                scan()?.project(vec![col("orig_h").alias("orig_h"), col("resp_h").alias("resp_h"), bytes(), pkts()])?,
                vec!["orig_h", "resp_h"],
                "bytes",
            ),
            Kind::Ports => (
                scan()?.project(vec![col("proto"), col("resp_p").alias("port"), bytes(), pkts()])?,
                vec!["proto", "port"],
                "flows",
            ),
        };
        let mut sort = vec![col(order).sort(false, false)];
        sort.extend(keys.iter().map(|k| col(*k).sort(true, false)));
        rows.aggregate(
            keys.iter().map(|k| col(*k)).collect::<Vec<_>>(),
            vec![sum(col("b")).alias("bytes"), sum(col("p")).alias("packets"), count(lit(1u8)).alias("flows")],
        )?
        .sort(sort)?
        .limit(0, Some(n))?
        .build()
    }
}

/// Register the top-N functions over the (guarded) `flows` table.
pub fn register(ctx: &SessionContext, flows: Arc<dyn TableProvider>) {
    for (kind, name) in Kind::ALL {
        ctx.register_udtf(name, Arc::new(TopN { kind, name, flows: flows.clone() }));
    }
}
