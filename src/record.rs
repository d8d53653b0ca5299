//! `tapstream record`: packet recording sessions and PCAP export.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use tapstream_engine::filter::Filter;
use tapstream_engine::pipeline::PipelineConfig;
use tapstream_engine::record::{self, FlowMatch, Recorder, SessionInfo, SessionSpec, SessionState};
use tapstream_query::History;

use crate::cli::{RecordArgs, RecordCmd, RecordExportArgs, RecordStartArgs};
use crate::config::Config;

/// How often a running appliance looks for session requests.
const POLL: Duration = Duration::from_millis(500);

/// A running appliance's recorder thread.
pub struct RecorderHandle {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// Start recording for a run over `data`: sessions already requested start
/// before the first packet; later requests are picked up within [`POLL`].
pub fn start(data: &Path, pcfg: &mut PipelineConfig) -> anyhow::Result<RecorderHandle> {
    let mut rec = Recorder::open(data).context("opening packet recordings")?;
    rec.poll(now_ns());
    pcfg.recorder = Some(rec.tap());
    let stop = Arc::new(AtomicBool::new(false));
    let thread = rec.spawn(POLL, stop.clone()).context("starting the recorder")?;
    Ok(RecorderHandle { stop, thread })
}

impl RecorderHandle {
    /// After the workers finished: sessions still recording become paused.
    pub fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

pub fn run(cfg: Config, a: RecordArgs) -> anyhow::Result<ExitCode> {
    let data = a.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    match a.cmd {
        RecordCmd::Start(s) => start_session(&data, s),
        RecordCmd::Stop { name } => {
            record::request_stop(&data, &name, now_ns())?;
            let s = record::wait_stopped(&data, &name, Duration::from_secs(5))?;
            match s.state {
                SessionState::Stopped => eprintln!(
                    "recording `{name}` stopped: {} packets in {} files",
                    s.status.as_ref().map_or(0, |st| st.packets),
                    s.files.len()
                ),
                SessionState::Recording | SessionState::Stopping => {
                    eprintln!("recording `{name}`: stop requested; the appliance is closing its files")
                }
                SessionState::Pending | SessionState::Paused => {
                    eprintln!(
                        "recording `{name}`: stop requested; no appliance is recording it now; it will not record again"
                    )
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RecordCmd::Delete { name } => {
            let freed = record::delete(&data, &name)?;
            eprintln!("recording `{name}` deleted ({freed} bytes freed)");
            Ok(ExitCode::SUCCESS)
        }
        RecordCmd::List { json } => {
            let l = record::list(&data)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                print_list(&l);
            }
            Ok(ExitCode::SUCCESS)
        }
        RecordCmd::Export(e) => export(cfg, &data, e),
    }
}

fn start_session(data: &Path, s: RecordStartArgs) -> anyhow::Result<ExitCode> {
    let mut spec = SessionSpec::new(&s.name, now_ns());
    spec.filter = s.filter;
    spec.snaplen = s.snaplen;
    spec.max_bytes = s.max_size.as_deref().map(size).transpose()?;
    spec.max_secs = s.max_duration.as_deref().map(secs).transpose()?;
    spec.rotate_bytes = size(&s.rotate_size)?;
    spec.rotate_secs = secs(&s.rotate_every)?;
    let dir = record::create(data, &spec)?;
    eprintln!(
        "recording `{}` requested in {} ({}); a running appliance starts it within a second",
        spec.name,
        dir.display(),
        spec.filter.as_deref().unwrap_or("all packets")
    );
    Ok(ExitCode::SUCCESS)
}

fn size(s: &str) -> anyhow::Result<u64> {
    parse_size::parse_size(s).map_err(|e| anyhow::anyhow!("size `{s}`: {e} (e.g. 64MiB, 1GB, 500k)"))
}

fn secs(s: &str) -> anyhow::Result<u64> {
    let d = humantime::parse_duration(s).map_err(|e| anyhow::anyhow!("duration `{s}`: {e} (e.g. 30s, 10m, 2h)"))?;
    Ok(d.as_secs().max(1))
}

/// A point in time: RFC 3339 (`2026-11-30T10:00:00Z`) or Unix seconds.
pub(crate) fn time_ns(s: &str) -> anyhow::Result<u64> {
    if let Ok(x) = s.parse::<f64>() {
        if x < 0.0 || !x.is_finite() {
            bail!("time `{s}`: before 1970");
        }
        return Ok((x * 1e9) as u64);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("time `{s}`: use RFC 3339 (2026-11-30T10:00:00Z) or Unix seconds"))?;
    u64::try_from(t.unix_timestamp_nanos()).with_context(|| format!("time `{s}`: before 1970"))
}

fn export(cfg: Config, data: &Path, e: RecordExportArgs) -> anyhow::Result<ExitCode> {
    let mut sel = record::Selector {
        sessions: e.session.clone(),
        from_ns: e.from.as_deref().map(time_ns).transpose()?.unwrap_or(0),
        to_ns: e.to.as_deref().map(time_ns).transpose()?.unwrap_or(u64::MAX),
        ..record::Selector::default()
    };
    if let Some(f) = &e.filter {
        sel.filter = Some(Filter::parse(f)?);
    }
    if let Some(f) = &e.flow {
        sel.flow = Some(FlowMatch::parse(f).map_err(anyhow::Error::msg)?);
    }
    if let Some(uid) = &e.uid {
        let (fm, start, end) = lookup_uid(cfg, data, uid, &e)?;
        eprintln!("flow {uid}: {fm:?}");
        sel.flow = Some(fm);
        sel.from_ns = sel.from_ns.max(start);
        sel.to_ns = sel.to_ns.min(end);
    }
    if sel.flow.is_none() && sel.filter.is_none() && e.from.is_none() && e.to.is_none() {
        bail!("say what to export: --uid, --flow, --filter and/or --from/--to");
    }
    let out = export_to(&e.out)?;
    let r = record::export(data, &sel, out)?;
    for f in &r.truncated_files {
        eprintln!("note: {} ends inside a packet (being written, or cut by a crash): read up to there", f.display());
    }
    for b in &r.bad_files {
        eprintln!("warning: {b}");
    }
    eprintln!(
        "wrote {} packet(s) ({} bytes) from {} file(s) to {}{}",
        r.packets,
        r.bytes,
        r.files_read,
        e.out.display(),
        if r.duplicates > 0 {
            format!("; {} duplicate(s) from overlapping sessions left out", r.duplicates)
        } else {
            String::new()
        }
    );
    Ok(if r.bad_files.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn export_to(p: &PathBuf) -> anyhow::Result<BufWriter<File>> {
    Ok(BufWriter::new(File::create(p).with_context(|| format!("creating {}", p.display()))?))
}

/// The 5-tuple and time span of a flow in the history, by its uid.
fn lookup_uid(cfg: Config, data: &Path, uid: &str, e: &RecordExportArgs) -> anyhow::Result<(FlowMatch, u64, u64)> {
    let from = e.from.as_deref().map(time_ns).transpose()?;
    let to = e.to.as_deref().map(time_ns).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the query runtime")?;
    let found = rt.block_on(async {
        let h = History::open(data, cfg.sql.clone()).await?;
        tapstream_query::export::flow_by_uid(&h, uid, from, to).await
    })?;
    found.with_context(|| {
        format!("no flow with uid {uid} in the history searched (give --from/--to to search further back)")
    })
}

fn print_list(l: &[SessionInfo]) {
    if l.is_empty() {
        println!("no recording sessions");
        return;
    }
    let fmt_ts = |ns: u64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| ns.to_string())
    };
    println!(
        "{:<20} {:<10} {:<24} {:<30} {:<30} {:>6} {:>10} {:>12}  reason",
        "name", "state", "filter", "started", "stopped", "files", "packets", "bytes"
    );
    for s in l {
        let st = s.status.as_ref();
        println!(
            "{:<20} {:<10} {:<24} {:<30} {:<30} {:>6} {:>10} {:>12}  {}",
            s.spec.name,
            s.state.name(),
            s.spec.filter.as_deref().unwrap_or("(all)"),
            st.map(|x| fmt_ts(x.started_ns)).unwrap_or_default(),
            st.and_then(|x| x.stopped_ns).map(fmt_ts).unwrap_or_default(),
            s.files.len(),
            st.map_or(0, |x| x.packets),
            s.disk_bytes,
            st.and_then(|x| x.reason.clone()).unwrap_or_default(),
        );
    }
}
