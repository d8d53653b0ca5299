//! `/api/settings`: retention (age per table, disk budget) and notification
//! channels and routes, changed while the appliance runs. A change is
//! checked and applied to the running retention sweep or notifier first,
//! then stored (so the next start keeps it); one that does not pass changes
//! nothing. Channel secrets (mail passwords, webhook URLs) are sealed with
//! the key file and never answered.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tapstream_engine::records::Table;
use tapstream_query::retention::{MAX_AGE_DAYS, MIN_AGE_DAYS, RetentionPolicy};

use super::{Body, Me, Segment, audit, json};
use crate::AppState;
use crate::engine::{ChannelSpec, RouteSpec};
use crate::error::{ApiError, ApiResult};
use crate::store::Store;

const RETENTION_KEY: &str = "retention";
const ROUTES_KEY: &str = "notify.routes";

#[derive(Serialize, Deserialize, Clone, Debug, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// Days each table is kept (30 to 730); tables left out keep their
    /// current age.
    #[serde(default)]
    pub max_age_days: BTreeMap<String, u32>,
    /// Oldest hours are deleted while the history holds more than this
    /// many GB (0: no budget; left out: unchanged).
    #[schemars(range(min = 0.0, max = 1000000.0))]
    pub disk_budget_gb: Option<f64>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct RetentionView {
    max_age_days: BTreeMap<String, u64>,
    disk_budget_gb: f64,
    interval_secs: f64,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ChannelView {
    name: String,
    /// `api` (changed here) or `config` (the config file's, read-only here).
    managed_by: String,
    #[serde(flatten)]
    spec: ChannelSpec,
    /// A password is stored (it is never shown).
    password_set: bool,
    /// webhook: the URL's scheme and host (the rest may hold a token).
    url_host: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Settings {
    /// None when no engine runs beside this server.
    retention: Option<RetentionView>,
    channels: Vec<ChannelView>,
    /// The API-managed routes (the config file's apply too).
    routes: Vec<RouteSpec>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    pub routes: Vec<RouteSpec>,
}

#[derive(Serialize, Deserialize, Default)]
struct Secret {
    password: Option<String>,
    url: Option<String>,
}

fn view(p: &RetentionPolicy) -> RetentionView {
    RetentionView {
        max_age_days: p.max_age.iter().map(|(t, d)| (t.name().to_string(), d.as_secs() / 86_400)).collect(),
        disk_budget_gb: p.disk_budget.map_or(0.0, |b| b as f64 / 1e9),
        interval_secs: p.interval.as_secs_f64(),
    }
}

/// `spec` applied over `base`, checked.
pub fn merge_retention(base: &RetentionPolicy, spec: &RetentionSpec) -> Result<RetentionPolicy, String> {
    let mut p = base.clone();
    for (t, days) in &spec.max_age_days {
        let table = Table::from_name(t).ok_or_else(|| format!("max_age_days: no table `{t}`"))?;
        if !(MIN_AGE_DAYS..=MAX_AGE_DAYS).contains(days) {
            return Err(format!("max_age_days.{t} = {days}: must be between {MIN_AGE_DAYS} and {MAX_AGE_DAYS}"));
        }
        p.max_age.insert(table, Duration::from_secs(u64::from(*days) * 86_400));
    }
    match spec.disk_budget_gb {
        None => {}
        Some(0.0) => p.disk_budget = None,
        Some(g) if g.is_finite() && (0.001..=1_000_000.0).contains(&g) => p.disk_budget = Some((g * 1e9) as u64),
        Some(g) => return Err(format!("disk_budget_gb = {g}: 0 (no budget) or 0.001 to 1000000")),
    }
    Ok(p)
}

/// What the store holds: applied by `serve` at start, over the config file.
pub struct Stored {
    pub retention: Option<RetentionSpec>,
    pub channels: Vec<(String, ChannelSpec)>,
    pub routes: Vec<RouteSpec>,
}

fn context(name: &str) -> String {
    format!("channel:{name}")
}

fn load_channels(store: &Store, keys: &crate::keys::Keys) -> ApiResult<Vec<(String, ChannelSpec)>> {
    let rows: Vec<(String, String, Option<Vec<u8>>)> = store.with(|c| {
        let mut q = c.prepare("SELECT name, config, secret FROM channels ORDER BY name")?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    })?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, config, secret) in rows {
        let mut spec: ChannelSpec = serde_json::from_str(&config).map_err(ApiError::internal)?;
        if let Some(sealed) = secret {
            let plain = keys.open(&context(&name), &sealed).map_err(ApiError::internal)?;
            let s: Secret = serde_json::from_slice(&plain).map_err(ApiError::internal)?;
            spec.password = s.password;
            spec.url = s.url;
        }
        out.push((name, spec));
    }
    Ok(out)
}

/// The stored settings, secrets opened (in memory only).
pub fn stored(store: &Store, keys: &crate::keys::Keys) -> ApiResult<Stored> {
    let retention = match store.setting(RETENTION_KEY)? {
        Some(v) => Some(serde_json::from_value(v).map_err(ApiError::internal)?),
        None => None,
    };
    Ok(Stored { retention, channels: load_channels(store, keys)?, routes: routes_of(store)? })
}

fn routes_of(store: &Store) -> ApiResult<Vec<RouteSpec>> {
    Ok(match store.setting(ROUTES_KEY)? {
        Some(v) => serde_json::from_value(v).map_err(ApiError::internal)?,
        None => Vec::new(),
    })
}

fn url_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?;
    Some(format!("{scheme}://{host}"))
}

