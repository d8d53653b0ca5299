//! The audit log (`/api/user_activity`): logins and failures, exports,
//! configuration and rule changes, user changes.

use axum::extract::State;
use rusqlite::types::Value;
use serde::{Deserialize, Serialize};

use super::{Params, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AuditFilter")]
pub struct Filter {
    user: Option<String>,
    action: Option<String>,
    /// RFC 3339 or Unix seconds.
    #[schemars(pattern(TIME))]
    from: Option<String>,
    #[schemars(pattern(TIME))]
    to: Option<String>,
    /// Newest first; at most 1000 (default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<u32>,
}

#[derive(Serialize, Debug, schemars::JsonSchema)]
#[schemars(rename = "AuditEntry")]
pub struct Entry {
    pub id: i64,
    pub time: String,
    pub user: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
    pub addr: String,
    pub ok: bool,
}

/// What `parse_time` reads, for the API document.
pub const TIME: &str =
    r"^([0-9]{1,12}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))$";

/// The `from`/`to` of a request: `to` defaults to now and `from` to an hour
/// before it; `from` must come first.
pub fn time_range(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), ApiError> {
    let to = match to {
        Some(t) => parse_time(t)?,
        None => crate::store::now_ns(),
    };
    let from = match from {
        Some(t) => parse_time(t)?,
        None => to - 3_600 * 1_000_000_000,
    };
    if from >= to {
        return Err(ApiError::bad_request("`from` must be before `to`"));
    }
    Ok((from, to))
}

/// A time in a query: RFC 3339 or Unix seconds, as ns.
pub fn parse_time(s: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos() as i64)
        .map_err(|_| ApiError::bad_request(format!("`{s}` is not a time (RFC 3339 or Unix seconds)")))
}

pub fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

pub async fn list(State(st): State<AppState>, Params(f): Params<Filter>) -> ApiResult<axum::Json<Vec<Entry>>> {
    let limit = f.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let mut sql = String::from("SELECT id, ts_ns, user, action, target, detail, addr, ok FROM audit WHERE 1=1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(u) = f.user {
        sql += " AND user = ?";
        args.push(Value::Text(u));
    }
    if let Some(a) = f.action {
        sql += " AND action = ?";
        args.push(Value::Text(a));
    }
    if let Some(t) = f.from {
        sql += " AND ts_ns >= ?";
        args.push(Value::Integer(parse_time(&t)?));
    }
    if let Some(t) = f.to {
        sql += " AND ts_ns < ?";
        args.push(Value::Integer(parse_time(&t)?));
    }
    sql += " ORDER BY id DESC LIMIT ?";
    args.push(Value::Integer(limit as i64));
    let rows = st.store.with(|c| {
        let mut q = c.prepare(&sql)?;
        q.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(Entry {
                id: r.get(0)?,
                time: rfc3339(r.get(1)?),
                user: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                detail: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(serde_json::Value::Null),
                addr: r.get(6)?,
                ok: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    Ok(json(rows))
}
