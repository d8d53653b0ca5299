//! Fired alerts (`/api/alerts`, `/api/anomalies`, `/api/threats`): the
//! latest event of each alert, from the engine's live feed and, for alerts
//! fired before this server started, from the `alerts` history (the last
//! [`PAST_DAYS`] days, read once), joined with the workflow state the store
//! keeps (acknowledged, resolved, assignee).

use std::collections::HashMap;
use std::io::Write;

use axum::extract::State;
use rusqlite::params;
use serde::{Deserialize, Serialize};
use tapstream_engine::alert::{Alert, Category, Severity};

use super::{Body, Me, Params, Segment, audit, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::store::now_ns;

/// How far back the history is read for alerts fired before this start.
pub const PAST_DAYS: i64 = 7;
/// Alert events read from the history at most (newest first).
const PAST_EVENTS: usize = 10_000;

/// Categories shown as anomalies; the rest but `system` are threats.
const ANOMALY: &[Category] = &[Category::Anomaly, Category::Ddos, Category::Flood];

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AlertFilter")]
pub struct Filter {
    #[schemars(extend("enum" = ["info", "low", "medium", "high", "critical"]))]
    severity: Option<String>,
    /// Least severity.
    #[schemars(extend("enum" = ["info", "low", "medium", "high", "critical"]))]
    min_severity: Option<String>,
    #[schemars(extend("enum" = ["ddos", "scan", "flood", "policy", "intel", "anomaly", "malware", "exfiltration", "system"]))]
    category: Option<String>,
    /// Workflow: new, acknowledged, resolved.
    #[schemars(extend("enum" = ["new", "acknowledged", "resolved"]))]
    status: Option<String>,
    /// Engine state: open or closed.
    #[schemars(extend("enum" = ["open", "closed"]))]
    state: Option<String>,
    ip: Option<String>,
    rule: Option<String>,
    /// At most 1000 (default 200), newest first.
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<u32>,
}

/// An alert event as the alert log writes it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AlertBody {
    timestamp: String,
    event: &'static str,
    id: String,
    rule: String,
    severity: &'static str,
    category: &'static str,
    verdict: &'static str,
    start: String,
    last_seen: String,
    src_ips: Vec<String>,
    dst_ips: Vec<String>,
    ports: Vec<u16>,
    countries: Vec<String>,
    packets: u64,
    bytes: u64,
    flows: u64,
    rate: f64,
    rate_unit: String,
    top_sources: Vec<String>,
    sample_flows: Vec<String>,
    explanation: String,
}

fn ts(ns: u64) -> String {
    super::audit::rfc3339(ns as i64)
}

