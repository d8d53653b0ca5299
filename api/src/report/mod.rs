//! Reports: a traffic summary, incidents, alerts and anomalies, top talkers
//! and protocols, and the compliance audit trail, each for a time range and
//! an optional filter, as PDF (charts and tables), CSV or JSON of the same
//! data. Generated on demand (`tapstream report`, `POST /api/reports`) or on
//! a schedule ([`schedule`]), kept under `DATA/reports/` and listed by the
//! API.
//!
//! Shape: [`gather`] asks the history (SQL) and the control-plane store for
//! the figures and builds a [`model::Report`]; [`pdf::render`] and
//! [`model::to_csv`] draw it. Nothing here touches the packet path.

pub mod model;
pub mod pdf;
pub mod schedule;

use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::routes::traffic::Selection;
use crate::store::Store;
use model::{Body, Chart, ChartKind, Column, Figure, Point, Report, Table, Unit};

const SEC: i64 = 1_000_000_000;
const DAY: i64 = 86_400 * SEC;

/// What a report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Traffic,
    Incidents,
    Alerts,
    Talkers,
    Audit,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Traffic, Kind::Incidents, Kind::Alerts, Kind::Talkers, Kind::Audit];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Traffic => "traffic",
            Kind::Incidents => "incidents",
            Kind::Alerts => "alerts",
            Kind::Talkers => "talkers",
            Kind::Audit => "audit",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::Traffic => "Traffic summary",
            Kind::Incidents => "Incident report",
            Kind::Alerts => "Alerts and anomalies",
            Kind::Talkers => "Top talkers and protocols",
            Kind::Audit => "Compliance audit trail",
        }
    }

    pub fn parse(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("report kind `{s}` (traffic, incidents, alerts, talkers, audit)"))
    }
}

/// The file a report is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Pdf,
    Csv,
    Json,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Pdf => "application/pdf",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "pdf" => Ok(Format::Pdf),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            o => Err(format!("report format `{o}` (pdf, csv, json)")),
        }
    }
    /// From a file name's extension.
    pub fn of_path(p: &Path) -> Result<Format, String> {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
        Format::parse(&ext).map_err(|_| format!("{}: the file name must end in .pdf, .csv or .json", p.display()))
    }
}

/// A preset range ending now (or at `to`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Span {
    Day,
    Week,
    Month,
}

impl Span {
    pub fn ns(self) -> i64 {
        match self {
            Span::Day => DAY,
            Span::Week => 7 * DAY,
            Span::Month => 30 * DAY,
        }
    }
    pub fn parse(s: &str) -> Result<Span, String> {
        match s {
            "day" => Ok(Span::Day),
            "week" => Ok(Span::Week),
            "month" => Ok(Span::Month),
            o => Err(format!("range `{o}` (day, week, month; or give from and to)")),
        }
    }
}

/// The filter bar's fields, owned (a report outlives the request).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Either end is this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Either end is inside this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Responder port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// tcp, udp or icmp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["tcp", "udp", "icmp", null]))]
    pub protocol: Option<String>,
    /// Either end in this country (ISO code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z]{2}$"))]
    pub country: Option<String>,
    /// Text in DNS, TLS or HTTP names (traffic), an alert's explanation,
    /// an incident's title, or an audit entry's user, action or target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub text: Option<String>,
}

impl Filter {
    pub fn selection(&self) -> Selection<'_> {
        Selection {
            ip: self.ip.as_deref(),
            cidr: self.cidr.as_deref(),
            port: self.port,
            protocol: self.protocol.as_deref(),
            country: self.country.as_deref(),
            text: self.text.as_deref(),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// "ip 10.0.0.1, port 443" (empty: no filter).
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(x) = &self.ip {
            v.push(format!("ip {x}"));
        }
        if let Some(x) = &self.cidr {
            v.push(format!("net {x}"));
        }
        if let Some(x) = self.port {
            v.push(format!("port {x}"));
        }
        if let Some(x) = &self.protocol {
            v.push(x.clone());
        }
        if let Some(x) = &self.country {
            v.push(format!("country {}", x.to_ascii_uppercase()));
        }
        if let Some(x) = &self.text {
            v.push(format!("text \"{x}\""));
        }
        v.join(", ")
    }

