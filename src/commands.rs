//! Subcommands.

use std::io::Write;
use std::path::Path;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::Layer;

use anyhow::Context;
use tapstream_engine::arrow::array::RecordBatch;
use tapstream_engine::pipeline::{self, PipelineConfig, Progress, RunSummary};
use tapstream_engine::records::Table;
use tapstream_engine::source::{Batch, LinkType, PacketSource, PcapWriter, SynthConfig, SynthSource, open_capture};
use tapstream_query::HourlyWriter;

use crate::cli::{Cli, Cmd, FlowsArgs, IngestArgs, LogKind, RunArgs, SynthArgs};
use crate::config::{self, Config};
use crate::output;

/// Logs go to standard error; the server also writes them to daily files
/// under DATA/logs (kept 14 days), which `/api/logs` serves. The guard
/// flushes the file writer when dropped.
fn init_logging(files: Option<&Path>) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("TAPSTREAM_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    // Colours only on a terminal: logs piped to a file or journald stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let file = files.and_then(|dir| {
        // The appender prunes old files at start and complains of a
        // directory that does not exist yet.
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("tapstream: warning: log files in {}: {e}; logging to standard error only", dir.display());
            return None;
        }
        let appender = tracing_appender::rolling::RollingFileAppender::builder()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("tapstream")
            .filename_suffix("log")
            .max_log_files(14)
            .build(dir);
        match appender {
            Ok(a) => Some(tracing_appender::non_blocking(a)),
            Err(e) => {
                eprintln!("tapstream: warning: log files in {}: {e}; logging to standard error only", dir.display());
                None
            }
        }
    });
    match file {
        Some((writer, guard)) => {
            let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false);
            tracing_subscriber::registry().with(stderr.with_filter(filter())).with(layer.with_filter(filter())).init();
            Some(guard)
        }
        None => {
            tracing_subscriber::registry().with(stderr.with_filter(filter())).init();
            None
        }
    }
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = match config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            init_logging(None);
            return Err(e);
        }
    };
    let log_dir = match &cli.cmd {
        None => Some(cfg.data_dir.join("logs")),
        Some(Cmd::Serve(a)) => Some(a.engine.data.clone().unwrap_or_else(|| cfg.data_dir.clone()).join("logs")),
        _ => None,
    };
    let _guard = init_logging(log_dir.as_deref());
    match cli.cmd.unwrap_or(Cmd::Serve(crate::cli::ServeArgs::default())) {
        Cmd::Serve(a) => crate::serve::serve(cfg, a),
        Cmd::User(a) => crate::serve::user(cfg, a),
        Cmd::Backup(a) => crate::serve::backup(cfg, a),
        Cmd::Run(a) => run(cfg, a),
        Cmd::Ingest(a) => ingest(cfg, a),
        Cmd::Flows(a) => flows(cfg, a),
        Cmd::Synth(a) => synth(a),
        Cmd::Gen(a) => crate::live::generate(a),
        Cmd::Sql(a) => crate::sql::run(cfg, a),
        Cmd::Report(a) => crate::report::run(cfg, a),
        Cmd::Doctor(a) => crate::doctor::run(cfg, a),
        Cmd::Import(a) => import(cfg, a),
        Cmd::Record(a) => crate::record::run(cfg, a),
        Cmd::Model(a) => crate::model::run(cfg, a),
        Cmd::Alerts(a) => {
            let data = a.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
            match a.cmd {
                crate::cli::AlertsCmd::Ack { ids } => crate::notify::ack(&data, &ids)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plugin(a) => {
            let data = a.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
            match &a.cmd {
                crate::cli::PluginCmd::Check(c) => crate::plugins::check(&cfg, c),
                crate::cli::PluginCmd::List { dir, json } => crate::plugins::list(&cfg, dir.as_deref(), &data, *json),
            }
        }
    }
}

fn import(cfg: Config, a: crate::cli::ImportArgs) -> anyhow::Result<ExitCode> {
    use tapstream_query::import::{ImportError, RowError, import_flows_csv_file};
    let data = a.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    let mut writer =
        HourlyWriter::new(&data, cfg.writer.clone()).with_context(|| format!("opening data dir {}", data.display()))?;
    let mut all_errors: Vec<(String, RowError)> = Vec::new();
    let mut failed = false;
    let mut total = 0;
    for f in &a.files {
        let name = f.display().to_string();
        match import_flows_csv_file(f, &mut writer, a.skip_bad_rows) {
            Ok(r) => {
                total += r.rows;
                eprintln!("{name}: imported {} row(s), skipped {} bad row(s)", r.rows, r.skipped.len());
                for e in r.skipped.iter().take(10) {
                    eprintln!("  {e}");
                }
                all_errors.extend(r.skipped.into_iter().map(|e| (name.clone(), e)));
            }
            Err(ImportError::BadRows(errs)) => {
                failed = true;
                eprintln!(
                    "{name}: {} bad row(s); nothing imported from it (--skip-bad-rows imports the rest):",
                    errs.len()
                );
                for e in errs.iter().take(10) {
                    eprintln!("  {e}");
                }
                if errs.len() > 10 {
                    eprintln!("  … {} more{}", errs.len() - 10, if a.report.is_some() { " in the report" } else { "" });
                }
                all_errors.extend(errs.into_iter().map(|e| (name.clone(), e)));
            }
            Err(e) => {
                failed = true;
                eprintln!("{name}: error: {e}; nothing more imported from it");
            }
        }
    }
    writer.close()?;
    if let Some(path) = &a.report {
        let mut w = csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
        w.write_record(["file", "line", "column", "value", "reason"])?;
        for (f, e) in &all_errors {
            w.write_record([f.as_str(), &e.line.to_string(), &e.column, &e.value, &e.reason])?;
        }
        w.flush()?;
    }
    eprintln!("imported {total} flow row(s) into {}", data.display());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Set `stop` after `secs` seconds (`--duration`).
pub(crate) fn stop_after(stop: &Arc<AtomicBool>, secs: Option<u64>) {
    if let Some(d) = secs {
        let s = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(d));
            s.store(true, Ordering::SeqCst);
        });
    }
}

