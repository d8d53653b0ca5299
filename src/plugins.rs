//! WASM plugins in the appliance: the `[plugins]` settings, loading the
//! plugin directory for a run (with hot reload and a status file), and the
//! `tapstream plugin check|list` commands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use arrow::array::{Array, AsArray, RecordBatch};
use serde::Deserialize;
use tapstream_engine::detect::{AlertFeed, DetectConfig, DetectSetup};
use tapstream_engine::pipeline::{self, PipelineConfig, Progress};
use tapstream_engine::plugin::{LoadedPlugin, PluginDir, PluginSet, PluginSetup, PluginStats, PluginTap, load_plugin};
use tapstream_engine::records::Table;
use tapstream_engine::source::{SynthConfig, SynthSource, open_capture};

use crate::config::Config;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugins {
    pub enabled: Option<bool>,
    pub dir: Option<PathBuf>,
    pub poll_secs: Option<f64>,
}

/// Validated `[plugins]` settings.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    pub enabled: bool,
    /// Relative to the data directory unless absolute.
    pub dir: PathBuf,
    /// How often the directory is checked for changed plugins (and the
    /// status file rewritten).
    pub poll: Duration,
}

pub fn validate(r: RawPlugins) -> anyhow::Result<PluginsConfig> {
    let poll = match r.poll_secs {
        None => Duration::from_secs(2),
        Some(x) if x.is_finite() && (0.1..=3600.0).contains(&x) => Duration::from_secs_f64(x),
        Some(x) => anyhow::bail!("plugins.poll_secs = {x}: must be between 0.1 and 3600 seconds"),
    };
    Ok(PluginsConfig {
        enabled: r.enabled.unwrap_or(true),
        dir: r.dir.unwrap_or_else(|| PathBuf::from("plugins")),
        poll,
    })
}

/// The status file a running appliance keeps for `tapstream plugin list`.
pub fn status_path(data: &Path) -> PathBuf {
    data.join("plugins.json")
}

/// Plugins loaded for a run.
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    stats: Arc<PluginStats>,
}

impl Running {
    /// After the pipeline: stop watching, write the final status, and say
    /// what each plugin did.
    pub fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        for (name, m) in self.stats.snapshot() {
            eprintln!(
                "plugin {name}: {} records in {} calls (p99 {} µs), {} alerts, {} traps, {} quarantines, {} records skipped",
                m.records,
                m.calls,
                if m.call_ns.is_empty() { 0 } else { m.call_ns.value_at_quantile(0.99) / 1000 },
                m.alerts,
                m.traps,
                m.quarantines,
                m.skipped_records
            );
        }
    }
}

fn status_json(dir: &PluginDir, stats: &PluginStats) -> serde_json::Value {
    let metrics = stats.snapshot();
    let plugins: Vec<serde_json::Value> = dir
        .loaded()
        .iter()
        .map(|p| {
            let mut v = describe(p);
            v["metrics"] = metrics.get(&*p.name).map(|m| m.to_json()).unwrap_or(serde_json::Value::Null);
            v
        })
        .collect();
    let errors: BTreeMap<String, String> =
        dir.errors.iter().map(|(k, v)| (k.display().to_string(), v.clone())).collect();
    serde_json::json!({ "plugins": plugins, "errors": errors })
}

fn describe(p: &LoadedPlugin) -> serde_json::Value {
    let m = &p.manifest;
    serde_json::json!({
        "name": &*p.name, "version": m.version, "description": m.description, "abi": m.abi,
        "scope": match m.scope { tapstream_engine::plugin::Scope::Shard => "shard", tapstream_engine::plugin::Scope::Global => "global" },
        "subscribe": m.subscribe.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "file": p.wasm.display().to_string(), "sha256": p.sha256,
    })
}

fn write_status(path: &Path, v: &serde_json::Value) {
    let tmp = path.with_extension("json.tmp");
    let r = std::fs::write(&tmp, serde_json::to_vec_pretty(v).unwrap_or_default())
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        tracing::warn!("plugin status {}: {e}", path.display());
    }
}