    /// Fields this kind of report cannot filter by.
    fn refuse(&self, kind: Kind, allowed: &[&str]) -> ApiResult<()> {
        let given = [
            ("ip", self.ip.is_some()),
            ("cidr", self.cidr.is_some()),
            ("port", self.port.is_some()),
            ("protocol", self.protocol.is_some()),
            ("country", self.country.is_some()),
            ("text", self.text.is_some()),
        ];
        if let Some((f, _)) = given.iter().find(|(f, on)| *on && !allowed.contains(f)) {
            return Err(ApiError::bad_request(format!(
                "the {} report cannot be filtered by {f} (it takes: {})",
                kind.name(),
                allowed.join(", ")
            )));
        }
        Ok(())
    }
}

/// One report to make.
#[derive(Clone, Debug)]
pub struct Spec {
    pub kind: Kind,
    pub from_ns: i64,
    pub to_ns: i64,
    pub filter: Filter,
}

impl Spec {
    /// From the user's words: a preset span or `from`/`to` (RFC 3339 or
    /// Unix seconds); `to` defaults to now, a missing start to a day.
    pub fn new(
        kind: Kind,
        span: Option<Span>,
        from: Option<&str>,
        to: Option<&str>,
        filter: Filter,
        now_ns: i64,
    ) -> ApiResult<Spec> {
        let to_ns = match to {
            Some(t) => crate::routes::audit::parse_time(t)?,
            None => now_ns,
        };
        let from_ns = match (span, from) {
            (Some(_), Some(_)) => return Err(ApiError::bad_request("give either a range (day, week, month) or from")),
            (Some(s), None) => to_ns - s.ns(),
            (None, Some(f)) => crate::routes::audit::parse_time(f)?,
            (None, None) => to_ns - DAY,
        };
        if from_ns >= to_ns {
            return Err(ApiError::bad_request("`from` must be before `to`"));
        }
        if to_ns - from_ns > 400 * DAY {
            return Err(ApiError::bad_request("a report covers at most 400 days"));
        }
        // Checked now, so a bad filter is refused before any work.
        let spec = Spec { kind, from_ns, to_ns, filter };
        spec.check_filter()?;
        Ok(spec)
    }

    fn check_filter(&self) -> ApiResult<()> {
        let f = &self.filter;
        match self.kind {
            Kind::Traffic | Kind::Talkers => {
                let flows = tapstream_engine::records::Table::Flows.schema();
                self.filter.selection().sql(&|c| flows.field_with_name(c).is_ok(), "true").map(drop)
            }
            Kind::Alerts => {
                f.refuse(self.kind, &["ip", "port", "country", "text"])?;
                alert_conditions(f).map(drop)
            }
            Kind::Incidents => {
                f.refuse(self.kind, &["ip", "text"])?;
                check_ip(f)
            }
            Kind::Audit => {
                f.refuse(self.kind, &["ip", "text"])?;
                check_ip(f)
            }
        }
    }

    fn range_sql(&self) -> String {
        format!("ts >= to_timestamp_nanos({}) AND ts < to_timestamp_nanos({})", self.from_ns, self.to_ns)
    }

    /// Seconds per point of a time series: a round step giving at most
    /// about a hundred points.
    /// The start of every time step (`bucket_secs`) of the range, each at 0.
    fn steps(&self) -> std::collections::BTreeMap<i64, f64> {
        let bucket = self.bucket_secs() * SEC;
        let mut per = std::collections::BTreeMap::new();
        let mut t = self.from_ns - self.from_ns.rem_euclid(bucket);
        while t < self.to_ns {
            per.insert(t, 0.0);
            t += bucket;
        }
        per
    }

    fn bucket_secs(&self) -> i64 {
        let span = (self.to_ns - self.from_ns) / SEC;
        [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
            .into_iter()
            .find(|b| span / b <= 100)
            .unwrap_or(86400)
    }
}

fn check_ip(f: &Filter) -> ApiResult<()> {
    if let Some(ip) = &f.ip {
        ip.parse::<std::net::IpAddr>().map_err(|_| ApiError::bad_request(format!("ip `{ip}` is not an address")))?;
    }
    if let Some(t) = &f.text
        && (t.trim().is_empty() || t.len() > 200 || t.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request("text: 1 to 200 printable characters"));
    }
    Ok(())
}

/// Conditions on the `alerts` table for a filter (addresses, ports and
/// countries are lists there).
fn alert_conditions(f: &Filter) -> ApiResult<Vec<String>> {
    let mut v = Vec::new();
    if let Some(ip) = &f.ip {
        let ip: std::net::IpAddr =
            ip.parse().map_err(|_| ApiError::bad_request(format!("ip `{ip}` is not an address")))?;
        v.push(format!("(array_has(src_ips, '{ip}') OR array_has(dst_ips, '{ip}'))"));
    }
    if let Some(p) = f.port {
        v.push(format!("array_has(ports, CAST({p} AS SMALLINT UNSIGNED))"));
    }
    if let Some(c) = &f.country {
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ApiError::bad_request(format!("country `{c}`: a two-letter ISO code")));
        }
        v.push(format!("array_has(countries, '{}')", c.to_ascii_uppercase()));
    }
    if f.text.is_some() {
        let has = |c: &str| c == "explanation";
        v.extend(f.selection().text_only().sql(&has, "true")?);
    }
    Ok(v)
}

