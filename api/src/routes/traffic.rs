//! `/api/traffic`: traffic over time and the top talkers, ports, protocols
//! or countries for a time range and a filter, answered from the history.

use axum::extract::State;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::Params;
use crate::AppState;
use crate::error::{ApiError, ApiResult};

#[derive(Deserialize, Serialize, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficQuery {
    /// RFC 3339 or Unix seconds (default: an hour before `to`).
    #[schemars(pattern(super::audit::TIME))]
    from: Option<String>,
    /// Default: now.
    #[schemars(pattern(super::audit::TIME))]
    to: Option<String>,
    /// Seconds per point of the series (default: about 120 points).
    #[schemars(range(min = 1))]
    bucket: Option<u64>,
    /// Top-N by: src, dst, port, protocol, country (default src).
    #[schemars(extend("enum" = ["src", "dst", "port", "protocol", "country"]))]
    by: Option<String>,
    /// N, 1 to 100 (default 10).
    #[schemars(range(min = 1, max = 100))]
    top: Option<u32>,
    /// Filter: either end is this address.
    ip: Option<String>,
    /// Filter: either end is inside this network.
    cidr: Option<String>,
    /// Filter: responder port.
    port: Option<u16>,
    /// Filter: tcp, udp, icmp.
    #[schemars(extend("enum" = ["tcp", "udp", "icmp"]))]
    protocol: Option<String>,
    /// Filter: either end in this country (ISO code).
    #[schemars(pattern(r"^[A-Za-z]{2}$"))]
    country: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Point {
    ts: String,
    packets: u64,
    bytes: u64,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Top {
    key: String,
    packets: u64,
    bytes: u64,
    flows: u64,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Traffic {
    from: String,
    to: String,
    bucket: u64,
    by: String,
    series: Vec<Point>,
    top: Vec<Top>,
}

fn now_ns() -> i64 {
    crate::store::now_ns()
}

pub(crate) async fn rows(st: &AppState, sql: &str) -> ApiResult<Vec<serde_json::Value>> {
    let sql = sql.to_string();
    st.on_history(move |st| async move { rows_here(&st, &sql).await }).await
}

async fn rows_here(st: &AppState, sql: &str) -> ApiResult<Vec<serde_json::Value>> {
    let h = st.history().await?;
    let timeout = h.limits().timeout;
    let work = async {
        let res = h.query(sql).await?;
        let mut w = arrow::json::ArrayWriter::new(Vec::new());
        let mut s = res.stream;
        while let Some(b) = s.next().await {
            let b = b.map_err(|e| h.stream_error(e))?;
            w.write(&b).map_err(|e| tapstream_query::QueryError::Sql(e.to_string()))?;
        }
        w.finish().map_err(|e| tapstream_query::QueryError::Sql(e.to_string()))?;
        Ok::<_, tapstream_query::QueryError>(w.into_inner())
    };
    let buf =
        tokio::time::timeout(timeout, work).await.map_err(|_| tapstream_query::QueryError::Timeout(timeout))??;
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(ApiError::internal)
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)).or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

fn ts_literal(ns: i64) -> String {
    format!("to_timestamp_nanos({ns})")
}

/// An answer younger than this is shared as it is.
const FRESH: std::time::Duration = std::time::Duration::from_secs(1);
/// Up to this age an answer is served while a newer one is computed.
const STALE: std::time::Duration = std::time::Duration::from_secs(30);

/// Dashboards asking the same question share one history query a second
/// (see [`crate::cache`]).
pub async fn traffic(
    State(st): State<AppState>,
    Params(q): Params<TrafficQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let key = serde_json::to_string(&q).map_err(ApiError::internal)?;
    let st2 = st.clone();
    let body = st
        .traffic_cache
        .get(key, FRESH, STALE, move || async move {
            let t = compute(&st2, q).await?;
            serde_json::to_vec(&t).map(axum::body::Bytes::from).map_err(ApiError::internal)
        })
        .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn compute(st: &AppState, q: TrafficQuery) -> ApiResult<Traffic> {
    let to = match &q.to {
        Some(t) => super::audit::parse_time(t)?,
        None => now_ns(),
    };
    let from = match &q.from {
        Some(t) => super::audit::parse_time(t)?,
        None => to - 3_600 * 1_000_000_000,
    };
    if from >= to {
        return Err(ApiError::bad_request("`from` must be before `to`"));
    }
    let span = ((to - from) / 1_000_000_000).max(1) as u64;
    let bucket = q.bucket.unwrap_or_else(|| (span / 120).max(1));
    if bucket == 0 || span / bucket > 10_000 {
        return Err(ApiError::bad_request("bucket: at least 1 s and at most 10,000 points"));
    }
    let top = q.top.unwrap_or(10);
    if !(1..=100).contains(&top) {
        return Err(ApiError::bad_request("top must be 1 to 100"));
    }
    let by = q.by.clone().unwrap_or_else(|| "src".into());
    let key = match by.as_str() {
        "src" => "orig_h",
        "dst" => "resp_h",
        "port" => "CAST(resp_p AS VARCHAR) || '/' || proto",
        "protocol" => "COALESCE(service, proto)",
        "country" => "COALESCE(resp_cc, orig_cc, '??')",
        o => return Err(ApiError::bad_request(format!("by `{o}` (src, dst, port, protocol, country)"))),
    };
    let sel = Selection {
        ip: q.ip.as_deref(),
        cidr: q.cidr.as_deref(),
        port: q.port,
        protocol: q.protocol.as_deref(),
        country: q.country.as_deref(),
    };
    let filters = sel.sql(&|_| true)?;
    let range = format!("ts >= {} AND ts < {}", ts_literal(from), ts_literal(to));
    let wher = std::iter::once(range.clone()).chain(filters.iter().cloned()).collect::<Vec<_>>().join(" AND ");
    let bin = format!("date_bin(INTERVAL '{bucket} seconds', ts, TIMESTAMP '1970-01-01T00:00:00')");
    // Without a filter the per-second statistics give the exact series.
    let series_sql = if filters.is_empty() {
        format!(
            "SELECT {bin} AS t, SUM(packets) AS packets, SUM(bytes) AS bytes FROM stats WHERE {range} GROUP BY 1 ORDER BY 1"
        )
    } else {
        format!(
            "SELECT {bin} AS t, SUM(orig_pkts + resp_pkts) AS packets, SUM(orig_ip_bytes + resp_ip_bytes) AS bytes \
             FROM flows WHERE {wher} GROUP BY 1 ORDER BY 1"
        )
    };
    let top_sql = format!(
        "SELECT {key} AS k, SUM(orig_pkts + resp_pkts) AS packets, SUM(orig_ip_bytes + resp_ip_bytes) AS bytes, \
         SUM(CASE WHEN record_kind = 'interim' THEN 0 ELSE 1 END) AS flows FROM flows WHERE {wher} \
         GROUP BY 1 ORDER BY bytes DESC, k LIMIT {top}"
    );
    let series = rows(st, &series_sql)
        .await?
        .iter()
        .map(|r| Point {
            ts: r["t"].as_str().unwrap_or_default().to_string(),
            packets: u(&r["packets"]),
            bytes: u(&r["bytes"]),
        })
        .collect();
    let top = rows(st, &top_sql)
        .await?
        .iter()
        .map(|r| Top {
            key: r["k"].as_str().map(str::to_string).unwrap_or_else(|| r["k"].to_string()),
            packets: u(&r["packets"]),
            bytes: u(&r["bytes"]),
            flows: u(&r["flows"]),
        })
        .collect();
    Ok(Traffic { from: super::audit::rfc3339(from), to: super::audit::rfc3339(to), bucket, by, series, top })
}

/// The filter bar's fields (an address, a network, a port, a protocol, a
/// country), shared by `/api/traffic` and `/api/export`.
#[derive(Default)]
pub struct Selection<'a> {
    pub ip: Option<&'a str>,
    pub cidr: Option<&'a str>,
    pub port: Option<u16>,
    pub protocol: Option<&'a str>,
    pub country: Option<&'a str>,
}

impl Selection<'_> {
    fn ip(&self) -> ApiResult<Option<std::net::IpAddr>> {
        self.ip
            .map(|ip| ip.parse().map_err(|_| ApiError::bad_request(format!("ip `{ip}` is not an address"))))
            .transpose()
    }

    fn cidr(&self) -> ApiResult<Option<String>> {
        let Some(c) = self.cidr else { return Ok(None) };
        let (net, kind) = super::blocklist::classify(c).map_err(ApiError::bad_request)?;
        if kind != "cidr" {
            return Err(ApiError::bad_request(format!("cidr `{c}` is not a network (e.g. 10.0.0.0/8)")));
        }
        Ok(Some(net))
    }

    fn protocol(&self) -> ApiResult<Option<&str>> {
        match self.protocol {
            Some(p) if !["tcp", "udp", "icmp"].contains(&p) => {
                Err(ApiError::bad_request(format!("protocol `{p}` (tcp, udp, icmp)")))
            }
            p => Ok(p),
        }
    }

    /// SQL conditions (each value checked before it is written into SQL)
    /// over a table that has the columns `has` says it has; a filter on a
    /// column the table lacks is an error, not silently ignored.
    pub fn sql(&self, has: &dyn Fn(&str) -> bool) -> ApiResult<Vec<String>> {
        let need = |col: &str, what: &str| {
            if has(col) {
                Ok(())
            } else {
                Err(ApiError::bad_request(format!("this table cannot be filtered by {what}")))
            }
        };
        let mut filters = Vec::new();
        if let Some(ip) = self.ip()? {
            need("orig_h", "ip")?;
            filters.push(format!("(orig_h = '{ip}' OR resp_h = '{ip}')"));
        }
        if let Some(net) = self.cidr()? {
            need("orig_h", "cidr")?;
            filters.push(format!("(cidr_contains('{net}', orig_h) OR cidr_contains('{net}', resp_h))"));
        }
        if let Some(p) = self.port {
            need("resp_p", "port")?;
            filters.push(format!("resp_p = {p}"));
        }
        if let Some(p) = self.protocol()? {
            need("proto", "protocol")?;
            filters.push(format!("proto = '{p}'"));
        }
        if let Some(c) = self.country {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(ApiError::bad_request(format!("country `{c}`: a two-letter ISO code")));
            }
            need("orig_cc", "country")?;
            let c = c.to_ascii_uppercase();
            filters.push(format!("(orig_cc = '{c}' OR resp_cc = '{c}')"));
        }
        Ok(filters)
    }

    /// The same selection as a capture filter (tcpdump style), for packet
    /// exports; countries have no packet-level equivalent.
    pub fn capture_filter(&self) -> ApiResult<Vec<String>> {
        let mut f = Vec::new();
        if let Some(ip) = self.ip()? {
            f.push(format!("host {ip}"));
        }
        if let Some(net) = self.cidr()? {
            f.push(format!("net {net}"));
        }
        if let Some(p) = self.port {
            f.push(format!("port {p}"));
        }
        if let Some(p) = self.protocol()? {
            f.push(p.to_string());
        }
        if self.country.is_some() {
            return Err(ApiError::bad_request("a packet export cannot select by country; use ip or cidr"));
        }
        Ok(f)
    }
}