impl From<&Alert> for AlertBody {
    fn from(a: &Alert) -> AlertBody {
        AlertBody {
            timestamp: ts(a.ts),
            event: a.event.name(),
            id: a.id.clone(),
            rule: a.rule.clone(),
            severity: a.severity.name(),
            category: a.category.name(),
            verdict: a.verdict.name(),
            start: ts(a.start_ts),
            last_seen: ts(a.last_ts),
            src_ips: a.src_ips.clone(),
            dst_ips: a.dst_ips.clone(),
            ports: a.ports.clone(),
            countries: a.countries.clone(),
            packets: a.packets,
            bytes: a.bytes,
            flows: a.flows,
            rate: if a.rate.is_finite() { a.rate } else { 0.0 },
            rate_unit: a.rate_unit.clone(),
            top_sources: a.top_sources.clone(),
            sample_flows: a.sample_flows.clone(),
            explanation: a.explanation.clone(),
        }
    }
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct AlertView {
    #[serde(flatten)]
    alert: AlertBody,
    /// Engine state: open, or closed after being quiet.
    state: &'static str,
    /// Workflow state: new, acknowledged, resolved.
    status: String,
    assignee: Option<String>,
    events: usize,
}

struct WorkState {
    status: String,
    assignee: Option<String>,
}

fn work_states(st: &AppState) -> rusqlite::Result<HashMap<String, WorkState>> {
    st.store.with(|c| {
        let mut q = c.prepare("SELECT alert_id, status, assignee FROM alert_state")?;
        q.query_map([], |r| Ok((r.get::<_, String>(0)?, WorkState { status: r.get(1)?, assignee: r.get(2)? })))?
            .collect()
    })
}

/// Alert events of the last [`PAST_DAYS`] days in the history, oldest
/// first (read once per server start; later events are in the live feed).
pub async fn past(st: &AppState) -> ApiResult<&Vec<Alert>> {
    st.past_alerts
        .get_or_try_init(|| async {
            let since = now_ns() - PAST_DAYS * 86_400 * 1_000_000_000;
            let sql = format!(
                "SELECT CAST(ts AS BIGINT) AS ts, event, id, rule, severity, category, verdict, \
                 CAST(start_ts AS BIGINT) AS start_ts, CAST(last_ts AS BIGINT) AS last_ts, src_ips, dst_ips, ports, \
                 countries, packets, bytes, flows, rate, rate_unit, top_sources, sample_flows, explanation \
                 FROM alerts WHERE ts >= to_timestamp_nanos({since}) ORDER BY ts DESC LIMIT {PAST_EVENTS}"
            );
            let rows = super::traffic::rows(st, &sql).await?;
            let mut v: Vec<Alert> = rows.iter().filter_map(alert_of_row).collect();
            v.reverse();
            Ok::<_, ApiError>(v)
        })
        .await
}

fn alert_of_row(r: &serde_json::Value) -> Option<Alert> {
    use tapstream_engine::alert::{AlertEvent, Verdict};
    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
    let n = |k: &str| r[k].as_u64().or_else(|| r[k].as_i64().map(|x| x.max(0) as u64)).unwrap_or(0);
    let strs = |k: &str| -> Vec<String> {
        r[k].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    Some(Alert {
        ts: n("ts"),
        event: AlertEvent::from_name(r["event"].as_str()?)?,
        id: s("id"),
        rule: s("rule"),
        severity: Severity::from_name(r["severity"].as_str()?)?,
        category: Category::from_name(r["category"].as_str()?)?,
        verdict: Verdict::from_name(r["verdict"].as_str()?)?,
        start_ts: n("start_ts"),
        last_ts: n("last_ts"),
        src_ips: strs("src_ips"),
        dst_ips: strs("dst_ips"),
        ports: r["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_u64().map(|p| p as u16)).collect())
            .unwrap_or_default(),
        countries: strs("countries"),
        packets: n("packets"),
        bytes: n("bytes"),
        flows: n("flows"),
        rate: r["rate"].as_f64().unwrap_or(0.0),
        rate_unit: s("rate_unit"),
        top_sources: strs("top_sources"),
        sample_flows: strs("sample_flows"),
        explanation: s("explanation"),
    })
}

/// Every alert event known: the history's, then the live feed's (an event
/// in both counts once), oldest first.
fn events(st: &AppState, past: &[Alert]) -> Vec<Alert> {
    let live: Vec<Alert> =
        st.engine.alerts.as_ref().map(|f| f.since(0).into_iter().map(|(_, a)| a).collect()).unwrap_or_default();
    let key = |a: &Alert| (a.id.clone(), a.ts, a.event);
    let seen: std::collections::HashSet<_> = live.iter().map(key).collect();
    past.iter().filter(|a| !seen.contains(&key(a))).cloned().chain(live).collect()
}

/// Latest event per alert id with its event count, newest first.
fn latest(st: &AppState, past: &[Alert]) -> Vec<(Alert, usize)> {
    let mut by_id: HashMap<String, (Alert, usize)> = HashMap::new();
    for a in events(st, past) {
        let e = by_id.entry(a.id.clone()).or_insert_with(|| (a.clone(), 0));
        e.1 += 1;
        if a.ts >= e.0.ts {
            e.0 = a;
        }
    }
    let mut v: Vec<_> = by_id.into_values().collect();
    v.sort_by(|a, b| b.0.last_ts.cmp(&a.0.last_ts).then_with(|| a.0.id.cmp(&b.0.id)));
    v
}

fn severity(s: &str) -> ApiResult<Severity> {
    Severity::from_name(s)
        .ok_or_else(|| ApiError::bad_request(format!("severity `{s}` (info, low, medium, high, critical)")))
}

fn view(a: &Alert, events: usize, ws: Option<&WorkState>) -> AlertView {
    AlertView {
        alert: AlertBody::from(a),
        state: if a.event == tapstream_engine::alert::AlertEvent::Close { "closed" } else { "open" },
        status: ws.map(|w| w.status.clone()).unwrap_or_else(|| "new".into()),
        assignee: ws.and_then(|w| w.assignee.clone()),
        events,
    }
}

fn select(
    st: &AppState,
    past: &[Alert],
    f: &Filter,
    only: Option<&dyn Fn(Category) -> bool>,
) -> ApiResult<Vec<AlertView>> {
    let limit = f.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let sev = f.severity.as_deref().map(severity).transpose()?;
    let min = f.min_severity.as_deref().map(severity).transpose()?;
    let cat = match f.category.as_deref() {
        Some(c) => Some(Category::from_name(c).ok_or_else(|| ApiError::bad_request(format!("no category `{c}`")))?),
        None => None,
    };
    if let Some(s) = f.status.as_deref().filter(|s| !["new", "acknowledged", "resolved"].contains(s)) {
        return Err(ApiError::bad_request(format!("status `{s}` (new, acknowledged, resolved)")));
    }
    if let Some(s) = f.state.as_deref().filter(|s| !["open", "closed"].contains(s)) {
        return Err(ApiError::bad_request(format!("state `{s}` (open, closed)")));
    }
    let states = work_states(st)?;
    let mut out = Vec::new();
    for (a, n) in latest(st, past) {
        let v = view(&a, n, states.get(&a.id));
        let keep = sev.is_none_or(|s| a.severity == s)
            && min.is_none_or(|m| a.severity >= m)
            && cat.is_none_or(|c| a.category == c)
            && only.is_none_or(|o| o(a.category))
            && f.status.as_deref().is_none_or(|s| v.status == s)
            && f.state.as_deref().is_none_or(|s| v.state == s)
            && f.rule.as_deref().is_none_or(|r| a.rule == r)
            && f.ip.as_deref().is_none_or(|ip| a.src_ips.iter().chain(&a.dst_ips).any(|x| x == ip));
        if keep {
            out.push(v);
            if out.len() >= limit as usize {
                break;
            }
        }
    }
    Ok(out)
}

pub async fn list(State(st): State<AppState>, Params(f): Params<Filter>) -> ApiResult<axum::Json<Vec<AlertView>>> {
    let past = past(&st).await?;
    Ok(json(select(&st, past, &f, None)?))
}

pub async fn anomalies(State(st): State<AppState>, Params(f): Params<Filter>) -> ApiResult<axum::Json<Vec<AlertView>>> {
    let past = past(&st).await?;
    Ok(json(select(&st, past, &f, Some(&|c| ANOMALY.contains(&c)))?))
}

pub async fn threats(State(st): State<AppState>, Params(f): Params<Filter>) -> ApiResult<axum::Json<Vec<AlertView>>> {
    let past = past(&st).await?;
    Ok(json(select(&st, past, &f, Some(&|c| !ANOMALY.contains(&c) && c != Category::System))?))
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct AlertDetail {
    #[serde(flatten)]
    current: AlertView,
    /// Every event known for it (history and live feed), oldest first.
    history: Vec<AlertBody>,
}

/// An alert id's syntax (the engine's ids are alphanumeric).
pub fn is_alert_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

async fn known(st: &AppState, id: &str) -> ApiResult<()> {
    if !is_alert_id(id) {
        return Err(ApiError::bad_request(format!("`{id}` is not an alert id")));
    }
    let past = past(st).await?;
    if !events(st, past).iter().any(|a| a.id == id) {
        return Err(ApiError::not_found(format!("no alert {id}")));
    }
    Ok(())
}

pub async fn get(State(st): State<AppState>, Segment(id): Segment<String>) -> ApiResult<axum::Json<AlertDetail>> {
    known(&st, &id).await?;
    let states = work_states(&st)?;
    let past = past(&st).await?;
    let (a, n) = latest(&st, past)
        .into_iter()
        .find(|(a, _)| a.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no alert {id}")))?;
    let history = events(&st, past).iter().filter(|x| x.id == id).map(AlertBody::from).collect();
    Ok(json(AlertDetail { current: view(&a, n, states.get(&id)), history }))
}

fn set_state(st: &AppState, id: &str, status: Option<&str>, assignee: Option<Option<&str>>, by: &str) -> ApiResult<()> {
    st.store.tx(|t| {
        t.execute(
            "INSERT INTO alert_state (alert_id, status, assignee, updated_ns, updated_by) VALUES (?1, 'new', NULL, ?2, ?3)
             ON CONFLICT(alert_id) DO NOTHING",
            params![id, now_ns(), by],
        )?;
        if let Some(s) = status {
            t.execute(
                "UPDATE alert_state SET status = ?1, updated_ns = ?2, updated_by = ?3 WHERE alert_id = ?4",
                params![s, now_ns(), by, id],
            )?;
        }
        if let Some(a) = assignee {
            t.execute(
                "UPDATE alert_state SET assignee = ?1, updated_ns = ?2, updated_by = ?3 WHERE alert_id = ?4",
                params![a, now_ns(), by, id],
            )?;
        }
        Ok::<_, rusqlite::Error>(())
    })?;
    Ok(())
}

/// Acknowledged and resolved alerts stop escalating: the notifier reads
/// `DATA/alerts.ack` (as `tapstream alerts ack` writes it).
fn stop_escalation(st: &AppState, id: &str) -> ApiResult<()> {
    let p = st.cfg.data_dir.join("alerts.ack");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(ApiError::internal)?;
    writeln!(f, "{id}").map_err(ApiError::internal)
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Comment {
    #[serde(default)]
    comment: Option<String>,
}

async fn transition(
    st: AppState,
    me: Me,
    id: String,
    status: &'static str,
    action: &'static str,
    c: Option<String>,
) -> ApiResult<axum::Json<WorkflowReply>> {
    known(&st, &id).await?;
    set_state(&st, &id, Some(status), None, &me.name)?;
    stop_escalation(&st, &id)?;
    audit(&st, me.audit(action, id.clone(), serde_json::json!({ "comment": c })))?;
    Ok(json(WorkflowReply { id, status }))
}

pub async fn ack(
    State(st): State<AppState>,
    me: Me,
    Segment(id): Segment<String>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<WorkflowReply>> {
    let c: Option<Comment> = super::optional_body(&body)?;
    transition(st, me, id, "acknowledged", "alert_ack", c.and_then(|c| c.comment)).await
}

pub async fn resolve(
    State(st): State<AppState>,
    me: Me,
    Segment(id): Segment<String>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<WorkflowReply>> {
    let c: Option<Comment> = super::optional_body(&body)?;
    transition(st, me, id, "resolved", "alert_resolve", c.and_then(|c| c.comment)).await
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// A user name, or null to unassign.
    assignee: Option<String>,
}

pub async fn assign(
    State(st): State<AppState>,
    me: Me,
    Segment(id): Segment<String>,
    Body(b): Body<Assign>,
) -> ApiResult<axum::Json<AssignReply>> {
    known(&st, &id).await?;
    if let Some(u) = &b.assignee
        && !super::users::user_exists(&st, u)?
    {
        return Err(ApiError::unprocessable(format!("no user `{u}` to assign to")));
    }
    set_state(&st, &id, None, Some(b.assignee.as_deref()), &me.name)?;
    audit(&st, me.audit("alert_assign", id.clone(), serde_json::json!({ "assignee": b.assignee })))?;
    Ok(json(AssignReply { id, assignee: b.assignee }))
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct WorkflowReply {
    id: String,
    status: &'static str,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct AssignReply {
    id: String,
    assignee: Option<String>,
}