/// Rows of a history query as JSON objects.
pub async fn history_rows(h: &tapstream_query::History, sql: &str) -> ApiResult<Vec<Value>> {
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

fn num(v: &Value) -> f64 {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0.0)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(" "),
        o => o.to_string(),
    }
}

/// RFC 3339 time of a JSON timestamp as DataFusion writes it, in ns.
fn ts_ns(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| {
            let s = if s.ends_with('Z') || s.contains('+') { s.to_string() } else { format!("{s}Z") };
            time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| t.unix_timestamp_nanos() as i64)
        .unwrap_or(0)
}

/// Where a report's data comes from.
pub struct Sources<'a> {
    pub history: &'a tapstream_query::History,
    /// The control-plane store (incidents, alert workflow, audit log);
    /// None when the data directory has none.
    pub store: Option<&'a Store>,
}

/// Build the report.
pub async fn gather(spec: &Spec, src: &Sources<'_>, now_ns: i64) -> ApiResult<Report> {
    spec.check_filter()?;
    let mut r = Report {
        kind: spec.kind.name().to_string(),
        title: spec.kind.title().to_string(),
        from: crate::routes::audit::rfc3339(spec.from_ns),
        to: crate::routes::audit::rfc3339(spec.to_ns),
        generated: crate::routes::audit::rfc3339(now_ns),
        filter: spec.filter.describe(),
        sections: Vec::new(),
    };
    match spec.kind {
        Kind::Traffic => traffic(spec, src, &mut r).await?,
        Kind::Talkers => talkers(spec, src, &mut r).await?,
        Kind::Alerts => alerts(spec, src, &mut r).await?,
        Kind::Incidents => incidents(spec, need_store(src)?, &mut r)?,
        Kind::Audit => audit(spec, need_store(src)?, &mut r)?,
    }
    Ok(r)
}

fn need_store<'a>(src: &Sources<'a>) -> ApiResult<&'a Store> {
    src.store.ok_or_else(|| {
        ApiError::bad_request(
            "this data directory has no control-plane store (control.db): incidents and the audit log live there",
        )
    })
}

/// The render of a report in a format.
pub fn render(r: &Report, f: Format) -> Vec<u8> {
    match f {
        Format::Pdf => pdf::render(r),
        Format::Csv => model::to_csv(r),
        Format::Json => serde_json::to_vec_pretty(r).unwrap_or_default(),
    }
}

struct Flows {
    wher: String,
    filtered: bool,
}

fn flows_where(spec: &Spec) -> ApiResult<Flows> {
    let range = spec.range_sql();
    let flows = tapstream_engine::records::Table::Flows.schema();
    let filters = spec.filter.selection().sql(&|c| flows.field_with_name(c).is_ok(), &range)?;
    let filtered = !filters.is_empty();
    Ok(Flows { wher: std::iter::once(range).chain(filters).collect::<Vec<_>>().join(" AND "), filtered })
}

const BYTES: &str = "SUM(orig_ip_bytes + resp_ip_bytes)";
const PACKETS: &str = "SUM(orig_pkts + resp_pkts)";
const CONNS: &str = "SUM(CASE WHEN record_kind = 'interim' THEN 0 ELSE 1 END)";

/// Top-N of flows by a key, by bytes: key, connections, packets, bytes.
async fn top(h: &tapstream_query::History, key: &str, wher: &str, n: usize) -> ApiResult<Vec<(String, f64, f64, f64)>> {
    let sql = format!(
        "SELECT {key} AS k, {CONNS} AS c, {PACKETS} AS p, {BYTES} AS b FROM flows WHERE {wher} \
         GROUP BY 1 ORDER BY b DESC, k LIMIT {n}"
    );
    Ok(history_rows(h, &sql).await?.iter().map(|r| (text(&r["k"]), num(&r["c"]), num(&r["p"]), num(&r["b"]))).collect())
}

fn bars(kind: ChartKind, unit: Unit, items: impl IntoIterator<Item = (String, f64)>) -> Body {
    Body::Chart(Chart { kind, unit, points: items.into_iter().map(|(label, value)| Point { label, value }).collect() })
}

