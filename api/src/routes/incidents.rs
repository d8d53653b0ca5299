//! Incidents (`/api/incidents`): opened from alerts or by hand, worked
//! through open → investigating → resolved with notes, linked alerts, an
//! assignee, and a one-step "block the source". Details marked sensitive
//! are encrypted at rest and shown only to analysts and admins.

use axum::extract::State;
use axum::http::StatusCode;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Body, Me, Params, Segment, audit, json};
use crate::AppState;
use crate::auth::Role;
use crate::error::{ApiError, ApiResult};
use crate::store::now_ns;

const STATUSES: &[&str] = &["open", "investigating", "resolved"];
const SEVERITIES: &[&str] = &["info", "low", "medium", "high", "critical"];

#[derive(Serialize, Debug, schemars::JsonSchema)]
pub struct Incident {
    pub id: i64,
    pub title: String,
    pub severity: String,
    pub status: String,
    pub assignee: Option<String>,
    pub source_ip: Option<String>,
    pub created: String,
    pub updated: String,
    pub created_by: String,
    pub alerts: Vec<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Note {
    id: i64,
    author: String,
    text: String,
    created: String,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    incident: Incident,
    notes: Vec<Note>,
    /// Sensitive details: decrypted for analysts and admins; `null` when none.
    details: Option<String>,
    details_hidden: bool,
}

fn check(field: &str, v: &str, allowed: &[&str]) -> ApiResult<()> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!("{field} `{v}` ({})", allowed.join(", "))))
    }
}

