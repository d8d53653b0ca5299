//! Every route, with the roles allowed on it, in one table; the router is
//! built from the table and guarded by it.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod blocklist;
pub mod capture;
pub mod export;
pub mod import;
pub mod incidents;
pub mod logs;
pub mod plugins;
pub mod query;
pub mod records;
pub mod reports;
pub mod rules;
pub mod settings;
pub mod stream;
pub mod system;
pub mod traffic;
pub mod users;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Extension, Router};

use crate::AppState;
use crate::auth::Role;
use crate::error::{ApiError, ApiResult};
use crate::store::AuditEntry;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token (health, login, refresh).
    Public,
    /// A valid access token of one of these roles.
    Roles(&'static [Role]),
}

const ALL: Access = Access::Roles(&[Role::Admin, Role::Analyst, Role::Viewer]);
const ANALYST: Access = Access::Roles(&[Role::Admin, Role::Analyst]);
const ADMIN: Access = Access::Roles(&[Role::Admin]);

/// One route.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
}

impl Access {
    pub fn allows(&self, r: Role) -> bool {
        match self {
            Access::Public => true,
            Access::Roles(rs) => rs.contains(&r),
        }
    }
}

macro_rules! routes {
    ($( $m:ident $p:literal $a:expr => $h:path, $s:literal; )*) => {
        /// The route table: every route, the roles allowed, what it does.
        pub const TABLE: &[Route] = &[ $( Route { method: stringify!($m), path: $p, access: $a, summary: $s }, )* ];
        fn handlers() -> Vec<(&'static str, MethodRouter<AppState>)> {
            vec![ $( ($p, on(MethodFilter::$m, $h)), )* ]
        }
    };
}

