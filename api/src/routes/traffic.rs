//! `/api/traffic`: traffic over time and the top talkers, ports, protocols
//! or countries for a time range and a filter, answered from the history.

use axum::extract::State;
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
    /// Top-N by: src, dst, port, protocol, country, state (TCP connection
    /// state), size (mean packet size class), pair (originator → responder)
    /// (default src).
    #[schemars(extend("enum" = ["src", "dst", "port", "protocol", "country", "state", "size", "pair"]))]
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
    /// Filter: connections whose DNS query, TLS server name or HTTP host
    /// or URI contains this text (case-insensitive).
    #[schemars(length(min = 1, max = 200))]
    text: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Point {
    ts: String,
    packets: u64,
    bytes: u64,
    /// Packets by innermost protocol.
    tcp: u64,
    udp: u64,
    icmp: u64,
    other: u64,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Top {
    key: String,
    packets: u64,
    bytes: u64,
    flows: u64,
    /// With `by=country`: distinct addresses in that country.
    #[serde(skip_serializing_if = "Option::is_none")]
    hosts: Option<u64>,
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

pub(crate) async fn rows(st: &AppState, sql: &str) -> ApiResult<Vec<serde_json::Value>> {
    let sql = sql.to_string();
    st.on_history(move |st| async move { rows_here(&st, &sql).await }).await
}

async fn rows_here(st: &AppState, sql: &str) -> ApiResult<Vec<serde_json::Value>> {
    crate::report::history_rows(st.history().await?, sql).await
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
    let (from, to) = super::audit::time_range(q.from.as_deref(), q.to.as_deref())?;
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
        "state" => "conn_state",
        "size" => SIZE_CLASS,
        "pair" => "orig_h || ' → ' || resp_h",
        o => {
            return Err(ApiError::bad_request(format!(
                "by `{o}` (src, dst, port, protocol, country, state, size, pair)"
            )));
        }
    };
    let range = format!("ts >= {} AND ts < {}", ts_literal(from), ts_literal(to));
    let sel = Selection {
        ip: q.ip.as_deref(),
        cidr: q.cidr.as_deref(),
        port: q.port,
        protocol: q.protocol.as_deref(),
        country: q.country.as_deref(),
        text: q.text.as_deref(),
    };
    let flows = tapstream_engine::records::Table::Flows.schema();
    let filters = sel.sql(&|c| flows.field_with_name(c).is_ok(), &range)?;
    let mut conds = vec![range.clone()];
    conds.extend(filters.iter().cloned());
    if by == "state" {
        // Only TCP has connection states worth a chart.
        conds.push("proto = 'tcp'".into());
    }
    let wher = conds.join(" AND ");
    let bin = format!("date_bin(INTERVAL '{bucket} seconds', ts, TIMESTAMP '1970-01-01T00:00:00')");
    // Without a filter the per-second statistics give the exact series.
    let series_sql = if filters.is_empty() {
        format!(
            "SELECT {bin} AS t, SUM(packets) AS packets, SUM(bytes) AS bytes, SUM(tcp_packets) AS tcp, \
             SUM(udp_packets) AS udp, SUM(icmp_packets) AS icmp, \
             SUM(other_ip_packets + non_ip_packets) AS other FROM stats WHERE {range} GROUP BY 1 ORDER BY 1"
        )
    } else {
        let wher = std::iter::once(range.clone()).chain(filters.iter().cloned()).collect::<Vec<_>>().join(" AND ");
        let by_proto = |p: &str| format!("SUM(CASE WHEN proto = '{p}' THEN orig_pkts + resp_pkts ELSE 0 END)");
        format!(
            "SELECT {bin} AS t, SUM(orig_pkts + resp_pkts) AS packets, SUM(orig_ip_bytes + resp_ip_bytes) AS bytes, \
             {} AS tcp, {} AS udp, {} AS icmp, \
             SUM(CASE WHEN proto IN ('tcp', 'udp', 'icmp') THEN 0 ELSE orig_pkts + resp_pkts END) AS other \
             FROM flows WHERE {wher} GROUP BY 1 ORDER BY 1",
            by_proto("tcp"),
            by_proto("udp"),
            by_proto("icmp"),
        )
    };
    let hosts = if by == "country" {
        ", COUNT(DISTINCT CASE WHEN resp_cc IS NOT NULL THEN resp_h ELSE orig_h END) AS hosts"
    } else {
        ""
    };
    let top_sql = format!(
        "SELECT {key} AS k, SUM(orig_pkts + resp_pkts) AS packets, SUM(orig_ip_bytes + resp_ip_bytes) AS bytes, \
         SUM(CASE WHEN record_kind = 'interim' THEN 0 ELSE 1 END) AS flows{hosts} FROM flows WHERE {wher} \
         GROUP BY 1 ORDER BY bytes DESC, k LIMIT {top}"
    );
    let series = rows(st, &series_sql)
        .await?
        .iter()
        .map(|r| Point {
            ts: r["t"].as_str().unwrap_or_default().to_string(),
            packets: u(&r["packets"]),
            bytes: u(&r["bytes"]),
            tcp: u(&r["tcp"]),
            udp: u(&r["udp"]),
            icmp: u(&r["icmp"]),
            other: u(&r["other"]),
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
            hosts: (by == "country").then(|| u(&r["hosts"])),
        })
        .collect();
    Ok(Traffic { from: super::audit::rfc3339(from), to: super::audit::rfc3339(to), bucket, by, series, top })
}

/// Mean packet size of a connection, in the classes of a size histogram
/// (the label sorts in size order).
const SIZE_CLASS: &str = "CASE \
    WHEN (orig_pkts + resp_pkts) = 0 THEN '0: none' \
    WHEN (orig_ip_bytes + resp_ip_bytes) / (orig_pkts + resp_pkts) < 64 THEN '1: <64' \
    WHEN (orig_ip_bytes + resp_ip_bytes) / (orig_pkts + resp_pkts) < 128 THEN '2: 64-127' \
    WHEN (orig_ip_bytes + resp_ip_bytes) / (orig_pkts + resp_pkts) < 256 THEN '3: 128-255' \
    WHEN (orig_ip_bytes + resp_ip_bytes) / (orig_pkts + resp_pkts) < 512 THEN '4: 256-511' \
    WHEN (orig_ip_bytes + resp_ip_bytes) / (orig_pkts + resp_pkts) < 1024 THEN '5: 512-1023' \
    WHEN (orig_ip_bytes + resp_ip_bytes) / (orig_pkts + resp_pkts) < 1518 THEN '6: 1024-1517' \
    ELSE '7: 1518+' END";

/// The filter bar's fields (an address, a network, a port, a protocol, a
/// country, text in DNS/TLS/HTTP), shared by `/api/traffic`,
/// `/api/records` and `/api/export`.
#[derive(Default)]
pub struct Selection<'a> {
    pub ip: Option<&'a str>,
    pub cidr: Option<&'a str>,
    pub port: Option<u16>,
    pub protocol: Option<&'a str>,
    pub country: Option<&'a str>,
    pub text: Option<&'a str>,
}