fn load(st: &AppState, id: i64) -> ApiResult<Incident> {
    let row = st.store.with(|c| {
        c.query_row(
            "SELECT id, title, severity, status, assignee, source_ip, created_ns, updated_ns, created_by FROM incidents WHERE id = ?1",
            params![id],
            |r| {
                Ok(Incident {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    severity: r.get(2)?,
                    status: r.get(3)?,
                    assignee: r.get(4)?,
                    source_ip: r.get(5)?,
                    created: super::audit::rfc3339(r.get(6)?),
                    updated: super::audit::rfc3339(r.get(7)?),
                    created_by: r.get(8)?,
                    alerts: Vec::new(),
                })
            },
        )
        .optional()
    })?;
    let mut i = row.ok_or_else(|| ApiError::not_found(format!("no incident {id}")))?;
    i.alerts = st.store.with(|c| {
        let mut q = c.prepare("SELECT alert_id FROM incident_alerts WHERE incident_id = ?1 ORDER BY alert_id")?;
        q.query_map(params![id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()
    })?;
    Ok(i)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IncidentFilter")]
pub struct Filter {
    #[schemars(extend("enum" = ["open", "investigating", "resolved"]))]
    status: Option<String>,
    #[schemars(extend("enum" = ["info", "low", "medium", "high", "critical"]))]
    severity: Option<String>,
    assignee: Option<String>,
}

pub async fn list(State(st): State<AppState>, Params(f): Params<Filter>) -> ApiResult<axum::Json<Vec<Incident>>> {
    if let Some(s) = &f.status {
        check("status", s, STATUSES).map_err(|e| ApiError::bad_request(e.detail))?;
    }
    if let Some(s) = &f.severity {
        check("severity", s, SEVERITIES).map_err(|e| ApiError::bad_request(e.detail))?;
    }
    let ids: Vec<i64> = st.store.with(|c| {
        let mut q = c.prepare(
            "SELECT id FROM incidents WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR severity = ?2)
             AND (?3 IS NULL OR assignee = ?3) ORDER BY id DESC LIMIT 1000",
        )?;
        q.query_map(params![f.status, f.severity, f.assignee], |r| r.get(0))?.collect()
    })?;
    Ok(json(ids.into_iter().map(|id| load(&st, id)).collect::<ApiResult<Vec<_>>>()?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIncident {
    #[schemars(length(min = 1, max = 512), pattern(r"\S"))]
    title: String,
    #[serde(default)]
    #[schemars(extend("enum" = ["info", "low", "medium", "high", "critical", null]))]
    severity: Option<String>,
    #[serde(default)]
    #[schemars(inner(pattern(r"^[A-Za-z0-9]{1,64}$")))]
    alerts: Vec<String>,
    #[serde(default)]
    assignee: Option<String>,
    #[serde(default)]
    source_ip: Option<String>,
    /// Encrypted at rest; shown only to analysts and admins.
    #[serde(default)]
    #[schemars(length(max = 65536))]
    sensitive_details: Option<String>,
}

fn valid_alert_id(id: &str) -> ApiResult<()> {
    if !super::alerts::is_alert_id(id) {
        return Err(ApiError::unprocessable(format!("`{id}` is not an alert id")));
    }
    Ok(())
}

fn check_user(st: &AppState, u: &str) -> ApiResult<()> {
    if super::users::user_exists(st, u)? { Ok(()) } else { Err(ApiError::unprocessable(format!("no user `{u}`"))) }
}

pub async fn create(
    State(st): State<AppState>,
    me: Me,
    Body(b): Body<NewIncident>,
) -> ApiResult<(StatusCode, axum::Json<Incident>)> {
    let title = b.title.trim();
    if title.is_empty() || title.len() > 512 {
        return Err(ApiError::unprocessable("title: 1 to 512 bytes"));
    }
    // From alerts: the worst severity and the first source unless given.
    let feed: Vec<tapstream_engine::alert::Alert> =
        st.engine.alerts.as_ref().map(|f| f.since(0).into_iter().map(|(_, a)| a).collect()).unwrap_or_default();
    for a in &b.alerts {
        valid_alert_id(a)?;
    }
    let linked: Vec<&tapstream_engine::alert::Alert> = feed.iter().filter(|a| b.alerts.contains(&a.id)).collect();
    let severity = match &b.severity {
        Some(s) => {
            check("severity", s, SEVERITIES)?;
            s.clone()
        }
        None => {
            linked.iter().map(|a| a.severity).max().map(|s| s.name().to_string()).unwrap_or_else(|| "medium".into())
        }
    };
    let source_ip = match &b.source_ip {
        Some(ip) => Some(
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| ApiError::unprocessable(format!("source_ip `{ip}` is not an IP address")))?
                .to_string(),
        ),
        None => linked.iter().find_map(|a| a.src_ips.first().cloned()),
    };
    if let Some(u) = &b.assignee {
        check_user(&st, u)?;
    }
    if b.sensitive_details.as_ref().is_some_and(|d| d.len() > 65_536) {
        return Err(ApiError::unprocessable("sensitive_details: at most 64 KiB"));
    }
    let now = now_ns();
    let id = st.store.tx(|t| {
        t.execute(
            "INSERT INTO incidents (title, severity, status, assignee, source_ip, created_ns, updated_ns, created_by)
             VALUES (?1, ?2, 'open', ?3, ?4, ?5, ?5, ?6)",
            params![title, severity, b.assignee, source_ip, now, me.name],
        )?;
        let id = t.last_insert_rowid();
        for a in &b.alerts {
            t.execute("INSERT OR IGNORE INTO incident_alerts (incident_id, alert_id) VALUES (?1, ?2)", params![id, a])?;
        }
        Ok::<_, rusqlite::Error>(id)
    })?;
    if let Some(d) = &b.sensitive_details {
        let sealed = st.keys.seal(&format!("incident:{id}"), d.as_bytes());
        st.store.with(|c| c.execute("UPDATE incidents SET sensitive = ?1 WHERE id = ?2", params![sealed, id]))?;
    }
    audit(
        &st,
        me.audit(
            "incident_create",
            id.to_string(),
            serde_json::json!({ "title": title, "alerts": b.alerts, "sensitive": b.sensitive_details.is_some() }),
        ),
    )?;
    Ok((StatusCode::CREATED, json(load(&st, id)?)))
}

pub async fn get(
    State(st): State<AppState>,
    me: Me,
    Segment(id): Segment<i64>,
) -> ApiResult<axum::Json<IncidentDetail>> {
    let incident = load(&st, id)?;
    let notes = st.store.with(|c| {
        let mut q =
            c.prepare("SELECT id, author, text, created_ns FROM incident_notes WHERE incident_id = ?1 ORDER BY id")?;
        q.query_map(params![id], |r| {
            Ok(Note { id: r.get(0)?, author: r.get(1)?, text: r.get(2)?, created: super::audit::rfc3339(r.get(3)?) })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    let sealed: Option<Vec<u8>> =
        st.store.with(|c| c.query_row("SELECT sensitive FROM incidents WHERE id = ?1", params![id], |r| r.get(0)))?;
    let (details, hidden) = match sealed {
        None => (None, false),
        Some(_) if me.role == Role::Viewer => (None, true),
        Some(s) => {
            let plain = st.keys.open(&format!("incident:{id}"), &s)?;
            (Some(String::from_utf8_lossy(&plain).into_owned()), false)
        }
    };
    Ok(json(IncidentDetail { incident, notes, details, details_hidden: hidden }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IncidentChange")]
pub struct Change {
    #[serde(default)]
    #[schemars(length(min = 1, max = 512), pattern(r"\S"))]
    title: Option<String>,
    #[serde(default)]
    #[schemars(extend("enum" = ["open", "investigating", "resolved", null]))]
    status: Option<String>,
    #[serde(default)]
    #[schemars(extend("enum" = ["info", "low", "medium", "high", "critical", null]))]
    severity: Option<String>,
    /// A user name; empty string unassigns.
    #[serde(default)]
    assignee: Option<String>,
}

pub async fn update(
    State(st): State<AppState>,
    me: Me,
    Segment(id): Segment<i64>,
    Body(b): Body<Change>,
) -> ApiResult<axum::Json<Incident>> {
    let before = load(&st, id)?;
    if let Some(s) = &b.status {
        check("status", s, STATUSES)?;
    }
    if let Some(s) = &b.severity {
        check("severity", s, SEVERITIES)?;
    }
    if let Some(t) = &b.title
        && (t.trim().is_empty() || t.len() > 512)
    {
        return Err(ApiError::unprocessable("title: 1 to 512 bytes"));
    }
    if let Some(u) = b.assignee.as_deref().filter(|u| !u.is_empty()) {
        check_user(&st, u)?;
    }
    let now = now_ns();
    st.store.tx(|t| {
        if let Some(v) = &b.title {
            t.execute("UPDATE incidents SET title = ?1, updated_ns = ?2 WHERE id = ?3", params![v.trim(), now, id])?;
        }
        if let Some(v) = &b.status {
            t.execute("UPDATE incidents SET status = ?1, updated_ns = ?2 WHERE id = ?3", params![v, now, id])?;
        }
        if let Some(v) = &b.severity {
            t.execute("UPDATE incidents SET severity = ?1, updated_ns = ?2 WHERE id = ?3", params![v, now, id])?;
        }
        if let Some(v) = &b.assignee {
            let v = Some(v.as_str()).filter(|v| !v.is_empty());
            t.execute("UPDATE incidents SET assignee = ?1, updated_ns = ?2 WHERE id = ?3", params![v, now, id])?;
        }
        Ok::<_, rusqlite::Error>(())
    })?;
    let after = load(&st, id)?;
    audit(
        &st,
        me.audit(
            "incident_update",
            id.to_string(),
            serde_json::json!({
                "status": [before.status, after.status.clone()],
                "severity": [before.severity, after.severity.clone()],
                "assignee": [before.assignee, after.assignee.clone()],
            }),
        ),
    )?;
    Ok(json(after))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    #[schemars(length(min = 1, max = 65536), pattern(r"\S"))]
    text: String,
}

pub async fn add_note(
    State(st): State<AppState>,
    me: Me,
    Segment(id): Segment<i64>,
    Body(b): Body<NewNote>,
) -> ApiResult<StatusCode> {
    load(&st, id)?;
    if b.text.trim().is_empty() || b.text.len() > 65_536 {
        return Err(ApiError::unprocessable("text: 1 byte to 64 KiB"));
    }
    let now = now_ns();
    st.store.tx(|t| {
        t.execute(
            "INSERT INTO incident_notes (incident_id, author, text, created_ns) VALUES (?1, ?2, ?3, ?4)",
            params![id, me.name, b.text, now],
        )?;
        t.execute("UPDATE incidents SET updated_ns = ?1 WHERE id = ?2", params![now, id])
    })?;
    audit(&st, me.audit("incident_note", id.to_string(), serde_json::json!({ "bytes": b.text.len() })))?;
    Ok(StatusCode::CREATED)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    #[schemars(length(min = 1, max = 1000), inner(pattern(r"^[A-Za-z0-9]{1,64}$")))]
    alerts: Vec<String>,
}

pub async fn link_alerts(
    State(st): State<AppState>,
    me: Me,
    Segment(id): Segment<i64>,
    Body(b): Body<Link>,
) -> ApiResult<axum::Json<Incident>> {
    load(&st, id)?;
    if b.alerts.is_empty() || b.alerts.len() > 1000 {
        return Err(ApiError::unprocessable("alerts: 1 to 1000 ids"));
    }
    for a in &b.alerts {
        valid_alert_id(a)?;
    }
    st.store.tx(|t| {
        for a in &b.alerts {
            t.execute("INSERT OR IGNORE INTO incident_alerts (incident_id, alert_id) VALUES (?1, ?2)", params![id, a])?;
        }
        t.execute("UPDATE incidents SET updated_ns = ?1 WHERE id = ?2", params![now_ns(), id])
    })?;
    audit(&st, me.audit("incident_link", id.to_string(), serde_json::json!({ "alerts": b.alerts })))?;
    Ok(json(load(&st, id)?))
}

pub async fn block_source(
    State(st): State<AppState>,
    me: Me,
    Segment(id): Segment<i64>,
) -> ApiResult<(StatusCode, axum::Json<super::blocklist::Entry>)> {
    let i = load(&st, id)?;
    let ip = i.source_ip.ok_or_else(|| ApiError::conflict("the incident has no source address to block"))?;
    let e = super::blocklist::add_entry(&st, &me.name, &ip, &format!("incident {id}: {}", i.title))?;
    audit(&st, me.audit("blocklist_add", e.value.clone(), serde_json::json!({ "incident": id })))?;
    Ok((StatusCode::CREATED, json(e)))
}