routes! {
    GET "/api/health" Access::Public => system::health, "Liveness and engine state (no token needed)";
    GET "/api/openapi.json" ALL => crate::openapi::serve_document, "This API's OpenAPI 3 document";
    POST "/api/login" Access::Public => auth::login, "Log in: username, password and a TOTP code once enrolled";
    POST "/api/refresh" Access::Public => auth::refresh, "Trade a refresh token for new tokens";
    POST "/api/logout" ALL => auth::logout, "Revoke this session";
    GET "/api/me" ALL => auth::me, "The calling user";
    POST "/api/me/password" ALL => auth::change_password, "Change one's own password";
    POST "/api/me/totp" ALL => auth::totp_begin, "Start TOTP enrolment: a new secret to confirm";
    POST "/api/me/totp/confirm" ALL => auth::totp_confirm, "Confirm TOTP enrolment with a code";
    DELETE "/api/me/totp" ALL => auth::totp_disable, "Turn TOTP off (needs a current code)";
    GET "/api/me/layout" ALL => auth::get_layout, "One's own console dashboard layout";
    PUT "/api/me/layout" ALL => auth::put_layout, "Save one's own console dashboard layout (null clears it)";
    GET "/api/users" ADMIN => users::list, "List users";
    POST "/api/users" ADMIN => users::create, "Create a user";
    PATCH "/api/users/{name}" ADMIN => users::update, "Change a user's role, password or disabled state";
    DELETE "/api/users/{name}" ADMIN => users::delete, "Delete a user";
    GET "/api/user_activity" ADMIN => audit::list, "The audit log: who did what, when, from where";
    GET "/api/alerts" ALL => alerts::list, "Fired alerts with their workflow state";
    GET "/api/alerts/{id}" ALL => alerts::get, "One alert: every event, explanation and evidence";
    POST "/api/alerts/{id}/ack" ANALYST => alerts::ack, "Acknowledge an alert (stops escalation)";
    POST "/api/alerts/{id}/resolve" ANALYST => alerts::resolve, "Resolve an alert";
    POST "/api/alerts/{id}/assign" ANALYST => alerts::assign, "Assign an alert to a user";
    GET "/api/anomalies" ALL => alerts::anomalies, "Anomaly alerts (traffic spikes, the anomaly model, floods)";
    GET "/api/threats" ALL => alerts::threats, "Threat alerts (intel hits, scans, malware, exfiltration)";
    GET "/api/alerts/rules" ALL => rules::list, "Custom alert rules";
    POST "/api/alerts/rules" ADMIN => rules::create, "Add a rule (validated, applied at once)";
    GET "/api/alerts/rules/{id}" ALL => rules::get, "One rule";
    PUT "/api/alerts/rules/{id}" ADMIN => rules::update, "Replace a rule (validated, applied at once)";
    DELETE "/api/alerts/rules/{id}" ADMIN => rules::delete, "Delete a rule";
    GET "/api/incidents" ALL => incidents::list, "Incidents, filtered by status and severity";
    POST "/api/incidents" ANALYST => incidents::create, "Open an incident, optionally from alerts";
    GET "/api/incidents/{id}" ALL => incidents::get, "One incident with notes and linked alerts";
    PATCH "/api/incidents/{id}" ANALYST => incidents::update, "Change status, severity, assignee, title";
    POST "/api/incidents/{id}/notes" ANALYST => incidents::add_note, "Add a note";
    POST "/api/incidents/{id}/alerts" ANALYST => incidents::link_alerts, "Link alerts";
    POST "/api/incidents/{id}/block" ANALYST => incidents::block_source, "Put the incident's source on the blocklist";
    GET "/api/blocklist" ALL => blocklist::list, "Blocklisted IPs, networks and domains";
    POST "/api/blocklist" ADMIN => blocklist::add, "Add an entry (detection sees it at once)";
    DELETE "/api/blocklist/{id}" ADMIN => blocklist::remove, "Remove an entry";
    POST "/api/query" ANALYST => query::run, "SQL over the history, under the guardrails";
    POST "/api/export" ANALYST => export::export, "Export a table, a query's result (CSV, JSON, NDJSON, Parquet) or recorded packets (PCAP), streamed";
    POST "/api/import" ADMIN => import::import, "Import a CSV of flow records or a capture file (the request body) into the history, with a report";
    GET "/api/traffic" ALL => traffic::traffic, "Traffic over time and top-N (src, dst, port, protocol, country) for a range and filter";
    GET "/api/records" ALL => records::list, "One page of flows or protocol records for a range and the filter bar's fields, newest first";
    GET "/api/interfaces" ALL => system::interfaces, "Capture counters and drops per interface and queue";
    GET "/api/performance" ALL => system::performance, "CPU per core, memory, process RSS, data-dir disk use, engine rates, over time";
    GET "/api/stream" ALL => stream::stream, "WebSocket: per-second statistics and alert events (token also as ?access_token=)";
    GET "/api/logs" ADMIN => logs::list, "The server's log files (daily, kept 14 days)";
    GET "/api/logs/tail" ADMIN => logs::tail, "The last lines of a log file, filtered by level";
    GET "/api/logs/{name}" ADMIN => logs::download, "Download a log file";
    GET "/api/capture" ALL => capture::list, "Packet recording sessions with their state and files";
    POST "/api/capture" ANALYST => capture::start, "Request a recording session (filter, snap length, caps, rotation)";
    POST "/api/capture/{name}/stop" ANALYST => capture::stop, "Stop a recording session";
    DELETE "/api/capture/{name}" ADMIN => capture::delete, "Delete a stopped session and its files";
    GET "/api/settings" ADMIN => settings::get, "Settings: retention, notification channels (secrets never shown) and routes";
    PUT "/api/settings/retention" ADMIN => settings::set_retention, "Change retention (days per table, disk budget); applied at once";
    PUT "/api/settings/channels/{name}" ADMIN => settings::put_channel, "Add or change a notification channel (checked, applied at once; secrets sealed)";
    DELETE "/api/settings/channels/{name}" ADMIN => settings::delete_channel, "Remove a notification channel";
    POST "/api/settings/channels/{name}/test" ADMIN => settings::test_channel, "Send a test message through a channel";
    PUT "/api/settings/routes" ADMIN => settings::put_routes, "Replace the notification routes (which alerts go to which channels)";
    GET "/api/plugins" ALL => plugins::list, "Plugins: files, what the engine loaded, metrics and load errors";
    POST "/api/plugins" ADMIN => plugins::upload, "Upload a plugin (checked before it is installed; base64 module and TOML manifest)";
    POST "/api/plugins/{name}/enable" ADMIN => plugins::enable, "Enable a plugin";
    POST "/api/plugins/{name}/disable" ADMIN => plugins::disable, "Disable a plugin (the engine unloads it)";
    DELETE "/api/plugins/{name}" ADMIN => plugins::delete, "Delete a plugin";
    GET "/api/reports" ALL => reports::list, "Generated reports, newest first (the audit trail only for administrators)";
    POST "/api/reports" ANALYST => reports::create, "Generate a report now (traffic, incidents, alerts, talkers, audit; PDF, CSV or JSON) and keep it";
    GET "/api/reports/schedules" ALL => reports::schedules, "Report schedules with their next and last runs";
    POST "/api/reports/schedules" ADMIN => reports::create_schedule, "Add a report schedule (daily, weekly, monthly or cron; sent through notification channels)";
    DELETE "/api/reports/schedules/{id}" ADMIN => reports::delete_schedule, "Remove a report schedule";
    POST "/api/reports/schedules/{id}/run" ADMIN => reports::run_schedule, "Run a report schedule now and deliver it";
    GET "/api/reports/{id}" ALL => reports::download, "Download a generated report's file";
    DELETE "/api/reports/{id}" ADMIN => reports::delete, "Delete a generated report";
    GET "/metrics" ALL => system::metrics, "Prometheus text exposition of engine, storage and API counters";
}

