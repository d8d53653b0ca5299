//! `/api/export`: a table (with a time range and the filter bar's fields) or
//! a SQL result as CSV, JSON, NDJSON or Parquet, or recorded packets as
//! PCAP, streamed: the answer starts with the first batch and memory stays
//! flat whatever the size. A client that stops reading for a minute is
//! dropped, which ends the query.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tapstream_engine::record::{self, FlowMatch, Selector};
use tapstream_query::export::{Exporter, Format};

use super::traffic::Selection;
use super::{Body, Me, audit};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Bytes gathered before they are sent on.
const CHUNK: usize = 256 << 10;
/// Chunks queued for a slow client.
const QUEUE: usize = 4;
/// A client that takes nothing for this long is dropped.
const STALL: Duration = Duration::from_secs(60);

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ExportRequest")]
pub struct ExportRequest {
    /// csv, json (one array), ndjson (one object per line), parquet, or
    /// pcap (recorded packets).
    #[schemars(extend("enum" = ["csv", "json", "ndjson", "parquet", "pcap"]))]
    format: String,
    /// The table to export (flows, dns, tls, http, dhcp, stats, alerts),
    /// over `from`..`to` and the filters. Not with `sql` or pcap.
    #[schemars(extend("enum" = ["flows", "dns", "tls", "http", "dhcp", "stats", "alerts", null]))]
    table: Option<String>,
    /// Or a query (read-only, as `/api/query`), exported in full.
    #[schemars(length(min = 1, max = 100000), pattern(r"\S"))]
    sql: Option<String>,
    /// RFC 3339 or Unix seconds (default: an hour before `to`).
    #[schemars(pattern(super::audit::TIME))]
    from: Option<String>,
    /// Default: now.
    #[schemars(pattern(super::audit::TIME))]
    to: Option<String>,
    /// Filter: either end is this address.
    ip: Option<String>,
    /// Filter: either end is inside this network.
    cidr: Option<String>,
    /// Filter: responder port (pcap: either port).
    port: Option<u16>,
    #[schemars(extend("enum" = ["tcp", "udp", "icmp", null]))]
    protocol: Option<String>,
    /// Filter: either end in this country (ISO code; not for pcap).
    #[schemars(pattern(r"^[A-Za-z]{2}$"))]
    country: Option<String>,
    /// Filter: text in DNS queries, TLS server names, HTTP hosts and URIs
    /// (for flows: connections with such a record; not for pcap).
    #[schemars(length(min = 1, max = 200))]
    text: Option<String>,
    /// pcap: the packets of one flow, by its id (the flows table's `uid`).
    #[schemars(pattern(r"^[A-Za-z0-9]{1,32}$"))]
    uid: Option<String>,
    /// pcap: the packets of one flow by 5-tuple, `tcp 10.0.0.1:51000 10.0.0.2:443`.
    flow: Option<String>,
    /// pcap: a capture filter, tcpdump style.
    filter: Option<String>,
    /// pcap: read only these recording sessions (default: all).
    sessions: Option<Vec<String>>,
}

fn range(r: &ExportRequest) -> ApiResult<(i64, i64)> {
    super::audit::time_range(r.from.as_deref(), r.to.as_deref())
}

fn selection(r: &ExportRequest) -> Selection<'_> {
    Selection {
        ip: r.ip.as_deref(),
        cidr: r.cidr.as_deref(),
        port: r.port,
        protocol: r.protocol.as_deref(),
        country: r.country.as_deref(),
        text: r.text.as_deref(),
    }
}

/// The bytes of an export on their way to the client.
type Chunk = Result<Bytes, std::io::Error>;

fn body(rx: tokio::sync::mpsc::Receiver<Chunk>) -> axum::body::Body {
    axum::body::Body::from_stream(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }))
}

fn attachment(content_type: &'static str, name: String) -> impl FnOnce(axum::body::Body) -> Response {
    move |b| {
        let mut r = b.into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        r
    }
}

fn stamp() -> String {
    super::audit::rfc3339(crate::store::now_ns()).replace([':', '-'], "").chars().take(15).collect()
}