fn col(name: &str, unit: Unit) -> Column {
    Column { name: name.to_string(), unit }
}

fn top_table(key: &str, rows: &[(String, f64, f64, f64)]) -> Body {
    Body::Table(Table {
        columns: vec![
            col(key, Unit::Text),
            col("connections", Unit::Count),
            col("packets", Unit::Count),
            col("bytes", Unit::Bytes),
        ],
        rows: rows
            .iter()
            .map(|(k, c, p, b)| vec![json!(k), json!(*c as u64), json!(*p as u64), json!(*b as u64)])
            .collect(),
        omitted: 0,
    })
}

/// Shares by protocol (service where one was recognised): the top eight
/// and the rest together.
async fn protocols(h: &tapstream_query::History, wher: &str) -> ApiResult<Body> {
    let rows = top(h, "COALESCE(service, proto)", wher, 1000).await?;
    let mut pts: Vec<(String, f64)> = rows.iter().take(8).map(|(k, _, _, b)| (k.clone(), *b)).collect();
    let rest: f64 = rows.iter().skip(8).map(|r| r.3).sum();
    if rest > 0.0 {
        pts.push(("other".into(), rest));
    }
    Ok(bars(ChartKind::Donut, Unit::Bytes, pts))
}

const SEVERITY_ORDER: [&str; 5] = ["critical", "high", "medium", "low", "info"];

async fn alerts_by_severity(h: &tapstream_query::History, wher: &str) -> ApiResult<Vec<(String, f64)>> {
    let rows =
        history_rows(h, &format!("SELECT severity, COUNT(DISTINCT id) AS n FROM alerts WHERE {wher} GROUP BY 1"))
            .await?;
    Ok(SEVERITY_ORDER
        .iter()
        .map(|s| (s.to_string(), rows.iter().find(|r| r["severity"] == *s).map(|r| num(&r["n"])).unwrap_or(0.0)))
        .collect())
}

