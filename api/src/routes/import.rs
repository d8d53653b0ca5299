//! `/api/import`: a CSV of flow records (the columns of `docs/schema.md`)
//! or a capture file (pcap or pcapng) uploaded as the request body, put
//! into the history through the running engine's own writer, and reported:
//! rows written, or every bad row (a CSV with bad rows imports nothing
//! unless `skip_bad_rows`); packets, flows and records per table for a
//! capture (a capture cut short keeps what came before the damage, and
//! says so). One import runs at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::extract::State;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tapstream_engine::records::Table;
use tapstream_query::import::{ImportError, RowError, check_flows_csv, import_flows_csv};
use tokio::io::AsyncWriteExt;

use super::{Me, Params, audit, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Row errors listed in a report (the count is always complete).
const LISTED: usize = 100;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// csv (flow records) or pcap (a pcap or pcapng capture, analysed into
    /// the history).
    #[schemars(extend("enum" = ["csv", "pcap"]))]
    format: String,
    /// CSV: import the good rows of a file that has bad ones (default: a
    /// file with any bad row imports nothing).
    skip_bad_rows: Option<bool>,
    /// A name for the upload in the report and the audit log.
    #[schemars(length(max = 200))]
    name: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct BadRow {
    line: u64,
    column: String,
    value: String,
    reason: String,
}

impl From<&RowError> for BadRow {
    fn from(e: &RowError) -> BadRow {
        BadRow { line: e.line, column: e.column.clone(), value: e.value.clone(), reason: e.reason.clone() }
    }
}

#[derive(Serialize, Default, schemars::JsonSchema)]
pub struct ImportReport {
    format: String,
    name: String,
    /// Bytes uploaded.
    bytes: u64,
    /// CSV: rows written to the flows table.
    rows: u64,
    /// CSV: bad rows (skipped, or the reason nothing was imported).
    bad_rows: u64,
    /// The first bad rows.
    errors: Vec<BadRow>,
    /// pcap: packets read.
    packets: u64,
    /// pcap: connections seen.
    flows: u64,
    /// pcap: records written, per table.
    records: serde_json::Map<String, serde_json::Value>,
    /// pcap: packets that were not IP.
    non_ip: u64,
}

fn writer(st: &AppState) -> ApiResult<tapstream_query::SharedWriter> {
    st.engine
        .writer
        .clone()
        .ok_or_else(|| ApiError::conflict("this server runs without an engine writing history: nothing to import into"))
}

/// Write the request body to `path`, refusing it past `limit` bytes.
async fn receive(body: axum::body::Body, path: &Path, limit: u64) -> ApiResult<u64> {
    let mut f = tokio::fs::File::create(path).await.map_err(ApiError::internal)?;
    let mut n = 0u64;
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        n += chunk.len() as u64;
        if n > limit {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the upload is over the {limit}-byte import limit (api.max_import_mb)"),
            ));
        }
        f.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    f.flush().await.map_err(ApiError::internal)?;
    if n == 0 {
        return Err(ApiError::unprocessable("the upload is empty: send the file as the request body"));
    }
    Ok(n)
}