pub async fn get(State(st): State<AppState>) -> ApiResult<axum::Json<Settings>> {
    let mut channels: Vec<ChannelView> = load_channels(&st.store, &st.keys)?
        .into_iter()
        .map(|(name, spec)| ChannelView {
            name,
            managed_by: "api".into(),
            password_set: spec.password.is_some(),
            url_host: spec.url.as_deref().and_then(url_host),
            spec,
        })
        .collect();
    if let Some(n) = &st.engine.notify {
        for name in n.file_channels() {
            channels.push(ChannelView {
                name,
                managed_by: "config".into(),
                spec: ChannelSpec::default(),
                password_set: false,
                url_host: None,
            });
        }
    }
    Ok(json(Settings {
        retention: st.engine.retention.as_ref().map(|r| view(&r.get())),
        channels,
        routes: routes_of(&st.store)?,
    }))
}

pub async fn set_retention(
    State(st): State<AppState>,
    me: Me,
    Body(spec): Body<RetentionSpec>,
) -> ApiResult<axum::Json<RetentionView>> {
    let shared = st
        .engine
        .retention
        .as_ref()
        .ok_or_else(|| ApiError::conflict("no retention runs beside this server (no engine)"))?;
    let policy = merge_retention(&shared.get(), &spec).map_err(ApiError::unprocessable)?;
    // Stored as the whole effective ages, so a restart keeps what is shown.
    let full = RetentionSpec {
        max_age_days: policy
            .max_age
            .iter()
            .map(|(t, d)| (t.name().to_string(), (d.as_secs() / 86_400) as u32))
            .collect(),
        disk_budget_gb: Some(policy.disk_budget.map_or(0.0, |b| b as f64 / 1e9)),
    };
    st.store.set_setting(RETENTION_KEY, &serde_json::to_value(&full).map_err(ApiError::internal)?)?;
    shared.set(policy.clone());
    tracing::info!(user = me.name, "retention changed: {:?}", full);
    audit(&st, me.audit("settings_retention", "retention", serde_json::to_value(&full).unwrap_or_default()))?;
    Ok(json(view(&policy)))
}

fn notifier(st: &AppState) -> ApiResult<&std::sync::Arc<dyn crate::engine::Notifications>> {
    st.engine
        .notify
        .as_ref()
        .ok_or_else(|| ApiError::conflict("notifications need detection running beside this server"))
}

/// Apply channels and routes to the running notifier (blocking work).
async fn apply(st: &AppState, channels: Vec<(String, ChannelSpec)>, routes: Vec<RouteSpec>) -> ApiResult<()> {
    let n = notifier(st)?.clone();
    tokio::task::spawn_blocking(move || n.apply(&channels, &routes))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::unprocessable)
}

fn valid_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::unprocessable("channel names: 1 to 64 letters, digits, `-` or `_`"));
    }
    Ok(())
}

pub async fn put_channel(
    State(st): State<AppState>,
    me: Me,
    Segment(name): Segment<String>,
    Body(mut spec): Body<ChannelSpec>,
) -> ApiResult<axum::Json<ChannelView>> {
    valid_name(&name)?;
    let n = notifier(&st)?;
    if n.file_channels().contains(&name) {
        return Err(ApiError::conflict(format!("channel `{name}` is defined in the config file; change it there")));
    }
    let mut channels = load_channels(&st.store, &st.keys)?;
    let existing = channels.iter().position(|(n, _)| n == &name);
    if let Some(i) = existing {
        // Secrets left out are kept.
        let old = &channels[i].1;
        if spec.password.is_none() && spec.username.is_some() {
            spec.password = old.password.clone();
        }
        if spec.url.is_none() {
            spec.url = old.url.clone();
        }
        channels[i].1 = spec.clone();
    } else {
        channels.push((name.clone(), spec.clone()));
    }
    apply(&st, channels, routes_of(&st.store)?).await?;
    let public = ChannelSpec { password: None, url: None, ..spec.clone() };
    let secret = Secret { password: spec.password.clone(), url: spec.url.clone() };
    let sealed = (secret.password.is_some() || secret.url.is_some())
        .then(|| st.keys.seal(&context(&name), &serde_json::to_vec(&secret).unwrap_or_default()));
    let config = serde_json::to_string(&public).map_err(ApiError::internal)?;
    st.store.with(|c| {
        c.execute(
            "INSERT INTO channels (name, kind, config, secret, created_ns) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, config = excluded.config, secret = excluded.secret",
            params![name, spec.kind, config, sealed, crate::store::now_ns()],
        )
    })?;
    audit(
        &st,
        me.audit(
            "settings_channel",
            name.clone(),
            serde_json::json!({ "config": public, "password_set": spec.password.is_some(), "url_set": spec.url.is_some() }),
        ),
    )?;
    Ok(json(ChannelView {
        name,
        managed_by: "api".into(),
        password_set: spec.password.is_some(),
        url_host: spec.url.as_deref().and_then(url_host),
        spec: public,
    }))
}