async fn traffic(spec: &Spec, src: &Sources<'_>, r: &mut Report) -> ApiResult<()> {
    let h = src.history;
    let f = flows_where(spec)?;
    let range = spec.range_sql();
    let bucket = spec.bucket_secs();
    let bin = format!("date_bin(INTERVAL '{bucket} seconds', ts, TIMESTAMP '1970-01-01T00:00:00')");
    // Unfiltered, the per-second statistics count every packet on the wire;
    // filtered, the connections that match.
    let (totals_sql, series_sql) = if f.filtered {
        (
            format!("SELECT {BYTES} AS b, {PACKETS} AS p FROM flows WHERE {}", f.wher),
            format!("SELECT {bin} AS t, {BYTES} AS b FROM flows WHERE {} GROUP BY 1 ORDER BY 1", f.wher),
        )
    } else {
        (
            format!("SELECT SUM(bytes) AS b, SUM(packets) AS p FROM stats WHERE {range}"),
            format!("SELECT {bin} AS t, SUM(bytes) AS b FROM stats WHERE {range} GROUP BY 1 ORDER BY 1"),
        )
    };
    let totals = history_rows(h, &totals_sql).await?;
    let (bytes, packets) = totals.first().map(|t| (num(&t["b"]), num(&t["p"]))).unwrap_or_default();
    let conns = history_rows(
        h,
        &format!(
            "SELECT {CONNS} AS c, (SELECT COUNT(*) FROM (SELECT orig_h FROM flows WHERE {w} UNION SELECT resp_h FROM flows WHERE {w})) AS hosts \
             FROM flows WHERE {w}",
            w = f.wher
        ),
    )
    .await?;
    let (conn_n, hosts) = conns.first().map(|c| (num(&c["c"]), num(&c["hosts"]))).unwrap_or_default();
    // Every step of the range, zero where nothing was recorded (the chart's
    // time axis is the report's range, and the CSV has every step).
    let mut per = spec.steps();
    for p in history_rows(h, &series_sql).await? {
        let at = ts_ns(&p["t"]);
        *per.entry(at - at.rem_euclid(bucket * SEC)).or_default() += num(&p["b"]) * 8.0 / bucket as f64;
    }
    let series: Vec<(String, f64)> = per.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let peak = series.iter().map(|p| p.1).fold(0.0, f64::max);
    let span_s = ((spec.to_ns - spec.from_ns) / SEC).max(1) as f64;
    let (alert_conds, unfiltered) = alert_filter_for_traffic(&spec.filter);
    let alert_where = std::iter::once(range.clone()).chain(alert_conds).collect::<Vec<_>>().join(" AND ");
    let sev = alerts_by_severity(h, &alert_where).await?;
    let alert_total: f64 = sev.iter().map(|s| s.1).sum();
    r.section(
        "Summary",
        Body::Figures {
            figures: vec![
                Figure { label: "Traffic".into(), value: bytes, unit: Unit::Bytes },
                Figure { label: "Packets".into(), value: packets, unit: Unit::Count },
                Figure { label: "Connections".into(), value: conn_n, unit: Unit::Count },
                Figure { label: "Hosts seen".into(), value: hosts, unit: Unit::Count },
                Figure { label: "Average bandwidth".into(), value: bytes * 8.0 / span_s, unit: Unit::Bps },
                Figure { label: format!("Peak bandwidth ({bucket} s mean)"), value: peak, unit: Unit::Bps },
                Figure { label: "Alerts raised".into(), value: alert_total, unit: Unit::Count },
            ],
        },
    );
    r.section("Bandwidth over time", bars(ChartKind::Line, Unit::Bps, series));
    if !f.filtered {
        r.section(
            "How traffic is counted",
            Body::Note {
                text: "Traffic, packets and bandwidth count every packet captured (per-second statistics); \
                       the protocols, talkers and countries below count the connections written to history, \
                       so connections still open when the report was made are not in them yet."
                    .into(),
            },
        );
    }
    r.section("Protocol distribution (bytes)", protocols(h, &f.wher).await?);
    let talkers = top(h, "orig_h", &f.wher, 10).await?;
    r.section(
        "Top talkers (sources by bytes)",
        bars(ChartKind::Bars, Unit::Bytes, talkers.iter().map(|t| (t.0.clone(), t.3))),
    );
    let countries = top(h, "COALESCE(resp_cc, orig_cc, '??')", &f.wher, 10).await?;
    r.section(
        "Traffic by country",
        if countries.is_empty() {
            Body::Note { text: "No traffic in this range.".into() }
        } else {
            bars(ChartKind::Bars, Unit::Bytes, countries.iter().map(|t| (country_label(&t.0), t.3)))
        },
    );
    r.section(
        if unfiltered.is_empty() {
            "Alerts by severity".to_string()
        } else {
            format!("Alerts by severity (not filtered by {})", unfiltered.join(", "))
        },
        bars(ChartKind::Columns, Unit::Count, sev),
    );
    let services = top(h, "CAST(resp_p AS VARCHAR) || '/' || proto", &f.wher, 15).await?;
    r.section("Top services (responder port)", top_table("port/protocol", &services));
    Ok(())
}

fn country_label(cc: &str) -> String {
    if cc == "??" { "unknown (no GeoIP match)".to_string() } else { cc.to_string() }
}

/// The alert conditions a traffic filter carries over, and the fields
/// that have no meaning for alerts.
fn alert_filter_for_traffic(f: &Filter) -> (Vec<String>, Vec<&'static str>) {
    let mut skipped = Vec::new();
    if f.cidr.is_some() {
        skipped.push("net");
    }
    if f.protocol.is_some() {
        skipped.push("protocol");
    }
    let carried = Filter { cidr: None, protocol: None, ..f.clone() };
    (alert_conditions(&carried).unwrap_or_default(), skipped)
}

async fn talkers(spec: &Spec, src: &Sources<'_>, r: &mut Report) -> ApiResult<()> {
    let h = src.history;
    let f = flows_where(spec)?;
    let sources = top(h, "orig_h", &f.wher, 20).await?;
    r.section(
        "Top sources by bytes",
        bars(ChartKind::Bars, Unit::Bytes, sources.iter().take(10).map(|t| (t.0.clone(), t.3))),
    );
    r.section("Top sources", top_table("source", &sources));
    let dests = top(h, "resp_h", &f.wher, 20).await?;
    r.section(
        "Top destinations by bytes",
        bars(ChartKind::Bars, Unit::Bytes, dests.iter().take(10).map(|t| (t.0.clone(), t.3))),
    );
    r.section("Top destinations", top_table("destination", &dests));
    let pairs = top(h, "orig_h || ' -> ' || resp_h", &f.wher, 20).await?;
    r.section("Top conversations", top_table("source -> destination", &pairs));
    r.section("Protocols (bytes)", protocols(h, &f.wher).await?);
    let ports = top(h, "CAST(resp_p AS VARCHAR) || '/' || proto", &f.wher, 20).await?;
    r.section("Top ports", top_table("port/protocol", &ports));
    Ok(())
}