/// Load the plugin directory for a run over `pcfg`; the plugins' alerts go
/// through the detection stage (started with every built-in detector off
/// when detection is disabled). None: plugins off or no directory.
pub fn attach(cfg: &Config, data: &Path, pcfg: &mut PipelineConfig) -> anyhow::Result<Option<Running>> {
    if !cfg.plugins.enabled {
        return Ok(None);
    }
    let dir = data.join(&cfg.plugins.dir);
    if !dir.is_dir() {
        tracing::info!("no plugin directory {}: no WASM plugins", dir.display());
        return Ok(None);
    }
    let pd = PluginDir::open(&dir, Some(&data.join("plugin-cache")))?;
    let stats = Arc::new(PluginStats::default());
    let setup = PluginSetup { tap: pd.tap(), stats: stats.clone() };
    tracing::info!(plugins = pd.loaded().len(), dir = %dir.display(), "WASM plugins loaded");
    pcfg.plugins = Some(setup.clone());
    let mut ds = match pcfg.detect.take() {
        Some(d) => (*d).clone(),
        None => DetectSetup {
            cfg: DetectConfig::builtins_off(),
            log: cfg.detect.as_ref().map(|d| data.join(&d.alert_log)).or_else(|| Some(data.join("alerts.json"))),
            feed: Some(Arc::new(AlertFeed::default())),
            ..DetectSetup::default()
        },
    };
    ds.plugins = Some(setup);
    pcfg.detect = Some(Arc::new(ds));
    let stop = Arc::new(AtomicBool::new(false));
    let (st, poll, status) = (stop.clone(), cfg.plugins.poll, status_path(data));
    let s2 = stats.clone();
    let thread = std::thread::Builder::new()
        .name("tapstream-plugins".into())
        .spawn(move || {
            let mut pd = pd;
            let step = Duration::from_millis(50);
            let mut waited = Duration::ZERO;
            write_status(&status, &status_json(&pd, &s2));
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(step);
                waited += step;
                if waited >= poll {
                    waited = Duration::ZERO;
                    pd.poll();
                    write_status(&status, &status_json(&pd, &s2));
                }
            }
            write_status(&status, &status_json(&pd, &s2));
        })
        .context("starting the plugin watcher")?;
    Ok(Some(Running { stop, thread, stats }))
}

