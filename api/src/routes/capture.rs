//! `/api/capture`: packet recording sessions (as `tapstream record` makes
//! them): request one with a filter and caps, stop it, list them with their
//! files, delete one. The running engine's recorder picks requests up
//! within half a second.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tapstream_engine::record::{self, RecordError, SessionSpec};

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

pub async fn stop(
    State(st): State<AppState>,
    me: Me,
    Segment(name): Segment<String>,
) -> ApiResult<axum::Json<SessionSpec>> {
    let spec = record::request_stop(&st.cfg.data_dir, &name, now()).map_err(err)?;
    audit(&st, me.audit("capture_stop", name, serde_json::json!({})))?;
    Ok(json(spec))
}

pub async fn delete(State(st): State<AppState>, me: Me, Segment(name): Segment<String>) -> ApiResult<StatusCode> {
    let freed = record::delete(&st.cfg.data_dir, &name).map_err(err)?;
    audit(&st, me.audit("capture_delete", name, serde_json::json!({ "bytes": freed })))?;
    Ok(StatusCode::NO_CONTENT)
}
