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
    /// The page older than the one that gave this cursor (its `older`).
    #[schemars(pattern(r"^\d{1,19}\.\d{1,10}$"))]
    before: Option<String>,
    /// The page newer than the one that gave this cursor (its `newer`).
    #[schemars(pattern(r"^\d{1,19}\.\d{1,10}$"))]
    after: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Records {
    table: String,
    from: String,
    to: String,
    columns: Vec<Column>,
    rows: Vec<serde_json::Value>,
    /// Older rows follow this page.
    more: bool,
    /// Cursor for the next older page (`before=`), when there is one.
    older: Option<String>,
    /// Cursor for the next newer page (`after=`); none on the first page.
    newer: Option<String>,
}

/// A place in a table's rows ordered newest first: below the first `k`
/// rows whose time is exactly `ts` (ns). Paging by place, not by a count
/// of rows, keeps pages apart while the history grows under them: flows
/// are written when they end, with the time they began, so rows keep
/// arriving inside a range already shown.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cursor {
    ts: i64,
    k: u64,
}

impl Cursor {
    fn parse(name: &str, s: &str) -> ApiResult<Cursor> {
        let bad = || ApiError::bad_request(format!("{name} `{s}`: a cursor from an answer's `older` or `newer`"));
        let (ts, k) = s.split_once('.').ok_or_else(bad)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(ts) || !digits(k) {
            return Err(bad());
        }
        Ok(Cursor { ts: ts.parse().map_err(|_| bad())?, k: k.parse().map_err(|_| bad())? })
    }

    fn text(self) -> String {
        format!("{}.{}", self.ts, self.k)
    }
}

/// Which page: the newest, or the one on either side of a place.
#[derive(Clone, Copy)]
enum Page {
    Newest,
    Before(Cursor),
    After(Cursor),
}

/// How many of a page's row times (`ts`) are `t`: the rows of the page at
/// its edge time, which a cursor at that time steps over.
fn at_time(ts: &[i64], t: i64) -> u64 {
    ts.iter().filter(|&&x| x == t).count() as u64
}

/// The time (ns) the query added to each row, taken back out.
const TS_NS: &str = "_ts_ns";

fn take_ts(row: &mut serde_json::Value) -> ApiResult<i64> {
    row.as_object_mut()
        .and_then(|o| o.remove(TS_NS))
        .and_then(|v| v.as_i64())
        .ok_or_else(|| ApiError::internal("a record without its time"))
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
    let from_place = match (&q.before, &q.after) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("before and after: one at a time")),
        (Some(c), None) => Page::Before(Cursor::parse("before", c)?),
        (None, Some(c)) => Page::After(Cursor::parse("after", c)?),
        (None, None) => Page::Newest,
    };
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
    // Ties on ts are ordered by the row's id where the table has one, so
    // every query sees them in the same order.
    let tie = ["uid", "id"].into_iter().find(|c| has(c));
    let order = |dir: &str| match tie {
        Some(c) => format!("ts {dir}, \"{c}\" {dir}"),
        None => format!("ts {dir}"),
    };
    let count = |ts: i64| {
        let sql = format!(
            "SELECT count(*) AS n FROM {} WHERE {} AND ts = to_timestamp_nanos({ts})",
            table.name(),
            conds.join(" AND ")
        );
        let st = st.clone();
        async move {
            let r = rows(&st, &sql).await?;
            Ok::<u64, ApiError>(r.first().and_then(|r| r["n"].as_u64()).unwrap_or(0))
        }
    };
    let page = |bound: &str, dir: &str, skip: u64| {
        format!(
            "SELECT {select}, CAST(ts AS BIGINT) AS \"{TS_NS}\" FROM {} WHERE {}{bound} ORDER BY {} LIMIT {} OFFSET {skip}",
            table.name(),
            conds.join(" AND "),
            order(dir),
            limit + 1
        )
    };
    let (mut found, older, newer);
    match from_place {
        Page::Newest | Page::Before(_) => {
            let (bound, skip, above) = match from_place {
                Page::Before(c) => (format!(" AND ts <= to_timestamp_nanos({})", c.ts), c.k, Some(c)),
                _ => (String::new(), 0, None),
            };
            found = rows(&st, &page(&bound, "DESC", skip)).await?;
            let more = found.len() > limit as usize;
            found.truncate(limit as usize);
            let ts = found.iter_mut().map(take_ts).collect::<ApiResult<Vec<i64>>>()?;
            newer = above;
            older = match ts.last() {
                Some(&last) if more => {
                    let k = match above {
                        Some(c) if c.ts == last => c.k + at_time(&ts, last),
                        _ => at_time(&ts, last),
                    };
                    Some(Cursor { ts: last, k })
                }
                _ => None,
            };
        }
        Page::After(c) => {
            // Upward from the place: the rows at its time it leaves
            // below are skipped first, in the ascending order.
            let m = count(c.ts).await?;
            let bound = format!(" AND ts >= to_timestamp_nanos({})", c.ts);
            found = rows(&st, &page(&bound, "ASC", m.saturating_sub(c.k))).await?;
            let more = found.len() > limit as usize;
            found.truncate(limit as usize);
            found.reverse();
            let ts = found.iter_mut().map(take_ts).collect::<ApiResult<Vec<i64>>>()?;
            older = Some(c);
            newer = match ts.first() {
                Some(&first) if more => {
                    let k = if first == c.ts { c.k } else { count(first).await? };
                    Some(Cursor { ts: first, k: k.saturating_sub(at_time(&ts, first)) })
                }
                _ => None,
            };
        }
    }

    Ok(json(Records {
        table: table.name().to_string(),
        from: super::audit::rfc3339(from),
        to: super::audit::rfc3339(to),
        columns: super::query::columns(&schema),
        rows: found,
        more: older.is_some(),
        older: older.map(Cursor::text),
        newer: newer.map(Cursor::text),
    }))
}