pub(crate) fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    // Second signal: leave at once.
    let _ = ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    stop
}

use tapstream_query::SharedWriter;
type SharedErrors = Arc<Mutex<Vec<String>>>;

/// How a history writer takes rows (see `WriterConfig::hold_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Held in memory within the budget until a part would be committed:
    /// an input that ends (an ingest) writes its hours once, compacted.
    HeldUntilClose,
    /// Streamed into part files as they come (a capture that runs on).
    Streamed,
}

/// A sink that writes record batches into hourly Parquet; errors are kept.
// The sink closure's type cannot be named, so the tuple stays inline.
#[allow(clippy::type_complexity)]
pub(crate) fn parquet_sink(
    data: &Path,
    cfg: &Config,
    rows: Rows,
) -> anyhow::Result<(impl FnMut((Table, RecordBatch)) + Send + 'static, SharedWriter, SharedErrors)> {
    let wcfg = match rows {
        Rows::HeldUntilClose => cfg.writer.clone(),
        Rows::Streamed => cfg.writer.clone().streaming(),
    };
    let w = HourlyWriter::new(data, wcfg).with_context(|| format!("opening data dir {}", data.display()))?;
    let writer = Arc::new(Mutex::new(Some(w)));
    let errors = Arc::new(Mutex::new(Vec::new()));
    // Commit part files on time even when no batch arrives to trigger it.
    let tick = (cfg.writer.max_file_age / 10).max(Duration::from_millis(20));
    let weak = Arc::downgrade(&writer);
    std::thread::Builder::new()
        .name("writer-tick".into())
        .spawn(move || {
            while let Some(w) = weak.upgrade() {
                {
                    let mut g = w.lock().unwrap_or_else(|p| p.into_inner());
                    match g.as_mut() {
                        Some(w) => {
                            if let Err(e) = w.close_aged() {
                                tracing::error!(error = %e, "committing history failed");
                            }
                        }
                        None => return,
                    }
                }
                drop(w);
                std::thread::sleep(tick);
            }
        })
        .context("starting the writer tick")?;
    let (wr, er) = (writer.clone(), errors.clone());
    let sink = move |(t, b): (Table, RecordBatch)| {
        let mut g = wr.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = g.as_mut()
            && let Err(e) = w.write(t, &b)
        {
            tracing::error!(table = t.name(), error = %e, "writing history failed");
            er.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        }
    };
    Ok((sink, writer, errors))
}

