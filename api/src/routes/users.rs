//! User administration (admin only), and the functions `tapstream user`
//! shares with it.

use axum::extract::State;
use axum::http::StatusCode;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Body, Me, Segment, audit, json};
use crate::AppState;
use crate::auth::{self, Role};
use crate::error::{ApiError, ApiResult, Error};
use crate::store::{Store, now_ns};

#[derive(Serialize, Debug, PartialEq, schemars::JsonSchema)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub totp: bool,
    pub disabled: bool,
    pub created: String,
}

pub fn valid_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 64 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b)) {
        return Err(format!("user name `{n}`: 1 to 64 letters, digits or . _ @ -"));
    }
    Ok(())
}

/// Create a user (argon2id hash of the password).
pub fn create_user(store: &Store, name: &str, role: Role, password: &str) -> Result<i64, Error> {
    valid_name(name).map_err(Error::Invalid)?;
    auth::check_password_strength(password).map_err(Error::Invalid)?;
    let hash = auth::hash_password(password)?;
    let now = now_ns();
    let r = store.with(|c| {
        c.execute(
            "INSERT INTO users (name, role, password, created_ns, updated_ns) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![name, role.name(), hash, now],
        )
        .map(|_| c.last_insert_rowid())
    });
    match r {
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(Error::Invalid(format!("user `{name}` exists")))
        }
        r => Ok(r?),
    }
}

pub fn list_users(store: &Store) -> rusqlite::Result<Vec<User>> {
    store.with(|c| {
        let mut q = c.prepare("SELECT name, role, totp_enabled, disabled, created_ns FROM users ORDER BY name")?;
        q.query_map([], |r| {
            Ok(User {
                name: r.get(0)?,
                role: Role::parse(&r.get::<_, String>(1)?).unwrap_or(Role::Viewer),
                totp: r.get(2)?,
                disabled: r.get(3)?,
                created: super::audit::rfc3339(r.get(4)?),
            })
        })?
        .collect()
    })
}

pub async fn list(State(st): State<AppState>) -> ApiResult<axum::Json<Vec<User>>> {
    Ok(json(list_users(&st.store)?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schemars(pattern(r"^[A-Za-z0-9._@-]{1,64}$"))]
    name: String,
    role: Role,
    #[schemars(length(min = 12, max = 1024))]
    password: String,
}

pub async fn create(
    State(st): State<AppState>,
    me: Me,
    Body(b): Body<NewUser>,
) -> ApiResult<(StatusCode, axum::Json<User>)> {
    let store = st.clone();
    let (name, pw) = (b.name.clone(), b.password.clone());
    let r = tokio::task::spawn_blocking(move || create_user(&store.store, &name, b.role, &pw))
        .await
        .map_err(ApiError::internal)?;
    match r {
        Ok(_) => {}
        Err(Error::Invalid(m)) if m.ends_with("exists") => return Err(ApiError::conflict(m)),
        Err(e) => return Err(e.into()),
    }
    audit(&st, me.audit("user_create", b.name.clone(), serde_json::json!({ "role": b.role })))?;
    let u = list_users(&st.store)?
        .into_iter()
        .find(|u| u.name == b.name)
        .ok_or_else(|| ApiError::internal("user vanished"))?;
    Ok((StatusCode::CREATED, json(u)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    #[schemars(length(min = 12, max = 1024))]
    password: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
}

fn uid_of(st: &AppState, name: &str) -> ApiResult<i64> {
    st.store
        .with(|c| c.query_row("SELECT id FROM users WHERE name = ?1", params![name], |r| r.get(0)).optional())?
        .ok_or_else(|| ApiError::not_found(format!("no user `{name}`")))
}

/// Refuse a change that takes the last enabled admin away (demoted,
/// disabled or deleted).
fn keep_an_admin(st: &AppState, uid: i64) -> ApiResult<()> {
    let last: bool = st.store.with(|c| {
        c.query_row(
            "SELECT role = 'admin' AND disabled = 0 AND NOT EXISTS
               (SELECT 1 FROM users WHERE role = 'admin' AND disabled = 0 AND id != ?1)
             FROM users WHERE id = ?1",
            params![uid],
            |r| r.get(0),
        )
    })?;
    if last { Err(ApiError::conflict("that would leave no enabled admin")) } else { Ok(()) }
}

/// Does a user of this name exist?
pub fn user_exists(st: &AppState, name: &str) -> ApiResult<bool> {
    Ok(st
        .store
        .with(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)", params![name], |r| r.get(0)))?)
}

pub async fn update(
    State(st): State<AppState>,
    me: Me,
    Segment(name): Segment<String>,
    Body(b): Body<UserChange>,
) -> ApiResult<axum::Json<User>> {
    let uid = uid_of(&st, &name)?;
    let demotes = b.role.is_some_and(|r| r != Role::Admin) || b.disabled == Some(true);
    if demotes {
        keep_an_admin(&st, uid)?;
    }
    let hash = match &b.password {
        Some(p) => {
            auth::check_password_strength(p).map_err(ApiError::unprocessable)?;
            let p = p.clone();
            Some(tokio::task::spawn_blocking(move || auth::hash_password(&p)).await.map_err(ApiError::internal)??)
        }
        None => None,
    };
    let now = now_ns();
    st.store.tx(|t| {
        if let Some(r) = b.role {
            t.execute("UPDATE users SET role = ?1, updated_ns = ?2 WHERE id = ?3", params![r.name(), now, uid])?;
        }
        if let Some(h) = &hash {
            t.execute("UPDATE users SET password = ?1, updated_ns = ?2 WHERE id = ?3", params![h, now, uid])?;
        }
        if let Some(d) = b.disabled {
            t.execute("UPDATE users SET disabled = ?1, updated_ns = ?2 WHERE id = ?3", params![d, now, uid])?;
        }
        // A changed role, password or lock takes effect at once: sessions end.
        if b.role.is_some() || hash.is_some() || b.disabled == Some(true) {
            t.execute("UPDATE sessions SET revoked = 1 WHERE user_id = ?1", params![uid])?;
        }
        Ok::<_, rusqlite::Error>(())
    })?;
    audit(
        &st,
        me.audit(
            "user_update",
            name.clone(),
            serde_json::json!({ "role": b.role, "password_reset": hash.is_some(), "disabled": b.disabled }),
        ),
    )?;
    let u = list_users(&st.store)?
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| ApiError::internal("user vanished"))?;
    Ok(json(u))
}

pub async fn delete(State(st): State<AppState>, me: Me, Segment(name): Segment<String>) -> ApiResult<StatusCode> {
    let uid = uid_of(&st, &name)?;
    if name == me.name {
        return Err(ApiError::conflict("you cannot delete yourself"));
    }
    keep_an_admin(&st, uid)?;
    st.store.with(|c| c.execute("DELETE FROM users WHERE id = ?1", params![uid]))?;
    audit(&st, me.audit("user_delete", name, serde_json::json!({})))?;
    Ok(StatusCode::NO_CONTENT)
}
