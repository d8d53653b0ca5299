//! Health and the engine's capture counters.

use axum::extract::State;
use serde::Serialize;

use super::json;
use crate::AppState;
use crate::engine::InterfaceStatus;
use crate::error::ApiResult;

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    /// `demo`, `live`, or `none`.
    engine: String,
    store_schema: usize,
}

pub async fn health(State(st): State<AppState>) -> ApiResult<axum::Json<Health>> {
    // The store answers, or this is not healthy.
    st.store.with(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))?;
    Ok(json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: st.started.elapsed().as_secs(),
        engine: st.engine.source.clone(),
        store_schema: crate::store::SCHEMA_VERSION,
    }))
}

#[derive(Serialize)]
pub struct Interfaces {
    packets: u64,
    bytes: u64,
    drops: u64,
    interfaces: Vec<InterfaceStatus>,
}

pub async fn interfaces(State(st): State<AppState>) -> ApiResult<axum::Json<Interfaces>> {
    let s = st.engine.status();
    Ok(json(Interfaces { packets: s.packets, bytes: s.bytes, drops: s.drops, interfaces: s.interfaces }))
}
