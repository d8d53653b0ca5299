//! `/api/plugins`: the WASM detector plugins in the plugin directory: what
//! the running engine reports of them (loaded, metrics, load errors), and
//! upload, enable/disable and delete. Changes are files in the directory
//! the engine watches; a plugin is checked (manifest, imports, exports,
//! ABI, compiled by Wasmtime) before it is put there.

use std::path::Path;

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{Body, Me, Segment, audit, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Largest module accepted.
pub const MAX_WASM: usize = 8 << 20;

#[derive(Serialize, schemars::JsonSchema)]
pub struct Plugins {
    /// As the engine last reported them (`DATA/plugins.json`): loaded
    /// plugins with their metrics, and files that failed to load.
    status: serde_json::Value,
    /// Every plugin file in the directory, enabled or not.
    files: Vec<PluginFile>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct PluginFile {
    name: String,
    enabled: bool,
    bytes: u64,
}

fn dir(st: &AppState) -> ApiResult<&Path> {
    st.cfg
        .plugins_dir
        .as_deref()
        .ok_or_else(|| ApiError::conflict("plugins are turned off ([plugins] enabled = false)"))
}

fn valid_name(n: &str) -> ApiResult<()> {
    if n.is_empty()
        || n.len() > 64
        || !n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
    {
        return Err(ApiError::unprocessable(format!("plugin name `{n}`: 1 to 64 of a-z, 0-9, - and _")));
    }
    Ok(())
}

fn scan(d: &Path) -> Vec<PluginFile> {
    let mut v: Vec<PluginFile> = std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (stem, enabled) = match name.strip_suffix(".wasm") {
                Some(s) => (s.to_string(), true),
                None => (name.strip_suffix(".wasm.disabled")?.to_string(), false),
            };
            Some(PluginFile { name: stem, enabled, bytes: e.metadata().ok()?.len() })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

pub async fn list(State(st): State<AppState>) -> ApiResult<axum::Json<Plugins>> {
    let files = st.cfg.plugins_dir.as_deref().map(scan).unwrap_or_default();
    let status = std::fs::read(st.cfg.data_dir.join("plugins.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::json!({ "plugins": [], "errors": {} }));
    Ok(json(Plugins { status, files }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    name: String,
    /// The manifest (TOML; docs/plugins.md).
    #[schemars(length(min = 1, max = 65536))]
    manifest: String,
    /// The module, base64.
    #[schemars(length(min = 1))]
    wasm: String,
}

pub async fn upload(
    State(st): State<AppState>,
    me: Me,
    Body(u): Body<Upload>,
) -> ApiResult<(StatusCode, axum::Json<PluginFile>)> {
    let d = dir(&st)?.to_path_buf();
    valid_name(&u.name)?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(u.wasm.trim())
        .map_err(|e| ApiError::unprocessable(format!("wasm: not base64 ({e})")))?;
    if wasm.len() > MAX_WASM {
        return Err(ApiError::unprocessable(format!("wasm: {} bytes; at most {MAX_WASM}", wasm.len())));
    }
    if u.manifest.len() > 65_536 {
        return Err(ApiError::unprocessable("manifest: at most 64 KiB"));
    }
    // Check it the way the engine will load it, in a staging directory.
    let staging =
        st.cfg.data_dir.join("api").join(format!("plugin-staging-{}", crate::keys::hex(&crate::keys::random::<8>())));
    let name = u.name.clone();
    let manifest = u.manifest.clone();
    let checked = tokio::task::spawn_blocking(move || -> Result<(), String> {
        std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
        let w = staging.join(format!("{name}.wasm"));
        let r = std::fs::write(staging.join(format!("{name}.toml")), &manifest)
            .and_then(|_| std::fs::write(&w, &wasm))
            .map_err(|e| e.to_string())
            .and_then(|_| tapstream_engine::plugin::load_plugin(&w, None).map(|_| ()).map_err(|e| e.to_string()));
        let _ = std::fs::remove_dir_all(&staging);
        r?;
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(d.join(format!("{name}.wasm.disabled")));
        // The manifest first: the engine loads a module only with one beside it.
        crate::keys::write_atomic(&d.join(format!("{name}.toml")), manifest.as_bytes()).map_err(|e| e.to_string())?;
        crate::keys::write_atomic(&d.join(format!("{name}.wasm")), &wasm).map_err(|e| e.to_string())?;
        Ok(())
    })
    .await
    .map_err(ApiError::internal)?;
    if let Err(e) = checked {
        let mut a = me.audit("plugin_upload", u.name.clone(), serde_json::json!({ "error": e }));
        a.ok = false;
        audit(&st, a)?;
        return Err(ApiError::unprocessable(e));
    }
    audit(&st, me.audit("plugin_upload", u.name.clone(), serde_json::json!({})))?;
    let f =
        scan(dir(&st)?).into_iter().find(|f| f.name == u.name).ok_or_else(|| ApiError::internal("plugin vanished"))?;
    Ok((StatusCode::CREATED, json(f)))
}

async fn toggle(st: AppState, me: Me, name: String, enable: bool) -> ApiResult<axum::Json<PluginFile>> {
    valid_name(&name)?;
    let d = dir(&st)?;
    let (on, off) = (d.join(format!("{name}.wasm")), d.join(format!("{name}.wasm.disabled")));
    let (from, to) = if enable { (&off, &on) } else { (&on, &off) };
    if from.exists() {
        std::fs::rename(from, to).map_err(ApiError::internal)?;
    } else if !to.exists() {
        return Err(ApiError::not_found(format!("no plugin `{name}`")));
    }
    audit(&st, me.audit(if enable { "plugin_enable" } else { "plugin_disable" }, name.clone(), serde_json::json!({})))?;
    let f = scan(d).into_iter().find(|f| f.name == name).ok_or_else(|| ApiError::internal("plugin vanished"))?;
    Ok(json(f))
}

pub async fn enable(
    State(st): State<AppState>,
    me: Me,
    Segment(name): Segment<String>,
) -> ApiResult<axum::Json<PluginFile>> {
    toggle(st, me, name, true).await
}

pub async fn disable(
    State(st): State<AppState>,
    me: Me,
    Segment(name): Segment<String>,
) -> ApiResult<axum::Json<PluginFile>> {
    toggle(st, me, name, false).await
}

pub async fn delete(State(st): State<AppState>, me: Me, Segment(name): Segment<String>) -> ApiResult<StatusCode> {
    valid_name(&name)?;
    let d = dir(&st)?;
    let mut found = false;
    for f in [format!("{name}.wasm"), format!("{name}.wasm.disabled"), format!("{name}.toml")] {
        if std::fs::remove_file(d.join(f)).is_ok() {
            found = true;
        }
    }
    if !found {
        return Err(ApiError::not_found(format!("no plugin `{name}`")));
    }
    audit(&st, me.audit("plugin_delete", name, serde_json::json!({})))?;
    Ok(StatusCode::NO_CONTENT)
}
