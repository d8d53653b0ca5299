//! The blocklist (`/api/blocklist`): addresses, networks and domains the
//! operator marks bad. Written as a plain threat feed (`blocklist`) that
//! detection reloads on change, so a new entry is matched within a second
//! or two.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Body, Me, Segment, audit, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Error};
use crate::store::{Store, now_ns};

#[derive(Serialize, Debug, schemars::JsonSchema)]
#[schemars(rename = "BlocklistEntry")]
pub struct Entry {
    pub id: i64,
    pub value: String,
    /// `ip`, `cidr` or `domain`.
    pub kind: String,
    pub comment: String,
    pub created: String,
    pub created_by: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NewBlocklistEntry")]
pub struct NewEntry {
    #[schemars(length(min = 1, max = 253))]
    pub value: String,
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub comment: String,
}

/// What a value is, normalised: an address, a network, or a domain.
pub fn classify(v: &str) -> Result<(String, &'static str), String> {
    let v = v.trim();
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok((ip.to_string(), "ip"));
    }
    if let Some((a, p)) = v.split_once('/') {
        let ip: IpAddr = a.parse().map_err(|_| format!("`{v}`: `{a}` is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let p: u8 = p.parse().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{v}`: prefix must be 0 to {max}"))?;
        return Ok((format!("{ip}/{p}"), "cidr"));
    }
    let d = v.trim_end_matches('.').to_ascii_lowercase();
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
    };
    if d.len() <= 253 && d.contains('.') && d.split('.').all(ok_label) {
        return Ok((d, "domain"));
    }
    Err(format!("`{v}` is not an IP address, a network (CIDR) or a domain name"))
}

fn all(st: &AppState) -> rusqlite::Result<Vec<Entry>> {
    entries(&st.store)
}

fn entries(store: &Store) -> rusqlite::Result<Vec<Entry>> {
    store.with(|c| {
        let mut q = c.prepare("SELECT id, value, kind, comment, created_ns, created_by FROM blocklist ORDER BY id")?;
        q.query_map([], |r| {
            Ok(Entry {
                id: r.get(0)?,
                value: r.get(1)?,
                kind: r.get(2)?,
                comment: r.get(3)?,
                created: super::audit::rfc3339(r.get(4)?),
                created_by: r.get(5)?,
            })
        })?
        .collect()
    })
}

/// Write the feed file (atomically). An empty list is a file of comments only.
pub fn write_blocklist_file(store: &Store, path: &std::path::Path) -> Result<(), Error> {
    let mut text = String::from("# tapstream blocklist, written by the server from its store (/api/blocklist)\n");
    for e in entries(store)? {
        text.push_str(&e.value);
        text.push('\n');
    }
    Ok(crate::keys::write_atomic(path, text.as_bytes())?)
}

fn rewrite(st: &AppState) -> ApiResult<()> {
    write_blocklist_file(&st.store, &st.cfg.blocklist_file).map_err(ApiError::internal)
}

/// Add an entry (also used by an incident's "block the source").
pub fn add_entry(st: &AppState, by: &str, value: &str, comment: &str) -> ApiResult<Entry> {
    let (value, kind) = classify(value).map_err(ApiError::unprocessable)?;
    if comment.len() > 1024 {
        return Err(ApiError::unprocessable("comment: at most 1024 bytes"));
    }
    let r = st.store.with(|c| {
        c.execute(
            "INSERT INTO blocklist (value, kind, comment, created_ns, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![value, kind, comment, now_ns(), by],
        )
        .map(|_| c.last_insert_rowid())
    });
    let id = match r {
        Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            return Err(ApiError::conflict(format!("`{value}` is already on the blocklist")));
        }
        r => r?,
    };
    rewrite(st)?;
    all(st)?.into_iter().find(|e| e.id == id).ok_or_else(|| ApiError::internal("entry vanished"))
}

pub async fn list(State(st): State<AppState>) -> ApiResult<axum::Json<Vec<Entry>>> {
    Ok(json(all(&st)?))
}

pub async fn add(
    State(st): State<AppState>,
    me: Me,
    Body(b): Body<NewEntry>,
) -> ApiResult<(StatusCode, axum::Json<Entry>)> {
    let e = add_entry(&st, &me.name, &b.value, &b.comment)?;
    audit(
        &st,
        me.audit("blocklist_add", e.value.clone(), serde_json::json!({ "kind": e.kind, "comment": e.comment })),
    )?;
    Ok((StatusCode::CREATED, json(e)))
}

pub async fn remove(State(st): State<AppState>, me: Me, Segment(id): Segment<i64>) -> ApiResult<StatusCode> {
    let v: Option<String> = st
        .store
        .with(|c| c.query_row("SELECT value FROM blocklist WHERE id = ?1", params![id], |r| r.get(0)).optional())?;
    let v = v.ok_or_else(|| ApiError::not_found(format!("no blocklist entry {id}")))?;
    st.store.with(|c| c.execute("DELETE FROM blocklist WHERE id = ?1", params![id]))?;
    rewrite(&st)?;
    audit(&st, me.audit("blocklist_remove", v, serde_json::json!({ "id": id })))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn values_are_classified_and_normalised() {
        assert_eq!(classify(" 192.0.2.7 ").unwrap(), ("192.0.2.7".into(), "ip"));
        assert_eq!(classify("2001:db8::1").unwrap(), ("2001:db8::1".into(), "ip"));
        assert_eq!(classify("198.51.100.0/24").unwrap(), ("198.51.100.0/24".into(), "cidr"));
        assert_eq!(classify("Bad.Example.").unwrap(), ("bad.example".into(), "domain"));
        assert!(classify("10.0.0.0/33").is_err());
        assert!(classify("not a thing").is_err());
        assert!(classify("localhost").is_err());
        assert!(classify("-x.example").is_err());
    }
}
