//! Authentication primitives: roles, argon2id password hashes, signed
//! access tokens (JWT, HS256), refresh tokens, TOTP (RFC 6238) and the
//! lockout policy. The HTTP side is in `routes::auth`.

use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::StatusCode;
use base64::Engine;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{ApiError, Error};
use crate::keys::{Keys, hex, random};
use crate::store::{Store, now_ns};

/// What a user may do: admin everything; analyst read, acknowledge,
/// incidents, queries, exports; viewer read-only dashboards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Analyst,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Analyst, Role::Viewer];
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Viewer => "viewer",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// Timing of tokens and lockout.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Failures (per user, and per source address) before a lock.
    pub lockout_after: u32,
    /// The first lock; each further failure doubles it, up to `lockout_max`.
    pub lockout_base: Duration,
    pub lockout_max: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(7 * 86_400),
            lockout_after: 5,
            lockout_base: Duration::from_secs(30),
            lockout_max: Duration::from_secs(15 * 60),
        }
    }
}

pub const MIN_PASSWORD: usize = 12;

pub fn check_password_strength(pw: &str) -> Result<(), String> {
    if pw.chars().count() < MIN_PASSWORD {
        return Err(format!("a password needs at least {MIN_PASSWORD} characters"));
    }
    if pw.len() > 1024 {
        return Err("a password may have at most 1024 bytes".into());
    }
    Ok(())
}

pub fn hash_password(pw: &str) -> Result<String, Error> {
    let salt_bytes: [u8; 16] = random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| Error::Invalid(e.to_string()))?;
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Invalid(e.to_string()))
}

pub fn verify_password(hash: &str, pw: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default().verify_password(pw.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches, verified against when a user does not
/// exist so a wrong name takes as long as a wrong password.
pub fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("no user has this password, it is never stored").unwrap_or_default())
}

/// A printable random password (for the first admin).
pub fn random_password() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<18>())
}

/// What an access token says.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Claims {
    pub sub: String,
    pub uid: i64,
    pub role: Role,
    /// The session (logout revokes it, and with it this token).
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

pub fn issue_access(keys: &Keys, c: &Claims) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        c,
        &jsonwebtoken::EncodingKey::from_secret(keys.jwt_key()),
    )
    .expect("signing a token with an HMAC key")
}

pub fn verify_access(keys: &Keys, token: &str) -> Result<Claims, ApiError> {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &jsonwebtoken::DecodingKey::from_secret(keys.jwt_key()), &v)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", "the access token has expired; refresh it")
            }
            _ => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the access token is not valid"),
        })
}

fn sha256_hex(s: &str) -> String {
    hex(&sha2::Sha256::digest(s.as_bytes()))
}

/// A new session for `uid`: its id and the refresh token (`SID.SECRET`;
/// only the secret's hash is stored).
pub fn new_session(store: &Store, uid: i64, addr: &str, ttl: Duration) -> rusqlite::Result<(String, String)> {
    let sid = hex(&random::<16>());
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>());
    let now = now_ns();
    store.with(|c| {
        c.execute(
            "INSERT INTO sessions (id, user_id, refresh_hash, created_ns, expires_ns, addr) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![sid, uid, sha256_hex(&secret), now, now + ttl.as_nanos() as i64, addr],
        )
    })?;
    Ok((sid.clone(), format!("{sid}.{secret}")))
}

/// Trade a refresh token for a new one (rotation: the old one stops
/// working). Returns the session id and the user's id.
pub fn rotate_refresh(store: &Store, token: &str, ttl: Duration) -> Result<(String, i64, String), ApiError> {
    let bad = || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the refresh token is not valid");
    let (sid, secret) = token.split_once('.').ok_or_else(bad)?;
    let now = now_ns();
    let row: Option<(i64, String, i64, i64)> = store.with(|c| {
        c.query_row(
            "SELECT user_id, refresh_hash, expires_ns, revoked FROM sessions WHERE id = ?1",
            params![sid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
    })?;
    let Some((uid, hash, expires, revoked)) = row else { return Err(bad()) };
    if revoked != 0 || expires < now || hash != sha256_hex(secret) {
        return Err(bad());
    }
    let fresh = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>());
    store.with(|c| {
        c.execute(
            "UPDATE sessions SET refresh_hash = ?1, expires_ns = ?2 WHERE id = ?3",
            params![sha256_hex(&fresh), now + ttl.as_nanos() as i64, sid],
        )
    })?;
    Ok((sid.to_string(), uid, format!("{sid}.{fresh}")))
}

/// Is the session live (not revoked, not expired)?
pub fn session_live(store: &Store, sid: &str) -> rusqlite::Result<bool> {
    let now = now_ns();
    store.with(|c| {
        c.query_row("SELECT revoked = 0 AND expires_ns > ?2 FROM sessions WHERE id = ?1", params![sid, now], |r| {
            r.get::<_, bool>(0)
        })
        .optional()
        .map(|v| v.unwrap_or(false))
    })
}

pub fn revoke_session(store: &Store, sid: &str) -> rusqlite::Result<()> {
    store.with(|c| c.execute("UPDATE sessions SET revoked = 1 WHERE id = ?1", params![sid]).map(|_| ()))
}

pub fn revoke_user_sessions(store: &Store, uid: i64) -> rusqlite::Result<()> {
    store.with(|c| c.execute("UPDATE sessions SET revoked = 1 WHERE user_id = ?1", params![uid]).map(|_| ()))
}

/// A TOTP generator for a seed: SHA-1, 6 digits, 30 s steps, one step of
/// clock skew either way (what authenticator apps expect).
pub fn totp(seed: Vec<u8>, account: &str) -> Result<totp_rs::TOTP, Error> {
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, seed, Some("tapstream".into()), account.to_string())
        .map_err(|e| Error::Invalid(format!("TOTP: {e}")))
}

