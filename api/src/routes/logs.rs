//! `/api/logs`: the server's log files (daily, under `DATA/logs`): list
//! them, tail one with a level filter, download one.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::{Params, Segment, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

#[derive(Serialize, schemars::JsonSchema)]
pub struct LogFile {
    name: String,
    bytes: u64,
    modified: String,
}

fn dir(st: &AppState) -> PathBuf {
    st.cfg.data_dir.join("logs")
}

/// The log files, newest first.
fn files(st: &AppState) -> Vec<LogFile> {
    let mut v: Vec<(std::time::SystemTime, LogFile)> = std::fs::read_dir(dir(st))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !(name.starts_with("tapstream") && name.ends_with(".log")) {
                return None;
            }
            let m = e.metadata().ok()?;
            let t = m.modified().ok()?;
            let ns = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
            Some((t, LogFile { name, bytes: m.len(), modified: super::audit::rfc3339(ns) }))
        })
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.name.cmp(&a.1.name)));
    v.into_iter().map(|(_, f)| f).collect()
}

/// A listed file by name (nothing outside the log directory).
fn find(st: &AppState, name: &str) -> ApiResult<PathBuf> {
    files(st)
        .into_iter()
        .find(|f| f.name == name)
        .map(|f| dir(st).join(f.name))
        .ok_or_else(|| ApiError::not_found(format!("no log file `{name}`")))
}

pub async fn list(State(st): State<AppState>) -> ApiResult<axum::Json<Vec<LogFile>>> {
    Ok(json(files(&st)))
}

const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tail {
    /// Default: the newest file.
    file: Option<String>,
    /// Lines to return, 1 to 10,000 (default 200).
    #[schemars(range(min = 1, max = 10000))]
    lines: Option<usize>,
    /// This level and worse (error, warn, info, debug, trace).
    #[schemars(extend("enum" = ["error", "warn", "info", "debug", "trace"]))]
    level: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct TailReply {
    file: Option<String>,
    lines: Vec<String>,
}

/// The level a log line carries (the first level word after its time).
fn level_of(line: &str) -> Option<usize> {
    line.split_whitespace().nth(1).and_then(|w| LEVELS.iter().position(|l| *l == w))
}

pub async fn tail(State(st): State<AppState>, Params(t): Params<Tail>) -> ApiResult<axum::Json<TailReply>> {
    let want = t.lines.unwrap_or(200);
    if !(1..=10_000).contains(&want) {
        return Err(ApiError::bad_request("lines must be 1 to 10000"));
    }
    let worst = match t.level.as_deref() {
        None => LEVELS.len() - 1,
        Some(l) => LEVELS
            .iter()
            .position(|x| x.eq_ignore_ascii_case(l))
            .ok_or_else(|| ApiError::bad_request(format!("level `{l}` (error, warn, info, debug, trace)")))?,
    };
    let path = match &t.file {
        Some(n) => find(&st, n)?,
        None => match files(&st).into_iter().next() {
            Some(f) => dir(&st).join(f.name),
            None => return Ok(json(TailReply { file: None, lines: Vec::new() })),
        },
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    // Read at most the last 8 MiB: enough for 10,000 lines of any sane length.
    let lines = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
        let mut f = std::fs::File::open(&path)?;
        let len = f.metadata()?.len();
        let start = len.saturating_sub(8 << 20);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let mut it = text.lines();
        if start > 0 {
            it.next(); // a partial first line
        }
        let kept: Vec<String> = it.filter(|l| level_of(l).is_none_or(|lv| lv <= worst)).map(str::to_string).collect();
        Ok(kept[kept.len().saturating_sub(want)..].to_vec())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(json(TailReply { file: name, lines }))
}

pub async fn download(
    State(st): State<AppState>,
    Segment(name): Segment<String>,
) -> ApiResult<axum::response::Response> {
    let path = find(&st, &name)?;
    let body = tokio::fs::read(&path).await.map_err(ApiError::internal)?;
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}
