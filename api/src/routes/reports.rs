//! `/api/reports`: generate a report now, list and download kept reports,
//! and manage report schedules.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Body, Me, Params, Segment, audit, json};
use crate::AppState;
use crate::auth::Role;
use crate::error::{ApiError, ApiResult};
use crate::report::schedule::{self, NewSchedule, ReportInfo, Requester, Schedule};
use crate::report::{Filter, Format, Kind, Span, Spec};

/// A report to generate.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReport {
    pub kind: Kind,
    /// pdf (default), csv or json.
    #[serde(default)]
    pub format: Option<Format>,
    /// A preset range ending at `to` (or now): day, week, month.
    #[serde(default)]
    pub range: Option<Span>,
    /// RFC 3339 or Unix seconds (with `to`, a custom range).
    #[serde(default)]
    #[schemars(pattern(super::audit::TIME))]
    pub from: Option<String>,
    /// Default: now.
    #[serde(default)]
    #[schemars(pattern(super::audit::TIME))]
    pub to: Option<String>,
    #[serde(default)]
    pub filter: Filter,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1 to 1000 (default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<u32>,
}

/// The audit trail is the administrators' (as the audit log is).
fn may_see(me: &super::Caller, kind: Kind) -> bool {
    kind != Kind::Audit || me.role == Role::Admin
}

pub async fn create(State(st): State<AppState>, me: Me, Body(b): Body<NewReport>) -> ApiResult<Response> {
    if !may_see(&me, b.kind) {
        return Err(ApiError::forbidden("only administrators may make the audit trail report"));
    }
    let spec = Spec::new(b.kind, b.range, b.from.as_deref(), b.to.as_deref(), b.filter, crate::store::now_ns())?;
    let format = b.format.unwrap_or(Format::Pdf);
    let who = Requester { user: me.name.clone(), addr: me.addr.clone(), schedule: None };
    let (info, _) = st
        .on_history(move |st| async move {
            let h = st.history().await?;
            schedule::produce(h, &st.store, &st.cfg.data_dir, &spec, format, &who).await
        })
        .await?;
    Ok((StatusCode::CREATED, json(info)).into_response())
}

pub async fn list(
    State(st): State<AppState>,
    me: Me,
    Params(q): Params<ListQuery>,
) -> ApiResult<axum::Json<Vec<ReportInfo>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let mut v = schedule::list(&st.store, limit)?;
    v.retain(|r| may_see(&me, r.kind));
    Ok(json(v))
}

pub async fn download(State(st): State<AppState>, me: Me, Segment(id): Segment<i64>) -> ApiResult<Response> {
    let r = schedule::get(&st.store, id)?;
    if !may_see(&me, r.kind) {
        return Err(ApiError::forbidden("only administrators may read the audit trail report"));
    }
    let path = crate::report::dir(&st.cfg.data_dir).join(&r.file);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::new(StatusCode::GONE, "gone", format!("report {id}'s file is gone: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, r.format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", r.file)),
        ],
        bytes,
    )
        .into_response())
}

pub async fn delete(State(st): State<AppState>, me: Me, Segment(id): Segment<i64>) -> ApiResult<StatusCode> {
    let r = schedule::get(&st.store, id)?;
    schedule::delete(&st.store, &st.cfg.data_dir, id)?;
    audit(&st, me.audit("report_delete", id.to_string(), serde_json::json!({ "kind": r.kind, "file": r.file })))?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn schedules(State(st): State<AppState>) -> ApiResult<axum::Json<Vec<Schedule>>> {
    Ok(json(schedule::schedules(&st.store)?))
}

pub async fn create_schedule(State(st): State<AppState>, me: Me, Body(b): Body<NewSchedule>) -> ApiResult<Response> {
    let known = known_channels(&st)?;
    let s = schedule::create(&st.store, &b, &me.name, &|c| known.iter().any(|k| k == c))?;
    audit(
        &st,
        me.audit(
            "report_schedule_create",
            s.name.clone(),
            serde_json::json!({ "kind": s.kind, "when": s.when, "channels": s.channels }),
        ),
    )?;
    Ok((StatusCode::CREATED, json(s)).into_response())
}

fn known_channels(st: &AppState) -> ApiResult<Vec<String>> {
    let mut v: Vec<String> = st.engine.notify.as_ref().map(|n| n.file_channels()).unwrap_or_default();
    v.extend(st.store.with(|c| {
        let mut q = c.prepare("SELECT name FROM channels")?;
        q.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()
    })?);
    Ok(v)
}

pub async fn delete_schedule(State(st): State<AppState>, me: Me, Segment(id): Segment<i64>) -> ApiResult<StatusCode> {
    let s = schedule::delete_schedule(&st.store, id)?;
    audit(&st, me.audit("report_schedule_delete", s.name, serde_json::json!({})))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a schedule now (its range ends now), delivering as it would.
pub async fn run_schedule(State(st): State<AppState>, me: Me, Segment(id): Segment<i64>) -> ApiResult<Response> {
    let s = schedule::schedule(&st.store, id)?;
    audit(&st, me.audit("report_schedule_run", s.name.clone(), serde_json::json!({})))?;
    let info = st.on_history(move |st| async move { schedule::run(&st, &s, crate::store::now_ns()).await }).await?;
    Ok((StatusCode::CREATED, json(info)).into_response())
}
