//! Login, refresh, logout, and the caller's own account (password, TOTP).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Body, Me, audit, json};
use crate::AppState;
use crate::auth::{self, Claims, Role};
use crate::error::{ApiError, ApiResult};
use crate::store::{AuditEntry, now_ns};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    #[schemars(length(max = 256))]
    username: String,
    #[schemars(length(max = 1024))]
    password: String,
    #[serde(default)]
    totp: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Tokens {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    /// Seconds the access token lives.
    expires_in: u64,
    user: UserInfo,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct UserInfo {
    name: String,
    role: Role,
    totp: bool,
}

struct UserRow {
    id: i64,
    role: Role,
    password: String,
    totp_secret: Option<Vec<u8>>,
    totp_enabled: bool,
    disabled: bool,
}

fn user_row(st: &AppState, name: &str) -> ApiResult<Option<UserRow>> {
    let row = st.store.with(|c| {
        c.query_row(
            "SELECT id, role, password, totp_secret, totp_enabled, disabled FROM users WHERE name = ?1",
            params![name],
            |r| {
                Ok(UserRow {
                    id: r.get(0)?,
                    role: Role::parse(&r.get::<_, String>(1)?).unwrap_or(Role::Viewer),
                    password: r.get(2)?,
                    totp_secret: r.get(3)?,
                    totp_enabled: r.get(4)?,
                    disabled: r.get(5)?,
                })
            },
        )
        .optional()
    })?;
    Ok(row)
}

fn tokens(st: &AppState, uid: i64, name: &str, role: Role, sid: String, refresh: String, totp: bool) -> Tokens {
    let now = now_ns() / 1_000_000_000;
    let ttl = st.cfg.auth.access_ttl.as_secs();
    let claims = Claims { sub: name.to_string(), uid, role, sid, iat: now, exp: now + ttl as i64 };
    Tokens {
        access_token: auth::issue_access(&st.keys, &claims),
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in: ttl,
        user: UserInfo { name: name.to_string(), role, totp },
    }
}

fn locked(secs: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "locked",
        format!("too many failed logins; try again in {secs} s"),
    );
    e.retry_after = Some(secs);
    e
}

fn check_totp(st: &AppState, name: &str, sealed: &[u8], code: &str) -> ApiResult<bool> {
    let seed = st.keys.open(&format!("totp:{name}"), sealed)?;
    let t = auth::totp(seed, name)?;
    Ok(t.check_current(code.trim()).unwrap_or(false))
}