/// Retention in the background for a long-running capture, sharing the
/// writer's hour claims (it never deletes an hour being written).
pub(crate) fn start_retention(
    data: &Path,
    cfg: &Config,
    writer: &SharedWriter,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let policy = Arc::new(tapstream_query::retention::SharedPolicy::new(cfg.retention.clone()));
    start_retention_shared(data, policy, writer, stop)
}

/// As [`start_retention`], under a policy that can change while it runs.
pub(crate) fn start_retention_shared(
    data: &Path,
    policy: Arc<tapstream_query::retention::SharedPolicy>,
    writer: &SharedWriter,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let locks = {
        let g = writer.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().context("writer already closed")?.locks()
    };
    let t = tapstream_query::retention::spawn_shared(data.to_path_buf(), policy, locks, stop.clone())
        .context("starting retention")?;
    Ok(t)
}

pub(crate) fn close_writer(writer: &Arc<Mutex<Option<HourlyWriter>>>) -> anyhow::Result<tapstream_query::WriterStats> {
    let mut g = writer.lock().unwrap_or_else(|p| p.into_inner());
    let mut w = g.take().context("writer already closed")?;
    w.close()?;
    Ok(w.stats.clone())
}

/// Where the pipeline's record batches go.
pub(crate) trait RecordSink: FnMut((Table, RecordBatch)) + Send + 'static {}
impl<F: FnMut((Table, RecordBatch)) + Send + 'static> RecordSink for F {}

/// What a `tapstream run` keeps going beside the pipeline, whatever the
/// source (demo traffic or interfaces): the history writer and its
/// retention, packet recording, GeoIP, detection, plugins and
/// notifications, wired into `pcfg`.
pub(crate) struct RunServices {
    writer: SharedWriter,
    errors: SharedErrors,
    retention: std::thread::JoinHandle<()>,
    recorder: crate::record::RecorderHandle,
    plugins: Option<crate::plugins::Running>,
    notifier: Option<crate::notify::Notifier>,
    stop: Arc<AtomicBool>,
}

impl RunServices {
    /// Start them for a run writing to `data` that ends when `stop` is set;
    /// the sink the pipeline's record batches go to.
    pub(crate) fn start(
        cfg: &Config,
        data: &Path,
        pcfg: &mut PipelineConfig,
        stop: &Arc<AtomicBool>,
    ) -> anyhow::Result<(impl RecordSink, RunServices)> {
        let (sink, writer, errors) = parquet_sink(data, cfg, Rows::Streamed)?;
        let retention = start_retention(data, cfg, &writer, stop)?;
        let recorder = crate::record::start(data, pcfg)?;
        let geo = cfg.geoip.open()?;
        pcfg.geo = geo.clone();
        pcfg.detect = cfg.detect.as_ref().map(|d| d.setup(data, geo.clone())).transpose()?;
        let plugins = crate::plugins::attach(cfg, data, pcfg)?;
        let notifier = crate::notify::start_for(cfg, pcfg, data);
        Ok((sink, RunServices { writer, errors, retention, recorder, plugins, notifier, stop: stop.clone() }))
    }

