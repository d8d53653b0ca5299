//! Custom alert rules (`/api/alerts/rules`). The store holds them; every
//! change is checked by the engine's own rule parser first, then written to
//! the rules file detection reloads (within two seconds), so a rule the
//! engine would refuse never reaches it.

use std::path::Path;

use axum::extract::State;
use axum::http::StatusCode;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Body, Me, Segment, audit, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Error};
use crate::store::{Store, now_ns};

/// A rule as the rules file writes it (docs/detection.md, "Custom rules").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9._-]+$"))]
    pub name: String,
    #[schemars(length(min = 1, max = 4096))]
    pub condition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RuleBody>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct StoredRule {
    id: i64,
    #[serde(flatten)]
    rule: RuleBody,
    updated: String,
    updated_by: String,
}

fn all(st: &AppState) -> ApiResult<Vec<StoredRule>> {
    Ok(stored(&st.store)?)
}

fn stored(store: &Store) -> Result<Vec<StoredRule>, Error> {
    let rows = store.with(|c| {
        let mut q = c.prepare("SELECT id, body, updated_ns, updated_by FROM alert_rules ORDER BY id")?;
        q.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    rows.into_iter()
        .map(|(id, body, ns, by)| {
            let rule = serde_json::from_str(&body).map_err(|e| Error::Invalid(format!("stored rule {id}: {e}")))?;
            Ok(StoredRule { id, rule, updated: super::audit::rfc3339(ns), updated_by: by })
        })
        .collect()
}

fn render(rules: &[RuleBody]) -> Result<String, Error> {
    let body = toml::to_string(&RulesFile { rule: rules.to_vec() }).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(format!("# Written by the tapstream server from its store; change rules through /api/alerts/rules.\n{body}"))
}

/// Check one rule with the engine's parser; the answer names what is wrong.
fn validate(r: &RuleBody) -> ApiResult<()> {
    if r.name.is_empty()
        || r.name.len() > 128
        || !r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(ApiError::unprocessable(format!("rule name `{}`: 1 to 128 letters, digits or . _ -", r.name)));
    }
    if r.condition.is_empty() || r.condition.chars().count() > 4096 {
        return Err(ApiError::unprocessable("condition: 1 to 4096 characters"));
    }
    let text = render(std::slice::from_ref(r))?;
    tapstream_engine::detect::rules::parse(Path::new("request"), &text).map(|_| ()).map_err(|e| {
        let m = e.to_string();
        // The parser names a file and line; here there is one rule.
        let m = m.split_once(": rule `").map(|(_, rest)| format!("rule `{rest}")).unwrap_or(m);
        ApiError::unprocessable(m)
    })
}

/// Write the rules file from the store (atomically: detection never reads half a file).
pub fn write_rules_file(store: &Store, path: &Path) -> Result<(), Error> {
    let rules = stored(store)?;
    let text = render(&rules.into_iter().map(|r| r.rule).collect::<Vec<_>>())?;
    Ok(crate::keys::write_atomic(path, text.as_bytes())?)
}

/// First start with a hand-written rules file and an empty store: take its
/// rules into the store, so nothing an operator wrote is lost.
pub fn import_existing(store: &Store, path: &Path) -> Result<bool, Error> {
    let n: i64 = store.with(|c| c.query_row("SELECT count(*) FROM alert_rules", [], |r| r.get(0)))?;
    if n > 0 || !path.exists() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(path)?;
    let f: RulesFile =
        toml::from_str(&text).map_err(|e| Error::Invalid(format!("rules file {}: {e}", path.display())))?;
    if f.rule.is_empty() {
        return Ok(false);
    }
    tapstream_engine::detect::rules::parse(path, &text).map_err(|e| Error::Invalid(e.to_string()))?;
    let now = now_ns();
    for r in &f.rule {
        let body = serde_json::to_string(r).map_err(|e| Error::Invalid(e.to_string()))?;
        store.with(|c| {
            c.execute(
                "INSERT INTO alert_rules (name, body, created_ns, updated_ns, updated_by) VALUES (?1, ?2, ?3, ?3, 'import')",
                params![r.name, body, now],
            )
        })?;
    }
    tracing::info!(rules = f.rule.len(), file = %path.display(), "rules imported into the control-plane store");
    Ok(true)
}

fn apply(st: &AppState) -> ApiResult<()> {
    write_rules_file(&st.store, &st.cfg.rules_file).map_err(ApiError::internal)
}

pub async fn list(State(st): State<AppState>) -> ApiResult<axum::Json<Vec<StoredRule>>> {
    Ok(json(all(&st)?))
}

fn one(st: &AppState, id: i64) -> ApiResult<StoredRule> {
    all(st)?.into_iter().find(|r| r.id == id).ok_or_else(|| ApiError::not_found(format!("no rule {id}")))
}

pub async fn get(State(st): State<AppState>, Segment(id): Segment<i64>) -> ApiResult<axum::Json<StoredRule>> {
    Ok(json(one(&st, id)?))
}

fn conflict_or(e: rusqlite::Error, name: &str) -> ApiError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            ApiError::conflict(format!("a rule named `{name}` exists"))
        }
        e => e.into(),
    }
}

pub async fn create(
    State(st): State<AppState>,
    me: Me,
    Body(r): Body<RuleBody>,
) -> ApiResult<(StatusCode, axum::Json<StoredRule>)> {
    validate(&r)?;
    let body = serde_json::to_string(&r).map_err(ApiError::internal)?;
    let now = now_ns();
    let id = st
        .store
        .with(|c| {
            c.execute(
                "INSERT INTO alert_rules (name, body, created_ns, updated_ns, updated_by) VALUES (?1, ?2, ?3, ?3, ?4)",
                params![r.name, body, now, me.name],
            )
            .map(|_| c.last_insert_rowid())
        })
        .map_err(|e| conflict_or(e, &r.name))?;
    apply(&st)?;
    audit(&st, me.audit("rule_create", r.name.clone(), serde_json::to_value(&r).unwrap_or_default()))?;
    Ok((StatusCode::CREATED, json(one(&st, id)?)))
}

pub async fn update(
    State(st): State<AppState>,
    me: Me,
    Segment(id): Segment<i64>,
    Body(r): Body<RuleBody>,
) -> ApiResult<axum::Json<StoredRule>> {
    let before = one(&st, id)?;
    validate(&r)?;
    let body = serde_json::to_string(&r).map_err(ApiError::internal)?;
    st.store
        .with(|c| {
            c.execute(
                "UPDATE alert_rules SET name = ?1, body = ?2, updated_ns = ?3, updated_by = ?4 WHERE id = ?5",
                params![r.name, body, now_ns(), me.name, id],
            )
        })
        .map_err(|e| conflict_or(e, &r.name))?;
    apply(&st)?;
    audit(&st, me.audit("rule_update", r.name.clone(), serde_json::json!({ "before": before.rule, "after": r })))?;
    Ok(json(one(&st, id)?))
}

pub async fn delete(State(st): State<AppState>, me: Me, Segment(id): Segment<i64>) -> ApiResult<StatusCode> {
    let name: Option<String> = st
        .store
        .with(|c| c.query_row("SELECT name FROM alert_rules WHERE id = ?1", params![id], |r| r.get(0)).optional())?;
    let name = name.ok_or_else(|| ApiError::not_found(format!("no rule {id}")))?;
    st.store.with(|c| c.execute("DELETE FROM alert_rules WHERE id = ?1", params![id]))?;
    apply(&st)?;
    audit(&st, me.audit("rule_delete", name, serde_json::json!({ "id": id })))?;
    Ok(StatusCode::NO_CONTENT)
}
