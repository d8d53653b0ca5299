//! `tapstream run --iface …` (live capture) and `tapstream gen`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tapstream_engine::filter::Filter;
use tapstream_engine::live::traffic::{GenMix, PacketTx, TrafficGen, send_traffic};
use tapstream_engine::live::{self, InterfaceSpec};
use tapstream_engine::pipeline::{self, FeedReport, FeedStatus, LiveSummary};

use crate::cli::{GenArgs, GenTx, RunArgs};
use crate::commands::{RunServices, stop_after, stop_flag};
use crate::config::Config;

#[derive(Serialize)]
struct FeedJson {
    name: String,
    mode: String,
    packets: u64,
    bytes: u64,
    worker_drops: u64,
    batches: u64,
    batch_p50: u64,
    batch_p99: u64,
    batch_max: u64,
    max_worker_queue: usize,
    rx_dropped: u64,
    rx_invalid_descs: u64,
    rx_ring_full: u64,
    fill_ring_empty: u64,
}

impl From<&FeedReport> for FeedJson {
    fn from(f: &FeedReport) -> Self {
        let c = f.capture.clone().unwrap_or_default();
        FeedJson {
            name: f.name.clone(),
            mode: c.mode,
            packets: f.packets,
            bytes: f.bytes,
            worker_drops: f.worker_drops,
            batches: f.batches,
            batch_p50: f.batch_p50,
            batch_p99: f.batch_p99,
            batch_max: f.batch_max,
            max_worker_queue: f.max_worker_queue,
            rx_dropped: c.rx_dropped,
            rx_invalid_descs: c.rx_invalid_descs,
            rx_ring_full: c.rx_ring_full,
            fill_ring_empty: c.fill_ring_empty,
        }
    }
}

/// One interface's queues added up.
#[derive(Serialize, Default)]
struct InterfaceJson {
    name: String,
    mode: String,
    queues: usize,
    packets: u64,
    bytes: u64,
    worker_drops: u64,
    kernel_drops: u64,
}

fn per_interface(ifaces: &[String], feeds: &[FeedJson], reports: &[FeedReport]) -> Vec<InterfaceJson> {
    ifaces
        .iter()
        .map(|name| {
            let mut t = InterfaceJson { name: name.clone(), ..InterfaceJson::default() };
            for (f, r) in feeds.iter().zip(reports) {
                if r.capture.as_ref().is_some_and(|c| &c.interface == name) {
                    t.mode = f.mode.clone();
                    t.queues += 1;
                    t.packets += f.packets;
                    t.bytes += f.bytes;
                    t.worker_drops += f.worker_drops;
                    t.kernel_drops += f.rx_dropped + f.rx_ring_full;
                }
            }
            t
        })
        .collect()
}

#[derive(Serialize)]
struct RunJson {
    interfaces: Vec<String>,
    /// Packets analysed (after the filter, without drops).
    packets: u64,
    bytes: u64,
    flows: u64,
    filtered: u64,
    /// Packets received from the interfaces.
    received: u64,
    worker_drops: u64,
    kernel_drops: u64,
    records: u64,
    dropped_record_batches: u64,
    /// Alerts opened, and detection's seconds lost when its stage fell behind.
    alerts: u64,
    detection_windows_dropped: u64,
    seconds: f64,
    per_interface: Vec<InterfaceJson>,
    feeds: Vec<FeedJson>,
}

fn summary_json(ifaces: &[String], s: &LiveSummary) -> RunJson {
    let feeds: Vec<FeedJson> = s.feeds.iter().map(FeedJson::from).collect();
    RunJson {
        interfaces: ifaces.to_vec(),
        packets: s.run.packets,
        bytes: s.run.bytes,
        flows: s.run.flows.created,
        filtered: s.run.filtered,
        received: s.feeds.iter().map(|f| f.packets).sum(),
        worker_drops: s.feeds.iter().map(|f| f.worker_drops).sum(),
        kernel_drops: feeds.iter().map(|f| f.rx_dropped + f.rx_ring_full).sum(),
        records: s.run.records,
        dropped_record_batches: s.run.dropped_batches,
        alerts: s.run.detect.alerts,
        detection_windows_dropped: s.run.detect.dropped_windows,
        seconds: s.run.elapsed.as_secs_f64(),
        per_interface: per_interface(ifaces, &feeds, &s.feeds),
        feeds,
    }
}