/// "METHOD path" → access, for the guard.
pub type AccessMap = HashMap<String, Access>;

pub fn access_map() -> AccessMap {
    TABLE.iter().map(|r| (format!("{} {}", r.method, r.path), r.access)).collect()
}

/// The caller of a guarded route.
#[derive(Clone, Debug)]
pub struct Caller {
    pub uid: i64,
    pub name: String,
    pub role: Role,
    pub sid: String,
    pub addr: String,
}

impl Caller {
    pub fn audit(&self, action: &'static str, target: impl Into<String>, detail: serde_json::Value) -> AuditEntry {
        AuditEntry { user: self.name.clone(), action, target: target.into(), detail, addr: self.addr.clone(), ok: true }
    }
}

pub fn router(st: AppState) -> Router {
    let mut r: Router<AppState> = Router::new();
    for (path, h) in handlers() {
        r = r.route(path, h);
    }
    r.route_layer(axum::middleware::from_fn_with_state(st.clone(), guard))
        .fallback(not_found)
        // Bodies without a length are cut here; `declared_size` holds
        // every route but uploads to the smaller limit.
        .layer(axum::extract::DefaultBodyLimit::max(st.cfg.max_body.max(st.cfg.max_upload)))
        .layer(axum::middleware::from_fn_with_state(st.clone(), declared_size))
        .layer(axum::middleware::from_fn_with_state(st.clone(), count))
        .with_state(st)
}

/// Count requests and answers by class (for `/metrics`).
async fn count(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let c = &st.monitor.counters;
    c.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let r = next.run(req).await;
    let class = match r.status().as_u16() {
        200..=399 => &c.responses_2xx,
        400..=499 => &c.responses_4xx,
        _ => &c.responses_5xx,
    };
    class.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    r
}

/// A body declared larger than the limit is refused before it is read
/// (bodies without a length are cut at the limit while reading).
async fn declared_size(State(st): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = match req.uri().path() {
        "/api/plugins" => st.cfg.max_upload as u64,
        "/api/import" => st.cfg.max_import,
        _ => st.cfg.max_body as u64,
    };
    if let Some(n) = declared
        && n > limit
    {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body of {n} bytes; the limit is {limit} bytes"),
        ));
    }
    Ok(next.run(req).await)
}

/// Paths no route takes: the console's files, or a JSON 404.
async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    use axum::response::IntoResponse;
    if crate::console::owns(uri.path())
        && let Some(r) = crate::console::serve(&method, &uri)
    {
        return r;
    }
    ApiError::not_found(format!("no route {method} {}", uri.path())).into_response()
}