pub async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(b): Body<Login>,
) -> ApiResult<axum::Json<Tokens>> {
    let addr = peer.ip().to_string();
    let fail_audit = |reason: &str| AuditEntry {
        user: b.username.clone(),
        action: "login_failed",
        target: b.username.clone(),
        detail: serde_json::json!({ "reason": reason }),
        addr: addr.clone(),
        ok: false,
    };
    if b.username.len() > 256 || b.password.len() > 1024 {
        return Err(ApiError::unprocessable("username or password too long"));
    }
    for (kind, key) in [("user", b.username.as_str()), ("addr", addr.as_str())] {
        if let Some(secs) = auth::locked_for(&st.store, kind, key)? {
            audit(&st, fail_audit(&format!("locked ({kind})")))?;
            return Err(locked(secs));
        }
    }
    let row = user_row(&st, &b.username)?;
    let hash = row.as_ref().map(|r| r.password.clone()).unwrap_or_else(|| auth::dummy_hash().to_string());
    let pw = b.password.clone();
    let ok =
        tokio::task::spawn_blocking(move || auth::verify_password(&hash, &pw)).await.map_err(ApiError::internal)?;
    let fail = |reason: &'static str| -> ApiResult<ApiError> {
        auth::record_failure(&st.store, &st.cfg.auth, "user", &b.username)?;
        auth::record_failure(&st.store, &st.cfg.auth, "addr", &addr)?;
        audit(&st, fail_audit(reason))?;
        tracing::warn!(user = %b.username, %addr, reason, "login failed");
        Ok(ApiError::unauthorized("wrong username or password"))
    };
    let Some(u) = row.filter(|_| ok) else { return Err(fail("bad credentials")?) };
    if u.disabled {
        return Err(fail("account disabled")?);
    }
    if u.totp_enabled {
        let sealed = u.totp_secret.clone().unwrap_or_default();
        match b.totp.as_deref() {
            None | Some("") => {
                audit(&st, fail_audit("totp code missing"))?;
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "totp_required",
                    "this account needs a TOTP code (field `totp`)",
                ));
            }
            Some(code) => {
                if !check_totp(&st, &b.username, &sealed, code)? {
                    let mut e = fail("bad totp code")?;
                    e.error = "totp_invalid";
                    e.detail = "the TOTP code is not valid".into();
                    return Err(e);
                }
            }
        }
    }
    auth::clear_failures(&st.store, "user", &b.username)?;
    auth::clear_failures(&st.store, "addr", &addr)?;
    let (sid, refresh) = auth::new_session(&st.store, u.id, &addr, st.cfg.auth.refresh_ttl)?;
    audit(
        &st,
        AuditEntry {
            user: b.username.clone(),
            action: "login",
            target: b.username.clone(),
            detail: serde_json::json!({ "totp": u.totp_enabled }),
            addr: addr.clone(),
            ok: true,
        },
    )?;
    tracing::info!(user = %b.username, %addr, "login");
    Ok(json(tokens(&st, u.id, &b.username, u.role, sid, refresh, u.totp_enabled)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    refresh_token: String,
}

pub async fn refresh(State(st): State<AppState>, Body(b): Body<Refresh>) -> ApiResult<axum::Json<Tokens>> {
    let (sid, uid, fresh) = auth::rotate_refresh(&st.store, &b.refresh_token, st.cfg.auth.refresh_ttl)?;
    let row: Option<(String, String, bool, bool)> = st.store.with(|c| {
        c.query_row("SELECT name, role, disabled, totp_enabled FROM users WHERE id = ?1", params![uid], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
    })?;
    match row {
        Some((name, role, false, totp)) => {
            let role = Role::parse(&role).unwrap_or(Role::Viewer);
            Ok(json(tokens(&st, uid, &name, role, sid, fresh, totp)))
        }
        _ => {
            auth::revoke_session(&st.store, &sid)?;
            Err(ApiError::unauthorized("the account is gone or disabled"))
        }
    }
}

pub async fn logout(State(st): State<AppState>, me: Me) -> ApiResult<StatusCode> {
    auth::revoke_session(&st.store, &me.sid)?;
    audit(&st, me.audit("logout", me.name.clone(), serde_json::json!({})))?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(State(st): State<AppState>, me: Me) -> ApiResult<axum::Json<UserInfo>> {
    let totp: bool = st.store.with(|c| {
        c.query_row("SELECT totp_enabled FROM users WHERE id = ?1", params![me.uid], |r| r.get(0))
            .optional()
            .map(|v| v.unwrap_or(false))
    })?;
    Ok(json(UserInfo { name: me.name.clone(), role: me.role, totp }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current: String,
    #[schemars(length(min = 12, max = 1024))]
    new: String,
}

pub async fn change_password(
    State(st): State<AppState>,
    me: Me,
    Body(b): Body<PasswordChange>,
) -> ApiResult<StatusCode> {
    auth::check_password_strength(&b.new).map_err(ApiError::unprocessable)?;
    let u = user_row(&st, &me.name)?.ok_or_else(|| ApiError::unauthorized("the account is gone"))?;
    let (hash, cur) = (u.password.clone(), b.current.clone());
    let ok =
        tokio::task::spawn_blocking(move || auth::verify_password(&hash, &cur)).await.map_err(ApiError::internal)?;
    if !ok {
        let mut e =
            me.audit("password_change", me.name.clone(), serde_json::json!({ "reason": "wrong current password" }));
        e.ok = false;
        audit(&st, e)?;
        return Err(ApiError::forbidden("the current password is wrong"));
    }
    let new = b.new.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&new)).await.map_err(ApiError::internal)??;
    st.store.with(|c| {
        c.execute("UPDATE users SET password = ?1, updated_ns = ?2 WHERE id = ?3", params![hash, now_ns(), u.id])
    })?;
    // Every other session ends; this one goes on.
    st.store.with(|c| {
        c.execute("UPDATE sessions SET revoked = 1 WHERE user_id = ?1 AND id != ?2", params![u.id, me.sid])
    })?;
    audit(&st, me.audit("password_change", me.name.clone(), serde_json::json!({})))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Enrolment {
    /// Base32 secret, for typing into an authenticator app.
    secret: String,
    /// `otpauth://` URL, for a QR code.
    url: String,
}

/// Start enrolment: a fresh secret, held (encrypted) until a code confirms it.
pub async fn totp_begin(State(st): State<AppState>, me: Me) -> ApiResult<axum::Json<Enrolment>> {
    let u = user_row(&st, &me.name)?.ok_or_else(|| ApiError::unauthorized("the account is gone"))?;
    if u.totp_enabled {
        return Err(ApiError::conflict("TOTP is already on; turn it off first to enrol a new secret"));
    }
    let seed = crate::keys::random::<20>().to_vec();
    let t = auth::totp(seed.clone(), &me.name)?;
    let sealed = st.keys.seal(&format!("totp:{}", me.name), &seed);
    st.store.with(|c| c.execute("UPDATE users SET totp_secret = ?1 WHERE id = ?2", params![sealed, u.id]))?;
    audit(&st, me.audit("totp_enrol_start", me.name.clone(), serde_json::json!({})))?;
    Ok(json(Enrolment { secret: t.get_secret_base32(), url: t.get_url() }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Code {
    #[schemars(pattern(r"^\s*[0-9]{6}\s*$"))]
    code: String,
}

pub async fn totp_confirm(State(st): State<AppState>, me: Me, Body(b): Body<Code>) -> ApiResult<StatusCode> {
    let u = user_row(&st, &me.name)?.ok_or_else(|| ApiError::unauthorized("the account is gone"))?;
    let sealed = u.totp_secret.ok_or_else(|| ApiError::conflict("no enrolment started (POST /api/me/totp first)"))?;
    if u.totp_enabled {
        return Err(ApiError::conflict("TOTP is already on"));
    }
    if !check_totp(&st, &me.name, &sealed, &b.code)? {
        return Err(ApiError::unprocessable("the code does not match; check the authenticator's clock"));
    }
    st.store.with(|c| c.execute("UPDATE users SET totp_enabled = 1 WHERE id = ?1", params![u.id]))?;
    audit(&st, me.audit("totp_enabled", me.name.clone(), serde_json::json!({})))?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn totp_disable(State(st): State<AppState>, me: Me, Body(b): Body<Code>) -> ApiResult<StatusCode> {
    let u = user_row(&st, &me.name)?.ok_or_else(|| ApiError::unauthorized("the account is gone"))?;
    let sealed = match (u.totp_enabled, u.totp_secret) {
        (true, Some(s)) => s,
        _ => return Err(ApiError::conflict("TOTP is not on")),
    };
    if !check_totp(&st, &me.name, &sealed, &b.code)? {
        return Err(ApiError::unprocessable("the code does not match"));
    }
    st.store
        .with(|c| c.execute("UPDATE users SET totp_enabled = 0, totp_secret = NULL WHERE id = ?1", params![u.id]))?;
    audit(&st, me.audit("totp_disabled", me.name.clone(), serde_json::json!({})))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Largest dashboard layout stored.
pub const MAX_LAYOUT: usize = 64 * 1024;

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// The console's dashboard layout (panels, their chart types, metrics,
    /// ranges and places), kept as the console wrote it; null before the
    /// first save.
    layout: Option<serde_json::Map<String, serde_json::Value>>,
}

pub async fn get_layout(State(st): State<AppState>, me: Me) -> ApiResult<axum::Json<Layout>> {
    let text: Option<String> = st.store.with(|c| {
        c.query_row("SELECT layout FROM layouts WHERE user_id = ?1", params![me.uid], |r| r.get(0)).optional()
    })?;
    let layout = match text {
        Some(t) => Some(serde_json::from_str(&t).map_err(ApiError::internal)?),
        None => None,
    };
    Ok(json(Layout { layout }))
}

pub async fn put_layout(
    State(st): State<AppState>,
    me: Me,
    Body(l): Body<Layout>,
) -> ApiResult<axum::http::StatusCode> {
    let Some(layout) = l.layout else {
        st.store.with(|c| c.execute("DELETE FROM layouts WHERE user_id = ?1", params![me.uid]))?;
        return Ok(axum::http::StatusCode::NO_CONTENT);
    };
    let text = serde_json::to_string(&layout).map_err(ApiError::internal)?;
    if text.len() > MAX_LAYOUT {
        return Err(ApiError::unprocessable(format!("layout: {} bytes; at most {MAX_LAYOUT}", text.len())));
    }
    st.store.with(|c| {
        c.execute(
            "INSERT INTO layouts (user_id, layout, updated_ns) VALUES (?1, ?2, ?3)
             ON CONFLICT(user_id) DO UPDATE SET layout = excluded.layout, updated_ns = excluded.updated_ns",
            params![me.uid, text, crate::store::now_ns()],
        )
    })?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