async fn alerts(spec: &Spec, src: &Sources<'_>, r: &mut Report) -> ApiResult<()> {
    let h = src.history;
    let wher =
        std::iter::once(spec.range_sql()).chain(alert_conditions(&spec.filter)?).collect::<Vec<_>>().join(" AND ");
    // Each alert once: its first event in the range carries its identity.
    let rows = history_rows(
        h,
        &format!(
            "SELECT id, MIN(ts) AS raised, MAX(ts) AS last, MAX(severity) AS severity, MAX(rule) AS rule, \
             MAX(category) AS category, MAX(array_to_string(src_ips, ' ')) AS sources, \
             MAX(array_to_string(dst_ips, ' ')) AS targets, MAX(explanation) AS explanation, \
             MAX(packets) AS packets FROM alerts WHERE {wher} GROUP BY id ORDER BY raised, id"
        ),
    )
    .await?;
    let states: std::collections::HashMap<String, String> = match src.store {
        Some(s) => s
            .with(|c| {
                let mut q = c.prepare("SELECT alert_id, status FROM alert_state")?;
                q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?.collect()
            })
            .map_err(ApiError::from)?,
        None => Default::default(),
    };
    let sev = alerts_by_severity(h, &wher).await?;
    let count = |f: &dyn Fn(&Value) -> bool| rows.iter().filter(|r| f(r)).count() as f64;
    let mut sources = std::collections::BTreeSet::new();
    for row in &rows {
        for s in text(&row["sources"]).split_whitespace() {
            sources.insert(s.to_string());
        }
    }
    let rules: std::collections::BTreeSet<String> = rows.iter().map(|r| text(&r["rule"])).collect();
    let status = |id: &str| states.get(id).cloned().unwrap_or_else(|| "new".into());
    r.section(
        "Summary",
        Body::Figures {
            figures: vec![
                Figure { label: "Alerts".into(), value: rows.len() as f64, unit: Unit::Count },
                Figure {
                    label: "Critical or high".into(),
                    value: count(&|r| matches!(r["severity"].as_str(), Some("critical" | "high"))),
                    unit: Unit::Count,
                },
                Figure { label: "Rules that fired".into(), value: rules.len() as f64, unit: Unit::Count },
                Figure { label: "Distinct sources".into(), value: sources.len() as f64, unit: Unit::Count },
                Figure {
                    label: "Anomalies (model)".into(),
                    value: count(&|r| r["category"] == "anomaly"),
                    unit: Unit::Count,
                },
                Figure {
                    label: "Acknowledged or resolved".into(),
                    value: count(&|r| status(&text(&r["id"])) != "new"),
                    unit: Unit::Count,
                },
            ],
        },
    );
    r.section("Alerts by severity", bars(ChartKind::Columns, Unit::Count, sev));
    // Alerts raised per time step.
    let bucket = spec.bucket_secs() * SEC;
    let mut per = spec.steps();
    for row in &rows {
        let at = ts_ns(&row["raised"]);
        *per.entry(at - at.rem_euclid(bucket)).or_default() += 1.0;
    }
    r.section(
        format!("Alerts raised per {}", duration_words(bucket / SEC)),
        if rows.is_empty() {
            Body::Note { text: "No alerts in this range.".into() }
        } else {
            bars(ChartKind::Line, Unit::Count, per.into_iter().map(|(k, v)| (k.to_string(), v)))
        },
    );
    let mut by_rule: std::collections::BTreeMap<String, f64> = Default::default();
    let mut by_cat: std::collections::BTreeMap<String, f64> = Default::default();
    let mut by_src: std::collections::BTreeMap<String, f64> = Default::default();
    for row in &rows {
        *by_rule.entry(text(&row["rule"])).or_default() += 1.0;
        *by_cat.entry(text(&row["category"])).or_default() += 1.0;
        for s in text(&row["sources"]).split_whitespace() {
            *by_src.entry(s.to_string()).or_default() += 1.0;
        }
    }
    if !rows.is_empty() {
        r.section("Top rules", bars(ChartKind::Bars, Unit::Count, ranked(by_rule, 10)));
        r.section("By category", bars(ChartKind::Donut, Unit::Count, ranked(by_cat, 8)));
        r.section("Top sources", bars(ChartKind::Bars, Unit::Count, ranked(by_src, 10)));
    }
    const MAX: usize = 500;
    r.section(
        "Alerts",
        Body::Table(Table {
            columns: vec![
                col("raised", Unit::Time),
                col("severity", Unit::Text),
                col("rule", Unit::Text),
                col("sources", Unit::Text),
                col("targets", Unit::Text),
                col("status", Unit::Text),
                col("id", Unit::Text),
                col("explanation", Unit::Text),
            ],
            rows: rows
                .iter()
                .take(MAX)
                .map(|row| {
                    let id = text(&row["id"]);
                    vec![
                        json!(ts_ns(&row["raised"])),
                        row["severity"].clone(),
                        row["rule"].clone(),
                        json!(text(&row["sources"])),
                        json!(text(&row["targets"])),
                        json!(status(&id)),
                        json!(id),
                        row["explanation"].clone(),
                    ]
                })
                .collect(),
            omitted: rows.len().saturating_sub(MAX) as u64,
        }),
    );
    Ok(())
}