fn bearer(req: &Request, path: &str) -> Option<String> {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string());
    // Browsers cannot set headers on a WebSocket: the stream takes it as a parameter.
    header.or_else(|| {
        (path == "/api/stream")
            .then(|| req.uri().query())
            .flatten()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")))
            .map(str::to_string)
    })
}

/// Check the request against the table: a public route passes; any other
/// needs a valid, unrevoked access token of an allowed role. A route
/// missing from the table is refused (it cannot happen: the router is
/// built from the table).
async fn guard(
    State(st): State<AppState>,
    path: MatchedPath,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match admit(&st, path.as_str(), &req) {
        Ok(None) => Ok(next.run(req).await),
        Ok(Some(caller)) => {
            req.extensions_mut().insert(caller);
            Ok(next.run(req).await)
        }
        Err(e) => {
            drain(req.into_body()).await;
            Err(e)
        }
    }
}

/// Who may make `req` on the route `path`: nobody in particular for a
/// public route, the token's holder for any other, or why not.
fn admit(st: &AppState, path: &str, req: &Request) -> Result<Option<Caller>, ApiError> {
    let method = req.method().clone();
    let access = *st.access.get(&format!("{method} {path}")).ok_or_else(|| {
        // The path exists with other methods (routing matched it): 405.
        ApiError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    })?;
    if access == Access::Public {
        return Ok(None);
    }
    let token = bearer(req, path)
        .ok_or_else(|| ApiError::unauthorized("an access token is needed (Authorization: Bearer …)"))?;
    let claims = crate::auth::verify_access(&st.keys, &token)?;
    if !crate::auth::session_live(&st.store, &claims.sid)? {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "session_ended",
            "this session was logged out or revoked; log in again",
        ));
    }
    if !access.allows(claims.role) {
        return Err(ApiError::forbidden(format!("the {} role may not {method} {path}", claims.role.name())));
    }
    let addr = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
    Ok(Some(Caller { uid: claims.uid, name: claims.sub, role: claims.role, sid: claims.sid, addr }))
}

/// Read and drop what a refused request still sends of its body (up to
/// 1 MiB, for at most a quarter second) before the refusal is answered.
/// A connection closed with unread bytes is reset by the kernel, and a
/// client still writing a small upload then sees the reset instead of the
/// refusal; a larger upload gets the answer and the connection closes.
pub(crate) async fn drain(body: axum::body::Body) {
    use futures::StreamExt;
    const LIMIT: usize = 1 << 20;
    let mut stream = body.into_data_stream();
    let mut seen = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_millis(250), async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen >= LIMIT {
                break;
            }
        }
    })
    .await;
}

/// A JSON object body whose every rejection is a JSON `{error, detail}` 4xx
/// (serde would otherwise also take a struct written as an array).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(v) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        if !v.is_object() {
            return Err(ApiError::unprocessable("the body must be a JSON object"));
        }
        serde_json::from_value(v).map(Body).map_err(|e| ApiError::unprocessable(format!("body: {e}")))
    }
}

/// Query parameters, rejected the same way.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Params<T>(pub T);

/// Path parameters, rejected the same way.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Segment<T>(pub T);

pub type Me = Extension<Caller>;

/// Record an audit entry; a store failure here fails the request (an
/// action that cannot be audited does not go unrecorded silently).
pub fn audit(st: &AppState, e: AuditEntry) -> ApiResult<()> {
    st.store.audit(&e)?;
    Ok(())
}

/// A JSON body that may be absent (an empty body is `None`).
pub fn optional_body<T: serde::de::DeserializeOwned>(b: &[u8]) -> ApiResult<Option<T>> {
    if b.iter().all(|c| c.is_ascii_whitespace()) {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::unprocessable("the body must be a JSON object"));
    }
    serde_json::from_value(v).map(Some).map_err(|e| ApiError::unprocessable(format!("body: {e}")))
}

pub fn json<T: serde::Serialize>(v: T) -> axum::Json<T> {
    axum::Json(v)
}
