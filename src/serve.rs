//! `tapstream serve`: capture (or demo traffic), storage and detection, and
//! the API server over them, in one process. Also `tapstream user` and
//! `tapstream backup`, which work on the same control-plane store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tapstream_api::engine::{EngineLink, Feed};
use tapstream_api::{ApiConfig, Prepared};
use tapstream_engine::detect::intel::{FeedFormat, FeedSpec};
use tapstream_engine::pipeline::{self, FeedStatus, Progress};
use tapstream_engine::source::{SynthConfig, SynthSource};

use crate::cli::{BackupArgs, ServeArgs, UserArgs, UserCmd};
use crate::commands::{close_writer, parquet_sink, print_summary, start_retention_shared, stop_after, stop_flag};
use crate::config::Config;

/// `[api]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub listen: Option<String>,
    pub access_token_minutes: Option<u64>,
    pub refresh_token_days: Option<u64>,
    pub lockout_after: Option<u32>,
    pub lockout_secs: Option<u64>,
    pub lockout_max_secs: Option<u64>,
    pub max_body_kb: Option<usize>,
    pub max_import_mb: Option<u64>,
}

/// `[api]` checked.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    pub auth: tapstream_api::auth::AuthConfig,
    pub max_body: usize,
    pub max_import: u64,
}

fn within<T: PartialOrd + std::fmt::Display + Copy>(name: &str, v: Option<T>, d: T, lo: T, hi: T) -> anyhow::Result<T> {
    match v {
        None => Ok(d),
        Some(x) if x >= lo && x <= hi => Ok(x),
        Some(x) => anyhow::bail!("api.{name} = {x}: must be between {lo} and {hi}"),
    }
}

pub fn validate(r: RawApi) -> anyhow::Result<ApiSettings> {
    let listen = match &r.listen {
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        Some(s) => {
            s.parse().map_err(|_| anyhow::anyhow!("api.listen = {s:?}: expected ADDRESS:PORT, e.g. 127.0.0.1:8080"))?
        }
    };
    let d = tapstream_api::auth::AuthConfig::default();
    let auth = tapstream_api::auth::AuthConfig {
        access_ttl: Duration::from_secs(60 * within("access_token_minutes", r.access_token_minutes, 15, 1, 24 * 60)?),
        refresh_ttl: Duration::from_secs(86_400 * within("refresh_token_days", r.refresh_token_days, 7, 1, 90)?),
        lockout_after: within("lockout_after", r.lockout_after, d.lockout_after, 1, 100)?,
        lockout_base: Duration::from_secs(within("lockout_secs", r.lockout_secs, d.lockout_base.as_secs(), 1, 86_400)?),
        lockout_max: Duration::from_secs(within(
            "lockout_max_secs",
            r.lockout_max_secs,
            d.lockout_max.as_secs(),
            1,
            7 * 86_400,
        )?),
    };
    let max_body = 1024 * within("max_body_kb", r.max_body_kb, 1024, 1, 1 << 20)?;
    let max_import = (1 << 20) * within("max_import_mb", r.max_import_mb, 256, 1, 1 << 20)?;
    Ok(ApiSettings { listen, auth, max_body, max_import })
}

impl Default for ApiSettings {
    fn default() -> Self {
        validate(RawApi::default()).expect("defaults are valid")
    }
}

fn api_config(cfg: &Config, data: &Path, listen: Option<SocketAddr>) -> ApiConfig {
    let mut a = ApiConfig::for_data_dir(data);
    a.listen = listen.unwrap_or(cfg.api.listen);
    a.auth = cfg.api.auth.clone();
    a.max_body = cfg.api.max_body;
    a.max_import = cfg.api.max_import;
    a.sql = cfg.sql.clone();
    a.reports = cfg.reports.clone();
    a.plugins_dir = cfg.plugins.enabled.then(|| data.join(&cfg.plugins.dir));
    // An operator's own rules file becomes the one the API manages (its
    // rules are taken into the store on first start).
    if let Some(p) = cfg.detect.as_ref().and_then(|d| d.rules_file.clone()) {
        a.rules_file = p;
    }
    a
}