/// Lockout: whether `key` (of `kind` "user" or "addr") is locked now, and
/// for how many more seconds.
pub fn locked_for(store: &Store, kind: &str, key: &str) -> rusqlite::Result<Option<u64>> {
    let now = now_ns();
    let until: Option<i64> = store.with(|c| {
        c.query_row(
            "SELECT locked_until_ns FROM login_failures WHERE kind = ?1 AND key = ?2",
            params![kind, key],
            |r| r.get(0),
        )
        .optional()
    })?;
    Ok(until.filter(|u| *u > now).map(|u| ((u - now) as u64).div_ceil(1_000_000_000)))
}

/// Count a failure; from the `lockout_after`th on, lock for the base time
/// doubled per further failure.
pub fn record_failure(store: &Store, cfg: &AuthConfig, kind: &str, key: &str) -> rusqlite::Result<()> {
    let now = now_ns();
    store.with(|c| {
        let failures: i64 = c
            .query_row("SELECT failures FROM login_failures WHERE kind = ?1 AND key = ?2", params![kind, key], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0)
            + 1;
        let mut until = 0i64;
        if failures >= cfg.lockout_after as i64 {
            let doublings = (failures - cfg.lockout_after as i64).min(20) as u32;
            let lock = cfg.lockout_base.saturating_mul(1u32 << doublings).min(cfg.lockout_max);
            until = now + lock.as_nanos() as i64;
        }
        c.execute(
            "INSERT INTO login_failures (kind, key, failures, last_ns, locked_until_ns) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(kind, key) DO UPDATE SET failures = excluded.failures, last_ns = excluded.last_ns,
             locked_until_ns = excluded.locked_until_ns",
            params![kind, key, failures, now, until],
        )
        .map(|_| ())
    })
}

pub fn clear_failures(store: &Store, kind: &str, key: &str) -> rusqlite::Result<()> {
    store.with(|c| c.execute("DELETE FROM login_failures WHERE kind = ?1 AND key = ?2", params![kind, key]).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse battern"));
        assert!(!verify_password("not a hash", "x"));
        assert!(check_password_strength("short").is_err());
    }

    #[test]
    fn lockout_doubles_after_the_threshold_and_clears() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("c.db")).unwrap();
        let cfg = AuthConfig {
            lockout_after: 3,
            lockout_base: Duration::from_secs(10),
            lockout_max: Duration::from_secs(25),
            ..AuthConfig::default()
        };
        for _ in 0..2 {
            record_failure(&s, &cfg, "user", "bob").unwrap();
        }
        assert_eq!(locked_for(&s, "user", "bob").unwrap(), None);
        record_failure(&s, &cfg, "user", "bob").unwrap();
        let l = locked_for(&s, "user", "bob").unwrap().unwrap();
        assert!((9..=10).contains(&l), "{l}");
        record_failure(&s, &cfg, "user", "bob").unwrap();
        let l = locked_for(&s, "user", "bob").unwrap().unwrap();
        assert!((19..=20).contains(&l), "{l}");
        record_failure(&s, &cfg, "user", "bob").unwrap();
        let l = locked_for(&s, "user", "bob").unwrap().unwrap();
        assert!((24..=25).contains(&l), "capped: {l}");
        assert_eq!(locked_for(&s, "addr", "bob").unwrap(), None);
        clear_failures(&s, "user", "bob").unwrap();
        assert_eq!(locked_for(&s, "user", "bob").unwrap(), None);
    }
}