pub async fn export(State(st): State<AppState>, me: Me, Body(r): Body<ExportRequest>) -> ApiResult<Response> {
    if r.format == "pcap" {
        return packets(st, me, r).await;
    }
    let format = Format::parse(&r.format)
        .ok_or_else(|| ApiError::unprocessable(format!("format `{}`: csv, json, ndjson, parquet or pcap", r.format)))?;
    for (set, name) in [(r.uid.is_some(), "uid"), (r.flow.is_some(), "flow"), (r.filter.is_some(), "filter")] {
        if set {
            return Err(ApiError::unprocessable(format!("{name} selects packets: it needs format pcap")));
        }
    }
    if r.sessions.is_some() {
        return Err(ApiError::unprocessable("sessions selects packets: it needs format pcap"));
    }
    let (sql, what) = match (&r.table, &r.sql) {
        (Some(t), None) => {
            let table = tapstream_engine::records::Table::from_name(t).ok_or_else(|| {
                ApiError::unprocessable(format!("table `{t}`: flows, dns, tls, http, dhcp, stats or alerts"))
            })?;
            let schema = table.schema();
            let has = |c: &str| schema.field_with_name(c).is_ok();
            let (from, to) = range(&r)?;
            let range = format!("ts >= to_timestamp_nanos({from}) AND ts < to_timestamp_nanos({to})");
            let mut conds = vec![range.clone()];
            conds.extend(selection(&r).sql(&has, &range)?);
            (format!("SELECT * FROM {} WHERE {}", table.name(), conds.join(" AND ")), table.name().to_string())
        }
        (None, Some(q)) => {
            if q.trim().is_empty() || q.len() > 100_000 {
                return Err(ApiError::unprocessable("sql: 1 byte to 100 KB"));
            }
            let s = selection(&r);
            if r.from.is_some() || r.to.is_some() || !s.sql(&|_| true, "true")?.is_empty() {
                return Err(ApiError::unprocessable(
                    "with sql, write the time range and filters into the query itself",
                ));
            }
            (q.clone(), "query".to_string())
        }
        _ => return Err(ApiError::unprocessable("give either table or sql")),
    };
    // Planned and streamed on the query runtime; the plan's verdict comes
    // back first, so a bad query is still a JSON 4xx.
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(QUEUE);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<ApiResult<()>>();
    let user = me.name.clone();
    let name = format!("tapstream-{what}-{}.{}", stamp(), format.extension());
    let (st2, sql2, what2) = (st.clone(), sql.clone(), what.clone());
    st.query_rt.spawn(async move {
        let planned = match st2.history().await {
            Ok(h) => h.export(&sql2).await.map_err(ApiError::from),
            Err(e) => Err(e),
        };
        let res = match planned {
            Ok(r) => {
                let _ = ready_tx.send(Ok(()));
                r
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        match pump(&st2, res, format, &tx).await {
            Ok(rows) => tracing::info!(user, table = what2, rows, "export finished"),
            Err(e) => {
                tracing::warn!(user, table = what2, error = %e, "export ended early");
                let _ = tx.send(Err(std::io::Error::other(e))).await;
            }
        }
    });
    let planned = ready_rx.await.map_err(ApiError::internal)?;
    let mut entry = me.audit("export", what.clone(), serde_json::json!({ "format": r.format, "sql": short(&sql) }));
    entry.ok = planned.is_ok();
    audit(&st, entry)?;
    planned?;
    Ok(attachment(format.content_type(), name)(body(rx)))
}

fn short(s: &str) -> &str {
    match s.char_indices().nth(2000) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A `Write` the exporter fills; its bytes are taken out between batches.
#[derive(Clone, Default)]
struct Gather(Arc<Mutex<Vec<u8>>>);

impl Write for Gather {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Gather {
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

async fn send(tx: &tokio::sync::mpsc::Sender<Chunk>, b: Vec<u8>) -> Result<(), String> {
    if b.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(STALL, tx.send(Ok(Bytes::from(b)))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("the client went away".into()),
        Err(_) => Err(format!("the client took nothing for {}s", STALL.as_secs())),
    }
}

async fn pump(
    st: &AppState,
    res: tapstream_query::QueryResult,
    format: Format,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
) -> Result<u64, String> {
    let h = st.history().await.map_err(|e| e.detail)?;
    let out = Gather::default();
    let mut ex = Exporter::new(format, res.schema.clone(), out.clone()).map_err(|e| e.to_string())?;
    let mut stream = res.stream;
    while let Some(b) = stream.next().await {
        let b = b.map_err(|e| h.stream_error(e).to_string())?;
        ex.write(&b).map_err(|e| e.to_string())?;
        if out.len() >= CHUNK {
            send(tx, out.take()).await?;
        }
    }
    let rows = ex.rows();
    ex.finish().map_err(|e| e.to_string())?;
    send(tx, out.take()).await?;
    Ok(rows)
}

/// A `Write` for the blocking packet exporter: full chunks go to the client
/// as they fill; a client gone or stalled fails the write.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Chunk>,
}

impl ChunkWriter {
    fn ship(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let deadline = std::time::Instant::now() + STALL;
        let mut item = Ok(b);
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(()),
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"));
                }
                Err(tokio::sync::mpsc::error::TrySendError::Full(back)) => {
                    if std::time::Instant::now() > deadline {
                        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading"));
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.ship()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.ship()
    }
}

async fn packets(st: AppState, me: Me, r: ExportRequest) -> ApiResult<Response> {
    if r.table.is_some() || r.sql.is_some() {
        return Err(ApiError::unprocessable("format pcap exports recorded packets: leave out table and sql"));
    }
    let data = st.cfg.data_dir.clone();
    let mut sel = Selector {
        sessions: r.sessions.clone().unwrap_or_default(),
        from_ns: 0,
        to_ns: u64::MAX,
        ..Selector::default()
    };
    let known = record::list(&data).map_err(ApiError::internal)?;
    for s in &sel.sessions {
        if !known.iter().any(|k| &k.spec.name == s) {
            return Err(ApiError::not_found(format!("no recording session `{s}`")));
        }
    }
    if r.from.is_some() || r.to.is_some() {
        let (from, to) = range(&r)?;
        sel.from_ns = from.max(0) as u64;
        sel.to_ns = to.max(0) as u64;
    }
    let mut filters = selection(&r).capture_filter()?;
    if let Some(f) = &r.filter {
        filters.push(format!("({f})"));
    }
    if !filters.is_empty() {
        let text = filters.join(" and ");
        sel.filter = Some(
            tapstream_engine::filter::Filter::parse(&text)
                .map_err(|e| ApiError::unprocessable(format!("filter: {e}")))?,
        );
    }
    if let Some(f) = &r.flow {
        sel.flow = Some(FlowMatch::parse(f).map_err(ApiError::unprocessable)?);
    }
    if let Some(uid) = &r.uid {
        let h = st.history().await?;
        let (lo, hi) = (r.from.is_some().then_some(sel.from_ns), r.to.is_some().then_some(sel.to_ns));
        let (fm, start, end) = tapstream_query::export::flow_by_uid(h, uid, lo, hi)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no flow with uid {uid} in the history searched")))?;
        sel.flow = Some(fm);
        sel.from_ns = sel.from_ns.max(start);
        sel.to_ns = sel.to_ns.min(end);
    }
    if sel.flow.is_none() && sel.filter.is_none() && r.from.is_none() && r.to.is_none() {
        return Err(ApiError::unprocessable("say which packets: uid, flow, a filter, and/or from/to"));
    }
    audit(
        &st,
        me.audit(
            "export",
            "packets",
            serde_json::json!({ "format": "pcap", "uid": r.uid, "flow": r.flow, "filter": filters.join(" and "),
                                "sessions": sel.sessions, "from": r.from, "to": r.to }),
        ),
    )?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(QUEUE);
    let user = me.name.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter { buf: Vec::with_capacity(CHUNK), tx: tx.clone() };
        let done = record::export(&data, &sel, &mut w).map_err(|e| e.to_string());
        match done.and_then(|rep| w.ship().map(|_| rep).map_err(|e| e.to_string())) {
            Ok(rep) => {
                tracing::info!(user, packets = rep.packets, bytes = rep.bytes, "packet export finished");
                for b in &rep.bad_files {
                    tracing::warn!(user, "packet export: {b}");
                }
            }
            Err(e) => {
                tracing::warn!(user, error = %e, "packet export ended early");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    Ok(attachment("application/vnd.tcpdump.pcap", format!("tapstream-packets-{}.pcap", stamp()))(body(rx)))
}