/// Keep every thread but the packet path's off the cores `capture.rx_cores`
/// and `capture.worker_cores` name (call before starting any thread).
pub fn keep_housekeeping_off_packet_cores(cfg: &Config) {
    let mut packet: Vec<usize> = cfg.capture.rx_cores.iter().chain(&cfg.pipeline.worker_cores).copied().collect();
    packet.sort_unstable();
    packet.dedup();
    match tapstream_engine::live::cores::keep_off(&packet) {
        Ok(Some(rest)) => tracing::info!(?packet, housekeeping = ?rest, "other threads kept off the packet cores"),
        Ok(None) => {}
        Err(e) => tracing::warn!(?packet, "could not keep other threads off the packet cores: {e}"),
    }
}

/// Capture from `ifaces` until SIGINT/SIGTERM (or `--duration`).
pub fn run(cfg: Config, a: RunArgs, ifaces: Vec<String>) -> anyhow::Result<ExitCode> {
    keep_housekeeping_off_packet_cores(&cfg);
    let data = a.engine.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    let filter = match a.engine.filter.as_ref().or(cfg.capture.filter.as_ref()) {
        Some(t) => Some(Arc::new(Filter::parse(t)?)),
        None => None,
    };
    let specs: Vec<InterfaceSpec> =
        ifaces.iter().map(|n| InterfaceSpec { name: n.clone(), queues: cfg.capture.queues }).collect();
    let live::LiveCapture { sources, programs, report } = live::open(&specs, &cfg.capture.live)?;
    for line in &report {
        tracing::info!("capturing {line}");
        eprintln!("capturing {line}");
    }
    let mut pcfg = cfg.pipeline.clone();
    if let Some(w) = a.engine.workers {
        pcfg.workers = w.max(1);
    }
    pcfg.drop_when_behind = true;
    pcfg.live_clock = true;
    pcfg.filters = vec![filter; ifaces.len()];
    let stop = stop_flag();
    stop_after(&stop, a.engine.duration);
    let (sink, services) = RunServices::start(&cfg, &data, &mut pcfg, &stop)?;
    let status: Vec<Arc<FeedStatus>> = sources.iter().map(|_| Arc::new(FeedStatus::default())).collect();
    let names: Vec<String> = sources.iter().map(|s| s.name().to_string()).collect();
    if let Some(every) = cfg.capture.stats_interval {
        spawn_stats_logger(names, status.clone(), every, stop.clone());
    }
    // Ready once every RX thread runs on its core (they start inside run_live).
    let ready = format!("ready: {} queue(s) on {}", sources.len(), ifaces.join(", "));
    let (feeds, stopped) = (status.clone(), stop.clone());
    std::thread::Builder::new()
        .name("ready".into())
        .spawn(move || {
            while !feeds.iter().all(|f| f.running.load(std::sync::atomic::Ordering::Acquire)) {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            eprintln!("{ready}");
        })
        .context("starting the readiness watch")?;
    let summary = pipeline::run_live(sources, &pcfg, &cfg.capture.rx_cores, stop.clone(), status, sink);
    // Detach the XDP programs (the kernel would too when we exit).
    drop(programs);
    let written = services.finish(&summary.run)?;
    for f in &summary.feeds {
        let c = f.capture.clone().unwrap_or_default();
        eprintln!(
            "{} [{}]: received {} ({} bytes), worker drops {}, kernel drops {} (ring full {}, fill ring empty {}), batches {} (p50 {} p99 {} max {}), deepest worker queue {}",
            f.name,
            c.mode,
            f.packets,
            f.bytes,
            f.worker_drops,
            c.rx_dropped,
            c.rx_ring_full,
            c.fill_ring_empty,
            f.batches,
            f.batch_p50,
            f.batch_p99,
            f.batch_max,
            f.max_worker_queue
        );
    }
    let json = summary_json(&ifaces, &summary);
    for i in &json.per_interface {
        eprintln!(
            "interface {} [{}]: {} queue(s), received {} ({} bytes), worker drops {}, kernel drops {}",
            i.name, i.mode, i.queues, i.packets, i.bytes, i.worker_drops, i.kernel_drops
        );
    }
    if let Some(p) = &a.summary {
        let j = serde_json::to_string_pretty(&json)?;
        std::fs::write(p, j).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(if written { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Log every queue's counters (totals and rates since the last line) every `every`.
fn spawn_stats_logger(
    names: Vec<String>,
    status: Vec<Arc<FeedStatus>>,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    std::thread::Builder::new()
        .name("tapstream-stats".into())
        .spawn(move || {
            let mut last = vec![0u64; status.len()];
            let mut t = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if t.elapsed() < every {
                    continue;
                }
                let secs = t.elapsed().as_secs_f64();
                t = std::time::Instant::now();
                for ((name, st), prev) in names.iter().zip(&status).zip(last.iter_mut()) {
                    let p = st.packets.load(Ordering::Relaxed);
                    tracing::info!(
                        queue = %name,
                        packets = p,
                        pps = ((p - *prev) as f64 / secs).round(),
                        bytes = st.bytes.load(Ordering::Relaxed),
                        worker_drops = st.worker_drops.load(Ordering::Relaxed),
                        kernel_drops = st.kernel_drops.load(Ordering::Relaxed),
                        "capture"
                    );
                    *prev = p;
                }
            }
        })
        .expect("spawn stats logger");
}

/// Send test traffic and print exactly what was sent.
pub fn generate(a: GenArgs) -> anyhow::Result<ExitCode> {
    let mix = GenMix::parse(&a.mix)
        .with_context(|| format!("--mix {}: expected web, dns, syn-flood, udp-flood or scan", a.mix))?;
    if a.pps == 0 {
        anyhow::bail!("--pps must be at least 1");
    }
    if a.vlan.is_some_and(|v| v > 4095) {
        anyhow::bail!("--vlan must be 0-4095");
    }
    if !(a.send_fraction > 0.0 && a.send_fraction <= 1.0) {
        anyhow::bail!("--send-fraction must be above 0 and at most 1");
    }
    let mode = a.tx;
    if a.send_fraction < 1.0 && mode == GenTx::Packet {
        anyhow::bail!("--send-fraction needs --tx xdp-live or auto");
    }
    if a.vlan.is_some() && mode == GenTx::XdpLive {
        anyhow::bail!("--vlan needs --tx packet");
    }
    if mode == GenTx::XdpLive && mix != GenMix::UdpFlood {
        anyhow::bail!("--tx xdp-live sends udp-flood only");
    }
    if !(a.duration.is_finite() && a.duration > 0.0) && a.packets.is_none() {
        anyhow::bail!("--duration must be a positive number of seconds");
    }
    // `auto`: the live-frame runner where it can send this traffic and the
    // kernel lets it, else a packet socket (the reason logged).
    let live = match mode {
        GenTx::Packet => false,
        GenTx::XdpLive => true,
        GenTx::Auto if mix != GenMix::UdpFlood || a.vlan.is_some() => {
            tracing::info!(iface = %a.iface, "sending with a packet socket: the live-frame runner sends untagged udp-flood only");
            false
        }
        GenTx::Auto => true,
    };
    if live {
        let total = a.packets.unwrap_or((a.pps as f64 * a.duration).round() as u64);
        match tapstream_engine::live::traffic::blast(&a.iface, a.flows, a.client_net, a.pps, total, a.send_fraction) {
            Ok(rep) => return print_gen_report(&rep, a.summary.as_deref()),
            Err(e @ tapstream_engine::live::LiveError::LiveFramesRefused { .. }) if mode == GenTx::Auto => {
                tracing::warn!(
                    reason = %tapstream_engine::live::describe(&e),
                    "falling back to a packet socket: {total} frames at {} per second",
                    a.pps
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    let tx = PacketTx::open(&a.iface)?;
    let rep = send_traffic(
        &tx,
        {
            let mut g = TrafficGen::with_client_net(mix, a.flows, a.client_net);
            g.set_vlan(a.vlan);
            g
        },
        a.pps,
        Duration::from_secs_f64(a.duration.max(0.0)),
        a.packets,
    )
    .with_context(|| format!("sending on {}", a.iface))?;
    print_gen_report(&rep, a.summary.as_deref())
}

/// Print a generator report as JSON (and write it to `summary`).
fn print_gen_report(
    rep: &tapstream_engine::live::traffic::GenReport,
    summary: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let j = serde_json::to_string(rep)?;
    println!("{j}");
    if let Some(p) = summary {
        std::fs::write(p, &j).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
