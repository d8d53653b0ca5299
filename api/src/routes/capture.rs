//! `/api/capture`: packet recording sessions (as `tapstream record` makes
//! them): request one with a filter and caps, stop it, list them with their
//! files, delete one. The running engine's recorder picks requests up
//! within half a second.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tapstream_engine::record::{self, RecordError, SessionInfo, SessionSpec};

use super::{Body, Me, Segment, audit, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

fn err(e: RecordError) -> ApiError {
    match e {
        RecordError::NotFound(_) => ApiError::not_found(e.to_string()),
        RecordError::Exists(_) | RecordError::StillRecording(_) => ApiError::conflict(e.to_string()),
        RecordError::Io { .. } | RecordError::Json { .. } => ApiError::internal(e),
        e => ApiError::unprocessable(e.to_string()),
    }
}

fn now() -> u64 {
    crate::store::now_ns().max(0) as u64
}

pub async fn list(State(st): State<AppState>) -> ApiResult<axum::Json<Vec<serde_json::Value>>> {
    let l = record::list(&st.cfg.data_dir).map_err(err)?;
    Ok(json(l.iter().map(|s| serde_json::to_value(s).unwrap_or_default()).collect()))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    #[schemars(pattern(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"))]
    name: String,
    /// Capture filter, tcpdump style (default: every packet).
    #[serde(default)]
    filter: Option<String>,
    /// Bytes kept of each packet, 64 to 262144 (default 65535).
    #[serde(default)]
    #[schemars(range(min = 64, max = 262144))]
    snaplen: Option<u32>,
    /// Stop once the files hold this many bytes.
    #[serde(default)]
    #[schemars(range(min = 1))]
    max_bytes: Option<u64>,
    /// Stop this many seconds after starting.
    #[serde(default)]
    #[schemars(range(min = 1))]
    max_secs: Option<u64>,
    /// New file at this size (default 256 MiB; at least 4 KiB)…
    #[serde(default)]
    #[schemars(range(min = 4096))]
    rotate_bytes: Option<u64>,
    /// …or after this many seconds (default 3600).
    #[serde(default)]
    #[schemars(range(min = 1))]
    rotate_secs: Option<u64>,
}

pub async fn start(
    State(st): State<AppState>,
    me: Me,
    Body(b): Body<NewSession>,
) -> ApiResult<(StatusCode, axum::Json<SessionSpec>)> {
    let mut spec = SessionSpec::new(&b.name, now());
    spec.filter = b.filter.filter(|f| !f.trim().is_empty());
    if let Some(s) = b.snaplen {
        spec.snaplen = s;
    }
    spec.max_bytes = b.max_bytes;
    spec.max_secs = b.max_secs;
    if let Some(r) = b.rotate_bytes {
        spec.rotate_bytes = r;
    }
    if let Some(r) = b.rotate_secs {
        spec.rotate_secs = r;
    }
    record::create(&st.cfg.data_dir, &spec).map_err(err)?;
    audit(&st, me.audit("capture_start", spec.name.clone(), serde_json::json!({ "filter": spec.filter })))?;
    Ok((StatusCode::CREATED, json(spec)))
}

/// How long a stop request waits for the engine to close the session's
/// files (its workers do within half a second, or at their next batch).
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Ask the engine to stop a session and answer once it has: the session is
/// `stopped` and every packet it counted is in its files, so an export
/// right after sees them all. If that takes longer than [`STOP_WAIT`] the
/// answer shows the session as it is then: `stopping` (it stops soon
/// after), or `recording` when no engine is running to stop it.
pub async fn stop(
    State(st): State<AppState>,
    me: Me,
    Segment(name): Segment<String>,
) -> ApiResult<axum::Json<SessionInfo>> {
    record::request_stop(&st.cfg.data_dir, &name, now()).map_err(err)?;
    audit(&st, me.audit("capture_stop", name.clone(), serde_json::json!({})))?;
    let data = st.cfg.data_dir.clone();
    let info = tokio::task::spawn_blocking(move || record::wait_stopped(&data, &name, STOP_WAIT))
        .await
        .map_err(ApiError::internal)?
        .map_err(err)?;
    Ok(json(info))
}

pub async fn delete(State(st): State<AppState>, me: Me, Segment(name): Segment<String>) -> ApiResult<StatusCode> {
    let freed = record::delete(&st.cfg.data_dir, &name).map_err(err)?;
    audit(&st, me.audit("capture_delete", name, serde_json::json!({ "bytes": freed })))?;
    Ok(StatusCode::NO_CONTENT)
}