/// The `n` largest counts, largest first (ties by name).
fn ranked(m: std::collections::BTreeMap<String, f64>, n: usize) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn duration_words(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => {
            format!("{} day{}", s / 86_400, if s == 86_400 { "" } else { "s" }).replace("1 day", "day")
        }
        s if s % 3600 == 0 => {
            if s == 3600 {
                "hour".into()
            } else {
                format!("{} hours", s / 3600)
            }
        }
        s if s % 60 == 0 => {
            if s == 60 {
                "minute".into()
            } else {
                format!("{} minutes", s / 60)
            }
        }
        s => format!("{s} seconds"),
    }
}

fn incidents(spec: &Spec, store: &Store, r: &mut Report) -> ApiResult<()> {
    struct Inc {
        id: i64,
        title: String,
        severity: String,
        status: String,
        assignee: Option<String>,
        source: Option<String>,
        created: i64,
        updated: i64,
        alerts: i64,
        notes: i64,
    }
    let f = &spec.filter;
    let text = f.text.as_ref().map(|t| t.trim().to_lowercase());
    let all: Vec<Inc> = store
        .with(|c| {
            let mut q = c.prepare(
                "SELECT i.id, i.title, i.severity, i.status, i.assignee, i.source_ip, i.created_ns, i.updated_ns,
                        (SELECT COUNT(*) FROM incident_alerts a WHERE a.incident_id = i.id),
                        (SELECT COUNT(*) FROM incident_notes n WHERE n.incident_id = i.id)
                 FROM incidents i WHERE i.created_ns < ?1 ORDER BY i.created_ns, i.id",
            )?;
            q.query_map([spec.to_ns], |r| {
                Ok(Inc {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    severity: r.get(2)?,
                    status: r.get(3)?,
                    assignee: r.get(4)?,
                    source: r.get(5)?,
                    created: r.get(6)?,
                    updated: r.get(7)?,
                    alerts: r.get(8)?,
                    notes: r.get(9)?,
                })
            })?
            .collect()
        })
        .map_err(ApiError::from)?;
    let all: Vec<Inc> = all
        .into_iter()
        .filter(|i| f.ip.as_ref().is_none_or(|ip| i.source.as_deref() == Some(ip.as_str())))
        .filter(|i| text.as_ref().is_none_or(|t| i.title.to_lowercase().contains(t)))
        .collect();
    let opened: Vec<&Inc> = all.iter().filter(|i| i.created >= spec.from_ns).collect();
    let resolved: Vec<&Inc> =
        all.iter().filter(|i| i.status == "resolved" && (spec.from_ns..spec.to_ns).contains(&i.updated)).collect();
    let still_open = all.iter().filter(|i| i.status != "resolved").count();
    let mttr = if resolved.is_empty() {
        0.0
    } else {
        resolved.iter().map(|i| (i.updated - i.created) as f64 / SEC as f64).sum::<f64>() / resolved.len() as f64
    };
    r.section(
        "Summary",
        Body::Figures {
            figures: vec![
                Figure { label: "Opened in range".into(), value: opened.len() as f64, unit: Unit::Count },
                Figure { label: "Resolved in range".into(), value: resolved.len() as f64, unit: Unit::Count },
                Figure { label: "Open at the end".into(), value: still_open as f64, unit: Unit::Count },
                Figure {
                    label: "Critical or high opened".into(),
                    value: opened.iter().filter(|i| matches!(i.severity.as_str(), "critical" | "high")).count() as f64,
                    unit: Unit::Count,
                },
                Figure { label: "Mean time to resolve".into(), value: mttr, unit: Unit::Seconds },
            ],
        },
    );
    r.section(
        "Opened by severity",
        bars(
            ChartKind::Columns,
            Unit::Count,
            SEVERITY_ORDER.iter().map(|s| (s.to_string(), opened.iter().filter(|i| i.severity == *s).count() as f64)),
        ),
    );
    r.section(
        "Opened by status now",
        bars(
            ChartKind::Donut,
            Unit::Count,
            ["open", "investigating", "resolved"]
                .iter()
                .map(|s| (s.to_string(), opened.iter().filter(|i| i.status == *s).count() as f64))
                .filter(|p| p.1 > 0.0),
        ),
    );
    r.section(
        "Incidents opened",
        Body::Table(Table {
            columns: vec![
                col("id", Unit::Text),
                col("opened", Unit::Time),
                col("title", Unit::Text),
                col("severity", Unit::Text),
                col("status", Unit::Text),
                col("assignee", Unit::Text),
                col("source", Unit::Text),
                col("alerts", Unit::Count),
                col("notes", Unit::Count),
            ],
            rows: opened
                .iter()
                .map(|i| {
                    vec![
                        json!(format!("#{}", i.id)),
                        json!(i.created),
                        json!(i.title),
                        json!(i.severity),
                        json!(i.status),
                        json!(i.assignee),
                        json!(i.source),
                        json!(i.alerts),
                        json!(i.notes),
                    ]
                })
                .collect(),
            omitted: 0,
        }),
    );
    Ok(())
}