/// Removes the upload however the import ends.
struct Upload(PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn import(
    State(st): State<AppState>,
    me: Me,
    Params(p): Params<ImportParams>,
    body: axum::body::Body,
) -> ApiResult<axum::Json<ImportReport>> {
    let name = p.name.clone().unwrap_or_else(|| format!("upload.{}", p.format));
    let admitted = (|| {
        if p.format != "csv" && p.format != "pcap" {
            return Err(ApiError::unprocessable(format!("format `{}`: csv or pcap", p.format)));
        }
        if name.len() > 200 || name.chars().any(char::is_control) {
            return Err(ApiError::unprocessable("name: up to 200 printable characters"));
        }
        let w = writer(&st)?;
        let one =
            st.importing.try_lock().map_err(|_| ApiError::conflict("an import is running; try again when it ends"))?;
        Ok((w, one))
    })();
    let (w, _one) = match admitted {
        Ok(v) => v,
        Err(e) => {
            super::drain(body).await;
            return Err(e);
        }
    };
    let dir = st.cfg.data_dir.join("api").join("imports");
    tokio::fs::create_dir_all(&dir).await.map_err(ApiError::internal)?;
    let upload = Upload(dir.join(format!("upload-{}", crate::keys::hex(&crate::keys::random::<8>()))));
    let bytes = receive(body, &upload.0, st.cfg.max_import).await?;
    let mut report = ImportReport { format: p.format.clone(), name: name.clone(), bytes, ..ImportReport::default() };
    let path = upload.0.clone();
    let outcome = if p.format == "csv" {
        let skip = p.skip_bad_rows.unwrap_or(false);
        tokio::task::spawn_blocking(move || {
            let r = csv(&path, w, skip, &mut report);
            (report, r)
        })
        .await
        .map_err(ApiError::internal)?
    } else {
        let cfg = st.engine.import_pipeline.clone().unwrap_or_else(default_pipeline);
        tokio::task::spawn_blocking(move || {
            let r = capture(&path, w, &cfg, &mut report);
            (report, r)
        })
        .await
        .map_err(ApiError::internal)?
    };
    drop(upload);
    let detail = |r: &ImportReport| {
        serde_json::json!({ "format": r.format, "bytes": r.bytes, "rows": r.rows, "bad_rows": r.bad_rows,
                            "packets": r.packets, "records": r.records })
    };
    match outcome {
        (r, Ok(())) => {
            audit(&st, me.audit("import", name, detail(&r)))?;
            tracing::info!(user = me.name, format = r.format, rows = r.rows, packets = r.packets, "import finished");
            Ok(json(r))
        }
        (r, Err(e)) => {
            let mut a = me.audit("import", name, detail(&r));
            a.ok = false;
            audit(&st, a)?;
            Err(e.with_report(r))
        }
    }
}

type Outcome = Result<(), ApiError>;

fn csv(path: &Path, mut w: tapstream_query::SharedWriter, skip: bool, r: &mut ImportReport) -> Outcome {
    let open = || std::fs::File::open(path).map(std::io::BufReader::new);
    let fail = |e: ImportError| ApiError::unprocessable(e.to_string());
    if !skip {
        let f = open().map_err(ApiError::internal)?;
        let errs = check_flows_csv(f).map_err(fail)?;
        if !errs.is_empty() {
            r.bad_rows = errs.len() as u64;
            r.errors = errs.iter().take(LISTED).map(BadRow::from).collect();
            let e = ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "bad_rows",
                format!(
                    "{} bad row(s), first {}; nothing imported (skip_bad_rows=true imports the good ones)",
                    errs.len(),
                    errs[0]
                ),
            );
            return Err(e);
        }
    }
    let f = open().map_err(ApiError::internal)?;
    match import_flows_csv(f, &mut w, skip) {
        Ok(rep) => {
            r.rows = rep.rows;
            r.bad_rows = rep.skipped.len() as u64;
            r.errors = rep.skipped.iter().take(LISTED).map(BadRow::from).collect();
            Ok(())
        }
        Err(ImportError::Write(e)) => Err(ApiError::internal(e)),
        Err(e) => Err(fail(e)),
    }
}

/// An engine-less server's settings for captures (tests, history-only use).
fn default_pipeline() -> tapstream_engine::pipeline::PipelineConfig {
    tapstream_engine::pipeline::PipelineConfig { workers: 1, ..Default::default() }
}

fn capture(
    path: &Path,
    w: tapstream_query::SharedWriter,
    cfg: &tapstream_engine::pipeline::PipelineConfig,
    r: &mut ImportReport,
) -> Outcome {
    let text = path.to_string_lossy().to_string();
    let src = tapstream_engine::source::open_capture(&text).map_err(|e| {
        let msg = e.to_string().replace(&text, "the upload");
        ApiError::unprocessable(format!("not a capture file we can read: {msg}"))
    })?;
    let mut cfg = cfg.clone();
    // A file loses nothing by waiting for the writer.
    cfg.drop_when_behind = false;
    cfg.live_clock = false;
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (mut sink_w, errs) = (w, errors.clone());
    let sink = move |(t, b): (Table, arrow::array::RecordBatch)| {
        use tapstream_query::BatchSink;
        if let Err(e) = sink_w.write_batch(t, &b) {
            errs.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        }
    };
    let progress = Arc::new(tapstream_engine::pipeline::Progress::default());
    let (summary, err) = tapstream_engine::pipeline::run(src, &cfg, Arc::new(AtomicBool::new(false)), progress, sink);
    r.packets = summary.packets;
    r.flows = summary.flows.created;
    r.non_ip = summary.non_ip;
    for (t, &n) in Table::ALL.iter().zip(&summary.rows_per_table) {
        if n > 0 {
            r.records.insert(t.name().into(), n.into());
        }
    }
    if let Some(e) = errors.lock().unwrap_or_else(|p| p.into_inner()).first() {
        return Err(ApiError::internal(format!("writing the history: {e}")));
    }
    if let Some(e) = err {
        let msg = e.to_string().replace(&text, "the upload");
        let e = ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "bad_capture",
            format!("{msg}; the {} packet(s) before it were imported", summary.packets),
        );
        return Err(e);
    }
    Ok(())
}