/// With no user at all, create `admin` with a random password, printed once.
fn first_admin(p: &Prepared) -> anyhow::Result<()> {
    if tapstream_api::has_users(p.store())? {
        return Ok(());
    }
    let pw = tapstream_api::auth::random_password();
    tapstream_api::routes::users::create_user(p.store(), "admin", tapstream_api::auth::Role::Admin, &pw)?;
    // Printed, never logged: this is the only time it is shown.
    println!("first start: created user `admin` with password {pw}");
    println!("(change it after logging in; it is not shown again)");
    Ok(())
}

/// The engine running on its own threads, and how to wind it down.
struct Engine {
    link: EngineLink,
    thread: std::thread::JoinHandle<anyhow::Result<bool>>,
}

fn start_engine(
    mut cfg: Config,
    a: &ServeArgs,
    data: &Path,
    api: &ApiConfig,
    stored: &tapstream_api::routes::settings::Stored,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Engine> {
    // Detection reads the API's rules file and blocklist feed, and looks
    // for changes to them every second.
    if let Some(d) = cfg.detect.as_mut() {
        d.rules_file = Some(api.rules_file.clone());
        d.feeds.push(FeedSpec {
            name: "blocklist".into(),
            path: api.blocklist_file.clone(),
            format: FeedFormat::Plain,
        });
        d.intel_refresh = d.intel_refresh.min(Duration::from_secs(1));
    }
    let ifaces = if a.engine.ifaces.is_empty() { cfg.capture.interfaces.clone() } else { a.engine.ifaces.clone() };
    let mut pcfg = cfg.pipeline.clone();
    if let Some(w) = a.engine.workers {
        pcfg.workers = w.max(1);
    }
    pcfg.drop_when_behind = true;
    let (sink, writer, errors) = parquet_sink(data, &cfg, crate::commands::Rows::Streamed)?;
    let shared_writer = writer.clone();
    // Uploaded captures are analysed into the same history, on at most two
    // workers, without the live traffic's detection, recording or plugins.
    let geo = cfg.geoip.open()?;
    let mut import_pipeline = cfg.pipeline.clone();
    import_pipeline.workers = import_pipeline.workers.clamp(1, 2);
    import_pipeline.pin_cores = false;
    import_pipeline.geo = geo.clone();
    // Retention as the API last set it, over the config file's.
    let policy = match &stored.retention {
        Some(spec) => tapstream_api::routes::settings::merge_retention(&cfg.retention, spec).unwrap_or_else(|e| {
            tracing::warn!("stored retention settings ignored: {e}");
            cfg.retention.clone()
        }),
        None => cfg.retention.clone(),
    };
    let policy = Arc::new(tapstream_query::retention::SharedPolicy::new(policy));
    let retention = start_retention_shared(data, policy.clone(), &writer, stop)?;
    let recorder = crate::record::start(data, &mut pcfg)?;
    pcfg.geo = geo.clone();
    pcfg.detect = cfg.detect.as_ref().map(|d| d.setup(data, geo.clone())).transpose()?;
    // The directory exists, so plugins uploaded through the API are watched for.
    if cfg.plugins.enabled {
        let d = data.join(&cfg.plugins.dir);
        std::fs::create_dir_all(&d).with_context(|| format!("creating the plugin directory {}", d.display()))?;
    }
    let plugins = crate::plugins::attach(&cfg, data, &mut pcfg)?;
    let alerts = pcfg.detect.as_ref().and_then(|d| d.feed.clone());
    // Notifications: the config file's channels and routes, and the API's.
    let notifier = alerts.clone().map(|feed| {
        let mut base = cfg.notify.clone();
        base.rules_file = cfg.detect.as_ref().and_then(|d| d.rules_file.clone());
        let m = Arc::new(crate::notify::Managed::start(base, feed, data.join("alerts.ack")));
        if !stored.channels.is_empty() || !stored.routes.is_empty() {
            use tapstream_api::engine::Notifications;
            if let Err(e) = m.apply(&stored.channels, &stored.routes) {
                tracing::warn!("stored notification settings not applied: {e}");
            }
        }
        m
    });
    let notify_link = notifier.clone().map(|n| n as Arc<dyn tapstream_api::engine::Notifications>);
    let stop2 = stop.clone();
    let finish = move |run: &pipeline::RunSummary| -> anyhow::Result<bool> {
        if let Some(n) = &notifier {
            n.finish(Duration::from_secs(30));
        }
        recorder.finish();
        stop2.store(true, Ordering::SeqCst);
        let _ = retention.join();
        let ws = close_writer(&writer)?;
        print_summary(run, &ws);
        if let Some(p) = plugins {
            p.finish();
        }
        Ok(errors.lock().unwrap_or_else(|p| p.into_inner()).is_empty())
    };
    // What the server sees of the engine, whichever source runs.
    let link = EngineLink {
        source: String::new(),
        feeds: Vec::new(),
        progress: None,
        alerts,
        geo,
        writer: Some(shared_writer),
        import_pipeline: Some(import_pipeline),
        retention: Some(policy),
        notify: notify_link,
        reputation: pcfg.detect.as_ref().map(|d| d.reputation.clone()).unwrap_or_default(),
    };
    let stop = stop.clone();
    if ifaces.is_empty() {
        let pps = a.engine.pps.unwrap_or(cfg.demo_pps);
        let src = SynthSource::new(SynthConfig {
            seed: cfg.demo_seed,
            pps,
            realtime: true,
            start_ns: crate::commands::now_ns(),
            attacks: cfg.attacks.clone(),
            ..SynthConfig::default()
        });
        tracing::info!(pps, workers = pcfg.workers, "no interface configured: running on built-in demo traffic");
        let progress = Arc::new(Progress::default());
        let link = EngineLink { source: "demo".into(), progress: Some(progress.clone()), ..link };
        let thread = std::thread::Builder::new().name("engine".into()).spawn(move || {
            let (summary, err) = pipeline::run(src, &pcfg, stop, progress, sink);
            let ok = finish(&summary)?;
            if let Some(e) = err {
                return Err(e.into());
            }
            Ok(ok)
        })?;
        return Ok(Engine { link, thread });
    }
    let filter = match a.engine.filter.as_ref().or(cfg.capture.filter.as_ref()) {
        Some(t) => Some(Arc::new(tapstream_engine::filter::Filter::parse(t)?)),
        None => None,
    };
    let specs: Vec<tapstream_engine::live::InterfaceSpec> = ifaces
        .iter()
        .map(|n| tapstream_engine::live::InterfaceSpec { name: n.clone(), queues: cfg.capture.queues })
        .collect();
    let tapstream_engine::live::LiveCapture { sources, programs, report } =
        tapstream_engine::live::open(&specs, &cfg.capture.live)?;
    for line in &report {
        tracing::info!("capturing {line}");
    }
    pcfg.live_clock = true;
    pcfg.filters = vec![filter; ifaces.len()];
    let status: Vec<Arc<FeedStatus>> = sources.iter().map(|_| Arc::new(FeedStatus::default())).collect();
    let feeds = sources
        .iter()
        .zip(&status)
        .map(|(s, st)| {
            let c = s.capture_stats().unwrap_or_default();
            Feed {
                interface: if c.interface.is_empty() { s.name().to_string() } else { c.interface.clone() },
                queue: s.name().to_string(),
                mode: c.mode,
                status: st.clone(),
            }
        })
        .collect();
    let link = EngineLink { source: "live".into(), feeds, ..link };
    let rx_cores = cfg.capture.rx_cores.clone();
    let thread = std::thread::Builder::new().name("engine".into()).spawn(move || {
        let summary = pipeline::run_live(sources, &pcfg, &rx_cores, stop, status, sink);
        drop(programs);
        finish(&summary.run)
    })?;
    Ok(Engine { link, thread })
}

pub fn serve(cfg: Config, a: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::live::keep_housekeeping_off_packet_cores(&cfg);
    let data = a.engine.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    let api = api_config(&cfg, &data, a.listen);
    // Before the store clears leftover uploads: they may be another
    // appliance's, writing this data dir now. The history writer shares it.
    let _dir_lock = tapstream_query::DataDirLock::acquire(&data)?;
    let prepared = Prepared::open(api.clone())
        .with_context(|| format!("opening the control-plane store in {}", data.display()))?;
    first_admin(&prepared)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the server runtime")?;
    // Bind before the engine starts: a taken port fails the start cleanly.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(api.listen))
        .with_context(|| format!("listening on {}", api.listen))?;
    let addr = listener.local_addr()?;
    let stop = stop_flag();
    stop_after(&stop, a.engine.duration);
    let stored = prepared.stored_settings().map_err(|e| anyhow::anyhow!("reading stored settings: {}", e.detail))?;
    let engine = start_engine(cfg, &a, &data, &api, &stored, &stop)?;
    drop(stored);
    let st = prepared.start(engine.link.clone())?;
    tracing::info!(%addr, data = %data.display(), "serving the API");
    eprintln!("listening on http://{addr}");
    let s2 = stop.clone();
    let shutdown = async move {
        while !s2.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let served = rt.block_on(tapstream_api::serve(st, listener, shutdown));
    stop.store(true, Ordering::SeqCst);
    let ok = engine.thread.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))??;
    rt.shutdown_timeout(Duration::from_secs(5));
    served.context("serving the API")?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn store_for(cfg: &Config, data: Option<&PathBuf>) -> anyhow::Result<tapstream_api::Store> {
    let data = data.cloned().unwrap_or_else(|| cfg.data_dir.clone());
    let api = api_config(cfg, &data, None);
    Ok(tapstream_api::Store::open(&api.store_path())?)
}

/// `tapstream user add|list`.
pub fn user(cfg: Config, a: UserArgs) -> anyhow::Result<ExitCode> {
    let store = store_for(&cfg, a.data.as_ref())?;
    match a.cmd {
        UserCmd::Add { name, role, password_stdin } => {
            let role = tapstream_api::auth::Role::parse(&role)
                .with_context(|| format!("role `{role}`: admin, analyst or viewer"))?;
            let (pw, generated) = if password_stdin {
                let mut s = String::new();
                std::io::stdin().read_line(&mut s)?;
                (s.trim_end_matches(['\r', '\n']).to_string(), false)
            } else {
                (tapstream_api::auth::random_password(), true)
            };
            tapstream_api::routes::users::create_user(&store, &name, role, &pw)?;
            store.audit(&tapstream_api::store::AuditEntry {
                user: "(cli)".into(),
                action: "user_create",
                target: name.clone(),
                detail: serde_json::json!({ "role": role }),
                addr: "local".into(),
                ok: true,
            })?;
            if generated {
                println!("created user `{name}` ({}) with password {pw}", role.name());
            } else {
                println!("created user `{name}` ({})", role.name());
            }
        }
        UserCmd::List => {
            for u in tapstream_api::routes::users::list_users(&store)? {
                println!(
                    "{}\t{}\t{}{}",
                    u.name,
                    u.role.name(),
                    if u.totp { "totp" } else { "-" },
                    if u.disabled { "\tdisabled" } else { "" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tapstream backup --out FILE`: a consistent copy of the control-plane store.
pub fn backup(cfg: Config, a: BackupArgs) -> anyhow::Result<ExitCode> {
    let store = store_for(&cfg, a.data.as_ref())?;
    store.backup(&a.out).with_context(|| format!("backing up to {}", a.out.display()))?;
    eprintln!("backed up {} to {}", store.path().display(), a.out.display());
    Ok(ExitCode::SUCCESS)
}
