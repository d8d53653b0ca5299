//! Health and the engine's capture counters.

use axum::extract::State;
use serde::Serialize;

use super::json;
use crate::AppState;
use crate::engine::InterfaceStatus;
use crate::error::ApiResult;

#[derive(Serialize, schemars::JsonSchema)]
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

#[derive(Serialize, schemars::JsonSchema)]
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

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Seconds of history, 1 to 600 (default 60).
    #[schemars(range(min = 1, max = 600))]
    seconds: Option<usize>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Performance {
    latest: Option<crate::monitor::Sample>,
    history: Vec<crate::monitor::Sample>,
}

pub async fn performance(
    State(st): State<AppState>,
    super::Params(w): super::Params<Window>,
) -> ApiResult<axum::Json<Performance>> {
    let secs = w.seconds.unwrap_or(60);
    if !(1..=600).contains(&secs) {
        return Err(crate::error::ApiError::bad_request("seconds must be 1 to 600"));
    }
    Ok(json(Performance { latest: st.monitor.latest(), history: st.monitor.history(secs) }))
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text exposition.
pub async fn metrics(State(st): State<AppState>) -> impl axum::response::IntoResponse {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let s = st.engine.status();
    let latest = st.monitor.latest().unwrap_or_default();
    let c = &st.monitor.counters;
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    metric("tapstream_packets_total", "counter", "Packets the engine received.", one(s.packets as f64));
    metric("tapstream_bytes_total", "counter", "Bytes the engine received.", one(s.bytes as f64));
    metric("tapstream_drops_total", "counter", "Packets lost (worker fell behind, or kernel).", one(s.drops as f64));
    let q = |f: fn(&crate::engine::QueueStatus) -> u64| -> Vec<(String, f64)> {
        s.interfaces
            .iter()
            .flat_map(|i| {
                i.queues.iter().map(move |qs| {
                    (format!("{{interface=\"{}\",queue=\"{}\"}}", label(&i.name), label(&qs.queue)), f(qs) as f64)
                })
            })
            .collect()
    };
    metric("tapstream_queue_packets_total", "counter", "Packets per capture queue.", q(|x| x.packets));
    metric("tapstream_queue_bytes_total", "counter", "Bytes per capture queue.", q(|x| x.bytes));
    metric(
        "tapstream_queue_worker_drops_total",
        "counter",
        "Packets dropped because a worker fell behind.",
        q(|x| x.worker_drops),
    );
    metric("tapstream_queue_kernel_drops_total", "counter", "Packets the kernel dropped.", q(|x| x.kernel_drops));
    metric("tapstream_packets_per_second", "gauge", "Packet rate over the last second.", one(latest.rates.pps));
    metric("tapstream_bits_per_second", "gauge", "Bit rate over the last second.", one(latest.rates.bps));
    metric(
        "tapstream_alert_events_total",
        "counter",
        "Alert events seen since the server started.",
        one(c.alert_events.load(Relaxed) as f64),
    );
    metric(
        "tapstream_data_dir_bytes",
        "gauge",
        "Bytes under the data directory.",
        one(latest.host.data_dir_bytes as f64),
    );
    let w = st
        .engine
        .writer
        .as_ref()
        .and_then(|w| w.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|w| w.stats()))
        .unwrap_or_default();
    metric("tapstream_history_rows_written_total", "counter", "Rows written to the history.", one(w.rows as f64));
    metric("tapstream_history_files_written_total", "counter", "Parquet files committed.", one(w.files as f64));
    metric("tapstream_history_bytes_written_total", "counter", "Bytes of Parquet committed.", one(w.bytes as f64));
    metric("tapstream_history_compactions_total", "counter", "Closed hours compacted.", one(w.compactions as f64));
    metric(
        "tapstream_history_compaction_errors_total",
        "counter",
        "Compactions that failed (the hour stays as it was).",
        one(w.compaction_errors as f64),
    );
    metric(
        "tapstream_disk_free_bytes",
        "gauge",
        "Free bytes on the data directory's file system.",
        one(latest.host.disk_free as f64),
    );
    metric(
        "tapstream_process_resident_bytes",
        "gauge",
        "Resident memory of the process.",
        one(latest.host.process_rss as f64),
    );
    metric("tapstream_api_requests_total", "counter", "API requests.", one(c.requests.load(Relaxed) as f64));
    metric(
        "tapstream_api_responses_total",
        "counter",
        "API answers by status class.",
        vec![
            ("{class=\"2xx\"}".into(), c.responses_2xx.load(Relaxed) as f64),
            ("{class=\"4xx\"}".into(), c.responses_4xx.load(Relaxed) as f64),
            ("{class=\"5xx\"}".into(), c.responses_5xx.load(Relaxed) as f64),
        ],
    );
    metric(
        "tapstream_stream_clients",
        "gauge",
        "Connected /api/stream clients.",
        one(c.stream_clients.load(Relaxed) as f64),
    );
    metric(
        "tapstream_stream_clients_dropped_total",
        "counter",
        "Stream clients dropped for falling behind.",
        one(c.stream_dropped.load(Relaxed) as f64),
    );
    let rep = &st.engine.reputation;
    if !rep.is_empty() {
        use tapstream_engine::detect::reputation::LookupStats;
        let by = |f: fn(&LookupStats) -> &std::sync::atomic::AtomicU64| -> Vec<(String, f64)> {
            rep.iter().map(|l| (format!("{{service=\"{}\"}}", l.name), f(&l.stats).load(Relaxed) as f64)).collect()
        };
        metric(
            "tapstream_reputation_lookups_total",
            "counter",
            "Addresses handed to an online reputation service.",
            by(|s| &s.offered),
        );
        metric(
            "tapstream_reputation_flagged_total",
            "counter",
            "Addresses a reputation service reported as abusive.",
            by(|s| &s.flagged),
        );
        metric(
            "tapstream_reputation_failed_total",
            "counter",
            "Lookups that failed (error, timeout, refused key, slow down).",
            by(|s| &s.failed),
        );
        metric(
            "tapstream_reputation_deferred_total",
            "counter",
            "Addresses not asked because the day's requests were spent.",
            by(|s| &s.deferred),
        );
        metric(
            "tapstream_reputation_queue_full_total",
            "counter",
            "Addresses not offered because the service's queue was full.",
            by(|s| &s.queue_full),
        );
    }
    metric(
        "tapstream_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        one(st.started.elapsed().as_secs() as f64),
    );
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], o)
}
