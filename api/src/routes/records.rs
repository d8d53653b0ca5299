//! `/api/records`: one page of a table's rows (flows or a protocol's
//! records) for a time range and the filter bar's fields, newest first —
//! the console's explorer. Open to every role (it reads what the
//! dashboards already show); any SQL stays with `/api/query`.

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::query::Column;
use super::traffic::{Selection, rows};
use super::{Params, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use tapstream_engine::records::Table;

/// Rows per page at most (the console's table is virtualised up to this).
pub const MAX_ROWS: u32 = 10_000;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    /// flows (default), dns, tls, http, dhcp or alerts.
    #[schemars(extend("enum" = ["flows", "dns", "tls", "http", "dhcp", "alerts"]))]
    table: Option<String>,
    /// RFC 3339 or Unix seconds (default: an hour before `to`).
    #[schemars(pattern(super::audit::TIME))]
    from: Option<String>,
    /// Default: now.
    #[schemars(pattern(super::audit::TIME))]
    to: Option<String>,
    ip: Option<String>,
    cidr: Option<String>,
    port: Option<u16>,
    #[schemars(extend("enum" = ["tcp", "udp", "icmp"]))]
    protocol: Option<String>,
    #[schemars(pattern(r"^[A-Za-z]{2}$"))]
    country: Option<String>,
    /// Text in DNS queries, TLS server names, HTTP hosts and URIs.
    #[schemars(length(min = 1, max = 200))]
    text: Option<String>,
    /// One connection's rows, by its id.
    #[schemars(pattern(r"^[A-Za-z0-9]{1,32}$"))]
    uid: Option<String>,
    /// Only these columns in the rows (comma separated; default all). The
    /// answer's `columns` still lists every column of the table.
    #[schemars(length(min = 1, max = 2000))]
    columns: Option<String>,
    /// Rows per page, 1 to 10,000 (default 1,000).
    #[schemars(range(min = 1, max = 10000))]
    limit: Option<u32>,
    /// Rows to skip (paging).
    #[schemars(range(max = 1000000))]
    offset: Option<u32>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Records {
    table: String,
    from: String,
    to: String,
    columns: Vec<Column>,
    rows: Vec<serde_json::Value>,
    offset: u32,
    /// More rows follow this page.
    more: bool,
}

pub async fn list(State(st): State<AppState>, Params(q): Params<RecordsQuery>) -> ApiResult<axum::Json<Records>> {
    let name = q.table.as_deref().unwrap_or("flows");
    let table = Table::from_name(name)
        .filter(|t| !matches!(t, Table::Stats))
        .ok_or_else(|| ApiError::bad_request(format!("table `{name}`: flows, dns, tls, http, dhcp or alerts")))?;
    let (from, to) = super::audit::time_range(q.from.as_deref(), q.to.as_deref())?;
    let limit = q.limit.unwrap_or(1_000);
    if !(1..=MAX_ROWS).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit {limit}: 1 to {MAX_ROWS}")));
    }
    let offset = q.offset.unwrap_or(0);
    if offset > 1_000_000 {
        return Err(ApiError::bad_request("offset: at most 1,000,000 (narrow the range instead)"));
    }
    let schema = table.schema();
    let has = |c: &str| schema.field_with_name(c).is_ok();
    let range = format!("ts >= to_timestamp_nanos({from}) AND ts < to_timestamp_nanos({to})");
    let sel = Selection {
        ip: q.ip.as_deref(),
        cidr: q.cidr.as_deref(),
        port: q.port,
        protocol: q.protocol.as_deref(),
        country: q.country.as_deref(),
        text: q.text.as_deref(),
    };
    let mut conds = vec![range.clone()];
    conds.extend(sel.sql(&has, &range)?);
    if let Some(uid) = &q.uid {
        if uid.is_empty() || uid.len() > 32 || !uid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ApiError::bad_request(format!("uid `{uid}`: letters and digits")));
        }
        if !has("uid") {
            return Err(ApiError::bad_request("this table has no connection ids"));
        }
        conds.push(format!("uid = '{uid}'"));
    }
    // Named columns only: each checked against the table's schema before
    // it is written into the query (quoted, as the schema spells it).
    let select = match &q.columns {
        None => "*".to_string(),
        Some(list) => {
            let mut cols = Vec::new();
            for c in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if !has(c) {
                    return Err(ApiError::bad_request(format!("columns: `{c}` is not a column of {}", table.name())));
                }
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
            if cols.is_empty() {
                return Err(ApiError::bad_request("columns: name at least one"));
            }
            cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
        }
    };
    let sql = format!(
        "SELECT {select} FROM {} WHERE {} ORDER BY ts DESC LIMIT {} OFFSET {offset}",
        table.name(),
        conds.join(" AND "),
        limit + 1
    );
    let mut rows = rows(&st, &sql).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);

    Ok(json(Records {
        table: table.name().to_string(),
        from: super::audit::rfc3339(from),
        to: super::audit::rfc3339(to),
        columns: super::query::columns(&schema),
        rows,
        offset,
        more,
    }))
}