fn audit(spec: &Spec, store: &Store, r: &mut Report) -> ApiResult<()> {
    let f = &spec.filter;
    let text = f.text.as_ref().map(|t| t.trim().to_lowercase());
    type Row = (i64, String, String, String, String, String, bool);
    let rows: Vec<Row> = store
        .with(|c| {
            let mut q = c.prepare(
                "SELECT ts_ns, user, action, target, detail, addr, ok FROM audit WHERE ts_ns >= ?1 AND ts_ns < ?2 ORDER BY ts_ns, id",
            )?;
            q.query_map([spec.from_ns, spec.to_ns], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get::<_, i64>(6)? != 0))
            })?
            .collect()
        })
        .map_err(ApiError::from)?;
    let rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| f.ip.as_ref().is_none_or(|ip| &r.5 == ip))
        .filter(|r| {
            text.as_ref().is_none_or(|t| [&r.1, &r.2, &r.3].iter().any(|s| s.to_lowercase().contains(t.as_str())))
        })
        .collect();
    let users: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let count = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count() as f64;
    r.section(
        "Summary",
        Body::Figures {
            figures: vec![
                Figure { label: "Audited actions".into(), value: rows.len() as f64, unit: Unit::Count },
                Figure { label: "Users".into(), value: users.len() as f64, unit: Unit::Count },
                Figure { label: "Refused or failed".into(), value: count(&|r| !r.6), unit: Unit::Count },
                Figure { label: "Log-ins".into(), value: count(&|r| r.2 == "login" && r.6), unit: Unit::Count },
                Figure { label: "Failed log-ins".into(), value: count(&|r| r.2 == "login" && !r.6), unit: Unit::Count },
            ],
        },
    );
    let mut by_user: std::collections::BTreeMap<String, f64> = Default::default();
    let mut by_action: std::collections::BTreeMap<String, f64> = Default::default();
    for r in &rows {
        *by_user.entry(r.1.clone()).or_default() += 1.0;
        *by_action.entry(r.2.clone()).or_default() += 1.0;
    }
    r.section("Activity by user", bars(ChartKind::Bars, Unit::Count, ranked(by_user, 12)));
    r.section("Actions", bars(ChartKind::Bars, Unit::Count, ranked(by_action, 12)));
    const MAX: usize = 2000;
    r.section(
        "Audit log",
        Body::Table(Table {
            columns: vec![
                col("time", Unit::Time),
                col("user", Unit::Text),
                col("action", Unit::Text),
                col("target", Unit::Text),
                col("from", Unit::Text),
                col("result", Unit::Text),
                col("detail", Unit::Text),
            ],
            rows: rows
                .iter()
                .take(MAX)
                .map(|r| {
                    vec![
                        json!(r.0),
                        json!(r.1),
                        json!(r.2),
                        json!(r.3),
                        json!(r.5),
                        json!(if r.6 { "ok" } else { "refused" }),
                        json!(if r.4 == "{}" { String::new() } else { r.4.clone() }),
                    ]
                })
                .collect(),
            omitted: rows.len().saturating_sub(MAX) as u64,
        }),
    );
    Ok(())
}

/// Where generated reports are kept.
pub fn dir(data: &Path) -> PathBuf {
    data.join("reports")
}