pub async fn delete_channel(
    State(st): State<AppState>,
    me: Me,
    Segment(name): Segment<String>,
) -> ApiResult<StatusCode> {
    let mut channels = load_channels(&st.store, &st.keys)?;
    let Some(i) = channels.iter().position(|(n, _)| n == &name) else {
        return Err(ApiError::not_found(format!("no API-managed channel `{name}`")));
    };
    channels.remove(i);
    apply(&st, channels, routes_of(&st.store)?).await?;
    st.store.with(|c| c.execute("DELETE FROM channels WHERE name = ?1", params![name]))?;
    audit(&st, me.audit("settings_channel_delete", name, serde_json::json!({})))?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn test_channel(State(st): State<AppState>, me: Me, Segment(name): Segment<String>) -> ApiResult<StatusCode> {
    let n = notifier(&st)?.clone();
    let known = n.file_channels().contains(&name)
        || st
            .store
            .with(|c| c.query_row("SELECT 1 FROM channels WHERE name = ?1", params![name], |_| Ok(())).optional())?
            .is_some();
    if !known {
        return Err(ApiError::not_found(format!("no channel `{name}`")));
    }
    let ch = name.clone();
    let r = tokio::task::spawn_blocking(move || n.test(&ch)).await.map_err(ApiError::internal)?;
    let mut a = me.audit("settings_channel_test", name.clone(), serde_json::json!({ "error": r.as_ref().err() }));
    a.ok = r.is_ok();
    audit(&st, a)?;
    r.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "delivery_failed", format!("channel `{name}`: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn put_routes(
    State(st): State<AppState>,
    me: Me,
    Body(r): Body<Routes>,
) -> ApiResult<axum::Json<Vec<RouteSpec>>> {
    if r.routes.len() > 100 {
        return Err(ApiError::unprocessable("routes: at most 100"));
    }
    apply(&st, load_channels(&st.store, &st.keys)?, r.routes.clone()).await?;
    let v = serde_json::to_value(&r.routes).map_err(ApiError::internal)?;
    st.store.set_setting(ROUTES_KEY, &v)?;
    audit(&st, me.audit("settings_routes", "routes", v))?;
    Ok(json(r.routes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_changes_are_checked_and_merged() {
        let base = RetentionPolicy::default();
        let spec = RetentionSpec { max_age_days: [("flows".to_string(), 365)].into(), disk_budget_gb: Some(2.5) };
        let p = merge_retention(&base, &spec).unwrap();
        assert_eq!(p.max_age[&Table::Flows], Duration::from_secs(365 * 86_400));
        assert_eq!(p.max_age[&Table::Dns], base.max_age[&Table::Dns]);
        assert_eq!(p.disk_budget, Some(2_500_000_000));
        let bad = |t: &str, d: u32| {
            merge_retention(&base, &RetentionSpec { max_age_days: [(t.to_string(), d)].into(), disk_budget_gb: None })
        };
        assert!(bad("flows", 7).unwrap_err().contains("between 30 and 730"));
        assert!(bad("packets", 60).unwrap_err().contains("no table"));
        let neg = RetentionSpec { max_age_days: BTreeMap::new(), disk_budget_gb: Some(-1.0) };
        assert!(merge_retention(&base, &neg).is_err());
        let off = RetentionSpec { max_age_days: BTreeMap::new(), disk_budget_gb: Some(0.0) };
        assert_eq!(merge_retention(&p, &off).unwrap().disk_budget, None);
    }

    #[test]
    fn webhook_urls_show_only_their_host() {
        assert_eq!(
            url_host("https://hooks.slack.com/services/T0/B0/secret").as_deref(),
            Some("https://hooks.slack.com")
        );
        assert_eq!(url_host("http://user:pw@10.0.0.1:8080/x?token=1").as_deref(), Some("http://10.0.0.1:8080"));
    }
}