/// A SQL string literal (quotes doubled).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Selection<'_> {
    /// Only the text search of this selection.
    pub fn text_only(&self) -> Selection<'_> {
        Selection { text: self.text, ..Selection::default() }
    }

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

    /// The text condition for one table: its own name columns (DNS query,
    /// TLS server name, HTTP host and URI, DHCP host name and domain, an
    /// alert's explanation and rule), or (for flows) the connections that
    /// have a matching DNS, TLS or HTTP record in the same time range.
    fn text(&self, has: &dyn Fn(&str) -> bool, range: &str) -> ApiResult<Option<String>> {
        let Some(t) = self.text else { return Ok(None) };
        let t = t.trim();
        if t.is_empty() || t.len() > 200 || t.chars().any(char::is_control) {
            return Err(ApiError::bad_request("text: 1 to 200 printable characters"));
        }
        let lit = literal(&t.to_lowercase());
        let m = |col: &str| format!("strpos(lower({col}), {lit}) > 0");
        let dns = m("query");
        let tls = m("server_name");
        let http = format!("({} OR {})", m("host"), m("uri"));
        Ok(Some(if has("query") {
            dns
        } else if has("server_name") {
            tls
        } else if has("uri") {
            http
        } else if has("host_name") {
            format!("({} OR {})", m("host_name"), m("domain"))
        } else if has("explanation") {
            format!("({} OR {})", m("explanation"), m("rule"))
        } else if has("orig_h") && has("uid") {
            format!(
                "uid IN (SELECT uid FROM dns WHERE {range} AND {dns} UNION SELECT uid FROM tls WHERE {range} AND {tls} \
                 UNION SELECT uid FROM http WHERE {range} AND {http})"
            )
        } else {
            return Err(ApiError::bad_request("this table cannot be searched by text"));
        }))
    }

    /// SQL conditions (each value checked before it is written into SQL)
    /// over a table that has the columns `has` says it has; a filter on a
    /// column the table lacks is an error, not silently ignored. `range` is
    /// the time condition, repeated in the text search's subqueries.
    pub fn sql(&self, has: &dyn Fn(&str) -> bool, range: &str) -> ApiResult<Vec<String>> {
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
        filters.extend(self.text(has, range)?);
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
        if self.text.is_some() {
            return Err(ApiError::bad_request("a packet export cannot select by text; use ip, cidr or a flow uid"));
        }
        Ok(f)
    }
}