    /// After the pipeline: deliver pending notifications, close recordings,
    /// stop retention, close the history (printing the run's summary) and
    /// the plugins. False when a history file could not be written.
    pub(crate) fn finish(self, run: &RunSummary) -> anyhow::Result<bool> {
        if let Some(n) = self.notifier {
            n.finish(Duration::from_secs(30));
        }
        self.recorder.finish();
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.retention.join();
        let ws = close_writer(&self.writer)?;
        print_summary(run, &ws);
        if let Some(p) = self.plugins {
            p.finish();
        }
        Ok(self.errors.lock().unwrap_or_else(|p| p.into_inner()).is_empty())
    }
}

fn run(cfg: Config, a: RunArgs) -> anyhow::Result<ExitCode> {
    let ifaces = if a.engine.ifaces.is_empty() { cfg.capture.interfaces.clone() } else { a.engine.ifaces.clone() };
    if !ifaces.is_empty() {
        return crate::live::run(cfg, a, ifaces);
    }
    if a.engine.filter.is_some() || cfg.capture.filter.is_some() {
        anyhow::bail!("a capture filter needs an interface to capture from (--iface or capture.interfaces)");
    }
    let data = a.engine.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    let mut pcfg = cfg.pipeline.clone();
    if let Some(w) = a.engine.workers {
        pcfg.workers = w.max(1);
    }
    pcfg.drop_when_behind = true;
    let pps = a.engine.pps.unwrap_or(cfg.demo_pps);
    let src = SynthSource::new(SynthConfig {
        seed: cfg.demo_seed,
        pps,
        realtime: true,
        start_ns: now_ns(),
        attacks: cfg.attacks.clone(),
        ..SynthConfig::default()
    });
    tracing::info!(data = %data.display(), pps, workers = pcfg.workers, "no interface configured: running on built-in demo traffic (Ctrl-C to stop)");
    let stop = stop_flag();
    stop_after(&stop, a.engine.duration);
    let (sink, services) = RunServices::start(&cfg, &data, &mut pcfg, &stop)?;
    let progress = Arc::new(Progress::default());
    let (summary, err) = pipeline::run(src, &pcfg, stop.clone(), progress, sink);
    let written = services.finish(&summary)?;
    if let Some(e) = err {
        return Err(e.into());
    }
    Ok(if written { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub(crate) fn print_summary(s: &RunSummary, w: &tapstream_query::WriterStats) {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "packets {} ({} bytes) in {:.2}s = {:.0} packets/s; flows {} (evicted {}); records {} \
         [flows {} dns {} tls {} http {} dhcp {} stats {}]; files {} ({} bytes); non-IP {}; dropped record batches {}",
        s.packets,
        s.bytes,
        secs,
        s.packets as f64 / secs,
        s.flows.created,
        s.flows.evicted,
        s.records,
        s.rows_per_table[0],
        s.rows_per_table[1],
        s.rows_per_table[2],
        s.rows_per_table[3],
        s.rows_per_table[4],
        s.rows_per_table[5],
        w.files,
        w.bytes,
        s.non_ip,
        s.dropped_batches,
    );
    if s.detect != Default::default() {
        eprintln!(
            "alerts {} (events {}); detection windows dropped {}; conversations folded {}",
            s.detect.alerts, s.detect.events, s.detect.dropped_windows, s.detect.folded_convs
        );
    }
    let anomalies: Vec<String> = s.anomalies.nonzero().map(|(n, c)| format!("{n}={c}")).collect();
    if !anomalies.is_empty() {
        eprintln!("anomalies: {}", anomalies.join(" "));
    }
}

fn ingest(cfg: Config, a: IngestArgs) -> anyhow::Result<ExitCode> {
    let data = a.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    let mut pcfg = cfg.pipeline.clone();
    pcfg.workers = a.workers.unwrap_or(cfg.file_workers).max(1);
    if a.verify_checksums {
        pcfg.decode.verify_checksums = true;
    }
    let geo = cfg.geoip.open()?;
    pcfg.geo = geo.clone();
    pcfg.detect = cfg.detect.as_ref().map(|d| d.setup(&data, geo.clone())).transpose()?;
    let plugins = crate::plugins::attach(&cfg, &data, &mut pcfg)?;
    let notifier = crate::notify::start_for(&cfg, &pcfg, &data);
    let mut failed = false;
    for f in &a.files {
        let path = f.display().to_string();
        let src = match open_capture(&path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tapstream: error: {e}");
                failed = true;
                continue;
            }
        };
        let total = src.len();
        let (sink, writer, errors) = parquet_sink(&data, &cfg, Rows::HeldUntilClose)?;
        let progress = Arc::new(Progress::default());
        let done = Arc::new(AtomicBool::new(false));
        let bar_thread = (!a.quiet).then(|| {
            let (p, d) = (progress.clone(), done.clone());
            let name = path.clone();
            std::thread::spawn(move || {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_message(name);
                while !d.load(Ordering::Relaxed) {
                    bar.set_position(p.position.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        });
        let (summary, err) = pipeline::run(src, &pcfg, stop_flag(), progress, sink);
        done.store(true, Ordering::Relaxed);
        if let Some(t) = bar_thread {
            let _ = t.join();
        }
        let ws = close_writer(&writer)?;
        eprintln!("{path}:");
        print_summary(&summary, &ws);
        if let Some(e) = err {
            eprintln!("tapstream: error: {e} (everything before it was written)");
            failed = true;
        }
        if !errors.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            failed = true;
        }
    }
    if let Some(p) = plugins {
        p.finish();
    }
    if let Some(n) = notifier {
        n.finish(Duration::from_secs(30));
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn flows(cfg: Config, a: FlowsArgs) -> anyhow::Result<ExitCode> {
    let mut pcfg: PipelineConfig = cfg.pipeline.clone();
    pcfg.flow.active_timeout_ns = 0; // one record per connection, as Zeek
    pcfg.workers = a.workers.unwrap_or(cfg.file_workers).max(1);
    if a.verify_checksums {
        pcfg.decode.verify_checksums = true;
    }
    if let Some(s) = a.community_id_seed {
        pcfg.community_id_seed = s;
    }
    let want = match a.log {
        LogKind::Conn => Table::Flows,
        LogKind::Dns => Table::Dns,
        LogKind::Tls => Table::Tls,
        LogKind::Http => Table::Http,
        LogKind::Dhcp => Table::Dhcp,
    };
    let mut failed = false;
    let mut all: Vec<RecordBatch> = Vec::new();
    for f in &a.files {
        let path = f.display().to_string();
        let src = match open_capture(&path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tapstream: error: {e}");
                failed = true;
                continue;
            }
        };
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let sink = move |(t, b): (Table, RecordBatch)| {
            if t == want {
                g.lock().unwrap_or_else(|p| p.into_inner()).push(b);
            }
        };
        let (_summary, err) =
            pipeline::run(src, &pcfg, Arc::new(AtomicBool::new(false)), Arc::new(Progress::default()), sink);
        all.append(&mut got.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(e) = err {
            eprintln!("tapstream: error: {e} (records before it are printed)");
            failed = true;
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    output::print(&mut out, a.log, a.format, &all)?;
    out.flush()?;
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn synth(a: SynthArgs) -> anyhow::Result<ExitCode> {
    let attacks = match &a.attacks {
        Some(s) => config::parse_attacks(s)?,
        None => Default::default(),
    };
    let mut src = SynthSource::new(SynthConfig {
        seed: a.seed,
        packets: a.packets,
        pps: a.pps,
        attacks,
        ..SynthConfig::default()
    });
    let f = std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = PcapWriter::new(std::io::BufWriter::with_capacity(1 << 20, f), LinkType::ETHERNET, 65535)?;
    let mut b = Batch::with_capacity(1024);
    loop {
        b.clear();
        let n = src.fill(&mut b, 1024)?;
        if n == 0 {
            break;
        }
        for (d, frame) in b.frames() {
            w.write(d.ts_ns, frame, d.wire_len)?;
        }
    }
    w.into_inner()?;
    let st = src.stats();
    eprintln!("wrote {} packets ({} bytes) to {}", st.packets, st.bytes, a.out.display());
    Ok(ExitCode::SUCCESS)
}
