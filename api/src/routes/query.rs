//! SQL over the history (`/api/query`), under the history's guardrails
//! (read-only, timeout, memory limit, default time range) and a row limit.

use std::time::Instant;

use axum::extract::State;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Body, Me, audit, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SqlQuery")]
pub struct Query {
    #[schemars(length(min = 1, max = 100000), pattern(r"\S"))]
    sql: String,
    /// Rows to return, at most the server's `sql.max_rows` (default: that).
    #[serde(default)]
    #[schemars(range(min = 1))]
    limit: Option<u32>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Column {
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

/// A result's columns: name and Arrow type.
pub(crate) fn columns(schema: &arrow::datatypes::Schema) -> Vec<Column> {
    schema.fields().iter().map(|f| Column { name: f.name().clone(), ty: f.data_type().to_string() }).collect()
}

#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "SqlAnswer")]
pub struct Answer {
    columns: Vec<Column>,
    rows: Vec<serde_json::Value>,
    /// More rows existed than returned.
    truncated: bool,
    /// Notes from the guardrails (e.g. the default time range applied).
    notes: Vec<String>,
    elapsed_ms: u64,
}

pub async fn run(State(st): State<AppState>, me: Me, Body(q): Body<Query>) -> ApiResult<axum::Json<Answer>> {
    if q.sql.trim().is_empty() || q.sql.len() > 100_000 {
        return Err(ApiError::unprocessable("sql: 1 byte to 100 KB"));
    }
    let h = st.history().await?;
    let max = h.limits().max_rows.unwrap_or(10_000);
    let limit = match q.limit {
        None => max,
        Some(l) if l >= 1 && l as usize <= max => l as usize,
        Some(l) => return Err(ApiError::unprocessable(format!("limit {l}: 1 to {max}"))),
    };
    let t0 = Instant::now();
    let sql = q.sql.clone();
    let outcome = st
        .on_history(move |st| async move {
            let h = st.history().await?;
            let timeout = h.limits().timeout;
            let work = async {
                let res = h.query(&sql).await?;
                let mut batches = Vec::new();
                let (mut rows, mut truncated) = (0usize, false);
                let mut stream = res.stream;
                while let Some(b) = stream.next().await {
                    let mut b = b.map_err(|e| h.stream_error(e))?;
                    if rows + b.num_rows() > limit {
                        b = b.slice(0, limit - rows);
                        truncated = true;
                    }
                    rows += b.num_rows();
                    batches.push(b);
                    if truncated {
                        break;
                    }
                }
                Ok::<_, tapstream_query::QueryError>((res.schema, batches, truncated, res.notes))
            };
            Ok(match tokio::time::timeout(timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(tapstream_query::QueryError::Timeout(timeout)),
            })
        })
        .await?;
    let mut entry = me.audit("query", "history", serde_json::json!({ "sql": truncate(&q.sql, 2000) }));
    entry.ok = outcome.is_ok();
    audit(&st, entry)?;
    let (schema, batches, truncated, notes) = outcome?;
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        w.write(b).map_err(ApiError::internal)?;
    }
    w.finish().map_err(ApiError::internal)?;
    let buf = w.into_inner();
    let rows: Vec<serde_json::Value> =
        if buf.is_empty() { Vec::new() } else { serde_json::from_slice(&buf).map_err(ApiError::internal)? };
    Ok(json(Answer { columns: columns(&schema), rows, truncated, notes, elapsed_ms: t0.elapsed().as_millis() as u64 }))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