/// `tapstream plugin check`: load a plugin (checking its manifest, imports,
/// exports and ABI version), run it over a sample capture and print its
/// alerts and metrics. Exit 1 when it does not load or crashes.
pub fn check(cfg: &Config, a: &crate::cli::PluginCheckArgs) -> anyhow::Result<ExitCode> {
    let p = match load_plugin(&a.file, None) {
        Ok(p) => p,
        Err(e) => {
            println!("FAIL {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let m = &p.manifest;
    println!(
        "ok   {} {}: ABI {}, scope {}, reads {}, imports and exports as the ABI says",
        p.name,
        m.version,
        m.abi,
        describe(&p)["scope"].as_str().unwrap_or(""),
        m.subscribe.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    );
    let name = p.name.to_string();
    let stats = Arc::new(PluginStats::default());
    let setup = PluginSetup { tap: PluginTap::new(PluginSet { plugins: vec![Arc::new(p)] }), stats: stats.clone() };
    let mut pcfg = cfg.pipeline.clone();
    pcfg.workers = a.workers.max(1);
    pcfg.plugins = Some(setup.clone());
    pcfg.detect = Some(Arc::new(DetectSetup {
        cfg: DetectConfig::builtins_off(),
        plugins: Some(setup),
        ..DetectSetup::default()
    }));
    let alerts: Arc<Mutex<Vec<RecordBatch>>> = Arc::default();
    let sink = {
        let alerts = alerts.clone();
        move |(t, b): (Table, RecordBatch)| {
            if t == Table::Alerts {
                alerts.lock().unwrap_or_else(|p| p.into_inner()).push(b);
            }
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let (summary, err) = match &a.pcap {
        Some(path) => {
            let src = open_capture(&path.display().to_string())?;
            pipeline::run(src, &pcfg, stop, progress, sink)
        }
        None => {
            let pps = 2_000u64;
            let attacks = crate::config::parse_attacks(&a.attacks)?;
            let src = SynthSource::new(SynthConfig {
                seed: 7,
                pps,
                packets: pps * a.seconds,
                attacks,
                ..SynthConfig::default()
            });
            pipeline::run(src, &pcfg, stop, progress, sink)
        }
    };
    if let Some(e) = err {
        return Err(e.into());
    }
    println!(
        "     sample: {} packets, {} flows{}",
        summary.packets,
        summary.flows.created,
        match &a.pcap {
            Some(p) => format!(" from {}", p.display()),
            None => format!(" of synthetic traffic ({} s, attacks {})", a.seconds, a.attacks),
        }
    );
    let mut opened = 0;
    for b in alerts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let col = |n: &str| b.column_by_name(n).map(|c| c.as_string::<i32>().clone());
        let (Some(ev), Some(rule), Some(sev), Some(text)) =
            (col("event"), col("rule"), col("severity"), col("explanation"))
        else {
            continue;
        };
        for i in 0..b.num_rows() {
            if ev.is_valid(i) && ev.value(i) == "open" {
                opened += 1;
                println!("     alert [{}] {}: {}", sev.value(i), rule.value(i), text.value(i));
            }
        }
    }
    let m = stats.snapshot().remove(&name).unwrap_or_default();
    let q = |x: f64| if m.call_ns.is_empty() { 0 } else { m.call_ns.value_at_quantile(x) };
    println!(
        "     {} alerts; {} records in {} calls (p50 {} ns, p99 {} ns per call); {} traps, {} quarantines, {} records skipped",
        opened,
        m.records,
        m.calls,
        q(0.5),
        q(0.99),
        m.traps,
        m.quarantines,
        m.skipped_records
    );
    if !m.counters.is_empty() {
        let c: Vec<String> = m.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("     counters: {}", c.join(" "));
    }
    if m.traps > 0 {
        println!("FAIL {name} crashed: {}", m.last_crash.unwrap_or_default());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `tapstream plugin list`: the plugins in the directory, whether each
/// loads, and (from a running appliance's status file) what it has done.
pub fn list(cfg: &Config, dir: Option<&Path>, data: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| data.join(&cfg.plugins.dir));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("plugin directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    let status: serde_json::Value = std::fs::read(status_path(data))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let metrics_of = |name: &str| {
        status["plugins"].as_array().and_then(|a| a.iter().find(|p| p["name"] == name)).map(|p| p["metrics"].clone())
    };
    let mut rows = Vec::new();
    let mut failed = false;
    for f in &files {
        match load_plugin(f, None) {
            Ok(p) => {
                let mut v = describe(&p);
                v["status"] = "ok".into();
                v["metrics"] = metrics_of(&p.name).unwrap_or(serde_json::Value::Null);
                rows.push(v);
            }
            Err(e) => {
                failed = true;
                rows.push(
                    serde_json::json!({ "file": f.display().to_string(), "status": "error", "error": e.to_string() }),
                );
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<16} {:<9} {:<7} {:<18} {:<12} {:>10} {:>7} {:>6}  file",
            "NAME", "VERSION", "SCOPE", "READS", "STATE", "RECORDS", "ALERTS", "TRAPS"
        );
        for r in &rows {
            if r["status"] == "error" {
                println!("{:<16} {}", "-", r["error"].as_str().unwrap_or(""));
                continue;
            }
            let m = &r["metrics"];
            let n = |k: &str| m[k].as_u64().map_or("-".to_string(), |x| x.to_string());
            println!(
                "{:<16} {:<9} {:<7} {:<18} {:<12} {:>10} {:>7} {:>6}  {}",
                r["name"].as_str().unwrap_or(""),
                r["version"].as_str().unwrap_or(""),
                r["scope"].as_str().unwrap_or(""),
                r["subscribe"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                m["state"].as_str().unwrap_or("not running"),
                n("records"),
                n("alerts"),
                n("traps"),
                r["file"].as_str().unwrap_or(""),
            );
        }
        if files.is_empty() {
            println!("(no plugins in {})", dir.display());
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
